//! The `ssl` spanlb plugin: persistence on the TLS session id (docs/architecture.md, "Plugins", "Where the keys
//! live"; BIG-IP's SSL persistence).
//!
//! * Client to server: the session id the client offers in its ClientHello (RFC 5246
//!   §7.4.1.2). A client that resumes a session sends the id the server gave it, so the
//!   connection goes back to the member that holds the session. An empty session id is
//!   [`Outcome::NoMatch`]: lbd uses the pool's method and then learns the id from the server.
//! * Server to client: the session id of the ServerHello (RFC 5246 §7.4.1.3), remembered by lbd
//!   for the member already chosen. On a resumption the server echoes the client's id, so the key
//!   is the same one.
//!
//! The bytes are parsed properly rather than read at fixed offsets: TLS records (content type 22,
//! version 3.x, 16-bit length at most 2^14, RFC 5246 §6.2.1), the handshake message reassembled
//! across records and across TCP segments (lbd calls again with the stream's first N bytes after
//! [`Outcome::NeedMore`]), the handshake header (type, 24-bit length), version, random(32) and
//! `session_id<0..32>`. In the simple case — one record holding the whole hello — the length of
//! the session id is at offset 43 and its value at 44. The whole hello is checked (cipher suites,
//! compression methods, extensions), because the extensions say whether this is TLS 1.3.
//!
//! # TLS 1.3
//!
//! TLS 1.3 (RFC 8446 §4.1.2) keeps a `legacy_session_id` in the ClientHello only for middlebox
//! compatibility: it is often 32 random bytes, and resumption uses PSK tickets instead, so the
//! session id identifies nothing. When the ClientHello lists TLS 1.3 (0x0304) in its
//! `supported_versions` extension (0x002b), or the ServerHello's `supported_versions` selects
//! 0x0304, this plugin answers [`Outcome::NoMatch`]. lbd then falls back to the pool's method,
//! or to source-address affinity with `fallback = "source-address"` in the profile (as
//! BIG-IP pairs SSL persistence with source-address affinity; pair them for TLS 1.3 clients).
//! A client that offers both TLS 1.3 and 1.2 is treated as TLS 1.3 even if it then resumes a
//! TLS 1.2 session: its id cannot be told from a random legacy id. (A ServerHello that picks
//! TLS 1.2 still gives its id, so lbd learns it; only clients offering TLS 1.2 alone use it.)
//!
//! # Other answers
//!
//! * Not TLS (another content type, a version other than 3.x, a first handshake message that
//!   is not the expected hello, inconsistent lengths) → [`Outcome::Malformed`].
//! * An alert record first, an SSLv2-compatible ClientHello (whose session id must be empty,
//!   RFC 5246 Appendix E.2), a hello longer than [`MAX_INSPECT`], or UDP (DTLS is not parsed)
//!   → [`Outcome::NoMatch`].
//!
//! `inspect` allocates nothing: the records are walked in place and the id copied to the stack.
//! It must not do I/O or keep state between calls (each call sees the stream from its start).

use plugin_api::{export_plugin, Direction, Flow, Key, Outcome, Plugin, Transport};

/// The most bytes looked at: a hello may span records, and one full record is 5 + 2^14 bytes.
pub const MAX_INSPECT: u32 = 16 * 1024 + 5;

const RECORD_HEADER: usize = 5;
/// RFC 5246 §6.2.1: a TLSPlaintext fragment is at most 2^14 bytes.
const MAX_FRAGMENT: usize = 1 << 14;
const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_HEADER: usize = 4;
/// RFC 8446 §4.2.1.
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;
const TLS13: u16 = 0x0304;

/// Which hello is expected first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hello {
    /// ClientHello, handshake type 1.
    Client,
    /// ServerHello, handshake type 2.
    Server,
}

impl Hello {
    fn handshake_type(self) -> u8 {
        match self {
            Hello::Client => 1,
            Hello::Server => 2,
        }
    }
}

/// What a complete, well-formed hello says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloInfo {
    session_id: [u8; 32],
    session_id_len: u8,
    /// The ClientHello offers TLS 1.3, or the ServerHello selects it.
    pub tls13: bool,
}

impl HelloInfo {
    pub fn session_id(&self) -> &[u8] {
        &self.session_id[..usize::from(self.session_id_len)]
    }
}

/// Why [`parse_hello`] did not return a hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Incomplete: at least this many bytes of the stream are needed (more than were given).
    NeedMore(usize),
    /// Not TLS, or a hello that breaks RFC 5246 / RFC 8446.
    Malformed,
    /// TLS, but no hello to read: an alert record, or an SSLv2-compatible ClientHello.
    NoHello,
    /// The hello would not be complete within [`MAX_INSPECT`] bytes.
    TooLong,
}

