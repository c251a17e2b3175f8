//! bgpd's metrics (prefix `bgpd_`; the `process_*` metrics have none) and readiness, served by
//! [`spanlb_control::http`] on `/metrics` and `/healthz`.
//!
//! States are StateSet-like gauges: `session_state{neighbor,state}` has one sample per RFC 4271
//! state (`idle`, `connect`, `active`, `open-sent`, `open-confirm`, `established`) and
//! `bfd_session_state{neighbor,state}` one per RFC 5880 state (`admin-down`, `down`, `init`,
//! `up`), 1 for the current one and 0 for the others.
//!
//! Readiness ([`Metrics::set_ready`]): bgpd is ready once started — its BGP listeners accept
//! (with every neighbor's TCP-MD5/GTSM settings), every neighbor task and BFD session is set
//! up, and the control socket serves. It does not wait for a session to be Established: a
//! router being down is not bgpd's failure, and restarting bgpd would not bring it up; the
//! sessions' states are in the metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::bfd::State as BfdState;
use crate::fsm::State;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NeighborLabel {
    pub neighbor: String,
}

/// A neighbor and one of its possible states (StateSet-like gauges).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub neighbor: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabel {
    pub neighbor: String,
    /// open, update, notification, keepalive, route-refresh
    pub kind: String,
}

/// Every bgpd metric.
pub struct Metrics {
    pub registry: Registry,
    /// RFC 4271 state: 1 for the current state, 0 for the others ([`Metrics::set_session_state`]).
    pub session_state: Family<StateLabel, Gauge>,
    pub established_transitions: Family<NeighborLabel, Counter>,
    pub messages_in: Family<MessageLabel, Counter>,
    pub messages_out: Family<MessageLabel, Counter>,
    pub prefixes_advertised: Family<NeighborLabel, Gauge>,
    pub prefixes_received: Family<NeighborLabel, Gauge>,
    pub updates_treated_as_withdraw: Family<NeighborLabel, Counter>,
    pub notifications_in: Family<MessageLabel, Counter>,
    pub notifications_out: Family<MessageLabel, Counter>,
    /// Neighbor tasks that panicked (and were started again).
    pub session_task_panics: Family<NeighborLabel, Counter>,
    /// Sessions closed by the send hold timer (RFC 9687).
    pub send_hold_expired: Family<NeighborLabel, Counter>,
    /// ROUTE-REFRESHes deferred because the peer was behind (at most one waits per family).
    pub refreshes_coalesced: Family<NeighborLabel, Counter>,
    /// BFD session state (RFC 5880 §4.1): 1 for the current state ([`Metrics::set_bfd_state`]).
    pub bfd_state: Family<StateLabel, Gauge>,
    /// Times the BFD session left Up for a path failure (each closes the BGP session).
    pub bfd_down: Family<NeighborLabel, Counter>,
    pub routes: Gauge,
    pub control_clients: Gauge,
    pub rejected_connections: Counter,
    /// What the control socket refused or closed (`control_clients_refused_total`,
    /// `control_connections_closed_total`, `control_requests_refused_total`).
    pub control: Arc<spanlb_control::access::Stats>,
    /// Set once started (`/healthz`).
    ready: AtomicBool,
}

