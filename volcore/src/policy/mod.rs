//! Policies: what a volume is made of (create-time fields) and how it behaves while it
//! lives (runtime fields).
//!
//! The JSON form is volplugin's, so existing policy files upload unchanged:
//!
//! ```
//! use volcore::{Policy, PolicyName};
//! let json = br#"{
//!   "backend": "ceph",
//!   "driver": {"pool": "rbd"},
//!   "create": {"size": "10MB", "filesystem": "ext4"},
//!   "runtime": {"snapshots": true, "snapshot": {"frequency": "30m", "keep": 20}}
//! }"#;
//! let p = Policy::from_json(&PolicyName::new("policy1").unwrap(), json).unwrap();
//! assert_eq!(p.create.size.bytes(), 10_000_000);
//! assert_eq!(p.filesystems["ext4"].as_str(), "mkfs.ext4 -m0 %");
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::name::{NameError, PolicyName};

mod backend;
pub(crate) mod mkfs;
mod runtime;

use crate::size::{Size, ValueError};
pub use backend::{BackendKind, Backends};
use backend::{BackendsDoc, KNOWN_BACKENDS};
pub use mkfs::{
    MkfsAllowlist, MkfsTemplate, DEFAULT_FILESYSTEM, DEFAULT_MKFS, DEFAULT_MKFS_PROGRAMS,
};
pub mod nfs;
mod reclaim;
pub use reclaim::{Reclaim, ReclaimAction};
pub use runtime::{Frequency, RateLimit, RuntimeOptions, SnapshotConfig, SnapshotTier};

/// Why a policy, runtime document, volume option or global configuration was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The document is not valid JSON, or has a field of the wrong type or an unknown field.
    // The parser's message is part of the text (it says what is wrong and where), so it
    // is not also reported as a `source`: chained printing would repeat it.
    #[error("{what} is not valid: {error}")]
    Json {
        /// What was being parsed ("policy", "runtime options", ...).
        what: &'static str,
        /// The parser's error, with line and column.
        error: serde_json::Error,
    },
    /// A name inside the document is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The policy file names another policy than the one it is uploaded as.
    #[error("the policy document is named {inner:?} but is uploaded as {outer:?}; remove \"name\" or make them agree")]
    NameMismatch {
        /// The name inside the document.
        inner: String,
        /// The name it is uploaded as.
        outer: String,
    },
    /// Neither `backend` nor `backends` is set.
    #[error("the policy names no backend; set \"backend\" to one of {known} or set \"backends\"")]
    NoBackend {
        /// The known backends.
        known: &'static str,
    },
    /// A backend name is not known.
    #[error("unknown backend {value:?} in {field}; known backends: {known}")]
    UnknownBackend {
        /// Which field (`backend`, `backends.mount`, ...).
        field: &'static str,
        /// The offending value.
        value: String,
        /// The known backends.
        known: &'static str,
    },
    /// `backends.mount` is missing or empty.
    #[error("backends.mount is required: it names the backend that mounts the volume ({known})")]
    NoMountBackend {
        /// The known backends.
        known: &'static str,
    },
    /// The crud/snapshot backends do not match the mount backend, or cannot serve that role.
    #[error("backends.{field} is {value:?} but backends.mount is {mount:?}; {why}")]
    BackendMismatch {
        /// `crud` or `snapshot`.
        field: &'static str,
        /// Its value.
        value: String,
        /// The mount backend.
        mount: String,
        /// Why this combination is refused.
        why: &'static str,
    },
    /// A size string is invalid.
    #[error("{field}: {error}")]
    BadValue {
        /// The field.
        field: &'static str,
        /// The parser's error.
        error: ValueError,
    },
    /// A backend that creates storage was given no size (or less than 1 MB).
    #[error("create.size is {size} but backend {backend} creates storage and needs at least 1MB; set create.size, e.g. \"10GB\"")]
    SizeTooSmall {
        /// The CRUD backend.
        backend: String,
        /// The size given.
        size: String,
    },
    /// `create.filesystem` is not a key of `filesystems`.
    #[error("filesystem {fs:?} is not defined in the policy's filesystems ({known}); add it to \"filesystems\" or choose one of those")]
    UnknownFilesystem {
        /// The filesystem asked for.
        fs: String,
        /// The defined ones.
        known: String,
    },
    /// A `filesystems` key is not a plain name.
    #[error("filesystem name {name:?} is invalid: use letters, digits, '_' and '-' only")]
    BadFilesystemName {
        /// The offending key.
        name: String,
    },
    /// `unlocked` on a backend whose volumes only one host may mount.
    #[error("unlocked volumes need a backend that several hosts can mount at once (nfs); backend {backend} is block storage with a local filesystem on it, which a second host's mount would corrupt: remove \"unlocked\" (or the unlocked option)")]
    UnlockedBlockBackend {
        /// The mount backend.
        backend: BackendKind,
    },
    /// A mkfs template is malformed.
    #[error("the mkfs command {template:?} for filesystem {fs:?} is refused: {why}")]
    BadTemplate {
        /// The filesystem.
        fs: String,
        /// The template.
        template: String,
        /// What is wrong with it.
        why: String,
    },
    /// A mkfs template runs a program that is not on the allowlist.
    #[error("the mkfs command for filesystem {fs:?} runs {program:?}, which is not an allowed mkfs program ({allowed}); an admin can allow it by adding it to MkfsPrograms in the global configuration")]
    MkfsNotAllowed {
        /// The filesystem.
        fs: String,
        /// The program.
        program: String,
        /// What is allowed.
        allowed: String,
    },
    /// A mkfs template is empty.
    #[error("the mkfs command for filesystem {fs:?} is empty; write e.g. \"mkfs.ext4 -m0 %\" (% is the device)")]
    EmptyTemplate {
        /// The filesystem.
        fs: String,
    },
    /// A driver parameter is missing or invalid.
    #[error("driver.{key}: {problem}")]
    DriverParam {
        /// The parameter.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// Runtime options are inconsistent.
    #[error("runtime: {0}")]
    Runtime(String),
    /// A create option key is not known.
    #[error("unknown option {key:?}; accepted options: {accepted}")]
    UnknownOption {
        /// The offending key.
        key: String,
        /// The accepted keys.
        accepted: String,
    },
    /// A create option value does not parse.
    #[error("option {key}={value:?}: {expected}")]
    BadOption {
        /// The key.
        key: String,
        /// The offending value.
        value: String,
        /// What was expected.
        expected: String,
    },
    /// A global configuration field is invalid.
    #[error("global configuration: {0}")]
    Global(String),
}

