//! An NFS volume's source and mount options (checked at upload and create, used by the
//! NFS driver at mount): volplugin's `options` string and `nfsvers`,
//! plus the parameters users need (`proto`, `port`, `timeo`, `retrans`, `hard`, `sec`,
//! `clientaddr`), validated so that nothing but plain `key` / `key=value` words reach
//! mount(8).

use std::collections::BTreeMap;

/// Driver parameters that become a mount option of the same name.
const NAMED: &[&str] = &["proto", "port", "timeo", "retrans", "sec", "clientaddr"];

/// Every driver parameter the NFS driver reads.
pub const PARAMS: &[&str] = &[
    "options",
    "nfsvers",
    "hard",
    "proto",
    "port",
    "timeo",
    "retrans",
    "sec",
    "clientaddr",
];

/// `host:/export/path`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The server: a host name, an IPv4 address, or an IPv6 address (without brackets).
    pub host: String,
    /// The exported path (absolute, normalised).
    pub path: String,
}

impl Source {
    /// Parses `host:/path` or `[v6addr]:/path`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "NFS source {s:?} {why}; write host:/path, the export on the server (e.g. nfs1:/srv/vols or [fd00::1]:/srv)"
            )
        };
        let (host, path) = if let Some(rest) = s.strip_prefix('[') {
            let (h, p) = rest
                .split_once("]:")
                .ok_or_else(|| bad("has an unclosed ["))?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("has no IPv6 address between [ and ]"));
            }
            (h, p)
        } else {
            let (h, p) = s.split_once(':').ok_or_else(|| bad("names no server"))?;
            let ok = !h.is_empty()
                && h.len() <= 253
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                && !h.starts_with(['-', '.']);
            let dotted = h.chars().all(|c| c.is_ascii_digit() || c == '.');
            if !ok || (dotted && h.parse::<std::net::Ipv4Addr>().is_err()) {
                return Err(bad(
                    "has a server name that is not a host name or an address",
                ));
            }
            (h, p)
        };
        if !path.starts_with('/') {
            return Err(bad("has a path that is not absolute"));
        }
        if path.len() > 1024
            || path.split('/').any(|seg| seg == "." || seg == "..")
            || path.contains("//")
            || path
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ',')
        {
            return Err(bad(
                "has a path with '.', '..', '//', a comma or white space",
            ));
        }
        Ok(Self {
            host: host.to_owned(),
            path: path.to_owned(),
        })
    }

    /// As mount(8) takes it.
    pub fn mount_arg(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.path)
        } else {
            format!("{}:{}", self.host, self.path)
        }
    }
}

/// The NFS version to mount with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// NFSv3 (`mount -t nfs`).
    V3,
    /// NFSv4.x (`mount -t nfs4`); the minor version.
    V4(u8),
}

impl Version {
    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "3" => Ok(Self::V3),
            "4" | "4.0" => Ok(Self::V4(0)),
            "4.1" => Ok(Self::V4(1)),
            "4.2" => Ok(Self::V4(2)),
            other => Err(format!(
                "nfsvers {other:?} is not an NFS version this driver mounts; use 3, 4, 4.1 or 4.2"
            )),
        }
    }

    /// The `-t` type.
    pub fn fs_type(self) -> &'static str {
        match self {
            Self::V3 => "nfs",
            Self::V4(_) => "nfs4",
        }
    }

    /// The `vers=` value.
    pub fn text(self) -> String {
        match self {
            Self::V3 => "3".into(),
            Self::V4(0) => "4".into(),
            Self::V4(m) => format!("4.{m}"),
        }
    }
}

fn check_word(what: &str, w: &str) -> Result<(), String> {
    let ok = !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:/-+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "NFS mount option {what} {w:?} may hold only letters, digits and . _ : / - +"
        ))
    }
}

