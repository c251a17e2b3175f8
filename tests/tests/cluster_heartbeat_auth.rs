//! Heartbeat authentication in the cluster lab: an intruder on the HA segment sends
//! heartbeats signed with a wrong key (claiming a holds everything, b holds tg-1, and a
//! manual order moving tg-1), replays genuine heartbeats of b captured on a's HA link, and
//! sends correctly signed heartbeats with an old (epoch, seq) of b. Placement on every device
//! and r1's next hops stay as they were; the bad-tag and replay counters go up.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lbd::cluster::heartbeat::{encode, GroupKey};
use lbd::cluster::{Claim, Heartbeat, Order};
use spanlb_tests::cluster::{prereqs, ClusterLab, ClusterOptions};
use spanlb_tests::topology::DEVICES;

const T: Duration = Duration::from_secs(45);
const INTRUDER: &str = "192.168.100.99";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// UDP payloads of the IPv4 frames in a pcap file (Ethernet link type), bounded.
fn pcap_udp_payloads(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if bytes.len() < 24 {
        return out;
    }
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2c3d4 | 0xa1b23c4d => true,
        0xd4c3b2a1 | 0x4d3cb2a1 => false,
        _ => return out,
    };
    let u32_at = |b: &[u8], i: usize| {
        let a: [u8; 4] = b[i..i + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    };
    let mut i = 24;
    while i + 16 <= bytes.len() && out.len() < 1000 {
        let incl = u32_at(bytes, i + 8) as usize;
        let frame = &bytes[(i + 16).min(bytes.len())..(i + 16 + incl).min(bytes.len())];
        i += 16 + incl;
        if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[9] != 17 || ip.len() < ihl + 8 {
            continue;
        }
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
        if total < ihl + 8 {
            continue;
        }
        out.push(ip[ihl + 8..total].to_vec());
    }
    out
}

fn counters(lab: &ClusterLab, dev: &str) -> (u64, u64) {
    let g = lab.ok(lab.device_group(dev), "show device-group");
    let c = &g["counters"];
    (
        c["rejected_bad_tag"].as_u64().unwrap_or(0),
        c["rejected_replayed"].as_u64().unwrap_or(0),
    )
}

