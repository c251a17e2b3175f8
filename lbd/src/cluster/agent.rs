//! The device group inside lbd: what happens on this device when a traffic group becomes
//! active here or leaves (DESIGN.md §2), and the routes lbd asks bgpd to announce.
//!
//! [`Cluster::start`] loads the device-group file and the group key, removes floating
//! addresses a previous run may have left behind, adds the spanning virtual addresses to the
//! VIP interface, and starts three tasks:
//!
//! - the heartbeat **driver** (`driver`), whose activate/release decisions arrive here through
//!   [`Actions`] and are queued to
//! - the **executor**, one task that carries them out strictly in order:
//!   - *takeover*: add the floating external and internal self IPs (on the MAC-masquerade
//!     macvlan when the traffic group has one), attribute new connections to it (SNAT automap
//!     source), announce the addresses on their segments (gratuitous ARP / unsolicited NA,
//!     repeated: immediately, after 100 and 200 ms, then after 1 and 2 s, so that a hung
//!     device's kernel answering ARP for the same address loses), *then* announce the routes;
//!   - *release*: withdraw the routes (and wait for bgpd's answer), *then* remove the
//!     addresses;
//!
//!   and, every [`TICK`], re-checks route health (each virtual address's advertise policy
//!   against its virtual servers' availability; what is not available here goes to the
//!   driver, which carries it in heartbeats) and the bgpd connection, and follows the paths
//!   the driver publishes (where each traffic group's path leads) with the routes;
//! - the **link watcher**: every [`TICK`] checks the external and internal interfaces; a
//!   device with either down (or in `lbctl standby`) is not eligible and gives up its traffic
//!   groups (fail-safe).
//!
//! # Routes (DESIGN.md §2)
//!
//! **Every device announces every traffic group's path.** For each traffic group *k* that
//! placement puts on some device *D* (whether *D* is this device or a peer), and each spanning
//! virtual address that is available on *D* (its route health; peers report theirs in
//! heartbeats): the virtual address as a host route with ADD-PATH path id *k* and NEXT_HOP =
//! the traffic group's floating external self IP *Ek*. The routers reach *Ek* on the shared
//! segment wherever it lives (L2 mode), so the same path from three devices is one next hop to
//! them; a device that leaves for any reason (crash, stop, a restart of lbd or bgpd, a lost BGP
//! session) takes away only duplicates, and the routers' next-hop set — and with it the hash
//! range of every surviving flow — stays `E1 … EN` while one device lives. A virtual address
//! not available on *D* loses path *k* on every device; one available nowhere is withdrawn
//! everywhere. Until placement knows (after a start, while listening) nothing is announced;
//! after a stall, what was announced stays until it knows again. Virtual addresses of the
//! other address family than *Ek* get no path.
//!
//! In routed mode the VIP paths are the same, and the device *holding* traffic group *k* also
//! announces *Ek* itself as a host route with NEXT_HOP = this device (bgpd's session
//! address): that route moves with the traffic group, so the routers' recursive next hops
//! still change on a failover (README: routed mode).
//!
//! Withdraws on release are graceful in L2 mode (bgpd keeps the route announced with the
//! GRACEFUL_SHUTDOWN community for its linger time, RFC 8326); for route health they are
//! immediate.
//!
//! The bgpd connection is fate-shared: when lbd dies, bgpd withdraws what lbd announced (the
//! other devices still announce the same paths). When bgpd is away, lbd reconnects every
//! [`TICK`] and announces everything again.
//!
//! This module must not decide placement (that is `placement`) or block the driver.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::config::{GroupConfig, RouteMode, TrafficGroup};
use super::driver::{self, Actions, DriverCounters, DriverError, DriverHandle, Paths};
use super::heartbeat::GroupKey;
use super::netaddr::{self, NetAddr};
use super::placement::{GroupStatus, PathOwner};
use crate::config::{Config, ConfigError};
use crate::daemon::Shared;
use crate::state::{AttributionState, IngressRule};
use crate::tables::now_ms;

