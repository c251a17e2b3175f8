//! bgpd's configuration: a TOML file read with `toml` and serde into typed structs
//! (`deny_unknown_fields`; keys kept as written, [`spanlb_control::config_file`]), then
//! validated. Every error names the file, the key and the problem, in one line.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::wire::Family;

/// The route types are the control protocol's: a `[[route]]` table is what an `announce`
/// request carries.
pub use spanlb_control::bgpd::{Community, LargeCommunityText, NextHop, RouteConfig};

/// Configuration errors: one line, naming the file and the key.
#[derive(Debug, thiserror::Error)]
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

/// The whole bgpd configuration.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// BGP identifier (RFC 4271 §4.2).
    pub router_id: Ipv4Addr,
    /// Our AS number (4-octet, RFC 6793).
    pub local_as: u32,
    /// Addresses to accept BGP connections on. Default: `0.0.0.0:179` and `[::]:179`.
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    /// Unix socket for bgpctl and lbd (JSON lines).
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    /// Group (name or gid) whose members have full use of the control socket (the socket's
    /// group, mode 0660); absent: bgpd's own group. Root and bgpd's uid always have it.
    #[serde(default)]
    pub control_group: Option<String>,
    /// Group (name or gid) whose members may send the read-only requests (`routes`,
    /// `neighbors`, `adj-rib-out`, `bfd`); given access by an ACL entry on the socket.
    #[serde(default)]
    pub control_readonly_group: Option<String>,
    /// Prometheus metrics HTTP address; none when absent.
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
    /// Shutdown behaviour on SIGTERM.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// Graceful restart (RFC 4724) with every neighbor.
    #[serde(default)]
    pub graceful_restart: GracefulRestartConfig,
    #[serde(default, rename = "neighbor")]
    pub neighbors: Vec<NeighborConfig>,
    /// Statically configured routes, announced as long as bgpd runs.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
}

fn default_listen() -> Vec<SocketAddr> {
    vec![
        "0.0.0.0:179".parse().expect("literal"),
        "[::]:179".parse().expect("literal"),
    ]
}

fn default_control_socket() -> PathBuf {
    PathBuf::from("/run/spanlb/bgpd.sock")
}

/// What bgpd does on SIGTERM (and on a graceful `withdraw`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Re-announce every route with GRACEFUL_SHUTDOWN (RFC 8326) before withdrawing it.
    #[serde(default)]
    pub graceful_shutdown: bool,
    /// How long routes stay announced with GRACEFUL_SHUTDOWN before the withdraw, ms.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Longest wait for the withdraws to be written before the sessions are closed, ms.
    #[serde(default = "default_drain_ms")]
    pub drain_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            graceful_shutdown: false,
            linger_ms: default_linger_ms(),
            drain_ms: default_drain_ms(),
        }
    }
}

/// Graceful restart (RFC 4724): bgpd sends the capability to every neighbor, as restarting
/// speaker (its routes stay at the routers while bgpd restarts, if it is back within
/// `restart_time`) and as receiving speaker (a neighbor's routes are kept as stale while it
/// restarts).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GracefulRestartConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Restart Time advertised, seconds (1–4095): how long a router keeps bgpd's routes after
    /// its session went away without a NOTIFICATION.
    #[serde(default = "default_restart_time")]
    pub restart_time: u16,
    /// After bgpd starts, End-of-RIB waits until a control client (lbd) has said it announced
    /// everything (`ready`), this long at most, ms: a router ends its graceful restart on
    /// End-of-RIB and drops the routes not announced again by then.
    #[serde(default = "default_route_wait_ms")]
    pub route_wait_ms: u64,
}

impl Default for GracefulRestartConfig {
    fn default() -> Self {
        GracefulRestartConfig {
            enabled: false,
            restart_time: default_restart_time(),
            route_wait_ms: default_route_wait_ms(),
        }
    }
}

fn default_restart_time() -> u16 {
    120
}
fn default_route_wait_ms() -> u64 {
    10_000
}

fn default_linger_ms() -> u64 {
    2000
}
fn default_drain_ms() -> u64 {
    1000
}

