//! [`EtcdKv`]: the KV store on etcd v3 (native transactions, leases and watches).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, Error as EtcdError, EventType,
    GetOptions, KeyValue, PutOptions, Txn, TxnOp as EOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::{debug, warn};
use volcore::kv::{
    Entry, KvError, KvStore, LeaseId, Precondition, PutOpts, Revision, TxnOp, TxnOutcome,
    WatchEvent, WatchStream,
};

const BACKEND: &str = "etcd";

/// How an [`EtcdKv`] connects.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// `host:port` or `http://host:port` endpoints.
    pub endpoints: Vec<String>,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// TLS to etcd (`etcds://`); required then.
    pub tls: Option<EtcdTls>,
    /// etcd's own authentication: user name and password.
    pub user: Option<(String, String)>,
}

/// TLS to etcd: the CA that signed its certificate and, for etcd's
/// `--client-cert-auth`, this client's certificate and key (all PEM).
#[derive(Clone, Default)]
pub struct EtcdTls {
    /// The CA certificate(s).
    pub ca_pem: Vec<u8>,
    /// This client's certificate chain and key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("EtcdTls")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("identity", &self.identity.is_some())
            .finish()
    }
}

impl EtcdConfig {
    /// Endpoints with default timeouts (5 s requests, 3 s connect).
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            tls: None,
            user: None,
        }
    }

    /// Whether `url` asks for TLS (`etcds://`).
    pub fn wants_tls(url: &str) -> bool {
        url.starts_with("etcds://")
    }

    /// Parses `etcd://h:p[,h:p…]` or `etcds://…` (TLS; give [`tls`](Self::tls) too) — the
    /// daemons' `--kv` forms — or a bare `h:p[,h:p…]` list.
    pub fn parse(url: &str) -> Result<Self, KvError> {
        let list = url
            .strip_prefix("etcds://")
            .or_else(|| url.strip_prefix("etcd://"))
            .unwrap_or(url);
        let endpoints: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if endpoints.is_empty() {
            return Err(KvError::Invalid {
                reason: format!(
                    "{url:?} names no etcd endpoint; write etcd://127.0.0.1:2379[,host:port…]"
                ),
            });
        }
        for e in &endpoints {
            let hostport = e.strip_prefix("http://").unwrap_or(e);
            let ok = hostport
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(KvError::Invalid {
                    reason: format!("etcd endpoint {e:?} is not host:port"),
                });
            }
        }
        Ok(Self::new(endpoints))
    }
}

/// etcd v3 store. Cheap to clone; the etcd client's `&mut self` stays inside.
#[derive(Clone)]
pub struct EtcdKv {
    client: Client,
    endpoints: Vec<String>,
    ttls: Arc<Mutex<HashMap<i64, Duration>>>,
}

impl std::fmt::Debug for EtcdKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdKv")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

fn map_err(op: &'static str, e: EtcdError) -> KvError {
    match e {
        EtcdError::GRpcStatus(s) => from_status(op, s.code() as i32, s.message()),
        EtcdError::TransportError(t) => KvError::Unavailable {
            backend: BACKEND,
            source: Box::new(t),
        },
        EtcdError::IoError(io) => KvError::Unavailable {
            backend: BACKEND,
            source: Box::new(io),
        },
        other => KvError::Backend {
            backend: BACKEND,
            source: format!("{op}: {other}").into(),
        },
    }
}

/// A gRPC status by meaning. What may have applied is never a definite failure: the
/// client's own deadline (tonic reports it as CANCELLED, "Timeout expired"), a deadline
/// exceeded, and etcd's "request timed out" / "leader changed" are `Timeout` (outcome
/// unknown), so callers settle a write instead of undoing one that committed.
fn from_status(op: &'static str, code: i32, msg: &str) -> KvError {
    const CANCELLED: i32 = 1;
    const UNKNOWN: i32 = 2;
    const DEADLINE_EXCEEDED: i32 = 4;
    const UNAVAILABLE: i32 = 14;
    // A request cut off on the way (a member killed or frozen mid-call) may have applied.
    let unknown_outcome = [
        "timed out",
        "timeout",
        "leader changed",
        "no leader",
        "transport error",
        "connection reset",
        "broken pipe",
        "h2 protocol error",
    ];
    match code {
        UNAVAILABLE => KvError::Unavailable {
            backend: BACKEND,
            source: msg.to_owned().into(),
        },
        CANCELLED | DEADLINE_EXCEEDED => KvError::Timeout {
            backend: BACKEND,
            op,
        },
        UNKNOWN
            if unknown_outcome
                .iter()
                .any(|m| msg.to_lowercase().contains(m)) =>
        {
            KvError::Timeout {
                backend: BACKEND,
                op,
            }
        }
        _ if msg.contains("duplicate key") => KvError::Invalid {
            reason: msg.to_owned(),
        },
        _ if msg.contains("required revision has been compacted")
            || msg.contains("future revision") =>
        {
            KvError::Invalid {
                reason: msg.to_owned(),
            }
        }
        _ => KvError::Backend {
            backend: BACKEND,
            source: format!("{op}: {msg}").into(),
        },
    }
}

