//! volplugin: Docker's VolumeDriver protocol on `/run/docker/plugins/<name>.sock`, a thin
//! adapter over the library's mount lifecycle ([`volcore::HostMounts`]): this module
//! parses Docker's requests, turns library errors into Docker's `Err` strings, and answers
//! `Get`, `Path` and `List` from state the host already holds or watches.
//!
//! The plugin talks to the store directly (never through a master): its lease is its own,
//! so a dead plugin's locks die with it. It binds its socket at once and, while its store
//! is unreachable, answers `/readyz` with 503 and every volume request with an error that
//! says what it waits for; it serves once the store answers.

use std::future::{Future, IntoFuture};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as HttpResponse};

use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tracing::{info, warn};
use volcore::cgroup::ThrottleConfig;
use volcore::hosts::HostError;
use volcore::mounts::{MountLock, MountView};
use volcore::{
    Drivers, EngineError, HostMounts, HostName, Keys, KvStore, LeaseKeeper, LockKind, MountError,
    MountsConfig, MountsDeps, PolicyName, VolumeRef, Volumes,
};
use volcore_api::docker::{Request, Response, VolumeEntry};

pub use volcore::LeaseLossAction;

/// volplugin's configuration.
#[derive(Clone, Debug)]
pub struct PluginConfig {
    /// Directory of the socket (`/run/docker/plugins`).
    pub socket_dir: PathBuf,
    /// Plugin name: the socket is `<socket_dir>/<name>.sock` and Docker's `-d <name>`.
    pub plugin_name: String,
    /// This host's label in locks and mount records.
    pub host: HostName,
    /// This host's state directory (its persistent identity; one process at a time).
    pub state_dir: PathBuf,
    /// Key prefix.
    pub prefix: String,
    /// Policy for names given without `policy/`.
    pub default_policy: Option<PolicyName>,
    /// Fencing action after a lost lease.
    pub on_lease_loss: LeaseLossAction,
    /// cgroup v1 parent (under the blkio mount) whose cgroups get rate limits.
    pub cgroup_parent: PathBuf,
    /// cgroup v2 parent directory for `io.max` (used when there is no v1 blkio).
    pub cgroup_v2: Option<PathBuf>,
    /// This host's mount root, instead of the global configuration's MountPath (several
    /// plugin instances on one machine, or a host with a different layout).
    pub mount_path: Option<PathBuf>,
}

/// What volplugin runs on.
pub struct PluginDeps {
    /// The store.
    pub kv: Arc<dyn KvStore>,
    /// Storage drivers (with mount support).
    pub drivers: Drivers,
}

