//! Maintenance sessions (`volcli use exec`) and the operators' view of locks.

use std::time::Duration;

use tracing::{info, instrument};

use super::*;

impl Volumes {
    /// Starts a maintenance session (`volcli use exec`): grants a lease of `ttl` for it and
    /// takes the volume's mount and op locks for `host` with it, waiting up to `wait`. The
    /// locks last while the caller renews the session ([`Self::renew_maintenance`]) and
    /// vanish with its lease if the caller dies.
    #[instrument(skip(self), fields(volume = %vref))]
    pub async fn begin_maintenance(
        &self,
        vref: &VolumeRef,
        host: &HostName,
        ttl: Duration,
        wait: Duration,
    ) -> Result<(LeaseId, Vec<HeldLock>), EngineError> {
        self.record(vref).await?;
        let lease = self.kv.lease_grant(ttl).await?;
        let marker = self.keys.maintenance(&lease);
        let put = self
            .kv
            .put(
                &marker,
                encode(&vref.to_string()),
                crate::kv::PutOpts::absent().with_lease(lease.clone()),
            )
            .await;
        if let Err(e) = put {
            let _ = self.kv.lease_revoke(&lease).await;
            return Err(e.into());
        }
        let locker = Locker::new(self.kv.clone(), self.keys.clone(), host.clone())
            .with_owner(format!("maintenance-{lease}"));
        match locker
            .acquire(&self.both(vref, LockReason::Maintenance), &lease, wait)
            .await
        {
            Ok(held) => {
                info!(session = %lease, host = %host, "maintenance started");
                Ok((lease, held))
            }
            Err(e) => {
                let _ = self.kv.lease_revoke(&lease).await;
                Err(e.into())
            }
        }
    }

    pub(super) async fn check_session(&self, session: &LeaseId) -> Result<(), EngineError> {
        match self.kv.get(&self.keys.maintenance(session)).await? {
            Some(_) => Ok(()),
            None => Err(EngineError::SessionGone {
                session: session.clone(),
                why: "does not exist (it ended, or its lease expired)",
            }),
        }
    }

    /// Renews a maintenance session; an ended one is an error.
    pub async fn renew_maintenance(&self, session: &LeaseId) -> Result<Duration, EngineError> {
        self.check_session(session).await?;
        match self.kv.lease_keepalive(session).await {
            Ok(ttl) => Ok(ttl),
            Err(KvError::LeaseLost { .. }) => Err(EngineError::SessionGone {
                session: session.clone(),
                why: "has expired; its locks are gone",
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Ends a maintenance session, releasing its locks.
    pub async fn end_maintenance(&self, session: &LeaseId) -> Result<(), EngineError> {
        self.check_session(session).await?;
        match self.kv.lease_revoke(session).await {
            Ok(()) | Err(KvError::LeaseLost { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every lock, or those of one kind.
    pub async fn locks(
        &self,
        kind: Option<LockKind>,
    ) -> Result<Vec<crate::lock::LockInfo>, EngineError> {
        Ok(self.locker.list(kind).await?)
    }

    /// Clears a volume's locks whoever holds them.
    pub async fn force_remove_locks(
        &self,
        vref: &VolumeRef,
    ) -> Result<Vec<LockHolder>, EngineError> {
        Ok(self
            .locker
            .force_remove(vref, &[LockKind::Mount, LockKind::Op])
            .await?)
    }
}
