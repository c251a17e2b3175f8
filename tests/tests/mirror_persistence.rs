//! Issue 6, test 1: persistence records survive a hung device through mirroring.
//!
//! The seed lab (FRR r1, devices A, B, C) with mirroring on: 300 clients (300 source
//! addresses) get a source-address persistence record on the `web` virtual server and an msrdp
//! record (their `mstshash` user name) on the `rdp` virtual server, each through device B — a
//! client keeps the source port whose ECMP hash leads to B. B mirrors tg-2's records to tg-2's
//! next-active device, C. Then B hangs (`kill -STOP`); tg-2 moves to C, and since r1's next
//! hops do not change (L2 mode), each client's next connection from the same address and port
//! reaches C, which must send it to the same member: 0 records lost.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use socket2::{Domain, Socket, Type};
use spanlb_tests::cluster::{prereqs, ClusterLab, ClusterOptions};
use spanlb_tests::topology::VIP;
use spanlb_tests::traffic::device_of;

const CLIENTS: usize = 300;
const RDP_PORT: u16 = 3389;
const WEB_PORT: u16 = spanlb_tests::topology::VIP_TCP_PORT;

/// The client's extra source addresses: 172.17.0.1 … (routed by r1 to the client).
fn client_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 17, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// An X.224 Connection Request (MS-RDPBCGR 2.2.1.1) with an `mstshash` cookie.
fn x224_cr(user: &str) -> Vec<u8> {
    let mut body = vec![0xE0, 0, 0, 0, 0, 0];
    body.extend_from_slice(format!("Cookie: mstshash={user}\r\n").as_bytes());
    body.extend_from_slice(&[0x01, 0x00, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00]);
    let li = u8::try_from(body.len()).expect("short cookie");
    let total = u16::try_from(4 + 1 + body.len()).expect("short pdu");
    let mut pdu = vec![0x03, 0x00];
    pdu.extend_from_slice(&total.to_be_bytes());
    pdu.push(li);
    pdu.extend_from_slice(&body);
    pdu
}

