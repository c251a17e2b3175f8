//! The device-group configuration: the part every device of the group shares (devices, their
//! failover addresses, traffic groups with their floating self IPs and HA order, heartbeat
//! timing). Device-local settings (this device's name, interfaces) stay in lbd's own file.
//!
//! Read like lbd's configuration: TOML with `toml` and serde (names kept as written; two
//! devices or traffic groups whose names differ only in case are refused), `deny_unknown_fields`,
//! validated as a whole; errors name the file, the key and the problem. Turned into the
//! [`DriverConfig`] the heartbeat driver runs with. No I/O beyond reading files.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::driver::DriverConfig;
use super::heartbeat::GroupKey;
use super::placement::{GroupSpec, TrafficGroupSpec};
use crate::config::{invalid, parse_json, parse_toml, read_file, ConfigError};

/// The whole device-group file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub group: Group,
    #[serde(default)]
    pub devices: Vec<Device>,
    #[serde(default)]
    pub traffic_groups: Vec<TrafficGroup>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    /// File with the group key (hex, or at least 16 raw bytes): authenticates heartbeats.
    pub key_file: PathBuf,
    /// UDP port heartbeats are sent to and received on.
    #[serde(default = "default_port")]
    pub heartbeat_port: u16,
    #[serde(default = "default_interval", with = "crate::config::duration")]
    pub heartbeat_interval: Duration,
    /// A device not heard from for this long is dead. Default 500ms: a hung device is
    /// declared dead well within one second.
    #[serde(default = "default_dead_after", with = "crate::config::duration")]
    pub dead_after: Duration,
    /// A heartbeat sent (by its sender's clock) further than this from this device's clock is
    /// dropped: a replay of an old captured heartbeat, even right after this device restarted
    /// and forgot what it had accepted. The group's clocks must agree within it (NTP).
    #[serde(
        default = "default_heartbeat_max_age",
        with = "crate::config::duration"
    )]
    pub heartbeat_max_age: Duration,
    /// How the routers reach the floating external self IPs (docs/design.md, "ECMP and failover").
    #[serde(default)]
    pub route_mode: RouteMode,
    /// TCP port of the first traffic group's mirroring channel; traffic group number k (in
    /// file order, from 0) uses `mirror_port + k`. All within 1029–1155.
    #[serde(default = "default_mirror_port")]
    pub mirror_port: u16,
    /// Who receives a traffic group's mirrored connections and UDP flows: its next-active
    /// device (the default: only it takes them over) or every other device.
    #[serde(default)]
    pub mirror_scope: MirrorScope,
    /// Who receives a traffic group's mirrored persistence records: every other device (the
    /// default: with a router hashing on ports, a client's connections reach every device,
    /// and each must send it to the same member) or only its next-active device (enough when
    /// the routers hash on addresses only, so a client stays on one path).
    #[serde(default = "default_persistence_scope")]
    pub persistence_mirror_scope: MirrorScope,
    /// Real-time priority (`SCHED_RR`, 1-99) of the heartbeat thread, as keepalived's
    /// `vrrp_rt_priority`: heartbeats then go out on time even when the machine is busy.
    /// 0 (the default) leaves it an ordinary thread.
    #[serde(default)]
    pub heartbeat_realtime_priority: u8,
    /// TCP port of config sync (mutual TLS with the mirroring trust), on each device's
    /// config-sync address.
    #[serde(default = "default_config_sync_port")]
    pub config_sync_port: u16,
    /// Push every configuration a reload commits here to the group (BIG-IP's automatic sync);
    /// off: `lbctl config sync --to-group` does.
    #[serde(default)]
    pub auto_sync: bool,
    /// A change set larger than this (KB, as it travels) goes as a full sync (BIG-IP's
    /// `max_incremental_sync_size`, default 1024).
    #[serde(
        default = "default_max_incremental",
        skip_serializing_if = "is_default_max_incremental"
    )]
    pub max_incremental_sync_size: u32,
}

fn default_max_incremental() -> u32 {
    1024
}

// serde's skip_serializing_if passes a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_default_max_incremental(v: &u32) -> bool {
    *v == default_max_incremental()
}

/// The largest `max_incremental_sync_size` (KB): a config-sync message is at most 16 MiB.
pub const MAX_INCREMENTAL_SYNC_KB: u32 = 16 * 1024;

