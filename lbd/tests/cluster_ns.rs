//! lbd with a device group, in a network namespace, against a recording stand-in for bgpd's
//! control socket: the order of operations docs/design.md, "ECMP and failover" asks for, route health injection, the
//! link fail-safe, standby/release, and re-announcing after bgpd comes back.
//!
//! Device `a` runs in namespace A (interfaces ext0 and int0, a veth pair each to namespace N,
//! its neighbour). Its group has a second device `b` that never speaks, so `a` takes both
//! traffic groups after listening. The stand-in answers every request `{"ok":true}` and,
//! before answering, notes which floating addresses A has at that moment: lbd waits for the
//! answer, so this is the state at the time of the request.
//!
//! Needs root and `ip`: without root each test says why on one line and passes, except under
//! CI=true, where it fails. Namespaces and processes go away when the test ends, also on panic;
//! every wait is bounded.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use spanlb_lab::seed::{GroupToml, DEVICES};
use spanlb_lab::{lab_prereqs, Lab, Ns, Proc};

const WAIT: Duration = Duration::from_secs(10);

/// One recorded request: the request, and the addresses A had on ext0 and int0 then.
#[derive(Debug, Clone)]
struct Seen {
    req: Value,
    addrs: String,
}

/// The stand-in for bgpd: accepts connections on a Unix socket, records, answers ok.
struct FakeBgpd {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Closes the current connection when set (bgpd restarting).
    conns: Arc<Mutex<Vec<UnixStream>>>,
}

