//! Daemons started before their store: volmaster and volplugin (real binaries) start while
//! etcd is not up yet, answer `/readyz` with 503 saying what they wait for, and serve once
//! etcd answers; an etcd outage later (etcd killed and restarted on the same data) exits
//! neither, and both serve again afterwards. (Before: both exited at once with "reading
//! the global configuration … etcd store is unavailable".)

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn etcd(dir: &Path, client: u16, peer: u16) -> Proc {
    let child = Command::new("etcd")
        .args(["--name", "late", "--data-dir"])
        .arg(dir)
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client}"),
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
            "--initial-cluster",
            &format!("late=http://127.0.0.1:{peer}"),
            "--log-level",
            "error",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd is not installed (scripts/install-deps.sh test installs etcd-server)");
    Proc(child)
}

/// Reads an HTTP answer to its end: its status code (0 if none) and the whole text.
fn answer(s: &mut impl Read) -> (u16, String) {
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

/// `GET path` over TCP; the status code (0 when nothing answers).
fn http_status(addr: &str, path: &str) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n"
    );
    answer(&mut s)
}

/// `GET /readyz` or `POST /endpoint` over the plugin's unix socket.
fn sock_call(sock: &Path, req: &str) -> (u16, String) {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.write_all(req.as_bytes());
    answer(&mut s)
}

fn plugin_post(sock: &Path, endpoint: &str, body: &str) -> String {
    sock_call(
        sock,
        &format!(
            "POST /{endpoint} HTTP/1.1\r\nHost: p\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .1
}

fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn alive(p: &mut Proc, what: &str) {
    assert!(
        p.0.try_wait().unwrap().is_none(),
        "{what} exited while its store was unreachable"
    );
}

#[test]
fn daemons_wait_for_a_late_store_and_survive_an_outage() {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("store-late-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let (client, peer) = (free_port(), free_port());
    let kv = format!("etcd://127.0.0.1:{client}");
    let prefix = format!("/late-{}", std::process::id());
    let mut master = Proc(
        Command::new(volcore_system_tests::bin("volmaster"))
            .args(["--kv", &kv, "--prefix", &prefix, "--listen", "127.0.0.1:0"])
            .args(["--allow-null-backend", "--local-state"])
            .arg(base.join("local"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = volcore_system_tests::listening(&mut master.0, "volmaster");
    let sockdir = base.join("plugins");
    let sock = sockdir.join("late.sock");
    let mut plugin = Proc(
        Command::new(volcore_system_tests::bin("volplugin"))
            .args(["--kv", &kv, "--prefix", &prefix, "--plugin-name", "late"])
            .args(["--host-label", "late-host", "--allow-null-backend"])
            .arg("--socket-dir")
            .arg(&sockdir)
            .arg("--state-dir")
            .arg(base.join("plugin-state"))
            .arg("--local-state")
            .arg(base.join("local"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // No store yet: both serve their health endpoints and say what they wait for.
    // First "connecting to its store", then, after the first failed attempt, "waiting".
    until(
        Duration::from_secs(10),
        "volmaster says it waits for its store",
        || {
            let (code, body) = http_status(&addr, "/readyz");
            code == 503 && body.contains("waiting for its store")
        },
    );
    let (code, body) = http_status(&addr, "/v1/policies");
    assert_eq!(code, 503, "{body}");
    until(
        Duration::from_secs(10),
        "volplugin says it waits for its store",
        || {
            let (code, body) = sock_call(
                &sock,
                "GET /readyz HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n",
            );
            code == 503 && body.contains("waiting for its store")
        },
    );
    let err = plugin_post(&sock, "VolumeDriver.List", "{}");
    assert!(err.contains("is starting"), "{err}");
    std::thread::sleep(Duration::from_secs(2));
    alive(&mut master, "volmaster");
    alive(&mut plugin, "volplugin");

    // etcd comes up: both become ready.
    let data = base.join("etcd");
    let store = etcd(&data, client, peer);
    until(Duration::from_secs(20), "volmaster ready", || {
        http_status(&addr, "/readyz").0 == 200
    });
    until(Duration::from_secs(20), "volplugin ready", || {
        sock_call(
            &sock,
            "GET /readyz HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n",
        )
        .0 == 200
    });
    let volcli = |args: &[&str], stdin: &str| {
        let mut c = volcore_system_tests::volcli_command(format!("http://{addr}"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    };
    let out = volcli(&["policy", "upload", "p"], r#"{"backend":"null"}"#);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = plugin_post(&sock, "VolumeDriver.Create", r#"{"Name":"p/v"}"#);
    assert!(r.contains(r#""Err":"""#), "{r}");

    // An outage: etcd dies; neither daemon exits; etcd comes back on the same data.
    drop(store);
    std::thread::sleep(Duration::from_secs(3));
    alive(&mut master, "volmaster");
    alive(&mut plugin, "volplugin");
    let _store = etcd(&data, client, peer);
    until(Duration::from_secs(20), "volmaster serves again", || {
        volcli(&["volume", "get", "p/v"], "").status.success()
    });
    until(Duration::from_secs(20), "volplugin serves again", || {
        plugin_post(&sock, "VolumeDriver.Get", r#"{"Name":"p/v"}"#).contains(r#""Err":"""#)
    });
    let _ = std::fs::remove_dir_all(&base);
}
