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

use crate::policy::mkfs::is_normalised;
use crate::policy::{MkfsAllowlist, PolicyError};

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
    /// Programs a policy's mkfs template may run beyond the `mkfs.*` family and `mke2fs`
    /// (`MkfsPrograms`; see [`MkfsAllowlist`]).
    pub mkfs_programs: Vec<String>,
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
                "mkfsprograms" => {
                    let list = val.as_array().ok_or_else(|| {
                        PolicyError::Global(format!(
                            "{k} must be a list of program names or absolute paths, such as [\"mkfs.zfs\", \"/opt/fs/bin/mkfs\"]"
                        ))
                    })?;
                    g.mkfs_programs = list
                        .iter()
                        .map(|e| {
                            e.as_str().map(str::to_owned).ok_or_else(|| {
                                PolicyError::Global(format!("{k} entries must be strings, got {e}"))
                            })
                        })
                        .collect::<Result<_, _>>()?;
                }
                "debug" => {
                    g.debug = val
                        .as_bool()
                        .ok_or_else(|| PolicyError::Global(format!("{k} must be true or false")))?;
                }
                _ => {
                    return Err(PolicyError::Global(format!(
                        "unknown field {k:?}; accepted fields: TTL (seconds), Timeout (minutes), MountPath, Debug, MkfsPrograms"
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
        for e in &self.mkfs_programs {
            MkfsAllowlist::check_entry(e).map_err(PolicyError::Global)?;
        }
        check_mount_path(&self.mount_path)
    }

    /// The programs a mkfs template may run under this configuration.
    pub fn mkfs_allowlist(&self) -> MkfsAllowlist {
        MkfsAllowlist::new(&self.mkfs_programs)
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

/// Where a mount root may not be: system directories, on which a volume mounted at
/// `<root>/<policy>/<volume>` would hide or replace what the host runs on.
/// Every top-level `/lib*` directory is one too.
pub const SYSTEM_DIRS: [&str; 10] = [
    "/etc", "/usr", "/bin", "/sbin", "/boot", "/dev", "/proc", "/sys", "/run", "/var/run",
];

/// The one place under `/run` a mount root may be.
pub const RUN_EXCEPTION: &str = "/run/volcore";

/// A mount root must be absolute, normalised (no `.`, `..`, `//` or trailing `/`), free of
/// NUL bytes, and outside the system directories ([`SYSTEM_DIRS`], every `/lib*`, and `/`
/// itself), except under `/run/volcore`.
pub fn check_mount_path(p: &Path) -> Result<(), PolicyError> {
    let s = p.to_string_lossy();
    let refuse = |why: &str| Err(PolicyError::Global(format!("MountPath {s:?} {why}")));
    if !p.is_absolute() {
        return refuse("must be an absolute path");
    }
    if s.contains('\0') {
        return refuse("contains a NUL byte");
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return refuse("must not contain . or .. components");
    }
    if !is_normalised(&s) {
        return refuse("must be normalised: no empty components (//) and no trailing /");
    }
    if p == Path::new("/") {
        return refuse("must not be / itself");
    }
    if let Some(dir) = system_dir(p) {
        return refuse(&format!(
            "is inside the system directory {dir}, where mounting volumes would hide what the host runs on; choose a directory such as /mnt/volcore, /srv/volcore or /var/lib/volcore/mnt"
        ));
    }
    Ok(())
}

/// The system directory `p` is or lies under, if any.
fn system_dir(p: &Path) -> Option<String> {
    let run_ok = |base: &str| {
        let exception = RUN_EXCEPTION.replacen("/run", base, 1);
        p.starts_with(&exception)
    };
    for d in SYSTEM_DIRS {
        if p.starts_with(d) && !(matches!(d, "/run" | "/var/run") && run_ok(d)) {
            return Some(d.to_owned());
        }
    }
    // Every /lib* (lib32, lib64, libx32, …).
    let first = p.components().nth(1)?;
    let name = first.as_os_str().to_string_lossy();
    name.starts_with("lib").then(|| format!("/{name}"))
}

impl Default for GlobalConfig {
    fn default() -> Self {
        Self {
            ttl: Self::DEFAULT_TTL,
            timeout: Self::DEFAULT_TIMEOUT,
            mount_path: PathBuf::from(Self::DEFAULT_MOUNT_PATH),
            debug: false,
            mkfs_programs: Vec::new(),
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
            // Only when set, so that volplugin's four-field form stays as it was.
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            mkfs_programs: &'a [String],
        }
        Published {
            ttl: self.ttl.as_secs(),
            timeout: self.timeout.as_secs() / 60,
            mount_path: &self.mount_path,
            debug: self.debug,
            mkfs_programs: &self.mkfs_programs,
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
    fn mount_roots_outside_system_directories_are_accepted() {
        for ok in [
            "/mnt/ceph",
            "/srv/volcore",
            "/var/lib/volcore/mnt",
            "/run/volcore",
            "/run/volcore/mnt",
            "/var/run/volcore/mnt",
            "/etcetera",
            "/mnt/etc",
        ] {
            let r = check_mount_path(Path::new(ok));
            assert!(r.is_ok(), "{ok}: {r:?}");
        }
        for bad in ["/run/volcore-other", "/lib", "/library"] {
            assert!(check_mount_path(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn mkfs_programs_round_trip_and_extend_the_allowlist() {
        let g = GlobalConfig::from_json(br#"{"MkfsPrograms":["mkfs-special","/opt/fs/mkfs"]}"#)
            .unwrap();
        assert!(g.mkfs_allowlist().allows("mkfs-special"));
        assert!(g.mkfs_allowlist().allows("mkfs.ext4"));
        assert!(!GlobalConfig::default()
            .mkfs_allowlist()
            .allows("mkfs-special"));
        assert_eq!(GlobalConfig::from_json(&g.to_json()).unwrap(), g);
    }

    #[test]
    fn rejects_bad_values() {
        for (json, want) in [
            (r#"{"TTL":-1}"#, "whole number"),
            (r#"{"TTL":"30"}"#, "whole number"),
            (r#"{"TTL":7200}"#, "out of range"),
            (r#"{"MountPath":"relative/dir"}"#, "absolute"),
            (r#"{"MountPath":"/mnt/../etc"}"#, ".."),
            (r#"{"MountPath":"/etc"}"#, "system directory /etc"),
            (r#"{"MountPath":"/etc/systemd"}"#, "system directory /etc"),
            (r#"{"MountPath":"/usr/local/mnt"}"#, "system directory /usr"),
            (r#"{"MountPath":"/lib64/x"}"#, "system directory /lib64"),
            (r#"{"MountPath":"/libx32"}"#, "system directory /libx32"),
            (r#"{"MountPath":"/run/other"}"#, "system directory /run"),
            (r#"{"MountPath":"/var/run/x"}"#, "system directory /var/run"),
            (r#"{"MountPath":"/proc/self"}"#, "system directory /proc"),
            (r#"{"MountPath":"/"}"#, "/ itself"),
            (r#"{"MountPath":"/mnt//ceph"}"#, "normalised"),
            (r#"{"MountPath":"/mnt/ceph/"}"#, "normalised"),
            (r#"{"MkfsPrograms":"sh"}"#, "must be a list"),
            (r#"{"MkfsPrograms":[1]}"#, "must be strings"),
            (r#"{"MkfsPrograms":["*"]}"#, "every program"),
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
