//! spanlb's control protocols: what `lbctl` and the cluster agent say to lbd, and what lbd and
//! `bgpctl` say to bgpd, over each daemon's Unix control socket.
//!
//! Both sockets speak JSON lines: a client writes one request object per line and reads one
//! response object per line, as many as it likes on one connection. A request names its
//! command in `cmd` (kebab-case) and carries its arguments as fields; an unknown field of a
//! request with arguments is rejected (serde ignores extra fields of one without). The wire
//! format of each daemon is documented with its types:
//!
//! - [`lbd`]: lbd's requests ([`lbd::Request`]) and its envelope
//!   `{"data":...,"ok":true}` / `{"error":"...","ok":false}` ([`lbd::Response`]);
//! - [`bgpd`]: bgpd's requests ([`bgpd::Request`], with [`bgpd::RouteConfig`] and
//!   [`bgpd::RouteRef`]) and its envelope, whose fields sit beside `ok`
//!   ([`bgpd::Response`]), with typed payloads ([`bgpd::Announced`], [`bgpd::RouteList`], …).
//!
//! Around them:
//!
//! - [`client`]: a JSON-lines client, blocking ([`client::Client`]) and async
//!   ([`client::AsyncClient`]), generic over the request type ([`ControlRequest`]);
//! - [`framing`]: the server side both daemons share: bounded request lines (in length and in
//!   the time a half-sent line may take), parsing, one response line with a write timeout,
//!   and a whole connection's loop ([`framing::serve_as`]);
//! - [`access`]: who may connect (the socket file's mode, group and ACL; the peer's
//!   credentials; full or read-only access) and how many at once ([`access::Gate`]);
//! - [`table`]: the plain-text tables `lbctl` and `bgpctl` print;
//! - [`config_file`]: how both daemons read their TOML configuration files (kept case, one-line
//!   errors naming the key, durations);
//! - [`check`]: what a daemon's `--check` found and how it is printed;
//! - [`logging`]: how both daemons write their log (`--log-format`, `--log-level`);
//! - [`http`]: the daemons' HTTP endpoint, `/metrics` and `/healthz` (hyper), with the
//!   `process_*` metrics and `build_info` both export.
//!
//! Every failure of the client is an [`Error`].
//!
//! Apart from setting the log output up ([`logging::init`]) and [`http::serve`]'s one task
//! per HTTP connection, this crate does no logging and spawns nothing: the daemons keep their
//! own policies (how many clients, what to log) and call into it.

use serde::de::DeserializeOwned;
use serde::Serialize;

pub mod access;
pub mod bgpd;
pub mod check;
pub mod client;
pub mod config_file;
pub mod framing;
pub mod http;
pub mod lbd;
pub mod logging;
pub mod table;

mod error;

pub use error::Error;

/// A request type of one daemon's control socket: how it answers, and what it is called in
/// messages.
pub trait ControlRequest: Serialize {
    /// The response envelope the daemon answers with.
    type Response: Envelope;
    /// The daemon's name in messages (`lbd`, `bgpd`).
    const DAEMON: &'static str;
}

/// A response envelope: a success with its payload, or the daemon's error line.
pub trait Envelope: Serialize + DeserializeOwned {
    /// What a success carries.
    type Data;
    /// The payload, or the daemon's error message.
    fn into_result(self) -> Result<Self::Data, String>;
    /// A failure answer carrying `message` (servers; the envelope decides how it is cleaned).
    fn failure(message: impl std::fmt::Display) -> Self;
}

/// What an answer without an error message is reported as.
pub(crate) const NO_MESSAGE: &str = "error without a message";

/// An error and its causes in one line, each cause once: the daemons' messages already carry
/// their cause (`cannot listen on tcp 1.2.3.4:80: Address in use`), so a cause whose text is
/// already in the line is not repeated (`{:#}` of an error chain would print it again for
/// each layer that wraps it). What `lbd` and `bgpd` print when they cannot start.
pub fn error_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

#[cfg(test)]
mod error_line_tests {
    #[derive(Debug, thiserror::Error)]
    enum Inner {
        #[error("cannot listen on {0}: {1}")]
        Listen(String, #[source] std::io::Error),
    }

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("{0}")]
        Wrapped(#[from] Inner),
        #[error("metrics listener")]
        Bare(#[source] std::io::Error),
    }

    #[test]
    fn each_cause_is_printed_once() {
        let io = || std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let e = Outer::from(Inner::Listen("tcp 1.2.3.4:80".into(), io()));
        assert_eq!(
            super::error_line(&e),
            format!("cannot listen on tcp 1.2.3.4:80: {}", io())
        );
        let e = Outer::Bare(io());
        assert_eq!(super::error_line(&e), format!("metrics listener: {}", io()));
    }
}
