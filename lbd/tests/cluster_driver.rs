//! The cluster driver over loopback UDP: three devices A, B, C; traffic groups tg-1/2/3 with
//! HA orders [A,B,C], [B,C,A], [C,A,B]; heartbeat every 50 ms, dead after 300 ms, auto-failback
//! on tg-2 after 500 ms. Every wait is bounded (at most 10 s).

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lbd::cluster::driver::{
    spawn, spawn_on_own_thread, Actions, DriverConfig, DriverError, DriverHandle,
};
use lbd::cluster::heartbeat::{decode, encode, GroupKey};
use lbd::cluster::placement::{GroupSpec, GroupStatus, TgState, TrafficGroupSpec};
use lbd::cluster::{Claim, Heartbeat};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

const INTERVAL: Duration = Duration::from_millis(50);
const DEAD_AFTER: Duration = Duration::from_millis(300);
const FAILBACK: Duration = Duration::from_millis(500);
const WAIT: Duration = Duration::from_secs(10);
const DEVICES: [&str; 3] = ["A", "B", "C"];
const TGS: [(&str, [&str; 3]); 3] = [
    ("tg-1", ["A", "B", "C"]),
    ("tg-2", ["B", "C", "A"]),
    ("tg-3", ["C", "A", "B"]),
];

#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    at: Instant,
    dev: String,
    what: &'static str,
    tg: String,
}

type Log = Arc<Mutex<Vec<Event>>>;

/// Records every call, with the device it was made on.
struct Recorder {
    dev: String,
    log: Log,
}

impl Actions for Recorder {
    fn activate(&self, traffic_group: &str, _reason: &str) {
        self.push("activate", traffic_group);
    }
    fn release(&self, traffic_group: &str, _reason: &str) {
        self.push("release", traffic_group);
    }
}

impl Recorder {
    fn push(&self, what: &'static str, tg: &str) {
        self.log.lock().unwrap().push(Event {
            at: Instant::now(),
            dev: self.dev.clone(),
            what,
            tg: tg.to_string(),
        });
    }
}

fn key() -> Arc<GroupKey> {
    Arc::new(GroupKey::from_bytes(b"spanlb driver test group key 32b").unwrap())
}

fn spec(me: &str) -> GroupSpec {
    GroupSpec {
        me: me.to_string(),
        devices: DEVICES.iter().map(|d| d.to_string()).collect(),
        traffic_groups: TGS
            .iter()
            .map(|(name, order)| TrafficGroupSpec {
                name: name.to_string(),
                ha_order: order.iter().map(|d| d.to_string()).collect(),
                auto_failback: *name == "tg-2",
                failback_delay: FAILBACK,
                sync_wait: None,
                sync_all_groups: false,
                load_factor: 1,
            })
            .collect(),
        heartbeat_interval: INTERVAL,
        dead_after: DEAD_AFTER,
        capacity: BTreeMap::new(),
    }
}

