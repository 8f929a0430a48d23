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
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use futures::StreamExt;
use tokio::time::Instant;
use volcore::{
    CheckReport, EngineError, GlobalConfig, HostName, Keys, KvStore, LeaseId, LockInfo, LockKind,
    Policy, PolicyName, PolicyRevision, RuntimeOptions, SnapshotName, Volume, VolumeInfo,
    VolumeName, VolumeRef, Volumes, WatchEvent,
};
use volcore_api::types::{
    CopyRequest, CreateRequest, Health, Info, LocksRemoved, MaintenanceRequest, MaintenanceStarted,
    PolicyEvent, Ready, Renewed, SessionLock, SnapshotTaken, StoreInfo,
};
use volcore_api::{paths, ErrorCode};

use crate::error::{method_not_allowed, not_found, ApiError, ApiResult};
use crate::{AppState, MasterConfig};

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

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route(paths::HEALTHZ, get(health))
        .route(paths::READYZ, get(readyz))
        .route(paths::INFO, get(info_handler))
        .route(paths::OPENAPI, get(|| async { Json(crate::openapi()) }))
        .route(paths::GLOBAL, get(global_get).put(global_put))
        .route(paths::POLICIES, get(policies_list))
        .route(
            paths::POLICY,
            get(policy_get).put(policy_put).delete(policy_delete),
        )
        .route(paths::POLICY_REVISIONS, get(revisions_list))
        .route(paths::POLICY_REVISION, get(revision_get))
        .route(paths::WATCH_POLICIES, get(policies_watch))
        .route(paths::VOLUMES, get(volumes_list).post(volume_create))
        .route(paths::VOLUME, get(volume_get).delete(volume_remove))
        .route(paths::VOLUME_RECORD, delete(volume_remove_record))
        .route(paths::VOLUME_RUNTIME, get(runtime_get).put(runtime_put))
        .route(
            paths::VOLUME_SNAPSHOTS,
            get(snapshots_list).post(snapshot_take),
        )
        .route(paths::VOLUME_COPY, post(volume_copy))
        .route(paths::LOCKS, get(locks_list))
        .route(paths::VOLUME_LOCKS, get(locks_get).delete(locks_remove))
        .route(paths::CHECK, get(check_dry).post(check_repair))
        .route(paths::MAINTENANCE, post(maintenance_begin))
        .route(
            paths::MAINTENANCE_SESSION,
            put(maintenance_renew).delete(maintenance_end),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
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

async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

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

async fn global_get(State(s): State<AppState>) -> ApiResult<Json<GlobalConfig>> {
    Ok(Json(s.engine()?.global().await?))
}

async fn global_put(State(s): State<AppState>, b: Bytes) -> ApiResult<Json<GlobalConfig>> {
    Ok(Json(s.engine()?.set_global(&b).await?))
}

// ----- policies -------------------------------------------------------------------------

async fn policies_list(State(s): State<AppState>) -> ApiResult<Json<Vec<Policy>>> {
    Ok(Json(s.engine()?.policies().await?))
}

async fn policy_get(State(s): State<AppState>, Path(p): Path<String>) -> ApiResult<Json<Policy>> {
    Ok(Json(s.engine()?.policy(&policy_name(&p)?).await?))
}

async fn policy_put(
    State(s): State<AppState>,
    Path(p): Path<String>,
    b: Bytes,
) -> ApiResult<Json<PolicyRevision>> {
    let r = s.engine()?.upload_policy(&policy_name(&p)?, &b).await?;
    Ok(Json(r))
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
) -> ApiResult<Json<PolicyRevision>> {
    let rev: u64 = r
        .parse()
        .map_err(|_| ApiError::bad(format!("revision {r:?} is not a number")))?;
    let got = s.engine()?.policy_revision(&policy_name(&p)?, rev).await?;
    Ok(Json(got))
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

async fn volume_create(
    State(s): State<AppState>,
    b: Bytes,
) -> ApiResult<(StatusCode, Json<VolumeInfo>)> {
    let req: CreateRequest = body(&b, "the create request")?;
    let v = VolumeRef::parse(&req.volume).map_err(|e| ApiError::bad(e.to_string()))?;
    let info = s.engine()?.create(&v, &req.options).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

async fn volumes_list(
    State(s): State<AppState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Vec<Volume>>> {
    let q = query(q)?;
    let p = q
        .get("policy")
        .filter(|p| !p.is_empty())
        .map(|p| policy_name(p))
        .transpose()?;
    Ok(Json(s.engine()?.list(p.as_ref()).await?))
}

async fn volume_get(
    State(s): State<AppState>,
    Path((p, v)): Path<(String, String)>,
) -> ApiResult<Json<VolumeInfo>> {
    Ok(Json(s.engine()?.get(&vref(&p, &v)?).await?))
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
) -> ApiResult<Json<RuntimeOptions>> {
    Ok(Json(s.engine()?.runtime(&vref(&p, &v)?).await?))
}

async fn runtime_put(
    State(s): State<AppState>,
    Path((p, v)): Path<(String, String)>,
    b: Bytes,
) -> ApiResult<Json<RuntimeOptions>> {
    Ok(Json(s.engine()?.set_runtime(&vref(&p, &v)?, &b).await?))
}

async fn snapshots_list(
    State(s): State<AppState>,
    Path((p, v)): Path<(String, String)>,
) -> ApiResult<Json<Vec<SnapshotName>>> {
    Ok(Json(s.engine()?.snapshots(&vref(&p, &v)?).await?))
}

async fn snapshot_take(
    State(s): State<AppState>,
    Path((p, v)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<SnapshotTaken>)> {
    let name = s.engine()?.snapshot(&vref(&p, &v)?).await?;
    Ok((StatusCode::CREATED, Json(SnapshotTaken { snapshot: name })))
}

async fn volume_copy(
    State(s): State<AppState>,
    Path((p, v)): Path<(String, String)>,
    b: Bytes,
) -> ApiResult<(StatusCode, Json<VolumeInfo>)> {
    let req: CopyRequest = body(&b, "the copy request")?;
    let snap = SnapshotName::new(req.snapshot).map_err(|e| ApiError::bad(e.to_string()))?;
    let target = VolumeName::new(req.target).map_err(|e| ApiError::bad(e.to_string()))?;
    let info = s.engine()?.copy(&vref(&p, &v)?, &snap, &target).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

// ----- locks ----------------------------------------------------------------------------

async fn locks_list(
    State(s): State<AppState>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Vec<LockInfo>>> {
    let q = query(q)?;
    let kind = match q.get("kind").map(String::as_str) {
        None | Some("") => None,
        Some(k) => Some(
            LockKind::parse(k)
                .ok_or_else(|| ApiError::bad(format!("?kind={k}: expected mount or op")))?,
        ),
    };
    Ok(Json(s.engine()?.locks(kind).await?))
}

/// `GET /v1/check`: what a crash left, and the fix for each (a dry run).
async fn check_dry(State(s): State<AppState>) -> ApiResult<Json<CheckReport>> {
    Ok(Json(s.engine()?.check(false).await?))
}

/// `POST /v1/check`: the same, with the safe fixes applied.
async fn check_repair(State(s): State<AppState>) -> ApiResult<Json<CheckReport>> {
    Ok(Json(s.engine()?.check(true).await?))
}

async fn locks_get(
    State(s): State<AppState>,
    Path((p, v)): Path<(String, String)>,
) -> ApiResult<Json<Vec<LockInfo>>> {
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

async fn locks_remove(
    State(s): State<AppState>,
    Path((p, v)): Path<(String, String)>,
) -> ApiResult<Json<LocksRemoved>> {
    let removed = s.engine()?.force_remove_locks(&vref(&p, &v)?).await?;
    Ok(Json(LocksRemoved { removed }))
}

async fn maintenance_begin(
    State(s): State<AppState>,
    b: Bytes,
) -> ApiResult<(StatusCode, Json<MaintenanceStarted>)> {
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

async fn maintenance_renew(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Renewed>> {
    let ttl = s.engine()?.renew_maintenance(&LeaseId::new(id)).await?;
    Ok(Json(Renewed {
        ttl_ms: ttl.as_millis() as u64,
    }))
}

async fn maintenance_end(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.engine()?.end_maintenance(&LeaseId::new(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
