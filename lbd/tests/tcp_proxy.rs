//! lbd's TCP full proxy on loopback against real TCP servers: data integrity both ways,
//! half-close, monitors, reload, connection limit, descriptor leaks and bad input.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use spanlb_control::lbd::Request;

fn vs_body(port: u16, members: &[SocketAddr], extra_vs: &str, extra_pool: &str) -> String {
    let members: Vec<String> = members
        .iter()
        .map(|m| format!("{{ address = \"{m}\" }}"))
        .collect();
    format!(
        "[virtual_servers.web]\ndestination = \"127.0.0.1:{port}\"\npool = \"web\"\n{extra_vs}\n\
         [pools.web]\nmembers = [{}]\n{extra_pool}\n",
        members.join(", ")
    )
}

fn vip(port: u16) -> SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), chunk by chunk.
struct Pattern(u64);
impl Pattern {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf.iter_mut() {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
    }
}

#[test]
fn a_100_mb_transfer_arrives_intact_both_ways_with_half_close() {
    let echo = Server::start("s1", Behaviour::Echo);
    let port = free_port();
    let lbd = Lbd::start(&vs_body(port, &[echo.addr], "", ""));
    let mut c = connect(vip(port));
    let mut w = c.try_clone().unwrap();
    const TOTAL: usize = 100 * 1024 * 1024;
    let writer = std::thread::spawn(move || {
        let mut p = Pattern(0x9e3779b97f4a7c15);
        let mut buf = vec![0u8; 256 * 1024];
        let mut sent = 0;
        while sent < TOTAL {
            let n = buf.len().min(TOTAL - sent);
            p.fill(&mut buf[..n]);
            w.write_all(&buf[..n]).unwrap();
            sent += n;
        }
        // Half-close: the echo server sees EOF only after everything, and answers in full.
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut p = Pattern(0x9e3779b97f4a7c15);
    let mut got = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    let mut want = vec![0u8; 256 * 1024];
    loop {
        let n = c.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        p.fill(&mut want[..n]);
        assert!(buf[..n] == want[..n], "corrupt data at offset {got}");
        got += n;
    }
    writer.join().unwrap();
    assert_eq!(got, TOTAL, "bytes echoed back");
    let vs = wait_for("counters settle", Duration::from_secs(5), || {
        let v = lbd.virtual_server("web");
        (v["counters"]["bytes_in"] == TOTAL as u64 && v["counters"]["current"] == 0).then_some(v)
    });
    assert_eq!(vs["counters"]["bytes_out"], TOTAL as u64);
}

#[test]
fn half_close_from_the_client_still_gets_the_answer() {
    // A member that answers only after the client's end of stream: read all, then reply.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let member = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = Vec::new();
        s.read_to_end(&mut req).unwrap();
        s.write_all(format!("got {} bytes", req.len()).as_bytes())
            .unwrap();
    });
    let port = free_port();
    let _lbd = Lbd::start(&vs_body(port, &[member], "", ""));
    let mut c = connect(vip(port));
    c.write_all(b"hello world").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "got 11 bytes");
    t.join().unwrap();
}

