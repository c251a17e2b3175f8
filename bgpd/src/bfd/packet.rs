//! The BFD Control packet of RFC 5880 §4.1 and its Authentication Section (§4.2–§4.4).
//!
//! [`decode`] applies every reception check of RFC 5880 §6.8.6 that concerns the packet alone
//! (version, Length against the bytes received and against the A bit, Detect Mult, Multipoint,
//! My Discriminator, Your Discriminator against State, Auth Len by Auth Type); the checks that
//! need a session (Your Discriminator lookup, A bit against the session's authentication,
//! the digest and the sequence number) belong to [`crate::bfd::session`]. [`encode`] writes a
//! packet as it is: it never fails and computes the Length and the A bit itself.
//!
//! Authentication (RFC 5880 §6.7): [`sign`] fills the Authentication Section of an outgoing
//! packet, [`check_auth`] checks the type, key ID and password or digest of a received one, and
//! [`ReplayWindow`] applies the sequence-number rules of §6.7.3/§6.7.4.
//!
//! Bytes past the Length field are ignored (RFC 5880 §6.8.6 only rejects a Length greater than
//! the payload; RFC 9764 pads BFD packets that way). Without the A bit, Length must be exactly
//! 24: the mandatory section is all there is. Nothing here panics on any input.

use md5::{Digest as _, Md5};
use sha1::Sha1;

/// RFC 5880 §4.1: the only version.
pub const VERSION: u8 = 1;
/// Length of the mandatory section (RFC 5880 §4.1).
pub const MANDATORY_LEN: usize = 24;
/// Auth Len of the Keyed MD5 / Meticulous Keyed MD5 section (RFC 5880 §4.3).
pub const MD5_AUTH_LEN: u8 = 24;
/// Auth Len of the Keyed SHA1 / Meticulous Keyed SHA1 section (RFC 5880 §4.4).
pub const SHA1_AUTH_LEN: u8 = 28;
/// Longest Simple Password (RFC 5880 §4.2: 1 to 16 bytes).
pub const MAX_PASSWORD_LEN: usize = 16;
/// Longest Keyed MD5 key (RFC 5880 §6.7.3: up to 16 bytes, zero-padded).
pub const MAX_MD5_KEY_LEN: usize = 16;
/// Longest Keyed SHA1 key (RFC 5880 §6.7.4: up to 20 bytes, zero-padded).
pub const MAX_SHA1_KEY_LEN: usize = 20;

/// Errors of the packet layer: decoding (RFC 5880 §6.8.6), key validation and authentication
/// (§6.7). Every one means "discard the packet" (or "refuse the key").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet too short: {0} bytes, the mandatory section is 24")]
    Truncated(usize),
    #[error("version {0}, only 1 is defined")]
    Version(u8),
    #[error("length field {length} below the minimum {min}")]
    LengthTooSmall { length: u8, min: u8 },
    #[error("length field {length} beyond the {received} bytes received")]
    LengthBeyondPayload { length: u8, received: usize },
    #[error("length field {length} does not match the A bit and auth section ({expected})")]
    LengthMismatch { length: u8, expected: usize },
    #[error("detect mult is zero")]
    ZeroDetectMult,
    #[error("multipoint (M) bit set")]
    Multipoint,
    #[error("my discriminator is zero")]
    ZeroMyDiscriminator,
    #[error("your discriminator is zero in state {0}")]
    ZeroYourDiscriminator(State),
    #[error("unknown auth type {0}")]
    UnknownAuthType(u8),
    #[error("auth len {len} invalid for auth type {auth_type}")]
    AuthLen { auth_type: u8, len: u8 },
    #[error("{auth_type} key of {len} bytes (allowed 1 to {max})")]
    KeyLength {
        auth_type: AuthType,
        len: usize,
        max: usize,
    },
    #[error("auth type {received} where {expected} is configured")]
    AuthTypeMismatch {
        received: AuthType,
        expected: AuthType,
    },
    #[error("auth key id {received} where {expected} is configured")]
    KeyIdMismatch { received: u8, expected: u8 },
    #[error("wrong password")]
    BadPassword,
    #[error("wrong digest")]
    BadDigest,
    #[error("sequence number {seq} outside [{low}, {high}]")]
    Sequence { seq: u32, low: u32, high: u32 },
}

