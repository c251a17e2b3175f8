//! The TCP full proxy: accept on VIP:port, choose a member, connect from the SNAT address,
//! relay.
//!
//! Per connection: the virtual server's connection limit is checked first (over the limit: the
//! client is reset), then a member is chosen (persistence record, else the pool's method) and
//! connected to within the virtual server's connect timeout; a failed connect counts against
//! that member and the next member is tried, up to [`MAX_ATTEMPTS`] members. When no member can
//! be reached the client is reset. The relay ends on close, error or idle timeout; an error on
//! one side resets the other (SO_LINGER 0) so that neither is left half-open.
//!
//! One accept loop runs per worker on its own SO_REUSEPORT socket; a connection's task stays on
//! the worker that accepted it unless the scheduler steals it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugin_api::Direction;
use socket2::{SockRef, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tracing::{debug, info, warn};

use super::access::{End, Entry};
use super::budget::{Permit, Side};
use super::datapath::DataPath;
use super::mirrored::{relay_mirrored, Ends, Mirrored};
use super::relay::{relay, RelayEnd, Sinks};
use super::{choose, learn, remember, Hint, NoMember};
use crate::config::Protocol;
use crate::passive::Change;
use crate::plugins::{Decision, ProfilePlugin};
use crate::state::{CurrentGuard, MemberState, VsState};
use crate::sys::upstream_socket;
use crate::tables::NewConn;

/// Reads `stream`'s first bytes into `head` (at most the plugin's maximum, within the virtual
/// server's first-data timeout) and asks the plugin, reading more on `NeedMore`, until it
/// decides. `NoKey` when nothing came or the plugin found nothing.
async fn first_bytes_decision(
    p: &ProfilePlugin,
    vs: &VsState,
    stream: &mut TcpStream,
    direction: Direction,
    (peer, vip): (SocketAddr, SocketAddr),
    head: &mut Vec<u8>,
) -> Decision {
    let deadline = tokio::time::Instant::now() + vs.cfg.first_data_timeout;
    let max = p.max_inspect().max(1);
    let mut want = 1;
    let mut ended = false;
    // Each round reads at least one byte or ends: bounded by `max`.
    loop {
        while head.len() < want && !ended {
            let mut buf = [0u8; 4096];
            let room = (max - head.len()).min(buf.len());
            match tokio::time::timeout_at(deadline, stream.read(&mut buf[..room])).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => ended = true,
                Ok(Ok(n)) => head.extend_from_slice(&buf[..n]),
            }
        }
        if head.is_empty() {
            return Decision::NoKey;
        }
        match p.inspect(Protocol::Tcp, direction, peer, vip, head) {
            Decision::NeedMore(n) if !ended && n <= max => want = n,
            Decision::NeedMore(_) => return Decision::NoKey,
            d => return d,
        }
    }
}

/// Most members tried for one connection.
pub const MAX_ATTEMPTS: usize = 4;

/// Accepts connections for the TCP virtual server on `key` until aborted. The listener is
/// registered with the runtime this runs on.
pub async fn accept_loop(
    dp: Arc<DataPath>,
    key: (SocketAddr, Protocol),
    listener: std::net::TcpListener,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!(listener = %key.0, "cannot register listener: {e}");
            return;
        }
    };
    let mut last_warn: Option<std::time::Instant> = None;
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                // Client and member side: two descriptors, or none and the client is reset at
                // once (its descriptor came from the reserve and goes back to it now).
                match dp.budget.try_take(2, Side::Tcp) {
                    Some(permit) => {
                        tokio::spawn(handle(dp.clone(), key, stream, peer, permit));
                    }
                    None => {
                        dp.budget.refused(Side::Tcp);
                        if let Some(vs) = dp.runtime.load().listeners.get(&key) {
                            vs.counters.refused.fetch_add(1, Ordering::Relaxed);
                        }
                        reset(&stream);
                    }
                }
            }
            Err(e) => {
                // EMFILE / ENFILE / ENOBUFS: back off (10 ms doubling to 1 s) rather than
                // spin; warn at most once a second.
                if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    warn!(listener = %key.0, "accept failed: {e}");
                    last_warn = Some(std::time::Instant::now());
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

/// The accept loop's pause after a failed accept (EMFILE), doubling up to the maximum.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Resets a connection (RST instead of FIN): used when refusing, and to pass on a reset.
fn reset(s: &TcpStream) {
    let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
}

async fn handle(
    dp: Arc<DataPath>,
    key: (SocketAddr, Protocol),
    client: TcpStream,
    peer: SocketAddr,
    _permit: Permit,
) {
    let Some(vs) = dp.runtime.load().listeners.get(&key).cloned() else {
        reset(&client);
        return; // the listener is being removed by a reload
    };
    if !vs.cfg.enabled {
        reset(&client);
        return;
    }
    let _vs_current = CurrentGuard::new(vs.counters.clone());
    // TCP_NODELAY is inherited from the listener. The listener's own address is the VIP
    // unless it is a wildcard.
    let vip = if key.0.ip().is_unspecified() {
        client.local_addr().unwrap_or(key.0)
    } else {
        key.0
    };
    let mut entry = Entry::new(peer, vip);
    let limit = vs.cfg.limit();
    if limit > 0 && vs.counters.current.load(Ordering::Relaxed) > limit {
        vs.counters.refused.fetch_add(1, Ordering::Relaxed);
        debug!(virtual_server = %vs.name, client = %peer, "connection limit {limit} reached: reset");
        reset(&client);
        entry.end = End::Limit;
    } else if let Err(e) = proxy(&dp, &vs, client, peer, vip, &mut entry).await {
        debug!(virtual_server = %vs.name, client = %peer, "connection ended: {e}");
    }
    super::log_access(&dp, &vs, &entry);
}

/// Why a connect to a member failed.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// This host is short of something (descriptors, buffers, ports) or could not make the
    /// socket: not the member's fault.
    Local(std::io::Error),
    /// The member did not take it: refused, reset, unreachable, timed out.
    Member(std::io::Error),
}

