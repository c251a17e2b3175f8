//! The seed lab's nodes, links and addresses (docs/design.md, "The lab") as data: the network-namespace lab
//! ([`crate::cluster`]) is built from these tables, and the containerlab file
//! (`topologies/ecmp-seed/clab/`) is checked against them, so both describe the same lab.
//!
//! ```text
//!  client ── r1 (FRR) ══ ext 20.1.1.0/24 ══ A, B, C ══ int 10.1.1.0/24 ══ s1 s2 s3
//!                                          ╚═ ha 192.168.100.0/24 ═╝
//! ```
//!
//! Routed mode ([`ROUTED_LINKS`]) replaces the shared external segment by one point-to-point
//! link from r1 to each device.

/// What runs on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opens connections to the VIP.
    Client,
    /// FRR (zebra + bgpd), ECMP over the devices' paths.
    Router,
    /// bgpd + lbd.
    Device,
    /// A pool member (answers on TCP 8080 and UDP 5353).
    Server,
}

/// One node of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    pub name: &'static str,
    pub role: Role,
}

pub const NODES: &[Node] = &[
    Node {
        name: "client",
        role: Role::Client,
    },
    Node {
        name: "r1",
        role: Role::Router,
    },
    Node {
        name: "a",
        role: Role::Device,
    },
    Node {
        name: "b",
        role: Role::Device,
    },
    Node {
        name: "c",
        role: Role::Device,
    },
    Node {
        name: "s1",
        role: Role::Server,
    },
    Node {
        name: "s2",
        role: Role::Server,
    },
    Node {
        name: "s3",
        role: Role::Server,
    },
];

/// One interface of a node on a segment, with its static addresses (CIDR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    pub node: &'static str,
    pub ifname: &'static str,
    pub addrs: &'static [&'static str],
}

/// A layer-2 segment (a bridge in the netns lab, a bridge node or a veth pair in containerlab).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub name: &'static str,
    pub ports: &'static [Port],
}

/// The L2-mode lab (the seed's): client link, external, internal and HA segments.
pub const LINKS: &[Segment] = &[
    Segment {
        name: "cl",
        ports: &[
            Port {
                node: "client",
                ifname: "eth0",
                addrs: &["172.16.1.2/24"],
            },
            Port {
                node: "r1",
                ifname: "eth1",
                addrs: &["172.16.1.1/24"],
            },
        ],
    },
    Segment {
        name: "ext",
        ports: &[
            Port {
                node: "r1",
                ifname: "eth0",
                addrs: &["20.1.1.1/24"],
            },
            Port {
                node: "a",
                ifname: "ext0",
                addrs: &["20.1.1.6/24"],
            },
            Port {
                node: "b",
                ifname: "ext0",
                addrs: &["20.1.1.7/24"],
            },
            Port {
                node: "c",
                ifname: "ext0",
                addrs: &["20.1.1.8/24"],
            },
        ],
    },
    Segment {
        name: "int",
        ports: &[
            Port {
                node: "a",
                ifname: "int0",
                addrs: &["10.1.1.6/24"],
            },
            Port {
                node: "b",
                ifname: "int0",
                addrs: &["10.1.1.7/24"],
            },
            Port {
                node: "c",
                ifname: "int0",
                addrs: &["10.1.1.8/24"],
            },
            Port {
                node: "s1",
                ifname: "eth0",
                addrs: &["10.1.1.50/24"],
            },
            Port {
                node: "s2",
                ifname: "eth0",
                addrs: &["10.1.1.51/24"],
            },
            Port {
                node: "s3",
                ifname: "eth0",
                addrs: &["10.1.1.52/24"],
            },
        ],
    },
    Segment {
        name: "ha",
        ports: &[
            Port {
                node: "a",
                ifname: "ha0",
                addrs: &["192.168.100.6/24"],
            },
            Port {
                node: "b",
                ifname: "ha0",
                addrs: &["192.168.100.7/24"],
            },
            Port {
                node: "c",
                ifname: "ha0",
                addrs: &["192.168.100.8/24"],
            },
        ],
    },
];

