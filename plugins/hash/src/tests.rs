use super::*;
use plugin_api::instantiate_native;
use proptest::prelude::*;

fn flow_of(transport: Transport, direction: Direction, client: &str, vip: &str) -> Flow {
    Flow {
        transport,
        direction,
        client: client.parse::<SocketAddr>().unwrap().into(),
        vip: vip.parse::<SocketAddr>().unwrap().into(),
    }
}

fn tcp() -> Flow {
    flow_of(
        Transport::Tcp,
        Direction::ClientToServer,
        "192.0.2.1:40000",
        "30.1.1.10:80",
    )
}

fn udp() -> Flow {
    Flow {
        transport: Transport::Udp,
        ..tcp()
    }
}

fn server() -> Flow {
    Flow {
        direction: Direction::ServerToClient,
        ..tcp()
    }
}

fn hash(config: &str) -> Hash {
    Hash::new(config).unwrap()
}

fn key(b: &[u8]) -> Outcome {
    Outcome::Key(Key::new(b))
}

const REQ: &[u8] =
    b"GET /app HTTP/1.1\r\nHost: a.example\r\nCookie: x=1; JSESSIONID=ab12cd; y=2\r\n\r\n";

#[test]
fn regex_keys_on_the_first_capture_group_or_the_whole_match() {
    let p = hash(r"regex:JSESSIONID=([^;\s]+)");
    assert_eq!(p.inspect(&tcp(), REQ), key(b"ab12cd"));
    assert_eq!(p.inspect(&udp(), REQ), key(b"ab12cd"));
    let whole = hash(r"regex:JSESSIONID=[^;\s]+");
    assert_eq!(whole.inspect(&tcp(), REQ), key(b"JSESSIONID=ab12cd"));
    // The first group that took part: alternatives each with their own group.
    let alt = hash(r"regex:sid=(\w+);|JSESSIONID=(\w+);");
    assert_eq!(alt.inspect(&tcp(), REQ), key(b"ab12cd"));
    // Over raw bytes, not only UTF-8.
    let raw = hash(r"regex:(?-u)\xff\xfe(.{4})");
    assert_eq!(
        raw.inspect(&udp(), b"\x00\xff\xfe\x01\x02\x80\x81tail"),
        key(b"\x01\x02\x80\x81")
    );
    // The server's bytes are read the same way (learning a Set-Cookie).
    let resp = b"HTTP/1.1 200 OK\r\nSet-Cookie: JSESSIONID=zz9; Path=/\r\n\r\n";
    assert_eq!(p.inspect(&server(), resp), key(b"zz9"));
}

#[test]
fn regex_waits_for_more_tcp_bytes_while_the_answer_could_change() {
    let p = hash(r"regex:JSESSIONID=([^;\s]+)");
    // No match yet.
    assert_eq!(
        p.inspect(&tcp(), b"GET /"),
        Outcome::NeedMore { min_len: 6 }
    );
    // A match touching the end could grow ("ab" -> "ab12cd").
    assert_eq!(
        p.inspect(&tcp(), b"Cookie: JSESSIONID=ab"),
        Outcome::NeedMore { min_len: 22 }
    );
    assert_eq!(p.inspect(&tcp(), b"Cookie: JSESSIONID=ab;"), key(b"ab"));
    // Every prefix of the request: NeedMore, or the final key.
    for n in 0..=REQ.len() {
        match p.inspect(&tcp(), &REQ[..n]) {
            Outcome::NeedMore { min_len } => assert_eq!(min_len as usize, n + 1),
            o => assert_eq!(o, key(b"ab12cd"), "prefix {n}"),
        }
    }
    // UDP decides on the datagram, even a match at its very end.
    assert_eq!(p.inspect(&udp(), b"Cookie: JSESSIONID=ab"), key(b"ab"));
    assert_eq!(p.inspect(&udp(), b"GET /"), Outcome::NoMatch);
}

#[test]
fn regex_gives_up_at_max_bytes() {
    let p = hash(r"regex:id=(\d+);max=16");
    let mut b = vec![b'.'; 15];
    assert_eq!(p.inspect(&tcp(), &b), Outcome::NeedMore { min_len: 16 });
    b.push(b'.');
    assert_eq!(p.inspect(&tcp(), &b), Outcome::NoMatch);
    // A match beyond the window is not seen.
    b.extend_from_slice(b"id=42;");
    assert_eq!(p.inspect(&tcp(), &b), Outcome::NoMatch);
    // A match ending exactly at max decides: no more bytes will be looked at.
    let at_edge = b"..........id=42;";
    assert_eq!(at_edge.len(), 16);
    assert_eq!(
        p.inspect(&tcp(), &at_edge[..15]),
        Outcome::NeedMore { min_len: 16 }
    );
    assert_eq!(p.inspect(&tcp(), b"..........id=423"), key(b"423"));
    // Default window 1024.
    match hash("regex:x").extractor() {
        Extractor::Regex { max, .. } => assert_eq!(*max, DEFAULT_REGEX_MAX),
        e => panic!("{e:?}"),
    }
}

#[test]
fn empty_keys_are_no_match() {
    let p = hash(r"regex:id=(\d*);");
    assert_eq!(p.inspect(&tcp(), b"id=;rest"), Outcome::NoMatch);
    assert_eq!(p.inspect(&tcp(), b"id=7;rest"), key(b"7"));
}

