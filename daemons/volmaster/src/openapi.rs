//! The OpenAPI document.

use serde_json::{json, Value};
use volcore_api::paths;

/// One documented operation.
pub struct ApiOp {
    /// HTTP method, lowercase.
    pub method: &'static str,
    /// Path with `{params}`.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Success status.
    pub ok: u16,
    /// Error statuses it can answer with.
    pub errors: &'static [u16],
    /// Query parameters.
    pub query: &'static [(&'static str, &'static str)],
    /// Request body, described.
    pub body: Option<&'static str>,
}

const fn op(
    method: &'static str,
    path: &'static str,
    ok: u16,
    errors: &'static [u16],
    summary: &'static str,
) -> ApiOp {
    ApiOp {
        method,
        path,
        summary,
        ok,
        errors,
        query: &[],
        body: None,
    }
}

impl ApiOp {
    const fn q(mut self, query: &'static [(&'static str, &'static str)]) -> Self {
        self.query = query;
        self
    }

    const fn body(mut self, b: &'static str) -> Self {
        self.body = Some(b);
        self
    }
}

/// Every operation volmaster serves; the OpenAPI document is built from this list and
/// a test checks each one is routed.
pub const API: &[ApiOp] = &[
    op("get", paths::HEALTHZ, 200, &[], "Liveness"),
    op(
        "get",
        paths::READYZ,
        200,
        &[503],
        "Readiness: the store answers",
    ),
    op(
        "get",
        paths::INFO,
        200,
        &[],
        "Version, git commit, host, kernel, arch, open fds, uptime, store",
    ),
    op("get", paths::OPENAPI, 200, &[], "This document"),
    op(
        "get",
        paths::GLOBAL,
        200,
        &[503],
        "Global configuration (TTL seconds, Timeout minutes, MountPath, Debug)",
    ),
    op(
        "put",
        paths::GLOBAL,
        200,
        &[400, 503],
        "Replace the global configuration",
    )
    .body("volplugin's global JSON: TTL 1 to 3600 seconds, Timeout 1 to 60 minutes, MountPath absolute"),
    op("get", paths::POLICIES, 200, &[503], "Every policy"),
    op(
        "get",
        paths::POLICY,
        200,
        &[400, 404, 503],
        "One policy",
    ),
    op(
        "put",
        paths::POLICY,
        200,
        &[400, 503],
        "Upload a policy; records a new revision",
    )
    .body("volplugin's policy JSON"),
    op(
        "delete",
        paths::POLICY,
        204,
        &[400, 404, 409, 503],
        "Delete a policy (volumes keep their copy)",
    )
    .q(&[("force", "delete even while volumes exist")]),
    op(
        "get",
        paths::POLICY_REVISIONS,
        200,
        &[400, 404, 503],
        "A policy's revisions, oldest first",
    ),
    op(
        "get",
        paths::POLICY_REVISION,
        200,
        &[400, 404, 503],
        "One revision",
    ),
    op(
        "get",
        paths::WATCH_POLICIES,
        200,
        &[400, 503],
        "NDJSON stream of {policy, revision} per upload",
    )
    .q(&[("after", "replay uploads after this store revision")]),
    op(
        "get",
        paths::VOLUMES,
        200,
        &[400, 503],
        "Volumes, all or of one policy",
    )
    .q(&[("policy", "only this policy's volumes")]),
    op(
        "post",
        paths::VOLUMES,
        201,
        &[400, 404, 409, 423, 502, 503, 504],
        "Create a volume",
    )
    .body("{\"volume\":\"policy/volume\",\"options\":{\"key\":\"value\"}}"),
    op(
        "get",
        paths::VOLUME,
        200,
        &[400, 404, 503],
        "One volume with its runtime options",
    ),
    op(
        "delete",
        paths::VOLUME,
        204,
        &[400, 404, 423, 502, 503, 504],
        "Remove a volume (storage, then record)",
    )
    .q(&[
        ("force", "remove even while locked"),
        ("timeout", "how long to wait for its locks, from 0s to 1h, e.g. 30s (default: the global Timeout)"),
    ]),
    op(
        "delete",
        paths::VOLUME_RECORD,
        204,
        &[400, 404, 503],
        "Remove only the record (storage is kept)",
    ),
    op(
        "get",
        paths::VOLUME_RUNTIME,
        200,
        &[400, 404, 503],
        "Runtime options in force",
    ),
    op(
        "put",
        paths::VOLUME_RUNTIME,
        200,
        &[400, 404, 503],
        "Replace runtime options",
    )
    .body("runtime JSON"),
    op(
        "get",
        paths::VOLUME_SNAPSHOTS,
        200,
        &[400, 404, 502, 503, 504],
        "Snapshots, oldest first",
    ),
    op(
        "post",
        paths::VOLUME_SNAPSHOTS,
        201,
        &[400, 404, 423, 502, 503, 504],
        "Take a snapshot now",
    ),
    op(
        "post",
        paths::VOLUME_COPY,
        201,
        &[400, 404, 409, 423, 502, 503, 504],
        "Copy a snapshot into a new volume of the same policy",
    )
    .body("{\"snapshot\":\"name\",\"target\":\"newvolume\"}"),
    op(
        "get",
        paths::CHECK,
        200,
        &[503],
        "Leftovers of crashes (orphan storage, missing storage, stale locks and mount records, orphan keys), each with its fix; changes nothing",
    ),
    op(
        "post",
        paths::CHECK,
        200,
        &[503],
        "The same check, with the safe fixes applied; each finding says what was done",
    ),
    op("get", paths::LOCKS, 200, &[400, 503], "Use locks").q(&[("kind", "mount or op")]),
    op(
        "get",
        paths::VOLUME_LOCKS,
        200,
        &[400, 503],
        "A volume's locks",
    ),
    op(
        "delete",
        paths::VOLUME_LOCKS,
        200,
        &[400, 503],
        "Clear a volume's locks whoever holds them",
    ),
    op(
        "post",
        paths::MAINTENANCE,
        201,
        &[400, 404, 423, 503],
        "Start a maintenance session: locks held while it is renewed",
    )
    .body("{\"volume\":\"p/v\",\"host\":\"h\",\"ttl\":\"10s\",\"wait\":\"30s\"} (ttl from 2s to 1h, wait from 0s to 1h)"),
    op(
        "put",
        paths::MAINTENANCE_SESSION,
        200,
        &[400, 404, 503],
        "Renew a maintenance session",
    ),
    op(
        "delete",
        paths::MAINTENANCE_SESSION,
        204,
        &[400, 404, 503],
        "End a maintenance session, releasing its locks",
    ),
];

fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad input",
        404 => "Not found",
        409 => "Conflict",
        423 => "Locked by another holder",
        502 => "Storage backend failed",
        503 => "Store unavailable",
        504 => "Storage backend timed out",
        _ => "Other",
    }
}

/// The OpenAPI 3.0 document, built from [`API`].
pub fn openapi() -> Value {
    let mut paths = serde_json::Map::new();
    for op in API {
        let mut params: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        params.extend(op.query.iter().map(|(n, d)| json!({"name": n, "in": "query", "required": false, "description": d, "schema": {"type": "string"}})));
        let mut responses = serde_json::Map::new();
        responses.insert(
            op.ok.to_string(),
            json!({"description": status_text(op.ok)}),
        );
        for e in op.errors {
            responses.insert(
                e.to_string(),
                json!({"description": status_text(*e), "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
            );
        }
        let mut o = json!({"summary": op.summary, "parameters": params, "responses": responses});
        if let Some(b) = op.body {
            o["requestBody"] = json!({"required": true, "description": b, "content": {"application/json": {"schema": {"type": "object"}}}});
        }
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        entry[op.method] = o;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "volmaster", "version": env!("CARGO_PKG_VERSION"), "description": "volcore's REST API. Errors are {\"error\":{\"code\",\"message\"}}."},
        "paths": paths,
        "components": {"schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}}},
    })
}
