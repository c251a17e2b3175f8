//! bgpd against BIRD 2 (Debian's `bird2`) as the upstream router instead of FRR (docs/design.md, "The lab"):
//! the session comes up, and the VIP arrives with the third-party NEXT_HOP (floating self IP),
//! a real AS_SEQUENCE with the prepend visible, MED, communities and the large community; a
//! `next_hop = "self"` route arrives with the session address; a withdraw on bgpd's control
//! socket removes the route from BIRD. One variant offers ADD-PATH send to BIRD configured with
//! `add paths rx`, so both path ids of the VIP arrive as separate paths.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use spanlb_lab::{wait_until_dbg, Proc};
use spanlb_tests::control::withdraw;
use spanlb_tests::peers::{
    PeerLab, PeerOptions, BFD_KEY, DEVICE, DEVICE_AS, FLOATING, FLOATING2, MED, MED2, ROUTER,
    ROUTER_AS, VIP, VIP_SELF,
};

const T: Duration = Duration::from_secs(30);

fn prereqs() -> bool {
    spanlb_lab::require_root_and_tools(&["bird", "birdc"]).is_ok()
}

/// BIRD running in r1, driven through its control socket in the lab directory.
struct Bird {
    proc: Proc,
    sock: PathBuf,
}

impl Bird {
    fn start(lab: &PeerLab, add_paths_rx: bool) -> Bird {
        Bird::start_with(lab, add_paths_rx, false)
    }

