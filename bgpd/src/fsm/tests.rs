//! State-machine tests on simulated time: one per transition, each asserting the exact outputs.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::*;
use crate::wire::{RouteRefresh, Update};

const V4: Family = Family::Ipv4Unicast;
const V6: Family = Family::Ipv6Unicast;

fn cfg() -> SessionConfig {
    SessionConfig {
        local_as: 65001,
        remote_as: 65002,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        hold_time: 90,
        keepalive: None,
        connect_retry: Duration::from_secs(5),
        idle_hold: Duration::from_secs(2),
        passive: false,
        families: vec![V4, V6],
        add_path_send: vec![],
        add_path_receive: vec![],
        graceful_restart: None,
    }
}

fn peer_open() -> Open {
    Open {
        asn: 65002,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(10, 0, 0, 2),
        capabilities: Capabilities {
            multiprotocol: vec![V4, V6],
            route_refresh: true,
            four_octet_as: Some(65002),
            add_path: vec![],
            graceful_restart: None,
            other: vec![],
        },
    }
}

/// The OPEN `cfg()` sends.
fn our_open() -> Open {
    Open {
        asn: 65001,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(10, 0, 0, 1),
        capabilities: Capabilities {
            multiprotocol: vec![V4, V6],
            route_refresh: true,
            four_octet_as: Some(65001),
            add_path: vec![],
            graceful_restart: None,
            other: vec![],
        },
    }
}

fn secs(t0: Instant, n: u64) -> Instant {
    t0 + Duration::from_secs(n)
}

fn change(from: State, to: State, reason: &str) -> Output {
    Output::StateChange {
        from,
        to,
        reason: reason.to_string(),
    }
}

fn send(conn: u64, msg: Message) -> Output {
    Output::Send {
        conn: ConnId(conn),
        msg,
    }
}

fn close(conn: u64) -> Output {
    Output::Close { conn: ConnId(conn) }
}

fn notif_msg(code: u8, subcode: u8) -> Message {
    Message::Notification(Notification {
        code,
        subcode,
        data: vec![],
    })
}

fn msg(conn: u64, msg: Message) -> Input {
    Input::Message {
        conn: ConnId(conn),
        msg,
    }
}

fn connected(conn: u64, outbound: bool) -> Input {
    Input::TcpConnected {
        conn: ConnId(conn),
        outbound,
    }
}

/// Start (conn 1) → TCP up → OPEN from the peer: OpenConfirm at `t0`.
fn open_confirm(cfg: SessionConfig, peer: Open) -> (Session, Instant) {
    let t0 = Instant::now();
    let mut s = Session::new(cfg);
    s.process(t0, Input::Start);
    s.process(t0, connected(1, true));
    s.process(t0, msg(1, Message::Open(peer)));
    assert_eq!(s.state(), State::OpenConfirm);
    (s, t0)
}

/// Established on conn 1 at `t0`; returns the Established output too.
fn established_with(cfg: SessionConfig, peer: Open) -> (Session, Instant, Output) {
    let (mut s, t0) = open_confirm(cfg, peer);
    let mut out = s.process(t0, msg(1, Message::Keepalive));
    assert_eq!(s.state(), State::Established);
    let est = out.pop().expect("established output");
    (s, t0, est)
}

fn established() -> (Session, Instant) {
    let (s, t0, _) = established_with(cfg(), peer_open());
    (s, t0)
}

fn codec_of(o: &Output) -> (SessionCodec, Vec<Family>) {
    match o {
        Output::Established {
            codec, families, ..
        } => (codec.clone(), families.clone()),
        other => panic!("not an Established output: {other:?}"),
    }
}

// ----- Idle, Connect, Active -----

#[test]
fn start_connects() {
    let t0 = Instant::now();
    let mut s = Session::new(cfg());
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.poll_timeout(), None);
    let out = s.process(t0, Input::Start);
    assert_eq!(
        out,
        vec![
            Output::Connect { conn: ConnId(1) },
            change(State::Idle, State::Connect, "start")
        ]
    );
    assert_eq!(s.state(), State::Connect);
    assert_eq!(s.poll_timeout(), Some(secs(t0, 5)));
}

#[test]
fn start_twice_is_ignored() {
    let t0 = Instant::now();
    let mut s = Session::new(cfg());
    s.process(t0, Input::Start);
    assert_eq!(s.process(secs(t0, 1), Input::Start), vec![]);
    assert_eq!(s.poll_timeout(), Some(secs(t0, 5)));
}

#[test]
fn passive_start_goes_active() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig {
        passive: true,
        ..cfg()
    });
    let out = s.process(t0, Input::Start);
    assert_eq!(out, vec![change(State::Idle, State::Active, "start")]);
    assert_eq!(s.state(), State::Active);
}

#[test]
fn passive_connect_retry_stays_active() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig {
        passive: true,
        ..cfg()
    });
    s.process(t0, Input::Start);
    assert_eq!(s.poll_timeout(), Some(secs(t0, 5)));
    assert_eq!(s.process(secs(t0, 5), Input::Timeout), vec![]);
    assert_eq!(s.state(), State::Active);
    assert_eq!(s.poll_timeout(), Some(secs(t0, 10)));
}

