//! End-to-end load generator: N concurrent clients drive volmaster's REST API (create,
//! get, list, remove on a null-backend policy) against etcd, and print ops/s and p50/p99
//! per operation — next to the latency of a bare etcd put and txn from this machine (the
//! floor). Every loop is bounded by an operation count.
//!
//! `scripts/loadgen.sh [--clients 1,16] [--iterations 200]` starts etcd and runs it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use volcore::kv::{KvStore, Precondition, PutOpts, TxnOp};
use volcore::{Drivers, HostName};
use volcore_daemons::master::{serve, MasterConfig, MasterDeps};
use volcore_kv::{EtcdConfig, EtcdKv};

struct Args {
    etcd: String,
    clients: Vec<usize>,
    iterations: usize,
}

fn args() -> Result<Args> {
    let mut a = Args {
        etcd: std::env::var("VOLCORE_BENCH_ETCD").unwrap_or_default(),
        clients: vec![1, 16],
        iterations: 200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--etcd" => a.etcd = val,
            "--clients" => {
                a.clients = val
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .context("--clients 1,16")?
            }
            "--iterations" => a.iterations = val.parse().context("--iterations N")?,
            other => {
                bail!("unknown flag {other}; use --etcd host:port --clients 1,16 --iterations 200")
            }
        }
    }
    if a.etcd.is_empty() {
        bail!("no etcd: pass --etcd host:port or set VOLCORE_BENCH_ETCD (scripts/loadgen.sh starts one)");
    }
    if a.iterations == 0 || a.iterations > 100_000 {
        bail!("--iterations must be between 1 and 100000");
    }
    Ok(a)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>, wall: Duration) {
    samples.sort();
    let ops = samples.len() as f64 / wall.as_secs_f64();
    println!(
        "  {name:<12} {:>6} ops {ops:>9.0} ops/s   p50 {:>8.3} ms   p99 {:>8.3} ms",
        samples.len(),
        pct(&samples, 0.50).as_secs_f64() * 1e3,
        pct(&samples, 0.99).as_secs_f64() * 1e3,
    );
}

async fn floor(kv: &EtcdKv, n: usize) -> Result<()> {
    let ns = format!("/loadgen-floor-{}", std::process::id());
    let mut puts = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        kv.put(
            &format!("{ns}/put/{i}"),
            vec![b'x'; 300],
            PutOpts::default(),
        )
        .await?;
        puts.push(t.elapsed());
    }
    let put_wall = start.elapsed();
    let mut txns = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        kv.txn(vec![
            TxnOp::Put {
                key: format!("{ns}/txn/{i}/a"),
                value: vec![b'x'; 300],
                pre: Precondition::Absent,
                lease: None,
            },
            TxnOp::Put {
                key: format!("{ns}/txn/{i}/b"),
                value: vec![b'x'; 300],
                pre: Precondition::Absent,
                lease: None,
            },
        ])
        .await?;
        txns.push(t.elapsed());
    }
    let txn_wall = start.elapsed();
    println!("floor: bare etcd from this machine, one client");
    report("etcd put", puts, put_wall);
    report("etcd txn", txns, txn_wall);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let etcd = EtcdKv::connect(EtcdConfig::new([a.etcd.clone()])).await?;
    etcd.revision().await.context("etcd does not answer")?;
    floor(&etcd, a.iterations.max(200)).await?;

    let kv: Arc<dyn KvStore> = Arc::new(etcd);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let cfg = MasterConfig {
        listen: addr,
        kv_spec: format!("etcd://{}", a.etcd),
        prefix: format!("/loadgen-{}", std::process::id()),
        host: HostName::new("loadgen")?,
        allow_null_backend: true,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        cfg,
        MasterDeps {
            kv,
            drivers: Drivers::new(),
        },
        listener,
        async {
            let _ = stop_rx.await;
        },
    ));
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    // Wait until it serves.
    for _ in 0..100 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = http
        .put(format!("{base}/v1/policies/load"))
        .body(r#"{"backend":"null","create":{"size":"10MB"}}"#)
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("policy upload failed: {}", r.text().await?);
    }
    for &n in &a.clients {
        let start = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|c| {
                let (http, base, iters) = (http.clone(), base.clone(), a.iterations);
                tokio::spawn(async move {
                    let mut lat: [Vec<Duration>; 4] = Default::default();
                    for i in 0..iters {
                        let vol = format!("load/n{n}-c{c}-i{i}");
                        let (p, v) = vol.split_once('/').unwrap_or_default();
                        let steps = [
                            http.post(format!("{base}/v1/volumes"))
                                .body(format!(r#"{{"volume":"{vol}"}}"#)),
                            http.get(format!("{base}/v1/volumes/{p}/{v}")),
                            http.get(format!("{base}/v1/volumes?policy={p}")),
                            http.delete(format!("{base}/v1/volumes/{p}/{v}")),
                        ];
                        for (k, req) in steps.into_iter().enumerate() {
                            let t = Instant::now();
                            let resp = req.send().await?;
                            let status = resp.status();
                            let body = resp.bytes().await?;
                            if !status.is_success() {
                                bail!(
                                    "{vol} step {k}: {status}: {}",
                                    String::from_utf8_lossy(&body)
                                );
                            }
                            lat[k].push(t.elapsed());
                        }
                    }
                    Ok(lat)
                })
            })
            .collect();
        let mut all: [Vec<Duration>; 4] = Default::default();
        for t in tasks {
            let lat = t.await??;
            for (k, l) in lat.into_iter().enumerate() {
                all[k].extend(l);
            }
        }
        let wall = start.elapsed();
        println!(
            "volmaster REST, N = {n} concurrent clients, {} iterations each ({:.1} s)",
            a.iterations,
            wall.as_secs_f64()
        );
        for (k, name) in ["create", "get", "list", "remove"].into_iter().enumerate() {
            report(name, std::mem::take(&mut all[k]), wall);
        }
    }
    let _ = stop_tx.send(());
    server.await??;
    Ok(())
}
