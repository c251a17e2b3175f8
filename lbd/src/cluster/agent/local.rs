//! What the device group keeps about this device: its device-local settings ([`Local`]) and
//! what it does about the group ([`LocalStatus`], `lbctl show device-group`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::super::bgpd::RouteIntent;
use super::super::placement::PathOwner;
use crate::config::Config;
use crate::state::AttributionState;

/// How often route health, the bgpd connection and the links are checked.
pub const TICK: Duration = Duration::from_millis(100);

/// Device-local settings of the device group (lbd's `[device]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub me: String,
    pub external_interface: String,
    pub internal_interface: String,
    pub vip_interface: String,
    pub bgpd_socket: Option<PathBuf>,
    pub group_file: PathBuf,
    /// Mirroring's trust directory; mirroring is off when None.
    pub mirror_trust_dir: Option<PathBuf>,
}

impl Local {
    /// The device-group part of lbd's configuration; None when no device group is configured.
    pub fn from_config(cfg: &Config) -> Option<Local> {
        let d = &cfg.device;
        Some(Local {
            me: d.name.clone(),
            external_interface: d.external_interface.clone()?,
            internal_interface: d.internal_interface.clone()?,
            vip_interface: d.vip_interface.clone(),
            bgpd_socket: d.bgpd_socket.clone(),
            group_file: d.device_group.clone()?,
            mirror_trust_dir: d.mirror_trust_dir.clone(),
        })
    }
}

/// What this device does about the group, for `lbctl show device-group`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LocalStatus {
    /// Traffic groups whose addresses and routes are in place here, with when (Unix ms).
    pub active_here: BTreeMap<String, u64>,
    /// Virtual addresses route health says to advertise here.
    pub advertised: Vec<IpAddr>,
    /// Where each traffic group's path leads, as the routes follow it (None: not known yet).
    pub paths: Option<Vec<PathOwner>>,
    /// Interface name → up.
    pub links: BTreeMap<String, bool>,
    pub standby: bool,
    pub bgpd: BgpdStatus,
    /// The traffic group new connections are attributed to, and the SNAT automap sources.
    pub attribution: AttributionState,
    /// The last thing that went wrong (Unix ms, message).
    pub last_error: Option<(u64, String)>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BgpdStatus {
    pub socket: Option<PathBuf>,
    pub connected: bool,
    /// Routes bgpd accepted from us and we have not withdrawn.
    pub routes: Vec<RouteIntent>,
    pub last_error: Option<String>,
}
