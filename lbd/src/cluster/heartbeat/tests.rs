use super::*;
use proptest::prelude::*;

fn key() -> GroupKey {
    GroupKey::from_bytes(b"0123456789abcdef0123456789abcdef").unwrap()
}

fn sample() -> Heartbeat {
    Heartbeat {
        device: "lb-a".into(),
        epoch: 1_700_000_000_000,
        seq: 42,
        sent_ms: 1_700_000_004_200,
        eligible: true,
        usable_ms: 4_000,
        active: vec![
            Claim::new("tg-1", 1_700_000_000_100),
            Claim {
                ordered: true,
                ..Claim::new("tg-2", 1_700_000_000_101)
            },
        ],
        orders: vec![Order {
            id: 1_700_000_000_000_001,
            traffic_group: "tg-3".into(),
            to: "lb-b".into(),
        }],
        unsynced: vec![],
        unavailable: vec![],
        config: None,
    }
}

fn sample_config() -> Heartbeat {
    Heartbeat {
        config: Some(ConfigMark {
            origin: "lb-b".into(),
            counter: 7,
            time_ms: 1_700_000_003_000,
            digest: [0xab; 32],
            dirty: true,
        }),
        ..sample()
    }
}

fn hb(device: &str, epoch: u64, seq: u64) -> Heartbeat {
    Heartbeat {
        device: device.into(),
        epoch,
        seq,
        ..sample()
    }
}

fn guard() -> ReplayGuard {
    let devices = ["lb-a", "lb-b", "lb-c"].map(String::from);
    ReplayGuard::new(&devices, "lb-c")
}

/// An authenticated datagram from hand-written bytes (tag appended), to reach the parser.
fn sealed(body: &[u8]) -> Vec<u8> {
    seal(body.to_vec(), &key()).unwrap()
}

/// The body of `sample()`'s datagram, without its tag.
fn sample_body() -> Vec<u8> {
    let d = encode(&sample(), &key()).unwrap();
    d[..d.len() - TAG_LEN].to_vec()
}

#[test]
fn round_trip_sample() {
    let d = encode(&sample(), &key()).unwrap();
    assert_eq!(&d[..4], b"SLHB");
    assert_eq!(d[4], VERSION);
    assert_eq!(d[5], 0);
    assert_eq!(decode(&d, &key()).unwrap(), sample());
}

#[test]
fn round_trip_empty_lists_and_extremes() {
    let h = Heartbeat {
        device: "d".into(),
        epoch: 0,
        seq: u64::MAX,
        sent_ms: u64::MAX,
        eligible: false,
        usable_ms: 0,
        active: vec![],
        orders: vec![],
        unsynced: vec![],
        unavailable: vec![],
        config: None,
    };
    let d = encode(&h, &key()).unwrap();
    // Header, name, three u64, eligible, usable_ms, four empty lists and no configuration
    // mark.
    assert_eq!(d.len(), HEADER_LEN + 2 + 24 + 1 + 8 + 4 * 2 + 1 + TAG_LEN);
    assert_eq!(decode(&d, &key()).unwrap(), h);
}

#[test]
fn round_trip_64_byte_names_and_many_entries() {
    let long = "x".repeat(64);
    // 64 bytes of UTF-8 in 16 characters.
    let wide = "\u{1F600}".repeat(16);
    assert_eq!(wide.len(), 64);
    let h = Heartbeat {
        device: long.clone(),
        active: (0..18)
            .map(|i| Claim::new(format!("traffic-group-{i}"), u64::MAX - i))
            .collect(),
        orders: (0..8)
            .map(|i| Order {
                id: i,
                traffic_group: format!("tg-{i}"),
                to: if i % 2 == 0 {
                    long.clone()
                } else {
                    wide.clone()
                },
            })
            .collect(),
        ..sample()
    };
    let d = encode(&h, &key()).unwrap();
    assert!(d.len() <= MAX_DATAGRAM);
    assert_eq!(decode(&d, &key()).unwrap(), h);
}

