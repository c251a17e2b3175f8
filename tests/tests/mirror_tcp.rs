//! Issue 6, test 3: TCP connections survive a hung device through connection mirroring.
//!
//! The seed lab with mirroring on and `mirror = true` on the `web` virtual server (in front of
//! the lab's echo servers). 50 idle connections go through device B (each keeps the client
//! source port whose ECMP path leads to B; r1 hashes the five-tuple), plus 6 connections that
//! stream data. B's lbd snapshots each idle connection's two sockets (TCP_REPAIR) and mirrors
//! them to C, tg-2's next-active. Then B hangs (`kill -STOP`): C rebuilds the sockets before it
//! takes tg-2's floating addresses, and then:
//! - each idle connection sends a checksummed message and must get it back intact: at least
//!   49 of 50 survive;
//! - each streaming connection either carries on with correct data or is reset within 5 s;
//!   none delivers a wrong byte and none hangs.
//!
//! Issue 16: the same idle connections survive a SIGTERM of B's lbd that drains (B gives tg-2
//! up to C first, then has nothing left open and exits by itself).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use socket2::{Domain, Socket, Type};
use spanlb_tests::cluster::{prereqs, ClusterLab, ClusterOptions, Daemon};
use spanlb_tests::topology::{VIP, VIP_TCP_PORT};
use spanlb_tests::traffic::device_of;

const IDLE: usize = 50;
const STREAMS: usize = 6;
const CLIENT: &str = "172.16.1.2";

fn five_tuple_hash(lab: &ClusterLab) {
    lab.ok(
        lab.r1.sysctl("net.ipv4.fib_multipath_hash_fields", "55"),
        "r1 hash fields",
    );
    lab.ok(
        lab.r1.sysctl("net.ipv4.fib_multipath_hash_policy", "3"),
        "r1 hash policy",
    );
}

/// Reads until `n` bytes or the deadline.
fn read_n(c: &mut TcpStream, n: usize, deadline: Instant) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(n);
    let mut buf = [0u8; 4096];
    while out.len() < n {
        if Instant::now() > deadline {
            return Err(format!("timed out after {} of {n} bytes", out.len()));
        }
        let want = (n - out.len()).min(buf.len());
        match c.read(&mut buf[..want]) {
            Ok(0) => return Err(format!("closed after {} of {n} bytes", out.len())),
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("{e} after {} of {n} bytes", out.len())),
        }
    }
    Ok(out)
}

