//! Issue 6, test 4: resync.
//!
//! - [`standby_restart_resyncs`]: in the seed lab with mirroring, 200 clients get a mirrored
//!   source-address record through device B (tg-2); C, tg-2's next-active device, holds them in
//!   sync. Then C's lbd alone is restarted (its bgpd keeps running): from the new lbd's start,
//!   C's tg-2 receiver must report in sync within 15 s with every client's record naming the
//!   member B's names, B's records must be unchanged, and B's tg-2 sender in sync with
//!   everything acknowledged. (Records are compared by member, whatever their traffic group:
//!   when a client reached two devices at nearly the same moment, which traffic group keeps
//!   its one record per device is a race, and both name the same member.)
//! - [`failback_waits_for_the_mirror`]: auto-failback (2 s delay) with
//!   `failback_sync_max_wait = "8s"`; 150 clients' tg-2 records made on B and mirrored to C.
//!   (1) B hangs for a few seconds (`kill -STOP`) and resumes, (2) B's daemons restart (empty
//!   table): each time tg-2 goes back to B only after B's tg-2 receiver is in sync, by a
//!   failback whose reason says the mirror was in sync, and B then holds every key (after
//!   the restart they can only have come from C's resync). (3) The gate itself: B restarts
//!   with a certificate of another CA (same group and device names), so C's sender can never
//!   sync to it: C reports tg-2 waiting for B's sync, tg-2 stays on C for the failback delay
//!   plus the maximum wait, and only then moves, with a reason naming the maximum wait.
//! - [`records_made_on_a_taken_over_path_follow_the_failback`]:
//!   with MAC masquerade, records that C makes for clients on tg-2's path while B hangs must
//!   be tg-2's, reach B before the failback and keep the clients' members after it.
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;
use spanlb_tests::cluster::{prereqs, ClusterLab, ClusterOptions};
use spanlb_tests::mirror::{
    add_client_addrs, differing, members, mirror_lab, persist_table, persistence_keys, poll,
    receiver, revisit, sender, sessions_through, src_persistence_opts, Members, Session,
};
use spanlb_tests::topology::{DEVICES, VIP, VIP_TCP_PORT};

fn web() -> SocketAddr {
    let vip: IpAddr = VIP.parse().expect("VIP literal");
    SocketAddr::new(vip, VIP_TCP_PORT)
}

