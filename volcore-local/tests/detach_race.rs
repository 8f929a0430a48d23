//! A loop device that is gone by the time `losetup -d` runs (the kernel or a concurrent
//! detach got there first; seen in CI as "detach failed: No such device or address") is
//! already what the unmount wants: the unmount succeeds and nothing is left attached.
//! Real loop devices, ext4 and mounts; needs root.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use volcore::driver::{MountDriver, VolumeDriver, VolumeSpec};
use volcore::exec::{Cmd, Exec, ExecError, Output, SystemExec};
use volcore::policy::MkfsTemplate;
use volcore::{Size, VolumeRef};
use volcore_local::LocalDriver;

/// Runs real commands; a `losetup -d DEV` first detaches DEV itself, so the real command
/// meets a device that is no longer there.
#[derive(Debug)]
struct DetachedFirst;

#[async_trait]
impl Exec for DetachedFirst {
    async fn run(&self, cmd: &Cmd) -> Result<Output, ExecError> {
        if cmd.program == "losetup" && cmd.args.first().is_some_and(|a| a == "-d") {
            let first = SystemExec.run(cmd).await?;
            assert_eq!(first.status, 0, "the injected detach: {first:?}");
        }
        SystemExec.run(cmd).await
    }
}

#[tokio::test]
async fn unmount_succeeds_when_the_loop_device_is_already_gone() {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("detach-race-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();
    let d = LocalDriver::new(base.join("state"), Arc::new(DetachedFirst)).unwrap();
    let spec = VolumeSpec {
        volume: VolumeRef::parse("race/v").unwrap(),
        size: Size::from_bytes(32 << 20),
        filesystem: "ext4".into(),
        mkfs: Some(MkfsTemplate::new("ext4", "mkfs.ext4 -q -m0 %").unwrap()),
        params: BTreeMap::new(),
        source: None,
        timeout: Duration::from_secs(30),
    };
    d.create(&spec).await.unwrap();
    d.format(&spec).await.unwrap();
    let at = base.join("mnt");
    d.mount(&spec, &at).await.unwrap();
    d.unmount(&spec, &at).await.unwrap();
    assert!(d.mounted().await.unwrap().is_empty());
    d.destroy(&spec).await.unwrap();
    let _ = std::fs::remove_dir_all(&base);
}
