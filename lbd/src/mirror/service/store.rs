//! The receiving side of mirroring: [`MirrorStore`] applies what peers mirror here (into the
//! persistence table, or as standby flows and connections), and [`Snapshots`] gives a
//! channel's resync this device's state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::super::channel::Store;
use super::super::link::SnapshotSource;
use super::super::proto::{Record, RecordKey, RecordKind};
use super::senders::{Carries, Outbox};
use crate::state::Live;
use crate::tables::now_ms;

/// Standby UDP flows and TCP connections, by traffic group and key, with what each traffic
/// group's records take (bounded by [`StandbyLimits`]).
#[derive(Debug, Default)]
pub(super) struct Standby {
    pub records: BTreeMap<String, BTreeMap<RecordKey, Record>>,
    /// Per traffic group: the approximate memory of its records ([`record_bytes`]).
    bytes: BTreeMap<String, usize>,
}

/// How much one traffic group's standby records may hold on a receiver (`[device]`
/// `mirror_max_records` and `mirror_max_megabytes`).
#[derive(Debug, Clone, Copy)]
pub(super) struct StandbyLimits {
    pub records: usize,
    pub bytes: usize,
}

/// The approximate memory a standby record takes: the record, its key, the map's node and
/// the strings and bytes they own.
pub(super) fn record_bytes(r: &Record) -> usize {
    let key_bytes = match &r.kind {
        RecordKind::UdpFlow { key: Some(k), .. } => k.len(),
        _ => 0,
    };
    std::mem::size_of::<Record>()
        + std::mem::size_of::<RecordKey>()
        + 64
        + r.traffic_group.len()
        + key_bytes
}

impl Standby {
    /// Adds `r` (or replaces the record with its key) unless its traffic group would then
    /// hold more than `limits`; false when refused.
    pub fn insert(&mut self, r: Record, limits: StandbyLimits) -> bool {
        let size = record_bytes(&r);
        let recs = self.records.entry(r.traffic_group.clone()).or_default();
        let bytes = self.bytes.entry(r.traffic_group.clone()).or_default();
        let key = r.key();
        let old = recs.get(&key).map(record_bytes);
        let after_bytes = *bytes - old.unwrap_or(0) + size;
        if old.is_none() && recs.len() >= limits.records || after_bytes > limits.bytes {
            return false;
        }
        recs.insert(key, r);
        *bytes = after_bytes;
        true
    }

    /// Removes the record with `key`, whatever its traffic group.
    pub fn remove(&mut self, key: &RecordKey) {
        for (tg, recs) in &mut self.records {
            if let Some(r) = recs.remove(key) {
                if let Some(b) = self.bytes.get_mut(tg) {
                    *b = b.saturating_sub(record_bytes(&r));
                }
            }
        }
    }

    /// Removes `tg`'s records with a key in `keys`.
    pub fn remove_all(&mut self, tg: &str, keys: &BTreeSet<RecordKey>) {
        let (Some(recs), Some(b)) = (self.records.get_mut(tg), self.bytes.get_mut(tg)) else {
            return;
        };
        for k in keys {
            if let Some(r) = recs.remove(k) {
                *b = b.saturating_sub(record_bytes(&r));
            }
        }
    }

    /// Takes every record of `tg` out.
    pub fn take(&mut self, tg: &str) -> BTreeMap<RecordKey, Record> {
        self.bytes.remove(tg);
        self.records.remove(tg).unwrap_or_default()
    }

    /// The memory `tg`'s records take.
    pub fn bytes(&self, tg: &str) -> usize {
        self.bytes.get(tg).copied().unwrap_or(0)
    }
}

pub(super) fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a channel's resync carries: the traffic group's mirrored state here, of the kinds the
/// channel carries.
pub(super) struct Snapshots {
    pub live: Arc<Live>,
    pub flows: Arc<dashmap::DashMap<RecordKey, Record>>,
    pub carries: Carries,
}

