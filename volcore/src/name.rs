//! Validated names: policies, volumes, volume references (`policy/volume`), hosts and
//! snapshots.
//!
//! Every path, key and storage image name in volcore is derived only from these types, so
//! a request that passed the edge cannot reach outside its paths.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest policy, volume or snapshot name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest host label, in bytes (a DNS name).
pub const MAX_HOST_LEN: usize = 253;

/// Why a name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("{what} name is empty")]
    Empty {
        /// What kind of name ("policy", "volume", ...).
        what: &'static str,
    },
    /// The name is longer than allowed.
    #[error("{what} name {name:?} is {len} bytes long; the limit is {max}")]
    TooLong {
        /// What kind of name.
        what: &'static str,
        /// The offending name (cut to a readable length).
        name: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name contains a character that is not allowed.
    #[error("{what} name {name:?} contains {ch:?} at byte {at}; {rule}")]
    BadChar {
        /// What kind of name.
        what: &'static str,
        /// The offending name.
        name: String,
        /// The first offending character.
        ch: char,
        /// Its byte offset.
        at: usize,
        /// The rule, in words.
        rule: &'static str,
    },
    /// A volume reference is not of the form `policy/volume`.
    #[error("volume reference {input:?} must be of the form policy/volume (exactly one '/')")]
    NotAReference {
        /// The offending input.
        input: String,
    },
}

const NAME_RULE: &str =
    "names start with a letter or digit and contain only letters, digits, '_' and '-'";
const HOST_RULE: &str =
    "host labels start with a letter or digit and contain only letters, digits, '.', '_' and '-'";

fn shorten(s: &str) -> String {
    if s.len() <= 80 {
        return s.to_owned();
    }
    let mut end = 80;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn check(
    what: &'static str,
    s: &str,
    max: usize,
    extra: &[char],
    rule: &'static str,
) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { what });
    }
    for (at, ch) in s.char_indices() {
        let ok = ch.is_ascii_alphanumeric()
            || (at > 0 && (ch == '_' || ch == '-' || extra.contains(&ch)));
        if !ok {
            return Err(NameError::BadChar {
                what,
                name: shorten(s),
                ch,
                at,
                rule,
            });
        }
    }
    if s.len() > max {
        return Err(NameError::TooLong {
            what,
            name: shorten(s),
            len: s.len(),
            max,
        });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $what:literal, $max:expr, $extra:expr, $rule:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $ty(String);

        impl $ty {
            /// Validates `s` and wraps it.
            pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                check($what, &s, $max, $extra, $rule)?;
                Ok(Self(s))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $ty {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A policy name: non-empty, at most 64 bytes, `[A-Za-z0-9][A-Za-z0-9_-]*`.
    PolicyName, "policy", MAX_NAME_LEN, &[], NAME_RULE
);
name_type!(
    /// A volume name within a policy: same rules as [`PolicyName`].
    VolumeName, "volume", MAX_NAME_LEN, &[], NAME_RULE
);
name_type!(
    /// A snapshot name: same rules as [`PolicyName`].
    SnapshotName, "snapshot", MAX_NAME_LEN, &[], NAME_RULE
);
name_type!(
    /// A tenant name: same rules as [`PolicyName`].
    TenantName, "tenant", MAX_NAME_LEN, &[], NAME_RULE
);
name_type!(
    /// A host label as recorded in locks and mount records: a DNS-like name of at most
    /// 253 bytes, `[A-Za-z0-9][A-Za-z0-9._-]*`.
    HostName, "host", MAX_HOST_LEN, &['.'], HOST_RULE
);

impl HostName {
    /// This machine's host name as a host label (`/proc/sys/kernel/hostname`), or
    /// `localhost` when it cannot be read or is not a valid label.
    pub fn this_host() -> Self {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .and_then(|h| Self::new(h.trim()).ok())
            .unwrap_or_else(|| Self("localhost".to_owned()))
    }
}

/// A reference to one volume: `policy/volume`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VolumeRef {
    /// The policy the volume was created from.
    pub policy: PolicyName,
    /// The volume's name within the policy.
    pub volume: VolumeName,
}

impl VolumeRef {
    /// Builds a reference from validated parts.
    pub fn new(policy: PolicyName, volume: VolumeName) -> Self {
        Self { policy, volume }
    }

    /// Parses `policy/volume`: exactly one `/`, both parts valid names.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let mut parts = s.split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(p), Some(v), None) => Ok(Self {
                policy: PolicyName::new(p)?,
                volume: VolumeName::new(v)?,
            }),
            _ => Err(NameError::NotAReference { input: shorten(s) }),
        }
    }
}

