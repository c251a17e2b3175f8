//! Our view of BGP messages, and the only place that touches `netgauze-bgp-pkt`.
//!
//! The rest of bgpd speaks these enums; [`decode`] and [`encode`] translate to and from bytes
//! through netgauze (pinned at 0.13.0). Decoding errors carry the NOTIFICATION code/subcode/data
//! that RFC 4271 §6 asks for; UPDATE attribute errors are handled per RFC 7606 (treat-as-withdraw
//! or attribute-discard) and reported in [`Update::errors`] instead of failing the message.
//!
//! This module must not do I/O and must not panic on any input.

mod codec;

pub use codec::{decode, encode, encode_updates, frame_len};
/// Path attributes and NLRI as the control socket shows them (`adj-rib-out`), defined with it.
pub use spanlb_control::bgpd::{
    AsSegment, LargeCommunity, Nlri, Origin, PathAttrs, GRACEFUL_SHUTDOWN,
};

use std::net::Ipv4Addr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// BGP message header length (RFC 4271 §4.1).
pub const HEADER_LEN: usize = 19;
/// Maximum BGP message length without RFC 8654 extended messages (RFC 4271 §4.1).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// AS_TRANS (RFC 6793 §9).
pub const AS_TRANS: u32 = 23456;
/// Address families bgpd speaks (AFI/SAFI, RFC 4760).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// AFI 1 / SAFI 1.
    Ipv4Unicast,
    /// AFI 2 / SAFI 1.
    Ipv6Unicast,
}

impl Family {
    /// The family a prefix belongs to.
    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::Ipv4Unicast,
            IpNet::V6(_) => Family::Ipv6Unicast,
        }
    }
    /// Both families, in a fixed order.
    pub const ALL: [Family; 2] = [Family::Ipv4Unicast, Family::Ipv6Unicast];
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::Ipv4Unicast => "ipv4-unicast",
            Family::Ipv6Unicast => "ipv6-unicast",
        })
    }
}

/// ADD-PATH send/receive flags for one family (RFC 7911 §4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddPathMode {
    pub receive: bool,
    pub send: bool,
}

/// Capabilities carried in an OPEN (RFC 5492).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Multiprotocol extensions (RFC 4760), one entry per family.
    pub multiprotocol: Vec<Family>,
    /// Route refresh (RFC 2918).
    pub route_refresh: bool,
    /// 4-octet AS number (RFC 6793): the speaker's real AS.
    pub four_octet_as: Option<u32>,
    /// ADD-PATH (RFC 7911), per family.
    pub add_path: Vec<(Family, AddPathMode)>,
    /// Graceful Restart (RFC 4724 §3).
    pub graceful_restart: Option<GracefulRestart>,
    /// Codes of capabilities we do not interpret (hostname, long-lived GR, …).
    pub other: Vec<u8>,
}

/// The Graceful Restart capability (RFC 4724 §3, the N bit of RFC 8538 §2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GracefulRestart {
    /// Restart State (R): the sender has restarted (its peer must not wait for its
    /// End-of-RIB before sending its own routes).
    pub restarted: bool,
    /// Graceful Notification (N, RFC 8538): the sender applies graceful restart to sessions
    /// ended by a NOTIFICATION too.
    pub notification: bool,
    /// Restart Time, seconds (12 bits: at most 4095).
    pub restart_time: u16,
    /// The families the sender keeps forwarding state for across a restart, with the
    /// Forwarding State (F) bit of each.
    pub families: Vec<(Family, bool)>,
}

impl GracefulRestart {
    /// The largest Restart Time the capability carries.
    pub const MAX_RESTART_TIME: u16 = 0x0fff;
}

/// An OPEN message (RFC 4271 §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The sender's AS: the 4-octet capability value when present, else the 2-octet field.
    pub asn: u32,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub capabilities: Capabilities,
}