/// Checks a plugin name: non-empty, at most 64 bytes, letters, digits, `.`, `_`, `-`.
pub fn check_plugin_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 64 || name.starts_with('.') {
        bail!("plugin name {name:?} must be 1 to 64 characters and not start with '.'");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
    {
        bail!("plugin name {name:?} contains {c:?}; use letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// What the plugin serves with once its store answered.
struct Ready {
    engine: Volumes,
    mounts: HostMounts,
    keeper: LeaseKeeper,
}

#[derive(Clone)]
struct Plugin {
    cfg: Arc<PluginConfig>,
    ready: Arc<OnceLock<Ready>>,
    /// What the plugin waits for while it is not ready.
    waiting: Arc<Mutex<String>>,
}

type Reply = Json<Value>;

impl Plugin {
    fn parse_name(&self, name: &str) -> Result<VolumeRef, String> {
        if name.contains('/') {
            return VolumeRef::parse(name).map_err(|e| e.to_string());
        }
        match &self.cfg.default_policy {
            Some(p) => VolumeRef::parse(&format!("{p}/{name}")).map_err(|e| e.to_string()),
            None => Err(format!(
                "volume name {name:?} names no policy: write policy/volume (e.g. policy1/{name}), or start volplugin with --default-policy"
            )),
        }
    }

    fn ready(&self) -> Result<&Ready, String> {
        self.ready.get().ok_or_else(|| {
            format!(
                "volplugin on {} is starting: {}",
                self.cfg.host,
                self.waiting.lock().map(|w| w.clone()).unwrap_or_default()
            )
        })
    }

    async fn handle(&self, endpoint: &str, body: &Bytes) -> Reply {
        Json(self.answer(endpoint, body).await.to_json())
    }

    async fn answer(&self, endpoint: &str, body: &Bytes) -> Response {
        let req = match Request::parse(endpoint, body) {
            Ok(r) => r,
            Err(e) => return Response::Err(e.to_string()),
        };
        // Docker discovers the plugin with these two; they need no store.
        match req {
            Request::Activate => return Response::Activate,
            Request::Capabilities => return Response::Capabilities,
            _ => {}
        }
        let r = match self.ready() {
            Ok(r) => r,
            Err(e) => return Response::Err(e),
        };
        let named = |name: &str| self.parse_name(name);
        match req {
            Request::Activate | Request::Capabilities | Request::List => self.list(r).await,
            Request::Create { name, opts } => match named(&name) {
                Ok(v) => match r.engine.create(&v, &opts).await {
                    Ok(_) | Err(EngineError::VolumeExists { .. }) => {
                        // Docker lists right after a create: answer it from a catalog that
                        // has seen this write.
                        if r.mounts.catalog().ready() {
                            r.mounts
                                .catalog()
                                .await_volume(&v, true, std::time::Duration::from_secs(5))
                                .await;
                        }
                        Response::Done
                    }
                    Err(e) => Response::Err(e.to_string()),
                },
                Err(e) => Response::Err(e),
            },
            Request::Remove { name } => match named(&name) {
                Ok(v) => self.remove(r, &v).await,
                Err(e) => Response::Err(e),
            },
            Request::Mount { name, id } => match named(&name) {
                Ok(v) => match r.mounts.mount(&v, &id).await {
                    Ok(p) => Response::Mountpoint(p),
                    Err(e) => Response::Err(mount_error(&e)),
                },
                Err(e) => Response::Err(e),
            },
            Request::Unmount { name, id } => match named(&name) {
                Ok(v) => match r.mounts.unmount(&v, &id).await {
                    Ok(()) => {
                        self.after_unmount(r, &v);
                        Response::Done
                    }
                    Err(e) => Response::Err(mount_error(&e)),
                },
                Err(e) => Response::Err(e),
            },
            Request::Path { name } => match named(&name) {
                Ok(v) => Response::Mountpoint(
                    r.mounts
                        .mounted(&v)
                        .map(|m| m.record.path)
                        .unwrap_or_default(),
                ),
                Err(e) => Response::Err(e),
            },
            Request::Get { name } => match named(&name) {
                Ok(v) => self.get(r, &v).await,
                Err(e) => Response::Err(e),
            },
        }
    }

    /// An ephemeral volume whose last user here left is removed (in the background, so
    /// Docker's unmount is not held up) — if no host uses it any more, which the removal
    /// re-checks in its lock transaction.
    fn after_unmount(&self, r: &Ready, v: &VolumeRef) {
        let Some(vol) = r.mounts.catalog().get(v).map(|i| i.volume) else {
            return;
        };
        if !vol.ephemeral || r.mounts.mounted(v).is_some() {
            return;
        }
        let (engine, v) = (r.engine.clone(), v.clone());
        tokio::spawn(async move {
            let usage = match volcore::reclaim::Usage::read(engine.kv().as_ref(), engine.keys())
                .await
            {
                Ok(u) => u,
                Err(e) => {
                    warn!(volume = %v, error = %e, "ephemeral volume not removed: cannot read who uses it; volsupervisor or volcli volume remove cleans it up");
                    return;
                }
            };
            if usage.unused_since(&vol).is_none() {
                info!(volume = %v, "ephemeral volume still in use elsewhere; kept");
                return;
            }
            let checks = usage.unused_checks(engine.keys(), &v);
            match engine
                .remove_checked(&v, Some(std::time::Duration::ZERO), checks, Vec::new())
                .await
            {
                Ok(()) => info!(volume = %v, "ephemeral volume removed at its last unmount"),
                Err(e) => {
                    warn!(volume = %v, error = %e, "ephemeral volume not removed at its last unmount")
                }
            }
        });
    }

    async fn remove(&self, r: &Ready, v: &VolumeRef) -> Response {
        let destroy = match r.mounts.catalog().get(v) {
            Some(i) => Ok(i.volume.destroy_on_remove),
            None => r.engine.get(v).await.map(|i| i.volume.destroy_on_remove),
        };
        match destroy {
            Ok(true) => match r.engine.remove(v, false, None).await {
                Ok(()) => Response::Done,
                Err(e) => Response::Err(e.to_string()),
            },
            Ok(false) => {
                info!(volume = %v, "docker volume rm: storage kept (the policy does not set destroy-on-remove)");
                Response::Done
            }
            Err(EngineError::VolumeNotFound { .. }) => Response::Done,
            Err(e) => Response::Err(e.to_string()),
        }
    }

    /// Docker calls List for every `docker volume ls`: answered from the watched catalog
    /// and the host's mounts, without a store round trip.
    async fn list(&self, r: &Ready) -> Response {
        let paths = r.mounts.paths();
        let names: Vec<VolumeRef> = if r.mounts.catalog().ready() {
            r.mounts
                .catalog()
                .list()
                .iter()
                .map(|v| v.reference())
                .collect()
        } else {
            match r.engine.list(None).await {
                Ok(vols) => vols.iter().map(|v| v.reference()).collect(),
                Err(e) => return Response::Err(e.to_string()),
            }
        };
        Response::Volumes(
            names
                .iter()
                .map(|v| VolumeEntry {
                    name: v.to_string(),
                    mountpoint: paths.get(v).cloned().unwrap_or_default(),
                    created_at: None,
                    status: None,
                })
                .collect(),
        )
    }

    async fn get(&self, r: &Ready, v: &VolumeRef) -> Response {
        let here = r.mounts.mounted(v);
        let (info, lock) = match &here {
            // Mounted here: everything is in memory (the lock is ours).
            Some(m) => (
                r.mounts
                    .catalog()
                    .get(v)
                    .unwrap_or_else(|| volcore::VolumeInfo {
                        volume: (*m.volume).clone(),
                        runtime_options: m.volume.runtime.clone(),
                    }),
                lock_json(m),
            ),
            None => {
                let info = match r.mounts.catalog().get(v) {
                    Some(i) => i,
                    None => match r.engine.get(v).await {
                        Ok(i) => i,
                        Err(e) => return Response::Err(e.to_string()),
                    },
                };
                let holder = r
                    .mounts
                    .locker()
                    .get(LockKind::Mount, v)
                    .await
                    .ok()
                    .flatten()
                    .map(|h| json!({"host": h.holder.host, "reason": h.holder.reason, "since": humantime::format_rfc3339_seconds(h.holder.since).to_string()}));
                (info, holder.unwrap_or(Value::Null))
            }
        };
        let status = json!({
            "policy": v.policy.as_str(),
            "size": info.volume.create.size.to_string(),
            "filesystem": info.volume.create.filesystem,
            "backend": info.volume.backends.mount.as_str(),
            "unlocked": info.volume.unlocked,
            "lock": lock,
            "mounted": here.as_ref().map(|m| json!({"host": self.cfg.host.as_str(), "path": m.record.path, "users": m.record.ids.len()})),
            "runtime": info.runtime_options,
        });
        Response::Volume(VolumeEntry {
            name: v.to_string(),
            mountpoint: here.map(|m| m.record.path).unwrap_or_default(),
            created_at: Some(humantime::format_rfc3339_seconds(info.volume.created_at).to_string()),
            status: Some(status),
        })
    }
}

fn lock_json(m: &MountView) -> Value {
    match &m.lock {
        MountLock::Unlocked => Value::Null,
        MountLock::Held(h) => json!({
            "host": h.holder.host,
            "reason": h.holder.reason,
            "since": humantime::format_rfc3339_seconds(h.holder.since).to_string(),
        }),
        MountLock::Suspended(h) => json!({
            "host": h.holder.host,
            "reason": h.holder.reason,
            "state": "re-establishing after a lost lease",
        }),
        MountLock::Lost(holder) => json!({
            "host": holder.as_ref().map(|h| h.host.as_str()),
            "state": "taken by another holder while this host's lease was lost",
        }),
    }
}

/// Docker's `Err` text for a mount lifecycle error.
fn mount_error(e: &MountError) -> String {
    e.to_string()
}

async fn endpoint(
    State(p): State<Plugin>,
    axum::extract::Path(ep): axum::extract::Path<String>,
    body: Bytes,
) -> Reply {
    p.handle(&ep, &body).await
}

async fn readyz(State(p): State<Plugin>) -> HttpResponse {
    match p.ready() {
        Ok(r) if r.mounts.adopted() => Json(json!({"status": "ready"})).into_response(),
        Ok(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "re-adopting mounts"})),
        )
            .into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting", "waiting": why})),
        )
            .into_response(),
    }
}

