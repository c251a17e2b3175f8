//! Issue 15's takeover measurement (run it through `topologies/bench/mirror-failover.sh`): what
//! a failover costs when the next-active device holds many mirrored TCP connections.
//!
//! The seed cluster lab with mirroring on and a virtual server `idle` (port [`PORT`]) with TCP
//! connection mirroring, in front of echo servers this program runs in the server namespaces
//! (port [`ECHO_PORT`], one task per connection). r1 sends all of the VIP's traffic through B,
//! so every connection is tg-2's and B mirrors it to C, tg-2's next-active.
//!
//! `--connections N` (default 10,000) connections are opened from the client namespace, each
//! exchanges one line and stays idle; once C holds N mirrored connections, B hangs
//! (`kill -STOP`). `--restore-budget D` sets every lbd's `takeover_restore_budget`. Printed: how
//! long mirroring took to hold them all, when tg-2 was active on C, how many sockets C rebuilt
//! before the addresses and in how long, how many after (its lbd log), and how many connections
//! answer an
//! echo afterwards (within 10 s each), with the time from the hang to their answers (p50, p99,
//! max). Last line: `failover with N mirrored connections: ...`. Exits 1 when the lab does
//! not come up or fewer than 99 % of the connections survive. The lab is torn down on every
//! exit path.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use spanlb_tests::cluster::{ClusterLab, ClusterOptions, TOOLS};
use spanlb_tests::mirror::receiver;
use spanlb_tests::topology::{DEVICES, SERVERS, VIP};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The mirrored virtual server's port.
const PORT: u16 = 8103;
/// The echo servers' port.
const ECHO_PORT: u16 = 8091;
/// Connections opened at once.
const PARALLEL: usize = 256;

type Res<T> = Result<T, String>;

fn usage() -> ! {
    eprintln!("usage: mirror-failover [--connections N] [--restore-budget DURATION]");
    std::process::exit(2);
}

fn main() {
    let mut n = 10_000usize;
    let mut budget: Option<String> = None;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next();
        match (k.as_str(), v) {
            ("--connections", Some(v)) => match v.parse() {
                Ok(v) if v > 0 => n = v,
                _ => usage(),
            },
            ("--restore-budget", Some(v)) if !v.is_empty() && !v.contains(['"', '\\', '\n']) => {
                budget = Some(v)
            }
            _ => usage(),
        }
    }
    if let Err(e) = spanlb_lab::require_root_and_tools(&TOOLS) {
        eprintln!("mirror-failover: {e}");
        std::process::exit(1);
    }
    // `run` owns the lab: it is torn down when `run` returns (or unwinds), before the exit.
    let code = run(n, budget.as_deref());
    std::process::exit(code);
}

fn lbd_extra() -> String {
    let members: Vec<String> = SERVERS
        .iter()
        .map(|(_, ip)| format!("{{ address = \"{ip}:{ECHO_PORT}\" }}"))
        .collect();
    format!(
        "\n[virtual_servers.idle]\ndestination = \"{VIP}:{PORT}\"\nprotocol = \"tcp\"\n\
         pool = \"idle\"\nsnat = \"automap\"\nmirror = true\nidle_timeout = \"1h\"\n\
         [pools.idle]\nmembers = [{}]\n",
        members.join(", ")
    )
}

fn run(n: usize, budget: Option<&str>) -> i32 {
    raise_nofile();
    let opts = ClusterOptions {
        mirroring: true,
        lbd_extra: lbd_extra(),
        device_extra: budget
            .map(|b| format!("takeover_restore_budget = \"{b}\"\n"))
            .unwrap_or_default(),
        start_devices: false,
        ..ClusterOptions::default()
    };
    eprintln!("mirror-failover: building the lab");
    let lab = match ClusterLab::build("mirror_failover", opts) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mirror-failover: building the lab: {e}");
            return 1;
        }
    };
    let r = measure(&lab, n, budget);
    // B must run again for the teardown's SIGTERM to be seen.
    let _ = lab.signal_device("b", libc::SIGCONT);
    match r {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("mirror-failover: {e}{}", lab.dump());
            1
        }
    }
}

/// Descriptors this process (clients and echo servers: two per connection) and the daemons
/// it starts (they inherit it; lbd's budget is a share of it) may hold.
const NOFILE: u64 = 200_000;

