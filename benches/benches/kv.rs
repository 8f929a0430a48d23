//! Per-operation latency of the KV stores: in-memory, embedded (redb, durable commits)
//! and etcd (`VOLCORE_BENCH_ETCD=host:port`; `scripts/bench.sh` starts one).
//!
//! Operations: get, put, create-only put, a two-key transaction with compares, list of
//! 100 keys, and a use-lock acquire + release (two locks, one transaction each way).

#![allow(clippy::unwrap_used)] // a benchmark that cannot set up should stop loudly

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tokio::runtime::Runtime;
use volcore::kv::{KvStore, Precondition, PutOpts, TxnOp};
use volcore::{HostName, Keys, LockKind, LockReason, LockRequest, Locker, MemKv, VolumeRef};

fn stores(rt: &Runtime) -> Vec<(&'static str, Arc<dyn KvStore>)> {
    let mut v: Vec<(&'static str, Arc<dyn KvStore>)> = vec![("memory", Arc::new(MemKv::new()))];
    let dir = tempfile::tempdir().unwrap().keep();
    v.push((
        "embedded",
        Arc::new(volcore_kv::EmbeddedKv::open(dir.join("bench.redb")).unwrap()),
    ));
    match std::env::var("VOLCORE_BENCH_ETCD") {
        Ok(ep) => {
            let kv = rt
                .block_on(volcore_kv::EtcdKv::connect(volcore_kv::EtcdConfig::new([
                    ep,
                ])))
                .unwrap();
            v.push(("etcd", Arc::new(kv)));
        }
        Err(_) => eprintln!(
            "VOLCORE_BENCH_ETCD is not set: etcd figures left out (scripts/bench.sh starts etcd)"
        ),
    }
    v
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    for (name, kv) in stores(&rt) {
        let mut g = c.benchmark_group(name);
        g.measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_millis(500))
            .sample_size(30);
        let ns = format!("/bench/{}", std::process::id());
        rt.block_on(async {
            for i in 0..100 {
                kv.put(
                    &format!("{ns}/list/{i:03}"),
                    vec![b'x'; 200],
                    PutOpts::default(),
                )
                .await
                .unwrap();
            }
            kv.put(&format!("{ns}/get"), vec![b'x'; 200], PutOpts::default())
                .await
                .unwrap();
        });
        let n = AtomicU64::new(0);
        g.bench_function("get", |b| {
            b.to_async(&rt)
                .iter(|| async { kv.get(&format!("{ns}/get")).await.unwrap() })
        });
        g.bench_function("put", |b| {
            b.to_async(&rt).iter(|| async {
                kv.put(&format!("{ns}/put"), vec![b'x'; 200], PutOpts::default())
                    .await
                    .unwrap()
            })
        });
        g.bench_function("put_absent", |b| {
            b.to_async(&rt).iter(|| async {
                let i = n.fetch_add(1, Ordering::Relaxed);
                kv.put(
                    &format!("{ns}/absent/{i}"),
                    vec![b'x'; 200],
                    PutOpts::absent(),
                )
                .await
                .unwrap()
            })
        });
        g.bench_function("txn_2_puts_with_compares", |b| {
            b.to_async(&rt).iter(|| async {
                let i = n.fetch_add(1, Ordering::Relaxed);
                kv.txn(vec![
                    TxnOp::Put {
                        key: format!("{ns}/txn/{i}/a"),
                        value: vec![1; 100],
                        pre: Precondition::Absent,
                        lease: None,
                    },
                    TxnOp::Put {
                        key: format!("{ns}/txn/{i}/b"),
                        value: vec![1; 100],
                        pre: Precondition::Absent,
                        lease: None,
                    },
                ])
                .await
                .unwrap()
            })
        });
        g.bench_function("list_100", |b| {
            b.to_async(&rt)
                .iter(|| async { kv.list(&format!("{ns}/list/")).await.unwrap().len() })
        });
        let lease = rt
            .block_on(kv.lease_grant(Duration::from_secs(60)))
            .unwrap();
        let locker = Locker::new(
            kv.clone(),
            Keys::new(&ns).unwrap(),
            HostName::new("bench").unwrap(),
        );
        g.bench_function("lock_acquire_release_2", |b| {
            b.to_async(&rt).iter(|| async {
                let i = n.fetch_add(1, Ordering::Relaxed);
                let v = VolumeRef::parse(&format!("p/v{i}")).unwrap();
                let reqs = [
                    LockRequest::new(LockKind::Mount, v.clone(), LockReason::Create),
                    LockRequest::new(LockKind::Op, v, LockReason::Create),
                ];
                let held = locker.try_acquire(&reqs, &lease).await.unwrap();
                locker.release(&held).await.unwrap();
            })
        });
        g.finish();
        rt.block_on(async {
            let _ = kv.lease_revoke(&lease).await;
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
