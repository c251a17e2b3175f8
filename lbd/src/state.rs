//! Runtime state: the running configuration turned into shared objects the data path reads
//! without locks — virtual servers, pools with their selectors, members with admin state,
//! monitor health and counters.
//!
//! A [`Runtime`] is immutable once built and is swapped whole on reload; members and counters
//! are carried over from the previous runtime (same pool and address; same virtual server name)
//! so that a reload loses neither statistics nor health, and established connections keep
//! counting into the objects they hold.
//!
//! This module does no I/O.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::config::{AdminState, Advertise, Config, Persistence, Protocol, Snat, VirtualServer};
use crate::monitor::Health;
use crate::passive::{Change, Passive, PassiveConfig};
use crate::select::{stable_hash, Candidate, Method, Selector};
use crate::tables::{now_ms, ConnTable, PersistTable, UpdateIds};

/// Traffic counters of a virtual server, a pool member or a pool.
#[derive(Debug, Default)]
pub struct Counters {
    pub current: AtomicU64,
    pub total: AtomicU64,
    /// Client → member.
    pub bytes_in: AtomicU64,
    /// Member → client.
    pub bytes_out: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Connections refused by the connection limit (virtual servers) or for want of an
    /// available member.
    pub refused: AtomicU64,
    /// UDP datagrams of established flows dropped because a socket buffer was full.
    pub dropped: AtomicU64,
    /// Connections that ended and were considered for the access log (its sampling).
    pub access_seen: AtomicU64,
}

/// Counters as plain numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterValues {
    pub current: u64,
    pub total: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub connect_failures: u64,
    pub refused: u64,
    #[serde(default)]
    pub dropped: u64,
}

impl Counters {
    pub fn values(&self) -> CounterValues {
        CounterValues {
            current: self.current.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// A histogram the data path records into without locks: one atomic count per bucket, the
/// sum in nanoseconds. Values are seconds; the last bucket is +Inf.
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    /// One more than `bounds`: the +Inf bucket.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        AtomicHistogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one observation: two relaxed atomic adds.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// `(sum in seconds, count, per-bucket counts)`, the last bound `f64::MAX` (+Inf), as
    /// prometheus-client's `encode_histogram` takes them (it accumulates).
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(self.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

/// Upstream connect time buckets, seconds: 0.5 ms (same host) to 10 s (connect_timeout).
pub const CONNECT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Connection duration buckets, seconds: 10 ms to 4 h.
pub const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
];

/// A virtual server's TCP timings: the connect to the chosen member (successful connects) and
/// the proxied connection's life (from the connect to the end of the relay).
#[derive(Debug)]
pub struct Timings {
    pub connect: AtomicHistogram,
    pub duration: AtomicHistogram,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            connect: AtomicHistogram::new(CONNECT_BUCKETS),
            duration: AtomicHistogram::new(DURATION_BUCKETS),
        }
    }
}

/// Counts one connection as current while it lives.
#[derive(Debug)]
pub struct CurrentGuard(Arc<Counters>);

impl CurrentGuard {
    pub fn new(c: Arc<Counters>) -> Self {
        c.current.fetch_add(1, Ordering::Relaxed);
        c.total.fetch_add(1, Ordering::Relaxed);
        CurrentGuard(c)
    }
}

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::Relaxed);
    }
}

fn admin_from(v: u8) -> AdminState {
    match v {
        1 => AdminState::Disabled,
        2 => AdminState::ForcedOffline,
        _ => AdminState::Enabled,
    }
}

fn admin_to(a: AdminState) -> u8 {
    match a {
        AdminState::Enabled => 0,
        AdminState::Disabled => 1,
        AdminState::ForcedOffline => 2,
    }
}

fn health_from(v: u8) -> Health {
    match v {
        1 => Health::Up,
        2 => Health::Down,
        _ => Health::Unchecked,
    }
}

fn health_to(h: Health) -> u8 {
    match h {
        Health::Unchecked => 0,
        Health::Up => 1,
        Health::Down => 2,
    }
}

/// One monitor's verdict on a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorVerdict {
    pub health: Health,
    pub reason: String,
    pub since_ms: u64,
}

