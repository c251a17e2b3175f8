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

    /// Runs `body` on a thread that has entered namespace `ns`, on a current-thread tokio
    /// runtime there; a panic in `body` is the test's.
    fn run_in<F, Fut>(&self, ns: &str, body: F)
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
