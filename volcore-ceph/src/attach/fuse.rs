//! rbd-fuse + loop: the image as a file under `<state>/fuse/<pool>/<image>/`, attached
//! with `losetup --direct-io=on`, for hosts without the rbd and nbd kernel modules. No
//! client-side cache, so a fenced client fails at once.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tracing::warn;
use volcore::driver::DriverError;
use volcore::exec::Cmd;
use volcore::loopdev;
use volcore::mountinfo::MountInfo;

use super::{Attached, Attacher};
use crate::cli::{io_err, Cli};
use crate::host::{alive, fuse_pids};
use crate::rbd::{ImageSpec, Mapped};

/// How long an rbd-fuse unmount may take before its rbd-fuse is killed.
const FUSE_UMOUNT_PATIENCE: Duration = Duration::from_secs(5);

/// rbd-fuse and a loop device.
#[derive(Debug)]
pub(crate) struct Fuse;

/// Where rbd-fuse serves `img`.
fn fuse_dir(cli: &Cli, img: &ImageSpec) -> PathBuf {
    cli.cfg
        .state_dir
        .join("fuse")
        .join(&img.pool)
        .join(&img.image)
}

#[async_trait]
impl Attacher for Fuse {
    async fn scan(
        &self,
        cli: &Cli,
        mounts: &[MountInfo],
    ) -> Result<(Vec<Option<ImageSpec>>, Vec<Mapped>), DriverError> {
        let root = cli.cfg.state_dir.join("fuse");
        let loops = loopdev::devices();
        let images = mounts
            .iter()
            .map(|m| {
                let (_, back) = loops
                    .iter()
                    .find(|(d, _)| d.as_os_str() == m.source.as_str())?;
                let rest = back.strip_prefix(&root).ok()?;
                let parts: Vec<&str> = rest.iter().filter_map(|c| c.to_str()).collect();
                match parts[..] {
                    [pool, image, file] if image == file => Some(ImageSpec {
                        pool: pool.to_owned(),
                        image: image.to_owned(),
                    }),
                    _ => None,
                }
            })
            .collect();
        Ok((images, Vec::new()))
    }

    fn holds(&self, cli: &Cli, st: &Attached, img: &ImageSpec) -> bool {
        st.fuse_mounted(&fuse_dir(cli, img))
    }

    async fn attach(
        &self,
        cli: &Cli,
        img: &ImageSpec,
        t: Duration,
        st: &Attached,
    ) -> Result<(PathBuf, bool), DriverError> {
        let what = img.to_string();
        let dir = fuse_dir(cli, img);
        let mut attached = false;
        if !st.fuse_mounted(&dir) {
            std::fs::create_dir_all(&dir).map_err(|e| io_err("attach", &what, e))?;
            let mut a = cli.base();
            // No client-side cache: a fenced (blocklisted) client's writes must fail at
            // once instead of landing in a cache that can never flush.
            a.extend([
                "--rbd_cache=false".to_owned(),
                "-p".to_owned(),
                img.pool.clone(),
                "-r".to_owned(),
                img.image.clone(),
                dir.display().to_string(),
            ]);
            cli.run(
                "attach",
                &what,
                Cmd::new(cli.cfg.programs.rbd_fuse.clone(), a, t),
            )
            .await?;
            attached = true;
        }
        let file = dir.join(&img.image);
        if let Some(dev) = loopdev::of_file(&file).into_iter().next() {
            return Ok((dev, attached));
        }
        let res = cli
            .run(
                "attach",
                &what,
                Cmd::new(
                    "losetup",
                    [
                        "--find".to_owned(),
                        "--show".to_owned(),
                        "--direct-io=on".to_owned(),
                        file.display().to_string(),
                    ],
                    t,
                ),
            )
            .await;
        match res {
            Ok(out) => Ok((PathBuf::from(out.trim()), true)),
            Err(e) => {
                if attached {
                    let _ = fuse_umount(cli, img, t).await;
                }
                Err(e)
            }
        }
    }

    async fn detach(
        &self,
        cli: &Cli,
        img: &ImageSpec,
        t: Duration,
        st: &Attached,
    ) -> Result<(), DriverError> {
        let what = img.to_string();
        let dir = fuse_dir(cli, img);
        let file = dir.join(&img.image);
        if !st.fuse_mounted(&dir) {
            return Ok(());
        }
        loopdev::detach_all(&file, |dev| {
            let what = &what;
            async move {
                let cmd = Cmd::new("losetup", ["-d".to_owned(), dev.display().to_string()], t);
                cli.run("detach", what, cmd).await.map(drop)
            }
        })
        .await?;
        // The kernel detaches a loop device only when its last opener (udev's probe after
        // mkfs, say) lets go; until then the file keeps rbd-fuse busy.
        let deadline = tokio::time::Instant::now() + FUSE_UMOUNT_PATIENCE;
        while !loopdev::of_file(&file).is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        fuse_umount(cli, img, t).await
    }
}

/// Unmounts an rbd-fuse mount. A fenced rbd-fuse can spin and never answer the
/// unmount; it is then killed, which lets the kernel drop the mount.
async fn fuse_umount(cli: &Cli, img: &ImageSpec, t: Duration) -> Result<(), DriverError> {
    let what = img.to_string();
    let dir = fuse_dir(cli, img);
    let pids = fuse_pids(&dir);
    let mut res;
    let mut tries = 0;
    loop {
        res = cli
            .run(
                "detach",
                &what,
                // A healthy rbd-fuse unmounts at once; a fenced one never does.
                Cmd::new(
                    "umount",
                    [dir.display().to_string()],
                    t.min(FUSE_UMOUNT_PATIENCE),
                ),
            )
            .await;
        // Briefly busy (a closing opener of the file): unmounting again is harmless.
        match &res {
            Err(DriverError::Failed { detail, .. }) if detail.contains("busy") && tries < 10 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ => break,
        }
    }
    if let Err(e) = res {
        warn!(image = %img.spec(), error = %e, "rbd-fuse did not unmount; killing it");
        cli.kill(&fuse_pids(&dir), t).await;
        cli.run(
            "detach",
            &what,
            Cmd::new("umount", ["-l".to_owned(), dir.display().to_string()], t),
        )
        .await?;
    }
    // rbd-fuse closes the image (drops its watch) after the unmount returns; until it
    // has exited, the image still looks open to `rbd rm` and to other hosts.
    let deadline = tokio::time::Instant::now() + FUSE_UMOUNT_PATIENCE;
    while pids.iter().any(|p| alive(*p)) {
        if tokio::time::Instant::now() >= deadline {
            warn!(image = %img.spec(), "rbd-fuse did not exit after its unmount; killing it");
            cli.kill(&pids, t).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_dir(&dir);
    Ok(())
}
