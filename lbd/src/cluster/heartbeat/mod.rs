//! The heartbeat datagram: its binary encoding, its HMAC-SHA256 authentication under the
//! device group's key, and the replay guard that orders what each peer sends.
//!
//! Every device of the group sends a [`Heartbeat`] to each peer's failover address over UDP
//! every heartbeat interval (100 ms, say). Heartbeats are authenticated with HMAC-SHA256
//! (HMAC: RFC 2104; SHA-256: FIPS 180-4) keyed by the group key, and carry an
//! `(epoch, seq)` pair so that forged, corrupted or replayed heartbeats are ignored:
//!
//! - [`encode`] turns a heartbeat into one datagram, tag included.
//! - [`decode`] verifies the tag first (in constant time), and only then parses the body.
//! - [`ReplayGuard`] accepts, per sending device, only heartbeats whose `(epoch, seq)` is
//!   strictly greater than the last one accepted from that device, and only from the group's
//!   other devices.
//! - [`check_fresh`] refuses a heartbeat whose `sent_ms` is further than `heartbeat_max_age`
//!   from this device's clock. The replay guard is in memory: a device that restarts has
//!   forgotten what it accepted, and without this check one old captured heartbeat per peer
//!   (stale manual orders included) would be accepted once. The group's clocks must agree
//!   within the tolerance (NTP), as BIG-IP requires for its device groups.
//!
//! This module is sans-IO: it opens no sockets, reads no clocks, spawns nothing, and never
//! panics on any input (every length is checked; trailing bytes are rejected). It does not
//! decide anything about liveness or placement (that is `placement`'s job), and it does not
//! encrypt: heartbeats are authenticated, not secret.
//!
//! # Wire format (version 4; versions 1 to 3 are read)
//!
//! Integers are big-endian. A `name` is a `u8` length (1..=64) followed by that many bytes of
//! UTF-8. The whole datagram is at most [`MAX_DATAGRAM`] (1400) bytes, so it fits in one
//! unfragmented UDP datagram on any ordinary path.
//!
//! ```text
//!  offset  size      field
//! +-------+-------+-------+-------+-------+-------+
//! |  'S'  |  'L'  |  'H'  |  'B'  |version| flags |  0  6   magic, version = 3, flags = 0
//! +-------+-------+-------+-------+-------+-------+
//! |  len  | device (len bytes of UTF-8) ...       |  6  1+n sending device, n = 1..=64
//! +-------+---------------------------------------+
//! | epoch: u64                                    |     8
//! +-----------------------------------------------+
//! | seq: u64                                      |     8
//! +-----------------------------------------------+
//! | sent_ms: u64                                  |     8
//! +-------+---------------------------------------+
//! |elig.  |                                             1   0 or 1
//! +-------+---------------------------------------+
//! | usable_ms: u64                                |     8   usable for (version 3)
//! +---------------+-------------------------------+
//! | active count  | count x ( traffic group: name,|     2+  traffic groups held, each
//! |               |           generation: u64,    |         with its claim's generation
//! |               |           claim flags: u8 )   |         (bit 0: by a manual order)
//! +---------------+-------------------------------+
//! | order count   | count x ( id: u64,            |     2+  manual placement orders
//! |               |           traffic group: name,|
//! |               |           to: name )          |
//! +---------------+-------------------------------+
//! | unsynced count| count x name                  |     2+  traffic groups not in sync
//! +---------------+-------------------------------+         (mirroring)
//! | unavail. count| count x ( family: u8 (4 | 6), |     2+  spanning virtual addresses
//! |               |   address: 4 | 16 bytes )     |         not available here
//! +-------+-------+-------------------------------+
//! |config | 0: none; 1: origin: name,             |     1+  the group configuration
//! |       |   counter: u64, time_ms: u64,         |         held (version 4; config
//! |       |   digest: 32 bytes, dirty: u8 (0 | 1) |         sync)
//! +-------+---------------------------------------+
//! | tag: 32 bytes                                 |     32  HMAC-SHA256(group key,
//! +-----------------------------------------------+         every byte above)
//! ```
//!
//! Version 1 had no `usable_ms`, no generations (the active list is names only), no unsynced
//! and no unavailable list; version 2 added the unsynced list (written only when not empty).
//! Version 3 adds `usable_ms`, the claims' generations and the unavailable addresses, and
//! always carries both lists; version 4 adds the configuration mark. [`decode`] reads all four
//! (a missing generation is 0, a missing `usable_ms` is `u64::MAX`, missing lists are empty,
//! a missing mark is none); [`encode`] writes version 4, so every device of a group must run
//! a release that reads it.
//!
//! `flags` is reserved: senders write 0 and receivers reject anything else, so that a later
//! meaning of a flag is never silently ignored (a new meaning comes with a new version).
//!
//! # Order of checks in [`decode`]
//!
//! Only the datagram's length is looked at before the tag is verified (too short to hold a
//! header and a tag, or longer than [`MAX_DATAGRAM`]). Magic, version, flags and body are
//! examined only once the tag has proved the datagram comes from a holder of the group key;
//! anything unauthenticated is simply "bad authentication tag".
//!
//! # Stale heartbeats
//!
//! A device that hung (SIGSTOP, a long pause) and resumes may find many heartbeats queued in
//! its socket: they are still in `(epoch, seq)` order, and the guard accepts them in turn, so
//! the newest read is the newest state. The caller should drain the socket before acting and
//! judge liveness by when it last *received* an accepted heartbeat, never by `sent_ms`. A
//! reordered or duplicated older datagram is rejected as replayed and must not refresh
//! liveness. A restarted device picks a greater epoch, so its sequence starting again at 0 is
//! accepted.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Claim, ConfigMark, Heartbeat, Order};

