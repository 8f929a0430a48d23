//! The key layout under a configurable prefix (default `/volplugin`), DESIGN.md §5.
//!
//! Keys are built only from validated names, so no request can address a key outside
//! its own subtree.

use std::fmt;

use crate::name::{HostName, PolicyName, VolumeRef};

/// The kinds of use lock.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum LockKind {
    /// Held while a volume is mounted on a host (and during create/remove/copy/maintenance).
    Mount,
    /// Held by create, remove, copy, snapshot and maintenance operations.
    Op,
}

impl LockKind {
    /// The kind's name in keys and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mount => "mount",
            Self::Op => "op",
        }
    }

    /// Parses `mount` or `op`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mount" => Some(Self::Mount),
            "op" => Some(Self::Op),
            _ => None,
        }
    }
}

impl fmt::Display for LockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key prefix was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store prefix {prefix:?} is invalid: {why}")]
pub struct PrefixError {
    prefix: String,
    why: &'static str,
}

/// An id that is not a validated name (a lease id, an instance id) as one key segment:
/// only letters, digits and '-' are kept, so it can never address another key.
fn segment(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

/// Builds every key volcore uses.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Self {
            prefix: Self::DEFAULT_PREFIX.to_owned(),
        }
    }
}

impl Keys {
    /// volplugin's prefix.
    pub const DEFAULT_PREFIX: &'static str = "/volplugin";

    /// Keys under `prefix`: it starts with `/`, has no trailing `/`, and its segments are
    /// plain names (letters, digits, `.`, `_`, `-`; no `.` or `..`).
    pub fn new(prefix: &str) -> Result<Self, PrefixError> {
        let err = |why| PrefixError {
            prefix: prefix.to_owned(),
            why,
        };
        let rest = prefix
            .strip_prefix('/')
            .ok_or_else(|| err("it must start with '/'"))?;
        if rest.is_empty() {
            return Err(err("it must name at least one segment, e.g. /volplugin"));
        }
        for seg in rest.split('/') {
            if seg.is_empty() {
                return Err(err("it must not contain empty segments or end with '/'"));
            }
            if seg == "." || seg == ".." {
                return Err(err("it must not contain . or .. segments"));
            }
            if !seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(err(
                    "segments may contain only letters, digits, '.', '_' and '-'",
                ));
            }
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every key of this installation starts with this (prefix + `/`).
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// `global`.
    pub fn global(&self) -> String {
        format!("{}/global", self.prefix)
    }

    /// `audit/`: the audit trail, oldest first.
    pub fn audit(&self) -> String {
        format!("{}/audit/", self.prefix)
    }

    /// `audit/<id>`; ids sort by time (see volmaster's audit trail).
    pub fn audit_entry(&self, id: &str) -> String {
        format!("{}/audit/{id}", self.prefix)
    }

    /// `auth/`.
    pub fn auth(&self) -> String {
        format!("{}/auth/", self.prefix)
    }

    /// `auth/roles`: the identity → role map (one document, changed by compare-and-set).
    pub fn roles(&self) -> String {
        format!("{}/auth/roles", self.prefix)
    }

    /// `tenants/<tenant>`.
    pub fn tenant(&self, t: &crate::name::TenantName) -> String {
        format!("{}/tenants/{t}", self.prefix)
    }

    /// `tenants/`.
    pub fn tenants(&self) -> String {
        format!("{}/tenants/", self.prefix)
    }

    /// `policies/<policy>`.
    pub fn policy(&self, p: &PolicyName) -> String {
        format!("{}/policies/{p}", self.prefix)
    }

    /// `policies/`.
    pub fn policies(&self) -> String {
        format!("{}/policies/", self.prefix)
    }

    /// `policy-revisions/<policy>/<rev>`; the revision is zero-padded so keys sort by it.
    pub fn policy_revision(&self, p: &PolicyName, rev: u64) -> String {
        format!("{}/policy-revisions/{p}/{rev:020}", self.prefix)
    }

    /// `policy-revisions/` (every policy's).
    pub fn all_policy_revisions(&self) -> String {
        format!("{}/policy-revisions/", self.prefix)
    }

    /// `policy-revisions/<policy>/`.
    pub fn policy_revisions(&self, p: &PolicyName) -> String {
        format!("{}/policy-revisions/{p}/", self.prefix)
    }

    /// `volumes/<policy>/<volume>`.
    pub fn volume(&self, v: &VolumeRef) -> String {
        format!("{}/volumes/{}/{}", self.prefix, v.policy, v.volume)
    }

    /// `volumes/` or `volumes/<policy>/`.
    pub fn volumes(&self, p: Option<&PolicyName>) -> String {
        match p {
            Some(p) => format!("{}/volumes/{p}/", self.prefix),
            None => format!("{}/volumes/", self.prefix),
        }
    }

    /// `runtime/<policy>/<volume>`.
    pub fn runtime(&self, v: &VolumeRef) -> String {
        format!("{}/runtime/{}/{}", self.prefix, v.policy, v.volume)
    }

    /// `runtime/`.
    pub fn runtimes(&self) -> String {
        format!("{}/runtime/", self.prefix)
    }

    /// `locks/<kind>/<policy>/<volume>`.
    pub fn lock(&self, kind: LockKind, v: &VolumeRef) -> String {
        format!("{}/locks/{kind}/{}/{}", self.prefix, v.policy, v.volume)
    }

    /// `attempts/<id>`: written (on the acquirer's lease) to void a lock acquisition
    /// whose answer was lost, so that it cannot apply late; every acquisition checks its
    /// own is absent.
    pub fn lock_attempt(&self, id: &str) -> String {
        format!("{}/attempts/{id}", self.prefix)
    }

    /// `locks/` or `locks/<kind>/`.
    pub fn locks(&self, kind: Option<LockKind>) -> String {
        match kind {
            Some(k) => format!("{}/locks/{k}/", self.prefix),
            None => format!("{}/locks/", self.prefix),
        }
    }

    /// Parses a lock key back into its kind and volume.
    pub fn parse_lock(&self, key: &str) -> Option<(LockKind, VolumeRef)> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix("/locks/")?;
        let (kind, vref) = rest.split_once('/')?;
        Some((LockKind::parse(kind)?, VolumeRef::parse(vref).ok()?))
    }

