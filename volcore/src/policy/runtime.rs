//! Runtime options: snapshot schedules and I/O limits, the part of a policy that can
//! change on a live volume.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::PolicyError;

/// A snapshot frequency: volplugin's Go-duration syntax (`30m`, `2s`, `1h30m`, `1.5h`;
/// units ns, us, ms, s, m, h), at least one second.
///
/// Days and weeks are refused at upload, with a hint: volplugin's schema let `10d` through
/// and its supervisor then crashed on it, so a policy file written for volplugin never ran
/// with one.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Frequency {
    text: String,
    every: Duration,
}

impl Frequency {
    /// The shortest frequency accepted.
    pub const MIN: Duration = Duration::from_secs(1);

    /// Parses and checks a frequency.
    pub fn parse(s: &str) -> Result<Self, PolicyError> {
        let bad = |why: String| PolicyError::Runtime(format!("snapshot.frequency {s:?}: {why}"));
        let every = parse_go_duration(s).map_err(bad)?;
        if every.is_zero() {
            return Err(bad("a zero frequency would never snapshot; use e.g. \"30m\" or set \"snapshots\": false".into()));
        }
        if every < Self::MIN {
            return Err(bad("below the 1s minimum".into()));
        }
        Ok(Self {
            text: s.to_owned(),
            every,
        })
    }

    /// How often to snapshot.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn parse_go_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err("empty".into());
    }
    if s.chars().all(|c| c == '0') {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit after {rest:?}; units are s, m, h (e.g. 30m)"))?;
        let (num, tail) = rest.split_at(n_end);
        if num.is_empty() {
            return Err("expected a number; write e.g. 30m, 2s or 1h30m".into());
        }
        let value: f64 = num
            .parse()
            .map_err(|_| format!("{num:?} is not a number"))?;
        let u_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(u_end);
        let secs = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => {
                return Err(format!(
                    "days are not a unit here (volplugin could not run them either); write {}h",
                    num.parse::<f64>().unwrap_or(1.0) * 24.0
                ))
            }
            "w" => {
                return Err(format!(
                    "weeks are not a unit here (volplugin could not run them either); write {}h",
                    num.parse::<f64>().unwrap_or(1.0) * 168.0
                ))
            }
            other => {
                return Err(format!(
                    "unknown unit {other:?}; units are ns, us, ms, s, m, h"
                ))
            }
        };
        total += value * secs;
        rest = next;
    }
    if !total.is_finite() || total > 10.0 * 365.0 * 86400.0 {
        return Err("longer than ten years".into());
    }
    Ok(Duration::from_secs_f64(total))
}

impl Serialize for Frequency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Frequency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Snapshot schedule: take one every `frequency` (slots aligned to the wall clock, in
/// UTC), keep the newest `keep`, and, per tier, the newest `keep` of those that fall on
/// the tier's boundary. Pruning keeps the union of what every tier keeps.
///
/// Plain `frequency` + `keep` (volplugin's runtime files) is the one-tier case. Without a
/// frequency (missing or `null`) nothing is scheduled, but pruning still runs when `keep`
/// or a tier is set.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotConfig {
    /// How often to take a snapshot; `null` or absent: never on schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency: Option<Frequency>,
    /// How many of the newest snapshots to keep (0: no count limit of its own).
    #[serde(default)]
    pub keep: u32,
    /// Longer-lived tiers, by name (e.g. `"daily": {"every": "24h", "keep": 7}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tiers: BTreeMap<String, SnapshotTier>,
}

/// A retention tier: a snapshot whose slot time is a multiple of `every` since the Unix
/// epoch (UTC; `24h` is midnight, `168h` is Thursday midnight) counts toward it, and the
/// newest `keep` of those are kept.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotTier {
    /// The tier's boundary: a multiple of the schedule's frequency.
    pub every: Frequency,
    /// How many snapshots on this tier's boundaries to keep (at least 1).
    pub keep: u32,
}

impl SnapshotConfig {
    /// Whether anything is ever pruned (a count to keep, or a tier).
    pub fn prunes(&self) -> bool {
        self.keep > 0 || !self.tiers.is_empty()
    }

    fn validate(&self, enabled: bool) -> Result<(), PolicyError> {
        let bad = |s: String| Err(PolicyError::Runtime(s));
        for (name, t) in &self.tiers {
            if name.is_empty()
                || name.len() > 32
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return bad(format!(
                    "snapshot.tiers: {name:?} is not a tier name; use 1 to 32 lowercase letters, digits or '-' (e.g. \"daily\")"
                ));
            }
            if t.keep < 1 {
                return bad(format!(
                    "snapshot.tiers.{name}.keep is 0; a tier keeps at least 1 snapshot (remove the tier to keep none)"
                ));
            }
            if let Some(f) = &self.frequency {
                let (base, every) = (f.every().as_millis(), t.every.every().as_millis());
                if base == 0 || !every.is_multiple_of(base) {
                    return bad(format!(
                        "snapshot.tiers.{name}.every {:?} is not a multiple of snapshot.frequency {:?}, so no snapshot would ever fall on its boundary",
                        t.every.as_str(),
                        f.as_str()
                    ));
                }
            }
        }
        if enabled && self.frequency.is_none() && !self.prunes() {
            return bad(
                "snapshots are enabled but snapshot.frequency is missing; set e.g. \"frequency\": \"30m\" (or a keep, to only prune)".into(),
            );
        }
        if enabled && self.frequency.is_some() && self.keep < 1 {
            return bad(
                "snapshots are enabled but snapshot.keep is 0; keep must be at least 1".into(),
            );
        }
        Ok(())
    }
}

/// I/O limits applied to a mounted volume's block device; 0 means no limit.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RateLimit {
    /// Read bytes per second.
    #[serde(default)]
    pub read_bps: u64,
    /// Write bytes per second.
    #[serde(default)]
    pub write_bps: u64,
    /// Read operations per second.
    #[serde(default)]
    pub read_iops: u64,
    /// Write operations per second.
    #[serde(default)]
    pub write_iops: u64,
}

/// Runtime options: the part of a policy that can change on a live volume.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuntimeOptions {
    /// Whether scheduled snapshots are taken.
    #[serde(default)]
    pub snapshots: bool,
    /// The schedule (a frequency or a keep is required when `snapshots` is true).
    #[serde(default)]
    pub snapshot: SnapshotConfig,
    /// Whether on-demand snapshots may be asked of the supervisor
    /// (`volcli volume snapshot signal`).
    #[serde(default)]
    pub signal: bool,
    /// I/O limits.
    #[serde(default, rename = "rate-limit")]
    pub rate_limit: RateLimit,
}

impl RuntimeOptions {
    /// Parses and validates a runtime document (`volcli volume runtime upload`).
    pub fn from_json(bytes: &[u8]) -> Result<Self, PolicyError> {
        let r: Self = serde_json::from_slice(bytes).map_err(|error| PolicyError::Json {
            what: "runtime options",
            error,
        })?;
        r.validate()?;
        Ok(r)
    }

    /// Checks that an enabled schedule has a frequency (or at least prunes), keeps at
    /// least one snapshot, and that its tiers are well formed.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.snapshot.validate(self.snapshots)
    }

    /// The frequency scheduled snapshots are taken at, if they are.
    pub fn scheduled(&self) -> Option<&Frequency> {
        if self.snapshots {
            self.snapshot.frequency.as_ref()
        } else {
            None
        }
    }
}
