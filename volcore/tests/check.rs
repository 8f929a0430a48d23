//! `check` and its repair: each leftover a crash can leave is staged in the store or the
//! storage exactly as the crash leaves it, found by kind, repaired, and then gone; and a
//! repair never touches what a live operation holds.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use volcore::policy::BackendKind;
use volcore::testing::FakeDriver;
use volcore::{
    Drivers, FindingKind, GlobalConfig, HostMounts, HostName, Keys, KvStore, LeaseKeeper,
    LeaseLossAction, LockKind, LockReason, LockRequest, Locker, MemKv, MountDriver, MountsConfig,
    MountsDeps, Outcome, PolicyName, PutOpts, VolumeDriver, VolumeRef, VolumeSpec, Volumes,
};

fn vref(s: &str) -> VolumeRef {
    VolumeRef::parse(s).unwrap()
}

fn host(s: &str) -> HostName {
    HostName::new(s).unwrap()
}

fn global() -> GlobalConfig {
    GlobalConfig {
        timeout: Duration::from_secs(2),
        ttl: Duration::from_secs(30),
        mount_path: PathBuf::from("/mnt/test"),
        debug: false,
        mkfs_programs: Vec::new(),
    }
}

struct Env {
    kv: Arc<dyn KvStore>,
    fake: FakeDriver,
    engine: Volumes,
    keeper: LeaseKeeper,
    _gtx: watch::Sender<GlobalConfig>,
}

async fn env() -> Env {
    let kv: Arc<dyn KvStore> = Arc::new(MemKv::new());
    let fake = FakeDriver::new(BackendKind::Local);
    let keeper = LeaseKeeper::start(kv.clone(), Duration::from_secs(30))
        .await
        .unwrap();
    let (gtx, grx) = watch::channel(global());
    let engine = Volumes::new(
        kv.clone(),
        Keys::default(),
        Drivers::new().with(Arc::new(fake.clone())),
        host("master-1"),
        keeper.subscribe(),
        grx,
    );
    engine
        .upload_policy(
            &PolicyName::new("p").unwrap(),
            br#"{"backend":"local","create":{"size":"10MB"}}"#,
        )
        .await
        .unwrap();
    Env {
        kv,
        fake,
        engine,
        keeper,
        _gtx: gtx,
    }
}

fn spec(v: &VolumeRef) -> VolumeSpec {
    VolumeSpec {
        volume: v.clone(),
        size: volcore::Size::from_bytes(10_000_000),
        filesystem: "ext4".into(),
        mkfs: None,
        params: BTreeMap::new(),
        source: None,
        timeout: Duration::from_secs(2),
    }
}

fn kinds(r: &volcore::CheckReport) -> Vec<(FindingKind, String)> {
    r.findings
        .iter()
        .map(|f| {
            (
                f.kind,
                f.volume
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            )
        })
        .collect()
}

/// Storage a create made before it died, and a record whose storage a remove destroyed
/// before it died: found, repaired, gone; a healthy volume is left alone.
#[tokio::test]
async fn storage_and_records_out_of_step_are_found_and_repaired() {
    let e = env().await;
    e.engine
        .create(&vref("p/healthy"), &BTreeMap::new())
        .await
        .unwrap();
    // A create killed after the storage was made: storage, no record.
    e.fake.create(&spec(&vref("p/orphan"))).await.unwrap();
    // A remove killed after destroy: record, no storage.
    e.engine
        .create(&vref("p/lost"), &BTreeMap::new())
        .await
        .unwrap();
    e.fake.destroy(&spec(&vref("p/lost"))).await.unwrap();

    let dry = e.engine.check(false).await.unwrap();
    assert_eq!(
        kinds(&dry),
        vec![
            (FindingKind::OrphanStorage, "p/orphan".into()),
            (FindingKind::MissingStorage, "p/lost".into()),
        ],
        "{}",
        dry.render()
    );
    assert!(dry.findings.iter().all(|f| f.outcome.is_none()));
    // A dry run changed nothing.
    assert!(e.fake.volumes().contains(&vref("p/orphan")));
    assert!(e.engine.get(&vref("p/lost")).await.is_ok());

    let fixed = e.engine.check(true).await.unwrap();
    assert!(
        fixed
            .findings
            .iter()
            .all(|f| f.outcome == Some(Outcome::Repaired)),
        "{}",
        fixed.render()
    );
    assert!(!e.fake.volumes().contains(&vref("p/orphan")));
    assert!(e.engine.get(&vref("p/lost")).await.is_err());
    assert!(e.fake.volumes().contains(&vref("p/healthy")));
    let after = e.engine.check(false).await.unwrap();
    assert!(after.is_clean(), "{}", after.render());
    // Both names are usable again.
    for v in ["p/orphan", "p/lost"] {
        e.engine.create(&vref(v), &BTreeMap::new()).await.unwrap();
    }
    assert!(e.engine.check(false).await.unwrap().is_clean());
}

