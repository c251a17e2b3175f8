//! Namespace lab harness tests. They need root and iproute2 (FRR tests also FRR); they skip
//! without them, and fail under CI=true.

use std::path::Path;
use std::time::Duration;

use spanlb_lab::{lab_prereqs, proc_state, wait_until, wait_until_dbg, Lab, LabError};

fn netns_list() -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_gone(names: &[String]) {
    let list = netns_list();
    for n in names {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(n.as_str())),
            "namespace {n} still listed:\n{list}"
        );
        assert!(
            !Path::new("/run/netns").join(n).exists(),
            "{n} still in /run/netns"
        );
    }
}

/// One echo answered within 3 s: a positive check that allows for neighbor resolution on a
/// busy machine (`ping` waits 1 s; the negative checks keep it).
fn up(ns: &spanlb_lab::Ns, addr: &str) -> bool {
    ns.ping_timeout(addr, Duration::from_secs(3))
        .unwrap_or(false)
}

#[test]
fn veth_ping_between_two_namespaces() {
    lab_prereqs!([]);
    let lab = Lab::new("veth_ping").unwrap();
    let a = lab.ns("a").unwrap();
    let b = lab.ns("b").unwrap();
    assert!(a.name().starts_with(lab.prefix()) && a.name().ends_with("-a"));
    lab.veth((&a, "eth0"), (&b, "eth0")).unwrap();
    a.add_addr("eth0", "192.0.2.1/24").unwrap();
    b.add_addr("eth0", "192.0.2.2/24").unwrap();
    assert!(up(&a, "192.0.2.2"), "a -> b");
    assert!(up(&b, "192.0.2.1"), "b -> a");
    // IPv6 (nodad: usable at once) and bounded failures.
    a.add_addr("eth0", "2001:db8::1/64").unwrap();
    b.add_addr("eth0", "2001:db8::2/64").unwrap();
    assert!(up(&a, "2001:db8::2"), "a -> b over IPv6");
    let t = std::time::Instant::now();
    assert!(!a.ping("192.0.2.99"), "nobody has .99");
    assert!(!a.ping("198.51.100.1"), "no route");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "ping is bounded: {:?}",
        t.elapsed()
    );
    assert!(a.ping_timeout("not-an-ip", Duration::from_secs(1)).is_err());
    // Nothing was created in the root namespace.
    let root_links = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&root_links.stdout).contains(lab.prefix()));
    // exec errors carry stderr.
    let err = a
        .exec(&["ip", "link", "set", "nonexistent0", "up"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nonexistent0") && err.contains("exit status"),
        "{err}"
    );
    // sysctl writes the namespace's own value.
    a.sysctl("net.ipv4.ip_forward", "1").unwrap();
    assert_eq!(
        a.sh("cat /proc/sys/net/ipv4/ip_forward").unwrap().trim(),
        "1"
    );
    assert_eq!(
        b.sh("cat /proc/sys/net/ipv4/ip_forward").unwrap().trim(),
        "0"
    );
}

#[test]
fn bridge_segment_with_three_members() {
    lab_prereqs!([]);
    let lab = Lab::new("bridge3").unwrap();
    let r1 = lab.ns("r1").unwrap();
    let a = lab.ns("a").unwrap();
    let b = lab.ns("b").unwrap();
    let seg = lab
        .bridge_segment(
            "ext",
            &[
                (&r1, "ext0", &["20.1.1.1/24"]),
                (&a, "ext0", &["20.1.1.6/24", "20.1.1.2/24"]),
                (&b, "ext0", &["20.1.1.7/24"]),
            ],
        )
        .unwrap();
    assert_eq!(seg.bridge(), "br-ext");
    assert_eq!(seg.switch().name(), format!("{}-sw", lab.prefix()));
    let members = [(&r1, "20.1.1.1"), (&a, "20.1.1.6"), (&b, "20.1.1.7")];
    for (from, _) in &members {
        for (to, addr) in &members {
            if from.name() != to.name() {
                assert!(up(from, addr), "{} -> {addr}", from.name());
            }
        }
    }
    assert!(up(&r1, "20.1.1.2"), "secondary address");
    // A fourth member joins later; cutting its port at the switch isolates it.
    let c = lab.ns("c").unwrap();
    let seg = lab
        .bridge_segment("ext", &[(&c, "ext0", &["20.1.1.8/24"])])
        .unwrap();
    assert!(up(&c, "20.1.1.1"));
    seg.set_port(&c, "ext0", false).unwrap();
    assert!(!c.ping("20.1.1.1"), "cut link still forwards");
    seg.set_port(&c, "ext0", true).unwrap();
    wait_until(Duration::from_secs(5), "c reaches r1 again", || {
        c.ping("20.1.1.1").then_some(())
    })
    .unwrap();
    // Bad names are refused, not truncated.
    assert!(matches!(
        lab.bridge_segment("way_too_long_name", &[]),
        Err(LabError::Invalid(_))
    ));
    assert!(matches!(
        lab.veth((&a, "abcdefghijklmnop"), (&b, "x")),
        Err(LabError::Invalid(_))
    ));
}

