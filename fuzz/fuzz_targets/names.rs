//! Names and volume references: accepted names are exactly the allowed alphabet, and
//! keys built from them stay inside their subtree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use volcore::{HostName, Keys, LockKind, PolicyName, VolumeRef};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(p) = PolicyName::new(s) {
        assert!(p.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        assert!(!p.as_str().is_empty() && p.as_str().len() <= 64);
    }
    if let Ok(r) = VolumeRef::parse(s) {
        assert_eq!(r.to_string(), s);
        let keys = Keys::default();
        let k = keys.lock(LockKind::Mount, &r);
        assert!(k.starts_with("/volplugin/locks/mount/"));
        assert!(!k.contains(".."));
        assert_eq!(keys.parse_lock(&k), Some((LockKind::Mount, r)));
    }
    let _ = HostName::new(s);
    let _ = Keys::new(s);
});
