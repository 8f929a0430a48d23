//! Mount, unmount and list this host's mounts of images.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tracing::{debug, info};
use volcore::driver::{DriverError, Fenced, Mount, MountDriver, VolumeSpec};
use volcore::exec::Cmd;
use volcore::HostName;

use crate::cli::io_err;
use crate::config::{timeout_of, Params};
use crate::naming::volume_of_image;
use crate::RbdDriver;

#[async_trait]
impl MountDriver for RbdDriver {
    async fn mount(&self, spec: &VolumeSpec, at: &Path) -> Result<Mount, DriverError> {
        let p = Params::of(spec)?;
        let v = &spec.volume;
        let t = timeout_of(spec);
        let lock = self.image_lock(&p.image);
        let _g = lock.lock().await;
        let st = self.attached().await?;
        if let Some(m) = st.all.iter().find(|m| m.mount_point == at) {
            let ours = st
                .mounts
                .iter()
                .any(|(x, img)| x.mount_point == at && *img == p.image);
            if ours {
                return Ok(Mount {
                    volume: v.clone(),
                    path: m.mount_point.clone(),
                    device: Some(PathBuf::from(&m.source)),
                });
            }
            return Err(DriverError::Busy {
                what: format!("mount point {}", at.display()),
                detail: format!("{} is mounted there", m.source),
            });
        }
        std::fs::create_dir_all(at).map_err(|e| io_err("mount", &format!("volume {v}"), e))?;
        let (dev, attached) = self.attach(&p.image, t, &st).await?;
        let res = self
            .cli
            .run(
                "mount",
                &format!("volume {v}"),
                Cmd::new(
                    "mount",
                    [
                        "-t".to_owned(),
                        spec.filesystem.clone(),
                        dev.display().to_string(),
                        at.display().to_string(),
                    ],
                    t,
                ),
            )
            .await;
        if let Err(e) = res {
            if attached {
                let _ = self.detach(&p.image, t, None).await;
            }
            return Err(e);
        }
        info!(volume = %v, at = %at.display(), device = %dev.display(), "mounted");
        Ok(Mount {
            volume: v.clone(),
            path: at.to_path_buf(),
            device: Some(dev),
        })
    }

    async fn unmount(&self, spec: &VolumeSpec, at: &Path) -> Result<(), DriverError> {
        let p = Params::of(spec)?;
        let v = &spec.volume;
        let t = timeout_of(spec);
        let lock = self.image_lock(&p.image);
        let _g = lock.lock().await;
        let att = self.attached().await?;
        if att.all.iter().any(|m| m.mount_point == at) {
            self.cli
                .run(
                    "unmount",
                    &format!("volume {v}"),
                    Cmd::new("umount", [at.display().to_string()], t),
                )
                .await?;
        }
        // Detach unless the image is still mounted somewhere else on this host.
        let still = att
            .mounts
            .iter()
            .any(|(m, img)| *img == p.image && m.mount_point != at);
        if !still {
            // Unmounting changed no attachment: the state read above still holds.
            self.detach(&p.image, t, Some(&att)).await?;
        }
        if let Err(e) = std::fs::remove_dir(at) {
            if e.kind() != std::io::ErrorKind::NotFound {
                debug!(at = %at.display(), error = %e, "mount point left in place");
            }
        }
        Ok(())
    }

    async fn mounted(&self) -> Result<Vec<Mount>, DriverError> {
        Ok(self
            .attached()
            .await?
            .mounts
            .into_iter()
            .filter_map(|(m, img)| {
                Some(Mount {
                    volume: volume_of_image(&img.image)?,
                    path: m.mount_point,
                    device: Some(PathBuf::from(m.source)),
                })
            })
            .collect())
    }

    /// Takes the RBD lock `volcore:<host>`, fencing every other client first when this
    /// host does not have the image attached (`fence.rs`).
    async fn claim(&self, spec: &VolumeSpec, host: &HostName) -> Result<Vec<Fenced>, DriverError> {
        self.take_lock(spec, host).await
    }

    /// Drops this host's RBD lock, without blocklisting (`fence.rs`).
    async fn release(&self, spec: &VolumeSpec, host: &HostName) -> Result<(), DriverError> {
        self.drop_lock(spec, host).await
    }
}
