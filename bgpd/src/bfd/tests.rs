//! Session tests on simulated time: two sessions wired through the codec (every packet is
//! encoded and decoded on its way), or one session fed hand-made peer packets.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::packet::{self, AuthKey, AuthType, ControlPacket, Diag, PacketError, State};
use super::session::{Input, Intervals, Output, Session, SessionConfig, SessionError, SplitMix};

const A: usize = 0;
const B: usize = 1;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Two sessions and a lossless, zero-delay link whose directions can be cut.
struct Net {
    s: [Session; 2],
    t0: Instant,
    now: Instant,
    /// `link[from]`: packets from `from` reach the other side.
    link: [bool; 2],
    /// (time since t0, side, from, to, diag) of every state change.
    changes: Vec<(Duration, usize, State, State, Diag)>,
    /// (time since t0, sender, packet) of every packet sent.
    sent: Vec<(Duration, usize, ControlPacket)>,
    discarded: Vec<(usize, SessionError)>,
    /// When each side last received a packet.
    last_rx: [Option<Instant>; 2],
}

impl Net {
    fn new(a: SessionConfig, b: SessionConfig) -> Net {
        let t0 = Instant::now();
        Net {
            s: [Session::new(a), Session::new(b)],
            t0,
            now: t0,
            link: [true, true],
            changes: Vec::new(),
            sent: Vec::new(),
            discarded: Vec::new(),
            last_rx: [None, None],
        }
    }

    fn pair() -> Net {
        Net::new(SessionConfig::new(0x0a), SessionConfig::new(0x0b))
    }

    fn input(&mut self, side: usize, input: Input) {
        let mut queue = VecDeque::from([(side, input)]);
        while let Some((side, input)) = queue.pop_front() {
            for o in self.s[side].process(self.now, input) {
                match o {
                    Output::Send(p) => {
                        assert!(!(p.poll && p.final_), "P and F together: {p:?}");
                        self.sent.push((self.now - self.t0, side, p.clone()));
                        if self.link[side] {
                            let back = packet::decode(&packet::encode(&p)).expect("decodes");
                            self.last_rx[1 - side] = Some(self.now);
                            queue.push_back((1 - side, Input::Received(back)));
                        }
                    }
                    Output::StateChanged { from, to, diag } => {
                        assert_ne!(from, to);
                        self.changes
                            .push((self.now - self.t0, side, from, to, diag));
                    }
                    Output::Discarded(e) => self.discarded.push((side, e)),
                }
            }
        }
    }

    fn start(&mut self) {
        self.input(A, Input::Start);
        self.input(B, Input::Start);
    }