/// A pool member.
#[derive(Debug)]
pub struct MemberState {
    pub pool: String,
    pub addr: SocketAddr,
    ratio: AtomicU64,
    admin: AtomicU8,
    /// The configured admin state this member was last built from (a reload that does not
    /// change it keeps a state set at run time by lbctl).
    configured_admin: AtomicU8,
    health: AtomicU8,
    monitors: Mutex<BTreeMap<String, MonitorVerdict>>,
    pub counters: Arc<Counters>,
    /// Passive health (consecutive connect failures), and when it comes back in when it is
    /// out (Unix ms, 0 = in) for lock-free reads.
    passive: Mutex<Passive>,
    passive_until: AtomicU64,
}

impl MemberState {
    fn new(pool: &str, addr: SocketAddr, ratio: u32, admin: AdminState) -> Self {
        MemberState {
            pool: pool.to_string(),
            addr,
            ratio: AtomicU64::new(ratio as u64),
            admin: AtomicU8::new(admin_to(admin)),
            configured_admin: AtomicU8::new(admin_to(admin)),
            health: AtomicU8::new(health_to(Health::Unchecked)),
            monitors: Mutex::new(BTreeMap::new()),
            counters: Arc::default(),
            passive: Mutex::new(Passive::default()),
            passive_until: AtomicU64::new(0),
        }
    }

    fn passive_state(&self) -> std::sync::MutexGuard<'_, Passive> {
        self.passive
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn passive_apply(&self, p: &Passive) {
        self.passive_until
            .store(p.out_until().unwrap_or(0), Ordering::Relaxed);
    }

    /// The pool's passive-health settings (start, reload).
    pub fn set_passive_config(&self, c: PassiveConfig) {
        let mut p = self.passive_state();
        p.configure(c);
        self.passive_apply(&p);
    }

    /// A connect to the member failed for a reason of the member's (not a local one): counts
    /// toward passive health. The caller refreshes the pool on [`Change::TakenOut`].
    pub fn passive_failure(&self) -> Change {
        let mut p = self.passive_state();
        let c = p.failure(now_ms());
        self.passive_apply(&p);
        c
    }

    /// A connect to the member (or a monitor probe) succeeded.
    pub fn passive_success(&self) -> Change {
        if self.passive_until.load(Ordering::Relaxed) == 0
            && self.passive_state().consecutive() == 0
        {
            return Change::None; // the common case, without the lock held long
        }
        let mut p = self.passive_state();
        let c = p.success();
        self.passive_apply(&p);
        c
    }

    /// Out of the pool's selection by passive health now.
    pub fn passive_out(&self) -> bool {
        let until = self.passive_until.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// Why passive health took it out ("passive: 5 connect failures"), while it is out.
    pub fn passive_reason(&self) -> Option<String> {
        self.passive_state().reason(now_ms())
    }

    /// Times passive health took it out since start.
    pub fn passive_trips(&self) -> u64 {
        self.passive_state().trips()
    }

    pub fn admin(&self) -> AdminState {
        admin_from(self.admin.load(Ordering::Relaxed))
    }

    pub fn set_admin(&self, a: AdminState) {
        self.admin.store(admin_to(a), Ordering::Relaxed);
    }

    pub fn ratio(&self) -> u32 {
        self.ratio.load(Ordering::Relaxed) as u32
    }

    /// Every monitor's verdict combined: down if any says down, up if all say up, else
    /// unchecked (also with no monitor at all).
    pub fn health(&self) -> Health {
        health_from(self.health.load(Ordering::Relaxed))
    }

    pub fn verdicts(&self) -> BTreeMap<String, MonitorVerdict> {
        self.monitors.lock().expect("monitor lock").clone()
    }

    /// Records a monitor's verdict; returns the combined health.
    pub fn set_verdict(&self, monitor: &str, health: Health, reason: &str) -> Health {
        let mut m = self.monitors.lock().expect("monitor lock");
        m.insert(
            monitor.to_string(),
            MonitorVerdict {
                health,
                reason: reason.to_string(),
                since_ms: now_ms(),
            },
        );
        self.recombine(&m)
    }

    /// Keeps only the verdicts of `monitors` (the pool's monitors after a reload).
    fn retain_monitors(&self, monitors: &[String]) {
        let mut m = self.monitors.lock().expect("monitor lock");
        m.retain(|k, _| monitors.contains(k));
        self.recombine(&m);
    }

    fn recombine(&self, m: &BTreeMap<String, MonitorVerdict>) -> Health {
        let h = if m.values().any(|v| v.health == Health::Down) {
            Health::Down
        } else if !m.is_empty() && m.values().all(|v| v.health == Health::Up) {
            Health::Up
        } else {
            Health::Unchecked
        };
        self.health.store(health_to(h), Ordering::Relaxed);
        h
    }

    /// Takes new connections from the pool's method.
    pub fn available(&self) -> bool {
        self.admin() == AdminState::Enabled && self.health() != Health::Down && !self.passive_out()
    }

    /// Takes new connections a persistence record sends to it (a disabled member still does).
    pub fn persist_usable(&self) -> bool {
        self.admin() != AdminState::ForcedOffline
            && self.health() != Health::Down
            && !self.passive_out()
    }

    /// One word for the member's state, as BIG-IP shows it.
    pub fn status(&self) -> MemberStatus {
        match (self.admin(), self.health()) {
            (AdminState::ForcedOffline, _) => MemberStatus::ForcedOffline,
            (_, Health::Down) => MemberStatus::Down,
            _ if self.passive_out() => MemberStatus::Down,
            (AdminState::Disabled, _) => MemberStatus::Disabled,
            (AdminState::Enabled, Health::Up) => MemberStatus::Up,
            (AdminState::Enabled, _) => MemberStatus::Unchecked,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemberStatus {
    Up,
    Unchecked,
    Down,
    Disabled,
    ForcedOffline,
}

impl fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemberStatus::Up => "up",
            MemberStatus::Unchecked => "unchecked",
            MemberStatus::Down => "down",
            MemberStatus::Disabled => "disabled",
            MemberStatus::ForcedOffline => "forced-offline",
        })
    }
}

