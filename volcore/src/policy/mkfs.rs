//! mkfs command templates: an argument vector, never a shell.
//!
//! A policy's template (`"mkfs.ext4 -m0 %"`) is split into words once, when it is parsed,
//! with POSIX quoting rules (`shell-words`); a word that is exactly `%` becomes the device
//! path and `%%` in any word a literal `%`. The program (the first word) runs directly,
//! with no shell in between, and must be on the mkfs allowlist ([`MkfsAllowlist`]): the
//! `mkfs.*` family and `mke2fs`, extended only through the global configuration's
//! `MkfsPrograms`. volplugin ran the template through `sh -c`, so anyone who could upload
//! a policy could run any command as root on the host that formats volumes.

use std::path::{Component, Path};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::PolicyError;

/// A filesystem's mkfs command template: `%` (a whole word) is the device, `%%` a literal
/// `%`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MkfsTemplate {
    text: String,
    words: Vec<Word>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum Word {
    Device,
    Literal(String),
}

/// Characters that only mean something to a shell; no shell runs a template, so a word
/// holding one is a mistake (or an attempt) and is refused with the reason.
const SHELL_ONLY: &[char] = &[';', '|', '&', '<', '>', '`', '$', '\n'];

impl MkfsTemplate {
    /// Parses a template for filesystem `fs`: split into words with shell quoting rules,
    /// the program a bare name (looked up in `PATH`) or a normalised absolute path, the
    /// device passed as the whole word `%` exactly once, and no shell syntax.
    pub fn new(fs: &str, template: impl Into<String>) -> Result<Self, PolicyError> {
        let text = template.into();
        let bad = |why: String| PolicyError::BadTemplate {
            fs: fs.to_owned(),
            template: text.clone(),
            why,
        };
        if text.trim().is_empty() {
            return Err(PolicyError::EmptyTemplate { fs: fs.to_owned() });
        }
        let raw = shell_words::split(&text)
            .map_err(|e| bad(format!("it does not split into words ({e})")))?;
        let mut words = Vec::with_capacity(raw.len());
        for w in &raw {
            if let Some(c) = w.chars().find(|c| SHELL_ONLY.contains(c)) {
                return Err(bad(format!(
                    "{c:?} in {w:?} is shell syntax, and no shell runs the template: the program runs directly with these words as its arguments"
                )));
            }
            if w == "%" {
                words.push(Word::Device);
                continue;
            }
            // `%%` is a literal `%`; a lone `%` inside a word would splice the device into
            // it, which is refused so that the device is always one whole argument.
            let lit = w.replace("%%", "\u{0}");
            if lit.contains('%') {
                return Err(bad(format!(
                    "{w:?} holds a % inside a word: the device must be a whole argument (a separate %), and a literal percent sign is written %%"
                )));
            }
            words.push(Word::Literal(lit.replace('\u{0}', "%")));
        }
        match words.first() {
            Some(Word::Literal(p)) => check_program(p).map_err(bad)?,
            _ => return Err(bad("the first word must be the mkfs program, not %".into())),
        }
        match words.iter().filter(|w| **w == Word::Device).count() {
            1 => {}
            0 => {
                return Err(bad(
                    "it never names the device: add % as an argument where the device goes".into(),
                ))
            }
            _ => return Err(bad("% (the device) may appear only once".into())),
        }
        Ok(Self { text, words })
    }

    /// The template text, as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The program it runs (its first word).
    pub fn program(&self) -> &str {
        match self.words.first() {
            Some(Word::Literal(p)) => p,
            // `new` refuses a template whose first word is the device.
            _ => "",
        }
    }

    /// The argument vector for `device`: the program, then its arguments, with the device
    /// as the one whole argument `%` stood for.
    ///
    /// ```
    /// use volcore::policy::MkfsTemplate;
    /// let t = MkfsTemplate::new("ext4", "mkfs.ext4 -E stride=%% -L 'my data' %").unwrap();
    /// assert_eq!(
    ///     t.argv("/dev/loop3"),
    ///     ["mkfs.ext4", "-E", "stride=%", "-L", "my data", "/dev/loop3"]
    /// );
    /// ```
    pub fn argv(&self, device: &str) -> Vec<String> {
        self.words
            .iter()
            .map(|w| match w {
                Word::Device => device.to_owned(),
                Word::Literal(s) => s.clone(),
            })
            .collect()
    }

