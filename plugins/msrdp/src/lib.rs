//! RDP persistence for spanlb, from the client's first PDU, the X.224 Connection Request
//! (MS-RDPBCGR 2.2.1.1):
//!
//! ```text
//! tpktHeader (4)   03 00 LL LL             version 3, reserved, length (big-endian, whole PDU)
//! x224Crq (7)      LI E0 00 00 00 00 00    length indicator, CR code, dst-ref, src-ref, class 0
//! routingToken     "Cookie: msts=IP.PORT.0000\r\n"   (optional, or)
//! cookie           "Cookie: mstshash=IDENTIFIER\r\n" (optional)
//! rdpNegReq (8)    01 ...                  (optional), rdpCorrelationInfo (optional)
//! ```
//!
//! ```toml
//! [persistence.rdp]
//! type = "msrdp"                # plugin "msrdp"; it takes no plugin_config
//! timeout = "8h"
//! ```
//!
//! # Outcomes
//!
//! * `Cookie: mstshash=IDENTIFIER\r\n` → [`Outcome::Key`] of IDENTIFIER (persistence by user:
//!   clients put the user name, often cut to a few characters, there). The identifier is kept
//!   **byte for byte and compared case-sensitively, as sent**: `Alice` and `alice` are
//!   different keys. The literal `Cookie: mstshash=` prefix is matched exactly as the
//!   specification writes it. An empty identifier is [`Outcome::NoMatch`].
//! * The routing token `Cookie: msts=IP.PORT.RESERVED\r\n` (the Session Directory / Connection
//!   Broker format, [MSFT-SDLBTS] "Routing Token Format") → [`Outcome::Member`] of that
//!   endpoint. IP and PORT are the decimal values of the address's and port's network-order
//!   bytes read as little-endian integers: 10.1.1.50:3389 is `msts=838926602.15629.0000`
//!   (0x3201010A and 0x3D0D). A token of that prefix whose numbers do not parse (not decimal,
//!   out of range) is [`Outcome::Malformed`]; other routing tokens (e.g. `tsv://…`) are
//!   [`Outcome::NoMatch`]. lbd uses the member only if it is in the pool and available.
//! * No cookie (e.g. only an RDP_NEG_REQ) → [`Outcome::NoMatch`].
//! * A TPKT header that is not version 3, a length below 11, an X.224 length indicator that
//!   disagrees with the TPKT length, a TPDU that is not a Connection Request, a class other
//!   than 0 (MS-RDPBCGR 3.3.5.3.1), or a cookie line without its CRLF → [`Outcome::Malformed`].
//!   The TPKT reserved byte and the dst/src references are not checked. Since the length
//!   indicator is one octet (255 reserved, X.224 §13.2.1), a TPKT length above 259 cannot be a
//!   consistent Connection Request and is malformed as soon as the TPKT header is there; so
//!   the plugin never asks for more than 259 bytes, well within [`MAX_INSPECT`].
//! * Fewer bytes than the TPKT length says → [`Outcome::NeedMore`] with the TPKT length (after
//!   checking the header bytes already there, so non-RDP traffic is refused early).
//! * UDP (RDP-UDP is another protocol) and server-to-client bytes → [`Outcome::NoMatch`].

use std::net::{Ipv4Addr, SocketAddr};

use plugin_api::{export_plugin, Direction, Endpoint, Flow, Key, Outcome, Plugin, Transport};

/// The longest Connection Request looked at.
pub const MAX_INSPECT: u32 = 1024;

const TPKT_LEN: usize = 4;
const X224_CR_LEN: usize = 7;
/// The longest Connection Request whose X.224 length indicator (one octet, 255 reserved) can
/// agree with its TPKT length.
const MAX_CR_LEN: usize = 5 + 254;
const _: () = assert!(MAX_CR_LEN <= MAX_INSPECT as usize);
const MSTSHASH: &[u8] = b"Cookie: mstshash=";
const MSTS: &[u8] = b"Cookie: msts=";

/// The plugin (it has no settings).
#[derive(Debug)]
pub struct MsRdp;

