//! volsupervisor's command line: bad flags are usage errors; on a store it leads, prints
//! that it started, and stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_bad_flag_is_a_usage_error_naming_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_volsupervisor"))
        .args(["--concurrency", "many"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--concurrency"), "{err}");
}

#[test]
fn starts_on_a_store_and_stops_on_sigterm() {
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_volsupervisor"))
        .args([
            "--kv",
            "memory:",
            "--allow-null-backend",
            "--host-label",
            "sup-t",
        ])
        .arg("--local-state")
        .arg(state.path().join("local"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("volsupervisor started as "), "{line:?}");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}
