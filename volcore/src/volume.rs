//! Volume records: a policy as it was when the volume was made, plus the create options.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::name::{PolicyName, VolumeName, VolumeRef};
use crate::policy::{
    BackendKind, Backends, CreateSpec, Frequency, MkfsTemplate, Policy, PolicyError, RuntimeOptions,
};
use crate::size::Size;

/// The create option keys volplugin accepted (`docker volume create -o k=v`,
/// `volcli volume create --opt k=v`).
pub const OPTION_KEYS: &[&str] = &[
    "size",
    "filesystem",
    "unlocked",
    "snapshots",
    "snapshots.frequency",
    "snapshots.keep",
    "rate-limit.read.bps",
    "rate-limit.write.bps",
    "rate-limit.read.iops",
    "rate-limit.write.iops",
    "mount",
    "ephemeral",
];

/// A volume record as stored at `volumes/<policy>/<volume>`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Volume {
    /// The policy it was created from.
    pub policy: PolicyName,
    /// Its name within the policy.
    pub name: VolumeName,
    /// Backends, copied from the policy.
    pub backends: Backends,
    /// Backend parameters, copied from the policy.
    pub driver: BTreeMap<String, String>,
    /// No cross-host exclusivity.
    pub unlocked: bool,
    /// `docker volume rm` destroys the storage.
    #[serde(default, rename = "destroy-on-remove")]
    pub destroy_on_remove: bool,
    /// Size and filesystem after options.
    pub create: CreateSpec,
    /// Filesystem templates, copied from the policy.
    pub filesystems: BTreeMap<String, MkfsTemplate>,
    /// Runtime options the volume started with (live ones are at `runtime/<p>/<v>`).
    pub runtime: RuntimeOptions,
    /// When it is reclaimed once unused, copied from the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub reclaim: Option<crate::policy::Reclaim>,
    /// Removed when its last user unmounts (and when its host is gone).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ephemeral: bool,
    /// NFS source (`host:/path`), for mount-only backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// When the record was made (RFC 3339).
    #[serde(with = "crate::serde_time")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: SystemTime,
    /// The store revision of the policy it was made from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_revision: Option<u64>,
}

impl Volume {
    /// Builds a volume record from `policy` with create `options` applied.
    ///
    /// Unknown option keys are an error naming the accepted keys; the merged result is
    /// validated as a policy is.
    pub fn from_policy(
        policy: &Policy,
        name: VolumeName,
        options: &BTreeMap<String, String>,
        created_at: SystemTime,
    ) -> Result<Self, PolicyError> {
        let mut p = policy.clone();
        let mut mount = None;
        for (key, value) in options {
            apply_option(&mut p, &mut mount, key, value)?;
        }
        p.validate()?;
        match (p.backends.mount, &mount) {
            (BackendKind::Nfs, None) => {
                return Err(PolicyError::BadOption {
                    key: "mount".into(),
                    value: String::new(),
                    expected: "NFS volumes need the export to mount: add --opt mount=host:/path"
                        .into(),
                })
            }
            (BackendKind::Nfs, Some(_)) => {}
            (other, Some(m)) => {
                return Err(PolicyError::BadOption {
                    key: "mount".into(),
                    value: m.clone(),
                    expected: format!(
                        "only NFS volumes take a mount source; this policy's backend is {other}"
                    ),
                })
            }
            _ => {}
        }
        Ok(Self {
            policy: p.name,
            name,
            backends: p.backends,
            driver: p.driver,
            unlocked: p.unlocked,
            destroy_on_remove: p.destroy_on_remove,
            create: p.create,
            filesystems: p.filesystems,
            runtime: p.runtime,
            reclaim: p.reclaim,
            ephemeral: p.ephemeral,
            mount,
            created_at,
            policy_revision: None,
        })
    }

    /// `policy/volume`.
    pub fn reference(&self) -> VolumeRef {
        VolumeRef::new(self.policy.clone(), self.name.clone())
    }

    /// The mkfs command template for this volume's filesystem.
    pub fn mkfs(&self) -> Option<&MkfsTemplate> {
        self.filesystems.get(&self.create.filesystem)
    }
}

