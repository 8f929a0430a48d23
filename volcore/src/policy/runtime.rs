//! Runtime options: snapshot schedules and I/O limits, the part of a policy that can
//! change on a live volume.

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

/// Snapshot schedule.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotConfig {
    /// How often to take a snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency: Option<Frequency>,
    /// How many snapshots to keep (older ones are pruned).
    #[serde(default)]
    pub keep: u32,
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
    /// The schedule (required when `snapshots` is true).
    #[serde(default)]
    pub snapshot: SnapshotConfig,
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

    /// Checks that an enabled schedule has a frequency and keeps at least one snapshot.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.snapshots {
            if self.snapshot.frequency.is_none() {
                return Err(PolicyError::Runtime(
                    "snapshots are enabled but snapshot.frequency is missing; set e.g. \"frequency\": \"30m\"".into(),
                ));
            }
            if self.snapshot.keep < 1 {
                return Err(PolicyError::Runtime(
                    "snapshots are enabled but snapshot.keep is 0; keep must be at least 1".into(),
                ));
            }
        }
        Ok(())
    }
}
