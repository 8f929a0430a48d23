//! volplugin: Docker's VolumeDriver protocol on `/run/docker/plugins/<name>.sock`, with
//! lease-backed mount locks, refcounts per Docker mount ID persisted under
//! `mounts/<host>/…`, re-adoption after a restart, live rate limits, and a fencing action
//! when the lease is lost and another host took a volume.
//!
//! The plugin talks to the store directly (never through a master): its lease is its own,
//! so a dead plugin's locks die with it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::{error, info, warn};
use volcore::cgroup::{DevNum, Throttler};
use volcore::driver::{DriverError, MountDriver};
use volcore::{
    mount_path, Drivers, EngineError, Entry, GlobalConfig, HeldLock, HostName, Keys, KvError,
    KvStore, LeaseKeeper, LeaseState, LockError, LockKind, LockReason, LockRequest, Locker, Mount,
    PolicyName, Precondition, RateLimit, TxnOp, Volume, VolumeRef, VolumeSpec, Volumes, WatchEvent,
};

/// What to do with a mounted volume when this host's lease was lost and another host has
/// taken the volume's lock meanwhile.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum LeaseLossAction {
    /// Unmount it (the other host now owns the data).
    Unmount,
    /// Keep it mounted and raise an alarm in the log.
    Keep,
}

/// volplugin's configuration.
#[derive(Clone, Debug)]
pub struct PluginConfig {
    /// Directory of the socket (`/run/docker/plugins`).
    pub socket_dir: PathBuf,
    /// Plugin name: the socket is `<socket_dir>/<name>.sock` and Docker's `-d <name>`.
    pub plugin_name: String,
    /// This host's label in locks and mount records.
    pub host: HostName,
    /// Key prefix.
    pub prefix: String,
    /// Policy for names given without `policy/`.
    pub default_policy: Option<PolicyName>,
    /// Fencing action after a lost lease.
    pub on_lease_loss: LeaseLossAction,
    /// cgroup v2 directory for `io.max` (v1 blkio is found by itself).
    pub cgroup_v2: Option<PathBuf>,
    /// This host's mount root, instead of the global configuration's MountPath (several
    /// plugin instances on one machine, or a host with a different layout).
    pub mount_path: Option<PathBuf>,
}

/// What volplugin runs on.
pub struct PluginDeps {
    /// The store.
    pub kv: Arc<dyn KvStore>,
    /// Storage drivers (with mount support).
    pub drivers: Drivers,
}

/// The mount record at `mounts/<host>/<policy>/<volume>`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountRecord {
    /// Docker mount IDs using the volume on this host.
    pub ids: BTreeSet<String>,
    /// Where it is mounted.
    pub path: PathBuf,
    /// The device it is mounted from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<PathBuf>,
}

