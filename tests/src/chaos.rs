//! The crash and chaos tests on the [`cluster`](crate::cluster) lab: a watch on
//! r1's kernel route for the VIP ([`RouteWatch`]), and the chaos run ([`run`]): rounds of
//! faults (hangs about `dead_after` and longer, killed or terminated daemons and their
//! restart, bgpd restarted alone, a manual failover and back, a cut HA link), each on a random
//! device, with long-lived flows through every device and persisted clients made beforehand.
//! After each round the cluster must be whole again (every traffic group home, every device
//! agreeing, announcing every path and in sync), the flows through the devices not faulted
//! untouched, and every persisted client reaching its member. Rounds are drawn from a seed the
//! run prints (`SPANLB_CHAOS_SEED` repeats a run, `SPANLB_CHAOS_ROUNDS` sets the count).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use spanlb_lab::{Ns, Proc, Result};

use crate::cluster::{ClusterLab, ClusterOptions, Daemon};
use crate::mirror::{add_client_addrs, client_ip, exchange};
use crate::topology::{DEVICES, VIP};
use crate::traffic::{vip_tcp, LongLived};

/// `ip monitor` of r1's routes and nexthop objects for as long as it lives: every change the
/// kernel saw, to tell whether the VIP's route or its nexthop group changed at all.
pub struct RouteWatch {
    proc: Proc,
    /// The VIP's route when the watch started (`ip route show` words).
    pub start: String,
}

impl RouteWatch {
    /// Starts watching in `r1`; `start` is the VIP's route at that moment.
    pub fn start(r1: &Ns) -> Result<RouteWatch> {
        let proc = r1.spawn(
            &["ip", "-timestamp", "monitor", "route", "nexthop"],
            "r1-route-monitor.log",
        )?;
        // Let the monitor subscribe before anything happens.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let start = route_words(r1);
        Ok(RouteWatch { proc, start })
    }

    /// Every event so far that concerns the VIP's route or a nexthop object it uses (by the
    /// ids in `start`, or any nexthop object at all when the route has none).
    pub fn events(&self) -> Vec<String> {
        let ids: Vec<String> = nexthop_ids(&self.start);
        let log = self.proc.log();
        let mut out = Vec::new();
        for l in log.lines() {
            // `ip -timestamp monitor` writes "Timestamp: …" on a line of its own, then the event.
            if l.starts_with("Timestamp:") {
                continue;
            }
            let words: Vec<&str> = l.split_whitespace().collect();
            let about_vip = words.iter().any(|w| *w == VIP || *w == format!("{VIP}/32"));
            let about_nh = words.first() == Some(&"id")
                && words.get(1).is_some_and(|id| ids.iter().any(|x| x == id));
            let deleted_nh = words.first() == Some(&"Deleted")
                && words.get(1) == Some(&"id")
                && words.get(2).is_some_and(|id| ids.iter().any(|x| x == id));
            if about_vip || about_nh || deleted_nh {
                out.push(l.to_string());
            }
        }
        out
    }

    /// Stops the monitor.
    pub fn stop(&self) {
        self.proc.kill();
    }
}

impl Drop for RouteWatch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// r1's route for the VIP, as one line of words.
pub fn route_words(r1: &Ns) -> String {
    r1.ip(&["-4", "route", "show", VIP])
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The nexthop object ids a route line names (`nhid N`), with the members of that group as
/// `ip nexthop` would list them (not resolved here: the group id is what FRR replaces).
fn nexthop_ids(route: &str) -> Vec<String> {
    let w: Vec<&str> = route.split_whitespace().collect();
    w.windows(2)
        .filter(|p| p[0] == "nhid")
        .map(|p| p[1].to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The chaos run

/// How r1 spreads flows over the VIP's next hops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    /// The five-tuple (`fib_multipath_hash_policy` 3, fields 0x37): one client's connections
    /// reach every device.
    FiveTuple,
    /// Linux's default, source and destination address (policy 0): a client stays on one path.
    L3,
}

impl Hash {
    pub fn name(self) -> &'static str {
        match self {
            Hash::FiveTuple => "five-tuple",
            Hash::L3 => "l3",
        }
    }
}

/// What a chaos run does.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub rounds: usize,
    pub seed: u64,
    pub hash: Hash,
    /// Persisted clients (each its own source address).
    pub clients: usize,
    /// Long-lived flows per device per round.
    pub flows_per_device: usize,
}

