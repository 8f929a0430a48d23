//! How an image becomes a block device on this host: one [`Attacher`] per strategy
//! ([`Attach::Krbd`] and [`Attach::Nbd`] map it with `rbd device map`, [`Attach::Fuse`]
//! exposes it with rbd-fuse and attaches the file to a loop device).

mod device;
mod fuse;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use volcore::driver::DriverError;
use volcore::mountinfo::MountInfo;

use crate::cli::Cli;
use crate::config::Attach;
use crate::host::read_mounts;
use crate::rbd::{ImageSpec, Mapped};
use crate::RbdDriver;

/// What [`RbdDriver::attached`] found: one look at the host's state, shared by the steps
/// of a mount or unmount.
#[derive(Default)]
pub(crate) struct Attached {
    /// Every mount on the host.
    pub(crate) all: Vec<MountInfo>,
    /// The mounts of attached images.
    pub(crate) mounts: Vec<(MountInfo, ImageSpec)>,
    /// krbd/nbd mappings (empty for fuse).
    pub(crate) mapped: Vec<Mapped>,
}

impl Attached {
    /// Whether an rbd-fuse is mounted at `dir`.
    pub(crate) fn fuse_mounted(&self, dir: &Path) -> bool {
        self.all
            .iter()
            .any(|m| m.mount_point == dir && m.fs_type.starts_with("fuse"))
    }
}

/// One attach strategy.
#[async_trait]
pub(crate) trait Attacher: Send + Sync + std::fmt::Debug {
    /// For each of this host's `mounts`, the image behind its source device when this
    /// strategy attached it; and the mappings read on the way (krbd/nbd, else empty).
    async fn scan(
        &self,
        cli: &Cli,
        mounts: &[MountInfo],
    ) -> Result<(Vec<Option<ImageSpec>>, Vec<Mapped>), DriverError>;

    /// Whether `img` is attached here, by `st`.
    fn holds(&self, cli: &Cli, st: &Attached, img: &ImageSpec) -> bool;

    /// Attaches `img` (idempotent: an attachment in `st` is reused). Returns the device
    /// and whether this call attached it.
    async fn attach(
        &self,
        cli: &Cli,
        img: &ImageSpec,
        t: Duration,
        st: &Attached,
    ) -> Result<(PathBuf, bool), DriverError>;

    /// Detaches every attachment of `img` that `st` shows; none is `Ok`.
    async fn detach(
        &self,
        cli: &Cli,
        img: &ImageSpec,
        t: Duration,
        st: &Attached,
    ) -> Result<(), DriverError>;
}

/// The strategy `a` names.
pub(crate) fn strategy(a: Attach) -> Box<dyn Attacher> {
    match a {
        Attach::Krbd => Box::new(device::Device { nbd: false }),
        Attach::Nbd => Box::new(device::Device { nbd: true }),
        Attach::Fuse => Box::new(fuse::Fuse),
    }
}

impl RbdDriver {
    /// Whether this host has `img` attached (mapped, or its rbd-fuse mounted).
    pub(crate) fn attached_here(&self, st: &Attached, img: &ImageSpec) -> bool {
        self.attacher.holds(&self.cli, st, img)
    }

    /// Attaches the image as a block device (idempotent: an existing attachment in `st`,
    /// the host's state just read, is reused). Returns the device and whether this call
    /// attached it.
    pub(crate) async fn attach(
        &self,
        img: &ImageSpec,
        t: Duration,
        st: &Attached,
    ) -> Result<(PathBuf, bool), DriverError> {
        self.attacher.attach(&self.cli, img, t, st).await
    }

    /// Detaches every attachment of the image on this host; none is `Ok`. `known` is the
    /// host's state when the caller read it since the last attach; else it is read.
    pub(crate) async fn detach(
        &self,
        img: &ImageSpec,
        t: Duration,
        known: Option<&Attached>,
    ) -> Result<(), DriverError> {
        match known {
            Some(st) => self.attacher.detach(&self.cli, img, t, st).await,
            None => {
                let st = self.attached().await?;
                self.attacher.detach(&self.cli, img, t, &st).await
            }
        }
    }

    /// This host's mounts of attached images, with the attachments: one mountinfo read
    /// and what the strategy reads (at most one `rbd device list`).
    pub(crate) async fn attached(&self) -> Result<Attached, DriverError> {
        let all = read_mounts()?;
        let (images, mapped) = self.attacher.scan(&self.cli, &all).await?;
        let mounts = all
            .iter()
            .zip(images)
            .filter_map(|(m, img)| Some((m.clone(), img?)))
            .collect();
        Ok(Attached {
            all,
            mounts,
            mapped,
        })
    }
}
