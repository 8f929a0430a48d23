//! What the system tests share: the workspace's real binaries ([`bin`]), a volmaster
//! for volcli ([`cluster`]), volplugin processes, one volcli runner ([`volcli_at`],
//! [`Out`]), the typed API client ([`client`]) and a Docker CLI pointed at the engine
//! this test binary started.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::io::BufRead;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

/// The workspace's root directory.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `target/<profile>`, where cargo put this test binary's `deps/` and the workspace's
/// binaries.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    deps.parent().unwrap().to_path_buf()
}

/// The newest modification time of the Rust sources and manifests under `dir`.
fn newest_source(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name == "target" || name == "fuzz" {
            continue;
        }
        let t = if p.is_dir() {
            newest_source(&p)
        } else if name.ends_with(".rs") || name == "Cargo.toml" {
            e.metadata().and_then(|m| m.modified()).ok()
        } else {
            None
        };
        newest = newest.max(t);
    }
    newest
}

/// The path of one of the workspace's binaries (`volmaster`, `volplugin`, `volcli`,
/// `volstack`), built by the same `cargo test --workspace` that built this test (each
/// binary's own package has integration tests, so cargo builds it). Panics, saying what
/// to run, when it is missing or older than the sources: a test must never pass against
/// a stale binary.
pub fn bin(name: &str) -> PathBuf {
    static NEWEST: std::sync::OnceLock<Option<std::time::SystemTime>> = std::sync::OnceLock::new();
    let p = profile_dir().join(name);
    let built = std::fs::metadata(&p).and_then(|m| m.modified()).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; the system tests run the workspace's binaries: run `cargo test --workspace` (scripts/test), which builds them",
            p.display()
        )
    });
    let newest = *NEWEST.get_or_init(|| newest_source(&root()));
    if let Some(src) = newest {
        assert!(
            src <= built,
            "{} is older than the sources; run `cargo test --workspace` (scripts/test) so that it is rebuilt",
            p.display()
        );
    }
    p
}

pub mod pki;

/// `target/tmp`: scratch space for tests (the per-test directories under it are unique).
pub fn target_tmp() -> PathBuf {
    let p = profile_dir().parent().unwrap().join("tmp");
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// A typed client of the volmaster at `url`, and a runtime to drive it from a
/// synchronous test.
pub fn client(url: &str) -> (volcore_api::Client, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (volcore_api::Client::new(url).unwrap(), rt)
}

/// The value of a variable scripts/test sets, or a panic that says so.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run scripts/test, which starts etcd and a Docker engine")
    })
}

pub fn uniq() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn tmp(name: &str) -> PathBuf {
    let p = target_tmp().join(format!("docker-{}-{name}", uniq()));
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// This test binary's own Docker engine, started on first use under
/// `VOLCORE_TEST_DOCKER_ROOT` (scripts/test stops every engine there when it ends). Each
/// binary gets a fresh engine because an engine keeps retrying every plugin it ever used
/// for every `docker volume ls`, for 15 s each, once that plugin is gone.
pub fn docker_socket() -> &'static str {
    static SOCK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SOCK.get_or_init(|| {
        let docker_root = env("VOLCORE_TEST_DOCKER_ROOT");
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_string_lossy().into_owned();
        let dir = PathBuf::from(docker_root).join(name);
        let script = root().join("scripts/dockerd.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "starting dockerd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    })
}

pub fn docker(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", format!("unix://{}", docker_socket()))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn docker_ok(args: &[&str]) -> String {
    let (code, out, err) = docker(args);
    assert_eq!(code, 0, "docker {args:?}: {err}");
    out
}

/// A cluster: one store prefix, a volmaster for volcli, and a mount root.
pub struct Cluster {
    pub prefix: String,
    pub state: PathBuf,
    pub master: Child,
    pub master_url: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}

pub fn volcli(c: &Cluster, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    volcli_at(&c.master_url, args, stdin)
}

/// The volcli binary, pointed at the volmaster at `url` (through `VOLCLI_MASTER`).
pub fn volcli_command(url: impl AsRef<str>) -> Command {
    let mut c = Command::new(bin("volcli"));
    c.env("VOLCLI_MASTER", url.as_ref());
    // Never the developer's own ~/.config/volcore/volcli.toml.
    c.env("XDG_CONFIG_HOME", target_tmp().join("no-config"));
    c
}

/// Runs `cmd` (volcli, set up by [`volcli_command`]) with `args`, feeding it `stdin`:
/// (exit code, stdout, stderr).
pub fn run_volcli(mut cmd: Command, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// volcli against the volmaster at `url`: (exit code, stdout, stderr).
pub fn volcli_at(url: &str, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    run_volcli(volcli_command(url), args, stdin)
}

/// A volcli run: exit code and output.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn of((code, stdout, stderr): (i32, String, String)) -> Self {
        Self {
            code,
            stdout,
            stderr,
        }
    }

    /// Asserts exit 0 (showing both outputs otherwise).
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }

    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// What a daemon prints first, "`what` listening on ADDR": the ADDR.
