//! A JSON-lines client of a control socket, blocking ([`Client`]) or async ([`AsyncClient`]),
//! for any [`ControlRequest`] type: `Client<lbd::Request>` talks to lbd,
//! `AsyncClient<bgpd::Request>` to bgpd.
//!
//! One request, one answer, in order, on one connection that stays open between requests
//! (bgpd withdraws a client's fate-shared routes when it closes). [`Client::call`] returns the
//! daemon's envelope whatever it says; [`Client::request`] turns an error answer into
//! [`Error::Daemon`]. After any other error the connection is in an unknown state (an answer
//! may still be on its way): drop the client and connect again.
//!
//! ```no_run
//! use spanlb_control::client::Client;
//! use spanlb_control::lbd::Request;
//! let mut lbd = Client::<Request>::connect("/run/spanlb/lbd.sock")?;
//! let status = lbd.request(&Request::Status)?;
//! println!("{}", status["device"]);
//! # Ok::<(), spanlb_control::Error>(())
//! ```

use std::io::{BufRead, BufReader, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::{ControlRequest, Envelope, Error};

/// How long the blocking client waits for an answer by default (a reload binds listeners and
/// may take a moment; nothing else should come close).
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the blocking client waits to write a request by default.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the async client waits for a whole exchange by default.
pub const ASYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// What a success answer carries for requests of type `R`.
pub type Data<R> = <<R as ControlRequest>::Response as Envelope>::Data;

/// The line a request goes on the wire as.
fn encode<R: ControlRequest>(req: &R) -> Result<Vec<u8>, Error> {
    let mut line = serde_json::to_vec(req).map_err(Error::Encode)?;
    line.push(b'\n');
    Ok(line)
}

/// `line` ends with a newline.
/// The daemon closed the connection (its last words may still be readable).
fn closed_by_peer(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
    )
}

fn terminated(line: &[u8]) -> Vec<u8> {
    let mut out = line.to_vec();
    if out.last() != Some(&b'\n') {
        out.push(b'\n');
    }
    out
}

/// The envelope in an answer line (`n` bytes were read).
fn decode<R: ControlRequest>(path: &Path, n: usize, answer: &str) -> Result<R::Response, Error> {
    if n == 0 {
        return Err(Error::Closed {
            daemon: R::DAEMON,
            path: path.to_owned(),
        });
    }
    serde_json::from_str(answer).map_err(|source| Error::BadAnswer {
        daemon: R::DAEMON,
        path: path.to_owned(),
        source,
    })
}

fn io_error<R: ControlRequest>(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        daemon: R::DAEMON,
        path: path.to_owned(),
        source,
    }
}

/// A blocking client (std `UnixStream`, with read and write timeouts).
pub struct Client<R> {
    path: PathBuf,
    rd: BufReader<std::os::unix::net::UnixStream>,
    wr: std::os::unix::net::UnixStream,
    _req: PhantomData<fn(&R)>,
}

impl<R: ControlRequest> Client<R> {
    /// Connects to the socket at `path`, with [`READ_TIMEOUT`] and [`WRITE_TIMEOUT`].
    pub fn connect(path: impl AsRef<Path>) -> Result<Client<R>, Error> {
        let path = path.as_ref().to_owned();
        let s = match std::os::unix::net::UnixStream::connect(&path) {
            Ok(s) => s,
            Err(source) => {
                return Err(Error::Connect {
                    daemon: R::DAEMON,
                    path,
                    source,
                })
            }
        };
        let rd = s.try_clone().map_err(io_error::<R>(&path))?;
        let c = Client {
            rd: BufReader::new(rd),
            wr: s,
            path,
            _req: PhantomData,
        };
        c.set_timeouts(Some(READ_TIMEOUT), Some(WRITE_TIMEOUT))?;
        Ok(c)
    }

