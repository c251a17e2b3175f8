//! Mirroring inside lbd: the channels of [`super::link`] wired to the daemon's tables and to
//! the device group (issue 6, DESIGN.md §1, §5).
//!
//! - **Receivers.** At start, one receiver per traffic group listens on this device's mirror
//!   addresses (primary and secondary), on the group's port for that traffic group
//!   (`mirror_port` + its position in the group file, within 1029–1155 by default). Whatever a
//!   device of the group mirrors is applied here by `MirrorStore`: persistence records go
//!   straight into the persistence table (marked `mirrored`), so they serve new connections the
//!   moment this device takes the traffic group over; UDP flows and TCP connections are kept as
//!   standby records until a takeover needs them. A traffic group active here ignores what
//!   others mirror for it (a stale sender must not overwrite the owner's state).
//! - **Senders.** Every [`RECONCILE`] the service compares the traffic groups active here with
//!   the channels it runs: per such traffic group one sender toward each device that receives
//!   some of its state. Persistence records go to every other device
//!   (`persistence_mirror_scope = "all-peers"`, the default: ECMP with a hash on ports spreads
//!   a client's connections over every device, and each must send it to the same member) or
//!   to the next-active device only (`"next-active"`); UDP flows and TCP connections go to the
//!   next-active device, the only one that takes them over (`mirror_scope = "next-active"`,
//!   the default) or to every device (`"all-peers"`). A channel carries what its peer is to
//!   receive and nothing else; when that changes (a new next-active device), the channel is
//!   replaced by a new one, which starts with a full resync.
//! - **What is offered.** The data path offers a persistence record of a profile with
//!   `mirror = true` when it is created and when a lookup refreshes it by at least
//!   [`refresh_step`] (so a busy record costs one update per step, not one per connection; the
//!   peer's copy may expire up to one step early), and its deletion by `lbctl`. Expiry needs no
//!   message: records carry their absolute expiry. A record mirrored here by a peer (or one
//!   of another traffic group) that a connection here uses becomes this device's own, in that
//!   connection's traffic group, and is offered at once: ECMP spreads a client's connections
//!   over every device, so the device that takes a traffic group over must know every client
//!   its connections stuck. For one key the newest record (the latest expiry, then the
//!   greater traffic group name) wins on every device, whatever order the channels deliver
//!   them in.
//! - **Failback gate.** The traffic groups this device is not active for and whose receiver is
//!   not in sync (no complete state, or no sender connected while a device holds the traffic
//!   group; when none does, because its holder just died, a complete copy is as good as it
//!   gets) are its *unsynced* set; the
//!   device group carries it in heartbeats, so auto-failback to this device waits for it (with
//!   persistence going to every device: until it is empty, so a device that starts or
//!   restarts holds every traffic group's records before it takes one back).
//! - **Resyncs replace, never empty.** A resync of a traffic group keeps what this device held
//!   of it until the resync is complete, then drops what it did not carry: a client whose
//!   record is being resent still finds it meanwhile.
//!
//! This module must never block the data path: offers are O(1) calls into the channels'
//! bounded queues, and nothing here holds a lock across an await.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::channel::{AckPolicy, ReceiverStatus, SenderStatus, State, Store, Timers};
use super::link::{self, LinkError, ReceiverHandle, SenderHandle, SenderLink, SnapshotSource};
use super::proto::{Record, RecordKey, RecordKind};
use super::trust;
use crate::cluster::config::{GroupConfig, MirrorScope};
use crate::daemon::Shared;
use crate::tables::{now_ms, PersistRecord};

/// How often the senders are reconciled with the traffic groups active here.
pub const RECONCILE: Duration = Duration::from_millis(100);
/// Unacknowledged updates a channel holds before it goes lagging and resyncs.
pub const CHANNEL_CAPACITY: usize = 65_536;

/// Errors of setting mirroring up (each names what to fix).
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("mirroring: device `{0}` has no mirror_addresses in the device-group file")]
    NoMirrorAddress(String),
    #[error("mirroring: {0}")]
    Trust(#[from] trust::TrustError),
    #[error("mirroring: {path}: {reason}")]
    TrustFile { path: PathBuf, reason: String },
    #[error("mirroring: cannot listen on {addr} (traffic group {traffic_group}): {source}")]
    Bind {
        addr: SocketAddr,
        traffic_group: String,
        source: std::io::Error,
    },
    #[error("mirroring: {0}")]
    Link(#[from] LinkError),
}

/// The trust files of this device: `DIR/ca.crt`, `DIR/DEVICE.crt`, `DIR/DEVICE.key`.
#[derive(Debug, Clone)]
pub struct TrustFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TrustFiles {
    pub fn in_dir(dir: &std::path::Path, device: &str) -> TrustFiles {
        let (ca, _) = trust::files(dir, "ca");
        let (cert, key) = trust::files(dir, device);
        TrustFiles { ca, cert, key }
    }

    fn check(&self) -> Result<(), MirrorError> {
        for p in [&self.ca, &self.cert, &self.key] {
            if let Err(e) = std::fs::metadata(p) {
                return Err(MirrorError::TrustFile {
                    path: p.clone(),
                    reason: format!("{e} (create it with `lbctl trust`)"),
                });
            }
        }
        Ok(())
    }
}

/// The smallest expiry extension worth telling the peer about: an eighth of the profile's
/// timeout, at least one second.
pub fn refresh_step(timeout: Duration) -> u64 {
    (timeout.as_millis() as u64 / 8).max(1000)
}

/// What a channel carries to its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Carries {
    /// Persistence records.
    persistence: bool,
    /// UDP flows and TCP connections.
    flows: bool,
}

