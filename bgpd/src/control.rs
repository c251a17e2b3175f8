//! The local control socket: a Unix socket speaking JSON lines, used by lbd and bgpctl.
//!
//! The requests, the answers and the framing are `spanlb_control`'s ([`spanlb_control::bgpd`]
//! documents the wire format): one request per line, one response per line, lines of at most
//! [`MAX_LINE`] bytes. Fate sharing: the routes a client announced without `persistent` are
//! withdrawn when its connection closes; an idle connection is never closed, one with a
//! request line begun and not finished for 10 s is.
//!
//! Who may connect is [`spanlb_control::access`]'s: root, bgpd's uid and the control group
//! in full, the read-only group for the read-only requests; at most
//! [`spanlb_control::access::MAX_CLIENTS`] clients, the last slot kept for root. A refused
//! client gets one error line; refusals are counted and logged once a second at most.

use std::sync::Arc;
use std::time::Duration;

use spanlb_control::access::{Admitted, Gate, LogLimit, Refused};
use spanlb_control::framing::{self, End, Limits};
use spanlb_control::Envelope;
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, info_span, warn, Instrument};

use crate::daemon::Shared;
use crate::peer::{PeerCmd, PeerStatus};
use crate::rib::{Owner, RouteKey};

pub use spanlb_control::bgpd::{
    AdjRibOut, Announced, BfdSession, BfdSessions, Neighbors, Request, Response, RibOut, RouteInfo,
    RouteList, RouteRef, Withdrawing, Withdrawn, MAX_LINE,
};

/// How a control connection is bounded: no idle limit (a client's routes live as long as its
/// connection), but a half-sent line must be finished within 10 s.
const LIMITS: Limits = Limits {
    max_line: MAX_LINE,
    idle: None,
    partial: Some(framing::PARTIAL_LINE_TIMEOUT),
    write_timeout: framing::WRITE_TIMEOUT,
};

/// Accepts control clients through `gate` until the task is dropped.
pub async fn serve(listener: UnixListener, gate: Gate, shared: Arc<Shared>) {
    let mut next_id = 0u64;
    let refusals = LogLimit::new(Duration::from_secs(1));
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let admitted = match gate.admit(&sock) {
            Ok(a) => a,
            Err(r) => {
                if let Some(more) = refusals.allow() {
                    warn!(
                        peer = ?match &r {
                            Refused::Permission { peer, .. } => peer.clone(),
                            Refused::ClientLimit { peer, .. } => Some(peer.clone()),
                        },
                        refused_since_last_line = more,
                        "control client refused: {}",
                        r.message()
                    );
                }
                r.answer::<Response>(sock);
                continue;
            }
        };
        next_id += 1;
        let id = next_id;
        let shared = shared.clone();
        tokio::spawn(
            client(id, sock, admitted, shared).instrument(info_span!("control", client = id)),
        );
    }
}

async fn client(id: u64, sock: UnixStream, admitted: Admitted, shared: Arc<Shared>) {
    shared.metrics.control_clients.inc();
    let stats = shared.metrics.control.clone();
    let end = framing::serve_as(sock, LIMITS, admitted.access, &stats, |req| {
        handle(id, req, &shared)
    })
    .await;
    match end {
        End::ReadFailed(e) => warn!("control client read error: {e}"),
        End::TooLong => warn!("control client sent a request over {MAX_LINE} bytes: closed"),
        End::PartialLine => warn!(
            "control client left a request line unfinished for {:?}: closed",
            framing::PARTIAL_LINE_TIMEOUT
        ),
        End::Closed | End::Idle | End::WriteFailed(_) => {}
    }
    drop(admitted);
    shared.metrics.control_clients.dec();
    let n = shared
        .table
        .lock()
        .expect("route table lock")
        .drop_client(id);
    if n > 0 {
        info!(routes = n, "control client went away: withdrew its routes");
    }
}

