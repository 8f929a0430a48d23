//! [`FakeDriver`]: an in-memory storage driver that records every call and injects faults
//! (an error or a hang) at any step.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::driver::{DriverError, Mount, MountDriver, SnapshotDriver, VolumeDriver, VolumeSpec};
use crate::name::{SnapshotName, VolumeRef};
use crate::policy::BackendKind;

/// A driver step a fault can be injected at.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Step {
    /// `create`.
    Create,
    /// `format`.
    Format,
    /// `destroy`.
    Destroy,
    /// `exists`.
    Exists,
    /// `list`.
    List,
    /// `create_snapshot`.
    Snapshot,
    /// `remove_snapshot`.
    RemoveSnapshot,
    /// `list_snapshots`.
    ListSnapshots,
    /// `copy_snapshot`.
    Copy,
    /// `mount`.
    Mount,
    /// `unmount`.
    Unmount,
}

/// What happens at a faulty step.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Fail with this message.
    Fail(String),
    /// Never return (the caller's timeout must handle it).
    Hang,
}

#[derive(Debug, Default)]
struct State {
    volumes: BTreeSet<VolumeRef>,
    snapshots: BTreeMap<VolumeRef, Vec<SnapshotName>>,
    calls: Vec<String>,
    faults: HashMap<Step, Fault>,
    mounted: BTreeMap<VolumeRef, PathBuf>,
}

/// An in-memory driver for tests: keeps volumes and snapshots, records calls, and fails
/// or hangs where told to. Cheap to clone (shared state).
#[derive(Clone, Debug)]
pub struct FakeDriver {
    backend: BackendKind,
    state: Arc<Mutex<State>>,
}

impl FakeDriver {
    /// A fake serving `backend`.
    pub fn new(backend: BackendKind) -> Self {
        Self {
            backend,
            state: Arc::default(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut st)
    }

    /// From now on `step` behaves as `fault`.
    pub fn inject(&self, step: Step, fault: Fault) {
        self.with(|st| st.faults.insert(step, fault));
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.with(|st| st.faults.clear());
    }

    /// Every call so far, as `"create p/v"`, `"snapshot p/v snap-…"` …
    pub fn calls(&self) -> Vec<String> {
        self.with(|st| st.calls.clone())
    }

    /// The volumes that exist in this fake's storage.
    pub fn volumes(&self) -> Vec<VolumeRef> {
        self.with(|st| st.volumes.iter().cloned().collect())
    }

    async fn enter(&self, step: Step, call: String) -> Result<(), DriverError> {
        let fault = self.with(|st| {
            st.calls.push(call.clone());
            st.faults.get(&step).cloned()
        });
        match fault {
            None => Ok(()),
            Some(Fault::Fail(msg)) => Err(DriverError::Failed {
                op: "fake",
                what: call,
                detail: msg,
            }),
            Some(Fault::Hang) => std::future::pending().await,
        }
    }
}

fn missing(v: &VolumeRef) -> DriverError {
    DriverError::NotFound {
        what: format!("volume {v}"),
    }
}

#[async_trait]
impl VolumeDriver for FakeDriver {
    fn backend(&self) -> BackendKind {
        self.backend
    }
    async fn create(&self, spec: &VolumeSpec) -> Result<(), DriverError> {
        self.enter(Step::Create, format!("create {}", spec.volume))
            .await?;
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
        self.enter(Step::Format, format!("format {}", spec.volume))
            .await?;
        self.with(|st| {
            if st.volumes.contains(&spec.volume) {
                Ok(())
            } else {
                Err(missing(&spec.volume))
            }
        })
    }
    async fn destroy(&self, spec: &VolumeSpec) -> Result<(), DriverError> {
        self.enter(Step::Destroy, format!("destroy {}", spec.volume))
            .await?;
        self.with(|st| {
            if st.mounted.contains_key(&spec.volume) {
                return Err(DriverError::Busy {
                    what: format!("volume {}", spec.volume),
                    detail: "it is mounted".into(),
                });
            }
            st.snapshots.remove(&spec.volume);
            if st.volumes.remove(&spec.volume) {
                Ok(())
            } else {
                Err(missing(&spec.volume))
            }
        })
    }
    async fn exists(&self, spec: &VolumeSpec) -> Result<bool, DriverError> {
        self.enter(Step::Exists, format!("exists {}", spec.volume))
            .await?;
        Ok(self.with(|st| st.volumes.contains(&spec.volume)))
    }
    async fn list(&self) -> Result<Vec<VolumeRef>, DriverError> {
        self.enter(Step::List, "list".into()).await?;
        Ok(self.volumes())
    }
    fn snapshots(&self) -> Option<&dyn SnapshotDriver> {
        Some(self)
    }
    fn mounts(&self) -> Option<&dyn MountDriver> {
        Some(self)
    }
}

#[async_trait]
impl MountDriver for FakeDriver {
    async fn mount(&self, spec: &VolumeSpec, at: &Path) -> Result<Mount, DriverError> {
        self.enter(
            Step::Mount,
            format!("mount {} {}", spec.volume, at.display()),
        )
        .await?;
        self.with(|st| {
            if !st.volumes.contains(&spec.volume) {
                return Err(missing(&spec.volume));
            }
            st.mounted.insert(spec.volume.clone(), at.to_path_buf());
            Ok(Mount {
                volume: spec.volume.clone(),
                path: at.to_path_buf(),
                device: None,
            })
        })
    }
    async fn unmount(&self, spec: &VolumeSpec, at: &Path) -> Result<(), DriverError> {
        self.enter(
            Step::Unmount,
            format!("unmount {} {}", spec.volume, at.display()),
        )
        .await?;
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
impl SnapshotDriver for FakeDriver {
    async fn create_snapshot(
        &self,
        spec: &VolumeSpec,
        snap: &SnapshotName,
    ) -> Result<(), DriverError> {
        self.enter(Step::Snapshot, format!("snapshot {} {snap}", spec.volume))
            .await?;
        self.with(|st| {
            if !st.volumes.contains(&spec.volume) {
                return Err(missing(&spec.volume));
            }
            let l = st.snapshots.entry(spec.volume.clone()).or_default();
            if l.contains(snap) {
                return Err(DriverError::AlreadyExists {
                    what: format!("snapshot {snap}"),
                });
            }
            l.push(snap.clone());
            Ok(())
        })
    }
    async fn remove_snapshot(
        &self,
        spec: &VolumeSpec,
        snap: &SnapshotName,
    ) -> Result<(), DriverError> {
        self.enter(
            Step::RemoveSnapshot,
            format!("remove-snapshot {} {snap}", spec.volume),
        )
        .await?;
        self.with(|st| {
            let l = st.snapshots.entry(spec.volume.clone()).or_default();
            let n = l.len();
            l.retain(|s| s != snap);
            if l.len() == n {
                Err(DriverError::NotFound {
                    what: format!("snapshot {snap}"),
                })
            } else {
                Ok(())
            }
        })
    }
    async fn list_snapshots(&self, spec: &VolumeSpec) -> Result<Vec<SnapshotName>, DriverError> {
        self.enter(
            Step::ListSnapshots,
            format!("list-snapshots {}", spec.volume),
        )
        .await?;
        self.with(|st| {
            if !st.volumes.contains(&spec.volume) {
                return Err(missing(&spec.volume));
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
        self.enter(
            Step::Copy,
            format!("copy {} {snap} {}", spec.volume, to.volume),
        )
        .await?;
        self.with(|st| {
            if !st
                .snapshots
                .get(&spec.volume)
                .is_some_and(|l| l.contains(snap))
            {
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