#[test]
fn a_member_killed_is_taken_out_by_its_monitor_and_put_back_when_it_returns() {
    let a = Server::start("a", Behaviour::NameThenEcho);
    let b = Server::start("b", Behaviour::NameThenEcho);
    let b_port = b.addr.port();
    let port = free_port();
    let lbd = Lbd::start(&vs_body(
        port,
        &[a.addr, b.addr],
        "",
        "monitors = [\"tcp\"]\n[monitors.tcp]\ntype = \"tcp\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\ndown_count = 2\nup_count = 2\n",
    ));
    let b_name = b.addr.to_string();
    wait_for("b up", Duration::from_secs(5), || {
        (lbd.member("web", &b_name)["status"] == "up").then_some(())
    });
    drop(b);
    let m = wait_for("b down", Duration::from_secs(5), || {
        let m = lbd.member("web", &b_name);
        (m["status"] == "down").then_some(m)
    });
    assert!(
        m.to_string().contains("connection refused"),
        "the reason is shown: {m}"
    );
    // Every new connection now goes to a, and none tries b.
    let failures_before = lbd.member("web", &b_name)["counters"]["connect_failures"].clone();
    for _ in 0..10 {
        let mut c = connect(vip(port));
        assert_eq!(read_line(&mut c), "a");
    }
    assert_eq!(
        lbd.member("web", &b_name)["counters"]["connect_failures"],
        failures_before
    );
    let _b = Server::start_on(b_port, "b", Behaviour::NameThenEcho);
    wait_for("b up again", Duration::from_secs(5), || {
        (lbd.member("web", &b_name)["status"] == "up").then_some(())
    });
    let names: Vec<String> = (0..4).map(|_| read_line(&mut connect(vip(port)))).collect();
    assert!(names.iter().any(|n| n == "b"), "{names:?}");
    assert!(names.iter().any(|n| n == "a"), "{names:?}");
}

#[test]
fn a_reload_keeps_a_live_connection_and_applies_the_new_pool() {
    let a = Server::start("a", Behaviour::NameThenEcho);
    let b = Server::start("b", Behaviour::NameThenEcho);
    let port = free_port();
    let lbd = Lbd::start(&vs_body(port, &[a.addr], "", ""));
    let mut live = connect(vip(port));
    assert_eq!(read_line(&mut live), "a");
    // New pool: only b. SIGHUP.
    lbd.write_config(&vs_body(port, &[b.addr], "", ""));
    lbd.signal(libc::SIGHUP);
    wait_for("reload applied", Duration::from_secs(5), || {
        (read_line(&mut connect(vip(port))) == "b").then_some(())
    });
    // The old connection still works, still to a.
    live.write_all(b"still there?\n").unwrap();
    assert_eq!(read_line(&mut live), "still there?");
    // A bad config is rejected with its reason; the running one stays.
    lbd.write_config(&vs_body(port, &[b.addr], "pool = \"nope\"", ""));
    let r = lbd.control(&Request::Reload);
    assert_eq!(r["ok"], false, "{r}");
    let err = r["error"].as_str().unwrap();
    assert!(err.contains("virtual_servers.web"), "{err}");
    assert_eq!(read_line(&mut connect(vip(port))), "b");
    live.write_all(b"and now?\n").unwrap();
    assert_eq!(read_line(&mut live), "and now?");
}

