//! volmaster: the REST API (`/v1/...`) over the volume engine.
//!
//! Stateless: any number of masters can serve one store. Each holds one lease (for the
//! locks of the operations it runs) and watches the global configuration.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::time::Instant;
use tracing::{info, warn};
use volcore::{
    DriverError, Drivers, EngineError, GlobalConfig, HostName, Keys, KvError, KvStore, LeaseId,
    LeaseKeeper, LockError, LockKind, PolicyName, SnapshotName, VolumeName, VolumeRef, Volumes,
    WatchEvent,
};

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
}

/// What volmaster runs on.
pub struct MasterDeps {
    /// The store.
    pub kv: Arc<dyn KvStore>,
    /// Storage drivers (the null driver is added when allowed).
    pub drivers: Drivers,
}

#[derive(Clone)]
struct AppState {
    /// Set once the store answered (see [`serve`]).
    engine: Arc<OnceLock<Volumes>>,
    /// What volmaster waits for until then.
    waiting: Arc<Mutex<String>>,
    kv: Arc<dyn KvStore>,
    keys: Keys,
    started: Instant,
    cfg: Arc<MasterConfig>,
}

impl AppState {
    /// The engine, or a 503 that says what volmaster still waits for.
    fn engine(&self) -> ApiResult<&Volumes> {
        self.engine.get().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "starting",
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
    println!("volmaster listening on {addr}");
    info!(%addr, store = %cfg.kv_spec, prefix = %cfg.prefix, "volmaster started");
    let state = AppState {
        engine: Arc::new(OnceLock::new()),
        waiting: Arc::new(Mutex::new("connecting to its store".to_owned())),
        kv: kv.clone(),
        keys: keys.clone(),
        started: Instant::now(),
        cfg: Arc::new(cfg),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(async {
            let _ = stop_rx.await;
        })
        .into_future();
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
    let attempt = || async {
        let global = crate::watch_global(kv.clone(), keys.clone()).await?;
        let ttl = global.borrow().ttl;
        let keeper = LeaseKeeper::start(kv.clone(), ttl)
            .await
            .context("granting volmaster's lease")?;
        anyhow::Ok((global, keeper))
    };
    let (global, keeper) = crate::retry_until_ready(
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
    let _ = state.engine.set(engine);
    Ok(keeper)
}

/// The router, for in-process tests.
pub fn test_router(kv: Arc<dyn KvStore>, engine: Volumes, keys: Keys) -> Router {
    router(AppState {
        engine: Arc::new(OnceLock::from(engine)),
        waiting: Arc::default(),
        kv,
        keys,
        started: Instant::now(),
        cfg: Arc::new(MasterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            kv_spec: "memory:".into(),
            prefix: Keys::DEFAULT_PREFIX.into(),
            host: HostName::new("test").unwrap_or_else(|_| unreachable!("valid host")),
            allow_null_backend: true,
        }),
    })
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/v1/info", get(info_handler))
        .route("/v1/openapi.json", get(|| async { Json(openapi()) }))
        .route("/v1/global", get(global_get).put(global_put))
        .route("/v1/policies", get(policies_list))
        .route(
            "/v1/policies/{policy}",
            get(policy_get).put(policy_put).delete(policy_delete),
        )
        .route("/v1/policies/{policy}/revisions", get(revisions_list))
        .route(
            "/v1/policies/{policy}/revisions/{revision}",
            get(revision_get),
        )
        .route("/v1/watch/policies", get(policies_watch))
        .route("/v1/volumes", get(volumes_list).post(volume_create))
        .route(
            "/v1/volumes/{policy}/{volume}",
            get(volume_get).delete(volume_remove),
        )
        .route(
            "/v1/volumes/{policy}/{volume}/record",
            axum::routing::delete(volume_remove_record),
        )
        .route(
            "/v1/volumes/{policy}/{volume}/runtime",
            get(runtime_get).put(runtime_put),
        )
        .route(
            "/v1/volumes/{policy}/{volume}/snapshots",
            get(snapshots_list).post(snapshot_take),
        )
        .route("/v1/volumes/{policy}/{volume}/copy", post(volume_copy))
        .route("/v1/locks", get(locks_list))
        .route(
            "/v1/locks/{policy}/{volume}",
            get(locks_get).delete(locks_remove),
        )
        .route("/v1/check", get(check_dry).post(check_repair))
        .route("/v1/maintenance", post(maintenance_begin))
        .route(
            "/v1/maintenance/{session}",
            put(maintenance_renew).delete(maintenance_end),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

// ----- errors ---------------------------------------------------------------------------

/// An API error: `{"error":{"code":"…","message":"…"}}` with a fitting status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            warn!(status = %self.status, code = self.code, message = %self.message, "request failed");
        }
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

fn kv_status(e: &KvError) -> (StatusCode, &'static str) {
    match e {
        KvError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        KvError::Timeout { .. } => (StatusCode::SERVICE_UNAVAILABLE, "store_timeout"),
        KvError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
        KvError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
        KvError::Invalid { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        let (status, code) = match &e {
            EngineError::PolicyNotFound { .. } => (StatusCode::NOT_FOUND, "policy_not_found"),
            EngineError::RevisionNotFound { .. } => (StatusCode::NOT_FOUND, "revision_not_found"),
            EngineError::VolumeNotFound { .. } => (StatusCode::NOT_FOUND, "volume_not_found"),
            EngineError::VolumeExists { .. } => (StatusCode::CONFLICT, "volume_exists"),
            EngineError::PolicyInUse { .. } => (StatusCode::CONFLICT, "policy_in_use"),
            EngineError::Locked(l) => match l.as_ref() {
                LockError::Held { .. } => (StatusCode::LOCKED, "locked"),
                _ => (StatusCode::CONFLICT, "conflict"),
            },
            EngineError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
            EngineError::BadRequest(_) | EngineError::NoSnapshots { .. } => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            EngineError::BackendNotServed { .. } => (StatusCode::BAD_REQUEST, "backend_not_served"),
            EngineError::ChangedMeanwhile { .. } => (StatusCode::CONFLICT, "changed_meanwhile"),
            EngineError::LockLost { .. } => (StatusCode::CONFLICT, "lock_lost"),
            EngineError::LeftoverStorage { .. } => (StatusCode::CONFLICT, "leftover_storage"),
            EngineError::OutcomeUnknown { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown")
            }
            EngineError::SessionGone { .. } => (StatusCode::NOT_FOUND, "session_gone"),
            EngineError::Driver { source, .. } => match source.as_ref() {
                DriverError::NotFound { .. } => (StatusCode::NOT_FOUND, "storage_not_found"),
                DriverError::AlreadyExists { .. } => (StatusCode::CONFLICT, "storage_exists"),
                DriverError::Busy { .. } => (StatusCode::LOCKED, "storage_busy"),
                DriverError::Invalid(_) => (StatusCode::BAD_REQUEST, "storage_invalid"),
                DriverError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "storage_timeout"),
                _ => (StatusCode::BAD_GATEWAY, "storage_failed"),
            },
            EngineError::NoLease => (StatusCode::SERVICE_UNAVAILABLE, "no_lease"),
            EngineError::Kv(k) => kv_status(k),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        Self::new(status, code, message)
    }
}

impl From<KvError> for ApiError {
    fn from(e: KvError) -> Self {
        let (status, code) = kv_status(&e);
        Self::new(status, code, e.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_such_route",
        "no such route; see /v1/openapi.json",
    )
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed here; see /v1/openapi.json"),
    )
}

// ----- input helpers --------------------------------------------------------------------

fn policy_name(s: &str) -> ApiResult<PolicyName> {
    PolicyName::new(s).map_err(|e| ApiError::bad(e.to_string()))
}

fn vref(p: &str, v: &str) -> ApiResult<VolumeRef> {
    Ok(VolumeRef::new(
        policy_name(p)?,
        VolumeName::new(v).map_err(|e| ApiError::bad(e.to_string()))?,
    ))
}

fn query(raw: Option<String>) -> ApiResult<BTreeMap<String, String>> {
    match raw {
        None => Ok(BTreeMap::new()),
        Some(q) => serde_urlencoded::from_str(&q)
            .map_err(|e| ApiError::bad(format!("bad query string: {e}"))),
    }
}

fn query_bool(q: &BTreeMap<String, String>, key: &str) -> ApiResult<bool> {
    match q.get(key).map(String::as_str) {
        None | Some("" | "false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(other) => Err(ApiError::bad(format!(
            "?{key}={other}: expected true or false"
        ))),
    }
}

/// The longest lock wait a request may ask for (`?timeout=`, a maintenance `wait`).
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Parses a user-supplied duration that must lie within `min..=max`; outside, a 400 that
/// names the bound.
fn bounded_duration(s: &str, what: &str, min: Duration, max: Duration) -> ApiResult<Duration> {
    let bounds = format!(
        "{what} must be a duration from {} to {} (e.g. 30s)",
        volcore::size::format_duration(min),
        volcore::size::format_duration(max)
    );
    let d =
        volcore::size::parse_duration(s).map_err(|e| ApiError::bad(format!("{bounds}; {e}")))?;
    if d < min || d > max {
        return Err(ApiError::bad(format!("{bounds}, got {s}")));
    }
    Ok(d)
}

fn query_duration(q: &BTreeMap<String, String>, key: &str) -> ApiResult<Option<Duration>> {
    match q.get(key).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(s) => bounded_duration(s, &format!("?{key}"), Duration::ZERO, MAX_WAIT).map(Some),
    }
}

fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes, what: &str) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("{what} is not valid: {e}")))
}