/// Sessions of `clients` clients whose path is tg-2's (the SNAT source names b), all of them.
fn tg2_sessions(lab: &ClusterLab, clients: usize) -> Vec<Session> {
    let got = sessions_through(lab, "b", web(), |_| b"hello\n".to_vec(), 20000, clients);
    let failed: Vec<&String> = got.iter().filter_map(|r| r.as_ref().err()).collect();
    lab.check(
        failed.is_empty(),
        format!(
            "{} clients found no path via tg-2: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        ),
    );
    got.into_iter().flatten().collect()
}

fn mirroring(lab: &ClusterLab, dev: &str) -> Option<Value> {
    lab.lbctl(dev, &["show", "mirroring"]).ok()
}

/// `dev`'s `show traffic-groups` entry of `tg`.
fn tg_entry(lab: &ClusterLab, dev: &str, tg: &str) -> Option<Value> {
    let v = lab.lbctl(dev, &["show", "traffic-groups"]).ok()?;
    let list = v
        .get("traffic_groups")
        .or_else(|| v.get("data").and_then(|d| d.get("traffic_groups")))
        .unwrap_or(&v)
        .as_array()?
        .clone();
    list.into_iter().find(|t| t["name"] == tg)
}

#[test]
fn standby_restart_resyncs() {
    if !prereqs() {
        return;
    }
    const CLIENTS: usize = 200;
    let lab = mirror_lab("mirror_resync", src_persistence_opts());
    add_client_addrs(&lab, CLIENTS);
    tg2_sessions(&lab, CLIENTS);
    let before = lab.ok(members(&lab, "b", "172.17."), "b's records");
    lab.check(
        before.len() == CLIENTS,
        format!("b holds {} client records, not {CLIENTS}", before.len()),
    );

    // C's tg-2 receiver in sync, and C sends every client where B does. Only the test's
    // clients (172.17.*) are compared: the lab client's own address (172.16.1.2) has records
    // on every device from the lab's traffic checks.
    let mut seen = (Value::Null, Value::Null);
    let mut odd = Vec::new();
    let synced = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        let b = mirroring(&lab, "b")?;
        let c = mirroring(&lab, "c")?;
        seen = (sender(&b, "tg-2", "c"), receiver(&c, "tg-2"));
        odd = differing(&before, &members(&lab, "c", "172.17.").ok()?);
        (seen.1["in_sync"] == true && odd.is_empty()).then_some(())
    });
    lab.ok(
        synced.ok_or_else(|| {
            format!(
                "c's tg-2 receiver never in sync with b's {} client records: sender {} \
                 receiver {}; {} differ: {:?}",
                before.len(),
                seen.0,
                seen.1,
                odd.len(),
                &odd[..odd.len().min(3)]
            )
        }),
        "before the restart",
    );
    println!(
        "before the restart: c holds b's {} client records in sync (b's sender: {})",
        before.len(),
        seen.0
    );

    // Restart C's lbd alone: it comes back with an empty table, and must get in sync again
    // with every client's record, from the resync.
    let started = lab.ok(lab.restart_lbd("c"), "restarting c's lbd");
    let mut last = Value::Null;
    let resynced = poll(Duration::from_secs(15), Duration::from_millis(50), || {
        let c = mirroring(&lab, "c")?;
        last = receiver(&c, "tg-2");
        if last["in_sync"] != true {
            return None;
        }
        odd = differing(&before, &members(&lab, "c", "172.17.").ok()?);
        odd.is_empty().then(|| started.elapsed())
    });
    let (took, _) = lab.ok(
        resynced.ok_or_else(|| {
            format!(
                "c not in sync with b's {} client records 15 s after the restart: receiver \
                 {last}; {} differ: {:?}",
                before.len(),
                odd.len(),
                &odd[..odd.len().min(3)]
            )
        }),
        "resync after the restart",
    );
    println!(
        "resync after restart: {} client records in {} ms (receiver {last})",
        before.len(),
        took.as_millis()
    );
    // Nothing changed on B meanwhile: every client still goes where it went.
    let after = lab.ok(members(&lab, "b", "172.17."), "b's records");
    let moved = differing(&before, &after);
    lab.check(
        moved.is_empty(),
        format!(
            "{} of b's client records changed while c restarted: {:?}",
            moved.len(),
            &moved[..moved.len().min(5)]
        ),
    );

    // B's sender: in sync, everything acknowledged.
    let mut s = Value::Null;
    let acked = poll(Duration::from_secs(5), Duration::from_millis(100), || {
        s = sender(&mirroring(&lab, "b")?, "tg-2", "c");
        (s["state"] == "in-sync" && s["last_acked"] == s["last_sent"]).then_some(())
    });
    println!("b's tg-2 sender: {s}");
    lab.check(
        acked.is_some(),
        format!("b's tg-2 sender not in sync with everything acked: {s}"),
    );
}

/// One observation of the failback: C's view of tg-2 and B's tg-2 receiver.
#[derive(Default, Debug)]
struct Watch {
    /// When B's tg-2 receiver was first in sync with B sending every expected client to its
    /// member (by its own record or a mirrored one, in any traffic group: after a hang B keeps
    /// its own records, and a peer's copy that is not newer is not applied).
    synced: Option<Duration>,
    /// When C first said the failback waits for B's sync.
    waiting: Option<Duration>,
    /// When B took tg-2 back, and B's reason.
    moved: Option<(Duration, String)>,
    /// B's client records (key → member) right after the move.
    b_members: Members,
    last: String,
}

