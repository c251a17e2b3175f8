//! What names a group configuration: its [`Digest`], and the [`Generation`] a committed
//! change gets.

use std::fmt;

use serde::{Deserialize, Serialize};

/// SHA-256 of a document's canonical bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first 12 hex digits name a digest well enough in logs.
        write!(f, "Digest({})", &self.to_string()[..12])
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Digest, String> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("not a digest (64 hex digits): {s:?}"));
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(Digest(out))
    }
}

/// A committed change of the group configuration: which device made it, its counter (one more
/// than the greatest this device had seen), when (Unix ms, for people), and the digest of the
/// configuration it produced. Generations are ordered by (counter, time, origin): the same
/// order on every device.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Generation {
    pub origin: String,
    pub counter: u64,
    pub time_ms: u64,
    pub digest: Digest,
}

impl Generation {
    /// Whether this generation is newer than `other`.
    pub fn newer(&self, other: &Generation) -> bool {
        (self.counter, self.time_ms, &self.origin) > (other.counter, other.time_ms, &other.origin)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} ({})",
            self.origin,
            self.counter,
            &self.digest.to_string()[..12]
        )
    }
}
