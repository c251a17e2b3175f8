//! Routed mode (docs/design.md, "ECMP and failover"): no shared external segment; each device also announces its
//! traffic groups' floating external self IPs as /32s and r1 resolves the VIP's next hops
//! recursively. After a device dies its traffic group moves to the next-active device, but
//! FRR collapses the recursive next hops to distinct device addresses (3 → 2), so the kernel
//! re-hashes flows: the disruption on surviving devices is measured and printed, not
//! asserted to be zero. Linux selects among multipath next hops by hash threshold: when the
//! removed next hop is the middle one of three (b), the survivors' hash ranges only grow and
//! their flows stay; when it is the first one (a), the second one's range shifts and part of
//! its flows move to the third device, which does not know them. Both cases run.

use std::time::{Duration, Instant};

use spanlb_tests::cluster::{prereqs, ClusterLab, ClusterOptions};
use spanlb_tests::traffic::{per_device, short_connections, LongLived};

const T: Duration = Duration::from_secs(45);

#[test]
fn routed_mode_fails_over_and_measures_the_rehash() {
    scenario("b", ("tg-2", "c"), ["a", "c"]);
}

#[test]
fn routed_mode_losing_the_first_next_hop_rehashes_survivors() {
    scenario("a", ("tg-1", "b"), ["b", "c"]);
}

/// Kills `victim`'s daemons; its traffic group `moved.0` must go to `moved.1`; counts the
/// disturbed long-lived flows through `survivors`.
fn scenario(victim: &str, moved: (&str, &str), survivors: [&str; 2]) {
    if !prereqs() {
        return;
    }
    let opts = ClusterOptions {
        routed: true,
        ..ClusterOptions::default()
    };
    let lab = ClusterLab::build("cluster_routed", opts).expect("building");
    let r = lab.wait_steady(T);
    lab.ok(r, "steady state (3 recursive next hops)");
    let route = |lab: &ClusterLab| {
        lab.r1
            .ip(&["route", "show", spanlb_tests::topology::VIP])
            .unwrap_or_default()
    };
    println!("routed steady state: r1 kernel route\n{}", route(&lab));
    for d in &lab.devices {
        let out = lab
            .r1
            .ip(&["route", "show", d.addrs.floating_ext])
            .unwrap_or_default();
        lab.check(
            out.contains(&d.static_ext),
            format!(
                "r1 route to {} not via {}: {out}",
                d.addrs.floating_ext, d.static_ext
            ),
        );
    }
    let ll = lab.ok(
        LongLived::open(&lab.client, 30, &survivors),
        "long-lived flows through the survivors",
    );
    println!("long-lived flows: {}", ll.summary());

    let event = Instant::now();
    lab.ok(
        lab.signal_device(victim, libc::SIGKILL),
        "kill -9 the victim",
    );
    let r = lab.wait_placement(&[moved], Duration::from_secs(10));
    lab.ok(r, "the victim's traffic group moves to its next-active");
    let took = event.elapsed();
    let x = lab.device(survivors[0]).static_ext.clone();
    let y = lab.device(survivors[1]).static_ext.clone();
    let r = lab.wait_nexthops(&[&x, &y], Duration::from_secs(20));
    lab.ok(r, "r1 converges on the two survivors");
    let converged = event.elapsed();
    println!(
        "routed mode: r1 kernel route after the failover\n{}",
        route(&lab)
    );
    std::thread::sleep(Duration::from_millis(2500));
    let disturbed = ll.disturbed(&survivors);
    println!(
        "routed mode: {victim} killed, {} on {} after {} ms, r1 converged after {} ms",
        moved.0,
        moved.1,
        took.as_millis(),
        converged.as_millis()
    );
    println!(
        "routed mode ({victim} killed): disturbed_flows_on_survivors={} of {}",
        disturbed.len(),
        ll.flows.len()
    );
    let r = spanlb_lab::wait_until_dbg(Duration::from_secs(15), "new connections succeed", || {
        let answers = short_connections(&lab.client, 30).map_err(|e| e.to_string())?;
        if answers.iter().all(Result::is_ok) {
            Ok(per_device(&answers))
        } else {
            Err(format!("{answers:?}"))
        }
    });
    let spread = lab.ok(r, "new connections after the failover");
    println!("routed mode: new connections per device {spread:?}");
}
