//! The routes and their handlers: each parses and validates its input at the edge,
//! calls the engine once and answers with the API crate's types.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use futures::StreamExt;
use tokio::time::Instant;
use utoipa::{IntoParams, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use volcore::supervisor::SupervisorStatus;
use volcore::{
    AuthView, CheckReport, EngineError, GlobalConfig, HostName, Keys, KvStore, LeaseId, LockInfo,
    LockKind, Policy, PolicyName, PolicyRevision, Principal, RoleMap, RuntimeOptions, SnapshotName,
    Subject, Tenant, TenantName, Volume, VolumeInfo, VolumeName, VolumeRef, Volumes, WatchEvent,
};
use volcore_api::types::{
    AuditEntry, CopyRequest, CreateRequest, Health, Info, LocksRemoved, MaintenanceRequest,
    MaintenanceStarted, PolicyEvent, Ready, Renewed, RoleGrant, SessionLock, SnapshotSignalled,
    SnapshotTaken, StoreInfo,
};
use volcore_api::{paths, ErrorCode, WhoAmI};

use crate::auth::{need_admin, scope};
use crate::error::{method_not_allowed, not_found, ApiError, ApiResult};
use crate::openapi::{
    E400_404_409_423_502_503_504, E400_404_409_503, E400_404_423_502_503_504, E400_404_423_503,
    E400_404_502_503_504, E400_404_503, E400_503, E503,
};
use crate::{AppState, MasterConfig};

/// The router, for in-process tests.
pub fn test_router(kv: Arc<dyn KvStore>, engine: Volumes, keys: Keys) -> Router {
    router(AppState {
        engine: Arc::new(OnceLock::from(engine)),
        auth: Arc::default(),
        audit: crate::audit::Audit::start(kv.clone(), keys.clone(), crate::audit::DEFAULT_KEEP),
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
            tls: None,
            admin_identities: Vec::new(),
            audit_keep: crate::audit::DEFAULT_KEEP,
        }),
    })
}

/// Every documented route. Each handler's `#[utoipa::path]` names its path (a constant
/// of `volcore_api::paths`), so the route and its documentation are written once.
pub(crate) fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(readyz))
        .routes(routes!(info_handler))
        .routes(routes!(whoami))
        .routes(routes!(crate::openapi::openapi_handler))
        .routes(routes!(global_get, global_put))
        .routes(routes!(policies_list))
        .routes(routes!(policy_get, policy_put, policy_delete))
        .routes(routes!(revisions_list))
        .routes(routes!(revision_get))
        .routes(routes!(policies_watch))
        .routes(routes!(volumes_list, volume_create))
        .routes(routes!(volume_get, volume_remove))
        .routes(routes!(volume_remove_record))
        .routes(routes!(runtime_get, runtime_put))
        .routes(routes!(snapshots_list, snapshot_take))
        .routes(routes!(snapshot_signal))
        .routes(routes!(supervisor_status))
        .routes(routes!(stale_volumes))
        .routes(routes!(volume_copy))
        .routes(routes!(locks_list))
        .routes(routes!(locks_get, locks_remove))
        .routes(routes!(check_dry, check_repair))
        .routes(routes!(maintenance_begin))
        .routes(routes!(maintenance_renew, maintenance_end))
        .routes(routes!(audit_list))
        .routes(routes!(roles_list))
        .routes(routes!(role_put, role_delete))
        .routes(routes!(tenants_list))
        .routes(routes!(tenant_get, tenant_put, tenant_delete))
}

pub(crate) fn router(state: AppState) -> Router {
    let (routes, _) = api_router().split_for_parts();
    routes
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authorize,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

// ----- parameters (documentation of what the handlers parse) ----------------------------

/// `{policy}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct PolicyPath {
    /// The policy's name.
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    policy: String,
}

/// `{policy}/revisions/{revision}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct RevisionPath {
    /// The policy's name.
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    policy: String,
    /// A store revision of one of its uploads.
    revision: u64,
}

/// `{policy}/{volume}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct VolumePath {
    /// The volume's policy.
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    policy: String,
    /// The volume's name within it.
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    volume: String,
}