#[test]
fn passive_accepts_inbound() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig {
        passive: true,
        ..cfg()
    });
    s.process(t0, Input::Start);
    let id = s.alloc_conn_id();
    let out = s.process(
        t0,
        Input::TcpConnected {
            conn: id,
            outbound: false,
        },
    );
    assert_eq!(
        out,
        vec![
            Output::Send {
                conn: id,
                msg: Message::Open(our_open())
            },
            change(State::Active, State::OpenSent, "tcp connection accepted"),
        ]
    );
    assert_eq!(s.poll_timeout(), Some(secs(t0, 240)));
}

#[test]
fn connect_retry_reconnects_with_new_id() {
    let t0 = Instant::now();
    let mut s = Session::new(cfg());
    s.process(t0, Input::Start);
    assert_eq!(s.process(secs(t0, 4), Input::Timeout), vec![]);
    let out = s.process(secs(t0, 5), Input::Timeout);
    assert_eq!(out, vec![close(1), Output::Connect { conn: ConnId(2) }]);
    assert_eq!(s.state(), State::Connect);
    assert_eq!(s.poll_timeout(), Some(secs(t0, 10)));
    // The abandoned attempt completing late is closed, the new one proceeds.
    assert_eq!(s.process(secs(t0, 6), connected(1, true)), vec![close(1)]);
    let out = s.process(secs(t0, 6), connected(2, true));
    assert_eq!(out[0], send(2, Message::Open(our_open())));
}

#[test]
fn tcp_fail_in_connect_goes_idle_then_restarts() {
    let t0 = Instant::now();
    let mut s = Session::new(cfg());
    s.process(t0, Input::Start);
    let out = s.process(secs(t0, 1), Input::TcpClosed { conn: ConnId(1) });
    assert_eq!(
        out,
        vec![change(State::Connect, State::Idle, "tcp connection failed")]
    );
    assert_eq!(s.poll_timeout(), Some(secs(t0, 3)));
    let out = s.process(secs(t0, 3), Input::Timeout);
    assert_eq!(
        out,
        vec![
            Output::Connect { conn: ConnId(2) },
            change(State::Idle, State::Connect, "idle hold timer expired"),
        ]
    );
    assert_eq!(s.poll_timeout(), Some(secs(t0, 8)));
}

#[test]
fn connected_sends_open_with_caps() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig {
        local_as: 4_200_000_001,
        families: vec![V4, V6],
        add_path_send: vec![V4, V6],
        add_path_receive: vec![V6],
        ..cfg()
    });
    s.process(t0, Input::Start);
    let out = s.process(secs(t0, 1), connected(1, true));
    let expected = Open {
        asn: 4_200_000_001,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(10, 0, 0, 1),
        capabilities: Capabilities {
            multiprotocol: vec![V4, V6],
            route_refresh: true,
            four_octet_as: Some(4_200_000_001),
            add_path: vec![
                (
                    V4,
                    AddPathMode {
                        receive: false,
                        send: true,
                    },
                ),
                (
                    V6,
                    AddPathMode {
                        receive: true,
                        send: true,
                    },
                ),
            ],
            graceful_restart: None,
            other: vec![],
        },
    };
    assert_eq!(
        out,
        vec![
            send(1, Message::Open(expected)),
            change(
                State::Connect,
                State::OpenSent,
                "tcp connection established"
            ),
        ]
    );
    // ConnectRetry stopped, HoldTimer at 4 minutes.
    assert_eq!(s.poll_timeout(), Some(secs(t0, 241)));
}

// ----- OpenSent -----

#[test]
fn opensent_hold_expiry_sends_4_0() {
    let t0 = Instant::now();
    let mut s = Session::new(cfg());
    s.process(t0, Input::Start);
    s.process(t0, connected(1, true));
    assert_eq!(s.process(secs(t0, 239), Input::Timeout), vec![]);
    let out = s.process(secs(t0, 240), Input::Timeout);
    assert_eq!(
        out,
        vec![
            send(1, notif_msg(4, 0)),
            close(1),
            change(State::OpenSent, State::Idle, "hold timer expired"),
        ]
    );
    assert_eq!(s.poll_timeout(), Some(secs(t0, 242)));
}

fn open_sent() -> (Session, Instant) {
    let t0 = Instant::now();
    let mut s = Session::new(cfg());
    s.process(t0, Input::Start);
    s.process(t0, connected(1, true));
    (s, t0)
}

fn assert_open_rejected(open: Open, subcode: u8, reason: &str) {
    let (mut s, t0) = open_sent();
    let out = s.process(secs(t0, 1), msg(1, Message::Open(open)));
    assert_eq!(
        out,
        vec![
            send(1, notif_msg(2, subcode)),
            close(1),
            change(State::OpenSent, State::Idle, reason),
        ]
    );
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.poll_timeout(), Some(secs(t0, 3)));
}

