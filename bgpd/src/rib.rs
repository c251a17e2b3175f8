//! Locally originated routes and what each neighbor is sent of them.
//!
//! [`RouteTable`] holds the route intents (from the configuration and from control clients),
//! keyed by prefix and path id, each with its owner so a client's routes can be withdrawn when it
//! goes away (fate sharing). [`AdjRibOut`] is one neighbor's view: what was advertised, and the
//! difference to send when intents change. Received routes never enter either: what a peer sends
//! back (a route reflector reflecting our VIP, say) cannot keep one of ours alive.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::{NextHop, RouteConfig};
use crate::wire::{AsSegment, Family, Nlri, PathAttrs, GRACEFUL_SHUTDOWN};

/// Identifies a route intent: a prefix and its ADD-PATH path id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct RouteKey {
    pub prefix: IpNet,
    pub path_id: Option<u32>,
}

impl RouteKey {
    pub fn of(r: &RouteConfig) -> RouteKey {
        RouteKey {
            prefix: r.prefix,
            path_id: r.path_id,
        }
    }
}

/// Who put a route in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Owner {
    /// The configuration file.
    Static,
    /// A control-socket client; non-persistent routes go when the client disconnects.
    Client { id: u64, persistent: bool },
}

/// One route intent.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub route: RouteConfig,
    pub owner: Owner,
    /// Being withdrawn gracefully: announced with GRACEFUL_SHUTDOWN until removed (RFC 8326).
    pub graceful_shutdown: bool,
}

/// Sends the keys that changed to each neighbor task.
type Subscriber = mpsc::UnboundedSender<Vec<RouteKey>>;

/// The route intents, shared by the control socket and the neighbor tasks.
#[derive(Debug, Default)]
pub struct RouteTable {
    entries: BTreeMap<RouteKey, Entry>,
    subscribers: Vec<Subscriber>,
    /// Kept equal to the number of entries (the `bgpd_routes` metric).
    size: prometheus_client::metrics::gauge::Gauge,
}

/// The table as the daemon shares it.
pub type SharedTable = Arc<Mutex<RouteTable>>;

impl RouteTable {
    pub fn new() -> RouteTable {
        RouteTable::default()
    }

    /// A table that keeps `gauge` equal to its size.
    pub fn with_size_gauge(gauge: prometheus_client::metrics::gauge::Gauge) -> RouteTable {
        RouteTable {
            size: gauge,
            ..RouteTable::default()
        }
    }

    /// Registers a neighbor task; it receives the keys of every later change.
    pub fn subscribe(&mut self) -> mpsc::UnboundedReceiver<Vec<RouteKey>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.subscribers.push(tx);
        rx
    }

    fn notify(&mut self, keys: Vec<RouteKey>) {
        self.size.set(self.entries.len() as i64);
        if keys.is_empty() {
            return;
        }
        self.subscribers.retain(|s| s.send(keys.clone()).is_ok());
    }

    /// Adds or replaces routes; the owner of a replaced route becomes `owner`.
    pub fn announce(&mut self, routes: Vec<RouteConfig>, owner: Owner) -> usize {
        let mut changed = Vec::with_capacity(routes.len());
        for route in routes {
            let key = RouteKey::of(&route);
            let entry = Entry {
                route,
                owner,
                graceful_shutdown: false,
            };
            self.entries.insert(key, entry);
            changed.push(key);
        }
        let n = changed.len();
        self.notify(changed);
        n
    }

    /// Removes routes; returns how many existed.
    pub fn withdraw(&mut self, keys: &[RouteKey]) -> usize {
        let changed: Vec<RouteKey> = keys
            .iter()
            .filter(|k| self.entries.remove(k).is_some())
            .copied()
            .collect();
        let n = changed.len();
        self.notify(changed);
        n
    }

    /// Marks routes as being withdrawn gracefully (announced with GRACEFUL_SHUTDOWN); the caller
    /// withdraws them after the linger time. Returns the keys that exist.
    pub fn mark_graceful(&mut self, keys: &[RouteKey]) -> Vec<RouteKey> {
        let mut changed = Vec::new();
        for k in keys {
            if let Some(e) = self.entries.get_mut(k) {
                e.graceful_shutdown = true;
                changed.push(*k);
            }
        }
        self.notify(changed.clone());
        changed
    }

    /// Withdraws the non-persistent routes of a control client that went away.
    pub fn drop_client(&mut self, id: u64) -> usize {
        let keys: Vec<RouteKey> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.owner
                    == Owner::Client {
                        id,
                        persistent: false,
                    }
            })
            .map(|(k, _)| *k)
            .collect();
        self.withdraw(&keys)
    }

    pub fn keys(&self) -> Vec<RouteKey> {
        self.entries.keys().copied().collect()
    }

    pub fn entries(&self) -> impl Iterator<Item = (&RouteKey, &Entry)> {
        self.entries.iter()
    }

    pub fn get(&self, k: &RouteKey) -> Option<&Entry> {
        self.entries.get(k)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry sent for `prefix` to a peer without ADD-PATH: the one with the lowest path id.
    fn best(&self, prefix: IpNet) -> Option<&Entry> {
        let lo = RouteKey {
            prefix,
            path_id: None,
        };
        self.entries
            .range(lo..)
            .next()
            .filter(|(k, _)| k.prefix == prefix)
            .map(|(_, e)| e)
    }
}