/// `?since=&limit=`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct AuditQuery {
    /// Only entries at or after this: an RFC 3339 time, or a duration back from now (`1h`).
    since: Option<String>,
    /// At most this many (the newest), 1 to 100000; default 1000.
    limit: Option<u32>,
}

/// `{subject}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct SubjectPath {
    /// `user:<certificate CN>` or `group:<O, OU or URI SAN>`.
    #[param(pattern = "^(user|group):[^\\x00-\\x1f\\x7f]{1,512}$")]
    subject: String,
}

/// `{tenant}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct TenantPath {
    /// The tenant's name.
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    tenant: String,
}

/// `{session}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct SessionPath {
    /// The maintenance session's id.
    session: String,
}

/// `?force=`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct ForceQuery {
    /// Delete even while volumes exist.
    force: Option<bool>,
}

/// `?after=`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct WatchQuery {
    /// Replay the uploads after this store revision.
    after: Option<u64>,
}

/// `?policy=`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct VolumesQuery {
    /// Only this policy's volumes.
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    policy: Option<String>,
}

/// `?force=&timeout=`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct RemoveQuery {
    /// Remove even while the volume is locked.
    force: Option<bool>,
    /// How long to wait for its locks, from 0s to 1h, e.g. `30s` (default: the global
    /// Timeout).
    timeout: Option<String>,
}

/// `?kind=`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct LocksQuery {
    /// Only this kind of lock.
    kind: Option<LockKind>,
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

/// One NDJSON line.
fn ndjson_line<T: serde::Serialize>(v: &T) -> Bytes {
    let mut line = serde_json::to_vec(v).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

// ----- health and info ------------------------------------------------------------------

/// Readiness: the store answers.
#[utoipa::path(
    get,
    path = paths::READYZ,
    tag = "health",
    responses((status = 200, description = "Ready", body = Ready), E503)
)]
async fn readyz(State(s): State<AppState>) -> Response {
    if let Err(e) = s.engine() {
        // Not a failed request: the answer is the state (no warning logged).
        return e.quiet();
    }
    match tokio::time::timeout(Duration::from_secs(2), s.kv.revision()).await {
        Ok(Ok(rev)) => Json(Ready {
            status: "ready".into(),
            store_revision: rev,
        })
        .into_response(),
        Ok(Err(e)) => ApiError::new(ErrorCode::StoreUnavailable, e.to_string()).into_response(),
        Err(_) => ApiError::new(
            ErrorCode::StoreTimeout,
            "the store did not answer within 2s",
        )
        .into_response(),
    }
}

/// Liveness: the process serves.
#[utoipa::path(
    get,
    path = paths::HEALTHZ,
    tag = "health",
    responses((status = 200, description = "Alive", body = Health))
)]
async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Who volmaster takes the caller for: the identity of its client certificate (CN, and
/// O, OU and URI SANs as groups), and whether the connection is TLS.
#[utoipa::path(
    get,
    path = paths::WHOAMI,
    tag = "health",
    responses((status = 200, description = "The caller", body = WhoAmI))
)]
async fn whoami(caller: Option<axum::Extension<crate::tls::Caller>>) -> Json<WhoAmI> {
    let c = caller.map(|axum::Extension(c)| c).unwrap_or_default();
    Json(WhoAmI {
        identity: c.identity,
        tls: c.tls,
    })
}

/// Version, git commit, host, kernel, arch, open fds, uptime, store.
#[utoipa::path(
    get,
    path = paths::INFO,
    tag = "health",
    responses((status = 200, description = "This volmaster", body = Info))
)]
async fn info_handler(State(s): State<AppState>) -> Json<Info> {
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .ok();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .ok();
    Json(Info {
        version: env!("CARGO_PKG_VERSION").into(),
        git_commit: volcore_daemon::git_commit().into(),
        host: s.cfg.host.to_string(),
        kernel,
        arch: std::env::consts::ARCH.into(),
        open_fds: fds,
        uptime_secs: s.started.elapsed().as_secs(),
        store: StoreInfo {
            backend: s.kv.backend().into(),
            endpoints: s.cfg.kv_spec.clone(),
            prefix: s.keys.prefix().into(),
        },
    })
}

