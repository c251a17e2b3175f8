//! Simulated-time tests of the channel: a sender and a receiver joined by a lossless in-memory
//! pipe that carries every message through the codec.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use super::*;
use crate::mirror::proto::{self, RecordKind};

const TG: &str = "tg-2";

#[derive(Default)]
struct MapStore {
    map: BTreeMap<(String, RecordKey), Record>,
    /// Resyncs begun.
    clears: usize,
    /// Keys held when the current resync began and not carried by it yet.
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
        self.clears += 1;
        self.stale = self.map.keys().filter(|(g, _)| g == tg).cloned().collect();
    }
    fn resync_end(&mut self, tg: &str) {
        let stale = std::mem::take(&mut self.stale);
        self.map
            .retain(|(g, k), _| g != tg || !stale.contains(&(g.clone(), k.clone())));
    }
}

impl MapStore {
    /// (key, member) of the group's records, ignoring update ids.
    fn group(&self, tg: &str) -> Vec<(RecordKey, String)> {
        self.map
            .iter()
            .filter(|((g, _), _)| g == tg)
            .map(|((_, k), r)| (k.clone(), member(r)))
            .collect()
    }
}

fn member(r: &Record) -> String {
    match &r.kind {
        RecordKind::Persistence { member, .. } => member.to_string(),
        RecordKind::UdpFlow { member, .. } => member.to_string(),
        RecordKind::TcpConn { member, .. } => member.to_string(),
    }
}

fn persist(tg: &str, key: u32, member: u16) -> Record {
    Record {
        update_id: 0,
        traffic_group: tg.into(),
        kind: RecordKind::Persistence {
            profile: "src".into(),
            scope: "*".into(),
            key: format!("10.0.{}.0/24", key),
            pool: "web".into(),
            member: SocketAddr::from(([10, 1, 1, 50], member)),
            virtual_server: "vs".into(),
            expiry_ms: 1_000_000,
        },
    }
}

fn through_codec(m: Message) -> Message {
    let mut b = Vec::new();
    proto::encode(&m, &mut b).unwrap();
    let (got, n) = proto::decode(&b).unwrap().unwrap();
    assert_eq!(n, b.len());
    got
}

/// One sender, one receiver, a store and a clock.
struct Pair {
    now: u64,
    s: Sender,
    r: Receiver,
    store: MapStore,
    /// The caller's table on the active device (what a snapshot copies).
    table: BTreeMap<RecordKey, Record>,
}

const TIMERS: Timers = Timers {
    heartbeat_ms: 100,
    dead_ms: 300,
};

impl Pair {
    fn new(capacity: usize, acks: AckPolicy) -> Self {
        Pair {
            now: 1_000,
            s: Sender::new("B", TG, 7, capacity, TIMERS),
            r: Receiver::new("C", TG, TIMERS, acks),
            store: MapStore::default(),
            table: BTreeMap::new(),
        }
    }

    fn connect(&mut self) {
        self.s.connected(self.now);
        self.r.connected(self.now);
        self.pump();
    }

    fn disconnect(&mut self) {
        self.s.disconnected();
        self.r.disconnected();
    }

    /// Delivers messages both ways until both sides are quiet, supplying a snapshot whenever
    /// the sender asks for one. Returns how many messages went sender → receiver.
    fn pump(&mut self) -> usize {
        let mut n = 0;
        loop {
            if self.s.wants_snapshot() {
                let snap = self.table.values().cloned().collect();
                self.s.resync(self.now, snap).unwrap();
            }
            let mut moved = false;
            while let Some(m) = self.s.poll_send() {
                self.r
                    .on_message(self.now, through_codec(m), &mut self.store)
                    .unwrap();
                n += 1;
                moved = true;
            }
            while let Some(m) = self.r.poll_send() {
                self.s.on_message(self.now, through_codec(m)).unwrap();
                moved = true;
            }
            if !moved && !self.s.wants_snapshot() {
                return n;
            }
        }
    }

    /// The data path: a record is created or refreshed.
    fn put(&mut self, r: Record) {
        self.table.insert(r.key(), r.clone());
        self.s.offer(self.now, r).unwrap();
    }

