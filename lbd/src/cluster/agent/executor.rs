//! The executor: the one task that carries out activations and releases in order, follows
//! the paths the driver publishes with the routes, and checks route health and the bgpd
//! connection every [`TICK`] (the order of operations is in the `agent` module
//! documentation).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::super::bgpd::{Bgpd, RouteIntent};
use super::super::config::{GroupConfig, RouteMode, TrafficGroup};
use super::super::driver::{Actions, DriverHandle, Paths};
use super::super::netaddr::{self, NetAddr};
use super::super::placement::PathOwner;
use super::super::ports::{RouteHealth, Takeover};
use super::local::TICK;
use super::local::{Local, LocalStatus};
use super::routes::{attribution, desired_routes, external_link};
use crate::tables::now_ms;

pub(super) enum Step {
    Activate(String),
    Release(String),
    /// The device group changed live: the traffic groups' definitions from now on (sent
    /// before the driver hears of the change, so an activation of a new traffic group finds
    /// its definition here).
    Group(GroupConfig),
}

pub(super) struct Sink(pub mpsc::UnboundedSender<Step>);

impl Actions for Sink {
    fn activate(&self, traffic_group: &str, _reason: &str) {
        let _ = self.0.send(Step::Activate(traffic_group.to_string()));
    }
    fn release(&self, traffic_group: &str, _reason: &str) {
        let _ = self.0.send(Step::Release(traffic_group.to_string()));
    }
}

/// The task that carries out activations and releases in order (module documentation).
pub(super) struct Executor {
    pub local: Local,
    pub group: GroupConfig,
    pub net: Arc<NetAddr>,
    pub takeover: Arc<dyn Takeover>,
    pub health: Arc<dyn RouteHealth>,
    pub status: Arc<Mutex<LocalStatus>>,
    pub driver: DriverHandle,
    pub paths_rx: watch::Receiver<Paths>,
    /// Publishes the traffic groups whose addresses are in place here.
    pub here: watch::Sender<BTreeSet<String>>,
    /// Traffic groups whose addresses are in place here.
    pub active: BTreeSet<String>,
    /// Announcement (gratuitous ARP) tasks per traffic group.
    pub announcing: HashMap<String, JoinHandle<()>>,
    /// The spanning virtual addresses of the running configuration.
    pub vips: Vec<IpAddr>,
    /// Those route health says not to advertise here.
    pub unavailable: BTreeSet<IpAddr>,
    /// Where each traffic group's path leads, as last known (kept while the driver does not
    /// know: after a stall).
    pub paths: Option<Vec<PathOwner>>,
    pub bgpd: Option<Bgpd>,
    /// What bgpd has from us.
    pub announced: BTreeSet<RouteIntent>,
    /// Whether bgpd was told `ready` on this connection (after the first full push).
    pub bgpd_ready_sent: bool,
    pub last_connect_error: Option<String>,
    /// Traffic group → its MAC-masquerade macvlan (index, name).
    pub masquerade: BTreeMap<String, (u32, String)>,
    /// Traffic groups removed from the device group while active here, with their definition
    /// and path id, until they are released.
    pub retired: BTreeMap<String, (TrafficGroup, u32)>,
}

impl Executor {
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Step>) {
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
                    Some(Step::Group(g)) => self.regroup(g).await,
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

    fn publish_here(&self) {
        self.here.send_replace(self.active.clone());
    }

    /// A traffic group's definition and path id: from the running device group, or (removed
    /// while active here) as it was.
    fn tg(&self, name: &str) -> Option<(TrafficGroup, u32)> {
        match self.group.traffic_group(name) {
            Some(t) => Some((t.clone(), self.group.path_ids()[name])),
            None => self.retired.get(name).cloned(),
        }
    }

    /// The device group changed live (`membership`): traffic groups removed while active
    /// here keep their definition until the driver releases them; the routes follow the new
    /// group (a removed traffic group's paths are withdrawn, a new one's announced once
    /// placement puts it somewhere).
    async fn regroup(&mut self, group: GroupConfig) {
        for name in &self.active {
            if group.traffic_group(name).is_none() {
                if let Some(def) = self.tg(name) {
                    self.retired.insert(name.clone(), def);
                }
            }
        }
        // Removed from the group: this device announces nothing any more (the driver, silent
        // now, publishes no paths; the last known ones must not stay announced).
        if !group.devices.iter().any(|d| d.name == self.local.me) {
            self.paths = Some(Vec::new());
            self.status.lock().expect("status lock").paths = self.paths.clone();
        }
        self.group = group;
        self.set_attribution();
        self.sync_routes(false).await;
    }

    fn note_error(&self, msg: String) {
        error!("{msg}");
        self.status.lock().expect("status lock").last_error = Some((now_ms(), msg));
    }

    fn set_attribution(&self) {
        let a = attribution(&self.group, &self.local.me, &self.active, &self.masquerade);
        self.takeover.set_attribution(a.clone());
        let mut st = self.status.lock().expect("status lock");
        st.attribution = a;
        st.active_here.retain(|k, _| self.active.contains(k));
    }

    async fn activate(&mut self, name: &str) {
        let Some((tg, k)) = self.tg(name) else {
            warn!(
                traffic_group = name,
                "activation of a traffic group this device does not know"
            );
            return;
        };
        // Mirrored state first (docs/architecture.md, "Mirroring"): the sessions' sockets must exist before the
        // floating addresses arrive, or the kernel answers their next segments with RST.
        self.takeover.adopt(name).await;
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
        self.publish_here();
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
        let Some((tg, k)) = self.tg(name) else { return };
        // Mirrored connections first: they live on the new owner, and nothing may go out
        // from here for them (docs/architecture.md, "Mirroring").
        self.takeover.release(name);
        if let Some(t) = self.announcing.remove(name) {
            t.abort();
        }
        self.active.remove(name);
        self.publish_here();
        self.set_attribution();
        // Routes first (and wait for bgpd), then the addresses. The paths as they are after
        // this move (a path that now leads nowhere is withdrawn here, gracefully).
        self.follow_latest();
        let graceful = self.group.group.route_mode == RouteMode::L2;
        self.sync_routes(graceful).await;
        self.retired.remove(name);
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
        let spanning = self.health.spanning();
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
                    self.bgpd_ready_sent = false;
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
        if res.is_ok() && !self.bgpd_ready_sent {
            if let Some(b) = self.bgpd.as_mut() {
                // Only End-of-RIB waits for it (up to bgpd's route_wait_ms): an error is
                // logged, not a reason to reconnect.
                if let Err(e) = b.ready().await {
                    warn!("telling bgpd our routes are complete failed: {e}");
                }
                self.bgpd_ready_sent = true;
            }
        }
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
            b.withdraw(&gone, graceful).await?;
            for r in &gone {
                info!(prefix = %r.prefix, path_id = r.path_id, graceful, "withdrawn");
                self.announced.remove(r);
            }
        }
        if !new.is_empty() {
            b.announce(&new).await?;
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
