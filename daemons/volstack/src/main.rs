//! volstack — volmaster, volplugin and volsupervisor in one process on embedded defaults:
//! an embedded store, the local loop-file driver and a default policy (snapshotted on
//! schedule). The zero-setup way to run
//! volcore on one host (the embedded store is one process's, so both daemons share it).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use volcore::{HostName, Keys, KvStore, PolicyName};
use volmaster::{MasterConfig, MasterDeps};
use volplugin::{LeaseLossAction, PluginConfig, PluginDeps};

#[derive(Parser)]
#[command(
    name = "volstack",
    version,
    about = "volmaster + volplugin + volsupervisor in one process on embedded defaults"
)]
struct Args {
    /// State directory: embedded store, local volumes, mounts.
    #[arg(long, env = "VOLCORE_STATE", default_value = "/var/lib/volcore")]
    state: PathBuf,
    /// volmaster's address: loopback only (volstack serves no TLS), unless --insecure.
    #[arg(long, env = "VOLMASTER_LISTEN", default_value = "127.0.0.1:9005")]
    listen: SocketAddr,
    /// Serve the REST API on a non-loopback --listen without authentication (anyone who
    /// can reach it can do anything). Logged as a warning.
    #[arg(long)]
    insecure: bool,
    #[command(flatten)]
    plugin: volcore_daemon::PluginArgs,
    /// Serve the `null` backend too.
    #[arg(long)]
    allow_null_backend: bool,
    #[command(flatten)]
    ceph: volcore_daemon::CephArgs,
}

const DEFAULT_POLICY: &str = r#"{"backend":"local","create":{"size":"10GB","filesystem":"ext4"},
  "filesystems":{"ext4":"mkfs.ext4 -q -m0 %","xfs":"mkfs.xfs -q %"},
  "runtime":{"snapshots":true,"snapshot":{"frequency":"30m","keep":20}}}"#;

#[tokio::main]
async fn main() -> Result<()> {
    volcore_daemon::init_tracing();
    let a = Args::parse();
    if volmaster::tls::check_listen(a.listen, false, a.insecure).is_err() {
        anyhow::bail!(
            "--listen {} is not a loopback address and volstack serves no TLS: anyone who can reach it could change policies and remove volumes. Listen on 127.0.0.1, run volmaster with --tls-cert/--tls-key/--client-ca for remote access, or pass --insecure",
            a.listen
        );
    }
    let kv_path = a.state.join("kv.redb");
    let kv: std::sync::Arc<dyn KvStore> = std::sync::Arc::new(
        volcore_kv::EmbeddedKv::open(&kv_path)
            .with_context(|| format!("opening {}", kv_path.display()))?,
    );
    let keys = Keys::default();
    // Defaults on first start: the mount root under the state directory, and policy1.
    if kv.get(&keys.global()).await?.is_none() {
        let g = format!(r#"{{"MountPath":"{}"}}"#, a.state.join("mnt").display());
        let g = volcore::GlobalConfig::from_json(g.as_bytes())?;
        kv.put(&keys.global(), g.to_json(), Default::default())
            .await?;
    }
    let p1 = PolicyName::new("policy1")?;
    if kv.get(&keys.policy(&p1)).await?.is_none() {
        let default = volcore::GlobalConfig::default();
        volcore::engine::store_policy(kv.as_ref(), &keys, &p1, DEFAULT_POLICY.as_bytes(), &default)
            .await?;
    }
    let drivers =
        volcore_daemon::drivers(&a.state.join("local"), Some(&a.ceph), a.allow_null_backend)?;
    let host = HostName::this_host();
    let mcfg = MasterConfig {
        listen: a.listen,
        kv_spec: format!("embedded:{}", kv_path.display()),
        prefix: Keys::DEFAULT_PREFIX.into(),
        host: host.clone(),
        allow_null_backend: false, // already in `drivers` when allowed
        tls: None,
        admin_identities: Vec::new(),
        audit_keep: volmaster::DEFAULT_AUDIT_KEEP,
    };
    let pcfg = PluginConfig {
        socket_dir: a.plugin.socket_dir,
        plugin_name: a.plugin.plugin_name,
        host: HostName::new(host.as_str())?,
        prefix: Keys::DEFAULT_PREFIX.into(),
        default_policy: Some(p1),
        state_dir: a.state.join("plugin"),
        on_lease_loss: LeaseLossAction::Unmount,
        cgroup_parent: PathBuf::from("docker"),
        cgroup_v2: None,
        mount_path: None,
    };
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let (mut s1, mut s2, mut s3) = (
        stop_tx.subscribe(),
        stop_tx.subscribe(),
        stop_tx.subscribe(),
    );
    let scfg = volsupervisor::Config {
        kv_spec: format!("embedded:{}", kv_path.display()),
        prefix: Keys::DEFAULT_PREFIX.into(),
        host: host.clone(),
        concurrency: 16,
        reclaim_every: std::time::Duration::from_secs(30),
    };
    let sv = volsupervisor::run(scfg, kv.clone(), drivers.clone(), async move {
        let _ = s3.recv().await;
    });
    let m = volmaster::run(
        mcfg,
        MasterDeps {
            kv: kv.clone(),
            drivers: drivers.clone(),
        },
        async move {
            let _ = s1.recv().await;
        },
    );
    let p = volplugin::run(pcfg, PluginDeps { kv, drivers }, async move {
        let _ = s2.recv().await;
    });
    let both = async { tokio::try_join!(m, p, sv) };
    tokio::pin!(both);
    tokio::select! {
        // One of them failed (a port taken, a socket dir not writable …): stop.
        r = &mut both => {
            r?;
        }
        () = volcore_daemon::shutdown_signal() => {
            let _ = stop_tx.send(());
            both.await?;
        }
    }
    Ok(())
}
