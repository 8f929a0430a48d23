//! TLS with client certificates (rustls): the server configuration from PEM files, the
//! caller's identity from its certificate, and the accept loop that serves the router
//! over TLS with that identity on every request.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::{debug, info, warn};
use volcore_api::Identity;

/// volmaster's certificate, key and the CA its clients' certificates must chain to.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Its certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA certificates that sign client certificates (PEM).
    pub client_ca: PathBuf,
}

/// The caller of a request: its certificate's identity, or none (no certificate, or a
/// plain-HTTP connection on loopback).
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// Who the client certificate names (only a certificate that verified).
    pub identity: Option<Identity>,
    /// The connection was TLS.
    pub tls: bool,
    /// Why the client certificate presented was refused, if it was.
    pub refused: Option<String>,
}

/// The server's client-certificate verifier: it checks, during the handshake, that the
/// client holds the key of the certificate it presents (the handshake signature), but
/// leaves the chain to [`Verifier::check`] after it. With TLS 1.3 a client learns of a
/// refusal in the handshake only after it has sent its request, and often sees just a
/// closed connection; answering an HTTP 401 that says why (expired, another CA) tells it
/// every time. A certificate that fails the check names no identity.
#[derive(Debug)]
struct Lenient(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Lenient {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Decided after the handshake by `Verifier::check`, which names no identity for
        // a chain that fails.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The chain check of client certificates (against `--client-ca`), run on each
/// connection after its handshake.
#[derive(Clone, Debug)]
pub struct Verifier(Arc<dyn ClientCertVerifier>);

impl Verifier {
    /// The caller a connection's peer certificates make.
    pub fn check(&self, chain: Option<&[CertificateDer<'_>]>) -> Caller {
        let Some((leaf, rest)) = chain.and_then(|c| c.split_first()) else {
            return Caller {
                tls: true,
                ..Caller::default()
            };
        };
        match self.0.verify_client_cert(leaf, rest, UnixTime::now()) {
            Ok(_) => Caller {
                identity: identity_of(leaf),
                tls: true,
                refused: None,
            },
            Err(e) => Caller {
                identity: None,
                tls: true,
                refused: Some(refusal(&e)),
            },
        }
    }
}

/// Why a client certificate was refused, in words.
fn refusal(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => {
                format!("it has expired; renew it ({e})")
            }
            C::NotValidYet | C::NotValidYetContext { .. } => {
                format!("it is not valid yet; check the clocks ({e})")
            }
            C::UnknownIssuer | C::BadSignature => format!(
                "it is not signed by a CA volmaster trusts (its --client-ca); use a certificate that CA issued ({e})"
            ),
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => format!(
                "it is not for client authentication (extended key usage clientAuth) ({e})"
            ),
            _ => format!("{e}"),
        },
        other => format!("{other}"),
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// Loads a PEM certificate chain, saying which file held nothing usable.
pub fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{what} {} is not PEM certificates", path.display()))?;
    if certs.is_empty() {
        bail!(
            "{what} {} holds no certificate (expected PEM \"BEGIN CERTIFICATE\")",
            path.display()
        );
    }
    Ok(certs)
}

/// The server configuration: `files.cert`/`files.key` as volmaster's identity, client
/// certificates verified against `files.client_ca`. A client may connect without a
/// certificate (it is then answered 401 by the handlers, with a message, rather than cut
/// off in the handshake); a certificate that does not verify — another CA, expired — ends
/// the handshake with the matching TLS alert.
pub fn server_config(files: &TlsFiles) -> Result<(Arc<ServerConfig>, Verifier)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = load_certs(&files.cert, "--tls-cert")?;
    let key_pem = read(&files.key, "--tls-key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).with_context(|| {
        format!(
            "--tls-key {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            files.key.display()
        )
    })?;
    let mut roots = RootCertStore::empty();
    for ca in load_certs(&files.client_ca, "--client-ca")? {
        roots.add(ca).with_context(|| {
            format!(
                "--client-ca {}: not a CA certificate",
                files.client_ca.display()
            )
        })?;
    }
    let strict = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("building the client-certificate verifier from --client-ca")?;
    let verifier = Arc::new(Lenient(strict.clone()));
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "--tls-key {} does not match --tls-cert {}",
                files.key.display(),
                files.cert.display()
            )
        })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(cfg), Verifier(strict)))
}

/// The identity a verified client certificate names: its subject's common name, and as
/// groups its organisations, organisational units and URI subject alternative names.
pub fn identity_of(cert: &CertificateDer<'_>) -> Option<Identity> {
    let (_, x) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = x.subject();
    let name = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned)?;
    let mut groups: Vec<String> = subject
        .iter_organization()
        .chain(subject.iter_organizational_unit())
        .filter_map(|a| a.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(u) = n {
                groups.push((*u).to_owned());
            }
        }
    }
    groups.sort();
    groups.dedup();
    Some(Identity { name, groups })
}

/// Refuses to serve plain HTTP beyond loopback unless `insecure`: without TLS nobody can
/// tell who is calling, so anyone who can reach the port could do anything.
pub fn check_listen(listen: SocketAddr, tls: bool, insecure: bool) -> Result<()> {
    if tls || is_loopback(listen.ip()) {
        return Ok(());
    }
    if !insecure {
        bail!(
            "--listen {listen} is not a loopback address and volmaster has no TLS: anyone who can reach it could change policies and remove volumes. Give --tls-cert, --tls-key and --client-ca, listen on 127.0.0.1, or pass --insecure to serve plain HTTP anyway"
        );
    }
    warn!(%listen, "serving plain HTTP without authentication beyond loopback (--insecure): anyone who can reach this address can change policies and remove volumes");
    Ok(())
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `app` over TLS on `listener` until `shutdown`, with each request carrying the
/// [`Caller`] of its connection.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    (cfg, verifier): (Arc<ServerConfig>, Verifier),
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let acceptor = TlsAcceptor::from(cfg);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "TCP_NODELAY not set");
        }
        let (acceptor, app, watcher) = (acceptor.clone(), app.clone(), graceful.watcher());
        let verifier = verifier.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    info!(%peer, error = %e, "TLS handshake refused");
                    return;
                }
                Err(_) => {
                    info!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let caller = verifier.check(tls.get_ref().1.peer_certificates());
            if let Some(why) = &caller.refused {
                info!(%peer, reason = %why, "client certificate refused");
            }
            let svc = app.map_request(move |mut req: axum::http::Request<_>| {
                req.extensions_mut().insert(caller.clone());
                req
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(svc));
            if let Err(e) = watcher.watch(conn).await {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        info!("connections still open {DRAIN_TIMEOUT:?} after shutdown began; leaving them");
    }
    Ok(())
}