    /// Fires every timer up to `t0 + at`, in time order.
    fn run_until(&mut self, at: Duration) {
        let end = self.t0 + at;
        loop {
            let next = [0, 1]
                .into_iter()
                .filter_map(|i| self.s[i].poll_timeout().map(|t| (t, i)))
                .min();
            match next {
                Some((t, i)) if t <= end => {
                    assert!(t >= self.now, "deadline in the past");
                    self.now = t;
                    self.input(i, Input::Timer);
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn changes_of(&self, side: usize) -> Vec<(State, State, Diag)> {
        self.changes
            .iter()
            .filter(|c| c.1 == side)
            .map(|c| (c.2, c.3, c.4))
            .collect()
    }

    fn states(&self) -> (State, State) {
        (self.s[A].state(), self.s[B].state())
    }
}

fn up_pair(mut net: Net) -> Net {
    net.start();
    net.run_until(ms(5000));
    assert_eq!(net.states(), (State::Up, State::Up));
    assert!(!net.s[A].polling() && !net.s[B].polling());
    net
}

#[test]
fn two_sessions_reach_up_through_init() {
    let mut net = Net::pair();
    net.start();
    assert_eq!(net.states(), (State::Up, State::Up));
    // A heard B's Down first: Down → Init → Up. B then heard A's Init: Down → Up (§6.8.6).
    assert_eq!(
        net.changes_of(A),
        vec![
            (State::Down, State::Init, Diag::None),
            (State::Init, State::Up, Diag::None)
        ]
    );
    assert_eq!(
        net.changes_of(B),
        vec![(State::Down, State::Up, Diag::None)]
    );
    assert!(net.changes.iter().all(|c| c.0 == Duration::ZERO));
    // Both learnt each other's discriminator.
    assert_eq!(net.s[A].remote_discriminator(), 0x0b);
    assert_eq!(net.s[B].remote_discriminator(), 0x0a);
    // Once Up, the 1 s slow rate gave way to the configured 300 ms through a Poll Sequence.
    net.run_until(ms(3000));
    assert!(!net.s[A].polling());
    assert_eq!(net.s[A].tx_interval(), Some(ms(300)));
    assert_eq!(net.s[A].detection_time(), Some(ms(900)));
    assert!(net.discarded.is_empty(), "{:?}", net.discarded);
}

#[test]
fn silent_peer_is_detected_after_detect_mult_times_interval() {
    let mut net = up_pair(Net::pair());
    // B goes silent (its packets stop reaching A).
    net.link[B] = false;
    let last = net.last_rx[A].expect("A heard B");
    net.run_until(ms(10_000));
    let down: Vec<_> = net
        .changes
        .iter()
        .filter(|c| c.1 == A && c.3 == State::Down)
        .collect();
    assert_eq!(down.len(), 1, "{:?}", net.changes);
    let (at, _, from, _, diag) = *down[0];
    assert_eq!((from, diag), (State::Up, Diag::ControlDetectionTimeExpired));
    // Exactly DetectMult (3) × max(our RequiredMinRx, its DesiredMinTx) (300 ms) after the last packet.
    assert_eq!(net.t0 + at, last + ms(900));
    assert_eq!(net.s[A].remote_discriminator(), 0);
    // A's Down (diag 1) reaches B, which goes down too with diag 3.
    assert!(net.changes_of(B).contains(&(
        State::Up,
        State::Down,
        Diag::NeighborSignaledSessionDown
    )));
    // A is back to the slow rate and never comes Up without B.
    assert_eq!(net.s[A].state(), State::Down);
    assert_eq!(net.s[A].tx_interval(), Some(Duration::from_secs(1)));
}

#[test]
fn detection_uses_the_slower_of_our_rx_and_their_tx() {
    let mut b = SessionConfig::new(0x0b);
    b.intervals = Intervals {
        desired_min_tx: ms(500),
        required_min_rx: ms(50),
        detect_mult: 4,
    };
    let mut net = up_pair(Net::new(SessionConfig::new(0x0a), b));
    // A: 4 (B's mult) × max(300, 500); B: 3 (A's mult) × max(50, 300).
    assert_eq!(net.s[A].detection_time(), Some(ms(2000)));
    assert_eq!(net.s[B].detection_time(), Some(ms(900)));
    // A sends at max(300, 50), B at max(500, 300).
    assert_eq!(net.s[A].tx_interval(), Some(ms(300)));
    assert_eq!(net.s[B].tx_interval(), Some(ms(500)));
    net.link[B] = false;
    let last = net.last_rx[A].unwrap();
    net.run_until(ms(20_000));
    let at = net
        .changes
        .iter()
        .find(|c| c.1 == A && c.3 == State::Down)
        .unwrap()
        .0;
    assert_eq!(net.t0 + at, last + ms(2000));
}

#[test]
fn peer_admin_down_holds_the_session_down_until_it_returns() {
    let mut net = up_pair(Net::pair());
    net.input(B, Input::AdminDown(true));
    assert_eq!(net.states(), (State::Down, State::AdminDown));
    assert_eq!(
        net.changes_of(B).last(),
        Some(&(State::Up, State::AdminDown, Diag::AdministrativelyDown))
    );
    assert_eq!(
        net.changes_of(A).last(),
        Some(&(State::Up, State::Down, Diag::NeighborSignaledSessionDown))
    );
    assert_eq!(net.s[A].local_diag(), Diag::NeighborSignaledSessionDown);
    // What tells the client (BGP) that this is no path failure (RFC 5882).
    assert_eq!(net.s[A].remote_state(), State::AdminDown);
    let n = net.changes.len();
    // B keeps sending AdminDown; A stays Down: no flap.
    net.run_until(ms(30_000));
    assert_eq!(net.changes.len(), n, "{:?}", &net.changes[n..]);
    assert!(net
        .sent
        .iter()
        .any(|(at, side, p)| *side == B && *at > ms(20_000) && p.state == State::AdminDown));
    // B back: Down → both Up again.
    net.input(B, Input::AdminDown(false));
    assert_eq!(net.states(), (State::Up, State::Up));
    assert_eq!(net.s[A].local_diag(), Diag::None);
}

#[test]
fn local_admin_down() {
    let mut net = up_pair(Net::pair());
    net.input(A, Input::AdminDown(true));
    assert_eq!(net.states(), (State::AdminDown, State::Down));
    // A ignores B's Down packets while AdminDown (§6.8.6), and answers no Poll.
    let n = net.changes.len();
    net.run_until(ms(20_000));
    assert_eq!(net.changes.len(), n);
    assert!(net
        .sent
        .iter()
        .filter(|s| s.1 == A && s.0 > ms(5000))
        .all(|s| s.2.state == State::AdminDown
            && s.2.diag == Diag::AdministrativelyDown
            && !s.2.final_));
    net.input(A, Input::AdminDown(false));
    assert_eq!(net.states(), (State::Up, State::Up));
}

/// A session brought Up by hand-made peer packets; returns it with the peer's discriminator 2.
fn up_alone(
    cfg: SessionConfig,
    peer: &dyn Fn(State, bool, bool) -> ControlPacket,
) -> (Session, Instant) {
    let t0 = Instant::now();
    let mut s = Session::new(cfg);
    s.process(t0, Input::Start);
    s.process(t0, Input::Received(peer(State::Down, false, false)));
    assert_eq!(s.state(), State::Init);
    s.process(t0, Input::Received(peer(State::Up, false, false)));
    assert_eq!(s.state(), State::Up);
    // Up: advertising 300 ms instead of 1 s started a Poll; the peer's Final ends it.
    assert!(s.polling());
    s.process(t0, Input::Received(peer(State::Up, false, true)));
    assert!(!s.polling());
    (s, t0)
}

/// The peer: discriminator 2, 50 ms both ways, Detect Mult 3.
fn peer_packet(state: State, poll: bool, final_: bool) -> ControlPacket {
    ControlPacket {
        diag: Diag::None,
        state,
        poll,
        final_,
        cpi: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: 2,
        your_discriminator: if state == State::Down { 0 } else { 1 },
        desired_min_tx_us: 50_000,
        required_min_rx_us: 50_000,
        required_min_echo_rx_us: 0,
        auth: None,
    }
}

fn sends(out: &[Output]) -> Vec<&ControlPacket> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(p) => Some(p),
            _ => None,
        })
        .collect()
}

#[test]
fn poll_sequence_new_detection_time_only_after_final() {
    let (mut s, t0) = up_alone(SessionConfig::new(1), &peer_packet);
    assert_eq!(s.detection_time(), Some(ms(900)));
    // Lower RequiredMinRx 300 → 100 ms: a Poll goes out at once.
    let out = s.process(
        t0,
        Input::SetIntervals(Intervals {
            required_min_rx: ms(100),
            ..Intervals::default()
        }),
    );
    let p = sends(&out);
    assert_eq!(p.len(), 1);
    assert!(p[0].poll && !p[0].final_);
    assert_eq!(p[0].required_min_rx_us, 100_000);
    assert!(s.polling());
    // Until the Final, detection still uses the old 300 ms.
    let t1 = t0 + ms(40);
    s.process(t1, Input::Received(peer_packet(State::Up, false, false)));
    assert_eq!(s.detection_time(), Some(ms(900)));
    assert_eq!(s.poll_timeout().map(|t| t < t1 + ms(900)), Some(true));
    // Periodic packets keep the P bit.
    let tx = s.poll_timeout().unwrap();
    let out = s.process(tx, Input::Timer);
    assert_eq!(sends(&out).len(), 1);
    assert!(sends(&out)[0].poll);
    // The Final: 3 × max(100, 50) from now on.
    let t2 = tx + ms(10);
    s.process(t2, Input::Received(peer_packet(State::Up, false, true)));
    assert!(!s.polling());
    assert_eq!(s.detection_time(), Some(ms(300)));
    // The session survives until exactly t2 + 300 ms (only transmissions before).
    while let Some(next) = s.poll_timeout() {
        if next >= t2 + ms(300) {
            break;
        }
        let out = s.process(next, Input::Timer);
        assert!(out.iter().all(|o| matches!(o, Output::Send(_))), "{out:?}");
        assert!(sends(&out).iter().all(|p| !p.poll));
    }
    let out = s.process(t2 + ms(300) - Duration::from_nanos(1), Input::Timer);
    assert!(!out.iter().any(|o| matches!(o, Output::StateChanged { .. })));
    let out = s.process(t2 + ms(300), Input::Timer);
    assert!(out.contains(&Output::StateChanged {
        from: State::Up,
        to: State::Down,
        diag: Diag::ControlDetectionTimeExpired
    }));
}

#[test]
fn poll_sequence_larger_tx_applies_after_final() {
    let (mut s, t0) = up_alone(SessionConfig::new(1), &peer_packet);
    assert_eq!(s.tx_interval(), Some(ms(300)));
    let out = s.process(
        t0,
        Input::SetIntervals(Intervals {
            desired_min_tx: ms(2000),
            ..Intervals::default()
        }),
    );
    assert_eq!(sends(&out)[0].desired_min_tx_us, 2_000_000);
    // Still sending at the old rate until the Final (RFC 5880 §6.8.3).
    assert_eq!(s.tx_interval(), Some(ms(300)));
    s.process(
        t0 + ms(10),
        Input::Received(peer_packet(State::Up, false, true)),
    );
    assert_eq!(s.tx_interval(), Some(ms(2000)));
    // Raising RequiredMinRx (a slower peer is fine) also waits for nothing: in use at once.
    s.process(
        t0 + ms(20),
        Input::SetIntervals(Intervals {
            desired_min_tx: ms(2000),
            required_min_rx: ms(600),
            detect_mult: 3,
        }),
    );
    assert!(s.polling());
    assert_eq!(s.detection_time(), Some(ms(1800)));
}

#[test]
fn a_poll_is_answered_at_once_with_final_only() {
    let (mut s, t0) = up_alone(SessionConfig::new(1), &peer_packet);
    let out = s.process(
        t0 + ms(5),
        Input::Received(peer_packet(State::Up, true, false)),
    );
    let p = sends(&out);
    assert_eq!(p.len(), 1);
    assert!(p[0].final_ && !p[0].poll);
    // Even during our own Poll Sequence: F now, P on the next packet.
    s.process(
        t0 + ms(6),
        Input::SetIntervals(Intervals {
            required_min_rx: ms(200),
            ..Intervals::default()
        }),
    );
    let out = s.process(
        t0 + ms(7),
        Input::Received(peer_packet(State::Up, true, false)),
    );
    let p = sends(&out);
    assert!(p[0].final_ && !p[0].poll);
    let next = s.poll_timeout().unwrap();
    let out = s.process(next, Input::Timer);
    assert!(sends(&out)[0].poll);
}

#[test]
fn slow_tx_while_not_up() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig::new(1));
    assert_eq!(s.poll_timeout(), None);
    let first = s.process(t0, Input::Start);
    assert_eq!(sends(&first).len(), 1);
    assert_eq!(sends(&first)[0].desired_min_tx_us, 1_000_000);
    assert_eq!(sends(&first)[0].state, State::Down);
    assert_eq!(sends(&first)[0].your_discriminator, 0);
    let mut last = t0;
    for _ in 0..50 {
        let next = s.poll_timeout().unwrap();
        let gap = next - last;
        // 1 s less 0–25 % jitter (RFC 5880 §6.8.7).
        assert!(gap >= ms(750) && gap <= ms(1000), "{gap:?}");
        let out = s.process(next, Input::Timer);
        assert_eq!(sends(&out).len(), 1);
        assert_eq!(sends(&out)[0].desired_min_tx_us, 1_000_000);
        last = next;
    }
    // A configured rate slower than 1 s is kept as is.
    let mut cfg = SessionConfig::new(1);
    cfg.intervals.desired_min_tx = ms(3000);
    let mut s = Session::new(cfg);
    s.process(t0, Input::Start);
    assert_eq!(s.tx_interval(), Some(ms(3000)));
}

