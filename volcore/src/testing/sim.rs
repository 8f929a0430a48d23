//! A deterministic fault-injection simulation of several hosts sharing one store and one
//! storage cluster, each running the library's mount lifecycle ([`HostMounts`]), and a
//! checker over what the storage saw.
//!
//! Every host reaches the shared store through its own [`FlakyKv`], which the schedule
//! partitions, heals, slows down and makes lose the answers of commits. Every host's
//! [`SimDriver`] is a view of one simulated cluster that records each claim, fence,
//! mount, write and unmount with its host and (virtual) time, and fences like Ceph: a
//! claim by one host cuts off the clients of the host that held the backend lock. A
//! seeded schedule mounts, unmounts and writes from random hosts, crashes hosts (their
//! in-flight calls are dropped wherever they are; kernel mounts survive), restarts them,
//! partitions and heals them, lets leases expire, and force-removes locks as an operator
//! would.
//!
//! The checker asserts, over the recorded history:
//! - **one writer**: no two hosts ever had write access to one volume at the same time,
//!   where a host has write access from its mount until its unmount or until it is
//!   fenced;
//! - **mount under lock**: with no force-removes in the schedule, every mount happened
//!   while the mounting host held the volume's mount lock in the store;
//! - **nothing left**: after every partition is healed, every crashed host restarted and
//!   every dead lease expired, `check` (the cluster's and every host's) reports nothing.
//!
//! [`run`] drives one schedule on the in-memory store in a paused-clock runtime, so a
//! seed replays exactly; [`run_on`] drives one on any store (real etcd) in real time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::flaky::{FlakyKv, KvCall, KvFault};
use crate::check::CheckReport;
use crate::driver::{DriverError, Fenced, Mount, MountDriver, VolumeDriver, VolumeSpec};
use crate::engine::{Drivers, Volumes};
use crate::global::GlobalConfig;
use crate::keys::{Keys, LockKind};
use crate::kv::{KvStore, MemKv};
use crate::lease::LeaseKeeper;
use crate::lock::{LockHolder, Locker};
use crate::mounts::{HostMounts, LeaseLossAction, MountsConfig, MountsDeps};
use crate::name::{HostName, PolicyName, VolumeName, VolumeRef};
use crate::policy::BackendKind;

/// What a simulation runs.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Simulated hosts.
    pub hosts: usize,
    /// Volumes (all locked).
    pub volumes: usize,
    /// Schedule steps.
    pub steps: usize,
    /// Lease TTL.
    pub ttl: Duration,
    /// What a host does after losing its lease.
    pub on_lease_loss: LeaseLossAction,
    /// Whether the schedule force-removes locks (an operator's override; mount-under-lock
    /// is then not asserted, one-writer still is).
    pub force_removes: bool,
    /// The longest pause between two steps (each pause is random below it).
    pub gap: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            hosts: 3,
            volumes: 2,
            steps: 40,
            ttl: Duration::from_secs(6),
            on_lease_loss: LeaseLossAction::Unmount,
            force_removes: true,
            gap: Duration::from_millis(1500),
        }
    }
}

/// What the simulated storage saw.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum What {
    /// The host took the backend lock.
    Claim,
    /// The host attached the storage (mapped the image).
    Attach,
    /// The host detached it.
    Detach,
    /// The host's clients were cut off (another host claimed the volume).
    Fenced,
    /// The host mounted the volume; who held its mount lock in the store right then.
    Mount {
        /// The lock holder's host label, if the lock existed.
        lock_holder: Option<String>,
    },
    /// A container on the host wrote to the volume; whether the storage accepted it.
    Write {
        /// Accepted (mounted and not fenced).
        accepted: bool,
    },
    /// The host unmounted it.
    Unmount,
    /// The host dropped the backend lock.
    Release,
}

/// One recorded event.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Happened {
    /// Virtual milliseconds since the schedule began.
    pub at_ms: u64,
    /// The host (index).
    pub host: usize,
    /// The volume.
    pub volume: VolumeRef,
    /// What.
    pub what: What,
}

