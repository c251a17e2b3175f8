use super::*;
use plugin_api::instantiate_native;
use proptest::prelude::*;

fn flow(transport: Transport, direction: Direction) -> Flow {
    Flow {
        transport,
        direction,
        client: "192.0.2.1:5060"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
        vip: "30.1.1.10:5060"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    }
}

fn udp() -> Flow {
    flow(Transport::Udp, Direction::ClientToServer)
}

fn tcp() -> Flow {
    flow(Transport::Tcp, Direction::ClientToServer)
}

fn key(s: &str) -> Outcome {
    Outcome::Key(Key::new(s.as_bytes()))
}

const SDP: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 pc33.atlanta.com\r\n\
s=-\r\n\
c=IN IP4 pc33.atlanta.com\r\n\
t=0 0\r\n\
m=audio 49172 RTP/AVP 0\r\n\
a=rtpmap:0 PCMU/8000\r\n";

/// RFC 3261 §24.2 F1 (INVITE Alice -> atlanta.com proxy), with a real SDP body and its length.
fn invite_f1() -> Vec<u8> {
    format!(
        "INVITE sip:bob@biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\
\r\n{SDP}",
        SDP.len()
    )
    .into_bytes()
}

/// The same INVITE in compact forms (§7.3.3), odd name case, whitespace before colons and a
/// folded Subject (§7.3.1's example).
fn invite_compact_folded() -> Vec<u8> {
    format!(
        "INVITE sip:bob@biloxi.com SIP/2.0\r\n\
v: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8\r\n\
Max-Forwards: 70\r\n\
t: Bob <sip:bob@biloxi.com>\r\n\
f: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
Subject: I know you're there,\r\n \
pick up the phone\r\n \
and talk to me!\r\n\
I  :   a84b4c76e66710@pc33.atlanta.com  \r\n\
CSeq: 314159 INVITE\r\n\
m: <sip:alice@pc33.atlanta.com>\r\n\
c: application/sdp\r\n\
L\t: {}\r\n\
\r\n{SDP}",
        SDP.len()
    )
    .into_bytes()
}

/// RFC 3261 §24.2 F9 (200 OK Bob -> proxy), a Status-Line.
fn ok_f9() -> Vec<u8> {
    b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP server10.biloxi.com;branch=z9hG4bK4b43c2ff8.1;received=192.0.2.3\r\n\
To: Bob <sip:bob@biloxi.com>;tag=a6c85cf\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:bob@192.0.2.4>\r\n\
Content-Length: 0\r\n\
\r\n"
        .to_vec()
}

const F1_ID: &str = "a84b4c76e66710@pc33.atlanta.com";

fn header_len(m: &[u8]) -> usize {
    m.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4
}

#[test]
fn udp_rfc3261_examples_key_on_the_call_id() {
    let p = Sip::new("").unwrap();
    assert_eq!(p.inspect(&udp(), &invite_f1()), key(F1_ID));
    assert_eq!(p.inspect(&udp(), &invite_compact_folded()), key(F1_ID));
    assert_eq!(p.inspect(&udp(), &ok_f9()), key(F1_ID));
}

#[test]
fn tcp_rfc3261_examples_key_on_the_call_id() {
    let p = Sip::new("").unwrap();
    assert_eq!(p.inspect(&tcp(), &invite_f1()), key(F1_ID));
    assert_eq!(p.inspect(&tcp(), &invite_compact_folded()), key(F1_ID));
    assert_eq!(p.inspect(&tcp(), &ok_f9()), key(F1_ID));
    // Header section complete, body not there yet: the key is known already.
    let m = invite_f1();
    assert_eq!(p.inspect(&tcp(), &m[..header_len(&m)]), key(F1_ID));
}

#[test]
fn a_folded_call_id_is_unfolded_and_trimmed() {
    let p = Sip::new("").unwrap();
    let m = b"OPTIONS sip:carol@chicago.com SIP/2.0\r\n\
Call-ID:\r\n\t  f81d4fae-7dec-11d0-a765-00a0c91e6bf6@biloxi.com \r\n\
CSeq: 1 OPTIONS\r\n\r\n";
    let id = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6@biloxi.com";
    assert_eq!(p.inspect(&udp(), m), key(id));
    assert_eq!(p.inspect(&tcp(), m), key(id));
    // Text on two lines: the fold is one SP (§7.3.1).
    let m = b"OPTIONS sip:carol@chicago.com SIP/2.0\r\ncall-id: abc  \r\n   def\r\n\r\n";
    assert_eq!(p.inspect(&udp(), m), key("abc def"));
}

#[test]
fn call_ids_are_case_sensitive_and_the_first_counts() {
    let p = Sip::new("").unwrap();
    let a = b"BYE sip:a@b SIP/2.0\r\nCALL-ID: AbC@x\r\ni: other\r\n\r\n";
    let b = b"BYE sip:a@b SIP/2.0\r\ncall-id: abc@x\r\n\r\n";
    assert_eq!(p.inspect(&udp(), a), key("AbC@x"));
    assert_ne!(p.inspect(&udp(), a), p.inspect(&udp(), b));
}

