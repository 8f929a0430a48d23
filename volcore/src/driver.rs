//! Storage driver traits (DESIGN.md §7) and the `null` backend.
//!
//! A driver does storage work for one backend. Idempotency is part of each method's
//! contract: `create` of an existing volume is `AlreadyExists`, `destroy` of a missing one
//! `NotFound`. A driver without snapshots returns `None` from
//! [`VolumeDriver::snapshots`] instead of failing at run time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::exec::Cmd;
use crate::kv::BoxError;
use crate::name::{HostName, SnapshotName, VolumeRef};
use crate::policy::{BackendKind, MkfsTemplate};
use crate::size::Size;
use crate::volume::Volume;

/// What a driver needs to know about a volume.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VolumeSpec {
    /// The volume.
    pub volume: VolumeRef,
    /// Its size.
    pub size: Size,
    /// Its filesystem name.
    pub filesystem: String,
    /// The mkfs template for it.
    pub mkfs: Option<MkfsTemplate>,
    /// Backend parameters from the policy (`pool`, …).
    pub params: BTreeMap<String, String>,
    /// NFS source, for mount-only backends.
    pub source: Option<String>,
    /// How long one storage command may take.
    pub timeout: Duration,
}

impl VolumeSpec {
    /// Enough to address storage that has no volume record (a crash's leftover): its
    /// name and the driver parameters that locate it; no size, filesystem or mkfs.
    pub fn bare(volume: &VolumeRef, params: BTreeMap<String, String>, timeout: Duration) -> Self {
        Self {
            volume: volume.clone(),
            size: Size::from_bytes(0),
            filesystem: String::new(),
            mkfs: None,
            params,
            source: None,
            timeout,
        }
    }

    /// The spec of a volume record.
    pub fn of(v: &Volume, timeout: Duration) -> Self {
        Self {
            volume: v.reference(),
            size: v.create.size,
            filesystem: v.create.filesystem.clone(),
            mkfs: v.mkfs().cloned(),
            params: v.driver.clone(),
            source: v.mount.clone(),
            timeout,
        }
    }
}

/// Formats a block device the way every block driver does: checks that the policy names
/// an mkfs command for the volume's filesystem (before anything is attached), attaches
/// the device (`attach`), runs the command on it (`run`), and detaches it (`detach`) even
/// when mkfs failed; mkfs's error wins over the detach's.
pub async fn format_attached<AF, RF, DF>(
    spec: &VolumeSpec,
    timeout: Duration,
    attach: impl FnOnce() -> AF,
    run: impl FnOnce(Cmd) -> RF,
    detach: impl FnOnce() -> DF,
) -> Result<(), DriverError>
where
    AF: std::future::Future<Output = Result<PathBuf, DriverError>>,
    RF: std::future::Future<Output = Result<(), DriverError>>,
    DF: std::future::Future<Output = Result<(), DriverError>>,
{
    let mkfs = spec.mkfs.as_ref().ok_or_else(|| {
        DriverError::Invalid(format!(
            "volume {} has no mkfs command for filesystem {}",
            spec.volume, spec.filesystem
        ))
    })?;
    let dev = attach().await?;
    // The template's words are the argument vector; no shell sees them.
    let mut argv = mkfs.argv(&dev.display().to_string()).into_iter();
    let program = argv.next().unwrap_or_default();
    let res = run(Cmd::new(program, argv, timeout)).await;
    let detached = detach().await;
    res?;
    detached
}

/// Driver errors, by meaning.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The volume or snapshot already exists.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What.
        what: String,
    },
    /// The volume or snapshot does not exist.
    #[error("{what} does not exist")]
    NotFound {
        /// What.
        what: String,
    },
    /// The storage is in use (watchers, mounts) and cannot be changed now.
    #[error("{what} is busy: {detail}")]
    Busy {
        /// What.
        what: String,
        /// Who uses it.
        detail: String,
    },
    /// A storage command did not finish in time (and was killed).
    #[error("{op} of {what} did not finish within {timeout:?}")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// What.
        what: String,
        /// The limit.
        timeout: Duration,
    },
    /// The request cannot be served by this driver (bad parameter, missing pool, …).
    #[error("{0}")]
    Invalid(String),
    /// Anything else, with the storage system's own words.
    #[error("{op} of {what} failed: {detail}")]
    Failed {
        /// The operation.
        op: &'static str,
        /// What.
        what: String,
        /// The storage system's message.
        detail: String,
        /// The underlying error, when there is one (an I/O error, a parse error).
        #[source]
        source: Option<BoxError>,
    },
}

