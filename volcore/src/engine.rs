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
use tracing::{debug, info, instrument, warn};

use crate::driver::{DriverError, NullDriver, SnapshotDriver, VolumeDriver, VolumeSpec};
use crate::global::GlobalConfig;
use crate::keys::{Keys, LockKind};
use crate::kv::{Entry, KvError, KvStore, LeaseId, Precondition, Revision, TxnOp};
use crate::lease::LeaseState;
use crate::lock::{HeldLock, LockError, LockHolder, LockReason, LockRequest, Locker};
use crate::name::{HostName, PolicyName, SnapshotName, VolumeName, VolumeRef};
use crate::policy::{BackendKind, Policy, PolicyError, RuntimeOptions};
use crate::volume::Volume;

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
}

fn decode<T: serde::de::DeserializeOwned>(e: &Entry) -> Result<T, EngineError> {
    serde_json::from_slice(&e.value).map_err(|err| {
        EngineError::Kv(KvError::Corrupt {
            key: e.key.clone(),
            reason: err.to_string(),
        })
    })
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
        }
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

    // ----- policies -------------------------------------------------------------------

    /// Validates and stores a policy; records it as a new revision. Existing volumes are
    /// untouched (each has its own copy).
    #[instrument(skip(self, json), fields(policy = %name))]
    pub async fn upload_policy(
        &self,
        name: &PolicyName,
        json: &[u8],
    ) -> Result<PolicyRevision, EngineError> {
        let r = store_policy(self.kv.as_ref(), &self.keys, name, json).await?;
        info!(revision = r.revision, "policy uploaded");
        Ok(r)
    }

    /// The current policy.
    pub async fn policy(&self, name: &PolicyName) -> Result<Policy, EngineError> {
        let e = self.kv.get(&self.keys.policy(name)).await?.ok_or_else(|| {
            EngineError::PolicyNotFound {
                policy: name.clone(),
            }
        })?;
        Policy::from_stored_json(&e.value).map_err(EngineError::Invalid)
    }

    /// Every current policy, by name.
    pub async fn policies(&self) -> Result<Vec<Policy>, EngineError> {
        let entries = self.kv.list(&self.keys.policies()).await?;
        entries
            .iter()
            .map(|e| Policy::from_stored_json(&e.value).map_err(EngineError::Invalid))
            .collect()
    }

    /// Deletes a policy. Refused while it has volumes unless `force`; volumes keep their
    /// own copy either way, and revisions are kept.
    #[instrument(skip(self), fields(policy = %name))]
    pub async fn delete_policy(&self, name: &PolicyName, force: bool) -> Result<(), EngineError> {
        let key = self.keys.policy(name);
        let e = self
            .kv
            .get(&key)
            .await?
            .ok_or_else(|| EngineError::PolicyNotFound {
                policy: name.clone(),
            })?;
        let count = self.kv.list(&self.keys.volumes(Some(name))).await?.len();
        if count > 0 && !force {
            return Err(EngineError::PolicyInUse {
                policy: name.clone(),
                count,
            });
        }
        match self
            .kv
            .delete(&key, Precondition::Revision(e.mod_rev))
            .await
        {
            Ok(_) => Ok(()),
            Err(KvError::Conflict { current: None, .. }) => Err(EngineError::PolicyNotFound {
                policy: name.clone(),
            }),
            Err(KvError::Conflict { .. }) => Err(EngineError::ChangedMeanwhile {
                what: format!("policy {name}"),
                doing: "deleted",
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// A policy's revisions, oldest first.
    pub async fn policy_revisions(&self, name: &PolicyName) -> Result<Vec<Revision>, EngineError> {
        let entries = self.kv.list(&self.keys.policy_revisions(name)).await?;
        if entries.is_empty() && self.kv.get(&self.keys.policy(name)).await?.is_none() {
            return Err(EngineError::PolicyNotFound {
                policy: name.clone(),
            });
        }
        Ok(entries
            .iter()
            .filter_map(|e| e.key.rsplit('/').next().and_then(|r| r.parse().ok()))
            .collect())
    }

    /// One revision of a policy.
    pub async fn policy_revision(
        &self,
        name: &PolicyName,
        revision: Revision,
    ) -> Result<PolicyRevision, EngineError> {
        let e = self
            .kv
            .get(&self.keys.policy_revision(name, revision))
            .await?
            .ok_or_else(|| EngineError::RevisionNotFound {
                policy: name.clone(),
                revision,
            })?;
        Ok(PolicyRevision {
            revision,
            policy: Policy::from_stored_json(&e.value)?,
        })
    }

    // ----- global ---------------------------------------------------------------------

    /// The stored global configuration (defaults when none is stored).
    pub async fn global(&self) -> Result<GlobalConfig, EngineError> {
        match self.kv.get(&self.keys.global()).await? {
            None => Ok(GlobalConfig::default()),
            Some(e) => Ok(GlobalConfig::from_json(&e.value)?),
        }
    }

    /// Validates and stores the global configuration.
    pub async fn set_global(&self, json: &[u8]) -> Result<GlobalConfig, EngineError> {
        let g = GlobalConfig::from_json(json)?;
        self.kv
            .put(&self.keys.global(), g.to_json(), Default::default())
            .await?;
        Ok(g)
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

    /// Creates a volume from its policy and `options`: reserves the name, takes the locks
    /// and reads the policy in one transaction, creates and formats the storage, then
    /// publishes the record and runtime and releases the locks in one transaction — two
    /// round trips to the store in all.
    #[instrument(skip(self, options), fields(volume = %vref))]
    pub async fn create(
        &self,
        vref: &VolumeRef,
        options: &BTreeMap<String, String>,
    ) -> Result<VolumeInfo, EngineError> {
        let lease = self.lease()?;
        let vkey = self.keys.volume(vref);
        let checks = [
            TxnOp::Check {
                key: vkey.clone(),
                pre: Precondition::Absent,
            },
            TxnOp::Read {
                key: self.keys.policy(&vref.policy),
                pre: Precondition::Present,
            },
        ];
        let (held, reads) = self
            .op()
            .acquire_reading(
                &self.both(vref, LockReason::Create),
                &lease,
                self.timeout(),
                &checks,
            )
            .await
            .map_err(|e| self.map_lock(vref, e))?;
        crate::crash::point("create.after-lock");
        // The policy was read under the locks; a bad option or policy now releases them.
        let (volume, crud) = match self.prepare_create(vref, options, reads) {
            Ok(v) => v,
            Err(e) => {
                self.release_unrecorded(vref, &held).await;
                return Err(e);
            }
        };
        let spec = VolumeSpec::of(&volume, self.timeout());
        if let Some(d) = &crud {
            if let Err(e) = self.with_timeout("create", vref, d.create(&spec)).await {
                self.release_unrecorded(vref, &held).await;
                return Err(
                    if matches!(e.driver_error(), Some(DriverError::AlreadyExists { .. })) {
                        EngineError::LeftoverStorage {
                            volume: vref.clone(),
                        }
                    } else {
                        e
                    },
                );
            }
            crate::crash::point("create.after-storage");
            if let Err(e) = self.with_timeout("format", vref, d.format(&spec)).await {
                self.destroy_quietly(d.as_ref(), &spec).await;
                self.release_unrecorded(vref, &held).await;
                return Err(e);
            }
            crate::crash::point("create.after-format");
        }
        let mut ops: Vec<TxnOp> = held.iter().map(HeldLock::fence).collect();
        ops.push(TxnOp::Put {
            key: vkey,
            value: encode(&volume),
            pre: Precondition::Absent,
            lease: None,
        });
        ops.push(TxnOp::Put {
            key: self.keys.runtime(vref),
            value: encode(&volume.runtime),
            pre: Precondition::Any,
            lease: None,
        });
        ops.extend(held.iter().map(|h| TxnOp::Delete {
            key: h.key.clone(),
            pre: Precondition::Any,
        }));
        if let Err(e) = self.kv.txn(ops).await {
            match self.settle_publish(vref, &volume, &held, e).await {
                Settled::Committed => {}
                Settled::NotCommitted(e) => {
                    // Lost our locks (or the store) after making storage: undo it.
                    if let Some(d) = &crud {
                        self.destroy_quietly(d.as_ref(), &spec).await;
                    }
                    return Err(match e {
                        KvError::Conflict { .. } => EngineError::LockLost {
                            volume: vref.clone(),
                            doing: "creating",
                        },
                        e => e.into(),
                    });
                }
                Settled::Unknown(e) => return Err(e),
            }
        }
        info!("volume created");
        let runtime_options = volume.runtime.clone();
        Ok(VolumeInfo {
            volume,
            runtime_options,
        })
    }

    /// The record a create will publish, from the policy entry its lock txn read.
    fn prepare_create(
        &self,
        vref: &VolumeRef,
        options: &BTreeMap<String, String>,
        reads: Vec<Option<Entry>>,
    ) -> Result<(Volume, Option<Arc<dyn VolumeDriver>>), EngineError> {
        let policy_entry =
            reads
                .into_iter()
                .next()
                .flatten()
                .ok_or_else(|| EngineError::PolicyNotFound {
                    policy: vref.policy.clone(),
                })?;
        let policy = Policy::from_stored_json(&policy_entry.value)?;
        let mut volume = Volume::from_policy(&policy, vref.volume.clone(), options, now_millis())?;
        volume.policy_revision = Some(policy_entry.mod_rev);
        let crud = volume
            .backends
            .crud
            .map(|b| self.driver(b))
            .transpose()?
            .cloned();
        self.driver(volume.backends.mount)?;
        Ok((volume, crud))
    }

    async fn destroy_quietly(&self, d: &dyn VolumeDriver, spec: &VolumeSpec) {
        match self
            .with_timeout("destroy", &spec.volume, d.destroy(spec))
            .await
        {
            Ok(()) => info!(volume = %spec.volume, "storage made by a failed operation destroyed"),
            // The driver cleaned up after itself (Ceph removes the image of a failed mkfs).
            Err(e) if matches!(e.driver_error(), Some(DriverError::NotFound { .. })) => {
                debug!(volume = %spec.volume, "storage of the failed operation already gone")
            }
            Err(e) => {
                warn!(volume = %spec.volume, error = %e, "could not destroy storage made by a failed operation")
            }
        }
    }

    /// Decides what became of a publish (record + runtime + unlock) that failed with `err`.
    /// A conflict means our locks were gone, so the fenced publish cannot have applied. An
    /// unknown outcome (timeout, lost connection) is settled by releasing the locks with
    /// their fencing tokens and reading the record in one transaction: once the locks are
    /// gone a late publish can no longer apply, and the read says whether it did. Storage
    /// is destroyed only when the record is known not to exist.
    async fn settle_publish(
        &self,
        vref: &VolumeRef,
        volume: &Volume,
        held: &[HeldLock],
        err: KvError,
    ) -> Settled {
        if !err.is_retryable() {
            self.release_unrecorded(vref, held).await;
            return Settled::NotCommitted(err);
        }
        warn!(error = %err, "publish outcome unknown; settling it before touching the storage");
        let vkey = self.keys.volume(vref);
        let mut ops = vec![TxnOp::Read {
            key: vkey.clone(),
            pre: Precondition::Any,
        }];
        ops.extend(held.iter().map(|h| TxnOp::Delete {
            key: h.key.clone(),
            pre: Precondition::CreateRevision(h.token),
        }));
        // Applies only with the locks, i.e. when the publish did not: then no record.
        ops.push(TxnOp::Delete {
            key: self.keys.epoch(vref),
            pre: Precondition::Any,
        });
        let deadline = tokio::time::Instant::now() + self.timeout();
        let mut pause = Duration::from_millis(50);
        loop {
            let res = match self.kv.txn(ops.clone()).await {
                // Our locks were still there (now released): the publish never applied.
                Ok(_) => return Settled::NotCommitted(err),
                // The locks are gone: the publish took them, or the lease ran out.
                Err(KvError::Conflict { .. }) => self.kv.get(&vkey).await,
                Err(e) => Err(e),
            };
            match res {
                Ok(Some(e)) if decode::<Volume>(&e).ok().as_ref() == Some(volume) => {
                    info!("the publish had committed");
                    return Settled::Committed;
                }
                Ok(_) => return Settled::NotCommitted(err),
                Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                    debug!(error = %e, "store still unreachable; settling the publish again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    return Settled::Unknown(EngineError::OutcomeUnknown {
                        volume: vref.clone(),
                        cause: e.to_string(),
                    })
                }
            }
        }
    }

    async fn record(&self, vref: &VolumeRef) -> Result<(Volume, Entry), EngineError> {
        let e = self.kv.get(&self.keys.volume(vref)).await?.ok_or_else(|| {
            EngineError::VolumeNotFound {
                volume: vref.clone(),
            }
        })?;
        Ok((decode(&e)?, e))
    }

    /// A volume and its live runtime options.
    pub async fn get(&self, vref: &VolumeRef) -> Result<VolumeInfo, EngineError> {
        // Both reads at once: one round trip of latency.
        let rkey = self.keys.runtime(vref);
        let (record, runtime) = futures::join!(self.record(vref), self.kv.get(&rkey));
        let (volume, _) = record?;
        let runtime_options = match runtime? {
            Some(e) => decode(&e)?,
            None => volume.runtime.clone(),
        };
        Ok(VolumeInfo {
            volume,
            runtime_options,
        })
    }

    /// Every volume, or every volume of one policy, sorted by policy then name.
    pub async fn list(&self, policy: Option<&PolicyName>) -> Result<Vec<Volume>, EngineError> {
        let entries = self.kv.list(&self.keys.volumes(policy)).await?;
        entries.iter().map(decode).collect()
    }

    /// Removes a volume: waits up to `timeout` (default: the global timeout) for its
    /// locks, destroys the storage, then deletes the record. With `force`, storage and
    /// record are removed even while the volume is locked (its locks are cleared too).
    #[instrument(skip(self), fields(volume = %vref))]
    pub async fn remove(
        &self,
        vref: &VolumeRef,
        force: bool,
        timeout: Option<Duration>,
    ) -> Result<(), EngineError> {
        if force {
            return self.remove_forced(vref).await;
        }
        let lease = self.lease()?;
        let wait = timeout.unwrap_or_else(|| self.timeout());
        // The record is read in the transaction that takes the locks: one round trip to
        // lock and read, one to delete. Gone (now or while we waited): not found.
        let checks = [TxnOp::Read {
            key: self.keys.volume(vref),
            pre: Precondition::Present,
        }];
        let (held, reads) = match self
            .op()
            .acquire_reading(&self.both(vref, LockReason::Remove), &lease, wait, &checks)
            .await
        {
            Ok(r) => r,
            Err(LockError::CheckFailed { .. }) => {
                return Err(EngineError::VolumeNotFound {
                    volume: vref.clone(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let result = match reads.into_iter().next().flatten() {
            Some(entry) => match decode::<Volume>(&entry) {
                Ok(volume) => self.remove_locked(vref, &volume, &entry, &held).await,
                Err(e) => Err(e),
            },
            None => Err(EngineError::VolumeNotFound {
                volume: vref.clone(),
            }),
        };
        if result.is_err() {
            self.release_quietly(&held).await;
        }
        result
    }

    async fn remove_locked(
        &self,
        vref: &VolumeRef,
        volume: &Volume,
        entry: &Entry,
        held: &[HeldLock],
    ) -> Result<(), EngineError> {
        crate::crash::point("remove.after-lock");
        if let Some(b) = volume.backends.crud {
            let d = self.driver(b)?.clone();
            let spec = VolumeSpec::of(volume, self.timeout());
            match self.with_timeout("destroy", vref, d.destroy(&spec)).await {
                Ok(()) => {}
                Err(e) if e.is_driver_not_found() => {
                    warn!("storage was already gone; removing the record")
                }
                Err(e) => return Err(e),
            }
            crate::crash::point("remove.after-destroy");
        }
        let mut ops: Vec<TxnOp> = held.iter().map(HeldLock::fence).collect();
        ops.push(TxnOp::Delete {
            key: entry.key.clone(),
            pre: Precondition::Revision(entry.mod_rev),
        });
        ops.push(TxnOp::Delete {
            key: self.keys.runtime(vref),
            pre: Precondition::Any,
        });
        ops.push(TxnOp::Delete {
            key: self.keys.epoch(vref),
            pre: Precondition::Any,
        });
        ops.extend(held.iter().map(|h| TxnOp::Delete {
            key: h.key.clone(),
            pre: Precondition::Any,
        }));
        // The storage is gone now: keep trying to drop the record (an unanswered attempt
        // may have applied; then the next one meets no locks and no record).
        let deadline = tokio::time::Instant::now() + self.timeout();
        let mut pause = Duration::from_millis(50);
        let mut retried = false;
        loop {
            match self.kv.txn(ops.clone()).await {
                Ok(_) => break,
                Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                    debug!(error = %e, "deleting the record of a destroyed volume; retrying");
                    retried = true;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(KvError::Conflict { .. })
                    if retried && matches!(self.kv.get(&entry.key).await, Ok(None)) =>
                {
                    break
                }
                Err(e) => {
                    warn!(error = %e, "the storage was destroyed but the record could not be deleted; volcli check --repair drops it");
                    return Err(e.into());
                }
            }
        }
        info!("volume removed");
        Ok(())
    }

    async fn remove_forced(&self, vref: &VolumeRef) -> Result<(), EngineError> {
        let (volume, entry) = self.record(vref).await?;
        if let Some(b) = volume.backends.crud {
            let d = self.driver(b)?.clone();
            let spec = VolumeSpec::of(&volume, self.timeout());
            match self.with_timeout("destroy", vref, d.destroy(&spec)).await {
                Ok(()) => {}
                Err(e) if e.is_driver_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let ops = vec![
            TxnOp::Delete {
                key: entry.key.clone(),
                pre: Precondition::Any,
            },
            TxnOp::Delete {
                key: self.keys.runtime(vref),
                pre: Precondition::Any,
            },
            TxnOp::Delete {
                key: self.keys.lock(LockKind::Mount, vref),
                pre: Precondition::Any,
            },
            TxnOp::Delete {
                key: self.keys.lock(LockKind::Op, vref),
                pre: Precondition::Any,
            },
            TxnOp::Delete {
                key: self.keys.epoch(vref),
                pre: Precondition::Any,
            },
        ];
        self.kv.txn(ops).await?;
        warn!("volume force-removed (storage, record and locks)");
        Ok(())
    }

    /// Deletes only the record (and runtime) of a volume; storage and locks are left.
    #[instrument(skip(self), fields(volume = %vref))]
    pub async fn force_remove_record(&self, vref: &VolumeRef) -> Result<(), EngineError> {
        let ops = vec![
            TxnOp::Delete {
                key: self.keys.volume(vref),
                pre: Precondition::Any,
            },
            TxnOp::Delete {
                key: self.keys.runtime(vref),
                pre: Precondition::Any,
            },
        ];
        self.record(vref).await?;
        self.kv.txn(ops).await?;
        warn!("volume record force-removed; storage kept");
        Ok(())
    }

    /// The runtime options in force.
    pub async fn runtime(&self, vref: &VolumeRef) -> Result<RuntimeOptions, EngineError> {
        Ok(self.get(vref).await?.runtime_options)
    }

    /// Validates and replaces a volume's runtime options (whole-object replace); plugins
    /// watching `runtime/` apply them.
    #[instrument(skip(self, json), fields(volume = %vref))]
    pub async fn set_runtime(
        &self,
        vref: &VolumeRef,
        json: &[u8],
    ) -> Result<RuntimeOptions, EngineError> {
        let r = RuntimeOptions::from_json(json)?;
        let (_, entry) = self.record(vref).await?;
        let ops = vec![
            TxnOp::Check {
                key: entry.key.clone(),
                pre: Precondition::Revision(entry.mod_rev),
            },
            TxnOp::Put {
                key: self.keys.runtime(vref),
                value: encode(&r),
                pre: Precondition::Any,
                lease: None,
            },
        ];
        match self.kv.txn(ops).await {
            Ok(_) => Ok(r),
            Err(KvError::Conflict { .. }) => Err(EngineError::VolumeNotFound {
                volume: vref.clone(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    fn snapshot_driver<'a>(
        &self,
        volume: &Volume,
        d: &'a Arc<dyn VolumeDriver>,
    ) -> Result<&'a dyn SnapshotDriver, EngineError> {
        let no = || EngineError::NoSnapshots {
            volume: volume.reference(),
            backend: volume.backends.mount.to_string(),
        };
        if volume.backends.snapshot.is_none() {
            return Err(no());
        }
        d.snapshots().ok_or_else(no)
    }

    /// Takes a snapshot now (under the volume's `op` lock); returns its name.
    #[instrument(skip(self), fields(volume = %vref))]
    pub async fn snapshot(&self, vref: &VolumeRef) -> Result<SnapshotName, EngineError> {
        let (volume, _) = self.record(vref).await?;
        let d = self
            .driver(volume.backends.snapshot.unwrap_or(volume.backends.mount))?
            .clone();
        let sd = self.snapshot_driver(&volume, &d)?;
        let lease = self.lease()?;
        let held = self
            .op()
            .acquire(
                &[LockRequest::new(
                    LockKind::Op,
                    vref.clone(),
                    LockReason::Snapshot,
                )],
                &lease,
                self.timeout(),
            )
            .await?;
        crate::crash::point("snapshot.after-lock");
        let name = snapshot_name(SystemTime::now());
        let spec = VolumeSpec::of(&volume, self.timeout());
        let res = self
            .with_timeout("snapshot", vref, sd.create_snapshot(&spec, &name))
            .await;
        crate::crash::point("snapshot.after-snapshot");
        self.release_quietly(&held).await;
        res?;
        info!(snapshot = %name, "snapshot taken");
        Ok(name)
    }

    /// A volume's snapshots, oldest first.
    pub async fn snapshots(&self, vref: &VolumeRef) -> Result<Vec<SnapshotName>, EngineError> {
        let (volume, _) = self.record(vref).await?;
        let d = self
            .driver(volume.backends.snapshot.unwrap_or(volume.backends.mount))?
            .clone();
        let sd = self.snapshot_driver(&volume, &d)?;
        let spec = VolumeSpec::of(&volume, self.timeout());
        self.with_timeout("list snapshots", vref, sd.list_snapshots(&spec))
            .await
    }

    /// Makes volume `target` (same policy) from snapshot `snap` of `source`. The source's
    /// `op` lock and the target's locks are held; the source may stay mounted. A failed
    /// copy leaves no record behind.
    #[instrument(skip(self), fields(volume = %source))]
    pub async fn copy(
        &self,
        source: &VolumeRef,
        snap: &SnapshotName,
        target: &VolumeName,
    ) -> Result<VolumeInfo, EngineError> {
        if &source.volume == target {
            return Err(EngineError::BadRequest(format!(
                "cannot copy volume {source} onto itself"
            )));
        }
        let tref = VolumeRef::new(source.policy.clone(), target.clone());
        let (src, _) = self.record(source).await?;
        let d = self
            .driver(src.backends.snapshot.unwrap_or(src.backends.mount))?
            .clone();
        let sd = self.snapshot_driver(&src, &d)?;
        let lease = self.lease()?;
        let mut reqs = self.both(&tref, LockReason::Copy);
        reqs.push(LockRequest::new(
            LockKind::Op,
            source.clone(),
            LockReason::Copy,
        ));
        let tkey = self.keys.volume(&tref);
        let held = self
            .op()
            .acquire_checked(
                &reqs,
                &lease,
                self.timeout(),
                &[TxnOp::Check {
                    key: tkey.clone(),
                    pre: Precondition::Absent,
                }],
            )
            .await
            .map_err(|e| self.map_lock(&tref, e))?;
        crate::crash::point("copy.after-lock");
        let mut volume = src.clone();
        volume.name = target.clone();
        volume.created_at = now_millis();
        let sspec = VolumeSpec::of(&src, self.timeout());
        let tspec = VolumeSpec::of(&volume, self.timeout());
        if let Err(e) = self
            .with_timeout("copy", source, sd.copy_snapshot(&sspec, snap, &tspec))
            .await
        {
            self.release_unrecorded(&tref, &held).await;
            return Err(e);
        }
        crate::crash::point("copy.after-copy");
        let runtime = match self.kv.get(&self.keys.runtime(source)).await? {
            Some(e) => decode(&e)?,
            None => src.runtime.clone(),
        };
        let mut ops: Vec<TxnOp> = held.iter().map(HeldLock::fence).collect();
        ops.push(TxnOp::Put {
            key: tkey,
            value: encode(&volume),
            pre: Precondition::Absent,
            lease: None,
        });
        ops.push(TxnOp::Put {
            key: self.keys.runtime(&tref),
            value: encode(&runtime),
            pre: Precondition::Any,
            lease: None,
        });
        ops.extend(held.iter().map(|h| TxnOp::Delete {
            key: h.key.clone(),
            pre: Precondition::Any,
        }));
        if let Err(e) = self.kv.txn(ops).await {
            match self.settle_publish(&tref, &volume, &held, e).await {
                Settled::Committed => {}
                Settled::NotCommitted(e) => {
                    if let Some(b) = volume.backends.crud {
                        if let Ok(cd) = self.driver(b) {
                            self.destroy_quietly(cd.as_ref(), &tspec).await;
                        }
                    }
                    return Err(e.into());
                }
                Settled::Unknown(e) => return Err(e),
            }
        }
        info!(snapshot = %snap, target = %tref, "volume copied from snapshot");
        Ok(VolumeInfo {
            volume,
            runtime_options: runtime,
        })
    }

    /// Starts a maintenance session (`volcli use exec`): grants a lease of `ttl` for it and
    /// takes the volume's mount and op locks for `host` with it, waiting up to `wait`. The
    /// locks last while the caller renews the session ([`Self::renew_maintenance`]) and
    /// vanish with its lease if the caller dies.
    #[instrument(skip(self), fields(volume = %vref))]
    pub async fn begin_maintenance(
        &self,
        vref: &VolumeRef,
        host: &HostName,
        ttl: Duration,
        wait: Duration,
    ) -> Result<(LeaseId, Vec<HeldLock>), EngineError> {
        self.record(vref).await?;
        let lease = self.kv.lease_grant(ttl).await?;
        let marker = self.keys.maintenance(&lease);
        let put = self
            .kv
            .put(
                &marker,
                encode(&vref.to_string()),
                crate::kv::PutOpts::absent().with_lease(lease.clone()),
            )
            .await;
        if let Err(e) = put {
            let _ = self.kv.lease_revoke(&lease).await;
            return Err(e.into());
        }
        let locker = Locker::new(self.kv.clone(), self.keys.clone(), host.clone())
            .with_owner(format!("maintenance-{lease}"));
        match locker
            .acquire(&self.both(vref, LockReason::Maintenance), &lease, wait)
            .await
        {
            Ok(held) => {
                info!(session = %lease, host = %host, "maintenance started");
                Ok((lease, held))
            }
            Err(e) => {
                let _ = self.kv.lease_revoke(&lease).await;
                Err(e.into())
            }
        }
    }

    async fn check_session(&self, session: &LeaseId) -> Result<(), EngineError> {
        match self.kv.get(&self.keys.maintenance(session)).await? {
            Some(_) => Ok(()),
            None => Err(EngineError::SessionGone {
                session: session.clone(),
                why: "does not exist (it ended, or its lease expired)",
            }),
        }
    }

    /// Renews a maintenance session; an ended one is an error.
    pub async fn renew_maintenance(&self, session: &LeaseId) -> Result<Duration, EngineError> {
        self.check_session(session).await?;
        match self.kv.lease_keepalive(session).await {
            Ok(ttl) => Ok(ttl),
            Err(KvError::LeaseLost { .. }) => Err(EngineError::SessionGone {
                session: session.clone(),
                why: "has expired; its locks are gone",
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Ends a maintenance session, releasing its locks.
    pub async fn end_maintenance(&self, session: &LeaseId) -> Result<(), EngineError> {
        self.check_session(session).await?;
        match self.kv.lease_revoke(session).await {
            Ok(()) | Err(KvError::LeaseLost { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every lock, or those of one kind.
    pub async fn locks(
        &self,
        kind: Option<LockKind>,
    ) -> Result<Vec<crate::lock::LockInfo>, EngineError> {
        Ok(self.locker.list(kind).await?)
    }

    /// Clears a volume's locks whoever holds them.
    pub async fn force_remove_locks(
        &self,
        vref: &VolumeRef,
    ) -> Result<Vec<LockHolder>, EngineError> {
        Ok(self
            .locker
            .force_remove(vref, &[LockKind::Mount, LockKind::Op])
            .await?)
    }
}

/// Validates a policy and stores it as the current one and as a new revision. The
/// revision key is named by the store revision of the upload, so two uploads never share
/// one (volplugin keyed them by wall-clock seconds). For tools that seed a store without
/// an engine (volstack's defaults); everything else goes through
/// [`Volumes::upload_policy`].
pub async fn store_policy(
    kv: &dyn KvStore,
    keys: &Keys,
    name: &PolicyName,
    json: &[u8],
) -> Result<PolicyRevision, EngineError> {
    let policy = Policy::from_json(name, json)?;
    let bytes = policy.to_json();
    let revision = kv
        .put(&keys.policy(name), bytes.clone(), Default::default())
        .await?;
    kv.put(
        &keys.policy_revision(name, revision),
        bytes,
        crate::kv::PutOpts::absent(),
    )
    .await?;
    Ok(PolicyRevision { revision, policy })
}

/// Now, to the millisecond (records store milliseconds, so what is returned equals what
/// is read back).
fn now_millis() -> SystemTime {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A snapshot name from a time: `snap-YYYYMMDD-HHMMSS-mmm` (UTC), sortable.
pub fn snapshot_name(t: SystemTime) -> SnapshotName {
    let s = humantime::format_rfc3339_millis(t).to_string(); // 2026-12-01T08:30:00.123Z
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    // digits = YYYYMMDDHHMMSSmmm
    let name = if digits.len() >= 17 {
        format!(
            "snap-{}-{}-{}",
            &digits[..8],
            &digits[8..14],
            &digits[14..17]
        )
    } else {
        format!("snap-{digits}")
    };
    #[allow(clippy::expect_used)]
    SnapshotName::new(name).expect("letters, digits and '-' make a valid snapshot name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_sort_by_time() {
        let a = snapshot_name(SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_578_400_001));
        let b = snapshot_name(SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_578_400_002));
        assert_eq!(a.as_str(), "snap-20251201-084000-001");
        assert!(a < b);
    }
}
