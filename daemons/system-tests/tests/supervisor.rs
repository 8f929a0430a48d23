//! volsupervisor on real binaries and a real etcd (`VOLCORE_TEST_ETCD`), local driver:
//! two supervisors with kill -9 of the leader (the standby leads within TTL + 1 s, the
//! next slot neither skipped nor doubled), `volcli supervisor status`, signals, and
//! `volcli volume snapshot run` with pre/post commands.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use volcore_system_tests::*;

const TTL: u64 = 3;
const EVERY: u64 = 10;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Sleeps until `secs` past the start of the next slot of `EVERY` seconds; returns that
/// slot (Unix seconds).
fn until_next_slot(secs: f64) -> u64 {
    let now = unix_now();
    let slot = (now / EVERY as f64).floor() as u64 * EVERY + EVERY;
    std::thread::sleep(Duration::from_secs_f64(slot as f64 + secs - now));
    slot
}

fn name_of(slot: u64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(slot);
    volcore::schedule::snapshot_name(t).to_string()
}

fn snaps(c: &Cluster, v: &str) -> Vec<String> {
    let out = Out::of(volcli(
        c,
        &["--json", "volume", "snapshot", "list", v],
        None,
    ))
    .ok();
    out.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn leader(st: &Value) -> Option<&str> {
    st["leader"]["host"].as_str()
}

#[test]
fn standby_takes_over_after_kill_9_taking_every_slot_once() {
    let c = cluster(TTL as u32);
    Out::of(volcli(
        &c,
        &["policy", "upload", "snap"],
        Some(&format!(
            r#"{{"backend":"local","create":{{"size":"32MiB"}},
                "runtime":{{"snapshots":true,"snapshot":{{"frequency":"{EVERY}s","keep":20}}}}}}"#
        )),
    ))
    .ok();
    Out::of(volcli(&c, &["volume", "create", "snap/a"], None)).ok();
    let mut a = supervisor(&c, "sup-a");
    await_supervisors(&c, Duration::from_secs(10), |st| {
        leader(st) == Some("sup-a")
    });
    let _b = supervisor(&c, "sup-b");
    let st = await_supervisors(&c, Duration::from_secs(10), |st| {
        st["standbys"].as_array().is_some_and(|s| s.len() == 1)
    });
    assert_eq!(st["standbys"][0]["host"], "sup-b");
    assert_eq!(leader(&st), Some("sup-a"));
    let human = Out::of(volcli(&c, &["supervisor", "status"], None)).ok();
    assert!(human.stdout.contains("leader:  sup-a"), "{}", human.stdout);
    assert!(human.stdout.contains("standby: sup-b"), "{}", human.stdout);
    // The leader takes a slot ...
    let first = until_next_slot(1.5);
    assert!(
        snaps(&c, "snap/a").contains(&name_of(first)),
        "{:?}",
        snaps(&c, "snap/a")
    );
    // ... and is killed 2 s before the next one: the standby leads within TTL + 1 s and
    // takes that slot (late, once).
    let next = first + EVERY;
    std::thread::sleep(Duration::from_secs_f64(next as f64 - 2.0 - unix_now()));
    a.kill9();
    let killed = Instant::now();
    await_supervisors(&c, Duration::from_secs(TTL + 5), |st| {
        leader(st) == Some("sup-b")
    });
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(TTL + 1),
        "the standby led {took:?} after the kill (TTL {TTL} s)"
    );
    let after = until_next_slot(2.0);
    let got = snaps(&c, "snap/a");
    let want: Vec<String> = (first..=after)
        .step_by(EVERY as usize)
        .map(name_of)
        .collect();
    let mine: Vec<String> = got.iter().filter(|s| want.contains(s)).cloned().collect();
    assert_eq!(
        mine, want,
        "every slot from {first} to {after} once: {got:?}"
    );
    // Nothing but slot names (no doubles with other names).
    assert!(
        got.iter().all(|s| volcore::schedule::snapshot_time(
            &volcore::SnapshotName::new(s).unwrap()
        )
        .is_some_and(|t| volcore::schedule::unix_millis(t).is_multiple_of(EVERY * 1000))),
        "{got:?}"
    );
    let st = Out::of(volcli(&c, &["--json", "supervisor", "status"], None))
        .ok()
        .json();
    assert!(st["standbys"].as_array().unwrap().is_empty(), "{st}");
}

