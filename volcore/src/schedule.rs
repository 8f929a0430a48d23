//! Snapshot schedules as arithmetic, with no store and no clock of their own: wall-clock
//! slots, the names snapshots get from their time, and which snapshots a schedule keeps.
//!
//! A slot of frequency `f` starts at every multiple of `f` since the Unix epoch (UTC), so
//! every supervisor computes the same slots and a new leader knows which one is due. A
//! scheduled snapshot is named by its slot, `snap-YYYYMMDD-HHMMSS`; one taken on demand by
//! its request time to the millisecond, `snap-YYYYMMDD-HHMMSS-mmm`. Both sort by time, and
//! a name says which slot it was, so taking a slot twice is `AlreadyExists`, not a double.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use crate::name::SnapshotName;
use crate::policy::SnapshotConfig;

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn from_millis(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

fn every_millis(every: Duration) -> u64 {
    u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The start of the slot `now` falls in.
pub fn slot_at(now: SystemTime, every: Duration) -> SystemTime {
    let (n, e) = (unix_millis(now), every_millis(every));
    from_millis(n - n % e)
}

/// The start of the slot after the one `now` falls in.
pub fn next_slot(now: SystemTime, every: Duration) -> SystemTime {
    slot_at(now, every) + Duration::from_millis(every_millis(every))
}

/// Whether `t` falls on a boundary of `every` (a tier's).
pub fn on_boundary(t: SystemTime, every: Duration) -> bool {
    unix_millis(t).is_multiple_of(every_millis(every))
}

/// The name of a snapshot taken at `t`: `snap-YYYYMMDD-HHMMSS`, with `-mmm` when `t` is not
/// a whole second. UTC, sortable by time.
pub fn snapshot_name(t: SystemTime) -> SnapshotName {
    let ms = unix_millis(t);
    let s = humantime::format_rfc3339_millis(from_millis(ms)).to_string(); // 2026-12-01T08:30:00.123Z
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    // digits = YYYYMMDDHHMMSSmmm
    let name = match (digits.get(..8), digits.get(8..14), digits.get(14..17)) {
        (Some(day), Some(time), _) if ms.is_multiple_of(1000) => format!("snap-{day}-{time}"),
        (Some(day), Some(time), Some(milli)) => format!("snap-{day}-{time}-{milli}"),
        _ => format!("snap-{digits}"),
    };
    #[allow(clippy::expect_used)]
    SnapshotName::new(name).expect("letters, digits and '-' make a valid snapshot name")
}

/// The time a volcore-made snapshot name stands for; `None` for any other name (those are
/// never pruned: volcore only removes what it made).
pub fn snapshot_time(name: &SnapshotName) -> Option<SystemTime> {
    let rest = name.as_str().strip_prefix("snap-")?;
    let mut parts = rest.split('-');
    let (day, time) = (parts.next()?, parts.next()?);
    let milli = parts.next().unwrap_or("000");
    if parts.next().is_some()
        || day.len() != 8
        || time.len() != 6
        || milli.len() != 3
        || !(day.chars().chain(time.chars()).chain(milli.chars())).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let text = format!(
        "{}-{}-{}T{}:{}:{}.{milli}Z",
        &day[..4],
        &day[4..6],
        &day[6..],
        &time[..2],
        &time[2..4],
        &time[4..]
    );
    humantime::parse_rfc3339(&text).ok()
}

/// The snapshots a schedule prunes from `snaps`: of the volcore-named ones, all but the
/// newest `keep` overall and, per tier, the newest `keep` on the tier's boundary. Nothing
/// when the schedule does not prune (no keep, no tier) — never "everything", which is
/// what volplugin's `keep: 0` did.
pub fn prune(snaps: &[SnapshotName], cfg: &SnapshotConfig) -> Vec<SnapshotName> {
    if !cfg.prunes() {
        return Vec::new();
    }
    let mut ours: Vec<(SystemTime, &SnapshotName)> = snaps
        .iter()
        .filter_map(|s| Some((snapshot_time(s)?, s)))
        .collect();
    // Newest first; ties (impossible for distinct names of one scheme) by name.
    ours.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(a.1)));
    let mut kept: BTreeSet<&SnapshotName> = ours
        .iter()
        .take(cfg.keep as usize)
        .map(|(_, s)| *s)
        .collect();
    for tier in cfg.tiers.values() {
        kept.extend(
            ours.iter()
                .filter(|(t, _)| on_boundary(*t, tier.every.every()))
                .take(tier.keep as usize)
                .map(|(_, s)| *s),
        );
    }
    let mut gone: Vec<SnapshotName> = ours
        .iter()
        .filter(|(_, s)| !kept.contains(s))
        .map(|(_, s)| (*s).clone())
        .collect();
    gone.sort();
    gone
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Frequency, SnapshotTier};

    fn at(ms: u64) -> SystemTime {
        from_millis(ms)
    }

    #[test]
    fn names_round_trip_and_sort() {
        let a = snapshot_name(at(1_764_578_400_001));
        let b = snapshot_name(at(1_764_578_400_002));
        let slot = snapshot_name(at(1_764_578_400_000));
        assert_eq!(a.as_str(), "snap-20251201-084000-001");
        assert_eq!(slot.as_str(), "snap-20251201-084000");
        assert!(slot < a && a < b);
        for n in [&a, &b, &slot] {
            assert_eq!(snapshot_name(snapshot_time(n).unwrap()), *n);
        }
        for other in [
            "snap-1",
            "2016-06-03-15:00:00",
            "snap-20251201-084000-1",
            "x",
        ] {
            if let Ok(n) = SnapshotName::new(other) {
                assert_eq!(snapshot_time(&n), None, "{other}");
            }
        }
    }

    #[test]
    fn slots_are_wall_clock_aligned() {
        let m = Duration::from_secs(60);
        assert_eq!(slot_at(at(125_500), m), at(120_000));
        assert_eq!(next_slot(at(125_500), m), at(180_000));
        assert_eq!(slot_at(at(120_000), m), at(120_000));
        assert!(on_boundary(at(86_400_000 * 3), Duration::from_secs(86_400)));
        assert!(!on_boundary(
            at(86_400_000 * 3 + 3_600_000),
            Duration::from_secs(86_400)
        ));
    }

    fn cfg(keep: u32, tiers: &[(&str, &str, u32)]) -> SnapshotConfig {
        SnapshotConfig {
            frequency: Some(Frequency::parse("1h").unwrap()),
            keep,
            tiers: tiers
                .iter()
                .map(|(n, e, k)| {
                    (
                        n.to_string(),
                        SnapshotTier {
                            every: Frequency::parse(e).unwrap(),
                            keep: *k,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn pruning_keeps_the_union_of_tiers_over_simulated_weeks() {
        // Five weeks of hourly slots, keep 24 hourly, 7 daily, 4 weekly.
        let c = cfg(24, &[("daily", "24h", 7), ("weekly", "168h", 4)]);
        let hour = 3_600_000u64;
        let start = 1_764_547_200_000u64; // 2025-12-01T00:00:00Z, a Monday
        let mut have: Vec<SnapshotName> = Vec::new();
        for h in 0..(24 * 7 * 5) {
            have.push(snapshot_name(at(start + h * hour)));
            let gone = prune(&have, &c);
            have.retain(|s| !gone.contains(s));
        }
        let times: Vec<u64> = have
            .iter()
            .map(|s| unix_millis(snapshot_time(s).unwrap()))
            .collect();
        let last = start + (24 * 7 * 5 - 1) * hour;
        let hourly = times.iter().filter(|t| **t > last - 24 * hour).count();
        assert_eq!(hourly, 24);
        let daily: Vec<_> = times.iter().filter(|t| *t % (24 * hour) == 0).collect();
        let weekly: Vec<_> = times.iter().filter(|t| *t % (168 * hour) == 0).collect();
        assert!(daily.len() >= 7, "{daily:?}");
        assert_eq!(weekly.len(), 4, "{weekly:?}");
        // Exactly the union: 24 hourly (one of which is today's midnight), the 7 newest
        // midnights, the 4 newest Thursday midnights.
        let mut want: BTreeSet<u64> = (0..24).map(|i| last - i * hour).collect();
        let mut m = last - last % (24 * hour);
        for _ in 0..7 {
            want.insert(m);
            m -= 24 * hour;
        }
        let mut w = last - last % (168 * hour);
        for _ in 0..4 {
            want.insert(w);
            w -= 168 * hour;
        }
        assert_eq!(times.iter().copied().collect::<BTreeSet<_>>(), want);
    }

    #[test]
    fn keep_zero_without_tiers_prunes_nothing_and_foreign_names_stay() {
        let mut c = cfg(0, &[]);
        let snaps: Vec<SnapshotName> = (0..5)
            .map(|i| snapshot_name(at(1_000_000 + i * 1000)))
            .chain([SnapshotName::new("before-upgrade").unwrap()])
            .collect();
        assert!(prune(&snaps, &c).is_empty());
        c.keep = 2;
        let gone = prune(&snaps, &c);
        assert_eq!(gone.len(), 3);
        assert!(!gone.iter().any(|s| s.as_str() == "before-upgrade"));
        assert!(!gone.contains(&snaps[4]) && !gone.contains(&snaps[3]));
    }
}
