//! The local control socket: a Unix socket speaking JSON lines, used by lbd and bgpctl.
//!
//! One request per line, one response per line (`{"ok":true,...}` or
//! `{"ok":false,"error":"..."}`). Requests:
//!
//! | request | effect |
//! |---|---|
//! | `{"cmd":"announce","routes":[ROUTE,...],"persistent":false}` | add or replace routes |
//! | `{"cmd":"withdraw","routes":[{"prefix":P,"path_id":N},...],"graceful":false}` | remove routes (graceful: announce with GRACEFUL_SHUTDOWN for the linger time first) |
//! | `{"cmd":"withdraw-all-mine"}` | remove every route this client added |
//! | `{"cmd":"routes"}` | the route table with owners |
//! | `{"cmd":"neighbors"}` | neighbor status |
//! | `{"cmd":"adj-rib-out","neighbor":ADDR}` | what was sent to a neighbor (all when absent) |
//!
//! ROUTE is the `[[route]]` table of the configuration in JSON. Fate sharing: the routes a
//! client announced without `persistent` are withdrawn when its connection closes.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, info_span, warn, Instrument};

use crate::config::RouteConfig;
use crate::daemon::Shared;
use crate::peer::{PeerCmd, PeerStatus};
use crate::rib::{Owner, RouteKey};
use crate::wire::{Nlri, PathAttrs};

/// Longest request line accepted (a batch of many routes fits easily).
pub const MAX_LINE: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Announce {
        routes: Vec<RouteConfig>,
        #[serde(default)]
        persistent: bool,
    },
    Withdraw {
        routes: Vec<RouteRef>,
        #[serde(default)]
        graceful: bool,
    },
    WithdrawAllMine,
    Routes,
    Neighbors,
    AdjRibOut {
        #[serde(default)]
        neighbor: Option<IpAddr>,
    },
}

/// Names a route to withdraw.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRef {
    pub prefix: IpNet,
    #[serde(default)]
    pub path_id: Option<u32>,
}

/// A route as `routes` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteInfo {
    pub route: RouteConfig,
    pub owner: String,
    pub graceful_shutdown: bool,
}

/// One neighbor's Adj-RIB-Out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RibOut {
    pub neighbor: IpAddr,
    pub routes: Vec<(Nlri, PathAttrs)>,
}

fn ok(v: serde_json::Value) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("ok".into(), true.into());
    if let serde_json::Value::Object(o) = v {
        m.extend(o);
    }
    serde_json::Value::Object(m)
}

fn err(e: impl std::fmt::Display) -> serde_json::Value {
    serde_json::json!({"ok": false, "error": e.to_string()})
}

/// Accepts control clients until the task is dropped.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    let mut next_id = 0u64;
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        next_id += 1;
        let id = next_id;
        let shared = shared.clone();
        tokio::spawn(client(id, sock, shared).instrument(info_span!("control", client = id)));
    }
}

async fn client(id: u64, sock: UnixStream, shared: Arc<Shared>) {
    shared.metrics.control_clients.inc();
    let (rd, mut wr) = sock.into_split();
    let mut rd = BufReader::new(rd);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = match (&mut rd)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                warn!("control client read error: {e}");
                break;
            }
        };
        if n == 0 {
            break;
        }
        let resp = if line.len() > MAX_LINE {
            let r = err(format!("request longer than {MAX_LINE} bytes"));
            let mut out = serde_json::to_vec(&r).unwrap_or_default();
            out.push(b'\n');
            let _ = wr.write_all(&out).await;
            break;
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(req) => handle(id, req, &shared).await,
                Err(e) => err(format!("bad request: {e}")),
            }
        };
        let mut out = serde_json::to_vec(&resp).unwrap_or_default();
        out.push(b'\n');
        if wr.write_all(&out).await.is_err() {
            break;
        }
    }
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
pub async fn handle(id: u64, req: Request, shared: &Arc<Shared>) -> serde_json::Value {
    match req {
        Request::Announce { routes, persistent } => {
            for (i, r) in routes.iter().enumerate() {
                if let Err((key, msg)) = r.validate() {
                    return err(format!("routes[{i}].{key}: {msg}"));
                }
            }
            let n = shared
                .table
                .lock()
                .expect("route table lock")
                .announce(routes, Owner::Client { id, persistent });
            ok(serde_json::json!({ "announced": n }))
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
                let linger = Duration::from_millis(shared.config.shutdown.linger_ms);
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
                ok(serde_json::json!({ "withdrawing": n, "linger_ms": linger.as_millis() as u64 }))
            } else {
                let mut t = shared.table.lock().expect("route table lock");
                let n = t.withdraw(&keys);
                ok(serde_json::json!({ "withdrawn": n }))
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
            ok(serde_json::json!({ "withdrawn": n }))
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
            ok(serde_json::json!({ "routes": routes }))
        }
        Request::Neighbors => {
            let list: Vec<PeerStatus> = shared
                .peers
                .iter()
                .map(|p| p.status.lock().expect("status lock").clone())
                .collect();
            ok(serde_json::json!({ "neighbors": list }))
        }
        Request::AdjRibOut { neighbor } => {
            let mut out = Vec::new();
            for p in shared
                .peers
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
                    return err(format!("no neighbor {n}"));
                }
            }
            ok(serde_json::json!({ "adj_rib_out": out }))
        }
    }
}