/// Parses the first handshake message of a TLS stream (`bytes` are the stream's first bytes)
/// and returns its session id once the whole message is there.
pub fn parse_hello(bytes: &[u8], hello: Hello) -> Result<HelloInfo, Stop> {
    if hello == Hello::Client {
        if let Some(&b0) = bytes.first() {
            if b0 & 0x80 != 0 {
                return sslv2_hello(bytes);
            }
        }
    }
    let mut s = Records {
        buf: bytes,
        pos: 0,
        rec_end: 0,
        first: true,
        msg_left: HANDSHAKE_HEADER,
    };
    let [typ, l0, l1, l2] = s.read::<4>()?;
    if typ != hello.handshake_type() {
        return Err(Stop::Malformed);
    }
    let len = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
    if RECORD_HEADER + HANDSHAKE_HEADER + len > MAX_INSPECT as usize {
        return Err(Stop::TooLong);
    }
    s.msg_left = len;

    // client_version / server_version: 3.x (legacy_version 0x0303 in TLS 1.3).
    let [major, _minor] = s.read::<2>()?;
    if major != 3 {
        return Err(Stop::Malformed);
    }
    s.skip(32)?; // random
    let [sid_len] = s.read::<1>()?;
    if sid_len > 32 {
        return Err(Stop::Malformed);
    }
    let mut session_id = [0u8; 32];
    s.copy(&mut session_id[..usize::from(sid_len)])?;

    match hello {
        Hello::Client => {
            // cipher_suites<2..2^16-2>, compression_methods<1..2^8-1>
            let suites = usize::from(u16::from_be_bytes(s.read::<2>()?));
            if suites < 2 || suites % 2 != 0 {
                return Err(Stop::Malformed);
            }
            s.skip(suites)?;
            let [methods] = s.read::<1>()?;
            if methods == 0 {
                return Err(Stop::Malformed);
            }
            s.skip(usize::from(methods))?;
        }
        Hello::Server => {
            s.skip(2 + 1)?; // cipher_suite, compression_method
        }
    }

    // extensions<0..2^16-1>, absent in old hellos (RFC 5246 §7.4.1.2: "extensions present").
    let mut tls13 = false;
    if s.msg_left > 0 {
        let total = usize::from(u16::from_be_bytes(s.read::<2>()?));
        if total != s.msg_left {
            return Err(Stop::Malformed);
        }
        while s.msg_left > 0 {
            let typ = u16::from_be_bytes(s.read::<2>()?);
            let elen = usize::from(u16::from_be_bytes(s.read::<2>()?));
            if elen > s.msg_left {
                return Err(Stop::Malformed);
            }
            if typ != EXT_SUPPORTED_VERSIONS {
                s.skip(elen)?;
                continue;
            }
            match hello {
                // ProtocolVersion versions<2..254> (RFC 8446 §4.2.1)
                Hello::Client => {
                    let [n] = s.read::<1>()?;
                    let n = usize::from(n);
                    if n + 1 != elen || n < 2 || n % 2 != 0 {
                        return Err(Stop::Malformed);
                    }
                    for _ in 0..n / 2 {
                        tls13 |= u16::from_be_bytes(s.read::<2>()?) == TLS13;
                    }
                }
                // ProtocolVersion selected_version
                Hello::Server => {
                    if elen != 2 {
                        return Err(Stop::Malformed);
                    }
                    tls13 |= u16::from_be_bytes(s.read::<2>()?) == TLS13;
                }
            }
        }
    }
    Ok(HelloInfo {
        session_id,
        session_id_len: sid_len,
        tls13,
    })
}

/// An SSLv2-compatible CLIENT-HELLO (RFC 5246 Appendix E.2): two-byte length with the high
/// bit set, then msg_type 1. Its session id must be empty for TLS clients, so there is no key.
fn sslv2_hello(bytes: &[u8]) -> Result<HelloInfo, Stop> {
    match bytes.get(2) {
        None => Err(Stop::NeedMore(3)),
        Some(1) => Err(Stop::NoHello),
        Some(_) => Err(Stop::Malformed),
    }
}

/// Reads one handshake message through the records that carry it, in place.
struct Records<'a> {
    buf: &'a [u8],
    /// The next byte to read.
    pos: usize,
    /// The end of the current record's fragment (may lie past the bytes given).
    rec_end: usize,
    first: bool,
    /// Bytes of the handshake message not yet read.
    msg_left: usize,
}

