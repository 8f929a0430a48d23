//! Use locks (DESIGN.md §6).
//!
//! A lock is the key `locks/<kind>/<policy>/<volume>`, created only if absent and bound to
//! the holder's lease, so a dead holder's locks expire with its lease. The value names the
//! holder ([`LockHolder`]); the key's create revision is the **fencing token**
//! ([`HeldLock::token`]): writes made on behalf of a lock include [`HeldLock::fence`] in
//! their transaction, so a holder that lost its lock cannot write.
//!
//! Several locks are taken in one transaction (all or none). A caller that is willing to
//! wait watches the blocking key for deletion — no polling — until its deadline.
//!
//! The same holder re-acquires idempotently. A holder is a host plus an *owner* string
//! the caller chooses: a plugin uses a stable owner (its plugin name), so a second mount
//! of a volume, or the same plugin after a restart, re-acquires its own lock (re-bound to
//! the new lease, keeping its fencing token); the volume engine uses a fresh owner per
//! operation, so two operations never share a lock, even inside one daemon. A locker may
//! also carry its host's persistent identity and its process instance
//! ([`Locker::with_identity`]): a lock whose holder names another identity is never
//! taken for one's own, even under the same host label.
//!
//! **Epochs.** Every acquisition of a volume's `mount` lock also writes the volume's epoch
//! key (`epochs/<policy>/<volume>`) in the same transaction; its mod revision is the epoch
//! ([`HeldLock::epoch`]). A holder that lost its lease re-takes the lock only with
//! [`LockRequest::continuing`] its epoch: the transaction checks that the epoch key is
//! unchanged, i.e. that nobody else held the lock in between, even briefly (ABA). When
//! it changed the answer is [`LockError::EpochChanged`] and no lock is taken.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::keys::{Keys, LockKind};
use crate::kv::{
    Entry, KvError, KvStore, LeaseId, Precondition, PutOpts, Revision, TxnOp, WatchEvent,
};
use crate::name::{HostName, VolumeRef};

/// Why a lock is held.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum LockReason {
    /// Creating the volume.
    Create,
    /// Mounted by a container.
    Mount,
    /// Removing the volume.
    Remove,
    /// Taking a snapshot.
    Snapshot,
    /// Pruning snapshots.
    SnapshotPrune,
    /// Copying a snapshot into a new volume.
    Copy,
    /// `volcli use exec`.
    Maintenance,
    /// `volcli check --repair` fixing what a crash left.
    Repair,
}

impl std::fmt::Display for LockReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Who holds a lock: the value stored at the lock key.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LockHolder {
    /// The volume.
    pub volume: VolumeRef,
    /// The lock kind.
    pub kind: LockKind,
    /// The holder's host label.
    pub host: HostName,
    /// Why.
    pub reason: LockReason,
    /// Since when (RFC 3339).
    #[serde(with = "crate::serde_time")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub since: SystemTime,
    /// The lease the lock was taken with.
    pub lease: String,
    /// Who on the host holds it (a plugin name, or one engine operation).
    #[serde(default)]
    pub owner: String,
    /// The holder's persistent host identity (its state directory's id), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    /// The holding process instance (random per start), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// One lock to take.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LockRequest {
    /// The kind.
    pub kind: LockKind,
    /// The volume.
    pub volume: VolumeRef,
    /// Why.
    pub reason: LockReason,
    /// For a `mount` lock: re-take it only if the volume's epoch is still this one (the
    /// epoch the caller held it under); `None` starts a new epoch.
    pub continuing: Option<Revision>,
}

impl LockRequest {
    /// A request.
    pub fn new(kind: LockKind, volume: VolumeRef, reason: LockReason) -> Self {
        Self {
            kind,
            volume,
            reason,
            continuing: None,
        }
    }

    /// Re-take a `mount` lock held before under `epoch`, only if nobody held it since.
    pub fn continuing(mut self, epoch: Revision) -> Self {
        self.continuing = Some(epoch);
        self
    }
}

/// A lock this process holds.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HeldLock {
    /// The lock key.
    pub key: String,
    /// The fencing token: the key's create revision.
    pub token: Revision,
    /// The holder record as stored.
    pub holder: LockHolder,
    /// For a `mount` lock: the volume's epoch this lock was taken under (the revision of
    /// the epoch key), `None` for other kinds.
    pub epoch: Option<Revision>,
}

