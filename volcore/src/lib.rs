//! # volcore
//!
//! Policy-driven persistent volumes for containers on a cluster of hosts: the model
//! (names, sizes, policies, volumes, runtime options, global configuration), the KV store
//! trait with an in-memory backend, the lease keeper and use locks, the volume engine
//! ([`Volumes`]) and a host's mount lifecycle ([`HostMounts`]).
//!
//! volcore names no network client and no storage system: etcd and the embedded store
//! live in `volcore-kv`, storage drivers in their own crates, and the daemons compose them.
//!
//! With the `testing` feature, the `testing` module holds the conformance suites every KV store
//! (and, later, every driver) runs, so an orchestrator can check its own backends the
//! same way.

#![warn(missing_docs)]

pub mod audit;
pub mod auth;
pub mod catalog;
pub mod cgroup;
pub mod check;
pub mod clock;
pub mod crash;
pub mod driver;
pub mod engine;
pub mod exec;
pub mod global;
pub mod hosts;
pub mod keys;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod loopdev;
pub mod mountinfo;
pub mod mounts;
pub mod name;
#[cfg(feature = "openapi")]
mod openapi;
pub mod policy;
pub mod reclaim;
pub mod schedule;
mod serde_time;
pub mod size;
pub mod supervisor;
pub mod volume;

#[cfg(feature = "testing")]
pub mod testing;

pub use auth::{AuthError, AuthView, Principal, Role, RoleMap, Subject, Tenant};
pub use check::{CheckReport, Finding, FindingKind, Outcome};
pub use driver::{
    mount_path, DriverError, Mount, MountDriver, NullDriver, SnapshotDriver, Stored, VolumeDriver,
    VolumeSpec,
};
pub use engine::{Drivers, EngineError, PolicyRevision, VolumeInfo, Volumes};
pub use global::GlobalConfig;
pub use keys::{Keys, LockKind};
pub use kv::{
    Entry, KvError, KvStore, KvStoreExt, LeaseId, MemKv, Precondition, PutOpts, Revision, TxnOp,
    TxnOutcome, WatchEvent, WatchStream,
};
pub use lease::{LeaseKeeper, LeaseState};
pub use lock::{HeldLock, LockError, LockHolder, LockInfo, LockReason, LockRequest, Locker};
pub use mounts::{HostMounts, LeaseLossAction, MountError, MountsConfig, MountsDeps};
pub use name::{HostName, NameError, PolicyName, SnapshotName, TenantName, VolumeName, VolumeRef};
pub use policy::{BackendKind, Backends, Policy, PolicyError, RateLimit, RuntimeOptions};
pub use size::{Size, ValueError};
pub use volume::Volume;