/// Carries out one request.
pub async fn handle(id: u64, req: Request, shared: &Arc<Shared>) -> Response {
    match req {
        Request::Announce { routes, persistent } => {
            for (i, r) in routes.iter().enumerate() {
                if let Err((key, msg)) = r.validate() {
                    return Response::failure(format!("routes[{i}].{key}: {msg}"));
                }
            }
            let n = shared
                .table
                .lock()
                .expect("route table lock")
                .announce(routes, Owner::Client { id, persistent });
            Response::ok(&Announced { announced: n })
        }
        Request::Withdraw { routes, graceful } => {
            let keys: Vec<RouteKey> = routes
                .iter()
                .map(|r| RouteKey {
                    prefix: r.prefix,
                    path_id: r.path_id,
                })
                .collect();
            if graceful {
                let marked = shared
                    .table
                    .lock()
                    .expect("route table lock")
                    .mark_graceful(&keys);
                let n = marked.len();
                let linger = Duration::from_millis(shared.config().shutdown.linger_ms);
                let shared2 = shared.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(linger).await;
                    let mut t = shared2.table.lock().expect("route table lock");
                    // Only what is still being withdrawn: a re-announce in between cancels.
                    let still: Vec<RouteKey> = marked
                        .into_iter()
                        .filter(|k| t.get(k).is_some_and(|e| e.graceful_shutdown))
                        .collect();
                    t.withdraw(&still);
                });
                Response::ok(&Withdrawing {
                    withdrawing: n,
                    linger_ms: linger.as_millis() as u64,
                })
            } else {
                let mut t = shared.table.lock().expect("route table lock");
                let n = t.withdraw(&keys);
                Response::ok(&Withdrawn { withdrawn: n })
            }
        }
        Request::WithdrawAllMine => {
            let mut t = shared.table.lock().expect("route table lock");
            let keys: Vec<RouteKey> = t
                .entries()
                .filter(|(_, e)| matches!(e.owner, Owner::Client { id: i, .. } if i == id))
                .map(|(k, _)| *k)
                .collect();
            let n = t.withdraw(&keys);
            Response::ok(&Withdrawn { withdrawn: n })
        }
        Request::Routes => {
            let t = shared.table.lock().expect("route table lock");
            let routes: Vec<RouteInfo> = t
                .entries()
                .map(|(_, e)| RouteInfo {
                    route: e.route.clone(),
                    owner: match e.owner {
                        Owner::Static => "config".into(),
                        Owner::Client {
                            id,
                            persistent: true,
                        } => format!("client {id} (persistent)"),
                        Owner::Client {
                            id,
                            persistent: false,
                        } => format!("client {id}"),
                    },
                    graceful_shutdown: e.graceful_shutdown,
                })
                .collect();
            Response::ok(&RouteList { routes })
        }
        Request::Neighbors => {
            let list: Vec<PeerStatus> = shared
                .peers()
                .iter()
                .map(|p| p.status.lock().expect("status lock").clone())
                .collect();
            Response::ok(&Neighbors { neighbors: list })
        }
        Request::AdjRibOut { neighbor } => {
            let mut out = Vec::new();
            for p in shared
                .peers()
                .iter()
                .filter(|p| neighbor.is_none_or(|n| n == p.address))
            {
                let (tx, rx) = tokio::sync::oneshot::channel();
                if p.cmd.send(PeerCmd::DumpRibOut(tx)).await.is_err() {
                    continue;
                }
                if let Ok(routes) = rx.await {
                    out.push(RibOut {
                        neighbor: p.address,
                        routes,
                    });
                }
            }
            if let Some(n) = neighbor {
                if out.is_empty() {
                    return Response::failure(format!("no neighbor {n}"));
                }
            }
            Response::ok(&AdjRibOut { adj_rib_out: out })
        }
        Request::Bfd => {
            let config = shared.config();
            let mut out = Vec::new();
            for p in shared.peers() {
                let Some(b) = &p.bfd else { continue };
                let Some(n) = config.neighbors.iter().find(|n| n.address == p.address) else {
                    continue;
                };
                let Some(c) = &n.bfd else { continue };
                let st = b.status();
                let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
                out.push(BfdSession {
                    neighbor: p.address,
                    local: shared.bfd.receive_address(n),
                    state: st.state.name().into(),
                    remote_state: st.remote_state.name().into(),
                    diag: st.diag.to_string(),
                    local_discriminator: st.local_discriminator,
                    remote_discriminator: st.remote_discriminator,
                    detection_time_ms: ms(st.detection_time),
                    tx_interval_ms: ms(st.tx_interval),
                    configured_min_tx_ms: c.min_tx_ms,
                    configured_min_rx_ms: c.min_rx_ms,
                    multiplier: c.multiplier,
                    auth: c.auth.as_ref().map(|a| a.kind.wire().to_string()),
                });
            }
            Response::ok(&BfdSessions { bfd: out })
        }
        Request::Ready => {
            if !shared.routes_ready.send_replace(true) {
                info!("control client {id} announced its routes: end-of-rib may go");
            }
            Response::ok(&serde_json::Map::new())
        }
        Request::Reload => match shared.reload_file().await {
            Ok(summary) => Response::ok(&summary),
            Err(e) => Response::failure(format!(
                "reload refused, the running configuration stays: {e}"
            )),
        },
    }
}
