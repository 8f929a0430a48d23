//! Command-line tests with a recording FakeExec: the exact commands each operation runs,
//! the krbd and nbd strategies (which cannot run on a host without their kernel modules),
//! error mapping and timeouts. Outputs are rbd 16.2.15's, captured on a one-node cluster
//! where the tool can run there; `rbd device list` outputs for mapped devices follow the
//! formatter in rbd's source (krbd: string `id` and `name`; nbd: numeric `id` and `image`).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use volcore::driver::{DriverError, MountDriver, VolumeDriver, VolumeSpec};
use volcore::policy::MkfsTemplate;
use volcore::testing::FakeExec;
use volcore::{HostName, Size, SnapshotName, VolumeRef};

use super::*;

fn spec(name: &str) -> VolumeSpec {
    VolumeSpec {
        volume: VolumeRef::parse(name).unwrap(),
        size: Size::from_bytes(10_000_000),
        filesystem: "ext4".into(),
        mkfs: Some(MkfsTemplate::new("ext4", "mkfs.ext4 -q -m0 %").unwrap()),
        params: BTreeMap::from([("pool".to_owned(), "rbd".to_owned())]),
        source: None,
        timeout: Duration::from_secs(5),
    }
}

fn driver(attach: Attach, exec: &Arc<FakeExec>, state: &std::path::Path) -> RbdDriver {
    let mut cfg = CephConfig::new(state);
    cfg.conf = Some("/etc/ceph/test.conf".into());
    cfg.attach = attach;
    RbdDriver::new(cfg, exec.clone()).unwrap()
}

const C: &str = "rbd -c /etc/ceph/test.conf";

#[test]
fn image_names_are_injective_and_round_trip() {
    let a = VolumeRef::parse("a-b/c").unwrap();
    let b = VolumeRef::parse("a/b-c").unwrap();
    assert_eq!(image_name(&a), "a-b.c");
    assert_eq!(image_name(&b), "a.b-c");
    assert_ne!(image_name(&a), image_name(&b));
    assert_eq!(volume_of_image("a-b.c"), Some(a));
    assert_eq!(volume_of_image("a.b-c"), Some(b));
    // Images that are not ours are ignored.
    assert_eq!(volume_of_image("plain"), None);
    assert_eq!(volume_of_image("a.b.c"), None);
    assert_eq!(volume_of_image(".x"), None);
}

#[test]
fn attach_strategy_names() {
    assert_eq!("fuse".parse::<Attach>().unwrap(), Attach::Fuse);
    assert_eq!("krbd".parse::<Attach>().unwrap(), Attach::Krbd);
    assert_eq!("nbd".parse::<Attach>().unwrap(), Attach::Nbd);
    let e = "kernel".parse::<Attach>().unwrap_err();
    assert!(e.contains("use krbd, nbd or fuse"), "{e}");
}

#[tokio::test]
async fn create_is_one_rbd_call_with_features_and_data_pool() {
    let dir = tempfile::tempdir().unwrap();
    let x = Arc::new(FakeExec::new());
    let d = driver(Attach::Krbd, &x, dir.path());
    x.ok(
        &format!("{C} create --size 10M --image-feature layering rbd/policy1.v1"),
        "",
    );
    d.create(&spec("policy1/v1")).await.unwrap();
    let mut s = spec("policy1/v2");
    s.params
        .insert("features".into(), "layering, exclusive-lock".into());
    s.params.insert("data-pool".into(), "ec".into());
    x.ok(&format!("{C} create --size 10M --image-feature layering --image-feature exclusive-lock --data-pool ec rbd/policy1.v2"), "");
    d.create(&s).await.unwrap();
    x.fail(
        &format!("{C} create --size 10M --image-feature layering rbd/policy1.v1"),
        17,
        "rbd: create error: 2026-12-01T10:15:56.744+0000 7f3ade08f380 -1 librbd: rbd image policy1.v1 already exists\n\n(17) File exists\n",
    );
    assert!(matches!(
        d.create(&spec("policy1/v1")).await,
        Err(DriverError::AlreadyExists { .. })
    ));
    x.assert_done();
}