/// A pool: its members and a selector over the ones that take new connections.
pub struct PoolState {
    pub name: String,
    pub method: Method,
    pub monitors: Vec<String>,
    pub members: Vec<Arc<MemberState>>,
    selector: ArcSwap<Selector>,
    /// When the next member taken out by passive health comes back (Unix ms, 0 = none): the
    /// selector is rebuilt lazily then.
    passive_next: AtomicU64,
}

impl fmt::Debug for PoolState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolState")
            .field("name", &self.name)
            .field("method", &self.method)
            .field("members", &self.members.len())
            .finish()
    }
}

impl PoolState {
    fn new(
        name: &str,
        method: Method,
        monitors: Vec<String>,
        members: Vec<Arc<MemberState>>,
    ) -> Self {
        let p = PoolState {
            name: name.to_string(),
            method,
            monitors,
            members,
            selector: ArcSwap::from_pointee(Selector::new(method, Vec::new())),
            passive_next: AtomicU64::new(0),
        };
        p.refresh();
        p
    }

    /// Rebuilds the selector from the members' current availability. Call after any change of
    /// a member's admin state or health.
    pub fn refresh(&self) {
        let candidates = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.available())
            .map(|(i, m)| Candidate {
                index: i,
                key: m.addr.to_string(),
                ratio: m.ratio(),
            })
            .collect();
        let next = self
            .members
            .iter()
            .filter(|m| m.passive_out())
            .map(|m| m.passive_until.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0);
        self.passive_next.store(next, Ordering::Relaxed);
        self.selector
            .store(Arc::new(Selector::new(self.method, candidates)));
    }

    /// Rebuilds the selector when a member taken out by passive health is due back.
    fn recheck_passive(&self) {
        let next = self.passive_next.load(Ordering::Relaxed);
        if next != 0 && now_ms() >= next {
            self.refresh();
        }
    }

    /// Members that take new connections.
    pub fn available(&self) -> usize {
        self.recheck_passive();
        self.selector.load().len()
    }

    /// Picks a member for a new connection from `client` (Maglev hashes the client's address),
    /// never one of `exclude` (indices into `members`).
    pub fn pick(&self, client: IpAddr, exclude: &[usize]) -> Option<usize> {
        self.recheck_passive();
        let hash = match client {
            IpAddr::V4(a) => stable_hash(&a.octets()),
            IpAddr::V6(a) => stable_hash(&a.octets()),
        };
        let members = &self.members;
        self.selector.load().pick(
            hash,
            |i| members[i].counters.current.load(Ordering::Relaxed),
            exclude,
        )
    }

    pub fn position(&self, addr: SocketAddr) -> Option<usize> {
        self.members.iter().position(|m| m.addr == addr)
    }
}

