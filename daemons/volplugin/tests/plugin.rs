//! volplugin in-process over its real unix socket: the VolumeDriver protocol, refcounts,
//! cross-host locks (two plugin instances as two hosts on one store), crash and restart,
//! lease loss with fencing, real loop mounts and rate limits.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod plugin_common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugin_common::*;
use serde_json::{json, Value};
use volcore::policy::BackendKind;
use volcore::testing::{FakeDriver, FlakyKv};
use volcore::{Drivers, KvStore, MemKv};
use volcore_api::docker::Request;
use volplugin::LeaseLossAction;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_and_refcounts() {
    let (kv, prefix) = store(30).await;
    upload(&kv, &prefix, "policy1", NULL).await;
    let dir = tmp("sock");
    let a = Host::start(
        kv.clone(),
        Drivers::new().with_null(),
        "host-a",
        &dir,
        &prefix,
        LeaseLossAction::Unmount,
    )
    .await;
    let mode = std::fs::metadata(&a.sock).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o660
    );
    // Group docker where it exists (docker.io creates it; the test script installs it).
    match nix::unistd::Group::from_name(volplugin::SOCKET_GROUP).unwrap() {
        Some(g) => assert_eq!(std::os::unix::fs::MetadataExt::gid(&mode), g.gid.as_raw()),
        None => assert!(
            std::env::var("CI").is_err(),
            "no docker group under CI: is docker.io installed?"
        ),
    }
    assert_eq!(
        send(&a.sock, &Request::Activate).await,
        json!({"Implements": ["VolumeDriver"]})
    );
    assert_eq!(
        send(&a.sock, &Request::Capabilities).await["Capabilities"]["Scope"],
        "global"
    );
    assert_eq!(
        send(
            &a.sock,
            &Request::Create {
                name: "policy1/db".into(),
                opts: [("size".to_owned(), "20MB".to_owned())].into()
            }
        )
        .await["Err"],
        ""
    );
    // Create is idempotent (Docker calls it for existing volumes too).
    assert_eq!(
        send(
            &a.sock,
            &Request::Create {
                name: "policy1/db".into(),
                opts: Default::default()
            }
        )
        .await["Err"],
        ""
    );
    let bad = send(
        &a.sock,
        &Request::Create {
            name: "policy1/x".into(),
            opts: [("quux".to_owned(), "1".to_owned())].into(),
        },
    )
    .await;
    assert!(
        bad["Err"].as_str().unwrap().contains("accepted options"),
        "{bad}"
    );
    // A bare name takes the default policy.
    assert_eq!(
        send(
            &a.sock,
            &Request::Create {
                name: "short".into(),
                opts: Default::default()
            }
        )
        .await["Err"],
        ""
    );
    let list = send(&a.sock, &Request::List).await;
    let names: Vec<&str> = list["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["policy1/db", "policy1/short"]);
    let get = send(
        &a.sock,
        &Request::Get {
            name: "policy1/db".into(),
        },
    )
    .await;
    assert_eq!(get["Volume"]["Status"]["size"], "20MB");
    assert!(get["Volume"]["CreatedAt"].as_str().unwrap().ends_with('Z'));
    let missing = send(
        &a.sock,
        &Request::Get {
            name: "policy1/none".into(),
        },
    )
    .await;
    assert_eq!(missing["Err"], "volume policy1/none does not exist");
    // Two containers share one mount; the last unmount undoes it.
    let m1 = send(
        &a.sock,
        &Request::Mount {
            name: "policy1/db".into(),
            id: "c1".into(),
        },
    )
    .await;
    assert_eq!(m1["Err"], "", "{m1}");
    let m2 = send(
        &a.sock,
        &Request::Mount {
            name: "policy1/db".into(),
            id: "c2".into(),
        },
    )
    .await;
    assert_eq!(m1["Mountpoint"], m2["Mountpoint"]);
    assert!(m1["Mountpoint"].as_str().unwrap().ends_with("/policy1/db"));
    let again = send(
        &a.sock,
        &Request::Mount {
            name: "policy1/db".into(),
            id: "c1".into(),
        },
    )
    .await;
    assert_eq!(
        again["Mountpoint"], m1["Mountpoint"],
        "a repeated Mount is harmless"
    );
    let rec: Value = serde_json::from_slice(
        &kv.get(&format!("{prefix}/mounts/host-a/policy1/db"))
            .await
            .unwrap()
            .unwrap()
            .value,
    )
    .unwrap();
    assert_eq!(rec["ids"], json!(["c1", "c2"]), "refcounts are persisted");
    assert!(kv
        .get(&format!("{prefix}/locks/mount/policy1/db"))
        .await
        .unwrap()
        .is_some());
    let get = send(
        &a.sock,
        &Request::Get {
            name: "policy1/db".into(),
        },
    )
    .await;
    assert_eq!(get["Volume"]["Status"]["lock"]["host"], "host-a");
    assert_eq!(get["Volume"]["Status"]["mounted"]["users"], 2);
    assert_eq!(
        send(
            &a.sock,
            &Request::Path {
                name: "policy1/db".into()
            }
        )
        .await["Mountpoint"],
        m1["Mountpoint"]
    );
    assert_eq!(
        send(
            &a.sock,
            &Request::Unmount {
                name: "policy1/db".into(),
                id: "c1".into()
            }
        )
        .await["Err"],
        ""
    );
    assert!(
        kv.get(&format!("{prefix}/locks/mount/policy1/db"))
            .await
            .unwrap()
            .is_some(),
        "still used by c2"
    );
    assert_eq!(
        send(
            &a.sock,
            &Request::Unmount {
                name: "policy1/db".into(),
                id: "c2".into()
            }
        )
        .await["Err"],
        ""
    );
    assert!(
        kv.get(&format!("{prefix}/locks/mount/policy1/db"))
            .await
            .unwrap()
            .is_none(),
        "last unmount releases the lock"
    );
    assert!(kv
        .get(&format!("{prefix}/mounts/host-a/policy1/db"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        send(
            &a.sock,
            &Request::Unmount {
                name: "policy1/db".into(),
                id: "c2".into()
            }
        )
        .await["Err"],
        "",
        "a repeated Unmount is harmless"
    );
    assert_eq!(
        send(
            &a.sock,
            &Request::Path {
                name: "policy1/db".into()
            }
        )
        .await["Mountpoint"],
        ""
    );
    // docker volume rm keeps the volume unless the policy says destroy-on-remove.
    assert_eq!(
        send(
            &a.sock,
            &Request::Remove {
                name: "policy1/db".into()
            }
        )
        .await["Err"],
        ""
    );
    assert_eq!(
        send(
            &a.sock,
            &Request::Get {
                name: "policy1/db".into()
            }
        )
        .await["Err"],
        ""
    );
    upload(
        &kv,
        &prefix,
        "gone",
        r#"{"backend":"null","destroy-on-remove":true}"#,
    )
    .await;
    send(
        &a.sock,
        &Request::Create {
            name: "gone/v".into(),
            opts: Default::default(),
        },
    )
    .await;
    assert_eq!(
        send(
            &a.sock,
            &Request::Remove {
                name: "gone/v".into()
            }
        )
        .await["Err"],
        ""
    );
    assert_eq!(
        send(
            &a.sock,
            &Request::Get {
                name: "gone/v".into()
            }
        )
        .await["Err"],
        "volume gone/v does not exist"
    );
    let sock = a.sock.clone();
    a.stop().await;
    assert!(!sock.exists(), "socket removed on clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_without_policy_need_a_default() {
    let (kv, prefix) = store(30).await;
    let dir = tmp("sock");
    // A stale socket from a crash is replaced.
    std::fs::write(dir.join("nodefault.sock"), b"stale").unwrap();
    let host = HostSpec::new(kv, Drivers::new().with_null(), "h", &dir, &prefix)
        .no_default_policy()
        .start_named("nodefault")
        .await
        .unwrap();
    let sock = host.sock.clone();
    assert_eq!(sock, dir.join("nodefault.sock"));
    let r = send(
        &sock,
        &Request::Create {
            name: "plain".into(),
            opts: Default::default(),
        },
    )
    .await;
    assert!(
        r["Err"]
            .as_str()
            .unwrap()
            .contains("names no policy: write policy/volume"),
        "{r}"
    );
    let r = send(
        &sock,
        &Request::Mount {
            name: "a/b/c".into(),
            id: "x".into(),
        },
    )
    .await;
    assert!(
        r["Err"].as_str().unwrap().contains("form policy/volume"),
        "{r}"
    );
    host.stop().await;
    assert!(volplugin::check_plugin_name("a/b").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_host_refused_until_first_dies() {
    let (kv, prefix) = store(2).await;
    upload(&kv, &prefix, "policy1", NULL).await;
    let shared = Drivers::new().with_null(); // one storage system, two hosts
    let dir = tmp("sock");
    let a = Host::start(
        kv.clone(),
        shared.clone(),
        "host-a",
        &dir,
        &prefix,
        LeaseLossAction::Unmount,
    )
    .await;
    let b = Host::start(
        kv.clone(),
        shared.clone(),
        "host-b",
        &dir,
        &prefix,
        LeaseLossAction::Unmount,
    )
    .await;
    send(
        &a.sock,
        &Request::Create {
            name: "policy1/shared".into(),
            opts: Default::default(),
        },
    )
    .await;
    assert_eq!(
        send(
            &a.sock,
            &Request::Mount {
                name: "policy1/shared".into(),
                id: "a1".into()
            }
        )
        .await["Err"],
        ""
    );
    let refused = send(
        &b.sock,
        &Request::Mount {
            name: "policy1/shared".into(),
            id: "b1".into(),
        },
    )
    .await;
    let msg = refused["Err"].as_str().unwrap();
    assert!(msg.contains("by host host-a for Mount since"), "{msg}");
    assert!(
        msg.ends_with("if host-a is dead, run: volcli use force-remove policy1/shared"),
        "{msg}"
    );
    // Unlocked volumes mount anywhere.
    upload(
        &kv,
        &prefix,
        "nfsish",
        r#"{"backend":"null","unlocked":true}"#,
    )
    .await;
    send(
        &a.sock,
        &Request::Create {
            name: "nfsish/v".into(),
            opts: Default::default(),
        },
    )
    .await;
    assert_eq!(
        send(
            &a.sock,
            &Request::Mount {
                name: "nfsish/v".into(),
                id: "a2".into()
            }
        )
        .await["Err"],
        ""
    );
    assert_eq!(
        send(
            &b.sock,
            &Request::Mount {
                name: "nfsish/v".into(),
                id: "b2".into()
            }
        )
        .await["Err"],
        ""
    );
    // host-a crashes: within TTL + 2 s host-b can mount.
    let died = Instant::now();
    a.kill().await;
    loop {
        let r = send(
            &b.sock,
            &Request::Mount {
                name: "policy1/shared".into(),
                id: "b1".into(),
            },
        )
        .await;
        if r["Err"] == "" {
            break;
        }
        assert!(
            died.elapsed() < Duration::from_secs(4),
            "host-b still refused after {:?}: {r}",
            died.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_plugin_keeps_its_lock() {
    let (kv, prefix) = store(2).await;
    upload(&kv, &prefix, "policy1", NULL).await;
    let shared = Drivers::new().with_null();
    let dir = tmp("sock");
    let a = Host::start(
        kv.clone(),
        shared.clone(),
        "host-a",
        &dir,
        &prefix,
        LeaseLossAction::Unmount,
    )
    .await;
    send(
        &a.sock,
        &Request::Create {
            name: "policy1/kept".into(),
            opts: Default::default(),
        },
    )
    .await;
    assert_eq!(
        send(
            &a.sock,
            &Request::Mount {
                name: "policy1/kept".into(),
                id: "c1".into()
            }
        )
        .await["Err"],
        ""
    );
    let token = kv
        .get(&format!("{prefix}/locks/mount/policy1/kept"))
        .await
        .unwrap()
        .unwrap()
        .create_rev;
    a.stop().await; // SIGTERM: the volume is still mounted, so its lock stays
    let a = Host::start(
        kv.clone(),
        shared.clone(),
        "host-a",
        &dir,
        &prefix,
        LeaseLossAction::Unmount,
    )
    .await;
    // Past the old lease's TTL the lock is still there, re-bound to the new lease.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let e = kv
        .get(&format!("{prefix}/locks/mount/policy1/kept"))
        .await
        .unwrap()
        .expect("lock kept across restart");
    assert_eq!(e.create_rev, token, "same fencing token");
    let b = Host::start(
        kv.clone(),
        shared.clone(),
        "host-b",
        &dir,
        &prefix,
        LeaseLossAction::Unmount,
    )
    .await;
    let r = send(
        &b.sock,
        &Request::Mount {
            name: "policy1/kept".into(),
            id: "b1".into(),
        },
    )
    .await;
    assert!(r["Err"].as_str().unwrap().contains("host-a"), "{r}");
    // The restarted plugin still counts the container's mount.
    assert_eq!(
        send(
            &a.sock,
            &Request::Unmount {
                name: "policy1/kept".into(),
                id: "c1".into()
            }
        )
        .await["Err"],
        ""
    );
    assert!(kv
        .get(&format!("{prefix}/locks/mount/policy1/kept"))
        .await
        .unwrap()
        .is_none());
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_lease_fences_by_unmounting() {
    let (mem, prefix) = store(2).await;
    upload(&mem, &prefix, "policy1", NULL).await;
    let flaky = FlakyKv::new(mem.clone());
    let flaky_kv: Arc<dyn KvStore> = Arc::new(flaky.clone());
    // Two machines on one storage system, each with its own mount table.
    let fa = FakeDriver::new(BackendKind::Null);
    let fb = fa.another_host();
    let dir = tmp("sock");
    let a = Host::start(
        flaky_kv,
        Drivers::new().with(Arc::new(fa.clone())),
        "host-a",
        &dir,
        &prefix,
        LeaseLossAction::Unmount,
    )
    .await;
    let b = Host::start(
        mem.clone(),
        Drivers::new().with(Arc::new(fb.clone())),
        "host-b",
        &dir,
        &prefix,
        LeaseLossAction::Unmount,
    )
    .await;
    send(
        &a.sock,
        &Request::Create {
            name: "policy1/fenced".into(),
            opts: Default::default(),
        },
    )
    .await;
    assert_eq!(
        send(
            &a.sock,
            &Request::Mount {
                name: "policy1/fenced".into(),
                id: "a1".into()
            }
        )
        .await["Err"],
        ""
    );
    // host-a is cut off from the store; its lease expires; host-b takes the volume.
    flaky.fail_everything();
    let start = Instant::now();
    loop {
        let r = send(
            &b.sock,
            &Request::Mount {
                name: "policy1/fenced".into(),
                id: "b1".into(),
            },
        )
        .await;
        if r["Err"] == "" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(6), "{r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // While cut off, host-a refuses new mounts of locked volumes.
    send(
        &b.sock,
        &Request::Create {
            name: "policy1/other".into(),
            opts: Default::default(),
        },
    )
    .await;
    let r = send(
        &a.sock,
        &Request::Mount {
            name: "policy1/other".into(),
            id: "a2".into(),
        },
    )
    .await;
    assert_ne!(r["Err"], "", "a cut-off host mounted a locked volume");
    flaky.heal();
    // host-a gets a new lease, finds host-b holding the volume and unmounts it (fencing).
    let start = Instant::now();
    while mem
        .get(&format!("{prefix}/mounts/host-a/policy1/fenced"))
        .await
        .unwrap()
        .is_some()
    {
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "host-a never fenced itself"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The fence is the driver's unmount, not only a deleted record.
    assert!(
        fa.mounted_volumes().is_empty(),
        "host-a's driver still has the volume mounted"
    );
    assert_eq!(fb.mounted_volumes().len(), 1);
    let lock = mem
        .get(&format!("{prefix}/locks/mount/policy1/fenced"))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&lock.value).contains("host-b"));
    a.stop().await;
    b.stop().await;
}

const BLKIO: &str = "/sys/fs/cgroup/blkio";

fn throttle_in(cgroup: &Path, num: &str) -> Option<u64> {
    std::fs::read_to_string(cgroup.join("blkio.throttle.write_bps_device"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{num} "))?.trim().parse().ok())
}

fn dev_num(dev: &str) -> String {
    volcore::cgroup::DevNum::of(Path::new(dev))
        .unwrap()
        .to_string()
}

/// Writes `bytes` with direct I/O from a process inside `cgroup`; returns the rate.
fn dd_rate_in(cgroup: &Path, file: &Path, bytes: u64) -> f64 {
    let start = Instant::now();
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            &format!(
                "echo $$ > {}/cgroup.procs && exec dd if=/dev/zero of={} bs=64k count={} oflag=direct",
                cgroup.display(),
                file.display(),
                bytes / 65536
            ),
        ])
        .output()
        .unwrap();
    let took = start.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bytes as f64 / took
}

/// A real loop-file volume mounted through the plugin, throttled where a container's I/O
/// is charged (cgroup v1 blkio is not hierarchical): in a cgroup that existed before the
/// mount and in one made after it (a container started later, caught by the watcher),
/// measured from a process inside that cgroup — within 20 % of the limit — and a runtime
/// change reaches both within 5 s; the unmount clears them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_volume_mount_and_rate_limits() {
    let (kv, prefix) = store(30).await;
    let limit: u64 = 1 << 20;
    upload(
        &kv,
        &prefix,
        "policy1",
        &format!(r#"{{"backend":"local","create":{{"size":"64MiB"}},"runtime":{{"rate-limit":{{"write-bps":{limit}}}}}}}"#),
    )
    .await;
    let parent_name = format!("volcore-test-{}", std::process::id());
    let parent = Path::new(BLKIO).join(&parent_name);
    let before = parent.join("before");
    std::fs::create_dir_all(&before).unwrap();
    let local = volcore_daemon::drivers(&tmp("local-state"), None, false).unwrap();
    let dir = tmp("sock");
    let a = HostSpec::new(kv.clone(), local, "host-a", &dir, &prefix)
        .cgroup_parent(&parent_name)
        .start()
        .await;
    assert_eq!(
        send(
            &a.sock,
            &Request::Create {
                name: "policy1/fast".into(),
                opts: Default::default()
            }
        )
        .await["Err"],
        ""
    );
    let m = send(
        &a.sock,
        &Request::Mount {
            name: "policy1/fast".into(),
            id: "c1".into(),
        },
    )
    .await;
    assert_eq!(m["Err"], "", "{m}");
    let mp = PathBuf::from(m["Mountpoint"].as_str().unwrap());
    let rec: Value = serde_json::from_slice(
        &kv.get(&format!("{prefix}/mounts/host-a/policy1/fast"))
            .await
            .unwrap()
            .unwrap()
            .value,
    )
    .unwrap();
    let dev = rec["device"].as_str().unwrap().to_owned();
    let num = dev_num(&dev);
    assert_eq!(
        throttle_in(&before, &num),
        Some(limit),
        "limit not applied to an existing cgroup"
    );
    // A container started after the mount: its cgroup gets the limit as it appears.
    let after = parent.join("after");
    std::fs::create_dir(&after).unwrap();
    let start = Instant::now();
    while throttle_in(&after, &num) != Some(limit) {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "a new cgroup did not get the limit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mounted = volcore::mountinfo::current().unwrap();
    let mi = mounted
        .iter()
        .find(|x| x.mount_point == mp)
        .expect("mounted");
    assert_eq!(mi.fs_type, "ext4");
    // Measured inside each cgroup: 2 MiB of direct writes at 1 MiB/s take about 2 s.
    for cg in [&before, &after] {
        let rate = dd_rate_in(cg, &mp.join("data"), 2 << 20);
        assert!(
            (rate - limit as f64).abs() <= 0.2 * limit as f64,
            "{}: measured {rate:.0} B/s against a limit of {limit} B/s",
            cg.display()
        );
    }
    // A runtime change reaches the mounted volume in every cgroup within 5 s.
    let rt = format!(r#"{{"rate-limit":{{"write-bps":{}}}}}"#, 2 * limit);
    kv.put(
        &format!("{prefix}/runtime/policy1/fast"),
        rt.into_bytes(),
        Default::default(),
    )
    .await
    .unwrap();
    let start = Instant::now();
    while throttle_in(&before, &num) != Some(2 * limit)
        || throttle_in(&after, &num) != Some(2 * limit)
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "runtime change not applied within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        send(
            &a.sock,
            &Request::Unmount {
                name: "policy1/fast".into(),
                id: "c1".into()
            }
        )
        .await["Err"],
        ""
    );
    assert_eq!(throttle_in(&before, &num), None, "limit left after unmount");
    assert_eq!(throttle_in(&after, &num), None, "limit left after unmount");
    assert!(
        !volcore::mountinfo::current()
            .unwrap()
            .iter()
            .any(|x| x.mount_point == mp),
        "still mounted"
    );
    a.stop().await;
    for cg in [&before, &after, &parent] {
        let _ = std::fs::remove_dir(cg);
    }
}

/// volplugin scenarios 15 and 42: volumes of different policies are isolated, and 15
/// volumes mounted concurrently from two hosts give exactly one winner each (locked) or
/// none refused (unlocked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_mounts_from_two_hosts() {
    let (kv, prefix) = store(30).await;
    upload(&kv, &prefix, "policy1", NULL).await;
    upload(
        &kv,
        &prefix,
        "policy2",
        r#"{"backend":"null","unlocked":true}"#,
    )
    .await;
    let shared = Drivers::new().with_null();
    let dir = tmp("sock");
    let a = Host::start(
        kv.clone(),
        shared.clone(),
        "host-a",
        &dir,
        &prefix,
        LeaseLossAction::Unmount,
    )
    .await;
    let b = Host::start(
        kv.clone(),
        shared.clone(),
        "host-b",
        &dir,
        &prefix,
        LeaseLossAction::Unmount,
    )
    .await;
    for i in 0..15 {
        for p in ["policy1", "policy2"] {
            assert_eq!(
                send(
                    &a.sock,
                    &Request::Create {
                        name: format!("{p}/v{i}"),
                        opts: Default::default()
                    }
                )
                .await["Err"],
                ""
            );
        }
    }
    // Same volume name in two policies: two volumes.
    let g1 = send(
        &a.sock,
        &Request::Get {
            name: "policy1/v0".into(),
        },
    )
    .await;
    let g2 = send(
        &a.sock,
        &Request::Get {
            name: "policy2/v0".into(),
        },
    )
    .await;
    assert_eq!(
        (
            g1["Volume"]["Status"]["unlocked"].as_bool(),
            g2["Volume"]["Status"]["unlocked"].as_bool()
        ),
        (Some(false), Some(true))
    );
    for (policy, want_failures) in [("policy1", 15), ("policy2", 0)] {
        let mut tasks = Vec::new();
        for i in 0..15 {
            for (h, sock) in [("a", a.sock.clone()), ("b", b.sock.clone())] {
                let name = format!("{policy}/v{i}");
                tasks.push(tokio::spawn(async move {
                    send(
                        &sock,
                        &Request::Mount {
                            name,
                            id: format!("{h}{i}"),
                        },
                    )
                    .await
                }));
            }
        }
        let mut failures = 0;
        for t in tasks {
            if t.await.unwrap()["Err"] != "" {
                failures += 1;
            }
        }
        assert_eq!(failures, want_failures, "{policy}");
    }
    a.stop().await;
    b.stop().await;
}

/// volplugin scenario 17: no global configuration stored — the plugin runs on defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_without_global_configuration() {
    let kv: Arc<dyn KvStore> = Arc::new(MemKv::new());
    let prefix = "/noglobal";
    upload(&kv, prefix, "policy1", NULL).await;
    let dir = tmp("sock");
    let a = Host::start(
        kv.clone(),
        Drivers::new().with_null(),
        "host-a",
        &dir,
        prefix,
        LeaseLossAction::Unmount,
    )
    .await;
    assert_eq!(
        send(
            &a.sock,
            &Request::Create {
                name: "policy1/v".into(),
                opts: Default::default()
            }
        )
        .await["Err"],
        ""
    );
    let m = send(
        &a.sock,
        &Request::Mount {
            name: "policy1/v".into(),
            id: "c".into(),
        },
    )
    .await;
    assert_eq!(
        m["Mountpoint"], "/mnt/ceph/policy1/v",
        "volplugin's default mount root"
    );
    assert_eq!(
        send(
            &a.sock,
            &Request::Unmount {
                name: "policy1/v".into(),
                id: "c".into()
            }
        )
        .await["Err"],
        ""
    );
    a.stop().await;
}

/// One corrupt mount record (a hand edit, a half-written upgrade) does not break `List`
/// for every volume (the same listing serves re-establishing locks after a lost lease).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_mount_record_does_not_break_list() {
    let (kv, prefix) = store(30).await;
    upload(&kv, &prefix, "policy1", NULL).await;
    let dir = tmp("sock");
    let a = Host::start(
        kv.clone(),
        Drivers::new().with_null(),
        "host-a",
        &dir,
        &prefix,
        LeaseLossAction::Unmount,
    )
    .await;
    for name in ["policy1/good", "policy1/bad"] {
        let r = send(
            &a.sock,
            &Request::Create {
                name: name.into(),
                opts: Default::default(),
            },
        )
        .await;
        assert_eq!(r["Err"], "", "{r}");
    }
    let m = send(
        &a.sock,
        &Request::Mount {
            name: "policy1/good".into(),
            id: "c1".into(),
        },
    )
    .await;
    assert_eq!(m["Err"], "", "{m}");
    let good_path = m["Mountpoint"].as_str().unwrap().to_owned();
    kv.put(
        &format!("{prefix}/mounts/host-a/policy1/bad"),
        b"{not json".to_vec(),
        Default::default(),
    )
    .await
    .unwrap();
    let list = send(&a.sock, &Request::List).await;
    assert_eq!(list["Err"], "", "{list}");
    let vols: Vec<(String, String)> = list["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap().to_owned();
            (s("Name"), s("Mountpoint"))
        })
        .collect();
    assert_eq!(
        vols,
        vec![
            ("policy1/bad".to_owned(), String::new()),
            ("policy1/good".to_owned(), good_path.clone()),
        ]
    );
    a.stop().await;
}
