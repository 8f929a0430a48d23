//! What volcore's daemons share: their store, driver and Ceph flags (one `clap` args
//! struct each), tracing set-up, signal handling, the global-configuration watcher and
//! the wait for a store that is not up yet. Each daemon is a library crate (so tests run
//! it in-process) with a `main.rs` that only parses flags and calls its `run`.

use std::sync::Arc;

use anyhow::{Context, Result};
use futures::StreamExt;
use tokio::sync::watch;
use tracing::{info, warn};
use volcore::{GlobalConfig, HostName, Keys, KvStore, WatchEvent};

/// The git commit this build was made from (`1a2b3c4d5e6f`), or `unknown`.
pub fn git_commit() -> &'static str {
    option_env!("VOLCORE_GIT_COMMIT").unwrap_or("unknown")
}

/// This build's version and commit (`0.1.0 (1a2b3c4d5e6f)`).
pub fn version() -> String {
    format!("{} ({})", env!("CARGO_PKG_VERSION"), git_commit())
}

/// Reads the global configuration and keeps a channel up to date with it (defaults when
/// none is stored; a bad stored value keeps the defaults and is logged). The first read
/// must succeed; after that a broken watch is re-opened (with backoff) for as long as the
/// daemon runs, so a store outage never leaves a daemon on a stale configuration.
pub async fn watch_global(
    kv: Arc<dyn KvStore>,
    keys: Keys,
) -> Result<watch::Receiver<GlobalConfig>> {
    let key = keys.global();
    let first = kv
        .get(&key)
        .await
        .context("reading the global configuration")?;
    let mut after = match &first {
        Some(e) => e.mod_rev,
        None => kv.revision().await.context("reading the store revision")?,
    };
    let (tx, rx) = watch::channel(read_global(first));
    tokio::spawn(async move {
        let mut pause = std::time::Duration::from_millis(100);
        loop {
            let mut stream = match kv.watch(&key, Some(after)).await {
                Ok(s) => s,
                Err(err) => {
                    warn!(error = %err, "cannot watch the global configuration; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(5));
                    continue;
                }
            };
            pause = std::time::Duration::from_millis(100);
            while let Some(ev) = stream.next().await {
                let next = match ev {
                    Ok(WatchEvent::Put(e)) if e.key == key => {
                        after = e.mod_rev;
                        read_global(Some(e))
                    }
                    Ok(WatchEvent::Delete { key: k, revision }) if k == key => {
                        after = revision;
                        GlobalConfig::default()
                    }
                    Ok(WatchEvent::Resync { revision }) => match kv.get(&key).await {
                        Ok(e) => {
                            after = revision;
                            read_global(e)
                        }
                        Err(err) => {
                            warn!(error = %err, "could not re-read the global configuration");
                            break;
                        }
                    },
                    Ok(_) => continue,
                    Err(err) => {
                        warn!(error = %err, "global configuration watch failed; re-opening it");
                        break;
                    }
                };
                info!(
                    ttl_s = next.ttl.as_secs(),
                    timeout_s = next.timeout.as_secs(),
                    "global configuration changed"
                );
                if tx.send(next).is_err() {
                    return;
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(pause).await;
        }
    });
    Ok(rx)
}

fn read_global(e: Option<volcore::Entry>) -> GlobalConfig {
    match e {
        None => GlobalConfig::default(),
        Some(e) => GlobalConfig::from_json(&e.value).unwrap_or_else(|err| {
            warn!(error = %err, "stored global configuration is invalid; using defaults");
            GlobalConfig::default()
        }),
    }
}

/// Runs `attempt` until it succeeds, waiting 100 ms doubling to 5 s between tries, and
/// says what the daemon waits for in `waiting` (and the log) meanwhile; an error for which
/// `fatal` is true ends the wait (retrying cannot fix it).
pub async fn retry_until_ready<T, Fut>(
    who: &str,
    waiting: &std::sync::Mutex<String>,
    mut attempt: impl FnMut() -> Fut,
    fatal: impl Fn(&anyhow::Error) -> bool,
) -> Result<T>
where
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if fatal(&e) => return Err(e),
            Err(e) => {
                let what = format!(
                    "waiting for its store ({e:#}); retrying every {}",
                    volcore::size::format_duration(pause)
                );
                warn!("{who} {what}");
                if let Ok(mut w) = waiting.lock() {
                    *w = what;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}

/// The host label given with `--host-label`, or this machine's host name.
pub fn host_label(given: Option<String>) -> Result<HostName> {
    match given {
        Some(h) => HostName::new(h).context("--host-label"),
        None => Ok(HostName::this_host()),
    }
}

/// Where a daemon keeps its state: the store and its key prefix.
#[derive(clap::Args, Clone, Debug)]
pub struct StoreArgs {
    /// The store: etcd://host:port[,host:port…] | etcds://… (TLS) | embedded:PATH | memory:
    #[arg(long, env = "VOLCORE_KV", default_value = "etcd://127.0.0.1:2379")]
    pub kv: String,
    /// Key prefix in the store.
    #[arg(long, env = "VOLCORE_PREFIX", default_value = "/volplugin")]
    pub prefix: String,
    /// etcds://: the CA certificate (PEM) that signed etcd's certificate.
    #[arg(long, env = "VOLCORE_KV_CACERT")]
    pub kv_cacert: Option<std::path::PathBuf>,
    /// etcds://: this daemon's client certificate (PEM), for etcd's --client-cert-auth.
    #[arg(long, env = "VOLCORE_KV_CERT", requires = "kv_key")]
    pub kv_cert: Option<std::path::PathBuf>,
    /// etcds://: its private key (PEM).
    #[arg(long, env = "VOLCORE_KV_KEY", requires = "kv_cert")]
    pub kv_key: Option<std::path::PathBuf>,
    /// etcd user name (etcd's own authentication); the password comes from
    /// --kv-password-file or VOLCORE_KV_PASSWORD.
    #[arg(long, env = "VOLCORE_KV_USER")]
    pub kv_user: Option<String>,
    /// A file holding the etcd user's password (its first line).
    #[arg(long, env = "VOLCORE_KV_PASSWORD_FILE")]
    pub kv_password_file: Option<std::path::PathBuf>,
}

impl StoreArgs {
    /// Opens the store.
    pub async fn open(&self) -> Result<Arc<dyn KvStore>> {
        let is_etcd = self.kv.starts_with("etcd://") || self.kv.starts_with("etcds://");
        let tls_flags = self.kv_cacert.is_some() || self.kv_cert.is_some();
        if !is_etcd {
            if tls_flags || self.kv_user.is_some() {
                anyhow::bail!("--kv-cacert, --kv-cert, --kv-key and --kv-user are for etcd stores (etcd:// or etcds://), not {}", self.kv);
            }
            return volcore_kv::open(&self.kv)
                .await
                .with_context(|| format!("opening store {}", self.kv));
        }
        let mut cfg = volcore_kv::EtcdConfig::parse(&self.kv)?;
        let tls = volcore_kv::EtcdConfig::wants_tls(&self.kv);
        if tls {
            let ca = self.kv_cacert.as_ref().with_context(|| {
                format!(
                    "{} is etcd over TLS: give --kv-cacert, the CA that signed etcd's certificate",
                    self.kv
                )
            })?;
            let read = |p: &std::path::Path, flag: &str| {
                std::fs::read(p).with_context(|| format!("reading {flag} {}", p.display()))
            };
            let identity = match (&self.kv_cert, &self.kv_key) {
                (Some(c), Some(k)) => Some((read(c, "--kv-cert")?, read(k, "--kv-key")?)),
                _ => None,
            };
            cfg.tls = Some(volcore_kv::EtcdTls {
                ca_pem: read(ca, "--kv-cacert")?,
                identity,
            });
        } else if tls_flags {
            anyhow::bail!(
                "--kv-cacert and --kv-cert are for TLS: write the store as etcds://{}",
                self.kv.trim_start_matches("etcd://")
            );
        }
        if let Some(user) = &self.kv_user {
            cfg.user = Some((user.clone(), self.password()?));
        }
        // With etcd users the client authenticates as it connects, so an etcd that is not
        // up yet is waited for here (a refused password is final).
        let mut pause = std::time::Duration::from_millis(200);
        loop {
            match volcore_kv::EtcdKv::connect(cfg.clone()).await {
                Ok(kv) => return Ok(Arc::new(kv)),
                Err(e) if cfg.user.is_some() && e.is_retryable() => {
                    warn!(error = %e, store = %self.kv, "etcd is not reachable yet; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(5));
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e))
                        .with_context(|| format!("opening store {}", self.kv))
                }
            }
        }
    }

    /// The etcd password: from --kv-password-file, else VOLCORE_KV_PASSWORD.
    fn password(&self) -> Result<String> {
        if let Some(f) = &self.kv_password_file {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading --kv-password-file {}", f.display()))?;
            return Ok(text.lines().next().unwrap_or_default().to_owned());
        }
        std::env::var("VOLCORE_KV_PASSWORD").map_err(|_| {
            anyhow::anyhow!("--kv-user needs a password: give --kv-password-file FILE or set VOLCORE_KV_PASSWORD")
        })
    }
}

/// Where the Docker plugin listens: `<socket-dir>/<name>.sock`.
#[derive(clap::Args, Clone, Debug)]
pub struct PluginArgs {
    /// Plugin name: the socket is `<socket-dir>/<name>.sock`; `docker volume create -d <name>`.
    #[arg(long, env = "VOLPLUGIN_NAME", default_value = "volplugin")]
    pub plugin_name: String,
    /// Where Docker looks for plugin sockets.
    #[arg(
        long,
        env = "VOLPLUGIN_SOCKET_DIR",
        default_value = "/run/docker/plugins"
    )]
    pub socket_dir: std::path::PathBuf,
}

/// The storage drivers a daemon serves.
#[derive(clap::Args, Clone, Debug)]
pub struct DriverArgs {
    /// State directory of the local (loop-file) driver.
    #[arg(
        long,
        env = "VOLCORE_LOCAL_STATE",
        default_value = "/var/lib/volcore/local"
    )]
    pub local_state: std::path::PathBuf,
    /// Serve the `null` backend (no storage work; for tests and benchmarks).
    #[arg(long, env = "VOLCORE_ALLOW_NULL_BACKEND")]
    pub allow_null_backend: bool,
    #[command(flatten)]
    pub ceph: CephArgs,
}

