//! End-to-end load generator: N concurrent clients (each a typed `volcore_api::Client`
//! on its own kept-alive connection) drive volmaster's REST API (create, get, list,
//! remove on a null-backend policy) against etcd, and print ops/s and p50/p99
//! per operation — next to the latency of a bare etcd put and txn from this machine (the
//! floor). Every loop is bounded by an operation count.
//!
//! `scripts/loadgen.sh [--clients 1,16] [--iterations 200]` starts etcd and runs it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use volcore::kv::{KvStore, Precondition, PutOpts, TxnOp};
use volcore::{
    Drivers, GlobalConfig, HostName, Keys, LeaseKeeper, PolicyName, VolumeName, VolumeRef, Volumes,
};
use volcore_api::{Client, RemoveOptions};
use volcore_kv::{EtcdConfig, EtcdKv};
use volmaster::{serve, MasterConfig, MasterDeps};

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

/// Prints one row; returns the p50.
fn report(name: &str, mut samples: Vec<Duration>, wall: Duration) -> Duration {
    samples.sort();
    let ops = samples.len() as f64 / wall.as_secs_f64();
    let p50 = pct(&samples, 0.50);
    println!(
        "  {name:<12} {:>6} ops {ops:>9.0} ops/s   p50 {:>8.3} ms   p99 {:>8.3} ms",
        samples.len(),
        p50.as_secs_f64() * 1e3,
        pct(&samples, 0.99).as_secs_f64() * 1e3,
    );
    p50
}

fn floor_txn(ns: &str, i: usize, step: &str) -> Vec<TxnOp> {
    ["a", "b"]
        .into_iter()
        .map(|k| TxnOp::Put {
            key: format!("{ns}/{step}/{i}/{k}"),
            value: vec![b'x'; 300],
            pre: Precondition::Absent,
            lease: None,
        })
        .collect()
}

/// The floor steps, run by the single client of the N = 1 round interleaved with its REST
/// cycle, so that drift in etcd's latency (WAL growth, disk, the neighbours) hits floor
/// and REST alike: a put, a txn, a get, two txns in sequence — the least a create or
/// remove can cost, since both take their locks in one durable txn and publish (or
/// delete) in a second one after the storage work — and an HTTP round trip to a handler
/// that does no store work — and the engine's create and remove called in-process (the
/// REST cycle without HTTP, JSON or the handler), which splits the gap between the REST
/// cycle and the bare txns into what the store work adds and what the REST layer adds.
const FLOOR: [&str; 7] = [
    "etcd put",
    "etcd txn",
    "etcd get",
    "etcd txn+txn",
    "http",
    "engine create",
    "engine remove",
];

struct Floor<'a> {
    kv: &'a EtcdKv,
    client: &'a Client,
    engine: &'a Volumes,
    policy: &'a PolicyName,
}

