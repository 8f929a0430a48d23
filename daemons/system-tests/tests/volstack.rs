//! volstack: the three daemons in one process on embedded defaults, with a default policy.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn runs_on_embedded_defaults() {
    let state =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("volstack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    // A free port: bind and release.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(volcore_system_tests::bin("volstack"))
        .args(["--state", &state.display().to_string(), "--listen", &listen])
        .args([
            "--socket-dir",
            &state.join("plugins").display().to_string(),
            "--allow-null-backend",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let sock = state.join("plugins/volplugin.sock");
    let volcli = |args: &[&str]| {
        volcore_system_tests::volcli_command(format!("http://{listen}"))
            .args(args)
            .output()
            .unwrap()
    };
    let start = Instant::now();
    while !(sock.exists() && volcli(&["policy", "list"]).status.success()) {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "volstack did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = volcli(&["policy", "get", "policy1"]);
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["backends"]["mount"], "local", "default policy");
    let g = volcli(&["global", "get"]);
    let g: serde_json::Value = serde_json::from_slice(&g.stdout).unwrap();
    assert_eq!(g["MountPath"], state.join("mnt").display().to_string());
    // The plugin socket answers, and sees volumes made through volcli (one store).
    assert!(
        volcli(&["volume", "create", "policy1/stacked", "--opt", "size=64MiB"])
            .status
            .success()
    );
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let body = r#"{"Name":"stacked"}"#;
    write!(s, "POST /VolumeDriver.Get HTTP/1.1\r\nHost: p\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.contains(r#""Name":"policy1/stacked""#), "{resp}");
    // Its supervisor leads (the stack snapshots on schedule).
    let start = Instant::now();
    loop {
        let st = volcli(&["--json", "supervisor", "status"]);
        let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap_or_default();
        if st["leader"]["host"].is_string() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no supervisor leads: {st}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SIGTERM stops both and removes the socket.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists());
    // State persists for the next start (embedded store).
    assert!(state.join("kv.redb").exists());
}