    /// `bfd`: a BFD protocol (100 ms × 3, meticulous keyed SHA1, bgpd's key) and `bfd on`
    /// for the session.
    fn start_with(lab: &PeerLab, add_paths_rx: bool, bfd: bool) -> Bird {
        let dir = lab.lab.dir();
        let conf = dir.join("bird.conf");
        let sock = dir.join("bird.ctl");
        let pid = dir.join("bird.pid");
        let add_paths = if add_paths_rx { " add paths rx;" } else { "" };
        let (bfd_proto, bfd_on) = if bfd {
            (
                format!(
                    "protocol bfd {{ interface \"*\" {{ min rx interval 100 ms; \
                     min tx interval 100 ms; multiplier 3; \
                     authentication meticulous keyed sha1; password \"{BFD_KEY}\" {{ id 7; }}; }}; }}\n"
                ),
                "\tbfd on;\n",
            )
        } else {
            (String::new(), "")
        };
        std::fs::write(
            &conf,
            format!(
                "router id {ROUTER};\nlog stderr all;\n\
                 protocol device {{ scan time 1; }}\n{bfd_proto}\
                 protocol bgp dev_a {{\n{bfd_on}\
                 \tlocal {ROUTER} as {ROUTER_AS};\n\
                 \tneighbor {DEVICE} as {DEVICE_AS};\n\
                 \thold time 9;\n\tkeepalive time 3;\n\
                 \tconnect retry time 1;\n\terror wait time 1, 5;\n\
                 \tipv4 {{ import all; export none;{add_paths} }};\n}}\n"
            ),
        )
        .expect("writing bird.conf");
        let proc = lab
            .r1
            .spawn(
                &[
                    "bird",
                    "-f",
                    "-c",
                    conf.to_str().unwrap(),
                    "-s",
                    sock.to_str().unwrap(),
                    "-P",
                    pid.to_str().unwrap(),
                ],
                "bird.log",
            )
            .expect("spawning bird");
        let b = Bird { proc, sock };
        wait_until_dbg(Duration::from_secs(10), "bird control socket", || {
            b.birdc("show status")
                .filter(|s| s.contains("Daemon is up"))
                .ok_or_else(|| b.proc.log())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        b
    }

    /// Runs one birdc command; `None` if birdc could not talk to BIRD.
    fn birdc(&self, cmd: &str) -> Option<String> {
        let mut c = std::process::Command::new("birdc");
        c.arg("-s").arg(&self.sock).args(cmd.split_whitespace());
        let out = c.output().ok()?;
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && !s.contains("Unable to connect")).then_some(s)
    }

    /// The paths BIRD holds for `prefix` in master4 (`show route PREFIX all`).
    fn routes(&self, prefix: &str) -> Vec<BirdRoute> {
        parse_routes(
            &self
                .birdc(&format!("show route {prefix} all"))
                .unwrap_or_default(),
        )
    }

    fn dump(&self) -> String {
        format!(
            "--- birdc show protocols all dev_a ---\n{}\n--- birdc show route all ---\n{}\n--- bird log ---\n{}",
            self.birdc("show protocols all dev_a").unwrap_or_default(),
            self.birdc("show route all").unwrap_or_default(),
            self.proc.log()
        )
    }
}

/// One path of `show route ... all`: its header line, the `via` line and the attributes.
#[derive(Debug, Default)]
struct BirdRoute {
    head: String,
    via: String,
    attrs: BTreeMap<String, String>,
}

/// Splits birdc's `show route ... all` output into paths. A path starts at a line naming the
/// route type (`unicast [proto ...`); the prefix column is blank for further paths of the
/// same network. Attribute lines are indented `Key: value`.
fn parse_routes(out: &str) -> Vec<BirdRoute> {
    let mut v: Vec<BirdRoute> = Vec::new();
    for line in out.lines() {
        // birdc prefixes continuation lines with nothing, reply lines with `NNNN-` only in
        // raw mode; the interactive client prints them plain.
        if line.contains(" unicast [") || line.contains(" unreachable [") {
            v.push(BirdRoute {
                head: line.trim().to_string(),
                ..Default::default()
            });
        } else if let Some(r) = v.last_mut() {
            let t = line.trim();
            if let Some(rest) = t.strip_prefix("via ") {
                r.via = rest.to_string();
            } else if let Some((k, val)) = t.split_once(": ") {
                r.attrs.insert(k.to_string(), val.trim().to_string());
            }
        }
    }
    v
}

/// Waits for the session to be Established; returns its `Since` column (changes on a flap).
fn wait_established(lab: &PeerLab, bird: &Bird) -> String {
    wait_until_dbg(T, "BIRD session with 20.1.1.6 Established", || {
        let s = bird.birdc("show protocols dev_a").unwrap_or_default();
        let line = s
            .lines()
            .find(|l| l.starts_with("dev_a") && l.contains("Established"));
        match line.and_then(|l| l.split_whitespace().nth(4)) {
            Some(since) => Ok(since.to_string()),
            None => Err(s),
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n--- bgpd ---\n{}", bird.dump(), lab.bgpd_log()))
}

/// Waits until BIRD holds exactly `n` paths for `prefix`.
fn wait_paths(lab: &PeerLab, bird: &Bird, prefix: &str, n: usize) -> Vec<BirdRoute> {
    wait_until_dbg(T, &format!("BIRD holds {n} path(s) for {prefix}"), || {
        let r = bird.routes(prefix);
        if r.len() == n {
            Ok(r)
        } else {
            Err(r)
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n--- bgpd ---\n{}", bird.dump(), lab.bgpd_log()))
}

/// Path 1 of the VIP as BIRD must show it.
fn assert_path1(r: &BirdRoute, ctx: &str) {
    let a = &r.attrs;
    let get = |k: &str| a.get(k).map(String::as_str);
    assert_eq!(get("BGP.next_hop"), Some(FLOATING), "{r:?}\n{ctx}");
    assert!(
        r.via.starts_with(&format!("{FLOATING} on eth0")),
        "BIRD resolves the third-party next hop on the segment: {r:?}\n{ctx}"
    );
    // A real AS_SEQUENCE: BIRD prints AS_SETs in braces, so a plain list is a sequence.
    assert_eq!(
        get("BGP.as_path"),
        Some("65001 65001 65001"),
        "{r:?}\n{ctx}"
    );
    assert_eq!(get("BGP.origin"), Some("IGP"), "{r:?}\n{ctx}");
    assert_eq!(
        get("BGP.med"),
        Some(MED.to_string().as_str()),
        "{r:?}\n{ctx}"
    );
    assert_eq!(
        get("BGP.community"),
        Some("(65001,100) (65001,200)"),
        "{r:?}\n{ctx}"
    );
    assert_eq!(
        get("BGP.large_community"),
        Some("(65001, 1, 2)"),
        "{r:?}\n{ctx}"
    );
}

#[test]
fn bird_receives_the_vip_with_next_hop_as_path_med_and_communities() {
    if !prereqs() {
        return;
    }
    let mut lab = PeerLab::build("bird_attrs", PeerOptions::default()).unwrap();
    let bird = Bird::start(&lab, false);
    lab.start_bgpd().unwrap();
    wait_established(&lab, &bird);

    let ctx = || format!("{}\n--- bgpd ---\n{}", bird.dump(), lab.bgpd_log());
    let vip = wait_paths(&lab, &bird, VIP, 1);
    // BIRD's `Since` is taken once the routes are in: right at establishment it can still
    // move by a millisecond (the protocol's and the channel's state changes), which is no
    // flap.
    let since = wait_established(&lab, &bird);
    assert_path1(&vip[0], &ctx());
    assert!(
        vip[0].head.contains(&format!("[AS{DEVICE_AS}i]")),
        "{:?}\n{}",
        vip[0],
        ctx()
    );

    // `next_hop = "self"`: the session's local address, no MED, no communities, no prepend.
    let own = wait_paths(&lab, &bird, VIP_SELF, 1);
    let a = &own[0].attrs;
    assert_eq!(
        a.get("BGP.next_hop").map(String::as_str),
        Some(DEVICE),
        "{:?}\n{}",
        own[0],
        ctx()
    );
    assert_eq!(
        a.get("BGP.as_path").map(String::as_str),
        Some("65001"),
        "{:?}\n{}",
        own[0],
        ctx()
    );
    assert!(!a.contains_key("BGP.med"), "{:?}\n{}", own[0], ctx());
    assert!(!a.contains_key("BGP.community"), "{:?}\n{}", own[0], ctx());
    assert!(
        !a.contains_key("BGP.large_community"),
        "{:?}\n{}",
        own[0],
        ctx()
    );

    // Withdraw through the control socket: the VIP disappears, the other route stays.
    let mut c = lab.control().unwrap();
    let r = c.call(&withdraw(VIP, 1, false));
    assert_eq!(r["withdrawn"], 1, "{r}");
    wait_paths(&lab, &bird, VIP, 0);
    assert_eq!(bird.routes(VIP_SELF).len(), 1, "{}", ctx());
    // The session survived the withdraw (no flap: same `Since`).
    assert_eq!(wait_established(&lab, &bird), since, "{}", ctx());
}

#[test]
fn bird_with_add_paths_rx_receives_both_path_ids_of_the_vip() {
    if !prereqs() {
        return;
    }
    let mut lab = PeerLab::build(
        "bird_addpath",
        PeerOptions {
            add_path: true,
            ..PeerOptions::default()
        },
    )
    .unwrap();
    let bird = Bird::start(&lab, true);
    lab.start_bgpd().unwrap();
    wait_established(&lab, &bird);
    let ctx = || format!("{}\n--- bgpd ---\n{}", bird.dump(), lab.bgpd_log());

    // ADD-PATH negotiated: BIRD offers RX, bgpd offers TX (`show protocols all` lists each
    // side's capabilities; BIRD's `show route` does not print path ids, so the two paths from
    // one neighbor below are the evidence that the ids were used).
    let proto = bird.birdc("show protocols all dev_a").unwrap_or_default();
    let (local, neighbor) = proto
        .split_once("Neighbor capabilities")
        .unwrap_or_else(|| panic!("no capabilities in {proto}"));
    let add_path = |s: &str| -> Vec<String> {
        let after = s.split_once("ADD-PATH").map(|x| x.1).unwrap_or("");
        after
            .lines()
            .skip(1)
            .take(2)
            .map(|l| l.trim().to_string())
            .collect()
    };
    assert_eq!(add_path(local), ["RX: ipv4", "TX:"], "{}", ctx());
    assert_eq!(add_path(neighbor), ["RX:", "TX: ipv4"], "{}", ctx());

    let vip = wait_paths(&lab, &bird, VIP, 2);
    let mut by_nh: BTreeMap<String, &BirdRoute> = BTreeMap::new();
    for r in &vip {
        by_nh.insert(r.attrs.get("BGP.next_hop").cloned().unwrap_or_default(), r);
    }
    let p1 = by_nh
        .get(FLOATING)
        .unwrap_or_else(|| panic!("no path via {FLOATING}\n{}", ctx()));
    let p2 = by_nh
        .get(FLOATING2)
        .unwrap_or_else(|| panic!("no path via {FLOATING2}\n{}", ctx()));
    assert_path1(p1, &ctx());
    assert_eq!(
        p2.attrs.get("BGP.as_path").map(String::as_str),
        Some("65001"),
        "{p2:?}"
    );
    assert_eq!(
        p2.attrs.get("BGP.med").map(String::as_str),
        Some(MED2.to_string().as_str()),
        "{p2:?}"
    );
    assert!(!p2.attrs.contains_key("BGP.community"), "{p2:?}");

    // Withdrawing path 1 leaves exactly path 2.
    let mut c = lab.control().unwrap();
    let r = c.call(&withdraw(VIP, 1, false));
    assert_eq!(r["withdrawn"], 1, "{r}");
    let left = wait_paths(&lab, &bird, VIP, 1);
    assert_eq!(
        left[0].attrs.get("BGP.next_hop").map(String::as_str),
        Some(FLOATING2),
        "{:?}\n{}",
        left[0],
        ctx()
    );
    let r = c.call(&withdraw(VIP, 2, false));
    assert_eq!(r["withdrawn"], 1, "{r}");
    wait_paths(&lab, &bird, VIP, 0);
}

/// BFD with BIRD (RFC 5880/5881, meticulous keyed SHA1): both sides come Up; when bgpd's box
/// hangs (SIGSTOP) BIRD's BFD takes the BGP session down within the Detection Time, long
/// before the 9 s hold time; when it runs again both come back.
#[test]
fn bird_bfd_comes_up_and_cuts_off_a_hung_bgpd() {
    if !prereqs() {
        return;
    }
    let opts = PeerOptions {
        bfd: true,
        ..PeerOptions::default()
    };
    let mut lab = PeerLab::build("bird_bfd", opts).unwrap();
    let bird = Bird::start_with(&lab, false, true);
    lab.start_bgpd().unwrap();
    wait_established(&lab, &bird);
    let ctx = || format!("{}\n--- bgpd ---\n{}", bird.dump(), lab.bgpd_log());
    let r = wait_until_dbg(T, "BFD up on both sides", || {
        let ours = lab
            .control()
            .map_err(|e| e.to_string())?
            .call(&spanlb_control::bgpd::Request::Bfd);
        let theirs = bird.birdc("show bfd sessions").unwrap_or_default();
        if ours["bfd"][0]["state"] == "up" && theirs.contains(" Up ") {
            Ok((ours, theirs))
        } else {
            Err(format!("{ours}\n{theirs}"))
        }
    });
    let (ours, theirs) = r.unwrap_or_else(|e| panic!("{e}\n{}", ctx()));
    println!("bgpd: {ours}\nbird:\n{theirs}");
    assert_eq!(ours["bfd"][0]["remote_state"], "up", "{ours}");
    assert_eq!(ours["bfd"][0]["auth"], "meticulous keyed SHA1", "{ours}");

    let bgpd = lab.bgpd.as_ref().expect("bgpd runs");
    let frozen = std::time::Instant::now();
    bgpd.signal(libc::SIGSTOP).unwrap();
    let r = wait_until_dbg(
        Duration::from_secs(8),
        "BIRD drops the session on BFD down",
        || {
            let p = bird.birdc("show protocols all dev_a").unwrap_or_default();
            if p.contains("BFD session down") {
                Ok(p)
            } else {
                Err(p)
            }
        },
    );
    let cut = frozen.elapsed();
    bgpd.signal(libc::SIGCONT).unwrap();
    r.unwrap_or_else(|e| panic!("{e}\n{}", ctx()));
    println!(
        "bird: hung bgpd cut off after {} ms (hold time 9 s)",
        cut.as_millis()
    );
    // Back: the session and BFD.
    wait_established(&lab, &bird);
    wait_paths(&lab, &bird, VIP, 1);
}
