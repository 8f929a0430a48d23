//! The supervisor on the in-memory store with paused tokio time (the wall clock follows
//! it): slot alignment, a late start, restarts, a leader change mid-slot and just before a
//! slot, a deposed leader's late write, tiers over simulated weeks, runtime changes,
//! signals, and a volume removed before its snapshot.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use volcore::catalog::Catalog;
use volcore::policy::BackendKind;
use volcore::schedule::unix_millis;
use volcore::supervisor::{Role, Supervisor, SupervisorConfig, TokioClock};
use volcore::testing::{FakeDriver, Fault, FlakyKv, Step};
use volcore::{
    Drivers, GlobalConfig, HostName, Keys, KvStore, LeaseKeeper, MemKv, PolicyName, VolumeRef,
    Volumes,
};

const TTL: Duration = Duration::from_secs(3);

/// 2026-12-03T14:29:50Z: ten seconds before a minute slot.
fn base() -> SystemTime {
    humantime::parse_rfc3339("2026-12-03T14:29:50Z").unwrap()
}

fn vref(s: &str) -> VolumeRef {
    VolumeRef::parse(s).unwrap()
}

fn global() -> GlobalConfig {
    GlobalConfig {
        timeout: Duration::from_secs(10),
        ttl: TTL,
        mount_path: PathBuf::from("/mnt/test"),
        debug: false,
        mkfs_programs: Vec::new(),
    }
}

/// One supervisor process: its own lease, engine and catalog on the shared store.
struct Node {
    sup: Option<Supervisor>,
    keeper: Option<LeaseKeeper>,
    kv: FlakyKv,
}

impl Node {
    async fn start(kv: Arc<dyn KvStore>, fake: &FakeDriver, clock: TokioClock, name: &str) -> Self {
        let flaky = FlakyKv::new(kv);
        let kv: Arc<dyn KvStore> = Arc::new(flaky.clone());
        let keeper = LeaseKeeper::start(kv.clone(), TTL).await.unwrap();
        let (_g, grx) = watch::channel(global());
        std::mem::forget(_g);
        let host = HostName::new(name).unwrap();
        let engine = Volumes::new(
            kv.clone(),
            Keys::default(),
            Drivers::new().with(Arc::new(fake.clone())),
            host.clone(),
            keeper.subscribe(),
            grx,
        )
        .with_clock(Arc::new(clock));
        let catalog = Arc::new(Catalog::start(kv, Keys::default()));
        let mut cfg = SupervisorConfig::new(host, "test");
        cfg.clock = Arc::new(clock);
        cfg.reclaim_every = Duration::from_secs(10);
        let sup = Supervisor::start(engine, catalog, keeper.subscribe(), cfg);
        Self {
            sup: Some(sup),
            keeper: Some(keeper),
            kv: flaky,
        }
    }

    fn leading(&self) -> bool {
        matches!(
            *self.sup.as_ref().unwrap().role().borrow(),
            Role::Leader { .. }
        )
    }

    /// kill -9: nothing is resigned; the lease runs out on its own.
    fn kill(&mut self) {
        self.kv.fail_everything();
        drop(self.sup.take());
        if let Some(k) = self.keeper.take() {
            std::mem::forget(k);
        }
    }
}

struct World {
    kv: Arc<dyn KvStore>,
    fake: FakeDriver,
    admin: Volumes,
    clock: TokioClock,
    _keeper: LeaseKeeper,
}

async fn world() -> World {
    let kv: Arc<dyn KvStore> = Arc::new(MemKv::new());
    let fake = FakeDriver::new(BackendKind::Local);
    let keeper = LeaseKeeper::start(kv.clone(), Duration::from_secs(3600))
        .await
        .unwrap();
    let (_g, grx) = watch::channel(global());
    std::mem::forget(_g);
    let clock = TokioClock::starting_at(base());
    let admin = Volumes::new(
        kv.clone(),
        Keys::default(),
        Drivers::new().with(Arc::new(fake.clone())),
        HostName::new("master").unwrap(),
        keeper.subscribe(),
        grx,
    )
    .with_clock(Arc::new(clock));
    admin
        .upload_policy(
            &PolicyName::new("p").unwrap(),
            br#"{"backend":"local","create":{"size":"10MB"},
                 "runtime":{"snapshots":true,"snapshot":{"frequency":"1m","keep":3},"signal":true}}"#,
        )
        .await
        .unwrap();
    World {
        kv,
        fake,
        admin,
        clock,
        _keeper: keeper,
    }
}

