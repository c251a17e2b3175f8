use super::*;
use plugin_api::instantiate_native;
use proptest::prelude::*;

fn flow(transport: Transport, direction: Direction) -> Flow {
    Flow {
        transport,
        direction,
        client: "192.0.2.1:50000"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
        vip: "30.1.1.10:3389"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    }
}

fn tcp() -> Flow {
    flow(Transport::Tcp, Direction::ClientToServer)
}

/// MS-RDPBCGR 4.1.1, Client X.224 Connection Request PDU: TPKT length 0x2c, LI 0x27, CR,
/// `Cookie: mstshash=eltons\r\n`, then an RDP_NEG_REQ asking for standard RDP security.
const SPEC_411: [u8; 44] = [
    0x03, 0x00, 0x00, 0x2c, // tpktHeader
    0x27, 0xe0, 0x00, 0x00, 0x00, 0x00, 0x00, // x224Crq
    0x43, 0x6f, 0x6f, 0x6b, 0x69, 0x65, 0x3a, 0x20, 0x6d, 0x73, 0x74, 0x73, 0x68, 0x61, 0x73, 0x68,
    0x3d, 0x65, 0x6c, 0x74, 0x6f, 0x6e, 0x73, 0x0d, 0x0a, // Cookie: mstshash=eltons\r\n
    0x01, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, // rdpNegReq: PROTOCOL_RDP
];

const NEG_REQ_TLS_HYBRID: [u8; 8] = [0x01, 0x00, 0x08, 0x00, 0x03, 0x00, 0x00, 0x00];

/// A Connection Request with `variable` after the X.224 fixed part, lengths filled in.
fn cr(variable: &[u8]) -> Vec<u8> {
    let len = 11 + variable.len();
    assert!(len - 5 <= 254, "the LI is one octet");
    let mut v = vec![
        3,
        0,
        (len >> 8) as u8,
        len as u8,
        (len - 5) as u8,
        0xe0,
        0,
        0,
        0,
        0,
        0,
    ];
    v.extend_from_slice(variable);
    v
}

fn with_neg(line: &str) -> Vec<u8> {
    let mut v = line.as_bytes().to_vec();
    v.extend_from_slice(&NEG_REQ_TLS_HYBRID);
    cr(&v)
}

fn member(a: &str) -> Outcome {
    Outcome::Member(a.parse::<std::net::SocketAddr>().unwrap().into())
}

#[test]
fn the_spec_example_keys_on_mstshash() {
    let p = MsRdp::new("").unwrap();
    assert_eq!(cr(&SPEC_411[11..]), SPEC_411.to_vec(), "the builder agrees");
    assert_eq!(
        p.inspect(&tcp(), &SPEC_411),
        Outcome::Key(Key::new(b"eltons"))
    );
}

#[test]
fn mstshash_is_case_sensitive_as_sent() {
    let p = MsRdp::new("").unwrap();
    let a = p.inspect(&tcp(), &with_neg("Cookie: mstshash=Alice\r\n"));
    let b = p.inspect(&tcp(), &with_neg("Cookie: mstshash=alice\r\n"));
    assert_eq!(a, Outcome::Key(Key::new(b"Alice")));
    assert_ne!(a, b);
    // Without an RDP_NEG_REQ (old clients) too.
    assert_eq!(
        p.inspect(&tcp(), &cr(b"Cookie: mstshash=DOMAIN\\bob\r\n")),
        Outcome::Key(Key::new(b"DOMAIN\\bob"))
    );
}

#[test]
fn routing_token_encoding_derived_from_the_rule() {
    // 10.1.1.50 = bytes 0a 01 01 32, read little-endian: 0x3201010a = 838926602.
    // 3389 = bytes 0d 3d, read little-endian: 0x3d0d = 15629.
    assert_eq!(
        routing_token_for("10.1.1.50:3389".parse().unwrap()),
        "838926602.15629.0000"
    );
    assert_eq!(
        routing_token(b"838926602.15629.0000"),
        Some("10.1.1.50:3389".parse().unwrap())
    );
    // F5's published example of the same encoding: 10.1.1.100:80 = 1677787402.20480.
    assert_eq!(
        routing_token(b"1677787402.20480.0000"),
        Some("10.1.1.100:80".parse().unwrap())
    );
    // 839974922 (the value the task brief gave for 10.1.1.50) is 0x3211000a: 10.0.17.50.
    assert_eq!(
        routing_token(b"839974922.15629.0000"),
        Some("10.0.17.50:3389".parse().unwrap())
    );
}