    fn del(&mut self, key: RecordKey) {
        self.table.remove(&key);
        self.s.offer_delete(self.now, key);
    }

    fn tick(&mut self, ms: u64) {
        self.now += ms;
        self.s.on_timer(self.now).unwrap();
        self.r.on_timer(self.now).unwrap();
    }

    fn table_view(&self) -> Vec<(RecordKey, String)> {
        self.table
            .iter()
            .map(|(k, r)| (k.clone(), member(r)))
            .collect()
    }
}

#[test]
fn handshake_then_empty_resync_is_in_sync() {
    let mut p = Pair::new(16, AckPolicy::default());
    assert_eq!(p.s.state(), State::Connecting);
    p.s.connected(p.now);
    p.r.connected(p.now);
    // Hello out; no data before the peer answers.
    assert!(matches!(p.s.poll_send(), Some(Message::Hello { .. })));
    assert_eq!(p.s.poll_send(), None);
    p.r.on_message(
        p.now,
        Message::Hello {
            device: "B".into(),
            traffic_group: TG.into(),
            epoch: 7,
            resume_from: None,
        },
        &mut p.store,
    )
    .unwrap();
    let reply = p.r.poll_send().unwrap();
    assert_eq!(
        reply,
        Message::Hello {
            device: "C".into(),
            traffic_group: TG.into(),
            epoch: 7,
            resume_from: None,
        }
    );
    p.s.on_message(p.now, reply).unwrap();
    assert_eq!(p.s.state(), State::Resyncing);
    assert!(p.s.wants_snapshot());
    p.pump();
    assert_eq!(p.s.state(), State::InSync);
    assert!(p.r.status().synced);
    assert_eq!(p.s.status(p.now).peer.as_deref(), Some("C"));
}

#[test]
fn steady_flow_with_acks_is_in_sync_with_zero_lag() {
    let mut p = Pair::new(
        64,
        AckPolicy {
            every: 8,
            after_ms: 20,
        },
    );
    p.connect();
    for i in 0..100u32 {
        p.put(persist(TG, i % 30, 8000 + i as u16));
        if i % 10 == 9 {
            p.del(persist(TG, i % 30, 0).key());
        }
        p.pump();
        p.tick(5);
        p.pump();
        assert_eq!(p.s.state(), State::InSync);
        assert!(p.s.status(p.now).lag_ms <= 20, "ack delay bounds the lag");
    }
    p.tick(20);
    p.pump();
    let st = p.s.status(p.now);
    assert_eq!(st.state, State::InSync);
    assert_eq!(st.lag_ms, 0);
    assert_eq!(st.queued, 0);
    assert_eq!(st.unacked, 0);
    assert_eq!(st.last_sent, 110, "100 records and 10 deletes");
    assert_eq!(st.last_acked, st.last_sent);
    assert_eq!(p.r.status().last_applied, 110);
    assert_eq!(p.store.group(TG), p.table_view());
}

#[test]
fn lag_is_the_age_of_the_oldest_unacked_update() {
    let mut p = Pair::new(64, AckPolicy::default());
    p.connect();
    p.put(persist(TG, 1, 1));
    p.now += 40;
    p.put(persist(TG, 2, 2));
    let st = p.s.status(p.now);
    assert_eq!((st.lag_ms, st.queued, st.unacked), (40, 2, 2));
    p.pump();
    let st = p.s.status(p.now);
    assert_eq!((st.lag_ms, st.queued, st.unacked), (40, 0, 2));
    p.tick(50); // the receiver's delayed ack
    p.pump();
    assert_eq!(p.s.status(p.now).lag_ms, 0);
}