// ----- global ---------------------------------------------------------------------------

/// The global configuration.
#[utoipa::path(
    get,
    path = paths::GLOBAL,
    tag = "global",
    responses((status = 200, description = "In force", body = GlobalConfig), E503)
)]
async fn global_get(State(s): State<AppState>) -> ApiResult<Json<GlobalConfig>> {
    Ok(Json(s.engine()?.global().await?))
}

/// Replace the global configuration.
#[utoipa::path(
    put,
    path = paths::GLOBAL,
    tag = "global",
    request_body(content = GlobalConfig, description = "volplugin's global JSON: TTL 1 to 3600 seconds, Timeout 1 to 60 minutes, MountPath absolute and outside system directories, MkfsPrograms extending the mkfs allowlist"),
    responses((status = 200, description = "Stored", body = GlobalConfig), E400_503)
)]
async fn global_put(State(s): State<AppState>, b: Bytes) -> ApiResult<Json<GlobalConfig>> {
    Ok(Json(s.engine()?.set_global(&b).await?))
}

// ----- policies -------------------------------------------------------------------------

/// Every policy.
#[utoipa::path(
    get,
    path = paths::POLICIES,
    tag = "policies",
    responses((status = 200, description = "Policies", body = Vec<Policy>), E503)
)]
async fn policies_list(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
) -> ApiResult<Json<Vec<Policy>>> {
    let mut all = s.engine()?.policies().await?;
    all.retain(|p| who.may_use(&p.name));
    Ok(Json(all))
}

/// One policy.
#[utoipa::path(
    get,
    path = paths::POLICY,
    tag = "policies",
    params(PolicyPath),
    responses((status = 200, description = "The policy", body = Policy), E400_404_503)
)]
async fn policy_get(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(p): Path<String>,
) -> ApiResult<Json<Policy>> {
    let p = policy_name(&p)?;
    scope(&s, &who, &p)?;
    Ok(Json(s.engine()?.policy(&p).await?))
}

/// Upload a policy; records a new revision.
#[utoipa::path(
    put,
    path = paths::POLICY,
    tag = "policies",
    params(PolicyPath),
    request_body(content = volcore::policy::PolicyUpload, description = "volplugin's policy JSON (`backend` may stand for all three backends; omitted fields take their defaults)"),
    responses((status = 200, description = "Stored as a new revision", body = PolicyRevision), E400_503)
)]
async fn policy_put(
    State(s): State<AppState>,
    Path(p): Path<String>,
    b: Bytes,
) -> ApiResult<Json<PolicyRevision>> {
    let r = s.engine()?.upload_policy(&policy_name(&p)?, &b).await?;
    Ok(Json(r))
}

/// Delete a policy (volumes keep their copy).
#[utoipa::path(
    delete,
    path = paths::POLICY,
    tag = "policies",
    params(PolicyPath, ForceQuery),
    responses((status = 204, description = "Deleted"), E400_404_409_503)
)]
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

/// A policy's revisions, oldest first.
#[utoipa::path(
    get,
    path = paths::POLICY_REVISIONS,
    tag = "policies",
    params(PolicyPath),
    responses((status = 200, description = "Store revisions", body = Vec<u64>), E400_404_503)
)]
async fn revisions_list(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(p): Path<String>,
) -> ApiResult<Json<Vec<u64>>> {
    let p = policy_name(&p)?;
    scope(&s, &who, &p)?;
    Ok(Json(s.engine()?.policy_revisions(&p).await?))
}

/// One revision of a policy.
#[utoipa::path(
    get,
    path = paths::POLICY_REVISION,
    tag = "policies",
    params(RevisionPath),
    responses((status = 200, description = "The revision", body = PolicyRevision), E400_404_503)
)]
async fn revision_get(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((p, r)): Path<(String, String)>,
) -> ApiResult<Json<PolicyRevision>> {
    scope(&s, &who, &policy_name(&p)?)?;
    let rev: u64 = r
        .parse()
        .map_err(|_| ApiError::bad(format!("revision {r:?} is not a number")))?;
    let got = s.engine()?.policy_revision(&policy_name(&p)?, rev).await?;
    Ok(Json(got))
}

