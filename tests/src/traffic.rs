//! Traffic for the cluster lab: pool-member servers and clients, all in-process on threads
//! that entered the lab's namespaces ([`Ns::enter_current_thread`]).
//!
//! - [`Servers`]: each server namespace answers TCP 8080 (first line → `"<server> <peer-ip>\n"`,
//!   then an echo of everything after it, so one protocol serves short and long-lived
//!   connections) and UDP 5353 (each datagram → `"<server> <peer-ip>"`).
//! - [`short_connections`] / [`udp_queries`]: many short exchanges from the client namespace;
//!   each answer names the server and the source address the server saw (the SNAT source,
//!   which tells the device: [`device_of`]).
//! - [`LongLived`]: connections kept open and exercised every ~100 ms, recording any reset or
//!   timeout per connection.
//! - [`Prober`]: a new short connection attempt every 10 ms, for the failover gap.
//!
//! Every loop is bounded in count and time; threads stop and are joined on drop.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use spanlb_lab::{LabError, Ns};

use crate::topology::{DEVICES, SERVER_TCP_PORT, SERVER_UDP_PORT, VIP_TCP_PORT, VIP_UDP_PORT};

/// The device a SNAT source belongs to in steady state: a floating internal self IP (its
/// home traffic group's) or a static internal self IP.
pub fn device_of(source: IpAddr) -> Option<&'static str> {
    let s = source.to_string();
    DEVICES
        .iter()
        .find(|d| d.floating_int == s || d.static_int == s)
        .map(|d| d.name)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Servers

/// The pool members' servers, one TCP and one UDP thread per server namespace.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Connections accepted per server (name, count).
    accepted: Vec<(String, Arc<AtomicU64>)>,
}

impl Servers {
    /// Binds `0.0.0.0:8080/tcp` and `0.0.0.0:5353/udp` in each `(namespace, name)` and serves
    /// until dropped.
    pub fn start(servers: &[(Ns, String)]) -> spanlb_lab::Result<Servers> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut accepted = Vec::new();
        for (ns, name) in servers {
            let (tcp, udp) = ns
                .run_in(|| -> std::io::Result<(TcpListener, UdpSocket)> {
                    let t = TcpListener::bind(("0.0.0.0", SERVER_TCP_PORT))?;
                    t.set_nonblocking(true)?;
                    let u = UdpSocket::bind(("0.0.0.0", SERVER_UDP_PORT))?;
                    u.set_read_timeout(Some(Duration::from_millis(200)))?;
                    Ok((t, u))
                })?
                .map_err(|e| LabError::io(format!("binding the servers in {ns:?}"), e))?;
            let count = Arc::new(AtomicU64::new(0));
            accepted.push((name.clone(), count.clone()));
            let (st, n) = (stop.clone(), name.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("tcp-{name}"))
                    .spawn(move || tcp_server(tcp, n, st, count))
                    .map_err(|e| LabError::io("spawning a server thread", e))?,
            );
            let (st, n) = (stop.clone(), name.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("udp-{name}"))
                    .spawn(move || udp_server(udp, n, st))
                    .map_err(|e| LabError::io("spawning a server thread", e))?,
            );
        }
        Ok(Servers {
            stop,
            threads,
            accepted,
        })
    }

    /// Connections accepted so far, per server.
    pub fn accepted(&self) -> Vec<(String, u64)> {
        self.accepted
            .iter()
            .map(|(n, c)| (n.clone(), c.load(Ordering::Relaxed)))
            .collect()
    }
}