#[test]
fn queue_overflow_lags_then_resyncs_to_in_sync() {
    let mut p = Pair::new(
        8,
        AckPolicy {
            every: 1,
            after_ms: 10,
        },
    );
    p.connect();
    p.put(persist(TG, 100, 1));
    p.pump();
    // The peer is slow: nothing is delivered while 20 updates are offered.
    for i in 0..20 {
        p.put(persist(TG, i, 2));
        p.now += 1;
    }
    assert_eq!(p.s.state(), State::Lagging);
    assert!(p.s.wants_snapshot());
    assert_eq!(p.s.status(p.now).lag_ms, 20);
    assert_eq!(p.s.status(p.now).unacked, 0, "the queue was dropped");
    // Offers keep succeeding without queueing while lagging.
    p.put(persist(TG, 50, 3));
    assert_eq!(p.s.status(p.now).unacked, 0);
    let before = p.store.clears;
    p.pump();
    assert_eq!(p.store.clears, before + 1, "a full resync happened");
    assert_eq!(p.s.state(), State::InSync);
    assert_eq!(p.s.status(p.now).lag_ms, 0);
    assert_eq!(p.store.group(TG), p.table_view());
    // And incremental updates carry on after it.
    p.put(persist(TG, 51, 4));
    p.pump();
    assert_eq!(p.store.group(TG), p.table_view());
    assert_eq!(p.s.status(p.now).last_acked, p.r.status().last_applied);
}

#[test]
fn overflow_while_disconnected_resyncs_on_reconnect() {
    let mut p = Pair::new(4, AckPolicy::default());
    p.connect();
    p.disconnect();
    for i in 0..10 {
        p.put(persist(TG, i, 1));
    }
    assert_eq!(p.s.state(), State::Connecting);
    let before = p.store.clears;
    p.connect();
    assert_eq!(p.store.clears, before + 1);
    assert_eq!(p.store.group(TG), p.table_view());
    // The receiver acks the end of a resync at once.
    assert_eq!(p.s.state(), State::InSync);
    assert_eq!(p.s.status(p.now).lag_ms, 0);
}

#[test]
fn reconnect_resumes_without_resync() {
    let mut p = Pair::new(
        64,
        AckPolicy {
            every: 100,
            after_ms: 50,
        },
    );
    p.put(persist(TG, 1, 1));
    p.connect();
    p.tick(50);
    p.pump();
    assert_eq!(p.s.state(), State::InSync);
    assert_eq!(p.store.clears, 1);
    // Five updates: the first three reach the receiver (not acked), then the link drops.
    for i in 10..15 {
        p.put(persist(TG, i, 2));
    }
    for _ in 0..3 {
        let m = p.s.poll_send().unwrap();
        p.r.on_message(p.now, through_codec(m), &mut p.store)
            .unwrap();
    }
    let applied = p.r.status().last_applied;
    assert_eq!(p.s.status(p.now).last_acked, applied - 3);
    p.disconnect();
    p.put(persist(TG, 20, 3));
    assert_eq!(p.s.state(), State::Connecting);
    // Reconnect: the receiver offers to resume from what it applied.
    p.s.connected(p.now);
    p.r.connected(p.now);
    let hello = p.s.poll_send().unwrap();
    p.r.on_message(p.now, hello, &mut p.store).unwrap();
    let reply = p.r.poll_send().unwrap();
    assert!(matches!(
        reply,
        Message::Hello { resume_from: Some(id), .. } if id == applied
    ));
    p.s.on_message(p.now, reply).unwrap();
    assert!(!p.s.wants_snapshot());
    assert_eq!(p.s.state(), State::InSync);
    let sent = p.pump();
    assert_eq!(sent, 3, "only the two unapplied updates and the new one");
    assert_eq!(p.store.clears, 1, "no resync");
    assert_eq!(p.r.status().duplicates, 0);
    p.tick(50);
    p.pump();
    assert_eq!(p.store.group(TG), p.table_view());
    assert_eq!(p.s.status(p.now).lag_ms, 0);
}

#[test]
fn new_sender_epoch_forces_a_resync_that_replaces_the_group_state() {
    let mut p = Pair::new(64, AckPolicy::default());
    // Another group's record in the standby's store must survive.
    p.store.upsert(persist("tg-9", 1, 9));
    for i in 0..5 {
        p.put(persist(TG, i, 1));
    }
    p.connect();
    assert_eq!(p.store.group(TG).len(), 5);
    p.disconnect();
    // The active device restarts (new epoch) and now holds different records.
    p.s = Sender::new("B", TG, 8, 64, TIMERS);
    p.table.clear();
    p.table.insert(persist(TG, 3, 7).key(), persist(TG, 3, 7));
    p.table.insert(persist(TG, 99, 7).key(), persist(TG, 99, 7));
    p.connect();
    assert_eq!(
        p.store.group(TG),
        p.table_view(),
        "records not in the snapshot are gone"
    );
    assert_eq!(p.store.group("tg-9").len(), 1);
}

