//! The UDP proxy: one task per UDP virtual server, serving the socket bound to its VIP:port.
//!
//! UDP has no connections, so lbd makes *flows*: a flow is keyed by the client's address and
//! port (and, when a persistence plugin keys each datagram — SIP Call-IDs from one upstream
//! proxy — by the member its key chose, so the dialogs of one client spread and each sticks),
//! and owns an upstream socket toward one member, bound to the virtual server's SNAT
//! address (or left to the kernel with `snat = "none"`) and connected to the member, so that
//! only the member's datagrams reach it. The member is chosen once per flow (a persistence
//! record, else the pool's method); every datagram of the flow goes to it.
//!
//! # Flow lifecycle
//!
//! 1. **Creation** — the first datagram from a client that has no live flow. The virtual server
//!    is looked up afresh in the running configuration (a reload may have replaced it; when it
//!    is gone the listener is being removed and the datagram is dropped). A disabled virtual
//!    server creates nothing; one at its connection limit (live flows; `connection_limit`,
//!    default 10,000 for UDP), with the data path's descriptor budget spent, or whose pool has no
//!    member to take the flow, drops the datagram and counts it `refused` (as it does while
//!    lbd drains before it stops: `proxy::drain`). The flow enters the
//!    connection table (protocol UDP, `snat` = the upstream socket's local address), counts as
//!    current on the virtual server and the member, and refreshes the persistence record.
//! 2. **Client → member** — the receive loop sends each datagram on the flow's upstream socket
//!    with a non-blocking send. A full socket buffer drops the datagram (counted per flow and
//!    logged when the flow ends).
//! 3. **Member → client** — one task per flow reads the upstream socket and sends the replies
//!    from the VIP socket, so the client sees them come from VIP:port. A full buffer drops.
//! 4. **End** — the flow ends when it has seen no datagram either way for the virtual server's
//!    `idle_timeout`; when the member answers with an ICMP error (port unreachable: the flow's
//!    upstream socket reports `ECONNREFUSED`), which counts a `connect_failures` on the member,
//!    so that the client's next datagram chooses again (the datagram that meets the error on
//!    the send path is sent on a new flow at once, never to the same member); or when this task
//!    is aborted (reload removing the listener, shutdown). Whatever the way, a drop guard takes
//!    the flow out of the flow map and the connection table and releases its `current` counts.
//!
//! Flows keep the virtual server, pool and member objects they were created with: a reload
//! changes what new flows get, never where an established flow goes.
//!
//! # What it must not do
//!
//! - Block or wait in the receive loop: everything done per datagram there is a non-blocking
//!   system call (flow creation included: socket, bind, connect). A datagram that cannot be
//!   sent now is dropped — that is UDP.
//! - Queue without bound: no channel or buffer sits between a socket and another; the only
//!   queues are the kernel's socket buffers.
//! - Panic on any input: every datagram, zero-length ones included, is forwarded as it is.
//! - Log per datagram above `trace`.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dashmap::DashMap;
use socket2::{SockAddr, SockRef, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, trace};

use super::access::{End, Entry};
use super::budget::{Permit, Side};
use super::datapath::DataPath;
use super::datapath::Restore;
use super::tcp::ConnectError;
use super::{choose, remember, Choice, Hint};
use crate::config::Protocol;
use crate::mirror::proto::{Record, RecordKey, RecordKind};
use crate::state::{CurrentGuard, MemberState, VsState};
use crate::sys::upstream_socket;
use crate::tables::{now_ms, LiveConn, NewConn};
use plugin_api::Direction;
use tokio::sync::mpsc::UnboundedSender;

/// Room for any UDP datagram (IPv4 and non-jumbo IPv6 payloads are at most 65,527 bytes).
const MAX_DATAGRAM: usize = 65_536;

/// Replies a flow task forwards before it lets the other branches of its loop run.
const REPLY_BATCH: usize = 64;