fn default_config_sync_port() -> u16 {
    1028
}

fn default_mirror_port() -> u16 {
    MIRROR_PORTS.0
}

fn default_persistence_scope() -> MirrorScope {
    MirrorScope::AllPeers
}

/// The mirroring channels' port range (as BIG-IP's).
pub const MIRROR_PORTS: (u16, u16) = (1029, 1155);

/// Who receives a traffic group's mirrored state (of one kind: see `mirror_scope` and
/// `persistence_mirror_scope`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MirrorScope {
    /// Its next-active device (the one that takes it over; L2 mode).
    #[default]
    NextActive,
    /// Every other device.
    AllPeers,
}

impl std::fmt::Display for MirrorScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MirrorScope::NextActive => "next-active",
            MirrorScope::AllPeers => "all-peers",
        })
    }
}

/// How the routers reach a traffic group's floating external self IP, the next hop of the
/// virtual addresses' paths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteMode {
    /// Routers share the external segment with the devices: the address moves with its
    /// traffic group (gratuitous ARP / unsolicited NA) and routers keep their next hops.
    #[default]
    L2,
    /// No shared segment: the active device also announces the floating external self IP as
    /// a host route with itself as next hop; routers resolve the paths recursively.
    Routed,
}

impl std::fmt::Display for RouteMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RouteMode::L2 => "l2",
            RouteMode::Routed => "routed",
        })
    }
}

/// A MAC address written `02:00:5e:00:01:01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

impl std::str::FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let mut mac = [0u8; 6];
        if parts.len() != 6 {
            return Err(format!(
                "`{s}` is not a MAC address (six hex bytes separated by `:`)"
            ));
        }
        for (b, p) in mac.iter_mut().zip(&parts) {
            if p.len() != 2 {
                return Err(format!(
                    "`{s}` is not a MAC address (six hex bytes separated by `:`)"
                ));
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| {
                format!("`{s}` is not a MAC address (six hex bytes separated by `:`)")
            })?;
        }
        Ok(MacAddr(mac))
    }
}

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn default_port() -> u16 {
    1026
}
fn default_interval() -> Duration {
    Duration::from_millis(100)
}
fn default_dead_after() -> Duration {
    Duration::from_millis(500)
}

fn default_heartbeat_max_age() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Device {
    pub name: String,
    /// Heartbeat addresses: the HA segment, and optionally a second path.
    pub failover_addresses: Vec<IpAddr>,
    /// Mirroring addresses, primary then secondary (used by mirroring).
    #[serde(default)]
    pub mirror_addresses: Vec<IpAddr>,
    /// Where config sync reaches this device (BIG-IP: its internal static self IP); default:
    /// its first mirroring address.
    #[serde(default)]
    pub config_sync_address: Option<IpAddr>,
    /// How much traffic-group load this device takes relative to the others (BIG-IP's HA
    /// capacity), 1-1000, default 1: a traffic group none of whose HA order is usable goes to
    /// the usable device with the lowest sum of `ha_load_factor` per capacity.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub ha_capacity: u32,
}

impl Device {
    /// The address config sync reaches this device on, if it has one.
    pub fn sync_address(&self) -> Option<IpAddr> {
        self.config_sync_address
            .or_else(|| self.mirror_addresses.first().copied())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrafficGroup {
    pub name: String,
    /// Devices in failover preference order: any devices of the group, each at most once.
    /// Empty: every device, by name. When none of the devices named is usable, the traffic
    /// group goes to the least loaded usable device (see `ha_load_factor`, `ha_capacity`).
    #[serde(default)]
    pub ha_order: Vec<String>,
    /// Floating external self IP with its prefix (the VIP's next hop in L2 mode).
    pub external_floating: IpNet,
    /// Floating internal self IP with its prefix (the SNAT automap source).
    pub internal_floating: IpNet,
    #[serde(default)]
    pub auto_failback: bool,
    #[serde(default = "default_failback_delay", with = "crate::config::duration")]
    pub failback_delay: Duration,
    /// With mirroring on, auto-failback waits until the returning device's mirror of this
    /// traffic group is in sync, at most this long after `failback_delay` (then it fails back
    /// anyway). Unused with mirroring off.
    #[serde(
        default = "default_failback_sync_max_wait",
        with = "crate::config::duration"
    )]
    pub failback_sync_max_wait: Duration,
    /// ADD-PATH path id the VIP is announced with for this group (default: position + 1).
    #[serde(default)]
    pub path_id: Option<u32>,
    /// MAC masquerade: the floating external self IP lives on a macvlan `tg<path id>` of the
    /// external interface with this (locally administered, unicast) MAC, which moves with the
    /// traffic group, so routers' neighbour entries never change. Connections arriving on it are
    /// attributed to this traffic group.
    #[serde(default)]
    pub mac_masquerade: Option<MacAddr>,
    /// The load this traffic group puts on the device it is active on, relative to the other
    /// traffic groups (BIG-IP's HA load factor), 1-1000, default 1 (see `ha_capacity`).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub ha_load_factor: u32,
}