#[test]
fn detect_mult_one_jitter_is_10_to_25_percent() {
    let t0 = Instant::now();
    let mut cfg = SessionConfig::new(1);
    cfg.intervals.detect_mult = 1;
    let mut s = Session::new(cfg);
    s.process(t0, Input::Start);
    let mut last = t0;
    for _ in 0..50 {
        let next = s.poll_timeout().unwrap();
        let gap = next - last;
        assert!(gap >= ms(750) && gap <= ms(900), "{gap:?}");
        s.process(next, Input::Timer);
        last = next;
    }
}

#[test]
fn peer_asking_zero_rx_gets_no_periodic_packets() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig::new(1));
    s.process(t0, Input::Start);
    let mut p = peer_packet(State::Down, false, false);
    p.required_min_rx_us = 0;
    s.process(t0, Input::Received(p));
    assert_eq!(s.tx_interval(), None);
    // Only the detection deadline remains: 3 × max(our 300 ms RequiredMinRx, its 50 ms).
    assert_eq!(s.poll_timeout(), Some(t0 + ms(900)));
}

#[test]
fn silent_peer_in_init_is_detected_too() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig::new(1));
    s.process(t0, Input::Start);
    s.process(t0, Input::Received(peer_packet(State::Down, false, false)));
    assert_eq!(s.state(), State::Init);
    // 3 × max(300 ms, the peer's 50 ms).
    assert_eq!(s.detection_time(), Some(ms(900)));
    let mut changes = Vec::new();
    while let Some(t) = s.poll_timeout() {
        if t > t0 + ms(900) {
            break;
        }
        for o in s.process(t, Input::Timer) {
            if let Output::StateChanged { .. } = o {
                changes.push((t - t0, o));
            }
        }
    }
    assert_eq!(
        changes,
        vec![(
            ms(900),
            Output::StateChanged {
                from: State::Init,
                to: State::Down,
                diag: Diag::ControlDetectionTimeExpired
            }
        )]
    );
    assert_eq!(s.remote_discriminator(), 0);
}

