//! lbd's configuration: a TOML file read with `toml` and serde into typed structs
//! (`deny_unknown_fields`; [`spanlb_control::config_file`]), then validated as a whole
//! (references between objects, address families, limits). Every error names the file, the
//! key and the problem, in one line.
//!
//! The object model follows BIG-IP's: virtual addresses, virtual servers, pools with members,
//! monitors and persistence profiles (docs/design.md, "The model"). Durations are written the way operators
//! write them: `"5s"`, `"200ms"`, `"3m"`, or a plain number of seconds (`300`).
//!
//! Object names are kept as written. Two names of one kind (pools, virtual servers, monitors,
//! persistence profiles) that differ only in case are refused, naming both: an operator
//! coming from BIG-IP would otherwise get two objects that look alike.
//!
//! This module does no I/O beyond reading the file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use spanlb_control::config_file::duration;

use crate::monitor::{MonitorSpec, ProbeKind};
use crate::select::Method;

/// Configuration errors: one line, naming the file and the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Load { file: String, message: String },
    #[error("{file}: key `{key}`: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
}

/// The whole lbd configuration.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub device: Device,
    /// Virtual addresses with their route advertisement policy. A virtual server's address
    /// that is not listed gets one with the defaults (spanning, advertise = "any").
    #[serde(default)]
    pub virtual_addresses: Vec<VirtualAddress>,
    #[serde(default)]
    pub virtual_servers: BTreeMap<String, VirtualServer>,
    #[serde(default)]
    pub pools: BTreeMap<String, Pool>,
    #[serde(default)]
    pub monitors: BTreeMap<String, Monitor>,
    #[serde(default)]
    pub persistence: BTreeMap<String, Persistence>,
}

/// Device-local settings (not synced between devices).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// This device's name in the device group.
    pub name: String,
    /// The device's internal self IP: the source SNAT automap uses for IPv4 members until
    /// traffic groups (and their floating internal self IPs) exist.
    #[serde(default)]
    pub internal_address: Option<Ipv4Addr>,
    /// The same for IPv6 members.
    #[serde(default)]
    pub internal_address_v6: Option<Ipv6Addr>,
    /// Unix socket for lbctl (JSON lines).
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    /// Group (name or gid) whose members have full use of the control socket (the socket's
    /// group, mode 0660); absent: lbd's own group. Root and lbd's uid always have it. Read at
    /// start only.
    #[serde(default)]
    pub control_group: Option<String>,
    /// Group (name or gid) whose members may send the read-only requests (`status`,
    /// `show-*`, `config-status`); given access by an ACL entry on the socket. Read at start
    /// only.
    #[serde(default)]
    pub control_readonly_group: Option<String>,
    /// Prometheus metrics HTTP address; none when absent.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
    /// Data-path worker threads; default: one per CPU core.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Directory of plugin `.so` files, loaded at start and on reload (new files only; a
    /// loaded plugin stays loaded). Needed by plugin-backed persistence profiles.
    #[serde(default)]
    pub plugin_dir: Option<PathBuf>,
    /// A plugin that panicked this many times is disabled (its profiles fall back) until lbd
    /// restarts.
    #[serde(default = "default_panic_limit")]
    pub plugin_panic_limit: u64,
    /// A plugin call still running after this long disables the plugin (its profiles fall
    /// back) until lbd restarts: a plugin that loops must not take lbd with it.
    #[serde(default = "default_plugin_call_timeout", with = "duration")]
    pub plugin_call_timeout: std::time::Duration,
    /// At a takeover, how long the mirrored TCP connections may take to be rebuilt before the
    /// floating addresses move regardless (e.g. `"250ms"`, or a number of seconds). Connections are rebuilt
    /// most recently active first; those left when the budget is spent are rebuilt right after
    /// the addresses arrived, in the background. A packet of a connection not rebuilt yet meets
    /// the listener and is answered with a reset: the budget trades the failover time for the
    /// idlest connections.
    #[serde(default = "default_takeover_restore_budget", with = "duration")]
    pub takeover_restore_budget: std::time::Duration,
    /// On SIGTERM / SIGINT: how long lbd waits for open TCP connections and UDP flows to end
    /// (after giving up its traffic groups and closing its listeners) before it closes them
    /// and exits. Zero: exit at once.
    #[serde(default = "default_drain_timeout", with = "duration")]
    pub drain_timeout: std::time::Duration,
    /// The device's static external self IP (informational; shown by `lbctl show device-group`).
    #[serde(default)]
    pub external_address: Option<IpAddr>,
    /// The device-group file (devices, traffic groups, heartbeats; the same on every device).
    /// When set, lbd runs the device group: heartbeats, traffic-group placement, floating
    /// addresses and the routes it asks bgpd to announce. When absent, lbd is a standalone
    /// load balancer.
    #[serde(default)]
    pub device_group: Option<PathBuf>,
    /// Interface the floating external self IPs are added to (required with `device_group`).
    #[serde(default)]
    pub external_interface: Option<String>,
    /// Interface the floating internal self IPs are added to (required with `device_group`).
    #[serde(default)]
    pub internal_interface: Option<String>,
    /// Interface lbd adds spanning virtual addresses to (as /32 or /128) when it runs a device
    /// group: a loopback-like interface that does not answer ARP for them on the segment.
    #[serde(default = "default_vip_interface")]
    pub vip_interface: String,
    /// bgpd's control socket: lbd asks bgpd to announce the virtual addresses of the traffic
    /// groups active here. No routes are announced when absent.
    #[serde(default)]
    pub bgpd_socket: Option<PathBuf>,
    /// Directory with the device-group CA certificate (`ca.crt`) and this device's
    /// certificate and key (`NAME.crt`, `NAME.key`; `lbctl trust`). When set (with
    /// `device_group`), lbd mirrors the traffic groups' state to their next-active devices and
    /// receives theirs.
    #[serde(default)]
    pub mirror_trust_dir: Option<PathBuf>,
    /// Where the access log goes (JSON lines, appended; reopened after a rotation). Absent:
    /// the log, as INFO events of target `access`.
    #[serde(default)]
    pub access_log_file: Option<PathBuf>,
    /// Mirrored UDP flows and TCP connections this device keeps per traffic group it
    /// receives; more are refused and counted (`lbd_mirror_records_over_limit_total`).
    #[serde(default = "default_mirror_max_records")]
    pub mirror_max_records: usize,
    /// The memory those records may take per traffic group, in MiB.
    #[serde(default = "default_mirror_max_megabytes")]
    pub mirror_max_megabytes: usize,
}

