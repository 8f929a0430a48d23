//! The volume engine (DESIGN.md §7): policies with revisions, volumes, runtime options,
//! snapshots and copies, on a [`KvStore`] and a set of drivers, with no HTTP in sight —
//! other orchestrators drive it directly.
//!
//! Every operation takes the locks it needs and leaves no half state: a create whose
//! format fails destroys what it made; a copy that fails leaves no record; a remove
//! deletes storage before the record and reports storage errors. Create, remove, copy
//! and snapshot of one volume exclude each other through its `op` lock (and `mount` lock
//! for create, remove and copy targets).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::clock::{Clock, SystemClock};
use crate::driver::{DriverError, NullDriver, SnapshotDriver, VolumeDriver, VolumeSpec};
use crate::global::GlobalConfig;
use crate::keys::{Keys, LockKind};
use crate::kv::{Entry, KvError, KvStore, LeaseId, Precondition, Revision, TxnOp};
use crate::lease::LeaseState;
use crate::lock::{HeldLock, LockError, LockHolder, LockReason, LockRequest, Locker};
use crate::name::{HostName, PolicyName, SnapshotName, VolumeName, VolumeRef};
use crate::policy::{BackendKind, Policy, PolicyError, RuntimeOptions};
use crate::volume::Volume;

mod maintenance;
mod policies;
mod snapshots;
mod volumes;

pub use policies::store_policy;
pub use snapshots::{SnapshotPlan, SnapshotReport};

/// Engine errors, by meaning; daemons map them to HTTP statuses and exit codes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// No such policy.
    #[error("policy {policy} does not exist")]
    PolicyNotFound {
        /// The policy.
        policy: PolicyName,
    },
    /// No such policy revision.
    #[error("policy {policy} has no revision {revision}")]
    RevisionNotFound {
        /// The policy.
        policy: PolicyName,
        /// The revision asked for.
        revision: Revision,
    },
    /// No such volume.
    #[error("volume {volume} does not exist")]
    VolumeNotFound {
        /// The volume.
        volume: VolumeRef,
    },
    /// The volume exists already.
    #[error("volume {volume} already exists")]
    VolumeExists {
        /// The volume.
        volume: VolumeRef,
    },
    /// A lock the operation needs is held by someone else.
    #[error(transparent)]
    Locked(Box<LockError>),
    /// The policy still has volumes.
    #[error("policy {policy} still has {count} volume(s); remove them first or delete with --force (volumes keep their own copy of the policy)")]
    PolicyInUse {
        /// The policy.
        policy: PolicyName,
        /// How many volumes.
        count: usize,
    },
    /// The input is invalid.
    #[error(transparent)]
    Invalid(#[from] PolicyError),
    /// The request is wrong in another way.
    #[error("{0}")]
    BadRequest(String),
    /// The volume's backend is not served by this daemon.
    #[error("backend {backend} is not served here{hint}; served backends: {served}")]
    BackendNotServed {
        /// The backend asked for.
        backend: BackendKind,
        /// What is served (comma-separated, or `none`).
        served: String,
        /// How to serve it, if there is a way.
        hint: &'static str,
    },
    /// Something changed under the operation (a concurrent writer); look again and retry.
    #[error("{what} was changed while being {doing}; look at it again and retry")]
    ChangedMeanwhile {
        /// What changed (e.g. `policy p`).
        what: String,
        /// What the operation was doing.
        doing: &'static str,
    },
    /// The operation's locks were lost midway (its lease expired); nothing was kept.
    #[error(
        "lost the locks on {volume} while {doing} it (lease expired?); nothing was kept, retry"
    )]
    LockLost {
        /// The volume.
        volume: VolumeRef,
        /// What the operation was doing.
        doing: &'static str,
    },
    /// The store did not say whether a write applied; what it concerns was kept.
    #[error("the store did not answer whether volume {volume} was recorded ({cause}); its storage was kept — run volcli check to reconcile")]
    OutcomeUnknown {
        /// The volume.
        volume: VolumeRef,
        /// The last store error.
        cause: String,
    },
    /// Storage exists for a volume that has no record (a crashed create or copy).
    #[error("storage for {volume} already exists but no volume record does; if a crashed create or copy left it, `volcli check --repair` destroys it")]
    LeftoverStorage {
        /// The volume.
        volume: VolumeRef,
    },
    /// No such maintenance session (ended, or its lease expired).
    #[error("maintenance session {session} {why}")]
    SessionGone {
        /// The session.
        session: LeaseId,
        /// `does not exist (…)` or `has expired; …`.
        why: &'static str,
    },
    /// The volume's backend has no snapshots.
    #[error("volume {volume} cannot be snapshotted: backend {backend} has no snapshot support")]
    NoSnapshots {
        /// The volume.
        volume: VolumeRef,
        /// Its backend.
        backend: String,
    },
    /// The volume's runtime does not allow on-demand snapshots from the supervisor.
    #[error("volume {volume}'s runtime does not allow signalled snapshots; set \"signal\": true in its runtime (volcli volume runtime upload) or take one directly with volcli volume snapshot take")]
    SignalNotAllowed {
        /// The volume.
        volume: VolumeRef,
    },
    /// The storage driver failed.
    #[error("{op} {volume}: {source}")]
    Driver {
        /// The operation.
        op: &'static str,
        /// The volume.
        volume: VolumeRef,
        /// The driver's error.
        #[source]
        source: Box<DriverError>,
    },
    /// This daemon's lease is lost; it cannot take locks until it has a new one.
    #[error("this daemon has no live lease right now (the store was unreachable); retry shortly")]
    NoLease,
    /// A condition the caller attached to the operation no longer holds (the supervisor's
    /// leader key: it was deposed); nothing was done, or what was done is not recorded.
    #[error("{key} changed: the caller's fence no longer holds (a deposed supervisor?); nothing was recorded")]
    Fenced {
        /// The key whose check failed.
        key: String,
    },
    /// The store failed.
    #[error(transparent)]
    Kv(KvError),
}