#[test]
fn remote_discriminator_forgotten_after_silence_in_down() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig::new(1));
    s.process(t0, Input::Start);
    // A peer Up while we are Down is ignored (§6.8.6), but its discriminator is learnt.
    let out = s.process(t0, Input::Received(peer_packet(State::Up, false, false)));
    assert!(!out.iter().any(|o| matches!(o, Output::StateChanged { .. })));
    assert_eq!(s.state(), State::Down);
    assert_eq!(s.remote_discriminator(), 2);
    // Our packets now name it.
    let next = s.poll_timeout().unwrap();
    assert!(next < t0 + ms(900));
    let out = s.process(next, Input::Timer);
    assert_eq!(sends(&out)[0].your_discriminator, 2);
    // After a Detection Time without packets, RemoteDiscr is zero again (§6.8.1), no state change.
    let out = s.process(t0 + ms(900), Input::Timer);
    assert!(!out.iter().any(|o| matches!(o, Output::StateChanged { .. })));
    assert_eq!(s.remote_discriminator(), 0);
}

#[test]
fn peer_down_while_up_takes_the_session_down_with_diag_3() {
    let (mut s, t0) = up_alone(SessionConfig::new(1), &peer_packet);
    let out = s.process(
        t0 + ms(10),
        Input::Received(peer_packet(State::Down, false, false)),
    );
    assert_eq!(
        out[0],
        Output::StateChanged {
            from: State::Up,
            to: State::Down,
            diag: Diag::NeighborSignaledSessionDown
        }
    );
    let p = sends(&out);
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].state, p[0].diag, p[0].desired_min_tx_us),
        (State::Down, Diag::NeighborSignaledSessionDown, 1_000_000)
    );
    assert_eq!(s.remote_state(), State::Down);
}

