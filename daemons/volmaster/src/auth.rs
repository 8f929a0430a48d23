//! Authorization: the role each route needs (one table, used by the middleware and by
//! the OpenAPI document), the caller's [`Principal`] from its certificate and the watched
//! role map and tenants, and the tenant checks handlers make.
//!
//! Without TLS there are no identities: volmaster then listens on loopback only (or with
//! `--insecure`), and every caller is the local admin — the zero-set-up installation.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::watch;
use tracing::{info, warn};
use volcore::{AuthView, Keys, KvStore, PolicyName, Principal, Role, Subject, WatchEvent};
use volcore_api::types::AuditEntry;
use volcore_api::{paths, ErrorCode};

use crate::error::{ApiError, ApiResult};
use crate::tls::Caller;
use crate::AppState;

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// Anyone, even without a certificate (health, readiness, the API document).
    Anyone,
    /// At least this role (and, for tenant-scoped resources, the tenant — checked by the
    /// handler, which knows the policy).
    Role(Role),
}

/// The role every route needs: `(method, path, need)`. A route missing here is refused
/// (and a test fails), so a new route cannot be served without declaring its role.
pub(crate) const ACCESS: &[(&str, &str, Need)] = &[
    ("get", paths::HEALTHZ, Need::Anyone),
    ("get", paths::READYZ, Need::Anyone),
    ("get", paths::OPENAPI, Need::Anyone),
    ("get", paths::WHOAMI, Need::Anyone),
    ("get", paths::INFO, Need::Role(Role::Reader)),
    ("get", paths::GLOBAL, Need::Role(Role::Reader)),
    ("put", paths::GLOBAL, Need::Role(Role::Admin)),
    ("get", paths::POLICIES, Need::Role(Role::Reader)),
    ("get", paths::POLICY, Need::Role(Role::Reader)),
    ("put", paths::POLICY, Need::Role(Role::Admin)),
    ("delete", paths::POLICY, Need::Role(Role::Admin)),
    ("get", paths::POLICY_REVISIONS, Need::Role(Role::Reader)),
    ("get", paths::POLICY_REVISION, Need::Role(Role::Reader)),
    ("get", paths::WATCH_POLICIES, Need::Role(Role::Reader)),
    ("get", paths::VOLUMES, Need::Role(Role::Reader)),
    ("post", paths::VOLUMES, Need::Role(Role::Operator)),
    ("get", paths::VOLUME, Need::Role(Role::Reader)),
    ("delete", paths::VOLUME, Need::Role(Role::Operator)),
    ("delete", paths::VOLUME_RECORD, Need::Role(Role::Admin)),
    ("get", paths::VOLUME_RUNTIME, Need::Role(Role::Reader)),
    ("put", paths::VOLUME_RUNTIME, Need::Role(Role::Operator)),
    ("get", paths::VOLUME_SNAPSHOTS, Need::Role(Role::Reader)),
    ("post", paths::VOLUME_SNAPSHOTS, Need::Role(Role::Operator)),
    ("post", paths::VOLUME_COPY, Need::Role(Role::Operator)),
    (
        "post",
        paths::VOLUME_SNAPSHOT_SIGNAL,
        Need::Role(Role::Operator),
    ),
    ("get", paths::SUPERVISOR, Need::Role(Role::Reader)),
    ("get", paths::STALE_VOLUMES, Need::Role(Role::Reader)),
    ("get", paths::LOCKS, Need::Role(Role::Reader)),
    ("get", paths::VOLUME_LOCKS, Need::Role(Role::Reader)),
    ("delete", paths::VOLUME_LOCKS, Need::Role(Role::Admin)),
    ("get", paths::CHECK, Need::Role(Role::Admin)),
    ("post", paths::CHECK, Need::Role(Role::Admin)),
    ("post", paths::MAINTENANCE, Need::Role(Role::Operator)),
    (
        "put",
        paths::MAINTENANCE_SESSION,
        Need::Role(Role::Operator),
    ),
    (
        "delete",
        paths::MAINTENANCE_SESSION,
        Need::Role(Role::Operator),
    ),
    ("get", paths::AUDIT, Need::Role(Role::Admin)),
    ("get", paths::ROLES, Need::Role(Role::Admin)),
    ("put", paths::ROLE, Need::Role(Role::Admin)),
    ("delete", paths::ROLE, Need::Role(Role::Admin)),
    ("get", paths::TENANTS, Need::Role(Role::Admin)),
    ("get", paths::TENANT, Need::Role(Role::Reader)),
    ("put", paths::TENANT, Need::Role(Role::Admin)),
    ("delete", paths::TENANT, Need::Role(Role::Admin)),
];

