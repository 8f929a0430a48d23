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
