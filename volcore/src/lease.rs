//! [`LeaseKeeper`]: one task per daemon that keeps its lease alive and says, on a watch
//! channel, whether the daemon may still act on its locks.
//!
//! The keeper renews at TTL/3. It declares the lease [`LeaseState::Lost`] when the last
//! renewal that the store confirmed is about to run out — a margin *before* the store can
//! expire it, measured from when that renewal was sent — so a daemon stops acting on its
//! locks before another host can take them. After a loss it grants a new lease and
//! publishes it as `Live` again; re-establishing locks is the subscriber's job. A watch
//! channel shows the latest state only, so a subscriber that sees `Live` with another
//! lease id than before knows the old lease was lost, even if it never saw `Lost`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::kv::{KvError, KvStore, LeaseId};

/// What a lease holder may do now.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum LeaseState {
    /// Renewed in time.
    Live {
        /// The lease.
        lease: LeaseId,
    },
    /// Renewals are failing but the lease has not run out yet.
    Expiring {
        /// The lease.
        lease: LeaseId,
        /// When it must be assumed lost.
        deadline: Instant,
    },
    /// The lease must be assumed expired: every lock bound to it may belong to someone
    /// else by now. The keeper is trying to grant a new lease.
    Lost {
        /// The lost lease.
        lease: LeaseId,
    },
}

impl LeaseState {
    /// The lease, if it may still be acted on (`Live` or `Expiring`).
    pub fn usable(&self) -> Option<&LeaseId> {
        match self {
            Self::Live { lease } | Self::Expiring { lease, .. } => Some(lease),
            Self::Lost { .. } => None,
        }
    }

    /// The lease new locks may be taken with: only a `Live` one. (An `Expiring` lease may
    /// be declared lost before the work under a new lock ends; locks already held stay
    /// usable until it is.) The engine and a host's mounts take locks by this one rule.
    pub fn lockable(&self) -> Option<&LeaseId> {
        match self {
            Self::Live { lease } => Some(lease),
            _ => None,
        }
    }

    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Live { .. } => "live",
            Self::Expiring { .. } => "expiring",
            Self::Lost { .. } => "lost",
        }
    }
}

/// Keeps one lease alive.
#[derive(Debug)]
pub struct LeaseKeeper {
    rx: watch::Receiver<LeaseState>,
    stop: Option<oneshot::Sender<bool>>,
    task: JoinHandle<()>,
    ttl: Duration,
}

impl LeaseKeeper {
    /// Grants a lease of `ttl` and starts renewing it.
    pub async fn start(kv: Arc<dyn KvStore>, ttl: Duration) -> Result<Self, KvError> {
        let sent = Instant::now();
        let lease = kv.lease_grant(ttl).await?;
        info!(lease = %lease, ttl_ms = ttl.as_millis() as u64, "lease granted");
        let (tx, rx) = watch::channel(LeaseState::Live {
            lease: lease.clone(),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run(kv, ttl, lease, sent, tx, stop_rx));
        Ok(Self {
            rx,
            stop: Some(stop_tx),
            task,
            ttl,
        })
    }

    /// The lease TTL asked for.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A receiver that sees every state change.
    pub fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.rx.clone()
    }

    /// The current state.
    pub fn state(&self) -> LeaseState {
        self.rx.borrow().clone()
    }

    /// The lease, if it may still be acted on.
    pub fn lease(&self) -> Option<LeaseId> {
        self.rx.borrow().usable().cloned()
    }

    /// Stops renewing and revokes the lease, deleting every key bound to it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        let _ = (&mut self.task).await;
    }

    /// Stops renewing without revoking: the lease runs out on its own, as a crashed
    /// host's would. For tests and for handing locks over on purpose.
    pub async fn abandon(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(false);
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        // Dropping without shutdown behaves like a crash: no more renewals.
        self.task.abort();
    }
}

