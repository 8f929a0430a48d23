//! mkfs command templates: argv, never a shell.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::PolicyError;

/// A filesystem's mkfs command template: `%` is the device, `%%` a literal `%`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MkfsTemplate(pub(super) String);

impl MkfsTemplate {
    /// Wraps a template; it must not be empty.
    pub fn new(fs: &str, template: impl Into<String>) -> Result<Self, PolicyError> {
        let t = template.into();
        if t.trim().is_empty() {
            return Err(PolicyError::EmptyTemplate { fs: fs.to_owned() });
        }
        Ok(Self(t))
    }

    /// The template text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shell command for `device`: each `%` becomes the device path (quoted for `sh`
    /// when it holds anything but path-safe characters), each `%%` a literal `%`.
    ///
    /// ```
    /// use volcore::policy::MkfsTemplate;
    /// let t = MkfsTemplate::new("ext4", "mkfs.ext4 -E stride=%% -m0 %").unwrap();
    /// assert_eq!(t.render("/dev/loop3"), "mkfs.ext4 -E stride=% -m0 /dev/loop3");
    /// ```
    pub fn render(&self, device: &str) -> String {
        let safe = !device.is_empty()
            && device
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c));
        let dev = if safe {
            device.to_owned()
        } else {
            format!("'{}'", device.replace('\'', r"'\''"))
        };
        let mut out = String::with_capacity(self.0.len() + dev.len());
        let mut chars = self.0.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '%' {
                if chars.peek() == Some(&'%') {
                    chars.next();
                    out.push('%');
                } else {
                    out.push_str(&dev);
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}

impl<'de> Deserialize<'de> for MkfsTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new("?", s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for MkfsTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// The mkfs command volplugin used when a policy names no filesystems.
pub const DEFAULT_FILESYSTEM: &str = "ext4";
/// Its template.
pub const DEFAULT_MKFS: &str = "mkfs.ext4 -m0 %";