/// Policy uploads as they happen: one NDJSON line per upload.
#[utoipa::path(
    get,
    path = paths::WATCH_POLICIES,
    tag = "policies",
    params(WatchQuery),
    responses((status = 200, description = "An endless NDJSON stream", body = PolicyEvent, content_type = "application/x-ndjson"), E400_503)
)]
async fn policies_watch(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
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
    let who = Arc::new(who);
    let lines = stream.filter_map(move |ev| {
        let (prefix, who) = (prefix.clone(), who.clone());
        async move {
            match ev {
                Ok(WatchEvent::Put(e)) => {
                    let rest = e.key.strip_prefix(&prefix)?;
                    let (policy, rev) = rest.split_once('/')?;
                    // Only uploads of policies the caller's tenants hold.
                    if !PolicyName::new(policy).is_ok_and(|p| who.may_use(&p)) {
                        return None;
                    }
                    let rev: u64 = rev.parse().ok()?;
                    let ev = PolicyEvent::Uploaded {
                        policy: policy.to_owned(),
                        revision: rev,
                    };
                    Some(Ok::<_, Infallible>(ndjson_line(&ev)))
                }
                Ok(WatchEvent::Resync { revision }) => {
                    Some(Ok(ndjson_line(&PolicyEvent::Resync { resync: revision })))
                }
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

/// Create a volume.
#[utoipa::path(
    post,
    path = paths::VOLUMES,
    tag = "volumes",
    request_body = CreateRequest,
    responses((status = 201, description = "Created", body = VolumeInfo), E400_404_409_423_502_503_504)
)]
async fn volume_create(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    b: Bytes,
) -> ApiResult<(StatusCode, Json<VolumeInfo>)> {
    let req: CreateRequest = body(&b, "the create request")?;
    let v = VolumeRef::parse(&req.volume).map_err(|e| ApiError::bad(e.to_string()))?;
    scope(&s, &who, &v.policy)?;
    let info = s.engine()?.create(&v, &req.options).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// Volumes, all or of one policy.
#[utoipa::path(
    get,
    path = paths::VOLUMES,
    tag = "volumes",
    params(VolumesQuery),
    responses((status = 200, description = "Volume records", body = Vec<Volume>), E400_503)
)]
async fn volumes_list(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Vec<Volume>>> {
    let q = query(q)?;
    let p = q.get("policy").map(|p| policy_name(p)).transpose()?;
    match &p {
        Some(p) => scope(&s, &who, p)?,
        None => need_admin(&who, "listing every volume (volume list-all)")?,
    }
    Ok(Json(s.engine()?.list(p.as_ref()).await?))
}

/// Volumes unused (no mount on any host) past their policy's `reclaim.unused`, all (admin)
/// or of one policy, with when the supervisor removes or reports each.
#[utoipa::path(
    get,
    path = paths::STALE_VOLUMES,
    tag = "volumes",
    params(VolumesQuery),
    responses((status = 200, description = "Stale volumes", body = Vec<volcore::reclaim::StaleVolume>), E400_503)
)]
async fn stale_volumes(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Vec<volcore::reclaim::StaleVolume>>> {
    let q = query(q)?;
    let p = q.get("policy").map(|p| policy_name(p)).transpose()?;
    match &p {
        Some(p) => scope(&s, &who, p)?,
        None => need_admin(&who, "listing every stale volume")?,
    }
    let engine = s.engine()?;
    let (vols, usage) = tokio::try_join!(engine.list(p.as_ref()), async {
        Ok(volcore::reclaim::Usage::read(s.kv.as_ref(), &s.keys).await?)
    })?;
    let now = std::time::SystemTime::now();
    Ok(Json(
        vols.iter().filter_map(|v| usage.stale(v, now)).collect(),
    ))
}

/// One volume with its runtime options.
#[utoipa::path(
    get,
    path = paths::VOLUME,
    tag = "volumes",
    params(VolumePath),
    responses((status = 200, description = "The volume", body = VolumeInfo), E400_404_503)
)]
async fn volume_get(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((p, v)): Path<(String, String)>,
) -> ApiResult<Json<VolumeInfo>> {
    scope(&s, &who, &policy_name(&p)?)?;
    Ok(Json(s.engine()?.get(&vref(&p, &v)?).await?))
}

