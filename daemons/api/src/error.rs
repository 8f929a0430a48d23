//! Error codes: what a failed request means, and the HTTP status that says it.

use serde::{Deserialize, Serialize};

/// Every error volmaster answers with: `{"error":{"code":"…","message":"…"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// An error's code and message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// What it means (stable, for programs).
    pub code: ErrorCode,
    /// What went wrong and what to do (for people).
    pub message: String,
}

macro_rules! codes {
    ($($(#[$doc:meta])* $v:ident = $s:literal, $status:literal;)*) => {
        /// What an error means. Each code has one HTTP status ([`ErrorCode::status`]).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($(#[$doc])* $v,)*
            /// A code this client does not know (a newer server).
            #[serde(other)]
            Unknown,
        }

        impl ErrorCode {
            /// Every known code.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$v,)*];

            /// The code as it is sent.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$v => $s,)*
                    ErrorCode::Unknown => "unknown",
                }
            }

            /// The HTTP status that goes with it.
            pub const fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$v => $status,)*
                    ErrorCode::Unknown => 500,
                }
            }
        }
    };
}

codes! {
    /// The request is malformed (a bad name, query or body).
    BadRequest = "bad_request", 400;
    /// A document (policy, runtime, global configuration) fails validation.
    Invalid = "invalid", 400;
    /// The volume's backend is not served by this daemon.
    BackendNotServed = "backend_not_served", 400;
    /// The storage driver refused the parameters.
    StorageInvalid = "storage_invalid", 400;
    /// The request needs a client certificate and came without one.
    Unauthenticated = "unauthenticated", 401;
    /// The caller's role or tenants do not allow the request.
    Forbidden = "forbidden", 403;
    /// No such tenant.
    TenantNotFound = "tenant_not_found", 404;
    /// The subject has no role to revoke.
    RoleNotFound = "role_not_found", 404;
    /// No such route.
    NoSuchRoute = "no_such_route", 404;
    /// The store has no such key.
    NotFound = "not_found", 404;
    /// No such policy.
    PolicyNotFound = "policy_not_found", 404;
    /// No such policy revision.
    RevisionNotFound = "revision_not_found", 404;
    /// No such volume.
    VolumeNotFound = "volume_not_found", 404;
    /// The maintenance session has ended (or never existed).
    SessionGone = "session_gone", 404;
    /// The volume's storage is gone.
    StorageNotFound = "storage_not_found", 404;
    /// The method is not served on this route.
    MethodNotAllowed = "method_not_allowed", 405;
    /// A compare in the store failed (someone else wrote first).
    Conflict = "conflict", 409;
    /// The volume exists already.
    VolumeExists = "volume_exists", 409;
    /// The policy still has volumes.
    PolicyInUse = "policy_in_use", 409;
    /// The record changed while the operation ran; retry.
    ChangedMeanwhile = "changed_meanwhile", 409;
    /// The volume's runtime does not allow signalled snapshots (`"signal": true`).
    SignalNotAllowed = "signal_not_allowed", 409;
    /// The operation's lock was lost midway; nothing was published.
    LockLost = "lock_lost", 409;
    /// Storage of a failed operation was left behind (`volcli check` finds it).
    LeftoverStorage = "leftover_storage", 409;
    /// The storage exists already.
    StorageExists = "storage_exists", 409;
    /// Another holder has the volume locked.
    Locked = "locked", 423;
    /// The storage is in use.
    StorageBusy = "storage_busy", 423;
    /// An internal error.
    Internal = "internal", 500;
    /// The store failed otherwise.
    StoreError = "store_error", 500;
    /// The storage backend failed.
    StorageFailed = "storage_failed", 502;
    /// The daemon is starting (waiting for its store).
    Starting = "starting", 503;
    /// The store is unreachable.
    StoreUnavailable = "store_unavailable", 503;
    /// The store did not answer in time.
    StoreTimeout = "store_timeout", 503;
    /// The daemon has no live lease.
    NoLease = "no_lease", 503;
    /// The store never said whether a write applied; `volcli check` settles it.
    OutcomeUnknown = "outcome_unknown", 503;
    /// The storage backend did not answer in time.
    StorageTimeout = "storage_timeout", 504;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_kept_apart() {
        for c in ErrorCode::ALL {
            let s = serde_json::to_string(c).unwrap_or_default();
            assert_eq!(s, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&s).ok(), Some(*c));
            assert!((400..600).contains(&c.status()), "{c}");
        }
        assert_eq!(
            serde_json::from_str::<ErrorCode>("\"from_the_future\"").ok(),
            Some(ErrorCode::Unknown)
        );
    }
}