impl DriverError {
    /// [`DriverError::Failed`] with the storage system's words and no underlying error.
    pub fn failed(op: &'static str, what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Failed {
            op,
            what: what.into(),
            detail: detail.into(),
            source: None,
        }
    }

    /// [`DriverError::Failed`] caused by an I/O error, which it keeps as its source.
    pub fn io(op: &'static str, what: impl Into<String>, e: std::io::Error) -> Self {
        Self::Failed {
            op,
            what: what.into(),
            detail: e.to_string(),
            source: Some(Box::new(e)),
        }
    }
}

/// Creates, formats, destroys and lists a backend's volumes.
#[async_trait]
pub trait VolumeDriver: Send + Sync + std::fmt::Debug {
    /// The backend this driver serves.
    fn backend(&self) -> BackendKind;
    /// Creates the storage; `AlreadyExists` if it exists.
    async fn create(&self, spec: &VolumeSpec) -> Result<(), DriverError>;
    /// Puts a filesystem on new storage.
    async fn format(&self, spec: &VolumeSpec) -> Result<(), DriverError>;
    /// Destroys the storage (and its snapshots); `NotFound` if it is gone.
    async fn destroy(&self, spec: &VolumeSpec) -> Result<(), DriverError>;
    /// Whether the storage exists.
    async fn exists(&self, spec: &VolumeSpec) -> Result<bool, DriverError>;
    /// Every volume this backend holds.
    async fn list(&self) -> Result<Vec<VolumeRef>, DriverError>;
    /// The storage this backend holds, each with the parameters that address it (Ceph:
    /// its `pool`), for `check` to compare with the records; `None` when the backend
    /// keeps nothing that outlives the process (`null`), so there is nothing to compare.
    async fn inventory(&self) -> Result<Option<Vec<Stored>>, DriverError> {
        Ok(Some(
            self.list()
                .await?
                .into_iter()
                .map(|volume| Stored {
                    volume,
                    params: BTreeMap::new(),
                })
                .collect(),
        ))
    }
    /// Grows the storage to `to` (the filesystem on it is not grown). Backends that cannot
    /// resize say so.
    async fn resize(&self, spec: &VolumeSpec, to: Size) -> Result<(), DriverError> {
        let _ = to;
        Err(DriverError::Invalid(format!(
            "backend {} cannot resize volume {}",
            self.backend(),
            spec.volume
        )))
    }
    /// Repairs what a crash of an earlier process left on this host (a filesystem left
    /// frozen, a stale mount); daemons call it once at start.
    async fn recover(&self) -> Result<(), DriverError> {
        Ok(())
    }
    /// Snapshot support, if the backend has it.
    fn snapshots(&self) -> Option<&dyn SnapshotDriver> {
        None
    }
    /// Mount support, if the backend has it.
    fn mounts(&self) -> Option<&dyn MountDriver> {
        None
    }
}

/// A volume's storage as a backend's inventory reports it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Stored {
    /// The volume it belongs to (by its name in the backend).
    pub volume: VolumeRef,
    /// The driver parameters that address it, e.g. `pool` for Ceph.
    pub params: BTreeMap<String, String>,
}

/// A volume mounted on this host.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Mount {
    /// The volume.
    pub volume: VolumeRef,
    /// Where it is mounted.
    pub path: PathBuf,
    /// The block device it is mounted from, if any.
    pub device: Option<PathBuf>,
}

/// Where a volume is mounted: `<root>/<policy>/<volume>` (built from validated names, so
/// it cannot leave `root`).
pub fn mount_path(root: &Path, v: &VolumeRef) -> PathBuf {
    root.join(v.policy.as_str()).join(v.volume.as_str())
}

/// Attaches and mounts a backend's volumes on this host. Refcounting across containers
/// belongs to the plugin, not here.
#[async_trait]
pub trait MountDriver: Send + Sync {
    /// Attaches the storage and mounts it at `at`; already mounted there is `Ok`.
    async fn mount(&self, spec: &VolumeSpec, at: &Path) -> Result<Mount, DriverError>;
    /// Unmounts from `at` and detaches; not mounted is `Ok`.
    async fn unmount(&self, spec: &VolumeSpec, at: &Path) -> Result<(), DriverError>;
    /// Every volume of this backend mounted on this host.
    async fn mounted(&self) -> Result<Vec<Mount>, DriverError>;
    /// Takes the backend's own lock on the volume for `host`, where the backend has one
    /// (Ceph: an RBD advisory lock). The plugin calls it only while it holds the store's
    /// mount lock, so a lock another host holds is stale by construction: the driver
    /// breaks it and fences that host's clients, and reports whom it fenced. Taking a lock
    /// `host` already holds is `Ok` with nothing fenced.
    async fn claim(&self, spec: &VolumeSpec, host: &HostName) -> Result<Vec<Fenced>, DriverError> {
        let _ = (spec, host);
        Ok(Vec::new())
    }
    /// Drops the backend lock `claim` took; not held is `Ok`.
    async fn release(&self, spec: &VolumeSpec, host: &HostName) -> Result<(), DriverError> {
        let _ = (spec, host);
        Ok(())
    }
    /// Whether the mount at `at` still answers (NFS: a stale handle or a server that
    /// stopped answering does not); `Err` says what is wrong. Bounded in time. Backends
    /// whose mounts cannot go stale answer `Ok`.
    async fn probe(&self, at: &Path) -> Result<(), String> {
        let _ = at;
        Ok(())
    }
}

