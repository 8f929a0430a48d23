//! kill -9 at every step: the real volmaster and volplugin binaries (built with the
//! `failpoints` feature) on the real etcd (`VOLCORE_TEST_ETCD`) with the local driver
//! (real image files, loop devices, mkfs and mounts). A crash point (`volcore::crash`,
//! armed through `FAILPOINTS`) kills the process with SIGKILL exactly at one step of
//! create, remove, snapshot, copy (volmaster) or mount, unmount (volplugin); then
//! `volcli check` must report exactly the leftovers that step leaves, `--repair` must
//! remove them, a second check must be clean, and the volume must be usable again.

#![allow(clippy::unwrap_used)] // tests fail by panicking

#[cfg(not(feature = "failpoints"))]
#[test]
fn crash_tests_need_the_failpoints_feature() {
    panic!(
        "the crash tests kill the daemons at crash points, which exist only with the \
         failpoints feature: cargo test --workspace --features \
         volmaster/failpoints,volplugin/failpoints,volcore-system-tests/failpoints \
         (scripts/test does this)"
    );
}

#[cfg(feature = "failpoints")]
#[cfg(feature = "failpoints")]
mod crash {
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::{json, Value};

    use volcore_system_tests::{
        env, listening, socket_call, socket_get, tmp, try_call, uniq, volcli_at, wait_plugin_ready,
        wait_ready, Out,
    };

    struct Proc(Child);

