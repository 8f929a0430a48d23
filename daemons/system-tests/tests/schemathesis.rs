//! schemathesis against the OpenAPI document a real volmaster serves (#13 item 8): with
//! a fixed seed and a bounded number of examples per operation, it must find no 5xx, no
//! response that violates the document, and no accepted request that violates it.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::process::{Command, Stdio};

use volcore_system_tests::{bin, target_tmp, uniq};

#[test]
fn the_served_api_conforms_to_its_document() {
    let st = std::env::var("VOLCORE_TEST_SCHEMATHESIS").unwrap_or_else(|_| {
        panic!("VOLCORE_TEST_SCHEMATHESIS is not set: run scripts/test, which installs schemathesis (scripts/schemathesis.sh)")
    });
    // Its own volmaster on the in-memory store: what schemathesis creates and deletes
    // touches nothing else.
    let mut m = Command::new(bin("volmaster"))
        .args(["--kv", "memory:", "--prefix", "/schemathesis"])
        .args(["--listen", "127.0.0.1:0", "--allow-null-backend"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let addr = volcore_system_tests::listening(&mut m, "volmaster");
    let url = format!("http://{addr}");
    let (client, rt) = volcore_system_tests::client(&url);
    rt.block_on(async {
        for _ in 0..100 {
            if client.ready().await.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // A policy for the operations on volumes to find.
        client
            .upload_policy(
                &volcore::PolicyName::new("policy1").unwrap(),
                br#"{"backend":"null","create":{"size":"10MB"}}"#.to_vec(),
            )
            .await
            .unwrap();
    });
    let report = target_tmp().join(format!("schemathesis-{}", uniq()));
    let out = Command::new(&st)
        .arg("run")
        .arg(format!("{url}/v1/openapi.json"))
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,negative_data_rejection,status_code_conformance,content_type_conformance",
            "--max-examples",
            "10",
            "--seed",
            "20261204",
            // An endless stream; the end-to-end tests cover it.
            "--exclude-path",
            "/v1/watch/policies",
            "--request-timeout",
            "10",
            // Bounded: the suite's wall time matters more than more examples.
            "--max-time",
            "90",
            "--workers",
            "1",
            "--no-color",
        ])
        .arg("--report-dir")
        .arg(&report)
        .output()
        .unwrap();
    let _ = m.kill();
    let _ = m.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems (exit {:?}):\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    // It ran: the summary counts generated and passed cases.
    assert!(stdout.contains("generated"), "{stdout}");
    assert!(!stdout.contains(" failures"), "{stdout}");
}