/// RFC 5880 §4.1 State (Sta) values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    AdminDown,
    Down,
    Init,
    Up,
}

impl State {
    pub fn code(self) -> u8 {
        match self {
            State::AdminDown => 0,
            State::Down => 1,
            State::Init => 2,
            State::Up => 3,
        }
    }

    /// From the 2-bit field (higher bits ignored).
    pub fn from_code(v: u8) -> State {
        match v & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
}

impl State {
    /// The state as bgpd's control socket and logs name it: `admin-down`, `down`, `init`, `up`.
    pub fn name(self) -> &'static str {
        match self {
            State::AdminDown => "admin-down",
            State::Down => "down",
            State::Init => "init",
            State::Up => "up",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::AdminDown => "AdminDown",
            State::Down => "Down",
            State::Init => "Init",
            State::Up => "Up",
        })
    }
}

/// RFC 5880 §4.1 Diagnostic (Diag) codes; 9–31 are reserved and kept as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Diag {
    /// 0 No Diagnostic.
    None,
    /// 1 Control Detection Time Expired.
    ControlDetectionTimeExpired,
    /// 2 Echo Function Failed.
    EchoFunctionFailed,
    /// 3 Neighbor Signaled Session Down.
    NeighborSignaledSessionDown,
    /// 4 Forwarding Plane Reset.
    ForwardingPlaneReset,
    /// 5 Path Down.
    PathDown,
    /// 6 Concatenated Path Down.
    ConcatenatedPathDown,
    /// 7 Administratively Down.
    AdministrativelyDown,
    /// 8 Reverse Concatenated Path Down.
    ReverseConcatenatedPathDown,
    /// 9–31, reserved for future use (only the low 5 bits are encoded).
    Reserved(u8),
}

impl Diag {
    pub fn code(self) -> u8 {
        match self {
            Diag::None => 0,
            Diag::ControlDetectionTimeExpired => 1,
            Diag::EchoFunctionFailed => 2,
            Diag::NeighborSignaledSessionDown => 3,
            Diag::ForwardingPlaneReset => 4,
            Diag::PathDown => 5,
            Diag::ConcatenatedPathDown => 6,
            Diag::AdministrativelyDown => 7,
            Diag::ReverseConcatenatedPathDown => 8,
            Diag::Reserved(v) => v & 0x1f,
        }
    }

    /// From the 5-bit field (higher bits ignored).
    pub fn from_code(v: u8) -> Diag {
        match v & 0x1f {
            0 => Diag::None,
            1 => Diag::ControlDetectionTimeExpired,
            2 => Diag::EchoFunctionFailed,
            3 => Diag::NeighborSignaledSessionDown,
            4 => Diag::ForwardingPlaneReset,
            5 => Diag::PathDown,
            6 => Diag::ConcatenatedPathDown,
            7 => Diag::AdministrativelyDown,
            8 => Diag::ReverseConcatenatedPathDown,
            v => Diag::Reserved(v),
        }
    }
}

impl std::fmt::Display for Diag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Diag::None => f.write_str("no diagnostic"),
            Diag::ControlDetectionTimeExpired => f.write_str("control detection time expired"),
            Diag::EchoFunctionFailed => f.write_str("echo function failed"),
            Diag::NeighborSignaledSessionDown => f.write_str("neighbor signaled session down"),
            Diag::ForwardingPlaneReset => f.write_str("forwarding plane reset"),
            Diag::PathDown => f.write_str("path down"),
            Diag::ConcatenatedPathDown => f.write_str("concatenated path down"),
            Diag::AdministrativelyDown => f.write_str("administratively down"),
            Diag::ReverseConcatenatedPathDown => f.write_str("reverse concatenated path down"),
            Diag::Reserved(v) => write!(f, "reserved diagnostic {}", v & 0x1f),
        }
    }
}

