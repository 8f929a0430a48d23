//! [`EmbeddedKv`]: a single-host persistent store — volcore's in-memory engine written
//! through to a `redb` database file.
//!
//! Every write is committed durably to the file before it becomes visible. Reads and
//! watches are served from memory. Leases are in-process timers and do not survive a
//! restart: keys bound to a lease are dropped when the file is opened (their holder is
//! gone), and watch history starts at the open revision (watching from before it reports
//! `Resync`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use volcore::kv::{
    Change, Entry, Journal, KvError, KvStore, LeaseId, MemKv, Precondition, PutOpts, Revision,
    TxnOp, TxnOutcome, WatchStream,
};

const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const BACKEND: &str = "embedded";

fn backend_err(e: impl std::error::Error + Send + Sync + 'static) -> KvError {
    KvError::Backend {
        backend: BACKEND,
        source: Box::new(e),
    }
}

/// Encodes an entry as `create_rev (8) | mod_rev (8) | lease_len (2) | lease | value`.
fn encode(e: &Entry) -> Vec<u8> {
    let lease = e
        .lease
        .as_ref()
        .map(|l| l.as_str().as_bytes())
        .unwrap_or_default();
    let lease_len = u16::try_from(lease.len()).unwrap_or(0);
    let mut out = Vec::with_capacity(18 + lease.len() + e.value.len());
    out.extend_from_slice(&e.create_rev.to_be_bytes());
    out.extend_from_slice(&e.mod_rev.to_be_bytes());
    out.extend_from_slice(&lease_len.to_be_bytes());
    out.extend_from_slice(&lease[..usize::from(lease_len)]);
    out.extend_from_slice(&e.value);
    out
}

fn decode(key: &str, b: &[u8]) -> Result<Entry, KvError> {
    let corrupt = || KvError::Corrupt {
        key: key.to_owned(),
        reason: "truncated record in the embedded store".into(),
    };
    let create = b.get(0..8).ok_or_else(corrupt)?;
    let modr = b.get(8..16).ok_or_else(corrupt)?;
    let ll = b.get(16..18).ok_or_else(corrupt)?;
    let ll = usize::from(u16::from_be_bytes([ll[0], ll[1]]));
    let lease = b.get(18..18 + ll).ok_or_else(corrupt)?;
    let value = b.get(18 + ll..).ok_or_else(corrupt)?;
    let arr = |s: &[u8]| -> Result<[u8; 8], KvError> { s.try_into().map_err(|_| corrupt()) };
    Ok(Entry {
        key: key.to_owned(),
        value: value.to_vec(),
        create_rev: u64::from_be_bytes(arr(create)?),
        mod_rev: u64::from_be_bytes(arr(modr)?),
        lease: (ll > 0).then(|| LeaseId::new(String::from_utf8_lossy(lease).into_owned())),
    })
}

#[derive(Debug)]
struct RedbJournal {
    db: Arc<Database>,
}

impl Journal for RedbJournal {
    fn commit(&self, revision: Revision, changes: &[Change]) -> Result<(), KvError> {
        let tx = self.db.begin_write().map_err(backend_err)?;
        {
            let mut t = tx.open_table(ENTRIES).map_err(backend_err)?;
            for c in changes {
                match c {
                    Change::Put(e) => {
                        t.insert(e.key.as_str(), encode(e).as_slice())
                            .map_err(backend_err)?;
                    }
                    Change::Delete(k) => {
                        t.remove(k.as_str()).map_err(backend_err)?;
                    }
                }
            }
            let mut m = tx.open_table(META).map_err(backend_err)?;
            m.insert("revision", revision).map_err(backend_err)?;
        }
        tx.commit().map_err(backend_err)
    }
}

/// The embedded persistent store.
#[derive(Clone, Debug)]
pub struct EmbeddedKv {
    mem: MemKv,
    path: PathBuf,
}

impl EmbeddedKv {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, KvError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| KvError::Backend {
                backend: BACKEND,
                source: format!("cannot create {}: {e}", dir.display()).into(),
            })?;
        }
        let db = Database::create(&path).map_err(|e| KvError::Backend {
            backend: BACKEND,
            source: format!("cannot open {}: {e}", path.display()).into(),
        })?;
        let (revision, entries) = {
            // Make sure both tables exist, then read them.
            let tx = db.begin_write().map_err(backend_err)?;
            {
                tx.open_table(ENTRIES).map_err(backend_err)?;
                tx.open_table(META).map_err(backend_err)?;
            }
            tx.commit().map_err(backend_err)?;
            let rx = db.begin_read().map_err(backend_err)?;
            let meta = rx.open_table(META).map_err(backend_err)?;
            let revision = meta
                .get("revision")
                .map_err(backend_err)?
                .map_or(0, |v| v.value());
            let t = rx.open_table(ENTRIES).map_err(backend_err)?;
            let mut entries = Vec::new();
            for row in t.iter().map_err(backend_err)? {
                let (k, v) = row.map_err(backend_err)?;
                entries.push(decode(k.value(), v.value())?);
            }
            (revision, entries)
        };
        tracing::info!(path = %path.display(), revision, keys = entries.len(), "embedded store opened");
        let journal = RedbJournal { db: Arc::new(db) };
        let mem = MemKv::with_journal(BACKEND, Box::new(journal), revision, entries)?;
        Ok(Self { mem, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl KvStore for EmbeddedKv {
    fn backend(&self) -> &'static str {
        BACKEND
    }
    async fn get(&self, key: &str) -> Result<Option<Entry>, KvError> {
        self.mem.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<Entry>, KvError> {
        self.mem.list(prefix).await
    }
    async fn put(&self, key: &str, value: Vec<u8>, opts: PutOpts) -> Result<Revision, KvError> {
        self.mem.put(key, value, opts).await
    }
    async fn delete(&self, key: &str, pre: Precondition) -> Result<bool, KvError> {
        self.mem.delete(key, pre).await
    }
    async fn txn(&self, ops: Vec<TxnOp>) -> Result<TxnOutcome, KvError> {
        self.mem.txn(ops).await
    }
    async fn watch(&self, prefix: &str, after: Option<Revision>) -> Result<WatchStream, KvError> {
        self.mem.watch(prefix, after).await
    }
    async fn revision(&self) -> Result<Revision, KvError> {
        self.mem.revision().await
    }
    async fn compact(&self, revision: Revision) -> Result<(), KvError> {
        self.mem.compact(revision).await
    }
    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, KvError> {
        self.mem.lease_grant(ttl).await
    }
    async fn lease_keepalive(&self, id: &LeaseId) -> Result<Duration, KvError> {
        self.mem.lease_keepalive(id).await
    }
    async fn lease_revoke(&self, id: &LeaseId) -> Result<(), KvError> {
        self.mem.lease_revoke(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_round_trip() {
        let e = Entry {
            key: "k".into(),
            value: b"value".to_vec(),
            create_rev: 3,
            mod_rev: 9,
            lease: Some(LeaseId::new("ab-1")),
        };
        assert_eq!(decode("k", &encode(&e)).unwrap(), e);
        let e = Entry {
            lease: None,
            value: vec![],
            ..e
        };
        assert_eq!(decode("k", &encode(&e)).unwrap(), e);
        assert!(decode("k", &[1, 2, 3]).is_err());
    }
}
