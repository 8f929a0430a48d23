//! The mount lifecycle under faults, through volplugin's real socket: duplicate host
//! labels, a lease lost while another host used the volume (ABA), store errors while the
//! locks are re-established, a failing mount listing at start, `--on-lease-loss keep`,
//! an unmount while the store is down, and the store round trips each call costs.
//! Faults are injected where they hurt: a store wrapper (`FlakyKv`) and a driver with
//! failing steps (`FakeDriver`), each simulated machine with its own mount table.

#![allow(clippy::unwrap_used)] // tests fail by panicking

mod plugin_common;

use std::sync::Arc;
use std::time::Duration;

use plugin_common::*;
use volcore::policy::BackendKind;
use volcore::testing::{CountingKv, FakeDriver, Fault, FlakyKv, KvFault, Step};
use volcore::{Drivers, KvStore, VolumeRef};
use volcore_api::docker::Request;
use volplugin::LeaseLossAction;

fn drivers(f: &FakeDriver) -> Drivers {
    Drivers::new().with(Arc::new(f.clone()))
}

fn vref(s: &str) -> VolumeRef {
    VolumeRef::parse(s).unwrap()
}

async fn lock_host(kv: &Arc<dyn KvStore>, prefix: &str, v: &str) -> Option<String> {
    let e = kv
        .get(&format!("{prefix}/locks/mount/{v}"))
        .await
        .unwrap()?;
    let h: serde_json::Value = serde_json::from_slice(&e.value).unwrap();
    Some(h["host"].as_str().unwrap().to_owned())
}

async fn record(kv: &Arc<dyn KvStore>, prefix: &str, host: &str, v: &str) -> bool {
    kv.get(&format!("{prefix}/mounts/{host}/{v}"))
        .await
        .unwrap()
        .is_some()
}

async fn mount(h: &Host, v: &str, id: &str) -> String {
    err_of(
        &send(
            &h.sock,
            &Request::Mount {
                name: v.into(),
                id: id.into(),
            },
        )
        .await,
    )
}

async fn unmount(h: &Host, v: &str, id: &str) -> String {
    err_of(
        &send(
            &h.sock,
            &Request::Unmount {
                name: v.into(),
                id: id.into(),
            },
        )
        .await,
    )
}

async fn create(h: &Host, v: &str) {
    let r = send(
        &h.sock,
        &Request::Create {
            name: v.into(),
            opts: Default::default(),
        },
    )
    .await;
    assert_eq!(err_of(&r), "", "create {v}");
}

/// Host A on a store wrapper that can cut it off (`flaky`), and, when asked, host B — a
/// second machine on the same storage — on the store itself; policy1 is the null backend.
struct Pair {
    mem: Arc<dyn KvStore>,
    prefix: String,
    flaky: FlakyKv,
    fa: FakeDriver,
    a: Host,
    b: Option<Host>,
}

async fn pair(ttl: u64, on_loss: LeaseLossAction, with_b: bool) -> Pair {
    let (mem, prefix) = store(ttl).await;
    upload(&mem, &prefix, "policy1", NULL).await;
    let flaky = FlakyKv::new(mem.clone());
    let dir = tmp("sock");
    let fa = FakeDriver::new(BackendKind::Null);
    let a = HostSpec::new(
        Arc::new(flaky.clone()),
        drivers(&fa),
        "host-a",
        &dir,
        &prefix,
    )
    .on_loss(on_loss)
    .start()
    .await;
    let b = if with_b {
        Some(
            HostSpec::new(
                mem.clone(),
                drivers(&fa.another_host()),
                "host-b",
                &dir,
                &prefix,
            )
            .start()
            .await,
        )
    } else {
        None
    };
    Pair {
        mem,
        prefix,
        flaky,
        fa,
        a,
        b,
    }
}

/// Host A mounts `v` (user a1) and is cut off from the store; host B mounts it (user b1)
/// once A's lease has expired.
async fn a_mounts_then_b_takes_over(a: &Host, b: &Host, flaky: &FlakyKv, v: &str) {
    create(a, v).await;
    assert_eq!(mount(a, v, "a1").await, "");
    flaky.fail_everything();
    until(
        Duration::from_secs(6),
        "host-b mounts after host-a's lease expired",
        async || mount(b, v, "b1").await.is_empty(),
    )
    .await;
}

