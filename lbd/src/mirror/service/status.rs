//! What `lbctl show mirroring` and the metrics show of mirroring.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::super::channel::{ReceiverStatus, SenderStatus, State};
use super::super::proto::{Record, RecordKind};
use super::senders::Carries;
use super::store::lock;
use super::{in_sync, ChannelFigures, Mirroring};

impl Mirroring {
    /// `lbctl show mirroring`.
    pub fn status(&self) -> Value {
        let ports = self.ports.load_full();
        let ports = &*ports;
        let group = self.group.load();
        let counts = |tg: &str, mirrored: Option<bool>| -> Value {
            let persistence = self.live.persist.count(|r| {
                r.traffic_group.as_deref() == Some(tg) && mirrored.is_none_or(|m| m == r.mirrored)
            });
            let (mut udp, mut tcp) = (0usize, 0usize);
            let mut tally = |r: &Record| match r.kind {
                RecordKind::UdpFlow { .. } => udp += 1,
                RecordKind::TcpConn { .. } => tcp += 1,
                RecordKind::Persistence { .. } => {}
            };
            if mirrored != Some(false) {
                if let Some(recs) = lock(&self.standby).records.get(tg) {
                    recs.values().for_each(&mut tally);
                }
            }
            if mirrored != Some(true) {
                self.flows
                    .iter()
                    .filter(|e| e.value().traffic_group == tg)
                    .for_each(|e| tally(e.value()));
            }
            json!({"persistence": persistence, "udp_flows": udp, "tcp_connections": tcp})
        };
        let senders: Vec<Value> = self
            .outbox
            .senders
            .load()
            .iter()
            .flat_map(|(tg, list)| {
                list.iter().map(move |e| {
                    let s: SenderStatus = e.handle.status();
                    json!({
                        "traffic_group": tg,
                        "peer": e.peer,
                        "carries": e.carries.name(),
                        "port": ports.get(tg),
                        "state": state_name(s.state),
                        "last_sent": s.last_sent,
                        "last_acked": s.last_acked,
                        "lag_ms": s.lag_ms,
                        "queued": s.queued,
                        "unacked": s.unacked,
                        "records": carried(counts(tg, None), e.carries),
                    })
                })
            })
            .collect::<Vec<_>>();
        let here = self.active.load();
        let receivers: Vec<Value> = lock(&self.receivers)
            .iter()
            .flat_map(|(_, h, _)| h.status())
            .map(|(tg, s, connected)| {
                json!({
                    "traffic_group": tg,
                    "peer": s.peer,
                    "port": ports.get(&tg),
                    "connected": connected,
                    "state": receiver_state(&s, connected, here.contains(&tg)),
                    "in_sync": in_sync(&s, connected),
                    "last_applied": s.last_applied,
                    "duplicates": s.duplicates,
                    "records": counts(&tg, Some(true)),
                })
            })
            .collect();
        json!({
            "enabled": true,
            "me": self.me,
            "scope": group.group.mirror_scope.to_string(),
            "persistence_scope": group.group.persistence_mirror_scope.to_string(),
            "unsynced": *self.unsynced.borrow(),
            "senders": senders,
            "receivers": receivers,
            "offered": self.outbox.counters.offered.load(Ordering::Relaxed),
            "refresh_skipped": self.outbox.counters.refresh_skipped.load(Ordering::Relaxed),
            "offer_errors": self.outbox.counters.offer_errors.load(Ordering::Relaxed),
            "records_refused": self.refused.load(Ordering::Relaxed),
            "records_over_limit": self.over_limit.load(Ordering::Relaxed),
            "connections_refused": self
                .admission
                .refusals()
                .into_iter()
                .map(|(why, n)| (why.to_string(), Value::from(n)))
                .collect::<serde_json::Map<_, _>>(),
        })
    }

    /// Per-channel figures for the metrics: (traffic group, peer, role, state, last id,
    /// acked id, lag ms).
    pub fn channel_figures(&self) -> Vec<ChannelFigures> {
        let mut out = Vec::new();
        for (tg, list) in self.outbox.senders.load().iter() {
            for e in list {
                let s = e.handle.status();
                out.push(ChannelFigures {
                    traffic_group: tg.clone(),
                    peer: e.peer.clone(),
                    role: "sender",
                    state: state_name(s.state),
                    in_sync: s.state == State::InSync,
                    last_id: s.last_sent,
                    acked_id: s.last_acked,
                    lag_ms: s.lag_ms,
                });
            }
        }
        let receivers: Vec<_> = lock(&self.receivers)
            .iter()
            .flat_map(|(_, h, _)| h.status())
            .collect();
        {
            for (tg, s, connected) in receivers {
                out.push(ChannelFigures {
                    traffic_group: tg,
                    peer: s.peer.clone().unwrap_or_default(),
                    role: "receiver",
                    state: if in_sync(&s, connected) {
                        "in-sync"
                    } else if s.resyncing {
                        "resyncing"
                    } else {
                        "connecting"
                    },
                    in_sync: in_sync(&s, connected),
                    last_id: s.last_applied,
                    acked_id: s.last_applied,
                    lag_ms: 0,
                });
            }
        }
        out
    }

    /// Standby records refused because their traffic group held its limit.
    pub fn records_over_limit(&self) -> u64 {
        self.over_limit.load(Ordering::Relaxed)
    }

    /// Connections the receivers refused, by reason (`source`, `busy`, `trust`,
    /// `not-holder`).
    pub fn connection_refusals(&self) -> Vec<(&'static str, u64)> {
        self.admission.refusals()
    }

    /// Updates offered to channels, refreshes not worth an update, offers refused.
    pub fn offer_counters(&self) -> (u64, u64, u64) {
        (
            self.outbox.counters.offered.load(Ordering::Relaxed),
            self.outbox.counters.refresh_skipped.load(Ordering::Relaxed),
            self.outbox.counters.offer_errors.load(Ordering::Relaxed),
        )
    }
}

/// `counts` with the kinds a channel does not carry set to 0.
fn carried(mut counts: Value, c: Carries) -> Value {
    if !c.persistence {
        counts["persistence"] = 0.into();
    }
    if !c.flows {
        counts["udp_flows"] = 0.into();
        counts["tcp_connections"] = 0.into();
    }
    counts
}

fn receiver_state(s: &ReceiverStatus, connected: bool, active_here: bool) -> &'static str {
    if active_here {
        "active-here"
    } else if in_sync(s, connected) {
        "in-sync"
    } else if s.resyncing {
        "resyncing"
    } else if connected {
        "connected"
    } else if s.synced {
        "disconnected"
    } else {
        "waiting"
    }
}

/// The names `lbctl show mirroring` uses.
pub fn state_name(s: State) -> &'static str {
    match s {
        State::Connecting => "connecting",
        State::Resyncing => "resyncing",
        State::InSync => "in-sync",
        State::Lagging => "lagging",
    }
}
