//! The app: the one place that knows every subsystem and wires them together.
//!
//! [`run`] builds, in this order: the plugins and the live state (runtime and tables);
//! mirroring, when the device group has it on (its receivers listen before anything is
//! announced); the data path with mirroring as its tap; the daemon (listeners and monitors);
//! the device group, with the app's [`Host`] as its takeover and route-health ports; then
//! mirroring's reconciler on the device group's placement watches, and the unsynced set back
//! into the device group. The control socket and the metrics endpoint serve [`App`]; the
//! metrics endpoint is bound first of all, so that its `/healthz` says 503 until the
//! listeners are bound and the device group runs.
//!
//! Who may call whom (`docs/architecture.md`): `app` → `cluster`, `mirror`, `proxy`,
//! `monitor`, `plugins`, `state`, `tables`, `config`; `cluster` knows the rest of lbd only
//! through `cluster::ports`; `proxy` knows mirroring only through `mirror::tap`; `mirror`
//! reads placement from the watches `app` hands it.

pub mod check;
mod context;
pub mod control;
pub mod daemon;
pub mod drain;
pub mod metrics;
pub mod regroup;
pub mod sync;
mod syncnet;
mod systemd;

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tracing::{info, warn};

use crate::cluster::agent::{Cluster, ClusterError, Local};
use crate::cluster::config::GroupConfig;
use crate::config::{Config, ConfigError};
use crate::mirror::service::{MirrorError, Mirroring};
use crate::mirror::tap::MirrorTap;
use crate::proxy::DataPath;
use crate::state::{Live, Runtime};
use crate::tables::now_ms;
pub use context::App;
use context::Host;
pub use daemon::{Daemon, DaemonError, ReloadSummary};

