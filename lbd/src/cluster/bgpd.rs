//! lbd's client of bgpd's control socket: one connection, one request at a time, each
//! answered within [`BGPD_TIMEOUT`]. bgpd never speaks unasked; when the connection closes,
//! bgpd withdraws what this client announced (fate sharing).

use std::time::Duration;

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use spanlb_control::bgpd::{NextHop, Request, RouteConfig, RouteRef};
use spanlb_control::client::AsyncClient;

/// Longest wait for bgpd to answer one request.
pub const BGPD_TIMEOUT: Duration = Duration::from_secs(2);

/// One route lbd asks bgpd for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RouteIntent {
    pub prefix: IpNet,
    pub path_id: u32,
    /// An address, or None for "self" (the session's local address).
    pub next_hop: Option<IpAddr>,
}

impl RouteIntent {
    /// The route as bgpd's `announce` takes it.
    pub fn config(&self) -> RouteConfig {
        RouteConfig {
            path_id: Some(self.path_id),
            next_hop: self.next_hop.map_or(NextHop::Self_, NextHop::Addr),
            ..RouteConfig::new(self.prefix)
        }
    }

    /// The route's key as bgpd's `withdraw` takes it.
    pub fn key(&self) -> RouteRef {
        RouteRef {
            path_id: Some(self.path_id),
            prefix: self.prefix,
        }
    }
}

/// A connection to bgpd's control socket (spanlb-control's typed client).
pub struct Bgpd(AsyncClient<Request>);

impl Bgpd {
    pub async fn connect(path: &std::path::Path) -> std::io::Result<Bgpd> {
        let c = AsyncClient::connect(path)
            .await
            .map_err(std::io::Error::other)?;
        Ok(Bgpd(c.with_timeout(BGPD_TIMEOUT)))
    }

    /// Whether bgpd closed the connection (it never speaks unasked, so anything readable
    /// between requests is the end of the connection or nonsense).
    pub fn closed(&self) -> bool {
        self.0.closed()
    }

    /// Withdraws `routes` (gracefully: bgpd keeps them with the GRACEFUL_SHUTDOWN community
    /// for its linger time).
    pub async fn withdraw(&mut self, routes: &[RouteIntent], graceful: bool) -> Result<(), String> {
        let req = Request::Withdraw {
            graceful,
            routes: routes.iter().map(RouteIntent::key).collect(),
        };
        self.call(&req).await
    }

    /// Announces `routes` (an announce replaces a route with the same prefix and path id).
    pub async fn announce(&mut self, routes: &[RouteIntent]) -> Result<(), String> {
        let req = Request::Announce {
            persistent: false,
            routes: routes.iter().map(RouteIntent::config).collect(),
        };
        self.call(&req).await
    }

    /// Tells bgpd that everything this device wants announced has been announced: after its
    /// start, bgpd holds End-of-RIB back until then (graceful restart, RFC 4724), so that the
    /// routers do not drop the routes this device has not announced again yet.
    pub async fn ready(&mut self) -> Result<(), String> {
        self.call(&Request::Ready).await
    }

    /// One request, one answer within [`BGPD_TIMEOUT`]; an `{"ok":false}` answer is an error.
    async fn call(&mut self, req: &Request) -> Result<(), String> {
        match self.0.request(req).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_daemon() => Err(format!("bgpd: {e}")),
            Err(e) => Err(e.to_string()),
        }
    }
}
