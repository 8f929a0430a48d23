//! Block-device I/O limits, written where a container's I/O is charged.
//!
//! - **cgroup v1** (blkio): throttling is not hierarchical — a rule in the root or in
//!   Docker's parent cgroup does not slow a process in a child cgroup (measured: with
//!   1 MiB/s in the root, a process in the root wrote at 1.0 MB/s and the same `dd` from a
//!   child cgroup at 910 MB/s). So a rule is written into the parent the container
//!   runtime puts containers under (Docker's `docker` by default) **and into every cgroup
//!   below it**, and a watcher (inotify) writes the rules in force into each cgroup that
//!   appears later — containers started after the mount.
//! - **cgroup v2**: `io.max` is hierarchical, so the rule goes into the parent's `io.max`
//!   once.
//!
//! A [`Throttler`] remembers the rules in force per device, so new cgroups get them and a
//! runtime change replaces them everywhere.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::policy::RateLimit;

/// Where limits are written.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Hierarchy {
    /// cgroup v1: the blkio controller's mount (`/sys/fs/cgroup/blkio`) and, under it, the
    /// parent whose whole subtree gets the rules.
    V1 {
        /// The blkio mount.
        root: PathBuf,
        /// The parent cgroup (absolute path under `root`).
        parent: PathBuf,
    },
    /// cgroup v2: a parent cgroup directory with an `io.max` file.
    V2(PathBuf),
}

/// Why limits could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// No usable hierarchy.
    #[error("no cgroup blkio (v1) throttle files and no cgroup v2 io.max found; rate limits cannot be applied on this host")]
    Unsupported,
    /// The parent cgroup is not usable.
    #[error("cgroup parent {path}: {why}")]
    BadParent {
        /// The path.
        path: PathBuf,
        /// Why.
        why: String,
    },
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
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
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

/// Where to look for the hierarchy.
#[derive(Clone, Debug)]
pub struct ThrottleConfig {
    /// The v1 parent cgroup, relative to the blkio mount (Docker's cgroupfs default is
    /// `docker`; `/` means every cgroup on the host).
    pub v1_parent: PathBuf,
    /// The v2 parent cgroup directory (with `io.max`), used when there is no v1 blkio.
    pub v2_parent: Option<PathBuf>,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            v1_parent: PathBuf::from("docker"),
            v2_parent: None,
        }
    }
}

/// Applies and remembers per-device limits (see the module docs).
#[derive(Debug)]
pub struct Throttler {
    hierarchy: Hierarchy,
    rules: Mutex<BTreeMap<DevNum, RateLimit>>,
}

fn write(file: PathBuf, line: String) -> Result<(), CgroupError> {
    std::fs::write(&file, &line).map_err(|source| CgroupError::Write { file, line, source })
}

/// `dir` and every cgroup directory below it.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(rd) = std::fs::read_dir(&out[i]) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}

impl Throttler {
    /// Finds a hierarchy: v1 blkio under `/sys/fs/cgroup/blkio` (the parent is created if
    /// missing, so the watcher can watch it before the runtime's first container), else
    /// the v2 parent if it has `io.max`.
    pub fn detect(cfg: &ThrottleConfig) -> Result<Self, CgroupError> {
        Self::detect_at(Path::new("/sys/fs/cgroup/blkio"), cfg)
    }

