//! Issue 6: the optional mirroring scope "all peers" (for routed mode, where a failed traffic
//! group's flows may land on any device).
//!
//! [`all_peers_scope_mirrors_every_group_to_every_peer`]: the seed lab with
//! `mirror_scope = "all-peers"` and a mirrored source-address profile. 100 clients get a
//! record through B (tg-2). B must run a tg-2 sender to each of A and C, both in sync with
//! everything acknowledged, and both A and C must send every client to the member B does.
//! Then B hangs (`kill -STOP`): tg-2 moves to C (its next-active), and C, now tg-2's active
//! device, mirrors tg-2 on to A; the clients' next connections through C reach their members.
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use spanlb_tests::cluster::{prereqs, ClusterOptions};
use spanlb_tests::mirror::{
    add_client_addrs, differing, members, mirror_lab, poll, receiver, revisit, sender,
    sessions_through, src_persistence_opts,
};
use spanlb_tests::topology::{VIP, VIP_TCP_PORT};

const CLIENTS: usize = 100;

#[test]
fn all_peers_scope_mirrors_every_group_to_every_peer() {
    if !prereqs() {
        return;
    }
    let opts = ClusterOptions {
        mirror_scope: Some("all-peers".into()),
        ..src_persistence_opts()
    };
    let lab = mirror_lab("mirror_scope", opts);
    add_client_addrs(&lab, CLIENTS);
    let vip: IpAddr = VIP.parse().expect("VIP literal");
    let web = SocketAddr::new(vip, VIP_TCP_PORT);
    let got = sessions_through(&lab, "b", web, |_| b"hello\n".to_vec(), 20000, CLIENTS);
    let failed: Vec<&String> = got.iter().filter_map(|r| r.as_ref().err()).collect();
    lab.check(
        failed.is_empty(),
        format!("{} clients found no path via b: {failed:?}", failed.len()),
    );
    let sessions: Vec<_> = got.into_iter().flatten().collect();
    let on_b = lab.ok(members(&lab, "b", "172.17."), "b's records");
    lab.check(
        on_b.len() == CLIENTS,
        format!("b holds {} client records, not {CLIENTS}", on_b.len()),
    );

    // B's tg-2 goes to both peers; each holds every client's record.
    let mut last = String::new();
    let synced = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        let m = lab.lbctl("b", &["show", "mirroring"]).ok()?;
        let senders: Vec<Value> = ["a", "c"].iter().map(|p| sender(&m, "tg-2", p)).collect();
        let mut odd = Vec::new();
        for dev in ["a", "c"] {
            odd.extend(differing(&on_b, &members(&lab, dev, "172.17.").ok()?));
        }
        last = format!(
            "scope {}; senders {senders:?}; {} records differ: {:?}",
            m["scope"],
            odd.len(),
            &odd[..odd.len().min(3)]
        );
        (m["scope"] == "all-peers"
            && senders
                .iter()
                .all(|s| s["state"] == "in-sync" && s["last_acked"] == s["last_sent"])
            && odd.is_empty())
        .then_some(())
    });
    println!("b's tg-2 mirror: {last}");
    lab.check(
        synced.is_some(),
        format!("a and c never both held b's tg-2 records in sync: {last}"),
    );
    for dev in ["a", "c"] {
        let m = lab.ok(lab.lbctl(dev, &["show", "mirroring"]), "show mirroring");
        let r = receiver(&m, "tg-2");
        lab.check(
            r["in_sync"] == true && r["peer"] == "b",
            format!("{dev}'s tg-2 receiver: {r}"),
        );
    }

    // B hangs: C takes tg-2 and mirrors it on to A; the clients keep their members.
    lab.ok(lab.signal_device("b", libc::SIGSTOP), "SIGSTOP b");
    let r = lab.wait_placement(&[("tg-2", "c")], Duration::from_secs(10));
    lab.ok(r, "tg-2 on c");
    let onward = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        let m = lab.lbctl("c", &["show", "mirroring"]).ok()?;
        let s = sender(&m, "tg-2", "a");
        last = s.to_string();
        (s["state"] == "in-sync").then_some(())
    });
    lab.check(
        onward.is_some(),
        format!("c's tg-2 sender to a not in sync after the takeover: {last}"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut lost = Vec::new();
    for (s, got) in revisit(&lab, sessions) {
        match got {
            Ok((m, Some("c"))) if m == s.server => {}
            other => lost.push(format!("{}: {} -> {other:?}", s.src, s.server)),
        }
    }
    println!(
        "after the failover: {} of {CLIENTS} clients reached their member through c",
        CLIENTS - lost.len()
    );
    lab.check(
        lost.is_empty(),
        format!(
            "{} clients lost their member: {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        ),
    );
}