/// One exchange from `src` to `dst`: connect, send `first`, read the member's first line
/// (`"<server> <snat-ip>"`), then reset the connection (no TIME_WAIT, so `src` can connect
/// again). Returns (server, device the SNAT source names).
fn exchange(
    src: SocketAddr,
    dst: SocketAddr,
    first: &[u8],
) -> Result<(String, Option<&'static str>), String> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
    s.set_reuse_address(true).map_err(|e| e.to_string())?;
    s.bind(&src.into())
        .map_err(|e| format!("bind {src}: {e}"))?;
    s.connect_timeout(&dst.into(), Duration::from_secs(2))
        .map_err(|e| format!("connect from {src}: {e}"))?;
    let _ = s.set_linger(Some(Duration::ZERO));
    let mut c: TcpStream = s.into();
    c.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    c.write_all(first).map_err(|e| format!("write: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut line = Vec::new();
    let mut b = [0u8; 256];
    while !line.contains(&b'\n') {
        if Instant::now() > deadline {
            return Err(format!("from {src}: no answer"));
        }
        match std::io::Read::read(&mut c, &mut b) {
            Ok(0) => return Err(format!("from {src}: closed before the answer")),
            Ok(n) => line.extend_from_slice(&b[..n]),
            Err(e) => return Err(format!("from {src}: read: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&line);
    let mut it = text.split_whitespace();
    let server = it.next().unwrap_or_default().to_string();
    let snat: Option<IpAddr> = it.next().and_then(|s| s.parse().ok());
    Ok((server, snat.and_then(device_of)))
}

/// A client's persisted session: where it connects from and the member it stuck to.
#[derive(Debug, Clone)]
struct Session {
    src: SocketAddr,
    dst: SocketAddr,
    first: Vec<u8>,
    server: String,
}

/// For each client, a source port whose path leads through device `via`, and the member it
/// got there (at most 60 ports tried per client).
fn sessions_through(
    lab: &ClusterLab,
    via: &'static str,
    dst: SocketAddr,
    first: impl Fn(usize) -> Vec<u8> + Send + 'static,
    base_port: u16,
) -> Vec<Result<Session, String>> {
    lab.ok(
        lab.client.run_in(move || {
            let handles: Vec<_> = (0..10)
                .map(|t| {
                    let first = &first;
                    (
                        t,
                        (t..CLIENTS)
                            .step_by(10)
                            .map(|i| (i, first(i)))
                            .collect::<Vec<_>>(),
                    )
                })
                .map(|(_, work)| {
                    std::thread::spawn(move || {
                        work.into_iter()
                            .map(|(i, bytes)| {
                                let ip = client_ip(i);
                                let mut last = String::from("no port tried");
                                for k in 0..60u16 {
                                    let src = SocketAddr::new(ip.into(), base_port + k);
                                    match exchange(src, dst, &bytes) {
                                        Ok((server, Some(d))) if d == via => {
                                            return Ok(Session {
                                                src,
                                                dst,
                                                first: bytes,
                                                server,
                                            })
                                        }
                                        Ok((_, d)) => last = format!("went via {d:?}"),
                                        Err(e) => last = e,
                                    }
                                }
                                Err(format!("client {ip}: no path via {via}: {last}"))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        }),
        "client sessions",
    )
}

/// Each session's next connection: the member it reaches now.
type Reached = Result<(String, Option<&'static str>), String>;

fn revisit(lab: &ClusterLab, sessions: Vec<Session>) -> Vec<(Session, Reached)> {
    lab.ok(
        lab.client.run_in(move || {
            let chunks: Vec<Vec<Session>> = sessions.chunks(30).map(|c| c.to_vec()).collect();
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    std::thread::spawn(move || {
                        chunk
                            .into_iter()
                            .map(|s| {
                                let got = exchange(s.src, s.dst, &s.first);
                                (s, got)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        }),
        "revisiting",
    )
}

/// The receiver of `tg` in `lbctl show mirroring` on `dev`.
fn receiver(m: &Value, tg: &str) -> Value {
    m["receivers"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["traffic_group"] == tg).cloned())
        .unwrap_or(Value::Null)
}

/// r1 hashes the five-tuple, as a router does with packets from the wire. With policy 1, a
/// packet that a socket in the client namespace sent still carries that socket's random flow
/// hash when r1 forwards it (veth keeps `skb->hash`), and r1 uses it instead of the ports: a
/// new socket with the same five-tuple could take another path. Policy 3 with the fields
/// source and destination address, protocol and ports (0x37) hashes the headers only.
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

pub fn persistence_lab(name: &str) -> ClusterLab {
    let opts = ClusterOptions {
        mirroring: true,
        plugins: vec!["spanlb-plugin-msrdp"],
        web_extra: "persistence = \"src\"".into(),
        lbd_extra: format!(
            r#"
[virtual_servers.rdp]
destination = "{VIP}:{RDP_PORT}"
protocol = "tcp"
pool = "web"
snat = "automap"
persistence = "rdp"

[persistence.src]
type = "source-address"
timeout = "300s"
mirror = true

[persistence.rdp]
type = "msrdp"
timeout = "300s"
mirror = true
"#
        ),
        ..ClusterOptions::default()
    };
    let lab = ClusterLab::build(name, opts).expect("building the lab");
    five_tuple_hash(&lab);
    let r = lab.wait_steady(Duration::from_secs(45));
    lab.ok(r, "steady state");
    lab
}

#[test]
fn persistence_records_survive_a_hung_device() {
    if !prereqs() {
        return;
    }
    let lab = persistence_lab("mirror_persist");
    // 300 client addresses, routed back by r1.
    let mut batch = String::new();
    for i in 0..CLIENTS {
        batch.push_str(&format!("address add {}/32 dev eth0\n", client_ip(i)));
    }
    let file = lab.lab.dir().join("client-addrs.batch");
    lab.ok(std::fs::write(&file, batch), "writing the address batch");
    lab.ok(
        lab.client.exec(&["ip", "-batch", &file.to_string_lossy()]),
        "adding client addresses",
    );
    lab.ok(
        lab.r1.route("add 172.17.0.0/16 via 172.16.1.2"),
        "r1 route to the clients",
    );

    let vip: IpAddr = VIP.parse().unwrap();
    let web = sessions_through(
        &lab,
        "b",
        SocketAddr::new(vip, WEB_PORT),
        |_| b"hello\n".to_vec(),
        20000,
    );
    let rdp = sessions_through(
        &lab,
        "b",
        SocketAddr::new(vip, RDP_PORT),
        |i| x224_cr(&format!("user{i}")),
        30000,
    );
    let failed: Vec<&String> = web
        .iter()
        .chain(&rdp)
        .filter_map(|r| r.as_ref().err())
        .collect();
    lab.check(
        failed.is_empty(),
        format!(
            "{} clients found no path via b: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        ),
    );
    let web: Vec<Session> = web.into_iter().flatten().collect();
    let rdp: Vec<Session> = rdp.into_iter().flatten().collect();
    let spread = |s: &[Session]| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for x in s {
            *m.entry(x.server.clone()).or_default() += 1;
        }
        m
    };
    println!(
        "through b: web {} sessions {:?}, rdp {} sessions {:?}",
        web.len(),
        spread(&web),
        rdp.len(),
        spread(&rdp)
    );

    // B's records of tg-2 reach C (its next-active) and the channel is in sync.
    // Every record b used is b's own now, in tg-2 (a record a or c had mirrored to b becomes
    // b's when b uses it).
    let b_records = lab.ok(lab.lbctl("b", &["show", "persistence"]), "b persistence");
    let ours = |r: &&Value| {
        let k = r["key"].as_str().unwrap_or_default();
        k.starts_with("172.17.") || k.starts_with("user")
    };
    let on_b = b_records.as_array().map_or(0, |a| {
        a.iter()
            .filter(ours)
            .filter(|r| r["traffic_group"] == "tg-2")
            .count()
    });
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for r in b_records.as_array().into_iter().flatten().filter(ours) {
        *by.entry(format!("{}/{}", r["profile"], r["traffic_group"]))
            .or_default() += 1;
    }
    println!("b's records by profile/traffic group: {by:?}");
    lab.check(
        on_b == 2 * CLIENTS,
        format!(
            "b holds {on_b} tg-2 records, expected {}: {by:?}",
            2 * CLIENTS
        ),
    );
    let start = Instant::now();
    let mut last;
    let synced = loop {
        last = lab
            .lbctl("c", &["show", "mirroring"])
            .unwrap_or(Value::Null);
        let r = receiver(&last, "tg-2");
        if r["in_sync"] == true && r["records"]["persistence"].as_u64() >= Some(on_b as u64) {
            break true;
        }
        if start.elapsed() > Duration::from_secs(10) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "c's tg-2 receiver after {:?}: {}",
        start.elapsed(),
        receiver(&last, "tg-2")
    );
    println!("{}", lab.lbctl_text("b", &["show", "mirroring"]));
    lab.check(
        synced,
        format!("c never held b's {on_b} tg-2 records in sync: {last}"),
    );

    // Hang B: tg-2 moves to C.
    lab.ok(lab.signal_device("b", libc::SIGSTOP), "SIGSTOP b");
    let r = lab.wait_placement(&[("tg-2", "c")], Duration::from_secs(10));
    lab.ok(r, "tg-2 on c");
    std::thread::sleep(Duration::from_millis(500));

    println!("r1 next hops after the failover: {:?}", lab.r1_nexthops());
    let mut lost = Vec::new();
    let mut total = 0;
    let mut via: BTreeMap<String, usize> = BTreeMap::new();
    for (kind, sessions) in [("source-address", web), ("msrdp", rdp)] {
        let after = revisit(&lab, sessions);
        total += after.len();
        for (s, got) in after {
            match got {
                Ok((m, d)) => {
                    *via.entry(format!("{d:?}")).or_default() += 1;
                    if m != s.server {
                        lost.push(format!("{kind} {}: {} -> {m} via {d:?}", s.src, s.server));
                    }
                }
                Err(e) => lost.push(format!("{kind} {}: {e}", s.src)),
            }
        }
    }
    println!(
        "after the failover: {} of {total} sessions reached their member, {} lost; via {via:?}",
        total - lost.len(),
        lost.len()
    );
    println!("{}", lab.lbctl_text("c", &["show", "mirroring"]));
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    let c_records = lab.ok(lab.lbctl("c", &["show", "persistence"]), "c persistence");
    for r in c_records.as_array().into_iter().flatten().filter(ours) {
        *by.entry(format!(
            "{}/{}/{}",
            r["profile"], r["traffic_group"], r["mirrored"]
        ))
        .or_default() += 1;
    }
    println!("c's records by profile/traffic group/mirrored: {by:?}");
    lab.check(
        via.get("Some(\"c\")") == Some(&total),
        format!("the sessions' next connections did not all go through c: {via:?}"),
    );
    lab.check(
        lost.is_empty(),
        format!(
            "{} records lost: {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        ),
    );
}