fn lease_not_found(e: &EtcdError) -> bool {
    let s = e.to_string();
    s.contains("lease not found")
}

fn entry(kv: &KeyValue) -> Result<Entry, KvError> {
    let key = kv.key_str().map_err(|e| KvError::Corrupt {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        reason: e.to_string(),
    })?;
    Ok(Entry {
        key: key.to_owned(),
        value: kv.value().to_vec(),
        create_rev: rev(kv.create_revision()),
        mod_rev: rev(kv.mod_revision()),
        lease: (kv.lease() != 0).then(|| LeaseId::new(kv.lease().to_string())),
    })
}

fn rev(r: i64) -> Revision {
    u64::try_from(r).unwrap_or(0)
}

fn irev(r: Revision) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

fn lease_num(id: &LeaseId) -> Result<i64, KvError> {
    id.as_str()
        .parse()
        .map_err(|_| KvError::LeaseLost { lease: id.clone() })
}

fn compare(key: &str, pre: Precondition) -> Option<Compare> {
    match pre {
        Precondition::Any => None,
        Precondition::Absent => Some(Compare::create_revision(key, CompareOp::Equal, 0)),
        Precondition::Present => Some(Compare::create_revision(key, CompareOp::Greater, 0)),
        Precondition::Revision(r) => Some(Compare::mod_revision(key, CompareOp::Equal, irev(r))),
        Precondition::CreateRevision(r) => {
            Some(Compare::create_revision(key, CompareOp::Equal, irev(r)))
        }
    }
}

