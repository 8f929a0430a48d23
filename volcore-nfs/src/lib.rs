//! NFS driver for volcore: volplugin-compatible mounts of an export (a volume's `mount`
//! option, `host:/export/path`), with its mount options checked
//! ([`options::MountPlan`]), `clientaddr` chosen as this host's address that routes to the
//! server (never the server's own, volplugin's bug), `mount -t nfs|nfs4` killed at its
//! timeout, and mount(8)'s failures explained ([`errors`]). NFS volumes are unlocked by
//! default (several hosts mount them at once); the plugin refcounts them through
//! `HostMounts` like any other.
//!
//! A mount found stale or hung (a bounded `stat`, [`NfsDriver::health`]) is detached
//! lazily and mounted afresh; an unmount that times out falls back to a lazy, forced one.
//!
//! Not built yet: provisioning sub-directories on the server (volumes are mount-only:
//! create, destroy and list are not this driver's). The driver refuses those roles plainly
//! rather than pretending.

pub mod errors;
pub mod options;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tracing::{info, warn};
use volcore::driver::{Mount, MountDriver, VolumeDriver, VolumeSpec};
use volcore::exec::{Cmd, Exec, ExecError};
use volcore::mountinfo::{self, MountInfo};
use volcore::policy::BackendKind;
use volcore::{DriverError, VolumeRef};

use crate::options::MountPlan;

/// How long a lazy, forced unmount (after a plain one timed out) may take.
const FORCED_UNMOUNT: Duration = Duration::from_secs(10);
/// How long a `stat` of a mount may take before the mount counts as hung.
const PROBE: Duration = Duration::from_secs(2);

/// What a look at a mounted export found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// It answers.
    Healthy,
    /// The server says the handle is stale (the export was recreated).
    Stale,
    /// A `stat` did not return within its bound (the server stopped answering).
    Hung,
    /// `stat` failed otherwise (its message).
    Failed(String),
}

/// The NFS driver.
#[derive(Debug, Clone)]
pub struct NfsDriver {
    exec: Arc<dyn Exec>,
    /// Where mountinfo is read from (tests give a file).
    mountinfo: PathBuf,
}

impl NfsDriver {
    /// A driver running commands through `exec`.
    pub fn new(exec: Arc<dyn Exec>) -> Self {
        Self {
            exec,
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
        }
    }

    /// Reads the mount table from `path` instead of `/proc/self/mountinfo` (tests).
    pub fn with_mountinfo(mut self, path: impl Into<PathBuf>) -> Self {
        self.mountinfo = path.into();
        self
    }

    fn nfs_mounts(&self) -> Result<Vec<MountInfo>, DriverError> {
        let text = std::fs::read_to_string(&self.mountinfo).map_err(|e| {
            DriverError::io("read mountinfo", self.mountinfo.display().to_string(), e)
        })?;
        let all = mountinfo::parse(&text)
            .map_err(|e| DriverError::failed("read mountinfo", "this host", e.to_string()))?;
        Ok(all
            .into_iter()
            .filter(|m| m.fs_type == "nfs" || m.fs_type == "nfs4")
            .collect())
    }

    /// Looks at a mounted export with a bounded `stat` (run as a command, so a hung NFS
    /// call holds a child process, not one of this daemon's threads).
    pub async fn health(&self, at: &Path) -> Probe {
        let cmd = Cmd::new(
            "stat",
            ["--format=%i".to_owned(), at.display().to_string()],
            PROBE,
        );
        match self.exec.run(&cmd).await {
            Ok(o) if o.success() => Probe::Healthy,
            Ok(o) if o.stderr.to_ascii_lowercase().contains("stale file handle") => Probe::Stale,
            Ok(o) => Probe::Failed(o.stderr.trim().to_owned()),
            Err(ExecError::Timeout { .. }) => Probe::Hung,
            Err(e) => Probe::Failed(e.to_string()),
        }
    }

    async fn detach(&self, v: &VolumeRef, at: &Path) -> Result<(), DriverError> {
        let forced = Cmd::new(
            "umount",
            ["-f".to_owned(), "-l".to_owned(), at.display().to_string()],
            FORCED_UNMOUNT,
        );
        match self.exec.run(&forced).await {
            Ok(out) if out.success() => Ok(()),
            Ok(out) => Err(errors::unmount_failed(v.to_string(), &out)),
            Err(e) => Err(exec_failed("unmount", v.to_string(), e, FORCED_UNMOUNT)),
        }
    }

    /// The mount plan of a volume: its source and its policy's parameters, with
    /// `clientaddr` found when NFSv4 needs one.
    pub async fn plan(&self, spec: &VolumeSpec) -> Result<MountPlan, DriverError> {
        let source = spec.source.as_deref().ok_or_else(|| {
            DriverError::Invalid(format!(
                "NFS volume {} has no export to mount: create it with --opt mount=host:/export/path",
                spec.volume
            ))
        })?;
        let plan = MountPlan::new(source, &spec.params).map_err(DriverError::Invalid)?;
        if !plan.needs_clientaddr {
            return Ok(plan);
        }
        let server = resolve(&plan.source.host).await?;
        let local = route_to(server).map_err(|e| {
            DriverError::Invalid(format!(
                "no local address routes to NFS server {} ({server}): {e}; set clientaddr in the policy's driver parameters",
                plan.source.host
            ))
        })?;
        Ok(plan.with_clientaddr(local))
    }
}

/// The server's address (an IP as given, or the first address its name resolves to).
async fn resolve(host: &str) -> Result<IpAddr, DriverError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    let mut addrs = tokio::net::lookup_host((host, 2049))
        .await
        .map_err(|e| DriverError::Invalid(format!("NFS server {host} does not resolve: {e}")))?;
    addrs
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| DriverError::Invalid(format!("NFS server {host} has no address")))
}

