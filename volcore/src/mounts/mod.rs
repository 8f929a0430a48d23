//! The mount lifecycle of one host: [`HostMounts`].
//!
//! A front-end — volplugin for Docker, a CSI node plugin, another orchestrator — calls
//! [`HostMounts::mount`] and [`HostMounts::unmount`] with a volume and a user id (Docker's
//! mount ID); everything that makes that safe lives here:
//!
//! - **One holder.** The first mount on a host takes the volume's `mount` lock, bound to
//!   the host's lease, in the same transaction that reads the volume record, its runtime
//!   options and this host's mount record. The lock write also bumps the volume's epoch.
//!   The driver then claims the backend's own lock (Ceph: an RBD lock, fencing a stale
//!   holder's clients), attaches and mounts — every driver call under the global timeout —
//!   and one fenced transaction publishes the mount record. Any failure rolls back what
//!   was done. Later users of the volume on the host only add their id (one fenced write).
//! - **Teardown.** The last unmount clears the rate limits, unmounts and detaches, releases
//!   the backend lock, and deletes the record and releases the lock in one fenced
//!   transaction. If the store is unreachable the volume is still unmounted at once and
//!   the store cleanup is retried in the background until it succeeds.
//! - **Lost lease.** While the lease is not live, locked volumes get no new users. With a
//!   new lease each mounted volume's lock is re-taken only if its epoch is unchanged —
//!   nobody held it meanwhile; store errors are retried with backoff. Where another holder
//!   came (even one that has let go since), the host fences itself: it unmounts
//!   ([`LeaseLossAction::Unmount`]) or keeps the mount for its current users and refuses
//!   new ones ([`LeaseLossAction::Keep`]). Re-establishing and unmounting one volume are
//!   serialized.
//! - **Identity.** The host publishes `hosts/<host>` on its lease; a second machine with a
//!   live label is refused at start ([`crate::hosts`]).
//! - **Restart.** At start the host re-binds the locks of its mount records to its new
//!   lease (before the old lease can expire), then compares the records with the driver's
//!   list of what is mounted — retried until the listing works, refusing new mounts
//!   meanwhile — and drops records whose mount is gone.
//!
//! Reads a front-end needs often (is it mounted here, where, by how many) are answered
//! from memory; the volume catalog ([`HostMounts::catalog`]) answers "what exists" from a
//! watch.

mod check;
mod record;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, instrument, warn};

pub use record::MountRecord;

use crate::catalog::{Catalog, CatalogChange};
use crate::cgroup::{DevNum, ThrottleConfig, Throttler};
use crate::driver::{mount_path, DriverError, MountDriver, VolumeDriver, VolumeSpec};
use crate::engine::Drivers;
use crate::global::GlobalConfig;
use crate::hosts::{self, HostError, HostIdentity};
use crate::keys::{Keys, LockKind};
use crate::kv::{KvError, KvStore, LeaseId, Precondition, TxnOp};
use crate::lease::LeaseState;
use crate::lock::{HeldLock, LockError, LockHolder, LockReason, LockRequest, Locker};
use crate::name::{HostName, VolumeRef};
use crate::policy::{BackendKind, RateLimit, RuntimeOptions};
use crate::volume::Volume;

/// What a host does with a mounted volume whose lock another holder took while the
/// host's lease was lost.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LeaseLossAction {
    /// Unmount it: the other holder owns the data now.
    Unmount,
    /// Keep it mounted for the users it has, refuse new ones, and raise an alarm.
    Keep,
}

impl std::str::FromStr for LeaseLossAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "unmount" => Ok(Self::Unmount),
            "keep" => Ok(Self::Keep),
            other => Err(format!("{other:?}: use unmount or keep")),
        }
    }
}

impl std::fmt::Display for LeaseLossAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unmount => "unmount",
            Self::Keep => "keep",
        })
    }
}

/// How one host mounts.
#[derive(Clone, Debug)]
pub struct MountsConfig {
    /// This host's label.
    pub host: HostName,
    /// Its state directory: its persistent identity, held by one process at a time.
    pub state_dir: PathBuf,
    /// The lock owner on this host (e.g. `volplugin:<name>`): stable across restarts, so
    /// a restarted process re-takes its own locks.
    pub owner: String,
    /// The software version, published in `hosts/<host>`.
    pub version: String,
    /// This host's mount root, instead of the global configuration's `MountPath`.
    pub mount_root: Option<PathBuf>,
    /// The fencing action after a lost lease.
    pub on_lease_loss: LeaseLossAction,
    /// Where rate limits go; `None`: not applied.
    pub throttle: Option<ThrottleConfig>,
}

/// What a host mounts with.
pub struct MountsDeps {
    /// The store.
    pub kv: Arc<dyn KvStore>,
    /// The key layout.
    pub keys: Keys,
    /// The drivers, by backend.
    pub drivers: Drivers,
    /// The host's lease.
    pub lease: watch::Receiver<LeaseState>,
    /// The global configuration.
    pub global: watch::Receiver<GlobalConfig>,
}