/// How often route health, the bgpd connection and the links are checked.
pub const TICK: Duration = Duration::from_millis(100);
/// Longest wait for bgpd to answer one request.
pub const BGPD_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the device group could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("device group key: {0}")]
    Key(String),
    #[error("{0}")]
    Membership(String),
    #[error("{0}")]
    Net(#[from] netaddr::NetAddrError),
    #[error("{0}")]
    Driver(#[from] DriverError),
    #[error("{0}")]
    Mirror(#[from] crate::mirror::service::MirrorError),
}

/// Device-local settings of the device group (lbd's `[device]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    pub me: String,
    pub external_interface: String,
    pub internal_interface: String,
    pub vip_interface: String,
    pub bgpd_socket: Option<PathBuf>,
    pub group_file: PathBuf,
    /// Mirroring's trust directory; mirroring is off when None.
    pub mirror_trust_dir: Option<PathBuf>,
}

impl Local {
    /// The device-group part of lbd's configuration; None when no device group is configured.
    pub fn from_config(cfg: &Config) -> Option<Local> {
        let d = &cfg.device;
        Some(Local {
            me: d.name.clone(),
            external_interface: d.external_interface.clone()?,
            internal_interface: d.internal_interface.clone()?,
            vip_interface: d.vip_interface.clone(),
            bgpd_socket: d.bgpd_socket.clone(),
            group_file: d.device_group.clone()?,
            mirror_trust_dir: d.mirror_trust_dir.clone(),
        })
    }
}

/// What this device does about the group, for `lbctl show device-group`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LocalStatus {
    /// Traffic groups whose addresses and routes are in place here, with when (Unix ms).
    pub active_here: BTreeMap<String, u64>,
    /// Virtual addresses route health says to advertise here.
    pub advertised: Vec<IpAddr>,
    /// Where each traffic group's path leads, as the routes follow it (None: not known yet).
    pub paths: Option<Vec<PathOwner>>,
    /// Interface name → up.
    pub links: BTreeMap<String, bool>,
    pub standby: bool,
    pub bgpd: BgpdStatus,
    /// The traffic group new connections are attributed to, and the SNAT automap sources.
    pub attribution: AttributionState,
    /// The last thing that went wrong (Unix ms, message).
    pub last_error: Option<(u64, String)>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BgpdStatus {
    pub socket: Option<PathBuf>,
    pub connected: bool,
    /// Routes bgpd accepted from us and we have not withdrawn.
    pub routes: Vec<RouteIntent>,
    pub last_error: Option<String>,
}

/// One route lbd asks bgpd for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RouteIntent {
    pub prefix: IpNet,
    pub path_id: u32,
    /// An address, or None for "self" (the session's local address).
    pub next_hop: Option<IpAddr>,
}

impl RouteIntent {
    fn json(&self) -> Value {
        json!({
            "prefix": self.prefix.to_string(),
            "path_id": self.path_id,
            "next_hop": self.next_hop.map_or_else(|| "self".to_string(), |a| a.to_string()),
        })
    }
}

/// The routes this device asks bgpd for (see the module documentation): for each traffic
/// group that `paths` places on a device, its path for each of the spanning virtual addresses
/// `vips` available there; in routed mode also the floating external self IP of each traffic
/// group `active` here.
pub fn desired_routes(
    group: &GroupConfig,
    paths: &[PathOwner],
    active: &BTreeSet<String>,
    vips: &[IpAddr],
) -> BTreeSet<RouteIntent> {
    let ids = group.path_ids();
    let mut out = BTreeSet::new();
    for tg in &group.traffic_groups {
        let k = ids[&tg.name];
        let ek = tg.external_floating.addr();
        let owner = paths
            .iter()
            .find(|p| p.traffic_group == tg.name && p.device.is_some());
        if let Some(owner) = owner {
            for va in vips
                .iter()
                .filter(|a| a.is_ipv4() == ek.is_ipv4() && !owner.unavailable.contains(a))
            {
                out.insert(RouteIntent {
                    prefix: IpNet::from(*va),
                    path_id: k,
                    next_hop: Some(ek),
                });
            }
        }
        if group.group.route_mode == RouteMode::Routed && active.contains(&tg.name) {
            out.insert(RouteIntent {
                prefix: IpNet::from(ek),
                path_id: k,
                next_hop: None,
            });
        }
    }
    out
}

/// Which traffic group new connections belong to (the rule is documented on
/// [`crate::state::Attribution`]); `masquerade` maps a traffic group with MAC masquerade to
/// its macvlan (index, name): connections arriving there belong to it while it is active.
pub fn attribution(
    group: &GroupConfig,
    me: &str,
    active: &BTreeSet<String>,
    masquerade: &BTreeMap<String, (u32, String)>,
) -> AttributionState {
    let by_ingress = group
        .traffic_groups
        .iter()
        .filter(|t| active.contains(&t.name))
        .filter_map(|t| {
            let (ifindex, name) = masquerade.get(&t.name)?;
            let a = t.internal_floating.addr();
            Some(IngressRule {
                ifindex: *ifindex,
                interface: name.clone(),
                traffic_group: t.name.as_str().into(),
                automap_v4: a.is_ipv4().then_some(a),
                automap_v6: a.is_ipv6().then_some(a),
            })
        })
        .collect();
    AttributionState {
        by_ingress,
        ..attribution_rule(group, me, active)
    }
}

fn attribution_rule(group: &GroupConfig, me: &str, active: &BTreeSet<String>) -> AttributionState {
    let home = group
        .traffic_groups
        .iter()
        .find(|t| t.ha_order.first().map(String::as_str) == Some(me) && active.contains(&t.name));
    let tg = home.or_else(|| {
        group
            .traffic_groups
            .iter()
            .find(|t| active.contains(&t.name))
    });
    match tg {
        None => AttributionState::default(),
        Some(t) => {
            let a = t.internal_floating.addr();
            AttributionState {
                traffic_group: Some(t.name.as_str().into()),
                automap_v4: a.is_ipv4().then_some(a),
                automap_v6: a.is_ipv6().then_some(a),
                by_ingress: Vec::new(),
            }
        }
    }
}

/// The interface a traffic group's floating external self IP lives on.
pub fn external_link(tg: &TrafficGroup, path_id: u32, local: &Local) -> String {
    match tg.mac_masquerade {
        Some(_) => format!("tg{path_id}"),
        None => local.external_interface.clone(),
    }
}

