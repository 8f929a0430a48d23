//! Global configuration JSON: parse; a valid document round-trips via its published form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use volcore::GlobalConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = GlobalConfig::from_json(data) {
        assert_eq!(GlobalConfig::from_json(&g.to_json()).expect("re-parse"), g);
    }
});
