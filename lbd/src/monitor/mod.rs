//! Health monitors: probe members (TCP connect, HTTP request/response, UDP request/reply) on
//! an interval and turn the results into member health.
//!
//! [`fsm`] is the sans-IO core deciding health from probe results and simulated time;
//! [`probe`](mod@probe) does the probe I/O and runs one fsm per member and monitor as a tokio task
//! ([`spawn_monitor`]).
//!
//! This module must not change pools or members itself (it reports health through the
//! `on_change` callback), nor block the data path.

use std::time::Duration;

pub mod fsm;
pub mod probe;

pub use fsm::{Health, Input, MonitorFsm, Output};
pub use probe::{probe, spawn_monitor, spawn_monitor_with, OnChange, OnSuccess, ProbeError};

/// What a monitor sends and what it expects back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// Healthy when a TCP connect completes within the timeout.
    Tcp,
    /// Sends `request` (raw bytes, e.g. "GET /health HTTP/1.0\r\nHost: x\r\n\r\n") after connecting,
    /// reads the response (up to 64 KiB or EOF or timeout) and is healthy when the status-line code
    /// equals `expect_status` and, if set, the body contains `expect_body`.
    Http {
        request: Vec<u8>,
        expect_status: u16,
        expect_body: Option<Vec<u8>>,
    },
    /// Sends `send` as one datagram from a connected UDP socket; healthy when a datagram arrives
    /// within the timeout that contains `expect` (any datagram if `expect` is empty). An ICMP
    /// port unreachable (ECONNREFUSED on recv) is an immediate failure.
    Udp { send: Vec<u8>, expect: Vec<u8> },
}

/// One configured monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorSpec {
    pub name: String,
    pub kind: ProbeKind,
    /// Time between probe starts.
    pub interval: Duration,
    /// A probe not finished by then has failed.
    pub timeout: Duration,
    /// Consecutive successes that bring a Down member Up (>= 1).
    pub up_count: u32,
    /// Consecutive failures that take an Up member Down (>= 1).
    pub down_count: u32,
}
