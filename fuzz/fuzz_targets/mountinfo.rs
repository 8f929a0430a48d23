//! /proc/self/mountinfo parsing never panics, whatever the kernel (or a fuzzer) writes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(mounts) = volcore::mountinfo::parse(s) {
            assert!(mounts.len() <= s.lines().count());
        }
    }
});
