//! The control socket lbctl talks to: a Unix socket speaking JSON lines.
//!
//! The requests, the response envelope and the framing are `spanlb_control`'s:
//! [`spanlb_control::lbd`] documents the wire format (every request and what its data is).
//!
//! The device-group requests answer with an error when lbd runs without a device group.
//!
//! Object names are matched case-insensitively: the configuration keeps them as written and
//! refuses two of one kind that differ only in case, so a name matches at most one.
//!
//! This module must not block the data path: it reads the runtime through its snapshot and the
//! tables through their own short locks, and never holds a lock across an await. It must not
//! trust its input: who may connect is checked ([`spanlb_control::access`]: root, lbd's uid
//! and the control group in full, the read-only group for `status`, `show-*` and
//! `config-status`), lines are bounded (1 MiB; a longer one is answered with an error and the
//! connection closed; a line begun and not finished within 10 s closes it too), so are the
//! number of clients (64, the last kept for root) and their idle time (120 s), and a bad
//! request only gets an error. It never writes the configuration file: a member state set here lives in the
//! running runtime and survives a reload unless the file changes that member's state.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use spanlb_control::access::{Access, Gate, LogLimit, Policy, Refused};
use spanlb_control::framing::{self, End, Limits, PARTIAL_LINE_TIMEOUT, WRITE_TIMEOUT};
use spanlb_control::lbd::Response;
use tokio::net::{UnixListener, UnixStream};
use tracing::{debug, info, warn};

use super::context::App;
use super::daemon::ReloadSummary;
use super::regroup::{device_from, sync_result};
use crate::config::AdminState;
use crate::mirror::tap::MirrorTap;
use crate::state::{MemberState, PoolState, Runtime, VsState};
use crate::tables::now_ms;

/// Control connections served at once (the last only for root and lbd's uid); more are
/// told so and closed.
pub use spanlb_control::access::MAX_CLIENTS;
/// The control request type (defined with the wire format in `spanlb_control`).
pub use spanlb_control::lbd::Request;
/// Longest request line accepted, newline excluded.
pub use spanlb_control::lbd::MAX_LINE;
/// A client that sends nothing for this long between requests is disconnected.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Connections shown when the request names no limit.
pub const DEFAULT_CONNECTION_LIMIT: usize = 1000;

/// [`serve_with`] a gate of the running configuration's control groups (root and lbd's uid
/// and group only when they do not resolve).
pub async fn serve(listener: UnixListener, app: Arc<App>) {
    let config = app.live().runtime.load().config.clone();
    let policy = config.control_policy("configuration").unwrap_or_else(|e| {
        warn!("control socket: {e}: root and lbd's own group only");
        Policy::owner_only()
    });
    let gate = Gate::new(policy, MAX_CLIENTS, app.control.clone());
    serve_with(listener, gate, app).await
}

/// Accepts control clients through `gate` (credentials, then a slot) until the task is
/// dropped. A refused client gets one error line; refusals are logged once a second at most.
pub async fn serve_with(listener: UnixListener, gate: Gate, app: Arc<App>) {
    let refusals = LogLimit::new(Duration::from_secs(1));
    loop {
        let sock = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                warn!("control socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match gate.admit(&sock) {
            Ok(admitted) => {
                let app = app.clone();
                tokio::spawn(async move {
                    session(sock, admitted.access, &app).await;
                    drop(admitted);
                });
            }
            Err(r) => {
                if let Some(more) = refusals.allow() {
                    let peer = match &r {
                        Refused::Permission { peer, .. } => peer.clone(),
                        Refused::ClientLimit { peer, .. } => Some(peer.clone()),
                    };
                    warn!(
                        ?peer,
                        refused_since_last_line = more,
                        "control socket: client refused: {}",
                        r.message()
                    );
                }
                r.answer::<Response>(sock);
            }
        }
    }
}

/// One client: requests in, responses out, until it hangs up, idles or misbehaves.
async fn session(sock: UnixStream, access: Access, app: &App) {
    let limits = Limits {
        max_line: MAX_LINE,
        idle: Some(IDLE_TIMEOUT),
        partial: Some(PARTIAL_LINE_TIMEOUT),
        write_timeout: WRITE_TIMEOUT,
    };
    let end = framing::serve_as(sock, limits, access, &app.control, |req| async move {
        Response::from_result(handle(req, app).await)
    })
    .await;
    match end {
        End::Idle => debug!("control client idle for {IDLE_TIMEOUT:?}: closing"),
        End::PartialLine => debug!(
            "control client left a request line unfinished for {PARTIAL_LINE_TIMEOUT:?}: closing"
        ),
        End::ReadFailed(e) => debug!("control client read error: {e}"),
        End::Closed | End::TooLong | End::WriteFailed(_) => {}
    }
}

