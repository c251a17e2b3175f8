//! The containerlab seed lab (`topologies/ecmp-seed/clab/`) describes the same lab as
//! `spanlb_tests::topology` (docs/design.md, "The lab"): the same nodes, every segment's ports on the right
//! bridge or link, the devices' addresses in the node environment and in the configuration
//! files, lbd's and bgpd's files accepted by their own loaders, and r1 peering with the three
//! devices. Reads files only: needs neither root nor containerlab.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;
use spanlb_lab::seed::GroupToml;
use spanlb_tests::topology::{
    self, Port, Role, Segment, DEVICES, DEVICE_AS, LINKS, NODES, ROUTER, ROUTER_AS, SERVERS,
    SERVER_TCP_PORT, SERVER_UDP_PORT, VIP, VIP_TCP_PORT, VIP_UDP_PORT,
};

/// containerlab reserves `eth0` for the management network: where topology.rs says `eth0`,
/// the containers use another name (the same table as in the directory's README.md).
const RENAMED: &[(&str, &str, &str)] = &[
    ("client", "eth0", "eth1"),
    ("r1", "eth0", "ext0"),
    ("s1", "eth0", "eth1"),
    ("s2", "eth0", "eth1"),
    ("s3", "eth0", "eth1"),
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../topologies/ecmp-seed/clab")
}