#[tokio::test]
async fn bad_parameters_are_refused_before_any_command() {
    let dir = tempfile::tempdir().unwrap();
    let x = Arc::new(FakeExec::new());
    let d = driver(Attach::Krbd, &x, dir.path());
    let mut s = spec("p/v");
    s.params.clear();
    let e = d.create(&s).await.unwrap_err().to_string();
    assert!(e.contains("needs driver.pool"), "{e}");
    let mut s = spec("p/v");
    s.params
        .insert("pool".into(), "--yes-i-really-mean-it".into());
    let e = d.create(&s).await.unwrap_err().to_string();
    assert!(e.contains("not a usable Ceph pool name"), "{e}");
    let mut s = spec("p/v");
    s.params.insert("features".into(), "layering,turbo".into());
    let e = d.create(&s).await.unwrap_err().to_string();
    assert!(e.contains("unknown RBD image feature \"turbo\""), "{e}");
    let mut s = spec("p/v");
    s.params.insert("colour".into(), "red".into());
    let e = d.create(&s).await.unwrap_err().to_string();
    assert!(
        e.contains("unknown ceph driver parameter \"colour\""),
        "{e}"
    );
    assert!(x.calls().is_empty(), "{:?}", x.calls());
}

#[tokio::test]
async fn missing_pool_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let x = Arc::new(FakeExec::new());
    let d = driver(Attach::Krbd, &x, dir.path());
    let mut s = spec("p/v");
    s.params.insert("pool".into(), "nopool".into());
    x.fail(
        &format!("{C} create --size 10M --image-feature layering nopool/p.v"),
        2,
        "rbd: error opening pool 'nopool': (2) No such file or directory\n",
    );
    let e = d.create(&s).await.unwrap_err();
    assert!(
        matches!(&e, DriverError::Invalid(m) if m.contains("'nopool'") && m.contains("driver.pool")),
        "{e}"
    );
    x.assert_done();
}

#[tokio::test]
async fn krbd_format_maps_formats_and_unmaps() {
    let dir = tempfile::tempdir().unwrap();
    let x = Arc::new(FakeExec::new());
    let d = driver(Attach::Krbd, &x, dir.path());
    let mapped =
        r#"[{"id":"0","pool":"rbd","namespace":"","name":"p.v","snap":"-","device":"/dev/rbd0"}]"#;
    x.ok(&format!("{C} device list --format json"), "[]")
        .ok(&format!("{C} device map rbd/p.v"), "/dev/rbd0\n")
        .ok("mkfs.ext4 -q -m0 /dev/rbd0", "")
        .ok(&format!("{C} device list --format json"), mapped)
        .ok(&format!("{C} device unmap /dev/rbd0"), "");
    d.format(&spec("p/v")).await.unwrap();
    x.assert_done();
}

#[tokio::test]
async fn a_failed_mkfs_unmaps_and_removes_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let x = Arc::new(FakeExec::new());
    let d = driver(Attach::Krbd, &x, dir.path());
    let mapped =
        r#"[{"id":"0","pool":"rbd","namespace":"","name":"p.v","snap":"-","device":"/dev/rbd0"}]"#;
    x.ok(&format!("{C} device list --format json"), "[]")
        .ok(&format!("{C} device map rbd/p.v"), "/dev/rbd0\n")
        .fail("mkfs.ext4 -q -m0 /dev/rbd0", 1, "mkfs failed")
        .ok(&format!("{C} device list --format json"), mapped)
        .ok(&format!("{C} device unmap /dev/rbd0"), "")
        .ok(&format!("{C} rm --no-progress rbd/p.v"), "");
    let e = d.format(&spec("p/v")).await.unwrap_err();
    assert!(matches!(e, DriverError::Failed { op: "mkfs", .. }), "{e}");
    x.assert_done();
}

#[tokio::test]
async fn krbd_attach_is_idempotent_and_mount_reuses_the_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let x = Arc::new(FakeExec::new());
    let d = driver(Attach::Krbd, &x, dir.path());
    let at = dir.path().join("mnt/p/v");
    // Another mapping (a snapshot of the same image, another image) is not ours.
    let list = r#"[{"id":"1","pool":"rbd","namespace":"","name":"p.v","snap":"s1","device":"/dev/rbd1"},{"id":"2","pool":"rbd","namespace":"","name":"p.v","snap":"-","device":"/dev/rbd2"}]"#;
    x.ok(&format!("{C} device list --format json"), list)
        .ok(&format!("mount -t ext4 /dev/rbd2 {}", at.display()), "");
    let m = d.mount(&spec("p/v"), &at).await.unwrap();
    assert_eq!(m.device.as_deref(), Some(std::path::Path::new("/dev/rbd2")));
    x.assert_done();
}