#[test]
fn encode_rejects_bad_names_and_oversize() {
    let too_long = Heartbeat {
        device: "x".repeat(65),
        ..sample()
    };
    assert!(matches!(
        encode(&too_long, &key()),
        Err(HeartbeatError::Malformed("device"))
    ));
    let empty_tg = Heartbeat {
        active: vec![Claim::new("", 1)],
        ..sample()
    };
    assert!(matches!(
        encode(&empty_tg, &key()),
        Err(HeartbeatError::Malformed("active traffic group"))
    ));
    let huge = Heartbeat {
        active: (0..40)
            .map(|i| Claim::new(format!("{i:0>40}"), 1))
            .collect(),
        ..sample()
    };
    assert!(matches!(
        encode(&huge, &key()),
        Err(HeartbeatError::TooLarge(n)) if n > MAX_DATAGRAM
    ));
    let many_orders = Heartbeat {
        orders: (0..100)
            .map(|id| Order {
                id,
                traffic_group: "tg".into(),
                to: "lb-b".into(),
            })
            .collect(),
        ..sample()
    };
    assert!(matches!(
        encode(&many_orders, &key()),
        Err(HeartbeatError::TooLarge(_))
    ));
}

#[test]
fn every_flipped_bit_is_rejected() {
    let d = encode(&sample(), &key()).unwrap();
    for i in 0..d.len() {
        for bit in 0..8 {
            let mut bad = d.clone();
            bad[i] ^= 1 << bit;
            assert!(
                matches!(decode(&bad, &key()), Err(HeartbeatError::BadTag)),
                "byte {i} bit {bit}"
            );
        }
    }
}

#[test]
fn wrong_key_is_bad_tag() {
    let d = encode(&sample(), &key()).unwrap();
    let other = GroupKey::from_bytes(b"0123456789abcdef0123456789abcdeF").unwrap();
    assert!(matches!(decode(&d, &other), Err(HeartbeatError::BadTag)));
}

#[test]
fn every_truncation_and_extension_is_rejected() {
    let d = encode(&sample(), &key()).unwrap();
    for len in 0..d.len() {
        let err = decode(&d[..len], &key()).unwrap_err();
        if len < HEADER_LEN + TAG_LEN {
            assert!(matches!(err, HeartbeatError::Truncated { .. }), "{len}");
        } else {
            assert!(matches!(err, HeartbeatError::BadTag), "{len}");
        }
    }
    let mut longer = d.clone();
    longer.push(0);
    assert!(matches!(
        decode(&longer, &key()),
        Err(HeartbeatError::BadTag)
    ));
    let mut oversize = d;
    oversize.resize(MAX_DATAGRAM + 1, 0);
    assert!(matches!(
        decode(&oversize, &key()),
        Err(HeartbeatError::TooLarge(1401))
    ));
}

#[test]
fn authenticated_but_malformed_is_rejected() {
    // Every strict prefix of a correct body, properly tagged: the parser runs off the end.
    let body = sample_body();
    for len in HEADER_LEN..body.len() {
        assert!(
            matches!(
                decode(&sealed(&body[..len]), &key()),
                Err(HeartbeatError::Malformed(_))
            ),
            "{len}"
        );
    }
    // Trailing bytes inside the authenticated part.
    let mut trailing = body.clone();
    trailing.extend_from_slice(&[0, 0, 0]);
    assert!(matches!(
        decode(&sealed(&trailing), &key()),
        Err(HeartbeatError::TrailingBytes(3))
    ));

    let with = |at: usize, byte: u8| {
        let mut b = body.clone();
        b[at] = byte;
        decode(&sealed(&b), &key())
    };
    assert!(matches!(with(0, b'X'), Err(HeartbeatError::BadMagic)));
    assert!(matches!(
        with(4, 5),
        Err(HeartbeatError::UnsupportedVersion(5))
    ));
    assert!(matches!(
        with(4, 0),
        Err(HeartbeatError::UnsupportedVersion(0))
    ));
    assert!(matches!(
        with(5, 1),
        Err(HeartbeatError::Malformed("flags"))
    ));
    // Device name length 0, then 65.
    assert!(matches!(
        with(6, 0),
        Err(HeartbeatError::Malformed("device"))
    ));
    assert!(matches!(
        with(6, 65),
        Err(HeartbeatError::Malformed("device"))
    ));
    // Invalid UTF-8 in the device name "lb-a".
    assert!(matches!(
        with(7, 0xff),
        Err(HeartbeatError::Malformed("device"))
    ));
    // eligible is after magic+version+flags (6), name (1 + 4), three u64 (24).
    let eligible_at = 6 + 5 + 24;
    assert_eq!(body[eligible_at], 1);
    assert!(matches!(
        with(eligible_at, 2),
        Err(HeartbeatError::Malformed("eligible"))
    ));
    // An active count far beyond what is there (after the eight bytes of usable_ms).
    let count_at = eligible_at + 1 + 8;
    assert_eq!(&body[count_at..count_at + 2], &[0, 2]);
    let mut b = body.clone();
    b[count_at] = 0xff;
    b[count_at + 1] = 0xff;
    assert!(matches!(
        decode(&sealed(&b), &key()),
        Err(HeartbeatError::Malformed(_))
    ));
}

