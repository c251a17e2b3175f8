//! bgpd against GoBGP (Debian's `gobgpd`) as the upstream router instead of FRR (docs/design.md, "The lab"):
//! the session comes up, and the VIP arrives with the third-party NEXT_HOP (floating self IP),
//! a real AS_SEQUENCE (segment type 2) with the prepend visible, MED, communities and the large
//! community; a `next_hop = "self"` route arrives with the session address; a withdraw on
//! bgpd's control socket removes the route from GoBGP. One variant offers ADD-PATH send to a
//! GoBGP neighbor with `add-paths receive`, so both path ids of the VIP arrive.

use std::time::Duration;

use serde_json::Value;
use spanlb_lab::{wait_until_dbg, Proc};
use spanlb_tests::control::withdraw;
use spanlb_tests::peers::{
    PeerLab, PeerOptions, AS_PATH, COMMUNITIES, DEVICE, DEVICE_AS, FLOATING, FLOATING2,
    LARGE_COMMUNITY, MED, MED2, ROUTER, ROUTER_AS, VIP, VIP_SELF,
};

const T: Duration = Duration::from_secs(30);
/// gobgpd's gRPC API, on r1's own loopback (each lab namespace has its own).
const API: &str = "127.0.0.1:50051";

fn prereqs() -> bool {
    spanlb_lab::require_root_and_tools(&["gobgpd", "gobgp"]).is_ok()
}

/// Path attribute type codes in GoBGP's JSON.
const ORIGIN: u64 = 1;
const AS_PATH_T: u64 = 2;
const NEXT_HOP: u64 = 3;
const MULTI_EXIT_DISC: u64 = 4;
const COMMUNITIES_T: u64 = 8;
const LARGE_COMMUNITY_T: u64 = 32;

/// gobgpd running in r1, driven through `gobgp` (gRPC on r1's loopback).
struct GoBgp<'a> {
    lab: &'a PeerLab,
    proc: Proc,
}

impl<'a> GoBgp<'a> {
    fn start(lab: &'a PeerLab, add_paths_receive: bool) -> GoBgp<'a> {
        let conf = lab.lab.dir().join("gobgpd.toml");
        let add_paths = if add_paths_receive {
            "    [neighbors.afi-safis.add-paths.config]\n      receive = true\n"
        } else {
            ""
        };
        std::fs::write(
            &conf,
            format!(
                "[global.config]\n  as = {ROUTER_AS}\n  router-id = \"{ROUTER}\"\n  port = 179\n\
                 \x20 local-address-list = [\"{ROUTER}\"]\n\n\
                 [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{DEVICE}\"\n\
                 \x20   peer-as = {DEVICE_AS}\n\
                 \x20 [neighbors.timers.config]\n    hold-time = 9\n    keepalive-interval = 3\n\
                 \x20   connect-retry = 1\n\
                 \x20 [neighbors.transport.config]\n    local-address = \"{ROUTER}\"\n\
                 \x20 [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n\
                 \x20     afi-safi-name = \"ipv4-unicast\"\n{add_paths}"
            ),
        )
        .expect("writing gobgpd.toml");
        let proc = lab
            .r1
            .spawn(
                &[
                    "gobgpd",
                    "-f",
                    conf.to_str().unwrap(),
                    "-t",
                    "toml",
                    "--api-hosts",
                    API,
                    "--pprof-disable",
                    "--log-plain",
                    "--log-level",
                    "debug",
                ],
                "gobgpd.log",
            )
            .expect("spawning gobgpd");
        let g = GoBgp { lab, proc };
        wait_until_dbg(Duration::from_secs(10), "gobgpd API", || {
            g.gobgp(&["global"]).ok_or_else(|| g.proc.log())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        g
    }

    /// Runs `gobgp -u 127.0.0.1 -p 50051 ARGS` in r1; `None` when it fails.
    fn gobgp(&self, args: &[&str]) -> Option<String> {
        let (host, port) = API.split_once(':').unwrap();
        let mut full = vec!["gobgp", "-u", host, "-p", port];
        full.extend_from_slice(args);
        let out = self.lab.r1.command(&full).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("-j");
        self.gobgp(&a)
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null)
    }

    /// Paths GoBGP holds for `prefix` in its global RIB (all paths, not only the best).
    fn paths(&self, prefix: &str) -> Vec<Value> {
        let v = self.json(&["global", "rib", "-a", "ipv4"]);
        v.get(prefix)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    fn dump(&self) -> String {
        format!(
            "--- gobgp neighbor {DEVICE} ---\n{}\n--- gobgp global rib -j ---\n{}\n--- gobgpd log (tail) ---\n{}\n--- bgpd ---\n{}",
            self.gobgp(&["neighbor", DEVICE]).unwrap_or_default(),
            self.gobgp(&["global", "rib", "-j"]).unwrap_or_default(),
            tail(&self.proc.log(), 60),
            self.lab.bgpd_log()
        )
    }

    fn wait_established(&self) {
        wait_until_dbg(T, "GoBGP session with 20.1.1.6 established", || {
            let v = self.json(&["neighbor"]);
            let peer = v
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .find(|p| p["conf"]["neighbor_address"] == DEVICE)
                        .cloned()
                })
                .unwrap_or(Value::Null);
            let st = &peer["state"]["session_state"];
            // The gRPC API's enum: ESTABLISHED = 6 (rendered as a number by `gobgp -j`).
            if st == 6
                || st
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case("established"))
            {
                Ok(())
            } else {
                Err(peer)
            }
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.dump()));
    }

