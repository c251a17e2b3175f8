//! One BFD session in Asynchronous mode (RFC 5880 §6.1–§6.8), as a sans-IO core.
//!
//! [`Session::process`] takes the current time and one [`Input`] and returns [`Output`]s: packets
//! to send (already signed when authentication is configured; the caller encodes them with
//! [`crate::bfd::packet::encode`]) and state changes. Timers are data: the core keeps the
//! transmit and detection deadlines, [`Session::poll_timeout`] says when it next needs
//! [`Input::Timer`]. The core does no I/O and reads no clock.
//!
//! Rules, by RFC 5880 section:
//! - §6.2 states AdminDown/Down/Init/Up, §6.8.6 the reception transitions (Down + peer Down →
//!   Init, Down + peer Init → Up, Init + peer Init/Up → Up, Up + peer Down → Down with diag 3,
//!   peer AdminDown → Down with diag 3 unless already Down). A peer that stays in AdminDown
//!   keeps the session Down: it comes back only when the peer sends Down again.
//! - §6.8.1 state variables (bfd.RemoteDiscr is zeroed when a Detection Time passes in silence;
//!   bfd.AuthSeqKnown when twice the Detection Time passes).
//! - §6.8.3 while not Up, bfd.DesiredMinTxInterval is advertised and used as at least 1 s;
//!   changing the advertised intervals while Up starts a Poll Sequence (P bit until a packet with
//!   F arrives). Until the Final, a larger DesiredMinTx is not used for sending yet and a smaller
//!   RequiredMinRx is not used for detection yet. A received P is answered at once with F.
//! - §6.8.4 Detection Time = the peer's Detect Mult × max(our RequiredMinRx, the peer's
//!   DesiredMinTx); it only takes the session down in Init or Up (diag 1).
//! - §6.8.7 periodic transmission every max(DesiredMinTx, peer's RequiredMinRx), less a jitter
//!   of 0–25 % (10–25 % when Detect Mult is 1); none while the peer's RequiredMinRx is 0.
//!   Jitter comes from a small deterministic generator seeded by [`SessionConfig::jitter_seed`],
//!   so runs are reproducible; the caller seeds it randomly in production.
//! - Besides the periodic packets, the core sends one at once on `Start`, on every state change
//!   and on a Poll Sequence start (common practice, as FRR's bfdd and BIRD do: the peer learns
//!   the change without waiting up to a second), and a Final at once on a Poll.
//! - §6.7 authentication is checked here, not by the caller: [`Input::Received`] takes the
//!   decoded packet, and the session checks the A bit against its configuration, the key, the
//!   digest (recomputed over the re-encoded packet, which is byte for byte what was received:
//!   [`crate::bfd::packet::decode`] keeps every covered byte) and the sequence number.
//!   bfd.XmitAuthSeq starts from the jitter generator and is incremented on every packet sent
//!   (the RFC requires it for the meticulous types and allows it for the others).
//!
//! Not implemented: Demand mode (the D bit is never set, a peer's D bit is recorded and
//! otherwise ignored), the Echo function (Required Min Echo RX is sent as 0), the passive role
//! (the session always transmits once started).
//!
//! This module must not do I/O, read the clock, or panic on any input sequence: all deadline
//! arithmetic is checked and every interval is clamped into what the wire can carry.

use std::time::{Duration, Instant};

use super::packet::{self, AuthKey, ControlPacket, Diag, PacketError, ReplayWindow, State};

/// RFC 5880 §6.8.3: the least DesiredMinTxInterval while the session is not Up.
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// Default DesiredMinTxInterval: 300 ms, FRR bfdd's default, so a session with an FRR peer
/// on defaults negotiates to the same timers both ways.
pub const DEFAULT_DESIRED_MIN_TX: Duration = Duration::from_millis(300);
/// Default RequiredMinRxInterval: 300 ms (FRR bfdd's default).
pub const DEFAULT_REQUIRED_MIN_RX: Duration = Duration::from_millis(300);
/// Default Detect Mult: 3, so a peer on the same defaults is declared down after 900 ms, under
/// a second. 100 ms × 3 would detect faster but false-positive in a userspace daemon sharing a
/// small machine with the load balancer's data path; operators can lower it per peer.
pub const DEFAULT_DETECT_MULT: u8 = 3;

