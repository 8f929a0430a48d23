//! The volume engine on the in-memory store and the FakeDriver, including every injected
//! fault leaving no half state.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use volcore::policy::BackendKind;
use volcore::testing::{CountingKv, FakeDriver, Fault, KvCalls, Step};
use volcore::{
    Drivers, EngineError, GlobalConfig, HostName, Keys, KvStore, LeaseKeeper, LockKind, LockReason,
    LockRequest, Locker, MemKv, PolicyName, SnapshotName, VolumeName, VolumeRef, Volumes,
    WatchEvent,
};

const POLICY: &str = r#"{"backend":"local","create":{"size":"10MB"},
  "runtime":{"snapshots":true,"snapshot":{"frequency":"30m","keep":20}}}"#;

struct Env {
    kv: Arc<dyn KvStore>,
    fake: FakeDriver,
    engine: Volumes,
    global: watch::Sender<GlobalConfig>,
    _keeper: LeaseKeeper,
}

async fn env_with(timeout: Duration) -> Env {
    env_on(Arc::new(MemKv::new()), timeout).await
}

/// The engine over `kv` (policy1 uploaded), with a FakeDriver.
async fn env_on(kv: Arc<dyn KvStore>, timeout: Duration) -> Env {
    let fake = FakeDriver::new(BackendKind::Local);
    let keeper = LeaseKeeper::start(kv.clone(), Duration::from_secs(30))
        .await
        .unwrap();
    let global = GlobalConfig {
        timeout,
        ttl: Duration::from_secs(30),
        mount_path: PathBuf::from("/mnt/test"),
        debug: false,
        mkfs_programs: Vec::new(),
    };
    let (global, grx) = watch::channel(global);
    let engine = Volumes::new(
        kv.clone(),
        Keys::default(),
        Drivers::new().with(Arc::new(fake.clone())),
        HostName::new("master-1").unwrap(),
        keeper.subscribe(),
        grx,
    );
    engine
        .upload_policy(&pname("policy1"), POLICY.as_bytes())
        .await
        .unwrap();
    Env {
        kv,
        fake,
        engine,
        global,
        _keeper: keeper,
    }
}

async fn env() -> Env {
    env_with(Duration::from_millis(500)).await
}

fn pname(s: &str) -> PolicyName {
    PolicyName::new(s).unwrap()
}

fn vref(s: &str) -> VolumeRef {
    VolumeRef::parse(s).unwrap()
}

fn no_opts() -> BTreeMap<String, String> {
    BTreeMap::new()
}

/// Nothing of `v` is left: no record, no runtime, no locks, no storage.
async fn assert_clean(e: &Env, v: &VolumeRef) {
    let keys = Keys::default();
    assert!(
        e.kv.get(&keys.volume(v)).await.unwrap().is_none(),
        "record left"
    );
    assert!(
        e.kv.get(&keys.runtime(v)).await.unwrap().is_none(),
        "runtime left"
    );
    assert!(
        e.kv.list(&keys.locks(None)).await.unwrap().is_empty(),
        "locks left"
    );
    assert!(!e.fake.volumes().contains(v), "storage left");
}

#[tokio::test]
async fn create_get_list_remove() {
    let e = env().await;
    let v = vref("policy1/db");
    let info = e.engine.create(&v, &no_opts()).await.unwrap();
    assert_eq!(info.volume.create.size.bytes(), 10_000_000);
    assert_eq!(
        e.fake.calls(),
        vec!["create policy1/db", "format policy1/db"]
    );
    assert!(
        e.engine.locks(None).await.unwrap().is_empty(),
        "create released its locks"
    );
    let got = e.engine.get(&v).await.unwrap();
    assert_eq!(got.volume, info.volume);
    assert!(got.volume.policy_revision.is_some());
    e.engine
        .upload_policy(&pname("policy2"), POLICY.as_bytes())
        .await
        .unwrap();
    e.engine
        .create(&vref("policy2/other"), &no_opts())
        .await
        .unwrap();
    let in_p1: Vec<String> = e
        .engine
        .list(Some(&pname("policy1")))
        .await
        .unwrap()
        .iter()
        .map(|v| v.reference().to_string())
        .collect();
    assert_eq!(
        in_p1,
        vec!["policy1/db"],
        "list by policy filters (volplugin bug 3)"
    );
    assert_eq!(e.engine.list(None).await.unwrap().len(), 2);
    let dup = e.engine.create(&v, &no_opts()).await.unwrap_err();
    assert!(matches!(dup, EngineError::VolumeExists { .. }), "{dup}");
    e.engine.remove(&v, false, None).await.unwrap();
    assert_clean(&e, &v).await;
    let gone = e.engine.get(&v).await.unwrap_err();
    assert_eq!(gone.to_string(), "volume policy1/db does not exist");
}