/// RFC 5880 §4.1 Auth Type values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthType {
    /// 1 Simple Password (§4.2, §6.7.2).
    SimplePassword,
    /// 2 Keyed MD5 (§4.3, §6.7.3).
    KeyedMd5,
    /// 3 Meticulous Keyed MD5.
    MeticulousKeyedMd5,
    /// 4 Keyed SHA1 (§4.4, §6.7.4).
    KeyedSha1,
    /// 5 Meticulous Keyed SHA1.
    MeticulousKeyedSha1,
}

impl AuthType {
    pub fn code(self) -> u8 {
        match self {
            AuthType::SimplePassword => 1,
            AuthType::KeyedMd5 => 2,
            AuthType::MeticulousKeyedMd5 => 3,
            AuthType::KeyedSha1 => 4,
            AuthType::MeticulousKeyedSha1 => 5,
        }
    }

    pub fn from_code(v: u8) -> Option<AuthType> {
        Some(match v {
            1 => AuthType::SimplePassword,
            2 => AuthType::KeyedMd5,
            3 => AuthType::MeticulousKeyedMd5,
            4 => AuthType::KeyedSha1,
            5 => AuthType::MeticulousKeyedSha1,
            _ => return None,
        })
    }

    /// The sequence number must strictly increase (RFC 5880 §6.7.3/§6.7.4 "Meticulous").
    pub fn is_meticulous(self) -> bool {
        matches!(
            self,
            AuthType::MeticulousKeyedMd5 | AuthType::MeticulousKeyedSha1
        )
    }

    /// Longest key (or password) for this type.
    pub fn max_key_len(self) -> usize {
        match self {
            AuthType::SimplePassword => MAX_PASSWORD_LEN,
            AuthType::KeyedMd5 | AuthType::MeticulousKeyedMd5 => MAX_MD5_KEY_LEN,
            AuthType::KeyedSha1 | AuthType::MeticulousKeyedSha1 => MAX_SHA1_KEY_LEN,
        }
    }
}

impl std::fmt::Display for AuthType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthType::SimplePassword => "simple password",
            AuthType::KeyedMd5 => "keyed MD5",
            AuthType::MeticulousKeyedMd5 => "meticulous keyed MD5",
            AuthType::KeyedSha1 => "keyed SHA1",
            AuthType::MeticulousKeyedSha1 => "meticulous keyed SHA1",
        })
    }
}

/// A Simple Password of 1 to 16 bytes (RFC 5880 §4.2); the constructor enforces the length, so
/// every [`ControlPacket`] encodes to a packet [`decode`] accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Vec<u8>);

impl Password {
    pub fn new(bytes: &[u8]) -> Result<Password, PacketError> {
        if bytes.is_empty() || bytes.len() > MAX_PASSWORD_LEN {
            return Err(PacketError::KeyLength {
                auth_type: AuthType::SimplePassword,
                len: bytes.len(),
                max: MAX_PASSWORD_LEN,
            });
        }
        Ok(Password(bytes.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Password(<{} bytes>)", self.0.len())
    }
}

/// The Authentication Section of a packet (RFC 5880 §4.2–§4.4), as carried on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// §4.2 Simple Password.
    SimplePassword { key_id: u8, password: Password },
    /// §4.3 Keyed MD5 (`meticulous`: Auth Type 3, else 2).
    Md5 {
        meticulous: bool,
        key_id: u8,
        /// MUST be zero on transmit and is ignored on receipt, but the digest covers it: kept
        /// as received so that verification hashes the bytes the peer hashed.
        reserved: u8,
        seq: u32,
        digest: [u8; 16],
    },
    /// §4.4 Keyed SHA1 (`meticulous`: Auth Type 5, else 4).
    Sha1 {
        meticulous: bool,
        key_id: u8,
        /// As for [`Auth::Md5`].
        reserved: u8,
        seq: u32,
        digest: [u8; 20],
    },
}

impl Auth {
    pub fn auth_type(&self) -> AuthType {
        match self {
            Auth::SimplePassword { .. } => AuthType::SimplePassword,
            Auth::Md5 {
                meticulous: false, ..
            } => AuthType::KeyedMd5,
            Auth::Md5 {
                meticulous: true, ..
            } => AuthType::MeticulousKeyedMd5,
            Auth::Sha1 {
                meticulous: false, ..
            } => AuthType::KeyedSha1,
            Auth::Sha1 {
                meticulous: true, ..
            } => AuthType::MeticulousKeyedSha1,
        }
    }

