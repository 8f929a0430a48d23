//! [`Catalog`]: a watched, in-memory view of every volume record (`volumes/`) and its
//! runtime options (`runtime/`), so a host can answer "which volumes exist, what are they"
//! without a store round trip (Docker asks on every `docker volume ls`) and can apply
//! runtime changes within moments of their upload.
//!
//! The view is a cache: it may lag the store by a watch event. Decisions that need the
//! truth (taking a lock, mounting) read the store in their own transaction; the catalog
//! only saves the reads that do not.
//!
//! It lists both prefixes, then watches them from the revision it listed at; a compacted
//! history (`Resync`), a broken watch or an unreachable store make it list again, with
//! backoff, for as long as it lives.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::engine::VolumeInfo;
use crate::keys::Keys;
use crate::kv::{Entry, KvError, KvStore, Revision, WatchEvent};
use crate::name::VolumeRef;
use crate::policy::RuntimeOptions;
use crate::volume::Volume;

/// A volume as the catalog knows it.
#[derive(Clone, Debug)]
pub struct CatalogEntry {
    /// The record.
    pub volume: Arc<Volume>,
    /// The record's create revision.
    pub created: Revision,
    /// The runtime options in force.
    pub runtime: RuntimeOptions,
}

/// What changed in the catalog.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum CatalogChange {
    /// A volume record was written or deleted.
    Volume(VolumeRef),
    /// A volume's runtime options were written or deleted.
    Runtime(VolumeRef),
    /// The catalog was (re)loaded from a full listing: anything may have changed.
    Reloaded,
}

#[derive(Default)]
struct State {
    volumes: BTreeMap<VolumeRef, Arc<Volume>>,
    /// Each record's create revision: tells one incarnation of a name from the next.
    created: BTreeMap<VolumeRef, Revision>,
    runtime: BTreeMap<VolumeRef, RuntimeOptions>,
}

impl State {
    fn entry(&self, v: &VolumeRef, vol: &Arc<Volume>) -> CatalogEntry {
        CatalogEntry {
            volume: vol.clone(),
            created: self.created.get(v).copied().unwrap_or_default(),
            runtime: self
                .runtime
                .get(v)
                .cloned()
                .unwrap_or_else(|| vol.runtime.clone()),
        }
    }
}

struct Shared {
    state: RwLock<State>,
    ready: watch::Sender<bool>,
    changes: broadcast::Sender<CatalogChange>,
}

/// The watched view (see the module docs). Dropping it stops the watch.
pub struct Catalog {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("ready", &self.ready())
            .finish_non_exhaustive()
    }
}

impl Drop for Catalog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn decode<T: serde::de::DeserializeOwned>(e: &Entry) -> Option<T> {
    match e.decode() {
        Ok(v) => Some(v),
        Err(err) => {
            warn!(error = %err, "ignoring a record that does not decode");
            None
        }
    }
}

impl Catalog {
    /// Starts loading and watching (in the background; see [`Catalog::ready`]).
    pub fn start(kv: Arc<dyn KvStore>, keys: Keys) -> Self {
        let (ready, _) = watch::channel(false);
        let (changes, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            state: RwLock::default(),
            ready,
            changes,
        });
        let task = tokio::spawn(run(kv, keys, shared.clone()));
        Self { shared, task }
    }

    /// Whether the first listing has completed.
    pub fn ready(&self) -> bool {
        *self.shared.ready.borrow()
    }

    /// Waits until the first listing has completed.
    pub async fn wait_ready(&self) {
        let mut rx = self.shared.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Changes from now on. A receiver that lags gets `Lagged`: treat it as `Reloaded`.
    pub fn subscribe(&self) -> broadcast::Receiver<CatalogChange> {
        self.shared.changes.subscribe()
    }

    /// Waits (up to `limit`) until the catalog knows `v` as `present` or not: a caller that
    /// just created or removed a volume reads its own write from the catalog after this.
    pub async fn await_volume(&self, v: &VolumeRef, present: bool, limit: std::time::Duration) {
        // Subscribed before looking, so no change slips between the look and the wait.
        let mut changes = self.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        while self.get(v).is_some() != present {
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return,
            }
        }
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.shared.state.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// A volume and its runtime options in force, if the catalog knows it.
    pub fn get(&self, v: &VolumeRef) -> Option<VolumeInfo> {
        self.read(|st| {
            let vol = st.volumes.get(v)?;
            Some(VolumeInfo {
                volume: (**vol).clone(),
                runtime_options: st
                    .runtime
                    .get(v)
                    .cloned()
                    .unwrap_or_else(|| vol.runtime.clone()),
            })
        })
    }

    /// A volume's runtime options in force, if the catalog knows the volume.
    pub fn runtime(&self, v: &VolumeRef) -> Option<RuntimeOptions> {
        self.read(|st| {
            let vol = st.volumes.get(v)?;
            Some(
                st.runtime
                    .get(v)
                    .cloned()
                    .unwrap_or_else(|| vol.runtime.clone()),
            )
        })
    }

    /// Every volume, sorted by policy then name.
    pub fn list(&self) -> Vec<Arc<Volume>> {
        self.read(|st| st.volumes.values().cloned().collect())
    }

    /// One volume with its record's create revision and runtime options in force.
    pub fn entry(&self, v: &VolumeRef) -> Option<CatalogEntry> {
        self.read(|st| Some(st.entry(v, st.volumes.get(v)?)))
    }

    /// Every volume with its record's create revision and the runtime options in force.
    pub fn entries(&self) -> Vec<CatalogEntry> {
        self.read(|st| st.volumes.iter().map(|(v, vol)| st.entry(v, vol)).collect())
    }
}