/// Raises `RLIMIT_NOFILE` to [`NOFILE`] (as root, the hard limit too), or as far as allowed.
fn raise_nofile() {
    let mut r = libc::rlimit {
        rlim_cur: NOFILE,
        rlim_max: NOFILE,
    };
    // SAFETY: getrlimit/setrlimit on a valid, initialized struct.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0
            && libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0
        {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// An echo server in each server namespace: one task per connection, lines echoed.
fn start_echo(lab: &ClusterLab) -> Res<()> {
    for ns in &lab.servers {
        let listener = ns
            .run_in(|| std::net::TcpListener::bind(("0.0.0.0", ECHO_PORT)))
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("echo bind: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        std::thread::Builder::new()
            .name("echo".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    let l = tokio::net::TcpListener::from_std(listener).expect("listener");
                    while let Ok((c, _)) = l.accept().await {
                        tokio::spawn(async move {
                            let (rd, mut wr) = c.into_split();
                            let mut lines = BufReader::new(rd).lines();
                            while let Ok(Some(l)) = lines.next_line().await {
                                if wr.write_all(format!("{l}\n").as_bytes()).await.is_err() {
                                    break;
                                }
                            }
                        });
                    }
                });
            })
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One line out, the same line back, within `limit`.
async fn echo(c: &mut tokio::net::TcpStream, line: &str, limit: Duration) -> Res<()> {
    let go = async {
        c.write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut r = BufReader::new(&mut *c);
        r.read_until(b'\n', &mut buf)
            .await
            .map_err(|e| e.to_string())?;
        if buf == format!("{line}\n").as_bytes() {
            Ok(())
        } else {
            Err(format!("echo `{}`", String::from_utf8_lossy(&buf).trim()))
        }
    };
    tokio::time::timeout(limit, go)
        .await
        .map_err(|_| "timed out".to_string())?
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// `n` connections from the client namespace, each after one echo.
fn open(lab: &ClusterLab, n: usize) -> Res<Vec<std::net::TcpStream>> {
    let vip: SocketAddr = format!("{VIP}:{PORT}").parse().map_err(|_| "vip")?;
    lab.client
        .run_in(move || {
            runtime().block_on(async move {
                let mut out = Vec::with_capacity(n);
                let mut errors = 0usize;
                let mut samples: Vec<String> = Vec::new();
                while out.len() < n && errors < n / 10 + 10 {
                    let want = (n - out.len()).min(PARALLEL);
                    let mut set = tokio::task::JoinSet::new();
                    for _ in 0..want {
                        set.spawn(async move {
                            let mut c = tokio::net::TcpStream::connect(vip)
                                .await
                                .map_err(|e| e.to_string())?;
                            echo(&mut c, "hello", Duration::from_secs(5)).await?;
                            c.into_std().map_err(|e| e.to_string())
                        });
                    }
                    while let Some(r) = set.join_next().await {
                        match r {
                            Ok(Ok(c)) => out.push(c),
                            Ok(Err(e)) => {
                                errors += 1;
                                if samples.len() < 5 && !samples.contains(&e) {
                                    samples.push(e);
                                }
                            }
                            Err(e) => {
                                errors += 1;
                                samples.push(e.to_string());
                            }
                        }
                    }
                }
                if out.len() < n {
                    Err(format!(
                        "opened {} of {n} connections ({errors} errors: {samples:?})",
                        out.len()
                    ))
                } else {
                    Ok(out)
                }
            })
        })
        .map_err(|e| e.to_string())?
}

/// Each connection's echo after the failover: (time from `event` to its answer, or the error).
fn exchange(
    lab: &ClusterLab,
    conns: Vec<std::net::TcpStream>,
    event: Instant,
) -> Res<Vec<Result<Duration, String>>> {
    lab.client
        .run_in(move || {
            runtime().block_on(async move {
                let mut out = Vec::with_capacity(conns.len());
                let mut iter = conns.into_iter();
                loop {
                    let mut set = tokio::task::JoinSet::new();
                    for c in iter.by_ref().take(PARALLEL * 4) {
                        set.spawn(async move {
                            let mut c =
                                tokio::net::TcpStream::from_std(c).map_err(|e| e.to_string())?;
                            echo(&mut c, "after the failover", Duration::from_secs(10)).await?;
                            Ok(event.elapsed())
                        });
                    }
                    if set.is_empty() {
                        break;
                    }
                    while let Some(r) = set.join_next().await {
                        out.push(r.unwrap_or_else(|e| Err(e.to_string())));
                    }
                }
                out
            })
        })
        .map_err(|e| e.to_string())
}

fn measure(lab: &ClusterLab, n: usize, budget: Option<&str>) -> Res<bool> {
    start_echo(lab)?;
    for d in DEVICES {
        lab.start_device(d.name).map_err(|e| e.to_string())?;
    }
    lab.wait_steady(Duration::from_secs(60))?;
    lab.client
        .sysctl("net.ipv4.ip_local_port_range", "1024 65000")
        .map_err(|e| e.to_string())?;
    spanlb_tests::mirror::route_vip_through(lab, "b")?;

    eprintln!("mirror-failover: opening {n} connections through b");
    let t = Instant::now();
    let conns = open(lab, n)?;
    eprintln!(
        "mirror-failover: {} connections open after {} ms",
        conns.len(),
        t.elapsed().as_millis()
    );
    let t = Instant::now();
    let mirrored =
        spanlb_lab::wait_until_dbg(Duration::from_secs(180), "c holds every connection", || {
            let m = lab.lbctl("c", &["show", "mirroring"])?;
            let held = receiver(&m, "tg-2")["records"]["tcp_connections"]
                .as_u64()
                .unwrap_or(0) as usize;
            if held >= n {
                Ok(held)
            } else {
                Err(format!("{held}"))
            }
        })
        .map_err(|e| e.to_string())?;
    let mirror_ms = t.elapsed().as_millis();
    eprintln!("mirror-failover: c holds {mirrored} mirrored connections after {mirror_ms} ms");

    let event = Instant::now();
    lab.signal_device("b", libc::SIGSTOP)
        .map_err(|e| e.to_string())?;
    lab.wait_placement(&[("tg-2", "c")], Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    let placed_ms = event.elapsed().as_millis();
    // Placed is not yet there: C rebuilds (within its budget) before it adds the addresses, and
    // its control socket answers meanwhile. A client that sent before the addresses moved would
    // reach B's kernel, which still acknowledges for the hung lbd: those bytes would be lost.
    spanlb_lab::wait_until_dbg(Duration::from_secs(60), "tg-2's addresses on c", || {
        let v = lab.lbctl("c", &["show", "traffic-groups"])?;
        let list = v
            .get("traffic_groups")
            .or_else(|| v.get("data").and_then(|d| d.get("traffic_groups")))
            .and_then(|l| l.as_array())
            .cloned()
            .unwrap_or_default();
        let here = list
            .iter()
            .any(|t| t["name"] == "tg-2" && t["here"] == true);
        if here {
            Ok(())
        } else {
            Err("tg-2 not here yet".to_string())
        }
    })
    .map_err(|e| e.to_string())?;
    let active_ms = event.elapsed().as_millis();
    let results = exchange(lab, conns, event)?;
    let mut times: Vec<u128> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(Duration::as_millis))
        .collect();
    times.sort_unstable();
    let ok = times.len();
    let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let pct = |p: usize| times.get((times.len() * p / 100).min(times.len().saturating_sub(1)));
    let log = std::fs::read_to_string(lab.lab.dir().join("lbd-c.log")).unwrap_or_default();
    let last_line = |what: &str| -> Option<String> {
        log.lines()
            .rev()
            .find(|l| l.contains(what) && l.contains("tg-2"))
            .map(str::to_string)
    };
    // Before the addresses moved (within the budget), and the remainder after them.
    let rebuilt = last_line("flows and connections rebuilt")
        .unwrap_or_else(|| "(no rebuild line in c's log)".to_string());
    let remainder = last_line("rebuilt after the addresses");
    let field = |line: &str, k: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap_or("?")
            .to_string()
    };
    println!("c's rebuild: {rebuilt}");
    if let Some(r) = &remainder {
        println!("c's rebuild after the addresses: {r}");
    }
    if let Some(e) = errors.first() {
        println!("first error: {e}");
    }
    let after = match &remainder {
        Some(r) => format!(
            ", then {} more after the addresses ({} ms from the start, {} failed)",
            field(r, "rebuilt_after_addresses"),
            field(r, "elapsed_ms"),
            field(r, "failed"),
        ),
        None => String::new(),
    };
    println!(
        "failover with {n} mirrored connections (takeover_restore_budget {}): tg-2 placed on c \
         after {placed_ms} ms, its addresses there after {active_ms} ms; c rebuilt {} in {} ms before the addresses{after}; {ok} of {n} \
         answered after the hang (p50 {} ms, p99 {} ms, max {} ms); mirroring took {mirror_ms} \
         ms to hold them",
        budget.unwrap_or("default"),
        field(&rebuilt, "rebuilt_before_addresses"),
        field(&rebuilt, "elapsed_ms"),
        pct(50).copied().unwrap_or(0),
        pct(99).copied().unwrap_or(0),
        times.last().copied().unwrap_or(0),
    );
    Ok(ok * 100 >= n * 99)
}
