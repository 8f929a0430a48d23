//! Shared helpers for the real-backend suites.

#![allow(clippy::unwrap_used)] // tests fail by panicking
#![allow(dead_code)]

use std::sync::Arc;

use volcore::kv::KvStore;
use volcore_kv::{EmbeddedKv, EtcdConfig, EtcdKv};

/// The etcd under test: `VOLCORE_TEST_ETCD` (host:port), set by `scripts/test`, which
/// starts etcd itself. Never skipped: without etcd these tests fail and say why.
pub async fn etcd() -> Arc<dyn KvStore> {
    let ep = std::env::var("VOLCORE_TEST_ETCD").unwrap_or_else(|_| {
        panic!("VOLCORE_TEST_ETCD is not set: run scripts/test, which starts etcd on a free loopback port and sets it")
    });
    let kv = EtcdKv::connect(EtcdConfig::new([ep.clone()]))
        .await
        .unwrap_or_else(|e| panic!("etcd at {ep}: {e}"));
    kv.revision()
        .await
        .unwrap_or_else(|e| panic!("etcd at {ep} does not answer: {e}"));
    Arc::new(kv)
}

/// A fresh embedded store in the target's temp dir.
pub fn embedded() -> Arc<dyn KvStore> {
    Arc::new(EmbeddedKv::open(fresh_path()).expect("open embedded store"))
}

/// A new database path under the target's temp dir.
pub fn fresh_path() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("embedded-{}", std::process::id()));
    dir.join(format!("kv-{}.redb", N.fetch_add(1, Ordering::Relaxed)))
}
