//! Loop-file driver for volcore — not built yet (issue #4).
//!
//! This crate deliberately exposes no API until the driver exists, so nothing can be
//! wired to a storage backend that does not work.
