//! bgpd against FRR 8.4 in the seed's lab (docs/design.md, "The lab"): three devices announce the VIP with
//! path id k and NEXT_HOP = floating self IP k; r1's kernel must hold a three-way ECMP route.

use std::time::Duration;

use spanlb_control::bgpd::Request;
use spanlb_tests::control::{announce, withdraw};
use spanlb_tests::seed::{SeedLab, SeedOptions, VIP};

const T: Duration = Duration::from_secs(30);

fn prereqs() -> bool {
    spanlb_lab::require_root_and_tools(&["/usr/lib/frr/zebra", "/usr/lib/frr/bgpd", "vtysh"])
        .is_ok()
}

#[test]
fn three_devices_give_r1_a_three_way_ecmp_route_that_survives_a_path_move() {
    if !prereqs() {
        return;
    }
    let mut lab = SeedLab::build("frr_ecmp", SeedOptions::default()).unwrap();
    lab.start_all().unwrap();
    lab.wait_sessions(T)
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.dump()));
    let nh = lab
        .wait_nexthops(VIP, &["20.1.1.2", "20.1.1.3", "20.1.1.4"], T)
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.dump()));
    assert_eq!(nh.len(), 3);
    // FRR sees the three paths with their AS path.
    let v = lab
        .frr
        .vtysh_json(&format!("show bgp ipv4 unicast {VIP} json"))
        .unwrap();
    let paths = v["paths"].as_array().expect("paths");
    assert_eq!(paths.len(), 3, "{v}");
    for p in paths {
        assert_eq!(p["aspath"]["string"], "65001", "{p}");
    }

    // Move path 1 (tg-1) from A to B: withdraw on A, announce on B. The kernel keeps three
    // next hops throughout the end state.
    let mut ca = lab.control(0).unwrap();
    let mut cb = lab.control(1).unwrap();
    // r1 sends the VIP (learned from B and C) back to A: A counts it but it never keeps A's
    // own announcement alive (checked by the withdraw below).
    let got_back = spanlb_lab::wait_until_dbg(T, "A receives the VIP back from r1", || {
        let n = ca.call(&Request::Neighbors);
        if n["neighbors"][0]["prefixes_received"] == 1 {
            Ok(())
        } else {
            Err(n)
        }
    });
    got_back.unwrap();

    // ROUTE-REFRESH (RFC 2918): r1 asks A to re-send; A answers with its Adj-RIB-Out.
    let before = ca.call(&Request::Neighbors)["neighbors"][0]["updates_out"]
        .as_u64()
        .unwrap();
    lab.frr
        .vtysh_cmds(&["clear bgp ipv4 unicast 20.1.1.6 soft in"])
        .unwrap();
    spanlb_lab::wait_until_dbg(T, "A re-sends its routes after a route refresh", || {
        let n = ca.call(&Request::Neighbors);
        if n["neighbors"][0]["updates_out"].as_u64().unwrap() > before {
            Ok(())
        } else {
            Err(n)
        }
    })
    .unwrap();
    assert_eq!(lab.kernel_nexthops(VIP).len(), 3);

    let r = ca.call(&withdraw(VIP, 1, false));
    assert_eq!(r["withdrawn"], 1, "{r}");
    lab.wait_nexthops(VIP, &["20.1.1.3", "20.1.1.4"], T)
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.dump()));
    let r = cb.call(&announce(VIP, 1, "20.1.1.2"));
    assert_eq!(r["announced"], 1, "{r}");
    lab.wait_nexthops(VIP, &["20.1.1.2", "20.1.1.3", "20.1.1.4"], T)
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.dump()));
    let v = lab
        .frr
        .vtysh_json(&format!("show bgp ipv4 unicast {VIP} json"))
        .unwrap();
    let from_b = v["paths"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["peer"]["peerId"] == "20.1.1.7")
        .count();
    assert_eq!(from_b, 2, "B now announces paths 1 and 2: {v}");

    // Fate sharing: B's control client goes away, so does path 1 (it was not persistent).
    drop(cb);
    lab.wait_nexthops(VIP, &["20.1.1.3", "20.1.1.4"], T)
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.dump()));
    drop(ca);
}

