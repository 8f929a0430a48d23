//! The KV and lock suites against the in-memory store.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::sync::Arc;

use volcore::testing::KvCaps;
use volcore::MemKv;

volcore::kv_conformance!(kv, Arc::new(MemKv::new()), KvCaps::LOCAL);
volcore::lock_conformance!(locks, Arc::new(MemKv::new()), KvCaps::LOCAL);