    /// Replaces the read and write timeouts (`None`: wait forever).
    pub fn set_timeouts(
        &self,
        read: Option<Duration>,
        write: Option<Duration>,
    ) -> Result<(), Error> {
        let lost = io_error::<R>(&self.path);
        self.wr.set_read_timeout(read).map_err(&lost)?;
        self.wr.set_write_timeout(write).map_err(&lost)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `req` and returns the daemon's answer, an error answer included.
    pub fn call(&mut self, req: &R) -> Result<R::Response, Error> {
        let line = encode(req)?;
        self.exchange(&line)
    }

    /// Sends `req`; an error answer is [`Error::Daemon`].
    pub fn request(&mut self, req: &R) -> Result<Data<R>, Error> {
        self.call(req)?.into_result().map_err(Error::Daemon)
    }

    /// Sends one line as it is (a newline is added if it has none) and returns the answer:
    /// for tests of what a server does with malformed requests.
    pub fn call_line(&mut self, line: &[u8]) -> Result<R::Response, Error> {
        self.exchange(&terminated(line))
    }

    fn exchange(&mut self, line: &[u8]) -> Result<R::Response, Error> {
        let lost = io_error::<R>(&self.path);
        let mut answer = String::new();
        if let Err(e) = self.wr.write_all(line) {
            // A daemon that closed the connection at once may have said why (a refused
            // client: permission, too many clients).
            if closed_by_peer(&e) {
                if let Ok(n @ 1..) = self.rd.read_line(&mut answer) {
                    return decode::<R>(&self.path, n, &answer);
                }
            }
            return Err(lost(e));
        }
        let n = self.rd.read_line(&mut answer).map_err(&lost)?;
        decode::<R>(&self.path, n, &answer)
    }
}

/// An async client (tokio `UnixStream`); each exchange is bounded by one timeout.
pub struct AsyncClient<R> {
    path: PathBuf,
    rd: tokio::io::BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    timeout: Duration,
    _req: PhantomData<fn(&R)>,
}

impl<R: ControlRequest> AsyncClient<R> {
    /// Connects to the socket at `path`; exchanges are bounded by [`ASYNC_TIMEOUT`].
    pub async fn connect(path: impl AsRef<Path>) -> Result<AsyncClient<R>, Error> {
        let path = path.as_ref().to_owned();
        match tokio::net::UnixStream::connect(&path).await {
            Ok(s) => {
                let (rd, wr) = s.into_split();
                Ok(AsyncClient {
                    path,
                    rd: tokio::io::BufReader::new(rd),
                    wr,
                    timeout: ASYNC_TIMEOUT,
                    _req: PhantomData,
                })
            }
            Err(source) => Err(Error::Connect {
                daemon: R::DAEMON,
                path,
                source,
            }),
        }
    }

    /// Bounds each exchange (writing the request and reading its answer) by `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> AsyncClient<R> {
        self.timeout = timeout;
        self
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the daemon closed the connection (or sent something unasked, which no daemon
    /// does): checked between requests without waiting.
    pub fn closed(&self) -> bool {
        if !self.rd.buffer().is_empty() {
            return true;
        }
        let mut buf = [0u8; 1];
        !matches!(self.rd.get_ref().try_read(&mut buf),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Sends `req` and returns the daemon's answer, an error answer included.
    pub async fn call(&mut self, req: &R) -> Result<R::Response, Error> {
        let line = encode(req)?;
        self.exchange(&line).await
    }

    /// Sends `req`; an error answer is [`Error::Daemon`].
    pub async fn request(&mut self, req: &R) -> Result<Data<R>, Error> {
        self.call(req).await?.into_result().map_err(Error::Daemon)
    }

    /// Sends one line as it is (a newline is added if it has none) and returns the answer:
    /// for tests of what a server does with malformed requests.
    pub async fn call_line(&mut self, line: &[u8]) -> Result<R::Response, Error> {
        self.exchange(&terminated(line)).await
    }

    async fn exchange(&mut self, line: &[u8]) -> Result<R::Response, Error> {
        let timeout = self.timeout;
        let fut = async {
            let lost = io_error::<R>(&self.path);
            let mut answer = String::new();
            if let Err(e) = self.wr.write_all(line).await {
                // As in the blocking client: a refused client reads why.
                if closed_by_peer(&e) {
                    if let Ok(n @ 1..) = self.rd.read_line(&mut answer).await {
                        return decode::<R>(&self.path, n, &answer);
                    }
                }
                return Err(lost(e));
            }
            let n = self.rd.read_line(&mut answer).await.map_err(&lost)?;
            decode::<R>(&self.path, n, &answer)
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                daemon: R::DAEMON,
                timeout,
            }),
        }
    }
}

#[cfg(test)]
mod tests;
