//! Talking to the `rbd` CLI: command lines, JSON outputs, and the mapping of rbd's exit
//! codes and messages to [`DriverError`]s.

use std::time::Duration;

use serde::Deserialize;
use volcore::driver::DriverError;
use volcore::exec::{Cmd, ExecError, Output};

/// `pool/image`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ImageSpec {
    /// The pool.
    pub pool: String,
    /// The image in the pool.
    pub image: String,
}

impl ImageSpec {
    /// `pool/image`, as rbd takes it.
    pub fn spec(&self) -> String {
        format!("{}/{}", self.pool, self.image)
    }
    /// `pool/image@snap`.
    pub fn snap(&self, snap: &str) -> String {
        format!("{}/{}@{snap}", self.pool, self.image)
    }
}

impl std::fmt::Display for ImageSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "image {}/{}", self.pool, self.image)
    }
}

/// What an rbd failure means.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Errno {
    NotFound,
    Exists,
    Busy,
    NotEmpty,
    Invalid,
    /// EROFS: another client holds the image's exclusive lock (or an advisory lock on an
    /// exclusive-lock image), so it cannot be changed.
    Locked,
    Blocklisted,
    Other,
}

/// The errno rbd reports: `… (17) File exists` in stderr, else the exit code (rbd exits
/// with the errno).
pub(crate) fn errno(out: &Output) -> Errno {
    let from_text = out
        .stderr
        .rfind(") ")
        .and_then(|end| {
            let start = out.stderr[..end].rfind('(')?;
            out.stderr[start + 1..end].parse::<i32>().ok()
        })
        .unwrap_or(out.status);
    match from_text.abs() {
        2 => Errno::NotFound,
        17 => Errno::Exists,
        16 => Errno::Busy,
        39 => Errno::NotEmpty,
        22 => Errno::Invalid,
        30 => Errno::Locked,
        108 => Errno::Blocklisted,
        _ => Errno::Other,
    }
}

/// The last meaningful line of rbd's stderr (librbd log lines and progress are noise).
pub(crate) fn message(out: &Output) -> String {
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("% complete"))
        .collect();
    let pick = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("rbd:") || l.starts_with("rbd-fuse"))
        .or_else(|| lines.last());
    match pick {
        Some(l) => l.trim_start_matches("rbd: ").to_owned(),
        None => format!("exit status {}", out.status),
    }
}

/// An exec failure (could not start, or killed at its timeout) as a driver error.
pub(crate) fn exec_error(op: &'static str, what: &str, e: ExecError) -> DriverError {
    match e {
        ExecError::Timeout { timeout, .. } => DriverError::Timeout {
            op,
            what: what.to_owned(),
            timeout,
        },
        other => DriverError::Failed {
            op,
            what: what.to_owned(),
            detail: other.to_string(),
            source: None,
        },
    }
}

/// A failed rbd command as a driver error, by meaning.
pub(crate) fn failure(op: &'static str, what: &str, cmd: &Cmd, out: &Output) -> DriverError {
    let msg = message(out);
    match errno(out) {
        Errno::Exists => DriverError::AlreadyExists {
            what: what.to_owned(),
        },
        Errno::NotFound if out.stderr.contains("error opening pool") => {
            DriverError::Invalid(format!(
                "{op} of {what}: {msg}; create the pool first (`ceph osd pool create POOL` and `rbd pool init POOL`) or fix the policy's driver.pool"
            ))
        }
        Errno::NotFound if out.stderr.contains("data pool") => DriverError::Invalid(format!(
            "{op} of {what}: {msg}; fix the policy's driver.data-pool"
        )),
        Errno::NotFound => DriverError::NotFound {
            what: what.to_owned(),
        },
        Errno::Busy => DriverError::Busy {
            what: what.to_owned(),
            detail: msg,
        },
        Errno::NotEmpty => DriverError::Busy {
            what: what.to_owned(),
            detail: msg,
        },
        Errno::Invalid => DriverError::Invalid(format!("{op} of {what}: {msg}")),
        Errno::Locked => DriverError::Busy {
            what: what.to_owned(),
            detail: format!("it is locked by another client ({msg}); see `rbd lock ls`"),
        },
        Errno::Blocklisted => DriverError::Failed {
            op,
            what: what.to_owned(),
            detail: format!(
                "this host's Ceph client is blocklisted (another host took the volume over): {msg}"
            ),
            source: None,
        },
        Errno::Other => DriverError::Failed {
            op,
            what: what.to_owned(),
            detail: format!("`{cmd}` exited {}: {msg}", out.status),
            source: None,
        },
    }
}

/// `rbd lock ls --format json`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Locker {
    /// The lock id.
    pub id: String,
    /// `client.N`.
    pub locker: String,
    /// The client's address.
    pub address: String,
}

/// `rbd status --format json`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Status {
    #[serde(default)]
    pub watchers: Vec<Watcher>,
}

/// One watcher of an image: an open client.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Watcher {
    pub address: String,
    #[serde(default)]
    pub client: u64,
}

/// `rbd snap ls --format json`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Snap {
    pub id: u64,
    pub name: String,
}

/// `rbd device list --format json` (krbd) and `rbd device list -t nbd --format json`:
/// krbd names the image `name` and gives a string id; nbd names it `image` and gives the
/// rbd-nbd pid as id.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Mapped {
    pub pool: String,
    #[serde(alias = "image")]
    pub name: String,
    #[serde(default)]
    pub snap: String,
    pub device: String,
}

impl Mapped {
    /// A mapping of the image itself (not of one of its snapshots).
    pub fn is_head(&self) -> bool {
        self.snap.is_empty() || self.snap == "-"
    }
}