/// Mount lifecycle errors, by meaning; front-ends turn them into their protocol's errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// A mount without a user id.
    #[error("a mount needs the id of its user (Docker's mount ID)")]
    NoUserId,
    /// The host has not finished re-adopting its mounts after a start.
    #[error("host {host} is still re-adopting its mounts after a start ({why}); new mounts are refused until it has, retry shortly")]
    NotReady {
        /// The host.
        host: HostName,
        /// What it waits for.
        why: String,
    },
    /// The lease is not live: no new mounts of locked volumes.
    #[error("host {host} has lost contact with the store; it refuses new mounts of locked volumes until its lease is back")]
    NoLease {
        /// The host.
        host: HostName,
    },
    /// The volume has no record.
    #[error("volume {volume} does not exist")]
    VolumeNotFound {
        /// The volume.
        volume: VolumeRef,
    },
    /// No driver for the volume's backend on this host.
    #[error("this host serves no driver for backend {backend} (volume {volume})")]
    NoDriver {
        /// The volume.
        volume: VolumeRef,
        /// Its backend.
        backend: BackendKind,
    },
    /// The backend cannot mount.
    #[error("backend {backend} cannot mount volumes (volume {volume})")]
    CannotMount {
        /// The volume.
        volume: VolumeRef,
        /// Its backend.
        backend: BackendKind,
    },
    /// Another holder has the lock.
    #[error(transparent)]
    Locked(Box<LockError>),
    /// Mounted here, but its lock is being re-taken after a lost lease.
    #[error("volume {volume} is mounted on {host}, but its lock is being re-established after a lost lease; it gets no new users until then, retry shortly")]
    LockSuspended {
        /// The volume.
        volume: VolumeRef,
        /// This host.
        host: HostName,
    },
    /// Mounted here for its current users, but another holder has its lock now.
    #[error("volume {volume} is still mounted on {host} for its current users, but {} holds its lock now (this host's lease was lost meanwhile); it gets no new users here — stop its containers on {host} to unmount it", .holder.as_ref().map_or_else(|| "another holder".to_owned(), |h| format!("host {}", h.host)))]
    LockLost {
        /// The volume.
        volume: VolumeRef,
        /// This host.
        host: HostName,
        /// Who holds it now, if known.
        holder: Option<Box<LockHolder>>,
    },
    /// The mount root resolves, through symbolic links, into a system directory.
    #[error("the mount root {root} resolves to {resolved}, which is refused: {why}; point MountPath (or --mount-path) at a real directory outside the system directories")]
    UnsafeMountRoot {
        /// The configured root.
        root: PathBuf,
        /// What it resolves to.
        resolved: PathBuf,
        /// Why that is refused.
        why: String,
    },
    /// A driver step failed.
    #[error("{op} {volume}: {source}")]
    Driver {
        /// The step.
        op: &'static str,
        /// The volume.
        volume: VolumeRef,
        /// The driver's error.
        #[source]
        source: Box<DriverError>,
    },
    /// The host's identity could not be established.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The store failed.
    #[error(transparent)]
    Kv(#[from] KvError),
}

/// The state of a volume's lock as this host sees it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum MountLock {
    /// The volume is unlocked (shared filesystems).
    Unlocked,
    /// Held, under this fencing token.
    Held(HeldLock),
    /// The lease was lost; the lock is being re-taken.
    Suspended(HeldLock),
    /// Another holder took it (with `--on-lease-loss keep`).
    Lost(Option<Box<LockHolder>>),
}

/// A volume mounted on this host.
#[derive(Clone, Debug)]
pub struct MountView {
    /// Its record on this host.
    pub record: MountRecord,
    /// Its lock.
    pub lock: MountLock,
    /// The volume (as mounted).
    pub volume: Arc<Volume>,
}

impl MountView {
    /// Where it is mounted.
    pub fn path(&self) -> &std::path::Path {
        &self.record.path
    }
}

/// Where a host is in its start.
#[derive(Clone, PartialEq, Eq, Debug)]
enum Adoption {
    /// Listing what is mounted; the last error, if it failed.
    Pending(Option<String>),
    /// Done: new mounts are accepted.
    Done,
}

/// Store work a host still owes for a volume (the store was unreachable).
#[derive(Clone, Debug)]
enum Owed {
    /// Write the in-memory record (a user came or went).
    Record,
    /// Delete the record and release this lock (the volume is unmounted).
    Teardown(Option<Box<HeldLock>>),
}

