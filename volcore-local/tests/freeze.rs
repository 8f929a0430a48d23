//! Snapshots of a mounted volume freeze its filesystem; whatever happens to the copy — it
//! hangs, the request is cancelled, the process dies — the filesystem is thawed again, so
//! writers never hang for good. Real loop devices, ext4 and fsfreeze; needs root.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use volcore::driver::{MountDriver, SnapshotDriver, VolumeDriver, VolumeSpec};
use volcore::exec::{Cmd, Exec, ExecError, Output, SystemExec};
use volcore::policy::MkfsTemplate;
use volcore::{Size, SnapshotName, VolumeRef};
use volcore_local::LocalDriver;

/// Runs real commands, except that `cp` (the snapshot copy) never finishes.
#[derive(Debug)]
struct StallingCopy;

#[async_trait]
impl Exec for StallingCopy {
    async fn run(&self, cmd: &Cmd) -> Result<Output, ExecError> {
        if cmd.program == "cp" {
            std::future::pending::<()>().await;
        }
        SystemExec.run(cmd).await
    }
}

fn base(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("freeze-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn spec(v: &str) -> VolumeSpec {
    VolumeSpec {
        volume: VolumeRef::parse(v).unwrap(),
        size: Size::from_bytes(64 << 20),
        filesystem: "ext4".into(),
        mkfs: Some(MkfsTemplate::new("ext4", "mkfs.ext4 -q -m0 %").unwrap()),
        params: BTreeMap::new(),
        source: None,
        timeout: Duration::from_secs(30),
    }
}

/// Writes a file on `dir` within 5 s, or thaws the filesystem by hand (so the test does
/// not leave a frozen mount behind) and fails.
async fn assert_writable(dir: &Path) {
    let f = dir.join("after-snapshot");
    let w = tokio::task::spawn_blocking(move || std::fs::write(f, b"still writable"));
    if tokio::time::timeout(Duration::from_secs(5), w)
        .await
        .is_err()
    {
        let _ = std::process::Command::new("fsfreeze")
            .args(["--unfreeze", &dir.display().to_string()])
            .status();
        panic!("{} is still frozen: writers hang", dir.display());
    }
}

async fn mounted(name: &str) -> (LocalDriver, VolumeSpec, PathBuf, PathBuf) {
    let b = base(name);
    let d = LocalDriver::new(b.join("state"), Arc::new(StallingCopy)).unwrap();
    let s = spec(&format!("p/{name}"));
    d.create(&s).await.unwrap();
    d.format(&s).await.unwrap();
    let at = b.join("mnt");
    d.mount(&s, &at).await.unwrap();
    (d, s, at, b)
}

async fn cleanup(d: &LocalDriver, s: &VolumeSpec, at: &Path) {
    d.unmount(s, at).await.unwrap();
    d.destroy(s).await.unwrap();
}

/// The engine's timeout (or a client going away) drops the snapshot while the frozen
/// filesystem is being copied: it is thawed anyway (before: it stayed frozen for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_snapshot_thaws_the_filesystem() {
    let (d, s, at, _b) = mounted("cancelled").await;
    let snap = SnapshotName::new("s1").unwrap();
    let r = tokio::time::timeout(Duration::from_secs(1), d.create_snapshot(&s, &snap)).await;
    assert!(r.is_err(), "the stalled copy finished?");
    assert_writable(&at).await;
    assert!(d.list_snapshots(&s).await.unwrap().is_empty());
    cleanup(&d, &s, &at).await;
}

/// A copy slower than the freeze bound fails with a timeout, and the filesystem is thawed
/// when the bound passes — not when the (much longer) command timeout would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_frozen_window_has_its_own_bound() {
    let (d, s, at, _b) = mounted("bounded").await;
    let d = d.with_freeze_limit(Duration::from_millis(800));
    let snap = SnapshotName::new("s1").unwrap();
    let start = std::time::Instant::now();
    let e = d.create_snapshot(&s, &snap).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(e.to_string().contains("frozen"), "{e}");
    assert_writable(&at).await;
    cleanup(&d, &s, &at).await;
}

/// The process dies with the filesystem frozen (the snapshot future is never dropped
/// properly): a driver started on the same state directory thaws it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_thaws_what_it_froze_before_a_crash() {
    let (d, s, at, b) = mounted("crashed").await;
    let snap = SnapshotName::new("s1").unwrap();
    let mut fut = Box::pin(d.create_snapshot(&s, &snap));
    // Poll until the filesystem is frozen, then "crash": forget the future.
    let _ = tokio::time::timeout(Duration::from_secs(1), &mut fut).await;
    std::mem::forget(fut);
    let restarted = LocalDriver::new(b.join("state"), Arc::new(SystemExec)).unwrap();
    restarted.recover().await.unwrap();
    assert_writable(&at).await;
    cleanup(&restarted, &s, &at).await;
}
