//! lbctl's command line (clap) and the control request each command sends.
//!
//! In the library (not the `lbctl` binary) so that the packaging's generator
//! (`spanlb-packaging`) writes lbctl's man page and shell completions from the same definition.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use spanlb_control::lbd::Request;

#[derive(Parser, Debug)]
#[command(
    name = "lbctl",
    version,
    about = "Inspect and operate spanlb's load balancer (lbd)",
    after_help = "Exit status: 0 done, 1 lbd answered with an error, 2 usage error, 3 lbd could not be reached."
)]
pub struct Args {
    /// lbd's control socket [default: $LBCTL_SOCKET, else /run/spanlb/lbd.sock]
    #[arg(short, long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print the daemon's data as JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Show virtual servers, virtual addresses, pools, connections or persistence records.
    #[command(subcommand)]
    Show(Show),
    /// Device, uptime, configuration file, object counts, the last reload, and the drain while
    /// lbd stops.
    Status,
    /// Enable, disable or force offline a pool member.
    ///
    /// disable: no new connections, except those a persistence record sends to it.
    /// force-offline: only established connections continue.
    /// The change is made in the running configuration only: it survives a reload unless the
    /// file changes that member's state, and lbd forgets it on restart. To make it permanent,
    /// set `state` on the member in the configuration file.
    Member {
        /// Pool name.
        pool: String,
        /// The member, ADDR:PORT (`[ADDR]:PORT` for IPv6).
        member: std::net::SocketAddr,
        action: MemberAction,
    },
    /// Persistence records.
    #[command(subcommand)]
    Persistence(PersistenceCmd),
    /// Read the configuration file again (as SIGHUP does). A file that does not validate, or
    /// whose new listeners cannot be bound, is rejected and the running configuration stays.
    Reload,
    /// Move a traffic group to another device (its next-active unless --to names one). The
    /// order spreads to every device through heartbeats; auto-failback does not undo it.
    Failover {
        /// Traffic group name.
        traffic_group: String,
        /// The device to move it to.
        #[arg(long, value_name = "DEVICE")]
        to: Option<String>,
    },
    /// Force this device to standby: it gives up every traffic group and takes none until
    /// `lbctl release`.
    Standby,
    /// End standby: this device may hold traffic groups again (auto-failback brings back those
    /// that prefer it).
    Release,
    /// Config sync: the group configuration this device holds, and whether the group does.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Live membership: add a device to the device group or remove one, while traffic flows.
    #[command(subcommand, name = "device-group")]
    DeviceGroup(DeviceGroupCmd),
    /// Device trust for the mirroring channels: the group CA and device certificates. Runs
    /// locally on files (no daemon): exit 0 done, 1 error, 2 usage.
    #[command(subcommand)]
    Trust(TrustCmd),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// This device's sync status (in-sync, changes-pending, awaiting-initial-sync,
    /// disconnected, sync-failed) and each device's generation, as heartbeats carry them.
    Status,
    /// Push this device's group configuration to every live device that does not hold it
    /// (BIG-IP's "Sync Device to Group"). Each receiver validates it, applies it as a reload
    /// does and saves it to its configuration file; one that refuses it changes nothing.
    Sync {
        /// To the group (the only direction there is; required, so that it is said).
        #[arg(long, required = true)]
        to_group: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum DeviceGroupCmd {
    /// Add device NAME (which runs lbd with a device-group file naming only itself) and sync
    /// the whole configuration to it; it then starts heartbeats and mirroring. Run on any
    /// member.
    Add {
        name: String,
        /// Its heartbeat address; give it twice for a second path.
        #[arg(long = "failover-address", required = true, value_name = "ADDR")]
        failover_addresses: Vec<std::net::IpAddr>,
        /// Its mirroring address; give it twice for a secondary.
        #[arg(long = "mirror-address", value_name = "ADDR")]
        mirror_addresses: Vec<std::net::IpAddr>,
        /// Where config sync reaches it (default: its first mirroring address).
        #[arg(long, value_name = "ADDR")]
        config_sync_address: Option<std::net::IpAddr>,
        /// Its HA capacity (load-aware placement; default 1).
        #[arg(long)]
        ha_capacity: Option<u32>,
    },
    /// Move every traffic group device NAME holds to its next-active device, then remove it
    /// from the device group (and from every HA order) and sync that to the group and to it.
    Remove { name: String },
}

#[derive(Subcommand, Debug)]
pub enum TrustCmd {
    /// Create the device group's CA: DIR/ca.crt and DIR/ca.key (0600). Valid 10 years.
    Init {
        /// Device group name (one DNS label).
        #[arg(long)]
        group: String,
        /// Trust directory (created 0700 if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Replace an existing CA certificate and key.
        #[arg(long)]
        force: bool,
    },
    /// Issue a device certificate signed by DIR/ca.*: DIR/DEVICE.crt and DIR/DEVICE.key (0600),
    /// naming DEVICE.GROUP.spanlb and the given mirror addresses. Valid 2 years.
    Issue {
        /// Trust directory holding the group CA.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Device name (one DNS label).
        #[arg(long)]
        device: String,
        /// A mirror address of the device (repeat for primary and secondary).
        #[arg(long = "address", value_name = "IP")]
        addresses: Vec<std::net::IpAddr>,
        /// Replace an existing certificate and key of this device.
        #[arg(long)]
        force: bool,
    },
    /// Every certificate in DIR: subject, SANs, not-after and SHA-256 fingerprint.
    Show {
        /// Trust directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum Show {
    /// Virtual servers: destination, pool, state and traffic (details when one is shown).
    VirtualServers {
        /// Only this virtual server.
        name: Option<String>,
    },
    /// Virtual addresses and whether their route should be advertised.
    VirtualAddresses,
    /// Pools and their members: state, traffic and the latest monitor result.
    Pools {
        /// Only this pool.
        name: Option<String>,
    },
    /// The connection table (TCP connections and UDP flows), oldest first.
    Connections {
        /// Only the connections of this virtual server.
        #[arg(long, value_name = "VS")]
        virtual_server: Option<String>,
        /// Show at most this many.
        #[arg(long, value_name = "N", default_value_t = 1000)]
        limit: usize,
    },
    /// Persistence records.
    Persistence {
        /// Only this profile's records.
        #[arg(long, value_name = "P")]
        profile: Option<String>,
    },
    /// The device group as this device sees it: devices, liveness, links, bgpd, heartbeats.
    DeviceGroup,
    /// Traffic groups: active device, next-active, this device's state, since when and why.
    TrafficGroups,
    /// Mirroring channels: per traffic group the peer, state (connecting / resyncing / in sync
    /// / lagging), records by kind, last sent and acked update id, lag.
    Mirroring,
    /// Loaded plugins (name, version, file, ABI, calls, keys, panics, state) and files that
    /// failed to load.
    Plugins,
}

#[derive(Subcommand, Debug)]
pub enum PersistenceCmd {
    /// Delete records; the options narrow down which (none: every record).
    Delete {
        #[arg(long, value_name = "P")]
        profile: Option<String>,
        /// The record key as shown (e.g. 192.0.2.0/24).
        #[arg(long, value_name = "K")]
        key: Option<String>,
        /// Records pointing at this member.
        #[arg(long, value_name = "ADDR:PORT")]
        member: Option<std::net::SocketAddr>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberAction {
    Enable,
    Disable,
    ForceOffline,
}

impl MemberAction {
    /// The admin state as lbd names it.
    fn state(self) -> &'static str {
        match self {
            MemberAction::Enable => "enabled",
            MemberAction::Disable => "disabled",
            MemberAction::ForceOffline => "forced-offline",
        }
    }
}
/// The control request for a command; `None` for the trust commands, which run locally.
pub fn request(cmd: &Cmd) -> Option<Request> {
    Some(match cmd {
        Cmd::Show(Show::VirtualServers { name }) => {
            Request::ShowVirtualServers { name: name.clone() }
        }
        Cmd::Show(Show::VirtualAddresses) => Request::ShowVirtualAddresses,
        Cmd::Show(Show::Pools { name }) => Request::ShowPools { name: name.clone() },
        Cmd::Show(Show::Connections {
            virtual_server,
            limit,
        }) => Request::ShowConnections {
            limit: Some(*limit),
            virtual_server: virtual_server.clone(),
        },
        Cmd::Show(Show::Persistence { profile }) => Request::ShowPersistence {
            profile: profile.clone(),
        },
        Cmd::Status => Request::Status,
        Cmd::Member {
            pool,
            member,
            action,
        } => Request::Member {
            member: member.to_string(),
            pool: pool.clone(),
            state: action.state().into(),
        },
        Cmd::Persistence(PersistenceCmd::Delete {
            profile,
            key,
            member,
        }) => Request::DeletePersistence {
            key: key.clone(),
            member: member.map(|m| m.to_string()),
            profile: profile.clone(),
        },
        Cmd::Reload => Request::Reload,
        Cmd::Show(Show::DeviceGroup) => Request::ShowDeviceGroup,
        Cmd::Show(Show::TrafficGroups) => Request::ShowTrafficGroups,
        Cmd::Show(Show::Mirroring) => Request::ShowMirroring,
        Cmd::Show(Show::Plugins) => Request::ShowPlugins,
        Cmd::Failover { traffic_group, to } => Request::Failover {
            to: to.clone(),
            traffic_group: traffic_group.clone(),
        },
        Cmd::Standby => Request::Standby,
        Cmd::Release => Request::Release,
        Cmd::Config(ConfigCmd::Status) => Request::ConfigStatus,
        Cmd::Config(ConfigCmd::Sync { .. }) => Request::ConfigSync,
        Cmd::DeviceGroup(DeviceGroupCmd::Add {
            name,
            failover_addresses,
            mirror_addresses,
            config_sync_address,
            ha_capacity,
        }) => Request::DeviceGroupAdd {
            name: name.clone(),
            failover_addresses: failover_addresses.iter().map(|a| a.to_string()).collect(),
            mirror_addresses: mirror_addresses.iter().map(|a| a.to_string()).collect(),
            config_sync_address: config_sync_address.map(|a| a.to_string()),
            ha_capacity: *ha_capacity,
        },
        Cmd::DeviceGroup(DeviceGroupCmd::Remove { name }) => {
            Request::DeviceGroupRemove { name: name.clone() }
        }
        Cmd::Trust(_) => return None,
    })
}

/// The arguments after `lbctl` (tests).
pub fn parse(args: &[&str]) -> Result<Args, clap::Error> {
    Args::try_parse_from(std::iter::once("lbctl").chain(args.iter().copied()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Option<String> {
        Some(x.to_string())
    }

    #[test]
    fn commands_become_requests() {
        let cases: [(&[&str], Request); 9] = [
            (&["status"], Request::Status),
            (
                &["show", "pools", "web"],
                Request::ShowPools { name: s("web") },
            ),
            (
                &["show", "virtual-servers"],
                Request::ShowVirtualServers { name: None },
            ),
            (
                &["show", "virtual-addresses"],
                Request::ShowVirtualAddresses,
            ),
            (
                &[
                    "show",
                    "connections",
                    "--virtual-server",
                    "web",
                    "--limit",
                    "5",
                ],
                Request::ShowConnections {
                    limit: Some(5),
                    virtual_server: s("web"),
                },
            ),
            (
                &["show", "persistence", "--profile", "src"],
                Request::ShowPersistence { profile: s("src") },
            ),
            (
                &["member", "web", "[fd00::5]:80", "force-offline"],
                Request::Member {
                    member: "[fd00::5]:80".into(),
                    pool: "web".into(),
                    state: "forced-offline".into(),
                },
            ),
            (
                &["persistence", "delete", "--member", "10.0.0.1:80"],
                Request::DeletePersistence {
                    key: None,
                    member: s("10.0.0.1:80"),
                    profile: None,
                },
            ),
            (&["--json", "reload"], Request::Reload),
        ];
        for (argv, want) in cases {
            let a = parse(argv).unwrap();
            assert_eq!(request(&a.cmd), Some(want), "{argv:?}");
        }
        let a = parse(&["show", "connections"]).unwrap();
        assert!(matches!(
            request(&a.cmd),
            Some(Request::ShowConnections {
                limit: Some(1000),
                ..
            })
        ));
        let state = |argv: &[&str]| match request(&parse(argv).unwrap().cmd) {
            Some(Request::Member { state, .. }) => state,
            other => panic!("{other:?}"),
        };
        let a = parse(&["member", "p", "10.0.0.1:80", "enable", "--json", "-s", "/x"]).unwrap();
        assert!(a.json);
        assert_eq!(a.socket, Some(PathBuf::from("/x")));
        assert_eq!(state(&["member", "p", "10.0.0.1:80", "enable"]), "enabled");
        assert_eq!(
            state(&["member", "p", "10.0.0.1:80", "disable"]),
            "disabled"
        );
    }

    #[test]
    fn device_group_commands_become_requests() {
        let cases: [(&[&str], Request); 6] = [
            (&["show", "device-group"], Request::ShowDeviceGroup),
            (
                &["show", "traffic-groups", "--json"],
                Request::ShowTrafficGroups,
            ),
            (
                &["failover", "tg-2"],
                Request::Failover {
                    to: None,
                    traffic_group: "tg-2".into(),
                },
            ),
            (
                &["failover", "tg-2", "--to", "c"],
                Request::Failover {
                    to: s("c"),
                    traffic_group: "tg-2".into(),
                },
            ),
            (&["standby"], Request::Standby),
            (&["release"], Request::Release),
        ];
        for (argv, want) in cases {
            assert_eq!(request(&parse(argv).unwrap().cmd), Some(want), "{argv:?}");
        }
        assert_eq!(parse(&["failover"]).unwrap_err().exit_code(), 2);
        assert_eq!(
            request(&parse(&["trust", "show", "--dir", "/x"]).unwrap().cmd),
            None
        );
    }

    #[test]
    fn usage_errors_are_exit_code_2() {
        for argv in [
            &["member", "web", "10.0.0.1", "disable"][..],
            &["member", "web", "10.0.0.1:80", "off"],
            &["show"],
            &["show", "connections", "--limit", "-1"],
            &["frob"],
        ] {
            let e = parse(argv).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{argv:?}");
        }
    }
}
