//! The NFS source and mount options live in `volcore::policy::nfs`, where uploads and
//! creates check them; the driver uses the same rules.

pub use volcore::policy::nfs::*;