#[test]
fn sigterm_withdraws_before_the_session_closes() {
    if !prereqs() {
        return;
    }
    let mut lab = SeedLab::build("frr_sigterm", SeedOptions::default()).unwrap();
    // Log what r1 receives so the order of withdraw and NOTIFICATION can be read back.
    lab.frr
        .vtysh_cmds(&[
            "configure terminal",
            "debug bgp updates in",
            "debug bgp neighbor-events",
        ])
        .unwrap();
    lab.start_all().unwrap();
    lab.wait_sessions(T)
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.dump()));
    lab.wait_nexthops(VIP, &["20.1.1.2", "20.1.1.3", "20.1.1.4"], T)
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.dump()));

    let c = lab.devices[2].bgpd.as_ref().unwrap();
    c.signal(libc::SIGTERM).unwrap();
    let status = c
        .wait_timeout(Duration::from_secs(10))
        .expect("bgpd exits after SIGTERM");
    assert!(status.success(), "bgpd exit status {status:?}\n{}", c.log());
    lab.wait_nexthops(VIP, &["20.1.1.2", "20.1.1.3"], T)
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.dump()));

    // In r1's log the withdraw from 20.1.1.8 comes before the notification that closed the session.
    let log = std::fs::read_to_string(lab.frr.dir().join("bgpd.log")).unwrap_or_default();
    let withdraw = log.lines().position(|l| {
        l.contains("20.1.1.8") && l.contains("30.1.1.10/32") && l.contains("withdrawn")
    });
    let notif = log.lines().position(|l| {
        l.contains("20.1.1.8") && l.to_lowercase().contains("notification") && l.contains("6/2")
    });
    assert!(
        withdraw.is_some() && notif.is_some(),
        "r1 log lacks the withdraw or the notification:\n{log}"
    );
    assert!(
        withdraw < notif,
        "withdraw must precede the notification:\n{log}"
    );
}

#[test]
fn ipv6_vip_with_ipv6_next_hops_is_installed_in_r1() {
    if !prereqs() {
        return;
    }
    let opts = SeedOptions {
        ipv6: true,
        ..SeedOptions::default()
    };
    let mut lab = SeedLab::build("frr_ipv6", opts).unwrap();
    lab.start_all().unwrap();
    lab.wait_nexthops(
        spanlb_tests::seed::VIP6,
        &["2001:db8:20::2", "2001:db8:20::3", "2001:db8:20::4"],
        T,
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}\n{}",
            lab.frr.vtysh("show bgp ipv6 unicast").unwrap_or_default(),
            lab.dump()
        )
    });
    // The IPv4 VIP is still there over the IPv4 sessions.
    lab.wait_nexthops(VIP, &["20.1.1.2", "20.1.1.3", "20.1.1.4"], T)
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.dump()));
}

#[test]
fn tcp_md5_right_password_connects_wrong_one_does_not() {
    if !prereqs() {
        return;
    }
    let opts = SeedOptions {
        neighbor_extra: "password = \"s3cret-key\"\n".into(),
        frr_neighbor_extra: vec!["password s3cret-key".into()],
        ..SeedOptions::default()
    };
    let mut lab = SeedLab::build("frr_md5", opts).unwrap();
    // A and B use the right key; C a wrong one.
    lab.start_bgpd(0).unwrap();
    lab.start_bgpd(1).unwrap();
    let wrong = lab.bgpd_config(2).replace("s3cret-key", "wrong-key");
    std::fs::write(&lab.devices[2].config, wrong).unwrap();
    let c = &mut lab.devices[2];
    let mut cmd = std::process::Command::new(spanlb_lab::cargo_bin("bgpd"));
    cmd.arg("--config").arg(&c.config);
    c.bgpd = Some(c.ns.spawn_cmd(cmd, "bgpd-c.log").unwrap());

    lab.wait_nexthops(VIP, &["20.1.1.2", "20.1.1.3"], T)
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.dump()));
    // C never gets a session: its SYNs carry the wrong signature and r1's kernel drops them.
    // Give it several connect attempts, then check r1 still has no session with it and C's
    // log says why connecting fails.
    let log =
        spanlb_lab::wait_until_dbg(T, "c logs a connect failure that mentions tcp md5", || {
            let log = lab.devices[2].bgpd.as_ref().unwrap().log();
            if log.contains("tcp md5") {
                Ok(log)
            } else {
                Err(log)
            }
        })
        .unwrap();
    assert!(log.contains("connect to 20.1.1.1:179 failed"), "{log}");
    let v = lab.frr.vtysh_json("show bgp summary json").unwrap();
    assert_ne!(
        v["ipv4Unicast"]["peers"]["20.1.1.8"]["state"], "Established",
        "{v}"
    );
    assert_eq!(lab.kernel_nexthops(VIP).len(), 2);
}