/// Errors of the session layer: why a received packet was discarded (RFC 5880 §6.8.6) or a
/// configuration refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("your discriminator {received} is not ours ({ours})")]
    YourDiscriminator { received: u32, ours: u32 },
    #[error("authentication section present but none is configured")]
    UnexpectedAuth,
    #[error("authentication configured but the packet has none")]
    MissingAuth,
    #[error("authentication failed: {0}")]
    Auth(#[source] PacketError),
    #[error("local discriminator must be nonzero")]
    ZeroLocalDiscriminator,
    #[error("detect mult must be nonzero")]
    ZeroDetectMult,
    #[error("desired min tx must be at least 1 µs and at most u32::MAX µs")]
    DesiredMinTx,
    #[error("required min rx must be at most u32::MAX µs")]
    RequiredMinRx,
}

/// The timer parameters a session advertises (RFC 5880 §6.8.1 bfd.DesiredMinTxInterval,
/// bfd.RequiredMinRxInterval, bfd.DetectMult).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    pub desired_min_tx: Duration,
    /// Zero asks the peer not to send periodic packets at all (RFC 5880 §6.8.1).
    pub required_min_rx: Duration,
    pub detect_mult: u8,
}

impl Default for Intervals {
    fn default() -> Intervals {
        Intervals {
            desired_min_tx: DEFAULT_DESIRED_MIN_TX,
            required_min_rx: DEFAULT_REQUIRED_MIN_RX,
            detect_mult: DEFAULT_DETECT_MULT,
        }
    }
}

impl Intervals {
    /// Whether the values fit the wire: Detect Mult ≠ 0, 1 µs ≤ DesiredMinTx (RFC 5880 §4.1:
    /// zero is reserved), both intervals ≤ u32::MAX µs.
    pub fn validate(&self) -> Result<(), SessionError> {
        if self.detect_mult == 0 {
            return Err(SessionError::ZeroDetectMult);
        }
        let tx = self.desired_min_tx.as_micros();
        if tx == 0 || tx > u128::from(u32::MAX) {
            return Err(SessionError::DesiredMinTx);
        }
        if self.required_min_rx.as_micros() > u128::from(u32::MAX) {
            return Err(SessionError::RequiredMinRx);
        }
        Ok(())
    }

    /// What the session uses when given values that do not validate: each clamped into range.
    fn sanitized(self) -> (u32, u32, u8) {
        (
            us(self.desired_min_tx).max(1),
            us(self.required_min_rx),
            self.detect_mult.max(1),
        )
    }
}

/// Microseconds, saturating at the wire's u32.
fn us(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn dur(us: u32) -> Duration {
    Duration::from_micros(u64::from(us))
}

/// One session's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// bfd.LocalDiscr: chosen by the caller, nonzero and unique among its sessions (it
    /// demultiplexes received packets by it).
    pub local_discriminator: u32,
    pub intervals: Intervals,
    /// Authentication (RFC 5880 §6.7); `None`: packets must not carry the A bit.
    pub auth: Option<AuthKey>,
    /// Seed of the jitter generator and of the initial bfd.XmitAuthSeq (RFC 5880 §6.8.1 wants
    /// the latter random). Give it a random value in production: with a fixed seed, a restarted
    /// session repeats its sequence numbers and a peer using meticulous authentication rejects
    /// them until it forgets the old ones (twice the Detection Time). [`super::driver`] does.
    pub jitter_seed: u64,
}

impl SessionConfig {
    /// A configuration with the default intervals and no authentication; the jitter seed is
    /// the discriminator (deterministic, see [`SessionConfig::jitter_seed`]).
    pub fn new(local_discriminator: u32) -> SessionConfig {
        SessionConfig {
            local_discriminator,
            intervals: Intervals::default(),
            auth: None,
            jitter_seed: u64::from(local_discriminator),
        }
    }

