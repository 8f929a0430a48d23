//! What this host has: its mounts, and rbd-fuse processes found by scanning /proc.

use std::path::Path;

use volcore::driver::DriverError;
use volcore::mountinfo;

pub(crate) fn read_mounts() -> Result<Vec<mountinfo::MountInfo>, DriverError> {
    mountinfo::current().map_err(|e| DriverError::Failed {
        op: "read mountinfo",
        what: "this host".into(),
        detail: e.to_string(),
        source: None,
    })
}

/// Whether a process is still running (a zombie is not).
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => false,
    }
}

/// PIDs of rbd-fuse processes serving `dir` (their last argument).
pub(crate) fn fuse_pids(dir: &Path) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let want = dir.display().to_string();
    rd.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .collect();
            let prog = std::str::from_utf8(args.first()?).ok()?;
            let last = std::str::from_utf8(args.last()?).ok()?;
            (prog.ends_with("rbd-fuse") && last == want).then_some(pid)
        })
        .collect()
}
