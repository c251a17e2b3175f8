//! The seed's three-device cluster as a demo (the README's main job): builds the L2 cluster
//! lab (FRR router r1 hashing the five-tuple, devices A, B, C running bgpd + lbd in one device
//! group with connection and persistence mirroring on, servers s1–s3), shows r1's ECMP route
//! for the VIP (every device announces every traffic group's path) and each device's traffic
//! groups, spreads 300 client connections, makes persisted clients and idle connections
//! through B, then hangs B (`kill -STOP`) under load and shows the failover of tg-2: the
//! idle connections through B carry on through C, every persisted client keeps its member.
//! Then it resumes B (failback), kills A's lbd (`kill -9`) and counts the flows through B and
//! C that it disturbed.
//!
//! Ends with exactly one line
//! `failover: tg-2 B->C gap_ms=N failed_connections=M disturbed_flows_on_survivors=K flows_through_B_kept=I/I persistence_kept=P/P`.
//! Exit status 1 if something failed. `--keep` leaves the lab running.

use std::time::{Duration, Instant};

use spanlb_tests::chaos::{check_persistence, persist_clients, RouteWatch};
use spanlb_tests::cluster::{ClusterLab, ClusterOptions, Daemon, TOOLS};
use spanlb_tests::mirror::{add_client_addrs, five_tuple_hash, receiver, src_persistence_opts};
use spanlb_tests::topology::{self, VIP};
use spanlb_tests::traffic::{per_device, short_connections, IdleFlows, LongLived, Prober};

type Res<T> = Result<T, String>;

fn main() {
    let keep = std::env::args().any(|a| a == "--keep");
    if let Err(e) = spanlb_lab::require_root_and_tools(&TOOLS) {
        eprintln!("ecmp-seed: {e}");
        std::process::exit(1);
    }
    let opts = ClusterOptions {
        web_extra: "persistence = \"src\"\nmirror = true\nidle_timeout = \"600s\"".into(),
        ..src_persistence_opts()
    };
    let mut lab = match ClusterLab::build("ecmp_seed", opts) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ecmp-seed: building the lab: {e}");
            std::process::exit(1);
        }
    };
    let r = run(&lab);
    if keep {
        if let Err(e) = lab.keep() {
            eprintln!("ecmp-seed: keeping the lab: {e}");
        }
        println!(
            "\nlab kept: enter with `ip netns exec {}-r1 bash`; vtysh --vty_socket {}; lbctl --socket {}",
            lab.lab.prefix(),
            lab.frr.dir().display(),
            lab.device("a").lbd_socket.display()
        );
    }
    if let Err(e) = r {
        eprintln!("ecmp-seed: {e}{}", lab.dump());
        drop(lab);
        std::process::exit(1);
    }
}

fn up(d: &str) -> String {
    d.to_uppercase()
}

/// Persisted clients the demo makes, and idle connections through B.
const CLIENTS: usize = 60;
const IDLE: usize = 20;