/// One BGP neighbor.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NeighborConfig {
    pub address: IpAddr,
    pub remote_as: u32,
    #[serde(default)]
    pub description: Option<String>,
    /// Source address of our connections, and NEXT_HOP for routes with `next_hop = "self"`.
    #[serde(default)]
    pub local_address: Option<IpAddr>,
    /// IPv6 NEXT_HOP for `self` routes over an IPv4 session.
    #[serde(default)]
    pub local_address_v6: Option<std::net::Ipv6Addr>,
    /// Remote TCP port (default 179).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Never connect; wait for the peer.
    #[serde(default)]
    pub passive: bool,
    /// Proposed hold time, seconds (0 or ≥ 3).
    #[serde(default = "default_hold")]
    pub hold_time: u16,
    /// Keepalive interval, seconds; default a third of the negotiated hold time.
    #[serde(default)]
    pub keepalive: Option<u16>,
    /// Seconds between connection attempts.
    #[serde(default = "default_connect_retry")]
    pub connect_retry: u64,
    /// Seconds before a session that went down is restarted.
    #[serde(default = "default_idle_hold")]
    pub idle_hold: u64,
    /// TCP MD5 signature password (RFC 2385).
    #[serde(default)]
    pub password: Option<String>,
    /// eBGP multihop TTL; unset means directly connected (TTL 1 for eBGP, 64 for iBGP).
    #[serde(default)]
    pub ebgp_multihop: Option<u8>,
    /// GTSM (RFC 5082): send with TTL 255 and drop segments of the session that arrive with
    /// less (IP_MINTTL / IPV6_MINHOPCOUNT), so only a directly connected peer gets through.
    #[serde(default)]
    pub ttl_security: bool,
    /// TCP_USER_TIMEOUT in ms; default: the hold time (so a dead peer cannot hang writes).
    #[serde(default)]
    pub tcp_user_timeout_ms: Option<u32>,
    /// Address families to negotiate.
    #[serde(default = "default_families")]
    pub families: Vec<Family>,
    /// Families on which we offer ADD-PATH send (RFC 7911), so several paths per prefix go out.
    #[serde(default)]
    pub add_path_send: Vec<Family>,
    /// Families on which we offer ADD-PATH receive.
    #[serde(default)]
    pub add_path_receive: Vec<Family>,
    /// Cease (6/1, RFC 4486) when the peer sends more prefixes (paths, with ADD-PATH) than
    /// this. Default [`DEFAULT_MAX_PREFIXES`]: bgpd uses nothing it receives (it only counts
    /// it), so a peer that floods it is cut off; 0 sets no limit.
    #[serde(default = "default_max_prefixes")]
    pub max_prefixes: Option<u32>,
    /// Send hold time, seconds (RFC 9687): a session whose peer has read nothing of what
    /// bgpd has to send for this long is closed. Default: the greater of 8 minutes and twice
    /// the hold time.
    #[serde(default)]
    pub send_hold_time: Option<u32>,
    /// BFD (RFC 5880/5881 single hop) with this neighbor, tied to the BGP session (RFC 5882):
    /// the session is closed (Cease / BFD Down, RFC 9384) when BFD goes down. `bfd = {}` takes
    /// the defaults (300 ms × 3).
    #[serde(default)]
    pub bfd: Option<BfdConfig>,
}

/// A neighbor's BFD session (RFC 5880 §6.8.1 timers; §6.7 authentication).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BfdConfig {
    /// bfd.DesiredMinTxInterval, ms.
    #[serde(default = "default_bfd_interval")]
    pub min_tx_ms: u32,
    /// bfd.RequiredMinRxInterval, ms.
    #[serde(default = "default_bfd_interval")]
    pub min_rx_ms: u32,
    /// bfd.DetectMult: the peer is declared down after this many intervals in silence.
    #[serde(default = "default_bfd_multiplier")]
    pub multiplier: u8,
    /// Authentication; none by default.
    #[serde(default)]
    pub auth: Option<BfdAuthConfig>,
}

impl Default for BfdConfig {
    fn default() -> Self {
        BfdConfig {
            min_tx_ms: default_bfd_interval(),
            min_rx_ms: default_bfd_interval(),
            multiplier: default_bfd_multiplier(),
            auth: None,
        }
    }
}

/// BFD authentication (RFC 5880 §6.7): the type, the Key ID and the secret.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BfdAuthConfig {
    #[serde(rename = "type")]
    pub kind: BfdAuthType,
    #[serde(default)]
    pub key_id: u8,
    /// 1–16 bytes (simple password, MD5), 1–20 bytes (SHA1).
    pub key: String,
}

/// RFC 5880 §4.1 Auth Type, as configured.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BfdAuthType {
    SimplePassword,
    KeyedMd5,
    MeticulousKeyedMd5,
    KeyedSha1,
    MeticulousKeyedSha1,
}

