//! Create, format, destroy, list and resize images.

use std::collections::BTreeMap;

use async_trait::async_trait;
use tracing::{info, warn};
use volcore::driver::{
    format_attached, DriverError, MountDriver, SnapshotDriver, VolumeDriver, VolumeSpec,
};
use volcore::policy::BackendKind;
use volcore::{Size, VolumeRef};

use crate::config::{timeout_of, Params};
use crate::naming::volume_of_image;
use crate::rbd::{self, Errno, ImageSpec};
use crate::RbdDriver;

#[async_trait]
impl VolumeDriver for RbdDriver {
    fn backend(&self) -> BackendKind {
        BackendKind::Ceph
    }

    /// One `rbd create`.
    async fn create(&self, spec: &VolumeSpec) -> Result<(), DriverError> {
        let p = Params::of(spec)?;
        let v = &spec.volume;
        if spec.size.is_zero() {
            return Err(DriverError::Invalid(format!(
                "volume {v} needs a size above zero"
            )));
        }
        let size = rbd::size_arg(spec.size.bytes());
        let ispec = p.image.spec();
        let mut args = vec!["create", "--size", &size];
        for f in &p.features {
            args.extend(["--image-feature", f]);
        }
        if let Some(dp) = &p.data_pool {
            args.extend(["--data-pool", dp]);
        }
        args.push(&ispec);
        self.cli
            .run(
                "create",
                &p.image.to_string(),
                self.cli.rbd_cmd(&args, timeout_of(spec)),
            )
            .await?;
        info!(volume = %v, image = %ispec, size = %spec.size, "image created");
        Ok(())
    }

    /// Attach, mkfs, detach; a failed mkfs removes the image.
    async fn format(&self, spec: &VolumeSpec) -> Result<(), DriverError> {
        let p = Params::of(spec)?;
        if let Err(e) = self.mkfs_on(spec, &p.image).await {
            warn!(volume = %spec.volume, error = %e, "format failed; removing the image");
            let rm = self
                .cli
                .run(
                    "destroy",
                    &p.image.to_string(),
                    self.cli
                        .rbd_cmd(&["rm", "--no-progress", &p.image.spec()], timeout_of(spec)),
                )
                .await;
            if let Err(rm) = rm {
                warn!(volume = %spec.volume, error = %rm, "could not remove the image of a failed format");
            }
            return Err(e);
        }
        info!(volume = %spec.volume, filesystem = %spec.filesystem, "formatted");
        Ok(())
    }

    /// `rbd lock ls`, `rbd rm` (+ `rbd snap purge` and `rbd rm` again when it has
    /// snapshots).
    async fn destroy(&self, spec: &VolumeSpec) -> Result<(), DriverError> {
        let p = Params::of(spec)?;
        let t = timeout_of(spec);
        let img = &p.image;
        let what = img.to_string();
        // `rbd rm` of a locked exclusive-lock image never returns: refuse first.
        let locks = self.cli.lockers(img, t).await?;
        if let Some(l) = locks.first() {
            return Err(DriverError::Busy {
                what: format!("volume {} ({})", spec.volume, img.spec()),
                detail: format!(
                    "it is locked by {} ({} at {}); unmount it there, or break the lock with `rbd lock rm {} '{}' {}`",
                    l.id, l.locker, l.address, img.spec(), l.id, l.locker
                ),
            });
        }
        let rm = self.cli.rbd_cmd(&["rm", "--no-progress", &img.spec()], t);
        let mut purged = false;
        let mut busy_again = false;
        loop {
            let out = self.cli.exec("destroy", &what, &rm).await?;
            if out.success() {
                break;
            }
            match rbd::errno(&out) {
                Errno::Busy => {
                    let w: Vec<String> = self
                        .cli
                        .watchers(img, t)
                        .await
                        .unwrap_or_default()
                        .iter()
                        .map(|w| format!("client.{} at {}", w.client, w.address))
                        .collect();
                    if w.is_empty() && !busy_again {
                        // The watcher went away between rm and status (a dead client's
                        // watch timing out): try once more.
                        busy_again = true;
                        continue;
                    }
                    return Err(DriverError::Busy {
                        what: format!("volume {} ({})", spec.volume, img.spec()),
                        detail: if w.is_empty() {
                            rbd::message(&out)
                        } else {
                            format!(
                                "it is open by {} (a host still has it attached or mounted)",
                                w.join(", ")
                            )
                        },
                    });
                }
                Errno::NotEmpty if !purged => {
                    self.cli
                        .run(
                            "destroy snapshots",
                            &what,
                            self.cli
                                .rbd_cmd(&["snap", "purge", "--no-progress", &img.spec()], t),
                        )
                        .await?;
                    purged = true;
                }
                Errno::NotEmpty => {
                    return Err(DriverError::Busy {
                        what: format!("volume {} ({})", spec.volume, img.spec()),
                        detail: format!(
                            "{}; remove or flatten its clones first (`rbd children --all {}`)",
                            rbd::message(&out),
                            img.spec()
                        ),
                    })
                }
                _ => return Err(rbd::failure("destroy", &what, &rm, &out)),
            }
        }
        info!(volume = %spec.volume, image = %img.spec(), "image destroyed");
        Ok(())
    }