#[test]
fn open_bad_peer_as() {
    assert_open_rejected(
        Open {
            asn: 65003,
            ..peer_open()
        },
        2,
        "open rejected: bad peer as",
    );
}

#[test]
fn open_bad_bgp_id() {
    for id in [
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::new(224, 0, 0, 5),
        Ipv4Addr::BROADCAST,
    ] {
        assert_open_rejected(
            Open {
                bgp_id: id,
                ..peer_open()
            },
            3,
            "open rejected: bad bgp identifier",
        );
    }
}

#[test]
fn ibgp_open_with_our_id_is_bad_bgp_id() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig {
        remote_as: 65001,
        ..cfg()
    });
    s.process(t0, Input::Start);
    s.process(t0, connected(1, true));
    let open = Open {
        asn: 65001,
        bgp_id: Ipv4Addr::new(10, 0, 0, 1),
        ..peer_open()
    };
    let out = s.process(t0, msg(1, Message::Open(open)));
    assert_eq!(out[0], send(1, notif_msg(2, 3)));
}

#[test]
fn ebgp_open_with_our_id_is_accepted() {
    // RFC 6286 §2.2: only iBGP peers must have distinct identifiers.
    let (mut s, t0) = open_sent();
    let open = Open {
        bgp_id: Ipv4Addr::new(10, 0, 0, 1),
        ..peer_open()
    };
    let out = s.process(t0, msg(1, Message::Open(open)));
    assert_eq!(out[0], send(1, Message::Keepalive));
}

#[test]
fn open_hold_time_2_rejected() {
    for hold in [1, 2] {
        assert_open_rejected(
            Open {
                hold_time: hold,
                ..peer_open()
            },
            6,
            "open rejected: unacceptable hold time",
        );
    }
}

#[test]
fn valid_open_sends_keepalive_and_negotiates_min_hold() {
    let (mut s, t0) = open_sent();
    let out = s.process(
        secs(t0, 1),
        msg(
            1,
            Message::Open(Open {
                hold_time: 30,
                ..peer_open()
            }),
        ),
    );
    assert_eq!(
        out,
        vec![
            send(1, Message::Keepalive),
            change(State::OpenSent, State::OpenConfirm, "open received"),
        ]
    );
    // Keepalive at 30/3 = 10 s; hold at 30 s.
    assert_eq!(s.poll_timeout(), Some(secs(t0, 11)));
    // The negotiated hold is reported only once Established.
    assert_eq!(s.negotiated_hold_time(), None);
    s.process(secs(t0, 2), msg(1, Message::Keepalive));
    assert_eq!(s.negotiated_hold_time(), Some(30));
}

#[test]
fn our_smaller_hold_wins() {
    let (s, _, _) = established_with(
        SessionConfig {
            hold_time: 9,
            ..cfg()
        },
        Open {
            hold_time: 180,
            ..peer_open()
        },
    );
    assert_eq!(s.negotiated_hold_time(), Some(9));
}

#[test]
fn update_in_opensent_is_fsm_error() {
    let (mut s, t0) = open_sent();
    let out = s.process(t0, msg(1, Message::Update(Update::default())));
    assert_eq!(
        out,
        vec![
            send(1, notif_msg(5, 1)),
            close(1),
            change(
                State::OpenSent,
                State::Idle,
                "fsm error: unexpected update in opensent"
            ),
        ]
    );
}

#[test]
fn notification_in_opensent_drops() {
    let (mut s, t0) = open_sent();
    let n = Notification {
        code: 2,
        subcode: 2,
        data: vec![],
    };
    let out = s.process(t0, msg(1, Message::Notification(n.clone())));
    assert_eq!(
        out,
        vec![
            Output::NotificationReceived(n),
            close(1),
            change(State::OpenSent, State::Idle, "notification received 2/2"),
        ]
    );
}

#[test]
fn decode_error_sends_its_notification() {
    let (mut s, t0) = open_sent();
    let err = DecodeError {
        code: 2,
        subcode: 7,
        data: vec![0x45],
        detail: "unsupported capability".into(),
    };
    let out = s.process(
        t0,
        Input::DecodeError {
            conn: ConnId(1),
            err,
        },
    );
    assert_eq!(
        out,
        vec![
            send(
                1,
                Message::Notification(Notification {
                    code: 2,
                    subcode: 7,
                    data: vec![0x45]
                })
            ),
            close(1),
            change(State::OpenSent, State::Idle, "decode error 2/7"),
        ]
    );
}

// ----- OpenConfirm -----

#[test]
fn keepalive_in_openconfirm_establishes() {
    let (mut s, t0) = open_confirm(cfg(), peer_open());
    let out = s.process(secs(t0, 1), msg(1, Message::Keepalive));
    assert_eq!(
        out,
        vec![
            change(State::OpenConfirm, State::Established, "keepalive received"),
            Output::Established {
                conn: ConnId(1),
                codec: SessionCodec {
                    asn4: true,
                    add_path_send: vec![],
                    add_path_receive: vec![],
                    ebgp: true,
                },
                peer: peer_open(),
                families: vec![V4, V6],
            },
        ]
    );
    // Keepalive timer from OpenConfirm (30 s), hold restarted at 1 + 90.
    assert_eq!(s.poll_timeout(), Some(secs(t0, 30)));
}

