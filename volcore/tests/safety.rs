//! Safety holes in the engine and the locks, each staged exactly where it hurts with a
//! store wrapper (`FlakyKv`): a lock that changes hands while it is force-removed, a
//! publish whose commit outcome is lost, unlocked block volumes, and lock waits with
//! durations near `u64::MAX`.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::watch;
use volcore::policy::BackendKind;
use volcore::testing::{FakeDriver, FlakyKv, KvFault};
use volcore::{
    Drivers, GlobalConfig, HostName, Keys, KvStore, LeaseKeeper, LockKind, LockReason, LockRequest,
    Locker, MemKv, Policy, PolicyName, VolumeName, VolumeRef, Volumes,
};

fn vref(s: &str) -> VolumeRef {
    VolumeRef::parse(s).unwrap()
}

fn host(s: &str) -> HostName {
    HostName::new(s).unwrap()
}

fn mount_req(v: &VolumeRef) -> [LockRequest; 1] {
    [LockRequest::new(
        LockKind::Mount,
        v.clone(),
        LockReason::Mount,
    )]
}

/// `use force-remove` reads a dead host's lock and deletes it; if the lock changed hands
/// in between (released, then taken by a live host), the new holder's lock must stay
/// (before: the delete fell back to "whatever is there now").
#[tokio::test]
async fn force_remove_deletes_only_the_lock_it_read() {
    let mem: Arc<dyn KvStore> = Arc::new(MemKv::new());
    let keys = Keys::default();
    let v = vref("p/v");
    let a = Locker::new(mem.clone(), keys.clone(), host("host-a"));
    let b = Locker::new(mem.clone(), keys.clone(), host("host-b"));
    let la = mem.lease_grant(Duration::from_secs(30)).await.unwrap();
    let lb = mem.lease_grant(Duration::from_secs(30)).await.unwrap();
    let held_a = a.try_acquire(&mount_req(&v), &la).await.unwrap();
    let flaky = FlakyKv::new(mem.clone());
    // Just before force-remove deletes what it read: host-a lets go, host-b takes it.
    let (a2, b2, v2, lb2) = (a.clone(), b.clone(), v.clone(), lb.clone());
    flaky.before(
        1,
        |c| c.writes("/locks/mount/p/v"),
        move || {
            let (a, b, v, lb, held) = (
                a2.clone(),
                b2.clone(),
                v2.clone(),
                lb2.clone(),
                held_a.clone(),
            );
            async move {
                a.release(&held).await.unwrap();
                b.try_acquire(&mount_req(&v), &lb).await.unwrap();
            }
            .boxed()
        },
    );
    let admin = Locker::new(Arc::new(flaky), keys.clone(), host("admin"));
    let res = admin.force_remove(&v, &[LockKind::Mount]).await;
    let now = b.get(LockKind::Mount, &v).await.unwrap();
    assert_eq!(
        now.map(|l| l.holder.host),
        Some(host("host-b")),
        "the new holder's lock was deleted (force-remove answered {res:?})"
    );
    let e = res.unwrap_err().to_string();
    assert!(e.contains("host-b"), "{e}");
}