/// volplugin's `options`: a comma list of `key` or `key=value`. Empty items, a leading or
/// trailing `=`, or more than one `=` are refused (as volplugin did).
pub fn parse_option_list(s: &str) -> Result<BTreeMap<String, Option<String>>, String> {
    let mut out = BTreeMap::new();
    if s.trim().is_empty() {
        return Ok(out);
    }
    for item in s.split(',') {
        let item = item.trim();
        let bad = |why: &str| {
            format!(
                "NFS options {s:?}: item {item:?} {why}; write a comma list of key or key=value (e.g. \"nfsvers=4,hard,timeo=600\")"
            )
        };
        if item.is_empty() {
            return Err(bad("is empty"));
        }
        let (k, v) = match item.split_once('=') {
            None => (item, None),
            Some((k, v)) => {
                if k.is_empty() || v.is_empty() || v.contains('=') {
                    return Err(bad("is not key or key=value"));
                }
                (k, Some(v))
            }
        };
        check_word("name", k)?;
        if let Some(v) = v {
            check_word(k, v)?;
        }
        if out.insert(k.to_owned(), v.map(str::to_owned)).is_some() {
            return Err(bad("repeats an option"));
        }
    }
    Ok(out)
}

/// What `mount` gets: the type, the source and the `-o` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountPlan {
    /// The version (and so the `-t` type).
    pub version: Version,
    /// The server and export.
    pub source: Source,
    /// `-o` options in a fixed order (`vers` first, then by name).
    pub options: Vec<String>,
    /// Whether `clientaddr` still has to be found (NFSv4 without one given).
    pub needs_clientaddr: bool,
}