    impl Drop for Proc {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    impl Proc {
        /// Waits (bounded) for the process to die at its crash point; asserts it was
        /// SIGKILL.
        fn wait_killed(&mut self, what: &str) {
            use std::os::unix::process::ExitStatusExt;
            let start = Instant::now();
            loop {
                if let Some(st) = self.0.try_wait().unwrap() {
                    assert_eq!(
                        st.signal(),
                        Some(9),
                        "{what}: exited with {st:?}, not SIGKILL"
                    );
                    return;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "{what}: the process never reached its crash point"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// One installation: a store prefix and a state directory (local images, mounts).
    struct Site {
        prefix: String,
        state: PathBuf,
    }

    impl Site {
        fn new(ttl: u32) -> (Self, Proc, String) {
            let site = Site {
                prefix: format!("/crash-{}", uniq()),
                state: tmp("crash"),
            };
            let (m, url) = site.master(None);
            let mnt = site.state.join("mnt");
            std::fs::create_dir_all(&mnt).unwrap();
            let g = format!(
                r#"{{"TTL":{ttl},"Timeout":1,"MountPath":"{}"}}"#,
                mnt.display()
            );
            cli(&url, &["global", "upload"], Some(&g)).ok();
            cli(
                &url,
                &["policy", "upload", "policy1"],
                Some(r#"{"backend":"local","create":{"size":"32MiB"},"runtime":{"snapshots":true,"snapshot":{"frequency":"30m","keep":5}}}"#),
            )
            .ok();
            (site, m, url)
        }

        /// A volmaster on this site; with `crash`, armed to die there.
        fn master(&self, crash: Option<&str>) -> (Proc, String) {
            let mut cmd = Command::new(volcore_system_tests::bin("volmaster"));
            cmd.args(["--kv", &format!("etcd://{}", env("VOLCORE_TEST_ETCD"))])
                .args(["--prefix", &self.prefix, "--listen", "127.0.0.1:0"])
                .args(["--host-label", "master"])
                .args([
                    "--local-state",
                    &self.state.join("local").display().to_string(),
                ])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped());
            if let Some(p) = crash {
                cmd.env("FAILPOINTS", format!("{p}=return"));
            }
            let mut child = cmd.spawn().unwrap();
            let addr = listening(&mut child, "volmaster");
            wait_ready(&addr);
            (Proc(child), format!("http://{addr}"))
        }

        /// volplugin `vp-crash` for host `h1` on this site; with `crash`, armed to die
        /// there. Returns once it is ready (mounts re-adopted).
        fn plugin(&self, crash: Option<&str>) -> (Proc, PathBuf) {
            let socks = self.state.join("sock");
            std::fs::create_dir_all(&socks).unwrap();
            let mut cmd = Command::new(volcore_system_tests::bin("volplugin"));
            cmd.args(["--kv", &format!("etcd://{}", env("VOLCORE_TEST_ETCD"))])
                .args(["--prefix", &self.prefix, "--plugin-name", "vp-crash"])
                .args([
                    "--host-label",
                    "h1",
                    "--socket-dir",
                    &socks.display().to_string(),
                ])
                .args([
                    "--local-state",
                    &self.state.join("local").display().to_string(),
                ])
                .args([
                    "--state-dir",
                    &self.state.join("plugin-h1").display().to_string(),
                ])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::piped());
            if let Some(p) = crash {
                cmd.env("FAILPOINTS", format!("{p}=return"));
            }
            let mut child = cmd.spawn().unwrap();
            listening(&mut child, "volplugin");
            let sock = socks.join("vp-crash.sock");
            wait_plugin_ready(&sock);
            (Proc(child), sock)
        }
    }

    fn cli(url: &str, args: &[&str], stdin: Option<&str>) -> Out {
        Out::of(volcli_at(url, args, stdin))
    }

    /// `volcli --json check`: (kind, volume) of every finding.
    fn findings(url: &str) -> Vec<(String, String)> {
        let out = cli(url, &["--json", "check"], None);
        assert!(out.code == 0 || out.code == 4, "check: {}", out.stderr);
        let r: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(r["unchecked"], json!([]), "{}", out.stdout);
        let mut v: Vec<(String, String)> = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["kind"].as_str().unwrap().to_owned(),
                    f["volume"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    }

    fn expect(kinds: &[&str], v: &str) -> Vec<(String, String)> {
        let mut e: Vec<(String, String)> = kinds
            .iter()
            .map(|k| ((*k).to_owned(), v.to_owned()))
            .collect();
        e.sort();
        e
    }

    /// Waits (bounded) until no lock of an engine operation is left: a dead volmaster's
    /// locks end with its lease.
    fn wait_unlocked(url: &str) {
        let start = Instant::now();
        loop {
            let out = cli(url, &["--json", "use", "list"], None).ok();
            if serde_json::from_str::<Value>(&out.stdout).unwrap() == json!([]) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "locks never expired: {}",
                out.stdout
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Repairs, then checks that nothing is left (exit 0 both times).
    fn repair_clean(url: &str, point: &str) {
        let out = cli(url, &["check", "--repair"], None);
        assert_eq!(
            out.code, 0,
            "{point}: repair left something:\n{}{}",
            out.stdout, out.stderr
        );
        let out = cli(url, &["check"], None);
        assert_eq!(
            out.code, 0,
            "{point}: not clean after repair:\n{}",
            out.stdout
        );
        assert!(out.stdout.contains("no leftovers"), "{}", out.stdout);
    }

    fn snapshot(url: &str, v: &str) -> String {
        cli(url, &["volume", "snapshot", "take", v], None)
            .ok()
            .stdout
            .trim()
            .to_owned()
    }

    /// volmaster killed at each step of create, remove, snapshot and copy.
    #[test]
    fn volmaster_killed_at_every_step() {
        let (site, _m, setup_url) = Site::new(2);
        type Case = (&'static str, &'static [&'static str]);
        let cases: &[Case] = &[
            // The create's mount lock wrote the epoch key: it stays without a record.
            ("create.after-lock", &["orphan-key"]),
            ("create.after-storage", &["orphan-key", "orphan-storage"]),
            ("create.after-format", &["orphan-key", "orphan-storage"]),
            ("remove.after-lock", &[]),
            ("remove.after-destroy", &["missing-storage"]),
            ("snapshot.after-lock", &[]),
            ("snapshot.after-snapshot", &[]),
            ("copy.after-lock", &["orphan-key"]),
            ("copy.after-copy", &["orphan-key", "orphan-storage"]),
        ];
        for (i, (point, left)) in cases.iter().enumerate() {
            let v = format!("policy1/v{i}");
            let target = format!("c{i}");
            let op = point.split('.').next().unwrap();
            // What the operation needs to exist first.
            let snap = if op != "create" {
                cli(&setup_url, &["volume", "create", &v], None).ok();
                (op == "copy").then(|| snapshot(&setup_url, &v))
            } else {
                None
            };
            let (mut crashing, curl) = site.master(Some(point));
            let args: Vec<&str> = match op {
                "create" => vec!["volume", "create", &v],
                "remove" => vec!["volume", "remove", &v],
                "snapshot" => vec!["volume", "snapshot", "take", &v],
                _ => vec![
                    "volume",
                    "snapshot",
                    "copy",
                    &v,
                    snap.as_deref().unwrap(),
                    &target,
                ],
            };
            let out = cli(&curl, &args, None);
            assert_ne!(
                out.code, 0,
                "{point}: the operation succeeded: {}",
                out.stdout
            );
            crashing.wait_killed(point);
            // Restart it (disarmed) and work through the restarted one.
            let (_restarted, url) = site.master(None);
            wait_unlocked(&url);
            let leftover = if op == "copy" {
                format!("policy1/{target}")
            } else {
                v.clone()
            };
            assert_eq!(findings(&url), expect(left, &leftover), "{point}");
            if left.contains(&"orphan-storage") && op == "create" {
                // The leftover blocks a retry, and the error says what to do.
                let out = cli(&url, &["volume", "create", &v], None);
                assert_ne!(
                    out.code, 0,
                    "{point}: a create over leftover storage succeeded"
                );
                assert!(
                    out.stderr.contains("volcli check --repair"),
                    "{}",
                    out.stderr
                );
            }
            repair_clean(&url, point);
            // Usable again.
            match op {
                "create" => {
                    cli(&url, &["volume", "create", &v], None).ok();
                }
                "remove" => {
                    if left.is_empty() {
                        cli(&url, &["volume", "remove", &v], None).ok();
                    } else {
                        // The repair dropped the record of the destroyed volume.
                        cli(&url, &["volume", "create", &v], None).ok();
                    }
                }
                "snapshot" => {
                    snapshot(&url, &v);
                }
                _ => {
                    cli(
                        &url,
                        &[
                            "volume",
                            "snapshot",
                            "copy",
                            &v,
                            snap.as_deref().unwrap(),
                            &target,
                        ],
                        None,
                    )
                    .ok();
                }
            }
            assert_eq!(
                findings(&url),
                vec![],
                "{point}: the retried operation left something"
            );
        }
    }

    fn mounted_here(path: &Path) -> bool {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
    }

    /// volplugin killed at each step of mount and unmount.
    #[test]
    fn volplugin_killed_at_every_step() {
        // A long TTL: the dead plugin's lock outlives the restart, so the check sees it.
        let (site, _m, url) = Site::new(60);
        let cases: &[(&str, &[&str])] = &[
            // The new process runs under a new instance id: the old lock is stale.
            ("mount.after-lock", &["stale-lock"]),
            ("mount.after-claim", &["stale-lock"]),
            // The restarted plugin unmounts the mount nobody recorded before it serves.
            ("mount.after-mount", &["stale-lock"]),
            // The record is re-adopted, its mount found gone, record and lock dropped.
            ("unmount.after-unmount", &[]),
            ("unmount.after-release", &[]),
        ];
        for (i, (point, left)) in cases.iter().enumerate() {
            let name = format!("m{i}");
            let v = format!("policy1/{name}");
            let at = site.state.join("mnt").join("policy1").join(&name);
            cli(&url, &["volume", "create", &v], None).ok();
            let unmounting = point.starts_with("unmount");
            let (mut p, sock) = site.plugin(Some(point));
            if unmounting {
                let r = socket_call(&sock, "VolumeDriver.Mount", json!({"Name": v, "ID": "c1"}));
                assert_eq!(r["Err"], "", "{point}: {r}");
                assert!(mounted_here(&at));
                let r = try_call(
                    &sock,
                    "VolumeDriver.Unmount",
                    json!({"Name": v, "ID": "c1"}),
                );
                assert!(r.is_none(), "{point}: the unmount answered {r:?}");
            } else {
                let r = try_call(&sock, "VolumeDriver.Mount", json!({"Name": v, "ID": "c1"}));
                assert!(r.is_none(), "{point}: the mount answered {r:?}");
            }
            p.wait_killed(point);
            if *point == "mount.after-mount" {
                assert!(
                    mounted_here(&at),
                    "{point}: the crash should leave the mount"
                );
            }
            // Restart: the start-up check repairs this host's side before serving.
            let (p2, sock2) = site.plugin(None);
            assert_eq!(sock, sock2);
            assert!(
                !mounted_here(&at),
                "{point}: the restarted plugin left {} mounted",
                at.display()
            );
            let host = socket_get(&sock2, "/check");
            assert!(
                host.contains(r#""findings":[]"#),
                "{point}: host check: {host}"
            );
            assert_eq!(findings(&url), expect(left, &v), "{point}");
            repair_clean(&url, point);
            // Usable again, right away (no waiting for the dead lease).
            let r = socket_call(&sock2, "VolumeDriver.Mount", json!({"Name": v, "ID": "c2"}));
            assert_eq!(r["Err"], "", "{point}: {r}");
            let r = socket_call(
                &sock2,
                "VolumeDriver.Unmount",
                json!({"Name": v, "ID": "c2"}),
            );
            assert_eq!(r["Err"], "", "{point}: {r}");
            assert_eq!(findings(&url), vec![], "{point}");
            drop(p2);
        }
    }
}