#[test]
fn the_connection_limit_is_enforced() {
    let a = Server::start("a", Behaviour::NameThenEcho);
    let port = free_port();
    let lbd = Lbd::start(&vs_body(port, &[a.addr], "connection_limit = 2", ""));
    let mut c1 = connect(vip(port));
    let mut c2 = connect(vip(port));
    assert_eq!(read_line(&mut c1), "a");
    assert_eq!(read_line(&mut c2), "a");
    // The third is reset without reaching a member (the reset may already fail the connect).
    if let Ok(mut c3) = try_connect(vip(port)) {
        let mut buf = [0u8; 16];
        let r = c3.read(&mut buf);
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
    assert_eq!(a.accepted(), 2);
    assert_eq!(lbd.virtual_server("web")["counters"]["refused"], 1);
    drop(c1);
    let mut c4 = wait_for("a slot frees up", Duration::from_secs(5), || {
        let mut c = try_connect(vip(port)).ok()?;
        (read_line(&mut c) == "a").then_some(c)
    });
    c4.write_all(b"x\n").unwrap();
    assert_eq!(read_line(&mut c4), "x");
    drop(c2);
}

#[test]
fn ten_thousand_connections_leave_the_descriptor_count_where_it_started() {
    let a = Server::start("a", Behaviour::Echo);
    let port = free_port();
    let lbd = Lbd::start(&vs_body(port, &[a.addr], "", ""));
    // One connection first so lazily opened descriptors (epoll, eventfd…) exist already.
    {
        let mut c = connect(vip(port));
        c.write_all(b"x").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut v = Vec::new();
        c.read_to_end(&mut v).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = lbd.fd_count();
    let started = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                for i in 0..2500u32 {
                    let mut c = connect(vip(port));
                    let msg = i.to_be_bytes();
                    c.write_all(&msg).unwrap();
                    c.shutdown(Shutdown::Write).unwrap();
                    let mut v = Vec::new();
                    c.read_to_end(&mut v).unwrap();
                    assert_eq!(v, msg);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    eprintln!("10,000 connections in {:?}", started.elapsed());
    let after = wait_for("descriptors back", Duration::from_secs(10), || {
        let n = lbd.fd_count();
        (n <= before).then_some(n)
    });
    assert_eq!(after, before);
    let vs = lbd.virtual_server("web");
    assert_eq!(vs["counters"]["total"], 10_001);
    assert_eq!(vs["counters"]["current"], 0);
    let conns = lbd.ok(&Request::ShowConnections {
        limit: None,
        virtual_server: None,
    });
    assert_eq!(conns["total"], 0, "{conns}");
}

#[test]
fn bad_clients_and_bad_members_never_crash_or_leak() {
    let good = Server::start("good", Behaviour::NameThenEcho);
    let hang = Server::start("hang", Behaviour::Hang);
    let reset = Server::start("reset", Behaviour::ResetAfterRead);
    let refused: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let port = free_port();
    let port2 = free_port();
    let body = format!(
        "{}\n[virtual_servers.bad]\ndestination = \"127.0.0.1:{port2}\"\npool = \"bad\"\n\
         idle_timeout = \"1s\"\nconnect_timeout = \"300ms\"\n\
         [pools.bad]\nmembers = [{{ address = \"{}\" }}, {{ address = \"{}\" }}, {{ address = \"{refused}\" }}]\n",
        vs_body(port, &[good.addr], "idle_timeout = \"1s\"", ""),
        hang.addr,
        reset.addr
    );
    let mut lbd = Lbd::start(&body);
    {
        let mut c = connect(vip(port));
        assert_eq!(read_line(&mut c), "good");
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = lbd.fd_count();
    // Clients: silent, garbage, reset mid-transfer, half-open.
    let silent = connect(vip(port));
    let mut garbage = connect(vip(port));
    garbage.write_all(&[0xff; 4096]).unwrap();
    let mut resetter = connect(vip(port));
    resetter.write_all(&[1; 100_000]).unwrap();
    socket2::SockRef::from(&resetter)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(resetter);
    // Members: hang (connect ok, nothing back: idle timeout), reset, refused (retried).
    for _ in 0..6 {
        let Ok(mut c) = try_connect(vip(port2)) else {
            continue; // reset before the connect completed: also an acceptable end
        };
        let _ = c.write_all(b"hello\n");
        let mut buf = [0u8; 64];
        let _ = c.read(&mut buf); // ends by EOF/reset within the idle timeout, never hangs
    }
    drop(silent);
    drop(garbage);
    assert!(lbd.alive(), "lbd died:\n{}", lbd.log_text());
    // The refused member was tried and counted; lbd still serves.
    let refused_failures = lbd.member("bad", &refused.to_string())["counters"]["connect_failures"]
        .as_u64()
        .unwrap();
    assert!(refused_failures >= 1, "{refused_failures}");
    let mut c = connect(vip(port));
    assert_eq!(read_line(&mut c), "good");
    drop(c);
    let after = wait_for("descriptors back", Duration::from_secs(10), || {
        let n = lbd.fd_count();
        (n <= before).then_some(n)
    });
    assert_eq!(after, before);
    assert!(lbd.alive());
}

#[test]
fn source_address_persistence_sticks_a_client_to_one_member_until_it_is_deleted() {
    let a = Server::start("a", Behaviour::NameThenEcho);
    let b = Server::start("b", Behaviour::NameThenEcho);
    let port = free_port();
    let lbd = Lbd::start(&format!(
        "{}\n[persistence.src]\ntype = \"source-address\"\nmask = 24\ntimeout = \"1m\"\n",
        vs_body(port, &[a.addr, b.addr], "persistence = \"src\"", "")
    ));
    // Round-robin would alternate; the record keeps every connection from 127.0.0.0/24 on
    // the member the first one got.
    let first = read_line(&mut connect(vip(port)));
    for _ in 0..6 {
        assert_eq!(read_line(&mut connect(vip(port))), first);
    }
    let recs = lbd.ok(&Request::ShowPersistence { profile: None });
    let recs = recs.as_array().unwrap();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["key"], "127.0.0.0/24");
    assert_eq!(recs[0]["virtual_server"], "web");
    let member = if first == "a" { a.addr } else { b.addr };
    assert_eq!(recs[0]["member"], member.to_string());
    // A disabled member still takes its persisted clients; a forced-offline one does not.
    lbd.ok(&Request::member("web", member, "disabled"));
    assert_eq!(read_line(&mut connect(vip(port))), first);
    lbd.ok(&Request::member("web", member, "forced-offline"));
    let other = read_line(&mut connect(vip(port)));
    assert_ne!(other, first);
    lbd.ok(&Request::member("web", member, "enabled"));
    // The new connection made a new record pointing at the other member; deleting it lets
    // the method choose again.
    assert_eq!(read_line(&mut connect(vip(port))), other);
    let d = lbd.ok(&Request::DeletePersistence {
        key: None,
        member: None,
        profile: Some("src".into()),
    });
    assert_eq!(d["deleted"], 1, "{d}");
    let names: Vec<String> = (0..2).map(|_| read_line(&mut connect(vip(port)))).collect();
    assert!(names.contains(&first), "{names:?}");
}

/// The access log (issue 16): one JSON line per connection of a virtual server with
/// `access_log = true` — client, VIP, member, SNAT source, bytes each way, how it ended —
/// and `access_log_sample` logs that share, evenly spread.
#[test]
fn the_access_log_has_a_line_per_connection_with_its_ends_and_bytes() {
    let a = Server::start("a", Behaviour::NameThenEcho);
    let (port, sampled_port) = (free_port(), free_port());
    let file = std::env::temp_dir().join(format!("lbd-access-{}-{port}.log", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let body = format!(
        "access_log_file = \"{}\"\n{}\n[virtual_servers.half]\ndestination = \"127.0.0.1:{sampled_port}\"\n\
         pool = \"web\"\naccess_log = true\naccess_log_sample = 0.5\n",
        file.display(),
        vs_body(port, &[a.addr], "access_log = true", "")
    );
    let _lbd = Lbd::start(&body);
    let mut c = connect(vip(port));
    let client = c.local_addr().unwrap();
    assert_eq!(read_line(&mut c), "a");
    c.write_all(b"hello\n").unwrap();
    assert_eq!(read_line(&mut c), "hello");
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    drop(c);
    for _ in 0..4 {
        let mut c = connect(vip(sampled_port));
        assert_eq!(read_line(&mut c), "a");
    }
    let lines: Vec<serde_json::Value> =
        wait_for("5 access-log lines", Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&file).ok()?;
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("a JSON line"))
                .collect();
            (lines.len() >= 3).then_some(lines)
        });
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(&file).unwrap();
    println!("{text}");
    let web: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["virtual_server"] == "web")
        .collect();
    assert_eq!(web.len(), 1, "{lines:?}");
    let l = web[0];
    assert_eq!(l["client"], client.to_string());
    assert_eq!(l["vip"], vip(port).to_string());
    assert_eq!(l["member"], a.addr.to_string());
    assert!(
        l["snat"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:")),
        "{l}"
    );
    assert_eq!(l["bytes_up"], 6, "{l}");
    assert_eq!(l["bytes_down"], 8, "{l}");
    assert_eq!(l["end"], "closed", "{l}");
    let half = text
        .lines()
        .filter(|l| l.contains("\"virtual_server\":\"half\""))
        .count();
    assert_eq!(half, 2, "every second of 4 connections: {text}");
    let _ = std::fs::remove_file(&file);
}
