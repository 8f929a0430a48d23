//! Every route volmaster serves, written once: the server routes and documents these
//! constants, and [`Client`](crate::Client) fills them in. Parameters are `{name}`
//! segments (axum's and OpenAPI's syntax alike).

/// Liveness.
pub const HEALTHZ: &str = "/healthz";
/// Readiness: the store answers.
pub const READYZ: &str = "/readyz";
/// Version and host information.
pub const INFO: &str = "/v1/info";
/// The OpenAPI document.
pub const OPENAPI: &str = "/v1/openapi.json";
/// Who the caller is, by its client certificate.
pub const WHOAMI: &str = "/v1/whoami";
/// The audit trail.
pub const AUDIT: &str = "/v1/audit";
/// The identity → role map.
pub const ROLES: &str = "/v1/roles";
/// One subject's role (`user:<CN>` or `group:<name>`).
pub const ROLE: &str = "/v1/roles/{subject}";
/// Tenants.
pub const TENANTS: &str = "/v1/tenants";
/// One tenant.
pub const TENANT: &str = "/v1/tenants/{tenant}";
/// The global configuration.
pub const GLOBAL: &str = "/v1/global";
/// Every policy.
pub const POLICIES: &str = "/v1/policies";
/// One policy.
pub const POLICY: &str = "/v1/policies/{policy}";
/// A policy's revisions.
pub const POLICY_REVISIONS: &str = "/v1/policies/{policy}/revisions";
/// One revision of a policy.
pub const POLICY_REVISION: &str = "/v1/policies/{policy}/revisions/{revision}";
/// Policy uploads as they happen (NDJSON).
pub const WATCH_POLICIES: &str = "/v1/watch/policies";
/// Volumes.
pub const VOLUMES: &str = "/v1/volumes";
/// One volume.
pub const VOLUME: &str = "/v1/volumes/{policy}/{volume}";
/// A volume's record only.
pub const VOLUME_RECORD: &str = "/v1/volumes/{policy}/{volume}/record";
/// A volume's runtime options.
pub const VOLUME_RUNTIME: &str = "/v1/volumes/{policy}/{volume}/runtime";
/// A volume's snapshots.
pub const VOLUME_SNAPSHOTS: &str = "/v1/volumes/{policy}/{volume}/snapshots";
/// Ask the supervisor for a snapshot now.
pub const VOLUME_SNAPSHOT_SIGNAL: &str = "/v1/volumes/{policy}/{volume}/snapshots/signal";
/// Volumes unused past their policy's reclaim period, with when they go.
pub const STALE_VOLUMES: &str = "/v1/stale-volumes";
/// The supervisors: the leader, since when, and the standbys.
pub const SUPERVISOR: &str = "/v1/supervisor";
/// Copy a volume's snapshot.
pub const VOLUME_COPY: &str = "/v1/volumes/{policy}/{volume}/copy";
/// Use locks.
pub const LOCKS: &str = "/v1/locks";
/// A volume's locks.
pub const VOLUME_LOCKS: &str = "/v1/locks/{policy}/{volume}";
/// Leftovers of crashes.
pub const CHECK: &str = "/v1/check";
/// Start a maintenance session.
pub const MAINTENANCE: &str = "/v1/maintenance";
/// One maintenance session.
pub const MAINTENANCE_SESSION: &str = "/v1/maintenance/{session}";

/// `template`'s segments with each `{param}` replaced, in order, by the next of `args`
/// (as one path segment each: a `/` in an argument cannot change the route). Panics in
/// debug builds when the counts differ (a programming error).
pub fn segments<'a>(template: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut args = args.iter();
    let out: Vec<&str> = template
        .trim_start_matches('/')
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                args.next().copied().unwrap_or(seg)
            } else {
                seg
            }
        })
        .collect();
    debug_assert!(args.next().is_none(), "too many arguments for {template}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_fill_parameters_in_order() {
        assert_eq!(
            segments(VOLUME_COPY, &["p", "v"]),
            ["v1", "volumes", "p", "v", "copy"]
        );
        assert_eq!(segments(POLICIES, &[]), ["v1", "policies"]);
        assert_eq!(
            segments(POLICY_REVISION, &["p", "7"]),
            ["v1", "policies", "p", "revisions", "7"]
        );
    }
}
