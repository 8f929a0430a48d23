//! One leader's term: the scheduler and the signal handler. Returns only when a write
//! finds the leader key no longer at this term's token (the caller also ends the term
//! when the lease is not `Live`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::broadcast::error::TryRecvError;
use tracing::{debug, info, warn};

use super::{ScheduleRecord, Shared, SignalRecord, SlotStats};
use crate::catalog::CatalogChange;
use crate::engine::{EngineError, SnapshotPlan, SnapshotReport};
use crate::kv::{Entry, Precondition, Revision, TxnOp, WatchEvent, WatchStream};
use crate::name::VolumeRef;
use crate::schedule::{next_slot, slot_at, snapshot_name, unix_millis};

/// Longest sleep between looks at the schedule (a wall clock that jumps is caught up
/// within this).
const MAX_NAP: Duration = Duration::from_secs(30);
/// How long a failed signal waits before it is tried again.
const SIGNAL_RETRY: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
enum Job {
    Slot { v: VolumeRef, slot: SystemTime },
    Signal { v: VolumeRef, rec: SignalRecord },
    Prune { v: VolumeRef },
}

impl Job {
    fn volume(&self) -> &VolumeRef {
        match self {
            Self::Slot { v, .. } | Self::Signal { v, .. } | Self::Prune { v } => v,
        }
    }
}

type Done = (Job, SystemTime, Result<SnapshotReport, EngineError>);

struct Term {
    sh: Arc<Shared>,
    fence: TxnOp,
    /// The last slot taken, per volume (from `schedules/`, then from our own writes).
    last: BTreeMap<VolumeRef, SystemTime>,
    /// A slot that failed (or whose volume went away): not tried again until the next.
    failed: BTreeMap<VolumeRef, SystemTime>,
    /// Each volume's schedule as last seen (its frequency, if scheduled), and since when:
    /// a schedule that changes during the term starts at its next slot.
    seen: BTreeMap<VolumeRef, (Option<String>, SystemTime)>,
    /// Prune-only volumes pruned since their runtime last changed.
    pruned: BTreeSet<VolumeRef>,
    /// Outstanding signals, and when each may be tried (again).
    signals: BTreeMap<VolumeRef, (SignalRecord, SystemTime)>,
    /// Volumes with a job queued or running: one job per volume at a time.
    busy: BTreeSet<VolumeRef>,
    queue: VecDeque<Job>,
}