#[test]
fn wrong_discriminator_is_discarded() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig::new(1));
    s.process(t0, Input::Start);
    let mut p = peer_packet(State::Init, false, false);
    p.your_discriminator = 99;
    let out = s.process(t0, Input::Received(p));
    assert_eq!(
        out,
        vec![Output::Discarded(SessionError::YourDiscriminator {
            received: 99,
            ours: 1
        })]
    );
    assert_eq!(s.state(), State::Down);
}

// ----- authentication -----

fn with_key(discr: u32, t: AuthType, secret: &[u8]) -> SessionConfig {
    let mut c = SessionConfig::new(discr);
    c.auth = Some(AuthKey::new(t, 1, secret).unwrap());
    c
}

#[test]
fn authenticated_sessions_come_up_with_every_type() {
    for t in [
        AuthType::SimplePassword,
        AuthType::KeyedMd5,
        AuthType::MeticulousKeyedMd5,
        AuthType::KeyedSha1,
        AuthType::MeticulousKeyedSha1,
    ] {
        let mut net = up_pair(Net::new(
            with_key(0x0a, t, b"k3y"),
            with_key(0x0b, t, b"k3y"),
        ));
        net.run_until(ms(20_000));
        assert_eq!(net.states(), (State::Up, State::Up), "{t}");
        assert!(net.discarded.is_empty(), "{t}: {:?}", net.discarded);
        assert!(net
            .sent
            .iter()
            .all(|s| s.2.auth.as_ref().map(|a| a.auth_type()) == Some(t)));
    }
}