impl EtcdKv {
    /// Connects (the connection is lazy; the first call checks reachability).
    pub async fn connect(cfg: EtcdConfig) -> Result<Self, KvError> {
        let mut opts = ConnectOptions::new()
            .with_timeout(cfg.request_timeout)
            .with_connect_timeout(cfg.connect_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let mut endpoints = cfg.endpoints.clone();
        if let Some(t) = &cfg.tls {
            let mut tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(&t.ca_pem));
            if let Some((cert, key)) = &t.identity {
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
            }
            opts = opts.with_tls(tls);
            // Bare host:port: etcd-client adds https:// when TLS is set.
            for e in &mut endpoints {
                if let Some(rest) = e.strip_prefix("http://") {
                    *e = rest.to_owned();
                }
            }
        }
        if let Some((user, password)) = &cfg.user {
            opts = opts.with_user(user.clone(), password.clone());
        }
        let client = Client::connect(&endpoints, Some(opts))
            .await
            .map_err(|e| map_err("connect", e))?;
        Ok(Self {
            client,
            endpoints: cfg.endpoints,
            ttls: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The endpoints it talks to.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Runs `ops` as one etcd transaction; on a failed compare, reads the compared keys
    /// in the same transaction to name the first one that failed.
    async fn run_txn(&self, ops: Vec<TxnOp>) -> Result<TxnOutcome, KvError> {
        let mut compares = Vec::new();
        let mut compared = Vec::new();
        // Reads go first in the success branch so they see the state the compares saw.
        let mut then: Vec<EOp> = ops
            .iter()
            .filter_map(|op| match op {
                TxnOp::Read { key, .. } => Some(EOp::get(key.as_str(), None)),
                _ => None,
            })
            .collect();
        let nreads = then.len();
        for op in &ops {
            if let Some(c) = compare(op.key(), op.precondition()) {
                compares.push(c);
                compared.push((op.key().to_owned(), op.precondition()));
            }
            match op {
                TxnOp::Put {
                    key, value, lease, ..
                } => {
                    let mut o = PutOptions::new();
                    if let Some(l) = lease {
                        o = o.with_lease(lease_num(l)?);
                    }
                    then.push(EOp::put(key.as_str(), value.clone(), Some(o)));
                }
                TxnOp::Delete { key, .. } => then.push(EOp::delete(key.as_str(), None)),
                TxnOp::Check { .. } | TxnOp::Read { .. } => {}
            }
        }
        let or_else: Vec<EOp> = compared
            .iter()
            .map(|(k, _)| EOp::get(k.as_str(), None))
            .collect();
        let txn = Txn::new().when(compares).and_then(then).or_else(or_else);
        let resp = self.client.clone().txn(txn).await.map_err(|e| {
            if lease_not_found(&e) {
                let lease = ops
                    .iter()
                    .find_map(|op| match op {
                        TxnOp::Put { lease: Some(l), .. } => Some(l.clone()),
                        _ => None,
                    })
                    .unwrap_or_else(|| LeaseId::new("?"));
                KvError::LeaseLost { lease }
            } else {
                map_err("txn", e)
            }
        })?;
        let revision = resp.header().map_or(0, |h| rev(h.revision()));
        if resp.succeeded() {
            let mut reads = Vec::with_capacity(nreads);
            for r in resp.op_responses().into_iter().take(nreads) {
                match r {
                    TxnOpResponse::Get(g) => reads.push(g.kvs().first().map(entry).transpose()?),
                    _ => {
                        return Err(KvError::Backend {
                            backend: BACKEND,
                            source: "txn: etcd answered a read with another kind of response"
                                .into(),
                        })
                    }
                }
            }
            return Ok(TxnOutcome { revision, reads });
        }
        for ((key, pre), r) in compared.iter().zip(resp.op_responses()) {
            if let TxnOpResponse::Get(g) = r {
                let cur = g.kvs().first().map(entry).transpose()?;
                if !pre.holds(cur.as_ref()) {
                    return Err(KvError::Conflict {
                        key: key.clone(),
                        current: cur.map(|e| e.mod_rev),
                    });
                }
            }
        }
        // The compares failed but re-reading shows them holding: it changed in between.
        let key = compared.first().map(|(k, _)| k.clone()).unwrap_or_default();
        Err(KvError::Conflict { key, current: None })
    }
}

#[async_trait]
impl KvStore for EtcdKv {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, KvError> {
        let resp = self
            .client
            .clone()
            .get(key, None)
            .await
            .map_err(|e| map_err("get", e))?;
        resp.kvs().first().map(entry).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, KvError> {
        let resp = self
            .client
            .clone()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| map_err("list", e))?;
        resp.kvs().iter().map(entry).collect()
    }

    async fn put(&self, key: &str, value: Vec<u8>, opts: PutOpts) -> Result<Revision, KvError> {
        if opts.precondition == Precondition::Any {
            let mut o = PutOptions::new();
            if let Some(l) = &opts.lease {
                o = o.with_lease(lease_num(l)?);
            }
            let resp = self
                .client
                .clone()
                .put(key, value, Some(o))
                .await
                .map_err(|e| {
                    if lease_not_found(&e) {
                        KvError::LeaseLost {
                            lease: opts.lease.clone().unwrap_or_else(|| LeaseId::new("?")),
                        }
                    } else {
                        map_err("put", e)
                    }
                })?;
            return Ok(resp.header().map_or(0, |h| rev(h.revision())));
        }
        let out = self
            .run_txn(vec![TxnOp::Put {
                key: key.to_owned(),
                value,
                pre: opts.precondition,
                lease: opts.lease,
            }])
            .await?;
        Ok(out.revision)
    }

    async fn delete(&self, key: &str, pre: Precondition) -> Result<bool, KvError> {
        let Some(c) = compare(key, pre) else {
            let resp = self
                .client
                .clone()
                .delete(key, Some(DeleteOptions::new()))
                .await
                .map_err(|e| map_err("delete", e))?;
            return Ok(resp.deleted() > 0);
        };
        let txn = Txn::new()
            .when(vec![c])
            .and_then(vec![EOp::delete(key, None)])
            .or_else(vec![EOp::get(key, None)]);
        let resp = self
            .client
            .clone()
            .txn(txn)
            .await
            .map_err(|e| map_err("delete", e))?;
        if resp.succeeded() {
            for r in resp.op_responses() {
                if let TxnOpResponse::Delete(d) = r {
                    return Ok(d.deleted() > 0);
                }
            }
            return Ok(false);
        }
        let current = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| rev(kv.mod_revision())),
            _ => None,
        });
        Err(KvError::Conflict {
            key: key.to_owned(),
            current,
        })
    }