/// A virtual server as the data path uses it.
#[derive(Debug)]
pub struct VsState {
    pub name: String,
    pub cfg: VirtualServer,
    pub pool: Arc<PoolState>,
    pub persistence: Option<(String, Persistence)>,
    /// SNAT source toward IPv4 and IPv6 members (None: the kernel chooses); for automap, the
    /// static internal self IP used while no traffic group is active here.
    pub snat_v4: Option<IpAddr>,
    pub snat_v6: Option<IpAddr>,
    pub counters: Arc<Counters>,
    /// TCP connect and connection-duration histograms (carried over reloads like `counters`).
    pub timings: Arc<Timings>,
    /// Which traffic group new connections belong to (shared by every virtual server).
    pub attribution: Arc<Attribution>,
    /// The persistence profile's plugin instance, for plugin-backed profiles.
    pub plugin: Option<Arc<crate::plugins::ProfilePlugin>>,
}

/// Which traffic group a new connection belongs to, and the SNAT automap source that goes
/// with it (the traffic group's floating internal self IP). Set by the device group as
/// traffic groups become active or are released here; read once per new connection.
///
/// The rule (no MAC masquerade): a connection belongs to this device's *home* traffic group
/// (the first one whose HA order starts with this device) when it is active here, else to the
/// first traffic group active here in configuration order; with none active, to none (SNAT
/// automap then uses the static internal self IP).
#[derive(Debug, Default)]
pub struct Attribution(ArcSwap<AttributionState>);

/// The current attribution.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct AttributionState {
    pub traffic_group: Option<Arc<str>>,
    pub automap_v4: Option<IpAddr>,
    pub automap_v6: Option<IpAddr>,
    /// MAC masquerade: a connection that came in on one of these interfaces (by index)
    /// belongs to that traffic group, whatever the rule above says.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub by_ingress: Vec<IngressRule>,
}

/// A traffic group's MAC-masquerade interface, active here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngressRule {
    pub ifindex: u32,
    pub interface: String,
    pub traffic_group: Arc<str>,
    pub automap_v4: Option<IpAddr>,
    pub automap_v6: Option<IpAddr>,
}

impl AttributionState {
    /// (traffic group, automap v4, automap v6) for a connection that came in on `ingress`.
    pub fn resolve(
        &self,
        ingress: Option<u32>,
    ) -> (Option<Arc<str>>, Option<IpAddr>, Option<IpAddr>) {
        if let Some(r) = ingress.and_then(|i| self.by_ingress.iter().find(|r| r.ifindex == i)) {
            return (Some(r.traffic_group.clone()), r.automap_v4, r.automap_v6);
        }
        (self.traffic_group.clone(), self.automap_v4, self.automap_v6)
    }
}

impl Attribution {
    pub fn get(&self) -> Arc<AttributionState> {
        self.0.load_full()
    }

    pub fn set(&self, s: AttributionState) {
        self.0.store(Arc::new(s));
    }
}

impl VsState {
    /// Enabled and its pool has a member that takes new connections.
    pub fn available(&self) -> bool {
        self.cfg.enabled && self.pool.available() > 0
    }

    /// The source address toward `member` and the traffic group the connection belongs to.
    pub fn snat_for(&self, member: SocketAddr) -> (Option<IpAddr>, Option<Arc<str>>) {
        self.snat_for_ingress(member, None)
    }

    /// The same for a connection that came in on interface `ingress` (MAC masquerade).
    pub fn snat_for_ingress(
        &self,
        member: SocketAddr,
        ingress: Option<u32>,
    ) -> (Option<IpAddr>, Option<Arc<str>>) {
        let (tg, v4, v6) = self.attribution.get().resolve(ingress);
        let floating = if matches!(self.cfg.snat, Snat::Automap) {
            if member.is_ipv4() {
                v4
            } else {
                v6
            }
        } else {
            None
        };
        let fixed = if member.is_ipv4() {
            self.snat_v4
        } else {
            self.snat_v6
        };
        (floating.or(fixed), tg)
    }
}

/// A virtual address and whether its policy wants it advertised now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualAddressStatus {
    pub address: IpAddr,
    pub spanning: bool,
    pub advertise: Advertise,
    pub virtual_servers: Vec<String>,
    pub available: usize,
    /// What route health injection should do with it.
    pub advertised: bool,
}

