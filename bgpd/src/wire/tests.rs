//! Unit tests of the codec: hand-built RFC fixtures (byte-exact), round trips, an FRR 8.4.4
//! capture and malformed input.

use super::*;
use ipnet::Ipv4Net;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("fixture hex"))
        .collect()
}

/// Header for a message of `body_len` octets after the type (RFC 4271 §4.1).
fn header(body_len: usize, t: u8) -> String {
    format!("{}{:04x}{:02x}", "ff".repeat(16), body_len + 19, t)
}

fn asn4() -> SessionCodec {
    SessionCodec {
        asn4: true,
        ..Default::default()
    }
}

fn add_path_all() -> SessionCodec {
    SessionCodec {
        asn4: true,
        add_path_send: Family::ALL.to_vec(),
        add_path_receive: Family::ALL.to_vec(),
        ebgp: false,
    }
}

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix")
}

fn nlri(s: &str, path_id: Option<u32>) -> Nlri {
    Nlri {
        prefix: net(s),
        path_id,
    }
}

fn upd(m: Message) -> Update {
    match m {
        Message::Update(u) => u,
        other => panic!("not an update: {other:?}"),
    }
}

fn roundtrip(bytes: &[u8], msg: &Message, ctx: &SessionCodec) {
    assert_eq!(encode(msg, ctx), bytes, "encode");
    assert_eq!(&decode(bytes, ctx).expect("decode"), msg, "decode");
}

#[test]
fn frame_len_cases() {
    let ka = hex(&header(0, 4));
    assert_eq!(frame_len(&ka[..18]), Ok(None));
    assert_eq!(frame_len(&ka), Ok(Some(19)));
    let mut two = ka.clone();
    two.extend_from_slice(&ka[..5]);
    assert_eq!(frame_len(&two), Ok(Some(19)));
    let mut bad = ka.clone();
    bad[3] = 0;
    let e = frame_len(&bad).unwrap_err();
    assert_eq!((e.code, e.subcode), (1, 1));
    for len in [18u16, 4097, 0, 65535] {
        let mut m = ka.clone();
        m[16..18].copy_from_slice(&len.to_be_bytes());
        let e = frame_len(&m).unwrap_err();
        assert_eq!(
            (e.code, e.subcode, e.data),
            (1, 2, len.to_be_bytes().to_vec())
        );
    }
    // Declared 30, only 19 buffered.
    let mut m = ka.clone();
    m[16..18].copy_from_slice(&30u16.to_be_bytes());
    assert_eq!(frame_len(&m), Ok(None));
}

#[test]
fn keepalive_fixture() {
    roundtrip(&hex(&header(0, 4)), &Message::Keepalive, &asn4());
}

#[test]
fn notification_fixture() {
    // Cease / Administrative Shutdown with a one-octet-length message (RFC 8203 shape).
    let bytes = hex(&(header(2 + 3, 3) + "0602" + "026869"));
    let n = Notification {
        code: 6,
        subcode: 2,
        data: vec![2, b'h', b'i'],
    };
    roundtrip(&bytes, &Message::Notification(n), &asn4());
}

#[test]
fn route_refresh_fixture() {
    // RFC 2918 §3: AFI 2, reserved, SAFI 1.
    let bytes = hex(&(header(4, 5) + "00020001"));
    let m = Message::RouteRefresh(RouteRefresh {
        family: Family::Ipv6Unicast,
    });
    roundtrip(&bytes, &m, &asn4());
    let v4 = hex(&(header(4, 5) + "00010001"));
    assert_eq!(
        decode(&v4, &asn4()),
        Ok(Message::RouteRefresh(RouteRefresh {
            family: Family::Ipv4Unicast
        }))
    );
    // IPv4 multicast: not ours, reported as the ignorable 7/0.
    let mc = hex(&(header(4, 5) + "00010002"));
    let e = decode(&mc, &asn4()).unwrap_err();
    assert_eq!((e.code, e.subcode), (7, 0));
    // RFC 7313 §5: bad length → 7/1 with the whole message.
    let long = hex(&(header(5, 5) + "0001000100"));
    let e = decode(&long, &asn4()).unwrap_err();
    assert_eq!((e.code, e.subcode, e.data), (7, 1, long));
}

