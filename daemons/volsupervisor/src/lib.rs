//! volsupervisor: the daemon around [`volcore::supervisor::Supervisor`]. Any number run;
//! one leads (`leader/supervisor`), the others stand by. It holds one lease, watches the
//! global configuration and the volume catalog, and takes scheduled and signalled
//! snapshots through the engine with the drivers it is given.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tracing::info;
use volcore::catalog::Catalog;
use volcore::supervisor::{Supervisor, SupervisorConfig};
use volcore::{Drivers, HostName, Keys, KvStore, LeaseKeeper, Volumes};

/// volsupervisor's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The store, as given (for logs).
    pub kv_spec: String,
    /// Key prefix.
    pub prefix: String,
    /// This host's label (in its record and the locks it takes).
    pub host: HostName,
    /// How many snapshots run at once.
    pub concurrency: usize,
    /// How often stale and orphaned ephemeral volumes are looked for.
    pub reclaim_every: Duration,
}

/// Runs until `shutdown` resolves; then resigns the lead (if it has it) and ends its
/// lease. While the store is unreachable it waits (and says so), as every daemon does.
pub async fn run(
    cfg: Config,
    kv: Arc<dyn KvStore>,
    drivers: Drivers,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let keys = Keys::new(&cfg.prefix).context("--prefix")?;
    let waiting = Mutex::new(String::new());
    let mut shutdown = Box::pin(shutdown);
    let attempt = || async {
        let global = volcore_daemon::watch_global(kv.clone(), keys.clone()).await?;
        let ttl = global.borrow().ttl;
        let keeper = LeaseKeeper::start(kv.clone(), ttl)
            .await
            .context("granting volsupervisor's lease")?;
        anyhow::Ok((global, keeper))
    };
    let who = format!("volsupervisor (store {})", cfg.kv_spec);
    let (global, keeper) = tokio::select! {
        r = volcore_daemon::retry_until_ready(&who, &waiting, attempt, |_| false) => r?,
        () = &mut shutdown => return Ok(()),
    };
    drivers.recover().await;
    let engine = Volumes::new(
        kv.clone(),
        keys.clone(),
        drivers,
        cfg.host.clone(),
        keeper.subscribe(),
        global,
    );
    let catalog = Arc::new(Catalog::start(kv.clone(), keys.clone()));
    let mut scfg = SupervisorConfig::new(cfg.host.clone(), volcore_daemon::version());
    scfg.concurrency = cfg.concurrency.max(1);
    scfg.reclaim_every = cfg.reclaim_every;
    let sup = Supervisor::start(engine, catalog, keeper.subscribe(), scfg);
    // Tests and scripts read this line: keep it as it is.
    println!("volsupervisor started as {}", sup.instance());
    info!(host = %cfg.host, instance = sup.instance(), store = %cfg.kv_spec, "volsupervisor started");
    shutdown.await;
    info!(stats = ?sup.stats(), "volsupervisor stopping");
    sup.shutdown(Duration::from_secs(5)).await;
    keeper.shutdown().await;
    info!("volsupervisor stopped");
    Ok(())
}
