//! The BGP session finite state machine of RFC 4271 §8, as a sans-IO core.
//!
//! [`Session::process`] takes the current time and one [`Input`] and returns what the caller
//! must do ([`Output`]s: connect, send, close, report). Timers are data: the core keeps their
//! deadlines, [`Session::poll_timeout`] says when it next needs [`Input::Timeout`]. The core does
//! no I/O and reads no clock, so every transition is tested on simulated time.
//!
//! Connection collisions (RFC 4271 §6.8) are handled here: the core tracks up to two TCP
//! connections to the peer, identified by [`ConnId`]s. The core names the outbound connections
//! it asks for ([`Output::Connect`]); the caller names the inbound ones it accepts, preferably
//! with [`Session::alloc_conn_id`] so that the two never clash.
//!
//! Simplifications against the full RFC 4271 §8.2.2 FSM, all deliberate:
//! - no DelayOpen, no DampPeerOscillations: after an error the session waits a fixed
//!   `idle_hold` in Idle and restarts by itself (only [`Input::Stop`] keeps it down);
//! - losing the only connection in any state goes to Idle (never back to Active);
//! - an error on one of two colliding connections drops that connection only, the other goes on.
//!
//! This module must not do I/O, read the clock, encode or decode bytes, or panic on any input
//! sequence.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::wire::{
    notif, AddPathMode, Capabilities, DecodeError, Family, Message, Notification, Open,
    SessionCodec,
};

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
    /// The Graceful Restart capability we send (RFC 4724), if any; its families are the
    /// negotiable ones of `families`.
    pub graceful_restart: Option<crate::wire::GracefulRestart>,
}

/// Identifies one TCP connection to the peer: chosen by the core for outbound connections
/// ([`Output::Connect`]), by the caller for inbound ones (see [`Session::alloc_conn_id`]).
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

/// HoldTimer while waiting for the peer's OPEN: RFC 4271 §8.2.2 suggests "a large value",
/// 4 minutes.
pub const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);

/// The timers the core keeps (RFC 4271 §8.2.2 / §10), by what they belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    ConnectRetry,
    IdleHold,
    Hold(ConnId),
    Keepalive(ConnId),
}

/// What the OPEN exchange on one connection settled.
#[derive(Debug, Clone)]
struct Negotiated {
    peer: Open,
    /// Negotiated hold time in seconds; 0 = no HoldTimer and no KeepaliveTimer.
    hold: u16,
    /// Keepalive interval in seconds; 0 = no KeepaliveTimer.
    keepalive: u16,
    codec: SessionCodec,
    families: Vec<Family>,
}

/// One TCP connection to the peer and its own per-connection FSM state: `Connect` while an
/// outbound attempt is pending, then `OpenSent`, `OpenConfirm`, `Established`.
#[derive(Debug)]
struct Conn {
    id: ConnId,
    outbound: bool,
    state: State,
    hold: Option<Instant>,
    keepalive: Option<Instant>,
    negotiated: Option<Negotiated>,
}

impl Conn {
    /// Past the TCP handshake: we have sent our OPEN on it.
    fn open_sent(&self) -> bool {
        !matches!(self.state, State::Idle | State::Connect | State::Active)
    }
}

/// The deadline `secs` seconds after `now`; none for 0 (timer not used, RFC 4271 §4.2) or
/// past the end of `Instant`. All deadlines use checked arithmetic: no input makes the core panic.
fn secs_after(now: Instant, secs: u16) -> Option<Instant> {
    if secs == 0 {
        return None;
    }
    now.checked_add(Duration::from_secs(secs.into()))
}

fn rank(s: State) -> u8 {
    match s {
        State::Idle => 0,
        State::Active => 1,
        State::Connect => 2,
        State::OpenSent => 3,
        State::OpenConfirm => 4,
        State::Established => 5,
    }
}

fn lower(s: State) -> String {
    s.to_string().to_ascii_lowercase()
}

fn message_kind(m: &Message) -> &'static str {
    match m {
        Message::Open(_) => "open",
        Message::Update(_) => "update",
        Message::Notification(_) => "notification",
        Message::Keepalive => "keepalive",
        Message::RouteRefresh(_) => "route-refresh",
    }
}