#[test]
fn duplicate_and_out_of_order_ids_are_ignored() {
    let mut p = Pair::new(64, AckPolicy::default());
    p.connect();
    let rec = |id: u64, member: u16| {
        let mut r = persist(TG, 1, member);
        r.update_id = id;
        Message::Record(r)
    };
    for (id, m) in [(5, 5), (5, 55), (3, 3), (6, 6), (6, 66)] {
        p.r.on_message(p.now, rec(id, m), &mut p.store).unwrap();
    }
    p.r.on_message(
        p.now,
        Message::Delete {
            id: 4,
            key: persist(TG, 1, 0).key(),
        },
        &mut p.store,
    )
    .unwrap();
    let st = p.r.status();
    assert_eq!((st.last_applied, st.duplicates), (6, 4));
    assert_eq!(
        p.store.group(TG),
        vec![(persist(TG, 1, 0).key(), "10.1.1.50:6".to_string())]
    );
}

#[test]
fn peer_silence_disconnects_both_sides() {
    let mut p = Pair::new(64, AckPolicy::default());
    p.connect();
    // Heartbeats both ways keep the channel up.
    for _ in 0..20 {
        p.tick(50);
        p.pump();
    }
    assert_eq!(p.s.state(), State::InSync);
    // The receiver hangs: the sender keeps sending heartbeats, hears nothing.
    let mut hb = 0;
    let err = loop {
        p.now += 50;
        match p.s.on_timer(p.now) {
            Ok(()) => {}
            Err(e) => break e,
        }
        while let Some(m) = p.s.poll_send() {
            assert!(matches!(m, Message::Heartbeat { .. }));
            hb += 1;
        }
    };
    assert_eq!(err, ChannelError::PeerSilent { silent_ms: 300 });
    assert_eq!(hb, 2);
    assert_eq!(p.s.state(), State::Connecting);
    assert_eq!(p.s.poll_send(), None);
    assert_eq!(
        p.r.on_timer(p.now),
        Err(ChannelError::PeerSilent { silent_ms: 300 })
    );
    assert!(p.r.poll_send().is_none());
}

#[test]
fn deadlines_cover_heartbeat_death_and_delayed_ack() {
    let mut p = Pair::new(
        64,
        AckPolicy {
            every: 10,
            after_ms: 30,
        },
    );
    assert_eq!(p.s.next_deadline(), None);
    p.connect();
    assert_eq!(p.s.next_deadline(), Some(p.now + 100));
    p.put(persist(TG, 1, 1));
    p.pump();
    assert_eq!(p.r.next_deadline(), Some(p.now + 30));
}

#[test]
fn receiver_refuses_an_unexpected_traffic_group() {
    let mut store = MapStore::default();
    let mut r = Receiver::new("C", "tg-1", TIMERS, AckPolicy::default());
    r.connected(0);
    let err = r
        .on_message(
            0,
            Message::Hello {
                device: "B".into(),
                traffic_group: "tg-2".into(),
                epoch: 1,
                resume_from: None,
            },
            &mut store,
        )
        .unwrap_err();
    assert_eq!(
        err,
        ChannelError::UnexpectedTrafficGroup {
            expected: "tg-1".into(),
            got: "tg-2".into()
        }
    );
    assert!(r.poll_send().is_none());
    // Still no hello: data is refused and nothing is applied.
    assert_eq!(
        r.on_message(0, Message::ResyncBegin { records: 0 }, &mut store),
        Err(ChannelError::BeforeHello("resync-begin"))
    );
    assert_eq!(store.clears, 0);
}

