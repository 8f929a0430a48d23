//! Snapshots, and copies of a snapshot into a new volume.

use tracing::{info, instrument, warn};

use super::volumes::fenced;
use super::*;
use crate::policy::SnapshotConfig;

/// A snapshot taken for someone who fences its work (the supervisor): checks that go into
/// the lock transaction and the release, writes that go with the release, and the
/// pruning that runs under the same lock.
#[derive(Clone, Debug, Default)]
pub struct SnapshotPlan {
    /// The snapshot to take; `None` only prunes.
    pub name: Option<SnapshotName>,
    /// The create revision of the volume record the plan was made for: another record (or
    /// none) is `VolumeNotFound`, and nothing is done.
    pub record: Revision,
    /// Checks made in the lock transaction and again in the release (e.g. the leader key
    /// at its create revision); one that fails is [`EngineError::Fenced`].
    pub checks: Vec<TxnOp>,
    /// Written with the release once the snapshot is there (taken now or before).
    pub writes: Vec<TxnOp>,
    /// Pruned by this schedule after the snapshot, under the same lock.
    pub retention: Option<SnapshotConfig>,
    /// How long to wait for the volume's `op` lock (default: the global timeout).
    pub wait: Option<Duration>,
}

/// What a [`SnapshotPlan`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotReport {
    /// The snapshot, if the plan named one.
    pub snapshot: Option<SnapshotName>,
    /// It existed already (the same slot taken before a crash or by a deposed leader).
    pub existed: bool,
    /// Snapshots pruned.
    pub pruned: Vec<SnapshotName>,
    /// Why pruning stopped short, if it did (the snapshot still counts as taken).
    pub prune_error: Option<String>,
}

