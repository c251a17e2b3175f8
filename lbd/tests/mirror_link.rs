//! The mirroring link (lbd::mirror::link) over loopback: a sender and a receiver with mutual
//! TLS, a full sync of records and deletes, a receiver restart, a stranger refused, and
//! offers that do not wait on a dead peer.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod trust_dir;

use lbd::mirror::channel::{AckPolicy, State, Store, Timers};
use lbd::mirror::link::{self, ReceiverLink, SenderHandle, SenderLink, SnapshotSource};
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
    let receiver = link::spawn_receiver(vec![listener], receiver_cfg(&dir), store.clone())
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
    let receiver2 = link::spawn_receiver(vec![listener], receiver_cfg(&dir), store2.clone())
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
    let receiver = link::spawn_receiver(vec![listener], receiver_cfg(&dir), store.clone())
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
