//! [`FlakyKv`]: wraps a store and injects faults exactly where a test wants them — a
//! partition between one daemon and the store, a hanging lease renewal, a transaction that
//! commits but whose answer is lost, a store error on the N next calls that match, or a
//! hook that runs just before a matching call (to stage a race).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::kv::{
    Entry, KvError, KvStore, LeaseId, Precondition, PutOpts, Revision, TxnOp, TxnOutcome,
    WatchStream,
};

/// A store call, as a fault rule sees it.
#[derive(Clone, Copy, Debug)]
pub enum KvCall<'a> {
    /// `get(key)`.
    Get(&'a str),
    /// `list(prefix)`.
    List(&'a str),
    /// `put(key, …)`.
    Put(&'a str),
    /// `delete(key, …)`.
    Delete(&'a str),
    /// `txn(ops)`.
    Txn(&'a [TxnOp]),
    /// `watch(prefix, …)`.
    Watch(&'a str),
    /// `revision()` or `compact()`.
    Revision,
    /// Lease grant, renewal or revoke.
    Lease,
}

impl KvCall<'_> {
    /// Whether the call touches a key that contains `part` (a transaction: any of its ops).
    pub fn touches(&self, part: &str) -> bool {
        match self {
            Self::Get(k) | Self::List(k) | Self::Put(k) | Self::Delete(k) | Self::Watch(k) => {
                k.contains(part)
            }
            Self::Txn(ops) => ops.iter().any(|o| o.key().contains(part)),
            Self::Revision | Self::Lease => false,
        }
    }

    /// Whether the call writes (put, delete, or a transaction with a write) a key that
    /// contains `part`.
    pub fn writes(&self, part: &str) -> bool {
        match self {
            Self::Put(k) | Self::Delete(k) => k.contains(part),
            Self::Txn(ops) => ops.iter().any(|o| {
                matches!(o, TxnOp::Put { .. } | TxnOp::Delete { .. }) && o.key().contains(part)
            }),
            _ => false,
        }
    }
}

/// What a matching call suffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvFault {
    /// Fails with `Unavailable` without reaching the store.
    Unavailable,
    /// Reaches the store and applies, then the answer is lost: `Timeout` (an ambiguous
    /// outcome, as when a connection drops after the commit).
    CommitThenTimeout,
    /// Never answers (the caller's timeout must handle it).
    Hang,
    /// Answers late: waits this long, then reaches the store as usual.
    Slow(Duration),
    /// Times out at once, and reaches the store (applies) this long afterwards — a
    /// request stuck at a frozen etcd member that forwards it when it resumes. Writes
    /// (`txn`, `put`, `delete`) only; other calls just time out.
    TimeoutThenApplyLater(Duration),
}

type Pred = Box<dyn Fn(&KvCall<'_>) -> bool + Send + Sync>;
type Hook = Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

struct Rule {
    pred: Pred,
    fault: KvFault,
    left: usize,
}

struct BeforeHook {
    pred: Pred,
    hook: Hook,
    left: usize,
}

#[derive(Default)]
struct Rules {
    faults: Vec<Rule>,
    hooks: Vec<BeforeHook>,
    hits: usize,
}

/// A store wrapper whose calls can be made to fail, hang or lose their answers.
#[derive(Clone)]
pub struct FlakyKv {
    inner: Arc<dyn KvStore>,
    hang_keepalive: Arc<AtomicBool>,
    fail_all: Arc<AtomicBool>,
    rules: Arc<Mutex<Rules>>,
}

impl std::fmt::Debug for FlakyKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlakyKv")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl FlakyKv {
    /// Wraps `inner`; no faults yet.
    pub fn new(inner: Arc<dyn KvStore>) -> Self {
        Self {
            inner,
            hang_keepalive: Arc::new(AtomicBool::new(false)),
            fail_all: Arc::new(AtomicBool::new(false)),
            rules: Arc::default(),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn KvStore> {
        &self.inner
    }

    /// From now on lease renewals hang (until `heal`).
    pub fn hang_keepalives(&self) {
        self.hang_keepalive.store(true, Ordering::SeqCst);
    }

    /// From now on every call fails with `Unavailable` (until `heal`).
    pub fn fail_everything(&self) {
        self.fail_all.store(true, Ordering::SeqCst);
    }

    /// The next `times` calls that match `pred` suffer `fault`.
    pub fn inject(
        &self,
        times: usize,
        fault: KvFault,
        pred: impl Fn(&KvCall<'_>) -> bool + Send + Sync + 'static,
    ) {
        self.with(|r| {
            r.faults.push(Rule {
                pred: Box::new(pred),
                fault,
                left: times,
            })
        });
    }

    /// Before each of the next `times` calls that match `pred`, `hook` runs to completion
    /// (e.g. another client's write, to stage a race at exactly that point).
    pub fn before(
        &self,
        times: usize,
        pred: impl Fn(&KvCall<'_>) -> bool + Send + Sync + 'static,
        hook: impl Fn() -> BoxFuture<'static, ()> + Send + Sync + 'static,
    ) {
        self.with(|r| {
            r.hooks.push(BeforeHook {
                pred: Box::new(pred),
                hook: Box::new(hook),
                left: times,
            })
        });
    }

    /// How many injected faults have fired so far.
    pub fn hits(&self) -> usize {
        self.with(|r| r.hits)
    }

    /// Ends all faults and hooks.
    pub fn heal(&self) {
        self.hang_keepalive.store(false, Ordering::SeqCst);
        self.fail_all.store(false, Ordering::SeqCst);
        self.with(|r| {
            r.faults.clear();
            r.hooks.clear();
        });
    }

    fn with<T>(&self, f: impl FnOnce(&mut Rules) -> T) -> T {
        f(&mut self.rules.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs the hooks for `call`, then says which fault (if any) it suffers.
    async fn enter(&self, call: KvCall<'_>) -> Result<Option<KvFault>, KvError> {
        if self.fail_all.load(Ordering::SeqCst) {
            return Err(unavailable());
        }
        let hook = self.with(|r| {
            let h = r.hooks.iter_mut().find(|h| h.left > 0 && (h.pred)(&call))?;
            h.left -= 1;
            Some((h.hook)())
        });
        if let Some(h) = hook {
            h.await;
        }
        let fault = self.with(|r| {
            let rule = r
                .faults
                .iter_mut()
                .find(|f| f.left > 0 && (f.pred)(&call))?;
            rule.left -= 1;
            let f = rule.fault;
            r.hits += 1;
            Some(f)
        });
        match fault {
            Some(KvFault::Unavailable) => Err(unavailable()),
            Some(KvFault::Hang) => std::future::pending().await,
            Some(KvFault::Slow(d)) => {
                tokio::time::sleep(d).await;
                Ok(None)
            }
            other => Ok(other),
        }
    }
}

fn unavailable() -> KvError {
    KvError::Unavailable {
        backend: "flaky",
        source: "injected partition".into(),
    }
}

fn lost<T>(r: Result<T, KvError>, op: &'static str) -> Result<T, KvError> {
    // The call applied (or failed) at the store; either way the caller hears nothing.
    let _ = r;
    Err(KvError::Timeout {
        backend: "flaky",
        op,
    })
}

/// Times out now; `apply` reaches the store after `d`, in the background.
fn later<T>(
    d: Duration,
    op: &'static str,
    apply: impl std::future::Future<Output = Result<(), KvError>> + Send + 'static,
) -> Result<T, KvError> {
    tokio::spawn(async move {
        tokio::time::sleep(d).await;
        let _ = apply.await;
    });
    Err(KvError::Timeout {
        backend: "flaky",
        op,
    })
}

#[async_trait]
impl KvStore for FlakyKv {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>, KvError> {
        if self.enter(KvCall::Get(key)).await?.is_some() {
            return lost(self.inner.get(key).await, "get");
        }
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, KvError> {
        if self.enter(KvCall::List(prefix)).await?.is_some() {
            return lost(self.inner.list(prefix).await, "list");
        }
        self.inner.list(prefix).await
    }
    async fn put(&self, key: &str, value: Vec<u8>, opts: PutOpts) -> Result<Revision, KvError> {
        match self.enter(KvCall::Put(key)).await? {
            Some(KvFault::TimeoutThenApplyLater(d)) => {
                let (inner, key) = (self.inner.clone(), key.to_owned());
                later(d, "put", async move {
                    inner.put(&key, value, opts).await.map(drop)
                })
            }
            Some(_) => lost(self.inner.put(key, value, opts).await, "put"),
            None => self.inner.put(key, value, opts).await,
        }
    }
    async fn delete(&self, key: &str, pre: Precondition) -> Result<bool, KvError> {
        match self.enter(KvCall::Delete(key)).await? {
            Some(KvFault::TimeoutThenApplyLater(d)) => {
                let (inner, key) = (self.inner.clone(), key.to_owned());
                later(d, "delete", async move {
                    inner.delete(&key, pre).await.map(drop)
                })
            }
            Some(_) => lost(self.inner.delete(key, pre).await, "delete"),
            None => self.inner.delete(key, pre).await,
        }
    }
    async fn txn(&self, ops: Vec<TxnOp>) -> Result<TxnOutcome, KvError> {
        match self.enter(KvCall::Txn(&ops)).await? {
            Some(KvFault::TimeoutThenApplyLater(d)) => {
                let inner = self.inner.clone();
                later(d, "txn", async move { inner.txn(ops).await.map(drop) })
            }
            Some(_) => lost(self.inner.txn(ops).await, "txn"),
            None => self.inner.txn(ops).await,
        }
    }
    async fn watch(&self, prefix: &str, after: Option<Revision>) -> Result<WatchStream, KvError> {
        if self.enter(KvCall::Watch(prefix)).await?.is_some() {
            return lost(self.inner.watch(prefix, after).await, "watch");
        }
        self.inner.watch(prefix, after).await
    }
    async fn revision(&self) -> Result<Revision, KvError> {
        self.enter(KvCall::Revision).await?;
        self.inner.revision().await
    }
    async fn compact(&self, revision: Revision) -> Result<(), KvError> {
        self.enter(KvCall::Revision).await?;
        self.inner.compact(revision).await
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, KvError> {
        self.enter(KvCall::Lease).await?;
        self.inner.lease_grant(ttl).await
    }
    async fn lease_keepalive(&self, id: &LeaseId) -> Result<Duration, KvError> {
        self.enter(KvCall::Lease).await?;
        while self.hang_keepalive.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inner.lease_keepalive(id).await
    }
    async fn lease_revoke(&self, id: &LeaseId) -> Result<(), KvError> {
        self.enter(KvCall::Lease).await?;
        self.inner.lease_revoke(id).await
    }
}
