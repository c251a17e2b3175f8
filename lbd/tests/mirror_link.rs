//! The mirroring link (lbd::mirror::link) over loopback: a sender and a receiver with mutual
//! TLS, a full sync of records and deletes, a receiver restart, a stranger refused, offers
//! that do not wait on a dead peer; and the receiver's least trust (issue 15): a device of
//! the group that does not hold a traffic group cannot take its channel over, and idle
//! connections — from strangers or from a device of the group — cannot keep the holder out.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod trust_dir;

use lbd::mirror::channel::{AckPolicy, State, Store, Timers};
use lbd::mirror::link::{
    self, Admission, ReceiverLink, Refusal, SenderHandle, SenderLink, SnapshotSource,
};
use lbd::mirror::proto::{self, Message, Record, RecordKey, RecordKind};
use lbd::mirror::trust as mt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use trust_dir::{group_dir, stranger_client, TempDir, LOOPBACK};

const TG: &str = "tg1";

type Table = HashMap<RecordKey, Record>;

/// The receiver's store: records by key, and the keys a resync in progress has not carried.
#[derive(Default)]
struct MapStore(Table, HashSet<RecordKey>);

impl Store for MapStore {
    fn upsert(&mut self, r: Record) {
        self.1.remove(&r.key());
        self.0.insert(r.key(), r);
    }
    fn delete(&mut self, key: &RecordKey) {
        self.0.remove(key);
    }
    fn resync_begin(&mut self, tg: &str) {
        self.1 = self
            .0
            .iter()
            .filter(|(_, r)| r.traffic_group == tg)
            .map(|(k, _)| k.clone())
            .collect();
    }
    fn resync_end(&mut self, _tg: &str) {
        for k in std::mem::take(&mut self.1) {
            self.0.remove(&k);
        }
    }
}

/// The active device's tables: updated, then offered, like the data path does.
#[derive(Default)]
struct Source(Mutex<Table>);

impl SnapshotSource for Source {
    fn snapshot(&self, tg: &str) -> Vec<Record> {
        let t = self.0.lock().unwrap();
        t.values()
            .filter(|r| r.traffic_group == tg)
            .cloned()
            .collect()
    }
}

impl Source {
    fn put(&self, h: &SenderHandle, r: Record) {
        self.0.lock().unwrap().insert(r.key(), r.clone());
        h.offer(r).unwrap();
    }
    fn delete(&self, h: &SenderHandle, key: RecordKey) {
        self.0.lock().unwrap().remove(&key);
        h.offer_delete(key);
    }
}

fn persist(i: usize) -> Record {
    Record {
        update_id: 0,
        traffic_group: TG.to_string(),
        kind: RecordKind::Persistence {
            profile: "sticky".into(),
            scope: "vs1".into(),
            key: format!("10.0.{}.{}", i / 256, i % 256),
            pool: "web".into(),
            member: SocketAddr::new(LOOPBACK, 8000 + (i % 4) as u16),
            virtual_server: "vs1".into(),
            expiry_ms: 4_000_000_000_000 + i as u64,
        },
    }
}

/// The receiver's admission in these tests: mirror addresses by device and each traffic
/// group's holder, both changeable; refusals recorded.
#[derive(Default)]
struct Rules {
    sources: Mutex<HashMap<IpAddr, String>>,
    holders: Mutex<HashMap<String, String>>,
    refused: Mutex<Vec<Refusal>>,
}

impl Rules {
    /// Device `a` on 127.0.0.1, holding the test's traffic group.
    fn a_holds() -> Arc<Rules> {
        Rules::new(&[("a", LOOPBACK)], "a")
    }

    fn new(devices: &[(&str, IpAddr)], holder: &str) -> Arc<Rules> {
        let r = Rules::default();
        for (d, ip) in devices {
            r.sources.lock().unwrap().insert(*ip, d.to_string());
        }
        r.holders
            .lock()
            .unwrap()
            .insert(TG.to_string(), holder.to_string());
        Arc::new(r)
    }

    fn count(&self, why: Refusal) -> usize {
        self.refused
            .lock()
            .unwrap()
            .iter()
            .filter(|r| **r == why)
            .count()
    }
}

impl Admission for Rules {
    fn source_allowed(&self, ip: IpAddr) -> bool {
        self.sources.lock().unwrap().contains_key(&ip)
    }
    fn sender_allowed(&self, device: &str, ip: IpAddr, tg: &str) -> Result<(), (Refusal, String)> {
        if self.sources.lock().unwrap().get(&ip).map(String::as_str) != Some(device) {
            return Err((Refusal::Trust, format!("{device} from {ip}")));
        }
        match self.holders.lock().unwrap().get(tg) {
            Some(h) if h == device => Ok(()),
            h => Err((Refusal::NotHolder, format!("held by {h:?}"))),
        }
    }
    fn refused(&self, why: Refusal) {
        self.refused.lock().unwrap().push(why);
    }
}

