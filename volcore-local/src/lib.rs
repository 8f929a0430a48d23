//! The local loop-file driver: a volume is a sparse image file under a state directory,
//! attached to a loop device, formatted with the policy's mkfs template and mounted at
//! `<MountPath>/<policy>/<volume>`. Snapshots are copies of the image (reflinks where the
//! filesystem allows, sparse copies otherwise), taken with the filesystem frozen when the
//! volume is mounted. For single hosts, development and tests; needs root.
//!
//! Layout under the state directory:
//!
//! ```text
//! volumes/<policy>/<volume>.img
//! snapshots/<policy>/<volume>/<snapshot>.img
//! frozen/<policy>.<volume>          a filesystem this driver froze (its mount point)
//! ```
//!
//! A frozen filesystem hangs every writer, so a snapshot thaws it on every path: after
//! the copy, when the copy fails or outlasts the freeze limit (a bound of its own, shorter
//! than the command timeout), when the snapshot is cancelled (its future dropped), and —
//! through the `frozen/` markers — when a driver starts after a crash
//! ([`VolumeDriver::recover`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};
use volcore::driver::{
    format_attached, DriverError, Mount, MountDriver, SnapshotDriver, VolumeDriver, VolumeSpec,
};
use volcore::exec::{Cmd, Exec};
use volcore::policy::BackendKind;
use volcore::{loopdev, mountinfo};
use volcore::{PolicyName, SnapshotName, VolumeName, VolumeRef};

/// The local driver.
#[derive(Debug)]
pub struct LocalDriver {
    state: PathBuf,
    exec: Arc<dyn Exec>,
    /// Attach/detach and mount/unmount sequences run one at a time, so two mounts of one
    /// volume cannot both attach a loop device.
    serial: Mutex<()>,
    /// The longest a filesystem stays frozen for a snapshot.
    freeze_limit: Duration,
}

/// How long a snapshot may keep a filesystem frozen unless told otherwise.
pub const DEFAULT_FREEZE_LIMIT: Duration = Duration::from_secs(30);

/// Thaws a frozen filesystem if dropped while armed (a cancelled snapshot).
struct Thaw {
    mount_point: PathBuf,
    marker: PathBuf,
    armed: bool,
}

impl Thaw {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Thaw {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // No await in drop: fsfreeze --unfreeze is one ioctl, done in a blocking task
        // where a runtime is there, else right here.
        let (mp, marker) = (self.mount_point.clone(), self.marker.clone());
        let thaw = move || {
            let ok = std::process::Command::new("fsfreeze")
                .args(["--unfreeze", &mp.display().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                let _ = std::fs::remove_file(&marker);
                warn!(at = %mp.display(), "snapshot cancelled while the filesystem was frozen: thawed");
            } else {
                warn!(at = %mp.display(), "could not thaw after a cancelled snapshot; the driver retries at its next start");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(thaw);
            }
            Err(_) => thaw(),
        }
    }
}

fn io_err(op: &'static str, what: &VolumeRef, e: std::io::Error) -> DriverError {
    DriverError::io(op, format!("volume {what}"), e)
}

impl LocalDriver {
    /// A driver keeping its images under `state_dir` (created if missing), running
    /// commands through `exec`.
    pub fn new(state_dir: impl Into<PathBuf>, exec: Arc<dyn Exec>) -> Result<Self, DriverError> {
        let state = state_dir.into();
        if !state.is_absolute() {
            return Err(DriverError::Invalid(format!(
                "the local driver's state directory {} must be an absolute path",
                state.display()
            )));
        }
        for d in ["volumes", "snapshots"] {
            std::fs::create_dir_all(state.join(d)).map_err(|e| {
                DriverError::Invalid(format!("cannot create {}: {e}", state.join(d).display()))
            })?;
        }
        Ok(Self {
            state,
            exec,
            serial: Mutex::new(()),
            freeze_limit: DEFAULT_FREEZE_LIMIT,
        })
    }

    /// The same driver with another freeze limit (how long a snapshot may keep a mounted
    /// filesystem frozen).
    pub fn with_freeze_limit(mut self, limit: Duration) -> Self {
        self.freeze_limit = limit;
        self
    }

    fn frozen_dir(&self) -> PathBuf {
        self.state.join("frozen")
    }

