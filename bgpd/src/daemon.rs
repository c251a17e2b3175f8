//! The daemon: wires listeners, neighbor tasks, the control socket and metrics together.
//!
//! [`run`] takes its resources as arguments (bound listeners, a shutdown future), so tests bind
//! `127.0.0.1:0` or a namespace address; the `bgpd` binary binds what the configuration says.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::peer::{self, Global, PeerCmd, PeerHandle};
use crate::reload;
use crate::rib::{Owner, RouteTable, SharedTable};
use crate::sockopt;

/// A connection from an address that is not a neighbor is warned about at most this often
/// per address.
pub const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("control socket {path}: {source}")]
    Control {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("bfd for neighbor {neighbor}: {source}")]
    Bfd {
        neighbor: std::net::IpAddr,
        source: crate::bfd::driver::DriverError,
    },
    #[error("tcp md5 for neighbor {neighbor} on listener {addr}: {source}")]
    Md5 {
        neighbor: std::net::IpAddr,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the control socket and the daemon share.
pub struct Shared {
    /// The running configuration (a reload replaces it).
    config: RwLock<Arc<Config>>,
    pub table: SharedTable,
    /// One task per neighbor (a reload adds, removes and replaces them).
    peers: RwLock<Vec<PeerHandle>>,
    pub metrics: Arc<Metrics>,
    global: Global,
    /// The BGP listeners (a neighbor added by a reload gets its TCP MD5 key on them).
    listeners: Vec<Arc<TcpListener>>,
    /// Where the configuration was read from (reloads read it again).
    config_path: Option<PathBuf>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// The neighbors' BFD sessions.
    pub bfd: crate::bfd::manager::Manager,
    /// True once a control client said `ready` (or the graceful-restart route wait passed):
    /// End-of-RIB may go.
    pub routes_ready: tokio::sync::watch::Sender<bool>,
}

/// One neighbor as the control socket sees it.
pub struct PeerRef {
    pub address: std::net::IpAddr,
    pub bfd: Option<crate::bfd::driver::PeerHandle>,
    pub cmd: tokio::sync::mpsc::Sender<PeerCmd>,
    pub status: Arc<Mutex<crate::peer::PeerStatus>>,
}

impl Shared {
    /// The running configuration.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().expect("config lock").clone()
    }

    /// The neighbors now.
    pub fn peers(&self) -> Vec<PeerRef> {
        self.peers
            .read()
            .expect("peers lock")
            .iter()
            .map(|p| PeerRef {
                address: p.address,
                bfd: p.bfd.clone(),
                cmd: p.cmd.clone(),
                status: p.status.clone(),
            })
            .collect()
    }

    /// Reads the configuration file again and applies it (SIGHUP, `bgpctl reload`).
    /// systemd hears RELOADING=1 before and READY=1 after, whatever the outcome.
    pub async fn reload_file(&self) -> Result<reload::Summary, String> {
        notify_systemd(&reloading());
        let res = self.reload_file_now().await;
        notify_systemd(&[sd_notify::NotifyState::Ready]);
        res
    }

    async fn reload_file_now(&self) -> Result<reload::Summary, String> {
        let path = self
            .config_path
            .clone()
            .ok_or("no configuration file to reload from")?;
        let new = Config::load(&path).map_err(|e| e.to_string())?;
        self.reload(new).await
    }

    /// Applies `new` as a reload does (`reload`): refused whole, nothing changed, when it
    /// needs a restart.
    pub async fn reload(&self, new: Config) -> Result<reload::Summary, String> {
        let _one = self.reloading.lock().await;
        let old = self.config();
        let plan = reload::plan(&old, &new)?;
        for n in plan.add.iter().chain(&plan.reset) {
            self.tune_listeners(n).map_err(|e| e.to_string())?;
        }
        // Sessions first: a neighbor removed or reset is closed before routes change.
        let going: Vec<std::net::IpAddr> = plan
            .remove
            .iter()
            .copied()
            .chain(plan.reset.iter().map(|n| n.address))
            .collect();
        let stopped: Vec<PeerHandle> = {
            let mut peers = self.peers.write().expect("peers lock");
            let (out, keep): (Vec<_>, Vec<_>) =
                peers.drain(..).partition(|p| going.contains(&p.address));
            *peers = keep;
            out
        };
        let drain = Duration::from_millis(new.shutdown.drain_ms);
        for p in stopped {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if p.cmd
                .send(PeerCmd::Shutdown { drain, done: tx })
                .await
                .is_ok()
            {
                let _ = tokio::time::timeout(drain + Duration::from_millis(500), rx).await;
            }
            p.task.abort();
            if let Some(b) = &p.bfd {
                b.remove();
            }
        }
        for n in &plan.remove {
            info!(neighbor = %n, "reload: neighbor removed");
            for l in &self.listeners {
                // Its TCP MD5 key goes with it (none there: nothing to remove).
                let _ = sockopt::set_md5(l.as_ref(), *n, None);
            }
        }
        for n in &plan.update {
            let cmd = self
                .peers()
                .into_iter()
                .find(|p| p.address == n.address)
                .map(|p| p.cmd);
            if let Some(cmd) = cmd {
                info!(neighbor = %n.address, "reload: neighbor updated, its session stays");
                let _ = cmd.send(PeerCmd::Retune(Box::new(n.clone()))).await;
            }
        }
        for n in plan.reset.iter().chain(&plan.add) {
            info!(neighbor = %n.address, "reload: neighbor {}", if plan.reset.contains(n) { "reset with its new settings" } else { "added" });
            // The configuration validated; a BFD socket that cannot be bound now leaves the
            // neighbor without BFD, said loudly, rather than half a reload.
            let bfd = match self.bfd.add(n).await {
                Ok(b) => b,
                Err(e) => {
                    error!(neighbor = %n.address, "reload: bfd not started: {e}");
                    None
                }
            };
            let h = peer::spawn(
                n.clone(),
                self.global.clone(),
                self.table.clone(),
                self.metrics.clone(),
                bfd,
            );
            self.peers.write().expect("peers lock").push(h);
        }
        {
            let mut t = self.table.lock().expect("route table lock");
            t.withdraw(&plan.withdraw);
            t.announce(plan.announce.clone(), Owner::Static);
        }
        *self.config.write().expect("config lock") = Arc::new(new);
        let s = plan.summary();
        info!(summary = ?s, "reloaded");
        Ok(s)
    }

    /// RFC 2385: the listeners need neighbor `n`'s key to accept its signed SYN; with GTSM
    /// (RFC 5082) they answer with TTL 255.
    fn tune_listeners(&self, n: &crate::config::NeighborConfig) -> Result<(), DaemonError> {
        if n.ttl_security {
            for l in &self.listeners {
                if let Err(e) = sockopt::gtsm_listener(l) {
                    warn!(neighbor = %n.address, "cannot set TTL 255 on a listener for GTSM: {e}");
                }
            }
        }
        let Some(pw) = n.password.as_deref() else {
            // A neighbor reset without its password any more: its old key goes (none there:
            // nothing to remove).
            for l in &self.listeners {
                let _ = sockopt::set_md5(l.as_ref(), n.address, None);
            }
            return Ok(());
        };
        for (l, addr) in self
            .listeners
            .iter()
            .filter_map(|l| l.local_addr().ok().map(|a| (l, a)))
        {
            if addr.is_ipv4() != n.address.is_ipv4() {
                continue;
            }
            sockopt::set_md5(l, n.address, Some(pw.as_bytes())).map_err(|source| {
                DaemonError::Md5 {
                    neighbor: n.address,
                    addr,
                    source,
                }
            })?;
        }
        Ok(())
    }
}

