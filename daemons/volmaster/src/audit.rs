//! The audit trail: every mutating request, and every refused one, with who, what, when
//! and the outcome — as a structured log line (target `audit`) and in the store under
//! `audit/`, bounded (the oldest entries are dropped). Recording never delays or fails a
//! request: entries go through a bounded queue to one writer task, and an entry that
//! cannot be stored is logged and dropped.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tracing::{info, warn};
use volcore::kv::{Precondition, TxnOp};
use volcore::{Keys, KvStore};
use volcore_api::types::AuditEntry;

/// How many entries the store keeps by default.
pub const DEFAULT_KEEP: usize = 10_000;
/// How many entries may wait for the writer; beyond that they are logged only.
const QUEUE: usize = 1024;
/// The trail is pruned after this many entries.
const PRUNE_EVERY: usize = 64;
/// How long the writer waits for more entries to store with the first.
const BATCH_LINGER: Duration = Duration::from_millis(20);
/// At most this many entries per store transaction (stores bound a transaction's size).
const BATCH_MAX: usize = 64;

/// Where requests are recorded.
#[derive(Clone, Debug)]
pub(crate) struct Audit {
    tx: mpsc::Sender<AuditEntry>,
}

/// The store id of the `seq`th entry of a batch stored at `at`: the time in milliseconds
/// and the sequence (zero-padded, so ids sort by arrival), and a random suffix against
/// another volmaster's batch of the same millisecond.
fn entry_id(at: SystemTime, seq: usize) -> String {
    let ms = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{ms:015}-{seq:03}-{:08x}", rand::random::<u32>())
}

impl Audit {
    /// Starts the writer, keeping at most `keep` entries in the store.
    pub(crate) fn start(kv: Arc<dyn KvStore>, keys: Keys, keep: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<AuditEntry>(QUEUE);
        tokio::spawn(async move {
            let mut since_prune = 0usize;
            while let Some(first) = rx.recv().await {
                // Entries that come close together share one store transaction, so the
                // trail costs the store one write per burst rather than per request.
                let mut batch = vec![first];
                let linger = tokio::time::sleep(BATCH_LINGER);
                tokio::pin!(linger);
                while batch.len() < BATCH_MAX {
                    tokio::select! {
                        e = rx.recv() => match e {
                            Some(e) => batch.push(e),
                            None => break,
                        },
                        () = &mut linger => break,
                    }
                }
                let now = SystemTime::now();
                let ops = batch
                    .iter()
                    .enumerate()
                    .map(|(i, e)| TxnOp::Put {
                        key: keys.audit_entry(&entry_id(now, i)),
                        value: serde_json::to_vec(e).unwrap_or_default(),
                        pre: Precondition::Any,
                        lease: None,
                    })
                    .collect();
                if let Err(err) = kv.txn(ops).await {
                    warn!(error = %err, entries = batch.len(), "audit entries not stored (they are in the log)");
                    continue;
                }
                since_prune += batch.len();
                if since_prune >= PRUNE_EVERY {
                    since_prune = 0;
                    if let Err(err) = prune(kv.as_ref(), &keys, keep).await {
                        warn!(error = %err, "pruning the audit trail failed; retried after the next entries");
                    }
                }
            }
        });
        Self { tx }
    }

    /// Records `e`: the log line now, the store entry soon.
    pub(crate) fn record(&self, e: AuditEntry) {
        info!(
            target: "audit",
            who = %e.who,
            groups = ?e.groups,
            method = %e.method,
            path = %e.path,
            status = e.status,
            outcome = %e.outcome,
            "request"
        );
        if let Err(mpsc::error::TrySendError::Full(e)) = self.tx.try_send(e) {
            warn!(who = %e.who, path = %e.path, "audit queue full; this entry is logged but not stored");
        }
    }
}

/// Drops the oldest entries beyond `keep`.
async fn prune(kv: &dyn KvStore, keys: &Keys, keep: usize) -> Result<(), volcore::KvError> {
    let all = kv.list(&keys.audit()).await?;
    if all.len() <= keep {
        return Ok(());
    }
    let mut old: Vec<String> = all.into_iter().map(|e| e.key).collect();
    old.sort();
    old.truncate(old.len() - keep);
    // In chunks: stores bound a transaction's size.
    for chunk in old.chunks(64) {
        let ops = chunk
            .iter()
            .map(|k| TxnOp::Delete {
                key: k.clone(),
                pre: Precondition::Any,
            })
            .collect();
        kv.txn(ops).await?;
    }
    Ok(())
}

/// The stored entries answered at or after `since`, oldest first, at most `limit`.
pub(crate) async fn list(
    kv: &dyn KvStore,
    keys: &Keys,
    since: Option<SystemTime>,
    limit: usize,
) -> Result<Vec<AuditEntry>, volcore::KvError> {
    let from = since.map(entry_id_floor);
    let mut entries: Vec<(String, AuditEntry)> = kv
        .list(&keys.audit())
        .await?
        .into_iter()
        .filter_map(|e| {
            let id = e.key.strip_prefix(&keys.audit())?.to_owned();
            if from.as_ref().is_some_and(|f| id.as_str() < f.as_str()) {
                return None;
            }
            Some((id, serde_json::from_slice(&e.value).ok()?))
        })
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let skip = entries.len().saturating_sub(limit);
    Ok(entries.into_iter().skip(skip).map(|(_, e)| e).collect())
}

/// The smallest id of an entry at `at`.
fn entry_id_floor(at: SystemTime) -> String {
    let ms = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{ms:015}-")
}

/// `now` in the trail's format.
pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Parses `--since`/`?since=`: an RFC 3339 time or a duration back from now (`1h`).
pub(crate) fn parse_since(s: &str) -> Result<SystemTime, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    let d: Duration = humantime::parse_duration(s).map_err(|_| {
        format!("since {s:?} is neither a time (2026-12-04T10:00:00Z) nor a duration back from now (1h, 30m)")
    })?;
    Ok(SystemTime::now()
        .checked_sub(d)
        .unwrap_or(SystemTime::UNIX_EPOCH))
}