/// Ceph flags shared by the daemons that do storage work.
#[derive(clap::Args, Clone, Debug)]
pub struct CephArgs {
    /// ceph.conf of the cluster (default: Ceph's own search, CEPH_CONF or /etc/ceph/ceph.conf).
    #[arg(long, env = "VOLCORE_CEPH_CONF")]
    pub ceph_conf: Option<std::path::PathBuf>,
    /// cephx user for rbd and rbd-fuse (`--id`; default admin).
    #[arg(long, env = "VOLCORE_CEPH_ID")]
    pub ceph_id: Option<String>,
    /// How this host attaches RBD images: krbd (kernel, default), nbd (rbd-nbd) or fuse
    /// (rbd-fuse + loop; for hosts without the rbd and nbd modules).
    #[arg(long, env = "VOLCORE_CEPH_ATTACH", default_value = "krbd")]
    pub ceph_attach: volcore_ceph::Attach,
    /// Pools listed when the daemon lists the Ceph backend's volumes (comma separated).
    #[arg(
        long,
        env = "VOLCORE_CEPH_POOLS",
        default_value = "rbd",
        value_delimiter = ','
    )]
    pub ceph_pools: Vec<String>,
    /// State directory of the Ceph driver (rbd-fuse mount points).
    #[arg(
        long,
        env = "VOLCORE_CEPH_STATE",
        default_value = "/var/lib/volcore/ceph"
    )]
    pub ceph_state: std::path::PathBuf,
}

