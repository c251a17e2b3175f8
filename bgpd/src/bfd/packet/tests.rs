//! Codec tests: fixtures laid out by hand from RFC 5880 §4.1–§4.4 (digests computed outside
//! Rust, with Python's hashlib), one test per §6.8.6 check, every truncation, and properties.

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Version 1, diag 0, Down, DM 3, length 24, my 1, your 0, tx 1 s, rx 300 ms, echo 0.
const DOWN: &str = "20 40 03 18  00000001 00000000 000f4240 000493e0 00000000";

fn down_packet() -> ControlPacket {
    ControlPacket {
        diag: Diag::None,
        state: State::Down,
        poll: false,
        final_: false,
        cpi: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: 1,
        your_discriminator: 0,
        desired_min_tx_us: 1_000_000,
        required_min_rx_us: 300_000,
        required_min_echo_rx_us: 0,
        auth: None,
    }
}

/// The mandatory section of the authenticated fixtures: Up, A bit, DM 3, my 0x11223344,
/// your 0x55667788, 300 ms both ways; Length to be appended per type.
fn auth_header(len: u8) -> String {
    format!("20 c4 03 {len:02x}  11223344 55667788 000493e0 000493e0 00000000")
}

/// Keyed MD5, key id 7, seq 0x01020304, key "secret": md5 computed by hashlib over the packet
/// with "secret" zero-padded to 16 bytes in the digest field.
fn md5_fixture() -> Vec<u8> {
    hex(&format!(
        "{} 02 18 07 00 01020304 29503c58f538d7d49dc6aa7be5d8acb1",
        auth_header(48)
    ))
}

/// Meticulous Keyed SHA1, same fields, key "secret" padded to 20 bytes.
fn sha1_fixture() -> Vec<u8> {
    hex(&format!(
        "{} 05 1c 07 00 01020304 c9d8d069320a4aed25a1d6785a616e014a6c7841",
        auth_header(52)
    ))
}

#[test]
fn decodes_rfc_layout() {
    assert_eq!(decode(&hex(DOWN)), Ok(down_packet()));
    assert_eq!(encode(&down_packet()), hex(DOWN));
}

#[test]
fn flags_and_diag_positions() {
    // diag 3, Up, P and F and C and D: 0b11_1_1_1_0_1_0.
    let b = hex("23 fa 05 18  00000009 00000002 00000001 00000002 00000003");
    let p = decode(&b).unwrap();
    assert_eq!(p.diag, Diag::NeighborSignaledSessionDown);
    assert_eq!(p.state, State::Up);
    assert!(p.poll && p.final_ && p.cpi && p.demand);
    assert_eq!(p.detect_mult, 5);
    assert_eq!(
        (
            p.my_discriminator,
            p.your_discriminator,
            p.desired_min_tx_us,
            p.required_min_rx_us,
            p.required_min_echo_rx_us
        ),
        (9, 2, 1, 2, 3)
    );
    assert_eq!(encode(&p), b);
}

#[test]
fn reserved_diag_round_trips() {
    let mut b = hex(DOWN);
    b[0] = 0x20 | 31;
    let p = decode(&b).unwrap();
    assert_eq!(p.diag, Diag::Reserved(31));
    assert_eq!(encode(&p), b);
}

#[test]
fn trailing_bytes_past_length_are_ignored() {
    let mut b = hex(DOWN);
    b.extend_from_slice(&[0xde, 0xad]);
    assert_eq!(decode(&b), Ok(down_packet()));
}

#[test]
fn every_truncation_is_rejected() {
    for fixture in [hex(DOWN), md5_fixture(), sha1_fixture()] {
        for n in 0..fixture.len() {
            assert!(decode(&fixture[..n]).is_err(), "accepted {n} bytes");
        }
        assert!(decode(&fixture).is_ok());
    }
}

#[test]
fn version_must_be_one() {
    for v in [0u8, 2, 7] {
        let mut b = hex(DOWN);
        b[0] = v << 5;
        assert_eq!(decode(&b), Err(PacketError::Version(v)));
    }
}

