//! The KV and lock suites against a real etcd (`VOLCORE_TEST_ETCD`, started by
//! scripts/test).

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod common;

use volcore::testing::KvCaps;

volcore::kv_conformance!(kv, common::etcd().await, KvCaps::ETCD);
volcore::lock_conformance!(locks, common::etcd().await, KvCaps::ETCD);

#[tokio::test]
async fn bad_endpoints_are_named() {
    let err = volcore_kv::EtcdConfig::parse("etcd://")
        .unwrap_err()
        .to_string();
    assert!(err.contains("names no etcd endpoint"), "{err}");
    let err = volcore_kv::EtcdConfig::parse("etcd://localhost")
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"localhost\" is not host:port"), "{err}");
    let cfg = volcore_kv::EtcdConfig::parse("etcd://127.0.0.1:2379,10.0.0.2:2379").unwrap();
    assert_eq!(cfg.endpoints.len(), 2);
}

#[tokio::test]
async fn unreachable_etcd_is_unavailable_not_a_hang() {
    // A loopback port nobody listens on.
    let mut cfg = volcore_kv::EtcdConfig::new(["127.0.0.1:1"]);
    cfg.connect_timeout = std::time::Duration::from_millis(500);
    cfg.request_timeout = std::time::Duration::from_millis(500);
    let res = async {
        let kv = volcore_kv::EtcdKv::connect(cfg).await?;
        volcore::KvStore::get(&kv, "/x").await
    }
    .await;
    let err = res.expect_err("nothing listens on port 1");
    assert!(err.is_retryable(), "{err:?} should be retryable");
}