impl MountPlan {
    /// From a volume's source and its policy's driver parameters.
    pub fn new(source: &str, params: &BTreeMap<String, String>) -> Result<Self, String> {
        let source = Source::parse(source)?;
        let mut opts = match params.get("options") {
            Some(s) => parse_option_list(s)?,
            None => BTreeMap::new(),
        };
        // `nfsvers` (or `vers`) from either place; the named parameter must agree.
        let in_list = opts
            .remove("nfsvers")
            .or_else(|| opts.remove("vers"))
            .flatten();
        let version = match (params.get("nfsvers"), in_list) {
            (Some(a), Some(b)) if *a != b => {
                return Err(format!(
                    "nfsvers is {a:?} but options say {b:?}; give it once"
                ))
            }
            (Some(v), _) => Version::parse(v)?,
            (None, Some(v)) => Version::parse(&v)?,
            (None, None) => Version::V4(0),
        };
        let mut set = |k: &str, v: Option<String>| -> Result<(), String> {
            if let Some(v) = &v {
                check_word(k, v)?;
            }
            match opts.get(k) {
                Some(old) if *old != v => Err(format!(
                    "NFS option {k} is given twice with different values ({old:?} in options, {v:?} as a parameter)"
                )),
                _ => {
                    opts.insert(k.to_owned(), v);
                    Ok(())
                }
            }
        };
        for k in NAMED {
            if let Some(v) = params.get(*k) {
                set(k, Some(v.clone()))?;
            }
        }
        if let Some(h) = params.get("hard") {
            let hard = match h.as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                other => {
                    return Err(format!(
                        "hard {other:?}: write true (hard mounts, the default) or false (soft)"
                    ))
                }
            };
            if opts.contains_key(if hard { "soft" } else { "hard" }) {
                return Err("hard and soft are both set; choose one".into());
            }
            opts.insert(if hard { "hard" } else { "soft" }.into(), None);
        }
        if opts.contains_key("hard") && opts.contains_key("soft") {
            return Err("hard and soft are both set; choose one".into());
        }
        if version == Version::V3 {
            opts.remove("clientaddr");
        }
        // A given clientaddr is used as given (volplugin refused it: its bug 12); a missing
        // one is found later as this host's address toward the server, never the server's.
        let needs_clientaddr =
            matches!(version, Version::V4(_)) && !opts.contains_key("clientaddr");
        let mut options = vec![format!("vers={}", version.text())];
        options.extend(opts.into_iter().map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => k,
        }));
        Ok(Self {
            version,
            source,
            options,
            needs_clientaddr,
        })
    }

    /// Checks a policy's NFS driver parameters (at upload): everything but the source.
    pub fn check_params(params: &BTreeMap<String, String>) -> Result<(), String> {
        if let Some(k) = params.keys().find(|k| !PARAMS.contains(&k.as_str())) {
            return Err(format!(
                "{k:?} is not an NFS driver parameter; the NFS driver reads {}",
                PARAMS.join(", ")
            ));
        }
        Self::new("upload-check:/", params).map(|_| ())
    }

    /// Adds the `clientaddr` found for the server.
    pub fn with_clientaddr(mut self, addr: std::net::IpAddr) -> Self {
        if self.needs_clientaddr {
            self.options.push(format!("clientaddr={addr}"));
            self.needs_clientaddr = false;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn option_lists_as_volplugin_checked_them() {
        for bad in [
            ",",
            "=",
            "part=",
            "foo=bar=baz",
            "a,,b",
            "=x",
            "a;b",
            "a=$(x)",
            "a b",
        ] {
            assert!(parse_option_list(bad).is_err(), "{bad:?} accepted");
        }
        let ok = parse_option_list("sync,rw,test=1").unwrap();
        assert_eq!(ok.get("test"), Some(&Some("1".to_owned())));
        assert_eq!(ok.get("sync"), Some(&None));
    }

    #[test]
    fn sources() {
        assert_eq!(
            Source::parse("nfs1:/srv/v").unwrap().mount_arg(),
            "nfs1:/srv/v"
        );
        assert_eq!(
            Source::parse("[fd00::1]:/srv").unwrap().mount_arg(),
            "[fd00::1]:/srv"
        );
        for bad in [
            "/mnt",
            "host:mnt",
            "300.300.300.300:/mnt",
            "h:/a/../b",
            "h:/a b",
            ":/x",
            "-o:/x",
            "[::1:/x",
        ] {
            assert!(Source::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn plans() {
        let p = MountPlan::new(
            "10.0.0.5:/srv/vols",
            &params(&[("options", "hard,timeo=600"), ("proto", "tcp")]),
        )
        .unwrap();
        assert_eq!(p.version, Version::V4(0));
        assert_eq!(p.options, ["vers=4", "hard", "proto=tcp", "timeo=600"]);
        assert!(p.needs_clientaddr);
        let p = p.with_clientaddr("10.0.0.9".parse().unwrap());
        assert_eq!(p.options.last().unwrap(), "clientaddr=10.0.0.9");
        let p = MountPlan::new(
            "h:/x",
            &params(&[("nfsvers", "3"), ("clientaddr", "1.2.3.4")]),
        )
        .unwrap();
        assert_eq!((p.version.fs_type(), p.needs_clientaddr), ("nfs", false));
        assert_eq!(p.options, ["vers=3"]);
        let p = MountPlan::new(
            "h:/x",
            &params(&[("options", "nfsvers=4.1,clientaddr=10.1.1.1")]),
        )
        .unwrap();
        assert_eq!(p.options, ["vers=4.1", "clientaddr=10.1.1.1"]);
        assert!(!p.needs_clientaddr);
        for (ps, want) in [
            (params(&[("nfsvers", "5")]), "not an NFS version"),
            (
                params(&[("nfsvers", "3"), ("options", "nfsvers=4")]),
                "give it once",
            ),
            (
                params(&[("options", "timeo=5"), ("timeo", "6")]),
                "given twice",
            ),
            (params(&[("options", "hard,soft")]), "choose one"),
            (params(&[("hard", "maybe")]), "write true"),
            (params(&[("sec", "krb5,rw")]), "may hold only"),
        ] {
            let e = MountPlan::new("h:/x", &ps).unwrap_err().to_string();
            assert!(e.contains(want), "{ps:?}: {e}");
        }
    }
}
