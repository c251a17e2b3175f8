//! Codec tests: round trips, byte-exact fixtures, truncation, header errors, property tests.

use super::*;
use proptest::prelude::*;

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn repair(seed: u32) -> TcpRepair {
    TcpRepair {
        snd_seq: seed,
        rcv_seq: seed.wrapping_mul(7),
        snd_wnd: 65535,
        rcv_wnd: 29200,
        mss: 1460,
        snd_wscale: 7,
        rcv_wscale: 9,
        sack: true,
        timestamps: seed.is_multiple_of(2),
        ts_val: seed ^ 0xdead_beef,
        snd_wl1: seed.wrapping_mul(7).wrapping_sub(1),
        max_window: 65535 << 7,
        rcv_wup: seed.wrapping_mul(7).wrapping_sub(2),
    }
}

fn samples() -> Vec<Message> {
    vec![
        Message::Hello {
            device: "B".into(),
            traffic_group: "tg-2".into(),
            epoch: 42,
            resume_from: None,
        },
        Message::Hello {
            device: "C".into(),
            traffic_group: "tg-2".into(),
            epoch: 42,
            resume_from: Some(1234),
        },
        Message::ResyncBegin { records: 3 },
        Message::Record(Record {
            update_id: 7,
            traffic_group: "tg-2".into(),
            kind: RecordKind::Persistence {
                profile: "src-addr".into(),
                scope: "*".into(),
                key: "10.0.0.0/24".into(),
                pool: "web".into(),
                member: a("10.1.1.50:80"),
                virtual_server: "vs-web".into(),
                expiry_ms: 1_763_000_000_000,
            },
        }),
        Message::Record(Record {
            update_id: 8,
            traffic_group: "tg-2".into(),
            kind: RecordKind::UdpFlow {
                client: a("[2001:db8::1]:5060"),
                vip: a("[2001:db8::10]:5060"),
                member: a("10.1.1.51:5060"),
                snat: a("10.1.1.3:40000"),
                last_seen_ms: 99,
                key: Some(b"call-id@host".to_vec()),
            },
        }),
        Message::Record(Record {
            update_id: 9,
            traffic_group: "tg-2".into(),
            kind: RecordKind::UdpFlow {
                client: a("20.1.1.100:1000"),
                vip: a("30.1.1.10:53"),
                member: a("10.1.1.52:53"),
                snat: a("10.1.1.3:40001"),
                last_seen_ms: 0,
                key: None,
            },
        }),
        Message::Record(Record {
            update_id: 10,
            traffic_group: "tg-2".into(),
            kind: RecordKind::TcpConn {
                client: a("20.1.1.100:33000"),
                vip: a("30.1.1.10:80"),
                member: a("10.1.1.50:80"),
                snat: a("10.1.1.3:50000"),
                client_side: repair(1),
                server_side: repair(2),
                taken_ms: 1_795_000_000_000,
            },
        }),
        Message::ResyncEnd { last_id: 10 },
        Message::Delete {
            id: 11,
            key: RecordKey::Persistence {
                profile: "src-addr".into(),
                scope: "*".into(),
                key: "10.0.0.0/24".into(),
            },
        },
        Message::Delete {
            id: 12,
            key: RecordKey::UdpFlow {
                client: a("20.1.1.100:1000"),
                vip: a("30.1.1.10:53"),
                member: a("10.1.1.50:53"),
            },
        },
        Message::Delete {
            id: 13,
            key: RecordKey::TcpConn {
                client: a("20.1.1.100:33000"),
                vip: a("30.1.1.10:80"),
            },
        },
        Message::Ack { last_applied: 13 },
        Message::Heartbeat { sent_ms: 5 },
    ]
}

fn enc(m: &Message) -> Vec<u8> {
    let mut v = Vec::new();
    encode(m, &mut v).unwrap();
    v
}

#[test]
fn every_kind_round_trips() {
    let mut kinds = std::collections::BTreeSet::new();
    for m in samples() {
        let b = enc(&m);
        assert_eq!(
            decode(&b).unwrap(),
            Some((m.clone(), b.len())),
            "{}",
            m.name()
        );
        kinds.insert(m.kind());
    }
    assert_eq!(kinds.len(), 7, "every message kind is covered");
}