/// Binds the listeners a configuration asks for.
pub fn bind_all(cfg: &Config) -> Result<Vec<TcpListener>, DaemonError> {
    cfg.listen
        .iter()
        .map(|a| sockopt::listener(*a).map_err(|source| DaemonError::Listen { addr: *a, source }))
        .collect()
}

/// Binds the control socket for root and bgpd's own uid and group only (tests; bgpd binds
/// with its configuration's groups, [`bind_control_as`]).
pub fn bind_control(path: &std::path::Path) -> Result<UnixListener, DaemonError> {
    bind_control_as(path, &spanlb_control::access::Policy::owner_only())
}

/// Binds the control socket with mode 0660 and `policy`'s groups whatever the umask,
/// replacing a stale socket file (one nobody answers on) ([`spanlb_control::access::bind`]).
pub fn bind_control_as(
    path: &std::path::Path,
    policy: &spanlb_control::access::Policy,
) -> Result<UnixListener, DaemonError> {
    spanlb_control::access::bind(path, policy, "bgpd").map_err(|source| DaemonError::Control {
        path: path.display().to_string(),
        source,
    })
}

/// Runs bgpd until `shutdown` resolves, then withdraws every route (with GRACEFUL_SHUTDOWN and
/// a linger first when configured), closes every session with Cease / Administrative Shutdown
/// and returns.
pub async fn run(
    config: Config,
    listeners: Vec<TcpListener>,
    control: UnixListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    run_from(config, None, listeners, control, metrics_listener, shutdown).await
}