/// A counter family: name, help, `(reason, value)` samples.
type Family3<'a> = (&'a str, &'a str, &'a [(&'a str, u64)]);

/// Reads the control socket's [`spanlb_control::access::Stats`] when scraped.
#[derive(Debug)]
struct ControlCollector(Arc<spanlb_control::access::Stats>);

impl prometheus_client::collector::Collector for ControlCollector {
    fn encode(&self, mut enc: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        spanlb_control::http::build_info(&mut enc, env!("CARGO_PKG_VERSION"))?;
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::MetricType;
        let read_only = [(
            "read-only",
            self.0
                .refused_read_only
                .load(std::sync::atomic::Ordering::Relaxed),
        )];
        let families: [Family3<'_>; 3] = [
            (
                "control_clients_refused",
                "Control clients refused at connect, by reason (permission, client-limit)",
                &self.0.refused(),
            ),
            (
                "control_connections_closed",
                "Control connections closed by bgpd, by reason (line-too-long, \
                 partial-line-timeout)",
                &self.0.closed()[..2],
            ),
            (
                "control_requests_refused",
                "Control requests refused to a read-only client",
                &read_only,
            ),
        ];
        for (name, help, samples) in families {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (reason, v) in samples {
                let labels = [("reason", reason.to_string())];
                ConstCounter::new(*v).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            session_state: Family::default(),
            established_transitions: Family::default(),
            messages_in: Family::default(),
            messages_out: Family::default(),
            prefixes_advertised: Family::default(),
            prefixes_received: Family::default(),
            updates_treated_as_withdraw: Family::default(),
            notifications_in: Family::default(),
            notifications_out: Family::default(),
            session_task_panics: Family::default(),
            send_hold_expired: Family::default(),
            refreshes_coalesced: Family::default(),
            bfd_state: Family::default(),
            bfd_down: Family::default(),
            routes: Gauge::default(),
            control_clients: Gauge::default(),
            rejected_connections: Counter::default(),
            control: Arc::default(),
            ready: AtomicBool::new(false),
        };
        m.registry
            .register_collector(Box::new(spanlb_control::http::ProcessCollector));
        let r = m.registry.sub_registry_with_prefix("bgpd");
        r.register_collector(Box::new(ControlCollector(m.control.clone())));
        r.register(
            "session_state",
            "RFC 4271 session state: 1 for the current state, 0 for the others",
            m.session_state.clone(),
        );
        r.register(
            "session_established_transitions",
            "Times the session reached Established",
            m.established_transitions.clone(),
        );
        r.register(
            "messages_received",
            "BGP messages received by kind",
            m.messages_in.clone(),
        );
        r.register(
            "messages_sent",
            "BGP messages sent by kind",
            m.messages_out.clone(),
        );
        r.register(
            "prefixes_advertised",
            "Prefixes in the Adj-RIB-Out",
            m.prefixes_advertised.clone(),
        );
        r.register(
            "prefixes_received",
            "Prefixes in the Adj-RIB-In",
            m.prefixes_received.clone(),
        );
        r.register(
            "updates_treated_as_withdraw",
            "UPDATEs with attribute errors handled per RFC 7606",
            m.updates_treated_as_withdraw.clone(),
        );
        r.register(
            "notifications_received",
            "NOTIFICATIONs received by code/subcode",
            m.notifications_in.clone(),
        );
        r.register(
            "notifications_sent",
            "NOTIFICATIONs sent by code/subcode",
            m.notifications_out.clone(),
        );
        r.register(
            "session_task_panics",
            "Neighbor tasks that panicked and were started again",
            m.session_task_panics.clone(),
        );
        r.register(
            "send_hold_expired",
            "Sessions closed by the send hold timer (RFC 9687)",
            m.send_hold_expired.clone(),
        );
        r.register(
            "route_refreshes_deferred",
            "ROUTE-REFRESH requests deferred while the peer was behind",
            m.refreshes_coalesced.clone(),
        );
        r.register(
            "bfd_session_state",
            "BFD session state: 1 for the current state, 0 for the others",
            m.bfd_state.clone(),
        );
        r.register(
            "bfd_session_down",
            "Times the BFD session went down for a path failure, closing the BGP session",
            m.bfd_down.clone(),
        );
        r.register("routes", "Route intents in the table", m.routes.clone());
        r.register(
            "control_clients",
            "Connected control clients",
            m.control_clients.clone(),
        );
        r.register(
            "rejected_connections",
            "Inbound connections from unknown addresses",
            m.rejected_connections.clone(),
        );
        m
    }

    /// Sets `neighbor`'s session state: 1 for `s`, 0 for the other states.
    pub fn set_session_state(&self, neighbor: &NeighborLabel, s: State) {
        for st in [
            State::Idle,
            State::Connect,
            State::Active,
            State::OpenSent,
            State::OpenConfirm,
            State::Established,
        ] {
            let label = StateLabel {
                neighbor: neighbor.neighbor.clone(),
                state: session_state_name(st).to_string(),
            };
            self.session_state
                .get_or_create(&label)
                .set(i64::from(st == s));
        }
    }

    /// Sets `neighbor`'s BFD session state: 1 for `s`, 0 for the other states.
    pub fn set_bfd_state(&self, neighbor: &NeighborLabel, s: BfdState) {
        for st in [
            BfdState::AdminDown,
            BfdState::Down,
            BfdState::Init,
            BfdState::Up,
        ] {
            let label = StateLabel {
                neighbor: neighbor.neighbor.clone(),
                state: bfd_state_name(st).to_string(),
            };
            self.bfd_state.get_or_create(&label).set(i64::from(st == s));
        }
    }

    /// bgpd is started (see the module documentation): `/healthz` answers 200 from now on.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The `state` label of an RFC 4271 state.
pub fn session_state_name(s: State) -> &'static str {
    match s {
        State::Idle => "idle",
        State::Connect => "connect",
        State::Active => "active",
        State::OpenSent => "open-sent",
        State::OpenConfirm => "open-confirm",
        State::Established => "established",
    }
}

/// The `state` label of an RFC 5880 state.
pub fn bfd_state_name(s: BfdState) -> &'static str {
    match s {
        BfdState::AdminDown => "admin-down",
        BfdState::Down => "down",
        BfdState::Init => "init",
        BfdState::Up => "up",
    }
}

impl spanlb_control::http::Endpoint for Metrics {
    fn metrics(&self) -> String {
        self.encode()
    }

    fn ready(&self) -> Result<(), String> {
        if self.ready.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("starting: neighbors, BFD sessions and the control socket are being set up".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use spanlb_control::http::{check_openmetrics, Endpoint};

    use super::*;

    #[test]
    fn states_are_state_sets_and_ready_waits_for_the_start() {
        let m = Metrics::new();
        let why = m.ready().unwrap_err();
        assert!(why.starts_with("starting"), "{why}");
        let n = NeighborLabel {
            neighbor: "192.0.2.1".into(),
        };
        m.set_session_state(&n, State::OpenSent);
        m.set_session_state(&n, State::Established);
        m.set_bfd_state(&n, BfdState::Up);
        let text = m.encode();
        check_openmetrics(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
        for (state, v) in [("established", 1), ("open-sent", 0), ("idle", 0)] {
            let line =
                format!("bgpd_session_state{{neighbor=\"192.0.2.1\",state=\"{state}\"}} {v}");
            assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
        }
        for (state, v) in [("up", 1), ("down", 0), ("admin-down", 0), ("init", 0)] {
            let line =
                format!("bgpd_bfd_session_state{{neighbor=\"192.0.2.1\",state=\"{state}\"}} {v}");
            assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
        }
        assert!(text.contains("bgpd_build_info{version=\""), "{text}");
        assert!(text.contains("\nprocess_start_time_seconds "), "{text}");
        m.set_ready();
        assert_eq!(m.ready(), Ok(()));
    }
}
