//! Bounded resources and passive health, with the real `lbd` and `lbctl` binaries on loopback
//! (127.0.0.0/8 only; every loop bounded):
//!
//! - a flood of one-datagram UDP clients against an lbd with a low RLIMIT_NOFILE must not take
//!   the TCP virtual server, the control socket or the monitors down with it;
//! - a member that blackholes SYNs is taken out by passive health after `passive_failures`
//!   connect timeouts, and comes back after `passive_retry` once it accepts again.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn lbctl(lbd: &Lbd, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .arg("--socket")
        .arg(&lbd.socket)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lbctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `GET /metrics` from lbd's metrics listener.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The value of the sample `line_start` (name and labels) in a scrape.
fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
}

/// A UDP member answering every datagram with `udp:` + the payload, on a thread of its own.
fn udp_echo() -> (SocketAddr, std::thread::JoinHandle<()>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let addr = s.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        // Bounded: the test is over long before.
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                if &buf[..n] == b"quit" {
                    return;
                }
                let mut r = b"udp:".to_vec();
                r.extend_from_slice(&buf[..n]);
                let _ = s.send_to(&r, from);
            }
        }
    });
    (addr, t)
}

/// One request through the TCP virtual server: the member's name comes back.
fn tcp_request(vip: SocketAddr) -> std::io::Result<String> {
    let mut c = try_connect(vip)?;
    let name = read_line(&mut c);
    c.write_all(b"ping\n")?;
    let mut buf = [0u8; 5];
    c.read_exact(&mut buf)?;
    assert_eq!(&buf, b"ping\n");
    Ok(name)
}

