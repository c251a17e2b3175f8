//! Reload: a new configuration taken without a restart (SIGHUP, `bgpctl reload`).
//!
//! [`plan`] compares the running configuration with the new one (pure):
//! - neighbors are matched by address: a new one is started, a removed one is shut down
//!   (Cease / Administrative Shutdown, RFC 4486 subcode 2, after its pending updates), one
//!   whose settings changed is shut down the same way and started again with its new
//!   settings; one where only `description`, `max_prefixes` or `send_hold_time` changed keeps
//!   its session and takes them live (nothing in them is negotiated with the peer);
//!   a neighbor whose settings are the same keeps its session (and its uptime);
//! - `[[route]]`s are matched by prefix and path id: a new or changed one is announced, a
//!   removed one withdrawn — a diff, nothing is withdrawn and announced again;
//! - `[shutdown]` is taken as it is;
//! - the router id, the AS, the listen addresses, the control socket, the metrics address
//!   and `[graceful_restart]` are refused with the reason (they need a restart).
//!
//! A file that does not load or validate is refused whole and the running configuration
//! stays, as lbd does.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::config::{Config, NeighborConfig, RouteConfig};
use crate::rib::RouteKey;

/// What a reload changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Neighbors to start.
    pub add: Vec<NeighborConfig>,
    /// Neighbors to shut down.
    pub remove: Vec<IpAddr>,
    /// Neighbors to reset and start again with new settings.
    pub reset: Vec<NeighborConfig>,
    /// Neighbors whose session stays, with settings taken live.
    pub update: Vec<NeighborConfig>,
    /// Static routes to announce (new or changed).
    pub announce: Vec<RouteConfig>,
    /// Static routes to withdraw.
    pub withdraw: Vec<RouteKey>,
}

/// What a reload did (the control answer).
pub use spanlb_control::bgpd::Reloaded as Summary;

impl Plan {
    pub fn summary(&self) -> Summary {
        Summary {
            neighbors_added: self.add.iter().map(|n| n.address).collect(),
            neighbors_removed: self.remove.clone(),
            neighbors_reset: self.reset.iter().map(|n| n.address).collect(),
            neighbors_updated: self.update.iter().map(|n| n.address).collect(),
            routes_announced: self.announce.len(),
            routes_withdrawn: self.withdraw.len(),
        }
    }
}

/// The changes from `old` to `new`, or why `new` needs a restart.
pub fn plan(old: &Config, new: &Config) -> Result<Plan, String> {
    let restart = |what: &str| {
        Err(format!(
            "{what} changed: it needs a restart of bgpd (the running configuration stays)"
        ))
    };
    if old.router_id != new.router_id {
        return restart("router_id");
    }
    if old.local_as != new.local_as {
        return restart("local_as");
    }
    if old.listen != new.listen {
        return restart("listen");
    }
    if old.control_socket != new.control_socket {
        return restart("control_socket");
    }
    if old.control_group != new.control_group {
        return restart("control_group");
    }
    if old.control_readonly_group != new.control_readonly_group {
        return restart("control_readonly_group");
    }
    if old.metrics != new.metrics {
        return restart("metrics");
    }
    if old.graceful_restart != new.graceful_restart {
        return restart("graceful_restart");
    }
    let before: BTreeMap<IpAddr, &NeighborConfig> =
        old.neighbors.iter().map(|n| (n.address, n)).collect();
    let after: BTreeMap<IpAddr, &NeighborConfig> =
        new.neighbors.iter().map(|n| (n.address, n)).collect();
    let mut p = Plan::default();
    for (a, n) in &after {
        match before.get(a) {
            None => p.add.push((*n).clone()),
            Some(o) if o == n => {}
            Some(o) if live_only(o, n) => p.update.push((*n).clone()),
            Some(_) => p.reset.push((*n).clone()),
        }
    }
    p.remove = before
        .keys()
        .filter(|a| !after.contains_key(a))
        .copied()
        .collect();
    let routes_before: BTreeMap<RouteKey, &RouteConfig> =
        old.routes.iter().map(|r| (RouteKey::of(r), r)).collect();
    let routes_after: BTreeMap<RouteKey, &RouteConfig> =
        new.routes.iter().map(|r| (RouteKey::of(r), r)).collect();
    for (k, r) in &routes_after {
        if routes_before.get(k) != Some(r) {
            p.announce.push((*r).clone());
        }
    }
    p.withdraw = routes_before
        .keys()
        .filter(|k| !routes_after.contains_key(k))
        .copied()
        .collect();
    Ok(p)
}

