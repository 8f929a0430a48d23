//! Request and response bodies of volmaster's REST API (beside volcore's own types,
//! which most responses are).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use volcore::{LockHolder, Revision, SnapshotName};

/// `POST /v1/volumes`: create a volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// `policy/volume`.
    pub volume: String,
    /// Options overriding the policy (`size`, `filesystem`, driver parameters …).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// `POST /v1/volumes/{policy}/{volume}/copy`: copy a snapshot into a new volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CopyRequest {
    /// The snapshot to copy.
    pub snapshot: String,
    /// The new volume's name (same policy).
    pub target: String,
}

/// `POST /v1/maintenance`: hold a volume's locks while the session is renewed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    /// `policy/volume`.
    pub volume: String,
    /// The host the maintenance runs on (recorded in the locks).
    pub host: String,
    /// Session TTL (`10s`, from 2s to 1h); renew before it runs out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// How long to wait for the locks (`30s`, from 0s to 1h; default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<String>,
}

/// A lock a maintenance session holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionLock {
    /// The lock key.
    pub key: String,
    /// Its fencing token (the key's create revision).
    pub token: Revision,
    /// The holder record as stored.
    pub holder: LockHolder,
}

/// A maintenance session that started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MaintenanceStarted {
    /// The session id: renew it with `PUT`, end it with `DELETE /v1/maintenance/{session}`.
    pub session: String,
    /// Its TTL in milliseconds.
    pub ttl_ms: u64,
    /// The locks it holds.
    pub locks: Vec<SessionLock>,
}

/// A renewed maintenance session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Renewed {
    /// The TTL it was renewed for, in milliseconds.
    pub ttl_ms: u64,
}

/// A snapshot that was taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotTaken {
    /// Its name.
    pub snapshot: SnapshotName,
}

/// A snapshot asked of the supervisor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotSignalled {
    /// The snapshot it will be (named by the request time).
    pub snapshot: SnapshotName,
    /// When it was asked for (RFC 3339).
    pub requested_at: String,
}

/// Locks that were removed by force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LocksRemoved {
    /// The holders that were removed.
    pub removed: Vec<LockHolder>,
}

/// Who a client certificate names: its subject's common name, and as groups its
/// organisations (O), organisational units (OU) and URI subject alternative names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Identity {
    /// The certificate subject's CN.
    pub name: String,
    /// Its O and OU values and URI SANs, sorted.
    pub groups: Vec<String>,
}

/// `GET /v1/whoami`: who volmaster takes the caller for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhoAmI {
    /// The identity of the client certificate, if one was presented.
    pub identity: Option<Identity>,
    /// The connection is TLS.
    pub tls: bool,
}

/// `PUT /v1/roles/{subject}`: the role to bind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RoleGrant {
    /// `reader`, `operator` or `admin`.
    pub role: volcore::Role,
}

pub use volcore::audit::AuditEntry;

/// `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// `GET /readyz` when ready.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ready {
    /// `ready`.
    pub status: String,
    /// The store's revision when it answered.
    pub store_revision: Revision,
}

/// `GET /v1/info`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Info {
    /// The crate version.
    pub version: String,
    /// The git commit it was built from.
    pub git_commit: String,
    /// The host label.
    pub host: String,
    /// The kernel release, when readable.
    pub kernel: Option<String>,
    /// The CPU architecture.
    pub arch: String,
    /// Open file descriptors, when readable.
    pub open_fds: Option<u64>,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// The store.
    pub store: StoreInfo,
}

/// The store a daemon uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoreInfo {
    /// `etcd`, `embedded` or `memory`.
    pub backend: String,
    /// The store as given (`etcd://…`).
    pub endpoints: String,
    /// The key prefix.
    pub prefix: String,
}

/// One line of `GET /v1/watch/policies` (NDJSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum PolicyEvent {
    /// A policy was uploaded.
    Uploaded {
        /// The policy.
        policy: String,
        /// The store revision of the upload.
        revision: Revision,
    },
    /// The watch fell behind compaction: re-read the policies; uploads continue after
    /// this revision.
    Resync {
        /// The revision the watch resumed from.
        resync: Revision,
    },
}
