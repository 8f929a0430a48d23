//! End to end: the real volmaster binary on a real etcd (`VOLCORE_TEST_ETCD`, started by
//! scripts/test), driven by the real volcli binary. Covers every volcli command and
//! volplugin's system-test scenarios 3–8, 10–12 and 37–39 that need no real storage
//! (volumes use the `null` backend).

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use volcore_system_tests::{client, wait_ready, Out};

struct Master {
    child: Child,
    url: String,
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn etcd() -> String {
    std::env::var("VOLCORE_TEST_ETCD").unwrap_or_else(|_| {
        panic!("VOLCORE_TEST_ETCD is not set: run scripts/test, which starts etcd on a free loopback port and sets it")
    })
}

fn unique_prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "/e2e-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn master() -> Master {
    let mut child = Command::new(volcore_system_tests::bin("volmaster"))
        .args([
            "--kv",
            &format!("etcd://{}", etcd()),
            "--prefix",
            &unique_prefix(),
        ])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--allow-null-backend",
            "--host-label",
            "mon0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let addr = volcore_system_tests::listening(&mut child, "volmaster");
    wait_ready(&addr);
    Master {
        child,
        url: format!("http://{addr}"),
    }
}

fn volcli(m: &Master, args: &[&str], stdin: Option<&str>) -> Out {
    Out::of(volcore_system_tests::volcli_at(&m.url, args, stdin))
}