/// Create-time size and filesystem.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateSpec {
    /// The volume size (zero for mount-only backends).
    pub size: Size,
    /// The filesystem, a key of the policy's `filesystems`.
    pub filesystem: String,
}

/// A validated policy.
#[derive(Clone, PartialEq, Eq, Debug)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Policy {
    /// The policy's name.
    pub name: PolicyName,
    /// Which backends serve its volumes.
    pub backends: Backends,
    /// Backend parameters (`pool` for Ceph, `options` for NFS, ...).
    pub driver: BTreeMap<String, String>,
    /// True: no cross-host exclusivity (for NFS).
    pub unlocked: bool,
    /// True: `docker volume rm` destroys the storage (default: it only forgets the volume
    /// on that host, so `docker volume prune` cannot destroy a cluster's data).
    #[cfg_attr(feature = "openapi", schema(rename = "destroy-on-remove"))]
    pub destroy_on_remove: bool,
    /// Size and filesystem.
    pub create: CreateSpec,
    /// Filesystem name → mkfs template.
    pub filesystems: BTreeMap<String, MkfsTemplate>,
    /// Runtime options new volumes start with.
    pub runtime: RuntimeOptions,
    /// When unused volumes are reclaimed (none: never).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub reclaim: Option<Reclaim>,
    /// Volumes are removed when their last user unmounts, and by the supervisor when the
    /// host that had them mounted is gone.
    pub ephemeral: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) filesystem: Option<String>,
}

/// The policy document as uploaded (volplugin's JSON: every field optional, `backend`
/// standing for all three backends); for the API's documentation of upload bodies.
/// [`Policy::from_json`] is what parses it.
#[derive(Clone, Copy, Debug)]
pub struct PolicyUpload;

#[derive(Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
struct PolicyDoc {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    backends: Option<BackendsDoc>,
    #[serde(default)]
    driver: Option<BTreeMap<String, String>>,
    #[serde(default)]
    unlocked: Option<bool>,
    #[serde(default, rename = "destroy-on-remove")]
    destroy_on_remove: bool,
    #[serde(default)]
    create: CreateDoc,
    #[serde(default)]
    filesystems: Option<BTreeMap<String, String>>,
    #[serde(default)]
    runtime: RuntimeOptions,
    #[serde(default)]
    reclaim: Option<Reclaim>,
    #[serde(default)]
    ephemeral: bool,
}