/// What a neighbor's exports depend on, learned when its session comes up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportContext {
    pub local_as: u32,
    pub ebgp: bool,
    /// NEXT_HOP for `self` routes, per family.
    pub self_v4: Option<Ipv4Addr>,
    pub self_v6: Option<Ipv6Addr>,
    /// Negotiated families.
    pub families: Vec<Family>,
    /// Families on which path ids are sent.
    pub add_path_send: Vec<Family>,
}

impl ExportContext {
    /// The attributes sent for a route to this neighbor, or `None` if it cannot be sent (family
    /// not negotiated, no usable `self` next hop).
    pub fn attrs(&self, e: &Entry) -> Option<PathAttrs> {
        let r = &e.route;
        let family = Family::of(&r.prefix);
        if !self.families.contains(&family) {
            return None;
        }
        let next_hop: IpAddr = match (r.next_hop, family) {
            (NextHop::Addr(a), _) => a,
            (NextHop::Self_, Family::Ipv4Unicast) => self.self_v4?.into(),
            (NextHop::Self_, Family::Ipv6Unicast) => self.self_v6?.into(),
        };
        // RFC 4271 §5.1.2: prepend our AS toward eBGP peers; an iBGP path is empty unless
        // prepended by policy.
        let copies = r.as_path_prepend as usize + usize::from(self.ebgp);
        let as_path = if copies == 0 {
            vec![]
        } else {
            vec![AsSegment::Sequence(vec![self.local_as; copies])]
        };
        let mut communities: Vec<u32> = r.communities.iter().map(|c| c.0).collect();
        if e.graceful_shutdown && !communities.contains(&GRACEFUL_SHUTDOWN) {
            communities.push(GRACEFUL_SHUTDOWN);
        }
        communities.sort_unstable();
        communities.dedup();
        let mut large: Vec<_> = r.large_communities.iter().map(|l| l.0).collect();
        large.sort_unstable();
        large.dedup();
        Some(PathAttrs {
            origin: r.origin,
            as_path,
            next_hop: Some(next_hop),
            next_hop_local: None,
            med: r.med,
            // RFC 4271 §5.1.5: LOCAL_PREF only toward internal peers. RFC 8326 §4.2 (iBGP
            // receivers lower it themselves on seeing the community; we lower ours too).
            local_pref: if self.ebgp {
                None
            } else if e.graceful_shutdown {
                Some(0)
            } else {
                Some(r.local_pref.unwrap_or(100))
            },
            communities,
            large_communities: large,
        })
    }

    fn add_path(&self, f: Family) -> bool {
        self.add_path_send.contains(&f)
    }

    /// The NLRI a table key is sent as.
    pub fn nlri(&self, k: &RouteKey) -> Nlri {
        if self.add_path(Family::of(&k.prefix)) {
            Nlri {
                prefix: k.prefix,
                path_id: Some(k.path_id.unwrap_or(0)),
            }
        } else {
            Nlri {
                prefix: k.prefix,
                path_id: None,
            }
        }
    }
}

/// A batch of changes for one neighbor, grouped by attributes so they pack into few UPDATEs.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    pub withdrawn: Vec<Nlri>,
    pub announced: Vec<(Arc<PathAttrs>, Vec<Nlri>)>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.withdrawn.is_empty() && self.announced.is_empty()
    }
    pub fn announced_count(&self) -> usize {
        self.announced.iter().map(|(_, v)| v.len()).sum()
    }
}

/// What one neighbor has been sent (RFC 4271 §3.2 Adj-RIB-Out).
#[derive(Debug, Default)]
pub struct AdjRibOut {
    advertised: BTreeMap<Nlri, Arc<PathAttrs>>,
}

impl AdjRibOut {
    pub fn new() -> AdjRibOut {
        AdjRibOut::default()
    }

    pub fn len(&self) -> usize {
        self.advertised.len()
    }