/// The need of `method` on the route `path` (a template), if declared.
pub(crate) fn need_of(method: &str, path: &str) -> Option<Need> {
    ACCESS
        .iter()
        .find(|(m, p, _)| m.eq_ignore_ascii_case(method) && *p == path)
        .map(|(_, _, n)| *n)
}

/// The caller's principal, from its connection and the current role map and tenants.
fn principal(s: &AppState, caller: Option<&Caller>) -> ApiResult<Option<Principal>> {
    let Some(caller) = caller else {
        // A plain-HTTP connection: loopback or --insecure, no identities.
        return Ok(Some(Principal::local_admin()));
    };
    let Some(id) = &caller.identity else {
        return Ok(None);
    };
    let view = s.auth.get().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Starting,
            "volmaster is starting: it has not read the role map yet",
        )
    })?;
    Ok(Some(view.borrow().principal(&id.name, &id.groups)))
}

/// The middleware: finds the route's need, refuses a caller without a certificate (401)
/// or without the role (403), hands the principal to the handler, and audits every
/// mutating request and every refusal.
pub(crate) async fn authorize(
    State(s): State<AppState>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let (resp, who) = decide(&s, matched, req, next).await;
    let status = resp.status().as_u16();
    let refused = matches!(status, 401 | 403);
    if refused || !matches!(method, Method::GET | Method::HEAD) {
        s.audit.record(AuditEntry {
            time: crate::audit::now(),
            who: who
                .as_ref()
                .map_or_else(|| "anonymous".to_owned(), Principal::describe),
            groups: who.map(|p| p.groups).unwrap_or_default(),
            method: method.to_string(),
            path,
            status,
            outcome: if refused {
                "refused"
            } else if resp.status().is_success() {
                "ok"
            } else {
                "failed"
            }
            .to_owned(),
        });
    }
    resp
}

async fn decide(
    s: &AppState,
    matched: Option<MatchedPath>,
    mut req: Request,
    next: Next,
) -> (Response, Option<Principal>) {
    // HEAD is served by the GET handler, so it needs what GET needs.
    let method = match req.method().as_str().to_ascii_lowercase() {
        m if m == "head" => "get".to_owned(),
        m => m,
    };
    let caller = req.extensions().get::<Caller>().cloned();
    let Some(path) = matched.map(|m| m.as_str().to_owned()) else {
        // No route matched: the fallback answers (404/405).
        return (
            next.run(req).await,
            principal(s, caller.as_ref()).ok().flatten(),
        );
    };
    let need = need_of(&method, &path);
    let who = match principal(s, caller.as_ref()) {
        Ok(p) => p,
        // Health, readiness and the document answer before the role map is read.
        Err(_) if need == Some(Need::Anyone) => None,
        Err(e) => return (e.into_response(), None),
    };
    let Some(need) = need else {
        let e = ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "{} {path} declares no role and is refused",
                method.to_uppercase()
            ),
        );
        return (e.into_response(), who);
    };
    if let Need::Role(role) = need {
        let Some(p) = &who else {
            let msg = match caller.as_ref().and_then(|c| c.refused.as_deref()) {
                Some(why) => format!(
                    "volmaster refused this client's certificate: {why}; {} {path} needs a certificate with role {role} or higher",
                    method.to_uppercase()
                ),
                None => format!(
                    "{} {path} needs a client certificate with role {role} or higher; connect with --cert and --key",
                    method.to_uppercase()
                ),
            };
            let e = ApiError::new(ErrorCode::Unauthenticated, msg);
            return (e.into_response(), None);
        };
        if !p.has(role) {
            let e = forbidden_role(p, role, &format!("{} {path}", method.to_uppercase()));
            return (e.into_response(), who);
        }
    }
    if let Some(p) = &who {
        req.extensions_mut().insert(p.clone());
    }
    (next.run(req).await, who)
}