    /// Waits until GoBGP holds exactly `n` paths for `prefix`.
    fn wait_paths(&self, prefix: &str, n: usize) -> Vec<Value> {
        wait_until_dbg(T, &format!("GoBGP holds {n} path(s) for {prefix}"), || {
            let p = self.paths(prefix);
            if p.len() == n {
                Ok(p)
            } else {
                Err(p)
            }
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.dump()))
    }
}

/// `(path id, network, next hop)` rows of the text `gobgp neighbor 20.1.1.6 adj-in`.
fn adj_in_ids(g: &GoBgp) -> Vec<(u32, String, String)> {
    let out = g.gobgp(&["neighbor", DEVICE, "adj-in"]).unwrap_or_default();
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header.first().copied(),
        Some("ID"),
        "adj-in has an ID column: {out}"
    );
    lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.parse().ok()?,
                f.get(1)?.to_string(),
                f.get(2)?.to_string(),
            ))
        })
        .collect()
}

fn tail(s: &str, n: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(n)..].join("\n")
}

/// The attribute of type `t` of a GoBGP JSON path.
fn attr(path: &Value, t: u64) -> Option<&Value> {
    path["attrs"]
        .as_array()?
        .iter()
        .find(|a| a["type"].as_u64() == Some(t))
}

fn next_hop(path: &Value) -> Option<&str> {
    attr(path, NEXT_HOP)?["nexthop"].as_str()
}