/// Whether `old` and `new` differ only in settings a running session takes without a reset.
fn live_only(old: &NeighborConfig, new: &NeighborConfig) -> bool {
    let mut o = old.clone();
    o.description = new.description.clone();
    o.max_prefixes = new.max_prefixes;
    o.send_hold_time = new.send_hold_time;
    o == *new
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
router_id = "20.1.1.6"
local_as = 65001
control_socket = "/run/bgpd.sock"

[[neighbor]]
address = "20.1.1.1"
remote_as = 65000

[[neighbor]]
address = "20.1.1.2"
remote_as = 65000

[[route]]
prefix = "30.1.1.10/32"
next_hop = "self"

[[route]]
prefix = "30.1.1.11/32"
next_hop = "self"
"#;

    fn cfg(text: &str) -> Config {
        Config::from_toml(text, "bgpd.toml").unwrap()
    }

    #[test]
    fn a_description_or_limit_change_keeps_the_session() {
        let new = BASE.replace(
            "address = \"20.1.1.1\"\nremote_as = 65000",
            "address = \"20.1.1.1\"\nremote_as = 65000\ndescription = \"r1\"\n\
             max_prefixes = 10\nsend_hold_time = 60",
        );
        let p = plan(&cfg(BASE), &cfg(&new)).unwrap();
        assert!(p.reset.is_empty(), "{p:?}");
        assert_eq!(p.update.len(), 1);
        assert_eq!(p.update[0].description.as_deref(), Some("r1"));
        // With anything negotiated changing too, it is a reset.
        let new = new.replace("send_hold_time = 60", "send_hold_time = 60\nhold_time = 30");
        let p = plan(&cfg(BASE), &cfg(&new)).unwrap();
        assert!(p.update.is_empty(), "{p:?}");
        assert_eq!(p.reset.len(), 1);
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let p = plan(&cfg(BASE), &cfg(BASE)).unwrap();
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn neighbors_and_routes_change_as_a_diff() {
        let new = BASE
            // A neighbor added, one changed, one removed.
            .replace(
                "address = \"20.1.1.2\"\nremote_as = 65000",
                "address = \"20.1.1.3\"\nremote_as = 65000",
            )
            .replace(
                "address = \"20.1.1.1\"\nremote_as = 65000",
                "address = \"20.1.1.1\"\nremote_as = 65000\nhold_time = 30",
            )
            // A route changed (MED), one removed.
            .replace(
                "prefix = \"30.1.1.10/32\"\nnext_hop = \"self\"",
                "prefix = \"30.1.1.10/32\"\nnext_hop = \"self\"\nmed = 50",
            )
            .replace(
                "\n[[route]]\nprefix = \"30.1.1.11/32\"\nnext_hop = \"self\"\n",
                "",
            );
        let p = plan(&cfg(BASE), &cfg(&new)).unwrap();
        let s = p.summary();
        assert_eq!(
            s.neighbors_added,
            vec!["20.1.1.3".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            s.neighbors_removed,
            vec!["20.1.1.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            s.neighbors_reset,
            vec!["20.1.1.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(p.announce.len(), 1);
        assert_eq!(p.announce[0].med, Some(50));
        assert_eq!(p.withdraw.len(), 1);
        assert_eq!(p.withdraw[0].prefix.to_string(), "30.1.1.11/32");
    }

    #[test]
    fn what_needs_a_restart_is_refused() {
        for (from, to, what) in [
            (
                "router_id = \"20.1.1.6\"",
                "router_id = \"20.1.1.9\"",
                "router_id",
            ),
            ("local_as = 65001", "local_as = 65002", "local_as"),
            (
                "control_socket = \"/run/bgpd.sock\"",
                "control_socket = \"/run/other.sock\"",
                "control_socket",
            ),
            (
                "control_socket = \"/run/bgpd.sock\"",
                "control_socket = \"/run/bgpd.sock\"\ncontrol_group = \"0\"",
                "control_group",
            ),
        ] {
            let e = plan(&cfg(BASE), &cfg(&BASE.replace(from, to))).unwrap_err();
            assert!(e.starts_with(&format!("{what} changed")), "{e}");
        }
    }
}
