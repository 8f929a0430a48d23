//! The KV conformance suite: the same cases for every [`KvStore`].
//!
//! Use [`kv_conformance!`](crate::kv_conformance) to get one `#[tokio::test]` per case:
//!
//! ```text
//! volcore::kv_conformance!(memory, std::sync::Arc::new(volcore::MemKv::new()), volcore::testing::KvCaps::LOCAL);
//! ```

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use super::KvCaps;
use crate::kv::{KvError, KvStore, Precondition, PutOpts, TxnOp, WatchEvent, WatchStream};

/// The names of every case, for the macro.
#[macro_export]
macro_rules! kv_conformance {
    ($name:ident, $make:expr, $caps:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::kv_conformance!(@cases $make, $caps;
                put_get_delete, update_keeps_create_revision, list_prefix_no_bleed,
                put_absent_conflict, put_revision_cas, delete_preconditions,
                txn_all_or_nothing, txn_fence_on_create_revision, txn_duplicate_key_rejected,
                txn_only_checks, txn_reads_with_writes, watch_from_revision_in_order, watch_from_now,
                watch_prefix_isolation, watch_compaction_resync,
                lease_grant_keepalive_revoke, lease_keepalive_extends, lease_expiry_deletes_keys,
                lease_revoke_deletes_keys, put_with_ended_lease_fails, race_create_one_winner);
        }
    };
    (@cases $make:expr, $caps:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let _guard = $crate::testing::suite_guard(stringify!($case)).await;
                let kv: ::std::sync::Arc<dyn $crate::kv::KvStore> = $make;
                let ns = $crate::testing::unique_ns(stringify!($case));
                $crate::testing::kv::$case(kv, &ns, &$caps).await;
            }
        )*
    };
}

const WAIT: Duration = Duration::from_secs(5);

async fn next_event(s: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(WAIT, s.next()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch stream ended"),
        Err(_) => panic!("no watch event within {WAIT:?}"),
    }
}

fn describe(ev: &WatchEvent) -> String {
    match ev {
        WatchEvent::Put(e) => format!("put {} {}", e.key, String::from_utf8_lossy(&e.value)),
        WatchEvent::Delete { key, .. } => format!("delete {key}"),
        WatchEvent::Resync { .. } => "resync".into(),
    }
}

fn event_rev(ev: &WatchEvent) -> u64 {
    match ev {
        WatchEvent::Put(e) => e.mod_rev,
        WatchEvent::Delete { revision, .. } | WatchEvent::Resync { revision } => *revision,
    }
}

/// get / put / delete round trip.
pub async fn put_get_delete(kv: Arc<dyn KvStore>, ns: &str, _caps: &KvCaps) {
    let k = format!("{ns}k");
    assert_eq!(kv.get(&k).await.unwrap(), None);
    let rev = kv
        .put(&k, b"v1".to_vec(), PutOpts::default())
        .await
        .unwrap();
    let e = kv.get(&k).await.unwrap().expect("key written");
    assert_eq!(e.key, k);
    assert_eq!(e.value, b"v1");
    assert_eq!(e.create_rev, rev);
    assert_eq!(e.mod_rev, rev);
    assert_eq!(e.lease, None);
    assert!(kv.revision().await.unwrap() >= rev);
    assert!(kv.delete(&k, Precondition::Any).await.unwrap());
    assert_eq!(kv.get(&k).await.unwrap(), None);
    assert!(
        !kv.delete(&k, Precondition::Any).await.unwrap(),
        "second delete reports nothing deleted"
    );
}

/// An update keeps the create revision and advances the mod revision.
pub async fn update_keeps_create_revision(kv: Arc<dyn KvStore>, ns: &str, _caps: &KvCaps) {
    let k = format!("{ns}k");
    let r1 = kv.put(&k, b"a".to_vec(), PutOpts::default()).await.unwrap();
    let r2 = kv.put(&k, b"b".to_vec(), PutOpts::default()).await.unwrap();
    assert!(r2 > r1);
    let e = kv.get(&k).await.unwrap().unwrap();
    assert_eq!(
        (e.create_rev, e.mod_rev, e.value.as_slice()),
        (r1, r2, &b"b"[..])
    );
}

