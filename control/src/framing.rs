//! The server side of a control socket, shared by lbd and bgpd: request lines bounded in
//! length (and, where the daemon wants it, in idle time), parsed into the daemon's request
//! type, and one response line written with a write timeout.
//!
//! A line longer than the limit is answered with an error and the connection is closed (the
//! rest of that line cannot be told from the next request). A line begun and not finished
//! within [`Limits::partial`] closes the connection too (a client cannot hold a slot with a
//! half-sent line); a connection with nothing half-sent is closed only after
//! [`Limits::idle`], when the daemon has one. An empty line, a line that is not
//! a JSON object, and a request the type rejects each get an error, and the connection stays
//! usable. A trailing `\r` is tolerated.
//!
//! [`serve`] runs a whole connection; [`LineReader`], [`parse`] and [`write_line`] are its
//! parts, for a server that needs another loop.

use std::future::Future;
use std::io;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::access::{Access, Classify, Stats};
use crate::Envelope;

/// A response the client does not read within this long ends the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request line begun and not finished within this long ends the connection.
pub const PARTIAL_LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a server bounds one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line, newline excluded.
    pub max_line: usize,
    /// A client that sends nothing for this long (between requests) is disconnected; `None`:
    /// never (bgpd: a client's routes live as long as its connection).
    pub idle: Option<Duration>,
    /// A request line begun and not finished within this long disconnects the client (it
    /// was sending a half line, or too slowly); `None`: no bound.
    pub partial: Option<Duration>,
    /// Longest wait for one response to be written.
    pub write_timeout: Duration,
}

/// What reading the next request line gave.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// One line (newline included when there was one).
    Line(&'a [u8]),
    /// More than the limit without a newline.
    TooLong,
    /// The client closed its side.
    Closed,
    /// Nothing within the idle time.
    Idle,
    /// A line begun and not finished within the partial-line time.
    Partial,
    /// Reading failed.
    Failed(io::Error),
}

/// Reads request lines of at most `max_line` bytes.
pub struct LineReader<R> {
    rd: BufReader<R>,
    line: Vec<u8>,
    max_line: usize,
    idle: Option<Duration>,
    partial: Option<Duration>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(rd: R, max_line: usize, idle: Option<Duration>) -> LineReader<R> {
        LineReader {
            rd: BufReader::new(rd),
            line: Vec::new(),
            max_line,
            idle,
            partial: None,
        }
    }

    /// Bounds the time from a line's first byte to its end.
    pub fn with_partial(mut self, partial: Option<Duration>) -> LineReader<R> {
        self.partial = partial;
        self
    }

    /// The next line; never buffers more than `max_line + 1` bytes of it.
    pub async fn next(&mut self) -> Incoming<'_> {
        self.line.clear();
        // The line's first byte, within the idle time.
        let first = self.rd.fill_buf();
        let first = match self.idle {
            Some(idle) => match tokio::time::timeout(idle, first).await {
                Ok(r) => r,
                Err(_) => return Incoming::Idle,
            },
            None => first.await,
        };
        match first {
            Err(e) => return Incoming::Failed(e),
            Ok([]) => return Incoming::Closed,
            Ok(_) => {}
        }
        // The rest of it, within the partial-line time.
        let limit = self.max_line as u64 + 1;
        let mut bounded = (&mut self.rd).take(limit);
        let read = bounded.read_until(b'\n', &mut self.line);
        let read = match self.partial {
            Some(p) => match tokio::time::timeout(p, read).await {
                Ok(r) => r,
                Err(_) => return Incoming::Partial,
            },
            None => read.await,
        };
        match read {
            Err(e) => Incoming::Failed(e),
            Ok(0) => Incoming::Closed,
            Ok(_) if self.line.last() != Some(&b'\n') && self.line.len() > self.max_line => {
                Incoming::TooLong
            }
            Ok(_) => Incoming::Line(&self.line),
        }
    }
}

/// The error a too-long line is answered with.
pub fn too_long(max_line: usize) -> String {
    format!("request longer than {max_line} bytes; closing the connection")
}

/// One request line as `R`, or the error line to answer with.
pub fn parse<R: DeserializeOwned>(line: &[u8]) -> Result<R, String> {
    let text = line.strip_suffix(b"\n").unwrap_or(line);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err("empty request".into());
    }
    let v: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| format!("bad request: {e}"))?;
    if !v.is_object() {
        return Err("bad request: not a JSON object".into());
    }
    serde_json::from_value(v).map_err(|e| format!("bad request: {e}"))
}

