//! The driver conformance suite: the same cases for every [`VolumeDriver`] (FakeDriver,
//! the local loop-file driver with real loop devices and mounts, Ceph).
//!
//! [`driver_conformance!`](crate::driver_conformance) makes one `#[tokio::test]` per case.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::driver::{mount_path, DriverError, VolumeDriver, VolumeSpec};
use crate::name::{SnapshotName, VolumeRef};
use crate::policy::MkfsTemplate;
use crate::size::Size;

/// What a suite run needs to know about the driver under test.
#[derive(Clone, Debug)]
pub struct DriverCtx {
    /// Where volumes are mounted.
    pub mount_root: PathBuf,
    /// Filesystem to format with (`ext4`, `xfs`).
    pub filesystem: String,
    /// Whether the driver does real I/O (files written through a mount survive a remount).
    pub real_io: bool,
    /// Backend parameters every volume gets (Ceph: `pool`).
    pub params: BTreeMap<String, String>,
}

/// One `#[tokio::test]` per driver case. `driver_conformance!(@cases make, ctx; case, …)`
/// runs a chosen subset.
#[macro_export]
macro_rules! driver_conformance {
    ($name:ident, $make:expr, $ctx:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::driver_conformance!(@cases $make, $ctx;
                create_exists_destroy, mount_unmount_idempotent, data_survives_remount,
                destroy_while_mounted_is_busy, snapshots_round_trip, copy_errors, failed_mkfs_is_an_error);
        }
    };
    (@cases $make:expr, $ctx:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let d: ::std::sync::Arc<dyn $crate::driver::VolumeDriver> = $make;
                let ctx: $crate::testing::driver_suite::DriverCtx = $ctx;
                $crate::testing::driver_suite::$case(d, &ctx).await;
            }
        )*
    };
}

fn spec(ctx: &DriverCtx, case: &str) -> VolumeSpec {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let v = VolumeRef::parse(&format!(
        "conf{}/{}-{n}",
        std::process::id(),
        case.replace('_', "-")
    ))
    .unwrap();
    let (size, mkfs) = match ctx.filesystem.as_str() {
        // xfsprogs refuses filesystems below 300 MB; the image is sparse either way.
        "xfs" => (Size::from_bytes(320 << 20), "mkfs.xfs -q -f %"),
        "btrfs" => (Size::from_bytes(256 << 20), "mkfs.btrfs -q -f %"),
        _ => (Size::from_bytes(64 << 20), "mkfs.ext4 -q -F -m0 %"),
    };
    VolumeSpec {
        volume: v,
        size,
        filesystem: ctx.filesystem.clone(),
        mkfs: Some(MkfsTemplate::new(&ctx.filesystem, mkfs).unwrap()),
        params: ctx.params.clone(),
        source: None,
        timeout: Duration::from_secs(60),
    }
}

fn at(ctx: &DriverCtx, s: &VolumeSpec) -> PathBuf {
    mount_path(&ctx.mount_root, &s.volume)
}

async fn made(d: &dyn VolumeDriver, ctx: &DriverCtx, case: &str) -> VolumeSpec {
    let s = spec(ctx, case);
    d.create(&s).await.unwrap();
    d.format(&s).await.unwrap();
    s
}

fn write(path: &Path, text: &str) {
    std::fs::write(path.join("data.txt"), text).unwrap();
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path.join("data.txt")).unwrap_or_default()
}

/// Create is `AlreadyExists` the second time; destroy is `NotFound` the second time.
pub async fn create_exists_destroy(d: Arc<dyn VolumeDriver>, ctx: &DriverCtx) {
    let s = spec(ctx, "ced");
    assert!(!d.exists(&s).await.unwrap());
    d.create(&s).await.unwrap();
    assert!(d.exists(&s).await.unwrap());
    assert!(d.list().await.unwrap().contains(&s.volume));
    assert!(matches!(
        d.create(&s).await,
        Err(DriverError::AlreadyExists { .. })
    ));
    d.format(&s).await.unwrap();
    d.destroy(&s).await.unwrap();
    assert!(!d.exists(&s).await.unwrap());
    assert!(!d.list().await.unwrap().contains(&s.volume));
    assert!(matches!(
        d.destroy(&s).await,
        Err(DriverError::NotFound { .. })
    ));
}

/// Mount twice is one mount; unmount twice is fine; `mounted` reports it while mounted.
pub async fn mount_unmount_idempotent(d: Arc<dyn VolumeDriver>, ctx: &DriverCtx) {
    let m = d.mounts().expect("mount support");
    let s = made(d.as_ref(), ctx, "mui").await;
    let p = at(ctx, &s);
    let got = m.mount(&s, &p).await.unwrap();
    assert_eq!(got.path, p);
    assert_eq!(got.volume, s.volume);
    let again = m.mount(&s, &p).await.unwrap();
    assert_eq!(again.path, p);
    let mounted = m.mounted().await.unwrap();
    assert_eq!(
        mounted.iter().filter(|x| x.volume == s.volume).count(),
        1,
        "{mounted:?}"
    );
    m.unmount(&s, &p).await.unwrap();
    assert!(!m
        .mounted()
        .await
        .unwrap()
        .iter()
        .any(|x| x.volume == s.volume));
    m.unmount(&s, &p).await.unwrap();
    d.destroy(&s).await.unwrap();
}