    pub fn key_id(&self) -> u8 {
        match self {
            Auth::SimplePassword { key_id, .. }
            | Auth::Md5 { key_id, .. }
            | Auth::Sha1 { key_id, .. } => *key_id,
        }
    }

    /// The sequence number, for the keyed types.
    pub fn seq(&self) -> Option<u32> {
        match self {
            Auth::SimplePassword { .. } => None,
            Auth::Md5 { seq, .. } | Auth::Sha1 { seq, .. } => Some(*seq),
        }
    }

    /// Auth Len (RFC 5880 §4.2–§4.4).
    pub fn auth_len(&self) -> u8 {
        match self {
            // Password::new caps the password at 16 bytes: at most 19.
            Auth::SimplePassword { password, .. } => 3 + password.0.len() as u8,
            Auth::Md5 { .. } => MD5_AUTH_LEN,
            Auth::Sha1 { .. } => SHA1_AUTH_LEN,
        }
    }
}

/// One BFD Control packet (RFC 5880 §4.1). Intervals are in microseconds, as on the wire. The
/// A bit is `auth.is_some()`; the M bit is always clear (decode rejects it, encode never sets it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPacket {
    pub diag: Diag,
    pub state: State,
    /// P: Poll.
    pub poll: bool,
    /// F: Final.
    pub final_: bool,
    /// C: Control Plane Independent.
    pub cpi: bool,
    /// D: Demand.
    pub demand: bool,
    pub detect_mult: u8,
    pub my_discriminator: u32,
    pub your_discriminator: u32,
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
    pub required_min_echo_rx_us: u32,
    pub auth: Option<Auth>,
}

const FLAG_P: u8 = 0x20;
const FLAG_F: u8 = 0x10;
const FLAG_C: u8 = 0x08;
const FLAG_A: u8 = 0x04;
const FLAG_D: u8 = 0x02;
const FLAG_M: u8 = 0x01;

fn be32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_be_bytes(w)
}

/// Decodes one Control packet from a UDP payload, applying the packet-only checks of RFC 5880
/// §6.8.6 (see the module docs).
pub fn decode(buf: &[u8]) -> Result<ControlPacket, PacketError> {
    if buf.len() < MANDATORY_LEN {
        return Err(PacketError::Truncated(buf.len()));
    }
    let version = buf[0] >> 5;
    if version != VERSION {
        return Err(PacketError::Version(version));
    }
    let flags = buf[1];
    let a_bit = flags & FLAG_A != 0;
    let length = buf[3];
    let min = if a_bit { 26 } else { 24 };
    if length < min {
        return Err(PacketError::LengthTooSmall { length, min });
    }
    if usize::from(length) > buf.len() {
        return Err(PacketError::LengthBeyondPayload {
            length,
            received: buf.len(),
        });
    }
    let buf = &buf[..usize::from(length)];
    let detect_mult = buf[2];
    if detect_mult == 0 {
        return Err(PacketError::ZeroDetectMult);
    }
    if flags & FLAG_M != 0 {
        return Err(PacketError::Multipoint);
    }
    let my_discriminator = be32(buf, 4);
    if my_discriminator == 0 {
        return Err(PacketError::ZeroMyDiscriminator);
    }
    let your_discriminator = be32(buf, 8);
    let state = State::from_code(flags >> 6);
    if your_discriminator == 0 && !matches!(state, State::Down | State::AdminDown) {
        return Err(PacketError::ZeroYourDiscriminator(state));
    }
    let auth = if a_bit {
        Some(decode_auth(&buf[MANDATORY_LEN..], length)?)
    } else {
        if usize::from(length) != MANDATORY_LEN {
            return Err(PacketError::LengthMismatch {
                length,
                expected: MANDATORY_LEN,
            });
        }
        None
    };
    Ok(ControlPacket {
        diag: Diag::from_code(buf[0]),
        state,
        poll: flags & FLAG_P != 0,
        final_: flags & FLAG_F != 0,
        cpi: flags & FLAG_C != 0,
        demand: flags & FLAG_D != 0,
        detect_mult,
        my_discriminator,
        your_discriminator,
        desired_min_tx_us: be32(buf, 12),
        required_min_rx_us: be32(buf, 16),
        required_min_echo_rx_us: be32(buf, 20),
        auth,
    })
}