    /// One `rbd info`.
    async fn exists(&self, spec: &VolumeSpec) -> Result<bool, DriverError> {
        let p = Params::of(spec)?;
        let cmd = self.cli.rbd_cmd(
            &["info", "--format", "json", &p.image.spec()],
            timeout_of(spec),
        );
        match self.cli.read("info", &p.image.to_string(), cmd).await {
            Ok(_) => Ok(true),
            Err(DriverError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One `rbd ls` per configured pool.
    async fn list(&self) -> Result<Vec<VolumeRef>, DriverError> {
        let mut out: Vec<VolumeRef> = self
            .inventory()
            .await?
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.volume)
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The images of every configured pool, each with its `pool`.
    async fn inventory(&self) -> Result<Option<Vec<volcore::Stored>>, DriverError> {
        let mut out = Vec::new();
        for pool in &self.cli.cfg.pools {
            let names: Vec<String> = self
                .cli
                .read_json(
                    "list",
                    &format!("pool {pool}"),
                    &["ls", "--format", "json", pool],
                    rbd::DEFAULT_TIMEOUT,
                )
                .await?;
            out.extend(
                names
                    .iter()
                    .filter_map(|n| volume_of_image(n))
                    .map(|volume| volcore::Stored {
                        volume,
                        params: BTreeMap::from([("pool".to_owned(), pool.clone())]),
                    }),
            );
        }
        Ok(Some(out))
    }

    /// One `rbd resize` (grow only).
    async fn resize(&self, spec: &VolumeSpec, to: Size) -> Result<(), DriverError> {
        let p = Params::of(spec)?;
        let size = rbd::size_arg(to.bytes());
        let ispec = p.image.spec();
        let res = self
            .cli
            .run(
                "resize",
                &p.image.to_string(),
                self.cli.rbd_cmd(
                    &["resize", "--no-progress", "--size", &size, &ispec],
                    timeout_of(spec),
                ),
            )
            .await;
        match res {
            Err(DriverError::Invalid(m)) if m.contains("shrink") => Err(DriverError::Invalid(
                format!("volume {} can only grow, not shrink to {to}", spec.volume),
            )),
            other => other.map(|_| ()),
        }
    }

    fn snapshots(&self) -> Option<&dyn SnapshotDriver> {
        Some(self)
    }

    fn mounts(&self) -> Option<&dyn MountDriver> {
        Some(self)
    }
}

impl RbdDriver {
    pub(crate) async fn mkfs_on(
        &self,
        spec: &VolumeSpec,
        img: &ImageSpec,
    ) -> Result<(), DriverError> {
        let t = timeout_of(spec);
        let v = &spec.volume;
        let lock = self.image_lock(img);
        let _g = lock.lock().await;
        let what = format!("volume {v}");
        format_attached(
            spec,
            t,
            || async {
                let st = self.attached().await?;
                Ok(self.attach(img, t, &st).await?.0)
            },
            |mkfs| async { self.cli.run("mkfs", &what, mkfs).await.map(drop) },
            || self.detach(img, t, None),
        )
        .await
    }
}
