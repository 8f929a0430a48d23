//! The host side of `check`: this host's mounts against its mount records.

use std::collections::BTreeSet;

use tracing::{info, warn};

use super::{lock, HostMounts, MountLock, MountView};
use crate::check::{CheckReport, Finding, FindingKind, Fix, Outcome};
use crate::driver::{Mount, VolumeSpec};
use crate::name::VolumeRef;
use crate::policy::BackendKind;
use crate::volume::Volume;

/// Every mount the drivers report on this host, with its backend.
pub(super) async fn listed(me: &HostMounts) -> Result<Vec<(BackendKind, Mount)>, String> {
    let mut out = Vec::new();
    for b in me.inner.drivers.backends() {
        if let Some(md) = me.inner.drivers.get(b).and_then(|d| d.mounts()) {
            let list = tokio::time::timeout(me.timeout(), md.mounted())
                .await
                .map_err(|_| format!("{b}: listing mounts timed out"))?
                .map_err(|e| format!("{b}: {e}"))?;
            out.extend(list.into_iter().map(|m| (b, m)));
        }
    }
    Ok(out)
}

impl HostMounts {
    /// Compares this host's mounts with its mount records: a mount at this host's mount
    /// point that no record names (a mount that died before it published) and a record
    /// whose mount is gone. With `repair` the first is unmounted — nobody was told it is
    /// mounted and this host holds no lock for it — and the second is torn down. Each
    /// volume is checked under its own guard, so a mount in progress is never touched.
    pub async fn check(&self, repair: bool) -> CheckReport {
        let report = self.check_here(repair).await;
        // What the cluster check shows for this host: what is left now.
        let left = if repair {
            self.check_here(false).await
        } else {
            report.clone()
        };
        self.publish(&left).await;
        report
    }

    /// Publishes `report` as this host's last check (`checks/<host>`, on the lease: a
    /// dead host's report goes with it), for `volcli check` to show.
    pub(super) async fn publish(&self, report: &CheckReport) {
        let Some(lease) = self.inner.lease.borrow().usable().cloned() else {
            return;
        };
        let Ok(value) = serde_json::to_vec(report) else {
            return;
        };
        let key = self.inner.keys.host_check(self.host());
        let opts = crate::kv::PutOpts::default().with_lease(lease);
        if let Err(e) = self.inner.kv.put(&key, value, opts).await {
            tracing::debug!(error = %e, "could not publish this host's check");
        }
    }

    async fn check_here(&self, repair: bool) -> CheckReport {
        let mut report = CheckReport {
            repaired: repair,
            ..CheckReport::default()
        };
        let mounts = match listed(self).await {
            Ok(m) => m,
            Err(e) => {
                report
                    .unchecked
                    .push(format!("mounts on host {}: {e}", self.host()));
                return report;
            }
        };
        let host = self.host().clone();
        let mounted: BTreeSet<VolumeRef> = mounts.iter().map(|(_, m)| m.volume.clone()).collect();
        for (b, m) in &mounts {
            let v = &m.volume;
            // Only this host's mount point: another host on this machine (tests, or two
            // labels) owns its own.
            if m.path != self.mount_point(v) {
                continue;
            }
            let guard = self.guard(v);
            let _g = guard.lock().await;
            if let Some(view) = self.mounted(v) {
                if let Some(f) = self.stale(*b, m, &view, repair).await {
                    report.findings.push(f);
                }
                continue;
            }
            let mut f = Finding::new(
                FindingKind::UnrecordedMount,
                Some(v.clone()),
                format!(
                    "{v} is mounted at {} by backend {b}, but no mount record names it (a mount that did not finish); this host holds no lock for it",
                    m.path.display()
                ),
                format!("unmount {} and detach it", m.path.display()),
                Fix::Unmount {
                    path: m.path.clone(),
                },
            )
            .on_host(&host);
            if repair {
                f.outcome = Some(self.unmount_unrecorded(*b, m).await);
            }
            report.findings.push(f);
        }
        let records: Vec<(VolumeRef, MountView)> = lock(&self.inner.mounted)
            .iter()
            .map(|(v, m)| (v.clone(), m.clone()))
            .collect();
        for (v, _) in records {
            if mounted.contains(&v) {
                continue;
            }
            let guard = self.guard(&v);
            let _g = guard.lock().await;
            let Some(m) = self.mounted(&v) else { continue };
            let mut f = Finding::new(
                FindingKind::MissingMount,
                Some(v.clone()),
                format!(
                    "this host's mount record of {v} says it is mounted at {}, but it is not",
                    m.record.path.display()
                ),
                "drop the record and release the volume's locks".to_owned(),
                Fix::DropMount,
            )
            .on_host(&host)
            .at_key(&self.record_key(&v));
            if repair {
                self.drop_missing(&v, &m).await;
                f.outcome = Some(Outcome::Repaired);
            }
            report.findings.push(f);
        }
        report.sort();
        report
    }

