//! Which volumes are unused, stale, or ephemeral and orphaned, from the store: mount
//! records (`mounts/<host>/…`), mount locks, live host records (`hosts/`) and the time of
//! each volume's last unmount (`used/<p>/<v>`, written by the host's teardown).
//!
//! A volume is *in use* while any host has a mount record of it or anyone holds its mount
//! lock; otherwise it has been unused since its last unmount (or its creation). A policy's
//! [`Reclaim`](crate::policy::Reclaim) makes it *stale* after `unused`, and its action due
//! `grace` later. An *ephemeral* volume is *orphaned* when every host with a record of it
//! has no live host record (the host died; Docker forgot the volume) and its lock is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::keys::{Keys, LockKind};
use crate::kv::{KvError, KvStore, Precondition, Revision, TxnOp};
use crate::name::{HostName, VolumeRef};
use crate::policy::ReclaimAction;
use crate::volume::Volume;

/// `used/<p>/<v>`: when a volume was last unmounted, and where.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LastUsed {
    /// The last unmount.
    #[serde(with = "crate::serde_time")]
    pub at: SystemTime,
    /// On which host.
    pub host: HostName,
}

/// A stale volume (`volcli volume list --stale`).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StaleVolume {
    /// The volume.
    pub volume: VolumeRef,
    /// Unused (no mount on any host) since.
    #[serde(with = "crate::serde_time")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub unused_since: SystemTime,
    /// Stale since (`unused_since` + the policy's `unused`).
    #[serde(with = "crate::serde_time")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub stale_since: SystemTime,
    /// When the action is due (`stale_since` + `grace`).
    #[serde(with = "crate::serde_time")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub due_at: SystemTime,
    /// What then happens.
    pub action: ReclaimAction,
}

/// Who uses what, read from the store in four listings.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    /// Hosts with a mount record of each volume.
    pub mounted: BTreeMap<VolumeRef, BTreeSet<HostName>>,
    /// Volumes whose mount lock is held.
    pub locked: BTreeSet<VolumeRef>,
    /// Each volume's last unmount, with the key's revision.
    pub last_used: BTreeMap<VolumeRef, (SystemTime, Revision)>,
    /// Hosts with a live record.
    pub live: BTreeSet<HostName>,
    /// Every host that has a record or a mount record.
    pub hosts: BTreeSet<HostName>,
}

impl Usage {
    /// Reads it.
    pub async fn read(kv: &dyn KvStore, keys: &Keys) -> Result<Self, KvError> {
        let (mp, lp, up, hp) = (
            keys.all_mounts(),
            keys.locks(Some(LockKind::Mount)),
            keys.used_dir(),
            keys.hosts(),
        );
        let (mounts, locks, used, hosts) =
            futures::try_join!(kv.list(&mp), kv.list(&lp), kv.list(&up), kv.list(&hp))?;
        let mut u = Self::default();
        for e in &mounts {
            if let Some((h, v)) = keys.parse_mount(&e.key) {
                u.hosts.insert(h.clone());
                u.mounted.entry(v).or_default().insert(h);
            }
        }
        for e in &locks {
            if let Some((_, v)) = keys.parse_lock(&e.key) {
                u.locked.insert(v);
            }
        }
        for e in &used {
            if let (Some(v), Ok(r)) = (
                keys.parse_volume_key("used", &e.key),
                e.decode::<LastUsed>(),
            ) {
                u.last_used.insert(v, (r.at, e.mod_rev));
            }
        }
        for e in &hosts {
            if let Some(h) = e.key.strip_prefix(&hp).and_then(|h| HostName::new(h).ok()) {
                u.hosts.insert(h.clone());
                u.live.insert(h);
            }
        }
        Ok(u)
    }

    /// Unused since when, or `None` while in use.
    pub fn unused_since(&self, v: &Volume) -> Option<SystemTime> {
        let r = v.reference();
        if self.mounted.contains_key(&r) || self.locked.contains(&r) {
            return None;
        }
        Some(match self.last_used.get(&r) {
            Some((at, _)) => (*at).max(v.created_at),
            None => v.created_at,
        })
    }

    /// `v`, if its policy reclaims it and it is stale at `now`.
    pub fn stale(&self, v: &Volume, now: SystemTime) -> Option<StaleVolume> {
        let rc = v.reclaim?;
        let since = self.unused_since(v)?;
        let stale_since = since + rc.unused;
        (stale_since <= now).then(|| StaleVolume {
            volume: v.reference(),
            unused_since: since,
            stale_since,
            due_at: stale_since + rc.grace,
            action: rc.action,
        })
    }

    /// The hosts with a record of ephemeral `v`, when all of them are gone (no live host
    /// record) and nobody holds its lock; `None` otherwise.
    pub fn orphaned(&self, v: &Volume) -> Option<Vec<HostName>> {
        let r = v.reference();
        if !v.ephemeral || self.locked.contains(&r) {
            return None;
        }
        let on = self.mounted.get(&r)?;
        on.iter()
            .all(|h| !self.live.contains(h))
            .then(|| on.iter().cloned().collect())
    }

    /// Checks that what made `v` reclaimable still holds, for the removal's lock
    /// transaction: its last unmount unchanged and no host's mount record (the mount lock,
    /// taken by the removal, covers locked volumes; these cover unlocked ones).
    pub fn unused_checks(&self, keys: &Keys, v: &VolumeRef) -> Vec<TxnOp> {
        let mut ops = vec![TxnOp::Check {
            key: keys.last_used(v),
            pre: match self.last_used.get(v) {
                Some((_, rev)) => Precondition::Revision(*rev),
                None => Precondition::Absent,
            },
        }];
        ops.extend(self.hosts.iter().map(|h| TxnOp::Check {
            key: keys.mount(h, v),
            pre: Precondition::Absent,
        }));
        ops
    }
}