/// Carries out one request: the `data` of the response, or the error line.
pub async fn handle(req: Request, app: &App) -> Result<Value, String> {
    match req {
        Request::Status => Ok(status(app)),
        Request::ShowVirtualServers { name } => {
            let rt = app.live().runtime.load();
            let list = select(&rt.virtual_servers, name.as_deref(), "virtual server")?;
            Ok(Value::Array(list.into_iter().map(vs_json).collect()))
        }
        Request::ShowVirtualAddresses => to_json(&app.live().runtime.load().virtual_addresses()),
        Request::ShowPools { name } => {
            let rt = app.live().runtime.load();
            let list = select(&rt.pools, name.as_deref(), "pool")?;
            Ok(Value::Array(
                list.into_iter().map(|p| pool_json(&rt, p)).collect(),
            ))
        }
        Request::ShowConnections {
            virtual_server,
            limit,
        } => {
            let mut records = app.live().conns.records(usize::MAX, |r| {
                virtual_server
                    .as_ref()
                    .is_none_or(|v| v.eq_ignore_ascii_case(&r.virtual_server))
            });
            let total = records.len();
            records.truncate(limit.unwrap_or(DEFAULT_CONNECTION_LIMIT));
            Ok(json!({
                "total": total,
                "table_entries": app.live().conns.len(),
                "connections": to_json(&records)?,
            }))
        }
        Request::ShowPersistence { profile } => {
            let records = app.live().persist.records(|r| {
                profile
                    .as_ref()
                    .is_none_or(|p| p.eq_ignore_ascii_case(&r.profile))
            });
            to_json(&records)
        }
        Request::DeletePersistence {
            profile,
            key,
            member,
        } => {
            let member = member.as_deref().map(parse_member).transpose()?;
            let gone = app.live().persist.delete(|r| {
                profile
                    .as_ref()
                    .is_none_or(|p| p.eq_ignore_ascii_case(&r.profile))
                    && key.as_ref().is_none_or(|k| *k == r.key)
                    && member.is_none_or(|m| m == r.member)
            });
            if let Some(m) = app.mirror.as_ref() {
                let rt = app.live().runtime.load();
                for r in &gone {
                    if rt
                        .config
                        .persistence
                        .get(&r.profile)
                        .is_some_and(|p| p.mirror)
                    {
                        m.delete_persist(r);
                    }
                }
            }
            let deleted = gone.len();
            info!(
                deleted,
                profile = profile.as_deref().unwrap_or("*"),
                key = key.as_deref().unwrap_or("*"),
                member = %member.map(|m| m.to_string()).unwrap_or_else(|| "*".into()),
                "persistence records deleted (control socket)"
            );
            Ok(json!({ "deleted": deleted }))
        }
        Request::Member {
            pool,
            member,
            state,
        } => set_member(app, &pool, &member, &state),
        Request::Reload => match app.reload().await {
            Ok(summary) => to_json(&summary),
            Err(e) => Err(e.to_string()),
        },
        Request::ShowDeviceGroup => {
            let mut g = cluster(app)?.device_group().await;
            if let (Some(s), Value::Object(o)) = (&app.sync, &mut g) {
                o.insert("config_sync".into(), s.status()["status"].clone());
            }
            Ok(json!({ "device_group": g }))
        }
        Request::ShowTrafficGroups => Ok(cluster(app)?.traffic_groups().await),
        Request::ConfigStatus => match &app.sync {
            Some(s) => Ok(s.status()),
            None => Err("no device group configured (set device.device_group)".to_string()),
        },
        Request::ConfigSync => match &app.sync {
            Some(s) => {
                let r = s.sync_to_group().await;
                if let Some(e) = r.get("error") {
                    return Err(format!("config sync: {}", e.as_str().unwrap_or("failed")));
                }
                let failed = r["failed"].as_array().cloned().unwrap_or_default();
                if failed.is_empty() {
                    Ok(r)
                } else {
                    Err(failed
                        .iter()
                        .map(|f| {
                            format!(
                                "{} refused it: {}",
                                f["device"].as_str().unwrap_or("?"),
                                f["reason"].as_str().unwrap_or("?")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; "))
                }
            }
            None => Err("no device group configured (set device.device_group)".to_string()),
        },
        Request::DeviceGroupAdd {
            name,
            failover_addresses,
            mirror_addresses,
            config_sync_address,
            ha_capacity,
        } => {
            let Some(s) = &app.sync else {
                return Err("no device group configured (set device.device_group)".to_string());
            };
            let device = device_from(
                name,
                &failover_addresses,
                &mirror_addresses,
                config_sync_address.as_deref(),
                ha_capacity,
            )?;
            sync_result(s.add_device(device).await)
        }
        Request::DeviceGroupRemove { name } => match &app.sync {
            Some(s) => sync_result(s.remove_device(&name).await),
            None => Err("no device group configured (set device.device_group)".to_string()),
        },
        Request::ShowMirroring => Ok(match app.mirror.as_ref() {
            Some(m) => m.status(),
            None => json!({
                "enabled": false,
                "reason": if app.cluster.as_ref().is_some() {
                    "device.mirror_trust_dir is not set"
                } else {
                    "no device group (device.device_group is not set)"
                },
            }),
        }),
        Request::Failover { traffic_group, to } => {
            let c = cluster(app)?;
            c.driver
                .failover(&traffic_group, to.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            info!(
                traffic_group,
                to = to.as_deref().unwrap_or("(next-active)"),
                "failover ordered (control socket)"
            );
            Ok(json!({}))
        }
        Request::Standby => {
            cluster(app)?.set_standby(true).await;
            Ok(json!({}))
        }
        Request::Release => {
            cluster(app)?.set_standby(false).await;
            Ok(json!({}))
        }
        Request::ShowPlugins => {
            let reg = app.daemon.plugins.lock().expect("plugin registry lock");
            let failed: Vec<Value> = reg
                .tried
                .iter()
                .filter_map(|(f, e)| e.as_ref().map(|e| json!({"file": f, "error": e})))
                .collect();
            Ok(json!({
                "plugin_dir": app.live().runtime.load().config.device.plugin_dir,
                "plugins": to_json(&reg.status())?,
                "failed": failed,
            }))
        }
    }
}

fn cluster(app: &App) -> Result<&Arc<crate::cluster::agent::Cluster>, String> {
    app.cluster
        .as_ref()
        .ok_or_else(|| "no device group configured (set device.device_group)".to_string())
}

fn to_json<T: Serialize>(v: &T) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| format!("internal error: {e}"))
}

fn parse_member(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("`{s}` is not ADDR:PORT (IPv6: [ADDR]:PORT)"))
}

/// Every object of `map`, or the one named `name`.
fn select<'a, T>(
    map: &'a BTreeMap<String, Arc<T>>,
    name: Option<&str>,
    what: &str,
) -> Result<Vec<&'a Arc<T>>, String> {
    match name {
        None => Ok(map.values().collect()),
        Some(n) => map
            .get(n)
            .or_else(|| {
                map.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(n))
                    .map(|(_, o)| o)
            })
            .map(|o| vec![o])
            .ok_or_else(|| format!("no {what} named `{n}`")),
    }
}

