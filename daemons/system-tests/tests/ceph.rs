//! Ceph end to end: the real volmaster and volplugin binaries on a real etcd
//! (`VOLCORE_TEST_ETCD`), a real one-node Ceph cluster (`VOLCORE_TEST_CEPH`, started by
//! scripts/test with scripts/ceph.sh) with the fuse attach strategy, and a real Docker
//! engine of this test binary's own. Covers volplugin's Ceph scenarios 2, 9, 13, 16, 22,
//! 24, 34–36, 38–40 and 43 (inventory §13) as far as one machine allows, and fencing on
//! takeover between two plugin instances acting as two hosts.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use volcore_system_tests::*;

fn ceph_conf() -> String {
    std::env::var("VOLCORE_TEST_CEPH").unwrap_or_else(|_| {
        panic!(
            "VOLCORE_TEST_CEPH is not set: run scripts/test, which starts a one-node Ceph cluster"
        )
    })
}

fn rbd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("rbd")
        .args(["-c", &ceph_conf()])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn images(pool: &str) -> Vec<String> {
    let (code, out, err) = rbd(&["ls", "--format", "json", pool]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).unwrap()
}

fn upload_policy(c: &Cluster, name: &str, body: &str) {
    let (code, _, err) = volcli(c, &["policy", "upload", name], Some(body));
    assert_eq!(code, 0, "policy upload {name}: {err}");
}

fn ok(c: &Cluster, args: &[&str]) -> String {
    let (code, out, err) = volcli(c, args, None);
    assert_eq!(code, 0, "volcli {args:?}: {err}");
    out
}

fn ceph_cluster(ttl: u32) -> Cluster {
    let c = cluster(ttl);
    upload_policy(
        &c,
        "cpol",
        r#"{"backend":"ceph","driver":{"pool":"rbd"},"create":{"size":"64MiB"}}"#,
    );
    c
}

/// A container on the volume `v` (served by plugin `driver`: naming the driver spares the
/// engine asking every plugin it ever knew, which costs 15 s per dead one).
fn run(driver: &str, v: &str, script: &str) -> String {
    docker_ok(&[
        "run",
        "--rm",
        "--volume-driver",
        driver,
        "--network",
        "none",
        "-v",
        v,
        "busybox:local",
        "sh",
        "-c",
        script,
    ])
}

/// A blkio control file of a running container's cgroup (Docker's cgroupfs parent).
fn ctr_blkio(id: &str, file: &str) -> String {
    std::fs::read_to_string(format!("/sys/fs/cgroup/blkio/docker/{id}/{file}")).unwrap_or_default()
}

/// Starts a container on `v` in the background; its id.
fn run_bg(driver: &str, v: &str, cmd: &[&str]) -> String {
    let mut args = vec![
        "run",
        "-d",
        "--volume-driver",
        driver,
        "--network",
        "none",
        "-v",
        v,
        "busybox:local",
    ];
    args.extend_from_slice(cmd);
    docker_ok(&args).trim().to_owned()
}