impl SnapshotSource for Snapshots {
    fn snapshot(&self, traffic_group: &str) -> Vec<Record> {
        let rt = self.live.runtime.load();
        let persistence = self.carries.persistence;
        let mirrored: BTreeSet<&str> = rt
            .config
            .persistence
            .iter()
            .filter(|(_, p)| p.mirror)
            .map(|(n, _)| n.as_str())
            .collect();
        let now = now_ms();
        let mut out: Vec<Record> = self
            .live
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
                kind: RecordKind::from(r),
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
pub(super) struct MirrorStore {
    pub live: Arc<Live>,
    /// Where a record of this device's own that is newer than a peer's copy goes back out.
    pub outbox: Arc<Outbox>,
    pub active: Arc<ArcSwap<BTreeSet<String>>>,
    pub standby: Arc<Mutex<Standby>>,
    /// Per traffic group with a resync in progress: the last persistence update id given out
    /// when it began (mirrored records of the group with an id at or below it, not replaced
    /// by the resync, are dropped at its end), and the standby keys it has not carried yet.
    pub resyncs: BTreeMap<String, (u64, BTreeSet<RecordKey>)>,
    /// Persistence records refused on receipt (a profile this device does not have).
    pub refused: Arc<std::sync::atomic::AtomicU64>,
    /// Standby records refused because their traffic group held its limit.
    pub over_limit: Arc<std::sync::atomic::AtomicU64>,
    /// When the last "over the limit" warning was logged.
    pub over_limit_logged: Option<std::time::Instant>,
}

/// How often the store warns that a traffic group is over its standby limits.
const OVER_LIMIT_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl MirrorStore {
    fn ours(&self, tg: &str) -> bool {
        self.active.load().contains(tg)
    }

    fn limits(&self) -> StandbyLimits {
        let rt = self.live.runtime.load();
        let d = &rt.config.device;
        StandbyLimits {
            records: d.mirror_max_records,
            bytes: d.mirror_max_megabytes.saturating_mul(1 << 20),
        }
    }
}

impl Store for MirrorStore {
    fn upsert(&mut self, r: Record) {
        if self.ours(&r.traffic_group) {
            return;
        }
        match &r.kind {
            RecordKind::Persistence { .. } => {
                let Some(mut incoming) = r.to_persist(self.live.ids.next()) else {
                    return;
                };
                // A peer is trusted with records, not with their lifetime: the expiry is capped
                // at now + the profile's timeout here (a `u64::MAX` expiry would never be swept
                // and would beat every record of this device's own), and a profile this device
                // does not have gets nothing.
                let timeout = {
                    let rt = self.live.runtime.load();
                    rt.config
                        .persistence
                        .get(&incoming.profile)
                        .map(|p| p.timeout)
                };
                let Some(timeout) = timeout else {
                    self.refused
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(profile = %incoming.profile, "mirrored record of an unknown profile refused");
                    return;
                };
                let cap =
                    now_ms().saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
                incoming.expiry_ms = incoming.expiry_ms.min(cap);
                let refused = self.live.persist.insert_mirrored(incoming.clone());
                // This device's own record is newer (used here since, the refresh not sent
                // yet): the peers must have it, or they would keep the older copy under
                // another traffic group, which that group's next resync may drop. Only when
                // strictly newer: the peer then takes it, so this cannot go back and forth.
                if let Err(kept) = refused {
                    let active_here = kept.traffic_group.as_deref().is_some_and(|t| self.ours(t));
                    if !kept.mirrored && active_here && kept.newer(&incoming) {
                        self.outbox.offer_persist(&kept);
                    }
                }
            }
            RecordKind::UdpFlow { .. } | RecordKind::TcpConn { .. } => {
                if let Some((_, stale)) = self.resyncs.get_mut(&r.traffic_group) {
                    stale.remove(&r.key());
                }
                let limits = self.limits();
                let tg = r.traffic_group.clone();
                let mut standby = lock(&self.standby);
                if !standby.insert(r, limits) {
                    let (held, bytes) = (
                        standby.records.get(&tg).map_or(0, BTreeMap::len),
                        standby.bytes(&tg),
                    );
                    drop(standby);
                    self.over_limit
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let now = std::time::Instant::now();
                    if self
                        .over_limit_logged
                        .is_none_or(|t| now.duration_since(t) >= OVER_LIMIT_LOG_EVERY)
                    {
                        self.over_limit_logged = Some(now);
                        tracing::warn!(traffic_group = %tg, held, bytes,
                            max_records = limits.records, max_bytes = limits.bytes,
                            "mirroring: standby record refused, the traffic group holds its limit \
                             (device.mirror_max_records / mirror_max_megabytes)");
                    }
                }
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
                self.live
                    .persist
                    .remove_if(profile, scope, key, |r| r.mirrored);
            }
            RecordKey::UdpFlow { .. } | RecordKey::TcpConn { .. } => {
                lock(&self.standby).remove(key);
            }
        }
    }

    fn resync_begin(&mut self, tg: &str) {
        let mark = self.live.ids.last();
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
        self.live.persist.delete(|r| {
            r.mirrored && r.traffic_group.as_deref() == Some(tg) && r.update_id <= mark
        });
        lock(&self.standby).remove_all(tg, &stale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::state::Runtime;
    use crate::tables::{refresh_step, PersistRecord};
    use std::time::Duration;

    fn live() -> Arc<Live> {
        let config = Config::from_toml(CFG, "t").unwrap();
        Arc::new(Live::new(Runtime::build(Arc::new(config), None)))
    }

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
    fn own(live: &Live, tg: &str, key: &str, expiry_ms: u64) -> PersistRecord {
        PersistRecord {
            profile: "src".into(),
            scope: "web".into(),
            key: key.into(),
            pool: "web".into(),
            member: "127.0.0.1:18081".parse().unwrap(),
            virtual_server: "web".into(),
            traffic_group: Some(tg.into()),
            update_id: live.ids.next(),
            expiry_ms,
            mirrored: false,
        }
    }

    #[test]
    fn the_store_applies_peers_state_but_not_for_groups_active_here() {
        let live = live();
        let active = Arc::new(ArcSwap::from_pointee(BTreeSet::from(["tg-3".to_string()])));
        let standby = Arc::new(Mutex::new(Standby::default()));
        let mut store = MirrorStore {
            live: live.clone(),
            outbox: Arc::default(),
            active: active.clone(),
            standby: standby.clone(),
            resyncs: BTreeMap::new(),
            refused: Arc::default(),
            over_limit: Arc::default(),
            over_limit_logged: None,
        };
        let far = now_ms() + 60_000;
        store.upsert(persist("tg-2", "10.0.0.1/32", "127.0.0.1:18081", far));
        store.upsert(flow("tg-2", 1000));
        // A group active here: ignored (a stale sender must not overwrite the owner's state).
        store.upsert(persist("tg-3", "10.0.0.3/32", "127.0.0.1:18081", far));
        store.upsert(flow("tg-3", 1003));
        let recs = live.persist.records(|_| true);
        assert_eq!(recs.len(), 1);
        assert!(recs[0].mirrored);
        assert_eq!(recs[0].traffic_group.as_deref(), Some("tg-2"));
        assert_eq!(lock(&standby).records["tg-2"].len(), 1);
        assert!(!lock(&standby).records.contains_key("tg-3"));
        // Deletes: a flow by its key, a persistence record only when mirrored.
        live.persist.insert(own(&live, "tg-2", "10.0.0.9/32", far));
        store.upsert(flow("tg-2", 1001));
        store.delete(&flow("tg-2", 1001).key());
        assert_eq!(lock(&standby).records["tg-2"].len(), 1);
        store.delete(&persist("tg-2", "10.0.0.9/32", "127.0.0.1:18081", 0).key());
        assert_eq!(
            live.persist.len(),
            2,
            "an own record is not deleted by a peer"
        );
    }

    /// A peer cannot make a record outlive the profile's timeout (a `u64::MAX` expiry would
    /// never be swept and would beat this device's own records) nor bring one for a profile
    /// this device does not have.
    #[test]
    fn a_mirrored_expiry_is_capped_and_an_unknown_profile_refused() {
        let live = live();
        let mut store = MirrorStore {
            live: live.clone(),
            outbox: Arc::default(),
            active: Arc::new(ArcSwap::from_pointee(BTreeSet::new())),
            standby: Arc::new(Mutex::new(Standby::default())),
            resyncs: BTreeMap::new(),
            refused: Arc::default(),
            over_limit: Arc::default(),
            over_limit_logged: None,
        };
        let before = now_ms();
        store.upsert(persist("tg-2", "10.0.0.1/32", "127.0.0.1:18081", u64::MAX));
        let recs = live.persist.records(|_| true);
        assert_eq!(recs.len(), 1);
        let timeout = live.runtime.load().config.persistence["src"]
            .timeout
            .as_millis() as u64;
        assert!(
            recs[0].expiry_ms >= before + timeout && recs[0].expiry_ms <= now_ms() + timeout,
            "{} not capped at now + {timeout}",
            recs[0].expiry_ms
        );
        // A profile this device does not have: refused and counted.
        let mut other = persist("tg-2", "10.0.0.2/32", "127.0.0.1:18081", 1);
        if let RecordKind::Persistence { profile, .. } = &mut other.kind {
            *profile = "nope".into();
        }
        store.upsert(other);
        assert_eq!(live.persist.len(), 1);
        assert_eq!(store.refused.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    /// A flow or connection a peer mirrored is rebuilt only with a SNAT address this device
    /// would use for that virtual server, and only for a virtual server it has.
    #[test]
    fn a_mirrored_flow_with_a_foreign_snat_address_or_vip_is_not_restored() {
        let live = live();
        let cfg = live.runtime.load().config.clone();
        let group =
            crate::cluster::config::GroupConfig::from_toml(crate::cluster::config::SEED, "g")
                .unwrap();
        let udp = |snat: &str, vip: &str| Record {
            update_id: 0,
            traffic_group: "tg-2".into(),
            kind: RecordKind::UdpFlow {
                client: "192.0.2.1:5000".parse().unwrap(),
                vip: vip.parse().unwrap(),
                member: "127.0.0.1:18081".parse().unwrap(),
                snat: snat.parse().unwrap(),
                last_seen_ms: 1,
                key: None,
            },
        };
        let tcp = |snat: &str| Record {
            traffic_group: "tg-2".into(),
            kind: match udp(snat, "127.0.0.1:18080").kind {
                RecordKind::UdpFlow {
                    client,
                    vip,
                    member,
                    snat,
                    ..
                } => RecordKind::TcpConn {
                    client,
                    vip,
                    member,
                    snat,
                    client_side: Default::default(),
                    server_side: Default::default(),
                    taken_ms: 1,
                },
                other => other,
            },
            update_id: 0,
        };
        let ok = |r: &Record| super::super::restorable(&cfg, &group, "tg-2", r);
        // The web virtual server is TCP with snat = "none": the client's own address only.
        assert!(ok(&tcp("192.0.2.1:40000")).is_ok());
        let e = ok(&tcp("10.9.9.9:40000")).unwrap_err();
        assert!(e.contains("10.9.9.9"), "{e}");
        // tg-2's floating internal address is always this device's to use for tg-2.
        assert!(ok(&tcp("10.1.1.3:40000")).is_ok());
        assert!(
            ok(&tcp("10.1.1.4:40000")).is_err(),
            "tg-3's address for tg-2"
        );
        // No UDP virtual server on that VIP here.
        let e = ok(&udp("10.1.1.3:40000", "127.0.0.1:18080")).unwrap_err();
        assert!(e.contains("no Udp virtual server"), "{e}");
    }

    /// A resync replaces a group's mirrored state without a gap: while it runs, every record
    /// held before still serves (a client's next connection finds its record); at its end what
    /// it did not carry is gone, and a record of this device's own stays.
    #[test]
    fn a_resync_replaces_the_mirrored_state_without_emptying_it_first() {
        let live = live();
        let standby = Arc::new(Mutex::new(Standby::default()));
        let mut store = MirrorStore {
            live: live.clone(),
            outbox: Arc::default(),
            active: Arc::new(ArcSwap::from_pointee(BTreeSet::new())),
            standby: standby.clone(),
            resyncs: BTreeMap::new(),
            refused: Arc::default(),
            over_limit: Arc::default(),
            over_limit_logged: None,
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
        live.persist.insert(own(&live, "tg-2", "10.0.0.9/32", far));
        store.resync_begin("tg-2");
        assert_eq!(live.persist.len(), 5, "nothing goes when a resync begins");
        assert_eq!(lock(&standby).records["tg-2"].len(), 3);
        // The resync carries 10.0.0.1 and 10.0.0.7, and flow 1001.
        store.upsert(persist("tg-2", "10.0.0.1/32", "127.0.0.1:18082", far));
        assert_eq!(live.persist.len(), 5);
        store.upsert(persist("tg-2", "10.0.0.7/32", "127.0.0.1:18081", far));
        store.upsert(flow("tg-2", 1001));
        store.resync_end("tg-2");
        let keys: BTreeSet<String> = live
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
        assert_eq!(live.persist.len(), 4);
    }

    /// A peer cannot make this device hold more standby records of a traffic group than
    /// `mirror_max_records` / `mirror_max_megabytes` allow: more are refused and counted; a
    /// record that replaces one it holds still goes in, and a delete makes room again.
    #[test]
    fn standby_records_are_capped_per_traffic_group() {
        let config = Config::from_toml(
            &CFG.replace(
                "name = \"c\"",
                "name = \"c\"\nmirror_max_records = 3\nmirror_max_megabytes = 1",
            ),
            "t",
        )
        .unwrap();
        let live = Arc::new(Live::new(Runtime::build(Arc::new(config), None)));
        let standby = Arc::new(Mutex::new(Standby::default()));
        let over = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut store = MirrorStore {
            live,
            outbox: Arc::default(),
            active: Arc::new(ArcSwap::from_pointee(BTreeSet::new())),
            standby: standby.clone(),
            resyncs: BTreeMap::new(),
            refused: Arc::default(),
            over_limit: over.clone(),
            over_limit_logged: None,
        };
        for port in 1000..1010 {
            store.upsert(flow("tg-2", port));
        }
        store.upsert(flow("tg-1", 2000));
        let held = |tg: &str| lock(&standby).records.get(tg).map_or(0, BTreeMap::len);
        assert_eq!(held("tg-2"), 3);
        assert_eq!(held("tg-1"), 1, "the limit is per traffic group");
        assert_eq!(over.load(std::sync::atomic::Ordering::Relaxed), 7);
        // A replacement of a held record goes in.
        let mut newer = flow("tg-2", 1001);
        if let RecordKind::UdpFlow { last_seen_ms, .. } = &mut newer.kind {
            *last_seen_ms = 99;
        }
        store.upsert(newer.clone());
        assert_eq!(lock(&standby).records["tg-2"][&newer.key()], newer);
        assert_eq!(over.load(std::sync::atomic::Ordering::Relaxed), 7);
        // A delete makes room.
        store.delete(&flow("tg-2", 1000).key());
        store.upsert(flow("tg-2", 1005));
        assert_eq!(held("tg-2"), 3);
        assert!(lock(&standby).records["tg-2"].contains_key(&flow("tg-2", 1005).key()));
        // The byte limit: flows with 4 KiB keys, 1 MiB allowed, under 300 fit.
        let big = |port: u16| {
            let mut r = flow("tg-3", port);
            if let RecordKind::UdpFlow { key, .. } = &mut r.kind {
                *key = Some(vec![7; 4096]);
            }
            r
        };
        let limits = StandbyLimits {
            records: 1_000_000,
            bytes: 1 << 20,
        };
        let mut s = Standby::default();
        let taken = (0..1000).take_while(|p| s.insert(big(*p), limits)).count();
        assert!(
            (200..300).contains(&taken),
            "{taken} records of 4 KiB fit in 1 MiB"
        );
        assert!(s.bytes("tg-3") <= 1 << 20);
        let before = s.bytes("tg-3");
        s.remove(&big(0).key());
        assert_eq!(s.bytes("tg-3"), before - record_bytes(&big(0)));
        assert_eq!(s.take("tg-3").len(), taken - 1);
        assert_eq!(s.bytes("tg-3"), 0);
    }

    #[test]
    fn refresh_step_is_an_eighth_of_the_timeout_at_least_a_second() {
        assert_eq!(refresh_step(Duration::from_secs(300)), 37_500);
        assert_eq!(refresh_step(Duration::from_secs(4)), 1000);
    }
}