impl FakeBgpd {
    fn start(path: &PathBuf, ns: Ns) -> FakeBgpd {
        let l = UnixListener::bind(path).expect("bind fake bgpd socket");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let conns: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
        let (s2, c2) = (seen.clone(), conns.clone());
        std::thread::spawn(move || {
            for s in l.incoming().take(20) {
                let Ok(s) = s else { return };
                c2.lock().unwrap().push(s.try_clone().unwrap());
                let (s3, ns) = (s2.clone(), ns.clone());
                std::thread::spawn(move || {
                    let mut w = s.try_clone().unwrap();
                    for line in BufReader::new(s).lines().take(10_000) {
                        let Ok(line) = line else { return };
                        let req: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                        let addrs = ns.ip(&["-o", "addr", "show"]).unwrap_or_default();
                        s3.lock().unwrap().push(Seen { req, addrs });
                        if w.write_all(b"{\"ok\":true}\n").is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeBgpd { seen, conns }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until a request matching `pred` was recorded at index >= `from`.
    fn wait_for(&self, from: usize, what: &str, pred: impl Fn(&Value) -> bool) -> (usize, Seen) {
        let deadline = Instant::now() + WAIT;
        loop {
            let seen = self.seen();
            if let Some((i, s)) = seen
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, s)| pred(&s.req))
            {
                return (i, s.clone());
            }
            assert!(
                Instant::now() < deadline,
                "no {what} request; seen: {:#?}",
                seen.iter().map(|s| &s.req).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn drop_connections(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn routes_with(req: &Value, cmd: &str, path_id: u64) -> bool {
    req["cmd"] == cmd
        && req["routes"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["path_id"] == path_id))
}

struct Device {
    /// Device a's namespace, and its neighbour's (the far ends of ext0 and int0: p0, p1).
    ns: Ns,
    peer: Ns,
    dir: PathBuf,
    lbd: Proc,
    fake: FakeBgpd,
    /// Kills lbd and deletes the namespaces on drop (also on panic).
    _lab: Lab,
}

impl Device {
    fn new() -> Device {
        Device::with_group_extra("")
    }

    /// `tg2_extra`: lines added to tg-2 in the group file.
    fn with_group_extra(tg2_extra: &str) -> Device {
        let lab = Lab::new("cluster_ns").unwrap();
        let (ns, peer) = (lab.ns("a").unwrap(), lab.ns("n").unwrap());
        let dir = lab.dir().to_path_buf();
        for (i, ifname) in ["ext0", "int0"].iter().enumerate() {
            lab.veth((&ns, ifname), (&peer, &format!("p{i}"))).unwrap();
        }
        for (ifname, cidr) in [
            ("ext0", "20.1.1.6/24"),
            ("ext0", "192.168.100.6/24"),
            ("int0", "10.1.1.6/24"),
            // Left over from an earlier run: lbd must remove it at start.
            ("ext0", "20.1.1.3/24"),
        ] {
            ns.add_addr(ifname, cidr).unwrap();
        }
        std::fs::write(dir.join("key"), "00112233445566778899aabbccddeeff\n").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.join("key"), std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }
        // The seed group's devices a and b, their traffic groups tg-1 and tg-2, fast timers,
        // lbd's defaults for everything else.
        let key = dir.join("key");
        let group = GroupToml {
            name: "t",
            devices: &DEVICES[..2],
            heartbeat_interval: "50ms",
            dead_after: "300ms",
            route_mode: None,
            second_failover_path: false,
            mirror_addresses: false,
            auto_failback: None,
            failback_delay: None,
            path_id: false,
            tg_extra: &[("tg-2", tg2_extra)],
            ..GroupToml::seed(&key)
        };
        std::fs::write(dir.join("group.toml"), group.render()).unwrap();
        let sock = dir.join("bgpd.sock");
        std::fs::write(
            dir.join("lbd.toml"),
            format!(
                r#"
[device]
name = "a"
internal_address = "10.1.1.6"
control_socket = "{ctl}"
workers = 1
device_group = "{group}"
external_interface = "ext0"
internal_interface = "int0"
bgpd_socket = "{sock}"
[[virtual_addresses]]
address = "30.1.1.10"
advertise = "any"
[virtual_servers.web]
destination = "30.1.1.10:80"
pool = "web"
[pools.web]
members = [{{ address = "10.1.1.50:8080" }}]
"#,
                ctl = dir.join("lbd.sock").display(),
                group = dir.join("group.toml").display(),
                sock = sock.display(),
            ),
        )
        .unwrap();
        let fake = FakeBgpd::start(&sock, ns.clone());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lbd"));
        cmd.arg("--config")
            .arg(dir.join("lbd.toml"))
            .env("RUST_LOG", "info,lbd=debug");
        let lbd = ns.spawn_cmd(cmd, "lbd.log").unwrap();
        Device {
            ns,
            peer,
            dir,
            lbd,
            fake,
            _lab: lab,
        }
    }

    fn log(&self) -> String {
        self.lbd.log()
    }

    fn lbctl(&self, args: &[&str]) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let out = Command::new(env!("CARGO_BIN_EXE_lbctl"))
                .arg("--socket")
                .arg(self.dir.join("lbd.sock"))
                .arg("--json")
                .args(args)
                .output()
                .unwrap();
            if out.status.success() {
                return serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            }
            assert!(
                Instant::now() < deadline,
                "lbctl {args:?}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn addrs(&self) -> String {
        self.ns.ip(&["-o", "addr", "show"]).unwrap()
    }
}

fn has(addrs: &str, a: &str) -> bool {
    addrs.contains(&format!(" {a}/"))
}

#[test]
fn takeover_adds_addresses_before_routes_and_release_withdraws_before_removing() {
    lab_prereqs!([]);
    let d = Device::new();
    // Takes both traffic groups (b never speaks) after listening.
    let (i1, s1) = d
        .fake
        .wait_for(0, "announce path 1", |r| routes_with(r, "announce", 1));
    let (_, s2) = d
        .fake
        .wait_for(0, "announce path 2", |r| routes_with(r, "announce", 2));
    assert!(
        has(&s1.addrs, "20.1.1.2") && has(&s1.addrs, "10.1.1.2"),
        "{}",
        s1.addrs
    );
    assert!(
        has(&s2.addrs, "20.1.1.3") && has(&s2.addrs, "10.1.1.3"),
        "{}",
        s2.addrs
    );
    let r = &s1.req["routes"][0];
    assert_eq!(r["prefix"], "30.1.1.10/32");
    assert_eq!(r["next_hop"], "20.1.1.2");
    // The stale address was removed at start, before anything was claimed.
    assert!(d.log().contains("removed stale 20.1.1.3/24"), "{}", d.log());
    // The VIP sits on lo.
    assert!(has(&d.addrs(), "30.1.1.10"), "{}", d.addrs());
    // SNAT automap follows the home traffic group.
    let g = d.lbctl(&["show", "device-group"]);
    assert_eq!(
        g["device_group"]["local"]["attribution"]["automap_v4"],
        "10.1.1.2"
    );

    // Standby: graceful withdraw while the addresses are still there, then they go.
    d.lbctl(&["standby"]);
    let (iw, w) = d.fake.wait_for(i1, "withdraw", |r| r["cmd"] == "withdraw");
    assert_eq!(w.req["graceful"], true, "{:?}", w.req);
    let n = w.req["routes"].as_array().unwrap().len()
        + d.fake.seen()[iw + 1..]
            .iter()
            .filter(|s| s.req["cmd"] == "withdraw")
            .map(|s| s.req["routes"].as_array().unwrap().len())
            .sum::<usize>();
    assert!(n >= 1);
    assert!(
        has(&w.addrs, "20.1.1.2") || has(&w.addrs, "20.1.1.3"),
        "{}",
        w.addrs
    );
    let deadline = Instant::now() + WAIT;
    while has(&d.addrs(), "20.1.1.2") || has(&d.addrs(), "20.1.1.3") {
        assert!(
            Instant::now() < deadline,
            "addresses not removed: {}",
            d.addrs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let g = d.lbctl(&["show", "device-group"]);
    assert_eq!(g["device_group"]["standby"], true);
    assert_eq!(
        g["device_group"]["local"]["attribution"]["automap_v4"],
        Value::Null
    );

    // Release: both come back.
    let from = d.fake.seen().len();
    d.lbctl(&["release"]);
    d.fake.wait_for(from, "announce path 1 again", |r| {
        routes_with(r, "announce", 1)
    });
}

#[test]
fn route_health_bgpd_restart_and_link_fail_safe() {
    lab_prereqs!([]);
    let d = Device::new();
    let (i, _) = d
        .fake
        .wait_for(0, "announce path 1", |r| routes_with(r, "announce", 1));

    // Route health: the only member forced offline → the VIP is withdrawn at once.
    d.lbctl(&["member", "web", "10.1.1.50:8080", "force-offline"]);
    let (j, w) = d
        .fake
        .wait_for(i, "route-health withdraw", |r| r["cmd"] == "withdraw");
    assert_eq!(w.req["graceful"], false, "{:?}", w.req);
    // The traffic group stays here: only the route goes.
    assert!(has(&d.addrs(), "20.1.1.2"), "{}", d.addrs());
    let vas = d.lbctl(&["show", "virtual-addresses"]);
    assert_eq!(vas[0]["advertised"], false, "{vas}");
    d.lbctl(&["member", "web", "10.1.1.50:8080", "enable"]);
    let (k, _) = d.fake.wait_for(j, "announce after health", |r| {
        routes_with(r, "announce", 1)
    });

    // bgpd restarts (connection closed): lbd reconnects and announces everything again.
    d.fake.drop_connections();
    let (k2, again) = d
        .fake
        .wait_for(k + 1, "re-announce", |r| r["cmd"] == "announce");
    assert_eq!(
        again.req["routes"].as_array().unwrap().len(),
        2,
        "{:?}",
        again.req
    );

    // Fail-safe: ext0 down → every traffic group released.
    d.ns.link_down("int0").unwrap();
    d.fake
        .wait_for(k2, "fail-safe withdraw", |r| r["cmd"] == "withdraw");
    let deadline = Instant::now() + WAIT;
    loop {
        let tgs = d.lbctl(&["show", "traffic-groups"]);
        let here = tgs["traffic_groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "active")
            .count();
        if here == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "still active: {tgs}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let g = d.lbctl(&["show", "device-group"]);
    assert_eq!(g["device_group"]["local"]["links"]["int0"], false, "{g}");
}

#[test]
fn mac_masquerade_moves_the_mac_and_names_the_traffic_group_of_what_arrives_on_it() {
    lab_prereqs!([]);
    let d = Device::with_group_extra("mac_masquerade = \"02:00:5e:00:01:02\"");
    d.fake
        .wait_for(0, "announce path 2", |r| routes_with(r, "announce", 2));
    // tg-2's floating external address lives on its macvlan, with the masquerade MAC.
    let link = d.ns.ip(&["-o", "link", "show", "tg2"]).unwrap();
    assert!(link.contains("02:00:5e:00:01:02"), "{link}");
    let on_tg2 = d.ns.ip(&["-o", "addr", "show", "dev", "tg2"]).unwrap();
    assert!(on_tg2.contains(" 20.1.1.3/24"), "{on_tg2}");
    // The neighbour learned the masquerade MAC for it from the announcement.
    d.peer.add_addr("p0", "20.1.1.1/24").unwrap();
    d.peer.add_addr("p1", "10.1.1.50/24").unwrap();
    // A member in the neighbour namespace (behind int0), and the VIP routed via Ek.
    let server = d.peer.spawn(
        &[
            "python3",
            "-c",
            "import socket,time\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('10.1.1.50',8080));s.listen(16)\nc=[]\nwhile True:\n c.append(s.accept()[0])",
        ],
        "server.log",
    );
    let Ok(server) = server else {
        panic!("python3 is needed for this test");
    };
    let via = |ek: &str| -> String {
        d.peer
            .route(&format!("replace 30.1.1.10/32 via {ek}"))
            .unwrap();
        let mut client = d
            .peer
            .command(&["python3", "-c"])
            .arg(
                "import socket,time\nfor i in range(50):\n try:\n  s=socket.create_connection(('30.1.1.10',80),timeout=2);break\n except OSError: time.sleep(0.1)\ntime.sleep(1.5)",
            )
            .spawn()
            .unwrap();
        // While that connection is open, lbd's table shows it.
        let deadline = Instant::now() + WAIT;
        let found = loop {
            let conns = d.lbctl(&["show", "connections"]);
            if let Some(c) = conns["connections"].as_array().and_then(|c| c.first()) {
                break Some(format!(
                    "{} {}",
                    c["traffic_group"].as_str().unwrap_or("-"),
                    c["snat"].as_str().unwrap_or("-")
                ));
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = client.kill();
        let _ = client.wait();
        found.unwrap_or_else(|| panic!("no connection through lbd\n{}", d.log()))
    };
    let neigh_seen = {
        let deadline = Instant::now() + WAIT;
        loop {
            let _ = d.peer.command(&["ping", "-c1", "-W1", "20.1.1.3"]).output();
            let n = d.peer.ip(&["neigh", "show", "20.1.1.3"]).unwrap();
            if n.contains("02:00:5e:00:01:02") || Instant::now() > deadline {
                break n;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert!(neigh_seen.contains("02:00:5e:00:01:02"), "{neigh_seen}");
    let via_tg2 = via("20.1.1.3");
    server.kill();
    assert!(via_tg2.starts_with("tg-2 10.1.1.3:"), "{via_tg2}");
}