#[test]
fn wrong_key_is_rejected() {
    let mut net = Net::new(
        with_key(0x0a, AuthType::KeyedSha1, b"right"),
        with_key(0x0b, AuthType::KeyedSha1, b"wrong"),
    );
    net.start();
    net.run_until(ms(5000));
    assert_eq!(net.states(), (State::Down, State::Down));
    assert!(net.changes.is_empty());
    assert!(net
        .discarded
        .iter()
        .all(|d| d.1 == SessionError::Auth(PacketError::BadDigest)));
    assert!(net.discarded.len() >= 8);
}

#[test]
fn auth_presence_must_match_configuration() {
    let mut net = Net::new(
        with_key(0x0a, AuthType::KeyedMd5, b"k"),
        SessionConfig::new(0x0b),
    );
    net.start();
    net.run_until(ms(3000));
    assert_eq!(net.states(), (State::Down, State::Down));
    assert!(net.discarded.contains(&(A, SessionError::MissingAuth)));
    assert!(net.discarded.contains(&(B, SessionError::UnexpectedAuth)));
}

/// A packet from peer 2 to session 1 signed with `key` and `seq`.
fn signed(state: State, key: &AuthKey, seq: u32) -> ControlPacket {
    let mut p = peer_packet(state, false, false);
    packet::sign(&mut p, key, seq);
    p
}

#[test]
fn replayed_sequence_is_rejected_meticulous() {
    let cfg = with_key(1, AuthType::MeticulousKeyedMd5, b"k");
    let key = cfg.auth.clone().unwrap();
    let t0 = Instant::now();
    let mut s = Session::new(cfg);
    s.process(t0, Input::Start);
    let p = signed(State::Down, &key, 100);
    s.process(t0, Input::Received(p.clone()));
    assert_eq!(s.state(), State::Init);
    // The same packet again: sequence not above the last.
    let out = s.process(t0 + ms(10), Input::Received(p));
    assert_eq!(
        out,
        vec![Output::Discarded(SessionError::Auth(
            PacketError::Sequence {
                seq: 100,
                low: 101,
                high: 109
            }
        ))]
    );
    // Next in line is fine; a jump past 3 × DetectMult is not.
    assert!(s
        .process(t0 + ms(20), Input::Received(signed(State::Init, &key, 101)))
        .iter()
        .all(|o| !matches!(o, Output::Discarded(_))));
    assert_eq!(s.state(), State::Up);
    assert!(matches!(
        s.process(t0 + ms(30), Input::Received(signed(State::Up, &key, 111)))[..],
        [Output::Discarded(SessionError::Auth(
            PacketError::Sequence { .. }
        ))]
    ));
}

#[test]
fn replay_window_keyed_and_reset_after_silence() {
    let cfg = with_key(1, AuthType::KeyedSha1, b"k");
    let key = cfg.auth.clone().unwrap();
    let t0 = Instant::now();
    let mut s = Session::new(cfg);
    s.process(t0, Input::Start);
    s.process(t0, Input::Received(signed(State::Down, &key, 100)));
    // Keyed (not meticulous): the same sequence number is acceptable…
    let out = s.process(t0 + ms(10), Input::Received(signed(State::Down, &key, 100)));
    assert!(!out.iter().any(|o| matches!(o, Output::Discarded(_))));
    // …an older one is not.
    let out = s.process(t0 + ms(20), Input::Received(signed(State::Down, &key, 99)));
    assert!(matches!(
        out[..],
        [Output::Discarded(SessionError::Auth(
            PacketError::Sequence { .. }
        ))]
    ));
    // After twice the Detection Time (3 × 1 s here: the peer was not Up) of silence,
    // bfd.AuthSeqKnown is 0 again and any sequence number is taken (RFC 5880 §6.8.1).
    let later = t0 + ms(10) + ms(6000);
    let out = s.process(later, Input::Received(signed(State::Down, &key, 5)));
    assert!(
        !out.iter().any(|o| matches!(o, Output::Discarded(_))),
        "{out:?}"
    );
}

