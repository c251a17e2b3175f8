//! Hellos built byte by byte from RFC 5246 §7.4.1.2/§7.4.1.3 and RFC 8446 §4.1.2/§4.1.3, and
//! OpenSSL captures (fixtures/README.md).

use super::*;
use plugin_api::{instantiate_native, Transport};
use proptest::prelude::*;

fn flow(direction: Direction) -> Flow {
    Flow {
        transport: Transport::Tcp,
        direction,
        client: "192.0.2.1:40000"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
        vip: "30.1.1.10:443"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    }
}

const C2S: Direction = Direction::ClientToServer;
const S2C: Direction = Direction::ServerToClient;

fn inspect(direction: Direction, bytes: &[u8]) -> Outcome {
    Ssl.inspect(&flow(direction), bytes)
}

/// Hex digits; on each line, whatever follows the first word that is not hex is a comment.
fn hex(s: &str) -> Vec<u8> {
    let s: String = s
        .lines()
        .flat_map(|l| {
            l.split_whitespace()
                .take_while(|w| w.len() % 2 == 0 && w.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const SID: [u8; 32] = [
    0x5e, 0x55, 0x10, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d,
    0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d,
];

/// A TLS 1.2 ClientHello in one record, written out field by field (RFC 5246 §7.4.1.2), with
/// the session id `SID` and extensions (server_name "a.example", extended_master_secret).
fn client_hello_12_literal() -> Vec<u8> {
    hex("
        16 0301 0067                    record: handshake, TLS 1.0 record version, length 103
        01 000063                       handshake: client_hello, length 99
        0303                            client_version TLS 1.2
        000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f    random
        20                              session_id length 32 (offset 43)
        5e5510 0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d    session_id (44)
        0004 c02f 009c                  cipher_suites: 2 suites
        01 00                           compression_methods: null
        0016                            extensions length 22
        0000 000e 000c 00 0009 612e6578616d706c65   server_name: host_name a.example
        0017 0000                       extended_master_secret
        ")
}

/// Builds an extension.
fn ext(typ: u16, data: &[u8]) -> Vec<u8> {
    let mut e = typ.to_be_bytes().to_vec();
    e.extend_from_slice(&(data.len() as u16).to_be_bytes());
    e.extend_from_slice(data);
    e
}

/// A handshake message: type, 24-bit length, body.
fn handshake(typ: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![typ];
    m.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    m.extend_from_slice(body);
    m
}

/// A ClientHello body; `exts` None means no extensions block at all.
fn client_hello(sid: &[u8], exts: Option<&[Vec<u8>]>) -> Vec<u8> {
    let mut b = vec![0x03, 0x03];
    b.extend((0..32u8).map(|i| 0xa0 ^ i));
    b.push(sid.len() as u8);
    b.extend_from_slice(sid);
    b.extend_from_slice(&[0x00, 0x06, 0x13, 0x01, 0xc0, 0x2f, 0x00, 0x9c]);
    b.extend_from_slice(&[0x01, 0x00]);
    if let Some(exts) = exts {
        let all: Vec<u8> = exts.concat();
        b.extend_from_slice(&(all.len() as u16).to_be_bytes());
        b.extend_from_slice(&all);
    }
    handshake(1, &b)
}

fn server_hello(sid: &[u8], exts: Option<&[Vec<u8>]>) -> Vec<u8> {
    let mut b = vec![0x03, 0x03];
    b.extend((0..32u8).map(|i| 0x50 ^ i));
    b.push(sid.len() as u8);
    b.extend_from_slice(sid);
    b.extend_from_slice(&[0xc0, 0x2f, 0x00]);
    if let Some(exts) = exts {
        let all: Vec<u8> = exts.concat();
        b.extend_from_slice(&(all.len() as u16).to_be_bytes());
        b.extend_from_slice(&all);
    }
    handshake(2, &b)
}

/// Wraps `msg` in handshake records, cutting it at `cuts` (offsets into `msg`).
fn records(msg: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&msg.len())) {
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&((end - start) as u16).to_be_bytes());
        out.extend_from_slice(&msg[start..end]);
        start = end;
    }
    out
}

fn supported_versions_client(versions: &[u16]) -> Vec<u8> {
    let mut d = vec![(versions.len() * 2) as u8];
    for v in versions {
        d.extend_from_slice(&v.to_be_bytes());
    }
    ext(0x002b, &d)
}

fn key(b: &[u8]) -> Outcome {
    Outcome::Key(Key::new(b))
}

/// Every proper prefix of `bytes` asks for more, and for more than it has.
fn assert_prefixes_need_more(direction: Direction, bytes: &[u8]) {
    for n in 0..bytes.len() {
        match inspect(direction, &bytes[..n]) {
            Outcome::NeedMore { min_len } => {
                assert!(min_len as usize > n, "prefix {n}: min_len {min_len}");
                assert!(
                    min_len as usize <= bytes.len(),
                    "prefix {n}: min_len {min_len}"
                );
            }
            o => panic!("prefix {n} of {}: {o:?}", bytes.len()),
        }
    }
}

#[test]
fn the_literal_tls12_client_hello_keys_on_its_session_id_at_offset_44() {
    let b = client_hello_12_literal();
    assert_eq!(b.len(), 5 + 0x67);
    assert_eq!(b[43], 32);
    assert_eq!(&b[44..76], &SID);
    assert_eq!(inspect(C2S, &b), key(&SID));
    assert_prefixes_need_more(C2S, &b);
    // Bytes after the hello (the rest of the flight) change nothing.
    let mut more = b.clone();
    more.extend_from_slice(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01]);
    assert_eq!(inspect(C2S, &more), key(&SID));
}

#[test]
fn built_client_hellos_with_and_without_session_id_and_extensions() {
    let sni = ext(0x0000, &hex("000c 00 0009 612e6578616d706c65"));
    let with_exts: &[Vec<u8>] = &[sni.clone(), ext(0x0017, &[]), ext(0xff01, &[0])];
    for exts in [None, Some(with_exts), Some(&[][..])] {
        let b = records(&client_hello(&SID, exts), &[]);
        assert_eq!(b[43], 32);
        assert_eq!(inspect(C2S, &b), key(&SID), "{exts:?}");
        assert_prefixes_need_more(C2S, &b);
        let empty = records(&client_hello(&[], exts), &[]);
        assert_eq!(inspect(C2S, &empty), Outcome::NoMatch, "{exts:?}");
        assert_prefixes_need_more(C2S, &empty);
    }
    // Short ids are ids too (RFC 5246: session_id<0..32>).
    let b = records(&client_hello(&[7], Some(with_exts)), &[]);
    assert_eq!(inspect(C2S, &b), key(&[7]));
    // supported_versions offering only TLS 1.2 (and a GREASE value) is not TLS 1.3.
    let sv = supported_versions_client(&[0x0a0a, 0x0303]);
    let b = records(&client_hello(&SID, Some(&[sni, sv])), &[]);
    assert_eq!(inspect(C2S, &b), key(&SID));
}

#[test]
fn a_client_hello_split_across_records_is_reassembled() {
    let msg = client_hello(&SID, Some(&[ext(0x0017, &[]), ext(0x0023, &[])]));
    // Cut everywhere: in the handshake header, the random, the id, the extensions.
    for cut in 1..msg.len() {
        let b = records(&msg, &[cut]);
        assert_eq!(inspect(C2S, &b), key(&SID), "cut at {cut}");
    }
    // Three records, and every TCP segmentation of them.
    let b = records(&msg, &[2, 40]);
    assert_eq!(inspect(C2S, &b), key(&SID));
    assert_prefixes_need_more(C2S, &b);
    // A record the hello does not reach is not waited for.
    let mut b = records(&msg, &[]);
    b.extend_from_slice(&[22, 3, 3]);
    assert_eq!(inspect(C2S, &b), key(&SID));
}

#[test]
fn tls13_client_hellos_do_not_key_on_their_legacy_session_id() {
    let legacy: Vec<u8> = (0..32).map(|i| 0x80 | i).collect();
    let sv = supported_versions_client(&[0x0304, 0x0303]);
    let b = records(
        &client_hello(&legacy, Some(&[ext(0x000a, &[0, 2, 0, 0x1d]), sv])),
        &[],
    );
    assert_eq!(b[43], 32);
    assert_eq!(inspect(C2S, &b), Outcome::NoMatch);
    assert_prefixes_need_more(C2S, &b);
    let only13 = supported_versions_client(&[0x0304]);
    let b = records(&client_hello(&legacy, Some(&[only13])), &[30]);
    assert_eq!(inspect(C2S, &b), Outcome::NoMatch);
}

#[test]
fn server_hellos_key_on_the_id_the_server_assigned_and_resumptions_match() {
    let assigned: Vec<u8> = (0..32).map(|i| 0x40 + i).collect();
    let b = records(&server_hello(&assigned, Some(&[ext(0xff01, &[0])])), &[]);
    assert_eq!(b[43], 32);
    assert_eq!(inspect(S2C, &b), key(&assigned));
    assert_prefixes_need_more(S2C, &b);
    // Resumption: the client offers the id, the server echoes it: the same key both ways.
    let client = records(&client_hello(&assigned, None), &[]);
    let server = records(&server_hello(&assigned, None), &[]);
    assert_eq!(inspect(C2S, &client), inspect(S2C, &server));
    assert_eq!(inspect(S2C, &server), key(&assigned));
    // No id from the server (no session cache): nothing to learn.
    assert_eq!(
        inspect(S2C, &records(&server_hello(&[], None), &[])),
        Outcome::NoMatch
    );
    // TLS 1.3 ServerHello (supported_versions selects 0x0304) echoing a legacy id.
    let b = records(&server_hello(&SID, Some(&[ext(0x002b, &[3, 4])])), &[]);
    assert_eq!(inspect(S2C, &b), Outcome::NoMatch);
    // The ServerHello followed by more handshake messages in the same record.
    let mut msgs = server_hello(&assigned, None);
    msgs.extend_from_slice(&handshake(11, &[0, 0, 0]));
    assert_eq!(inspect(S2C, &records(&msgs, &[])), key(&assigned));
}

#[test]
fn openssl_captures() {
    let f = |s: &str| hex(s);
    let full_ch = f(include_str!(
        "../fixtures/openssl-tls12full-clienthello.hex"
    ));
    let full_sh = f(include_str!(
        "../fixtures/openssl-tls12full-serverhello.hex"
    ));
    let res_ch = f(include_str!(
        "../fixtures/openssl-tls12resume-clienthello.hex"
    ));
    let res_sh = f(include_str!(
        "../fixtures/openssl-tls12resume-serverhello.hex"
    ));
    let t13_ch = f(include_str!("../fixtures/openssl-tls13-clienthello.hex"));
    let t13_sh = f(include_str!("../fixtures/openssl-tls13-serverhello.hex"));
    let id = hex("f78f915211170cf699cb4d93a307fe7e94929acf6349b0e248649a7dc51a730b");

    assert_eq!(inspect(C2S, &full_ch), Outcome::NoMatch);
    assert_eq!(inspect(S2C, &full_sh), key(&id));
    assert_eq!(inspect(C2S, &res_ch), key(&id));
    assert_eq!(inspect(S2C, &res_sh), key(&id));
    assert_eq!((res_ch[43], &res_ch[44..76]), (32, &id[..]));
    assert_eq!(inspect(C2S, &t13_ch), Outcome::NoMatch);
    assert_eq!(inspect(S2C, &t13_sh), Outcome::NoMatch);
    // The TLS 1.3 hellos do carry a 32-byte id: it is the version that makes them NoMatch.
    assert_eq!(t13_ch[43], 32);
    assert!(parse_hello(&t13_ch, Hello::Client).unwrap().tls13);
    assert!(parse_hello(&t13_sh, Hello::Server).unwrap().tls13);
    for (d, b) in [
        (C2S, &full_ch),
        (S2C, &full_sh),
        (C2S, &res_ch),
        (S2C, &res_sh),
        (C2S, &t13_ch),
        (S2C, &t13_sh),
    ] {
        assert_prefixes_need_more(d, b);
        // The same hello cut into two records at every point.
        let msg = &b[5..];
        for cut in 1..msg.len() {
            let split = records(msg, &[cut]);
            assert_eq!(inspect(d, &split), inspect(d, b), "cut at {cut}");
        }
    }
}

#[test]
fn not_tls_is_malformed_as_soon_as_it_shows() {
    assert_eq!(inspect(C2S, b"G"), Outcome::Malformed);
    assert_eq!(inspect(C2S, b"GET / HTTP/1.1\r\n"), Outcome::Malformed);
    assert_eq!(inspect(C2S, b"SSH-2.0-OpenSSH_9.2\r\n"), Outcome::Malformed);
    assert_eq!(inspect(C2S, &[22, 4]), Outcome::Malformed); // version 4.x
    assert_eq!(inspect(C2S, &[22, 3, 9]), Outcome::Malformed);
    assert_eq!(inspect(C2S, &[23, 3, 3, 0, 5]), Outcome::Malformed); // application data first
    assert_eq!(inspect(C2S, &[]), Outcome::NeedMore { min_len: 6 });
    assert_eq!(inspect(C2S, &[22]), Outcome::NeedMore { min_len: 6 });
}

#[test]
fn malformed_hellos() {
    let good = client_hello_12_literal();
    let with = |i: usize, v: u8| {
        let mut b = good.clone();
        b[i] = v;
        b
    };
    // Record length 0, and over 2^14.
    assert_eq!(inspect(C2S, &with(4, 0)), Outcome::Malformed);
    let mut big = good.clone();
    big[3..5].copy_from_slice(&((1u16 << 14) + 1).to_be_bytes());
    assert_eq!(inspect(C2S, &big), Outcome::Malformed);
    // A ServerHello where a ClientHello is due, and the reverse.
    assert_eq!(inspect(C2S, &with(5, 2)), Outcome::Malformed);
    assert_eq!(inspect(S2C, &good), Outcome::Malformed);
    // client_version 2.x
    assert_eq!(inspect(C2S, &with(9, 2)), Outcome::Malformed);
    // session id longer than 32
    assert_eq!(inspect(C2S, &with(43, 33)), Outcome::Malformed);
    // odd cipher-suite length; no compression method
    assert_eq!(inspect(C2S, &with(77, 3)), Outcome::Malformed);
    assert_eq!(inspect(C2S, &with(82, 0)), Outcome::Malformed);
    // extensions length not the rest of the message; an extension overrunning it
    assert_eq!(inspect(C2S, &with(85, 0x15)), Outcome::Malformed);
    assert_eq!(inspect(C2S, &with(89, 0x20)), Outcome::Malformed);
    // handshake length shorter than its fields
    assert_eq!(inspect(C2S, &with(8, 0x40)), Outcome::Malformed);
    // supported_versions with an odd list length
    let bad_sv = ext(0x002b, &[3, 3, 4, 3]);
    assert_eq!(
        inspect(C2S, &records(&client_hello(&SID, Some(&[bad_sv])), &[])),
        Outcome::Malformed
    );
    assert_eq!(
        inspect(
            S2C,
            &records(&server_hello(&SID, Some(&[ext(0x002b, &[3])])), &[])
        ),
        Outcome::Malformed
    );
    // An alert interleaved within the hello's records.
    let msg = client_hello(&SID, None);
    let mut b = records(&msg[..20], &[]);
    b.extend_from_slice(&[21, 3, 3, 0, 2, 2, 40]);
    assert_eq!(inspect(C2S, &b), Outcome::Malformed);
}

#[test]
fn tls_without_a_hello_is_no_match() {
    // A fatal handshake_failure alert from the server.
    assert_eq!(inspect(S2C, &[21, 3, 3, 0, 2, 2, 40]), Outcome::NoMatch);
    // SSLv2-compatible ClientHello header (RFC 5246 E.2).
    assert_eq!(
        inspect(C2S, &[0x80, 0x2e]),
        Outcome::NeedMore { min_len: 3 }
    );
    assert_eq!(
        inspect(C2S, &[0x80, 0x2e, 0x01, 0x03, 0x01]),
        Outcome::NoMatch
    );
    assert_eq!(inspect(C2S, &[0x80, 0x2e, 0x07]), Outcome::Malformed);
    // A hello that cannot be complete within MAX_INSPECT.
    let b = [22, 3, 3, 0x40, 0x00, 1, 0, 0x40, 0];
    assert_eq!(inspect(C2S, &b), Outcome::NoMatch);
    // UDP: DTLS is not parsed.
    let mut f = flow(C2S);
    f.transport = Transport::Udp;
    assert_eq!(
        Ssl.inspect(&f, &client_hello_12_literal()),
        Outcome::NoMatch
    );
}

#[test]
fn a_hello_up_to_max_inspect_is_read_and_a_longer_one_is_not() {
    // One full record: 5 + 2^14 bytes, all of it the ClientHello with padding.
    let pad = |n: usize| ext(0x0015, &vec![0; n]);
    let base = client_hello(&SID, Some(&[pad(0)])).len();
    let msg = client_hello(&SID, Some(&[pad((1 << 14) - base)]));
    assert_eq!(msg.len(), 1 << 14);
    let b = records(&msg, &[]);
    assert_eq!(b.len(), MAX_INSPECT as usize);
    assert_eq!(inspect(C2S, &b), key(&SID));
    // The same message over two records needs 5 more bytes than MAX_INSPECT.
    let b = records(&msg, &[100]);
    assert_eq!(inspect(C2S, &b[..MAX_INSPECT as usize]), Outcome::NoMatch);
}

#[test]
fn through_the_abi_wrapper() {
    let i = instantiate_native::<Ssl>("").unwrap();
    let b = client_hello_12_literal();
    assert_eq!(i.inspect(&flow(C2S), &b), key(&SID));
    assert_eq!(
        i.inspect(&flow(C2S), &b[..50]),
        Outcome::NeedMore {
            min_len: b.len() as u32
        }
    );
    assert_eq!(i.inspect(&flow(C2S), b"GET /"), Outcome::Malformed);
    let sh = records(&server_hello(&SID, None), &[]);
    assert_eq!(i.inspect(&flow(S2C), &sh), key(&SID));
    assert!(instantiate_native::<Ssl>("strict")
        .unwrap_err()
        .contains("takes no plugin_config"));
    assert!(instantiate_native::<Ssl>("  ").is_ok());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        for d in [C2S, S2C] {
            if let Outcome::NeedMore { min_len } = inspect(d, &bytes) {
                prop_assert!(min_len as usize > bytes.len());
                prop_assert!(min_len <= MAX_INSPECT);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_behind_a_record_header_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..400),
        typ in prop_oneof![Just(1u8), Just(2u8), any::<u8>()],
    ) {
        let mut msg = vec![typ];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        let b = records(&msg, &[]);
        for d in [C2S, S2C] {
            let _ = inspect(d, &b);
        }
    }

    #[test]
    fn mutated_hellos_never_panic_and_segmentation_does_not_matter(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut b = client_hello_12_literal();
        for (i, v) in &flips {
            let i = i.index(b.len());
            b[i] = *v;
        }
        let whole = inspect(C2S, &b);
        // A prefix either already has the answer or asks for more; never a different key.
        let n = cut.index(b.len() + 1);
        match inspect(C2S, &b[..n]) {
            Outcome::NeedMore { min_len } => prop_assert!(min_len as usize > n),
            o => prop_assert_eq!(o, whole),
        }
    }
}