    /// Refuses a template whose program `allow` does not allow, saying how to allow it.
    pub fn check_allowed(&self, fs: &str, allow: &MkfsAllowlist) -> Result<(), PolicyError> {
        if allow.allows(self.program()) {
            return Ok(());
        }
        Err(PolicyError::MkfsNotAllowed {
            fs: fs.to_owned(),
            program: self.program().to_owned(),
            allowed: allow.describe(),
        })
    }
}

/// A program is a bare name (found in `PATH`) or a normalised absolute path; a relative
/// path would depend on the daemon's working directory.
fn check_program(p: &str) -> Result<(), String> {
    if !p.contains('/') {
        return Ok(());
    }
    let path = Path::new(p);
    if !path.is_absolute() {
        return Err(format!(
            "the program {p:?} is a relative path; give a bare name such as mkfs.ext4 or an absolute path"
        ));
    }
    if !is_normalised(p) {
        return Err(format!(
            "the program path {p:?} is not normalised (no ., .., // or trailing /)"
        ));
    }
    Ok(())
}

/// Absolute, without `.`/`..` components, empty components or a trailing `/`.
pub(crate) fn is_normalised(p: &str) -> bool {
    let path = Path::new(p);
    path.is_absolute()
        && !p.contains("//")
        && (p == "/" || !p.ends_with('/'))
        && path
            .components()
            .all(|c| !matches!(c, Component::ParentDir | Component::CurDir))
}

/// The programs a mkfs template may run: always the `mkfs.*` family and `mke2fs`, plus
/// the global configuration's `MkfsPrograms` — bare names, name prefixes ending in `*`
/// (`mkfs.*`), or absolute paths. A bare name or pattern also allows that program by
/// absolute path in the system's program directories (`/sbin/mkfs.ext4`); any other
/// absolute path must be listed itself.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MkfsAllowlist {
    entries: Vec<String>,
}

/// What every allowlist allows.
pub const DEFAULT_MKFS_PROGRAMS: [&str; 2] = ["mkfs.*", "mke2fs"];

/// Where a bare allowlisted name may also be given by absolute path.
const PROGRAM_DIRS: [&str; 6] = [
    "/sbin",
    "/bin",
    "/usr/sbin",
    "/usr/bin",
    "/usr/local/sbin",
    "/usr/local/bin",
];

impl MkfsAllowlist {
    /// The defaults plus `extra` (each checked with [`check_entry`](Self::check_entry)).
    pub fn new(extra: &[String]) -> Self {
        let mut entries: Vec<String> = DEFAULT_MKFS_PROGRAMS.map(str::to_owned).to_vec();
        entries.extend(
            extra
                .iter()
                .filter(|e| !entries.contains(e))
                .cloned()
                .collect::<Vec<_>>(),
        );
        Self { entries }
    }

    /// An entry of `MkfsPrograms` must be a bare name, a name prefix ending in one `*`, or
    /// a normalised absolute path; `*` alone would allow every program.
    pub fn check_entry(e: &str) -> Result<(), String> {
        let why = |w: &str| Err(format!("MkfsPrograms entry {e:?} {w}"));
        if e.is_empty() || e.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return why("must be a program name without spaces");
        }
        if e.contains('/') {
            if !is_normalised(e) {
                return why("must be a bare name or a normalised absolute path");
            }
            if e.contains('*') {
                return why("is a path: patterns (*) are for bare names only");
            }
            return Ok(());
        }
        match e.find('*') {
            None => Ok(()),
            Some(0) => why("would allow every program; name a prefix such as \"mkfs.*\""),
            Some(i) if i + 1 == e.len() => Ok(()),
            Some(_) => why("may hold * only at its end (a name prefix such as \"mkfs.*\")"),
        }
    }

    /// Whether `program` (a template's first word) may run.
    pub fn allows(&self, program: &str) -> bool {
        let path = Path::new(program);
        if program.contains('/') {
            if self.entries.iter().any(|e| e == program) {
                return true;
            }
            let in_program_dir = path
                .parent()
                .and_then(Path::to_str)
                .is_some_and(|d| PROGRAM_DIRS.contains(&d));
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            return in_program_dir && self.allows_name(name);
        }
        self.allows_name(program)
    }

    fn allows_name(&self, name: &str) -> bool {
        !name.is_empty()
            && self
                .entries
                .iter()
                .filter(|e| !e.contains('/'))
                .any(|e| match e.strip_suffix('*') {
                    Some(prefix) => name.starts_with(prefix) && name.len() > prefix.len(),
                    None => e == name,
                })
    }

    fn describe(&self) -> String {
        self.entries.join(", ")
    }
}