/// Remove a volume: its storage, then its record.
#[utoipa::path(
    delete,
    path = paths::VOLUME,
    tag = "volumes",
    params(VolumePath, RemoveQuery),
    responses((status = 204, description = "Removed"), E400_404_409_423_502_503_504)
)]
async fn volume_remove(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((p, v)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult<StatusCode> {
    scope(&s, &who, &policy_name(&p)?)?;
    let q = query(q)?;
    let force = query_bool(&q, "force")?;
    if force {
        need_admin(&who, "a forced remove (?force=true)")?;
    }
    let timeout = query_duration(&q, "timeout")?;
    s.engine()?.remove(&vref(&p, &v)?, force, timeout).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove only the record (the storage is kept).
#[utoipa::path(
    delete,
    path = paths::VOLUME_RECORD,
    tag = "volumes",
    params(VolumePath),
    responses((status = 204, description = "Record removed"), E400_404_503)
)]
async fn volume_remove_record(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((p, v)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    scope(&s, &who, &policy_name(&p)?)?;
    s.engine()?.force_remove_record(&vref(&p, &v)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runtime options in force.
#[utoipa::path(
    get,
    path = paths::VOLUME_RUNTIME,
    tag = "volumes",
    params(VolumePath),
    responses((status = 200, description = "Runtime options", body = RuntimeOptions), E400_404_503)
)]
async fn runtime_get(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((p, v)): Path<(String, String)>,
) -> ApiResult<Json<RuntimeOptions>> {
    scope(&s, &who, &policy_name(&p)?)?;
    Ok(Json(s.engine()?.runtime(&vref(&p, &v)?).await?))
}

/// Replace runtime options (they apply without a restart).
#[utoipa::path(
    put,
    path = paths::VOLUME_RUNTIME,
    tag = "volumes",
    params(VolumePath),
    request_body = RuntimeOptions,
    responses((status = 200, description = "Stored", body = RuntimeOptions), E400_404_503)
)]
async fn runtime_put(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((p, v)): Path<(String, String)>,
    b: Bytes,
) -> ApiResult<Json<RuntimeOptions>> {
    scope(&s, &who, &policy_name(&p)?)?;
    Ok(Json(s.engine()?.set_runtime(&vref(&p, &v)?, &b).await?))
}

/// Snapshots, oldest first.
#[utoipa::path(
    get,
    path = paths::VOLUME_SNAPSHOTS,
    tag = "snapshots",
    params(VolumePath),
    responses((status = 200, description = "Snapshot names", body = Vec<SnapshotName>), E400_404_502_503_504)
)]
async fn snapshots_list(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((p, v)): Path<(String, String)>,
) -> ApiResult<Json<Vec<SnapshotName>>> {
    scope(&s, &who, &policy_name(&p)?)?;
    Ok(Json(s.engine()?.snapshots(&vref(&p, &v)?).await?))
}

/// Take a snapshot now.
#[utoipa::path(
    post,
    path = paths::VOLUME_SNAPSHOTS,
    tag = "snapshots",
    params(VolumePath),
    responses((status = 201, description = "Taken", body = SnapshotTaken), E400_404_423_502_503_504)
)]
async fn snapshot_take(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((p, v)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<SnapshotTaken>)> {
    scope(&s, &who, &policy_name(&p)?)?;
    let name = s.engine()?.snapshot(&vref(&p, &v)?).await?;
    Ok((StatusCode::CREATED, Json(SnapshotTaken { snapshot: name })))
}

/// Ask the supervisor for a snapshot now (the volume's runtime must say `"signal": true`).
/// The snapshot is taken by the leading volsupervisor and counts toward pruning.
#[utoipa::path(
    post,
    path = paths::VOLUME_SNAPSHOT_SIGNAL,
    tag = "snapshots",
    params(VolumePath),
    responses((status = 202, description = "Asked; the supervisor takes it", body = SnapshotSignalled), E400_404_409_423_502_503_504)
)]
async fn snapshot_signal(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((p, v)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<SnapshotSignalled>)> {
    scope(&s, &who, &policy_name(&p)?)?;
    let at = s
        .engine()?
        .signal_snapshot(&vref(&p, &v)?, who.user.as_deref().unwrap_or("local admin"))
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(SnapshotSignalled {
            snapshot: volcore::schedule::snapshot_name(at),
            requested_at: humantime::format_rfc3339_millis(at).to_string(),
        }),
    ))
}