#[test]
fn length_checks() {
    let mut b = hex(DOWN);
    b[3] = 23;
    assert_eq!(
        decode(&b),
        Err(PacketError::LengthTooSmall {
            length: 23,
            min: 24
        })
    );
    b[3] = 25;
    assert_eq!(
        decode(&b),
        Err(PacketError::LengthBeyondPayload {
            length: 25,
            received: 24
        })
    );
    // A bit set: at least 26.
    let mut b = hex(DOWN);
    b[1] |= 0x04;
    assert_eq!(
        decode(&b),
        Err(PacketError::LengthTooSmall {
            length: 24,
            min: 26
        })
    );
    // A bit clear but a longer Length: nothing can be there.
    let mut b = hex(DOWN);
    b.extend_from_slice(&[0, 0]);
    b[3] = 26;
    assert_eq!(
        decode(&b),
        Err(PacketError::LengthMismatch {
            length: 26,
            expected: 24
        })
    );
}

#[test]
fn zero_detect_mult_multipoint_and_discriminators() {
    let mut b = hex(DOWN);
    b[2] = 0;
    assert_eq!(decode(&b), Err(PacketError::ZeroDetectMult));
    let mut b = hex(DOWN);
    b[1] |= 0x01;
    assert_eq!(decode(&b), Err(PacketError::Multipoint));
    let mut b = hex(DOWN);
    b[7] = 0;
    assert_eq!(decode(&b), Err(PacketError::ZeroMyDiscriminator));
    // Your Discriminator 0 is fine in Down and AdminDown only.
    let mut b = hex(DOWN);
    b[1] = 0x00;
    assert!(decode(&b).is_ok());
    for (bits, st) in [(0x80, State::Init), (0xc0, State::Up)] {
        b[1] = bits;
        assert_eq!(decode(&b), Err(PacketError::ZeroYourDiscriminator(st)));
    }
}

#[test]
fn auth_section_checks() {
    // Unknown type.
    let b = hex(&format!("{} 06 04 01 00", auth_header(28)));
    assert_eq!(decode(&b), Err(PacketError::UnknownAuthType(6)));
    let b = hex(&format!("{} 00 04 01 00", auth_header(28)));
    assert_eq!(decode(&b), Err(PacketError::UnknownAuthType(0)));
    // Simple password: Auth Len 4..=19.
    let b = hex(&format!("{} 01 03 01", auth_header(27)));
    assert_eq!(
        decode(&b),
        Err(PacketError::AuthLen {
            auth_type: 1,
            len: 3
        })
    );
    let b = hex(&format!("{} 01 04 01 61", auth_header(28)));
    let p = decode(&b).unwrap();
    assert_eq!(
        p.auth,
        Some(Auth::SimplePassword {
            key_id: 1,
            password: Password::new(b"a").unwrap()
        })
    );
    assert_eq!(encode(&p), b);
    // Auth Len disagreeing with Length.
    let b = hex(&format!("{} 01 05 01 61", auth_header(28)));
    assert_eq!(
        decode(&b),
        Err(PacketError::LengthMismatch {
            length: 28,
            expected: 29
        })
    );
    // MD5 must be 24, SHA1 28.
    let mut md5 = md5_fixture();
    md5[25] = 28;
    assert_eq!(
        decode(&md5),
        Err(PacketError::AuthLen {
            auth_type: 2,
            len: 28
        })
    );
    let mut sha = sha1_fixture();
    sha[25] = 24;
    assert_eq!(
        decode(&sha),
        Err(PacketError::AuthLen {
            auth_type: 5,
            len: 24
        })
    );
}

fn key(t: AuthType, secret: &[u8]) -> AuthKey {
    AuthKey::new(t, 7, secret).unwrap()
}

#[test]
fn md5_fixture_verifies_and_signing_reproduces_it() {
    let b = md5_fixture();
    let p = decode(&b).unwrap();
    assert_eq!(
        p.auth.as_ref().map(Auth::auth_type),
        Some(AuthType::KeyedMd5)
    );
    assert_eq!(p.auth.as_ref().and_then(Auth::seq), Some(0x01020304));
    let k = key(AuthType::KeyedMd5, b"secret");
    assert_eq!(check_auth(&p, &k), Ok(()));
    let mut unsigned = p.clone();
    unsigned.auth = None;
    sign(&mut unsigned, &k, 0x01020304);
    assert_eq!(encode(&unsigned), b);
    assert_eq!(
        check_auth(&p, &key(AuthType::KeyedMd5, b"secreT")),
        Err(PacketError::BadDigest)
    );
}