/// Opens a connection through device `via` from a source port of `ports` (the first whose
/// path leads there; others are reset). Returns the stream after the greeting.
fn open_via(via: &str, ports: std::ops::Range<u16>) -> Result<(TcpStream, u16), String> {
    let vip = SocketAddr::new(VIP.parse::<IpAddr>().unwrap(), VIP_TCP_PORT);
    let mut last = String::new();
    for port in ports {
        let src: SocketAddr = format!("{CLIENT}:{port}").parse().unwrap();
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
        s.set_reuse_address(true).map_err(|e| e.to_string())?;
        if let Err(e) = s.bind(&src.into()) {
            last = format!("bind {src}: {e}");
            continue;
        }
        if let Err(e) = s.connect_timeout(&vip.into(), Duration::from_secs(2)) {
            last = format!("connect from {src}: {e}");
            continue;
        }
        let mut c: TcpStream = s.into();
        c.set_read_timeout(Some(Duration::from_millis(200))).ok();
        c.set_nodelay(true).ok();
        if c.write_all(b"hello\n").is_err() {
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while !line.ends_with(b"\n") && Instant::now() < deadline {
            match c.read(&mut b) {
                Ok(1) => line.push(b[0]),
                Ok(_) => break,
                Err(_) => {}
            }
        }
        let text = String::from_utf8_lossy(&line);
        let snat: Option<IpAddr> = text.split_whitespace().nth(1).and_then(|s| s.parse().ok());
        if snat.and_then(device_of) == Some(via) {
            return Ok((c, port));
        }
        let _ = Socket::from(c).set_linger(Some(Duration::ZERO));
        last = format!("{src} went via {:?}", snat.and_then(device_of));
    }
    Err(format!("no path via {via}: {last}"))
}

fn checksum(b: &[u8]) -> u64 {
    b.iter()
        .enumerate()
        .fold(0xcbf29ce484222325u64, |h, (i, x)| {
            (h ^ u64::from(*x) ^ (i as u64)).wrapping_mul(0x100000001b3)
        })
}

/// A message whose bytes depend on (connection, round).
/// From the client namespace, each of `idle` sends a checksummed message of round `round`
/// and must get it back within 5 s; one result per connection.
fn echo_each(
    lab: &ClusterLab,
    idle: Vec<(usize, TcpStream, u16)>,
    round: u64,
    what: &str,
) -> Vec<Result<(), String>> {
    lab.ok(
        lab.client.run_in(move || {
            let handles: Vec<_> = idle
                .into_iter()
                .map(|(i, mut c, port)| {
                    std::thread::spawn(move || {
                        let msg = message(i, round, 1500);
                        c.write_all(&msg)
                            .map_err(|e| format!("port {port}: write {e}"))?;
                        let back =
                            read_n(&mut c, msg.len(), Instant::now() + Duration::from_secs(5))
                                .map_err(|e| format!("port {port}: {e}"))?;
                        if checksum(&back) != checksum(&msg) {
                            return Err(format!("port {port}: wrong bytes"));
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
                .collect()
        }),
        what,
    )
}

fn message(conn: usize, round: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64 * 31 + round * 7 + conn as u64 * 13) % 251) as u8)
        .collect()
}

/// What a streaming connection saw.
#[derive(Debug, Default)]
struct StreamResult {
    /// Bytes echoed back correctly before and after the hang.
    bytes_before: u64,
    bytes_after: u64,
    /// A wrong byte came back (never allowed).
    corrupt: bool,
    /// Ended with an error, and when (relative to the hang).
    ended: Option<(Duration, String)>,
    /// The longest time without progress after the hang, while not ended.
    longest_stall: Duration,
}

/// The byte at stream offset `i` of connection `k`.
fn pattern(k: usize, i: u64) -> u8 {
    ((i * 7 + k as u64 * 13 + i / 251) % 256) as u8
}

/// Writes the pattern without pause (a writer thread) and checks the echo (this thread).
fn stream(
    k: usize,
    opened: Result<(TcpStream, u16), String>,
    stop: &AtomicBool,
    hang_at: &AtomicU64,
    started: Instant,
) -> StreamResult {
    let mut res = StreamResult::default();
    let mut c = match opened {
        Ok((c, _)) => c,
        Err(e) => {
            res.ended = Some((Duration::ZERO, e));
            return res;
        }
    };
    let since_hang = || {
        let hung = hang_at.load(Ordering::Relaxed);
        (hung > 0).then(|| {
            Duration::from_millis((started.elapsed().as_millis() as u64).saturating_sub(hung))
        })
    };
    let writer = {
        let mut w = c.try_clone().expect("clone");
        let _ = w.set_write_timeout(Some(Duration::from_millis(200)));
        let stop_w = Arc::new(AtomicBool::new(false));
        let stop2 = stop_w.clone();
        let h = std::thread::spawn(move || {
            let mut off = 0u64;
            let mut chunk = vec![0u8; 1024];
            while !stop2.load(Ordering::Relaxed) {
                for (j, b) in chunk.iter_mut().enumerate() {
                    *b = pattern(k, off + j as u64);
                }
                match w.write(&chunk) {
                    Ok(n) => off += n as u64,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
                // Write continuously but not flat out: ~1 MB/s per connection.
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        (h, stop_w)
    };
    let mut off = 0u64;
    let mut buf = [0u8; 8192];
    let mut last_progress = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match c.read(&mut buf) {
            Ok(0) => {
                res.ended = Some((since_hang().unwrap_or_default(), "closed".into()));
                break;
            }
            Ok(n) => {
                if buf[..n]
                    .iter()
                    .enumerate()
                    .any(|(j, b)| *b != pattern(k, off + j as u64))
                {
                    res.corrupt = true;
                    res.ended = Some((since_hang().unwrap_or_default(), "wrong bytes".into()));
                    break;
                }
                off += n as u64;
                if since_hang().is_some() {
                    res.bytes_after += n as u64;
                } else {
                    res.bytes_before += n as u64;
                }
                last_progress = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if since_hang().is_some() {
                    res.longest_stall = res.longest_stall.max(last_progress.elapsed());
                }
            }
            Err(e) => {
                res.ended = Some((since_hang().unwrap_or_default(), e.to_string()));
                break;
            }
        }
    }
    writer.1.store(true, Ordering::Relaxed);
    let _ = writer.0.join();
    res
}

fn receiver(m: &Value, tg: &str) -> Value {
    m["receivers"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["traffic_group"] == tg).cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn idle_tcp_connections_survive_a_hung_device() {
    if !prereqs() {
        return;
    }
    let opts = ClusterOptions {
        mirroring: true,
        web_extra: "mirror = true\nidle_timeout = \"600s\"".into(),
        ..ClusterOptions::default()
    };
    let lab = ClusterLab::build("mirror_tcp", opts).expect("building the lab");
    five_tuple_hash(&lab);
    let r = lab.wait_steady(Duration::from_secs(45));
    lab.ok(r, "steady state");

    // The idle connections (threads in the client namespace keep them).
    let (tx_idle, rx_idle) = std::sync::mpsc::channel::<(usize, TcpStream, u16)>();
    let opened = lab.ok(
        lab.client.run_in(move || {
            let mut errs = Vec::new();
            for i in 0..IDLE {
                let base = 20000 + (i as u16) * 50;
                match open_via("b", base..base + 50) {
                    Ok((c, port)) => {
                        let _ = tx_idle.send((i, c, port));
                    }
                    Err(e) => errs.push(e),
                }
            }
            errs
        }),
        "opening idle connections",
    );
    lab.check(
        opened.is_empty(),
        format!("idle connections not opened: {opened:?}"),
    );
    let idle: Vec<(usize, TcpStream, u16)> = rx_idle.try_iter().collect();
    lab.check(
        idle.len() == IDLE,
        format!("{} idle connections", idle.len()),
    );

    // The streaming connections: each writes a running byte pattern without pause and reads
    // the echo back, checking every byte, until stopped.
    let stop = Arc::new(AtomicBool::new(false));
    let hang_at = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let streams = {
        let (stop, hang_at) = (stop.clone(), hang_at.clone());
        lab.ok(
            lab.client.run_in(move || {
                (0..STREAMS)
                    .map(|k| {
                        let base = 45000 + (k as u16) * 50;
                        let (stop, hang_at) = (stop.clone(), hang_at.clone());
                        let opened = open_via("b", base..base + 50);
                        std::thread::spawn(move || stream(k, opened, &stop, &hang_at, started))
                    })
                    .collect::<Vec<_>>()
            }),
            "streaming connections",
        )
    };

    // B mirrors the idle connections to C.
    let t0 = Instant::now();
    let mut last = Value::Null;
    let synced = loop {
        if let Ok(m) = lab.lbctl("c", &["show", "mirroring"]) {
            let r = receiver(&m, "tg-2");
            if r["in_sync"] == true
                && r["records"]["tcp_connections"].as_u64().unwrap_or(0) >= IDLE as u64
            {
                break true;
            }
            last = m;
        }
        if t0.elapsed() > Duration::from_secs(15) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("{}", lab.lbctl_text("b", &["show", "mirroring"]));
    lab.check(
        synced,
        format!(
            "c never held b's {IDLE} idle connections: {}",
            receiver(&last, "tg-2")
        ),
    );
    println!(
        "c holds b's connections after {:?}: {}",
        t0.elapsed(),
        receiver(
            &lab.lbctl("c", &["show", "mirroring"]).unwrap_or_default(),
            "tg-2"
        )
    );

    // Hang B.
    hang_at.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    lab.ok(lab.signal_device("b", libc::SIGSTOP), "SIGSTOP b");
    let r = lab.wait_placement(&[("tg-2", "c")], Duration::from_secs(10));
    lab.ok(r, "tg-2 on c");
    std::thread::sleep(Duration::from_millis(300));

    // Every idle connection sends a checksummed message.
    let results = echo_each(&lab, idle, 999, "idle connections after the failover");
    let survived = results.iter().filter(|r| r.is_ok()).count();
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    println!(
        "idle connections through b: {survived} of {IDLE} survived the failover; failed: {:?}",
        &failed[..failed.len().min(5)]
    );

    std::thread::sleep(Duration::from_secs(6));
    stop.store(true, Ordering::Relaxed);
    let streamed: Vec<StreamResult> = streams
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .collect();
    for (k, s) in streamed.iter().enumerate() {
        println!("stream {k}: {s:?}");
    }
    println!("{}", lab.lbctl_text("c", &["show", "mirroring"]));
    lab.check(
        survived >= IDLE - 1,
        format!("only {survived} of {IDLE} idle connections survived: {failed:?}"),
    );
    for (k, s) in streamed.iter().enumerate() {
        lab.check(
            !s.corrupt,
            format!("stream {k} delivered wrong bytes: {s:?}"),
        );
        lab.check(
            s.bytes_before > 0,
            format!("stream {k} never streamed: {s:?}"),
        );
        match &s.ended {
            Some((at, why)) => lab.check(
                *at <= Duration::from_secs(5),
                format!("stream {k} ended {at:?} after the hang (> 5 s): {why}"),
            ),
            None => lab.check(
                s.bytes_after > 0 && s.longest_stall <= Duration::from_secs(5),
                format!("stream {k} neither carried on nor was reset: {s:?}"),
            ),
        }
    }
}

/// Issue 16: SIGTERM of B's lbd with `drain_timeout` set. B gives tg-2 up before it drains:
/// C rebuilds B's mirrored idle connections and takes tg-2, B's copies are closed silently,
/// and B, left with nothing open, exits on its own well within the drain timeout. Every idle
/// connection then carries a checksummed message intact through C.
#[test]
fn idle_tcp_connections_survive_a_sigterm_that_drains() {
    if !prereqs() {
        return;
    }
    const N: usize = 20;
    let opts = ClusterOptions {
        mirroring: true,
        web_extra: "mirror = true\nidle_timeout = \"600s\"".into(),
        drain_timeout: "20s".into(),
        ..ClusterOptions::default()
    };
    let lab = ClusterLab::build("mirror_drain", opts).expect("building the lab");
    five_tuple_hash(&lab);
    let r = lab.wait_steady(Duration::from_secs(45));
    lab.ok(r, "steady state");

    let (tx, rx) = std::sync::mpsc::channel::<(usize, TcpStream, u16)>();
    let opened = lab.ok(
        lab.client.run_in(move || {
            let mut errs = Vec::new();
            for i in 0..N {
                let base = 20000 + (i as u16) * 50;
                match open_via("b", base..base + 50) {
                    Ok((c, port)) => {
                        let _ = tx.send((i, c, port));
                    }
                    Err(e) => errs.push(e),
                }
            }
            errs
        }),
        "opening idle connections",
    );
    lab.check(
        opened.is_empty(),
        format!("idle connections not opened: {opened:?}"),
    );
    let idle: Vec<(usize, TcpStream, u16)> = rx.try_iter().collect();
    lab.check(idle.len() == N, format!("{} idle connections", idle.len()));

    // C holds B's idle connections.
    let t0 = Instant::now();
    let synced = loop {
        if let Ok(m) = lab.lbctl("c", &["show", "mirroring"]) {
            let r = receiver(&m, "tg-2");
            if r["in_sync"] == true
                && r["records"]["tcp_connections"].as_u64().unwrap_or(0) >= N as u64
            {
                break true;
            }
        }
        if t0.elapsed() > Duration::from_secs(15) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    lab.check(synced, "c holds b's idle connections");

    // SIGTERM B's lbd: the helper waits 5 s for it to exit before it kills it.
    let t = Instant::now();
    lab.ok(
        lab.signal_daemon("b", Daemon::Lbd, libc::SIGTERM),
        "SIGTERM b's lbd",
    );
    println!("b's lbd ended {:?} after SIGTERM", t.elapsed());
    let log = std::fs::read_to_string(lab.lab.dir().join("lbd-b.log")).unwrap_or_default();
    let drain: Vec<&str> = log.lines().filter(|l| l.contains("drain")).collect();
    println!("b's drain:\n{}", drain.join("\n"));
    lab.check(
        log.contains("drain: giving up the traffic groups held here")
            && log.contains("drain: traffic groups given up")
            && log.contains("drain: every connection and flow has ended"),
        "b gave tg-2 up, then drained to nothing and exited by itself",
    );
    let r = lab.wait_placement(&[("tg-2", "c")], Duration::from_secs(10));
    lab.ok(r, "tg-2 on c");
    std::thread::sleep(Duration::from_millis(300));

    let results = echo_each(&lab, idle, 777, "idle connections after the SIGTERM");
    let survived = results.iter().filter(|r| r.is_ok()).count();
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    println!(
        "idle connections through b: {survived} of {N} survived b's SIGTERM; failed: {failed:?}"
    );
    lab.check(
        survived >= N - 1,
        format!("only {survived} of {N} idle connections survived: {failed:?}"),
    );
}
