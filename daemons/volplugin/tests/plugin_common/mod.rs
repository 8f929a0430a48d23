//! Harness for the in-process volplugin tests: plugin instances as hosts on one store,
//! a raw HTTP client for the plugin socket, store seeding.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use volcore::{Drivers, HostName, KvStore, MemKv, PolicyName};
use volplugin::{run, LeaseLossAction, PluginConfig, PluginDeps};

pub fn tmp(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "plugin-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// Sends a typed Docker request (its endpoint and the body Docker would send); the
/// answer as Docker reads it.
pub async fn send(sock: &Path, req: &volcore_api::docker::Request) -> Value {
    call(sock, req.endpoint(), req.body()).await
}

/// A raw request: `body` to `endpoint` (for bodies the protocol types cannot express).
pub async fn call(sock: &Path, endpoint: &str, body: Value) -> Value {
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

/// Waits (up to 10 s) until the plugin at `sock` serves.
pub async fn wait_serving(sock: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !serving(sock).await {
        assert!(
            Instant::now() < deadline,
            "plugin at {} never came up",
            sock.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether the plugin serves: ready, or up and still re-adopting its mounts.
pub async fn serving(sock: &Path) -> bool {
    match readyz(sock).await {
        Some((200, _)) => true,
        Some((_, body)) => body.contains("re-adopting"),
        None => false,
    }
}

/// The status and body of `GET /readyz` on the plugin socket, if it answers.
pub async fn readyz(sock: &Path) -> Option<(u16, String)> {
    let mut s = tokio::net::UnixStream::connect(sock).await.ok()?;
    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: plugin\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.ok()?;
    let text = String::from_utf8_lossy(&out);
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n")?.1.to_owned()))
}

/// `Err` of a plugin answer ("" when it succeeded).
pub fn err_of(v: &Value) -> String {
    v["Err"].as_str().unwrap_or("<no Err field>").to_owned()
}

pub struct Host {
    pub sock: PathBuf,
    pub task: JoinHandle<anyhow::Result<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// How to start one plugin instance ("host").
pub struct HostSpec {
    pub kv: Arc<dyn KvStore>,
    pub drivers: Drivers,
    pub host: String,
    pub dir: PathBuf,
    pub prefix: String,
    pub on_loss: LeaseLossAction,
    /// Its state directory (its identity as a machine); one per simulated machine.
    pub state: PathBuf,
    /// The cgroup v1 parent whose cgroups get rate limits.
    pub cgroup_parent: PathBuf,
    /// The policy of names without `policy/` (default `policy1`).
    pub default_policy: Option<PolicyName>,
}

impl HostSpec {
    pub fn new(
        kv: Arc<dyn KvStore>,
        drivers: Drivers,
        host: &str,
        dir: &Path,
        prefix: &str,
    ) -> Self {
        Self {
            kv,
            drivers,
            host: host.to_owned(),
            dir: dir.to_path_buf(),
            prefix: prefix.to_owned(),
            on_loss: LeaseLossAction::Unmount,
            state: dir.join(format!("state-{host}")),
            cgroup_parent: PathBuf::from("volcore-test-unused"),
            default_policy: Some(PolicyName::new("policy1").unwrap()),
        }
    }

    /// No default policy: every name must be `policy/volume`.
    pub fn no_default_policy(mut self) -> Self {
        self.default_policy = None;
        self
    }

    pub fn cgroup_parent(mut self, p: &str) -> Self {
        self.cgroup_parent = PathBuf::from(p);
        self
    }

    pub fn on_loss(mut self, a: LeaseLossAction) -> Self {
        self.on_loss = a;
        self
    }

    pub fn state(mut self, state: &Path) -> Self {
        self.state = state.to_path_buf();
        self
    }

    fn config(&self, plugin_name: &str) -> PluginConfig {
        PluginConfig {
            socket_dir: self.dir.clone(),
            plugin_name: plugin_name.to_owned(),
            host: HostName::new(&self.host).unwrap(),
            state_dir: self.state.clone(),
            prefix: self.prefix.clone(),
            default_policy: self.default_policy.clone(),
            on_lease_loss: self.on_loss,
            cgroup_parent: self.cgroup_parent.clone(),
            cgroup_v2: None,
            mount_path: None,
        }
    }

    /// Starts the plugin named `vp-<host>`; panics if it does not come up.
    pub async fn start(self) -> Host {
        let name = format!("vp-{}", self.host);
        self.start_named(&name).await.unwrap()
    }

    /// Starts the plugin named `name`; `Err` with the plugin's own error if it exits
    /// instead of coming up.
    pub async fn start_named(self, name: &str) -> anyhow::Result<Host> {
        let cfg = self.config(name);
        let sock = volplugin::socket_path(&cfg);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut task = tokio::spawn(run(
            cfg,
            PluginDeps {
                kv: self.kv,
                drivers: self.drivers,
            },
            async {
                let _ = rx.await;
            },
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if serving(&sock).await {
                break;
            }
            if task.is_finished() {
                return match (&mut task).await.unwrap() {
                    Ok(()) => Err(anyhow::anyhow!("the plugin stopped without error")),
                    Err(e) => Err(e),
                };
            }
            assert!(Instant::now() < deadline, "plugin socket never came up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Host {
            sock,
            task,
            stop: Some(tx),
        })
    }
}

impl Host {
    /// The old positional form.
    pub async fn start(
        kv: Arc<dyn KvStore>,
        drivers: Drivers,
        host: &str,
        dir: &Path,
        prefix: &str,
        on_loss: LeaseLossAction,
    ) -> Self {
        HostSpec::new(kv, drivers, host, dir, prefix)
            .on_loss(on_loss)
            .start()
            .await
    }

    /// Clean stop (SIGTERM path).
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }

    /// Crash: no cleanup at all (like SIGKILL).
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

pub async fn store(ttl_secs: u64) -> (Arc<dyn KvStore>, String) {
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

pub async fn upload(kv: &Arc<dyn KvStore>, prefix: &str, name: &str, json: &str) {
    let p = volcore::Policy::from_json(&PolicyName::new(name).unwrap(), json.as_bytes()).unwrap();
    kv.put(
        &format!("{prefix}/policies/{name}"),
        p.to_json(),
        Default::default(),
    )
    .await
    .unwrap();
}

pub const NULL: &str = r#"{"backend":"null","create":{"size":"10MB"}}"#;

/// Polls `f` every 50 ms until it is true; panics with `what` after `limit`.
pub async fn until(limit: Duration, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !f().await {
        assert!(
            start.elapsed() < limit,
            "{what}: still not true after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
