//! Snapshots, and copies of a snapshot into a new volume.

use tracing::{info, instrument};

use super::*;

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
        let name = snapshot_name(SystemTime::now());
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
        volume.created_at = now_millis();
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