/// 403 for a principal without `role`.
pub(crate) fn forbidden_role(p: &Principal, role: Role, what: &str) -> ApiError {
    let has = match p.role {
        Some(r) => format!("has role {r}"),
        None => "has no role".to_owned(),
    };
    ApiError::new(
        ErrorCode::Forbidden,
        format!(
            "{} {has}; {what} needs role {role} (an admin can grant it: volcli role grant {} {role})",
            p.describe(),
            p.describe()
        ),
    )
}

/// Refuses unless `p` may act on `policy`'s volumes, naming the tenants that hold the
/// policy (what the caller would need to be a member of) and the caller's own.
pub(crate) fn scope(s: &AppState, p: &Principal, policy: &PolicyName) -> ApiResult<()> {
    if p.may_use(policy) {
        return Ok(());
    }
    let list = |v: Vec<&str>| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(", ")
        }
    };
    let holders: Vec<String> = s
        .auth
        .get()
        .map(|v| {
            v.borrow()
                .tenants
                .values()
                .filter(|t| t.policies.contains(policy))
                .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let mine = list(p.tenants.iter().map(|t| t.as_str()).collect());
    let who = p.describe();
    let msg = if holders.is_empty() {
        format!(
            "policy {policy} is in no tenant, so only admins may use it ({who}'s tenants: {mine}); an admin can add it to one of them (volcli tenant upload)"
        )
    } else {
        format!(
            "policy {policy} is in none of {who}'s tenants: it needs tenant {} ({who}'s tenants: {mine}); an admin can add {who} to it (volcli tenant upload)",
            holders.join(" or ")
        )
    };
    Err(ApiError::new(ErrorCode::Forbidden, msg))
}

/// Refuses unless `p` is an admin; for operations that are admin-only for one reason
/// (a force flag, listing everything).
pub(crate) fn need_admin(p: &Principal, what: &str) -> ApiResult<()> {
    if p.has(Role::Admin) {
        Ok(())
    } else {
        Err(forbidden_role(p, Role::Admin, what))
    }
}

/// Reads the role map and tenants and keeps a channel current with them (a change is in
/// force within a watch round trip). `bootstrap` are the `--admin-identity` subjects.
pub(crate) async fn watch_auth(
    kv: Arc<dyn KvStore>,
    keys: Keys,
    bootstrap: BTreeSet<Subject>,
) -> Result<watch::Receiver<AuthView>> {
    let mut after = kv.revision().await.context("reading the store revision")?;
    let load = {
        let (kv, keys, bootstrap) = (kv.clone(), keys.clone(), bootstrap.clone());
        move || {
            let (kv, keys, bootstrap) = (kv.clone(), keys.clone(), bootstrap.clone());
            async move {
                let mut v = AuthView::load(kv.as_ref(), &keys).await?;
                v.bootstrap_admins = bootstrap;
                anyhow::Ok(v)
            }
        }
    };
    let first = load().await.context("reading the role map and tenants")?;
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        let mut pause = Duration::from_millis(100);
        loop {
            let streams = async {
                let a = kv.watch(&keys.auth(), Some(after)).await?;
                let t = kv.watch(&keys.tenants(), Some(after)).await?;
                anyhow::Ok(futures::stream::select(a, t))
            };
            let mut events = match streams.await {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cannot watch the role map and tenants; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            pause = Duration::from_millis(100);
            // After a re-open, what changed meanwhile is read now, not at the next event.
            if let Ok(v) = load().await {
                if *tx.borrow() != v && tx.send(v).is_err() {
                    return;
                }
            }
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(WatchEvent::Put(e)) => after = after.max(e.mod_rev),
                    Ok(WatchEvent::Delete { revision, .. } | WatchEvent::Resync { revision }) => {
                        after = after.max(revision)
                    }
                    Err(e) => {
                        warn!(error = %e, "role map watch failed; re-opening it");
                        break;
                    }
                }
                match load().await {
                    Ok(v) => {
                        info!(
                            roles = v.roles.bindings.len(),
                            tenants = v.tenants.len(),
                            "role map or tenants changed"
                        );
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "could not re-read the role map and tenants");
                        break;
                    }
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