#[test]
fn update_in_openconfirm_is_fsm_error() {
    let (mut s, t0) = open_confirm(cfg(), peer_open());
    let out = s.process(t0, msg(1, Message::Update(Update::default())));
    assert_eq!(
        out,
        vec![
            send(1, notif_msg(5, 2)),
            close(1),
            change(
                State::OpenConfirm,
                State::Idle,
                "fsm error: unexpected update in openconfirm"
            ),
        ]
    );
}

#[test]
fn hold_expiry_in_openconfirm() {
    let (mut s, t0) = open_confirm(
        cfg(),
        Open {
            hold_time: 9,
            ..peer_open()
        },
    );
    assert_eq!(
        s.process(secs(t0, 3), Input::Timeout),
        vec![send(1, Message::Keepalive)]
    );
    assert_eq!(
        s.process(secs(t0, 6), Input::Timeout),
        vec![send(1, Message::Keepalive)]
    );
    let out = s.process(secs(t0, 9), Input::Timeout);
    assert_eq!(
        out,
        vec![
            // Hold and keepalive are both due: hold fires first, no keepalive on a dead session.
            send(1, notif_msg(4, 0)),
            close(1),
            change(State::OpenConfirm, State::Idle, "hold timer expired"),
        ]
    );
}

// ----- negotiation -----

#[test]
fn codec_asn4_needs_both() {
    let mut peer = peer_open();
    peer.capabilities.four_octet_as = None;
    let (_, _, est) = established_with(cfg(), peer);
    assert!(!codec_of(&est).0.asn4);
    let (_, _, est) = established_with(cfg(), peer_open());
    assert!(codec_of(&est).0.asn4);
}

#[test]
fn codec_add_path_matrix() {
    let both = AddPathMode {
        receive: true,
        send: true,
    };
    let send_only = AddPathMode {
        receive: false,
        send: true,
    };
    let recv_only = AddPathMode {
        receive: true,
        send: false,
    };
    // (our send, our receive, peer mode) → (codec send, codec receive)
    let cases = [
        (true, true, Some(both), true, true),
        (true, false, Some(both), true, false),
        (false, true, Some(both), false, true),
        (true, true, Some(send_only), false, true),
        (true, true, Some(recv_only), true, false),
        (true, false, Some(send_only), false, false),
        (false, true, Some(recv_only), false, false),
        (true, true, None, false, false),
        (false, false, Some(both), false, false),
    ];
    for (we_send, we_recv, peer_mode, cs, cr) in cases {
        let cfg = SessionConfig {
            add_path_send: if we_send { vec![V4] } else { vec![] },
            add_path_receive: if we_recv { vec![V4] } else { vec![] },
            ..cfg()
        };
        let mut peer = peer_open();
        peer.capabilities.add_path = peer_mode.map(|m| (V4, m)).into_iter().collect();
        let (_, _, est) = established_with(cfg, peer);
        let (codec, _) = codec_of(&est);
        let case = (we_send, we_recv, peer_mode);
        assert_eq!(
            codec.add_path_send,
            if cs { vec![V4] } else { vec![] },
            "{case:?}"
        );
        assert_eq!(
            codec.add_path_receive,
            if cr { vec![V4] } else { vec![] },
            "{case:?}"
        );
    }
}

#[test]
fn codec_add_path_per_family() {
    let cfg = SessionConfig {
        add_path_send: vec![V4, V6],
        add_path_receive: vec![V6],
        ..cfg()
    };
    let mut peer = peer_open();
    peer.capabilities.add_path = vec![
        (
            V6,
            AddPathMode {
                receive: true,
                send: true,
            },
        ),
        (
            V4,
            AddPathMode {
                receive: false,
                send: true,
            },
        ),
    ];
    let (_, _, est) = established_with(cfg, peer);
    let (codec, _) = codec_of(&est);
    assert_eq!(codec.add_path_send, vec![V6]);
    assert_eq!(codec.add_path_receive, vec![V6]);
}

#[test]
fn families_are_intersected() {
    let mut peer = peer_open();
    peer.capabilities.multiprotocol = vec![V6];
    peer.capabilities.add_path = vec![(
        V4,
        AddPathMode {
            receive: true,
            send: true,
        },
    )];
    let cfg = SessionConfig {
        add_path_send: vec![V4],
        ..cfg()
    };
    let (_, _, est) = established_with(cfg, peer);
    let (codec, families) = codec_of(&est);
    assert_eq!(families, vec![V6]);
    // ADD-PATH only within the negotiated families.
    assert_eq!(codec.add_path_send, vec![]);
}

#[test]
fn peer_without_mp_caps_is_ipv4_only() {
    let mut peer = peer_open();
    peer.capabilities.multiprotocol = vec![];
    let (_, _, est) = established_with(cfg(), peer.clone());
    assert_eq!(codec_of(&est).1, vec![V4]);
    // And nothing in common with an IPv6-only speaker.
    let (_, _, est) = established_with(
        SessionConfig {
            families: vec![V6],
            ..cfg()
        },
        peer,
    );
    assert_eq!(codec_of(&est).1, vec![]);
}