impl ChaosOptions {
    /// `rounds` unless `SPANLB_CHAOS_ROUNDS` says otherwise; the seed from
    /// `SPANLB_CHAOS_SEED`, else drawn.
    pub fn from_env(rounds: usize, hash: Hash) -> ChaosOptions {
        let env = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        ChaosOptions {
            rounds: env("SPANLB_CHAOS_ROUNDS").map_or(rounds, |r| r as usize),
            seed: env("SPANLB_CHAOS_SEED").unwrap_or_else(|| fastrand::u64(..)),
            hash,
            clients: 60,
            flows_per_device: 5,
        }
    }
}

/// A fault of one round, on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGSTOP of both daemons for this long, then SIGCONT.
    Hang(Duration),
    /// SIGKILL of lbd, restarted after this long.
    KillLbd(Duration),
    /// SIGKILL of both daemons, restarted after this long.
    KillBoth(Duration),
    /// SIGTERM of both daemons at once, restarted after this long.
    TermBoth(Duration),
    /// bgpd alone stopped (SIGTERM) and restarted after this long; lbd keeps running.
    RestartBgpd(Duration),
    /// `lbctl failover` of the device's traffic group to its next-active, then back.
    ManualFailover,
    /// The device's HA link cut for this long (the heartbeats' second path stays).
    CutHa(Duration),
}

impl Fault {
    /// Every kind once, with durations drawn from `rng`.
    pub fn every_kind(rng: &mut fastrand::Rng) -> Vec<Fault> {
        // Hangs of about dead_after (500 ms) and longer ones.
        let hang = [450, 520, 560, 650, 900, 1500, 3000][rng.usize(..7)];
        let pause = |rng: &mut fastrand::Rng| Duration::from_millis(rng.u64(0..=1500));
        vec![
            Fault::Hang(Duration::from_millis(hang)),
            Fault::KillLbd(pause(rng)),
            Fault::KillBoth(pause(rng)),
            Fault::TermBoth(pause(rng)),
            Fault::RestartBgpd(pause(rng)),
            Fault::ManualFailover,
            Fault::CutHa(Duration::from_millis(rng.u64(1000..=3000))),
        ]
    }

    pub fn name(self) -> String {
        let ms = |d: Duration| d.as_millis();
        match self {
            Fault::Hang(d) => format!("hang {}ms", ms(d)),
            Fault::KillLbd(d) => format!("kill-lbd, restart after {}ms", ms(d)),
            Fault::KillBoth(d) => format!("kill-both, restart after {}ms", ms(d)),
            Fault::TermBoth(d) => format!("term-both, restart after {}ms", ms(d)),
            Fault::RestartBgpd(d) => format!("restart-bgpd after {}ms", ms(d)),
            Fault::ManualFailover => "manual-failover-and-back".into(),
            Fault::CutHa(d) => format!("cut-ha {}ms", ms(d)),
        }
    }
}

