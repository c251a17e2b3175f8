//! The seed's three-device cluster as a demo (the README's main job): builds the L2 cluster
//! lab (FRR router r1, devices A, B, C running bgpd + lbd in one device group, servers
//! s1–s3), shows r1's ECMP route for the VIP and each device's traffic groups, spreads 300
//! client connections, then hangs B (`kill -STOP`) under load, shows the failover of tg-2,
//! resumes B and shows the failback.
//!
//! Ends the failover part with exactly one line
//! `failover: tg-2 B->C gap_ms=N failed_connections=M disturbed_flows_on_survivors=K`.
//! Exit status 1 if something failed. `--keep` leaves the lab running.

use std::time::{Duration, Instant};

use spanlb_tests::cluster::{ClusterLab, ClusterOptions, TOOLS};
use spanlb_tests::topology::{self, VIP};
use spanlb_tests::traffic::{per_device, short_connections, LongLived, Prober};

type Res<T> = Result<T, String>;

fn main() {
    let keep = std::env::args().any(|a| a == "--keep");
    if let Err(e) = spanlb_lab::require_root_and_tools(&TOOLS) {
        eprintln!("ecmp-seed: {e}");
        std::process::exit(1);
    }
    let mut lab = match ClusterLab::build("ecmp_seed", ClusterOptions::default()) {
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
    println!("   VIP {VIP}: tcp/80 -> servers :8080, udp/53 -> servers :5353 (SNAT automap)");
    lab.wait_steady(Duration::from_secs(60))?;
    println!(
        "\n== steady state after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    println!("\n== r1: show bgp ipv4 unicast {VIP}");
    print!(
        "{}",
        lab.frr
            .vtysh(&format!("show bgp ipv4 unicast {VIP}"))
            .map_err(|e| e.to_string())?
    );
    let nh = lab.r1_nexthops();
    println!(
        "ecmp: {VIP}/32 via {} next hops ({}) in r1's kernel, {:.1} s after start",
        nh.len(),
        nh.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
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

    println!("\n== hang B under load");
    let ll = LongLived::open(&lab.client, 30, &["a", "c"])?;
    let llb = LongLived::open(&lab.client, 6, &["b"])?;
    println!("   long-lived flows: {} (+6 through B)", ll.summary());
    let mut prober =
        Prober::start(&lab.client, Duration::from_secs(60)).map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(500));
    let nh_before = lab.r1_nexthops();
    let event = Instant::now();
    lab.signal_device("b", libc::SIGSTOP)
        .map_err(|e| e.to_string())?;
    println!("   kill -STOP B's bgpd and lbd; prober: a new connection every 10 ms");
    let owner = spanlb_lab::wait_until_dbg(Duration::from_secs(10), "tg-2 taken over", || {
        let p = lab.placement()?;
        match p.get("tg-2").cloned().flatten() {
            Some(d) if d != "b" => Ok(d),
            other => Err(format!("{other:?}")),
        }
    })
    .map_err(|e| e.to_string())?;
    let took = event.elapsed();
    std::thread::sleep(Duration::from_millis(2500));
    prober.stop();
    let st = prober.stats(event);
    let disturbed = ll.disturbed(&["a", "c"]);
    let nh_after = lab.r1_nexthops();
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
        "   flows that went through B: {} of {} reset or timed out (tg-2 moved to {} without \
         their state: connection mirroring is still to come)",
        llb.disturbed(&[]).len(),
        llb.flows.len(),
        up(&owner)
    );
    for d in ["a", "c"] {
        println!("\n== {}: lbctl show traffic-groups", up(d));
        print!("{}", lab.lbctl_text(d, &["show", "traffic-groups"]));
    }
    println!(
        "\nfailover: tg-2 B->{} gap_ms={} failed_connections={} disturbed_flows_on_survivors={}",
        up(&owner),
        st.gap_ms,
        st.failed,
        disturbed.len()
    );
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

    println!("\n== resume B (kill -CONT): tg-2 fails back after the failback delay");
    let event = Instant::now();
    lab.signal_device("b", libc::SIGCONT)
        .map_err(|e| e.to_string())?;
    lab.wait_placement(
        &[("tg-1", "a"), ("tg-2", "b"), ("tg-3", "c")],
        Duration::from_secs(20),
    )?;
    println!("   tg-2 back on B after {} ms", event.elapsed().as_millis());
    std::thread::sleep(Duration::from_millis(1000));
    let answers = short_connections(&lab.client, 60).map_err(|e| e.to_string())?;
    println!(
        "   60 new connections by device: {:?}",
        per_device(&answers)
    );
    println!(
        "   long-lived flows through A and C: {} disturbed of {}",
        ll.disturbed(&["a", "c"]).len(),
        ll.flows.len()
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
