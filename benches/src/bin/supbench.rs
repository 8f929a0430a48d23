//! The supervisor at scale: N volumes (default 2 000, null backend) on a 1-minute
//! schedule on a real etcd, the supervisor in-process on a `CountingKv`. For each of
//! `SLOTS` slots (default 2) it prints how late the first and the last snapshot of the slot
//! started and when the last finished, the store round trips the slot took (by kind), and
//! the process's CPU time and RSS over the slot. Bounded: N volumes, SLOTS slots.
//! `scripts/supbench.sh` runs it (release build, throw-away etcd).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use tokio::sync::watch;
use volcore::catalog::Catalog;
use volcore::kv::{KvStore, PutOpts};
use volcore::schedule::{next_slot, unix_millis};
use volcore::supervisor::{Role, Supervisor, SupervisorConfig};
use volcore::testing::CountingKv;
use volcore::{Drivers, GlobalConfig, HostName, Keys, LeaseKeeper, PolicyName, VolumeRef, Volumes};
use volcore_kv::{EtcdConfig, EtcdKv};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (user + system CPU seconds, RSS in KiB) of this process.
fn cpu_and_rss() -> (f64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis: utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = 100.0; // USER_HZ on Linux
    let cpu = (ticks(11) + ticks(12)) / hz;
    let rss = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (cpu, rss)
}

#[tokio::main]
async fn main() -> Result<()> {
    let etcd = std::env::var("VOLCORE_BENCH_ETCD")
        .context("VOLCORE_BENCH_ETCD=host:port (scripts/supbench.sh starts etcd)")?;
    let n = env_or("SUPBENCH_VOLUMES", 2000);
    let slots = env_or("SUPBENCH_SLOTS", 2);
    let prefix = format!("/supbench-{}", std::process::id());
    let keys = Keys::new(&prefix)?;
    let etcd_kv: Arc<dyn KvStore> = Arc::new(EtcdKv::connect(EtcdConfig::new([etcd])).await?);
    let counting = CountingKv::new(etcd_kv);
    let kv: Arc<dyn KvStore> = Arc::new(counting.clone());
    let global = GlobalConfig::default();
    kv.put(&keys.global(), global.to_json(), PutOpts::default())
        .await?;
    let drivers = Drivers::new().with_null();
    let keeper = LeaseKeeper::start(kv.clone(), global.ttl).await?;
    let (_g, grx) = watch::channel(global);
    let engine = Volumes::new(
        kv.clone(),
        keys.clone(),
        drivers,
        HostName::new("supbench")?,
        keeper.subscribe(),
        grx,
    );
    let policy = PolicyName::new("sched")?;
    engine
        .upload_policy(
            &policy,
            br#"{"backend":"null","runtime":{"snapshots":true,"snapshot":{"frequency":"1m","keep":3}}}"#,
        )
        .await?;
    let t = Instant::now();
    // Creates in parallel batches (the engine's own path: two transactions each).
    let names: Vec<VolumeRef> = (0..n)
        .map(|i| VolumeRef::parse(&format!("sched/v{i:05}")))
        .collect::<Result<_, _>>()?;
    let no_options = Default::default();
    for chunk in names.chunks(64) {
        futures::future::try_join_all(chunk.iter().map(|v| engine.create(v, &no_options))).await?;
    }
    println!("created {n} volumes in {:.1} s", t.elapsed().as_secs_f64());
    let catalog = Arc::new(Catalog::start(kv.clone(), keys.clone()));
    catalog.wait_ready().await;
    let cfg = SupervisorConfig::new(HostName::new("supbench")?, "bench");
    let sup = Supervisor::start(engine.clone(), catalog, keeper.subscribe(), cfg);
    let mut role = sup.role();
    tokio::time::timeout(
        Duration::from_secs(10),
        role.wait_for(|r| matches!(r, Role::Leader { .. })),
    )
    .await
    .context("the supervisor did not lead")??;
    // The first slot after start may be taken late (the volumes' creation slot is due at
    // once): measure the next `slots` full slots.
    let mut slot = next_slot(SystemTime::now(), Duration::from_secs(60));
    tokio::time::sleep(slot.duration_since(SystemTime::now()).unwrap_or_default()).await;
    slot = next_slot(SystemTime::now(), Duration::from_secs(60));
    println!("supervisor: {n} volumes, frequency 1m, keep 3, null backend, etcd on loopback");
    for _ in 0..slots {
        let wait = slot.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::sleep(wait).await;
        counting.take();
        let (cpu0, _) = cpu_and_rss();
        let slot_ms = unix_millis(slot);
        let deadline = Instant::now() + Duration::from_secs(55);
        let s = loop {
            let st = sup.stats();
            if let Some(s) = st.slots.iter().find(|s| s.slot_ms == slot_ms) {
                if s.started as usize >= n {
                    break s.clone();
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "slot {slot_ms}: only {:?} of {n} snapshots after 55 s",
                    st.slots.last()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let calls = counting.take();
        let (cpu1, rss) = cpu_and_rss();
        let st = sup.stats();
        println!(
            "  slot {}: {} snapshots; last started {:.2} s after the slot, last done {:.2} s; CPU {:.2} s; RSS {} KiB",
            humantime::format_rfc3339_seconds(slot),
            s.started,
            s.last_start_late_ms as f64 / 1e3,
            s.last_done_late_ms as f64 / 1e3,
            cpu1 - cpu0,
            rss
        );
        println!(
            "    store round trips: {} ({:.2} per volume: txn {}, get {}, list {}, put {}, delete {}); failed so far {}, pruned so far {}",
            calls.total(),
            calls.total() as f64 / n as f64,
            calls.txn,
            calls.get,
            calls.list,
            calls.put,
            calls.delete,
            st.failed,
            st.pruned
        );
        slot += Duration::from_secs(60);
    }
    sup.shutdown(Duration::from_secs(5)).await;
    // The etcd is a throw-away one (scripts/supbench.sh): nothing to clean up.
    keeper.shutdown().await;
    Ok(())
}