#[test]
fn bare_lf_line_ends_and_leading_crlfs_are_accepted() {
    let p = Sip::new("").unwrap();
    let m = b"\r\n\r\nACK sip:bob@192.0.2.4 SIP/2.0\nCall-ID: x1@y\nContent-Length: 0\n\n";
    assert_eq!(p.inspect(&udp(), m), key("x1@y"));
    assert_eq!(p.inspect(&tcp(), m), key("x1@y"));
}

#[test]
fn a_datagram_without_the_empty_line_still_has_its_headers() {
    let p = Sip::new("").unwrap();
    assert_eq!(
        p.inspect(&udp(), b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: q@r"),
        key("q@r")
    );
    // Over TCP the same bytes wait for more.
    let m = b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: q@r";
    assert_eq!(
        p.inspect(&tcp(), m),
        Outcome::NeedMore {
            min_len: m.len() as u32 + 1
        }
    );
}

#[test]
fn no_call_id_is_no_match() {
    let p = Sip::new("").unwrap();
    let m = b"OPTIONS sip:a@b SIP/2.0\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(p.inspect(&udp(), m), Outcome::NoMatch);
    assert_eq!(p.inspect(&tcp(), m), Outcome::NoMatch);
    // `Call-Info` and `Call-IDx` are other headers.
    let m = b"OPTIONS sip:a@b SIP/2.0\r\nCall-Info: <http://x>\r\nCall-IDx: 1\r\n\r\n";
    assert_eq!(p.inspect(&udp(), m), Outcome::NoMatch);
    // Keep-alives.
    assert_eq!(p.inspect(&udp(), b""), Outcome::NoMatch);
    assert_eq!(p.inspect(&udp(), b"\r\n\r\n"), Outcome::NoMatch);
    assert_eq!(
        p.inspect(&tcp(), b"\r\n\r\n"),
        Outcome::NeedMore { min_len: 5 }
    );
}

#[test]
fn not_sip_is_malformed() {
    let p = Sip::new("").unwrap();
    let bad: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"INVITE sip:bob@biloxi.com SIP/2.0 extra\r\nCall-ID: a\r\n\r\n",
        b"INVITE  sip:bob@biloxi.com SIP/2.0\r\nCall-ID: a\r\n\r\n",
        b"INVITE bob SIP/2.0\r\nCall-ID: a\r\n\r\n",
        b"INVITE sip:bob@biloxi.com SIP/2\r\nCall-ID: a\r\n\r\n",
        b"SIP/2.0 20 OK\r\nCall-ID: a\r\n\r\n",
        b"SIP/2.0 2000 OK\r\nCall-ID: a\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"INV\x00ITE sip:a@b SIP/2.0\r\n\r\n",
        // Header problems: no colon, a name that is not a token, an empty Call-ID, a
        // continuation line right after the start line.
        b"BYE sip:a@b SIP/2.0\r\nCall-ID a\r\n\r\n",
        b"BYE sip:a@b SIP/2.0\r\nCall ID: a\r\n\r\n",
        b"BYE sip:a@b SIP/2.0\r\nCall-ID:   \r\n\r\n",
        b"BYE sip:a@b SIP/2.0\r\n Call-ID: a\r\n\r\n",
    ];
    for m in bad {
        let s = String::from_utf8_lossy(m);
        assert_eq!(p.inspect(&udp(), m), Outcome::Malformed, "udp {s:?}");
        assert_eq!(p.inspect(&tcp(), m), Outcome::Malformed, "tcp {s:?}");
    }
    // Bad Content-Length: over TCP it frames the stream, so it is malformed there.
    let m = b"BYE sip:a@b SIP/2.0\r\nCall-ID: a\r\nl: 12x\r\n\r\n";
    assert_eq!(p.inspect(&tcp(), m), Outcome::Malformed);
    let m = b"BYE sip:a@b SIP/2.0\r\nCall-ID: a\r\nl: 1\r\nContent-Length: 2\r\n\r\n";
    assert_eq!(p.inspect(&tcp(), m), Outcome::Malformed);
}

#[test]
fn partial_non_sip_is_malformed_early_over_tcp() {
    let p = Sip::new("").unwrap();
    assert_eq!(p.inspect(&tcp(), b"\x16\x03\x01"), Outcome::Malformed);
    assert_eq!(
        p.inspect(&tcp(), b"GET /"),
        Outcome::NeedMore { min_len: 6 }
    );
    assert_eq!(p.inspect(&tcp(), b"SIP/2.x"), Outcome::Malformed);
    assert_eq!(p.inspect(&tcp(), b"INV"), Outcome::NeedMore { min_len: 4 });
}