#[test]
fn stream_of_frames_decodes_in_order() {
    let msgs = samples();
    let mut buf = Vec::new();
    for m in &msgs {
        encode(m, &mut buf).unwrap();
    }
    let mut at = 0;
    let mut got = Vec::new();
    while let Some((m, n)) = decode(&buf[at..]).unwrap() {
        got.push(m);
        at += n;
    }
    assert_eq!(at, buf.len());
    assert_eq!(got, msgs);
}

#[test]
fn heartbeat_fixture_is_byte_exact() {
    let b = enc(&Message::Heartbeat {
        sent_ms: 0x0102_0304_0506_0708,
    });
    assert_eq!(
        b,
        [
            b'S', b'L', b'M', b'R', // magic
            1,    // version
            7,    // kind: heartbeat
            0, 0, 0, 8, // body length
            1, 2, 3, 4, 5, 6, 7, 8, // sent_ms
        ]
    );
}

#[test]
fn delete_fixture_is_byte_exact() {
    let b = enc(&Message::Delete {
        id: 3,
        key: RecordKey::UdpFlow {
            client: a("192.0.2.1:258"),
            vip: a("[::1]:53"),
            member: a("10.1.1.50:53"),
        },
    });
    let mut want = vec![b'S', b'L', b'M', b'R', 1, 5, 0, 0, 0, 42];
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 3]); // id
    want.push(2); // key kind: udp flow
    want.extend_from_slice(&[4, 192, 0, 2, 1, 1, 2]); // client
    want.push(6);
    want.extend_from_slice(&[0; 15]);
    want.extend_from_slice(&[1, 0, 53]); // vip
    want.extend_from_slice(&[4, 10, 1, 1, 50, 0, 53]); // member
    assert_eq!(b, want);
}

#[test]
fn tcp_repair_fixture_is_byte_exact() {
    let t = TcpRepair {
        snd_seq: 0x0102_0304,
        rcv_seq: 0x0506_0708,
        snd_wnd: 0x0000_ffff,
        rcv_wnd: 0x0001_0000,
        mss: 1460,
        snd_wscale: 7,
        rcv_wscale: 9,
        sack: true,
        timestamps: true,
        ts_val: 0xdead_beef,
        snd_wl1: 0x0506_0700,
        max_window: 0x0080_0000,
        rcv_wup: 0x0506_0701,
    };
    let mut b = Vec::new();
    put_repair(&mut b, &t);
    let mut want = vec![1, 2, 3, 4, 5, 6, 7, 8]; // snd_seq, rcv_seq
    want.extend_from_slice(&[0, 0, 0xff, 0xff, 0, 1, 0, 0]); // snd_wnd, rcv_wnd
    want.extend_from_slice(&[0x05, 0xb4, 7, 9, 0x03]); // mss, wscales, flags
    want.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // ts_val
    want.extend_from_slice(&[5, 6, 7, 0, 0, 0x80, 0, 0, 5, 6, 7, 1]); // snd_wl1, max_window, rcv_wup
    assert_eq!(b, want);
    assert_eq!(Reader { buf: &b }.repair(), Ok(t));
}

#[test]
fn every_truncation_needs_more_bytes() {
    for m in samples() {
        let b = enc(&m);
        for cut in 0..b.len() {
            assert_eq!(decode(&b[..cut]), Ok(None), "{} cut at {cut}", m.name());
        }
    }
}

#[test]
fn bad_magic_is_rejected_at_the_first_wrong_byte() {
    assert_eq!(decode(b"X"), Err(ProtoError::BadMagic(b"X".to_vec())));
    assert_eq!(decode(b"SLMX"), Err(ProtoError::BadMagic(b"SLMX".to_vec())));
    let mut b = enc(&Message::Ack { last_applied: 1 });
    b[0] = b'T';
    assert!(matches!(decode(&b), Err(ProtoError::BadMagic(_))));
}

#[test]
fn bad_version_is_rejected() {
    let mut b = enc(&Message::Ack { last_applied: 1 });
    b[4] = 2;
    assert_eq!(decode(&b), Err(ProtoError::UnsupportedVersion(2)));
    assert_eq!(decode(&b[..5]), Err(ProtoError::UnsupportedVersion(2)));
}

