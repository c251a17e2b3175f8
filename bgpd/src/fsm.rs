//! The BGP session finite state machine of RFC 4271 §8, as a sans-IO core.
//!
//! [`Session::process`] takes the current time and one [`Input`] and returns what the caller
//! must do ([`Output`]s: connect, send, close, report). Timers are data: the core keeps their
//! deadlines, [`Session::poll_timeout`] says when it next needs [`Input::Timeout`]. The core does
//! no I/O and reads no clock, so every transition is tested on simulated time.
//!
//! Connection collisions (RFC 4271 §6.8) are handled here: the core tracks up to two TCP
//! connections to the peer, identified by [`ConnId`]s the caller chooses.
//!
//! (Stub: being implemented.)

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::wire::{DecodeError, Family, Message, Notification, Open, SessionCodec};

/// RFC 4271 §8.2.2 session states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        })
    }
}

/// Session parameters from the neighbor's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub local_as: u32,
    pub remote_as: u32,
    pub router_id: Ipv4Addr,
    /// Hold time we propose (0 or ≥ 3 s; RFC 4271 §4.2).
    pub hold_time: u16,
    /// Keepalive interval; `None` means a third of the negotiated hold time.
    pub keepalive: Option<u16>,
    /// ConnectRetryTimer (RFC 4271 §8.2.2; default 120 s, bgpd uses a smaller default).
    pub connect_retry: Duration,
    /// Delay before an automatic restart after the session fell to Idle (IdleHoldTimer,
    /// RFC 4271 §8.1.1 "DampPeerOscillations" family, simplified: fixed delay).
    pub idle_hold: Duration,
    /// Passive: never initiate a connection, wait for the peer (RFC 4271 §8.1.1 PassiveTcpEstablishment).
    pub passive: bool,
    /// Families we announce in Multiprotocol capabilities (RFC 4760 §8).
    pub families: Vec<Family>,
    /// Families for which we offer ADD-PATH send (RFC 7911).
    pub add_path_send: Vec<Family>,
    /// Families for which we offer ADD-PATH receive.
    pub add_path_receive: Vec<Family>,
}

/// Identifies one TCP connection to the peer; chosen by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Events the caller feeds the core (RFC 4271 §8.1 event names in the docs).
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Event 1 ManualStart (or Event 4/5 for passive sessions).
    Start,
    /// Event 2 ManualStop: send Cease with this subcode if a session is up, go Idle, and stay
    /// Idle (no automatic restart) until the next `Start`.
    Stop { subcode: u8, data: Vec<u8> },
    /// The outbound connection the core asked for ([`Output::Connect`]) is up
    /// (Event 16 Tcp_CR_Acked), or an inbound one was accepted (Event 17
    /// TcpConnectionConfirmed).
    TcpConnected { conn: ConnId, outbound: bool },
    /// Event 18 TcpConnectionFails: the connection failed or was closed by the peer.
    TcpClosed { conn: ConnId },
    /// A message arrived on a connection (Events 19–28 by message type).
    Message { conn: ConnId, msg: Message },
    /// A message on this connection could not be decoded (Events 21/22 BGPHeaderErr /
    /// BGPOpenMsgErr, Event 28 UpdateMsgErr): the core sends the NOTIFICATION and drops the session.
    DecodeError { conn: ConnId, err: DecodeError },
    /// A local policy (max-prefix, admin reset) ends the established session with a Cease of
    /// this subcode; unlike `Stop`, the session restarts automatically after `idle_hold`.
    Cease { subcode: u8, data: Vec<u8> },
    /// Time has reached [`Session::poll_timeout`]: fire every expired timer.
    Timeout,
}

/// What the caller must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Open an outbound TCP connection; report it with this id.
    Connect { conn: ConnId },
    /// Write this message on the connection.
    Send { conn: ConnId, msg: Message },
    /// Close the connection (after writing what was queued on it).
    Close { conn: ConnId },
    /// The session reached Established on `conn`; encode/decode with `codec` from now on.
    Established {
        conn: ConnId,
        codec: SessionCodec,
        peer: Open,
        families: Vec<Family>,
    },
    /// An UPDATE arrived on the established session.
    Update { update: crate::wire::Update },
    /// The peer asked for a ROUTE-REFRESH of a family (RFC 2918 §4): re-send the Adj-RIB-Out.
    RouteRefresh { family: Family },
    /// The state changed; `reason` says why in a short lowercase line.
    StateChange {
        from: State,
        to: State,
        reason: String,
    },
    /// A NOTIFICATION was received from the peer.
    NotificationReceived(Notification),
}

/// One BGP session to one peer.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
}

impl Session {
    pub fn new(cfg: SessionConfig) -> Session {
        Session { cfg }
    }

    /// Feeds one input at time `now`.
    pub fn process(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let _ = (now, input, &self.cfg);
        todo!()
    }

    /// The earliest timer deadline, if any timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }

    /// Current RFC 4271 state.
    pub fn state(&self) -> State {
        todo!()
    }

    /// Negotiated hold time in seconds, once Established.
    pub fn negotiated_hold_time(&self) -> Option<u16> {
        todo!()
    }
}