impl Default for MkfsAllowlist {
    fn default() -> Self {
        Self::new(&[])
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
        s.serialize_str(&self.text)
    }
}

/// The mkfs command volplugin used when a policy names no filesystems.
pub const DEFAULT_FILESYSTEM: &str = "ext4";
/// Its template.
pub const DEFAULT_MKFS: &str = "mkfs.ext4 -m0 %";

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Result<MkfsTemplate, String> {
        MkfsTemplate::new("fs", s).map_err(|e| e.to_string())
    }

    #[test]
    fn words_and_percent_rules() {
        let m = t("mkfs %%d % 100%%").unwrap();
        assert_eq!(m.argv("/dev/loop0"), ["mkfs", "%d", "/dev/loop0", "100%"]);
        // A device path with a quote or a space is still one argument: nothing parses it.
        let m = t("mkfs.xfs -f %").unwrap();
        assert_eq!(
            m.argv("/dev/it's here"),
            ["mkfs.xfs", "-f", "/dev/it's here"]
        );
        let m = t(r#"mkfs.ext4 -L "a b" '%'"#).unwrap();
        assert_eq!(m.argv("/dev/x"), ["mkfs.ext4", "-L", "a b", "/dev/x"]);
        assert_eq!(m.program(), "mkfs.ext4");
    }

    #[test]
    fn shell_syntax_and_misplaced_devices_are_refused_with_the_reason() {
        for (tpl, want) in [
            ("id>/tmp/pwn; mkfs.ext4 %", "shell syntax"),
            ("mkfs.ext4 % ; id", "shell syntax"),
            ("mkfs.ext4 % && id", "shell syntax"),
            ("mkfs.ext4 $(id) %", "shell syntax"),
            ("mkfs.ext4 `id` %", "shell syntax"),
            ("mkfs.ext4 % | tee", "shell syntax"),
            ("mkfs.ext4 --dev=%", "whole argument"),
            ("mkfs.ext4", "never names the device"),
            ("/bin/false", "never names the device"),
            ("mkfs.ext4 % %", "only once"),
            ("% mkfs.ext4", "first word"),
            ("mkfs.ext4 'unclosed %", "does not split"),
            ("./mkfs.ext4 %", "relative path"),
            ("/sbin/../tmp/mkfs.x %", "not normalised"),
        ] {
            let e = t(tpl).unwrap_err();
            assert!(e.contains(want), "{tpl}: {e}");
        }
    }

    #[test]
    fn the_allowlist_allows_mkfs_and_what_the_admin_adds() {
        let d = MkfsAllowlist::default();
        for p in [
            "mkfs.ext4",
            "mkfs.xfs",
            "mke2fs",
            "/sbin/mkfs.ext4",
            "/usr/sbin/mke2fs",
        ] {
            assert!(d.allows(p), "{p}");
        }
        for p in [
            "mkfs.",
            "mkfs",
            "sh",
            "/bin/false",
            "/tmp/mkfs.ext4",
            "/usr/sbin/sh",
            "id",
        ] {
            assert!(!d.allows(p), "{p}");
        }
        let e = t("/bin/false %")
            .unwrap()
            .check_allowed("falsefs", &d)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/bin/false") && e.contains("MkfsPrograms") && e.contains("mkfs.*"),
            "{e}"
        );
        let more = MkfsAllowlist::new(&[
            "/opt/fs/bin/mkfs-special".into(),
            "wipefs".into(),
            "mkzfs*".into(),
        ]);
        for p in [
            "/opt/fs/bin/mkfs-special",
            "wipefs",
            "/usr/sbin/wipefs",
            "mkzfs.x",
            "mkfs.ext4",
        ] {
            assert!(more.allows(p), "{p}");
        }
        assert!(!more.allows("/opt/fs/bin/other"));
        assert!(
            !more.allows("mkfs-special"),
            "an absolute entry allows that path only"
        );
    }

    #[test]
    fn allowlist_entries_are_checked() {
        for ok in ["mkfs.*", "wipefs", "/opt/x/mkfs"] {
            assert!(MkfsAllowlist::check_entry(ok).is_ok(), "{ok}");
        }
        for (bad, want) in [
            ("*", "every program"),
            ("mk*fs", "at its end"),
            ("opt/x", "absolute"),
            ("/opt/*", "patterns"),
            ("a b", "without spaces"),
            ("", "without spaces"),
            ("/opt/../x", "normalised"),
        ] {
            let e = MkfsAllowlist::check_entry(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