impl Carries {
    fn kind(&self, kind: &RecordKind) -> bool {
        match kind {
            RecordKind::Persistence { .. } => self.persistence,
            RecordKind::UdpFlow { .. } | RecordKind::TcpConn { .. } => self.flows,
        }
    }

    fn key(&self, key: &RecordKey) -> bool {
        match key {
            RecordKey::Persistence { .. } => self.persistence,
            RecordKey::UdpFlow { .. } | RecordKey::TcpConn { .. } => self.flows,
        }
    }

    fn name(&self) -> &'static str {
        match (self.persistence, self.flows) {
            (true, true) => "all",
            (true, false) => "persistence",
            (false, true) => "connections",
            (false, false) => "nothing",
        }
    }
}

/// One running sender channel; its task ends when it is dropped.
struct SenderEntry {
    peer: String,
    carries: Carries,
    handle: SenderHandle,
    task: JoinHandle<()>,
}

impl Drop for SenderEntry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Senders = BTreeMap<String, Vec<Arc<SenderEntry>>>;

/// Standby UDP flows and TCP connections, by traffic group and key.
#[derive(Debug, Default)]
pub struct Standby {
    pub records: BTreeMap<String, BTreeMap<RecordKey, Record>>,
}

/// Counters of what the data path offered.
#[derive(Debug, Default)]
struct Counters {
    offered: AtomicU64,
    refresh_skipped: AtomicU64,
    offer_errors: AtomicU64,
}

/// The mirroring of this lbd (see the module documentation).
pub struct Mirroring {
    me: String,
    group: GroupConfig,
    files: TrustFiles,
    shared: Weak<Shared>,
    /// Traffic group → its channel port.
    ports: BTreeMap<String, u16>,
    senders: ArcSwap<Senders>,
    receivers: Vec<(String, ReceiverHandle)>,
    /// Traffic groups active here (receivers ignore what others mirror for them).
    active: Arc<ArcSwap<BTreeSet<String>>>,
    standby: Arc<Mutex<Standby>>,
    counters: Counters,
    /// This device's mirrored UDP flows and TCP connections (what a resync carries besides
    /// the persistence records), by key; the record names its traffic group.
    flows: Arc<dashmap::DashMap<RecordKey, Record>>,
    /// Per traffic group, bumped when this device gives it up (mirrored connections then end
    /// silently).
    releases: dashmap::DashMap<String, tokio::sync::watch::Sender<u64>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Epochs of new senders: strictly increasing within this process.
    last_epoch: AtomicU64,
    /// The unsynced set the last reconcile told the device group.
    last_unsynced: Mutex<BTreeSet<String>>,
    /// What each channel should carry, as the last reconcile saw it.
    last_want: Mutex<BTreeMap<String, BTreeMap<String, Carries>>>,
}

