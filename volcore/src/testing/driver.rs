//! [`FakeDriver`]: an in-memory storage driver that records every call and injects faults
//! (an error or a hang) at any step.

use std::collections::HashMap;
use std::path::Path;
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

/// An in-memory driver for tests: the [`NullDriver`]'s storage model (volumes, snapshots,
/// mounts), plus a record of every call and an error or a hang at any step where told
/// to. Cheap to clone (shared state).
#[derive(Clone, Debug)]
pub struct FakeDriver {
    backend: BackendKind,
    store: Arc<NullDriver>,
    state: Arc<Mutex<State>>,
}

impl FakeDriver {
    /// A fake serving `backend`.
    pub fn new(backend: BackendKind) -> Self {
        Self {
            backend,
            store: Arc::default(),
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
        self.store.volumes()
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
        MountDriver::mount(self.store.as_ref(), spec, at).await
    }
    async fn unmount(&self, spec: &VolumeSpec, at: &Path) -> Result<(), DriverError> {
        self.enter(
            Step::Unmount,
            format!("unmount {} {}", spec.volume, at.display()),
        )
        .await?;
        MountDriver::unmount(self.store.as_ref(), spec, at).await
    }
    async fn mounted(&self) -> Result<Vec<Mount>, DriverError> {
        MountDriver::mounted(self.store.as_ref()).await
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