fn sample_open() -> (Vec<u8>, Open) {
    let caps = concat!(
        "0104 00010001", // MP IPv4 unicast (RFC 4760 §8)
        "0104 00020001", // MP IPv6 unicast
        "0200",          // route refresh (RFC 2918)
        "4104 fa56ea01", // 4-octet AS 4200000001 (RFC 6793)
        // Graceful restart (RFC 4724 §3): R and N (RFC 8538) set, 120 s; v4 with F, v6 without.
        "400a c078 00010180 00020100",
        "4508 00010103 00020101", // ADD-PATH v4 both, v6 receive (RFC 7911)
    );
    let caps_len = hex(caps).len();
    let body = format!(
        "04 5ba0 005a 0a000001 {:02x} 02 {:02x} {caps}",
        caps_len + 2,
        caps_len
    );
    let bytes = hex(&(header(hex(&body).len(), 1) + &body));
    let open = Open {
        asn: 4_200_000_001,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(10, 0, 0, 1),
        capabilities: Capabilities {
            multiprotocol: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
            route_refresh: true,
            four_octet_as: Some(4_200_000_001),
            add_path: vec![
                (
                    Family::Ipv4Unicast,
                    AddPathMode {
                        receive: true,
                        send: true,
                    },
                ),
                (
                    Family::Ipv6Unicast,
                    AddPathMode {
                        receive: true,
                        send: false,
                    },
                ),
            ],
            graceful_restart: Some(GracefulRestart {
                restarted: true,
                notification: true,
                restart_time: 120,
                families: vec![(Family::Ipv4Unicast, true), (Family::Ipv6Unicast, false)],
            }),
            other: vec![],
        },
    };
    (bytes, open)
}

#[test]
fn open_fixture() {
    let (bytes, open) = sample_open();
    // My AS is AS_TRANS (0x5ba0 = 23456) since 4200000001 does not fit (RFC 6793 §4.2.1).
    roundtrip(&bytes, &Message::Open(open), &SessionCodec::default());
}

#[test]
fn open_two_octet_as_without_capability() {
    let body = "04 fde9 00b4 c0000201 00";
    let bytes = hex(&(header(10, 1) + body));
    let open = Open {
        asn: 65001,
        hold_time: 180,
        bgp_id: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: Capabilities::default(),
    };
    roundtrip(&bytes, &Message::Open(open), &SessionCodec::default());
}

#[test]
fn open_errors() {
    let (good, _) = sample_open();
    let ctx = SessionCodec::default();
    let mut v3 = good.clone();
    v3[19] = 3;
    let e = decode(&v3, &ctx).unwrap_err();
    assert_eq!((e.code, e.subcode), (2, 1));
    for hold in [1u16, 2] {
        let mut m = good.clone();
        m[22..24].copy_from_slice(&hold.to_be_bytes());
        let e = decode(&m, &ctx).unwrap_err();
        assert_eq!((e.code, e.subcode), (2, 6), "hold {hold}");
    }
    let mut id0 = good.clone();
    id0[24..28].copy_from_slice(&[0, 0, 0, 0]);
    let e = decode(&id0, &ctx).unwrap_err();
    assert_eq!((e.code, e.subcode), (2, 3));
    // Optional parameter type 1 (deprecated authentication) → Unsupported Optional Parameter.
    let mut p1 = good.clone();
    p1[29] = 1;
    let e = decode(&p1, &ctx).unwrap_err();
    assert_eq!((e.code, e.subcode), (2, 4));
}

