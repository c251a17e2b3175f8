//! bgpd's control socket (lbd's cluster agent, `bgpctl`).
//!
//! One request per line, one response per line. A response is the request's fields beside
//! `"ok":true` (`{"announced":1,"ok":true}`), or `{"error":"...","ok":false}` ([`Response`]).
//! Requests ([`Request`]):
//!
//! | request | effect | answer |
//! |---|---|---|
//! | `{"cmd":"announce","routes":[ROUTE,...],"persistent":false}` | add or replace routes | `{announced}` ([`Announced`]) |
//! | `{"cmd":"withdraw","routes":[{"prefix":P,"path_id":N},...],"graceful":false}` | remove routes (graceful: announce with GRACEFUL_SHUTDOWN for the linger time first) | `{withdrawn}` ([`Withdrawn`]), graceful: `{withdrawing, linger_ms}` ([`Withdrawing`]) |
//! | `{"cmd":"withdraw-all-mine"}` | remove every route this client added | `{withdrawn}` |
//! | `{"cmd":"routes"}` | the route table with owners | `{routes}` ([`RouteList`]) |
//! | `{"cmd":"neighbors"}` | neighbor status | `{neighbors}` ([`Neighbors`]) |
//! | `{"cmd":"adj-rib-out","neighbor":ADDR}` | what was sent to a neighbor (all when absent) | `{adj_rib_out}` ([`AdjRibOut`]) |
//! | `{"cmd":"reload"}` | read the configuration file again and apply it | [`Reloaded`] |
//! | `{"cmd":"bfd"}` | the neighbors' BFD sessions | `{bfd}` ([`BfdSessions`]) |
//! | `{"cmd":"ready"}` | the client has announced all its routes (End-of-RIB may go) | `{}` |
//!
//! ROUTE is the `[[route]]` table of the configuration in JSON ([`RouteConfig`]): `prefix`,
//! and optionally `path_id`, `next_hop` (`"self"` or an address), `origin`, `as_path_prepend`,
//! `med`, `communities`, `large_communities`, `local_pref`. `persistent`, `graceful` and a
//! route's `path_id` may be left out. Fate sharing: the routes a client announced without
//! `persistent` are withdrawn when its connection closes, so a client keeps its connection
//! open as long as its routes should stay (bgpd never closes an idle one).
//!
//! Request lines are at most [`MAX_LINE`] bytes (1 MiB, some 10,000 routes; a client splits a
//! bigger batch, [`Request::split`]): a longer one is answered with an error and the
//! connection is closed (withdrawing that client's routes), and so is a line begun and not
//! finished within 10 s. A bad request only gets an error. An idle connection (nothing
//! half-sent) is never closed.
//!
//! Read-only requests (`routes`, `neighbors`, `adj-rib-out`, `bfd`) are all a client of the
//! read-only control group may send ([`Classify`]).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::access::Classify;
use crate::{ControlRequest, Envelope, NO_MESSAGE};

mod route;

pub use route::{
    AsSegment, Community, LargeCommunity, LargeCommunityText, NextHop, Nlri, Origin, PathAttrs,
    RouteConfig, GRACEFUL_SHUTDOWN,
};

/// Longest request line bgpd accepts, newline excluded (clients split bigger batches:
/// [`Request::split`]).
pub const MAX_LINE: usize = 1024 * 1024;

/// A control request (`cmd` names the variant in kebab-case).
///
/// Fields are declared in alphabetical order, so that a request serializes to the bytes
/// `serde_json::json!` (sorted maps) wrote before these types existed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Announce {
        /// Keep the routes after this client's connection closes (bgpctl's routes).
        #[serde(default)]
        persistent: bool,
        routes: Vec<RouteConfig>,
    },
    Withdraw {
        /// Announce with GRACEFUL_SHUTDOWN for the linger time first (RFC 8326).
        #[serde(default)]
        graceful: bool,
        routes: Vec<RouteRef>,
    },
    WithdrawAllMine,
    Routes,
    Neighbors,
    AdjRibOut {
        /// Only this neighbor's; every neighbor's when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        neighbor: Option<IpAddr>,
    },
    /// Read the configuration file again and apply it (as SIGHUP does): answered with
    /// [`Reloaded`], or an error and nothing changed.
    Reload,
    /// The neighbors' BFD sessions: answered with [`BfdSessions`].
    Bfd,
    /// This client has announced every route it means to (lbd, after each connect): bgpd
    /// sends End-of-RIB (RFC 4724) once it has been told so, or after
    /// `graceful_restart.route_wait_ms`. Answered with no fields.
    Ready,
}