#[tokio::test]
async fn create_rejects_bad_input() {
    let e = env().await;
    let err = e
        .engine
        .create(&vref("nopolicy/v"), &no_opts())
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::PolicyNotFound { .. }), "{err}");
    let opts = BTreeMap::from([("quux".to_owned(), "1".to_owned())]);
    let err = e
        .engine
        .create(&vref("policy1/v"), &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Invalid(_)), "{err}");
    assert!(e.fake.calls().is_empty());
    // The policy is read under the locks; a refused option releases them.
    assert_clean(&e, &vref("policy1/v")).await;
    // The null backend is served only where the daemon allowed it.
    e.engine
        .upload_policy(&pname("nullp"), br#"{"backend":"null"}"#)
        .await
        .unwrap();
    let err = e
        .engine
        .create(&vref("nullp/v"), &no_opts())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--allow-null-backend"), "{err}");
    assert_clean(&e, &vref("nullp/v")).await;
}

/// No shell from a policy (#13): a template with shell syntax, or one whose program is
/// not an allowed mkfs program, is refused at upload with the reason and stores nothing;
/// the global configuration's MkfsPrograms extends the allowlist, and a create re-checks
/// it, so narrowing it stops policies uploaded under the wider one.
#[tokio::test]
async fn mkfs_templates_run_no_shell_and_only_allowed_programs() {
    let e = env().await;
    let keys = Keys::default();
    for (name, body, want) in [
        (
            "pwn",
            r#"{"backend":"local","create":{"size":"10MB"},"filesystems":{"ext4":"id>/tmp/pwn; mkfs.ext4 %"}}"#,
            "shell syntax",
        ),
        (
            "sh",
            r#"{"backend":"local","create":{"size":"10MB"},"filesystems":{"ext4":"sh -c 'id' %"}}"#,
            "not an allowed mkfs program",
        ),
        (
            "tmpfs",
            r#"{"backend":"local","create":{"size":"10MB"},"filesystems":{"ext4":"/tmp/mkfs.ext4 %"}}"#,
            "not an allowed mkfs program",
        ),
    ] {
        let err = e
            .engine
            .upload_policy(&pname(name), body.as_bytes())
            .await
            .unwrap_err();
        assert!(matches!(err, EngineError::Invalid(_)), "{name}: {err}");
        assert!(err.to_string().contains(want), "{name}: {err}");
        assert!(
            e.kv.get(&keys.policy(&pname(name)))
                .await
                .unwrap()
                .is_none(),
            "{name} stored"
        );
    }
    // An admin allows one more program; a policy using it uploads.
    let wider = e
        .engine
        .set_global(br#"{"MkfsPrograms":["format-volume"]}"#)
        .await
        .unwrap();
    e.global.send(wider).unwrap();
    let body = r#"{"backend":"local","create":{"size":"10MB"},"filesystems":{"ext4":"format-volume --fs ext4 %"}}"#;
    e.engine
        .upload_policy(&pname("custom"), body.as_bytes())
        .await
        .unwrap();
    // Narrowed again: creating from that policy is refused before any storage is made.
    e.global.send(GlobalConfig::default()).unwrap();
    let v = vref("custom/v");
    let err = e.engine.create(&v, &no_opts()).await.unwrap_err();
    assert!(err.to_string().contains("\"format-volume\""), "{err}");
    assert!(err.to_string().contains("MkfsPrograms"), "{err}");
    assert!(e.fake.calls().is_empty(), "{:?}", e.fake.calls());
    assert_clean(&e, &v).await;
}

/// MountPath must stay out of system directories (#13): `/etc` with a volume
/// `systemd/system` would mount over `/etc/systemd/system`.
#[tokio::test]
async fn mount_roots_in_system_directories_are_refused() {
    let e = env().await;
    let keys = Keys::default();
    for (json, want) in [
        (r#"{"MountPath":"/etc"}"#, "system directory /etc"),
        (r#"{"MountPath":"/usr/lib/x"}"#, "system directory /usr"),
        (r#"{"MountPath":"/mnt/x/"}"#, "normalised"),
    ] {
        let err = e.engine.set_global(json.as_bytes()).await.unwrap_err();
        assert!(matches!(err, EngineError::Invalid(_)), "{json}: {err}");
        assert!(err.to_string().contains(want), "{json}: {err}");
    }
    assert!(e.kv.get(&keys.global()).await.unwrap().is_none());
    e.engine
        .set_global(br#"{"MountPath":"/run/volcore/mnt"}"#)
        .await
        .unwrap();
}

/// Create and remove cost two store round trips each — the lock txn (which also reads
/// the policy / the record) and the publish / delete txn — which is what bounds their
/// latency (issue #3's load generator).
#[tokio::test]
async fn create_and_remove_take_two_round_trips() {
    let counting = CountingKv::new(Arc::new(MemKv::new()));
    let Env {
        fake,
        engine,
        _keeper,
        ..
    } = env_on(Arc::new(counting.clone()), Duration::from_millis(500)).await;
    let v = vref("policy1/db");
    counting.take();
    engine.create(&v, &no_opts()).await.unwrap();
    let two_txns = KvCalls {
        txn: 2,
        ..KvCalls::default()
    };
    assert_eq!(counting.take(), two_txns, "create");
    engine.remove(&v, false, None).await.unwrap();
    assert_eq!(counting.take(), two_txns, "remove");
    // Refusals cost one: a missing policy, an existing volume, a missing volume.
    let one_txn = KvCalls {
        txn: 1,
        ..KvCalls::default()
    };
    let err = engine
        .create(&vref("nopolicy/v"), &no_opts())
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::PolicyNotFound { .. }), "{err}");
    assert_eq!(counting.take(), one_txn, "create without a policy");
    let err = engine.remove(&v, false, None).await.unwrap_err();
    assert_eq!(err.to_string(), "volume policy1/db does not exist");
    assert_eq!(counting.take(), one_txn, "remove of a missing volume");
    engine.create(&v, &no_opts()).await.unwrap();
    counting.take();
    let err = engine.create(&v, &no_opts()).await.unwrap_err();
    assert!(matches!(err, EngineError::VolumeExists { .. }), "{err}");
    assert_eq!(counting.take(), one_txn, "create of an existing volume");
    assert_eq!(
        fake.calls(),
        vec![
            "create policy1/db",
            "format policy1/db",
            "destroy policy1/db",
            "create policy1/db",
            "format policy1/db"
        ]
    );
}

#[tokio::test]
async fn every_create_fault_leaves_nothing() {
    for (step, fault) in [
        (Step::Create, Fault::Fail("disk on fire".into())),
        (Step::Create, Fault::Hang),
        (Step::Format, Fault::Fail("mkfs: bad superblock".into())),
        (Step::Format, Fault::Hang),
    ] {
        let e = env().await;
        e.fake.inject(step, fault.clone());
        let v = vref("policy1/v");
        let err = e.engine.create(&v, &no_opts()).await.unwrap_err();
        assert!(
            matches!(err, EngineError::Driver { .. }),
            "{step:?} {fault:?}: {err}"
        );
        assert_clean(&e, &v).await;
        if step == Step::Format {
            assert!(
                e.fake.calls().contains(&"destroy policy1/v".to_owned()),
                "failed format destroys what create made"
            );
        }
        // And it works once healed.
        e.fake.heal();
        e.engine.create(&v, &no_opts()).await.unwrap();
    }
}

#[tokio::test]
async fn remove_faults_keep_the_record() {
    for fault in [Fault::Fail("busy".into()), Fault::Hang] {
        let e = env().await;
        let v = vref("policy1/v");
        e.engine.create(&v, &no_opts()).await.unwrap();
        e.fake.inject(Step::Destroy, fault);
        let err = e.engine.remove(&v, false, None).await.unwrap_err();
        assert!(matches!(err, EngineError::Driver { .. }), "{err}");
        e.engine.get(&v).await.unwrap();
        assert!(
            e.engine.locks(None).await.unwrap().is_empty(),
            "a failed remove released its locks"
        );
        e.fake.heal();
        e.engine.remove(&v, false, None).await.unwrap();
        assert_clean(&e, &v).await;
    }
}

#[tokio::test]
async fn remove_waits_for_locks_and_force_does_not() {
    let e = env().await;
    let v = vref("policy1/v");
    e.engine.create(&v, &no_opts()).await.unwrap();
    // Another host mounts it.
    let other = Locker::new(
        e.kv.clone(),
        Keys::default(),
        HostName::new("host-b").unwrap(),
    );
    let lease = e.kv.lease_grant(Duration::from_secs(30)).await.unwrap();
    other
        .try_acquire(
            &[LockRequest::new(
                LockKind::Mount,
                v.clone(),
                LockReason::Mount,
            )],
            &lease,
        )
        .await
        .unwrap();
    let err = e
        .engine
        .remove(&v, false, Some(Duration::from_millis(300)))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, EngineError::Locked(_)), "{msg}");
    assert!(
        msg.contains("host-b") && msg.contains("volcli use force-remove policy1/v"),
        "{msg}"
    );
    e.engine.get(&v).await.unwrap();
    // Forced: storage, record and locks go, and it reports success (volplugin bug 4).
    e.engine.remove(&v, true, None).await.unwrap();
    assert_clean(&e, &v).await;
}

#[tokio::test]
async fn force_remove_record_keeps_storage() {
    let e = env().await;
    let v = vref("policy1/v");
    e.engine.create(&v, &no_opts()).await.unwrap();
    e.engine.force_remove_record(&v).await.unwrap();
    assert!(matches!(
        e.engine.get(&v).await,
        Err(EngineError::VolumeNotFound { .. })
    ));
    assert!(e.fake.volumes().contains(&v), "storage kept");
    assert!(matches!(
        e.engine.force_remove_record(&v).await,
        Err(EngineError::VolumeNotFound { .. })
    ));
}

#[tokio::test]
async fn concurrent_removes_exactly_one_succeeds() {
    let e = env_with(Duration::from_secs(5)).await;
    let v = vref("policy1/v");
    e.engine.create(&v, &no_opts()).await.unwrap();
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let (eng, v) = (e.engine.clone(), v.clone());
            tokio::spawn(async move { eng.remove(&v, false, None).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(EngineError::VolumeNotFound { .. }) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(
        e.fake
            .calls()
            .iter()
            .filter(|c| c.starts_with("destroy"))
            .count(),
        1
    );
    assert_clean(&e, &v).await;
}

#[tokio::test]
async fn concurrent_creates_one_winner_per_volume() {
    let e = env_with(Duration::from_secs(5)).await;
    let mut tasks = Vec::new();
    for i in 0..15 {
        for _client in 0..3 {
            let eng = e.engine.clone();
            let v = vref(&format!("policy1/vol{i}"));
            tasks.push(tokio::spawn(async move {
                (v.clone(), eng.create(&v, &BTreeMap::new()).await)
            }));
        }
    }
    let mut wins: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks {
        let (v, res) = t.await.unwrap();
        match res {
            Ok(_) => *wins.entry(v.to_string()).or_default() += 1,
            Err(EngineError::VolumeExists { .. }) => {}
            Err(other) => panic!("{v}: {other}"),
        }
    }
    assert_eq!(wins.len(), 15);
    assert!(wins.values().all(|n| *n == 1), "{wins:?}");
    assert_eq!(e.fake.volumes().len(), 15);
}

#[tokio::test]
async fn policy_revisions_and_isolation() {
    let e = env().await;
    let p = pname("policy1");
    let v = vref("policy1/before");
    e.engine.create(&v, &no_opts()).await.unwrap();
    let r2 = e
        .engine
        .upload_policy(&p, br#"{"backend":"local","create":{"size":"20MB"}}"#)
        .await
        .unwrap();
    e.engine
        .create(&vref("policy1/after"), &no_opts())
        .await
        .unwrap();
    assert_eq!(
        e.engine.get(&v).await.unwrap().volume.create.size.bytes(),
        10_000_000,
        "re-upload changed a volume"
    );
    assert_eq!(
        e.engine
            .get(&vref("policy1/after"))
            .await
            .unwrap()
            .volume
            .create
            .size
            .bytes(),
        20_000_000
    );
    let revs = e.engine.policy_revisions(&p).await.unwrap();
    assert_eq!(revs.len(), 2, "revisions never overwrite each other");
    assert_eq!(*revs.last().unwrap(), r2.revision);
    let first = e.engine.policy_revision(&p, revs[0]).await.unwrap();
    assert_eq!(first.policy.create.size.bytes(), 10_000_000);
    // Two uploads in quick succession still make two revisions.
    e.engine.upload_policy(&p, POLICY.as_bytes()).await.unwrap();
    e.engine.upload_policy(&p, POLICY.as_bytes()).await.unwrap();
    assert_eq!(e.engine.policy_revisions(&p).await.unwrap().len(), 4);
    // Delete needs force while volumes exist; volumes survive it.
    let err = e.engine.delete_policy(&p, false).await.unwrap_err();
    assert!(
        matches!(err, EngineError::PolicyInUse { count: 2, .. }),
        "{err}"
    );
    e.engine.delete_policy(&p, true).await.unwrap();
    assert!(matches!(
        e.engine.policy(&p).await,
        Err(EngineError::PolicyNotFound { .. })
    ));
    e.engine.get(&v).await.unwrap();
    assert_eq!(
        e.engine.policy_revisions(&p).await.unwrap().len(),
        4,
        "history is kept"
    );
    assert!(matches!(
        e.engine.policy_revision(&p, 999_999).await,
        Err(EngineError::RevisionNotFound { .. })
    ));
}

#[tokio::test]
async fn runtime_set_is_seen_by_watchers() {
    let e = env().await;
    let v = vref("policy1/v");
    e.engine.create(&v, &no_opts()).await.unwrap();
    assert_eq!(e.engine.runtime(&v).await.unwrap().snapshot.keep, 20);
    let mut w = e.kv.watch(&Keys::default().runtimes(), None).await.unwrap();
    let r = e
        .engine
        .set_runtime(
            &v,
            br#"{"snapshots":true,"snapshot":{"frequency":"1m","keep":15}}"#,
        )
        .await
        .unwrap();
    assert_eq!(r.snapshot.keep, 15);
    match tokio::time::timeout(Duration::from_secs(2), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Put(entry) => assert!(entry.key.ends_with("/runtime/policy1/v")),
        other => panic!("{other:?}"),
    }
    assert_eq!(e.engine.runtime(&v).await.unwrap().snapshot.keep, 15);
    let err = e
        .engine
        .set_runtime(&v, br#"{"snapshots":true}"#)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Invalid(_)), "{err}");
    assert!(matches!(
        e.engine.set_runtime(&vref("policy1/nope"), b"{}").await,
        Err(EngineError::VolumeNotFound { .. })
    ));
}

#[tokio::test]
async fn snapshots_and_copies() {
    let e = env().await;
    let v = vref("policy1/src");
    e.engine.create(&v, &no_opts()).await.unwrap();
    let snap = e.engine.snapshot(&v).await.unwrap();
    assert_eq!(e.engine.snapshots(&v).await.unwrap(), vec![snap.clone()]);
    let copy = e
        .engine
        .copy(&v, &snap, &VolumeName::new("dst").unwrap())
        .await
        .unwrap();
    assert_eq!(copy.volume.reference().to_string(), "policy1/dst");
    assert_eq!(
        copy.volume.create,
        e.engine.get(&v).await.unwrap().volume.create
    );
    assert_eq!(e.engine.list(None).await.unwrap().len(), 2);
    // volplugin scenario 39.
    let onto = e
        .engine
        .copy(&v, &snap, &VolumeName::new("src").unwrap())
        .await
        .unwrap_err();
    assert!(onto.to_string().contains("onto itself"), "{onto}");
    let missing = e
        .engine
        .copy(
            &v,
            &SnapshotName::new("nope").unwrap(),
            &VolumeName::new("x").unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(missing, EngineError::Driver { .. }), "{missing}");
    assert!(
        matches!(
            e.engine.get(&vref("policy1/x")).await,
            Err(EngineError::VolumeNotFound { .. })
        ),
        "failed copy left a record"
    );
    let nosrc = e
        .engine
        .copy(
            &vref("policy1/ghost"),
            &snap,
            &VolumeName::new("y").unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(nosrc, EngineError::VolumeNotFound { .. }),
        "{nosrc}"
    );
    let exists = e
        .engine
        .copy(&v, &snap, &VolumeName::new("dst").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(exists, EngineError::VolumeExists { .. }),
        "{exists}"
    );
    assert!(e.engine.locks(None).await.unwrap().is_empty());
    // Copying while the source is mounted elsewhere is allowed (only its op lock is taken).
    let other = Locker::new(
        e.kv.clone(),
        Keys::default(),
        HostName::new("host-b").unwrap(),
    );
    let lease = e.kv.lease_grant(Duration::from_secs(30)).await.unwrap();
    other
        .try_acquire(
            &[LockRequest::new(
                LockKind::Mount,
                v.clone(),
                LockReason::Mount,
            )],
            &lease,
        )
        .await
        .unwrap();
    e.engine
        .copy(&v, &snap, &VolumeName::new("dst2").unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn snapshot_and_copy_faults_leave_nothing() {
    for (step, fault) in [
        (Step::Snapshot, Fault::Fail("no space".into())),
        (Step::Snapshot, Fault::Hang),
        (Step::Copy, Fault::Fail("clone failed".into())),
        (Step::Copy, Fault::Hang),
    ] {
        let e = env().await;
        let v = vref("policy1/src");
        e.engine.create(&v, &no_opts()).await.unwrap();
        let snap = e.engine.snapshot(&v).await.unwrap();
        e.fake.inject(step, fault.clone());
        let res = match step {
            Step::Snapshot => e.engine.snapshot(&v).await.map(|_| ()),
            _ => e
                .engine
                .copy(&v, &snap, &VolumeName::new("dst").unwrap())
                .await
                .map(|_| ()),
        };
        assert!(
            matches!(res, Err(EngineError::Driver { .. })),
            "{step:?} {fault:?}: {res:?}"
        );
        assert!(
            e.engine.locks(None).await.unwrap().is_empty(),
            "{step:?}: locks left"
        );
        assert!(matches!(
            e.engine.get(&vref("policy1/dst")).await,
            Err(EngineError::VolumeNotFound { .. })
        ));
        e.fake.heal();
        assert_eq!(e.engine.snapshots(&v).await.unwrap(), vec![snap]);
    }
}

#[tokio::test]
async fn operations_on_one_volume_exclude_each_other() {
    let e = env_with(Duration::from_millis(400)).await;
    let v = vref("policy1/v");
    e.engine.create(&v, &no_opts()).await.unwrap();
    // A snapshot that hangs holds the op lock: remove and copy wait, then give up Locked.
    e.fake.inject(Step::Snapshot, Fault::Hang);
    let eng = e.engine.clone();
    let vv = v.clone();
    let snap_task = tokio::spawn(async move { eng.snapshot(&vv).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = e
        .engine
        .remove(&v, false, Some(Duration::from_millis(100)))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Locked(_)), "{err}");
    assert!(err.to_string().contains("for Snapshot"), "{err}");
    let res = snap_task.await.unwrap();
    assert!(res.is_err(), "hung snapshot timed out");
    e.fake.heal();
    e.engine.remove(&v, false, None).await.unwrap();
}
