//! Property tests of the wire codec: decode never panics on arbitrary or mutated input, and
//! `encode_updates` → `decode` gives back the same NLRI and attributes.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bgpd::wire::*;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// Valid messages to mutate: the FRR capture plus a few encoded by us.
fn seeds() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = include_str!("../src/wire/fixtures/frr84_capture.hex")
        .lines()
        .map(hex)
        .collect();
    let ctx = ctxs()[3].clone();
    let attrs = PathAttrs {
        as_path: vec![
            AsSegment::Sequence(vec![65001, 4_200_000_001]),
            AsSegment::Set(vec![1, 2]),
        ],
        next_hop: Some(IpAddr::V6("2001:db8::1".parse().expect("ip"))),
        next_hop_local: Some("fe80::1".parse().expect("ip")),
        med: Some(5),
        local_pref: Some(100),
        communities: vec![GRACEFUL_SHUTDOWN],
        large_communities: vec![LargeCommunity(1, 2, 3)],
        ..Default::default()
    };
    let p6 = Nlri {
        prefix: "2001:db8::/48".parse().expect("net"),
        path_id: Some(9),
    };
    let p4 = Nlri {
        prefix: "10.1.0.0/16".parse().expect("net"),
        path_id: Some(3),
    };
    v.extend(encode_updates(&[p4, p6], &[p4, p6], &attrs, &ctx));
    v.extend(encode_updates(&[], &[p4], &attrs, &SessionCodec::default()));
    v
}

fn ctxs() -> Vec<SessionCodec> {
    vec![
        SessionCodec::default(),
        SessionCodec {
            asn4: true,
            ..Default::default()
        },
        SessionCodec {
            asn4: false,
            add_path_send: vec![Family::Ipv4Unicast],
            add_path_receive: vec![Family::Ipv4Unicast],
            ebgp: true,
        },
        SessionCodec {
            asn4: true,
            add_path_send: Family::ALL.to_vec(),
            add_path_receive: Family::ALL.to_vec(),
            ebgp: false,
        },
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Set(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
    ]
}

fn apply(msg: &mut Vec<u8>, m: &Mutation, fix_length: bool) {
    match *m {
        Mutation::Flip(i, b) => {
            let i = i % msg.len().max(1);
            if let Some(x) = msg.get_mut(i) {
                *x ^= b;
            }
        }
        Mutation::Set(i, b) => {
            let i = i % msg.len().max(1);
            if let Some(x) = msg.get_mut(i) {
                *x = b;
            }
        }
        Mutation::Insert(i, b) => {
            let i = i % (msg.len() + 1);
            msg.insert(i, b);
        }
        Mutation::Delete(i) => {
            if !msg.is_empty() {
                let i = i % msg.len();
                msg.remove(i);
            }
        }
    }
    // Keep the header consistent so the mutation reaches the body parsers.
    if fix_length && msg.len() >= 19 {
        let len = u16::try_from(msg.len()).unwrap_or(u16::MAX).to_be_bytes();
        msg[16] = len[0];
        msg[17] = len[1];
    }
}

fn v4_prefix() -> impl Strategy<Value = IpNet> {
    // Unicast only: multicast NLRI are ignored on receipt (RFC 4271 §6.3).
    (0u32..0xe000_0000, 0u8..=32)
        .prop_map(|(a, l)| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), l).expect("len").trunc()))
}

fn v6_prefix() -> impl Strategy<Value = IpNet> {
    (any::<u128>(), 0u8..=128).prop_map(|(a, l)| {
        let a = a & !(1u128 << 127); // never ff00::/8 (multicast)
        IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), l).expect("len").trunc())
    })
}

fn segment() -> impl Strategy<Value = AsSegment> {
    prop_oneof![
        prop::collection::vec(any::<u32>(), 1..6).prop_map(AsSegment::Sequence),
        prop::collection::vec(any::<u32>(), 1..4).prop_map(AsSegment::Set),
    ]
}

