//! volplugin with a real Docker engine (a dockerd of its own, with its own data root and
//! socket, started under `VOLCORE_TEST_DOCKER_ROOT`) and a real etcd (`VOLCORE_TEST_ETCD`):
//! docker volume create / ls / inspect / rm, containers writing and reading a loop-file
//! volume, two containers on one volume, two plugin instances as two hosts with SIGKILL
//! failover, and a plugin restart under a running container.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use volcore_system_tests::*;

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
    // In the running container's own cgroup, where its I/O is charged.
    let ctr_cgroup = format!("/sys/fs/cgroup/blkio/docker/{}", long.trim());
    let limit = |f: &str| std::fs::read_to_string(format!("{ctr_cgroup}/{f}")).unwrap_or_default();
    while !limit("blkio.throttle.write_bps_device").contains(&format!("{dev} 1000000")) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "runtime upload not applied within 5 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(limit("blkio.throttle.read_bps_device").contains(&format!("{dev} 10")));
    docker_ok(&["rm", "-f", long.trim()]);
    let parent =
        std::fs::read_to_string("/sys/fs/cgroup/blkio/docker/blkio.throttle.write_bps_device")
            .unwrap_or_default();
    assert!(
        !parent.contains(&format!("{dev} ")),
        "limit left after the last unmount: {parent}"
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

/// The `real` seconds busybox's `time` printed.
fn real_secs(time_output: &str) -> f64 {
    let line = time_output
        .lines()
        .find(|l| l.trim_start().starts_with("real"))
        .unwrap_or_else(|| panic!("no `real` line in {time_output:?}"));
    // "real\t0m 3.00s"
    let t = line.trim_start().trim_start_matches("real").trim();
    let (m, s) = t.split_once('m').unwrap();
    m.trim().parse::<f64>().unwrap() * 60.0 + s.trim().trim_end_matches('s').parse::<f64>().unwrap()
}

/// Writes `mib` MiB with direct I/O from inside container `ctr`; the rate it saw (B/s).
fn rate_inside(ctr: &str, mib: u64) -> f64 {
    let (code, _, err) = docker(&[
        "exec",
        ctr,
        "sh",
        "-c",
        &format!(
            "rm -f /data/f; time dd if=/dev/zero of=/data/f bs=64k count={} oflag=direct",
            mib * 16
        ),
    ]);
    assert_eq!(code, 0, "{err}");
    (mib << 20) as f64 / real_secs(&err)
}

/// Hole 2n: rate limits reach the container. Measured from inside a container started by
/// the real Docker engine with the volume mounted: the write rate is within 20 % of the
/// policy's limit, and within 20 % of the new limit after a live runtime change. (Before:
/// on cgroup v1 the limit went into the root blkio cgroup, which does not throttle a
/// container's cgroup at all.)
#[test]
fn rate_limits_are_measured_inside_a_container() {
    let c = cluster(30);
    let name = format!("rl{}", uniq());
    let _p = plugin(&c, &name, "mon0", Path::new(DOCKER_PLUGINS));
    let limit: u64 = 1 << 20;
    let (code, _, err) = volcli(
        &c,
        &["policy", "upload", "rlim"],
        Some(&format!(
            r#"{{"backend":"local","create":{{"size":"64MiB"}},"runtime":{{"rate-limit":{{"write-bps":{limit}}}}}}}"#
        )),
    );
    assert_eq!(code, 0, "{err}");
    let vol = format!("rlim/v{}", uniq());
    let (code, _, err) = volcli(&c, &["volume", "create", &vol], None);
    assert_eq!(code, 0, "{err}");
    let ctr = docker_ok(&[
        "run",
        "-d",
        "--volume-driver",
        &name,
        "--network",
        "none",
        "-v",
        &format!("{vol}:/data"),
        "busybox:local",
        "sleep",
        "300",
    ]);
    let ctr = ctr.trim();
    let rate = rate_inside(ctr, 3);
    assert!(
        (rate - limit as f64).abs() <= 0.2 * limit as f64,
        "inside the container: {rate:.0} B/s against a limit of {limit} B/s"
    );
    // A live runtime change: 4 MiB/s, applied to the running container.
    let faster = 4 * limit;
    let (code, _, err) = volcli(
        &c,
        &["volume", "runtime", "upload", &vol],
        Some(&format!(r#"{{"rate-limit":{{"write-bps":{faster}}}}}"#)),
    );
    assert_eq!(code, 0, "{err}");
    let file = format!("/sys/fs/cgroup/blkio/docker/{ctr}/blkio.throttle.write_bps_device");
    let start = Instant::now();
    while !std::fs::read_to_string(&file)
        .unwrap_or_default()
        .contains(&format!(" {faster}"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "runtime change not applied within 5 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rate = rate_inside(ctr, 8);
    assert!(
        (rate - faster as f64).abs() <= 0.2 * faster as f64,
        "inside the container after the change: {rate:.0} B/s against {faster} B/s"
    );
    docker_ok(&["rm", "-f", ctr]);
    let (code, _, err) = volcli(&c, &["volume", "remove", &vol], None);
    assert_eq!(code, 0, "{err}");
}

/// volsupervisor snapshots a volume mounted through the real plugin and Docker (local
/// driver, ext4, the filesystem frozen for the copy) on its schedule; a copy of that
/// snapshot has the data the container wrote.
#[test]
fn scheduled_snapshot_of_a_volume_mounted_through_docker() {
    let c = cluster(5);
    let (code, _, err) = volcli(
        &c,
        &["policy", "upload", "dsnap"],
        Some(
            r#"{"backend":"local","create":{"size":"64MiB"},
                "runtime":{"snapshots":true,"snapshot":{"frequency":"3s","keep":3}}}"#,
        ),
    );
    assert_eq!(code, 0, "{err}");
    let p = plugin(
        &c,
        &format!("vsn{}", uniq()),
        "mon0",
        Path::new(DOCKER_PLUGINS),
    );
    let vol = "dsnap/live";
    docker_ok(&["volume", "create", "-d", &p.name, vol]);
    let long = docker_ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "-v",
        &format!("{vol}:/data"),
        "busybox:local",
        "sh",
        "-c",
        "echo mounted-data > /data/f && sync && sleep 60",
    ]);
    // The file is there before the supervisor starts, so every snapshot it takes has it.
    let start = Instant::now();
    while !c.state.join("mnt/dsnap/live/f").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "container did not write"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _sup = supervisor(&c, "sup-docker");
    let start = Instant::now();
    let snap = loop {
        let (_, out, _) = volcli(&c, &["--json", "volume", "snapshot", "list", vol], None);
        let got: Value = serde_json::from_str(&out).unwrap_or(json!([]));
        if let Some(s) = got
            .as_array()
            .and_then(|a| a.last())
            .and_then(Value::as_str)
        {
            break s.to_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no scheduled snapshot of a mounted volume"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Taken while locked by this host's mount.
    let (_, uses, _) = volcli(&c, &["--json", "use", "list"], None);
    assert!(uses.contains("mon0"), "{uses}");
    let (code, _, err) = volcli(
        &c,
        &["volume", "snapshot", "copy", vol, &snap, "copied"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    docker_ok(&["rm", "-f", long.trim()]);
    let got = docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "dsnap/copied:/data",
        "busybox:local",
        "cat",
        "/data/f",
    ]);
    assert_eq!(got.trim(), "mounted-data");
}