fn v4_update_fixture() -> (Vec<u8>, Update) {
    let attrs = concat!(
        "40 01 01 00",                         // ORIGIN IGP
        "40 02 06 02 01 0000fde9",             // AS_PATH AS_SEQUENCE [65001], 4-octet
        "40 03 04 c0000201",                   // NEXT_HOP 192.0.2.1
        "80 04 04 0000000a",                   // MED 10
        "c0 08 08 ffff0000 fde90064",          // COMMUNITIES graceful-shutdown, 65001:100
        "c0 20 0c 0000fde9 00000001 00000002", // LARGE_COMMUNITIES 65001:1:2
    );
    let nlri = concat!("00000007 20 0a000001", "00000008 18 0a0001");
    let al = hex(attrs).len();
    let body = format!("0000 {al:04x} {attrs} {nlri}");
    let bytes = hex(&(header(hex(&body).len(), 2) + &body));
    let u = Update {
        withdrawn: vec![],
        announced: vec![nlri_of("10.0.0.1/32", 7), nlri_of("10.0.1.0/24", 8)],
        attrs: PathAttrs {
            origin: Origin::Igp,
            as_path: vec![AsSegment::Sequence(vec![65001])],
            next_hop: Some("192.0.2.1".parse().expect("ip")),
            next_hop_local: None,
            med: Some(10),
            local_pref: None,
            communities: vec![GRACEFUL_SHUTDOWN, 0xfde9_0064],
            large_communities: vec![LargeCommunity(65001, 1, 2)],
        },
        errors: vec![],
        end_of_rib: None,
    };
    (bytes, u)
}

fn nlri_of(s: &str, id: u32) -> Nlri {
    nlri(s, Some(id))
}

#[test]
fn update_v4_add_path_fixture() {
    let (bytes, u) = v4_update_fixture();
    roundtrip(&bytes, &Message::Update(u.clone()), &add_path_all());
    // encode_updates packs the same into the same single message.
    let msgs = encode_updates(&[], &u.announced, &u.attrs, &add_path_all());
    assert_eq!(msgs, vec![bytes]);
}

fn v6_update_fixture() -> (Vec<u8>, Update) {
    let mp = concat!(
        "0002 01 20",                          // AFI 2 SAFI 1, next hop length 32
        "20010db8000000000000000000000001",    // global
        "fe800000000000000000000000000001",    // link-local (RFC 2545 §3)
        "00",                                  // reserved
        "40 20010db800010000",                 // 2001:db8:1::/64
        "80 20010db8000200000000000000000005", // 2001:db8:2::5/128
    );
    let mpl = hex(mp).len();
    let attrs = format!(
        "40 01 01 02  40 02 0a 02 02 0000fde9 0000fdea  40 05 04 00000064  90 0e {mpl:04x} {mp}"
    );
    let al = hex(&attrs).len();
    let body = format!("0000 {al:04x} {attrs}");
    let bytes = hex(&(header(hex(&body).len(), 2) + &body));
    let u = Update {
        withdrawn: vec![],
        announced: vec![
            nlri("2001:db8:1::/64", None),
            nlri("2001:db8:2::5/128", None),
        ],
        attrs: PathAttrs {
            origin: Origin::Incomplete,
            as_path: vec![AsSegment::Sequence(vec![65001, 65002])],
            next_hop: Some("2001:db8::1".parse().expect("ip")),
            next_hop_local: Some("fe80::1".parse().expect("ip")),
            local_pref: Some(100),
            ..Default::default()
        },
        errors: vec![],
        end_of_rib: None,
    };
    (bytes, u)
}

#[test]
fn update_v6_mp_reach_fixture() {
    let (bytes, u) = v6_update_fixture();
    roundtrip(&bytes, &Message::Update(u), &asn4());
}

#[test]
fn withdraw_fixtures() {
    // IPv4 withdraw in the body, path ids on (RFC 7911 §3), no attributes.
    let body = "0009 00000003 20 0a000001 0000";
    let bytes = hex(&(header(hex(body).len(), 2) + body));
    let u = Update {
        withdrawn: vec![nlri_of("10.0.0.1/32", 3)],
        ..Default::default()
    };
    roundtrip(&bytes, &Message::Update(u), &add_path_all());
    // IPv6 withdraw through MP_UNREACH_NLRI (RFC 4760 §4).
    let body = "0000 000e 90 0f 000a 0002 01 30 20010db80001";
    let bytes = hex(&(header(hex(body).len(), 2) + body));
    let u = Update {
        withdrawn: vec![nlri("2001:db8:1::/48", None)],
        ..Default::default()
    };
    roundtrip(&bytes, &Message::Update(u), &asn4());
}

