//! The route types of bgpd's control socket: a route to announce ([`RouteConfig`], the
//! `[[route]]` table of bgpd's configuration in JSON) and what a neighbor was sent
//! ([`Nlri`], [`PathAttrs`]). bgpd's `config` and `wire` modules re-export them.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// GRACEFUL_SHUTDOWN well-known community 65535:0 (RFC 8326 §5).
pub const GRACEFUL_SHUTDOWN: u32 = 0xFFFF_0000;

/// A route as configured or sent on the control socket.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub prefix: IpNet,
    /// ADD-PATH path id (RFC 7911); one device announces a VIP once per traffic group it holds.
    /// Toward peers without ADD-PATH only the route with the lowest path id of a prefix is sent.
    #[serde(default)]
    pub path_id: Option<u32>,
    /// `"self"` (the session's local address) or an address: a third-party next hop on the shared
    /// segment such as a floating self IP (RFC 4271 §5.1.3).
    #[serde(default)]
    pub next_hop: NextHop,
    #[serde(default)]
    pub origin: Origin,
    /// How many extra times our AS is prepended (RFC 4271 §9.2.2.2 ordering aside, a plain
    /// AS_SEQUENCE prepend).
    #[serde(default)]
    pub as_path_prepend: u8,
    #[serde(default)]
    pub med: Option<u32>,
    /// Communities as `"ASN:VALUE"` or well-known names (`graceful-shutdown`, `no-export`, …).
    #[serde(default)]
    pub communities: Vec<Community>,
    /// Large communities as `"A:B:C"` (RFC 8092).
    #[serde(default)]
    pub large_communities: Vec<LargeCommunityText>,
    /// LOCAL_PREF toward iBGP peers (default 100).
    #[serde(default)]
    pub local_pref: Option<u32>,
}

/// NEXT_HOP choice of a route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum NextHop {
    #[default]
    Self_,
    Addr(IpAddr),
}

impl Serialize for NextHop {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl std::fmt::Display for NextHop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NextHop::Self_ => f.write_str("self"),
            NextHop::Addr(a) => a.fmt(f),
        }
    }
}

impl std::str::FromStr for NextHop {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "self" {
            return Ok(NextHop::Self_);
        }
        s.parse()
            .map(NextHop::Addr)
            .map_err(|_| format!("next_hop `{s}` is neither \"self\" nor an IP address"))
    }
}

impl<'de> Deserialize<'de> for NextHop {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A standard community (RFC 1997), written `ASN:VALUE` or a well-known name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Community(pub u32);

const WELL_KNOWN: &[(&str, u32)] = &[
    ("graceful-shutdown", GRACEFUL_SHUTDOWN),
    ("blackhole", 0xFFFF_029A),
    ("no-export", 0xFFFF_FF01),
    ("no-advertise", 0xFFFF_FF02),
    ("no-export-subconfed", 0xFFFF_FF03),
    ("no-peer", 0xFFFF_FF04),
];

impl std::str::FromStr for Community {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some((_, v)) = WELL_KNOWN.iter().find(|(n, _)| *n == s) {
            return Ok(Community(*v));
        }
        let (a, b) = s
            .split_once(':')
            .ok_or_else(|| format!("community `{s}` is not ASN:VALUE or a well-known name"))?;
        let a: u16 = a
            .parse()
            .map_err(|_| format!("community `{s}`: `{a}` is not a number 0-65535"))?;
        let b: u16 = b
            .parse()
            .map_err(|_| format!("community `{s}`: `{b}` is not a number 0-65535"))?;
        Ok(Community(((a as u32) << 16) | b as u32))
    }
}

impl std::fmt::Display for Community {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some((n, _)) = WELL_KNOWN.iter().find(|(_, v)| *v == self.0) {
            return f.write_str(n);
        }
        write!(f, "{}:{}", self.0 >> 16, self.0 & 0xFFFF)
    }
}

impl Serialize for Community {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Community {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A large community written `A:B:C`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LargeCommunityText(pub LargeCommunity);

impl std::str::FromStr for LargeCommunityText {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let nums: Result<Vec<u32>, _> = parts.iter().map(|p| p.parse::<u32>()).collect();
        match nums {
            Ok(n) if n.len() == 3 => Ok(LargeCommunityText(LargeCommunity(n[0], n[1], n[2]))),
            _ => Err(format!(
                "large community `{s}` is not A:B:C with 32-bit numbers"
            )),
        }
    }
}

impl Serialize for LargeCommunityText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let LargeCommunity(a, b, c) = self.0;
        s.collect_str(&format_args!("{a}:{b}:{c}"))
    }
}

impl<'de> Deserialize<'de> for LargeCommunityText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl RouteConfig {
    /// A route to `prefix` with every other field at its default: no path id, NEXT_HOP
    /// `self`, origin IGP, no prepend, no MED, no communities, no LOCAL_PREF.
    pub fn new(prefix: IpNet) -> RouteConfig {
        RouteConfig {
            prefix,
            path_id: None,
            next_hop: NextHop::Self_,
            origin: Origin::Igp,
            as_path_prepend: 0,
            med: None,
            communities: Vec::new(),
            large_communities: Vec::new(),
            local_pref: None,
        }
    }

    /// Checks what serde cannot; `key` is where this route sits (for messages).
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.prefix != self.prefix.trunc() {
            return Err((
                "prefix".into(),
                format!(
                    "{} has host bits set (did you mean {}?)",
                    self.prefix,
                    self.prefix.trunc()
                ),
            ));
        }
        if let NextHop::Addr(a) = self.next_hop {
            if a.is_ipv4() != self.prefix.addr().is_ipv4() {
                return Err((
                    "next_hop".into(),
                    format!("{a} is not of the prefix's address family"),
                ));
            }
            if a.is_unspecified() || a.is_multicast() {
                return Err(("next_hop".into(), format!("{a} cannot be a next hop")));
            }
        }
        if self.path_id == Some(0) {
            return Err(("path_id".into(), "path ids start at 1".into()));
        }
        Ok(())
    }
}

/// ORIGIN attribute values (RFC 4271 §5.1.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    #[default]
    Igp,
    Egp,
    Incomplete,
}

impl std::str::FromStr for Origin {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "igp" => Ok(Origin::Igp),
            "egp" => Ok(Origin::Egp),
            "incomplete" => Ok(Origin::Incomplete),
            _ => Err(format!("origin `{s}` is not igp, egp or incomplete")),
        }
    }
}

/// One AS_PATH segment (RFC 4271 §4.3), always with 4-octet AS numbers here; the codec narrows
/// them toward 2-octet peers and adds AS4_PATH (RFC 6793 §4.2.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type", content = "asns")]
pub enum AsSegment {
    Sequence(Vec<u32>),
    Set(Vec<u32>),
}

/// A large community (RFC 8092).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LargeCommunity(pub u32, pub u32, pub u32);

/// The path attributes bgpd sends and understands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PathAttrs {
    pub origin: Origin,
    pub as_path: Vec<AsSegment>,
    /// IPv4 next hop (NEXT_HOP attribute) or IPv6 global next hop (MP_REACH_NLRI). `None` in an
    /// UPDATE that only withdraws.
    pub next_hop: Option<IpAddr>,
    /// IPv6 link-local next hop (RFC 2545 §3), only for IPv6.
    pub next_hop_local: Option<Ipv6Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub communities: Vec<u32>,
    pub large_communities: Vec<LargeCommunity>,
}

/// A prefix with its ADD-PATH path identifier (RFC 7911 §3), if the session uses one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Nlri {
    pub prefix: IpNet,
    pub path_id: Option<u32>,
}
