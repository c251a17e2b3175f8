//! The BGP session core (`bgpd::fsm::Session`) fed a sequence of inputs decoded from the bytes,
//! at increasing times.
//!
//! Invariants checked after every input: at most two connections (the collision pair);
//! `StateChange` outputs chain (each `from` is the previous `to`) and end at `state()`;
//! `Established` on a connection only after the harness fed it an OPEN and then a KEEPALIVE;
//! a negotiated hold time exactly when Established; after `Timeout` at the earliest deadline,
//! no deadline is left at or before now (no timer that fires forever).
#![no_main]

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bgpd::fsm::{ConnId, Input, Output, Session, SessionConfig, State};
use bgpd::wire::{
    decode, AddPathMode, Capabilities, DecodeError, Family, GracefulRestart, Message, Notification,
    Open, RouteRefresh, SessionCodec, Update,
};
use libfuzzer_sys::fuzz_target;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

const LOCAL_AS: u32 = 65001;
const REMOTE_AS: u32 = 65002;

fn families(bits: u8) -> Vec<Family> {
    let mut f = Vec::new();
    if bits & 1 != 0 {
        f.push(Family::Ipv4Unicast);
    }
    if bits & 2 != 0 {
        f.push(Family::Ipv6Unicast);
    }
    f
}

fn config(b: &mut Bytes) -> SessionConfig {
    let flags = b.u8().unwrap_or(0);
    let hold = [0, 3, 9, 90, 240][usize::from(b.u8().unwrap_or(3) % 5)];
    SessionConfig {
        local_as: LOCAL_AS,
        remote_as: if flags & 0x80 != 0 {
            LOCAL_AS
        } else {
            REMOTE_AS
        },
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        hold_time: hold,
        keepalive: if flags & 0x40 != 0 { Some(1) } else { None },
        connect_retry: Duration::from_secs(5),
        idle_hold: Duration::from_secs(2),
        passive: flags & 0x01 != 0,
        families: families(((flags >> 1) & 3) | 1),
        add_path_send: families(flags >> 3),
        add_path_receive: families(flags >> 4),
        graceful_restart: (flags & 0x20 != 0).then(|| GracefulRestart {
            restarted: false,
            notification: true,
            restart_time: 120,
            families: vec![(Family::Ipv4Unicast, true)],
        }),
    }
}

fn peer_open(b: &mut Bytes) -> Open {
    let flags = b.u8().unwrap_or(0);
    let asn = match flags & 3 {
        0 => REMOTE_AS,
        1 => LOCAL_AS,
        2 => 23456,
        _ => u32::from(b.u16().unwrap_or(0)),
    };
    let hold_time = match (flags >> 2) & 3 {
        0 => 90,
        1 => 0,
        2 => 3,
        _ => b.u16().unwrap_or(1),
    };
    let bgp_id = match (flags >> 4) & 3 {
        0 => Ipv4Addr::new(10, 0, 0, 2),
        1 => Ipv4Addr::new(10, 0, 0, 1),
        2 => Ipv4Addr::new(0, 0, 0, 0),
        _ => Ipv4Addr::new(10, 0, 0, 0),
    };
    let caps = b.u8().unwrap_or(0);
    let ap = b.u8().unwrap_or(0);
    Open {
        asn,
        hold_time,
        bgp_id,
        capabilities: Capabilities {
            multiprotocol: families(caps & 3),
            route_refresh: caps & 4 != 0,
            four_octet_as: (caps & 8 != 0).then_some(asn),
            add_path: families(ap & 3)
                .into_iter()
                .map(|f| {
                    (
                        f,
                        AddPathMode {
                            receive: ap & 4 != 0,
                            send: ap & 8 != 0,
                        },
                    )
                })
                .collect(),
            graceful_restart: (caps & 0x10 != 0).then(|| GracefulRestart {
                restarted: caps & 0x20 != 0,
                notification: caps & 0x40 != 0,
                restart_time: 90,
                families: families(ap >> 4).into_iter().map(|f| (f, true)).collect(),
            }),
            other: Vec::new(),
        },
    }
}

