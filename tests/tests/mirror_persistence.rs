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
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;
use spanlb_tests::cluster::{prereqs, ClusterLab, ClusterOptions};
use spanlb_tests::mirror::{
    add_client_addrs, five_tuple_hash, receiver, revisit, sessions_through, Session,
};
use spanlb_tests::topology::VIP;

const CLIENTS: usize = 300;
const RDP_PORT: u16 = 3389;
const WEB_PORT: u16 = spanlb_tests::topology::VIP_TCP_PORT;

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

fn persistence_lab(name: &str) -> ClusterLab {
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
    add_client_addrs(&lab, CLIENTS);

    let vip: IpAddr = VIP.parse().unwrap();
    let web = sessions_through(
        &lab,
        "b",
        SocketAddr::new(vip, WEB_PORT),
        |_| b"hello\n".to_vec(),
        20000,
        CLIENTS,
    );
    let rdp = sessions_through(
        &lab,
        "b",
        SocketAddr::new(vip, RDP_PORT),
        |i| x224_cr(&format!("user{i}")),
        30000,
        CLIENTS,
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