fn read(name: &str) -> String {
    let path = dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The containerlab interface name of topology.rs's `node`:`ifname`.
fn clab_if(node: &str, ifname: &'static str) -> &'static str {
    RENAMED
        .iter()
        .find(|(n, i, _)| *n == node && *i == ifname)
        .map_or(ifname, |(_, _, to)| to)
}

fn endpoint(p: &Port) -> String {
    format!("{}:{}", p.node, clab_if(p.node, p.ifname))
}

/// Segments with more than two ports are host bridges; two-port segments are direct links.
fn bridge_of(s: &Segment) -> Option<String> {
    (s.ports.len() > 2).then(|| format!("br-seed-{}", s.name))
}

struct Clab {
    nodes: BTreeMap<String, Value>,
    /// Each link's two endpoints, `node:ifname`.
    links: Vec<[String; 2]>,
}

fn clab() -> Clab {
    let doc: Value = serde_yaml_ng::from_str(&read("ecmp-seed.clab.yml")).expect("valid YAML");
    assert_eq!(doc["name"].as_str(), Some("ecmp-seed"));
    let nodes = doc["topology"]["nodes"]
        .as_mapping()
        .expect("topology.nodes")
        .iter()
        .map(|(k, v)| (k.as_str().expect("node name").to_string(), v.clone()))
        .collect();
    let links = doc["topology"]["links"]
        .as_sequence()
        .expect("topology.links")
        .iter()
        .map(|l| {
            let e: Vec<String> = l["endpoints"]
                .as_sequence()
                .expect("endpoints")
                .iter()
                .map(|e| e.as_str().expect("endpoint").to_string())
                .collect();
            assert_eq!(e.len(), 2, "{e:?}");
            [e[0].clone(), e[1].clone()]
        })
        .collect();
    Clab { nodes, links }
}

impl Clab {
    fn node(&self, name: &str) -> &Value {
        self.nodes
            .get(name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    fn strings(&self, node: &str, key: &str) -> Vec<String> {
        self.node(node)[key]
            .as_sequence()
            .map(|s| {
                s.iter()
                    .map(|v| v.as_str().expect("a string").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn env(&self, node: &str, key: &str) -> String {
        self.node(node)["env"][key]
            .as_str()
            .unwrap_or_else(|| panic!("node {node}: no env {key}"))
            .to_string()
    }

    /// The other end of every link that has `end` as one end.
    fn peers_of(&self, end: &str) -> Vec<&str> {
        self.links
            .iter()
            .filter_map(|[x, y]| {
                if x == end {
                    Some(y.as_str())
                } else if y == end {
                    Some(x.as_str())
                } else {
                    None
                }
            })
            .collect()
    }
}

/// The port of `node` on segment `segment` in topology.rs.
fn port(segment: &str, node: &str) -> &'static Port {
    LINKS
        .iter()
        .find(|s| s.name == segment)
        .and_then(|s| s.ports.iter().find(|p| p.node == node))
        .unwrap_or_else(|| panic!("{node} has no port on {segment}"))
}

#[test]
fn nodes_are_the_topology_nodes_and_the_bridges() {
    let clab = clab();
    let mut expected: BTreeSet<String> = NODES.iter().map(|n| n.name.to_string()).collect();
    let bridges: BTreeSet<String> = LINKS.iter().filter_map(bridge_of).collect();
    expected.extend(bridges.iter().cloned());
    let found: BTreeSet<String> = clab.nodes.keys().cloned().collect();
    assert_eq!(found, expected);
    for b in &bridges {
        assert_eq!(clab.node(b)["kind"].as_str(), Some("bridge"), "{b}");
    }
    for n in NODES {
        let node = clab.node(n.name);
        assert_eq!(node["kind"].as_str(), Some("linux"), "{}", n.name);
        let image = node["image"].as_str().unwrap_or_default();
        match n.role {
            Role::Router => assert_eq!(image, "quay.io/frrouting/frr:8.4.1"),
            Role::Device => assert!(image.starts_with("spanlb-seed"), "{}: {image}", n.name),
            Role::Client | Role::Server => assert!(!image.is_empty(), "{}", n.name),
        }
    }
}

#[test]
fn every_segment_is_wired_and_nothing_else() {
    let clab = clab();
    let mut used = BTreeSet::new();
    for s in LINKS {
        match bridge_of(s) {
            None => {
                let [p, q] = s.ports else {
                    panic!("{}: a direct link has two ports", s.name)
                };
                let (p, q) = (endpoint(p), endpoint(q));
                assert_eq!(clab.peers_of(&p), vec![q.as_str()], "segment {}", s.name);
                used.extend([p, q]);
            }
            Some(bridge) => {
                for p in s.ports {
                    let end = endpoint(p);
                    let peers = clab.peers_of(&end);
                    assert_eq!(peers.len(), 1, "segment {}: {end} on {peers:?}", s.name);
                    let (node, host_if) = peers[0].split_once(':').expect("node:if");
                    assert_eq!(node, bridge, "segment {}: {end} on {}", s.name, peers[0]);
                    assert!(
                        !host_if.is_empty() && host_if.len() <= 15,
                        "{}: host interface name",
                        peers[0]
                    );
                    used.insert(end);
                    used.insert(peers[0].to_string());
                }
            }
        }
    }
    // Every endpoint of the file is one of the above, once; none is the management eth0.
    let mut seen = BTreeSet::new();
    for end in clab.links.iter().flatten() {
        assert!(used.contains(end), "{end}: not in topology.rs");
        assert!(seen.insert(end.clone()), "{end}: used twice");
        assert!(!end.ends_with(":eth0"), "{end}: eth0 is containerlab's");
    }
}

/// `ip addr add ADDR dev IF` among a node's exec commands.
fn exec_has_addr(clab: &Clab, node: &str, addr: &str, ifname: &str) -> bool {
    clab.strings(node, "exec").iter().any(|c| {
        c.split_whitespace().collect::<Vec<_>>() == ["ip", "addr", "add", addr, "dev", ifname]
    })
}

#[test]
fn addresses_match_the_topology() {
    let clab = clab();
    let frr = read("frr.conf");
    let entrypoint = read("entrypoint.sh");
    for s in LINKS {
        for p in s.ports {
            let ifname = clab_if(p.node, p.ifname);
            for addr in p.addrs {
                let role = NODES.iter().find(|n| n.name == p.node).unwrap().role;
                match role {
                    Role::Client | Role::Server => assert!(
                        exec_has_addr(&clab, p.node, addr, ifname),
                        "{}: no `ip addr add {addr} dev {ifname}` in exec",
                        p.node
                    ),
                    Role::Router => assert!(
                        frr.contains(&format!("interface {ifname}\n ip address {addr}\n")),
                        "frr.conf: {ifname} has no {addr}"
                    ),
                    Role::Device => {
                        let var = match ifname {
                            "ext0" => "EXT_ADDR",
                            "int0" => "INT_ADDR",
                            "ha0" => "HA_ADDR",
                            other => panic!("{}: unexpected device interface {other}", p.node),
                        };
                        assert_eq!(&clab.env(p.node, var), addr, "{} {var}", p.node);
                        assert!(
                            entrypoint.contains(&format!("\"${var}\" dev {ifname}")),
                            "entrypoint.sh does not put ${var} on {ifname}"
                        );
                    }
                }
            }
        }
    }
    for d in DEVICES {
        assert_eq!(clab.env(d.name, "EXT_ADDR"), format!("{}/24", d.static_ext));
        assert_eq!(clab.env(d.name, "INT_ADDR"), format!("{}/24", d.static_int));
        assert_eq!(clab.env(d.name, "HA_ADDR"), format!("{}/24", d.ha));
        assert_eq!(clab.env(d.name, "ROUTER"), ROUTER);
        let client = port("cl", "client").addrs[0];
        let client_net: std::net::Ipv4Addr = client.split('/').next().unwrap().parse().unwrap();
        let o = client_net.octets();
        assert_eq!(
            clab.env(d.name, "CLIENT_NET"),
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        );
    }
    // The client reaches the VIP through r1.
    let r1_cl = port("cl", "r1").addrs[0].split('/').next().unwrap();
    let route = format!(
        "ip route add {VIP}/32 via {r1_cl} dev {}",
        clab_if("client", "eth0")
    );
    assert!(
        clab.strings("client", "exec").contains(&route),
        "client: no `{route}`"
    );
}

#[test]
fn devices_bind_their_own_files_and_they_exist() {
    let clab = clab();
    for d in DEVICES {
        let binds = clab.strings(d.name, "binds");
        for (file, target) in [
            (format!("bgpd-{}.toml", d.name), "/etc/spanlb/bgpd.toml"),
            (format!("lbd-{}.toml", d.name), "/etc/spanlb/lbd.toml"),
            (
                "device-group.toml".to_string(),
                "/etc/spanlb/device-group.toml",
            ),
            ("group.key".to_string(), "/etc/spanlb/group.key"),
        ] {
            assert!(
                binds
                    .iter()
                    .any(|b| b.starts_with(&format!("{file}:{target}"))),
                "{}: {file} is not bound to {target}: {binds:?}",
                d.name
            );
            if file != "group.key" {
                assert!(dir().join(&file).is_file(), "{file} missing");
            }
        }
    }
    // The key is made by whoever deploys (README.md); a real key is never committed.
    assert!(read(".gitignore").lines().any(|l| l.trim() == "group.key"));
    for f in ["frr.conf", "daemons"] {
        assert!(
            clab.strings("r1", "binds")
                .iter()
                .any(|b| b.starts_with(&format!("{f}:/etc/frr/{f}"))),
            "r1 does not bind {f}"
        );
    }
}

fn toml_table(name: &str) -> toml::Table {
    read(name)
        .parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn lbd_files_load_and_match_the_topology() {
    let members = |port: u16| -> BTreeSet<String> {
        SERVERS
            .iter()
            .map(|(_, addr)| format!("{addr}:{port}"))
            .collect()
    };
    for d in DEVICES {
        let name = format!("lbd-{}.toml", d.name);
        let cfg = lbd::config::Config::from_toml(&read(&name), &name)
            .unwrap_or_else(|e| panic!("lbd rejects {e}"));
        assert_eq!(cfg.device.name, d.name);
        assert_eq!(
            cfg.device
                .internal_address
                .map(|a| a.to_string())
                .as_deref(),
            Some(d.static_int)
        );
        let web = &cfg.virtual_servers["web"];
        assert_eq!(web.destination.to_string(), format!("{VIP}:{VIP_TCP_PORT}"));
        let pool: BTreeSet<String> = cfg.pools[&web.pool]
            .members
            .iter()
            .map(|m| m.address.to_string())
            .collect();
        assert_eq!(pool, members(SERVER_TCP_PORT), "{name}");
        let dns = &cfg.virtual_servers["dns"];
        assert_eq!(dns.destination.to_string(), format!("{VIP}:{VIP_UDP_PORT}"));
        let pool: BTreeSet<String> = cfg.pools[&dns.pool]
            .members
            .iter()
            .map(|m| m.address.to_string())
            .collect();
        assert_eq!(pool, members(SERVER_UDP_PORT), "{name}");

        // The device-group keys.
        let dev = &cfg.device;
        assert_eq!(
            dev.external_address.map(|a| a.to_string()).as_deref(),
            Some(d.static_ext),
            "{name}"
        );
        assert_eq!(
            dev.external_interface.as_deref(),
            Some(clab_if(d.name, port("ext", d.name).ifname))
        );
        assert_eq!(
            dev.internal_interface.as_deref(),
            Some(clab_if(d.name, port("int", d.name).ifname))
        );
        assert_eq!(dev.vip_interface, "lo");
        assert_eq!(
            dev.device_group.as_deref(),
            Some(std::path::Path::new("/etc/spanlb/device-group.toml"))
        );
        assert_eq!(
            dev.bgpd_socket.as_deref(),
            Some(std::path::Path::new("/run/spanlb/bgpd.sock"))
        );
    }

    let cfg = lbd::cluster::config::GroupConfig::from_toml(
        &read("device-group.toml"),
        "device-group.toml",
    )
    .unwrap_or_else(|e| panic!("lbd rejects {e}"));
    assert_eq!(cfg.group.route_mode, lbd::cluster::config::RouteMode::L2);
    // The seed group, key for key, as the namespace lab renders it (spanlb_lab::seed): each
    // device on the HA segment and, as a second path, the internal one; tg-k led by its home
    // device, floating self IPs from the device table, path id k.
    let seed = GroupToml::seed(Path::new("/etc/spanlb/group.key"))
        .render()
        .parse::<toml::Table>()
        .expect("the rendered seed group is TOML");
    assert_eq!(toml_table("device-group.toml"), seed);
}

#[test]
fn bgpd_files_match_the_topology() {
    for d in DEVICES {
        let name = format!("bgpd-{}.toml", d.name);
        bgpd::config::Config::from_toml(&read(&name), &name)
            .unwrap_or_else(|e| panic!("{name} rejected by bgpd: {e}"));
        let t = toml_table(&name);
        assert_eq!(t["router_id"].as_str(), Some(d.static_ext), "{name}");
        assert_eq!(t["local_as"].as_integer(), Some(DEVICE_AS.into()), "{name}");
        let neighbors = t["neighbor"].as_array().expect("[[neighbor]]");
        assert_eq!(neighbors.len(), 1, "{name}");
        let n = &neighbors[0];
        assert_eq!(n["address"].as_str(), Some(ROUTER), "{name}");
        assert_eq!(
            n["remote_as"].as_integer(),
            Some(ROUTER_AS.into()),
            "{name}"
        );
        assert_eq!(n["local_address"].as_str(), Some(d.static_ext), "{name}");
        let add_path: Vec<&str> = n["add_path_send"]
            .as_array()
            .expect("add_path_send")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(add_path, ["ipv4-unicast"], "{name}");
    }
}

#[test]
fn r1_peers_with_the_three_devices() {
    let frr = read("frr.conf");
    let lines: Vec<&str> = frr.lines().map(str::trim).collect();
    let has = |l: &str| lines.contains(&l);
    assert!(has(&format!("router bgp {ROUTER_AS}")), "{frr}");
    assert!(has(&format!("bgp router-id {ROUTER}")));
    assert!(has("maximum-paths 8"));
    assert!(has("bgp bestpath as-path multipath-relax"));
    assert!(has("no bgp ebgp-requires-policy"));
    // The devices' peer group, and each device's static external address in it.
    assert!(has(&format!("neighbor DEV remote-as {DEVICE_AS}")));
    assert!(has("neighbor DEV timers 3 9"));
    let peers: BTreeSet<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("neighbor "))
        .filter_map(|l| l.strip_suffix(" peer-group DEV"))
        .collect();
    let devices: BTreeSet<&str> = DEVICES.iter().map(|d| d.static_ext).collect();
    assert_eq!(peers, devices);
    // One client's flows spread over the paths (docs/design.md, "ECMP and failover").
    let exec = clab().strings("r1", "exec");
    assert!(
        exec.iter()
            .any(|c| c == "sysctl -w net.ipv4.fib_multipath_hash_policy=1"),
        "r1: {exec:?}"
    );
    // r1's external address is the devices' BGP neighbor.
    assert_eq!(
        port("ext", "r1").addrs[0].split('/').next(),
        Some(topology::ROUTER)
    );
}

/// The device image carries the four plugins where the package puts them (an image built from
/// the binaries only had an empty plugin directory; issue 16).
#[test]
fn the_image_carries_the_plugins() {
    let docker = read("Dockerfile");
    for p in ["sip", "msrdp", "ssl", "hash"] {
        assert!(
            docker.contains(&format!("-p spanlb-plugin-{p}")),
            "plugin {p} is not built"
        );
        assert!(
            docker.contains(&format!("libspanlb_plugin_{p}.so")),
            "plugin {p} is not copied"
        );
    }
    assert!(
        docker.contains("/usr/lib/spanlb/plugins/"),
        "the plugins are not installed in /usr/lib/spanlb/plugins"
    );
}
