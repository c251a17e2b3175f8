//! Issue 6's mirroring benchmark (run it through `topologies/bench/mirroring.sh`): what
//! persistence and connection mirroring cost lbd in new connections per second.
//!
//! One seed cluster lab (FRR router r1, devices A, B, C with bgpd + lbd, mirroring on) with two
//! virtual servers on the VIP that differ only in mirroring:
//! - `on` (port [`PORT_ON`]): hash persistence on the client's address and port (plugin `hash`,
//!   `plugin_config = "client"`) with `mirror = true`, and TCP connection mirroring
//!   (`mirror = true` on the virtual server: `TCP_REPAIR` snapshots of both sockets);
//! - `off` (port [`PORT_OFF`]): the same persistence profile with `mirror = false`, no
//!   connection mirroring.
//!
//! Every connection comes from a new client port, so every connection makes a persistence
//! record update (a new record, or a refresh of an expired or aging one when the kernel hands a
//! port out again; the profiles' timeout is short for that): the worst case for the channel.
//! The connections are shorter than the 100 ms quiet time TCP connection mirroring waits for
//! before a snapshot, so its cost here is its per-connection check, not channel updates.
//!
//! r1 sends all traffic for the VIP to B's floating external address (a policy route in a table
//! of its own, set after the lab is steady), so every connection is tg-2's and B mirrors it to
//! C, tg-2's next-active.
//!
//! Load: `--threads` closed-loop clients in the client namespace, each connecting, sending one
//! line, reading the member's answer line and closing, for `--duration` seconds per run; each
//! round runs both sides, alternating which goes first. During every run (both sides, so both
//! pay for it) a thread in B's namespace reads lbd's Prometheus metrics every 50 ms: the
//! senders' lag gauge (p99 over the side's samples) and last update id (updates/s, counted
//! until the channel has caught up after the run).
//!
//! Prints each round, a table of medians and, as the last line,
//! `mirroring conn/s ratio (on/off): X`. Exits 1 when a run had more than 1% errors, when less
//! than 99% of the answers came through B, or when the lab does not come up. The lab (its
//! namespaces and daemons) is torn down on every exit path, panics included.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use spanlb_tests::cluster::{ClusterLab, ClusterOptions, TOOLS};
use spanlb_tests::mirror::five_tuple_hash;
use spanlb_tests::topology::{DEVICES, VIP};
use spanlb_tests::traffic::device_of;

/// The mirrored virtual server's port.
const PORT_ON: u16 = 8101;
/// The unmirrored virtual server's port.
const PORT_OFF: u16 = 8102;
/// lbd's metrics address inside each device's namespace.
const METRICS: &str = "127.0.0.1:9464";
/// The device all load goes through.
const VIA: &str = "b";
/// Metrics sampling interval during a run.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// The persistence profiles' timeout. Short, so that a client port the kernel hands out again
/// (the client cycles through its ~64k ports every few seconds at this load) finds its record
/// expired or its refresh due (lbd sends a refresh once the expiry moved by 1/8 of the
/// timeout, at least 1 s): nearly every connection then makes a channel update, and the
/// tables stay small.
const PERSIST_TIMEOUT: &str = "10s";

type Res<T> = Result<T, String>;

struct Args {
    rounds: usize,
    duration: Duration,
    threads: usize,
}

