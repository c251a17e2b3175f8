//! `cluster::netaddr` against a real kernel: two network namespaces made for the test (`a`, where
//! the code runs, and `b`, its neighbour on the segment) joined by a veth pair, checked with
//! `ip -n ...`. Needs root and `ip`: without root each test says why on one line and passes,
//! except under CI=true, where it fails. Every wait is bounded; nothing leaves the two
//! namespaces, which are deleted when the test ends, also on panic.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use lbd::cluster::netaddr::{self, NetAddr, NetAddrError};
use spanlb_lab::{lab_prereqs, Lab, Ns};

/// The MAC of `vetha` in namespace a (the device taking over).
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_A_TEXT: &str = "02:00:00:00:00:0a";
/// What b's neighbour entries say before the announcement (a device that is gone).
const MAC_OLD_TEXT: &str = "02:00:00:00:00:99";
/// How long a test waits for the kernel to do something.
const WAIT: Duration = Duration::from_secs(2);

/// Two namespaces `a` and `b` joined by `vetha` (in a, MAC_A) and `vethb` (in b), both up,
/// b holding 20.1.1.2/24 and fd00:20::2/64; deleted with the lab on drop.
struct Segment {
    a: Ns,
    b: Ns,
    _lab: Lab,
}

impl Segment {
    fn new() -> Segment {
        let lab = Lab::new("netaddr_ns").unwrap();
        let (a, b) = (lab.ns("a").unwrap(), lab.ns("b").unwrap());
        // The lab turns IPv6 DAD off; a keeps the kernel's default, so that an address NetAddr
        // adds without NODAD would show up tentative.
        a.sysctl("net.ipv6.conf.default.accept_dad", "1").unwrap();
        lab.veth_macs(
            (&a, "vetha", Some(MAC_A_TEXT)),
            (&b, "vethb", Some("02:00:00:00:00:0b")),
        )
        .unwrap();
        b.add_addr("vethb", "20.1.1.2/24").unwrap();
        b.add_addr("vethb", "fd00:20::2/64").unwrap();
        Segment { a, b, _lab: lab }
    }

    /// `ip -n a -o addr show dev vetha`.
    fn addrs_a(&self) -> String {
        self.a.ip(&["-o", "addr", "show", "dev", "vetha"]).unwrap()
    }

    /// b's neighbour entry for `addr` on vethb, as `ip neigh` prints it.
    fn neigh_b(&self, addr: &str) -> String {
        self.b.ip(&["neigh", "show", addr, "dev", "vethb"]).unwrap()
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
    fn run_in<F, Fut>(&self, ns: &Ns, body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        run_in(ns, body)
    }
}

/// Runs `body` on a thread that has entered namespace `ns`, on a current-thread tokio
/// runtime there; a panic in `body` is the test's.
fn run_in<F, Fut>(ns: &Ns, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    ns.run_in(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(body());
    })
    .unwrap();
}

