//! Certificates made in the test (rcgen): a CA and the leaf certificates it signs,
//! written as PEM files for the daemons and volcli to read.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};

/// A certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// What a leaf certificate holds.
#[derive(Default)]
pub struct Leaf<'a> {
    /// The subject's common name (the user, for a client).
    pub cn: &'a str,
    /// Organisations (groups, for a client).
    pub orgs: &'a [&'a str],
    /// DNS names.
    pub dns: &'a [&'a str],
    /// IP addresses.
    pub ips: &'a [&'a str],
    /// URI SANs.
    pub uris: &'a [&'a str],
    /// A server certificate (else a client one).
    pub server: bool,
    /// Valid only in 2020.
    pub expired: bool,
}

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct Pair {
    /// The certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Self {
            issuer: CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// Signs `leaf` and writes it as `<dir>/<stem>.pem` and `<dir>/<stem>.key`.
    pub fn issue(&self, dir: &Path, stem: &str, leaf: Leaf<'_>) -> Pair {
        let mut p =
            CertificateParams::new(leaf.dns.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        for ip in leaf.ips {
            p.subject_alt_names
                .push(SanType::IpAddress(ip.parse().unwrap()));
        }
        for uri in leaf.uris {
            p.subject_alt_names
                .push(SanType::URI((*uri).try_into().unwrap()));
        }
        p.distinguished_name.push(DnType::CommonName, leaf.cn);
        for o in leaf.orgs {
            p.distinguished_name.push(DnType::OrganizationName, *o);
        }
        p.extended_key_usages = if leaf.server {
            // etcd's server certificate also serves its own client connections.
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        if leaf.expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let pair = Pair {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&pair.cert, cert.pem()).unwrap();
        std::fs::write(&pair.key, key.serialize_pem()).unwrap();
        pair
    }

    /// A client certificate for `cn` in the groups `orgs`.
    pub fn client(&self, dir: &Path, cn: &str, orgs: &[&str]) -> Pair {
        self.issue(
            dir,
            cn,
            Leaf {
                cn,
                orgs,
                ..Leaf::default()
            },
        )
    }

    /// Writes the CA certificate as `<dir>/<stem>.pem`.
    pub fn write(&self, dir: &Path, stem: &str) -> PathBuf {
        let p = dir.join(format!("{stem}.pem"));
        std::fs::write(&p, self.issuer.pem()).unwrap();
        p
    }
}
