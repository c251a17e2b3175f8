//! The data path: listeners, member choice and upstream sockets dp by the TCP and UDP
//! proxies.
//!
//! Member choice order: a live persistence record (whose member still takes persisted
//! connections), else the pool's method over the members that take new connections.
//!
//! Nothing here may block: sockets are non-blocking and every wait is bounded.

pub mod access;
pub mod batches;
pub mod budget;
pub mod datapath;
pub mod drain;
pub mod mirrored;
pub mod relay;
pub mod takeover;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::select::rendezvous;
use crate::state::{MemberState, VsState};
use crate::tables::{now_ms, persist_key, plugin_key, PersistRecord};
pub use budget::is_local_error;
pub use datapath::DataPath;

/// The access-log line of a connection or flow that ended, when its virtual server logs and
/// the sample takes it ([`access`]).
pub(crate) fn log_access(dp: &DataPath, vs: &VsState, entry: &access::Entry) {
    if !vs.cfg.access_log {
        return;
    }
    let n = vs
        .counters
        .access_seen
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        + 1;
    if !access::sampled(n, vs.cfg.access_log_sample) {
        return;
    }
    let rt = dp.runtime.load();
    dp.access
        .log(&vs.name, rt.config.device.access_log_file.as_deref(), entry);
}

/// Why no member could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoMember {
    /// No member of the pool takes new connections.
    NoneAvailable,
    /// Every member that does was already tried for this connection.
    AllTried,
}

/// The member chosen for a connection.
#[derive(Debug, Clone)]
pub struct Choice {
    /// Index into the pool's members.
    pub index: usize,
    pub member: Arc<MemberState>,
    /// Chosen by a persistence record.
    pub persisted: bool,
}

/// What a persistence plugin said about a connection or datagram.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hint {
    /// The plugin's key (persist on it).
    pub key: Option<Vec<u8>>,
    /// A member the plugin names (an RDP routing token).
    pub member: Option<SocketAddr>,
}

impl From<crate::plugins::Decision> for Hint {
    fn from(d: crate::plugins::Decision) -> Hint {
        use crate::plugins::Decision;
        match d {
            Decision::Key(k) => Hint {
                key: Some(k),
                member: None,
            },
            Decision::Member(m) => Hint {
                key: None,
                member: Some(m),
            },
            Decision::NeedMore(_) | Decision::NoKey => Hint::default(),
        }
    }
}

/// The persistence record (scope, key) a connection uses: the plugin's key for plugin-backed
/// profiles (or the client's address with `fallback = "source-address"`), the masked address
/// otherwise; None when there is none.
fn record_key(
    vs: &VsState,
    client: SocketAddr,
    vip: SocketAddr,
    hint: &Hint,
) -> Option<(String, String)> {
    let (_, profile) = vs.persistence.as_ref()?;
    if profile.kind.default_plugin().is_none() {
        return Some(persist_key(profile, &vs.name, client.ip(), vip.ip()));
    }
    match &hint.key {
        Some(k) => Some(plugin_key(profile, &vs.name, k)),
        None => profile
            .fallback
            .map(|_| persist_key(profile, &vs.name, client.ip(), vip.ip())),
    }
}