async fn run(kv: Arc<dyn KvStore>, keys: Keys, shared: Arc<Shared>) {
    let mut pause = Duration::from_millis(100);
    loop {
        match sync(&kv, &keys, &shared).await {
            Ok(()) => pause = Duration::from_millis(100),
            Err(e) => {
                warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "volume catalog: cannot read the store; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// One full listing, then watch events until the watch breaks (`Ok`: list again now).
async fn sync(kv: &Arc<dyn KvStore>, keys: &Keys, shared: &Shared) -> Result<(), KvError> {
    let vprefix = keys.volumes(None);
    let rprefix = keys.runtimes();
    let rev = kv.revision().await?;
    let (vols, rts) = futures::try_join!(kv.list(&vprefix), kv.list(&rprefix))?;
    let vstream = kv.watch(&vprefix, Some(rev)).await?;
    let rstream = kv.watch(&rprefix, Some(rev)).await?;
    {
        let mut st = shared.state.write().unwrap_or_else(|p| p.into_inner());
        st.volumes = vols
            .iter()
            .filter_map(|e| {
                let v: Volume = decode(e)?;
                Some((v.reference(), Arc::new(v)))
            })
            .collect();
        st.created = vols
            .iter()
            .filter_map(|e| {
                Some((
                    VolumeRef::parse(e.key.strip_prefix(&vprefix)?).ok()?,
                    e.create_rev,
                ))
            })
            .collect();
        st.runtime = rts
            .iter()
            .filter_map(|e| {
                let v = VolumeRef::parse(e.key.strip_prefix(&rprefix)?).ok()?;
                Some((v, decode(e)?))
            })
            .collect();
        debug!(volumes = st.volumes.len(), "volume catalog loaded");
    }
    let _ = shared.changes.send(CatalogChange::Reloaded);
    shared.ready.send_replace(true);
    let mut events = futures::stream::select(vstream, rstream);
    while let Some(ev) = events.next().await {
        let change = match ev? {
            WatchEvent::Resync { .. } => return Ok(()),
            WatchEvent::Put(e) => apply(shared, &vprefix, &rprefix, &e.key, Some(&e)),
            WatchEvent::Delete { key, .. } => apply(shared, &vprefix, &rprefix, &key, None),
        };
        if let Some(c) = change {
            let _ = shared.changes.send(c);
        }
    }
    Ok(())
}

fn apply(
    shared: &Shared,
    vprefix: &str,
    rprefix: &str,
    key: &str,
    entry: Option<&Entry>,
) -> Option<CatalogChange> {
    let mut st = shared.state.write().unwrap_or_else(|p| p.into_inner());
    if let Some(rest) = key.strip_prefix(vprefix) {
        let v = VolumeRef::parse(rest).ok()?;
        match entry.and_then(|e| Some((e.create_rev, decode::<Volume>(e)?))) {
            Some((rev, vol)) => {
                st.created.insert(v.clone(), rev);
                st.volumes.insert(v.clone(), Arc::new(vol));
            }
            None => {
                st.created.remove(&v);
                st.volumes.remove(&v);
            }
        };
        return Some(CatalogChange::Volume(v));
    }
    let v = VolumeRef::parse(key.strip_prefix(rprefix)?).ok()?;
    match entry.and_then(decode::<RuntimeOptions>) {
        Some(r) => st.runtime.insert(v.clone(), r),
        None => st.runtime.remove(&v),
    };
    Some(CatalogChange::Runtime(v))
}
