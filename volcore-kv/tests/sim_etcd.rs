//! The fault-injection simulation (`volcore::testing::sim`) on a real etcd
//! (`VOLCORE_TEST_ETCD`): the same hosts, faults and checker as the in-memory schedules,
//! in real time (so a seed does not replay exactly). `VOLCORE_SIM_ETCD_SCHEDULES=N` runs
//! more (default 6, run concurrently, each under its own prefix).

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod common;

use std::time::Duration;

use volcore::testing::sim::{self, SimConfig};
use volcore::LeaseLossAction;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedules_on_etcd() {
    let n: u64 = std::env::var("VOLCORE_SIM_ETCD_SCHEDULES")
        .map(|s| {
            s.parse()
                .expect("VOLCORE_SIM_ETCD_SCHEDULES must be a number")
        })
        .unwrap_or(6);
    let kv = common::etcd().await;
    let runs = (0..n).map(|seed| {
        let kv = kv.clone();
        let cfg = SimConfig {
            steps: 25,
            // etcd raises TTLs below ~1.5 s; 2 s keeps a schedule near ten seconds.
            ttl: Duration::from_secs(2),
            gap: Duration::from_millis(300),
            on_lease_loss: if seed % 2 == 0 {
                LeaseLossAction::Unmount
            } else {
                LeaseLossAction::Keep
            },
            force_removes: seed % 2 == 0,
            ..SimConfig::default()
        };
        let prefix = format!("/sim-etcd-{}-{seed}", std::process::id());
        tokio::spawn(async move { sim::run_on(seed, &cfg, kv, &prefix).await })
    });
    let mut mounts = 0;
    for r in futures::future::join_all(runs).await {
        let r = r.unwrap();
        mounts += r
            .history
            .iter()
            .filter(|h| matches!(h.what, sim::What::Mount { .. }))
            .count();
        assert!(r.violations.is_empty(), "on etcd:\n{}", r.explain());
    }
    assert!(mounts > 0, "the schedules mounted nothing");
}
