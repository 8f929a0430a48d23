//! The KV and lock suites against the embedded store, plus what only a persistent store
//! has: data survives a restart, leases do not.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod common;

use std::time::Duration;

use volcore::kv::{KvStore, Precondition, PutOpts, WatchEvent};
use volcore::testing::KvCaps;
use volcore_kv::EmbeddedKv;

volcore::kv_conformance!(kv, common::embedded(), KvCaps::LOCAL);
volcore::lock_conformance!(locks, common::embedded(), KvCaps::LOCAL);

#[tokio::test]
async fn data_survives_restart_leases_do_not() {
    use futures::StreamExt;
    let path = common::fresh_path();
    let (rev_before, create_rev) = {
        let kv = EmbeddedKv::open(&path).unwrap();
        let r1 = kv
            .put("/a", b"durable".to_vec(), PutOpts::absent())
            .await
            .unwrap();
        kv.put("/a", b"durable v2".to_vec(), PutOpts::default())
            .await
            .unwrap();
        kv.put("/gone", b"x".to_vec(), PutOpts::default())
            .await
            .unwrap();
        kv.delete("/gone", Precondition::Any).await.unwrap();
        let lease = kv.lease_grant(Duration::from_secs(60)).await.unwrap();
        kv.put(
            "/leased",
            b"y".to_vec(),
            PutOpts::default().with_lease(lease),
        )
        .await
        .unwrap();
        (kv.revision().await.unwrap(), r1)
    };
    let kv = EmbeddedKv::open(&path).unwrap();
    let a = kv
        .get("/a")
        .await
        .unwrap()
        .expect("data survives a restart");
    assert_eq!(a.value, b"durable v2");
    assert_eq!(a.create_rev, create_rev);
    assert_eq!(kv.get("/gone").await.unwrap(), None);
    assert_eq!(
        kv.get("/leased").await.unwrap(),
        None,
        "a lease-bound key outlived its process"
    );
    let rev_after = kv.revision().await.unwrap();
    assert!(
        rev_after > rev_before,
        "revisions go on increasing across restarts"
    );
    // History from before the restart is gone: a watch from there must resync.
    let mut w = kv.watch("/", Some(1)).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(2), w.next()).await {
        Ok(Some(Ok(WatchEvent::Resync { .. }))) => {}
        other => panic!("expected Resync, got {other:?}"),
    }
    let r = kv
        .put("/b", b"new".to_vec(), PutOpts::default())
        .await
        .unwrap();
    assert!(r > rev_after);
}

#[tokio::test]
async fn open_reports_unusable_paths() {
    let err = EmbeddedKv::open("/proc/volcore-cannot-be-here/kv.redb").unwrap_err();
    assert!(
        err.to_string().contains("/proc/volcore-cannot-be-here"),
        "{err}"
    );
}

#[tokio::test]
async fn open_by_spec() {
    let p = common::fresh_path();
    let kv = volcore_kv::open(&format!("embedded:{}", p.display()))
        .await
        .unwrap();
    assert_eq!(kv.backend(), "embedded");
    assert_eq!(
        volcore_kv::open("memory:").await.unwrap().backend(),
        "memory"
    );
    let err = volcore_kv::open("zookeeper://x")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown store \"zookeeper://x\""), "{err}");
}