#[cfg(test)]
mod tests;

type HmacSha256 = Hmac<Sha256>;

/// The datagram's first four bytes.
pub const MAGIC: [u8; 4] = *b"SLHB";
/// The first wire format version: claims without generations, no unsynced or unavailable list.
pub const VERSION_1: u8 = 1;
/// Version 1 plus the unsynced list (non-empty).
pub const VERSION_UNSYNCED: u8 = 2;
/// Claims with generations, the unsynced and the unavailable lists.
pub const VERSION_3: u8 = 3;
/// The version [`encode`] writes: version 3 plus the configuration mark.
pub const VERSION: u8 = 4;
/// The largest datagram [`encode`] produces and [`decode`] accepts, tag included.
pub const MAX_DATAGRAM: usize = 1400;
/// The longest name (device or traffic group), in bytes of UTF-8.
pub const MAX_NAME: usize = 64;
/// The shortest group key accepted, in bytes.
pub const MIN_KEY: usize = 16;
/// Length of the HMAC-SHA256 tag ending every datagram.
pub const TAG_LEN: usize = 32;

/// Magic, version, flags.
const HEADER_LEN: usize = 6;

/// Why a heartbeat could not be encoded, decoded, accepted, or a group key loaded.
#[derive(Debug, thiserror::Error)]
pub enum HeartbeatError {
    #[error("heartbeat truncated: {len} bytes, at least {min} needed")]
    Truncated { len: usize, min: usize },
    #[error("bad heartbeat magic")]
    BadMagic,
    #[error("unsupported heartbeat version {0}")]
    UnsupportedVersion(u8),
    #[error("bad heartbeat authentication tag")]
    BadTag,
    #[error("malformed heartbeat field {0}")]
    Malformed(&'static str),
    #[error("heartbeat has {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("heartbeat too large: {0} bytes, at most {MAX_DATAGRAM}")]
    TooLarge(usize),
    #[error(
        "replayed heartbeat from {device} (epoch {epoch} seq {seq}, last {last_epoch} {last_seq})"
    )]
    Replayed {
        device: String,
        epoch: u64,
        seq: u64,
        last_epoch: u64,
        last_seq: u64,
    },
    #[error(
        "stale heartbeat from {device}: sent at {sent_ms} ms, {age_ms} ms from this device's \
         clock (more than the {max_age_ms} ms allowed: a replay, or clocks out of step)"
    )]
    Stale {
        device: String,
        sent_ms: u64,
        /// |now − sent_ms|.
        age_ms: u64,
        max_age_ms: u64,
    },
    #[error("heartbeat from unknown device {0}")]
    UnknownDevice(String),
    #[error("heartbeat from myself (a loop or a forgery)")]
    FromMyself,
    #[error("group key too short: {0} bytes, at least {MIN_KEY}")]
    KeyTooShort(usize),
    #[error("group key is not valid hex")]
    KeyNotHex,
    #[error("cannot read group key file {}: {source}", path.display())]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "group key file {} has mode {mode:o}: group and others must have no access (chmod 600)",
        path.display()
    )]
    KeyFileMode { path: PathBuf, mode: u32 },
}