// ----- health and info ------------------------------------------------------------------

async fn readyz(State(s): State<AppState>) -> Response {
    if let Err(e) = s.engine() {
        // Not a failed request: the answer is the state (no warning logged).
        return (
            e.status,
            Json(json!({"error": {"code": e.code, "message": e.message}})),
        )
            .into_response();
    }
    match tokio::time::timeout(Duration::from_secs(2), s.kv.revision()).await {
        Ok(Ok(rev)) => Json(json!({"status": "ready", "store_revision": rev})).into_response(),
        Ok(Err(e)) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        )
        .into_response(),
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_timeout",
            "the store did not answer within 2s",
        )
        .into_response(),
    }
}

async fn info_handler(State(s): State<AppState>) -> Json<Value> {
    let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).ok();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .ok();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "git_commit": option_env!("VOLCORE_GIT_COMMIT").unwrap_or("unknown"),
        "host": s.cfg.host.as_str(),
        "kernel": kernel,
        "arch": std::env::consts::ARCH,
        "open_fds": fds,
        "uptime_secs": s.started.elapsed().as_secs(),
        "store": {"backend": s.kv.backend(), "endpoints": s.cfg.kv_spec, "prefix": s.keys.prefix()},
    }))
}

// ----- global ---------------------------------------------------------------------------