    async fn txn(&self, ops: Vec<TxnOp>) -> Result<TxnOutcome, KvError> {
        let mut seen = std::collections::BTreeSet::new();
        for op in &ops {
            if !matches!(op, TxnOp::Check { .. } | TxnOp::Read { .. })
                && !seen.insert(op.key().to_owned())
            {
                return Err(KvError::Invalid {
                    reason: format!("key {} is written twice in one transaction", op.key()),
                });
            }
        }
        self.run_txn(ops).await
    }

    async fn watch(&self, prefix: &str, after: Option<Revision>) -> Result<WatchStream, KvError> {
        let start = match after {
            Some(r) => r + 1,
            None => self.revision().await? + 1,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let client = self.client.clone();
        let first = open_watch(client.clone(), prefix, start).await?;
        tokio::spawn(pump(client, prefix.to_owned(), start, first, tx));
        Ok(Box::pin(UnboundedReceiverStream::new(rx)))
    }

    async fn revision(&self) -> Result<Revision, KvError> {
        let resp = self
            .client
            .clone()
            .get("\0", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(|e| map_err("revision", e))?;
        Ok(resp.header().map_or(0, |h| rev(h.revision())))
    }

    async fn compact(&self, revision: Revision) -> Result<(), KvError> {
        match self.client.clone().compact(irev(revision), None).await {
            Ok(_) => Ok(()),
            // Already compacted at or past it: the goal holds.
            Err(e) if e.to_string().contains("has been compacted") => Ok(()),
            Err(e) => Err(map_err("compact", e)),
        }
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, KvError> {
        if ttl.is_zero() {
            return Err(KvError::Invalid {
                reason: "a lease TTL must be positive".into(),
            });
        }
        // etcd counts in whole seconds; round up so the lease is never shorter than asked.
        let secs =
            i64::try_from(ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).unwrap_or(i64::MAX);
        let resp = self
            .client
            .clone()
            .lease_grant(secs, None)
            .await
            .map_err(|e| map_err("lease grant", e))?;
        let granted = Duration::from_secs(u64::try_from(resp.ttl()).unwrap_or(0));
        if let Ok(mut m) = self.ttls.lock() {
            m.insert(resp.id(), granted);
        }
        Ok(LeaseId::new(resp.id().to_string()))
    }

    async fn lease_keepalive(&self, id: &LeaseId) -> Result<Duration, KvError> {
        let n = lease_num(id)?;
        match self.client.clone().lease_keep_alive(n).await {
            Ok((_keeper, _stream)) => {
                let ttl = self.ttls.lock().ok().and_then(|m| m.get(&n).copied());
                Ok(ttl.unwrap_or(Duration::from_secs(1)))
            }
            Err(e) if lease_not_found(&e) => {
                if let Ok(mut m) = self.ttls.lock() {
                    m.remove(&n);
                }
                Err(KvError::LeaseLost { lease: id.clone() })
            }
            Err(e) => Err(map_err("lease keepalive", e)),
        }
    }

    async fn lease_revoke(&self, id: &LeaseId) -> Result<(), KvError> {
        let n = lease_num(id)?;
        if let Ok(mut m) = self.ttls.lock() {
            m.remove(&n);
        }
        match self.client.clone().lease_revoke(n).await {
            Ok(_) => Ok(()),
            Err(e) if lease_not_found(&e) => Err(KvError::LeaseLost { lease: id.clone() }),
            Err(e) => Err(map_err("lease revoke", e)),
        }
    }
}

async fn open_watch(
    mut client: Client,
    prefix: &str,
    start: Revision,
) -> Result<etcd_client::WatchStream, KvError> {
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(irev(start));
    let mut stream = client
        .watch(prefix, Some(opts))
        .await
        .map_err(|e| map_err("watch", e))?;
    // Wait for the server to confirm the watch (or to refuse it as compacted), so the
    // caller's first event is not lost to a race.
    match stream.message().await.map_err(|e| map_err("watch", e))? {
        Some(r) if r.created() => Ok(stream),
        Some(r) if r.canceled() && r.compact_revision() > 0 => Err(KvError::Invalid {
            reason: format!("compacted:{}", r.compact_revision()),
        }),
        Some(r) => Err(KvError::Backend {
            backend: BACKEND,
            source: format!("watch not created: {}", r.cancel_reason()).into(),
        }),
        None => Err(KvError::Unavailable {
            backend: BACKEND,
            source: "watch stream closed".into(),
        }),
    }
}

/// Forwards etcd watch responses; on compaction reports `Resync` and resumes from the
/// current revision; on a broken stream resumes from the last delivered revision.
async fn pump(
    client: Client,
    prefix: String,
    mut next: Revision,
    first: etcd_client::WatchStream,
    tx: mpsc::UnboundedSender<Result<WatchEvent, KvError>>,
) {
    let mut stream = Some(first);
    let mut compacted_at: Option<i64> = None;
    loop {
        let mut s = match stream.take() {
            Some(s) => s,
            None => {
                if let Some(_c) = compacted_at.take() {
                    let current = match current_revision(&client).await {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    if tx
                        .send(Ok(WatchEvent::Resync { revision: current }))
                        .is_err()
                    {
                        return;
                    }
                    next = current + 1;
                }
                match open_watch(client.clone(), &prefix, next).await {
                    Ok(s) => s,
                    Err(KvError::Invalid { reason }) if reason.starts_with("compacted:") => {
                        compacted_at = Some(0);
                        continue;
                    }
                    Err(e) => {
                        if tx.is_closed() {
                            return;
                        }
                        warn!(prefix = %prefix, error = %e, "etcd watch broken; re-establishing");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
        };
        loop {
            let msg = tokio::select! {
                () = tx.closed() => return,
                m = s.message() => m,
            };
            match msg {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        if resp.compact_revision() > 0 {
                            debug!(prefix = %prefix, "watch compacted; resyncing");
                            compacted_at = Some(resp.compact_revision());
                        }
                        break;
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let out = match ev.event_type() {
                            EventType::Put => entry(kv).map(WatchEvent::Put),
                            EventType::Delete => Ok(WatchEvent::Delete {
                                key: String::from_utf8_lossy(kv.key()).into_owned(),
                                revision: rev(kv.mod_revision()),
                            }),
                        };
                        if let Ok(WatchEvent::Put(e)) = &out {
                            next = next.max(e.mod_rev + 1);
                        }
                        if let Ok(WatchEvent::Delete { revision, .. }) = &out {
                            next = next.max(revision + 1);
                        }
                        if tx.send(out).is_err() {
                            return;
                        }
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
}

async fn current_revision(client: &Client) -> Result<Revision, KvError> {
    let resp = client
        .clone()
        .get("\0", Some(GetOptions::new().with_count_only()))
        .await
        .map_err(|e| map_err("revision", e))?;
    Ok(resp.header().map_or(0, |h| rev(h.revision())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client's deadline (CANCELLED "Timeout expired", seen when a leader was killed)
    /// and etcd's own timeouts leave a write's outcome unknown: retryable `Timeout`, never
    /// a definite failure (before: `Backend`, so a create that had committed was undone).
    #[test]
    fn timeouts_are_unknown_outcomes() {
        for (code, msg) in [
            (1, "Timeout expired"),
            (4, "context deadline exceeded"),
            (2, "etcdserver: request timed out"),
            (2, "etcdserver: leader changed"),
            (2, "transport error"),
        ] {
            let e = from_status("txn", code, msg);
            assert!(matches!(e, KvError::Timeout { .. }), "{code} {msg}: {e:?}");
            assert!(e.is_retryable());
        }
        assert!(matches!(
            from_status("get", 14, "connection refused"),
            KvError::Unavailable { .. }
        ));
        assert!(matches!(
            from_status("put", 3, "etcdserver: duplicate key given in txn request"),
            KvError::Invalid { .. }
        ));
        assert!(matches!(
            from_status("put", 7, "permission denied"),
            KvError::Backend { .. }
        ));
    }
}
