//! The ports through which the device group acts on the rest of lbd. The app implements them;
//! the cluster knows nothing of the data path or of mirroring beyond these calls.

use std::net::IpAddr;

use futures_util::future::BoxFuture;

use crate::state::AttributionState;

/// What a move of a traffic group asks of the rest of lbd, in the order the executor calls
/// it (`agent`).
pub trait Takeover: Send + Sync {
    /// Before the floating addresses of `tg` are added here: adopt its mirrored state (its
    /// persistence records become this device's own) and rebuild its mirrored UDP flows and
    /// TCP connections, so that their sockets exist before the kernel sees their packets.
    fn adopt<'a>(&'a self, tg: &'a str) -> BoxFuture<'a, ()>;
    /// Before the routes of `tg` are withdrawn here: its mirrored connections end silently
    /// (they live on the new owner) and its records become the new owner's.
    fn release(&self, tg: &str);
    /// Which traffic group new connections belong to, and their SNAT automap sources.
    fn set_attribution(&self, attribution: AttributionState);
}

/// Route health: what the running configuration says about the spanning virtual addresses.
pub trait RouteHealth: Send + Sync {
    /// Each spanning virtual address, with whether its advertise policy says to advertise it
    /// here now (its virtual servers are available).
    fn spanning(&self) -> Vec<(IpAddr, bool)>;
}
