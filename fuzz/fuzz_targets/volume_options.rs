//! Create options merged into a policy: never panics; a merged volume round-trips.
#![no_main]

use std::collections::BTreeMap;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use volcore::{Policy, PolicyName, Volume, VolumeName};

const BASE: &[u8] = br#"{"backend":"ceph","driver":{"pool":"rbd"},"create":{"size":"10MB"},
  "runtime":{"snapshots":true,"snapshot":{"frequency":"30m","keep":20}}}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    // Lines of key=value.
    let opts: BTreeMap<String, String> = s
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let (Ok(name), Ok(vol)) = (PolicyName::new("p"), VolumeName::new("v")) else { return };
    let Ok(p) = Policy::from_json(&name, BASE) else { return };
    if let Ok(v) = Volume::from_policy(&p, vol, &opts, SystemTime::UNIX_EPOCH) {
        let json = serde_json::to_vec(&v).expect("encode");
        let back: Volume = serde_json::from_slice(&json).expect("decode");
        assert_eq!(back, v);
    }
});