/// Parses a boolean as Go's `strconv.ParseBool` does.
fn parse_bool(key: &str, v: &str) -> Result<bool, PolicyError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(PolicyError::BadOption {
            key: key.to_owned(),
            value: v.to_owned(),
            expected: "expected true or false".into(),
        }),
    }
}

fn parse_u64(key: &str, v: &str) -> Result<u64, PolicyError> {
    v.trim().parse().map_err(|_| PolicyError::BadOption {
        key: key.to_owned(),
        value: v.to_owned(),
        expected: "expected a whole number ≥ 0".into(),
    })
}

fn apply_option(
    p: &mut Policy,
    mount: &mut Option<String>,
    key: &str,
    value: &str,
) -> Result<(), PolicyError> {
    match key {
        "size" => {
            p.create.size = Size::parse(value).map_err(|e| PolicyError::BadOption {
                key: key.into(),
                value: value.into(),
                expected: e.to_string(),
            })?;
        }
        "filesystem" => p.create.filesystem = value.to_owned(),
        "unlocked" => p.unlocked = parse_bool(key, value)?,
        "ephemeral" => p.ephemeral = parse_bool(key, value)?,
        "snapshots" => p.runtime.snapshots = parse_bool(key, value)?,
        "snapshots.frequency" => {
            p.runtime.snapshot.frequency =
                Some(Frequency::parse(value).map_err(|e| PolicyError::BadOption {
                    key: key.into(),
                    value: value.into(),
                    expected: e.to_string(),
                })?);
        }
        "snapshots.keep" => {
            let n = parse_u64(key, value)?;
            p.runtime.snapshot.keep = u32::try_from(n).map_err(|_| PolicyError::BadOption {
                key: key.into(),
                value: value.into(),
                expected: "expected at most 4294967295".into(),
            })?;
        }
        "rate-limit.read.bps" => p.runtime.rate_limit.read_bps = parse_u64(key, value)?,
        "rate-limit.write.bps" => p.runtime.rate_limit.write_bps = parse_u64(key, value)?,
        "rate-limit.read.iops" => p.runtime.rate_limit.read_iops = parse_u64(key, value)?,
        "rate-limit.write.iops" => p.runtime.rate_limit.write_iops = parse_u64(key, value)?,
        "mount" => {
            if let Err(why) = crate::policy::nfs::Source::parse(value) {
                return Err(PolicyError::BadOption {
                    key: key.into(),
                    value: value.into(),
                    expected: why,
                });
            }
            *mount = Some(value.to_owned());
        }
        _ => {
            return Err(PolicyError::UnknownOption {
                key: key.to_owned(),
                accepted: OPTION_KEYS.join(", "),
            })
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy(json: &str) -> Policy {
        Policy::from_json(&PolicyName::new("policy1").unwrap(), json.as_bytes()).unwrap()
    }

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const CEPH: &str = r#"{"backend":"ceph","driver":{"pool":"rbd"},"create":{"size":"10MB","filesystem":"ext4"},
        "runtime":{"snapshots":true,"snapshot":{"frequency":"30m","keep":20}}}"#;

    #[test]
    fn volume_copies_policy() {
        let p = policy(CEPH);
        let v = Volume::from_policy(
            &p,
            VolumeName::new("test").unwrap(),
            &BTreeMap::new(),
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        assert_eq!(v.reference().to_string(), "policy1/test");
        assert_eq!(v.create, p.create);
        assert_eq!(v.runtime, p.runtime);
        assert_eq!(v.driver["pool"], "rbd");
        assert_eq!(v.mkfs().unwrap().as_str(), "mkfs.ext4 -m0 %");
    }

    #[test]
    fn options_override() {
        // volplugin scenario 35 (IntegratedDriverOptions).
        let p = policy(CEPH);
        let o = opts(&[
            ("size", "200MB"),
            ("snapshots", "true"),
            ("snapshots.frequency", "100m"),
            ("snapshots.keep", "20"),
            ("rate-limit.write.bps", "100000"),
            ("rate-limit.read.bps", "120000"),
            // volplugin's scenario also set unlocked=true, which volcore refuses for Ceph
            // (two hosts would mount one ext4 image): see tests/safety.rs.
        ]);
        let v = Volume::from_policy(
            &p,
            VolumeName::new("v").unwrap(),
            &o,
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        assert_eq!(v.create.size.bytes(), 200_000_000);
        assert_eq!(
            v.runtime.snapshot.frequency.as_ref().unwrap().every(),
            Duration::from_secs(6000)
        );
        assert_eq!(v.runtime.rate_limit.write_bps, 100_000);
        assert_eq!(v.runtime.rate_limit.read_bps, 120_000);
        let v = Volume::from_policy(
            &p,
            VolumeName::new("v").unwrap(),
            &opts(&[("snapshots", "false")]),
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        assert!(!v.runtime.snapshots);
    }

    #[test]
    fn unknown_option_names_accepted_keys() {
        let p = policy(CEPH);
        let e = Volume::from_policy(
            &p,
            VolumeName::new("v").unwrap(),
            &opts(&[("quux", "1")]),
            SystemTime::UNIX_EPOCH,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("unknown option \"quux\"; accepted options: size, filesystem, unlocked"),
            "{e}"
        );
        let e = Volume::from_policy(
            &p,
            VolumeName::new("v").unwrap(),
            &opts(&[("", "1")]),
            SystemTime::UNIX_EPOCH,
        )
        .unwrap_err();
        assert!(matches!(e, PolicyError::UnknownOption { .. }));
        // `pool` is not overridable (volplugin's old docs said it was).
        let e = Volume::from_policy(
            &p,
            VolumeName::new("v").unwrap(),
            &opts(&[("pool", "x")]),
            SystemTime::UNIX_EPOCH,
        )
        .unwrap_err();
        assert!(matches!(e, PolicyError::UnknownOption { .. }));
    }

    #[test]
    fn bad_option_values() {
        let p = policy(CEPH);
        for (k, v, want) in [
            ("size", "0", "at least 1MB"),
            ("size", "big", "not a size"),
            ("unlocked", "yes", "true or false"),
            ("snapshots.keep", "-1", "whole number"),
            ("snapshots.frequency", "10d", "240h"),
            ("filesystem", "zfs", "not defined"),
            ("mount", "host:/x", "only NFS volumes"),
        ] {
            let e = Volume::from_policy(
                &p,
                VolumeName::new("v").unwrap(),
                &opts(&[(k, v)]),
                SystemTime::UNIX_EPOCH,
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(want), "{k}={v}: {e}");
        }
    }

    #[test]
    fn nfs_needs_mount() {
        let p = policy(r#"{"backend":"nfs"}"#);
        let e = Volume::from_policy(
            &p,
            VolumeName::new("v").unwrap(),
            &BTreeMap::new(),
            SystemTime::UNIX_EPOCH,
        )
        .unwrap_err();
        assert!(e.to_string().contains("mount=host:/path"), "{e}");
        let v = Volume::from_policy(
            &p,
            VolumeName::new("v").unwrap(),
            &opts(&[("mount", "10.0.0.1:/volplugin/p/v")]),
            SystemTime::UNIX_EPOCH,
        )
        .unwrap();
        assert_eq!(v.mount.as_deref(), Some("10.0.0.1:/volplugin/p/v"));
        let e = Volume::from_policy(
            &p,
            VolumeName::new("v").unwrap(),
            &opts(&[("mount", "/mnt")]),
            SystemTime::UNIX_EPOCH,
        )
        .unwrap_err();
        assert!(e.to_string().contains("host:/path"), "{e}");
    }

    #[test]
    fn record_json_round_trip() {
        let p = policy(CEPH);
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let v =
            Volume::from_policy(&p, VolumeName::new("v").unwrap(), &BTreeMap::new(), t).unwrap();
        let json = serde_json::to_string(&v).unwrap();
        assert!(
            json.contains("\"created_at\":\"2023-11-14T22:13:20.123Z\""),
            "{json}"
        );
        let back: Volume = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
    }
}
