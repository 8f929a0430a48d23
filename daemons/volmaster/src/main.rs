//! volmaster — volcore's REST API daemon.

use std::net::SocketAddr;

use anyhow::Result;
use clap::Parser;
use volcore_daemon::{CephArgs, DriverArgs, StoreArgs};
use volmaster::{MasterConfig, MasterDeps};

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
    #[command(flatten)]
    store: StoreArgs,
    /// Host label recorded in the locks this master takes (default: the host name).
    #[arg(long, env = "VOLCORE_HOST_LABEL")]
    host_label: Option<String>,
    #[command(flatten)]
    drivers: DriverArgs,
}

#[tokio::main]
async fn main() -> Result<()> {
    volcore_daemon::init_tracing();
    let args = Args::parse();
    let host = volcore_daemon::host_label(args.host_label)?;
    let kv = args.store.open().await?;
    let cfg = MasterConfig {
        listen: args.listen,
        kv_spec: args.store.kv,
        prefix: args.store.prefix,
        host,
        allow_null_backend: args.drivers.allow_null_backend,
    };
    // volmaster adds the null driver itself when allowed (see MasterConfig).
    let ceph: &CephArgs = &args.drivers.ceph;
    let drivers = volcore_daemon::drivers(&args.drivers.local_state, Some(ceph), false)?;
    volmaster::run(
        cfg,
        MasterDeps { kv, drivers },
        volcore_daemon::shutdown_signal(),
    )
    .await
}
