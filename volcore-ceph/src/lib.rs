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
//! - [`MountDriver::claim`] takes an RBD advisory lock named `volcore:<host>`; breaking a
//!   stale one (another host's lease expired) blocklists the old host's clients (fencing).
//!
//! Driver parameters (the policy's `driver` map): `pool` (required), `features` (comma
//! list of image features, default `layering`; see [`DEFAULT_FEATURES`]), `data-pool`,
//! and, on the target of a snapshot copy, `flatten` (`true` detaches the clone from its
//! parent).

mod rbd;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};
use volcore::driver::{
    DriverError, Fenced, Mount, MountDriver, SnapshotDriver, VolumeDriver, VolumeSpec,
};
use volcore::exec::{Cmd, Exec, Output};
use volcore::policy::BackendKind;
use volcore::{loopdev, mountinfo};
use volcore::{HostName, PolicyName, Size, SnapshotName, VolumeName, VolumeRef};

use rbd::{Errno, Mapped, Snap, Status};
pub use rbd::{ImageSpec, Locker};

/// Image features when a policy names none: `layering` only. Clones need layering; the
/// kernel client maps such images on any kernel; and an RBD advisory lock (the fence) does
/// not fight the exclusive-lock feature's own lock, which would hang every writer.
pub const DEFAULT_FEATURES: &[&str] = &["layering"];

const KNOWN_FEATURES: &[&str] = &[
    "layering",
    "exclusive-lock",
    "object-map",
    "fast-diff",
    "deep-flatten",
    "journaling",
];
const KNOWN_PARAMS: &[&str] = &["pool", "features", "data-pool", "flatten"];

/// How long an rbd-fuse unmount may take before its rbd-fuse is killed.
const FUSE_UMOUNT_PATIENCE: Duration = Duration::from_secs(5);

/// What [`RbdDriver::attached`] found: one look at the host's state, shared by the steps
/// of a mount or unmount.
#[derive(Default)]
struct Attached {
    /// Every mount on the host.
    all: Vec<mountinfo::MountInfo>,
    /// The mounts of attached images.
    mounts: Vec<(mountinfo::MountInfo, ImageSpec)>,
    /// krbd/nbd mappings (empty for fuse).
    mapped: Vec<Mapped>,
}

impl Attached {
    fn fuse_mounted(&self, dir: &Path) -> bool {
        self.all
            .iter()
            .any(|m| m.mount_point == dir && m.fs_type.starts_with("fuse"))
    }
}

/// Clients fenced with no stale RBD lock left to name their holder (a takeover retried
/// after an earlier attempt broke the lock).
fn fenced_unlocked(spec: &VolumeSpec, img: &ImageSpec, clients: Vec<String>) -> Vec<Fenced> {
    if clients.is_empty() {
        return Vec::new();
    }
    warn!(volume = %spec.volume, image = %img.spec(), clients = ?clients, "fenced clients that still had the volume open");
    vec![Fenced {
        holder: "unknown (its RBD lock was already broken)".into(),
        clients,
    }]
}

/// The RBD lock id a host takes on the images it mounts.
pub fn lock_id(host: &HostName) -> String {
    format!("volcore:{host}")
}

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
    /// Pools [`VolumeDriver::list`] looks in (policies name their own pool for everything
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