    pub fn is_empty(&self) -> bool {
        self.advertised.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Nlri, &Arc<PathAttrs>)> {
        self.advertised.iter()
    }

    /// Forgets everything (the session went down).
    pub fn clear(&mut self) {
        self.advertised.clear();
    }

    /// Everything advertised, as a batch to re-send (ROUTE-REFRESH, RFC 2918 §4).
    pub fn resend(&self, family: Option<Family>) -> Changes {
        let mut groups: HashMap<Arc<PathAttrs>, Vec<Nlri>> = HashMap::new();
        for (n, a) in &self.advertised {
            if family.is_none_or(|f| Family::of(&n.prefix) == f) {
                groups.entry(a.clone()).or_default().push(*n);
            }
        }
        Changes {
            withdrawn: vec![],
            announced: groups.into_iter().collect(),
        }
    }

    /// Brings the Adj-RIB-Out in line with the table for the given keys (or all keys) and returns
    /// what must be sent.
    pub fn update(
        &mut self,
        table: &RouteTable,
        ctx: &ExportContext,
        keys: Option<&[RouteKey]>,
    ) -> Changes {
        // The NLRIs to re-evaluate: for a full sync, everything in the table and everything
        // advertised (so stale ones are withdrawn).
        let mut todo: Vec<(Nlri, IpNet)> = Vec::new();
        match keys {
            Some(keys) => todo.extend(keys.iter().map(|k| (ctx.nlri(k), k.prefix))),
            None => {
                todo.extend(table.entries.keys().map(|k| (ctx.nlri(k), k.prefix)));
                todo.extend(self.advertised.keys().map(|n| (*n, n.prefix)));
            }
        }
        todo.sort_unstable();
        todo.dedup();
        let mut interned: HashMap<PathAttrs, Arc<PathAttrs>> = HashMap::new();
        let mut groups: HashMap<Arc<PathAttrs>, Vec<Nlri>> = HashMap::new();
        let mut withdrawn = Vec::new();
        for (nlri, prefix) in todo {
            let entry = match nlri.path_id {
                Some(id) => {
                    // An ADD-PATH id 0 on the wire stands for a route configured without one.
                    let k = RouteKey {
                        prefix,
                        path_id: Some(id),
                    };
                    table.get(&k).or_else(|| {
                        if id == 0 {
                            table.get(&RouteKey {
                                prefix,
                                path_id: None,
                            })
                        } else {
                            None
                        }
                    })
                }
                None => table.best(prefix),
            };
            let desired = entry.and_then(|e| ctx.attrs(e));
            match desired {
                Some(attrs) => {
                    if self.advertised.get(&nlri).is_some_and(|a| **a == attrs) {
                        continue;
                    }
                    let attrs = interned
                        .entry(attrs.clone())
                        .or_insert_with(|| Arc::new(attrs))
                        .clone();
                    self.advertised.insert(nlri, attrs.clone());
                    groups.entry(attrs).or_default().push(nlri);
                }
                None => {
                    if self.advertised.remove(&nlri).is_some() {
                        withdrawn.push(nlri);
                    }
                }
            }
        }
        Changes {
            withdrawn,
            announced: groups.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Community;

    fn route(p: &str, id: Option<u32>, nh: &str) -> RouteConfig {
        RouteConfig {
            prefix: p.parse().unwrap(),
            path_id: id,
            next_hop: if nh == "self" {
                NextHop::Self_
            } else {
                NextHop::Addr(nh.parse().unwrap())
            },
            origin: Default::default(),
            as_path_prepend: 0,
            med: None,
            communities: vec![],
            large_communities: vec![],
            local_pref: None,
        }
    }

    fn ctx(add_path: bool) -> ExportContext {
        ExportContext {
            local_as: 65001,
            ebgp: true,
            self_v4: Some("20.1.1.6".parse().unwrap()),
            self_v6: None,
            families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
            add_path_send: if add_path {
                vec![Family::Ipv4Unicast]
            } else {
                vec![]
            },
        }
    }

    #[test]
    fn add_path_sends_every_path_with_its_id() {
        let mut t = RouteTable::new();
        t.announce(
            vec![
                route("30.1.1.10/32", Some(1), "20.1.1.2"),
                route("30.1.1.10/32", Some(3), "20.1.1.4"),
            ],
            Owner::Static,
        );
        let mut rib = AdjRibOut::new();
        let c = rib.update(&t, &ctx(true), None);
        assert_eq!(c.announced_count(), 2);
        let ids: Vec<_> = rib.iter().map(|(n, a)| (n.path_id, a.next_hop)).collect();
        assert_eq!(
            ids,
            vec![
                (Some(1), Some("20.1.1.2".parse().unwrap())),
                (Some(3), Some("20.1.1.4".parse().unwrap()))
            ]
        );
        let (attrs, _) = &c.announced[0];
        assert_eq!(attrs.as_path, vec![AsSegment::Sequence(vec![65001])]);
        // No change → nothing to send.
        assert!(rib.update(&t, &ctx(true), None).is_empty());
    }

    #[test]
    fn without_add_path_only_the_lowest_path_id_goes_out_and_replaces_on_withdraw() {
        let mut t = RouteTable::new();
        let mut rx = t.subscribe();
        t.announce(
            vec![
                route("30.1.1.10/32", Some(1), "20.1.1.2"),
                route("30.1.1.10/32", Some(3), "20.1.1.4"),
            ],
            Owner::Static,
        );
        let mut rib = AdjRibOut::new();
        rib.update(&t, &ctx(false), None);
        assert_eq!(rib.len(), 1);
        assert_eq!(
            rib.iter().next().unwrap().1.next_hop,
            Some("20.1.1.2".parse().unwrap())
        );
        rx.try_recv().unwrap();
        t.withdraw(&[RouteKey {
            prefix: "30.1.1.10/32".parse().unwrap(),
            path_id: Some(1),
        }]);
        let keys = rx.try_recv().unwrap();
        let c = rib.update(&t, &ctx(false), Some(&keys));
        // Implicit withdraw: the same NLRI is re-announced with the other path's next hop.
        assert!(c.withdrawn.is_empty());
        assert_eq!(c.announced[0].0.next_hop, Some("20.1.1.4".parse().unwrap()));
    }

    #[test]
    fn client_routes_go_with_the_client_unless_persistent() {
        let mut t = RouteTable::new();
        t.announce(
            vec![route("30.1.1.10/32", Some(1), "self")],
            Owner::Client {
                id: 7,
                persistent: false,
            },
        );
        t.announce(
            vec![route("30.1.1.11/32", Some(1), "self")],
            Owner::Client {
                id: 7,
                persistent: true,
            },
        );
        t.announce(vec![route("30.1.1.12/32", None, "self")], Owner::Static);
        assert_eq!(t.drop_client(7), 1);
        let left: Vec<String> = t.keys().iter().map(|k| k.prefix.to_string()).collect();
        assert_eq!(left, vec!["30.1.1.11/32", "30.1.1.12/32"]);
    }

    #[test]
    fn graceful_shutdown_adds_the_community() {
        let mut t = RouteTable::new();
        let mut r = route("30.1.1.10/32", Some(1), "self");
        r.communities = vec![Community(65001 << 16 | 1)];
        t.announce(vec![r], Owner::Static);
        let mut rib = AdjRibOut::new();
        rib.update(&t, &ctx(true), None);
        let k = t.keys();
        t.mark_graceful(&k);
        let c = rib.update(&t, &ctx(true), Some(&k));
        assert_eq!(
            c.announced[0].0.communities,
            vec![65001 << 16 | 1, GRACEFUL_SHUTDOWN]
        );
        t.withdraw(&k);
        let c = rib.update(&t, &ctx(true), Some(&k));
        assert_eq!(c.withdrawn.len(), 1);
        assert!(rib.is_empty());
    }

    #[test]
    fn self_next_hop_needs_an_address_of_the_family_and_families_filter() {
        let mut t = RouteTable::new();
        t.announce(
            vec![route("2001:db8::10/128", Some(1), "self")],
            Owner::Static,
        );
        let mut rib = AdjRibOut::new();
        assert!(rib.update(&t, &ctx(true), None).is_empty());
        let mut c = ctx(true);
        c.self_v6 = Some("2001:db8::6".parse().unwrap());
        assert_eq!(rib.update(&t, &c, None).announced_count(), 1);
        c.families = vec![Family::Ipv4Unicast];
        assert_eq!(rib.update(&t, &c, None).withdrawn.len(), 1);
    }

    #[test]
    fn prepend_and_ibgp_local_pref() {
        let mut t = RouteTable::new();
        let mut r = route("30.1.1.10/32", None, "self");
        r.as_path_prepend = 2;
        t.announce(vec![r], Owner::Static);
        let e = t.entries().next().unwrap().1;
        let a = ctx(false).attrs(e).unwrap();
        assert_eq!(
            a.as_path,
            vec![AsSegment::Sequence(vec![65001, 65001, 65001])]
        );
        assert_eq!(a.local_pref, None);
        let mut i = ctx(false);
        i.ebgp = false;
        let a = i.attrs(e).unwrap();
        assert_eq!(a.as_path, vec![AsSegment::Sequence(vec![65001, 65001])]);
        assert_eq!(a.local_pref, Some(100));
    }
}
