//! volmaster's router in-process: the OpenAPI document, routing, error shapes and status
//! codes.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::watch;
use tower::ServiceExt;
use volcore::{Drivers, GlobalConfig, HostName, Keys, KvStore, LeaseKeeper, MemKv, Volumes};
use volmaster::{openapi, test_router};

async fn app() -> (axum::Router, LeaseKeeper) {
    let kv: Arc<dyn KvStore> = Arc::new(MemKv::new());
    let keeper = LeaseKeeper::start(kv.clone(), Duration::from_secs(30))
        .await
        .unwrap();
    let (_tx, g) = watch::channel(GlobalConfig::default());
    let engine = Volumes::new(
        kv.clone(),
        Keys::default(),
        Drivers::new().with_null(),
        HostName::new("test").unwrap(),
        keeper.subscribe(),
        g,
    );
    (test_router(kv, engine, Keys::default()), keeper)
}

async fn call(app: &axum::Router, method: &str, path: &str, body: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::from(body.to_owned()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[test]
fn openapi_document_is_checked_in() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let generated = serde_json::to_string_pretty(&openapi()).unwrap() + "\n";
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "daemons/volmaster/openapi.json differs from the API volmaster serves; run `BLESS=1 cargo test -p volmaster --test api` and commit it"
    );
}

#[tokio::test]
async fn openapi_is_served() {
    let (app, _k) = app().await;
    let (status, doc) = call(&app, "GET", "/v1/openapi.json", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc, openapi());
}

/// Every operation declares the role it needs, in the document as in the table the
/// middleware enforces (#13 item 2).
#[test]
fn every_operation_declares_its_role() {
    let doc = openapi();
    let mut seen = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            seen += 1;
            let role = op["x-volcore-role"].as_str().unwrap_or("missing");
            assert!(
                ["anyone", "reader", "operator", "admin"].contains(&role),
                "{method} {path}: role {role}"
            );
            if role != "anyone" {
                assert!(op["responses"]["401"].is_object(), "{method} {path}");
                assert!(op["responses"]["403"].is_object(), "{method} {path}");
                assert_eq!(
                    op["security"][0]["clientCertificate"][0], role,
                    "{method} {path}"
                );
            }
        }
    }
    assert_eq!(seen, 43);
    assert_eq!(doc["paths"]["/v1/global"]["put"]["x-volcore-role"], "admin");
    assert_eq!(
        doc["paths"]["/v1/volumes"]["post"]["x-volcore-role"],
        "operator"
    );
    assert_eq!(
        doc["paths"]["/v1/volumes/{policy}/{volume}"]["get"]["x-volcore-role"],
        "reader"
    );
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let (app, _k) = app().await;
    let doc = openapi();
    let paths = doc["paths"].as_object().unwrap();
    let mut ops = 0;
    for (template, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let path = template
                .replace("{policy}", "p")
                .replace("{volume}", "v")
                .replace("{revision}", "1")
                .replace("{session}", "1")
                .replace("{subject}", "user:x")
                .replace("{tenant}", "t");
            if path == "/v1/watch/policies" {
                continue; // a stream that never ends; covered by the end-to-end tests
            }
            ops += 1;
            let documented: Vec<u16> = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.parse().unwrap())
                .collect();
            let (status, body) = call(&app, &method.to_uppercase(), &path, "{}").await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_ne!(body["error"]["code"], "no_such_route", "{method} {path}");
            assert!(
                documented.contains(&status.as_u16()),
                "{method} {path}: undocumented status {status}: {body}"
            );
        }
    }
    assert_eq!(ops, 42, "every operation but the watch");
}

/// Every request and response body has a real schema (no bare `{"type":"object"}`),
/// and each operation says what it does.
#[test]
fn every_body_has_a_schema() {
    let doc = openapi();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(op["summary"].is_string(), "{method} {path} has no summary");
            let mut bodies: Vec<&Value> = op["responses"]
                .as_object()
                .unwrap()
                .values()
                .filter_map(|r| r["content"].as_object())
                .flat_map(|c| c.values())
                .collect();
            if let Some(c) = op["requestBody"]["content"].as_object() {
                bodies.extend(c.values());
            }
            for b in bodies {
                let schema = &b["schema"];
                let bare = schema
                    .as_object()
                    .is_some_and(|o| o.len() == 1 && o.get("type").is_some_and(|t| t == "object"));
                if path == "/v1/openapi.json" {
                    continue; // the document itself is any object
                }
                assert!(!schema.is_null() && !bare, "{method} {path}: {schema}");
            }
        }
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "VolumeInfo",
        "Policy",
        "GlobalConfig",
        "CheckReport",
        "ErrorBody",
        "LockInfo",
    ] {
        assert!(schemas.contains_key(name), "no schema {name}");
    }
}