    /// Tears down the store state of a record whose mount is gone (the caller holds the
    /// volume's guard).
    pub(super) async fn drop_missing(&self, v: &VolumeRef, m: &MountView) {
        warn!(volume = %v, "mount record without a mount (crash?); dropping it");
        let held = match &m.lock {
            MountLock::Held(h) | MountLock::Suspended(h) if h.token != 0 => Some(h.clone()),
            _ => None,
        };
        if held.is_some() {
            if let Ok(d) = self.driver(&m.volume) {
                if let Some(md) = d.mounts() {
                    self.release_claim(md, &self.spec(&m.volume)).await;
                }
            }
        }
        self.set(v, None);
        self.teardown_store(v, held).await;
    }

    /// A recorded mount that does not answer, as a finding; with `repair` it is mounted
    /// again (the driver detaches a stale mount first). The caller holds the guard.
    async fn stale(
        &self,
        b: BackendKind,
        m: &Mount,
        view: &MountView,
        repair: bool,
    ) -> Option<Finding> {
        let v = &m.volume;
        let md = self.inner.drivers.get(b).and_then(|d| d.mounts())?;
        let why = match tokio::time::timeout(self.timeout(), md.probe(&m.path)).await {
            Ok(Ok(())) => return None,
            Ok(Err(why)) => why,
            Err(_) => "probing it did not finish".to_owned(),
        };
        let mut f = Finding::new(
            FindingKind::StaleMount,
            Some(v.clone()),
            format!(
                "{v} is mounted at {} but does not answer: {why}",
                m.path.display()
            ),
            "mount it again (--repair, or the next mount of it, detaches and remounts)".to_owned(),
            Fix::Remount,
        )
        .on_host(self.host());
        if repair {
            let spec = self.spec(&view.volume);
            f.outcome = Some(
                match self.within("mount", v, md.mount(&spec, &m.path)).await {
                    Ok(_) => {
                        info!(volume = %v, "stale mount remounted");
                        Outcome::Repaired
                    }
                    Err(e) => Outcome::Failed {
                        error: e.to_string(),
                    },
                },
            );
        }
        Some(f)
    }

    /// Unmounts a mount no record names (the caller holds the volume's guard).
    async fn unmount_unrecorded(&self, b: BackendKind, m: &Mount) -> Outcome {
        let v = &m.volume;
        let Some(md) = self.inner.drivers.get(b).and_then(|d| d.mounts()) else {
            return Outcome::Failed {
                error: format!("backend {b} cannot unmount"),
            };
        };
        // The record says how to address the storage; without one, the name does.
        let spec = match self.inner.kv.get(&self.inner.keys.volume(v)).await {
            Ok(Some(e)) => match serde_json::from_slice::<Volume>(&e.value) {
                Ok(vol) => self.spec(&vol),
                Err(_) => VolumeSpec::bare(v, Default::default(), self.timeout()),
            },
            _ => match self.inner.catalog.get(v) {
                Some(info) => self.spec(&info.volume),
                None => VolumeSpec::bare(v, Default::default(), self.timeout()),
            },
        };
        if let Err(e) = self.within("unmount", v, md.unmount(&spec, &m.path)).await {
            return Outcome::Failed {
                error: e.to_string(),
            };
        }
        // Only this host's backend lock is dropped; another holder's is left alone.
        self.release_claim(md, &spec).await;
        info!(volume = %v, path = %m.path.display(), "unrecorded mount unmounted");
        Outcome::Repaired
    }
}
