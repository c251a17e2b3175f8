//! SIP persistence for spanlb: the key is the SIP **Call-ID** (RFC 3261 §8.1.1.4, §20.8), so
//! every message of a dialog reaches the same pool member.
//!
//! ```toml
//! [persistence.sip]
//! type = "sip"                  # plugin "sip"; it takes no plugin_config
//! timeout = "30m"
//! ```
//!
//! # What is parsed
//!
//! * The start line must have the shape of a SIP Request-Line (`METHOD SP Request-URI SP
//!   SIP/x.y`) or Status-Line (`SIP/x.y SP 3DIGIT [SP reason]`) (RFC 3261 §7.1, §7.2), otherwise
//!   the bytes are not SIP: [`Outcome::Malformed`].
//! * Header names are case-insensitive; `Call-ID` and its compact form `i` are recognised, as
//!   are `Content-Length` and `l` (RFC 3261 §7.3.3). Whitespace is allowed between the name and
//!   the `:`. Folded headers (continuation lines starting with SP or HT, §7.3.1) are unfolded:
//!   each line break with the continuation's leading whitespace counts as one SP. The value is
//!   trimmed. Lines may end in CRLF or a bare LF (lenient, as §7.5 suggests).
//! * The **Call-ID value is case-sensitive** and compared byte for byte (§20.8): `abc@x` and
//!   `ABC@x` are different keys. A Call-ID longer than the ABI's inline key is folded by
//!   [`Key::new`] (first 48 bytes and a hash), which keeps equal values equal.
//! * The first Call-ID header counts. An empty Call-ID value, a header line without a colon
//!   or a header name that is not a token is [`Outcome::Malformed`]; a message with no
//!   Call-ID at all is [`Outcome::NoMatch`].
//!
//! # UDP
//!
//! One message per datagram (§18.1.1): the datagram's Call-ID is the key. The end of the
//! datagram also ends the header section (a datagram without the empty line is accepted).
//! Empty or CRLF-only datagrams (keep-alives) are [`Outcome::NoMatch`].
//!
//! # TCP, and how a connection carrying many dialogs is routed
//!
//! A stream carries messages framed by `Content-Length` (compact `l`, §18.3, §20.14). CRLFs
//! before the first start line (keep-alives, §7.5) are skipped. The key is the **first
//! message's Call-ID**, known as soon as its header section is complete (the body is not waited
//! for; a present `Content-Length` must be a decimal number, else [`Outcome::Malformed`]).
//! While the header section is incomplete the answer is [`Outcome::NeedMore`]; a header
//! section that does not end within [`MAX_INSPECT`] bytes gives [`Outcome::NoMatch`].
//!
//! lbd balances connections, not messages: **the whole TCP connection sticks to the member
//! chosen for its first message's Call-ID**. When one connection carries many dialogs (e.g. a
//! proxy or trunk multiplexing calls over one TCP connection), all of them go to that member;
//! lbd does not split a TCP stream per dialog. Later dialogs on the connection are not
//! inspected and create no persistence records of their own. Use UDP (per-datagram
//! decisions) or one connection per dialog where per-dialog distribution matters.
//!
//! # Direction
//!
//! Only client-to-server bytes are inspected; server-to-client bytes are
//! [`Outcome::NoMatch`] (the Call-ID is the client's; nothing to learn from the member).

use std::borrow::Cow;

use plugin_api::{export_plugin, Direction, Flow, Key, Outcome, Plugin, Transport};

/// The most bytes of a TCP stream looked at before giving up ([`Outcome::NoMatch`]).
pub const MAX_INSPECT: u32 = 8192;

/// The plugin (it has no settings).
#[derive(Debug)]
pub struct Sip;

impl Plugin for Sip {
    const NAME: &'static str = "sip";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "SIP: persistence on the Call-ID (UDP: per datagram; TCP: the first message's)";
    const MAX_INSPECT: u32 = MAX_INSPECT;

    fn new(config: &str) -> Result<Self, String> {
        if config.trim().is_empty() {
            Ok(Sip)
        } else {
            Err(format!(
                "the sip plugin takes no settings (plugin_config must be empty), got `{}`",
                config.trim()
            ))
        }
    }

    fn inspect(&self, flow: &Flow, bytes: &[u8]) -> Outcome {
        if flow.direction == Direction::ServerToClient {
            return Outcome::NoMatch;
        }
        match flow.transport {
            Transport::Udp => inspect_datagram(bytes),
            Transport::Tcp => inspect_stream(bytes),
        }
    }
}