/// `sample()` reporting two traffic groups whose mirror is not in sync.
fn sample_unsynced() -> Heartbeat {
    Heartbeat {
        unsynced: vec!["tg-1".into(), "tg-3".into()],
        ..sample()
    }
}

#[test]
fn round_trip_unsynced_and_unavailable() {
    let h = Heartbeat {
        unavailable: vec![
            "30.1.1.10".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        ],
        ..sample_unsynced()
    };
    let d = encode(&h, &key()).unwrap();
    assert_eq!(d[4], VERSION);
    assert_eq!(decode(&d, &key()).unwrap(), h);
    // The lists end the body: two names of 1 + 4 bytes, then 1 + 4 and 1 + 16 bytes.
    let plain = encode(&sample(), &key()).unwrap();
    assert_eq!(d.len(), plain.len() + 2 * 5 + 5 + 17);
    // A heartbeat without the fields (an old peer's JSON form) deserializes with empty lists.
    let mut json = serde_json::to_value(sample()).unwrap();
    json.as_object_mut().unwrap().remove("unsynced");
    json.as_object_mut().unwrap().remove("unavailable");
    let old: Heartbeat = serde_json::from_value(json).unwrap();
    assert_eq!(old, sample());
}

/// The body an earlier release wrote for `h`: version 1 (names only, no lists) or version 2
/// (version 1 plus the unsynced list, only when it is not empty).
fn old_body(h: &Heartbeat) -> Vec<u8> {
    let mut b = b"SLHB".to_vec();
    b.push(if h.unsynced.is_empty() { 1 } else { 2 });
    b.push(0);
    let name = |b: &mut Vec<u8>, n: &str| {
        b.push(n.len() as u8);
        b.extend_from_slice(n.as_bytes());
    };
    name(&mut b, &h.device);
    for x in [h.epoch, h.seq, h.sent_ms] {
        b.extend_from_slice(&x.to_be_bytes());
    }
    b.push(u8::from(h.eligible));
    b.extend_from_slice(&(h.active.len() as u16).to_be_bytes());
    for c in &h.active {
        name(&mut b, &c.traffic_group);
    }
    b.extend_from_slice(&(h.orders.len() as u16).to_be_bytes());
    for o in &h.orders {
        b.extend_from_slice(&o.id.to_be_bytes());
        name(&mut b, &o.traffic_group);
        name(&mut b, &o.to);
    }
    if !h.unsynced.is_empty() {
        b.extend_from_slice(&(h.unsynced.len() as u16).to_be_bytes());
        for t in &h.unsynced {
            name(&mut b, t);
        }
    }
    b
}

#[test]
fn versions_1_and_2_decode_with_generation_0_and_empty_lists() {
    let zero = |mut h: Heartbeat| {
        for c in &mut h.active {
            c.generation = 0;
            c.ordered = false;
        }
        h.usable_ms = u64::MAX;
        h
    };
    let v1 = old_body(&sample());
    assert_eq!(v1[4], VERSION_1);
    assert_eq!(decode(&sealed(&v1), &key()).unwrap(), zero(sample()));
    let v2 = old_body(&sample_unsynced());
    assert_eq!(v2[4], VERSION_UNSYNCED);
    assert_eq!(
        decode(&sealed(&v2), &key()).unwrap(),
        zero(sample_unsynced())
    );
    // Version 2 promises a non-empty unsynced list after the orders.
    let mut empty = v1.clone();
    empty[4] = VERSION_UNSYNCED;
    assert!(matches!(
        decode(&sealed(&empty), &key()),
        Err(HeartbeatError::Malformed("unsynced count"))
    ));
    empty.extend_from_slice(&[0, 0]);
    assert!(matches!(
        decode(&sealed(&empty), &key()),
        Err(HeartbeatError::Malformed("unsynced count"))
    ));
    // A version-1 body read as version 3 runs short of the generations.
    let mut as_v3 = v1;
    as_v3[4] = VERSION_3;
    assert!(matches!(
        decode(&sealed(&as_v3), &key()),
        Err(HeartbeatError::Malformed(_))
    ));
}