fn status(app: &App) -> Value {
    let rt = app.live().runtime.load();
    let now = now_ms();
    let last_reload = app.daemon.last_reload().map(|(at_ms, res)| match res {
        Ok(summary) => json!({"at_ms": at_ms, "ok": true, "summary": summary_json(&summary)}),
        Err(error) => json!({"at_ms": at_ms, "ok": false, "error": error}),
    });
    json!({
        "device": rt.config.device.name,
        "version": env!("CARGO_PKG_VERSION"),
        "started_ms": app.live().started_ms,
        "uptime_s": now.saturating_sub(app.live().started_ms) / 1000,
        "config_file": app.daemon.config_path.as_ref().map(|p| p.display().to_string()),
        "workers": app.daemon.dp.workers(),
        "virtual_servers": rt.virtual_servers.len(),
        "virtual_servers_available": rt.virtual_servers.values().filter(|v| v.available()).count(),
        "pools": rt.pools.len(),
        "members": rt.pools.values().map(|p| p.members.len()).sum::<usize>(),
        "connections": app.live().conns.len(),
        "persistence_records": app.live().persist.len(),
        "last_reload": last_reload,
        "draining": draining(app, now),
    })
}

/// While lbd stops (SIGTERM): the drain's phase, what is still open and the time left;
/// null otherwise.
fn draining(app: &App, now: u64) -> Value {
    let dp = &app.daemon.dp;
    match dp.drain.status() {
        Some((phase, deadline_ms)) => {
            let open = dp.open();
            json!({
                "phase": phase,
                "connections": open.connections,
                "flows": open.flows,
                "remaining_ms": deadline_ms.saturating_sub(now),
            })
        }
        None => Value::Null,
    }
}

fn summary_json(s: &ReloadSummary) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}