    /// `mounts/<host>/<policy>/<volume>`.
    pub fn mount(&self, host: &HostName, v: &VolumeRef) -> String {
        format!("{}/mounts/{host}/{}/{}", self.prefix, v.policy, v.volume)
    }

    /// `mounts/<host>/`.
    pub fn mounts(&self, host: &HostName) -> String {
        format!("{}/mounts/{host}/", self.prefix)
    }

    /// `mounts/` (every host's).
    pub fn all_mounts(&self) -> String {
        format!("{}/mounts/", self.prefix)
    }

    /// Parses a mount record key back into its host and volume.
    pub fn parse_mount(&self, key: &str) -> Option<(HostName, VolumeRef)> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix("/mounts/")?;
        let (host, vref) = rest.split_once('/')?;
        Some((HostName::new(host).ok()?, VolumeRef::parse(vref).ok()?))
    }

    /// `epochs/`.
    pub fn epochs(&self) -> String {
        format!("{}/epochs/", self.prefix)
    }

    /// Parses a `volumes/`, `runtime/` or `epochs/` key (`<dir>/<policy>/<volume>`).
    pub fn parse_volume_key(&self, dir: &str, key: &str) -> Option<VolumeRef> {
        let rest = key
            .strip_prefix(&self.prefix)?
            .strip_prefix('/')?
            .strip_prefix(dir)?
            .strip_prefix('/')?;
        VolumeRef::parse(rest).ok()
    }

    /// `snapshot-signals/<policy>/<volume>`.
    pub fn snapshot_signal(&self, v: &VolumeRef) -> String {
        format!("{}/snapshot-signals/{}/{}", self.prefix, v.policy, v.volume)
    }

    /// `used/<policy>/<volume>`: when the volume was last unmounted (for reclamation).
    pub fn last_used(&self, v: &VolumeRef) -> String {
        format!("{}/used/{}/{}", self.prefix, v.policy, v.volume)
    }

    /// `used/`.
    pub fn used_dir(&self) -> String {
        format!("{}/used/", self.prefix)
    }

    /// `snapshot-signals/`.
    pub fn snapshot_signals(&self) -> String {
        format!("{}/snapshot-signals/", self.prefix)
    }

    /// `schedules/<policy>/<volume>`: the last slot the supervisor took for the volume, so
    /// a restart or a new leader neither skips nor doubles a slot.
    pub fn schedule(&self, v: &VolumeRef) -> String {
        format!("{}/schedules/{}/{}", self.prefix, v.policy, v.volume)
    }

    /// `schedules/`.
    pub fn schedules(&self) -> String {
        format!("{}/schedules/", self.prefix)
    }

    /// `supervisors/<host>-<instance>`: a running supervisor (leader or standby), on its
    /// lease.
    pub fn supervisor(&self, host: &HostName, instance: &str) -> String {
        format!("{}/supervisors/{host}-{}", self.prefix, segment(instance))
    }

    /// `supervisors/`.
    pub fn supervisors(&self) -> String {
        format!("{}/supervisors/", self.prefix)
    }

    /// `hosts/<host>`.
    pub fn host(&self, host: &HostName) -> String {
        format!("{}/hosts/{host}", self.prefix)
    }

    /// `hosts/`.
    pub fn hosts(&self) -> String {
        format!("{}/hosts/", self.prefix)
    }

    /// `epochs/<policy>/<volume>`: bumped by every acquisition of the volume's mount lock
    /// (its mod revision is the epoch), so a host back from a lost lease can tell "nobody
    /// used it" from "someone took it and let go".
    pub fn epoch(&self, v: &VolumeRef) -> String {
        format!("{}/epochs/{}/{}", self.prefix, v.policy, v.volume)
    }

    /// `maintenance/<session>`: marks a lease as a `volcli use exec` session.
    pub fn maintenance(&self, session: &crate::kv::LeaseId) -> String {
        format!("{}/maintenance/{}", self.prefix, segment(session.as_str()))
    }

    /// `checks/<host>`: a host's last host-side check, on its lease.
    pub fn host_check(&self, host: &HostName) -> String {
        format!("{}/checks/{host}", self.prefix)
    }

    /// `checks/`.
    pub fn host_checks(&self) -> String {
        format!("{}/checks/", self.prefix)
    }

    /// `maintenance/`.
    pub fn maintenances(&self) -> String {
        format!("{}/maintenance/", self.prefix)
    }

    /// `leader/supervisor`.
    pub fn supervisor_leader(&self) -> String {
        format!("{}/leader/supervisor", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let k = Keys::default();
        let v = VolumeRef::parse("bar/baz").unwrap();
        assert_eq!(
            k.lock(LockKind::Mount, &v),
            "/volplugin/locks/mount/bar/baz"
        );
        assert_eq!(k.volume(&v), "/volplugin/volumes/bar/baz");
        assert_eq!(k.runtime(&v), "/volplugin/runtime/bar/baz");
        assert_eq!(
            k.policy_revision(&v.policy, 42),
            "/volplugin/policy-revisions/bar/00000000000000000042"
        );
        assert_eq!(
            k.parse_lock("/volplugin/locks/op/bar/baz"),
            Some((LockKind::Op, v))
        );
        assert_eq!(k.parse_lock("/volplugin/locks/zz/bar/baz"), None);
    }

    #[test]
    fn prefixes() {
        Keys::new("/a/b-c.d").unwrap();
        for bad in ["", "/", "volplugin", "/a/", "/a//b", "/a/../b", "/a b"] {
            assert!(Keys::new(bad).is_err(), "{bad:?} accepted");
        }
    }
}
