//! The `hash` spanlb plugin: universal persistence (BIG-IP's "universal"/hash persistence) on a
//! key taken from the flow by a configured extractor. The persistence profile's `plugin_config`
//! names exactly one:
//!
//! | `plugin_config`        | key                                                                  |
//! |------------------------|----------------------------------------------------------------------|
//! | `regex:PATTERN[;max=N]`| the first capture group that took part in the leftmost match, else the whole match, searched over the first `N` bytes (default 1024, at most 4096); bytes matched with `regex::bytes` |
//! | `bytes:START-END`      | bytes `START..END` (half-open) of the first bytes; `END` at most 4096 |
//! | `client-ip`            | the client's address (`192.0.2.1`, `2001:db8::1`)                    |
//! | `client-port`          | the client's port (`40000`)                                          |
//! | `client`               | the client's address and port (`192.0.2.1:40000`, `[2001:db8::1]:40000`) |
//! | `vip`                  | the virtual server's address and port (`30.1.1.10:80`)               |
//!
//! ```toml
//! [persistence.jsession]
//! type = "hash"                 # or "universal"
//! plugin_config = 'regex:JSESSIONID=([^;\s]+)'
//! timeout = "30m"
//! ```
//!
//! The configuration is trimmed of surrounding whitespace. A `;max=N` suffix is read from the last
//! `;max=` of a regex configuration; a pattern that must contain `;max=` itself can write it
//! `[;]max=`. An empty or unknown configuration, a bad number or a pattern that does not compile
//! is refused by [`Plugin::new`] with one line saying why.
//!
//! # When it decides
//!
//! * `regex`, TCP: a match decides once it ends before the last byte seen (a match touching the
//!   end could still grow with more bytes); otherwise [`Outcome::NeedMore`] until `N` bytes were
//!   seen, then the match or [`Outcome::NoMatch`]. UDP: the datagram decides at once. A match
//!   can still change in ways this does not see (an earlier-starting match completed by later
//!   bytes): a pattern anchored on a delimiter avoids that. An empty key is `NoMatch` (every such
//!   flow would share one record).
//! * `bytes`, TCP: `NeedMore` until `END` bytes are there; UDP: a shorter datagram is `NoMatch`.
//! * The address extractors decide on the client's side at once, bytes or not; on the server's
//!   side ([`Direction::ServerToClient`]) they have nothing to learn and answer `NoMatch`, while
//!   `regex` and `bytes` read the server's first bytes the same way (e.g. a `Set-Cookie` value
//!   a pattern also finds in later requests).
//!
//! Keys longer than 64 bytes are folded by [`Key::new`]. `inspect` does no I/O and keeps no state
//! between calls; the address extractors format into a stack buffer, the regex search uses the
//! `regex` crate's own per-thread caches and a small capture set.

use std::io::Write;
use std::net::SocketAddr;

use plugin_api::{export_plugin, Direction, Flow, Key, Outcome, Plugin, Transport, MAX_KEY};
use regex::bytes::{Regex, RegexBuilder};

/// The most bytes any extractor reads.
pub const MAX_INSPECT: u32 = 4096;
/// The regex window when the configuration gives no `;max=`.
pub const DEFAULT_REGEX_MAX: usize = 1024;
/// Compiled-program limit for an operator's pattern (the regex crate's default is 10 MiB).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

const KNOWN: &str = "regex:PATTERN[;max=N], bytes:START-END, client-ip, client-port, client or vip";

/// Where the key comes from.
#[derive(Debug, Clone)]
pub enum Extractor {
    Regex { re: Regex, max: usize },
    Bytes { start: usize, end: usize },
    ClientIp,
    ClientPort,
    Client,
    Vip,
}

