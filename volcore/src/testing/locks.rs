//! The use-lock suite: the lock protocol of DESIGN.md §6 against any [`KvStore`].
//!
//! [`lock_conformance!`](crate::lock_conformance) makes one `#[tokio::test]` per case.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use super::{FlakyKv, KvCaps};
use crate::keys::{Keys, LockKind};
use crate::kv::{KvError, KvStore, Precondition, TxnOp, WatchEvent};
use crate::lease::{LeaseKeeper, LeaseState};
use crate::lock::{LockError, LockReason, LockRequest, Locker};
use crate::name::{HostName, VolumeRef};

/// One `#[tokio::test]` per lock case.
#[macro_export]
macro_rules! lock_conformance {
    ($name:ident, $make:expr, $caps:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::lock_conformance!(@cases $make, $caps;
                acquire_release, same_holder_reacquires, all_or_none, waiter_watches_release,
                wait_times_out, dead_holder_expires_within_ttl, live_holder_never_displaced,
                contenders_exactly_one_wins, lease_loss_published_before_expiry,
                restart_rebinds_own_lock, fence_rejects_replaced_holder, release_reports_stolen_lock,
                force_remove_clears);
        }
    };
    (@cases $make:expr, $caps:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let _guard = $crate::testing::suite_guard(stringify!($case)).await;
                let kv: ::std::sync::Arc<dyn $crate::kv::KvStore> = $make;
                let ns = $crate::testing::unique_ns(stringify!($case));
                $crate::testing::locks::$case(kv, &ns, &$caps).await;
            }
        )*
    };
}

fn keys(ns: &str) -> Keys {
    // ns is "/volcore-test/<id>/<case>/"; Keys wants no trailing slash.
    Keys::new(ns.trim_end_matches('/')).expect("test prefix")
}

fn locker(kv: &Arc<dyn KvStore>, ns: &str, host: &str) -> Locker {
    Locker::new(kv.clone(), keys(ns), HostName::new(host).expect("host"))
}

fn vol(s: &str) -> VolumeRef {
    VolumeRef::parse(s).expect("volume ref")
}

fn both(v: &VolumeRef, reason: LockReason) -> Vec<LockRequest> {
    vec![
        LockRequest::new(LockKind::Mount, v.clone(), reason),
        LockRequest::new(LockKind::Op, v.clone(), reason),
    ]
}

fn mount(v: &VolumeRef) -> Vec<LockRequest> {
    vec![LockRequest::new(
        LockKind::Mount,
        v.clone(),
        LockReason::Mount,
    )]
}

/// Take two locks in one call; they are stored with holder, reason and token; release
/// removes them.
pub async fn acquire_release(kv: Arc<dyn KvStore>, ns: &str, caps: &KvCaps) {
    let a = locker(&kv, ns, "host-a");
    let lease = kv.lease_grant(caps.min_ttl * 10).await.unwrap();
    let v = vol("p/v");
    let held = a
        .acquire(&both(&v, LockReason::Create), &lease, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(held.len(), 2);
    for h in &held {
        let e = kv.get(&h.key).await.unwrap().expect("lock key");
        assert_eq!(e.create_rev, h.token, "token is the create revision");
        assert_eq!(e.lease.as_ref(), Some(&lease));
        assert_eq!(h.holder.host.as_str(), "host-a");
        assert_eq!(h.holder.reason, LockReason::Create);
        let json: serde_json::Value = serde_json::from_slice(&e.value).unwrap();
        assert_eq!(json["host"], "host-a");
        assert_eq!(json["volume"], "p/v");
        assert!(json["since"].as_str().unwrap().ends_with('Z'));
    }
    let listed = a.list(None).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(a.list(Some(LockKind::Mount)).await.unwrap().len(), 1);
    assert_eq!(
        a.get(LockKind::Op, &v)
            .await
            .unwrap()
            .unwrap()
            .holder
            .reason,
        LockReason::Create
    );
    a.release(&held).await.unwrap();
    assert!(a.list(None).await.unwrap().is_empty());
    kv.lease_revoke(&lease).await.unwrap();
}

/// The same holder re-acquires idempotently; another host is refused with a message
/// naming the holder and the force-remove command.
pub async fn same_holder_reacquires(kv: Arc<dyn KvStore>, ns: &str, caps: &KvCaps) {
    let a = locker(&kv, ns, "host-a");
    let b = locker(&kv, ns, "host-b");
    let la = kv.lease_grant(caps.min_ttl * 10).await.unwrap();
    let lb = kv.lease_grant(caps.min_ttl * 10).await.unwrap();
    let v = vol("p/v");
    let first = a.try_acquire(&mount(&v), &la).await.unwrap();
    let again = a.try_acquire(&mount(&v), &la).await.unwrap();
    assert_eq!(first[0].token, again[0].token);
    let err = b.try_acquire(&mount(&v), &lb).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LockError::Held { .. }), "{msg}");
    assert!(
        msg.contains("locked (mount lock) by host host-a for Mount since"),
        "{msg}"
    );
    assert!(
        msg.ends_with("if host-a is dead, run: volcli use force-remove p/v"),
        "{msg}"
    );
    kv.lease_revoke(&la).await.unwrap();
    kv.lease_revoke(&lb).await.unwrap();
}