/// The communities of the path r1 has for the VIP from `peer`, or None if it has none.
fn path_communities(lab: &SeedLab, peer: &str) -> Option<String> {
    let v = lab
        .frr
        .vtysh_json(&format!("show bgp ipv4 unicast {VIP} json"))
        .ok()?;
    let p = v["paths"]
        .as_array()?
        .iter()
        .find(|p| p["peer"]["peerId"] == peer)?
        .clone();
    Some(p["community"]["string"].as_str().unwrap_or("").to_string())
}

#[test]
fn graceful_shutdown_community_is_announced_for_the_linger_time_then_withdrawn() {
    if !prereqs() {
        return;
    }
    let opts = SeedOptions {
        tail_extra: "[shutdown]\ngraceful_shutdown = true\nlinger_ms = 3000\n".into(),
        ..SeedOptions::default()
    };
    let mut lab = SeedLab::build("frr_gshut", opts).unwrap();
    lab.start_all().unwrap();
    lab.wait_nexthops(VIP, &["20.1.1.2", "20.1.1.3", "20.1.1.4"], T)
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.dump()));

    // A planned withdraw through the control socket (RFC 8326).
    let mut ca = lab.control(0).unwrap();
    let r = ca.call(&withdraw(VIP, 1, true));
    assert_eq!(r["withdrawing"], 1, "{r}");
    spanlb_lab::wait_until_dbg(T, "r1 sees A's path with graceful-shutdown", || {
        match path_communities(&lab, "20.1.1.6") {
            Some(c) if c.contains("graceful-shutdown") => Ok(()),
            other => Err(other),
        }
    })
    .unwrap();
    // FRR gives a graceful-shutdown path LOCAL_PREF 0, so it leaves the ECMP set at once
    // (traffic drains while it is still announced), and later the path is withdrawn.
    lab.wait_nexthops(VIP, &["20.1.1.3", "20.1.1.4"], T)
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.dump()));
    spanlb_lab::wait_until_dbg(
        T,
        "A's path withdrawn after the linger",
        || match path_communities(&lab, "20.1.1.6") {
            None => Ok(()),
            other => Err(other),
        },
    )
    .unwrap();

    // SIGTERM with graceful_shutdown: C's path carries the community, then goes, then C exits.
    let c = lab.devices[2].bgpd.as_ref().unwrap();
    c.signal(libc::SIGTERM).unwrap();
    spanlb_lab::wait_until_dbg(T, "r1 sees C's path with graceful-shutdown", || {
        match path_communities(&lab, "20.1.1.8") {
            Some(c) if c.contains("graceful-shutdown") => Ok(()),
            other => Err(other),
        }
    })
    .unwrap();
    assert!(c.is_running(), "bgpd lingers before withdrawing");
    let status = c
        .wait_timeout(Duration::from_secs(15))
        .expect("bgpd exits after the linger");
    assert!(status.success(), "{status:?}");
    lab.wait_nexthops(VIP, &["20.1.1.3"], T)
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.dump()));
}