async fn global_get(State(s): State<AppState>) -> ApiResult<Json<GlobalConfig>> {
    Ok(Json(s.engine()?.global().await?))
}

async fn global_put(State(s): State<AppState>, b: Bytes) -> ApiResult<Json<GlobalConfig>> {
    Ok(Json(s.engine()?.set_global(&b).await?))
}

// ----- policies -------------------------------------------------------------------------

async fn policies_list(State(s): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(
        serde_json::to_value(s.engine()?.policies().await?).unwrap_or_default(),
    ))
}

async fn policy_get(State(s): State<AppState>, Path(p): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(
        serde_json::to_value(s.engine()?.policy(&policy_name(&p)?).await?).unwrap_or_default(),
    ))
}

async fn policy_put(
    State(s): State<AppState>,
    Path(p): Path<String>,
    b: Bytes,
) -> ApiResult<Json<Value>> {
    let r = s.engine()?.upload_policy(&policy_name(&p)?, &b).await?;
    Ok(Json(serde_json::to_value(r).unwrap_or_default()))
}

async fn policy_delete(
    State(s): State<AppState>,
    Path(p): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<StatusCode> {
    let q = query(q)?;
    s.engine()?
        .delete_policy(&policy_name(&p)?, query_bool(&q, "force")?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn revisions_list(
    State(s): State<AppState>,
    Path(p): Path<String>,
) -> ApiResult<Json<Vec<u64>>> {
    Ok(Json(s.engine()?.policy_revisions(&policy_name(&p)?).await?))
}

async fn revision_get(
    State(s): State<AppState>,
    Path((p, r)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let rev: u64 = r
        .parse()
        .map_err(|_| ApiError::bad(format!("revision {r:?} is not a number")))?;
    let got = s.engine()?.policy_revision(&policy_name(&p)?, rev).await?;
    Ok(Json(serde_json::to_value(got).unwrap_or_default()))
}

/// NDJSON stream of `{"policy":…,"revision":…}`, one line per upload.
async fn policies_watch(State(s): State<AppState>, RawQuery(q): RawQuery) -> ApiResult<Response> {
    let q = query(q)?;
    let after = match q.get("after") {
        None => None,
        Some(a) => Some(
            a.parse::<u64>()
                .map_err(|_| ApiError::bad(format!("?after={a}: expected a revision number")))?,
        ),
    };
    let prefix = s.keys.all_policy_revisions();
    let stream = s.kv.watch(&prefix, after).await?;
    let lines = stream.filter_map(move |ev| {
        let prefix = prefix.clone();
        async move {
            match ev {
                Ok(WatchEvent::Put(e)) => {
                    let rest = e.key.strip_prefix(&prefix)?;
                    let (policy, rev) = rest.split_once('/')?;
                    let rev: u64 = rev.parse().ok()?;
                    let line = format!("{}\n", json!({"policy": policy, "revision": rev}));
                    Some(Ok::<_, Infallible>(Bytes::from(line)))
                }
                Ok(WatchEvent::Resync { revision }) => Some(Ok(Bytes::from(format!(
                    "{}\n",
                    json!({"resync": revision})
                )))),
                _ => None,
            }
        }
    });
    Ok(Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

// ----- volumes --------------------------------------------------------------------------

/// `POST /v1/volumes` body.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// `policy/volume`.
    pub volume: String,
    /// Create options.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

async fn volume_create(
    State(s): State<AppState>,
    b: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let req: CreateRequest = body(&b, "the create request")?;
    let v = VolumeRef::parse(&req.volume).map_err(|e| ApiError::bad(e.to_string()))?;
    let info = s.engine()?.create(&v, &req.options).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(info).unwrap_or_default()),
    ))
}

async fn volumes_list(State(s): State<AppState>, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let p = q
        .get("policy")
        .filter(|p| !p.is_empty())
        .map(|p| policy_name(p))
        .transpose()?;
    Ok(Json(
        serde_json::to_value(s.engine()?.list(p.as_ref()).await?).unwrap_or_default(),
    ))
}

async fn volume_get(
    State(s): State<AppState>,
    Path((p, v)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        serde_json::to_value(s.engine()?.get(&vref(&p, &v)?).await?).unwrap_or_default(),
    ))
}

async fn volume_remove(
    State(s): State<AppState>,
    Path((p, v)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult<StatusCode> {
    let q = query(q)?;
    let force = query_bool(&q, "force")?;
    let timeout = query_duration(&q, "timeout")?;
    s.engine()?.remove(&vref(&p, &v)?, force, timeout).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn volume_remove_record(
    State(s): State<AppState>,
    Path((p, v)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.engine()?.force_remove_record(&vref(&p, &v)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn runtime_get(
    State(s): State<AppState>,
    Path((p, v)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        serde_json::to_value(s.engine()?.runtime(&vref(&p, &v)?).await?).unwrap_or_default(),
    ))
}

async fn runtime_put(
    State(s): State<AppState>,
    Path((p, v)): Path<(String, String)>,
    b: Bytes,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        serde_json::to_value(s.engine()?.set_runtime(&vref(&p, &v)?, &b).await?)
            .unwrap_or_default(),
    ))
}

async fn snapshots_list(
    State(s): State<AppState>,
    Path((p, v)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    Ok(Json(
        serde_json::to_value(s.engine()?.snapshots(&vref(&p, &v)?).await?).unwrap_or_default(),
    ))
}

async fn snapshot_take(
    State(s): State<AppState>,
    Path((p, v)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let name = s.engine()?.snapshot(&vref(&p, &v)?).await?;
    Ok((StatusCode::CREATED, Json(json!({"snapshot": name}))))
}

/// `POST /v1/volumes/{policy}/{volume}/copy` body.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CopyRequest {
    /// The snapshot to copy.
    pub snapshot: String,
    /// The new volume's name (same policy).
    pub target: String,
}

async fn volume_copy(
    State(s): State<AppState>,
    Path((p, v)): Path<(String, String)>,
    b: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let req: CopyRequest = body(&b, "the copy request")?;
    let snap = SnapshotName::new(req.snapshot).map_err(|e| ApiError::bad(e.to_string()))?;
    let target = VolumeName::new(req.target).map_err(|e| ApiError::bad(e.to_string()))?;
    let info = s.engine()?.copy(&vref(&p, &v)?, &snap, &target).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(info).unwrap_or_default()),
    ))
}

// ----- locks ----------------------------------------------------------------------------

async fn locks_list(State(s): State<AppState>, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let kind = match q.get("kind").map(String::as_str) {
        None | Some("") => None,
        Some(k) => Some(
            LockKind::parse(k)
                .ok_or_else(|| ApiError::bad(format!("?kind={k}: expected mount or op")))?,
        ),
    };
    Ok(Json(
        serde_json::to_value(s.engine()?.locks(kind).await?).unwrap_or_default(),
    ))
}

/// `GET /v1/check`: what a crash left, and the fix for each (a dry run).
async fn check_dry(State(s): State<AppState>) -> ApiResult<Json<volcore::CheckReport>> {
    Ok(Json(s.engine()?.check(false).await?))
}

/// `POST /v1/check`: the same, with the safe fixes applied.
async fn check_repair(State(s): State<AppState>) -> ApiResult<Json<volcore::CheckReport>> {
    Ok(Json(s.engine()?.check(true).await?))
}

async fn locks_get(
    State(s): State<AppState>,
    Path((p, v)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let v = vref(&p, &v)?;
    let mut out = Vec::new();
    for kind in [LockKind::Mount, LockKind::Op] {
        if let Some(l) = s
            .engine()?
            .locker()
            .get(kind, &v)
            .await
            .map_err(EngineError::from)?
        {
            out.push(l);
        }
    }
    Ok(Json(serde_json::to_value(out).unwrap_or_default()))
}

async fn locks_remove(
    State(s): State<AppState>,
    Path((p, v)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let removed = s.engine()?.force_remove_locks(&vref(&p, &v)?).await?;
    Ok(Json(json!({"removed": removed})))
}

/// `POST /v1/maintenance` body.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    /// `policy/volume`.
    pub volume: String,
    /// The host the maintenance runs on (recorded in the locks).
    pub host: String,
    /// Session TTL (`10s`, from 2s to 1h); renew before it runs out.
    #[serde(default)]
    pub ttl: Option<String>,
    /// How long to wait for the locks (`30s`, from 0s to 1h; default 10m).
    #[serde(default)]
    pub wait: Option<String>,
}

async fn maintenance_begin(
    State(s): State<AppState>,
    b: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let req: MaintenanceRequest = body(&b, "the maintenance request")?;
    let v = VolumeRef::parse(&req.volume).map_err(|e| ApiError::bad(e.to_string()))?;
    let host = HostName::new(req.host).map_err(|e| ApiError::bad(e.to_string()))?;
    let ttl = match &req.ttl {
        Some(t) => bounded_duration(t, "ttl", Duration::from_secs(2), Duration::from_secs(3600))?,
        None => Duration::from_secs(10),
    };
    let wait = match &req.wait {
        Some(w) => bounded_duration(w, "wait", Duration::ZERO, MAX_WAIT)?,
        None => Duration::from_secs(600),
    };
    let (session, held) = s.engine()?.begin_maintenance(&v, &host, ttl, wait).await?;
    let locks: Vec<Value> = held
        .iter()
        .map(|h| json!({"key": h.key, "token": h.token, "holder": h.holder}))
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"session": session.as_str(), "ttl_ms": ttl.as_millis() as u64, "locks": locks}),
        ),
    ))
}