impl BfdAuthType {
    pub fn wire(self) -> crate::bfd::AuthType {
        use crate::bfd::AuthType as A;
        match self {
            BfdAuthType::SimplePassword => A::SimplePassword,
            BfdAuthType::KeyedMd5 => A::KeyedMd5,
            BfdAuthType::MeticulousKeyedMd5 => A::MeticulousKeyedMd5,
            BfdAuthType::KeyedSha1 => A::KeyedSha1,
            BfdAuthType::MeticulousKeyedSha1 => A::MeticulousKeyedSha1,
        }
    }
}

impl BfdConfig {
    /// The session's timers.
    pub fn intervals(&self) -> crate::bfd::Intervals {
        crate::bfd::Intervals {
            desired_min_tx: Duration::from_millis(u64::from(self.min_tx_ms)),
            required_min_rx: Duration::from_millis(u64::from(self.min_rx_ms)),
            detect_mult: self.multiplier,
        }
    }

    /// The session's key (checked by [`Config::load`]).
    pub fn key(&self) -> Result<Option<crate::bfd::AuthKey>, crate::bfd::PacketError> {
        self.auth
            .as_ref()
            .map(|a| crate::bfd::AuthKey::new(a.kind.wire(), a.key_id, a.key.as_bytes()))
            .transpose()
    }
}

fn default_bfd_interval() -> u32 {
    crate::bfd::DEFAULT_DESIRED_MIN_TX.as_millis() as u32
}
fn default_bfd_multiplier() -> u8 {
    crate::bfd::DEFAULT_DETECT_MULT
}

/// The default `max_prefixes` of a neighbor.
pub const DEFAULT_MAX_PREFIXES: u32 = 100_000;

fn default_max_prefixes() -> Option<u32> {
    Some(DEFAULT_MAX_PREFIXES)
}

impl NeighborConfig {
    /// The send hold time in force (RFC 9687 §3: at least 8 minutes by default).
    pub fn send_hold(&self) -> std::time::Duration {
        let secs = self
            .send_hold_time
            .map(u64::from)
            .unwrap_or_else(|| (2 * u64::from(self.hold_time)).max(480));
        std::time::Duration::from_secs(secs.max(1))
    }
}

fn default_port() -> u16 {
    179
}
fn default_hold() -> u16 {
    90
}
fn default_connect_retry() -> u64 {
    5
}
fn default_idle_hold() -> u64 {
    2
}
fn default_families() -> Vec<Family> {
    vec![Family::Ipv4Unicast, Family::Ipv6Unicast]
}

impl NeighborConfig {
    pub fn is_ebgp(&self, local_as: u32) -> bool {
        self.remote_as != local_as
    }
    pub fn remote(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
    pub fn connect_retry(&self) -> Duration {
        Duration::from_secs(self.connect_retry)
    }
}

impl Config {
    /// Who may use the control socket: `control_group` and `control_readonly_group` resolved
    /// (a group that does not exist is an error naming the key).
    pub fn control_policy(
        &self,
        file: &str,
    ) -> Result<spanlb_control::access::Policy, ConfigError> {
        spanlb_control::access::Policy::resolve(
            self.control_group.as_deref(),
            self.control_readonly_group.as_deref(),
        )
        .map_err(|e| ConfigError::Invalid {
            file: file.into(),
            key: e.key.into(),
            message: e.message,
        })
    }