/// How long before the lease can run out we call it lost.
fn margin(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(100)).min(ttl / 3)
}

async fn run(
    kv: Arc<dyn KvStore>,
    ttl: Duration,
    mut lease: LeaseId,
    mut confirmed_sent: Instant,
    tx: watch::Sender<LeaseState>,
    mut stop: oneshot::Receiver<bool>,
) {
    let renew_every = ttl / 3;
    let retry_every = (ttl / 10).max(Duration::from_millis(50));
    let mut next = confirmed_sent + renew_every;
    loop {
        let lost_at = confirmed_sent + ttl - margin(ttl);
        let wake = next.min(lost_at);
        tokio::select! {
            revoke = &mut stop => {
                if matches!(revoke, Ok(true)) {
                    match kv.lease_revoke(&lease).await {
                        Ok(()) => info!(lease = %lease, "lease revoked"),
                        Err(e) => warn!(lease = %lease, error = %e, "could not revoke lease; it will expire"),
                    }
                } else {
                    info!(lease = %lease, "lease abandoned; it will expire");
                }
                return;
            }
            () = tokio::time::sleep_until(wake) => {}
        }
        if Instant::now() >= lost_at {
            warn!(lease = %lease, "lease lost: no renewal confirmed in time");
            let _ = tx.send(LeaseState::Lost {
                lease: lease.clone(),
            });
            match regrant(&kv, ttl, retry_every, &mut stop).await {
                Some((new, sent)) => {
                    info!(old = %lease, lease = %new, "new lease granted after loss");
                    lease = new;
                    confirmed_sent = sent;
                    next = sent + renew_every;
                    let _ = tx.send(LeaseState::Live {
                        lease: lease.clone(),
                    });
                    continue;
                }
                None => return,
            }
        }
        let sent = Instant::now();
        // Never wait past the point where the lease must be called lost.
        match tokio::time::timeout_at(
            (sent + renew_every).min(lost_at),
            kv.lease_keepalive(&lease),
        )
        .await
        {
            Ok(Ok(_)) => {
                confirmed_sent = sent;
                next = sent + renew_every;
                if !matches!(&*tx.borrow(), LeaseState::Live { .. }) {
                    info!(lease = %lease, "lease renewals work again");
                    let _ = tx.send(LeaseState::Live {
                        lease: lease.clone(),
                    });
                }
                debug!(lease = %lease, "lease renewed");
            }
            Ok(Err(KvError::LeaseLost { .. })) => {
                warn!(lease = %lease, "the store says the lease is gone");
                // Force the loss path on the next turn.
                confirmed_sent = Instant::now() - ttl;
                next = Instant::now();
            }
            Ok(Err(e)) => {
                warn!(lease = %lease, error = %e, "lease renewal failed; retrying");
                let _ = tx.send(LeaseState::Expiring {
                    lease: lease.clone(),
                    deadline: lost_at,
                });
                next = Instant::now() + retry_every;
            }
            Err(_) => {
                warn!(lease = %lease, "lease renewal timed out; retrying");
                let _ = tx.send(LeaseState::Expiring {
                    lease: lease.clone(),
                    deadline: lost_at,
                });
                next = Instant::now() + retry_every;
            }
        }
    }
}

async fn regrant(
    kv: &Arc<dyn KvStore>,
    ttl: Duration,
    retry_every: Duration,
    stop: &mut oneshot::Receiver<bool>,
) -> Option<(LeaseId, Instant)> {
    loop {
        let sent = Instant::now();
        match tokio::time::timeout(ttl, kv.lease_grant(ttl)).await {
            Ok(Ok(lease)) => return Some((lease, sent)),
            Ok(Err(e)) => warn!(error = %e, "could not grant a new lease; retrying"),
            Err(_) => warn!("granting a new lease timed out; retrying"),
        }
        tokio::select! {
            _ = &mut *stop => return None,
            () = tokio::time::sleep(retry_every) => {}
        }
    }
}
