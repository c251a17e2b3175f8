//! A client of bgpd's control socket for tests: spanlb-control's blocking client, whose
//! answers the tests read as JSON objects.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use spanlb_control::bgpd::{NextHop, Request, RouteConfig, RouteRef};
use spanlb_control::client::Client;

pub struct ControlClient(Client<Request>);

impl ControlClient {
    pub fn connect(p: &Path) -> Result<ControlClient, spanlb_control::Error> {
        let c = Client::connect(p)?;
        c.set_timeouts(Some(Duration::from_secs(10)), None)?;
        Ok(ControlClient(c))
    }

    /// Sends one request and returns the whole answer; panics on a transport error.
    pub fn call(&mut self, req: &Request) -> Value {
        let r = self.0.call(req).unwrap_or_else(|e| panic!("{req:?}: {e}"));
        serde_json::to_value(r).expect("an answer is JSON")
    }
}

/// `withdraw` of path `path_id` of `prefix`.
pub fn withdraw(prefix: &str, path_id: u32, graceful: bool) -> Request {
    let prefix = prefix.parse().expect("a prefix");
    Request::Withdraw {
        graceful,
        routes: vec![RouteRef::new(prefix, Some(path_id))],
    }
}

/// `announce` (fate-shared) of path `path_id` of `prefix` with `next_hop` (`self` or an
/// address).
pub fn announce(prefix: &str, path_id: u32, next_hop: &str) -> Request {
    let mut r = RouteConfig::new(prefix.parse().expect("a prefix"));
    r.path_id = Some(path_id);
    r.next_hop = next_hop.parse::<NextHop>().expect("a next hop");
    Request::Announce {
        persistent: false,
        routes: vec![r],
    }
}