pub fn listening(child: &mut Child, what: &str) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix(&format!("{what} listening on "))
        .unwrap_or_else(|| panic!("{what} said {line:?}"))
        .to_owned()
}

/// Waits (up to 20 s) until the plugin at `sock` is ready (connected, mounts re-adopted).
pub fn wait_plugin_ready(sock: &Path) {
    let start = std::time::Instant::now();
    while !socket_get(sock, "/readyz").starts_with("HTTP/1.1 200") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "plugin at {} never became ready",
            sock.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub fn cluster(ttl: u32) -> Cluster {
    let prefix = format!("/docker-{}", uniq());
    let state = tmp("state");
    let mut master = Command::new(bin("volmaster"))
        .args([
            "--kv",
            &format!("etcd://{}", env("VOLCORE_TEST_ETCD")),
            "--prefix",
            &prefix,
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--local-state", &state.join("local").display().to_string()])
        .envs(ceph_env(&state, "master"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening(&mut master, "volmaster");
    wait_ready(&addr);
    let c = Cluster {
        prefix,
        state: state.clone(),
        master,
        master_url: format!("http://{addr}"),
    };
    let mnt = state.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let g = format!(
        r#"{{"TTL":{ttl},"Timeout":1,"MountPath":"{}"}}"#,
        mnt.display()
    );
    assert_eq!(volcli(&c, &["global", "upload"], Some(&g)).0, 0);
    let (code, _, err) = volcli(
        &c,
        &["policy", "upload", "policy1"],
        Some(r#"{"backend":"local","create":{"size":"64MiB"}}"#),
    );
    assert_eq!(code, 0, "{err}");
    c
}

pub struct PluginProc {
    pub child: Child,
    pub name: String,
    pub sock: PathBuf,
}

impl Drop for PluginProc {
    fn drop(&mut self) {
        // A clean stop removes the socket, so no engine keeps retrying a dead plugin.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.sock);
    }
}

pub fn plugin(c: &Cluster, name: &str, host: &str, socket_dir: &Path) -> PluginProc {
    plugin_env(c, name, host, socket_dir, &[])
}

/// The volplugin command line of a plugin on cluster `c` (extra environment such as
/// `VOLPLUGIN_MOUNT_PATH` for a second "host", `VOLPLUGIN_STATE_DIR` for a second
/// machine).
pub fn plugin_cmd(
    c: &Cluster,
    name: &str,
    host: &str,
    socket_dir: &Path,
    extra: &[(&str, String)],
) -> Command {
    let mut cmd = Command::new(bin("volplugin"));
    cmd.args([
        "--kv",
        &format!("etcd://{}", env("VOLCORE_TEST_ETCD")),
        "--prefix",
        &c.prefix,
    ])
    .args([
        "--plugin-name",
        name,
        "--host-label",
        host,
        "--socket-dir",
        &socket_dir.display().to_string(),
    ])
    .args([
        "--local-state",
        &c.state.join("local").display().to_string(),
    ])
    // One state directory (machine identity) per host label unless told otherwise.
    .env(
        "VOLPLUGIN_STATE_DIR",
        c.state.join(format!("plugin-{host}")).display().to_string(),
    )
    .envs(ceph_env(&c.state, host))
    .env("RUST_LOG", "warn")
    .envs(extra.iter().map(|(k, v)| (*k, v.as_str())));
    cmd
}

/// A plugin with extra environment (`VOLPLUGIN_MOUNT_PATH` for a second "host"); returns
/// once it serves.
pub fn plugin_env(
    c: &Cluster,
    name: &str,
    host: &str,
    socket_dir: &Path,
    extra: &[(&str, String)],
) -> PluginProc {
    let mut child = plugin_cmd(c, name, host, socket_dir, extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    listening(&mut child, "volplugin");
    let sock = socket_dir.join(format!("{name}.sock"));
    wait_plugin_ready(&sock);
    PluginProc {
        child,
        name: name.to_owned(),
        sock,
    }
}

pub fn sigterm(p: &mut PluginProc) {
    let _ = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status();
    let _ = p.child.wait();
}

/// `GET path` on a plugin socket: the raw answer.
pub fn socket_get(sock: &Path, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

pub fn socket_call(sock: &Path, endpoint: &str, body: Value) -> Value {
    try_call(sock, endpoint, body)
        .unwrap_or_else(|| panic!("no answer from {} to {endpoint}", sock.display()))
}

/// A Docker call; `None` if the plugin did not answer (it died on the way).
pub fn try_call(sock: &Path, endpoint: &str, body: Value) -> Option<Value> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).ok()?;
    let body = body.to_string();
    write!(s, "POST /{endpoint} HTTP/1.1\r\nHost: p\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    serde_json::from_str(out.split_once("\r\n\r\n")?.1).ok()
}

/// The Ceph driver's settings for a daemon (`VOLCORE_CEPH_*`), when the tests have a
/// cluster (`VOLCORE_TEST_CEPH`, its ceph.conf): rbd-fuse attachment (no rbd kernel module
/// here) and a state directory per daemon, as separate hosts would have.
pub fn ceph_env(state: &Path, who: &str) -> Vec<(String, String)> {
    match std::env::var("VOLCORE_TEST_CEPH") {
        Ok(conf) => vec![
            ("VOLCORE_CEPH_CONF".into(), conf),
            ("VOLCORE_CEPH_ATTACH".into(), "fuse".into()),
            ("VOLCORE_CEPH_POOLS".into(), "rbd,test".into()),
            (
                "VOLCORE_CEPH_STATE".into(),
                state.join(format!("ceph-{who}")).display().to_string(),
            ),
        ],
        Err(_) => Vec::new(),
    }
}

pub const DOCKER_PLUGINS: &str = "/run/docker/plugins";

/// Waits (up to 20 s) until volmaster at `addr` is ready (`/readyz` 200).
pub fn wait_ready(addr: &str) {
    let (c, rt) = client(&format!("http://{addr}"));
    let start = std::time::Instant::now();
    loop {
        if rt.block_on(c.ready()).is_ok() {
            return;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "volmaster at {addr} never became ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A volsupervisor process on a cluster (killed with SIGKILL when dropped, unless
/// stopped before).
pub struct SupervisorProc {
    pub child: Child,
    pub host: String,
}

impl Drop for SupervisorProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SupervisorProc {
    /// kill -9.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts volsupervisor `host` on cluster `c` (same store, prefix, local driver state and
/// Ceph settings as the cluster's daemons); returns once it runs.
pub fn supervisor(c: &Cluster, host: &str) -> SupervisorProc {
    let mut child = Command::new(bin("volsupervisor"))
        .args([
            "--kv",
            &format!("etcd://{}", env("VOLCORE_TEST_ETCD")),
            "--prefix",
            &c.prefix,
            "--host-label",
            host,
        ])
        .args([
            "--local-state",
            &c.state.join("local").display().to_string(),
        ])
        .envs(ceph_env(&c.state, &format!("sup-{host}")))
        .env("VOLSUPERVISOR_RECLAIM_EVERY", "500ms")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("volsupervisor started as "),
        "volsupervisor said {line:?}"
    );
    SupervisorProc {
        child,
        host: host.to_owned(),
    }
}

/// `volcli supervisor status --json` until `pred` holds (up to `limit`); the last status.
pub fn await_supervisors(
    c: &Cluster,
    limit: std::time::Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let start = std::time::Instant::now();
    loop {
        let (code, out, err) = volcli(c, &["--json", "supervisor", "status"], None);
        assert_eq!(code, 0, "{err}");
        let st: Value = serde_json::from_str(&out).unwrap();
        if pred(&st) {
            return st;
        }
        assert!(start.elapsed() < limit, "supervisors never got there: {st}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
