//! The seed's three-device cluster (docs/design.md, "ECMP and failover"; docs/design.md, "The lab") in L2 mode: steady state, a hung
//! device (SIGSTOP) and its auto-failback, and manual failover / standby / release.
//!
//! Devices A, B, C run bgpd + lbd in one device group; tg-k is at home on the k-th device and
//! announced by it with path id k and next hop = its floating external self IP. r1 (FRR)
//! spreads the client's connections over the three paths.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use spanlb_tests::cluster::{masquerade_mac, prereqs, ClusterLab, ClusterOptions};
use spanlb_tests::traffic::{per_device, short_connections, udp_queries, LongLived, Prober};

const T: Duration = Duration::from_secs(45);

fn steady_lab(name: &str) -> ClusterLab {
    steady_lab_with(name, ClusterOptions::default())
}

fn steady_lab_with(name: &str, opts: ClusterOptions) -> ClusterLab {
    let lab = ClusterLab::build(name, opts).expect("building the lab");
    let r = lab.wait_steady(T);
    lab.ok(r, "steady state");
    lab
}

/// Waits until every flow in `ll` made an exchange after now (so a stall shows as a timeout
/// failure instead of going unnoticed), bounded to 4 s.
fn settle(ll: &LongLived) {
    let snap = ll.snapshot();
    let deadline = Instant::now() + Duration::from_secs(4);
    while ll.stalled_since(&snap, &[]) > ll.disturbed(&[]).len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn steady_state_spreads_connections_over_three_devices_with_snat() {
    if !prereqs() {
        return;
    }
    let lab = steady_lab("cluster_steady");
    let placement = lab.ok(lab.placement(), "placement");
    for (tg, dev) in [("tg-1", "a"), ("tg-2", "b"), ("tg-3", "c")] {
        lab.check(
            placement.get(tg).cloned().flatten().as_deref() == Some(dev),
            format!("{tg} on {dev}: {placement:?}"),
        );
    }
    let nh = lab.r1_nexthops();
    let want: Vec<IpAddr> = ["20.1.1.2", "20.1.1.3", "20.1.1.4"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    lab.check(nh == want, format!("r1 next hops {nh:?}"));

    let answers = lab.ok(short_connections(&lab.client, 300), "client");
    let failed: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    let spread = per_device(&answers);
    println!(
        "300 connections: per device {spread:?}, failed {} {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    lab.check(failed.is_empty(), format!("failed connections: {failed:?}"));
    for dev in ["a", "b", "c"] {
        let n = spread
            .iter()
            .find(|(d, _)| *d == Some(dev))
            .map_or(0, |(_, n)| *n);
        lab.check(
            n >= 45,
            format!("device {dev} got {n} of 300 (< 15 %): {spread:?}"),
        );
    }
    let sources: BTreeSet<String> = answers
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .map(|a| a.source.to_string())
        .collect();
    let want: BTreeSet<String> = ["10.1.1.2", "10.1.1.3", "10.1.1.4"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    lab.check(
        sources == want,
        format!("SNAT sources seen by the servers: {sources:?}"),
    );
    let servers: BTreeSet<String> = answers
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .map(|a| a.server.clone())
        .collect();
    lab.check(servers.len() == 3, format!("servers reached: {servers:?}"));

    let udp = lab.ok(udp_queries(&lab.client, 30), "udp client");
    let ok: Vec<_> = udp.iter().filter_map(|a| a.as_ref().ok()).collect();
    println!("udp: {} of 30 answered: {:?}", ok.len(), per_device(&udp));
    lab.check(!ok.is_empty(), format!("no UDP answer: {udp:?}"));
    for a in &ok {
        lab.check(
            want.contains(&a.source.to_string()),
            format!("UDP SNAT source {a:?}"),
        );
    }
}

/// Test 2's scenario: long-lived flows, the prober, SIGSTOP of b; returns the lab, the A/C
/// flows and the prober once tg-2 is on c and the measurement is printed.
fn hung_b(name: &str) -> (ClusterLab, LongLived, LongLived) {
    hung_b_with(name, ClusterOptions::default())
}

fn hung_b_with(name: &str, opts: ClusterOptions) -> (ClusterLab, LongLived, LongLived) {
    let masquerade = opts.mac_masquerade;
    let lab = steady_lab_with(name, opts);
    let mac_before = lab.r1_neigh("20.1.1.3");
    if masquerade {
        lab.check(
            mac_before.as_deref() == Some(masquerade_mac(2).as_str()),
            format!("r1's ARP entry for 20.1.1.3 is {mac_before:?}, not tg-2's masquerade MAC"),
        );
    }
    let ll = lab.ok(
        LongLived::open(&lab.client, 30, &["a", "c"]),
        "long-lived A/C",
    );
    let llb = lab.ok(LongLived::open(&lab.client, 6, &["b"]), "long-lived B");
    println!("long-lived flows: {} | {}", ll.summary(), llb.summary());
    let mut prober = lab.ok(
        Prober::start(&lab.client, Duration::from_secs(60)),
        "prober",
    );
    std::thread::sleep(Duration::from_millis(500));
    let nh_before = lab.r1_nexthops();

    let event = Instant::now();
    lab.ok(lab.signal_device("b", libc::SIGSTOP), "SIGSTOP b");
    let r = lab.wait_placement(&[("tg-2", "c")], Duration::from_secs(10));
    lab.ok(r, "tg-2 moves to c");
    let took = event.elapsed();
    // Let late attempts and any stalled flow time out (2 s) before measuring.
    std::thread::sleep(Duration::from_millis(2500));
    settle(&ll);
    prober.stop();
    let st = prober.stats(event);
    let disturbed = ll.disturbed(&["a", "c"]);
    println!(
        "hung b: tg-2 on c after {} ms; prober attempts={} failed={} gap_ms={}; \
         disturbed_flows_on_survivors={} of {}; errors {:?}",
        took.as_millis(),
        st.attempts,
        st.failed,
        st.gap_ms,
        disturbed.len(),
        ll.flows.len(),
        prober.errors(5)
    );
    println!(
        "hung b: flows through b: {} of {} reset or timed out (not mirrored yet)",
        llb.disturbed(&[]).len(),
        llb.flows.len()
    );
    let nh_after = lab.r1_nexthops();
    lab.check(
        nh_after == nh_before && nh_after.len() == 3,
        format!("r1 next hops changed: {nh_before:?} -> {nh_after:?}"),
    );
    if masquerade {
        // The masquerade MAC moved with tg-2: r1's ARP entry did not change at all.
        let mac_after = lab.r1_neigh("20.1.1.3");
        lab.check(
            mac_after == mac_before,
            format!("r1's ARP entry for 20.1.1.3 changed: {mac_before:?} -> {mac_after:?}"),
        );
    } else {
        lab.check(
            lab.r1_neigh_device("20.1.1.3") == Some("c"),
            format!(
                "r1's ARP entry for 20.1.1.3 is {:?}, not c's ext0",
                lab.r1_neigh("20.1.1.3")
            ),
        );
    }
    lab.check(
        st.gap_ms < 1000,
        format!("gap {} ms >= 1000 ms ({st:?})", st.gap_ms),
    );
    lab.check(
        disturbed.is_empty(),
        format!("A/C flows disturbed: {disturbed:?}"),
    );
    let snap = ll.snapshot();
    std::thread::sleep(Duration::from_millis(500));
    let stalled = ll.stalled_since(&snap, &["a", "c"]);
    lab.check(stalled == 0, format!("{stalled} A/C flows stalled"));
    (lab, ll, llb)
}

#[test]
fn hung_device_fails_over_to_next_active_without_disturbing_survivors() {
    if !prereqs() {
        return;
    }
    let (lab, _ll, _llb) = hung_b("cluster_hung");
    // Dropping the lab SIGCONTs b first.
    lab.ok(lab.signal_device("b", libc::SIGCONT), "SIGCONT b");
}

#[test]
fn hung_device_fails_over_with_mac_masquerade_and_r1_keeps_its_arp_entry() {
    if !prereqs() {
        return;
    }
    let opts = ClusterOptions {
        mac_masquerade: true,
        ..ClusterOptions::default()
    };
    let (lab, _ll, _llb) = hung_b_with("cluster_hung_masq", opts);
    lab.ok(lab.signal_device("b", libc::SIGCONT), "SIGCONT b");
}

#[test]
fn resumed_device_gets_its_traffic_group_back_after_the_failback_delay() {
    if !prereqs() {
        return;
    }
    let (lab, ll, _llb) = hung_b("cluster_failback");
    let event = Instant::now();
    lab.ok(lab.signal_device("b", libc::SIGCONT), "SIGCONT b");
    let r = lab.wait_placement(
        &[("tg-1", "a"), ("tg-2", "b"), ("tg-3", "c")],
        Duration::from_secs(20),
    );
    lab.ok(r, "tg-2 back on b");
    let took = event.elapsed();
    std::thread::sleep(Duration::from_millis(2500));
    settle(&ll);
    let disturbed = ll.disturbed(&["a", "c"]);
    println!(
        "failback: tg-2 on b {} ms after SIGCONT; disturbed_flows_on_survivors={} of {}",
        took.as_millis(),
        disturbed.len(),
        ll.flows.len()
    );
    lab.check(
        took >= Duration::from_millis(1500),
        format!("tg-2 returned after {took:?}, before the 2 s failback delay"),
    );
    lab.check(
        disturbed.is_empty(),
        format!("A/C flows disturbed: {disturbed:?}"),
    );
    let r = lab.wait_nexthops(&["20.1.1.2", "20.1.1.3", "20.1.1.4"], T);
    lab.ok(r, "three next hops");
    let answers = lab.ok(short_connections(&lab.client, 60), "client");
    let spread = per_device(&answers);
    println!("after failback: {spread:?}");
    lab.check(
        answers
            .iter()
            .any(|a| a.as_ref().is_ok_and(|a| a.source.to_string() == "10.1.1.3")),
        format!("no new connection through b (SNAT 10.1.1.3): {spread:?}"),
    );
}

#[test]
fn manual_failover_standby_and_release() {
    if !prereqs() {
        return;
    }
    let lab = steady_lab("cluster_manual");
    let ll = lab.ok(LongLived::open(&lab.client, 30, &["a", "b", "c"]), "flows");
    println!("long-lived flows: {}", ll.summary());

    // tg-1 to c: flows of tg-2 (b) and tg-3 (c) must not notice.
    let out = lab.lbctl("a", &["failover", "tg-1", "--to", "c"]);
    lab.ok(out, "lbctl failover tg-1 --to c");
    let r = lab.wait_placement(
        &[("tg-1", "c"), ("tg-2", "b"), ("tg-3", "c")],
        Duration::from_secs(10),
    );
    lab.ok(r, "tg-1 on c");
    std::thread::sleep(Duration::from_millis(2500));
    settle(&ll);
    let disturbed = ll.disturbed(&["b", "c"]);
    println!(
        "failover tg-1 -> c: disturbed flows of b and c: {} ({}); flows of a: {}",
        disturbed.len(),
        ll.summary(),
        ll.through("a").len()
    );
    lab.check(
        disturbed.is_empty(),
        format!("B/C flows disturbed: {disturbed:?}"),
    );

    // c in standby: it gives up everything; b's flows stay.
    lab.ok(lab.lbctl("c", &["standby"]), "lbctl standby on c");
    let r = lab.wait_placement(&[("tg-2", "b")], Duration::from_secs(10));
    lab.ok(r, "tg-2 stays on b");
    let r = spanlb_lab::wait_until_dbg(Duration::from_secs(10), "nothing active on c", || {
        let p = lab.placement()?;
        if p.values().all(|a| a.is_some() && a.as_deref() != Some("c")) {
            Ok(p)
        } else {
            Err(format!("{p:?}"))
        }
    });
    let p = lab.ok(r, "c's traffic groups move away");
    println!("c in standby: {p:?}");
    std::thread::sleep(Duration::from_millis(2500));
    let disturbed_b = ll.disturbed(&["b"]);
    lab.check(
        disturbed_b.is_empty(),
        format!("B flows disturbed by c's standby: {disturbed_b:?}"),
    );

    // Release: auto-failback returns tg-3 to c.
    lab.ok(lab.lbctl("c", &["release"]), "lbctl release on c");
    let r = lab.wait_placement(&[("tg-3", "c"), ("tg-2", "b")], Duration::from_secs(20));
    lab.ok(r, "tg-3 back on c after release");
    println!("after release: {:?}", lab.placement());
}