async fn floor_step(f: &Floor<'_>, i: usize, step: &str) -> Result<()> {
    let (kv, client) = (f.kv, f.client);
    let ns = format!("/loadgen-floor-{}", std::process::id());
    let engine_vol = || -> Result<VolumeRef> {
        Ok(VolumeRef::new(
            f.policy.clone(),
            VolumeName::new(format!("engine-i{i}"))?,
        ))
    };
    match step {
        "etcd put" => {
            kv.put(
                &format!("{ns}/put/{i}"),
                vec![b'x'; 300],
                PutOpts::default(),
            )
            .await?;
        }
        "etcd txn" => {
            kv.txn(floor_txn(&ns, i, "txn")).await?;
        }
        "etcd get" => {
            kv.get(&format!("{ns}/put/{i}")).await?;
        }
        "etcd txn+txn" => {
            kv.txn(floor_txn(&ns, i, "lock")).await?;
            kv.txn(floor_txn(&ns, i, "publish")).await?;
        }
        "engine create" => {
            f.engine.create(&engine_vol()?, &BTreeMap::new()).await?;
        }
        "engine remove" => {
            f.engine.remove(&engine_vol()?, false, None).await?;
        }
        _ => {
            client.health().await?;
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    let etcd = EtcdKv::connect(EtcdConfig::new([a.etcd.clone()])).await?;
    etcd.revision().await.context("etcd does not answer")?;

    let kv: Arc<dyn KvStore> = Arc::new(etcd.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let prefix = format!("/loadgen-{}", std::process::id());
    let cfg = MasterConfig {
        listen: addr,
        kv_spec: format!("etcd://{}", a.etcd),
        prefix: prefix.clone(),
        host: HostName::new("loadgen")?,
        allow_null_backend: true,
        tls: None,
        admin_identities: Vec::new(),
        audit_keep: volmaster::DEFAULT_AUDIT_KEEP,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        cfg,
        MasterDeps {
            kv: kv.clone(),
            drivers: Drivers::new(),
        },
        listener,
        async {
            let _ = stop_rx.await;
        },
    ));
    let base = format!("http://{addr}");
    let admin = Client::new(&base)?;
    // Wait until it serves (ready: it has its store and lease).
    for _ in 0..100 {
        if admin.ready().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let policy = PolicyName::new("load")?;
    admin
        .upload_policy(
            &policy,
            br#"{"backend":"null","create":{"size":"10MB"}}"#.to_vec(),
        )
        .await
        .context("policy upload")?;
    let no_options = BTreeMap::new();
    // The in-process engine of the floor: the same store, prefix, policy and null driver
    // as the served volmaster, with its own lease.
    let keeper = LeaseKeeper::start(kv.clone(), Duration::from_secs(30)).await?;
    let (_global_tx, global) = tokio::sync::watch::channel(GlobalConfig::default());
    let engine = Arc::new(Volumes::new(
        kv.clone(),
        Keys::new(&prefix)?,
        Drivers::new().with_null(),
        HostName::new("loadgen-engine")?,
        keeper.subscribe(),
        global,
    ));
    for &n in &a.clients {
        // The concurrent floor: N clients doing nothing but bare etcd txns (two puts
        // each, as a lock txn), as many as the REST round's creates.
        let floor_txns_per_s = if n > 1 {
            let start = Instant::now();
            let tasks: Vec<_> = (0..n)
                .map(|c| {
                    let (etcd, iters) = (etcd.clone(), a.iterations);
                    tokio::spawn(async move {
                        let ns = format!("/loadgen-floor-{}-n{n}-c{c}", std::process::id());
                        for i in 0..iters {
                            etcd.txn(floor_txn(&ns, i, "conc")).await?;
                        }
                        anyhow::Ok(())
                    })
                })
                .collect();
            for t in tasks {
                t.await??;
            }
            let rate = (n * a.iterations) as f64 / start.elapsed().as_secs_f64();
            println!("concurrent floor: {n} clients doing bare etcd txns: {rate:.0} txns/s");
            Some(rate)
        } else {
            None
        };
        let start = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|c| {
                let (base, iters, etcd, policy, opts, engine) = (
                    base.clone(),
                    a.iterations,
                    etcd.clone(),
                    policy.clone(),
                    no_options.clone(),
                    engine.clone(),
                );
                tokio::spawn(async move {
                    // One client, one kept-alive connection, per simulated user.
                    let client = Client::new(&base)?;
                    // 0..4: the REST steps; 4..: the floor steps (N = 1 only).
                    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); 4 + FLOOR.len()];
                    let floor = Floor {
                        kv: &etcd,
                        client: &client,
                        engine: &engine,
                        policy: &policy,
                    };
                    for i in 0..iters {
                        if n == 1 {
                            for (k, step) in FLOOR.into_iter().enumerate() {
                                let t = Instant::now();
                                floor_step(&floor, i, step).await?;
                                lat[4 + k].push(t.elapsed());
                            }
                        }
                        let vol = VolumeRef::new(
                            policy.clone(),
                            VolumeName::new(format!("n{n}-c{c}-i{i}"))?,
                        );
                        for (k, lat_k) in lat.iter_mut().take(4).enumerate() {
                            let t = Instant::now();
                            let done = match k {
                                0 => client.create(&vol, &opts).await.map(drop),
                                1 => client.volume(&vol).await.map(drop),
                                2 => client.volumes(Some(&policy)).await.map(drop),
                                _ => client.remove(&vol, RemoveOptions::default()).await,
                            };
                            done.with_context(|| format!("{vol} step {k}"))?;
                            lat_k.push(t.elapsed());
                        }
                    }
                    anyhow::Ok(lat)
                })
            })
            .collect();
        let mut all: Vec<Vec<Duration>> = vec![Vec::new(); 4 + FLOOR.len()];
        for t in tasks {
            let lat = t.await??;
            for (k, l) in lat.into_iter().enumerate() {
                all[k].extend(l);
            }
        }
        let wall = start.elapsed();
        let mut p50 = vec![Duration::ZERO; all.len()];
        if n == 1 {
            println!(
                "floor, interleaved with the REST cycle below: bare etcd and HTTP from this machine, one client"
            );
            for (k, name) in FLOOR.into_iter().enumerate() {
                let l = std::mem::take(&mut all[4 + k]);
                let busy = l.iter().sum();
                p50[4 + k] = report(name, l, busy);
            }
        }
        // At N = 1 the floor steps share the wall time; REST gets its own busy time.
        let rest_wall = if n == 1 {
            all[..4].iter().flatten().sum()
        } else {
            wall
        };
        println!(
            "volmaster REST, N = {n} concurrent clients, {} iterations each ({:.1} s, {:.1} s of it REST)",
            a.iterations,
            wall.as_secs_f64(),
            rest_wall.as_secs_f64()
        );
        for (k, name) in ["create", "get", "list", "remove"].into_iter().enumerate() {
            p50[k] = report(name, std::mem::take(&mut all[k]), rest_wall);
        }
        let floor_p50 = |name: &str| {
            FLOOR
                .iter()
                .position(|s| *s == name)
                .map_or(Duration::ZERO, |k| p50[4 + k])
        };
        let (txn, txn2) = (floor_p50("etcd txn"), floor_p50("etcd txn+txn"));
        if let Some(floor) = floor_txns_per_s {
            // Creates alone, then removes alone, from N clients: each is two durable txns
            // (lock + read, then publish or delete + unlock), so its ceiling is half the
            // concurrent txn floor.
            for (what, burst) in [("create", true), ("remove", false)] {
                let start = Instant::now();
                let tasks: Vec<_> = (0..n)
                    .map(|c| {
                        let (base, iters, policy, opts) = (
                            base.clone(),
                            a.iterations,
                            policy.clone(),
                            no_options.clone(),
                        );
                        tokio::spawn(async move {
                            let client = Client::new(&base)?;
                            for i in 0..iters {
                                let vol = VolumeRef::new(
                                    policy.clone(),
                                    VolumeName::new(format!("burst-n{n}-c{c}-i{i}"))?,
                                );
                                let done = if burst {
                                    client.create(&vol, &opts).await.map(drop)
                                } else {
                                    client.remove(&vol, RemoveOptions::default()).await
                                };
                                done.with_context(|| vol.to_string())?;
                            }
                            anyhow::Ok(())
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await??;
                }
                let rate = (n * a.iterations) as f64 / start.elapsed().as_secs_f64();
                println!(
                    "  {what} alone, N = {n}: {rate:.0}/s = {:.2} of half the concurrent txn floor ({:.0}/s)",
                    rate / (floor / 2.0),
                    floor / 2.0
                );
            }
        }
        if n == 1 && !txn.is_zero() && !txn2.is_zero() {
            println!(
                "  create p50 = {:.2} x, remove p50 = {:.2} x the bare etcd txn p50",
                p50[0].as_secs_f64() / txn.as_secs_f64(),
                p50[3].as_secs_f64() / txn.as_secs_f64()
            );
            // The target (#12): each is two durable txns, so the floor is two sequential
            // bare txns; the rest is HTTP, JSON and the handler.
            println!(
                "  create p50 = {:.2} x, remove p50 = {:.2} x two sequential bare etcd txns (etcd txn+txn p50)",
                p50[0].as_secs_f64() / txn2.as_secs_f64(),
                p50[3].as_secs_f64() / txn2.as_secs_f64()
            );
            // Where the gap lies: the engine's own store work (its txns carry more than
            // the floor's two puts) against the REST layer on top of it.
            let (ec, er) = (floor_p50("engine create"), floor_p50("engine remove"));
            println!(
                "  engine create p50 = {:.2} x, engine remove p50 = {:.2} x two sequential bare etcd txns; REST adds {:.0} us and {:.0} us to them (http floor {:.0} us)",
                ec.as_secs_f64() / txn2.as_secs_f64(),
                er.as_secs_f64() / txn2.as_secs_f64(),
                (p50[0].as_secs_f64() - ec.as_secs_f64()) * 1e6,
                (p50[3].as_secs_f64() - er.as_secs_f64()) * 1e6,
                floor_p50("http").as_secs_f64() * 1e6,
            );
        }
    }
    keeper.shutdown().await;
    let _ = stop_tx.send(());
    server.await??;
    Ok(())
}