fn fixture(rel: &str) -> String {
    let p = volcore_system_tests::root().join("testdata").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// volplugin's policy1, on the null backend (no storage here).
fn null_policy(name: &str) -> String {
    fixture(&format!("volplugin/ceph/{name}.json"))
        .replace(
            r#""crud": "ceph", "mount": "ceph", "snapshot": "ceph""#,
            r#""crud": "null", "mount": "null", "snapshot": "null""#,
        )
        .replace(r#""backend": "ceph""#, r#""backend": "null""#)
}

fn setup() -> Master {
    let m = master();
    volcli(
        &m,
        &["global", "upload"],
        Some(&fixture("volplugin/global1.json")),
    )
    .ok();
    volcli(
        &m,
        &["policy", "upload", "policy1"],
        Some(&null_policy("policy1")),
    )
    .ok();
    m
}

#[test]
fn scenario_3_5_global_configuration() {
    let m = master();
    let g1 = fixture("volplugin/global1.json");
    volcli(&m, &["global", "upload"], Some(&g1)).ok();
    let got = volcli(&m, &["global", "get"], None).ok().json();
    assert_eq!(
        got,
        serde_json::json!({"TTL": 30, "Timeout": 10, "MountPath": "/mnt/ceph", "Debug": true})
    );
    volcli(
        &m,
        &["global", "upload"],
        Some(&fixture("volplugin/global2.json")),
    )
    .ok();
    let got = volcli(&m, &["global", "get"], None).ok().json();
    assert_eq!(got["Timeout"], 30);
    assert_eq!(got["Debug"], false);
    volcli(&m, &["global", "upload"], Some("{}")).ok();
    let got = volcli(&m, &["global", "get"], None).ok().json();
    assert_eq!(
        got,
        serde_json::json!({"TTL": 30, "Timeout": 10, "MountPath": "/mnt/ceph", "Debug": false})
    );
    let bad = volcli(&m, &["global", "upload"], Some(r#"{"TTL":"soon"}"#));
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("TTL must be a whole number"),
        "{}",
        bad.stderr
    );
    let notjson = volcli(&m, &["global", "upload"], Some("TTL=3"));
    assert_eq!(notjson.code, 1);
}

#[test]
fn scenario_6_policies_and_history() {
    let m = master();
    // volplugin's files upload unchanged, whatever their backend — except fs.json, whose
    // "falsefs" is `/bin/false` run through a shell (#13: no shell runs a template).
    let refused = volcli(
        &m,
        &["policy", "upload", "ceph-fs"],
        Some(&fixture("volplugin/ceph/fs.json")),
    );
    let err = &refused.stderr;
    assert_eq!(refused.code, 1, "{err}");
    assert!(
        err.contains("\"falsefs\"") && err.contains("never names the device"),
        "{err}"
    );
    for f in [
        "ceph/policy1",
        "ceph/policy2",
        "ceph/backend",
        "nfs/policy1",
        "nfs/unlocked",
    ] {
        let name = f.replace('/', "-");
        volcli(
            &m,
            &["policy", "upload", &name],
            Some(&fixture(&format!("volplugin/{f}.json"))),
        )
        .ok();
    }
    let got = volcli(&m, &["policy", "get", "ceph-policy1"], None)
        .ok()
        .json();
    assert_eq!(got["name"], "ceph-policy1");
    assert_eq!(got["filesystems"]["ext4"], "mkfs.ext4 -m0 %");
    let list = volcli(&m, &["policy", "list"], None).ok();
    assert!(
        list.lines().contains(&"ceph-policy1") && list.lines().contains(&"nfs-unlocked"),
        "{}",
        list.stdout
    );
    // History: every upload is a revision, listed in order and fetched as uploaded.
    volcli(
        &m,
        &["policy", "upload", "ceph-policy1"],
        Some(&fixture("volplugin/ceph/policy2.json")),
    )
    .ok();
    let revs = volcli(&m, &["policy", "history", "list", "ceph-policy1"], None).ok();
    let revs: Vec<u64> = revs.lines().iter().map(|l| l.parse().unwrap()).collect();
    assert_eq!(revs.len(), 2);
    assert!(revs[0] < revs[1]);
    let first = volcli(
        &m,
        &[
            "policy",
            "history",
            "get",
            "ceph-policy1",
            &revs[0].to_string(),
        ],
        None,
    )
    .ok()
    .json();
    assert_eq!(first["create"]["size"], "10MB");
    let missing = volcli(&m, &["policy", "history", "get", "ceph-policy1", "1"], None);
    assert_eq!(missing.code, 3, "{}", missing.stderr);
    // Delete; then get fails with "not found".
    let out = volcli(&m, &["policy", "delete", "ceph-policy2"], None).ok();
    assert_eq!(out.stdout.trim(), "policy ceph-policy2 deleted");
    let gone = volcli(&m, &["policy", "get", "ceph-policy2"], None);
    assert_eq!(gone.code, 3);
    assert_eq!(gone.stderr.trim(), "policy ceph-policy2 does not exist");
    let bad = volcli(
        &m,
        &["policy", "upload", "p"],
        Some(&fixture("rejected/frequency-10d.json")),
    );
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("days are not a unit here"),
        "{}",
        bad.stderr
    );
    let badname = volcli(&m, &["policy", "get", "a.b"], None);
    assert_eq!(badname.code, 2);
}

#[test]
fn policy_watch_prints_uploads() {
    let m = setup();
    let mut watch = volcore_system_tests::volcli_command(&m.url)
        .args(["policy", "watch"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let up = volcli(
        &m,
        &["--json", "policy", "upload", "watched"],
        Some(&null_policy("policy2")),
    )
    .ok()
    .json();
    let mut line = String::new();
    BufReader::new(watch.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(line.trim_end(), format!("watched\t{}", up["revision"]));
}

#[test]
fn scenario_7_8_volumes() {
    let m = setup();
    assert!(volcli(&m, &["volume", "list", "policy1"], None)
        .ok()
        .stdout
        .is_empty());
    assert!(volcli(&m, &["volume", "list-all"], None)
        .ok()
        .stdout
        .is_empty());
    let out = volcli(&m, &["volume", "create", "policy1/test"], None).ok();
    assert_eq!(out.stdout.trim(), "volume policy1/test created");
    assert_eq!(
        volcli(&m, &["volume", "list", "policy1"], None)
            .ok()
            .lines(),
        vec!["test"]
    );
    assert_eq!(
        volcli(&m, &["volume", "list-all"], None).ok().lines(),
        vec!["policy1/test"]
    );
    let vol = volcli(&m, &["volume", "get", "policy1/test"], None)
        .ok()
        .json();
    let pol = volcli(&m, &["policy", "get", "policy1"], None).ok().json();
    assert_eq!(vol["create"], pol["create"]);
    assert_eq!(vol["create"]["filesystem"], "ext4");
    volcli(&m, &["volume", "remove", "policy1/test"], None).ok();
    let gone = volcli(&m, &["volume", "get", "policy1/test"], None);
    assert_eq!(gone.code, 3);
    assert_eq!(gone.stderr.trim(), "volume policy1/test does not exist");
    volcli(
        &m,
        &[
            "volume",
            "create",
            "policy1/nosnap",
            "--opt",
            "snapshots=false",
        ],
        None,
    )
    .ok();
    let vol = volcli(&m, &["volume", "get", "policy1/nosnap"], None)
        .ok()
        .json();
    assert_eq!(vol["runtime"]["snapshots"], false);
    assert_eq!(vol["runtime"]["snapshot"], pol["runtime"]["snapshot"]);
    // Scenario 8: volumes from before and after a policy re-upload are both listed.
    volcli(
        &m,
        &["policy", "upload", "policy1"],
        Some(&null_policy("policy2")),
    )
    .ok();
    volcli(&m, &["volume", "create", "policy1/after"], None).ok();
    let all = volcli(&m, &["volume", "list-all"], None).ok();
    assert_eq!(all.lines(), vec!["policy1/after", "policy1/nosnap"]);
    let before = volcli(&m, &["volume", "get", "policy1/nosnap"], None)
        .ok()
        .json();
    assert_eq!(
        before["create"]["size"], "10MB",
        "a re-upload changed an existing volume"
    );
    let after = volcli(&m, &["volume", "get", "policy1/after"], None)
        .ok()
        .json();
    assert_eq!(after["create"]["size"], "100MB");
    // Bad input.
    let bad = volcli(
        &m,
        &["volume", "create", "policy1/x", "--opt", "quux=1"],
        None,
    );
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr
            .contains("unknown option \"quux\"; accepted options: size"),
        "{}",
        bad.stderr
    );
    assert_eq!(
        volcli(
            &m,
            &["volume", "create", "policy1/x", "--opt", "novalue"],
            None
        )
        .code,
        2
    );
    assert_eq!(volcli(&m, &["volume", "create", "noslash"], None).code, 2);
    assert_eq!(
        volcli(&m, &["volume", "create", "nopolicy/x"], None).code,
        3
    );
    // Policy delete keeps volumes; needs --force while they exist.
    let busy = volcli(&m, &["policy", "delete", "policy1"], None);
    assert_eq!(busy.code, 4, "{}", busy.stderr);
    volcli(&m, &["policy", "delete", "policy1", "--force"], None).ok();
    volcli(&m, &["volume", "get", "policy1/after"], None).ok();
    // force-remove deletes the record only.
    volcli(&m, &["volume", "force-remove", "policy1/after"], None).ok();
    assert_eq!(
        volcli(&m, &["volume", "get", "policy1/after"], None).code,
        3
    );
    assert_eq!(
        volcli(&m, &["volume", "force-remove", "policy1/after"], None).code,
        3
    );
}

#[test]
fn scenario_4_concurrent_removes() {
    let m = setup();
    volcli(&m, &["volume", "create", "policy1/multi"], None).ok();
    let url = m.url.clone();
    let handles: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let out = volcore_system_tests::volcli_command(url)
                    .args(["volume", "remove", "policy1/multi"])
                    .output()
                    .unwrap();
                (
                    out.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            })
        })
        .collect();
    let results: Vec<(i32, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|(c, _)| *c == 0).count();
    assert_eq!(ok, 1, "{results:?}");
    for (c, e) in results.iter().filter(|(c, _)| *c != 0) {
        assert_eq!(*c, 3, "{e}");
        assert_eq!(e.trim(), "volume policy1/multi does not exist");
    }
}

#[test]
fn battery_concurrent_creates_one_winner_each() {
    let m = setup();
    let mut handles = Vec::new();
    for i in 0..15 {
        for _client in 0..3 {
            let url = m.url.clone();
            handles.push(std::thread::spawn(move || {
                let out = volcore_system_tests::volcli_command(url)
                    .args(["volume", "create", &format!("policy1/par{i}")])
                    .output()
                    .unwrap();
                (
                    i,
                    out.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            }));
        }
    }
    let mut wins = [0u32; 15];
    for h in handles {
        let (i, code, err) = h.join().unwrap();
        match code {
            0 => wins[i] += 1,
            4 => assert!(
                err.contains("already exists") || err.contains("locked"),
                "{err}"
            ),
            other => panic!("volume {i}: exit {other}: {err}"),
        }
    }
    assert!(wins.iter().all(|w| *w == 1), "{wins:?}");
    assert_eq!(
        volcli(&m, &["volume", "list", "policy1"], None)
            .ok()
            .lines()
            .len(),
        15
    );
}

/// Runs `use exec VOL -- sleep N` in the background; returns once it holds the locks.
fn hold(m: &Master, vol: &str, secs: u32) -> Child {
    let mut child = volcore_system_tests::volcli_command(&m.url)
        .args(["use", "exec", vol, "--", "sleep", &secs.to_string()])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if volcli(m, &["use", "get", vol], None).code == 0 {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("use exec never took the locks of {vol}");
}

#[test]
fn scenario_10_11_37_use_locks_and_remove() {
    let m = setup();
    volcli(&m, &["volume", "create", "policy1/used"], None).ok();
    assert!(volcli(&m, &["use", "list"], None).ok().stdout.is_empty());
    let mut holder = hold(&m, "policy1/used", 30);
    let list = volcli(&m, &["--json", "use", "list"], None).ok().json();
    let vols: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["volume"].as_str().unwrap())
        .collect();
    assert_eq!(vols, vec!["policy1/used", "policy1/used"]);
    let got = volcli(&m, &["--json", "use", "get", "policy1/used"], None)
        .ok()
        .json();
    assert_eq!(got[0]["reason"], "Maintenance");
    assert!(got[0]["host"].as_str().is_some());
    let table = volcli(&m, &["use", "list", "--kind", "mount"], None).ok();
    assert!(table.stdout.starts_with("VOLUME"), "{}", table.stdout);
    assert_eq!(table.lines().len(), 2);
    // Scenario 37 / 11: removing a locked volume fails after the timeout, naming the holder.
    let start = Instant::now();
    let busy = volcli(
        &m,
        &["volume", "remove", "policy1/used", "--timeout", "1s"],
        None,
    );
    assert_eq!(busy.code, 4, "{}", busy.stderr);
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert!(
        busy.stderr.contains("volcli use force-remove policy1/used"),
        "{}",
        busy.stderr
    );
    // A second create of it is refused too.
    assert_eq!(
        volcli(&m, &["volume", "create", "policy1/used"], None).code,
        4
    );
    // The maintenance command ends: locks go, remove works.
    let _ = holder.kill();
    let _ = holder.wait();
    volcli(&m, &["use", "force-remove", "policy1/used"], None).ok();
    assert!(volcli(&m, &["use", "list"], None).ok().stdout.is_empty());
    volcli(&m, &["volume", "remove", "policy1/used"], None).ok();
    // Forced remove succeeds even while locked (and says so: volplugin bug 4).
    volcli(&m, &["volume", "create", "policy1/forced"], None).ok();
    let mut holder = hold(&m, "policy1/forced", 30);
    let out = volcli(&m, &["volume", "remove", "policy1/forced", "--force"], None).ok();
    assert_eq!(out.stdout.trim(), "volume policy1/forced removed");
    assert_eq!(
        volcli(&m, &["volume", "get", "policy1/forced"], None).code,
        3
    );
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(volcli(&m, &["use", "get", "policy1/forced"], None).code, 3);
}

#[test]
fn use_exec_passes_output_and_status_through() {
    let m = setup();
    volcli(&m, &["volume", "create", "policy1/maint"], None).ok();
    let out = volcli(
        &m,
        &[
            "use",
            "exec",
            "policy1/maint",
            "--",
            "sh",
            "-c",
            "echo held; exit 3",
        ],
        None,
    );
    assert_eq!(out.code, 3);
    assert_eq!(out.stdout.trim(), "held");
    assert!(
        volcli(&m, &["use", "list"], None).ok().stdout.is_empty(),
        "locks released after exec"
    );
    let missing = volcli(&m, &["use", "exec", "policy1/ghost", "--", "true"], None);
    assert_eq!(missing.code, 3, "{}", missing.stderr);
}

#[test]
fn scenario_12_runtime() {
    let m = setup();
    volcli(&m, &["volume", "create", "policy1/rt"], None).ok();
    let rt = volcli(&m, &["volume", "runtime", "get", "policy1/rt"], None)
        .ok()
        .json();
    assert_eq!(rt["snapshot"]["keep"], 20);
    volcli(
        &m,
        &["volume", "runtime", "upload", "policy1/rt"],
        Some(&fixture("volplugin/runtime1.json")),
    )
    .ok();
    let rt = volcli(&m, &["volume", "runtime", "get", "policy1/rt"], None)
        .ok()
        .json();
    assert_eq!(rt["snapshot"]["keep"], 15);
    let bad = volcli(
        &m,
        &["volume", "runtime", "upload", "policy1/rt"],
        Some(r#"{"snapshots":true}"#),
    );
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("snapshot.frequency is missing"),
        "{}",
        bad.stderr
    );
    assert_eq!(
        volcli(&m, &["volume", "runtime", "get", "policy1/none"], None).code,
        3
    );
}

#[test]
fn scenario_38_39_snapshots_and_copies() {
    let m = setup();
    volcli(&m, &["volume", "create", "policy1/src"], None).ok();
    let snap = volcli(&m, &["volume", "snapshot", "take", "policy1/src"], None)
        .ok()
        .stdout
        .trim()
        .to_owned();
    assert!(snap.starts_with("snap-"), "{snap}");
    assert_eq!(
        volcli(&m, &["volume", "snapshot", "list", "policy1/src"], None)
            .ok()
            .lines(),
        vec![snap.as_str()]
    );
    let out = volcli(
        &m,
        &["volume", "snapshot", "copy", "policy1/src", &snap, "copy1"],
        None,
    )
    .ok();
    assert_eq!(out.stdout.trim(), "policy1/copy1");
    assert_eq!(
        volcli(&m, &["volume", "list-all"], None).ok().lines(),
        vec!["policy1/copy1", "policy1/src"]
    );
    // Copying again while the source is in use succeeds.
    let mut holder = hold(&m, "policy1/src", 30);
    volcli(
        &m,
        &["volume", "snapshot", "copy", "policy1/src", &snap, "copy2"],
        None,
    )
    .ok();
    let _ = holder.kill();
    let _ = holder.wait();
    volcli(&m, &["use", "force-remove", "policy1/src"], None).ok();
    assert_eq!(
        volcli(&m, &["volume", "list-all"], None).ok().lines().len(),
        3
    );
    // Scenario 39: copy failures.
    let onto = volcli(
        &m,
        &["volume", "snapshot", "copy", "policy1/src", &snap, "src"],
        None,
    );
    assert_eq!(onto.code, 1);
    assert!(onto.stderr.contains("onto itself"), "{}", onto.stderr);
    let nosnap = volcli(
        &m,
        &[
            "volume",
            "snapshot",
            "copy",
            "policy1/src",
            "snap-nope",
            "x",
        ],
        None,
    );
    assert_eq!(nosnap.code, 3, "{}", nosnap.stderr);
    let novol = volcli(
        &m,
        &["volume", "snapshot", "copy", "policy1/ghost", &snap, "y"],
        None,
    );
    assert_eq!(novol.code, 3, "{}", novol.stderr);
    assert_eq!(
        volcli(&m, &["volume", "get", "policy1/x"], None).code,
        3,
        "a failed copy left a record"
    );
    volcli(&m, &["volume", "remove", "policy1/src"], None).ok();
    let json = volcli(
        &m,
        &["--json", "volume", "snapshot", "take", "policy1/copy1"],
        None,
    )
    .ok()
    .json();
    assert!(json["snapshot"].as_str().unwrap().starts_with("snap-"));
}

#[test]
fn unreachable_master_is_a_clear_error() {
    let out = volcore_system_tests::volcli_command("http://127.0.0.1:1")
        .args(["policy", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach volmaster at http://127.0.0.1:1"),
        "{err}"
    );
}

/// Whether a process is gone (or a zombie: this sandbox's PID 1 does not reap orphans).
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// `use exec` whose session can no longer be renewed (volmaster frozen with SIGSTOP, so
/// every renewal hangs) stops the command — its whole process group, grandchildren
/// included — before the session can expire, and exits non-zero saying why. (Before: the
/// renewal had no timeout and waited for ever while the command ran on without locks.)
#[test]
fn use_exec_stops_the_command_when_its_session_cannot_be_renewed() {
    let m = setup();
    volcli(&m, &["volume", "create", "policy1/stuck"], None).ok();
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("exec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pidfile = dir.join("grandchild.pid");
    let _ = std::fs::remove_file(&pidfile);
    let mut cli = volcore_system_tests::volcli_command(&m.url)
        .args(["use", "exec", "policy1/stuck", "--", "sh", "-c"])
        .arg(format!("sleep 300 & echo $! > {}; wait", pidfile.display()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let grandchild: u32 = loop {
        if let Some(p) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the command never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let master_pid = m.child.id().to_string();
    Command::new("kill")
        .args(["-STOP", &master_pid])
        .status()
        .unwrap();
    let frozen = Instant::now();
    // The command (down to its grandchild) is stopped before the 10 s session could
    // expire unrenewed.
    while !dead(grandchild) {
        if frozen.elapsed() > Duration::from_secs(20) {
            let _ = Command::new("kill").args(["-CONT", &master_pid]).status();
            let _ = cli.kill();
            panic!("the command's child (pid {grandchild}) still runs 20 s after its session stopped renewing");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped_after = frozen.elapsed();
    let status = loop {
        if let Some(s) = cli.try_wait().unwrap() {
            break s;
        }
        assert!(
            frozen.elapsed() < Duration::from_secs(20),
            "volcli did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    Command::new("kill")
        .args(["-CONT", &master_pid])
        .status()
        .unwrap();
    assert!(
        stopped_after < Duration::from_secs(10),
        "stopped only after {stopped_after:?}"
    );
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut cli.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("could not be renewed"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The typed client (what volcli, the load generator and orchestrators use) against the
/// real binary: it reads back what volcli wrote, and a missing volume is a typed 404.
#[test]
fn typed_client_reads_what_volcli_wrote() {
    let m = setup();
    volcli(&m, &["volume", "create", "policy1/typed"], None).ok();
    let (c, rt) = client(&m.url);
    let v = volcore::VolumeRef::parse("policy1/typed").unwrap();
    let info = rt.block_on(c.volume(&v)).unwrap();
    assert_eq!(info.volume.name.as_str(), "typed");
    let shown = volcli(&m, &["--json", "volume", "get", "policy1/typed"], None)
        .ok()
        .json();
    assert_eq!(serde_json::to_value(&info).unwrap(), shown);
    let listed = rt.block_on(c.volumes(Some(&v.policy))).unwrap();
    assert!(listed.iter().any(|x| x.name.as_str() == "typed"));
    let gone = volcore::VolumeRef::parse("policy1/never").unwrap();
    let err = rt.block_on(c.volume(&gone)).unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    assert_eq!(
        err.code(),
        Some(volcore_api::ErrorCode::VolumeNotFound),
        "{err}"
    );
    rt.block_on(c.remove(&v, volcore_api::RemoveOptions::default()))
        .unwrap();
    assert_eq!(
        volcli(&m, &["volume", "get", "policy1/typed"], None).code,
        3
    );
}
