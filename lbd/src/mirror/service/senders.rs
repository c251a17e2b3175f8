//! The sending side of mirroring: which channels a placement wants and what each carries
//! ([`wanted`]), the running channels, and offering records to them ([`Outbox`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tracing::debug;

use super::super::link::SenderHandle;
use super::super::proto::{Record, RecordKey, RecordKind};
use crate::cluster::config::MirrorScope;
use crate::cluster::placement::Role;
use crate::tables::PersistRecord;

/// What a channel carries to its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Carries {
    /// Persistence records.
    pub persistence: bool,
    /// UDP flows and TCP connections.
    pub flows: bool,
}

impl Carries {
    pub fn kind(&self, kind: &RecordKind) -> bool {
        match kind {
            RecordKind::Persistence { .. } => self.persistence,
            RecordKind::UdpFlow { .. } | RecordKind::TcpConn { .. } => self.flows,
        }
    }

    pub fn key(&self, key: &RecordKey) -> bool {
        match key {
            RecordKey::Persistence { .. } => self.persistence,
            RecordKey::UdpFlow { .. } | RecordKey::TcpConn { .. } => self.flows,
        }
    }

    pub fn name(&self) -> &'static str {
        match (self.persistence, self.flows) {
            (true, true) => "all",
            (true, false) => "persistence",
            (false, true) => "connections",
            (false, false) => "nothing",
        }
    }
}

/// One running sender channel; its task ends when it is dropped.
pub(super) struct SenderEntry {
    pub peer: String,
    pub carries: Carries,
    pub handle: SenderHandle,
    pub task: JoinHandle<()>,
}

impl Drop for SenderEntry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) type Senders = BTreeMap<String, Vec<Arc<SenderEntry>>>;

/// Counters of what the data path offered.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub offered: AtomicU64,
    pub refresh_skipped: AtomicU64,
    pub offer_errors: AtomicU64,
}

/// The running channels, and what the data path offered them.
#[derive(Default)]
pub(super) struct Outbox {
    pub senders: ArcSwap<Senders>,
    pub counters: Counters,
}

impl Outbox {
    /// Offers `kind` to every channel of `tg` that carries it (O(1) each; never waits).
    pub fn offer(&self, tg: &str, kind: RecordKind) {
        let senders = self.senders.load();
        let Some(list) = senders.get(tg) else {
            return;
        };
        for e in list.iter().filter(|e| e.carries.kind(&kind)) {
            let record = Record {
                update_id: 0,
                traffic_group: tg.to_string(),
                kind: kind.clone(),
            };
            self.counters.offered.fetch_add(1, Ordering::Relaxed);
            if let Err(err) = e.handle.offer(record) {
                self.counters.offer_errors.fetch_add(1, Ordering::Relaxed);
                debug!(traffic_group = tg, error = %err, "mirroring: offer refused");
            }
        }
    }

    /// Offers the deletion of `key` to every channel of `tg` that carries its kind.
    pub fn offer_delete(&self, tg: &str, key: RecordKey) {
        let senders = self.senders.load();
        if let Some(list) = senders.get(tg) {
            for e in list.iter().filter(|e| e.carries.key(&key)) {
                e.handle.offer_delete(key.clone());
            }
        }
    }

    /// Offers a persistence record (created, refreshed or taken over here).
    pub fn offer_persist(&self, r: &PersistRecord) {
        if let Some(tg) = &r.traffic_group {
            self.offer(tg, RecordKind::from(r));
        }
    }
}

/// The channels this device `me` should run, given the traffic groups active `here` and each
/// traffic group's next-active device (`roles`): per traffic group active here, per peer among
/// `others`, what the channel carries — persistence records to every peer with
/// `persistence_scope = all-peers` (else to the next-active device), flows and connections to
/// every peer with `flow_scope = all-peers` (else to the next-active device). Peers that are
/// to receive nothing get no channel.
pub(super) fn wanted(
    me: &str,
    others: &[String],
    roles: &[Role],
    here: &BTreeSet<String>,
    persistence_scope: MirrorScope,
    flow_scope: MirrorScope,
) -> BTreeMap<String, BTreeMap<String, Carries>> {
    let mut want = BTreeMap::new();
    for t in roles.iter().filter(|t| here.contains(&t.traffic_group)) {
        let next = t.next_active.as_deref().filter(|p| *p != me);
        let peers = others
            .iter()
            .map(|p| {
                let to = |s: MirrorScope| s == MirrorScope::AllPeers || Some(p.as_str()) == next;
                let c = Carries {
                    persistence: to(persistence_scope),
                    flows: to(flow_scope),
                };
                (p.clone(), c)
            })
            .filter(|(_, c)| c.persistence || c.flows)
            .collect();
        want.insert(t.traffic_group.clone(), peers);
    }
    want
}
