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
/// The least number of entries past `keep` before the trail is pruned.
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

use volcore::audit::entry_id;

impl Audit {
    /// Starts the writer, keeping at most `keep` entries in the store.
    pub(crate) fn start(kv: Arc<dyn KvStore>, keys: Keys, keep: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<AuditEntry>(QUEUE);
        tokio::spawn(async move {
            // Pruning lists the whole trail, so it runs only once the trail has grown a
            // tenth (at least PRUNE_EVERY entries) past `keep`.
            let slack = (keep / 10).max(PRUNE_EVERY);
            let mut stored = kv.list(&keys.audit()).await.map_or(0, |l| l.len());
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
                stored += batch.len();
                if stored > keep + slack {
                    match prune(kv.as_ref(), &keys, keep).await {
                        Ok(()) => stored = keep,
                        Err(err) => {
                            // Tried again after another `slack` entries.
                            stored = keep;
                            warn!(error = %err, "pruning the audit trail failed");
                        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entry(i: usize) -> AuditEntry {
        AuditEntry {
            time: now(),
            who: "user:t".into(),
            groups: Vec::new(),
            method: "POST".into(),
            path: format!("/e{i}"),
            status: 200,
            outcome: "ok".into(),
        }
    }

    /// The trail is bounded: past `keep` (plus its slack) the oldest entries go, the
    /// newest stay, in order.
    #[tokio::test]
    async fn the_trail_keeps_the_newest_entries() {
        let kv: Arc<dyn KvStore> = Arc::new(volcore::MemKv::new());
        let keys = Keys::default();
        let keep = 5;
        let audit = Audit::start(kv.clone(), keys.clone(), keep);
        for i in 0..200 {
            audit.record(entry(i));
            if i % 50 == 49 {
                // Let the writer catch up, so that the queue never overflows.
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
        }
        let mut got = Vec::new();
        for _ in 0..100 {
            got = list(kv.as_ref(), &keys, None, 100_000).await.unwrap();
            if got.last().is_some_and(|e| e.path == "/e199") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(got.last().map(|e| e.path.as_str()), Some("/e199"));
        assert!(
            got.len() <= keep + PRUNE_EVERY,
            "{} entries kept",
            got.len()
        );
        assert!(got.iter().all(|e| e.path != "/e0"), "the oldest was kept");
        let paths: Vec<usize> = got.iter().map(|e| e.path[2..].parse().unwrap()).collect();
        assert!(paths.windows(2).all(|w| w[0] < w[1]), "{paths:?}");
        // `since` in the future finds nothing; a bad one says what it takes.
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert!(list(kv.as_ref(), &keys, Some(later), 10)
            .await
            .unwrap()
            .is_empty());
        assert!(parse_since("yesterday").unwrap_err().contains("1h"));
    }
}
