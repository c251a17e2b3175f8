//! Mirroring inside lbd: the channels of [`super::link`] wired to the daemon's tables and to
//! the device group (docs/design.md, "The model"; docs/architecture.md, "Mirroring").
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

mod admission;
mod senders;
mod status;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::channel::{AckPolicy, ReceiverStatus, Store, Timers};
use super::link::{self, LinkError, ReceiverHandle, SenderLink};
use super::proto::{Record, RecordKey, RecordKind};
use super::tap::MirrorTap;
use super::trust;
use crate::cluster::config::{GroupConfig, MirrorScope};
use crate::cluster::placement::Role;
use crate::state::Live;
use crate::tables::{now_ms, refresh_step, PersistRecord};
use admission::GroupAdmission;
use senders::{wanted, Carries, Outbox, SenderEntry, Senders};
use store::{lock, MirrorStore, Snapshots, Standby};

/// How often the senders are reconciled with the traffic groups active here.
pub const RECONCILE: Duration = Duration::from_millis(100);
/// How long (in `dead_after`s) a receiver whose holder's channel just ended still counts as
/// in sync (see `unsynced_set`).
pub const DROPPED_GRACE: u32 = 2;
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
    #[error("mirroring: no traffic group {0}")]
    UnknownTrafficGroup(String),
}

/// The other devices of `group`.
fn peer_names(group: &GroupConfig, me: &str) -> Vec<String> {
    group
        .devices
        .iter()
        .filter(|d| d.name != me)
        .map(|d| d.name.clone())
        .collect()
}