/// A second machine started with a live host's label is refused, and the first host's
/// mount, record and lock are untouched (before: the second plugin took the first one's
/// record for "another host took this volume" and unmounted its live mount).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_host_label_is_refused() {
    let (kv, prefix) = store(30).await;
    upload(&kv, &prefix, "policy1", NULL).await;
    let dir = tmp("sock");
    let fa = FakeDriver::new(BackendKind::Null);
    let a = HostSpec::new(kv.clone(), drivers(&fa), "host-a", &dir, &prefix)
        .start()
        .await;
    create(&a, "policy1/db").await;
    assert_eq!(mount(&a, "policy1/db", "a1").await, "");
    let fb = fa.another_host();
    let other_machine = tmp("machine-b");
    let second = HostSpec::new(kv.clone(), drivers(&fb), "host-a", &dir, &prefix)
        .state(&other_machine)
        .start_named("vp-host-a-2")
        .await;
    let e = match second {
        Ok(h) => {
            h.kill().await;
            panic!("a second machine with a live label was allowed to start")
        }
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("host-a"), "{e}");
    assert!(e.contains("in use"), "{e}");
    assert_eq!(fa.mounted_volumes(), vec![vref("policy1/db")]);
    assert!(record(&kv, &prefix, "host-a", "policy1/db").await);
    assert_eq!(
        lock_host(&kv, &prefix, "policy1/db").await.as_deref(),
        Some("host-a")
    );
    assert_eq!(unmount(&a, "policy1/db", "a1").await, "");
    a.stop().await;
}

/// Host A loses its lease; meanwhile host B takes the volume, writes and lets go (ABA).
/// When A is back it must not re-take the lock as if nobody had used the volume: it
/// fences itself — its driver unmounts — and B can mount again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_used_by_another_host_during_an_outage_is_fenced() {
    let Pair {
        mem,
        prefix,
        flaky,
        fa,
        a,
        b,
    } = pair(2, LeaseLossAction::Unmount, true).await;
    let b = b.unwrap();
    a_mounts_then_b_takes_over(&a, &b, &flaky, "policy1/aba").await;
    assert_eq!(unmount(&b, "policy1/aba", "b1").await, "");
    assert_eq!(lock_host(&mem, &prefix, "policy1/aba").await, None);
    flaky.heal();
    until(
        Duration::from_secs(8),
        "host-a's driver unmounts the volume",
        async || fa.mounted_volumes().is_empty(),
    )
    .await;
    until(
        Duration::from_secs(2),
        "host-a's mount record is gone",
        async || !record(&mem, &prefix, "host-a", "policy1/aba").await,
    )
    .await;
    // Host A never re-took the lock, so B can have the volume again.
    assert_eq!(mount(&b, "policy1/aba", "b2").await, "");
    assert_eq!(
        lock_host(&mem, &prefix, "policy1/aba").await.as_deref(),
        Some("host-b")
    );
    assert_eq!(unmount(&b, "policy1/aba", "b2").await, "");
    a.stop().await;
    b.stop().await;
}

/// After a lost lease nobody else used the volume, but the store fails the first lock
/// transactions when A is back: A retries until it holds the lock again (before: one
/// attempt, then the volume stayed mounted with no lock at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_errors_while_re_establishing_are_retried() {
    let Pair {
        mem,
        prefix,
        flaky,
        fa,
        a,
        b: _,
    } = pair(2, LeaseLossAction::Unmount, false).await;
    create(&a, "policy1/retry").await;
    assert_eq!(mount(&a, "policy1/retry", "a1").await, "");
    flaky.fail_everything();
    until(
        Duration::from_secs(6),
        "host-a's lock expires",
        async || lock_host(&mem, &prefix, "policy1/retry").await.is_none(),
    )
    .await;
    flaky.heal();
    flaky.inject(3, KvFault::Unavailable, |c| c.writes("/locks/mount/"));
    until(
        Duration::from_secs(10),
        "host-a holds the lock again",
        async || lock_host(&mem, &prefix, "policy1/retry").await.as_deref() == Some("host-a"),
    )
    .await;
    assert!(flaky.hits() >= 3, "the injected faults never fired");
    assert_eq!(fa.mounted_volumes(), vec![vref("policy1/retry")]);
    assert_eq!(unmount(&a, "policy1/retry", "a1").await, "");
    a.stop().await;
}

