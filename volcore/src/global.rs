//! Global configuration: lock TTL, operation timeout, mount root, debug logging.
//!
//! volplugin's published JSON uploads unchanged: `{"TTL":30,"Timeout":10,
//! "MountPath":"/mnt/ceph","Debug":false}` with `TTL` in seconds and `Timeout` in minutes.
//! Keys are matched case-insensitively (as Go's decoder did); missing or zero fields take
//! the defaults. volplugin's canonical (stored) form, nanosecond integers, is recognised
//! too: a `TTL` of at least 10⁹ is taken as nanoseconds, as is a `Timeout` of at least
//! 6·10¹⁰; both are cut to the published units (whole seconds, whole minutes), as
//! volplugin's `Published()` did.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::policy::PolicyError;

/// The global configuration every daemon watches.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GlobalConfig {
    /// Lease (lock) TTL.
    pub ttl: Duration,
    /// Lock-wait deadline and per-command storage timeout.
    pub timeout: Duration,
    /// Where volumes are mounted: `<mount_path>/<policy>/<volume>`.
    pub mount_path: PathBuf,
    /// Debug logging.
    pub debug: bool,
}

impl GlobalConfig {
    /// volplugin's default TTL.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
    /// volplugin's default timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
    /// volplugin's default mount root.
    pub const DEFAULT_MOUNT_PATH: &'static str = "/mnt/ceph";
    /// Shortest TTL accepted.
    pub const MIN_TTL: Duration = Duration::from_secs(1);
    /// Longest TTL accepted (a dead host's locks must expire within the hour).
    pub const MAX_TTL: Duration = Duration::from_secs(3600);
    /// Shortest operation timeout accepted.
    pub const MIN_TIMEOUT: Duration = Duration::from_secs(60);
    /// Longest operation timeout accepted: a storage command or a lock wait longer than
    /// an hour is a hang, not work.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

    /// Parses and validates the published (or canonical) JSON form.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PolicyError> {
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|error| PolicyError::Json {
                what: "global configuration",
                error,
            })?;
        Self::from_value(&v)
    }

    fn from_value(v: &serde_json::Value) -> Result<Self, PolicyError> {
        let obj = v.as_object().ok_or_else(|| {
            PolicyError::Global("expected a JSON object such as {\"TTL\":30,\"Timeout\":10}".into())
        })?;
        let mut g = Self::default();
        for (k, val) in obj {
            match k.to_ascii_lowercase().as_str() {
                "ttl" => {
                    let n = uint(k, val)?;
                    if n != 0 {
                        // Canonical nanoseconds are cut to whole seconds, the published unit.
                        g.ttl = if n >= 1_000_000_000 {
                            Duration::from_secs(n / 1_000_000_000)
                        } else {
                            Duration::from_secs(n)
                        };
                    }
                }
                "timeout" => {
                    let n = uint(k, val)?;
                    if n != 0 {
                        // Canonical nanoseconds are cut to whole minutes, the published unit.
                        g.timeout = if n >= 60_000_000_000 {
                            Duration::from_secs(n / 60_000_000_000 * 60)
                        } else {
                            Duration::from_secs(n.saturating_mul(60))
                        };
                    }
                }
                "mountpath" => {
                    let s = val
                        .as_str()
                        .ok_or_else(|| PolicyError::Global(format!("{k} must be a string path such as \"/mnt/ceph\"")))?;
                    if !s.is_empty() {
                        g.mount_path = PathBuf::from(s);
                    }
                }
                "debug" => {
                    g.debug = val
                        .as_bool()
                        .ok_or_else(|| PolicyError::Global(format!("{k} must be true or false")))?;
                }
                _ => {
                    return Err(PolicyError::Global(format!(
                        "unknown field {k:?}; accepted fields: TTL (seconds), Timeout (minutes), MountPath, Debug"
                    )))
                }
            }
        }
        g.validate()?;
        Ok(g)
    }

    /// Checks ranges and the mount root.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.ttl < Self::MIN_TTL || self.ttl > Self::MAX_TTL {
            return Err(PolicyError::Global(format!(
                "TTL {}s is out of range; use 1 to 3600 seconds",
                self.ttl.as_secs()
            )));
        }
        if self.timeout < Self::MIN_TIMEOUT || self.timeout > Self::MAX_TIMEOUT {
            return Err(PolicyError::Global(format!(
                "Timeout {} minute(s) is out of range; use 1 to 60 minutes",
                self.timeout.as_secs() / 60
            )));
        }
        check_mount_path(&self.mount_path)
    }

    /// The published JSON form (TTL seconds, Timeout minutes).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn uint(k: &str, v: &serde_json::Value) -> Result<u64, PolicyError> {
    v.as_u64()
        .ok_or_else(|| PolicyError::Global(format!("{k} must be a whole number ≥ 0, got {v}")))
}

