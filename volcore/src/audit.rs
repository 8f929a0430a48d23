//! The audit trail's record (`audit/<id>`): volmaster writes one per mutating or refused
//! request, the supervisor one per reclamation. Ids sort by time.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// One audited request (`GET /v1/audit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// When it was answered (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// Who: `user:<CN>`, `the local admin` (no TLS), or `anonymous` (no certificate).
    pub who: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// The HTTP method.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The HTTP status of the answer.
    pub status: u16,
    /// `ok`, `refused` (401/403) or `failed`.
    pub outcome: String,
}

/// The store id of the `seq`th entry of a batch stored at `at`: the time in milliseconds
/// and the sequence (zero-padded, so ids sort by arrival), and a random suffix against
/// another writer's batch of the same millisecond.
pub fn entry_id(at: SystemTime, seq: usize) -> String {
    let ms = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{ms:015}-{seq:03}-{:08x}", rand::random::<u32>())
}
