//! KV store backends for volcore, one cargo feature each:
//!
//! - `etcd` — [`EtcdKv`], etcd v3 through `etcd-client` (native transactions, leases,
//!   watches). The default for clusters.
//! - `embedded` — [`EmbeddedKv`], a single-host persistent store on `redb`: data survives
//!   a process restart, leases do not (keys bound to a lease are dropped at open, since
//!   their holder is gone).
//!
//! [`open`] turns the daemons' `--kv` argument (`etcd://h:p[,h:p…]`, `embedded:PATH`,
//! `memory:`) into a store.

use std::sync::Arc;

use volcore::kv::{KvError, KvStore};

#[cfg(feature = "embedded")]
mod embedded;
#[cfg(feature = "etcd")]
mod etcd;

#[cfg(feature = "embedded")]
pub use embedded::EmbeddedKv;
#[cfg(feature = "etcd")]
pub use etcd::{EtcdConfig, EtcdKv, EtcdTls};

/// Opens the store a `--kv` argument names.
pub async fn open(spec: &str) -> Result<Arc<dyn KvStore>, KvError> {
    if spec == "memory:" || spec == "memory" {
        return Ok(Arc::new(volcore::MemKv::new()));
    }
    if let Some(path) = spec.strip_prefix("embedded:") {
        #[cfg(feature = "embedded")]
        {
            return Ok(Arc::new(EmbeddedKv::open(path)?));
        }
        #[cfg(not(feature = "embedded"))]
        {
            let _ = path;
            return Err(KvError::Invalid {
                reason: "this build has no embedded store (cargo feature `embedded`)".into(),
            });
        }
    }
    if spec.starts_with("etcds://") {
        return Err(KvError::Invalid {
            reason: format!("{spec:?} is etcd over TLS: it needs the CA (and, for client-certificate auth, a certificate and key) — the daemons take --kv-cacert, --kv-cert and --kv-key; in code, build an EtcdConfig with tls"),
        });
    }
    if spec.starts_with("etcd://") {
        #[cfg(feature = "etcd")]
        {
            return Ok(Arc::new(EtcdKv::connect(EtcdConfig::parse(spec)?).await?));
        }
        #[cfg(not(feature = "etcd"))]
        {
            return Err(KvError::Invalid {
                reason: "this build has no etcd store (cargo feature `etcd`)".into(),
            });
        }
    }
    Err(KvError::Invalid {
        reason: format!("unknown store {spec:?}; use etcd://host:port[,host:port…], embedded:/path/to/file or memory:"),
    })
}