impl ControlRequest for Request {
    type Response = Response;
    const DAEMON: &'static str = "bgpd";
}

impl Classify for Request {
    /// A client of the read-only group may send these only.
    fn read_only(&self) -> bool {
        match self {
            Request::Routes | Request::Neighbors | Request::AdjRibOut { .. } | Request::Bfd => true,
            Request::Announce { .. }
            | Request::Withdraw { .. }
            | Request::WithdrawAllMine
            | Request::Reload
            | Request::Ready => false,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Request::Announce { .. } => "announce",
            Request::Withdraw { .. } => "withdraw",
            Request::WithdrawAllMine => "withdraw-all-mine",
            Request::Routes => "routes",
            Request::Neighbors => "neighbors",
            Request::AdjRibOut { .. } => "adj-rib-out",
            Request::Reload => "reload",
            Request::Bfd => "bfd",
            Request::Ready => "ready",
        }
    }
}

impl Request {
    /// This request as requests whose lines are at most `max_line` bytes: an `announce` or
    /// `withdraw` too long for one line is cut into batches of consecutive routes (each route
    /// alone must fit); anything else is returned as it is.
    pub fn split(self, max_line: usize) -> Vec<Request> {
        let len = |r: &Request| serde_json::to_vec(r).map_or(usize::MAX, |v| v.len());
        if len(&self) <= max_line {
            return vec![self];
        }
        match self {
            Request::Announce { persistent, routes } => {
                let empty = len(&Request::Announce {
                    persistent,
                    routes: vec![],
                });
                batches(routes, empty, max_line)
                    .into_iter()
                    .map(|routes| Request::Announce { persistent, routes })
                    .collect()
            }
            Request::Withdraw { graceful, routes } => {
                let empty = len(&Request::Withdraw {
                    graceful,
                    routes: vec![],
                });
                batches(routes, empty, max_line)
                    .into_iter()
                    .map(|routes| Request::Withdraw { graceful, routes })
                    .collect()
            }
            other => vec![other],
        }
    }
}

/// `items` in consecutive batches whose JSON array, with `overhead` bytes around it, fits in
/// `max_line` (an item too big alone gets a batch of its own).
fn batches<T: Serialize>(items: Vec<T>, overhead: usize, max_line: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut size = overhead;
    for item in items {
        // The item and its comma.
        let n = serde_json::to_vec(&item).map_or(0, |v| v.len()) + 1;
        if !cur.is_empty() && size + n > max_line {
            out.push(std::mem::take(&mut cur));
            size = overhead;
        }
        size += n;
        cur.push(item);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Names a route to withdraw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRef {
    #[serde(default)]
    pub path_id: Option<u32>,
    pub prefix: IpNet,
}

impl RouteRef {
    pub fn new(prefix: IpNet, path_id: Option<u32>) -> RouteRef {
        RouteRef { path_id, prefix }
    }
}

/// A route as `routes` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteInfo {
    pub route: RouteConfig,
    /// `config`, `client N` or `client N (persistent)`.
    pub owner: String,
    pub graceful_shutdown: bool,
}

/// One neighbor's Adj-RIB-Out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RibOut {
    pub neighbor: IpAddr,
    pub routes: Vec<(Nlri, PathAttrs)>,
}

/// The answer to `announce`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announced {
    pub announced: usize,
}

/// The answer to `reload`: what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// Neighbors started.
    pub neighbors_added: Vec<IpAddr>,
    /// Neighbors shut down (Cease / Administrative Shutdown).
    pub neighbors_removed: Vec<IpAddr>,
    /// Neighbors whose settings changed: reset and started again.
    pub neighbors_reset: Vec<IpAddr>,
    /// Neighbors whose description, max_prefixes or send_hold_time changed: taken live, the
    /// session stays.
    #[serde(default)]
    pub neighbors_updated: Vec<IpAddr>,
    /// Configured routes announced (new or changed).
    pub routes_announced: usize,
    /// Configured routes withdrawn.
    pub routes_withdrawn: usize,
}

