//! Policy parsing, merging and validation never panic, whatever the input.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::collections::BTreeMap;
use std::time::SystemTime;

use proptest::prelude::*;
use serde_json::{json, Value};
use volcore::{GlobalConfig, Policy, PolicyName, RuntimeOptions, Volume, VolumeName};

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "ceph",
            "nfs",
            "local",
            "null",
            "",
            "10MB",
            "0",
            "1.5GiB",
            "ext4",
            "xfs",
            "30m",
            "10d",
            "0s",
            "%",
            "%%",
            "rbd",
            "mkfs.ext4 -m0 %",
            "/bin/false",
            "garbage",
        ])
        .prop_map(|s| json!(s)),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn doc() -> impl Strategy<Value = Value> {
    let keys = prop::sample::select(vec![
        "backend",
        "backends",
        "crud",
        "mount",
        "snapshot",
        "driver",
        "pool",
        "unlocked",
        "create",
        "size",
        "filesystem",
        "filesystems",
        "runtime",
        "snapshots",
        "frequency",
        "keep",
        "rate-limit",
        "read-bps",
        "write-bps",
        "name",
        "TTL",
        "Timeout",
        "MountPath",
        "Debug",
        "bogus",
    ]);
    leaf().prop_recursive(4, 64, 8, move |inner| {
        prop::collection::btree_map(keys.clone().prop_map(str::to_owned), inner, 0..6)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    })
}

fn options() -> impl Strategy<Value = BTreeMap<String, String>> {
    // Every accepted key, plus ones that must be refused.
    let mut all: Vec<&'static str> = volcore::volume::OPTION_KEYS.to_vec();
    all.extend(["pool", ""]);
    let keys = prop::sample::select(all);
    let vals = prop_oneof![
        prop::sample::select(vec![
            "true",
            "false",
            "0",
            "1",
            "10MB",
            "1GB",
            "xfs",
            "ext4",
            "1m",
            "10d",
            "-1",
            "h:/x",
            "18446744073709551616"
        ])
        .prop_map(str::to_owned),
        ".{0,10}",
    ];
    prop::collection::btree_map(keys.prop_map(str::to_owned), vals, 0..5)
}

const BASE: &str = r#"{"backend":"ceph","driver":{"pool":"rbd"},"create":{"size":"10MB"},
    "runtime":{"snapshots":true,"snapshot":{"frequency":"30m","keep":20}}}"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parsing_never_panics(v in doc()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        let name = PolicyName::new("p").unwrap();
        if let Ok(p) = Policy::from_json(&name, &bytes) {
            // Whatever validated must survive its own round trip.
            let back = Policy::from_stored_json(&p.to_json()).unwrap();
            prop_assert_eq!(back, p);
        }
        let _ = RuntimeOptions::from_json(&bytes);
        if let Ok(g) = GlobalConfig::from_json(&bytes) {
            prop_assert_eq!(GlobalConfig::from_json(&g.to_json()).unwrap(), g);
        }
    }

    #[test]
    fn merge_never_panics(opts in options()) {
        let p = Policy::from_json(&PolicyName::new("p").unwrap(), BASE.as_bytes()).unwrap();
        if let Ok(v) = Volume::from_policy(&p, VolumeName::new("v").unwrap(), &opts, SystemTime::UNIX_EPOCH) {
            // A merged volume is itself a valid policy instance.
            prop_assert!(v.create.size.bytes() >= 1_000_000);
            let json = serde_json::to_vec(&v).unwrap();
            let back: Volume = serde_json::from_slice(&json).unwrap();
            prop_assert_eq!(back, v);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = Policy::from_json(&PolicyName::new("p").unwrap(), &bytes);
        let _ = RuntimeOptions::from_json(&bytes);
        let _ = GlobalConfig::from_json(&bytes);
    }
}
