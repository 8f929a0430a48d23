//! The RBD driver against a real one-node Ceph cluster (`VOLCORE_TEST_CEPH` = its
//! ceph.conf; scripts/test starts one with scripts/ceph.sh), attached with the fuse
//! strategy (rbd-fuse + loop), as this machine has no rbd or nbd kernel module. Needs
//! root. Without a cluster these tests fail; they never skip.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use volcore::driver::{mount_path, DriverError, MountDriver, VolumeDriver, VolumeSpec};
use volcore::exec::{Cmd, Exec, SystemExec};
use volcore::policy::MkfsTemplate;
use volcore::testing::driver_suite::DriverCtx;
use volcore::{HostName, Size, VolumeRef};
use volcore_ceph::{Attach, CephConfig, RbdDriver};

fn conf() -> PathBuf {
    let c = std::env::var("VOLCORE_TEST_CEPH").unwrap_or_else(|_| {
        panic!("VOLCORE_TEST_CEPH is not set: run scripts/test, which starts a one-node Ceph cluster (scripts/ceph.sh) and sets it to its ceph.conf")
    });
    PathBuf::from(c)
}

fn base(tag: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("ceph-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn cfg(tag: &str) -> CephConfig {
    let mut c = CephConfig::new(base(tag).join("state"));
    c.conf = Some(conf());
    c.attach = Attach::Fuse;
    c
}

fn driver_at(tag: &str) -> RbdDriver {
    RbdDriver::new(cfg(tag), Arc::new(SystemExec)).unwrap()
}

fn driver() -> Arc<dyn VolumeDriver> {
    Arc::new(driver_at("suite"))
}

fn params() -> BTreeMap<String, String> {
    BTreeMap::from([("pool".to_owned(), "rbd".to_owned())])
}

fn ctx(fs: &str) -> DriverCtx {
    DriverCtx {
        mount_root: base("suite").join("mnt"),
        filesystem: fs.into(),
        real_io: true,
        params: params(),
    }
}

volcore::driver_conformance!(fuse_ext4, driver(), ctx("ext4"));
volcore::driver_conformance!(@cases driver(), ctx("xfs"); data_survives_remount);

fn spec(tag: &str) -> VolumeSpec {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    VolumeSpec {
        volume: VolumeRef::parse(&format!("ceph{}/{tag}-{n}", std::process::id())).unwrap(),
        size: Size::from_bytes(64 << 20),
        filesystem: "ext4".into(),
        mkfs: Some(MkfsTemplate::new("ext4", "mkfs.ext4 -q -F -m0 %").unwrap()),
        params: params(),
        source: None,
        timeout: Duration::from_secs(60),
    }
}

async fn rbd(args: &[&str]) -> volcore::exec::Output {
    let mut a = vec!["-c".to_owned(), conf().display().to_string()];
    a.extend(args.iter().map(|s| (*s).to_owned()));
    SystemExec
        .run(&Cmd::new("rbd", a, Duration::from_secs(60)))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_names_the_watcher_of_an_attached_image() {
    let d = driver_at("watch");
    let s = spec("watch");
    d.create(&s).await.unwrap();
    d.format(&s).await.unwrap();
    let at = mount_path(&base("watch").join("mnt"), &s.volume);
    d.mount(&s, &at).await.unwrap();
    let e = d.destroy(&s).await.unwrap_err();
    assert!(
        matches!(&e, DriverError::Busy { detail, .. } if detail.contains("it is open by client.")),
        "{e}"
    );
    d.unmount(&s, &at).await.unwrap();
    d.destroy(&s).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_pool_is_a_clear_error() {
    let d = driver_at("pool");
    let mut s = spec("pool");
    s.params.insert("pool".into(), "no-such-pool".into());
    let e = d.create(&s).await.unwrap_err();
    assert!(
        matches!(&e, DriverError::Invalid(m) if m.contains("'no-such-pool'") && m.contains("ceph osd pool create")),
        "{e}"
    );
}

/// Ceph's own trap: `rbd rm` of an exclusive-lock image that carries an advisory lock
/// spins for ever. The driver's timeout kills it and says so; the image is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_rbd_is_killed_at_its_timeout() {
    let d = driver_at("hang");
    let mut s = spec("hang");
    s.params
        .insert("features".into(), "layering,exclusive-lock".into());
    d.create(&s).await.unwrap();
    let img = format!("rbd/{}", volcore_ceph::image_name(&s.volume));
    assert!(rbd(&["lock", "add", &img, "manual"]).await.success());
    // Through the driver, destroy refuses the locked image up front…
    let e = d.destroy(&s).await.unwrap_err();
    assert!(
        matches!(&e, DriverError::Busy { detail, .. } if detail.contains("locked by manual")),
        "{e}"
    );
    // Changing it is refused as locked by another client (rbd says EROFS).
    let e = d.resize(&s, Size::from_bytes(128 << 20)).await.unwrap_err();
    assert!(
        matches!(&e, DriverError::Busy { detail, .. } if detail.contains("locked by another client")),
        "{e}"
    );
    // …and a hanging rbd call is killed at its timeout: run the raw `rbd rm` through the
    // same exec path the driver uses.
    let start = Instant::now();
    let r = SystemExec
        .run(&Cmd::new(
            "rbd",
            [
                "-c".to_owned(),
                conf().display().to_string(),
                "rm".to_owned(),
                "--no-progress".to_owned(),
                img.clone(),
            ],
            Duration::from_secs(2),
        ))
        .await;
    assert!(
        matches!(r, Err(volcore::exec::ExecError::Timeout { .. })),
        "{r:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(d.exists(&s).await.unwrap());
    let l = rbd(&["lock", "ls", "--format", "json", &img]).await;
    let locker: serde_json::Value = serde_json::from_str(&l.stdout).unwrap();
    let who = locker[0]["locker"].as_str().unwrap().to_owned();
    assert!(rbd(&["lock", "rm", &img, "manual", &who]).await.success());
    // The killed client's watch lingers until the OSD times it out (30 s): meanwhile
    // destroy is refused as busy, naming it.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match d.destroy(&s).await {
            Ok(()) => break,
            Err(DriverError::Busy { detail, .. }) if Instant::now() < until => {
                assert!(detail.contains("it is open by client."), "{detail}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => panic!("destroy after the killed rm: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_grows_the_image() {
    let d = driver_at("resize");
    let s = spec("resize");
    d.create(&s).await.unwrap();
    d.resize(&s, Size::from_bytes(128 << 20)).await.unwrap();
    let img = format!("rbd/{}", volcore_ceph::image_name(&s.volume));
    let info: serde_json::Value =
        serde_json::from_str(&rbd(&["info", "--format", "json", &img]).await.stdout).unwrap();
    assert_eq!(info["size"], 128u64 << 20);
    let e = d.resize(&s, Size::from_bytes(32 << 20)).await.unwrap_err();
    assert!(e.to_string().contains("can only grow"), "{e}");
    d.destroy(&s).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flattened_copy_outlives_its_source() {
    let d = driver_at("flat");
    let sd = volcore::driver::VolumeDriver::snapshots(&d).unwrap();
    let s = spec("flat");
    d.create(&s).await.unwrap();
    d.format(&s).await.unwrap();
    let snap = volcore::SnapshotName::new("s1").unwrap();
    sd.create_snapshot(&s, &snap).await.unwrap();
    let mut to = spec("flatcopy");
    to.params.insert("flatten".into(), "true".into());
    sd.copy_snapshot(&s, &snap, &to).await.unwrap();
    // Flattened: the source (with its snapshots) can go first.
    d.destroy(&s).await.unwrap();
    let at = mount_path(&base("flat").join("mnt"), &to.volume);
    d.mount(&to, &at).await.unwrap();
    d.unmount(&to, &at).await.unwrap();
    d.destroy(&to).await.unwrap();
}

/// Item 4's fence: host A mounts (and locks) a volume and then loses it — its lease
/// expired, so host B claims it. B breaks A's RBD lock and blocklists A's client; A's
/// writes fail from then on; B mounts and sees A's data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_fences_the_old_client() {
    let a = driver_at("fence-a");
    let b = driver_at("fence-b");
    let ha = HostName::new("host-a").unwrap();
    let hb = HostName::new("host-b").unwrap();
    let s = spec("fence");
    a.create(&s).await.unwrap();
    a.format(&s).await.unwrap();
    assert!(a.claim(&s, &ha).await.unwrap().is_empty());
    let at_a = mount_path(&base("fence-a").join("mnt"), &s.volume);
    a.mount(&s, &at_a).await.unwrap();
    {
        let mut f = std::fs::File::create(at_a.join("before.txt")).unwrap();
        f.write_all(b"written by host-a").unwrap();
        f.sync_all().unwrap();
    }
    // Re-claiming our own lock (a restarted plugin) fences nobody.
    assert!(a.claim(&s, &ha).await.unwrap().is_empty());

    let fenced = b.claim(&s, &hb).await.unwrap();
    assert_eq!(fenced.len(), 1, "{fenced:?}");
    assert_eq!(fenced[0].holder, "host-a");
    assert!(fenced[0].clients.len() >= 2, "{fenced:?}");

    // host-a's client is blocklisted: its writes fail.
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(at_a.join("after.txt"))?;
        f.write_all(&[7u8; 1 << 16])?;
        f.sync_all()
    })();
    assert!(res.is_err(), "a fenced host could still write");

    let at_b = mount_path(&base("fence-b").join("mnt"), &s.volume);
    b.mount(&s, &at_b).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(at_b.join("before.txt")).unwrap(),
        "written by host-a"
    );
    assert!(!at_b.join("after.txt").exists());
    // host-a cleans up after itself (its rbd-fuse may no longer answer: it is killed).
    a.unmount(&s, &at_a).await.unwrap();
    b.unmount(&s, &at_b).await.unwrap();
    b.release(&s, &hb).await.unwrap();
    let img = format!("rbd/{}", volcore_ceph::image_name(&s.volume));
    let locks = rbd(&["lock", "ls", "--format", "json", &img]).await;
    assert_eq!(locks.stdout.trim(), "[]");
    b.destroy(&s).await.unwrap();
}

/// Runs real commands, except that the first `ceph osd blocklist add` fails (the monitor
/// unreachable at that moment).
#[derive(Debug, Default)]
struct FirstFenceFails(std::sync::atomic::AtomicBool);

#[async_trait::async_trait]
impl Exec for FirstFenceFails {
    async fn run(&self, cmd: &Cmd) -> Result<volcore::exec::Output, volcore::exec::ExecError> {
        if cmd.program == "ceph"
            && cmd.args.iter().any(|a| a == "blocklist")
            && !self.0.swap(true, Ordering::SeqCst)
        {
            return Ok(volcore::exec::Output {
                status: 110,
                stdout: String::new(),
                stderr: "error connecting to the cluster".into(),
            });
        }
        SystemExec.run(cmd).await
    }
}

/// Hole 2a on the real cluster: host B's takeover fails at the fence; meanwhile host A's
/// RBD lock gets broken without a blocklist (what the old claim order left behind when it
/// died between the two). B's retry — whose `rbd lock add` now succeeds at once — still
/// fences A's open client before it treats the volume as its own: A's writes fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fence_then_retry_still_fences_the_old_client() {
    let a = driver_at("refence-a");
    let b = RbdDriver::new(cfg("refence-b"), Arc::new(FirstFenceFails::default())).unwrap();
    let ha = HostName::new("host-a").unwrap();
    let hb = HostName::new("host-b").unwrap();
    let s = spec("refence");
    a.create(&s).await.unwrap();
    a.format(&s).await.unwrap();
    assert!(a.claim(&s, &ha).await.unwrap().is_empty());
    let at_a = mount_path(&base("refence-a").join("mnt"), &s.volume);
    a.mount(&s, &at_a).await.unwrap();
    {
        let mut f = std::fs::File::create(at_a.join("before.txt")).unwrap();
        f.write_all(b"written by host-a").unwrap();
        f.sync_all().unwrap();
    }
    // First try: the fence fails; nothing is broken and B holds no lock.
    let e = b.claim(&s, &hb).await.unwrap_err();
    assert!(e.to_string().contains("fence"), "{e}");
    let img = format!("rbd/{}", volcore_ceph::image_name(&s.volume));
    let locks = rbd(&["lock", "ls", "--format", "json", &img]).await;
    assert!(locks.stdout.contains("volcore:host-a"), "{}", locks.stdout);
    // Someone breaks A's lock without fencing it (the half-done takeover of old).
    let ls: Vec<serde_json::Value> = serde_json::from_str(&locks.stdout).unwrap();
    let locker = ls[0]["locker"].as_str().unwrap().to_owned();
    let rm = rbd(&[
        "--rbd_blocklist_on_break_lock=false",
        "lock",
        "rm",
        &img,
        "volcore:host-a",
        &locker,
    ])
    .await;
    assert!(rm.success(), "{}", rm.stderr);
    // The retry: lock add succeeds at once, and A's open client is fenced anyway.
    let fenced = b.claim(&s, &hb).await.unwrap();
    assert!(
        !fenced.is_empty() && !fenced[0].clients.is_empty(),
        "{fenced:?}"
    );
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(at_a.join("after.txt"))?;
        f.write_all(&[7u8; 1 << 16])?;
        f.sync_all()
    })();
    assert!(
        res.is_err(),
        "the old host could still write after the takeover"
    );
    let at_b = mount_path(&base("refence-b").join("mnt"), &s.volume);
    b.mount(&s, &at_b).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(at_b.join("before.txt")).unwrap(),
        "written by host-a"
    );
    a.unmount(&s, &at_a).await.unwrap();
    b.unmount(&s, &at_b).await.unwrap();
    b.release(&s, &hb).await.unwrap();
    b.destroy(&s).await.unwrap();
}