/// Errors that stop lbd at start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Daemon(#[from] DaemonError),
    #[error("control socket {path}: {source}")]
    Control {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metrics listener {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start worker threads: {source}")]
    Workers { source: std::io::Error },
    #[error("device group: {0}")]
    Cluster(#[from] ClusterError),
    #[error("device group: {0}")]
    GroupFile(#[from] ConfigError),
    #[error("{0}")]
    ControlAccess(ConfigError),
    #[error("{0}")]
    Mirror(#[from] MirrorError),
    #[error("config sync: {0}")]
    Sync(#[from] crate::configsync::DocumentError),
}

/// Runs lbd until `shutdown` resolves, then drains (see [`run_until`]) with no way to cut the
/// drain short.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AppError> {
    run_until(config, config_path, shutdown, std::future::pending()).await
}

/// Runs lbd until `shutdown` resolves (see the module documentation for the order things
/// start in). Unlike bgpd, lbd binds its control socket and metrics listener itself; the
/// metrics listener first (`/healthz` answers 503 until ready), the control socket last:
/// once the control socket exists, every virtual server listens and the device group runs
/// (scripts and tests wait for the socket).
///
/// Then it drains for up to `device.drain_timeout` ([`drain`]: traffic groups given up, the
/// listeners closed, open connections waited for), cut short when `again` resolves (a second
/// signal), and stops: the device group, the listeners and monitors, the control socket.
pub async fn run_until(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
    again: impl Future<Output = ()>,
) -> Result<(), AppError> {
    // As many descriptors as allowed: the data path's budget is what is left of them after a
    // reserve (proxy::budget), measured once the listeners are bound.
    let nofile = match crate::sys::raise_nofile() {
        Ok(n) => Some(n),
        Err(e) => {
            warn!("RLIMIT_NOFILE: {e}: no descriptor budget for the data path");
            None
        }
    };
    let control_path = config.device.control_socket.clone();
    let policy = config
        .control_policy("configuration")
        .map_err(AppError::ControlAccess)?;
    let metrics_addr = config.device.metrics;
    let endpoint = metrics::Endpoint::new();
    let metrics_task = match metrics_addr {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| AppError::Metrics { addr, source })?;
            info!(
                "metrics on http://{}/metrics, readiness on /healthz",
                l.local_addr().map(|a| a.to_string()).unwrap_or_default()
            );
            let ep: Arc<dyn spanlb_control::http::Endpoint> = endpoint.clone();
            Some(AbortOnDrop(tokio::spawn(spanlb_control::http::serve(
                l, ep,
            ))))
        }
        None => None,
    };
    let workers = config.device.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let mut registry = crate::plugins::Registry::default();
    let instances = crate::plugins::prepare(&config, &mut registry).map_err(DaemonError::from)?;
    let local = Local::from_config(&config);
    let live = Arc::new(Live::new(Runtime::build_with(
        Arc::new(config),
        None,
        &instances,
    )));
    let group = match &local {
        Some(l) => Some(GroupConfig::load(&l.group_file)?),
        None => None,
    };
    let mirror = match (&local, &group) {
        (Some(l), Some(g)) => match &l.mirror_trust_dir {
            Some(dir) => Some(Mirroring::start(&l.me, g, dir, &live).await?),
            None => None,
        },
        _ => None,
    };
    if mirror.is_none() {
        warn_mirror_off(&live);
    }
    let handles =
        DataPath::spawn_workers(workers).map_err(|source| AppError::Workers { source })?;
    let tap = mirror.clone().map(|m| m as Arc<dyn MirrorTap>);
    let dp = Arc::new(DataPath::new(live.clone(), tap, handles));
    let daemon = Daemon::with(dp.clone(), config_path, registry);
    // Listeners first: once the control socket answers, every virtual server is listening
    // (scripts and tests wait for the control socket).
    daemon.start().await?;
    if let Some(limit) = nofile {
        let open = crate::sys::open_descriptors().unwrap_or(0);
        let budget = crate::proxy::budget::budget_for(limit, open);
        dp.budget.set(budget, limit);
        info!(
            nofile = limit,
            reserve = crate::proxy::budget::reserve(limit),
            open,
            budget,
            "descriptor budget of the data path (TCP: 2 per connection, UDP: 1 per flow)"
        );
    }
    let cluster = match (local, group) {
        (Some(local), Some(group)) => {
            let host = Arc::new(Host {
                dp: dp.clone(),
                mirror: mirror.clone(),
            });
            let c = Cluster::start(local, group, host.clone(), host).await?;
            if let Some(m) = &mirror {
                m.spawn_reconciler(c.roles(), c.here());
                tokio::spawn(forward_unsynced(m.unsynced(), c.clone()));
            }
            Some(c)
        }
        _ => None,
    };
    let config = live.runtime.load_full().config.clone();
    let sync = match &cluster {
        Some(c) => Some(
            sync::ConfigSync::start(
                c.clone(),
                daemon.clone(),
                mirror.clone(),
                &config,
                daemon.config_path.as_deref(),
            )
            .await?,
        ),
        None => None,
    };
    let app = Arc::new(App {
        daemon,
        cluster,
        mirror,
        sync,
        control: Arc::default(),
    });
    let control = bind_control(&control_path, &policy)?;
    endpoint.attach(&app);
    let gate = spanlb_control::access::Gate::new(
        policy,
        spanlb_control::access::MAX_CLIENTS,
        app.control.clone(),
    );
    let control_task = tokio::spawn(control::serve_with(control, gate, app.clone()));
    let sweeper = {
        let live = live.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut warned: Option<std::time::Instant> = None;
            loop {
                tick.tick().await;
                live.persist.sweep(now_ms());
                // Each profile's `max_records`: what is over goes, soonest to expire first
                // (between two sweeps a table grows by at most a second's new records).
                let caps: std::collections::HashMap<String, usize> = live
                    .runtime
                    .load()
                    .config
                    .persistence
                    .iter()
                    .map(|(n, p)| (n.clone(), p.max_records))
                    .collect();
                let evicted = live.persist.enforce_caps(&caps);
                if !evicted.is_empty()
                    && warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
                {
                    warned = Some(std::time::Instant::now());
                    warn!(
                        ?evicted,
                        "persistence records over max_records evicted (soonest to expire first)"
                    );
                }
            }
        })
    };
    let rt = live.runtime.load();
    info!(
        device = %rt.config.device.name,
        virtual_servers = rt.virtual_servers.len(),
        pools = rt.pools.len(),
        workers,
        "lbd running"
    );
    drop(rt);
    let hup = {
        let app = app.clone();
        // Registered here, before READY=1, not in the task: a SIGHUP that comes right after
        // READY reloads rather than kills (SIGHUP's default action).
        let sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        tokio::spawn(async move {
            let Ok(mut sig) = sig else {
                return;
            };
            while sig.recv().await.is_some() {
                info!("SIGHUP: reloading");
                let _ = app.reload().await;
            }
        })
    };
    // Listeners bound, the device group running, the control socket answering, SIGHUP
    // taken: a `Type=notify` unit (packaging/systemd) starts what is ordered after lbd now.
    systemd::notify(&[sd_notify::NotifyState::Ready]);
    shutdown.await;
    systemd::notify(&[sd_notify::NotifyState::Stopping]);
    // No reload while stopping: it would listen again on what the drain closes.
    hup.abort();
    let limit = app.live().runtime.load().config.device.drain_timeout;
    if limit.is_zero() {
        let open = app.daemon.dp.open();
        info!(
            connections = open.connections,
            flows = open.flows,
            "stopping at once (drain_timeout = 0): open connections are closed"
        );
    } else {
        drain::drain(&app, limit, again).await;
    }
    info!("shutting down");
    if let Some(c) = &app.cluster {
        // Hand the traffic groups over: routes withdrawn, floating addresses removed, so that
        // this device's kernel does not keep answering for them.
        c.shutdown(Duration::from_secs(3)).await;
    }
    sweeper.abort();
    control_task.abort();
    drop(metrics_task);
    app.daemon.stop().await;
    let _ = std::fs::remove_file(&control_path);
    Ok(())
}

/// Aborts its task when dropped: the metrics endpoint, started before anything that may fail.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Hands mirroring's unsynced set to the device group as it changes (heartbeats carry it).
async fn forward_unsynced(
    mut unsynced: tokio::sync::watch::Receiver<BTreeSet<String>>,
    c: Arc<Cluster>,
) {
    loop {
        let set = unsynced.borrow_and_update().clone();
        c.driver.set_unsynced(set).await;
        if unsynced.changed().await.is_err() {
            return;
        }
    }
}

/// Mirroring is off: say so for every object that asks for it.
fn warn_mirror_off(live: &Live) {
    let rt = live.runtime.load();
    let vss = rt.config.virtual_servers.iter().filter(|(_, v)| v.mirror);
    let profiles = rt.config.persistence.iter().filter(|(_, p)| p.mirror);
    for name in vss
        .map(|(n, _)| format!("virtual server {n}"))
        .chain(profiles.map(|(n, _)| format!("persistence profile {n}")))
    {
        warn!(
            "{name} has mirror = true, but mirroring is off (it needs device.device_group and \
             device.mirror_trust_dir): nothing is mirrored"
        );
    }
}

/// Binds the control socket with mode 0660 and `policy`'s groups whatever the umask,
/// replacing a stale one (a socket nobody answers on) ([`spanlb_control::access::bind`]).
pub fn bind_control(
    path: &Path,
    policy: &spanlb_control::access::Policy,
) -> Result<UnixListener, AppError> {
    spanlb_control::access::bind(path, policy, "lbd").map_err(|source| AppError::Control {
        path: path.to_path_buf(),
        source,
    })
}