/// Storage of a create that is still running (its locks are held) is not a leftover,
/// and a repair that races with such an operation skips instead of destroying it.
#[tokio::test]
async fn an_operation_in_progress_is_left_alone() {
    let e = env().await;
    let v = vref("p/busy");
    let locker = Locker::new(e.kv.clone(), Keys::default(), host("master-2"));
    let lease = e.kv.lease_grant(Duration::from_secs(30)).await.unwrap();
    let held = locker
        .acquire(
            &[LockRequest::new(
                LockKind::Op,
                v.clone(),
                LockReason::Create,
            )],
            &lease,
            Duration::ZERO,
        )
        .await
        .unwrap();
    e.fake.create(&spec(&v)).await.unwrap();
    let r = e.engine.check(true).await.unwrap();
    assert!(r.is_clean(), "{}", r.render());
    assert!(e.fake.volumes().contains(&v));
    locker.release(&held).await.unwrap();
    // Without the lock it is a leftover.
    let r = e.engine.check(false).await.unwrap();
    assert_eq!(
        kinds(&r),
        vec![(FindingKind::OrphanStorage, "p/busy".into())]
    );
}

/// Locks and mount records of a plugin process that is gone, and keys of a removed
/// volume.
#[tokio::test]
async fn store_leftovers_of_dead_processes_are_found_and_repaired() {
    let e = env().await;
    let keys = Keys::default();
    let v = vref("p/v");
    e.engine.create(&v, &BTreeMap::new()).await.unwrap();
    // A plugin lock naming a host id whose host has no live record.
    let dead = Locker::new(e.kv.clone(), keys.clone(), host("gone"))
        .with_owner("volplugin:gone")
        .with_identity("id-gone", "inst-1");
    let lease = e.kv.lease_grant(Duration::from_secs(30)).await.unwrap();
    dead.acquire(
        &[LockRequest::new(
            LockKind::Mount,
            v.clone(),
            LockReason::Mount,
        )],
        &lease,
        Duration::ZERO,
    )
    .await
    .unwrap();
    // Its mount record.
    e.kv.put(
        &keys.mount(&host("gone"), &v),
        br#"{"ids":["c1"],"path":"/mnt/test/p/v"}"#.to_vec(),
        PutOpts::default(),
    )
    .await
    .unwrap();
    // runtime/ and epochs/ of a volume whose record is gone.
    for k in [keys.runtime(&vref("p/old")), keys.epoch(&vref("p/old"))] {
        e.kv.put(&k, b"{}".to_vec(), PutOpts::default())
            .await
            .unwrap();
    }
    let r = e.engine.check(false).await.unwrap();
    assert_eq!(
        kinds(&r),
        vec![
            (FindingKind::StaleLock, "p/v".into()),
            (FindingKind::StaleMountRecord, "p/v".into()),
            (FindingKind::OrphanKey, "p/old".into()),
            (FindingKind::OrphanKey, "p/old".into()),
        ],
        "{}",
        r.render()
    );
    let text = r.render();
    assert!(text.contains("host gone is not running"), "{text}");
    let fixed = e.engine.check(true).await.unwrap();
    assert_eq!(fixed.remaining(), 0, "{}", fixed.render());
    assert!(e.engine.check(false).await.unwrap().is_clean());
    // The volume can be removed now that its stale lock is gone.
    e.engine
        .remove(&v, false, Some(Duration::ZERO))
        .await
        .unwrap();
}

