//! `cluster::netaddr` against a real kernel: two network namespaces made for the test (`a`, where
//! the code runs, and `b`, its neighbour on the segment) joined by a veth pair, checked with
//! `ip -n ...`. Needs root and `ip`: without root each test says why on one line and passes,
//! except under CI=true, where it fails. Every wait is bounded; nothing leaves the two
//! namespaces, which are deleted when the test ends, also on panic.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use lbd::cluster::netaddr::{self, NetAddr, NetAddrError};

/// The MAC of `vetha` in namespace a (the device taking over).
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_A_TEXT: &str = "02:00:00:00:00:0a";
/// What b's neighbour entries say before the announcement (a device that is gone).
const MAC_OLD_TEXT: &str = "02:00:00:00:00:99";
/// How long a test waits for the kernel to do something.
const WAIT: Duration = Duration::from_secs(2);

/// True if the test can run; false (after one line saying why) if it must be skipped.
fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ip = Command::new("ip").arg("-V").output().is_ok();
    if root && ip {
        return true;
    }
    let why = if root {
        "`ip` (iproute2) not found"
    } else {
        "not root"
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("netaddr namespace test cannot run under CI: {why}");
    }
    eprintln!("skipping netaddr namespace test: {why}");
    false
}

/// Runs `ip ARGS`, panicking with its stderr if it fails; returns stdout.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces `a` and `b` joined by `vetha` (in a, MAC_A) and `vethb` (in b), both up,
/// b holding 20.1.1.2/24 and fd00:20::2/64; deleted on drop.
struct Segment {
    a: String,
    b: String,
}

impl Segment {
    fn new() -> Segment {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = format!("lbdna-{}-{n}", std::process::id());
        let segment = Segment {
            a: format!("{base}-a"),
            b: format!("{base}-b"),
        };
        // The guard exists before anything is made, so a failure half-way still cleans up.
        ip(&["netns", "add", &segment.a]);
        ip(&["netns", "add", &segment.b]);
        let (a, b) = (segment.a.as_str(), segment.b.as_str());
        // Made directly inside the namespaces: the names never meet in the host's namespace.
        ip(&[
            "link",
            "add",
            "vetha",
            "netns",
            a,
            "address",
            MAC_A_TEXT,
            "type",
            "veth",
            "peer",
            "name",
            "vethb",
            "netns",
            b,
            "address",
            "02:00:00:00:00:0b",
        ]);
        for ns in [a, b] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", a, "link", "set", "vetha", "up"]);
        ip(&["-n", b, "link", "set", "vethb", "up"]);
        ip(&["-n", b, "addr", "add", "20.1.1.2/24", "dev", "vethb"]);
        ip(&[
            "-n",
            b,
            "addr",
            "add",
            "fd00:20::2/64",
            "dev",
            "vethb",
            "nodad",
        ]);
        segment
    }

    /// `ip -n a -o addr show dev vetha`.
    fn addrs_a(&self) -> String {
        ip(&["-n", &self.a, "-o", "addr", "show", "dev", "vetha"])
    }

    /// b's neighbour entry for `addr` on vethb, as `ip neigh` prints it.
    fn neigh_b(&self, addr: &str) -> String {
        ip(&["-n", &self.b, "neigh", "show", addr, "dev", "vethb"])
    }

