//! volplugin with a real Docker engine (a dockerd of its own, with its own data root and
//! socket, started under `VOLCORE_TEST_DOCKER_ROOT`) and a real etcd (`VOLCORE_TEST_ETCD`):
//! docker volume create / ls / inspect / rm, containers writing and reading a loop-file
//! volume, two containers on one volume, two plugin instances as two hosts with SIGKILL
//! failover, and a plugin restart under a running container.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod docker_common;

use std::path::Path;
use std::time::{Duration, Instant};

use docker_common::*;
use serde_json::{json, Value};

#[test]
fn volume_lifecycle_through_docker() {
    let c = cluster(5);
    let p = plugin(
        &c,
        &format!("vct{}", uniq()),
        "mon0",
        Path::new(DOCKER_PLUGINS),
    );
    let vol = "policy1/demo";
    docker_ok(&["volume", "create", "-d", &p.name, vol]);
    // Scenario 16: creating it again succeeds and makes nothing new.
    docker_ok(&["volume", "create", "-d", &p.name, vol]);
    let ls = docker_ok(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"]);
    assert!(ls.lines().any(|l| l == format!("{} {vol}", p.name)), "{ls}");
    let inspect: Value = serde_json::from_str(&docker_ok(&["volume", "inspect", vol])).unwrap();
    assert_eq!(inspect[0]["Scope"], "global");
    assert_eq!(inspect[0]["Status"]["policy"], "policy1");
    assert_eq!(inspect[0]["Status"]["filesystem"], "ext4");
    // A container writes; a second one reads it back (scenario 7, 14 on one host).
    let v = format!("{vol}:/data");
    docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &v,
        "busybox:local",
        "sh",
        "-c",
        "echo hello > /data/f",
    ]);
    let got = docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &v,
        "busybox:local",
        "cat",
        "/data/f",
    ]);
    assert_eq!(got.trim(), "hello");
    // Two containers use it at once on one host (scenario 41, one host).
    let long = docker_ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "-v",
        &v,
        "busybox:local",
        "sleep",
        "30",
    ]);
    let got = docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &v,
        "busybox:local",
        "cat",
        "/data/f",
    ]);
    assert_eq!(got.trim(), "hello");
    // While mounted: use list shows this host (scenario 10).
    let (_, uses, _) = volcli(&c, &["--json", "use", "list"], None);
    let uses: Value = serde_json::from_str(&uses).unwrap();
    assert_eq!(uses[0]["host"], "mon0");
    assert_eq!(uses[0]["reason"], "Mount");
    // `volcli volume runtime upload` changes the throttle of the mounted volume (scenario
    // 22/36): the blkio write limit of its loop device follows within 5 s.
    let mp = c.state.join("mnt").join("policy1").join("demo");
    let mounts = volcore::mountinfo::current().unwrap();
    let src = mounts
        .iter()
        .find(|m| m.mount_point == mp)
        .expect("volume mounted")
        .source
        .clone();
    let dev = volcore::cgroup::DevNum::of(Path::new(&src)).unwrap();
    let (code, _, err) = volcli(
        &c,
        &["volume", "runtime", "upload", vol],
        Some(r#"{"rate-limit":{"write-bps":1000000,"read-bps":10}}"#),
    );
    assert_eq!(code, 0, "{err}");
    let start = Instant::now();
    let limit =
        |f: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/blkio/{f}")).unwrap_or_default();
    while !limit("blkio.throttle.write_bps_device").contains(&format!("{dev} 1000000")) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "runtime upload not applied within 5 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(limit("blkio.throttle.read_bps_device").contains(&format!("{dev} 10")));
    docker_ok(&["rm", "-f", long.trim()]);
    assert!(
        !limit("blkio.throttle.write_bps_device").contains(&format!("{dev} ")),
        "limit left after the last unmount"
    );
    let (_, uses, _) = volcli(&c, &["use", "list"], None);
    assert!(
        uses.trim().is_empty(),
        "lock left after the last container: {uses}"
    );
    // docker volume rm forgets it on this host but keeps the storage.
    docker_ok(&["volume", "rm", vol]);
    let (code, _, _) = volcli(&c, &["volume", "get", vol], None);
    assert_eq!(code, 0, "docker volume rm destroyed a volume");
    // Removing through volcli really removes it.
    let (code, _, err) = volcli(&c, &["volume", "remove", vol], None);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn second_host_takes_over_after_sigkill() {
    let c = cluster(2);
    let a_name = format!("vcta{}", uniq());
    let mut a = plugin(&c, &a_name, "host-a", Path::new(DOCKER_PLUGINS));
    let b_dir = tmp("b-sock");
    let b = plugin(&c, &format!("vctb{}", uniq()), "host-b", &b_dir);
    let vol = "policy1/shared";
    docker_ok(&["volume", "create", "-d", &a.name, vol]);
    let v = format!("{vol}:/data");
    let ctr = docker_ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "-v",
        &v,
        "busybox:local",
        "sleep",
        "60",
    ]);
    // Scenario 33: the other host is refused while host-a holds the volume.
    let r = socket_call(
        &b.sock,
        "VolumeDriver.Mount",
        json!({"Name": vol, "ID": "b1"}),
    );
    let msg = r["Err"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("host-a") && msg.contains("volcli use force-remove policy1/shared"),
        "{msg}"
    );
    // host-a's plugin dies hard; host-b mounts within TTL + 2 s.
    let killed = Instant::now();
    let _ = a.child.kill();
    let _ = a.child.wait();
    // The dead plugin's socket stays behind; the engine would keep retrying it for every
    // other test's docker call, so take it away now.
    let _ = std::fs::remove_file(Path::new(DOCKER_PLUGINS).join(format!("{a_name}.sock")));
    // Its lock is gone within TTL + 1 s ...
    while volcli(&c, &["use", "get", vol], None).0 == 0 {
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "host-a's lock outlived it by {:?} (TTL 2 s)",
            killed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // ... and host-b mounts within TTL + 2 s.
    loop {
        let r = socket_call(
            &b.sock,
            "VolumeDriver.Mount",
            json!({"Name": vol, "ID": "b1"}),
        );
        if r["Err"] == "" {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(4),
            "host-b still refused {:?} after SIGKILL: {r}",
            killed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        socket_call(
            &b.sock,
            "VolumeDriver.Unmount",
            json!({"Name": vol, "ID": "b1"})
        )["Err"],
        ""
    );
    // host-a comes back (its mount outlived its plugin): it re-adopts the mount, and the
    // engine can then unmount it for the container and forget the volume.
    let mut a = plugin(&c, &a_name, "host-a", Path::new(DOCKER_PLUGINS));
    docker_ok(&["rm", "-f", ctr.trim()]);
    docker_ok(&["volume", "rm", vol]);
    let mp = c.state.join("mnt").join("policy1").join("shared");
    assert!(
        !volcore::mountinfo::current()
            .unwrap()
            .iter()
            .any(|m| m.mount_point == mp),
        "mount left behind"
    );
    sigterm(&mut a);
}

#[test]
fn plugin_restart_under_a_running_container_keeps_the_lock() {
    let c = cluster(2);
    let name = format!("vctr{}", uniq());
    let mut a = plugin(&c, &name, "host-a", Path::new(DOCKER_PLUGINS));
    let b = plugin(&c, &format!("vctrb{}", uniq()), "host-b", &tmp("b-sock"));
    let vol = "policy1/kept";
    docker_ok(&["volume", "create", "-d", &a.name, vol]);
    let v = format!("{vol}:/data");
    let ctr = docker_ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "-v",
        &v,
        "busybox:local",
        "sh",
        "-c",
        "echo alive > /data/f; sleep 60",
    ]);
    sigterm(&mut a);
    assert!(!a.sock.exists(), "socket left after SIGTERM");
    let a2 = plugin(&c, &name, "host-a", Path::new(DOCKER_PLUGINS));
    // Longer than the old lease's TTL: the restarted plugin re-adopted the lock.
    std::thread::sleep(Duration::from_secs(4));
    let r = socket_call(
        &b.sock,
        "VolumeDriver.Mount",
        json!({"Name": vol, "ID": "b1"}),
    );
    assert!(r["Err"].as_str().unwrap().contains("host-a"), "{r}");
    // The container's mount is still counted: removing it unmounts and frees the volume.
    docker_ok(&["rm", "-f", ctr.trim()]);
    let start = Instant::now();
    loop {
        let r = socket_call(
            &b.sock,
            "VolumeDriver.Mount",
            json!({"Name": vol, "ID": "b1"}),
        );
        if r["Err"] == "" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{r}");
        std::thread::sleep(Duration::from_millis(100));
    }
    socket_call(
        &b.sock,
        "VolumeDriver.Unmount",
        json!({"Name": vol, "ID": "b1"}),
    );
    docker_ok(&["volume", "rm", vol]);
    let mut a2 = a2;
    sigterm(&mut a2);
}