/// When one of several locks is held by someone else, none is taken.
pub async fn all_or_none(kv: Arc<dyn KvStore>, ns: &str, caps: &KvCaps) {
    let a = locker(&kv, ns, "host-a");
    let b = locker(&kv, ns, "host-b");
    let la = kv.lease_grant(caps.min_ttl * 10).await.unwrap();
    let lb = kv.lease_grant(caps.min_ttl * 10).await.unwrap();
    let v = vol("p/v");
    b.try_acquire(
        &[LockRequest::new(
            LockKind::Op,
            v.clone(),
            LockReason::Snapshot,
        )],
        &lb,
    )
    .await
    .unwrap();
    let err = a
        .try_acquire(&both(&v, LockReason::Remove), &la)
        .await
        .unwrap_err();
    assert!(
        matches!(err, LockError::Held { ref holder } if holder.host.as_str() == "host-b"),
        "{err}"
    );
    assert!(
        a.get(LockKind::Mount, &v).await.unwrap().is_none(),
        "a partial lock was left behind"
    );
    let dup = a
        .try_acquire(&[mount(&v), mount(&v)].concat(), &la)
        .await
        .unwrap_err();
    assert!(matches!(dup, LockError::Duplicate { .. }), "{dup}");
    kv.lease_revoke(&la).await.unwrap();
    kv.lease_revoke(&lb).await.unwrap();
}

/// A waiter gets the lock soon after the holder releases it (it watches, not polls).
pub async fn waiter_watches_release(kv: Arc<dyn KvStore>, ns: &str, caps: &KvCaps) {
    let a = locker(&kv, ns, "host-a");
    let b = locker(&kv, ns, "host-b");
    let la = kv.lease_grant(caps.min_ttl * 10).await.unwrap();
    let lb = kv.lease_grant(caps.min_ttl * 10).await.unwrap();
    let v = vol("p/v");
    let held = a
        .try_acquire(&both(&v, LockReason::Create), &la)
        .await
        .unwrap();
    let waiter = {
        let (b, lb, v) = (b.clone(), lb.clone(), v.clone());
        tokio::spawn(async move {
            let got = b
                .acquire(&both(&v, LockReason::Remove), &lb, Duration::from_secs(20))
                .await;
            (got, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "waiter got a held lock");
    let released = Instant::now();
    a.release(&held).await.unwrap();
    let (got, at) = waiter.await.unwrap();
    let got = got.unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|h| h.holder.host.as_str() == "host-b"));
    // A lock taken after waiting carries the fencing token of the entry it created.
    for h in &got {
        let e = kv.get(&h.key).await.unwrap().expect("lock stored");
        assert_eq!(
            e.create_rev, h.token,
            "{}: token is the create revision",
            h.key
        );
    }
    let took = at - released;
    assert!(
        took < Duration::from_secs(2),
        "waiter took {took:?} after release"
    );
    kv.lease_revoke(&la).await.unwrap();
    kv.lease_revoke(&lb).await.unwrap();
}

/// A waiter gives up at its deadline with `Held`.
pub async fn wait_times_out(kv: Arc<dyn KvStore>, ns: &str, caps: &KvCaps) {
    let a = locker(&kv, ns, "host-a");
    let b = locker(&kv, ns, "host-b");
    let la = kv.lease_grant(caps.min_ttl * 10).await.unwrap();
    let lb = kv.lease_grant(caps.min_ttl * 10).await.unwrap();
    let v = vol("p/v");
    a.try_acquire(&mount(&v), &la).await.unwrap();
    let start = Instant::now();
    let err = b
        .acquire(&mount(&v), &lb, Duration::from_millis(600))
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, LockError::Held { .. }), "{err}");
    assert!(
        took >= Duration::from_millis(600),
        "gave up early: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "gave up late: {took:?}");
    kv.lease_revoke(&la).await.unwrap();
    kv.lease_revoke(&lb).await.unwrap();
}

