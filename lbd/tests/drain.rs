//! Stopping lbd with connections open (SIGTERM, `device.drain_timeout`), standalone on
//! loopback: the real binary, an echo server as the member.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use spanlb_control::lbd::Request;

/// lbd with `device` keys added to `[device]` and a TCP virtual server on 127.0.0.1 in front
/// of one echo server: lbd, the server and the virtual server's address.
fn lbd_with(device: &str) -> (Lbd, Server, SocketAddr) {
    let echo = Server::start("m1", Behaviour::Echo);
    let port = free_port();
    let body = format!(
        "{device}\n\n[virtual_servers.web]\ndestination = \"127.0.0.1:{port}\"\npool = \"web\"\n\
         snat = \"none\"\n\n[pools.web]\nmembers = [{{ address = \"{}\" }}]\n",
        echo.addr
    );
    let lbd = Lbd::start(&body);
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    (lbd, echo, vip)
}

/// Sends `msg` and reads the echo back.
fn echo(c: &mut TcpStream, msg: &[u8]) {
    c.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
}

/// Whether a new connection to `vip` is refused (or reset before it can carry an echo).
fn refused(vip: SocketAddr) -> bool {
    match TcpStream::connect_timeout(&vip, Duration::from_secs(2)) {
        Err(e) => e.kind() == ErrorKind::ConnectionRefused,
        Ok(mut c) => {
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = c.write_all(b"x");
            let mut b = [0u8; 1];
            !matches!(c.read(&mut b), Ok(1))
        }
    }
}

/// Waits until lbd's log has `what`.
fn wait_log(lbd: &Lbd, what: &str) {
    wait_for(what, Duration::from_secs(10), || {
        lbd.log_text().contains(what).then_some(())
    });
}

#[test]
fn sigterm_drains_open_connections_refuses_new_ones_and_exits_when_the_last_ends() {
    let (mut lbd, _echo, vip) = lbd_with("drain_timeout = \"60s\"");
    let mut c = connect(vip);
    echo(&mut c, b"before");
    lbd.signal(libc::SIGTERM);
    wait_log(&lbd, "drain: new TCP connections are refused");
    // The open connection carries on for a while...
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(200));
        echo(&mut c, format!("during {i}").as_bytes());
        assert!(lbd.alive(), "lbd exited with a connection open");
    }
    // ... new ones are refused ...
    assert!(refused(vip), "a new connection after SIGTERM got through");
    // ... status says it is draining, with the connection ...
    let st = lbd.ok(&Request::Status);
    assert_eq!(st["draining"]["phase"], "connections", "{st}");
    assert_eq!(st["draining"]["connections"], 1, "{st}");
    let r = std::process::Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .args(["-s", lbd.socket.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(
        out.contains("draining         1 connections, 0 flows open"),
        "{out}"
    );
    // ... and ends cleanly when the client closes it: lbd then exits, long before 60 s.
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    let st = lbd
        .wait_exit(Duration::from_secs(20))
        .expect("lbd still runs after its last connection ended");
    assert_eq!(st.code(), Some(0), "{}", lbd.log_text());
    let log = lbd.log_text();
    assert!(
        log.contains("drain: every connection and flow has ended"),
        "{log}"
    );
    assert!(!lbd.socket.exists(), "control socket left behind");
}

#[test]
fn a_connection_still_open_at_drain_timeout_is_closed_and_lbd_exits() {
    let (mut lbd, _echo, vip) = lbd_with("drain_timeout = \"2s\"");
    let mut c = connect(vip);
    echo(&mut c, b"hello");
    let t = Instant::now();
    lbd.signal(libc::SIGTERM);
    let st = lbd
        .wait_exit(Duration::from_secs(20))
        .expect("lbd did not exit after drain_timeout");
    assert_eq!(st.code(), Some(0), "{}", lbd.log_text());
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "lbd exited before drain_timeout with a connection open ({:?})",
        t.elapsed()
    );
    let log = lbd.log_text();
    assert!(log.contains("drain_timeout (2s) is over"), "{log}");
    assert!(log.contains("connections=1"), "{log}");
    // The connection is closed (end of stream or reset), not left hanging.
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 16];
    match c.read(&mut b) {
        Ok(0) => {}
        Ok(n) => panic!("{n} unexpected bytes"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
            ),
            "{e}"
        ),
    }
}

#[test]
fn a_second_sigterm_cuts_the_drain_short() {
    let (mut lbd, _echo, vip) = lbd_with("drain_timeout = \"60s\"");
    let mut c = connect(vip);
    echo(&mut c, b"hello");
    lbd.signal(libc::SIGTERM);
    wait_log(&lbd, "drain: new TCP connections are refused");
    lbd.signal(libc::SIGINT);
    let st = lbd
        .wait_exit(Duration::from_secs(20))
        .expect("lbd did not stop on the second signal");
    assert_eq!(st.code(), Some(0), "{}", lbd.log_text());
    assert!(lbd.log_text().contains("second signal: stopping at once"));
}

#[test]
fn drain_timeout_zero_stops_at_once() {
    let (mut lbd, _echo, vip) = lbd_with("drain_timeout = 0");
    let mut c = connect(vip);
    echo(&mut c, b"hello");
    lbd.signal(libc::SIGTERM);
    let st = lbd
        .wait_exit(Duration::from_secs(10))
        .expect("lbd did not stop at once");
    assert_eq!(st.code(), Some(0), "{}", lbd.log_text());
    let log = lbd.log_text();
    assert!(
        log.contains("stopping at once (drain_timeout = 0)"),
        "{log}"
    );
    assert!(!log.contains("drain: new TCP connections"), "{log}");
}