async fn maintenance_renew(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let ttl = s.engine()?.renew_maintenance(&LeaseId::new(id)).await?;
    Ok(Json(json!({"ttl_ms": ttl.as_millis() as u64})))
}

async fn maintenance_end(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.engine()?.end_maintenance(&LeaseId::new(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- OpenAPI --------------------------------------------------------------------------

/// One documented operation.
pub struct ApiOp {
    /// HTTP method, lowercase.
    pub method: &'static str,
    /// Path with `{params}`.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Success status.
    pub ok: u16,
    /// Error statuses it can answer with.
    pub errors: &'static [u16],
    /// Query parameters.
    pub query: &'static [(&'static str, &'static str)],
    /// Request body, described.
    pub body: Option<&'static str>,
}

const fn op(
    method: &'static str,
    path: &'static str,
    ok: u16,
    errors: &'static [u16],
    summary: &'static str,
) -> ApiOp {
    ApiOp {
        method,
        path,
        summary,
        ok,
        errors,
        query: &[],
        body: None,
    }
}

impl ApiOp {
    const fn q(mut self, query: &'static [(&'static str, &'static str)]) -> Self {
        self.query = query;
        self
    }

    const fn body(mut self, b: &'static str) -> Self {
        self.body = Some(b);
        self
    }
}

/// Every operation volmaster serves; the OpenAPI document is built from this list and
/// a test checks each one is routed.
pub const API: &[ApiOp] = &[
    op("get", "/healthz", 200, &[], "Liveness"),
    op(
        "get",
        "/readyz",
        200,
        &[503],
        "Readiness: the store answers",
    ),
    op(
        "get",
        "/v1/info",
        200,
        &[],
        "Version, git commit, host, kernel, arch, open fds, uptime, store",
    ),
    op("get", "/v1/openapi.json", 200, &[], "This document"),
    op(
        "get",
        "/v1/global",
        200,
        &[503],
        "Global configuration (TTL seconds, Timeout minutes, MountPath, Debug)",
    ),
    op(
        "put",
        "/v1/global",
        200,
        &[400, 503],
        "Replace the global configuration",
    )
    .body("volplugin's global JSON: TTL 1 to 3600 seconds, Timeout 1 to 60 minutes, MountPath absolute"),
    op("get", "/v1/policies", 200, &[503], "Every policy"),
    op(
        "get",
        "/v1/policies/{policy}",
        200,
        &[400, 404, 503],
        "One policy",
    ),
    op(
        "put",
        "/v1/policies/{policy}",
        200,
        &[400, 503],
        "Upload a policy; records a new revision",
    )
    .body("volplugin's policy JSON"),
    op(
        "delete",
        "/v1/policies/{policy}",
        204,
        &[400, 404, 409, 503],
        "Delete a policy (volumes keep their copy)",
    )
    .q(&[("force", "delete even while volumes exist")]),
    op(
        "get",
        "/v1/policies/{policy}/revisions",
        200,
        &[400, 404, 503],
        "A policy's revisions, oldest first",
    ),
    op(
        "get",
        "/v1/policies/{policy}/revisions/{revision}",
        200,
        &[400, 404, 503],
        "One revision",
    ),
    op(
        "get",
        "/v1/watch/policies",
        200,
        &[400, 503],
        "NDJSON stream of {policy, revision} per upload",
    )
    .q(&[("after", "replay uploads after this store revision")]),
    op(
        "get",
        "/v1/volumes",
        200,
        &[400, 503],
        "Volumes, all or of one policy",
    )
    .q(&[("policy", "only this policy's volumes")]),
    op(
        "post",
        "/v1/volumes",
        201,
        &[400, 404, 409, 423, 502, 503, 504],
        "Create a volume",
    )
    .body("{\"volume\":\"policy/volume\",\"options\":{\"key\":\"value\"}}"),
    op(
        "get",
        "/v1/volumes/{policy}/{volume}",
        200,
        &[400, 404, 503],
        "One volume with its runtime options",
    ),
    op(
        "delete",
        "/v1/volumes/{policy}/{volume}",
        204,
        &[400, 404, 423, 502, 503, 504],
        "Remove a volume (storage, then record)",
    )
    .q(&[
        ("force", "remove even while locked"),
        ("timeout", "how long to wait for its locks, from 0s to 1h, e.g. 30s (default: the global Timeout)"),
    ]),
    op(
        "delete",
        "/v1/volumes/{policy}/{volume}/record",
        204,
        &[400, 404, 503],
        "Remove only the record (storage is kept)",
    ),
    op(
        "get",
        "/v1/volumes/{policy}/{volume}/runtime",
        200,
        &[400, 404, 503],
        "Runtime options in force",
    ),
    op(
        "put",
        "/v1/volumes/{policy}/{volume}/runtime",
        200,
        &[400, 404, 503],
        "Replace runtime options",
    )
    .body("runtime JSON"),
    op(
        "get",
        "/v1/volumes/{policy}/{volume}/snapshots",
        200,
        &[400, 404, 502, 503, 504],
        "Snapshots, oldest first",
    ),
    op(
        "post",
        "/v1/volumes/{policy}/{volume}/snapshots",
        201,
        &[400, 404, 423, 502, 503, 504],
        "Take a snapshot now",
    ),
    op(
        "post",
        "/v1/volumes/{policy}/{volume}/copy",
        201,
        &[400, 404, 409, 423, 502, 503, 504],
        "Copy a snapshot into a new volume of the same policy",
    )
    .body("{\"snapshot\":\"name\",\"target\":\"newvolume\"}"),
    op(
        "get",
        "/v1/check",
        200,
        &[503],
        "Leftovers of crashes (orphan storage, missing storage, stale locks and mount records, orphan keys), each with its fix; changes nothing",
    ),
    op(
        "post",
        "/v1/check",
        200,
        &[503],
        "The same check, with the safe fixes applied; each finding says what was done",
    ),
    op("get", "/v1/locks", 200, &[400, 503], "Use locks").q(&[("kind", "mount or op")]),
    op(
        "get",
        "/v1/locks/{policy}/{volume}",
        200,
        &[400, 503],
        "A volume's locks",
    ),
    op(
        "delete",
        "/v1/locks/{policy}/{volume}",
        200,
        &[400, 503],
        "Clear a volume's locks whoever holds them",
    ),
    op(
        "post",
        "/v1/maintenance",
        201,
        &[400, 404, 423, 503],
        "Start a maintenance session: locks held while it is renewed",
    )
    .body("{\"volume\":\"p/v\",\"host\":\"h\",\"ttl\":\"10s\",\"wait\":\"30s\"} (ttl from 2s to 1h, wait from 0s to 1h)"),
    op(
        "put",
        "/v1/maintenance/{session}",
        200,
        &[400, 404, 503],
        "Renew a maintenance session",
    ),
    op(
        "delete",
        "/v1/maintenance/{session}",
        204,
        &[400, 404, 503],
        "End a maintenance session, releasing its locks",
    ),
];

fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad input",
        404 => "Not found",
        409 => "Conflict",
        423 => "Locked by another holder",
        502 => "Storage backend failed",
        503 => "Store unavailable",
        504 => "Storage backend timed out",
        _ => "Other",
    }
}

/// The OpenAPI 3.0 document, built from [`API`].
pub fn openapi() -> Value {
    let mut paths = serde_json::Map::new();
    for op in API {
        let mut params: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        params.extend(op.query.iter().map(|(n, d)| json!({"name": n, "in": "query", "required": false, "description": d, "schema": {"type": "string"}})));
        let mut responses = serde_json::Map::new();
        responses.insert(
            op.ok.to_string(),
            json!({"description": status_text(op.ok)}),
        );
        for e in op.errors {
            responses.insert(
                e.to_string(),
                json!({"description": status_text(*e), "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
            );
        }
        let mut o = json!({"summary": op.summary, "parameters": params, "responses": responses});
        if let Some(b) = op.body {
            o["requestBody"] = json!({"required": true, "description": b, "content": {"application/json": {"schema": {"type": "object"}}}});
        }
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        entry[op.method] = o;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "volmaster", "version": env!("CARGO_PKG_VERSION"), "description": "volcore's REST API. Errors are {\"error\":{\"code\",\"message\"}}."},
        "paths": paths,
        "components": {"schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}}},
    })
}