/// Chooses a member for a new connection from `client` to `vip` on `vs`, skipping the member
/// indices in `tried`: the member a plugin names (when the pool has it available), a live
/// persistence record (or, with `consistent_hash`, rendezvous hashing of the plugin's key over
/// the available members), else the pool's method. `ingress` is the interface the connection
/// came in on, when MAC masquerade attribution wants it (it names the traffic group a
/// persistence record belongs to).
pub fn choose(
    dp: &DataPath,
    vs: &VsState,
    (client, vip, ingress): (SocketAddr, SocketAddr, Option<u32>),
    tried: &[usize],
    hint: &Hint,
) -> Result<Choice, NoMember> {
    let pool = &vs.pool;
    if let Some((name, profile)) = &vs.persistence {
        if let Some(i) = hint.member.and_then(|m| pool.position(m)) {
            if !tried.contains(&i) && pool.members[i].available() {
                return Ok(Choice {
                    index: i,
                    member: pool.members[i].clone(),
                    persisted: false,
                });
            }
        }
        if profile.consistent_hash {
            if let Some(k) = &hint.key {
                let best = rendezvous(
                    k,
                    pool.members
                        .iter()
                        .enumerate()
                        .filter(|(i, m)| !tried.contains(i) && m.available())
                        .map(|(i, m)| (i, m.addr)),
                );
                if let Some(i) = best {
                    return Ok(Choice {
                        index: i,
                        member: pool.members[i].clone(),
                        persisted: true,
                    });
                }
            }
        }
        if let Some((scope, key)) = record_key(vs, client, vip, hint) {
            let found = dp.persist.lookup(
                (name, &scope, &key),
                profile.timeout,
                now_ms(),
                &dp.ids,
                |p, m| {
                    p == pool.name
                        && pool.position(m).is_some_and(|i| {
                            !tried.contains(&i) && pool.members[i].persist_usable()
                        })
                },
                |r, previous| {
                    let tg = vs.attribution.get().resolve(ingress).0;
                    let moved = r.take_for(tg.as_deref());
                    if let Some(m) = dp.mirror_if(profile.mirror) {
                        if moved {
                            m.offer_persist(r);
                        } else if tg.is_some() {
                            m.persist_refreshed(r, previous, profile.timeout);
                        }
                    }
                },
            );
            if let Some(i) = found.and_then(|m| pool.position(m)) {
                return Ok(Choice {
                    index: i,
                    member: pool.members[i].clone(),
                    persisted: true,
                });
            }
        }
    }
    match pool.pick(client.ip(), tried) {
        Some(i) => Ok(Choice {
            index: i,
            member: pool.members[i].clone(),
            persisted: false,
        }),
        None if pool.available() == 0 => Err(NoMember::NoneAvailable),
        None => Err(NoMember::AllTried),
    }
}

/// Records where `choice` sent the connection, for the persistence profile of `vs`.
pub fn remember(
    dp: &DataPath,
    vs: &VsState,
    (client, vip, ingress): (SocketAddr, SocketAddr, Option<u32>),
    choice: &Choice,
    hint: &Hint,
) {
    if choice.persisted {
        return; // lookup already refreshed it (or consistent hashing keeps no record)
    }
    if let Some(key) = record_key(vs, client, vip, hint) {
        store(dp, vs, key, choice.member.addr, ingress);
    }
}

/// A key the member side taught the plugin (a TLS session id from the ServerHello): later
/// connections with that key go to `member`.
pub fn learn(dp: &DataPath, vs: &VsState, key: &[u8], member: SocketAddr, ingress: Option<u32>) {
    let Some((_, profile)) = &vs.persistence else {
        return;
    };
    if profile.consistent_hash {
        return;
    }
    store(dp, vs, plugin_key(profile, &vs.name, key), member, ingress);
}

/// Stores a record in the traffic group the connection belongs to (the one its SNAT source
/// says: with MAC masquerade, the one whose interface it came in on).
fn store(
    dp: &DataPath,
    vs: &VsState,
    (scope, key): (String, String),
    member: SocketAddr,
    ingress: Option<u32>,
) {
    let Some((name, profile)) = &vs.persistence else {
        return;
    };
    let record = PersistRecord {
        profile: name.clone(),
        scope,
        key,
        pool: vs.pool.name.clone(),
        member,
        virtual_server: vs.name.clone(),
        traffic_group: vs
            .attribution
            .get()
            .resolve(ingress)
            .0
            .as_deref()
            .map(str::to_string),
        update_id: dp.ids.next(),
        expiry_ms: now_ms() + profile.timeout.as_millis() as u64,
        mirrored: false,
    };
    if let Some(m) = dp.mirror_if(profile.mirror) {
        m.offer_persist(&record);
    }
    dp.persist.insert(record);
}
