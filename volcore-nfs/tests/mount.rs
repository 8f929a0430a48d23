//! The NFS mount driver's exact mount(8)/umount(8) command lines and its answers, with the
//! recording command runner (these machines have no kernel NFS client), and a mount table
//! read from a file.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use volcore::driver::{MountDriver, VolumeSpec};
use volcore::testing::FakeExec;
use volcore::{DriverError, VolumeRef};
use volcore_nfs::NfsDriver;

fn spec(source: &str, params: &[(&str, &str)]) -> VolumeSpec {
    let mut s = VolumeSpec::bare(
        &VolumeRef::parse("nfsp/v1").unwrap(),
        params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        Duration::from_secs(1),
    );
    s.source = Some(source.to_owned());
    s
}

struct Env {
    exec: Arc<FakeExec>,
    driver: NfsDriver,
    dir: tempfile::TempDir,
}

fn env(mountinfo: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mountinfo"), mountinfo).unwrap();
    let exec = Arc::new(FakeExec::new());
    let driver = NfsDriver::new(exec.clone()).with_mountinfo(dir.path().join("mountinfo"));
    Env { exec, driver, dir }
}

impl Env {
    fn at(&self) -> std::path::PathBuf {
        self.dir.path().join("mnt/nfsp/v1")
    }
}

#[tokio::test]
async fn mounts_v4_with_the_local_address_that_routes_to_the_server() {
    let e = env("");
    let at = e.at();
    // Server on loopback: the address that routes there is 127.0.0.1 — not "the server's
    // address" by accident: a server at 127.0.0.2 still gets clientaddr=127.0.0.1.
    let line = format!(
        "mount -t nfs4 -o vers=4,hard,timeo=600,clientaddr=127.0.0.1 127.0.0.2:/srv/vols {}",
        at.display()
    );
    e.exec.ok(&line, "");
    let m = e
        .driver
        .mount(
            &spec("127.0.0.2:/srv/vols", &[("options", "hard,timeo=600")]),
            &at,
        )
        .await
        .unwrap();
    assert_eq!(m.path, at);
    assert!(at.is_dir());
    e.exec.assert_done();
}

#[tokio::test]
async fn v3_and_a_given_clientaddr_are_used_as_given() {
    let e = env("");
    let at = e.at();
    e.exec.ok(
        &format!(
            "mount -t nfs -o vers=3,proto=tcp,soft nfs1:/export {}",
            at.display()
        ),
        "",
    );
    e.driver
        .mount(
            &spec(
                "nfs1:/export",
                &[("nfsvers", "3"), ("proto", "tcp"), ("hard", "false")],
            ),
            &at,
        )
        .await
        .unwrap();
    e.exec.ok(
        &format!(
            "mount -t nfs4 -o vers=4.2,clientaddr=10.9.9.9 nfs1:/export {}",
            at.display()
        ),
        "",
    );
    e.driver
        .mount(
            &spec(
                "nfs1:/export",
                &[("nfsvers", "4.2"), ("clientaddr", "10.9.9.9")],
            ),
            &at,
        )
        .await
        .unwrap();
    e.exec.assert_done();
}

#[tokio::test]
async fn failures_are_explained_and_a_hung_mount_is_killed() {
    let e = env("");
    let at = e.at();
    let s = spec("127.0.0.1:/nothere", &[("clientaddr", "127.0.0.5")]);
    let line = format!(
        "mount -t nfs4 -o vers=4,clientaddr=127.0.0.5 127.0.0.1:/nothere {}",
        at.display()
    );
    e.exec.fail(
        &line,
        32,
        "mount.nfs4: mounting 127.0.0.1:/nothere failed, reason given by server: No such file or directory\n",
    );
    let err = e.driver.mount(&s, &at).await.unwrap_err().to_string();
    assert!(
        err.contains("export /nothere not found on 127.0.0.1"),
        "{err}"
    );
    e.exec
        .fail(&line, 32, "mount: /x: unknown filesystem type 'nfs4'.\n");
    let err = e.driver.mount(&s, &at).await.unwrap_err().to_string();
    assert!(err.contains("no NFS client"), "{err}");
    e.exec.hang(&line);
    let err = e.driver.mount(&s, &at).await.unwrap_err();
    assert!(
        matches!(err, DriverError::Timeout { op: "mount", .. }),
        "{err}"
    );
    e.exec.assert_done();
}

