//! Health-probe I/O: one probe of a member ([`probe`]) and the task that drives a
//! [`MonitorFsm`] with real probes and the real clock ([`spawn_monitor`]).
//!
//! Every probe is bounded by its timeout (connect, write and read included) and reads at most
//! 64 KiB. The driver runs at most one probe at a time, inside its own task, so aborting the
//! task's JoinHandle cancels the probe in flight with it.
//!
//! This module must not decide health (the fsm does), block a thread, retry on its own, or
//! touch any address but the member's (and the source address it is given).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tracing::{debug, warn};

use super::fsm::{Input, MonitorFsm, Output};
use super::{Health, MonitorSpec, ProbeKind};

/// The most a probe reads of a response.
const MAX_RESPONSE: usize = 64 * 1024;

/// Why a probe failed; the message ends up in a health-change reason.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("bind {0}: {err}", err = io_text(.1))]
    Bind(IpAddr, io::Error),
    #[error("connect: {}", io_text(.0))]
    Connect(io::Error),
    #[error("timed out after {}", humantime::format_duration(*.0))]
    TimedOut(Duration),
    #[error("bad status {got} (wanted {want})")]
    BadStatus { got: u16, want: u16 },
    #[error("bad response: {0}")]
    BadResponse(&'static str),
    #[error("body did not match")]
    BodyMismatch,
    #[error("udp: no reply within {}", humantime::format_duration(*.0))]
    UdpNoReply(Duration),
    #[error("udp: reply did not match")]
    UdpMismatch,
    #[error("udp: port unreachable")]
    UdpUnreachable,
    #[error("io: {}", io_text(.0))]
    Io(io::Error),
}

impl ProbeError {
    /// The probe failed for a reason of this host's (out of descriptors, buffers, memory,
    /// local ports or addresses; see [`crate::sys::is_local_error`]), not the member's: it
    /// must not count as a failure.
    pub fn is_local(&self) -> bool {
        match self {
            ProbeError::Bind(_, e) | ProbeError::Connect(e) | ProbeError::Io(e) => {
                crate::sys::is_local_error(e)
            }
            _ => false,
        }
    }
}

/// Probes skipped for a local error since start (all monitors).
static SKIPPED: AtomicU64 = AtomicU64::new(0);
/// When a skipped probe was last logged (Unix ms).
static SKIP_LOGGED: AtomicU64 = AtomicU64::new(0);

/// Probes skipped for a local error since start, over every monitor.
pub fn skipped_probes() -> u64 {
    SKIPPED.load(Ordering::Relaxed)
}

/// Counts a skipped probe and logs it, at most every 10 s over all monitors.
fn skipped(monitor: &str, target: SocketAddr, e: &ProbeError) {
    let n = SKIPPED.fetch_add(1, Ordering::Relaxed) + 1;
    let now = crate::sys::now_ms();
    let last = SKIP_LOGGED.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= 10_000
        && SKIP_LOGGED
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        warn!(monitor, %target, skipped = n,
            "probe skipped, no verdict (a local error, not the member's): {e}");
    }
}