/// One round's figures.
#[derive(Debug, Clone, Default)]
pub struct RoundResult {
    pub converged: Option<Duration>,
    pub survivor_flows: usize,
    pub survivor_disturbed: Vec<(&'static str, String)>,
    pub faulted_flows: usize,
    pub faulted_lost: usize,
    pub persistence_checks: usize,
    pub persistence_lost: Vec<String>,
    /// Something moved that must not have (a traffic group during an HA cut).
    pub moved: Option<String>,
    pub why_unconverged: Option<String>,
}

/// The totals of a run.
#[derive(Debug, Clone, Default)]
pub struct ChaosSummary {
    pub rounds: usize,
    pub persistence_lost: usize,
    pub persistence_checks: usize,
    pub survivor_disturbed: usize,
    pub survivor_flows: usize,
    pub unconverged: usize,
    pub moved: usize,
    pub route_events: Vec<String>,
    /// The first problems, for the failure message.
    pub problems: Vec<String>,
}

impl ChaosSummary {
    /// The run's last line.
    pub fn line(&self) -> String {
        format!(
            "chaos: rounds={} persistence_lost={}/{} survivor_flows_disturbed={}/{} unconverged={}",
            self.rounds,
            self.persistence_lost,
            self.persistence_checks,
            self.survivor_disturbed,
            self.survivor_flows,
            self.unconverged
        )
    }

