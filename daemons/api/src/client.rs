//! A typed async client of volmaster's REST API.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{Stream, StreamExt};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use volcore::{
    CheckReport, GlobalConfig, LockInfo, LockKind, Policy, PolicyName, PolicyRevision, Revision,
    Role, RoleMap, RuntimeOptions, SnapshotName, Subject, Tenant, TenantName, Volume, VolumeInfo,
    VolumeName, VolumeRef,
};

use crate::error::{ErrorBody, ErrorCode};
use crate::paths;
use crate::types::{
    CopyRequest, CreateRequest, Health, Info, LocksRemoved, MaintenanceRequest, MaintenanceStarted,
    PolicyEvent, Ready, Renewed, SnapshotTaken,
};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The base URL is not an `http://` or `https://` URL.
    #[error("{url:?} must be an http:// or https:// URL")]
    BadUrl {
        /// The URL as given.
        url: String,
    },
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Build(#[source] reqwest::Error),
    /// volmaster could not be reached.
    #[error("cannot reach volmaster at {base}: {source}")]
    Unreachable {
        /// volmaster's URL.
        base: String,
        /// What the connection said.
        #[source]
        source: reqwest::Error,
    },
    /// The TLS connection failed; the message says why in terms of the certificates.
    #[error("cannot reach volmaster at {base}: {message}")]
    Tls {
        /// volmaster's URL.
        base: String,
        /// What the failure means.
        message: String,
        /// The connection's error.
        #[source]
        source: reqwest::Error,
    },
    /// The TLS files cannot be used.
    #[error(transparent)]
    TlsFiles(#[from] crate::tls::TlsFileError),
    /// No answer within the request's time limit.
    #[error("volmaster did not answer within {0:?}")]
    TimedOut(Duration),
    /// volmaster answered with an error.
    #[error("{message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// What the error means.
        code: ErrorCode,
        /// volmaster's explanation.
        message: String,
    },
    /// volmaster answered with an error that is not in the API's error format.
    #[error("volmaster answered {status}: {body}")]
    Unexpected {
        /// The HTTP status.
        status: u16,
        /// The body it sent.
        body: String,
    },
    /// The answer could not be read.
    #[error("reading the answer: {0}")]
    Read(#[source] reqwest::Error),
    /// The answer is not what the API says it is.
    #[error("volmaster sent {what} this client cannot read: {error}")]
    Decode {
        /// What was being read.
        what: &'static str,
        /// Why it did not parse.
        #[source]
        error: serde_json::Error,
    },
}

impl ClientError {
    /// The HTTP status of an answer that was an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Unexpected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The API error code, when volmaster sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// `DELETE /v1/volumes/{policy}/{volume}` options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoveOptions {
    /// Remove even while the volume is locked.
    pub force: bool,
    /// How long to wait for its locks (default: the global Timeout).
    pub timeout: Option<Duration>,
}

/// A client of one volmaster. Cheap to clone (the connection pool is shared); requests
/// on one client reuse kept-alive connections.
#[derive(Clone, Debug)]
pub struct Client {
    base: Url,
    http: reqwest::Client,
}

type Res<T> = Result<T, ClientError>;

impl Client {
    /// A client of the volmaster at `base` (`http://127.0.0.1:9005`), with a 5 s connect
    /// timeout.
    pub fn new(base: &str) -> Res<Self> {
        Self::with_tls(base, &crate::tls::TlsFiles::default())
    }

    /// A client of the volmaster at `base`; an `https://` base is verified against
    /// `tls.ca` and presented `tls.cert`/`tls.key` when given.
    pub fn with_tls(base: &str, tls: &crate::tls::TlsFiles) -> Res<Self> {
        let https = base
            .trim_start()
            .to_ascii_lowercase()
            .starts_with("https://");
        let cfg = if https {
            tls.client_config()?
        } else {
            if tls.is_set() {
                tracing::warn!(%base, "TLS files given for a plain http:// volmaster; they are not used");
            }
            // Never used for http://; reqwest wants a TLS configuration all the same.
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|_| crate::tls::TlsFileError::Incomplete("no TLS protocol version available"))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tls_backend_preconfigured(cfg)
            .build()
            .map_err(ClientError::Build)?;
        Self::with_http(base, http)
    }

    /// A client over an HTTP client the caller configured.
    pub fn with_http(base: &str, http: reqwest::Client) -> Res<Self> {
        let bad = || ClientError::BadUrl {
            url: base.to_owned(),
        };
        let mut url = Url::parse(base.trim_end_matches('/')).map_err(|_| bad())?;
        if !matches!(url.scheme(), "http" | "https") || url.path_segments_mut().is_err() {
            return Err(bad());
        }
        url.set_query(None);
        Ok(Self { base: url, http })
    }

    /// volmaster's URL.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// A failed connection, told by its TLS cause when it has one.
    fn unreachable(&self, source: reqwest::Error) -> ClientError {
        let host = self.base.host_str().unwrap_or_default().to_owned();
        match crate::tls::explain(&source, &host) {
            Some(message) => ClientError::Tls {
                base: self.base().to_owned(),
                message,
                source,
            },
            None => ClientError::Unreachable {
                base: self.base().to_owned(),
                source,
            },
        }
    }

    fn url(&self, template: &str, args: &[&str]) -> Url {
        let mut u = self.base.clone();
        if let Ok(mut segs) = u.path_segments_mut() {
            segs.pop_if_empty().extend(paths::segments(template, args));
        }
        u
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        timeout: Option<Duration>,
    ) -> Res<reqwest::Response> {
        let mut req = self.http.request(method, url);
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let sent = async {
            req.send().await.map_err(|source| match timeout {
                Some(t) if source.is_timeout() => ClientError::TimedOut(t),
                _ => self.unreachable(source),
            })
        };
        let resp = sent.await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.map_err(ClientError::Read)?;
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(e) => ClientError::Api {
                status: status.as_u16(),
                code: e.error.code,
                message: e.error.message,
            },
            Err(_) => ClientError::Unexpected {
                status: status.as_u16(),
                body: text,
            },
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        what: &'static str,
    ) -> Res<T> {
        let resp = self.send(method, url, body, None).await?;
        decode(resp, what).await
    }

    async fn call_within<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        timeout: Duration,
        what: &'static str,
    ) -> Res<T> {
        // The whole exchange, body included, within `timeout`.
        tokio_timeout(timeout, async {
            let resp = self.send(method, url, body, Some(timeout)).await?;
            decode(resp, what).await
        })
        .await
    }

    async fn done(&self, method: Method, url: Url) -> Res<()> {
        self.send(method, url, None, None).await.map(drop)
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Res<Health> {
        self.call(Method::GET, self.url(paths::HEALTHZ, &[]), None, "health")
            .await
    }

    /// `GET /readyz`: an error (`starting`, `store_unavailable` …) until the store answers.
    pub async fn ready(&self) -> Res<Ready> {
        self.call(Method::GET, self.url(paths::READYZ, &[]), None, "readiness")
            .await
    }

    /// `GET /v1/info`.
    pub async fn info(&self) -> Res<Info> {
        self.call(Method::GET, self.url(paths::INFO, &[]), None, "info")
            .await
    }

    /// `GET /v1/openapi.json`.
    pub async fn openapi(&self) -> Res<serde_json::Value> {
        self.call(Method::GET, self.url(paths::OPENAPI, &[]), None, "OpenAPI")
            .await
    }

    /// `GET /v1/global`.
    pub async fn global(&self) -> Res<GlobalConfig> {
        self.call(Method::GET, self.url(paths::GLOBAL, &[]), None, "global")
            .await
    }

    /// `PUT /v1/global` with volplugin's global JSON (validated by volmaster).
    pub async fn set_global(&self, json: Vec<u8>) -> Res<GlobalConfig> {
        self.call(
            Method::PUT,
            self.url(paths::GLOBAL, &[]),
            Some(json),
            "global",
        )
        .await
    }

    /// `GET /v1/policies`.
    pub async fn policies(&self) -> Res<Vec<Policy>> {
        self.call(
            Method::GET,
            self.url(paths::POLICIES, &[]),
            None,
            "policies",
        )
        .await
    }

    /// `GET /v1/policies/{policy}`.
    pub async fn policy(&self, name: &PolicyName) -> Res<Policy> {
        let url = self.url(paths::POLICY, &[name.as_str()]);
        self.call(Method::GET, url, None, "a policy").await
    }

    /// `PUT /v1/policies/{policy}` with volplugin's policy JSON (validated by volmaster).
    pub async fn upload_policy(&self, name: &PolicyName, json: Vec<u8>) -> Res<PolicyRevision> {
        let url = self.url(paths::POLICY, &[name.as_str()]);
        self.call(Method::PUT, url, Some(json), "a policy revision")
            .await
    }

    /// `DELETE /v1/policies/{policy}`.
    pub async fn delete_policy(&self, name: &PolicyName, force: bool) -> Res<()> {
        let mut url = self.url(paths::POLICY, &[name.as_str()]);
        if force {
            url.query_pairs_mut().append_pair("force", "true");
        }
        self.done(Method::DELETE, url).await
    }

    /// `GET /v1/policies/{policy}/revisions`, oldest first.
    pub async fn policy_revisions(&self, name: &PolicyName) -> Res<Vec<Revision>> {
        let url = self.url(paths::POLICY_REVISIONS, &[name.as_str()]);
        self.call(Method::GET, url, None, "revisions").await
    }

    /// `GET /v1/policies/{policy}/revisions/{revision}`.
    pub async fn policy_revision(&self, name: &PolicyName, rev: Revision) -> Res<PolicyRevision> {
        let rev = rev.to_string();
        let url = self.url(paths::POLICY_REVISION, &[name.as_str(), &rev]);
        self.call(Method::GET, url, None, "a policy revision").await
    }

    /// `GET /v1/watch/policies`: every upload from now on (or after `after`), as it happens.
    pub async fn watch_policies(
        &self,
        after: Option<Revision>,
    ) -> Res<impl Stream<Item = Res<PolicyEvent>> + Send + 'static> {
        let mut url = self.url(paths::WATCH_POLICIES, &[]);
        if let Some(a) = after {
            url.query_pairs_mut().append_pair("after", &a.to_string());
        }
        let resp = self.send(Method::GET, url, None, None).await?;
        Ok(ndjson(resp.bytes_stream()))
    }

    /// `POST /v1/volumes`.
    pub async fn create(
        &self,
        volume: &VolumeRef,
        options: &BTreeMap<String, String>,
    ) -> Res<VolumeInfo> {
        let body = json_body(&CreateRequest {
            volume: volume.to_string(),
            options: options.clone(),
        });
        let url = self.url(paths::VOLUMES, &[]);
        self.call(Method::POST, url, Some(body), "a volume").await
    }

    /// `GET /v1/whoami`: who volmaster takes this client for.
    pub async fn whoami(&self) -> Res<crate::types::WhoAmI> {
        self.call(
            Method::GET,
            self.url(paths::WHOAMI, &[]),
            None,
            "an identity",
        )
        .await
    }

    /// `GET /v1/volumes`: all, or one policy's.
    pub async fn volumes(&self, policy: Option<&PolicyName>) -> Res<Vec<Volume>> {
        let mut url = self.url(paths::VOLUMES, &[]);
        if let Some(p) = policy {
            url.query_pairs_mut().append_pair("policy", p.as_str());
        }
        self.call(Method::GET, url, None, "volumes").await
    }

    /// `GET /v1/stale-volumes[?policy=]`: volumes unused past their policy's reclaim
    /// period.
    pub async fn stale_volumes(
        &self,
        policy: Option<&PolicyName>,
    ) -> Res<Vec<volcore::reclaim::StaleVolume>> {
        let mut url = self.url(paths::STALE_VOLUMES, &[]);
        if let Some(p) = policy {
            url.query_pairs_mut().append_pair("policy", p.as_str());
        }
        self.call(Method::GET, url, None, "stale volumes").await
    }

    /// `GET /v1/volumes/{policy}/{volume}`.
    pub async fn volume(&self, v: &VolumeRef) -> Res<VolumeInfo> {
        self.call(Method::GET, self.vurl(paths::VOLUME, v), None, "a volume")
            .await
    }

    /// `DELETE /v1/volumes/{policy}/{volume}`: storage, then record.
    pub async fn remove(&self, v: &VolumeRef, opts: RemoveOptions) -> Res<()> {
        let mut url = self.vurl(paths::VOLUME, v);
        if opts.force {
            url.query_pairs_mut().append_pair("force", "true");
        }
        if let Some(t) = opts.timeout {
            url.query_pairs_mut().append_pair(
                "timeout",
                &volcore::size::format_duration(t).replace(' ', ""),
            );
        }
        self.done(Method::DELETE, url).await
    }

    /// `DELETE /v1/volumes/{policy}/{volume}/record`: the record only.
    pub async fn remove_record(&self, v: &VolumeRef) -> Res<()> {
        self.done(Method::DELETE, self.vurl(paths::VOLUME_RECORD, v))
            .await
    }

    /// `GET /v1/volumes/{policy}/{volume}/runtime`.
    pub async fn runtime(&self, v: &VolumeRef) -> Res<RuntimeOptions> {
        let url = self.vurl(paths::VOLUME_RUNTIME, v);
        self.call(Method::GET, url, None, "runtime options").await
    }

    /// `PUT /v1/volumes/{policy}/{volume}/runtime` with runtime JSON.
    pub async fn set_runtime(&self, v: &VolumeRef, json: Vec<u8>) -> Res<RuntimeOptions> {
        let url = self.vurl(paths::VOLUME_RUNTIME, v);
        self.call(Method::PUT, url, Some(json), "runtime options")
            .await
    }

    /// `GET /v1/volumes/{policy}/{volume}/snapshots`, oldest first.
    pub async fn snapshots(&self, v: &VolumeRef) -> Res<Vec<SnapshotName>> {
        let url = self.vurl(paths::VOLUME_SNAPSHOTS, v);
        self.call(Method::GET, url, None, "snapshots").await
    }

    /// `POST /v1/volumes/{policy}/{volume}/snapshots`: one now.
    pub async fn snapshot(&self, v: &VolumeRef) -> Res<SnapshotTaken> {
        let url = self.vurl(paths::VOLUME_SNAPSHOTS, v);
        self.call(Method::POST, url, None, "a snapshot").await
    }

    /// `POST /v1/volumes/{policy}/{volume}/snapshots/signal`: asks the supervisor for a
    /// snapshot now.
    pub async fn signal_snapshot(&self, v: &VolumeRef) -> Res<crate::types::SnapshotSignalled> {
        let url = self.vurl(paths::VOLUME_SNAPSHOT_SIGNAL, v);
        self.call(Method::POST, url, None, "a snapshot signal")
            .await
    }

    /// `GET /v1/supervisor`: the leading supervisor and the standbys.
    pub async fn supervisor_status(&self) -> Res<volcore::supervisor::SupervisorStatus> {
        self.call(
            Method::GET,
            self.url(paths::SUPERVISOR, &[]),
            None,
            "the supervisors' status",
        )
        .await
    }

    /// `POST /v1/volumes/{policy}/{volume}/copy`.
    pub async fn copy(
        &self,
        v: &VolumeRef,
        snapshot: &str,
        target: &VolumeName,
    ) -> Res<VolumeInfo> {
        let body = json_body(&CopyRequest {
            snapshot: snapshot.to_owned(),
            target: target.to_string(),
        });
        let url = self.vurl(paths::VOLUME_COPY, v);
        self.call(Method::POST, url, Some(body), "a volume").await
    }

    /// `GET /v1/locks`: all, or of one kind.
    pub async fn locks(&self, kind: Option<LockKind>) -> Res<Vec<LockInfo>> {
        let mut url = self.url(paths::LOCKS, &[]);
        if let Some(k) = kind {
            url.query_pairs_mut().append_pair("kind", k.as_str());
        }
        self.call(Method::GET, url, None, "locks").await
    }

    /// `GET /v1/locks/{policy}/{volume}`.
    pub async fn volume_locks(&self, v: &VolumeRef) -> Res<Vec<LockInfo>> {
        let url = self.vurl(paths::VOLUME_LOCKS, v);
        self.call(Method::GET, url, None, "locks").await
    }

    /// `DELETE /v1/locks/{policy}/{volume}`: whoever holds them.
    pub async fn remove_locks(&self, v: &VolumeRef) -> Res<LocksRemoved> {
        let url = self.vurl(paths::VOLUME_LOCKS, v);
        self.call(Method::DELETE, url, None, "removed locks").await
    }

    /// `GET /v1/check` (a dry run), or `POST` with `repair`.
    pub async fn check(&self, repair: bool) -> Res<CheckReport> {
        let method = if repair { Method::POST } else { Method::GET };
        self.call(method, self.url(paths::CHECK, &[]), None, "a report")
            .await
    }

    /// `POST /v1/maintenance`, giving up after `timeout`.
    pub async fn begin_maintenance(
        &self,
        req: &MaintenanceRequest,
        timeout: Duration,
    ) -> Res<MaintenanceStarted> {
        let url = self.url(paths::MAINTENANCE, &[]);
        self.call_within(
            Method::POST,
            url,
            Some(json_body(req)),
            timeout,
            "a session",
        )
        .await
    }

    /// `PUT /v1/maintenance/{session}`, giving up after `timeout`.
    pub async fn renew_maintenance(&self, session: &str, timeout: Duration) -> Res<Renewed> {
        let url = self.url(paths::MAINTENANCE_SESSION, &[session]);
        self.call_within(Method::PUT, url, None, timeout, "a renewal")
            .await
    }

    /// `DELETE /v1/maintenance/{session}`, giving up after `timeout`.
    pub async fn end_maintenance(&self, session: &str, timeout: Duration) -> Res<()> {
        let url = self.url(paths::MAINTENANCE_SESSION, &[session]);
        tokio_timeout(timeout, async {
            self.send(Method::DELETE, url, None, Some(timeout))
                .await
                .map(drop)
        })
        .await
    }

    /// `GET /v1/audit` (admin): entries at or after `since` (an RFC 3339 time or a
    /// duration back from now, `1h`), the newest `limit` of them, oldest first.
    pub async fn audit(
        &self,
        since: Option<&str>,
        limit: Option<usize>,
    ) -> Res<Vec<crate::types::AuditEntry>> {
        let mut url = self.url(paths::AUDIT, &[]);
        if let Some(s) = since {
            url.query_pairs_mut().append_pair("since", s);
        }
        if let Some(l) = limit {
            url.query_pairs_mut().append_pair("limit", &l.to_string());
        }
        self.call(Method::GET, url, None, "audit entries").await
    }

    /// `GET /v1/roles`: the identity → role map (admin).
    pub async fn roles(&self) -> Res<RoleMap> {
        self.call(
            Method::GET,
            self.url(paths::ROLES, &[]),
            None,
            "the role map",
        )
        .await
    }

    /// `PUT /v1/roles/{subject}`: binds `subject` to `role` (admin).
    pub async fn grant_role(&self, subject: &Subject, role: Role) -> Res<RoleMap> {
        let url = self.url(paths::ROLE, &[subject.as_str()]);
        let body = json_body(&crate::types::RoleGrant { role });
        self.call(Method::PUT, url, Some(body), "the role map")
            .await
    }

    /// `DELETE /v1/roles/{subject}` (admin).
    pub async fn revoke_role(&self, subject: &Subject) -> Res<RoleMap> {
        let url = self.url(paths::ROLE, &[subject.as_str()]);
        self.call(Method::DELETE, url, None, "the role map").await
    }

    /// `GET /v1/tenants` (admin).
    pub async fn tenants(&self) -> Res<Vec<Tenant>> {
        self.call(Method::GET, self.url(paths::TENANTS, &[]), None, "tenants")
            .await
    }

    /// `GET /v1/tenants/{tenant}` (admins and its members).
    pub async fn tenant(&self, t: &TenantName) -> Res<Tenant> {
        let url = self.url(paths::TENANT, &[t.as_str()]);
        self.call(Method::GET, url, None, "a tenant").await
    }

    /// `PUT /v1/tenants/{tenant}` with the tenant's JSON (admin).
    pub async fn put_tenant(&self, t: &TenantName, json: Vec<u8>) -> Res<Tenant> {
        let url = self.url(paths::TENANT, &[t.as_str()]);
        self.call(Method::PUT, url, Some(json), "a tenant").await
    }

    /// `DELETE /v1/tenants/{tenant}` (admin).
    pub async fn delete_tenant(&self, t: &TenantName) -> Res<()> {
        self.done(Method::DELETE, self.url(paths::TENANT, &[t.as_str()]))
            .await
    }

    fn vurl(&self, template: &str, v: &VolumeRef) -> Url {
        self.url(template, &[v.policy.as_str(), v.volume.as_str()])
    }
}