#[test]
fn sha1_fixture_verifies_and_signing_reproduces_it() {
    let b = sha1_fixture();
    let p = decode(&b).unwrap();
    let k = key(AuthType::MeticulousKeyedSha1, b"secret");
    assert_eq!(check_auth(&p, &k), Ok(()));
    let mut unsigned = p.clone();
    unsigned.auth = None;
    sign(&mut unsigned, &k, 0x01020304);
    assert_eq!(encode(&unsigned), b);
    assert_eq!(
        check_auth(&p, &key(AuthType::KeyedSha1, b"secret")),
        Err(PacketError::AuthTypeMismatch {
            received: AuthType::MeticulousKeyedSha1,
            expected: AuthType::KeyedSha1
        })
    );
}

#[test]
fn any_changed_byte_breaks_the_digest() {
    let k = key(AuthType::KeyedMd5, b"secret");
    let b = md5_fixture();
    for i in 0..b.len() {
        let mut c = b.clone();
        c[i] ^= 0x01;
        if let Ok(p) = decode(&c) {
            if i == 26 {
                // The Key ID.
                assert!(matches!(
                    check_auth(&p, &k),
                    Err(PacketError::KeyIdMismatch { .. })
                ));
            } else {
                assert!(check_auth(&p, &k).is_err(), "byte {i} not covered");
            }
        }
    }
    // The Reserved byte is ignored but covered: a nonzero one signed by the peer verifies.
    let mut p = decode(&b).unwrap();
    p.auth = None;
    sign(&mut p, &k, 5);
    if let Some(Auth::Md5 { reserved, .. }) = &mut p.auth {
        *reserved = 0x55;
    }
    let Some(Auth::Md5 { digest, .. }) = &mut p.auth else {
        unreachable!()
    };
    *digest = [0; 16];
    let mut hashed = p.clone();
    if let Some(Auth::Md5 { digest, .. }) = &mut hashed.auth {
        digest[..6].copy_from_slice(b"secret");
    }
    let d = Md5::digest(encode(&hashed));
    if let Some(Auth::Md5 { digest, .. }) = &mut p.auth {
        digest.copy_from_slice(&d);
    }
    let received = decode(&encode(&p)).unwrap();
    assert_eq!(check_auth(&received, &k), Ok(()));
}

#[test]
fn simple_password() {
    let k = key(AuthType::SimplePassword, b"hunter2");
    let mut p = down_packet();
    sign(&mut p, &k, 0);
    let b = encode(&p);
    assert_eq!(&b[24..], &hex("01 0a 07 68756e74657232")[..]);
    let p = decode(&b).unwrap();
    assert_eq!(check_auth(&p, &k), Ok(()));
    assert_eq!(
        check_auth(&p, &key(AuthType::SimplePassword, b"hunter3")),
        Err(PacketError::BadPassword)
    );
    assert_eq!(
        check_auth(
            &p,
            &AuthKey::new(AuthType::SimplePassword, 8, b"hunter2").unwrap()
        ),
        Err(PacketError::KeyIdMismatch {
            received: 7,
            expected: 8
        })
    );
    assert_eq!(check_auth(&down_packet(), &k), Err(PacketError::BadDigest));
}

#[test]
fn key_lengths() {
    for (t, max) in [
        (AuthType::SimplePassword, 16),
        (AuthType::KeyedMd5, 16),
        (AuthType::MeticulousKeyedMd5, 16),
        (AuthType::KeyedSha1, 20),
        (AuthType::MeticulousKeyedSha1, 20),
    ] {
        assert!(AuthKey::new(t, 1, &[]).is_err());
        assert!(AuthKey::new(t, 1, &vec![1; max]).is_ok());
        assert_eq!(
            AuthKey::new(t, 1, &vec![1; max + 1]),
            Err(PacketError::KeyLength {
                auth_type: t,
                len: max + 1,
                max
            })
        );
    }
    assert!(Password::new(&[0; 17]).is_err());
    // Debug never shows the secret.
    let k = key(AuthType::KeyedSha1, b"topsecret");
    assert!(!format!("{k:?}").contains("topsecret"));
}