#[tokio::test]
async fn krbd_busy_unmap_is_retried_then_reported() {
    let dir = tempfile::tempdir().unwrap();
    let x = Arc::new(FakeExec::new());
    let d = driver(Attach::Krbd, &x, dir.path());
    let at = dir.path().join("mnt/p/v");
    let mapped =
        r#"[{"id":"0","pool":"rbd","namespace":"","name":"p.v","snap":"-","device":"/dev/rbd0"}]"#;
    // One `device list` serves both "is it still mounted elsewhere" and the unmap.
    x.ok(&format!("{C} device list --format json"), mapped);
    for _ in 0..6 {
        x.fail(
            &format!("{C} device unmap /dev/rbd0"),
            16,
            "rbd: sysfs write failed\nrbd: unmap failed: (16) Device or resource busy\n",
        );
    }
    let e = d.unmount(&spec("p/v"), &at).await.unwrap_err();
    assert!(matches!(e, DriverError::Busy { .. }), "{e}");
    x.assert_done();
}

#[tokio::test]
async fn nbd_strategy_command_lines() {
    let dir = tempfile::tempdir().unwrap();
    let x = Arc::new(FakeExec::new());
    let d = driver(Attach::Nbd, &x, dir.path());
    let at = dir.path().join("mnt/p/v");
    let mapped =
        r#"[{"id":4242,"pool":"rbd","namespace":"","image":"p.v","snap":"","device":"/dev/nbd0"}]"#;
    x.ok(&format!("{C} device list -t nbd --format json"), "")
        .ok(&format!("{C} device map -t nbd rbd/p.v"), "/dev/nbd0\n")
        .ok(&format!("mount -t ext4 /dev/nbd0 {}", at.display()), "")
        .ok(&format!("{C} device list -t nbd --format json"), mapped)
        .ok(&format!("{C} device unmap -t nbd /dev/nbd0"), "");
    let m = d.mount(&spec("p/v"), &at).await.unwrap();
    assert_eq!(m.device.as_deref(), Some(std::path::Path::new("/dev/nbd0")));
    d.unmount(&spec("p/v"), &at).await.unwrap();
    x.assert_done();
}

#[tokio::test]
async fn the_real_nbd_failure_without_a_module_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let x = Arc::new(FakeExec::new());
    let d = driver(Attach::Nbd, &x, dir.path());
    let at = dir.path().join("mnt/p/v");
    x.ok(&format!("{C} device list -t nbd --format json"), "").fail(
        &format!("{C} device map -t nbd rbd/p.v"),
        22,
        "sh: 1: /sbin/modprobe: not found\nrbd-nbd: failed to find unused device\nrbd: rbd-nbd failed with error: /usr/bin/rbd-nbd: exit status: 1\n",
    );
    let e = d.mount(&spec("p/v"), &at).await.unwrap_err().to_string();
    assert!(e.contains("rbd-nbd failed with error"), "{e}");
    x.assert_done();
}