fn json_body<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

async fn decode<T: DeserializeOwned>(resp: reqwest::Response, what: &'static str) -> Res<T> {
    let bytes = resp.bytes().await.map_err(ClientError::Read)?;
    // An empty body (204) reads as JSON null, so `()` and `Option` decode from it.
    let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
    serde_json::from_slice(bytes).map_err(|error| ClientError::Decode { what, error })
}

/// Bounds a whole exchange (reqwest's own timeout does not cover a slow body).
async fn tokio_timeout<T>(limit: Duration, f: impl std::future::Future<Output = Res<T>>) -> Res<T> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or(Err(ClientError::TimedOut(limit)))
}

/// Splits a byte stream into NDJSON lines, each decoded as a [`PolicyEvent`].
fn ndjson<S>(bytes: S) -> impl Stream<Item = Res<PolicyEvent>> + Send + 'static
where
    S: Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send + 'static,
{
    let state = (Box::pin(bytes), Vec::<u8>::new(), false);
    futures::stream::unfold(state, |(mut bytes, mut buf, mut ended)| async move {
        loop {
            if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let ev = serde_json::from_slice(&line).map_err(|error| ClientError::Decode {
                    what: "a watch event",
                    error,
                });
                return Some((ev, (bytes, buf, ended)));
            }
            if ended {
                return None;
            }
            match bytes.next().await {
                Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    ended = true;
                    return Some((Err(ClientError::Read(e)), (bytes, buf, ended)));
                }
                None => ended = true,
            }
        }
    })
}