#[test]
fn version_4_carries_the_configuration_mark_and_3_has_none() {
    for h in [sample(), sample_config()] {
        let d = encode(&h, &key()).unwrap();
        assert_eq!(d[4], VERSION);
        assert_eq!(decode(&d, &key()).unwrap(), h);
    }
    // The mark is the last field: without it and as version 3, the same heartbeat, no mark.
    let d = encode(&sample(), &key()).unwrap();
    let mut v3 = d[..d.len() - TAG_LEN - 1].to_vec();
    v3[4] = VERSION_3;
    assert_eq!(decode(&sealed(&v3), &key()).unwrap(), sample());
    // A dirty flag or a presence byte other than 0 or 1 is refused.
    let d = encode(&sample_config(), &key()).unwrap();
    let body = &d[..d.len() - TAG_LEN];
    for (at, field) in [
        (body.len() - 1, "config dirty"),
        (body.len() - 1 - 32 - 16 - 5 - 1, "config"),
    ] {
        let mut b = body.to_vec();
        b[at] = 2;
        assert!(
            matches!(decode(&sealed(&b), &key()), Err(HeartbeatError::Malformed(f)) if f == field),
            "{field}"
        );
    }
}

#[test]
fn claim_flags_other_than_0_or_1_are_rejected() {
    let body = sample_body();
    // The first claim's flags: after eligible, usable_ms, the count, "tg-1" and its generation.
    let at = 6 + 5 + 24 + 1 + 8 + 2 + 5 + 8;
    assert_eq!(body[at], 0);
    assert_eq!(body[at + 5 + 8 + 1], 1, "the second claim is ordered");
    for bad in [2u8, 0x80, 0xff] {
        let mut b = body.clone();
        b[at] = bad;
        assert!(matches!(
            decode(&sealed(&b), &key()),
            Err(HeartbeatError::Malformed("claim flags"))
        ));
    }
}

#[test]
fn malformed_unavailable_list_is_rejected() {
    let h = Heartbeat {
        unavailable: vec!["30.1.1.10".parse().unwrap()],
        ..sample()
    };
    let d = encode(&h, &key()).unwrap();
    let body = d[..d.len() - TAG_LEN].to_vec();
    // The family byte is the sixth from the end (4 address bytes and the configuration
    // mark's presence byte follow it).
    let family_at = body.len() - 6;
    assert_eq!(body[family_at], 4);
    for bad in [0u8, 5, 7, 255] {
        let mut b = body.clone();
        b[family_at] = bad;
        assert!(matches!(
            decode(&sealed(&b), &key()),
            Err(HeartbeatError::Malformed("unavailable address family"))
        ));
    }
    // Family 6 with only 4 bytes after it.
    let mut b = body.clone();
    b[family_at] = 6;
    assert!(matches!(
        decode(&sealed(&b), &key()),
        Err(HeartbeatError::Malformed("unavailable address"))
    ));
    // A count beyond what is there.
    let mut b = body;
    let count_at = b.len() - 8;
    b[count_at] = 0x7f;
    assert!(matches!(
        decode(&sealed(&b), &key()),
        Err(HeartbeatError::Malformed(_))
    ));
}

#[test]
fn malformed_unsynced_list_is_rejected() {
    let d = encode(&sample_unsynced(), &key()).unwrap();
    let body = d[..d.len() - TAG_LEN].to_vec();
    for len in HEADER_LEN..body.len() {
        assert!(
            matches!(
                decode(&sealed(&body[..len]), &key()),
                Err(HeartbeatError::Malformed(_))
            ),
            "{len}"
        );
    }
    // Bad names in the list are refused on both sides.
    let bad = Heartbeat {
        unsynced: vec![String::new()],
        ..sample()
    };
    assert!(matches!(
        encode(&bad, &key()),
        Err(HeartbeatError::Malformed("unsynced traffic group"))
    ));
    let mut long = body.clone();
    // The last name's length byte: before "tg-3", the empty unavailable list and the
    // configuration mark's presence byte.
    let at = long.len() - 8;
    assert_eq!(long[at], 4);
    long[at] = 65;
    assert!(matches!(
        decode(&sealed(&long), &key()),
        Err(HeartbeatError::Malformed("unsynced traffic group"))
    ));
    let mut trailing = body;
    trailing.push(0);
    assert!(matches!(
        decode(&sealed(&trailing), &key()),
        Err(HeartbeatError::TrailingBytes(1))
    ));
}