pub(super) async fn run(sh: Arc<Shared>, token: Revision) {
    let fence = TxnOp::Check {
        key: sh.keys.supervisor_leader(),
        pre: Precondition::CreateRevision(token),
    };
    let mut t = Term {
        sh: sh.clone(),
        fence,
        last: BTreeMap::new(),
        failed: BTreeMap::new(),
        seen: BTreeMap::new(),
        pruned: BTreeSet::new(),
        signals: BTreeMap::new(),
        busy: BTreeSet::new(),
        queue: VecDeque::new(),
    };
    let mut changes = sh.catalog.subscribe();
    sh.catalog.wait_ready().await;
    t.load_schedules().await;
    let mut signal_watch: Option<WatchStream> = None;
    let mut reported: BTreeSet<VolumeRef> = BTreeSet::new();
    let mut sweep: Option<BoxFuture<'static, super::reclaim::Swept>> = None;
    let mut sweep_due = tokio::time::Instant::now();
    let mut running: FuturesUnordered<BoxFuture<'static, Done>> = FuturesUnordered::new();
    let mut dirty = true;
    // When the next slot of any volume starts (from the last scan).
    let mut slot_due = SystemTime::UNIX_EPOCH;
    loop {
        if signal_watch.is_none() {
            signal_watch = t.load_signals().await;
            dirty = true;
        }
        let now = sh.cfg.clock.now();
        if dirty || now >= slot_due {
            slot_due = t.scan(now);
            dirty = false;
        }
        let wake = slot_due.min(t.next_wake(now));
        while running.len() < sh.cfg.concurrency.max(1) {
            let Some(job) = t.queue.pop_front() else {
                break;
            };
            running.push(t.start(job));
        }
        if sweep.is_none() && tokio::time::Instant::now() >= sweep_due {
            let (sh2, fence, rep) = (sh.clone(), t.fence.clone(), reported.clone());
            sweep = Some(Box::pin(async move {
                super::reclaim::sweep(&sh2, fence, rep).await
            }));
            sweep_due = tokio::time::Instant::now() + sh.cfg.reclaim_every;
        }
        let nap = wake
            .duration_since(sh.cfg.clock.now())
            .unwrap_or_default()
            .min(sweep_due.saturating_duration_since(tokio::time::Instant::now()));
        tokio::select! {
            Some(swept) = futures::future::OptionFuture::from(sweep.as_mut()), if sweep.is_some() => {
                sweep = None;
                if swept.fenced {
                    warn!("a reclamation found this supervisor deposed; ending the term");
                    return;
                }
                reported.extend(swept.reported);
            }
            Some((job, started, res)) = running.next(), if !running.is_empty() => {
                if t.finish(job, started, res).await.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(nap) => dirty = true,
            c = changes.recv() => {
                let mut c = Some(c);
                // Drain a burst in one go (a thousand creates make one rescan).
                while let Some(change) = c.take() {
                    match change {
                        Ok(CatalogChange::Runtime(v)) | Ok(CatalogChange::Volume(v)) => {
                            t.pruned.remove(&v);
                        }
                        Ok(CatalogChange::Reloaded) | Err(_) => t.pruned.clear(),
                    }
                    c = match changes.try_recv() {
                        Ok(x) => Some(Ok(x)),
                        Err(TryRecvError::Lagged(n)) => Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))),
                        Err(_) => None,
                    };
                }
                dirty = true;
            }
            ev = next_signal(&mut signal_watch) => {
                match ev {
                    Some(Ok(WatchEvent::Put(e))) => t.add_signal(&e),
                    Some(Ok(WatchEvent::Delete { key, .. })) => {
                        if let Some(v) = sh.keys.parse_volume_key("snapshot-signals", &key) {
                            t.signals.remove(&v);
                        }
                    }
                    _ => signal_watch = None,
                }
                dirty = true;
            }
        }
    }
}

