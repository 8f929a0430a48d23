//! Campaigning for `leader/supervisor`, leading, and standing by.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{read_status, Role, Shared, SupervisorStatus};
use crate::keys::Keys;
use crate::kv::{
    KvError, KvStore, KvStoreExt, LeaseId, Precondition, PutOpts, Revision, WatchEvent,
};

/// The leader and the standbys, as the store knows them.
pub async fn status(kv: &dyn KvStore, keys: &Keys) -> Result<SupervisorStatus, KvError> {
    read_status(kv, keys).await
}

/// Waits for a `Live` lease; `None` once told to stop.
async fn live_lease(sh: &Shared, stop: &mut watch::Receiver<bool>) -> Option<LeaseId> {
    let mut lease = sh.lease.clone();
    loop {
        if *stop.borrow() {
            return None;
        }
        if let Some(l) = lease.borrow_and_update().lockable().cloned() {
            return Some(l);
        }
        tokio::select! {
            r = lease.changed() => if r.is_err() { return None },
            _ = stop.changed() => {}
        }
    }
}

/// Campaigns and leads until told to stop.
pub(super) async fn run(sh: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut pause = Duration::from_millis(200);
    let mut registered: Option<LeaseId> = None;
    while let Some(lease) = live_lease(&sh, &mut stop).await {
        if registered.as_ref() != Some(&lease) {
            let key = sh.keys.supervisor(&sh.cfg.host, &sh.instance);
            let opts = PutOpts {
                precondition: Precondition::Any,
                lease: Some(lease.clone()),
            };
            match sh.kv.put_json(&key, &sh.record(sh.started), opts).await {
                Ok(_) => registered = Some(lease.clone()),
                Err(e) => debug!(error = %e, "could not register as a supervisor yet"),
            }
        }
        let opts = PutOpts {
            precondition: Precondition::Absent,
            lease: Some(lease.clone()),
        };
        let since = sh.cfg.clock.now();
        match sh
            .kv
            .put_json(&sh.keys.supervisor_leader(), &sh.record(since), opts)
            .await
        {
            Ok(token) => {
                pause = Duration::from_millis(200);
                lead(&sh, &lease, token, since, &mut stop).await;
            }
            Err(KvError::Conflict { .. }) => stand_by(&sh, &lease, &mut stop).await,
            Err(e) => {
                warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "cannot campaign for the supervisor lead; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
    if let Some(lease) = registered {
        let key = sh.keys.supervisor(&sh.cfg.host, &sh.instance);
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            sh.kv.delete(&key, Precondition::Any),
        )
        .await;
        debug!(lease = %lease, "supervisor record removed");
    }
}

/// Waits until the leader key is gone (or our lease changes, or we stop).
async fn stand_by(sh: &Shared, lease: &LeaseId, stop: &mut watch::Receiver<bool>) {
    let key = sh.keys.supervisor_leader();
    let current = match sh.kv.get(&key).await {
        Ok(Some(e)) => e,
        Ok(None) => return,
        Err(e) => {
            debug!(error = %e, "cannot read the leader key; campaigning again shortly");
            tokio::time::sleep(Duration::from_millis(500)).await;
            return;
        }
    };
    if let Ok(rec) = current.decode::<super::SupervisorRecord>() {
        info!(leader = %rec.host, instance = %rec.instance, "standing by");
    }
    let mut events = match sh.kv.watch(&key, Some(current.mod_rev)).await {
        Ok(w) => w,
        Err(e) => {
            debug!(error = %e, "cannot watch the leader key; campaigning again shortly");
            tokio::time::sleep(Duration::from_millis(500)).await;
            return;
        }
    };
    let mut lease_rx = sh.lease.clone();
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(WatchEvent::Delete { key: k, .. })) if k == key => return,
                Some(Ok(WatchEvent::Put(_))) => {}
                Some(Ok(WatchEvent::Delete { .. })) => {}
                // Resync, a broken watch or its end: look again.
                Some(Ok(WatchEvent::Resync { .. })) | Some(Err(_)) | None => return,
            },
            r = lease_rx.wait_for(|s| s.lockable() != Some(lease)) => {
                let _ = r;
                return;
            }
            _ = stop.changed() => return,
        }
    }
}

/// Leads until the lease is not `Live`, the key is no longer ours, or we stop.
async fn lead(
    sh: &Arc<Shared>,
    lease: &LeaseId,
    token: Revision,
    since: std::time::SystemTime,
    stop: &mut watch::Receiver<bool>,
) {
    let key = sh.keys.supervisor_leader();
    info!(token, lease = %lease, "leading the supervisors");
    sh.role.send_replace(Role::Leader { since, token });
    sh.stats(|s| s.terms += 1);
    let mut lease_rx = sh.lease.clone();
    let deposed = async {
        // The key changing hands (force-removed, or expired while we could not tell).
        let Ok(mut events) = sh.kv.watch(&key, Some(token)).await else {
            return "the leader key cannot be watched";
        };
        while let Some(ev) = events.next().await {
            match ev {
                Ok(WatchEvent::Delete { key: k, .. }) if k == key => {
                    return "the leader key was deleted"
                }
                Ok(WatchEvent::Put(e)) if e.key == key && e.create_rev != token => {
                    return "another supervisor holds the leader key"
                }
                Ok(_) => {}
                Err(_) => return "the leader key's watch broke",
            }
        }
        "the leader key's watch ended"
    };
    let mut resign = false;
    tokio::select! {
        () = super::tenure::run(sh.clone(), token) => warn!("leadership ended: fenced out"),
        _ = lease_rx.wait_for(|s| s.lockable() != Some(lease)) => {
            warn!("lease is not live: stopped issuing work (another supervisor may take over once it expires)");
        }
        why = deposed => warn!(why, "leadership ended"),
        _ = stop.changed() => resign = true,
    }
    sh.role.send_replace(Role::Standby);
    if resign {
        match tokio::time::timeout(
            Duration::from_secs(2),
            sh.kv.delete(&key, Precondition::CreateRevision(token)),
        )
        .await
        {
            Ok(Ok(_)) => info!("resigned the supervisor lead"),
            Ok(Err(e)) => debug!(error = %e, "could not resign; the lease ends the lead"),
            Err(_) => debug!("resigning timed out; the lease ends the lead"),
        }
    }
}
