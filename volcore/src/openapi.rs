//! OpenAPI schemas (feature `openapi`) for the types whose JSON form is not their Rust
//! shape: names and sizes travel as strings, [`Backends`] and [`GlobalConfig`] keep
//! volplugin's documents. The plain records derive theirs next to their definitions.

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::name::{HostName, PolicyName, SnapshotName, VolumeName, VolumeRef};
use crate::policy::{BackendKind, Backends, Frequency, MkfsTemplate};
use crate::size::Size;
use crate::GlobalConfig;

fn string(description: &str, example: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .examples([serde_json::Value::from(example)])
}

macro_rules! string_schema {
    ($($ty:ty => $desc:literal, $example:literal;)*) => {$(
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                string($desc, $example).into()
            }
        }
        impl ToSchema for $ty {}
    )*};
}

string_schema! {
    PolicyName => "A policy name: letters, digits, `_`, `-`; at most 64 characters.", "policy1";
    VolumeName => "A volume name within its policy: letters, digits, `_`, `-`.", "db";
    HostName => "A host label: letters, digits, `_`, `-`, `.`.", "host-a";
    SnapshotName => "A snapshot name.", "snap-20261203-143000";
    VolumeRef => "A volume: `policy/volume`.", "policy1/db";
    Size => "A size: a number with an optional unit (`10GB`, `500MB`, `0`).", "10GB";
    MkfsTemplate => "An mkfs command line; `%` stands for the device.", "mkfs.ext4 -m0 %";
    Frequency => "A snapshot frequency in Go's duration syntax (`30m`, `1h30m`), at least 1s.", "30m";
}

impl PartialSchema for BackendKind {
    fn schema() -> RefOr<Schema> {
        string("A storage backend.", "ceph")
            .enum_values(Some(["ceph", "nfs", "local", "null"]))
            .into()
    }
}
impl ToSchema for BackendKind {}

impl PartialSchema for Backends {
    fn schema() -> RefOr<Schema> {
        let kind = || BackendKind::schema();
        ObjectBuilder::new()
            .description(Some(
                "Which backend does what; `crud` and `snapshot` are empty for mount-only backends.",
            ))
            .property("crud", kind())
            .property("mount", kind())
            .property("snapshot", kind())
            .required("mount")
            .into()
    }
}
impl ToSchema for Backends {}

impl PartialSchema for GlobalConfig {
    fn schema() -> RefOr<Schema> {
        let int = |d: &str| {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .description(Some(d))
        };
        ObjectBuilder::new()
            .description(Some("volplugin's global configuration."))
            .property("TTL", int("Lease (lock) TTL in seconds, 1 to 3600 (default 30)."))
            .property(
                "Timeout",
                int("Lock-wait deadline and storage-command timeout in minutes, 1 to 60 (default 10)."),
            )
            .property(
                "MountPath",
                string("Mount root: volumes mount at MountPath/policy/volume. Absolute, normalised, and outside /, /etc, /usr, /bin, /sbin, /lib*, /boot, /dev, /proc, /sys and /run (except /run/volcore).", "/mnt/ceph"),
            )
            .property(
                "MkfsPrograms",
                ArrayBuilder::new()
                    .items(string("A program name, a name prefix ending in * (mkfs.*), or an absolute path.", "mkfs.zfs"))
                    .description(Some("Programs a policy's mkfs template may run beyond the mkfs.* family and mke2fs (set by an admin).")),
            )
            .property(
                "Debug",
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .description(Some("Debug logging.")),
            )
            .into()
    }
}
impl ToSchema for GlobalConfig {}