struct Inner {
    cfg: MountsConfig,
    kv: Arc<dyn KvStore>,
    keys: Keys,
    drivers: Drivers,
    locker: Locker,
    identity: HostIdentity,
    lease: watch::Receiver<LeaseState>,
    global: watch::Receiver<GlobalConfig>,
    catalog: Catalog,
    throttler: Option<Arc<Throttler>>,
    guards: Mutex<HashMap<VolumeRef, Arc<tokio::sync::Mutex<()>>>>,
    mounted: Mutex<BTreeMap<VolumeRef, MountView>>,
    owed: Mutex<BTreeMap<VolumeRef, Owed>>,
    owed_wake: Arc<Notify>,
    adoption: watch::Sender<Adoption>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

/// One host's mounts (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct HostMounts {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HostMounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostMounts")
            .field("host", &self.inner.cfg.host)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long a mount waits for a starting host's re-adoption before it is refused.
const ADOPTION_PATIENCE: Duration = Duration::from_secs(2);

/// Backoff for store retries: 100 ms doubling to 5 s.
fn next_pause(p: Duration) -> Duration {
    (p * 2).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

impl HostMounts {
    /// Takes the host's identity, publishes `hosts/<host>`, re-binds the locks of this
    /// host's mount records to the current lease, and starts the background work
    /// (re-adoption, lease and runtime watchers, owed store cleanup).
    pub async fn start(deps: MountsDeps, cfg: MountsConfig) -> Result<Self, MountError> {
        let identity = HostIdentity::open(&cfg.state_dir, cfg.host.clone())?;
        // What a crashed predecessor left on this host (a filesystem left frozen, …).
        deps.drivers.recover().await;
        let lease = deps
            .lease
            .borrow()
            .usable()
            .cloned()
            .ok_or_else(|| MountError::NoLease {
                host: cfg.host.clone(),
            })?;
        hosts::register(
            deps.kv.as_ref(),
            &deps.keys,
            &identity,
            &cfg.version,
            &lease,
        )
        .await?;
        let locker = Locker::new(deps.kv.clone(), deps.keys.clone(), cfg.host.clone())
            .with_owner(cfg.owner.clone())
            .with_identity(identity.host_id(), identity.instance());
        let throttler = cfg
            .throttle
            .as_ref()
            .and_then(|t| match Throttler::detect(t) {
                Ok(t) => Some(Arc::new(t)),
                Err(e) => {
                    warn!(error = %e, "rate limits disabled");
                    None
                }
            });
        let catalog = Catalog::start(deps.kv.clone(), deps.keys.clone());
        let (adoption, _) = watch::channel(Adoption::Pending(None));
        let me = Self {
            inner: Arc::new(Inner {
                cfg,
                kv: deps.kv,
                keys: deps.keys,
                drivers: deps.drivers,
                locker,
                identity,
                lease: deps.lease,
                global: deps.global,
                catalog,
                throttler,
                guards: Mutex::default(),
                mounted: Mutex::default(),
                owed: Mutex::default(),
                owed_wake: Arc::new(Notify::new()),
                adoption,
                tasks: Mutex::default(),
            }),
        };
        me.load_records(&lease).await?;
        let mut tasks = Vec::new();
        if let Some(w) = me.inner.throttler.as_ref().and_then(|t| t.spawn_watcher()) {
            tasks.push(w);
        }
        let m = me.weak();
        tasks.push(tokio::spawn(async move { adopt(m).await }));
        let m = me.weak();
        let states = me.inner.lease.clone();
        tasks.push(tokio::spawn(
            async move { watch_lease(m, states, lease).await },
        ));
        let m = me.weak();
        let changes = me.inner.catalog.subscribe();
        tasks.push(tokio::spawn(async move { watch_runtime(m, changes).await }));
        let m = me.weak();
        let wake = me.inner.owed_wake.clone();
        tasks.push(tokio::spawn(async move { pay_owed(m, wake).await }));
        let m = me.weak();
        tasks.push(tokio::spawn(async move { report_checks(m).await }));
        lock(&me.inner.tasks).extend(tasks);
        info!(host = %me.inner.cfg.host, host_id = me.inner.identity.host_id(), instance = me.inner.identity.instance(), "host mounts started");
        Ok(me)
    }

    fn weak(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// Stops the background work. Locks and records stay: the lease runs out on its own
    /// unless a restarted process re-adopts them first.
    pub fn stop(&self) {
        for t in lock(&self.inner.tasks).drain(..) {
            t.abort();
        }
    }

    /// This host's label.
    pub fn host(&self) -> &HostName {
        &self.inner.cfg.host
    }

    /// The host's identity.
    pub fn identity(&self) -> &HostIdentity {
        &self.inner.identity
    }

    /// The watched volume catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The locker this host takes its mount locks with.
    pub fn locker(&self) -> &Locker {
        &self.inner.locker
    }

    /// A volume mounted here, from memory.
    pub fn mounted(&self, v: &VolumeRef) -> Option<MountView> {
        lock(&self.inner.mounted).get(v).cloned()
    }

    /// Every volume mounted here and where, from memory.
    pub fn paths(&self) -> BTreeMap<VolumeRef, PathBuf> {
        lock(&self.inner.mounted)
            .iter()
            .map(|(v, m)| (v.clone(), m.record.path.clone()))
            .collect()
    }

    /// Whether re-adoption finished (new mounts are accepted).
    pub fn adopted(&self) -> bool {
        *self.inner.adoption.borrow() == Adoption::Done
    }

    /// How many volumes still owe the store a record update or cleanup.
    pub fn owed(&self) -> usize {
        lock(&self.inner.owed).len()
    }

    // ----- helpers ---------------------------------------------------------------------

    fn guard(&self, v: &VolumeRef) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.inner.guards)
            .entry(v.clone())
            .or_default()
            .clone()
    }

    fn timeout(&self) -> Duration {
        self.inner.global.borrow().timeout
    }

    /// The mount root, checked after resolving symbolic links: the configured path passed
    /// [`check_mount_path`](crate::global::check_mount_path) as written, but a link on
    /// this host (`/mnt/x -> /etc`) would still mount volumes over system files.
    fn safe_root(&self) -> Result<(), MountError> {
        let root = match &self.inner.cfg.mount_root {
            Some(r) => r.clone(),
            None => self.inner.global.borrow().mount_path.clone(),
        };
        let resolved = resolve_existing(&root);
        if resolved == root {
            return Ok(());
        }
        crate::global::check_mount_path(&resolved).map_err(|e| MountError::UnsafeMountRoot {
            root,
            resolved,
            why: e.to_string(),
        })
    }

    fn mount_point(&self, v: &VolumeRef) -> PathBuf {
        match &self.inner.cfg.mount_root {
            Some(root) => mount_path(root, v),
            None => mount_path(&self.inner.global.borrow().mount_path, v),
        }
    }

    fn live_lease(&self) -> Result<LeaseId, MountError> {
        self.inner
            .lease
            .borrow()
            .lockable()
            .cloned()
            .ok_or_else(|| MountError::NoLease {
                host: self.inner.cfg.host.clone(),
            })
    }

    fn record_key(&self, v: &VolumeRef) -> String {
        self.inner.keys.mount(&self.inner.cfg.host, v)
    }

    fn driver(&self, vol: &Volume) -> Result<Arc<dyn VolumeDriver>, MountError> {
        let b = vol.backends.mount;
        let d = self
            .inner
            .drivers
            .get(b)
            .cloned()
            .ok_or_else(|| MountError::NoDriver {
                volume: vol.reference(),
                backend: b,
            })?;
        if d.mounts().is_none() {
            return Err(MountError::CannotMount {
                volume: vol.reference(),
                backend: b,
            });
        }
        Ok(d)
    }

    fn spec(&self, vol: &Volume) -> VolumeSpec {
        VolumeSpec::of(vol, self.timeout())
    }

    /// Whether a volume takes the mount lock: all but unlocked volumes of backends that
    /// several hosts may mount at once (an unlocked block volume from before that rule is
    /// mounted locked).
    fn is_locked(vol: &Volume) -> bool {
        !(vol.unlocked && vol.backends.mount.allows_shared_mounts())
    }

    async fn within<T>(
        &self,
        op: &'static str,
        v: &VolumeRef,
        fut: impl std::future::Future<Output = Result<T, DriverError>>,
    ) -> Result<T, MountError> {
        let timeout = self.timeout();
        let res = match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(DriverError::Timeout {
                op,
                what: format!("volume {v}"),
                timeout,
            }),
        };
        res.map_err(|source| MountError::Driver {
            op,
            volume: v.clone(),
            source: Box::new(source),
        })
    }

    fn apply_limits(&self, v: &VolumeRef, device: Option<&std::path::Path>, limits: &RateLimit) {
        let (Some(t), Some(dev)) = (&self.inner.throttler, device) else {
            if *limits != RateLimit::default() {
                warn!(volume = %v, "rate limits set but this host cannot apply them (no cgroup throttling or no block device)");
            }
            return;
        };
        match DevNum::of(dev).and_then(|d| t.apply(d, limits)) {
            Ok(()) => debug!(volume = %v, device = %dev.display(), ?limits, "rate limits applied"),
            Err(e) => warn!(volume = %v, error = %e, "could not apply rate limits"),
        }
    }

    fn clear_limits(&self, device: Option<&std::path::Path>) {
        if let (Some(t), Some(dev)) = (&self.inner.throttler, device) {
            if let Ok(d) = DevNum::of(dev) {
                if let Err(e) = t.clear(d) {
                    warn!(device = %dev.display(), error = %e, "could not clear rate limits");
                }
            }
        }
    }

