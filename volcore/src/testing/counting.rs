//! [`CountingKv`]: wraps a store and counts the round trips made through it, by kind — so
//! a test can pin how many store calls an operation costs.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use crate::kv::{
    Entry, KvError, KvStore, LeaseId, Precondition, PutOpts, Revision, TxnOp, TxnOutcome,
    WatchStream,
};

/// Store calls seen so far, by kind. Lease renewals are not counted (they run on their own
/// schedule, not per operation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvCalls {
    /// `get`s.
    pub get: usize,
    /// `list`s.
    pub list: usize,
    /// `put`s.
    pub put: usize,
    /// `delete`s.
    pub delete: usize,
    /// Transactions.
    pub txn: usize,
    /// Watches opened.
    pub watch: usize,
    /// `revision`, `compact`, lease grants and revokes.
    pub other: usize,
}

impl KvCalls {
    /// Every counted round trip.
    pub fn total(&self) -> usize {
        self.get + self.list + self.put + self.delete + self.txn + self.watch + self.other
    }
}

/// A store wrapper that counts calls (see [`KvCalls`]).
#[derive(Debug, Clone)]
pub struct CountingKv {
    inner: Arc<dyn KvStore>,
    calls: Arc<Mutex<KvCalls>>,
}

impl CountingKv {
    /// Wraps `inner`, counting from zero.
    pub fn new(inner: Arc<dyn KvStore>) -> Self {
        Self {
            inner,
            calls: Arc::default(),
        }
    }

    /// The calls so far.
    pub fn calls(&self) -> KvCalls {
        *self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns the calls so far and counts from zero again.
    pub fn take(&self) -> KvCalls {
        std::mem::take(&mut *self.calls.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn count(&self, f: impl FnOnce(&mut KvCalls)) {
        f(&mut self.calls.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

#[async_trait]
impl KvStore for CountingKv {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>, KvError> {
        self.count(|c| c.get += 1);
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, KvError> {
        self.count(|c| c.list += 1);
        self.inner.list(prefix).await
    }
    async fn put(&self, key: &str, value: Vec<u8>, opts: PutOpts) -> Result<Revision, KvError> {
        self.count(|c| c.put += 1);
        self.inner.put(key, value, opts).await
    }
    async fn delete(&self, key: &str, pre: Precondition) -> Result<bool, KvError> {
        self.count(|c| c.delete += 1);
        self.inner.delete(key, pre).await
    }
    async fn txn(&self, ops: Vec<TxnOp>) -> Result<TxnOutcome, KvError> {
        self.count(|c| c.txn += 1);
        self.inner.txn(ops).await
    }
    async fn watch(&self, prefix: &str, after: Option<Revision>) -> Result<WatchStream, KvError> {
        self.count(|c| c.watch += 1);
        self.inner.watch(prefix, after).await
    }
    async fn revision(&self) -> Result<Revision, KvError> {
        self.count(|c| c.other += 1);
        self.inner.revision().await
    }
    async fn compact(&self, revision: Revision) -> Result<(), KvError> {
        self.count(|c| c.other += 1);
        self.inner.compact(revision).await
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, KvError> {
        self.count(|c| c.other += 1);
        self.inner.lease_grant(ttl).await
    }
    async fn lease_keepalive(&self, id: &LeaseId) -> Result<Duration, KvError> {
        self.inner.lease_keepalive(id).await
    }
    async fn lease_revoke(&self, id: &LeaseId) -> Result<(), KvError> {
        self.count(|c| c.other += 1);
        self.inner.lease_revoke(id).await
    }
}
