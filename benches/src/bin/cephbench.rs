//! The Ceph RBD driver's operations against a real cluster (`VOLCORE_BENCH_CEPH` = its
//! ceph.conf; `scripts/cephbench.sh` starts one), with the fuse attach strategy: wall
//! time of each operation (median of N rounds) and how many processes it spawns, by
//! program. Run as root.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_trait::async_trait;
use volcore::driver::{mount_path, MountDriver, VolumeDriver, VolumeSpec};
use volcore::exec::{Cmd, Exec, ExecError, Output, SystemExec};
use volcore::policy::MkfsTemplate;
use volcore::{HostName, Size, SnapshotName, VolumeRef};
use volcore_ceph::{Attach, CephConfig, RbdDriver};

/// Counts the processes each operation spawns.
#[derive(Debug, Default)]
struct Counting {
    calls: Mutex<Vec<String>>,
}

#[async_trait]
impl Exec for Counting {
    async fn run(&self, cmd: &Cmd) -> Result<Output, ExecError> {
        let prog = if cmd.program == "sh" {
            "sh (mkfs)".to_owned()
        } else {
            cmd.program.clone()
        };
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(prog);
        SystemExec.run(cmd).await
    }
}

impl Counting {
    fn take(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for c in self
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            *m.entry(c).or_insert(0) += 1;
        }
        m
    }
}

#[derive(Default)]
struct Row {
    times: Vec<Duration>,
    procs: BTreeMap<String, usize>,
    rounds: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    let conf = std::env::var("VOLCORE_BENCH_CEPH")
        .context("VOLCORE_BENCH_CEPH (a ceph.conf) is not set; run scripts/cephbench.sh")?;
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let state = tempfile_dir()?;
    let mut cfg = CephConfig::new(state.join("state"));
    cfg.conf = Some(conf.into());
    cfg.attach = Attach::Fuse;
    let exec = Arc::new(Counting::default());
    let d = RbdDriver::new(cfg, exec.clone())?;
    let host = HostName::new("bench")?;
    let mut rows: BTreeMap<&'static str, Row> = BTreeMap::new();
    let order = [
        "create+format",
        "claim (rbd lock)",
        "mount",
        "unmount",
        "release (rbd lock)",
        "snapshot",
        "clone",
        "destroy (clone)",
        "destroy (with snapshot)",
    ];
    for i in 0..rounds {
        let spec = VolumeSpec {
            volume: VolumeRef::parse(&format!("bench/v{}-{i}", std::process::id()))?,
            size: Size::from_bytes(256 << 20),
            filesystem: "ext4".into(),
            mkfs: Some(MkfsTemplate::new("ext4", "mkfs.ext4 -q -F -m0 %")?),
            params: BTreeMap::from([("pool".to_owned(), "rbd".to_owned())]),
            source: None,
            timeout: Duration::from_secs(60),
        };
        let mut clone = spec.clone();
        clone.volume = VolumeRef::parse(&format!("bench/c{}-{i}", std::process::id()))?;
        let at = mount_path(&state.join("mnt"), &spec.volume);
        let snap = SnapshotName::new("s1")?;
        let sd = d.snapshots().context("snapshots")?;
        macro_rules! step {
            ($name:expr, $e:expr) => {{
                let t = Instant::now();
                $e.await.with_context(|| $name)?;
                let r = rows.entry($name).or_default();
                r.times.push(t.elapsed());
                r.rounds += 1;
                for (k, v) in exec.take() {
                    *r.procs.entry(k).or_insert(0) += v;
                }
            }};
        }
        step!("create+format", async {
            d.create(&spec).await?;
            d.format(&spec).await
        });
        step!("claim (rbd lock)", async {
            d.claim(&spec, &host).await.map(|_| ())
        });
        step!("mount", async { d.mount(&spec, &at).await.map(|_| ()) });
        step!("unmount", d.unmount(&spec, &at));
        step!("release (rbd lock)", d.release(&spec, &host));
        step!("snapshot", sd.create_snapshot(&spec, &snap));
        step!("clone", sd.copy_snapshot(&spec, &snap, &clone));
        step!("destroy (clone)", d.destroy(&clone));
        step!("destroy (with snapshot)", d.destroy(&spec));
    }
    println!("RBD driver, fuse attach, {rounds} rounds, 256 MiB ext4 volumes (median wall time; processes per operation)");
    println!("{:<26} {:>10}  processes", "operation", "median");
    for name in order {
        let Some(r) = rows.get_mut(name) else {
            continue;
        };
        r.times.sort();
        let med = r.times[r.times.len() / 2];
        let procs: Vec<String> = r
            .procs
            .iter()
            .map(|(k, v)| {
                let per = *v as f64 / r.rounds as f64;
                format!("{k} ×{per}")
            })
            .collect();
        println!(
            "{name:<26} {:>8.1}ms  {}",
            med.as_secs_f64() * 1000.0,
            procs.join(", ")
        );
    }
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let p = std::env::temp_dir().join(format!("cephbench-{}", std::process::id()));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}