    pub fn validate(&self) -> Result<(), SessionError> {
        if self.local_discriminator == 0 {
            return Err(SessionError::ZeroLocalDiscriminator);
        }
        self.intervals.validate()
    }
}

/// Events the caller feeds the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Begin: the session enters Down (or stays AdminDown) and starts transmitting. Packets
    /// received before are ignored.
    Start,
    /// Time has reached [`Session::poll_timeout`]: fire every expired timer (an early call is
    /// harmless).
    Timer,
    /// A packet for this session, decoded (and so checked alone) by the caller; authentication
    /// is checked here.
    Received(ControlPacket),
    /// RFC 5880 §6.8.16: `true` takes the session to AdminDown (diag 7) and keeps it there;
    /// `false` releases it to Down.
    AdminDown(bool),
    /// New timer parameters (RFC 5880 §6.8.3); values out of range are clamped (see
    /// [`Intervals::validate`]).
    SetIntervals(Intervals),
}

/// What the caller must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Encode and send this packet to the peer.
    Send(ControlPacket),
    /// The session state changed. `from == Up` and `to != Up` is the event RFC 5882 ties to the
    /// client (BGP): the forwarding path to the peer is down, unless [`Session::remote_state`]
    /// is AdminDown (the peer disabled BFD; see the [`crate::bfd`] docs).
    StateChanged { from: State, to: State, diag: Diag },
    /// A received packet was discarded (RFC 5880 §6.8.6); for logs and counters.
    Discarded(SessionError),
}

/// A small deterministic generator (SplitMix64): jitter and the initial sequence number.
#[derive(Debug, Clone)]
pub(super) struct SplitMix(pub(super) u64);

impl SplitMix {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The interval values a Poll Sequence has not yet confirmed (RFC 5880 §6.8.3).
#[derive(Debug, Clone, Copy)]
struct Poll {
    /// DesiredMinTx used for sending until the Final (the old one if it was increased).
    tx_in_use: u32,
    /// RequiredMinRx used for detection until the Final (the old one if it was reduced).
    rx_in_use: u32,
}

/// One BFD session.
#[derive(Debug)]
pub struct Session {
    local_discr: u32,
    auth: Option<AuthKey>,
    started: bool,
    admin_down: bool,
    /// bfd.SessionState.
    state: State,
    /// bfd.RemoteSessionState.
    remote_state: State,
    /// bfd.RemoteDiscr.
    remote_discr: u32,
    /// bfd.LocalDiag.
    local_diag: Diag,
    /// Configured bfd.DesiredMinTxInterval (µs); advertised as at least 1 s while not Up.
    cfg_tx: u32,
    /// bfd.RequiredMinRxInterval (µs).
    cfg_rx: u32,
    /// bfd.DetectMult.
    detect_mult: u8,
    /// bfd.RemoteMinRxInterval (µs); 1 until the peer tells (RFC 5880 §6.8.1).
    remote_min_rx: u32,
    /// The peer's Desired Min TX (µs) and Detect Mult from its last accepted packet.
    remote_min_tx: u32,
    remote_detect_mult: u8,
    /// bfd.RemoteDemandMode (recorded only).
    remote_demand: bool,
    /// The DesiredMinTx we advertised last (to notice changes that need a Poll).
    advertised_tx: u32,
    advertised_rx: u32,
    poll: Option<Poll>,
    /// Send a Final at the next transmission (a Poll was received).
    final_pending: bool,
    /// bfd.RcvAuthSeq / bfd.AuthSeqKnown.
    replay: ReplayWindow,
    /// bfd.XmitAuthSeq.
    xmit_seq: u32,
    last_rx: Option<Instant>,
    next_tx: Option<Instant>,
    detect_at: Option<Instant>,
    rng: SplitMix,
}

impl Session {
    /// A session in Down, not yet transmitting (see [`Input::Start`]). Out-of-range values in
    /// `cfg` are clamped (a zero local discriminator becomes 1); call
    /// [`SessionConfig::validate`] first to refuse them instead.
    pub fn new(cfg: SessionConfig) -> Session {
        let (tx, rx, mult) = cfg.intervals.sanitized();
        let mut rng = SplitMix(cfg.jitter_seed);
        let xmit_seq = rng.next() as u32;
        Session {
            local_discr: cfg.local_discriminator.max(1),
            auth: cfg.auth,
            started: false,
            admin_down: false,
            state: State::Down,
            remote_state: State::Down,
            remote_discr: 0,
            local_diag: Diag::None,
            cfg_tx: tx,
            cfg_rx: rx,
            detect_mult: mult,
            remote_min_rx: 1,
            remote_min_tx: 0,
            remote_detect_mult: 0,
            remote_demand: false,
            advertised_tx: tx.max(us(SLOW_TX)),
            advertised_rx: rx,
            poll: None,
            final_pending: false,
            replay: ReplayWindow::default(),
            xmit_seq,
            last_rx: None,
            next_tx: None,
            detect_at: None,
            rng,
        }
    }

