//! Loop devices and their backing files, read from sysfs. Not `losetup -j`: it stats every
//! loop device's backing file, and one file on a hung FUSE mount (a fenced rbd-fuse)
//! blocks it for ever.

use std::path::{Path, PathBuf};

/// Every attached loop device (`/dev/loopN`) with its backing file.
pub fn devices() -> Vec<(PathBuf, PathBuf)> {
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_owned();
            let back = backing_of(&name)?;
            Some((PathBuf::from(format!("/dev/{name}")), back))
        })
        .collect()
}

/// Detaches every loop device backing `file`, each through `detach` (the driver's
/// `losetup -d` with its timeout and error mapping). A device that no longer backs the
/// file when its detach fails was detached meanwhile (the kernel or a concurrent detach
/// got there first: "No such device or address") — the state wanted, not an error.
pub async fn detach_all<E, F, Fut>(file: &Path, mut detach: F) -> Result<(), E>
where
    F: FnMut(PathBuf) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    for dev in of_file(file) {
        if let Err(e) = detach(dev.clone()).await {
            if of_file(file).contains(&dev) {
                return Err(e);
            }
            tracing::debug!(device = %dev.display(), "loop device was already detached");
        }
    }
    Ok(())
}

/// The loop devices backed by `file`.
pub fn of_file(file: &Path) -> Vec<PathBuf> {
    devices()
        .into_iter()
        .filter(|(_, b)| b == file)
        .map(|(d, _)| d)
        .collect()
}

/// The backing file of `device` when it is a loop device (`/dev/loopN`).
pub fn backing_file(device: &str) -> Option<PathBuf> {
    backing_of(device.strip_prefix("/dev/")?)
}

/// The backing file of block device `name` (`loopN`) from sysfs; `None` when it is not an
/// attached loop device.
fn backing_of(name: &str) -> Option<PathBuf> {
    if !name.starts_with("loop") || name.contains('/') {
        return None;
    }
    let text = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    Some(PathBuf::from(text.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loop_devices_have_no_backing_file() {
        assert_eq!(backing_file("/dev/sda"), None);
        assert_eq!(backing_file("tmpfs"), None);
        assert_eq!(backing_file("/dev/loop0/../sda"), None);
        assert!(of_file(Path::new("/nonexistent/file.img")).is_empty());
    }
}