fn vs_json(vs: &Arc<VsState>) -> Value {
    let c = &vs.cfg;
    json!({
        "name": vs.name,
        "destination": c.destination,
        "protocol": c.protocol,
        "pool": vs.pool.name,
        "enabled": c.enabled,
        "available": vs.available(),
        "snat": c.snat.to_string(),
        "connection_limit": c.limit(),
        "idle_timeout": humantime::format_duration(c.idle_timeout()).to_string(),
        "connect_timeout": humantime::format_duration(c.connect_timeout).to_string(),
        "persistence": vs.persistence.as_ref().map(|(name, _)| name),
        "mirror": c.mirror,
        "counters": vs.counters.values(),
    })
}

fn member_json(m: &MemberState) -> Value {
    json!({
        "address": m.addr,
        "ratio": m.ratio(),
        "admin": m.admin(),
        "health": m.health(),
        "status": m.status(),
        "monitors": m.verdicts(),
        "passive": m.passive_reason(),
        "passive_trips": m.passive_trips(),
        "counters": m.counters.values(),
    })
}

fn pool_json(rt: &Runtime, p: &PoolState) -> Value {
    let users: Vec<&str> = rt
        .virtual_servers
        .values()
        .filter(|v| v.pool.name == p.name)
        .map(|v| v.name.as_str())
        .collect();
    json!({
        "name": p.name,
        "method": p.method,
        "monitors": p.monitors,
        "available": p.available(),
        "total": p.members.len(),
        "virtual_servers": users,
        "members": p.members.iter().map(|m| member_json(m)).collect::<Vec<_>>(),
    })
}

/// Which of `pool`'s virtual servers are available, by name.
fn vs_availability(rt: &Runtime, pool: &str) -> Vec<(String, bool)> {
    rt.virtual_servers
        .values()
        .filter(|v| v.pool.name == pool)
        .map(|v| (v.name.clone(), v.available()))
        .collect()
}