/// The Authentication Section: `sec` is everything after the mandatory section up to Length
/// (at least 2 bytes: decode checked Length ≥ 26).
fn decode_auth(sec: &[u8], length: u8) -> Result<Auth, PacketError> {
    let (Some(&ty), Some(&len)) = (sec.first(), sec.get(1)) else {
        return Err(PacketError::Truncated(MANDATORY_LEN + sec.len()));
    };
    let auth_type = AuthType::from_code(ty).ok_or(PacketError::UnknownAuthType(ty))?;
    let len_ok = match auth_type {
        AuthType::SimplePassword => (4..=3 + MAX_PASSWORD_LEN as u8).contains(&len),
        AuthType::KeyedMd5 | AuthType::MeticulousKeyedMd5 => len == MD5_AUTH_LEN,
        AuthType::KeyedSha1 | AuthType::MeticulousKeyedSha1 => len == SHA1_AUTH_LEN,
    };
    if !len_ok {
        return Err(PacketError::AuthLen { auth_type: ty, len });
    }
    if usize::from(len) != sec.len() {
        return Err(PacketError::LengthMismatch {
            length,
            expected: MANDATORY_LEN + usize::from(len),
        });
    }
    let key_id = sec[2];
    Ok(match auth_type {
        AuthType::SimplePassword => Auth::SimplePassword {
            key_id,
            password: Password(sec[3..].to_vec()),
        },
        AuthType::KeyedMd5 | AuthType::MeticulousKeyedMd5 => {
            let mut digest = [0u8; 16];
            digest.copy_from_slice(&sec[8..24]);
            Auth::Md5 {
                meticulous: auth_type.is_meticulous(),
                key_id,
                reserved: sec[3],
                seq: be32(sec, 4),
                digest,
            }
        }
        AuthType::KeyedSha1 | AuthType::MeticulousKeyedSha1 => {
            let mut digest = [0u8; 20];
            digest.copy_from_slice(&sec[8..28]);
            Auth::Sha1 {
                meticulous: auth_type.is_meticulous(),
                key_id,
                reserved: sec[3],
                seq: be32(sec, 4),
                digest,
            }
        }
    })
}

