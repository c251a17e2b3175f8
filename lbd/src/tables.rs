//! The connection and persistence tables.
//!
//! Records are plain, serializable data — owning traffic group, update id, absolute expiry in
//! Unix milliseconds — so that mirroring can ship them to a peer device as they are
//! (docs/architecture.md, "Mirroring"). The live side of a connection (byte counters, last activity) is kept in atomics next to
//! its record and folded in when a record is taken.
//!
//! This module does no I/O.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::config::{Persistence, PersistenceType, Protocol};

pub use crate::sys::now_ms;

/// A source of update ids: strictly increasing per device, shared by every table.
#[derive(Debug, Default)]
pub struct UpdateIds(AtomicU64);

impl UpdateIds {
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
    pub fn last(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// One proxied TCP connection or UDP flow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnRecord {
    pub id: u64,
    pub protocol: Protocol,
    pub virtual_server: String,
    /// The client's address and port.
    pub client: SocketAddr,
    /// VIP:port the client reached.
    pub vip: SocketAddr,
    pub pool: String,
    pub member: SocketAddr,
    /// Our side of the member connection (the SNAT address and port).
    pub snat: SocketAddr,
    /// Owning traffic group; None until traffic groups exist.
    pub traffic_group: Option<String>,
    pub update_id: u64,
    pub created_ms: u64,
    /// When the connection expires if nothing more is sent either way.
    pub expiry_ms: u64,
    /// Client → member.
    pub bytes_in: u64,
    /// Member → client.
    pub bytes_out: u64,
}

/// A connection in the table: its record and its live counters.
#[derive(Debug)]
pub struct LiveConn {
    base: ConnRecord,
    idle_ms: u64,
    last_ms: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl LiveConn {
    /// Marks traffic now.
    pub fn touch(&self, now_ms: u64) {
        self.last_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn last_ms(&self) -> u64 {
        self.last_ms.load(Ordering::Relaxed)
    }

    pub fn id(&self) -> u64 {
        self.base.id
    }

    /// The record as of now.
    pub fn record(&self) -> ConnRecord {
        let mut r = self.base.clone();
        r.expiry_ms = self.last_ms().saturating_add(self.idle_ms);
        r.bytes_in = self.bytes_in.load(Ordering::Relaxed);
        r.bytes_out = self.bytes_out.load(Ordering::Relaxed);
        r
    }
}

/// Every connection and flow lbd proxies, by id.
#[derive(Debug, Default)]
pub struct ConnTable {
    map: DashMap<u64, Arc<LiveConn>>,
    next_id: AtomicU64,
}

/// Removes its connection from the table when dropped (so no path can leak an entry).
#[derive(Debug)]
pub struct ConnGuard<'a> {
    table: &'a ConnTable,
    pub conn: Arc<LiveConn>,
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        self.table.map.remove(&self.conn.base.id);
    }
}

/// What a new connection's record is made of.
#[derive(Debug, Clone)]
pub struct NewConn<'a> {
    pub protocol: Protocol,
    pub virtual_server: &'a str,
    pub client: SocketAddr,
    pub vip: SocketAddr,
    pub pool: &'a str,
    pub member: SocketAddr,
    pub snat: SocketAddr,
    pub traffic_group: Option<&'a str>,
    pub idle: Duration,
}