/// The supervisors: which one leads, since when, and the standbys.
#[utoipa::path(
    get,
    path = paths::SUPERVISOR,
    tag = "supervisor",
    responses((status = 200, description = "Leader and standbys", body = SupervisorStatus), E503)
)]
async fn supervisor_status(State(s): State<AppState>) -> ApiResult<Json<SupervisorStatus>> {
    s.engine()?;
    Ok(Json(
        volcore::supervisor::status(s.kv.as_ref(), &s.keys).await?,
    ))
}

/// Copy a snapshot into a new volume of the same policy.
#[utoipa::path(
    post,
    path = paths::VOLUME_COPY,
    tag = "snapshots",
    params(VolumePath),
    request_body = CopyRequest,
    responses((status = 201, description = "The new volume", body = VolumeInfo), E400_404_409_423_502_503_504)
)]
async fn volume_copy(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((p, v)): Path<(String, String)>,
    b: Bytes,
) -> ApiResult<(StatusCode, Json<VolumeInfo>)> {
    scope(&s, &who, &policy_name(&p)?)?;
    let req: CopyRequest = body(&b, "the copy request")?;
    let snap = SnapshotName::new(req.snapshot).map_err(|e| ApiError::bad(e.to_string()))?;
    let target = VolumeName::new(req.target).map_err(|e| ApiError::bad(e.to_string()))?;
    let info = s.engine()?.copy(&vref(&p, &v)?, &snap, &target).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

// ----- locks ----------------------------------------------------------------------------

/// Use locks, all or of one kind.
#[utoipa::path(
    get,
    path = paths::LOCKS,
    tag = "locks",
    params(LocksQuery),
    responses((status = 200, description = "Locks", body = Vec<LockInfo>), E400_503)
)]
async fn locks_list(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Vec<LockInfo>>> {
    let q = query(q)?;
    let kind = match q.get("kind").map(String::as_str) {
        None => None,
        Some(k) => Some(
            LockKind::parse(k)
                .ok_or_else(|| ApiError::bad(format!("?kind={k}: expected mount or op")))?,
        ),
    };
    let mut locks = s.engine()?.locks(kind).await?;
    locks.retain(|l| who.may_use(&l.holder.volume.policy));
    Ok(Json(locks))
}

/// Leftovers of crashes (orphan storage, missing storage, stale locks and mount records, orphan keys), each with its fix; changes nothing.
#[utoipa::path(
    get,
    path = paths::CHECK,
    tag = "check",
    responses((status = 200, description = "The report", body = CheckReport), E503)
)]
async fn check_dry(State(s): State<AppState>) -> ApiResult<Json<CheckReport>> {
    Ok(Json(s.engine()?.check(false).await?))
}

/// The same check, with the safe fixes applied; each finding says what was done.
#[utoipa::path(
    post,
    path = paths::CHECK,
    tag = "check",
    responses((status = 200, description = "The report, with outcomes", body = CheckReport), E503)
)]
async fn check_repair(State(s): State<AppState>) -> ApiResult<Json<CheckReport>> {
    Ok(Json(s.engine()?.check(true).await?))
}

/// A volume's locks.
#[utoipa::path(
    get,
    path = paths::VOLUME_LOCKS,
    tag = "locks",
    params(VolumePath),
    responses((status = 200, description = "Its locks", body = Vec<LockInfo>), E400_503)
)]
async fn locks_get(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((p, v)): Path<(String, String)>,
) -> ApiResult<Json<Vec<LockInfo>>> {
    scope(&s, &who, &policy_name(&p)?)?;
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
    Ok(Json(out))
}