/// The device group's shared secret, keying HMAC-SHA256.
///
/// Holds the HMAC state derived from the key, not the key bytes. `Debug` never shows it.
#[derive(Clone)]
pub struct GroupKey {
    mac: HmacSha256,
}

impl GroupKey {
    /// A key from raw bytes: at least [`MIN_KEY`] of them.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HeartbeatError> {
        if bytes.len() < MIN_KEY {
            return Err(HeartbeatError::KeyTooShort(bytes.len()));
        }
        // HMAC takes keys of any length (RFC 2104 section 2), so this cannot fail.
        let mac = <HmacSha256 as Mac>::new_from_slice(bytes)
            .map_err(|_| HeartbeatError::KeyTooShort(bytes.len()))?;
        Ok(GroupKey { mac })
    }

    /// A key written in hex (either case; surrounding whitespace ignored), at least
    /// [`MIN_KEY`] bytes once decoded (`openssl rand -hex 32` makes a good one).
    pub fn from_hex(hex: &str) -> Result<Self, HeartbeatError> {
        let bytes = hex_decode(hex.trim()).ok_or(HeartbeatError::KeyNotHex)?;
        Self::from_bytes(&bytes)
    }

    /// A key read from a file, surrounding ASCII whitespace trimmed: hex if what remains is
    /// an even number of hex digits, the raw bytes otherwise.
    ///
    /// A file that group or others may access is refused (whoever reads the key can forge
    /// heartbeats), as ssh refuses a private key others can read.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, HeartbeatError> {
        use std::os::unix::fs::PermissionsExt;
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|source| HeartbeatError::KeyFile {
            path: path.to_path_buf(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(HeartbeatError::KeyFileMode {
                path: path.to_path_buf(),
                mode,
            });
        }
        let content = std::fs::read(path).map_err(|source| HeartbeatError::KeyFile {
            path: path.to_path_buf(),
            source,
        })?;
        let trimmed = content.trim_ascii();
        match std::str::from_utf8(trimmed).ok().and_then(hex_decode) {
            Some(bytes) => Self::from_bytes(&bytes),
            None => Self::from_bytes(trimmed),
        }
    }
}

impl fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GroupKey(<redacted>)")
    }
}