fn notification(code: u8, subcode: u8) -> Notification {
    Notification {
        code,
        subcode,
        data: Vec::new(),
    }
}

/// One BGP session to one peer.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    /// Started and not fallen back to Idle.
    running: bool,
    /// At most two: the collision pair of RFC 4271 §6.8.
    conns: Vec<Conn>,
    next_id: u64,
    connect_retry: Option<Instant>,
    idle_hold: Option<Instant>,
    /// Consecutive sessions ended by a maximum-prefix Cease: each doubles the idle hold
    /// before the next attempt (a peer that floods is not reconnected to at full speed).
    max_prefix_strikes: u32,
    /// The state last reported in [`Output::StateChange`].
    state: State,
}

/// The idle hold after maximum-prefix shutdowns grows to this at most.
pub const MAX_PREFIX_BACKOFF_CAP: Duration = Duration::from_secs(600);

impl Session {
    pub fn new(cfg: SessionConfig) -> Session {
        Session {
            cfg,
            running: false,
            conns: Vec::new(),
            next_id: 1,
            connect_retry: None,
            idle_hold: None,
            max_prefix_strikes: 0,
            state: State::Idle,
        }
    }

    /// Feeds one input at time `now`.
    pub fn process(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Start => self.start(now, "start", &mut out),
            Input::Stop { subcode, data } => {
                self.shutdown(now, subcode, data, false, "stopped", &mut out)
            }
            Input::Cease { subcode, data } => {
                if subcode == notif::CEASE_MAX_PREFIXES {
                    self.max_prefix_strikes = self.max_prefix_strikes.saturating_add(1);
                } else {
                    self.max_prefix_strikes = 0;
                }
                let reason = format!("cease {}/{}", notif::CEASE, subcode);
                self.shutdown(now, subcode, data, true, &reason, &mut out)
            }
            Input::TcpConnected { conn, outbound } => {
                self.tcp_connected(now, conn, outbound, &mut out)
            }
            Input::TcpClosed { conn } => self.tcp_closed(now, conn, &mut out),
            Input::Message { conn, msg } => self.message(now, conn, msg, &mut out),
            Input::DecodeError { conn, err } => {
                if self.conn(conn).is_some_and(Conn::open_sent) {
                    let reason = format!("decode error {}/{}", err.code, err.subcode);
                    self.drop_conn(now, conn, Some(err.notification()), true, &reason, &mut out);
                }
            }
            Input::Timeout => self.timeout(now, &mut out),
        }
        out
    }

    /// The earliest timer deadline, if any timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers().map(|(at, _)| at).min()
    }

    /// Current RFC 4271 state: Idle when not running, else the most advanced state of the
    /// connections (Active when a passive session waits without any).
    pub fn state(&self) -> State {
        self.state
    }

    /// Negotiated hold time in seconds, once Established.
    pub fn negotiated_hold_time(&self) -> Option<u16> {
        self.conns
            .iter()
            .find(|c| c.state == State::Established)
            .and_then(|c| c.negotiated.as_ref())
            .map(|n| n.hold)
    }

    /// How many connections the core tracks (pending outbound attempts included); at most two,
    /// the collision pair. For the fuzz targets' invariants (`fuzz/`).
    #[doc(hidden)]
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// A fresh connection id for an inbound connection, never equal to one the core has used or
    /// will use for its own outbound attempts. (Ids the caller picks itself also work: the core
    /// skips past them when it allocates.)
    pub fn alloc_conn_id(&mut self) -> ConnId {
        let id = ConnId(self.next_id);
        self.next_id = self.next_id.saturating_add(1);
        id
    }

    // ----- state bookkeeping -----

    fn computed_state(&self) -> State {
        if !self.running {
            return State::Idle;
        }
        self.conns
            .iter()
            .map(|c| c.state)
            .max_by_key(|s| rank(*s))
            .unwrap_or(State::Active)
    }

    /// Emits a [`Output::StateChange`] if the state moved since the last report.
    fn sync_state(&mut self, reason: &str, out: &mut Vec<Output>) {
        let to = self.computed_state();
        if to != self.state {
            out.push(Output::StateChange {
                from: self.state,
                to,
                reason: reason.to_string(),
            });
            self.state = to;
        }
    }

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns.iter().find(|c| c.id == id)
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.iter_mut().find(|c| c.id == id)
    }

    fn timers(&self) -> impl Iterator<Item = (Instant, Timer)> + '_ {
        let session = [
            self.connect_retry.map(|at| (at, Timer::ConnectRetry)),
            self.idle_hold.map(|at| (at, Timer::IdleHold)),
        ];
        let conns = self.conns.iter().flat_map(|c| {
            [
                c.hold.map(|at| (at, Timer::Hold(c.id))),
                c.keepalive.map(|at| (at, Timer::Keepalive(c.id))),
            ]
        });
        session.into_iter().chain(conns).flatten()
    }

    fn deadline(&self, t: Timer) -> Option<Instant> {
        match t {
            Timer::ConnectRetry => self.connect_retry,
            Timer::IdleHold => self.idle_hold,
            Timer::Hold(id) => self.conn(id).and_then(|c| c.hold),
            Timer::Keepalive(id) => self.conn(id).and_then(|c| c.keepalive),
        }
    }

    /// Falls to Idle (all connections already gone); with `restart`, arms the IdleHoldTimer
    /// whose expiry acts like a new Start.
    fn go_idle(&mut self, now: Instant, restart: bool) {
        self.running = false;
        self.conns.clear();
        self.connect_retry = None;
        self.idle_hold = if restart {
            now.checked_add(self.idle_hold_delay())
        } else {
            None
        };
    }

    /// The IdleHoldTimer's duration: `idle_hold`, doubled for each maximum-prefix shutdown in
    /// a row, at most [`MAX_PREFIX_BACKOFF_CAP`] (or `idle_hold` if that is longer).
    pub fn idle_hold_delay(&self) -> Duration {
        let base = self.cfg.idle_hold;
        if self.max_prefix_strikes == 0 {
            return base;
        }
        let factor = 1u32 << self.max_prefix_strikes.min(16);
        base.checked_mul(factor)
            .unwrap_or(MAX_PREFIX_BACKOFF_CAP)
            .min(MAX_PREFIX_BACKOFF_CAP)
            .max(base)
    }

    /// Removes a connection, optionally sending a NOTIFICATION on it and closing it; the session
    /// falls to Idle (with automatic restart) if it was the last one.
    fn drop_conn(
        &mut self,
        now: Instant,
        id: ConnId,
        notif: Option<Notification>,
        close: bool,
        reason: &str,
        out: &mut Vec<Output>,
    ) {
        let Some(pos) = self.conns.iter().position(|c| c.id == id) else {
            return;
        };
        self.conns.remove(pos);
        if let Some(n) = notif {
            out.push(Output::Send {
                conn: id,
                msg: Message::Notification(n),
            });
        }
        if close {
            out.push(Output::Close { conn: id });
        }
        if self.conns.is_empty() && self.running {
            self.go_idle(now, true);
        }
        self.sync_state(reason, out);
    }

    // ----- events -----

    /// Event 1 ManualStart / 4–5 passive start, and IdleHoldTimer expiry: RFC 4271 §8.2.2 Idle.
    fn start(&mut self, now: Instant, reason: &str, out: &mut Vec<Output>) {
        if self.running {
            return;
        }
        self.running = true;
        self.idle_hold = None;
        self.connect_retry = now.checked_add(self.cfg.connect_retry);
        if !self.cfg.passive {
            self.initiate(out);
        }
        self.sync_state(reason, out);
    }

    /// Asks the caller for a new outbound connection (state Connect).
    fn initiate(&mut self, out: &mut Vec<Output>) {
        let id = self.alloc_conn_id();
        self.conns.push(Conn {
            id,
            outbound: true,
            state: State::Connect,
            hold: None,
            keepalive: None,
            negotiated: None,
        });
        out.push(Output::Connect { conn: id });
    }

    /// Event 2 ManualStop (`restart == false`) or a local Cease (`restart == true`): Cease
    /// NOTIFICATION on every connection that has sent its OPEN (RFC 4486), close everything, Idle.
    fn shutdown(
        &mut self,
        now: Instant,
        subcode: u8,
        data: Vec<u8>,
        restart: bool,
        reason: &str,
        out: &mut Vec<Output>,
    ) {
        if !self.running {
            if !restart {
                // A Stop while waiting for the automatic restart cancels it.
                self.idle_hold = None;
            }
            return;
        }
        for c in std::mem::take(&mut self.conns) {
            if c.open_sent() {
                let n = Notification {
                    code: notif::CEASE,
                    subcode,
                    data: data.clone(),
                };
                out.push(Output::Send {
                    conn: c.id,
                    msg: Message::Notification(n),
                });
            }
            out.push(Output::Close { conn: c.id });
        }
        self.go_idle(now, restart);
        self.sync_state(reason, out);
    }

    /// Events 16/17: a TCP connection is up. Sends our OPEN (RFC 4271 §8.2.2 Connect/Active),
    /// or refuses the connection.
    fn tcp_connected(&mut self, now: Instant, id: ConnId, outbound: bool, out: &mut Vec<Output>) {
        if id.0 >= self.next_id {
            self.next_id = id.0.saturating_add(1);
        }
        if outbound {
            match self.conn(id) {
                Some(c) if c.outbound && c.state == State::Connect => {
                    self.open_connection(now, id, out);
                    self.sync_state("tcp connection established", out);
                }
                Some(_) => {}
                // An attempt we already gave up on: make sure it does not linger.
                None => out.push(Output::Close { conn: id }),
            }
            return;
        }
        if self.conn(id).is_some() {
            return;
        }
        // RFC 4271 §8.2.2 Idle: incoming connections are refused.
        if !self.running {
            out.push(Output::Close { conn: id });
            return;
        }
        // RFC 4271 §6.8: a collision with an Established connection closes the new one; we
        // also keep a single inbound connection (a second one is not a collision we resolve).
        // RFC 4486 §4 Connection Rejected says why.
        if self
            .conns
            .iter()
            .any(|c| c.state == State::Established || !c.outbound)
        {
            let n = notification(notif::CEASE, notif::CEASE_CONNECTION_REJECTED);
            out.push(Output::Send {
                conn: id,
                msg: Message::Notification(n),
            });
            out.push(Output::Close { conn: id });
            return;
        }
        // A pending outbound attempt is abandoned in favour of the connection that is up.
        let pending: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|c| c.state == State::Connect)
            .map(|c| c.id)
            .collect();
        for p in pending {
            self.conns.retain(|c| c.id != p);
            out.push(Output::Close { conn: p });
        }
        self.conns.push(Conn {
            id,
            outbound: false,
            state: State::Connect,
            hold: None,
            keepalive: None,
            negotiated: None,
        });
        self.open_connection(now, id, out);
        self.sync_state("tcp connection accepted", out);
    }

    /// Sends our OPEN on a connection that is up: OpenSent, HoldTimer at the large value,
    /// ConnectRetryTimer stopped (RFC 4271 §8.2.2 Connect, Event 16/17).
    fn open_connection(&mut self, now: Instant, id: ConnId, out: &mut Vec<Output>) {
        let open = self.our_open();
        if let Some(c) = self.conn_mut(id) {
            c.state = State::OpenSent;
            c.hold = now.checked_add(OPEN_HOLD_TIME);
        }
        self.connect_retry = None;
        out.push(Output::Send {
            conn: id,
            msg: Message::Open(open),
        });
    }

    /// Event 18 TcpConnectionFails.
    fn tcp_closed(&mut self, now: Instant, id: ConnId, out: &mut Vec<Output>) {
        let Some(c) = self.conn(id) else { return };
        let reason = if c.open_sent() {
            "tcp connection closed"
        } else {
            "tcp connection failed"
        };
        self.drop_conn(now, id, None, false, reason, out);
    }

    /// Events 19–28: a message on a connection.
    fn message(&mut self, now: Instant, id: ConnId, msg: Message, out: &mut Vec<Output>) {
        let Some(c) = self.conn(id) else { return };
        let state = c.state;
        match (state, msg) {
            (State::Idle | State::Connect | State::Active, _) => {}
            // Events 24/25: NOTIFICATION in any state drops the connection.
            (_, Message::Notification(n)) => {
                let reason = format!("notification received {}/{}", n.code, n.subcode);
                out.push(Output::NotificationReceived(n));
                self.drop_conn(now, id, None, true, &reason, out);
            }
            // Event 19 BGPOpen in OpenSent.
            (State::OpenSent, Message::Open(open)) => self.receive_open(now, id, open, out),
            // Event 26 KeepAliveMsg in OpenConfirm.
            (State::OpenConfirm, Message::Keepalive) => self.establish(now, id, out),
            // Events 26/27 in Established restart the HoldTimer (RFC 4271 §8.2.2). We also
            // count a ROUTE-REFRESH as a sign of life.
            (State::Established, Message::Keepalive) => self.restart_hold(now, id),
            (State::Established, Message::Update(update)) => {
                self.restart_hold(now, id);
                out.push(Output::Update { update });
            }
            (State::Established, Message::RouteRefresh(rr)) => {
                self.restart_hold(now, id);
                // RFC 2918 §4: a refresh for a family not negotiated is ignored.
                let negotiated = self
                    .conn(id)
                    .and_then(|c| c.negotiated.as_ref())
                    .is_some_and(|n| n.families.contains(&rr.family));
                if negotiated {
                    out.push(Output::RouteRefresh { family: rr.family });
                }
            }
            // Anything else: Finite State Machine Error (RFC 4271 §6.6) with the RFC 6608
            // subcode naming the state.
            (state, msg) => {
                let subcode = match state {
                    State::OpenSent => 1,
                    State::OpenConfirm => 2,
                    _ => 3,
                };
                let reason = format!(
                    "fsm error: unexpected {} in {}",
                    message_kind(&msg),
                    lower(state)
                );
                let n = notification(notif::FSM, subcode);
                self.drop_conn(now, id, Some(n), true, &reason, out);
            }
        }
    }

    fn restart_hold(&mut self, now: Instant, id: ConnId) {
        if let Some(c) = self.conn_mut(id) {
            let hold = c.negotiated.as_ref().map_or(0, |n| n.hold);
            if hold > 0 {
                c.hold = secs_after(now, hold);
            }
        }
    }

    /// Event 19 in OpenSent: check the OPEN (RFC 4271 §6.2), resolve a collision (§6.8), send
    /// KEEPALIVE and go OpenConfirm with the negotiated timers (§8.2.2 OpenSent).
    fn receive_open(&mut self, now: Instant, id: ConnId, open: Open, out: &mut Vec<Output>) {
        if let Err((subcode, why)) = self.check_open(&open) {
            let reason = format!("open rejected: {why}");
            self.drop_conn(
                now,
                id,
                Some(notification(notif::OPEN, subcode)),
                true,
                &reason,
                out,
            );
            return;
        }
        // RFC 4271 §6.8: the other connection has seen an OPEN too: keep one of the two.
        let other = self
            .conns
            .iter()
            .find(|c| c.id != id && matches!(c.state, State::OpenConfirm | State::Established))
            .map(|c| (c.id, c.outbound, c.state));
        if let Some((other_id, other_outbound, other_state)) = other {
            let this_outbound = self.conn(id).is_some_and(|c| c.outbound);
            let loser = if other_state == State::Established || other_outbound == this_outbound {
                id
            } else if self.local_loses(&open) == this_outbound {
                // Either we lose and this is the connection we initiated, or we win and this is
                // the one the peer initiated.
                id
            } else {
                other_id
            };
            let n = notification(notif::CEASE, notif::CEASE_COLLISION_RESOLUTION);
            if loser == id {
                self.drop_conn(now, id, Some(n), true, "connection collision resolved", out);
                return;
            }
            // The surviving connection moves on to OpenConfirm below: no state change to report
            // in between.
            self.conns.retain(|c| c.id != other_id);
            out.push(Output::Send {
                conn: other_id,
                msg: Message::Notification(n),
            });
            out.push(Output::Close { conn: other_id });
        }
        let n = self.negotiate(open);
        let hold = n.hold;
        let keepalive = n.keepalive;
        if let Some(c) = self.conn_mut(id) {
            c.state = State::OpenConfirm;
            c.hold = secs_after(now, hold);
            c.keepalive = secs_after(now, keepalive);
            c.negotiated = Some(n);
        }
        out.push(Output::Send {
            conn: id,
            msg: Message::Keepalive,
        });
        self.sync_state("open received", out);
    }

    /// RFC 4271 §6.8: the connection initiated by the speaker with the higher BGP Identifier
    /// survives. Equal identifiers (allowed between ASes, RFC 6286 §2.3): the larger AS wins.
    fn local_loses(&self, peer: &Open) -> bool {
        let local = u32::from(self.cfg.router_id);
        let remote = u32::from(peer.bgp_id);
        local < remote || (local == remote && self.cfg.local_as < peer.asn)
    }

    /// RFC 4271 §6.2 OPEN message error handling, for what the decoder cannot know.
    fn check_open(&self, open: &Open) -> Result<(), (u8, &'static str)> {
        if open.asn != self.cfg.remote_as {
            return Err((notif::OPEN_BAD_PEER_AS, "bad peer as"));
        }
        let id = open.bgp_id;
        let ibgp = self.cfg.local_as == self.cfg.remote_as;
        if id.is_unspecified()
            || id.is_multicast()
            || id.is_broadcast()
            || (ibgp && id == self.cfg.router_id)
        {
            return Err((notif::OPEN_BAD_BGP_ID, "bad bgp identifier"));
        }
        if open.hold_time == 1 || open.hold_time == 2 {
            return Err((notif::OPEN_UNACCEPTABLE_HOLD_TIME, "unacceptable hold time"));
        }
        Ok(())
    }

    /// Families we speak: the configured ones, IPv4 unicast if none (RFC 4760 §8).
    fn our_families(&self) -> Vec<Family> {
        let mut fams: Vec<Family> = Vec::new();
        for f in &self.cfg.families {
            if !fams.contains(f) {
                fams.push(*f);
            }
        }
        if fams.is_empty() {
            fams.push(Family::Ipv4Unicast);
        }
        fams
    }

    /// The OPEN we send (RFC 4271 §4.2) with our capabilities (RFC 5492): Multiprotocol
    /// (RFC 4760), Route Refresh (RFC 2918), 4-octet AS (RFC 6793), ADD-PATH (RFC 7911) for the
    /// configured families that offer send and/or receive.
    fn our_open(&self) -> Open {
        let families = self.our_families();
        let add_path = families
            .iter()
            .map(|f| {
                let mode = AddPathMode {
                    receive: self.cfg.add_path_receive.contains(f),
                    send: self.cfg.add_path_send.contains(f),
                };
                (*f, mode)
            })
            .filter(|(_, m)| m.send || m.receive)
            .collect();
        Open {
            asn: self.cfg.local_as,
            hold_time: self.cfg.hold_time,
            bgp_id: self.cfg.router_id,
            capabilities: Capabilities {
                multiprotocol: self.cfg.families.iter().fold(Vec::new(), |mut v, f| {
                    if !v.contains(f) {
                        v.push(*f);
                    }
                    v
                }),
                route_refresh: true,
                four_octet_as: Some(self.cfg.local_as),
                add_path,
                graceful_restart: self.cfg.graceful_restart.clone(),
                other: Vec::new(),
            },
        }
    }

    /// What the two OPENs agree on: hold time (RFC 4271 §4.2: the smaller one), keepalive
    /// (§10: a third of it, or the configured value if smaller), families (RFC 4760 §8: a peer
    /// without Multiprotocol capabilities speaks IPv4 unicast), 4-octet AS (RFC 6793 §3) and
    /// ADD-PATH directions (RFC 7911 §4), within the common families.
    fn negotiate(&self, peer: Open) -> Negotiated {
        let hold = self.cfg.hold_time.min(peer.hold_time);
        let keepalive = if hold == 0 {
            0
        } else {
            self.cfg.keepalive.map_or(hold / 3, |k| k.min(hold / 3))
        };
        let caps = &peer.capabilities;
        let peer_families = if caps.multiprotocol.is_empty() {
            vec![Family::Ipv4Unicast]
        } else {
            caps.multiprotocol.clone()
        };
        let families: Vec<Family> = self
            .our_families()
            .into_iter()
            .filter(|f| peer_families.contains(f))
            .collect();
        let peer_mode = |f: &Family| {
            caps.add_path
                .iter()
                .find(|(pf, _)| pf == f)
                .map(|(_, m)| *m)
                .unwrap_or_default()
        };
        let codec = SessionCodec {
            asn4: caps.four_octet_as.is_some(),
            add_path_send: families
                .iter()
                .filter(|f| self.cfg.add_path_send.contains(f) && peer_mode(f).receive)
                .copied()
                .collect(),
            add_path_receive: families
                .iter()
                .filter(|f| self.cfg.add_path_receive.contains(f) && peer_mode(f).send)
                .copied()
                .collect(),
            ebgp: self.cfg.local_as != self.cfg.remote_as,
        };
        Negotiated {
            peer,
            hold,
            keepalive,
            codec,
            families,
        }
    }

    /// Event 26 in OpenConfirm: Established (RFC 4271 §8.2.2). Any other connection loses
    /// (§6.8: a collision with an Established connection closes the other one).
    fn establish(&mut self, now: Instant, id: ConnId, out: &mut Vec<Output>) {
        let others: Vec<(ConnId, bool)> = self
            .conns
            .iter()
            .filter(|c| c.id != id)
            .map(|c| (c.id, c.open_sent()))
            .collect();
        for (other, open_sent) in others {
            self.conns.retain(|c| c.id != other);
            if open_sent {
                let n = notification(notif::CEASE, notif::CEASE_COLLISION_RESOLUTION);
                out.push(Output::Send {
                    conn: other,
                    msg: Message::Notification(n),
                });
            }
            out.push(Output::Close { conn: other });
        }
        self.connect_retry = None;
        let Some(c) = self.conn_mut(id) else { return };
        let Some(n) = c.negotiated.clone() else {
            return;
        };
        c.state = State::Established;
        self.restart_hold(now, id);
        self.sync_state("keepalive received", out);
        out.push(Output::Established {
            conn: id,
            codec: n.codec,
            peer: n.peer,
            families: n.families,
        });
    }

    /// Input::Timeout: fires each timer expired at `now` once, earliest first.
    fn timeout(&mut self, now: Instant, out: &mut Vec<Output>) {
        let mut expired: Vec<(Instant, Timer)> =
            self.timers().filter(|(at, _)| *at <= now).collect();
        expired.sort_by_key(|(at, _)| *at);
        for (_, timer) in expired {
            // An earlier timer may have stopped or moved this one.
            match self.deadline(timer) {
                Some(at) if at <= now => {}
                _ => continue,
            }
            match timer {
                Timer::ConnectRetry => self.connect_retry_expired(now, out),
                Timer::IdleHold => {
                    self.idle_hold = None;
                    self.start(now, "idle hold timer expired", out);
                }
                // Event 10 HoldTimer_Expires: NOTIFICATION Hold Timer Expired (RFC 4271 §6.5).
                Timer::Hold(id) => {
                    let n = notification(notif::HOLD_TIMER_EXPIRED, 0);
                    self.drop_conn(now, id, Some(n), true, "hold timer expired", out);
                }
                // Event 11 KeepaliveTimer_Expires: send KEEPALIVE, restart the timer.
                Timer::Keepalive(id) => {
                    if let Some(c) = self.conn_mut(id) {
                        let ka = c.negotiated.as_ref().map_or(0, |n| n.keepalive);
                        c.keepalive = secs_after(now, ka);
                        out.push(Output::Send {
                            conn: id,
                            msg: Message::Keepalive,
                        });
                    }
                }
            }
        }
    }

    /// Event 9 ConnectRetryTimer_Expires (RFC 4271 §8.2.2 Connect / Active): drop the pending
    /// attempt and try again; a passive session keeps waiting.
    fn connect_retry_expired(&mut self, now: Instant, out: &mut Vec<Output>) {
        if !self.running || self.conns.iter().any(Conn::open_sent) {
            self.connect_retry = None;
            return;
        }
        self.connect_retry = now.checked_add(self.cfg.connect_retry);
        if self.cfg.passive {
            return;
        }
        for c in std::mem::take(&mut self.conns) {
            out.push(Output::Close { conn: c.id });
        }
        self.initiate(out);
        self.sync_state("connect retry timer expired", out);
    }
}

#[cfg(test)]
mod tests;