/// `GET /check` on the socket: this host's mounts against its records (a dry run).
async fn check_dry(State(p): State<Plugin>) -> HttpResponse {
    host_check(&p, false).await
}

/// `POST /check`: the same, repairing (unrecorded mounts unmounted, records of vanished
/// mounts dropped).
async fn check_repair(State(p): State<Plugin>) -> HttpResponse {
    host_check(&p, true).await
}

async fn host_check(p: &Plugin, repair: bool) -> HttpResponse {
    match p.ready() {
        Ok(r) => Json(r.mounts.check(repair).await).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting", "waiting": why})),
        )
            .into_response(),
    }
}

/// The plugin's socket path.
pub fn socket_path(cfg: &PluginConfig) -> PathBuf {
    cfg.socket_dir.join(format!("{}.sock", cfg.plugin_name))
}

/// Connects everything that needs the store, retrying with backoff while it is
/// unreachable. Errors that retrying cannot fix (a host label in use, a held state
/// directory) end the plugin.
async fn start(p: &Plugin, deps: PluginDeps) -> Result<Ready> {
    let cfg = &p.cfg;
    let keys = Keys::new(&cfg.prefix).context("--prefix")?;
    let kv = deps.kv;
    let attempt = || async {
        let global = volcore_daemon::watch_global(kv.clone(), keys.clone()).await?;
        let ttl = global.borrow().ttl;
        let keeper = LeaseKeeper::start(kv.clone(), ttl)
            .await
            .context("granting volplugin's lease")?;
        let mounts = HostMounts::start(
            MountsDeps {
                kv: kv.clone(),
                keys: keys.clone(),
                drivers: deps.drivers.clone(),
                lease: keeper.subscribe(),
                global: global.clone(),
            },
            MountsConfig {
                host: cfg.host.clone(),
                state_dir: cfg.state_dir.clone(),
                owner: format!("volplugin:{}", cfg.plugin_name),
                version: volcore_daemon::version(),
                mount_root: cfg.mount_path.clone(),
                on_lease_loss: cfg.on_lease_loss,
                throttle: Some(ThrottleConfig {
                    v1_parent: cfg.cgroup_parent.clone(),
                    v2_parent: cfg.cgroup_v2.clone(),
                }),
            },
        )
        .await;
        let mounts = match mounts {
            Ok(m) => m,
            Err(e) => {
                keeper.shutdown().await;
                return Err(anyhow::Error::new(e));
            }
        };
        let engine = Volumes::new(
            kv.clone(),
            keys.clone(),
            deps.drivers.clone(),
            cfg.host.clone(),
            keeper.subscribe(),
            global,
        );
        anyhow::Ok(Ready {
            engine,
            mounts,
            keeper,
        })
    };
    volcore_daemon::retry_until_ready("volplugin", &p.waiting, attempt, fatal).await
}