/// Hex to bytes: `None` unless `s` is a non-empty, even number of hex digits.
fn hex_decode(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let pairs = s.as_bytes().chunks_exact(2);
    if s.is_empty() || !pairs.remainder().is_empty() {
        return None;
    }
    pairs
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// The datagram carrying `hb`, authenticated under `key`.
///
/// Fails if a name is empty or longer than [`MAX_NAME`] bytes, or if the datagram would
/// exceed [`MAX_DATAGRAM`] bytes.
pub fn encode(hb: &Heartbeat, key: &GroupKey) -> Result<Vec<u8>, HeartbeatError> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(0); // flags
    put_name(&mut out, &hb.device, "device")?;
    out.extend_from_slice(&hb.epoch.to_be_bytes());
    out.extend_from_slice(&hb.seq.to_be_bytes());
    out.extend_from_slice(&hb.sent_ms.to_be_bytes());
    out.push(u8::from(hb.eligible));
    out.extend_from_slice(&hb.usable_ms.to_be_bytes());
    put_count(&mut out, hb.active.len())?;
    for claim in &hb.active {
        put_name(&mut out, &claim.traffic_group, "active traffic group")?;
        out.extend_from_slice(&claim.generation.to_be_bytes());
        out.push(u8::from(claim.ordered));
    }
    put_count(&mut out, hb.orders.len())?;
    for order in &hb.orders {
        out.extend_from_slice(&order.id.to_be_bytes());
        put_name(&mut out, &order.traffic_group, "order traffic group")?;
        put_name(&mut out, &order.to, "order device")?;
        // Stop early rather than build a huge buffer only to refuse it.
        if out.len() + TAG_LEN > MAX_DATAGRAM {
            return Err(HeartbeatError::TooLarge(out.len() + TAG_LEN));
        }
    }
    put_count(&mut out, hb.unsynced.len())?;
    for tg in &hb.unsynced {
        put_name(&mut out, tg, "unsynced traffic group")?;
    }
    put_count(&mut out, hb.unavailable.len())?;
    for a in &hb.unavailable {
        match a {
            IpAddr::V4(v4) => {
                out.push(4);
                out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.push(6);
                out.extend_from_slice(&v6.octets());
            }
        }
        if out.len() + TAG_LEN > MAX_DATAGRAM {
            return Err(HeartbeatError::TooLarge(out.len() + TAG_LEN));
        }
    }
    match &hb.config {
        None => out.push(0),
        Some(m) => {
            out.push(1);
            put_name(&mut out, &m.origin, "config origin")?;
            out.extend_from_slice(&m.counter.to_be_bytes());
            out.extend_from_slice(&m.time_ms.to_be_bytes());
            out.extend_from_slice(&m.digest);
            out.push(u8::from(m.dirty));
        }
    }
    seal(out, key)
}

/// Appends the tag over `body` (everything before the tag); checks the size limit.
fn seal(mut body: Vec<u8>, key: &GroupKey) -> Result<Vec<u8>, HeartbeatError> {
    let len = body.len() + TAG_LEN;
    if len > MAX_DATAGRAM {
        return Err(HeartbeatError::TooLarge(len));
    }
    let mut mac = key.mac.clone();
    mac.update(&body);
    body.extend_from_slice(&mac.finalize().into_bytes());
    Ok(body)
}