enum Step {
    Activate(String),
    Release(String),
}

struct Sink(mpsc::UnboundedSender<Step>);

impl Actions for Sink {
    fn activate(&self, traffic_group: &str, _reason: &str) {
        let _ = self.0.send(Step::Activate(traffic_group.to_string()));
    }
    fn release(&self, traffic_group: &str, _reason: &str) {
        let _ = self.0.send(Step::Release(traffic_group.to_string()));
    }
}

/// The running device group of this lbd.
pub struct Cluster {
    pub local: Local,
    pub group: GroupConfig,
    pub driver: DriverHandle,
    standby: AtomicBool,
    links_ok: AtomicBool,
    status: Arc<Mutex<LocalStatus>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("me", &self.local.me)
            .finish_non_exhaustive()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

impl Cluster {
    /// Starts the device group (see the module documentation).
    pub async fn start(local: Local, shared: &Arc<Shared>) -> Result<Arc<Cluster>, ClusterError> {
        let group = GroupConfig::load(&local.group_file)?;
        let key = GroupKey::from_file(&group.group.key_file)
            .map_err(|e| ClusterError::Key(format!("{}: {e}", group.group.key_file.display())))?;
        let dcfg = group
            // Mirroring off for now: auto-failback does not wait for a mirror to be in sync.
            .driver_config(&local.me, Arc::new(key), local.mirror_trust_dir.is_some())
            .map_err(ClusterError::Membership)?;
        if let Some(dir) = &local.mirror_trust_dir {
            let m =
                crate::mirror::service::Mirroring::start(&local.me, &group, dir, shared).await?;
            let _ = shared.mirror.set(m);
        }
        let net = Arc::new(NetAddr::new().await?);
        for ifname in [&local.external_interface, &local.internal_interface] {
            net.link_up(ifname).await?;
        }
        let ids = group.path_ids();
        // A previous run may have left floating addresses behind: this device holds nothing
        // until placement says so, and its kernel must not answer for them meanwhile.
        for tg in &group.traffic_groups {
            let ext = external_link(tg, ids[&tg.name], &local);
            for (ifname, addr) in [
                (ext.as_str(), tg.external_floating),
                (local.internal_interface.as_str(), tg.internal_floating),
            ] {
                match net.remove(ifname, addr).await {
                    Ok(true) => {
                        warn!(traffic_group = %tg.name, "removed stale {addr} from {ifname}")
                    }
                    Ok(false) => {}
                    Err(e) => debug!("{ifname}: {e}"),
                }
            }
        }
        // MAC masquerade: one macvlan per such traffic group, kept up. Without addresses and
        // with IPv6 address generation off it sends nothing, so the segment learns the
        // masquerade MAC only from the device that holds the traffic group; being up already
        // spares a takeover the wait for the carrier.
        let mut masquerade = BTreeMap::new();
        if group
            .traffic_groups
            .iter()
            .any(|t| t.mac_masquerade.is_some())
        {
            // Else the parent interface answers ARP for the floating addresses with its own
            // MAC (Linux answers for any local address on any interface by default).
            for (key, value) in [("arp_ignore", "1"), ("arp_announce", "2")] {
                let path = format!("/proc/sys/net/ipv4/conf/{}/{key}", local.external_interface);
                match std::fs::write(&path, value) {
                    Ok(()) => info!("MAC masquerade: set {path} = {value}"),
                    Err(e) => warn!("MAC masquerade: cannot set {path} = {value}: {e}"),
                }
            }
        }
        for tg in group.traffic_groups.iter() {
            let Some(mac) = tg.mac_masquerade else {
                continue;
            };
            let name = external_link(tg, ids[&tg.name], &local);
            let index = net
                .ensure_macvlan(&name, &local.external_interface, mac.0)
                .await?;
            net.set_link(&name, true).await?;
            if !net.wait_link_up(&name, Duration::from_secs(2)).await? {
                warn!(traffic_group = %tg.name, "MAC masquerade link {name} is not up yet");
            }
            masquerade.insert(tg.name.clone(), (index, name));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(LocalStatus {
            bgpd: BgpdStatus {
                socket: local.bgpd_socket.clone(),
                ..Default::default()
            },
            ..Default::default()
        }));
        let (driver, driver_task) = driver::spawn_on_own_thread(dcfg, Arc::new(Sink(tx))).await?;
        let cluster = Arc::new(Cluster {
            local: local.clone(),
            group: group.clone(),
            driver,
            standby: AtomicBool::new(false),
            links_ok: AtomicBool::new(true),
            status: status.clone(),
            tasks: Mutex::new(vec![driver_task]),
        });
        cluster.add_virtual_addresses(&net, shared).await;
        let exec = Executor {
            local,
            group,
            net: net.clone(),
            shared: Arc::downgrade(shared),
            status,
            driver: cluster.driver.clone(),
            paths_rx: cluster.driver.paths(),
            active: BTreeSet::new(),
            announcing: HashMap::new(),
            vips: Vec::new(),
            unavailable: BTreeSet::new(),
            paths: None,
            bgpd: None,
            announced: BTreeSet::new(),
            last_connect_error: None,
            masquerade,
        };
        let exec_task = tokio::spawn(exec.run(rx));
        let links_task = tokio::spawn(watch_links(Arc::downgrade(&cluster), net));
        if let Some(m) = shared.mirror.get() {
            m.spawn_reconciler();
        }
        cluster
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([exec_task, links_task]);
        info!(device = %cluster.local.me, group = %cluster.group.group.name,
            mode = %cluster.group.group.route_mode, "device group started");
        Ok(cluster)
    }

