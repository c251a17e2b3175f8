//! The data path's part of a takeover: rebuild the UDP flows and TCP connections mirrored for
//! a traffic group this device is taking over, before its floating addresses arrive.

use std::time::Duration;

use tracing::info;

use super::datapath::DataPath;
use crate::mirror::proto::{Record, RecordKind};
use std::sync::Arc;

/// Rebuilds `records` (mirrored UDP flows and TCP connections of traffic group `tg`) on their
/// listeners and worker runtimes.
pub async fn restore_mirrored(dp: &Arc<DataPath>, tg: &str, records: Vec<Record>) {
    if records.is_empty() {
        return;
    }
    let (udp, tcp): (Vec<_>, Vec<_>) = records
        .into_iter()
        .partition(|r| matches!(r.kind, RecordKind::UdpFlow { .. }));
    let (n_udp, n_tcp) = (udp.len(), tcp.len());
    let started = std::time::Instant::now();
    let restored_udp = super::udp::restore_flows(dp, udp, Duration::from_secs(1)).await;
    let restored_tcp = super::mirrored::restore(dp, tg, tcp);
    info!(
        traffic_group = tg,
        udp_flows = n_udp,
        restored_udp,
        tcp_connections = n_tcp,
        restored_tcp,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "mirroring: flows and connections rebuilt"
    );
}