/// Checks a plugin name: non-empty, at most 64 bytes, letters, digits, `.`, `_`, `-`.
pub fn check_plugin_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 64 || name.starts_with('.') {
        bail!("plugin name {name:?} must be 1 to 64 characters and not start with '.'");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
    {
        bail!("plugin name {name:?} contains {c:?}; use letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

struct Inner {
    cfg: PluginConfig,
    kv: Arc<dyn KvStore>,
    keys: Keys,
    engine: Volumes,
    drivers: Drivers,
    locker: Locker,
    lease: watch::Receiver<LeaseState>,
    global: watch::Receiver<GlobalConfig>,
    volume_locks: Mutex<HashMap<VolumeRef, Arc<tokio::sync::Mutex<()>>>>,
    held: Mutex<HashMap<VolumeRef, HeldLock>>,
    throttler: Option<Throttler>,
}

/// A running plugin's handle (for in-process tests).
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<Inner>,
}

type Reply = Json<Value>;

fn err(msg: impl std::fmt::Display) -> Reply {
    Json(json!({ "Err": msg.to_string() }))
}

fn decode_record(e: &Entry) -> Result<MountRecord, KvError> {
    serde_json::from_slice(&e.value).map_err(|err| KvError::Corrupt {
        key: e.key.clone(),
        reason: err.to_string(),
    })
}

fn lock_map<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Plugin {
    fn parse_name(&self, name: &str) -> Result<VolumeRef, String> {
        if name.contains('/') {
            return VolumeRef::parse(name).map_err(|e| e.to_string());
        }
        match &self.inner.cfg.default_policy {
            Some(p) => VolumeRef::parse(&format!("{p}/{name}")).map_err(|e| e.to_string()),
            None => Err(format!(
                "volume name {name:?} names no policy: write policy/volume (e.g. policy1/{name}), or start volplugin with --default-policy"
            )),
        }
    }

    fn volume_lock(&self, v: &VolumeRef) -> Arc<tokio::sync::Mutex<()>> {
        lock_map(&self.inner.volume_locks)
            .entry(v.clone())
            .or_default()
            .clone()
    }

    fn spec(&self, vol: &Volume) -> VolumeSpec {
        VolumeSpec::of(vol, self.inner.global.borrow().timeout)
    }

    fn mount_point(&self, v: &VolumeRef) -> PathBuf {
        match &self.inner.cfg.mount_path {
            Some(root) => mount_path(root, v),
            None => mount_path(&self.inner.global.borrow().mount_path, v),
        }
    }

    async fn record(&self, v: &VolumeRef) -> Result<Option<(MountRecord, u64)>, KvError> {
        match self
            .inner
            .kv
            .get(&self.inner.keys.mount(&self.inner.cfg.host, v))
            .await?
        {
            None => Ok(None),
            Some(e) => Ok(Some((decode_record(&e)?, e.mod_rev))),
        }
    }

    /// This host's mount record entries, by volume (one store round trip).
    async fn mount_entries(&self) -> Result<Vec<(VolumeRef, Entry)>, KvError> {
        let prefix = self.inner.keys.mounts(&self.inner.cfg.host);
        Ok(self
            .inner
            .kv
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|e| {
                let v = VolumeRef::parse(e.key.strip_prefix(&prefix)?).ok()?;
                Some((v, e))
            })
            .collect())
    }

    /// This host's mount records, by volume. A corrupt record is skipped (and said), so
    /// one bad entry cannot stop `List` or the re-establishing of the other locks.
    async fn mounts_here(&self) -> Result<BTreeMap<VolumeRef, MountRecord>, KvError> {
        Ok(self
            .mount_entries()
            .await?
            .into_iter()
            .filter_map(|(v, e)| match decode_record(&e) {
                Ok(rec) => Some((v, rec)),
                Err(err) => {
                    warn!(volume = %v, error = %err, "skipping a corrupt mount record");
                    None
                }
            })
            .collect())
    }

    /// Drops the locks a failed mount took: the backend's, then the store's.
    async fn drop_locks(&self, mounts: &dyn MountDriver, spec: &VolumeSpec, held: &HeldLock) {
        if let Err(e) = mounts.release(spec, &self.inner.cfg.host).await {
            warn!(volume = %spec.volume, error = %e, "releasing the storage lock");
        }
        let _ = self.inner.locker.release(std::slice::from_ref(held)).await;
    }

    /// Takes the backend's own lock (Ceph: an RBD lock) under the store's mount lock; one
    /// another host still holds is stale, and breaking it fences that host.
    async fn claim(&self, mounts: &dyn MountDriver, spec: &VolumeSpec) -> Result<(), DriverError> {
        for f in mounts.claim(spec, &self.inner.cfg.host).await? {
            warn!(volume = %spec.volume, fenced_host = %f.holder, clients = ?f.clients, "took over a volume from a host whose lock had expired; fenced its storage clients");
        }
        Ok(())
    }

    async fn save_record(
        &self,
        v: &VolumeRef,
        rec: &MountRecord,
        fence: Option<&HeldLock>,
    ) -> Result<(), KvError> {
        let mut ops: Vec<TxnOp> = fence.iter().map(|h| h.fence()).collect();
        ops.push(TxnOp::Put {
            key: self.inner.keys.mount(&self.inner.cfg.host, v),
            value: serde_json::to_vec(rec).unwrap_or_default(),
            pre: Precondition::Any,
            lease: None,
        });
        self.inner.kv.txn(ops).await.map(|_| ())
    }

    fn apply_limits(&self, v: &VolumeRef, device: Option<&Path>, limits: &RateLimit) {
        let (Some(t), Some(dev)) = (&self.inner.throttler, device) else {
            if *limits != RateLimit::default() {
                warn!(volume = %v, "rate limits set but this host cannot apply them (no cgroup throttling or no block device)");
            }
            return;
        };
        match DevNum::of(dev).and_then(|d| t.apply(d, limits)) {
            Ok(()) => info!(volume = %v, device = %dev.display(), ?limits, "rate limits applied"),
            Err(e) => warn!(volume = %v, error = %e, "could not apply rate limits"),
        }
    }

    async fn mount(&self, name: &str, id: &str) -> Result<PathBuf, String> {
        let v = self.parse_name(name)?;
        if id.is_empty() {
            return Err("Mount needs the mount ID Docker sends".into());
        }
        let guard = self.volume_lock(&v);
        let _g = guard.lock().await;
        let existing = self.record(&v).await.map_err(|e| e.to_string())?;
        if let Some((mut rec, _)) = existing {
            if !rec.ids.contains(id) {
                rec.ids.insert(id.to_owned());
                let fence = lock_map(&self.inner.held).get(&v).cloned();
                self.save_record(&v, &rec, fence.as_ref())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            return Ok(rec.path);
        }
        let info = self.inner.engine.get(&v).await.map_err(|e| e.to_string())?;
        let vol = info.volume;
        let driver = self
            .inner
            .drivers
            .get(vol.backends.mount)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "this volplugin has no driver for backend {}",
                    vol.backends.mount
                )
            })?;
        let Some(mounts) = driver.mounts() else {
            return Err(format!(
                "backend {} cannot mount volumes",
                vol.backends.mount
            ));
        };
        let mut held = None;
        if !vol.unlocked {
            let lease = match &*self.inner.lease.borrow() {
                LeaseState::Live { lease } => lease.clone(),
                _ => {
                    return Err(format!(
                        "volplugin on {} has lost contact with the store; it refuses new mounts of locked volumes until its lease is back",
                        self.inner.cfg.host
                    ))
                }
            };
            let h = self
                .inner
                .locker
                .try_acquire(
                    &[LockRequest::new(
                        LockKind::Mount,
                        v.clone(),
                        LockReason::Mount,
                    )],
                    &lease,
                )
                .await
                .map_err(|e| e.to_string())?;
            held = h.into_iter().next();
        }
        let at = self.mount_point(&v);
        let spec = self.spec(&vol);
        if let Some(h) = &held {
            if let Err(e) = self.claim(mounts, &spec).await {
                self.drop_locks(mounts, &spec, h).await;
                return Err(format!("locking the storage of {v}: {e}"));
            }
        }
        let m: Mount = match mounts.mount(&spec, &at).await {
            Ok(m) => m,
            Err(e) => {
                if let Some(h) = &held {
                    self.drop_locks(mounts, &spec, h).await;
                }
                return Err(format!("mounting {v}: {e}"));
            }
        };
        self.apply_limits(&v, m.device.as_deref(), &info.runtime_options.rate_limit);
        let rec = MountRecord {
            ids: BTreeSet::from([id.to_owned()]),
            path: m.path.clone(),
            device: m.device.clone(),
        };
        if let Err(e) = self.save_record(&v, &rec, held.as_ref()).await {
            let _ = mounts.unmount(&spec, &m.path).await;
            if let Some(h) = &held {
                self.drop_locks(mounts, &spec, h).await;
            }
            return Err(format!("recording the mount of {v}: {e}"));
        }
        if let Some(h) = held {
            lock_map(&self.inner.held).insert(v.clone(), h);
        }
        info!(volume = %v, id, path = %m.path.display(), "mounted");
        Ok(m.path)
    }

    async fn unmount(&self, name: &str, id: &str) -> Result<(), String> {
        let v = self.parse_name(name)?;
        let guard = self.volume_lock(&v);
        let _g = guard.lock().await;
        let Some((mut rec, _)) = self.record(&v).await.map_err(|e| e.to_string())? else {
            return Ok(()); // not mounted here: a repeated Unmount is harmless
        };
        if !rec.ids.remove(id) {
            return Ok(());
        }
        if !rec.ids.is_empty() {
            let fence = lock_map(&self.inner.held).get(&v).cloned();
            return self
                .save_record(&v, &rec, fence.as_ref())
                .await
                .map_err(|e| e.to_string());
        }
        self.teardown(&v, &rec).await
    }

    /// Unmounts, clears limits, deletes the record and releases the lock.
    async fn teardown(&self, v: &VolumeRef, rec: &MountRecord) -> Result<(), String> {
        let info = match self.inner.engine.get(v).await {
            Ok(i) => Some(i),
            Err(EngineError::VolumeNotFound { .. }) => None,
            Err(e) => return Err(e.to_string()),
        };
        // Limits go first: unmounting flushes dirty data, which a tight write limit would
        // otherwise stretch past Docker's request timeout.
        if let (Some(t), Some(dev)) = (&self.inner.throttler, &rec.device) {
            if let Ok(d) = DevNum::of(dev) {
                let _ = t.clear(d);
            }
        }
        if let Some(info) = &info {
            let vol = &info.volume;
            if let Some(m) = self
                .inner
                .drivers
                .get(vol.backends.mount)
                .and_then(|d| d.mounts())
            {
                let spec = self.spec(vol);
                if let Err(e) = m.unmount(&spec, &rec.path).await {
                    // Still mounted: its limits stay in force.
                    self.apply_limits(v, rec.device.as_deref(), &info.runtime_options.rate_limit);
                    return Err(format!("unmounting {v}: {e}"));
                }
                if !vol.unlocked {
                    if let Err(e) = m.release(&spec, &self.inner.cfg.host).await {
                        warn!(volume = %v, error = %e, "releasing the storage lock");
                    }
                }
            }
        }
        self.inner
            .kv
            .delete(
                &self.inner.keys.mount(&self.inner.cfg.host, v),
                Precondition::Any,
            )
            .await
            .map_err(|e| e.to_string())?;
        let held = lock_map(&self.inner.held).remove(v);
        if let Some(h) = held {
            if let Err(e) = self.inner.locker.release(&[h]).await {
                warn!(volume = %v, error = %e, "releasing the mount lock");
            }
        }
        info!(volume = %v, "unmounted");
        Ok(())
    }

    /// Re-establishes the locks of mounted volumes with the current lease (after a restart
    /// or a lost lease); applies the fencing action where another host took one.
    async fn reestablish(&self) {
        let Some(lease) = self.inner.lease.borrow().usable().cloned() else {
            return;
        };
        let records = match self.mounts_here().await {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "cannot list this host's mounts");
                return;
            }
        };
        for (v, rec) in records {
            let vol = match self.inner.engine.get(&v).await {
                Ok(i) => i.volume,
                Err(err) => {
                    warn!(volume = %v, error = %err, "mounted volume has no record; leaving it alone");
                    continue;
                }
            };
            if vol.unlocked {
                continue;
            }
            let req = [LockRequest::new(
                LockKind::Mount,
                v.clone(),
                LockReason::Mount,
            )];
            match self.inner.locker.try_acquire(&req, &lease).await {
                Ok(h) => {
                    if let Some(h) = h.into_iter().next() {
                        lock_map(&self.inner.held).insert(v.clone(), h);
                    }
                    info!(volume = %v, "mount lock re-established");
                    if let Some(m) = self
                        .inner
                        .drivers
                        .get(vol.backends.mount)
                        .and_then(|d| d.mounts())
                    {
                        if let Err(e) = self.claim(m, &self.spec(&vol)).await {
                            warn!(volume = %v, error = %e, "could not re-take the storage lock");
                        }
                    }
                }
                Err(LockError::Held { holder }) => {
                    error!(volume = %v, holder = %holder.host, "another host took this volume while our lease was lost");
                    lock_map(&self.inner.held).remove(&v);
                    if self.inner.cfg.on_lease_loss == LeaseLossAction::Unmount {
                        let guard = self.volume_lock(&v);
                        let _g = guard.lock().await;
                        match self.teardown(&v, &rec).await {
                            Ok(()) => warn!(volume = %v, "fenced: unmounted"),
                            Err(e) => error!(volume = %v, error = %e, "fencing unmount failed"),
                        }
                    } else {
                        error!(volume = %v, "ALARM: kept mounted although host {} holds it (--on-lease-loss keep)", holder.host);
                    }
                }
                Err(e) => warn!(volume = %v, error = %e, "could not re-establish the mount lock"),
            }
        }
    }

    /// Drops mount records whose mounts are gone (a restart after a crash); keeps the rest.
    async fn readopt(&self) -> Result<()> {
        let mut mounted: BTreeMap<VolumeRef, Mount> = BTreeMap::new();
        for b in self.inner.drivers.backends() {
            if let Some(m) = self.inner.drivers.get(b).and_then(|d| d.mounts()) {
                for mt in m.mounted().await.unwrap_or_default() {
                    mounted.insert(mt.volume.clone(), mt);
                }
            }
        }
        for (v, e) in self.mount_entries().await? {
            if !mounted.contains_key(&v) {
                warn!(volume = %v, "mount record without a mount (crash?); dropping it");
                let _ = self
                    .inner
                    .kv
                    .delete(&e.key, Precondition::Revision(e.mod_rev))
                    .await;
            }
        }
        self.reestablish().await;
        Ok(())
    }

    async fn handle(&self, endpoint: &str, body: &Bytes) -> Reply {
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "PascalCase", default)]
        struct Req {
            name: String,
            #[serde(rename = "ID")]
            id: String,
            opts: Option<BTreeMap<String, String>>,
        }
        let req: Req = if body.is_empty() {
            Req::default()
        } else {
            match serde_json::from_slice(body) {
                Ok(r) => r,
                Err(e) => return err(format!("request body is not valid JSON: {e}")),
            }
        };
        match endpoint {
            "Plugin.Activate" => Json(json!({"Implements": ["VolumeDriver"]})),
            "VolumeDriver.Capabilities" => Json(json!({"Capabilities": {"Scope": "global"}})),
            "VolumeDriver.Create" => {
                let v = match self.parse_name(&req.name) {
                    Ok(v) => v,
                    Err(e) => return err(e),
                };
                match self
                    .inner
                    .engine
                    .create(&v, &req.opts.unwrap_or_default())
                    .await
                {
                    Ok(_) | Err(EngineError::VolumeExists { .. }) => Json(json!({"Err": ""})),
                    Err(e) => err(e),
                }
            }
            "VolumeDriver.Remove" => {
                let v = match self.parse_name(&req.name) {
                    Ok(v) => v,
                    Err(e) => return err(e),
                };
                match self.inner.engine.get(&v).await {
                    Ok(i) if i.volume.destroy_on_remove => {
                        match self.inner.engine.remove(&v, false, None).await {
                            Ok(()) => Json(json!({"Err": ""})),
                            Err(e) => err(e),
                        }
                    }
                    Ok(_) => {
                        info!(volume = %v, "docker volume rm: storage kept (the policy does not set destroy-on-remove)");
                        Json(json!({"Err": ""}))
                    }
                    Err(EngineError::VolumeNotFound { .. }) => Json(json!({"Err": ""})),
                    Err(e) => err(e),
                }
            }
            "VolumeDriver.Mount" => match self.mount(&req.name, &req.id).await {
                Ok(p) => Json(json!({"Mountpoint": p, "Err": ""})),
                Err(e) => err(e),
            },
            "VolumeDriver.Unmount" => match self.unmount(&req.name, &req.id).await {
                Ok(()) => Json(json!({"Err": ""})),
                Err(e) => err(e),
            },
            "VolumeDriver.Path" => {
                let v = match self.parse_name(&req.name) {
                    Ok(v) => v,
                    Err(e) => return err(e),
                };
                match self.record(&v).await {
                    Ok(Some((r, _))) => Json(json!({"Mountpoint": r.path, "Err": ""})),
                    Ok(None) => Json(json!({"Mountpoint": "", "Err": ""})),
                    Err(e) => err(e),
                }
            }
            "VolumeDriver.Get" => self.get(&req.name).await,
            "VolumeDriver.List" => {
                match self.inner.engine.list(None).await {
                    Ok(vols) => {
                        // One listing of this host's mounts, not one read per volume:
                        // Docker calls List for every `docker volume ls`.
                        let mounted = match self.mounts_here().await {
                            Ok(m) => m,
                            Err(e) => return err(e),
                        };
                        let out: Vec<Value> = vols
                            .iter()
                            .map(|vol| {
                                let v = vol.reference();
                                let mp =
                                    mounted.get(&v).map(|r| r.path.clone()).unwrap_or_default();
                                json!({"Name": v.to_string(), "Mountpoint": mp})
                            })
                            .collect();
                        Json(json!({"Volumes": out, "Err": ""}))
                    }
                    Err(e) => err(e),
                }
            }
            other => err(format!("unknown endpoint /{other}")),
        }
    }

    async fn get(&self, name: &str) -> Reply {
        let v = match self.parse_name(name) {
            Ok(v) => v,
            Err(e) => return err(e),
        };
        let info = match self.inner.engine.get(&v).await {
            Ok(i) => i,
            Err(e) => return err(e),
        };
        let rec = self.record(&v).await.ok().flatten().map(|(r, _)| r);
        let holder = self
            .inner
            .locker
            .get(LockKind::Mount, &v)
            .await
            .ok()
            .flatten();
        let status = json!({
            "policy": v.policy.as_str(),
            "size": info.volume.create.size.to_string(),
            "filesystem": info.volume.create.filesystem,
            "backend": info.volume.backends.mount.as_str(),
            "unlocked": info.volume.unlocked,
            "lock": holder.map(|h| json!({"host": h.holder.host, "reason": h.holder.reason, "since": humantime::format_rfc3339_seconds(h.holder.since).to_string()})),
            "mounted": rec.as_ref().map(|r| json!({"host": self.inner.cfg.host.as_str(), "path": r.path, "users": r.ids.len()})),
            "runtime": info.runtime_options,
        });
        Json(json!({
            "Volume": {
                "Name": v.to_string(),
                "Mountpoint": rec.map(|r| r.path).unwrap_or_default(),
                "CreatedAt": humantime::format_rfc3339_seconds(info.volume.created_at).to_string(),
                "Status": status,
            },
            "Err": "",
        }))
    }
}