/// An UPDATE message (RFC 4271 §4.3, RFC 4760 §3–4), families merged: IPv4 prefixes travel in
/// the message body, IPv6 ones in MP_REACH_NLRI / MP_UNREACH_NLRI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    pub withdrawn: Vec<Nlri>,
    pub announced: Vec<Nlri>,
    pub attrs: PathAttrs,
    /// RFC 7606 outcome when an attribute was malformed: the announced prefixes have been moved
    /// to `withdrawn` (treat-as-withdraw) or the attribute dropped (attribute-discard).
    pub errors: Vec<AttrError>,
    /// True for an End-of-RIB marker (RFC 4724 §2) of some family.
    pub end_of_rib: Option<Family>,
}

/// How an attribute error was handled (RFC 7606 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrError {
    pub action: AttrErrorAction,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrErrorAction {
    TreatAsWithdraw,
    AttributeDiscard,
}

/// A NOTIFICATION message (RFC 4271 §4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

/// A ROUTE-REFRESH message (RFC 2918 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub family: Family,
}

/// Every BGP message bgpd handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

/// What the codec needs to know about the session (learned from the OPEN exchange).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionCodec {
    /// Both sides announced the 4-octet AS capability (RFC 6793 §3).
    pub asn4: bool,
    /// Families for which we send path ids (negotiated ADD-PATH send on our side).
    pub add_path_send: Vec<Family>,
    /// Families for which we receive path ids (negotiated ADD-PATH receive on our side).
    pub add_path_receive: Vec<Family>,
    /// The peer is external (RFC 7606 §7.5, §7.9, §7.10: LOCAL_PREF, ORIGINATOR_ID and
    /// CLUSTER_LIST from an external neighbor are discarded, not treated as withdraw).
    pub ebgp: bool,
}

/// A decoding error with the NOTIFICATION it warrants (RFC 4271 §6).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail} (notification {code}/{subcode})")]
pub struct DecodeError {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
    pub detail: String,
}

impl DecodeError {
    /// The NOTIFICATION to send for this error.
    pub fn notification(&self) -> Notification {
        Notification {
            code: self.code,
            subcode: self.subcode,
            data: self.data.clone(),
        }
    }
}

/// NOTIFICATION error codes and subcodes used by bgpd (RFC 4271 §4.5, §6; RFC 4486).
pub mod notif {
    pub const HEADER: u8 = 1;
    pub const HEADER_NOT_SYNCHRONIZED: u8 = 1;
    pub const HEADER_BAD_LENGTH: u8 = 2;
    pub const HEADER_BAD_TYPE: u8 = 3;
    pub const OPEN: u8 = 2;
    pub const OPEN_UNSUPPORTED_VERSION: u8 = 1;
    pub const OPEN_BAD_PEER_AS: u8 = 2;
    pub const OPEN_BAD_BGP_ID: u8 = 3;
    pub const OPEN_UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const OPEN_UNACCEPTABLE_HOLD_TIME: u8 = 6;
    pub const OPEN_UNSUPPORTED_CAPABILITY: u8 = 7;
    pub const UPDATE: u8 = 3;
    pub const UPDATE_MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UPDATE_INVALID_NETWORK_FIELD: u8 = 10;
    pub const UPDATE_MALFORMED_AS_PATH: u8 = 11;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const CEASE_MAX_PREFIXES: u8 = 1;
    pub const CEASE_ADMIN_SHUTDOWN: u8 = 2;
    pub const CEASE_PEER_DECONFIGURED: u8 = 3;
    pub const CEASE_ADMIN_RESET: u8 = 4;
    pub const CEASE_CONNECTION_REJECTED: u8 = 5;
    pub const CEASE_COLLISION_RESOLUTION: u8 = 7;
    pub const CEASE_OUT_OF_RESOURCES: u8 = 8;
    pub const CEASE_HARD_RESET: u8 = 9;
    /// RFC 9384.
    pub const CEASE_BFD_DOWN: u8 = 10;
    pub const ROUTE_REFRESH: u8 = 7;
}