/// A lock whose holder changed since the check is not deleted by the repair.
#[tokio::test]
async fn a_repair_deletes_only_what_the_check_saw() {
    let e = env().await;
    let keys = Keys::default();
    let v = vref("p/v");
    e.engine.create(&v, &BTreeMap::new()).await.unwrap();
    let lease = e.kv.lease_grant(Duration::from_secs(30)).await.unwrap();
    let dead =
        Locker::new(e.kv.clone(), keys.clone(), host("gone")).with_identity("id-gone", "inst-1");
    let req = [LockRequest::new(
        LockKind::Mount,
        v.clone(),
        LockReason::Mount,
    )];
    let held = dead.acquire(&req, &lease, Duration::ZERO).await.unwrap();
    let mut report = e.engine.check(false).await.unwrap();
    assert_eq!(report.findings.len(), 1);
    // Meanwhile the lock is released and taken again (a new tenure).
    dead.release(&held).await.unwrap();
    let again = dead.acquire(&req, &lease, Duration::ZERO).await.unwrap();
    e.engine.repair(&mut report).await;
    assert!(
        matches!(report.findings[0].outcome, Some(Outcome::Skipped { .. })),
        "{}",
        report.render()
    );
    let now = dead.get(LockKind::Mount, &v).await.unwrap().unwrap();
    assert_eq!(now.token, again[0].token, "the new lock was deleted");
}

async fn host_mounts(e: &Env, fake: &FakeDriver, dir: &std::path::Path) -> HostMounts {
    host_mounts_on(e.kv.clone(), e, fake, dir).await
}

async fn host_mounts_on(
    kv: Arc<dyn KvStore>,
    e: &Env,
    fake: &FakeDriver,
    dir: &std::path::Path,
) -> HostMounts {
    host_mounts_at(kv, e, fake, dir, PathBuf::from("/mnt/h1")).await
}

async fn host_mounts_at(
    kv: Arc<dyn KvStore>,
    e: &Env,
    fake: &FakeDriver,
    dir: &std::path::Path,
    root: PathBuf,
) -> HostMounts {
    let (_gtx, grx) = watch::channel(global());
    HostMounts::start(
        MountsDeps {
            kv,
            keys: Keys::default(),
            drivers: Drivers::new().with(Arc::new(fake.clone())),
            lease: e.keeper.subscribe(),
            global: grx,
        },
        MountsConfig {
            host: host("h1"),
            state_dir: dir.to_path_buf(),
            owner: "volplugin:h1".into(),
            version: "test".into(),
            mount_root: Some(root),
            on_lease_loss: LeaseLossAction::Unmount,
            throttle: None,
        },
    )
    .await
    .unwrap()
}