/// Ceph pool names and similar driver identifiers: letters, digits, `.`, `_`, `-`.
fn check_identifier(key: &str, v: &str) -> Result<(), PolicyError> {
    if v.is_empty() {
        return Err(PolicyError::DriverParam {
            key: key.to_owned(),
            problem: "must not be empty".into(),
        });
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
    {
        return Err(PolicyError::DriverParam {
            key: key.to_owned(),
            problem: format!("{v:?} contains {c:?}; use letters, digits, '.', '_' and '-' only"),
        });
    }
    if v.starts_with(['.', '-']) {
        return Err(PolicyError::DriverParam {
            key: key.to_owned(),
            problem: format!("{v:?} must start with a letter or digit"),
        });
    }
    Ok(())
}

impl Policy {
    /// Parses and validates a policy document uploaded as `name`.
    ///
    /// A `name` field inside the document, as volplugin stored it, must agree.
    pub fn from_json(name: &PolicyName, bytes: &[u8]) -> Result<Self, PolicyError> {
        let doc: PolicyDoc = serde_json::from_slice(bytes).map_err(|error| PolicyError::Json {
            what: "policy",
            error,
        })?;
        if let Some(inner) = &doc.name {
            if inner != name.as_str() {
                return Err(PolicyError::NameMismatch {
                    inner: inner.clone(),
                    outer: name.to_string(),
                });
            }
        }
        Self::from_doc(name.clone(), doc)
    }

    /// Parses a stored policy whose document carries its own `name`.
    pub fn from_stored_json(bytes: &[u8]) -> Result<Self, PolicyError> {
        let doc: PolicyDoc = serde_json::from_slice(bytes).map_err(|error| PolicyError::Json {
            what: "policy",
            error,
        })?;
        let name = PolicyName::new(doc.name.clone().unwrap_or_default())?;
        Self::from_doc(name, doc)
    }

    fn from_doc(name: PolicyName, doc: PolicyDoc) -> Result<Self, PolicyError> {
        let backends = match (&doc.backends, &doc.backend) {
            // `backends` wins when both are given, as in volplugin.
            (Some(b), _) => b.resolve()?,
            (None, Some(b)) if !b.is_empty() => Backends::expand(BackendKind::parse("backend", b)?),
            (None, _) => {
                return Err(PolicyError::NoBackend {
                    known: KNOWN_BACKENDS,
                })
            }
        };
        let size = match doc.create.size.as_deref().map(str::trim) {
            None | Some("") => Size::default(),
            Some(s) => Size::parse(s).map_err(|error| PolicyError::BadValue {
                field: "create.size",
                error,
            })?,
        };
        let filesystems = match doc.filesystems {
            None => BTreeMap::from([(
                DEFAULT_FILESYSTEM.to_owned(),
                MkfsTemplate::new(DEFAULT_FILESYSTEM, DEFAULT_MKFS)?,
            )]),
            Some(m) => m
                .into_iter()
                .map(|(k, v)| {
                    let t = MkfsTemplate::new(&k, v)?;
                    Ok((k, t))
                })
                .collect::<Result<_, PolicyError>>()?,
        };
        let filesystem = match doc.create.filesystem.as_deref() {
            None | Some("") => DEFAULT_FILESYSTEM.to_owned(),
            Some(f) => f.to_owned(),
        };
        // NFS exports are shared by nature: unlocked unless the policy says otherwise.
        let unlocked = doc.unlocked.unwrap_or(backends.mount == BackendKind::Nfs);
        let p = Self {
            name,
            backends,
            driver: doc.driver.unwrap_or_default(),
            unlocked,
            destroy_on_remove: doc.destroy_on_remove,
            create: CreateSpec { size, filesystem },
            filesystems,
            runtime: doc.runtime,
            reclaim: doc.reclaim,
            ephemeral: doc.ephemeral,
        };
        p.validate()?;
        Ok(p)
    }

    /// Refuses the policy when one of its mkfs templates runs a program `allow` does not
    /// allow (checked at upload, against the global configuration of the time).
    pub fn check_mkfs_allowed(&self, allow: &MkfsAllowlist) -> Result<(), PolicyError> {
        self.filesystems
            .iter()
            .try_for_each(|(fs, t)| t.check_allowed(fs, allow))
    }

    /// Checks every rule a policy must satisfy; called after parsing and after options
    /// are merged into a copy for a volume.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.backends.validate()?;
        if self.unlocked && !self.backends.mount.allows_shared_mounts() {
            return Err(PolicyError::UnlockedBlockBackend {
                backend: self.backends.mount,
            });
        }
        for k in self.filesystems.keys() {
            let ok = !k.is_empty()
                && k.len() <= 64
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return Err(PolicyError::BadFilesystemName { name: k.clone() });
            }
        }
        if let Some(crud) = self.backends.crud {
            if crud.creates_storage() && self.create.size.bytes() < Size::MB {
                return Err(PolicyError::SizeTooSmall {
                    backend: crud.to_string(),
                    size: self.create.size.to_string(),
                });
            }
            if !self.filesystems.contains_key(&self.create.filesystem) {
                return Err(PolicyError::UnknownFilesystem {
                    fs: self.create.filesystem.clone(),
                    known: self
                        .filesystems
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        for (k, v) in &self.driver {
            if k.is_empty() {
                return Err(PolicyError::DriverParam {
                    key: String::new(),
                    problem: "empty parameter name".into(),
                });
            }
            if v.contains('\0') {
                return Err(PolicyError::DriverParam {
                    key: k.clone(),
                    problem: "contains a NUL byte".into(),
                });
            }
        }
        if self.backends.mount == BackendKind::Nfs {
            nfs::MountPlan::check_params(&self.driver).map_err(|problem| {
                PolicyError::DriverParam {
                    key: "options".into(),
                    problem,
                }
            })?;
        }
        if self.backends.mount == BackendKind::Ceph {
            match self.driver.get("pool") {
                None => {
                    return Err(PolicyError::DriverParam {
                        key: "pool".into(),
                        problem:
                            "the ceph backend needs a pool; set \"driver\": {\"pool\": \"rbd\"}"
                                .into(),
                    })
                }
                Some(pool) => check_identifier("pool", pool)?,
            }
        }
        self.runtime.validate()
    }

    /// The policy as JSON in volplugin's shape (with `name` and defaults filled in).
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain maps and strings cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl Serialize for Policy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            name: &'a PolicyName,
            backends: &'a Backends,
            driver: &'a BTreeMap<String, String>,
            unlocked: bool,
            #[serde(rename = "destroy-on-remove")]
            destroy_on_remove: bool,
            create: &'a CreateSpec,
            filesystems: &'a BTreeMap<String, MkfsTemplate>,
            runtime: &'a RuntimeOptions,
            #[serde(skip_serializing_if = "Option::is_none")]
            reclaim: Option<Reclaim>,
            ephemeral: bool,
        }
        Out {
            name: &self.name,
            backends: &self.backends,
            driver: &self.driver,
            unlocked: self.unlocked,
            destroy_on_remove: self.destroy_on_remove,
            create: &self.create,
            filesystems: &self.filesystems,
            runtime: &self.runtime,
            reclaim: self.reclaim,
            ephemeral: self.ephemeral,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Policy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let doc = PolicyDoc::deserialize(d)?;
        let name = PolicyName::new(doc.name.clone().unwrap_or_default())
            .map_err(serde::de::Error::custom)?;
        Self::from_doc(name, doc).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn name(s: &str) -> PolicyName {
        PolicyName::new(s).unwrap()
    }

    fn parse(json: &str) -> Result<Policy, PolicyError> {
        Policy::from_json(&name("p"), json.as_bytes())
    }

    #[test]
    fn backend_shortcut_expands() {
        let p = parse(r#"{"backend":"ceph","driver":{"pool":"rbd"},"create":{"size":"10MB"}}"#)
            .unwrap();
        assert_eq!(p.backends, Backends::expand(BackendKind::Ceph));
        let p = parse(r#"{"backend":"nfs"}"#).unwrap();
        assert_eq!(p.backends.crud, None);
        assert_eq!(p.backends.mount, BackendKind::Nfs);
    }

    #[test]
    fn backends_wins_over_backend() {
        let p = parse(r#"{"backend":"ceph","backends":{"mount":"nfs"}}"#).unwrap();
        assert_eq!(p.backends.mount, BackendKind::Nfs);
    }

    #[test]
    fn backend_errors_are_precise() {
        let e = parse(r#"{}"#).unwrap_err().to_string();
        assert!(e.contains("names no backend"), "{e}");
        let e = parse(r#"{"backend":"gluster"}"#).unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown backend \"gluster\" in backend; known backends: ceph, nfs, local, null"
        );
        let e = parse(r#"{"backends":{"crud":"ceph"}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("backends.mount is required"), "{e}");
        let e = parse(r#"{"backends":{"crud":"ceph","mount":"nfs"}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("backends.crud is \"ceph\" but backends.mount is \"nfs\""),
            "{e}"
        );
        let e = parse(r#"{"backend":""}"#).unwrap_err().to_string();
        assert!(e.contains("names no backend"), "{e}");
    }

    #[test]
    fn size_rules() {
        let e = parse(r#"{"backend":"local","create":{"size":"0"}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs at least 1MB"), "{e}");
        let e = parse(r#"{"backend":"local"}"#).unwrap_err().to_string();
        assert!(e.contains("create.size is 0"), "{e}");
        let e = parse(r#"{"backend":"local","create":{"size":"500KB"}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("500kB"), "{e}");
        let e = parse(r#"{"backend":"local","create":{"size":"lots"}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("create.size: \"lots\" is not a size"), "{e}");
        // Blank size with a mount-only backend is fine.
        parse(r#"{"backend":"nfs","create":{"size":""}}"#).unwrap();
    }

    #[test]
    fn filesystems_default_and_check() {
        let p = parse(r#"{"backend":"local","create":{"size":"10MB"}}"#).unwrap();
        assert_eq!(p.create.filesystem, "ext4");
        assert_eq!(p.filesystems.len(), 1);
        let e = parse(r#"{"backend":"local","create":{"size":"10MB","filesystem":"btrfs"}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("filesystem \"btrfs\" is not defined in the policy's filesystems (ext4)"),
            "{e}"
        );
        let e = parse(r#"{"backend":"local","create":{"size":"10MB"},"filesystems":{"ext4":" "}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is empty"), "{e}");
        let e = parse(
            r#"{"backend":"local","create":{"size":"10MB"},"filesystems":{"ext4":"mkfs.x %","a b":"mkfs.y %"}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("filesystem name \"a b\""), "{e}");
    }

    #[test]
    fn ceph_needs_a_pool() {
        let e = parse(r#"{"backend":"ceph","create":{"size":"10MB"}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a pool"), "{e}");
        let e = parse(r#"{"backend":"ceph","driver":{"pool":"../x"},"create":{"size":"10MB"}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("contains '/'"), "{e}");
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = parse(r#"{"backend":"nfs","unlockd":true}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `unlockd`"), "{e}");
        let e = parse(r#"{"backend":"nfs","runtime":{"snapshot":{"frequncy":"1m"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `frequncy`"), "{e}");
    }

    #[test]
    fn nfs_is_unlocked_unless_said_otherwise() {
        assert!(parse(r#"{"backend":"nfs"}"#).unwrap().unlocked);
        assert!(
            !parse(r#"{"backend":"nfs","unlocked":false}"#)
                .unwrap()
                .unlocked
        );
        assert!(
            !parse(r#"{"backend":"local","create":{"size":"10MB"}}"#)
                .unwrap()
                .unlocked
        );
    }

    #[test]
    fn nfs_mount_options_are_checked_at_upload() {
        for (json, want) in [
            (
                r#"{"backend":"nfs","driver":{"options":"foo=bar=baz"}}"#,
                "is not key or key=value",
            ),
            (
                r#"{"backend":"nfs","driver":{"nfsvers":"5"}}"#,
                "not an NFS version",
            ),
            (
                r#"{"backend":"nfs","driver":{"sec":"sys,exec"}}"#,
                "may hold only",
            ),
            (
                r#"{"backend":"nfs","driver":{"nfsver":"4"}}"#,
                "not an NFS driver parameter",
            ),
        ] {
            let e = parse(json).unwrap_err().to_string();
            assert!(
                e.contains("driver.options") && e.contains(want),
                "{json}: {e}"
            );
        }
        parse(r#"{"backend":"nfs","driver":{"options":"nfsvers=4,sync","timeo":"600"}}"#).unwrap();
    }

    #[test]
    fn name_must_agree() {
        let e = parse(r#"{"name":"other","backend":"nfs"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("named \"other\" but is uploaded as \"p\""),
            "{e}"
        );
        parse(r#"{"name":"p","backend":"nfs"}"#).unwrap();
    }

    #[test]
    fn runtime_rules() {
        for (json, want) in [
            (r#"{"snapshots":true}"#, "snapshot.frequency is missing"),
            (
                r#"{"snapshots":true,"snapshot":{"frequency":"1m"}}"#,
                "keep must be at least 1",
            ),
            (
                r#"{"snapshots":true,"snapshot":{"frequency":"10d","keep":1}}"#,
                "write 240h",
            ),
            (
                r#"{"snapshots":true,"snapshot":{"frequency":"0s","keep":1}}"#,
                "zero frequency",
            ),
            (
                r#"{"snapshots":true,"snapshot":{"frequency":"0","keep":1}}"#,
                "zero frequency",
            ),
            (
                r#"{"snapshots":true,"snapshot":{"frequency":"10","keep":1}}"#,
                "missing unit",
            ),
            (
                r#"{"snapshots":true,"snapshot":{"frequency":"100ms","keep":1}}"#,
                "1s minimum",
            ),
            (
                r#"{"snapshots":true,"snapshot":{"frequency":"5x","keep":1}}"#,
                "unknown unit",
            ),
            (
                r#"{"snapshots":true,"snapshot":{"frequency":"1h","keep":1,"tiers":{"daily":{"every":"90m","keep":1}}}}"#,
                "not a multiple of snapshot.frequency",
            ),
            (
                r#"{"snapshots":true,"snapshot":{"frequency":"1h","keep":1,"tiers":{"daily":{"every":"24h","keep":0}}}}"#,
                "tiers.daily.keep is 0",
            ),
            (
                r#"{"snapshots":true,"snapshot":{"frequency":"1h","keep":1,"tiers":{"Daily!":{"every":"24h","keep":1}}}}"#,
                "is not a tier name",
            ),
            (
                r#"{"snapshots":true,"snapshot":{"frequency":"1h","keep":1,"tiers":{"daily":{"every":"24h","keep":1,"at":"0h"}}}}"#,
                "unknown field",
            ),
            (
                r#"{"snapshots":true,"snapshot":{"frequency":null}}"#,
                "snapshot.frequency is missing",
            ),
        ] {
            let e = RuntimeOptions::from_json(json.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
        let r = RuntimeOptions::from_json(
            br#"{"snapshots":true,"snapshot":{"frequency":"1h30m","keep":3}}"#,
        )
        .unwrap();
        assert_eq!(
            r.snapshot.frequency.unwrap().every(),
            Duration::from_secs(5400)
        );
        // Disabled snapshots need nothing else.
        RuntimeOptions::from_json(br#"{"snapshots":false}"#).unwrap();
        // frequency null (or snapshots false) with a keep: nothing scheduled, pruned.
        for json in [
            r#"{"snapshots":true,"snapshot":{"frequency":null,"keep":5}}"#,
            r#"{"snapshots":false,"snapshot":{"frequency":"1m","keep":5}}"#,
        ] {
            let r = RuntimeOptions::from_json(json.as_bytes()).unwrap();
            assert!(r.scheduled().is_none() && r.snapshot.prunes(), "{json}");
        }
        let r = RuntimeOptions::from_json(
            br#"{"snapshots":true,"signal":true,"snapshot":{"frequency":"1h","keep":24,
                 "tiers":{"daily":{"every":"24h","keep":7},"weekly":{"every":"168h","keep":4}}}}"#,
        )
        .unwrap();
        assert!(r.signal);
        assert_eq!(r.snapshot.tiers["weekly"].keep, 4);
        let back: RuntimeOptions =
            serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn serialize_round_trip() {
        let p = parse(
            r#"{"backend":"ceph","driver":{"pool":"rbd"},"create":{"size":"1.5GB","filesystem":"xfs"},
                "filesystems":{"xfs":"mkfs.xfs -f %"},"destroy-on-remove":true,
                "runtime":{"snapshots":true,"snapshot":{"frequency":"30m","keep":20},"rate-limit":{"write-bps":1000}}}"#,
        )
        .unwrap();
        let json = p.to_json();
        let back = Policy::from_stored_json(&json).unwrap();
        assert_eq!(back, p);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["backends"]["crud"], "ceph");
        assert_eq!(v["create"]["size"], "1500MB");
        assert_eq!(v["runtime"]["rate-limit"]["write-bps"], 1000);
    }
}
