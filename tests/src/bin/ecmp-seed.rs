//! The seed's three-device ECMP lab as a demo (the README's main job): builds the namespaces,
//! starts FRR on r1 and bgpd on A, B and C, and prints r1's ECMP route for the VIP.
//! `--keep` leaves the lab running for exploration.

use std::time::{Duration, Instant};

use spanlb_tests::seed::{SeedLab, SeedOptions, VIP};

fn main() {
    let keep = std::env::args().any(|a| a == "--keep");
    if let Err(e) =
        spanlb_lab::require_root_and_tools(&["/usr/lib/frr/zebra", "/usr/lib/frr/bgpd", "vtysh"])
    {
        eprintln!("ecmp-seed: {e}");
        std::process::exit(1);
    }
    if let Err(e) = run(keep) {
        eprintln!("ecmp-seed: {e}");
        std::process::exit(1);
    }
}

fn run(keep: bool) -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let mut lab = SeedLab::build("ecmp_seed", SeedOptions::default())?;
    println!(
        "== lab {}: r1 (FRR, AS 65000, 20.1.1.1) + devices A B C (bgpd, AS 65001)",
        lab.lab.prefix()
    );
    for d in &lab.devices {
        println!(
            "   {}: static {}  floating {} (tg-{})  announces {VIP} path-id {} next-hop {}",
            d.name.to_uppercase(),
            d.ext,
            d.floating,
            d.tg,
            d.tg,
            d.floating
        );
    }
    lab.start_all()?;
    lab.wait_sessions(Duration::from_secs(30))
        .map_err(|e| format!("{e}\n{}", lab.dump()))?;
    let nh = lab
        .wait_nexthops(
            VIP,
            &["20.1.1.2", "20.1.1.3", "20.1.1.4"],
            Duration::from_secs(30),
        )
        .map_err(|e| format!("{e}\n{}", lab.dump()))?;
    println!("\n== r1: show bgp summary");
    print!("{}", lab.frr.vtysh("show bgp ipv4 unicast summary")?);
    println!("\n== r1: show bgp ipv4 unicast {VIP}");
    print!(
        "{}",
        lab.frr.vtysh(&format!("show bgp ipv4 unicast {VIP}"))?
    );
    println!("\n== r1 kernel: ip route show {VIP}");
    print!("{}", lab.r1.ip(&["route", "show", VIP])?);
    println!("\n== device A: bgpctl routes --adj-rib-out");
    let out = std::process::Command::new(spanlb_lab::cargo_bin("bgpctl"))
        .arg("--socket")
        .arg(&lab.devices[0].socket)
        .args(["routes", "--adj-rib-out"])
        .output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    println!(
        "\necmp: {VIP} via {} next hops ({}) in r1's kernel, {:.1} s after start",
        nh.len(),
        nh.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        t0.elapsed().as_secs_f64()
    );
    if keep {
        lab.lab.keep();
        println!(
            "lab kept: enter with `ip netns exec {}-r1 bash`; vtysh --vty_socket {}",
            lab.lab.prefix(),
            lab.frr.dir().display()
        );
    }
    Ok(())
}