/// Binds traffic group `tg`'s receiver on `port` of each of this device's `addresses`.
#[allow(clippy::too_many_arguments)]
fn receiver(
    me: &str,
    group: &GroupConfig,
    files: &TrustFiles,
    addresses: &[std::net::IpAddr],
    admitted: &trust::Admitted,
    admission: &Arc<GroupAdmission>,
    store: &Arc<Mutex<dyn Store + Send>>,
    tg: &str,
    port: u16,
) -> Result<(ReceiverHandle, JoinHandle<()>), MirrorError> {
    let mut listeners = Vec::new();
    for ip in addresses {
        let addr = SocketAddr::new(*ip, port);
        let l = listen(addr).map_err(|source| MirrorError::Bind {
            addr,
            traffic_group: tg.to_string(),
            source,
        })?;
        listeners.push(l);
    }
    let cfg = link::ReceiverLink {
        device: me.to_string(),
        group: group.group.name.clone(),
        admitted: admitted.clone(),
        traffic_groups: vec![tg.to_string()],
        ca: files.ca.clone(),
        cert: files.cert.clone(),
        key: files.key.clone(),
        timers: timers(),
        acks: AckPolicy::default(),
        io_timeout: Duration::from_secs(3),
    };
    Ok(link::spawn_receiver(
        listeners,
        cfg,
        store.clone(),
        admission.clone(),
    )?)
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

/// The mirroring of this lbd (see the module documentation).
pub struct Mirroring {
    me: String,
    /// The running device group (replaced by a live membership change: [`Mirroring::reconfigure`]).
    group: ArcSwap<GroupConfig>,
    files: TrustFiles,
    live: Arc<Live>,
    /// Traffic group → its channel port.
    ports: ArcSwap<BTreeMap<String, u16>>,
    outbox: Arc<Outbox>,
    /// One receiver per traffic group, with its task.
    receivers: Mutex<Vec<(String, ReceiverHandle, JoinHandle<()>)>>,
    /// This device's mirror addresses (the receivers listen there).
    addresses: Vec<std::net::IpAddr>,
    /// The devices the receivers admit as senders.
    admitted: trust::Admitted,
    /// Which of them may send which traffic group, from where.
    admission: Arc<GroupAdmission>,
    store: Arc<Mutex<dyn Store + Send>>,
    /// Traffic groups active here (receivers ignore what others mirror for them).
    active: Arc<ArcSwap<BTreeSet<String>>>,
    standby: Arc<Mutex<Standby>>,
    /// This device's mirrored UDP flows and TCP connections (what a resync carries besides
    /// the persistence records), by key; the record names its traffic group.
    flows: Arc<dashmap::DashMap<RecordKey, Record>>,
    /// Per traffic group, bumped when this device gives it up (mirrored connections then end
    /// silently).
    releases: dashmap::DashMap<String, watch::Sender<u64>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Epochs of new senders: strictly increasing within this process.
    last_epoch: AtomicU64,
    /// Mirrored persistence records refused on receipt (unknown profile).
    refused: Arc<AtomicU64>,
    /// Standby records refused: their traffic group held its limit.
    over_limit: Arc<AtomicU64>,
    /// The traffic groups this device is not in sync for (the device group carries them in
    /// heartbeats: auto-failback to this device waits).
    unsynced: watch::Sender<BTreeSet<String>>,
    /// What each channel should carry, as the last reconcile saw it.
    last_want: Mutex<BTreeMap<String, BTreeMap<String, Carries>>>,
    /// Per traffic group, since when its holder's channel has been down while this device
    /// holds that holder's complete state.
    dropped: Mutex<BTreeMap<String, std::time::Instant>>,
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
        for (_, _, t) in lock(&self.receivers).drain(..) {
            t.abort();
        }
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

/// A receiver holds the live state of its traffic group: connected, synced, not resyncing.
fn in_sync(s: &ReceiverStatus, connected: bool) -> bool {
    connected && s.synced && !s.resyncing
}

fn timers() -> Timers {
    Timers {
        heartbeat_ms: 500,
        dead_ms: 2000,
    }
}

impl Mirroring {
    /// Binds the receivers of every traffic group on this device's mirror addresses and
    /// returns the service; [`Mirroring::spawn_reconciler`] then keeps the senders in line
    /// with placement.
    pub async fn start(
        me: &str,
        group: &GroupConfig,
        trust_dir: &std::path::Path,
        live: &Arc<Live>,
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
        let outbox = Arc::new(Outbox::default());
        let refused = Arc::new(AtomicU64::new(0));
        let over_limit = Arc::new(AtomicU64::new(0));
        let store: Arc<Mutex<dyn Store + Send>> = Arc::new(Mutex::new(MirrorStore {
            live: live.clone(),
            outbox: outbox.clone(),
            active: active.clone(),
            standby: standby.clone(),
            resyncs: BTreeMap::new(),
            refused: refused.clone(),
            over_limit: over_limit.clone(),
            over_limit_logged: None,
        }));
        let admitted = trust::Admitted::devices(&peer_names(group, me));
        let admission = GroupAdmission::new(me, group);
        let mut receivers = Vec::new();
        for (tg, port) in &ports {
            let (handle, task) = receiver(
                me, group, &files, &mine, &admitted, &admission, &store, tg, *port,
            )?;
            receivers.push((tg.clone(), handle, task));
        }
        info!(device = me, addresses = ?mine, ports = ?ports, scope = %group.group.mirror_scope,
            "mirroring: receivers listening");
        Ok(Arc::new(Mirroring {
            me: me.to_string(),
            group: ArcSwap::from_pointee(group.clone()),
            files,
            live: live.clone(),
            ports: ArcSwap::from_pointee(ports),
            outbox,
            receivers: Mutex::new(receivers),
            addresses: mine,
            admitted,
            admission,
            store,
            active,
            standby,
            flows: Arc::new(dashmap::DashMap::new()),
            releases: dashmap::DashMap::new(),
            tasks: Mutex::new(Vec::new()),
            last_epoch: AtomicU64::new(0),
            refused,
            over_limit,
            // Nothing is known to be in sync at start (as the device group assumes).
            unsynced: tokio::sync::watch::channel(group.mirror_ports().into_keys().collect()).0,
            last_want: Mutex::new(BTreeMap::new()),
            dropped: Mutex::new(BTreeMap::new()),
        }))
    }

    /// Keeps the senders in line with placement and tells which traffic groups this device
    /// is not in sync for ([`Mirroring::unsynced`]): at once when `roles` (each traffic
    /// group's holder and next-active device, published by the device group) or `here` (the
    /// traffic groups whose addresses are in place here) change, and every [`RECONCILE`] for
    /// what only mirroring sees (a receiver in sync, a channel whose peer changed twice).
    /// Runs until the service is dropped or the device group stops publishing.
    pub fn spawn_reconciler(
        self: &Arc<Self>,
        mut roles: watch::Receiver<Vec<Role>>,
        mut here: watch::Receiver<BTreeSet<String>>,
    ) {
        let me = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(RECONCILE);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    r = roles.changed() => if r.is_err() { return },
                    r = here.changed() => if r.is_err() { return },
                    _ = tick.tick() => {}
                }
                let Some(m) = me.upgrade() else { return };
                let roles = roles.borrow_and_update().clone();
                let here = here.borrow_and_update().clone();
                m.reconcile(&roles, &here);
            }
        });
        lock(&self.tasks).push(task);
    }

    /// The device group changed live (`cluster::membership` checked what may): the receivers
    /// admit the new devices, a new traffic group gets its receiver, a removed one's receiver
    /// stops (the reconciler replaces the senders as placement moves).
    pub fn reconfigure(&self, group: &GroupConfig) -> Result<(), MirrorError> {
        let ports = group.mirror_ports();
        self.admitted.set(&peer_names(group, &self.me), false);
        self.admission.set_group(group);
        let mut receivers = lock(&self.receivers);
        receivers.retain(|(tg, _, task)| {
            let keep = ports.contains_key(tg);
            if !keep {
                info!(traffic_group = %tg, "mirroring: receiver stopped (traffic group removed)");
                task.abort();
            }
            keep
        });
        for (tg, port) in &ports {
            if receivers.iter().any(|(t, _, _)| t == tg) {
                continue;
            }
            let (handle, task) = receiver(
                &self.me,
                group,
                &self.files,
                &self.addresses,
                &self.admitted,
                &self.admission,
                &self.store,
                tg,
                *port,
            )?;
            info!(traffic_group = %tg, port, "mirroring: receiver listening (traffic group added)");
            receivers.push((tg.clone(), handle, task));
        }
        drop(receivers);
        self.ports.store(Arc::new(ports));
        self.group.store(Arc::new(group.clone()));
        Ok(())
    }

    /// The traffic groups this device is not in sync for, as they change.
    pub fn unsynced(&self) -> watch::Receiver<BTreeSet<String>> {
        self.unsynced.subscribe()
    }

    fn reconcile(&self, roles: &[Role], here: &BTreeSet<String>) {
        self.admission.set_roles(roles);
        if **self.active.load() != *here {
            self.active.store(Arc::new(here.clone()));
        }
        let group = self.group.load();
        let others = peer_names(&group, &self.me);
        let scope = &group.group;
        let mut want = wanted(
            &self.me,
            &others,
            roles,
            here,
            scope.persistence_mirror_scope,
            scope.mirror_scope,
        );
        let current = self.outbox.senders.load_full();
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
                        None => match self.spawn_sender(tg, peer, *carries) {
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
            self.outbox.senders.store(Arc::new(next));
        }
        // With persistence mirrored to every device, every traffic group not active here is
        // mirrored here; otherwise only those this device is the next-active of.
        let all = scope.persistence_mirror_scope == MirrorScope::AllPeers;
        let expected: BTreeMap<&str, Option<&str>> = roles
            .iter()
            .filter(|t| all || t.next_active.as_deref() == Some(self.me.as_str()))
            .map(|t| (t.traffic_group.as_str(), t.holder.as_deref()))
            .collect();
        let unsynced = self.unsynced_set(here, &expected);
        self.unsynced.send_if_modified(|u| {
            let changed = *u != unsynced;
            *u = unsynced;
            changed
        });
    }

    /// The `expected` traffic groups (name → the device that holds it, if any) not active
    /// here whose state this device does not hold:
    /// - a device holds the traffic group: in sync with its channel — or the holder's own
    ///   channel just ended (the connection to a holder that is dying ends before the group
    ///   declares it dead) and the complete state held is the holder's, for at most
    ///   [`DROPPED_GRACE`] × `dead_after`: nobody can hold a newer copy, and the next-active
    ///   device must not look unsynced to the device that decides the takeover at the instant
    ///   of the death;
    /// - none does (its holder just died): a complete copy, however old (nobody has a newer
    ///   one).
    fn unsynced_set(
        &self,
        here: &BTreeSet<String>,
        expected: &BTreeMap<&str, Option<&str>>,
    ) -> BTreeSet<String> {
        let now = std::time::Instant::now();
        let grace = self.group.load().group.dead_after * DROPPED_GRACE;
        let mut dropped = lock(&self.dropped);
        let mut out = BTreeSet::new();
        for (tg, h, _) in lock(&self.receivers).iter() {
            if here.contains(tg) {
                continue;
            }
            let Some(holder) = expected.get(tg.as_str()) else {
                continue;
            };
            let status = h.status();
            let Some((_, s, connected)) = status.iter().find(|(t, _, _)| t == tg) else {
                out.insert(tg.clone());
                continue;
            };
            let ok = match holder {
                None => s.synced,
                Some(_) if in_sync(s, *connected) => {
                    dropped.remove(tg);
                    true
                }
                Some(holder)
                    if !connected && s.synced && s.synced_from.as_deref() == Some(holder) =>
                {
                    let since = *dropped.entry(tg.clone()).or_insert(now);
                    now.duration_since(since) < grace
                }
                Some(_) => {
                    dropped.remove(tg);
                    false
                }
            };
            if !ok {
                out.insert(tg.clone());
            }
        }
        out
    }

    fn spawn_sender(
        &self,
        tg: &str,
        peer: &str,
        carries: Carries,
    ) -> Result<SenderEntry, MirrorError> {
        let group = self.group.load();
        let dev = group.devices.iter().find(|d| d.name == peer);
        let addrs = dev.map(|d| d.mirror_addresses.clone()).unwrap_or_default();
        let Some(primary) = addrs.first() else {
            return Err(MirrorError::NoMirrorAddress(peer.to_string()));
        };
        let Some(port) = self.ports.load().get(tg).copied() else {
            return Err(MirrorError::UnknownTrafficGroup(tg.to_string()));
        };
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
            group: group.group.name.clone(),
            peer_device: peer.to_string(),
            traffic_group: tg.to_string(),
            primary: SocketAddr::new(*primary, port),
            secondary: addrs.get(1).map(|a| SocketAddr::new(*a, port)),
            local_primary: self.addresses.first().copied(),
            local_secondary: self.addresses.get(1).copied(),
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
            live: self.live.clone(),
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

    /// Called by the device group just before it takes `tg` over, before the floating
    /// addresses move: the mirrored persistence records of `tg` become this device's own (a
    /// stale sender can no longer clear them), and the standby records are handed back for
    /// the data path to rebuild.
    pub fn take_over(&self, tg: &str) -> Vec<Record> {
        let mut set = (**self.active.load()).clone();
        set.insert(tg.to_string());
        self.active.store(Arc::new(set));
        let adopted = self.live.persist.adopt(tg);
        let standby = lock(&self.standby).take(tg);
        let total = standby.len();
        let (ok, refused): (Vec<Record>, Vec<Record>) = standby
            .into_values()
            .partition(|r| self.restorable(tg, r).is_ok());
        if let Some(r) = refused.first() {
            let why = self.restorable(tg, r).err().unwrap_or_default();
            warn!(
                traffic_group = tg,
                refused = refused.len(),
                "mirroring: standby records refused at takeover (the first: {why})"
            );
            self.refused
                .fetch_add(refused.len() as u64, Ordering::Relaxed);
        }
        info!(
            traffic_group = tg,
            persistence_records = adopted,
            standby_records = total,
            restorable = ok.len(),
            "mirroring: taking over the mirrored state"
        );
        ok
    }

    fn restorable(&self, tg: &str, r: &Record) -> Result<(), String> {
        restorable(&self.live.runtime.load().config, &self.group.load(), tg, r)
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
        self.live.persist.disown(tg);
    }
}