    /// Feeds one input at time `now`.
    pub fn process(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Start => {
                if !self.started {
                    self.started = true;
                    self.transmit(now, &mut out);
                }
            }
            Input::Timer => self.timer(now, &mut out),
            Input::Received(p) => self.receive(now, p, &mut out),
            Input::AdminDown(on) => self.admin(now, on, &mut out),
            Input::SetIntervals(iv) => {
                let (tx, rx, mult) = iv.sanitized();
                self.cfg_tx = tx;
                self.cfg_rx = rx;
                self.detect_mult = mult;
                self.intervals_changed(now, &mut out);
            }
        }
        out
    }

    /// The earliest deadline, if any timer runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.next_tx, self.detect_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// bfd.SessionState.
    pub fn state(&self) -> State {
        self.state
    }

    /// bfd.LocalDiag: why the state last changed.
    pub fn local_diag(&self) -> Diag {
        self.local_diag
    }

    /// bfd.RemoteSessionState.
    pub fn remote_state(&self) -> State {
        self.remote_state
    }

    /// bfd.LocalDiscr.
    pub fn local_discriminator(&self) -> u32 {
        self.local_discr
    }

    /// bfd.RemoteDiscr (0 until the peer is heard, and again after a silent Detection Time).
    pub fn remote_discriminator(&self) -> u32 {
        self.remote_discr
    }

    /// Whether a Poll Sequence is running (our packets carry P).
    pub fn polling(&self) -> bool {
        self.poll.is_some()
    }

    /// Detection Time (RFC 5880 §6.8.4), once the peer has been heard.
    pub fn detection_time(&self) -> Option<Duration> {
        if self.remote_detect_mult == 0 {
            return None;
        }
        let agreed = self.rx_in_use().max(self.remote_min_tx);
        dur(agreed).checked_mul(u32::from(self.remote_detect_mult))
    }

    /// The periodic transmission interval before jitter (RFC 5880 §6.8.7); `None` while the peer
    /// asks for no periodic packets.
    pub fn tx_interval(&self) -> Option<Duration> {
        if self.remote_min_rx == 0 {
            return None;
        }
        Some(dur(self.tx_in_use().max(self.remote_min_rx)))
    }

    // ----- intervals -----

    /// The DesiredMinTx to advertise now: at least 1 s while not Up (RFC 5880 §6.8.3).
    fn target_tx(&self) -> u32 {
        if self.state == State::Up {
            self.cfg_tx
        } else {
            self.cfg_tx.max(us(SLOW_TX))
        }
    }

    fn tx_in_use(&self) -> u32 {
        self.poll.map_or(self.advertised_tx, |p| p.tx_in_use)
    }

    fn rx_in_use(&self) -> u32 {
        self.poll.map_or(self.advertised_rx, |p| p.rx_in_use)
    }

