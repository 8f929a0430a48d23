//! The leader's reclamation sweep (see [`crate::reclaim`]).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::Shared;
use crate::audit::{entry_id, AuditEntry};
use crate::engine::EngineError;
use crate::kv::{Precondition, PutOpts, TxnOp};
use crate::name::VolumeRef;
use crate::policy::ReclaimAction;
use crate::reclaim::Usage;

/// What a sweep did.
#[derive(Debug, Default)]
pub(super) struct Swept {
    /// Volumes reported (so the next sweeps of this term do not repeat it).
    pub reported: Vec<VolumeRef>,
    /// A write found the leader key changed.
    pub fenced: bool,
}

async fn audit(sh: &Shared, v: &VolumeRef, what: &str, ok: bool) {
    let e = AuditEntry {
        time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        who: format!("volsupervisor:{}", sh.cfg.host),
        groups: Vec::new(),
        method: what.to_owned(),
        path: format!("/v1/volumes/{v}"),
        status: if ok { 200 } else { 500 },
        outcome: if ok { "ok" } else { "failed" }.to_owned(),
    };
    let key = sh.keys.audit_entry(&entry_id(SystemTime::now(), 0));
    let value = serde_json::to_vec(&e).unwrap_or_default();
    if let Err(err) = sh.kv.put(&key, value, PutOpts::default()).await {
        warn!(volume = %v, error = %err, "could not store the audit entry of a reclamation");
    }
}

pub(super) async fn sweep(sh: &Shared, fence: TxnOp, reported: BTreeSet<VolumeRef>) -> Swept {
    let mut out = Swept::default();
    let usage = match Usage::read(sh.kv.as_ref(), &sh.keys).await {
        Ok(u) => u,
        Err(e) => {
            warn!(error = %e, "reclamation sweep: cannot read who uses what; next sweep retries");
            return out;
        }
    };
    let now = sh.cfg.clock.now();
    for e in sh.catalog.entries() {
        let vol = &e.volume;
        let v = vol.reference();
        if let Some(dead) = usage.orphaned(vol) {
            let mut checks = vec![fence.clone()];
            checks.extend(dead.iter().map(|h| TxnOp::Check {
                key: sh.keys.host(h),
                pre: Precondition::Absent,
            }));
            let also = dead
                .iter()
                .map(|h| TxnOp::Delete {
                    key: sh.keys.mount(h, &v),
                    pre: Precondition::Any,
                })
                .collect();
            let hosts: Vec<String> = dead.iter().map(ToString::to_string).collect();
            match sh
                .engine
                .remove_checked(&v, Some(Duration::ZERO), checks, also)
                .await
            {
                Ok(()) => {
                    info!(volume = %v, hosts = ?hosts, "ephemeral volume removed: the hosts that had it mounted are gone");
                    sh.stats(|s| s.ephemeral_removed += 1);
                    audit(sh, &v, "RECLAIM-EPHEMERAL", true).await;
                }
                Err(err) => {
                    out.fenced |= note(sh, &v, "removing the orphaned ephemeral volume", &err)
                }
            }
            continue;
        }
        let Some(st) = usage.stale(vol, now) else {
            continue;
        };
        if st.due_at > now {
            continue;
        }
        match st.action {
            ReclaimAction::Report => {
                if !reported.contains(&v) {
                    warn!(volume = %v, unused_since = %humantime::format_rfc3339_seconds(st.unused_since), "volume unused past its policy's reclaim period (action: report)");
                    sh.stats(|s| s.reported += 1);
                    audit(sh, &v, "RECLAIM-REPORT", true).await;
                    out.reported.push(v);
                }
            }
            ReclaimAction::Remove => {
                let mut checks = vec![fence.clone()];
                checks.extend(usage.unused_checks(&sh.keys, &v));
                match sh
                    .engine
                    .remove_checked(&v, Some(Duration::ZERO), checks, Vec::new())
                    .await
                {
                    Ok(()) => {
                        info!(volume = %v, unused_since = %humantime::format_rfc3339_seconds(st.unused_since), "unused volume reclaimed (removed)");
                        sh.stats(|s| s.reclaimed += 1);
                        audit(sh, &v, "RECLAIM", true).await;
                    }
                    Err(err) => out.fenced |= note(sh, &v, "reclaiming the unused volume", &err),
                }
            }
        }
    }
    out
}

/// Logs why a removal did not happen; true when the leader key was what failed.
fn note(sh: &Shared, v: &VolumeRef, doing: &str, err: &EngineError) -> bool {
    match err {
        EngineError::Fenced { key } if *key == sh.keys.supervisor_leader() => true,
        // Used again, remounted, or a host came back since the sweep looked: not stale.
        EngineError::Fenced { .. }
        | EngineError::Locked(_)
        | EngineError::VolumeNotFound { .. } => {
            info!(volume = %v, reason = %err, "not {doing}: it changed since the sweep looked");
            false
        }
        other => {
            warn!(volume = %v, error = %other, "{doing} failed; the next sweep retries");
            false
        }
    }
}