/// A flow's key: the client's address and port, and — when a persistence plugin routes each
/// datagram by its own key (SIP Call-ID) — the member, so that one client's datagrams of
/// different keys can go to different members.
type FlowKey = (SocketAddr, Option<SocketAddr>);

/// The flows of one listener.
type Flows = Arc<DashMap<FlowKey, Arc<Flow>>>;

thread_local! {
    /// The buffer flow tasks read replies into: per thread rather than per flow, so that a flow
    /// costs no 64 KiB of its own. Only borrowed by synchronous code (no await while held).
    static REPLY_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_DATAGRAM]);
}

/// One client's flow toward one member.
struct Flow {
    key: FlowKey,
    client: SocketAddr,
    /// Mirrored to this traffic group's peers (connection mirroring on).
    mirror_tg: Option<Arc<str>>,
    /// Bound to the SNAT address, connected to the member.
    upstream: UdpSocket,
    conn: Arc<LiveConn>,
    vs: Arc<VsState>,
    member: Arc<MemberState>,
    /// The flow's `current` counts on the virtual server and the member; released when the
    /// flow dies (not when the last reference to it goes), so the connection limit sees the
    /// flow leave at once.
    current: Mutex<Option<(CurrentGuard, CurrentGuard)>>,
    /// Monotonic time of creation; `last` is milliseconds since then of the last datagram
    /// either way (wall-clock jumps must not expire or keep flows).
    born: Instant,
    last: AtomicU64,
    dead: AtomicBool,
    /// Tells the flow task that the receive loop ended the flow.
    closed: Notify,
    /// Datagrams dropped because a socket buffer was full (or a send failed).
    dropped: AtomicU64,
    /// The upstream socket's descriptor, from the data path's budget; given back when the
    /// flow (and its socket) goes.
    _permit: Permit,
}

impl Flow {
    fn touch(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
        self.conn.touch(now_ms());
    }