    fn frozen_marker(&self, v: &VolumeRef) -> PathBuf {
        self.frozen_dir().join(format!("{}.{}", v.policy, v.volume))
    }

    async fn unfreeze(
        &self,
        v: &VolumeRef,
        mp: &Path,
        timeout: Duration,
    ) -> Result<(), DriverError> {
        self.run(
            "unfreeze",
            v,
            Cmd::new(
                "fsfreeze",
                ["--unfreeze".to_owned(), mp.display().to_string()],
                timeout,
            ),
        )
        .await
        .map(|_| ())
    }

    /// The image file of a volume.
    pub fn image(&self, v: &VolumeRef) -> PathBuf {
        self.state
            .join("volumes")
            .join(v.policy.as_str())
            .join(format!("{}.img", v.volume))
    }

    fn snapdir(&self, v: &VolumeRef) -> PathBuf {
        self.state
            .join("snapshots")
            .join(v.policy.as_str())
            .join(v.volume.as_str())
    }

    fn snapfile(&self, v: &VolumeRef, s: &SnapshotName) -> PathBuf {
        self.snapdir(v).join(format!("{s}.img"))
    }

    async fn run(&self, op: &'static str, v: &VolumeRef, cmd: Cmd) -> Result<String, DriverError> {
        let out = self.exec.run(&cmd).await.map_err(|e| match e {
            volcore::exec::ExecError::Timeout { timeout, .. } => DriverError::Timeout {
                op,
                what: format!("volume {v}"),
                timeout,
            },
            other => DriverError::Failed {
                op,
                what: format!("volume {v}"),
                detail: other.to_string(),
                source: None,
            },
        })?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(DriverError::Failed {
                op,
                what: format!("volume {v}"),
                detail: format!("`{cmd}` exited {}: {}", out.status, out.stderr.trim()),
                source: None,
            })
        }
    }

    async fn attach(
        &self,
        v: &VolumeRef,
        file: &Path,
        timeout: Duration,
    ) -> Result<(PathBuf, bool), DriverError> {
        if let Some(dev) = loopdev::of_file(file).into_iter().next() {
            return Ok((dev, false));
        }
        let out = self
            .run(
                "attach",
                v,
                Cmd::new(
                    "losetup",
                    [
                        "--find".to_owned(),
                        "--show".to_owned(),
                        file.display().to_string(),
                    ],
                    timeout,
                ),
            )
            .await?;
        let dev = PathBuf::from(out.trim());
        debug!(volume = %v, device = %dev.display(), "attached");
        Ok((dev, true))
    }

    async fn detach_all(
        &self,
        v: &VolumeRef,
        file: &Path,
        timeout: Duration,
    ) -> Result<(), DriverError> {
        loopdev::detach_all(file, |dev| async move {
            let cmd = Cmd::new(
                "losetup",
                ["-d".to_owned(), dev.display().to_string()],
                timeout,
            );
            self.run("detach", v, cmd).await.map(drop)
        })
        .await
    }

    /// Mount points of `file` on this host (through any loop device backing it).
    fn mount_points(&self, file: &Path) -> Result<Vec<(PathBuf, PathBuf)>, DriverError> {
        let mounts = mountinfo::current().map_err(|e| DriverError::Failed {
            op: "read mountinfo",
            what: "this host".into(),
            detail: e.to_string(),
            source: None,
        })?;
        Ok(mounts
            .into_iter()
            .filter_map(|m| {
                let backing = loopdev::backing_file(&m.source)?;
                (backing == file).then(|| (m.mount_point, PathBuf::from(m.source)))
            })
            .collect())
    }

    fn volume_of(&self, image: &Path) -> Option<VolumeRef> {
        let rest = image.strip_prefix(self.state.join("volumes")).ok()?;
        let mut comps = rest.components();
        let p = comps.next()?.as_os_str().to_str()?;
        let f = comps.next()?.as_os_str().to_str()?;
        if comps.next().is_some() {
            return None;
        }
        let v = f.strip_suffix(".img")?;
        Some(VolumeRef::new(
            PolicyName::new(p).ok()?,
            VolumeName::new(v).ok()?,
        ))
    }

