//! Probe I/O against servers the tests start on 127.0.0.1 (port 0); every wait is bounded.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use super::*;
use crate::monitor::{Health, MonitorSpec, ProbeKind};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn local0() -> SocketAddr {
    SocketAddr::new(LOCALHOST, 0)
}

/// A port nothing listens on: bound, then dropped.
fn closed_tcp_port() -> SocketAddr {
    let l = std::net::TcpListener::bind(local0()).unwrap();
    l.local_addr().unwrap()
}

fn closed_udp_port() -> SocketAddr {
    let s = std::net::UdpSocket::bind(local0()).unwrap();
    s.local_addr().unwrap()
}

fn http_kind(status: u16, body: Option<&str>) -> ProbeKind {
    ProbeKind::Http {
        request: b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n".to_vec(),
        expect_status: status,
        expect_body: body.map(|b| b.as_bytes().to_vec()),
    }
}

/// An HTTP server that reads each request's header, writes `response`, then closes the
/// connection, or with `hold` keeps it open (and silent) for 10 s.
async fn http_server(response: &'static [u8], hold: bool) -> SocketAddr {
    let l = TcpListener::bind(local0()).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while find(&req, b"\r\n\r\n").is_none() {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(response).await;
                if hold {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            });
        }
    });
    addr
}

/// A UDP server answering every datagram with `reply` (or with the datagram itself when
/// `reply` is None), or never answering with `silent`.
async fn udp_server(reply: Option<&'static [u8]>, silent: bool) -> SocketAddr {
    let s = UdpSocket::bind(local0()).await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            if !silent {
                let _ = s.send_to(reply.unwrap_or(&buf[..n]), from).await;
            }
        }
    });
    addr
}

const T: Duration = Duration::from_millis(300);

#[tokio::test]
async fn tcp_ok() {
    let l = TcpListener::bind(local0()).await.unwrap();
    let addr = l.local_addr().unwrap();
    probe(&ProbeKind::Tcp, addr, None, T).await.unwrap();
    // From a given source address.
    probe(&ProbeKind::Tcp, addr, Some(LOCALHOST), T)
        .await
        .unwrap();
    let (_, peer) = l.accept().await.unwrap();
    assert_eq!(peer.ip(), LOCALHOST);
}

#[tokio::test]
async fn tcp_refused() {
    let err = probe(&ProbeKind::Tcp, closed_tcp_port(), None, T)
        .await
        .unwrap_err();
    assert!(matches!(err, ProbeError::Connect(_)), "{err:?}");
    assert_eq!(err.to_string(), "connect: connection refused");
}

#[tokio::test]
async fn tcp_bad_source_is_a_bind_error() {
    let l = TcpListener::bind(local0()).await.unwrap();
    let src = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let err = probe(&ProbeKind::Tcp, l.local_addr().unwrap(), Some(src), T)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProbeError::Bind(ip, _) if ip == src),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("bind ::1: "), "{err}");
}

#[tokio::test]
async fn http_200_ok() {
    let addr = http_server(
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall good",
        false,
    )
    .await;
    probe(&http_kind(200, None), addr, None, T).await.unwrap();
}

#[tokio::test]
async fn http_wrong_status() {
    let addr = http_server(b"HTTP/1.1 503 Service Unavailable\r\n\r\n", false).await;
    let err = probe(&http_kind(200, None), addr, None, T)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProbeError::BadStatus {
                got: 503,
                want: 200
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "bad status 503 (wanted 200)");
}

#[tokio::test]
async fn http_body_match_and_mismatch() {
    let addr = http_server(b"HTTP/1.0 200 OK\r\n\r\n{\"status\":\"ok\"}", false).await;
    probe(&http_kind(200, Some("\"ok\"")), addr, None, T)
        .await
        .unwrap();
    let err = probe(&http_kind(200, Some("\"healthy\"")), addr, None, T)
        .await
        .unwrap_err();
    assert!(matches!(err, ProbeError::BodyMismatch), "{err:?}");
    assert_eq!(err.to_string(), "body did not match");
}

