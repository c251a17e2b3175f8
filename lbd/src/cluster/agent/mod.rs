//! The device group inside lbd: what happens on this device when a traffic group becomes
//! active here or leaves (docs/design.md, "ECMP and failover"), and the routes lbd asks bgpd to announce.
//!
//! [`Cluster::start`] takes the device-group file (loaded by the app) and the group key, removes floating
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
//! # Routes (docs/design.md, "ECMP and failover")
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
//! The rooms: `local` (this device's settings and status), `routes` (the route and
//! attribution rules, pure), `executor` (the task above), `links` (eligibility: standby and
//! the link fail-safe), `show` (the `lbctl show` views); bgpd's client is `cluster::bgpd`, and
//! everything the executor asks of the rest of lbd goes through `cluster::ports`.
//!
//! This module must not decide placement (that is `placement`) or block the driver.

mod executor;
mod links;
mod local;
mod routes;
mod show;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::config::GroupConfig;
use super::driver::{self, DriverCounters, DriverError, DriverHandle};
use super::heartbeat::GroupKey;
use super::membership;
use super::netaddr::{self, NetAddr};
use super::placement::Role;
use super::ports::{RouteHealth, Takeover};
use crate::config::ConfigError;
use arc_swap::ArcSwap;
use executor::{Executor, Sink, Step};
use links::Eligibility;
pub use local::{BgpdStatus, Local, LocalStatus, TICK};
pub use routes::{attribution, desired_routes, external_link};

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
}

/// The running device group of this lbd.
pub struct Cluster {
    pub local: Local,
    /// The running device group (config sync may replace it: [`Cluster::reconfigure`]).
    group: ArcSwap<GroupConfig>,
    key: Arc<GroupKey>,
    /// The executor's queue (a live membership change goes there first).
    steps: mpsc::UnboundedSender<Step>,
    /// Serialises membership changes.
    regroup: tokio::sync::Mutex<()>,
    pub driver: DriverHandle,
    elig: Arc<Eligibility>,
    status: Arc<Mutex<LocalStatus>>,
    /// The traffic groups whose addresses are in place here (the executor publishes them).
    here: watch::Receiver<BTreeSet<String>>,
    health: Arc<dyn RouteHealth>,
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
    ///
    /// `takeover` and `health` are the rest of lbd as the executor sees it (`ports`).
    pub async fn start(
        local: Local,
        group: GroupConfig,
        takeover: Arc<dyn Takeover>,
        health: Arc<dyn RouteHealth>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let key = GroupKey::from_file(&group.group.key_file)
            .map_err(|e| ClusterError::Key(format!("{}: {e}", group.group.key_file.display())))?;
        let key = Arc::new(key);
        // With mirroring on, auto-failback waits for a returning device's mirror to be in sync.
        let dcfg = group
            .driver_config(&local.me, key.clone(), local.mirror_trust_dir.is_some())
            .map_err(ClusterError::Membership)?;
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
            links::masquerade_sysctls(&local.external_interface);
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
        let (driver, driver_task) =
            driver::spawn_on_own_thread(dcfg, Arc::new(Sink(tx.clone()))).await?;
        let (here_tx, here_rx) = watch::channel(BTreeSet::new());
        let elig = Arc::new(Eligibility {
            standby: AtomicBool::new(false),
            links_ok: AtomicBool::new(true),
            driver: driver.clone(),
        });
        let cluster = Arc::new(Cluster {
            local: local.clone(),
            group: ArcSwap::from_pointee(group.clone()),
            key,
            steps: tx,
            regroup: tokio::sync::Mutex::new(()),
            driver,
            elig: elig.clone(),
            status: status.clone(),
            here: here_rx,
            health: health.clone(),
            tasks: Mutex::new(vec![driver_task]),
        });
        cluster.add_virtual_addresses(&net).await;
        let interfaces = [
            local.external_interface.clone(),
            local.internal_interface.clone(),
        ];
        let exec = Executor {
            local,
            group,
            net: net.clone(),
            takeover,
            health,
            here: here_tx,
            status: status.clone(),
            driver: cluster.driver.clone(),
            paths_rx: cluster.driver.paths(),
            active: BTreeSet::new(),
            announcing: HashMap::new(),
            vips: Vec::new(),
            unavailable: BTreeSet::new(),
            paths: None,
            bgpd: None,
            announced: BTreeSet::new(),
            bgpd_ready_sent: false,
            last_connect_error: None,
            masquerade,
            retired: BTreeMap::new(),
        };
        let exec_task = tokio::spawn(exec.run(rx));
        let links_task = tokio::spawn(links::watch_links(
            Arc::downgrade(&elig),
            interfaces,
            status,
            net,
        ));
        cluster
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([exec_task, links_task]);
        info!(device = %cluster.local.me, group = %cluster.group().group.name,
            mode = %cluster.group().group.route_mode, "device group started");
        Ok(cluster)
    }