fn parse_args() -> Res<Args> {
    let mut a = Args {
        rounds: 5,
        duration: Duration::from_secs(8),
        threads: 16,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut num = |what: &str| -> Res<u64> {
            it.next()
                .and_then(|v| v.parse().ok())
                .filter(|v| *v > 0)
                .ok_or_else(|| format!("{what} needs a positive number"))
        };
        match k.as_str() {
            "--rounds" => a.rounds = num("--rounds")? as usize,
            "--duration" => a.duration = Duration::from_secs(num("--duration")?),
            "--threads" => a.threads = num("--threads")? as usize,
            "-h" | "--help" => {
                println!("usage: mirror-bench [--rounds N] [--duration S] [--threads N]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mirror-bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = spanlb_lab::require_root_and_tools(&TOOLS) {
        eprintln!("mirror-bench: {e}");
        std::process::exit(1);
    }
    // `run` owns the lab: it is torn down when `run` returns (or unwinds), before the exit.
    let code = run(&args);
    std::process::exit(code);
}

/// The two virtual servers and their persistence profiles (appended to every lbd's file).
fn lbd_extra() -> String {
    let vs = |name: &str, port: u16, persist: &str, mirror: bool| {
        format!(
            "\n[virtual_servers.{name}]\ndestination = \"{VIP}:{port}\"\nprotocol = \"tcp\"\n\
             pool = \"web\"\nsnat = \"automap\"\npersistence = \"{persist}\"\nmirror = {mirror}\n"
        )
    };
    let profile = |name: &str, mirror: bool| {
        format!(
            "\n[persistence.{name}]\ntype = \"hash\"\nplugin_config = \"client\"\n\
             timeout = \"{PERSIST_TIMEOUT}\"\nmirror = {mirror}\n"
        )
    };
    [
        vs("bench_on", PORT_ON, "hash_on", true),
        vs("bench_off", PORT_OFF, "hash_off", false),
        profile("hash_on", true),
        profile("hash_off", false),
    ]
    .concat()
}

fn run(args: &Args) -> i32 {
    let opts = ClusterOptions {
        mirroring: true,
        plugins: vec!["spanlb-plugin-hash"],
        lbd_extra: lbd_extra(),
        start_devices: false,
        ..ClusterOptions::default()
    };
    eprintln!("mirror-bench: building the lab (plugin, namespaces, FRR, daemons)");
    let lab = match ClusterLab::build("mirror_bench", opts) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mirror-bench: building the lab: {e}");
            return 1;
        }
    };
    if let Err(e) = prepare(&lab) {
        eprintln!("mirror-bench: {e}{}", lab.dump());
        return 1;
    }
    match measure(&lab, args) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("mirror-bench: {e}{}", lab.dump());
            1
        }
    }
}

/// Metrics on, daemons started, steady state, then the sysctls and r1's route through B.
fn prepare(lab: &ClusterLab) -> Res<()> {
    for d in &lab.devices {
        let text = std::fs::read_to_string(&d.lbd_config).map_err(|e| e.to_string())?;
        let text = text.replacen(
            "[device]\n",
            &format!("[device]\nmetrics = \"{METRICS}\"\n"),
            1,
        );
        std::fs::write(&d.lbd_config, text).map_err(|e| e.to_string())?;
    }
    for d in DEVICES {
        lab.start_device(d.name).map_err(|e| e.to_string())?;
    }
    five_tuple_hash(lab);
    lab.wait_steady(Duration::from_secs(60))?;
    // Short connections by the thousand: the client and the devices (SNAT side) must not
    // run out of ports to TIME_WAIT.
    let mut nss = vec![lab.client.clone()];
    nss.extend(lab.devices.iter().map(|d| d.ns.clone()));
    for ns in &nss {
        ns.sysctl("net.ipv4.ip_local_port_range", "1024 65000")
            .map_err(|e| e.to_string())?;
        ns.sysctl("net.ipv4.tcp_tw_reuse", "1")
            .map_err(|e| e.to_string())?;
    }
    spanlb_tests::mirror::route_vip_through(lab, VIA)?;
    // Both sides answer, through B, before anything is measured.
    for side in [Side::On, Side::Off] {
        let r = load(lab, side, 2, Duration::from_secs(2))?;
        if r.ok == 0 || r.not_via > 0 {
            return Err(format!(
                "warm-up of {}: {} answers, {} not through {VIA}, {} errors {:?}",
                side.name(),
                r.ok,
                r.not_via,
                r.errors,
                r.error_samples
            ));
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    On,
    Off,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::On => "on",
            Side::Off => "off",
        }
    }

    fn port(self) -> u16 {
        match self {
            Side::On => PORT_ON,
            Side::Off => PORT_OFF,
        }
    }
}

/// One load run's figures.
#[derive(Default)]
struct LoadResult {
    ok: u64,
    errors: u64,
    /// Answers whose SNAT source does not name B.
    not_via: u64,
    elapsed: Duration,
    error_samples: Vec<String>,
}

