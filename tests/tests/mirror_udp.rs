//! Issue 6, test 2: SIP calls over UDP survive a hung device through UDP flow mirroring.
//!
//! The seed lab with mirroring on and a UDP virtual server `sip` (VIP:5060, `mirror = true`)
//! in front of a SIPp UAS on each server. A SIPp UAC in the client namespace places 50 calls
//! through device B (its source port is one whose ECMP path leads to B; r1 hashes the
//! five-tuple), each pausing 10 s between the ACK and the BYE. B mirrors its UDP flow (client,
//! member, SNAT address and port) to C, tg-2's next-active. B hangs (`kill -STOP`) in the
//! middle of the calls; C rebinds the flow's SNAT port before it takes tg-2's floating
//! addresses, so the BYEs and their answers pass through C: SIPp must report 50 successful
//! calls and 0 failed. The same when B's lbd is killed (`kill -9`, its bgpd keeps running)
//! instead of hung: B's kernel closes lbd's sockets, but the flow's state is on C, which
//! takes tg-2 over `dead_after` later; the calls' next datagrams pass through C.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use spanlb_tests::cluster::{prereqs, ClusterLab, ClusterOptions, Daemon};
use spanlb_tests::topology::{SERVERS, VIP};

const CALLS: usize = 50;
const SIP_PORT: u16 = 5060;
const CLIENT: &str = "172.16.1.2";

/// The cumulative column of a SIPp statistics line such as `Successful call | 0 | 50`.
fn sipp_stat(screen: &str, name: &str) -> Option<u64> {
    screen
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with(name))
        .and_then(|l| l.split('|').nth(2))
        .and_then(|c| c.trim().parse().ok())
}

/// `dev`'s UDP flow from `client`: (member, SNAT address and port).
fn flow_on(lab: &ClusterLab, dev: &str, client: SocketAddr) -> Option<(String, String)> {
    lab.lbctl(dev, &["show", "connections"])
        .ok()
        .and_then(|v| v["connections"].as_array().cloned())
        .and_then(|cs| {
            cs.into_iter()
                .find(|c| c["client"] == client.to_string() && c["protocol"] == "udp")
        })
        .map(|c| (c["member"].to_string(), c["snat"].to_string()))
}

/// The device whose connection table holds a UDP flow from `client`.
fn flow_device(lab: &ClusterLab, client: SocketAddr) -> Option<&'static str> {
    ["a", "b", "c"].into_iter().find(|d| {
        lab.lbctl(d, &["show", "connections"])
            .ok()
            .and_then(|v| v["connections"].as_array().cloned())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["client"] == client.to_string() && c["protocol"] == "udp")
            })
    })
}