#[tokio::test]
async fn destroy_refuses_locked_and_watched_images_and_purges_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let x = Arc::new(FakeExec::new());
    let d = driver(Attach::Krbd, &x, dir.path());
    let s = spec("p/v");
    // Locked: refused without running `rbd rm` (which would spin forever).
    x.ok(
        &format!("{C} lock ls --format json rbd/p.v"),
        r#"[{"id":"volcore:h1","locker":"client.4182","address":"127.0.0.1:0/4226454590"}]"#,
    );
    let e = d.destroy(&s).await.unwrap_err().to_string();
    assert!(
        e.contains("locked by volcore:h1") && e.contains("rbd lock rm"),
        "{e}"
    );
    // Watched: the watcher is named.
    x.ok(&format!("{C} lock ls --format json rbd/p.v"), "[]")
        .fail(
            &format!("{C} rm --no-progress rbd/p.v"),
            16,
            "rbd: error: image still has watchers\nThis means the image is still open or the client using it crashed. Try again after closing/unmapping it or waiting 30s for the crashed client to timeout.\n",
        )
        .ok(
            &format!("{C} status --format json rbd/p.v"),
            r#"{"watchers":[{"address":"127.0.0.1:0/3545475203","client":4162,"cookie":140037408690352}]}"#,
        );
    let e = d.destroy(&s).await.unwrap_err();
    assert!(
        matches!(&e, DriverError::Busy { detail, .. } if detail.contains("client.4162 at 127.0.0.1:0/3545475203")),
        "{e}"
    );
    // Busy, but the watcher is gone by the time we look (a dead client's watch timing
    // out): tried once more.
    x.ok(&format!("{C} lock ls --format json rbd/p.v"), "[]")
        .fail(
            &format!("{C} rm --no-progress rbd/p.v"),
            16,
            "rbd: error: image still has watchers\n",
        )
        .ok(
            &format!("{C} status --format json rbd/p.v"),
            r#"{"watchers":[]}"#,
        )
        .ok(&format!("{C} rm --no-progress rbd/p.v"), "");
    d.destroy(&s).await.unwrap();
    // Snapshots: purged, then removed.
    x.ok(&format!("{C} lock ls --format json rbd/p.v"), "[]")
        .fail(
            &format!("{C} rm --no-progress rbd/p.v"),
            39,
            "rbd: image has snapshots - these must be deleted with 'rbd snap purge' before the image can be removed.\n",
        )
        .ok(&format!("{C} snap purge --no-progress rbd/p.v"), "")
        .ok(&format!("{C} rm --no-progress rbd/p.v"), "");
    d.destroy(&s).await.unwrap();
    // Gone already.
    x.fail(
        &format!("{C} lock ls --format json rbd/p.v"),
        2,
        "rbd: error opening image p.v: (2) No such file or directory\n",
    );
    assert!(matches!(
        d.destroy(&s).await,
        Err(DriverError::NotFound { .. })
    ));
    x.assert_done();
}

#[tokio::test]
async fn a_hung_command_times_out_and_mutations_are_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let x = Arc::new(FakeExec::new());
    let d = driver(Attach::Krbd, &x, dir.path());
    let mut s = spec("p/v");
    s.timeout = Duration::from_millis(50);
    x.ok(&format!("{C} lock ls --format json rbd/p.v"), "[]")
        .hang(&format!("{C} rm --no-progress rbd/p.v"));
    let e = d.destroy(&s).await.unwrap_err();
    assert!(
        matches!(e, DriverError::Timeout { op: "destroy", .. }),
        "{e}"
    );
    // A read is tried once more after a timeout.
    x.hang(&format!("{C} info --format json rbd/p.v"))
        .ok(&format!("{C} info --format json rbd/p.v"), "{}");
    assert!(d.exists(&s).await.unwrap());
    x.fail(
        &format!("{C} info --format json rbd/p.v"),
        2,
        "rbd: error opening image p.v: (2) No such file or directory\n",
    );
    assert!(!d.exists(&s).await.unwrap());
    x.assert_done();
}

