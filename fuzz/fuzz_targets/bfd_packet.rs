//! BFD Control packets: `bgpd::bfd::packet::decode` on raw bytes, the encode/decode round trip,
//! and a `bgpd::bfd::Session` fed the decoded packets (signed with the session's key when the
//! input asks, so that the session's checks behind authentication are reached), timers, admin
//! down and new intervals, at increasing times.
//!
//! Byte 0 picks the session's authentication (none, or one of the five types with a fixed key);
//! then records of `op, delay, ...`: op 0 a packet (`len` then `len` bytes), 1 a signed packet
//! (`len`, bytes, then the sequence number byte), 2 Timer at the deadline, 3 AdminDown, 4 new
//! intervals, 5 Start.
#![no_main]

use std::time::{Duration, Instant};

use bgpd::bfd::packet::{check_auth, sign};
use bgpd::bfd::{decode, encode, AuthKey, AuthType, Input, Intervals, Session, SessionConfig};
use libfuzzer_sys::fuzz_target;

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fn roundtrip(bytes: &[u8]) -> Option<bgpd::bfd::ControlPacket> {
    let p = decode(bytes).ok()?;
    let again = decode(&encode(&p));
    assert_eq!(again.as_ref(), Ok(&p), "encode/decode round trip");
    Some(p)
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let Some(first) = b.u8() else {
        return;
    };
    let key = AuthType::from_code(first % 6)
        .map(|t| AuthKey::new(t, first >> 4, b"fuzz-secret").expect("valid key"));
    let mut cfg = SessionConfig::new(0x0102_0304);
    cfg.auth = key.clone();
    cfg.jitter_seed = u64::from(first);
    let mut s = Session::new(cfg);
    let mut now = Instant::now();
    let mut seq = 0u32;
    s.process(now, Input::Start);
    let mut steps = 0;
    while let Some(op) = b.u8() {
        steps += 1;
        if steps > 100 {
            break;
        }
        now += Duration::from_millis(u64::from(b.u8().unwrap_or(0)) * 10);
        let input = match op % 6 {
            0 => {
                let len = usize::from(b.u8().unwrap_or(0));
                match roundtrip(b.take(len)) {
                    Some(p) => Input::Received(p),
                    None => continue,
                }
            }
            1 => {
                let len = usize::from(b.u8().unwrap_or(0));
                let Some(mut p) = roundtrip(b.take(len)) else {
                    continue;
                };
                seq = seq.wrapping_add(u32::from(b.u8().unwrap_or(1)));
                if let Some(k) = &key {
                    sign(&mut p, k, seq);
                    assert_eq!(
                        check_auth(&p, k),
                        Ok(()),
                        "a packet just signed fails its check"
                    );
                    p = roundtrip(&encode(&p)).expect("a signed packet decodes");
                }
                Input::Received(p)
            }
            2 => {
                if let Some(at) = s.poll_timeout() {
                    now = now.max(at);
                }
                Input::Timer
            }
            3 => Input::AdminDown(b.u8().unwrap_or(0) & 1 == 1),
            4 => {
                let tx = u64::from(b.u8().unwrap_or(0));
                let rx = u64::from(b.u8().unwrap_or(0));
                let mult = b.u8().unwrap_or(0);
                Input::SetIntervals(Intervals {
                    desired_min_tx: Duration::from_millis(tx * 10),
                    required_min_rx: Duration::from_millis(rx * 10),
                    detect_mult: mult,
                })
            }
            _ => Input::Start,
        };
        let is_timer = input == Input::Timer;
        for o in s.process(now, input) {
            if let bgpd::bfd::Output::Send(p) = o {
                // What the session sends must decode as it is.
                let bytes = encode(&p);
                let back = decode(&bytes);
                assert_eq!(
                    back.as_ref(),
                    Ok(&p),
                    "the session sent an undecodable packet"
                );
            }
        }
        if is_timer {
            if let Some(at) = s.poll_timeout() {
                assert!(at > now, "a BFD timer at or before now survived Timer");
            }
        }
    }
});
