//! volcli's own errors, before and without a volmaster: bad names and flags are usage
//! errors (exit 2) that say what was wrong; an unreachable volmaster is exit 1 with a
//! hint.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use volcore_system_tests::{run_volcli, volcli_command};

/// Nothing listens on port 1 of loopback.
const NOBODY: &str = "http://127.0.0.1:1";

#[test]
fn a_bad_volume_name_is_a_usage_error_and_contacts_nobody() {
    let (code, _, err) = run_volcli(volcli_command(NOBODY), &["volume", "get", "p/a b"], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("a b"), "the error names the bad input: {err}");
    let (code, _, err) = run_volcli(
        volcli_command(NOBODY),
        &["volume", "snapshot", "copy", "p/v", "s", "q/other"],
        None,
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run_volcli(
        volcli_command(NOBODY),
        &["use", "list", "--kind", "exclusive"],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("expected mount or op"), "{err}");
    let (code, _, err) = run_volcli(
        volcli_command(NOBODY),
        &["volume", "remove", "p/v", "--timeout", "soon"],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--timeout"), "{err}");
}

#[test]
fn a_master_that_is_not_a_url_is_a_usage_error() {
    let (code, _, err) = run_volcli(volcli_command("ftp://host"), &["policy", "list"], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("must be an http:// or https:// URL"), "{err}");
}

#[test]
fn an_unreachable_master_says_where_it_looked_and_what_to_set() {
    let (code, _, err) = run_volcli(volcli_command(NOBODY), &["volume", "list"], None);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot reach volmaster at http://127.0.0.1:1"),
        "{err}"
    );
    assert!(err.contains("VOLCLI_MASTER"), "{err}");
}
