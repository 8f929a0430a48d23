//! volplugin in-process over its real unix socket: the VolumeDriver protocol, refcounts,
//! cross-host locks (two plugin instances as two hosts on one store), crash and restart,
//! lease loss with fencing, real loop mounts and rate limits.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use volcore::testing::FlakyKv;
use volcore::{Drivers, HostName, KvStore, MemKv, PolicyName};
use volcore_daemons::plugin::{run, LeaseLossAction, PluginConfig, PluginDeps};

fn tmp(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "plugin-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&p).unwrap();
    p
}

async fn call(sock: &Path, endpoint: &str, body: Value) -> Value {
    let mut s = tokio::net::UnixStream::connect(sock)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", sock.display()));
    let body = body.to_string();
    let req = format!(
        "POST /{endpoint} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

struct Host {
    sock: PathBuf,
    task: JoinHandle<anyhow::Result<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Host {
    async fn start(
        kv: Arc<dyn KvStore>,
        drivers: Drivers,
        host: &str,
        dir: &Path,
        prefix: &str,
        on_loss: LeaseLossAction,
    ) -> Self {
        let cfg = PluginConfig {
            socket_dir: dir.to_path_buf(),
            plugin_name: format!("vp-{host}"),
            host: HostName::new(host).unwrap(),
            prefix: prefix.to_owned(),
            default_policy: Some(PolicyName::new("policy1").unwrap()),
            on_lease_loss: on_loss,
            cgroup_v2: None,
            mount_path: None,
        };
        let sock = volcore_daemons::plugin::socket_path(&cfg);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(cfg, PluginDeps { kv, drivers }, async {
            let _ = rx.await;
        }));
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::UnixStream::connect(&sock).await.is_err() {
            assert!(Instant::now() < deadline, "plugin socket never came up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            sock,
            task,
            stop: Some(tx),
        }
    }

    /// Clean stop (SIGTERM path).
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }

    /// Crash: no cleanup at all (like SIGKILL).
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn store(ttl_secs: u64) -> (Arc<dyn KvStore>, String) {
    let kv: Arc<dyn KvStore> = Arc::new(MemKv::new());
    let prefix = "/vp".to_owned();
    kv.put(
        &format!("{prefix}/global"),
        format!(
            r#"{{"TTL":{ttl_secs},"Timeout":1,"MountPath":"{}"}}"#,
            tmp("mnt").display()
        )
        .into_bytes(),
        Default::default(),
    )
    .await
    .unwrap();
    (kv, prefix)
}

async fn upload(kv: &Arc<dyn KvStore>, prefix: &str, name: &str, json: &str) {
    let p = volcore::Policy::from_json(&PolicyName::new(name).unwrap(), json.as_bytes()).unwrap();
    kv.put(
        &format!("{prefix}/policies/{name}"),
        p.to_json(),
        Default::default(),
    )
    .await
    .unwrap();
}

const NULL: &str = r#"{"backend":"null","create":{"size":"10MB"}}"#;

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
    assert_eq!(
        call(&a.sock, "Plugin.Activate", json!({})).await,
        json!({"Implements": ["VolumeDriver"]})
    );
    assert_eq!(
        call(&a.sock, "VolumeDriver.Capabilities", json!({})).await["Capabilities"]["Scope"],
        "global"
    );
    assert_eq!(
        call(
            &a.sock,
            "VolumeDriver.Create",
            json!({"Name": "policy1/db", "Opts": {"size": "20MB"}})
        )
        .await["Err"],
        ""
    );
    // Create is idempotent (Docker calls it for existing volumes too).
    assert_eq!(
        call(
            &a.sock,
            "VolumeDriver.Create",
            json!({"Name": "policy1/db"})
        )
        .await["Err"],
        ""
    );
    let bad = call(
        &a.sock,
        "VolumeDriver.Create",
        json!({"Name": "policy1/x", "Opts": {"quux": "1"}}),
    )
    .await;
    assert!(
        bad["Err"].as_str().unwrap().contains("accepted options"),
        "{bad}"
    );
    // A bare name takes the default policy.
    assert_eq!(
        call(&a.sock, "VolumeDriver.Create", json!({"Name": "short"})).await["Err"],
        ""
    );
    let list = call(&a.sock, "VolumeDriver.List", json!({})).await;
    let names: Vec<&str> = list["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["policy1/db", "policy1/short"]);
    let get = call(&a.sock, "VolumeDriver.Get", json!({"Name": "policy1/db"})).await;
    assert_eq!(get["Volume"]["Status"]["size"], "20MB");
    assert!(get["Volume"]["CreatedAt"].as_str().unwrap().ends_with('Z'));
    let missing = call(&a.sock, "VolumeDriver.Get", json!({"Name": "policy1/none"})).await;
    assert_eq!(missing["Err"], "volume policy1/none does not exist");
    // Two containers share one mount; the last unmount undoes it.
    let m1 = call(
        &a.sock,
        "VolumeDriver.Mount",
        json!({"Name": "policy1/db", "ID": "c1"}),
    )
    .await;
    assert_eq!(m1["Err"], "", "{m1}");
    let m2 = call(
        &a.sock,
        "VolumeDriver.Mount",
        json!({"Name": "policy1/db", "ID": "c2"}),
    )
    .await;
    assert_eq!(m1["Mountpoint"], m2["Mountpoint"]);
    assert!(m1["Mountpoint"].as_str().unwrap().ends_with("/policy1/db"));
    let again = call(
        &a.sock,
        "VolumeDriver.Mount",
        json!({"Name": "policy1/db", "ID": "c1"}),
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
    let get = call(&a.sock, "VolumeDriver.Get", json!({"Name": "policy1/db"})).await;
    assert_eq!(get["Volume"]["Status"]["lock"]["host"], "host-a");
    assert_eq!(get["Volume"]["Status"]["mounted"]["users"], 2);
    assert_eq!(
        call(&a.sock, "VolumeDriver.Path", json!({"Name": "policy1/db"})).await["Mountpoint"],
        m1["Mountpoint"]
    );
    assert_eq!(
        call(
            &a.sock,
            "VolumeDriver.Unmount",
            json!({"Name": "policy1/db", "ID": "c1"})
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
        call(
            &a.sock,
            "VolumeDriver.Unmount",
            json!({"Name": "policy1/db", "ID": "c2"})
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
        call(
            &a.sock,
            "VolumeDriver.Unmount",
            json!({"Name": "policy1/db", "ID": "c2"})
        )
        .await["Err"],
        "",
        "a repeated Unmount is harmless"
    );
    assert_eq!(
        call(&a.sock, "VolumeDriver.Path", json!({"Name": "policy1/db"})).await["Mountpoint"],
        ""
    );
    // docker volume rm keeps the volume unless the policy says destroy-on-remove.
    assert_eq!(
        call(
            &a.sock,
            "VolumeDriver.Remove",
            json!({"Name": "policy1/db"})
        )
        .await["Err"],
        ""
    );
    assert_eq!(
        call(&a.sock, "VolumeDriver.Get", json!({"Name": "policy1/db"})).await["Err"],
        ""
    );
    upload(
        &kv,
        &prefix,
        "gone",
        r#"{"backend":"null","destroy-on-remove":true}"#,
    )
    .await;
    call(&a.sock, "VolumeDriver.Create", json!({"Name": "gone/v"})).await;
    assert_eq!(
        call(&a.sock, "VolumeDriver.Remove", json!({"Name": "gone/v"})).await["Err"],
        ""
    );
    assert_eq!(
        call(&a.sock, "VolumeDriver.Get", json!({"Name": "gone/v"})).await["Err"],
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
    let cfg = PluginConfig {
        socket_dir: dir.clone(),
        plugin_name: "nodefault".into(),
        host: HostName::new("h").unwrap(),
        prefix: prefix.clone(),
        default_policy: None,
        on_lease_loss: LeaseLossAction::Unmount,
        cgroup_v2: None,
        mount_path: None,
    };
    // A stale socket from a crash is replaced.
    std::fs::write(dir.join("nodefault.sock"), b"stale").unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(
        cfg,
        PluginDeps {
            kv,
            drivers: Drivers::new().with_null(),
        },
        async {
            let _ = rx.await;
        },
    ));
    let sock = dir.join("nodefault.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::UnixStream::connect(&sock).await.is_err() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = call(&sock, "VolumeDriver.Create", json!({"Name": "plain"})).await;
    assert!(
        r["Err"]
            .as_str()
            .unwrap()
            .contains("names no policy: write policy/volume"),
        "{r}"
    );
    let r = call(
        &sock,
        "VolumeDriver.Mount",
        json!({"Name": "a/b/c", "ID": "x"}),
    )
    .await;
    assert!(
        r["Err"].as_str().unwrap().contains("form policy/volume"),
        "{r}"
    );
    let _ = tx.send(());
    task.await.unwrap().unwrap();
    assert!(volcore_daemons::plugin::check_plugin_name("a/b").is_err());
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
    call(
        &a.sock,
        "VolumeDriver.Create",
        json!({"Name": "policy1/shared"}),
    )
    .await;
    assert_eq!(
        call(
            &a.sock,
            "VolumeDriver.Mount",
            json!({"Name": "policy1/shared", "ID": "a1"})
        )
        .await["Err"],
        ""
    );
    let refused = call(
        &b.sock,
        "VolumeDriver.Mount",
        json!({"Name": "policy1/shared", "ID": "b1"}),
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
    call(&a.sock, "VolumeDriver.Create", json!({"Name": "nfsish/v"})).await;
    assert_eq!(
        call(
            &a.sock,
            "VolumeDriver.Mount",
            json!({"Name": "nfsish/v", "ID": "a2"})
        )
        .await["Err"],
        ""
    );
    assert_eq!(
        call(
            &b.sock,
            "VolumeDriver.Mount",
            json!({"Name": "nfsish/v", "ID": "b2"})
        )
        .await["Err"],
        ""
    );
    // host-a crashes: within TTL + 2 s host-b can mount.
    let died = Instant::now();
    a.kill().await;
    loop {
        let r = call(
            &b.sock,
            "VolumeDriver.Mount",
            json!({"Name": "policy1/shared", "ID": "b1"}),
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
    call(
        &a.sock,
        "VolumeDriver.Create",
        json!({"Name": "policy1/kept"}),
    )
    .await;
    assert_eq!(
        call(
            &a.sock,
            "VolumeDriver.Mount",
            json!({"Name": "policy1/kept", "ID": "c1"})
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
    let r = call(
        &b.sock,
        "VolumeDriver.Mount",
        json!({"Name": "policy1/kept", "ID": "b1"}),
    )
    .await;
    assert!(r["Err"].as_str().unwrap().contains("host-a"), "{r}");
    // The restarted plugin still counts the container's mount.
    assert_eq!(
        call(
            &a.sock,
            "VolumeDriver.Unmount",
            json!({"Name": "policy1/kept", "ID": "c1"})
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
    let shared = Drivers::new().with_null();
    let dir = tmp("sock");
    let a = Host::start(
        flaky_kv,
        shared.clone(),
        "host-a",
        &dir,
        &prefix,
        LeaseLossAction::Unmount,
    )
    .await;
    let b = Host::start(
        mem.clone(),
        shared.clone(),
        "host-b",
        &dir,
        &prefix,
        LeaseLossAction::Unmount,
    )
    .await;
    call(
        &a.sock,
        "VolumeDriver.Create",
        json!({"Name": "policy1/fenced"}),
    )
    .await;
    assert_eq!(
        call(
            &a.sock,
            "VolumeDriver.Mount",
            json!({"Name": "policy1/fenced", "ID": "a1"})
        )
        .await["Err"],
        ""
    );
    // host-a is cut off from the store; its lease expires; host-b takes the volume.
    flaky.fail_everything();
    let start = Instant::now();
    loop {
        let r = call(
            &b.sock,
            "VolumeDriver.Mount",
            json!({"Name": "policy1/fenced", "ID": "b1"}),
        )
        .await;
        if r["Err"] == "" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(6), "{r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // While cut off, host-a refuses new mounts of locked volumes.
    call(
        &b.sock,
        "VolumeDriver.Create",
        json!({"Name": "policy1/other"}),
    )
    .await;
    let r = call(
        &a.sock,
        "VolumeDriver.Mount",
        json!({"Name": "policy1/other", "ID": "a2"}),
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
    let lock = mem
        .get(&format!("{prefix}/locks/mount/policy1/fenced"))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&lock.value).contains("host-b"));
    a.stop().await;
    b.stop().await;
}

fn blkio(file: &str) -> String {
    std::fs::read_to_string(format!("/sys/fs/cgroup/blkio/{file}")).unwrap_or_default()
}

fn dev_num(dev: &str) -> String {
    volcore::cgroup::DevNum::of(Path::new(dev))
        .unwrap()
        .to_string()
}

/// A real loop-file volume mounted through the plugin, throttled through cgroup v1 blkio:
/// the measured direct-I/O write rate is within 20 % of the limit, and a runtime change
/// is applied to the mounted volume within 5 s.
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
    let local = volcore_daemons::drivers(&tmp("local-state"), None, false).unwrap();
    let dir = tmp("sock");
    let a = Host::start(
        kv.clone(),
        local,
        "host-a",
        &dir,
        &prefix,
        LeaseLossAction::Unmount,
    )
    .await;
    assert_eq!(
        call(
            &a.sock,
            "VolumeDriver.Create",
            json!({"Name": "policy1/fast"})
        )
        .await["Err"],
        ""
    );
    let m = call(
        &a.sock,
        "VolumeDriver.Mount",
        json!({"Name": "policy1/fast", "ID": "c1"}),
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
    assert!(
        blkio("blkio.throttle.write_bps_device").contains(&format!("{num} {limit}")),
        "limit not applied"
    );
    // A real filesystem on a real loop device.
    let mounted = volcore::mountinfo::current().unwrap();
    let mi = mounted
        .iter()
        .find(|x| x.mount_point == mp)
        .expect("mounted");
    assert_eq!(mi.fs_type, "ext4");
    // Measure: 2 MiB of direct writes at 1 MiB/s take about 2 s.
    let bytes: u64 = 2 << 20;
    let start = Instant::now();
    let out = std::process::Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}/data", mp.display()),
            "bs=64k",
            &format!("count={}", bytes / 65536),
            "oflag=direct",
        ])
        .output()
        .unwrap();
    let took = start.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rate = bytes as f64 / took;
    assert!(
        (rate - limit as f64).abs() <= 0.2 * limit as f64,
        "measured {rate:.0} B/s against a limit of {limit} B/s ({took:.2} s)"
    );
    // A runtime change reaches the mounted volume within 5 s.
    let engine_kv = kv.clone();
    let rt = format!(r#"{{"rate-limit":{{"write-bps":{}}}}}"#, 2 * limit);
    engine_kv
        .put(
            &format!("{prefix}/runtime/policy1/fast"),
            rt.into_bytes(),
            Default::default(),
        )
        .await
        .unwrap();
    let start = Instant::now();
    while !blkio("blkio.throttle.write_bps_device").contains(&format!("{num} {}", 2 * limit)) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "runtime change not applied within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        call(
            &a.sock,
            "VolumeDriver.Unmount",
            json!({"Name": "policy1/fast", "ID": "c1"})
        )
        .await["Err"],
        ""
    );
    assert!(
        !blkio("blkio.throttle.write_bps_device").contains(&format!("{num} ")),
        "limit left after unmount"
    );
    assert!(
        !volcore::mountinfo::current()
            .unwrap()
            .iter()
            .any(|x| x.mount_point == mp),
        "still mounted"
    );
    a.stop().await;
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
                call(
                    &a.sock,
                    "VolumeDriver.Create",
                    json!({"Name": format!("{p}/v{i}")})
                )
                .await["Err"],
                ""
            );
        }
    }
    // Same volume name in two policies: two volumes.
    let g1 = call(&a.sock, "VolumeDriver.Get", json!({"Name": "policy1/v0"})).await;
    let g2 = call(&a.sock, "VolumeDriver.Get", json!({"Name": "policy2/v0"})).await;
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
                    call(
                        &sock,
                        "VolumeDriver.Mount",
                        json!({"Name": name, "ID": format!("{h}{i}")}),
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
        call(&a.sock, "VolumeDriver.Create", json!({"Name": "policy1/v"})).await["Err"],
        ""
    );
    let m = call(
        &a.sock,
        "VolumeDriver.Mount",
        json!({"Name": "policy1/v", "ID": "c"}),
    )
    .await;
    assert_eq!(
        m["Mountpoint"], "/mnt/ceph/policy1/v",
        "volplugin's default mount root"
    );
    assert_eq!(
        call(
            &a.sock,
            "VolumeDriver.Unmount",
            json!({"Name": "policy1/v", "ID": "c"})
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
        let r = call(&a.sock, "VolumeDriver.Create", json!({"Name": name})).await;
        assert_eq!(r["Err"], "", "{r}");
    }
    let m = call(
        &a.sock,
        "VolumeDriver.Mount",
        json!({"Name": "policy1/good", "ID": "c1"}),
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
    let list = call(&a.sock, "VolumeDriver.List", json!({})).await;
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
