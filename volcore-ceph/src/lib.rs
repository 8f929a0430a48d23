//! Ceph RBD driver for volcore — not built yet (issue #5).
//!
//! This crate deliberately exposes no API until the driver exists, so nothing can be
//! wired to a storage backend that does not work. It is in the workspace so the layout of
//! DESIGN.md §2 and its dependency direction (backend crates depend only on volcore) are
//! fixed and checked from the start.
