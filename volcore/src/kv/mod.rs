//! The KV store every daemon keeps its state in: one object-safe async trait
//! ([`KvStore`]) with backends for memory ([`MemKv`]), an embedded database and etcd
//! (crate `volcore-kv`). Every backend passes one conformance suite
//! (`volcore::testing::kv`, feature `testing`).
//!
//! Semantics follow etcd v3: one store-wide revision that every write bumps once (a
//! transaction is one write); each entry carries the revision that created it and the
//! one that last changed it; leases with a TTL delete the keys attached to them when they
//! expire or are revoked.

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;

mod mem;

pub use mem::{Change, Journal, MemKv};

/// A store revision: etcd's revision, Consul's ModifyIndex.
pub type Revision = u64;

/// A boxed error from a backend's client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A lease handle: etcd lease id, Consul session id, or a backend-local id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(String);

impl LeaseId {
    /// Wraps a backend's lease identifier.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The identifier as the backend wrote it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LeaseId({})", self.0)
    }
}

/// One key and its value, with revisions.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Entry {
    /// The full key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The revision that created the key (stays the same across updates). For a lock key
    /// this is the fencing token.
    pub create_rev: Revision,
    /// The revision of the last change.
    pub mod_rev: Revision,
    /// The lease the key is attached to, if any.
    pub lease: Option<LeaseId>,
}

impl Entry {
    /// The value as JSON of type `T`; a value that does not decode is
    /// [`KvError::Corrupt`], naming the key (every stored record is read this way).
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, KvError> {
        serde_json::from_slice(&self.value).map_err(|err| KvError::Corrupt {
            key: self.key.clone(),
            reason: err.to_string(),
        })
    }
}

/// A condition on a key's current state, checked atomically with a write.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Precondition {
    /// No condition.
    #[default]
    Any,
    /// The key must not exist (create-only).
    Absent,
    /// The key must exist (any revision).
    Present,
    /// The key must exist with this mod revision (compare-and-swap).
    Revision(Revision),
    /// The key must exist with this create revision: the holder of a lock whose fencing
    /// token this is still holds it. (An addition to DESIGN.md §5; see ARCHITECTURE.md.)
    CreateRevision(Revision),
}

impl Precondition {
    /// Whether an entry (or its absence) satisfies the condition.
    pub fn holds(&self, e: Option<&Entry>) -> bool {
        match (self, e) {
            (Self::Any, _) => true,
            (Self::Absent, e) => e.is_none(),
            (Self::Present, e) => e.is_some(),
            (Self::Revision(r), Some(e)) => e.mod_rev == *r,
            (Self::CreateRevision(r), Some(e)) => e.create_rev == *r,
            (Self::Revision(_) | Self::CreateRevision(_), None) => false,
        }
    }
}

/// Options for [`KvStore::put`].
#[derive(Clone, Debug, Default)]
pub struct PutOpts {
    /// Condition on the key's current state.
    pub precondition: Precondition,
    /// Attach the key to this lease (it is deleted when the lease ends).
    pub lease: Option<LeaseId>,
}

impl PutOpts {
    /// Create-only.
    pub fn absent() -> Self {
        Self {
            precondition: Precondition::Absent,
            lease: None,
        }
    }

    /// With a lease.
    pub fn with_lease(mut self, lease: LeaseId) -> Self {
        self.lease = Some(lease);
        self
    }
}

/// One operation of a transaction.
#[derive(Clone, Debug)]
pub enum TxnOp {
    /// Write `value` at `key` if `pre` holds.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// Condition on the key.
        pre: Precondition,
        /// Lease to attach.
        lease: Option<LeaseId>,
    },
    /// Delete `key` (absent is fine) if `pre` holds.
    Delete {
        /// The key.
        key: String,
        /// Condition on the key.
        pre: Precondition,
    },
    /// Only check `pre` on `key`.
    Check {
        /// The key.
        key: String,
        /// Condition on the key.
        pre: Precondition,
    },
    /// Check `pre` on `key` and return its entry in [`TxnOutcome::reads`]: a read in the
    /// same round trip (and at the same revision) as the writes. Reads see the state the
    /// checks saw, before the transaction's writes.
    Read {
        /// The key.
        key: String,
        /// Condition on the key.
        pre: Precondition,
    },
}

impl TxnOp {
    /// The key the operation is about.
    pub fn key(&self) -> &str {
        match self {
            Self::Put { key, .. }
            | Self::Delete { key, .. }
            | Self::Check { key, .. }
            | Self::Read { key, .. } => key,
        }
    }

    /// The operation's precondition.
    pub fn precondition(&self) -> Precondition {
        match self {
            Self::Put { pre, .. }
            | Self::Delete { pre, .. }
            | Self::Check { pre, .. }
            | Self::Read { pre, .. } => *pre,
        }
    }
}

/// The result of a committed transaction.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TxnOutcome {
    /// The store revision after the transaction (unchanged if it only checked).
    pub revision: Revision,
    /// One entry (or `None` for an absent key) per [`TxnOp::Read`], in order.
    pub reads: Vec<Option<Entry>>,
}

/// A change delivered by [`KvStore::watch`].
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum WatchEvent {
    /// A key was created or changed.
    Put(Entry),
    /// A key was deleted (explicitly, or because its lease ended).
    Delete {
        /// The key.
        key: String,
        /// The revision of the deletion.
        revision: Revision,
    },
    /// Events up to `revision` cannot be delivered (history compacted, or the watch had
    /// to be re-established): relist, then keep consuming this stream, which continues
    /// with changes after `revision`.
    Resync {
        /// The revision the stream resumes after.
        revision: Revision,
    },
}