/// This host's address that routes to `server`: the local side of a UDP socket
/// "connected" to it (no packet is sent).
fn route_to(server: IpAddr) -> std::io::Result<IpAddr> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().map_err(std::io::Error::other)?
    } else {
        "[::]:0".parse().map_err(std::io::Error::other)?
    };
    let s = std::net::UdpSocket::bind(bind)?;
    s.connect(SocketAddr::new(server, 2049))?;
    Ok(s.local_addr()?.ip())
}

fn volume_of(at: &Path) -> Option<VolumeRef> {
    let v = at.file_name()?.to_str()?;
    let p = at.parent()?.file_name()?.to_str()?;
    VolumeRef::parse(&format!("{p}/{v}")).ok()
}

fn exec_failed(op: &'static str, what: String, e: ExecError, timeout: Duration) -> DriverError {
    match e {
        ExecError::Timeout { .. } => DriverError::Timeout { op, what, timeout },
        other => DriverError::Failed {
            op,
            what,
            detail: other.to_string(),
            source: Some(Box::new(other)),
        },
    }
}

#[async_trait]
impl VolumeDriver for NfsDriver {
    fn backend(&self) -> BackendKind {
        BackendKind::Nfs
    }

    async fn create(&self, spec: &VolumeSpec) -> Result<(), DriverError> {
        Err(not_provisioning(&spec.volume))
    }

    async fn format(&self, spec: &VolumeSpec) -> Result<(), DriverError> {
        Err(not_provisioning(&spec.volume))
    }

    async fn destroy(&self, spec: &VolumeSpec) -> Result<(), DriverError> {
        Err(not_provisioning(&spec.volume))
    }

    async fn exists(&self, spec: &VolumeSpec) -> Result<bool, DriverError> {
        Err(not_provisioning(&spec.volume))
    }

    async fn list(&self) -> Result<Vec<VolumeRef>, DriverError> {
        Ok(Vec::new())
    }

    fn mounts(&self) -> Option<&dyn MountDriver> {
        Some(self)
    }
}

fn not_provisioning(v: &VolumeRef) -> DriverError {
    DriverError::Invalid(format!(
        "volume {v}: the NFS driver only mounts existing exports (backend nfs is mount-only; use \"backend\": \"nfs\" with --opt mount=host:/export/path)"
    ))
}

#[async_trait]
impl MountDriver for NfsDriver {
    async fn mount(&self, spec: &VolumeSpec, at: &Path) -> Result<Mount, DriverError> {
        let v = &spec.volume;
        let plan = self.plan(spec).await?;
        let source = plan.source.mount_arg();
        if self.nfs_mounts()?.iter().any(|m| m.mount_point == at) {
            // Mounted already: keep it if it answers; a stale or hung one is detached and
            // mounted afresh (the next mount of a stale volume remounts it).
            match self.health(at).await {
                Probe::Healthy => {
                    return Ok(Mount {
                        volume: v.clone(),
                        path: at.to_owned(),
                        device: None,
                    })
                }
                p => {
                    warn!(volume = %v, at = %at.display(), probe = ?p, "NFS mount is stale or hung; remounting");
                    self.detach(v, at).await?;
                }
            }
        }
        std::fs::create_dir_all(at).map_err(|e| DriverError::io("mount", v.to_string(), e))?;
        let cmd = Cmd::new(
            "mount",
            [
                "-t".to_owned(),
                plan.version.fs_type().to_owned(),
                "-o".to_owned(),
                plan.options.join(","),
                source.clone(),
                at.display().to_string(),
            ],
            spec.timeout,
        );
        let out = self
            .exec
            .run(&cmd)
            .await
            .map_err(|e| exec_failed("mount", format!("{v} ({source})"), e, spec.timeout))?;
        if !out.success() {
            return Err(errors::mount_failed(&plan, format!("{v} ({source})"), &out));
        }
        info!(volume = %v, %source, "NFS export mounted");
        Ok(Mount {
            volume: v.clone(),
            path: at.to_owned(),
            device: None,
        })
    }

    async fn unmount(&self, spec: &VolumeSpec, at: &Path) -> Result<(), DriverError> {
        let v = &spec.volume;
        if !self.nfs_mounts()?.iter().any(|m| m.mount_point == at) {
            return Ok(());
        }
        let cmd = Cmd::new("umount", [at.display().to_string()], spec.timeout);
        match self.exec.run(&cmd).await {
            Ok(out) if out.success() => Ok(()),
            Ok(out) => Err(errors::unmount_failed(v.to_string(), &out)),
            Err(ExecError::Timeout { .. }) => {
                // A server that stopped answering hangs a plain unmount: detach it lazily
                // and forcibly, so the host is not held by it.
                warn!(volume = %v, at = %at.display(), "unmount timed out (server not answering?); unmounting lazily and forcibly");
                self.detach(v, at).await
            }
            Err(e) => Err(exec_failed("unmount", v.to_string(), e, spec.timeout)),
        }
    }

    async fn probe(&self, at: &Path) -> Result<(), String> {
        match self.health(at).await {
            Probe::Healthy => Ok(()),
            Probe::Stale => {
                Err("the server says its file handle is stale (the export was recreated)".into())
            }
            Probe::Hung => Err(format!(
                "a stat of it did not return within {PROBE:?} (the server stopped answering)"
            )),
            Probe::Failed(why) => Err(why),
        }
    }

    async fn mounted(&self) -> Result<Vec<Mount>, DriverError> {
        Ok(self
            .nfs_mounts()?
            .into_iter()
            .filter_map(|m| {
                Some(Mount {
                    volume: volume_of(&m.mount_point)?,
                    path: m.mount_point,
                    device: None,
                })
            })
            .collect())
    }
}
