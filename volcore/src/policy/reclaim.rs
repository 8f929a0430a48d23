//! Reclamation of unused volumes: how long a volume may go without a mount on any host
//! before the supervisor removes it (or reports it), after a grace period during which
//! `volcli volume list --stale` shows when it will go.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::PolicyError;
use crate::size::{format_duration, parse_duration};

/// What happens to a volume unused for longer than its policy allows.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ReclaimAction {
    /// Remove it: storage and record.
    Remove,
    /// Only log and audit it.
    Report,
}

/// `"reclaim": {"unused": "30d", "action": "remove", "grace": "1d"}` in a policy.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Reclaim {
    /// How long without a mount on any host makes a volume stale.
    pub unused: Duration,
    /// What happens once it has been stale for `grace`.
    pub action: ReclaimAction,
    /// How long a stale volume is shown (`volcli volume list --stale`) before the action.
    pub grace: Duration,
}

impl Reclaim {
    /// The grace period when none is given.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);
    /// The shortest `unused` accepted.
    pub const MIN_UNUSED: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(10 * 365 * 86_400);

    fn from_doc(d: Doc) -> Result<Self, PolicyError> {
        let dur = |field: &str, s: &str| {
            parse_duration(s).map_err(|e| {
                PolicyError::Runtime(format!(
                    "reclaim.{field} {s:?}: {e} (write e.g. \"30d\", \"12h\", \"90m\")"
                ))
            })
        };
        let unused = dur("unused", &d.unused)?;
        let grace = match &d.grace {
            Some(g) => dur("grace", g)?,
            None => Self::DEFAULT_GRACE,
        };
        if unused < Self::MIN_UNUSED {
            return Err(PolicyError::Runtime(format!(
                "reclaim.unused {:?} is below the 1s minimum",
                d.unused
            )));
        }
        if unused > Self::MAX || grace > Self::MAX {
            return Err(PolicyError::Runtime(
                "reclaim.unused and reclaim.grace are at most ten years".into(),
            ));
        }
        Ok(Self {
            unused,
            action: d.action,
            grace,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    unused: String,
    action: ReclaimAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grace: Option<String>,
}

impl Serialize for Reclaim {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Doc {
            unused: format_duration(self.unused),
            action: self.action,
            grace: Some(format_duration(self.grace)),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Reclaim {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_doc(Doc::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_checks_and_round_trips() {
        let r: Reclaim =
            serde_json::from_str(r#"{"unused":"30d","action":"remove","grace":"12h"}"#).unwrap();
        assert_eq!(r.unused, Duration::from_secs(30 * 86_400));
        assert_eq!(r.grace, Duration::from_secs(12 * 3600));
        let back: Reclaim = serde_json::from_value(serde_json::to_value(r).unwrap()).unwrap();
        assert_eq!(back, r);
        let d: Reclaim = serde_json::from_str(r#"{"unused":"1h","action":"report"}"#).unwrap();
        assert_eq!(d.grace, Reclaim::DEFAULT_GRACE);
        for (bad, want) in [
            (
                r#"{"unused":"soon","action":"remove"}"#,
                "reclaim.unused \"soon\"",
            ),
            (r#"{"unused":"0s","action":"remove"}"#, "1s minimum"),
            (r#"{"unused":"1h","action":"delete"}"#, "unknown variant"),
            (
                r#"{"unused":"1h","action":"remove","after":"1h"}"#,
                "unknown field",
            ),
        ] {
            let e = serde_json::from_str::<Reclaim>(bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