#[test]
fn tcp_headers_beyond_max_inspect_are_no_match() {
    let p = Sip::new("").unwrap();
    let mut m = b"INVITE sip:bob@biloxi.com SIP/2.0\r\n".to_vec();
    while m.len() < MAX_INSPECT as usize + 100 {
        m.extend_from_slice(b"X-Padding: 0123456789012345678901234567890123456789\r\n");
    }
    m.extend_from_slice(b"Call-ID: late@x\r\n\r\n");
    assert_eq!(p.inspect(&tcp(), &m), Outcome::NoMatch);
    let cut = &m[..MAX_INSPECT as usize - 1];
    assert_eq!(
        p.inspect(&tcp(), cut),
        Outcome::NeedMore {
            min_len: MAX_INSPECT
        }
    );
    assert_eq!(
        p.inspect(&tcp(), &m[..MAX_INSPECT as usize]),
        Outcome::NoMatch
    );
    // A datagram is read whole.
    assert_eq!(p.inspect(&udp(), &m), key("late@x"));
}

#[test]
fn tcp_many_dialogs_key_on_the_first_message() {
    let p = Sip::new("").unwrap();
    let mut stream = invite_f1();
    stream.extend_from_slice(b"BYE sip:x@y SIP/2.0\r\nCall-ID: second@dialog\r\nl: 0\r\n\r\n");
    assert_eq!(p.inspect(&tcp(), &stream), key(F1_ID));
}

#[test]
fn server_to_client_is_no_match() {
    let p = Sip::new("").unwrap();
    for t in [Transport::Tcp, Transport::Udp] {
        let f = flow(t, Direction::ServerToClient);
        assert_eq!(p.inspect(&f, &ok_f9()), Outcome::NoMatch);
        assert_eq!(p.inspect(&f, b"garbage"), Outcome::NoMatch);
    }
}

#[test]
fn every_truncation_needs_more_over_tcp_and_never_panics_over_udp() {
    let p = Sip::new("").unwrap();
    for m in [invite_f1(), invite_compact_folded(), ok_f9()] {
        let h = header_len(&m);
        for n in 0..=m.len() {
            let t = p.inspect(&tcp(), &m[..n]);
            if n < h {
                assert_eq!(
                    t,
                    Outcome::NeedMore {
                        min_len: n as u32 + 1
                    },
                    "tcp {n}"
                );
            } else {
                assert_eq!(t, key(F1_ID), "tcp {n}");
            }
            let u = p.inspect(&udp(), &m[..n]);
            assert!(
                matches!(u, Outcome::Key(_) | Outcome::NoMatch | Outcome::Malformed),
                "udp {n}: {u:?}"
            );
        }
    }
}

#[test]
fn config_must_be_empty() {
    assert!(Sip::new("").is_ok());
    assert!(Sip::new("  \n").is_ok());
    let e = Sip::new("max=3").unwrap_err();
    assert!(
        e.contains("takes no settings") && e.contains("max=3"),
        "{e}"
    );
}

#[test]
fn through_the_abi_wrapper() {
    let i = instantiate_native::<Sip>("").unwrap();
    assert_eq!(i.inspect(&udp(), &invite_f1()), key(F1_ID));
    assert_eq!(i.inspect(&tcp(), &invite_compact_folded()), key(F1_ID));
    let m = invite_f1();
    assert_eq!(
        i.inspect(&tcp(), &m[..10]),
        Outcome::NeedMore { min_len: 11 }
    );
    assert_eq!(
        i.inspect(&udp(), b"GET / HTTP/1.0\r\n\r\n"),
        Outcome::Malformed
    );
    assert_eq!(
        i.inspect(&flow(Transport::Tcp, Direction::ServerToClient), &m),
        Outcome::NoMatch
    );
    let e = instantiate_native::<Sip>("x").unwrap_err();
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
        Outcome::Panicked | Outcome::Member(_) => panic!("{o:?}"),
        _ => {}
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(f in any_flow(), b in proptest::collection::vec(any::<u8>(), 0..600)) {
        let p = Sip::new("").unwrap();
        check_bounds(&f, &b, p.inspect(&f, &b));
    }

    /// SIP-looking noise: start lines, headers, folds, colons and line ends in any order.
    #[test]
    fn sip_shaped_bytes_never_panic(
        f in any_flow(),
        parts in proptest::collection::vec(prop_oneof![
            Just(&b"INVITE sip:a@b SIP/2.0"[..]), Just(&b"SIP/2.0 200 OK"[..]),
            Just(&b"Call-ID"[..]), Just(&b"i"[..]), Just(&b"l"[..]), Just(&b":"[..]),
            Just(&b" "[..]), Just(&b"\t"[..]), Just(&b"\r\n"[..]), Just(&b"\n"[..]),
            Just(&b"\r"[..]), Just(&b"abc@x"[..]), Just(&b"12"[..]), Just(&b"\xff"[..]),
        ], 0..60),
    ) {
        let b = parts.concat();
        let p = Sip::new("").unwrap();
        check_bounds(&f, &b, p.inspect(&f, &b));
    }

    #[test]
    fn mutated_invites_never_panic(f in any_flow(), at in 0usize..400, byte in any::<u8>(), cut in 0usize..400) {
        let mut m = invite_compact_folded();
        let at = at % m.len();
        m[at] = byte;
        m.truncate(cut.max(1) * m.len() / 400);
        let p = Sip::new("").unwrap();
        check_bounds(&f, &m, p.inspect(&f, &m));
    }
}
