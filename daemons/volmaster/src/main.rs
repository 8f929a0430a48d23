//! volmaster — volcore's REST API daemon.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Result};
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
    /// Address to listen on. Without TLS only a loopback address is accepted (see
    /// --insecure).
    #[arg(long, env = "VOLMASTER_LISTEN", default_value = "127.0.0.1:9005")]
    listen: SocketAddr,
    /// volmaster's certificate chain (PEM); with --tls-key and --client-ca it serves
    /// HTTPS and identifies clients by their certificates.
    #[arg(long, env = "VOLMASTER_TLS_CERT", requires_all = ["tls_key", "client_ca"])]
    tls_cert: Option<PathBuf>,
    /// volmaster's private key (PEM).
    #[arg(long, env = "VOLMASTER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA certificate(s) (PEM) that sign client certificates.
    #[arg(long, env = "VOLMASTER_CLIENT_CA", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// A subject that is admin whatever the role map says (`user:<CN>` or
    /// `group:<name>`; repeatable): how the first admin gets in. Remove it once the role
    /// map names admins (`volcli role grant`).
    #[arg(long = "admin-identity", env = "VOLMASTER_ADMIN_IDENTITY", value_delimiter = ',', value_parser = subject)]
    admin_identities: Vec<volcore::Subject>,
    /// How many audit entries the store keeps (the oldest are dropped).
    #[arg(long, env = "VOLMASTER_AUDIT_KEEP", default_value_t = volmaster::DEFAULT_AUDIT_KEEP)]
    audit_keep: usize,
    /// Serve plain HTTP on a non-loopback --listen address (no authentication: anyone who
    /// can reach it can do anything). Logged as a warning.
    #[arg(long, env = "VOLMASTER_INSECURE")]
    insecure: bool,
    #[command(flatten)]
    store: StoreArgs,
    /// Host label recorded in the locks this master takes (default: the host name).
    #[arg(long, env = "VOLCORE_HOST_LABEL")]
    host_label: Option<String>,
    #[command(flatten)]
    drivers: DriverArgs,
}

fn subject(s: &str) -> Result<volcore::Subject, String> {
    volcore::Subject::new(s).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> Result<()> {
    volcore_daemon::init_tracing();
    let args = Args::parse();
    let host = volcore_daemon::host_label(args.host_label)?;
    let tls = match (args.tls_cert, args.tls_key, args.client_ca) {
        (Some(cert), Some(key), Some(client_ca)) => Some(volmaster::tls::TlsFiles {
            cert,
            key,
            client_ca,
        }),
        (None, None, None) => None,
        // clap's `requires` refuses the rest; kept for a clear error all the same.
        _ => bail!("--tls-cert, --tls-key and --client-ca go together"),
    };
    volmaster::tls::check_listen(args.listen, tls.is_some(), args.insecure)?;
    if tls.is_none() && !args.admin_identities.is_empty() {
        bail!("--admin-identity needs TLS (--tls-cert, --tls-key, --client-ca): without it there are no identities, and every caller on loopback is the admin");
    }
    let kv = args.store.open().await?;
    let cfg = MasterConfig {
        listen: args.listen,
        kv_spec: args.store.kv,
        prefix: args.store.prefix,
        host,
        allow_null_backend: args.drivers.allow_null_backend,
        tls,
        admin_identities: args.admin_identities,
        audit_keep: args.audit_keep,
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