/// Clear a volume's locks, whoever holds them.
#[utoipa::path(
    delete,
    path = paths::VOLUME_LOCKS,
    tag = "locks",
    params(VolumePath),
    responses((status = 200, description = "What was removed", body = LocksRemoved), E400_503)
)]
async fn locks_remove(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path((p, v)): Path<(String, String)>,
) -> ApiResult<Json<LocksRemoved>> {
    scope(&s, &who, &policy_name(&p)?)?;
    let removed = s.engine()?.force_remove_locks(&vref(&p, &v)?).await?;
    Ok(Json(LocksRemoved { removed }))
}

/// Start a maintenance session: the volume's locks, held while the session is renewed.
#[utoipa::path(
    post,
    path = paths::MAINTENANCE,
    tag = "maintenance",
    request_body = MaintenanceRequest,
    responses((status = 201, description = "Started", body = MaintenanceStarted), E400_404_423_503)
)]
async fn maintenance_begin(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    b: Bytes,
) -> ApiResult<(StatusCode, Json<MaintenanceStarted>)> {
    let req: MaintenanceRequest = body(&b, "the maintenance request")?;
    let v = VolumeRef::parse(&req.volume).map_err(|e| ApiError::bad(e.to_string()))?;
    scope(&s, &who, &v.policy)?;
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
    let locks = held
        .into_iter()
        .map(|h| SessionLock {
            key: h.key,
            token: h.token,
            holder: h.holder,
        })
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(MaintenanceStarted {
            session: session.as_str().to_owned(),
            ttl_ms: ttl.as_millis() as u64,
            locks,
        }),
    ))
}

/// Renew a maintenance session.
#[utoipa::path(
    put,
    path = paths::MAINTENANCE_SESSION,
    tag = "maintenance",
    params(SessionPath),
    responses((status = 200, description = "Renewed", body = Renewed), E400_404_503)
)]
async fn maintenance_renew(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Json<Renewed>> {
    session_scope(&s, &who, &id).await?;
    let ttl = s.engine()?.renew_maintenance(&LeaseId::new(id)).await?;
    Ok(Json(Renewed {
        ttl_ms: ttl.as_millis() as u64,
    }))
}

/// End a maintenance session, releasing its locks.
#[utoipa::path(
    delete,
    path = paths::MAINTENANCE_SESSION,
    tag = "maintenance",
    params(SessionPath),
    responses((status = 204, description = "Ended"), E400_404_503)
)]
async fn maintenance_end(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    session_scope(&s, &who, &id).await?;
    s.engine()?.end_maintenance(&LeaseId::new(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Refuses to renew or end a maintenance session on another tenant's volume: session ids
/// are store lease ids, which can be guessed, so the volume its locks name decides.
async fn session_scope(s: &AppState, who: &Principal, id: &str) -> ApiResult<()> {
    if who.has(volcore::Role::Admin) {
        return Ok(());
    }
    for l in s.engine()?.locks(None).await? {
        if l.holder.lease == id {
            scope(s, who, &l.holder.volume.policy)?;
        }
    }
    Ok(())
}

// ----- audit, roles and tenants ----------------------------------------------------------

/// The audit trail: mutating and refused requests, oldest first.
#[utoipa::path(
    get,
    path = paths::AUDIT,
    tag = "access",
    params(AuditQuery),
    responses((status = 200, description = "Entries", body = Vec<AuditEntry>), E400_503)
)]
async fn audit_list(
    State(s): State<AppState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    let q = query(q)?;
    let since = q
        .get("since")
        .map(|v| crate::audit::parse_since(v).map_err(ApiError::bad))
        .transpose()?;
    let limit = match q.get("limit") {
        None => 1000,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=100_000).contains(n))
            .ok_or_else(|| ApiError::bad(format!("?limit={l}: expected 1 to 100000")))?,
    };
    Ok(Json(
        crate::audit::list(s.kv.as_ref(), &s.keys, since, limit).await?,
    ))
}

