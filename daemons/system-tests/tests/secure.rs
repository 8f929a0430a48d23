//! The secure installation end to end (#13 item 8): a real etcd serving TLS with
//! client-certificate auth and etcd users, a real volmaster with TLS, roles and tenants on
//! it, driven by the real volcli with certificates made in the test. Each way in is
//! refused with the right exit status and message, and audited; a policy cannot smuggle a
//! shell command or mount over /etc; an admin can still do everything.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use volcore_system_tests::pki::{Ca, Leaf, Pair};
use volcore_system_tests::{bin, root, run_volcli, target_tmp, uniq, volcli_command};

struct Etcd {
    dir: PathBuf,
    endpoint: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(root().join("scripts/etcd.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Everything the test made: certificates, the TLS etcd, and where volcli's files are.
struct World {
    dir: PathBuf,
    ca: Ca,
    ca_pem: PathBuf,
    etcd_client: Pair,
    etcd: Etcd,
}

fn world() -> World {
    let dir = target_tmp().join(format!("secure-{}", uniq()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = Ca::new("volcore secure test CA");
    let ca_pem = ca.write(&dir, "ca");
    let server = ca.issue(
        &dir,
        "etcd-server",
        Leaf {
            cn: "etcd",
            ips: &["127.0.0.1"],
            dns: &["localhost"],
            server: true,
            ..Leaf::default()
        },
    );
    let out = Command::new("bash")
        .arg(root().join("scripts/etcd.sh"))
        .arg("start-tls")
        .arg(dir.join("etcd"))
        .args([&ca_pem, &server.cert, &server.key])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "starting etcd with TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let endpoint = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let etcd = Etcd {
        dir: dir.join("etcd"),
        endpoint,
    };
    let etcd_client = ca.client(&dir, "volmaster-etcd", &[]);
    // etcd's own users: root with a password, then authentication on.
    let etcdctl = |args: &[&str]| {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=https://{}", etcd.endpoint))
            .arg(format!("--cacert={}", ca_pem.display()))
            .arg(format!("--cert={}", server.cert.display()))
            .arg(format!("--key={}", server.key.display()))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    etcdctl(&["user", "add", "root", "--new-user-password=s3cret-pw"]);
    etcdctl(&["auth", "enable"]);
    std::fs::write(dir.join("etcd-password"), "s3cret-pw\n").unwrap();
    World {
        dir,
        ca,
        ca_pem,
        etcd_client,
        etcd,
    }
}

/// The volmaster command on the TLS etcd: its CA, a client certificate, and etcd user
/// root with the password in `password_file`.
fn on_tls_etcd(w: &World, password_file: &Path) -> Command {
    let mut c = Command::new(bin("volmaster"));
    c.arg("--kv")
        .arg(format!("etcds://{}", w.etcd.endpoint))
        .arg("--kv-cacert")
        .arg(&w.ca_pem)
        .arg("--kv-cert")
        .arg(&w.etcd_client.cert)
        .arg("--kv-key")
        .arg(&w.etcd_client.key)
        .args(["--kv-user", "root", "--kv-password-file"])
        .arg(password_file);
    c
}

/// A volmaster on the TLS etcd with the etcd password in `password_file`; its own TLS
/// with `user:admin` as the bootstrap admin. Returns it and its URL.
fn volmaster(w: &World, password_file: &Path) -> (Proc, String) {
    let cert = w.ca.issue(
        &w.dir,
        "volmaster",
        Leaf {
            cn: "volmaster",
            dns: &["localhost"],
            server: true,
            ..Leaf::default()
        },
    );
    let mut child = on_tls_etcd(w, password_file)
        .args(["--prefix", &format!("/secure-{}", uniq())])
        .args(["--listen", "127.0.0.1:0", "--allow-null-backend"])
        .arg("--tls-cert")
        .arg(&cert.cert)
        .arg("--tls-key")
        .arg(&cert.key)
        .arg("--client-ca")
        .arg(&w.ca_pem)
        .args(["--admin-identity", "user:admin"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let addr = volcore_system_tests::listening(&mut child, "volmaster");
    let port = addr.rsplit(':').next().unwrap();
    (Proc(child), format!("https://localhost:{port}"))
}

/// volcli as `who` (a certificate pair, or none) trusting `ca`.
fn volcli(
    url: &str,
    ca: &Path,
    who: Option<&Pair>,
    args: &[&str],
    stdin: Option<&str>,
) -> (i32, String, String) {
    let mut cmd = volcli_command(url);
    cmd.arg("--cacert").arg(ca);
    if let Some(p) = who {
        cmd.arg("--cert").arg(&p.cert).arg("--key").arg(&p.key);
    }
    run_volcli(cmd, args, stdin)
}

/// Retries `f` (bounded) until it gives exit status 0: roles and tenants reach volmaster
/// through a watch, and volmaster reaches etcd after it starts.
fn eventually_ok(what: &str, mut f: impl FnMut() -> (i32, String, String)) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, err) = f();
        if code == 0 {
            return out;
        }
        assert!(Instant::now() < deadline, "{what}: exit {code}: {err}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_secure_installation_refuses_each_way_in_and_audits_it() {
    let w = world();
    let (_m, url) = volmaster(&w, &w.dir.join("etcd-password"));
    let ca = w.ca_pem.clone();
    let admin = w.ca.client(&w.dir, "admin", &[]);
    let alice = w.ca.client(&w.dir, "alice", &["ops"]);
    let carol = w.ca.client(&w.dir, "carol", &[]);
    let bob = w.ca.client(&w.dir, "bob", &[]);
    let expired = w.ca.issue(
        &w.dir,
        "old",
        Leaf {
            cn: "admin",
            expired: true,
            ..Leaf::default()
        },
    );
    let other = Ca::new("someone else's CA").client(&w.dir, "mallory", &[]);
    let run = |who: Option<&Pair>, args: &[&str], stdin: Option<&str>| {
        volcli(&url, &ca, who, args, stdin)
    };
    let null = r#"{"backend":"null","create":{"size":"10MB"}}"#;

    // The admin (bootstrapped by --admin-identity) sets everything up, over etcd TLS +
    // etcd's user and password.
    eventually_ok("volmaster serves the admin", || {
        run(Some(&admin), &["policy", "upload", "p1"], Some(null))
    });
    let ok = |who: &Pair, args: &[&str], stdin: Option<&str>| {
        let (code, out, err) = run(Some(who), args, stdin);
        assert_eq!(code, 0, "volcli {args:?}: {err}");
        out
    };
    ok(&admin, &["policy", "upload", "p2"], Some(null));
    ok(&admin, &["role", "grant", "group:ops", "operator"], None);
    ok(&admin, &["role", "grant", "user:carol", "reader"], None);
    ok(
        &admin,
        &["tenant", "upload", "blue"],
        Some(r#"{"policies":["p1"],"members":["group:ops","user:carol"]}"#),
    );
    let who = ok(&alice, &["whoami"], None);
    assert_eq!(who.trim(), "alice (groups: ops)");

    // No certificate: 401, exit 5.
    let (code, _, err) = run(None, &["volume", "list", "p1"], None);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("needs a client certificate"), "{err}");
    // A certificate from another CA, and an expired one: 401, saying why.
    let (code, _, err) = run(Some(&other), &["policy", "list"], None);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("not signed by a CA volmaster trusts"), "{err}");
    let (code, _, err) = run(Some(&expired), &["policy", "list"], None);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("expired"), "{err}");
    // An identity without a role, and the wrong role.
    let (code, _, err) = run(Some(&bob), &["policy", "list"], None);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("user:bob has no role") && err.contains("needs role reader"),
        "{err}"
    );
    eventually_ok("alice's role and tenant are served", || {
        run(Some(&alice), &["volume", "create", "p1/v"], None)
    });
    let (code, _, err) = run(Some(&alice), &["global", "upload"], Some("{}"));
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("needs role admin"), "{err}");
    // Another tenant's policy.
    let (code, _, err) = run(Some(&alice), &["volume", "create", "p2/v"], None);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains(
            "policy p2 is in no tenant, so only admins may use it (user:alice's tenants: blue)"
        ),
        "{err}"
    );
    // The reader reads, and only reads.
    ok(&carol, &["volume", "get", "p1/v"], None);
    let (code, _, err) = run(Some(&carol), &["volume", "remove", "p1/v"], None);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("needs role operator"), "{err}");

