//! The layout's rules, checked over `cargo metadata` and the sources: dependencies point
//! one way (daemons → backends → volcore), volcli stays a REST client (volcore and the
//! API crate only), and store keys are built only by `Keys`.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    volcore_system_tests::root()
}

/// `cargo metadata` of the workspace.
fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Each workspace package's normal (non-dev) dependencies, all of them (`workspace`
/// false) or only those on other workspace packages.
fn package_deps(workspace: bool) -> BTreeMap<String, BTreeSet<String>> {
    let meta = metadata();
    let pkgs = meta["packages"].as_array().unwrap();
    let names: BTreeSet<String> = pkgs
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    pkgs.iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null()) // normal dependencies
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .filter(|n| !workspace || names.contains(n))
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

fn workspace_deps() -> BTreeMap<String, BTreeSet<String>> {
    package_deps(true)
}

/// The workspace crates each layer may depend on (normal dependencies).
fn allowed(pkg: &str) -> Option<&'static [&'static str]> {
    const BACKEND: &[&str] = &["volcore"];
    const DAEMON: &[&str] = &[
        "volcore",
        "volcore-api",
        "volcore-daemon",
        "volcore-kv",
        "volcore-local",
        "volcore-ceph",
        "volcore-nfs",
    ];
    match pkg {
        "volcore" => Some(&[]),
        "volcore-kv" | "volcore-local" | "volcore-ceph" | "volcore-nfs" => Some(BACKEND),
        // The protocols: types over the library, no server, no backend.
        "volcore-api" => Some(BACKEND),
        // What the daemons share composes the backends.
        "volcore-daemon" => Some(&[
            "volcore",
            "volcore-kv",
            "volcore-local",
            "volcore-ceph",
            "volcore-nfs",
        ]),
        "volmaster" | "volplugin" | "volsupervisor" => Some(DAEMON),
        // volstack runs the three daemons in one process.
        "volstack" => Some(&[
            "volcore",
            "volcore-api",
            "volcore-daemon",
            "volcore-kv",
            "volmaster",
            "volplugin",
            "volsupervisor",
        ]),
        // A REST client: the library's types and the API crate, nothing else.
        "volcli" => Some(&["volcore", "volcore-api"]),
        "volcore-system-tests" => Some(&["volcore", "volcore-api"]),
        "volcore-benches" => None,
        _ => Some(&[]),
    }
}

#[test]
fn dependencies_point_one_way() {
    let deps = workspace_deps();
    assert!(deps.contains_key("volcore"), "{deps:?}");
    let mut wrong = Vec::new();
    for (pkg, ds) in &deps {
        let Some(ok) = allowed(pkg) else { continue };
        for d in ds {
            if !ok.contains(&d.as_str()) {
                wrong.push(format!("{pkg} depends on {d}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies must point daemons → backends → volcore: {wrong:?}"
    );
}

/// What volcli (a REST client) must never use, as crates and as paths in its sources.
const SERVER_SIDE: &[&str] = &[
    "axum",
    "hyper-util",
    "volcore_kv",
    "volcore_local",
    "volcore_ceph",
    "volcore_daemon",
    "volmaster",
    "volplugin",
    "etcd_client",
    "redb",
];

fn server_uses(src: &str) -> Vec<&'static str> {
    SERVER_SIDE
        .iter()
        .copied()
        .filter(|s| src.contains(&format!("{s}::")) || src.contains(&format!("use {s}")))
        .collect()
}

#[test]
fn volcli_speaks_rest_only() {
    let deps = package_deps(false);
    let volcli = deps.get("volcli").expect("the volcli package");
    let server: Vec<&String> = volcli
        .iter()
        .filter(|d| SERVER_SIDE.contains(&d.replace('-', "_").as_str()))
        .collect();
    assert!(
        server.is_empty(),
        "volcli depends on server crates: {server:?}"
    );
    let mut files = Vec::new();
    sources(&root().join("daemons/volcli/src"), &mut files);
    assert!(!files.is_empty());
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap();
        assert_eq!(server_uses(&src), Vec::<&str>::new(), "{}", f.display());
    }
    // The rule can fail.
    assert_eq!(server_uses("use axum::Router;"), vec!["axum"]);
}

/// The store's top-level directories (DESIGN.md §5).
const KEY_DIRS: &[&str] = &[
    "global",
    "policies",
    "policy-revisions",
    "volumes",
    "runtime",
    "locks",
    "mounts",
    "hosts",
    "epochs",
    "checks",
    "maintenance",
    "snapshot-signals",
    "schedules",
    "supervisors",
    "used",
    "leader",
    "attempts",
    "auth",
    "tenants",
    "audit",
];

/// Lines that build a store key by hand: `{prefix}/volumes…`, or `"{}/locks…"` next to a
/// prefix (REST paths such as `{}/runtime` after a URL are not keys).
fn hand_built_keys(src: &str) -> Vec<String> {
    src.lines()
        .filter(|l| {
            KEY_DIRS.iter().any(|d| {
                l.contains(&format!("{{prefix}}/{d}"))
                    || (l.contains(&format!("\"{{}}/{d}")) && l.contains("prefix"))
            })
        })
        .map(|l| l.trim().to_owned())
        .collect()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn store_keys_are_built_only_by_keys() {
    let mut files = Vec::new();
    for krate in [
        "volcore",
        "volcore-kv",
        "volcore-local",
        "volcore-ceph",
        "volcore-nfs",
        "daemons/api",
        "daemons/common",
        "daemons/volmaster",
        "daemons/volplugin",
        "daemons/volcli",
        "daemons/volstack",
        "daemons/volsupervisor",
        "benches",
    ] {
        sources(&root().join(krate).join("src"), &mut files);
    }
    let mut found = Vec::new();
    for f in &files {
        // Keys itself, and the test support that seeds stores on purpose.
        if f.ends_with("volcore/src/keys.rs") || f.components().any(|c| c.as_os_str() == "testing")
        {
            continue;
        }
        let src = std::fs::read_to_string(f).unwrap();
        for l in hand_built_keys(&src) {
            found.push(format!("{}: {l}", f.display()));
        }
    }
    assert!(files.len() > 20, "read only {} files", files.len());
    assert!(
        found.is_empty(),
        "build store keys with volcore::Keys:\n{}",
        found.join("\n")
    );
    // The rule can fail.
    assert_eq!(
        hand_built_keys(r#"let k = format!("{prefix}/locks/mount/{v}");"#).len(),
        1
    );
    assert!(hand_built_keys(r#"format!("{}/runtime", vpath(&v))"#).is_empty());
}
