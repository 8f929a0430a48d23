//! volplugin — Docker VolumeDriver plugin for volcore.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use volcore::PolicyName;
use volcore_daemon::{DriverArgs, PluginArgs, StoreArgs};
use volplugin::{LeaseLossAction, PluginConfig, PluginDeps};

#[derive(Parser)]
#[command(
    name = "volplugin",
    version,
    about = "Docker VolumeDriver plugin: policy/volume names, lease-backed mount locks"
)]
struct Args {
    #[command(flatten)]
    plugin: PluginArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// Host label recorded in locks and mount records (default: the host name).
    #[arg(long, env = "VOLCORE_HOST_LABEL")]
    host_label: Option<String>,
    /// Policy for volume names given without `policy/`.
    #[arg(long, env = "VOLPLUGIN_DEFAULT_POLICY")]
    default_policy: Option<String>,
    /// What to do with a mounted volume another host took while this host's lease was
    /// lost: unmount, or keep (mounted for its current users, no new ones; alarm).
    #[arg(long, env = "VOLPLUGIN_ON_LEASE_LOSS", default_value = "unmount")]
    on_lease_loss: LeaseLossAction,
    /// This host's state directory: its persistent identity (`host-id`), held by one
    /// process at a time (default: /var/lib/volcore/plugin-NAME, NAME the plugin name).
    #[arg(long, env = "VOLPLUGIN_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// cgroup v1 parent, under the blkio mount, of the containers whose I/O rate limits
    /// apply to (Docker's cgroupfs driver: docker).
    #[arg(long, env = "VOLPLUGIN_CGROUP_PARENT", default_value = "docker")]
    cgroup_parent: PathBuf,
    /// cgroup v2 parent directory whose io.max takes rate limits (used when the host has
    /// no v1 blkio hierarchy).
    #[arg(long, env = "VOLPLUGIN_CGROUP_V2")]
    cgroup_v2: Option<PathBuf>,
    /// Mount root on this host, instead of the global configuration's MountPath (held to
    /// the same rules: absolute, normalised, outside system directories).
    #[arg(long, env = "VOLPLUGIN_MOUNT_PATH", value_parser = mount_root)]
    mount_path: Option<PathBuf>,
    #[command(flatten)]
    drivers: DriverArgs,
}

fn mount_root(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    volcore::global::check_mount_path(&p).map_err(|e| e.to_string())?;
    Ok(p)
}

#[tokio::main]
async fn main() -> Result<()> {
    volcore_daemon::init_tracing();
    let a = Args::parse();
    let host = volcore_daemon::host_label(a.host_label)?;
    let default_policy = a
        .default_policy
        .map(PolicyName::new)
        .transpose()
        .context("--default-policy")?;
    let kv = a.store.open().await?;
    let d = &a.drivers;
    let drivers = volcore_daemon::drivers(&d.local_state, Some(&d.ceph), d.allow_null_backend)?;
    let state_dir = a.state_dir.unwrap_or_else(|| {
        PathBuf::from(format!("/var/lib/volcore/plugin-{}", a.plugin.plugin_name))
    });
    let cfg = PluginConfig {
        socket_dir: a.plugin.socket_dir,
        state_dir,
        cgroup_parent: a.cgroup_parent,
        plugin_name: a.plugin.plugin_name,
        host,
        prefix: a.store.prefix,
        default_policy,
        on_lease_loss: a.on_lease_loss,
        cgroup_v2: a.cgroup_v2,
        mount_path: a.mount_path,
    };
    volplugin::run(
        cfg,
        PluginDeps { kv, drivers },
        volcore_daemon::shutdown_signal(),
    )
    .await
}
