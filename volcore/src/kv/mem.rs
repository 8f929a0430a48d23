//! The in-memory store, optionally written through to a [`Journal`] (that is how
//! `volcore-kv`'s embedded store persists).
//!
//! One mutex guards the whole state and is never held across an `.await`; lease expiry
//! runs on `tokio::time`, so tests can pause time.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::{
    Entry, KvError, KvStore, LeaseId, Precondition, PutOpts, Revision, TxnOp, TxnOutcome,
    WatchEvent, WatchStream,
};

/// One durable change, handed to a [`Journal`] before it becomes visible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The key now holds this entry.
    Put(Entry),
    /// The key is gone.
    Delete(String),
}

/// Durable write-through for [`MemKv`]: `commit` must make the changes durable (or fail,
/// in which case nothing is applied) before it returns.
pub trait Journal: Send + Sync + std::fmt::Debug + 'static {
    /// Persists the changes of one write, which brings the store to `revision`.
    fn commit(&self, revision: Revision, changes: &[Change]) -> Result<(), KvError>;
    /// Persists a compaction point (optional).
    fn compacted(&self, _revision: Revision) -> Result<(), KvError> {
        Ok(())
    }
}

#[derive(Debug)]
struct LeaseInfo {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<String>,
}

#[derive(Debug)]
struct Watcher {
    prefix: String,
    tx: mpsc::UnboundedSender<Result<WatchEvent, KvError>>,
}

#[derive(Debug, Default)]
struct State {
    rev: Revision,
    data: BTreeMap<String, Entry>,
    leases: HashMap<String, LeaseInfo>,
    next_lease: u64,
    history: VecDeque<(Revision, WatchEvent)>,
    /// Events at or below this revision are no longer in `history`.
    compacted: Revision,
    watchers: Vec<Watcher>,
}

#[derive(Debug)]
struct Inner {
    name: &'static str,
    state: Mutex<State>,
    journal: Option<Box<dyn Journal>>,
    history_limit: usize,
    /// Leases are prefixed with this so ids from two stores never match.
    lease_prefix: String,
}

/// An in-memory [`KvStore`] with etcd's semantics. Cheap to clone (shared state).
#[derive(Clone, Debug)]
pub struct MemKv {
    inner: Arc<Inner>,
}

impl Default for MemKv {
    fn default() -> Self {
        Self::new()
    }
}

const DEFAULT_HISTORY: usize = 100_000;

impl MemKv {
    /// An empty store.
    pub fn new() -> Self {
        Self::build("memory", None, 0, Vec::new(), DEFAULT_HISTORY)
    }

    /// A store that starts from persisted `entries` at `revision` and writes every
    /// change through `journal`. Entries attached to a lease are dropped (leases do not
    /// survive a restart: their holder is gone), as one more revision.
    pub fn with_journal(
        name: &'static str,
        journal: Box<dyn Journal>,
        revision: Revision,
        entries: Vec<Entry>,
    ) -> Result<Self, KvError> {
        let (stale, live): (Vec<Entry>, Vec<Entry>) =
            entries.into_iter().partition(|e| e.lease.is_some());
        let mut rev = revision;
        if !stale.is_empty() {
            rev += 1;
            let changes: Vec<Change> = stale
                .iter()
                .map(|e| Change::Delete(e.key.clone()))
                .collect();
            journal.commit(rev, &changes)?;
            tracing::info!(
                keys = stale.len(),
                "dropped keys of leases from before the restart"
            );
        }
        Ok(Self::build(name, Some(journal), rev, live, DEFAULT_HISTORY))
    }

    /// A store that keeps at most `limit` events of watch history (older watches get
    /// `Resync`).
    pub fn with_history_limit(limit: usize) -> Self {
        Self::build("memory", None, 0, Vec::new(), limit.max(1))
    }

