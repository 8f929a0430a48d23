//! volsupervisor — scheduled and on-demand snapshots, one leader among any number.

use anyhow::Result;
use clap::Parser;
use volcore_daemon::{DriverArgs, StoreArgs};

#[derive(Parser)]
#[command(
    name = "volsupervisor",
    version,
    about = "volcore's supervisor: scheduled snapshots with tiers and pruning, on-demand snapshots; one leads, the others stand by"
)]
struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// Host label recorded in its record and the locks it takes (default: the host name).
    #[arg(long, env = "VOLCORE_HOST_LABEL")]
    host_label: Option<String>,
    /// How many snapshots run at once.
    #[arg(long, env = "VOLSUPERVISOR_CONCURRENCY", default_value_t = 64)]
    concurrency: usize,
    /// How often unused (stale) and orphaned ephemeral volumes are looked for (e.g. 30s,
    /// 5m).
    #[arg(long, env = "VOLSUPERVISOR_RECLAIM_EVERY", default_value = "30s", value_parser = duration)]
    reclaim_every: std::time::Duration,
    #[command(flatten)]
    drivers: DriverArgs,
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    let d = volcore::size::parse_duration(s).map_err(|e| e.to_string())?;
    if d < std::time::Duration::from_millis(100) || d > std::time::Duration::from_secs(86_400) {
        return Err(format!("{s:?} is outside 100ms to 24h"));
    }
    Ok(d)
}

#[tokio::main]
async fn main() -> Result<()> {
    volcore_daemon::init_tracing();
    let args = Args::parse();
    let host = volcore_daemon::host_label(args.host_label)?;
    let kv = args.store.open().await?;
    let drivers = volcore_daemon::drivers(
        &args.drivers.local_state,
        Some(&args.drivers.ceph),
        args.drivers.allow_null_backend,
    )?;
    let cfg = volsupervisor::Config {
        kv_spec: args.store.kv,
        prefix: args.store.prefix,
        host,
        concurrency: args.concurrency,
        reclaim_every: args.reclaim_every,
    };
    volsupervisor::run(cfg, kv, drivers, volcore_daemon::shutdown_signal()).await
}