#[tokio::test]
async fn bad_sources_and_options_never_reach_mount() {
    let e = env("");
    let at = e.at();
    for (src, params) in [
        ("/just/a/path", vec![]),
        ("h:/x", vec![("options", "a=b=c")]),
        ("h:/x", vec![("options", "ro;reboot")]),
        ("h:/x", vec![("clientaddr", "10.0.0.1,rw")]),
    ] {
        assert!(
            e.driver.mount(&spec(src, &params), &at).await.is_err(),
            "{src} {params:?}"
        );
    }
    e.exec.assert_done();
}

#[tokio::test]
async fn mounted_reads_nfs_mounts_and_unmount_falls_back_to_lazy() {
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path().join("mnt/nfsp/v1");
    let table = format!(
        "36 25 0:45 / {} rw,relatime shared:40 - nfs4 127.0.0.1:/srv/vols rw,vers=4.0\n\
         37 25 8:1 / /data rw - ext4 /dev/sda1 rw\n",
        at.display()
    );
    let e = env(&table);
    let got = e.driver.mounted().await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].volume.to_string(), "nfsp/v1");
    // Already mounted and answering: mount only looks.
    let s = spec("127.0.0.1:/srv/vols", &[("clientaddr", "127.0.0.1")]);
    let stat = format!("stat --format=%i {}", at.display());
    e.exec.ok(&stat, "1\n");
    e.driver.mount(&s, &at).await.unwrap();
    // Stale (the export was recreated): detached and mounted again.
    e.exec.fail(
        &stat,
        1,
        &format!("stat: cannot statx '{}': Stale file handle\n", at.display()),
    );
    e.exec.ok(&format!("umount -f -l {}", at.display()), "");
    let mount = format!(
        "mount -t nfs4 -o vers=4,clientaddr=127.0.0.1 127.0.0.1:/srv/vols {}",
        at.display()
    );
    e.exec.ok(&mount, "");
    e.driver.mount(&s, &at).await.unwrap();
    // Hung (the server stopped answering): the same.
    e.exec.hang(&stat);
    e.exec.ok(&format!("umount -f -l {}", at.display()), "");
    e.exec.ok(&mount, "");
    e.driver.mount(&s, &at).await.unwrap();
    // A plain unmount hangs (server gone): lazy, forced unmount.
    e.exec.hang(&format!("umount {}", at.display()));
    e.exec.ok(&format!("umount -f -l {}", at.display()), "");
    e.driver
        .unmount(&spec("127.0.0.1:/srv/vols", &[]), &at)
        .await
        .unwrap();
    // Busy is said as busy.
    e.exec.fail(
        &format!("umount {}", at.display()),
        32,
        "umount: target is busy.\n",
    );
    let err = e
        .driver
        .unmount(&spec("127.0.0.1:/srv/vols", &[]), &at)
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Busy { .. }), "{err}");
    // Not mounted: nothing to do.
    let other = Path::new("/nowhere/nfsp/v2");
    e.driver
        .unmount(&spec("127.0.0.1:/srv/vols", &[]), other)
        .await
        .unwrap();
    e.exec.assert_done();
}

#[test]
fn volplugins_nfs_policies_make_valid_mounts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/volplugin/nfs");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let name = volcore::PolicyName::new(path.file_stem().unwrap().to_str().unwrap()).unwrap();
        let p = volcore::Policy::from_json(&name, &std::fs::read(&path).unwrap()).unwrap();
        let plan = volcore_nfs::options::MountPlan::new("nfs1:/mnt/export", &p.driver)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(plan.options[0].starts_with("vers="), "{plan:?}");
        n += 1;
    }
    assert_eq!(n, 4);
}

#[tokio::test]
async fn probe_tells_check_what_is_wrong() {
    let e = env("");
    let at = e.at();
    let stat = format!("stat --format=%i {}", at.display());
    e.exec.ok(&stat, "1\n");
    assert_eq!(MountDriver::probe(&e.driver, &at).await, Ok(()));
    e.exec.fail(&stat, 1, "stat: Stale file handle\n");
    let why = MountDriver::probe(&e.driver, &at).await.unwrap_err();
    assert!(why.contains("stale"), "{why}");
    e.exec.hang(&stat);
    let why = MountDriver::probe(&e.driver, &at).await.unwrap_err();
    assert!(why.contains("did not return within"), "{why}");
    e.exec.assert_done();
}