/// A holder whose keepalive stops loses its locks within TTL + 1 s; a waiter then gets
/// them.
pub async fn dead_holder_expires_within_ttl(kv: Arc<dyn KvStore>, ns: &str, caps: &KvCaps) {
    let ttl = caps.min_ttl;
    let a = locker(&kv, ns, "host-a");
    let b = locker(&kv, ns, "host-b");
    let keeper = LeaseKeeper::start(kv.clone(), ttl).await.unwrap();
    let la = keeper.lease().unwrap();
    let lb = kv.lease_grant(ttl * 10).await.unwrap();
    let v = vol("p/v");
    a.try_acquire(&both(&v, LockReason::Mount), &la)
        .await
        .unwrap();
    // Outlive a few renewals first: a live holder keeps its locks.
    tokio::time::sleep(ttl * 2).await;
    assert!(
        b.try_acquire(&mount(&v), &lb).await.is_err(),
        "live holder lost its lock"
    );
    let waiter = {
        let (b, lb, v) = (b.clone(), lb.clone(), v.clone());
        tokio::spawn(async move {
            b.acquire(&both(&v, LockReason::Mount), &lb, Duration::from_secs(30))
                .await
                .map(|h| (h, Instant::now()))
        })
    };
    let died = Instant::now();
    keeper.abandon().await;
    let (held, at) = waiter.await.unwrap().unwrap();
    let took = at - died;
    assert!(
        took <= ttl + Duration::from_secs(1),
        "locks of a dead holder lasted {took:?} with TTL {ttl:?}"
    );
    assert!(held.iter().all(|h| h.holder.host.as_str() == "host-b"));
    kv.lease_revoke(&lb).await.unwrap();
}

/// A lock held by a live holder is never granted to any of 50 concurrent contenders.
pub async fn live_holder_never_displaced(kv: Arc<dyn KvStore>, ns: &str, caps: &KvCaps) {
    let holder = locker(&kv, ns, "holder");
    let lh = kv.lease_grant(caps.min_ttl * 20).await.unwrap();
    let v = vol("p/v");
    let held = holder
        .try_acquire(&both(&v, LockReason::Mount), &lh)
        .await
        .unwrap();
    let shared = kv.lease_grant(caps.min_ttl * 20).await.unwrap();
    for round in 0..5 {
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let l = locker(&kv, ns, &format!("contender-{i}"));
                let (lease, v) = (shared.clone(), v.clone());
                tokio::spawn(
                    async move { l.try_acquire(&both(&v, LockReason::Mount), &lease).await },
                )
            })
            .collect();
        for t in tasks {
            match t.await.unwrap() {
                Err(LockError::Held { holder }) => assert_eq!(holder.host.as_str(), "holder"),
                other => panic!("round {round}: a contender got {other:?}"),
            }
        }
        for h in &held {
            let e = kv.get(&h.key).await.unwrap().unwrap();
            assert_eq!(e.create_rev, h.token, "round {round}: lock replaced");
        }
    }
    kv.lease_revoke(&lh).await.unwrap();
    kv.lease_revoke(&shared).await.unwrap();
}

