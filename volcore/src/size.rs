//! Sizes (`10MB`, `1.5GB`, `10MiB`) and durations (`30s`, `10m`, `2d`).
//!
//! Decimal units are volplugin's (docker/go-units `FromHumanSize`: `k` = 1000, `M` = 10⁶,
//! ...); binary units (`KiB`, `MiB`, ...) are powers of 1024. Sizes are stored as bytes.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a size or duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Not a size.
    #[error("{input:?} is not a size; write a number with an optional unit, e.g. 10MB, 1.5GB, 512MiB or 1GiB")]
    BadSize {
        /// The offending input.
        input: String,
    },
    /// The size does not fit in 64 bits.
    #[error("size {input:?} is too large (more than 2^64 bytes)")]
    SizeOverflow {
        /// The offending input.
        input: String,
    },
    /// Not a duration.
    #[error("{input:?} is not a duration ({reason}); write e.g. 30s, 10m, 1h or 2d")]
    BadDuration {
        /// The offending input.
        input: String,
        /// What the parser said.
        reason: String,
    },
}

/// A size in bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(u64);

const DECIMAL: [(&str, u64); 5] = [
    ("P", 1_000_000_000_000_000),
    ("T", 1_000_000_000_000),
    ("G", 1_000_000_000),
    ("M", 1_000_000),
    ("k", 1_000),
];
const BINARY: [(&str, u64); 5] = [
    ("Pi", 1 << 50),
    ("Ti", 1 << 40),
    ("Gi", 1 << 30),
    ("Mi", 1 << 20),
    ("Ki", 1 << 10),
];

impl Size {
    /// One decimal megabyte, the unit volplugin passed to `rbd create --size`.
    pub const MB: u64 = 1_000_000;

    /// A size of `bytes` bytes.
    pub const fn from_bytes(bytes: u64) -> Self {
        Self(bytes)
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// The size in whole decimal megabytes, truncated (volplugin's `ActualSize`).
    pub const fn whole_mb(self) -> u64 {
        self.0 / Self::MB
    }

    /// True for a zero size.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Parses `10MB`, `10M`, `10mb`, `1.5GB`, `10 MB`, `10MiB`, `1GiB`, `4096`, `0`.
    ///
    /// A fraction of a byte is truncated, as volplugin did.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let bad = || ValueError::BadSize {
            input: input.to_owned(),
        };
        let s = input.trim();
        let num_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(num_end);
        let unit = unit.trim_start_matches(' ');
        if num.is_empty()
            || num.starts_with('.')
            || num.ends_with('.')
            || num.matches('.').count() > 1
        {
            return Err(bad());
        }
        let mult = unit_multiplier(unit).ok_or_else(bad)?;
        let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
        let overflow = || ValueError::SizeOverflow {
            input: input.to_owned(),
        };
        let whole: u128 = whole.parse().map_err(|_| overflow())?;
        let mut bytes = whole.checked_mul(u128::from(mult)).ok_or_else(overflow)?;
        if !frac.is_empty() {
            // Exact decimal arithmetic: frac digits / 10^len * mult, truncated.
            let digits = frac.len().min(30);
            let frac_val: u128 = frac[..digits].parse().map_err(|_| bad())?;
            let scale = 10u128.pow(u32::try_from(digits).map_err(|_| bad())?);
            bytes = bytes
                .checked_add(frac_val * u128::from(mult) / scale)
                .ok_or_else(overflow)?;
        }
        u64::try_from(bytes).map(Self).map_err(|_| overflow())
    }
}

fn unit_multiplier(unit: &str) -> Option<u64> {
    if unit.is_empty() || unit == "B" || unit == "b" {
        return Some(1);
    }
    // Binary: Ki, KiB, Mi, MiB ... (case-insensitive on the letter, the 'i' marks binary).
    let lower = unit.to_ascii_lowercase();
    for (name, mult) in BINARY {
        let n = name.to_ascii_lowercase();
        if lower == n || lower == format!("{n}b") {
            return Some(mult);
        }
    }
    for (name, mult) in DECIMAL {
        let n = name.to_ascii_lowercase();
        if lower == n || lower == format!("{n}b") {
            return Some(mult);
        }
    }
    None
}