    fn runtime_of(&self, v: &VolumeRef, vol: &Volume) -> RuntimeOptions {
        self.inner
            .catalog
            .runtime(v)
            .unwrap_or_else(|| vol.runtime.clone())
    }

    fn set(&self, v: &VolumeRef, m: Option<MountView>) {
        let mut map = lock(&self.inner.mounted);
        match m {
            Some(m) => map.insert(v.clone(), m),
            None => map.remove(v),
        };
    }

    fn owe(&self, v: &VolumeRef, what: Owed) {
        lock(&self.inner.owed).insert(v.clone(), what);
        self.inner.owed_wake.notify_one();
    }

    /// The fenced write of a record (a user came or went).
    async fn write_record(&self, v: &VolumeRef, m: &MountView) -> Result<(), KvError> {
        let mut ops = Vec::new();
        if let MountLock::Held(h) = &m.lock {
            ops.push(h.fence());
        }
        ops.push(TxnOp::Put {
            key: self.record_key(v),
            value: m.record.encode(),
            pre: Precondition::Any,
            lease: None,
        });
        self.inner.kv.txn(ops).await.map(|_| ())
    }

    /// Deletes this host's record of `v` and releases `held`, in one transaction fenced by
    /// the lock's token; a lock that is no longer ours is left alone.
    async fn delete_record(&self, v: &VolumeRef, held: Option<&HeldLock>) -> Result<(), KvError> {
        let rec = TxnOp::Delete {
            key: self.record_key(v),
            pre: Precondition::Any,
        };
        // When it was last used, for reclamation (in the same transaction: no round trip).
        let used = TxnOp::Put {
            key: self.inner.keys.last_used(v),
            value: serde_json::to_vec(&crate::reclaim::LastUsed {
                at: std::time::SystemTime::now(),
                host: self.inner.cfg.host.clone(),
            })
            .unwrap_or_default(),
            pre: Precondition::Any,
            lease: None,
        };
        let Some(h) = held else {
            return self.inner.kv.txn(vec![rec, used]).await.map(|_| ());
        };
        let ops = vec![
            rec.clone(),
            used.clone(),
            TxnOp::Delete {
                key: h.key.clone(),
                pre: Precondition::CreateRevision(h.token),
            },
        ];
        match self.inner.kv.txn(ops).await {
            Ok(_) => Ok(()),
            Err(KvError::Conflict { .. }) => {
                debug!(volume = %v, "the lock was no longer ours; deleting the record only");
                self.inner.kv.txn(vec![rec, used]).await.map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// Record delete + lock release now, or owed to the store if it is unreachable.
    async fn teardown_store(&self, v: &VolumeRef, held: Option<HeldLock>) {
        match self.delete_record(v, held.as_ref()).await {
            Ok(()) => {
                lock(&self.inner.owed).remove(v);
            }
            Err(e) => {
                warn!(volume = %v, error = %e, "store cleanup of an unmounted volume failed; retrying in the background");
                self.owe(v, Owed::Teardown(held.map(Box::new)));
            }
        }
    }

    /// Releases the lock of a mount that did not happen. If the store does not answer,
    /// the release is owed and retried: this host's lease lives on, so the lock would
    /// otherwise never expire and no other host could mount the volume.
    async fn release_or_owe(&self, v: &VolumeRef, l: &HeldLock) {
        match self.inner.locker.release(std::slice::from_ref(l)).await {
            Ok(()) | Err(LockError::NotHeld { .. }) => {}
            Err(e) => {
                warn!(volume = %v, error = %e, "could not release the mount lock of a failed mount; retrying in the background");
                self.owe(v, Owed::Teardown(Some(Box::new(l.clone()))));
            }
        }
    }

    /// Pays what is owed for `v` before a new operation on it.
    async fn settle_owed(&self, v: &VolumeRef) -> Result<(), MountError> {
        let owed = lock(&self.inner.owed).get(v).cloned();
        match owed {
            None => Ok(()),
            Some(Owed::Teardown(held)) => {
                self.delete_record(v, held.as_deref()).await?;
                lock(&self.inner.owed).remove(v);
                Ok(())
            }
            Some(Owed::Record) => {
                if let Some(m) = self.mounted(v) {
                    self.write_record(v, &m).await?;
                }
                lock(&self.inner.owed).remove(v);
                Ok(())
            }
        }
    }

    /// Who holds `v`'s mount lock now, if anyone (and the store answers).
    async fn holder_now(&self, v: &VolumeRef) -> Option<Box<LockHolder>> {
        let now = self.inner.locker.get(LockKind::Mount, v).await.ok()??;
        Some(Box::new(now.holder))
    }

    fn map_lock_err(&self, v: &VolumeRef, e: LockError) -> MountError {
        match e {
            LockError::CheckFailed { key } if key == self.inner.keys.volume(v) => {
                MountError::VolumeNotFound { volume: v.clone() }
            }
            LockError::LeaseLost { .. } => MountError::NoLease {
                host: self.inner.cfg.host.clone(),
            },
            LockError::Kv(k) => MountError::Kv(k),
            other => MountError::Locked(Box::new(other)),
        }
    }

    // ----- mount -----------------------------------------------------------------------

    /// Mounts `v` for user `id` on this host; returns where. A user already counted gets
    /// the path again.
    #[instrument(skip(self), fields(host = %self.inner.cfg.host))]
    pub async fn mount(&self, v: &VolumeRef, id: &str) -> Result<PathBuf, MountError> {
        if id.is_empty() {
            return Err(MountError::NoUserId);
        }
        if !self.adopted() {
            // Re-adoption normally takes moments: give it a little time before refusing.
            let mut rx = self.inner.adoption.subscribe();
            let _ = tokio::time::timeout(ADOPTION_PATIENCE, rx.wait_for(|a| *a == Adoption::Done))
                .await;
        }
        if let Adoption::Pending(why) = &*self.inner.adoption.borrow() {
            return Err(MountError::NotReady {
                host: self.inner.cfg.host.clone(),
                why: why
                    .clone()
                    .unwrap_or_else(|| "listing what is mounted".to_owned()),
            });
        }
        let guard = self.guard(v);
        let _g = guard.lock().await;
        self.settle_owed(v).await?;
        match self.mounted(v) {
            Some(m) => self.add_user(v, m, id).await,
            None => self.first_mount(v, id).await,
        }
    }

    async fn add_user(
        &self,
        v: &VolumeRef,
        mut m: MountView,
        id: &str,
    ) -> Result<PathBuf, MountError> {
        match &m.lock {
            MountLock::Unlocked => {}
            MountLock::Held(h) => {
                let lease = self.live_lease()?;
                if lease.as_str() != h.holder.lease {
                    // A new lease whose re-establishing has not reached this volume yet.
                    return Err(MountError::LockSuspended {
                        volume: v.clone(),
                        host: self.inner.cfg.host.clone(),
                    });
                }
            }
            MountLock::Suspended(_) => {
                return Err(MountError::LockSuspended {
                    volume: v.clone(),
                    host: self.inner.cfg.host.clone(),
                })
            }
            MountLock::Lost(holder) => {
                return Err(MountError::LockLost {
                    volume: v.clone(),
                    host: self.inner.cfg.host.clone(),
                    holder: holder.clone(),
                })
            }
        }
        if m.record.ids.contains(id) {
            return Ok(m.record.path.clone());
        }
        m.record.ids.insert(id.to_owned());
        match self.write_record(v, &m).await {
            Ok(()) => {}
            Err(KvError::Conflict { .. }) => {
                // The fence failed: the lock is not ours any more.
                let holder = self.holder_now(v).await;
                m.record.ids.remove(id);
                m.lock = MountLock::Lost(holder.clone());
                self.set(v, Some(m));
                return Err(MountError::LockLost {
                    volume: v.clone(),
                    host: self.inner.cfg.host.clone(),
                    holder,
                });
            }
            Err(e) => return Err(e.into()),
        }
        let path = m.record.path.clone();
        self.set(v, Some(m));
        info!(volume = %v, id, "mount shared");
        Ok(path)
    }

    async fn first_mount(&self, v: &VolumeRef, id: &str) -> Result<PathBuf, MountError> {
        let reads = [
            TxnOp::Read {
                key: self.inner.keys.volume(v),
                pre: Precondition::Present,
            },
            TxnOp::Read {
                key: self.inner.keys.runtime(v),
                pre: Precondition::Any,
            },
            TxnOp::Read {
                key: self.record_key(v),
                pre: Precondition::Any,
            },
        ];
        // The catalog says whether the volume is unlocked; unknown (just created) or
        // locked, the lock is taken — the record read under it has the last word.
        let mut take_lock = self
            .inner
            .catalog
            .get(v)
            .is_none_or(|i| Self::is_locked(&i.volume));
        let (held, vol, runtime) = loop {
            let (held, entries) = if take_lock {
                let lease = self.live_lease()?;
                let req = [LockRequest::new(
                    LockKind::Mount,
                    v.clone(),
                    LockReason::Mount,
                )];
                let (mut held, entries) = self
                    .inner
                    .locker
                    .acquire_reading(&req, &lease, Duration::ZERO, &reads)
                    .await
                    .map_err(|e| self.map_lock_err(v, e))?;
                (held.pop(), entries)
            } else {
                match self.inner.kv.txn(reads.to_vec()).await {
                    Ok(out) => (None, out.reads),
                    Err(KvError::Conflict { .. }) => {
                        return Err(MountError::VolumeNotFound { volume: v.clone() })
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            let mut it = entries.into_iter();
            let Some(ve) = it.next().flatten() else {
                if let Some(h) = &held {
                    self.release_or_owe(v, h).await;
                }
                return Err(MountError::VolumeNotFound { volume: v.clone() });
            };
            let vol = match ve.decode::<Volume>() {
                Ok(vol) => vol,
                Err(e) => {
                    if let Some(h) = &held {
                        self.release_or_owe(v, h).await;
                    }
                    return Err(e.into());
                }
            };
            if Self::is_locked(&vol) && held.is_none() {
                take_lock = true; // the catalog was stale
                continue;
            }
            let runtime = it
                .next()
                .flatten()
                .and_then(|e| serde_json::from_slice::<RuntimeOptions>(&e.value).ok())
                .unwrap_or_else(|| vol.runtime.clone());
            if it.next().flatten().is_some() {
                warn!(volume = %v, "replacing a mount record of this host that this process did not know");
            }
            break (held, vol, runtime);
        };
        crate::crash::point("mount.after-lock");
        if vol.unlocked && !vol.backends.mount.allows_shared_mounts() {
            warn!(volume = %v, backend = %vol.backends.mount, "unlocked volume on a block backend (made before that was refused): mounting it locked");
        }
        let locked = Self::is_locked(&vol);
        // An unlocked volume needed no lock after all: drop it in the publish.
        let (mount_lock, drop_lock) = match held {
            Some(h) if locked => (Some(h), None),
            Some(h) => (None, Some(h)),
            None => (None, None),
        };
        let result = self
            .attach_and_publish(
                v,
                id,
                &vol,
                &runtime,
                mount_lock.as_ref(),
                drop_lock.as_ref(),
            )
            .await;
        match result {
            Ok(view) => {
                let path = view.record.path.clone();
                self.set(v, Some(view));
                info!(volume = %v, id, path = %path.display(), "mounted");
                Ok(path)
            }
            Err(e) => Err(e),
        }
    }

    /// Claim, mount, limits, publish; undoes what it did on failure.
    async fn attach_and_publish(
        &self,
        v: &VolumeRef,
        id: &str,
        vol: &Volume,
        runtime: &RuntimeOptions,
        held: Option<&HeldLock>,
        drop_lock: Option<&HeldLock>,
    ) -> Result<MountView, MountError> {
        let unlock_all = || async {
            if let Some(l) = held.or(drop_lock) {
                self.release_or_owe(v, l).await;
            }
        };
        let driver = match self.driver(vol) {
            Ok(d) => d,
            Err(e) => {
                unlock_all().await;
                return Err(e);
            }
        };
        let Some(md) = driver.mounts() else {
            unlock_all().await;
            return Err(MountError::CannotMount {
                volume: v.clone(),
                backend: vol.backends.mount,
            });
        };
        let spec = self.spec(vol);
        let host = &self.inner.cfg.host;
        if held.is_some() {
            match self.within("claim", v, md.claim(&spec, host)).await {
                Ok(fenced) => {
                    for f in fenced {
                        warn!(volume = %v, fenced_host = %f.holder, clients = ?f.clients, "took over a volume from a holder whose lock had expired; fenced its storage clients");
                    }
                }
                Err(e) => {
                    self.release_claim(md, &spec).await;
                    unlock_all().await;
                    return Err(e);
                }
            }
            crate::crash::point("mount.after-claim");
        }
        let at = self.mount_point(v);
        let mounted = match self.safe_root() {
            Ok(()) => self.within("mount", v, md.mount(&spec, &at)).await,
            Err(e) => Err(e),
        };
        let m = match mounted {
            Ok(m) => m,
            Err(e) => {
                if held.is_some() {
                    self.release_claim(md, &spec).await;
                }
                unlock_all().await;
                return Err(e);
            }
        };
        crate::crash::point("mount.after-mount");
        self.apply_limits(v, m.device.as_deref(), &runtime.rate_limit);
        let record = MountRecord {
            ids: [id.to_owned()].into(),
            path: m.path.clone(),
            device: m.device.clone(),
            epoch: held.and_then(|h| h.epoch),
            volume: Some(vol.clone()),
            instance: Some(self.inner.identity.instance().to_owned()),
        };
        let mut ops: Vec<TxnOp> = held.iter().map(|h| h.fence()).collect();
        ops.push(TxnOp::Put {
            key: self.record_key(v),
            value: record.encode(),
            pre: Precondition::Any,
            lease: None,
        });
        if let Some(d) = drop_lock {
            ops.push(TxnOp::Delete {
                key: d.key.clone(),
                pre: Precondition::CreateRevision(d.token),
            });
        }
        let published = match self.inner.kv.txn(ops).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_retryable() => match self.inner.kv.get(&self.record_key(v)).await {
                // The answer was lost; the record says whether it applied.
                Ok(Some(e)) if MountRecord::decode(&e).ok().as_ref() == Some(&record) => Ok(()),
                _ => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = published {
            self.clear_limits(m.device.as_deref());
            if let Err(ue) = self.within("unmount", v, md.unmount(&spec, &m.path)).await {
                error!(volume = %v, error = %ue, "could not undo a mount whose record failed; volcli check will find it");
            }
            if held.is_some() {
                self.release_claim(md, &spec).await;
            }
            // The record may have landed after all: delete it (and the lock) or owe it.
            self.teardown_store(v, held.or(drop_lock).cloned()).await;
            return Err(match e {
                KvError::Conflict { .. } => MountError::LockLost {
                    volume: v.clone(),
                    host: host.clone(),
                    holder: None,
                },
                e => e.into(),
            });
        }
        Ok(MountView {
            record,
            lock: match held {
                Some(h) => MountLock::Held(h.clone()),
                None => MountLock::Unlocked,
            },
            volume: Arc::new(vol.clone()),
        })
    }

    async fn release_claim(&self, md: &dyn MountDriver, spec: &VolumeSpec) {
        if let Err(e) = self
            .within(
                "release",
                &spec.volume,
                md.release(spec, &self.inner.cfg.host),
            )
            .await
        {
            warn!(volume = %spec.volume, error = %e, "could not release the storage lock; the next holder breaks it");
        }
    }

    // ----- unmount ---------------------------------------------------------------------

    /// Ends user `id`'s use of `v`; the last user's unmount unmounts and detaches it. Not
    /// mounted here, or an unknown user, is `Ok`.
    #[instrument(skip(self), fields(host = %self.inner.cfg.host))]
    pub async fn unmount(&self, v: &VolumeRef, id: &str) -> Result<(), MountError> {
        let guard = self.guard(v);
        let _g = guard.lock().await;
        let Some(mut m) = self.mounted(v) else {
            return Ok(());
        };
        if !m.record.ids.contains(id) {
            return Ok(());
        }
        if m.record.ids.len() > 1 {
            m.record.ids.remove(id);
            self.set(v, Some(m.clone()));
            match self.write_record(v, &m).await {
                Ok(()) => {}
                Err(KvError::Conflict { .. }) => {
                    // The fence failed: the lock is not ours; no new users from now on.
                    warn!(volume = %v, "the mount lock is no longer ours");
                    m.lock = MountLock::Lost(self.holder_now(v).await);
                    self.set(v, Some(m.clone()));
                }
                Err(e) => {
                    warn!(volume = %v, error = %e, "could not record the user's departure; retrying in the background");
                    self.owe(v, Owed::Record);
                }
            }
            info!(volume = %v, id, users = m.record.ids.len(), "unmounted for one user");
            return Ok(());
        }
        self.unmount_all(v, &m, "unmounted").await
    }

    /// Unmounts and detaches `v` (all its users), then tears its store state down.
    async fn unmount_all(
        &self,
        v: &VolumeRef,
        m: &MountView,
        what: &str,
    ) -> Result<(), MountError> {
        let vol = &m.volume;
        let device = m.record.device.as_deref();
        // Limits go first: unmounting flushes dirty data, which a tight write limit would
        // otherwise stretch past the caller's timeout.
        self.clear_limits(device);
        let driver = self.driver(vol)?;
        let Some(md) = driver.mounts() else {
            return Err(MountError::CannotMount {
                volume: v.clone(),
                backend: vol.backends.mount,
            });
        };
        let spec = self.spec(vol);
        if let Err(e) = self
            .within("unmount", v, md.unmount(&spec, &m.record.path))
            .await
        {
            // Still mounted: its limits stay in force.
            self.apply_limits(v, device, &self.runtime_of(v, vol).rate_limit);
            return Err(e);
        }
        crate::crash::point("unmount.after-unmount");
        let held = match &m.lock {
            MountLock::Held(h) | MountLock::Suspended(h) => Some(h.clone()),
            MountLock::Unlocked | MountLock::Lost(_) => None,
        };
        if !matches!(m.lock, MountLock::Unlocked) {
            // Only this host's backend lock is dropped; a new holder's is left alone.
            self.release_claim(md, &spec).await;
        }
        crate::crash::point("unmount.after-release");
        self.set(v, None);
        self.teardown_store(v, held).await;
        info!(volume = %v, "{what}");
        Ok(())
    }

    // ----- leases ----------------------------------------------------------------------

    /// The lease is lost: every held lock is suspended (no new users) until re-taken.
    fn suspend_all(&self) {
        for m in lock(&self.inner.mounted).values_mut() {
            if let MountLock::Held(h) = &m.lock {
                m.lock = MountLock::Suspended(h.clone());
            }
        }
    }

    /// Re-takes every mounted volume's lock with `lease`, or fences where another holder
    /// came meanwhile.
    async fn reestablish_all(&self, lease: &LeaseId) {
        let vols: Vec<VolumeRef> = lock(&self.inner.mounted).keys().cloned().collect();
        for v in vols {
            if self.inner.lease.borrow().usable() != Some(lease) {
                return; // lost again: the next lease starts over
            }
            self.reestablish(&v, lease).await;
        }
    }

    async fn reestablish(&self, v: &VolumeRef, lease: &LeaseId) {
        let guard = self.guard(v);
        let _g = guard.lock().await;
        let Some(mut m) = self.mounted(v) else {
            return;
        };
        let (MountLock::Held(old) | MountLock::Suspended(old)) = m.lock.clone() else {
            return;
        };
        if old.holder.lease == lease.as_str() {
            return;
        }
        let mut req = LockRequest::new(LockKind::Mount, v.clone(), LockReason::Mount);
        if let Some(e) = m.record.epoch {
            req = req.continuing(e);
        }
        let mut pause = Duration::from_millis(100);
        loop {
            match self
                .inner
                .locker
                .acquire(std::slice::from_ref(&req), lease, Duration::ZERO)
                .await
            {
                Ok(mut h) => {
                    let Some(h) = h.pop() else { return };
                    let new_epoch = h.epoch;
                    m.lock = MountLock::Held(h);
                    if m.record.epoch != new_epoch {
                        m.record.epoch = new_epoch;
                        self.set(v, Some(m.clone()));
                        if self.write_record(v, &m).await.is_err() {
                            self.owe(v, Owed::Record);
                        }
                    } else {
                        self.set(v, Some(m.clone()));
                    }
                    info!(volume = %v, lease = %lease, "mount lock re-established");
                    self.reclaim(v, &m).await;
                    return;
                }
                Err(LockError::EpochChanged { now, .. }) => {
                    let holder = self.holder_now(v).await;
                    error!(volume = %v, epoch = ?now, holder = ?holder.as_ref().map(|h| &h.host), "another holder had this volume while our lease was lost");
                    self.fence(v, m, holder).await;
                    return;
                }
                Err(LockError::Held { holder }) => {
                    error!(volume = %v, holder = %holder.host, "another host took this volume while our lease was lost");
                    self.fence(v, m, Some(holder)).await;
                    return;
                }
                Err(LockError::LeaseLost { .. }) => return,
                Err(e) => {
                    warn!(volume = %v, error = %e, retry_in_ms = pause.as_millis() as u64, "could not re-establish the mount lock; retrying");
                    tokio::time::sleep(pause).await;
                    pause = next_pause(pause);
                    if self.inner.lease.borrow().usable() != Some(lease) {
                        return;
                    }
                }
            }
        }
    }

    /// Re-takes the backend lock of a volume mounted here (nothing to fence: the open
    /// client is this host's).
    async fn reclaim(&self, v: &VolumeRef, m: &MountView) {
        let Ok(driver) = self.driver(&m.volume) else {
            return;
        };
        let Some(md) = driver.mounts() else { return };
        let spec = self.spec(&m.volume);
        if let Err(e) = self
            .within("claim", v, md.claim(&spec, &self.inner.cfg.host))
            .await
        {
            warn!(volume = %v, error = %e, "could not re-take the storage lock");
        }
    }

    /// Another holder had the volume: unmount it, or keep it for its users and refuse new
    /// ones.
    async fn fence(&self, v: &VolumeRef, mut m: MountView, holder: Option<Box<LockHolder>>) {
        m.lock = MountLock::Lost(holder.clone());
        match self.inner.cfg.on_lease_loss {
            LeaseLossAction::Unmount => match self.unmount_all(v, &m, "fenced: unmounted").await {
                Ok(()) => {}
                Err(e) => {
                    error!(volume = %v, error = %e, "FENCING FAILED: the volume stays mounted although another holder took it");
                    self.set(v, Some(m));
                }
            },
            LeaseLossAction::Keep => {
                error!(volume = %v, holder = ?holder.as_ref().map(|h| &h.host), "ALARM: kept mounted for its current users although another holder took it (--on-lease-loss keep); no new users");
                self.set(v, Some(m));
            }
        }
    }

    // ----- start -----------------------------------------------------------------------

    /// Loads this host's records and re-binds their locks to `lease`.
    async fn load_records(&self, lease: &LeaseId) -> Result<(), MountError> {
        let prefix = self.inner.keys.mounts(&self.inner.cfg.host);
        let entries = self.inner.kv.list(&prefix).await?;
        for e in entries {
            let Some(v) = e
                .key
                .strip_prefix(&prefix)
                .and_then(|r| VolumeRef::parse(r).ok())
            else {
                continue;
            };
            let record = match MountRecord::decode(&e) {
                Ok(r) => r,
                Err(err) => {
                    warn!(volume = %v, error = %err, "ignoring a corrupt mount record");
                    continue;
                }
            };
            let vol = match &record.volume {
                Some(vol) => vol.clone(),
                None => match self.inner.kv.get(&self.inner.keys.volume(&v)).await? {
                    Some(ve) => ve.decode::<Volume>()?,
                    None => {
                        warn!(volume = %v, "a mount record names a volume that has no record (and is from before records kept it); leaving it for volcli check");
                        continue;
                    }
                },
            };
            let lock = if Self::is_locked(&vol) {
                // A placeholder under the old lease: re-establishing re-binds it.
                let placeholder = HeldLock {
                    key: self.inner.keys.lock(LockKind::Mount, &v),
                    token: 0,
                    holder: LockHolder {
                        volume: v.clone(),
                        kind: LockKind::Mount,
                        host: self.inner.cfg.host.clone(),
                        reason: LockReason::Mount,
                        since: std::time::SystemTime::now(),
                        lease: String::new(),
                        owner: self.inner.cfg.owner.clone(),
                        host_id: None,
                        instance: None,
                    },
                    epoch: record.epoch,
                };
                MountLock::Suspended(placeholder)
            } else {
                MountLock::Unlocked
            };
            self.set(
                &v,
                Some(MountView {
                    record,
                    lock,
                    volume: Arc::new(vol),
                }),
            );
        }
        self.reestablish_all(lease).await;
        Ok(())
    }
}

/// Compares the records with what the drivers say is mounted (retrying a failing
/// listing): records whose mount is gone are dropped and mounts nobody recorded are
/// unmounted (the host side of `check`, repairing); then new mounts are accepted.
async fn adopt(weak: std::sync::Weak<Inner>) {
    let mut pause = Duration::from_millis(100);
    let mounted = loop {
        let listed = {
            let Some(inner) = weak.upgrade() else { return };
            let me = HostMounts { inner };
            let r = check::listed(&me).await;
            if let Err(e) = &r {
                warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "cannot list this host's mounts; keeping every mount record and lock, refusing new mounts, retrying");
                me.inner
                    .adoption
                    .send_replace(Adoption::Pending(Some(format!(
                        "listing mounts failed: {e}"
                    ))));
            }
            r
        };
        match listed {
            Ok(m) => break m,
            Err(_) => {
                tokio::time::sleep(pause).await;
                pause = next_pause(pause);
            }
        }
    };
    let Some(inner) = weak.upgrade() else { return };
    let me = HostMounts { inner };
    let records: Vec<(VolumeRef, MountView)> = lock(&me.inner.mounted)
        .iter()
        .map(|(v, m)| (v.clone(), m.clone()))
        .collect();
    for (v, m) in records {
        if mounted.iter().any(|(_, mm)| mm.volume == v) {
            let rt = me.inner.catalog.runtime(&v);
            let limits = rt.as_ref().unwrap_or(&m.volume.runtime);
            me.apply_limits(&v, m.record.device.as_deref(), &limits.rate_limit);
        }
    }
    let report = me.check(true).await;
    for f in &report.findings {
        warn!(kind = %f.kind, volume = ?f.volume.as_ref().map(ToString::to_string), outcome = ?f.outcome, "{}", f.detail);
    }
    for u in &report.unchecked {
        warn!("start-up check incomplete: {u}");
    }
    me.inner.adoption.send_replace(Adoption::Done);
    info!(
        repaired = report.findings.len(),
        "mounts re-adopted; accepting new mounts"
    );
}

/// Re-publishes this host's check now and then, so `volcli check` shows what is true now.
async fn report_checks(weak: std::sync::Weak<Inner>) {
    const EVERY: Duration = Duration::from_secs(60);
    loop {
        tokio::time::sleep(EVERY).await;
        let Some(inner) = weak.upgrade() else { return };
        let me = HostMounts { inner };
        if me.adopted() {
            me.check(false).await;
        }
    }
}

async fn watch_lease(
    weak: std::sync::Weak<Inner>,
    mut states: watch::Receiver<LeaseState>,
    mut last: LeaseId,
) {
    while states.changed().await.is_ok() {
        let s = states.borrow_and_update().clone();
        let Some(inner) = weak.upgrade() else { return };
        let me = HostMounts { inner };
        match s {
            LeaseState::Lost { lease } => {
                error!(lease = %lease, "lease lost: locked volumes get no new users until their locks are re-taken");
                me.suspend_all();
            }
            LeaseState::Expiring { lease, .. } => warn!(lease = %lease, "lease renewals failing"),
            LeaseState::Live { lease } if lease != last => {
                info!(lease = %lease, "new lease: publishing the host record and re-establishing mount locks");
                me.suspend_all();
                let mut pause = Duration::from_millis(100);
                loop {
                    match hosts::register(
                        me.inner.kv.as_ref(),
                        &me.inner.keys,
                        &me.inner.identity,
                        &me.inner.cfg.version,
                        &lease,
                    )
                    .await
                    {
                        Ok(_) => break,
                        Err(HostError::Kv(e)) if e.is_retryable() => {
                            warn!(error = %e, "could not publish the host record; retrying");
                            tokio::time::sleep(pause).await;
                            pause = next_pause(pause);
                        }
                        Err(e) => {
                            error!(error = %e, "could not publish the host record");
                            break;
                        }
                    }
                }
                me.reestablish_all(&lease).await;
                last = lease;
            }
            LeaseState::Live { .. } => {}
        }
    }
}

async fn watch_runtime(
    weak: std::sync::Weak<Inner>,
    mut changes: broadcast::Receiver<CatalogChange>,
) {
    loop {
        let change = changes.recv().await;
        let Some(inner) = weak.upgrade() else { return };
        let me = HostMounts { inner };
        let vols: Vec<VolumeRef> = match change {
            Ok(CatalogChange::Runtime(v)) => vec![v],
            Ok(CatalogChange::Volume(_)) => continue,
            Ok(CatalogChange::Reloaded) | Err(broadcast::error::RecvError::Lagged(_)) => {
                lock(&me.inner.mounted).keys().cloned().collect()
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        for v in vols {
            if let Some(m) = me.mounted(&v) {
                let rt = me.runtime_of(&v, &m.volume);
                me.apply_limits(&v, m.record.device.as_deref(), &rt.rate_limit);
            }
        }
    }
}

/// Pays the store what unmounts and user changes owe it, with backoff, until done.
async fn pay_owed(weak: std::sync::Weak<Inner>, wake: Arc<Notify>) {
    let mut pause = Duration::from_millis(100);
    loop {
        let failed = {
            let Some(inner) = weak.upgrade() else { return };
            let me = HostMounts { inner };
            let owed: Vec<VolumeRef> = lock(&me.inner.owed).keys().cloned().collect();
            let mut failed = false;
            for v in owed {
                let guard = me.guard(&v);
                let _g = guard.lock().await;
                match me.settle_owed(&v).await {
                    Ok(()) => info!(volume = %v, "owed store cleanup done"),
                    Err(e) => {
                        debug!(volume = %v, error = %e, "owed store cleanup failed; retrying");
                        failed = true;
                    }
                }
            }
            failed
        };
        if failed {
            tokio::time::sleep(pause).await;
            pause = next_pause(pause);
        } else {
            pause = Duration::from_millis(100);
            // Wake on new work, and look again now and then in any case.
            let _ = tokio::time::timeout(Duration::from_secs(5), wake.notified()).await;
        }
    }
}

/// `p` with symbolic links resolved in the part of it that exists (the rest, not yet
/// created, appended as written).
fn resolve_existing(p: &Path) -> PathBuf {
    let mut rest = Vec::new();
    let mut cur = p;
    loop {
        if let Ok(real) = std::fs::canonicalize(cur) {
            return rest.iter().rev().fold(real, |acc: PathBuf, c| acc.join(c));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                cur = parent;
            }
            _ => return p.to_path_buf(),
        }
    }
}