/// A client cut off from a volume's storage when another host claimed it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Fenced {
    /// Who held the stale lock (as the lock names it, e.g. the host).
    pub holder: String,
    /// The storage clients that were blocked (addresses).
    pub clients: Vec<String>,
}

/// Snapshots of a backend's volumes.
#[async_trait]
pub trait SnapshotDriver: Send + Sync {
    /// Takes a snapshot; `AlreadyExists` if the name is taken.
    async fn create_snapshot(
        &self,
        spec: &VolumeSpec,
        snap: &SnapshotName,
    ) -> Result<(), DriverError>;
    /// Removes a snapshot; `NotFound` if it is gone.
    async fn remove_snapshot(
        &self,
        spec: &VolumeSpec,
        snap: &SnapshotName,
    ) -> Result<(), DriverError>;
    /// The volume's snapshots, oldest first.
    async fn list_snapshots(&self, spec: &VolumeSpec) -> Result<Vec<SnapshotName>, DriverError>;
    /// Makes a new volume `to` from snapshot `snap` of `spec`.
    async fn copy_snapshot(
        &self,
        spec: &VolumeSpec,
        snap: &SnapshotName,
        to: &VolumeSpec,
    ) -> Result<(), DriverError>;
}

/// The `null` backend: no storage work at all. It remembers, in this process only, which
/// volumes and snapshots it was asked to make, so the control plane sees a coherent
/// backend. For control-plane tests and benchmarks; daemons accept it only with
/// `--allow-null-backend`.
#[derive(Debug, Default)]
pub struct NullDriver {
    state: Mutex<NullState>,
}

#[derive(Debug, Default)]
struct NullState {
    volumes: BTreeSet<VolumeRef>,
    snapshots: BTreeMap<VolumeRef, Vec<SnapshotName>>,
    mounted: BTreeMap<VolumeRef, PathBuf>,
}

impl NullDriver {
    /// A null driver with nothing in it.
    pub fn new() -> Self {
        Self::default()
    }

    /// The volumes it holds.
    pub fn volumes(&self) -> Vec<VolumeRef> {
        self.with(|st| st.volumes.iter().cloned().collect())
    }

    /// The volumes mounted now.
    pub fn mounted_volumes(&self) -> Vec<VolumeRef> {
        self.with(|st| st.mounted.keys().cloned().collect())
    }

    fn with<T>(&self, f: impl FnOnce(&mut NullState) -> T) -> T {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut st)
    }
}

#[async_trait]
impl VolumeDriver for NullDriver {
    fn backend(&self) -> BackendKind {
        BackendKind::Null
    }
    async fn create(&self, spec: &VolumeSpec) -> Result<(), DriverError> {
        self.with(|st| {
            if st.volumes.insert(spec.volume.clone()) {
                Ok(())
            } else {
                Err(DriverError::AlreadyExists {
                    what: format!("volume {}", spec.volume),
                })
            }
        })
    }
    async fn format(&self, spec: &VolumeSpec) -> Result<(), DriverError> {
        self.with(|st| {
            if st.volumes.contains(&spec.volume) {
                Ok(())
            } else {
                Err(DriverError::NotFound {
                    what: format!("volume {}", spec.volume),
                })
            }
        })
    }
    async fn destroy(&self, spec: &VolumeSpec) -> Result<(), DriverError> {
        self.with(|st| {
            if let Some(at) = st.mounted.get(&spec.volume) {
                return Err(DriverError::Busy {
                    what: format!("volume {}", spec.volume),
                    detail: format!("it is mounted at {}", at.display()),
                });
            }
            st.snapshots.remove(&spec.volume);
            if st.volumes.remove(&spec.volume) {
                Ok(())
            } else {
                Err(DriverError::NotFound {
                    what: format!("volume {}", spec.volume),
                })
            }
        })
    }
    async fn exists(&self, spec: &VolumeSpec) -> Result<bool, DriverError> {
        Ok(self.with(|st| st.volumes.contains(&spec.volume)))
    }
    async fn inventory(&self) -> Result<Option<Vec<Stored>>, DriverError> {
        // Its volumes live in this process only: after a restart every record would look
        // like lost storage.
        Ok(None)
    }
    async fn list(&self) -> Result<Vec<VolumeRef>, DriverError> {
        Ok(self.with(|st| st.volumes.iter().cloned().collect()))
    }
    fn snapshots(&self) -> Option<&dyn SnapshotDriver> {
        Some(self)
    }
    fn mounts(&self) -> Option<&dyn MountDriver> {
        Some(self)
    }
}