#[test]
fn end_of_rib_fixtures() {
    let v4 = hex(&(header(4, 2) + "00000000"));
    let u = Update {
        end_of_rib: Some(Family::Ipv4Unicast),
        ..Default::default()
    };
    roundtrip(&v4, &Message::Update(u), &asn4());
    let v6 = hex(&(header(10, 2) + "0000 0006 800f03 000201"));
    let u = Update {
        end_of_rib: Some(Family::Ipv6Unicast),
        ..Default::default()
    };
    roundtrip(&v6, &Message::Update(u), &asn4());
    // Extended-length MP_UNREACH form (FRR uses it) is End-of-RIB too.
    let v6x = hex(&(header(11, 2) + "0000 0007 900f0003 000201"));
    assert_eq!(
        upd(decode(&v6x, &asn4()).expect("eor")).end_of_rib,
        Some(Family::Ipv6Unicast)
    );
}

#[test]
fn as4_path_toward_two_octet_peer() {
    let ctx = SessionCodec::default();
    let path = vec![AsSegment::Sequence(vec![65001, 4_200_000_001, 65002])];
    let attrs = PathAttrs {
        as_path: path.clone(),
        next_hop: Some("192.0.2.1".parse().expect("ip")),
        ..Default::default()
    };
    let msgs = encode_updates(&[], &[nlri("10.0.0.0/24", None)], &attrs, &ctx);
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    let as_path_2 = hex("40 02 08 02 03 fde9 5ba0 fdea"); // AS_TRANS = 0x5ba0 (RFC 6793 §4.2.2)
    let as4_path = hex("c0 11 0e 02 03 0000fde9 fa56ea01 0000fdea");
    assert!(
        m.windows(as_path_2.len()).any(|w| w == as_path_2),
        "2-octet AS_PATH"
    );
    assert!(m.windows(as4_path.len()).any(|w| w == as4_path), "AS4_PATH");
    let u = upd(decode(m, &ctx).expect("decode"));
    assert_eq!(u.attrs.as_path, path);
    assert!(u.errors.is_empty());
    // No AS4_PATH when everything fits in 2 octets.
    let small = PathAttrs {
        as_path: vec![AsSegment::Sequence(vec![65001])],
        ..attrs.clone()
    };
    let m = &encode_updates(&[], &[nlri("10.0.0.0/24", None)], &small, &ctx)[0];
    assert!(!m.windows(2).any(|w| w == [0xc0, 0x11]));
    // 4-octet session: 4-octet segments, no AS4_PATH.
    let m = &encode_updates(&[], &[nlri("10.0.0.0/24", None)], &attrs, &asn4())[0];
    assert!(m.windows(as4_path.len() - 3).any(|w| w == &as4_path[3..]));
    assert!(!m.windows(2).any(|w| w == [0xc0, 0x11]));
    assert_eq!(upd(decode(m, &asn4()).expect("decode")).attrs.as_path, path);
}

#[test]
fn as4_path_merge_with_old_speaker_prepend() {
    // An old (2-octet) speaker prepended 65100 after the AS4_PATH was built (RFC 6793 §4.2.3).
    let path2 = vec![AsSegment::Sequence(vec![65100, 65001, AS_TRANS])];
    let path4 = vec![AsSegment::Sequence(vec![65001, 4_200_000_001])];
    assert_eq!(
        codec_merge(&path2, &path4),
        vec![AsSegment::Sequence(vec![65100, 65001, 4_200_000_001])]
    );
    // AS4_PATH longer than AS_PATH is ignored.
    assert_eq!(codec_merge(&path4[..0], &path4), vec![]);
}

fn codec_merge(a: &[AsSegment], b: &[AsSegment]) -> Vec<AsSegment> {
    super::merge_as4_path(a, b)
}

fn frr_fixture() -> Vec<Vec<u8>> {
    include_str!("fixtures/frr84_capture.hex")
        .lines()
        .map(hex)
        .collect()
}