impl HeldLock {
    /// A transaction check that passes only while this lock is still held by us.
    pub fn fence(&self) -> TxnOp {
        TxnOp::Check {
            key: self.key.clone(),
            pre: Precondition::CreateRevision(self.token),
        }
    }
}

/// A lock as listed.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LockInfo {
    /// The holder record.
    #[serde(flatten)]
    pub holder: LockHolder,
    /// The fencing token.
    pub token: Revision,
}

/// Lock errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Somebody else holds the lock (after waiting, if the caller waited).
    #[error("volume {} is locked ({} lock) by host {} for {} since {}; if {} is dead, run: volcli use force-remove {}", .holder.volume, .holder.kind, .holder.host, .holder.reason, humantime::format_rfc3339_seconds(.holder.since), .holder.host, .holder.volume)]
    Held {
        /// The current holder.
        holder: Box<LockHolder>,
    },
    /// The lease the caller tried to lock with has ended.
    #[error("lease {lease} has ended; no lock can be taken or kept with it")]
    LeaseLost {
        /// The lease.
        lease: LeaseId,
    },
    /// A lock the caller believed it held belongs to someone else now.
    #[error("lock {key} is no longer ours: {}", .now.as_ref().map_or_else(|| "it was removed".to_owned(), |h| format!("host {} holds it for {}", h.host, h.reason)))]
    NotHeld {
        /// The key.
        key: String,
        /// Who holds it now, if anyone.
        now: Option<Box<LockHolder>>,
    },
    /// A check passed along with the locks (e.g. "the volume record is absent") failed;
    /// no lock was taken.
    #[error("precondition on {key} does not hold")]
    CheckFailed {
        /// The key whose check failed.
        key: String,
    },
    /// A `continuing` re-take found the volume's epoch changed: another holder had the
    /// lock in between (it may have written to the volume). No lock was taken.
    #[error("volume {volume} was locked by another holder since this host held it (epoch {expected}, now {})", .now.map_or_else(|| "none".to_owned(), |n| n.to_string()))]
    EpochChanged {
        /// The volume.
        volume: VolumeRef,
        /// The epoch the caller held it under.
        expected: Revision,
        /// The epoch now (`None`: the epoch key is gone, e.g. the volume was removed).
        now: Option<Revision>,
    },
    /// A lock changed hands while it was being force-removed; nothing was removed.
    #[error("lock {key} changed while it was being removed: {}; nothing was removed — if that holder is dead too, run the command again", .now.as_ref().map_or_else(|| "it was released".to_owned(), |h| format!("host {} holds it now for {} since {}", h.host, h.reason, humantime::format_rfc3339_seconds(h.since))))]
    Changed {
        /// The key.
        key: String,
        /// Its holder now, if any.
        now: Option<Box<LockHolder>>,
    },
    /// Two requests in one call name the same lock.
    #[error("lock {key} is requested twice in one call")]
    Duplicate {
        /// The key.
        key: String,
    },
    /// The store failed.
    #[error(transparent)]
    Kv(#[from] KvError),
}

/// Takes, releases and lists use locks for one host.
#[derive(Clone, Debug)]
pub struct Locker {
    kv: Arc<dyn KvStore>,
    keys: Keys,
    host: HostName,
    owner: String,
    host_id: Option<String>,
    instance: Option<String>,
}

impl Locker {
    /// A locker for `host`, whose owner is the host name itself.
    pub fn new(kv: Arc<dyn KvStore>, keys: Keys, host: HostName) -> Self {
        let owner = host.to_string();
        Self {
            kv,
            keys,
            host,
            owner,
            host_id: None,
            instance: None,
        }
    }

    /// The same locker, recording this host's persistent identity and this process's
    /// instance in the locks it takes; a lock naming another identity is not ours.
    pub fn with_identity(&self, host_id: impl Into<String>, instance: impl Into<String>) -> Self {
        Self {
            host_id: Some(host_id.into()),
            instance: Some(instance.into()),
            ..self.clone()
        }
    }