/// Watches until B takes tg-2 back by auto-failback (at most `timeout`).
fn watch_failback(
    lab: &ClusterLab,
    since: Instant,
    keys: &Members,
    timeout: Duration,
    every: Duration,
) -> Watch {
    let mut w = Watch::default();
    while since.elapsed() < timeout {
        let t = since.elapsed();
        if let Some(r) = mirroring(lab, "b").map(|m| receiver(&m, "tg-2")) {
            if w.synced.is_none()
                && r["in_sync"] == true
                && members(lab, "b", "172.17.").is_ok_and(|b| differing(keys, &b).is_empty())
            {
                w.synced = Some(t);
            }
        }
        let mut c_reason = String::new();
        if let Some(e) = tg_entry(lab, "c", "tg-2") {
            if e["waiting_for_sync"] == "b" && w.waiting.is_none() {
                w.waiting = Some(t);
            }
            c_reason = e["reason"].as_str().unwrap_or_default().to_string();
            w.last = format!("c: {e}");
        }
        // The failback is decided by whichever of B and C acts first: B activates with the
        // failback's reason, or C releases with it and B activates because "c released it".
        if let Some(e) = tg_entry(lab, "b", "tg-2") {
            let reason = e["reason"].as_str().unwrap_or_default().to_string();
            let reason = [reason, c_reason]
                .into_iter()
                .find(|r| r.contains("auto-failback"));
            if let (Some(reason), true) = (reason, e["state"] == "active") {
                w.b_members = members(lab, "b", "172.17.").unwrap_or_default();
                w.moved = Some((t, reason));
                return w;
            }
            w.last = format!("{}; b: {e}", w.last);
        }
        std::thread::sleep(every);
    }
    w
}