#[test]
fn frr_84_capture() {
    // Captured from FRR 8.4.4 (AS 65000, router-id 10.1.1.1, hostname capability) toward a
    // peer that offered ADD-PATH receive for both families.
    let msgs = frr_fixture();
    assert_eq!(msgs.len(), 4);
    let ctx = SessionCodec {
        asn4: true,
        add_path_send: vec![],
        add_path_receive: Family::ALL.to_vec(),
        ebgp: true,
    };
    let Message::Open(open) = decode(&msgs[0], &ctx).expect("open") else {
        panic!("not open")
    };
    assert_eq!(open.asn, 65000);
    assert_eq!(open.hold_time, 180);
    assert_eq!(open.bgp_id, Ipv4Addr::new(10, 1, 1, 1));
    let c = &open.capabilities;
    assert_eq!(
        c.multiprotocol,
        vec![Family::Ipv4Unicast, Family::Ipv6Unicast]
    );
    assert!(c.route_refresh);
    assert_eq!(c.four_octet_as, Some(65000));
    assert!(c.add_path.contains(&(
        Family::Ipv4Unicast,
        AddPathMode {
            receive: true,
            send: true
        }
    )));
    assert!(
        c.other.contains(&73),
        "hostname capability recorded: {:?}",
        c.other
    );
    assert_eq!(decode(&msgs[1], &ctx), Ok(Message::Keepalive));

    let u = upd(decode(&msgs[2], &ctx).expect("v4 update"));
    assert_eq!(u.announced, vec![nlri("10.20.0.0/24", Some(2))]);
    assert_eq!(u.attrs.next_hop, Some("127.0.0.1".parse().expect("ip")));
    assert_eq!(u.attrs.as_path, vec![AsSegment::Sequence(vec![65000])]);
    assert_eq!(u.attrs.med, Some(0));
    assert!(u.errors.is_empty());

    let u = upd(decode(&msgs[3], &ctx).expect("v6 update"));
    // FRR 8.4.4 writes a path id (0) for IPv6 even though its own ADD-PATH capability offered
    // only "receive" for IPv6: it keys on the peer's receive flag alone.
    assert_eq!(u.announced, vec![nlri("2001:db8:20::/64", Some(0))]);
    assert_eq!(
        u.attrs.next_hop,
        Some("::ffff:127.0.0.1".parse().expect("ip"))
    );
    assert_eq!(u.attrs.next_hop_local, None);
    assert!(u.errors.is_empty());
}

/// Builds an UPDATE from hex attributes and NLRI.
fn raw_update(withdrawn: &str, attrs: &str, nlri: &str) -> Vec<u8> {
    let w = hex(withdrawn);
    let a = hex(attrs);
    let body = format!("{:04x}{withdrawn}{:04x}{attrs}{nlri}", w.len(), a.len());
    hex(&(header(hex(&body).len(), 2) + &body))
}

const GOOD_ATTRS: &str = "40010100 400206020100000001 400304c0000201";

fn taw(u: &Update) -> bool {
    u.announced.is_empty()
        && u.errors
            .iter()
            .any(|e| e.action == AttrErrorAction::TreatAsWithdraw)
}