    /// When the flow expires if nothing more passes.
    fn idle_deadline(&self) -> Instant {
        let after = Duration::from_millis(self.last.load(Ordering::Relaxed))
            .saturating_add(self.vs.cfg.idle_timeout());
        // An idle timeout of centuries must not overflow the clock: never is far enough.
        self.born.checked_add(after).unwrap_or_else(|| {
            let now = Instant::now();
            now.checked_add(Duration::from_secs(30 * 365 * 86_400))
                .unwrap_or(now)
        })
    }

    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Marks the flow dead and releases its `current` counts; true for the one caller that did.
    fn kill(&self) -> bool {
        if self.dead.swap(true, Ordering::AcqRel) {
            return false;
        }
        drop(
            self.current
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        true
    }

    /// The member answered with an error (ICMP): kills the flow and counts a connect failure
    /// on the member, once.
    fn member_failed(&self, e: &io::Error) {
        if self.kill() {
            self.member
                .counters
                .connect_failures
                .fetch_add(1, Ordering::Relaxed);
            debug!(
                virtual_server = %self.vs.name,
                client = %self.client,
                member = %self.member.addr,
                "udp flow ended: member answered {e}"
            );
        }
    }

    fn record_key(&self) -> RecordKey {
        RecordKey::UdpFlow {
            client: self.client,
            vip: self.conn.record().vip,
            member: self.member.addr,
        }
    }

    /// The flow as mirroring carries it.
    fn record_kind(&self) -> RecordKind {
        let r = self.conn.record();
        RecordKind::UdpFlow {
            client: self.client,
            vip: r.vip,
            member: self.member.addr,
            snat: r.snat,
            last_seen_ms: self.conn.last_ms(),
            key: self.key.1.map(|_| Vec::new()),
        }
    }

    fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.vs.counters.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Owned by the flow task: ends the flow however the task ends (return or abort).
struct FlowEnd {
    dp: Arc<DataPath>,
    flows: Flows,
    flow: Arc<Flow>,
    reason: End,
}

impl Drop for FlowEnd {
    fn drop(&mut self) {
        let flow = &self.flow;
        flow.kill();
        let current = self
            .flows
            .remove_if(&flow.key, |_, f| Arc::ptr_eq(f, flow))
            .is_some();
        self.dp.conns.remove(flow.conn.id());
        if let (true, Some(tg), Some(m)) = (current, &flow.mirror_tg, self.dp.mirror.as_ref()) {
            m.flow_down(tg, flow.record_key());
        }
        debug!(
            virtual_server = %flow.vs.name,
            client = %flow.client,
            member = %flow.member.addr,
            bytes_in = flow.conn.bytes_in.load(Ordering::Relaxed),
            bytes_out = flow.conn.bytes_out.load(Ordering::Relaxed),
            dropped = flow.dropped.load(Ordering::Relaxed),
            "udp flow ended ({})",
            self.reason.name()
        );
        if flow.vs.cfg.access_log {
            let r = flow.conn.record();
            let entry = Entry {
                started: flow.born.into_std(),
                client: flow.client,
                vip: r.vip,
                member: Some(r.member),
                snat: Some(r.snat),
                bytes_up: r.bytes_in,
                bytes_down: r.bytes_out,
                end: self.reason,
            };
            super::log_access(&self.dp, &flow.vs, &entry);
        }
    }
}

/// Errors on a flow's upstream socket that say the member (or the way to it) is not there:
/// the flow ends and the member is charged a connect failure.
fn member_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

/// What became of a datagram sent toward a flow's member.
enum Forwarded {
    Sent,
    Dropped,
    /// The member is not there: the flow is dead and the datagram was not sent.
    MemberFailed,
}

/// Sends one client datagram to the flow's member, without waiting.
fn forward(flow: &Flow, data: &[u8]) -> Forwarded {
    flow.touch();
    // A plain non-blocking send: tokio's readiness cache is for waiting, and nothing here waits.
    match SockRef::from(&flow.upstream).send(data) {
        Ok(n) => {
            let n = n as u64;
            flow.conn.bytes_in.fetch_add(n, Ordering::Relaxed);
            flow.vs.counters.bytes_in.fetch_add(n, Ordering::Relaxed);
            flow.member
                .counters
                .bytes_in
                .fetch_add(n, Ordering::Relaxed);
            Forwarded::Sent
        }
        Err(e) if member_error(&e) => {
            flow.member_failed(&e);
            Forwarded::MemberFailed
        }
        Err(e) => {
            flow.count_dropped();
            trace!(client = %flow.client, member = %flow.member.addr, "udp datagram dropped: {e}");
            Forwarded::Dropped
        }
    }
}

/// Forwards the member's queued replies to the client from the VIP socket; an error is the
/// socket's (the member's ICMP answer): the flow is over.
fn pump_replies(flow: &Flow, vip: &UdpSocket) -> io::Result<()> {
    let client = SockAddr::from(flow.client);
    REPLY_BUF.with_borrow_mut(|buf| {
        for _ in 0..REPLY_BATCH {
            let n = match flow.upstream.try_recv(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            flow.touch();
            match SockRef::from(vip).send_to(&buf[..n], &client) {
                Ok(sent) => {
                    let sent = sent as u64;
                    flow.conn.bytes_out.fetch_add(sent, Ordering::Relaxed);
                    flow.vs
                        .counters
                        .bytes_out
                        .fetch_add(sent, Ordering::Relaxed);
                    flow.member
                        .counters
                        .bytes_out
                        .fetch_add(sent, Ordering::Relaxed);
                }
                Err(e) => {
                    flow.count_dropped();
                    trace!(client = %flow.client, "udp reply dropped: {e}");
                }
            }
        }
        Ok(())
    })
}

/// A socket error that is pending (set by an ICMP message), for [`UdpSocket::async_io`]:
/// `WouldBlock` when the error readiness was stale (the error was already taken by a send),
/// which clears it.
fn pending_error(s: &UdpSocket) -> io::Result<io::Error> {
    match s.take_error() {
        Ok(Some(e)) => Ok(e),
        Ok(None) => Err(io::ErrorKind::WouldBlock.into()),
        // getsockopt itself failed: the socket is unusable, end the flow all the same.
        Err(e) => Ok(e),
    }
}

/// The member → client half of a flow, and its idle expiry.
async fn run_flow(vip: Arc<UdpSocket>, mut end: FlowEnd) {
    let flow = end.flow.clone();
    let idle = tokio::time::sleep_until(flow.idle_deadline());
    tokio::pin!(idle);
    loop {
        tokio::select! {
            r = flow.upstream.readable() => {
                if r.is_err() {
                    end.reason = End::Stopped;
                    return;
                }
                if let Err(e) = pump_replies(&flow, &vip) {
                    flow.member_failed(&e);
                    end.reason = End::Error;
                    return;
                }
            }
            // An ICMP error marks the socket with an error but does not make it readable:
            // wait for that separately.
            r = flow.upstream.async_io(Interest::ERROR, || pending_error(&flow.upstream)) => {
                match r {
                    Ok(e) => {
                        flow.member_failed(&e);
                        end.reason = End::Error;
                    }
                    Err(_) => end.reason = End::Stopped,
                }
                return;
            }
            () = &mut idle => {
                let deadline = flow.idle_deadline();
                if deadline <= Instant::now() {
                    end.reason = End::Idle;
                    return;
                }
                idle.as_mut().reset(deadline);
            }
            () = flow.closed.notified() => {
                end.reason = End::Error;
                return;
            }
        }
    }
}

/// One listener's state, dp by nothing: the serve task owns it.
struct Listener {
    dp: Arc<DataPath>,
    key: (SocketAddr, Protocol),
    socket: Arc<UdpSocket>,
    flows: Flows,
    tasks: JoinSet<()>,
}

impl Listener {
    /// Handles one datagram from `client`. Never waits.
    fn datagram(&mut self, client: SocketAddr, data: &[u8]) {
        // A persistence plugin routes each datagram by its own key.
        let hint = {
            let rt = self.dp.runtime.load();
            match rt.listeners.get(&self.key).and_then(|v| v.plugin.as_ref()) {
                Some(p) => Hint::from(p.inspect(
                    Protocol::Udp,
                    Direction::ClientToServer,
                    client,
                    self.key.0,
                    data,
                )),
                None => Hint::default(),
            }
        };
        if hint != Hint::default() {
            return self.new_flow(client, data, None, &hint);
        }
        let key = (client, None);
        let existing = self.flows.get(&key).map(|f| f.value().clone());
        let mut failed: Option<SocketAddr> = None;
        if let Some(flow) = existing {
            if !flow.is_dead() {
                match forward(&flow, data) {
                    Forwarded::Sent | Forwarded::Dropped => return,
                    Forwarded::MemberFailed => {
                        self.flows.remove_if(&key, |_, f| Arc::ptr_eq(f, &flow));
                        flow.closed.notify_one();
                        failed = Some(flow.member.addr);
                    }
                }
            }
        }
        self.new_flow(client, data, failed, &Hint::default());
    }

    /// Creates a flow for `client` and sends `data` on it; `failed` is a member that just
    /// refused this datagram (not chosen again for it). With a plugin's `hint`, the flow is
    /// per (client, member): an existing one toward the chosen member is used.
    fn new_flow(
        &mut self,
        client: SocketAddr,
        data: &[u8],
        failed: Option<SocketAddr>,
        hint: &Hint,
    ) {
        let pinned = *hint != Hint::default();
        let vip = self.key.0;
        let Some(vs) = self.dp.runtime.load().listeners.get(&self.key).cloned() else {
            trace!(listener = %vip, "udp datagram dropped: listener being removed");
            return;
        };
        if !vs.cfg.enabled {
            trace!(virtual_server = %vs.name, "udp datagram dropped: virtual server disabled");
            return;
        }
        let mut tried: Vec<usize> = failed
            .and_then(|m| vs.pool.position(m))
            .into_iter()
            .collect();
        // Each round either sends, or adds a member to `tried`: bounded by the pool's size.
        loop {
            let limit = vs.cfg.limit();
            if limit > 0 && vs.counters.current.load(Ordering::Relaxed) >= limit {
                vs.counters.refused.fetch_add(1, Ordering::Relaxed);
                trace!(virtual_server = %vs.name, %client, "udp flow refused: connection limit");
                return;
            }
            let choice = match choose(&self.dp, &vs, (client, vip, None), &tried, hint) {
                Ok(c) => c,
                Err(why) => {
                    vs.counters.refused.fetch_add(1, Ordering::Relaxed);
                    trace!(virtual_server = %vs.name, %client, "udp flow refused: {why:?}");
                    return;
                }
            };
            let key = (client, pinned.then_some(choice.member.addr));
            if pinned {
                let existing = self.flows.get(&key).map(|f| f.value().clone());
                if let Some(flow) = existing.filter(|f| !f.is_dead()) {
                    match forward(&flow, data) {
                        Forwarded::Sent | Forwarded::Dropped => {
                            remember(&self.dp, &vs, (client, vip, None), &choice, hint);
                            return;
                        }
                        Forwarded::MemberFailed => {
                            self.flows.remove_if(&key, |_, f| Arc::ptr_eq(f, &flow));
                            flow.closed.notify_one();
                            tried.push(choice.index);
                            continue;
                        }
                    }
                }
            }
            // lbd is stopping: the flows it has carry on, no new one is opened.
            if self.dp.drain.is_draining() {
                vs.counters.refused.fetch_add(1, Ordering::Relaxed);
                trace!(virtual_server = %vs.name, %client, "udp flow refused: lbd is draining");
                return;
            }
            // The flow's upstream socket is one descriptor of the data path's budget.
            let Some(permit) = self.dp.budget.try_take(1, Side::Udp) else {
                self.dp.budget.refused(Side::Udp);
                vs.counters.refused.fetch_add(1, Ordering::Relaxed);
                trace!(virtual_server = %vs.name, %client, "udp flow refused: descriptor budget");
                return;
            };
            let flow = match self.open(&vs, key, &choice, hint, permit) {
                Ok(f) => f,
                Err(ConnectError::Local(e)) => {
                    // This host is short of something: not the member's fault, and another
                    // member would fare no better.
                    self.dp.budget.local_error(&e);
                    vs.counters.refused.fetch_add(1, Ordering::Relaxed);
                    trace!(virtual_server = %vs.name, %client, "udp flow refused: {e}");
                    return;
                }
                Err(ConnectError::Member(e)) => {
                    choice
                        .member
                        .counters
                        .connect_failures
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(
                        virtual_server = %vs.name,
                        %client,
                        member = %choice.member.addr,
                        "udp flow: cannot open a socket toward the member: {e}"
                    );
                    tried.push(choice.index);
                    continue;
                }
            };
            match forward(&flow, data) {
                Forwarded::Sent | Forwarded::Dropped => return,
                Forwarded::MemberFailed => {
                    self.flows.remove_if(&key, |_, f| Arc::ptr_eq(f, &flow));
                    flow.closed.notify_one();
                    tried.push(choice.index);
                }
            }
        }
    }

    /// Opens the flow toward `choice`: socket, table entries, persistence, flow task.
    fn open(
        &mut self,
        vs: &Arc<VsState>,
        key: FlowKey,
        choice: &Choice,
        hint: &Hint,
        permit: Permit,
    ) -> Result<Arc<Flow>, ConnectError> {
        let member = choice.member.addr;
        let (source, traffic_group) = vs.snat_for(member);
        let s = upstream_socket(member, source, Type::DGRAM).map_err(ConnectError::Local)?;
        s.connect(&member.into())
            .map_err(ConnectError::of_connect)?;
        let flow = self
            .adopt(vs, key, choice.member.clone(), s, traffic_group, permit)
            .map_err(ConnectError::Local)?;
        remember(&self.dp, vs, (key.0, self.key.0, None), choice, hint);
        debug!(
            virtual_server = %vs.name,
            client = %key.0,
            %member,
            snat = %flow.conn.record().snat,
            persisted = choice.persisted,
            "udp flow created"
        );
        Ok(flow)
    }

    /// Makes a flow of the connected upstream socket `s`: table entries, mirroring, flow task.
    fn adopt(
        &mut self,
        vs: &Arc<VsState>,
        key: FlowKey,
        member: Arc<MemberState>,
        s: socket2::Socket,
        traffic_group: Option<Arc<str>>,
        permit: Permit,
    ) -> io::Result<Arc<Flow>> {
        let client = key.0;
        let snat = s
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("upstream socket has no IP address"))?;
        let upstream = UdpSocket::from_std(s.into())?;
        // Nothing fails from here on: the guard that undoes it all exists before the task does.
        let conn = self.dp.conns.insert_shared(
            NewConn {
                protocol: Protocol::Udp,
                virtual_server: &vs.name,
                client,
                vip: self.key.0,
                pool: &vs.pool.name,
                member: member.addr,
                snat,
                traffic_group: traffic_group.as_deref(),
                idle: vs.cfg.idle_timeout(),
            },
            &self.dp.ids,
        );
        let mirror = self.dp.mirror_if(vs.cfg.mirror);
        let flow = Arc::new(Flow {
            key,
            client,
            mirror_tg: mirror.and(traffic_group),
            upstream,
            conn,
            vs: vs.clone(),
            current: Mutex::new(Some((
                CurrentGuard::new(vs.counters.clone()),
                CurrentGuard::new(member.counters.clone()),
            ))),
            member,
            born: Instant::now(),
            last: AtomicU64::new(0),
            dead: AtomicBool::new(false),
            closed: Notify::new(),
            dropped: AtomicU64::new(0),
            _permit: permit,
        });
        let end = FlowEnd {
            dp: self.dp.clone(),
            flows: self.flows.clone(),
            flow: flow.clone(),
            reason: End::Stopped,
        };
        if let Some(old) = self.flows.insert(key, flow.clone()) {
            old.closed.notify_one();
        }
        if let (Some(m), Some(tg)) = (mirror, &flow.mirror_tg) {
            m.flow_up(tg, flow.record_kind());
        }
        self.tasks.spawn(run_flow(self.socket.clone(), end));
        Ok(flow)
    }

    /// Rebuilds the mirrored flows of `records` that belong to this listener (a takeover):
    /// each gets its upstream socket bound to its SNAT address and port — not local yet, the
    /// floating address comes next — and connected to its member. Returns how many.
    fn restore(&mut self, records: Vec<Record>) -> usize {
        let Some(vs) = self.dp.runtime.load().listeners.get(&self.key).cloned() else {
            return 0;
        };
        let mut n = 0;
        for r in records {
            let RecordKind::UdpFlow {
                client,
                vip,
                member,
                snat,
                key,
                ..
            } = r.kind
            else {
                continue;
            };
            if vip != self.key.0 {
                continue;
            }
            let Some(i) = vs.pool.position(member) else {
                debug!(virtual_server = %vs.name, %client, %member,
                    "mirrored udp flow not restored: the member is no longer in the pool");
                continue;
            };
            let fkey = (client, key.is_some().then_some(member));
            let made = bound_socket(member, snat).and_then(|s| {
                self.adopt(
                    &vs,
                    fkey,
                    vs.pool.members[i].clone(),
                    s,
                    Some(r.traffic_group.as_str().into()),
                    // The flow exists already on the device that had it: not refused here.
                    self.dp.budget.take(1, Side::Udp),
                )
            });
            match made {
                Ok(_) => n += 1,
                Err(e) => tracing::warn!(virtual_server = %vs.name, %client, %snat,
                    "mirrored udp flow not restored: {e}"),
            }
        }
        n
    }
}

/// A UDP socket bound to `snat` (address and port; IP_TRANSPARENT, since the floating address
/// arrives after) and connected to `member`.
fn bound_socket(member: SocketAddr, snat: SocketAddr) -> io::Result<socket2::Socket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(member),
        Type::DGRAM.nonblocking(),
        Some(socket2::Protocol::UDP),
    )?;
    crate::sys::set_transparent(&s, &snat)?;
    s.set_reuse_address(true)?;
    s.bind(&snat.into())?;
    s.connect(&member.into())?;
    Ok(s)
}