#[tokio::test]
async fn http_keep_alive_server_decided_without_eof() {
    // The server never closes: the status line, or the body up to Content-Length, decides.
    let addr = http_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true).await;
    let t = Duration::from_secs(5);
    let started = Instant::now();
    probe(&http_kind(200, None), addr, None, t).await.unwrap();
    probe(&http_kind(200, Some("ok")), addr, None, t)
        .await
        .unwrap();
    let err = probe(&http_kind(200, Some("no")), addr, None, t)
        .await
        .unwrap_err();
    assert!(matches!(err, ProbeError::BodyMismatch), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn http_hanging_server_times_out() {
    let l = TcpListener::bind(local0()).await.unwrap();
    let addr = l.local_addr().unwrap();
    // Accepts (the kernel does) and never answers.
    let started = Instant::now();
    let err = probe(&http_kind(200, None), addr, None, T)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, ProbeError::TimedOut(t) if t == T), "{err:?}");
    assert_eq!(err.to_string(), "timed out after 300ms");
    assert!(took >= T && took < T + Duration::from_secs(1), "{took:?}");
    drop(l);
}

#[tokio::test]
async fn http_garbage_is_a_bad_response() {
    let addr = http_server(b"SSH-2.0-OpenSSH\r\n", false).await;
    let err = probe(&http_kind(200, None), addr, None, T)
        .await
        .unwrap_err();
    assert!(matches!(err, ProbeError::BadResponse(_)), "{err:?}");
    let addr = http_server(b"", false).await;
    let err = probe(&http_kind(200, None), addr, None, T)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "bad response: no status line");
}

#[test]
fn http_verdicts() {
    let v = |buf: &[u8], body: Option<&[u8]>, complete| {
        http_verdict(buf, 200, body, complete).map(|r| r.map_err(|e| e.to_string()))
    };
    assert_eq!(v(b"HTTP/1.1 20", None, false), None);
    assert_eq!(v(b"HTTP/1.1 200 OK\r\n", None, false), Some(Ok(())));
    assert_eq!(v(b"HTTP/1.1 200\n", None, false), Some(Ok(())));
    assert_eq!(
        v(b"HTTP/1.1 2000 OK\r\n", None, false),
        Some(Err("bad response: malformed status line".into()))
    );
    assert_eq!(v(b"HTTP/1.1 200 OK\r\nA: b\r\n", Some(b"x"), false), None);
    assert_eq!(
        v(b"HTTP/1.1 200 OK\r\nA: b\r\n", Some(b"x"), true),
        Some(Err("bad response: incomplete header".into()))
    );
    assert_eq!(v(b"HTTP/1.1 200 OK\r\n\r\nab", Some(b"abc"), false), None);
    assert_eq!(
        v(b"HTTP/1.1 200 OK\r\n\r\nab", Some(b"abc"), true),
        Some(Err("body did not match".into()))
    );
    assert_eq!(
        v(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nab",
            Some(b"abc"),
            false
        ),
        Some(Err("body did not match".into()))
    );
    // The needle must be in the body, not the header.
    assert_eq!(
        v(b"HTTP/1.1 200 OK\r\nX: abc\r\n\r\n", Some(b"abc"), false),
        None
    );
    assert_eq!(
        v(b"HTTP/1.1 200 OK\r\n\r\nxxabcxx", Some(b"abc"), false),
        Some(Ok(()))
    );
}

#[test]
fn io_errors_read_as_short_lowercase_phrases() {
    let e = io::Error::from_raw_os_error(libc::ECONNREFUSED);
    assert_eq!(io_text(&e), "connection refused");
    let e = io::Error::other("Weird thing");
    assert_eq!(io_text(&e), "weird thing");
}

#[tokio::test]
async fn udp_echo_ok() {
    let addr = udp_server(None, false).await;
    let kind = ProbeKind::Udp {
        send: b"ping".to_vec(),
        expect: b"ping".to_vec(),
    };
    probe(&kind, addr, None, T).await.unwrap();
    probe(&kind, addr, Some(LOCALHOST), T).await.unwrap();
    // Empty expect: any datagram will do.
    let any = ProbeKind::Udp {
        send: b"hello".to_vec(),
        expect: Vec::new(),
    };
    probe(&any, addr, None, T).await.unwrap();
}

#[tokio::test]
async fn udp_expect_mismatch() {
    let addr = udp_server(Some(b"pong?"), false).await;
    let kind = ProbeKind::Udp {
        send: b"ping".to_vec(),
        expect: b"PONG".to_vec(),
    };
    let err = probe(&kind, addr, None, T).await.unwrap_err();
    assert!(matches!(err, ProbeError::UdpMismatch), "{err:?}");
    assert_eq!(err.to_string(), "udp: reply did not match");
}

