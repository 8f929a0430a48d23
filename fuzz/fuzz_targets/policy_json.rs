//! Policy JSON: parse, and whatever validates must round-trip through its stored form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use volcore::{Policy, PolicyName};

fuzz_target!(|data: &[u8]| {
    let Ok(name) = PolicyName::new("fuzz") else { return };
    if let Ok(p) = Policy::from_json(&name, data) {
        let back = Policy::from_stored_json(&p.to_json()).expect("a valid policy re-parses");
        assert_eq!(back, p);
    }
    let _ = Policy::from_stored_json(data);
});
