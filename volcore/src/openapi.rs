//! OpenAPI schemas (feature `openapi`) for the types whose JSON form is not their Rust
//! shape: names and sizes travel as strings, [`Backends`] and [`GlobalConfig`] keep
//! volplugin's documents. The plain records derive theirs next to their definitions.

use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use crate::name::{HostName, PolicyName, SnapshotName, VolumeName, VolumeRef};
use crate::policy::{BackendKind, Backends, Frequency, MkfsTemplate, PolicyUpload, RuntimeOptions};
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
        // volplugin's form: an absent backend is the empty string.
        let optional = || {
            string("A storage backend, or empty for none.", "ceph")
                .enum_values(Some(["ceph", "nfs", "local", "null", ""]))
        };
        ObjectBuilder::new()
            .description(Some(
                "Which backend does what; `crud` and `snapshot` are empty for mount-only backends.",
            ))
            .property("crud", optional())
            .property("mount", BackendKind::schema())
            .property("snapshot", optional())
            .required("mount")
            .into()
    }
}
impl ToSchema for Backends {}

impl PartialSchema for PolicyUpload {
    fn schema() -> RefOr<Schema> {
        let obj = || ObjectBuilder::new().schema_type(Type::Object);
        let boolean = |d: &str| {
            ObjectBuilder::new()
                .schema_type(Type::Boolean)
                .description(Some(d))
        };
        let strings = |d: &str| {
            obj()
                .description(Some(d))
                .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String)))
        };
        let backends = obj()
            .description(Some(
                "Which backend does what (or give `backend` for all three).",
            ))
            .property(
                "crud",
                string("The backend that creates storage (empty: none).", "ceph"),
            )
            .property("mount", string("The backend that mounts.", "ceph"))
            .property(
                "snapshot",
                string("The backend that snapshots (empty: none).", "ceph"),
            )
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let create = obj()
            .property("size", string("The size of new volumes.", "10GB"))
            .property("filesystem", string("A key of `filesystems`.", "ext4"))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("A policy as uploaded: volplugin's JSON. Every field is optional; what a field holds is validated on upload and refused with the reason."))
            .property("name", string("The policy's name, if repeated: it must match the path.", "policy1"))
            .property("backend", string("One backend for create, mount and snapshot.", "ceph"))
            .property("backends", backends)
            .property("driver", strings("Driver parameters (Ceph: `pool`)."))
            .property("unlocked", boolean("Several hosts may mount at once (NFS only)."))
            .property("destroy-on-remove", boolean("Destroy the storage when the volume is removed through Docker."))
            .property("create", create)
            .property("filesystems", strings("mkfs command per filesystem; `%` is the device."))
            .property("runtime", RuntimeOptions::schema())
            .property(
                "reclaim",
                obj()
                    .description(Some("Reclaim volumes unused (no mount on any host) for `unused`: after `grace` (default 1h) they are removed or reported."))
                    .property("unused", string("How long without a mount makes a volume stale.", "30d"))
                    .property(
                        "action",
                        string("What then happens.", "remove").enum_values(Some(["remove", "report"])),
                    )
                    .property("grace", string("How long a stale volume is listed before the action.", "1d"))
                    .required("unused")
                    .required("action")
                    .additional_properties(Some(AdditionalProperties::FreeForm(false))),
            )
            .property("ephemeral", boolean("Volumes are removed at their last unmount, and when the host that had them mounted is gone."))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .into()
    }
}
impl ToSchema for PolicyUpload {}

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