#[test]
fn replay_guard_orders_by_epoch_then_seq() {
    let mut g = guard();
    g.check(&hb("lb-a", 10, 5)).unwrap();
    assert_eq!(g.last_accepted("lb-a"), Some((10, 5)));
    // The same heartbeat again.
    assert!(matches!(
        g.check(&hb("lb-a", 10, 5)),
        Err(HeartbeatError::Replayed {
            epoch: 10,
            seq: 5,
            last_epoch: 10,
            last_seq: 5,
            ..
        })
    ));
    // An older seq.
    assert!(matches!(
        g.check(&hb("lb-a", 10, 4)),
        Err(HeartbeatError::Replayed { .. })
    ));
    g.check(&hb("lb-a", 10, 6)).unwrap();
    // Gaps are fine (lost datagrams).
    g.check(&hb("lb-a", 10, 100)).unwrap();
    // A restart: new epoch, seq 0.
    g.check(&hb("lb-a", 11, 0)).unwrap();
    // The old epoch, even with a higher seq, is over.
    let err = g.check(&hb("lb-a", 10, 101)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "replayed heartbeat from lb-a (epoch 10 seq 101, last 11 0)"
    );
    assert_eq!(g.last_accepted("lb-a"), Some((11, 0)));
    // Devices are tracked independently.
    g.check(&hb("lb-b", 1, 0)).unwrap();
    assert_eq!(g.last_accepted("lb-b"), Some((1, 0)));
}

#[test]
fn replay_of_same_datagram_is_rejected() {
    let mut g = guard();
    let d = encode(&sample(), &key()).unwrap();
    g.check(&decode(&d, &key()).unwrap()).unwrap();
    assert!(matches!(
        g.check(&decode(&d, &key()).unwrap()),
        Err(HeartbeatError::Replayed { .. })
    ));
}

#[test]
fn resumed_device_backlog_is_accepted_in_order() {
    // A peer that was stopped and resumed: its queued heartbeats arrive in order, then a
    // duplicated stale one is rejected and must not refresh anything.
    let mut g = guard();
    for seq in 0..50 {
        g.check(&hb("lb-b", 7, seq)).unwrap();
    }
    assert!(g.check(&hb("lb-b", 7, 20)).is_err());
    assert_eq!(g.last_accepted("lb-b"), Some((7, 49)));
}

#[test]
fn unknown_device_and_myself_are_rejected() {
    let mut g = guard();
    assert!(matches!(
        g.check(&hb("lb-z", 1, 1)),
        Err(HeartbeatError::UnknownDevice(d)) if d == "lb-z"
    ));
    assert!(matches!(
        g.check(&hb("lb-c", 1, 1)),
        Err(HeartbeatError::FromMyself)
    ));
    // Rejections record nothing.
    assert_eq!(g.last_accepted("lb-z"), None);
    assert_eq!(g.last_accepted("lb-c"), None);
}

#[test]
fn membership_changes_admit_and_refuse_devices_and_keep_replay_state() {
    let mut g = guard();
    g.check(&hb("lb-a", 10, 5)).unwrap();
    // lb-d joins, lb-a leaves.
    g.set_devices(&["lb-b".into(), "lb-c".into(), "lb-d".into()]);
    g.check(&hb("lb-d", 1, 1)).unwrap();
    assert!(matches!(
        g.check(&hb("lb-a", 10, 6)),
        Err(HeartbeatError::UnknownDevice(_))
    ));
    // lb-a comes back: its old heartbeats stay replays.
    g.set_devices(&["lb-a".into(), "lb-b".into(), "lb-c".into()]);
    assert!(matches!(
        g.check(&hb("lb-a", 10, 5)),
        Err(HeartbeatError::Replayed { .. })
    ));
    g.check(&hb("lb-a", 10, 7)).unwrap();
    assert!(matches!(
        g.check(&hb("lb-d", 1, 2)),
        Err(HeartbeatError::UnknownDevice(_))
    ));
}