async fn next_signal(
    w: &mut Option<WatchStream>,
) -> Option<Result<WatchEvent, crate::kv::KvError>> {
    match w {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

impl Term {
    async fn load_schedules(&mut self) {
        let mut pause = Duration::from_millis(100);
        loop {
            match self.sh.kv.list(&self.sh.keys.schedules()).await {
                Ok(entries) => {
                    for e in entries {
                        let Some(v) = self.sh.keys.parse_volume_key("schedules", &e.key) else {
                            continue;
                        };
                        match e.decode::<ScheduleRecord>() {
                            Ok(r) => {
                                self.last.insert(v, r.slot);
                            }
                            Err(err) => warn!(error = %err, "ignoring a slot record"),
                        }
                    }
                    debug!(volumes = self.last.len(), "slot records loaded");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "cannot read the slot records yet; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Lists the signals and watches for more; `None` (try again later) on a store error.
    async fn load_signals(&mut self) -> Option<WatchStream> {
        let prefix = self.sh.keys.snapshot_signals();
        let res = async {
            let rev = self.sh.kv.revision().await?;
            let list = self.sh.kv.list(&prefix).await?;
            let w = self.sh.kv.watch(&prefix, Some(rev)).await?;
            Ok::<_, crate::kv::KvError>((list, w))
        }
        .await;
        match res {
            Ok((list, w)) => {
                for e in &list {
                    self.add_signal(e);
                }
                Some(w)
            }
            Err(e) => {
                debug!(error = %e, "cannot watch snapshot signals yet");
                tokio::time::sleep(Duration::from_millis(500)).await;
                None
            }
        }
    }

    fn add_signal(&mut self, e: &Entry) {
        let Some(v) = self.sh.keys.parse_volume_key("snapshot-signals", &e.key) else {
            return;
        };
        let rec = e.decode::<SignalRecord>().unwrap_or(SignalRecord {
            requested_at: self.sh.cfg.clock.now(),
            by: String::new(),
        });
        self.signals.insert(v, (rec, SystemTime::UNIX_EPOCH));
    }

    /// Queues what is due; returns when the next slot starts.
    fn scan(&mut self, now: SystemTime) -> SystemTime {
        let mut wake = now + MAX_NAP;
        for e in self.sh.catalog.entries() {
            let v = e.volume.reference();
            let sched = e.runtime.scheduled().map(|f| f.as_str().to_owned());
            // First seen this term: its slots count from the volume's creation (a slot
            // the last leader missed is due). Changed during the term: from now.
            let since = match self.seen.get(&v) {
                Some((s, at)) if *s == sched => *at,
                Some(_) => {
                    self.seen.insert(v.clone(), (sched.clone(), now));
                    now
                }
                None => {
                    self.seen
                        .insert(v.clone(), (sched.clone(), SystemTime::UNIX_EPOCH));
                    SystemTime::UNIX_EPOCH
                }
            };
            if let Some(f) = e.runtime.scheduled() {
                let every = f.every();
                wake = wake.min(next_slot(now, every));
                let slot = slot_at(now, every);
                let taken = self.last.get(&v).is_some_and(|l| *l >= slot);
                let early = slot < since || slot < e.volume.created_at;
                if taken || early || self.failed.get(&v) == Some(&slot) || self.busy.contains(&v) {
                    continue;
                }
                self.busy.insert(v.clone());
                self.queue.push_back(Job::Slot { v, slot });
            } else if e.runtime.snapshot.prunes()
                && !self.pruned.contains(&v)
                && !self.busy.contains(&v)
            {
                self.busy.insert(v.clone());
                self.queue.push_back(Job::Prune { v });
            }
        }
        let due: Vec<VolumeRef> = self
            .signals
            .iter()
            .filter(|(v, (_, at))| *at <= now && !self.busy.contains(*v))
            .map(|(v, _)| v.clone())
            .collect();
        for v in due {
            if let Some((rec, _)) = self.signals.get(&v) {
                let rec = rec.clone();
                self.busy.insert(v.clone());
                // Asked-for snapshots go first: someone is waiting for them.
                self.queue.push_front(Job::Signal { v, rec });
            }
        }
        wake.min(self.next_wake(now))
    }

    fn next_wake(&self, now: SystemTime) -> SystemTime {
        self.signals
            .values()
            .map(|(_, at)| *at)
            .filter(|at| *at > now)
            .min()
            .unwrap_or(now + MAX_NAP)
    }

    fn start(&self, job: Job) -> BoxFuture<'static, Done> {
        let sh = self.sh.clone();
        let fence = self.fence.clone();
        Box::pin(async move {
            let started = sh.cfg.clock.now();
            let res = execute(&sh, fence, &job, started).await;
            (job, started, res)
        })
    }

    /// Books a finished job; `Err` when the term is over (fenced out).
    async fn finish(
        &mut self,
        job: Job,
        started: SystemTime,
        res: Result<SnapshotReport, EngineError>,
    ) -> Result<(), ()> {
        let v = job.volume().clone();
        self.busy.remove(&v);
        let now = self.sh.cfg.clock.now();
        if let Ok(r) = &res {
            let pruned = r.pruned.len() as u64;
            let prune_failed = u64::from(r.prune_error.is_some());
            self.sh.stats(|s| {
                s.pruned += pruned;
                s.prune_failed += prune_failed;
            });
        }
        match (&job, res) {
            (_, Err(EngineError::Fenced { key })) => {
                warn!(%key, volume = %v, "a write found this supervisor deposed; ending the term");
                return Err(());
            }
            (Job::Slot { slot, .. }, Ok(r)) => {
                self.last.insert(v.clone(), *slot);
                self.failed.remove(&v);
                let late = |t: SystemTime| {
                    u64::try_from(t.duration_since(*slot).unwrap_or_default().as_millis())
                        .unwrap_or(u64::MAX)
                };
                let (start_late, done_late) = (late(started), late(now));
                let slot_ms = unix_millis(*slot);
                self.sh.stats(|s| {
                    if r.existed {
                        s.existed += 1;
                    } else {
                        s.taken += 1;
                    }
                    match s.slots.iter_mut().find(|x| x.slot_ms == slot_ms) {
                        Some(x) => {
                            x.started += 1;
                            x.last_start_late_ms = x.last_start_late_ms.max(start_late);
                            x.last_done_late_ms = x.last_done_late_ms.max(done_late);
                        }
                        None => {
                            s.slots.push(SlotStats {
                                slot_ms,
                                started: 1,
                                last_start_late_ms: start_late,
                                last_done_late_ms: done_late,
                            });
                            s.slots.sort_by_key(|x| x.slot_ms);
                            if s.slots.len() > 16 {
                                s.slots.remove(0);
                            }
                        }
                    }
                });
            }
            (Job::Slot { slot, .. }, Err(EngineError::VolumeNotFound { .. })) => {
                debug!(volume = %v, "removed before its scheduled snapshot; skipped");
                self.failed.insert(v, *slot);
                self.sh.stats(|s| s.skipped_removed += 1);
            }
            (Job::Slot { slot, .. }, Err(e)) => {
                warn!(volume = %v, slot = %humantime::format_rfc3339(*slot), error = %e, "scheduled snapshot failed; it is retried at the next slot");
                self.failed.insert(v, *slot);
                self.sh.stats(|s| s.failed += 1);
            }
            (Job::Signal { .. }, Ok(r)) => {
                info!(volume = %v, snapshot = ?r.snapshot, "signalled snapshot taken");
                self.signals.remove(&v);
                self.sh.stats(|s| s.signals += 1);
            }
            (
                Job::Signal { .. },
                Err(
                    EngineError::VolumeNotFound { .. }
                    | EngineError::BadRequest(_)
                    | EngineError::NoSnapshots { .. },
                ),
            ) => {
                // Nothing to retry: forget the signal.
                let _ = self
                    .sh
                    .kv
                    .txn(vec![
                        self.fence.clone(),
                        TxnOp::Delete {
                            key: self.sh.keys.snapshot_signal(&v),
                            pre: Precondition::Any,
                        },
                    ])
                    .await;
                self.signals.remove(&v);
            }
            (Job::Signal { .. }, Err(e)) => {
                warn!(volume = %v, error = %e, "signalled snapshot failed; trying again shortly");
                if let Some(s) = self.signals.get_mut(&v) {
                    s.1 = now + SIGNAL_RETRY;
                }
                self.sh.stats(|s| s.failed += 1);
            }
            (Job::Prune { .. }, Ok(_)) => {
                self.pruned.insert(v);
            }
            (Job::Prune { .. }, Err(e)) => {
                debug!(volume = %v, error = %e, "pruning failed; trying again after the next change");
                self.pruned.insert(v);
            }
        }
        Ok(())
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Plain records always encode.
    serde_json::to_vec(v).unwrap_or_default()
}

async fn execute(
    sh: &Shared,
    fence: TxnOp,
    job: &Job,
    now: SystemTime,
) -> Result<SnapshotReport, EngineError> {
    let v = job.volume();
    let Some(e) = sh.catalog.entry(v) else {
        return Err(EngineError::VolumeNotFound { volume: v.clone() });
    };
    let mut plan = SnapshotPlan {
        record: e.created,
        checks: vec![fence],
        retention: Some(e.runtime.snapshot.clone()),
        ..Default::default()
    };
    match job {
        Job::Slot { slot, .. } => {
            let name = snapshot_name(*slot);
            plan.writes.push(TxnOp::Put {
                key: sh.keys.schedule(v),
                value: encode(&ScheduleRecord {
                    slot: *slot,
                    snapshot: name.clone(),
                    taken_at: now,
                }),
                pre: Precondition::Any,
                lease: None,
            });
            plan.name = Some(name);
        }
        Job::Signal { rec, .. } => {
            if !e.runtime.signal {
                return Err(EngineError::BadRequest(format!(
                    "volume {v}'s runtime does not allow signalled snapshots (\"signal\": true)"
                )));
            }
            plan.name = Some(snapshot_name(rec.requested_at));
            plan.writes.push(TxnOp::Delete {
                key: sh.keys.snapshot_signal(v),
                pre: Precondition::Any,
            });
        }
        Job::Prune { .. } => {}
    }
    sh.engine.snapshot_planned(&e.volume, plan).await
}