fn default_mirror_max_records() -> usize {
    200_000
}

fn default_mirror_max_megabytes() -> usize {
    128
}

fn default_panic_limit() -> u64 {
    10
}

fn default_plugin_call_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(1)
}

fn default_takeover_restore_budget() -> std::time::Duration {
    std::time::Duration::from_secs(1)
}

fn default_drain_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

fn default_vip_interface() -> String {
    "lo".into()
}

fn default_control_socket() -> PathBuf {
    PathBuf::from("/run/spanlb/lbd.sock")
}

/// When a virtual address is advertised (route health injection).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Advertise {
    /// Whatever the state of its virtual servers.
    Always,
    /// When at least one of its virtual servers is available.
    #[default]
    Any,
    /// Only when every one of its virtual servers is available.
    All,
}

impl fmt::Display for Advertise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Advertise::Always => "always",
            Advertise::Any => "any",
            Advertise::All => "all",
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VirtualAddress {
    pub address: IpAddr,
    /// Spanning: served by every device of the group (docs/design.md, "The model").
    #[serde(default = "yes")]
    pub spanning: bool,
    #[serde(default)]
    pub advertise: Advertise,
}

fn yes() -> bool {
    true
}

#[derive(
    Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// Source address translation of the connections to members.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Snat {
    /// The owning traffic group's floating internal self IP; until traffic groups exist, the
    /// device's `internal_address` (or `internal_address_v6`).
    #[default]
    Automap,
    /// Connect from this address.
    Explicit(IpAddr),
    /// Let the kernel choose the source (no translation configured).
    None,
}

impl fmt::Display for Snat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Snat::Automap => f.write_str("automap"),
            Snat::Explicit(a) => write!(f, "{a}"),
            Snat::None => f.write_str("none"),
        }
    }
}