/// One schedule step.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Action {
    /// `mount(volume, user)` on a host.
    Mount(usize, usize, u8),
    /// `unmount(volume, user)` on a host.
    Unmount(usize, usize, u8),
    /// A container on the host writes to the volume.
    Write(usize, usize),
    /// The host's process dies (in-flight calls dropped, kernel mounts stay).
    Crash(usize),
    /// The host's process starts again.
    Restart(usize),
    /// The host is cut off from the store.
    Partition(usize),
    /// The host reaches the store again.
    Heal(usize),
    /// The host's next store calls answer this many ms late.
    Slow(usize, u64),
    /// The host's next store transaction commits but its answer is lost.
    Ambiguous(usize),
    /// Time passes beyond a lease TTL.
    Expire,
    /// An operator force-removes the volume's mount lock.
    ForceRemove(usize),
}

/// A schedule's result.
#[derive(Clone, Debug)]
pub struct SimResult {
    /// The seed.
    pub seed: u64,
    /// The schedule, with the virtual time of each step.
    pub schedule: Vec<(u64, Action)>,
    /// What the storage saw.
    pub history: Vec<Happened>,
    /// Broken invariants (empty: the schedule passed).
    pub violations: Vec<String>,
    /// The final check (cluster and hosts) after recovery.
    pub final_check: CheckReport,
    /// The configuration it ran.
    pub config: SimConfig,
}

impl SimResult {
    /// A failure report: seed, how to replay it, violations, schedule and history.
    pub fn explain(&self) -> String {
        let keep = if self.config.on_lease_loss == LeaseLossAction::Keep {
            "VOLCORE_SIM_KEEP=1 "
        } else {
            ""
        };
        let mut s = format!(
            "simulation seed {} failed; replay with {keep}VOLCORE_SIM_SEED={} cargo test -p volcore --features testing --test sim replay -- --nocapture\n",
            self.seed, self.seed
        );
        for v in &self.violations {
            s.push_str(&format!("  violated: {v}\n"));
        }
        s.push_str("schedule:\n");
        for (t, a) in &self.schedule {
            s.push_str(&format!("  {t:>7} ms  {a:?}\n"));
        }
        s.push_str("history:\n");
        for h in &self.history {
            s.push_str(&format!(
                "  {:>7} ms  h{} {} {:?}\n",
                h.at_ms, h.host, h.volume, h.what
            ));
        }
        s
    }
}

#[derive(Debug, Default)]
struct Cluster {
    volumes: BTreeSet<VolumeRef>,
    claims: BTreeMap<VolumeRef, usize>,
    mounts: BTreeMap<(usize, VolumeRef), PathBuf>,
    fenced: BTreeSet<(usize, VolumeRef)>,
    history: Vec<Happened>,
}

/// One host's view of the simulated storage cluster (see the module docs).
#[derive(Clone, Debug)]
pub struct SimDriver {
    host: usize,
    cluster: Arc<Mutex<Cluster>>,
    start: tokio::time::Instant,
    raw: Arc<dyn KvStore>,
    keys: Keys,
}