impl World {
    async fn create(&self, v: &str) {
        self.admin
            .create(&vref(v), &Default::default())
            .await
            .unwrap();
    }

    async fn node(&self, name: &str) -> Node {
        Node::start(self.kv.clone(), &self.fake, self.clock, name).await
    }

    async fn snaps(&self, v: &str) -> Vec<String> {
        self.admin
            .snapshots(&vref(v))
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Sleeps (paused time) until the wall clock reads `t` plus `after`.
    async fn until(&self, t: &str, after: Duration) {
        let at = humantime::parse_rfc3339(t).unwrap() + after;
        let now = volcore::supervisor::Clock::now(&self.clock);
        if let Ok(d) = at.duration_since(now) {
            tokio::time::sleep(d).await;
        }
    }
}

const S: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn slots_are_wall_clock_aligned_and_pruned_to_keep() {
    let w = world().await;
    w.create("p/a").await;
    let n = w.node("sup-1").await;
    w.until("2026-12-03T14:29:59Z", Duration::ZERO).await;
    assert!(n.leading());
    assert!(
        w.snaps("p/a").await.is_empty(),
        "nothing before the first slot"
    );
    w.until("2026-12-03T14:30:00Z", S).await;
    assert_eq!(w.snaps("p/a").await, ["snap-20261203-143000"]);
    w.until("2026-12-03T14:34:00Z", S).await;
    assert_eq!(
        w.snaps("p/a").await,
        [
            "snap-20261203-143200",
            "snap-20261203-143300",
            "snap-20261203-143400"
        ]
    );
    let st = n.sup.as_ref().unwrap().stats();
    assert_eq!((st.taken, st.failed, st.existed), (5, 0, 0), "{st:?}");
    assert_eq!(st.pruned, 2);
    let last = st.slots.last().unwrap();
    assert_eq!(
        last.slot_ms,
        unix_millis(humantime::parse_rfc3339("2026-12-03T14:34:00Z").unwrap())
    );
    assert!(last.last_start_late_ms < 1000, "{last:?}");
}

#[tokio::test(start_paused = true)]
async fn a_late_start_takes_the_missed_slot_once_and_a_restart_does_not_double_it() {
    let w = world().await;
    w.create("p/a").await;
    // Nobody runs until 14:30:40: the 14:30 slot is late, and taken once, at once.
    w.until("2026-12-03T14:30:40Z", Duration::ZERO).await;
    let mut n = w.node("sup-1").await;
    tokio::time::sleep(S).await;
    assert_eq!(w.snaps("p/a").await, ["snap-20261203-143000"]);
    // Restart within the slot: the slot record says it is taken.
    n.kill();
    tokio::time::sleep(TTL + S).await;
    let n2 = w.node("sup-2").await;
    tokio::time::sleep(TTL + S).await;
    assert!(n2.leading());
    assert_eq!(w.snaps("p/a").await, ["snap-20261203-143000"]);
    w.until("2026-12-03T14:31:00Z", S).await;
    assert_eq!(
        w.snaps("p/a").await,
        ["snap-20261203-143000", "snap-20261203-143100"]
    );
}

#[tokio::test(start_paused = true)]
async fn the_standby_takes_over_within_ttl_and_neither_skips_nor_doubles() {
    let w = world().await;
    w.create("p/a").await;
    let mut a = w.node("sup-a").await;
    tokio::time::sleep(S).await;
    let b = w.node("sup-b").await;
    tokio::time::sleep(S).await;
    assert!(a.leading() && !b.leading());
    let status = volcore::supervisor::status(w.kv.as_ref(), &Keys::default())
        .await
        .unwrap();
    assert_eq!(status.leader.unwrap().host.as_str(), "sup-a");
    assert_eq!(status.standbys.len(), 1);
    assert_eq!(status.standbys[0].host.as_str(), "sup-b");
    w.until("2026-12-03T14:30:00Z", S).await;
    assert_eq!(w.snaps("p/a").await, ["snap-20261203-143000"]);
    // The leader dies mid-slot: the standby leads within TTL + 1 s and does not retake
    // the 14:30 slot.
    a.kill();
    let died = tokio::time::Instant::now();
    let mut role = b.sup.as_ref().unwrap().role();
    role.wait_for(|r| matches!(r, Role::Leader { .. }))
        .await
        .unwrap();
    assert!(
        died.elapsed() <= TTL + S,
        "took over after {:?}",
        died.elapsed()
    );
    w.until("2026-12-03T14:30:59Z", Duration::ZERO).await;
    assert_eq!(w.snaps("p/a").await, ["snap-20261203-143000"]);
    w.until("2026-12-03T14:31:00Z", S).await;
    assert_eq!(
        w.snaps("p/a").await,
        ["snap-20261203-143000", "snap-20261203-143100"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_leader_dying_just_before_a_slot_leaves_it_to_the_standby_late_but_once() {
    let w = world().await;
    w.create("p/a").await;
    let mut a = w.node("sup-a").await;
    tokio::time::sleep(S).await;
    let b = w.node("sup-b").await;
    w.until("2026-12-03T14:29:59Z", Duration::ZERO).await;
    a.kill();
    w.until("2026-12-03T14:30:00Z", TTL + S).await;
    assert!(b.leading());
    assert_eq!(w.snaps("p/a").await, ["snap-20261203-143000"]);
    let st = b.sup.as_ref().unwrap().stats();
    assert_eq!(st.taken, 1);
    assert!(
        st.slots[0].last_start_late_ms <= (TTL + S).as_millis() as u64,
        "{st:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_renew_stops_before_the_standby_starts() {
    let w = world().await;
    w.create("p/a").await;
    let a = w.node("sup-a").await;
    tokio::time::sleep(S).await;
    let b = w.node("sup-b").await;
    tokio::time::sleep(S).await;
    // Partition the leader from the store: its renewals hang.
    a.kv.hang_keepalives();
    let mut ra = a.sup.as_ref().unwrap().role();
    let mut rb = b.sup.as_ref().unwrap().role();
    ra.wait_for(|r| *r == Role::Standby).await.unwrap();
    let a_stopped = tokio::time::Instant::now();
    rb.wait_for(|r| matches!(r, Role::Leader { .. }))
        .await
        .unwrap();
    assert!(
        tokio::time::Instant::now() > a_stopped,
        "the standby led before the leader stopped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deposed_leaders_late_write_fails() {
    let w = world().await;
    w.create("p/a").await;
    let a = w.node("sup-a").await;
    tokio::time::sleep(S).await;
    assert!(a.leading());
    // Just before the leader's snapshot lock for the 14:30 slot, someone else becomes
    // leader (the key is replaced): the lock transaction checks the token and fails.
    let kv = w.kv.clone();
    let key = Keys::default().supervisor_leader();
    a.kv.before(
        1,
        |c| c.writes("/locks/op/p/a"),
        move || {
            let (kv, key) = (kv.clone(), key.clone());
            Box::pin(async move {
                kv.delete(&key, volcore::Precondition::Any).await.unwrap();
                kv.put(&key, b"{}".to_vec(), Default::default())
                    .await
                    .unwrap();
            })
        },
    );
    w.until("2026-12-03T14:30:00Z", S).await;
    assert!(
        w.snaps("p/a").await.is_empty(),
        "a deposed leader took a snapshot"
    );
    assert!(!a.leading());
    assert_eq!(
        w.kv.get(&Keys::default().schedule(&vref("p/a")))
            .await
            .unwrap(),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn tiers_over_simulated_weeks() {
    let w = world().await;
    w.create("p/a").await;
    w.admin
        .set_runtime(
            &vref("p/a"),
            r#"{"snapshots":true,"snapshot":{"frequency":"1h","keep":3,
                    "tiers":{"daily":{"every":"24h","keep":2},"weekly":{"every":"168h","keep":2}}}}"#
                .as_bytes(),
        )
        .await
        .unwrap();
    let _n = w.node("sup-1").await;
    // 2026-12-03 is a Thursday: weekly boundaries are Thursday midnights (UTC).
    w.until("2026-12-17T14:00:00Z", 30 * S).await;
    assert_eq!(
        w.snaps("p/a").await,
        [
            "snap-20261210-000000", // weekly
            "snap-20261216-000000", // daily
            "snap-20261217-000000", // daily + weekly
            "snap-20261217-120000",
            "snap-20261217-130000",
            "snap-20261217-140000",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn runtime_changes_apply_at_the_next_slot() {
    let w = world().await;
    w.create("p/a").await;
    let _n = w.node("sup-1").await;
    w.until("2026-12-03T14:30:00Z", S).await;
    assert_eq!(w.snaps("p/a").await.len(), 1);
    // Off (frequency null, keep 1): nothing new, and pruning still runs.
    w.admin
        .set_runtime(
            &vref("p/a"),
            r#"{"snapshots":true,"snapshot":{"frequency":null,"keep":1}}"#.as_bytes(),
        )
        .await
        .unwrap();
    w.until("2026-12-03T14:33:00Z", S).await;
    assert_eq!(w.snaps("p/a").await, ["snap-20261203-143000"]);
    // Every 2 minutes.
    w.admin
        .set_runtime(
            &vref("p/a"),
            r#"{"snapshots":true,"snapshot":{"frequency":"2m","keep":10}}"#.as_bytes(),
        )
        .await
        .unwrap();
    w.until("2026-12-03T14:37:00Z", S).await;
    assert_eq!(
        w.snaps("p/a").await,
        [
            "snap-20261203-143000",
            "snap-20261203-143400",
            "snap-20261203-143600"
        ]
    );
    // snapshots: false with a keep: no new snapshot, pruned to the keep.
    w.admin
        .set_runtime(
            &vref("p/a"),
            r#"{"snapshots":false,"snapshot":{"keep":1}}"#.as_bytes(),
        )
        .await
        .unwrap();
    w.until("2026-12-03T14:40:00Z", S).await;
    assert_eq!(w.snaps("p/a").await, ["snap-20261203-143600"]);
}

#[tokio::test(start_paused = true)]
async fn signals_snapshot_now_and_count_toward_pruning() {
    let w = world().await;
    w.create("p/a").await;
    let _n = w.node("sup-1").await;
    w.until("2026-12-03T14:30:00Z", S).await;
    let rec = volcore::supervisor::SignalRecord {
        requested_at: humantime::parse_rfc3339("2026-12-03T14:30:10.250Z").unwrap(),
        by: "test".into(),
    };
    let key = Keys::default().snapshot_signal(&vref("p/a"));
    w.kv.put(&key, serde_json::to_vec(&rec).unwrap(), Default::default())
        .await
        .unwrap();
    tokio::time::sleep(S).await;
    assert_eq!(
        w.snaps("p/a").await,
        ["snap-20261203-143000", "snap-20261203-143010-250"]
    );
    assert_eq!(
        w.kv.get(&key).await.unwrap(),
        None,
        "the signal is consumed"
    );
    w.until("2026-12-03T14:32:00Z", S).await;
    // keep 3 counts the signalled one.
    assert_eq!(
        w.snaps("p/a").await,
        [
            "snap-20261203-143010-250",
            "snap-20261203-143100",
            "snap-20261203-143200"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_volume_removed_before_its_snapshot_is_skipped_and_a_failure_retried_next_slot() {
    let w = world().await;
    w.create("p/a").await;
    w.create("p/b").await;
    let n = w.node("sup-1").await;
    // p/b's snapshot fails once; p/a is removed just before its snapshot lock.
    w.fake
        .inject(Step::Snapshot, Fault::Fail("disk on fire".into()));
    let admin = w.admin.clone();
    n.kv.before(
        1,
        |c| c.writes("/locks/op/p/a"),
        move || {
            let admin = admin.clone();
            Box::pin(async move {
                admin.remove(&vref("p/a"), false, None).await.unwrap();
            })
        },
    );
    w.until("2026-12-03T14:30:00Z", S).await;
    let st = n.sup.as_ref().unwrap().stats();
    assert_eq!(
        (st.taken, st.failed, st.skipped_removed),
        (0, 1, 1),
        "{st:?}"
    );
    assert!(w.snaps("p/b").await.is_empty());
    w.fake.heal();
    w.until("2026-12-03T14:30:59Z", Duration::ZERO).await;
    assert!(
        w.snaps("p/b").await.is_empty(),
        "retried before the next slot"
    );
    w.until("2026-12-03T14:31:00Z", S).await;
    assert_eq!(w.snaps("p/b").await, ["snap-20261203-143100"]);
    assert!(n.leading());
}

#[tokio::test(start_paused = true)]
async fn every_slot_of_a_short_frequency_starts_on_time() {
    let w = world().await;
    w.create("p/a").await;
    w.admin
        .set_runtime(
            &vref("p/a"),
            br#"{"snapshots":true,"snapshot":{"frequency":"10s","keep":100}}"#,
        )
        .await
        .unwrap();
    let n = w.node("sup-1").await;
    for (i, slot) in ["143000", "143010", "143020", "143030", "143040"]
        .iter()
        .enumerate()
    {
        w.until(
            &format!("2026-12-03T14:30:{}0Z", i),
            Duration::from_millis(500),
        )
        .await;
        let got = w.snaps("p/a").await;
        assert_eq!(
            got.last().map(String::as_str),
            Some(format!("snap-20261203-{slot}").as_str()),
            "{got:?}"
        );
        // The volume was made at 14:29:50, itself a slot start: that slot counts too.
        assert_eq!(got.len(), i + 2, "{got:?}");
    }
    let st = n.sup.as_ref().unwrap().stats();
    assert!(
        st.slots.iter().all(|s| s.last_start_late_ms < 500),
        "{st:?}"
    );
}

/// A host's record and its mount record of `v` (what a plugin writes), or only the mount
/// record (a host that died: its record went with its lease).
async fn mounted_on(kv: &Arc<dyn KvStore>, host: &str, v: &str, live: bool) {
    let keys = Keys::default();
    let h = HostName::new(host).unwrap();
    if live {
        kv.put(&keys.host(&h), b"{}".to_vec(), Default::default())
            .await
            .unwrap();
    }
    kv.put(
        &keys.mount(&h, &vref(v)),
        b"{}".to_vec(),
        Default::default(),
    )
    .await
    .unwrap();
}

async fn exists(w: &World, v: &str) -> bool {
    w.admin.get(&vref(v)).await.is_ok()
}

#[tokio::test(start_paused = true)]
async fn unused_volumes_are_reclaimed_after_grace_never_while_mounted_and_ephemeral_ones_with_their_host(
) {
    let w = world().await;
    w.admin
        .upload_policy(
            &PolicyName::new("r").unwrap(),
            br#"{"backend":"local","create":{"size":"10MB"},"reclaim":{"unused":"10m","action":"remove","grace":"5m"}}"#,
        )
        .await
        .unwrap();
    w.admin
        .upload_policy(
            &PolicyName::new("rep").unwrap(),
            br#"{"backend":"local","create":{"size":"10MB"},"reclaim":{"unused":"10m","action":"report","grace":"0s"}}"#,
        )
        .await
        .unwrap();
    for v in [
        "r/idle",
        "r/busy",
        "r/recent",
        "rep/idle",
        "p/eph-dead",
        "p/eph-live",
    ] {
        w.create(v).await;
    }
    for v in ["p/eph-dead", "p/eph-live"] {
        w.admin
            .create(
                &vref(&format!("{v}x")),
                &[("ephemeral".to_owned(), "true".to_owned())].into(),
            )
            .await
            .unwrap();
    }
    mounted_on(&w.kv, "alive", "r/busy", true).await;
    mounted_on(&w.kv, "gone", "p/eph-deadx", false).await;
    mounted_on(&w.kv, "alive", "p/eph-livex", true).await;
    let n = w.node("sup-1").await;
    // The dead host's ephemeral volume goes at the first sweep, with its mount record.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(!exists(&w, "p/eph-deadx").await);
    assert!(exists(&w, "p/eph-livex").await && exists(&w, "p/eph-dead").await);
    let gone = Keys::default().mount(&HostName::new("gone").unwrap(), &vref("p/eph-deadx"));
    assert_eq!(w.kv.get(&gone).await.unwrap(), None);
    // r/recent was last unmounted 8 minutes in.
    w.until("2026-12-03T14:37:50Z", Duration::ZERO).await;
    let used = volcore::reclaim::LastUsed {
        at: volcore::supervisor::Clock::now(&w.clock),
        host: HostName::new("alive").unwrap(),
    };
    w.kv.put(
        &Keys::default().last_used(&vref("r/recent")),
        serde_json::to_vec(&used).unwrap(),
        Default::default(),
    )
    .await
    .unwrap();
    // Stale at 14:39:50, due at 14:44:50: still there (listed as stale) just before.
    w.until("2026-12-03T14:44:40Z", Duration::ZERO).await;
    let usage = volcore::reclaim::Usage::read(w.kv.as_ref(), &Keys::default())
        .await
        .unwrap();
    let idle = w.admin.get(&vref("r/idle")).await.unwrap().volume;
    let st = usage
        .stale(&idle, volcore::supervisor::Clock::now(&w.clock))
        .unwrap();
    assert_eq!(
        st.due_at,
        humantime::parse_rfc3339("2026-12-03T14:44:50Z").unwrap()
    );
    assert!(exists(&w, "r/idle").await);
    w.until("2026-12-03T14:45:10Z", Duration::ZERO).await;
    assert!(!exists(&w, "r/idle").await, "not reclaimed after its grace");
    assert!(exists(&w, "r/busy").await, "reclaimed while mounted");
    assert!(exists(&w, "r/recent").await, "reclaimed before its time");
    assert!(
        exists(&w, "rep/idle").await,
        "a report-only policy removed a volume"
    );
    w.until("2026-12-03T14:53:10Z", Duration::ZERO).await;
    assert!(!exists(&w, "r/recent").await);
    assert!(exists(&w, "r/busy").await);
    let st = n.sup.as_ref().unwrap().stats();
    assert_eq!(
        (st.reclaimed, st.reported, st.ephemeral_removed),
        (2, 1, 1),
        "{st:?}"
    );
    // Every reclamation is in the audit trail.
    let audit = w.kv.list(&Keys::default().audit()).await.unwrap();
    let methods: Vec<String> = audit
        .iter()
        .map(|e| e.decode::<volcore::audit::AuditEntry>().unwrap().method)
        .collect();
    assert_eq!(
        methods.iter().filter(|m| *m == "RECLAIM").count(),
        2,
        "{methods:?}"
    );
    assert_eq!(
        methods.iter().filter(|m| *m == "RECLAIM-REPORT").count(),
        1,
        "{methods:?}"
    );
    assert_eq!(
        methods.iter().filter(|m| *m == "RECLAIM-EPHEMERAL").count(),
        1,
        "{methods:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_volume_mounted_between_the_sweep_and_its_removal_is_kept() {
    let w = world().await;
    w.admin
        .upload_policy(
            &PolicyName::new("r").unwrap(),
            br#"{"backend":"local","create":{"size":"10MB"},"reclaim":{"unused":"1m","action":"remove","grace":"0s"}}"#,
        )
        .await
        .unwrap();
    w.create("r/a").await;
    w.kv.put(
        &Keys::default().host(&HostName::new("h").unwrap()),
        b"{}".to_vec(),
        Default::default(),
    )
    .await
    .unwrap();
    w.until("2026-12-03T14:31:00Z", Duration::ZERO).await;
    let n = w.node("sup-1").await;
    // Right before the removal's lock transaction, host h mounts it (unlocked-style: a
    // mount record only).
    let kv = w.kv.clone();
    n.kv.before(
        1,
        |c| c.writes("/locks/op/r/a"),
        move || {
            let kv = kv.clone();
            Box::pin(async move {
                let k = Keys::default().mount(&HostName::new("h").unwrap(), &vref("r/a"));
                kv.put(&k, b"{}".to_vec(), Default::default())
                    .await
                    .unwrap();
            })
        },
    );
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert!(exists(&w, "r/a").await, "removed while mounted");
    assert_eq!(n.sup.as_ref().unwrap().stats().reclaimed, 0);
    assert!(n.leading());
}

#[tokio::test(start_paused = true)]
async fn a_supervisor_killed_mid_snapshot_leaves_no_lock_past_its_lease() {
    let w = world().await;
    w.create("p/a").await;
    let mut a = w.node("sup-a").await;
    tokio::time::sleep(S).await;
    let b = w.node("sup-b").await;
    // The leader's snapshot of the 14:30 slot hangs in the driver, holding the op lock.
    w.fake.inject(Step::Snapshot, Fault::Hang);
    w.until("2026-12-03T14:30:00Z", S).await;
    let op = Keys::default().lock(volcore::LockKind::Op, &vref("p/a"));
    let held =
        w.kv.get(&op)
            .await
            .unwrap()
            .expect("the snapshot holds the op lock");
    a.kill();
    w.fake.heal();
    let killed = tokio::time::Instant::now();
    // Gone (or already the standby's own).
    while w
        .kv
        .get(&op)
        .await
        .unwrap()
        .is_some_and(|e| e.create_rev == held.create_rev)
    {
        assert!(
            killed.elapsed() <= TTL + S,
            "the killed supervisor's lock outlived its lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The standby, leading now, takes the slot the dead leader could not finish.
    w.until("2026-12-03T14:30:00Z", TTL + 2 * S).await;
    assert!(b.leading());
    assert_eq!(w.snaps("p/a").await, ["snap-20261203-143000"]);
}