impl EngineError {
    /// The driver's error, when the driver failed.
    pub fn driver_error(&self) -> Option<&DriverError> {
        match self {
            Self::Driver { source, .. } => Some(source),
            _ => None,
        }
    }

    fn is_driver_not_found(&self) -> bool {
        matches!(self.driver_error(), Some(DriverError::NotFound { .. }))
    }
}

impl From<KvError> for EngineError {
    fn from(e: KvError) -> Self {
        Self::Kv(e)
    }
}

impl From<LockError> for EngineError {
    fn from(e: LockError) -> Self {
        match e {
            LockError::Kv(k) => Self::Kv(k),
            LockError::LeaseLost { .. } => Self::NoLease,
            other => Self::Locked(Box::new(other)),
        }
    }
}

/// The drivers an engine may use, by backend.
#[derive(Clone, Debug, Default)]
pub struct Drivers {
    map: BTreeMap<BackendKind, Arc<dyn VolumeDriver>>,
}

impl Drivers {
    /// No drivers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a driver for its backend.
    pub fn with(mut self, d: Arc<dyn VolumeDriver>) -> Self {
        self.map.insert(d.backend(), d);
        self
    }

    /// Adds the null driver (no storage work).
    pub fn with_null(self) -> Self {
        self.with(Arc::new(NullDriver::new()))
    }

    /// The driver for a backend.
    pub fn get(&self, b: BackendKind) -> Option<&Arc<dyn VolumeDriver>> {
        self.map.get(&b)
    }

    /// The backends served.
    pub fn backends(&self) -> Vec<BackendKind> {
        self.map.keys().copied().collect()
    }

    /// Runs every driver's start-up repair ([`VolumeDriver::recover`]); failures are
    /// logged, not fatal.
    pub async fn recover(&self) {
        for (b, d) in &self.map {
            if let Err(e) = d.recover().await {
                warn!(backend = %b, error = %e, "driver start-up repair failed");
            }
        }
    }
}

/// A volume record with its live runtime options.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VolumeInfo {
    /// The record.
    #[serde(flatten)]
    pub volume: Volume,
    /// The runtime options in force (`runtime/<p>/<v>`).
    pub runtime_options: RuntimeOptions,
}

/// What became of a publish whose answer was an error.
enum Settled {
    /// It applied: the record is there.
    Committed,
    /// It did not apply (and cannot any more); the error to report.
    NotCommitted(KvError),
    /// The store never said; storage is kept.
    Unknown(EngineError),
}

/// A policy revision.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PolicyRevision {
    /// The store revision of the upload.
    pub revision: Revision,
    /// The policy as uploaded (expanded).
    pub policy: Policy,
}

/// The volume engine.
#[derive(Clone, Debug)]
pub struct Volumes {
    instance: String,
    kv: Arc<dyn KvStore>,
    keys: Keys,
    drivers: Drivers,
    locker: Locker,
    lease: watch::Receiver<LeaseState>,
    global: watch::Receiver<GlobalConfig>,
    clock: Arc<dyn Clock>,
}

fn decode<T: serde::de::DeserializeOwned>(e: &Entry) -> Result<T, EngineError> {
    Ok(e.decode()?)
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Plain data structures always encode.
    serde_json::to_vec(v).unwrap_or_default()
}

