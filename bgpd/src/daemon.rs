//! The daemon: wires listeners, neighbor tasks, the control socket and metrics together.
//!
//! [`run`] takes its resources as arguments (bound listeners, a shutdown future), so tests bind
//! `127.0.0.1:0` or a namespace address; the `bgpd` binary binds what the configuration says.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tracing::{info, warn};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::peer::{self, Global, PeerCmd, PeerHandle};
use crate::rib::{Owner, RouteTable, SharedTable};
use crate::sockopt;

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
    #[error("tcp md5 for neighbor {neighbor} on listener {addr}: {source}")]
    Md5 {
        neighbor: std::net::IpAddr,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the control socket and the daemon share.
pub struct Shared {
    pub config: Config,
    pub table: SharedTable,
    pub peers: Vec<PeerHandle>,
    pub metrics: Arc<Metrics>,
}

/// Binds the listeners a configuration asks for.
pub fn bind_all(cfg: &Config) -> Result<Vec<TcpListener>, DaemonError> {
    cfg.listen
        .iter()
        .map(|a| sockopt::listener(*a).map_err(|source| DaemonError::Listen { addr: *a, source }))
        .collect()
}

/// Binds the control socket, replacing a stale socket file (one nobody answers on).
pub fn bind_control(path: &std::path::Path) -> Result<UnixListener, DaemonError> {
    let e = |source| DaemonError::Control {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(e)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(e(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another bgpd is listening on it",
            )));
        }
        std::fs::remove_file(path).map_err(e)?;
    }
    UnixListener::bind(path).map_err(e)
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
    let metrics = Arc::new(Metrics::new());
    let table: SharedTable = Arc::new(Mutex::new(RouteTable::with_size_gauge(
        metrics.routes.clone(),
    )));
    table
        .lock()
        .expect("route table lock")
        .announce(config.routes.clone(), Owner::Static);

    // RFC 2385: the listener needs each peer's key to accept its signed SYN.
    for n in config.neighbors.iter().filter(|n| n.password.is_some()) {
        for (l, addr) in listeners
            .iter()
            .filter_map(|l| l.local_addr().ok().map(|a| (l, a)))
        {
            if addr.is_ipv4() != n.address.is_ipv4() {
                continue;
            }
            sockopt::set_md5(l, n.address, n.password.as_deref().map(str::as_bytes)).map_err(
                |source| DaemonError::Md5 {
                    neighbor: n.address,
                    addr,
                    source,
                },
            )?;
        }
    }

    let global = Global {
        local_as: config.local_as,
        router_id: config.router_id,
    };
    let peers: Vec<PeerHandle> = config
        .neighbors
        .iter()
        .map(|n| peer::spawn(n.clone(), global.clone(), table.clone(), metrics.clone()))
        .collect();
    let shared = Arc::new(Shared {
        config,
        table,
        peers,
        metrics,
    });

    let mut tasks = Vec::new();
    for l in listeners {
        tasks.push(tokio::spawn(accept_loop(l, shared.clone())));
    }
    tasks.push(tokio::spawn(crate::control::serve(control, shared.clone())));
    if let Some(m) = metrics_listener {
        tasks.push(tokio::spawn(crate::metrics::serve(
            m,
            shared.metrics.clone(),
        )));
    }
    info!(
        router_id = %shared.config.router_id, local_as = shared.config.local_as,
        neighbors = shared.peers.len(), routes = shared.config.routes.len(), "bgpd running"
    );

    shutdown.await;
    info!("shutting down: withdrawing every route");
    // Stop taking control requests first, so nothing is announced after the withdraw.
    for t in &tasks {
        t.abort();
    }
    let sd = &shared.config.shutdown;
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
    for p in &shared.peers {
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
    info!("bgpd stopped");
    Ok(())
}

/// Hands accepted connections to the neighbor they come from; refuses the rest.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
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
        match shared.peers.iter().find(|p| p.address == ip) {
            Some(p) => {
                if p.inbound.try_send(sock).is_err() {
                    warn!(%from, "neighbor task busy: refusing connection");
                }
            }
            None => {
                shared.metrics.rejected_connections.inc();
                warn!(%from, "connection from an address that is not a neighbor: refused");
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
