//! The daemon: shared state, listeners, monitors, reload and shutdown.
//!
//! `run(config, path, shutdown)` binds every virtual server, starts the monitors, the control
//! socket and the metrics endpoint, and serves until `shutdown` resolves. Reload (SIGHUP or
//! `lbctl reload`) reads the file again: a configuration that does not validate, or whose new
//! listeners cannot be bound, is rejected with its reason and the running one stays; otherwise
//! the new runtime is swapped in, new listeners start, removed ones stop, monitors are
//! reconciled, and established connections carry on with the objects they hold.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::cluster::agent::{Cluster, Local};
use crate::config::{Config, ConfigError, Protocol};
use crate::monitor::{spawn_monitor, Health, MonitorSpec};
use crate::state::Runtime;
use crate::tables::{now_ms, ConnTable, PersistTable, UpdateIds};

/// Errors that stop lbd (start-up) or reject a reload.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {proto} {addr}: {source}")]
    Listen {
        proto: Protocol,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("control socket {path}: {source}")]
    Control {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metrics listener {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start worker threads: {source}")]
    Workers { source: std::io::Error },
    #[error("no configuration file to reload from")]
    NoFile,
    #[error("device group: {0}")]
    Cluster(#[from] crate::cluster::agent::ClusterError),
    #[error("{0}")]
    Plugin(#[from] crate::plugins::PluginError),
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadSummary {
    pub listeners_added: Vec<String>,
    pub listeners_removed: Vec<String>,
    pub virtual_servers: usize,
    pub pools: usize,
}

type ListenerKey = (SocketAddr, Protocol);
type MonitorKey = (String, SocketAddr, String);
/// Listeners just bound, with their accept tasks.
type Started = Vec<(ListenerKey, Vec<JoinHandle<()>>)>;

struct MonitorTask {
    spec: MonitorSpec,
    source: Option<IpAddr>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Tasks {
    listeners: HashMap<ListenerKey, Vec<JoinHandle<()>>>,
    monitors: HashMap<MonitorKey, MonitorTask>,
}

/// Everything the data path, the monitors and the control socket share.
pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub conns: ConnTable,
    pub persist: PersistTable,
    pub ids: UpdateIds,
    /// The file reload reads (None: configuration given in memory).
    pub config_path: Option<PathBuf>,
    pub started_ms: u64,
    /// Accept tasks per TCP listener (SO_REUSEPORT sockets).
    pub workers: usize,
    /// Data-path runtimes (one thread each); when unset, accept loops run on the caller's
    /// runtime.
    worker_handles: std::sync::OnceLock<Vec<tokio::runtime::Handle>>,
    tasks: tokio::sync::Mutex<Tasks>,
    last_reload: Mutex<Option<(u64, Result<ReloadSummary, String>)>>,
    /// The device group, when one is configured.
    pub cluster: std::sync::OnceLock<Arc<Cluster>>,
    /// Plugins loaded from the plugin directory (never unloaded).
    pub plugins: Mutex<crate::plugins::Registry>,
    /// Mirroring, when the device group has it on.
    pub mirror: std::sync::OnceLock<Arc<crate::mirror::service::Mirroring>>,
    /// Each UDP listener's channel for rebuilding mirrored flows (a takeover).
    pub udp_restore: dashmap::DashMap<
        (std::net::SocketAddr, crate::config::Protocol),
        tokio::sync::mpsc::UnboundedSender<crate::proxy::udp::Restore>,
    >,
    me: Weak<Shared>,
}

impl Shared {
    pub fn new(config: Config, config_path: Option<PathBuf>, workers: usize) -> Arc<Shared> {
        Self::new_with_plugins(
            config,
            config_path,
            workers,
            crate::plugins::Registry::default(),
            &Default::default(),
        )
    }

    /// The same, with plugins already loaded and instantiated for `config`
    /// ([`crate::plugins::prepare`]).
    pub fn new_with_plugins(
        config: Config,
        config_path: Option<PathBuf>,
        workers: usize,
        registry: crate::plugins::Registry,
        instances: &std::collections::BTreeMap<String, Arc<crate::plugins::ProfilePlugin>>,
    ) -> Arc<Shared> {
        let rt = Runtime::build_with(Arc::new(config), None, instances);
        Arc::new_cyclic(|me| Shared {
            runtime: ArcSwap::from_pointee(rt),
            conns: ConnTable::default(),
            persist: PersistTable::default(),
            ids: UpdateIds::default(),
            config_path,
            started_ms: now_ms(),
            workers: workers.max(1),
            worker_handles: std::sync::OnceLock::new(),
            tasks: tokio::sync::Mutex::default(),
            last_reload: Mutex::new(None),
            cluster: std::sync::OnceLock::new(),
            plugins: Mutex::new(registry),
            mirror: std::sync::OnceLock::new(),
            udp_restore: dashmap::DashMap::new(),
            me: me.clone(),
        })
    }

    /// Runs the data path on `workers` threads of their own, each with a single-threaded
    /// runtime and its own SO_REUSEPORT socket per TCP listener: a connection is accepted,
    /// proxied and closed on one thread, with no cross-thread wake-ups. Call before `start`.
    pub fn spawn_workers(&self) -> std::io::Result<()> {
        let mut handles = Vec::new();
        for i in 0..self.workers {
            // Runs the tasks spawned onto this runtime for the life of the process.
            let h = runtime_thread(format!("lbd-worker-{i}"), |rt| {
                rt.block_on(std::future::pending::<()>())
            })?;
            handles.push(h);
        }
        let _ = self.worker_handles.set(handles);
        Ok(())
    }

    pub(crate) fn spawn_on_worker<F>(&self, i: usize, f: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self.worker_handles.get() {
            Some(h) if !h.is_empty() => h[i % h.len()].spawn(f),
            _ => tokio::spawn(f),
        }
    }

    /// When the last reload happened (Unix ms) and how it went.
    pub fn last_reload(&self) -> Option<(u64, Result<ReloadSummary, String>)> {
        self.last_reload.lock().expect("reload lock").clone()
    }

    /// Binds and starts the listeners of the current runtime and its monitors (start-up).
    pub async fn start(&self) -> Result<(), DaemonError> {
        let rt = self.runtime.load_full();
        let mut tasks = self.tasks.lock().await;
        let keys: Vec<ListenerKey> = rt.listeners.keys().copied().collect();
        let started = self.bind_listeners(&keys)?;
        tasks.listeners.extend(started);
        self.reconcile_monitors(&rt, &mut tasks);
        Ok(())
    }

    /// Reads the configuration file again and applies it.
    pub async fn reload(&self) -> Result<ReloadSummary, DaemonError> {
        let path = self.config_path.clone().ok_or(DaemonError::NoFile)?;
        let res = match Config::load(&path) {
            Ok(cfg) => self.apply(cfg).await,
            Err(e) => Err(DaemonError::Config(e)),
        };
        match &res {
            Ok(s) => info!(
                added = ?s.listeners_added,
                removed = ?s.listeners_removed,
                "reloaded {}",
                path.display()
            ),
            Err(e) => error!("reload rejected, the running configuration stays: {e}"),
        }
        *self.last_reload.lock().expect("reload lock") = Some((
            now_ms(),
            res.as_ref().map(Clone::clone).map_err(|e| e.to_string()),
        ));
        res
    }

    /// Applies a validated configuration.
    pub async fn apply(&self, cfg: Config) -> Result<ReloadSummary, DaemonError> {
        let mut tasks = self.tasks.lock().await;
        let old = self.runtime.load_full();
        let new_keys: Vec<ListenerKey> = cfg
            .virtual_servers
            .values()
            .map(|v| (v.destination, v.protocol))
            .filter(|k| !tasks.listeners.contains_key(k))
            .collect();
        // Plugins (new files of the directory) and their instances first, then the listeners:
        // if either fails, nothing has changed.
        let instances = {
            let mut reg = self.plugins.lock().expect("plugin registry lock");
            crate::plugins::prepare(&cfg, &mut reg)?
        };
        let started = self.bind_listeners(&new_keys)?;
        let rt = Arc::new(Runtime::build_with(Arc::new(cfg), Some(&old), &instances));
        self.runtime.store(rt.clone());
        tasks.listeners.extend(started);
        let removed: Vec<ListenerKey> = tasks
            .listeners
            .keys()
            .filter(|k| !rt.listeners.contains_key(k))
            .copied()
            .collect();
        for k in &removed {
            for t in tasks.listeners.remove(k).unwrap_or_default() {
                t.abort();
            }
        }
        self.reconcile_monitors(&rt, &mut tasks);
        drop(tasks);
        if let Some(c) = self.cluster.get() {
            if Local::from_config(&rt.config).as_ref() != Some(&c.local) {
                warn!("device-group settings in [device] changed: they take effect at the next restart");
            }
            c.refresh_virtual_addresses(self).await;
        }
        let show = |k: &ListenerKey| format!("{} {}", k.1, k.0);
        Ok(ReloadSummary {
            listeners_added: new_keys.iter().map(show).collect(),
            listeners_removed: removed.iter().map(show).collect(),
            virtual_servers: rt.virtual_servers.len(),
            pools: rt.pools.len(),
        })
    }

    /// Binds `keys` and starts their accept tasks; on any failure closes what it bound.
    fn bind_listeners(&self, keys: &[ListenerKey]) -> Result<Started, DaemonError> {
        let me = self.me.upgrade().expect("shared alive");
        let mut out: Started = Vec::new();
        let fail = |out: Started, k: &ListenerKey, e| {
            for (_, ts) in out {
                ts.into_iter().for_each(|t| t.abort());
            }
            DaemonError::Listen {
                proto: k.1,
                addr: k.0,
                source: e,
            }
        };
        for k in keys {
            match k.1 {
                Protocol::Tcp => {
                    let mut socks = Vec::new();
                    for _ in 0..self.workers {
                        match crate::proxy::tcp_listener(k.0, 4096) {
                            Ok(l) => socks.push(l),
                            Err(e) => return Err(fail(out, k, e)),
                        }
                    }
                    let ts = socks
                        .into_iter()
                        .enumerate()
                        .map(|(i, l)| {
                            self.spawn_on_worker(
                                i,
                                crate::proxy::tcp::accept_loop(me.clone(), *k, l),
                            )
                        })
                        .collect();
                    out.push((*k, ts));
                }
                Protocol::Udp => match crate::proxy::udp_socket(k.0) {
                    Ok(s) => {
                        let t = tokio::spawn(crate::proxy::udp::serve(me.clone(), *k, s));
                        out.push((*k, vec![t]));
                    }
                    Err(e) => return Err(fail(out, k, e)),
                },
            }
            info!("listening on {} {}", k.1, k.0);
        }
        Ok(out)
    }

    /// Starts, keeps or stops monitor tasks so that each (pool, member, monitor) of `rt` has
    /// exactly one, with its current spec.
    fn reconcile_monitors(&self, rt: &Runtime, tasks: &mut Tasks) {
        let cfg = &rt.config;
        let mut want: HashMap<MonitorKey, (MonitorSpec, Option<IpAddr>)> = HashMap::new();
        for (pname, pool) in &rt.pools {
            for m in &pool.members {
                let source = match m.addr.ip() {
                    IpAddr::V4(_) => cfg.device.internal_address.map(IpAddr::V4),
                    IpAddr::V6(_) => cfg.device.internal_address_v6.map(IpAddr::V6),
                };
                for mon in &pool.monitors {
                    let spec = cfg.monitors[mon].spec(mon);
                    want.insert((pname.clone(), m.addr, mon.clone()), (spec, source));
                }
            }
        }
        tasks.monitors.retain(|k, t| {
            let keep = want
                .get(k)
                .is_some_and(|(spec, src)| *spec == t.spec && *src == t.source);
            if !keep {
                t.task.abort();
            }
            keep
        });
        for (k, (spec, source)) in want {
            if tasks.monitors.contains_key(&k) {
                continue;
            }
            let weak = self.me.clone();
            let (pool, addr, mon) = k.clone();
            let on_change = Box::new(move |h: Health, reason: &str| {
                if let Some(shared) = weak.upgrade() {
                    shared.monitor_verdict(&pool, addr, &mon, h, reason);
                }
            });
            let task = spawn_monitor(Arc::new(spec.clone()), addr, source, on_change);
            tasks.monitors.insert(k, MonitorTask { spec, source, task });
        }
    }

    /// A monitor changed its verdict on a member.
    fn monitor_verdict(&self, pool: &str, addr: SocketAddr, mon: &str, h: Health, reason: &str) {
        let rt = self.runtime.load();
        let Some(p) = rt.pools.get(pool) else { return };
        let Some(m) = p.members.iter().find(|m| m.addr == addr) else {
            return;
        };
        let before: Vec<bool> = self.vs_availability(&rt, pool);
        let was = m.available();
        m.set_verdict(mon, h, reason);
        p.refresh();
        if was != m.available() {
            info!(pool, member = %addr, monitor = mon, "member is now {}: {reason}", m.status());
        }
        let after = self.vs_availability(&rt, pool);
        for ((name, _), (b, a)) in rt
            .virtual_servers
            .iter()
            .filter(|(_, v)| v.pool.name == pool)
            .zip(before.iter().zip(after.iter()))
        {
            if b != a {
                if *a {
                    info!(virtual_server = %name, "virtual server is available again");
                } else {
                    warn!(virtual_server = %name, "virtual server is unavailable: pool {pool} has no available member");
                }
            }
        }
    }

    fn vs_availability(&self, rt: &Runtime, pool: &str) -> Vec<bool> {
        rt.virtual_servers
            .values()
            .filter(|v| v.pool.name == pool)
            .map(|v| v.available())
            .collect()
    }

    /// Rebuilds the UDP flows and TCP connections mirrored for traffic group `tg`, which this
    /// device is taking over (before its floating addresses arrive).
    pub async fn restore_mirrored(&self, tg: &str, records: Vec<crate::mirror::proto::Record>) {
        if records.is_empty() {
            return;
        }
        let (udp, tcp): (Vec<_>, Vec<_>) = records
            .into_iter()
            .partition(|r| matches!(r.kind, crate::mirror::proto::RecordKind::UdpFlow { .. }));
        let (n_udp, n_tcp) = (udp.len(), tcp.len());
        let restored_udp =
            crate::proxy::udp::restore_flows(self, udp, Duration::from_secs(1)).await;
        let restored_tcp = match self.me.upgrade() {
            Some(me) => crate::proxy::mirrored::restore(&me, tg, tcp),
            None => 0,
        };
        info!(
            traffic_group = tg,
            udp_flows = n_udp,
            restored_udp,
            tcp_connections = n_tcp,
            restored_tcp,
            "mirroring: flows and connections rebuilt"
        );
    }

    /// Stops every listener and monitor.
    pub async fn stop(&self) {
        let mut tasks = self.tasks.lock().await;
        for (_, ts) in tasks.listeners.drain() {
            ts.into_iter().for_each(|t| t.abort());
        }
        for (_, t) in tasks.monitors.drain() {
            t.task.abort();
        }
    }
}

/// Runs lbd until `shutdown` resolves.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let workers = config.device.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let control_path = config.device.control_socket.clone();
    let metrics_addr = config.device.metrics;
    let mut registry = crate::plugins::Registry::default();
    let instances = crate::plugins::prepare(&config, &mut registry)?;
    let shared = Shared::new_with_plugins(config, config_path, workers, registry, &instances);
    shared
        .spawn_workers()
        .map_err(|source| DaemonError::Workers { source })?;
    // Listeners first: once the control socket answers, every virtual server is listening
    // (scripts and tests wait for the control socket).
    shared.start().await?;
    let local = Local::from_config(&shared.runtime.load().config);
    if let Some(local) = local {
        let cluster = Cluster::start(local, &shared).await?;
        let _ = shared.cluster.set(cluster);
    }
    if shared.mirror.get().is_none() {
        let rt = shared.runtime.load();
        let vss = rt.config.virtual_servers.iter().filter(|(_, v)| v.mirror);
        let profiles = rt.config.persistence.iter().filter(|(_, p)| p.mirror);
        for name in vss
            .map(|(n, _)| format!("virtual server {n}"))
            .chain(profiles.map(|(n, _)| format!("persistence profile {n}")))
        {
            tracing::warn!(
                "{name} has mirror = true, but mirroring is off (it needs device.device_group and \
                 device.mirror_trust_dir): nothing is mirrored"
            );
        }
    }
    let control = bind_control(&control_path)?;
    let metrics = match metrics_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Metrics { addr, source })?,
        ),
        None => None,
    };
    let control_task = tokio::spawn(crate::control::serve(control, shared.clone()));
    let metrics_task = metrics.map(|l| {
        info!(
            "metrics on http://{}/metrics",
            l.local_addr().map(|a| a.to_string()).unwrap_or_default()
        );
        tokio::spawn(crate::metrics::serve(l, shared.clone()))
    });
    let sweeper = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                shared.persist.sweep(now_ms());
            }
        })
    };
    let rt = shared.runtime.load();
    info!(
        device = %rt.config.device.name,
        virtual_servers = rt.virtual_servers.len(),
        pools = rt.pools.len(),
        workers,
        "lbd running"
    );
    drop(rt);
    let hup = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(mut sig) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while sig.recv().await.is_some() {
                info!("SIGHUP: reloading");
                let _ = shared.reload().await;
            }
        })
    };
    shutdown.await;
    info!("shutting down");
    if let Some(c) = shared.cluster.get() {
        // Hand the traffic groups over: routes withdrawn, floating addresses removed, so that
        // this device's kernel does not keep answering for them.
        c.shutdown(Duration::from_secs(3)).await;
    }
    hup.abort();
    sweeper.abort();
    control_task.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    shared.stop().await;
    let _ = std::fs::remove_file(&control_path);
    Ok(())
}

/// Binds the control socket, replacing a stale one (a socket nobody answers on).
pub fn bind_control(path: &std::path::Path) -> Result<tokio::net::UnixListener, DaemonError> {
    let err = |source| DaemonError::Control {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another lbd is running on it",
            )));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    tokio::net::UnixListener::bind(path).map_err(err)
}

/// Starts a thread named `name` with a single-threaded tokio runtime (all drivers on) and
/// returns the runtime's handle once it is built; `run` then owns the runtime on that thread
/// (typically `block_on` of a future that ends when the thread should).
pub(crate) fn runtime_thread(
    name: String,
    run: impl FnOnce(tokio::runtime::Runtime) + Send + 'static,
) -> std::io::Result<tokio::runtime::Handle> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name(name).spawn(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => {
                let _ = tx.send(Ok(rt.handle().clone()));
                run(rt);
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    })?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the runtime thread ended at start"))?
}
