//! Where a create + remove cycle spends its time above the store, on the in-memory store
//! (no store latency), one layer at a time:
//!
//! - `engine`: `Volumes::create` + `remove` called directly (locks, records, publish);
//! - `router`: the same through volmaster's axum router in-process (+ routing, JSON
//!   bodies, error mapping), no sockets;
//! - `client`: the same through the typed `volcore_api::Client` over loopback TCP to a
//!   served volmaster (+ HTTP/1.1, the client's decoding).
//!
//! The differences are what the REST layer adds to the two store transactions a create
//! and a remove each make (the load generator's floor comparison, #12 item 8).

#![allow(clippy::unwrap_used)] // a benchmark that cannot set up should stop loudly

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::BodyExt;
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tower::ServiceExt;
use volcore::{
    Drivers, GlobalConfig, HostName, Keys, KvStore, LeaseKeeper, MemKv, PolicyName, VolumeName,
    VolumeRef, Volumes,
};
use volcore_api::{Client, RemoveOptions};
use volmaster::{serve, test_router, MasterConfig, MasterDeps};

const POLICY: &[u8] = br#"{"backend":"null","create":{"size":"10MB"}}"#;

fn engine(rt: &Runtime) -> (Arc<dyn KvStore>, Volumes, LeaseKeeper) {
    rt.block_on(async {
        let kv: Arc<dyn KvStore> = Arc::new(MemKv::new());
        let keeper = LeaseKeeper::start(kv.clone(), Duration::from_secs(30))
            .await
            .unwrap();
        let (_tx, g) = watch::channel(GlobalConfig::default());
        let e = Volumes::new(
            kv.clone(),
            Keys::default(),
            Drivers::new().with_null(),
            HostName::new("bench").unwrap(),
            keeper.subscribe(),
            g,
        );
        e.upload_policy(&PolicyName::new("load").unwrap(), POLICY)
            .await
            .unwrap();
        (kv, e, keeper)
    })
}

fn next(n: &AtomicU64) -> VolumeRef {
    let i = n.fetch_add(1, Ordering::Relaxed);
    VolumeRef::new(
        PolicyName::new("load").unwrap(),
        VolumeName::new(format!("v{i}")).unwrap(),
    )
}

fn layers(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let mut g = c.benchmark_group("create+remove");
    let n = AtomicU64::new(0);
    let opts = BTreeMap::new();

    let (kv, e, _k1) = engine(&rt);
    g.bench_function("engine", |b| {
        b.to_async(&rt).iter(|| async {
            let v = next(&n);
            e.create(&v, &opts).await.unwrap();
            e.remove(&v, false, None).await.unwrap();
        })
    });

    let app = test_router(kv, e.clone(), Keys::default());
    g.bench_function("router", |b| {
        b.to_async(&rt).iter(|| async {
            let v = next(&n);
            for (method, uri, body) in [
                (
                    "POST",
                    "/v1/volumes".to_owned(),
                    format!(r#"{{"volume":"{v}"}}"#),
                ),
                (
                    "DELETE",
                    format!("/v1/volumes/{}/{}", v.policy, v.volume),
                    String::new(),
                ),
            ] {
                let req = Request::builder()
                    .method(method)
                    .uri(uri)
                    .body(Body::from(body))
                    .unwrap();
                let resp = app.clone().oneshot(req).await.unwrap();
                assert!(resp.status().is_success());
                resp.into_body().collect().await.unwrap();
            }
        })
    });

    let (kv, _, _k2) = engine(&rt);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = MasterConfig {
        listen: addr,
        kv_spec: "memory:".into(),
        prefix: Keys::DEFAULT_PREFIX.into(),
        host: HostName::new("bench").unwrap(),
        allow_null_backend: true,
        tls: None,
        admin_identities: Vec::new(),
        audit_keep: volmaster::DEFAULT_AUDIT_KEEP,
    };
    rt.spawn(serve(
        cfg,
        MasterDeps {
            kv,
            drivers: Drivers::new(),
        },
        listener,
        std::future::pending(),
    ));
    let client = Client::new(&format!("http://{addr}")).unwrap();
    rt.block_on(async {
        while client.ready().await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    g.bench_function("client", |b| {
        b.to_async(&rt).iter(|| async {
            let v = next(&n);
            client.create(&v, &opts).await.unwrap();
            client.remove(&v, RemoveOptions::default()).await.unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, layers);
criterion_main!(benches);