/// A free loopback UDP port (bound, noted, released).
fn free_addr() -> SocketAddr {
    StdUdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Cluster {
    addrs: BTreeMap<String, SocketAddr>,
    /// Extra heartbeat addresses per device (a device's "secondary" address).
    extra: BTreeMap<String, Vec<SocketAddr>>,
    handles: BTreeMap<String, DriverHandle>,
    tasks: BTreeMap<String, JoinHandle<()>>,
    log: Log,
}

impl Cluster {
    /// Starts all three devices; `extra[dev]` are additional addresses the others send `dev`'s
    /// heartbeats to.
    async fn start(extra: BTreeMap<String, Vec<SocketAddr>>) -> Self {
        let mut c = Cluster::new(extra);
        for d in DEVICES {
            c.spawn(d).await;
        }
        c
    }

    /// No device started yet.
    fn new(extra: BTreeMap<String, Vec<SocketAddr>>) -> Self {
        let addrs = DEVICES
            .iter()
            .map(|d| (d.to_string(), free_addr()))
            .collect();
        Cluster {
            addrs,
            extra,
            handles: BTreeMap::new(),
            tasks: BTreeMap::new(),
            log: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Starts `me` on a runtime of its own, in a thread of its own; sending a duration on the
    /// returned channel blocks that thread (the whole process of `me`, as `kill -STOP` would)
    /// for that long. Dropping the channel stops `me`. With `own_thread` the driver itself
    /// runs on its heartbeat thread ([`spawn_on_own_thread`]), as in lbd, so only the runtime
    /// that started it stalls.
    fn spawn_stallable(&mut self, me: &str, own_thread: bool) -> std::sync::mpsc::Sender<Duration> {
        let cfg = self.config(me);
        let actions = Arc::new(Recorder {
            dev: me.to_string(),
            log: self.log.clone(),
        });
        let (stall_tx, stall_rx) = std::sync::mpsc::channel::<Duration>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (handle, task) = if own_thread {
                    spawn_on_own_thread(cfg, actions).await.unwrap()
                } else {
                    spawn(cfg, actions).await.unwrap()
                };
                ready_tx.send(handle).unwrap();
                loop {
                    match stall_rx.try_recv() {
                        Ok(d) => std::thread::sleep(d),
                        Err(std::sync::mpsc::TryRecvError::Empty) => {
                            tokio::time::sleep(Duration::from_millis(5)).await
                        }
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                    }
                }
                task.abort();
            });
        });
        let handle = ready_rx.recv_timeout(WAIT).unwrap();
        self.handles.insert(me.to_string(), handle);
        stall_tx
    }

    fn config(&self, me: &str) -> DriverConfig {
        let peers = DEVICES
            .iter()
            .filter(|d| **d != me)
            .map(|d| {
                let mut addrs = vec![self.addrs[*d]];
                addrs.extend(self.extra.get(*d).into_iter().flatten().copied());
                (d.to_string(), addrs)
            })
            .collect();
        DriverConfig {
            spec: spec(me),
            key: key(),
            max_age: Duration::from_secs(30),
            listen: self.addrs[me],
            peers,
            realtime_priority: 0,
        }
    }

    async fn spawn(&mut self, me: &str) {
        let actions = Arc::new(Recorder {
            dev: me.to_string(),
            log: self.log.clone(),
        });
        let (handle, task) = spawn(self.config(me), actions).await.unwrap();
        self.handles.insert(me.to_string(), handle);
        self.tasks.insert(me.to_string(), task);
    }

    /// Aborts `me`'s task and waits until it (and its socket) is gone.
    async fn kill(&mut self, me: &str) {
        let task = self.tasks.remove(me).unwrap();
        task.abort();
        let _ = tokio::time::timeout(WAIT, task).await.expect("task ends");
    }

    fn events(&self) -> Vec<Event> {
        self.log.lock().unwrap().clone()
    }

    fn events_since(&self, t: Instant) -> Vec<Event> {
        self.events().into_iter().filter(|e| e.at >= t).collect()
    }

    async fn statuses(&self, devs: &[&str]) -> Vec<GroupStatus> {
        let mut out = Vec::new();
        for d in devs {
            out.push(self.handles[*d].status().await);
        }
        out
    }

    /// Per recordings: the devices that hold `tg` now (activated and not since released).
    fn holders(&self, tg: &str, devs: &[&str]) -> Vec<String> {
        let mut holds: BTreeMap<String, bool> = BTreeMap::new();
        for e in self.events().iter().filter(|e| e.tg == tg) {
            holds.insert(e.dev.clone(), e.what == "activate");
        }
        holds
            .into_iter()
            .filter(|(d, h)| *h && devs.contains(&d.as_str()))
            .map(|(d, _)| d)
            .collect()
    }

    /// Each of `want` (tg, device) holds, per the recordings (among `devs`, exactly that one)
    /// and per every running device's status (agreed holder; active on it, standby elsewhere).
    async fn placed(&self, devs: &[&str], want: &[(&str, &str)]) -> bool {
        for (tg, dev) in want {
            if self.holders(tg, devs) != [dev.to_string()] {
                return false;
            }
        }
        for s in self.statuses(devs).await {
            if s.phase != "running" {
                return false;
            }
            for (tg, dev) in want {
                let Some(t) = s.traffic_groups.iter().find(|t| t.name == *tg) else {
                    return false;
                };
                let want_state = if s.me == *dev {
                    TgState::Active
                } else {
                    TgState::Standby
                };
                if t.active.as_deref() != Some(*dev) || t.state != want_state {
                    return false;
                }
            }
        }
        true
    }

    async fn wait_placed(&self, devs: &[&str], want: &[(&str, &str)]) {
        let deadline = Instant::now() + WAIT;
        while !self.placed(devs, want).await {
            assert!(
                Instant::now() < deadline,
                "placement {want:?} not reached: {:#?}\nevents: {:#?}",
                self.statuses(devs).await,
                self.events()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn shutdown(self) {
        for t in self.tasks.values() {
            t.abort();
        }
    }
}

const STEADY: [(&str, &str); 3] = [("tg-1", "A"), ("tg-2", "B"), ("tg-3", "C")];

/// Waits until `f` holds, at most `WAIT`.
async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What `dev`'s status says `of` reported as not in sync.
async fn unsynced_seen(c: &Cluster, dev: &str, of: &str) -> Vec<String> {
    let s = c.handles[dev].status().await;
    s.devices
        .into_iter()
        .find(|d| d.name == of)
        .map(|d| d.unsynced)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_unsynced_reaches_the_peers_and_sends_only_changes() {
    let c = Cluster::start(BTreeMap::new()).await;
    c.wait_placed(&DEVICES, &STEADY).await;
    let b = &c.handles["B"];
    b.set_unsynced(["tg-1".to_string(), "tg-3".to_string()].into())
        .await;
    assert_eq!(unsynced_seen(&c, "B", "B").await, ["tg-1", "tg-3"]);
    let deadline = Instant::now() + WAIT;
    while unsynced_seen(&c, "A", "B").await != ["tg-1", "tg-3"] {
        assert!(Instant::now() < deadline, "A never heard B's unsynced set");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The same set again (another order, another clone) changes nothing.
    let b2 = b.clone();
    b2.set_unsynced(["tg-3".to_string(), "tg-1".to_string()].into())
        .await;
    b.set_unsynced(Default::default()).await;
    let deadline = Instant::now() + WAIT;
    while !unsynced_seen(&c, "C", "B").await.is_empty() {
        assert!(Instant::now() < deadline, "C never heard B in sync");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Mirroring is off in this group: nothing moved.
    assert!(c.placed(&DEVICES, &STEADY).await);
    assert_eq!(c.events().len(), 3, "{:#?}", c.events());
    c.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_each_group_on_its_first_device() {
    let c = Cluster::start(BTreeMap::new()).await;
    c.wait_placed(&DEVICES, &STEADY).await;
    // It stays so: no further activations or releases.
    let n = c.events().len();
    tokio::time::sleep(DEAD_AFTER * 2).await;
    assert!(c.placed(&DEVICES, &STEADY).await);
    assert_eq!(c.events().len(), n, "{:#?}", c.events());
    assert_eq!(n, 3, "one activation per group: {:#?}", c.events());
    for (dev, h) in &c.handles {
        let k = h.counters();
        assert!(
            k.heartbeats_sent > 0 && k.heartbeats_received > 0,
            "{dev}: {k:?}"
        );
        assert_eq!(k.rejected_bad_tag + k.rejected_malformed, 0, "{dev}: {k:?}");
    }
    c.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_device_is_replaced_and_fails_back_after_restart() {
    let mut c = Cluster::start(BTreeMap::new()).await;
    c.wait_placed(&DEVICES, &STEADY).await;

    let old_epoch = c.handles["B"].status().await.epoch;

    // 2. B dies: C takes tg-2 within dead_after + 3 intervals; nobody else moves.
    let killed = Instant::now();
    c.kill("B").await;
    wait_for("C activates tg-2", || {
        c.events_since(killed)
            .iter()
            .any(|e| e.dev == "C" && e.what == "activate" && e.tg == "tg-2")
    })
    .await;
    let took = c
        .events_since(killed)
        .iter()
        .find(|e| e.dev == "C" && e.tg == "tg-2")
        .unwrap()
        .at
        - killed;
    assert!(took <= DEAD_AFTER + 3 * INTERVAL, "took {took:?}");
    c.wait_placed(&["A", "C"], &[("tg-1", "A"), ("tg-2", "C"), ("tg-3", "C")])
        .await;
    let after_death = c.events_since(killed);
    assert!(
        !after_death.iter().any(|e| e.what == "release"),
        "{after_death:#?}"
    );
    assert_eq!(after_death.len(), 1, "{after_death:#?}");
    let status_c = c.handles["C"].status().await;
    let b = status_c.devices.iter().find(|d| d.name == "B").unwrap();
    assert!(!b.alive);

    // 3. B comes back (a later epoch): after the failback delay tg-2 leaves C for B.
    let restarted = Instant::now();
    c.spawn("B").await;
    c.wait_placed(&DEVICES, &STEADY).await;
    let back = c.events_since(restarted);
    let release = back
        .iter()
        .find(|e| e.dev == "C" && e.what == "release" && e.tg == "tg-2")
        .expect("C releases tg-2");
    let activate = back
        .iter()
        .find(|e| e.dev == "B" && e.what == "activate" && e.tg == "tg-2")
        .expect("B activates tg-2");
    assert!(release.at - restarted >= FAILBACK, "{back:#?}");
    assert!(activate.at - restarted >= FAILBACK, "{back:#?}");
    assert_eq!(back.len(), 2, "only tg-2 moves: {back:#?}");
    let status_b = c.handles["B"].status().await;
    assert!(status_b.epoch > old_epoch, "{status_b:#?}");
    c.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_failover_moves_a_group() {
    let mut c = Cluster::start(BTreeMap::new()).await;
    c.wait_placed(&DEVICES, &STEADY).await;
    let a = c.handles["A"].clone();

    assert_eq!(
        a.failover("tg-9", Some("C")).await,
        Err(DriverError::UnknownTrafficGroup("tg-9".into()))
    );
    assert_eq!(
        a.failover("tg-1", Some("Z")).await,
        Err(DriverError::UnknownDevice("Z".into()))
    );

    let ordered = Instant::now();
    a.failover("tg-1", Some("C")).await.unwrap();
    c.wait_placed(&DEVICES, &[("tg-1", "C"), ("tg-2", "B"), ("tg-3", "C")])
        .await;
    let moved = c.events_since(ordered);
    assert!(moved
        .iter()
        .any(|e| e.dev == "A" && e.what == "release" && e.tg == "tg-1"));
    assert!(moved
        .iter()
        .any(|e| e.dev == "C" && e.what == "activate" && e.tg == "tg-1"));
    assert_eq!(moved.len(), 2, "{moved:#?}");
    // The order is cleared once C alone holds tg-1, and tg-1 stays there (no failback).
    tokio::time::sleep(DEAD_AFTER * 2).await;
    assert!(
        c.placed(&DEVICES, &[("tg-1", "C"), ("tg-2", "B"), ("tg-3", "C")])
            .await
    );
    for s in c.statuses(&DEVICES).await {
        assert!(s.orders.is_empty(), "{s:#?}");
    }

    // A stopped driver says so.
    c.kill("A").await;
    assert_eq!(a.failover("tg-1", None).await, Err(DriverError::Stopped));
    assert_eq!(a.status().await.phase, "stopped");
    c.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_replayed_heartbeats_change_nothing() {
    // A sniffer bound to a "secondary" address of B: A (and C) send B's heartbeats there too.
    let sniffer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sniffed = sniffer.local_addr().unwrap();
    let extra = BTreeMap::from([("B".to_string(), vec![sniffed])]);
    let c = Cluster::start(extra).await;
    c.wait_placed(&DEVICES, &STEADY).await;

    // Capture one real heartbeat of A.
    let mut buf = vec![0u8; 2048];
    let captured = tokio::time::timeout(WAIT, async {
        loop {
            let (n, from) = sniffer.recv_from(&mut buf).await.unwrap();
            if from == c.addrs["A"] {
                return buf[..n].to_vec();
            }
        }
    })
    .await
    .expect("a heartbeat of A");
    let before = c.handles["B"].counters();
    let events = c.events().len();
    let b = c.addrs["B"];
    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    // Forger: claims, as A with the greatest epoch, every traffic group.
    let wrong = GroupKey::from_bytes(b"not the group key, but 32 bytes!").unwrap();
    let forged = Heartbeat {
        device: "A".into(),
        epoch: u64::MAX,
        seq: 1,
        sent_ms: 0,
        eligible: true,
        active: ["tg-1", "tg-2", "tg-3"]
            .map(|t| Claim::new(t, u64::MAX))
            .to_vec(),
        orders: Vec::new(),
        unsynced: Vec::new(),
        usable_ms: 0,
        unavailable: Vec::new(),
        config: None,
    };
    // Replayer: A's captured heartbeat, once B has heard newer ones from A.
    tokio::time::sleep(INTERVAL * 3).await;
    for _ in 0..5 {
        attacker
            .send_to(&encode(&forged, &wrong).unwrap(), b)
            .await
            .unwrap();
        attacker.send_to(&captured, b).await.unwrap();
    }
    // An unknown device (right key) and garbage.
    let stranger = Heartbeat {
        device: "Z".into(),
        sent_ms: now_ms(),
        ..forged.clone()
    };
    attacker
        .send_to(&encode(&stranger, &key()).unwrap(), b)
        .await
        .unwrap();
    attacker.send_to(b"garbage", b).await.unwrap();

    let h = c.handles["B"].clone();
    let deadline = Instant::now() + WAIT;
    loop {
        let k = h.counters();
        if k.rejected_bad_tag >= before.rejected_bad_tag + 5
            && k.rejected_replayed >= before.rejected_replayed + 5
            && k.rejected_unknown_device > before.rejected_unknown_device
            && k.rejected_malformed > before.rejected_malformed
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counters {k:?}, before {before:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Nothing moved, and it stays so.
    tokio::time::sleep(DEAD_AFTER * 2).await;
    assert!(c.placed(&DEVICES, &STEADY).await);
    assert_eq!(c.events().len(), events, "{:#?}", c.events());
    let status = h.status().await;
    let a = status.devices.iter().find(|d| d.name == "A").unwrap();
    assert!(a.alive && a.active == ["tg-1"], "{a:?}");
    c.shutdown();
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The replay guard is in memory: a device that restarted accepts any `(epoch, seq)` from a
/// peer once. An authentic heartbeat of A sent a minute ago — captured, then replayed when B
/// has just restarted; here given the greatest epoch, so that the guard alone would take it —
/// claims every traffic group with a manual order. B refuses it by its age
/// (`heartbeat_max_age`, 30 s here) and nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_authentic_heartbeat_is_refused_by_its_age() {
    let c = Cluster::start(BTreeMap::new()).await;
    c.wait_placed(&DEVICES, &STEADY).await;
    let before = c.handles["B"].counters();
    let events = c.events().len();
    let old = Heartbeat {
        device: "A".into(),
        epoch: u64::MAX,
        seq: 1,
        sent_ms: now_ms() - 60_000,
        eligible: true,
        active: ["tg-1", "tg-2", "tg-3"]
            .map(|t| Claim::new(t, u64::MAX))
            .to_vec(),
        orders: vec![lbd::cluster::Order {
            id: now_ms() * 1000,
            traffic_group: "tg-2".into(),
            to: "A".into(),
        }],
        unsynced: Vec::new(),
        usable_ms: 0,
        unavailable: Vec::new(),
        config: None,
    };
    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for _ in 0..5 {
        attacker
            .send_to(&encode(&old, &key()).unwrap(), c.addrs["B"])
            .await
            .unwrap();
    }
    let h = c.handles["B"].clone();
    tokio::time::sleep(DEAD_AFTER * 2).await;
    assert_eq!(c.events().len(), events, "{:#?}", c.events());
    assert!(c.placed(&DEVICES, &STEADY).await);
    assert!(
        h.counters().rejected_stale >= before.rejected_stale + 5,
        "counters {:?}",
        h.counters()
    );
    // A's real heartbeats still count: its (epoch, seq) was not moved to u64::MAX.
    let a = h.status().await;
    let a = a.devices.iter().find(|d| d.name == "A").unwrap().clone();
    assert!(a.alive && a.active == ["tg-1"], "{a:?}");
    c.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_device_resumes_without_acting_on_stale_state() {
    // A sniffer bound to a "secondary" address of B records what A sends.
    let sniffer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let extra = BTreeMap::from([("B".to_string(), vec![sniffer.local_addr().unwrap()])]);
    let mut c = Cluster::new(extra);
    let a_addr = c.addrs["A"];
    let sniffed: Arc<Mutex<Vec<Heartbeat>>> = Arc::default();
    let sniff = {
        let sniffed = sniffed.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = sniffer.recv_from(&mut buf).await {
                if from == a_addr {
                    sniffed
                        .lock()
                        .unwrap()
                        .push(decode(&buf[..n], &key()).unwrap());
                }
            }
        })
    };
    let stall = c.spawn_stallable("A", false);
    c.spawn("B").await;
    c.spawn("C").await;
    c.wait_placed(&DEVICES, &STEADY).await;

    // A hangs for well over dead_after: B takes tg-1 meanwhile.
    let stalled = Instant::now();
    let stalled_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    stall.send(DEAD_AFTER * 3).unwrap();
    wait_for("B activates tg-1", || {
        c.events_since(stalled)
            .iter()
            .any(|e| e.dev == "B" && e.what == "activate" && e.tg == "tg-1")
    })
    .await;

    // On resume A gives tg-1 up, and never tells anyone it still holds it.
    let want = [("tg-1", "B"), ("tg-2", "B"), ("tg-3", "C")];
    c.wait_placed(&DEVICES, &want).await;
    let moved = c.events_since(stalled);
    assert!(moved
        .iter()
        .any(|e| e.dev == "A" && e.what == "release" && e.tg == "tg-1"));
    assert_eq!(moved.len(), 2, "{moved:#?}");
    tokio::time::sleep(INTERVAL * 4).await;
    let after: Vec<Heartbeat> = sniffed
        .lock()
        .unwrap()
        .iter()
        .filter(|hb| hb.sent_ms > stalled_ms + DEAD_AFTER.as_millis() as u64)
        .cloned()
        .collect();
    assert!(!after.is_empty(), "A sends again after resuming");
    assert!(
        after
            .iter()
            .all(|hb| !hb.active_names().any(|t| t == "tg-1")),
        "{after:#?}"
    );
    assert!(c.placed(&DEVICES, &want).await);
    drop(stall);
    sniff.abort();
    c.shutdown();
}

/// lbd runs its driver on a heartbeat thread of its own: when the runtime that started it is
/// blocked for three times `dead_after` (a long resync, a large `lbctl show`), A still sends
/// its heartbeats, so nobody takes its traffic group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_control_plane_does_not_delay_heartbeats_on_their_own_thread() {
    let mut c = Cluster::new(BTreeMap::new());
    let stall = c.spawn_stallable("A", true);
    c.spawn("B").await;
    c.spawn("C").await;
    c.wait_placed(&DEVICES, &STEADY).await;

    let stalled = Instant::now();
    stall.send(DEAD_AFTER * 3).unwrap();
    tokio::time::sleep(DEAD_AFTER * 4).await;
    let moved = c.events_since(stalled);
    assert!(moved.is_empty(), "a traffic group moved: {moved:#?}");
    c.wait_placed(&DEVICES, &STEADY).await;
    c.shutdown();
}

/// With `heartbeat_realtime_priority`, the driver's own thread runs `SCHED_RR` at that
/// priority (read back from /proc), as keepalived's `vrrp_rt_priority`. Needs root
/// (CAP_SYS_NICE): skipped with one line otherwise, but not under CI=true.
#[tokio::test]
async fn the_heartbeat_thread_runs_real_time_when_asked() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "real-time priority test needs root under CI"
        );
        eprintln!("skipping real-time priority test: not root (needs CAP_SYS_NICE)");
        return;
    }
    let c = Cluster::new(BTreeMap::new());
    let mut cfg = c.config("A");
    cfg.realtime_priority = 10;
    let actions = Arc::new(Recorder {
        dev: "A".into(),
        log: c.log.clone(),
    });
    let (_handle, task) = spawn_on_own_thread(cfg, actions).await.unwrap();
    // Fields 40 and 41 of /proc/self/task/TID/stat: rt_priority and policy (2 = SCHED_RR).
    let mut seen = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim() != "lbd-heartbeat" {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap();
        // After the ")" closing the name come the fields from 3 on.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        seen.push((fields[40 - 3].to_string(), fields[41 - 3].to_string()));
    }
    task.abort();
    let _ = task.await;
    assert_eq!(
        seen,
        vec![("10".to_string(), "2".to_string())],
        "(rt_priority, policy)"
    );
}

/// A device paused just under `dead_after` (its peers' heartbeats wait in its socket) must
/// read that backlog before it decides anything: it never takes a live peer's traffic group.
/// Pauses from `dead_after` - 2 intervals up to `dead_after` + 1 interval, repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_device_never_takes_a_live_peers_traffic_group() {
    let mut c = Cluster::new(BTreeMap::new());
    let stall = c.spawn_stallable("B", false);
    c.spawn("A").await;
    c.spawn("C").await;
    c.wait_placed(&DEVICES, &STEADY).await;
    let start = Instant::now();
    let pauses = [
        DEAD_AFTER - INTERVAL * 2,
        DEAD_AFTER - INTERVAL / 2,
        DEAD_AFTER - INTERVAL / 5,
        DEAD_AFTER,
        DEAD_AFTER + INTERVAL / 5,
        DEAD_AFTER + INTERVAL,
    ];
    for (i, pause) in pauses.iter().cycle().take(18).enumerate() {
        // Start the pauses at different points of B's heartbeat interval.
        tokio::time::sleep(INTERVAL * 3 + INTERVAL * (i as u32 % 7) / 7).await;
        stall.send(*pause).unwrap();
        tokio::time::sleep(*pause + INTERVAL).await;
        let taken: Vec<Event> = c
            .events_since(start)
            .into_iter()
            .filter(|e| e.dev == "B" && e.what == "activate" && e.tg != "tg-2")
            .collect();
        assert!(taken.is_empty(), "pause {pause:?}: {taken:#?}");
        // Whatever moved (tg-2, if A and C declared B dead) comes home before the next pause.
        c.wait_placed(&DEVICES, &STEADY).await;
    }
    drop(stall);
    c.shutdown();
}