const FRR_CONF: &str = "frr defaults datacenter
hostname r1
!
router bgp 65000
 bgp router-id 192.0.2.1
 neighbor 192.0.2.2 remote-as 65001
!
";

#[test]
fn frr_answers_vtysh_in_a_namespace() {
    lab_prereqs!(["vtysh", "/usr/lib/frr/zebra", "/usr/lib/frr/bgpd"]);
    let lab = Lab::new("frr_basic").unwrap();
    let r1 = lab.ns("r1").unwrap();
    let peer = lab.ns("peer").unwrap();
    lab.veth((&r1, "eth0"), (&peer, "eth0")).unwrap();
    r1.add_addr("eth0", "192.0.2.1/24").unwrap();
    peer.add_addr("eth0", "192.0.2.2/24").unwrap();
    let frr = lab.frr(&r1, FRR_CONF).unwrap();
    assert!(frr.dir().join("zebra.pid").exists() && frr.dir().join("bgpd.pid").exists());

    let summary = frr.vtysh_json("show bgp summary json").unwrap();
    assert_eq!(summary["ipv4Unicast"]["as"], 65000, "{summary:#}");
    assert_eq!(
        summary["ipv4Unicast"]["routerId"], "192.0.2.1",
        "{summary:#}"
    );
    let peer_state = &summary["ipv4Unicast"]["peers"]["192.0.2.2"]["state"];
    assert!(
        peer_state.is_string() && peer_state != "Established",
        "{summary:#}"
    );

    let route = wait_until_dbg(
        Duration::from_secs(10),
        "connected 192.0.2.0/24 in zebra",
        || {
            let routes = frr
                .vtysh_json("show ip route json")
                .map_err(|e| e.to_string())?;
            match routes.get("192.0.2.0/24") {
                Some(r) => Ok(r[0].clone()),
                None => Err(routes.to_string()),
            }
        },
    )
    .unwrap();
    assert_eq!(route["protocol"], "connected");
    assert_eq!(route["nexthops"][0]["interfaceName"], "eth0");

    // Errors are errors: unknown commands and non-JSON output.
    assert!(frr.vtysh("show no-such-thing").is_err());
    assert!(matches!(
        frr.vtysh_json("show version"),
        Err(LabError::Json { .. })
    ));

    // Configuration through vtysh works and is per instance.
    frr.vtysh_cmds(&[
        "configure terminal",
        "router bgp 65000",
        "neighbor 192.0.2.3 remote-as 65002",
    ])
    .unwrap();
    let summary = frr.vtysh_json("show bgp summary json").unwrap();
    assert!(
        summary["ipv4Unicast"]["peers"]["192.0.2.3"].is_object(),
        "{summary:#}"
    );

    let zebra = frr.pid("zebra").unwrap();
    let bgpd = frr.pid("bgpd").unwrap();
    let ns = r1.name().to_string();
    let names = lab.namespaces();
    drop(lab);
    assert_gone(&names);
    for p in [zebra, bgpd] {
        assert!(
            matches!(proc_state(p), None | Some('Z')),
            "FRR pid {p} survived the lab"
        );
    }
    assert!(
        !Path::new("/run/frr").join(&ns).exists(),
        "/run/frr/{ns} left behind"
    );
}

/// Two labs at once (threads of one process): same short names, both with FRR, each vtysh
/// sees only its own instance.
#[test]
fn two_labs_concurrently_do_not_collide() {
    lab_prereqs!(["vtysh", "/usr/lib/frr/zebra", "/usr/lib/frr/bgpd"]);
    let run = |asn: u32| {
        std::thread::spawn(move || {
            let lab = Lab::new("concurrent").unwrap();
            let r1 = lab.ns("r1").unwrap();
            let c = lab.ns("c").unwrap();
            // Same interface names and addresses in both labs.
            lab.bridge_segment(
                "ext",
                &[
                    (&r1, "ext0", &["20.1.1.1/24"]),
                    (&c, "ext0", &["20.1.1.9/24"]),
                ],
            )
            .unwrap();
            let frr = lab
                .frr(
                    &r1,
                    &format!(
                        "frr defaults datacenter\nrouter bgp {asn}\n bgp router-id 20.1.1.1\n!\n"
                    ),
                )
                .unwrap();
            assert!(up(&c, "20.1.1.1"));
            let cfg = frr.vtysh("show running-config").unwrap();
            assert!(cfg.contains(&format!("router bgp {asn}\n")), "{cfg}");
            let other = if asn == 65101 { 65102 } else { 65101 };
            assert!(!cfg.contains(&format!("router bgp {other}")), "{cfg}");
            (lab.prefix().to_string(), lab.namespaces())
        })
    };
    let (t1, t2) = (run(65101), run(65102));
    let (p1, n1) = t1.join().unwrap();
    let (p2, n2) = t2.join().unwrap();
    assert_ne!(p1, p2);
    assert_gone(&n1);
    assert_gone(&n2);
}