/// One neighbor's BFD session (RFC 5880 §6.8.1 state variables).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfdSession {
    pub neighbor: IpAddr,
    /// Where the session receives (address:3784).
    pub local: std::net::SocketAddr,
    /// `admin-down`, `down`, `init` or `up`.
    pub state: String,
    pub remote_state: String,
    /// Why the state last changed (RFC 5880 §4.1 diagnostic).
    pub diag: String,
    pub local_discriminator: u32,
    pub remote_discriminator: u32,
    /// The Detection Time in force, ms, once the peer has been heard.
    pub detection_time_ms: Option<u64>,
    /// The transmit interval in force, ms (before jitter).
    pub tx_interval_ms: Option<u64>,
    pub configured_min_tx_ms: u32,
    pub configured_min_rx_ms: u32,
    pub multiplier: u8,
    /// The authentication type, when configured.
    pub auth: Option<String>,
}

/// The answer to `bfd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BfdSessions {
    pub bfd: Vec<BfdSession>,
}

/// The answer to `withdraw` (not graceful) and `withdraw-all-mine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawn {
    pub withdrawn: usize,
}

/// The answer to a graceful `withdraw`: how many routes go after how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawing {
    pub withdrawing: usize,
    pub linger_ms: u64,
}

/// The answer to `routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteList {
    pub routes: Vec<RouteInfo>,
}

/// The answer to `neighbors`: bgpd's neighbor status objects (address, remote_as, state,
/// counters, last notifications, …); clients read them as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Neighbors<N = Value> {
    pub neighbors: Vec<N>,
}

/// The answer to `adj-rib-out`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdjRibOut {
    pub adj_rib_out: Vec<RibOut>,
}

/// bgpd's answer: the payload's fields beside `"ok":true`, or `{"error":"...","ok":false}`.
///
/// `Ok` holds the fields (without `ok`); [`Response::data`] reads them as one of the typed
/// answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Ok(Map<String, Value>),
    Err(String),
}

impl Response {
    /// A success carrying `payload`'s fields (a payload that is not an object adds none).
    pub fn ok<T: Serialize>(payload: &T) -> Response {
        match serde_json::to_value(payload) {
            Ok(Value::Object(m)) => Response::Ok(m),
            Ok(_) => Response::Ok(Map::new()),
            Err(e) => Response::Err(format!("internal error: {e}")),
        }
    }

    /// A success's fields as `T` (an error answer is `Err` with its message).
    pub fn data<T: DeserializeOwned>(self) -> Result<T, String> {
        let m = self.into_result()?;
        serde_json::from_value(Value::Object(m)).map_err(|e| format!("unexpected answer: {e}"))
    }
}

impl Envelope for Response {
    type Data = Map<String, Value>;

    fn into_result(self) -> Result<Map<String, Value>, String> {
        match self {
            Response::Ok(m) => Ok(m),
            Response::Err(e) => Err(e),
        }
    }

    fn failure(message: impl std::fmt::Display) -> Response {
        Response::Err(message.to_string())
    }
}

impl Serialize for Response {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // One map, keys in the order bgpd has always written them in (sorted).
        let mut m = Map::new();
        match self {
            Response::Ok(fields) => {
                m.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                m.insert("ok".into(), true.into());
            }
            Response::Err(e) => {
                m.insert("ok".into(), false.into());
                m.insert("error".into(), e.as_str().into());
            }
        }
        m.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Response {
    /// Any JSON: anything but `"ok": true` is a failure.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Object(mut m) if m.get("ok") == Some(&Value::Bool(true)) => {
                m.remove("ok");
                Response::Ok(m)
            }
            v => Response::Err(v["error"].as_str().unwrap_or(NO_MESSAGE).to_string()),
        })
    }
}

#[cfg(test)]
mod tests;