    /// [`detect`](Self::detect) with the v1 blkio mount at `v1_root`.
    pub fn detect_at(v1_root: &Path, cfg: &ThrottleConfig) -> Result<Self, CgroupError> {
        if v1_root.join(V1_FILES[1]).exists() {
            let rel = cfg.v1_parent.strip_prefix("/").unwrap_or(&cfg.v1_parent);
            if rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(CgroupError::BadParent {
                    path: cfg.v1_parent.clone(),
                    why: "it must be a plain relative path such as docker".into(),
                });
            }
            let parent = v1_root.join(rel);
            std::fs::create_dir_all(&parent).map_err(|e| CgroupError::BadParent {
                path: parent.clone(),
                why: e.to_string(),
            })?;
            return Ok(Self::new(Hierarchy::V1 {
                root: v1_root.to_path_buf(),
                parent,
            }));
        }
        if let Some(p) = &cfg.v2_parent {
            if p.join("io.max").exists() {
                return Ok(Self::new(Hierarchy::V2(p.clone())));
            }
        }
        Err(CgroupError::Unsupported)
    }

    /// A throttler over a known hierarchy.
    pub fn new(hierarchy: Hierarchy) -> Self {
        Self {
            hierarchy,
            rules: Mutex::default(),
        }
    }

    /// The hierarchy.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    fn write_to(&self, cgroup: &Path, dev: DevNum, limits: &RateLimit) -> Result<(), CgroupError> {
        match &self.hierarchy {
            Hierarchy::V1 { .. } => {
                let values = [
                    limits.read_bps,
                    limits.write_bps,
                    limits.read_iops,
                    limits.write_iops,
                ];
                for (f, v) in V1_FILES.iter().zip(values) {
                    write(cgroup.join(f), format!("{dev} {v}"))?;
                }
                Ok(())
            }
            Hierarchy::V2(_) => {
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
                write(cgroup.join("io.max"), line)
            }
        }
    }

    /// The cgroups a rule goes into now.
    fn targets(&self) -> Vec<PathBuf> {
        match &self.hierarchy {
            Hierarchy::V1 { parent, .. } => subtree(parent),
            Hierarchy::V2(p) => vec![p.clone()],
        }
    }

    /// Applies `limits` to `dev` everywhere it must be (0 = unlimited; all zero removes
    /// the rule). A cgroup that vanished meanwhile (a container exiting) is skipped.
    pub fn apply(&self, dev: DevNum, limits: &RateLimit) -> Result<(), CgroupError> {
        {
            let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
            if *limits == RateLimit::default() {
                rules.remove(&dev);
            } else {
                rules.insert(dev, *limits);
            }
        }
        let mut first_err = None;
        for cg in self.targets() {
            match self.write_to(&cg, dev, limits) {
                Ok(()) => {}
                Err(_) if !cg.exists() => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Removes every limit on `dev`.
    pub fn clear(&self, dev: DevNum) -> Result<(), CgroupError> {
        self.apply(dev, &RateLimit::default())
    }

    /// The rules in force (by device).
    pub fn rules(&self) -> BTreeMap<DevNum, RateLimit> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Writes every rule in force into `cgroup` (a new container's).
    fn apply_all_to(&self, cgroup: &Path) {
        for (dev, limits) in self.rules() {
            if let Err(e) = self.write_to(cgroup, dev, &limits) {
                if cgroup.exists() {
                    warn!(cgroup = %cgroup.display(), error = %e, "could not apply rate limits to a new cgroup");
                }
            }
        }
    }

    /// The limits on `dev` in `cgroup` (v1: read back from its throttle files).
    pub fn current_in(&self, cgroup: &Path, dev: DevNum) -> RateLimit {
        let mut out = RateLimit::default();
        if let Hierarchy::V1 { .. } = self.hierarchy {
            let read = |f: &str| -> u64 {
                std::fs::read_to_string(cgroup.join(f))
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

    /// On v1, watches the parent's subtree and writes the rules in force into every new
    /// cgroup as it appears; `None` on v2 (hierarchical) or if inotify is unavailable.
    pub fn spawn_watcher(self: &Arc<Self>) -> Option<JoinHandle<()>> {
        let Hierarchy::V1 { parent, .. } = &self.hierarchy else {
            return None;
        };
        let ino = match inotify::Inotify::init() {
            Ok(i) => i,
            Err(e) => {
                warn!(error = %e, "inotify unavailable: containers started after a mount are not throttled");
                return None;
            }
        };
        let mask = inotify::WatchMask::CREATE | inotify::WatchMask::ONLYDIR;
        let mut watches = ino.watches();
        let mut dirs: HashMap<inotify::WatchDescriptor, PathBuf> = HashMap::new();
        for d in subtree(parent) {
            if let Ok(wd) = watches.add(&d, mask) {
                dirs.insert(wd, d);
            }
        }
        let stream = match ino.into_event_stream([0u8; 4096]) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "inotify stream unavailable: containers started after a mount are not throttled");
                return None;
            }
        };
        let me = Arc::downgrade(self);
        Some(tokio::spawn(async move {
            let mut stream = stream;
            while let Some(ev) = stream.next().await {
                let Ok(ev) = ev else { continue };
                let Some(me) = me.upgrade() else { return };
                let (Some(dir), Some(name)) = (dirs.get(&ev.wd), ev.name.as_ref()) else {
                    continue;
                };
                if !ev.mask.contains(inotify::EventMask::ISDIR) {
                    continue;
                }
                let new = dir.join(name);
                debug!(cgroup = %new.display(), "new cgroup; applying the rate limits in force");
                // Watch it first, then write: a grandchild made in between is caught by
                // the walk below.
                for d in subtree(&new) {
                    if let Ok(wd) = watches.add(&d, mask) {
                        dirs.insert(wd, d.clone());
                    }
                    me.apply_all_to(&d);
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parent_outside_the_hierarchy_is_refused() {
        let root = std::env::temp_dir().join(format!("cg-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap_or_default();
        std::fs::write(root.join(V1_FILES[1]), "").unwrap_or_default();
        let cfg = ThrottleConfig {
            v1_parent: PathBuf::from("../etc"),
            v2_parent: None,
        };
        let e = Throttler::detect_at(&root, &cfg)
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("plain relative path")),
            "{e:?}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