impl ConnTable {
    /// Adds a connection; it leaves the table when the guard is dropped.
    pub fn insert(&self, c: NewConn<'_>, ids: &UpdateIds) -> ConnGuard<'_> {
        let live = Arc::new(self.live(c, ids));
        self.map.insert(live.base.id, live.clone());
        ConnGuard {
            table: self,
            conn: live,
        }
    }

    /// Adds a connection that is removed explicitly with [`ConnTable::remove`] (UDP flows, whose
    /// lifetime is not one task's).
    pub fn insert_shared(&self, c: NewConn<'_>, ids: &UpdateIds) -> Arc<LiveConn> {
        let live = Arc::new(self.live(c, ids));
        self.map.insert(live.base.id, live.clone());
        live
    }

    fn live(&self, c: NewConn<'_>, ids: &UpdateIds) -> LiveConn {
        let now = now_ms();
        let idle_ms = c.idle.as_millis() as u64;
        LiveConn {
            base: ConnRecord {
                id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
                protocol: c.protocol,
                virtual_server: c.virtual_server.to_string(),
                client: c.client,
                vip: c.vip,
                pool: c.pool.to_string(),
                member: c.member,
                snat: c.snat,
                traffic_group: c.traffic_group.map(str::to_string),
                update_id: ids.next(),
                created_ms: now,
                expiry_ms: now.saturating_add(idle_ms),
                bytes_in: 0,
                bytes_out: 0,
            },
            idle_ms,
            last_ms: AtomicU64::new(now),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }

    pub fn remove(&self, id: u64) {
        self.map.remove(&id);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Records of the connections that `filter` keeps, sorted by id, at most `limit`.
    pub fn records(&self, limit: usize, filter: impl Fn(&ConnRecord) -> bool) -> Vec<ConnRecord> {
        let mut out: Vec<ConnRecord> = self
            .map
            .iter()
            .map(|e| e.value().record())
            .filter(|r| filter(r))
            .collect();
        out.sort_by_key(|r| r.id);
        out.truncate(limit);
        out
    }
}

/// A persistence record: which member a key sticks to, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistRecord {
    pub profile: String,
    /// The virtual server the record belongs to, or `*` when the profile matches across
    /// virtual servers.
    pub scope: String,
    /// The key as text (e.g. `10.0.0.0/24`).
    pub key: String,
    pub pool: String,
    pub member: SocketAddr,
    /// The virtual server that created it.
    pub virtual_server: String,
    pub traffic_group: Option<String>,
    pub update_id: u64,
    pub expiry_ms: u64,
    /// Received from the mirror of the traffic group's active device, not created here.
    #[serde(default)]
    pub mirrored: bool,
}

impl PersistRecord {
    /// Whether this record is newer than `other` (the same key): it expires later, or at the
    /// same millisecond and names the greater traffic group. A total order, the same on every
    /// device, so that copies of one key converge whatever order they arrive in.
    pub fn newer(&self, other: &PersistRecord) -> bool {
        (self.expiry_ms, &self.traffic_group) > (other.expiry_ms, &other.traffic_group)
    }

    /// The ownership rule for a record a connection here just used, the connection belonging
    /// to traffic group `tg` (None: no traffic group is active here, between a release and a
    /// takeover; the record then stays whose it is). A record a peer mirrored here, or one of
    /// another traffic group (this device holds several while it stands in for a failed one),
    /// becomes this device's record in `tg`: the client's flows reach every device, so the
    /// device that would take `tg` over must know where the client sticks. Returns whether
    /// the record changed hands (it must then go to `tg`'s peers at once).
    pub fn take_for(&mut self, tg: Option<&str>) -> bool {
        let Some(tg) = tg else { return false };
        if self.mirrored || self.traffic_group.as_deref() != Some(tg) {
            self.mirrored = false;
            self.traffic_group = Some(tg.to_string());
            true
        } else {
            false
        }
    }
}

/// The smallest expiry extension worth telling a peer about: an eighth of the profile's
/// timeout, at least one second (a busy record costs one mirror update per step, not one per
/// connection; the peer's copy may expire up to one step early).
pub fn refresh_step(timeout: Duration) -> u64 {
    (timeout.as_millis() as u64 / 8).max(1000)
}

type PersistKey = (String, String, String);

/// Persistence records by (profile, scope, key).
#[derive(Debug, Default)]
pub struct PersistTable {
    map: DashMap<PersistKey, PersistRecord>,
    /// Records evicted by [`PersistTable::enforce_caps`] since start, per profile.
    evicted: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

/// The key a profile derives from a connection, and the scope it lives in.
pub fn persist_key(
    profile: &Persistence,
    vs_name: &str,
    client: IpAddr,
    vip: IpAddr,
) -> (String, String) {
    let addr = match profile.kind {
        PersistenceType::DestinationAddress => vip,
        // Plugin-backed types come here for their source-address fallback.
        _ => client,
    };
    let net = match addr {
        IpAddr::V4(a) => ipnet::IpNet::V4(
            ipnet::Ipv4Net::new(a, profile.mask)
                .expect("mask validated")
                .trunc(),
        ),
        IpAddr::V6(a) => ipnet::IpNet::V6(
            ipnet::Ipv6Net::new(a, profile.mask_v6)
                .expect("mask validated")
                .trunc(),
        ),
    };
    let scope = if profile.match_across_virtuals {
        "*".to_string()
    } else {
        vs_name.to_string()
    };
    (scope, net.to_string())
}

/// The record scope and key of a plugin's key bytes: the text when it is printable UTF-8,
/// else `hex:` and the bytes in hex.
pub fn plugin_key(profile: &Persistence, vs_name: &str, key: &[u8]) -> (String, String) {
    let scope = if profile.match_across_virtuals {
        "*".to_string()
    } else {
        vs_name.to_string()
    };
    let text = match std::str::from_utf8(key) {
        Ok(t) if !t.is_empty() && !t.chars().any(char::is_control) => t.to_string(),
        _ => {
            let mut h = String::with_capacity(4 + key.len() * 2);
            h.push_str("hex:");
            for b in key {
                h.push_str(&format!("{b:02x}"));
            }
            h
        }
    };
    (scope, text)
}

impl PersistTable {
    /// The member `key` sticks to, if a live record says so and `usable(member)`; the record's
    /// expiry is pushed out by `timeout` and `refreshed(record, previous expiry)` is called
    /// with the refreshed record (mirroring re-homes a peer's record and decides whether its
    /// own peer must hear of it). An expired record is removed.
    pub fn lookup(
        &self,
        (profile, scope, key): (&str, &str, &str),
        timeout: Duration,
        now_ms: u64,
        ids: &UpdateIds,
        usable: impl Fn(&str, SocketAddr) -> bool,
        refreshed: impl FnOnce(&mut PersistRecord, u64),
    ) -> Option<SocketAddr> {
        let k = (profile.to_string(), scope.to_string(), key.to_string());
        let mut expired = false;
        let found = match self.map.get_mut(&k) {
            Some(mut r) if r.expiry_ms > now_ms => {
                if usable(&r.pool, r.member) {
                    let previous = r.expiry_ms;
                    r.expiry_ms = now_ms + timeout.as_millis() as u64;
                    r.update_id = ids.next();
                    refreshed(&mut r, previous);
                    Some(r.member)
                } else {
                    None
                }
            }
            Some(_) => {
                expired = true;
                None
            }
            None => None,
        };
        if expired {
            self.map.remove_if(&k, |_, r| r.expiry_ms <= now_ms);
        }
        found
    }

    /// Creates or replaces a record.
    pub fn insert(&self, record: PersistRecord) {
        let k = (
            record.profile.clone(),
            record.scope.clone(),
            record.key.clone(),
        );
        self.map.insert(k, record);
    }

    /// Applies a record a peer mirrored: it replaces the record under its key if that one is
    /// a mirrored record of the same traffic group (the same source), or if it is newer by
    /// [`PersistRecord::newer`] (the key was used there after it was used here). That order is
    /// the same on every device, so two devices that used one key within the same millisecond
    /// end up with the same record everywhere, whichever copy arrives first. Returns the record
    /// kept when it was not applied (the caller tells the peers when that one is newer and
    /// its own).
    pub fn insert_mirrored(&self, record: PersistRecord) -> Result<(), Box<PersistRecord>> {
        use dashmap::mapref::entry::Entry;
        let k = (
            record.profile.clone(),
            record.scope.clone(),
            record.key.clone(),
        );
        match self.map.entry(k) {
            Entry::Vacant(v) => {
                v.insert(record);
                Ok(())
            }
            Entry::Occupied(mut o) => {
                let old = o.get();
                let same_source = old.mirrored && old.traffic_group == record.traffic_group;
                if same_source || record.newer(old) {
                    o.insert(record);
                    Ok(())
                } else {
                    Err(Box::new(old.clone()))
                }
            }
        }
    }

    /// Evicts, in every profile holding more records than `caps` allows it, those that
    /// expire first (ties: the least recently updated), down to its cap; returns how many went, per profile.
    /// Profiles without a cap are left alone.
    pub fn enforce_caps(
        &self,
        caps: &std::collections::HashMap<String, usize>,
    ) -> Vec<(String, usize)> {
        let mut counts: std::collections::HashMap<String, usize> = Default::default();
        for e in self.map.iter() {
            *counts.entry(e.key().0.clone()).or_default() += 1;
        }
        let mut out = Vec::new();
        for (profile, n) in counts {
            let Some(&cap) = caps.get(&profile) else {
                continue;
            };
            if n <= cap {
                continue;
            }
            let mut victims: Vec<(u64, u64, PersistKey)> = self
                .map
                .iter()
                .filter(|e| e.key().0 == profile)
                .map(|e| (e.value().expiry_ms, e.value().update_id, e.key().clone()))
                .collect();
            let excess = victims.len().saturating_sub(cap);
            if excess == 0 {
                continue;
            }
            victims.select_nth_unstable(excess - 1);
            let mut gone = 0;
            for (_, _, k) in victims.into_iter().take(excess) {
                if self.map.remove(&k).is_some() {
                    gone += 1;
                }
            }
            *self
                .evicted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(profile.clone())
                .or_default() += gone as u64;
            out.push((profile, gone));
        }
        out
    }

    /// Records evicted by [`PersistTable::enforce_caps`] since start, per profile.
    pub fn evicted(&self) -> std::collections::BTreeMap<String, u64> {
        self.evicted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Removes expired records; returns how many.
    pub fn sweep(&self, now_ms: u64) -> usize {
        let before = self.map.len();
        self.map.retain(|_, r| r.expiry_ms > now_ms);
        before - self.map.len()
    }

    /// Removes the records `filter` selects; returns them.
    pub fn delete(&self, filter: impl Fn(&PersistRecord) -> bool) -> Vec<PersistRecord> {
        let mut gone = Vec::new();
        self.map.retain(|_, r| {
            if filter(r) {
                gone.push(r.clone());
                false
            } else {
                true
            }
        });
        gone
    }

    /// Removes the record under (profile, scope, key) if `filter` says so; returns it.
    pub fn remove_if(
        &self,
        profile: &str,
        scope: &str,
        key: &str,
        filter: impl FnOnce(&PersistRecord) -> bool,
    ) -> Option<PersistRecord> {
        self.map
            .remove_if(
                &(profile.to_string(), scope.to_string(), key.to_string()),
                |_, r| filter(r),
            )
            .map(|(_, r)| r)
    }

    /// This device's own records of traffic group `tg` become mirrored ones (it gave the
    /// traffic group up: they are its new holder's now, and that holder's resync replaces
    /// them); returns how many.
    pub fn disown(&self, tg: &str) -> usize {
        let mut n = 0;
        for mut r in self.map.iter_mut() {
            if !r.mirrored && r.traffic_group.as_deref() == Some(tg) {
                r.mirrored = true;
                n += 1;
            }
        }
        n
    }

    /// The records of traffic group `tg` mirrored from a peer become this device's own (it
    /// takes the traffic group over); returns how many.
    pub fn adopt(&self, tg: &str) -> usize {
        let mut n = 0;
        for mut r in self.map.iter_mut() {
            if r.mirrored && r.traffic_group.as_deref() == Some(tg) {
                r.mirrored = false;
                n += 1;
            }
        }
        n
    }

    /// How many records `filter` selects.
    pub fn count(&self, filter: impl Fn(&PersistRecord) -> bool) -> usize {
        self.map.iter().filter(|r| filter(r.value())).count()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Records sorted by (profile, scope, key).
    pub fn records(&self, filter: impl Fn(&PersistRecord) -> bool) -> Vec<PersistRecord> {
        let mut out: Vec<PersistRecord> = self
            .map
            .iter()
            .map(|e| e.value().clone())
            .filter(|r| filter(r))
            .collect();
        out.sort_by(|a, b| (&a.profile, &a.scope, &a.key).cmp(&(&b.profile, &b.scope, &b.key)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(kind: PersistenceType, mask: u8, across: bool) -> Persistence {
        Persistence {
            kind,
            mask,
            mask_v6: 64,
            timeout: Duration::from_secs(10),
            max_records: 100,
            match_across_virtuals: across,
            mirror: false,
            plugin: None,
            plugin_config: String::new(),
            fallback: None,
            consistent_hash: false,
        }
    }

    #[test]
    fn plugin_keys_are_text_when_printable_else_hex() {
        let mut p = profile(PersistenceType::Sip, 32, false);
        assert_eq!(
            plugin_key(&p, "sip-vs", b"a84b4c76e66710@pc33"),
            ("sip-vs".to_string(), "a84b4c76e66710@pc33".to_string())
        );
        p.match_across_virtuals = true;
        assert_eq!(plugin_key(&p, "x", &[0x16, 0x03, 0xff]).1, "hex:1603ff");
        assert_eq!(plugin_key(&p, "x", b"").1, "hex:");
        assert_eq!(plugin_key(&p, "x", b"").0, "*");
    }

    #[test]
    fn keys_are_masked_and_scoped() {
        let p = profile(PersistenceType::SourceAddress, 24, false);
        let c: IpAddr = "192.0.2.77".parse().unwrap();
        let v: IpAddr = "30.1.1.10".parse().unwrap();
        assert_eq!(
            persist_key(&p, "web", c, v),
            ("web".into(), "192.0.2.0/24".into())
        );
        let p6 = profile(PersistenceType::SourceAddress, 24, true);
        let c6: IpAddr = "2001:db8:1:2:3::7".parse().unwrap();
        assert_eq!(
            persist_key(&p6, "web", c6, v),
            ("*".into(), "2001:db8:1:2::/64".into())
        );
        let d = profile(PersistenceType::DestinationAddress, 32, false);
        assert_eq!(persist_key(&d, "web", c, v).1, "30.1.1.10/32");
    }

    fn record(key: &str, member: &str, expiry_ms: u64) -> PersistRecord {
        PersistRecord {
            profile: "src".into(),
            scope: "web".into(),
            key: key.into(),
            pool: "p".into(),
            member: member.parse().unwrap(),
            virtual_server: "web".into(),
            traffic_group: None,
            update_id: 1,
            expiry_ms,
            mirrored: false,
        }
    }

    #[test]
    fn lookup_refreshes_expires_and_respects_usability() {
        let t = PersistTable::default();
        let ids = UpdateIds::default();
        t.insert(record("10.0.0.0/24", "10.1.1.50:80", 1_000));
        let ttl = Duration::from_millis(500);
        let m = t.lookup(
            ("src", "web", "10.0.0.0/24"),
            ttl,
            900,
            &ids,
            |_, _| true,
            |_, _| {},
        );
        assert_eq!(m, Some("10.1.1.50:80".parse().unwrap()));
        // Refreshed to 900 + 500.
        assert_eq!(t.records(|_| true)[0].expiry_ms, 1_400);
        assert_eq!(t.records(|_| true)[0].update_id, 1);
        // Not usable: no answer, record kept.
        assert_eq!(
            t.lookup(
                ("src", "web", "10.0.0.0/24"),
                ttl,
                1_000,
                &ids,
                |_, _| false,
                |_, _| {}
            ),
            None
        );
        assert_eq!(t.len(), 1);
        // Other scope: nothing.
        assert_eq!(
            t.lookup(
                ("src", "api", "10.0.0.0/24"),
                ttl,
                1_000,
                &ids,
                |_, _| true,
                |_, _| {}
            ),
            None
        );
        // Expired: removed.
        assert_eq!(
            t.lookup(
                ("src", "web", "10.0.0.0/24"),
                ttl,
                1_400,
                &ids,
                |_, _| true,
                |_, _| {}
            ),
            None
        );
        assert!(t.is_empty());
    }

    #[test]
    fn a_mirrored_record_does_not_replace_a_newer_one_from_elsewhere() {
        let t = PersistTable::default();
        let mut mine = record("10.0.0.0/24", "10.1.1.50:80", 2_000);
        mine.traffic_group = Some("tg-2".into());
        t.insert(mine);
        let mut stale = record("10.0.0.0/24", "10.1.1.51:80", 1_500);
        stale.traffic_group = Some("tg-1".into());
        stale.mirrored = true;
        let kept = t.insert_mirrored(stale.clone()).unwrap_err();
        assert_eq!((kept.expiry_ms, kept.mirrored), (2_000, false));
        assert_eq!(t.records(|_| true)[0].member.port(), 80);
        assert_eq!(t.records(|_| true)[0].expiry_ms, 2_000);
        // A copy as old as this device's own record: the greater traffic group wins, here as
        // on every other device (tg-2 over tg-1, whichever arrived first).
        stale.expiry_ms = 2_000;
        assert!(t.insert_mirrored(stale.clone()).is_err());
        let mut other = t.records(|_| true)[0].clone();
        other.mirrored = true;
        other.traffic_group = Some("tg-3".into());
        assert!(t.insert_mirrored(other).is_ok());
        assert_eq!(
            t.records(|_| true)[0].traffic_group.as_deref(),
            Some("tg-3")
        );
        let mut mine = record("10.0.0.0/24", "10.1.1.50:80", 2_000);
        mine.traffic_group = Some("tg-2".into());
        t.insert(mine);
        let here = &t.records(|_| true)[0];
        assert_eq!(
            (here.traffic_group.as_deref(), here.mirrored),
            (Some("tg-2"), false)
        );
        // Newer: applied.
        stale.expiry_ms = 2_500;
        assert!(t.insert_mirrored(stale.clone()).is_ok());
        assert_eq!(t.records(|_| true)[0].expiry_ms, 2_500);
        // From the same source, an update always applies (e.g. a new member, same expiry).
        stale.expiry_ms = 2_400;
        assert!(t.insert_mirrored(stale).is_ok());
        assert_eq!(t.records(|_| true)[0].expiry_ms, 2_400);
        // Given up: this device's own records of the group become mirrored ones.
        let mut own = record("10.0.9.0/24", "10.1.1.50:80", 3_000);
        own.traffic_group = Some("tg-2".into());
        t.insert(own);
        assert_eq!(t.disown("tg-2"), 1);
        assert!(t.records(|_| true).iter().all(|r| r.mirrored));
    }

    #[test]
    fn a_profile_over_its_cap_loses_the_records_that_expire_first() {
        let t = PersistTable::default();
        for i in 0..10u64 {
            // Expiries out of insertion order.
            t.insert(record(
                &format!("k{i}"),
                "10.1.1.50:80",
                1_000 + (i * 7) % 10,
            ));
        }
        let mut other = record("x", "10.1.1.50:80", 1);
        other.profile = "calls".into();
        t.insert(other);
        let caps = std::collections::HashMap::from([("src".to_string(), 4usize)]);
        assert_eq!(t.enforce_caps(&caps), vec![("src".to_string(), 6)]);
        assert_eq!(t.evicted()["src"], 6);
        let mut left: Vec<u64> = t
            .records(|r| r.profile == "src")
            .iter()
            .map(|r| r.expiry_ms)
            .collect();
        left.sort();
        assert_eq!(left, vec![1_006, 1_007, 1_008, 1_009]);
        // A profile without a cap (or under it) keeps everything, even its oldest.
        assert_eq!(t.count(|r| r.profile == "calls"), 1);
        assert!(t.enforce_caps(&caps).is_empty());
    }

    #[test]
    fn sweep_and_delete() {
        let t = PersistTable::default();
        t.insert(record("a", "10.1.1.50:80", 100));
        t.insert(record("b", "10.1.1.51:80", 200));
        t.insert(record("c", "10.1.1.51:80", 300));
        assert_eq!(t.sweep(150), 1);
        assert_eq!(t.delete(|r| r.member.port() == 80 && r.key == "c").len(), 1);
        let left: Vec<String> = t.records(|_| true).into_iter().map(|r| r.key).collect();
        assert_eq!(left, vec!["b".to_string()]);
    }

    #[test]
    fn connection_guard_removes_its_entry_and_records_fold_in_counters() {
        let t = ConnTable::default();
        let ids = UpdateIds::default();
        let new = NewConn {
            protocol: Protocol::Tcp,
            virtual_server: "web",
            client: "192.0.2.1:40000".parse().unwrap(),
            vip: "30.1.1.10:80".parse().unwrap(),
            pool: "p",
            member: "10.1.1.50:80".parse().unwrap(),
            snat: "10.1.1.6:50000".parse().unwrap(),
            traffic_group: None,
            idle: Duration::from_secs(60),
        };
        {
            let g = t.insert(new.clone(), &ids);
            g.conn.bytes_in.fetch_add(10, Ordering::Relaxed);
            g.conn.touch(5_000);
            let r = &t.records(10, |_| true)[0];
            assert_eq!(r.bytes_in, 10);
            assert_eq!(r.expiry_ms, 65_000);
            assert_eq!(r.update_id, 1);
            let g2 = t.insert(new, &ids);
            assert_eq!(t.len(), 2);
            assert!(g2.conn.id() > g.conn.id());
        }
        assert!(t.is_empty());
    }
}