impl Servers {
    /// Stops serving and joins the threads (the sockets close).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The same servers as a python3 script (`python3 SCRIPT NAME`), for a lab that outlives
/// this process (`--keep`).
pub const PYTHON_SERVER: &str = r#"
import socket, sys, threading
name = sys.argv[1]
def conn(c, peer):
    try:
        buf = b""
        while b"\n" not in buf:
            d = c.recv(4096)
            if not d: return
            buf += d
        line, rest = buf.split(b"\n", 1)
        c.sendall(f"{name} {peer[0]}\n".encode() + rest)
        while True:
            d = c.recv(4096)
            if not d: return
            c.sendall(d)
    except OSError:
        pass
    finally:
        c.close()
def tcp():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 8080)); s.listen(512)
    while True:
        c, peer = s.accept()
        threading.Thread(target=conn, args=(c, peer), daemon=True).start()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 5353))
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(f"{name} {peer[0]}".encode(), peer)
ts = [threading.Thread(target=f, daemon=True) for f in (tcp, udp)]
for t in ts: t.start()
for t in ts: t.join()
"#;

fn tcp_server(l: TcpListener, name: String, stop: Arc<AtomicBool>, count: Arc<AtomicU64>) {
    let live = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((c, peer)) => {
                count.fetch_add(1, Ordering::Relaxed);
                // Bounded: at most 2000 concurrent handlers; beyond that the connection is
                // closed (the lab never gets near it).
                if live.load(Ordering::Relaxed) >= 2000 {
                    continue;
                }
                live.fetch_add(1, Ordering::Relaxed);
                let (n, st, lv) = (name.clone(), stop.clone(), live.clone());
                let spawned = std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        serve_conn(c, peer, &n, &st);
                        lv.fetch_sub(1, Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    live.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    // Let the handlers notice the stop flag (they poll every 200 ms).
    let deadline = Instant::now() + Duration::from_secs(2);
    while live.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// First line → "<name> <peer-ip>\n", then echo. Ends at EOF, on an error, or at stop.
fn serve_conn(mut c: TcpStream, peer: SocketAddr, name: &str, stop: &AtomicBool) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = c.set_nodelay(true);
    let mut buf = [0u8; 4096];
    let mut first = Vec::new();
    let mut greeted = false;
    while !stop.load(Ordering::Relaxed) {
        let n = match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        if greeted {
            if c.write_all(&buf[..n]).is_err() {
                break;
            }
            continue;
        }
        first.extend_from_slice(&buf[..n]);
        if let Some(pos) = first.iter().position(|&b| b == b'\n') {
            greeted = true;
            let hello = format!("{name} {}\n", peer.ip());
            if c.write_all(hello.as_bytes()).is_err() {
                break;
            }
            let rest = &first[pos + 1..];
            if !rest.is_empty() && c.write_all(rest).is_err() {
                break;
            }
        } else if first.len() > 4096 {
            break;
        }
    }
    let _ = c.shutdown(Shutdown::Both);
}

fn udp_server(s: UdpSocket, name: String, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((_, peer)) = s.recv_from(&mut buf) {
            let _ = s.send_to(format!("{name} {}", peer.ip()).as_bytes(), peer);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client side

/// A server's answer: which server, and the source address it saw (the SNAT source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub server: String,
    pub source: IpAddr,
}

impl Answer {
    /// The device the SNAT source names (see [`device_of`]).
    pub fn device(&self) -> Option<&'static str> {
        device_of(self.source)
    }

    fn parse(line: &str) -> Result<Answer, String> {
        let mut it = line.split_whitespace();
        match (it.next(), it.next().and_then(|s| s.parse().ok())) {
            (Some(server), Some(source)) => Ok(Answer {
                server: server.to_string(),
                source,
            }),
            _ => Err(format!("unexpected answer `{}`", line.trim())),
        }
    }
}

/// The VIP's TCP virtual server.
pub fn vip_tcp() -> SocketAddr {
    SocketAddr::new(
        crate::topology::VIP
            .parse::<Ipv4Addr>()
            .expect("VIP")
            .into(),
        VIP_TCP_PORT,
    )
}

/// The VIP's UDP virtual server.
pub fn vip_udp() -> SocketAddr {
    SocketAddr::new(
        crate::topology::VIP
            .parse::<Ipv4Addr>()
            .expect("VIP")
            .into(),
        VIP_UDP_PORT,
    )
}

/// Reads one `\n`-terminated line within `deadline`.
fn read_line(c: &mut TcpStream, deadline: Instant) -> Result<String, String> {
    let mut line = Vec::new();
    let mut b = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "timeout (got `{}`)",
                String::from_utf8_lossy(&line).trim()
            ));
        }
        c.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        match c.read(&mut b) {
            Ok(0) => return Err("connection closed".into()),
            Ok(n) => {
                line.extend_from_slice(&b[..n]);
                if let Some(pos) = line.iter().position(|&x| x == b'\n') {
                    line.truncate(pos);
                    return Ok(String::from_utf8_lossy(&line).into_owned());
                }
                if line.len() > 4096 {
                    return Err("overlong line".into());
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// One connection to `addr` with the first-line exchange, all within `timeout`. The caller
/// must be in the client namespace. Returns the open stream and the answer.
pub fn connect_once(addr: SocketAddr, timeout: Duration) -> Result<(TcpStream, Answer), String> {
    connect_from(None, addr, timeout)
}

/// [`connect_once`] from source address `from` (any port), or the default source.
pub fn connect_from(
    from: Option<IpAddr>,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(TcpStream, Answer), String> {
    let deadline = Instant::now() + timeout;
    let mut c = match from {
        None => TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?,
        Some(ip) => {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .map_err(|e| format!("socket: {e}"))?;
            s.bind(&SocketAddr::new(ip, 0).into())
                .map_err(|e| format!("bind {ip}: {e}"))?;
            s.connect_timeout(&addr.into(), timeout)
                .map_err(|e| format!("connect from {ip}: {e}"))?;
            s.into()
        }
    };
    let _ = c.set_nodelay(true);
    c.write_all(b"hello\n").map_err(|e| format!("write: {e}"))?;
    let line = read_line(&mut c, deadline)?;
    Ok((c, Answer::parse(&line)?))
}

/// `n` short TCP connections to the VIP from the client namespace (10 in parallel, each with
/// its own ephemeral source port), each: connect, request line, answer, close.
pub fn short_connections(client: &Ns, n: usize) -> spanlb_lab::Result<Vec<Result<Answer, String>>> {
    let addr = vip_tcp();
    client.run_in(move || {
        let per = n.div_ceil(10);
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let count = per.min(n.saturating_sub(i * per));
                std::thread::spawn(move || {
                    (0..count)
                        .map(|_| connect_once(addr, Duration::from_secs(2)).map(|(_, a)| a))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// `n` UDP queries to the VIP, each from a new socket (new source port), 1 s for the answer.
pub fn udp_queries(client: &Ns, n: usize) -> spanlb_lab::Result<Vec<Result<Answer, String>>> {
    let addr = vip_udp();
    client.run_in(move || {
        (0..n)
            .map(|_| -> Result<Answer, String> {
                let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(1)))
                    .map_err(|e| e.to_string())?;
                s.send_to(b"q", addr).map_err(|e| e.to_string())?;
                let mut b = [0u8; 512];
                let (len, _) = s.recv_from(&mut b).map_err(|e| e.to_string())?;
                Answer::parse(&String::from_utf8_lossy(&b[..len]))
            })
            .collect()
    })
}

/// Counts answers per device (`None`: an unknown source or a failure).
pub fn per_device(answers: &[Result<Answer, String>]) -> Vec<(Option<&'static str>, usize)> {
    let mut out: Vec<(Option<&'static str>, usize)> = Vec::new();
    for a in answers {
        let d = a.as_ref().ok().and_then(Answer::device);
        match out.iter_mut().find(|(k, _)| *k == d) {
            Some((_, n)) => *n += 1,
            None => out.push((d, 1)),
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// Long-lived connections

/// One long-lived connection's record.
#[derive(Debug)]
pub struct Flow {
    /// The device it went through (by its SNAT source at open time).
    pub device: &'static str,
    pub answer: Answer,
    /// Successful exchanges so far.
    pub exchanges: AtomicU64,
    /// The first failure (reset, timeout, wrong echo) and when; the flow stops there.
    pub failure: Mutex<Option<(Instant, String)>>,
}

impl Flow {
    pub fn failed(&self) -> Option<(Instant, String)> {
        lock(&self.failure).clone()
    }
}

/// Long-lived connections exercised every ~100 ms (write a line, read its echo, 2 s each),
/// one thread per connection.
pub struct LongLived {
    pub flows: Vec<Arc<Flow>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl LongLived {
    /// Opens connections from the client namespace until `n_wanted` of them went through one
    /// of the `wanted` devices (others are closed at once); gives up after `20 * n_wanted + 50`
    /// attempts or 30 s.
    pub fn open(client: &Ns, n_wanted: usize, wanted: &[&str]) -> Result<LongLived, String> {
        LongLived::open_from(client, n_wanted, wanted, &[])
    }

    /// [`open`](Self::open), each attempt from the next of `sources` (any port; the default
    /// source when empty): with a router hashing on addresses only, a flow's path depends on
    /// its source address.
    pub fn open_from(
        client: &Ns,
        n_wanted: usize,
        wanted: &[&str],
        sources: &[IpAddr],
    ) -> Result<LongLived, String> {
        let conns = open_through(client, n_wanted, wanted, sources, 20 * n_wanted + 50)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut flows = Vec::new();
        let mut threads = Vec::new();
        for (i, (c, a, d)) in conns.into_iter().enumerate() {
            let f = Arc::new(Flow {
                device: d,
                answer: a,
                exchanges: AtomicU64::new(0),
                failure: Mutex::new(None),
            });
            flows.push(f.clone());
            let st = stop.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("flow-{i}"))
                    .stack_size(128 * 1024)
                    .spawn(move || exercise(c, i, &f, &st))
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(LongLived {
            flows,
            stop,
            threads,
        })
    }

    /// Flows through `device`.
    pub fn through(&self, device: &str) -> Vec<&Arc<Flow>> {
        self.flows.iter().filter(|f| f.device == device).collect()
    }

    /// Flows (through any of `devices`, or all when empty) that failed, with their error.
    pub fn disturbed(&self, devices: &[&str]) -> Vec<(&'static str, String)> {
        self.flows
            .iter()
            .filter(|f| devices.is_empty() || devices.contains(&f.device))
            .filter_map(|f| f.failed().map(|(_, e)| (f.device, e)))
            .collect()
    }

    /// Exchange counts now, to check later that every flow kept moving.
    pub fn snapshot(&self) -> Vec<u64> {
        self.flows
            .iter()
            .map(|f| f.exchanges.load(Ordering::Relaxed))
            .collect()
    }

    /// Flows (through `devices`, or all) that made no exchange since `snap` (stalled ones).
    pub fn stalled_since(&self, snap: &[u64], devices: &[&str]) -> usize {
        self.flows
            .iter()
            .zip(snap)
            .filter(|(f, _)| devices.is_empty() || devices.contains(&f.device))
            .filter(|(f, &n)| f.exchanges.load(Ordering::Relaxed) <= n)
            .count()
    }

    /// Per-device counts, e.g. `a=15 c=15`.
    pub fn summary(&self) -> String {
        let mut per: Vec<(&str, usize, usize)> = Vec::new();
        for f in &self.flows {
            let bad = usize::from(f.failed().is_some());
            match per.iter_mut().find(|(d, ..)| *d == f.device) {
                Some((_, n, b)) => {
                    *n += 1;
                    *b += bad;
                }
                None => per.push((f.device, 1, bad)),
            }
        }
        per.sort();
        per.iter()
            .map(|(d, n, b)| format!("{d}={n} (failed {b})"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Stops the exchanges and closes the connections.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for LongLived {
    fn drop(&mut self) {
        self.stop();
    }
}

fn exercise(mut c: TcpStream, i: usize, f: &Flow, stop: &AtomicBool) {
    // Bounded: at most 10 minutes of exchanges.
    let end = Instant::now() + Duration::from_secs(600);
    let mut k = 0u64;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        k += 1;
        let msg = format!("flow {i} exchange {k}");
        let r = c
            .write_all(format!("{msg}\n").as_bytes())
            .map_err(|e| format!("write: {e}"))
            .and_then(|_| read_line(&mut c, Instant::now() + Duration::from_secs(2)))
            .and_then(|l| {
                if l == msg {
                    Ok(())
                } else {
                    Err(format!("wrong echo `{l}`"))
                }
            });
        match r {
            Ok(()) => {
                f.exchanges.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                *lock(&f.failure) = Some((Instant::now(), e));
                return;
            }
        }
        // ~100 ms between exchanges, still reacting to stop quickly.
        for _ in 0..5 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Prober

/// One probe attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub start: Instant,
    pub ok: bool,
    pub device: Option<&'static str>,
    pub error: Option<String>,
}

/// What a [`Prober`] saw around an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeStats {
    pub attempts: usize,
    pub failed: usize,
    /// (start of the last failed attempt + 10 ms) − the event, 0 if none failed after it.
    pub gap_ms: u64,
}

/// Starts a new short connection attempt every 10 ms (not waiting for earlier ones); each
/// attempt must connect, send its request line and get the answer within 1.5 s.
pub struct Prober {
    stop: Arc<AtomicBool>,
    driver: Option<JoinHandle<spanlb_lab::Result<()>>>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    in_flight: Arc<AtomicUsize>,
}

/// Interval between probe attempts.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Time an attempt gets.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

impl Prober {
    /// Starts probing from the client namespace; stops by itself after `max` (bounded).
    pub fn start(client: &Ns, max: Duration) -> spanlb_lab::Result<Prober> {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (st, at, fl) = (stop.clone(), attempts.clone(), in_flight.clone());
        let addr = vip_tcp();
        let driver = client.spawn_thread("prober", move || {
            let t0 = Instant::now();
            let mut next = t0;
            while !st.load(Ordering::Relaxed) && t0.elapsed() < max {
                let start = Instant::now();
                // Bounded concurrency: PROBE_TIMEOUT / PROBE_INTERVAL attempts, plus slack.
                if fl.load(Ordering::Relaxed) < 400 {
                    fl.fetch_add(1, Ordering::Relaxed);
                    let (at, fl2) = (at.clone(), fl.clone());
                    let spawned =
                        std::thread::Builder::new()
                            .stack_size(128 * 1024)
                            .spawn(move || {
                                let r = connect_once(addr, PROBE_TIMEOUT);
                                let a = match r {
                                    Ok((_, ans)) => Attempt {
                                        start,
                                        ok: true,
                                        device: ans.device(),
                                        error: None,
                                    },
                                    Err(e) => Attempt {
                                        start,
                                        ok: false,
                                        device: None,
                                        error: Some(e),
                                    },
                                };
                                lock(&at).push(a);
                                fl2.fetch_sub(1, Ordering::Relaxed);
                            });
                    if spawned.is_err() {
                        fl.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                next += PROBE_INTERVAL;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
        })?;
        Ok(Prober {
            stop,
            driver: Some(driver),
            attempts,
            in_flight,
        })
    }

    /// Stops starting attempts and waits (up to 3 s) for the outstanding ones.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(d) = self.driver.take() {
            let _ = d.join();
        }
        let deadline = Instant::now() + PROBE_TIMEOUT * 2;
        while self.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The attempts finished so far, by start time.
    pub fn attempts(&self) -> Vec<Attempt> {
        let mut v = lock(&self.attempts).clone();
        v.sort_by_key(|a| a.start);
        v
    }

    /// Attempts that finished, failures and the gap, relative to `event`.
    pub fn stats(&self, event: Instant) -> ProbeStats {
        let v = self.attempts();
        let failed: Vec<&Attempt> = v.iter().filter(|a| !a.ok).collect();
        let gap_ms = failed
            .iter()
            .map(|a| a.start + PROBE_INTERVAL)
            .max()
            .map(|end| end.saturating_duration_since(event).as_millis() as u64)
            .unwrap_or(0);
        ProbeStats {
            attempts: v.len(),
            failed: failed.len(),
            gap_ms,
        }
    }

    /// Up to `n` distinct failure messages (for diagnostics).
    pub fn errors(&self, n: usize) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for a in self.attempts() {
            if let Some(e) = a.error {
                if !out.contains(&e) {
                    out.push(e);
                    if out.len() >= n {
                        break;
                    }
                }
            }
        }
        out
    }

    /// Successful attempts per device since `after`.
    pub fn devices_since(&self, after: Instant) -> Vec<(&'static str, usize)> {
        let mut out: Vec<(&'static str, usize)> = Vec::new();
        for a in self.attempts().iter().filter(|a| a.ok && a.start >= after) {
            if let Some(d) = a.device {
                match out.iter_mut().find(|(k, _)| *k == d) {
                    Some((_, n)) => *n += 1,
                    None => out.push((d, 1)),
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Opens connections from the client namespace (after the first exchange) until `n` of them
/// went through one of the `wanted` devices; the others are closed at once. Each attempt comes
/// from the next of `sources` (any port; the default source when empty). At most `attempts`
/// attempts or 30 s.
fn open_through(
    client: &Ns,
    n: usize,
    wanted: &[&str],
    sources: &[IpAddr],
    attempts: usize,
) -> Result<Vec<(TcpStream, Answer, &'static str)>, String> {
    let named = wanted.join(", ");
    let wanted: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
    let sources = sources.to_vec();
    let addr = vip_tcp();
    let (conns, seen) = client
        .run_in(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut keep = Vec::new();
            let mut seen = Vec::new();
            for attempt in 0..attempts {
                if keep.len() >= n || Instant::now() >= deadline {
                    break;
                }
                let from = (!sources.is_empty()).then(|| sources[attempt % sources.len()]);
                match connect_from(from, addr, Duration::from_secs(2)) {
                    Ok((c, a)) => match a.device() {
                        Some(d) if wanted.iter().any(|w| w == d) => keep.push((c, a, d)),
                        d => seen.push(format!("{d:?}")),
                    },
                    Err(e) => seen.push(e),
                }
            }
            (keep, seen)
        })
        .map_err(|e| e.to_string())?;
    if conns.len() < n {
        return Err(format!(
            "opened only {} of {n} connections through {named}; others: {:?}",
            conns.len(),
            &seen[..seen.len().min(20)]
        ));
    }
    Ok(conns)
}

// ---------------------------------------------------------------------------------------------
// Idle connections

/// Connections opened through one device and then left idle (so that connection mirroring
/// snapshots them), to be tried once later.
pub struct IdleFlows {
    conns: Vec<(usize, TcpStream)>,
}

impl IdleFlows {
    /// Opens `n` connections through device `via` (others are closed at once; at most
    /// `30 * n + 50` attempts or 30 s) and leaves them idle after the first exchange.
    pub fn open(client: &Ns, n: usize, via: &str) -> Result<IdleFlows, String> {
        let conns = open_through(client, n, &[via], &[], 30 * n + 50)?
            .into_iter()
            .enumerate()
            .map(|(i, (c, _, _))| (i, c))
            .collect();
        Ok(IdleFlows { conns })
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Each connection sends one line and must get it echoed within 5 s (from the client
    /// namespace, in parallel); the errors of those that did not.
    pub fn exchange(self, client: &Ns) -> Result<Vec<String>, String> {
        client
            .run_in(move || {
                let handles: Vec<_> = self
                    .conns
                    .into_iter()
                    .map(|(i, mut c)| {
                        std::thread::spawn(move || {
                            let msg = format!("idle flow {i} still here");
                            c.write_all(format!("{msg}\n").as_bytes())
                                .map_err(|e| format!("flow {i}: write: {e}"))?;
                            match read_line(&mut c, Instant::now() + Duration::from_secs(5)) {
                                Ok(l) if l == msg => Ok(()),
                                Ok(l) => Err(format!("flow {i}: wrong echo `{l}`")),
                                Err(e) => Err(format!("flow {i}: {e}")),
                            }
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .filter_map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())).err())
                    .collect()
            })
            .map_err(|e| e.to_string())
    }
}