/// The same from two processes at once (as cargo-nextest runs tests): re-runs this binary's
/// FRR test twice in parallel.
#[test]
fn two_processes_concurrently_do_not_collide() {
    lab_prereqs!(["vtysh", "/usr/lib/frr/zebra", "/usr/lib/frr/bgpd"]);
    let exe = std::env::current_exe().unwrap();
    let spawn = move || {
        std::process::Command::new(&exe)
            .args([
                "--exact",
                "frr_answers_vtysh_in_a_namespace",
                "--test-threads",
                "1",
            ])
            .output()
            .unwrap()
    };
    let h = std::thread::spawn(spawn.clone());
    let a = spawn();
    let b = h.join().unwrap();
    for out in [a, b] {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "child failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn drop_removes_namespaces_and_processes() {
    lab_prereqs!(["sleep"]);
    let lab = Lab::new("drop").unwrap();
    let a = lab.ns("a").unwrap();
    let b = lab.ns("b").unwrap();
    lab.bridge_segment(
        "x",
        &[(&a, "x0", &["10.9.0.1/24"]), (&b, "x0", &["10.9.0.2/24"])],
    )
    .unwrap();
    let tracked = a.spawn(&["sleep", "300"], "sleep.log").unwrap();
    // A process the lab did not spawn, double-forked out of reach: found via `ip netns pids`.
    b.sh("setsid sleep 301 >/dev/null 2>&1 < /dev/null &")
        .unwrap();
    let stray = wait_until(Duration::from_secs(5), "stray sleep in b", || {
        b.exec_ok(&["ip", "netns", "pids", b.name()])
            .ok()?
            .split_whitespace()
            .next()?
            .parse::<u32>()
            .ok()
    })
    .unwrap();
    let dir = lab.dir().to_path_buf();
    assert!(dir.is_dir());
    let names = lab.namespaces();
    assert_eq!(names.len(), 3, "a, b and the switch: {names:?}");
    let tracked_pid = tracked.pid();
    drop(lab);
    assert_gone(&names);
    assert!(
        !tracked.is_running(),
        "tracked process {tracked_pid} still running"
    );
    wait_until(Duration::from_secs(2), "stray process to die", || {
        matches!(proc_state(stray), None | Some('Z')).then_some(())
    })
    .unwrap();
    assert!(!dir.exists(), "lab dir not removed on success");
    // Operations on a torn-down lab's namespace fail instead of acting elsewhere.
    assert!(a.exec(&["true"]).is_err());
    assert!(a.spawn(&["true"], "x.log").is_err());
}

#[test]
fn panic_inside_a_lab_still_cleans_up() {
    lab_prereqs!([]);
    let seen = std::sync::Mutex::new((Vec::new(), None));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::new("panics").unwrap();
        let a = lab.ns("a").unwrap();
        let _p = a.spawn(&["sleep", "300"], "sleep.log").unwrap();
        *seen.lock().unwrap() = (lab.namespaces(), Some(lab.dir().to_path_buf()));
        panic!("deliberate panic inside a lab");
    }));
    assert!(r.is_err());
    let (names, dir) = seen.into_inner().unwrap();
    let dir = dir.unwrap();
    assert_gone(&names);
    assert!(
        dir.join("sleep.log").exists(),
        "logs must be kept when the test panicked"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn proc_signals_wait_and_log() {
    lab_prereqs!(["sleep"]);
    let lab = Lab::new("proc").unwrap();
    let a = lab.ns("a").unwrap();
    let p = a
        .spawn(
            &["sh", "-c", "echo out; echo err >&2; exec sleep 300"],
            "sh.log",
        )
        .unwrap();
    // It really runs inside the namespace.
    let ident = std::process::Command::new("ip")
        .args(["netns", "identify", &p.pid().to_string()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ident.stdout).trim(), a.name());
    wait_until(Duration::from_secs(5), "both lines in the log", || {
        let l = p.log();
        (l.contains("out") && l.contains("err")).then_some(())
    })
    .unwrap();
    p.signal(libc::SIGSTOP).unwrap();
    wait_until(Duration::from_secs(2), "stopped", || {
        (proc_state(p.pid()) == Some('T')).then_some(())
    })
    .unwrap();
    p.signal(libc::SIGCONT).unwrap();
    wait_until(Duration::from_secs(2), "resumed", || {
        (proc_state(p.pid()) == Some('S')).then_some(())
    })
    .unwrap();
    assert!(p.wait_timeout(Duration::from_millis(200)).is_none());
    p.signal(libc::SIGTERM).unwrap();
    let st = p
        .wait_timeout(Duration::from_secs(5))
        .expect("exits on SIGTERM");
    assert!(!st.success());
    assert!(
        p.signal(libc::SIGTERM).is_err(),
        "signalling an exited process is an error"
    );

    // A prepared Command keeps its env; kill() reaps.
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "echo \"v=$SPANLB_T\"; exec sleep 300"])
        .env("SPANLB_T", "42");
    let q = a.spawn_cmd(cmd, "env.log").unwrap();
    wait_until(Duration::from_secs(5), "env echoed", || {
        p_log_has(&q.log(), "v=42")
    })
    .unwrap();
    assert!(q.kill().is_some());
    assert!(!q.is_running());
}