/// Writes `msg` as one line, within `timeout`.
pub async fn write_line<W: AsyncWrite + Unpin, T: Serialize>(
    wr: &mut W,
    msg: &T,
    timeout: Duration,
) -> io::Result<()> {
    let mut out = serde_json::to_vec(msg).map_err(io::Error::other)?;
    out.push(b'\n');
    match tokio::time::timeout(timeout, wr.write_all(&out)).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Why [`serve`] returned.
#[derive(Debug)]
pub enum End {
    /// The client hung up.
    Closed,
    /// The client sent nothing for the idle time.
    Idle,
    /// The client began a line and did not finish it in time.
    PartialLine,
    /// The client sent a line over the limit (it was told so).
    TooLong,
    /// Reading a request failed.
    ReadFailed(io::Error),
    /// Writing a response failed or timed out.
    WriteFailed(io::Error),
}

/// Serves one connection with full access: each request line parsed as `Req` and answered
/// with what `handle` returns (a line that does not parse with the envelope's failure), until
/// the client hangs up, idles or misbehaves.
pub async fn serve<Req, Rep, H, Fut>(sock: UnixStream, limits: Limits, handle: H) -> End
where
    Req: DeserializeOwned + Classify,
    Rep: Envelope,
    H: FnMut(Req) -> Fut,
    Fut: Future<Output = Rep>,
{
    serve_as(sock, limits, Access::Full, &Stats::default(), handle).await
}

/// The error a read-only client gets for a request that changes state.
pub fn read_only_refusal(cmd: &str) -> String {
    format!("permission denied: `{cmd}` changes state and this client has read-only access")
}

/// [`serve`] for a client with `access`: a read-only client's requests that change state are
/// answered with an error (the connection stays); what is refused or closed is counted in
/// `stats`.
pub async fn serve_as<Req, Rep, H, Fut>(
    sock: UnixStream,
    limits: Limits,
    access: Access,
    stats: &Stats,
    mut handle: H,
) -> End
where
    Req: DeserializeOwned + Classify,
    Rep: Envelope,
    H: FnMut(Req) -> Fut,
    Fut: Future<Output = Rep>,
{
    let (rd, mut wr) = sock.into_split();
    let mut lines = LineReader::new(rd, limits.max_line, limits.idle).with_partial(limits.partial);
    let count = |c: &AtomicU64| {
        c.fetch_add(1, Ordering::Relaxed);
    };
    loop {
        let resp = match lines.next().await {
            Incoming::Line(line) => match parse::<Req>(line) {
                Ok(req) if access == Access::ReadOnly && !req.read_only() => {
                    count(&stats.refused_read_only);
                    Rep::failure(read_only_refusal(req.name()))
                }
                Ok(req) => handle(req).await,
                Err(e) => Rep::failure(e),
            },
            Incoming::TooLong => {
                count(&stats.closed_line_too_long);
                let resp = Rep::failure(too_long(limits.max_line));
                let _ = write_line(&mut wr, &resp, limits.write_timeout).await;
                return End::TooLong;
            }
            Incoming::Closed => return End::Closed,
            Incoming::Idle => {
                count(&stats.closed_idle);
                return End::Idle;
            }
            Incoming::Partial => {
                count(&stats.closed_partial_line);
                return End::PartialLine;
            }
            Incoming::Failed(e) => return End::ReadFailed(e),
        };
        if let Err(e) = write_line(&mut wr, &resp, limits.write_timeout).await {
            return End::WriteFailed(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncBufReadExt;

    use super::*;
    use crate::lbd::{Request, Response};

    const LIMITS: Limits = Limits {
        max_line: 64,
        idle: Some(Duration::from_millis(300)),
        partial: Some(Duration::from_millis(300)),
        write_timeout: WRITE_TIMEOUT,
    };

    /// A server over one end of a socket pair; the test drives the other end by hand.
    fn server(limits: Limits) -> (UnixStream, tokio::task::JoinHandle<End>) {
        let (a, b) = UnixStream::pair().unwrap();
        let task = tokio::spawn(serve(a, limits, |req: Request| async move {
            Response::Ok(serde_json::to_value(&req).unwrap())
        }));
        (b, task)
    }

    async fn answer(rd: &mut BufReader<UnixStream>) -> Option<String> {
        let mut line = String::new();
        let n = rd.read_line(&mut line).await.unwrap();
        (n > 0).then_some(line)
    }

    #[tokio::test]
    async fn requests_errors_and_an_over_long_line() {
        let (b, task) = server(LIMITS);
        let mut b = BufReader::new(b);
        b.get_mut()
            .write_all(b"{\"cmd\":\"status\"}\r\n\n[1]\n{\"cmd\":\"x\"}\n")
            .await
            .unwrap();
        let a = answer(&mut b).await.unwrap();
        assert_eq!(a, "{\"data\":{\"cmd\":\"status\"},\"ok\":true}\n");
        let a = answer(&mut b).await.unwrap();
        assert_eq!(a, "{\"error\":\"empty request\",\"ok\":false}\n");
        let a = answer(&mut b).await.unwrap();
        assert!(a.contains("bad request: not a JSON object"), "{a}");
        let a = answer(&mut b).await.unwrap();
        assert!(a.contains("unknown variant `x`"), "{a}");
        // Exactly the limit is fine; one more byte without a newline is not.
        let mut fits = b"{\"cmd\":\"show-pools\",\"name\":\"".to_vec();
        fits.resize(LIMITS.max_line - 2, b'p');
        fits.extend_from_slice(b"\"}\n");
        b.get_mut().write_all(&fits).await.unwrap();
        assert!(answer(&mut b).await.unwrap().contains("\"ok\":true"));
        let long = vec![b'x'; LIMITS.max_line + 1];
        b.get_mut().write_all(&long).await.unwrap();
        let a = answer(&mut b).await.unwrap();
        assert!(a.contains(&too_long(LIMITS.max_line)), "{a}");
        assert_eq!(answer(&mut b).await, None, "closed after an over-long line");
        assert!(matches!(task.await.unwrap(), End::TooLong));
    }

    #[tokio::test]
    async fn idle_clients_are_dropped_and_others_are_not() {
        let (b, task) = server(LIMITS);
        let mut b = BufReader::new(b);
        assert_eq!(answer(&mut b).await, None);
        assert!(matches!(task.await.unwrap(), End::Idle));
        let (b, task) = server(Limits {
            idle: None,
            ..LIMITS
        });
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!task.is_finished());
        drop(b);
        assert!(matches!(task.await.unwrap(), End::Closed));
    }

    #[tokio::test]
    async fn a_half_sent_line_is_closed_an_idle_connection_is_not() {
        let limits = Limits {
            idle: None,
            ..LIMITS
        };
        // Nothing sent: stays.
        let (b, task) = server(limits);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!task.is_finished());
        // A complete request, then quiet: stays.
        let mut b = BufReader::new(b);
        b.get_mut()
            .write_all(b"{\"cmd\":\"status\"}\n")
            .await
            .unwrap();
        assert!(answer(&mut b).await.unwrap().contains("\"ok\":true"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!task.is_finished());
        // Half a line, then a byte now and then: closed after the partial-line time.
        b.get_mut().write_all(b"{\"cmd\":").await.unwrap();
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = b.get_mut().write_all(b" ").await;
        }
        assert_eq!(answer(&mut b).await, None);
        assert!(matches!(task.await.unwrap(), End::PartialLine));
    }

    #[tokio::test]
    async fn a_read_only_client_reads_and_is_refused_the_rest() {
        let (a, b) = UnixStream::pair().unwrap();
        let stats = std::sync::Arc::new(Stats::default());
        let st = stats.clone();
        let task = tokio::spawn(async move {
            serve_as(
                a,
                LIMITS,
                Access::ReadOnly,
                &st,
                |req: Request| async move { Response::Ok(serde_json::to_value(&req).unwrap()) },
            )
            .await
        });
        let mut b = BufReader::new(b);
        b.get_mut()
            .write_all(b"{\"cmd\":\"reload\"}\n{\"cmd\":\"status\"}\n")
            .await
            .unwrap();
        let a = answer(&mut b).await.unwrap();
        assert!(a.contains(&read_only_refusal("reload")), "{a}");
        let a = answer(&mut b).await.unwrap();
        assert!(a.contains("\"ok\":true"), "the connection stays: {a}");
        drop(b);
        assert!(matches!(task.await.unwrap(), End::Closed));
        assert_eq!(stats.refused_read_only.load(Ordering::Relaxed), 1);
    }
}