impl std::fmt::Debug for Mirroring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirroring")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Drop for Mirroring {
    fn drop(&mut self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn timers() -> Timers {
    Timers {
        heartbeat_ms: 500,
        dead_ms: 2000,
    }
}

impl Mirroring {
    /// Binds the receivers of every traffic group on this device's mirror addresses and
    /// returns the service; [`Mirroring::spawn_reconciler`] then keeps the senders in line with placement.
    pub async fn start(
        me: &str,
        group: &GroupConfig,
        trust_dir: &std::path::Path,
        shared: &Arc<Shared>,
    ) -> Result<Arc<Mirroring>, MirrorError> {
        let files = TrustFiles::in_dir(trust_dir, me);
        files.check()?;
        let mine = group
            .devices
            .iter()
            .find(|d| d.name == me)
            .map(|d| d.mirror_addresses.clone())
            .unwrap_or_default();
        if mine.is_empty() {
            return Err(MirrorError::NoMirrorAddress(me.to_string()));
        }
        let ports = group.mirror_ports();
        let active = Arc::new(ArcSwap::from_pointee(BTreeSet::new()));
        let standby = Arc::new(Mutex::new(Standby::default()));
        let store: Arc<Mutex<dyn Store + Send>> = Arc::new(Mutex::new(MirrorStore {
            shared: Arc::downgrade(shared),
            active: active.clone(),
            standby: standby.clone(),
            resyncs: BTreeMap::new(),
        }));
        let peers: Vec<String> = group
            .devices
            .iter()
            .filter(|d| d.name != me)
            .map(|d| d.name.clone())
            .collect();
        let mut receivers = Vec::new();
        let mut tasks = Vec::new();
        for (tg, port) in &ports {
            let mut listeners = Vec::new();
            for ip in &mine {
                let addr = SocketAddr::new(*ip, *port);
                let l = listen(addr).map_err(|source| MirrorError::Bind {
                    addr,
                    traffic_group: tg.clone(),
                    source,
                })?;
                listeners.push(l);
            }
            let cfg = link::ReceiverLink {
                device: me.to_string(),
                group: group.group.name.clone(),
                group_devices: peers.clone(),
                traffic_groups: vec![tg.clone()],
                ca: files.ca.clone(),
                cert: files.cert.clone(),
                key: files.key.clone(),
                timers: timers(),
                acks: AckPolicy::default(),
                io_timeout: Duration::from_secs(3),
            };
            let (handle, task) = link::spawn_receiver(listeners, cfg, store.clone())?;
            receivers.push((tg.clone(), handle));
            tasks.push(task);
        }
        info!(device = me, addresses = ?mine, ports = ?ports, scope = %group.group.mirror_scope,
            "mirroring: receivers listening");
        Ok(Arc::new(Mirroring {
            me: me.to_string(),
            group: group.clone(),
            files,
            shared: Arc::downgrade(shared),
            ports,
            senders: ArcSwap::from_pointee(BTreeMap::new()),
            receivers,
            active,
            standby,
            counters: Counters::default(),
            flows: Arc::new(dashmap::DashMap::new()),
            releases: dashmap::DashMap::new(),
            tasks: Mutex::new(tasks),
            last_epoch: AtomicU64::new(0),
            // Nothing is known to be in sync at start (as the device group assumes).
            last_unsynced: Mutex::new(group.mirror_ports().into_keys().collect()),
            last_want: Mutex::new(BTreeMap::new()),
        }))
    }

    /// Keeps the senders in line with the traffic groups active here, and tells the device
    /// group which traffic groups this device is not in sync for. Runs until the daemon's
    /// state is gone.
    pub fn spawn_reconciler(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(RECONCILE);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(m) = me.upgrade() else { return };
                m.reconcile().await;
            }
        });
        lock(&self.tasks).push(task);
    }

    async fn reconcile(self: &Arc<Self>) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let Some(cluster) = shared.cluster.get().cloned() else {
            return;
        };
        let here: BTreeSet<String> = cluster.local_status().active_here.into_keys().collect();
        if **self.active.load() != here {
            self.active.store(Arc::new(here.clone()));
        }
        let st = cluster.driver.status().await;
        let others: Vec<String> = self
            .group
            .devices
            .iter()
            .filter(|d| d.name != self.me)
            .map(|d| d.name.clone())
            .collect();
        let scope = &self.group.group;
        let mut want: BTreeMap<String, BTreeMap<String, Carries>> = BTreeMap::new();
        for t in &st.traffic_groups {
            if !here.contains(&t.name) {
                continue;
            }
            let next = t.next_active.as_deref().filter(|p| *p != self.me);
            let peers = others
                .iter()
                .map(|p| {
                    let to =
                        |s: MirrorScope| s == MirrorScope::AllPeers || Some(p.as_str()) == next;
                    let c = Carries {
                        persistence: to(scope.persistence_mirror_scope),
                        flows: to(scope.mirror_scope),
                    };
                    (p.clone(), c)
                })
                .filter(|(_, c)| c.persistence || c.flows)
                .collect();
            want.insert(t.name.clone(), peers);
        }
        let current = self.senders.load_full();
        // A channel that should carry something else is replaced only when the previous
        // reconcile wanted the same: right after a move, the next-active device as this device
        // sees it can change within one tick, and each replacement costs a full resync.
        let last = std::mem::replace(&mut *lock(&self.last_want), want.clone());
        for (tg, peers) in want.iter_mut() {
            for (peer, carries) in peers.iter_mut() {
                let running = current
                    .get(tg)
                    .and_then(|v| v.iter().find(|e| &e.peer == peer));
                if let Some(e) = running {
                    if e.carries != *carries
                        && last.get(tg).and_then(|p| p.get(peer)) != Some(carries)
                    {
                        *carries = e.carries;
                    }
                }
            }
        }
        let same = want.len() == current.len()
            && want.iter().all(|(tg, peers)| {
                current.get(tg).is_some_and(|v| {
                    v.len() == peers.len()
                        && v.iter().all(|e| peers.get(&e.peer) == Some(&e.carries))
                })
            });
        if !same {
            let mut next: Senders = BTreeMap::new();
            for (tg, peers) in &want {
                let mut list = Vec::new();
                for (peer, carries) in peers {
                    let existing = current.get(tg).and_then(|v| {
                        v.iter()
                            .find(|e| &e.peer == peer && e.carries == *carries)
                            .cloned()
                    });
                    let entry = match existing {
                        Some(e) => e,
                        None => match self.spawn_sender(tg, peer, *carries, &shared) {
                            Ok(e) => {
                                info!(traffic_group = %tg, peer = %peer, carries = carries.name(),
                                    "mirroring: channel started");
                                Arc::new(e)
                            }
                            Err(e) => {
                                warn!(traffic_group = %tg, peer = %peer, error = %e,
                                    "mirroring: cannot start channel");
                                continue;
                            }
                        },
                    };
                    list.push(entry);
                }
                next.insert(tg.clone(), list);
            }
            for (tg, list) in current.iter() {
                for e in list {
                    if want.get(tg).and_then(|p| p.get(&e.peer)) != Some(&e.carries) {
                        info!(traffic_group = %tg, peer = %e.peer, carries = e.carries.name(),
                            "mirroring: channel stopped");
                    }
                }
            }
            self.senders.store(Arc::new(next));
        }
        // With persistence mirrored to every device, every traffic group not active here is
        // mirrored here; otherwise only those this device is the next-active of.
        let all = scope.persistence_mirror_scope == MirrorScope::AllPeers;
        let expected: BTreeMap<&str, bool> = st
            .traffic_groups
            .iter()
            .filter(|t| all || t.next_active.as_deref() == Some(self.me.as_str()))
            .map(|t| (t.name.as_str(), t.active.is_some()))
            .collect();
        let unsynced = self.unsynced(&here, &expected);
        *lock(&self.last_unsynced) = unsynced.clone();
        cluster.driver.set_unsynced(unsynced).await;
    }

    /// Traffic groups not active here whose receiver holds no complete, live state.
    /// The `expected` traffic groups (name → some device holds it) not active here whose
    /// state this device does not hold: in sync with the holder's channel when a device holds
    /// the traffic group; when none does (its holder just died), a complete copy, however old
    /// (nobody has a newer one).
    fn unsynced(
        &self,
        here: &BTreeSet<String>,
        expected: &BTreeMap<&str, bool>,
    ) -> BTreeSet<String> {
        self.receivers
            .iter()
            .filter(|(tg, _)| !here.contains(tg))
            .filter(|(tg, h)| {
                let Some(held) = expected.get(tg.as_str()) else {
                    return false;
                };
                !h.status().iter().any(|(t, s, connected)| {
                    t == tg
                        && if *held {
                            in_sync(s, *connected)
                        } else {
                            s.synced
                        }
                })
            })
            .map(|(tg, _)| tg.clone())
            .collect()
    }

    fn spawn_sender(
        &self,
        tg: &str,
        peer: &str,
        carries: Carries,
        shared: &Arc<Shared>,
    ) -> Result<SenderEntry, MirrorError> {
        let dev = self.group.devices.iter().find(|d| d.name == peer);
        let addrs = dev.map(|d| d.mirror_addresses.clone()).unwrap_or_default();
        let Some(primary) = addrs.first() else {
            return Err(MirrorError::NoMirrorAddress(peer.to_string()));
        };
        let port = self.ports[tg];
        let epoch = {
            let now = now_ms();
            let mut prev = self.last_epoch.load(Ordering::Relaxed);
            loop {
                let e = now.max(prev + 1);
                match self.last_epoch.compare_exchange_weak(
                    prev,
                    e,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break e,
                    Err(p) => prev = p,
                }
            }
        };
        let cfg = SenderLink {
            device: self.me.clone(),
            group: self.group.group.name.clone(),
            peer_device: peer.to_string(),
            traffic_group: tg.to_string(),
            primary: SocketAddr::new(*primary, port),
            secondary: addrs.get(1).map(|a| SocketAddr::new(*a, port)),
            ca: self.files.ca.clone(),
            cert: self.files.cert.clone(),
            key: self.files.key.clone(),
            epoch,
            capacity: CHANNEL_CAPACITY,
            timers: timers(),
            io_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        };
        let source = Arc::new(Snapshots {
            shared: Arc::downgrade(shared),
            flows: self.flows.clone(),
            carries,
        });
        let (handle, task) = link::spawn_sender(cfg, source)?;
        Ok(SenderEntry {
            peer: peer.to_string(),
            carries,
            handle,
            task,
        })
    }

    /// Offers `kind` to every channel of `tg` that carries it (O(1) each; never waits).
    pub fn offer(&self, tg: &str, kind: RecordKind) {
        let senders = self.senders.load();
        let Some(list) = senders.get(tg) else {
            return;
        };
        for e in list.iter().filter(|e| e.carries.kind(&kind)) {
            let record = Record {
                update_id: 0,
                traffic_group: tg.to_string(),
                kind: kind.clone(),
            };
            self.counters.offered.fetch_add(1, Ordering::Relaxed);
            if let Err(err) = e.handle.offer(record) {
                self.counters.offer_errors.fetch_add(1, Ordering::Relaxed);
                debug!(traffic_group = tg, error = %err, "mirroring: offer refused");
            }
        }
    }

    /// Offers the deletion of `key` to every channel of `tg` that carries its kind.
    pub fn offer_delete(&self, tg: &str, key: RecordKey) {
        let senders = self.senders.load();
        if let Some(list) = senders.get(tg) {
            for e in list.iter().filter(|e| e.carries.key(&key)) {
                e.handle.offer_delete(key.clone());
            }
        }
    }

    /// A UDP flow or TCP connection of traffic group `tg` to mirror (created, or its state
    /// changed): kept for resyncs and offered.
    pub fn flow_up(&self, tg: &str, kind: RecordKind) {
        let r = Record {
            update_id: 0,
            traffic_group: tg.to_string(),
            kind,
        };
        self.flows.insert(r.key(), r.clone());
        self.offer(tg, r.kind);
    }

    /// The flow or connection under `key` ended.
    pub fn flow_down(&self, tg: &str, key: RecordKey) {
        if self.flows.remove(&key).is_some() {
            self.offer_delete(tg, key);
        }
    }

    /// Tells when this device gives `tg` up (see [`Mirroring::released`]).
    pub fn release_watch(&self, tg: &str) -> tokio::sync::watch::Receiver<u64> {
        self.releases
            .entry(tg.to_string())
            .or_insert_with(|| tokio::sync::watch::channel(0).0)
            .subscribe()
    }

    /// This device is giving `tg` up: its mirrored connections of `tg` end silently (they
    /// live on the new owner), its mirrored flows of `tg` are no longer this device's to
    /// mirror, its persistence records of `tg` are the new owner's (mirrored ones here, which
    /// the new owner's resync replaces), and it accepts `tg`'s state from others again.
    pub fn released(&self, tg: &str) {
        if let Some(tx) = self.releases.get(tg) {
            tx.send_modify(|n| *n += 1);
        }
        self.flows.retain(|_, r| r.traffic_group != tg);
        let mut set = (**self.active.load()).clone();
        if set.remove(tg) {
            self.active.store(Arc::new(set));
        }
        if let Some(shared) = self.shared.upgrade() {
            shared.persist.disown(tg);
        }
    }

    /// Offers a persistence record (created or refreshed here).
    pub fn offer_persist(&self, r: &PersistRecord) {
        if let Some(tg) = &r.traffic_group {
            self.offer(tg, persist_kind(r));
        }
    }

    /// A lookup used record `r` (refreshed from `previous` expiry) for a connection of
    /// traffic group `tg`. A record a peer mirrored here, or one of another traffic group
    /// (this device holds several while it stands in for a failed one), becomes this device's
    /// record in `tg` and goes to `tg`'s peers at once (the client's flows reach every device,
    /// so the device that would take `tg` over must know where the client sticks); otherwise
    /// it is offered when its expiry moved by a [`refresh_step`].
    pub fn used(
        &self,
        r: &mut PersistRecord,
        previous: u64,
        profile: &crate::config::Persistence,
        tg: Option<&str>,
    ) {
        // No traffic group active here (between a release and a takeover): the record stays
        // whose it is.
        let Some(tg) = tg else { return };
        let tg = Some(tg);
        if r.mirrored || r.traffic_group.as_deref() != tg {
            r.mirrored = false;
            r.traffic_group = tg.map(str::to_string);
            if profile.mirror {
                self.offer_persist(r);
            }
        } else if profile.mirror {
            if r.expiry_ms >= previous.saturating_add(refresh_step(profile.timeout)) {
                self.offer_persist(r);
            } else {
                self.counters
                    .refresh_skipped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Offers the deletion of a persistence record.
    pub fn delete_persist(&self, r: &PersistRecord) {
        if let Some(tg) = &r.traffic_group {
            self.offer_delete(
                tg,
                RecordKey::Persistence {
                    profile: r.profile.clone(),
                    scope: r.scope.clone(),
                    key: r.key.clone(),
                },
            );
        }
    }

    /// Called by the device group just before it takes `tg` over, before the floating
    /// addresses move: the mirrored persistence records of `tg` become this device's own (a
    /// stale sender can no longer clear them), and the standby records are handed back for
    /// the data path to rebuild.
    pub fn take_over(&self, tg: &str) -> Vec<Record> {
        let mut set = (**self.active.load()).clone();
        set.insert(tg.to_string());
        self.active.store(Arc::new(set));
        let mut adopted = 0;
        if let Some(shared) = self.shared.upgrade() {
            adopted = shared.persist.adopt(tg);
        }
        let standby = lock(&self.standby).records.remove(tg).unwrap_or_default();
        info!(
            traffic_group = tg,
            persistence_records = adopted,
            standby_records = standby.len(),
            "mirroring: taking over the mirrored state"
        );
        standby.into_values().collect()
    }

    /// `lbctl show mirroring`.
    pub fn status(&self) -> Value {
        let shared = self.shared.upgrade();
        let counts = |tg: &str, mirrored: Option<bool>| -> Value {
            let persistence = shared.as_ref().map_or(0, |s| {
                s.persist.count(|r| {
                    r.traffic_group.as_deref() == Some(tg)
                        && mirrored.is_none_or(|m| m == r.mirrored)
                })
            });
            let (mut udp, mut tcp) = (0usize, 0usize);
            let mut tally = |r: &Record| match r.kind {
                RecordKind::UdpFlow { .. } => udp += 1,
                RecordKind::TcpConn { .. } => tcp += 1,
                RecordKind::Persistence { .. } => {}
            };
            if mirrored != Some(false) {
                if let Some(recs) = lock(&self.standby).records.get(tg) {
                    recs.values().for_each(&mut tally);
                }
            }
            if mirrored != Some(true) {
                self.flows
                    .iter()
                    .filter(|e| e.value().traffic_group == tg)
                    .for_each(|e| tally(e.value()));
            }
            json!({"persistence": persistence, "udp_flows": udp, "tcp_connections": tcp})
        };
        let senders: Vec<Value> = self
            .senders
            .load()
            .iter()
            .flat_map(|(tg, list)| {
                list.iter().map(move |e| {
                    let s: SenderStatus = e.handle.status();
                    json!({
                        "traffic_group": tg,
                        "peer": e.peer,
                        "carries": e.carries.name(),
                        "port": self.ports.get(tg),
                        "state": state_name(s.state),
                        "last_sent": s.last_sent,
                        "last_acked": s.last_acked,
                        "lag_ms": s.lag_ms,
                        "queued": s.queued,
                        "unacked": s.unacked,
                        "records": carried(counts(tg, None), e.carries),
                    })
                })
            })
            .collect::<Vec<_>>();
        let here = self.active.load();
        let receivers: Vec<Value> = self
            .receivers
            .iter()
            .flat_map(|(_, h)| h.status())
            .map(|(tg, s, connected)| {
                json!({
                    "traffic_group": tg,
                    "peer": s.peer,
                    "port": self.ports.get(&tg),
                    "connected": connected,
                    "state": receiver_state(&s, connected, here.contains(&tg)),
                    "in_sync": in_sync(&s, connected),
                    "last_applied": s.last_applied,
                    "duplicates": s.duplicates,
                    "records": counts(&tg, Some(true)),
                })
            })
            .collect();
        json!({
            "enabled": true,
            "me": self.me,
            "scope": self.group.group.mirror_scope.to_string(),
            "persistence_scope": self.group.group.persistence_mirror_scope.to_string(),
            "unsynced": *lock(&self.last_unsynced),
            "senders": senders,
            "receivers": receivers,
            "offered": self.counters.offered.load(Ordering::Relaxed),
            "refresh_skipped": self.counters.refresh_skipped.load(Ordering::Relaxed),
            "offer_errors": self.counters.offer_errors.load(Ordering::Relaxed),
        })
    }

    /// Per-channel figures for the metrics: (traffic group, peer, role, state, last id,
    /// acked id, lag ms).
    pub fn channel_figures(&self) -> Vec<ChannelFigures> {
        let mut out = Vec::new();
        for (tg, list) in self.senders.load().iter() {
            for e in list {
                let s = e.handle.status();
                out.push(ChannelFigures {
                    traffic_group: tg.clone(),
                    peer: e.peer.clone(),
                    role: "sender",
                    state: state_name(s.state),
                    in_sync: s.state == State::InSync,
                    last_id: s.last_sent,
                    acked_id: s.last_acked,
                    lag_ms: s.lag_ms,
                });
            }
        }
        for (_, h) in &self.receivers {
            for (tg, s, connected) in h.status() {
                out.push(ChannelFigures {
                    traffic_group: tg,
                    peer: s.peer.clone().unwrap_or_default(),
                    role: "receiver",
                    state: if in_sync(&s, connected) {
                        "in-sync"
                    } else if s.resyncing {
                        "resyncing"
                    } else {
                        "connecting"
                    },
                    in_sync: in_sync(&s, connected),
                    last_id: s.last_applied,
                    acked_id: s.last_applied,
                    lag_ms: 0,
                });
            }
        }
        out
    }

    /// Updates offered to channels, refreshes not worth an update, offers refused.
    pub fn offer_counters(&self) -> (u64, u64, u64) {
        (
            self.counters.offered.load(Ordering::Relaxed),
            self.counters.refresh_skipped.load(Ordering::Relaxed),
            self.counters.offer_errors.load(Ordering::Relaxed),
        )
    }
}

/// One channel's figures (metrics).
#[derive(Debug, Clone)]
pub struct ChannelFigures {
    pub traffic_group: String,
    pub peer: String,
    pub role: &'static str,
    pub state: &'static str,
    pub in_sync: bool,
    pub last_id: u64,
    pub acked_id: u64,
    pub lag_ms: u64,
}

/// `counts` with the kinds a channel does not carry set to 0.
fn carried(mut counts: Value, c: Carries) -> Value {
    if !c.persistence {
        counts["persistence"] = 0.into();
    }
    if !c.flows {
        counts["udp_flows"] = 0.into();
        counts["tcp_connections"] = 0.into();
    }
    counts
}

fn in_sync(s: &ReceiverStatus, connected: bool) -> bool {
    connected && s.synced && !s.resyncing
}

fn receiver_state(s: &ReceiverStatus, connected: bool, active_here: bool) -> &'static str {
    if active_here {
        "active-here"
    } else if in_sync(s, connected) {
        "in-sync"
    } else if s.resyncing {
        "resyncing"
    } else if connected {
        "connected"
    } else if s.synced {
        "disconnected"
    } else {
        "waiting"
    }
}

/// The names `lbctl show mirroring` uses.
pub fn state_name(s: State) -> &'static str {
    match s {
        State::Connecting => "connecting",
        State::Resyncing => "resyncing",
        State::InSync => "in-sync",
        State::Lagging => "lagging",
    }
}