fn lo(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn timers() -> Timers {
    Timers {
        heartbeat_ms: 100,
        dead_ms: 1000,
    }
}

fn sender_cfg(dir: &TempDir, primary: SocketAddr, secondary: Option<SocketAddr>) -> SenderLink {
    SenderLink {
        device: "a".into(),
        group: "g".into(),
        peer_device: "b".into(),
        traffic_group: TG.into(),
        primary,
        secondary,
        local_primary: None,
        local_secondary: None,
        ca: dir.path().join("ca.crt"),
        cert: dir.crt("a"),
        key: dir.key("a"),
        epoch: 7,
        capacity: 4096,
        timers: timers(),
        io_timeout: Duration::from_secs(2),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
    }
}

fn receiver_cfg(dir: &TempDir) -> ReceiverLink {
    ReceiverLink {
        device: "b".into(),
        group: "g".into(),
        admitted: mt::Admitted::devices(&["a".into(), "b".into()]),
        traffic_groups: vec![TG.into()],
        ca: dir.path().join("ca.crt"),
        cert: dir.crt("b"),
        key: dir.key("b"),
        timers: timers(),
        acks: AckPolicy::default(),
        io_timeout: Duration::from_secs(2),
    }
}

/// Wait (up to 10 s) until the store equals the source's table and the sender is in sync
/// with everything acknowledged.
async fn wait_synced(h: &SenderHandle, source: &Source, store: &Mutex<MapStore>) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let st = h.status();
        let same = {
            let want = source.0.lock().unwrap();
            let got = store.lock().unwrap();
            got.0.len() == want.len()
                && want.iter().all(|(k, r)| {
                    got.0
                        .get(k)
                        .is_some_and(|g| g.kind == r.kind && g.traffic_group == r.traffic_group)
                })
        };
        if same && st.state == State::InSync && st.last_acked == st.last_sent && st.unacked == 0 {
            return;
        }
        assert!(
            Instant::now() < until,
            "not in sync: {st:?}, store {} records, source {}",
            store.lock().unwrap().0.len(),
            source.0.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_and_receiver_sync_resync_and_refuse_strangers() {
    let dir = group_dir("g", &["a", "b"]);
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = Arc::new(Mutex::new(MapStore::default()));
    let receiver = link::spawn_receiver(
        vec![listener],
        receiver_cfg(&dir),
        store.clone(),
        Rules::a_holds(),
    )
    .unwrap()
    .1;

    // The primary address is dead: the sender goes on to the secondary.
    let dead = {
        let l = std::net::TcpListener::bind((LOOPBACK, 0)).unwrap();
        l.local_addr().unwrap()
    };
    let source = Arc::new(Source::default());
    let (h, sender) =
        link::spawn_sender(sender_cfg(&dir, dead, Some(addr)), source.clone()).unwrap();

    for i in 0..1000 {
        source.put(&h, persist(i));
    }
    for i in 0..100 {
        source.delete(&h, persist(i * 10).key());
    }
    wait_synced(&h, &source, &store).await;
    assert_eq!(store.lock().unwrap().0.len(), 900);
    let st = h.status();
    assert_eq!(st.state, State::InSync);
    assert_eq!(st.last_acked, st.last_sent);
    assert_eq!(st.peer.as_deref(), Some("b"));

    // The receiver dies; updates keep coming; a new receiver (empty store) on the same port.
    receiver.abort();
    let _ = receiver.await;
    for i in 1000..1050 {
        source.put(&h, persist(i));
    }
    source.delete(&h, persist(1).key());
    let listener = TcpListener::bind(addr).await.unwrap();
    let store2 = Arc::new(Mutex::new(MapStore::default()));
    let receiver2 = link::spawn_receiver(
        vec![listener],
        receiver_cfg(&dir),
        store2.clone(),
        Rules::a_holds(),
    )
    .unwrap()
    .1;
    wait_synced(&h, &source, &store2).await;
    assert_eq!(store2.lock().unwrap().0.len(), 949);

    // A stranger: a certificate of another CA naming device "a". Refused in the handshake or
    // right after it; nothing it sends reaches the store.
    let other = group_dir("g", &["a"]);
    let stranger = stranger_client(&dir.path().join("ca.crt"), &other.crt("a"), &other.key("a"));
    let before = store2.lock().unwrap().0.len();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = mt::device_server_name("g", "b").unwrap();
    match TlsConnector::from(stranger).connect(name, tcp).await {
        Err(_) => {}
        Ok(mut tls) => {
            let mut out = Vec::new();
            let hello = Message::Hello {
                device: "a".into(),
                traffic_group: TG.into(),
                epoch: 99,
                resume_from: None,
            };
            proto::encode(&hello, &mut out).unwrap();
            proto::encode(&Message::ResyncBegin { records: 0 }, &mut out).unwrap();
            proto::encode(&Message::ResyncEnd { last_id: 1 }, &mut out).unwrap();
            let _ = tls.write_all(&out).await;
            let mut buf = [0u8; 64];
            let r = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
                .await
                .expect("the receiver answers a stranger by closing");
            assert!(matches!(r, Err(_) | Ok(0)), "stranger got an answer: {r:?}");
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(store2.lock().unwrap().0.len(), before);
    // The genuine sender is still in sync.
    wait_synced(&h, &source, &store2).await;

    sender.abort();
    receiver2.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_do_not_wait_on_a_dead_peer() {
    let dir = group_dir("g", &["a", "b"]);
    let dead = {
        let l = std::net::TcpListener::bind((LOOPBACK, 0)).unwrap();
        l.local_addr().unwrap()
    };
    let mut cfg = sender_cfg(&dir, dead, None);
    cfg.capacity = 1024;
    let source = Arc::new(Source::default());
    let (h, sender) = link::spawn_sender(cfg, source).unwrap();
    // Every offer is taken at once, none waits for the peer: 10,000 offers, 10,000 update ids
    // in order, while nothing was sent or acknowledged; the queue stays within its capacity
    // (it overflowed into a resync instead of growing or blocking). Counted, not timed.
    let ids: Vec<u64> = (0..10_000).map(|i| h.offer(persist(i)).unwrap()).collect();
    assert_eq!(ids, (1..=10_000).collect::<Vec<u64>>());
    let st = h.status();
    assert!(
        matches!(st.state, State::Lagging | State::Connecting),
        "{st:?}"
    );
    assert_eq!(st.last_acked, 0);
    assert_eq!(st.last_sent, 0, "{st:?}");
    assert!(st.unacked <= 1024, "{st:?}");
    sender.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_for_the_group_replaces_the_old_one() {
    let dir = group_dir("g", &["a", "b"]);
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = Arc::new(Mutex::new(MapStore::default()));
    let receiver = link::spawn_receiver(
        vec![listener],
        receiver_cfg(&dir),
        store.clone(),
        Rules::a_holds(),
    )
    .unwrap()
    .1;

    // A genuine device that says hello and then nothing more.
    let client =
        mt::client_config(&dir.path().join("ca.crt"), &dir.crt("a"), &dir.key("a")).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = mt::device_server_name("g", "b").unwrap();
    let mut old = TlsConnector::from(client).connect(name, tcp).await.unwrap();
    let mut out = Vec::new();
    let hello = Message::Hello {
        device: "a".into(),
        traffic_group: TG.into(),
        epoch: 1,
        resume_from: None,
    };
    proto::encode(&hello, &mut out).unwrap();
    old.write_all(&out).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = old.read(&mut buf).await.unwrap();
    assert!(matches!(
        proto::decode(&buf[..n]),
        Ok(Some((Message::Hello { .. }, _)))
    ));

    // The link's sender takes the channel over; the old connection is closed.
    let source = Arc::new(Source::default());
    let (h, sender) = link::spawn_sender(sender_cfg(&dir, addr, None), source.clone()).unwrap();
    for i in 0..10 {
        source.put(&h, persist(i));
    }
    wait_synced(&h, &source, &store).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match old.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // heartbeats sent before the takeover
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the replaced connection stayed open");
    sender.abort();
    receiver.abort();
}

/// Receiver `b` on 127.0.0.1 of a group of a (127.0.0.2, holding the traffic group), b and c
/// (127.0.0.3): the trust files, its address, its store, its rules and its task.
async fn receiver_for_a_and_c() -> (
    TempDir,
    SocketAddr,
    Arc<Mutex<MapStore>>,
    Arc<Rules>,
    tokio::task::JoinHandle<()>,
) {
    let dir = group_dir("g", &["a", "b", "c"]);
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = Arc::new(Mutex::new(MapStore::default()));
    let rules = Rules::new(&[("a", lo(2)), ("c", lo(3))], "a");
    let mut rcfg = receiver_cfg(&dir);
    rcfg.admitted = mt::Admitted::devices(&["a".into(), "c".into()]);
    let receiver = link::spawn_receiver(vec![listener], rcfg, store.clone(), rules.clone())
        .unwrap()
        .1;
    (dir, addr, store, rules, receiver)
}

/// A device of the group that does not hold the traffic group (its certificate is genuine)
/// opens the channel with a resync of records of its own: refused once the holder grace has
/// passed, the store keeps the holder's records and the holder's channel stays in sync.
/// When placement says the other device holds it, the same sender gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_holder_may_open_a_traffic_groups_channel() {
    let (dir, addr, store, rules, receiver) = receiver_for_a_and_c().await;

    // The holder, a, from its mirror address.
    let mut acfg = sender_cfg(&dir, addr, None);
    acfg.local_primary = Some(lo(2));
    let a_source = Arc::new(Source::default());
    let (a, a_task) = link::spawn_sender(acfg, a_source.clone()).unwrap();
    for i in 0..500 {
        a_source.put(&a, persist(i));
    }
    wait_synced(&a, &a_source, &store).await;

    // c: a genuine device of the group, from its own address, with 300 records of its own.
    let mut ccfg = sender_cfg(&dir, addr, None);
    ccfg.device = "c".into();
    ccfg.cert = dir.crt("c");
    ccfg.key = dir.key("c");
    ccfg.epoch = 1_000;
    ccfg.local_primary = Some(lo(3));
    let c_source = Arc::new(Source::default());
    let (c, c_task) = link::spawn_sender(ccfg, c_source.clone()).unwrap();
    for i in 10_000..10_300 {
        c_source.put(&c, persist(i));
    }
    // Longer than the holder grace and a few reconnects.
    let until = Instant::now() + link::HOLDER_GRACE + Duration::from_secs(3);
    while Instant::now() < until {
        assert_ne!(c.status().state, State::InSync, "c's channel got in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rules.count(Refusal::NotHolder) >= 1, "{:?}", rules.refused);
    {
        let got = store.lock().unwrap();
        assert_eq!(got.0.len(), 500, "the store changed");
        assert!(got
            .0
            .keys()
            .all(|k| a_source.0.lock().unwrap().contains_key(k)));
    }
    let st = a.status();
    assert_eq!(
        st.state,
        State::InSync,
        "the holder's channel was displaced: {st:?}"
    );
    a_source.put(&a, persist(600));
    wait_synced(&a, &a_source, &store).await;

    // Placement moves the traffic group to c: its channel gets in and replaces a's state.
    rules
        .holders
        .lock()
        .unwrap()
        .insert(TG.to_string(), "c".into());
    a_task.abort();
    wait_synced(&c, &c_source, &store).await;
    assert_eq!(store.lock().unwrap().0.len(), 300);
    c_task.abort();
    receiver.abort();
}

/// Idle TCP connections, renewed as fast as they are closed, from an address outside the
/// group and from a device of the group, do not keep the holder's channel out: strangers are
/// closed before any handshake, a device of the group gets only its own few handshake slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_keep_the_holder_out() {
    let (dir, addr, store, rules, receiver) = receiver_for_a_and_c().await;

    // 100 idle connections each from 127.0.0.3 (c's address) and 127.0.0.9 (nobody's),
    // reopened when closed, for at most 15 s.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut idlers = Vec::new();
    for from in [lo(3), lo(9)] {
        for _ in 0..100 {
            let stop = stop.clone();
            idlers.push(tokio::spawn(async move {
                let until = Instant::now() + Duration::from_secs(15);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
                    let sock = tokio::net::TcpSocket::new_v4().unwrap();
                    sock.bind(SocketAddr::new(from, 0)).unwrap();
                    if let Ok(mut tcp) = sock.connect(addr).await {
                        let mut b = [0u8; 16];
                        // Held until the receiver closes it.
                        let _ =
                            tokio::time::timeout(Duration::from_secs(15), tcp.read(&mut b)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut acfg = sender_cfg(&dir, addr, None);
    acfg.local_primary = Some(lo(2));
    let source = Arc::new(Source::default());
    let (a, a_task) = link::spawn_sender(acfg, source.clone()).unwrap();
    for i in 0..200 {
        source.put(&a, persist(i));
    }
    wait_synced(&a, &source, &store).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    println!(
        "refused: source {}, busy {}, trust {}",
        rules.count(Refusal::Source),
        rules.count(Refusal::Busy),
        rules.count(Refusal::Trust)
    );
    assert!(
        rules.count(Refusal::Source) >= 100,
        "{:?}",
        rules.count(Refusal::Source)
    );
    assert!(
        rules.count(Refusal::Busy) >= 90,
        "{:?}",
        rules.count(Refusal::Busy)
    );
    for t in idlers {
        t.abort();
    }
    a_task.abort();
    receiver.abort();
}
