//! mount(8) and umount(8) failures in words an operator can act on — never a bare
//! "exit status 32".

use volcore::exec::Output;
use volcore::DriverError;

use crate::options::MountPlan;

/// What mount(8)'s exit status means (its man page).
fn status_meaning(code: i32) -> &'static str {
    match code {
        1 => "incorrect invocation or permissions",
        2 => "system error",
        4 => "internal mount bug",
        8 => "interrupted",
        16 => "cannot update the mount table",
        32 => "mount failure",
        64 => "some mount succeeded",
        _ => "unknown status",
    }
}

/// Why a mount of `plan` failed, from mount(8)'s status and message.
pub fn mount_failed(plan: &MountPlan, what: String, out: &Output) -> DriverError {
    let msg = out.stderr.trim();
    let low = msg.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| low.contains(w));
    let (host, path, vers) = (&plan.source.host, &plan.source.path, plan.version.text());
    let why = if has(&[
        "unknown filesystem type",
        "no such device",
        "mount.nfs: not found",
        "bad option; for several filesystems",
    ]) {
        "this host has no NFS client: install nfs-common and load the nfs kernel module (modprobe nfs)".to_owned()
    } else if has(&[
        "connection refused",
        "no route to host",
        "network is unreachable",
        "timed out",
        "host is down",
        "portmap query failed",
        "unable to receive",
        "program not registered",
        "name or service not known",
        "failed to resolve",
    ]) {
        format!("NFS server {host} is unreachable from this host (is it running, and are ports 2049 and, for NFSv3, 111 open to this host?)")
    } else if has(&[
        "requested nfs version or transport protocol is not supported",
        "protocol not supported",
        "version not supported",
    ]) {
        format!("NFS server {host} does not serve NFS version {vers} over this transport; set the policy's nfsvers (3, 4, 4.1, 4.2) or proto to one it serves")
    } else if has(&[
        "access denied",
        "permission denied",
        "operation not permitted",
    ]) {
        format!("permission denied: {host} does not export {path} to this host, or refuses its credentials; check the export's client list and sec= on the server")
    } else if has(&["no such file or directory", "does not exist"]) {
        format!("export {path} not found on {host}; check the path (showmount -e {host} lists the exports of an NFSv3 server)")
    } else if has(&["stale file handle"]) {
        format!("the server's handle for {path} is stale (the export was recreated); unmount and mount again")
    } else {
        format!(
            "mount(8) exit status {} ({})",
            out.status,
            status_meaning(out.status)
        )
    };
    let detail = if msg.is_empty() {
        why
    } else {
        format!("{why} — mount said: {msg}")
    };
    DriverError::failed("mount", what, detail)
}

/// Why an unmount failed.
pub fn unmount_failed(what: String, out: &Output) -> DriverError {
    let msg = out.stderr.trim();
    if msg.to_ascii_lowercase().contains("target is busy") {
        return DriverError::Busy {
            what,
            detail: format!("a process still uses the mount ({msg}); stop the containers using it"),
        };
    }
    DriverError::failed(
        "unmount",
        what,
        format!(
            "umount(8) exit status {} ({}): {msg}",
            out.status,
            status_meaning(out.status)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(status: i32, stderr: &str) -> Output {
        Output {
            status,
            stdout: String::new(),
            stderr: stderr.to_owned(),
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        let plan = MountPlan::new("nfs1:/srv/v", &Default::default()).unwrap();
        for (stderr, want) in [
            ("mount: /m: unknown filesystem type 'nfs4'.", "no NFS client"),
            ("mount.nfs4: Connection refused", "unreachable"),
            ("mount.nfs4: Connection timed out", "unreachable"),
            ("mount.nfs4: access denied by server while mounting nfs1:/srv/v", "permission denied"),
            ("mount.nfs4: mounting nfs1:/srv/v failed, reason given by server: No such file or directory", "not found on nfs1"),
            ("mount.nfs4: Protocol not supported", "does not serve NFS version 4"),
            ("mount.nfs4: Stale file handle", "stale"),
            ("", "exit status 32 (mount failure)"),
        ] {
            let e = mount_failed(&plan, "p/v".into(), &out(32, stderr)).to_string();
            assert!(e.contains(want), "{stderr:?}: {e}");
            assert!(!e.ends_with("exit status 32"), "{e}");
        }
        let e = unmount_failed("p/v".into(), &out(32, "umount: /m: target is busy."));
        assert!(matches!(e, DriverError::Busy { .. }), "{e}");
    }
}