/// `check` on a real cluster: an image a create left (no record) is found with its pool
/// and destroyed by the repair; a volume with a record is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_finds_and_destroys_an_orphan_image() {
    use volcore::{Drivers, GlobalConfig, HostName, Keys, KvStore, LeaseKeeper, MemKv};
    let d = Arc::new(driver_at("check"));
    // A policy of its own: the other tests' images (same process, other policy) must not
    // look like this store's leftovers.
    let mut orphan = spec("orphan");
    orphan.volume = VolumeRef::parse(&format!("chk{}/orphan", std::process::id())).unwrap();
    d.create(&orphan).await.unwrap();
    let inv = d.inventory().await.unwrap().unwrap();
    let found = inv.iter().find(|s| s.volume == orphan.volume).unwrap();
    assert_eq!(found.params.get("pool").map(String::as_str), Some("rbd"));
    let kv: Arc<dyn KvStore> = Arc::new(MemKv::new());
    let keeper = LeaseKeeper::start(kv.clone(), Duration::from_secs(30))
        .await
        .unwrap();
    let (_tx, grx) = tokio::sync::watch::channel(GlobalConfig {
        timeout: Duration::from_secs(60),
        ..GlobalConfig::default()
    });
    let engine = volcore::Volumes::new(
        kv,
        Keys::default(),
        Drivers::new().with(d.clone()),
        HostName::new("m").unwrap(),
        keeper.subscribe(),
        grx,
    );
    engine
        .upload_policy(
            &orphan.volume.policy,
            br#"{"backend":"ceph","driver":{"pool":"rbd"},"create":{"size":"64MiB"}}"#,
        )
        .await
        .unwrap();
    let kept = volcore::VolumeRef::new(
        orphan.volume.policy.clone(),
        volcore::VolumeName::new("kept").unwrap(),
    );
    engine.create(&kept, &BTreeMap::new()).await.unwrap();
    let r = engine.check(true).await.unwrap();
    let mine: Vec<_> = r
        .findings
        .iter()
        .filter(|f| {
            f.volume
                .as_ref()
                .is_some_and(|v| v.policy == orphan.volume.policy)
        })
        .collect();
    assert_eq!(mine.len(), 1, "{}", r.render());
    assert_eq!(mine[0].kind, volcore::FindingKind::OrphanStorage);
    assert_eq!(
        mine[0].outcome,
        Some(volcore::Outcome::Repaired),
        "{}",
        r.render()
    );
    assert!(
        !d.exists(&orphan).await.unwrap(),
        "the orphan image is still there"
    );
    engine.remove(&kept, false, None).await.unwrap();
}
