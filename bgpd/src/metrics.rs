//! Prometheus metrics (text exposition over a small HTTP endpoint).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::fsm::State;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NeighborLabel {
    pub neighbor: String,
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
    /// RFC 4271 state as a number: 1 Idle, 2 Connect, 3 Active, 4 OpenSent, 5 OpenConfirm,
    /// 6 Established.
    pub session_state: Family<NeighborLabel, Gauge>,
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
    /// BFD session state (RFC 5880 §4.1): 0 AdminDown, 1 Down, 2 Init, 3 Up.
    pub bfd_state: Family<NeighborLabel, Gauge>,
    /// Times the BFD session left Up for a path failure (each closes the BGP session).
    pub bfd_down: Family<NeighborLabel, Counter>,
    pub routes: Gauge,
    pub control_clients: Gauge,
    pub rejected_connections: Counter,
    /// What the control socket refused or closed (`control_clients_refused_total`,
    /// `control_connections_closed_total`, `control_requests_refused_total`).
    pub control: Arc<spanlb_control::access::Stats>,
}

/// A counter family: name, help, `(reason, value)` samples.
type Family3<'a> = (&'a str, &'a str, &'a [(&'a str, u64)]);

/// Reads the control socket's [`spanlb_control::access::Stats`] when scraped.
#[derive(Debug)]
struct ControlCollector(Arc<spanlb_control::access::Stats>);

impl prometheus_client::collector::Collector for ControlCollector {
    fn encode(&self, mut enc: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
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
            registry: Registry::with_prefix("bgpd"),
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
        };
        m.registry
            .register_collector(Box::new(ControlCollector(m.control.clone())));
        m.registry.register(
            "session_state",
            "RFC 4271 session state (1 Idle .. 6 Established)",
            m.session_state.clone(),
        );
        m.registry.register(
            "session_established_transitions",
            "Times the session reached Established",
            m.established_transitions.clone(),
        );
        m.registry.register(
            "messages_received",
            "BGP messages received by kind",
            m.messages_in.clone(),
        );
        m.registry.register(
            "messages_sent",
            "BGP messages sent by kind",
            m.messages_out.clone(),
        );
        m.registry.register(
            "prefixes_advertised",
            "Prefixes in the Adj-RIB-Out",
            m.prefixes_advertised.clone(),
        );
        m.registry.register(
            "prefixes_received",
            "Prefixes in the Adj-RIB-In",
            m.prefixes_received.clone(),
        );
        m.registry.register(
            "updates_treated_as_withdraw",
            "UPDATEs with attribute errors handled per RFC 7606",
            m.updates_treated_as_withdraw.clone(),
        );
        m.registry.register(
            "notifications_received",
            "NOTIFICATIONs received by code/subcode",
            m.notifications_in.clone(),
        );
        m.registry.register(
            "notifications_sent",
            "NOTIFICATIONs sent by code/subcode",
            m.notifications_out.clone(),
        );
        m.registry.register(
            "session_task_panics",
            "Neighbor tasks that panicked and were started again",
            m.session_task_panics.clone(),
        );
        m.registry.register(
            "send_hold_expired",
            "Sessions closed by the send hold timer (RFC 9687)",
            m.send_hold_expired.clone(),
        );
        m.registry.register(
            "route_refreshes_deferred",
            "ROUTE-REFRESH requests deferred while the peer was behind",
            m.refreshes_coalesced.clone(),
        );
        m.registry.register(
            "bfd_session_state",
            "BFD session state (0 AdminDown, 1 Down, 2 Init, 3 Up)",
            m.bfd_state.clone(),
        );
        m.registry.register(
            "bfd_session_down",
            "Times the BFD session went down for a path failure, closing the BGP session",
            m.bfd_down.clone(),
        );
        m.registry
            .register("routes", "Route intents in the table", m.routes.clone());
        m.registry.register(
            "control_clients",
            "Connected control clients",
            m.control_clients.clone(),
        );
        m.registry.register(
            "rejected_connections",
            "Inbound connections from unknown addresses",
            m.rejected_connections.clone(),
        );
        m
    }

    pub fn state_value(s: State) -> i64 {
        match s {
            State::Idle => 1,
            State::Connect => 2,
            State::Active => 3,
            State::OpenSent => 4,
            State::OpenConfirm => 5,
            State::Established => 6,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` (any path, really) until the task is dropped. A deliberately tiny
/// HTTP/1.0 responder: one request per connection, bounded request size, no keep-alive.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut n = 0;
            // Read until the end of the request head, 2 KiB at most, 5 s at most.
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while n < buf.len() {
                    match sock.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let body = metrics.encode();
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
