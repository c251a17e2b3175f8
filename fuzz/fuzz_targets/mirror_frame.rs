//! lbd's mirror protocol: the frame decoder (`lbd::mirror::proto::decode`) over a byte stream,
//! the byte-exact round trip of every frame it accepts, and the sans-IO channel ends
//! (`lbd::mirror::channel`): each decoded message goes to a `Receiver` (as from a sender) and
//! to a `Sender` (as from a receiver), with the two also joined to each other through the codec,
//! at increasing simulated times.
//!
//! Byte 0: bit 0 lets the sender offer the decoded records as updates, bits 1–7 the
//! milliseconds between messages. The rest is the stream.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use lbd::mirror::channel::{AckPolicy, Receiver, Sender, Store, Timers};
use lbd::mirror::proto::{decode, encode, Message, Record, RecordKey};
use libfuzzer_sys::fuzz_target;

const TG: &str = "tg-2";

#[derive(Default)]
struct MapStore {
    map: BTreeMap<(String, RecordKey), Record>,
    stale: BTreeSet<(String, RecordKey)>,
}

impl Store for MapStore {
    fn upsert(&mut self, r: Record) {
        let k = (r.traffic_group.clone(), r.key());
        self.stale.remove(&k);
        self.map.insert(k, r);
    }
    fn delete(&mut self, key: &RecordKey) {
        self.map.retain(|(_, k), _| k != key);
    }
    fn resync_begin(&mut self, tg: &str) {
        self.stale = self.map.keys().filter(|(g, _)| g == tg).cloned().collect();
    }
    fn resync_end(&mut self, tg: &str) {
        let stale = std::mem::take(&mut self.stale);
        self.map
            .retain(|(g, k), _| g != tg || !stale.contains(&(g.clone(), k.clone())));
    }
}

/// Through the codec, as on the wire: what a channel end sends must decode to itself.
fn wire(m: &Message) -> Message {
    let mut buf = Vec::new();
    encode(m, &mut buf).unwrap_or_else(|e| panic!("a channel end sent unencodable {m:?}: {e}"));
    match decode(&buf) {
        Ok(Some((back, n))) if n == buf.len() => back,
        other => panic!("{m:?} encodes to {buf:02x?}, which decodes to {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, stream)) = data.split_first() else {
        return;
    };
    let step = u64::from(flags >> 1) * 10;
    let mut now = 1_000u64;
    let timers = Timers::default();
    let mut rx = Receiver::new("lb-b", TG, timers, AckPolicy::default());
    let mut tx = Sender::new("lb-a", TG, 7, 16, timers);
    let mut store = MapStore::default();
    rx.connected(now);
    tx.connected(now);
    let mut at = 0;
    let mut frames = 0;
    while at < stream.len() && frames < 200 {
        frames += 1;
        let (msg, n) = match decode(&stream[at..]) {
            Ok(Some(x)) => x,
            Ok(None) | Err(_) => break,
        };
        assert!(n > 0 && at + n <= stream.len(), "frame length {n}");
        let mut again = Vec::new();
        encode(&msg, &mut again).unwrap_or_else(|e| panic!("decoded {msg:?} does not encode: {e}"));
        assert_eq!(
            again,
            &stream[at..at + n],
            "decode then encode is not byte-exact"
        );
        at += n;
        now += step;

        if let Message::Record(r) = &msg {
            let _ = r.to_persist(1);
            if flags & 1 == 1 {
                let _ = tx.offer(now, r.clone());
            }
        }
        if rx.on_message(now, msg.clone(), &mut store).is_err() {
            rx.disconnected();
            rx.connected(now);
        }
        if tx.on_message(now, msg).is_err() {
            tx.disconnected();
            tx.connected(now);
        }
        if tx.wants_snapshot() {
            let snapshot: Vec<Record> = store.map.values().cloned().collect();
            let _ = tx.resync(now, snapshot);
        }
        if rx.on_timer(now).is_err() {
            rx.disconnected();
            rx.connected(now);
        }
        if tx.on_timer(now).is_err() {
            tx.disconnected();
            tx.connected(now);
        }
        // The two ends talk until both are quiet (bounded).
        for _ in 0..64 {
            let mut quiet = true;
            if let Some(m) = tx.poll_send() {
                quiet = false;
                if rx.on_message(now, wire(&m), &mut store).is_err() {
                    rx.disconnected();
                    rx.connected(now);
                }
            }
            if let Some(m) = rx.poll_send() {
                quiet = false;
                if tx.on_message(now, wire(&m)).is_err() {
                    tx.disconnected();
                    tx.connected(now);
                }
            }
            if quiet {
                break;
            }
        }
        let _ = tx.status(now);
        let _ = rx.status();
        let _ = (tx.next_deadline(), rx.next_deadline(), tx.state());
    }
});
