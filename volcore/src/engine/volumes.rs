//! Volumes: create (lock, storage, one fenced publish), get, list, remove, runtime
//! options.

use std::collections::BTreeMap;
use std::time::Duration;

use tracing::{debug, info, instrument, warn};

use super::*;

impl Volumes {
    /// Creates a volume from its policy and `options`: reserves the name, takes the locks
    /// and reads the policy in one transaction, creates and formats the storage, then
    /// publishes the record and runtime and releases the locks in one transaction — two
    /// round trips to the store in all.
    #[instrument(skip(self, options), fields(volume = %vref))]
    pub async fn create(
        &self,
        vref: &VolumeRef,
        options: &BTreeMap<String, String>,
    ) -> Result<VolumeInfo, EngineError> {
        let lease = self.lease()?;
        let vkey = self.keys.volume(vref);
        let checks = [
            TxnOp::Check {
                key: vkey.clone(),
                pre: Precondition::Absent,
            },
            TxnOp::Read {
                key: self.keys.policy(&vref.policy),
                pre: Precondition::Present,
            },
        ];
        let (held, reads) = self
            .op()
            .acquire_reading(
                &self.both(vref, LockReason::Create),
                &lease,
                self.timeout(),
                &checks,
            )
            .await
            .map_err(|e| self.map_lock(vref, e))?;
        crate::crash::point("create.after-lock");
        // The policy was read under the locks; a bad option or policy now releases them.
        let (volume, crud) = match self.prepare_create(vref, options, reads) {
            Ok(v) => v,
            Err(e) => {
                self.release_unrecorded(vref, &held).await;
                return Err(e);
            }
        };
        let spec = VolumeSpec::of(&volume, self.timeout());
        if let Some(d) = &crud {
            if let Err(e) = self.with_timeout("create", vref, d.create(&spec)).await {
                self.release_unrecorded(vref, &held).await;
                return Err(
                    if matches!(e.driver_error(), Some(DriverError::AlreadyExists { .. })) {
                        EngineError::LeftoverStorage {
                            volume: vref.clone(),
                        }
                    } else {
                        e
                    },
                );
            }
            crate::crash::point("create.after-storage");
            if let Err(e) = self.with_timeout("format", vref, d.format(&spec)).await {
                self.destroy_quietly(d.as_ref(), &spec).await;
                self.release_unrecorded(vref, &held).await;
                return Err(e);
            }
            crate::crash::point("create.after-format");
        }
        let undo = crud.as_ref().map(|d| (d.as_ref(), &spec));
        self.publish_new(vref, &volume, &volume.runtime, &held, undo, "creating")
            .await?;
        info!("volume created");
        let runtime_options = volume.runtime.clone();
        Ok(VolumeInfo {
            volume,
            runtime_options,
        })
    }

    /// The record a create will publish, from the policy entry its lock txn read.
    pub(super) fn prepare_create(
        &self,
        vref: &VolumeRef,
        options: &BTreeMap<String, String>,
        reads: Vec<Option<Entry>>,
    ) -> Result<(Volume, Option<Arc<dyn VolumeDriver>>), EngineError> {
        let policy_entry =
            reads
                .into_iter()
                .next()
                .flatten()
                .ok_or_else(|| EngineError::PolicyNotFound {
                    policy: vref.policy.clone(),
                })?;
        let policy = Policy::from_stored_json(&policy_entry.value)?;
        let mut volume =
            Volume::from_policy(&policy, vref.volume.clone(), options, self.now_millis())?;
        volume.policy_revision = Some(policy_entry.mod_rev);
        // Checked again here, not only at upload: the policy may predate the allowlist,
        // or an admin may have narrowed it since.
        if let Some(t) = volume.mkfs() {
            t.check_allowed(
                &volume.create.filesystem,
                &self.global.borrow().mkfs_allowlist(),
            )?;
        }
        let crud = volume
            .backends
            .crud
            .map(|b| self.driver(b))
            .transpose()?
            .cloned();
        self.driver(volume.backends.mount)?;
        Ok((volume, crud))
    }

    pub(super) async fn destroy_quietly(&self, d: &dyn VolumeDriver, spec: &VolumeSpec) {
        match self
            .with_timeout("destroy", &spec.volume, d.destroy(spec))
            .await
        {
            Ok(()) => info!(volume = %spec.volume, "storage made by a failed operation destroyed"),
            // The driver cleaned up after itself (Ceph removes the image of a failed mkfs).
            Err(e) if matches!(e.driver_error(), Some(DriverError::NotFound { .. })) => {
                debug!(volume = %spec.volume, "storage of the failed operation already gone")
            }
            Err(e) => {
                warn!(volume = %spec.volume, error = %e, "could not destroy storage made by a failed operation")
            }
        }
    }