/// [`run`] with the configuration read from `config_path`: SIGHUP and `bgpctl reload` read it
/// again ([`reload`]).
pub async fn run_from(
    config: Config,
    config_path: Option<PathBuf>,
    listeners: Vec<TcpListener>,
    control: UnixListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let config_policy = config.control_policy("configuration")?;
    let metrics = Arc::new(Metrics::new());
    // Served first of all: `/healthz` answers 503 until everything below is set up.
    let _metrics_task = metrics_listener.map(|l| {
        let ep: Arc<dyn spanlb_control::http::Endpoint> = metrics.clone();
        AbortOnDrop(tokio::spawn(spanlb_control::http::serve(l, ep)))
    });
    let table: SharedTable = Arc::new(Mutex::new(RouteTable::with_size_gauge(
        metrics.routes.clone(),
    )));
    table
        .lock()
        .expect("route table lock")
        .announce(config.routes.clone(), Owner::Static);

    let gr = config.graceful_restart.clone();
    // RFC 4724 §3 Restart State: a marker left by a bgpd that did not stop cleanly (killed,
    // crashed) says this start is a restart; a clean stop removes it.
    let marker = running_marker(&config.control_socket);
    let restarted = marker.exists();
    if let Err(e) = std::fs::write(&marker, std::process::id().to_string()) {
        warn!("cannot write {}: {e}", marker.display());
    }
    let (routes_ready, ready_rx) = tokio::sync::watch::channel(!gr.enabled);
    let global = Global {
        local_as: config.local_as,
        router_id: config.router_id,
        graceful_restart: gr.enabled.then_some((restarted, gr.restart_time)),
        routes_ready: ready_rx,
    };
    if gr.enabled {
        info!(
            restarted,
            restart_time = gr.restart_time,
            "graceful restart: end-of-rib waits for lbd's routes ({} ms at most)",
            gr.route_wait_ms
        );
    }
    let listeners: Vec<Arc<TcpListener>> = listeners.into_iter().map(Arc::new).collect();
    let neighbors = config.neighbors.clone();
    let shared = Arc::new(Shared {
        config: RwLock::new(Arc::new(config)),
        table,
        peers: RwLock::new(Vec::new()),
        metrics,
        global,
        listeners: listeners.clone(),
        config_path,
        reloading: tokio::sync::Mutex::new(()),
        bfd: crate::bfd::manager::Manager::new(),
        routes_ready,
    });
    for n in &neighbors {
        shared.tune_listeners(n)?;
    }
    for n in neighbors {
        let bfd = shared
            .bfd
            .add(&n)
            .await
            .map_err(|source| DaemonError::Bfd {
                neighbor: n.address,
                source,
            })?;
        let h = peer::spawn(
            n,
            shared.global.clone(),
            shared.table.clone(),
            shared.metrics.clone(),
            bfd,
        );
        shared.peers.write().expect("peers lock").push(h);
    }

    let mut tasks = Vec::new();
    if gr.enabled {
        let s = shared.clone();
        let wait = Duration::from_millis(gr.route_wait_ms);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if !*s.routes_ready.borrow() {
                info!("graceful restart: no control client said ready in {wait:?}; sending end-of-rib");
                s.routes_ready.send_replace(true);
            }
        }));
    }
    for l in listeners {
        tasks.push(tokio::spawn(accept_loop(l, shared.clone())));
    }
    if shared.config_path.is_some() {
        let s = shared.clone();
        // Registered here, before READY=1, not in the task: a SIGHUP that comes right after
        // READY reloads rather than kills (SIGHUP's default action).
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        tasks.push(tokio::spawn(async move {
            let Ok(mut hup) = hup else {
                return;
            };
            while hup.recv().await.is_some() {
                info!("SIGHUP: reloading");
                if let Err(e) = s.reload_file().await {
                    error!("reload refused, the running configuration stays: {e}");
                }
            }
        }));
    }
    let gate = spanlb_control::access::Gate::new(
        config_policy,
        spanlb_control::access::MAX_CLIENTS,
        shared.metrics.control.clone(),
    );
    tasks.push(tokio::spawn(crate::control::serve(
        control,
        gate,
        shared.clone(),
    )));
    shared.metrics.set_ready();
    {
        let c = shared.config();
        info!(
            router_id = %c.router_id, local_as = c.local_as,
            neighbors = c.neighbors.len(), routes = c.routes.len(), "bgpd running"
        );
    }

    // Listeners bound, sessions starting, the control socket served: a `Type=notify` unit
    // (packaging/systemd) starts lbd, ordered after bgpd, now.
    notify_systemd(&[sd_notify::NotifyState::Ready]);

    shutdown.await;
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    info!("shutting down: withdrawing every route");
    // Stop taking control requests first, so nothing is announced after the withdraw.
    for t in &tasks {
        t.abort();
    }
    let config = shared.config();
    let sd = &config.shutdown;
    let keys = shared.table.lock().expect("route table lock").keys();
    if sd.graceful_shutdown && !keys.is_empty() {
        shared
            .table
            .lock()
            .expect("route table lock")
            .mark_graceful(&keys);
        info!(
            linger_ms = sd.linger_ms,
            "announced GRACEFUL_SHUTDOWN; lingering"
        );
        tokio::time::sleep(Duration::from_millis(sd.linger_ms)).await;
    }
    shared
        .table
        .lock()
        .expect("route table lock")
        .withdraw(&keys);
    let drain = Duration::from_millis(sd.drain_ms);
    let mut waits = Vec::new();
    for p in shared.peers() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if p.cmd
            .send(PeerCmd::Shutdown { drain, done: tx })
            .await
            .is_ok()
        {
            waits.push(rx);
        }
    }
    for w in waits {
        let _ = tokio::time::timeout(drain + Duration::from_millis(500), w).await;
    }
    // BFD last, with AdminDown: the peers see BFD disabled, not a path failure (RFC 5882 §3.2).
    for p in shared.peers() {
        if let Some(b) = p.bfd {
            let _ = tokio::time::timeout(Duration::from_millis(200), b.remove_and_wait()).await;
        }
    }
    let _ = std::fs::remove_file(&marker);
    info!("bgpd stopped");
    Ok(())
}

