//! The supervisor (DESIGN.md §8): scheduled and on-demand snapshots with pruning, run by
//! one leader among any number of supervisors.
//!
//! - **Leadership**: a supervisor with a `Live` lease creates `leader/supervisor` (absent →
//!   put, on its lease); the key's create revision is its **token**. The others register
//!   under `supervisors/` and watch the key, taking over once it is gone (the leader's
//!   lease ended: within TTL of its death). A leader stops issuing work the moment its
//!   lease is not `Live` (the keeper says so a margin before the store can expire it, so
//!   before anyone else can lead), and every store write it makes — each snapshot's lock,
//!   its slot record, a signal's deletion — checks the key at its token, so a deposed
//!   leader's late write fails.
//! - **Schedules** ([`crate::schedule`]): a volume whose runtime enables snapshots gets one
//!   per wall-clock slot, mounted or not. `schedules/<p>/<v>` records the last slot
//!   taken (in the same transaction that releases the snapshot's lock), so a late tick or
//!   a new leader takes a missed slot once, and a slot taken before a crash is
//!   `AlreadyExists` by name, never a double. Runtime changes come from the watched
//!   [`Catalog`] and apply at the next slot.
//! - **Signals**: `snapshot-signals/<p>/<v>` (written by volmaster when the runtime says
//!   `signal: true`) asks for a snapshot now; it is deleted with the snapshot's release.
//! - A failed snapshot is logged, counted, and retried at the next slot.
//! - **Reclamation** ([`crate::reclaim`]): every `reclaim_every`, stale volumes whose
//!   grace is over are removed (or reported), and ephemeral volumes whose hosts are gone
//!   are removed with those hosts' mount records — each removal re-checking, in its lock
//!   transaction, that the volume is still unused (or its hosts still gone). Every one is
//!   logged and audited.

mod leader;
mod reclaim;
mod tenure;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::catalog::Catalog;
use crate::engine::Volumes;
use crate::keys::Keys;
use crate::kv::{KvError, KvStore, Revision};
use crate::lease::LeaseState;
use crate::name::HostName;

pub use crate::clock::{Clock, SystemClock, TokioClock};
pub use leader::status;

/// A running supervisor, as stored under `supervisors/` and (for the leader) at
/// `leader/supervisor`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SupervisorRecord {
    /// Its host label.
    pub host: HostName,
    /// Random per start.
    pub instance: String,
    /// Its software version.
    pub version: String,
    /// The process id.
    pub pid: u32,
    /// Since when it runs (in `supervisors/`) or leads (at `leader/supervisor`).
    #[serde(with = "crate::serde_time")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub since: SystemTime,
}

/// The leader and the standbys, as the store knows them (`volcli supervisor status`).
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SupervisorStatus {
    /// The leader, if one leads.
    pub leader: Option<SupervisorRecord>,
    /// The leader key's create revision: the fence of the leader's writes.
    pub token: Option<Revision>,
    /// The running supervisors that do not lead.
    pub standbys: Vec<SupervisorRecord>,
}

/// `schedules/<p>/<v>`: the last slot taken.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ScheduleRecord {
    /// The slot's start.
    #[serde(with = "crate::serde_time")]
    pub slot: SystemTime,
    /// Its snapshot.
    pub snapshot: crate::name::SnapshotName,
    /// When the snapshot was done.
    #[serde(with = "crate::serde_time")]
    pub taken_at: SystemTime,
}

/// `snapshot-signals/<p>/<v>`: a request for a snapshot now.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SignalRecord {
    /// When it was asked for (the snapshot is named by it).
    #[serde(with = "crate::serde_time")]
    pub requested_at: SystemTime,
    /// Who asked.
    #[serde(default)]
    pub by: String,
}

/// This supervisor's role.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Role {
    /// Not leading (another does, or nobody can: no lease).
    Standby,
    /// Leading since `since`, fenced by `token`.
    Leader {
        /// When it took the lead.
        since: SystemTime,
        /// The leader key's create revision.
        token: Revision,
    },
}

/// One slot's figures: how late its snapshots started.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize)]
pub struct SlotStats {
    /// The slot's start (milliseconds since the epoch).
    pub slot_ms: u64,
    /// Snapshots started for it.
    pub started: u64,
    /// The latest start after the slot time, in milliseconds.
    pub last_start_late_ms: u64,
    /// When the last of them finished, after the slot time, in milliseconds.
    pub last_done_late_ms: u64,
}

