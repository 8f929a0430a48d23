//! Host identity: who a host label belongs to right now.
//!
//! A label alone (a hostname) cannot tell two machines apart, so each host has a
//! persistent **host id**, kept in its state directory, and each process start a random
//! **instance** id. The state directory is held with an exclusive `flock` for the
//! process's lifetime, so only one process acts for one identity at a time.
//!
//! [`register`] publishes `hosts/<host>` bound to the host's lease: it fails with
//! [`HostError::LabelInUse`] while another live host id holds the label, and replaces a
//! live record of its own host id (the previous process on this machine: it must be dead,
//! since this process holds the state directory's lock). Lock values carry the host id and
//! the instance, so a lock is never taken for one's own across machines.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::keys::Keys;
use crate::kv::{Entry, KvError, KvStore, LeaseId, Precondition, PutOpts, TxnOp};
use crate::name::HostName;

/// The record at `hosts/<host>`, bound to the host's lease.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct HostRecord {
    /// The label.
    pub host: HostName,
    /// The persistent host id (its state directory's).
    pub host_id: String,
    /// This process start's random id.
    pub instance: String,
    /// The software version.
    pub version: String,
    /// When this process started.
    #[serde(with = "crate::serde_time")]
    pub started: SystemTime,
    /// The process id.
    pub pid: u32,
    /// The lease the record (and the host's locks) live on.
    pub lease: String,
}

/// Host identity errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The state directory cannot be created, read or written.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the state directory.
    #[error("state directory {path} is in use by another process{}; one process per state directory (give each plugin its own --state-dir)", .pid.map_or_else(String::new, |p| format!(" (pid {p})")))]
    StateDirInUse {
        /// The directory.
        path: PathBuf,
        /// The pid written by its holder, if readable.
        pid: Option<u32>,
    },
    /// Another machine's live host holds this label.
    #[error("host label {host} is in use by a live host on another machine (host id {}, started {}, pid {}, version {}); give every machine its own --host-label, or, if that machine is gone, wait for its lease to expire", .other.host_id, humantime::format_rfc3339_seconds(.other.started), .other.pid, .other.version)]
    LabelInUse {
        /// The label.
        host: HostName,
        /// Its live record.
        other: Box<HostRecord>,
    },
    /// The store failed.
    #[error(transparent)]
    Kv(#[from] KvError),
}

/// This host's identity, with its state directory held.
#[derive(Debug)]
pub struct HostIdentity {
    host: HostName,
    host_id: String,
    instance: String,
    started: SystemTime,
    // Held (flock) for the identity's lifetime; dropped, the lock is released.
    _lock: File,
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

impl HostIdentity {
    /// Takes `state_dir` (created if missing) for `host`: locks it, and reads its host id
    /// (made on first use).
    pub fn open(state_dir: &Path, host: HostName) -> Result<Self, HostError> {
        let io = |source| HostError::StateDir {
            path: state_dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let lock_path = state_dir.join("lock");
        let mut lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = lock.read_to_string(&mut pid);
                return Err(HostError::StateDirInUse {
                    path: state_dir.to_path_buf(),
                    pid: pid.trim().parse().ok(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        lock.set_len(0).map_err(io)?;
        writeln!(lock, "{}", std::process::id()).map_err(io)?;
        let id_path = state_dir.join("host-id");
        let host_id = match std::fs::read_to_string(&id_path) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_owned(),
            Ok(_) | Err(_) => {
                let id = random_hex(16);
                let tmp = state_dir.join("host-id.tmp");
                std::fs::write(&tmp, format!("{id}\n")).map_err(io)?;
                std::fs::rename(&tmp, &id_path).map_err(io)?;
                info!(host_id = %id, dir = %state_dir.display(), "new host id");
                id
            }
        };
        Ok(Self {
            host,
            host_id,
            instance: random_hex(8),
            started: SystemTime::now(),
            _lock: lock,
        })
    }

    /// The label.
    pub fn host(&self) -> &HostName {
        &self.host
    }

    /// The persistent host id.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// This process start's id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The record [`register`] publishes.
    pub fn record(&self, version: &str, lease: &LeaseId) -> HostRecord {
        HostRecord {
            host: self.host.clone(),
            host_id: self.host_id.clone(),
            instance: self.instance.clone(),
            version: version.to_owned(),
            started: self.started,
            pid: std::process::id(),
            lease: lease.as_str().to_owned(),
        }
    }
}

/// Publishes `hosts/<host>` on `lease` (see the module docs); returns the record.
pub async fn register(
    kv: &dyn KvStore,
    keys: &Keys,
    id: &HostIdentity,
    version: &str,
    lease: &LeaseId,
) -> Result<HostRecord, HostError> {
    let key = keys.host(&id.host);
    let rec = id.record(version, lease);
    let value = serde_json::to_vec(&rec).map_err(|e| KvError::Invalid {
        reason: format!("cannot encode the host record: {e}"),
    })?;
    loop {
        match kv
            .put(
                &key,
                value.clone(),
                PutOpts::absent().with_lease(lease.clone()),
            )
            .await
        {
            Ok(_) => return Ok(rec),
            Err(KvError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let Some(e) = kv.get(&key).await? else {
            continue; // expired meanwhile
        };
        let other = match e.decode::<HostRecord>() {
            Ok(o) => o,
            Err(err) => {
                warn!(error = %err, "replacing a corrupt host record");
                rec.clone()
            }
        };
        if other.host_id != rec.host_id {
            return Err(HostError::LabelInUse {
                host: id.host.clone(),
                other: Box::new(other),
            });
        }
        if other.instance != rec.instance {
            info!(previous = %other.instance, pid = other.pid, "taking over the host record of this machine's previous process");
        }
        let ops = vec![TxnOp::Put {
            key: key.clone(),
            value: value.clone(),
            pre: Precondition::Revision(e.mod_rev),
            lease: Some(lease.clone()),
        }];
        match kv.txn(ops).await {
            Ok(_) => return Ok(rec),
            Err(KvError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Every live host record.
pub async fn list(kv: &dyn KvStore, keys: &Keys) -> Result<Vec<HostRecord>, KvError> {
    kv.list(&keys.hosts())
        .await?
        .iter()
        .map(Entry::decode::<HostRecord>)
        .collect()
}