    /// Publishes a new volume — its record (which must not exist) and its runtime
    /// options — and releases `held`, in one transaction fenced by those locks. When the
    /// answer is an error it settles whether the publish applied; when it did not, `undo`
    /// destroys the storage just made and a lost lock is [`EngineError::LockLost`].
    pub(super) async fn publish_new(
        &self,
        vref: &VolumeRef,
        volume: &Volume,
        runtime: &RuntimeOptions,
        held: &[HeldLock],
        undo: Option<(&dyn VolumeDriver, &VolumeSpec)>,
        doing: &'static str,
    ) -> Result<(), EngineError> {
        let ops = fenced(
            held,
            [
                TxnOp::Put {
                    key: self.keys.volume(vref),
                    value: encode(volume),
                    pre: Precondition::Absent,
                    lease: None,
                },
                TxnOp::Put {
                    key: self.keys.runtime(vref),
                    value: encode(runtime),
                    pre: Precondition::Any,
                    lease: None,
                },
            ],
        );
        let Err(e) = self.kv.txn(ops).await else {
            return Ok(());
        };
        match self.settle_publish(vref, volume, held, e).await {
            Settled::Committed => Ok(()),
            Settled::NotCommitted(e) => {
                // Lost our locks (or the store) after making storage: undo it.
                if let Some((d, spec)) = undo {
                    self.destroy_quietly(d, spec).await;
                }
                Err(match e {
                    KvError::Conflict { .. } => EngineError::LockLost {
                        volume: vref.clone(),
                        doing,
                    },
                    e => e.into(),
                })
            }
            Settled::Unknown(e) => Err(e),
        }
    }