/// Parses JSON output, naming the command when it is not what rbd prints.
pub(crate) fn parse<T: for<'de> Deserialize<'de>>(
    op: &'static str,
    what: &str,
    cmd: &Cmd,
    stdout: &str,
) -> Result<T, DriverError> {
    let text = if stdout.trim().is_empty() {
        "[]"
    } else {
        stdout
    };
    serde_json::from_str(text).map_err(|e| DriverError::Failed {
        op,
        what: what.to_owned(),
        detail: format!("cannot read the output of `{cmd}`: {e}"),
        source: None,
    })
}

/// Rounds a byte count up to whole MiB for rbd's `--size`, which also keeps images a
/// whole number of sectors.
pub(crate) fn size_arg(bytes: u64) -> String {
    let mib = bytes.div_ceil(1024 * 1024).max(1);
    format!("{mib}M")
}

/// A default for command timeouts when the caller gives none.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    fn out(status: i32, stderr: &str) -> Output {
        Output {
            status,
            stdout: String::new(),
            stderr: stderr.to_owned(),
        }
    }

    // Real outputs of rbd 16.2.15, captured on a one-node cluster.
    #[test]
    fn maps_real_rbd_errors() {
        let cmd = Cmd::new("rbd", ["x"], Duration::from_secs(1));
        let exists = out(
            17,
            "rbd: create error: 2026-12-01T10:15:56.744+0000 7f3ade08f380 -1 librbd: rbd image a.b already exists\n\n(17) File exists\n",
        );
        assert!(matches!(
            failure("create", "image rbd/a.b", &cmd, &exists),
            DriverError::AlreadyExists { .. }
        ));
        let nopool = out(
            2,
            "rbd: error opening pool 'nopool': (2) No such file or directory\n",
        );
        let e = failure("create", "image nopool/x", &cmd, &nopool);
        assert!(
            matches!(&e, DriverError::Invalid(m) if m.contains("error opening pool 'nopool'") && m.contains("ceph osd pool create")),
            "{e}"
        );
        let noimg = out(
            2,
            "rbd: error opening image nope: (2) No such file or directory\n",
        );
        assert!(matches!(
            failure("info", "image rbd/nope", &cmd, &noimg),
            DriverError::NotFound { .. }
        ));
        let snaps = out(
            39,
            "rbd: image has snapshots - these must be deleted with 'rbd snap purge' before the image can be removed.\n",
        );
        assert_eq!(errno(&snaps), Errno::NotEmpty);
        let held = out(16, "rbd: lock is already held by someone else\n");
        let e = failure("lock", "image rbd/a", &cmd, &held);
        assert!(
            matches!(&e, DriverError::Busy { detail, .. } if detail == "lock is already held by someone else"),
            "{e}"
        );
        let shrink = out(
            22,
            "rbd: shrinking an image is only allowed with the --allow-shrink flag\n",
        );
        assert!(matches!(
            failure("resize", "image rbd/a", &cmd, &shrink),
            DriverError::Invalid(m) if m.contains("--allow-shrink")
        ));
        let locked = out(30, "rbd: resize error: (30) Read-only file system\n");
        let e = failure("resize", "image rbd/h1", &cmd, &locked);
        assert!(
            matches!(&e, DriverError::Busy { detail, .. } if detail.contains("locked by another client")),
            "{e}"
        );
        let progress = out(
            2,
            "Removing snap: 0% complete...failed.\nrbd: failed to remove snapshot: (2) No such file or directory\n",
        );
        assert_eq!(
            message(&progress),
            "failed to remove snapshot: (2) No such file or directory"
        );
        let datapool = out(2, "rbd: create error: (2) No such file or directory\n2026-12-01T10:42:49.968+0000 7f6326abf380 -1 librbd::image::CreateRequest: 0x55c820fb0990 validate_data_pool: data pool nope does not exist\n");
        assert!(matches!(
            failure("create", "image rbd/t2", &cmd, &datapool),
            DriverError::Invalid(m) if m.contains("data-pool")
        ));
    }

    #[test]
    fn parses_real_json() {
        let cmd = Cmd::new("rbd", ["x"], Duration::from_secs(1));
        let l: Vec<Locker> = parse(
            "lock ls",
            "i",
            &cmd,
            r#"[{"id":"volcore:h1","locker":"client.4182","address":"127.0.0.1:0/4226454590"}]"#,
        )
        .unwrap();
        assert_eq!(l[0].id, "volcore:h1");
        let s: Status = parse(
            "status",
            "i",
            &cmd,
            r#"{"watchers":[{"address":"127.0.0.1:0/3545475203","client":4162,"cookie":140037408690352}]}"#,
        )
        .unwrap();
        assert_eq!(s.watchers[0].client, 4162);
        let snaps: Vec<Snap> = parse(
            "snap ls",
            "i",
            &cmd,
            r#"[{"id":4,"name":"s1","size":67108864,"protected":"false","timestamp":"Tue Dec  1 10:15:57 2026"}]"#,
        )
        .unwrap();
        assert_eq!((snaps[0].id, snaps[0].name.as_str()), (4, "s1"));
        // `rbd device list` prints nothing at all for nbd when nothing is mapped.
        let none: Vec<Mapped> = parse("device list", "i", &cmd, "").unwrap();
        assert!(none.is_empty());
        let bad = parse::<Vec<Mapped>>("device list", "i", &cmd, "rbd: garbage");
        assert!(
            matches!(bad, Err(DriverError::Failed { detail, .. }) if detail.contains("cannot read the output"))
        );
    }

    #[test]
    fn sizes_round_up_to_mib() {
        assert_eq!(size_arg(1), "1M");
        assert_eq!(size_arg(10_000_000), "10M");
        assert_eq!(size_arg(64 * 1024 * 1024), "64M");
        assert_eq!(size_arg(64 * 1024 * 1024 + 1), "65M");
    }
}