/// Encodes a packet: version 1, M clear, A and Length from `auth`. Fields are written as they
/// are (a zero Detect Mult encodes; [`decode`] would reject it).
pub fn encode(p: &ControlPacket) -> Vec<u8> {
    let auth_len = p.auth.as_ref().map_or(0, Auth::auth_len);
    let length = MANDATORY_LEN as u8 + auth_len;
    let mut b = Vec::with_capacity(usize::from(length));
    b.push((VERSION << 5) | p.diag.code());
    let mut flags = p.state.code() << 6;
    for (on, bit) in [
        (p.poll, FLAG_P),
        (p.final_, FLAG_F),
        (p.cpi, FLAG_C),
        (p.auth.is_some(), FLAG_A),
        (p.demand, FLAG_D),
    ] {
        if on {
            flags |= bit;
        }
    }
    b.push(flags);
    b.push(p.detect_mult);
    b.push(length);
    for v in [
        p.my_discriminator,
        p.your_discriminator,
        p.desired_min_tx_us,
        p.required_min_rx_us,
        p.required_min_echo_rx_us,
    ] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    if let Some(a) = &p.auth {
        b.push(a.auth_type().code());
        b.push(auth_len);
        match a {
            Auth::SimplePassword { key_id, password } => {
                b.push(*key_id);
                b.extend_from_slice(&password.0);
            }
            Auth::Md5 {
                key_id,
                reserved,
                seq,
                digest,
                ..
            } => {
                b.extend_from_slice(&[*key_id, *reserved]);
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(digest);
            }
            Auth::Sha1 {
                key_id,
                reserved,
                seq,
                digest,
                ..
            } => {
                b.extend_from_slice(&[*key_id, *reserved]);
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(digest);
            }
        }
    }
    b
}

/// A configured authentication key (RFC 5880 §6.7): type, Key ID and secret. The secret is the
/// password for Simple Password (1–16 bytes), the key for the keyed types (1–16 bytes for MD5,
/// 1–20 for SHA1; zero-padded when hashed). `Debug` does not show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey {
    auth_type: AuthType,
    key_id: u8,
    secret: Vec<u8>,
}

impl AuthKey {
    pub fn new(auth_type: AuthType, key_id: u8, secret: &[u8]) -> Result<AuthKey, PacketError> {
        let max = auth_type.max_key_len();
        if secret.is_empty() || secret.len() > max {
            return Err(PacketError::KeyLength {
                auth_type,
                len: secret.len(),
                max,
            });
        }
        Ok(AuthKey {
            auth_type,
            key_id,
            secret: secret.to_vec(),
        })
    }

    pub fn auth_type(&self) -> AuthType {
        self.auth_type
    }

    pub fn key_id(&self) -> u8 {
        self.key_id
    }

    /// The secret zero-padded to N bytes (the digest field while hashing).
    fn padded<const N: usize>(&self) -> [u8; N] {
        let mut k = [0u8; N];
        for (d, s) in k.iter_mut().zip(&self.secret) {
            *d = *s;
        }
        k
    }
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthKey")
            .field("auth_type", &self.auth_type)
            .field("key_id", &self.key_id)
            .field("secret", &format_args!("<{} bytes>", self.secret.len()))
            .finish()
    }
}

/// The digest of `p` with `key` padded in the digest field (RFC 5880 §6.7.3/§6.7.4): `p.auth`
/// must already be the section of the right type; its digest is replaced while hashing.
fn compute_digest(p: &ControlPacket, key: &AuthKey) -> Option<Vec<u8>> {
    let mut p = p.clone();
    match &mut p.auth {
        Some(Auth::Md5 { digest, .. }) => {
            *digest = key.padded::<16>();
            Some(Md5::digest(encode(&p)).to_vec())
        }
        Some(Auth::Sha1 { digest, .. }) => {
            *digest = key.padded::<20>();
            Some(Sha1::digest(encode(&p)).to_vec())
        }
        _ => None,
    }
}