    pub fn clean(&self) -> bool {
        self.persistence_lost == 0
            && self.survivor_disturbed == 0
            && self.unconverged == 0
            && self.moved == 0
            && self.route_events.is_empty()
    }
}

/// The chaos lab: the seed cluster with connection and persistence mirroring on (a mirrored
/// source-address profile on `web`), auto-failback, a second failover and mirror path (the
/// internal segment), and r1 hashing as `hash` says.
pub fn chaos_lab(name: &str, hash: Hash, clients: usize) -> ClusterLab {
    let opts = ClusterOptions {
        web_extra: "persistence = \"src\"\nmirror = true".into(),
        second_failover_path: true,
        // To see why the default is what it is: SPANLB_CHAOS_PERSISTENCE_SCOPE=next-active.
        persistence_mirror_scope: std::env::var("SPANLB_CHAOS_PERSISTENCE_SCOPE").ok(),
        ..crate::mirror::src_persistence_opts()
    };
    let lab = ClusterLab::build(name, opts).expect("building the lab");
    // Steady state is checked with connections from one client address: before the address
    // hash, which would send them all one way.
    let r = lab.wait_steady(Duration::from_secs(60));
    lab.ok(r, "steady state");
    match hash {
        Hash::FiveTuple => crate::mirror::five_tuple_hash(&lab),
        Hash::L3 => lab.ok(
            lab.r1.sysctl("net.ipv4.fib_multipath_hash_policy", "0"),
            "r1 hash policy",
        ),
    }
    // Persisted clients, then the flows' sources.
    add_client_addrs(&lab, clients + FLOW_SOURCES);
    lab
}

/// Source addresses the long-lived flows use (after the persisted clients').
const FLOW_SOURCES: usize = 30;
/// The longest a round may take to converge.
const CONVERGE: Duration = Duration::from_secs(45);

/// A persisted client: its address and the member it stuck to.
#[derive(Debug, Clone)]
pub struct Client {
    pub ip: IpAddr,
    pub member: String,
}

/// Runs the chaos rounds on `lab` (built by [`chaos_lab`]), printing one line per round.
pub fn run(lab: &ClusterLab, opts: &ChaosOptions) -> ChaosSummary {
    println!(
        "chaos: seed={} (SPANLB_CHAOS_SEED={} repeats it) rounds={} hash={} clients={}",
        opts.seed,
        opts.seed,
        opts.rounds,
        opts.hash.name(),
        opts.clients
    );
    let mut rng = fastrand::Rng::with_seed(opts.seed);
    let watch = lab.ok(RouteWatch::start(&lab.r1), "route monitor");
    let clients = persist_clients(lab, opts.clients);
    let mut sum = ChaosSummary::default();
    let mut faults: Vec<Fault> = Vec::new();
    for round in 1..=opts.rounds {
        if faults.is_empty() {
            faults = Fault::every_kind(&mut rng);
            rng.shuffle(&mut faults);
        }
        let fault = faults.pop().unwrap_or(Fault::ManualFailover);
        let device = DEVICES[rng.usize(..DEVICES.len())].name;
        let r = one_round(lab, opts, &clients, fault, device);
        sum.rounds += 1;
        sum.persistence_checks += r.persistence_checks;
        sum.persistence_lost += r.persistence_lost.len();
        sum.survivor_flows += r.survivor_flows;
        sum.survivor_disturbed += r.survivor_disturbed.len();
        let problem =
            |what: String| format!("round {round} ({} on {device}): {what}", fault.name());
        if r.converged.is_none() {
            sum.unconverged += 1;
            sum.problems.push(problem(format!(
                "not converged: {}",
                r.why_unconverged.clone().unwrap_or_default()
            )));
        }
        if let Some(m) = &r.moved {
            sum.moved += 1;
            sum.problems.push(problem(m.clone()));
        }
        if !r.survivor_disturbed.is_empty() {
            sum.problems.push(problem(format!(
                "survivor flows {:?}",
                r.survivor_disturbed
            )));
        }
        if !r.persistence_lost.is_empty() {
            sum.problems
                .push(problem(format!("persistence {:?}", r.persistence_lost)));
        }
        println!(
            "chaos round {round}/{}: {} on {device}: converged {} survivor_flows_disturbed={}/{} \
             flows_through_{device}_lost={}/{} persistence_lost={}/{}{}",
            opts.rounds,
            fault.name(),
            r.converged
                .map_or("never".to_string(), |d| format!("in {} ms", d.as_millis())),
            r.survivor_disturbed.len(),
            r.survivor_flows,
            r.faulted_lost,
            r.faulted_flows,
            r.persistence_lost.len(),
            r.persistence_checks,
            r.moved
                .as_ref()
                .map_or(String::new(), |m| format!(" MOVED: {m}")),
        );
        if !r.survivor_disturbed.is_empty() {
            println!("chaos: disturbed: {:?}", r.survivor_disturbed);
        }
    }
    sum.route_events = watch.events();
    println!(
        "chaos: r1's kernel route for the VIP changed {} times ({})",
        sum.route_events.len(),
        watch.start
    );
    println!("{}", sum.line());
    sum
}

/// Makes each client's session (one connection from its address, any port) and notes its
/// member; says how many each device made (`chaos: …` line). The clients' addresses must be
/// in place ([`add_client_addrs`]).
pub fn persist_clients(lab: &ClusterLab, n: usize) -> Vec<Client> {
    let dst = vip_tcp();
    let made = lab.ok(
        lab.client.run_in(move || {
            (0..n)
                .map(|i| {
                    let ip: IpAddr = client_ip(i).into();
                    let mut last = String::new();
                    for _ in 0..5 {
                        match exchange(SocketAddr::new(ip, 0), dst, b"hello\n") {
                            Ok((member, dev)) => return Ok((Client { ip, member }, dev)),
                            Err(e) => last = e,
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(last)
                })
                .collect::<Vec<_>>()
        }),
        "persisted clients",
    );
    let mut clients = Vec::new();
    let mut per: Vec<(Option<&str>, usize)> = Vec::new();
    for m in made {
        let (c, dev) = lab.ok(m, "a persisted client's first connection");
        match per.iter_mut().find(|(d, _)| *d == dev) {
            Some((_, k)) => *k += 1,
            None => per.push((dev, 1)),
        }
        clients.push(c);
    }
    per.sort();
    println!("{n} persisted clients, made through {per:?}");
    lab.check(
        DEVICES
            .iter()
            .all(|d| per.iter().any(|(x, k)| *x == Some(d.name) && *k > 0)),
        format!("persisted clients made through every device: {per:?}"),
    );
    // Their records reach every device before the first fault.
    std::thread::sleep(Duration::from_millis(500));
    clients
}

/// Each client connects twice (any port: with the five-tuple hash, any device): a connection
/// that reaches another member than the client's, or none in three tries, is a lost record.
pub fn check_persistence(lab: &ClusterLab, clients: &[Client]) -> (usize, Vec<String>) {
    let dst = vip_tcp();
    let work = clients.to_vec();
    let lost = lab.ok(
        lab.client.run_in(move || {
            let chunks: Vec<Vec<Client>> = work.chunks(10).map(|c| c.to_vec()).collect();
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    std::thread::spawn(move || {
                        let mut lost = Vec::new();
                        for c in chunk {
                            for _ in 0..2 {
                                let mut got = Err(String::new());
                                for _ in 0..3 {
                                    got = exchange(SocketAddr::new(c.ip, 0), dst, b"hello\n");
                                    if got.is_ok() {
                                        break;
                                    }
                                    std::thread::sleep(Duration::from_millis(100));
                                }
                                match got {
                                    Ok((m, _)) if m == c.member => {}
                                    Ok((m, d)) => lost.push(format!(
                                        "{}: {} instead of {} (via {d:?})",
                                        c.ip, m, c.member
                                    )),
                                    Err(e) => lost.push(format!("{}: {e}", c.ip)),
                                }
                            }
                        }
                        lost
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect::<Vec<_>>()
        }),
        "checking persistence",
    );
    (clients.len() * 2, lost)
}

/// Long-lived flows through each device, from the flow sources.
fn open_flows(lab: &ClusterLab, opts: &ChaosOptions) -> Vec<LongLived> {
    let sources: Vec<IpAddr> = (opts.clients..opts.clients + FLOW_SOURCES)
        .map(|i| client_ip(i).into())
        .collect();
    DEVICES
        .iter()
        .map(|d| {
            let r = LongLived::open_from(&lab.client, opts.flows_per_device, &[d.name], &sources);
            lab.ok(r, &format!("long-lived flows through {}", d.name))
        })
        .collect()
}

fn one_round(
    lab: &ClusterLab,
    opts: &ChaosOptions,
    clients: &[Client],
    fault: Fault,
    device: &'static str,
) -> RoundResult {
    let mut res = RoundResult::default();
    let flows = open_flows(lab, opts);
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    apply(lab, fault, device, &mut res);
    match converge(lab) {
        Ok(()) => res.converged = Some(t0.elapsed()),
        Err(e) => res.why_unconverged = Some(e),
    }
    // Let the flows go on a little after the last move.
    std::thread::sleep(Duration::from_millis(500));
    for f in &flows {
        let through_victim = f.flows.first().is_some_and(|x| x.device == device);
        if through_victim {
            res.faulted_flows += f.flows.len();
            res.faulted_lost += f.disturbed(&[]).len();
        } else {
            res.survivor_flows += f.flows.len();
            res.survivor_disturbed.extend(f.disturbed(&[]));
        }
    }
    drop(flows);
    let (checks, lost) = check_persistence(lab, clients);
    res.persistence_checks = checks;
    if !lost.is_empty() {
        println!(
            "chaos: lost: {lost:?}; the records now: {}",
            records_of(lab, &lost)
        );
    }
    res.persistence_lost = lost;
    res
}

/// Each device's record of the clients named at the start of `lost` (for the diagnosis).
fn records_of(lab: &ClusterLab, lost: &[String]) -> String {
    let keys: std::collections::BTreeSet<String> = lost
        .iter()
        .filter_map(|l| l.split(':').next())
        .map(|ip| format!("{ip}/32"))
        .collect();
    let mut out = Vec::new();
    for d in DEVICES {
        match crate::mirror::persistence_list(lab, d.name) {
            Ok(list) => {
                for r in list
                    .iter()
                    .filter(|r| r["key"].as_str().is_some_and(|k| keys.contains(k)))
                {
                    out.push(format!(
                        "{}: {} -> {} ({}, mirrored {}, expiry {})",
                        d.name,
                        r["key"],
                        r["member"],
                        r["traffic_group"],
                        r["mirrored"],
                        r["expiry_ms"]
                    ));
                }
            }
            Err(e) => out.push(format!("{}: {e}", d.name)),
        }
    }
    out.join("; ")
}

fn apply(lab: &ClusterLab, fault: Fault, dev: &str, res: &mut RoundResult) {
    let restart = |pause: Duration| {
        std::thread::sleep(pause);
        lab.ok(lab.start_device(dev), "restarting the device's daemons");
    };
    match fault {
        Fault::Hang(d) => {
            lab.ok(lab.signal_device(dev, libc::SIGSTOP), "SIGSTOP");
            std::thread::sleep(d);
            lab.ok(lab.signal_device(dev, libc::SIGCONT), "SIGCONT");
        }
        Fault::KillLbd(pause) => {
            lab.ok(
                lab.signal_daemon(dev, Daemon::Lbd, libc::SIGKILL),
                "SIGKILL lbd",
            );
            restart(pause);
        }
        Fault::KillBoth(pause) => {
            lab.ok(lab.signal_device(dev, libc::SIGKILL), "SIGKILL both");
            restart(pause);
        }
        Fault::TermBoth(pause) => {
            lab.ok(lab.signal_device(dev, libc::SIGTERM), "SIGTERM both");
            restart(pause);
        }
        Fault::RestartBgpd(pause) => {
            lab.ok(
                lab.signal_daemon(dev, Daemon::Bgpd, libc::SIGTERM),
                "SIGTERM bgpd",
            );
            restart(pause);
        }
        Fault::ManualFailover => {
            let tg = format!("tg-{}", lab.device(dev).addrs.tg);
            let r = lab.lbctl(dev, &["failover", &tg]);
            lab.ok(r, "lbctl failover");
            let r = lab.wait_moved_off(&tg, dev, Duration::from_secs(10));
            lab.ok(r, "the failover order moved the traffic group");
            std::thread::sleep(Duration::from_millis(1000));
            let r = lab.lbctl(dev, &["failover", &tg, "--to", dev]);
            lab.ok(r, "lbctl failover back");
        }
        Fault::CutHa(d) => {
            let seg = &lab.segments["ha"];
            let ns = &lab.device(dev).ns;
            lab.ok(seg.set_port(ns, "ha0", false), "cutting the HA link");
            // Nothing may move while heartbeats take the second path.
            let end = Instant::now() + d;
            while Instant::now() < end {
                if let Err(e) = home(lab) {
                    res.moved.get_or_insert(format!("during the HA cut: {e}"));
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            lab.ok(seg.set_port(ns, "ha0", true), "restoring the HA link");
        }
    }
}

/// Every traffic group on its home device, as every device sees it.
fn home(lab: &ClusterLab) -> std::result::Result<(), String> {
    let p = lab.placement()?;
    for d in DEVICES {
        let tg = format!("tg-{}", d.tg);
        if p.get(&tg).cloned().flatten().as_deref() != Some(d.name) {
            return Err(format!("{p:?}"));
        }
    }
    Ok(())
}

/// Waits until the cluster is whole again: every device live, every traffic group home and
/// agreed on, every device announcing every path to r1, every mirror in sync.
fn converge(lab: &ClusterLab) -> std::result::Result<(), String> {
    let every = lab.all_paths_from(&["a", "b", "c"]);
    let r = spanlb_lab::wait_until_dbg(CONVERGE, "the cluster whole again", || {
        let live = lab.live_devices();
        if live.len() != DEVICES.len() {
            return Err(format!("live: {live:?}"));
        }
        home(lab)?;
        let paths = lab.r1_vip_paths()?;
        if paths != every {
            return Err(format!("r1's paths: {paths:?}"));
        }
        for d in DEVICES {
            let m = lab.lbctl(d.name, &["show", "mirroring"])?;
            let unsynced = m["unsynced"].as_array().map_or(1, Vec::len);
            if unsynced > 0 {
                return Err(format!("{} not in sync: {}", d.name, m["unsynced"]));
            }
        }
        Ok(())
    });
    r.map_err(|e| e.to_string())
}