fn run(lab: &ClusterLab) -> Res<()> {
    let t0 = Instant::now();
    println!("== lab {} ({})", lab.lab.prefix(), lab.lab.dir().display());
    println!("   client {} -> r1 (FRR, AS {}) ==ext 20.1.1.0/24== A B C (bgpd+lbd, AS {}) ==int 10.1.1.0/24== s1 s2 s3",
        topology::CLIENT, topology::ROUTER_AS, topology::DEVICE_AS);
    for d in topology::DEVICES {
        println!(
            "   {}: static ext {} int {} ha {} | tg-{} floating ext {} int {}",
            up(d.name),
            d.static_ext,
            d.static_int,
            d.ha,
            d.tg,
            d.floating_ext,
            d.floating_int
        );
    }
    println!(
        "   VIP {VIP}: tcp/80 -> servers :8080 (source-address persistence, connection \
         mirroring), udp/53 -> servers :5353 (SNAT automap); mirroring: persistence to every \
         device, connections to the next-active"
    );
    lab.wait_steady(Duration::from_secs(60))?;
    five_tuple_hash(lab);
    add_client_addrs(lab, CLIENTS);
    println!(
        "\n== steady state after {:.1} s (r1 hashes the five-tuple: a client's connections reach every device)",
        t0.elapsed().as_secs_f64()
    );
    let every = lab.all_paths_from(&["a", "b", "c"]);
    lab.wait_vip_paths(&every, Duration::from_secs(30))?;
    println!(
        "\n== r1: show bgp ipv4 unicast {VIP} (every device announces every traffic group's path)"
    );
    print!(
        "{}",
        lab.frr
            .vtysh(&format!("show bgp ipv4 unicast {VIP}"))
            .map_err(|e| e.to_string())?
    );
    let nh = lab.r1_nexthops();
    println!(
        "ecmp: {VIP}/32 via {} next hops ({}) in r1's kernel, from {} paths, {:.1} s after start",
        nh.len(),
        nh.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        every.len(),
        t0.elapsed().as_secs_f64()
    );
    println!("\n== r1 kernel: ip route show {VIP}");
    print!(
        "{}",
        lab.r1
            .ip(&["route", "show", VIP])
            .map_err(|e| e.to_string())?
    );
    for d in ["a", "b", "c"] {
        println!("\n== {}: lbctl show traffic-groups", up(d));
        print!("{}", lab.lbctl_text(d, &["show", "traffic-groups"]));
    }

    let answers = short_connections(&lab.client, 300).map_err(|e| e.to_string())?;
    println!(
        "\n== 300 client connections to {VIP}:80, by device (SNAT source seen by the servers)"
    );
    for (d, n) in per_device(&answers) {
        println!("   {}: {n}", d.map_or("failed/unknown".to_string(), up));
    }

    println!("\n== persisted clients and idle connections");
    let clients = persist_clients(lab, CLIENTS);
    let idle = IdleFlows::open(&lab.client, IDLE, "b")?;
    // B mirrors the idle connections to C once they have been quiet for 100 ms.
    let mirrored = spanlb_lab::wait_until_dbg(
        Duration::from_secs(15),
        "c holds b's idle connections",
        || {
            let m = lab.lbctl("c", &["show", "mirroring"])?;
            let r = receiver(&m, "tg-2");
            let tcp = r["records"]["tcp_connections"].as_u64().unwrap_or(0);
            if r["in_sync"] == true && tcp >= IDLE as u64 {
                Ok(tcp)
            } else {
                Err(format!("{r}"))
            }
        },
    )
    .map_err(|e| e.to_string())?;
    println!(
        "   {IDLE} idle connections through B; C holds {mirrored} of B's connections (TCP_REPAIR state)"
    );
    println!("\n== B: lbctl show mirroring");
    print!("{}", lab.lbctl_text("b", &["show", "mirroring"]));

    println!("\n== hang B under load");
    let ll = LongLived::open(&lab.client, 30, &["a", "c"])?;
    println!("   long-lived flows: {}", ll.summary());
    let watch = RouteWatch::start(&lab.r1).map_err(|e| e.to_string())?;
    let mut prober =
        Prober::start(&lab.client, Duration::from_secs(60)).map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(500));
    let nh_before = lab.r1_nexthops();
    let event = Instant::now();
    lab.signal_device("b", libc::SIGSTOP)
        .map_err(|e| e.to_string())?;
    println!("   kill -STOP B's bgpd and lbd; prober: a new connection every 10 ms");
    let owner = lab
        .wait_moved_off("tg-2", "b", Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let took = event.elapsed();
    std::thread::sleep(Duration::from_millis(2500));
    prober.stop();
    let st = prober.stats(event);
    let disturbed = ll.disturbed(&["a", "c"]);
    let nh_after = lab.r1_nexthops();
    let idle_lost = idle.exchange(&lab.client)?;
    let idle_kept = IDLE - idle_lost.len();
    let (checks, lost) = check_persistence(lab, &clients);
    let kept = checks - lost.len();
    println!(
        "   tg-2 active on {} after {} ms (as seen by every live device)",
        up(&owner),
        took.as_millis()
    );
    println!("   r1 next hops before {nh_before:?}, after {nh_after:?} (unchanged: the path of tg-2 still points at 20.1.1.3)");
    println!(
        "   r1 ARP 20.1.1.3 -> {} ({}'s ext0)",
        lab.r1_neigh("20.1.1.3").unwrap_or_default(),
        lab.r1_neigh_device("20.1.1.3")
            .map(up)
            .unwrap_or("?".into())
    );
    println!(
        "   prober: {} attempts, {} failed; long-lived flows: {}",
        st.attempts,
        st.failed,
        ll.summary()
    );
    println!(
        "   idle connections through B: {idle_kept} of {IDLE} carry on through {} (rebuilt from B's mirrored TCP state){}",
        up(&owner),
        if idle_lost.is_empty() { String::new() } else { format!("; lost: {idle_lost:?}") }
    );
    println!(
        "   persisted clients: {kept} of {checks} connections (two per client, any path) reached their member{}",
        if lost.is_empty() { String::new() } else { format!("; lost: {lost:?}") }
    );
    for d in ["a", "c"] {
        println!("\n== {}: lbctl show traffic-groups", up(d));
        print!("{}", lab.lbctl_text(d, &["show", "traffic-groups"]));
    }
    let mut problems = Vec::new();
    if nh_after != nh_before {
        problems.push(format!(
            "r1 next hops changed {nh_before:?} -> {nh_after:?}"
        ));
    }
    if st.gap_ms >= 1000 {
        problems.push(format!("gap {} ms", st.gap_ms));
    }
    if !disturbed.is_empty() {
        problems.push(format!("disturbed flows {disturbed:?}"));
    }
    if !idle_lost.is_empty() {
        problems.push(format!("idle connections through B lost: {idle_lost:?}"));
    }
    if !lost.is_empty() {
        problems.push(format!("persisted clients lost: {lost:?}"));
    }

    println!("\n== resume B (kill -CONT): tg-2 fails back after the failback delay, once B's mirror is in sync");
    let event = Instant::now();
    lab.signal_device("b", libc::SIGCONT)
        .map_err(|e| e.to_string())?;
    lab.wait_placement(
        &[("tg-1", "a"), ("tg-2", "b"), ("tg-3", "c")],
        Duration::from_secs(20),
    )?;
    println!("   tg-2 back on B after {} ms", event.elapsed().as_millis());
    println!("\n== B: lbctl show traffic-groups");
    print!("{}", lab.lbctl_text("b", &["show", "traffic-groups"]));

    println!("\n== kill -9 A's lbd (its bgpd withdraws what lbd announced; B and C still announce every path)");
    drop(ll);
    let ll = LongLived::open(&lab.client, 30, &["b", "c"])?;
    let lla = LongLived::open(&lab.client, 6, &["a"])?;
    std::thread::sleep(Duration::from_millis(300));
    let event = Instant::now();
    lab.signal_daemon("a", Daemon::Lbd, libc::SIGKILL)
        .map_err(|e| e.to_string())?;
    let owner_a = lab
        .wait_moved_off("tg-1", "a", Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let took_a = event.elapsed();
    std::thread::sleep(Duration::from_millis(2000));
    let disturbed_a = ll.disturbed(&["b", "c"]);
    println!(
        "   tg-1 active on {} after {} ms; flows through B and C: {} disturbed of {}; flows through A: {} of {} reset (lbd's sockets closed with it)",
        up(&owner_a),
        took_a.as_millis(),
        disturbed_a.len(),
        ll.flows.len(),
        lla.disturbed(&[]).len(),
        lla.flows.len()
    );
    lab.start_device("a").map_err(|e| e.to_string())?;
    lab.wait_placement(
        &[("tg-1", "a"), ("tg-2", "b"), ("tg-3", "c")],
        Duration::from_secs(30),
    )?;
    let events = watch.events();
    println!(
        "   A's lbd restarted: tg-1 back on A after {} ms; r1's kernel route for the VIP changed {} times in all of this",
        event.elapsed().as_millis(),
        events.len()
    );
    if !disturbed_a.is_empty() {
        problems.push(format!("flows disturbed by A's crash: {disturbed_a:?}"));
    }
    if !events.is_empty() {
        problems.push(format!("r1's route changed: {events:?}"));
    }
    println!(
        "\nfailover: tg-2 B->{} gap_ms={} failed_connections={} disturbed_flows_on_survivors={} flows_through_B_kept={idle_kept}/{IDLE} persistence_kept={kept}/{checks}",
        up(&owner),
        st.gap_ms,
        st.failed,
        disturbed.len() + disturbed_a.len(),
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