    /// Reads and validates the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Load {
            file: file.clone(),
            message: if e.kind() == std::io::ErrorKind::NotFound {
                "no such file".into()
            } else {
                e.to_string()
            },
        })?;
        Self::from_toml(&text, &file)
    }

    /// Parses and validates TOML text; `name` stands for the file name in errors.
    pub fn from_toml(text: &str, name: &str) -> Result<Config, ConfigError> {
        let cfg: Config =
            spanlb_control::config_file::from_toml(text, &[]).map_err(|e| match e.key {
                Some(key) => ConfigError::Invalid {
                    file: name.into(),
                    key,
                    message: e.message,
                },
                None => ConfigError::Load {
                    file: name.into(),
                    message: e.message,
                },
            })?;
        cfg.validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                file: name.into(),
                key,
                message,
            })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        if self.local_as == 0 || self.local_as == crate::wire::AS_TRANS {
            return Err(("local_as".into(), format!("{} is reserved", self.local_as)));
        }
        if self.router_id.is_unspecified()
            || self.router_id.is_multicast()
            || self.router_id.is_broadcast()
        {
            return Err((
                "router_id".into(),
                format!("{} is not a valid BGP identifier", self.router_id),
            ));
        }
        let gr = &self.graceful_restart;
        if gr.restart_time == 0 || gr.restart_time > crate::wire::GracefulRestart::MAX_RESTART_TIME
        {
            return Err((
                "graceful_restart.restart_time".into(),
                "must be 1 to 4095 seconds (RFC 4724 §3: 12 bits)".into(),
            ));
        }
        if gr.route_wait_ms >= u64::from(gr.restart_time) * 1000 {
            return Err((
                "graceful_restart.route_wait_ms".into(),
                "must be shorter than restart_time (the routers would drop the routes first)"
                    .into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, n) in self.neighbors.iter().enumerate() {
            let k = |f: &str| format!("neighbor[{i}].{f}");
            if !seen.insert(n.address) {
                return Err((k("address"), format!("{} is configured twice", n.address)));
            }
            if n.ttl_security && n.ebgp_multihop.is_some() {
                return Err((
                    k("ttl_security"),
                    "cannot be combined with ebgp_multihop (GTSM admits one hop only)".into(),
                ));
            }
            if n.hold_time == 1 || n.hold_time == 2 {
                return Err((
                    k("hold_time"),
                    "must be 0 or at least 3 seconds (RFC 4271 §4.2)".into(),
                ));
            }
            if let Some(ka) = n.keepalive {
                if n.hold_time != 0 && (ka == 0 || ka > n.hold_time / 3) {
                    return Err((
                        k("keepalive"),
                        format!("must be 1..={} (a third of hold_time)", n.hold_time / 3),
                    ));
                }
            }
            if n.remote_as == 0 {
                return Err((k("remote_as"), "0 is reserved".into()));
            }
            if let Some(p) = &n.password {
                if p.is_empty() || p.len() > 80 {
                    return Err((
                        k("password"),
                        "must be 1 to 80 bytes (TCP_MD5SIG_MAXKEYLEN)".into(),
                    ));
                }
            }
            if let Some(la) = n.local_address {
                if la.is_ipv4() != n.address.is_ipv4() {
                    return Err((
                        k("local_address"),
                        "must be of the neighbor address's family".into(),
                    ));
                }
            }
            if n.families.is_empty() {
                return Err((
                    k("families"),
                    "at least one address family is needed".into(),
                ));
            }
            for f in n.add_path_send.iter().chain(&n.add_path_receive) {
                if !n.families.contains(f) {
                    return Err((k("add_path_send"), format!("{f} is not in families")));
                }
            }
            if n.connect_retry == 0 {
                return Err((k("connect_retry"), "must be at least 1 second".into()));
            }
            if let Some(b) = &n.bfd {
                if b.multiplier == 0 {
                    return Err((k("bfd.multiplier"), "must be at least 1".into()));
                }
                // RFC 5880 §4.1: zero is reserved for DesiredMinTx; RequiredMinRx 0 would
                // ask the peer to send nothing, and detection would never work.
                for (f, v) in [
                    ("bfd.min_tx_ms", b.min_tx_ms),
                    ("bfd.min_rx_ms", b.min_rx_ms),
                ] {
                    if v == 0 || v > 60_000 {
                        return Err((k(f), "must be 1 to 60000 ms".into()));
                    }
                }
                if let Err(e) = b.key() {
                    return Err((k("bfd.auth.key"), e.to_string()));
                }
            }
        }
        let mut keys = std::collections::HashSet::new();
        for (i, r) in self.routes.iter().enumerate() {
            r.validate()
                .map_err(|(f, m)| (format!("route[{i}].{f}"), m))?;
            if !keys.insert((r.prefix, r.path_id)) {
                return Err((
                    format!("route[{i}].prefix"),
                    format!("{} path id {:?} is configured twice", r.prefix, r.path_id),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::LargeCommunity;

    const GOOD: &str = r#"
        router_id = "20.1.1.6"
        local_as = 65001
        listen = ["127.0.0.1:1179"]
        control_socket = "/tmp/x.sock"
        [[neighbor]]
        address = "20.1.1.1"
        remote_as = 65000
        hold_time = 9
        add_path_send = ["ipv4-unicast"]
        [[route]]
        prefix = "30.1.1.10/32"
        path_id = 1
        next_hop = "20.1.1.2"
        communities = ["65001:100", "no-export"]
        large_communities = ["65001:1:2"]
    "#;

    #[test]
    fn parses_a_full_config() {
        let c = Config::from_toml(GOOD, "t.toml").unwrap();
        assert_eq!(c.neighbors[0].hold_time, 9);
        assert_eq!(
            c.routes[0].next_hop,
            NextHop::Addr("20.1.1.2".parse().unwrap())
        );
        assert_eq!(
            c.routes[0].communities,
            vec![Community(65001 << 16 | 100), Community(0xFFFF_FF01)]
        );
        assert_eq!(
            c.routes[0].large_communities[0].0,
            LargeCommunity(65001, 1, 2)
        );
        assert_eq!(
            c.neighbors[0].families,
            vec![Family::Ipv4Unicast, Family::Ipv6Unicast]
        );
    }

    fn err(text: &str) -> String {
        Config::from_toml(text, "t.toml").unwrap_err().to_string()
    }

    #[test]
    fn neighbor_defaults_bound_what_a_peer_can_cost() {
        let c = Config::from_toml(GOOD, "t.toml").unwrap();
        let n = &c.neighbors[0];
        assert_eq!(n.max_prefixes, Some(DEFAULT_MAX_PREFIXES));
        assert!(!n.ttl_security);
        // RFC 9687: at least 8 minutes, or twice the hold time.
        assert_eq!(n.send_hold(), std::time::Duration::from_secs(480));
        let c = Config::from_toml(
            &GOOD.replace("hold_time = 9", "hold_time = 300\nsend_hold_time = 5"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            c.neighbors[0].send_hold(),
            std::time::Duration::from_secs(5)
        );
        let e = err(&GOOD.replace(
            "hold_time = 9",
            "hold_time = 9\nttl_security = true\nebgp_multihop = 2",
        ));
        assert!(
            e.contains("ttl_security") && e.contains("ebgp_multihop"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let e = err(&GOOD.replace("hold_time = 9", "hold_time = 9\nholdtime = 3"));
        assert!(
            e.contains("t.toml") && e.contains("neighbor[0]") && e.contains("holdtime"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let e = err(&GOOD.replace("next_hop = \"20.1.1.2\"", "next_hop = \"banana\""));
        assert!(
            e.contains("route[0].next_hop") && e.contains("banana"),
            "{e}"
        );
        let e = err(&GOOD.replace("hold_time = 9", "hold_time = 2"));
        assert!(
            e.contains("neighbor[0].hold_time") && e.contains("at least 3"),
            "{e}"
        );
        let e = err(&GOOD.replace("30.1.1.10/32", "30.1.1.10/24"));
        assert!(
            e.contains("route[0].prefix") && e.contains("host bits"),
            "{e}"
        );
        let e = err(&GOOD.replace("65001:100", "65001:100000"));
        assert!(
            e.contains("route[0].communities") && e.contains("100000"),
            "{e}"
        );
        let e = err(&GOOD.replace("local_as = 65001", "local_as = \"x\""));
        assert!(e.contains("local_as"), "{e}");
        let e = err(&GOOD.replace("next_hop = \"20.1.1.2\"", "next_hop = \"2001:db8::1\""));
        assert!(e.contains("address family"), "{e}");
    }

    #[test]
    fn an_unknown_value_lists_the_valid_ones() {
        let e = err(&GOOD.replace(
            "add_path_send = [\"ipv4-unicast\"]",
            "families = [\"ipv4-unicats\"]",
        ));
        assert_eq!(
            e,
            "t.toml: key `neighbor[0].families[0]`: unknown value \"ipv4-unicats\", expected \
             one of: ipv4-unicast, ipv6-unicast"
        );
        let e = err(&GOOD.replace(
            "hold_time = 9",
            "hold_time = 9\nbfd = { auth = { type = \"md5\", key = \"k\" } }",
        ));
        assert!(
            e.starts_with("t.toml: key `neighbor[0].bfd.auth.type`: unknown value \"md5\", expected one of: simple-password, keyed-md5,"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_key_is_named_and_names_keep_their_case() {
        assert_eq!(
            err("local_as = 65001\n"),
            "t.toml: key `router_id`: is required"
        );
        let e = err(&GOOD.replace("remote_as = 65000\n", ""));
        assert_eq!(e, "t.toml: key `neighbor[0].remote_as`: is required");
        // Keys are not folded: `Hold_Time` is not `hold_time`.
        let e = err(&GOOD.replace("hold_time = 9", "Hold_Time = 9"));
        assert!(e.contains("unknown key \"Hold_Time\""), "{e}");
        let e = err("router_id = \"1.2.3.4\"\nlocal_as = 65001\n[graceful_restart\n");
        assert!(e.starts_with("t.toml: line 3, column"), "{e}");
    }

    #[test]
    fn missing_file_is_named() {
        let e = Config::load(Path::new("/nonexistent/bgpd.toml"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "/nonexistent/bgpd.toml: no such file");
    }
}