#[test]
fn byte_ranges() {
    let p = hash("bytes:2-6");
    assert_eq!(p.inspect(&tcp(), b"abcdefgh"), key(b"cdef"));
    assert_eq!(p.inspect(&tcp(), b"abcdef"), key(b"cdef"));
    for n in 0..6 {
        assert_eq!(
            p.inspect(&tcp(), &b"abcdef"[..n]),
            Outcome::NeedMore { min_len: 6 }
        );
    }
    assert_eq!(p.inspect(&udp(), b"abcde"), Outcome::NoMatch);
    assert_eq!(p.inspect(&udp(), b"abcdef"), key(b"cdef"));
    assert_eq!(p.inspect(&server(), b"abcdefgh"), key(b"cdef"));
    // A long range folds into a 64-byte key, still equal for equal bytes.
    let long = hash("bytes:0-4096");
    let data = vec![7u8; 4096];
    assert_eq!(long.inspect(&tcp(), &data), key(&data));
}

#[test]
fn address_extractors() {
    let f = tcp();
    assert_eq!(hash("client-ip").inspect(&f, b""), key(b"192.0.2.1"));
    assert_eq!(hash("client-port").inspect(&f, b""), key(b"40000"));
    assert_eq!(hash("client").inspect(&f, b"x"), key(b"192.0.2.1:40000"));
    assert_eq!(hash("vip").inspect(&f, b""), key(b"30.1.1.10:80"));
    let v6 = flow_of(
        Transport::Udp,
        Direction::ClientToServer,
        "[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
        "[2001:db8::10]:443",
    );
    assert_eq!(
        hash("client").inspect(&v6, b""),
        key(b"[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535")
    );
    assert_eq!(
        hash("client-ip").inspect(&v6, b""),
        key(b"2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")
    );
    assert_eq!(hash("vip").inspect(&v6, b""), key(b"[2001:db8::10]:443"));
    for c in ["client-ip", "client-port", "client", "vip"] {
        assert_eq!(hash(c).inspect(&server(), b"x"), Outcome::NoMatch, "{c}");
    }
}

#[test]
fn bad_configurations_are_refused_with_one_line() {
    let err = |c: &str| Hash::new(c).unwrap_err();
    for (c, want) in [
        ("", "empty plugin_config"),
        ("   ", "empty plugin_config"),
        ("cookie", "unknown extractor `cookie`"),
        ("client-ip;max=3", "unknown extractor"),
        ("regex:", "needs a pattern"),
        ("regex:;max=10", "needs a pattern"),
        ("regex:(abc", "invalid regex `(abc`: unclosed group"),
        ("regex:a;max=0", "max must be 1..=4096"),
        ("regex:a;max=4097", "max must be 1..=4096"),
        ("regex:a;max=ten", "max must be"),
        ("bytes:", "bytes:START-END"),
        ("bytes:5-5", "START < END"),
        ("bytes:6-2", "START < END"),
        ("bytes:0-4097", "<= 4096"),
        ("bytes:a-b", "START < END"),
    ] {
        let e = err(c);
        assert!(e.contains(want), "{c:?}: {e}");
        assert!(!e.contains('\n'), "{c:?}: {e}");
    }
    // Accepted forms.
    for c in [
        "client-ip",
        " vip ",
        "bytes:0-1",
        "bytes: 10 - 20",
        "regex:a;max=4096",
        "regex:[;]max=(\\d+)",
    ] {
        assert!(Hash::new(c).is_ok(), "{c}");
    }
    // `;max=` is taken from the last occurrence.
    match hash("regex:a;max=5;max=7").extractor() {
        Extractor::Regex { re, max } => {
            assert_eq!((re.as_str(), *max), ("a;max=5", 7));
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn through_the_abi_wrapper() {
    let i = instantiate_native::<Hash>(r"regex:JSESSIONID=([^;\s]+)").unwrap();
    assert_eq!(i.inspect(&tcp(), REQ), key(b"ab12cd"));
    assert_eq!(i.inspect(&tcp(), b"GE"), Outcome::NeedMore { min_len: 3 });
    let i = instantiate_native::<Hash>("client").unwrap();
    assert_eq!(i.inspect(&tcp(), b""), key(b"192.0.2.1:40000"));
    assert!(instantiate_native::<Hash>("")
        .unwrap_err()
        .contains("empty plugin_config"));
    assert!(instantiate_native::<Hash>("regex:[")
        .unwrap_err()
        .starts_with("invalid regex"));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..5000),
        udp_flow in any::<bool>(),
    ) {
        let f = if udp_flow { udp() } else { tcp() };
        for c in [r"regex:(?s)id=(.{1,8})", "regex:(a|b)*c;max=64", "bytes:3-9", "client"] {
            let p = hash(c);
            match p.inspect(&f, &bytes) {
                Outcome::NeedMore { min_len } => {
                    prop_assert!(!udp_flow);
                    prop_assert!(min_len as usize > bytes.len());
                    prop_assert!(min_len <= MAX_INSPECT);
                }
                Outcome::Key(k) => prop_assert!(!k.as_bytes().is_empty()),
                _ => {}
            }
        }
    }

    #[test]
    fn arbitrary_configurations_never_panic(config in ".{0,40}") {
        let _ = Hash::new(&config);
        let _ = Hash::new(&format!("regex:{config}"));
        let _ = Hash::new(&format!("bytes:{config}"));
    }
}
