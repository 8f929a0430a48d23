//! volmaster — volcore's REST API daemon.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Parser;
use volcore::HostName;
use volcore_daemons::master::{self, MasterConfig, MasterDeps};

#[derive(Parser)]
#[command(
    name = "volmaster",
    version,
    about = "volcore's REST API (policies, volumes, snapshots, locks, global configuration)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "VOLMASTER_LISTEN", default_value = "127.0.0.1:9005")]
    listen: SocketAddr,
    /// The store: etcd://host:port[,host:port…] | embedded:PATH | memory:
    #[arg(long, env = "VOLCORE_KV", default_value = "etcd://127.0.0.1:2379")]
    kv: String,
    /// Key prefix in the store.
    #[arg(long, env = "VOLCORE_PREFIX", default_value = "/volplugin")]
    prefix: String,
    /// Host label recorded in the locks this master takes (default: the host name).
    #[arg(long, env = "VOLCORE_HOST_LABEL")]
    host_label: Option<String>,
    /// Serve the `null` backend (no storage work; for tests and benchmarks).
    #[arg(long, env = "VOLCORE_ALLOW_NULL_BACKEND")]
    allow_null_backend: bool,
    /// State directory of the local (loop-file) driver.
    #[arg(
        long,
        env = "VOLCORE_LOCAL_STATE",
        default_value = "/var/lib/volcore/local"
    )]
    local_state: std::path::PathBuf,
    #[command(flatten)]
    ceph: volcore_daemons::CephArgs,
}

#[tokio::main]
async fn main() -> Result<()> {
    volcore_daemons::init_tracing();
    let args = Args::parse();
    let host = match args.host_label {
        Some(h) => HostName::new(h).context("--host-label")?,
        None => volcore_daemons::default_host(),
    };
    let kv = volcore_kv::open(&args.kv)
        .await
        .with_context(|| format!("opening store {}", args.kv))?;
    let cfg = MasterConfig {
        listen: args.listen,
        kv_spec: args.kv,
        prefix: args.prefix,
        host,
        allow_null_backend: args.allow_null_backend,
    };
    let drivers = volcore_daemons::drivers(&args.local_state, Some(&args.ceph), false)?;
    master::run(
        cfg,
        MasterDeps { kv, drivers },
        volcore_daemons::shutdown_signal(),
    )
    .await
}