#[test]
fn a_udp_flood_at_the_descriptor_limit_leaves_tcp_control_and_monitors_working() {
    const NOFILE: u64 = 256;
    const CLIENTS: usize = 400;
    let web = Server::start("web1", Behaviour::NameThenEcho);
    let (udp_member, udp_thread) = udp_echo();
    let (tcp_port, udp_port, metrics_port) = (free_port(), free_port(), free_port());
    let tcp_vip: SocketAddr = format!("127.0.0.1:{tcp_port}").parse().unwrap();
    let udp_vip: SocketAddr = format!("127.0.0.1:{udp_port}").parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    // A monitor that marks the member down at its first failed probe, probing all the time.
    let body = format!(
        "metrics = \"{metrics}\"\nworkers = 2\n\n\
         [virtual_servers.web]\ndestination = \"{tcp_vip}\"\npool = \"web\"\n\
         [virtual_servers.dns]\ndestination = \"{udp_vip}\"\nprotocol = \"udp\"\npool = \"dns\"\n\
         [pools.web]\nmonitors = [\"tcp\"]\nmembers = [{{ address = \"{}\" }}]\n\
         [pools.dns]\nmembers = [{{ address = \"{udp_member}\" }}]\n\
         [monitors.tcp]\ntype = \"tcp\"\ninterval = \"100ms\"\ndown_count = 1\n",
        web.addr
    );
    let lbd = Lbd::start_with(&body, Some(NOFILE));
    let member = web.addr.to_string();
    wait_for("web member up", Duration::from_secs(5), || {
        (lbd.member("web", &member)["status"] == "up").then_some(())
    });
    eprintln!(
        "RLIMIT_NOFILE {NOFILE}: lbd has {} descriptors open before the flood",
        lbd.fd_count()
    );

    // The flood: every client its own port, one datagram each, kept open (a flow lives 60 s).
    let started = Instant::now();
    let mut clients = Vec::with_capacity(CLIENTS);
    let mut answered = 0;
    for i in 0..CLIENTS {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.send_to(format!("q{i}").as_bytes(), udp_vip).unwrap();
        clients.push(c);
        if i % 50 == 49 {
            // Paced a little, so that the VIP socket's receive buffer does not overflow on a
            // busy machine (a datagram the kernel drops is neither a flow nor a refusal).
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    for c in &clients {
        c.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        if c.recv(&mut buf).is_ok() {
            answered += 1;
        }
    }
    let flood = started.elapsed();

    // While the flows are held: TCP proxies, lbctl answers, the member stays up.
    let name = tcp_request(tcp_vip).expect("the TCP virtual server answers during the flood");
    assert_eq!(name, "web1");
    let pools = lbctl(&lbd, &["show", "pools"]);
    assert!(pools.contains("pool web"), "{pools}");
    let m = lbd.member("web", &member);
    assert_eq!(m["status"], "up", "the monitor kept the member up: {m}");
    // ... and stays up for a few more monitor intervals of the held flood.
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(lbd.member("web", &member)["status"], "up");
        tcp_request(tcp_vip).expect("TCP during the flood");
    }
    let after = scrape(metrics);
    let budget = metric(&after, "lbd_descriptor_budget ");
    assert!(budget > 0 && budget < NOFILE, "budget {budget}");
    let refused = metric(
        &after,
        "lbd_descriptor_budget_refused_total{protocol=\"udp\"} ",
    );
    let used_udp = metric(&after, "lbd_descriptor_budget_used_udp ");
    let flows = metric(
        &after,
        "lbd_virtual_server_current_connections{virtual_server=\"dns\"} ",
    );
    let skipped = metric(&after, "lbd_monitor_probes_skipped_total ");
    eprintln!(
        "budget {budget}: {CLIENTS} clients in {flood:?}: {answered} answered, {flows} flows, {used_udp} UDP \
         descriptors, {refused} refused, {} lost before lbd; lbd holds {} descriptors; \
         {skipped} probes skipped",
        CLIENTS as u64 - flows - refused,
        lbd.fd_count()
    );
    assert!(refused > 0, "the budget bit");
    assert!(flows + refused <= CLIENTS as u64);
    assert_eq!(flows, budget / 2, "UDP flows took their half of the budget");
    assert_eq!(used_udp, flows, "one descriptor per flow");
    assert_eq!(answered as u64, flows, "every flow made was answered");
    assert!(
        (lbd.fd_count() as u64) < NOFILE,
        "lbd stayed under its descriptor limit"
    );
    let log = lbd.log_text();
    assert!(log.contains("descriptor budget exhausted"), "logged");
    assert!(
        !log.contains("too many open files"),
        "no EMFILE anywhere:\n{log}"
    );
    let _ = clients[0].send_to(b"quit", udp_member);
    drop(clients);
    let _ = udp_thread.join();
}

#[test]
fn a_tcp_flood_at_the_descriptor_limit_is_reset_early_and_leaves_control_and_monitors_working() {
    const NOFILE: u64 = 128;
    const CLIENTS: usize = 60;
    // A member that accepts and never answers: every proxied connection stays open.
    let hang = Server::start("hang", Behaviour::Hang);
    let (port, metrics_port) = (free_port(), free_port());
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let body = format!(
        "metrics = \"{metrics}\"\nworkers = 2\n\n\
         [virtual_servers.web]\ndestination = \"{vip}\"\npool = \"web\"\n\
         idle_timeout = \"3s\"\n\
         [pools.web]\nmonitors = [\"tcp\"]\nmembers = [{{ address = \"{}\" }}]\n\
         [monitors.tcp]\ntype = \"tcp\"\ninterval = \"100ms\"\ndown_count = 1\n",
        hang.addr
    );
    let lbd = Lbd::start_with(&body, Some(NOFILE));
    let member = hang.addr.to_string();
    wait_for("member up", Duration::from_secs(5), || {
        (lbd.member("web", &member)["status"] == "up").then_some(())
    });
    // Hold CLIENTS connections; those over the budget are reset at once (a read sees the
    // reset or EOF within its timeout), the others stay open and silent.
    let mut held = Vec::new();
    for _ in 0..CLIENTS {
        if let Ok(c) = try_connect(vip) {
            held.push(c);
        }
    }
    // Until lbd has taken every connection in (proxied or refused): on a loaded machine its
    // accept loop may trail the clients by more than a fixed pause.
    wait_for(
        "every client proxied or refused",
        Duration::from_secs(10),
        || {
            let text = scrape(metrics);
            let refused = metric(
                &text,
                "lbd_descriptor_budget_refused_total{protocol=\"tcp\"} ",
            );
            let current = metric(
                &text,
                "lbd_virtual_server_current_connections{virtual_server=\"web\"} ",
            );
            (refused + current >= held.len() as u64).then_some(())
        },
    );
    let mut reset = 0;
    for c in &mut held {
        c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut b = [0u8; 1];
        match c.read(&mut b) {
            Ok(0) => reset += 1,
            Err(e)
                if e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut =>
            {
                reset += 1
            }
            _ => {}
        }
    }
    let text = scrape(metrics);
    let budget = metric(&text, "lbd_descriptor_budget ");
    let refused = metric(
        &text,
        "lbd_descriptor_budget_refused_total{protocol=\"tcp\"} ",
    );
    let current = metric(
        &text,
        "lbd_virtual_server_current_connections{virtual_server=\"web\"} ",
    );
    eprintln!(
        "RLIMIT_NOFILE {NOFILE}, budget {budget}: {CLIENTS} clients held, {current} proxied, \
         {refused} refused, {reset} saw a reset; lbd holds {} descriptors",
        lbd.fd_count()
    );
    assert!(refused > 0, "the budget bit");
    assert_eq!(
        current,
        budget / 2,
        "as many connections as the budget holds"
    );
    assert_eq!(
        reset as u64, refused,
        "each refused client was reset at once"
    );
    // lbctl answers, the monitor keeps the member up for several intervals.
    for _ in 0..5 {
        assert!(lbctl(&lbd, &["show", "pools"]).contains("pool web"));
        assert_eq!(lbd.member("web", &member)["status"], "up");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Once clients go (and the member side idles out: it never closes), new ones are served.
    drop(held);
    wait_for("connections closed", Duration::from_secs(10), || {
        (lbd.virtual_server("web")["counters"]["current"] == 0).then_some(())
    });
    let mut c = connect(vip);
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 1];
    assert!(
        matches!(c.read(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock
            || e.kind() == std::io::ErrorKind::TimedOut),
        "proxied (the member holds it silently), not reset"
    );
    assert!(!lbd.log_text().contains("too many open files"));
}

/// A listening socket whose accept queue is full and never drained: SYNs to it are dropped
/// (a blackhole on loopback), until [`Blackhole::open`] starts accepting.
struct Blackhole {
    listener: std::net::TcpListener,
    /// The connections that fill the queue.
    _fill: Vec<TcpStream>,
}

impl Blackhole {
    fn new() -> Blackhole {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        s.listen(0).unwrap();
        let listener: std::net::TcpListener = s.into();
        let addr = listener.local_addr().unwrap();
        let mut fill = Vec::new();
        // Fill the accept queue (a backlog of 0 holds one); stop at the first connect that
        // does not complete: the queue is full. Bounded.
        for _ in 0..4 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(c) => fill.push(c),
                Err(_) => break,
            }
        }
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err(),
            "the blackhole answers SYNs"
        );
        Blackhole {
            listener,
            _fill: fill,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    /// Starts accepting: each connection gets `bad\n`, then an echo.
    fn open(self) -> std::thread::JoinHandle<()> {
        let l = self.listener;
        l.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                match l.accept() {
                    Ok((mut c, _)) => {
                        std::thread::spawn(move || {
                            c.set_nonblocking(false).unwrap();
                            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                            let _ = c.write_all(b"bad\n");
                            let mut buf = [0u8; 64];
                            while let Ok(n) = c.read(&mut buf) {
                                if n == 0 || c.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
    }
}

#[test]
fn a_member_that_blackholes_syns_is_taken_out_passively_and_comes_back() {
    const FAILURES: u64 = 3;
    let good = Server::start("good", Behaviour::NameThenEcho);
    let bad = Blackhole::new();
    let bad_addr = bad.addr().to_string();
    let port = free_port();
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // No monitor: only passive health can see the blackhole.
    let body = format!(
        "[virtual_servers.web]\ndestination = \"{vip}\"\npool = \"web\"\n\
         connect_timeout = \"300ms\"\n\
         [pools.web]\nmethod = \"round-robin\"\npassive_failures = {FAILURES}\n\
         passive_retry = \"3s\"\nmembers = [{{ address = \"{}\" }}, {{ address = \"{bad_addr}\" }}]\n",
        good.addr
    );
    let lbd = Lbd::start(&body);

    // Clients until the bad member is out: each one is still served (lbd retries the good
    // member after a connect timeout).
    let started = Instant::now();
    let mut clients = 0;
    while lbd.member("web", &bad_addr)["passive"].is_null() {
        assert!(clients < 30, "passive health never took the member out");
        assert_eq!(tcp_request(vip).expect("served"), "good");
        clients += 1;
    }
    let out_after = started.elapsed();
    let tripped = Instant::now();
    let m = lbd.member("web", &bad_addr);
    assert_eq!(m["status"], "down", "{m}");
    assert_eq!(m["counters"]["connect_failures"], FAILURES, "{m}");
    let text = lbctl(&lbd, &["show", "pools"]);
    assert!(
        text.contains(&format!("passive: {FAILURES} connect failures")),
        "{text}"
    );
    eprintln!("taken out after {clients} clients in {out_after:?}:\n{text}");

    // Out: 20 clients all go to the good member at once, with no connect timeouts.
    let t = Instant::now();
    for _ in 0..20 {
        assert_eq!(tcp_request(vip).unwrap(), "good");
    }
    let twenty = t.elapsed();
    assert!(
        twenty < Duration::from_secs(3),
        "no connect timeouts: {twenty:?}"
    );
    assert_eq!(
        lbd.member("web", &bad_addr)["counters"]["connect_failures"],
        FAILURES,
        "nothing tried the member while out"
    );

    // It accepts again; after the retry interval it is tried and serves again.
    let server = bad.open();
    let t = tripped;
    let mut back = None;
    for _ in 0..100 {
        if tcp_request(vip).unwrap() == "bad" {
            back = Some(t.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let back = back.expect("the member came back after passive_retry");
    assert!(
        back >= Duration::from_millis(2500),
        "not before the retry: {back:?}"
    );
    let m = lbd.member("web", &bad_addr);
    assert!(m["passive"].is_null(), "{m}");
    assert_eq!(m["status"], "unchecked", "{m}");
    assert_eq!(m["passive_trips"], 1, "{m}");
    eprintln!("back in after {back:?}");
    drop(server); // the accept thread ends by its own deadline; not joined
}
