//! This device's eligibility: `lbctl standby` and the link fail-safe (a device with its
//! external or internal interface down gives up every traffic group), and the interface
//! settings MAC masquerade needs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tracing::{debug, info, warn};

use super::super::driver::DriverHandle;
use super::super::netaddr::NetAddr;
use super::local::LocalStatus;
use super::local::TICK;

/// Whether this device may hold traffic groups: not in standby and its links up.
pub(super) struct Eligibility {
    pub standby: AtomicBool,
    pub links_ok: AtomicBool,
    pub driver: DriverHandle,
}

impl Eligibility {
    /// Tells the driver what eligibility is now.
    pub async fn push(&self) {
        let eligible =
            self.links_ok.load(Ordering::Relaxed) && !self.standby.load(Ordering::Relaxed);
        self.driver.set_eligible(eligible).await;
    }
}

/// MAC masquerade: without these the parent interface answers ARP for the floating addresses
/// with its own MAC (Linux answers for any local address on any interface by default).
pub(super) fn masquerade_sysctls(external_interface: &str) {
    for (key, value) in [("arp_ignore", "1"), ("arp_announce", "2")] {
        let path = format!("/proc/sys/net/ipv4/conf/{external_interface}/{key}");
        match std::fs::write(&path, value) {
            Ok(()) => info!("MAC masquerade: set {path} = {value}"),
            Err(e) => warn!("MAC masquerade: cannot set {path} = {value}: {e}"),
        }
    }
}

/// Every [`TICK`]: the external and internal links; either down makes the device ineligible.
pub(super) async fn watch_links(
    elig: Weak<Eligibility>,
    interfaces: [String; 2],
    status: Arc<Mutex<LocalStatus>>,
    net: Arc<NetAddr>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<bool> = None;
    loop {
        tick.tick().await;
        let Some(c) = elig.upgrade() else { return };
        let mut links = BTreeMap::new();
        for ifname in &interfaces {
            let up = match net.link_up(ifname).await {
                Ok(up) => up,
                Err(e) => {
                    debug!("{ifname}: {e}");
                    false
                }
            };
            links.insert(ifname.clone(), up);
        }
        let ok = links.values().all(|u| *u);
        if last != Some(ok) {
            if last.is_some() || !ok {
                if ok {
                    info!(?links, "links up: eligible again");
                } else {
                    warn!(
                        ?links,
                        "a link is down: giving up every traffic group (fail-safe)"
                    );
                }
            }
            c.links_ok.store(ok, Ordering::Relaxed);
            c.push().await;
            last = Some(ok);
        }
        status.lock().expect("status lock").links = links;
    }
}