impl MirrorTap for Mirroring {
    fn flow_up(&self, tg: &str, kind: RecordKind) {
        let r = Record {
            update_id: 0,
            traffic_group: tg.to_string(),
            kind,
        };
        self.flows.insert(r.key(), r.clone());
        self.outbox.offer(tg, r.kind);
    }

    fn flow_down(&self, tg: &str, key: RecordKey) {
        if self.flows.remove(&key).is_some() {
            self.outbox.offer_delete(tg, key);
        }
    }

    fn release_watch(&self, tg: &str) -> watch::Receiver<u64> {
        self.releases
            .entry(tg.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    fn offer_persist(&self, r: &PersistRecord) {
        self.outbox.offer_persist(r);
    }

    fn persist_refreshed(&self, r: &PersistRecord, previous: u64, timeout: Duration) {
        if r.expiry_ms >= previous.saturating_add(refresh_step(timeout)) {
            self.outbox.offer_persist(r);
        } else {
            self.outbox
                .counters
                .refresh_skipped
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn delete_persist(&self, r: &PersistRecord) {
        if let Some(tg) = &r.traffic_group {
            self.outbox.offer_delete(tg, RecordKey::from(r));
        }
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

/// Whether a peer's mirrored flow or connection of `tg` may be rebuilt here: a peer is
/// trusted with connections, not with what this device binds. Its VIP must be the
/// destination of a virtual server of the same protocol here, and its SNAT address one
/// this device would use for it: `tg`'s floating internal address, a static internal self
/// IP, an explicit `snat` address, or the client's own address when that virtual server
/// has `snat = "none"`.
pub(crate) fn restorable(
    cfg: &crate::config::Config,
    group: &GroupConfig,
    tg: &str,
    r: &Record,
) -> Result<(), String> {
    let (vip, client, snat, udp) = match &r.kind {
        RecordKind::UdpFlow {
            vip, client, snat, ..
        } => (*vip, *client, *snat, true),
        RecordKind::TcpConn {
            vip, client, snat, ..
        } => (*vip, *client, *snat, false),
        RecordKind::Persistence { .. } => return Ok(()),
    };
    let want = if udp {
        crate::config::Protocol::Udp
    } else {
        crate::config::Protocol::Tcp
    };
    let vs = cfg
        .virtual_servers
        .values()
        .find(|v| v.destination == vip && v.protocol == want)
        .ok_or_else(|| format!("no {want:?} virtual server on {vip} here"))?;
    let floating = group
        .traffic_groups
        .iter()
        .find(|t| t.name == tg)
        .map(|t| t.internal_floating.addr());
    let ip = snat.ip();
    let allowed = Some(ip) == floating
        || Some(ip) == cfg.device.internal_address.map(IpAddr::from)
        || Some(ip) == cfg.device.internal_address_v6.map(IpAddr::from)
        || matches!(vs.snat, crate::config::Snat::Explicit(a) if a == ip)
        || (matches!(vs.snat, crate::config::Snat::None) && ip == client.ip());
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "SNAT address {ip} of a connection to {vip} is none this device would use"
        ))
    }
}