fn persist_kind(r: &PersistRecord) -> RecordKind {
    RecordKind::Persistence {
        profile: r.profile.clone(),
        scope: r.scope.clone(),
        key: r.key.clone(),
        pool: r.pool.clone(),
        member: r.member,
        virtual_server: r.virtual_server.clone(),
        expiry_ms: r.expiry_ms,
    }
}

/// Binds a mirror listener (address reuse, so a restarted lbd binds at once).
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let s = match addr.ip() {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(64)
}

/// What a channel's resync carries: the traffic group's mirrored state here, of the kinds the
/// channel carries.
struct Snapshots {
    shared: Weak<Shared>,
    flows: Arc<dashmap::DashMap<RecordKey, Record>>,
    carries: Carries,
}

impl SnapshotSource for Snapshots {
    fn snapshot(&self, traffic_group: &str) -> Vec<Record> {
        let Some(shared) = self.shared.upgrade() else {
            return Vec::new();
        };
        let rt = shared.runtime.load();
        let persistence = self.carries.persistence;
        let mirrored: BTreeSet<&str> = rt
            .config
            .persistence
            .iter()
            .filter(|(_, p)| p.mirror)
            .map(|(n, _)| n.as_str())
            .collect();
        let now = now_ms();
        let mut out: Vec<Record> = shared
            .persist
            .records(|r| {
                persistence
                    && r.traffic_group.as_deref() == Some(traffic_group)
                    && r.expiry_ms > now
                    && mirrored.contains(r.profile.as_str())
            })
            .iter()
            .map(|r| Record {
                update_id: 0,
                traffic_group: traffic_group.to_string(),
                kind: persist_kind(r),
            })
            .collect();
        drop(rt);
        out.extend(
            self.flows
                .iter()
                .filter(|e| self.carries.flows && e.value().traffic_group == traffic_group)
                .map(|e| e.value().clone()),
        );
        out.sort_by_key(Record::key);
        out
    }
}

