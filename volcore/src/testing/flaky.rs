//! [`FlakyKv`]: wraps a store and injects faults (a network partition between one
//! daemon and the store, as far as lease renewals go).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::kv::{
    Entry, KvError, KvStore, LeaseId, Precondition, PutOpts, Revision, TxnOp, TxnOutcome,
    WatchStream,
};

/// A store wrapper whose lease renewals can be made to hang or fail.
#[derive(Debug, Clone)]
pub struct FlakyKv {
    inner: Arc<dyn KvStore>,
    hang_keepalive: Arc<AtomicBool>,
    fail_all: Arc<AtomicBool>,
}

impl FlakyKv {
    /// Wraps `inner`; no faults yet.
    pub fn new(inner: Arc<dyn KvStore>) -> Self {
        Self {
            inner,
            hang_keepalive: Arc::new(AtomicBool::new(false)),
            fail_all: Arc::new(AtomicBool::new(false)),
        }
    }

    /// From now on lease renewals hang (until `heal`).
    pub fn hang_keepalives(&self) {
        self.hang_keepalive.store(true, Ordering::SeqCst);
    }

    /// From now on every call fails with `Unavailable` (until `heal`).
    pub fn fail_everything(&self) {
        self.fail_all.store(true, Ordering::SeqCst);
    }

    /// Ends all faults.
    pub fn heal(&self) {
        self.hang_keepalive.store(false, Ordering::SeqCst);
        self.fail_all.store(false, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), KvError> {
        if self.fail_all.load(Ordering::SeqCst) {
            return Err(KvError::Unavailable {
                backend: "flaky",
                source: "injected partition".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl KvStore for FlakyKv {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>, KvError> {
        self.check()?;
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, KvError> {
        self.check()?;
        self.inner.list(prefix).await
    }
    async fn put(&self, key: &str, value: Vec<u8>, opts: PutOpts) -> Result<Revision, KvError> {
        self.check()?;
        self.inner.put(key, value, opts).await
    }
    async fn delete(&self, key: &str, pre: Precondition) -> Result<bool, KvError> {
        self.check()?;
        self.inner.delete(key, pre).await
    }
    async fn txn(&self, ops: Vec<TxnOp>) -> Result<TxnOutcome, KvError> {
        self.check()?;
        self.inner.txn(ops).await
    }
    async fn watch(&self, prefix: &str, after: Option<Revision>) -> Result<WatchStream, KvError> {
        self.check()?;
        self.inner.watch(prefix, after).await
    }
    async fn revision(&self) -> Result<Revision, KvError> {
        self.check()?;
        self.inner.revision().await
    }
    async fn compact(&self, revision: Revision) -> Result<(), KvError> {
        self.check()?;
        self.inner.compact(revision).await
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, KvError> {
        self.check()?;
        self.inner.lease_grant(ttl).await
    }
    async fn lease_keepalive(&self, id: &LeaseId) -> Result<Duration, KvError> {
        self.check()?;
        while self.hang_keepalive.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inner.lease_keepalive(id).await
    }
    async fn lease_revoke(&self, id: &LeaseId) -> Result<(), KvError> {
        self.check()?;
        self.inner.lease_revoke(id).await
    }
}