/// Fills the Authentication Section of an outgoing packet (RFC 5880 §6.7.2–§6.7.4): the password,
/// or the sequence number `seq` (bfd.XmitAuthSeq; ignored for Simple Password) and the digest
/// computed over the whole packet with the key in the digest field. Sign last: any later change
/// to the packet invalidates the digest.
pub fn sign(p: &mut ControlPacket, key: &AuthKey, seq: u32) {
    let meticulous = key.auth_type.is_meticulous();
    p.auth = Some(match key.auth_type {
        AuthType::SimplePassword => Auth::SimplePassword {
            key_id: key.key_id,
            password: Password(key.secret.clone()),
        },
        AuthType::KeyedMd5 | AuthType::MeticulousKeyedMd5 => Auth::Md5 {
            meticulous,
            key_id: key.key_id,
            reserved: 0,
            seq,
            digest: [0; 16],
        },
        AuthType::KeyedSha1 | AuthType::MeticulousKeyedSha1 => Auth::Sha1 {
            meticulous,
            key_id: key.key_id,
            reserved: 0,
            seq,
            digest: [0; 20],
        },
    });
    if let Some(d) = compute_digest(p, key) {
        match &mut p.auth {
            Some(Auth::Md5 { digest, .. }) => digest.copy_from_slice(&d),
            Some(Auth::Sha1 { digest, .. }) => digest.copy_from_slice(&d),
            _ => {}
        }
    }
}

/// Compares without an early exit, so that timing tells nothing about how much of a guessed
/// digest or password was right.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a received packet's Authentication Section against the configured key (RFC 5880
/// §6.7.2–§6.7.4): type, Key ID, then password or digest. Stateless: the sequence number is
/// the [`ReplayWindow`]'s business. A packet without the section is [`PacketError::BadDigest`]
/// for the caller that expected one (the session reports the A-bit mismatch itself).
pub fn check_auth(p: &ControlPacket, key: &AuthKey) -> Result<(), PacketError> {
    let Some(auth) = &p.auth else {
        return Err(PacketError::BadDigest);
    };
    if auth.auth_type() != key.auth_type {
        return Err(PacketError::AuthTypeMismatch {
            received: auth.auth_type(),
            expected: key.auth_type,
        });
    }
    if auth.key_id() != key.key_id {
        return Err(PacketError::KeyIdMismatch {
            received: auth.key_id(),
            expected: key.key_id,
        });
    }
    match auth {
        Auth::SimplePassword { password, .. } => {
            if ct_eq(&password.0, &key.secret) {
                Ok(())
            } else {
                Err(PacketError::BadPassword)
            }
        }
        Auth::Md5 { digest, .. } => check_digest(p, key, digest),
        Auth::Sha1 { digest, .. } => check_digest(p, key, digest),
    }
}

fn check_digest(p: &ControlPacket, key: &AuthKey, received: &[u8]) -> Result<(), PacketError> {
    match compute_digest(p, key) {
        Some(d) if ct_eq(&d, received) => Ok(()),
        _ => Err(PacketError::BadDigest),
    }
}

/// The receive side of the sequence-number rules (RFC 5880 §6.7.3/§6.7.4): bfd.RcvAuthSeq and
/// bfd.AuthSeqKnown. Once a sequence number is known, a keyed packet must carry one in
/// [last, last + 3 × Detect Mult] (meticulous: [last + 1, last + 3 × Detect Mult]), in 32-bit
/// circular arithmetic; Detect Mult is the received packet's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    last: Option<u32>,
}

impl ReplayWindow {
    /// bfd.RcvAuthSeq when bfd.AuthSeqKnown is 1.
    pub fn last(&self) -> Option<u32> {
        self.last
    }

    /// Whether `seq` is acceptable now (does not record it).
    pub fn check(&self, seq: u32, meticulous: bool, detect_mult: u8) -> Result<(), PacketError> {
        let Some(last) = self.last else {
            return Ok(());
        };
        let low = if meticulous {
            last.wrapping_add(1)
        } else {
            last
        };
        let high = last.wrapping_add(3 * u32::from(detect_mult));
        if seq.wrapping_sub(low) <= high.wrapping_sub(low) {
            Ok(())
        } else {
            Err(PacketError::Sequence { seq, low, high })
        }
    }

    /// Records an accepted packet's sequence number (bfd.RcvAuthSeq, bfd.AuthSeqKnown = 1).
    pub fn accept(&mut self, seq: u32) {
        self.last = Some(seq);
    }

    /// bfd.AuthSeqKnown = 0 (RFC 5880 §6.8.1: no packet for twice the Detection Time).
    pub fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests;