/// The Ceph RBD driver.
#[derive(Debug)]
pub struct RbdDriver {
    cfg: CephConfig,
    exec: Arc<dyn Exec>,
    /// Attach/detach sequences of one image run one at a time, so two mounts of it cannot
    /// both map it; other images go on meanwhile (a hung command stalls only its image).
    images: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// The image of a volume: `<policy>.<volume>`.
pub fn image_name(v: &VolumeRef) -> String {
    format!("{}.{}", v.policy, v.volume)
}

/// The volume of an image name, if it is one of ours.
pub fn volume_of_image(image: &str) -> Option<VolumeRef> {
    let (p, v) = image.split_once('.')?;
    Some(VolumeRef::new(
        PolicyName::new(p).ok()?,
        VolumeName::new(v).ok()?,
    ))
}

fn check_pool(what: &str, pool: &str) -> Result<(), DriverError> {
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
struct Params {
    image: ImageSpec,
    features: Vec<String>,
    data_pool: Option<String>,
    flatten: bool,
}

impl Params {
    fn of(spec: &VolumeSpec) -> Result<Self, DriverError> {
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
    fn exclusive_lock(&self) -> bool {
        self.features.iter().any(|f| f == "exclusive-lock")
    }
}

fn timeout_of(spec: &VolumeSpec) -> Duration {
    if spec.timeout.is_zero() {
        rbd::DEFAULT_TIMEOUT
    } else {
        spec.timeout
    }
}

fn io_err(op: &'static str, what: &str, e: std::io::Error) -> DriverError {
    DriverError::io(op, what, e)
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
            cfg,
            exec,
            images: std::sync::Mutex::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CephConfig {
        &self.cfg
    }

    /// The lock that serializes attach/detach work on one image.
    fn image_lock(&self, img: &ImageSpec) -> Arc<Mutex<()>> {
        self.images
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(img.spec())
            .or_default()
            .clone()
    }

    /// Whether this host has `img` attached (mapped, or its rbd-fuse mounted).
    fn attached_here(&self, st: &Attached, img: &ImageSpec) -> bool {
        match self.cfg.attach {
            Attach::Krbd | Attach::Nbd => st
                .mapped
                .iter()
                .any(|m| m.is_head() && m.pool == img.pool && m.name == img.image),
            Attach::Fuse => st.fuse_mounted(&self.fuse_dir(img)),
        }
    }

    fn base(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(c) = &self.cfg.conf {
            a.push("-c".to_owned());
            a.push(c.display().to_string());
        }
        if let Some(id) = &self.cfg.id {
            a.push("--id".to_owned());
            a.push(id.clone());
        }
        a
    }

    fn rbd_cmd(&self, args: &[&str], timeout: Duration) -> Cmd {
        let mut a = self.base();
        a.extend(args.iter().map(|s| (*s).to_owned()));
        Cmd::new(self.cfg.programs.rbd.clone(), a, timeout)
    }

    async fn exec(&self, op: &'static str, what: &str, cmd: &Cmd) -> Result<Output, DriverError> {
        debug!(cmd = %cmd, "rbd driver");
        self.exec
            .run(cmd)
            .await
            .map_err(|e| rbd::exec_error(op, what, e))
    }

    /// Runs a command that changes something: once, no retry.
    async fn run(&self, op: &'static str, what: &str, cmd: Cmd) -> Result<String, DriverError> {
        let out = self.exec(op, what, &cmd).await?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(rbd::failure(op, what, &cmd, &out))
        }
    }

    /// Runs a read-only command, trying again once if it times out.
    async fn read(&self, op: &'static str, what: &str, cmd: Cmd) -> Result<String, DriverError> {
        match self.run(op, what, cmd.clone()).await {
            Err(DriverError::Timeout { .. }) => {
                warn!(cmd = %cmd, "timed out; trying once more");
                self.run(op, what, cmd).await
            }
            other => other,
        }
    }

    /// Runs a read-only rbd command (its `args` ask for `--format json`) and parses its
    /// output.
    async fn read_json<T: for<'de> serde::Deserialize<'de>>(
        &self,
        op: &'static str,
        what: &str,
        args: &[&str],
        t: Duration,
    ) -> Result<T, DriverError> {
        let cmd = self.rbd_cmd(args, t);
        let out = self.read(op, what, cmd.clone()).await?;
        rbd::parse(op, what, &cmd, &out)
    }

    async fn lockers(&self, img: &ImageSpec, t: Duration) -> Result<Vec<Locker>, DriverError> {
        self.read_json(
            "lock ls",
            &img.to_string(),
            &["lock", "ls", "--format", "json", &img.spec()],
            t,
        )
        .await
    }

    /// Cuts a client off the cluster (`ceph osd blocklist add`).
    async fn blocklist(&self, what: &str, addr: &str, t: Duration) -> Result<(), DriverError> {
        self.run(
            "fence",
            what,
            Cmd::new(
                self.cfg.programs.ceph.clone(),
                self.base()
                    .into_iter()
                    .chain(["osd", "blocklist", "add", addr].map(str::to_owned)),
                t,
            ),
        )
        .await
        .map(|_| ())
    }

    /// The clients that have the image open (one `rbd status`).
    async fn watchers(
        &self,
        img: &ImageSpec,
        t: Duration,
    ) -> Result<Vec<rbd::Watcher>, DriverError> {
        let st: Status = self
            .read_json(
                "status",
                &img.to_string(),
                &["status", "--format", "json", &img.spec()],
                t,
            )
            .await?;
        Ok(st.watchers)
    }

    // ---- attach strategies ----

    fn fuse_dir(&self, img: &ImageSpec) -> PathBuf {
        self.cfg
            .state_dir
            .join("fuse")
            .join(&img.pool)
            .join(&img.image)
    }

    async fn mapped(&self, nbd: bool, what: &str, t: Duration) -> Result<Vec<Mapped>, DriverError> {
        let mut args = vec!["device", "list"];
        if nbd {
            args.extend(["-t", "nbd"]);
        }
        args.extend(["--format", "json"]);
        self.read_json("device list", what, &args, t).await
    }

    /// Attaches the image as a block device (idempotent: an existing attachment in `st`,
    /// the host's state just read, is reused). Returns the device and whether this call
    /// attached it.
    async fn attach(
        &self,
        img: &ImageSpec,
        t: Duration,
        st: &Attached,
    ) -> Result<(PathBuf, bool), DriverError> {
        let what = img.to_string();
        match self.cfg.attach {
            Attach::Krbd | Attach::Nbd => {
                let nbd = self.cfg.attach == Attach::Nbd;
                if let Some(m) = st
                    .mapped
                    .iter()
                    .find(|m| m.pool == img.pool && m.name == img.image && m.is_head())
                {
                    return Ok((PathBuf::from(&m.device), false));
                }
                let spec = img.spec();
                let mut args = vec!["device", "map"];
                if nbd {
                    args.extend(["-t", "nbd"]);
                }
                args.push(&spec);
                let out = self.run("map", &what, self.rbd_cmd(&args, t)).await?;
                let dev = out.lines().map(str::trim).rfind(|l| l.starts_with("/dev/"));
                let dev = dev.ok_or_else(|| DriverError::Failed {
                    op: "map",
                    what: what.clone(),
                    detail: format!("rbd device map printed no device: {out:?}"),
                    source: None,
                })?;
                Ok((PathBuf::from(dev), true))
            }
            Attach::Fuse => {
                let dir = self.fuse_dir(img);
                let mut attached = false;
                if !st.fuse_mounted(&dir) {
                    std::fs::create_dir_all(&dir).map_err(|e| io_err("attach", &what, e))?;
                    let mut a = self.base();
                    // No client-side cache: a fenced (blocklisted) client's writes must
                    // fail at once instead of landing in a cache that can never flush.
                    a.extend([
                        "--rbd_cache=false".to_owned(),
                        "-p".to_owned(),
                        img.pool.clone(),
                        "-r".to_owned(),
                        img.image.clone(),
                        dir.display().to_string(),
                    ]);
                    self.run(
                        "attach",
                        &what,
                        Cmd::new(self.cfg.programs.rbd_fuse.clone(), a, t),
                    )
                    .await?;
                    attached = true;
                }
                let file = dir.join(&img.image);
                if let Some(dev) = loopdev::of_file(&file).into_iter().next() {
                    return Ok((dev, attached));
                }
                let res = self
                    .run(
                        "attach",
                        &what,
                        Cmd::new(
                            "losetup",
                            [
                                "--find".to_owned(),
                                "--show".to_owned(),
                                "--direct-io=on".to_owned(),
                                file.display().to_string(),
                            ],
                            t,
                        ),
                    )
                    .await;
                match res {
                    Ok(out) => Ok((PathBuf::from(out.trim()), true)),
                    Err(e) => {
                        if attached {
                            let _ = self.fuse_umount(img, t).await;
                        }
                        Err(e)
                    }
                }
            }
        }
    }

    /// Detaches every attachment of the image on this host; none is `Ok`. `known` is the
    /// host's state when the caller read it since the last attach; else it is read.
    async fn detach(
        &self,
        img: &ImageSpec,
        t: Duration,
        known: Option<&Attached>,
    ) -> Result<(), DriverError> {
        let what = img.to_string();
        let fresh;
        let st = match known {
            Some(k) => k,
            None => {
                fresh = self.attached().await?;
                &fresh
            }
        };
        match self.cfg.attach {
            Attach::Krbd | Attach::Nbd => {
                let nbd = self.cfg.attach == Attach::Nbd;
                for m in &st.mapped {
                    if m.pool != img.pool || m.name != img.image {
                        continue;
                    }
                    let mut args = vec!["device", "unmap"];
                    if nbd {
                        args.extend(["-t", "nbd"]);
                    }
                    args.push(&m.device);
                    // A device the kernel still flushes is briefly busy: unmapping is
                    // idempotent, so a few tries are safe.
                    let mut tries = 0;
                    loop {
                        match self.run("unmap", &what, self.rbd_cmd(&args, t)).await {
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
            Attach::Fuse => {
                let dir = self.fuse_dir(img);
                let file = dir.join(&img.image);
                if !st.fuse_mounted(&dir) {
                    return Ok(());
                }
                for dev in loopdev::of_file(&file) {
                    let res = self
                        .run(
                            "detach",
                            &what,
                            Cmd::new("losetup", ["-d".to_owned(), dev.display().to_string()], t),
                        )
                        .await;
                    // Detached meanwhile (the kernel or a concurrent detach was first):
                    // the state this call wants.
                    if res.is_err() && !loopdev::of_file(&file).contains(&dev) {
                        continue;
                    }
                    res?;
                }
                // The kernel detaches a loop device only when its last opener (udev's
                // probe after mkfs, say) lets go; until then the file keeps rbd-fuse busy.
                let deadline = tokio::time::Instant::now() + FUSE_UMOUNT_PATIENCE;
                while !loopdev::of_file(&file).is_empty() && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                self.fuse_umount(img, t).await
            }
        }
    }

    /// Unmounts an rbd-fuse mount. A fenced rbd-fuse can spin and never answer the
    /// unmount; it is then killed, which lets the kernel drop the mount.
    async fn fuse_umount(&self, img: &ImageSpec, t: Duration) -> Result<(), DriverError> {
        let what = img.to_string();
        let dir = self.fuse_dir(img);
        let pids = fuse_pids(&dir);
        let mut res;
        let mut tries = 0;
        loop {
            res = self
                .run(
                    "detach",
                    &what,
                    // A healthy rbd-fuse unmounts at once; a fenced one never does.
                    Cmd::new(
                        "umount",
                        [dir.display().to_string()],
                        t.min(FUSE_UMOUNT_PATIENCE),
                    ),
                )
                .await;
            // Briefly busy (a closing opener of the file): unmounting again is harmless.
            match &res {
                Err(DriverError::Failed { detail, .. })
                    if detail.contains("busy") && tries < 10 =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                _ => break,
            }
        }
        if let Err(e) = res {
            warn!(image = %img.spec(), error = %e, "rbd-fuse did not unmount; killing it");
            self.kill(&fuse_pids(&dir), t).await;
            self.run(
                "detach",
                &what,
                Cmd::new("umount", ["-l".to_owned(), dir.display().to_string()], t),
            )
            .await?;
        }
        // rbd-fuse closes the image (drops its watch) after the unmount returns; until it
        // has exited, the image still looks open to `rbd rm` and to other hosts.
        let deadline = tokio::time::Instant::now() + FUSE_UMOUNT_PATIENCE;
        while pids.iter().any(|p| alive(*p)) {
            if tokio::time::Instant::now() >= deadline {
                warn!(image = %img.spec(), "rbd-fuse did not exit after its unmount; killing it");
                self.kill(&pids, t).await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }

    /// SIGKILLs `pids` (best effort: one may have exited meanwhile).
    async fn kill(&self, pids: &[u32], t: Duration) {
        for pid in pids {
            let _ = self
                .exec
                .run(&Cmd::new("kill", ["-9".to_owned(), pid.to_string()], t))
                .await;
        }
    }

    /// This host's mounts of attached images, with the attachments (krbd/nbd mappings; the
    /// fuse strategy reads loop devices from sysfs): one mountinfo read and at most one
    /// `rbd device list`.
    async fn attached(&self) -> Result<Attached, DriverError> {
        let all = read_mounts()?;
        let mut mapped = Vec::new();
        // The image behind each mount's source device, if it is an attached one of ours.
        let images: Vec<Option<ImageSpec>> = match self.cfg.attach {
            Attach::Krbd | Attach::Nbd => {
                let nbd = self.cfg.attach == Attach::Nbd;
                mapped = self.mapped(nbd, "this host", rbd::DEFAULT_TIMEOUT).await?;
                all.iter()
                    .map(|m| {
                        let x = mapped
                            .iter()
                            .find(|x| x.is_head() && x.device == m.source)?;
                        Some(ImageSpec {
                            pool: x.pool.clone(),
                            image: x.name.clone(),
                        })
                    })
                    .collect()
            }
            Attach::Fuse => {
                let root = self.cfg.state_dir.join("fuse");
                let loops = loopdev::devices();
                all.iter()
                    .map(|m| {
                        let (_, back) = loops
                            .iter()
                            .find(|(d, _)| d.as_os_str() == m.source.as_str())?;
                        let rest = back.strip_prefix(&root).ok()?;
                        let parts: Vec<&str> = rest.iter().filter_map(|c| c.to_str()).collect();
                        match parts[..] {
                            [pool, image, file] if image == file => Some(ImageSpec {
                                pool: pool.to_owned(),
                                image: image.to_owned(),
                            }),
                            _ => None,
                        }
                    })
                    .collect()
            }
        };
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

    async fn mkfs_on(&self, spec: &VolumeSpec, img: &ImageSpec) -> Result<(), DriverError> {
        let t = timeout_of(spec);
        let v = &spec.volume;
        let mkfs = spec.mkfs.as_ref().ok_or_else(|| {
            DriverError::Invalid(format!(
                "volume {v} has no mkfs command for filesystem {}",
                spec.filesystem
            ))
        })?;
        let lock = self.image_lock(img);
        let _g = lock.lock().await;
        let st = self.attached().await?;
        let (dev, _) = self.attach(img, t, &st).await?;
        let line = mkfs.render(&dev.display().to_string());
        let res = self
            .run("mkfs", &format!("volume {v}"), Cmd::shell(line, t))
            .await;
        let det = self.detach(img, t, None).await;
        res?;
        det
    }
}

fn read_mounts() -> Result<Vec<mountinfo::MountInfo>, DriverError> {
    mountinfo::current().map_err(|e| DriverError::Failed {
        op: "read mountinfo",
        what: "this host".into(),
        detail: e.to_string(),
        source: None,
    })
}

/// Whether a process is still running (a zombie is not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => false,
    }
}

/// PIDs of rbd-fuse processes serving `dir` (their last argument).
fn fuse_pids(dir: &Path) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let want = dir.display().to_string();
    rd.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .collect();
            let prog = std::str::from_utf8(args.first()?).ok()?;
            let last = std::str::from_utf8(args.last()?).ok()?;
            (prog.ends_with("rbd-fuse") && last == want).then_some(pid)
        })
        .collect()
}

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
        self.run(
            "create",
            &p.image.to_string(),
            self.rbd_cmd(&args, timeout_of(spec)),
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
                .run(
                    "destroy",
                    &p.image.to_string(),
                    self.rbd_cmd(&["rm", "--no-progress", &p.image.spec()], timeout_of(spec)),
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
        let locks = self.lockers(img, t).await?;
        if let Some(l) = locks.first() {
            return Err(DriverError::Busy {
                what: format!("volume {} ({})", spec.volume, img.spec()),
                detail: format!(
                    "it is locked by {} ({} at {}); unmount it there, or break the lock with `rbd lock rm {} '{}' {}`",
                    l.id, l.locker, l.address, img.spec(), l.id, l.locker
                ),
            });
        }
        let rm = self.rbd_cmd(&["rm", "--no-progress", &img.spec()], t);
        let mut purged = false;
        let mut busy_again = false;
        loop {
            let out = self.exec("destroy", &what, &rm).await?;
            if out.success() {
                break;
            }
            match rbd::errno(&out) {
                Errno::Busy => {
                    let w: Vec<String> = self
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
                    self.run(
                        "destroy snapshots",
                        &what,
                        self.rbd_cmd(&["snap", "purge", "--no-progress", &img.spec()], t),
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
        let cmd = self.rbd_cmd(
            &["info", "--format", "json", &p.image.spec()],
            timeout_of(spec),
        );
        match self.read("info", &p.image.to_string(), cmd).await {
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
        for pool in &self.cfg.pools {
            let names: Vec<String> = self
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
            .run(
                "resize",
                &p.image.to_string(),
                self.rbd_cmd(
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

#[async_trait]
impl MountDriver for RbdDriver {
    async fn mount(&self, spec: &VolumeSpec, at: &Path) -> Result<Mount, DriverError> {
        let p = Params::of(spec)?;
        let v = &spec.volume;
        let t = timeout_of(spec);
        let lock = self.image_lock(&p.image);
        let _g = lock.lock().await;
        let st = self.attached().await?;
        if let Some(m) = st.all.iter().find(|m| m.mount_point == at) {
            let ours = st
                .mounts
                .iter()
                .any(|(x, img)| x.mount_point == at && *img == p.image);
            if ours {
                return Ok(Mount {
                    volume: v.clone(),
                    path: m.mount_point.clone(),
                    device: Some(PathBuf::from(&m.source)),
                });
            }
            return Err(DriverError::Busy {
                what: format!("mount point {}", at.display()),
                detail: format!("{} is mounted there", m.source),
            });
        }
        std::fs::create_dir_all(at).map_err(|e| io_err("mount", &format!("volume {v}"), e))?;
        let (dev, attached) = self.attach(&p.image, t, &st).await?;
        let res = self
            .run(
                "mount",
                &format!("volume {v}"),
                Cmd::new(
                    "mount",
                    [
                        "-t".to_owned(),
                        spec.filesystem.clone(),
                        dev.display().to_string(),
                        at.display().to_string(),
                    ],
                    t,
                ),
            )
            .await;
        if let Err(e) = res {
            if attached {
                let _ = self.detach(&p.image, t, None).await;
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
        let p = Params::of(spec)?;
        let v = &spec.volume;
        let t = timeout_of(spec);
        let lock = self.image_lock(&p.image);
        let _g = lock.lock().await;
        let att = self.attached().await?;
        if att.all.iter().any(|m| m.mount_point == at) {
            self.run(
                "unmount",
                &format!("volume {v}"),
                Cmd::new("umount", [at.display().to_string()], t),
            )
            .await?;
        }
        // Detach unless the image is still mounted somewhere else on this host.
        let still = att
            .mounts
            .iter()
            .any(|(m, img)| *img == p.image && m.mount_point != at);
        if !still {
            // Unmounting changed no attachment: the state read above still holds.
            self.detach(&p.image, t, Some(&att)).await?;
        }
        if let Err(e) = std::fs::remove_dir(at) {
            if e.kind() != std::io::ErrorKind::NotFound {
                debug!(at = %at.display(), error = %e, "mount point left in place");
            }
        }
        Ok(())
    }

    async fn mounted(&self) -> Result<Vec<Mount>, DriverError> {
        Ok(self
            .attached()
            .await?
            .mounts
            .into_iter()
            .filter_map(|(m, img)| {
                Some(Mount {
                    volume: volume_of_image(&img.image)?,
                    path: m.mount_point,
                    device: Some(PathBuf::from(m.source)),
                })
            })
            .collect())
    }

    /// Takes the RBD lock `volcore:<host>`. The caller holds the store's mount lock, so
    /// any other holder is stale. When this host does not have the image attached — a
    /// takeover, or the retry of one that failed half-way — every client that has the
    /// image open is somebody else's and is blocklisted (`ceph osd blocklist add`) *before*
    /// a stale lock is broken (`rbd lock rm`, which blocklists the client that took it) and
    /// before the volume is treated as ours: a failure at any point leaves the old holder
    /// cut off or the image still locked, never the old host writing under our lock.
    /// When the image is attached here (a restart re-adopting its mount), the open client
    /// is ours and nobody is fenced.
    async fn claim(&self, spec: &VolumeSpec, host: &HostName) -> Result<Vec<Fenced>, DriverError> {
        let p = Params::of(spec)?;
        let t = timeout_of(spec);
        let img = &p.image;
        let what = img.to_string();
        let ours = lock_id(host);
        let lock = self.image_lock(img);
        let _g = lock.lock().await;
        let here = self.attached_here(&self.attached().await?, img);
        let mut cut: Vec<String> = Vec::new();
        if !here {
            for w in self.watchers(img, t).await? {
                self.blocklist(&what, &w.address, t).await?;
                cut.push(w.address);
            }
        }
        let add = self.rbd_cmd(&["lock", "add", &img.spec(), &ours], t);
        if !p.exclusive_lock() {
            let out = self.exec("lock", &what, &add).await?;
            if out.success() {
                return Ok(fenced_unlocked(spec, img, cut));
            }
            if rbd::errno(&out) != Errno::Busy {
                return Err(rbd::failure("lock", &what, &add, &out));
            }
        } else if here {
            // The image's own lock is held by whichever client writes: ours.
            return Ok(Vec::new());
        }
        let locks = self.lockers(img, t).await?;
        if locks.iter().any(|l| l.id == ours) {
            // Ours, from before a restart (its open clients, if any, were fenced above).
            return Ok(fenced_unlocked(spec, img, cut));
        }
        let mut fenced = Vec::new();
        for l in &locks {
            self.run(
                "break lock",
                &what,
                self.rbd_cmd(&["lock", "rm", &img.spec(), &l.id, &l.locker], t),
            )
            .await
            .or_else(|e| match e {
                DriverError::NotFound { .. } => Ok(String::new()),
                e => Err(e),
            })?;
            let holder = l.id.strip_prefix("volcore:").unwrap_or(&l.id).to_owned();
            let mut clients = std::mem::take(&mut cut);
            clients.push(l.address.clone());
            warn!(volume = %spec.volume, image = %img.spec(), stale_holder = %holder, clients = ?clients, "fenced the previous holder of the volume");
            fenced.push(Fenced { holder, clients });
        }
        if !p.exclusive_lock() {
            self.run("lock", &what, add).await?;
        }
        if !cut.is_empty() {
            fenced.extend(fenced_unlocked(spec, img, cut));
        }
        Ok(fenced)
    }

    /// `rbd lock ls` + `rbd lock rm` of this host's lock, without blocklisting (the client
    /// that took it is long gone, and the lock is ours to drop).
    async fn release(&self, spec: &VolumeSpec, host: &HostName) -> Result<(), DriverError> {
        let p = Params::of(spec)?;
        if p.exclusive_lock() {
            return Ok(());
        }
        let t = timeout_of(spec);
        let img = &p.image;
        let ours = lock_id(host);
        let locks = match self.lockers(img, t).await {
            Err(DriverError::NotFound { .. }) => return Ok(()),
            other => other?,
        };
        for l in locks.iter().filter(|l| l.id == ours) {
            let res = self
                .run(
                    "unlock",
                    &img.to_string(),
                    self.rbd_cmd(
                        &[
                            "--rbd_blocklist_on_break_lock=false",
                            "lock",
                            "rm",
                            &img.spec(),
                            &l.id,
                            &l.locker,
                        ],
                        t,
                    ),
                )
                .await;
            match res {
                Ok(_) | Err(DriverError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

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
            .run(
                "snapshot",
                &p.image.to_string(),
                self.rbd_cmd(&["snap", "create", "--no-progress", &s], timeout_of(spec)),
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
            .run(
                "remove snapshot",
                &p.image.to_string(),
                self.rbd_cmd(&["snap", "rm", "--no-progress", &s], timeout_of(spec)),
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
            .exec("copy", &dst.image.to_string(), &self.rbd_cmd(&args, t))
            .await?;
        if !out.success() {
            let cmd = self.rbd_cmd(&args, t);
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
                .run(
                    "flatten",
                    &dst.image.to_string(),
                    self.rbd_cmd(&["flatten", "--no-progress", &dspec], t),
                )
                .await;
            if let Err(e) = res {
                let _ = self
                    .run(
                        "destroy",
                        &dst.image.to_string(),
                        self.rbd_cmd(&["rm", "--no-progress", &dspec], t),
                    )
                    .await;
                return Err(e);
            }
        }
        info!(from = %spec.volume, snapshot = %snap, to = %to.volume, flatten = dst.flatten, "volume cloned from snapshot");
        Ok(())
    }
}

#[cfg(test)]
mod tests;