async fn adopted(m: &HostMounts) {
    for _ in 0..200 {
        if m.adopted() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("mounts were never adopted");
}

/// A mount that died before it published leaves a mount no record names; the plugin's
/// start-up check unmounts it (before: it stayed, writable, with no lock). A mount at
/// another host's mount point on the same machine is not touched.
#[tokio::test]
async fn an_unrecorded_mount_is_unmounted_at_start() {
    let e = env().await;
    let v = vref("p/v");
    let w = vref("p/w");
    e.engine.create(&v, &BTreeMap::new()).await.unwrap();
    e.engine.create(&w, &BTreeMap::new()).await.unwrap();
    let fake = e.fake.another_host();
    // The crashed mount: mounted at h1's mount point, no record.
    fake.mount(&spec(&v), &PathBuf::from("/mnt/h1/p/v"))
        .await
        .unwrap();
    // Another label's mount on this machine.
    fake.mount(&spec(&w), &PathBuf::from("/mnt/other/p/w"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m = host_mounts(&e, &fake, dir.path()).await;
    adopted(&m).await;
    assert_eq!(fake.mounted_volumes(), vec![w.clone()]);
    assert!(m.check(false).await.is_clean());
    // The volume mounts normally now.
    m.mount(&v, "c1").await.unwrap();
    assert!(m.check(false).await.is_clean());
    m.unmount(&v, "c1").await.unwrap();
    m.stop();
}

/// A recorded mount that stopped answering (an NFS server gone, a stale handle) is found
/// by the host's check, and `--repair` mounts it again.
#[tokio::test]
async fn a_stale_mount_is_found_and_remounted() {
    use volcore::testing::{Fault, Step};
    let e = env().await;
    let v = vref("p/v");
    e.engine.create(&v, &BTreeMap::new()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fake = e.fake.another_host();
    let m = host_mounts(&e, &fake, dir.path()).await;
    adopted(&m).await;
    m.mount(&v, "c1").await.unwrap();
    assert!(m.check(false).await.is_clean());
    fake.inject(Step::Probe, Fault::Fail("Stale file handle".into()));
    let r = m.check(false).await;
    assert_eq!(r.findings.len(), 1, "{}", r.render());
    assert_eq!(r.findings[0].kind, FindingKind::StaleMount);
    assert!(r.render().contains("Stale file handle"), "{}", r.render());
    let mounts_before = fake
        .calls()
        .iter()
        .filter(|c| c.starts_with("mount "))
        .count();
    let r = m.check(true).await;
    assert_eq!(
        r.findings[0].outcome,
        Some(volcore::Outcome::Repaired),
        "{}",
        r.render()
    );
    let mounts_after = fake
        .calls()
        .iter()
        .filter(|c| c.starts_with("mount "))
        .count();
    assert_eq!(mounts_after, mounts_before + 1, "repair mounts it again");
    fake.heal();
    assert!(m.check(false).await.is_clean());
    m.unmount(&v, "c1").await.unwrap();
    m.stop();
}

/// On demand: a mount that vanished under a running plugin (unmounted by hand) is found
/// as a missing mount and its record and lock are dropped.
#[tokio::test]
async fn a_vanished_mount_is_found_on_demand() {
    let e = env().await;
    let v = vref("p/v");
    e.engine.create(&v, &BTreeMap::new()).await.unwrap();
    let fake = e.fake.another_host();
    let dir = tempfile::tempdir().unwrap();
    let m = host_mounts(&e, &fake, dir.path()).await;
    adopted(&m).await;
    let at = m.mount(&v, "c1").await.unwrap();
    fake.unmount(&spec(&v), &at).await.unwrap();
    let r = m.check(false).await;
    assert_eq!(kinds(&r), vec![(FindingKind::MissingMount, "p/v".into())]);
    // The host reports it; the cluster check shows it, for the host to repair.
    let c = e.engine.check(true).await.unwrap();
    assert_eq!(kinds(&c), vec![(FindingKind::MissingMount, "p/v".into())]);
    assert_eq!(c.findings[0].host, Some(host("h1")));
    assert!(!c.findings[0].repairable);
    assert!(c.findings[0].fix.contains("on host h1"), "{}", c.render());
    assert_eq!(c.remaining(), 1);
    let r = m.check(true).await;
    assert_eq!(r.remaining(), 0);
    assert!(m.mounted(&v).is_none());
    let keys = Keys::default();
    assert!(e
        .kv
        .get(&keys.mount(&host("h1"), &v))
        .await
        .unwrap()
        .is_none());
    assert!(e
        .kv
        .get(&keys.lock(LockKind::Mount, &v))
        .await
        .unwrap()
        .is_none());
    assert!(e.engine.check(false).await.unwrap().is_clean());
    m.stop();
}

/// A create whose format fails, and one whose storage call fails, leave nothing a check
/// finds (before: their mount lock's epoch key stayed behind).
#[tokio::test]
async fn failed_creates_leave_nothing() {
    use volcore::testing::{Fault, Step};
    let e = env().await;
    for step in [Step::Format, Step::Create] {
        e.fake.inject(step, Fault::Fail("injected".into()));
        assert!(e
            .engine
            .create(&vref("p/f"), &BTreeMap::new())
            .await
            .is_err());
        e.fake.heal();
        let r = e.engine.check(false).await.unwrap();
        assert!(r.is_clean(), "after a failed {step:?}: {}", r.render());
    }
}

/// A restarted plugin re-binds its predecessor's lock to its own lease; the lock must
/// then name the new process, or a check takes it for the dead one's and a repair
/// deletes a live host's lock (found by the simulation; before: the instance stayed).
#[tokio::test]
async fn a_rebound_lock_names_the_new_process() {
    let e = env().await;
    let keys = Keys::default();
    let v = vref("p/v");
    e.engine.create(&v, &BTreeMap::new()).await.unwrap();
    let req = [LockRequest::new(
        LockKind::Mount,
        v.clone(),
        LockReason::Mount,
    )];
    let old = Locker::new(e.kv.clone(), keys.clone(), host("h1"))
        .with_owner("volplugin:h1")
        .with_identity("id-1", "inst-old");
    let l1 = e.kv.lease_grant(Duration::from_secs(30)).await.unwrap();
    old.acquire(&req, &l1, Duration::ZERO).await.unwrap();
    let new = Locker::new(e.kv.clone(), keys.clone(), host("h1"))
        .with_owner("volplugin:h1")
        .with_identity("id-1", "inst-new");
    let l2 = e.kv.lease_grant(Duration::from_secs(30)).await.unwrap();
    let held = new.acquire(&req, &l2, Duration::ZERO).await.unwrap();
    assert_eq!(held[0].holder.instance.as_deref(), Some("inst-new"));
    let now = new.get(LockKind::Mount, &v).await.unwrap().unwrap();
    assert_eq!(now.holder.instance.as_deref(), Some("inst-new"));
    // h1's live record names the new process: nothing is stale.
    let rec = serde_json::json!({
        "host": "h1", "host_id": "id-1", "instance": "inst-new", "version": "t",
        "started": "2026-12-03T00:00:00Z", "pid": 1, "lease": l2.as_str(),
    });
    e.kv.put(
        &keys.host(&host("h1")),
        serde_json::to_vec(&rec).unwrap(),
        PutOpts::default(),
    )
    .await
    .unwrap();
    let r = e.engine.check(false).await.unwrap();
    assert!(r.is_clean(), "{}", r.render());
}

/// A mount whose driver call fails and whose lock release then finds the store down:
/// the release is owed and retried (before: "it expires with the lease" — but a live
/// host's lease never expires, so no other host could ever mount the volume; found by
/// the three-member etcd test).
#[tokio::test]
async fn a_failed_mount_whose_release_fails_still_releases() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use volcore::testing::{Fault, FlakyKv, KvFault, Step};
    let e = env().await;
    let v = vref("p/v");
    e.engine.create(&v, &BTreeMap::new()).await.unwrap();
    let fake = e.fake.another_host();
    fake.inject(Step::Mount, Fault::Fail("device busy".into()));
    let flaky = FlakyKv::new(e.kv.clone());
    let writes = Arc::new(AtomicUsize::new(0));
    let n = writes.clone();
    // The first write of the lock key takes it; the second (the release) fails.
    flaky.inject(1, KvFault::Unavailable, move |c| {
        c.writes("/locks/mount/p/v") && n.fetch_add(1, Ordering::SeqCst) == 1
    });
    let dir = tempfile::tempdir().unwrap();
    let m = host_mounts_on(Arc::new(flaky.clone()), &e, &fake, dir.path()).await;
    adopted(&m).await;
    assert!(m.mount(&v, "c1").await.is_err());
    assert_eq!(flaky.hits(), 1, "the release did not meet the outage");
    let lock_key = Keys::default().lock(LockKind::Mount, &v);
    for _ in 0..200 {
        if e.kv.get(&lock_key).await.unwrap().is_none() {
            m.stop();
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the failed mount's lock was never released");
}

/// A mount root that passed the upload check as written but is a symbolic link into a
/// system directory on this host is refused at mount time, before the driver mounts
/// anything, and the mount's lock is released (#13).
#[tokio::test]
async fn a_mount_root_linked_into_a_system_directory_is_refused() {
    let e = env().await;
    let v = vref("p/v");
    e.engine.create(&v, &BTreeMap::new()).await.unwrap();
    let fake = e.fake.another_host();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("mnt");
    std::os::unix::fs::symlink("/etc", &link).unwrap();
    let m = host_mounts_at(e.kv.clone(), &e, &fake, dir.path(), link.join("h1")).await;
    adopted(&m).await;
    let err = m.mount(&v, "c1").await.unwrap_err().to_string();
    assert!(
        err.contains("resolves to /etc/h1") && err.contains("system directory /etc"),
        "{err}"
    );
    assert!(fake.mounted_volumes().is_empty(), "the driver mounted");
    assert!(
        !fake.calls().iter().any(|c| c.starts_with("mount ")),
        "{:?}",
        fake.calls()
    );
    let lock_key = Keys::default().lock(LockKind::Mount, &v);
    assert!(e.kv.get(&lock_key).await.unwrap().is_none(), "lock left");
    m.stop();
}

/// A lock acquisition whose commit applied but whose answer was lost leaves no lock
/// behind (before: the caller heard an error and the locks stayed on its live lease for
/// ever — a create on a three-member etcd cluster whose leader was killed left a
/// volume locked by volmaster until it restarted).
#[tokio::test]
async fn an_unanswered_lock_acquisition_leaves_no_lock() {
    use volcore::testing::{FlakyKv, KvFault};
    let e = env().await;
    let v = vref("p/v");
    let flaky = FlakyKv::new(e.kv.clone());
    flaky.inject(1, KvFault::CommitThenTimeout, |c| {
        c.writes("/locks/mount/p/v")
    });
    let locker =
        Locker::new(Arc::new(flaky.clone()), Keys::default(), host("m1")).with_owner("engine-op-1");
    let lease = e.kv.lease_grant(Duration::from_secs(30)).await.unwrap();
    let reqs = [
        LockRequest::new(LockKind::Mount, v.clone(), LockReason::Create),
        LockRequest::new(LockKind::Op, v.clone(), LockReason::Create),
    ];
    assert!(locker.acquire(&reqs, &lease, Duration::ZERO).await.is_err());
    assert_eq!(flaky.hits(), 1);
    let keys = Keys::default();
    for _ in 0..100 {
        let left = e.kv.list(&keys.locks(None)).await.unwrap();
        if left.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the unanswered acquisition's locks stayed");
}

/// A lock acquisition that times out but reaches the store later (a request stuck at a
/// frozen etcd member, forwarded when it resumes; seen in the three-member cluster test)
/// leaves no lock: the undo must not conclude "nothing was written" before the late
/// write lands (before: it saw no lock, stopped, and the late write left the volume
/// locked by a live lease for ever).
#[tokio::test]
async fn an_acquisition_that_applies_after_its_timeout_leaves_no_lock() {
    use volcore::testing::{FlakyKv, KvFault};
    let e = env().await;
    let v = vref("p/late");
    let flaky = FlakyKv::new(e.kv.clone());
    flaky.inject(
        1,
        KvFault::TimeoutThenApplyLater(Duration::from_millis(300)),
        |c| c.writes("/locks/mount/p/late"),
    );
    let locker =
        Locker::new(Arc::new(flaky.clone()), Keys::default(), host("m1")).with_owner("engine-op-1");
    let lease = e.kv.lease_grant(Duration::from_secs(30)).await.unwrap();
    let reqs = [
        LockRequest::new(LockKind::Mount, v.clone(), LockReason::Create),
        LockRequest::new(LockKind::Op, v.clone(), LockReason::Create),
    ];
    assert!(locker.acquire(&reqs, &lease, Duration::ZERO).await.is_err());
    assert_eq!(flaky.hits(), 1);
    // Well after the late write would have landed.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let left = e.kv.list(&Keys::default().locks(None)).await.unwrap();
    assert!(
        left.is_empty(),
        "the late acquisition's locks stayed: {left:?}"
    );
}

/// A remove whose record delete goes unanswered after the storage is destroyed retries
/// it, so no record is left naming destroyed storage (before: the remove failed and left
/// exactly that — seen on a three-member etcd cluster with a frozen member).
#[tokio::test]
async fn a_remove_whose_delete_goes_unanswered_leaves_no_record() {
    use volcore::testing::{FlakyKv, KvFault};
    let e = env().await;
    let v = vref("p/r");
    e.engine.create(&v, &BTreeMap::new()).await.unwrap();
    let flaky = FlakyKv::new(e.kv.clone());
    flaky.inject(1, KvFault::Unavailable, |c| c.writes("/volumes/p/r"));
    let (_gtx, grx) = watch::channel(global());
    let engine = Volumes::new(
        Arc::new(flaky.clone()),
        Keys::default(),
        Drivers::new().with(Arc::new(e.fake.clone())),
        host("master-2"),
        e.keeper.subscribe(),
        grx,
    );
    engine.remove(&v, false, None).await.unwrap();
    assert_eq!(flaky.hits(), 1);
    assert!(e.engine.get(&v).await.is_err(), "the record stayed");
    assert!(e.engine.check(false).await.unwrap().is_clean());
}
