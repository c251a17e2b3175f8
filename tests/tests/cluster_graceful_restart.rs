//! Issue 14, test 2: graceful restart (RFC 4724) with FRR as the helper. Device a's bgpd is
//! SIGKILLed (a crash: no NOTIFICATION, the kernel closes its TCP session) and started again
//! while its lbd keeps serving. r1 keeps a's routes as stale; the new bgpd re-establishes with
//! the Restart State bit, lbd announces its routes again, bgpd sends End-of-RIB, and r1's
//! kernel route for the VIP never changes (`ip monitor route` in r1 sees nothing for it) and
//! new connections keep succeeding.

use std::time::{Duration, Instant};

use serde_json::Value;
use spanlb_tests::cluster::{prereqs, ClusterLab, ClusterOptions, Daemon};
use spanlb_tests::topology::VIP;
use spanlb_tests::traffic::Prober;

const T: Duration = Duration::from_secs(45);
/// How long a's bgpd stays dead.
const DOWN: Duration = Duration::from_secs(2);

#[test]
fn a_killed_bgpd_restarts_without_changing_r1s_route() {
    if !prereqs() {
        return;
    }
    // Routed mode: a alone announces tg-1's floating address (Ek/32), which the VIP's path
    // via tg-1 resolves over; a bgpd that goes away takes it, and r1's route changes.
    let opts = ClusterOptions {
        routed: true,
        graceful_restart: true,
        ..ClusterOptions::default()
    };
    let lab = ClusterLab::build("cluster_gr", opts).expect("building");
    let r = lab.wait_steady(T);
    lab.ok(r, "steady state");
    let a = lab.device("a").static_ext.clone();
    let neighbor = |lab: &ClusterLab| -> Value {
        lab.frr
            .vtysh_json(&format!("show bgp neighbors {a} json"))
            .map(|v| v[a.as_str()].clone())
            .unwrap_or(Value::Null)
    };
    let n = neighbor(&lab);
    println!("r1's view of a before: {}", n["gracefulRestartInfo"]);
    lab.check(
        n["gracefulRestartInfo"]["remoteGrMode"] == "Restart",
        format!("r1 did not receive a graceful restart capability from a: {n}"),
    );
    let first = lab.bgpctl("a", &["show", "neighbors"]);
    lab.check(
        first["neighbors"][0]["end_of_rib_sent"]
            .as_array()
            .is_some_and(|f| !f.is_empty()),
        format!("a's bgpd sent no End-of-RIB at its first start: {first}"),
    );
    let before = lab.r1.ip(&["-4", "route", "show", VIP]).unwrap_or_default();
    let nh_before = lab.r1_nexthops();
    println!("r1 kernel route before:\n{before}");

    let sessions = n["connectionsEstablished"].as_u64().unwrap_or(0);
    // Every change of r1's IPv4 routes from now on (line-buffered: the monitor is killed).
    let monitor = lab.ok(
        lab.r1.spawn_cmd(
            {
                let mut c = std::process::Command::new("stdbuf");
                c.args(["-oL", "ip", "-4", "monitor", "route"]);
                c
            },
            "r1-ip-monitor.log",
        ),
        "ip monitor route in r1",
    );
    let mut prober = lab.ok(
        Prober::start(&lab.client, Duration::from_secs(30)),
        "prober",
    );
    std::thread::sleep(Duration::from_millis(500));

    let event = Instant::now();
    lab.ok(
        lab.signal_daemon("a", Daemon::Bgpd, libc::SIGKILL),
        "kill -9 a's bgpd",
    );
    // Down for a while, as during an upgrade: long enough for r1 to act on the loss.
    std::thread::sleep(DOWN);
    lab.ok(lab.start_device("a"), "start a's bgpd again");
    let r = spanlb_lab::wait_until_dbg(
        Duration::from_secs(30),
        "r1 re-established with a and got its End-of-RIB",
        || {
            let n = neighbor(&lab);
            let eor = &n["gracefulRestartInfo"]["ipv4Unicast"]["endOfRibStatus"]["endOfRibRecv"];
            let again = n["connectionsEstablished"].as_u64().unwrap_or(0) > sessions;
            if n["bgpState"] == "Established" && again && eor == true {
                Ok(n)
            } else {
                Err(n.to_string())
            }
        },
    );
    let n = lab.ok(r, "r1 takes a back");
    let took = event.elapsed();
    println!(
        "graceful restart: r1 re-established with a and received End-of-RIB {} ms after the kill; {}",
        took.as_millis(),
        n["gracefulRestartInfo"]
    );
    let st = lab.bgpctl("a", &["show", "neighbors"]);
    let nb = &st["neighbors"][0];
    lab.check(
        nb["state"] == "established"
            && nb["end_of_rib_sent"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "ipv4-unicast")),
        format!("a's new bgpd: {st}"),
    );
    lab.check(
        nb["prefixes_advertised"].as_u64().unwrap_or(0) >= 1,
        format!("a's new bgpd announces nothing: {st}"),
    );
    // Let FRR drop what stayed stale (nothing should) before looking.
    std::thread::sleep(Duration::from_millis(1500));
    prober.stop();
    let probe = prober.stats(event);
    monitor.kill();
    let log = std::fs::read_to_string(lab.lab.dir().join("r1-ip-monitor.log")).unwrap_or_default();
    let vip_changes: Vec<&str> = log.lines().filter(|l| l.contains(VIP)).collect();
    let after = lab.r1.ip(&["-4", "route", "show", VIP]).unwrap_or_default();
    println!(
        "graceful restart: r1 route changes for {VIP}: {}; new connections {probe:?}",
        vip_changes.len()
    );
    lab.check(
        vip_changes.is_empty(),
        format!("r1's kernel route for {VIP} changed during the restart: {vip_changes:?}"),
    );
    lab.check(
        after == before && lab.r1_nexthops() == nh_before,
        format!("r1's route before:\n{before}\nafter:\n{after}"),
    );
    // End-of-RIB ended the restart at r1: nothing of a's is left marked stale.
    let table = lab
        .frr
        .vtysh("show bgp ipv4 unicast json")
        .unwrap_or_default();
    lab.check(
        !table.replace(' ', "").contains("\"stale\":true"),
        format!("r1 still holds stale paths after a's End-of-RIB:\n{table}"),
    );
    lab.check(
        probe.failed == 0,
        format!(
            "{} new connections failed: {:?}",
            probe.failed,
            prober.errors(3)
        ),
    );
}