    /// Re-derives the advertised intervals after a configuration or state change; a change while
    /// Up starts (or extends) a Poll Sequence and keeps the old values in use as §6.8.3 says.
    fn intervals_changed(&mut self, now: Instant, out: &mut Vec<Output>) {
        let (tx, rx) = (self.target_tx(), self.cfg_rx);
        if (tx, rx) == (self.advertised_tx, self.advertised_rx) {
            self.rearm_detection();
            return;
        }
        if self.state == State::Up {
            let (old_tx, old_rx) = (self.tx_in_use(), self.rx_in_use());
            self.poll = Some(Poll {
                tx_in_use: if tx > old_tx { old_tx } else { tx },
                rx_in_use: if rx < old_rx { old_rx } else { rx },
            });
            self.advertised_tx = tx;
            self.advertised_rx = rx;
            if self.started {
                self.transmit(now, out);
            }
        } else {
            self.poll = None;
            self.advertised_tx = tx;
            self.advertised_rx = rx;
            self.reschedule_tx(now);
        }
        self.rearm_detection();
    }

    // ----- timers -----

    fn jittered(&mut self, interval: Duration) -> Duration {
        // Per mille of the interval: 750–1000 (0–25 % less), 750–900 with Detect Mult 1.
        let span = if self.detect_mult == 1 { 151 } else { 251 };
        let permille = 750 + (self.rng.next() % span) as u32;
        interval
            .checked_mul(permille)
            .map_or(interval, |d| d / 1000)
    }

    /// The next periodic transmission from `now`.
    fn schedule_tx(&mut self, now: Instant) {
        self.next_tx = if self.started {
            self.tx_interval()
                .and_then(|i| now.checked_add(self.jittered(i)))
        } else {
            None
        };
    }

    /// After an interval change: a later periodic deadline is pulled in, a resumed one set.
    fn reschedule_tx(&mut self, now: Instant) {
        let prev = self.next_tx;
        self.schedule_tx(now);
        if let (Some(p), Some(n)) = (prev, self.next_tx) {
            self.next_tx = Some(p.min(n));
        }
    }

    /// Detection deadline from the last accepted packet (RFC 5880 §6.8.4).
    fn rearm_detection(&mut self) {
        self.detect_at = match (self.last_rx, self.detection_time()) {
            (Some(at), Some(d)) if self.remote_discr != 0 => at.checked_add(d),
            _ => None,
        };
    }

    fn timer(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.detect_at.is_some_and(|at| at <= now) {
            self.detect_at = None;
            // RFC 5880 §6.8.1: bfd.RemoteDiscr is zeroed after a silent Detection Time;
            // §6.8.4: in Init or Up the session goes down.
            self.remote_discr = 0;
            self.remote_state = State::Down;
            if matches!(self.state, State::Init | State::Up) {
                self.set_state(now, State::Down, Diag::ControlDetectionTimeExpired, out);
            }
        }
        if self.next_tx.is_some_and(|at| at <= now) {
            self.transmit(now, out);
        }
    }

    // ----- state -----