async fn endpoint(
    State(p): State<Plugin>,
    axum::extract::Path(ep): axum::extract::Path<String>,
    body: Bytes,
) -> Reply {
    p.handle(&ep, &body).await
}

/// The plugin's socket path.
pub fn socket_path(cfg: &PluginConfig) -> PathBuf {
    cfg.socket_dir.join(format!("{}.sock", cfg.plugin_name))
}

/// Runs volplugin until `shutdown` resolves.
pub async fn run(
    cfg: PluginConfig,
    deps: PluginDeps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    check_plugin_name(&cfg.plugin_name)?;
    let keys = Keys::new(&cfg.prefix).context("--prefix")?;
    let kv = deps.kv;
    let global = crate::watch_global(kv.clone(), keys.clone()).await?;
    let ttl = global.borrow().ttl;
    let keeper = LeaseKeeper::start(kv.clone(), ttl)
        .await
        .context("granting volplugin's lease")?;
    let engine = Volumes::new(
        kv.clone(),
        keys.clone(),
        deps.drivers.clone(),
        cfg.host.clone(),
        keeper.subscribe(),
        global.clone(),
    );
    let locker = Locker::new(kv.clone(), keys.clone(), cfg.host.clone())
        .with_owner(format!("volplugin:{}", cfg.plugin_name));
    let throttler = match Throttler::detect(cfg.cgroup_v2.as_deref()) {
        Ok(t) => Some(t),
        Err(e) => {
            warn!(error = %e, "rate limits disabled");
            None
        }
    };
    let plugin = Plugin {
        inner: Arc::new(Inner {
            cfg: cfg.clone(),
            kv: kv.clone(),
            keys: keys.clone(),
            engine,
            drivers: deps.drivers,
            locker,
            lease: keeper.subscribe(),
            global,
            volume_locks: Mutex::default(),
            held: Mutex::default(),
            throttler,
        }),
    };
    plugin.readopt().await?;

    // Lease changes: a new lease after a loss re-establishes the locks.
    let p2 = plugin.clone();
    let mut states = keeper.subscribe();
    let lease_task = tokio::spawn(async move {
        let mut last = states.borrow().usable().cloned();
        while states.changed().await.is_ok() {
            let s = states.borrow_and_update().clone();
            match &s {
                LeaseState::Lost { lease } => {
                    error!(lease = %lease, "lease lost: refusing new mounts of locked volumes")
                }
                LeaseState::Expiring { lease, .. } => {
                    warn!(lease = %lease, "lease renewals failing")
                }
                LeaseState::Live { lease } if last.as_ref() != Some(lease) => {
                    info!(lease = %lease, "new lease: re-establishing mount locks");
                    p2.reestablish().await;
                }
                LeaseState::Live { .. } => {}
            }
            last = s.usable().cloned();
        }
    });

    // Runtime changes: re-apply limits of volumes mounted here within moments.
    let p3 = plugin.clone();
    let mut runtime = kv
        .watch(&keys.runtimes(), Some(kv.revision().await?))
        .await?;
    let runtime_task = tokio::spawn(async move {
        while let Some(ev) = runtime.next().await {
            let Ok(WatchEvent::Put(e)) = ev else { continue };
            let Some(v) = e
                .key
                .strip_prefix(&p3.inner.keys.runtimes())
                .and_then(|r| VolumeRef::parse(r).ok())
            else {
                continue;
            };
            let Ok(Some((rec, _))) = p3.record(&v).await else {
                continue;
            };
            match serde_json::from_slice::<volcore::RuntimeOptions>(&e.value) {
                Ok(r) => p3.apply_limits(&v, rec.device.as_deref(), &r.rate_limit),
                Err(err) => warn!(volume = %v, error = %err, "bad runtime record"),
            }
        }
    });

    std::fs::create_dir_all(&cfg.socket_dir)
        .with_context(|| format!("creating {}", cfg.socket_dir.display()))?;
    let sock = socket_path(&cfg);
    if sock.exists() {
        warn!(socket = %sock.display(), "replacing a stale socket");
        std::fs::remove_file(&sock)
            .with_context(|| format!("removing stale {}", sock.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(&sock)
        .with_context(|| format!("binding {}", sock.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o660))?;
    }
    println!("volplugin listening on {}", sock.display());
    info!(socket = %sock.display(), host = %cfg.host, "volplugin started");
    let app = Router::new()
        .route("/{endpoint}", post(endpoint))
        .with_state(plugin.clone());
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = std::fs::remove_file(&sock);
    lease_task.abort();
    runtime_task.abort();
    // Keep the locks of volumes still mounted: the lease runs out on its own unless a
    // restarted plugin re-adopts them first.
    keeper.abandon().await;
    info!("volplugin stopped; locks of mounted volumes expire with the lease unless re-adopted");
    served.context("serving the plugin socket")?;
    Ok(())
}