#[test]
fn the_routing_token_example_names_the_member() {
    let p = MsRdp::new("").unwrap();
    let pdu = with_neg("Cookie: msts=838926602.15629.0000\r\n");
    assert_eq!(&pdu[..5], &[0x03, 0x00, 0x00, 0x36, 0x31]);
    assert_eq!(p.inspect(&tcp(), &pdu), member("10.1.1.50:3389"));
    let pdu = cr(b"Cookie: msts=838926602.15629.0000\r\n");
    assert_eq!(p.inspect(&tcp(), &pdu), member("10.1.1.50:3389"));
}

#[test]
fn round_trips_through_the_encoding() {
    for a in ["0.0.0.1:1", "255.255.255.255:65535", "192.0.2.77:3390"] {
        let a: std::net::SocketAddrV4 = a.parse().unwrap();
        let t = routing_token_for(a);
        assert_eq!(routing_token(t.as_bytes()), Some(a.into()), "{t}");
    }
}

#[test]
fn bad_routing_tokens() {
    let p = MsRdp::new("").unwrap();
    for t in [
        "Cookie: msts=4294967296.15629.0000\r\n",
        "Cookie: msts=838926602.65536.0000\r\n",
        "Cookie: msts=838926602.15629\r\n",
        "Cookie: msts=838926602.15629.0000.1\r\n",
        "Cookie: msts=+838926602.15629.0000\r\n",
        "Cookie: msts=83892660x.15629.0000\r\n",
        "Cookie: msts=\r\n",
        "Cookie: msts=838926602.15629.0000",
    ] {
        assert_eq!(p.inspect(&tcp(), &with_neg(t)), Outcome::Malformed, "{t:?}");
    }
    // Other routing tokens (Connection Broker's tsv://) are not ours.
    let t = "tsv://MS Terminal Services Plugin.1.Sessions\r\n";
    assert_eq!(p.inspect(&tcp(), &with_neg(t)), Outcome::NoMatch);
}

#[test]
fn no_cookie_is_no_match() {
    let p = MsRdp::new("").unwrap();
    assert_eq!(
        p.inspect(&tcp(), &cr(&NEG_REQ_TLS_HYBRID)),
        Outcome::NoMatch
    );
    assert_eq!(p.inspect(&tcp(), &cr(b"")), Outcome::NoMatch);
    assert_eq!(
        p.inspect(&tcp(), &with_neg("Cookie: mstshash=\r\n")),
        Outcome::NoMatch
    );
    // The cookie must be where the specification puts it, right after the fixed part.
    let mut v = NEG_REQ_TLS_HYBRID.to_vec();
    v.extend_from_slice(b"Cookie: mstshash=x\r\n");
    assert_eq!(p.inspect(&tcp(), &cr(&v)), Outcome::NoMatch);
}

