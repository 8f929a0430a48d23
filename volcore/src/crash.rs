//! Crash points: named steps of every operation where a crash test kills the process
//! (feature `failpoints`). The `FAILPOINTS` environment variable arms them, as the
//! `fail` crate reads it: `FAILPOINTS='mount.after-mount=return'` kills the process with
//! SIGKILL when a mount reaches that step (`1*return` for the first time only; other
//! `fail` actions such as `sleep(500)` work too). Without the feature a point is nothing.
//!
//! The points, in the order each operation passes them:
//! `create.after-lock`, `create.after-storage`, `create.after-format`,
//! `remove.after-lock`, `remove.after-destroy`, `snapshot.after-lock`,
//! `snapshot.after-snapshot`, `copy.after-lock`, `copy.after-copy`, `mount.after-lock`,
//! `mount.after-claim`, `mount.after-mount`, `unmount.after-unmount`,
//! `unmount.after-release`.

/// Every crash point, for tests that walk them all.
pub const POINTS: &[&str] = &[
    "create.after-lock",
    "create.after-storage",
    "create.after-format",
    "remove.after-lock",
    "remove.after-destroy",
    "snapshot.after-lock",
    "snapshot.after-snapshot",
    "copy.after-lock",
    "copy.after-copy",
    "mount.after-lock",
    "mount.after-claim",
    "mount.after-mount",
    "unmount.after-unmount",
    "unmount.after-release",
];

/// Passes the crash point `name`; with the feature and the point armed, the process dies
/// here as if killed with `kill -9` (no destructors, no cleanup).
#[inline]
pub fn point(name: &'static str) {
    #[cfg(feature = "failpoints")]
    {
        static ARMED: std::sync::Once = std::sync::Once::new();
        ARMED.call_once(|| {
            // Reads FAILPOINTS once; the scenario lives as long as the process.
            std::mem::forget(fail::FailScenario::setup());
        });
        fail::fail_point!(name, |_| {
            eprintln!("crash point {name}: killing this process (SIGKILL)");
            let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::SIGKILL);
        });
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
}