#[test]
fn group_key_constructors() {
    assert!(matches!(
        GroupKey::from_bytes(&[0; 15]),
        Err(HeartbeatError::KeyTooShort(15))
    ));
    assert!(GroupKey::from_bytes(&[0; 16]).is_ok());
    assert!(matches!(
        GroupKey::from_hex("00112233"),
        Err(HeartbeatError::KeyTooShort(4))
    ));
    assert!(matches!(
        GroupKey::from_hex("0g112233445566778899aabbccddeeff"),
        Err(HeartbeatError::KeyNotHex)
    ));
    assert!(matches!(
        GroupKey::from_hex("0011223344556677889"),
        Err(HeartbeatError::KeyNotHex)
    ));
    let spaced = "30313233343536373839616263646566 30313233343536373839616263646566";
    assert!(matches!(
        GroupKey::from_hex(spaced),
        Err(HeartbeatError::KeyNotHex)
    ));
    // Hex and raw forms of the same key authenticate the same datagrams.
    let hex =
        GroupKey::from_hex("\n 3031323334353637383961626364656630313233343536373839616263646566\n")
            .unwrap();
    let d = encode(&sample(), &hex).unwrap();
    assert!(decode(&d, &key()).is_ok());
    let upper = GroupKey::from_hex(
        "3031323334353637383961626364656630313233343536373839616263646566"
            .to_uppercase()
            .as_str(),
    )
    .unwrap();
    assert!(decode(&d, &upper).is_ok());
}