/// Applies what peers mirror (see the module documentation).
struct MirrorStore {
    shared: Weak<Shared>,
    active: Arc<ArcSwap<BTreeSet<String>>>,
    standby: Arc<Mutex<Standby>>,
    /// Per traffic group with a resync in progress: the last persistence update id given out
    /// when it began (mirrored records of the group with an id at or below it, not replaced
    /// by the resync, are dropped at its end), and the standby keys it has not carried yet.
    resyncs: BTreeMap<String, (u64, BTreeSet<RecordKey>)>,
}

impl MirrorStore {
    fn ours(&self, tg: &str) -> bool {
        self.active.load().contains(tg)
    }
}

impl Store for MirrorStore {
    fn upsert(&mut self, r: Record) {
        if self.ours(&r.traffic_group) {
            return;
        }
        match &r.kind {
            RecordKind::Persistence {
                profile,
                scope,
                key,
                pool,
                member,
                virtual_server,
                expiry_ms,
            } => {
                let Some(shared) = self.shared.upgrade() else {
                    return;
                };
                let incoming = PersistRecord {
                    profile: profile.clone(),
                    scope: scope.clone(),
                    key: key.clone(),
                    pool: pool.clone(),
                    member: *member,
                    virtual_server: virtual_server.clone(),
                    traffic_group: Some(r.traffic_group.clone()),
                    update_id: shared.ids.next(),
                    expiry_ms: *expiry_ms,
                    mirrored: true,
                };
                let refused = shared.persist.insert_mirrored(incoming.clone());
                // This device's own record is newer (used here since, the refresh not sent
                // yet): the peers must have it, or they would keep the older copy under
                // another traffic group, which that group's next resync may drop. Only when
                // strictly newer: the peer then takes it, so this cannot go back and forth.
                if let Err(kept) = refused {
                    let active_here = kept.traffic_group.as_deref().is_some_and(|t| self.ours(t));
                    if !kept.mirrored && active_here && kept.newer(&incoming) {
                        if let Some(m) = shared.mirror.get() {
                            m.offer_persist(&kept);
                        }
                    }
                }
            }
            RecordKind::UdpFlow { .. } | RecordKind::TcpConn { .. } => {
                if let Some((_, stale)) = self.resyncs.get_mut(&r.traffic_group) {
                    stale.remove(&r.key());
                }
                lock(&self.standby)
                    .records
                    .entry(r.traffic_group.clone())
                    .or_default()
                    .insert(r.key(), r);
            }
        }
    }