impl fmt::Display for Size {
    /// The shortest exact form: `10MB`, `10MiB`, `1500kB`, `4097B`... `0` for zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0");
        }
        for (name, mult) in DECIMAL.iter().chain(BINARY.iter()) {
            if self.0.is_multiple_of(*mult) {
                let unit = if *name == "k" {
                    "kB".to_owned()
                } else {
                    format!("{name}B")
                };
                return write!(f, "{}{unit}", self.0 / mult);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl fmt::Debug for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Size({self})")
    }
}

impl FromStr for Size {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        Self::parse(s)
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Bytes(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(s) => Self::parse(&s).map_err(serde::de::Error::custom),
            Raw::Bytes(b) => Ok(Self(b)),
        }
    }
}

/// Parses a duration such as `30s`, `10m`, `1h30m`, `2d` or `1w` (humantime syntax).
pub fn parse_duration(input: &str) -> Result<Duration, ValueError> {
    humantime::parse_duration(input.trim()).map_err(|e| ValueError::BadDuration {
        input: input.to_owned(),
        reason: e.to_string(),
    })
}

/// Formats a duration compactly (`30s`, `1h 30m`).
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn volplugin_examples() {
        // volplugin's ActualSize table, in MB.
        assert_eq!(Size::parse("10MB").unwrap().whole_mb(), 10);
        assert_eq!(Size::parse("10M").unwrap().whole_mb(), 10);
        assert_eq!(Size::parse("1GB").unwrap().whole_mb(), 1000);
        assert_eq!(Size::parse("0").unwrap().whole_mb(), 0);
        assert_eq!(Size::parse("500KB").unwrap().whole_mb(), 0);
        assert!(Size::parse("garbage").is_err());
        assert!(Size::parse("").is_err());
    }

    #[test]
    fn decimal_and_binary() {
        assert_eq!(Size::parse("10MB").unwrap().bytes(), 10_000_000);
        assert_eq!(Size::parse("10MiB").unwrap().bytes(), 10 * 1024 * 1024);
        assert_eq!(Size::parse("1GiB").unwrap().bytes(), 1 << 30);
        assert_eq!(Size::parse("1.5GB").unwrap().bytes(), 1_500_000_000);
        assert_eq!(Size::parse("1.5 KiB").unwrap().bytes(), 1536);
        assert_eq!(Size::parse("10mb").unwrap().bytes(), 10_000_000);
        assert_eq!(Size::parse("4096").unwrap().bytes(), 4096);
        assert_eq!(Size::parse("4096B").unwrap().bytes(), 4096);
        assert_eq!(Size::parse("2k").unwrap().bytes(), 2000);
        for bad in [
            "1..5MB", ".5MB", "5.MB", "-1MB", "10 XB", "10MBB", "MB", "1e9",
        ] {
            assert!(Size::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            Size::parse("99999999999999999999PB"),
            Err(ValueError::SizeOverflow { .. })
        ));
    }

    #[test]
    fn format_is_shortest_exact() {
        assert_eq!(Size::from_bytes(10_000_000).to_string(), "10MB");
        assert_eq!(Size::from_bytes(10 << 20).to_string(), "10MiB");
        assert_eq!(Size::from_bytes(1_500_000_000).to_string(), "1500MB");
        assert_eq!(Size::from_bytes(4097).to_string(), "4097B");
        assert_eq!(Size::from_bytes(0).to_string(), "0");
        assert_eq!(Size::from_bytes(2000).to_string(), "2kB");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(
            parse_duration("2d").unwrap(),
            Duration::from_secs(2 * 86400)
        );
        assert_eq!(
            parse_duration("1w").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert!(parse_duration("soon").is_err());
    }

    proptest! {
        #[test]
        fn format_parse_round_trip(b in any::<u64>()) {
            let s = Size::from_bytes(b);
            prop_assert_eq!(Size::parse(&s.to_string()).unwrap(), s);
        }

        #[test]
        fn unit_round_trip(n in 0u64..1_000_000, unit in prop::sample::select(vec!["", "B", "kB", "MB", "GB", "KiB", "MiB", "GiB", "TiB"])) {
            let s = Size::parse(&format!("{n}{unit}")).unwrap();
            prop_assert_eq!(Size::parse(&s.to_string()).unwrap(), s);
            let json = serde_json::to_string(&s).unwrap();
            prop_assert_eq!(serde_json::from_str::<Size>(&json).unwrap(), s);
        }

        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = Size::parse(&s);
            let _ = parse_duration(&s);
        }
    }
}