#[test]
fn meticulous_sequence_increments_on_every_packet() {
    let cfg = with_key(1, AuthType::MeticulousKeyedSha1, b"k");
    let key = cfg.auth.clone().unwrap();
    let t0 = Instant::now();
    let mut s = Session::new(cfg);
    let mut seqs = Vec::new();
    let out = s.process(t0, Input::Start);
    seqs.extend(sends(&out).iter().filter_map(|p| p.auth.as_ref()?.seq()));
    for _ in 0..10 {
        let t = s.poll_timeout().unwrap();
        let out = s.process(t, Input::Timer);
        for p in sends(&out) {
            // Every packet verifies with the key.
            let back = packet::decode(&packet::encode(p)).unwrap();
            assert_eq!(packet::check_auth(&back, &key), Ok(()));
            seqs.push(p.auth.as_ref().unwrap().seq().unwrap());
        }
    }
    assert_eq!(seqs.len(), 11);
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0].wrapping_add(1));
    }
}

// ----- robustness -----

/// The session's SplitMix64, for the random-input run.
struct Rng(SplitMix);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next()
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

fn random_packet(r: &mut Rng, key: Option<&AuthKey>) -> ControlPacket {
    let mut p = ControlPacket {
        diag: Diag::from_code(r.next() as u8),
        state: State::from_code(r.next() as u8),
        poll: r.below(3) == 0,
        final_: r.below(3) == 0,
        cpi: r.below(2) == 0,
        demand: r.below(5) == 0,
        detect_mult: r.pick(&[0, 1, 3, 255]),
        my_discriminator: r.pick(&[0, 2, 3, u32::MAX]),
        your_discriminator: r.pick(&[0, 1, 7]),
        desired_min_tx_us: r.pick(&[0, 1, 50_000, 1_000_000, u32::MAX]),
        required_min_rx_us: r.pick(&[0, 1, 50_000, 1_000_000, u32::MAX]),
        required_min_echo_rx_us: r.next() as u32,
        auth: None,
    };
    if let Some(k) = key {
        if r.below(4) != 0 {
            packet::sign(&mut p, k, r.next() as u32 % 64);
        }
    }
    p
}

fn random_run(seed: u64) {
    let mut r = Rng(SplitMix(seed));
    let key = [
        None,
        Some(AuthKey::new(AuthType::MeticulousKeyedMd5, 1, b"k").unwrap()),
        Some(AuthKey::new(AuthType::SimplePassword, 1, b"k").unwrap()),
    ][(seed % 3) as usize]
        .clone();
    let mut cfg = SessionConfig::new(1);
    cfg.auth = key.clone();
    cfg.jitter_seed = seed;
    let mut s = Session::new(cfg);
    let mut now = Instant::now();
    for _ in 0..400 {
        now += Duration::from_micros(r.next() % 2_000_000);
        let input = match r.next() % 8 {
            0 => Input::Start,
            1 | 2 => Input::Timer,
            3 => Input::AdminDown(r.below(2) == 0),
            4 => Input::SetIntervals(Intervals {
                desired_min_tx: r.pick(&[Duration::ZERO, ms(1), ms(300), Duration::MAX]),
                required_min_rx: r.pick(&[Duration::ZERO, ms(10), Duration::MAX]),
                detect_mult: r.pick(&[0, 1, 3, 255]),
            }),
            _ => Input::Received(random_packet(&mut r, key.as_ref())),
        };
        let before = s.state();
        let out = s.process(now, input);
        let mut state = before;
        for o in &out {
            match o {
                Output::Send(p) => {
                    assert!(!(p.poll && p.final_));
                    assert_ne!(p.my_discriminator, 0);
                    assert_ne!(p.detect_mult, 0);
                    let b = packet::encode(p);
                    if p.your_discriminator != 0
                        || matches!(p.state, State::Down | State::AdminDown)
                    {
                        assert_eq!(packet::decode(&b).as_ref(), Ok(p));
                    }
                }
                Output::StateChanged { from, to, .. } => {
                    assert_eq!(*from, state);
                    assert_ne!(from, to);
                    state = *to;
                }
                Output::Discarded(_) => {}
            }
        }
        assert_eq!(state, s.state());
    }
}

#[test]
fn random_inputs_never_panic_seeded() {
    for seed in 0..200 {
        random_run(seed);
    }
}

mod props {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_inputs_never_panic(seed in any::<u64>()) {
            super::random_run(seed);
        }
    }
}
