//! Route health injection in the cluster lab: when every pool member is down *for device A
//! only* (the servers cannot answer A's monitor probes from its static internal address), the
//! VIP is not available on A, the device tg-1 is placed on — so *every* device withdraws
//! path 1 (every device announces every traffic group's path while the VIP is
//! available where that group is placed; A's heartbeats carry its route health) while A keeps
//! announcing paths 2 and 3 for B and C. r1 drops path 1 although tg-1 stays active on A, and
//! gets it from all three devices again once the members come back. The UDP pool has no
//! monitor, so its members are taken out on A with `lbctl member dns ADDR force-offline` (with
//! advertise = "any", one available virtual server keeps the address advertised).

use std::collections::BTreeSet;
use std::time::Duration;

use spanlb_tests::cluster::{prereqs, ClusterLab, ClusterOptions};
use spanlb_tests::topology::{SERVERS, SERVER_UDP_PORT};

const T: Duration = Duration::from_secs(45);

#[test]
fn a_device_whose_members_are_down_withdraws_its_path() {
    if !prereqs() {
        return;
    }
    let lab = ClusterLab::build("cluster_rhi", ClusterOptions::default()).expect("building");
    let r = lab.wait_steady(T);
    lab.ok(r, "steady state");
    let a_int = lab.device("a").addrs.static_int;
    for s in &lab.servers {
        lab.ok(
            s.route(&format!("add prohibit {a_int}/32")),
            "prohibit route",
        );
    }
    member_state(&lab, "force-offline");
    let r =
        spanlb_lab::wait_until_dbg(
            Duration::from_secs(15),
            "a: VIP not advertised",
            || match lab.vip_advertised("a") {
                Ok(false) => Ok(()),
                other => Err(other),
            },
        );
    lab.ok(r, "a withdraws");
    for d in ["b", "c"] {
        let v = lab.vip_advertised(d);
        lab.check(v == Ok(true), format!("{d} still advertises: {v:?}"));
    }
    let r = lab.wait_nexthops(&["20.1.1.3", "20.1.1.4"], Duration::from_secs(15));
    lab.ok(r, "r1 drops path 1");
    // Every device withdrew path 1 and still announces paths 2 and 3 (A included).
    let want: BTreeSet<(String, String)> = lab
        .all_paths_from(&["a", "b", "c"])
        .into_iter()
        .filter(|(_, nh)| nh != "20.1.1.2")
        .collect();
    let r = lab.wait_vip_paths(&want, Duration::from_secs(15));
    lab.ok(r, "path 1 withdrawn by every device, paths 2 and 3 by none");
    let p = lab.ok(lab.placement(), "placement");
    lab.check(
        p.get("tg-1").cloned().flatten().as_deref() == Some("a"),
        format!("tg-1 should stay on a: {p:?}"),
    );
    println!(
        "members down for a: r1 next hops {:?}, placement {p:?}",
        lab.r1_nexthops()
    );

    for s in &lab.servers {
        lab.ok(
            s.route(&format!("del prohibit {a_int}/32")),
            "removing the route",
        );
    }
    member_state(&lab, "enable");
    let r = spanlb_lab::wait_until_dbg(Duration::from_secs(15), "a: VIP advertised", || match lab
        .vip_advertised("a")
    {
        Ok(true) => Ok(()),
        other => Err(other),
    });
    lab.ok(r, "a advertises again");
    let r = lab.wait_nexthops(
        &["20.1.1.2", "20.1.1.3", "20.1.1.4"],
        Duration::from_secs(15),
    );
    lab.ok(r, "r1 has path 1 again");
    let r = lab.wait_vip_paths(
        &lab.all_paths_from(&["a", "b", "c"]),
        Duration::from_secs(15),
    );
    lab.ok(r, "every device announces path 1 again");
}

/// Sets every member of the (unmonitored) UDP pool on A to `state`.
fn member_state(lab: &ClusterLab, state: &str) {
    for (_, addr) in SERVERS {
        let m = format!("{addr}:{SERVER_UDP_PORT}");
        let r = lab.lbctl("a", &["member", "dns", &m, state]);
        lab.ok(r, &format!("lbctl member dns {m} {state}"));
    }
}