fn receiver(m: &Value, tg: &str) -> Value {
    m["receivers"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["traffic_group"] == tg).cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn sip_calls_survive_a_hung_device() {
    sip_calls_survive("mirror_udp", Fault::Hang);
}

#[test]
fn sip_calls_survive_a_crashed_lbd() {
    sip_calls_survive("mirror_udp_crash", Fault::KillLbd);
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGSTOP of B's bgpd and lbd.
    Hang,
    /// SIGKILL of B's lbd (its bgpd withdraws lbd's routes; the other devices announce them).
    KillLbd,
}

fn sip_calls_survive(name: &str, fault: Fault) {
    if !prereqs() || spanlb_lab::require_root_and_tools(&["sipp"]).is_err() {
        return;
    }
    let members: Vec<String> = SERVERS
        .iter()
        .map(|(_, a)| format!("{{ address = \"{a}:{SIP_PORT}\" }}"))
        .collect();
    let opts = ClusterOptions {
        mirroring: true,
        lbd_extra: format!(
            r#"
[virtual_servers.sip]
destination = "{VIP}:{SIP_PORT}"
protocol = "udp"
pool = "sip"
snat = "automap"
mirror = true
idle_timeout = "120s"

[pools.sip]
members = [{}]
"#,
            members.join(", ")
        ),
        ..ClusterOptions::default()
    };
    let lab = ClusterLab::build(name, opts).expect("building the lab");
    lab.ok(
        lab.r1.sysctl("net.ipv4.fib_multipath_hash_fields", "55"),
        "r1 hash fields",
    );
    lab.ok(
        lab.r1.sysctl("net.ipv4.fib_multipath_hash_policy", "3"),
        "r1 hash policy",
    );
    let r = lab.wait_steady(Duration::from_secs(45));
    lab.ok(r, "steady state");

    // A SIPp UAS on each server.
    let mut uas = Vec::new();
    for (ns, (name, addr)) in lab.servers.iter().zip(SERVERS) {
        let mut cmd = Command::new("sipp");
        cmd.args(["-sn", "uas", "-i", addr, "-p", &SIP_PORT.to_string()])
            .args(["-nostdin", "-timeout", "120s"]);
        uas.push(lab.ok(ns.spawn_cmd(cmd, format!("uas-{name}.out")), "sipp uas"));
    }
    std::thread::sleep(Duration::from_millis(500));

    // A UAC source port whose flow lands on b: probe with one datagram per port (a UAS ignores
    // a datagram that is not SIP) and ask the devices where the flow is.
    let vip = SocketAddr::new(VIP.parse::<IpAddr>().unwrap(), SIP_PORT);
    let mut uac_port = None;
    for port in 25060u16..25120 {
        let src: SocketAddr = format!("{CLIENT}:{port}").parse().unwrap();
        let sent = lab
            .client
            .run_in(move || UdpSocket::bind(src).and_then(|s| s.send_to(b"probe\r\n\r\n", vip)));
        if !matches!(sent, Ok(Ok(_))) {
            continue;
        }
        std::thread::sleep(Duration::from_millis(50));
        if flow_device(&lab, src) == Some("b") {
            uac_port = Some(port);
            break;
        }
    }
    let uac_port = lab.ok(uac_port.ok_or("no source port leads to b"), "UAC port");
    println!("UAC source port {uac_port} leads to b");

    let mut cmd = Command::new("sipp");
    cmd.args(["-sn", "uac", "-i", CLIENT, "-p", &uac_port.to_string()])
        .arg(vip.to_string())
        .args([
            "-m",
            &CALLS.to_string(),
            "-r",
            "25",
            "-l",
            &CALLS.to_string(),
        ])
        .args([
            "-d",
            "10000",
            "-nostdin",
            "-timeout",
            "60s",
            "-timeout_error",
        ]);
    let uac = lab.ok(lab.client.spawn_cmd(cmd, "uac.out"), "sipp uac");
    let started = Instant::now();

    // The calls are set up through b (their pause has begun) and b's flow is on c's mirror.
    let mut last = Value::Null;
    let synced = loop {
        if let Ok(m) = lab.lbctl("c", &["show", "mirroring"]) {
            let r = receiver(&m, "tg-2");
            if r["in_sync"] == true && r["records"]["udp_flows"].as_u64().unwrap_or(0) >= 1 {
                break true;
            }
            last = m;
        }
        if started.elapsed() > Duration::from_secs(5) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    lab.check(
        synced,
        format!("c never held b's UDP flow: {}", receiver(&last, "tg-2")),
    );
    // All 50 calls (25/s) are set up after 2 s; their BYEs come 10 s after each ACK.
    std::thread::sleep(Duration::from_millis(
        3000u64.saturating_sub(started.elapsed().as_millis() as u64),
    ));
    println!("{}", lab.lbctl_text("b", &["show", "mirroring"]));
    let uac_addr: SocketAddr = format!("{CLIENT}:{uac_port}").parse().unwrap();
    let on_b = flow_on(&lab, "b", uac_addr);
    match fault {
        Fault::Hang => lab.ok(lab.signal_device("b", libc::SIGSTOP), "SIGSTOP b"),
        Fault::KillLbd => lab.ok(
            lab.signal_daemon("b", Daemon::Lbd, libc::SIGKILL),
            "SIGKILL b's lbd",
        ),
    }
    println!("{fault:?} on b");
    let r = lab.wait_placement(&[("tg-2", "c")], Duration::from_secs(10));
    lab.ok(r, "tg-2 on c");
    println!("tg-2 on c {:?} after the UAC started", started.elapsed());

    let st = uac.wait_timeout(Duration::from_secs(60));
    let screen = std::fs::read_to_string(lab.lab.dir().join("uac.out")).unwrap_or_default();
    let ok = sipp_stat(&screen, "Successful call");
    let failed = sipp_stat(&screen, "Failed call");
    println!("SIPp UAC: exit {st:?}, successful calls {ok:?}, failed {failed:?}");
    println!("{}", lab.lbctl_text("c", &["show", "mirroring"]));
    let on_c = flow_on(&lab, "c", uac_addr);
    println!("the UAC's flow: on b {on_b:?}, on c after the failover {on_c:?}");
    drop(uas);
    lab.check(
        st.is_some_and(|s| s.success()) && ok == Some(CALLS as u64) && failed == Some(0),
        format!("SIPp UAC: exit {st:?}, successful {ok:?}, failed {failed:?}:\n{screen}"),
    );
    // The flow c carries on is b's: same member, same SNAT address and port.
    lab.check(
        on_b.is_some() && on_c == on_b,
        format!("flow on b {on_b:?}, on c {on_c:?}"),
    );
}