fn one() -> u32 {
    1
}

// serde's skip_serializing_if passes a reference.
fn is_one(n: &u32) -> bool {
    *n == 1
}

/// The largest `ha_capacity` and `ha_load_factor` accepted.
pub const MAX_HA_WEIGHT: u32 = 1000;

fn default_failback_delay() -> Duration {
    Duration::from_secs(5)
}
fn default_failback_sync_max_wait() -> Duration {
    Duration::from_secs(30)
}

/// The longest `failback_sync_max_wait` accepted.
pub const MAX_FAILBACK_SYNC_WAIT: Duration = Duration::from_secs(3600);

type Invalid = (String, String);

fn bad(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    (key.into(), message.into())
}

/// Two names of one kind (`folded`: those seen so far, by their lowercase) that differ only
/// in case: the message naming both.
fn case_unique<'a>(folded: &mut BTreeMap<String, &'a str>, name: &'a str) -> Result<(), String> {
    match folded.insert(name.to_lowercase(), name) {
        Some(other) if other != name => Err(format!(
            "`{name}` and `{other}` differ only in case: give them names that differ otherwise"
        )),
        _ => Ok(()),
    }
}

impl GroupConfig {
    /// Reads and validates the file.
    pub fn load(path: &Path) -> Result<GroupConfig, ConfigError> {
        let (text, file) = read_file(path)?;
        Self::from_toml(&text, &file)
    }

    /// Parses and validates TOML text; `name` stands for the file name in errors.
    pub fn from_toml(text: &str, name: &str) -> Result<GroupConfig, ConfigError> {
        let cfg: GroupConfig = parse_toml(text, name, &["group"])?;
        cfg.validate().map_err(|e| invalid(name, e))?;
        Ok(cfg)
    }

