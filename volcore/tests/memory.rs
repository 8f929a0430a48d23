//! The KV and lock suites against the in-memory store.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::sync::Arc;

use volcore::testing::KvCaps;
use volcore::MemKv;

volcore::kv_conformance!(kv, Arc::new(MemKv::new()), KvCaps::LOCAL);
volcore::lock_conformance!(locks, Arc::new(MemKv::new()), KvCaps::LOCAL);

mod fake_driver {
    use super::*;
    // Every case but failed_mkfs_is_an_error: the fake runs no mkfs.
    volcore::driver_conformance!(@cases
        Arc::new(volcore::testing::FakeDriver::new(volcore::policy::BackendKind::Local)),
        volcore::testing::driver_suite::DriverCtx {
            mount_root: std::path::PathBuf::from("/nonexistent/fake-mounts"),
            filesystem: "ext4".into(),
            real_io: false,
            params: Default::default(),
        };
        create_exists_destroy, mount_unmount_idempotent, data_survives_remount,
        destroy_while_mounted_is_busy, snapshots_round_trip, copy_errors);
}

mod null_driver {
    use super::*;
    // The shipped `null` backend keeps the same contract (it runs no mkfs either).
    volcore::driver_conformance!(@cases
        Arc::new(volcore::NullDriver::new()),
        volcore::testing::driver_suite::DriverCtx {
            mount_root: std::path::PathBuf::from("/nonexistent/null-mounts"),
            filesystem: "ext4".into(),
            real_io: false,
            params: Default::default(),
        };
        create_exists_destroy, mount_unmount_idempotent, data_survives_remount,
        destroy_while_mounted_is_busy, snapshots_round_trip, copy_errors);
}
