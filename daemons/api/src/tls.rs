//! The client side of volmaster's TLS: the CA that signed volmaster's certificate, the
//! client's own certificate and key, and TLS failures told as what they mean.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// TLS files of a client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate(s) (PEM) that volmaster's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// This client's certificate chain (PEM), presented to volmaster.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
}

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsFileError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which flag.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("{what} {path} {why}")]
    Bad {
        /// Which flag.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Files that only work together were given apart.
    #[error("{0}")]
    Incomplete(&'static str),
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bad = |why: String| TlsFileError::Bad {
        what,
        path: path.to_owned(),
        why,
    };
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("is not PEM certificates ({e})")))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no certificate (expected PEM \"BEGIN CERTIFICATE\")".into(),
        ));
    }
    Ok(certs)
}

impl TlsFiles {
    /// Whether any TLS file is set.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// The rustls configuration these files make: volmaster verified against `ca` (and
    /// its name against the URL's host), `cert`/`key` presented when given.
    pub fn client_config(&self) -> Result<ClientConfig, TlsFileError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca = self.ca.as_deref().ok_or(TlsFileError::Incomplete(
            "an https:// volmaster needs --cacert: the CA certificate that signed volmaster's certificate",
        ))?;
        let mut roots = RootCertStore::empty();
        for c in certs(ca, "--cacert")? {
            roots.add(c).map_err(|e| TlsFileError::Bad {
                what: "--cacert",
                path: ca.to_owned(),
                why: format!("is not a usable CA certificate ({e})"),
            })?;
        }
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsFileError::Bad {
                    what: "--cacert",
                    path: ca.to_owned(),
                    why: format!("cannot verify servers ({e})"),
                })?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|_| TlsFileError::Incomplete("no TLS protocol version available"))?
            .with_webpki_verifier(verifier);
        let mut cfg = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = certs(cert, "--cert")?;
                let key_pem = read(key, "--key")?;
                let pk =
                    PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsFileError::Bad {
                        what: "--key",
                        path: key.clone(),
                        why: format!("holds no PEM private key ({e})"),
                    })?;
                builder
                    .with_client_auth_cert(chain, pk)
                    .map_err(|e| TlsFileError::Bad {
                        what: "--key",
                        path: key.clone(),
                        why: format!("does not match --cert {} ({e})", cert.display()),
                    })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsFileError::Incomplete(
                    "--cert and --key go together: give both, or neither",
                ))
            }
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

/// What a failed TLS connection means to the person at the terminal, when the cause is a
/// TLS error somewhere in `err`'s source chain.
pub(crate) fn explain(err: &(dyn std::error::Error + 'static), host: &str) -> Option<String> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(describe(t, host));
        }
        // An io::Error's source() skips the error it wraps (rustls's, often io-in-io):
        // step into it instead.
        cur = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|i| i as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

fn describe(e: &rustls::Error, host: &str) -> String {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(c) => match c {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                "volmaster's certificate is not valid for {host:?}: connect by a name or address the certificate holds, or reissue it with {host} as a subject alternative name ({e})"
            ),
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "volmaster's certificate is not signed by the CA in --cacert: give the CA that issued it ({e})"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!(
                "volmaster's certificate has expired: renew it ({e})"
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => format!(
                "volmaster's certificate is not valid yet: check the clocks ({e})"
            ),
            _ => format!("volmaster's certificate is refused: {e}"),
        },
        E::AlertReceived(a) => match a {
            AlertDescription::CertificateExpired => {
                "volmaster refused this client's certificate: it has expired; renew --cert".into()
            }
            AlertDescription::UnknownCA | AlertDescription::BadCertificate | AlertDescription::DecryptError => {
                "volmaster refused this client's certificate: it is not signed by a CA volmaster trusts (its --client-ca); use a certificate that CA issued".into()
            }
            AlertDescription::CertificateRevoked => {
                "volmaster refused this client's certificate: it has been revoked".into()
            }
            AlertDescription::CertificateRequired => {
                "volmaster requires a client certificate: give --cert and --key".into()
            }
            other => format!("volmaster ended the TLS handshake: {other:?}"),
        },
        other => format!("TLS: {other}"),
    }
}