    // No shell from a policy, no mount root over /etc — refused at upload, even for admins.
    let (code, _, err) = run(
        Some(&admin),
        &["policy", "upload", "pwn"],
        Some(
            r#"{"backend":"local","create":{"size":"10MB"},"filesystems":{"ext4":"id>/tmp/pwn; mkfs.ext4 %"}}"#,
        ),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("shell syntax"), "{err}");
    let (code, _, err) = run(
        Some(&admin),
        &["global", "upload"],
        Some(r#"{"MountPath":"/etc"}"#),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("system directory /etc"), "{err}");

    // Every refusal is audited, with who.
    eventually_ok("the refusals are audited", || {
        let (code, out, err) = run(Some(&admin), &["--json", "audit", "list"], None);
        let entries: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_default();
        let seen = |who: &str, status: u64| {
            entries
                .iter()
                .any(|e| e["who"] == who && e["status"] == status && e["outcome"] == "refused")
        };
        let all = seen("anonymous", 401) && seen("user:bob", 403) && seen("user:alice", 403);
        let why = format!("{err}\n{out}");
        (if code == 0 && all { 0 } else { 1 }, out, why)
    });
    let (code, _, err) = run(Some(&alice), &["audit", "list"], None);
    assert_eq!(code, 5, "the trail is for admins: {err}");

    // The admin can do everything an open volmaster could.
    ok(
        &admin,
        &["global", "upload"],
        Some(r#"{"TTL":30,"Timeout":1,"MountPath":"/mnt/secure"}"#),
    );
    ok(&admin, &["volume", "create", "p2/x"], None);
    let all = ok(&admin, &["volume", "list-all"], None);
    assert!(all.contains("p1/v") && all.contains("p2/x"), "{all}");
    ok(&admin, &["volume", "get", "p2/x"], None);
    ok(&admin, &["use", "list"], None);
    ok(&admin, &["volume", "remove", "p2/x", "--force"], None);
    ok(&admin, &["volume", "remove", "p1/v"], None);
    ok(&admin, &["check", "--repair"], None);
    ok(&admin, &["tenant", "delete", "blue"], None);
    ok(&admin, &["role", "revoke", "user:carol"], None);
    ok(&admin, &["policy", "delete", "p1"], None);
}

/// A wrong etcd password stops volmaster at start, saying that etcd refused it.
#[test]
fn a_wrong_etcd_password_is_reported() {
    let w = world();
    let bad = w.dir.join("wrong-password");
    std::fs::write(&bad, "not-it\n").unwrap();
    let out = on_tls_etcd(&w, &bad)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "volmaster ran with a wrong etcd password"
    );
    assert!(err.contains("authentication failed"), "{err}");
    // And etcds:// without the CA is a usage error naming the flag.
    let out = Command::new(bin("volmaster"))
        .arg("--kv")
        .arg(format!("etcds://{}", w.etcd.endpoint))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--kv-cacert"), "{err}");
}
