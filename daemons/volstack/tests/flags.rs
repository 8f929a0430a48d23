//! volstack refuses bad flags before it touches any state.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::process::Command;

#[test]
fn a_bad_listen_address_is_refused_with_the_flag_named() {
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_volstack"))
        .args(["--listen", "not-an-address", "--state"])
        .arg(state.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--listen"), "{err}");
    // Nothing was created: the embedded store is opened only after the flags parse.
    assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 0);
}