#[test]
fn unlocked_is_refused_for_block_backends() {
    for backend in ["local", "ceph"] {
        let json = format!(
            r#"{{"backend":"{backend}","driver":{{"pool":"rbd"}},"unlocked":true,"create":{{"size":"10MB"}}}}"#
        );
        let e = Policy::from_json(&PolicyName::new("p").unwrap(), json.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unlocked"), "{backend}: {e}");
        assert!(e.contains("nfs"), "{backend}: {e}");
    }
    // NFS (shared filesystems) may be unlocked.
    Policy::from_json(
        &PolicyName::new("p").unwrap(),
        br#"{"backend":"nfs","unlocked":true}"#,
    )
    .unwrap();
    // The option on a volume of a block policy is refused the same way.
    let p = Policy::from_json(
        &PolicyName::new("p").unwrap(),
        br#"{"backend":"local","create":{"size":"10MB"}}"#,
    )
    .unwrap();
    let opts = BTreeMap::from([("unlocked".to_owned(), "true".to_owned())]);
    let e = volcore::Volume::from_policy(
        &p,
        VolumeName::new("v").unwrap(),
        &opts,
        std::time::SystemTime::now(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unlocked"), "{e}");
}

struct Env {
    mem: Arc<dyn KvStore>,
    flaky: FlakyKv,
    fake: FakeDriver,
    engine: Volumes,
    _keeper: LeaseKeeper,
}

async fn env() -> Env {
    let mem: Arc<dyn KvStore> = Arc::new(MemKv::new());
    let flaky = FlakyKv::new(mem.clone());
    let kv: Arc<dyn KvStore> = Arc::new(flaky.clone());
    let fake = FakeDriver::new(BackendKind::Local);
    let keeper = LeaseKeeper::start(kv.clone(), Duration::from_secs(30))
        .await
        .unwrap();
    let (_tx, grx) = watch::channel(GlobalConfig {
        timeout: Duration::from_secs(2),
        ttl: Duration::from_secs(30),
        mount_path: PathBuf::from("/mnt/test"),
        debug: false,
        mkfs_programs: Vec::new(),
    });
    let engine = Volumes::new(
        kv,
        Keys::default(),
        Drivers::new().with(Arc::new(fake.clone())),
        host("master-1"),
        keeper.subscribe(),
        grx,
    );
    engine
        .upload_policy(
            &PolicyName::new("policy1").unwrap(),
            br#"{"backend":"local","create":{"size":"10MB"},"runtime":{"snapshots":true,"snapshot":{"frequency":"30m","keep":5}}}"#,
        )
        .await
        .unwrap();
    Env {
        mem,
        flaky,
        fake,
        engine,
        _keeper: keeper,
    }
}

/// A create whose publish commits but whose answer is lost must not destroy the storage
/// the committed record names (before: it did, leaving a record without storage).
#[tokio::test]
async fn a_create_whose_commit_answer_is_lost_keeps_its_storage() {
    let e = env().await;
    let v = vref("policy1/amb");
    e.flaky.inject(1, KvFault::CommitThenTimeout, |c| {
        c.writes("/volumes/policy1/amb")
    });
    let res = e.engine.create(&v, &BTreeMap::new()).await;
    assert_eq!(e.flaky.hits(), 1);
    let record = e.mem.get("/volplugin/volumes/policy1/amb").await.unwrap();
    assert!(record.is_some(), "the publish did commit");
    assert!(
        e.fake.volumes().contains(&v),
        "storage of a committed volume was destroyed (create said {res:?})"
    );
    assert!(res.is_ok(), "{res:?}");
    // Nothing is left locked.
    assert!(e.mem.list("/volplugin/locks/").await.unwrap().is_empty());
}

/// A publish that really did not commit (the store refused it before applying) still
/// rolls back: no storage, no record, no locks.
#[tokio::test]
async fn a_create_whose_publish_fails_rolls_back() {
    let e = env().await;
    let v = vref("policy1/gone");
    e.flaky.inject(1, KvFault::Unavailable, |c| {
        c.writes("/volumes/policy1/gone")
    });
    let res = e.engine.create(&v, &BTreeMap::new()).await;
    assert!(res.is_err());
    assert!(!e.fake.volumes().contains(&v));
    assert!(e
        .mem
        .get("/volplugin/volumes/policy1/gone")
        .await
        .unwrap()
        .is_none());
    assert!(e.mem.list("/volplugin/locks/").await.unwrap().is_empty());
}

/// The same for a copy from a snapshot.
#[tokio::test]
async fn a_copy_whose_commit_answer_is_lost_keeps_its_storage() {
    let e = env().await;
    let src = vref("policy1/src");
    e.engine.create(&src, &BTreeMap::new()).await.unwrap();
    let snap = e.engine.snapshot(&src).await.unwrap();
    e.flaky.inject(1, KvFault::CommitThenTimeout, |c| {
        c.writes("/volumes/policy1/dst")
    });
    let res = e
        .engine
        .copy(&src, &snap, &VolumeName::new("dst").unwrap())
        .await;
    assert!(e
        .mem
        .get("/volplugin/volumes/policy1/dst")
        .await
        .unwrap()
        .is_some());
    assert!(
        e.fake.volumes().contains(&vref("policy1/dst")),
        "storage of a committed copy was destroyed (copy said {res:?})"
    );
    assert!(res.is_ok(), "{res:?}");
}

/// A caller's wait of `u64::MAX` seconds is "forever", never an overflow panic.
#[tokio::test]
async fn a_huge_lock_wait_does_not_panic() {
    let e = env().await;
    let v = vref("policy1/w");
    e.engine.create(&v, &BTreeMap::new()).await.unwrap();
    let forever = Duration::from_secs(u64::MAX);
    e.engine.remove(&v, false, Some(forever)).await.unwrap();
}
