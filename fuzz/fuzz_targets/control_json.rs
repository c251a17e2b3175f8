//! The control sockets' JSON lines (`spanlb_control`): the shared framing's line reader
//! (`framing::LineReader` over the input, with a small line limit) and, for every line, the
//! server-side `framing::parse` as bgpd's and lbd's `Request`, and the client side as each
//! daemon's `Response` and bgpd's typed answers. A request or response that parses must
//! serialize to JSON that parses back to the same value.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use spanlb_control::framing::{parse, Incoming, LineReader};
use spanlb_control::{bgpd, lbd};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) {
    let text = serde_json::to_string(v).unwrap_or_else(|e| panic!("{v:?} does not serialize: {e}"));
    assert!(
        !text.contains('\n'),
        "a serialized line holds a newline: {text}"
    );
    match parse::<T>(text.as_bytes()) {
        Ok(back) => assert_eq!(&back, v, "round trip through {text}"),
        Err(e) => panic!("{v:?} serializes to {text}, which does not parse: {e}"),
    }
}

/// serde_json parses floats fast but not always to the nearest double (its `float_roundtrip`
/// feature is off), so a float may come back one ulp off: no spanlb payload carries floats
/// that matter, and such a response is only checked to serialize and parse again.
fn has_float(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => n.is_f64(),
        serde_json::Value::Array(a) => a.iter().any(has_float),
        serde_json::Value::Object(m) => m.values().any(has_float),
        _ => false,
    }
}

fn response_round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(r: &T) {
    let v = serde_json::to_value(r).expect("a response serializes");
    if has_float(&v) {
        let text = v.to_string();
        assert!(parse::<T>(text.as_bytes()).is_ok(), "{text} does not parse");
    } else {
        round_trip(r);
    }
}

fn line(text: &[u8]) {
    if let Ok(r) = parse::<bgpd::Request>(text) {
        round_trip(&r);
    }
    if let Ok(r) = parse::<lbd::Request>(text) {
        round_trip(&r);
    }
    if let Ok(r) = parse::<lbd::Response>(text) {
        response_round_trip(&r);
    }
    if let Ok(r) = parse::<bgpd::Response>(text) {
        response_round_trip(&r);
        let _ = r.clone().data::<bgpd::Announced>();
        let _ = r.clone().data::<bgpd::RouteList>();
        let _ = r.clone().data::<bgpd::Neighbors>();
        let _ = r.clone().data::<bgpd::AdjRibOut>();
        let _ = r.clone().data::<bgpd::BfdSessions>();
        let _ = r.clone().data::<bgpd::Reloaded>();
        let _ = r.clone().data::<bgpd::Withdrawn>();
        let _ = r.data::<bgpd::Withdrawing>();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&limit, input)) = data.split_first() else {
        return;
    };
    // Each line alone, whatever the limit.
    for l in input.split(|&b| b == b'\n') {
        line(l);
    }
    // The server's reader: lines of at most `max_line` bytes, then too long and closed.
    let max_line = usize::from(limit) * 16 + 1;
    runtime().block_on(async {
        let mut rd = LineReader::new(input, max_line, None);
        let mut seen = 0;
        loop {
            match rd.next().await {
                Incoming::Line(l) => {
                    assert!(l.len() <= max_line + 1, "a line of {} bytes", l.len());
                    seen += l.len();
                }
                Incoming::TooLong | Incoming::Closed => break,
                // No idle or partial-line time is set: a slice reader never waits.
                Incoming::Idle | Incoming::Partial | Incoming::Failed(_) => {
                    panic!("reading a slice failed")
                }
            }
            assert!(seen <= input.len());
        }
    });
});
