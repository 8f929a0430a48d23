//! Finding and repairing what a crash left (`volcore check`): storage without a record,
//! records without storage, locks and mount records of processes that are gone, keys of
//! removed volumes, and — on a host — mounts nobody recorded.
//!
//! A check only reads. A repair re-verifies every finding at the moment it fixes it: it
//! takes the volume's locks (with the condition that made it a finding checked in the
//! same transaction) or deletes a key only at the exact revision the check saw, so a
//! finding that raced with a live operation is skipped, never "fixed" under it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::driver::{DriverError, VolumeSpec};
use crate::engine::{EngineError, Volumes};
use crate::hosts::HostRecord;
use crate::kv::{Entry, KvError, Precondition, Revision, TxnOp};
use crate::lock::{HeldLock, LockError, LockHolder, LockReason};
use crate::name::{HostName, VolumeRef};
use crate::policy::BackendKind;
use crate::volume::Volume;

/// What kind of leftover a finding is.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum FindingKind {
    /// Storage (an image, an image file, a partial copy) that no volume record names: a
    /// create or copy that died before it published.
    OrphanStorage,
    /// A volume record whose storage is gone: a remove that died after destroying it.
    MissingStorage,
    /// A lock whose holder is gone: its host has no live record, or that record is of
    /// another machine or a later process.
    StaleLock,
    /// A host's mount record of a host that is not running, or of a removed volume.
    StaleMountRecord,
    /// A `runtime/`, `epochs/`, `schedules/`, `snapshot-signals/` or `used/` key of a volume
    /// that has no record.
    OrphanKey,
    /// A volume mounted on this host that no mount record names: a mount that died
    /// before it published. Nobody was told it is mounted, and this host holds no lock
    /// for it, so it must not stay.
    UnrecordedMount,
    /// A mount record of this host whose mount is gone.
    MissingMount,
    /// A recorded mount that does not answer (NFS: a stale handle, a server that stopped
    /// answering); remounting it repairs it.
    StaleMount,
    /// A record that cannot be decoded; never repaired automatically.
    Corrupt,
}

impl FindingKind {
    /// The kind's name in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OrphanStorage => "orphan-storage",
            Self::MissingStorage => "missing-storage",
            Self::StaleLock => "stale-lock",
            Self::StaleMountRecord => "stale-mount-record",
            Self::OrphanKey => "orphan-key",
            Self::UnrecordedMount => "unrecorded-mount",
            Self::MissingMount => "missing-mount",
            Self::StaleMount => "stale-mount",
            Self::Corrupt => "corrupt",
        }
    }
}

impl std::fmt::Display for FindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a repair did with one finding.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Outcome {
    /// Fixed.
    Repaired,
    /// Not touched, and why (it changed since the check, or needs a person).
    Skipped {
        /// Why.
        why: String,
    },
    /// The fix was tried and failed.
    Failed {
        /// The error.
        error: String,
    },
}

/// How a finding is fixed (kept out of the wire format; the text says it in words).
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum Fix {
    /// Destroy storage that has no record (under the volume's locks, record absent).
    Destroy {
        backend: BackendKind,
        params: BTreeMap<String, String>,
    },
    /// Delete a record whose storage is gone (under its locks, at its revision).
    DropRecord { revision: Revision },
    /// Delete one key at exactly the revision seen; with `volume_absent`, only while the
    /// volume has no record.
    DeleteKey {
        key: String,
        revision: Revision,
        volume_absent: bool,
    },
    /// Host side: unmount a mount nobody recorded.
    Unmount { path: std::path::PathBuf },
    /// Host side: drop a record whose mount is gone.
    DropMount,
    /// Host side: mount a stale mount again.
    Remount,
    /// Nothing automatic.
    None,
}

/// One mismatch between what the store says and what exists.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Finding {
    /// Its kind.
    pub kind: FindingKind,
    /// The volume it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeRef>,
    /// The host it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostName>,
    /// The store key it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What is wrong.
    pub detail: String,
    /// The exact fix (what `--repair` does, or what a person must do).
    pub fix: String,
    /// Whether `--repair` applies the fix.
    pub repairable: bool,
    /// What the repair did (absent on a dry run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(skip, default = "no_fix")]
    pub(crate) how: Fix,
}