impl SimDriver {
    fn with<T>(&self, f: impl FnOnce(&mut Cluster) -> T) -> T {
        f(&mut self.cluster.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn record(&self, c: &mut Cluster, host: usize, v: &VolumeRef, what: What) {
        c.history.push(Happened {
            at_ms: self.start.elapsed().as_millis() as u64,
            host,
            volume: v.clone(),
            what,
        });
    }

    /// A container on this host writes to `v`: accepted only through an unfenced mount.
    pub fn write(&self, v: &VolumeRef) -> bool {
        self.with(|c| {
            let key = (self.host, v.clone());
            let accepted = c.mounts.contains_key(&key) && !c.fenced.contains(&key);
            self.record(c, self.host, v, What::Write { accepted });
            accepted
        })
    }

    /// What the storage saw so far.
    pub fn history(&self) -> Vec<Happened> {
        self.with(|c| c.history.clone())
    }

    fn missing(v: &VolumeRef) -> DriverError {
        DriverError::NotFound {
            what: format!("volume {v}"),
        }
    }
}

#[async_trait]
impl VolumeDriver for SimDriver {
    fn backend(&self) -> BackendKind {
        BackendKind::Local
    }
    async fn create(&self, spec: &VolumeSpec) -> Result<(), DriverError> {
        self.with(|c| {
            if c.volumes.insert(spec.volume.clone()) {
                Ok(())
            } else {
                Err(DriverError::AlreadyExists {
                    what: format!("volume {}", spec.volume),
                })
            }
        })
    }
    async fn format(&self, _spec: &VolumeSpec) -> Result<(), DriverError> {
        Ok(())
    }
    async fn destroy(&self, spec: &VolumeSpec) -> Result<(), DriverError> {
        self.with(|c| {
            if c.volumes.remove(&spec.volume) {
                Ok(())
            } else {
                Err(Self::missing(&spec.volume))
            }
        })
    }
    async fn exists(&self, spec: &VolumeSpec) -> Result<bool, DriverError> {
        Ok(self.with(|c| c.volumes.contains(&spec.volume)))
    }
    async fn list(&self) -> Result<Vec<VolumeRef>, DriverError> {
        Ok(self.with(|c| c.volumes.iter().cloned().collect()))
    }
    fn mounts(&self) -> Option<&dyn MountDriver> {
        Some(self)
    }
}

#[async_trait]
impl MountDriver for SimDriver {
    async fn mount(&self, spec: &VolumeSpec, at: &Path) -> Result<Mount, DriverError> {
        let v = &spec.volume;
        // Who holds the mount lock right now, read from the store itself.
        let lock_holder = match self.raw.get(&self.keys.lock(LockKind::Mount, v)).await {
            Ok(Some(e)) => serde_json::from_slice::<LockHolder>(&e.value)
                .ok()
                .map(|h| h.host.to_string()),
            _ => None,
        };
        self.with(|c| {
            if !c.volumes.contains(v) {
                return Err(Self::missing(v));
            }
            let key = (self.host, v.clone());
            if !c.mounts.contains_key(&key) {
                c.mounts.insert(key.clone(), at.to_path_buf());
                // A new mapping is a new client: not blocked.
                c.fenced.remove(&key);
                self.record(c, self.host, v, What::Attach);
                self.record(c, self.host, v, What::Mount { lock_holder });
            }
            Ok(Mount {
                volume: v.clone(),
                path: at.to_path_buf(),
                device: None,
            })
        })
    }
    async fn unmount(&self, spec: &VolumeSpec, _at: &Path) -> Result<(), DriverError> {
        self.with(|c| {
            let key = (self.host, spec.volume.clone());
            if c.mounts.remove(&key).is_some() {
                c.fenced.remove(&key);
                self.record(c, self.host, &spec.volume, What::Unmount);
                self.record(c, self.host, &spec.volume, What::Detach);
            }
            Ok(())
        })
    }
    async fn mounted(&self) -> Result<Vec<Mount>, DriverError> {
        Ok(self.with(|c| {
            c.mounts
                .iter()
                .filter(|((h, _), _)| *h == self.host)
                .map(|((_, v), at)| Mount {
                    volume: v.clone(),
                    path: at.clone(),
                    device: None,
                })
                .collect()
        }))
    }
    async fn claim(&self, spec: &VolumeSpec, _host: &HostName) -> Result<Vec<Fenced>, DriverError> {
        let v = &spec.volume;
        Ok(self.with(|c| {
            let mut fenced = Vec::new();
            if let Some(&old) = c.claims.get(v) {
                if old != self.host {
                    // Like Ceph: break the stale lock, blocklist the old holder's clients.
                    if c.mounts.contains_key(&(old, v.clone())) && c.fenced.insert((old, v.clone()))
                    {
                        self.record(c, old, v, What::Fenced);
                    }
                    fenced.push(Fenced {
                        holder: format!("h{old}"),
                        clients: Vec::new(),
                    });
                }
            }
            if c.claims.insert(v.clone(), self.host) != Some(self.host) {
                self.record(c, self.host, v, What::Claim);
            }
            fenced
        }))
    }
    async fn release(&self, spec: &VolumeSpec, _host: &HostName) -> Result<(), DriverError> {
        self.with(|c| {
            if c.claims.get(&spec.volume) == Some(&self.host) {
                c.claims.remove(&spec.volume);
                self.record(c, self.host, &spec.volume, What::Release);
            }
        });
        Ok(())
    }
}

/// Checks a history: one writer per volume at any time; with `locked_mounts`, every
/// mount under the mounting host's lock. Returns what was violated.
pub fn check_history(history: &[Happened], names: &[HostName], locked_mounts: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut writers: BTreeMap<&VolumeRef, BTreeSet<usize>> = BTreeMap::new();
    for h in history {
        let w = writers.entry(&h.volume).or_default();
        match &h.what {
            What::Mount { lock_holder } => {
                if let Some(other) = w.iter().find(|o| **o != h.host) {
                    out.push(format!(
                        "at {} ms h{} mounted {} while h{other} still had write access",
                        h.at_ms, h.host, h.volume
                    ));
                }
                w.insert(h.host);
                let me = names.get(h.host).map(ToString::to_string);
                if locked_mounts && lock_holder.as_ref() != me.as_ref() {
                    out.push(format!(
                        "at {} ms h{} mounted {} without holding its mount lock (holder: {lock_holder:?})",
                        h.at_ms, h.host, h.volume
                    ));
                }
            }
            What::Unmount | What::Fenced => {
                w.remove(&h.host);
            }
            What::Write { accepted: true } => {
                if let Some(other) = w.iter().find(|o| **o != h.host) {
                    out.push(format!(
                        "at {} ms h{} wrote {} while h{other} had write access",
                        h.at_ms, h.host, h.volume
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

struct Live {
    mounts: HostMounts,
    keeper: LeaseKeeper,
}

struct Host {
    name: HostName,
    flaky: FlakyKv,
    driver: SimDriver,
    state: tempfile::TempDir,
    live: Option<Live>,
    ops: Vec<JoinHandle<()>>,
}

struct World {
    cfg: SimConfig,
    raw: Arc<dyn KvStore>,
    keys: Keys,
    hosts: Vec<Host>,
    volumes: Vec<VolumeRef>,
    global: watch::Receiver<GlobalConfig>,
    _gtx: watch::Sender<GlobalConfig>,
    engine: Volumes,
    _engine_keeper: LeaseKeeper,
}

fn global(ttl: Duration) -> GlobalConfig {
    GlobalConfig {
        ttl,
        timeout: Duration::from_secs(5),
        mount_path: PathBuf::from("/sim"),
        debug: false,
        mkfs_programs: Vec::new(),
    }
}

impl World {
    async fn new(cfg: &SimConfig, raw: Arc<dyn KvStore>, prefix: &str) -> Self {
        let keys = Keys::new(prefix).expect("a valid prefix");
        let (gtx, grx) = watch::channel(global(cfg.ttl));
        let cluster = Arc::new(Mutex::new(Cluster::default()));
        let start = tokio::time::Instant::now();
        let driver = |host| SimDriver {
            host,
            cluster: cluster.clone(),
            start,
            raw: raw.clone(),
            keys: keys.clone(),
        };
        let engine_keeper = LeaseKeeper::start(raw.clone(), cfg.ttl)
            .await
            .expect("the engine's lease");
        let engine = Volumes::new(
            raw.clone(),
            keys.clone(),
            Drivers::new().with(Arc::new(driver(usize::MAX))),
            HostName::new("admin").expect("a valid name"),
            engine_keeper.subscribe(),
            grx.clone(),
        );
        let p = PolicyName::new("p").expect("a valid name");
        engine
            .upload_policy(&p, br#"{"backend":"local","create":{"size":"10MB"}}"#)
            .await
            .expect("the policy");
        let mut volumes = Vec::new();
        for i in 0..cfg.volumes {
            let v = VolumeRef::new(
                p.clone(),
                VolumeName::new(format!("v{i}")).expect("a valid name"),
            );
            engine
                .create(&v, &BTreeMap::new())
                .await
                .expect("the volume");
            volumes.push(v);
        }
        let hosts = (0..cfg.hosts)
            .map(|i| Host {
                name: HostName::new(format!("h{i}")).expect("a valid name"),
                flaky: FlakyKv::new(raw.clone()),
                driver: driver(i),
                state: tempfile::tempdir().expect("a state directory"),
                live: None,
                ops: Vec::new(),
            })
            .collect();
        Self {
            cfg: cfg.clone(),
            raw,
            keys,
            hosts,
            volumes,
            global: grx,
            _gtx: gtx,
            engine,
            _engine_keeper: engine_keeper,
        }
    }

    async fn start(&mut self, i: usize) -> bool {
        if self.hosts[i].live.is_some() {
            return true;
        }
        let h = &self.hosts[i];
        let kv: Arc<dyn KvStore> = Arc::new(h.flaky.clone());
        let Ok(keeper) = LeaseKeeper::start(kv.clone(), self.cfg.ttl).await else {
            return false;
        };
        let res = HostMounts::start(
            MountsDeps {
                kv,
                keys: self.keys.clone(),
                drivers: Drivers::new().with(Arc::new(h.driver.clone())),
                lease: keeper.subscribe(),
                global: self.global.clone(),
            },
            MountsConfig {
                host: h.name.clone(),
                state_dir: h.state.path().to_path_buf(),
                owner: format!("volplugin:{}", h.name),
                version: "sim".into(),
                mount_root: Some(PathBuf::from(format!("/sim/{}", h.name))),
                on_lease_loss: self.cfg.on_lease_loss,
                throttle: None,
            },
        )
        .await;
        match res {
            Ok(mounts) => {
                self.hosts[i].live = Some(Live { mounts, keeper });
                true
            }
            Err(_) => {
                keeper.abandon().await;
                false
            }
        }
    }

    async fn crash(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        for op in h.ops.drain(..) {
            op.abort();
            let _ = op.await;
        }
        if let Some(live) = h.live.take() {
            live.mounts.stop();
            drop(live.mounts);
            live.keeper.abandon().await;
        }
    }

    fn spawn(&mut self, i: usize, f: impl FnOnce(HostMounts) -> JoinHandle<()>) {
        let h = &mut self.hosts[i];
        h.ops.retain(|t| !t.is_finished());
        if let Some(live) = &h.live {
            let t = f(live.mounts.clone());
            h.ops.push(t);
        }
    }

    fn pick(&self, rng: &mut StdRng) -> Action {
        let h = rng.random_range(0..self.cfg.hosts);
        let v = rng.random_range(0..self.volumes.len());
        let user = rng.random_range(0..2u8);
        let roll = rng.random_range(0..100u32);
        match roll {
            0..30 => Action::Mount(h, v, user),
            30..52 => Action::Unmount(h, v, user),
            52..66 => Action::Write(h, v),
            66..71 => Action::Crash(h),
            71..79 => Action::Restart(h),
            79..84 => Action::Partition(h),
            84..91 => Action::Heal(h),
            91..94 => Action::Slow(h, rng.random_range(100..4000)),
            94..97 => Action::Ambiguous(h),
            97..99 => Action::Expire,
            _ if self.cfg.force_removes => Action::ForceRemove(v),
            _ => Action::Expire,
        }
    }

    async fn apply(&mut self, a: &Action) {
        match *a {
            Action::Mount(h, v, u) => {
                let vref = self.volumes[v].clone();
                self.spawn(h, |m| {
                    tokio::spawn(async move {
                        let _ = m.mount(&vref, &format!("c{u}")).await;
                    })
                });
            }
            Action::Unmount(h, v, u) => {
                let vref = self.volumes[v].clone();
                self.spawn(h, |m| {
                    tokio::spawn(async move {
                        let _ = m.unmount(&vref, &format!("c{u}")).await;
                    })
                });
            }
            Action::Write(h, v) => {
                self.hosts[h].driver.write(&self.volumes[v]);
            }
            Action::Crash(h) => self.crash(h).await,
            Action::Restart(h) => {
                self.start(h).await;
            }
            Action::Partition(h) => self.hosts[h].flaky.fail_everything(),
            Action::Heal(h) => self.hosts[h].flaky.heal(),
            Action::Slow(h, ms) => {
                self.hosts[h]
                    .flaky
                    .inject(3, KvFault::Slow(Duration::from_millis(ms)), |_| true)
            }
            Action::Ambiguous(h) => {
                self.hosts[h]
                    .flaky
                    .inject(1, KvFault::CommitThenTimeout, |c| {
                        matches!(c, KvCall::Txn(_))
                    })
            }
            Action::Expire => tokio::time::sleep(self.cfg.ttl * 3 / 2).await,
            Action::ForceRemove(v) => {
                let admin = Locker::new(
                    self.raw.clone(),
                    self.keys.clone(),
                    HostName::new("operator").expect("a valid name"),
                );
                let _ = admin
                    .force_remove(&self.volumes[v], &[LockKind::Mount])
                    .await;
            }
        }
    }

    /// Heals everything, restarts every host, lets dead leases expire and owed work
    /// finish; then the cluster's and every host's check.
    async fn recover(&mut self) -> CheckReport {
        for h in &self.hosts {
            h.flaky.heal();
        }
        for i in 0..self.hosts.len() {
            for _ in 0..20 {
                if self.start(i).await {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        tokio::time::sleep(self.cfg.ttl * 3).await;
        let mut report = match self.engine.check(false).await {
            Ok(r) => r,
            Err(e) => CheckReport {
                unchecked: vec![format!("cluster check failed: {e}")],
                ..CheckReport::default()
            },
        };
        for h in &self.hosts {
            match &h.live {
                Some(l) if l.mounts.adopted() => report.merge(l.mounts.check(false).await),
                Some(_) => report
                    .unchecked
                    .push(format!("{} never finished re-adopting", h.name)),
                None => report.unchecked.push(format!("{} never restarted", h.name)),
            }
        }
        report
    }
}

/// Runs schedule `seed` on the in-memory store in a paused-clock runtime of its own:
/// the same seed gives the same schedule and the same history.
pub fn run(seed: u64, cfg: &SimConfig) -> SimResult {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    rt.block_on(run_on(seed, cfg, Arc::new(MemKv::new()), "/sim"))
}

/// Runs schedule `seed` on `kv` under `prefix` in the current runtime (on a real store:
/// in real time, so not replayable exactly).
pub async fn run_on(seed: u64, cfg: &SimConfig, kv: Arc<dyn KvStore>, prefix: &str) -> SimResult {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w = World::new(cfg, kv, prefix).await;
    let start = tokio::time::Instant::now();
    for i in 0..w.hosts.len() {
        w.start(i).await;
    }
    let mut schedule = Vec::new();
    for _ in 0..cfg.steps {
        let a = w.pick(&mut rng);
        schedule.push((start.elapsed().as_millis() as u64, a.clone()));
        w.apply(&a).await;
        let gap = rng.random_range(0..cfg.gap.as_millis().max(1) as u64);
        tokio::time::sleep(Duration::from_millis(gap)).await;
    }
    let final_check = w.recover().await;
    let names: Vec<HostName> = w.hosts.iter().map(|h| h.name.clone()).collect();
    let history = w.hosts[0].driver.history();
    let mut violations = check_history(&history, &names, !cfg.force_removes);
    if !final_check.is_clean() {
        violations.push(format!(
            "after recovery, check reports:\n{}",
            final_check.render()
        ));
    }
    for i in 0..w.hosts.len() {
        w.crash(i).await;
    }
    SimResult {
        seed,
        schedule,
        history,
        violations,
        final_check,
        config: cfg.clone(),
    }
}

/// What a batch of schedules did, summed (so a run shows it exercised takeovers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Schedules run.
    pub schedules: u64,
    /// Mounts the storage saw.
    pub mounts: u64,
    /// Hosts fenced by another host's claim.
    pub fenced: u64,
    /// Writes accepted.
    pub writes_accepted: u64,
    /// Writes refused (fenced or not mounted).
    pub writes_refused: u64,
    /// Crashes.
    pub crashes: u64,
    /// Partitions.
    pub partitions: u64,
}

impl SimStats {
    fn add(&mut self, r: &SimResult) {
        self.schedules += 1;
        for h in &r.history {
            match h.what {
                What::Mount { .. } => self.mounts += 1,
                What::Fenced => self.fenced += 1,
                What::Write { accepted: true } => self.writes_accepted += 1,
                What::Write { accepted: false } => self.writes_refused += 1,
                _ => {}
            }
        }
        for (_, a) in &r.schedule {
            match a {
                Action::Crash(_) => self.crashes += 1,
                Action::Partition(_) => self.partitions += 1,
                _ => {}
            }
        }
    }
}

/// Runs seeds `seeds` on every core; returns the failing results and what all did.
pub fn run_many(seeds: std::ops::Range<u64>, cfg: &SimConfig) -> (Vec<SimResult>, SimStats) {
    let next = std::sync::atomic::AtomicU64::new(seeds.start);
    let failed = Mutex::new(Vec::new());
    let stats = Mutex::new(SimStats::default());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if seed >= seeds.end {
                    return;
                }
                let r = run(seed, cfg);
                stats.lock().unwrap_or_else(|p| p.into_inner()).add(&r);
                if !r.violations.is_empty() {
                    failed.lock().unwrap_or_else(|p| p.into_inner()).push(r);
                }
            });
        }
    });
    let mut f = failed.into_inner().unwrap_or_else(|p| p.into_inner());
    f.sort_by_key(|r| r.seed);
    (f, stats.into_inner().unwrap_or_else(|p| p.into_inner()))
}
