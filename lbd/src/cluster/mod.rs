//! The device group: heartbeats between devices, traffic-group
//! placement and failover, and the floating addresses that move with traffic groups.
//!
//! - `heartbeat`: the heartbeat message, its HMAC-SHA256 authentication and replay guard.
//! - `placement`: the sans-IO failover state machine (liveness, HA order, auto-failback,
//!   manual failover, fail-safe) deciding which traffic groups are active on this device.
//! - `netaddr`: floating addresses through netlink, gratuitous ARP and unsolicited neighbour
//!   advertisements.
//! - `driver`: the tokio task running `placement` over UDP heartbeats.
//! - `config`: the device-group file shared by every device (devices, failover addresses,
//!   traffic groups, heartbeat timing, route mode).
//! - `agent`: the device group inside lbd: carries out activations and releases in order
//!   (addresses, announcements, routes through bgpd), route health, the link fail-safe.
//! - `membership`: which device-group changes a running lbd takes live (config sync), and
//!   what the driver is given for one.
//! - `bgpd`: lbd's client of bgpd's control socket.
//! - `ports`: what the device group asks of the rest of lbd (a takeover, a release,
//!   attribution, route health); the app implements them.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What a device tells its peers, every heartbeat interval, over UDP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sending device's name.
    pub device: String,
    /// Chosen once per process start, strictly greater than any earlier one of this device
    /// (start time in Unix ms, say): with `seq` it orders heartbeats and defeats replays.
    pub epoch: u64,
    /// Increases by one per heartbeat sent within an epoch.
    pub seq: u64,
    /// The sender's clock when sent (Unix ms), for display and lag, not for ordering.
    pub sent_ms: u64,
    /// The sender may hold traffic groups: its external and internal links are up and it is
    /// not in standby.
    pub eligible: bool,
    /// How long the sender has been usable without a break, as it counts (ms; 0 when not
    /// usable). A peer counts the sender usable since the later of this and its own
    /// observation (the first heartbeat after the sender was dead), so that a device that
    /// restarts its own count (it was pre-empted: to its peers it was gone) is seen to do so
    /// (`placement`). `u64::MAX` from old senders: unknown.
    #[serde(default = "unknown_usable")]
    pub usable_ms: u64,
    /// Traffic groups the sender holds (is active for) now, each with the generation of its
    /// claim (see [`Claim`]).
    pub active: Vec<Claim>,
    /// Manual placement orders the sender knows of (see `placement`), newest id wins.
    pub orders: Vec<Order>,
    /// Traffic groups the sender is *not* ready to take back by auto-failback because its
    /// mirror of their session state is not in sync yet (see `placement`, rule 2). Empty when
    /// mirroring is off or every mirror is in sync; absent from old senders.
    #[serde(default)]
    pub unsynced: Vec<String>,
    /// Spanning virtual addresses the sender's route health says not to advertise (none of
    /// its virtual servers on them is available there, per the address's `advertise`
    /// policy). Every device announces a traffic group's path for a virtual address only
    /// while the device the group is placed on has it available (`agent`). Absent from old
    /// senders (everything available).
    #[serde(default)]
    pub unavailable: Vec<IpAddr>,
    /// The sender's group configuration (config sync): the generation it holds and whether it
    /// holds a change it has not synced. None from old senders and from devices that hold no
    /// group configuration yet.
    #[serde(default)]
    pub config: Option<ConfigMark>,
}

/// A device's group configuration as its heartbeats carry it: so a difference between
/// devices shows within one heartbeat interval (`configsync`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigMark {
    /// The generation: the device that committed the change, its counter, when (Unix ms), and
    /// the SHA-256 digest of the canonical group configuration.
    pub origin: String,
    pub counter: u64,
    pub time_ms: u64,
    pub digest: [u8; 32],
    /// The sender committed a change it has not synced to the group.
    pub dirty: bool,
}

fn unknown_usable() -> u64 {
    u64::MAX
}

impl Heartbeat {
    /// The names of the traffic groups the sender holds.
    pub fn active_names(&self) -> impl Iterator<Item = &str> {
        self.active.iter().map(|c| c.traffic_group.as_str())
    }
}

/// A device's claim of a traffic group, carried in its heartbeats.
///
/// The generation orders claims of one traffic group across the group: a device that takes a
/// traffic group gives its claim a generation above every one it knows of for that traffic
/// group (and at least its clock in Unix ms), so when two devices claim one traffic group —
/// a device that was hung just long enough to be declared dead and resumed, or the two sides
/// of a healed partition — every device agrees that the newer claim (the device that took it
/// last, which the routers' neighbour entries point at) holds it (`placement`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Claim {
    pub traffic_group: String,
    /// 0 from senders that do not carry generations (heartbeat versions 1 and 2).
    pub generation: u64,
    /// The sender took the traffic group by a manual failover order: auto-failback does not
    /// bring it back to devices that were already up then (`placement`, rule 2).
    #[serde(default)]
    pub ordered: bool,
}

impl Claim {
    pub fn new(traffic_group: impl Into<String>, generation: u64) -> Claim {
        Claim {
            traffic_group: traffic_group.into(),
            generation,
            ordered: false,
        }
    }
}

/// A manual placement order (`lbctl failover TG [--to DEV]`, `lbctl standby`, `lbctl release`),
/// spread through heartbeats so every device applies the same one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Unique and increasing: (Unix ms when issued) * 1000 + a per-device counter.
    pub id: u64,
    pub traffic_group: String,
    /// The device the traffic group must move to.
    pub to: String,
}

pub mod agent;
pub mod bgpd;
pub mod config;
pub mod driver;
pub mod heartbeat;
pub mod membership;
pub mod netaddr;
pub mod placement;
pub mod ports;