#[test]
fn malformed_header_and_lengths() {
    let (good, _) = v4_update_fixture();
    let ctx = add_path_all();
    for cut in [0, 5, 18, 19, 30, good.len() - 1] {
        let e = decode(&good[..cut], &ctx).unwrap_err();
        assert_eq!(e.code, 1, "cut {cut}");
    }
    let mut marker = good.clone();
    marker[0] = 0xfe;
    assert_eq!(decode(&marker, &ctx).unwrap_err().subcode, 1);
    let mut ty = good.clone();
    ty[18] = 9;
    let e = decode(&ty, &ctx).unwrap_err();
    assert_eq!((e.code, e.subcode, e.data), (1, 3, vec![9]));
    let ka_long = hex(&(header(1, 4) + "00"));
    assert_eq!(decode(&ka_long, &ctx).unwrap_err().subcode, 2);
    // Withdrawn length larger than the message → 3/1.
    let mut wd = good.clone();
    wd[19..21].copy_from_slice(&[0x10, 0]);
    assert_eq!(decode(&wd, &ctx).unwrap_err().code_pair(), (3, 1));
    // Total attribute length larger than the message → 3/1.
    let mut al = good.clone();
    al[21..23].copy_from_slice(&[0x10, 0]);
    assert_eq!(decode(&al, &ctx).unwrap_err().code_pair(), (3, 1));
    // NLRI with prefix length 33 → 3/10 (RFC 7606 §3 j).
    let m = raw_update("", GOOD_ATTRS, "21 0a000001 00");
    assert_eq!(decode(&m, &asn4()).unwrap_err().code_pair(), (3, 10));
    // Truncated NLRI.
    let m = raw_update("", GOOD_ATTRS, "20 0a00");
    assert_eq!(decode(&m, &asn4()).unwrap_err().code_pair(), (3, 10));
    // Truncated withdrawn route.
    let m = raw_update("18 0a", "", "");
    assert_eq!(decode(&m, &asn4()).unwrap_err().code_pair(), (3, 10));
}

trait CodePair {
    fn code_pair(&self) -> (u8, u8);
}
impl CodePair for DecodeError {
    fn code_pair(&self) -> (u8, u8) {
        (self.code, self.subcode)
    }
}

#[test]
fn rfc7606_treat_as_withdraw() {
    let ctx = asn4();
    let cases = [
        // ORIGIN with the optional flag set (RFC 7606 §3 c).
        ("origin flags", "c0010100 400206020100000001 400304c0000201"),
        // ORIGIN value 7.
        ("origin value", "40010107 400206020100000001 400304c0000201"),
        // AS_PATH segment claims 3 ASes, carries 1.
        (
            "as_path overrun",
            "40010100 400206020300000001 400304c0000201",
        ),
        // AS_PATH segment of length zero (RFC 7606 §7.2).
        ("as_path zero", "40010100 4002020200 400304c0000201"),
        // NEXT_HOP of 5 octets.
        (
            "next_hop length",
            "40010100 400206020100000001 400305c000020101",
        ),
        // MED of 3 octets.
        (
            "med length",
            "40010100 400206020100000001 400304c0000201 800403000001",
        ),
        // COMMUNITIES not a multiple of 4.
        (
            "communities",
            "40010100 400206020100000001 400304c0000201 c00803010203",
        ),
        // Missing NEXT_HOP with IPv4 NLRI (RFC 7606 §3 d).
        ("missing next_hop", "40010100 400206020100000001"),
        // Missing ORIGIN.
        ("missing origin", "400206020100000001 400304c0000201"),
        // Attribute length overruns the attribute list (RFC 7606 §4).
        ("attr overrun", "40010100 400206020100000001 400309c0000201"),
        // Multicast next hop.
        (
            "multicast next hop",
            "40010100 400206020100000001 400304e0000001",
        ),
    ];
    for (name, attrs) in cases {
        let m = raw_update("", attrs, "18 0a0001");
        let u = upd(decode(&m, &ctx).unwrap_or_else(|e| panic!("{name}: {e}")));
        assert!(taw(&u), "{name}: {u:?}");
        assert_eq!(u.withdrawn, vec![nlri("10.0.1.0/24", None)], "{name}");
    }
}

#[test]
fn rfc7606_local_pref_originator_cluster_list_depend_on_the_session() {
    // LOCAL_PREF of 3 octets, ORIGINATOR_ID of 3, CLUSTER_LIST of 3.
    let cases = [
        ("local_pref", "400503000064"),
        ("originator_id", "800903010203"),
        ("cluster_list", "800a03010203"),
    ];
    let ibgp = asn4();
    let ebgp = SessionCodec {
        ebgp: true,
        ..asn4()
    };
    for (name, bad) in cases {
        let m = raw_update("", &format!("{GOOD_ATTRS} {bad}"), "18 0a0001");
        // RFC 7606 §7.5, §7.9, §7.10: malformed from an internal neighbor: treat-as-withdraw.
        let u = upd(decode(&m, &ibgp).unwrap_or_else(|e| panic!("{name}: {e}")));
        assert!(taw(&u), "ibgp {name}: {u:?}");
        // From an external one: discarded, the route stays.
        let u = upd(decode(&m, &ebgp).unwrap_or_else(|e| panic!("{name}: {e}")));
        assert_eq!(u.announced, vec![nlri("10.0.1.0/24", None)], "ebgp {name}");
        assert_eq!(
            u.errors[0].action,
            AttrErrorAction::AttributeDiscard,
            "{name}"
        );
    }
}