#[tokio::test]
async fn snapshots_and_clones() {
    let dir = tempfile::tempdir().unwrap();
    let x = Arc::new(FakeExec::new());
    let d = driver(Attach::Krbd, &x, dir.path());
    let sd = d.snapshots().unwrap();
    let s = spec("p/v");
    let snap = SnapshotName::new("s1").unwrap();
    x.ok(&format!("{C} snap create --no-progress rbd/p.v@s1"), "")
        .fail(
            &format!("{C} snap create --no-progress rbd/p.v@s1"),
            17,
            "Creating snap: 0% complete...failed.\nrbd: failed to create snapshot: (17) File exists\n",
        );
    sd.create_snapshot(&s, &snap).await.unwrap();
    assert!(matches!(
        sd.create_snapshot(&s, &snap).await,
        Err(DriverError::AlreadyExists { .. })
    ));
    x.ok(
        &format!("{C} snap ls --format json rbd/p.v"),
        r#"[{"id":9,"name":"later","size":1,"protected":"false","timestamp":"x"},{"id":4,"name":"s1","size":67108864,"protected":"false","timestamp":"Tue Dec  1 10:15:57 2026"}]"#,
    );
    let names: Vec<String> = sd
        .list_snapshots(&s)
        .await
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(names, ["s1", "later"]);
    let mut to = spec("p/copy");
    to.params.insert("flatten".into(), "true".into());
    x.ok(
        &format!(
            "{C} clone --rbd-default-clone-format 2 --image-feature layering rbd/p.v@s1 rbd/p.copy"
        ),
        "",
    )
    .fail(
        &format!("{C} flatten --no-progress rbd/p.copy"),
        1,
        "rbd: flatten error: (5) Input/output error\n",
    )
    .ok(&format!("{C} rm --no-progress rbd/p.copy"), "");
    assert!(sd.copy_snapshot(&s, &snap, &to).await.is_err());
    x.fail(
        &format!("{C} snap rm --no-progress rbd/p.v@s1"),
        2,
        "Removing snap: 0% complete...failed.\nrbd: failed to remove snapshot: (2) No such file or directory\n",
    );
    assert!(matches!(
        sd.remove_snapshot(&s, &snap).await,
        Err(DriverError::NotFound { what }) if what == "snapshot s1 of p/v"
    ));
    x.assert_done();
}

#[tokio::test]
async fn resize_grows_and_refuses_to_shrink() {
    let dir = tempfile::tempdir().unwrap();
    let x = Arc::new(FakeExec::new());
    let d = driver(Attach::Krbd, &x, dir.path());
    x.ok(&format!("{C} resize --no-progress --size 20M rbd/p.v"), "")
        .fail(
            &format!("{C} resize --no-progress --size 5M rbd/p.v"),
            22,
            "rbd: shrinking an image is only allowed with the --allow-shrink flag\n",
        );
    d.resize(&spec("p/v"), Size::from_bytes(20 << 20))
        .await
        .unwrap();
    let e = d
        .resize(&spec("p/v"), Size::from_bytes(5 << 20))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("can only grow"), "{e}");
    x.assert_done();
}

#[tokio::test]
async fn claim_takes_a_free_lock_and_fences_a_stale_holder() {
    let dir = tempfile::tempdir().unwrap();
    let x = Arc::new(FakeExec::new());
    let d = driver(Attach::Krbd, &x, dir.path());
    let s = spec("p/v");
    let h2 = HostName::new("host-b").unwrap();
    // Free and closed: is it attached here, who has it open, lock.
    x.ok(&format!("{C} device list --format json"), "[]")
        .ok(
            &format!("{C} status --format json rbd/p.v"),
            r#"{"watchers":[]}"#,
        )
        .ok(&format!("{C} lock add rbd/p.v volcore:host-b"), "");
    assert!(d.claim(&s, &h2).await.unwrap().is_empty());
    // host-a's lease expired while it had the image open: its open client is blocklisted,
    // then its lock is broken (which blocklists the locker), then host-b locks.
    x.ok(&format!("{C} device list --format json"), "[]")
        .ok(
            &format!("{C} status --format json rbd/p.v"),
            r#"{"watchers":[{"address":"127.0.0.1:0/2472843881","client":4180,"cookie":140074385673664}]}"#,
        )
        .ok(
            "ceph -c /etc/ceph/test.conf osd blocklist add 127.0.0.1:0/2472843881",
            "",
        )
        .fail(
            &format!("{C} lock add rbd/p.v volcore:host-b"),
            16,
            "rbd: lock is already held by someone else\n",
        )
        .ok(
            &format!("{C} lock ls --format json rbd/p.v"),
            r#"[{"id":"volcore:host-a","locker":"client.4182","address":"127.0.0.1:0/4226454590"}]"#,
        )
        .ok(&format!("{C} lock rm rbd/p.v volcore:host-a client.4182"), "")
        .ok(&format!("{C} lock add rbd/p.v volcore:host-b"), "");
    let fenced = d.claim(&s, &h2).await.unwrap();
    assert_eq!(fenced.len(), 1);
    assert_eq!(fenced[0].holder, "host-a");
    assert_eq!(
        fenced[0].clients,
        ["127.0.0.1:0/2472843881", "127.0.0.1:0/4226454590"]
    );
    // Our own lock from before a restart: nothing to fence.
    x.ok(&format!("{C} device list --format json"), "[]")
        .ok(
            &format!("{C} status --format json rbd/p.v"),
            r#"{"watchers":[]}"#,
        )
        .fail(
            &format!("{C} lock add rbd/p.v volcore:host-b"),
            16,
            "rbd: lock is already held by someone else\n",
        )
        .ok(
            &format!("{C} lock ls --format json rbd/p.v"),
            r#"[{"id":"volcore:host-b","locker":"client.4190","address":"127.0.0.1:0/1"}]"#,
        );
    assert!(d.claim(&s, &h2).await.unwrap().is_empty());
    // Release drops only our lock, without blocklisting.
    x.ok(
        &format!("{C} lock ls --format json rbd/p.v"),
        r#"[{"id":"volcore:host-b","locker":"client.4190","address":"127.0.0.1:0/1"}]"#,
    )
    .ok(
        &format!(
            "{C} --rbd_blocklist_on_break_lock=false lock rm rbd/p.v volcore:host-b client.4190"
        ),
        "",
    );
    d.release(&s, &h2).await.unwrap();
    x.assert_done();
}