/// A stream of watch events; it ends only when the store goes away.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, KvError>> + Send>>;

/// Store errors, grouped by meaning rather than by backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// The key does not exist (where existence was required).
    #[error("key {key} does not exist")]
    NotFound {
        /// The key.
        key: String,
    },
    /// A precondition did not hold.
    #[error("key {key} changed concurrently (its revision is now {})", current.map_or_else(|| "absent".to_owned(), |r| r.to_string()))]
    Conflict {
        /// The key whose condition failed.
        key: String,
        /// Its current mod revision (`None`: absent).
        current: Option<Revision>,
    },
    /// The lease expired or was revoked.
    #[error("lease {lease} has expired or was revoked")]
    LeaseLost {
        /// The lease.
        lease: LeaseId,
    },
    /// The store cannot be reached.
    #[error("{backend} store is unavailable: {source}")]
    Unavailable {
        /// Backend name.
        backend: &'static str,
        /// Cause.
        #[source]
        source: BoxError,
    },
    /// The call did not complete in time; it may or may not have applied.
    #[error("{backend} store did not answer {op} in time")]
    Timeout {
        /// Backend name.
        backend: &'static str,
        /// The operation.
        op: &'static str,
    },
    /// The request itself is wrong (e.g. a key twice in one transaction).
    #[error("invalid store request: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// A stored value does not decode.
    #[error("value at {key} is corrupt: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// Any other backend failure.
    #[error("{backend} store failed: {source}")]
    Backend {
        /// Backend name.
        backend: &'static str,
        /// Cause.
        #[source]
        source: BoxError,
    },
}

impl KvError {
    /// Whether retrying the same idempotent call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Timeout { .. })
    }
}

/// The store trait. `&self` everywhere; implementations are cheap to share behind an `Arc`.
///
/// Backend differences worth knowing: etcd raises TTLs below about 1.5 s to its minimum;
/// Consul sessions have a 10 s minimum TTL and a lock-delay after invalidation.
#[async_trait]
pub trait KvStore: Send + Sync + fmt::Debug + 'static {
    /// A short backend name for logs and errors (`memory`, `embedded`, `etcd`).
    fn backend(&self) -> &'static str;
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<Entry>, KvError>;
    /// Reads every key that starts with `prefix`, sorted by key. Callers that mean a
    /// directory pass a prefix ending in `/`.
    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, KvError>;
    /// Writes one key; returns the new store revision. A failed precondition is
    /// `Err(Conflict)`.
    async fn put(&self, key: &str, value: Vec<u8>, opts: PutOpts) -> Result<Revision, KvError>;
    /// Deletes one key; `Ok(false)` if it did not exist. A failed precondition is
    /// `Err(Conflict)`.
    async fn delete(&self, key: &str, pre: Precondition) -> Result<bool, KvError>;
    /// Applies all operations or none: if any precondition fails, nothing is written and
    /// the error names the first key whose condition failed.
    async fn txn(&self, ops: Vec<TxnOp>) -> Result<TxnOutcome, KvError>;
    /// Streams changes under `prefix` with revisions greater than `after` (`None`: from
    /// now), in revision order, without gaps; a gap is reported as [`WatchEvent::Resync`].
    async fn watch(&self, prefix: &str, after: Option<Revision>) -> Result<WatchStream, KvError>;
    /// The current store revision.
    async fn revision(&self) -> Result<Revision, KvError>;
    /// Discards history up to `revision` (watches from before it get `Resync`).
    async fn compact(&self, revision: Revision) -> Result<(), KvError>;
    /// Grants a lease of (at least) `ttl`.
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, KvError>;
    /// Renews a lease; returns its TTL. An expired lease is `Err(LeaseLost)`.
    async fn lease_keepalive(&self, id: &LeaseId) -> Result<Duration, KvError>;
    /// Ends a lease now, deleting its keys. Revoking an ended lease is `Err(LeaseLost)`.
    async fn lease_revoke(&self, id: &LeaseId) -> Result<(), KvError>;
}

/// Typed helpers over any [`KvStore`].
#[async_trait]
pub trait KvStoreExt: KvStore {
    /// Reads and decodes a JSON value; `Ok(None)` if absent.
    async fn get_json<T: DeserializeOwned + Send>(
        &self,
        key: &str,
    ) -> Result<Option<(T, Entry)>, KvError> {
        match self.get(key).await? {
            None => Ok(None),
            Some(e) => {
                let v = serde_json::from_slice(&e.value).map_err(|err| KvError::Corrupt {
                    key: key.to_owned(),
                    reason: err.to_string(),
                })?;
                Ok(Some((v, e)))
            }
        }
    }

    /// Encodes and writes a JSON value.
    async fn put_json<T: Serialize + Sync>(
        &self,
        key: &str,
        value: &T,
        opts: PutOpts,
    ) -> Result<Revision, KvError> {
        let bytes = serde_json::to_vec(value).map_err(|e| KvError::Invalid {
            reason: format!("cannot encode value for {key}: {e}"),
        })?;
        self.put(key, bytes, opts).await
    }
}

impl<T: KvStore + ?Sized> KvStoreExt for T {}