    /// Adds every spanning virtual address of the running configuration to the VIP interface
    /// (start-up and after a reload). Addresses are never removed by lbd.
    pub async fn add_virtual_addresses(&self, net: &NetAddr, shared: &Shared) {
        let rt = shared.runtime.load_full();
        for va in rt.config.effective_virtual_addresses() {
            if !va.spanning {
                continue;
            }
            match net
                .add(&self.local.vip_interface, IpNet::from(va.address))
                .await
            {
                Ok(true) => info!(
                    "added virtual address {} to {}",
                    va.address, self.local.vip_interface
                ),
                Ok(false) => {}
                Err(e) => error!("cannot add virtual address {}: {e}", va.address),
            }
        }
    }

    /// The same, opening its own netlink connection (for reloads).
    pub async fn refresh_virtual_addresses(&self, shared: &Shared) {
        match NetAddr::new().await {
            Ok(net) => self.add_virtual_addresses(&net, shared).await,
            Err(e) => error!("cannot add virtual addresses: {e}"),
        }
    }

    /// `lbctl standby` (true) / `lbctl release` (false).
    pub async fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::Relaxed);
        self.status.lock().expect("status lock").standby = standby;
        info!(
            standby,
            "standby {}",
            if standby {
                "set: giving up every traffic group"
            } else {
                "released"
            }
        );
        self.push_eligibility().await;
    }

    async fn push_eligibility(&self) {
        let eligible =
            self.links_ok.load(Ordering::Relaxed) && !self.standby.load(Ordering::Relaxed);
        self.driver.set_eligible(eligible).await;
    }

    /// Gives up every traffic group (as standby does) and waits, at most `limit`, until their
    /// routes are withdrawn and addresses removed here.
    ///
    /// It then also waits (within the same limit) until a peer holds each of them, so that
    /// their floating addresses are answered again before this lbd exits (the routes stay:
    /// every device announces every traffic group's path; bgpd drops only this device's
    /// duplicates when lbd's connection closes).
    pub async fn shutdown(&self, limit: Duration) {
        let held: Vec<String> = self.local_status().active_here.into_keys().collect();
        self.standby.store(true, Ordering::Relaxed);
        self.driver.set_eligible(false).await;
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if self.local_status().active_here.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while tokio::time::Instant::now() < deadline {
            let st = self.driver.status().await;
            let peers = st
                .devices
                .iter()
                .any(|d| d.name != self.local.me && d.alive && d.eligible);
            if !peers {
                return;
            }
            let taken = held.iter().all(|tg| {
                st.traffic_groups.iter().any(|t| {
                    &t.name == tg && t.active.as_ref().is_some_and(|a| *a != self.local.me)
                })
            });
            if taken {
                info!("shutdown: traffic groups released and taken over: {held:?}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        warn!("shutdown: not every traffic group was taken over within {limit:?}");
    }

    pub fn counters(&self) -> DriverCounters {
        self.driver.counters()
    }

    pub fn local_status(&self) -> LocalStatus {
        self.status.lock().expect("status lock").clone()
    }

    /// `show traffic-groups`: the placement view with each traffic group's addresses.
    pub async fn traffic_groups(&self) -> Value {
        let st = self.driver.status().await;
        let ids = self.group.path_ids();
        let local = self.local_status();
        let tgs: Vec<Value> = st
            .traffic_groups
            .iter()
            .map(|t| {
                let mut v = serde_json::to_value(t).unwrap_or_default();
                if let (Some(cfg), Value::Object(o)) = (self.group.traffic_group(&t.name), &mut v) {
                    o.insert(
                        "external_floating".into(),
                        cfg.external_floating.to_string().into(),
                    );
                    o.insert(
                        "internal_floating".into(),
                        cfg.internal_floating.to_string().into(),
                    );
                    o.insert("path_id".into(), ids[&t.name].into());
                    o.insert("ha_order".into(), json!(cfg.ha_order));
                    o.insert("auto_failback".into(), cfg.auto_failback.into());
                    o.insert(
                        "mac_masquerade".into(),
                        cfg.mac_masquerade.map(|m| m.to_string()).into(),
                    );
                    o.insert(
                        "here".into(),
                        local.active_here.contains_key(&t.name).into(),
                    );
                }
                v
            })
            .collect();
        json!({ "me": st.me, "traffic_groups": tgs })
    }

    /// `show device-group`.
    pub async fn device_group(&self) -> Value {
        let st: GroupStatus = self.driver.status().await;
        json!({
            "name": self.group.group.name,
            "me": st.me,
            "epoch": st.epoch,
            "phase": st.phase,
            "route_mode": self.group.group.route_mode,
            "heartbeat_interval_ms": self.group.group.heartbeat_interval.as_millis() as u64,
            "dead_after_ms": self.group.group.dead_after.as_millis() as u64,
            "standby": self.standby.load(Ordering::Relaxed),
            "devices": st.devices,
            "orders": st.orders,
            "counters": self.counters(),
            "local": self.local_status(),
        })
    }
}

/// Every [`TICK`]: the external and internal links; either down makes the device ineligible.
async fn watch_links(cluster: Weak<Cluster>, net: Arc<NetAddr>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<bool> = None;
    loop {
        tick.tick().await;
        let Some(c) = cluster.upgrade() else { return };
        let mut links = BTreeMap::new();
        for ifname in [&c.local.external_interface, &c.local.internal_interface] {
            let up = match net.link_up(ifname).await {
                Ok(up) => up,
                Err(e) => {
                    debug!("{ifname}: {e}");
                    false
                }
            };
            links.insert(ifname.clone(), up);
        }
        let ok = links.values().all(|u| *u);
        if last != Some(ok) {
            if last.is_some() || !ok {
                if ok {
                    info!(?links, "links up: eligible again");
                } else {
                    warn!(
                        ?links,
                        "a link is down: giving up every traffic group (fail-safe)"
                    );
                }
            }
            c.links_ok.store(ok, Ordering::Relaxed);
            c.push_eligibility().await;
            last = Some(ok);
        }
        c.status.lock().expect("status lock").links = links;
    }
}

struct Bgpd {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

impl Bgpd {
    async fn connect(path: &std::path::Path) -> std::io::Result<Bgpd> {
        let s = UnixStream::connect(path).await?;
        let (rd, wr) = s.into_split();
        Ok(Bgpd {
            rd: BufReader::new(rd),
            wr,
        })
    }

    /// Whether bgpd closed the connection (it never speaks unasked, so anything readable
    /// between requests is the end of the connection or nonsense).
    fn closed(&self) -> bool {
        let mut buf = [0u8; 1];
        !matches!(self.rd.get_ref().try_read(&mut buf),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// One request, one answer; an `{"ok":false}` answer is an error.
    async fn call(&mut self, req: Value) -> Result<Value, String> {
        let fut = async {
            let mut line = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
            line.push(b'\n');
            self.wr.write_all(&line).await.map_err(|e| e.to_string())?;
            let mut answer = String::new();
            let n = self
                .rd
                .read_line(&mut answer)
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("bgpd closed the control connection".to_string());
            }
            let v: Value =
                serde_json::from_str(&answer).map_err(|e| format!("bad answer from bgpd: {e}"))?;
            if v["ok"] == true {
                Ok(v)
            } else {
                Err(format!(
                    "bgpd: {}",
                    v["error"].as_str().unwrap_or("request refused")
                ))
            }
        };
        match tokio::time::timeout(BGPD_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!("bgpd did not answer within {BGPD_TIMEOUT:?}")),
        }
    }
}

/// The task that carries out activations and releases in order (module documentation).
struct Executor {
    local: Local,
    group: GroupConfig,
    net: Arc<NetAddr>,
    shared: Weak<Shared>,
    status: Arc<Mutex<LocalStatus>>,
    driver: DriverHandle,
    paths_rx: tokio::sync::watch::Receiver<Paths>,
    /// Traffic groups whose addresses are in place here.
    active: BTreeSet<String>,
    /// Announcement (gratuitous ARP) tasks per traffic group.
    announcing: HashMap<String, JoinHandle<()>>,
    /// The spanning virtual addresses of the running configuration.
    vips: Vec<IpAddr>,
    /// Those route health says not to advertise here.
    unavailable: BTreeSet<IpAddr>,
    /// Where each traffic group's path leads, as last known (kept while the driver does not
    /// know: after a stall).
    paths: Option<Vec<PathOwner>>,
    bgpd: Option<Bgpd>,
    /// What bgpd has from us.
    announced: BTreeSet<RouteIntent>,
    last_connect_error: Option<String>,
    /// Traffic group → its MAC-masquerade macvlan (index, name).
    masquerade: BTreeMap<String, (u32, String)>,
}

impl Executor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Step>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut paths_open = true;
        loop {
            // Steps first: the driver queues a move before it publishes the paths that
            // follow from it, so a takeover's addresses are in place before its routes, and
            // a release withdraws (gracefully) before the addresses go.
            tokio::select! {
                biased;
                step = rx.recv() => match step {
                    Some(Step::Activate(tg)) => self.activate(&tg).await,
                    Some(Step::Release(tg)) => self.release(&tg).await,
                    None => return,
                },
                r = self.paths_rx.changed(), if paths_open => {
                    if r.is_err() {
                        // The driver stopped: keep what is announced (fate sharing with bgpd
                        // ends it when lbd goes).
                        paths_open = false;
                        continue;
                    }
                    self.follow_latest();
                    self.sync_routes(false).await;
                }
                _ = tick.tick() => {
                    self.refresh_health().await;
                    self.sync_routes(false).await;
                }
            }
        }
    }

    /// Takes the driver's latest paths; None (the driver does not know now) keeps the last
    /// known.
    fn follow_latest(&mut self) {
        let paths: Paths = self.paths_rx.borrow_and_update().clone();
        if paths.is_some() {
            self.paths = paths;
            self.status.lock().expect("status lock").paths = self.paths.clone();
        }
    }

    fn tg(&self, name: &str) -> Option<TrafficGroup> {
        self.group.traffic_group(name).cloned()
    }

    fn note_error(&self, msg: String) {
        error!("{msg}");
        self.status.lock().expect("status lock").last_error = Some((now_ms(), msg));
    }

    fn set_attribution(&self) {
        let a = attribution(&self.group, &self.local.me, &self.active, &self.masquerade);
        if let Some(shared) = self.shared.upgrade() {
            shared.runtime.load().attribution.set(a.clone());
        }
        let mut st = self.status.lock().expect("status lock");
        st.attribution = a;
        st.active_here.retain(|k, _| self.active.contains(k));
    }

    async fn activate(&mut self, name: &str) {
        let Some(tg) = self.tg(name) else { return };
        // Mirrored state first (DESIGN.md §5): the sessions' sockets must exist before the
        // floating addresses arrive, or the kernel answers their next segments with RST.
        if let Some(shared) = self.shared.upgrade() {
            if let Some(m) = shared.mirror.get() {
                let standby = m.take_over(name);
                shared.restore_mirrored(name, standby).await;
            }
        }
        let k = self.group.path_ids()[name];
        let ext = external_link(&tg, k, &self.local);
        let addrs = [
            (ext.clone(), tg.external_floating),
            (self.local.internal_interface.clone(), tg.internal_floating),
        ];
        for (ifname, addr) in &addrs {
            if let Err(e) = self.net.add(ifname, *addr).await {
                self.note_error(format!("{name}: cannot add {addr} to {ifname}: {e}"));
            }
        }
        self.active.insert(name.to_string());
        self.status
            .lock()
            .expect("status lock")
            .active_here
            .insert(name.to_string(), now_ms());
        self.set_attribution();
        // Announce on the segments: at once, then repeated so that we win against a hung
        // device whose kernel still answers for the address.
        let net = self.net.clone();
        let tg_name = name.to_string();
        let task = tokio::spawn(async move {
            let mut macs = Vec::new();
            for (ifname, addr) in &addrs {
                match net.mac(ifname).await {
                    Ok(m) => macs.push((ifname.clone(), addr.addr(), m)),
                    Err(e) => warn!(traffic_group = %tg_name, "no MAC for {ifname}: {e}"),
                }
            }
            for wait in [0u64, 100, 100, 800, 1000] {
                tokio::time::sleep(Duration::from_millis(wait)).await;
                for (ifname, ip, mac) in &macs {
                    if let Err(e) = netaddr::announce(ifname, *ip, *mac, 1, Duration::ZERO).await {
                        warn!(traffic_group = %tg_name, "announcing {ip} on {ifname}: {e}");
                    }
                }
            }
        });
        if let Some(old) = self.announcing.insert(name.to_string(), task) {
            old.abort();
        }
        // Give the first announcement a head start over the routes.
        tokio::task::yield_now().await;
        self.refresh_health().await;
        self.sync_routes(false).await;
        info!(
            traffic_group = name,
            "active here: addresses in place, announced, routes requested"
        );
    }

    async fn release(&mut self, name: &str) {
        let Some(tg) = self.tg(name) else { return };
        // Mirrored connections first: they live on the new owner, and nothing may go out
        // from here for them (DESIGN.md §5).
        if let Some(shared) = self.shared.upgrade() {
            if let Some(m) = shared.mirror.get() {
                m.released(name);
            }
        }
        if let Some(t) = self.announcing.remove(name) {
            t.abort();
        }
        self.active.remove(name);
        self.set_attribution();
        // Routes first (and wait for bgpd), then the addresses. The paths as they are after
        // this move (a path that now leads nowhere is withdrawn here, gracefully).
        self.follow_latest();
        let graceful = self.group.group.route_mode == RouteMode::L2;
        self.sync_routes(graceful).await;
        let k = self.group.path_ids()[name];
        let ext = external_link(&tg, k, &self.local);
        for (ifname, addr) in [
            (ext.as_str(), tg.external_floating),
            (self.local.internal_interface.as_str(), tg.internal_floating),
        ] {
            if let Err(e) = self.net.remove(ifname, addr).await {
                self.note_error(format!("{name}: cannot remove {addr} from {ifname}: {e}"));
            }
        }
        info!(
            traffic_group = name,
            "released here: routes withdrawn, addresses removed"
        );
    }

    /// Route health: which spanning virtual addresses their policy says to advertise here
    /// now. What is not available here goes to the driver (heartbeats carry it: every device
    /// then withdraws the paths of the traffic groups placed here for those addresses).
    async fn refresh_health(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let rt = shared.runtime.load();
        let spanning: Vec<(IpAddr, bool)> = rt
            .virtual_addresses()
            .into_iter()
            .filter(|v| v.spanning)
            .map(|v| (v.address, v.advertised))
            .collect();
        drop(rt);
        drop(shared);
        let vips: Vec<IpAddr> = spanning.iter().map(|(a, _)| *a).collect();
        let unavailable: BTreeSet<IpAddr> = spanning
            .iter()
            .filter(|(_, adv)| !adv)
            .map(|(a, _)| *a)
            .collect();
        if vips != self.vips || unavailable != self.unavailable {
            for a in unavailable.difference(&self.unavailable) {
                warn!(virtual_address = %a, "route health: not available here (its virtual \
                    servers are not available): the paths of the traffic groups placed here are \
                    withdrawn on every device");
            }
            for a in self.unavailable.difference(&unavailable) {
                info!(virtual_address = %a, "route health: available here again");
            }
            self.vips = vips;
            self.unavailable = unavailable;
            let advertised: Vec<IpAddr> = self
                .vips
                .iter()
                .filter(|a| !self.unavailable.contains(a))
                .copied()
                .collect();
            self.status.lock().expect("status lock").advertised = advertised;
        }
        // Cheap when unchanged (the handle keeps the last set sent).
        self.driver.set_unavailable(self.unavailable.clone()).await;
    }

    /// Brings bgpd's routes from us to what is desired now.
    async fn sync_routes(&mut self, graceful: bool) {
        let Some(path) = self.local.bgpd_socket.clone() else {
            return;
        };
        if self.bgpd.as_ref().is_some_and(Bgpd::closed) {
            warn!("bgpd closed the control connection (it withdraws our routes); reconnecting");
            self.bgpd = None;
            self.announced.clear();
            let mut st = self.status.lock().expect("status lock");
            st.bgpd.connected = false;
            st.bgpd.routes.clear();
        }
        let want = desired_routes(
            &self.group,
            self.paths.as_deref().unwrap_or(&[]),
            &self.active,
            &self.vips,
        );
        if self.bgpd.is_some() && want == self.announced {
            return;
        }
        if self.bgpd.is_none() {
            match Bgpd::connect(&path).await {
                Ok(b) => {
                    info!("connected to bgpd at {}", path.display());
                    self.bgpd = Some(b);
                    self.announced.clear();
                    self.last_connect_error = None;
                }
                Err(e) => {
                    let msg = format!("cannot reach bgpd at {}: {e}", path.display());
                    if self.last_connect_error.as_deref() != Some(msg.as_str()) {
                        warn!("{msg}; retrying every {TICK:?}");
                        self.last_connect_error = Some(msg.clone());
                    }
                    let mut st = self.status.lock().expect("status lock");
                    st.bgpd.connected = false;
                    st.bgpd.last_error = Some(msg);
                    return;
                }
            }
        }
        let res = self.push(&want, graceful).await;
        let mut st = self.status.lock().expect("status lock");
        match res {
            Ok(()) => {
                st.bgpd.connected = true;
                st.bgpd.routes = self.announced.iter().cloned().collect();
            }
            Err(e) => {
                drop(st);
                self.note_error(format!("bgpd: {e}; reconnecting"));
                // bgpd withdraws what we announced when the connection closes.
                self.bgpd = None;
                self.announced.clear();
                let mut st = self.status.lock().expect("status lock");
                st.bgpd.connected = false;
                st.bgpd.routes.clear();
                st.bgpd.last_error = Some(e);
            }
        }
    }

    async fn push(&mut self, want: &BTreeSet<RouteIntent>, graceful: bool) -> Result<(), String> {
        let Some(b) = self.bgpd.as_mut() else {
            return Err("not connected".into());
        };
        // A changed next hop is a new route with the same key: announce replaces it.
        let keys = |s: &BTreeSet<RouteIntent>| -> BTreeSet<(IpNet, u32)> {
            s.iter().map(|r| (r.prefix, r.path_id)).collect()
        };
        let want_keys = keys(want);
        let gone: Vec<RouteIntent> = self
            .announced
            .iter()
            .filter(|r| !want_keys.contains(&(r.prefix, r.path_id)))
            .cloned()
            .collect();
        let new: Vec<RouteIntent> = want.difference(&self.announced).cloned().collect();
        if !gone.is_empty() {
            let routes: Vec<Value> = gone
                .iter()
                .map(|r| json!({"prefix": r.prefix.to_string(), "path_id": r.path_id}))
                .collect();
            b.call(json!({"cmd": "withdraw", "routes": routes, "graceful": graceful}))
                .await?;
            for r in &gone {
                info!(prefix = %r.prefix, path_id = r.path_id, graceful, "withdrawn");
                self.announced.remove(r);
            }
        }
        if !new.is_empty() {
            let routes: Vec<Value> = new.iter().map(RouteIntent::json).collect();
            b.call(json!({"cmd": "announce", "routes": routes})).await?;
            for r in new {
                info!(prefix = %r.prefix, path_id = r.path_id,
                    next_hop = %r.next_hop.map_or("self".to_string(), |a| a.to_string()), "announced");
                self.announced
                    .retain(|a| (a.prefix, a.path_id) != (r.prefix, r.path_id));
                self.announced.insert(r);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: &str = r#"
[group]
name = "seed"
key_file = "/nonexistent"
[[devices]]
name = "a"
failover_addresses = ["192.168.100.6"]
[[devices]]
name = "b"
failover_addresses = ["192.168.100.7"]
[[devices]]
name = "c"
failover_addresses = ["192.168.100.8"]
[[traffic_groups]]
name = "tg-1"
ha_order = ["a", "b", "c"]
external_floating = "20.1.1.2/24"
internal_floating = "10.1.1.2/24"
[[traffic_groups]]
name = "tg-2"
ha_order = ["b", "c", "a"]
external_floating = "20.1.1.3/24"
internal_floating = "10.1.1.3/24"
[[traffic_groups]]
name = "tg-3"
ha_order = ["c", "a", "b"]
external_floating = "20.1.1.4/24"
internal_floating = "10.1.1.4/24"
"#;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn owner(tg: &str, device: Option<&str>, unavailable: &[&str]) -> PathOwner {
        PathOwner {
            traffic_group: tg.into(),
            device: device.map(str::to_string),
            unavailable: unavailable.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn routes(r: &BTreeSet<RouteIntent>) -> Vec<(String, u32, Option<IpAddr>)> {
        r.iter()
            .map(|r| (r.prefix.to_string(), r.path_id, r.next_hop))
            .collect()
    }

    #[test]
    fn every_placed_traffic_group_gets_its_path_whoever_holds_it() {
        let g = GroupConfig::from_toml(GROUP, "g").unwrap();
        let vip: IpAddr = "30.1.1.10".parse().unwrap();
        let v6: IpAddr = "2001:db8::10".parse().unwrap();
        let paths = [
            owner("tg-1", Some("c"), &[]),
            owner("tg-2", Some("b"), &[]),
            owner("tg-3", Some("c"), &[]),
        ];
        // What is active here does not matter in L2 mode: the same three paths everywhere.
        for here in [set(&[]), set(&["tg-1", "tg-3"])] {
            assert_eq!(
                routes(&desired_routes(&g, &paths, &here, &[vip, v6])),
                vec![
                    ("30.1.1.10/32".into(), 1, Some("20.1.1.2".parse().unwrap())),
                    ("30.1.1.10/32".into(), 2, Some("20.1.1.3".parse().unwrap())),
                    ("30.1.1.10/32".into(), 3, Some("20.1.1.4".parse().unwrap())),
                ]
            );
        }
        // Route health: a VIP not available on the device tg-3 is placed on loses path 3 on
        // every device; a traffic group placed nowhere has no path; no paths known, none.
        let paths = [
            owner("tg-1", None, &[]),
            owner("tg-2", Some("b"), &[]),
            owner("tg-3", Some("c"), &["30.1.1.10"]),
        ];
        assert_eq!(
            routes(&desired_routes(&g, &paths, &set(&[]), &[vip])),
            vec![("30.1.1.10/32".into(), 2, Some("20.1.1.3".parse().unwrap()))]
        );
        assert!(desired_routes(&g, &[], &set(&["tg-1"]), &[vip]).is_empty());
        assert!(desired_routes(&g, &paths, &set(&["tg-1"]), &[]).is_empty());
    }

    #[test]
    fn routed_mode_adds_the_floating_host_route_of_what_is_held_here() {
        let text = GROUP
            .replace(
                "key_file = \"/nonexistent\"",
                "key_file = \"/nonexistent\"\nroute_mode = \"routed\"",
            )
            .replace("/24\"\ninternal", "/32\"\ninternal");
        let g = GroupConfig::from_toml(&text, "g").unwrap();
        let vip: IpAddr = "30.1.1.10".parse().unwrap();
        let paths = [
            owner("tg-1", Some("a"), &[]),
            owner("tg-2", Some("b"), &[]),
            owner("tg-3", Some("c"), &[]),
        ];
        let r: Vec<RouteIntent> = desired_routes(&g, &paths, &set(&["tg-1"]), &[vip])
            .into_iter()
            .collect();
        assert_eq!(r.len(), 4, "{r:?}");
        assert!(r.contains(&RouteIntent {
            prefix: "20.1.1.2/32".parse().unwrap(),
            path_id: 1,
            next_hop: None
        }));
        assert!(!r.iter().any(|r| r.prefix.to_string() == "20.1.1.3/32"));
        assert_eq!(r[0].json()["next_hop"], "self");
    }

    #[test]
    fn connections_belong_to_the_home_traffic_group_first() {
        let g = GroupConfig::from_toml(GROUP, "g").unwrap();
        let none = BTreeMap::new();
        let a = attribution(&g, "c", &set(&["tg-2", "tg-3"]), &none);
        assert_eq!(a.traffic_group.as_deref(), Some("tg-3"));
        assert_eq!(a.automap_v4, Some("10.1.1.4".parse().unwrap()));
        let a = attribution(&g, "c", &set(&["tg-2", "tg-1"]), &none);
        assert_eq!(a.traffic_group.as_deref(), Some("tg-1"));
        assert_eq!(
            attribution(&g, "c", &set(&[]), &none),
            AttributionState::default()
        );
        // MAC masquerade: tg-2's macvlan names tg-2 for what arrives on it, while active.
        let masq = BTreeMap::from([("tg-2".to_string(), (9, "tg2".to_string()))]);
        let a = attribution(&g, "c", &set(&["tg-2", "tg-3"]), &masq);
        assert_eq!(a.traffic_group.as_deref(), Some("tg-3"));
        assert_eq!(
            a.resolve(Some(9)),
            (Some("tg-2".into()), Some("10.1.1.3".parse().unwrap()), None)
        );
        assert!(attribution(&g, "c", &set(&["tg-3"]), &masq)
            .by_ingress
            .is_empty());
    }
}