/// Tells systemd where bgpd is (sd_notify(3); the `Type=notify` unit in packaging/systemd):
/// READY=1 once it serves, RELOADING=1 and READY=1 around a reload, STOPPING=1 at shutdown.
/// A no-op when $NOTIFY_SOCKET is unset (bgpd not started by systemd); a failure to send is
/// logged at debug level and changes nothing else.
fn notify_systemd(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!("sd_notify: {e}");
    }
}

/// RELOADING=1 with the MONOTONIC_USEC systemd asks a reload notification to carry.
fn reloading() -> Vec<sd_notify::NotifyState<'static>> {
    let mut v = vec![sd_notify::NotifyState::Reloading];
    if let Ok(t) = sd_notify::NotifyState::monotonic_usec_now() {
        v.push(t);
    }
    v
}

/// The file that exists while bgpd runs (next to its control socket).
pub fn running_marker(control_socket: &std::path::Path) -> PathBuf {
    control_socket.with_extension("running")
}

/// Hands accepted connections to the neighbor they come from; refuses the rest.
async fn accept_loop(listener: Arc<TcpListener>, shared: Arc<Shared>) {
    let mut refused: std::collections::HashMap<std::net::IpAddr, (std::time::Instant, u64)> =
        std::collections::HashMap::new();
    loop {
        let (sock, from) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = canonical(from.ip());
        let inbound = shared
            .peers
            .read()
            .expect("peers lock")
            .iter()
            .find(|p| p.address == ip)
            .map(|p| p.inbound.clone());
        match inbound {
            Some(inbound) => {
                if inbound.try_send(sock).is_err() {
                    warn!(%from, "neighbor task busy: refusing connection");
                }
            }
            None => {
                shared.metrics.rejected_connections.inc();
                // At most one warning per address per REFUSED_LOG_EVERY (a scan or a
                // misconfigured router must not flood the log); the rest at debug.
                let now = std::time::Instant::now();
                if refused.len() > 1024 {
                    refused.retain(|_, (at, _)| now.duration_since(*at) < REFUSED_LOG_EVERY);
                }
                match refused.get_mut(&ip) {
                    Some((at, suppressed)) if now.duration_since(*at) < REFUSED_LOG_EVERY => {
                        *suppressed += 1;
                        tracing::debug!(%from, "connection from an address that is not a neighbor: refused");
                    }
                    entry => {
                        let suppressed = entry.map_or(0, |(_, s)| *s);
                        warn!(%from, suppressed, "connection from an address that is not a neighbor: refused");
                        refused.insert(ip, (now, 0));
                    }
                }
            }
        }
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(Into::into).unwrap_or(ip),
        v4 => v4,
    }
}

/// Aborts its task when dropped (the metrics endpoint, when [`run_from`] returns).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