#[tokio::test]
async fn udp_closed_port_fails_quickly() {
    let kind = ProbeKind::Udp {
        send: b"ping".to_vec(),
        expect: Vec::new(),
    };
    let started = Instant::now();
    let err = probe(&kind, closed_udp_port(), None, Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(matches!(err, ProbeError::UdpUnreachable), "{err:?}");
    assert_eq!(err.to_string(), "udp: port unreachable");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn udp_no_reply_times_out() {
    let addr = udp_server(None, true).await;
    let kind = ProbeKind::Udp {
        send: b"ping".to_vec(),
        expect: Vec::new(),
    };
    let started = Instant::now();
    let err = probe(&kind, addr, None, T).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, ProbeError::UdpNoReply(t) if t == T),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "udp: no reply within 300ms");
    assert!(took >= T && took < T + Duration::from_secs(1), "{took:?}");
}

/// Accepts and drops connections until aborted (the listener goes with the task).
fn serve_tcp(l: TcpListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    })
}

async fn next_change(rx: &mut mpsc::UnboundedReceiver<(Health, String)>) -> (Health, String) {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no health change within 5 s")
        .expect("monitor task gone")
}

#[tokio::test]
async fn driver_follows_a_listener_up_down_up() {
    let l = TcpListener::bind(local0()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let server = serve_tcp(l);
    let spec = Arc::new(MonitorSpec {
        name: "tcp-check".into(),
        kind: ProbeKind::Tcp,
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(50),
        up_count: 2,
        down_count: 2,
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let monitor = spawn_monitor(
        spec,
        addr,
        None,
        Box::new(move |h, reason| {
            let _ = tx.send((h, reason.to_string()));
        }),
    );

    assert_eq!(
        next_change(&mut rx).await,
        (Health::Up, "first probe succeeded".to_string())
    );

    server.abort();
    let _ = server.await;
    assert_eq!(
        next_change(&mut rx).await,
        (
            Health::Down,
            "2 consecutive failures: connect: connection refused".to_string()
        )
    );

    // Listen on the same port again (bounded retries, in case the port lingers).
    let mut relisten = None;
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(l) => {
                relisten = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let server = serve_tcp(relisten.expect("cannot listen on the port again"));
    assert_eq!(
        next_change(&mut rx).await,
        (Health::Up, "2 consecutive successes".to_string())
    );

    monitor.abort();
    assert!(monitor.await.unwrap_err().is_cancelled());
    // The task is gone: its callback (and sender) with it.
    assert!(tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .unwrap()
        .is_none());
    server.abort();
}

#[tokio::test]
async fn driver_reports_a_dead_member_at_once() {
    let spec = Arc::new(MonitorSpec {
        name: "udp-check".into(),
        kind: ProbeKind::Udp {
            send: b"ping".to_vec(),
            expect: Vec::new(),
        },
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(200),
        up_count: 3,
        down_count: 3,
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let monitor = spawn_monitor(
        spec,
        closed_udp_port(),
        None,
        Box::new(move |h, reason| {
            let _ = tx.send((h, reason.to_string()));
        }),
    );
    assert_eq!(
        next_change(&mut rx).await,
        (
            Health::Down,
            "first probe failed: udp: port unreachable".to_string()
        )
    );
    monitor.abort();
}

#[test]
fn local_errors_are_skipped_not_failures() {
    let local = |errno| io::Error::from_raw_os_error(errno);
    for e in [
        ProbeError::Io(local(libc::EMFILE)),
        ProbeError::Io(local(libc::ENFILE)),
        ProbeError::Connect(local(libc::EADDRNOTAVAIL)),
        ProbeError::Io(local(libc::ENOBUFS)),
        ProbeError::Bind(IpAddr::V4(Ipv4Addr::LOCALHOST), local(libc::EMFILE)),
        ProbeError::Io(local(libc::ENOMEM)),
    ] {
        assert!(e.is_local(), "{e}");
    }
    for e in [
        ProbeError::Connect(local(libc::ECONNREFUSED)),
        ProbeError::Connect(local(libc::ETIMEDOUT)),
        ProbeError::Io(local(libc::ECONNRESET)),
        ProbeError::TimedOut(T),
        ProbeError::UdpUnreachable,
        ProbeError::BadStatus {
            got: 500,
            want: 200,
        },
    ] {
        assert!(!e.is_local(), "{e}");
    }
}
