//! The driver's configuration and a volume's driver parameters.

use std::path::PathBuf;
use std::time::Duration;

use volcore::driver::{DriverError, VolumeSpec};

use crate::naming::image_name;
use crate::rbd::{self, ImageSpec};

/// Image features when a policy names none: `layering` only. Clones need layering; the
/// kernel client maps such images on any kernel; and an RBD advisory lock (the fence) does
/// not fight the exclusive-lock feature's own lock, which would hang every writer.
pub const DEFAULT_FEATURES: &[&str] = &["layering"];

pub(crate) const KNOWN_FEATURES: &[&str] = &[
    "layering",
    "exclusive-lock",
    "object-map",
    "fast-diff",
    "deep-flatten",
    "journaling",
];
pub(crate) const KNOWN_PARAMS: &[&str] = &["pool", "features", "data-pool", "flatten"];

/// How images are attached as block devices on this host.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Attach {
    /// The kernel client: `rbd device map` / `rbd device unmap` (production default).
    #[default]
    Krbd,
    /// `rbd-nbd` through `rbd device map -t nbd` (needs the nbd module).
    Nbd,
    /// `rbd-fuse` exposing the image as a file, attached with `losetup --direct-io=on`:
    /// for hosts and CI without the rbd and nbd kernel modules.
    Fuse,
}

impl std::str::FromStr for Attach {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "krbd" => Ok(Self::Krbd),
            "nbd" => Ok(Self::Nbd),
            "fuse" => Ok(Self::Fuse),
            other => Err(format!(
                "unknown RBD attach strategy {other:?}; use krbd, nbd or fuse"
            )),
        }
    }
}

impl std::fmt::Display for Attach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Krbd => "krbd",
            Self::Nbd => "nbd",
            Self::Fuse => "fuse",
        })
    }
}

/// How to reach the cluster and attach images.
#[derive(Clone, Debug)]
pub struct CephConfig {
    /// `ceph.conf` (`-c`); `None` uses Ceph's default search (`CEPH_CONF`, /etc/ceph).
    pub conf: Option<PathBuf>,
    /// The cephx user (`--id`); `None` is `admin`.
    pub id: Option<String>,
    /// Pools [`VolumeDriver::list`](volcore::driver::VolumeDriver::list) looks in (policies name their own pool for everything
    /// else).
    pub pools: Vec<String>,
    /// The attach strategy.
    pub attach: Attach,
    /// Where the fuse strategy mounts rbd-fuse (`<state>/fuse/<pool>/<image>/`).
    pub state_dir: PathBuf,
    /// The programs (defaults `rbd`, `rbd-fuse`, `ceph`).
    pub programs: Programs,
}

/// Program paths.
#[derive(Clone, Debug)]
pub struct Programs {
    /// `rbd`.
    pub rbd: String,
    /// `rbd-fuse`.
    pub rbd_fuse: String,
    /// `ceph` (only for `osd blocklist add` when fencing; nothing else can do it).
    pub ceph: String,
}

impl Default for Programs {
    fn default() -> Self {
        Self {
            rbd: "rbd".into(),
            rbd_fuse: "rbd-fuse".into(),
            ceph: "ceph".into(),
        }
    }
}

impl CephConfig {
    /// Defaults: Ceph's own conf search, user admin, pool `rbd`, krbd.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            conf: None,
            id: None,
            pools: vec!["rbd".into()],
            attach: Attach::default(),
            state_dir: state_dir.into(),
            programs: Programs::default(),
        }
    }
}

pub(crate) fn check_pool(what: &str, pool: &str) -> Result<(), DriverError> {
    let ok = !pool.is_empty()
        && pool.len() <= 128
        && !pool.starts_with(['-', '.'])
        && pool
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(DriverError::Invalid(format!(
            "{what} {pool:?} is not a usable Ceph pool name (letters, digits, '_', '-', '.'; not starting with '-' or '.')"
        )))
    }
}

/// The parsed driver parameters of a volume.
pub(crate) struct Params {
    pub(crate) image: ImageSpec,
    pub(crate) features: Vec<String>,
    pub(crate) data_pool: Option<String>,
    pub(crate) flatten: bool,
}

impl Params {
    pub(crate) fn of(spec: &VolumeSpec) -> Result<Self, DriverError> {
        let v = &spec.volume;
        if let Some(k) = spec
            .params
            .keys()
            .find(|k| !KNOWN_PARAMS.contains(&k.as_str()))
        {
            return Err(DriverError::Invalid(format!(
                "volume {v}: unknown ceph driver parameter {k:?}; known: {}",
                KNOWN_PARAMS.join(", ")
            )));
        }
        let pool = spec.params.get("pool").ok_or_else(|| {
            DriverError::Invalid(format!(
                "volume {v}: the ceph backend needs driver.pool in the policy (e.g. \"driver\": {{\"pool\": \"rbd\"}})"
            ))
        })?;
        check_pool("driver.pool", pool)?;
        let features = match spec.params.get("features") {
            None => DEFAULT_FEATURES.iter().map(|s| (*s).to_owned()).collect(),
            Some(list) => {
                let fs: Vec<String> = list
                    .split(',')
                    .map(|f| f.trim().to_owned())
                    .filter(|f| !f.is_empty())
                    .collect();
                if let Some(bad) = fs.iter().find(|f| !KNOWN_FEATURES.contains(&f.as_str())) {
                    return Err(DriverError::Invalid(format!(
                        "volume {v}: unknown RBD image feature {bad:?} in driver.features; known: {}",
                        KNOWN_FEATURES.join(", ")
                    )));
                }
                fs
            }
        };
        let data_pool = match spec.params.get("data-pool") {
            Some(dp) => {
                check_pool("driver.data-pool", dp)?;
                Some(dp.clone())
            }
            None => None,
        };
        let flatten = match spec.params.get("flatten").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(DriverError::Invalid(format!(
                    "volume {v}: driver.flatten must be true or false, not {other:?}"
                )))
            }
        };
        Ok(Self {
            image: ImageSpec {
                pool: pool.clone(),
                image: image_name(v),
            },
            features,
            data_pool,
            flatten,
        })
    }

    /// Whether the image holds the exclusive-lock feature's own lock (which an advisory
    /// lock must not fight).
    pub(crate) fn exclusive_lock(&self) -> bool {
        self.features.iter().any(|f| f == "exclusive-lock")
    }
}

pub(crate) fn timeout_of(spec: &VolumeSpec) -> Duration {
    if spec.timeout.is_zero() {
        rbd::DEFAULT_TIMEOUT
    } else {
        spec.timeout
    }
}
