//! The OpenAPI document, derived from the handlers' `#[utoipa::path]` annotations and the
//! bodies' types (every request and response has its schema); errors are documented
//! per status with the codes that status carries.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::Json;
use serde_json::Value;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::OpenApi;
use volcore_api::{paths, ErrorBody, ErrorCode};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "volmaster",
        description = "volcore's REST API. Every error is `{\"error\":{\"code\",\"message\"}}`; the code says what it means (see ErrorCode), the message what to do."
    ),
    components(schemas(ErrorBody, ErrorCode)),
    tags(
        (name = "health", description = "Liveness, readiness, version"),
        (name = "global", description = "The global configuration"),
        (name = "policies", description = "Policies and their revisions"),
        (name = "volumes", description = "Volumes and their runtime options"),
        (name = "snapshots", description = "Snapshots and copies"),
        (name = "locks", description = "Use locks"),
        (name = "check", description = "Leftovers of crashes, and their repair"),
        (name = "maintenance", description = "Maintenance sessions (`volcli use exec`)"),
        (name = "access", description = "Roles and tenants"),
    )
)]
pub(crate) struct ApiDoc;

/// The OpenAPI document volmaster serves at `/v1/openapi.json`.
pub fn openapi() -> Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let (_, doc) = crate::routes::api_router().split_for_parts();
        let mut v = serde_json::to_value(doc).unwrap_or_default();
        declare_roles(&mut v);
        v
    })
    .clone()
}

/// Writes each operation's role (from [`crate::auth::ACCESS`], the table the middleware
/// enforces) into the document: `x-volcore-role`, the client-certificate security
/// requirement, and the 401 and 403 answers.
fn declare_roles(doc: &mut Value) {
    use crate::auth::{need_of, Need};
    doc["components"]["securitySchemes"]["clientCertificate"] = serde_json::json!({
        "type": "mutualTLS",
        "description": "A client certificate signed by volmaster's --client-ca. Its subject's CN is the user; its O, OU and URI SANs are its groups; the role map (/v1/roles) gives each a role, and tenants (/v1/tenants) the policies it may use. Without TLS (loopback only) every caller is the admin."
    });
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(ops) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in ops.iter_mut() {
            match need_of(method, path) {
                Some(Need::Role(role)) => {
                    op["x-volcore-role"] = Value::from(role.as_str());
                    op["security"] = serde_json::json!([{ "clientCertificate": [role.as_str()] }]);
                    for status in [401u16, 403] {
                        op["responses"][status.to_string()] =
                            serde_json::to_value(error_response(status)).unwrap_or_default();
                    }
                }
                Some(Need::Anyone) => {
                    op["x-volcore-role"] = Value::from("anyone");
                    op["security"] = serde_json::json!([]);
                }
                // A route the table misses is refused; the document says so, and a test
                // fails on it.
                None => op["x-volcore-role"] = Value::from("undeclared"),
            }
        }
    }
}

/// This document.
#[utoipa::path(
    get,
    path = paths::OPENAPI,
    tag = "health",
    responses((status = 200, description = "The OpenAPI document", body = Object))
)]
pub(crate) async fn openapi_handler() -> Json<Value> {
    Json(openapi())
}

fn status_text(code: u16) -> &'static str {
    match code {
        400 => "Bad input",
        401 => "No client certificate",
        403 => "The caller's role or tenants do not allow this",
        404 => "Not found",
        409 => "Conflict",
        423 => "Locked by another holder",
        502 => "Storage backend failed",
        503 => "Unavailable (starting, or the store is unreachable)",
        504 => "Storage backend timed out",
        _ => "Error",
    }
}

/// An error response: the error body, and the codes this status carries.
fn error_response(status: u16) -> RefOr<Response> {
    let codes: Vec<&str> = ErrorCode::ALL
        .iter()
        .filter(|c| c.status() == status)
        .map(|c| c.as_str())
        .collect();
    ResponseBuilder::new()
        .description(format!(
            "{}; code: {}",
            status_text(status),
            codes.join(", ")
        ))
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

/// Sets of error responses, named by their statuses.
macro_rules! error_sets {
    ($($name:ident: $($status:literal),+;)*) => {$(
        #[allow(non_camel_case_types)]
        pub(crate) struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                [$($status),+]
                    .into_iter()
                    .map(|s: u16| (s.to_string(), error_response(s)))
                    .collect()
            }
        }
    )*};
}

error_sets! {
    E503: 503;
    E400_503: 400, 503;
    E400_404_503: 400, 404, 503;
    E400_404_409_503: 400, 404, 409, 503;
    E400_404_423_503: 400, 404, 423, 503;
    E400_404_502_503_504: 400, 404, 502, 503, 504;
    E400_404_423_502_503_504: 400, 404, 423, 502, 503, 504;
    E400_404_409_423_502_503_504: 400, 404, 409, 423, 502, 503, 504;
}
