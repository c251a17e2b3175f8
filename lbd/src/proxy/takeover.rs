//! The data path's part of a takeover: rebuild the UDP flows and TCP connections mirrored for
//! a traffic group this device is taking over, before its floating addresses arrive — within
//! a time budget, so that the failover time does not grow with the number of connections.
//!
//! The device group adds the floating addresses when [`restore_mirrored`] returns: once
//! everything is rebuilt, or once the device's `takeover_restore_budget` is spent. The TCP
//! connections are rebuilt most recently active first ([`super::mirrored::Restore`]); those
//! left at the budget are rebuilt right after, by a task on the calling (control) runtime
//! whose system calls run on blocking threads. Until a connection is rebuilt, a packet of it
//! that arrives at the new addresses meets the listener and is answered with a reset: the
//! budget trades the failover time for the idlest connections. A release of the traffic group
//! stops that remainder. UDP flows are rebuilt by their listeners meanwhile; the takeover waits
//! for them at most the budget (and at most 1 s), and a listener goes on with its flows after.
//!
//! Counted in [`TakeoverStats`] (metrics `lbd_takeover_rebuilt_total{when}`,
//! `lbd_takeover_rebuild_failed_total`, `lbd_takeover_last_rebuild_seconds`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tracing::info;

use super::batches::Outcome;
use super::datapath::{DataPath, TakeoverStats};
use super::mirrored::Restore;
use crate::mirror::proto::{Record, RecordKind};

/// The longest wait for a UDP listener to rebuild its flows.
const UDP_LIMIT: Duration = Duration::from_secs(1);

/// How a takeover's rebuild went until the addresses moved.
#[derive(Debug)]
pub struct Restored {
    /// UDP flows rebuilt.
    pub udp: usize,
    /// TCP connections rebuilt before returning.
    pub before_addresses: usize,
    /// TCP connections left for the background.
    pub left: usize,
    /// The background rebuild of what is left (None: nothing is).
    pub remainder: Option<JoinHandle<Remainder>>,
}

/// How the background rebuild went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remainder {
    /// TCP connections rebuilt after the addresses.
    pub after_addresses: usize,
    /// Connections not rebuilt because the traffic group was released meanwhile.
    pub abandoned: usize,
    /// Connections that could not be rebuilt, over the whole takeover.
    pub failed: usize,
}

/// Rebuilds `records` (mirrored UDP flows and TCP connections of traffic group `tg`) on their
/// listeners and worker runtimes, within the device's `takeover_restore_budget`; what is left
/// goes on in a task spawned on the calling runtime (see the module documentation).
pub async fn restore_mirrored(dp: &Arc<DataPath>, tg: &str, records: Vec<Record>) -> Restored {
    let mut restored = Restored {
        udp: 0,
        before_addresses: 0,
        left: 0,
        remainder: None,
    };
    if records.is_empty() {
        return restored;
    }
    let started = Instant::now();
    let budget = dp.runtime.load().config.device.takeover_restore_budget;
    let deadline = tokio::time::Instant::now() + budget;
    let released = dp.mirror.as_ref().map(|m| m.release_watch(tg));
    let (udp, tcp): (Vec<_>, Vec<_>) = records
        .into_iter()
        .partition(|r| matches!(r.kind, RecordKind::UdpFlow { .. }));
    let (n_udp, n_tcp) = (udp.len(), tcp.len());
    let mut restore = Restore::new(dp, tg, tcp, released);
    let (restored_udp, outcome) = tokio::join!(
        super::udp::restore_flows(dp, udp, UDP_LIMIT.min(budget)),
        restore.run(Some(deadline))
    );
    let stats = &dp.takeover;
    restored.udp = restored_udp;
    restored.before_addresses = restore.rebuilt;
    restored.left = restore.left();
    stats
        .rebuilt_before
        .fetch_add(restore.rebuilt as u64, Ordering::Relaxed);
    let before = started.elapsed();
    info!(
        traffic_group = tg,
        udp_flows = n_udp,
        restored_udp,
        tcp_connections = n_tcp,
        rebuilt_before_addresses = restore.rebuilt,
        left_for_after = restored.left,
        failed = restore.failed,
        elapsed_ms = before.as_millis() as u64,
        budget_ms = budget.as_millis() as u64,
        "mirroring: flows and connections rebuilt, the floating addresses move now"
    );
    if outcome == Outcome::Deadline && restored.left > 0 {
        let (dp, tg): (Arc<DataPath>, Arc<str>) = (dp.clone(), tg.into());
        let before_n = restore.rebuilt;
        restored.remainder = Some(tokio::spawn(async move {
            let outcome = restore.run(None).await;
            let abandoned = match outcome {
                Outcome::Stopped => restore.abandon().await,
                Outcome::Done | Outcome::Deadline => 0,
            };
            let after = restore.rebuilt - before_n;
            let stats = &dp.takeover;
            stats
                .rebuilt_after
                .fetch_add(after as u64, Ordering::Relaxed);
            finish(stats, &restore, started);
            info!(
                traffic_group = &*tg,
                rebuilt_before_addresses = before_n,
                rebuilt_after_addresses = after,
                abandoned_at_release = abandoned,
                failed = restore.failed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "mirroring: the rest of the connections rebuilt after the addresses"
            );
            Remainder {
                after_addresses: after,
                abandoned,
                failed: restore.failed,
            }
        }));
    } else {
        let abandoned = match outcome {
            Outcome::Stopped => restore.abandon().await,
            Outcome::Done | Outcome::Deadline => 0,
        };
        restored.left = 0;
        finish(stats, &restore, started);
        if abandoned > 0 {
            info!(
                traffic_group = tg,
                abandoned_at_release = abandoned,
                "mirroring: traffic group released during the rebuild"
            );
        }
    }
    restored
}

/// Counts the failures and the time of a finished rebuild.
fn finish(stats: &TakeoverStats, restore: &Restore, started: Instant) {
    stats
        .failed
        .fetch_add(restore.failed as u64, Ordering::Relaxed);
    stats.last_rebuild_ms.store(
        u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}