/// A restarted plugin whose mount listing fails keeps its records and locks (past the old
/// lease's TTL) and refuses new mounts until the listing works (before: a failing listing
/// read as "nothing mounted", every record was deleted and the locks expired under the
/// running containers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_mount_listing_at_start_keeps_records_and_locks() {
    let (kv, prefix) = store(2).await;
    upload(&kv, &prefix, "policy1", NULL).await;
    let dir = tmp("sock");
    let fa = FakeDriver::new(BackendKind::Null);
    let a = HostSpec::new(kv.clone(), drivers(&fa), "host-a", &dir, &prefix)
        .start()
        .await;
    create(&a, "policy1/kept").await;
    create(&a, "policy1/new").await;
    assert_eq!(mount(&a, "policy1/kept", "c1").await, "");
    a.kill().await;
    fa.inject(Step::Mounted, Fault::Fail("cannot read mountinfo".into()));
    let a = HostSpec::new(kv.clone(), drivers(&fa), "host-a", &dir, &prefix)
        .start()
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // past the old lease's TTL
    assert!(record(&kv, &prefix, "host-a", "policy1/kept").await);
    assert_eq!(
        lock_host(&kv, &prefix, "policy1/kept").await.as_deref(),
        Some("host-a")
    );
    let refused = mount(&a, "policy1/new", "c2").await;
    assert!(refused.contains("mount"), "{refused}");
    assert!(fa.mounted_volumes() == vec![vref("policy1/kept")]);
    fa.heal();
    until(
        Duration::from_secs(5),
        "new mounts are accepted again",
        async || mount(&a, "policy1/new", "c2").await.is_empty(),
    )
    .await;
    assert!(record(&kv, &prefix, "host-a", "policy1/kept").await);
    assert_eq!(unmount(&a, "policy1/kept", "c1").await, "");
    assert_eq!(unmount(&a, "policy1/new", "c2").await, "");
    assert!(fa.mounted_volumes().is_empty());
    a.stop().await;
}

/// `--on-lease-loss keep`: a volume another host took while this host's lease was lost
/// stays mounted for the containers that have it, but is never handed to a new container
/// (before: it was, with nobody's lock behind it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_refuses_new_mounts_of_a_volume_it_lost() {
    let Pair {
        mem,
        prefix,
        flaky,
        fa,
        a,
        b,
    } = pair(2, LeaseLossAction::Keep, true).await;
    let b = b.unwrap();
    a_mounts_then_b_takes_over(&a, &b, &flaky, "policy1/kept").await;
    let refused = mount(&a, "policy1/kept", "a2").await;
    assert!(!refused.is_empty(), "host-a handed out a volume it lost");
    flaky.heal();
    // Host A has a new lease and finds host-b holding the volume; it keeps its mount...
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fa.mounted_volumes(), vec![vref("policy1/kept")]);
    // ...but a new container does not get it.
    let refused = mount(&a, "policy1/kept", "a3").await;
    assert!(refused.contains("host-b"), "{refused}");
    // The old container leaving unmounts it and leaves host-b's lock alone.
    assert_eq!(unmount(&a, "policy1/kept", "a1").await, "");
    assert!(fa.mounted_volumes().is_empty());
    assert_eq!(
        lock_host(&mem, &prefix, "policy1/kept").await.as_deref(),
        Some("host-b")
    );
    assert_eq!(unmount(&b, "policy1/kept", "b1").await, "");
    a.stop().await;
    b.stop().await;
}