    /// Validates a device group received as JSON (config sync), as [`GroupConfig::from_toml`]
    /// does a file.
    pub fn from_value(v: serde_json::Value) -> Result<GroupConfig, ConfigError> {
        let name = "synced device group";
        let cfg: GroupConfig = parse_json(v, name, &["group"])?;
        cfg.validate().map_err(|e| invalid(name, e))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), Invalid> {
        let g = &self.group;
        if g.heartbeat_interval.is_zero() {
            return Err(bad("group.heartbeat_interval", "must not be 0"));
        }
        if g.heartbeat_max_age < Duration::from_secs(1) || g.heartbeat_max_age < g.dead_after {
            return Err(bad(
                "group.heartbeat_max_age",
                "must be at least 1s and at least dead_after",
            ));
        }
        if g.dead_after < g.heartbeat_interval * 2 {
            return Err(bad(
                "group.dead_after",
                "must be at least two heartbeat intervals",
            ));
        }
        if g.max_incremental_sync_size == 0 || g.max_incremental_sync_size > MAX_INCREMENTAL_SYNC_KB
        {
            return Err(bad(
                "group.max_incremental_sync_size",
                format!(
                    "{} KB is not 1-{MAX_INCREMENTAL_SYNC_KB}",
                    g.max_incremental_sync_size
                ),
            ));
        }
        if g.heartbeat_port == 0 {
            return Err(bad("group.heartbeat_port", "port 0 is not a port"));
        }
        let mut names = BTreeSet::new();
        let mut folded = BTreeMap::new();
        let mut addrs = BTreeSet::new();
        for (i, d) in self.devices.iter().enumerate() {
            let key = |k: &str| format!("devices[{i}].{k}");
            if d.name.is_empty() || !names.insert(d.name.as_str()) {
                return Err(bad(
                    key("name"),
                    format!("`{}` is empty or listed twice", d.name),
                ));
            }
            case_unique(&mut folded, &d.name).map_err(|m| bad(key("name"), m))?;
            if d.failover_addresses.is_empty() || d.failover_addresses.len() > 2 {
                return Err(bad(key("failover_addresses"), "give one or two addresses"));
            }
            for a in &d.failover_addresses {
                if !addrs.insert(*a) {
                    return Err(bad(
                        key("failover_addresses"),
                        format!("{a} is used by two devices"),
                    ));
                }
            }
            if d.mirror_addresses.len() > 2 {
                return Err(bad(key("mirror_addresses"), "give at most two addresses"));
            }
            if !(1..=MAX_HA_WEIGHT).contains(&d.ha_capacity) {
                return Err(bad(
                    key("ha_capacity"),
                    format!("{} is not 1-{MAX_HA_WEIGHT}", d.ha_capacity),
                ));
            }
        }
        if self.devices.is_empty() {
            return Err(bad("devices", "a device group needs at least one device"));
        }
        if g.heartbeat_realtime_priority > 99 {
            return Err(bad(
                "group.heartbeat_realtime_priority",
                format!(
                    "{} is not a real-time priority: give 1-99, or 0 for none",
                    g.heartbeat_realtime_priority
                ),
            ));
        }
        let (lo, hi) = MIRROR_PORTS;
        let last = u32::from(g.mirror_port) + self.traffic_groups.len().saturating_sub(1) as u32;
        if g.mirror_port < lo || last > u32::from(hi) {
            return Err(bad(
                "group.mirror_port",
                format!(
                    "the channels of {} traffic groups from port {} do not fit in {lo}-{hi}",
                    self.traffic_groups.len(),
                    g.mirror_port
                ),
            ));
        }
        let mut tgs = BTreeSet::new();
        let mut folded = BTreeMap::new();
        let mut floating = BTreeSet::new();
        let mut path_ids = BTreeSet::new();
        for (i, tg) in self.traffic_groups.iter().enumerate() {
            let key = |k: &str| format!("traffic_groups[{i}].{k}");
            if tg.name.is_empty() || !tgs.insert(tg.name.as_str()) {
                return Err(bad(
                    key("name"),
                    format!("`{}` is empty or listed twice", tg.name),
                ));
            }
            case_unique(&mut folded, &tg.name).map_err(|m| bad(key("name"), m))?;
            let mut order = BTreeSet::new();
            for d in &tg.ha_order {
                if !names.contains(d.as_str()) {
                    return Err(bad(key("ha_order"), format!("no device named `{d}`")));
                }
                if !order.insert(d.as_str()) {
                    return Err(bad(key("ha_order"), format!("`{d}` is listed twice")));
                }
            }
            if !(1..=MAX_HA_WEIGHT).contains(&tg.ha_load_factor) {
                return Err(bad(
                    key("ha_load_factor"),
                    format!("{} is not 1-{MAX_HA_WEIGHT}", tg.ha_load_factor),
                ));
            }
            for (k, a) in [
                ("external_floating", tg.external_floating),
                ("internal_floating", tg.internal_floating),
            ] {
                if !floating.insert(a.addr()) {
                    return Err(bad(key(k), format!("{} is used twice", a.addr())));
                }
            }
            if let Some(m) = tg.mac_masquerade {
                if m.0[0] & 1 == 1 || m.0 == [0; 6] {
                    return Err(bad(
                        key("mac_masquerade"),
                        format!("{m} is not a unicast MAC address"),
                    ));
                }
            }
            if self.group.route_mode == RouteMode::Routed
                && tg.external_floating.prefix_len() != tg.external_floating.max_prefix_len()
            {
                return Err(bad(
                    key("external_floating"),
                    "must be a host address (/32 or /128) in routed mode: it is announced as a route",
                ));
            }
            if tg.failback_sync_max_wait.is_zero()
                || tg.failback_sync_max_wait > MAX_FAILBACK_SYNC_WAIT
            {
                return Err(bad(
                    key("failback_sync_max_wait"),
                    format!(
                        "{} is 0 or more than 1h",
                        humantime::format_duration(tg.failback_sync_max_wait)
                    ),
                ));
            }
            let id = tg.path_id.unwrap_or(i as u32 + 1);
            if id == 0 || !path_ids.insert(id) {
                return Err(bad(
                    key("path_id"),
                    format!("path id {id} is 0 or used twice"),
                ));
            }
        }
        Ok(())
    }