impl Plugin for MsRdp {
    const NAME: &'static str = "msrdp";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "RDP: persistence on the mstshash cookie, or the member named by an msts routing token";
    const MAX_INSPECT: u32 = MAX_INSPECT;

    fn new(config: &str) -> Result<Self, String> {
        if config.trim().is_empty() {
            Ok(MsRdp)
        } else {
            Err(format!(
                "the msrdp plugin takes no settings (plugin_config must be empty), got `{}`",
                config.trim()
            ))
        }
    }

    fn inspect(&self, flow: &Flow, bytes: &[u8]) -> Outcome {
        if flow.direction == Direction::ServerToClient || flow.transport == Transport::Udp {
            return Outcome::NoMatch;
        }
        inspect_cr(bytes)
    }
}

export_plugin!(MsRdp);

fn inspect_cr(b: &[u8]) -> Outcome {
    // The TPKT header, as far as it is there.
    if b.first().is_some_and(|v| *v != 3) {
        return Outcome::Malformed;
    }
    if b.len() < TPKT_LEN {
        return Outcome::NeedMore {
            min_len: TPKT_LEN as u32,
        };
    }
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    // The X.224 length indicator is one octet (255 reserved), so a consistent Connection
    // Request is at most 5 + 254 bytes.
    if !(TPKT_LEN + X224_CR_LEN..=MAX_CR_LEN).contains(&len) {
        return Outcome::Malformed;
    }
    // The X.224 fixed part, as far as it is there.
    if let Some(li) = b.get(4) {
        if usize::from(*li) + 5 != len {
            return Outcome::Malformed;
        }
    }
    if let Some(code) = b.get(5) {
        if code & 0xF0 != 0xE0 {
            return Outcome::Malformed;
        }
    }
    if let Some(class) = b.get(10) {
        if class & 0xF0 != 0 {
            return Outcome::Malformed;
        }
    }
    if b.len() < len {
        return Outcome::NeedMore {
            min_len: len as u32,
        };
    }
    variable_part(&b[TPKT_LEN + X224_CR_LEN..len])
}

/// The bytes after the X.224 fixed part, up to the TPKT length.
fn variable_part(v: &[u8]) -> Outcome {
    let line = |prefix: &[u8]| -> Option<Option<&[u8]>> {
        let rest = v.strip_prefix(prefix)?;
        Some(
            rest.windows(2)
                .position(|w| w == b"\r\n")
                .map(|end| &rest[..end]),
        )
    };
    if let Some(id) = line(MSTSHASH) {
        return match id {
            None => Outcome::Malformed,
            Some([]) => Outcome::NoMatch,
            Some(id) => Outcome::Key(Key::new(id)),
        };
    }
    if let Some(token) = line(MSTS) {
        return match token.and_then(routing_token) {
            Some(a) => Outcome::Member(Endpoint::from(a)),
            None => Outcome::Malformed,
        };
    }
    Outcome::NoMatch
}

/// `IP.PORT.RESERVED` of an msts routing token (see the crate documentation).
pub fn routing_token(t: &[u8]) -> Option<SocketAddr> {
    let t = std::str::from_utf8(t).ok()?;
    let mut parts = t.split('.');
    let (ip, port, reserved) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || ![ip, port, reserved].iter().all(|p| decimal(p)) {
        return None;
    }
    let ip: u32 = ip.parse().ok()?;
    let port: u16 = port.parse().ok()?;
    let ip = Ipv4Addr::from(ip.to_le_bytes());
    let port = u16::from_be_bytes(port.to_le_bytes());
    Some(SocketAddr::new(ip.into(), port))
}

/// The msts routing token value naming `a` (IPv4 only), e.g. `838926602.15629.0000`.
pub fn routing_token_for(a: std::net::SocketAddrV4) -> String {
    let ip = u32::from_le_bytes(a.ip().octets());
    let port = u16::from_le_bytes(a.port().to_be_bytes());
    format!("{ip}.{port}.0000")
}

fn decimal(s: &str) -> bool {
    !s.is_empty() && s.len() <= 10 && s.bytes().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests;
