//! Test support (feature `testing`): the KV conformance suite, the lock suite, a
//! fault-injecting and a call-counting store wrapper. Other orchestrators can run the same suites against
//! their own [`KvStore`](crate::KvStore) implementations.

#![allow(clippy::unwrap_used, clippy::panic)] // a failed case panics: that is how it fails

pub mod counting;
pub mod driver;
pub mod driver_suite;
pub mod exec;
pub mod flaky;
pub mod kv;
pub mod locks;
pub mod sim;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use counting::{CountingKv, KvCalls};
pub use driver::{FakeDriver, Fault, Step};
pub use exec::FakeExec;
pub use flaky::{FlakyKv, KvCall, KvFault};

/// What a backend can promise about time, for the timing-sensitive cases.
#[derive(Clone, Copy, Debug)]
pub struct KvCaps {
    /// The shortest lease TTL the backend honours.
    pub min_ttl: Duration,
    /// How late after its TTL an expired lease's keys may still be visible.
    pub expiry_slack: Duration,
}

impl KvCaps {
    /// In-process stores (memory, embedded): exact timers.
    pub const LOCAL: Self = Self {
        min_ttl: Duration::from_secs(1),
        expiry_slack: Duration::from_millis(500),
    };
    /// etcd: TTLs below ~1.5 s are raised; expiry is checked every 500 ms and revoked
    /// through raft.
    pub const ETCD: Self = Self {
        min_ttl: Duration::from_secs(2),
        expiry_slack: Duration::from_millis(1500),
    };
}

/// A fresh key namespace for one case, so suites can share one server and run in parallel.
pub fn unique_ns(case: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("/volcore-test/{}-{nanos:x}-{n}/{case}/", std::process::id())
}

static SUITE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Compaction discards history for the whole store, which would disturb other cases'
/// watches on a shared server: the compaction case runs alone, the rest share.
pub enum SuiteGuard {
    /// Held by ordinary cases.
    Shared(tokio::sync::RwLockReadGuard<'static, ()>),
    /// Held by the compaction case.
    Exclusive(tokio::sync::RwLockWriteGuard<'static, ()>),
}

/// Takes the guard a case needs (exclusive for cases that compact).
pub async fn suite_guard(case: &str) -> SuiteGuard {
    if case.contains("compaction") {
        SuiteGuard::Exclusive(SUITE.write().await)
    } else {
        SuiteGuard::Shared(SUITE.read().await)
    }
}

/// Runs `f` until it returns `Some`, or panics after `limit` with `what`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
