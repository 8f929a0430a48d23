//! krbd and rbd-nbd: `rbd device map [-t nbd]`, `rbd device unmap`.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use volcore::driver::DriverError;
use volcore::mountinfo::MountInfo;

use super::{Attached, Attacher};
use crate::cli::Cli;
use crate::rbd::{self, ImageSpec, Mapped};

/// The kernel client (`nbd: false`) or rbd-nbd (`nbd: true`).
#[derive(Debug)]
pub(crate) struct Device {
    pub(crate) nbd: bool,
}

impl Device {
    /// `device <verb>`, with `-t nbd` for rbd-nbd.
    fn args<'a>(&self, verb: &'a str) -> Vec<&'a str> {
        let mut args = vec!["device", verb];
        if self.nbd {
            args.extend(["-t", "nbd"]);
        }
        args
    }
}

#[async_trait]
impl Attacher for Device {
    async fn scan(
        &self,
        cli: &Cli,
        mounts: &[MountInfo],
    ) -> Result<(Vec<Option<ImageSpec>>, Vec<Mapped>), DriverError> {
        let mapped = cli
            .mapped(self.nbd, "this host", rbd::DEFAULT_TIMEOUT)
            .await?;
        let images = mounts
            .iter()
            .map(|m| {
                let x = mapped
                    .iter()
                    .find(|x| x.is_head() && x.device == m.source)?;
                Some(ImageSpec {
                    pool: x.pool.clone(),
                    image: x.name.clone(),
                })
            })
            .collect();
        Ok((images, mapped))
    }

    fn holds(&self, _cli: &Cli, st: &Attached, img: &ImageSpec) -> bool {
        st.mapped
            .iter()
            .any(|m| m.is_head() && m.pool == img.pool && m.name == img.image)
    }

    async fn attach(
        &self,
        cli: &Cli,
        img: &ImageSpec,
        t: Duration,
        st: &Attached,
    ) -> Result<(PathBuf, bool), DriverError> {
        if let Some(m) = st
            .mapped
            .iter()
            .find(|m| m.pool == img.pool && m.name == img.image && m.is_head())
        {
            return Ok((PathBuf::from(&m.device), false));
        }
        let what = img.to_string();
        let spec = img.spec();
        let mut args = self.args("map");
        args.push(&spec);
        let out = cli.run("map", &what, cli.rbd_cmd(&args, t)).await?;
        let dev = out.lines().map(str::trim).rfind(|l| l.starts_with("/dev/"));
        let dev = dev.ok_or_else(|| {
            DriverError::failed(
                "map",
                what.clone(),
                format!("rbd device map printed no device: {out:?}"),
            )
        })?;
        Ok((PathBuf::from(dev), true))
    }

    async fn detach(
        &self,
        cli: &Cli,
        img: &ImageSpec,
        t: Duration,
        st: &Attached,
    ) -> Result<(), DriverError> {
        let what = img.to_string();
        for m in &st.mapped {
            if m.pool != img.pool || m.name != img.image {
                continue;
            }
            let mut args = self.args("unmap");
            args.push(&m.device);
            // A device the kernel still flushes is briefly busy: unmapping is
            // idempotent, so a few tries are safe.
            let mut tries = 0;
            loop {
                match cli.run("unmap", &what, cli.rbd_cmd(&args, t)).await {
                    Err(DriverError::Busy { .. }) if tries < 5 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(DriverError::NotFound { .. }) => break,
                    other => {
                        other?;
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}