/// Unmount while the store is unreachable: the filesystem is unmounted at once (Docker
/// gets its answer), and the record and lock are cleaned up in the background once the
/// store is back (before: the unmount failed and the volume stayed mounted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmount_while_the_store_is_down_still_unmounts() {
    let Pair {
        mem,
        prefix,
        flaky,
        fa,
        a,
        b: _,
    } = pair(30, LeaseLossAction::Unmount, false).await;
    create(&a, "policy1/down").await;
    assert_eq!(mount(&a, "policy1/down", "a1").await, "");
    flaky.fail_everything();
    assert_eq!(unmount(&a, "policy1/down", "a1").await, "");
    assert!(fa.mounted_volumes().is_empty(), "still mounted");
    assert!(
        fa.calls()
            .iter()
            .any(|c| c.starts_with("release policy1/down")),
        "the backend lock was not released: {:?}",
        fa.calls()
    );
    let path = send(
        &a.sock,
        &Request::Path {
            name: "policy1/down".into(),
        },
    )
    .await;
    assert_eq!(path["Mountpoint"], "");
    tokio::time::sleep(Duration::from_millis(500)).await;
    flaky.heal();
    until(
        Duration::from_secs(5),
        "record and lock are cleaned up",
        async || {
            !record(&mem, &prefix, "host-a", "policy1/down").await
                && lock_host(&mem, &prefix, "policy1/down").await.is_none()
        },
    )
    .await;
    // The volume is usable again at once.
    assert_eq!(mount(&a, "policy1/down", "a2").await, "");
    assert_eq!(unmount(&a, "policy1/down", "a2").await, "");
    a.stop().await;
}

/// The first Mount on a host is two store transactions (take the lock and read the
/// volume, its runtime and this host's record; publish the record), the last Unmount one
/// (record delete + lock release), a second container's Mount and Unmount one each, and
/// Get and Path of a volume mounted here none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_costs_two_transactions_and_get_path_none() {
    let (mem, prefix) = store(30).await;
    upload(&mem, &prefix, "policy1", NULL).await;
    let counting = CountingKv::new(mem.clone());
    let dir = tmp("sock");
    let fa = FakeDriver::new(BackendKind::Null);
    let a = HostSpec::new(
        Arc::new(counting.clone()),
        drivers(&fa),
        "host-a",
        &dir,
        &prefix,
    )
    .start()
    .await;
    create(&a, "policy1/rt").await;
    // Let the plugin's view of the new volume settle, then count from zero.
    tokio::time::sleep(Duration::from_millis(200)).await;
    counting.take();
    assert_eq!(mount(&a, "policy1/rt", "c1").await, "");
    let c = counting.take();
    assert_eq!((c.txn, c.total()), (2, 2), "first Mount: {c:?}");
    assert_eq!(mount(&a, "policy1/rt", "c2").await, "");
    let c = counting.take();
    assert_eq!((c.txn, c.total()), (1, 1), "second Mount: {c:?}");
    let got = send(
        &a.sock,
        &Request::Get {
            name: "policy1/rt".into(),
        },
    )
    .await;
    assert_eq!(err_of(&got), "");
    assert_eq!(got["Volume"]["Status"]["lock"]["host"], "host-a", "{got}");
    assert_eq!(got["Volume"]["Status"]["mounted"]["users"], 2, "{got}");
    let path = send(
        &a.sock,
        &Request::Path {
            name: "policy1/rt".into(),
        },
    )
    .await;
    assert_ne!(path["Mountpoint"], "");
    let c = counting.take();
    assert_eq!(c.total(), 0, "Get and Path of a mounted volume: {c:?}");
    assert_eq!(unmount(&a, "policy1/rt", "c2").await, "");
    let c = counting.take();
    assert_eq!((c.txn, c.total()), (1, 1), "Unmount of one of two: {c:?}");
    assert_eq!(unmount(&a, "policy1/rt", "c1").await, "");
    let c = counting.take();
    assert_eq!((c.txn, c.total()), (1, 1), "last Unmount: {c:?}");
    assert_eq!(lock_host(&mem, &prefix, "policy1/rt").await, None);
    assert!(!record(&mem, &prefix, "host-a", "policy1/rt").await);
    a.stop().await;
}
