//! The daemon's BFD sessions: one [`Driver`] per receive address, one session per neighbor
//! that has `bfd` configured (RFC 5881 single hop).
//!
//! A neighbor with `local_address` receives on that address, port 3784; one without on the
//! wildcard address of its family. The peer is sent to at its address, port 3784. Local
//! discriminators are unique within the process and start from a random value, so that a
//! restarted bgpd does not reuse the discriminators its peers may still remember.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};

use super::driver::{Driver, DriverError, PeerHandle, PORT};
use super::session::SessionConfig;
use crate::config::NeighborConfig;

/// Every BFD transport of the daemon.
pub struct Manager {
    drivers: tokio::sync::Mutex<HashMap<SocketAddr, Driver>>,
    next_discriminator: AtomicU32,
    port: u16,
}

impl Default for Manager {
    fn default() -> Self {
        Manager::new()
    }
}

impl Manager {
    /// Sessions on the RFC 5881 port.
    pub fn new() -> Manager {
        Manager::with_port(PORT)
    }

    /// Sessions on another UDP port, both to receive and to send to (tests: two speakers on
    /// one host).
    pub fn with_port(port: u16) -> Manager {
        let base = (super::driver::random_seed() as u32) & 0x7fff_ffff;
        Manager {
            drivers: tokio::sync::Mutex::new(HashMap::new()),
            next_discriminator: AtomicU32::new(base.max(1)),
            port,
        }
    }

    /// Where a neighbor's session receives.
    pub fn receive_address(&self, n: &NeighborConfig) -> SocketAddr {
        let ip = n.local_address.unwrap_or(match n.address {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        });
        SocketAddr::new(ip, self.port)
    }

    /// Starts the BFD session of `n` (none when it has no `bfd`). Binding the receive address
    /// fails when another BFD speaker (FRR's bfdd, another bgpd) holds it.
    pub async fn add(&self, n: &NeighborConfig) -> Result<Option<PeerHandle>, DriverError> {
        let Some(b) = &n.bfd else {
            return Ok(None);
        };
        let local = self.receive_address(n);
        let mut drivers = self.drivers.lock().await;
        let driver = match drivers.entry(local) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Driver::bind(local)?),
        };
        let local_discriminator = loop {
            let d = self.next_discriminator.fetch_add(1, Ordering::Relaxed);
            if d != 0 {
                break d;
            }
        };
        let cfg = SessionConfig {
            local_discriminator,
            intervals: b.intervals(),
            // Checked when the configuration was loaded.
            auth: b.key().ok().flatten(),
            jitter_seed: u64::from(local_discriminator),
        };
        driver
            .add_peer(SocketAddr::new(n.address, self.port), cfg)
            .await
            .map(Some)
    }
}
