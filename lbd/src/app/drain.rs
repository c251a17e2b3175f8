//! Stopping with connections open: the drain that SIGTERM / SIGINT start
//! (`device.drain_timeout`; zero skips it).
//!
//! In this order, each step logged once with its counts:
//!
//! 1. With a device group, the traffic groups held here are given up (as `lbctl standby`
//!    does) and lbd waits until a peer holds each of them, so that the connections mirrored
//!    to their next-active devices carry on there (mirrored connections here are closed
//!    silently when their traffic group leaves). When no peer is alive and eligible they are
//!    kept: giving them up would only take their addresses away from the open connections.
//! 2. The TCP listeners are closed (a new connection is refused: the kernel resets it) and UDP
//!    listeners open no new flow (a datagram that would open one is dropped and counted
//!    `refused`; the flows there are go on).
//! 3. lbd waits until the open TCP connections and UDP flows have ended, reporting what is
//!    left every [`REPORT`], until the drain's deadline: what is still open then is closed as
//!    lbd exits.
//!
//! A second signal (delivered as `again`) ends the drain at once. The whole drain, step 1
//! included, is bounded by `drain_timeout`; the device group's own shutdown follows it in
//! [`super::run_until`].

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::App;
use crate::tables::now_ms;

/// How often the wait for open connections says what is left.
pub const REPORT: Duration = Duration::from_secs(5);

/// How often the wait looks at what is open.
const POLL: Duration = Duration::from_millis(100);

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every connection and flow ended.
    Empty,
    /// `drain_timeout` passed with this many still open (they are closed as lbd exits).
    TimedOut(u64),
    /// A second signal with this many still open.
    Interrupted(u64),
}

/// Drains `app` for at most `limit` (see the module documentation).
pub async fn drain(app: &App, limit: Duration, again: impl Future<Output = ()>) -> Drained {
    tokio::pin!(again);
    let dp = &app.daemon.dp;
    let deadline = Instant::now() + limit;
    dp.drain.begin(now_ms() + limit.as_millis() as u64);
    let open = dp.open();
    info!(
        drain_timeout = ?limit,
        connections = open.connections,
        flows = open.flows,
        "stopping: draining (a second SIGTERM or SIGINT stops at once)"
    );
    if let Some(c) = &app.cluster {
        let held: Vec<String> = c.local_status().active_here.into_keys().collect();
        if held.is_empty() {
            info!("drain: no traffic group held here");
        } else {
            let peers = c.peers_to_take_over().await;
            if peers.is_empty() {
                warn!(
                    traffic_groups = ?held,
                    "drain: no peer alive and eligible to take the traffic groups held here: \
                     they stay here while connections drain"
                );
            } else {
                info!(
                    traffic_groups = ?held,
                    ?peers,
                    "drain: giving up the traffic groups held here"
                );
                tokio::select! {
                    _ = c.shutdown(limit) => {}
                    _ = &mut again => {
                        let n = dp.open().total();
                        warn!(open = n, "second signal: stopping at once");
                        return Drained::Interrupted(n);
                    }
                }
                let still: Vec<String> = c.local_status().active_here.into_keys().collect();
                let open = dp.open();
                info!(
                    given_up = held.len() - held.iter().filter(|t| still.contains(t)).count(),
                    still_held = still.len(),
                    connections = open.connections,
                    flows = open.flows,
                    "drain: traffic groups given up"
                );
            }
        }
    }
    let closed = app.daemon.stop_accepting().await;
    let open = dp.open();
    info!(
        tcp_listeners_closed = closed,
        connections = open.connections,
        flows = open.flows,
        "drain: new TCP connections are refused and new UDP flows dropped; waiting for the open \
         ones to end"
    );
    let mut next_report = Instant::now() + REPORT;
    loop {
        let open = dp.open();
        if open.total() == 0 {
            info!("drain: every connection and flow has ended");
            return Drained::Empty;
        }
        let now = Instant::now();
        if now >= deadline {
            warn!(
                connections = open.connections,
                flows = open.flows,
                "drain: drain_timeout ({limit:?}) is over: closing what is still open"
            );
            return Drained::TimedOut(open.total());
        }
        if now >= next_report {
            next_report = now + REPORT;
            info!(
                connections = open.connections,
                flows = open.flows,
                left = ?deadline - now,
                "drain: waiting for open connections"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL.min(deadline - now)) => {}
            _ = &mut again => {
                warn!(
                    connections = open.connections,
                    flows = open.flows,
                    "second signal: stopping at once, closing what is still open"
                );
                return Drained::Interrupted(open.total());
            }
        }
    }
}