#[test]
fn forged_and_replayed_heartbeats_change_nothing() {
    if !prereqs() || spanlb_lab::require_root_and_tools(&["tcpdump"]).is_err() {
        return;
    }
    let lab = ClusterLab::build("cluster_hb_auth", ClusterOptions::default()).expect("building");
    let r = lab.wait_steady(T);
    lab.ok(r, "steady state");

    // The intruder on the HA segment.
    let x = lab.ok(lab.lab.ns("x"), "namespace x");
    let r = lab
        .lab
        .bridge_segment("ha", &[(&x, "ha0", &[&format!("{INTRUDER}/24")])]);
    lab.ok(r, "x on the HA segment");

    // Capture genuine heartbeats of b arriving at a.
    let a = lab.device("a");
    let b_ha = lab.device("b").addrs.ha;
    let pcap = lab.lab.dir().join("b-heartbeats.pcap");
    let cmd = format!(
        "timeout 5 tcpdump -i ha0 -n -U -c 5 -w {} 'udp port 1026 and src host {b_ha}' 2>/dev/null; true",
        pcap.display()
    );
    lab.ok(a.ns.sh(&cmd), "tcpdump");
    let captured = pcap_udp_payloads(&std::fs::read(&pcap).unwrap_or_default());
    println!("captured {} genuine heartbeats of b", captured.len());
    lab.check(
        !captured.is_empty(),
        "no heartbeat of b captured on a's ha0",
    );

    let placement_before = lab.ok(lab.placement(), "placement before");
    let nh_before = lab.r1_nexthops();
    let before: Vec<(u64, u64)> = ["a", "c"].iter().map(|d| counters(&lab, d)).collect();

    // Forged heartbeats: a wrong key.
    let wrong = GroupKey::from_hex(&"5a".repeat(32)).unwrap();
    let all: Vec<Claim> = (1..=3)
        .map(|k| Claim::new(format!("tg-{k}"), u64::MAX))
        .collect();
    let t = now_ms();
    let forged = [
        Heartbeat {
            device: "a".into(),
            epoch: t + 1_000_000,
            seq: 1,
            sent_ms: t,
            eligible: true,
            active: all.clone(),
            orders: vec![],
            unsynced: vec![],
            usable_ms: 0,
            unavailable: vec![],
            config: None,
        },
        Heartbeat {
            device: "b".into(),
            epoch: t + 1_000_000,
            seq: 1,
            sent_ms: t,
            eligible: true,
            active: vec![Claim::new("tg-1", u64::MAX)],
            orders: vec![Order {
                id: t * 1000 + 999,
                traffic_group: "tg-1".into(),
                to: "b".into(),
            }],
            unsynced: vec![],
            usable_ms: 0,
            unavailable: vec![],
            config: None,
        },
    ];
    let mut wrong_key: Vec<Vec<u8>> = forged.iter().map(|h| encode(h, &wrong).unwrap()).collect();
    // Right key, old (epoch, seq) of b: the replay guard must refuse it.
    let right = GroupKey::from_hex(&lab.group_key_hex).unwrap();
    let old = Heartbeat {
        device: "b".into(),
        epoch: 1,
        seq: 1,
        sent_ms: t,
        eligible: true,
        active: all.clone(),
        orders: vec![],
        unsynced: vec![],
        usable_ms: 0,
        unavailable: vec![],
        config: None,
    };
    let old_right = encode(&old, &right).unwrap();
    let targets: Vec<SocketAddr> = DEVICES
        .iter()
        .map(|d| SocketAddr::new(d.ha.parse().unwrap(), 1026))
        .collect();
    let replay_targets: Vec<SocketAddr> = targets
        .iter()
        .copied()
        .filter(|t| t.ip().to_string() != b_ha)
        .collect();
    let (wk, cap, old) = (
        std::mem::take(&mut wrong_key),
        captured.clone(),
        old_right.clone(),
    );
    let sent = x.run_in(move || -> std::io::Result<usize> {
        let s = UdpSocket::bind((INTRUDER, 0))?;
        let mut n = 0;
        let end = Instant::now() + Duration::from_secs(2);
        // 2 s of attacks, every 50 ms (bounded).
        while Instant::now() < end && n < 10_000 {
            for t in &targets {
                for p in &wk {
                    s.send_to(p, t)?;
                    n += 1;
                }
            }
            for t in &replay_targets {
                for p in cap.iter().chain(std::iter::once(&old)) {
                    s.send_to(p, t)?;
                    n += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(n)
    });
    let sent = lab.ok(lab.ok(sent, "intruder thread"), "sending");
    println!("intruder sent {sent} datagrams");
    std::thread::sleep(Duration::from_millis(1000));

    let placement_after = lab.ok(lab.placement(), "placement after");
    lab.check(
        placement_after == placement_before,
        format!("placement changed: {placement_before:?} -> {placement_after:?}"),
    );
    let nh_after = lab.r1_nexthops();
    lab.check(
        nh_after == nh_before,
        format!("r1 next hops changed: {nh_before:?} -> {nh_after:?}"),
    );
    for (i, d) in ["a", "c"].iter().enumerate() {
        let after = counters(&lab, d);
        println!(
            "{d}: rejected_bad_tag {} -> {}, rejected_replayed {} -> {}",
            before[i].0, after.0, before[i].1, after.1
        );
        lab.check(
            after.0 > before[i].0,
            format!("{d}: bad-tag counter did not move"),
        );
        lab.check(
            after.1 > before[i].1,
            format!("{d}: replay counter did not move"),
        );
    }
    let (bt, _) = counters(&lab, "b");
    lab.check(bt > 0, "b: bad-tag counter did not move");
}