// ----- Established -----

#[test]
fn hold_zero_runs_no_timers() {
    let (mut s, t0, _) = established_with(
        cfg(),
        Open {
            hold_time: 0,
            ..peer_open()
        },
    );
    assert_eq!(s.negotiated_hold_time(), Some(0));
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.process(secs(t0, 100_000), Input::Timeout), vec![]);
    assert_eq!(s.state(), State::Established);
}

#[test]
fn keepalive_fires_at_a_third_of_hold_and_rearms() {
    let (mut s, t0) = established();
    assert_eq!(s.poll_timeout(), Some(secs(t0, 30)));
    assert_eq!(s.process(secs(t0, 29), Input::Timeout), vec![]);
    assert_eq!(
        s.process(secs(t0, 30), Input::Timeout),
        vec![send(1, Message::Keepalive)]
    );
    assert_eq!(s.poll_timeout(), Some(secs(t0, 60)));
    assert_eq!(
        s.process(secs(t0, 60), Input::Timeout),
        vec![send(1, Message::Keepalive)]
    );
    assert_eq!(s.poll_timeout(), Some(secs(t0, 90)));
}

#[test]
fn configured_keepalive_is_used_and_capped() {
    let (mut s, t0, _) = established_with(
        SessionConfig {
            keepalive: Some(7),
            ..cfg()
        },
        peer_open(),
    );
    assert_eq!(s.poll_timeout(), Some(secs(t0, 7)));
    assert_eq!(
        s.process(secs(t0, 7), Input::Timeout),
        vec![send(1, Message::Keepalive)]
    );
    // A configured value above hold/3 is capped.
    let (s, t0, _) = established_with(
        SessionConfig {
            keepalive: Some(60),
            ..cfg()
        },
        Open {
            hold_time: 30,
            ..peer_open()
        },
    );
    assert_eq!(s.poll_timeout(), Some(secs(t0, 10)));
}

#[test]
fn hold_expiry_in_established() {
    let (mut s, t0, _) = established_with(
        SessionConfig {
            keepalive: Some(0),
            ..cfg()
        },
        peer_open(),
    );
    assert_eq!(s.poll_timeout(), Some(secs(t0, 90)));
    let out = s.process(secs(t0, 90), Input::Timeout);
    assert_eq!(
        out,
        vec![
            send(1, notif_msg(4, 0)),
            close(1),
            change(State::Established, State::Idle, "hold timer expired"),
        ]
    );
    assert_eq!(s.negotiated_hold_time(), None);
    assert_eq!(s.poll_timeout(), Some(secs(t0, 92)));
}

#[test]
fn update_restarts_hold_timer() {
    let (mut s, t0, _) = established_with(
        SessionConfig {
            keepalive: Some(0),
            ..cfg()
        },
        peer_open(),
    );
    s.process(secs(t0, 50), msg(1, Message::Update(Update::default())));
    assert_eq!(s.process(secs(t0, 90), Input::Timeout), vec![]);
    assert_eq!(s.state(), State::Established);
    assert_eq!(s.poll_timeout(), Some(secs(t0, 140)));
}

#[test]
fn keepalive_restarts_hold_timer() {
    let (mut s, t0, _) = established_with(
        SessionConfig {
            keepalive: Some(0),
            ..cfg()
        },
        peer_open(),
    );
    assert_eq!(s.process(secs(t0, 80), msg(1, Message::Keepalive)), vec![]);
    assert_eq!(s.process(secs(t0, 90), Input::Timeout), vec![]);
    assert_eq!(s.poll_timeout(), Some(secs(t0, 170)));
}

#[test]
fn update_is_delivered() {
    let (mut s, t0) = established();
    let update = Update {
        end_of_rib: Some(V4),
        ..Update::default()
    };
    let out = s.process(t0, msg(1, Message::Update(update.clone())));
    assert_eq!(out, vec![Output::Update { update }]);
}

#[test]
fn route_refresh_is_delivered() {
    let (mut s, t0) = established();
    let out = s.process(
        t0,
        msg(1, Message::RouteRefresh(RouteRefresh { family: V6 })),
    );
    assert_eq!(out, vec![Output::RouteRefresh { family: V6 }]);
}

#[test]
fn route_refresh_for_unnegotiated_family_is_ignored() {
    let mut peer = peer_open();
    peer.capabilities.multiprotocol = vec![V4];
    let (mut s, t0, _) = established_with(cfg(), peer);
    assert_eq!(
        s.process(
            t0,
            msg(1, Message::RouteRefresh(RouteRefresh { family: V6 }))
        ),
        vec![]
    );
}

#[test]
fn open_in_established_is_fsm_error() {
    let (mut s, t0) = established();
    let out = s.process(t0, msg(1, Message::Open(peer_open())));
    assert_eq!(
        out,
        vec![
            send(1, notif_msg(5, 3)),
            close(1),
            change(
                State::Established,
                State::Idle,
                "fsm error: unexpected open in established"
            ),
        ]
    );
}