/// Sets a member's admin state in the running runtime.
fn set_member(app: &App, pool: &str, member: &str, state: &str) -> Result<Value, String> {
    let state: AdminState = state.parse()?;
    let addr = parse_member(member)?;
    let rt = app.live().runtime.load_full();
    let (pname, p) = rt
        .pools
        .get_key_value(pool)
        .or_else(|| rt.pools.iter().find(|(k, _)| k.eq_ignore_ascii_case(pool)))
        .map(|(k, p)| (k.clone(), p))
        .ok_or_else(|| format!("no pool named `{pool}`"))?;
    let m = p
        .members
        .iter()
        .find(|m| m.addr == addr)
        .ok_or_else(|| format!("pool {pname} has no member {addr}"))?;
    let before = m.admin();
    let vs_before = vs_availability(&rt, &pname);
    m.set_admin(state);
    p.refresh();
    // A reload may have swapped the runtime meanwhile: the member object is the same one, but
    // the new pool's selector was built before the change.
    let current = app.live().runtime.load();
    if let Some(p2) = current.pools.get(&pname) {
        if !Arc::ptr_eq(p2, p) {
            p2.refresh();
        }
    }
    info!(
        pool = %pname,
        member = %addr,
        "member admin state {before} -> {state} (control socket; the running configuration only)"
    );
    for ((name, was), (_, now)) in vs_before.iter().zip(vs_availability(&rt, &pname)) {
        if *was != now {
            if now {
                info!(virtual_server = %name, "virtual server is available again");
            } else {
                warn!(virtual_server = %name, "virtual server is unavailable: pool {pname} has no available member");
            }
        }
    }
    Ok(json!({
        "pool": pname,
        "member": addr,
        "previous": before,
        "admin": state,
        "status": m.status(),
        "available": p.available(),
        "total": p.members.len(),
    }))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

    use super::*;
    use crate::config::{Config, Protocol};
    use crate::tables::{NewConn, PersistRecord};

    // Members are in TEST-NET-1 and no monitor or listener is ever started here: nothing is
    // contacted.
    const CFG: &str = r#"
[device]
name = "lb-a"
internal_address = "192.0.2.6"
[virtual_servers.web]
destination = "198.51.100.10:80"
pool = "web"
persistence = "src"
[virtual_servers.api]
destination = "198.51.100.10:81"
pool = "api"
[[virtual_addresses]]
address = "198.51.100.10"
advertise = "all"
[pools.web]
method = "least-connections"
monitors = ["tcp"]
members = [{ address = "192.0.2.50:80" }, { address = "192.0.2.51:80", ratio = 2 }]
[pools.api]
members = [{ address = "192.0.2.52:80" }]
[monitors.tcp]
type = "tcp"
[persistence.src]
type = "source-address"
mask = 24
"#;

    /// A reloadable configuration: no virtual server (nothing to bind) and no monitor.
    const RELOADABLE: &str = r#"
[device]
name = "lb-r"
[pools.app]
members = [{ address = "127.0.0.1:9001" }]
"#;

    static NEXT: AtomicUsize = AtomicUsize::new(0);

    fn temp_path(what: &str) -> PathBuf {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!("lbd-ctl-{}-{n}.{what}", std::process::id()))
    }

    /// A control socket served over a `App` that was never started.
    struct Harness {
        app: Arc<App>,
        sock: PathBuf,
        file: Option<PathBuf>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Harness {
        fn new(text: &str, file: Option<PathBuf>) -> Harness {
            let app = App::standalone(crate::app::Daemon::new(
                Config::from_toml(text, "test").unwrap(),
                file.clone(),
            ));
            let sock = temp_path("sock");
            let listener = UnixListener::bind(&sock).unwrap();
            let task = tokio::spawn(serve(listener, app.clone()));
            Harness {
                app,
                sock,
                file,
                task,
            }
        }

        async fn client(&self) -> Client {
            let (rd, wr) = UnixStream::connect(&self.sock).await.unwrap().into_split();
            Client {
                rd: BufReader::new(rd),
                wr,
            }
        }
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            self.task.abort();
            let _ = std::fs::remove_file(&self.sock);
            if let Some(f) = &self.file {
                let _ = std::fs::remove_file(f);
            }
        }
    }

    struct Client {
        rd: BufReader<OwnedReadHalf>,
        wr: OwnedWriteHalf,
    }

    impl Client {
        async fn send_raw(&mut self, bytes: &[u8]) -> Option<Value> {
            self.wr.write_all(bytes).await.ok()?;
            self.answer().await
        }

        async fn answer(&mut self) -> Option<Value> {
            let mut line = String::new();
            let n = self.rd.read_line(&mut line).await.ok()?;
            (n > 0).then(|| serde_json::from_str(&line).expect("a JSON line"))
        }

        async fn call(&mut self, req: &Request) -> Value {
            let mut line = serde_json::to_vec(req).unwrap();
            line.push(b'\n');
            self.send_raw(&line).await.expect("an answer")
        }

        async fn data(&mut self, req: &Request) -> Value {
            let v = self.call(req).await;
            assert_eq!(v["ok"], true, "{req:?} -> {v}");
            v["data"].clone()
        }

        async fn error(&mut self, req: &Request) -> String {
            let v = self.call(req).await;
            assert_eq!(v["ok"], false, "{req:?} -> {v}");
            v["error"].as_str().unwrap().to_string()
        }

        /// The error a line that is no request gets.
        async fn error_raw(&mut self, line: &str) -> String {
            let v = self.send_raw(format!("{line}\n").as_bytes()).await.unwrap();
            assert_eq!(v["ok"], false, "{line} -> {v}");
            v["error"].as_str().unwrap().to_string()
        }
    }

    /// Every test is bounded in time.
    async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
        tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .expect("test took too long");
    }

    #[tokio::test]
    async fn status_and_show_commands() {
        bounded(async {
            let h = Harness::new(CFG, None);
            let mut c = h.client().await;
            let s = c.data(&Request::Status).await;
            assert_eq!(s["device"], "lb-a");
            assert_eq!(s["virtual_servers"], 2);
            assert_eq!(s["virtual_servers_available"], 2);
            assert_eq!(s["pools"], 2);
            assert_eq!(s["members"], 3);
            assert_eq!(s["connections"], 0);
            assert_eq!(s["persistence_records"], 0);
            assert_eq!(s["config_file"], Value::Null);
            assert_eq!(s["last_reload"], Value::Null);
            assert!(s["uptime_s"].is_u64());

            let vss = c.data(&Request::ShowVirtualServers { name: None }).await;
            let names: Vec<&str> = vss
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["name"].as_str().unwrap())
                .collect();
            assert_eq!(names, ["api", "web"]);
            let web = c
                .data(&Request::ShowVirtualServers {
                    name: Some("WEB".into()),
                })
                .await;
            let web = &web[0];
            assert_eq!(web["destination"], "198.51.100.10:80");
            assert_eq!(web["protocol"], "tcp");
            assert_eq!(web["snat"], "automap");
            assert_eq!(web["idle_timeout"], "5m");
            assert_eq!(web["connect_timeout"], "5s");
            assert_eq!(web["persistence"], "src");
            assert_eq!(web["available"], true);
            assert_eq!(web["counters"]["total"], 0);
            let e = c
                .error(&Request::ShowVirtualServers {
                    name: Some("nope".into()),
                })
                .await;
            assert_eq!(e, "no virtual server named `nope`");

            let vas = c.data(&Request::ShowVirtualAddresses).await;
            assert_eq!(vas[0]["address"], "198.51.100.10");
            assert_eq!(vas[0]["advertised"], true);
            assert_eq!(vas[0]["virtual_servers"], json!(["api", "web"]));

            let pools = c
                .data(&Request::ShowPools {
                    name: Some("web".into()),
                })
                .await;
            let web = &pools[0];
            assert_eq!(web["method"], "least-connections");
            assert_eq!(web["monitors"], json!(["tcp"]));
            assert_eq!(
                (web["available"].clone(), web["total"].clone()),
                (json!(2), json!(2))
            );
            assert_eq!(web["virtual_servers"], json!(["web"]));
            let m = &web["members"][1];
            assert_eq!(m["address"], "192.0.2.51:80");
            assert_eq!(m["ratio"], 2);
            assert_eq!(m["admin"], "enabled");
            assert_eq!(m["health"], "unchecked");
            assert_eq!(m["status"], "unchecked");
            assert_eq!(m["monitors"], json!({}));
        })
        .await;
    }

    #[tokio::test]
    async fn member_state_changes_the_pool_and_bad_members_are_errors() {
        bounded(async {
            let h = Harness::new(CFG, None);
            let mut c = h.client().await;
            // A monitor verdict shows up in show-pools.
            let rt = h.app.live().runtime.load_full();
            let web = rt.pools["web"].clone();
            web.members[0].set_verdict("tcp", crate::monitor::Health::Up, "connected");
            web.refresh();
            let r = c
                .data(&Request::member("web", "192.0.2.50:80", "disabled"))
                .await;
            assert_eq!(r["previous"], "enabled");
            assert_eq!(r["admin"], "disabled");
            assert_eq!(r["status"], "disabled");
            assert_eq!(r["available"], 1);
            assert_eq!(web.members[0].admin(), AdminState::Disabled);
            assert_eq!(web.available(), 1);
            let pools = c
                .data(&Request::ShowPools {
                    name: Some("web".into()),
                })
                .await;
            assert_eq!(pools[0]["available"], 1);
            let m = &pools[0]["members"][0];
            assert_eq!(m["status"], "disabled");
            assert_eq!(m["health"], "up");
            assert_eq!(m["monitors"]["tcp"]["health"], "up");
            assert_eq!(m["monitors"]["tcp"]["reason"], "connected");
            assert!(m["monitors"]["tcp"]["since_ms"].as_u64().unwrap() > 0);

            // The last one: the virtual server becomes unavailable, and the address with it.
            c.data(&Request::member("WEB", " 192.0.2.51:80", "forced-offline"))
                .await;
            assert_eq!(web.available(), 0);
            let vs = c
                .data(&Request::ShowVirtualServers {
                    name: Some("web".into()),
                })
                .await;
            assert_eq!(vs[0]["available"], false);
            let vas = c.data(&Request::ShowVirtualAddresses).await;
            assert_eq!(vas[0]["advertised"], false);
            let s = c.data(&Request::Status).await;
            assert_eq!(s["virtual_servers_available"], 1);
            c.data(&Request::member("web", "192.0.2.51:80", "enabled"))
                .await;
            assert_eq!(web.available(), 1);

            let e = c
                .error(&Request::member("web", "192.0.2.99:80", "disabled"))
                .await;
            assert_eq!(e, "pool web has no member 192.0.2.99:80");
            let e = c
                .error(&Request::member("nope", "192.0.2.50:80", "disabled"))
                .await;
            assert_eq!(e, "no pool named `nope`");
            let e = c
                .error(&Request::member("web", "192.0.2.50", "disabled"))
                .await;
            assert!(e.contains("not ADDR:PORT"), "{e}");
            let e = c
                .error(&Request::member("web", "192.0.2.50:80", "off"))
                .await;
            assert!(e.contains("not enabled, disabled or forced-offline"), "{e}");
            let e = c.error_raw(r#"{"cmd":"member","pool":"web"}"#).await;
            assert!(e.contains("missing field `member`"), "{e}");
            // Nothing of that changed anything.
            assert_eq!(web.members[0].admin(), AdminState::Disabled);
        })
        .await;
    }

    #[tokio::test]
    async fn bad_input_gets_errors_and_the_connection_stays_usable() {
        bounded(async {
            let h = Harness::new(CFG, None);
            let mut c = h.client().await;
            let v = c.send_raw(b"{not json\n").await.unwrap();
            assert_eq!(v["ok"], false);
            assert!(v["error"].as_str().unwrap().starts_with("bad request: "));
            let e = c.error_raw(r#"{"cmd":"frobnicate"}"#).await;
            assert!(e.contains("unknown variant `frobnicate`"), "{e}");
            let e = c.error_raw(r#"{"nocmd":1}"#).await;
            assert!(e.contains("missing field `cmd`"), "{e}");
            let e = c.error_raw(r#"{"cmd":"show-pools","nmae":"web"}"#).await;
            assert!(e.contains("unknown field `nmae`"), "{e}");
            let e = c
                .error_raw(r#"{"cmd":"show-connections","limit":-1}"#)
                .await;
            assert!(e.starts_with("bad request"), "{e}");
            let e = c.error_raw(r#"["status"]"#).await;
            assert_eq!(e, "bad request: not a JSON object");
            let v = c.send_raw(b"\n").await.unwrap();
            assert_eq!(v["error"], "empty request");
            // Several requests in one write, CRLF tolerated.
            c.wr.write_all(b"{\"cmd\":\"status\"}\r\n{\"cmd\":\"show-virtual-addresses\"}\n")
                .await
                .unwrap();
            assert_eq!(c.answer().await.unwrap()["data"]["device"], "lb-a");
            assert_eq!(c.answer().await.unwrap()["ok"], true);
            let s = c.data(&Request::Status).await;
            assert_eq!(s["device"], "lb-a");

            // Over 1 MiB without a newline: an error, then the connection is closed.
            let mut long = b"{\"cmd\":\"status\",\"pad\":\"".to_vec();
            long.resize(MAX_LINE + 10, b'x');
            // (The write may fail once the server has closed: only the answer matters.)
            let _ = c.wr.write_all(&long).await;
            let v = c.answer().await.unwrap();
            assert_eq!(v["ok"], false);
            assert!(v["error"].as_str().unwrap().contains("longer than"));
            assert!(c.answer().await.is_none(), "closed after an over-long line");
            // The server still serves others.
            let mut c2 = h.client().await;
            c2.data(&Request::Status).await;
        })
        .await;
    }

    #[tokio::test]
    async fn clients_beyond_the_limit_are_refused() {
        bounded(async {
            let h = Harness::new(CFG, None);
            let mut held = Vec::new();
            for _ in 0..MAX_CLIENTS {
                let mut c = h.client().await;
                c.data(&Request::Status).await; // surely accepted and counted
                held.push(c);
            }
            let mut extra = h.client().await;
            let v = extra.answer().await.unwrap();
            let e = v["error"].as_str().unwrap();
            assert!(
                e.starts_with(&format!("too many control connections ({MAX_CLIENTS}")),
                "{e}"
            );
            drop(held.pop());
            // The slot is released when the session notices the hang-up.
            let mut ok = false;
            for _ in 0..100 {
                let mut c = h.client().await;
                let v = c.call(&Request::Status).await;
                if v["ok"] == true {
                    ok = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(ok);
        })
        .await;
    }

    #[tokio::test]
    async fn connections_and_persistence_records() {
        bounded(async {
            let h = Harness::new(CFG, None);
            let s = h.app.live();
            let new = |vs: &'static str, port: u16| NewConn {
                protocol: Protocol::Tcp,
                virtual_server: vs,
                client: SocketAddr::from(([203, 0, 113, 7], port)),
                vip: "198.51.100.10:80".parse().unwrap(),
                pool: vs,
                member: "192.0.2.50:80".parse().unwrap(),
                snat: "192.0.2.6:40000".parse().unwrap(),
                traffic_group: None,
                idle: Duration::from_secs(300),
            };
            let _g1 = s.conns.insert(new("web", 1000), &s.ids);
            let _g2 = s.conns.insert(new("web", 1001), &s.ids);
            let _g3 = s.conns.insert(new("api", 1002), &s.ids);
            for (i, member) in ["192.0.2.50:80", "192.0.2.51:80", "192.0.2.51:80"]
                .iter()
                .enumerate()
            {
                s.persist.insert(PersistRecord {
                    profile: "src".into(),
                    scope: "web".into(),
                    key: format!("203.0.{i}.0/24"),
                    pool: "web".into(),
                    member: member.parse().unwrap(),
                    virtual_server: "web".into(),
                    traffic_group: None,
                    update_id: s.ids.next(),
                    expiry_ms: now_ms() + 60_000,
                    mirrored: false,
                });
            }
            let mut c = h.client().await;
            let all = c
                .data(&Request::ShowConnections {
                    limit: None,
                    virtual_server: None,
                })
                .await;
            assert_eq!(all["total"], 3);
            assert_eq!(all["connections"].as_array().unwrap().len(), 3);
            let web = c
                .data(&Request::ShowConnections {
                    limit: Some(1),
                    virtual_server: Some("web".into()),
                })
                .await;
            assert_eq!(
                (web["total"].clone(), web["table_entries"].clone()),
                (json!(2), json!(3))
            );
            let list = web["connections"].as_array().unwrap();
            assert_eq!(list.len(), 1);
            assert_eq!(list[0]["client"], "203.0.113.7:1000");
            assert_eq!(list[0]["member"], "192.0.2.50:80");
            let st = c.data(&Request::Status).await;
            assert_eq!(
                (st["connections"].clone(), st["persistence_records"].clone()),
                (json!(3), json!(3))
            );

            let p = c.data(&Request::ShowPersistence { profile: None }).await;
            assert_eq!(p.as_array().unwrap().len(), 3);
            assert_eq!(p[0]["key"], "203.0.0.0/24");
            let none = c
                .data(&Request::ShowPersistence {
                    profile: Some("other".into()),
                })
                .await;
            assert_eq!(none, json!([]));
            let d = c
                .data(&Request::DeletePersistence {
                    key: None,
                    member: Some("192.0.2.51:80".into()),
                    profile: None,
                })
                .await;
            assert_eq!(d["deleted"], 2);
            let d = c
                .data(&Request::DeletePersistence {
                    key: Some("203.0.9.0/24".into()),
                    member: None,
                    profile: None,
                })
                .await;
            assert_eq!(d["deleted"], 0);
            let e = c
                .error(&Request::DeletePersistence {
                    key: None,
                    member: Some("nonsense".into()),
                    profile: None,
                })
                .await;
            assert!(e.contains("not ADDR:PORT"), "{e}");
            assert_eq!(s.persist.len(), 1);
            let d = c
                .data(&Request::DeletePersistence {
                    key: None,
                    member: None,
                    profile: Some("SRC".into()),
                })
                .await;
            assert_eq!(d["deleted"], 1);
            assert!(s.persist.is_empty());
        })
        .await;
    }

    #[tokio::test]
    async fn reload_without_a_file_is_an_error() {
        bounded(async {
            let h = Harness::new(CFG, None);
            let mut c = h.client().await;
            let e = c.error(&Request::Reload).await;
            assert_eq!(e, "no configuration file to reload from");
            let s = c.data(&Request::Status).await;
            assert_eq!(s["last_reload"], Value::Null);
        })
        .await;
    }

    #[tokio::test]
    async fn reload_applies_a_good_file_and_rejects_a_bad_one() {
        bounded(async {
            let file = temp_path("toml");
            std::fs::write(&file, RELOADABLE).unwrap();
            let h = Harness::new(RELOADABLE, Some(file.clone()));
            let mut c = h.client().await;
            // A runtime state survives a reload that does not touch the member in the file.
            c.data(&Request::member("app", "127.0.0.1:9001", "disabled"))
                .await;
            std::fs::write(
                &file,
                RELOADABLE.replace(
                    "members = [",
                    "members = [{ address = \"127.0.0.1:9002\", ratio = 3 }, ",
                ),
            )
            .unwrap();
            let r = c.data(&Request::Reload).await;
            assert_eq!(r["pools"], 1);
            assert_eq!(r["virtual_servers"], 0);
            let pools = c
                .data(&Request::ShowPools {
                    name: Some("app".into()),
                })
                .await;
            let members = pools[0]["members"].as_array().unwrap();
            assert_eq!(members.len(), 2);
            assert_eq!(members[0]["address"], "127.0.0.1:9002");
            assert_eq!(members[0]["ratio"], 3);
            assert_eq!(members[1]["status"], "disabled");
            assert_eq!(pools[0]["available"], 1);
            let s = c.data(&Request::Status).await;
            assert_eq!(s["config_file"], file.display().to_string());
            assert_eq!(s["last_reload"]["ok"], true);
            assert_eq!(s["last_reload"]["summary"]["pools"], 1);

            // A bad file: rejected with its reason, the running configuration stays.
            std::fs::write(&file, RELOADABLE.replace("127.0.0.1:9001", "127.0.0.1:0")).unwrap();
            let e = c.error(&Request::Reload).await;
            assert!(e.contains("port 0 is not a member port"), "{e}");
            assert!(e.contains(&file.display().to_string()), "{e}");
            let pools = c
                .data(&Request::ShowPools {
                    name: Some("app".into()),
                })
                .await;
            assert_eq!(pools[0]["members"].as_array().unwrap().len(), 2);
            let s = c.data(&Request::Status).await;
            assert_eq!(s["last_reload"]["ok"], false);
            assert!(s["last_reload"]["error"]
                .as_str()
                .unwrap()
                .contains("port 0"));
            assert!(s["last_reload"]["at_ms"].as_u64().unwrap() > 0);
        })
        .await;
    }
}
