//! Routed mode (DESIGN.md §2): no shared external segment; each device also announces its
//! traffic groups' floating external self IPs as /32s and r1 resolves the VIP's next hops
//! recursively. After a device dies its traffic group moves to the next-active device, but
//! FRR collapses the recursive next hops to distinct device addresses (3 → 2), so the kernel
//! re-hashes flows: the disruption on surviving devices is measured and printed, not
//! asserted to be zero. (Linux selects among multipath next hops by hash threshold: when the
//! removed next hop is the middle one of three, as b's is here, the survivors' hash ranges
//! only grow and their flows stay; removing the first one would move part of the second's.)

use std::time::{Duration, Instant};

use spanlb_tests::cluster::{prereqs, ClusterLab, ClusterOptions};
use spanlb_tests::traffic::{per_device, short_connections, LongLived};

const T: Duration = Duration::from_secs(45);

#[test]
fn routed_mode_fails_over_and_measures_the_rehash() {
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
        LongLived::open(&lab.client, 30, &["a", "c"]),
        "long-lived A/C",
    );
    println!("long-lived flows: {}", ll.summary());

    let event = Instant::now();
    lab.ok(lab.signal_device("b", libc::SIGKILL), "kill -9 b");
    let r = lab.wait_placement(&[("tg-2", "c")], Duration::from_secs(10));
    lab.ok(r, "tg-2 moves to c");
    let took = event.elapsed();
    let a = lab.device("a").static_ext.clone();
    let c = lab.device("c").static_ext.clone();
    let r = lab.wait_nexthops(&[&a, &c], Duration::from_secs(20));
    lab.ok(r, "r1 converges on a and c");
    let converged = event.elapsed();
    println!(
        "routed mode: r1 kernel route after the failover\n{}",
        route(&lab)
    );
    std::thread::sleep(Duration::from_millis(2500));
    let disturbed = ll.disturbed(&["a", "c"]);
    println!(
        "routed mode: tg-2 on c after {} ms, r1 converged after {} ms",
        took.as_millis(),
        converged.as_millis()
    );
    println!(
        "routed mode: disturbed_flows_on_survivors={} of {}",
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