#[tokio::test]
async fn list_reads_each_pool_once_and_skips_foreign_images() {
    let dir = tempfile::tempdir().unwrap();
    let x = Arc::new(FakeExec::new());
    let mut cfg = CephConfig::new(dir.path());
    cfg.pools = vec!["rbd".into(), "fast".into()];
    let d = RbdDriver::new(cfg, x.clone()).unwrap();
    x.ok(
        "rbd ls --format json rbd",
        r#"["policy1.a","not-ours","policy1.b"]"#,
    )
    .ok("rbd ls --format json fast", r#"["p2.c"]"#);
    let got: Vec<String> = d
        .list()
        .await
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    assert_eq!(got, ["p2/c", "policy1/a", "policy1/b"]);
    x.assert_done();
}

const WATCHER_A: &str =
    r#"{"watchers":[{"address":"127.0.0.1:0/2472843881","client":4180,"cookie":140074385673664}]}"#;
const LOCK_A: &str =
    r#"[{"id":"volcore:host-a","locker":"client.4182","address":"127.0.0.1:0/4226454590"}]"#;

/// A takeover fences every client that has the image open before it breaks the stale
/// lock (so a failure between the two cannot leave the old host writing), and a retry
/// after a failed fence — whose `lock add` now succeeds, the stale lock being gone —
/// still fences the old host's open client before the volume is ours.
#[tokio::test]
async fn a_takeover_fences_open_clients_first_and_on_every_retry() {
    let dir = tempfile::tempdir().unwrap();
    let x = Arc::new(FakeExec::new());
    let d = driver(Attach::Krbd, &x, dir.path());
    let s = spec("p/v");
    let h2 = HostName::new("host-b").unwrap();
    let fence = "ceph -c /etc/ceph/test.conf osd blocklist add 127.0.0.1:0/2472843881";
    // First try: the old host still has the image open and its lock is in place; the
    // fence fails (the monitor is unreachable, say). Nothing is broken, nothing locked.
    x.ok(&format!("{C} device list --format json"), "[]")
        .ok(&format!("{C} status --format json rbd/p.v"), WATCHER_A)
        .fail(fence, 110, "error connecting to the cluster\n");
    let e = d.claim(&s, &h2).await.unwrap_err();
    assert!(e.to_string().contains("fence"), "{e}");
    x.assert_done();
    // Second try: fence first, then break the stale lock, then lock.
    x.ok(&format!("{C} device list --format json"), "[]")
        .ok(&format!("{C} status --format json rbd/p.v"), WATCHER_A)
        .ok(fence, "")
        .fail(
            &format!("{C} lock add rbd/p.v volcore:host-b"),
            16,
            "rbd: lock is already held by someone else\n",
        )
        .ok(&format!("{C} lock ls --format json rbd/p.v"), LOCK_A)
        .ok(
            &format!("{C} lock rm rbd/p.v volcore:host-a client.4182"),
            "",
        )
        .ok(&format!("{C} lock add rbd/p.v volcore:host-b"), "");
    let fenced = d.claim(&s, &h2).await.unwrap();
    assert_eq!(fenced.len(), 1, "{fenced:?}");
    assert_eq!(fenced[0].holder, "host-a");
    assert_eq!(
        fenced[0].clients,
        ["127.0.0.1:0/2472843881", "127.0.0.1:0/4226454590"]
    );
    x.assert_done();
}

/// The hole as it was: an earlier takeover broke the stale lock and died before it
/// fenced. The retry's `lock add` succeeds at once — and must still fence the client
/// that has the image open.
#[tokio::test]
async fn a_retry_after_a_half_done_takeover_still_fences() {
    let dir = tempfile::tempdir().unwrap();
    let x = Arc::new(FakeExec::new());
    let d = driver(Attach::Krbd, &x, dir.path());
    let s = spec("p/v");
    let h2 = HostName::new("host-b").unwrap();
    x.ok(&format!("{C} device list --format json"), "[]")
        .ok(&format!("{C} status --format json rbd/p.v"), WATCHER_A)
        .ok(
            "ceph -c /etc/ceph/test.conf osd blocklist add 127.0.0.1:0/2472843881",
            "",
        )
        .ok(&format!("{C} lock add rbd/p.v volcore:host-b"), "");
    let fenced = d.claim(&s, &h2).await.unwrap();
    assert_eq!(fenced.len(), 1, "{fenced:?}");
    assert_eq!(fenced[0].clients, ["127.0.0.1:0/2472843881"]);
    x.assert_done();
}

/// Re-claiming an image this host has attached (a restarted plugin re-adopting its mount)
/// fences nobody: the open client is this host's own.
#[tokio::test]
async fn re_claiming_an_image_attached_here_fences_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let x = Arc::new(FakeExec::new());
    let d = driver(Attach::Krbd, &x, dir.path());
    let s = spec("p/v");
    let h2 = HostName::new("host-b").unwrap();
    let mapped =
        r#"[{"id":"0","pool":"rbd","namespace":"","name":"p.v","snap":"-","device":"/dev/rbd0"}]"#;
    x.ok(&format!("{C} device list --format json"), mapped)
        .fail(
            &format!("{C} lock add rbd/p.v volcore:host-b"),
            16,
            "rbd: lock is already held by someone else\n",
        )
        .ok(
            &format!("{C} lock ls --format json rbd/p.v"),
            r#"[{"id":"volcore:host-b","locker":"client.4190","address":"127.0.0.1:0/1"}]"#,
        );
    assert!(d.claim(&s, &h2).await.unwrap().is_empty());
    x.assert_done();
}