    fn build(
        name: &'static str,
        journal: Option<Box<dyn Journal>>,
        rev: Revision,
        entries: Vec<Entry>,
        history_limit: usize,
    ) -> Self {
        let data = entries.into_iter().map(|e| (e.key.clone(), e)).collect();
        let lease_prefix = format!("{:x}", rand_u32());
        Self {
            inner: Arc::new(Inner {
                name,
                state: Mutex::new(State {
                    rev,
                    data,
                    compacted: rev,
                    ..State::default()
                }),
                journal,
                history_limit,
                lease_prefix,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock_state(&self.inner)
    }
}

fn lock_state(inner: &Inner) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave the state half-written (writes are
    // applied after all checks), so a poisoned lock is still consistent.
    inner.state.lock().unwrap_or_else(|p| p.into_inner())
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    // Truncation is the point: a short random tag.
    #[allow(clippy::cast_possible_truncation)]
    let v = h.finish() as u32;
    v
}

enum Write {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
}

impl Inner {
    /// Checks preconditions, then applies writes as one revision. Returns the new
    /// revision and, per write, whether a delete removed something.
    fn commit(
        &self,
        st: &mut State,
        checks: &[(String, Precondition)],
        writes: Vec<Write>,
    ) -> Result<(Revision, Vec<bool>), KvError> {
        for (key, pre) in checks {
            let cur = st.data.get(key);
            if !pre.holds(cur) {
                return Err(KvError::Conflict {
                    key: key.clone(),
                    current: cur.map(|e| e.mod_rev),
                });
            }
        }
        let mut seen = BTreeSet::new();
        for w in &writes {
            let k = match w {
                Write::Put { key, lease, .. } => {
                    if let Some(l) = lease {
                        if st
                            .leases
                            .get(l.as_str())
                            .is_none_or(|i| Instant::now() >= i.deadline)
                        {
                            return Err(KvError::LeaseLost { lease: l.clone() });
                        }
                    }
                    key
                }
                Write::Delete { key } => key,
            };
            if !seen.insert(k.clone()) {
                return Err(KvError::Invalid {
                    reason: format!("key {k} is written twice in one transaction"),
                });
            }
        }
        let writes_anything = writes.iter().any(|w| match w {
            Write::Put { .. } => true,
            Write::Delete { key } => st.data.contains_key(key),
        });
        if !writes_anything {
            return Ok((st.rev, vec![false; writes.len()]));
        }
        let rev = st.rev + 1;
        let mut changes = Vec::with_capacity(writes.len());
        let mut events = Vec::with_capacity(writes.len());
        let mut deleted = Vec::with_capacity(writes.len());
        for w in writes {
            match w {
                Write::Put { key, value, lease } => {
                    let create_rev = st.data.get(&key).map_or(rev, |e| e.create_rev);
                    let e = Entry {
                        key,
                        value,
                        create_rev,
                        mod_rev: rev,
                        lease,
                    };
                    changes.push(Change::Put(e.clone()));
                    events.push(WatchEvent::Put(e));
                    deleted.push(false);
                }
                Write::Delete { key } => {
                    if st.data.contains_key(&key) {
                        changes.push(Change::Delete(key.clone()));
                        events.push(WatchEvent::Delete { key, revision: rev });
                        deleted.push(true);
                    } else {
                        deleted.push(false);
                    }
                }
            }
        }
        if let Some(j) = &self.journal {
            j.commit(rev, &changes)?;
        }
        // Durable (or memory-only): make it visible.
        st.rev = rev;
        for c in changes {
            match c {
                Change::Put(e) => {
                    if let Some(old) = st.data.get(&e.key) {
                        if let Some(l) = &old.lease {
                            if old.lease != e.lease {
                                if let Some(info) = st.leases.get_mut(l.as_str()) {
                                    info.keys.remove(&e.key);
                                }
                            }
                        }
                    }
                    if let Some(l) = &e.lease {
                        if let Some(info) = st.leases.get_mut(l.as_str()) {
                            info.keys.insert(e.key.clone());
                        }
                    }
                    st.data.insert(e.key.clone(), e);
                }
                Change::Delete(k) => {
                    if let Some(old) = st.data.remove(&k) {
                        if let Some(l) = old.lease {
                            if let Some(info) = st.leases.get_mut(l.as_str()) {
                                info.keys.remove(&k);
                            }
                        }
                    }
                }
            }
        }
        self.publish(st, rev, events);
        Ok((rev, deleted))
    }

    fn publish(&self, st: &mut State, rev: Revision, events: Vec<WatchEvent>) {
        st.watchers.retain(|w| {
            for ev in &events {
                let key = match ev {
                    WatchEvent::Put(e) => &e.key,
                    WatchEvent::Delete { key, .. } => key,
                    WatchEvent::Resync { .. } => continue,
                };
                if key.starts_with(&w.prefix) && w.tx.send(Ok(ev.clone())).is_err() {
                    return false;
                }
            }
            !w.tx.is_closed()
        });
        for ev in events {
            st.history.push_back((rev, ev));
        }
        while st.history.len() > self.history_limit {
            if let Some((r, _)) = st.history.pop_front() {
                // A watch from before `r` would miss the dropped event.
                st.compacted = st.compacted.max(r);
            }
        }
    }

    fn expire(&self, lease: &str) {
        let mut st = lock_state(self);
        let Some(info) = st.leases.get(lease) else {
            return;
        };
        if Instant::now() < info.deadline {
            return;
        }
        let Some(info) = st.leases.remove(lease) else {
            return;
        };
        tracing::debug!(lease, keys = info.keys.len(), "lease expired");
        let writes = info
            .keys
            .into_iter()
            .map(|key| Write::Delete { key })
            .collect();
        if let Err(e) = self.commit(&mut st, &[], writes) {
            tracing::error!(lease, error = %e, "could not delete the keys of an expired lease");
        }
    }
}

fn spawn_reaper(inner: Weak<Inner>, lease: String) {
    tokio::spawn(async move {
        loop {
            let deadline = {
                let Some(inner) = inner.upgrade() else { return };
                let st = lock_state(&inner);
                match st.leases.get(&lease) {
                    None => return,
                    Some(info) => info.deadline,
                }
            };
            tokio::time::sleep_until(deadline).await;
            let Some(inner) = inner.upgrade() else { return };
            let due = {
                let st = lock_state(&inner);
                st.leases.get(&lease).map(|i| Instant::now() >= i.deadline)
            };
            match due {
                None => return,
                Some(true) => {
                    inner.expire(&lease);
                    return;
                }
                Some(false) => {}
            }
        }
    });
}

#[async_trait]
impl KvStore for MemKv {
    fn backend(&self) -> &'static str {
        self.inner.name
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, KvError> {
        Ok(self.lock().data.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, KvError> {
        let st = self.lock();
        Ok(st
            .data
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn put(&self, key: &str, value: Vec<u8>, opts: PutOpts) -> Result<Revision, KvError> {
        let mut st = self.lock();
        let (rev, _) = self.inner.commit(
            &mut st,
            &[(key.to_owned(), opts.precondition)],
            vec![Write::Put {
                key: key.to_owned(),
                value,
                lease: opts.lease,
            }],
        )?;
        Ok(rev)
    }

    async fn delete(&self, key: &str, pre: Precondition) -> Result<bool, KvError> {
        let mut st = self.lock();
        let (_, deleted) = self.inner.commit(
            &mut st,
            &[(key.to_owned(), pre)],
            vec![Write::Delete {
                key: key.to_owned(),
            }],
        )?;
        Ok(deleted.first().copied().unwrap_or(false))
    }

    async fn txn(&self, ops: Vec<TxnOp>) -> Result<TxnOutcome, KvError> {
        let checks: Vec<(String, Precondition)> = ops
            .iter()
            .map(|op| (op.key().to_owned(), op.precondition()))
            .collect();
        let mut read_keys = Vec::new();
        let writes = ops
            .into_iter()
            .filter_map(|op| match op {
                TxnOp::Put {
                    key, value, lease, ..
                } => Some(Write::Put { key, value, lease }),
                TxnOp::Delete { key, .. } => Some(Write::Delete { key }),
                TxnOp::Check { .. } => None,
                TxnOp::Read { key, .. } => {
                    read_keys.push(key);
                    None
                }
            })
            .collect();
        let mut st = self.lock();
        // Reads see the state the checks see: before the writes, under the same lock.
        let reads = read_keys.iter().map(|k| st.data.get(k).cloned()).collect();
        let (revision, _) = self.inner.commit(&mut st, &checks, writes)?;
        Ok(TxnOutcome { revision, reads })
    }

    async fn watch(&self, prefix: &str, after: Option<Revision>) -> Result<WatchStream, KvError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.lock();
        if let Some(after) = after {
            if after < st.compacted {
                let _ = tx.send(Ok(WatchEvent::Resync { revision: st.rev }));
            } else {
                for (rev, ev) in &st.history {
                    if *rev <= after {
                        continue;
                    }
                    let key = match ev {
                        WatchEvent::Put(e) => &e.key,
                        WatchEvent::Delete { key, .. } => key,
                        WatchEvent::Resync { .. } => continue,
                    };
                    if key.starts_with(prefix) {
                        let _ = tx.send(Ok(ev.clone()));
                    }
                }
            }
        }
        st.watchers.push(Watcher {
            prefix: prefix.to_owned(),
            tx,
        });
        Ok(Box::pin(UnboundedReceiverStream::new(rx)))
    }

    async fn revision(&self) -> Result<Revision, KvError> {
        Ok(self.lock().rev)
    }

    async fn compact(&self, revision: Revision) -> Result<(), KvError> {
        let mut st = self.lock();
        if revision > st.rev {
            return Err(KvError::Invalid {
                reason: format!(
                    "cannot compact to {revision}: the store is at revision {}",
                    st.rev
                ),
            });
        }
        while st.history.front().is_some_and(|(r, _)| *r <= revision) {
            st.history.pop_front();
        }
        st.compacted = st.compacted.max(revision);
        if let Some(j) = &self.inner.journal {
            j.compacted(revision)?;
        }
        Ok(())
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, KvError> {
        if ttl.is_zero() {
            return Err(KvError::Invalid {
                reason: "a lease TTL must be positive".into(),
            });
        }
        let id = {
            let mut st = self.lock();
            st.next_lease += 1;
            let id = format!("{}-{}", self.inner.lease_prefix, st.next_lease);
            st.leases.insert(
                id.clone(),
                LeaseInfo {
                    ttl,
                    deadline: Instant::now() + ttl,
                    keys: BTreeSet::new(),
                },
            );
            id
        };
        spawn_reaper(Arc::downgrade(&self.inner), id.clone());
        Ok(LeaseId::new(id))
    }

    async fn lease_keepalive(&self, id: &LeaseId) -> Result<Duration, KvError> {
        let mut st = self.lock();
        match st.leases.get_mut(id.as_str()) {
            Some(info) if Instant::now() < info.deadline => {
                info.deadline = Instant::now() + info.ttl;
                Ok(info.ttl)
            }
            _ => Err(KvError::LeaseLost { lease: id.clone() }),
        }
    }

    async fn lease_revoke(&self, id: &LeaseId) -> Result<(), KvError> {
        let mut st = self.lock();
        let Some(info) = st.leases.remove(id.as_str()) else {
            return Err(KvError::LeaseLost { lease: id.clone() });
        };
        let writes = info
            .keys
            .into_iter()
            .map(|key| Write::Delete { key })
            .collect();
        self.inner.commit(&mut st, &[], writes)?;
        Ok(())
    }
}