#[async_trait]
impl MountDriver for NullDriver {
    async fn mount(&self, spec: &VolumeSpec, at: &Path) -> Result<Mount, DriverError> {
        self.with(|st| {
            if !st.volumes.contains(&spec.volume) {
                return Err(DriverError::NotFound {
                    what: format!("volume {}", spec.volume),
                });
            }
            st.mounted.insert(spec.volume.clone(), at.to_path_buf());
            Ok(Mount {
                volume: spec.volume.clone(),
                path: at.to_path_buf(),
                device: None,
            })
        })
    }
    async fn unmount(&self, spec: &VolumeSpec, _at: &Path) -> Result<(), DriverError> {
        self.with(|st| st.mounted.remove(&spec.volume));
        Ok(())
    }
    async fn mounted(&self) -> Result<Vec<Mount>, DriverError> {
        Ok(self.with(|st| {
            st.mounted
                .iter()
                .map(|(v, p)| Mount {
                    volume: v.clone(),
                    path: p.clone(),
                    device: None,
                })
                .collect()
        }))
    }
}

#[async_trait]
impl SnapshotDriver for NullDriver {
    async fn create_snapshot(
        &self,
        spec: &VolumeSpec,
        snap: &SnapshotName,
    ) -> Result<(), DriverError> {
        self.with(|st| {
            if !st.volumes.contains(&spec.volume) {
                return Err(DriverError::NotFound {
                    what: format!("volume {}", spec.volume),
                });
            }
            let list = st.snapshots.entry(spec.volume.clone()).or_default();
            if list.contains(snap) {
                return Err(DriverError::AlreadyExists {
                    what: format!("snapshot {snap} of {}", spec.volume),
                });
            }
            list.push(snap.clone());
            Ok(())
        })
    }
    async fn remove_snapshot(
        &self,
        spec: &VolumeSpec,
        snap: &SnapshotName,
    ) -> Result<(), DriverError> {
        self.with(|st| {
            let list = st.snapshots.entry(spec.volume.clone()).or_default();
            let before = list.len();
            list.retain(|s| s != snap);
            if list.len() == before {
                Err(DriverError::NotFound {
                    what: format!("snapshot {snap} of {}", spec.volume),
                })
            } else {
                Ok(())
            }
        })
    }
    async fn list_snapshots(&self, spec: &VolumeSpec) -> Result<Vec<SnapshotName>, DriverError> {
        self.with(|st| {
            if !st.volumes.contains(&spec.volume) {
                return Err(DriverError::NotFound {
                    what: format!("volume {}", spec.volume),
                });
            }
            Ok(st.snapshots.get(&spec.volume).cloned().unwrap_or_default())
        })
    }
    async fn copy_snapshot(
        &self,
        spec: &VolumeSpec,
        snap: &SnapshotName,
        to: &VolumeSpec,
    ) -> Result<(), DriverError> {
        self.with(|st| {
            let has = st
                .snapshots
                .get(&spec.volume)
                .is_some_and(|l| l.contains(snap));
            if !has {
                return Err(DriverError::NotFound {
                    what: format!("snapshot {snap} of {}", spec.volume),
                });
            }
            if !st.volumes.insert(to.volume.clone()) {
                return Err(DriverError::AlreadyExists {
                    what: format!("volume {}", to.volume),
                });
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_its_cause_as_source() {
        use std::error::Error as _;
        let e = DriverError::io(
            "create",
            "volume p/v",
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, "no write access"),
        );
        assert_eq!(
            e.to_string(),
            "create of volume p/v failed: no write access"
        );
        let cause = e.source().expect("the I/O error is the source");
        let io = cause
            .downcast_ref::<std::io::Error>()
            .expect("an io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(DriverError::failed("map", "image rbd/x", "exit 1")
            .source()
            .is_none());
    }
}