    /// Decides what became of a publish (record + runtime + unlock) that failed with `err`.
    /// A conflict means our locks were gone, so the fenced publish cannot have applied. An
    /// unknown outcome (timeout, lost connection) is settled by releasing the locks with
    /// their fencing tokens and reading the record in one transaction: once the locks are
    /// gone a late publish can no longer apply, and the read says whether it did. Storage
    /// is destroyed only when the record is known not to exist.
    pub(super) async fn settle_publish(
        &self,
        vref: &VolumeRef,
        volume: &Volume,
        held: &[HeldLock],
        err: KvError,
    ) -> Settled {
        if !err.is_retryable() {
            self.release_unrecorded(vref, held).await;
            return Settled::NotCommitted(err);
        }
        warn!(error = %err, "publish outcome unknown; settling it before touching the storage");
        let vkey = self.keys.volume(vref);
        let mut ops = vec![TxnOp::Read {
            key: vkey.clone(),
            pre: Precondition::Any,
        }];
        ops.extend(held.iter().map(|h| TxnOp::Delete {
            key: h.key.clone(),
            pre: Precondition::CreateRevision(h.token),
        }));
        // Applies only with the locks, i.e. when the publish did not: then no record.
        ops.push(TxnOp::Delete {
            key: self.keys.epoch(vref),
            pre: Precondition::Any,
        });
        let deadline = tokio::time::Instant::now() + self.timeout();
        let mut pause = Duration::from_millis(50);
        loop {
            let res = match self.kv.txn(ops.clone()).await {
                // Our locks were still there (now released): the publish never applied.
                Ok(_) => return Settled::NotCommitted(err),
                // The locks are gone: the publish took them, or the lease ran out.
                Err(KvError::Conflict { .. }) => self.kv.get(&vkey).await,
                Err(e) => Err(e),
            };
            match res {
                Ok(Some(e)) if decode::<Volume>(&e).ok().as_ref() == Some(volume) => {
                    info!("the publish had committed");
                    return Settled::Committed;
                }
                Ok(_) => return Settled::NotCommitted(err),
                Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                    debug!(error = %e, "store still unreachable; settling the publish again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    return Settled::Unknown(EngineError::OutcomeUnknown {
                        volume: vref.clone(),
                        cause: e.to_string(),
                    })
                }
            }
        }
    }

    pub(super) async fn record(&self, vref: &VolumeRef) -> Result<(Volume, Entry), EngineError> {
        let e = self.kv.get(&self.keys.volume(vref)).await?.ok_or_else(|| {
            EngineError::VolumeNotFound {
                volume: vref.clone(),
            }
        })?;
        Ok((decode(&e)?, e))
    }

    /// A volume and its live runtime options.
    pub async fn get(&self, vref: &VolumeRef) -> Result<VolumeInfo, EngineError> {
        // Both reads at once: one round trip of latency.
        let rkey = self.keys.runtime(vref);
        let (record, runtime) = futures::join!(self.record(vref), self.kv.get(&rkey));
        let (volume, _) = record?;
        let runtime_options = match runtime? {
            Some(e) => decode(&e)?,
            None => volume.runtime.clone(),
        };
        Ok(VolumeInfo {
            volume,
            runtime_options,
        })
    }

    /// Every volume, or every volume of one policy, sorted by policy then name.
    pub async fn list(&self, policy: Option<&PolicyName>) -> Result<Vec<Volume>, EngineError> {
        let entries = self.kv.list(&self.keys.volumes(policy)).await?;
        entries.iter().map(decode).collect()
    }

    /// Removes a volume: waits up to `timeout` (default: the global timeout) for its
    /// locks, destroys the storage, then deletes the record. With `force`, storage and
    /// record are removed even while the volume is locked (its locks are cleared too).
    #[instrument(skip(self), fields(volume = %vref))]
    pub async fn remove(
        &self,
        vref: &VolumeRef,
        force: bool,
        timeout: Option<Duration>,
    ) -> Result<(), EngineError> {
        if force {
            return self.remove_forced(vref).await;
        }
        self.remove_checked(vref, timeout, Vec::new(), Vec::new())
            .await
    }

    /// [`Volumes::remove`] (not forced) with `checks` added to its lock transaction (one
    /// that fails is [`EngineError::Fenced`] and nothing is done) and `also` to the
    /// transaction that deletes the record: how the supervisor reclaims a volume only if
    /// it is still unused, and drops a dead host's mount record with it.
    pub async fn remove_checked(
        &self,
        vref: &VolumeRef,
        timeout: Option<Duration>,
        checks: Vec<TxnOp>,
        also: Vec<TxnOp>,
    ) -> Result<(), EngineError> {
        let lease = self.lease()?;
        let wait = timeout.unwrap_or_else(|| self.timeout());
        // The record is read in the transaction that takes the locks: one round trip to
        // lock and read, one to delete. Gone (now or while we waited): not found.
        let vkey = self.keys.volume(vref);
        let mut all = vec![TxnOp::Read {
            key: vkey.clone(),
            pre: Precondition::Present,
        }];
        all.extend(checks);
        let (held, reads) = match self
            .op()
            .acquire_reading(&self.both(vref, LockReason::Remove), &lease, wait, &all)
            .await
        {
            Ok(r) => r,
            Err(LockError::CheckFailed { key }) if key == vkey => {
                return Err(EngineError::VolumeNotFound {
                    volume: vref.clone(),
                })
            }
            Err(LockError::CheckFailed { key }) => return Err(EngineError::Fenced { key }),
            Err(e) => return Err(e.into()),
        };
        let result = match reads.into_iter().next().flatten() {
            Some(entry) => match decode::<Volume>(&entry) {
                Ok(volume) => self.remove_locked(vref, &volume, &entry, &held, also).await,
                Err(e) => Err(e),
            },
            None => Err(EngineError::VolumeNotFound {
                volume: vref.clone(),
            }),
        };
        if result.is_err() {
            self.release_quietly(&held).await;
        }
        result
    }

    pub(super) async fn remove_locked(
        &self,
        vref: &VolumeRef,
        volume: &Volume,
        entry: &Entry,
        held: &[HeldLock],
        also: Vec<TxnOp>,
    ) -> Result<(), EngineError> {
        crate::crash::point("remove.after-lock");
        if let Some(b) = volume.backends.crud {
            let d = self.driver(b)?.clone();
            let spec = VolumeSpec::of(volume, self.timeout());
            match self.with_timeout("destroy", vref, d.destroy(&spec)).await {
                Ok(()) => {}
                Err(e) if e.is_driver_not_found() => {
                    warn!("storage was already gone; removing the record")
                }
                Err(e) => return Err(e),
            }
            crate::crash::point("remove.after-destroy");
        }
        let ops = fenced(
            held,
            [TxnOp::Delete {
                key: entry.key.clone(),
                pre: Precondition::Revision(entry.mod_rev),
            }]
            .into_iter()
            .chain(self.side_keys(vref))
            .chain(also),
        );
        // The storage is gone now: keep trying to drop the record (an unanswered attempt
        // may have applied; then the next one meets no locks and no record).
        let deadline = tokio::time::Instant::now() + self.timeout();
        let mut pause = Duration::from_millis(50);
        let mut retried = false;
        loop {
            match self.kv.txn(ops.clone()).await {
                Ok(_) => break,
                Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                    debug!(error = %e, "deleting the record of a destroyed volume; retrying");
                    retried = true;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(KvError::Conflict { .. })
                    if retried && matches!(self.kv.get(&entry.key).await, Ok(None)) =>
                {
                    break
                }
                Err(e) => {
                    warn!(error = %e, "the storage was destroyed but the record could not be deleted; volcli check --repair drops it");
                    return Err(e.into());
                }
            }
        }
        info!("volume removed");
        Ok(())
    }

    /// Deletes of the keys a volume has besides its record and locks (runtime, epoch,
    /// slot record, signal, last use): they go with the record.
    fn side_keys(&self, vref: &VolumeRef) -> Vec<TxnOp> {
        [
            self.keys.runtime(vref),
            self.keys.epoch(vref),
            self.keys.schedule(vref),
            self.keys.snapshot_signal(vref),
            self.keys.last_used(vref),
        ]
        .into_iter()
        .map(|key| TxnOp::Delete {
            key,
            pre: Precondition::Any,
        })
        .collect()
    }

    pub(super) async fn remove_forced(&self, vref: &VolumeRef) -> Result<(), EngineError> {
        let (volume, entry) = self.record(vref).await?;
        if let Some(b) = volume.backends.crud {
            let d = self.driver(b)?.clone();
            let spec = VolumeSpec::of(&volume, self.timeout());
            match self.with_timeout("destroy", vref, d.destroy(&spec)).await {
                Ok(()) => {}
                Err(e) if e.is_driver_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let ops = vec![
            TxnOp::Delete {
                key: entry.key.clone(),
                pre: Precondition::Any,
            },
            TxnOp::Delete {
                key: self.keys.lock(LockKind::Mount, vref),
                pre: Precondition::Any,
            },
            TxnOp::Delete {
                key: self.keys.lock(LockKind::Op, vref),
                pre: Precondition::Any,
            },
        ]
        .into_iter()
        .chain(self.side_keys(vref))
        .collect();
        self.kv.txn(ops).await?;
        warn!("volume force-removed (storage, record and locks)");
        Ok(())
    }

    /// Deletes only the record (and runtime) of a volume; storage and locks are left.
    #[instrument(skip(self), fields(volume = %vref))]
    pub async fn force_remove_record(&self, vref: &VolumeRef) -> Result<(), EngineError> {
        let ops = vec![
            TxnOp::Delete {
                key: self.keys.volume(vref),
                pre: Precondition::Any,
            },
            TxnOp::Delete {
                key: self.keys.runtime(vref),
                pre: Precondition::Any,
            },
        ];
        self.record(vref).await?;
        self.kv.txn(ops).await?;
        warn!("volume record force-removed; storage kept");
        Ok(())
    }

    /// The runtime options in force.
    pub async fn runtime(&self, vref: &VolumeRef) -> Result<RuntimeOptions, EngineError> {
        Ok(self.get(vref).await?.runtime_options)
    }

    /// Validates and replaces a volume's runtime options (whole-object replace); plugins
    /// watching `runtime/` apply them.
    #[instrument(skip(self, json), fields(volume = %vref))]
    pub async fn set_runtime(
        &self,
        vref: &VolumeRef,
        json: &[u8],
    ) -> Result<RuntimeOptions, EngineError> {
        let r = RuntimeOptions::from_json(json)?;
        let (_, entry) = self.record(vref).await?;
        let ops = vec![
            TxnOp::Check {
                key: entry.key.clone(),
                pre: Precondition::Revision(entry.mod_rev),
            },
            TxnOp::Put {
                key: self.keys.runtime(vref),
                value: encode(&r),
                pre: Precondition::Any,
                lease: None,
            },
        ];
        match self.kv.txn(ops).await {
            Ok(_) => Ok(r),
            Err(KvError::Conflict { .. }) => Err(EngineError::VolumeNotFound {
                volume: vref.clone(),
            }),
            Err(e) => Err(e.into()),
        }
    }
}

/// `ops` in a transaction that applies only while every lock in `held` is still ours,
/// and releases them with it.
pub(super) fn fenced(held: &[HeldLock], ops: impl IntoIterator<Item = TxnOp>) -> Vec<TxnOp> {
    let mut all: Vec<TxnOp> = held.iter().map(HeldLock::fence).collect();
    all.extend(ops);
    all.extend(held.iter().map(|h| TxnOp::Delete {
        key: h.key.clone(),
        pre: Precondition::Any,
    }));
    all
}