    /// The same locker acting for another owner on this host.
    pub fn with_owner(&self, owner: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            ..self.clone()
        }
    }

    /// The owner this locker acts for.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The host this locker acts for.
    pub fn host(&self) -> &HostName {
        &self.host
    }

    fn is_ours(&self, holder: &LockHolder) -> bool {
        let same_identity = match (&holder.host_id, &self.host_id) {
            (Some(theirs), Some(ours)) => theirs == ours,
            // Locks taken before identities existed, or by a locker without one.
            _ => true,
        };
        holder.host == self.host && holder.owner == self.owner && same_identity
    }

    /// The epoch write (new tenure) or check (continuing one) for a `mount` request.
    fn epoch_op(&self, r: &LockRequest, holder: &LockHolder) -> Option<TxnOp> {
        if r.kind != LockKind::Mount {
            return None;
        }
        let key = self.keys.epoch(&r.volume);
        Some(match r.continuing {
            Some(e) => TxnOp::Check {
                key,
                pre: Precondition::Revision(e),
            },
            None => TxnOp::Put {
                key,
                value: serde_json::to_vec(&serde_json::json!({
                    "host": holder.host,
                    "owner": holder.owner,
                    "reason": holder.reason,
                    "since": humantime::format_rfc3339_millis(holder.since).to_string(),
                }))
                .unwrap_or_default(),
                pre: Precondition::Any,
                lease: None,
            },
        })
    }

    /// The epoch a request's lock is held under once `revision` committed.
    fn epoch_of(r: &LockRequest, revision: Revision) -> Option<Revision> {
        (r.kind == LockKind::Mount).then_some(r.continuing.unwrap_or(revision))
    }

    /// A conflict on an epoch check means another holder came and went.
    async fn epoch_changed(&self, reqs: &[LockRequest], key: &str) -> Option<LockError> {
        let r = reqs
            .iter()
            .find(|r| r.continuing.is_some() && self.keys.epoch(&r.volume) == key)?;
        let now = match self.kv.get(key).await {
            Ok(e) => e.map(|e| e.mod_rev),
            Err(e) => return Some(e.into()),
        };
        Some(LockError::EpochChanged {
            volume: r.volume.clone(),
            expected: r.continuing.unwrap_or_default(),
            now,
        })
    }

    /// Takes every lock in `reqs` with `lease`, all or none, waiting up to `wait` for
    /// locks held by others to be released.
    pub async fn acquire(
        &self,
        reqs: &[LockRequest],
        lease: &LeaseId,
        wait: Duration,
    ) -> Result<Vec<HeldLock>, LockError> {
        self.acquire_checked(reqs, lease, wait, &[]).await
    }

    /// Like [`acquire`](Self::acquire), with extra `checks` (`TxnOp::Check`) evaluated in
    /// the same transaction: when one fails, no lock is taken and the result is
    /// [`LockError::CheckFailed`] naming its key. This is how an operation reserves a
    /// name and takes its locks in one round trip.
    pub async fn acquire_checked(
        &self,
        reqs: &[LockRequest],
        lease: &LeaseId,
        wait: Duration,
        checks: &[TxnOp],
    ) -> Result<Vec<HeldLock>, LockError> {
        Ok(self.acquire_reading(reqs, lease, wait, checks).await?.0)
    }

    /// Like [`acquire_checked`](Self::acquire_checked); `checks` may also hold
    /// [`TxnOp::Read`]s, whose entries come back (in order) from the same transaction that
    /// took the locks — so an operation reads what it will work on, under its locks, in
    /// the round trip that takes them.
    pub async fn acquire_reading(
        &self,
        reqs: &[LockRequest],
        lease: &LeaseId,
        wait: Duration,
        checks: &[TxnOp],
    ) -> Result<(Vec<HeldLock>, Vec<Option<Entry>>), LockError> {
        let now = SystemTime::now();
        // Every transaction of this acquisition applies only while its attempt key is
        // absent: writing that key voids one that is still on its way to the store.
        let attempt = self
            .keys
            .lock_attempt(&format!("{:016x}", rand::random::<u64>()));
        let mut guarded = checks.to_vec();
        guarded.push(TxnOp::Check {
            key: attempt.clone(),
            pre: Precondition::Absent,
        });
        let res = self.acquire_at(reqs, lease, wait, &guarded, now).await;
        if let Err(LockError::Kv(e)) = &res {
            if e.is_retryable() {
                // The store may have applied what it did not answer, or may yet: the
                // locks would then stay on a live lease for ever.
                self.undo_unanswered(reqs, lease, now, attempt);
            }
        }
        res
    }

    /// The holder value this locker writes for `r` in an acquisition at `now`.
    fn holder_for(&self, r: &LockRequest, lease: &LeaseId, now: SystemTime) -> LockHolder {
        LockHolder {
            volume: r.volume.clone(),
            kind: r.kind,
            host: self.host.clone(),
            reason: r.reason,
            since: now,
            lease: lease.as_str().to_owned(),
            owner: self.owner.clone(),
            host_id: self.host_id.clone(),
            instance: self.instance.clone(),
        }
    }

    /// Undoes, in the background, an acquisition at `now` whose answer was lost. First
    /// it voids the acquisition by writing its `attempt` key (on the lease), so that a
    /// transaction still on its way cannot apply later; then, since nothing more can
    /// land, it deletes the keys whose value is exactly what that acquisition wrote (its
    /// own `since`), at the revision read, so a lock held before (re-bound, not
    /// rewritten) or by anyone else is never touched. Retried while the store is down,
    /// for a bounded time.
    fn undo_unanswered(
        &self,
        reqs: &[LockRequest],
        lease: &LeaseId,
        now: SystemTime,
        attempt: String,
    ) {
        let expected: Vec<(String, Vec<u8>)> = reqs
            .iter()
            .filter_map(|r| {
                let bytes = serde_json::to_vec(&self.holder_for(r, lease, now)).ok()?;
                Some((self.keys.lock(r.kind, &r.volume), bytes))
            })
            .collect();
        let kv = self.kv.clone();
        let lease = lease.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(100);
            let mut voided = false;
            for _ in 0..40 {
                if !voided {
                    let void = PutOpts::absent().with_lease(lease.clone());
                    match kv.put(&attempt, Vec::new(), void).await {
                        // Voided now, or by an earlier try whose answer was lost.
                        Ok(_) | Err(KvError::Conflict { .. }) => voided = true,
                        // The lease is gone, and every lock taken with it.
                        Err(KvError::LeaseLost { .. }) => return,
                        Err(_) => {
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_secs(5));
                            continue;
                        }
                    }
                }
                let mut done = true;
                for (key, bytes) in &expected {
                    let res = match kv.get(key).await {
                        Ok(Some(e)) if e.value == *bytes => kv
                            .delete(key, Precondition::Revision(e.mod_rev))
                            .await
                            .map(|_| ()),
                        Ok(_) => Ok(()),
                        Err(e) => Err(e),
                    };
                    match res {
                        Ok(()) | Err(KvError::Conflict { .. }) => {}
                        Err(_) => done = false,
                    }
                }
                if done {
                    return;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            warn!(locks = expected.len(), "gave up removing the locks of an unanswered acquisition; they end with their lease");
        });
    }

    async fn acquire_at(
        &self,
        reqs: &[LockRequest],
        lease: &LeaseId,
        wait: Duration,
        checks: &[TxnOp],
        now: SystemTime,
    ) -> Result<(Vec<HeldLock>, Vec<Option<Entry>>), LockError> {
        // A wait too long to represent is "for ever" (a year), never an overflow.
        let deadline = Instant::now()
            .checked_add(wait)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 86_400));
        let mut items = Vec::with_capacity(reqs.len());
        for r in reqs {
            let key = self.keys.lock(r.kind, &r.volume);
            if items.iter().any(|(k, _): &(String, LockHolder)| *k == key) {
                return Err(LockError::Duplicate { key });
            }
            items.push((key, self.holder_for(r, lease, now)));
        }
        let check_failed = |key: &str| checks.iter().any(|c| c.key() == key);
        let epoch_ops: Vec<TxnOp> = reqs
            .iter()
            .zip(&items)
            .filter_map(|(r, (_, h))| self.epoch_op(r, h))
            .collect();
        // Fast path: one round trip when nobody holds any of them.
        let mut ops = checks.to_vec();
        for (key, h) in &items {
            ops.push(put_op(key, h, Precondition::Absent, lease)?);
        }
        ops.extend(epoch_ops.iter().cloned());
        match self.kv.txn(ops).await {
            Ok(out) => {
                debug!(locks = items.len(), host = %self.host, "locks taken");
                let held = items
                    .into_iter()
                    .zip(reqs)
                    .map(|((key, holder), r)| HeldLock {
                        key,
                        token: out.revision,
                        holder,
                        epoch: Self::epoch_of(r, out.revision),
                    })
                    .collect();
                return Ok((held, out.reads));
            }
            Err(KvError::Conflict { key, .. }) if check_failed(&key) => {
                return Err(LockError::CheckFailed { key })
            }
            Err(KvError::Conflict { key, .. }) => {
                if let Some(e) = self.epoch_changed(reqs, &key).await {
                    return Err(e);
                }
            }
            Err(KvError::LeaseLost { lease }) => return Err(LockError::LeaseLost { lease }),
            Err(e) => return Err(e.into()),
        }
        loop {
            let current =
                futures::future::try_join_all(items.iter().map(|(k, _)| self.kv.get(k))).await?;
            let mut ops = checks.to_vec();
            let mut blocked: Option<(Entry, LockHolder)> = None;
            // Each lock's fencing token: its create revision when it is ours already
            // (kept by a re-bind), else the revision of the transaction that creates it.
            let mut held: Vec<(HeldLock, bool)> = Vec::with_capacity(items.len());
            for ((key, want), cur) in items.iter().zip(&current) {
                match cur {
                    None => {
                        ops.push(put_op(key, want, Precondition::Absent, lease)?);
                        let lock = HeldLock {
                            key: key.clone(),
                            token: 0,
                            holder: want.clone(),
                            epoch: None,
                        };
                        held.push((lock, true));
                    }
                    Some(e) => {
                        let h = e.decode::<LockHolder>()?;
                        if self.is_ours(&h) {
                            let lock = HeldLock {
                                key: key.clone(),
                                token: e.create_rev,
                                holder: h.clone(),
                                epoch: None,
                            };
                            held.push((lock, false));
                            if e.lease.as_ref() == Some(lease) {
                                ops.push(TxnOp::Check {
                                    key: key.clone(),
                                    pre: Precondition::Revision(e.mod_rev),
                                });
                            } else {
                                // Re-bind our own lock (restart) to the new lease.
                                let mut rebound = h.clone();
                                rebound.lease = lease.as_str().to_owned();
                                // Now held by this process: a check must not take the
                                // lock for its dead predecessor's.
                                rebound.instance.clone_from(&self.instance);
                                if self.host_id.is_some() {
                                    rebound.host_id.clone_from(&self.host_id);
                                }
                                if let Some((last, _)) = held.last_mut() {
                                    last.holder = rebound.clone();
                                }
                                ops.push(put_op(
                                    key,
                                    &rebound,
                                    Precondition::Revision(e.mod_rev),
                                    lease,
                                )?);
                            }
                        } else if blocked.is_none() {
                            blocked = Some((e.clone(), h));
                        }
                    }
                }
            }
            let Some((entry, holder)) = blocked else {
                ops.extend(epoch_ops.iter().cloned());
                match self.kv.txn(ops).await {
                    Ok(out) => {
                        let held: Vec<HeldLock> = held
                            .into_iter()
                            .zip(reqs)
                            .map(|((mut h, created), r)| {
                                if created {
                                    h.token = out.revision;
                                }
                                h.epoch = Self::epoch_of(r, out.revision);
                                h
                            })
                            .collect();
                        debug!(locks = held.len(), host = %self.host, "locks taken after waiting");
                        return Ok((held, out.reads));
                    }
                    Err(KvError::Conflict { key, .. }) if check_failed(&key) => {
                        return Err(LockError::CheckFailed { key })
                    }
                    Err(KvError::Conflict { key, .. }) => {
                        if let Some(e) = self.epoch_changed(reqs, &key).await {
                            return Err(e);
                        }
                        continue;
                    }
                    Err(KvError::LeaseLost { lease }) => {
                        return Err(LockError::LeaseLost { lease })
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            if Instant::now() >= deadline {
                return Err(LockError::Held {
                    holder: Box::new(holder),
                });
            }
            debug!(key = %entry.key, holder = %holder.host, "waiting for lock");
            if !self.wait_gone(&entry, deadline).await? {
                return Err(LockError::Held {
                    holder: Box::new(holder),
                });
            }
        }
    }

    /// Takes the locks without waiting.
    pub async fn try_acquire(
        &self,
        reqs: &[LockRequest],
        lease: &LeaseId,
    ) -> Result<Vec<HeldLock>, LockError> {
        self.acquire(reqs, lease, Duration::ZERO).await
    }

    /// Waits until `entry`'s key is deleted or changed; false when the deadline passed.
    async fn wait_gone(&self, entry: &Entry, deadline: Instant) -> Result<bool, LockError> {
        let mut stream = self.kv.watch(&entry.key, Some(entry.mod_rev)).await?;
        loop {
            let next = tokio::time::timeout_at(deadline, stream.next()).await;
            match next {
                Err(_) => return Ok(false),
                Ok(None) => return Ok(true),
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(Some(Ok(ev))) => match ev {
                    WatchEvent::Put(e)
                        if e.key == entry.key && e.create_rev == entry.create_rev =>
                    {
                        continue
                    }
                    WatchEvent::Put(e) if e.key != entry.key => continue,
                    WatchEvent::Delete { key, .. } if key != entry.key => continue,
                    // Deleted, re-created, or a gap: look again.
                    _ => return Ok(true),
                },
            }
        }
    }

    /// Releases locks in one transaction. A lock that is already gone counts as
    /// released; one that somebody else holds now is left alone and reported.
    pub async fn release(&self, held: &[HeldLock]) -> Result<(), LockError> {
        if held.is_empty() {
            return Ok(());
        }
        let ops = held
            .iter()
            .map(|h| TxnOp::Delete {
                key: h.key.clone(),
                pre: Precondition::CreateRevision(h.token),
            })
            .collect();
        match self.kv.txn(ops).await {
            Ok(_) => return Ok(()),
            Err(KvError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let mut first_err = None;
        for h in held {
            match self
                .kv
                .delete(&h.key, Precondition::CreateRevision(h.token))
                .await
            {
                Ok(_) => {}
                Err(KvError::Conflict { current: None, .. }) => {
                    warn!(key = %h.key, "lock was already gone when released");
                }
                Err(KvError::Conflict { .. }) => {
                    let now = match self.kv.get(&h.key).await? {
                        Some(e) => Some(Box::new(e.decode::<LockHolder>()?)),
                        None => None,
                    };
                    first_err.get_or_insert(LockError::NotHeld {
                        key: h.key.clone(),
                        now,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The holder of one lock, if any.
    pub async fn get(
        &self,
        kind: LockKind,
        volume: &VolumeRef,
    ) -> Result<Option<LockInfo>, LockError> {
        match self.kv.get(&self.keys.lock(kind, volume)).await? {
            None => Ok(None),
            Some(e) => Ok(Some(LockInfo {
                holder: e.decode::<LockHolder>()?,
                token: e.create_rev,
            })),
        }
    }

    /// Every lock, or every lock of one kind.
    pub async fn list(&self, kind: Option<LockKind>) -> Result<Vec<LockInfo>, LockError> {
        let entries = self.kv.list(&self.keys.locks(kind)).await?;
        entries
            .iter()
            .map(|e| {
                Ok(LockInfo {
                    holder: e.decode::<LockHolder>()?,
                    token: e.create_rev,
                })
            })
            .collect()
    }

    /// Removes a volume's locks whoever holds them (`volcli use force-remove`); returns
    /// the holders removed. Only the locks as read are removed, in one transaction: if one
    /// changed hands meanwhile, nothing is removed and the answer names its new holder.
    pub async fn force_remove(
        &self,
        volume: &VolumeRef,
        kinds: &[LockKind],
    ) -> Result<Vec<LockHolder>, LockError> {
        let keys: Vec<String> = kinds.iter().map(|k| self.keys.lock(*k, volume)).collect();
        let current = futures::future::try_join_all(keys.iter().map(|k| self.kv.get(k))).await?;
        let mut ops = Vec::new();
        let mut removed = Vec::new();
        for e in current.into_iter().flatten() {
            removed.push(e.decode::<LockHolder>()?);
            ops.push(TxnOp::Delete {
                key: e.key.clone(),
                // The exact entry read: same create and mod revision.
                pre: Precondition::Revision(e.mod_rev),
            });
        }
        if ops.is_empty() {
            return Ok(removed);
        }
        match self.kv.txn(ops).await {
            Ok(_) => {
                for h in &removed {
                    info!(volume = %volume, kind = %h.kind, holder = %h.host, "lock force-removed");
                }
                Ok(removed)
            }
            Err(KvError::Conflict { key, .. }) => {
                let now = match self.kv.get(&key).await? {
                    Some(e) => Some(Box::new(e.decode::<LockHolder>()?)),
                    None => None,
                };
                Err(LockError::Changed { key, now })
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn put_op(
    key: &str,
    holder: &LockHolder,
    pre: Precondition,
    lease: &LeaseId,
) -> Result<TxnOp, KvError> {
    let value = serde_json::to_vec(holder).map_err(|e| KvError::Invalid {
        reason: format!("cannot encode lock holder: {e}"),
    })?;
    Ok(TxnOp::Put {
        key: key.to_owned(),
        value,
        pre,
        lease: Some(lease.clone()),
    })
}