/// A mount root must be absolute, normalised (no `.` or `..`) and free of NUL bytes.
pub fn check_mount_path(p: &Path) -> Result<(), PolicyError> {
    let s = p.to_string_lossy();
    if !p.is_absolute() {
        return Err(PolicyError::Global(format!(
            "MountPath {s:?} must be an absolute path"
        )));
    }
    if s.contains('\0') {
        return Err(PolicyError::Global("MountPath contains a NUL byte".into()));
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(PolicyError::Global(format!(
            "MountPath {s:?} must not contain . or .. components"
        )));
    }
    if p == Path::new("/") {
        return Err(PolicyError::Global("MountPath must not be / itself".into()));
    }
    Ok(())
}

impl Default for GlobalConfig {
    fn default() -> Self {
        Self {
            ttl: Self::DEFAULT_TTL,
            timeout: Self::DEFAULT_TIMEOUT,
            mount_path: PathBuf::from(Self::DEFAULT_MOUNT_PATH),
            debug: false,
        }
    }
}

impl Serialize for GlobalConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Published<'a> {
            #[serde(rename = "TTL")]
            ttl: u64,
            timeout: u64,
            mount_path: &'a Path,
            debug: bool,
        }
        Published {
            ttl: self.ttl.as_secs(),
            timeout: self.timeout.as_secs() / 60,
            mount_path: &self.mount_path,
            debug: self.debug,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for GlobalConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Self::from_value(&v).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_for_empty() {
        // volplugin scenario 5: `{}` gives the defaults in published units.
        let g = GlobalConfig::from_json(b"{}").unwrap();
        assert_eq!(g, GlobalConfig::default());
        let v: serde_json::Value = serde_json::from_slice(&g.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"TTL":30,"Timeout":10,"MountPath":"/mnt/ceph","Debug":false})
        );
    }

    #[test]
    fn case_insensitive_and_canonical() {
        let g = GlobalConfig::from_json(
            br#"{"ttl":5,"timeout":1,"mountpath":"/mnt/test","debug":true}"#,
        )
        .unwrap();
        assert_eq!(g.ttl, Duration::from_secs(5));
        assert_eq!(g.timeout, Duration::from_secs(60));
        assert_eq!(g.mount_path, PathBuf::from("/mnt/test"));
        assert!(g.debug);
        let g = GlobalConfig::from_json(
            br#"{"Debug":true,"Timeout":600000000000,"TTL":30000000000,"MountPath":"/mnt/ceph"}"#,
        )
        .unwrap();
        assert_eq!(g.ttl, Duration::from_secs(30));
        assert_eq!(g.timeout, Duration::from_secs(600));
    }

    #[test]
    fn rejects_bad_values() {
        for (json, want) in [
            (r#"{"TTL":-1}"#, "whole number"),
            (r#"{"TTL":"30"}"#, "whole number"),
            (r#"{"TTL":7200}"#, "out of range"),
            (r#"{"MountPath":"relative/dir"}"#, "absolute"),
            (r#"{"MountPath":"/mnt/../etc"}"#, ".."),
            (r#"{"Debug":"yes"}"#, "true or false"),
            (r#"{"TTTL":3}"#, "unknown field \"TTTL\""),
            (r#"[1]"#, "JSON object"),
        ] {
            let e = GlobalConfig::from_json(json.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
    }
}