#[test]
fn rfc7606_attribute_discard_and_duplicates() {
    let ctx = asn4();
    // AGGREGATOR of the wrong length: discarded, routes kept (RFC 7606 §7.7).
    let m = raw_update("", &format!("{GOOD_ATTRS} c00705 0000000102"), "18 0a0001");
    let u = upd(decode(&m, &ctx).expect("decode"));
    assert_eq!(u.announced, vec![nlri("10.0.1.0/24", None)]);
    assert_eq!(u.errors.len(), 1);
    assert_eq!(u.errors[0].action, AttrErrorAction::AttributeDiscard);
    // ATOMIC_AGGREGATE with a value.
    let m = raw_update("", &format!("{GOOD_ATTRS} 40060101"), "18 0a0001");
    let u = upd(decode(&m, &ctx).expect("decode"));
    assert_eq!(u.announced.len(), 1);
    assert_eq!(u.errors[0].action, AttrErrorAction::AttributeDiscard);
    // Duplicate MED: the first is kept (RFC 7606 §3 g).
    let m = raw_update(
        "",
        &format!("{GOOD_ATTRS} 80040400000001 80040400000002"),
        "18 0a0001",
    );
    let u = upd(decode(&m, &ctx).expect("decode"));
    assert_eq!(u.attrs.med, Some(1));
    assert_eq!(u.announced.len(), 1);
    assert_eq!(u.errors[0].action, AttrErrorAction::AttributeDiscard);
    // An unknown optional attribute is ignored silently.
    let m = raw_update("", &format!("{GOOD_ATTRS} c0630201ff"), "18 0a0001");
    let u = upd(decode(&m, &ctx).expect("decode"));
    assert!(u.errors.is_empty() && u.announced.len() == 1);
    // An unknown well-known attribute is 3/2 (RFC 4271 §6.3).
    let m = raw_update("", &format!("{GOOD_ATTRS} 40630201ff"), "18 0a0001");
    assert_eq!(decode(&m, &ctx).unwrap_err().code_pair(), (3, 2));
}

#[test]
fn mp_reach_errors_reset() {
    let ctx = asn4();
    let base = "40010100 400206020100000001";
    // Next-hop length 5 for IPv6 unicast.
    let m = raw_update("", &format!("{base} 800e0b 000201 05 0102030405 00 00"), "");
    assert_eq!(decode(&m, &ctx).unwrap_err().code_pair(), (3, 9));
    // Garbage: truncated next hop.
    let m = raw_update("", &format!("{base} 800e06 000201 10 0102"), "");
    assert_eq!(decode(&m, &ctx).unwrap_err().code_pair(), (3, 9));
    // Garbage NLRI (prefix length 200).
    let mp = format!("000201 10 {} 00 c8 01", "20010db8000000000000000000000001");
    let m = raw_update("", &format!("{base} 800e{:02x} {mp}", hex(&mp).len()), "");
    assert_eq!(decode(&m, &ctx).unwrap_err().code_pair(), (3, 9));
    // Two MP_UNREACH_NLRI → 3/1 (RFC 7606 §3 g).
    let m = raw_update("", "800f03000201 800f03000201", "");
    assert_eq!(decode(&m, &ctx).unwrap_err().code_pair(), (3, 1));
    // MP_REACH overrunning the attribute list.
    let m = raw_update("", &format!("{base} 800e30 000201"), "");
    assert_eq!(decode(&m, &ctx).unwrap_err().code_pair(), (3, 9));
}