/// Routed mode: r1 reaches each device over its own link (no shared external segment); the
/// client, internal and HA segments are as in [`LINKS`].
pub const ROUTED_EXTERNAL: &[Segment] = &[
    Segment {
        name: "ra",
        ports: &[
            Port {
                node: "r1",
                ifname: "eth-a",
                addrs: &["20.1.6.1/24"],
            },
            Port {
                node: "a",
                ifname: "ext0",
                addrs: &["20.1.6.6/24"],
            },
        ],
    },
    Segment {
        name: "rb",
        ports: &[
            Port {
                node: "r1",
                ifname: "eth-b",
                addrs: &["20.1.7.1/24"],
            },
            Port {
                node: "b",
                ifname: "ext0",
                addrs: &["20.1.7.7/24"],
            },
        ],
    },
    Segment {
        name: "rc",
        ports: &[
            Port {
                node: "r1",
                ifname: "eth-c",
                addrs: &["20.1.8.1/24"],
            },
            Port {
                node: "c",
                ifname: "ext0",
                addrs: &["20.1.8.8/24"],
            },
        ],
    },
];

/// The routed-mode lab: [`LINKS`] with the external segment replaced by [`ROUTED_EXTERNAL`].
pub fn routed_links() -> Vec<Segment> {
    LINKS
        .iter()
        .filter(|s| s.name != "ext")
        .chain(ROUTED_EXTERNAL.iter())
        .copied()
        .collect()
}

/// The devices' addresses (docs/design.md, "The lab" table), shared with the device-group file
/// ([`spanlb_lab::seed`]).
pub use spanlb_lab::seed::{DeviceAddrs, DEVICES};

/// The spanning virtual address, and the virtual servers' ports on it.
pub const VIP: &str = "30.1.1.10";
pub const VIP_TCP_PORT: u16 = 80;
pub const VIP_UDP_PORT: u16 = 53;
/// Pool members: the servers' internal addresses and ports.
pub const SERVERS: &[(&str, &str)] = &[
    ("s1", "10.1.1.50"),
    ("s2", "10.1.1.51"),
    ("s3", "10.1.1.52"),
];
pub const SERVER_TCP_PORT: u16 = 8080;
pub const SERVER_UDP_PORT: u16 = 5353;
pub const CLIENT: &str = "172.16.1.2";
pub const ROUTER: &str = "20.1.1.1";
pub const ROUTER_AS: u32 = 65000;
pub const DEVICE_AS: u32 = 65001;

/// The start of a device's bgpd configuration in the labs: its router id and session address
/// `ext`, its control socket, and one neighbor (`router`, ADD-PATH send on IPv4 unicast) with
/// `neighbor_extra` lines appended to the neighbor's table.
pub fn device_bgpd_toml(
    ext: &str,
    sock: &std::path::Path,
    router: &str,
    neighbor_extra: &str,
) -> String {
    format!(
        "router_id = \"{ext}\"\nlocal_as = {DEVICE_AS}\nlisten = [\"0.0.0.0:179\"]\n\
         control_socket = \"{sock}\"\n\n\
         [[neighbor]]\naddress = \"{router}\"\nremote_as = {ROUTER_AS}\nlocal_address = \"{ext}\"\n\
         hold_time = 9\nconnect_retry = 1\nidle_hold = 1\nadd_path_send = [\"ipv4-unicast\"]\n\
         families = [\"ipv4-unicast\"]\n{neighbor_extra}\n",
        sock = sock.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_port_names_a_node_and_no_interface_is_used_twice() {
        for links in [LINKS.to_vec(), routed_links()] {
            let mut seen = std::collections::BTreeSet::new();
            for s in &links {
                for p in s.ports {
                    assert!(NODES.iter().any(|n| n.name == p.node), "{p:?}");
                    assert!(seen.insert((p.node, p.ifname)), "{p:?} used twice");
                }
            }
        }
    }

    #[test]
    fn device_table_matches_the_segments() {
        for d in DEVICES {
            let has = |seg: &str, addr: &str| {
                LINKS.iter().any(|s| {
                    s.name == seg
                        && s.ports
                            .iter()
                            .any(|p| p.node == d.name && p.addrs.contains(&addr))
                })
            };
            assert!(has("ext", &format!("{}/24", d.static_ext)), "{d:?}");
            assert!(has("int", &format!("{}/24", d.static_int)), "{d:?}");
            assert!(has("ha", &format!("{}/24", d.ha)), "{d:?}");
        }
    }
}
