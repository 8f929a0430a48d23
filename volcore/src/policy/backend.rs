//! Backends: which storage system does what for a volume (volplugin's `backend`
//! shorthand or its `backends` triple).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::PolicyError;

/// The storage backends volcore knows.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum BackendKind {
    /// Ceph RBD images.
    Ceph,
    /// NFS exports (mount only: volumes are made outside volcore).
    Nfs,
    /// Loop-file volumes on one host.
    Local,
    /// No storage work at all (control-plane tests and benchmarks; daemons accept it only
    /// when started with `--allow-null-backend`).
    Null,
}

pub(super) const KNOWN_BACKENDS: &str = "ceph, nfs, local, null";

impl BackendKind {
    /// The backend's name as written in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ceph => "ceph",
            Self::Nfs => "nfs",
            Self::Local => "local",
            Self::Null => "null",
        }
    }

    pub(crate) fn parse(field: &'static str, s: &str) -> Result<Self, PolicyError> {
        match s {
            "ceph" => Ok(Self::Ceph),
            "nfs" => Ok(Self::Nfs),
            "local" => Ok(Self::Local),
            "null" => Ok(Self::Null),
            other => Err(PolicyError::UnknownBackend {
                field,
                value: other.to_owned(),
                known: KNOWN_BACKENDS,
            }),
        }
    }

    /// Whether this backend creates and destroys storage (NFS does not).
    pub fn creates_storage(self) -> bool {
        !matches!(self, Self::Nfs | Self::Null)
    }

    /// Whether several hosts may mount one volume at once (an `unlocked` volume): only a
    /// shared filesystem (NFS) allows it; a block device with ext4 or xfs on it is
    /// corrupted by a second host's mount. The null backend stores nothing, so sharing
    /// it harms nothing.
    pub fn allows_shared_mounts(self) -> bool {
        matches!(self, Self::Nfs | Self::Null)
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which backend does what for a volume.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Backends {
    /// Creates, formats and destroys storage; `None` for mount-only backends (NFS).
    pub crud: Option<BackendKind>,
    /// Mounts and unmounts.
    pub mount: BackendKind,
    /// Takes snapshots; `None` when the volume cannot be snapshotted.
    pub snapshot: Option<BackendKind>,
}

impl Backends {
    /// volplugin's `backend` shortcut: `ceph` does everything, `nfs` only mounts.
    pub fn expand(kind: BackendKind) -> Self {
        match kind {
            BackendKind::Nfs => Self {
                crud: None,
                mount: kind,
                snapshot: None,
            },
            k => Self {
                crud: Some(k),
                mount: k,
                snapshot: Some(k),
            },
        }
    }

    pub(super) fn validate(&self) -> Result<(), PolicyError> {
        for (field, v) in [("crud", self.crud), ("snapshot", self.snapshot)] {
            let Some(v) = v else { continue };
            if v == BackendKind::Nfs {
                return Err(PolicyError::BackendMismatch {
                    field,
                    value: v.to_string(),
                    mount: self.mount.to_string(),
                    why: "nfs only mounts existing exports; leave this field empty (\"\")",
                });
            }
            if v != self.mount {
                return Err(PolicyError::BackendMismatch {
                    field,
                    value: v.to_string(),
                    mount: self.mount.to_string(),
                    why:
                        "a volume's storage must be created, mounted and snapshotted by one backend",
                });
            }
        }
        Ok(())
    }
}

impl Serialize for Backends {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let doc = BackendsDoc {
            crud: Some(self.crud.map(|k| k.as_str()).unwrap_or("").to_owned()),
            mount: Some(self.mount.as_str().to_owned()),
            snapshot: Some(self.snapshot.map(|k| k.as_str()).unwrap_or("").to_owned()),
        };
        doc.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Backends {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BackendsDoc::deserialize(d)?
            .resolve()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct BackendsDoc {
    #[serde(default)]
    crud: Option<String>,
    #[serde(default)]
    mount: Option<String>,
    #[serde(default)]
    snapshot: Option<String>,
}

impl BackendsDoc {
    pub(super) fn resolve(&self) -> Result<Backends, PolicyError> {
        let opt =
            |field: &'static str, v: &Option<String>| -> Result<Option<BackendKind>, PolicyError> {
                match v.as_deref() {
                    None | Some("") => Ok(None),
                    Some(s) => BackendKind::parse(field, s).map(Some),
                }
            };
        let mount = opt("backends.mount", &self.mount)?.ok_or(PolicyError::NoMountBackend {
            known: KNOWN_BACKENDS,
        })?;
        let b = Backends {
            crud: opt("backends.crud", &self.crud)?,
            mount,
            snapshot: opt("backends.snapshot", &self.snapshot)?,
        };
        b.validate()?;
        Ok(b)
    }
}