    /// Each traffic group's mirroring channel port.
    pub fn mirror_ports(&self) -> BTreeMap<String, u16> {
        self.traffic_groups
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), self.group.mirror_port + i as u16))
            .collect()
    }

    /// The traffic group named `name`.
    pub fn traffic_group(&self, name: &str) -> Option<&TrafficGroup> {
        self.traffic_groups.iter().find(|t| t.name == name)
    }

    /// The ADD-PATH path id of each traffic group.
    pub fn path_ids(&self) -> BTreeMap<String, u32> {
        self.traffic_groups
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), t.path_id.unwrap_or(i as u32 + 1)))
            .collect()
    }

    /// What the heartbeat driver of device `me` runs with: it listens on its first failover
    /// address and sends to every failover address of every peer. With `mirroring` on,
    /// auto-failback waits for the mirror to be in sync, at most each traffic group's
    /// `failback_sync_max_wait` (its spec's `sync_wait`); off, it does not wait.
    pub fn driver_config(
        &self,
        me: &str,
        key: Arc<GroupKey>,
        mirroring: bool,
    ) -> Result<DriverConfig, String> {
        let mine = self.devices.iter().find(|d| d.name == me).ok_or_else(|| {
            format!(
                "device `{me}` is not a member of device group `{}`",
                self.group.name
            )
        })?;
        let port = self.group.heartbeat_port;
        let peers = self
            .devices
            .iter()
            .filter(|d| d.name != me)
            .map(|d| {
                let addrs = d
                    .failover_addresses
                    .iter()
                    .map(|a| SocketAddr::new(*a, port))
                    .collect();
                (d.name.clone(), addrs)
            })
            .collect();
        Ok(DriverConfig {
            spec: GroupSpec {
                me: me.to_string(),
                devices: self.devices.iter().map(|d| d.name.clone()).collect(),
                traffic_groups: self
                    .traffic_groups
                    .iter()
                    .map(|t| TrafficGroupSpec {
                        name: t.name.clone(),
                        ha_order: t.ha_order.clone(),
                        auto_failback: t.auto_failback,
                        failback_delay: t.failback_delay,
                        sync_wait: mirroring.then_some(t.failback_sync_max_wait),
                        sync_all_groups: self.group.persistence_mirror_scope
                            == MirrorScope::AllPeers,
                        load_factor: t.ha_load_factor,
                    })
                    .collect(),
                heartbeat_interval: self.group.heartbeat_interval,
                dead_after: self.group.dead_after,
                capacity: self
                    .devices
                    .iter()
                    .map(|d| (d.name.clone(), d.ha_capacity))
                    .collect(),
            },
            key,
            max_age: self.group.heartbeat_max_age,
            // With a second path, heartbeats arrive on either address: listen on both.
            listen: if mine.failover_addresses.len() > 1 {
                let any: IpAddr = match mine.failover_addresses[0] {
                    IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                    IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
                };
                SocketAddr::new(any, port)
            } else {
                SocketAddr::new(mine.failover_addresses[0], port)
            },
            peers,
            realtime_priority: self.group.heartbeat_realtime_priority,
        })
    }
}

/// The seed's group (docs/design.md, "The lab"), for unit tests.
#[cfg(test)]
pub(crate) const SEED: &str = r#"
[group]
name = "seed"
key_file = "/etc/spanlb/group.key"

[[devices]]
name = "A"
failover_addresses = ["192.168.100.6"]
[[devices]]
name = "B"
failover_addresses = ["192.168.100.7"]
[[devices]]
name = "C"
failover_addresses = ["192.168.100.8", "192.168.101.8"]