fn no_fix() -> Fix {
    Fix::None
}

impl Finding {
    pub(crate) fn new(
        kind: FindingKind,
        volume: Option<VolumeRef>,
        detail: String,
        fix: String,
        how: Fix,
    ) -> Self {
        Self {
            kind,
            volume,
            host: None,
            key: None,
            detail,
            fix,
            repairable: how != Fix::None,
            outcome: None,
            how,
        }
    }

    pub(crate) fn on_host(mut self, h: &HostName) -> Self {
        self.host = Some(h.clone());
        self
    }

    pub(crate) fn of_volume(mut self, v: &VolumeRef) -> Self {
        self.volume = Some(v.clone());
        self
    }

    pub(crate) fn at_key(mut self, k: &str) -> Self {
        self.key = Some(k.to_owned());
        self
    }
}

/// The result of a check (and of its repair).
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckReport {
    /// Every mismatch, by kind then volume.
    pub findings: Vec<Finding>,
    /// What could not be checked (a backend that did not answer, …): a report with
    /// entries here is not a clean bill of health.
    pub unchecked: Vec<String>,
    /// Whether the fixes were applied (`false`: a dry run).
    pub repaired: bool,
}

impl CheckReport {
    /// Nothing found and everything checked.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty() && self.unchecked.is_empty()
    }

    /// Findings a repair left in place (skipped or failed; or every one on a dry run).
    pub fn remaining(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.outcome != Some(Outcome::Repaired))
            .count()
    }

    /// Adds another report's findings (a host's to the cluster's).
    pub fn merge(&mut self, other: CheckReport) {
        self.findings.extend(other.findings);
        self.unchecked.extend(other.unchecked);
        self.repaired |= other.repaired;
        self.sort();
    }

    pub(crate) fn sort(&mut self) {
        self.findings.sort_by(|a, b| {
            (a.kind, &a.volume, &a.host, &a.key).cmp(&(b.kind, &b.volume, &b.host, &b.key))
        });
    }

    /// The report for people: one line per finding with its fix, then what was not
    /// checked.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.findings.is_empty() {
            out.push_str("no leftovers found\n");
        }
        for f in &self.findings {
            let what = match (&f.volume, &f.host) {
                (Some(v), Some(h)) => format!("{v} on {h}"),
                (Some(v), None) => v.to_string(),
                (None, Some(h)) => format!("host {h}"),
                (None, None) => f.key.clone().unwrap_or_default(),
            };
            let _ = writeln!(out, "{:<19} {what}: {}", f.kind.as_str(), f.detail);
            let verdict = match &f.outcome {
                None if f.repairable => format!("fix (--repair does it): {}", f.fix),
                None => format!("fix (by hand): {}", f.fix),
                Some(Outcome::Repaired) => format!("repaired: {}", f.fix),
                Some(Outcome::Skipped { why }) => format!("skipped: {why}"),
                Some(Outcome::Failed { error }) => format!("repair failed: {error}"),
            };
            let _ = writeln!(out, "{:<19} {verdict}", "");
        }
        for u in &self.unchecked {
            let _ = writeln!(out, "not checked: {u}");
        }
        out
    }
}

/// Why a lock's holder is gone, if it is.
fn stale_holder(
    h: &LockHolder,
    hosts: &BTreeMap<HostName, HostRecord>,
    sessions: &BTreeSet<String>,
) -> Option<String> {
    if let Some(session) = h.owner.strip_prefix("maintenance-") {
        return (!sessions.contains(session))
            .then(|| format!("its maintenance session {session} has ended"));
    }
    // Engine operations carry no host identity; their locks end with their daemon's lease.
    let id = h.host_id.as_deref()?;
    match hosts.get(&h.host) {
        None => Some(format!(
            "host {} is not running (no live host record)",
            h.host
        )),
        Some(r) if r.host_id != id => Some(format!(
            "host label {} now belongs to another machine (host id {}, the lock's is {id})",
            h.host, r.host_id
        )),
        Some(r) => match h.instance.as_deref() {
            Some(i) if i != r.instance => Some(format!(
                "the process that took it ({i}) is gone; {} now runs {}",
                h.host, r.instance
            )),
            _ => None,
        },
    }
}