impl ConnectError {
    /// Classifies an error of the connect itself (a failed socket set-up is always local).
    pub(crate) fn of_connect(e: std::io::Error) -> ConnectError {
        if super::is_local_error(&e) {
            ConnectError::Local(e)
        } else {
            ConnectError::Member(e)
        }
    }
}

async fn connect(
    member: SocketAddr,
    vs: &VsState,
    ingress: Option<u32>,
) -> Result<TcpStream, ConnectError> {
    let sock = upstream_socket(member, vs.snat_for_ingress(member, ingress).0, Type::STREAM)
        .map_err(ConnectError::Local)?;
    let sock = TcpSocket::from_std_stream(std::net::TcpStream::from(sock));
    match tokio::time::timeout(vs.cfg.connect_timeout, sock.connect(member)).await {
        Ok(r) => r.map_err(ConnectError::of_connect),
        Err(_) => Err(ConnectError::Member(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "connect timed out after {}",
                humantime::format_duration(vs.cfg.connect_timeout)
            ),
        ))),
    }
}

/// Passive health after a connect to `member` of `vs`'s pool: rebuilds the pool's selection
/// when the member goes out or comes back, and says so.
fn passive(vs: &VsState, member: &MemberState, ok: bool) {
    match if ok {
        member.passive_success()
    } else {
        member.passive_failure()
    } {
        Change::None => {}
        Change::TakenOut(_) => {
            vs.pool.refresh();
            warn!(pool = %vs.pool.name, member = %member.addr,
                "member taken out by passive health: {}",
                member.passive_reason().unwrap_or_default());
        }
        Change::BackIn => {
            vs.pool.refresh();
            info!(pool = %vs.pool.name, member = %member.addr,
                "member back in: a connect succeeded after passive health took it out");
        }
    }
}