    fn delete(&mut self, key: &RecordKey) {
        match key {
            RecordKey::Persistence {
                profile,
                scope,
                key,
            } => {
                if let Some(shared) = self.shared.upgrade() {
                    shared
                        .persist
                        .remove_if(profile, scope, key, |r| r.mirrored);
                }
            }
            RecordKey::UdpFlow { .. } | RecordKey::TcpConn { .. } => {
                for recs in lock(&self.standby).records.values_mut() {
                    recs.remove(key);
                }
            }
        }
    }

    fn resync_begin(&mut self, tg: &str) {
        let mark = self.shared.upgrade().map_or(0, |s| s.ids.last());
        let stale = lock(&self.standby)
            .records
            .get(tg)
            .map(|recs| recs.keys().cloned().collect())
            .unwrap_or_default();
        self.resyncs.insert(tg.to_string(), (mark, stale));
    }

    fn resync_end(&mut self, tg: &str) {
        let Some((mark, stale)) = self.resyncs.remove(tg) else {
            return;
        };
        if self.ours(tg) {
            return;
        }
        if let Some(shared) = self.shared.upgrade() {
            shared.persist.delete(|r| {
                r.mirrored && r.traffic_group.as_deref() == Some(tg) && r.update_id <= mark
            });
        }
        if let Some(recs) = lock(&self.standby).records.get_mut(tg) {
            recs.retain(|k, _| !stale.contains(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const CFG: &str = r#"
[device]
name = "c"
[virtual_servers.web]
destination = "127.0.0.1:18080"
pool = "web"
snat = "none"
persistence = "src"
[pools.web]
members = [{ address = "127.0.0.1:18081" }]
[persistence.src]
type = "source-address"
mirror = true
"#;

    fn persist(tg: &str, key: &str, member: &str, expiry_ms: u64) -> Record {
        Record {
            update_id: 0,
            traffic_group: tg.into(),
            kind: RecordKind::Persistence {
                profile: "src".into(),
                scope: "web".into(),
                key: key.into(),
                pool: "web".into(),
                member: member.parse().unwrap(),
                virtual_server: "web".into(),
                expiry_ms,
            },
        }
    }

    fn flow(tg: &str, port: u16) -> Record {
        Record {
            update_id: 0,
            traffic_group: tg.into(),
            kind: RecordKind::UdpFlow {
                client: format!("192.0.2.1:{port}").parse().unwrap(),
                vip: "30.1.1.10:5060".parse().unwrap(),
                member: "10.1.1.50:5060".parse().unwrap(),
                snat: "10.1.1.3:40000".parse().unwrap(),
                last_seen_ms: 1,
                key: None,
            },
        }
    }

    /// A record of this device's own.
    fn own(shared: &Shared, tg: &str, key: &str, expiry_ms: u64) -> PersistRecord {
        PersistRecord {
            profile: "src".into(),
            scope: "web".into(),
            key: key.into(),
            pool: "web".into(),
            member: "127.0.0.1:18081".parse().unwrap(),
            virtual_server: "web".into(),
            traffic_group: Some(tg.into()),
            update_id: shared.ids.next(),
            expiry_ms,
            mirrored: false,
        }
    }

    #[test]
    fn the_store_applies_peers_state_but_not_for_groups_active_here() {
        let shared = Shared::new(Config::from_toml(CFG, "t").unwrap(), None, 1);
        let active = Arc::new(ArcSwap::from_pointee(BTreeSet::from(["tg-3".to_string()])));
        let standby = Arc::new(Mutex::new(Standby::default()));
        let mut store = MirrorStore {
            shared: Arc::downgrade(&shared),
            active: active.clone(),
            standby: standby.clone(),
            resyncs: BTreeMap::new(),
        };
        let far = now_ms() + 60_000;
        store.upsert(persist("tg-2", "10.0.0.1/32", "127.0.0.1:18081", far));
        store.upsert(flow("tg-2", 1000));
        // A group active here: ignored (a stale sender must not overwrite the owner's state).
        store.upsert(persist("tg-3", "10.0.0.3/32", "127.0.0.1:18081", far));
        store.upsert(flow("tg-3", 1003));
        let recs = shared.persist.records(|_| true);
        assert_eq!(recs.len(), 1);
        assert!(recs[0].mirrored);
        assert_eq!(recs[0].traffic_group.as_deref(), Some("tg-2"));
        assert_eq!(lock(&standby).records["tg-2"].len(), 1);
        assert!(!lock(&standby).records.contains_key("tg-3"));
        // Deletes: a flow by its key, a persistence record only when mirrored.
        shared
            .persist
            .insert(own(&shared, "tg-2", "10.0.0.9/32", far));
        store.upsert(flow("tg-2", 1001));
        store.delete(&flow("tg-2", 1001).key());
        assert_eq!(lock(&standby).records["tg-2"].len(), 1);
        store.delete(&persist("tg-2", "10.0.0.9/32", "127.0.0.1:18081", 0).key());
        assert_eq!(
            shared.persist.len(),
            2,
            "an own record is not deleted by a peer"
        );
    }

    /// A resync replaces a group's mirrored state without a gap: while it runs, every record
    /// held before still serves (a client's next connection finds its record); at its end what
    /// it did not carry is gone, and a record of this device's own stays.
    #[test]
    fn a_resync_replaces_the_mirrored_state_without_emptying_it_first() {
        let shared = Shared::new(Config::from_toml(CFG, "t").unwrap(), None, 1);
        let standby = Arc::new(Mutex::new(Standby::default()));
        let mut store = MirrorStore {
            shared: Arc::downgrade(&shared),
            active: Arc::new(ArcSwap::from_pointee(BTreeSet::new())),
            standby: standby.clone(),
            resyncs: BTreeMap::new(),
        };
        let far = now_ms() + 60_000;
        for i in 0..3 {
            store.upsert(persist(
                "tg-2",
                &format!("10.0.0.{i}/32"),
                "127.0.0.1:18081",
                far,
            ));
            store.upsert(flow("tg-2", 1000 + i));
        }
        store.upsert(persist("tg-1", "10.0.1.1/32", "127.0.0.1:18081", far));
        shared
            .persist
            .insert(own(&shared, "tg-2", "10.0.0.9/32", far));
        store.resync_begin("tg-2");
        assert_eq!(shared.persist.len(), 5, "nothing goes when a resync begins");
        assert_eq!(lock(&standby).records["tg-2"].len(), 3);
        // The resync carries 10.0.0.1 and 10.0.0.7, and flow 1001.
        store.upsert(persist("tg-2", "10.0.0.1/32", "127.0.0.1:18082", far));
        assert_eq!(shared.persist.len(), 5);
        store.upsert(persist("tg-2", "10.0.0.7/32", "127.0.0.1:18081", far));
        store.upsert(flow("tg-2", 1001));
        store.resync_end("tg-2");
        let keys: BTreeSet<String> = shared
            .persist
            .records(|_| true)
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(
            keys,
            ["10.0.0.1/32", "10.0.0.7/32", "10.0.0.9/32", "10.0.1.1/32"]
                .map(String::from)
                .into()
        );
        let flows: Vec<RecordKey> = lock(&standby).records["tg-2"].keys().cloned().collect();
        assert_eq!(flows, vec![flow("tg-2", 1001).key()]);
        // An end without a beginning (or a second one) drops nothing.
        store.resync_end("tg-2");
        assert_eq!(shared.persist.len(), 4);
    }

    #[test]
    fn refresh_step_is_an_eighth_of_the_timeout_at_least_a_second() {
        assert_eq!(refresh_step(Duration::from_secs(300)), 37_500);
        assert_eq!(refresh_step(Duration::from_secs(4)), 1000);
    }
}