/// AS_PATH segments as (segment type, ASNs).
fn as_path(path: &Value) -> Vec<(u64, Vec<u64>)> {
    attr(path, AS_PATH_T)
        .and_then(|a| a["as_paths"].as_array())
        .map(|segs| {
            segs.iter()
                .map(|s| {
                    (
                        s["segment_type"].as_u64().unwrap_or(0),
                        s["asns"]
                            .as_array()
                            .map(|a| a.iter().filter_map(Value::as_u64).collect())
                            .unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn med(path: &Value) -> Option<u64> {
    attr(path, MULTI_EXIT_DISC)?["metric"].as_u64()
}

fn communities(path: &Value) -> Vec<u64> {
    attr(path, COMMUNITIES_T)
        .and_then(|a| a["communities"].as_array())
        .map(|c| c.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

fn large_communities(path: &Value) -> Vec<(u64, u64, u64)> {
    attr(path, LARGE_COMMUNITY_T)
        .and_then(|a| a["value"].as_array())
        .map(|c| {
            c.iter()
                .map(|l| {
                    (
                        l["ASN"].as_u64().unwrap_or(0),
                        l["LocalData1"].as_u64().unwrap_or(0),
                        l["LocalData2"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Path 1 of the VIP as GoBGP must show it.
fn assert_path1(p: &Value, ctx: &str) {
    assert_eq!(next_hop(p), Some(FLOATING), "{p}\n{ctx}");
    // One AS_SEQUENCE (type 2) segment with the prepend visible.
    assert_eq!(
        as_path(p),
        vec![(2, AS_PATH.iter().map(|&a| a as u64).collect())],
        "{p}\n{ctx}"
    );
    assert_eq!(
        attr(p, ORIGIN).and_then(|o| o["value"].as_u64()),
        Some(0),
        "ORIGIN IGP: {p}"
    );
    assert_eq!(med(p), Some(MED as u64), "{p}\n{ctx}");
    let want: Vec<u64> = COMMUNITIES
        .iter()
        .map(|&(a, b)| ((a as u64) << 16) | b as u64)
        .collect();
    assert_eq!(communities(p), want, "{p}\n{ctx}");
    let (la, lb, lc) = LARGE_COMMUNITY;
    assert_eq!(
        large_communities(p),
        vec![(la as u64, lb as u64, lc as u64)],
        "{p}\n{ctx}"
    );
}

#[test]
fn gobgp_receives_the_vip_with_next_hop_as_path_med_and_communities() {
    if !prereqs() {
        return;
    }
    let mut lab = PeerLab::build("gobgp_attrs", PeerOptions::default()).unwrap();
    lab.start_bgpd().unwrap();
    let g = GoBgp::start(&lab, false);
    g.wait_established();

    let vip = g.wait_paths(VIP, 1);
    assert_path1(&vip[0], &g.dump());
    assert_eq!(vip[0]["neighbor-ip"], DEVICE, "{}", vip[0]);

    // `next_hop = "self"`: the session's local address; no MED, communities or prepend.
    let own = g.wait_paths(VIP_SELF, 1);
    let p = &own[0];
    assert_eq!(next_hop(p), Some(DEVICE), "{p}\n{}", g.dump());
    assert_eq!(as_path(p), vec![(2, vec![DEVICE_AS as u64])], "{p}");
    assert_eq!(med(p), None, "{p}");
    assert!(communities(p).is_empty(), "{p}");
    assert!(large_communities(p).is_empty(), "{p}");

    // The adj-RIB-in agrees (the route is not only in the RIB through some policy).
    let adj = g.json(&["neighbor", DEVICE, "adj-in"]);
    assert!(
        adj.get(VIP).is_some() && adj.get(VIP_SELF).is_some(),
        "adj-in: {adj}\n{}",
        g.dump()
    );

    // Withdraw through the control socket: the VIP disappears, the other route stays.
    let mut c = lab.control().unwrap();
    let r = c.call(&withdraw(VIP, 1, false));
    assert_eq!(r["withdrawn"], 1, "{r}");
    g.wait_paths(VIP, 0);
    assert_eq!(g.paths(VIP_SELF).len(), 1, "{}", g.dump());
    // The session survived the withdraw without a flap.
    g.wait_established();
    let n = g.gobgp(&["neighbor", DEVICE]).unwrap_or_default();
    assert!(n.contains("Flops = 0"), "{n}\n{}", g.dump());
}

#[test]
fn gobgp_with_add_paths_receive_gets_both_path_ids_of_the_vip() {
    if !prereqs() {
        return;
    }
    let mut lab = PeerLab::build(
        "gobgp_addpath",
        PeerOptions {
            add_path: true,
            ..PeerOptions::default()
        },
    )
    .unwrap();
    lab.start_bgpd().unwrap();
    let g = GoBgp::start(&lab, true);
    g.wait_established();

    let vip = g.wait_paths(VIP, 2);
    let p1 = vip
        .iter()
        .find(|p| next_hop(p) == Some(FLOATING))
        .unwrap_or_else(|| panic!("no path via {FLOATING}\n{}", g.dump()));
    let p2 = vip
        .iter()
        .find(|p| next_hop(p) == Some(FLOATING2))
        .unwrap_or_else(|| panic!("no path via {FLOATING2}\n{}", g.dump()));
    assert_path1(p1, &g.dump());
    assert_eq!(as_path(p2), vec![(2, vec![DEVICE_AS as u64])], "{p2}");
    assert_eq!(med(p2), Some(MED2 as u64), "{p2}");
    assert!(communities(p2).is_empty(), "{p2}");
    // GoBGP keeps the received path identifiers: its JSON leaves them out, the text adj-in
    // lists them in an `ID` column when ADD-PATH receive is negotiated.
    let mut ids: Vec<(u32, String)> = adj_in_ids(&g)
        .into_iter()
        .filter(|(_, net, _)| net == VIP)
        .map(|(id, _, nh)| (id, nh))
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        vec![(1, FLOATING.to_string()), (2, FLOATING2.to_string())],
        "{}",
        g.dump()
    );

    let mut c = lab.control().unwrap();
    let r = c.call(&withdraw(VIP, 1, false));
    assert_eq!(r["withdrawn"], 1, "{r}");
    let left = g.wait_paths(VIP, 1);
    assert_eq!(
        next_hop(&left[0]),
        Some(FLOATING2),
        "{}\n{}",
        left[0],
        g.dump()
    );
    let r = c.call(&withdraw(VIP, 2, false));
    assert_eq!(r["withdrawn"], 1, "{r}");
    g.wait_paths(VIP, 0);
}
