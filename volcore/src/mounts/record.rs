//! The mount record at `mounts/<host>/<policy>/<volume>`: which containers use a volume on
//! one host, where it is mounted, and what the host needs to unmount it and to re-take its
//! lock after a restart without reading anything else.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::kv::{Entry, KvError, Revision};
use crate::volume::Volume;

/// One host's use of one volume.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountRecord {
    /// The users (Docker mount IDs) of the volume on this host.
    pub ids: BTreeSet<String>,
    /// Where it is mounted.
    pub path: PathBuf,
    /// The device it is mounted from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<PathBuf>,
    /// The volume's epoch the mount lock was taken under (`None`: unlocked, or a record
    /// from before epochs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Revision>,
    /// The volume record as it was when mounted, so the host can unmount it even if the
    /// record is removed meanwhile (`None` in records from before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<Volume>,
    /// The process instance that wrote the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

impl MountRecord {
    /// Decodes a stored record.
    pub fn decode(e: &Entry) -> Result<Self, KvError> {
        e.decode()
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        // Plain data always encodes.
        serde_json::to_vec(self).unwrap_or_default()
    }
}
