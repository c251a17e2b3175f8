//! The crate's one error type.

use std::path::PathBuf;
use std::time::Duration;

/// Why a control request got no answer, or an error as its answer.
///
/// Each message names the daemon and, for transport failures, its socket, in the words the
/// CLIs print after their own name (`lbctl: cannot reach lbd at /run/spanlb/lbd.sock: ...`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be connected to.
    #[error("cannot reach {daemon} at {}: {source}", path.display())]
    Connect {
        daemon: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing failed (a blocking read or write timeout is one of these).
    #[error("{daemon} at {}: {source}", path.display())]
    Io {
        daemon: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The daemon closed the connection instead of answering.
    #[error("{daemon} at {} closed the connection without answering", path.display())]
    Closed { daemon: &'static str, path: PathBuf },
    /// The answer is not a response envelope.
    #[error("{daemon} at {} answered nonsense: {source}", path.display())]
    BadAnswer {
        daemon: &'static str,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The async client's deadline for one request passed.
    #[error("{daemon} did not answer within {timeout:?}")]
    Timeout {
        daemon: &'static str,
        timeout: Duration,
    },
    /// The request could not be encoded (a map with non-string keys and the like).
    #[error("cannot encode the request: {0}")]
    Encode(#[source] serde_json::Error),
    /// The daemon answered with this error.
    #[error("{0}")]
    Daemon(String),
}

impl Error {
    /// Whether the daemon answered (with an error), as opposed to a transport failure.
    pub fn is_daemon(&self) -> bool {
        matches!(self, Error::Daemon(_))
    }
}