#[test]
fn bad_kind_is_rejected() {
    let mut b = enc(&Message::Ack { last_applied: 1 });
    for kind in [0, 8, 255] {
        b[5] = kind;
        assert_eq!(decode(&b), Err(ProtoError::UnknownKind(kind)));
    }
}

#[test]
fn oversized_length_is_rejected_from_the_header_alone() {
    let mut h = b"SLMR\x01\x03".to_vec();
    h.extend_from_slice(&(MAX_FRAME + 1).to_be_bytes());
    // Only the header is present: the error comes before any body byte is awaited.
    assert_eq!(
        decode(&h),
        Err(ProtoError::FrameTooLarge(MAX_FRAME as u64 + 1))
    );
    h[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(decode(&h), Err(ProtoError::FrameTooLarge(u32::MAX as u64)));
    // MAX_FRAME itself is allowed: the decoder waits for the body.
    h[6..10].copy_from_slice(&MAX_FRAME.to_be_bytes());
    assert_eq!(decode(&h), Ok(None));
}

#[test]
fn length_shorter_or_longer_than_the_body_is_rejected() {
    let mut b = enc(&Message::Ack { last_applied: 1 });
    b[9] = 7; // body is 8 bytes; declare 7
    assert_eq!(decode(&b), Err(ProtoError::Truncated));
    let mut b = enc(&Message::Ack { last_applied: 1 });
    b[9] = 9;
    b.push(0);
    assert_eq!(decode(&b), Err(ProtoError::TrailingBytes(1)));
}

#[test]
fn body_field_errors() {
    // A string length above MAX_STR.
    let mut b = b"SLMR\x01\x01\x00\x00\x00\x02".to_vec();
    b.extend_from_slice(&(MAX_STR as u16 + 1).to_be_bytes());
    assert_eq!(decode(&b), Err(ProtoError::StringTooLong(MAX_STR + 1)));
    // A body shorter than its fields.
    let b = b"SLMR\x01\x06\x00\x00\x00\x00".to_vec();
    assert!(matches!(decode(&b), Err(ProtoError::Truncated)));
    // Invalid UTF-8.
    let mut h = enc(&Message::Hello {
        device: "ab".into(),
        traffic_group: "t".into(),
        epoch: 1,
        resume_from: None,
    });
    h[12] = 0xff;
    assert_eq!(decode(&h), Err(ProtoError::InvalidUtf8));
    // Bad option tag.
    let last = h.len() - 1;
    h[12] = b'a';
    h[last] = 2;
    assert!(matches!(
        decode(&h),
        Err(ProtoError::BadByte { value: 2, .. })
    ));
    // Bad address family and record kind.
    let mut d = enc(&Message::Delete {
        id: 1,
        key: RecordKey::TcpConn {
            client: a("1.2.3.4:5"),
            vip: a("1.2.3.4:6"),
        },
    });
    d[HEADER_LEN + 9] = 5;
    assert_eq!(decode(&d), Err(ProtoError::BadAddressFamily(5)));
    d[HEADER_LEN + 8] = 9;
    assert_eq!(decode(&d), Err(ProtoError::UnknownRecordKind(9)));
}

#[test]
fn encode_refuses_what_decode_would_reject() {
    let mut out = vec![0xaa];
    let long = "x".repeat(MAX_STR + 1);
    let r = encode(
        &Message::Hello {
            device: long,
            traffic_group: "tg-1".into(),
            epoch: 0,
            resume_from: None,
        },
        &mut out,
    );
    assert_eq!(r, Err(ProtoError::StringTooLong(MAX_STR + 1)));
    assert_eq!(out, [0xaa], "nothing is left half-written");
}

// ---------------------------------------------------------------------------------------------
// Property tests: no input panics or allocates without bound.

fn arb_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, p)| SocketAddr::new(Ipv4Addr::from(ip).into(), p)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, p)| SocketAddr::new(Ipv6Addr::from(ip).into(), p)),
    ]
}

fn arb_str() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