#[test]
fn signals_and_snapshot_run_with_pre_and_post_commands() {
    let c = cluster(5);
    Out::of(volcli(
        &c,
        &["policy", "upload", "sig"],
        Some(r#"{"backend":"local","create":{"size":"32MiB"},"runtime":{"signal":true,"snapshot":{"keep":2}}}"#),
    ))
    .ok();
    Out::of(volcli(&c, &["volume", "create", "sig/a"], None)).ok();
    Out::of(volcli(&c, &["volume", "create", "policy1/nosig"], None)).ok();
    let _s = supervisor(&c, "sup-1");
    await_supervisors(&c, Duration::from_secs(10), |st| leader(st).is_some());
    // A signal: the supervisor takes it, named by the request time.
    let asked = Out::of(volcli(
        &c,
        &["--json", "volume", "snapshot", "signal", "sig/a"],
        None,
    ))
    .ok()
    .json();
    let name = asked["snapshot"].as_str().unwrap().to_owned();
    let start = Instant::now();
    while !snaps(&c, "sig/a").contains(&name) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "signalled snapshot not taken"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Refused where the runtime does not allow it, saying so.
    let (code, _, err) = volcli(&c, &["volume", "snapshot", "signal", "policy1/nosig"], None);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("\"signal\": true"), "{err}");
    // snapshot run: pre, snapshot, post, each reported.
    let log = tmp("hooks").join("log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let pre = format!("echo pre >> {}", log.display());
    let post = format!("echo post >> {}", log.display());
    let run = Out::of(volcli(
        &c,
        &[
            "--json", "volume", "snapshot", "run", "sig/a", "--pre", &pre, "--post", &post,
        ],
        None,
    ))
    .ok()
    .json();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "pre\npost\n");
    let steps: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["pre", "snapshot", "post"]);
    assert!(
        run["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["ok"] == true),
        "{run}"
    );
    let taken = run["snapshot"].as_str().unwrap().to_owned();
    assert!(snaps(&c, "sig/a").contains(&taken));
    // A failing pre: no snapshot, post still runs, exit 1.
    let before = snaps(&c, "sig/a");
    let (code, out, _) = volcli(
        &c,
        &[
            "volume", "snapshot", "run", "sig/a", "--pre", "exit 7", "--post", &post,
        ],
        None,
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL pre (exit 7): exited with status 7"),
        "{out}"
    );
    assert!(out.contains("FAIL snapshot: skipped"), "{out}");
    assert!(out.contains("ok   post"), "{out}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "pre\npost\npost\n");
    assert_eq!(snaps(&c, "sig/a"), before);
    // A failing snapshot (no such volume): post still runs; the exit says why (3).
    let (code, out, _) = volcli(
        &c,
        &["volume", "snapshot", "run", "sig/gone", "--post", &post],
        None,
    );
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("FAIL snapshot"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "pre\npost\npost\npost\n"
    );
    // keep 2 prunes what the helper and the signal made, once the supervisor looks again
    // (after a runtime change).
    Out::of(volcli(
        &c,
        &["volume", "runtime", "upload", "sig/a"],
        Some(r#"{"signal":true,"snapshot":{"keep":1}}"#),
    ))
    .ok();
    let start = Instant::now();
    while snaps(&c, "sig/a").len() != 1 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not pruned: {:?}",
            snaps(&c, "sig/a")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(snaps(&c, "sig/a"), [taken]);
}

fn volume_exists(c: &Cluster, v: &str) -> bool {
    match volcli(c, &["volume", "get", v], None).0 {
        0 => true,
        3 => false,
        other => panic!("volume get {v}: exit {other}"),
    }
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn reclamation_after_the_unused_period_never_while_mounted_and_ephemeral_cleanup() {
    let c = cluster(TTL as u32);
    Out::of(volcli(
        &c,
        &["policy", "upload", "rec"],
        Some(r#"{"backend":"local","create":{"size":"32MiB"},"reclaim":{"unused":"3s","action":"remove","grace":"2s"}}"#),
    ))
    .ok();
    Out::of(volcli(&c, &["volume", "create", "rec/idle"], None)).ok();
    Out::of(volcli(&c, &["volume", "create", "rec/used"], None)).ok();
    Out::of(volcli(
        &c,
        &[
            "volume",
            "create",
            "policy1/eph1",
            "--opt",
            "ephemeral=true",
        ],
        None,
    ))
    .ok();
    Out::of(volcli(
        &c,
        &[
            "volume",
            "create",
            "policy1/eph2",
            "--opt",
            "ephemeral=true",
        ],
        None,
    ))
    .ok();
    let sockets = tmp("sockets");
    std::fs::create_dir_all(&sockets).unwrap();
    let p = plugin(&c, "recp", "host-a", &sockets);
    let mount = |sock: &std::path::Path, v: &str, id: &str| {
        let r = socket_call(
            sock,
            "VolumeDriver.Mount",
            serde_json::json!({"Name": v, "ID": id}),
        );
        assert_eq!(r["Err"].as_str().unwrap_or(""), "", "{r}");
    };
    mount(&p.sock, "rec/used", "ctr-1");
    mount(&p.sock, "policy1/eph1", "ctr-2");
    let _sup = supervisor(&c, "sup-r");
    // Listed as stale with when it goes, then removed; the mounted one stays.
    wait_until("rec/idle listed as stale", Duration::from_secs(10), || {
        let (_, out, _) = volcli(&c, &["--json", "volume", "list", "rec", "--stale"], None);
        out.contains("rec/idle")
    });
    let stale = Out::of(volcli(&c, &["volume", "list", "rec", "--stale"], None)).ok();
    assert!(
        stale.stdout.contains("rec/idle") && stale.stdout.contains("removed at"),
        "{}",
        stale.stdout
    );
    assert!(!stale.stdout.contains("rec/used"), "{}", stale.stdout);
    wait_until("rec/idle reclaimed", Duration::from_secs(10), || {
        !volume_exists(&c, "rec/idle")
    });
    std::thread::sleep(Duration::from_secs(6));
    assert!(volume_exists(&c, "rec/used"), "reclaimed while mounted");
    // Unmounted: reclaimed once unused + grace have passed since the unmount.
    let r = socket_call(
        &p.sock,
        "VolumeDriver.Unmount",
        serde_json::json!({"Name": "rec/used", "ID": "ctr-1"}),
    );
    assert_eq!(r["Err"].as_str().unwrap_or(""), "", "{r}");
    let unmounted = Instant::now();
    wait_until("rec/used reclaimed", Duration::from_secs(12), || {
        !volume_exists(&c, "rec/used")
    });
    assert!(
        unmounted.elapsed() >= Duration::from_secs(4),
        "reclaimed {:?} after its unmount",
        unmounted.elapsed()
    );
    // Ephemeral: removed at its last unmount.
    mount(&p.sock, "policy1/eph2", "ctr-3");
    let r = socket_call(
        &p.sock,
        "VolumeDriver.Unmount",
        serde_json::json!({"Name": "policy1/eph2", "ID": "ctr-3"}),
    );
    assert_eq!(r["Err"].as_str().unwrap_or(""), "", "{r}");
    wait_until(
        "policy1/eph2 removed at its last unmount",
        Duration::from_secs(5),
        || !volume_exists(&c, "policy1/eph2"),
    );
    // Ephemeral, host dies (kill -9; its mounts go with the machine): the supervisor
    // removes it once the host's record is gone.
    let mp = c.state.join("mnt/policy1/eph1");
    let mut p = p;
    let _ = p.child.kill();
    let _ = p.child.wait();
    let st = std::process::Command::new("umount")
        .arg(&mp)
        .status()
        .unwrap();
    assert!(st.success(), "umount {}", mp.display());
    assert!(volume_exists(&c, "policy1/eph1"));
    wait_until(
        "policy1/eph1 removed after its host died",
        Duration::from_secs(TTL + 8),
        || !volume_exists(&c, "policy1/eph1"),
    );
    // Every reclamation is audited.
    let audit = Out::of(volcli(&c, &["--json", "audit", "list"], None))
        .ok()
        .json();
    let methods: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["method"].as_str())
        .collect();
    assert_eq!(
        methods.iter().filter(|m| **m == "RECLAIM").count(),
        2,
        "{methods:?}"
    );
    assert_eq!(
        methods
            .iter()
            .filter(|m| **m == "RECLAIM-EPHEMERAL")
            .count(),
        1,
        "{methods:?}"
    );
    // Nothing left behind.
    let check = Out::of(volcli(&c, &["--json", "check"], None));
    assert_eq!(check.code, 0, "{}", check.stdout);
}
