//! The Ceph RBD driver: volumes are RBD images, driven through the `rbd` CLI (JSON output
//! wherever rbd offers it), attached on a host by one of three [`Attach`] strategies,
//! formatted with the policy's mkfs template and mounted at `<MountPath>/<policy>/<volume>`.
//!
//! - Image names are `<policy>.<volume>` in the policy's `driver.pool` — volplugin's
//!   naming, so its images are found. Policy and volume names cannot contain `.`, so the
//!   map is injective (`a-b/c` → `a-b.c`, `a/b-c` → `a.b-c`).
//! - Every command runs through [`volcore::exec::Exec`] with a timeout that kills it
//!   (`rbd rm` of a locked exclusive-lock image spins forever); only read-only commands are
//!   retried; rbd's errnos and messages become [`DriverError`]s by meaning.
//! - [`MountDriver::claim`](volcore::driver::MountDriver::claim) takes an RBD advisory lock named `volcore:<host>`; breaking a
//!   stale one (another host's lease expired) blocklists the old host's clients (fencing).
//!
//! Driver parameters (the policy's `driver` map): `pool` (required), `features` (comma
//! list of image features, default `layering`; see [`DEFAULT_FEATURES`]), `data-pool`,
//! and, on the target of a snapshot copy, `flatten` (`true` detaches the clone from its
//! parent).

mod attach;
mod cli;
mod config;
mod crud;
mod fence;
mod host;
mod mount;
mod naming;
mod rbd;
mod snapshots;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;
use volcore::driver::DriverError;
use volcore::exec::Exec;

use attach::Attacher;
use cli::Cli;
use config::check_pool;

pub use config::{Attach, CephConfig, Programs, DEFAULT_FEATURES};
pub use naming::{image_name, lock_id, volume_of_image};
pub use rbd::{ImageSpec, Locker};

/// The Ceph RBD driver.
#[derive(Debug)]
pub struct RbdDriver {
    cli: Cli,
    attacher: Box<dyn Attacher>,
    /// Attach/detach sequences of one image run one at a time, so two mounts of it cannot
    /// both map it; other images go on meanwhile (a hung command stalls only its image).
    images: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl RbdDriver {
    /// A driver for the cluster `cfg` names, running commands through `exec`.
    pub fn new(cfg: CephConfig, exec: Arc<dyn Exec>) -> Result<Self, DriverError> {
        if !cfg.state_dir.is_absolute() {
            return Err(DriverError::Invalid(format!(
                "the ceph driver's state directory {} must be an absolute path",
                cfg.state_dir.display()
            )));
        }
        for p in &cfg.pools {
            check_pool("listed pool", p)?;
        }
        Ok(Self {
            attacher: attach::strategy(cfg.attach),
            cli: Cli::new(cfg, exec),
            images: std::sync::Mutex::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CephConfig {
        &self.cli.cfg
    }

    /// The lock that serializes attach/detach work on one image.
    pub(crate) fn image_lock(&self, img: &ImageSpec) -> Arc<Mutex<()>> {
        self.images
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(img.spec())
            .or_default()
            .clone()
    }
}

#[cfg(test)]
mod tests;
