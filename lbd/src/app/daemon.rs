//! The daemon's own part: the listeners of the virtual servers, the monitors, and reload.
//!
//! [`Daemon::start`] binds every virtual server and starts the monitors. Reload (SIGHUP or
//! `lbctl reload`, through the app) reads the file again: a configuration that does not validate, or whose new
//! listeners cannot be bound, is rejected with its reason and the running one stays; otherwise
//! the new runtime is swapped in, new listeners start, removed ones stop, monitors are
//! reconciled, and established connections carry on with the objects they hold.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError, Protocol};
use crate::monitor::{spawn_monitor_with, Health, MonitorSpec};
use crate::plugins::{PluginError, Registry};
use crate::proxy::datapath::ListenerKey;
use crate::proxy::DataPath;
use crate::state::{Live, Runtime};
use crate::tables::now_ms;

/// Errors that stop the daemon's start or reject a reload.
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
    #[error("no configuration file to reload from")]
    NoFile,
    #[error("{0}")]
    Plugin(#[from] PluginError),
    #[error("device group: {0}")]
    DeviceGroup(String),
    #[error("lbd is draining before it stops: no reload")]
    Draining,
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadSummary {
    pub listeners_added: Vec<String>,
    pub listeners_removed: Vec<String>,
    pub virtual_servers: usize,
    pub pools: usize,
}

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

/// The listeners, the monitors and reload, around the data path.
pub struct Daemon {
    pub dp: Arc<DataPath>,
    /// The file reload reads (None: configuration given in memory).
    pub config_path: Option<PathBuf>,
    tasks: tokio::sync::Mutex<Tasks>,
    /// Set once [`Daemon::start`] bound every listener.
    started: std::sync::atomic::AtomicBool,
    last_reload: Mutex<Option<(u64, Result<ReloadSummary, String>)>>,
    /// Plugins loaded from the plugin directory (never unloaded).
    pub plugins: Mutex<Registry>,
}

impl Daemon {
    /// A daemon for `config` with no plugins, no mirroring and no worker threads of its own
    /// (the data path runs on the caller's runtime): for tests and tools.
    pub fn new(config: Config, config_path: Option<PathBuf>) -> Arc<Daemon> {
        let live = Arc::new(Live::new(Runtime::build(Arc::new(config), None)));
        let dp = Arc::new(DataPath::new(live, None, Vec::new()));
        Daemon::with(dp, config_path, Registry::default())
    }

    /// A daemon serving `dp` (whose runtime was built with `plugins`' instances).
    pub fn with(dp: Arc<DataPath>, config_path: Option<PathBuf>, plugins: Registry) -> Arc<Daemon> {
        Arc::new(Daemon {
            dp,
            config_path,
            tasks: tokio::sync::Mutex::default(),
            started: std::sync::atomic::AtomicBool::new(false),
            last_reload: Mutex::new(None),
            plugins: Mutex::new(plugins),
        })
    }

    /// The live state (runtime and tables).
    pub fn live(&self) -> &Arc<Live> {
        &self.dp.live
    }

    /// When the last reload happened (Unix ms) and how it went.
    pub fn last_reload(&self) -> Option<(u64, Result<ReloadSummary, String>)> {
        self.last_reload.lock().expect("reload lock").clone()
    }

    /// Binds and starts the listeners of the current runtime and its monitors (start-up).
    pub async fn start(&self) -> Result<(), DaemonError> {
        let rt = self.dp.runtime.load_full();
        let mut tasks = self.tasks.lock().await;
        let keys: Vec<ListenerKey> = rt.listeners.keys().copied().collect();
        let started = self.bind_listeners(&keys)?;
        tasks.listeners.extend(started);
        self.reconcile_monitors(&rt, &mut tasks);
        self.started
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// `Ok` when every listener of the running configuration is bound and its accept tasks
    /// run (`/healthz`); otherwise the first one that is not, or that lbd drains. While a reload holds the
    /// listeners' lock the answer is `Ok` once started: a reload binds the new listeners
    /// before it swaps the configuration, and the old ones serve until then.
    pub fn listeners_ready(&self) -> Result<(), String> {
        if let Some((phase, _)) = self.dp.drain.status() {
            return Err(format!("draining ({phase}): lbd is stopping"));
        }
        let rt = self.dp.runtime.load();
        let Ok(tasks) = self.tasks.try_lock() else {
            return if self.started.load(std::sync::atomic::Ordering::Relaxed) {
                Ok(())
            } else {
                Err("starting: the virtual servers' listeners are being bound".into())
            };
        };
        for (key, vs) in &rt.listeners {
            match tasks.listeners.get(key) {
                Some(ts) if !ts.is_empty() && ts.iter().all(|t| !t.is_finished()) => {}
                Some(_) => {
                    return Err(format!(
                        "virtual server {} ({} {}): its listener stopped",
                        vs.name, key.1, key.0
                    ))
                }
                None => {
                    return Err(format!(
                        "virtual server {} ({} {}): not listening",
                        vs.name, key.1, key.0
                    ))
                }
            }
        }
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
        // A reload would listen again on what the drain closed.
        if self.dp.drain.is_draining() {
            return Err(DaemonError::Draining);
        }
        let old = self.dp.runtime.load_full();
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
        self.dp.runtime.store(rt.clone());
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
                    for _ in 0..self.dp.workers() {
                        match crate::sys::tcp_listener(k.0, 4096) {
                            Ok(l) => socks.push(l),
                            Err(e) => return Err(fail(out, k, e)),
                        }
                    }
                    let ts = socks
                        .into_iter()
                        .enumerate()
                        .map(|(i, l)| {
                            self.dp.spawn_on_worker(
                                i,
                                crate::proxy::tcp::accept_loop(self.dp.clone(), *k, l),
                            )
                        })
                        .collect();
                    out.push((*k, ts));
                }
                Protocol::Udp => match crate::sys::udp_socket(k.0).and_then(|s| s.into_std()) {
                    Ok(s) => {
                        // On a data-path worker, not the control runtime: a persistence plugin
                        // asked about every datagram (one that hangs, say) must not stall the
                        // monitors, the control socket and mirroring. The socket is registered
                        // with that worker's reactor there.
                        let (dp, key) = (self.dp.clone(), *k);
                        let t = self.dp.spawn_on_worker(out.len(), async move {
                            match tokio::net::UdpSocket::from_std(s) {
                                Ok(s) => crate::proxy::udp::serve(dp, key, s).await,
                                Err(e) => tracing::error!(listener = %key.0, "udp listener: {e}"),
                            }
                        });
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
            let live = Arc::downgrade(&self.dp.live);
            let (pool, addr, mon) = k.clone();
            let on_change = Box::new(move |h: Health, reason: &str| {
                if let Some(live) = live.upgrade() {
                    monitor_verdict(&live, &pool, addr, &mon, h, reason);
                }
            });
            let live = Arc::downgrade(&self.dp.live);
            let (pool, _, mon) = k.clone();
            let on_success = Box::new(move || {
                if let Some(live) = live.upgrade() {
                    monitor_success(&live, &pool, addr, &mon);
                }
            });
            let task =
                spawn_monitor_with(Arc::new(spec.clone()), addr, source, on_change, on_success);
            tasks.monitors.insert(k, MonitorTask { spec, source, task });
        }
    }

    /// A step of the drain: marks the data path closed to new work and closes every TCP
    /// listener, so that a new connection is refused (the kernel answers a
    /// SYN with a reset; connections already queued and not yet accepted are reset too). UDP
    /// listeners stay for the flows they have and open no new one. Returns how many TCP
    /// listeners were closed; they are closed when it returns.
    pub async fn stop_accepting(&self) -> usize {
        let mut tasks = self.tasks.lock().await;
        self.dp.drain.close();
        let tcp: Vec<ListenerKey> = tasks
            .listeners
            .keys()
            .filter(|k| k.1 == Protocol::Tcp)
            .copied()
            .collect();
        let mut handles = Vec::new();
        for k in &tcp {
            for t in tasks.listeners.remove(k).unwrap_or_default() {
                t.abort();
                handles.push(t);
            }
        }
        drop(tasks);
        // An aborted accept loop drops its socket on its worker: wait for that.
        for t in handles {
            let _ = t.await;
        }
        tcp.len()
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

/// A monitor's probe of a member succeeded: passive health lets the member back in.
fn monitor_success(live: &Live, pool: &str, addr: SocketAddr, mon: &str) {
    let rt = live.runtime.load();
    let Some(p) = rt.pools.get(pool) else { return };
    let Some(m) = p.members.iter().find(|m| m.addr == addr) else {
        return;
    };
    if m.passive_success() == crate::passive::Change::BackIn {
        p.refresh();
        info!(pool, member = %addr, monitor = mon,
            "member back in: monitor probe succeeded after passive health took it out");
    }
}

/// A monitor changed its verdict on a member.
fn monitor_verdict(live: &Live, pool: &str, addr: SocketAddr, mon: &str, h: Health, reason: &str) {
    let rt = live.runtime.load();
    let Some(p) = rt.pools.get(pool) else { return };
    let Some(m) = p.members.iter().find(|m| m.addr == addr) else {
        return;
    };
    let before: Vec<bool> = vs_availability(&rt, pool);
    let was = m.available();
    m.set_verdict(mon, h, reason);
    p.refresh();
    if was != m.available() {
        info!(pool, member = %addr, monitor = mon, "member is now {}: {reason}", m.status());
    }
    let after = vs_availability(&rt, pool);
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

fn vs_availability(rt: &Runtime, pool: &str) -> Vec<bool> {
    rt.virtual_servers
        .values()
        .filter(|v| v.pool.name == pool)
        .map(|v| v.available())
        .collect()
}
