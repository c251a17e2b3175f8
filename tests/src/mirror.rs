//! Helpers of the mirroring tests on the [`cluster`](crate::cluster) lab: many
//! client addresses, client connections that keep a chosen source port (so r1's five-tuple
//! hash sends them through a chosen traffic group's path), and readers of `lbctl show
//! mirroring` and `show persistence`.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use socket2::{Domain, Socket, Type};

use crate::cluster::{ClusterLab, ClusterOptions};
use crate::traffic::device_of;

/// Client `i`'s extra source address: 172.17.0.1 … (routed by r1 to the client, see
/// [`add_client_addrs`]).
pub fn client_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 17, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// Gives the client namespace the addresses of clients `0..n` and r1 a route back to them.
pub fn add_client_addrs(lab: &ClusterLab, n: usize) {
    let mut batch = String::new();
    for i in 0..n {
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
}

/// One exchange from `src` to `dst`: connect, send `first`, read the member's first line
/// (`"<server> <snat-ip>"`), then reset the connection (no TIME_WAIT, so `src` can connect
/// again). Returns (server, device the SNAT source names).
pub fn exchange(
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
pub struct Session {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub first: Vec<u8>,
    pub server: String,
}

/// For each of clients `0..clients`, a source port whose path leads through `via` (the device
/// the SNAT source address names: with MAC masquerade, the home device of the traffic group
/// whose path it was), and the member it got there (at most 60 ports tried per client).
pub fn sessions_through(
    lab: &ClusterLab,
    via: &'static str,
    dst: SocketAddr,
    first: impl Fn(usize) -> Vec<u8> + Send + 'static,
    base_port: u16,
    clients: usize,
) -> Vec<Result<Session, String>> {
    lab.ok(
        lab.client.run_in(move || {
            let handles: Vec<_> = (0..10)
                .map(|t| {
                    let first = &first;
                    (t..clients)
                        .step_by(10)
                        .map(|i| (i, first(i)))
                        .collect::<Vec<_>>()
                })
                .map(|work| {
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
                                        Ok((_, d)) => {
                                            // The record that device made reaches its peer
                                            // before the next try makes one elsewhere (one
                                            // client on two devices within a millisecond
                                            // is a race the README describes).
                                            std::thread::sleep(Duration::from_millis(20));
                                            last = format!("went via {d:?}")
                                        }
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
pub type Reached = Result<(String, Option<&'static str>), String>;

/// Connects every session again (same source address and port): what each reaches now.
pub fn revisit(lab: &ClusterLab, sessions: Vec<Session>) -> Vec<(Session, Reached)> {
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

/// The receiver of `tg` in `lbctl show mirroring` output `m` (Null when there is none).
pub fn receiver(m: &Value, tg: &str) -> Value {
    m["receivers"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["traffic_group"] == tg).cloned())
        .unwrap_or(Value::Null)
}

/// The sender of `tg` toward `peer` in `lbctl show mirroring` output `m` (Null when none).
pub fn sender(m: &Value, tg: &str, peer: &str) -> Value {
    m["senders"]
        .as_array()
        .and_then(|rs| {
            rs.iter()
                .find(|r| r["traffic_group"] == tg && r["peer"] == peer)
                .cloned()
        })
        .unwrap_or(Value::Null)
}

/// `dev`'s persistence records as `lbctl show persistence` lists them.
pub fn persistence_list(lab: &ClusterLab, dev: &str) -> Result<Vec<Value>, String> {
    match lab.lbctl(dev, &["show", "persistence"])? {
        Value::Array(list) => Ok(list),
        v => Err(format!("{dev}: no persistence list in {v}")),
    }
}

/// The keys of `dev`'s persistence records of traffic group `tg` whose key starts with
/// `prefix` (`lbctl show persistence`).
pub fn persistence_keys(
    lab: &ClusterLab,
    dev: &str,
    tg: &str,
    prefix: &str,
) -> Result<BTreeSet<String>, String> {
    let list = persistence_list(lab, dev)?;
    Ok(list
        .iter()
        .filter(|r| r["traffic_group"] == tg)
        .filter_map(|r| r["key"].as_str())
        .filter(|k| k.starts_with(prefix))
        .map(str::to_string)
        .collect())
}

/// r1 hashes the five-tuple, as a router does with packets from the wire. With policy 1, a
/// packet that a socket in the client namespace sent still carries that socket's random flow
/// hash when r1 forwards it (veth keeps `skb->hash`), and r1 uses it instead of the ports: a
/// new socket with the same five-tuple could take another path. Policy 3 with the fields
/// source and destination address, protocol and ports (0x37) hashes the headers only.
pub fn five_tuple_hash(lab: &ClusterLab) {
    lab.ok(
        lab.r1.sysctl("net.ipv4.fib_multipath_hash_fields", "55"),
        "r1 hash fields",
    );
    lab.ok(
        lab.r1.sysctl("net.ipv4.fib_multipath_hash_policy", "3"),
        "r1 hash policy",
    );
}

/// Lab options with mirroring on and a mirrored source-address persistence profile `src`
/// (300 s) on the `web` virtual server.
pub fn src_persistence_opts() -> ClusterOptions {
    ClusterOptions {
        mirroring: true,
        web_extra: "persistence = \"src\"".into(),
        lbd_extra: r#"
[persistence.src]
type = "source-address"
timeout = "300s"
mirror = true
"#
        .into(),
        ..ClusterOptions::default()
    }
}

/// Builds the lab with `opts`, switches r1 to the five-tuple hash and waits for steady state
/// (45 s).
pub fn mirror_lab(name: &str, opts: ClusterOptions) -> ClusterLab {
    let lab = ClusterLab::build(name, opts).expect("building the lab");
    five_tuple_hash(&lab);
    let r = lab.wait_steady(Duration::from_secs(45));
    lab.ok(r, "steady state");
    lab
}

/// Polls `f` every `every` until it returns Some, at most `timeout`; the value and when it
/// came, or None.
pub fn poll<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<(T, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some((v, start.elapsed()));
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// One persistence record as `lbctl show persistence` lists it: (profile, scope, key) →
/// (traffic group, mirrored).
pub type PersistTable = std::collections::BTreeMap<(String, String, String), (String, bool)>;

/// `dev`'s persistence table.
pub fn persist_table(lab: &ClusterLab, dev: &str) -> Result<PersistTable, String> {
    let list = persistence_list(lab, dev)?;
    let s = |r: &Value, k: &str| r[k].as_str().unwrap_or_default().to_string();
    Ok(list
        .iter()
        .map(|r| {
            (
                (s(r, "profile"), s(r, "scope"), s(r, "key")),
                (s(r, "traffic_group"), r["mirrored"] == true),
            )
        })
        .collect())
}

/// Client key → member.
pub type Members = std::collections::BTreeMap<String, String>;

/// Where `dev` sends each client: key → member of its records whose key starts with
/// `prefix`, whatever their traffic group and whether made there or mirrored. This is what a
/// client relies on: a key has one record per device, and when two devices made one for the
/// same client at once, which traffic group ends up holding it is a race, not a loss.
pub fn members(lab: &ClusterLab, dev: &str, prefix: &str) -> Result<Members, String> {
    let list = persistence_list(lab, dev)?;
    Ok(list
        .iter()
        .filter_map(|r| {
            let k = r["key"].as_str()?;
            k.starts_with(prefix).then(|| {
                (
                    k.to_string(),
                    r["member"].as_str().unwrap_or("?").to_string(),
                )
            })
        })
        .collect())
}

/// The keys of `want` that `have` lacks or sends to another member, each with both members.
pub fn differing(want: &Members, have: &Members) -> Vec<String> {
    want.iter()
        .filter(|(k, m)| have.get(*k) != Some(*m))
        .map(|(k, m)| format!("{k}: {m} vs {:?}", have.get(k)))
        .collect()
}

/// r1 sends all of the VIP's traffic to device `dev`'s floating external address (a policy
/// route in a table of its own), so every connection is that traffic group's.
pub fn route_vip_through(lab: &ClusterLab, dev: &str) -> Result<(), String> {
    let d = crate::topology::DEVICES
        .iter()
        .find(|d| d.name == dev)
        .ok_or_else(|| format!("no device {dev}"))?;
    let vip = crate::topology::VIP;
    lab.r1
        .route(&format!("add {vip}/32 via {} table 100", d.floating_ext))
        .map_err(|e| e.to_string())?;
    lab.r1
        .ip(&[
            "rule",
            "add",
            "to",
            &format!("{vip}/32"),
            "lookup",
            "100",
            "priority",
            "100",
        ])
        .map_err(|e| e.to_string())?;
    Ok(())
}