/// Rebuilds the mirrored UDP flows of `records` on their listeners; returns how many were
/// rebuilt. Waits at most `limit` for each listener.
pub async fn restore_flows(dp: &DataPath, records: Vec<Record>, limit: Duration) -> usize {
    let mut by_listener: std::collections::BTreeMap<SocketAddr, Vec<Record>> = Default::default();
    for r in records {
        if let RecordKind::UdpFlow { vip, .. } = &r.kind {
            by_listener.entry(*vip).or_default().push(r);
        }
    }
    let mut n = 0;
    for (vip, records) in by_listener {
        let Some(tx) = dp
            .udp_restore
            .get(&(vip, Protocol::Udp))
            .map(|e| e.value().clone())
        else {
            tracing::warn!(listener = %vip, flows = records.len(),
                "mirrored udp flows not restored: no such virtual server here");
            continue;
        };
        let (done, rx) = tokio::sync::oneshot::channel();
        if tx.send(Restore { records, done }).is_err() {
            continue;
        }
        if let Ok(Ok(k)) = tokio::time::timeout(limit, rx).await {
            n += k;
        }
    }
    n
}

/// Serves the UDP virtual server listening on `key` with `socket` until aborted. Aborting it
/// ends every flow it created (their tasks are in its `JoinSet`).
pub async fn serve(dp: Arc<DataPath>, key: (SocketAddr, Protocol), socket: tokio::net::UdpSocket) {
    let (tx, mut restores) = tokio::sync::mpsc::unbounded_channel();
    dp.udp_restore.insert(key, tx.clone());
    // Unregisters this listener's restore channel however the task ends.
    struct Unregister(
        Arc<DataPath>,
        (SocketAddr, Protocol),
        UnboundedSender<Restore>,
    );
    impl Drop for Unregister {
        fn drop(&mut self) {
            self.0
                .udp_restore
                .remove_if(&self.1, |_, tx| tx.same_channel(&self.2));
        }
    }
    let _unregister = Unregister(dp.clone(), key, tx);
    let mut l = Listener {
        dp,
        key,
        socket: Arc::new(socket),
        flows: Arc::new(DashMap::new()),
        tasks: JoinSet::new(),
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            Some(req) = restores.recv() => {
                let n = l.restore(req.records);
                let _ = req.done.send(n);
            }
            r = l.socket.recv_from(&mut buf) => match r {
                Ok((n, client)) => l.datagram(client, &buf[..n]),
                Err(e) => match e.kind() {
                    // Nothing to do with the VIP socket's state: carry on.
                    io::ErrorKind::Interrupted
                    | io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset => {
                        trace!(listener = %key.0, "udp receive: {e}");
                    }
                    _ => {
                        debug!(listener = %key.0, "udp receive: {e}");
                        // Bounded pause, so that an error that persists does not spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
            },
            Some(r) = l.tasks.join_next(), if !l.tasks.is_empty() => {
                if let Err(e) = r {
                    if e.is_panic() {
                        error!(listener = %key.0, "udp flow task panicked: {e}");
                    }
                }
            }
        }
    }
}
