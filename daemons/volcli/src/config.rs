//! Where volcli finds volmaster and its TLS files: flags, then environment variables
//! (both through clap), then the config file, then the loopback default.
//!
//! The config file is TOML at `$XDG_CONFIG_HOME/volcore/volcli.toml` (or `--config`):
//!
//! ```toml
//! master = "https://volmaster.example:9005"
//! cacert = "ca.pem"          # relative paths are relative to this file
//! cert = "alice.pem"
//! key = "alice.key"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use volcore_api::TlsFiles;

/// The loopback volmaster of a default installation.
pub const DEFAULT_MASTER: &str = "http://127.0.0.1:9005";

/// The config file's contents.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// volmaster's URL.
    pub master: Option<String>,
    /// The CA that signed volmaster's certificate.
    pub cacert: Option<PathBuf>,
    /// This client's certificate.
    pub cert: Option<PathBuf>,
    /// Its key.
    pub key: Option<PathBuf>,
}

/// The default config file, if the user has a config directory.
pub fn default_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("volcore").join("volcli.toml"))
}

/// Reads the config file: `explicit` must exist; the default may be absent.
pub fn load(explicit: Option<&Path>) -> Result<FileConfig, String> {
    let (path, required) = match explicit {
        Some(p) => (p.to_owned(), true),
        None => match default_path() {
            Some(p) => (p, false),
            None => return Ok(FileConfig::default()),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(FileConfig::default())
        }
        Err(e) => {
            return Err(format!(
                "cannot read the config file {}: {e}",
                path.display()
            ))
        }
    };
    let mut c: FileConfig = toml::from_str(&text).map_err(|e| {
        format!(
            "the config file {} is not valid: {e}(accepted keys: master, cacert, cert, key)",
            path.display()
        )
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    for p in [&mut c.cacert, &mut c.cert, &mut c.key]
        .into_iter()
        .flatten()
    {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
    Ok(c)
}

/// The master URL and TLS files: what the flags or environment gave, else the file's.
pub fn resolve(master: Option<String>, tls: TlsFiles, file: FileConfig) -> (String, TlsFiles) {
    let master = master
        .or(file.master)
        .unwrap_or_else(|| DEFAULT_MASTER.to_owned());
    // The client pair comes from one place: a --cert with the file's key would mix two
    // identities.
    let (cert, key) = if tls.cert.is_some() || tls.key.is_some() {
        (tls.cert, tls.key)
    } else {
        (file.cert, file.key)
    };
    let tls = TlsFiles {
        ca: tls.ca.or(file.cacert),
        cert,
        key,
    };
    (master, tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_and_file_paths_are_relative_to_the_file() {
        let dir = std::env::temp_dir().join(format!("volcli-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("volcli.toml");
        std::fs::write(
            &f,
            "master = \"https://vm:9005\"\ncacert = \"ca.pem\"\ncert = \"/abs/me.pem\"\nkey = \"me.key\"\n",
        )
        .unwrap();
        let file = load(Some(&f)).unwrap();
        assert_eq!(file.cacert, Some(dir.join("ca.pem")));
        assert_eq!(file.cert, Some(PathBuf::from("/abs/me.pem")));
        let (m, t) = resolve(None, TlsFiles::default(), load(Some(&f)).unwrap());
        assert_eq!(m, "https://vm:9005");
        assert_eq!(t.key, Some(dir.join("me.key")));
        let flags = TlsFiles {
            ca: None,
            cert: Some("/flag.pem".into()),
            key: Some("/flag.key".into()),
        };
        let (m, t) = resolve(Some("https://other:1".into()), flags, file);
        assert_eq!(m, "https://other:1");
        assert_eq!(t.cert, Some(PathBuf::from("/flag.pem")));
        assert_eq!(t.ca, Some(dir.join("ca.pem")));
        std::fs::write(&f, "mastr = \"x\"\n").unwrap();
        let e = load(Some(&f)).unwrap_err();
        assert!(e.contains("mastr") && e.contains("accepted keys"), "{e}");
        assert!(load(Some(&dir.join("missing.toml")))
            .unwrap_err()
            .contains("cannot read"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            resolve(None, TlsFiles::default(), FileConfig::default()).0,
            DEFAULT_MASTER
        );
    }
}