fn arb_repair() -> impl Strategy<Value = TcpRepair> {
    (
        any::<(u32, u32, u32, u32)>(),
        any::<(u16, u8, u8)>(),
        any::<(bool, bool, u32)>(),
        any::<(u32, u32, u32)>(),
    )
        .prop_map(
            |(
                (snd_seq, rcv_seq, snd_wnd, rcv_wnd),
                (mss, snd_wscale, rcv_wscale),
                (sack, timestamps, ts_val),
                (snd_wl1, max_window, rcv_wup),
            )| {
                TcpRepair {
                    snd_seq,
                    rcv_seq,
                    snd_wnd,
                    rcv_wnd,
                    mss,
                    snd_wscale,
                    rcv_wscale,
                    sack,
                    timestamps,
                    ts_val,
                    snd_wl1,
                    max_window,
                    rcv_wup,
                }
            },
        )
}

fn arb_kind() -> impl Strategy<Value = RecordKind> {
    prop_oneof![
        (
            (arb_str(), arb_str(), arb_str(), arb_str()),
            arb_addr(),
            arb_str(),
            any::<u64>()
        )
            .prop_map(
                |((profile, scope, key, pool), member, virtual_server, expiry_ms)| {
                    RecordKind::Persistence {
                        profile,
                        scope,
                        key,
                        pool,
                        member,
                        virtual_server,
                        expiry_ms,
                    }
                }
            ),
        (
            (arb_addr(), arb_addr(), arb_addr(), arb_addr()),
            any::<u64>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))
        )
            .prop_map(|((client, vip, member, snat), last_seen_ms, key)| {
                RecordKind::UdpFlow {
                    client,
                    vip,
                    member,
                    snat,
                    last_seen_ms,
                    key,
                }
            }),
        (
            (arb_addr(), arb_addr(), arb_addr(), arb_addr()),
            arb_repair(),
            arb_repair(),
            any::<u64>()
        )
            .prop_map(
                |((client, vip, member, snat), client_side, server_side, taken_ms)| {
                    RecordKind::TcpConn {
                        client,
                        vip,
                        member,
                        snat,
                        client_side,
                        server_side,
                        taken_ms,
                    }
                }
            ),
    ]
}

fn arb_record() -> impl Strategy<Value = Record> {
    (any::<u64>(), arb_str(), arb_kind()).prop_map(|(update_id, traffic_group, kind)| Record {
        update_id,
        traffic_group,
        kind,
    })
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (arb_str(), arb_str(), any::<u64>(), any::<Option<u64>>()).prop_map(
            |(device, traffic_group, epoch, resume_from)| Message::Hello {
                device,
                traffic_group,
                epoch,
                resume_from
            }
        ),
        any::<u64>().prop_map(|records| Message::ResyncBegin { records }),
        arb_record().prop_map(Message::Record),
        any::<u64>().prop_map(|last_id| Message::ResyncEnd { last_id }),
        (any::<u64>(), arb_record()).prop_map(|(id, r)| Message::Delete { id, key: r.key() }),
        any::<u64>().prop_map(|last_applied| Message::Ack { last_applied }),
        any::<u64>().prop_map(|sent_ms| Message::Heartbeat { sent_ms }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header_never_panic(
        kind in 1u8..=7,
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut b = b"SLMR\x01".to_vec();
        b.push(kind);
        b.extend_from_slice(&(body.len() as u32).to_be_bytes());
        b.extend_from_slice(&body);
        match decode(&b) {
            Ok(Some((_, n))) => prop_assert_eq!(n, b.len()),
            Ok(None) => prop_assert!(false, "a complete frame never needs more bytes"),
            Err(_) => {}
        }
    }

    #[test]
    fn arbitrary_messages_round_trip(m in arb_message()) {
        let mut b = Vec::new();
        encode(&m, &mut b).unwrap();
        prop_assert_eq!(decode(&b).unwrap(), Some((m, b.len())));
    }

    #[test]
    fn corrupted_frames_never_panic(m in arb_message(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut b = Vec::new();
        encode(&m, &mut b).unwrap();
        let i = at.index(b.len());
        b[i] = byte;
        let _ = decode(&b);
    }
}