impl LoadResult {
    fn conn_per_s(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn error_share(&self) -> f64 {
        self.errors as f64 / ((self.ok + self.errors) as f64).max(1.0)
    }
}

/// One connection: connect, send a line, read the member's answer line (`"<server>
/// <snat-ip>"`), close. Returns whether the SNAT source names B.
fn one_connection(dst: SocketAddr) -> Res<bool> {
    let mut c = TcpStream::connect_timeout(&dst, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let _ = c.set_nodelay(true);
    c.write_all(b"bench\n").map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; 128];
    let mut n = 0;
    while !buf[..n].contains(&b'\n') {
        if n == buf.len() {
            return Err("answer line too long".into());
        }
        match c.read(&mut buf[n..]) {
            Ok(0) => return Err("closed before the answer".into()),
            Ok(k) => n += k,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&buf[..n]);
    let snat: Option<IpAddr> = text.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    Ok(snat.and_then(device_of) == Some(VIA))
}

/// `threads` closed-loop clients in the client namespace against `side` for `duration`.
fn load(lab: &ClusterLab, side: Side, threads: usize, duration: Duration) -> Res<LoadResult> {
    let vip: IpAddr = VIP.parse().map_err(|_| "bad VIP")?;
    let dst = SocketAddr::new(vip, side.port());
    lab.client
        .run_in(move || {
            let start = Instant::now();
            let end = start + duration;
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    std::thread::spawn(move || {
                        let mut r = LoadResult::default();
                        while Instant::now() < end {
                            match one_connection(dst) {
                                Ok(true) => r.ok += 1,
                                Ok(false) => {
                                    r.ok += 1;
                                    r.not_via += 1;
                                }
                                Err(e) => {
                                    r.errors += 1;
                                    if r.error_samples.len() < 3 {
                                        r.error_samples.push(e);
                                    }
                                    // An error can be instant (refused): do not spin.
                                    std::thread::sleep(Duration::from_millis(10));
                                }
                            }
                        }
                        r
                    })
                })
                .collect();
            let mut total = LoadResult::default();
            for h in handles {
                let r = h.join().unwrap_or_else(|_| LoadResult {
                    errors: 1,
                    error_samples: vec!["client thread panicked".into()],
                    ..LoadResult::default()
                });
                total.ok += r.ok;
                total.errors += r.errors;
                total.not_via += r.not_via;
                for e in r.error_samples {
                    if total.error_samples.len() < 5 {
                        total.error_samples.push(e);
                    }
                }
            }
            total.elapsed = start.elapsed();
            total
        })
        .map_err(|e| e.to_string())
}

/// The figures read from one scrape of B's metrics.
#[derive(Debug, Default, Clone, Copy)]
struct Scrape {
    /// Sum over B's sender channels of the last update id sent.
    last_id: u64,
    /// Sum over B's sender channels of the last update id acknowledged.
    acked_id: u64,
    /// Largest lag of B's sender channels.
    lag_ms: f64,
    /// Sender channels not in sync.
    not_in_sync: u64,
    offered: u64,
    /// Refreshes lbd found too small to send.
    not_sent: u64,
}

/// GET /metrics of the lbd of the namespace the calling thread is in.
fn scrape_here() -> Res<Scrape> {
    let addr: SocketAddr = METRICS.parse().map_err(|_| "bad metrics address")?;
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("metrics: {e}"))?;
    c.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    c.write_all(b"GET /metrics HTTP/1.0\r\nHost: lbd\r\n\r\n")
        .map_err(|e| format!("metrics: {e}"))?;
    let mut body = String::new();
    c.read_to_string(&mut body)
        .map_err(|e| format!("metrics: {e}"))?;
    let mut s = Scrape::default();
    for line in body.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        let (name, labels) = match name_labels.split_once('{') {
            Some((n, l)) => (n, l),
            None => (name_labels, ""),
        };
        let sender = labels.contains("role=\"sender\"");
        match name {
            "lbd_mirror_channel_last_update_id" if sender => s.last_id += value as u64,
            "lbd_mirror_channel_acked_update_id" if sender => s.acked_id += value as u64,
            "lbd_mirror_channel_lag_seconds" if sender => s.lag_ms = s.lag_ms.max(value * 1000.0),
            "lbd_mirror_channel_in_sync" if sender && value < 0.5 => s.not_in_sync += 1,
            "lbd_mirror_updates_offered_total" => s.offered = value as u64,
            "lbd_mirror_refreshes_not_sent_total" => s.not_sent = value as u64,
            _ => {}
        }
    }
    Ok(s)
}