fn p_log_has(log: &str, s: &str) -> Option<()> {
    log.contains(s).then_some(())
}

#[test]
fn stale_namespaces_of_dead_owners_are_swept() {
    lab_prereqs!([]);
    // A "crashed run": an owner pid that is dead, its marker and a namespace with a process.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let prefix = format!("sl{}-zz", radix36(dead));
    let ns = format!("{prefix}-old");
    std::fs::create_dir_all(spanlb_lab::MARKER_DIR).unwrap();
    std::fs::write(
        Path::new(spanlb_lab::MARKER_DIR).join(&prefix),
        format!("{dead} 1\n"),
    )
    .unwrap();
    assert!(std::process::Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .unwrap()
        .success());
    let sleeper = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "sleep", "300"])
        .spawn()
        .unwrap();
    let sleeper_pid = sleeper.id();
    // Give it a moment to enter the namespace.
    wait_until(Duration::from_secs(5), "sleeper inside", || {
        let out = std::process::Command::new("ip")
            .args(["netns", "pids", &ns])
            .output()
            .ok()?;
        (!out.stdout.is_empty()).then_some(())
    })
    .unwrap();
    let removed = spanlb_lab::purge_stale(false).unwrap();
    assert!(removed.contains(&ns), "{removed:?}");
    assert_gone(&[ns]);
    let mut sleeper = sleeper;
    let st = sleeper.wait().unwrap();
    assert!(!st.success(), "stale process {sleeper_pid} was not killed");
    assert!(!Path::new(spanlb_lab::MARKER_DIR).join(&prefix).exists());
    // A live owner (us) is never swept.
    let lab = Lab::new("live_owner").unwrap();
    let a = lab.ns("a").unwrap();
    assert!(!spanlb_lab::purge_stale(false)
        .unwrap()
        .contains(&a.name().to_string()));
    assert!(spanlb_lab::pid_of_prefix(lab.prefix()) == Some(std::process::id()));
}

fn radix36(mut n: u32) -> String {
    let mut s = Vec::new();
    loop {
        s.push(std::char::from_digit(n % 36, 36).unwrap());
        n /= 36;
        if n == 0 {
            break;
        }
    }
    s.iter().rev().collect()
}

/// `keep()` leaves namespaces and the directory for debugging; the stale sweep of later labs
/// leaves kept labs alone until `purge_stale(true)`.
#[test]
fn keep_leaves_the_lab_for_debugging() {
    lab_prereqs!([]);
    if std::env::var_os("SPANLB_LAB_TEST_KEEP_CHILD").is_some() {
        let lab = Lab::new("kept").unwrap();
        let a = lab.ns("a").unwrap();
        lab.keep();
        println!("KEPT-NS={} KEPT-DIR={}", a.name(), lab.dir().display());
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "keep_leaves_the_lab_for_debugging",
            "--nocapture",
        ])
        .env("SPANLB_LAB_TEST_KEEP_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let field = |k: &str| {
        stdout
            .split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {stdout}"))
            .to_string()
    };
    let ns = field("KEPT-NS=");
    let dir = field("KEPT-DIR=");
    assert!(
        Path::new("/run/netns").join(&ns).exists(),
        "kept namespace {ns} was deleted"
    );
    assert!(Path::new(&dir).is_dir());
    assert!(!spanlb_lab::purge_stale(false).unwrap().contains(&ns));
    assert!(Path::new("/run/netns").join(&ns).exists());
    assert!(spanlb_lab::purge_stale(true).unwrap().contains(&ns));
    assert_gone(&[ns]);
    std::fs::remove_dir_all(dir).unwrap();
}