/// A directory listing does not bleed into siblings that share a prefix.
pub async fn list_prefix_no_bleed(kv: Arc<dyn KvStore>, ns: &str, _caps: &KvCaps) {
    for k in ["a/b", "a/bc", "a/b/c", "a/b/d", "a/c"] {
        kv.put(
            &format!("{ns}{k}"),
            k.as_bytes().to_vec(),
            PutOpts::default(),
        )
        .await
        .unwrap();
    }
    let keys = |v: Vec<crate::kv::Entry>| {
        v.into_iter()
            .map(|e| e.key.trim_start_matches(ns).to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(kv.list(&format!("{ns}a/b/")).await.unwrap()),
        vec!["a/b/c", "a/b/d"]
    );
    assert_eq!(
        keys(kv.list(&format!("{ns}a/")).await.unwrap()),
        vec!["a/b", "a/b/c", "a/b/d", "a/bc", "a/c"]
    );
    assert!(kv.list(&format!("{ns}zzz/")).await.unwrap().is_empty());
}

/// Create-only puts conflict when the key exists, and change nothing.
pub async fn put_absent_conflict(kv: Arc<dyn KvStore>, ns: &str, _caps: &KvCaps) {
    let k = format!("{ns}k");
    let r1 = kv
        .put(&k, b"first".to_vec(), PutOpts::absent())
        .await
        .unwrap();
    match kv.put(&k, b"second".to_vec(), PutOpts::absent()).await {
        Err(KvError::Conflict { key, current }) => {
            assert_eq!(key, k);
            assert_eq!(current, Some(r1));
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(kv.get(&k).await.unwrap().unwrap().value, b"first");
}

/// Compare-and-swap on the mod revision.
pub async fn put_revision_cas(kv: Arc<dyn KvStore>, ns: &str, _caps: &KvCaps) {
    let k = format!("{ns}k");
    let r1 = kv.put(&k, b"1".to_vec(), PutOpts::default()).await.unwrap();
    let r2 = kv
        .put(
            &k,
            b"2".to_vec(),
            PutOpts {
                precondition: Precondition::Revision(r1),
                lease: None,
            },
        )
        .await
        .unwrap();
    let stale = kv
        .put(
            &k,
            b"3".to_vec(),
            PutOpts {
                precondition: Precondition::Revision(r1),
                lease: None,
            },
        )
        .await;
    assert!(
        matches!(stale, Err(KvError::Conflict { current: Some(c), .. }) if c == r2),
        "{stale:?}"
    );
    let missing = kv
        .put(
            &format!("{ns}missing"),
            b"x".to_vec(),
            PutOpts {
                precondition: Precondition::Revision(r1),
                lease: None,
            },
        )
        .await;
    assert!(
        matches!(missing, Err(KvError::Conflict { current: None, .. })),
        "{missing:?}"
    );
    assert_eq!(kv.get(&k).await.unwrap().unwrap().value, b"2");
}

/// Deletes honour preconditions.
pub async fn delete_preconditions(kv: Arc<dyn KvStore>, ns: &str, _caps: &KvCaps) {
    let k = format!("{ns}k");
    let r = kv.put(&k, b"1".to_vec(), PutOpts::default()).await.unwrap();
    let wrong = kv.delete(&k, Precondition::Revision(r + 1000)).await;
    assert!(matches!(wrong, Err(KvError::Conflict { .. })), "{wrong:?}");
    assert!(kv.get(&k).await.unwrap().is_some());
    let wrong = kv.delete(&k, Precondition::CreateRevision(r + 1000)).await;
    assert!(matches!(wrong, Err(KvError::Conflict { .. })), "{wrong:?}");
    assert!(kv
        .delete(&k, Precondition::CreateRevision(r))
        .await
        .unwrap());
    let gone = kv.delete(&k, Precondition::Revision(r)).await;
    assert!(
        matches!(gone, Err(KvError::Conflict { current: None, .. })),
        "{gone:?}"
    );
}

/// A transaction applies all of its writes or none.
pub async fn txn_all_or_nothing(kv: Arc<dyn KvStore>, ns: &str, _caps: &KvCaps) {
    let (a, b, c) = (format!("{ns}a"), format!("{ns}b"), format!("{ns}c"));
    kv.put(&b, b"taken".to_vec(), PutOpts::default())
        .await
        .unwrap();
    let put = |k: &str, pre| TxnOp::Put {
        key: k.to_owned(),
        value: b"t".to_vec(),
        pre,
        lease: None,
    };
    let res = kv
        .txn(vec![
            put(&a, Precondition::Absent),
            put(&b, Precondition::Absent),
        ])
        .await;
    match res {
        Err(KvError::Conflict { key, .. }) => assert_eq!(key, b),
        other => panic!("expected Conflict on {b}, got {other:?}"),
    }
    assert_eq!(
        kv.get(&a).await.unwrap(),
        None,
        "a failed transaction wrote a key"
    );
    assert_eq!(kv.get(&b).await.unwrap().unwrap().value, b"taken");
    let out = kv
        .txn(vec![
            put(&a, Precondition::Absent),
            put(&c, Precondition::Absent),
            TxnOp::Delete {
                key: b.clone(),
                pre: Precondition::Any,
            },
        ])
        .await
        .unwrap();
    let ea = kv.get(&a).await.unwrap().unwrap();
    let ec = kv.get(&c).await.unwrap().unwrap();
    assert_eq!(ea.mod_rev, out.revision);
    assert_eq!(ec.mod_rev, out.revision, "one transaction is one revision");
    assert_eq!(kv.get(&b).await.unwrap(), None);
}

/// A check on the create revision fences out a replaced lock holder.
pub async fn txn_fence_on_create_revision(kv: Arc<dyn KvStore>, ns: &str, _caps: &KvCaps) {
    let (lock, data) = (format!("{ns}lock"), format!("{ns}data"));
    let token = kv
        .put(&lock, b"me".to_vec(), PutOpts::absent())
        .await
        .unwrap();
    // Updating the lock value keeps the token valid.
    kv.put(&lock, b"me, later".to_vec(), PutOpts::default())
        .await
        .unwrap();
    let write = |v: &[u8]| {
        vec![
            TxnOp::Check {
                key: lock.clone(),
                pre: Precondition::CreateRevision(token),
            },
            TxnOp::Put {
                key: data.clone(),
                value: v.to_vec(),
                pre: Precondition::Any,
                lease: None,
            },
        ]
    };
    kv.txn(write(b"fenced write 1")).await.unwrap();
    kv.delete(&lock, Precondition::Any).await.unwrap();
    kv.put(&lock, b"someone else".to_vec(), PutOpts::absent())
        .await
        .unwrap();
    let res = kv.txn(write(b"fenced write 2")).await;
    assert!(
        matches!(&res, Err(KvError::Conflict { key, .. }) if *key == lock),
        "{res:?}"
    );
    assert_eq!(
        kv.get(&data).await.unwrap().unwrap().value,
        b"fenced write 1"
    );
}

/// Writing one key twice in a transaction is an invalid request, not a conflict.
pub async fn txn_duplicate_key_rejected(kv: Arc<dyn KvStore>, ns: &str, _caps: &KvCaps) {
    let k = format!("{ns}k");
    let put = TxnOp::Put {
        key: k.clone(),
        value: b"x".to_vec(),
        pre: Precondition::Any,
        lease: None,
    };
    let res = kv.txn(vec![put.clone(), put]).await;
    assert!(matches!(res, Err(KvError::Invalid { .. })), "{res:?}");
    assert_eq!(kv.get(&k).await.unwrap(), None);
}

/// A transaction of checks only writes nothing and reports the current revision.
pub async fn txn_only_checks(kv: Arc<dyn KvStore>, ns: &str, _caps: &KvCaps) {
    let k = format!("{ns}k");
    let r = kv.put(&k, b"x".to_vec(), PutOpts::default()).await.unwrap();
    let out = kv
        .txn(vec![TxnOp::Check {
            key: k.clone(),
            pre: Precondition::Revision(r),
        }])
        .await
        .unwrap();
    assert!(out.revision >= r);
    let res = kv
        .txn(vec![TxnOp::Check {
            key: k.clone(),
            pre: Precondition::Absent,
        }])
        .await;
    assert!(matches!(res, Err(KvError::Conflict { .. })), "{res:?}");
}

/// Reads in a transaction return the entries the checks saw (before its writes), in
/// order, absent keys as `None`; `Present` fails on a missing key and the whole
/// transaction with it.
pub async fn txn_reads_with_writes(kv: Arc<dyn KvStore>, ns: &str, _caps: &KvCaps) {
    let (a, b, w) = (format!("{ns}a"), format!("{ns}b"), format!("{ns}w"));
    let ra = kv.put(&a, b"A".to_vec(), PutOpts::default()).await.unwrap();
    let out = kv
        .txn(vec![
            TxnOp::Read {
                key: b.clone(),
                pre: Precondition::Any,
            },
            TxnOp::Put {
                key: a.clone(),
                value: b"A2".to_vec(),
                pre: Precondition::Revision(ra),
                lease: None,
            },
            TxnOp::Read {
                key: a.clone(),
                pre: Precondition::Present,
            },
        ])
        .await
        .unwrap();
    assert_eq!(out.reads.len(), 2, "{out:?}");
    assert_eq!(out.reads[0], None);
    let seen = out.reads[1].as_ref().expect("a is present");
    assert_eq!((seen.value.as_slice(), seen.mod_rev), (&b"A"[..], ra));
    assert_eq!(kv.get(&a).await.unwrap().unwrap().value, b"A2");
    // A missing key fails `Present`: nothing is written.
    let res = kv
        .txn(vec![
            TxnOp::Read {
                key: b.clone(),
                pre: Precondition::Present,
            },
            TxnOp::Put {
                key: w.clone(),
                value: b"x".to_vec(),
                pre: Precondition::Absent,
                lease: None,
            },
        ])
        .await;
    match res {
        Err(KvError::Conflict { key, current }) => assert_eq!((key, current), (b, None)),
        other => panic!("expected a conflict on the missing key, got {other:?}"),
    }
    assert_eq!(kv.get(&w).await.unwrap(), None);
    // Only writes report no reads.
    let out = kv
        .txn(vec![TxnOp::Put {
            key: w.clone(),
            value: b"x".to_vec(),
            pre: Precondition::Absent,
            lease: None,
        }])
        .await
        .unwrap();
    assert!(out.reads.is_empty());
}

/// A watch from a past revision replays puts and deletes in order, without gaps, then
/// continues live.
pub async fn watch_from_revision_in_order(kv: Arc<dyn KvStore>, ns: &str, _caps: &KvCaps) {
    let start = kv.revision().await.unwrap();
    let k = |s: &str| format!("{ns}{s}");
    kv.put(&k("a"), b"1".to_vec(), PutOpts::default())
        .await
        .unwrap();
    kv.put(&k("b"), b"2".to_vec(), PutOpts::default())
        .await
        .unwrap();
    kv.delete(&k("a"), Precondition::Any).await.unwrap();
    kv.txn(vec![
        TxnOp::Put {
            key: k("c"),
            value: b"3".to_vec(),
            pre: Precondition::Any,
            lease: None,
        },
        TxnOp::Delete {
            key: k("b"),
            pre: Precondition::Any,
        },
    ])
    .await
    .unwrap();
    let mut w = kv.watch(ns, Some(start)).await.unwrap();
    let mut got = Vec::new();
    let mut last = 0;
    for _ in 0..5 {
        let ev = next_event(&mut w).await;
        let r = event_rev(&ev);
        assert!(r >= last, "events out of order: {r} after {last}");
        last = r;
        got.push(describe(&ev).replace(ns, ""));
    }
    assert_eq!(
        got,
        vec!["put a 1", "put b 2", "delete a", "put c 3", "delete b"]
    );
    kv.put(&k("d"), b"4".to_vec(), PutOpts::default())
        .await
        .unwrap();
    assert_eq!(
        describe(&next_event(&mut w).await).replace(ns, ""),
        "put d 4"
    );
}

/// A watch from now sees only later changes.
pub async fn watch_from_now(kv: Arc<dyn KvStore>, ns: &str, _caps: &KvCaps) {
    kv.put(&format!("{ns}old"), b"0".to_vec(), PutOpts::default())
        .await
        .unwrap();
    let mut w = kv.watch(ns, None).await.unwrap();
    kv.put(&format!("{ns}new"), b"1".to_vec(), PutOpts::default())
        .await
        .unwrap();
    assert_eq!(
        describe(&next_event(&mut w).await).replace(ns, ""),
        "put new 1"
    );
}

/// A watch sees only its prefix.
pub async fn watch_prefix_isolation(kv: Arc<dyn KvStore>, ns: &str, _caps: &KvCaps) {
    let mut w = kv.watch(&format!("{ns}a/"), None).await.unwrap();
    kv.put(&format!("{ns}ab"), b"x".to_vec(), PutOpts::default())
        .await
        .unwrap();
    kv.put(&format!("{ns}b/1"), b"x".to_vec(), PutOpts::default())
        .await
        .unwrap();
    kv.put(&format!("{ns}a/1"), b"y".to_vec(), PutOpts::default())
        .await
        .unwrap();
    assert_eq!(
        describe(&next_event(&mut w).await).replace(ns, ""),
        "put a/1 y"
    );
}

/// A watch from a compacted revision reports `Resync`, then continues live.
pub async fn watch_compaction_resync(kv: Arc<dyn KvStore>, ns: &str, _caps: &KvCaps) {
    let start = kv.revision().await.unwrap();
    for i in 0..3 {
        kv.put(&format!("{ns}k{i}"), b"x".to_vec(), PutOpts::default())
            .await
            .unwrap();
    }
    let now = kv.revision().await.unwrap();
    kv.compact(now).await.unwrap();
    let mut w = kv.watch(ns, Some(start)).await.unwrap();
    match next_event(&mut w).await {
        WatchEvent::Resync { revision } => assert!(
            revision >= now,
            "resync at {revision} before compaction point {now}"
        ),
        other => panic!("expected Resync, got {}", describe(&other)),
    }
    kv.put(&format!("{ns}after"), b"y".to_vec(), PutOpts::default())
        .await
        .unwrap();
    loop {
        // Events between compaction and the watch may show up; the new key must.
        let ev = next_event(&mut w).await;
        if describe(&ev).replace(ns, "") == "put after y" {
            break;
        }
    }
}

/// Grant, keep alive, revoke; an ended lease cannot be renewed or revoked again.
pub async fn lease_grant_keepalive_revoke(kv: Arc<dyn KvStore>, _ns: &str, caps: &KvCaps) {
    let ttl = caps.min_ttl * 2;
    let id = kv.lease_grant(ttl).await.unwrap();
    let got = kv.lease_keepalive(&id).await.unwrap();
    assert!(
        got >= ttl - Duration::from_secs(1),
        "keepalive returned ttl {got:?} for {ttl:?}"
    );
    kv.lease_revoke(&id).await.unwrap();
    assert!(matches!(
        kv.lease_keepalive(&id).await,
        Err(KvError::LeaseLost { .. })
    ));
    assert!(matches!(
        kv.lease_revoke(&id).await,
        Err(KvError::LeaseLost { .. })
    ));
}

/// Renewals keep a lease and its keys alive past several TTLs.
pub async fn lease_keepalive_extends(kv: Arc<dyn KvStore>, ns: &str, caps: &KvCaps) {
    let ttl = caps.min_ttl;
    let id = kv.lease_grant(ttl).await.unwrap();
    let k = format!("{ns}k");
    kv.put(&k, b"x".to_vec(), PutOpts::default().with_lease(id.clone()))
        .await
        .unwrap();
    let until = Instant::now() + ttl * 3;
    while Instant::now() < until {
        tokio::time::sleep(ttl / 4).await;
        kv.lease_keepalive(&id).await.unwrap();
    }
    let e = kv
        .get(&k)
        .await
        .unwrap()
        .expect("a renewed lease's key stays");
    assert_eq!(e.lease.as_ref(), Some(&id));
    kv.lease_revoke(&id).await.unwrap();
}

/// Keys attached to a lease vanish when it expires, and watchers see the deletion.
pub async fn lease_expiry_deletes_keys(kv: Arc<dyn KvStore>, ns: &str, caps: &KvCaps) {
    let ttl = caps.min_ttl;
    let id = kv.lease_grant(ttl).await.unwrap();
    let granted = Instant::now();
    let (k1, k2, plain) = (format!("{ns}k1"), format!("{ns}k2"), format!("{ns}plain"));
    kv.put(
        &k1,
        b"x".to_vec(),
        PutOpts::default().with_lease(id.clone()),
    )
    .await
    .unwrap();
    kv.put(&k2, b"y".to_vec(), PutOpts::absent().with_lease(id.clone()))
        .await
        .unwrap();
    kv.put(&plain, b"z".to_vec(), PutOpts::default())
        .await
        .unwrap();
    let mut w = kv.watch(ns, None).await.unwrap();
    tokio::time::sleep(ttl / 2).await;
    assert!(
        kv.get(&k1).await.unwrap().is_some(),
        "key gone before its lease's TTL"
    );
    let mut deleted = Vec::new();
    while deleted.len() < 2 {
        match next_event(&mut w).await {
            WatchEvent::Delete { key, .. } => deleted.push(key),
            other => panic!("unexpected {}", describe(&other)),
        }
    }
    let took = granted.elapsed();
    deleted.sort();
    assert_eq!(deleted, vec![k1.clone(), k2.clone()]);
    assert!(
        took <= ttl + caps.expiry_slack,
        "keys vanished after {took:?}, TTL {ttl:?}"
    );
    assert!(kv.get(&k1).await.unwrap().is_none());
    assert!(
        kv.get(&plain).await.unwrap().is_some(),
        "a key without the lease was deleted"
    );
    assert!(matches!(
        kv.lease_keepalive(&id).await,
        Err(KvError::LeaseLost { .. })
    ));
}

/// Revoking a lease deletes its keys at once.
pub async fn lease_revoke_deletes_keys(kv: Arc<dyn KvStore>, ns: &str, caps: &KvCaps) {
    let id = kv.lease_grant(caps.min_ttl * 10).await.unwrap();
    let k = format!("{ns}k");
    kv.put(&k, b"x".to_vec(), PutOpts::default().with_lease(id.clone()))
        .await
        .unwrap();
    // Re-putting without the lease detaches the key from it.
    let detached = format!("{ns}detached");
    kv.put(
        &detached,
        b"x".to_vec(),
        PutOpts::default().with_lease(id.clone()),
    )
    .await
    .unwrap();
    kv.put(&detached, b"y".to_vec(), PutOpts::default())
        .await
        .unwrap();
    kv.lease_revoke(&id).await.unwrap();
    assert_eq!(kv.get(&k).await.unwrap(), None);
    assert_eq!(kv.get(&detached).await.unwrap().unwrap().value, b"y");
}

/// A write with an ended lease fails with `LeaseLost` and writes nothing.
pub async fn put_with_ended_lease_fails(kv: Arc<dyn KvStore>, ns: &str, caps: &KvCaps) {
    let id = kv.lease_grant(caps.min_ttl * 10).await.unwrap();
    kv.lease_revoke(&id).await.unwrap();
    let k = format!("{ns}k");
    let res = kv
        .put(&k, b"x".to_vec(), PutOpts::default().with_lease(id.clone()))
        .await;
    assert!(matches!(res, Err(KvError::LeaseLost { .. })), "{res:?}");
    let res = kv
        .txn(vec![TxnOp::Put {
            key: k.clone(),
            value: b"x".to_vec(),
            pre: Precondition::Absent,
            lease: Some(id),
        }])
        .await;
    assert!(matches!(res, Err(KvError::LeaseLost { .. })), "{res:?}");
    assert_eq!(kv.get(&k).await.unwrap(), None);
}

/// 50 tasks race to create one key: exactly one wins.
pub async fn race_create_one_winner(kv: Arc<dyn KvStore>, ns: &str, _caps: &KvCaps) {
    for round in 0..3 {
        let k = format!("{ns}contested-{round}");
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let kv = kv.clone();
                let k = k.clone();
                tokio::spawn(async move {
                    kv.put(&k, format!("{i}").into_bytes(), PutOpts::absent())
                        .await
                })
            })
            .collect();
        let mut wins = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(_) => wins.push(i),
                Err(KvError::Conflict { .. }) => {}
                Err(e) => panic!("task {i}: {e}"),
            }
        }
        assert_eq!(wins.len(), 1, "round {round}: winners {wins:?}");
        let v = kv.get(&k).await.unwrap().unwrap().value;
        assert_eq!(v, wins[0].to_string().into_bytes());
    }
}