#[test]
fn bad_tpkt_or_x224_is_malformed() {
    let p = MsRdp::new("").unwrap();
    let good = SPEC_411.to_vec();
    let mutate = |i: usize, v: u8| {
        let mut m = good.clone();
        m[i] = v;
        m
    };
    for (what, m) in [
        ("tpkt version", mutate(0, 2)),
        ("tpkt length < 11", {
            let mut m = mutate(3, 10);
            m.truncate(10);
            m
        }),
        ("li disagrees", mutate(4, 0x26)),
        ("connection confirm code", mutate(5, 0xd0)),
        ("data tpdu", mutate(5, 0xf0)),
        ("class 4", mutate(10, 0x40)),
        ("cookie without crlf", {
            let mut v = b"Cookie: mstshash=eltons".to_vec();
            v.extend_from_slice(&NEG_REQ_TLS_HYBRID);
            cr(&v)
        }),
        ("http", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("tls", vec![0x16, 0x03, 0x01, 0x00, 0xa5, 0x01]),
    ] {
        assert_eq!(p.inspect(&tcp(), &m), Outcome::Malformed, "{what}");
    }
    // Refused early, before the TPKT length's worth of bytes is there.
    assert_eq!(p.inspect(&tcp(), &[0x16]), Outcome::Malformed);
    assert_eq!(
        p.inspect(&tcp(), &[3, 0, 0, 0x2c, 0x27, 0xd0]),
        Outcome::Malformed
    );
    // The reserved byte is not checked; the dst/src references are ignored.
    let m = mutate(1, 7);
    assert_eq!(p.inspect(&tcp(), &m), Outcome::Key(Key::new(b"eltons")));
    let m = mutate(7, 0x12);
    assert_eq!(p.inspect(&tcp(), &m), Outcome::Key(Key::new(b"eltons")));
}

#[test]
fn every_truncation_needs_more() {
    let p = MsRdp::new("").unwrap();
    for m in [
        SPEC_411.to_vec(),
        with_neg("Cookie: msts=838926602.15629.0000\r\n"),
        cr(&NEG_REQ_TLS_HYBRID),
    ] {
        let len = m.len() as u32;
        for n in 0..m.len() {
            let want = if n < 4 { 4 } else { len };
            assert_eq!(
                p.inspect(&tcp(), &m[..n]),
                Outcome::NeedMore { min_len: want },
                "{n}"
            );
        }
    }
    // Bytes beyond the PDU (none expected before the server answers) are ignored.
    let mut m = SPEC_411.to_vec();
    m.extend_from_slice(b"trailing");
    assert_eq!(p.inspect(&tcp(), &m), Outcome::Key(Key::new(b"eltons")));
}

#[test]
fn requests_longer_than_the_length_indicator_allows_are_malformed() {
    let p = MsRdp::new("").unwrap();
    // The longest consistent request: LI 254, 259 bytes.
    let id = "u".repeat(259 - 11 - 19 - 8);
    let m = with_neg(&format!("Cookie: mstshash={id}\r\n"));
    assert_eq!((m.len(), m[4]), (259, 254));
    assert_eq!(p.inspect(&tcp(), &m), Outcome::Key(Key::new(id.as_bytes())));
    assert_eq!(
        p.inspect(&tcp(), &m[..4]),
        Outcome::NeedMore { min_len: 259 }
    );
    // One more byte cannot be described by the LI: malformed from the TPKT header on, whatever
    // the LI byte says.
    for li in [255u8, 0] {
        let mut m = vec![3, 0, 1, 4, li, 0xe0, 0, 0, 0, 0, 0];
        m.resize(260, b'u');
        for n in [4, 5, m.len()] {
            assert_eq!(p.inspect(&tcp(), &m[..n]), Outcome::Malformed, "{li} {n}");
        }
    }
    // A long routing token whose LI wrapped around (a client bug) is refused too.
    let mut m = vec![
        3,
        0,
        0x04,
        0x00,
        ((1024 - 5) & 0xff) as u8,
        0xe0,
        0,
        0,
        0,
        0,
        0,
    ];
    m.resize(1024, b'x');
    assert_eq!(p.inspect(&tcp(), &m), Outcome::Malformed);
}

#[test]
fn udp_and_server_to_client_are_no_match() {
    let p = MsRdp::new("").unwrap();
    for (t, d) in [
        (Transport::Udp, Direction::ClientToServer),
        (Transport::Tcp, Direction::ServerToClient),
        (Transport::Udp, Direction::ServerToClient),
    ] {
        assert_eq!(p.inspect(&flow(t, d), &SPEC_411), Outcome::NoMatch);
        assert_eq!(p.inspect(&flow(t, d), b"\x16junk"), Outcome::NoMatch);
    }
}

#[test]
fn config_must_be_empty() {
    assert!(MsRdp::new("").is_ok());
    assert!(MsRdp::new(" ").is_ok());
    let e = MsRdp::new("case=insensitive").unwrap_err();
    assert!(
        e.contains("takes no settings") && e.contains("case=insensitive"),
        "{e}"
    );
}

#[test]
fn through_the_abi_wrapper() {
    let i = instantiate_native::<MsRdp>("").unwrap();
    assert_eq!(
        i.inspect(&tcp(), &SPEC_411),
        Outcome::Key(Key::new(b"eltons"))
    );
    assert_eq!(
        i.inspect(&tcp(), &with_neg("Cookie: msts=838926602.15629.0000\r\n")),
        member("10.1.1.50:3389")
    );
    assert_eq!(
        i.inspect(&tcp(), &SPEC_411[..20]),
        Outcome::NeedMore { min_len: 44 }
    );
    assert_eq!(i.inspect(&tcp(), b"\x02"), Outcome::Malformed);
    assert_eq!(
        i.inspect(&tcp(), &cr(&NEG_REQ_TLS_HYBRID)),
        Outcome::NoMatch
    );
    let e = instantiate_native::<MsRdp>("x").unwrap_err();
    assert!(e.contains("takes no settings"), "{e}");
}

fn any_flow() -> impl Strategy<Value = Flow> {
    (any::<bool>(), any::<bool>()).prop_map(|(t, d)| {
        flow(
            if t { Transport::Tcp } else { Transport::Udp },
            if d {
                Direction::ClientToServer
            } else {
                Direction::ServerToClient
            },
        )
    })
}

fn check_bounds(f: &Flow, b: &[u8], o: Outcome) {
    match o {
        Outcome::NeedMore { min_len } => {
            assert_eq!(f.transport, Transport::Tcp);
            assert!(min_len as usize > b.len() && min_len <= MAX_INSPECT);
        }
        Outcome::Panicked => panic!("{o:?}"),
        _ => {}
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(f in any_flow(), b in proptest::collection::vec(any::<u8>(), 0..300)) {
        let p = MsRdp::new("").unwrap();
        check_bounds(&f, &b, p.inspect(&f, &b));
    }

    /// A valid header with arbitrary variable bytes: never panics, and the outcome does not
    /// depend on trailing bytes beyond the TPKT length.
    #[test]
    fn arbitrary_variable_parts_never_panic(
        f in any_flow(),
        v in proptest::collection::vec(any::<u8>(), 0..220),
        prefix in prop_oneof![Just(&b""[..]), Just(&b"Cookie: mstshash="[..]), Just(&b"Cookie: msts="[..])],
        tail in proptest::collection::vec(any::<u8>(), 0..20),
    ) {
        let mut var = prefix.to_vec();
        var.extend_from_slice(&v);
        let m = cr(&var);
        let p = MsRdp::new("").unwrap();
        let o = p.inspect(&f, &m);
        check_bounds(&f, &m, o);
        let mut longer = m.clone();
        longer.extend_from_slice(&tail);
        prop_assert_eq!(p.inspect(&f, &longer), o);
    }

    #[test]
    fn any_routing_token_round_trips(ip in any::<u32>(), port in any::<u16>()) {
        let a = std::net::SocketAddrV4::new(Ipv4Addr::from(ip), port);
        let t = routing_token_for(a);
        prop_assert_eq!(routing_token(t.as_bytes()), Some(a.into()));
        let p = MsRdp::new("").unwrap();
        let m = with_neg(&format!("Cookie: msts={t}\r\n"));
        prop_assert_eq!(p.inspect(&tcp(), &m), Outcome::Member(SocketAddr::from(a).into()));
    }

    #[test]
    fn mutated_requests_never_panic(f in any_flow(), at in 0usize..44, byte in any::<u8>(), cut in 0usize..=44) {
        let mut m = SPEC_411.to_vec();
        m[at] = byte;
        m.truncate(cut);
        let p = MsRdp::new("").unwrap();
        check_bounds(&f, &m, p.inspect(&f, &m));
    }
}