/// 50 contenders race for a free lock: exactly one wins, every round.
pub async fn contenders_exactly_one_wins(kv: Arc<dyn KvStore>, ns: &str, caps: &KvCaps) {
    let shared = kv.lease_grant(caps.min_ttl * 20).await.unwrap();
    let v = vol("p/v");
    for round in 0..5 {
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let l = locker(&kv, ns, &format!("contender-{i}"));
                let (lease, v) = (shared.clone(), v.clone());
                tokio::spawn(async move {
                    (
                        l.clone(),
                        l.try_acquire(&both(&v, LockReason::Create), &lease).await,
                    )
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            let (l, res) = t.await.unwrap();
            match res {
                Ok(h) => winners.push((l, h)),
                Err(LockError::Held { .. }) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {} winners", winners.len());
        let (l, h) = winners.pop().unwrap();
        l.release(&h).await.unwrap();
    }
    kv.lease_revoke(&shared).await.unwrap();
}

/// When renewals stop getting through, `Lost` is published before the store expires the
/// lease (and with it the locks).
pub async fn lease_loss_published_before_expiry(kv: Arc<dyn KvStore>, ns: &str, caps: &KvCaps) {
    let ttl = caps.min_ttl * 2;
    let flaky = Arc::new(FlakyKv::new(kv.clone()));
    let keeper = LeaseKeeper::start(flaky.clone(), ttl).await.unwrap();
    let lease = keeper.lease().unwrap();
    let a = Locker::new(flaky.clone(), keys(ns), HostName::new("host-a").unwrap());
    let v = vol("p/v");
    let held = a.try_acquire(&mount(&v), &lease).await.unwrap();
    let mut states = keeper.subscribe();
    let mut gone = kv.watch(&held[0].key, None).await.unwrap();
    flaky.hang_keepalives();
    let cut = Instant::now();
    let lost_at = loop {
        tokio::time::timeout(ttl * 3, states.changed())
            .await
            .expect("no lease state change")
            .unwrap();
        // The keeper may already have granted a new lease: a watch channel shows the
        // latest state, and a different live lease also means the old one was lost.
        match states.borrow_and_update().clone() {
            LeaseState::Lost { lease: l } if l == lease => break Instant::now(),
            LeaseState::Live { lease: l } if l != lease => break Instant::now(),
            _ => {}
        }
    };
    // The lock must still be there when loss is declared...
    let still = kv.get(&held[0].key).await.unwrap();
    assert!(
        still.is_some(),
        "loss published only after the store expired the lease ({:?} after the cut)",
        lost_at - cut
    );
    // ...and vanish later, when the store expires the lease.
    let gone_at = loop {
        match tokio::time::timeout(ttl * 3, gone.next())
            .await
            .expect("lock never expired")
        {
            Some(Ok(WatchEvent::Delete { .. })) => break Instant::now(),
            Some(Ok(_)) => continue,
            other => panic!("watch: {other:?}"),
        }
    };
    assert!(lost_at < gone_at);
    assert!(
        lost_at - cut < ttl,
        "loss declared {:?} after the cut, TTL {ttl:?}",
        lost_at - cut
    );
    flaky.heal();
    // The keeper recovers with a new lease.
    let fresh = super::eventually(ttl * 3, "a new live lease", || {
        let s = keeper.state();
        let old = lease.clone();
        async move {
            match s {
                LeaseState::Live { lease: l } if l != old => Some(l),
                _ => None,
            }
        }
    })
    .await;
    a.try_acquire(&mount(&v), &fresh).await.unwrap();
    keeper.shutdown().await;
    assert!(
        kv.get(&held[0].key).await.unwrap().is_none(),
        "shutdown revokes the lease and its locks"
    );
}

/// A restarted daemon (same host and owner, new lease) re-acquires its own lock, keeping
/// the token; another owner on the same host is another holder, even with the same lease.
pub async fn restart_rebinds_own_lock(kv: Arc<dyn KvStore>, ns: &str, caps: &KvCaps) {
    let a = locker(&kv, ns, "host-a");
    let old = kv.lease_grant(caps.min_ttl * 10).await.unwrap();
    let v = vol("p/v");
    let before = a.try_acquire(&mount(&v), &old).await.unwrap();
    let new = kv.lease_grant(caps.min_ttl * 10).await.unwrap();
    let after = a.try_acquire(&mount(&v), &new).await.unwrap();
    assert_eq!(
        before[0].token, after[0].token,
        "re-adoption keeps the fencing token"
    );
    kv.lease_revoke(&old).await.unwrap();
    let e = kv
        .get(&after[0].key)
        .await
        .unwrap()
        .expect("lock survives the old lease");
    assert_eq!(e.lease.as_ref(), Some(&new));
    // Another owner on the same host is another holder, with any lease.
    let other = kv.lease_grant(caps.min_ttl * 10).await.unwrap();
    let op = a.with_owner("operation-1");
    for lease in [&other, &new] {
        let err = op
            .try_acquire(
                &[LockRequest::new(
                    LockKind::Mount,
                    v.clone(),
                    LockReason::Remove,
                )],
                lease,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, LockError::Held { .. }), "{err}");
    }
    kv.lease_revoke(&new).await.unwrap();
    kv.lease_revoke(&other).await.unwrap();
}

/// Writes fenced by a lock fail once the lock was taken over.
pub async fn fence_rejects_replaced_holder(kv: Arc<dyn KvStore>, ns: &str, caps: &KvCaps) {
    let a = locker(&kv, ns, "host-a");
    let b = locker(&kv, ns, "host-b");
    let la = kv.lease_grant(caps.min_ttl * 10).await.unwrap();
    let lb = kv.lease_grant(caps.min_ttl * 10).await.unwrap();
    let v = vol("p/v");
    let held = a.try_acquire(&mount(&v), &la).await.unwrap();
    let data = format!("{ns}data");
    let write = |h: &crate::lock::HeldLock, val: &[u8]| {
        vec![
            h.fence(),
            TxnOp::Put {
                key: data.clone(),
                value: val.to_vec(),
                pre: Precondition::Any,
                lease: None,
            },
        ]
    };
    kv.txn(write(&held[0], b"a1")).await.unwrap();
    b.force_remove(&v, &[LockKind::Mount]).await.unwrap();
    let bh = b.try_acquire(&mount(&v), &lb).await.unwrap();
    let res = kv.txn(write(&held[0], b"a2")).await;
    assert!(matches!(res, Err(KvError::Conflict { .. })), "{res:?}");
    kv.txn(write(&bh[0], b"b1")).await.unwrap();
    assert_eq!(kv.get(&data).await.unwrap().unwrap().value, b"b1");
    kv.lease_revoke(&la).await.unwrap();
    kv.lease_revoke(&lb).await.unwrap();
}

/// Releasing a lock somebody else holds now leaves it alone and says who has it.
pub async fn release_reports_stolen_lock(kv: Arc<dyn KvStore>, ns: &str, caps: &KvCaps) {
    let a = locker(&kv, ns, "host-a");
    let b = locker(&kv, ns, "host-b");
    let la = kv.lease_grant(caps.min_ttl * 10).await.unwrap();
    let lb = kv.lease_grant(caps.min_ttl * 10).await.unwrap();
    let v = vol("p/v");
    let held = a
        .try_acquire(&both(&v, LockReason::Mount), &la)
        .await
        .unwrap();
    b.force_remove(&v, &[LockKind::Mount]).await.unwrap();
    b.try_acquire(&mount(&v), &lb).await.unwrap();
    let err = a.release(&held).await.unwrap_err();
    assert!(err.to_string().contains("host host-b holds it"), "{err}");
    assert!(
        a.get(LockKind::Op, &v).await.unwrap().is_none(),
        "the lock still ours was not released"
    );
    assert_eq!(
        a.get(LockKind::Mount, &v)
            .await
            .unwrap()
            .unwrap()
            .holder
            .host
            .as_str(),
        "host-b"
    );
    kv.lease_revoke(&la).await.unwrap();
    kv.lease_revoke(&lb).await.unwrap();
}

/// `force_remove` clears both kinds, whoever holds them.
pub async fn force_remove_clears(kv: Arc<dyn KvStore>, ns: &str, caps: &KvCaps) {
    let a = locker(&kv, ns, "host-a");
    let la = kv.lease_grant(caps.min_ttl * 10).await.unwrap();
    let v = vol("p/v");
    a.try_acquire(&both(&v, LockReason::Maintenance), &la)
        .await
        .unwrap();
    let admin = locker(&kv, ns, "admin");
    let removed = admin
        .force_remove(&v, &[LockKind::Mount, LockKind::Op])
        .await
        .unwrap();
    assert_eq!(removed.len(), 2);
    assert!(admin.list(None).await.unwrap().is_empty());
    assert!(admin
        .force_remove(&v, &[LockKind::Mount])
        .await
        .unwrap()
        .is_empty());
    kv.lease_revoke(&la).await.unwrap();
}