async fn proxy(
    dp: &DataPath,
    vs: &VsState,
    mut client: TcpStream,
    peer: SocketAddr,
    vip: SocketAddr,
    entry: &mut Entry,
) -> std::io::Result<()> {
    let mut tried: Vec<usize> = Vec::new();
    // MAC masquerade: the interface the connection came in on names its traffic group.
    let ingress = if vs.attribution.get().by_ingress.is_empty() {
        None
    } else {
        crate::sys::ingress_ifindex(&client)
    };
    // A plugin-backed persistence profile: the client's first bytes decide.
    let mut first = Vec::new();
    let hint = match &vs.plugin {
        Some(p) => {
            let d = first_bytes_decision(
                p,
                vs,
                &mut client,
                Direction::ClientToServer,
                (peer, vip),
                &mut first,
            )
            .await;
            Hint::from(d)
        }
        None => Hint::default(),
    };
    let (choice, mut server) = loop {
        let choice = match choose(dp, vs, (peer, vip, ingress), &tried, &hint) {
            Ok(c) => c,
            Err(why) => {
                vs.counters.refused.fetch_add(1, Ordering::Relaxed);
                reset(&client);
                entry.end = End::NoMember;
                let why = match why {
                    NoMember::NoneAvailable => "no available member",
                    NoMember::AllTried => "every member tried failed",
                };
                return Err(std::io::Error::other(format!("{why}: reset client")));
            }
        };
        let connecting = Instant::now();
        match connect(choice.member.addr, vs, ingress).await {
            Ok(s) => {
                vs.timings.connect.observe(connecting.elapsed());
                passive(vs, &choice.member, true);
                break (choice, s);
            }
            Err(ConnectError::Local(e)) => {
                // Not the member's fault, and the next member would fare no better.
                dp.budget.local_error(&e);
                vs.counters.refused.fetch_add(1, Ordering::Relaxed);
                reset(&client);
                entry.end = End::LocalError;
                return Err(std::io::Error::other(format!(
                    "local error connecting to {}: {e}: reset client",
                    choice.member.addr
                )));
            }
            Err(ConnectError::Member(e)) => {
                choice
                    .member
                    .counters
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                passive(vs, &choice.member, false);
                debug!(virtual_server = %vs.name, member = %choice.member.addr, "connect failed: {e}");
                tried.push(choice.index);
                if tried.len() >= MAX_ATTEMPTS {
                    vs.counters.refused.fetch_add(1, Ordering::Relaxed);
                    reset(&client);
                    entry.end = End::NoMember;
                    return Err(std::io::Error::other(format!(
                        "{} members failed to connect, last: {e}",
                        tried.len()
                    )));
                }
            }
        }
    };
    let _ = server.set_nodelay(true);
    // The connection's duration, from the member's connect to the end, however it ends.
    let _life = LifeTimer(&vs.timings, Instant::now());
    remember(dp, vs, (peer, vip, ingress), &choice, &hint);
    let member = &choice.member;
    let _member_current = CurrentGuard::new(member.counters.clone());
    let snat = server.local_addr().unwrap_or(vip);
    (entry.member, entry.snat) = (Some(member.addr), Some(snat));
    let traffic_group = vs.snat_for_ingress(member.addr, ingress).1;
    let guard = dp.conns.insert(
        NewConn {
            protocol: Protocol::Tcp,
            virtual_server: &vs.name,
            client: peer,
            vip,
            pool: &vs.pool.name,
            member: member.addr,
            snat,
            traffic_group: traffic_group.as_deref(),
            idle: vs.cfg.idle_timeout(),
        },
        &dp.ids,
    );
    let live = &guard.conn;
    let (up, down) = Sinks::for_conn(&vs.counters, &member.counters, live);
    // What was read to decide goes first; a plugin that learns from the server sees the
    // member's first bytes before they go on to the client.
    let head = async {
        if !first.is_empty() {
            server.write_all(&first).await?;
            up.add(first.len() as u64);
        }
        if let Some(p) = vs.plugin.as_ref().filter(|p| p.inspects_server()) {
            let mut answer = Vec::new();
            let d = first_bytes_decision(
                p,
                vs,
                &mut server,
                Direction::ServerToClient,
                (peer, vip),
                &mut answer,
            )
            .await;
            if let Decision::Key(key) = d {
                learn(dp, vs, &key, member.addr, ingress);
            }
            if !answer.is_empty() {
                client.write_all(&answer).await?;
                down.add(answer.len() as u64);
            }
        }
        std::io::Result::Ok(())
    };
    if let Err(e) = head.await {
        reset(&client);
        reset(&server);
        return Err(e);
    }
    let idle = vs.cfg.idle_timeout();
    let mirror = dp.mirror_if(vs.cfg.mirror).zip(traffic_group.as_deref());
    let res = match mirror {
        Some((m, tg)) => {
            let ends = Ends {
                client: peer,
                vip,
                member: member.addr,
                snat,
            };
            match relay_mirrored(
                m.as_ref(),
                tg,
                ends,
                &mut client,
                &mut server,
                up,
                down,
                live,
                idle,
            )
            .await
            {
                Mirrored::Ended(r) => r,
                // Both sockets are silenced: the connection lives on the new owner now.
                Mirrored::Released => {
                    entry.bytes_up = live.bytes_in.load(Ordering::Relaxed);
                    entry.bytes_down = live.bytes_out.load(Ordering::Relaxed);
                    entry.end = End::Released;
                    return Ok(());
                }
            }
        }
        None => relay(&mut client, &mut server, up, down, live, idle).await,
    };
    entry.bytes_up = live.bytes_in.load(Ordering::Relaxed);
    entry.bytes_down = live.bytes_out.load(Ordering::Relaxed);
    entry.end = match &res {
        Ok(RelayEnd::Closed) => End::Closed,
        Ok(RelayEnd::Idle) => End::Idle,
        Err(_) => End::Error,
    };
    finish(res, &client, &server)
}

/// Records a proxied connection's duration into its virtual server's histogram when dropped.
struct LifeTimer<'a>(&'a crate::state::Timings, Instant);

impl Drop for LifeTimer<'_> {
    fn drop(&mut self) {
        self.0.duration.observe(self.1.elapsed());
    }
}

/// How a relay's end is passed on: a clean close as it is, an idle timeout or an error as a
/// reset of both sides.
pub(crate) fn finish(
    res: std::io::Result<RelayEnd>,
    client: &TcpStream,
    server: &TcpStream,
) -> std::io::Result<()> {
    match res {
        Ok(RelayEnd::Closed) => Ok(()),
        Ok(RelayEnd::Idle) => {
            reset(client);
            reset(server);
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "idle timeout: reset both sides",
            ))
        }
        Err(e) => {
            reset(client);
            reset(server);
            Err(e)
        }
    }
}