/// One scrape of B's metrics (a short-lived thread in B's namespace).
fn scrape(lab: &ClusterLab) -> Res<Scrape> {
    lab.device(VIA)
        .ns
        .run_in(scrape_here)
        .map_err(|e| e.to_string())?
}

/// Samples B's metrics every [`SAMPLE_EVERY`] until `stop`: the lag samples and how many
/// samples found a sender not in sync.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<spanlb_lab::Result<(Vec<f64>, u64, u64)>>,
}

impl Sampler {
    fn start(lab: &ClusterLab) -> Res<Sampler> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = lab
            .device(VIA)
            .ns
            .spawn_thread("metrics-sampler", move || {
                let mut lags = Vec::new();
                let (mut unsynced, mut failed) = (0, 0);
                // Bounded: the run's end sets `stop`; 10 minutes is far beyond any run.
                let limit = Instant::now() + Duration::from_secs(600);
                while !flag.load(Ordering::Relaxed) && Instant::now() < limit {
                    let t = Instant::now();
                    match scrape_here() {
                        Ok(s) => {
                            lags.push(s.lag_ms);
                            unsynced += u64::from(s.not_in_sync > 0);
                        }
                        Err(_) => failed += 1,
                    }
                    std::thread::sleep(SAMPLE_EVERY.saturating_sub(t.elapsed()));
                }
                (lags, unsynced, failed)
            })
            .map_err(|e| e.to_string())?;
        Ok(Sampler { stop, handle })
    }

    fn finish(self) -> Res<(Vec<f64>, u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.join() {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("metrics sampler panicked".into()),
        }
    }
}

/// One measured run of a side.
struct Run {
    load: LoadResult,
    updates: u64,
    offered: u64,
    not_sent: u64,
    lags: Vec<f64>,
    unsynced_samples: u64,
    failed_scrapes: u64,
}

