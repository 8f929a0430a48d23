//! Block-device I/O limits through cgroup v1 blkio throttle files or cgroup v2 `io.max`.
//!
//! Limits are per device and host-wide in v1 (the root blkio cgroup, as volplugin did); in
//! v2 they are written to the `io.max` of a chosen parent cgroup (where the container
//! runtime puts containers), since the v2 root has none.

use std::path::{Path, PathBuf};

use crate::policy::RateLimit;

/// Where limits are written.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Throttler {
    /// cgroup v1: the blkio controller's directory (`/sys/fs/cgroup/blkio`).
    V1(PathBuf),
    /// cgroup v2: a cgroup directory with an `io.max` file.
    V2(PathBuf),
}

/// Why limits could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// No usable hierarchy.
    #[error("no cgroup blkio (v1) throttle files and no cgroup v2 io.max found; rate limits cannot be applied on this host")]
    Unsupported,
    /// A device path has no device numbers.
    #[error("{0} is not a block device")]
    NotABlockDevice(PathBuf),
    /// Writing a control file failed.
    #[error("writing {line:?} to {file}: {source}")]
    Write {
        /// The file.
        file: PathBuf,
        /// What was written.
        line: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// A block device's numbers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DevNum {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
}

impl std::fmt::Display for DevNum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl DevNum {
    /// The numbers of a block device node.
    pub fn of(dev: &Path) -> Result<Self, CgroupError> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let md =
            std::fs::metadata(dev).map_err(|_| CgroupError::NotABlockDevice(dev.to_path_buf()))?;
        if !md.file_type().is_block_device() {
            return Err(CgroupError::NotABlockDevice(dev.to_path_buf()));
        }
        let r = md.rdev();
        // glibc's gnu_dev_major / gnu_dev_minor.
        Ok(Self {
            major: ((r >> 8) & 0xfff) | ((r >> 32) & !0xfff),
            minor: (r & 0xff) | ((r >> 12) & !0xff),
        })
    }
}

const V1_FILES: [&str; 4] = [
    "blkio.throttle.read_bps_device",
    "blkio.throttle.write_bps_device",
    "blkio.throttle.read_iops_device",
    "blkio.throttle.write_iops_device",
];

impl Throttler {
    /// Finds a hierarchy: v1 blkio under `/sys/fs/cgroup/blkio`, else the v2 cgroup
    /// `v2_cgroup` if given and it has `io.max`.
    pub fn detect(v2_cgroup: Option<&Path>) -> Result<Self, CgroupError> {
        let v1 = Path::new("/sys/fs/cgroup/blkio");
        if v1.join(V1_FILES[1]).exists() {
            return Ok(Self::V1(v1.to_path_buf()));
        }
        if let Some(p) = v2_cgroup {
            if p.join("io.max").exists() {
                return Ok(Self::V2(p.to_path_buf()));
            }
        }
        Err(CgroupError::Unsupported)
    }

    fn write(file: PathBuf, line: String) -> Result<(), CgroupError> {
        std::fs::write(&file, &line).map_err(|source| CgroupError::Write { file, line, source })
    }

    /// Applies `limits` to `dev` (0 = unlimited, which removes a limit).
    pub fn apply(&self, dev: DevNum, limits: &RateLimit) -> Result<(), CgroupError> {
        match self {
            Self::V1(root) => {
                let values = [
                    limits.read_bps,
                    limits.write_bps,
                    limits.read_iops,
                    limits.write_iops,
                ];
                for (f, v) in V1_FILES.iter().zip(values) {
                    Self::write(root.join(f), format!("{dev} {v}"))?;
                }
                Ok(())
            }
            Self::V2(cg) => {
                let v = |n: u64| {
                    if n == 0 {
                        "max".to_owned()
                    } else {
                        n.to_string()
                    }
                };
                let line = format!(
                    "{dev} rbps={} wbps={} riops={} wiops={}",
                    v(limits.read_bps),
                    v(limits.write_bps),
                    v(limits.read_iops),
                    v(limits.write_iops)
                );
                Self::write(cg.join("io.max"), line)
            }
        }
    }

    /// Removes every limit on `dev`.
    pub fn clear(&self, dev: DevNum) -> Result<(), CgroupError> {
        self.apply(dev, &RateLimit::default())
    }

    /// The limits now in force on `dev` (v1: read back from the throttle files).
    pub fn current(&self, dev: DevNum) -> RateLimit {
        let mut out = RateLimit::default();
        if let Self::V1(root) = self {
            let read = |f: &str| -> u64 {
                std::fs::read_to_string(root.join(f))
                    .ok()
                    .and_then(|t| {
                        t.lines().find_map(|l| {
                            l.strip_prefix(&format!("{dev} "))
                                .and_then(|v| v.trim().parse().ok())
                        })
                    })
                    .unwrap_or(0)
            };
            out.read_bps = read(V1_FILES[0]);
            out.write_bps = read(V1_FILES[1]);
            out.read_iops = read(V1_FILES[2]);
            out.write_iops = read(V1_FILES[3]);
        }
        out
    }
}