impl fmt::Display for VolumeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.policy, self.volume)
    }
}

impl fmt::Debug for VolumeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}/{}\"", self.policy, self.volume)
    }
}

impl FromStr for VolumeRef {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::parse(s)
    }
}

impl Serialize for VolumeRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for VolumeRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_plain_names() {
        for ok in [
            "a",
            "policy1",
            "my-vol",
            "my_vol",
            "A9",
            "0abc",
            &"x".repeat(64),
        ] {
            PolicyName::new(ok).unwrap();
            VolumeName::new(ok).unwrap();
        }
    }

    #[test]
    fn error_names_the_offending_character() {
        let err = VolumeName::new("db.1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "volume name \"db.1\" contains '.' at byte 2; names start with a letter or digit and contain only letters, digits, '_' and '-'"
        );
        let err = PolicyName::new("a b").unwrap_err();
        assert!(
            matches!(err, NameError::BadChar { ch: ' ', at: 1, .. }),
            "{err}"
        );
        let err = PolicyName::new("é").unwrap_err();
        assert!(
            matches!(
                err,
                NameError::BadChar {
                    ch: 'é', at: 0, ..
                }
            ),
            "{err}"
        );
        let err = PolicyName::new("-x").unwrap_err();
        assert!(
            matches!(err, NameError::BadChar { ch: '-', at: 0, .. }),
            "{err}"
        );
        let err = PolicyName::new("a\0").unwrap_err();
        assert!(matches!(err, NameError::BadChar { ch: '\0', .. }), "{err}");
    }

    #[test]
    fn rejects_path_tricks() {
        for bad in ["..", ".", "a/b", "/", "a..b", "", &"x".repeat(65)] {
            assert!(PolicyName::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn volume_ref_needs_exactly_one_slash() {
        // volplugin's SplitName cases.
        for bad in [
            "foo",
            "foo/",
            "/foo/bar",
            "foo/bar/",
            "foo/bar/quux",
            "/",
            "",
        ] {
            assert!(VolumeRef::parse(bad).is_err(), "{bad:?} accepted");
        }
        let r = VolumeRef::parse("policy-1/vol_2").unwrap();
        assert_eq!(r.policy.as_str(), "policy-1");
        assert_eq!(r.volume.as_str(), "vol_2");
        assert_eq!(r.to_string(), "policy-1/vol_2");
        // volplugin accepted periods here and failed later; we reject at the edge.
        assert!(VolumeRef::parse("policy.with.periods/x").is_err());
        let err = VolumeRef::parse("foo").unwrap_err();
        assert_eq!(
            err.to_string(),
            "volume reference \"foo\" must be of the form policy/volume (exactly one '/')"
        );
    }

    #[test]
    fn host_names_allow_dots() {
        HostName::new("host-a.example.com").unwrap();
        assert!(HostName::new(".hidden").is_err());
        assert!(HostName::new("a/b").is_err());
    }

    #[test]
    fn serde_validates() {
        let r: VolumeRef = serde_json::from_str("\"p/v\"").unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"p/v\"");
        assert!(serde_json::from_str::<PolicyName>("\"../etc\"").is_err());
    }

    proptest! {
        #[test]
        fn every_valid_name_is_accepted(s in "[A-Za-z0-9][A-Za-z0-9_-]{0,63}") {
            prop_assert!(PolicyName::new(s.clone()).is_ok());
            prop_assert!(VolumeName::new(s.clone()).is_ok());
            let r = format!("{s}/{s}");
            prop_assert_eq!(VolumeRef::parse(&r).unwrap().to_string(), r);
        }

        #[test]
        fn every_invalid_character_is_rejected(
            prefix in "[A-Za-z0-9][A-Za-z0-9_-]{0,20}",
            bad in any::<char>().prop_filter("invalid", |c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')),
            suffix in "[A-Za-z0-9_-]{0,20}",
        ) {
            let s = format!("{prefix}{bad}{suffix}");
            match PolicyName::new(s.clone()) {
                Err(NameError::BadChar { ch, at, .. }) => {
                    prop_assert_eq!(ch, bad);
                    prop_assert_eq!(at, prefix.len());
                }
                other => prop_assert!(false, "{:?} gave {:?}", s, other),
            }
        }

        #[test]
        fn arbitrary_strings_never_panic(s in any::<String>()) {
            let _ = PolicyName::new(s.clone());
            let _ = VolumeRef::parse(&s);
            let _ = HostName::new(s);
        }
    }
}