impl Extractor {
    /// Parses a profile's `plugin_config` (see the crate documentation).
    pub fn parse(config: &str) -> Result<Extractor, String> {
        let c = config.trim();
        if c.is_empty() {
            return Err(format!(
                "empty plugin_config: the hash plugin needs one of {KNOWN}"
            ));
        }
        if let Some(rest) = c.strip_prefix("regex:") {
            let (pattern, max) = match rest.rfind(";max=") {
                Some(i) => (&rest[..i], parse_max(&rest[i + ";max=".len()..])?),
                None => (rest, DEFAULT_REGEX_MAX),
            };
            if pattern.is_empty() {
                return Err("regex: needs a pattern".into());
            }
            let re = RegexBuilder::new(pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| format!("invalid regex `{pattern}`: {}", regex_reason(&e)))?;
            return Ok(Extractor::Regex { re, max });
        }
        if let Some(range) = c.strip_prefix("bytes:") {
            let bad = || {
                format!("bytes:START-END needs START < END <= {MAX_INSPECT}, not `bytes:{range}`")
            };
            let (s, e) = range.split_once('-').ok_or_else(bad)?;
            let start: usize = s.trim().parse().map_err(|_| bad())?;
            let end: usize = e.trim().parse().map_err(|_| bad())?;
            if start >= end || end > MAX_INSPECT as usize {
                return Err(bad());
            }
            return Ok(Extractor::Bytes { start, end });
        }
        match c {
            "client-ip" => Ok(Extractor::ClientIp),
            "client-port" => Ok(Extractor::ClientPort),
            "client" => Ok(Extractor::Client),
            "vip" => Ok(Extractor::Vip),
            _ => Err(format!("unknown extractor `{c}` (known: {KNOWN})")),
        }
    }
}

fn parse_max(v: &str) -> Result<usize, String> {
    v.trim()
        .parse()
        .ok()
        .filter(|m| (1..=MAX_INSPECT as usize).contains(m))
        .ok_or_else(|| format!("max must be 1..={MAX_INSPECT}, not `{v}`"))
}

/// The regex crate's error in one line (its syntax errors span several, with a caret).
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_string)
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// A key formatted into a stack buffer (addresses are at most 47 bytes).
fn text_key(args: std::fmt::Arguments<'_>) -> Outcome {
    let mut buf = [0u8; MAX_KEY];
    let mut w = &mut buf[..];
    match w.write_fmt(args) {
        Ok(()) => {
            let n = MAX_KEY - w.len();
            Outcome::Key(Key::new(&buf[..n]))
        }
        Err(_) => Outcome::NoMatch,
    }
}

/// The plugin: one extractor per persistence profile.
#[derive(Debug)]
pub struct Hash {
    extractor: Extractor,
}

impl Hash {
    pub fn extractor(&self) -> &Extractor {
        &self.extractor
    }
}

impl Plugin for Hash {
    const NAME: &'static str = "hash";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "universal persistence on a configured key: regex, byte range, client address/port, vip";
    const MAX_INSPECT: u32 = MAX_INSPECT;

    fn new(config: &str) -> Result<Self, String> {
        Ok(Hash {
            extractor: Extractor::parse(config)?,
        })
    }

    fn inspect(&self, flow: &Flow, bytes: &[u8]) -> Outcome {
        let tcp = flow.transport == Transport::Tcp;
        let client_side = flow.direction == Direction::ClientToServer;
        match &self.extractor {
            Extractor::ClientIp if client_side => {
                text_key(format_args!("{}", SocketAddr::from(flow.client).ip()))
            }
            Extractor::ClientPort if client_side => text_key(format_args!("{}", flow.client.port)),
            Extractor::Client if client_side => {
                text_key(format_args!("{}", SocketAddr::from(flow.client)))
            }
            Extractor::Vip if client_side => {
                text_key(format_args!("{}", SocketAddr::from(flow.vip)))
            }
            Extractor::ClientIp | Extractor::ClientPort | Extractor::Client | Extractor::Vip => {
                Outcome::NoMatch
            }
            Extractor::Bytes { start, end } => match bytes.get(*start..*end) {
                Some(k) => Outcome::Key(Key::new(k)),
                None if tcp => Outcome::NeedMore {
                    min_len: *end as u32,
                },
                None => Outcome::NoMatch,
            },
            Extractor::Regex { re, max } => {
                let window = &bytes[..bytes.len().min(*max)];
                // More bytes could still arrive inside the window.
                let more = tcp && bytes.len() < *max;
                let need = Outcome::NeedMore {
                    min_len: bytes.len() as u32 + 1,
                };
                let Some(caps) = re.captures(window) else {
                    return if more { need } else { Outcome::NoMatch };
                };
                let whole = caps.get(0).map_or(0..0, |m| m.range());
                if more && whole.end == window.len() {
                    return need;
                }
                let key = caps
                    .iter()
                    .skip(1)
                    .flatten()
                    .next()
                    .map_or(&window[whole], |m| m.as_bytes());
                if key.is_empty() {
                    Outcome::NoMatch
                } else {
                    Outcome::Key(Key::new(key))
                }
            }
        }
    }
}

export_plugin!(Hash);

#[cfg(test)]
mod tests;