fn put_name(out: &mut Vec<u8>, name: &str, field: &'static str) -> Result<(), HeartbeatError> {
    let len = name.len();
    if len == 0 || len > MAX_NAME {
        return Err(HeartbeatError::Malformed(field));
    }
    out.push(len as u8); // <= MAX_NAME < 256
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

fn put_count(out: &mut Vec<u8>, count: usize) -> Result<(), HeartbeatError> {
    // Any list that long would exceed MAX_DATAGRAM anyway.
    let count = u16::try_from(count).map_err(|_| HeartbeatError::TooLarge(usize::MAX))?;
    out.extend_from_slice(&count.to_be_bytes());
    if out.len() + TAG_LEN > MAX_DATAGRAM {
        return Err(HeartbeatError::TooLarge(out.len() + TAG_LEN));
    }
    Ok(())
}

/// The heartbeat in `datagram`, if its tag under `key` is right and it is well formed.
///
/// Verifies the tag first, in constant time, then parses. Never panics.
pub fn decode(datagram: &[u8], key: &GroupKey) -> Result<Heartbeat, HeartbeatError> {
    let min = HEADER_LEN + TAG_LEN;
    if datagram.len() < min {
        return Err(HeartbeatError::Truncated {
            len: datagram.len(),
            min,
        });
    }
    if datagram.len() > MAX_DATAGRAM {
        return Err(HeartbeatError::TooLarge(datagram.len()));
    }
    let (body, tag) = datagram.split_at(datagram.len() - TAG_LEN);
    let mut mac = key.mac.clone();
    mac.update(body);
    mac.verify_slice(tag).map_err(|_| HeartbeatError::BadTag)?;

    let mut r = Reader { rest: body };
    if r.take(4, "magic")? != MAGIC {
        return Err(HeartbeatError::BadMagic);
    }
    let version = r.u8("version")?;
    if !(VERSION_1..=VERSION).contains(&version) {
        return Err(HeartbeatError::UnsupportedVersion(version));
    }
    if r.u8("flags")? != 0 {
        return Err(HeartbeatError::Malformed("flags"));
    }
    let device = r.name("device")?;
    let epoch = r.u64("epoch")?;
    let seq = r.u64("seq")?;
    let sent_ms = r.u64("sent_ms")?;
    let eligible = match r.u8("eligible")? {
        0 => false,
        1 => true,
        _ => return Err(HeartbeatError::Malformed("eligible")),
    };
    let usable_ms = if version >= VERSION_3 {
        r.u64("usable_ms")?
    } else {
        u64::MAX
    };
    let count = r.u16("active count")?;
    // Each entry takes at least 2 bytes: bound the allocation by what is there.
    let mut active = Vec::with_capacity(usize::from(count).min(r.rest.len() / 2));
    for _ in 0..count {
        let traffic_group = r.name("active traffic group")?;
        let (generation, ordered) = if version >= VERSION_3 {
            let g = r.u64("claim generation")?;
            let ordered = match r.u8("claim flags")? {
                0 => false,
                1 => true,
                _ => return Err(HeartbeatError::Malformed("claim flags")),
            };
            (g, ordered)
        } else {
            (0, false)
        };
        active.push(Claim {
            traffic_group,
            generation,
            ordered,
        });
    }
    let count = r.u16("order count")?;
    let mut orders = Vec::with_capacity(usize::from(count).min(r.rest.len() / 12));
    for _ in 0..count {
        let id = r.u64("order id")?;
        let traffic_group = r.name("order traffic group")?;
        let to = r.name("order device")?;
        orders.push(Order {
            id,
            traffic_group,
            to,
        });
    }
    let mut unsynced = Vec::new();
    if version >= VERSION_UNSYNCED {
        let count = r.u16("unsynced count")?;
        // Version 2 is only written for a non-empty list.
        if count == 0 && version == VERSION_UNSYNCED {
            return Err(HeartbeatError::Malformed("unsynced count"));
        }
        unsynced.reserve(usize::from(count).min(r.rest.len() / 2));
        for _ in 0..count {
            unsynced.push(r.name("unsynced traffic group")?);
        }
    }
    let mut unavailable = Vec::new();
    if version >= VERSION_3 {
        let count = r.u16("unavailable count")?;
        // Each entry takes at least 5 bytes.
        unavailable.reserve(usize::from(count).min(r.rest.len() / 5));
        for _ in 0..count {
            let a = match r.u8("unavailable address family")? {
                4 => IpAddr::from(r.array::<4>("unavailable address")?),
                6 => IpAddr::from(r.array::<16>("unavailable address")?),
                _ => return Err(HeartbeatError::Malformed("unavailable address family")),
            };
            unavailable.push(a);
        }
    }
    let config = if version >= VERSION {
        match r.u8("config")? {
            0 => None,
            1 => Some(ConfigMark {
                origin: r.name("config origin")?,
                counter: r.u64("config counter")?,
                time_ms: r.u64("config time")?,
                digest: r.array::<32>("config digest")?,
                dirty: match r.u8("config dirty")? {
                    0 => false,
                    1 => true,
                    _ => return Err(HeartbeatError::Malformed("config dirty")),
                },
            }),
            _ => return Err(HeartbeatError::Malformed("config")),
        }
    } else {
        None
    };
    if !r.rest.is_empty() {
        return Err(HeartbeatError::TrailingBytes(r.rest.len()));
    }
    Ok(Heartbeat {
        device,
        epoch,
        seq,
        sent_ms,
        eligible,
        usable_ms,
        active,
        orders,
        unsynced,
        unavailable,
        config,
    })
}

/// A cursor over the authenticated body; running off its end is a malformed field.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], HeartbeatError> {
        if self.rest.len() < n {
            return Err(HeartbeatError::Malformed(field));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], HeartbeatError> {
        let bytes = self.take(N, field)?;
        bytes
            .try_into()
            .map_err(|_| HeartbeatError::Malformed(field))
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, HeartbeatError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, HeartbeatError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, HeartbeatError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn name(&mut self, field: &'static str) -> Result<String, HeartbeatError> {
        let len = usize::from(self.u8(field)?);
        if len == 0 || len > MAX_NAME {
            return Err(HeartbeatError::Malformed(field));
        }
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| HeartbeatError::Malformed(field))
    }
}