/// Makes `ns`'s neighbour entry for `addr` on `dev` say MAC_OLD_TEXT, stale (what a neighbour
/// believes before an announcement: the address is at a device that is gone).
fn stale_neigh(ns: &Ns, addr: &str, dev: &str) {
    ns.ip(&[
        "neigh",
        "replace",
        addr,
        "lladdr",
        MAC_OLD_TEXT,
        "dev",
        dev,
        "nud",
        "stale",
    ])
    .unwrap();
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn add_has_remove_are_idempotent() {
    lab_prereqs!([]);
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
    lab_prereqs!([]);
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
    segment.a.link_down("vetha").unwrap();
    segment.run_in(&segment.a.clone(), || async {
        let na = NetAddr::new().await.unwrap();
        assert!(!na.link_up("vetha").await.unwrap());
    });
}

#[test]
fn gratuitous_arp_moves_the_neighbours_entry() {
    lab_prereqs!([]);
    let segment = Segment::new();
    stale_neigh(&segment.b, "20.1.1.3", "vethb");
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
    lab_prereqs!([]);
    let segment = Segment::new();
    stale_neigh(&segment.b, "fd00:20::3", "vethb");
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
    lab_prereqs!([]);
    let segment = Segment::new();
    for addr in ["20.1.1.3", "fd00:20::3"] {
        stale_neigh(&segment.b, addr, "vethb");
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
    a: Ns,
    b: Ns,
    _lab: Lab,
}

impl Bridged {
    fn new() -> Bridged {
        let lab = Lab::new("netaddr_ns_bridged").unwrap();
        let (a, b) = (lab.ns("a").unwrap(), lab.ns("b").unwrap());
        lab.veth_macs((&a, "vetha", Some(MAC_A_TEXT)), (&b, "vethb", None))
            .unwrap();
        // No STP: the port forwards (and learns) at once.
        b.ip(&["link", "add", "br0", "type", "bridge", "stp_state", "0"])
            .unwrap();
        b.ip(&["link", "set", "vethb", "master", "br0"]).unwrap();
        b.link_up("br0").unwrap();
        a.add_addr("vetha", "20.1.1.6/24").unwrap();
        b.add_addr("br0", "20.1.1.1/24").unwrap();
        // The external interface's settings a masquerade needs (module documentation): the
        // parent neither answers ARP for the macvlan's address nor uses it as the source of
        // its own ARP requests; replies leave by the parent, so no strict reverse-path check.
        for (key, value) in [
            ("net.ipv4.conf.vetha.arp_ignore", "1"),
            ("net.ipv4.conf.vetha.arp_announce", "2"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ] {
            a.sysctl(key, value).unwrap();
        }
        // Until the kernel has turned a link's carrier on (linkwatch), what is sent through it
        // is dropped: wait (bounded) for all three, as a device's long-up external interface.
        let deadline = Instant::now() + WAIT;
        for (ns, dev) in [(&a, "vetha"), (&b, "vethb"), (&b, "br0")] {
            while !ns.ip(&["link", "show", dev]).unwrap().contains("state UP") {
                assert!(Instant::now() < deadline, "{dev} never came up");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Bridged { a, b, _lab: lab }
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
            .args([
                "-n",
                self.b.name(),
                "fdb",
                "show",
                "br",
                "br0",
                "brport",
                "vethb",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .expect("run bridge")
    }

    fn neigh_b(&self, addr: &str) -> String {
        self.b.ip(&["neigh", "show", addr, "dev", "br0"]).unwrap()
    }

    /// `ip -d link show NAME` in a.
    fn link_a(&self, name: &str) -> String {
        self.a.ip(&["-d", "link", "show", name]).unwrap()
    }
}

#[test]
fn macvlan_is_created_down_with_its_mac_and_ensure_is_idempotent() {
    lab_prereqs!([]);
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
    lab_prereqs!([]);
    let lab = Bridged::new();
    // What b thinks before the takeover: the address is at a device that is gone.
    stale_neigh(&lab.b, "20.1.1.2", "br0");
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
    let addrs = lab.a.ip(&["-o", "addr", "show", "dev", "tg1"]).unwrap();
    assert!(!addrs.contains("inet6"), "{addrs}");
    // Traffic to the address reaches the macvlan: b pings it.
    let ping = lab
        .b
        .command(&["ping", "-c", "1", "-W", "2", "20.1.1.2"])
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
            lab.b.name(),
            "fdb",
            "del",
            MAC_TG_TEXT,
            "dev",
            "vethb",
            "master",
        ])
        .output();
    lab.b.ip(&["neigh", "flush", "dev", "br0"]).unwrap();
    assert!(!lab.fdb_b().contains(MAC_TG_TEXT));
    // b asks for the address (ARP broadcast, reaching a); nothing answers from the
    // masquerade MAC, and the bridge never learns it again.
    let ping = lab
        .b
        .command(&["ping", "-c", "2", "-i", "0.3", "-W", "1", "20.1.1.2"])
        .output()
        .expect("run ping");
    assert!(!ping.status.success(), "a released address answered");
    std::thread::sleep(Duration::from_millis(300));
    let fdb = lab.fdb_b();
    assert!(!fdb.contains(MAC_TG_TEXT), "{fdb}");
    let entry = lab.neigh_b("20.1.1.2");
    assert!(!entry.contains(MAC_TG_TEXT), "b's entry: {entry}");
}