impl Volumes {
    pub(super) fn snapshot_driver<'a>(
        &self,
        volume: &Volume,
        d: &'a Arc<dyn VolumeDriver>,
    ) -> Result<&'a dyn SnapshotDriver, EngineError> {
        let no = || EngineError::NoSnapshots {
            volume: volume.reference(),
            backend: volume.backends.mount.to_string(),
        };
        if volume.backends.snapshot.is_none() {
            return Err(no());
        }
        d.snapshots().ok_or_else(no)
    }

    /// Takes a snapshot now (under the volume's `op` lock); returns its name.
    #[instrument(skip(self), fields(volume = %vref))]
    pub async fn snapshot(&self, vref: &VolumeRef) -> Result<SnapshotName, EngineError> {
        let (volume, _) = self.record(vref).await?;
        let d = self
            .driver(volume.backends.snapshot.unwrap_or(volume.backends.mount))?
            .clone();
        let sd = self.snapshot_driver(&volume, &d)?;
        let lease = self.lease()?;
        let held = self
            .op()
            .acquire(
                &[LockRequest::new(
                    LockKind::Op,
                    vref.clone(),
                    LockReason::Snapshot,
                )],
                &lease,
                self.timeout(),
            )
            .await?;
        crate::crash::point("snapshot.after-lock");
        let name = snapshot_name(self.now_millis());
        let spec = VolumeSpec::of(&volume, self.timeout());
        let res = self
            .with_timeout("snapshot", vref, sd.create_snapshot(&spec, &name))
            .await;
        crate::crash::point("snapshot.after-snapshot");
        self.release_quietly(&held).await;
        res?;
        info!(snapshot = %name, "snapshot taken");
        Ok(name)
    }

    /// Takes (or only prunes) as `plan` says, under the volume's `op` lock; see
    /// [`SnapshotPlan`]. Two store round trips: lock (with the checks), release (with the
    /// checks and the writes).
    #[instrument(skip(self, volume, plan), fields(volume = %volume.reference()))]
    pub async fn snapshot_planned(
        &self,
        volume: &Volume,
        plan: SnapshotPlan,
    ) -> Result<SnapshotReport, EngineError> {
        let vref = volume.reference();
        let d = self
            .driver(volume.backends.snapshot.unwrap_or(volume.backends.mount))?
            .clone();
        let sd = self.snapshot_driver(volume, &d)?;
        let lease = self.lease()?;
        let vkey = self.keys.volume(&vref);
        let mut checks = plan.checks.clone();
        checks.push(TxnOp::Check {
            key: vkey.clone(),
            pre: Precondition::CreateRevision(plan.record),
        });
        let held = match self
            .op()
            .acquire_checked(
                &[LockRequest::new(
                    LockKind::Op,
                    vref.clone(),
                    LockReason::Snapshot,
                )],
                &lease,
                plan.wait.unwrap_or_else(|| self.timeout()),
                &checks,
            )
            .await
        {
            Ok(h) => h,
            Err(LockError::CheckFailed { key }) if key == vkey => {
                return Err(EngineError::VolumeNotFound { volume: vref })
            }
            Err(LockError::CheckFailed { key }) => return Err(EngineError::Fenced { key }),
            Err(e) => return Err(e.into()),
        };
        crate::crash::point("snapshot.after-lock");
        let spec = VolumeSpec::of(volume, self.timeout());
        let mut report = SnapshotReport {
            snapshot: plan.name.clone(),
            ..Default::default()
        };
        if let Some(name) = &plan.name {
            match self
                .with_timeout("snapshot", &vref, sd.create_snapshot(&spec, name))
                .await
            {
                Ok(()) => info!(snapshot = %name, "snapshot taken"),
                Err(EngineError::Driver { source, .. })
                    if matches!(*source, DriverError::AlreadyExists { .. }) =>
                {
                    info!(snapshot = %name, "snapshot was taken before; not taking it twice");
                    report.existed = true;
                }
                Err(e) => {
                    self.release_quietly(&held).await;
                    return Err(e);
                }
            }
            crate::crash::point("snapshot.after-snapshot");
        }
        if let Some(cfg) = plan.retention.as_ref().filter(|c| c.prunes()) {
            if let Err(e) = self.prune_locked(&vref, sd, &spec, cfg, &mut report).await {
                warn!(error = %e, "pruning snapshots stopped short; the next run continues");
                report.prune_error = Some(e.to_string());
            }
        }
        checks.extend(plan.writes);
        match self.kv.txn(fenced(&held, checks)).await {
            Ok(_) => Ok(report),
            Err(e) => {
                self.release_quietly(&held).await;
                match e {
                    KvError::Conflict { key, .. }
                        if key != vkey && !held.iter().any(|h| h.key == key) =>
                    {
                        Err(EngineError::Fenced { key })
                    }
                    KvError::Conflict { .. } => Err(EngineError::LockLost {
                        volume: vref,
                        doing: "snapshotting",
                    }),
                    other => Err(other.into()),
                }
            }
        }
    }

    async fn prune_locked(
        &self,
        vref: &VolumeRef,
        sd: &dyn SnapshotDriver,
        spec: &VolumeSpec,
        cfg: &SnapshotConfig,
        report: &mut SnapshotReport,
    ) -> Result<(), EngineError> {
        let all = self
            .with_timeout("list snapshots", vref, sd.list_snapshots(spec))
            .await?;
        for snap in crate::schedule::prune(&all, cfg) {
            match self
                .with_timeout("remove snapshot", vref, sd.remove_snapshot(spec, &snap))
                .await
            {
                Ok(()) => {}
                Err(EngineError::Driver { source, .. })
                    if matches!(*source, DriverError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            info!(snapshot = %snap, "snapshot pruned");
            report.pruned.push(snap);
        }
        Ok(())
    }

    /// Asks the supervisor for a snapshot of `vref` now (`snapshot-signals/<p>/<v>`);
    /// refused unless its runtime says `signal: true` and its backend takes snapshots.
    /// Returns the request time, which names the snapshot. One read, one transaction
    /// (which checks that the record is still the one read).
    #[instrument(skip(self), fields(volume = %vref))]
    pub async fn signal_snapshot(
        &self,
        vref: &VolumeRef,
        by: &str,
    ) -> Result<SystemTime, EngineError> {
        let (volume, entry) = self.record(vref).await?;
        let d = self
            .driver(volume.backends.snapshot.unwrap_or(volume.backends.mount))?
            .clone();
        self.snapshot_driver(&volume, &d)?;
        let runtime: RuntimeOptions = match self.kv.get(&self.keys.runtime(vref)).await? {
            Some(e) => decode(&e)?,
            None => volume.runtime.clone(),
        };
        if !runtime.signal {
            return Err(EngineError::SignalNotAllowed {
                volume: vref.clone(),
            });
        }
        let at = self.now_millis();
        let rec = crate::supervisor::SignalRecord {
            requested_at: at,
            by: by.to_owned(),
        };
        let ops = vec![
            TxnOp::Check {
                key: entry.key.clone(),
                pre: Precondition::Revision(entry.mod_rev),
            },
            TxnOp::Put {
                key: self.keys.snapshot_signal(vref),
                value: encode(&rec),
                pre: Precondition::Any,
                lease: None,
            },
        ];
        match self.kv.txn(ops).await {
            Ok(_) => {
                info!("snapshot signalled to the supervisor");
                Ok(at)
            }
            Err(KvError::Conflict { .. }) => Err(EngineError::VolumeNotFound {
                volume: vref.clone(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// A volume's snapshots, oldest first.
    pub async fn snapshots(&self, vref: &VolumeRef) -> Result<Vec<SnapshotName>, EngineError> {
        let (volume, _) = self.record(vref).await?;
        let d = self
            .driver(volume.backends.snapshot.unwrap_or(volume.backends.mount))?
            .clone();
        let sd = self.snapshot_driver(&volume, &d)?;
        let spec = VolumeSpec::of(&volume, self.timeout());
        self.with_timeout("list snapshots", vref, sd.list_snapshots(&spec))
            .await
    }

    /// Makes volume `target` (same policy) from snapshot `snap` of `source`. The source's
    /// `op` lock and the target's locks are held; the source may stay mounted. A failed
    /// copy leaves no record behind.
    #[instrument(skip(self), fields(volume = %source))]
    pub async fn copy(
        &self,
        source: &VolumeRef,
        snap: &SnapshotName,
        target: &VolumeName,
    ) -> Result<VolumeInfo, EngineError> {
        if &source.volume == target {
            return Err(EngineError::BadRequest(format!(
                "cannot copy volume {source} onto itself"
            )));
        }
        let tref = VolumeRef::new(source.policy.clone(), target.clone());
        let (src, _) = self.record(source).await?;
        let d = self
            .driver(src.backends.snapshot.unwrap_or(src.backends.mount))?
            .clone();
        let sd = self.snapshot_driver(&src, &d)?;
        let lease = self.lease()?;
        let mut reqs = self.both(&tref, LockReason::Copy);
        reqs.push(LockRequest::new(
            LockKind::Op,
            source.clone(),
            LockReason::Copy,
        ));
        let tkey = self.keys.volume(&tref);
        let held = self
            .op()
            .acquire_checked(
                &reqs,
                &lease,
                self.timeout(),
                &[TxnOp::Check {
                    key: tkey.clone(),
                    pre: Precondition::Absent,
                }],
            )
            .await
            .map_err(|e| self.map_lock(&tref, e))?;
        crate::crash::point("copy.after-lock");
        let mut volume = src.clone();
        volume.name = target.clone();
        volume.created_at = self.now_millis();
        let sspec = VolumeSpec::of(&src, self.timeout());
        let tspec = VolumeSpec::of(&volume, self.timeout());
        if let Err(e) = self
            .with_timeout("copy", source, sd.copy_snapshot(&sspec, snap, &tspec))
            .await
        {
            self.release_unrecorded(&tref, &held).await;
            return Err(e);
        }
        crate::crash::point("copy.after-copy");
        let runtime = match self.kv.get(&self.keys.runtime(source)).await? {
            Some(e) => decode(&e)?,
            None => src.runtime.clone(),
        };
        let crud = volume
            .backends
            .crud
            .and_then(|b| self.driver(b).ok())
            .cloned();
        let undo = crud.as_ref().map(|d| (d.as_ref(), &tspec));
        self.publish_new(&tref, &volume, &runtime, &held, undo, "copying")
            .await?;
        info!(snapshot = %snap, target = %tref, "volume copied from snapshot");
        Ok(VolumeInfo {
            volume,
            runtime_options: runtime,
        })
    }
}