#[test]
fn failback_waits_for_the_mirror() {
    if !prereqs() {
        return;
    }
    const CLIENTS: usize = 150;
    const DELAY: Duration = Duration::from_secs(2);
    const MAX_WAIT: Duration = Duration::from_secs(8);
    let opts = ClusterOptions {
        failback_delay: "2s".into(),
        failback_sync_max_wait: Some("8s".into()),
        ..src_persistence_opts()
    };
    let lab = mirror_lab("mirror_failback", opts);
    add_client_addrs(&lab, CLIENTS);

    // 150 clients' tg-2 records, made on B and mirrored to C.
    tg2_sessions(&lab, CLIENTS);
    let keys = lab.ok(members(&lab, "b", "172.17."), "b's records");
    lab.check(
        keys.len() == CLIENTS,
        format!("b holds {} client records, not {CLIENTS}", keys.len()),
    );
    let on_c = poll(Duration::from_secs(10), Duration::from_millis(100), || {
        let c = members(&lab, "c", "172.17.").ok()?;
        differing(&keys, &c).is_empty().then_some(())
    });
    lab.check(on_c.is_some(), "c never held b's tg-2 records");

    // 1. B hangs and resumes: the failback follows B's receiver in sync.
    lab.ok(lab.signal_device("b", libc::SIGSTOP), "SIGSTOP b");
    let r = lab.wait_placement(&[("tg-2", "c")], Duration::from_secs(10));
    lab.ok(r, "tg-2 on c");
    // A hang of a few seconds (a resume just after the takeover is a conflict that the
    // device earlier in HA order wins at once, not a failback).
    std::thread::sleep(Duration::from_secs(3));
    lab.ok(lab.signal_device("b", libc::SIGCONT), "SIGCONT b");
    let w = watch_failback(
        &lab,
        Instant::now(),
        &keys,
        Duration::from_secs(20),
        Duration::from_millis(50),
    );
    check_synced_failback(&lab, "resumed b", &w, &keys);
    let r = lab.wait_placement(&[("tg-2", "b")], Duration::from_secs(5));
    lab.ok(r, "tg-2 on b");

    // 2. B's daemons restart: B comes back with an empty table, so every key it holds at the
    //    failback came from C's resync.
    lab.stop_device("b");
    let r = lab.wait_placement(&[("tg-2", "c")], Duration::from_secs(10));
    lab.ok(r, "tg-2 on c");
    lab.ok(lab.start_device("b"), "starting b");
    let w = watch_failback(
        &lab,
        Instant::now(),
        &keys,
        Duration::from_secs(20),
        Duration::from_millis(50),
    );
    check_synced_failback(&lab, "restarted b", &w, &keys);
    let r = lab.wait_placement(&[("tg-2", "b")], Duration::from_secs(5));
    lab.ok(r, "tg-2 on b");

    // 3. The gate: B comes back with a certificate of another CA (same names): never in sync.
    lab.stop_device("b");
    let r = lab.wait_placement(&[("tg-2", "c")], Duration::from_secs(10));
    lab.ok(r, "tg-2 on c again");
    let rogue = lab.lab.dir().join("rogue-trust");
    lab.ok(write_rogue_trust(&rogue), "rogue trust");
    let d = lab.device("b");
    let cfg = lab.ok(std::fs::read_to_string(&d.lbd_config), "b's config");
    let real = format!(
        "mirror_trust_dir = \"{}\"",
        lab.lab.dir().join("trust").display()
    );
    lab.check(cfg.contains(&real), "b's config names the lab's trust dir");
    let cfg = cfg.replace(
        &real,
        &format!("mirror_trust_dir = \"{}\"", rogue.display()),
    );
    lab.ok(std::fs::write(&d.lbd_config, cfg), "b's rogue config");
    let started = Instant::now();
    lab.ok(lab.start_device("b"), "starting b");
    let w = watch_failback(
        &lab,
        started,
        &Members::new(),
        DELAY + MAX_WAIT + Duration::from_secs(8),
        Duration::from_millis(100),
    );
    println!("b restarted with another CA's certificate: {w:?}");
    let Some((moved, reason)) = &w.moved else {
        panic!(
            "tg-2 never failed back to b after the maximum wait: {}{}",
            w.last,
            lab.dump()
        );
    };
    println!("failback after {moved:?} (delay {DELAY:?} + max wait {MAX_WAIT:?}): {reason}");
    lab.check(
        w.synced.is_none(),
        format!(
            "b's receiver was in sync at {:?} with a foreign certificate",
            w.synced
        ),
    );
    lab.check(
        w.waiting.is_some(),
        "c never reported tg-2 waiting for b's sync",
    );
    lab.check(
        *moved >= DELAY + MAX_WAIT - Duration::from_secs(1),
        format!("tg-2 moved after {moved:?}, before the failback delay plus the maximum wait"),
    );
    lab.check(
        *moved <= DELAY + MAX_WAIT + Duration::from_secs(5),
        format!("tg-2 moved only after {moved:?}"),
    );
    lab.check(
        reason.contains("max wait"),
        format!("failback reason does not name the maximum wait: {reason}"),
    );
    let log = std::fs::read_to_string(lab.lab.dir().join("lbd-b.log")).unwrap_or_default();
    let refused = log
        .lines()
        .filter(|l| l.contains("refused connection"))
        .count();
    println!("b's lbd refused {refused} mirror connections");
}

/// A failback to `who` (B) that waited for its mirror: B's tg-2 receiver in sync before tg-2
/// moved, the reason says so, and B sent every client of `keys` to its member when it moved.
fn check_synced_failback(lab: &ClusterLab, who: &str, w: &Watch, keys: &Members) {
    println!(
        "{who}: in sync after {:?}, c said waiting for b's sync after {:?}, failback {:?}",
        w.synced, w.waiting, w.moved
    );
    let Some((moved, reason)) = &w.moved else {
        panic!("tg-2 never failed back to {who}: {}{}", w.last, lab.dump());
    };
    lab.check(
        w.synced.is_some_and(|s| s <= *moved),
        format!(
            "tg-2 failed back to {who} ({moved:?}) before its receiver was in sync ({:?})",
            w.synced
        ),
    );
    lab.check(
        reason.contains("mirror in sync"),
        format!("failback reason does not say the mirror was in sync: {reason}"),
    );
    let missing = differing(keys, &w.b_members);
    lab.check(
        missing.is_empty(),
        format!(
            "at the failback {who} lacked {} of the {} client records: {:?}",
            missing.len(),
            keys.len(),
            &missing[..missing.len().min(5)]
        ),
    );
}