/// Counters since start (for logs, status and metrics).
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize)]
pub struct SupervisorStats {
    /// Snapshots taken.
    pub taken: u64,
    /// Slots found taken already (by a crashed or deposed leader).
    pub existed: u64,
    /// Snapshots that failed (retried at the next slot).
    pub failed: u64,
    /// Snapshots pruned.
    pub pruned: u64,
    /// Prunes that stopped short.
    pub prune_failed: u64,
    /// Signals served.
    pub signals: u64,
    /// Volumes skipped because they were removed before their snapshot.
    pub skipped_removed: u64,
    /// Times this supervisor took the lead.
    pub terms: u64,
    /// Unused volumes removed (policy `reclaim`, action `remove`).
    pub reclaimed: u64,
    /// Unused volumes reported (action `report`).
    pub reported: u64,
    /// Ephemeral volumes removed because their host was gone.
    pub ephemeral_removed: u64,
    /// The most recent slots (newest last, at most 16).
    pub slots: Vec<SlotStats>,
}

/// Settings.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    /// This supervisor's host label.
    pub host: HostName,
    /// Its version (in its record).
    pub version: String,
    /// How many snapshots run at once.
    pub concurrency: usize,
    /// The wall clock slots come from.
    pub clock: Arc<dyn Clock>,
    /// How often stale and orphaned ephemeral volumes are looked for.
    pub reclaim_every: Duration,
}

impl SupervisorConfig {
    /// Defaults: 64 at once, the system clock.
    pub fn new(host: HostName, version: impl Into<String>) -> Self {
        Self {
            host,
            version: version.into(),
            concurrency: 64,
            clock: Arc::new(SystemClock),
            reclaim_every: Duration::from_secs(30),
        }
    }
}

struct Shared {
    kv: Arc<dyn KvStore>,
    keys: Keys,
    engine: Volumes,
    catalog: Arc<Catalog>,
    lease: watch::Receiver<LeaseState>,
    cfg: SupervisorConfig,
    instance: String,
    started: SystemTime,
    role: watch::Sender<Role>,
    stats: Mutex<SupervisorStats>,
}

impl Shared {
    fn record(&self, since: SystemTime) -> SupervisorRecord {
        SupervisorRecord {
            host: self.cfg.host.clone(),
            instance: self.instance.clone(),
            version: self.cfg.version.clone(),
            pid: std::process::id(),
            since,
        }
    }

    fn stats(&self, f: impl FnOnce(&mut SupervisorStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// A running supervisor (see the module docs). Dropping it stops it without resigning
/// (its lease ends the lead); [`Supervisor::shutdown`] resigns first.
pub struct Supervisor {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("instance", &self.shared.instance)
            .field("role", &*self.shared.role.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Supervisor {
    /// Starts campaigning, with the engine's store, keys and lease; `catalog` must watch
    /// the same store.
    pub fn start(
        engine: Volumes,
        catalog: Arc<Catalog>,
        lease: watch::Receiver<LeaseState>,
        cfg: SupervisorConfig,
    ) -> Self {
        let started = cfg.clock.now();
        let nanos = crate::schedule::unix_millis(SystemTime::now());
        let (role, _) = watch::channel(Role::Standby);
        let shared = Arc::new(Shared {
            kv: engine.kv().clone(),
            keys: engine.keys().clone(),
            engine,
            catalog,
            lease,
            instance: {
                // Unique per start, and per supervisor within one process (tests).
                static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                format!("{:x}-{nanos:x}-{n}", std::process::id())
            },
            cfg,
            started,
            role,
            stats: Mutex::default(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(leader::run(shared.clone(), stop_rx));
        Self {
            shared,
            stop,
            task: Some(task),
        }
    }

    /// This supervisor's role, as it changes.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.shared.role.subscribe()
    }

    /// Its instance id (in its record).
    pub fn instance(&self) -> &str {
        &self.shared.instance
    }

    /// Counters since start.
    pub fn stats(&self) -> SupervisorStats {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops: finishes no new work, resigns the lead (deleting the leader key at its
    /// token) and its record, within `limit`.
    pub async fn shutdown(mut self, limit: Duration) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            if tokio::time::timeout(limit, t).await.is_err() {
                tracing::warn!("supervisor did not stop in time");
            }
        }
    }
}

/// Reads the leader and the standbys from the store.
pub(crate) async fn read_status(
    kv: &dyn KvStore,
    keys: &Keys,
) -> Result<SupervisorStatus, KvError> {
    let (lkey, skey) = (keys.supervisor_leader(), keys.supervisors());
    let (leader, all) = futures::try_join!(kv.get(&lkey), kv.list(&skey))?;
    let leader_rec: Option<SupervisorRecord> = leader.as_ref().and_then(|e| e.decode().ok());
    let mut standbys: Vec<SupervisorRecord> = all
        .iter()
        .filter_map(|e| e.decode::<SupervisorRecord>().ok())
        .filter(|r| leader_rec.as_ref().is_none_or(|l| l.instance != r.instance))
        .collect();
    standbys.sort_by(|a, b| (&a.host, a.since).cmp(&(&b.host, b.since)));
    Ok(SupervisorStatus {
        token: leader.as_ref().map(|e| e.create_rev),
        leader: leader_rec,
        standbys,
    })
}
