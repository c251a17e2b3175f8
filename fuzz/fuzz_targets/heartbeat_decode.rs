//! lbd's heartbeat datagrams (`lbd::cluster::heartbeat::decode`) under a fixed group key.
//!
//! Byte 0 even: the rest is a datagram as received (almost always a bad tag). Byte 0 odd: the
//! rest is a body that the harness signs with the group key first, so that the parser behind
//! the HMAC check is reached. A heartbeat that decodes goes through a replay guard, and must
//! survive `encode` then `decode` unchanged.
#![no_main]

use hmac::{Hmac, Mac};
use lbd::cluster::heartbeat::{decode, encode, GroupKey, HeartbeatError, ReplayGuard, VERSION};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = GroupKey::from_bytes(KEY).expect("key");
    let datagram = if mode & 1 == 1 {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(KEY).expect("hmac key");
        mac.update(rest);
        let mut d = rest.to_vec();
        d.extend_from_slice(&mac.finalize().into_bytes());
        d
    } else {
        rest.to_vec()
    };
    let Ok(hb) = decode(&datagram, &key) else {
        return;
    };
    let devices = ["lb-a", "lb-b", "lb-c"].map(String::from);
    let mut guard = ReplayGuard::new(&devices, "lb-c");
    let first = guard.check(&hb);
    if first.is_ok() {
        assert!(
            guard.check(&hb).is_err(),
            "the same heartbeat accepted twice"
        );
    }
    // What decodes encodes again, unless it grew past the datagram limit (an older version's
    // body is shorter than version 4's for the same content).
    let again = match encode(&hb, &key) {
        Ok(d) => d,
        Err(HeartbeatError::TooLarge(_)) if datagram.get(4) != Some(&VERSION) => return,
        Err(e) => panic!("{hb:?} does not encode: {e}"),
    };
    match decode(&again, &key) {
        Ok(back) => assert_eq!(back, hb, "round trip"),
        Err(e) => panic!("{hb:?} encodes to what does not decode: {e}"),
    }
});