#[test]
fn replay_window() {
    let mut w = ReplayWindow::default();
    // Unknown: anything goes.
    assert_eq!(w.check(1000, true, 3), Ok(()));
    w.accept(1000);
    // Keyed: [last, last + 3 × DM].
    assert_eq!(w.check(1000, false, 3), Ok(()));
    assert_eq!(w.check(1009, false, 3), Ok(()));
    assert_eq!(
        w.check(1010, false, 3),
        Err(PacketError::Sequence {
            seq: 1010,
            low: 1000,
            high: 1009
        })
    );
    assert!(w.check(999, false, 3).is_err());
    // Meticulous: [last + 1, last + 3 × DM].
    assert!(w.check(1000, true, 3).is_err());
    assert_eq!(w.check(1001, true, 3), Ok(()));
    assert_eq!(w.check(1009, true, 3), Ok(()));
    assert!(w.check(1010, true, 3).is_err());
    // Circular.
    w.accept(u32::MAX - 1);
    assert_eq!(w.check(1, true, 1), Ok(()));
    assert!(w.check(2, true, 1).is_err());
    w.reset();
    assert_eq!(w.last(), None);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn arb_state() -> impl Strategy<Value = State> {
        (0u8..4).prop_map(State::from_code)
    }

    fn arb_auth() -> impl Strategy<Value = Option<Auth>> {
        prop_oneof![
            Just(None),
            (any::<u8>(), proptest::collection::vec(any::<u8>(), 1..=16)).prop_map(
                |(key_id, pw)| Some(Auth::SimplePassword {
                    key_id,
                    password: Password::new(&pw).unwrap()
                })
            ),
            (
                any::<bool>(),
                any::<u8>(),
                any::<u8>(),
                any::<u32>(),
                any::<[u8; 16]>()
            )
                .prop_map(|(meticulous, key_id, reserved, seq, digest)| Some(
                    Auth::Md5 {
                        meticulous,
                        key_id,
                        reserved,
                        seq,
                        digest
                    }
                )),
            (
                any::<bool>(),
                any::<u8>(),
                any::<u8>(),
                any::<u32>(),
                any::<[u8; 20]>()
            )
                .prop_map(|(meticulous, key_id, reserved, seq, digest)| Some(
                    Auth::Sha1 {
                        meticulous,
                        key_id,
                        reserved,
                        seq,
                        digest
                    }
                )),
        ]
    }

    prop_compose! {
        fn arb_packet()(
            diag in 0u8..32,
            state in arb_state(),
            flags in any::<[bool; 4]>(),
            detect_mult in 1u8..,
            my_discriminator in 1u32..,
            your in any::<u32>(),
            tx in any::<u32>(),
            rx in any::<u32>(),
            echo in any::<u32>(),
            auth in arb_auth(),
        ) -> ControlPacket {
            let your_discriminator = if matches!(state, State::Down | State::AdminDown) {
                your
            } else {
                your.max(1)
            };
            ControlPacket {
                diag: Diag::from_code(diag),
                state,
                poll: flags[0],
                final_: flags[1],
                cpi: flags[2],
                demand: flags[3],
                detect_mult,
                my_discriminator,
                your_discriminator,
                desired_min_tx_us: tx,
                required_min_rx_us: rx,
                required_min_echo_rx_us: echo,
                auth,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode(&b);
        }

        #[test]
        fn decode_never_panics_near_valid(mut b in proptest::collection::vec(any::<u8>(), 24..60)) {
            // Mostly-valid headers reach the deeper checks.
            b[0] = 0x20 | (b[0] & 0x1f);
            b[3] = b.len() as u8;
            b[1] &= !0x01;
            let _ = decode(&b);
        }

        #[test]
        fn encode_decode_round_trips(p in arb_packet()) {
            let b = encode(&p);
            prop_assert_eq!(b.len(), usize::from(b[3]));
            prop_assert_eq!(decode(&b), Ok(p));
        }

        #[test]
        fn signed_packets_verify(p in arb_packet(), ty in 1u8..=5, secret in proptest::collection::vec(any::<u8>(), 1..=16), seq in any::<u32>()) {
            let k = AuthKey::new(AuthType::from_code(ty).unwrap(), 3, &secret).unwrap();
            let mut p = p;
            sign(&mut p, &k, seq);
            let back = decode(&encode(&p)).unwrap();
            prop_assert_eq!(check_auth(&back, &k), Ok(()));
        }
    }
}
