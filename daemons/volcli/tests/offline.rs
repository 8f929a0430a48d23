//! The real volcli binary on volplugin's fixtures: the offline `check` commands.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use volcore_system_tests::{root, run_volcli, volcli_command};

/// volcli in the fixtures directory; the offline commands never contact a volmaster.
fn volcli(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd = volcli_command("http://127.0.0.1:1");
    cmd.current_dir(root().join("testdata"));
    run_volcli(cmd, args, stdin)
}

#[test]
fn checks_and_expands_policies() {
    let (code, out, err) = volcli(&["policy", "check", "volplugin/ceph/backend.json"], None);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], "backend");
    assert_eq!(v["backends"]["snapshot"], "ceph");
    assert_eq!(v["filesystems"]["ext4"], "mkfs.ext4 -m0 %");
}

#[test]
fn rejects_with_the_reason_and_exit_1() {
    let (code, out, err) = volcli(&["policy", "check", "rejected/frequency-10d.json"], None);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.starts_with("rejected/frequency-10d.json: policy is not valid: runtime: snapshot.frequency \"10d\": days are not a unit here"),
        "{err}"
    );
    assert_eq!(
        err.matches("days are not").count(),
        1,
        "reason repeated: {err}"
    );
}

#[test]
fn stdin_needs_a_name() {
    let (code, _, err) = volcli(&["policy", "check", "-"], Some(r#"{"backend":"nfs"}"#));
    assert_eq!(code, 1);
    assert!(err.contains("needs --name"), "{err}");
    let (code, out, err) = volcli(
        &["policy", "check", "--name", "p", "-"],
        Some(r#"{"backend":"nfs"}"#),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"mount\": \"nfs\""), "{out}");
}

#[test]
fn global_and_runtime() {
    let (code, out, err) = volcli(&["global", "check", "volplugin/global-empty.json"], None);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"TTL": 30, "Timeout": 10, "MountPath": "/mnt/ceph", "Debug": false})
    );
    let (code, out, _) = volcli(&["runtime", "check", "volplugin/runtime1.json"], None);
    assert_eq!(code, 0);
    assert!(out.contains("\"keep\": 15"), "{out}");
    let (code, _, err) = volcli(&["runtime", "check", "-"], Some(r#"{"snapshots":true}"#));
    assert_eq!(code, 1);
    assert!(err.contains("snapshot.frequency is missing"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, _) = volcli(&["policy", "frobnicate"], None);
    assert_eq!(code, 2);
}