    /// Waits (bounded) until b's entry for `addr` names `mac`; returns the last entry seen.
    fn wait_neigh_b(&self, addr: &str, mac: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let entry = self.neigh_b(addr);
            if entry.contains(mac) || Instant::now() >= deadline {
                return entry;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `body` inside namespace `ns` (see [`run_in`]).
    fn run_in<F, Fut>(&self, ns: &str, body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        run_in(ns, body)
    }
}

/// Runs `body` on a thread that has entered namespace `ns`, on a current-thread tokio
/// runtime there; a panic in `body` is the test's.
fn run_in<F, Fut>(ns: &str, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let path = format!("/var/run/netns/{ns}");
    let result = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open the namespace");
        // SAFETY: a valid namespace descriptor; only this thread changes namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(body());
    })
    .join();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and so the pair.
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn add_has_remove_are_idempotent() {
    if !can_run() {
        return;
    }
    let segment = Segment::new();
    segment.run_in(&segment.a.clone(), || async {
        let na = NetAddr::new().await.unwrap();
        for floating in ["20.1.1.3/24", "fd00:20::3/64"] {
            let floating = net(floating);
            assert!(!na.has("vetha", floating.addr()).await.unwrap());
            assert!(na.add("vetha", floating).await.unwrap(), "first add");
            assert!(!na.add("vetha", floating).await.unwrap(), "second add");
            assert!(na.has("vetha", floating.addr()).await.unwrap());
            assert!(!na.has("lo", floating.addr()).await.unwrap());
        }
    });
    let addrs = segment.addrs_a();
    assert!(addrs.contains("inet 20.1.1.3/24"), "{addrs}");
    assert!(addrs.contains("inet6 fd00:20::3/64"), "{addrs}");
    // NODAD: usable at once, never tentative.
    let v6 = addrs.lines().find(|l| l.contains("fd00:20::3")).unwrap();
    assert!(!v6.contains("tentative"), "{v6}");

    segment.run_in(&segment.a.clone(), || async {
        let na = NetAddr::new().await.unwrap();
        for floating in ["20.1.1.3/24", "fd00:20::3/64"] {
            let floating = net(floating);
            assert!(na.remove("vetha", floating).await.unwrap(), "first remove");
            assert!(
                !na.remove("vetha", floating).await.unwrap(),
                "second remove"
            );
            assert!(!na.has("vetha", floating.addr()).await.unwrap());
        }
        // An interface that does not exist is said to be so, by name.
        let err = na.add("nosuch0", net("20.1.1.3/24")).await.unwrap_err();
        assert!(
            matches!(err, NetAddrError::NoSuchInterface { ref ifname } if ifname == "nosuch0"),
            "{err}"
        );
    });
    let addrs = segment.addrs_a();
    assert!(!addrs.contains("20.1.1.3"), "{addrs}");
    assert!(!addrs.contains("fd00:20::3"), "{addrs}");
}

#[test]
fn link_up_follows_the_link_and_mac_is_read() {
    if !can_run() {
        return;
    }
    let segment = Segment::new();
    segment.run_in(&segment.a.clone(), || async {
        let na = NetAddr::new().await.unwrap();
        assert_eq!(na.mac("vetha").await.unwrap(), MAC_A);
        // Loopback: operationally unknown, with carrier.
        assert!(na.link_up("lo").await.unwrap());
        // The veth's operational state follows its peer's through linkwatch: bounded wait.
        let deadline = tokio::time::Instant::now() + WAIT;
        while !na.link_up("vetha").await.unwrap() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "vetha never came up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    ip(&["-n", &segment.a, "link", "set", "vetha", "down"]);
    segment.run_in(&segment.a.clone(), || async {
        let na = NetAddr::new().await.unwrap();
        assert!(!na.link_up("vetha").await.unwrap());
    });
}

#[test]
fn gratuitous_arp_moves_the_neighbours_entry() {
    if !can_run() {
        return;
    }
    let segment = Segment::new();
    ip(&[
        "-n",
        &segment.b,
        "neigh",
        "replace",
        "20.1.1.3",
        "lladdr",
        MAC_OLD_TEXT,
        "dev",
        "vethb",
        "nud",
        "stale",
    ]);
    assert!(segment.neigh_b("20.1.1.3").contains(MAC_OLD_TEXT));
    segment.run_in(&segment.a.clone(), || async {
        let na = NetAddr::new().await.unwrap();
        assert!(na.add("vetha", net("20.1.1.3/24")).await.unwrap());
        let mac = na.mac("vetha").await.unwrap();
        netaddr::gratuitous_arp("vetha", Ipv4Addr::new(20, 1, 1, 3), mac).unwrap();
    });
    let entry = segment.wait_neigh_b("20.1.1.3", MAC_A_TEXT);
    assert!(entry.contains(MAC_A_TEXT), "b's entry: {entry}");
}

#[test]
fn unsolicited_na_moves_the_neighbours_entry() {
    if !can_run() {
        return;
    }
    let segment = Segment::new();
    ip(&[
        "-n",
        &segment.b,
        "-6",
        "neigh",
        "replace",
        "fd00:20::3",
        "lladdr",
        MAC_OLD_TEXT,
        "dev",
        "vethb",
        "nud",
        "stale",
    ]);
    assert!(segment.neigh_b("fd00:20::3").contains(MAC_OLD_TEXT));
    segment.run_in(&segment.a.clone(), || async {
        let na = NetAddr::new().await.unwrap();
        assert!(na.add("vetha", net("fd00:20::3/64")).await.unwrap());
        let mac = na.mac("vetha").await.unwrap();
        let ip: Ipv6Addr = "fd00:20::3".parse().unwrap();
        netaddr::unsolicited_na("vetha", ip, mac).unwrap();
    });
    let entry = segment.wait_neigh_b("fd00:20::3", MAC_A_TEXT);
    assert!(entry.contains(MAC_A_TEXT), "b's entry: {entry}");
}

#[test]
fn announce_repeats_for_both_families() {
    if !can_run() {
        return;
    }
    let segment = Segment::new();
    for addr in ["20.1.1.3", "fd00:20::3"] {
        ip(&[
            "-n",
            &segment.b,
            "neigh",
            "replace",
            addr,
            "lladdr",
            MAC_OLD_TEXT,
            "dev",
            "vethb",
            "nud",
            "stale",
        ]);
    }
    segment.run_in(&segment.a.clone(), || async {
        let na = NetAddr::new().await.unwrap();
        let mac = na.mac("vetha").await.unwrap();
        for floating in ["20.1.1.3/24", "fd00:20::3/64"] {
            let floating = net(floating);
            na.add("vetha", floating).await.unwrap();
            let started = tokio::time::Instant::now();
            let gap = Duration::from_millis(100);
            netaddr::announce("vetha", floating.addr(), mac, 3, gap)
                .await
                .unwrap();
            // Three sends, two gaps between them, none after the last.
            let took = started.elapsed();
            assert!(
                took >= 2 * gap && took < 3 * gap + Duration::from_millis(500),
                "{took:?}"
            );
        }
        // An address announced on an interface that does not exist: the error names both.
        let err = netaddr::announce(
            "nosuch0",
            IpAddr::V4(Ipv4Addr::new(20, 1, 1, 3)),
            mac,
            1,
            Duration::ZERO,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("nosuch0"), "{err}");
    });
    for addr in ["20.1.1.3", "fd00:20::3"] {
        let entry = segment.wait_neigh_b(addr, MAC_A_TEXT);
        assert!(entry.contains(MAC_A_TEXT), "b's entry for {addr}: {entry}");
    }
}

/// The masquerade MAC of the traffic group's macvlan in the MAC masquerade tests.
const MAC_TG: [u8; 6] = [0x02, 0, 0x5e, 0, 0, 0x01];
const MAC_TG_TEXT: &str = "02:00:5e:00:00:01";

/// Namespace `a` (the device: `vetha`, MAC_A, 20.1.1.6/24, with the ARP settings the module
/// documentation asks of an external interface) and namespace `b` (the router side: a bridge
/// `br0` holding 20.1.1.1/24, with `vethb`, a's peer, as its port), deleted on drop. b's
/// bridge forwarding table shows which source MACs a has sent from.
struct Bridged {
    a: String,
    b: String,
}

impl Bridged {
    fn new() -> Bridged {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = format!("lbdmv-{}-{n}", std::process::id());
        let bridged = Bridged {
            a: format!("{base}-a"),
            b: format!("{base}-b"),
        };
        // The guard exists before anything is made, so a failure half-way still cleans up.
        ip(&["netns", "add", &bridged.a]);
        ip(&["netns", "add", &bridged.b]);
        let (a, b) = (bridged.a.as_str(), bridged.b.as_str());
        ip(&[
            "link", "add", "vetha", "netns", a, "address", MAC_A_TEXT, "type", "veth", "peer",
            "name", "vethb", "netns", b,
        ]);
        // No STP: the port forwards (and learns) at once.
        ip(&[
            "-n",
            b,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
        ]);
        ip(&["-n", b, "link", "set", "vethb", "master", "br0"]);
        for (ns, dev) in [(a, "lo"), (b, "lo"), (a, "vetha"), (b, "vethb"), (b, "br0")] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        ip(&["-n", a, "addr", "add", "20.1.1.6/24", "dev", "vetha"]);
        ip(&["-n", b, "addr", "add", "20.1.1.1/24", "dev", "br0"]);
        // The external interface's settings a masquerade needs (module documentation): the
        // parent neither answers ARP for the macvlan's address nor uses it as the source of
        // its own ARP requests; replies leave by the parent, so no strict reverse-path check.
        for setting in [
            "net.ipv4.conf.vetha.arp_ignore=1",
            "net.ipv4.conf.vetha.arp_announce=2",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            ip(&["netns", "exec", a, "sysctl", "-qw", setting]);
        }
        // Until the kernel has turned a link's carrier on (linkwatch), what is sent through it
        // is dropped: wait (bounded) for all three, as a device's long-up external interface.
        let deadline = Instant::now() + WAIT;
        for (ns, dev) in [(a, "vetha"), (b, "vethb"), (b, "br0")] {
            while !ip(&["-n", ns, "link", "show", dev]).contains("state UP") {
                assert!(Instant::now() < deadline, "{dev} never came up");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        bridged
    }

    /// Runs `body` inside namespace a (see [`run_in`]).
    fn run_in_a<F, Fut>(&self, body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        run_in(&self.a, body)
    }

    /// b's bridge forwarding entries learned on vethb.
    fn fdb_b(&self) -> String {
        Command::new("bridge")
            .args(["-n", &self.b, "fdb", "show", "br", "br0", "brport", "vethb"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .expect("run bridge")
    }

    fn neigh_b(&self, addr: &str) -> String {
        ip(&["-n", &self.b, "neigh", "show", addr, "dev", "br0"])
    }

    /// `ip -d link show NAME` in a.
    fn link_a(&self, name: &str) -> String {
        ip(&["-n", &self.a, "-d", "link", "show", name])
    }
}

impl Drop for Bridged {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

#[test]
fn macvlan_is_created_down_with_its_mac_and_ensure_is_idempotent() {
    if !can_run() {
        return;
    }
    let lab = Bridged::new();
    lab.run_in_a(|| async {
        let na = NetAddr::new().await.unwrap();
        let index = na.ensure_macvlan("tg1", "vetha", MAC_TG).await.unwrap();
        assert_eq!(na.mac("tg1").await.unwrap(), MAC_TG);
        assert!(!na.link_up("tg1").await.unwrap(), "created up");
        // Twice: the same link, nothing changed.
        assert_eq!(
            na.ensure_macvlan("tg1", "vetha", MAC_TG).await.unwrap(),
            index
        );
        // Another MAC: the same link gets it.
        let other = [0x02, 0, 0x5e, 0, 0, 0x09];
        assert_eq!(
            na.ensure_macvlan("tg1", "vetha", other).await.unwrap(),
            index
        );
        assert_eq!(na.mac("tg1").await.unwrap(), other);
        assert_eq!(
            na.ensure_macvlan("tg1", "vetha", MAC_TG).await.unwrap(),
            index
        );
        // Not a macvlan, or on another parent: said so, nothing changed.
        let err = na.ensure_macvlan("vetha", "lo", MAC_TG).await.unwrap_err();
        assert!(
            matches!(err, NetAddrError::Mismatch { ref ifname, .. } if ifname == "vetha"),
            "{err}"
        );
        let err = na.ensure_macvlan("tg1", "lo", MAC_TG).await.unwrap_err();
        assert!(err.to_string().contains("another parent"), "{err}");
        assert_eq!(na.mac("vetha").await.unwrap(), MAC_A);
        // A parent that does not exist is named.
        let err = na
            .ensure_macvlan("tg2", "nosuch0", MAC_TG)
            .await
            .unwrap_err();
        assert!(
            matches!(err, NetAddrError::NoSuchInterface { ref ifname } if ifname == "nosuch0"),
            "{err}"
        );
    });
    let link = lab.link_a("tg1");
    assert!(link.contains(MAC_TG_TEXT), "{link}");
    assert!(link.contains("macvlan mode private"), "{link}");
    assert!(link.contains("addrgenmode none"), "{link}");
    let flags = link.lines().next().unwrap();
    assert!(!flags.contains(",UP") && !flags.contains("<UP"), "{flags}");
    // Down since creation: b's bridge never saw the masquerade MAC.
    std::thread::sleep(Duration::from_millis(300));
    let fdb = lab.fdb_b();
    assert!(!fdb.contains(MAC_TG_TEXT), "{fdb}");

    lab.run_in_a(|| async {
        let na = NetAddr::new().await.unwrap();
        assert!(na.delete_link("tg1").await.unwrap(), "first delete");
        assert!(!na.delete_link("tg1").await.unwrap(), "second delete");
        assert!(matches!(
            na.mac("tg1").await,
            Err(NetAddrError::NoSuchInterface { .. })
        ));
    });
}

#[test]
fn masquerade_takeover_teaches_the_peer_the_mac_and_release_goes_quiet() {
    if !can_run() {
        return;
    }
    let lab = Bridged::new();
    // What b thinks before the takeover: the address is at a device that is gone.
    ip(&[
        "-n",
        &lab.b,
        "neigh",
        "replace",
        "20.1.1.2",
        "lladdr",
        MAC_OLD_TEXT,
        "dev",
        "br0",
        "nud",
        "stale",
    ]);
    // Takeover: up, address, announce from the masquerade MAC.
    lab.run_in_a(|| async {
        let na = NetAddr::new().await.unwrap();
        let name = netaddr::masquerade_link_name(1);
        na.ensure_macvlan(&name, "vetha", MAC_TG).await.unwrap();
        na.set_link(&name, true).await.unwrap();
        na.set_link(&name, true).await.unwrap();
        assert!(na.add(&name, net("20.1.1.2/24")).await.unwrap());
        // Frames sent before the kernel turns the carrier on are dropped.
        assert!(na.wait_link_up(&name, WAIT).await.unwrap(), "never came up");
        let mac = na.mac(&name).await.unwrap();
        assert_eq!(mac, MAC_TG);
        netaddr::announce(
            &name,
            "20.1.1.2".parse().unwrap(),
            mac,
            3,
            Duration::from_millis(50),
        )
        .await
        .unwrap();
    });
    let deadline = Instant::now() + WAIT;
    let mut entry = lab.neigh_b("20.1.1.2");
    while !entry.contains(MAC_TG_TEXT) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        entry = lab.neigh_b("20.1.1.2");
    }
    assert!(entry.contains(MAC_TG_TEXT), "b's entry: {entry}");
    let fdb = lab.fdb_b();
    assert!(fdb.contains(MAC_TG_TEXT), "{fdb}");
    // No IPv6 address of its own on the macvlan (address generation off).
    let addrs = ip(&["-n", &lab.a, "-o", "addr", "show", "dev", "tg1"]);
    assert!(!addrs.contains("inet6"), "{addrs}");
    // Traffic to the address reaches the macvlan: b pings it.
    let ping = Command::new("ip")
        .args([
            "netns", "exec", &lab.b, "ping", "-c", "1", "-W", "2", "20.1.1.2",
        ])
        .output()
        .expect("run ping");
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // Release: address off, link down. Then forget what b and its bridge learned.
    lab.run_in_a(|| async {
        let na = NetAddr::new().await.unwrap();
        assert!(na.remove("tg1", net("20.1.1.2/24")).await.unwrap());
        na.set_link("tg1", false).await.unwrap();
        na.set_link("tg1", false).await.unwrap();
        assert!(!na.link_up("tg1").await.unwrap());
        // A down macvlan cannot send even when asked to.
        let err = netaddr::gratuitous_arp("tg1", Ipv4Addr::new(20, 1, 1, 2), MAC_TG).unwrap_err();
        assert!(err.to_string().contains("tg1"), "{err}");
    });
    let _ = Command::new("bridge")
        .args([
            "-n",
            &lab.b,
            "fdb",
            "del",
            MAC_TG_TEXT,
            "dev",
            "vethb",
            "master",
        ])
        .output();
    ip(&["-n", &lab.b, "neigh", "flush", "dev", "br0"]);
    assert!(!lab.fdb_b().contains(MAC_TG_TEXT));
    // b asks for the address (ARP broadcast, reaching a); nothing answers from the
    // masquerade MAC, and the bridge never learns it again.
    let ping = Command::new("ip")
        .args([
            "netns", "exec", &lab.b, "ping", "-c", "2", "-i", "0.3", "-W", "1", "20.1.1.2",
        ])
        .output()
        .expect("run ping");
    assert!(!ping.status.success(), "a released address answered");
    std::thread::sleep(Duration::from_millis(300));
    let fdb = lab.fdb_b();
    assert!(!fdb.contains(MAC_TG_TEXT), "{fdb}");
    let entry = lab.neigh_b("20.1.1.2");
    assert!(!entry.contains(MAC_TG_TEXT), "b's entry: {entry}");
}