/// An io::Error as a short lowercase phrase: "connection refused", not
/// "Connection refused (os error 111)".
fn io_text(e: &io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error ") {
        Some(i) if s.ends_with(')') => &s[..i],
        _ => &s[..],
    };
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// One probe of `target`, from `source` if given (bind before connect), bounded by `timeout`.
pub async fn probe(
    kind: &ProbeKind,
    target: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<(), ProbeError> {
    match kind {
        ProbeKind::Tcp => {
            bounded(timeout, async {
                connect(target, source).await?;
                Ok(())
            })
            .await
        }
        ProbeKind::Http {
            request,
            expect_status,
            expect_body,
        } => {
            bounded(
                timeout,
                http(
                    target,
                    source,
                    request,
                    *expect_status,
                    expect_body.as_deref(),
                ),
            )
            .await
        }
        ProbeKind::Udp { send, expect } => udp(target, source, timeout, send, expect).await,
    }
}

async fn bounded(
    timeout: Duration,
    f: impl std::future::Future<Output = Result<(), ProbeError>>,
) -> Result<(), ProbeError> {
    tokio::time::timeout(timeout, f)
        .await
        .unwrap_or(Err(ProbeError::TimedOut(timeout)))
}

/// IP_BIND_ADDRESS_NO_PORT (see [`crate::proxy::bind_address_no_port`]); best effort.
fn bind_address_no_port<S: AsRawFd>(sock: &S) {
    if let Err(e) = crate::sys::bind_address_no_port(sock) {
        debug!("IP_BIND_ADDRESS_NO_PORT: {}", io_text(&e));
    }
}

async fn connect(target: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, ProbeError> {
    let sock = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(ProbeError::Io)?;
    if let Some(src) = source {
        bind_address_no_port(&sock);
        sock.bind(SocketAddr::new(src, 0))
            .map_err(|e| ProbeError::Bind(src, e))?;
    }
    sock.connect(target).await.map_err(ProbeError::Connect)
}

async fn http(
    target: SocketAddr,
    source: Option<IpAddr>,
    request: &[u8],
    want: u16,
    expect_body: Option<&[u8]>,
) -> Result<(), ProbeError> {
    let mut stream = connect(target, source).await?;
    stream.write_all(request).await.map_err(ProbeError::Io)?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let room = MAX_RESPONSE - buf.len();
        let n = stream
            .read(&mut chunk[..room.min(16 * 1024)])
            .await
            .map_err(ProbeError::Io)?;
        buf.extend_from_slice(&chunk[..n]);
        let complete = n == 0 || buf.len() >= MAX_RESPONSE;
        if let Some(verdict) = http_verdict(&buf, want, expect_body, complete) {
            return verdict;
        }
    }
}

/// Judges the response read so far: `None` while more must be read. `complete` means no more
/// will come (EOF or the 64 KiB cap). The body is matched as raw bytes after the header
/// (chunked framing is not decoded).
fn http_verdict(
    buf: &[u8],
    want: u16,
    expect_body: Option<&[u8]>,
    complete: bool,
) -> Option<Result<(), ProbeError>> {
    let Some(eol) = find(buf, b"\n") else {
        return complete.then_some(Err(ProbeError::BadResponse("no status line")));
    };
    let got = match status_code(&buf[..eol]) {
        Some(code) => code,
        None => return Some(Err(ProbeError::BadResponse("malformed status line"))),
    };
    if got != want {
        return Some(Err(ProbeError::BadStatus { got, want }));
    }
    let Some(needle) = expect_body else {
        return Some(Ok(()));
    };
    let body_start = find(buf, b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| find(buf, b"\n\n").map(|i| i + 2));
    let Some(body_start) = body_start else {
        return complete.then_some(Err(ProbeError::BadResponse("incomplete header")));
    };
    let body = &buf[body_start..];
    if needle.is_empty() || find(body, needle).is_some() {
        return Some(Ok(()));
    }
    let body_done = content_length(&buf[..body_start]).is_some_and(|len| body.len() >= len);
    (complete || body_done).then_some(Err(ProbeError::BodyMismatch))
}

/// The code of an "HTTP/1.1 200 OK" status line.
fn status_code(line: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    if !words.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = words.next()?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    code.parse().ok()
}

/// The Content-Length of a response header, if it has a valid one.
fn content_length(header: &[u8]) -> Option<usize> {
    let header = String::from_utf8_lossy(header);
    header.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn udp(
    target: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
    send: &[u8],
    expect: &[u8],
) -> Result<(), ProbeError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let local = match (source, target) {
        (Some(src), _) => src,
        (None, SocketAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (None, SocketAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let sock = UdpSocket::bind(SocketAddr::new(local, 0))
        .await
        .map_err(|e| ProbeError::Bind(local, e))?;
    sock.connect(target).await.map_err(ProbeError::Connect)?;
    let refused = |e: io::Error| match e.kind() {
        io::ErrorKind::ConnectionRefused => ProbeError::UdpUnreachable,
        _ => ProbeError::Io(e),
    };
    match tokio::time::timeout_at(deadline, sock.send(send)).await {
        Ok(sent) => sent.map_err(refused)?,
        Err(_) => return Err(ProbeError::TimedOut(timeout)),
    };
    let mut buf = vec![0u8; MAX_RESPONSE];
    let mut mismatched = false;
    loop {
        match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                if find(&buf[..n], expect).is_some() {
                    return Ok(());
                }
                mismatched = true;
            }
            Ok(Err(e)) => return Err(refused(e)),
            Err(_) if mismatched => return Err(ProbeError::UdpMismatch),
            Err(_) => return Err(ProbeError::UdpNoReply(timeout)),
        }
    }
}

/// The health-change callback of [`spawn_monitor`]: `(new health, reason)`.
pub type OnChange = Box<dyn Fn(Health, &str) + Send + Sync + 'static>;

/// Called after every successful probe (passive health listens to it).
pub type OnSuccess = Box<dyn Fn() + Send + Sync + 'static>;

/// Driver: a tokio task running one MonitorFsm for one member and one monitor. It calls
/// `on_change(health, reason)` on every HealthChanged (including the first decision) and logs it
/// with tracing (info, with monitor name and target). Stops when the JoinHandle is aborted.
///
/// `on_change` runs on the monitor's task and must not block.
pub fn spawn_monitor(
    spec: Arc<MonitorSpec>,
    target: SocketAddr,
    source: Option<IpAddr>,
    on_change: OnChange,
) -> tokio::task::JoinHandle<()> {
    spawn_monitor_with(spec, target, source, on_change, Box::new(|| {}))
}

/// [`spawn_monitor`], with a callback for every successful probe.
pub fn spawn_monitor_with(
    spec: Arc<MonitorSpec>,
    target: SocketAddr,
    source: Option<IpAddr>,
    on_change: OnChange,
    on_success: OnSuccess,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(spec, target, source, on_change, on_success))
}

type ProbeFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ProbeError>> + Send>>;

fn probe_future(spec: Arc<MonitorSpec>, target: SocketAddr, source: Option<IpAddr>) -> ProbeFuture {
    Box::pin(async move { probe(&spec.kind, target, source, spec.timeout).await })
}

async fn run(
    spec: Arc<MonitorSpec>,
    target: SocketAddr,
    source: Option<IpAddr>,
    on_change: OnChange,
    on_success: OnSuccess,
) {
    let mut fsm = MonitorFsm::new(spec.interval, spec.timeout, spec.up_count, spec.down_count);
    // The one probe in flight (the fsm never asks for a second before the first is over).
    let mut in_flight: Option<(u64, Instant, ProbeFuture)> = None;
    let mut input = Input::Start;
    loop {
        let now = Instant::now();
        if matches!(input, Input::Timer) && in_flight.as_ref().is_some_and(|p| now >= p.1) {
            // The fsm counts it timed out on this Timer; stop waiting for it.
            in_flight = None;
        }
        for out in fsm.process(now, input) {
            match out {
                Output::StartProbe { id, deadline } => {
                    let fut = probe_future(spec.clone(), target, source);
                    in_flight = Some((id, deadline, fut));
                }
                Output::HealthChanged { from, to, reason } => {
                    // The daemon logs the change with its pool (`member is now …`).
                    debug!(monitor = %spec.name, %target, %from, %to, "member {to}: {reason}");
                    on_change(to, &reason);
                }
            }
        }
        let deadline = fsm.poll_timeout();
        input = {
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            let probe_done = async {
                match in_flight.as_mut() {
                    Some((id, _, fut)) => (*id, fut.await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => Input::Timer,
                (id, res) = probe_done => match res {
                    Ok(()) => {
                        on_success();
                        Input::ProbeDone { id, ok: true, detail: String::new() }
                    }
                    Err(e) if e.is_local() => {
                        skipped(&spec.name, target, &e);
                        Input::ProbeSkipped { id }
                    }
                    Err(e) => Input::ProbeDone { id, ok: false, detail: e.to_string() },
                },
            }
        };
        if matches!(input, Input::ProbeDone { .. } | Input::ProbeSkipped { .. }) {
            in_flight = None;
        }
    }
}

#[cfg(test)]
mod tests;
