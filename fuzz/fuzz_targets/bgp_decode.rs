//! BGP message decoding (`bgpd::wire::decode`) under the session settings the first byte picks,
//! and the round trip: whatever decodes must encode to bytes that decode again.
//!
//! Byte 0: bit 0 asn4, bits 1–2 ADD-PATH receive for IPv4/IPv6, bits 3–4 ADD-PATH send for
//! IPv4/IPv6, bit 5 ebgp. The rest is one message, header included.
#![no_main]

use bgpd::wire::{decode, encode, frame_len, Family, SessionCodec};
use libfuzzer_sys::fuzz_target;

fn codec(flags: u8) -> SessionCodec {
    let pick = |v4: u8, v6: u8| {
        let mut f = Vec::new();
        if flags & v4 != 0 {
            f.push(Family::Ipv4Unicast);
        }
        if flags & v6 != 0 {
            f.push(Family::Ipv6Unicast);
        }
        f
    };
    SessionCodec {
        asn4: flags & 0x01 != 0,
        add_path_receive: pick(0x02, 0x04),
        add_path_send: pick(0x08, 0x10),
        ebgp: flags & 0x20 != 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, msg)) = data.split_first() else {
        return;
    };
    let ctx = codec(flags);
    let _ = frame_len(msg);
    let Ok(decoded) = decode(msg, &ctx) else {
        return;
    };
    // The peer's view of the session: what we receive with path ids, it sends with them.
    let peer = SessionCodec {
        asn4: ctx.asn4,
        add_path_send: ctx.add_path_receive.clone(),
        add_path_receive: ctx.add_path_send.clone(),
        ebgp: ctx.ebgp,
    };
    let bytes = encode(&decoded, &peer);
    // `encode` may split an UPDATE into several messages: walk the frames.
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let len = match frame_len(rest) {
            Ok(Some(len)) => len,
            other => panic!("re-encoded {decoded:?} does not frame: {other:?} ({rest:02x?})"),
        };
        if let Err(e) = decode(&rest[..len], &ctx) {
            panic!(
                "re-encoded {decoded:?} does not decode: {e} ({:02x?})",
                &rest[..len]
            );
        }
        rest = &rest[len..];
    }
});