impl Serialize for Snat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Snat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "automap" => Ok(Snat::Automap),
            "none" => Ok(Snat::None),
            other => other.parse().map(Snat::Explicit).map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{other}` is not \"automap\", \"none\" or an IP address"
                ))
            }),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VirtualServer {
    /// VIP:port.
    pub destination: SocketAddr,
    #[serde(default)]
    pub protocol: Protocol,
    /// Default pool.
    pub pool: String,
    #[serde(default)]
    pub snat: Snat,
    /// Most concurrent connections (TCP) or flows (UDP); 0 = no limit. Default: no limit for
    /// TCP, [`DEFAULT_UDP_FLOW_LIMIT`] for UDP (each flow holds a socket for its idle
    /// timeout). See [`VirtualServer::limit`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limit: Option<u64>,
    /// A connection (flow) with no traffic either way for this long is closed. Default 300s for
    /// TCP, 60s for UDP.
    #[serde(default, with = "duration::option")]
    pub idle_timeout: Option<Duration>,
    /// How long a connect to a member may take before the next member is tried.
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// Persistence profile name.
    #[serde(default)]
    pub persistence: Option<String>,
    /// With a plugin-backed persistence profile: how long lbd waits for the client's (and, for
    /// plugins that learn from the server, the member's) first bytes before it decides without
    /// them.
    #[serde(default = "default_first_data_timeout", with = "duration")]
    pub first_data_timeout: Duration,
    /// Connection mirroring: the traffic group's next-active device holds this virtual
    /// server's UDP flows (TCP: the repair state of its connections) and carries them on when
    /// it takes the traffic group over. Needs mirroring on (`device.mirror_trust_dir`).
    #[serde(default)]
    pub mirror: bool,
    /// A disabled virtual server accepts nothing new.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// One access-log line per TCP connection or UDP flow: client, VIP, member, SNAT source,
    /// bytes each way, duration, how it ended (to `device.access_log_file`, else to the log).
    #[serde(default)]
    pub access_log: bool,
    /// The share of connections logged, 0 < r ≤ 1, evenly spread (0.1: every tenth).
    #[serde(default = "default_access_log_sample")]
    pub access_log_sample: f64,
}

fn default_access_log_sample() -> f64 {
    1.0
}

fn default_first_data_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

/// The flows a UDP virtual server holds at most when it sets no `connection_limit`.
pub const DEFAULT_UDP_FLOW_LIMIT: u64 = 10_000;

impl VirtualServer {
    /// The connection (flow) limit in force: the configured one, else none for TCP and
    /// [`DEFAULT_UDP_FLOW_LIMIT`] for UDP; 0 = no limit.
    pub fn limit(&self) -> u64 {
        self.connection_limit.unwrap_or(match self.protocol {
            Protocol::Tcp => 0,
            Protocol::Udp => DEFAULT_UDP_FLOW_LIMIT,
        })
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout.unwrap_or(match self.protocol {
            Protocol::Tcp => Duration::from_secs(300),
            Protocol::Udp => Duration::from_secs(60),
        })
    }
}

/// A member's administrative state (BIG-IP semantics).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AdminState {
    #[default]
    Enabled,
    /// No new connections, except those a persistence record sends to it.
    Disabled,
    /// Only connections already established continue.
    ForcedOffline,
}

impl fmt::Display for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdminState::Enabled => "enabled",
            AdminState::Disabled => "disabled",
            AdminState::ForcedOffline => "forced-offline",
        })
    }
}

impl std::str::FromStr for AdminState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "enabled" => Ok(AdminState::Enabled),
            "disabled" => Ok(AdminState::Disabled),
            "forced-offline" => Ok(AdminState::ForcedOffline),
            _ => Err(format!("`{s}` is not enabled, disabled or forced-offline")),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    #[serde(default = "default_method")]
    pub method: Method,
    /// Monitor names; a member is up when every one of them says so.
    #[serde(default)]
    pub monitors: Vec<String>,
    #[serde(default)]
    pub members: Vec<Member>,
    /// Passive health: a member whose proxied connects fail this many times in a row
    /// (timeouts, refusals, resets; never lbd's own local errors) is taken out of the
    /// selection for `passive_retry`, or until a monitor probe succeeds. 0 (the default) = off.
    #[serde(default)]
    pub passive_failures: u32,
    /// How long passive health keeps a member out before it is tried again. Default 10s.
    #[serde(default = "default_passive_retry", with = "duration")]
    pub passive_retry: Duration,
}

fn default_passive_retry() -> Duration {
    Duration::from_secs(10)
}

impl Pool {
    /// The pool's passive-health settings.
    pub fn passive(&self) -> crate::passive::PassiveConfig {
        crate::passive::PassiveConfig {
            failures: self.passive_failures,
            retry: self.passive_retry,
        }
    }
}

fn default_method() -> Method {
    Method::RoundRobin
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub address: SocketAddr,
    #[serde(default = "one")]
    pub ratio: u32,
    #[serde(default)]
    pub state: AdminState,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MonitorType {
    Tcp,
    Http,
    Udp,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Monitor {
    #[serde(rename = "type")]
    pub kind: MonitorType,
    /// Time between probe starts.
    #[serde(default = "default_interval", with = "duration")]
    pub interval: Duration,
    /// A probe not finished by then has failed. Default: the interval.
    #[serde(default, with = "duration::option")]
    pub timeout: Option<Duration>,
    /// Consecutive successes that bring a down member up.
    #[serde(default = "one")]
    pub up_count: u32,
    /// Consecutive failures that take an up member down.
    #[serde(default = "three")]
    pub down_count: u32,
    /// http: the raw request (default `GET / HTTP/1.0\r\n\r\n`); udp: the datagram to send.
    #[serde(default)]
    pub send: Option<String>,
    /// http: the status code wanted (default 200).
    #[serde(default)]
    pub expect_status: Option<u16>,
    /// http: a string the response body must contain.
    #[serde(default)]
    pub expect_body: Option<String>,
    /// udp: a string the reply must contain (any reply when absent).
    #[serde(default)]
    pub expect: Option<String>,
}

fn default_interval() -> Duration {
    Duration::from_secs(5)
}

fn three() -> u32 {
    3
}

impl Monitor {
    /// The monitor as the probe engine takes it.
    pub fn spec(&self, name: &str) -> MonitorSpec {
        let kind = match self.kind {
            MonitorType::Tcp => ProbeKind::Tcp,
            MonitorType::Http => ProbeKind::Http {
                request: self
                    .send
                    .clone()
                    .unwrap_or_else(|| "GET / HTTP/1.0\r\n\r\n".into())
                    .into_bytes(),
                expect_status: self.expect_status.unwrap_or(200),
                expect_body: self.expect_body.clone().map(String::into_bytes),
            },
            MonitorType::Udp => ProbeKind::Udp {
                send: self.send.clone().unwrap_or_default().into_bytes(),
                expect: self.expect.clone().unwrap_or_default().into_bytes(),
            },
        };
        MonitorSpec {
            name: name.to_string(),
            kind,
            interval: self.interval,
            timeout: self.timeout.unwrap_or(self.interval),
            up_count: self.up_count,
            down_count: self.down_count,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PersistenceType {
    /// The client's address, masked.
    SourceAddress,
    /// The connection's destination address (the VIP), masked.
    DestinationAddress,
    /// SIP Call-ID (plugin `sip`).
    Sip,
    /// RDP `mstshash` cookie / routing token (plugin `msrdp`).
    Msrdp,
    /// TLS session id (plugin `ssl`).
    Ssl,
    /// A key a configured extractor takes from the first bytes (plugin `hash`).
    Hash,
    /// The same as `hash` (BIG-IP's name), or any plugin named with `plugin`.
    Universal,
}

impl PersistenceType {
    /// The plugin a plugin-backed type uses unless the profile names another.
    pub fn default_plugin(self) -> Option<&'static str> {
        match self {
            PersistenceType::SourceAddress | PersistenceType::DestinationAddress => None,
            PersistenceType::Sip => Some("sip"),
            PersistenceType::Msrdp => Some("msrdp"),
            PersistenceType::Ssl => Some("ssl"),
            PersistenceType::Hash | PersistenceType::Universal => Some("hash"),
        }
    }
}

impl fmt::Display for PersistenceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PersistenceType::SourceAddress => "source-address",
            PersistenceType::DestinationAddress => "destination-address",
            PersistenceType::Sip => "sip",
            PersistenceType::Msrdp => "msrdp",
            PersistenceType::Ssl => "ssl",
            PersistenceType::Hash => "hash",
            PersistenceType::Universal => "universal",
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Persistence {
    #[serde(rename = "type")]
    pub kind: PersistenceType,
    /// Prefix length applied to IPv4 addresses (default 32).
    #[serde(default = "default_mask")]
    pub mask: u8,
    /// Prefix length applied to IPv6 addresses (default 128).
    #[serde(default = "default_mask_v6")]
    pub mask_v6: u8,
    /// A record unused for this long expires.
    #[serde(default = "default_persist_timeout", with = "duration")]
    pub timeout: Duration,
    /// The most records the profile keeps: past it the ones that expire first are evicted
    /// (a client keying on spoofable data, a SIP Call-ID over UDP, must not grow the table
    /// without bound).
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    /// Share records between every virtual server using this profile (else one set per virtual
    /// server).
    #[serde(default)]
    pub match_across_virtuals: bool,
    /// Mirror records to the traffic group's next-active device (needs mirroring on:
    /// `device.mirror_trust_dir`).
    #[serde(default)]
    pub mirror: bool,
    /// Plugin-backed types: the plugin to use (default: the type's own, `hash` for
    /// `universal`).
    #[serde(default)]
    pub plugin: Option<String>,
    /// Plugin-backed types: the text handed to the plugin's constructor.
    #[serde(default)]
    pub plugin_config: String,
    /// Plugin-backed types: when the plugin finds no key (NoMatch, Malformed, a TLS 1.3
    /// handshake, a disabled plugin), persist on the client's address (`source-address`, with
    /// this profile's masks) instead of leaving the choice to the pool's method alone.
    #[serde(default)]
    pub fallback: Option<Fallback>,
    /// Plugin-backed types: choose the member by consistent (rendezvous) hashing of the key
    /// over the available members, keeping no record (a member that goes down only moves its
    /// own keys).
    #[serde(default)]
    pub consistent_hash: bool,
}

/// What a plugin-backed profile does when the plugin finds no key.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Fallback {
    SourceAddress,
}

impl Persistence {
    /// The plugin this profile uses, if it is plugin-backed.
    pub fn plugin_name(&self) -> Option<&str> {
        self.kind
            .default_plugin()
            .map(|d| self.plugin.as_deref().unwrap_or(d))
    }
}

fn default_mask() -> u8 {
    32
}
fn default_mask_v6() -> u8 {
    128
}
fn default_persist_timeout() -> Duration {
    Duration::from_secs(180)
}

/// The default `max_records` of a persistence profile.
pub const DEFAULT_MAX_RECORDS: usize = 100_000;

fn default_max_records() -> usize {
    DEFAULT_MAX_RECORDS
}

type Invalid = (String, String);

fn bad(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    (key.into(), message.into())
}

/// Object names: letters, digits, `-` and `_` (they appear in metrics labels, logs and lbctl).
fn check_name(section: &str, name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(bad(
            format!("{section}.{name}"),
            "names are 1-64 letters, digits, `-` or `_`",
        ))
    }
}

/// Reads a configuration file as text; errors name the file.
pub fn read_file(path: &Path) -> Result<(String, String), ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Load {
        file: file.clone(),
        message: e.to_string(),
    })?;
    Ok((text, file))
}

/// Parses TOML text into `T` (keys kept as written); `sections` are the top-level tables `T`
/// requires. Errors name `file` and the key ([`spanlb_control::config_file`]).
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
    sections: &[&str],
) -> Result<T, ConfigError> {
    spanlb_control::config_file::from_toml(text, sections).map_err(|e| load_error(file, e))
}

/// Deserializes a configuration received as JSON (config sync); `origin` stands for the file
/// name in errors.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    v: serde_json::Value,
    origin: &str,
    sections: &[&str],
) -> Result<T, ConfigError> {
    spanlb_control::config_file::from_json(v, sections).map_err(|e| load_error(origin, e))
}

fn load_error(file: &str, e: spanlb_control::config_file::LoadError) -> ConfigError {
    match e.key {
        Some(key) => ConfigError::Invalid {
            file: file.into(),
            key,
            message: e.message,
        },
        None => ConfigError::Load {
            file: file.into(),
            message: e.message,
        },
    }
}

/// Two names of one kind that differ only in case: an error naming both (`section` is the
/// table or list they are in).
pub fn check_case<'a>(
    section: &str,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), (String, String)> {
    match spanlb_control::config_file::case_duplicate(names) {
        Some((a, b)) => Err((
            format!("{section}.{b}"),
            format!("`{b}` and `{a}` differ only in case: give them names that differ otherwise"),
        )),
        None => Ok(()),
    }
}

/// A validation failure (key, message) as the error naming `file`.
pub fn invalid(file: &str, (key, message): (String, String)) -> ConfigError {
    ConfigError::Invalid {
        file: file.into(),
        key,
        message,
    }
}

impl Config {
    /// Who may use the control socket: `device.control_group` and
    /// `device.control_readonly_group` resolved through the system's group database (so not
    /// part of [`Config::load`]: lbd's start and `--check` call it); `file` names the file in
    /// errors.
    pub fn control_policy(
        &self,
        file: &str,
    ) -> Result<spanlb_control::access::Policy, ConfigError> {
        spanlb_control::access::Policy::resolve(
            self.device.control_group.as_deref(),
            self.device.control_readonly_group.as_deref(),
        )
        .map_err(|e| ConfigError::Invalid {
            file: file.into(),
            key: format!("device.{}", e.key),
            message: e.message,
        })
    }

    /// Reads and validates the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let (text, file) = read_file(path)?;
        Self::from_toml(&text, &file)
    }

    /// Parses and validates TOML text; `name` stands for the file name in errors.
    pub fn from_toml(text: &str, name: &str) -> Result<Config, ConfigError> {
        let cfg: Config = parse_toml(text, name, &["device"])?;
        cfg.validate().map_err(|e| invalid(name, e))?;
        Ok(cfg)
    }

    /// Validates a configuration received as JSON (config sync: this device's `[device]` with
    /// the group configuration), as [`Config::from_toml`] does a file.
    pub fn from_value(v: serde_json::Value) -> Result<Config, ConfigError> {
        let name = "synced configuration";
        let cfg: Config = parse_json(v, name, &["device"])?;
        cfg.validate().map_err(|e| invalid(name, e))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), Invalid> {
        if self.device.name.trim().is_empty() {
            return Err(bad("device.name", "must not be empty"));
        }
        if self.device.workers == Some(0) {
            return Err(bad("device.workers", "must be at least 1"));
        }
        for (k, v) in [
            ("device.mirror_max_records", self.device.mirror_max_records),
            (
                "device.mirror_max_megabytes",
                self.device.mirror_max_megabytes,
            ),
        ] {
            if v == 0 {
                return Err(bad(k, "must be at least 1"));
            }
        }
        if self.device.mirror_trust_dir.is_some() && self.device.device_group.is_none() {
            return Err(bad(
                "device.mirror_trust_dir",
                "mirroring needs a device group (device.device_group)",
            ));
        }
        if self.device.device_group.is_some() {
            for (k, v) in [
                ("device.external_interface", &self.device.external_interface),
                ("device.internal_interface", &self.device.internal_interface),
            ] {
                match v {
                    None => return Err(bad(k, "is required with device.device_group")),
                    Some(i) if !valid_ifname(i) => {
                        return Err(bad(k, format!("`{i}` is not an interface name")))
                    }
                    Some(_) => {}
                }
            }
            if !valid_ifname(&self.device.vip_interface) {
                return Err(bad(
                    "device.vip_interface",
                    format!("`{}` is not an interface name", self.device.vip_interface),
                ));
            }
        }
        for (section, names) in [
            (
                "virtual_servers",
                &self.virtual_servers.keys().collect::<Vec<_>>(),
            ),
            ("pools", &self.pools.keys().collect()),
            ("monitors", &self.monitors.keys().collect()),
            ("persistence", &self.persistence.keys().collect()),
        ] {
            check_case(section, names.iter().map(|n| n.as_str()))?;
        }
        let mut seen = BTreeSet::new();
        for (i, va) in self.virtual_addresses.iter().enumerate() {
            if va.address.is_unspecified() || va.address.is_multicast() {
                return Err(bad(
                    format!("virtual_addresses[{i}].address"),
                    format!("{} cannot be a virtual address", va.address),
                ));
            }
            if !seen.insert(va.address) {
                return Err(bad(
                    format!("virtual_addresses[{i}].address"),
                    format!("{} is listed twice", va.address),
                ));
            }
        }
        for (name, m) in &self.monitors {
            check_name("monitors", name)?;
            self.validate_monitor(name, m)?;
        }
        for (name, p) in &self.persistence {
            check_name("persistence", name)?;
            if p.mask > 32 {
                return Err(bad(
                    format!("persistence.{name}.mask"),
                    format!("{} is not an IPv4 prefix length (0-32)", p.mask),
                ));
            }
            if p.mask_v6 > 128 {
                return Err(bad(
                    format!("persistence.{name}.mask_v6"),
                    format!("{} is not an IPv6 prefix length (0-128)", p.mask_v6),
                ));
            }
            if p.timeout.is_zero() {
                return Err(bad(format!("persistence.{name}.timeout"), "must not be 0"));
            }
            if p.max_records == 0 {
                return Err(bad(
                    format!("persistence.{name}.max_records"),
                    "must be at least 1",
                ));
            }
            let plugin_only = |k: &str, set: bool| {
                if set && p.kind.default_plugin().is_none() {
                    Err(bad(
                        format!("persistence.{name}.{k}"),
                        format!("only for plugin-backed types (sip, msrdp, ssl, hash, universal), not {}", p.kind),
                    ))
                } else {
                    Ok(())
                }
            };
            plugin_only("plugin", p.plugin.is_some())?;
            plugin_only("plugin_config", !p.plugin_config.is_empty())?;
            plugin_only("fallback", p.fallback.is_some())?;
            plugin_only("consistent_hash", p.consistent_hash)?;
            if p.kind.default_plugin().is_some() && self.device.plugin_dir.is_none() {
                return Err(bad(
                    format!("persistence.{name}.type"),
                    format!(
                        "{} persistence needs a plugin: set device.plugin_dir",
                        p.kind
                    ),
                ));
            }
        }
        for (name, pool) in &self.pools {
            check_name("pools", name)?;
            for (i, mon) in pool.monitors.iter().enumerate() {
                if !self.monitors.contains_key(mon) {
                    return Err(bad(
                        format!("pools.{name}.monitors[{i}]"),
                        format!("no monitor named `{mon}`"),
                    ));
                }
            }
            let mut members = BTreeSet::new();
            for (i, m) in pool.members.iter().enumerate() {
                let key = format!("pools.{name}.members[{i}]");
                if m.address.port() == 0 {
                    return Err(bad(format!("{key}.address"), "port 0 is not a member port"));
                }
                if m.address.ip().is_unspecified() || m.address.ip().is_multicast() {
                    return Err(bad(
                        format!("{key}.address"),
                        format!("{} cannot be a member", m.address.ip()),
                    ));
                }
                if !members.insert(m.address) {
                    return Err(bad(
                        format!("{key}.address"),
                        format!("{} is a member twice", m.address),
                    ));
                }
                if m.ratio == 0 || m.ratio > 100 {
                    return Err(bad(format!("{key}.ratio"), "must be 1-100"));
                }
            }
            if pool.passive_failures > 0 && pool.passive_retry.is_zero() {
                return Err(bad(
                    format!("pools.{name}.passive_retry"),
                    "must not be 0 with passive_failures",
                ));
            }
        }
        let mut listeners = BTreeMap::new();
        for (name, vs) in &self.virtual_servers {
            check_name("virtual_servers", name)?;
            let key = |k: &str| format!("virtual_servers.{name}.{k}");
            if vs.destination.port() == 0 {
                return Err(bad(key("destination"), "port 0 is not a service port"));
            }
            if !(vs.access_log_sample > 0.0 && vs.access_log_sample <= 1.0) {
                return Err(bad(
                    key("access_log_sample"),
                    format!(
                        "{} is not a share of connections (0 < r <= 1)",
                        vs.access_log_sample
                    ),
                ));
            }
            if vs.destination.ip().is_multicast() {
                return Err(bad(
                    key("destination"),
                    "a multicast address cannot be a VIP",
                ));
            }
            if let Some(other) = listeners.insert((vs.destination, vs.protocol), name) {
                return Err(bad(
                    key("destination"),
                    format!(
                        "{} {} is already virtual server `{other}`",
                        vs.protocol, vs.destination
                    ),
                ));
            }
            let Some(pool) = self.pools.get(&vs.pool) else {
                return Err(bad(key("pool"), format!("no pool named `{}`", vs.pool)));
            };
            if let Some(p) = &vs.persistence {
                if !self.persistence.contains_key(p) {
                    return Err(bad(
                        key("persistence"),
                        format!("no persistence profile named `{p}`"),
                    ));
                }
            }
            if matches!(vs.idle_timeout, Some(d) if d.is_zero()) {
                return Err(bad(key("idle_timeout"), "must not be 0"));
            }
            if vs.connect_timeout.is_zero() {
                return Err(bad(key("connect_timeout"), "must not be 0"));
            }
            // The SNAT source must exist for every member's family.
            for (i, m) in pool.members.iter().enumerate() {
                let v4 = m.address.is_ipv4();
                match vs.snat {
                    Snat::Automap if v4 && self.device.internal_address.is_none() => {
                        return Err(bad(
                            key("snat"),
                            format!(
                                "automap needs device.internal_address for IPv4 member {} \
                                 (pools.{}.members[{i}])",
                                m.address, vs.pool
                            ),
                        ));
                    }
                    Snat::Automap if !v4 && self.device.internal_address_v6.is_none() => {
                        return Err(bad(
                            key("snat"),
                            format!(
                                "automap needs device.internal_address_v6 for IPv6 member {} \
                                 (pools.{}.members[{i}])",
                                m.address, vs.pool
                            ),
                        ));
                    }
                    Snat::Explicit(a) if a.is_ipv4() != v4 => {
                        return Err(bad(
                            key("snat"),
                            format!(
                                "{a} cannot be the source toward member {} (address families \
                                 differ)",
                                m.address
                            ),
                        ));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn validate_monitor(&self, name: &str, m: &Monitor) -> Result<(), Invalid> {
        let key = |k: &str| format!("monitors.{name}.{k}");
        if m.interval.is_zero() {
            return Err(bad(key("interval"), "must not be 0"));
        }
        if matches!(m.timeout, Some(t) if t.is_zero()) {
            return Err(bad(key("timeout"), "must not be 0"));
        }
        if m.up_count == 0 {
            return Err(bad(key("up_count"), "must be at least 1"));
        }
        if m.down_count == 0 {
            return Err(bad(key("down_count"), "must be at least 1"));
        }
        let only = |field: &str, present: bool, types: &str| {
            if present {
                Err(bad(
                    key(field),
                    format!("only for monitors of type {types}"),
                ))
            } else {
                Ok(())
            }
        };
        match m.kind {
            MonitorType::Tcp => {
                only("send", m.send.is_some(), "http or udp")?;
                only("expect_status", m.expect_status.is_some(), "http")?;
                only("expect_body", m.expect_body.is_some(), "http")?;
                only("expect", m.expect.is_some(), "udp")?;
            }
            MonitorType::Http => {
                only("expect", m.expect.is_some(), "udp")?;
                if let Some(s) = m.expect_status {
                    if !(100..=599).contains(&s) {
                        return Err(bad(
                            key("expect_status"),
                            format!("{s} is not an HTTP status"),
                        ));
                    }
                }
            }
            MonitorType::Udp => {
                only("expect_status", m.expect_status.is_some(), "http")?;
                only("expect_body", m.expect_body.is_some(), "http")?;
                if m.send.as_deref().unwrap_or("").is_empty() {
                    return Err(bad(key("send"), "a udp monitor needs a datagram to send"));
                }
            }
        }
        Ok(())
    }

    /// Every virtual address: the listed ones, plus one with the defaults for each virtual
    /// server address that is not listed.
    pub fn effective_virtual_addresses(&self) -> Vec<VirtualAddress> {
        let mut out = self.virtual_addresses.clone();
        for vs in self.virtual_servers.values() {
            let ip = vs.destination.ip();
            if !out.iter().any(|v| v.address == ip) {
                out.push(VirtualAddress {
                    address: ip,
                    spanning: true,
                    advertise: Advertise::default(),
                });
            }
        }
        out
    }

    /// The source address toward `member` that SNAT says (None: let the kernel choose).
    pub fn snat_source(&self, vs: &VirtualServer, member: IpAddr) -> Option<IpAddr> {
        match vs.snat {
            Snat::None => None,
            Snat::Explicit(a) => Some(a),
            Snat::Automap => match member {
                IpAddr::V4(_) => self.device.internal_address.map(IpAddr::V4),
                IpAddr::V6(_) => self.device.internal_address_v6.map(IpAddr::V6),
            },
        }
    }
}

/// A Linux interface name: 1–15 bytes, no `/`, whitespace or NUL.
fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() < 16
        && s != "."
        && s != ".."
        && !s
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace())
}

#[cfg(test)]
pub(crate) mod tests;