/// Item 5's end-to-end test, plus scenarios 16 and 24: data written in one container is
/// read back in another after an unmount, and `rbd export` shows the bytes are in RADOS.
#[test]
fn docker_data_lives_in_rados() {
    let c = ceph_cluster(5);
    let p = plugin(
        &c,
        &format!("cph{}", uniq()),
        "mon0",
        Path::new(DOCKER_PLUGINS),
    );
    let vol = format!("cpol/d{}", uniq());
    docker_ok(&["volume", "create", "-d", &p.name, &vol]);
    // Scenario 16: again succeeds and makes nothing new.
    docker_ok(&["volume", "create", "-d", &p.name, &vol]);
    let img = vol.replace('/', ".");
    assert_eq!(
        images("rbd").iter().filter(|i| **i == img).count(),
        1,
        "{:?}",
        images("rbd")
    );
    let inspect: Value = serde_json::from_str(&docker_ok(&["volume", "inspect", &vol])).unwrap();
    assert_eq!(inspect[0]["Status"]["backend"], "ceph");
    let v = format!("{vol}:/data");
    // Scenario 24: the mount lives under the global MountPath, at <policy>/<volume>.
    let long = run_bg(&p.name, &v, &["sleep", "30"]);
    let mp = c
        .state
        .join("mnt")
        .join(vol.split('/').next().unwrap())
        .join(vol.split('/').nth(1).unwrap());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(mp.to_str().unwrap())),
        "{} not mounted",
        mp.display()
    );
    docker_ok(&["rm", "-f", long.trim()]);
    run(&p.name, &v, "echo hello-from-rados > /data/f && sync");
    let got = run(&p.name, &v, "cat /data/f");
    assert_eq!(got.trim(), "hello-from-rados");
    // Unmounted now: export the image and read the file out of the ext4 in it.
    let export = tmp("export").join("img");
    let (code, _, err) = rbd(&[
        "export",
        "--no-progress",
        &format!("rbd/{img}"),
        export.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let out = Command::new("debugfs")
        .args(["-R", "cat /f", export.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello-from-rados"
    );
    // docker volume rm removes nothing (scenario 16).
    docker_ok(&["volume", "rm", &vol]);
    assert!(images("rbd").contains(&img));
    ok(&c, &["volume", "remove", &vol]);
    assert!(!images("rbd").contains(&img));
}

/// Scenarios 2, 9, 13, 34, 35 through volcli with real RBD images.
#[test]
fn volcli_scenarios_on_ceph() {
    let c = ceph_cluster(5);
    let u = uniq();
    // 2: a failing mkfs fails the create, leaves no image, and nothing to remove.
    upload_policy(
        &c,
        "cfs",
        r#"{"backend":"ceph","driver":{"pool":"rbd"},"create":{"size":"64MiB"},"filesystems":{"ext4":"mkfs.ext4 -q -m0 %","falsefs":"mkfs.ext4 -q -O no_such_feature %"}}"#,
    );
    let bad = format!("cfs/bad{u}");
    let (code, _, err) = volcli(
        &c,
        &["volume", "create", &bad, "--opt", "filesystem=falsefs"],
        None,
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("mkfs"), "{err}");
    assert!(!images("rbd").contains(&format!("cfs.bad{u}")));
    let (code, _, err) = volcli(&c, &["volume", "remove", &bad], None);
    assert_eq!(code, 3, "{err}");
    // 9: snapshot take.
    let v = format!("cpol/s{u}");
    ok(&c, &["volume", "create", &v]);
    ok(&c, &["volume", "snapshot", "take", &v]);
    let list = ok(&c, &["volume", "snapshot", "list", &v]);
    assert_eq!(list.lines().count(), 1, "{list}");
    let (_, snaps, _) = rbd(&["snap", "ls", "--format", "json", &format!("rbd/cpol.s{u}")]);
    let snaps: Value = serde_json::from_str(&snaps).unwrap();
    assert_eq!(snaps[0]["name"].as_str().unwrap(), list.trim());
    ok(&c, &["volume", "remove", &v]);
    // 13: the "backend" shortcut makes image backend.<volume>.
    upload_policy(
        &c,
        "backend",
        r#"{"backend":"ceph","driver":{"pool":"rbd"},"create":{"size":"10MB"}}"#,
    );
    let b = format!("backend/b{u}");
    ok(&c, &["volume", "create", &b]);
    assert!(images("rbd").contains(&format!("backend.b{u}")));
    ok(&c, &["volume", "remove", &b]);
    assert!(!images("rbd").contains(&format!("backend.b{u}")));
    // 34: another pool.
    upload_policy(
        &c,
        "testpool",
        r#"{"backend":"ceph","driver":{"pool":"test"},"create":{"size":"10MB"}}"#,
    );
    let t = format!("testpool/t{u}");
    ok(&c, &["volume", "create", &t]);
    let got: Value = serde_json::from_str(&ok(&c, &["volume", "get", &t])).unwrap();
    assert_eq!(got["create"]["size"], "10MB", "{got}");
    assert!(images("test").contains(&format!("testpool.t{u}")));
    ok(&c, &["volume", "remove", &t]);
    // 35: driver options are reflected in the record and the image.
    let o = format!("cpol/o{u}");
    ok(
        &c,
        &[
            "volume",
            "create",
            &o,
            "--opt",
            "size=200MB",
            "--opt",
            "snapshots=true",
            "--opt",
            "snapshots.frequency=100m",
            "--opt",
            "snapshots.keep=20",
        ],
    );
    let got: Value = serde_json::from_str(&ok(&c, &["volume", "get", &o])).unwrap();
    assert_eq!(got["create"]["size"], "200MB", "{got}");
    assert_eq!(got["runtime"]["snapshots"], true, "{got}");
    assert_eq!(got["runtime"]["snapshot"]["keep"], 20, "{got}");
    let (_, info, _) = rbd(&["info", "--format", "json", &format!("rbd/cpol.o{u}")]);
    let info: Value = serde_json::from_str(&info).unwrap();
    assert!(info["size"].as_u64().unwrap() >= 200_000_000, "{info}");
    ok(&c, &["volume", "remove", &o]);
}

/// Scenarios 38 and 39: copies of snapshots, including while the source is mounted, and
/// the failures.
#[test]
fn snapshot_copies_on_ceph() {
    let c = ceph_cluster(5);
    let p = plugin(
        &c,
        &format!("cpc{}", uniq()),
        "mon0",
        Path::new(DOCKER_PLUGINS),
    );
    let u = uniq();
    let src = format!("cpol/src{u}");
    ok(&c, &["volume", "create", &src]);
    run(
        &p.name,
        &format!("{src}:/data"),
        "echo snapped > /data/f && sync",
    );
    ok(&c, &["volume", "snapshot", "take", &src]);
    let snap = ok(&c, &["volume", "snapshot", "list", &src])
        .trim()
        .to_owned();
    ok(
        &c,
        &[
            "volume",
            "snapshot",
            "copy",
            &src,
            &snap,
            &format!("cp1{u}"),
        ],
    );
    let all = ok(&c, &["volume", "list-all"]);
    assert!(
        all.contains(&src) && all.contains(&format!("cpol/cp1{u}")),
        "{all}"
    );
    // The copy has the snapshot's data.
    let got = run(&p.name, &format!("cpol/cp1{u}:/data"), "cat /data/f");
    assert_eq!(got.trim(), "snapped");
    // Copy again while the source is mounted.
    let long = run_bg(&p.name, &format!("{src}:/data"), &["sleep", "30"]);
    ok(
        &c,
        &[
            "volume",
            "snapshot",
            "copy",
            &src,
            &snap,
            &format!("cp2{u}"),
        ],
    );
    docker_ok(&["rm", "-f", long.trim()]);
    // 39: onto itself, a missing snapshot, a missing volume.
    let (code, _, err) = volcli(
        &c,
        &[
            "volume",
            "snapshot",
            "copy",
            &src,
            &snap,
            &format!("src{u}"),
        ],
        None,
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("onto itself"), "{err}");
    let (code, _, err) = volcli(
        &c,
        &[
            "volume",
            "snapshot",
            "copy",
            &src,
            "nosuchsnap",
            &format!("cp3{u}"),
        ],
        None,
    );
    assert_eq!(code, 3, "{err}");
    assert_eq!(
        volcli(&c, &["volume", "get", &format!("cpol/cp3{u}")], None).0,
        3,
        "a failed copy left a record"
    );
    assert!(!images("rbd").contains(&format!("cpol.cp3{u}")));
    let (code, _, err) = volcli(
        &c,
        &[
            "volume",
            "snapshot",
            "copy",
            &format!("cpol/none{u}"),
            &snap,
            &format!("cp4{u}"),
        ],
        None,
    );
    assert_eq!(code, 3, "{err}");
    // Clones first, then the source.
    for v in [format!("cpol/cp1{u}"), format!("cpol/cp2{u}"), src.clone()] {
        ok(&c, &["volume", "remove", &v]);
    }
    drop(p);
    for i in images("rbd") {
        assert!(!i.ends_with(&u), "left over: {i}");
    }
}

/// Scenario 40 (xfs instead of btrfs, which this machine lacks) and 36: the policy's
/// default filesystem and an override, and rate limits on the attached device.
#[test]
fn filesystems_and_rate_limits_on_ceph() {
    let c = ceph_cluster(5);
    let p = plugin(
        &c,
        &format!("cfl{}", uniq()),
        "mon0",
        Path::new(DOCKER_PLUGINS),
    );
    upload_policy(
        &c,
        "cxfs",
        r#"{"backend":"ceph","driver":{"pool":"rbd"},"create":{"size":"320MiB","filesystem":"xfs"},"filesystems":{"ext4":"mkfs.ext4 -q -m0 %","xfs":"mkfs.xfs -q -f %"}}"#,
    );
    let u = uniq();
    let x = format!("cxfs/x{u}");
    let e = format!("cxfs/e{u}");
    ok(&c, &["volume", "create", &x]);
    ok(
        &c,
        &[
            "volume",
            "create",
            &e,
            "--opt",
            "filesystem=ext4",
            "--opt",
            "rate-limit.write.bps=100000",
            "--opt",
            "rate-limit.read.bps=120000",
        ],
    );
    assert_eq!(
        run(&p.name, &format!("{x}:/data"), "stat -f -c %T /data").trim(),
        "xfs"
    );
    // While mounted, the device's blkio limits are set.
    let long = run_bg(
        &p.name,
        &format!("{e}:/data"),
        &["sh", "-c", "stat -f -c %T /data; sleep 30"],
    );
    let id = long.trim();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = docker_ok(&["logs", id]);
        if !logs.trim().is_empty() {
            assert_eq!(logs.trim(), "ext2/ext3");
            break;
        }
        assert!(Instant::now() < deadline, "container printed nothing");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The limits are in the container's own cgroup, where its I/O is charged.
    let w = ctr_blkio(id, "blkio.throttle.write_bps_device");
    let r = ctr_blkio(id, "blkio.throttle.read_bps_device");
    assert!(
        w.lines().any(|l| l.ends_with(" 100000")),
        "write limits: {w}"
    );
    assert!(
        r.lines().any(|l| l.ends_with(" 120000")),
        "read limits: {r}"
    );
    docker_ok(&["rm", "-f", id]);
    drop(p);
    ok(&c, &["volume", "remove", &x]);
    ok(&c, &["volume", "remove", &e]);
}

/// Scenario 43: each of 15 volumes created concurrently by 3 clients: exactly one
/// success per volume, one image each; after removal no image is left.
#[test]
fn parallel_creates_on_ceph() {
    let c = ceph_cluster(5);
    let u = uniq();
    let vols: Vec<String> = (0..15).map(|i| format!("cpol/par{u}-{i}")).collect();
    let results: Vec<(String, i32)> = std::thread::scope(|s| {
        let hs: Vec<_> = vols
            .iter()
            .flat_map(|v| (0..3).map(move |_| v.clone()))
            .map(|v| {
                let c = &c;
                s.spawn(move || (v.clone(), volcli(c, &["volume", "create", &v], None).0))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for v in &vols {
        let wins = results
            .iter()
            .filter(|(n, code)| n == v && *code == 0)
            .count();
        assert_eq!(wins, 1, "{v}: {results:?}");
    }
    let imgs = images("rbd");
    for v in &vols {
        assert!(imgs.contains(&v.replace('/', ".")), "{v}");
    }
    for v in &vols {
        ok(&c, &["volume", "remove", v]);
    }
    let imgs = images("rbd");
    assert!(
        !imgs.iter().any(|i| i.contains(&format!("par{u}-"))),
        "{imgs:?}"
    );
}

/// Item 4 and scenario 22 end to end: a container on host-a writes to a locked Ceph
/// volume (RBD lock `volcore:host-a`); host-a's plugin is SIGKILLed with the container and
/// its attachment still live; host-b's mount is refused while the lease lives, then
/// succeeds after it expires, fencing host-a's client: the container on host-a can no
/// longer write. host-a's restarted plugin fences itself (unmounts and detaches);
/// host-b's unmount drops its lock.
#[test]
fn takeover_fences_the_dead_host() {
    let c = ceph_cluster(3);
    let b_dir = tmp("sock-b");
    // Two hosts on one machine: each its own mount root, as separate machines would have.
    let mnt_a = [("VOLPLUGIN_MOUNT_PATH", tmp("mnt-a").display().to_string())];
    let mnt_b = [("VOLPLUGIN_MOUNT_PATH", tmp("mnt-b").display().to_string())];
    // host-a serves Docker (a container writes through it); host-b is a second machine.
    let a_name = format!("fa{}", uniq());
    let mut a = plugin_env(&c, &a_name, "host-a", Path::new(DOCKER_PLUGINS), &mnt_a);
    let b = plugin_env(&c, "fb", "host-b", &b_dir, &mnt_b);
    let u = uniq();
    let vol = format!("cpol/f{u}");
    let img = format!("rbd/cpol.f{u}");
    ok(&c, &["volume", "create", &vol]);
    let at_a = mnt_a[0].1.clone() + &format!("/cpol/f{u}");
    // Whatever happens below, host-a's leftovers go (see cleanup_fenced).
    let _cleanup = Leftovers(at_a.clone());
    let ctr = run_bg(
        &a_name,
        &format!("{vol}:/data"),
        &[
            "sh",
            "-c",
            "echo from host-a > /data/a.txt && sync && sleep 600",
        ],
    );
    let written = Instant::now();
    while std::fs::read_to_string(Path::new(&at_a).join("a.txt")).unwrap_or_default()
        != "from host-a\n"
    {
        assert!(
            written.elapsed() < Duration::from_secs(20),
            "the container never wrote"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, locks, _) = rbd(&["lock", "ls", "--format", "json", &img]);
    let locks: Value = serde_json::from_str(&locks).unwrap();
    assert_eq!(locks[0]["id"], "volcore:host-a", "{locks}");
    // Refused while host-a's lease lives.
    let r = socket_call(
        &b.sock,
        "VolumeDriver.Mount",
        json!({"Name": vol, "ID": "m2"}),
    );
    assert!(r["Err"].as_str().unwrap().contains("host-a"), "{r}");
    // host-a's plugin dies; the container, its mount and rbd-fuse stay, as on a hung host.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let at_b = loop {
        let r = socket_call(
            &b.sock,
            "VolumeDriver.Mount",
            json!({"Name": vol, "ID": "m2"}),
        );
        if r["Err"] == "" {
            break r["Mountpoint"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "host-b never got the volume: {r}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        std::fs::read_to_string(Path::new(&at_b).join("a.txt")).unwrap(),
        "from host-a\n"
    );
    let (_, locks, _) = rbd(&["lock", "ls", "--format", "json", &img]);
    let locks: Value = serde_json::from_str(&locks).unwrap();
    assert_eq!(locks.as_array().unwrap().len(), 1, "{locks}");
    assert_eq!(locks[0]["id"], "volcore:host-b", "{locks}");
    // host-a's container is fenced: its writes fail (direct I/O, then an fsync).
    let (code, _, err) = docker(&[
        "exec",
        &ctr,
        "sh",
        "-c",
        "dd if=/dev/zero of=/data/late bs=64k count=16 oflag=direct conv=fsync",
    ]);
    assert_ne!(code, 0, "the old host's container could still write: {err}");
    let _ = docker(&["kill", &ctr]);
    // host-a's plugin comes back: it finds its attachment, sees host-b holds the volume
    // and fences itself (--on-lease-loss unmount): filesystem, loop device and its
    // blocklisted rbd-fuse (which no longer answers, so it is killed) all go.
    drop(a);
    let a2 = plugin_env(&c, &a_name, "host-a", Path::new(DOCKER_PLUGINS), &mnt_a);
    let gone = Instant::now() + Duration::from_secs(30);
    let mounted = |p: &str| {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(p))
    };
    while mounted(&at_a) {
        assert!(
            Instant::now() < gone,
            "the restarted host-a kept its fenced mount"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let fuse_dir = c
        .state
        .join("ceph-host-a/fuse/rbd")
        .join(format!("cpol.f{u}"));
    while mounted(fuse_dir.to_str().unwrap()) {
        assert!(
            Instant::now() < gone,
            "the restarted host-a kept its rbd-fuse"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = docker(&["rm", "-f", &ctr]);
    drop(a2);
    let r = socket_call(
        &b.sock,
        "VolumeDriver.Unmount",
        json!({"Name": vol, "ID": "m2"}),
    );
    assert_eq!(r["Err"], "", "{r}");
    let (_, locks, _) = rbd(&["lock", "ls", "--format", "json", &img]);
    assert_eq!(locks.trim(), "[]");
    drop(b);
    let (code, _, err) = volcli(&c, &["volume", "remove", &vol], None);
    assert_eq!(code, 0, "{err}");
}

struct Leftovers(String);

impl Drop for Leftovers {
    fn drop(&mut self) {
        cleanup_fenced(&self.0);
    }
}

/// Unmounts what a killed plugin left behind (its filesystem, loop device and rbd-fuse),
/// reading loop devices from sysfs: tools that stat backing files hang on a fenced
/// rbd-fuse.
fn cleanup_fenced(at: &str) {
    let _ = Command::new("umount").arg(at).status();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(back) = std::fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        if back.contains("ceph-host-a") {
            let _ = Command::new("losetup")
                .args(["-d", &format!("/dev/{name}")])
                .status();
            let dir = Path::new(back.trim())
                .parent()
                .unwrap()
                .display()
                .to_string();
            let _ = Command::new("pkill").args(["-9", "-f", &dir]).status();
            let _ = Command::new("umount").args(["-l", &dir]).status();
        }
    }
}

/// Scenario 22: a container runs on a Ceph volume; volplugin crashes and restarts under
/// it; the restarted plugin still applies runtime changes to the mounted volume, and a
/// second host is refused until the container is gone.
#[test]
fn plugin_crash_restart_on_ceph() {
    let c = ceph_cluster(3);
    let name = format!("ccr{}", uniq());
    let mut p = plugin(&c, &name, "mon0", Path::new(DOCKER_PLUGINS));
    let vol = format!("cpol/cr{}", uniq());
    ok(&c, &["volume", "create", &vol]);
    let ctr = run_bg(&p.name, &format!("{vol}:/data"), &["sleep", "120"]);
    let ctr = ctr.trim().to_owned();
    let _ = p.child.kill();
    let _ = p.child.wait();
    let _ = std::fs::remove_file(&p.sock);
    let p2 = plugin(&c, &name, "mon0", Path::new(DOCKER_PLUGINS));
    // The restarted plugin keeps the lock past the old lease's TTL.
    std::thread::sleep(Duration::from_secs(4));
    let holder = ok(&c, &["use", "get", &vol]);
    assert!(holder.contains("mon0"), "{holder}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mp = c.state.join("mnt").join(&vol);
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(mp.to_str().unwrap()))
        .unwrap_or_else(|| panic!("{} not mounted", mp.display()))
        .to_owned();
    let dev = line
        .split(" - ")
        .nth(1)
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .to_owned();
    let dev = volcore::cgroup::DevNum::of(Path::new(&dev)).unwrap();
    let (code, _, err) = volcli(
        &c,
        &["volume", "runtime", "upload", &vol],
        Some(r#"{"rate-limit":{"write-bps":1000,"read-bps":10}}"#),
    );
    assert_eq!(code, 0, "{err}");
    let start = Instant::now();
    while !ctr_blkio(&ctr, "blkio.throttle.write_bps_device").contains(&format!("{dev} 1000")) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "runtime change not applied after the restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Another host is refused while the container runs, and served once it is gone.
    let b_dir = tmp("sock-cr");
    let b = plugin_env(
        &c,
        "crb",
        "mon1",
        &b_dir,
        &[("VOLPLUGIN_MOUNT_PATH", tmp("mnt-cr").display().to_string())],
    );
    let r = socket_call(
        &b.sock,
        "VolumeDriver.Mount",
        json!({"Name": vol, "ID": "x"}),
    );
    assert!(r["Err"].as_str().unwrap().contains("mon0"), "{r}");
    docker_ok(&["rm", "-f", &ctr]);
    let r = socket_call(
        &b.sock,
        "VolumeDriver.Mount",
        json!({"Name": vol, "ID": "x"}),
    );
    assert_eq!(r["Err"], "", "{r}");
    let r = socket_call(
        &b.sock,
        "VolumeDriver.Unmount",
        json!({"Name": vol, "ID": "x"}),
    );
    assert_eq!(r["Err"], "", "{r}");
    drop(b);
    drop(p2);
    ok(&c, &["volume", "remove", &vol]);
}

/// Hole 2b on the real cluster: a second volplugin started with a live host's label — on
/// another machine (its own state directory) — refuses to start and says why; the first
/// host's Ceph mount, record and locks are untouched (before: the second plugin took the
/// first one's record for "another host took this volume" and unmounted its live mount).
#[test]
fn a_duplicate_host_label_is_refused_on_ceph() {
    let c = ceph_cluster(30);
    let dir = tmp("sock-dup");
    let mnt = [("VOLPLUGIN_MOUNT_PATH", tmp("mnt-dup").display().to_string())];
    let a = plugin_env(&c, "dupa", "host-dup", &dir, &mnt);
    let vol = format!("cpol/dup{}", uniq());
    ok(&c, &["volume", "create", &vol]);
    let r = socket_call(
        &a.sock,
        "VolumeDriver.Mount",
        json!({"Name": vol, "ID": "m1"}),
    );
    assert_eq!(r["Err"], "", "{r}");
    let at = r["Mountpoint"].as_str().unwrap().to_owned();
    std::fs::write(Path::new(&at).join("kept.txt"), "kept").unwrap();
    let other = [
        (
            "VOLPLUGIN_MOUNT_PATH",
            tmp("mnt-dup2").display().to_string(),
        ),
        (
            "VOLPLUGIN_STATE_DIR",
            tmp("other-machine").display().to_string(),
        ),
    ];
    let out = plugin_cmd(&c, "dupb", "host-dup", &dir, &other)
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("host label host-dup is in use"), "{err}");
    // The first host's mount is live and still its own.
    assert_eq!(
        std::fs::read_to_string(Path::new(&at).join("kept.txt")).unwrap(),
        "kept"
    );
    let (code, out, _) = volcli(&c, &["--json", "use", "get", &vol], None);
    assert_eq!(code, 0);
    assert!(out.contains("host-dup"), "{out}");
    let r = socket_call(
        &a.sock,
        "VolumeDriver.Unmount",
        json!({"Name": vol, "ID": "m1"}),
    );
    assert_eq!(r["Err"], "", "{r}");
    drop(a);
    let (code, _, err) = volcli(&c, &["volume", "remove", &vol], None);
    assert_eq!(code, 0, "{err}");
}

/// volsupervisor's schedule on Ceph: a mounted (locked) volume gets rbd snapshots named by
/// their wall-clock slots, pruned to keep; the newest one's data is in a copy.
#[test]
fn scheduled_snapshots_on_ceph_are_taken_while_mounted_and_pruned() {
    let c = ceph_cluster(5);
    upload_policy(
        &c,
        "csnap",
        r#"{"backend":"ceph","driver":{"pool":"rbd"},"create":{"size":"64MiB"},
            "runtime":{"snapshots":true,"snapshot":{"frequency":"4s","keep":2}}}"#,
    );
    let p = plugin(
        &c,
        &format!("cps{}", uniq()),
        "mon0",
        Path::new(DOCKER_PLUGINS),
    );
    let u = uniq();
    let v = format!("csnap/s{u}");
    ok(&c, &["volume", "create", &v]);
    let long = run_bg(
        &p.name,
        &format!("{v}:/data"),
        &["sh", "-c", "echo scheduled > /data/f && sync && sleep 60"],
    );
    let _sup = supervisor(&c, "sup-ceph");
    let image = format!("rbd/csnap.s{u}");
    let rbd_snaps = || -> Vec<String> {
        let (code, out, err) = rbd(&["snap", "ls", "--format", "json", &image]);
        assert_eq!(code, 0, "{err}");
        let v: Value =
            serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out }).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect()
    };
    // Three slots at least (4 s each): two kept, the first pruned.
    let start = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    while seen.len() < 3 {
        for s in rbd_snaps() {
            if !seen.contains(&s) {
                seen.push(s);
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(40),
            "slots taken: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for s in &seen {
        let t = volcore::schedule::snapshot_time(&volcore::SnapshotName::new(s).unwrap())
            .unwrap_or_else(|| panic!("{s} is not a slot name"));
        assert_eq!(
            volcore::schedule::unix_millis(t) % 4000,
            0,
            "{s} is not on a 4 s slot"
        );
    }
    let start = Instant::now();
    while rbd_snaps().contains(&seen[0]) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{} never pruned",
            seen[0]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(rbd_snaps().len() <= 2, "{:?}", rbd_snaps());
    let newest = rbd_snaps().into_iter().max().unwrap();
    ok(
        &c,
        &["volume", "snapshot", "copy", &v, &newest, &format!("sc{u}")],
    );
    docker_ok(&["rm", "-f", long.trim()]);
    let got = run(&p.name, &format!("csnap/sc{u}:/data"), "cat /data/f");
    assert_eq!(got.trim(), "scheduled");
    drop(_sup);
    for vol in [format!("csnap/sc{u}"), v.clone()] {
        ok(&c, &["volume", "remove", &vol]);
    }
}