#[tokio::test]
async fn errors_are_json_with_fitting_statuses() {
    let (app, _k) = app().await;
    let (s, b) = call(&app, "GET", "/v1/volumes/p/v", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(b["error"]["code"], "volume_not_found");
    // HEAD needs what GET needs, and is answered like it (not refused as undeclared).
    let (s, _) = call(&app, "HEAD", "/v1/volumes/p/v", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&app, "HEAD", "/healthz", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["error"]["message"], "volume p/v does not exist");
    let (s, b) = call(&app, "GET", "/v1/volumes/bad.policy/v", "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("contains '.'"),
        "{b}"
    );
    let (s, b) = call(&app, "PUT", "/v1/policies/p", "{not json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"]["code"], "invalid");
    let (s, _) = call(&app, "PUT", "/v1/policies/p", r#"{"backend":"null"}"#).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = call(
        &app,
        "POST",
        "/v1/volumes",
        r#"{"volume":"p/v","options":{"quux":"1"}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("accepted options"),
        "{b}"
    );
    let (s, b) = call(&app, "POST", "/v1/volumes", r#"{"volume":"p/v","extra":1}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, _) = call(&app, "POST", "/v1/volumes", r#"{"volume":"p/v"}"#).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, b) = call(&app, "POST", "/v1/volumes", r#"{"volume":"p/v"}"#).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(b["error"]["code"], "volume_exists");
    let (s, b) = call(&app, "DELETE", "/v1/policies/p", "").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(b["error"]["code"], "policy_in_use");
    let (s, b) = call(&app, "DELETE", "/v1/volumes/p/v?timeout=soon", "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = call(&app, "GET", "/v1/locks?kind=weird", "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = call(&app, "PUT", "/v1/global", r#"{"TTL":-3}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, _) = call(&app, "GET", "/readyz", "").await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = call(&app, "GET", "/v1/info", "").await;
    assert_eq!(s, StatusCode::OK);
    for k in [
        "version",
        "git_commit",
        "host",
        "kernel",
        "arch",
        "open_fds",
        "uptime_secs",
        "store",
    ] {
        assert!(b.get(k).is_some(), "info lacks {k}: {b}");
    }
}

/// Every user-supplied duration has a bound; outside it the answer is a 400 that names the
/// bound (before: `?timeout=18446744073709551615s` overflowed `Instant + wait` and
/// panicked the handler, and the global Timeout had no upper bound).
#[tokio::test]
async fn durations_out_of_bounds_are_400_naming_the_bound() {
    let (app, _keeper) = app().await;
    let (s, _) = call(&app, "PUT", "/v1/policies/p", r#"{"backend":"null"}"#).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(&app, "POST", "/v1/volumes", r#"{"volume":"p/v"}"#).await;
    assert_eq!(s, StatusCode::CREATED);
    for q in ["18446744073709551615s", "2h", "100000000000000000000"] {
        let (s, body) = call(&app, "DELETE", &format!("/v1/volumes/p/v?timeout={q}"), "").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "?timeout={q}: {body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("timeout") && msg.contains("1h"), "{msg}");
    }
    let (s, body) = call(
        &app,
        "POST",
        "/v1/maintenance",
        r#"{"volume":"p/v","host":"h","wait":"18446744073709551615s"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("wait"),
        "{body}"
    );
    let (s, body) = call(&app, "PUT", "/v1/global", r#"{"Timeout":100000}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("60 minutes"),
        "{body}"
    );
    // Inside the bounds: fine.
    let (s, body) = call(&app, "DELETE", "/v1/volumes/p/v?timeout=30s", "").await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{body}");
}

/// Races and gone things are not 400s: an ended maintenance session is 404
/// `session_gone`, storage left by a crashed create is 409 `leftover_storage`, a backend
/// this daemon does not serve is 400 `backend_not_served` (before: all `bad_request`).
#[tokio::test]
async fn errors_say_what_they_mean() {
    let (app, _keeper) = app().await;
    let (st, v) = call(&app, "PUT", "/v1/maintenance/12345", "").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["code"], "session_gone", "{v}");
    let (st, v) = call(&app, "DELETE", "/v1/maintenance/12345", "").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    // A policy on a backend this daemon does not serve.
    let (st, _) = call(
        &app,
        "PUT",
        "/v1/policies/loc",
        r#"{"backend":"local","create":{"size":"10MB"}}"#,
    )
    .await;
    assert!(st.is_success(), "{st}");
    let (st, v) = call(&app, "POST", "/v1/volumes", r#"{"volume":"loc/v"}"#).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "backend_not_served", "{v}");
}