impl Volumes {
    /// An engine acting as `host`, taking locks with the lease `lease` publishes, using
    /// the operation timeout of `global`.
    pub fn new(
        kv: Arc<dyn KvStore>,
        keys: Keys,
        drivers: Drivers,
        host: HostName,
        lease: watch::Receiver<LeaseState>,
        global: watch::Receiver<GlobalConfig>,
    ) -> Self {
        let locker = Locker::new(kv.clone(), keys.clone(), host);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Self {
            instance: format!("engine-{}-{nanos:x}", std::process::id()),
            kv,
            keys,
            drivers,
            locker,
            lease,
            global,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same engine with another wall clock for its timestamps (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Now, to the millisecond (records store milliseconds, so what is returned equals
    /// what is read back).
    pub(crate) fn now_millis(&self) -> SystemTime {
        let ms = crate::schedule::unix_millis(self.clock.now());
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    /// The lock handle (for `use` commands).
    pub fn locker(&self) -> &Locker {
        &self.locker
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The drivers.
    pub fn drivers(&self) -> &Drivers {
        &self.drivers
    }

    /// The store.
    pub fn kv(&self) -> &Arc<dyn KvStore> {
        &self.kv
    }

    /// A locker for one operation: its locks are never shared with another operation,
    /// even one of this daemon.
    pub(crate) fn op(&self) -> Locker {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.locker.with_owner(format!("{}-{n}", self.instance))
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.global.borrow().timeout
    }

    pub(crate) fn lease(&self) -> Result<LeaseId, EngineError> {
        self.lease
            .borrow()
            .lockable()
            .cloned()
            .ok_or(EngineError::NoLease)
    }

    pub(crate) fn driver(&self, b: BackendKind) -> Result<&Arc<dyn VolumeDriver>, EngineError> {
        self.drivers.get(b).ok_or_else(|| {
            let served: Vec<_> = self.drivers.backends().iter().map(|b| b.as_str()).collect();
            let hint = if b == BackendKind::Null {
                " (the null backend is accepted only when the daemon runs with --allow-null-backend)"
            } else {
                ""
            };
            EngineError::BackendNotServed {
                backend: b,
                served: if served.is_empty() {
                    "none".to_owned()
                } else {
                    served.join(", ")
                },
                hint,
            }
        })
    }

    pub(crate) async fn with_timeout<T>(
        &self,
        op: &'static str,
        volume: &VolumeRef,
        fut: impl std::future::Future<Output = Result<T, DriverError>>,
    ) -> Result<T, EngineError> {
        let timeout = self.timeout();
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(EngineError::Driver {
                op,
                volume: volume.clone(),
                source: Box::new(source),
            }),
            Err(_) => Err(EngineError::Driver {
                op,
                volume: volume.clone(),
                source: Box::new(DriverError::Timeout {
                    op,
                    what: volume.to_string(),
                    timeout,
                }),
            }),
        }
    }

    // ----- volumes --------------------------------------------------------------------

    pub(crate) fn both(&self, v: &VolumeRef, reason: LockReason) -> Vec<LockRequest> {
        vec![
            LockRequest::new(LockKind::Mount, v.clone(), reason),
            LockRequest::new(LockKind::Op, v.clone(), reason),
        ]
    }

    fn map_lock(&self, v: &VolumeRef, e: LockError) -> EngineError {
        match e {
            LockError::CheckFailed { key } if key == self.keys.volume(v) => {
                EngineError::VolumeExists { volume: v.clone() }
            }
            LockError::CheckFailed { key } if key == self.keys.policy(&v.policy) => {
                EngineError::PolicyNotFound {
                    policy: v.policy.clone(),
                }
            }
            other => other.into(),
        }
    }

    /// Releases the locks of an operation that made no record (a failed create or copy,
    /// a repair), with the epoch key their mount lock wrote: a volume without a record
    /// keeps no epoch (nobody can have it mounted).
    pub(crate) async fn release_unrecorded(&self, vref: &VolumeRef, held: &[HeldLock]) {
        let mut ops: Vec<TxnOp> = held
            .iter()
            .map(|h| TxnOp::Delete {
                key: h.key.clone(),
                pre: Precondition::CreateRevision(h.token),
            })
            .collect();
        ops.push(TxnOp::Delete {
            key: self.keys.epoch(vref),
            pre: Precondition::Any,
        });
        ops.push(TxnOp::Check {
            key: self.keys.volume(vref),
            pre: Precondition::Absent,
        });
        if let Err(e) = self.kv.txn(ops).await {
            debug!(error = %e, "releasing with the epoch failed; releasing the locks alone");
            self.release_quietly(held).await;
        }
    }

    pub(crate) async fn release_quietly(&self, held: &[HeldLock]) {
        // Releasing compares fencing tokens, so any locker of this host can do it.
        if let Err(e) = self.locker.release(held).await {
            // This daemon's lease lives on, so the locks would never expire: retry in the
            // background (bounded; each try releases only these tenures).
            warn!(error = %e, "could not release locks; retrying in the background");
            let (locker, held) = (self.locker.clone(), held.to_vec());
            tokio::spawn(async move {
                let mut pause = Duration::from_millis(100);
                for _ in 0..40 {
                    tokio::time::sleep(pause).await;
                    match locker.release(&held).await {
                        Ok(()) | Err(LockError::NotHeld { .. }) => return,
                        Err(_) => pause = (pause * 2).min(Duration::from_secs(5)),
                    }
                }
                warn!(
                    locks = held.len(),
                    "gave up releasing locks; they end with this daemon's lease"
                );
            });
        }
    }
}

pub use crate::schedule::snapshot_name;
