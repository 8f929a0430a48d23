//! Snapshots, and copies of a snapshot into a new volume (v2 clones).

use async_trait::async_trait;
use tracing::info;
use volcore::driver::{DriverError, SnapshotDriver, VolumeSpec};
use volcore::SnapshotName;

use crate::config::{timeout_of, Params};
use crate::rbd::{self, Errno, Snap};
use crate::RbdDriver;

#[async_trait]
impl SnapshotDriver for RbdDriver {
    /// One `rbd snap create`.
    async fn create_snapshot(
        &self,
        spec: &VolumeSpec,
        snap: &SnapshotName,
    ) -> Result<(), DriverError> {
        let p = Params::of(spec)?;
        let s = p.image.snap(snap.as_str());
        match self
            .cli
            .run(
                "snapshot",
                &p.image.to_string(),
                self.cli
                    .rbd_cmd(&["snap", "create", "--no-progress", &s], timeout_of(spec)),
            )
            .await
        {
            Err(DriverError::AlreadyExists { .. }) => Err(DriverError::AlreadyExists {
                what: format!("snapshot {snap} of {}", spec.volume),
            }),
            Err(DriverError::NotFound { .. }) => Err(DriverError::NotFound {
                what: format!("volume {}", spec.volume),
            }),
            other => other.map(|_| ()),
        }
    }

    /// One `rbd snap rm`.
    async fn remove_snapshot(
        &self,
        spec: &VolumeSpec,
        snap: &SnapshotName,
    ) -> Result<(), DriverError> {
        let p = Params::of(spec)?;
        let s = p.image.snap(snap.as_str());
        match self
            .cli
            .run(
                "remove snapshot",
                &p.image.to_string(),
                self.cli
                    .rbd_cmd(&["snap", "rm", "--no-progress", &s], timeout_of(spec)),
            )
            .await
        {
            Err(DriverError::NotFound { .. }) => Err(DriverError::NotFound {
                what: format!("snapshot {snap} of {}", spec.volume),
            }),
            other => other.map(|_| ()),
        }
    }

    /// One `rbd snap ls`; oldest first (snapshot ids grow).
    async fn list_snapshots(&self, spec: &VolumeSpec) -> Result<Vec<SnapshotName>, DriverError> {
        let p = Params::of(spec)?;
        let listed = self
            .cli
            .read_json(
                "list snapshots",
                &p.image.to_string(),
                &["snap", "ls", "--format", "json", &p.image.spec()],
                timeout_of(spec),
            )
            .await;
        let mut snaps: Vec<Snap> = match listed {
            Err(DriverError::NotFound { .. }) => {
                return Err(DriverError::NotFound {
                    what: format!("volume {}", spec.volume),
                })
            }
            other => other?,
        };
        snaps.sort_by_key(|s| s.id);
        // Snapshots volcore did not make may have names it would not accept; skip them.
        Ok(snaps
            .into_iter()
            .filter_map(|s| SnapshotName::new(s.name).ok())
            .collect())
    }

    /// One `rbd clone` (format 2: the snapshot needs no protection), plus `rbd flatten`
    /// when the target asks for it; a failed flatten removes the clone.
    async fn copy_snapshot(
        &self,
        spec: &VolumeSpec,
        snap: &SnapshotName,
        to: &VolumeSpec,
    ) -> Result<(), DriverError> {
        let from = Params::of(spec)?;
        let dst = Params::of(to)?;
        let t = timeout_of(spec);
        let src = from.image.snap(snap.as_str());
        let dspec = dst.image.spec();
        let mut args = vec!["clone", "--rbd-default-clone-format", "2"];
        for f in &dst.features {
            args.extend(["--image-feature", f]);
        }
        if let Some(dp) = &dst.data_pool {
            args.extend(["--data-pool", dp]);
        }
        args.extend([src.as_str(), dspec.as_str()]);
        let out = self
            .cli
            .exec("copy", &dst.image.to_string(), &self.cli.rbd_cmd(&args, t))
            .await?;
        if !out.success() {
            let cmd = self.cli.rbd_cmd(&args, t);
            return Err(match rbd::errno(&out) {
                Errno::Exists => DriverError::AlreadyExists {
                    what: format!("volume {} ({dspec})", to.volume),
                },
                Errno::NotFound if !out.stderr.contains("error opening pool") => {
                    DriverError::NotFound {
                        what: format!("snapshot {snap} of {}", spec.volume),
                    }
                }
                _ => rbd::failure("copy", &dst.image.to_string(), &cmd, &out),
            });
        }
        if dst.flatten {
            let res = self
                .cli
                .run(
                    "flatten",
                    &dst.image.to_string(),
                    self.cli.rbd_cmd(&["flatten", "--no-progress", &dspec], t),
                )
                .await;
            if let Err(e) = res {
                let _ = self
                    .cli
                    .run(
                        "destroy",
                        &dst.image.to_string(),
                        self.cli.rbd_cmd(&["rm", "--no-progress", &dspec], t),
                    )
                    .await;
                return Err(e);
            }
        }
        info!(from = %spec.volume, snapshot = %snap, to = %to.volume, flatten = dst.flatten, "volume cloned from snapshot");
        Ok(())
    }
}