#[test]
fn notification_in_established_then_restart() {
    let (mut s, t0) = established();
    let n = Notification {
        code: 6,
        subcode: 2,
        data: vec![],
    };
    let out = s.process(secs(t0, 10), msg(1, Message::Notification(n.clone())));
    assert_eq!(
        out,
        vec![
            Output::NotificationReceived(n),
            close(1),
            change(State::Established, State::Idle, "notification received 6/2"),
        ]
    );
    assert_eq!(s.poll_timeout(), Some(secs(t0, 12)));
    let out = s.process(secs(t0, 12), Input::Timeout);
    assert_eq!(
        out,
        vec![
            Output::Connect { conn: ConnId(2) },
            change(State::Idle, State::Connect, "idle hold timer expired"),
        ]
    );
}

#[test]
fn tcp_closed_in_established_goes_idle() {
    let (mut s, t0) = established();
    let out = s.process(secs(t0, 10), Input::TcpClosed { conn: ConnId(1) });
    assert_eq!(
        out,
        vec![change(
            State::Established,
            State::Idle,
            "tcp connection closed"
        )]
    );
    assert_eq!(s.poll_timeout(), Some(secs(t0, 12)));
}

#[test]
fn decode_error_in_established() {
    let (mut s, t0) = established();
    let err = DecodeError {
        code: 3,
        subcode: 1,
        data: vec![],
        detail: "x".into(),
    };
    let out = s.process(
        t0,
        Input::DecodeError {
            conn: ConnId(1),
            err,
        },
    );
    assert_eq!(
        out,
        vec![
            send(1, notif_msg(3, 1)),
            close(1),
            change(State::Established, State::Idle, "decode error 3/1"),
        ]
    );
}

// ----- Stop and Cease -----