fn attrs_for(v6: bool) -> impl Strategy<Value = PathAttrs> {
    (
        prop_oneof![
            Just(Origin::Igp),
            Just(Origin::Egp),
            Just(Origin::Incomplete)
        ],
        prop::collection::vec(segment(), 0..4),
        any::<u32>(),
        any::<u128>(),
        prop::option::of(any::<u128>()),
        prop::option::of(any::<u32>()),
        prop::option::of(any::<u32>()),
        prop::collection::vec(any::<u32>(), 0..5),
        prop::collection::vec(any::<(u32, u32, u32)>(), 0..4),
    )
        .prop_map(
            move |(origin, as_path, nh4, nh6, ll, med, local_pref, comms, large)| {
                // Valid unicast next hops only (others are treat-as-withdraw by design).
                let next_hop = if v6 {
                    IpAddr::V6(Ipv6Addr::from((nh6 & !(0xff << 120)) | (0x20 << 120) | 1))
                } else {
                    IpAddr::V4(Ipv4Addr::from((nh4 % 0xd000_0000).max(1)))
                };
                PathAttrs {
                    origin,
                    as_path,
                    next_hop: Some(next_hop),
                    next_hop_local: if v6 { ll.map(Ipv6Addr::from) } else { None },
                    med,
                    local_pref,
                    communities: comms,
                    large_communities: large
                        .into_iter()
                        .map(|(a, b, c)| LargeCommunity(a, b, c))
                        .collect(),
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

    /// (a) Arbitrary bytes, with and without a valid-looking header.
    #[test]
    fn decode_arbitrary_never_panics(
        body in prop::collection::vec(any::<u8>(), 0..200),
        t in 0u8..7,
        ctx_i in 0usize..4,
        raw in any::<bool>(),
    ) {
        let ctx = &ctxs()[ctx_i];
        let _ = decode(&body, ctx);
        let _ = frame_len(&body);
        if !raw {
            let mut m = vec![0xff; 16];
            m.extend_from_slice(&u16::try_from(body.len() + 19).unwrap_or(0).to_be_bytes());
            m.push(t);
            m.extend_from_slice(&body);
            let _ = frame_len(&m);
            let _ = decode(&m, ctx);
        }
    }

    /// (b) Mutated valid messages.
    #[test]
    fn decode_mutated_never_panics(
        seed_i in any::<prop::sample::Index>(),
        muts in prop::collection::vec(mutation(), 1..6),
        fix in any::<bool>(),
        ctx_i in 0usize..4,
    ) {
        let seeds = seeds();
        let mut m = seeds[seed_i.index(seeds.len())].clone();
        for mu in &muts {
            apply(&mut m, mu, fix);
        }
        let _ = decode(&m, &ctxs()[ctx_i]);
    }

    /// (c) encode_updates → decode gives back the NLRI and attributes.
    #[test]
    fn update_roundtrip(
        v6 in any::<bool>(),
        w4 in prop::collection::vec(v4_prefix(), 0..40),
        a4 in prop::collection::vec(v4_prefix(), 0..300),
        w6 in prop::collection::vec(v6_prefix(), 0..40),
        a6 in prop::collection::vec(v6_prefix(), 0..300),
        ids in prop::collection::vec(any::<u32>(), 700),
        ctx_i in 0usize..4,
        attrs_v4 in attrs_for(false),
        attrs_v6 in attrs_for(true),
    ) {
        let ctx = ctxs()[ctx_i].clone();
        let (w, a, attrs) = if v6 { (w6, a6, attrs_v6) } else { (w4, a4, attrs_v4) };
        // Mix in a few of the other family to check the split.
        let with_ids = |v: Vec<IpNet>, off: usize| -> Vec<Nlri> {
            v.into_iter().enumerate().map(|(i, prefix)| {
                let fam = Family::of(&prefix);
                let path_id = ctx.add_path_send.contains(&fam).then(|| ids[(i + off) % ids.len()]);
                Nlri { prefix, path_id }
            }).collect()
        };
        let w = with_ids(w, 0);
        let a = with_ids(a, 350);
        let msgs = encode_updates(&w, &a, &attrs, &ctx);
        let mut got_w = BTreeSet::new();
        let mut got_a = BTreeSet::new();
        for m in &msgs {
            prop_assert!(m.len() <= MAX_MESSAGE_LEN);
            let Ok(Message::Update(u)) = decode(m, &ctx) else {
                return Err(TestCaseError::fail(format!("not an update: {:?}", decode(m, &ctx))));
            };
            prop_assert!(u.errors.is_empty(), "errors {:?}", u.errors);
            if !u.announced.is_empty() {
                prop_assert_eq!(&u.attrs, &attrs);
            }
            got_w.extend(u.withdrawn);
            got_a.extend(u.announced);
        }
        prop_assert_eq!(got_w, w.iter().copied().collect::<BTreeSet<_>>());
        prop_assert_eq!(got_a, a.iter().copied().collect::<BTreeSet<_>>());
    }
}
