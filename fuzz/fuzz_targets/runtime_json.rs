//! Runtime options JSON: parse; a valid document round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use volcore::RuntimeOptions;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = RuntimeOptions::from_json(data) {
        let json = serde_json::to_vec(&r).expect("encode");
        assert_eq!(RuntimeOptions::from_json(&json).expect("re-parse"), r);
    }
});