/// The identity → role map.
#[utoipa::path(
    get,
    path = paths::ROLES,
    tag = "access",
    responses((status = 200, description = "Every binding", body = RoleMap), E503)
)]
async fn roles_list(State(s): State<AppState>) -> ApiResult<Json<RoleMap>> {
    Ok(Json(volcore::auth::roles(s.kv.as_ref(), &s.keys).await?))
}

/// Bind a subject (`user:<CN>` or `group:<O, OU or URI SAN>`) to a role.
#[utoipa::path(
    put,
    path = paths::ROLE,
    tag = "access",
    params(SubjectPath),
    request_body = RoleGrant,
    responses((status = 200, description = "The role map now", body = RoleMap), E400_503)
)]
async fn role_put(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    b: Bytes,
) -> ApiResult<Json<RoleMap>> {
    let subject = Subject::new(subject)?;
    let g: RoleGrant = body(&b, "the role grant")?;
    let m = volcore::auth::grant(s.kv.as_ref(), &s.keys, &subject, g.role).await?;
    Ok(Json(m))
}

/// Remove a subject's role.
#[utoipa::path(
    delete,
    path = paths::ROLE,
    tag = "access",
    params(SubjectPath),
    responses((status = 200, description = "The role map now", body = RoleMap), E400_404_503)
)]
async fn role_delete(
    State(s): State<AppState>,
    Path(subject): Path<String>,
) -> ApiResult<Json<RoleMap>> {
    let subject = Subject::new(subject)?;
    Ok(Json(
        volcore::auth::revoke(s.kv.as_ref(), &s.keys, &subject).await?,
    ))
}

/// Every tenant.
#[utoipa::path(
    get,
    path = paths::TENANTS,
    tag = "access",
    responses((status = 200, description = "Tenants", body = Vec<Tenant>), E503)
)]
async fn tenants_list(State(s): State<AppState>) -> ApiResult<Json<Vec<Tenant>>> {
    let v = AuthView::load(s.kv.as_ref(), &s.keys).await?;
    Ok(Json(v.tenants.into_values().collect()))
}

/// One tenant: for admins, and for its members.
#[utoipa::path(
    get,
    path = paths::TENANT,
    tag = "access",
    params(TenantPath),
    responses((status = 200, description = "The tenant", body = Tenant), E400_404_503)
)]
async fn tenant_get(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(t): Path<String>,
) -> ApiResult<Json<Tenant>> {
    let t = tenant_name(&t)?;
    if !who.has(volcore::Role::Admin) && !who.tenants.contains(&t) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "{} is not a member of tenant {t}; only its members and admins can read it",
                who.describe()
            ),
        ));
    }
    // One key, not the whole role map and every tenant.
    Ok(Json(
        volcore::auth::tenant(s.kv.as_ref(), &s.keys, &t).await?,
    ))
}

/// Create or replace a tenant.
#[utoipa::path(
    put,
    path = paths::TENANT,
    tag = "access",
    params(TenantPath),
    request_body(content = Tenant, description = "`{\"policies\": [\"policy1\"], \"members\": [\"user:alice\", \"group:ops\"]}`"),
    responses((status = 200, description = "Stored", body = Tenant), E400_503)
)]
async fn tenant_put(
    State(s): State<AppState>,
    Path(t): Path<String>,
    b: Bytes,
) -> ApiResult<Json<Tenant>> {
    let t = Tenant::from_json(&tenant_name(&t)?, &b)?;
    volcore::auth::put_tenant(s.kv.as_ref(), &s.keys, &t).await?;
    Ok(Json(t))
}

/// Delete a tenant (its policies and their volumes stay).
#[utoipa::path(
    delete,
    path = paths::TENANT,
    tag = "access",
    params(TenantPath),
    responses((status = 204, description = "Deleted"), E400_404_503)
)]
async fn tenant_delete(State(s): State<AppState>, Path(t): Path<String>) -> ApiResult<StatusCode> {
    volcore::auth::delete_tenant(s.kv.as_ref(), &s.keys, &tenant_name(&t)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn tenant_name(t: &str) -> ApiResult<TenantName> {
    TenantName::new(t).map_err(|e| ApiError::bad(e.to_string()))
}