#[test]
fn receiver_refuses_records_of_another_group_and_bad_resyncs() {
    let mut p = Pair::new(64, AckPolicy::default());
    p.connect();
    assert!(matches!(
        p.r.on_message(p.now, Message::Record(persist("tg-3", 1, 1)), &mut p.store),
        Err(ChannelError::RecordOfOtherGroup { .. })
    ));
    p.r.on_message(p.now, Message::ResyncBegin { records: 2 }, &mut p.store)
        .unwrap();
    let mut r = persist(TG, 1, 1);
    r.update_id = 50;
    p.r.on_message(p.now, Message::Record(r), &mut p.store)
        .unwrap();
    assert_eq!(
        p.r.on_message(p.now, Message::ResyncEnd { last_id: 50 }, &mut p.store),
        Err(ChannelError::ResyncCount {
            announced: 2,
            carried: 1
        })
    );
}

#[test]
fn sender_refuses_bogus_acks_and_foreign_records() {
    let mut p = Pair::new(64, AckPolicy::default());
    assert_eq!(
        p.s.on_message(p.now, Message::Ack { last_applied: 1 }),
        Err(ChannelError::NotConnected)
    );
    p.connect();
    let sent = p.s.status(p.now).last_sent;
    assert_eq!(
        p.s.on_message(
            p.now,
            Message::Ack {
                last_applied: sent + 1
            }
        ),
        Err(ChannelError::AckBeyondSent {
            acked: sent + 1,
            sent
        })
    );
    assert!(matches!(
        p.s.offer(p.now, persist("tg-3", 1, 1)),
        Err(ChannelError::RecordOfOtherGroup { .. })
    ));
    assert_eq!(
        p.s.on_message(p.now, Message::ResyncEnd { last_id: 0 }),
        Err(ChannelError::Unexpected("resync-end"))
    );
}

#[test]
fn resync_in_flight_reports_resyncing_and_restarts_after_a_drop() {
    let mut p = Pair::new(64, AckPolicy::default());
    for i in 0..4 {
        p.put(persist(TG, i, 1));
    }
    p.s.connected(p.now);
    p.r.connected(p.now);
    let hello = p.s.poll_send().unwrap();
    p.r.on_message(p.now, hello, &mut p.store).unwrap();
    let reply = p.r.poll_send().unwrap();
    p.s.on_message(p.now, reply).unwrap();
    let snap = p.table.values().cloned().collect();
    p.s.resync(p.now, snap).unwrap();
    // ResyncBegin and two of four records arrive, then the link drops.
    for _ in 0..3 {
        let m = p.s.poll_send().unwrap();
        p.r.on_message(p.now, m, &mut p.store).unwrap();
    }
    assert_eq!(p.s.state(), State::Resyncing);
    assert!(p.r.status().resyncing);
    p.now += 25;
    assert_eq!(p.s.status(p.now).lag_ms, 25);
    p.disconnect();
    assert!(
        !p.r.status().synced,
        "a partial resync is not a complete state"
    );
    // The receiver cannot offer a resume; the sender resyncs again.
    p.connect();
    assert_eq!(p.store.clears, 2);
    assert_eq!(p.s.state(), State::InSync);
    assert_eq!(p.store.group(TG), p.table_view());
}

#[test]
fn a_resume_point_the_sender_cannot_serve_means_resync() {
    let mut p = Pair::new(64, AckPolicy::default());
    p.connect();
    p.s.disconnected();
    p.r.disconnected();
    p.s.connected(p.now);
    p.s.poll_send().unwrap();
    // The peer claims more than was ever sent in this epoch.
    p.s.on_message(
        p.now,
        Message::Hello {
            device: "C".into(),
            traffic_group: TG.into(),
            epoch: 7,
            resume_from: Some(1_000),
        },
    )
    .unwrap();
    assert!(p.s.wants_snapshot());
    assert_eq!(p.s.state(), State::Resyncing);
}

