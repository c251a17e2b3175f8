//! Helpers of the crash and chaos tests (issue 11) on the [`cluster`](crate::cluster) lab:
//! a watch on r1's kernel route for the VIP.

use spanlb_lab::{Ns, Proc, Result};

use crate::topology::VIP;

/// `ip monitor` of r1's routes and nexthop objects for as long as it lives: every change the
/// kernel saw, to tell whether the VIP's route or its nexthop group changed at all.
pub struct RouteWatch {
    proc: Proc,
    /// The VIP's route when the watch started (`ip route show` words).
    pub start: String,
}

impl RouteWatch {
    /// Starts watching in `r1`; `start` is the VIP's route at that moment.
    pub fn start(r1: &Ns) -> Result<RouteWatch> {
        let proc = r1.spawn(
            &["ip", "-timestamp", "monitor", "route", "nexthop"],
            "r1-route-monitor.log",
        )?;
        // Let the monitor subscribe before anything happens.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let start = route_words(r1);
        Ok(RouteWatch { proc, start })
    }

    /// Every event so far that concerns the VIP's route or a nexthop object it uses (by the
    /// ids in `start`, or any nexthop object at all when the route has none).
    pub fn events(&self) -> Vec<String> {
        let ids: Vec<String> = nexthop_ids(&self.start);
        let log = self.proc.log();
        let mut out = Vec::new();
        for l in log.lines() {
            // `ip -timestamp monitor` writes "Timestamp: …" on a line of its own, then the event.
            if l.starts_with("Timestamp:") {
                continue;
            }
            let words: Vec<&str> = l.split_whitespace().collect();
            let about_vip = words.iter().any(|w| *w == VIP || *w == format!("{VIP}/32"));
            let about_nh = words.first() == Some(&"id")
                && words.get(1).is_some_and(|id| ids.iter().any(|x| x == id));
            let deleted_nh = words.first() == Some(&"Deleted")
                && words.get(1) == Some(&"id")
                && words.get(2).is_some_and(|id| ids.iter().any(|x| x == id));
            if about_vip || about_nh || deleted_nh {
                out.push(l.to_string());
            }
        }
        out
    }

    /// Stops the monitor.
    pub fn stop(&self) {
        self.proc.kill();
    }
}

impl Drop for RouteWatch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// r1's route for the VIP, as one line of words.
pub fn route_words(r1: &Ns) -> String {
    r1.ip(&["-4", "route", "show", VIP])
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The nexthop object ids a route line names (`nhid N`), with the members of that group as
/// `ip nexthop` would list them (not resolved here: the group id is what FRR replaces).
fn nexthop_ids(route: &str) -> Vec<String> {
    let w: Vec<&str> = route.split_whitespace().collect();
    w.windows(2)
        .filter(|p| p[0] == "nhid")
        .map(|p| p[1].to_string())
        .collect()
}