fn measure_side(lab: &ClusterLab, side: Side, args: &Args) -> Res<Run> {
    let before = scrape(lab)?;
    let sampler = Sampler::start(lab)?;
    let load = load(lab, side, args.threads, args.duration);
    let samples = sampler.finish();
    let load = load?;
    let (lags, unsynced_samples, failed_scrapes) = samples?;
    // Count the run's updates once the channel has caught up (bounded: 15 s), so that the
    // next run does not pay for this one's backlog either.
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        let s = scrape(lab)?;
        if (s.acked_id >= s.last_id && s.not_in_sync == 0) || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Ok(Run {
        load,
        updates: after.last_id.saturating_sub(before.last_id),
        offered: after.offered.saturating_sub(before.offered),
        not_sent: after.not_sent.saturating_sub(before.not_sent),
        lags,
        unsynced_samples,
        failed_scrapes,
    })
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// The `p`-th percentile (nearest rank) of `v`.
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn measure(lab: &ClusterLab, args: &Args) -> Res<bool> {
    println!(
        "persistence: hash on the client's address:port (plugin `hash`, plugin_config = \"client\", \
         timeout {PERSIST_TIMEOUT}): each connection from a new client port makes a record update"
    );
    println!(
        "on: that profile with mirror = true + TCP connection mirroring (virtual server mirror = true); \
         off: mirror = false on both"
    );
    println!(
        "load: {} closed-loop client threads, connect/send/read answer/close, all through device {VIA} \
         (tg-2, mirrored to c); {} rounds x {} s per side, alternating",
        args.threads,
        args.rounds,
        args.duration.as_secs()
    );
    let mut on: Vec<Run> = Vec::new();
    let mut off: Vec<Run> = Vec::new();
    for round in 0..args.rounds {
        let order = if round % 2 == 0 {
            [Side::On, Side::Off]
        } else {
            [Side::Off, Side::On]
        };
        let mut line = format!("round {}:", round + 1);
        for side in order {
            // Let the previous run's TIME_WAIT sockets and softirq work settle.
            std::thread::sleep(Duration::from_secs(1));
            let r = measure_side(lab, side, args)?;
            line.push_str(&format!(
                " {} {:.0} conn/s ({} errors, {} updates, lag max {:.0} ms{});",
                side.name(),
                r.load.conn_per_s(),
                r.load.errors,
                r.updates,
                r.lags.iter().cloned().fold(0.0, f64::max),
                if r.unsynced_samples > 0 {
                    format!(", {} samples not in sync", r.unsynced_samples)
                } else {
                    String::new()
                }
            ));
            if side == Side::On {
                on.push(r);
            } else {
                off.push(r);
            }
        }
        println!("{}", line.trim_end_matches(';'));
    }

    let mut ok = true;
    println!();
    println!(
        "{:<5} {:>13} {:>10} {:>10} {:>7} {:>10} {:>10} {:>9} {:>11}",
        "side",
        "conn/s_median",
        "conn/s_min",
        "conn/s_max",
        "errors",
        "updates/s",
        "offered/s",
        "upd/conn",
        "lag_p99_ms"
    );
    let mut medians = [0.0f64; 2];
    for (k, (side, runs)) in [(Side::On, &on), (Side::Off, &off)].iter().enumerate() {
        let rates: Vec<f64> = runs.iter().map(|r| r.load.conn_per_s()).collect();
        let secs = |r: &Run| r.load.elapsed.as_secs_f64().max(1e-9);
        let ups: Vec<f64> = runs.iter().map(|r| r.updates as f64 / secs(r)).collect();
        let offs: Vec<f64> = runs.iter().map(|r| r.offered as f64 / secs(r)).collect();
        let lags: Vec<f64> = runs.iter().flat_map(|r| r.lags.iter().cloned()).collect();
        let errors: u64 = runs.iter().map(|r| r.load.errors).sum();
        let conns: u64 = runs.iter().map(|r| r.load.ok).sum();
        let offered: u64 = runs.iter().map(|r| r.offered).sum();
        medians[k] = median(&rates);
        println!(
            "{:<5} {:>13.0} {:>10.0} {:>10.0} {:>7} {:>10.0} {:>10.0} {:>9.2} {:>11.0}",
            side.name(),
            medians[k],
            rates.iter().cloned().fold(f64::INFINITY, f64::min),
            rates.iter().cloned().fold(0.0, f64::max),
            errors,
            median(&ups),
            median(&offs),
            offered as f64 / (conns as f64).max(1.0),
            percentile(&lags, 99.0)
        );
        for r in runs.iter() {
            if r.load.error_share() > 0.01 {
                eprintln!(
                    "mirror-bench: FAILED: a run of `{}` had {} errors in {} connections (> 1%): {:?}",
                    side.name(),
                    r.load.errors,
                    r.load.ok + r.load.errors,
                    r.load.error_samples
                );
                ok = false;
            }
            if r.load.not_via * 100 > r.load.ok {
                eprintln!(
                    "mirror-bench: FAILED: {} of {} answers of `{}` did not come through {VIA}",
                    r.load.not_via,
                    r.load.ok,
                    side.name()
                );
                ok = false;
            }
            if r.failed_scrapes > 0 {
                eprintln!(
                    "mirror-bench: note: {} metrics scrapes of a `{}` run failed",
                    r.failed_scrapes,
                    side.name()
                );
            }
        }
    }
    let unsynced: u64 = on.iter().map(|r| r.unsynced_samples).sum();
    let samples: usize = on.iter().map(|r| r.lags.len()).sum();
    let not_sent: u64 = on.iter().map(|r| r.not_sent).sum();
    println!(
        "updates/s: B's channel updates sent (last update id) per second of load; offered/s: \
         updates lbd's data path offered; upd/conn: offered per connection ({not_sent} refreshes \
         too small to send); lag: B's sender lag gauge every {} ms ({samples} samples of `on`, \
         {unsynced} with a channel not in sync)",
        SAMPLE_EVERY.as_millis()
    );
    println!(
        "TCP connection mirroring snapshots a connection once it was quiet for 100 ms: these \
         connections end sooner, so it costs them its per-connection check but no updates"
    );
    if let Ok(m) = lab.lbctl("c", &["show", "mirroring"]) {
        let r = spanlb_tests::mirror::receiver(&m, "tg-2");
        println!(
            "c's mirror of tg-2 now: state {}, records {}",
            r["state"], r["records"]
        );
    }
    let ratio = if medians[1] > 0.0 {
        medians[0] / medians[1]
    } else {
        0.0
    };
    println!("mirroring conn/s ratio (on/off): {ratio:.3}");
    Ok(ok)
}