export_plugin!(Sip);

fn inspect_datagram(bytes: &[u8]) -> Outcome {
    let start = skip_crlf(bytes);
    if start == bytes.len() {
        return Outcome::NoMatch;
    }
    match parse(&bytes[start..], true) {
        Parse::Done(m) => match m.call_id {
            Some(id) => Outcome::Key(Key::new(&id)),
            None => Outcome::NoMatch,
        },
        Parse::Malformed => Outcome::Malformed,
        // Unreachable with `eof_ends = true`; a datagram never gets more bytes.
        Parse::Incomplete => Outcome::NoMatch,
    }
}

fn inspect_stream(bytes: &[u8]) -> Outcome {
    let max = MAX_INSPECT as usize;
    let window = &bytes[..bytes.len().min(max)];
    let start = skip_crlf(window);
    let parsed = if start == window.len() {
        Parse::Incomplete
    } else {
        parse(&window[start..], false)
    };
    match parsed {
        Parse::Done(m) => match (m.call_id, m.content_length) {
            (_, Some(Err(()))) => Outcome::Malformed,
            (Some(id), _) => Outcome::Key(Key::new(&id)),
            (None, _) => Outcome::NoMatch,
        },
        Parse::Malformed => Outcome::Malformed,
        Parse::Incomplete if window.len() >= max => Outcome::NoMatch,
        Parse::Incomplete => Outcome::NeedMore {
            min_len: (bytes.len() as u32).saturating_add(1).min(MAX_INSPECT),
        },
    }
}

/// The length of the leading CR/LF run.
fn skip_crlf(b: &[u8]) -> usize {
    b.iter().take_while(|c| matches!(c, b'\r' | b'\n')).count()
}

/// A parsed header section.
struct Message<'a> {
    call_id: Option<Cow<'a, [u8]>>,
    /// `Some(Err)`: present but not a decimal number (or conflicting values).
    content_length: Option<Result<u64, ()>>,
}

enum Parse<'a> {
    Done(Message<'a>),
    Incomplete,
    Malformed,
}

/// One physical line: its bytes without the line end, and where the next line starts.
/// `None`: no line end yet (and `eof_ends` is false, or nothing is left).
fn line(b: &[u8], pos: usize, eof_ends: bool) -> Option<(&[u8], usize)> {
    let rest = b.get(pos..)?;
    match rest.iter().position(|c| *c == b'\n') {
        Some(n) => {
            let l = &rest[..n];
            Some((l.strip_suffix(b"\r").unwrap_or(l), pos + n + 1))
        }
        None if eof_ends && !rest.is_empty() => {
            Some((rest.strip_suffix(b"\r").unwrap_or(rest), b.len()))
        }
        None => None,
    }
}

/// Parses a message's start line and header section (`b` starts at the start line).
/// `eof_ends`: the end of `b` ends the message (a datagram).
fn parse(b: &[u8], eof_ends: bool) -> Parse<'_> {
    let Some((first, mut pos)) = line(b, 0, eof_ends) else {
        return if plausible_start(b) {
            Parse::Incomplete
        } else {
            Parse::Malformed
        };
    };
    if !start_line(first) {
        return Parse::Malformed;
    }
    let mut msg = Message {
        call_id: None,
        content_length: None,
    };
    // The header being read: where its first line starts and where its last line ends.
    let mut current: Option<(usize, usize)> = None;
    loop {
        let Some((l, next)) = line(b, pos, eof_ends) else {
            if eof_ends {
                // The datagram ended without the empty line: the headers end here.
                break;
            }
            return Parse::Incomplete;
        };
        if l.is_empty() {
            break;
        }
        if is_wsp(l[0]) {
            match current.as_mut() {
                Some((_, end)) => *end = next,
                // A continuation line right after the start line.
                None => return Parse::Malformed,
            }
        } else {
            if let Some((s, e)) = current.take() {
                if !header(&b[s..e], &mut msg) {
                    return Parse::Malformed;
                }
            }
            current = Some((pos, next));
        }
        pos = next;
    }
    if let Some((s, e)) = current {
        if !header(&b[s..e], &mut msg) {
            return Parse::Malformed;
        }
    }
    Parse::Done(msg)
}