mod model {
    //! Random interleavings of the data path, partial delivery, timers and link drops: once
    //! the link is up and quiet, the standby holds exactly the active device's table.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Put(u32, u16),
        Del(u32),
        /// Deliver up to n messages sender → receiver.
        Forward(usize),
        /// Deliver up to n messages receiver → sender.
        Back(usize),
        Tick(u64),
        Drop,
        Connect,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u32..12, any::<u16>()).prop_map(|(k, m)| Op::Put(k, m)),
            1 => (0u32..12).prop_map(Op::Del),
            3 => (0usize..8).prop_map(Op::Forward),
            2 => (0usize..4).prop_map(Op::Back),
            1 => (1u64..80).prop_map(Op::Tick),
            1 => Just(Op::Drop),
            1 => Just(Op::Connect),
        ]
    }

    proptest! {
        #[test]
        fn standby_converges_to_the_active_table(ops in proptest::collection::vec(op(), 0..120)) {
            let mut p = Pair::new(6, AckPolicy { every: 3, after_ms: 20 });
            let mut s2r: VecDeque<Message> = VecDeque::new();
            let mut r2s: VecDeque<Message> = VecDeque::new();
            let mut up = false;
            for op in ops {
                match op {
                    Op::Put(k, m) => p.put(persist(TG, k, m)),
                    Op::Del(k) => p.del(persist(TG, k, 0).key()),
                    Op::Forward(n) if up => {
                        while let Some(m) = p.s.poll_send() {
                            s2r.push_back(m);
                        }
                        for m in s2r.drain(..n.min(s2r.len())) {
                            p.r.on_message(p.now, through_codec(m), &mut p.store).unwrap();
                        }
                    }
                    Op::Back(n) if up => {
                        while let Some(m) = p.r.poll_send() {
                            r2s.push_back(m);
                        }
                        for m in r2s.drain(..n.min(r2s.len())) {
                            p.s.on_message(p.now, through_codec(m)).unwrap();
                        }
                    }
                    Op::Tick(ms) => {
                        p.now += ms;
                        let a = p.s.on_timer(p.now);
                        let b = p.r.on_timer(p.now);
                        if a.is_err() || b.is_err() {
                            p.disconnect();
                            s2r.clear();
                            r2s.clear();
                            up = false;
                        }
                    }
                    Op::Drop => {
                        p.disconnect();
                        s2r.clear();
                        r2s.clear();
                        up = false;
                    }
                    Op::Connect if !up => {
                        p.s.connected(p.now);
                        p.r.connected(p.now);
                        up = true;
                    }
                    _ => {}
                }
                if up && p.s.wants_snapshot() {
                    let snap = p.table.values().cloned().collect();
                    p.s.resync(p.now, snap).unwrap();
                }
                let st = p.s.status(p.now);
                prop_assert!(st.unacked <= 6);
                prop_assert!(st.last_acked <= st.last_sent);
            }
            // Heal: deliver what is in flight, then run the link until it is quiet.
            if !up {
                p.s.connected(p.now);
                p.r.connected(p.now);
            }
            for m in s2r.drain(..) {
                p.r.on_message(p.now, through_codec(m), &mut p.store).unwrap();
            }
            for m in r2s.drain(..) {
                p.s.on_message(p.now, through_codec(m)).unwrap();
            }
            p.pump();
            p.now += 20;
            p.r.on_timer(p.now).unwrap();
            p.pump();
            let st = p.s.status(p.now);
            prop_assert_eq!(st.state, State::InSync);
            prop_assert_eq!(st.lag_ms, 0);
            prop_assert_eq!(st.unacked, 0);
            prop_assert_eq!(p.store.group(TG), p.table_view());
        }
    }
}

/// The receiver remembers whose complete state it holds, also once the connection is gone
/// (that device's death is what a takeover from it is about); a resync clears it until done.
#[test]
fn the_complete_state_names_its_sender_after_the_connection_ends() {
    let mut p = Pair::new(64, AckPolicy::default());
    assert_eq!(p.r.status().synced_from, None);
    for i in 0..3 {
        p.put(persist(TG, i, 1));
    }
    p.connect();
    assert!(p.r.status().synced);
    assert_eq!(p.r.status().synced_from.as_deref(), Some("B"));
    p.disconnect();
    let s = p.r.status();
    assert!(s.synced && s.peer.is_none());
    assert_eq!(s.synced_from.as_deref(), Some("B"));
    // A new epoch of the sender forces a resync; once done the state is B's again.
    p.s = Sender::new("B", TG, 8, 64, TIMERS);
    p.connect();
    assert_eq!(p.r.status().synced_from.as_deref(), Some("B"));
    assert!(p.r.status().synced);
}
