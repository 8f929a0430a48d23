//! `/proc/self/mountinfo` parsing, robust to any number of optional fields (volplugin
//! assumed exactly one) and to octal escapes in paths.

use std::path::PathBuf;

/// One mount.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MountInfo {
    /// Mount id.
    pub id: u32,
    /// Parent mount id.
    pub parent: u32,
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Root of the mount within the filesystem.
    pub root: PathBuf,
    /// Mount point.
    pub mount_point: PathBuf,
    /// Per-mount options.
    pub options: String,
    /// Optional fields (`shared:1`, `master:2`, …).
    pub optional: Vec<String>,
    /// Filesystem type.
    pub fs_type: String,
    /// Mount source (device path, `host:/export`, …).
    pub source: String,
    /// Per-superblock options.
    pub super_options: String,
}

/// A line that is not a mountinfo line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mountinfo line {line}: {why}")]
pub struct MountInfoError {
    line: usize,
    why: &'static str,
}

/// Undoes the kernel's octal escapes (`\040` for space, `\011`, `\012`, `\134`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = u32::from(oct[0] - b'0') * 64
                    + u32::from(oct[1] - b'0') * 8
                    + u32::from(oct[2] - b'0');
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the whole text of a mountinfo file.
pub fn parse(text: &str) -> Result<Vec<MountInfo>, MountInfoError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| parse_line(l).map_err(|why| MountInfoError { line: i + 1, why }))
        .collect()
}

fn parse_line(line: &str) -> Result<MountInfo, &'static str> {
    let (left, right) = line.split_once(" - ").ok_or("no ' - ' separator")?;
    let mut f = left.split(' ');
    let id = f
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or("bad mount id")?;
    let parent = f
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or("bad parent id")?;
    let (major, minor) = f
        .next()
        .and_then(|s| s.split_once(':'))
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or("bad major:minor")?;
    let root = PathBuf::from(unescape(f.next().ok_or("no root")?));
    let mount_point = PathBuf::from(unescape(f.next().ok_or("no mount point")?));
    let options = f.next().ok_or("no mount options")?.to_owned();
    let optional = f.filter(|s| !s.is_empty()).map(str::to_owned).collect();
    let mut r = right.split(' ');
    let fs_type = r
        .next()
        .filter(|s| !s.is_empty())
        .ok_or("no filesystem type")?
        .to_owned();
    let source = unescape(r.next().ok_or("no mount source")?);
    let super_options = r.next().unwrap_or_default().to_owned();
    Ok(MountInfo {
        id,
        parent,
        major,
        minor,
        root,
        mount_point,
        options,
        optional,
        fs_type,
        source,
        super_options,
    })
}

/// The mounts of this process's mount namespace.
pub fn current() -> std::io::Result<Vec<MountInfo>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    parse(&text).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn optional_fields_any_number() {
        let text = "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    25 1 0:23 / /sys rw,nosuid - sysfs sysfs rw\n\
                    40 25 7:3 / /mnt/ceph/p/v rw,relatime shared:7 master:2 propagate_from:1 - xfs /dev/loop3 rw,attr2\n";
        let m = parse(text).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].optional, vec!["master:1"]);
        assert!(m[1].optional.is_empty());
        assert_eq!(m[2].optional.len(), 3);
        assert_eq!((m[2].major, m[2].minor), (7, 3));
        assert_eq!(m[2].mount_point, PathBuf::from("/mnt/ceph/p/v"));
        assert_eq!(
            (m[2].fs_type.as_str(), m[2].source.as_str()),
            ("xfs", "/dev/loop3")
        );
    }

    #[test]
    fn escapes() {
        let m = parse("1 0 8:1 / /mnt/with\\040space rw - ext4 /dev/sda\\0401 rw\n").unwrap();
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m[0].source, "/dev/sda 1");
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("trail\\04"), "trail\\04");
    }

    #[test]
    fn bad_lines_are_named() {
        let err = parse("1 0 8:1 / /mnt rw ext4 /dev/sda rw\n").unwrap_err();
        assert_eq!(err.to_string(), "mountinfo line 1: no ' - ' separator");
        assert!(parse("x 0 8:1 / /m rw - ext4 d rw").is_err());
    }

    #[test]
    fn this_machine() {
        let mounts = current().unwrap();
        assert!(mounts
            .iter()
            .any(|m| m.mount_point == std::path::Path::new("/")));
    }

    proptest! {
        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = parse(&s);
        }
    }
}