    async fn copy_file(
        &self,
        v: &VolumeRef,
        from: &Path,
        to: &Path,
        timeout: Duration,
    ) -> Result<(), DriverError> {
        let tmp = to.with_extension("img.partial");
        let res = self
            .run(
                "copy",
                v,
                Cmd::new(
                    "cp",
                    [
                        "--reflink=auto".to_owned(),
                        "--sparse=always".to_owned(),
                        from.display().to_string(),
                        tmp.display().to_string(),
                    ],
                    timeout,
                ),
            )
            .await;
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, to).map_err(|e| io_err("copy", v, e))
    }
}

#[async_trait]
impl VolumeDriver for LocalDriver {
    fn backend(&self) -> BackendKind {
        BackendKind::Local
    }

    async fn create(&self, spec: &VolumeSpec) -> Result<(), DriverError> {
        let v = &spec.volume;
        if spec.size.is_zero() {
            return Err(DriverError::Invalid(format!(
                "volume {v} needs a size above zero"
            )));
        }
        let img = self.image(v);
        if let Some(dir) = img.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_err("create", v, e))?;
        }
        let f = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&img)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(DriverError::AlreadyExists {
                    what: format!("volume {v} ({})", img.display()),
                })
            }
            Err(e) => return Err(io_err("create", v, e)),
        };
        // Sparse: takes no space until written.
        if let Err(e) = f.set_len(spec.size.bytes()) {
            let _ = std::fs::remove_file(&img);
            return Err(io_err("create", v, e));
        }
        info!(volume = %v, size = %spec.size, "image created");
        Ok(())
    }

    async fn format(&self, spec: &VolumeSpec) -> Result<(), DriverError> {
        let v = &spec.volume;
        let img = self.image(v);
        if !img.exists() {
            return Err(DriverError::NotFound {
                what: format!("volume {v}"),
            });
        }
        let _g = self.serial.lock().await;
        let t = spec.timeout;
        format_attached(
            spec,
            t,
            || async { Ok(self.attach(v, &img, t).await?.0) },
            |mkfs| async { self.run("mkfs", v, mkfs).await.map(drop) },
            || self.detach_all(v, &img, t),
        )
        .await?;
        info!(volume = %v, filesystem = %spec.filesystem, "formatted");
        Ok(())
    }

    async fn destroy(&self, spec: &VolumeSpec) -> Result<(), DriverError> {
        let v = &spec.volume;
        let img = self.image(v);
        if !img.exists() {
            return Err(DriverError::NotFound {
                what: format!("volume {v}"),
            });
        }
        let _g = self.serial.lock().await;
        if let Some((mp, _)) = self.mount_points(&img)?.into_iter().next() {
            return Err(DriverError::Busy {
                what: format!("volume {v}"),
                detail: format!("it is mounted at {}", mp.display()),
            });
        }
        self.detach_all(v, &img, spec.timeout).await?;
        std::fs::remove_file(&img).map_err(|e| io_err("destroy", v, e))?;
        let snaps = self.snapdir(v);
        if snaps.exists() {
            std::fs::remove_dir_all(&snaps).map_err(|e| io_err("destroy snapshots", v, e))?;
        }
        info!(volume = %v, "destroyed");
        Ok(())
    }

    async fn exists(&self, spec: &VolumeSpec) -> Result<bool, DriverError> {
        Ok(self.image(&spec.volume).exists())
    }

    async fn list(&self) -> Result<Vec<VolumeRef>, DriverError> {
        let mut out = Vec::new();
        let root = self.state.join("volumes");
        let rd = |p: &Path| {
            std::fs::read_dir(p).map_err(|e| DriverError::Failed {
                op: "list",
                what: p.display().to_string(),
                detail: e.to_string(),
                source: None,
            })
        };
        for pol in rd(&root)? {
            let pol = pol.map_err(|e| DriverError::Failed {
                op: "list",
                what: root.display().to_string(),
                detail: e.to_string(),
                source: None,
            })?;
            if !pol.path().is_dir() {
                continue;
            }
            for f in rd(&pol.path())?.flatten() {
                if let Some(v) = self.volume_of(&f.path()) {
                    out.push(v);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Thaws every filesystem this driver froze and did not thaw (a crash mid-snapshot).
    async fn recover(&self) -> Result<(), DriverError> {
        let Ok(rd) = std::fs::read_dir(self.frozen_dir()) else {
            return Ok(());
        };
        for e in rd.flatten() {
            let Ok(mp) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            let mp = PathBuf::from(mp.trim());
            let out = self
                .exec
                .run(&Cmd::new(
                    "fsfreeze",
                    ["--unfreeze".to_owned(), mp.display().to_string()],
                    Duration::from_secs(30),
                ))
                .await;
            match out {
                Ok(o) if o.success() => {
                    warn!(at = %mp.display(), "thawed a filesystem a snapshot left frozen");
                }
                // Not frozen (any more), or not mounted: nothing to thaw.
                Ok(o) => debug!(at = %mp.display(), stderr = %o.stderr.trim(), "nothing to thaw"),
                Err(err) => {
                    warn!(at = %mp.display(), error = %err, "could not thaw a filesystem a snapshot left frozen");
                    continue;
                }
            }
            let _ = std::fs::remove_file(e.path());
        }
        Ok(())
    }

    fn snapshots(&self) -> Option<&dyn SnapshotDriver> {
        Some(self)
    }

    fn mounts(&self) -> Option<&dyn MountDriver> {
        Some(self)
    }
}

#[async_trait]
impl MountDriver for LocalDriver {
    async fn mount(&self, spec: &VolumeSpec, at: &Path) -> Result<Mount, DriverError> {
        let v = &spec.volume;
        let img = self.image(v);
        if !img.exists() {
            return Err(DriverError::NotFound {
                what: format!("volume {v}"),
            });
        }
        let _g = self.serial.lock().await;
        if let Some((mp, dev)) = self
            .mount_points(&img)?
            .into_iter()
            .find(|(mp, _)| mp == at)
        {
            return Ok(Mount {
                volume: v.clone(),
                path: mp,
                device: Some(dev),
            });
        }
        std::fs::create_dir_all(at).map_err(|e| io_err("mount", v, e))?;
        let (dev, attached) = self.attach(v, &img, spec.timeout).await?;
        let res = self
            .run(
                "mount",
                v,
                Cmd::new(
                    "mount",
                    [
                        "-t".to_owned(),
                        spec.filesystem.clone(),
                        dev.display().to_string(),
                        at.display().to_string(),
                    ],
                    spec.timeout,
                ),
            )
            .await;
        if let Err(e) = res {
            if attached {
                let _ = self.detach_all(v, &img, spec.timeout).await;
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
        let v = &spec.volume;
        let img = self.image(v);
        let _g = self.serial.lock().await;
        let points = self.mount_points(&img)?;
        if points.iter().any(|(mp, _)| mp == at) {
            self.run(
                "unmount",
                v,
                Cmd::new("umount", [at.display().to_string()], spec.timeout),
            )
            .await?;
        }
        // Detach unless the image is still mounted somewhere else.
        if img.exists() && points.iter().all(|(mp, _)| mp == at) {
            self.detach_all(v, &img, spec.timeout).await?;
        }
        if let Err(e) = std::fs::remove_dir(at) {
            if e.kind() != std::io::ErrorKind::NotFound {
                debug!(at = %at.display(), error = %e, "mount point left in place");
            }
        }
        Ok(())
    }

    async fn mounted(&self) -> Result<Vec<Mount>, DriverError> {
        let mounts = mountinfo::current().map_err(|e| DriverError::Failed {
            op: "read mountinfo",
            what: "this host".into(),
            detail: e.to_string(),
            source: None,
        })?;
        Ok(mounts
            .into_iter()
            .filter_map(|m| {
                let img = loopdev::backing_file(&m.source)?;
                let volume = self.volume_of(&img)?;
                Some(Mount {
                    volume,
                    path: m.mount_point,
                    device: Some(PathBuf::from(m.source)),
                })
            })
            .collect())
    }
}

#[async_trait]
impl SnapshotDriver for LocalDriver {
    async fn create_snapshot(
        &self,
        spec: &VolumeSpec,
        snap: &SnapshotName,
    ) -> Result<(), DriverError> {
        let v = &spec.volume;
        let img = self.image(v);
        if !img.exists() {
            return Err(DriverError::NotFound {
                what: format!("volume {v}"),
            });
        }
        let to = self.snapfile(v, snap);
        if to.exists() {
            return Err(DriverError::AlreadyExists {
                what: format!("snapshot {snap} of {v}"),
            });
        }
        std::fs::create_dir_all(self.snapdir(v)).map_err(|e| io_err("snapshot", v, e))?;
        let _g = self.serial.lock().await;
        // A mounted filesystem is frozen while it is copied, so the snapshot is consistent.
        let frozen = self
            .mount_points(&img)?
            .into_iter()
            .map(|(mp, _)| mp)
            .next();
        let Some(mp) = frozen else {
            return self.copy_file(v, &img, &to, spec.timeout).await;
        };
        // The marker goes first: a crash after the freeze leaves it for `recover`.
        let marker = self.frozen_marker(v);
        std::fs::create_dir_all(self.frozen_dir()).map_err(|e| io_err("snapshot", v, e))?;
        std::fs::write(&marker, mp.display().to_string()).map_err(|e| io_err("snapshot", v, e))?;
        let freeze = self
            .run(
                "freeze",
                v,
                Cmd::new(
                    "fsfreeze",
                    ["--freeze".to_owned(), mp.display().to_string()],
                    spec.timeout,
                ),
            )
            .await;
        if let Err(e) = freeze {
            let _ = std::fs::remove_file(&marker);
            return Err(e);
        }
        let thaw = Thaw {
            mount_point: mp.clone(),
            marker: marker.clone(),
            armed: true,
        };
        let limit = self.freeze_limit.min(spec.timeout);
        let res =
            match tokio::time::timeout(limit, self.copy_file(v, &img, &to, spec.timeout)).await {
                Ok(r) => r,
                Err(_) => {
                    let _ = std::fs::remove_file(to.with_extension("img.partial"));
                    Err(DriverError::Timeout {
                        op: "copy of the frozen filesystem",
                        what: format!("volume {v} (thawed; the snapshot was not taken)"),
                        timeout: limit,
                    })
                }
            };
        match self.unfreeze(v, &mp, spec.timeout).await {
            Ok(()) => {
                thaw.disarm();
                let _ = std::fs::remove_file(&marker);
            }
            // The guard tries once more as it drops; the marker stays for `recover`.
            Err(e) => warn!(volume = %v, error = %e, "could not unfreeze the filesystem"),
        }
        res?;
        info!(volume = %v, snapshot = %snap, "snapshot taken");
        Ok(())
    }

    async fn remove_snapshot(
        &self,
        spec: &VolumeSpec,
        snap: &SnapshotName,
    ) -> Result<(), DriverError> {
        let f = self.snapfile(&spec.volume, snap);
        match std::fs::remove_file(&f) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(DriverError::NotFound {
                what: format!("snapshot {snap} of {}", spec.volume),
            }),
            Err(e) => Err(io_err("remove snapshot", &spec.volume, e)),
        }
    }

    async fn list_snapshots(&self, spec: &VolumeSpec) -> Result<Vec<SnapshotName>, DriverError> {
        let v = &spec.volume;
        if !self.image(v).exists() {
            return Err(DriverError::NotFound {
                what: format!("volume {v}"),
            });
        }
        let dir = self.snapdir(v);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut snaps: Vec<(std::time::SystemTime, SnapshotName)> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.strip_suffix(".img")?.to_owned();
                let snap = SnapshotName::new(name).ok()?;
                let t = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                Some((t, snap))
            })
            .collect();
        snaps.sort();
        Ok(snaps.into_iter().map(|(_, s)| s).collect())
    }

    async fn copy_snapshot(
        &self,
        spec: &VolumeSpec,
        snap: &SnapshotName,
        to: &VolumeSpec,
    ) -> Result<(), DriverError> {
        let from = self.snapfile(&spec.volume, snap);
        if !from.exists() {
            return Err(DriverError::NotFound {
                what: format!("snapshot {snap} of {}", spec.volume),
            });
        }
        let target = self.image(&to.volume);
        if target.exists() {
            return Err(DriverError::AlreadyExists {
                what: format!("volume {}", to.volume),
            });
        }
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_err("copy", &to.volume, e))?;
        }
        self.copy_file(&to.volume, &from, &target, spec.timeout)
            .await?;
        info!(from = %spec.volume, snapshot = %snap, to = %to.volume, "volume copied from snapshot");
        Ok(())
    }
}