    /// The running device group.
    pub fn group(&self) -> Arc<GroupConfig> {
        self.group.load_full()
    }

    /// Takes a new device-group file live (config sync; `membership` says what may change):
    /// the executor learns the traffic groups' definitions first, then the driver the new
    /// devices and traffic groups (it releases what was removed, activates what is new
    /// here). Refuses, changing nothing, what needs a restart.
    pub async fn reconfigure(&self, new: GroupConfig) -> Result<(), ClusterError> {
        let _one = self.regroup.lock().await;
        let old = self.group();
        if *old == new {
            return Ok(());
        }
        membership::check_live(&old, &new, &self.local.me).map_err(ClusterError::Membership)?;
        let (spec, peers) = membership::driver_inputs(
            &new,
            &self.local.me,
            &self.key,
            self.local.mirror_trust_dir.is_some(),
        );
        let _ = self.steps.send(Step::Group(new.clone()));
        self.driver.reconfigure(spec, peers).await;
        let member = new.devices.iter().any(|d| d.name == self.local.me);
        info!(device = %self.local.me, member,
            devices = ?new.devices.iter().map(|d| &d.name).collect::<Vec<_>>(),
            traffic_groups = ?new.traffic_groups.iter().map(|t| &t.name).collect::<Vec<_>>(),
            "device group changed live");
        self.group.store(Arc::new(new));
        Ok(())
    }

    /// Adds every spanning virtual address of the running configuration to the VIP interface
    /// (start-up and after a reload). Addresses are never removed by lbd.
    pub async fn add_virtual_addresses(&self, net: &NetAddr) {
        for (address, _) in self.health.spanning() {
            match net
                .add(&self.local.vip_interface, IpNet::from(address))
                .await
            {
                Ok(true) => info!(
                    "added virtual address {address} to {}",
                    self.local.vip_interface
                ),
                Ok(false) => {}
                Err(e) => error!("cannot add virtual address {address}: {e}"),
            }
        }
    }

    /// The same, opening its own netlink connection (for reloads).
    pub async fn refresh_virtual_addresses(&self) {
        match NetAddr::new().await {
            Ok(net) => self.add_virtual_addresses(&net).await,
            Err(e) => error!("cannot add virtual addresses: {e}"),
        }
    }

    /// `lbctl standby` (true) / `lbctl release` (false).
    pub async fn set_standby(&self, standby: bool) {
        self.elig.standby.store(standby, Ordering::Relaxed);
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
        self.elig.push().await;
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
        self.elig.standby.store(true, Ordering::Relaxed);
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
                if !held.is_empty() {
                    info!("shutdown: traffic groups released and taken over: {held:?}");
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        warn!("shutdown: not every traffic group was taken over within {limit:?}");
    }

    /// The peers alive and eligible now: those that can take over what this device holds.
    pub async fn peers_to_take_over(&self) -> Vec<String> {
        let st = self.driver.status().await;
        st.devices
            .into_iter()
            .filter(|d| d.name != self.local.me && d.alive && d.eligible)
            .map(|d| d.name)
            .collect()
    }

    pub fn counters(&self) -> DriverCounters {
        self.driver.counters()
    }

    pub fn local_status(&self) -> LocalStatus {
        self.status.lock().expect("status lock").clone()
    }

    /// Watches the traffic groups whose addresses are in place here.
    pub fn here(&self) -> watch::Receiver<BTreeSet<String>> {
        self.here.clone()
    }

    /// Watches each traffic group's holder and next-active device.
    pub fn roles(&self) -> watch::Receiver<Vec<Role>> {
        self.driver.roles()
    }

    /// Whether `lbctl standby` is in force.
    pub fn standby(&self) -> bool {
        self.elig.standby.load(Ordering::Relaxed)
    }
}
