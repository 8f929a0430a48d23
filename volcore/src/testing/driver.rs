//! [`FakeDriver`]: an in-memory storage driver that records every call and injects faults
//! (an error or a hang) at any step.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::driver::{
    DriverError, Mount, MountDriver, NullDriver, SnapshotDriver, VolumeDriver, VolumeSpec,
};
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
    /// `mounted` (the host's mount listing).
    Mounted,
    /// `claim` (the backend's own lock).
    Claim,
    /// `release`.
    Release,
    /// `probe` (does a mount still answer).
    Probe,
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
    calls: Vec<String>,
    faults: HashMap<Step, Fault>,
}

/// Mount tables of every simulated host, by (host index, volume).
type MountTable = Arc<Mutex<BTreeMap<(usize, VolumeRef), PathBuf>>>;

/// An in-memory driver for tests: the [`NullDriver`]'s storage model (volumes, snapshots),
/// a mount table per simulated host, a record of every call, and an error or a hang at
/// any step where told to. Cheap to clone (a clone is the same host); [`another_host`]
/// is a second machine on the same storage.
///
/// [`another_host`]: FakeDriver::another_host
#[derive(Clone, Debug)]
pub struct FakeDriver {
    backend: BackendKind,
    store: Arc<NullDriver>,
    state: Arc<Mutex<State>>,
    host: usize,
    mounts: MountTable,
}

static HOSTS: AtomicUsize = AtomicUsize::new(0);

impl FakeDriver {
    /// A fake serving `backend`.
    pub fn new(backend: BackendKind) -> Self {
        Self {
            backend,
            store: Arc::default(),
            state: Arc::default(),
            host: HOSTS.fetch_add(1, Ordering::Relaxed),
            mounts: Arc::default(),
        }
    }

    /// The same storage seen from another machine: its own mounts, calls and faults.
    pub fn another_host(&self) -> Self {
        Self {
            backend: self.backend,
            store: self.store.clone(),
            state: Arc::default(),
            host: HOSTS.fetch_add(1, Ordering::Relaxed),
            mounts: self.mounts.clone(),
        }
    }

    fn table<T>(&self, f: impl FnOnce(&mut BTreeMap<(usize, VolumeRef), PathBuf>) -> T) -> T {
        f(&mut self.mounts.lock().unwrap_or_else(|p| p.into_inner()))
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
        self.store.volumes()
    }

    /// The volumes mounted now on this fake's host.
    pub fn mounted_volumes(&self) -> Vec<VolumeRef> {
        self.table(|t| {
            t.keys()
                .filter(|(h, _)| *h == self.host)
                .map(|(_, v)| v.clone())
                .collect()
        })
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
                source: None,
            }),
            Some(Fault::Hang) => std::future::pending().await,
        }
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
        self.store.create(spec).await
    }
    async fn format(&self, spec: &VolumeSpec) -> Result<(), DriverError> {
        self.enter(Step::Format, format!("format {}", spec.volume))
            .await?;
        self.store.format(spec).await
    }
    async fn destroy(&self, spec: &VolumeSpec) -> Result<(), DriverError> {
        self.enter(Step::Destroy, format!("destroy {}", spec.volume))
            .await?;
        let busy = self.table(|t| {
            t.iter()
                .find(|((_, v), _)| *v == spec.volume)
                .map(|(_, at)| at.clone())
        });
        if let Some(at) = busy {
            return Err(DriverError::Busy {
                what: format!("volume {}", spec.volume),
                detail: format!("it is mounted at {}", at.display()),
            });
        }
        self.store.destroy(spec).await
    }
    async fn exists(&self, spec: &VolumeSpec) -> Result<bool, DriverError> {
        self.enter(Step::Exists, format!("exists {}", spec.volume))
            .await?;
        self.store.exists(spec).await
    }
    async fn list(&self) -> Result<Vec<VolumeRef>, DriverError> {
        self.enter(Step::List, "list".into()).await?;
        self.store.list().await
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
        if !self.store.exists(spec).await? {
            return Err(DriverError::NotFound {
                what: format!("volume {}", spec.volume),
            });
        }
        self.table(|t| t.insert((self.host, spec.volume.clone()), at.to_path_buf()));
        Ok(Mount {
            volume: spec.volume.clone(),
            path: at.to_path_buf(),
            device: None,
        })
    }
    async fn unmount(&self, spec: &VolumeSpec, at: &Path) -> Result<(), DriverError> {
        self.enter(
            Step::Unmount,
            format!("unmount {} {}", spec.volume, at.display()),
        )
        .await?;
        self.table(|t| t.remove(&(self.host, spec.volume.clone())));
        Ok(())
    }
    async fn probe(&self, at: &Path) -> Result<(), String> {
        self.enter(Step::Probe, format!("probe {}", at.display()))
            .await
            .map_err(|e| e.to_string())
    }
    async fn mounted(&self) -> Result<Vec<Mount>, DriverError> {
        self.enter(Step::Mounted, "mounted".into()).await?;
        Ok(self.table(|t| {
            t.iter()
                .filter(|((h, _), _)| *h == self.host)
                .map(|((_, v), at)| Mount {
                    volume: v.clone(),
                    path: at.clone(),
                    device: None,
                })
                .collect()
        }))
    }
    async fn claim(
        &self,
        spec: &VolumeSpec,
        host: &crate::name::HostName,
    ) -> Result<Vec<crate::driver::Fenced>, DriverError> {
        self.enter(Step::Claim, format!("claim {} {host}", spec.volume))
            .await?;
        Ok(Vec::new())
    }
    async fn release(
        &self,
        spec: &VolumeSpec,
        host: &crate::name::HostName,
    ) -> Result<(), DriverError> {
        self.enter(Step::Release, format!("release {} {host}", spec.volume))
            .await
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
        self.store.create_snapshot(spec, snap).await
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
        self.store.remove_snapshot(spec, snap).await
    }
    async fn list_snapshots(&self, spec: &VolumeSpec) -> Result<Vec<SnapshotName>, DriverError> {
        self.enter(
            Step::ListSnapshots,
            format!("list-snapshots {}", spec.volume),
        )
        .await?;
        self.store.list_snapshots(spec).await
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
        self.store.copy_snapshot(spec, snap, to).await
    }
}
