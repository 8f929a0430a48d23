//! volmaster over TLS with client certificates, in-process on loopback, with a CA and
//! certificates made in the test (rcgen): who a certificate names, and each way a
//! connection is refused, told as what it means by the typed client (#13 item 1).

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::path::PathBuf;
use std::sync::Arc;

use std::collections::BTreeMap;
use std::time::Duration;
use volcore_system_tests::pki::{Ca, Leaf, Pair};

use volcore::{
    Drivers, HostName, KvStore, MemKv, PolicyName, Role, Subject, TenantName, VolumeRef,
};
use volcore_api::{Client, ClientError, ErrorCode, Identity, TlsFiles};
use volmaster::tls::TlsFiles as ServerTls;
use volmaster::{serve, MasterConfig, MasterDeps};

struct Master {
    url: String,
    ca: PathBuf,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Master {
    fn client(&self, cert: Option<Pair>) -> Client {
        self.client_at(&self.url, cert)
    }

    fn client_at(&self, url: &str, cert: Option<Pair>) -> Client {
        let (cert, key) = cert.map(|p| (p.cert, p.key)).unzip();
        Client::with_tls(
            url,
            &TlsFiles {
                ca: Some(self.ca.clone()),
                cert,
                key,
            },
        )
        .unwrap()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

/// A volmaster serving TLS on 127.0.0.1, reached as `localhost`, the one name its
/// certificate holds.
async fn master(ca: &Ca) -> Master {
    master_with(ca, Vec::new()).await
}

async fn master_with(ca: &Ca, admins: Vec<Subject>) -> Master {
    let dir = tempfile::tempdir().unwrap();
    let Pair { cert, key } = ca.issue(
        dir.path(),
        "server",
        Leaf {
            cn: "volmaster",
            dns: &["localhost"],
            server: true,
            ..Leaf::default()
        },
    );
    let ca_file = ca.write(dir.path(), "ca");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let kv: Arc<dyn KvStore> = Arc::new(MemKv::new());
    let cfg = MasterConfig {
        listen: addr,
        kv_spec: "memory:".into(),
        prefix: "/volcore".into(),
        host: HostName::new("tls-test").unwrap(),
        allow_null_backend: true,
        tls: Some(ServerTls {
            cert,
            key,
            client_ca: ca_file.clone(),
        }),
        admin_identities: admins,
        audit_keep: volmaster::DEFAULT_AUDIT_KEEP,
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        cfg,
        MasterDeps {
            kv,
            drivers: Drivers::new(),
        },
        listener,
        async {
            let _ = rx.await;
        },
    ));
    // Ready: it has its store, its lease and the role map.
    let probe = Client::with_tls(
        &format!("https://localhost:{}", addr.port()),
        &TlsFiles {
            ca: Some(ca_file.clone()),
            ..TlsFiles::default()
        },
    )
    .unwrap();
    for _ in 0..200 {
        if probe.ready().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Master {
        url: format!("https://localhost:{}", addr.port()),
        ca: ca_file,
        dir,
        stop: Some(tx),
        task,
    }
}

fn tls_message(e: ClientError) -> String {
    match e {
        ClientError::Tls { message, .. } => message,
        other => panic!("not a TLS failure: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_name_the_caller_and_bad_ones_are_refused_with_the_reason() {
    let ca = Ca::new("volcore test CA");
    let m = master(&ca).await;
    let d = m.dir.path();
    let alice = ca.issue(
        d,
        "alice",
        Leaf {
            cn: "alice",
            orgs: &["ops"],
            uris: &["spiffe://volcore/tenant/blue"],
            ..Leaf::default()
        },
    );
    // The identity is the subject's CN, with O and URI SANs as groups.
    let who = m.client(Some(alice.clone())).whoami().await.unwrap();
    assert!(who.tls);
    assert_eq!(
        who.identity,
        Some(Identity {
            name: "alice".into(),
            groups: vec!["ops".into(), "spiffe://volcore/tenant/blue".into()],
        })
    );
    // The API works over TLS like over plain HTTP.
    assert_eq!(
        m.client(Some(alice.clone())).health().await.unwrap().status,
        "ok"
    );
    // No certificate: the handshake succeeds and the caller is anonymous (the handlers
    // answer it; roles decide what it may do).
    let anon = m.client(None).whoami().await.unwrap();
    assert_eq!((anon.identity, anon.tls), (None, true));

    // A certificate from another CA, and an expired one: they name nobody (whoami is
    // anonymous), and anything that needs a role is a 401 that says why, every time
    // (volmaster decides after the handshake rather than cutting the connection).
    let other = Ca::new("someone else's CA");
    let mallory = other.issue(
        d,
        "mallory",
        Leaf {
            cn: "mallory",
            ..Leaf::default()
        },
    );
    let c = m.client(Some(mallory));
    assert_eq!(c.whoami().await.unwrap().identity, None);
    let (st, code, msg) = api_error(c.policies().await.unwrap_err());
    assert_eq!((st, code), (401, ErrorCode::Unauthenticated), "{msg}");
    assert!(
        msg.contains(
            "refused this client's certificate: it is not signed by a CA volmaster trusts"
        ),
        "{msg}"
    );
    // An expired certificate from the right CA.
    let old = ca.issue(
        d,
        "old",
        Leaf {
            cn: "old",
            expired: true,
            ..Leaf::default()
        },
    );
    let (st, _, e) = api_error(m.client(Some(old)).policies().await.unwrap_err());
    assert_eq!(st, 401, "{e}");
    assert!(e.contains("expired"), "{e}");
    // volmaster's certificate does not name the host connected to.
    let url = m.url.replace("localhost", "127.0.0.1");
    let e = tls_message(
        m.client_at(&url, Some(alice.clone()))
            .whoami()
            .await
            .unwrap_err(),
    );
    assert!(e.contains("not valid for \"127.0.0.1\""), "{e}");
    // The client does not trust volmaster's CA.
    let wrong_ca = other.write(d, "other-ca");
    let c = Client::with_tls(
        &m.url,
        &TlsFiles {
            ca: Some(wrong_ca),
            ..TlsFiles::default()
        },
    )
    .unwrap();
    let e = tls_message(c.whoami().await.unwrap_err());
    assert!(e.contains("not signed by the CA in --cacert"), "{e}");
    m.stop().await;
}

#[tokio::test]
async fn bad_tls_files_are_refused_with_the_file_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let https = "https://localhost:9005";
    let e = Client::with_tls(https, &TlsFiles::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs --cacert"), "{e}");
    let e = Client::with_tls(
        https,
        &TlsFiles {
            ca: Some(junk.clone()),
            ..TlsFiles::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("--cacert") && e.contains("junk.pem") && e.contains("no certificate"),
        "{e}"
    );
    let ca = Ca::new("ca");
    let ca_file = ca.write(dir.path(), "ca");
    let e = Client::with_tls(
        https,
        &TlsFiles {
            ca: Some(ca_file.clone()),
            cert: Some(ca_file.clone()),
            key: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("--cert and --key go together"), "{e}");
    let e = Client::with_tls(
        https,
        &TlsFiles {
            ca: Some(ca_file.clone()),
            cert: Some(ca_file.clone()),
            key: Some(dir.path().join("missing.key")),
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("cannot read --key") && e.contains("missing.key"),
        "{e}"
    );
    // The server side: a key that is not PEM stops volmaster at start.
    let e = volmaster::tls::server_config(&ServerTls {
        cert: ca_file.clone(),
        key: junk,
        client_ca: ca_file,
    })
    .unwrap_err();
    assert!(format!("{e:#}").contains("--tls-key"), "{e:#}");
}

#[test]
fn plain_http_beyond_loopback_needs_insecure() {
    use volmaster::tls::check_listen;
    let lo = "127.0.0.1:9005".parse().unwrap();
    let lo6 = "[::1]:9005".parse().unwrap();
    let any = "0.0.0.0:9005".parse().unwrap();
    assert!(check_listen(lo, false, false).is_ok());
    assert!(check_listen(lo6, false, false).is_ok());
    let e = check_listen(any, false, false).unwrap_err().to_string();
    assert!(e.contains("--insecure") && e.contains("--tls-cert"), "{e}");
    assert!(check_listen(any, false, true).is_ok());
    assert!(check_listen(any, true, false).is_ok());
}

fn api_error(e: ClientError) -> (u16, ErrorCode, String) {
    match e {
        ClientError::Api {
            status,
            code,
            message,
        } => (status, code, message),
        other => panic!("not an API error: {other:?}"),
    }
}

/// Waits (bounded) until `f` holds: role and tenant changes reach volmaster by a watch.
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} never held");
}

/// Roles and tenants (#13 items 2-3): the bootstrap admin grants roles and makes a
/// tenant; an operator acts inside its tenant only, a reader only reads, an identity
/// without a role and a caller without a certificate are refused, each with a message
/// that names the role or tenant it needed; a revocation takes effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_tenants_decide_what_each_identity_may_do() {
    let ca = Ca::new("volcore test CA");
    let m = master_with(&ca, vec![Subject::user("root").unwrap()]).await;
    let d = m.dir.path();
    let cert = |cn: &'static str, orgs: &'static [&'static str]| {
        ca.issue(
            d,
            cn,
            Leaf {
                cn,
                orgs,
                ..Leaf::default()
            },
        )
    };
    let root = m.client(Some(cert("root", &[])));
    let alice = m.client(Some(cert("alice", &["ops"])));
    let carol = m.client(Some(cert("carol", &[])));
    let bob = m.client(Some(cert("bob", &[])));
    let anon = m.client(None);
    let null = br#"{"backend":"null","create":{"size":"10MB"}}"#;
    for p in ["p1", "p2"] {
        let p = PolicyName::new(p).unwrap();
        eventually("the bootstrap admin is served", async || {
            root.upload_policy(&p, null.to_vec()).await.is_ok()
        })
        .await;
    }
    root.grant_role(&Subject::group("ops").unwrap(), Role::Operator)
        .await
        .unwrap();
    root.grant_role(&Subject::user("carol").unwrap(), Role::Reader)
        .await
        .unwrap();
    let blue = TenantName::new("blue").unwrap();
    root.put_tenant(
        &blue,
        br#"{"policies":["p1"],"members":["group:ops","user:carol"]}"#.to_vec(),
    )
    .await
    .unwrap();
    root.put_tenant(
        &TenantName::new("red").unwrap(),
        br#"{"policies":["p2"],"members":["user:bob"]}"#.to_vec(),
    )
    .await
    .unwrap();
    let no = BTreeMap::new();
    let v1 = VolumeRef::parse("p1/v").unwrap();
    let v2 = VolumeRef::parse("p2/v").unwrap();
    // The operator (through its group) creates in its tenant…
    eventually("alice's role and tenant are served", async || {
        alice.create(&v1, &no).await.is_ok()
    })
    .await;
    // …and not outside it.
    let (st, code, msg) = api_error(alice.create(&v2, &no).await.unwrap_err());
    assert_eq!((st, code), (403, ErrorCode::Forbidden), "{msg}");
    assert!(
        msg.contains("policy p2 is in none of user:alice's tenants: it needs tenant red (user:alice's tenants: blue)"),
        "{msg}"
    );
    // Admin-only operations name the role they need.
    let (st, _, msg) = api_error(alice.set_global(b"{}".to_vec()).await.unwrap_err());
    assert_eq!(st, 403);
    assert!(
        msg.contains("user:alice has role operator; PUT /v1/global needs role admin"),
        "{msg}"
    );
    let (st, _, msg) = api_error(alice.volumes(None).await.unwrap_err());
    assert_eq!(st, 403, "{msg}");
    assert!(msg.contains("listing every volume"), "{msg}");
    let force = volcore_api::RemoveOptions {
        force: true,
        timeout: None,
    };
    let (st, _, msg) = api_error(alice.remove(&v1, force).await.unwrap_err());
    assert_eq!(st, 403, "{msg}");
    // Lists hold only what the caller's tenants hold.
    let names: Vec<String> = alice
        .policies()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name.to_string())
        .collect();
    assert_eq!(names, ["p1"]);
    assert_eq!(alice.volumes(Some(&v1.policy)).await.unwrap().len(), 1);
    // The reader reads and does not write.
    assert_eq!(carol.volume(&v1).await.unwrap().volume.name, v1.volume);
    let (st, _, msg) = api_error(carol.remove(&v1, Default::default()).await.unwrap_err());
    assert_eq!(st, 403);
    assert!(msg.contains("needs role operator"), "{msg}");
    assert_eq!(carol.tenant(&blue).await.unwrap().policies.len(), 1);
    // No role at all, and no certificate at all.
    let (st, _, msg) = api_error(bob.policies().await.unwrap_err());
    assert_eq!(st, 403);
    assert!(
        msg.contains("user:bob has no role") && msg.contains("needs role reader"),
        "{msg}"
    );
    let (st, code, msg) = api_error(anon.volume(&v1).await.unwrap_err());
    assert_eq!((st, code), (401, ErrorCode::Unauthenticated), "{msg}");
    assert!(msg.contains("needs a client certificate"), "{msg}");
    // The admin sees everything.
    assert_eq!(root.volumes(None).await.unwrap().len(), 1);
    assert_eq!(root.roles().await.unwrap().bindings.len(), 2);
    // Refusals and changes are audited, with who and the outcome.
    eventually("the audit trail has the refusals", async || {
        let Ok(trail) = root.audit(Some("1h"), None).await else {
            return false;
        };
        let has = |who: &str, method: &str, status: u16, outcome: &str| {
            trail.iter().any(|e| {
                e.who == who && e.method == method && e.status == status && e.outcome == outcome
            })
        };
        has("user:alice", "POST", 403, "refused")
            && has("user:alice", "POST", 201, "ok")
            && has("anonymous", "GET", 401, "refused")
            && has("user:bob", "GET", 403, "refused")
            && has("user:root", "PUT", 200, "ok")
    })
    .await;
    let (st, _, _) = api_error(alice.audit(None, None).await.unwrap_err());
    assert_eq!(st, 403, "the trail is for admins");
    // A maintenance session on a tenant's volume cannot be renewed or ended from
    // another tenant, even by an operator who learns its id (ids are store leases).
    let t = Duration::from_secs(10);
    let session = alice
        .begin_maintenance(
            &volcore_api::types::MaintenanceRequest {
                volume: "p1/v".into(),
                host: "h1".into(),
                ttl: Some("10s".into()),
                wait: Some("5s".into()),
            },
            t,
        )
        .await
        .unwrap()
        .session;
    root.grant_role(&Subject::user("bob").unwrap(), Role::Operator)
        .await
        .unwrap();
    eventually("bob's role is served", async || {
        bob.policies().await.is_ok()
    })
    .await;
    for e in [
        bob.renew_maintenance(&session, t)
            .await
            .map(drop)
            .unwrap_err(),
        bob.end_maintenance(&session, t).await.unwrap_err(),
    ] {
        let (st, _, msg) = api_error(e);
        assert_eq!(st, 403, "{msg}");
        assert!(msg.contains("needs tenant blue"), "{msg}");
    }
    alice.end_maintenance(&session, t).await.unwrap();
    // A revocation is in force once volmaster has seen it.
    root.revoke_role(&Subject::group("ops").unwrap())
        .await
        .unwrap();
    eventually("alice's role is gone", async || {
        alice
            .create(&VolumeRef::parse("p1/w").unwrap(), &no)
            .await
            .is_err_and(|e| e.status() == Some(403))
    })
    .await;
    m.stop().await;
}