fn is_wsp(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// RFC 3261 §25.1 `token` characters.
fn is_token(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [c, rest @ ..] = s {
        if is_wsp(*c) {
            s = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., c] = s {
        if is_wsp(*c) {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// `SIP/1*DIGIT.1*DIGIT` ("SIP" case-insensitive, §7.1).
fn sip_version(v: &[u8]) -> bool {
    if v.len() < 4 || !v[..4].eq_ignore_ascii_case(b"SIP/") {
        return false;
    }
    let Some((major, minor)) = split_once(&v[4..], b'.') else {
        return false;
    };
    all_digits(major) && all_digits(minor)
}

fn all_digits(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|c| *c == sep)?;
    Some((&s[..i], &s[i + 1..]))
}

/// Request-Line or Status-Line shape (§7.1, §7.2).
fn start_line(l: &[u8]) -> bool {
    if l.iter().any(|c| c.is_ascii_control() && *c != b'\t') {
        return false;
    }
    let Some((first, rest)) = split_once(l, b' ') else {
        return false;
    };
    if sip_version(first) {
        // Status-Line: SIP-Version SP Status-Code SP Reason-Phrase (the reason may be empty;
        // a missing final SP is tolerated).
        let (code, _reason) = split_once(rest, b' ').unwrap_or((rest, b""));
        return code.len() == 3 && all_digits(code);
    }
    // Request-Line: Method SP Request-URI SP SIP-Version.
    if !first.iter().all(|c| is_token(*c)) || first.is_empty() {
        return false;
    }
    let Some((uri, version)) = split_once(rest, b' ') else {
        return false;
    };
    !uri.is_empty() && uri.contains(&b':') && sip_version(version)
}

/// Could `partial` (no line end yet) still become a start line? Cheap: the first word so far
/// must be token characters (a method, or `SIP/` of a version) and no control bytes.
fn plausible_start(partial: &[u8]) -> bool {
    let partial = partial.strip_suffix(b"\r").unwrap_or(partial);
    if partial.iter().any(|c| c.is_ascii_control() && *c != b'\t') {
        return false;
    }
    let first = partial.split(|c| *c == b' ').next().unwrap_or(b"");
    if first.len() >= 4 && first[..4].eq_ignore_ascii_case(b"SIP/") {
        return first[4..].iter().all(|c| c.is_ascii_digit() || *c == b'.');
    }
    first.iter().all(|c| is_token(*c)) && !(partial.contains(&b' ') && first.is_empty())
}

/// One logical header (its physical lines, line ends included). False: malformed.
fn header<'a>(h: &'a [u8], msg: &mut Message<'a>) -> bool {
    let Some(colon) = h.iter().position(|c| *c == b':') else {
        return false;
    };
    let name = trim(&h[..colon]);
    if name.is_empty() || !name.iter().all(|c| is_token(*c)) {
        return false;
    }
    let is = |long: &[u8], short: &[u8]| {
        name.eq_ignore_ascii_case(long) || name.eq_ignore_ascii_case(short)
    };
    if is(b"call-id", b"i") {
        if msg.call_id.is_none() {
            let v = unfold(&h[colon + 1..]);
            if v.is_empty() {
                return false;
            }
            msg.call_id = Some(v);
        }
    } else if is(b"content-length", b"l") {
        let v = unfold(&h[colon + 1..]);
        let n = if all_digits(&v) && v.len() <= 18 {
            std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(())
        } else {
            Err(())
        };
        msg.content_length = match (msg.content_length, n) {
            (None, n) => Some(n),
            (Some(Ok(a)), Ok(b)) if a == b => Some(Ok(a)),
            _ => Some(Err(())),
        };
    }
    true
}

/// A header value spread over folded lines, as one trimmed value: each line break with the
/// continuation's leading whitespace is one SP (§7.3.1). Borrows unless two or more lines
/// carry text.
fn unfold(v: &[u8]) -> Cow<'_, [u8]> {
    let mut pieces = v
        .split(|c| *c == b'\n')
        .map(|l| trim(l.strip_suffix(b"\r").unwrap_or(l)))
        .filter(|p| !p.is_empty());
    let Some(first) = pieces.next() else {
        return Cow::Borrowed(b"");
    };
    let Some(second) = pieces.next() else {
        return Cow::Borrowed(first);
    };
    let mut out = Vec::with_capacity(v.len());
    out.extend_from_slice(first);
    for p in std::iter::once(second).chain(pieces) {
        out.push(b' ');
        out.extend_from_slice(p);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests;
