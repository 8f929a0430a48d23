//! volmaster: the REST API (`/v1/...`) over the volume engine.
//!
//! Stateless: any number of masters can serve one store. Each holds one lease (for the
//! locks of the operations it runs) and watches the global configuration.

mod audit;
mod auth;
mod error;
mod openapi;
mod routes;
pub mod tls;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result};
use tokio::time::Instant;
use tracing::info;
use volcore::{Drivers, HostName, Keys, KvStore, LeaseKeeper, Volumes};
use volcore_api::ErrorCode;

pub use audit::DEFAULT_KEEP as DEFAULT_AUDIT_KEEP;
pub use error::ApiError;
use error::ApiResult;
pub use openapi::openapi;
pub use routes::test_router;

/// volmaster's configuration.
#[derive(Clone, Debug)]
pub struct MasterConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The store, as given (`etcd://…`, `embedded:…`, `memory:`), for `/v1/info`.
    pub kv_spec: String,
    /// Key prefix.
    pub prefix: String,
    /// This host's label (recorded in the locks of operations it runs).
    pub host: HostName,
    /// Serve the `null` backend.
    pub allow_null_backend: bool,
    /// TLS with client certificates; plain HTTP when `None`.
    pub tls: Option<tls::TlsFiles>,
    /// Subjects that are admins whatever the role map says (`--admin-identity`): how the
    /// first admin gets in.
    pub admin_identities: Vec<volcore::Subject>,
    /// How many audit entries the store keeps (the oldest are dropped).
    pub audit_keep: usize,
}

/// What volmaster runs on.
pub struct MasterDeps {
    /// The store.
    pub kv: Arc<dyn KvStore>,
    /// Storage drivers (the null driver is added when allowed).
    pub drivers: Drivers,
}

#[derive(Clone)]
pub(crate) struct AppState {
    /// Set once the store answered (see [`serve`]).
    pub(crate) engine: Arc<OnceLock<Volumes>>,
    /// The role map and tenants, once read (TLS only: without it every caller is the
    /// local admin).
    pub(crate) auth: Arc<OnceLock<tokio::sync::watch::Receiver<volcore::AuthView>>>,
    /// The audit trail.
    pub(crate) audit: audit::Audit,
    /// What volmaster waits for until then.
    pub(crate) waiting: Arc<Mutex<String>>,
    pub(crate) kv: Arc<dyn KvStore>,
    pub(crate) keys: Keys,
    pub(crate) started: Instant,
    pub(crate) cfg: Arc<MasterConfig>,
}

impl AppState {
    /// The engine, or a 503 that says what volmaster still waits for.
    pub(crate) fn engine(&self) -> ApiResult<&Volumes> {
        self.engine.get().ok_or_else(|| {
            ApiError::new(
                ErrorCode::Starting,
                format!(
                    "volmaster is starting: {}",
                    self.waiting.lock().map(|w| w.clone()).unwrap_or_default()
                ),
            )
        })
    }
}

/// Runs volmaster until `shutdown` resolves. Prints `volmaster listening on ADDR` once
/// bound (tests pass port 0 and read it).
pub async fn run(
    cfg: MasterConfig,
    deps: MasterDeps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    serve(cfg, deps, listener, shutdown).await
}

/// Like [`run`], on a listener the caller bound. It serves at once: while its store is
/// unreachable, `/readyz` answers 503 and every API call a 503 that says what volmaster
/// waits for; it retries the store with backoff and serves the API once it answers. A
/// store outage later never stops it.
pub async fn serve(
    cfg: MasterConfig,
    deps: MasterDeps,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let keys = Keys::new(&cfg.prefix).context("--prefix")?;
    let kv = deps.kv;
    let mut drivers = deps.drivers;
    if cfg.allow_null_backend {
        drivers = drivers.with_null();
    }
    let addr = listener.local_addr()?;
    // Read before anything serves: a bad certificate is a start-up error, not a 500.
    let tls_cfg = cfg.tls.as_ref().map(tls::server_config).transpose()?;
    let scheme = if tls_cfg.is_some() { "https" } else { "http" };
    // Tests and scripts read this line for the address: keep it as it is.
    println!("volmaster listening on {addr}");
    info!(%addr, %scheme, store = %cfg.kv_spec, prefix = %cfg.prefix, "volmaster started");
    let state = AppState {
        engine: Arc::new(OnceLock::new()),
        auth: Arc::new(OnceLock::new()),
        audit: audit::Audit::start(kv.clone(), keys.clone(), cfg.audit_keep.max(1)),
        waiting: Arc::new(Mutex::new("connecting to its store".to_owned())),
        kv: kv.clone(),
        keys: keys.clone(),
        started: Instant::now(),
        cfg: Arc::new(cfg),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = routes::router(state.clone());
    let stopped = async {
        let _ = stop_rx.await;
    };
    let server = async move {
        match tls_cfg {
            Some(c) => tls::serve(listener, app, c, stopped).await,
            None => axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .into_future()
                .await
                .map_err(Into::into),
        }
    };
    let main = async {
        let mut shutdown = Box::pin(shutdown);
        let keeper = tokio::select! {
            k = connect(&state, &kv, &keys, drivers) => Some(k),
            () = &mut shutdown => None,
        };
        if matches!(keeper, Some(Ok(_))) {
            info!("volmaster ready");
            shutdown.await;
        }
        let _ = stop_tx.send(());
        keeper.transpose()
    };
    let (served, keeper) = tokio::join!(server, main);
    if let Some(k) = keeper? {
        k.shutdown().await;
    }
    info!("volmaster stopped");
    served.context("serving the REST API")
}

/// Reads the global configuration, takes a lease and builds the engine, retrying with
/// backoff while the store is unreachable.
async fn connect(
    state: &AppState,
    kv: &Arc<dyn KvStore>,
    keys: &Keys,
    drivers: Drivers,
) -> Result<LeaseKeeper> {
    drivers.recover().await;
    let tls = state.cfg.tls.is_some();
    let admins: std::collections::BTreeSet<_> =
        state.cfg.admin_identities.iter().cloned().collect();
    let attempt = || async {
        let global = volcore_daemon::watch_global(kv.clone(), keys.clone()).await?;
        // Identities exist only over TLS; without it every caller is the local admin.
        let auth = if tls {
            Some(auth::watch_auth(kv.clone(), keys.clone(), admins.clone()).await?)
        } else {
            None
        };
        let ttl = global.borrow().ttl;
        let keeper = LeaseKeeper::start(kv.clone(), ttl)
            .await
            .context("granting volmaster's lease")?;
        anyhow::Ok((global, auth, keeper))
    };
    let (global, auth, keeper) = volcore_daemon::retry_until_ready(
        &format!("volmaster (store {})", state.cfg.kv_spec),
        &state.waiting,
        attempt,
        |_| false,
    )
    .await?;
    let engine = Volumes::new(
        kv.clone(),
        keys.clone(),
        drivers,
        state.cfg.host.clone(),
        keeper.subscribe(),
        global,
    );
    if let Some(a) = auth {
        let _ = state.auth.set(a);
    }
    let _ = state.engine.set(engine);
    Ok(keeper)
}