/// Start errors that no retry fixes. A state directory held by this very process is not
/// one: a previous instance run in-process (a restart by an embedding program, or a test)
/// is still letting go of it, and will.
fn fatal(e: &anyhow::Error) -> bool {
    let final_host_error = |h: &HostError| match h {
        HostError::StateDirInUse { pid, .. } => *pid != Some(std::process::id()),
        HostError::LabelInUse { .. } | HostError::StateDir { .. } => true,
        _ => false,
    };
    e.chain().any(|c| {
        let host = match c.downcast_ref::<MountError>() {
            Some(MountError::Host(h)) => Some(h),
            _ => c.downcast_ref::<HostError>(),
        };
        host.is_some_and(final_host_error)
            || c.downcast_ref::<volcore::keys::PrefixError>().is_some()
    })
}

/// The group that may reach the plugin socket besides its owner (the Docker daemon runs
/// as root; members of `docker` drive Docker already).
pub const SOCKET_GROUP: &str = "docker";

/// Makes the socket 0660, in group [`SOCKET_GROUP`] where that group exists: whoever
/// reaches the socket can mount any volume on this host, so nobody else may.
fn secure_socket(sock: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("making {} mode 0660", sock.display()))?;
    match nix::unistd::Group::from_name(SOCKET_GROUP) {
        Ok(Some(g)) => std::os::unix::fs::chown(sock, None, Some(g.gid.as_raw()))
            .with_context(|| format!("giving {} to group {SOCKET_GROUP}", sock.display()))?,
        Ok(None) => {
            info!(socket = %sock.display(), "no {SOCKET_GROUP} group on this host; the socket stays in this daemon's group")
        }
        Err(e) => {
            warn!(error = %e, "cannot look up group {SOCKET_GROUP}; the socket stays in this daemon's group")
        }
    }
    Ok(())
}