impl CephArgs {
    /// The driver these flags describe.
    pub fn driver(&self) -> Result<volcore_ceph::RbdDriver> {
        let mut cfg = volcore_ceph::CephConfig::new(&self.ceph_state);
        cfg.conf.clone_from(&self.ceph_conf);
        cfg.id.clone_from(&self.ceph_id);
        cfg.attach = self.ceph_attach;
        cfg.pools.clone_from(&self.ceph_pools);
        volcore_ceph::RbdDriver::new(cfg, Arc::new(volcore::exec::SystemExec))
            .context("ceph driver configuration")
    }
}

/// The storage drivers a daemon serves: the local driver (state under `local_state`), the
/// Ceph RBD driver when `ceph` is given and, when allowed, the `null` backend. The Ceph
/// driver contacts the cluster only when a Ceph volume is used.
pub fn drivers(
    local_state: &std::path::Path,
    ceph: Option<&CephArgs>,
    allow_null: bool,
) -> Result<volcore::Drivers> {
    let local = volcore_local::LocalDriver::new(local_state, Arc::new(volcore::exec::SystemExec))
        .with_context(|| format!("local driver state {}", local_state.display()))?;
    let mut d = volcore::Drivers::new().with(Arc::new(local));
    if let Some(c) = ceph {
        d = d.with(Arc::new(c.driver()?));
    }
    if allow_null {
        d = d.with_null();
    }
    Ok(d)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

/// Installs the tracing subscriber (`RUST_LOG`, default `info`), logging to stderr.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