/// One hung `rbd` command stalls only its own image: a mount of another image runs to
/// completion meanwhile (before: one driver-wide mutex held every mount and unmount of
/// the host behind the hung command).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_command_stalls_only_its_own_image() {
    let dir = tempfile::tempdir().unwrap();
    let x = Arc::new(FakeExec::unordered());
    let d = Arc::new(driver(Attach::Krbd, &x, dir.path()));
    let mut slow = spec("p/slow");
    slow.timeout = Duration::from_secs(10);
    let at_slow = dir.path().join("mnt/p/slow");
    let at_fast = dir.path().join("mnt/p/fast");
    x.ok(&format!("{C} device list --format json"), "[]")
        .hang(&format!("{C} device map rbd/p.slow"))
        .ok(&format!("{C} device list --format json"), "[]")
        .ok(&format!("{C} device map rbd/p.fast"), "/dev/rbd1\n")
        .ok(
            &format!("mount -t ext4 /dev/rbd1 {}", at_fast.display()),
            "",
        );
    let d2 = d.clone();
    let hung = tokio::spawn(async move { d2.mount(&slow, &at_slow).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fast = tokio::time::timeout(Duration::from_secs(3), d.mount(&spec("p/fast"), &at_fast))
        .await
        .expect("the mount of another image waited for the hung command")
        .unwrap();
    assert_eq!(
        fast.device.as_deref(),
        Some(std::path::Path::new("/dev/rbd1"))
    );
    hung.abort();
}