/// Trust files of another CA that names itself `seed` too, with certificates for every
/// device (same names and addresses as the lab's).
fn write_rogue_trust(dir: &std::path::Path) -> Result<(), String> {
    use lbd::mirror::trust;
    let ca = trust::create_ca("seed").map_err(|e| e.to_string())?;
    trust::write_pair(dir, "ca", &ca, true).map_err(|e| e.to_string())?;
    for d in DEVICES {
        let ha: IpAddr =
            d.ha.parse()
                .map_err(|_| format!("bad HA address {}", d.ha))?;
        let pair = trust::issue_device(&ca, d.name, &[ha]).map_err(|e| e.to_string())?;
        trust::write_pair(dir, d.name, &pair, true).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// With MAC masquerade, a connection that reaches C on tg-2's path while B hangs belongs to
/// tg-2 (its SNAT source is tg-2's floating internal address), so its persistence record must
/// be tg-2's too: C mirrors it to B when B returns, and after the failback the client's next
/// connection (same path, now B again) keeps its member.
#[test]
fn records_made_on_a_taken_over_path_follow_the_failback() {
    if !prereqs() {
        return;
    }
    const CLIENTS: usize = 100;
    let opts = ClusterOptions {
        mac_masquerade: true,
        failback_sync_max_wait: Some("8s".into()),
        ..src_persistence_opts()
    };
    let lab = mirror_lab("mirror_masq_failback", opts);
    add_client_addrs(&lab, CLIENTS);
    lab.ok(lab.signal_device("b", libc::SIGSTOP), "SIGSTOP b");
    let r = lab.wait_placement(&[("tg-2", "c")], Duration::from_secs(10));
    lab.ok(r, "tg-2 on c");
    std::thread::sleep(Duration::from_millis(500));
    let sessions = tg2_sessions(&lab, CLIENTS);
    let table = lab.ok(persist_table(&lab, "c"), "c's table");
    let mut by_tg: std::collections::BTreeMap<String, usize> = Default::default();
    for ((_, _, k), (tg, _)) in &table {
        if k.starts_with("172.17.") {
            *by_tg.entry(tg.clone()).or_default() += 1;
        }
    }
    println!("c's records of clients on tg-2's path, by traffic group: {by_tg:?}");
    let tg2 = lab.ok(persistence_keys(&lab, "c", "tg-2", "172.17."), "c's keys");
    lab.check(
        tg2.len() == CLIENTS,
        format!("c filed {by_tg:?} of the clients on tg-2's path, not all under tg-2"),
    );
    let keys = lab.ok(members(&lab, "c", "172.17."), "c's records");
    std::thread::sleep(Duration::from_secs(2));
    lab.ok(lab.signal_device("b", libc::SIGCONT), "SIGCONT b");
    let w = watch_failback(
        &lab,
        Instant::now(),
        &keys,
        Duration::from_secs(20),
        Duration::from_millis(50),
    );
    check_synced_failback(&lab, "resumed b", &w, &keys);
    let r = lab.wait_placement(&[("tg-2", "b")], Duration::from_secs(5));
    lab.ok(r, "tg-2 on b");
    let lost: Vec<String> = revisit(&lab, sessions)
        .into_iter()
        .filter_map(|(s, got)| match got {
            Ok((m, _)) if m == s.server => None,
            other => Some(format!("{}: {} -> {other:?}", s.src, s.server)),
        })
        .collect();
    lab.check(
        lost.is_empty(),
        format!(
            "{} of {CLIENTS} sessions lost their member after the failback: {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        ),
    );
}
