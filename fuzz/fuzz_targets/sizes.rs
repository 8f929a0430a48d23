//! Sizes and durations: parse never panics; formatting a parsed size parses back to it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use volcore::size::{parse_duration, Size};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(size) = Size::parse(s) {
        assert_eq!(Size::parse(&size.to_string()).expect("formatted size parses"), size);
    }
    let _ = parse_duration(s);
    let _ = volcore::policy::Frequency::parse(s);
});
