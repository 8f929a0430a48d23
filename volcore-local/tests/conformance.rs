//! The driver conformance suite against the local driver with real loop devices, real
//! mkfs and real mounts (ext4 and xfs). Needs root, as volplugin hosts run it.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::path::PathBuf;
use std::sync::Arc;

use volcore::exec::SystemExec;
use volcore::testing::driver_suite::DriverCtx;
use volcore_local::LocalDriver;

fn base() -> PathBuf {
    // Under the target dir, not /tmp: loop images want a real filesystem.
    let p =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("local-{}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn driver() -> Arc<dyn volcore::VolumeDriver> {
    Arc::new(LocalDriver::new(base().join("state"), Arc::new(SystemExec)).unwrap())
}

fn ctx(fs: &str) -> DriverCtx {
    DriverCtx {
        mount_root: base().join("mnt"),
        filesystem: fs.into(),
        real_io: true,
        params: Default::default(),
    }
}

volcore::driver_conformance!(ext4, driver(), ctx("ext4"));
volcore::driver_conformance!(xfs, driver(), ctx("xfs"));

#[test]
fn relative_state_dir_is_refused() {
    let err = LocalDriver::new("relative/state", Arc::new(SystemExec)).unwrap_err();
    assert!(
        err.to_string().contains("must be an absolute path"),
        "{err}"
    );
}