/// Data written through a mount is there after unmount and mount.
pub async fn data_survives_remount(d: Arc<dyn VolumeDriver>, ctx: &DriverCtx) {
    let m = d.mounts().expect("mount support");
    let s = made(d.as_ref(), ctx, "dsr").await;
    let p = at(ctx, &s);
    for i in 0..3 {
        m.mount(&s, &p).await.unwrap();
        if ctx.real_io {
            if i > 0 {
                assert_eq!(read(&p), format!("round {}", i - 1));
            }
            write(&p, &format!("round {i}"));
        }
        m.unmount(&s, &p).await.unwrap();
        if ctx.real_io {
            // The data must live in the volume, not in the mount point's directory: after
            // unmount it is not there.
            assert_eq!(
                read(&p),
                "",
                "data visible at {} while unmounted",
                p.display()
            );
        }
    }
    d.destroy(&s).await.unwrap();
}

/// Destroying a mounted volume is refused as `Busy`; after unmount it works.
pub async fn destroy_while_mounted_is_busy(d: Arc<dyn VolumeDriver>, ctx: &DriverCtx) {
    let m = d.mounts().expect("mount support");
    let s = made(d.as_ref(), ctx, "dwm").await;
    let p = at(ctx, &s);
    m.mount(&s, &p).await.unwrap();
    let err = d.destroy(&s).await.unwrap_err();
    assert!(matches!(err, DriverError::Busy { .. }), "{err}");
    assert!(d.exists(&s).await.unwrap());
    m.unmount(&s, &p).await.unwrap();
    d.destroy(&s).await.unwrap();
}

/// Snapshots keep the data of their moment; a copy of one is a new volume with that data.
pub async fn snapshots_round_trip(d: Arc<dyn VolumeDriver>, ctx: &DriverCtx) {
    let m = d.mounts().expect("mount support");
    let sd = d.snapshots().expect("snapshot support");
    let s = made(d.as_ref(), ctx, "snap").await;
    let p = at(ctx, &s);
    m.mount(&s, &p).await.unwrap();
    if ctx.real_io {
        write(&p, "before");
    }
    m.unmount(&s, &p).await.unwrap();
    let s1 = SnapshotName::new("snap-1").unwrap();
    sd.create_snapshot(&s, &s1).await.unwrap();
    assert!(matches!(
        sd.create_snapshot(&s, &s1).await,
        Err(DriverError::AlreadyExists { .. })
    ));
    m.mount(&s, &p).await.unwrap();
    if ctx.real_io {
        write(&p, "after");
    }
    // A snapshot of a mounted volume works too.
    let s2 = SnapshotName::new("snap-2").unwrap();
    sd.create_snapshot(&s, &s2).await.unwrap();
    m.unmount(&s, &p).await.unwrap();
    assert_eq!(
        sd.list_snapshots(&s).await.unwrap(),
        vec![s1.clone(), s2.clone()]
    );
    let mut t = spec(ctx, "snapcopy");
    t.size = s.size;
    sd.copy_snapshot(&s, &s1, &t).await.unwrap();
    assert!(d.exists(&t).await.unwrap());
    let tp = at(ctx, &t);
    m.mount(&t, &tp).await.unwrap();
    if ctx.real_io {
        assert_eq!(read(&tp), "before", "the copy has the snapshot's data");
    }
    m.unmount(&t, &tp).await.unwrap();
    m.mount(&s, &p).await.unwrap();
    if ctx.real_io {
        assert_eq!(read(&p), "after", "the source kept its own data");
    }
    m.unmount(&s, &p).await.unwrap();
    sd.remove_snapshot(&s, &s2).await.unwrap();
    assert_eq!(sd.list_snapshots(&s).await.unwrap(), vec![s1.clone()]);
    assert!(matches!(
        sd.remove_snapshot(&s, &s2).await,
        Err(DriverError::NotFound { .. })
    ));
    // The copy first: copy-on-write backends (RBD clones) keep the source while it has
    // clones.
    d.destroy(&t).await.unwrap();
    d.destroy(&s).await.unwrap();
}

/// Copying a missing snapshot is `NotFound`; copying onto an existing volume is
/// `AlreadyExists`.
pub async fn copy_errors(d: Arc<dyn VolumeDriver>, ctx: &DriverCtx) {
    let sd = d.snapshots().expect("snapshot support");
    let s = made(d.as_ref(), ctx, "cpe").await;
    let t = made(d.as_ref(), ctx, "cpt").await;
    let missing = SnapshotName::new("nope").unwrap();
    let u = spec(ctx, "cpu");
    assert!(matches!(
        sd.copy_snapshot(&s, &missing, &u).await,
        Err(DriverError::NotFound { .. })
    ));
    assert!(!d.exists(&u).await.unwrap(), "a failed copy left storage");
    let s1 = SnapshotName::new("s1").unwrap();
    sd.create_snapshot(&s, &s1).await.unwrap();
    assert!(matches!(
        sd.copy_snapshot(&s, &s1, &t).await,
        Err(DriverError::AlreadyExists { .. })
    ));
    d.destroy(&s).await.unwrap();
    d.destroy(&t).await.unwrap();
}

/// A failing mkfs is reported (the engine then destroys the volume). Drivers that run no
/// mkfs (the fake) leave this case out: the engine's tests inject format faults instead.
pub async fn failed_mkfs_is_an_error(d: Arc<dyn VolumeDriver>, ctx: &DriverCtx) {
    let mut s = spec(ctx, "mkfs");
    s.mkfs = Some(MkfsTemplate::new("falsefs", "/bin/false %").unwrap());
    d.create(&s).await.unwrap();
    let err = d.format(&s).await.unwrap_err();
    assert!(matches!(err, DriverError::Failed { .. }), "{err}");
    // A driver may remove the storage of a failed format itself (Ceph does); either way
    // destroying it afterwards leaves nothing.
    match d.destroy(&s).await {
        Ok(()) | Err(DriverError::NotFound { .. }) => {}
        Err(e) => panic!("destroy after a failed format: {e}"),
    }
    assert!(!d.exists(&s).await.unwrap());
}