impl Records<'_> {
    fn need(&self, n: usize) -> Stop {
        debug_assert!(n > self.buf.len());
        if n > MAX_INSPECT as usize {
            Stop::TooLong
        } else {
            Stop::NeedMore(n)
        }
    }

    /// Enters the record starting at `pos`, checking each header byte as soon as it is there.
    fn next_record(&mut self) -> Result<(), Stop> {
        let h = self.pos;
        let have = &self.buf[h.min(self.buf.len())..];
        if let Some(&typ) = have.first() {
            match typ {
                CONTENT_HANDSHAKE => {}
                // An alert before any handshake is TLS, just nothing to key on. Within a
                // handshake message, other records must not interleave (RFC 8446 §5.1).
                CONTENT_ALERT if self.first => return Err(Stop::NoHello),
                _ => return Err(Stop::Malformed),
            }
        }
        if let Some(&major) = have.get(1) {
            if major != 3 {
                return Err(Stop::Malformed);
            }
        }
        if let Some(&minor) = have.get(2) {
            if minor > 4 {
                return Err(Stop::Malformed);
            }
        }
        if have.len() < RECORD_HEADER {
            // the header and at least one byte of fragment
            return Err(self.need(h + RECORD_HEADER + 1));
        }
        let len = usize::from(u16::from_be_bytes([have[3], have[4]]));
        // RFC 5246 §6.2.1: no zero-length handshake fragments, none over 2^14.
        if len == 0 || len > MAX_FRAGMENT {
            return Err(Stop::Malformed);
        }
        self.first = false;
        self.pos = h + RECORD_HEADER;
        self.rec_end = self.pos + len;
        Ok(())
    }

    /// Moves over the next `n` bytes of the message, handing each piece to `sink`.
    fn advance(&mut self, mut n: usize, mut sink: impl FnMut(&[u8])) -> Result<(), Stop> {
        if n > self.msg_left {
            return Err(Stop::Malformed);
        }
        self.msg_left -= n;
        while n > 0 {
            if self.pos == self.rec_end {
                self.next_record()?;
            }
            let step = n.min(self.rec_end - self.pos);
            let end = self.pos + step;
            if end > self.buf.len() {
                // At least the rest of the message, as far as this record carries it.
                let rest = (n + self.msg_left).min(self.rec_end - self.pos);
                return Err(self.need(self.pos + rest));
            }
            sink(&self.buf[self.pos..end]);
            self.pos = end;
            n -= step;
        }
        Ok(())
    }

    fn skip(&mut self, n: usize) -> Result<(), Stop> {
        self.advance(n, |_| {})
    }

    fn copy(&mut self, out: &mut [u8]) -> Result<(), Stop> {
        let mut at = 0;
        self.advance(out.len(), |piece| {
            out[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        })
    }

    fn read<const N: usize>(&mut self) -> Result<[u8; N], Stop> {
        let mut out = [0u8; N];
        self.copy(&mut out)?;
        Ok(out)
    }
}

/// The plugin (no configuration).
#[derive(Debug)]
pub struct Ssl;

impl Plugin for Ssl {
    const NAME: &'static str = "ssl";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "TLS session-id persistence (ClientHello/ServerHello session_id; none for TLS 1.3)";
    const MAX_INSPECT: u32 = MAX_INSPECT;
    // The ServerHello's session id is learned for the member that created the session.
    const INSPECTS_SERVER: bool = true;

    fn new(config: &str) -> Result<Self, String> {
        if config.trim().is_empty() {
            Ok(Ssl)
        } else {
            Err(format!(
                "the ssl plugin takes no plugin_config, not `{}`",
                config.trim()
            ))
        }
    }

    fn inspect(&self, flow: &Flow, bytes: &[u8]) -> Outcome {
        if flow.transport == Transport::Udp {
            return Outcome::NoMatch; // DTLS records differ; not parsed
        }
        let hello = match flow.direction {
            Direction::ClientToServer => Hello::Client,
            Direction::ServerToClient => Hello::Server,
        };
        match parse_hello(bytes, hello) {
            Ok(h) if h.tls13 || h.session_id().is_empty() => Outcome::NoMatch,
            Ok(h) => Outcome::Key(Key::new(h.session_id())),
            Err(Stop::NeedMore(n)) => Outcome::NeedMore {
                min_len: u32::try_from(n).unwrap_or(MAX_INSPECT),
            },
            Err(Stop::Malformed) => Outcome::Malformed,
            Err(Stop::NoHello | Stop::TooLong) => Outcome::NoMatch,
        }
    }
}

export_plugin!(Ssl);

#[cfg(test)]
mod tests;
