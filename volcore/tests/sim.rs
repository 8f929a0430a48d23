//! The seeded fault-injection simulation (`volcore::testing::sim`): several hosts running
//! the mount lifecycle on one store under partitions, slow and ambiguous commits,
//! crashes, restarts, lease expiry and force-removes; the checker asserts one writer per
//! volume at any time and a clean `check` after recovery.
//!
//! `VOLCORE_SIM_SCHEDULES=N` runs more schedules (default 1000 per configuration);
//! `VOLCORE_SIM_SEED=S` replays one (the `replay` test prints its schedule and history).

#![allow(clippy::unwrap_used)] // tests fail by panicking

use volcore::testing::sim::{self, SimConfig};
use volcore::LeaseLossAction;

fn schedules() -> u64 {
    std::env::var("VOLCORE_SIM_SCHEDULES")
        .ok()
        .map(|s| s.parse().expect("VOLCORE_SIM_SCHEDULES must be a number"))
        .unwrap_or(1000)
}

fn run_all(first: u64, cfg: &SimConfig) {
    let n = schedules();
    let (failed, stats) = sim::run_many(first..first + n, cfg);
    if let Some(f) = failed.first() {
        panic!(
            "{} of {n} schedules failed (seeds {:?}); the first:\n{}",
            failed.len(),
            failed.iter().map(|r| r.seed).collect::<Vec<_>>(),
            f.explain()
        );
    }
    println!("{n} schedules passed ({cfg:?}): {stats:?}");
    // The schedules must exercise takeovers, or passing proves little.
    assert!(stats.fenced > n / 10, "too few takeovers: {stats:?}");
    assert!(
        stats.writes_refused > 0,
        "no fenced write was ever refused: {stats:?}"
    );
}

/// Unmount on lease loss, with operators force-removing locks.
#[test]
fn schedules_unmount_on_lease_loss() {
    run_all(0, &SimConfig::default());
}

/// Keep mounts on lease loss (only fencing protects), no force-removes: every mount must
/// also happen under the mounting host's lock.
#[test]
fn schedules_keep_on_lease_loss() {
    run_all(
        1_000_000,
        &SimConfig {
            on_lease_loss: LeaseLossAction::Keep,
            force_removes: false,
            ..SimConfig::default()
        },
    );
}

/// A seed replays exactly: same schedule, same history.
#[test]
fn a_seed_replays_exactly() {
    let cfg = SimConfig::default();
    for seed in [7, 42, 1234] {
        let a = sim::run(seed, &cfg);
        let b = sim::run(seed, &cfg);
        assert_eq!(a.schedule, b.schedule, "seed {seed}");
        assert_eq!(a.history, b.history, "seed {seed}");
        assert!(!a.history.is_empty(), "seed {seed} did nothing");
    }
}

/// The checker catches two writers: a history where a second host mounts while the first
/// still has write access fails.
#[test]
fn the_checker_catches_two_writers() {
    use volcore::testing::sim::{check_history, Happened, What};
    let v = volcore::VolumeRef::parse("p/v").unwrap();
    let names: Vec<volcore::HostName> = ["h0", "h1"]
        .iter()
        .map(|n| volcore::HostName::new(*n).unwrap())
        .collect();
    let ev = |at_ms, host, what| Happened {
        at_ms,
        host,
        volume: v.clone(),
        what,
    };
    let mount = |h: &str| What::Mount {
        lock_holder: Some(h.to_owned()),
    };
    let bad = vec![ev(0, 0, mount("h0")), ev(5, 1, mount("h1"))];
    assert_eq!(check_history(&bad, &names, true).len(), 1);
    let fenced = vec![
        ev(0, 0, mount("h0")),
        ev(4, 0, What::Fenced),
        ev(5, 1, mount("h1")),
        ev(6, 0, What::Write { accepted: false }),
    ];
    assert!(check_history(&fenced, &names, true).is_empty());
    let unlocked = vec![ev(0, 0, What::Mount { lock_holder: None })];
    assert_eq!(check_history(&unlocked, &names, true).len(), 1);
    assert!(check_history(&unlocked, &names, false).is_empty());
}

/// Replays one schedule (`VOLCORE_SIM_SEED`, default 0; `VOLCORE_SIM_KEEP=1` for the keep
/// configuration) and prints it.
#[test]
fn replay() {
    let seed: u64 = std::env::var("VOLCORE_SIM_SEED")
        .map(|s| s.parse().expect("VOLCORE_SIM_SEED must be a number"))
        .unwrap_or(0);
    let keep = std::env::var("VOLCORE_SIM_KEEP").is_ok();
    let cfg = SimConfig {
        on_lease_loss: if keep {
            LeaseLossAction::Keep
        } else {
            LeaseLossAction::Unmount
        },
        force_removes: !keep,
        ..SimConfig::default()
    };
    let r = sim::run(seed, &cfg);
    println!("{}", r.explain());
    assert!(r.violations.is_empty(), "seed {seed} failed");
    assert!(!r.schedule.is_empty());
}