#[test]
fn stop_in_established_stays_idle() {
    let (mut s, t0) = established();
    let out = s.process(
        secs(t0, 10),
        Input::Stop {
            subcode: 2,
            data: vec![],
        },
    );
    assert_eq!(
        out,
        vec![
            send(1, notif_msg(6, 2)),
            close(1),
            change(State::Established, State::Idle, "stopped")
        ]
    );
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.process(secs(t0, 1000), Input::Timeout), vec![]);
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn stop_in_connect_closes_attempt_without_notification() {
    let t0 = Instant::now();
    let mut s = Session::new(cfg());
    s.process(t0, Input::Start);
    let out = s.process(
        t0,
        Input::Stop {
            subcode: 2,
            data: vec![],
        },
    );
    assert_eq!(
        out,
        vec![close(1), change(State::Connect, State::Idle, "stopped")]
    );
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn stop_cancels_pending_restart_and_start_resumes() {
    let t0 = Instant::now();
    let mut s = Session::new(cfg());
    s.process(t0, Input::Start);
    s.process(t0, Input::TcpClosed { conn: ConnId(1) });
    assert!(s.poll_timeout().is_some());
    assert_eq!(
        s.process(
            t0,
            Input::Stop {
                subcode: 2,
                data: vec![]
            }
        ),
        vec![]
    );
    assert_eq!(s.poll_timeout(), None);
    let out = s.process(secs(t0, 1), Input::Start);
    assert_eq!(
        out,
        vec![
            Output::Connect { conn: ConnId(2) },
            change(State::Idle, State::Connect, "start")
        ]
    );
}

#[test]
fn cease_restarts_after_idle_hold() {
    let (mut s, t0) = established();
    let out = s.process(
        secs(t0, 10),
        Input::Cease {
            subcode: notif::CEASE_ADMIN_RESET,
            data: vec![1, 2],
        },
    );
    assert_eq!(
        out,
        vec![
            send(
                1,
                Message::Notification(Notification {
                    code: 6,
                    subcode: 4,
                    data: vec![1, 2]
                })
            ),
            close(1),
            change(State::Established, State::Idle, "cease 6/4"),
        ]
    );
    assert_eq!(s.poll_timeout(), Some(secs(t0, 12)));
    let out = s.process(secs(t0, 12), Input::Timeout);
    assert_eq!(
        out,
        vec![
            Output::Connect { conn: ConnId(2) },
            change(State::Idle, State::Connect, "idle hold timer expired"),
        ]
    );
}

#[test]
fn inbound_while_idle_is_refused() {
    let t0 = Instant::now();
    let mut s = Session::new(cfg());
    assert_eq!(s.process(t0, connected(7, false)), vec![close(7)]);
    assert_eq!(s.state(), State::Idle);
}

// ----- collisions (RFC 4271 §6.8) -----

#[test]
fn inbound_during_connect_replaces_attempt() {
    let t0 = Instant::now();
    let mut s = Session::new(cfg());
    s.process(t0, Input::Start);
    let out = s.process(secs(t0, 1), connected(100, false));
    assert_eq!(
        out,
        vec![
            close(1),
            send(100, Message::Open(our_open())),
            change(State::Connect, State::OpenSent, "tcp connection accepted"),
        ]
    );
    // ConnectRetry is stopped; only the OpenSent hold timer runs.
    assert_eq!(s.poll_timeout(), Some(secs(t0, 241)));
    // Ids the core hands out afterwards skip past the caller's.
    assert_eq!(s.alloc_conn_id(), ConnId(101));
}

/// Outbound conn 1 in OpenConfirm, inbound conn 2 accepted (OpenSent).
fn collision_setup(router_id: Ipv4Addr, peer_id: Ipv4Addr) -> (Session, Instant) {
    let (mut s, t0) = open_confirm(
        SessionConfig { router_id, ..cfg() },
        Open {
            bgp_id: peer_id,
            ..peer_open()
        },
    );
    let out = s.process(secs(t0, 1), connected(2, false));
    let ours = Open {
        bgp_id: router_id,
        ..our_open()
    };
    assert_eq!(out, vec![send(2, Message::Open(ours))]);
    assert_eq!(s.state(), State::OpenConfirm);
    (s, t0)
}

#[test]
fn collision_local_id_higher_keeps_outbound() {
    let (mut s, t0) = collision_setup(Ipv4Addr::new(10, 0, 0, 9), Ipv4Addr::new(10, 0, 0, 2));
    let open = Open {
        bgp_id: Ipv4Addr::new(10, 0, 0, 2),
        ..peer_open()
    };
    let out = s.process(secs(t0, 2), msg(2, Message::Open(open)));
    assert_eq!(out, vec![send(2, notif_msg(6, 7)), close(2)]);
    assert_eq!(s.state(), State::OpenConfirm);
    let out = s.process(secs(t0, 3), msg(1, Message::Keepalive));
    assert!(matches!(
        out[1],
        Output::Established {
            conn: ConnId(1),
            ..
        }
    ));
}

#[test]
fn collision_local_id_lower_keeps_inbound() {
    let (mut s, t0) = collision_setup(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let open = peer_open();
    let out = s.process(secs(t0, 2), msg(2, Message::Open(open)));
    assert_eq!(
        out,
        vec![
            send(1, notif_msg(6, 7)),
            close(1),
            send(2, Message::Keepalive)
        ]
    );
    assert_eq!(s.state(), State::OpenConfirm);
    // Messages for the closed connection are ignored now.
    assert_eq!(s.process(secs(t0, 3), msg(1, Message::Keepalive)), vec![]);
    let out = s.process(secs(t0, 3), msg(2, Message::Keepalive));
    assert!(matches!(
        out[1],
        Output::Established {
            conn: ConnId(2),
            ..
        }
    ));
}

#[test]
fn collision_ids_compared_as_u32() {
    // 9.0.0.1 < 10.0.0.0 numerically although "9" > "1" as text.
    let (mut s, t0) = collision_setup(Ipv4Addr::new(9, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 0));
    let open = Open {
        bgp_id: Ipv4Addr::new(10, 0, 0, 0),
        ..peer_open()
    };
    let out = s.process(secs(t0, 2), msg(2, Message::Open(open)));
    assert_eq!(
        out,
        vec![
            send(1, notif_msg(6, 7)),
            close(1),
            send(2, Message::Keepalive)
        ]
    );
}

#[test]
fn collision_resolved_when_first_open_arrives_on_second_conn() {
    // Inbound conn 2 gets its OPEN first (OpenConfirm), then conn 1's OPEN resolves.
    let t0 = Instant::now();
    let mut s = Session::new(cfg());
    s.process(t0, Input::Start);
    s.process(t0, connected(1, true));
    let out = s.process(t0, connected(2, false));
    assert_eq!(out, vec![send(2, Message::Open(our_open()))]);
    let out = s.process(t0, msg(2, Message::Open(peer_open())));
    assert_eq!(
        out,
        vec![
            send(2, Message::Keepalive),
            change(State::OpenSent, State::OpenConfirm, "open received")
        ]
    );
    // Local 10.0.0.1 < remote 10.0.0.2: our outbound conn 1 loses.
    let out = s.process(t0, msg(1, Message::Open(peer_open())));
    assert_eq!(out, vec![send(1, notif_msg(6, 7)), close(1)]);
    assert_eq!(s.state(), State::OpenConfirm);
}

#[test]
fn establishing_closes_the_other_connection() {
    let (mut s, t0) = collision_setup(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let out = s.process(secs(t0, 2), msg(1, Message::Keepalive));
    assert_eq!(
        out[..3],
        [
            send(2, notif_msg(6, 7)),
            close(2),
            change(State::OpenConfirm, State::Established, "keepalive received")
        ]
    );
    assert!(matches!(
        out[3],
        Output::Established {
            conn: ConnId(1),
            ..
        }
    ));
}

#[test]
fn inbound_while_established_is_rejected() {
    let (mut s, t0) = established();
    let out = s.process(secs(t0, 1), connected(2, false));
    assert_eq!(out, vec![send(2, notif_msg(6, 5)), close(2)]);
    assert_eq!(s.state(), State::Established);
    // The established session is untouched.
    let update = Update::default();
    let out = s.process(secs(t0, 2), msg(1, Message::Update(update.clone())));
    assert_eq!(out, vec![Output::Update { update }]);
}

#[test]
fn error_on_one_of_two_connections_keeps_the_other() {
    let (mut s, t0) = collision_setup(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let out = s.process(secs(t0, 2), Input::TcpClosed { conn: ConnId(2) });
    assert_eq!(out, vec![]);
    assert_eq!(s.state(), State::OpenConfirm);
    let out = s.process(secs(t0, 2), Input::TcpClosed { conn: ConnId(1) });
    assert_eq!(
        out,
        vec![change(
            State::OpenConfirm,
            State::Idle,
            "tcp connection closed"
        )]
    );
}

#[test]
fn unknown_connections_are_ignored() {
    let (mut s, t0) = established();
    assert_eq!(s.process(t0, Input::TcpClosed { conn: ConnId(42) }), vec![]);
    assert_eq!(s.process(t0, msg(42, Message::Keepalive)), vec![]);
    let err = DecodeError {
        code: 1,
        subcode: 1,
        data: vec![],
        detail: "x".into(),
    };
    assert_eq!(
        s.process(
            t0,
            Input::DecodeError {
                conn: ConnId(42),
                err
            }
        ),
        vec![]
    );
    assert_eq!(s.state(), State::Established);
}

// ----- robustness -----

/// Every input in every reachable state, with timers in between: no panic, and the state the
/// core reports always matches the last StateChange.
#[test]
fn arbitrary_sequences_do_not_panic() {
    let inputs = |c: u64| {
        vec![
            Input::Start,
            Input::Stop {
                subcode: 2,
                data: vec![],
            },
            Input::Cease {
                subcode: 4,
                data: vec![],
            },
            connected(c, true),
            connected(c, false),
            Input::TcpClosed { conn: ConnId(c) },
            msg(c, Message::Open(peer_open())),
            msg(c, Message::Keepalive),
            msg(c, Message::Update(Update::default())),
            msg(c, Message::RouteRefresh(RouteRefresh { family: V4 })),
            msg(c, notif_msg(6, 2)),
            Input::DecodeError {
                conn: ConnId(c),
                err: DecodeError {
                    code: 1,
                    subcode: 2,
                    data: vec![],
                    detail: "x".into(),
                },
            },
            Input::Timeout,
        ]
    };
    // A small deterministic LCG walk over inputs, connection ids and time.
    for seed in 0..200u64 {
        let t0 = Instant::now();
        let mut s = Session::new(SessionConfig {
            passive: seed % 3 == 0,
            connect_retry: Duration::from_secs(seed % 4),
            idle_hold: Duration::ZERO,
            ..cfg()
        });
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut now = t0;
        let mut state = State::Idle;
        for _ in 0..300 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let all = inputs((x >> 40) % 4);
            let input = all[((x >> 20) as usize) % all.len()].clone();
            now += Duration::from_millis((x >> 50) % 100_000);
            for o in s.process(now, input) {
                if let Output::StateChange { from, to, .. } = o {
                    assert_eq!(from, state);
                    assert_ne!(from, to);
                    state = to;
                }
            }
            assert_eq!(s.state(), state);
            assert!(s.conns.len() <= 2);
        }
    }
}

#[test]
fn huge_configured_durations_do_not_overflow() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig {
        connect_retry: Duration::MAX,
        idle_hold: Duration::MAX,
        ..cfg()
    });
    assert_eq!(
        s.process(t0, Input::Start)[0],
        Output::Connect { conn: ConnId(1) }
    );
    // The ConnectRetry deadline is past the end of time: it never fires.
    assert_eq!(s.poll_timeout(), None);
    s.process(t0, Input::TcpClosed { conn: ConnId(1) });
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn maximum_prefix_shutdowns_back_off_exponentially() {
    let max_prefix = |s: &mut Session, t: Instant| {
        s.process(
            t,
            Input::Cease {
                subcode: notif::CEASE_MAX_PREFIXES,
                data: vec![],
            },
        );
    };
    let (mut s, t0) = established();
    assert_eq!(s.idle_hold_delay(), Duration::from_secs(2));
    max_prefix(&mut s, t0);
    assert_eq!(s.state(), State::Idle);
    // idle_hold 2 s doubled: the restart comes 4 s later, not 2.
    assert_eq!(s.poll_timeout(), Some(secs(t0, 4)));
    for want in [8, 16, 32, 64, 128, 256, 512, 600, 600] {
        s.process(secs(t0, 1000), Input::Start);
        max_prefix(&mut s, secs(t0, 1000));
        assert_eq!(s.idle_hold_delay(), Duration::from_secs(want));
    }
    // Any other cease ends the streak.
    s.process(secs(t0, 2000), Input::Start);
    s.process(
        secs(t0, 2000),
        Input::Cease {
            subcode: notif::CEASE_ADMIN_RESET,
            data: vec![],
        },
    );
    assert_eq!(s.idle_hold_delay(), Duration::from_secs(2));
}