impl Volumes {
    /// Compares the store with the backends and with itself, and with `repair` fixes
    /// what is safe to fix. Storage is listed before the store is read, so an operation
    /// that runs meanwhile shows up as locked (and is left alone), not as a leftover.
    pub async fn check(&self, repair: bool) -> Result<CheckReport, EngineError> {
        let mut report = CheckReport::default();
        let mut stored: BTreeMap<BackendKind, BTreeMap<VolumeRef, BTreeMap<String, String>>> =
            BTreeMap::new();
        // Why a backend's storage could not be listed; reported only if this
        // installation uses the backend (a Ceph driver with no cluster is no gap).
        let mut unlisted: Vec<(BackendKind, String)> = Vec::new();
        let listings = self.drivers().backends().into_iter().filter_map(|b| {
            let d = self.driver(b).ok()?.clone();
            let timeout = self.timeout();
            Some(async move { (b, tokio::time::timeout(timeout, d.inventory()).await) })
        });
        for (b, res) in futures::future::join_all(listings).await {
            match res {
                Ok(Ok(Some(list))) => {
                    stored.insert(b, list.into_iter().map(|s| (s.volume, s.params)).collect());
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => unlisted.push((b, format!("listing failed: {e}"))),
                Err(_) => unlisted.push((
                    b,
                    format!("listing did not finish within {:?}", self.timeout()),
                )),
            }
        }
        let k = self.keys();
        let kv = self.kv();
        let prefixes = [
            k.volumes(None),
            k.runtimes(),
            k.epochs(),
            k.locks(None),
            k.all_mounts(),
            k.hosts(),
            k.maintenances(),
            k.policies(),
            k.host_checks(),
            k.schedules(),
            k.snapshot_signals(),
            k.used_dir(),
        ];
        let mut lists = futures::future::try_join_all(prefixes.iter().map(|p| kv.list(p)))
            .await?
            .into_iter();
        let mut next = || lists.next().unwrap_or_default();
        let (vols, runtimes, epochs, locks, mounts, hosts, sessions) =
            (next(), next(), next(), next(), next(), next(), next());
        // Storage is attributed to this installation by its policy: a backend shared with
        // another store prefix holds volumes of policies this one does not know.
        let policy_entries = next();
        let policies: BTreeSet<String> = policy_entries
            .iter()
            .filter_map(|e| e.key.strip_prefix(&k.policies()).map(str::to_owned))
            .collect();
        let host_reports = next();
        let (schedules, signals, used_keys) = (next(), next(), next());
        let mut used: BTreeSet<BackendKind> = policy_entries
            .iter()
            .filter_map(|e| crate::policy::Policy::from_stored_json(&e.value).ok())
            .filter_map(|p| p.backends.crud)
            .collect();
        let f = &mut report.findings;
        let corrupt = |e: &Entry, what: &str, err: &dyn std::fmt::Display| {
            Finding::new(
                FindingKind::Corrupt,
                None,
                format!("{what} cannot be read: {err}"),
                format!(
                    "inspect the key and rewrite or delete it (etcdctl get {})",
                    e.key
                ),
                Fix::None,
            )
            .at_key(&e.key)
        };
        let mut records: BTreeMap<VolumeRef, (Option<Volume>, Entry)> = BTreeMap::new();
        for e in vols {
            let Some(v) = k.parse_volume_key("volumes", &e.key) else {
                continue;
            };
            let vol = match serde_json::from_slice::<Volume>(&e.value) {
                Ok(vol) => Some(vol),
                Err(err) => {
                    f.push(corrupt(&e, "the volume record", &err).of_volume(&v));
                    None
                }
            };
            records.insert(v, (vol, e));
        }
        used.extend(
            records
                .values()
                .filter_map(|(vol, _)| vol.as_ref().and_then(|v| v.backends.crud)),
        );
        for (b, why) in unlisted {
            if used.contains(&b) {
                report
                    .unchecked
                    .push(format!("storage of backend {b}: {why}"));
            }
        }
        let f = &mut report.findings;
        let mut live_hosts = BTreeMap::new();
        for e in &hosts {
            match serde_json::from_slice::<HostRecord>(&e.value) {
                Ok(r) => {
                    live_hosts.insert(r.host.clone(), r);
                }
                Err(err) => f.push(corrupt(e, "the host record", &err)),
            }
        }
        let sessions: BTreeSet<String> = sessions
            .iter()
            .filter_map(|e| e.key.rsplit('/').next().map(str::to_owned))
            .collect();
        // Volumes some live holder has locked: an operation is running on them.
        let mut busy = BTreeSet::new();
        for e in &locks {
            let Some((kind, v)) = k.parse_lock(&e.key) else {
                continue;
            };
            let holder = match serde_json::from_slice::<LockHolder>(&e.value) {
                Ok(h) => h,
                Err(err) => {
                    f.push(corrupt(e, "the lock", &err).of_volume(&v));
                    busy.insert(v);
                    continue;
                }
            };
            match stale_holder(&holder, &live_hosts, &sessions) {
                Some(why) => f.push(
                    Finding::new(
                        FindingKind::StaleLock,
                        Some(v.clone()),
                        format!("the {kind} lock (held by {}, {}) is stale: {why}", holder.host, holder.reason),
                        format!("delete the lock (as volcli use force-remove {v} would); it is deleted only if it is still the one seen"),
                        Fix::DeleteKey { key: e.key.clone(), revision: e.mod_rev, volume_absent: false },
                    )
                    .on_host(&holder.host)
                    .at_key(&e.key),
                ),
                None => {
                    busy.insert(v);
                }
            }
        }
        for (b, list) in &stored {
            for (v, params) in list {
                if records.contains_key(v)
                    || busy.contains(v)
                    || !policies.contains(v.policy.as_str())
                {
                    continue;
                }
                f.push(Finding::new(
                    FindingKind::OrphanStorage,
                    Some(v.clone()),
                    format!("backend {b} holds storage for {v}, but no volume record names it (a create or copy that did not finish)"),
                    format!("destroy the storage (taken under {v}'s locks, only while it still has no record)"),
                    Fix::Destroy { backend: *b, params: params.clone() },
                ));
            }
        }
        for (v, (vol, e)) in &records {
            let Some(vol) = vol else { continue };
            let Some(b) = vol.backends.crud else { continue };
            let Some(list) = stored.get(&b) else { continue };
            if list.contains_key(v) || busy.contains(v) {
                continue;
            }
            // Listed storage can miss a pool the driver does not list; ask by the record.
            let Ok(d) = self.driver(b) else { continue };
            let spec = VolumeSpec::of(vol, self.timeout());
            match tokio::time::timeout(self.timeout(), d.exists(&spec)).await {
                Ok(Ok(false)) => f.push(Finding::new(
                    FindingKind::MissingStorage,
                    Some(v.clone()),
                    format!("the record of {v} names backend {b} storage that does not exist (a remove that did not finish?)"),
                    format!("delete the record, its runtime options and epoch (under {v}'s locks, only if the record is unchanged); the data is already gone"),
                    Fix::DropRecord { revision: e.mod_rev },
                )),
                Ok(Ok(true)) => {}
                Ok(Err(err)) => report
                    .unchecked
                    .push(format!("storage of {v}: {err}")),
                Err(_) => report
                    .unchecked
                    .push(format!("storage of {v}: the check did not answer in time")),
            }
        }
        let f = &mut report.findings;
        for e in &mounts {
            let Some((host, v)) = k.parse_mount(&e.key) else {
                continue;
            };
            let why = if !records.contains_key(&v) {
                format!("volume {v} has no record (removed while mounted?)")
            } else if !live_hosts.contains_key(&host) {
                format!("host {host} is not running (no live host record); its mount lock is gone or stale")
            } else {
                // A live host owns its records; its own check covers them.
                continue;
            };
            f.push(
                Finding::new(
                    FindingKind::StaleMountRecord,
                    Some(v.clone()),
                    format!("mount record of {v} on {host}: {why}"),
                    "delete the mount record (only if it is still the one seen); a restarted host unmounts what it finds without a record".to_owned(),
                    Fix::DeleteKey { key: e.key.clone(), revision: e.mod_rev, volume_absent: false },
                )
                .on_host(&host)
                .at_key(&e.key),
            );
        }
        for (dir, entries) in [
            ("runtime", &runtimes),
            ("epochs", &epochs),
            ("schedules", &schedules),
            ("snapshot-signals", &signals),
            ("used", &used_keys),
        ] {
            for e in entries {
                let Some(v) = k.parse_volume_key(dir, &e.key) else {
                    continue;
                };
                if records.contains_key(&v) || busy.contains(&v) {
                    continue;
                }
                f.push(
                    Finding::new(
                        FindingKind::OrphanKey,
                        Some(v.clone()),
                        format!("{dir}/{v} is left from a volume that has no record"),
                        "delete the key (only while the volume still has no record)".to_owned(),
                        Fix::DeleteKey {
                            key: e.key.clone(),
                            revision: e.mod_rev,
                            volume_absent: true,
                        },
                    )
                    .at_key(&e.key),
                );
            }
        }
        // What the hosts found on themselves (their mounts against their records): shown
        // here, repaired there.
        for e in &host_reports {
            let Some(h) = e.key.strip_prefix(&k.host_checks()) else {
                continue;
            };
            let Ok(hr) = serde_json::from_slice::<CheckReport>(&e.value) else {
                continue;
            };
            for mut f in hr.findings {
                f.fix = format!(
                    "on host {h}: {}; volplugin does it at start, or now with: curl --unix-socket <plugin socket> -X POST http://plugin/check",
                    f.fix
                );
                f.repairable = false;
                f.outcome = None;
                f.how = Fix::None;
                report.findings.push(f);
            }
            report.unchecked.extend(
                hr.unchecked
                    .into_iter()
                    .map(|u| format!("on host {h}: {u}")),
            );
        }
        report.sort();
        if repair {
            self.repair(&mut report).await;
        }
        Ok(report)
    }

    /// Applies the fixes of a report this engine's [`check`](Self::check) made, each
    /// re-verified against what the check saw: a finding whose key or record changed
    /// since is skipped, not fixed.
    pub async fn repair(&self, report: &mut CheckReport) {
        let mut findings = std::mem::take(&mut report.findings);
        for f in &mut findings {
            if f.repairable && f.outcome.is_none() {
                f.outcome = Some(self.repair_one(f).await);
            }
        }
        report.findings = findings;
        report.repaired = true;
    }

    async fn repair_one(&self, f: &Finding) -> Outcome {
        let res = match (&f.how, &f.volume) {
            (Fix::Destroy { backend, params }, Some(v)) => {
                self.repair_destroy(v, *backend, params).await
            }
            (Fix::DropRecord { revision }, Some(v)) => self.repair_record(v, *revision).await,
            (
                Fix::DeleteKey {
                    key,
                    revision,
                    volume_absent,
                },
                v,
            ) => {
                let mut ops = vec![TxnOp::Delete {
                    key: key.clone(),
                    pre: Precondition::Revision(*revision),
                }];
                if let (true, Some(v)) = (volume_absent, v) {
                    ops.push(TxnOp::Check {
                        key: self.keys().volume(v),
                        pre: Precondition::Absent,
                    });
                }
                match self.kv().txn(ops).await {
                    Ok(_) => Ok(()),
                    // Gone already (an earlier fix of the same volume took it along).
                    Err(KvError::Conflict { .. })
                        if matches!(self.kv().get(key).await, Ok(None)) =>
                    {
                        Ok(())
                    }
                    Err(KvError::Conflict { .. }) => Err(Outcome::Skipped {
                        why: format!("{key} changed since the check; check again"),
                    }),
                    Err(e) => Err(Outcome::Failed {
                        error: e.to_string(),
                    }),
                }
            }
            _ => Err(Outcome::Skipped {
                why: "nothing to do automatically".into(),
            }),
        };
        match res {
            Ok(()) => {
                info!(kind = %f.kind, volume = ?f.volume.as_ref().map(ToString::to_string), key = ?f.key, "repaired");
                Outcome::Repaired
            }
            Err(o) => {
                warn!(kind = %f.kind, volume = ?f.volume.as_ref().map(ToString::to_string), outcome = ?o, "not repaired");
                o
            }
        }
    }

    /// The volume's locks, taken at once (no waiting) with `checks`.
    async fn repair_locks(
        &self,
        v: &VolumeRef,
        checks: &[TxnOp],
        changed: &str,
    ) -> Result<Vec<HeldLock>, Outcome> {
        let lease = self.lease().map_err(|e| Outcome::Failed {
            error: e.to_string(),
        })?;
        match self
            .op()
            .acquire_checked(
                &self.both(v, LockReason::Repair),
                &lease,
                Duration::ZERO,
                checks,
            )
            .await
        {
            Ok(h) => Ok(h),
            Err(LockError::CheckFailed { .. }) => Err(Outcome::Skipped {
                why: changed.to_owned(),
            }),
            Err(LockError::Held { holder }) => Err(Outcome::Skipped {
                why: format!(
                    "{v} is locked by {} ({}); an operation is running, check again later",
                    holder.host, holder.reason
                ),
            }),
            Err(e) => Err(Outcome::Failed {
                error: e.to_string(),
            }),
        }
    }

    async fn repair_destroy(
        &self,
        v: &VolumeRef,
        b: BackendKind,
        params: &BTreeMap<String, String>,
    ) -> Result<(), Outcome> {
        let held = self
            .repair_locks(
                v,
                &[TxnOp::Check {
                    key: self.keys().volume(v),
                    pre: Precondition::Absent,
                }],
                &format!("{v} has a record now; its storage is in use"),
            )
            .await?;
        let spec = VolumeSpec::bare(v, params.clone(), self.timeout());
        let res = match self.driver(b) {
            Ok(d) => match self.with_timeout("destroy", v, d.destroy(&spec)).await {
                Ok(()) => Ok(()),
                Err(e) if matches!(e.driver_error(), Some(DriverError::NotFound { .. })) => Ok(()),
                Err(e) => Err(Outcome::Failed {
                    error: e.to_string(),
                }),
            },
            Err(e) => Err(Outcome::Failed {
                error: e.to_string(),
            }),
        };
        self.release_unrecorded(v, &held).await;
        res
    }

    async fn repair_record(&self, v: &VolumeRef, revision: Revision) -> Result<(), Outcome> {
        let vkey = self.keys().volume(v);
        let held = self
            .repair_locks(
                v,
                &[TxnOp::Check {
                    key: vkey.clone(),
                    pre: Precondition::Revision(revision),
                }],
                &format!("the record of {v} changed since the check; check again"),
            )
            .await?;
        let mut ops: Vec<TxnOp> = held.iter().map(HeldLock::fence).collect();
        ops.push(TxnOp::Delete {
            key: vkey,
            pre: Precondition::Revision(revision),
        });
        for key in [self.keys().runtime(v), self.keys().epoch(v)] {
            ops.push(TxnOp::Delete {
                key,
                pre: Precondition::Any,
            });
        }
        ops.extend(held.iter().map(|h| TxnOp::Delete {
            key: h.key.clone(),
            pre: Precondition::Any,
        }));
        match self.kv().txn(ops).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.release_quietly(&held).await;
                Err(Outcome::Failed {
                    error: e.to_string(),
                })
            }
        }
    }
}