/// The running configuration, as objects.
#[derive(Debug)]
pub struct Runtime {
    pub config: Arc<Config>,
    pub virtual_servers: BTreeMap<String, Arc<VsState>>,
    /// The same virtual servers by what they listen on.
    pub listeners: HashMap<(SocketAddr, Protocol), Arc<VsState>>,
    pub pools: BTreeMap<String, Arc<PoolState>>,
    /// Traffic-group attribution, carried across reloads.
    pub attribution: Arc<Attribution>,
}

impl Runtime {
    /// Builds the runtime for `config`, carrying members, their health and counters, and
    /// virtual-server counters over from `previous`.
    pub fn build(config: Arc<Config>, previous: Option<&Runtime>) -> Runtime {
        Self::build_with(config, previous, &BTreeMap::new())
    }

    /// The same, with the plugin instances of the plugin-backed persistence profiles.
    pub fn build_with(
        config: Arc<Config>,
        previous: Option<&Runtime>,
        plugins: &BTreeMap<String, Arc<crate::plugins::ProfilePlugin>>,
    ) -> Runtime {
        let mut pools = BTreeMap::new();
        for (name, p) in &config.pools {
            let old_pool = previous.and_then(|r| r.pools.get(name));
            let members = p
                .members
                .iter()
                .map(|m| {
                    let old =
                        old_pool.and_then(|op| op.members.iter().find(|om| om.addr == m.address));
                    match old {
                        Some(om) => {
                            om.ratio.store(m.ratio as u64, Ordering::Relaxed);
                            let configured = admin_to(m.state);
                            if om.configured_admin.swap(configured, Ordering::Relaxed) != configured
                            {
                                om.set_admin(m.state);
                            }
                            om.retain_monitors(&p.monitors);
                            om.set_passive_config(p.passive());
                            om.clone()
                        }
                        None => {
                            let ms = MemberState::new(name, m.address, m.ratio, m.state);
                            ms.set_passive_config(p.passive());
                            Arc::new(ms)
                        }
                    }
                })
                .collect();
            pools.insert(
                name.clone(),
                Arc::new(PoolState::new(name, p.method, p.monitors.clone(), members)),
            );
        }
        let attribution = previous.map(|r| r.attribution.clone()).unwrap_or_default();
        let mut virtual_servers = BTreeMap::new();
        let mut listeners = HashMap::new();
        for (name, vs) in &config.virtual_servers {
            let pool = pools[&vs.pool].clone();
            let old = previous.and_then(|r| r.virtual_servers.get(name));
            let counters = old.map(|o| o.counters.clone()).unwrap_or_default();
            let timings = old.map(|o| o.timings.clone()).unwrap_or_default();
            let persistence = vs
                .persistence
                .as_ref()
                .map(|p| (p.clone(), config.persistence[p].clone()));
            let v4: IpAddr = std::net::Ipv4Addr::UNSPECIFIED.into();
            let v6: IpAddr = std::net::Ipv6Addr::UNSPECIFIED.into();
            let state = Arc::new(VsState {
                name: name.clone(),
                cfg: vs.clone(),
                pool,
                persistence,
                snat_v4: config.snat_source(vs, v4),
                snat_v6: config.snat_source(vs, v6),
                counters,
                timings,
                attribution: attribution.clone(),
                plugin: vs
                    .persistence
                    .as_ref()
                    .and_then(|p| plugins.get(p).cloned()),
            });
            listeners.insert((vs.destination, vs.protocol), state.clone());
            virtual_servers.insert(name.clone(), state);
        }
        Runtime {
            config,
            virtual_servers,
            listeners,
            pools,
            attribution,
        }
    }

    /// Every virtual address with its route-health verdict.
    pub fn virtual_addresses(&self) -> Vec<VirtualAddressStatus> {
        self.config
            .effective_virtual_addresses()
            .into_iter()
            .map(|va| {
                let vss: Vec<&Arc<VsState>> = self
                    .virtual_servers
                    .values()
                    .filter(|v| v.cfg.destination.ip() == va.address)
                    .collect();
                let available = vss.iter().filter(|v| v.available()).count();
                let advertised = match va.advertise {
                    Advertise::Always => true,
                    Advertise::Any => available > 0,
                    Advertise::All => !vss.is_empty() && available == vss.len(),
                };
                VirtualAddressStatus {
                    address: va.address,
                    spanning: va.spanning,
                    advertise: va.advertise,
                    virtual_servers: vss.iter().map(|v| v.name.clone()).collect(),
                    available,
                    advertised,
                }
            })
            .collect()
    }
}