[[traffic_groups]]
name = "tg-1"
ha_order = ["A", "B", "C"]
external_floating = "20.1.1.2/24"
internal_floating = "10.1.1.2/24"
[[traffic_groups]]
name = "tg-2"
ha_order = ["B", "C", "A"]
external_floating = "20.1.1.3/24"
internal_floating = "10.1.1.3/24"
auto_failback = true
failback_delay = "2s"
[[traffic_groups]]
name = "tg-3"
ha_order = ["C", "A", "B"]
external_floating = "20.1.1.4/24"
internal_floating = "10.1.1.4/24"
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Arc<GroupKey> {
        Arc::new(GroupKey::from_hex("00112233445566778899aabbccddeeff").unwrap())
    }

    #[test]
    fn the_seed_group_parses_and_becomes_a_driver_config() {
        let g = GroupConfig::from_toml(SEED, "group.toml").unwrap();
        assert_eq!(g.group.heartbeat_interval, Duration::from_millis(100));
        assert_eq!(g.group.dead_after, Duration::from_millis(500));
        assert_eq!(g.path_ids()["tg-2"], 2);
        assert_eq!(g.group.max_incremental_sync_size, 1024);
        let d = g.driver_config("B", key(), false).unwrap();
        assert_eq!(d.listen, "192.168.100.7:1026".parse().unwrap());
        assert_eq!(d.peers.len(), 2);
        assert_eq!(d.peers["C"].len(), 2);
        assert_eq!(d.spec.devices, vec!["A", "B", "C"]);
        let tg2 = &d.spec.traffic_groups[1];
        assert!(tg2.auto_failback);
        assert_eq!(tg2.failback_delay, Duration::from_secs(2));
        assert!(!d.spec.traffic_groups[0].auto_failback);
        // Mirroring off: failback does not wait for sync.
        assert!(d.spec.traffic_groups.iter().all(|t| t.sync_wait.is_none()));
        let e = g.driver_config("D", key(), false).unwrap_err();
        assert_eq!(e, "device `D` is not a member of device group `seed`");
    }

    #[test]
    fn heartbeat_realtime_priority_is_0_to_99() {
        let g = GroupConfig::from_toml(SEED, "group.toml").unwrap();
        assert_eq!(
            g.driver_config("B", key(), false)
                .unwrap()
                .realtime_priority,
            0
        );
        let with = |p: &str| {
            SEED.replacen(
                "name = \"seed\"",
                &format!("name = \"seed\"\nheartbeat_realtime_priority = {p}"),
                1,
            )
        };
        let g = GroupConfig::from_toml(&with("50"), "group.toml").unwrap();
        assert_eq!(
            g.driver_config("B", key(), false)
                .unwrap()
                .realtime_priority,
            50
        );
        let e = GroupConfig::from_toml(&with("100"), "group.toml").unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("group.heartbeat_realtime_priority") && e.contains("1-99"),
            "{e}"
        );
    }

    #[test]
    fn route_mode_and_mac_masquerade_parse() {
        let text = SEED
            .replacen(
                "name = \"seed\"",
                "name = \"seed\"\nroute_mode = \"routed\"",
                1,
            )
            .replace("/24\"\ninternal", "/32\"\ninternal")
            .replacen(
                "name = \"tg-1\"",
                "name = \"tg-1\"\nmac_masquerade = \"02:00:5E:00:01:01\"",
                1,
            );
        let g = GroupConfig::from_toml(&text, "group.toml").unwrap();
        assert_eq!(g.group.route_mode, RouteMode::Routed);
        let m = g.traffic_groups[0].mac_masquerade.unwrap();
        assert_eq!(m.0, [2, 0, 0x5e, 0, 1, 1]);
        assert_eq!(m.to_string(), "02:00:5e:00:01:01");
        assert_eq!(
            GroupConfig::from_toml(SEED, "g").unwrap().group.route_mode,
            RouteMode::L2
        );
    }

    #[test]
    fn failback_sync_max_wait_defaults_to_30s_and_is_used_with_mirroring_on() {
        let g = GroupConfig::from_toml(SEED, "group.toml").unwrap();
        assert!(g
            .traffic_groups
            .iter()
            .all(|t| t.failback_sync_max_wait == Duration::from_secs(30)));
        let text = SEED.replacen(
            "failback_delay = \"2s\"",
            "failback_delay = \"2s\"\nfailback_sync_max_wait = \"1m 30s\"",
            1,
        );
        let g = GroupConfig::from_toml(&text, "group.toml").unwrap();
        assert_eq!(
            g.traffic_groups[1].failback_sync_max_wait,
            Duration::from_secs(90)
        );
        let on = g.driver_config("A", key(), true).unwrap();
        let waits: Vec<_> = on.spec.traffic_groups.iter().map(|t| t.sync_wait).collect();
        assert_eq!(
            waits,
            [30, 90, 30].map(|s| Some(Duration::from_secs(s))).to_vec()
        );
        let off = g.driver_config("A", key(), false).unwrap();
        assert!(off
            .spec
            .traffic_groups
            .iter()
            .all(|t| t.sync_wait.is_none()));
        // An hour is the most accepted.
        let hour = SEED.replacen(
            "name = \"tg-3\"",
            "name = \"tg-3\"\nfailback_sync_max_wait = \"1h\"",
            1,
        );
        let g = GroupConfig::from_toml(&hour, "group.toml").unwrap();
        assert_eq!(
            g.traffic_groups[2].failback_sync_max_wait,
            MAX_FAILBACK_SYNC_WAIT
        );
    }

    #[test]
    fn ha_capacity_load_factor_and_partial_ha_orders() {
        // Defaults: 1 each, every HA order as written.
        let g = GroupConfig::from_toml(SEED, "group.toml").unwrap();
        assert!(g.devices.iter().all(|d| d.ha_capacity == 1));
        assert!(g.traffic_groups.iter().all(|t| t.ha_load_factor == 1));
        let d = g.driver_config("A", key(), false).unwrap();
        assert_eq!(
            d.spec.capacity,
            [("A", 1), ("B", 1), ("C", 1)]
                .map(|(n, c)| (n.to_string(), c))
                .into()
        );
        assert!(d.spec.traffic_groups.iter().all(|t| t.load_factor == 1));
        // Defaults are not written out (a peer that does not know the keys takes the group).
        let json = serde_json::to_value(&g).unwrap();
        assert!(!json.to_string().contains("ha_capacity"), "{json}");
        assert!(!json.to_string().contains("ha_load_factor"), "{json}");

        let text = SEED
            .replacen("name = \"C\"", "name = \"C\"\nha_capacity = 2", 1)
            .replacen(
                "ha_order = [\"B\", \"C\", \"A\"]",
                "ha_order = [\"B\"]\nha_load_factor = 3",
                1,
            )
            .replacen("ha_order = [\"C\", \"A\", \"B\"]", "ha_order = []", 1);
        let g = GroupConfig::from_toml(&text, "group.toml").unwrap();
        assert_eq!(g.devices[2].ha_capacity, 2);
        assert_eq!(g.traffic_groups[1].ha_order, ["B"]);
        assert_eq!(g.traffic_groups[1].ha_load_factor, 3);
        assert!(g.traffic_groups[2].ha_order.is_empty());
        let d = g.driver_config("B", key(), false).unwrap();
        assert_eq!(d.spec.capacity["C"], 2);
        assert_eq!(d.spec.capacity["A"], 1);
        let tgs = &d.spec.traffic_groups;
        assert_eq!(tgs[1].ha_order, ["B"]);
        assert_eq!(tgs[1].load_factor, 3);
        assert!(tgs[2].ha_order.is_empty());
        // Written out when set, and read back the same (config sync).
        let back = GroupConfig::from_value(serde_json::to_value(&g).unwrap()).unwrap();
        assert_eq!(back, g);
        // ha_order may be left out: every device by name.
        let text = SEED.replacen("ha_order = [\"C\", \"A\", \"B\"]\n", "", 1);
        let g = GroupConfig::from_toml(&text, "group.toml").unwrap();
        assert!(g.traffic_groups[2].ha_order.is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            ("ha_order = [\"B\", \"C\", \"A\"]", "ha_order = [\"B\", \"C\", \"B\"]",
             "key `traffic_groups[1].ha_order`: `B` is listed twice"),
            ("name = \"tg-3\"", "name = \"tg-3\"\nha_load_factor = 0",
             "key `traffic_groups[2].ha_load_factor`: 0 is not 1-1000"),
            ("name = \"tg-3\"", "name = \"tg-3\"\nha_load_factor = 1001",
             "key `traffic_groups[2].ha_load_factor`: 1001 is not 1-1000"),
            ("name = \"B\"", "name = \"B\"\nha_capacity = 0",
             "key `devices[1].ha_capacity`: 0 is not 1-1000"),
            ("name = \"C\"", "name = \"C\"\nha_capacity = 5000",
             "key `devices[2].ha_capacity`: 5000 is not 1-1000"),
            ("name = \"C\"", "name = \"C\"\nha_capacity = -1", "ha_capacity"),
            ("ha_order = [\"B\", \"C\", \"A\"]", "ha_order = [\"B\", \"C\", \"X\"]",
             "key `traffic_groups[1].ha_order`: no device named `X`"),
            ("internal_floating = \"10.1.1.4/24\"", "internal_floating = \"10.1.1.3/24\"",
             "key `traffic_groups[2].internal_floating`: 10.1.1.3 is used twice"),
            ("failover_addresses = [\"192.168.100.7\"]", "failover_addresses = [\"192.168.100.6\"]",
             "key `devices[1].failover_addresses`: 192.168.100.6 is used by two devices"),
            ("name = \"B\"", "name = \"A\"", "key `devices[1].name`: `A` is empty or listed twice"),
            ("name = \"B\"", "name = \"a\"",
             "key `devices[1].name`: `a` and `A` differ only in case: give them names that differ otherwise"),
            ("name = \"tg-3\"", "name = \"TG-1\"",
             "key `traffic_groups[2].name`: `TG-1` and `tg-1` differ only in case"),
            ("failback_delay = \"2s\"", "failback_delay = \"soon\"", "key `traffic_groups[1].failback_delay`"),
            ("external_floating = \"20.1.1.2/24\"", "external_floating = \"20.1.1.2\"",
             "key `traffic_groups[0].external_floating`"),
            ("key_file = \"/etc/spanlb/group.key\"", "key_file = \"/k\"\ndead_after = \"150ms\"",
             "key `group.dead_after`: must be at least two heartbeat intervals"),
            ("name = \"tg-3\"", "name = \"tg-3\"\npath_id = 1",
             "key `traffic_groups[2].path_id`: path id 1 is 0 or used twice"),
            ("name = \"seed\"", "name = \"seed\"\nbogus = 1", "bogus"),
            ("name = \"seed\"", "name = \"seed\"\nmax_incremental_sync_size = 0",
             "key `group.max_incremental_sync_size`: 0 KB is not 1-16384"),
            ("name = \"tg-3\"", "name = \"tg-3\"\nmac_masquerade = \"01:00:5e:00:00:01\"",
             "key `traffic_groups[2].mac_masquerade`: 01:00:5e:00:00:01 is not a unicast MAC address"),
            ("name = \"tg-3\"", "name = \"tg-3\"\nmac_masquerade = \"02:00:5e\"",
             "key `traffic_groups[2].mac_masquerade`"),
            ("name = \"seed\"", "name = \"seed\"\nroute_mode = \"routed\"",
             "key `traffic_groups[0].external_floating`: must be a host address (/32 or /128) in routed mode"),
            ("name = \"seed\"", "name = \"seed\"\nroute_mode = \"bgp\"", "route_mode"),
            ("failback_delay = \"2s\"", "failback_delay = \"2s\"\nfailback_sync_max_wait = \"0s\"",
             "key `traffic_groups[1].failback_sync_max_wait`: 0s is 0 or more than 1h"),
            ("name = \"tg-3\"", "name = \"tg-3\"\nfailback_sync_max_wait = \"1h 1s\"",
             "key `traffic_groups[2].failback_sync_max_wait`: 1h 1s is 0 or more than 1h"),
            ("name = \"tg-1\"", "name = \"tg-1\"\nfailback_sync_max_wait = \"later\"",
             "key `traffic_groups[0].failback_sync_max_wait`"),
        ];
        for (from, to, want) in cases {
            assert!(SEED.contains(from), "{from}");
            let e = GroupConfig::from_toml(&SEED.replacen(from, to, 1), "group.toml")
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("group.toml: "), "{e}");
            assert!(e.contains(want), "{to}:\n  got  {e}\n  want {want}");
        }
    }
}
