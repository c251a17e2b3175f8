//! Issue 11: what a cut HA link does without a second failover path (the README says it: the
//! group splits, and heals to the newer claims when the link comes back). Every device loses
//! every peer's heartbeats, so each takes every traffic group (split brain: each announces the
//! floating addresses, the router sends each traffic group's flows to whichever device sent the
//! last gratuitous ARP). When the link comes back, the newer claims hold, the other devices
//! release at once, and auto-failback brings every traffic group home after the failback
//! delay; all devices agree again and r1's route never changed. The flows disturbed are
//! counted and printed, not asserted (in runs here: all of them — every device announced every
//! floating address, so the router's neighbour entries flapped). With a second path (the chaos
//! test's lab) nothing moves.

use std::time::{Duration, Instant};

use spanlb_tests::chaos::RouteWatch;
use spanlb_tests::cluster::{prereqs, ClusterLab, ClusterOptions};
use spanlb_tests::mirror::five_tuple_hash;
use spanlb_tests::traffic::LongLived;

#[test]
fn a_cut_ha_link_without_a_second_path_splits_the_group_then_heals() {
    if !prereqs() {
        return;
    }
    let lab = ClusterLab::build("cluster_split", ClusterOptions::default()).expect("building");
    five_tuple_hash(&lab);
    let r = lab.wait_steady(Duration::from_secs(45));
    lab.ok(r, "steady state");
    let watch = lab.ok(RouteWatch::start(&lab.r1), "route monitor");
    let flows = lab.ok(
        LongLived::open(&lab.client, 30, &["a", "b", "c"]),
        "long-lived flows",
    );
    lab.ok(lab.set_ha_link(false), "cutting the HA segment");
    let cut = Instant::now();
    // Every device takes every traffic group.
    let r = spanlb_lab::wait_until_dbg(Duration::from_secs(10), "every device holds all", || {
        let mut held = Vec::new();
        for d in ["a", "b", "c"] {
            let here = lab
                .traffic_groups(d)?
                .iter()
                .filter(|t| t.state == "active")
                .count();
            held.push((d, here));
        }
        if held.iter().all(|(_, n)| *n == 3) {
            Ok(())
        } else {
            Err(format!("{held:?}"))
        }
    });
    lab.ok(r, "split brain while the HA segment is cut");
    let split_after = cut.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    lab.ok(lab.set_ha_link(true), "restoring the HA segment");
    let restored = Instant::now();
    let home = [("tg-1", "a"), ("tg-2", "b"), ("tg-3", "c")];
    let r = lab.wait_placement(&home, Duration::from_secs(20));
    lab.ok(r, "every traffic group home again");
    let healed = restored.elapsed();
    lab.ok(lab.placement(), "every device agrees");
    std::thread::sleep(Duration::from_millis(500));
    let events = watch.events();
    println!(
        "HA segment cut without a second path: every device held every traffic group after {} ms; \
         restored: home again after {} ms (failback delay 2 s); long-lived flows disturbed: {} of {} \
         ({}); r1's route events: {}",
        split_after.as_millis(),
        healed.as_millis(),
        flows.disturbed(&[]).len(),
        flows.flows.len(),
        flows.summary(),
        events.len()
    );
    lab.check(events.is_empty(), format!("r1's route changed: {events:?}"));
}