/// Runs volplugin until `shutdown` resolves (or until a start error no retry can fix).
pub async fn run(
    cfg: PluginConfig,
    deps: PluginDeps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    check_plugin_name(&cfg.plugin_name)?;
    Keys::new(&cfg.prefix).context("--prefix")?;
    std::fs::create_dir_all(&cfg.socket_dir)
        .with_context(|| format!("creating {}", cfg.socket_dir.display()))?;
    let sock = socket_path(&cfg);
    if sock.exists() {
        warn!(socket = %sock.display(), "replacing a stale socket");
        std::fs::remove_file(&sock)
            .with_context(|| format!("removing stale {}", sock.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(&sock)
        .with_context(|| format!("binding {}", sock.display()))?;
    secure_socket(&sock)?;
    let plugin = Plugin {
        cfg: Arc::new(cfg),
        ready: Arc::new(OnceLock::new()),
        waiting: Arc::new(Mutex::new("connecting to its store".to_owned())),
    };
    info!(socket = %sock.display(), host = %plugin.cfg.host, "volplugin socket bound; connecting to the store");
    let app = Router::new()
        .route("/readyz", get(readyz))
        .route("/check", get(check_dry).post(check_repair))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/{endpoint}", post(endpoint))
        .with_state(plugin.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // The server runs in this future (not a spawned task), so dropping `run` — a crash in
    // an in-process test — takes everything down with it, as a killed process would.
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = stop_rx.await;
        })
        .into_future();
    let main = async {
        let mut shutdown = Box::pin(shutdown);
        let result = tokio::select! {
            r = start(&plugin, deps) => r.map(Some),
            () = &mut shutdown => Ok(None),
        };
        let result = match result {
            Ok(Some(r)) => {
                let _ = plugin.ready.set(r);
                // Scripts and tests wait for this line.
                println!("volplugin listening on {}", sock.display());
                info!(host = %plugin.cfg.host, "volplugin ready");
                shutdown.await;
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        let _ = stop_tx.send(());
        result
    };
    let (served, result) = tokio::join!(server, main);
    let _ = std::fs::remove_file(&sock);
    if let Some(r) = Arc::into_inner(plugin.ready).and_then(OnceLock::into_inner) {
        r.mounts.stop();
        // Keep the locks of volumes still mounted: the lease runs out on its own unless a
        // restarted plugin re-adopts them first.
        r.keeper.abandon().await;
        info!(
            "volplugin stopped; locks of mounted volumes expire with the lease unless re-adopted"
        );
    }
    result?;
    served.context("serving the plugin socket")
}