/// RFC 4271 §6.3: an Optional Attribute Error (3/9) carries the erroneous attribute (type,
/// length and value) in its Data field; so does bgpd's reset for a bad MP_(UN)REACH_NLRI.
#[test]
fn mp_reach_reset_carries_the_attribute() {
    let ctx = asn4();
    let base = "40010100 400206020100000001";
    // IPv6 next-hop length 5 (checked by bgpd).
    let bad_nh = "800e0b 000201 05 0102030405 00 00";
    // IPv4 NLRI of length 40 (netgauze refuses it).
    let bad_nlri = "800e0f 000101 04 0a000009 00 28 0a00000000";
    // MP_UNREACH_NLRI whose withdrawn prefix is truncated.
    let bad_unreach = "800f05 000201 4020";
    for attr in [bad_nh, bad_nlri, bad_unreach] {
        let m = raw_update("", &format!("{base} {attr}"), "");
        let e = decode(&m, &ctx).unwrap_err();
        assert_eq!(e.code_pair(), (3, 9), "{attr}");
        assert_eq!(e.data, hex(attr), "{attr}");
        assert_eq!(e.notification().data, hex(attr), "{attr}");
    }
    // An MP_REACH_NLRI running past the attribute list: the octets there are.
    let m = raw_update("", &format!("{base} 800e30 000201"), "");
    let e = decode(&m, &ctx).unwrap_err();
    assert_eq!(e.code_pair(), (3, 9));
    assert_eq!(e.data, hex("800e30 000201"));
}

#[test]
fn packing_is_dense_and_complete() {
    let ctx = add_path_all();
    let attrs = PathAttrs {
        as_path: vec![AsSegment::Sequence(vec![65001])],
        next_hop: Some("192.0.2.1".parse().expect("ip")),
        communities: vec![GRACEFUL_SHUTDOWN],
        ..Default::default()
    };
    let v4: Vec<Nlri> = (0..10_000u32)
        .map(|i| Nlri {
            prefix: IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).expect("net")),
            path_id: Some(i % 3),
        })
        .collect();
    let msgs = encode_updates(&v4, &v4, &attrs, &ctx);
    let mut withdrawn = Vec::new();
    let mut announced = Vec::new();
    for m in &msgs {
        assert!(m.len() <= MAX_MESSAGE_LEN);
        let u = upd(decode(m, &ctx).expect("decode"));
        withdrawn.extend(u.withdrawn);
        announced.extend(u.announced);
    }
    assert_eq!(withdrawn, v4);
    assert_eq!(announced, v4);
    // 9 octets per prefix: 4073/9 = 452 per withdraw message.
    let wmsgs = msgs
        .iter()
        .filter(|m| m.len() > 23 && m[19..21] != [0, 0])
        .count();
    assert_eq!(wmsgs, 10_000usize.div_ceil(4073 / 9));
    // The first announce message is full to within one prefix.
    assert!(msgs[wmsgs].len() > MAX_MESSAGE_LEN - 9);
}

#[test]
fn encode_updates_100k_is_fast() {
    let ctx = add_path_all();
    let attrs = PathAttrs {
        as_path: vec![AsSegment::Sequence(vec![65001])],
        next_hop: Some("192.0.2.1".parse().expect("ip")),
        ..Default::default()
    };
    let v4: Vec<Nlri> = (0..100_000u32)
        .map(|i| Nlri {
            prefix: IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).expect("net")),
            path_id: Some(1),
        })
        .collect();
    let t = std::time::Instant::now();
    let msgs = encode_updates(&[], &v4, &attrs, &ctx);
    let took = t.elapsed();
    eprintln!(
        "encode_updates: 100k /32 with add-path in {took:?}, {} messages",
        msgs.len()
    );
    // Generous bound that also holds in debug builds; release measures a few ms.
    assert!(took < std::time::Duration::from_secs(3));
}

#[test]
fn error_messages_are_lowercase() {
    let e = frame_len(&hex(&("00".repeat(16) + "001304"))).unwrap_err();
    assert!(e.detail.chars().next().is_some_and(|c| c.is_lowercase()));
}