#[test]
fn group_key_from_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("lbd-hb-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Every file written below is private, as a key file must be.
    let write = |p: &std::path::Path, bytes: &[u8]| {
        std::fs::write(p, bytes).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    let d = encode(&sample(), &key()).unwrap();

    let hex = dir.join("hex");
    write(
        &hex,
        b"3031323334353637383961626364656630313233343536373839616263646566\n",
    );
    assert!(decode(&d, &GroupKey::from_file(&hex).unwrap()).is_ok());

    // Raw bytes (not all hex digits), surrounding whitespace trimmed.
    let raw = dir.join("raw");
    write(&raw, b"  correct horse battery staple\r\n");
    let raw_key = GroupKey::from_bytes(b"correct horse battery staple").unwrap();
    let raw_d = encode(&sample(), &raw_key).unwrap();
    assert!(decode(&raw_d, &GroupKey::from_file(&raw).unwrap()).is_ok());
    let binary = dir.join("binary");
    let bytes: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37) | 0x80).collect();
    write(&binary, &bytes);
    let bin_d = encode(&sample(), &GroupKey::from_bytes(&bytes).unwrap()).unwrap();
    assert!(decode(&bin_d, &GroupKey::from_file(&binary).unwrap()).is_ok());
    // The documented ambiguity: a file of an even number of hex digits is read as hex.
    let hexlike = dir.join("hexlike");
    write(&hexlike, b"0123456789abcdef0123456789abcdef");
    let as_hex = GroupKey::from_hex("0123456789abcdef0123456789abcdef").unwrap();
    let hex_d = encode(&sample(), &as_hex).unwrap();
    assert!(decode(&hex_d, &GroupKey::from_file(&hexlike).unwrap()).is_ok());

    let short = dir.join("short");
    write(&short, b"tooshort\n");
    assert!(matches!(
        GroupKey::from_file(&short),
        Err(HeartbeatError::KeyTooShort(8))
    ));

    let missing = dir.join("missing");
    let err = GroupKey::from_file(&missing).unwrap_err();
    assert!(matches!(err, HeartbeatError::KeyFile { .. }));
    assert!(err.to_string().starts_with("cannot read group key file "));

    // Readable by others: refused, with the mode and the fix.
    std::fs::set_permissions(&hex, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = GroupKey::from_file(&hex).unwrap_err();
    assert!(
        matches!(err, HeartbeatError::KeyFileMode { mode: 0o644, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("chmod 600"), "{err}");

    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn group_key_debug_hides_the_key() {
    let shown = format!("{:?}", key());
    assert_eq!(shown, "GroupKey(<redacted>)");
    assert!(!shown.contains("0123"));
}

#[test]
fn error_messages_are_one_line_lowercase() {
    let errors = [
        HeartbeatError::Truncated { len: 3, min: 38 },
        HeartbeatError::BadMagic,
        HeartbeatError::UnsupportedVersion(9),
        HeartbeatError::BadTag,
        HeartbeatError::Malformed("device"),
        HeartbeatError::TrailingBytes(2),
        HeartbeatError::TooLarge(2000),
        HeartbeatError::Replayed {
            device: "lb-a".into(),
            epoch: 1,
            seq: 2,
            last_epoch: 3,
            last_seq: 4,
        },
        HeartbeatError::UnknownDevice("lb-z".into()),
        HeartbeatError::FromMyself,
        HeartbeatError::KeyTooShort(3),
        HeartbeatError::KeyNotHex,
    ];
    for e in errors {
        let s = e.to_string();
        assert!(!s.contains('\n'), "{s}");
        assert!(s.starts_with(|c: char| c.is_ascii_lowercase()), "{s}");
    }
    assert_eq!(
        HeartbeatError::UnsupportedVersion(9).to_string(),
        "unsupported heartbeat version 9"
    );
}

fn name() -> impl Strategy<Value = String> {
    // ASCII up to the 64-byte limit, or any printable characters within it (<= 4 bytes each).
    prop_oneof!["[a-zA-Z0-9._-]{1,64}", "\\PC{1,16}"]
}

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    let order = (any::<u64>(), name(), name()).prop_map(|(id, traffic_group, to)| Order {
        id,
        traffic_group,
        to,
    });
    (
        name(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        (any::<bool>(), any::<u64>()),
        // At most 109 + 7 * 74 + 3 * 138 + 2 + 2 * 65 + 2 + 4 * 17 + 115 = 1358 bytes with
        // the list counts, the configuration mark and the tag: always within MAX_DATAGRAM.
        prop::collection::vec(
            (name(), any::<u64>(), any::<bool>()).prop_map(|(t, g, ordered)| Claim {
                ordered,
                ..Claim::new(t, g)
            }),
            0..=7,
        ),
        prop::collection::vec(order, 0..=3),
        prop::collection::vec(name(), 0..=2),
        prop::collection::vec(
            prop_oneof![
                any::<[u8; 4]>().prop_map(IpAddr::from),
                any::<[u8; 16]>().prop_map(IpAddr::from),
            ],
            0..=4,
        ),
        prop::option::of(
            (
                name(),
                any::<u64>(),
                any::<u64>(),
                any::<[u8; 32]>(),
                any::<bool>(),
            )
                .prop_map(|(origin, counter, time_ms, digest, dirty)| ConfigMark {
                    origin,
                    counter,
                    time_ms,
                    digest,
                    dirty,
                }),
        ),
    )
        .prop_map(
            |(
                device,
                epoch,
                seq,
                sent_ms,
                (eligible, usable_ms),
                active,
                orders,
                unsynced,
                unavailable,
                config,
            )| {
                Heartbeat {
                    device,
                    epoch,
                    seq,
                    sent_ms,
                    eligible,
                    usable_ms,
                    active,
                    orders,
                    unsynced,
                    unavailable,
                    config,
                }
            },
        )
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1500)) {
        let _ = decode(&bytes, &key());
    }

    #[test]
    fn parser_never_panics_on_authenticated_garbage(
        tail in prop::collection::vec(any::<u8>(), 0..1300)
    ) {
        // Past the tag check: a valid header followed by arbitrary bytes.
        for version in [VERSION_1, VERSION_UNSYNCED, VERSION_3, VERSION] {
            let mut body = b"SLHB".to_vec();
            body.extend_from_slice(&[version, 0]);
            body.extend_from_slice(&tail);
            let _ = decode(&sealed(&body), &key());
        }
    }

    #[test]
    fn encode_decode_round_trips(h in heartbeat()) {
        let d = encode(&h, &key()).unwrap();
        prop_assert!(d.len() <= MAX_DATAGRAM);
        prop_assert_eq!(decode(&d, &key()).unwrap(), h);
    }
}

#[test]
fn freshness_is_checked_both_ways_against_the_tolerance() {
    let mut hb = sample();
    hb.sent_ms = 1_000_000;
    assert!(check_fresh(&hb, 1_000_000, 30_000).is_ok());
    assert!(check_fresh(&hb, 1_030_000, 30_000).is_ok());
    assert!(check_fresh(&hb, 970_000, 30_000).is_ok());
    let e = check_fresh(&hb, 1_030_001, 30_000).unwrap_err();
    assert!(
        matches!(e, HeartbeatError::Stale { age_ms: 30_001, .. }),
        "{e:?}"
    );
    // From the future (a sender whose clock runs ahead) as well.
    assert!(check_fresh(&hb, 969_999, 30_000).is_err());
}