/// Accepts, per sending device, only heartbeats newer than the last one accepted.
///
/// "Newer" is `(epoch, seq)` strictly greater, compared lexicographically: a greater epoch
/// (a restart) accepts any seq, 0 included. Heartbeats from devices outside the group, or
/// claiming to come from this device, are rejected.
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    me: String,
    /// Every other device of the group, with the `(epoch, seq)` last accepted from it.
    last: HashMap<String, Option<(u64, u64)>>,
    /// Devices that left the group (a live membership change), with the last accepted from
    /// them: kept, so that one that comes back cannot be replayed its old heartbeats.
    gone: HashMap<String, Option<(u64, u64)>>,
}

/// Whether `hb` was sent within `max_age_ms` of `now_ms` (both Unix ms, by the sender's and
/// this device's clocks), either way.
pub fn check_fresh(hb: &Heartbeat, now_ms: u64, max_age_ms: u64) -> Result<(), HeartbeatError> {
    let age_ms = now_ms.abs_diff(hb.sent_ms);
    if age_ms > max_age_ms {
        return Err(HeartbeatError::Stale {
            device: hb.device.clone(),
            sent_ms: hb.sent_ms,
            age_ms,
            max_age_ms,
        });
    }
    Ok(())
}

impl ReplayGuard {
    /// A guard for device `me` of the group made of `devices` (`me` may be among them).
    pub fn new(devices: &[String], me: &str) -> Self {
        let last = devices
            .iter()
            .filter(|d| d.as_str() != me)
            .map(|d| (d.clone(), None))
            .collect();
        ReplayGuard {
            me: me.to_owned(),
            last,
            gone: HashMap::new(),
        }
    }

    /// The group is now made of `devices` (a live membership change): heartbeats from the
    /// devices that left are refused from now on; what was accepted from a device is kept
    /// across its leaving and coming back.
    pub fn set_devices(&mut self, devices: &[String]) {
        let wanted: std::collections::HashSet<&str> = devices
            .iter()
            .map(String::as_str)
            .filter(|d| *d != self.me)
            .collect();
        let leaving: Vec<String> = self
            .last
            .keys()
            .filter(|d| !wanted.contains(d.as_str()))
            .cloned()
            .collect();
        for d in leaving {
            if let Some(v) = self.last.remove(&d) {
                self.gone.insert(d, v);
            }
        }
        for d in wanted {
            if !self.last.contains_key(d) {
                let v = self.gone.remove(d).flatten();
                self.last.insert(d.to_string(), v);
            }
        }
    }

    /// Accepts `hb` and records its `(epoch, seq)`, or says why it must be ignored (then
    /// records nothing).
    pub fn check(&mut self, hb: &Heartbeat) -> Result<(), HeartbeatError> {
        if hb.device == self.me {
            return Err(HeartbeatError::FromMyself);
        }
        let Some(last) = self.last.get_mut(&hb.device) else {
            return Err(HeartbeatError::UnknownDevice(hb.device.clone()));
        };
        let this = (hb.epoch, hb.seq);
        if let Some((last_epoch, last_seq)) = *last {
            if this <= (last_epoch, last_seq) {
                return Err(HeartbeatError::Replayed {
                    device: hb.device.clone(),
                    epoch: hb.epoch,
                    seq: hb.seq,
                    last_epoch,
                    last_seq,
                });
            }
        }
        *last = Some(this);
        Ok(())
    }

    /// The `(epoch, seq)` last accepted from `device`, if any.
    pub fn last_accepted(&self, device: &str) -> Option<(u64, u64)> {
        self.last.get(device).copied().flatten()
    }
}