/// What the harness fed each connection: an OPEN, then a KEEPALIVE after it.
#[derive(Default, Clone, Copy)]
struct Fed {
    open: bool,
    keepalive_after_open: bool,
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let mut s = Session::new(config(&mut b));
    let t0 = Instant::now();
    let mut now = t0;
    let mut state = s.state();
    let mut last_connect: Option<ConnId> = None;
    let mut fed: HashMap<ConnId, Fed> = HashMap::new();
    let mut live: HashSet<ConnId> = HashSet::new();
    let mut codec = SessionCodec::default();
    let mut steps = 0;
    while let Some(op) = b.u8() {
        steps += 1;
        if steps > 200 {
            break;
        }
        // Time moves forward by 0–255 × 100 ms before each input.
        now += Duration::from_millis(u64::from(b.u8().unwrap_or(0)) * 100);
        let mut conn = || -> ConnId {
            match b.u8().unwrap_or(0) {
                0 => last_connect.unwrap_or(ConnId(1)),
                1 => s.alloc_conn_id(),
                c => ConnId(u64::from(c % 4)),
            }
        };
        let input = match op % 13 {
            0 => Input::Start,
            1 => Input::Stop {
                subcode: 2,
                data: Vec::new(),
            },
            2 => {
                let c = conn();
                Input::TcpConnected {
                    conn: c,
                    outbound: b.u8().unwrap_or(0) & 1 == 0,
                }
            }
            3 => Input::TcpClosed { conn: conn() },
            4 => {
                let c = conn();
                Input::Message {
                    conn: c,
                    msg: Message::Open(peer_open(&mut b)),
                }
            }
            5 => Input::Message {
                conn: conn(),
                msg: Message::Keepalive,
            },
            6 => {
                let c = conn();
                let eor = b.u8().unwrap_or(0);
                Input::Message {
                    conn: c,
                    msg: Message::Update(Update {
                        end_of_rib: families(eor).first().copied(),
                        ..Update::default()
                    }),
                }
            }
            7 => {
                let c = conn();
                Input::Message {
                    conn: c,
                    msg: Message::Notification(Notification {
                        code: b.u8().unwrap_or(6),
                        subcode: b.u8().unwrap_or(2),
                        data: Vec::new(),
                    }),
                }
            }
            8 => {
                let c = conn();
                let f = b.u8().unwrap_or(0);
                Input::Message {
                    conn: c,
                    msg: Message::RouteRefresh(RouteRefresh {
                        family: families((f & 1) + 1)[0],
                    }),
                }
            }
            9 => {
                let c = conn();
                Input::DecodeError {
                    conn: c,
                    err: DecodeError {
                        code: 3,
                        subcode: b.u8().unwrap_or(1),
                        data: Vec::new(),
                        detail: "fuzz".into(),
                    },
                }
            }
            10 => Input::Cease {
                subcode: b.u8().unwrap_or(1) % 11,
                data: Vec::new(),
            },
            11 => {
                if let Some(at) = s.poll_timeout() {
                    now = now.max(at);
                }
                Input::Timeout
            }
            _ => {
                // A raw message, decoded with the codec of the last Established output.
                let c = conn();
                let len = usize::from(b.u8().unwrap_or(0));
                match decode(b.take(len), &codec) {
                    Ok(msg) => Input::Message { conn: c, msg },
                    Err(err) => Input::DecodeError { conn: c, err },
                }
            }
        };
        // Track what the harness fed each live connection (one the core asked for or accepted).
        let connected = match &input {
            Input::Message {
                conn,
                msg: Message::Open(_),
            } if live.contains(conn) => {
                fed.insert(
                    *conn,
                    Fed {
                        open: true,
                        keepalive_after_open: false,
                    },
                );
                None
            }
            Input::Message {
                conn,
                msg: Message::Keepalive,
            } if live.contains(conn) => {
                let f = fed.entry(*conn).or_default();
                f.keepalive_after_open |= f.open;
                None
            }
            Input::TcpClosed { conn } => {
                live.remove(conn);
                fed.remove(conn);
                None
            }
            Input::TcpConnected { conn, .. } if !live.contains(conn) => {
                fed.remove(conn);
                Some(*conn)
            }
            _ => None,
        };
        let is_timeout = input == Input::Timeout;
        let outputs = s.process(now, input);
        if let Some(c) = connected {
            if !outputs.contains(&Output::Close { conn: c }) {
                live.insert(c);
            }
        }
        for o in &outputs {
            match o {
                Output::Connect { conn } => {
                    last_connect = Some(*conn);
                    live.insert(*conn);
                    fed.remove(conn);
                }
                Output::Close { conn } => {
                    live.remove(conn);
                    fed.remove(conn);
                }
                Output::StateChange { from, to, .. } => {
                    assert_eq!(*from, state, "state change chain broken: {outputs:?}");
                    state = *to;
                }
                Output::Established { conn, codec: c, .. } => {
                    let f = fed.get(conn).copied().unwrap_or_default();
                    assert!(
                        f.open && f.keepalive_after_open,
                        "Established on {conn:?} without OPEN then KEEPALIVE: {outputs:?}"
                    );
                    codec = c.clone();
                }
                _ => {}
            }
        }
        assert_eq!(
            state,
            s.state(),
            "state() differs from the reported changes"
        );
        assert!(
            s.connection_count() <= 2,
            "{} connections",
            s.connection_count()
        );
        assert_eq!(
            s.state() == State::Established,
            s.negotiated_hold_time().is_some(),
            "negotiated hold time without Established or the reverse"
        );
        if is_timeout {
            if let Some(at) = s.poll_timeout() {
                assert!(at > now, "a timer at or before now survived Timeout");
            }
        }
    }
});