    fn set_state(&mut self, now: Instant, to: State, diag: Diag, out: &mut Vec<Output>) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        self.local_diag = diag;
        out.push(Output::StateChanged { from, to, diag });
        if to != State::Up {
            self.poll = None;
        }
        self.intervals_changed(now, out);
        if self.started && !self.polling_sent_just_now(out) {
            self.transmit(now, out);
        }
    }

    /// Whether the last output is already a packet reflecting the current state (a Poll packet
    /// sent by `intervals_changed`), so that a state change sends one packet, not two.
    fn polling_sent_just_now(&self, out: &[Output]) -> bool {
        matches!(out.last(), Some(Output::Send(p)) if p.state == self.state)
    }

    fn admin(&mut self, now: Instant, on: bool, out: &mut Vec<Output>) {
        if on == self.admin_down {
            return;
        }
        self.admin_down = on;
        if on {
            // RFC 5880 §6.8.16: AdminDown with diag 7; the detection timer no longer matters.
            self.set_state(now, State::AdminDown, Diag::AdministrativelyDown, out);
        } else {
            self.set_state(now, State::Down, Diag::None, out);
        }
    }

    // ----- reception (RFC 5880 §6.8.6) -----

    fn receive(&mut self, now: Instant, p: ControlPacket, out: &mut Vec<Output>) {
        if !self.started {
            return;
        }
        if let Err(e) = self.accept(now, &p) {
            out.push(Output::Discarded(e));
            return;
        }
        if let (Some(seq), Some(_)) = (p.auth.as_ref().and_then(|a| a.seq()), &self.auth) {
            self.replay.accept(seq);
        }
        self.last_rx = Some(now);
        self.remote_discr = p.my_discriminator;
        self.remote_state = p.state;
        self.remote_demand = p.demand;
        self.remote_min_tx = p.desired_min_tx_us;
        self.remote_detect_mult = p.detect_mult;
        let remote_rx_changed = self.remote_min_rx != p.required_min_rx_us;
        self.remote_min_rx = p.required_min_rx_us;
        if p.final_ {
            // §6.5: the Final ends our Poll Sequence; the new values are in use from now.
            self.poll = None;
        }
        if remote_rx_changed || p.final_ {
            self.reschedule_tx(now);
        }
        self.rearm_detection();
        if self.state == State::AdminDown {
            // §6.8.6: in AdminDown the packet is discarded once the variables are updated.
            return;
        }
        if p.poll {
            self.final_pending = true;
        }
        match (self.state, p.state) {
            (State::Down, State::AdminDown) => {}
            (_, State::AdminDown) | (State::Up, State::Down) => {
                self.set_state(now, State::Down, Diag::NeighborSignaledSessionDown, out)
            }
            (State::Down, State::Down) => self.set_state(now, State::Init, Diag::None, out),
            (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                self.set_state(now, State::Up, Diag::None, out)
            }
            _ => {}
        }
        if self.final_pending && self.started {
            self.transmit(now, out);
        }
    }

    /// The session-level checks of §6.8.6 and the authentication of §6.7, in the RFC's order.
    fn accept(&mut self, now: Instant, p: &ControlPacket) -> Result<(), SessionError> {
        if p.your_discriminator != 0 && p.your_discriminator != self.local_discr {
            return Err(SessionError::YourDiscriminator {
                received: p.your_discriminator,
                ours: self.local_discr,
            });
        }
        match (&self.auth, &p.auth) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(SessionError::UnexpectedAuth),
            (Some(_), None) => Err(SessionError::MissingAuth),
            (Some(key), Some(auth)) => {
                packet::check_auth(p, key).map_err(SessionError::Auth)?;
                let Some(seq) = auth.seq() else {
                    return Ok(());
                };
                // §6.8.1: bfd.AuthSeqKnown drops after twice the Detection Time in silence.
                let silent = match (self.last_rx, self.detection_time()) {
                    (Some(last), Some(d)) => d
                        .checked_mul(2)
                        .and_then(|d2| last.checked_add(d2))
                        .is_none_or(|limit| now >= limit),
                    _ => true,
                };
                if silent {
                    self.replay.reset();
                }
                self.replay
                    .check(seq, key.auth_type().is_meticulous(), p.detect_mult)
                    .map_err(SessionError::Auth)
            }
        }
    }

    // ----- transmission (RFC 5880 §6.8.7) -----

    /// Sends one packet now (with F if a Poll is to be answered, else with P during our Poll
    /// Sequence: never both) and schedules the next periodic one.
    fn transmit(&mut self, now: Instant, out: &mut Vec<Output>) {
        let final_ = std::mem::take(&mut self.final_pending);
        let mut p = ControlPacket {
            diag: self.local_diag,
            state: self.state,
            poll: self.poll.is_some() && !final_,
            final_,
            cpi: false,
            demand: false,
            detect_mult: self.detect_mult,
            my_discriminator: self.local_discr,
            your_discriminator: self.remote_discr,
            desired_min_tx_us: self.advertised_tx,
            required_min_rx_us: self.advertised_rx,
            required_min_echo_rx_us: 0,
            auth: None,
        };
        if let Some(key) = &self.auth {
            self.xmit_seq = self.xmit_seq.wrapping_add(1);
            packet::sign(&mut p, key, self.xmit_seq);
        }
        out.push(Output::Send(p));
        self.schedule_tx(now);
    }
}
