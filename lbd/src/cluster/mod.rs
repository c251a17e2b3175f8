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
    /// Traffic groups the sender holds (is active for) now.
    pub active: Vec<String>,
    /// Manual placement orders the sender knows of (see `placement`), newest id wins.
    pub orders: Vec<Order>,
    /// Traffic groups the sender is *not* ready to take back by auto-failback because its
    /// mirror of their session state is not in sync yet (see `placement`, rule 2). Empty when
    /// mirroring is off or every mirror is in sync; absent from old senders.
    #[serde(default)]
    pub unsynced: Vec<String>,
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
pub mod config;
pub mod driver;
pub mod heartbeat;
pub mod netaddr;
pub mod placement;