/// The live state every subsystem shares: the running configuration (swapped whole on
/// reload), the connection and persistence tables and the update ids. Plain data with short
/// locks of its own: the data path, mirroring, the control socket and the metrics read it;
/// only the app swaps the runtime.
#[derive(Debug)]
pub struct Live {
    pub runtime: ArcSwap<Runtime>,
    pub conns: ConnTable,
    pub persist: PersistTable,
    pub ids: UpdateIds,
    /// When this lbd started (Unix ms).
    pub started_ms: u64,
}

impl Live {
    pub fn new(runtime: Runtime) -> Live {
        Live {
            runtime: ArcSwap::from_pointee(runtime),
            conns: ConnTable::default(),
            persist: PersistTable::default(),
            ids: UpdateIds::default(),
            started_ms: now_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = r#"
[device]
name = "A"
internal_address = "10.1.1.6"
[virtual_servers.web]
destination = "30.1.1.10:80"
pool = "web"
[virtual_servers.api]
destination = "30.1.1.10:81"
pool = "api"
[[virtual_addresses]]
address = "30.1.1.10"
advertise = "all"
[pools.web]
monitors = ["tcp"]
members = [{ address = "10.1.1.50:80" }, { address = "10.1.1.51:80" }]
[pools.api]
members = [{ address = "10.1.1.52:80" }]
[monitors.tcp]
type = "tcp"
"#;

    fn runtime(text: &str, prev: Option<&Runtime>) -> Runtime {
        Runtime::build(Arc::new(Config::from_toml(text, "t").unwrap()), prev)
    }

    #[test]
    fn availability_follows_admin_state_and_health() {
        let rt = runtime(CFG, None);
        let pool = &rt.pools["web"];
        assert_eq!(pool.available(), 2);
        assert_eq!(pool.members[0].status(), MemberStatus::Unchecked);
        pool.members[0].set_verdict("tcp", Health::Down, "refused");
        pool.refresh();
        assert_eq!(pool.available(), 1);
        assert_eq!(pool.members[0].status(), MemberStatus::Down);
        for _ in 0..10 {
            assert_eq!(pool.pick("192.0.2.1".parse().unwrap(), &[]), Some(1));
        }
        pool.members[1].set_admin(AdminState::Disabled);
        pool.refresh();
        assert_eq!(pool.available(), 0);
        assert!(!rt.virtual_servers["web"].available());
        assert!(pool.members[1].persist_usable());
        assert!(!pool.members[0].persist_usable());
        // Policy "all": web is down, so the address is not advertised.
        let va = &rt.virtual_addresses()[0];
        assert_eq!((va.available, va.advertised), (1, false));
        pool.members[0].set_verdict("tcp", Health::Up, "ok");
        pool.refresh();
        assert!(rt.virtual_addresses()[0].advertised);
    }

    #[test]
    fn passive_health_takes_a_member_out_of_the_selection_and_back() {
        let cfg = CFG.replace(
            "[pools.api]",
            "passive_failures = 2\npassive_retry = \"150ms\"\n[pools.api]",
        );
        let rt = runtime(&cfg, None);
        let pool = &rt.pools["web"];
        let m0 = &pool.members[0];
        assert_eq!(m0.passive_failure(), Change::None);
        assert_eq!(pool.available(), 2);
        assert!(matches!(m0.passive_failure(), Change::TakenOut(_)));
        pool.refresh();
        assert_eq!(pool.available(), 1);
        assert_eq!(m0.status(), MemberStatus::Down);
        assert!(!m0.available() && !m0.persist_usable());
        assert_eq!(
            m0.passive_reason().as_deref(),
            Some("passive: 2 connect failures")
        );
        for _ in 0..10 {
            assert_eq!(pool.pick("192.0.2.1".parse().unwrap(), &[]), Some(1));
        }
        // The retry interval passes: the selection is rebuilt lazily, m0 is tried again.
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(pool.available(), 2);
        assert_eq!(m0.status(), MemberStatus::Unchecked);
        // One more failure on retry: out again at once; a success (a monitor probe) brings it
        // back.
        assert!(matches!(m0.passive_failure(), Change::TakenOut(_)));
        pool.refresh();
        assert_eq!(pool.available(), 1);
        assert_eq!(m0.passive_success(), Change::BackIn);
        pool.refresh();
        assert_eq!(pool.available(), 2);
        assert_eq!(m0.passive_trips(), 2);
        // A reload that turns it off keeps nobody out; the api pool never had it on.
        let api = &rt.pools["api"].members[0];
        for _ in 0..10 {
            assert_eq!(api.passive_failure(), Change::None);
        }
        assert!(api.available());
    }

    #[test]
    fn reload_keeps_members_counters_and_runtime_admin_state() {
        let rt = runtime(CFG, None);
        let m = rt.pools["web"].members[0].clone();
        m.counters.total.fetch_add(7, Ordering::Relaxed);
        m.set_verdict("tcp", Health::Up, "ok");
        m.set_admin(AdminState::Disabled); // lbctl, not the file
        rt.virtual_servers["web"]
            .counters
            .total
            .fetch_add(3, Ordering::Relaxed);
        let rt2 = runtime(&CFG.replace("10.1.1.51:80", "10.1.1.53:80"), Some(&rt));
        let m2 = &rt2.pools["web"].members[0];
        assert!(Arc::ptr_eq(&m, m2));
        assert_eq!(m2.counters.values().total, 7);
        assert_eq!(m2.health(), Health::Up);
        assert_eq!(m2.admin(), AdminState::Disabled);
        assert_eq!(rt2.pools["web"].members[1].addr.port(), 80);
        assert_eq!(rt2.virtual_servers["web"].counters.values().total, 3);
        // The file changes the member's state: the file wins.
        let rt3 = runtime(
            &CFG.replace(
                "{ address = \"10.1.1.50:80\" }",
                "{ address = \"10.1.1.50:80\", state = \"forced-offline\" }",
            ),
            Some(&rt2),
        );
        assert_eq!(
            rt3.pools["web"].members[0].admin(),
            AdminState::ForcedOffline
        );
        // Monitors removed from the pool drop their verdicts.
        let rt4 = runtime(&CFG.replace("monitors = [\"tcp\"]\n", ""), Some(&rt3));
        assert_eq!(rt4.pools["web"].members[0].health(), Health::Unchecked);
        assert!(rt4.pools["web"].members[0].verdicts().is_empty());
    }

    #[test]
    fn snat_sources_resolve_per_family() {
        let rt = runtime(CFG, None);
        let vs = &rt.virtual_servers["web"];
        assert_eq!(
            vs.snat_for("10.1.1.50:80".parse().unwrap()),
            (Some("10.1.1.6".parse().unwrap()), None)
        );
        assert_eq!(vs.snat_for("[fd00::1]:80".parse().unwrap()), (None, None));
        // A traffic group active here: automap takes its floating internal self IP, and the
        // attribution survives a reload.
        rt.attribution.set(AttributionState {
            traffic_group: Some("tg-1".into()),
            automap_v4: Some("10.1.1.2".parse().unwrap()),
            automap_v6: None,
            by_ingress: vec![IngressRule {
                ifindex: 7,
                interface: "tg3".into(),
                traffic_group: "tg-3".into(),
                automap_v4: Some("10.1.1.4".parse().unwrap()),
                automap_v6: None,
            }],
        });
        let rt2 = runtime(CFG, Some(&rt));
        assert_eq!(
            rt2.virtual_servers["web"].snat_for("10.1.1.50:80".parse().unwrap()),
            (Some("10.1.1.2".parse().unwrap()), Some("tg-1".into()))
        );
        // Arrived on tg-3's masquerade interface: tg-3's address.
        assert_eq!(
            rt2.virtual_servers["web"].snat_for_ingress("10.1.1.50:80".parse().unwrap(), Some(7)),
            (Some("10.1.1.4".parse().unwrap()), Some("tg-3".into()))
        );
        assert_eq!(
            rt2.virtual_servers["web"]
                .snat_for_ingress("10.1.1.50:80".parse().unwrap(), Some(8))
                .1,
            Some("tg-1".into())
        );
        assert!(rt
            .listeners
            .contains_key(&("30.1.1.10:81".parse().unwrap(), Protocol::Tcp)));
    }
}
