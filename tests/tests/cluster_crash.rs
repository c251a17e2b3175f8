//! Issue 11: a device that leaves changes nothing for the router or for the flows of the
//! devices that stay. Every device announces every traffic group's path (ADD-PATH id k, next
//! hop Ek), so r1 holds each path from three neighbours and installs one nexthop group of the
//! three floating addresses. Killing a device's lbd (bgpd then withdraws lbd's routes), or
//! both its daemons (the BGP session closes), removes duplicates only: r1's kernel route for
//! the VIP — its nexthop group and next hops — does not change at all (an `ip monitor` on r1
//! sees no event for it), and no long-lived flow through a surviving device is disturbed. A
//! crash of the first or the last of r1's three next hops is what used to re-spread Linux's
//! hash ranges; the test crashes A (lbd only) and then C (both daemons), each restarted
//! afterwards, with r1 hashing the five-tuple.

use std::time::{Duration, Instant};

use spanlb_tests::chaos::RouteWatch;
use spanlb_tests::cluster::{prereqs, ClusterLab, ClusterOptions, Daemon};
use spanlb_tests::mirror::five_tuple_hash;
use spanlb_tests::traffic::LongLived;

const T: Duration = Duration::from_secs(45);

#[test]
fn a_crashed_device_changes_nothing_for_the_router_or_the_survivors() {
    if !prereqs() {
        return;
    }
    let lab = ClusterLab::build("cluster_crash", ClusterOptions::default()).expect("building");
    five_tuple_hash(&lab);
    let r = lab.wait_steady(T);
    lab.ok(r, "steady state");
    let every = lab.all_paths_from(&["a", "b", "c"]);
    let r = lab.wait_vip_paths(&every, T);
    lab.ok(r, "r1 has every path from every device");
    println!(
        "r1 BGP table: {} paths ({} neighbours x 3 next hops)\nr1 kernel: {}",
        every.len(),
        3,
        lab.r1_route()
    );
    let watch = lab.ok(RouteWatch::start(&lab.r1), "route monitor");
    let nexthops = lab.r1_nexthops();
    lab.check(
        nexthops.len() == 3,
        format!("three next hops: {}", watch.start),
    );

    let mut lines = Vec::new();
    for (victim, daemons) in [
        ("a", &[Daemon::Lbd][..]),
        ("c", &[Daemon::Bgpd, Daemon::Lbd][..]),
    ] {
        let others: Vec<&str> = ["a", "b", "c"]
            .into_iter()
            .filter(|d| *d != victim)
            .collect();
        let flows = lab.ok(
            LongLived::open(&lab.client, 24, &["a", "b", "c"]),
            "long-lived flows",
        );
        std::thread::sleep(Duration::from_millis(300));
        let t0 = Instant::now();
        for d in daemons {
            lab.ok(
                lab.signal_daemon(victim, *d, libc::SIGKILL),
                "killing a daemon",
            );
        }
        let tg = format!("tg-{}", lab.device(victim).addrs.tg);
        let r = lab.wait_moved_off(&tg, victim, Duration::from_secs(10));
        let to = lab.ok(r, "the victim's traffic group taken over");
        let took = t0.elapsed();
        // r1 keeps the paths of the devices that stay, and loses the victim's.
        let r = lab.wait_vip_paths(&lab.all_paths_from(&others), Duration::from_secs(15));
        lab.ok(r, "r1 has every path from the other two");
        std::thread::sleep(Duration::from_millis(1500));
        let survivors = flows.disturbed(&others);
        let through: usize = others.iter().map(|d| flows.through(d).len()).sum();
        lab.check(
            survivors.is_empty(),
            format!("flows through {others:?} disturbed: {survivors:?}"),
        );
        lab.ok(lab.start_device(victim), "restarting");
        let r = lab.wait_steady(T);
        lab.ok(r, "steady again");
        let r = lab.wait_vip_paths(&every, T);
        lab.ok(r, "every path from every device again");
        let survivors_after = flows.disturbed(&others);
        lab.check(
            survivors_after.is_empty(),
            format!("flows through {others:?} disturbed by the return: {survivors_after:?}"),
        );
        let killed: Vec<&str> = daemons.iter().map(|d| d.name()).collect();
        lines.push(format!(
            "{victim}: killed {} -> {tg} on {to} after {} ms; survivor flows disturbed 0/{through}; \
             flows through {victim} lost {}/{}",
            killed.join("+"),
            took.as_millis(),
            flows.disturbed(&[victim]).len(),
            flows.through(victim).len()
        ));
    }
    let events = watch.events();
    watch.stop();
    for l in &lines {
        println!("{l}");
    }
    println!("r1 kernel route events for the VIP: {}", events.len());
    lab.check(
        events.is_empty(),
        format!("r1's route for the VIP changed: {events:#?}"),
    );
    let end = lab.r1_route();
    lab.check(
        end == watch.start,
        format!("r1's route changed: {} -> {end}", watch.start),
    );

    // The watch sees a change when there is one: with every lbd gone, every path goes.
    let check = lab.ok(RouteWatch::start(&lab.r1), "route monitor");
    for d in ["a", "b", "c"] {
        lab.ok(
            lab.signal_daemon(d, Daemon::Lbd, libc::SIGKILL),
            "killing lbd",
        );
    }
    let r = spanlb_lab::wait_until_dbg(Duration::from_secs(10), "r1 drops the VIP", || {
        let n = lab.r1_nexthops();
        if n.is_empty() {
            Ok(())
        } else {
            Err(n)
        }
    });
    lab.ok(r, "r1 drops the VIP when no device announces it");
    std::thread::sleep(Duration::from_millis(200));
    let seen = check.events();
    lab.check(!seen.is_empty(), "the route watch saw the VIP's route go");
}
