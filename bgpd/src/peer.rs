//! One tokio task per neighbor: it owns the sockets, feeds the sans-IO [`Session`] and carries
//! out its outputs, and keeps the neighbor's Adj-RIB-Out in line with the route table.
//!
//! Each TCP connection has a reader task (framing only: whole messages go to the peer task,
//! which decodes them with the codec state of the moment) and a writer task (a queue of encoded
//! messages, so the session loop never blocks on a slow peer; TCP_USER_TIMEOUT ends a write to a
//! dead one).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::bfd::driver as bfd;
use crate::bfd::State as BfdState;
use crate::config::NeighborConfig;
use crate::fsm::{ConnId, Input, Output, Session, SessionConfig, State};
use crate::metrics::{MessageLabel, Metrics, NeighborLabel};
use crate::rib::{AdjRibOut, Changes, ExportContext, RouteKey, SharedTable};
use crate::sockopt::{self, ConnectOptions};
use crate::wire::{self, notif, AttrErrorAction, Family, Message, Nlri, PathAttrs, SessionCodec};

/// What the control socket can read about a neighbor.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub remote_as: u32,
    pub description: Option<String>,
    pub state: State,
    /// Unix time (s) of the last state change (kept for older clients; `since_ms` is the
    /// same in milliseconds, the unit every other time of both control sockets uses).
    pub since: u64,
    /// Unix time (ms) of the last state change.
    pub since_ms: u64,
    pub last_reason: String,
    pub remote_id: Option<String>,
    pub local_address: Option<SocketAddr>,
    pub hold_time: Option<u16>,
    pub families: Vec<Family>,
    pub add_path_send: Vec<Family>,
    pub add_path_receive: Vec<Family>,
    pub four_octet_as: bool,
    pub prefixes_advertised: usize,
    pub prefixes_received: usize,
    pub messages_in: u64,
    pub messages_out: u64,
    pub updates_in: u64,
    pub updates_out: u64,
    pub last_notification_in: Option<String>,
    pub last_notification_out: Option<String>,
    pub established_count: u64,
    /// The BFD session's state (`up`, `down`, …) when BFD is configured.
    pub bfd: Option<String>,
    /// Graceful restart (RFC 4724): the peer's Restart Time when it sent the capability (in
    /// the last session).
    pub peer_restart_time: Option<u16>,
    /// Received prefixes kept as stale while the peer restarts (RFC 4724 §4.2), included in
    /// `prefixes_received`.
    pub prefixes_stale: usize,
    /// Families whose End-of-RIB was sent, and received, in this session.
    pub end_of_rib_sent: Vec<Family>,
    pub end_of_rib_received: Vec<Family>,
}

/// Commands from the daemon to a neighbor task.
#[derive(Debug)]
pub enum PeerCmd {
    /// Reply with the Adj-RIB-Out.
    DumpRibOut(oneshot::Sender<Vec<(Nlri, PathAttrs)>>),
    /// Send pending route changes, then Cease / Administrative Shutdown, close, and end the
    /// task; reply once everything was written (or `drain` passed).
    Shutdown {
        drain: Duration,
        done: oneshot::Sender<()>,
    },
    /// New settings a running session takes without a reset (`description`,
    /// `max_prefixes`, `send_hold_time`: see [`crate::reload`]).
    Retune(Box<NeighborConfig>),
    /// Tests: the task panics (the supervisor's path).
    #[cfg(test)]
    Panic,
}

/// What a neighbor task receives; kept by its supervisor across a restart.
struct Receivers {
    inbound: mpsc::Receiver<TcpStream>,
    events: mpsc::Receiver<ConnEvent>,
    changes: mpsc::UnboundedReceiver<Vec<RouteKey>>,
    cmds: mpsc::Receiver<PeerCmd>,
}

/// The daemon's handle on a neighbor task.
pub struct PeerHandle {
    pub address: IpAddr,
    /// The neighbor's BFD session (removed with the neighbor).
    pub bfd: Option<bfd::PeerHandle>,
    pub inbound: mpsc::Sender<TcpStream>,
    pub cmd: mpsc::Sender<PeerCmd>,
    pub status: Arc<Mutex<PeerStatus>>,
    pub task: JoinHandle<()>,
}

/// Daemon-wide settings a neighbor task needs.
#[derive(Debug, Clone)]
pub struct Global {
    pub local_as: u32,
    pub router_id: std::net::Ipv4Addr,
    /// Graceful restart (RFC 4724): (Restart State bit, Restart Time) when enabled.
    pub graceful_restart: Option<(bool, u16)>,
    /// True once the control clients have announced their routes (or the wait is over):
    /// End-of-RIB goes out only then.
    pub routes_ready: watch::Receiver<bool>,
}

enum ConnEvent {
    Connected(ConnId, std::io::Result<TcpStream>),
    Frame(ConnId, Vec<u8>),
    FramingError(ConnId, wire::DecodeError),
    Closed(ConnId, String),
}

enum WriterCmd {
    Bytes(Vec<u8>),
    Close,
}

struct Conn {
    writer: mpsc::UnboundedSender<WriterCmd>,
    writer_task: JoinHandle<()>,
    reader_task: JoinHandle<()>,
    local: Option<SocketAddr>,
    out: Arc<Outgoing>,
}

/// What waits to be written on one connection, shared with its writer task.
#[derive(Debug)]
struct Outgoing {
    /// Bytes handed to the writer and not written yet.
    queued: AtomicUsize,
    /// When the writer last made progress (or the queue last became non-empty).
    progress: Mutex<Instant>,
}

/// A ROUTE-REFRESH that arrives while more than this is queued for the peer is coalesced:
/// at most one per family waits, and is carried out once the queue has drained below it.
pub const REFRESH_BACKLOG: usize = 1024 * 1024;
/// More than this queued for one peer: Cease / Out of Resources (RFC 4486 subcode 8).
pub const MAX_QUEUED: usize = 64 * 1024 * 1024;
/// How often the output bounds are checked.
const OUTPUT_CHECK: Duration = Duration::from_millis(200);

impl Conn {
    /// Hands `bytes` to the writer; the queue's size after.
    fn enqueue(&self, bytes: Vec<u8>) -> usize {
        let n = bytes.len();
        if self.out.queued.fetch_add(n, Ordering::Relaxed) == 0 {
            *self.out.progress.lock().expect("progress lock") = Instant::now();
        }
        let _ = self.writer.send(WriterCmd::Bytes(bytes));
        self.out.queued.load(Ordering::Relaxed)
    }
}

struct Established {
    conn: ConnId,
    codec: SessionCodec,
    export: ExportContext,
}

/// Spawns the task of one neighbor.
pub fn spawn(
    cfg: NeighborConfig,
    global: Global,
    table: SharedTable,
    metrics: Arc<Metrics>,
    bfd: Option<bfd::PeerHandle>,
) -> PeerHandle {
    let (in_tx, in_rx) = mpsc::channel(4);
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let status = Arc::new(Mutex::new(PeerStatus {
        address: cfg.address,
        remote_as: cfg.remote_as,
        description: cfg.description.clone(),
        state: State::Idle,
        since: unix_now_ms() / 1000,
        since_ms: unix_now_ms(),
        last_reason: "starting".into(),
        remote_id: None,
        local_address: None,
        hold_time: None,
        families: vec![],
        add_path_send: vec![],
        add_path_receive: vec![],
        four_octet_as: false,
        prefixes_advertised: 0,
        prefixes_received: 0,
        messages_in: 0,
        messages_out: 0,
        updates_in: 0,
        updates_out: 0,
        last_notification_in: None,
        last_notification_out: None,
        established_count: 0,
        bfd: bfd.as_ref().map(|b| b.state().name().to_string()),
        peer_restart_time: None,
        prefixes_stale: 0,
        end_of_rib_sent: vec![],
        end_of_rib_received: vec![],
    }));
    let changes = table.lock().expect("route table lock").subscribe();
    let (ev_tx, ev_rx) = mpsc::channel(256);
    let label = NeighborLabel {
        neighbor: cfg.address.to_string(),
    };
    let span = info_span!("peer", neighbor = %cfg.address);
    let address = cfg.address;
    let st = status.clone();
    let bfd_rx = bfd.as_ref().map(bfd::PeerHandle::watch);
    // A task started again after a panic takes the settings of the moment.
    let live_cfg = Arc::new(Mutex::new(cfg.clone()));
    let make = move || {
        let cfg = live_cfg.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Peer {
            ebgp: cfg.is_ebgp(global.local_as),
            session: Session::new(SessionConfig {
                local_as: global.local_as,
                remote_as: cfg.remote_as,
                router_id: global.router_id,
                hold_time: cfg.hold_time,
                keepalive: cfg.keepalive,
                connect_retry: cfg.connect_retry(),
                idle_hold: Duration::from_secs(cfg.idle_hold),
                passive: cfg.passive,
                families: cfg.families.clone(),
                add_path_send: cfg.add_path_send.clone(),
                add_path_receive: cfg.add_path_receive.clone(),
                // RFC 4724 §3: F set for every family: bgpd forwards nothing itself, and lbd and
                // the kernel keep forwarding while bgpd restarts.
                graceful_restart: global.graceful_restart.map(|(restarted, restart_time)| {
                    wire::GracefulRestart {
                        restarted,
                        notification: false,
                        restart_time,
                        families: cfg.families.iter().map(|f| (*f, true)).collect(),
                    }
                }),
            }),
            cfg: cfg.clone(),
            global: global.clone(),
            conns: HashMap::new(),
            pending: HashMap::new(),
            closing: Vec::new(),
            established: None,
            rib_out: AdjRibOut::new(),
            rib_in: HashSet::new(),
            table: table.clone(),
            metrics: metrics.clone(),
            label: label.clone(),
            status: st.clone(),
            ev_tx: ev_tx.clone(),
            last_connect_error: None,
            refresh_pending: BTreeSet::new(),
            bfd: bfd_rx.clone(),
            bfd_state: None,
            gr: GrState::default(),
            live_cfg: live_cfg.clone(),
        }
    };
    let rx = Receivers {
        inbound: in_rx,
        events: ev_rx,
        changes,
        cmds: cmd_rx,
    };
    let task = tokio::spawn(supervise(make, rx).instrument(span));
    PeerHandle {
        address,
        bfd,
        inbound: in_tx,
        cmd: cmd_tx,
        status,
        task,
    }
}

/// How long a neighbor task that panicked waits before it starts again.
pub const RESTART_AFTER_PANIC: Duration = Duration::from_secs(1);

/// Runs the neighbor task; when it panics (a bug), the panic is logged and counted, its
/// connections close with it, and a fresh task takes the neighbor over after
/// [`RESTART_AFTER_PANIC`] — never a neighbor that is silently gone while bgpd runs on. The
/// peer sees its TCP connection close (no NOTIFICATION: the state that would send one is
/// what failed) and reconnects as after any session loss.
async fn supervise(mut make: impl FnMut() -> Peer, mut rx: Receivers) {
    use futures_util::FutureExt;
    loop {
        let peer = make();
        let status = peer.status.clone();
        let metrics = peer.metrics.clone();
        let label = peer.label.clone();
        let ran = std::panic::AssertUnwindSafe(peer.run(&mut rx))
            .catch_unwind()
            .await;
        let Err(panic) = ran else { return };
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "?".into());
        tracing::error!(
            "session task panicked ({what}); its connections are closed, restarting it"
        );
        {
            let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
            s.state = State::Idle;
            (s.since, s.since_ms) = (unix_now_ms() / 1000, unix_now_ms());
            s.last_reason = format!("internal error: the session task panicked ({what})");
        }
        metrics.set_session_state(&label, State::Idle);
        metrics.session_task_panics.get_or_create(&label).inc();
        tokio::time::sleep(RESTART_AFTER_PANIC).await;
        // Events of the old task's connections (their tasks are aborted) must not reach the
        // new one.
        while rx.events.try_recv().is_ok() {}
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // A task that ends any way (a panic included) takes its connections with it.
        for (_, c) in self.conns.drain() {
            c.reader_task.abort();
            c.writer_task.abort();
        }
        for (_, (p, _)) in self.pending.drain() {
            p.abort();
        }
    }
}

struct Peer {
    cfg: NeighborConfig,
    global: Global,
    ebgp: bool,
    session: Session,
    conns: HashMap<ConnId, Conn>,
    /// Outbound connects in flight, with when each started.
    pending: HashMap<ConnId, (JoinHandle<()>, Instant)>,
    /// Writer tasks of closed connections still flushing (awaited on shutdown).
    closing: Vec<JoinHandle<()>>,
    established: Option<Established>,
    rib_out: AdjRibOut,
    rib_in: HashSet<Nlri>,
    table: SharedTable,
    metrics: Arc<Metrics>,
    label: NeighborLabel,
    status: Arc<Mutex<PeerStatus>>,
    ev_tx: mpsc::Sender<ConnEvent>,
    last_connect_error: Option<String>,
    /// ROUTE-REFRESHes waiting for the output queue to drain (at most one per family).
    refresh_pending: BTreeSet<Family>,
    /// The neighbor's BFD session status (taken by [`Peer::run`]).
    bfd: Option<watch::Receiver<bfd::Status>>,
    /// The BFD state last seen.
    bfd_state: Option<BfdState>,
    gr: GrState,
    /// The settings a restarted task takes (updated by [`PeerCmd::Retune`]).
    live_cfg: Arc<Mutex<NeighborConfig>>,
}

/// Graceful restart (RFC 4724) state of one neighbor.
#[derive(Default)]
struct GrState {
    /// The peer's capability in the current (or last) session, when we sent ours too.
    peer: Option<wire::GracefulRestart>,
    /// A NOTIFICATION went either way in this session: its end is not a restart.
    notified: bool,
    /// End-of-RIB waits for [`Global::routes_ready`].
    eor_pending: bool,
    /// Received routes kept while the peer restarts, and until when.
    stale: HashSet<Nlri>,
    stale_until: Option<Instant>,
}

impl Peer {
    async fn run(mut self, rx: &mut Receivers) {
        let Receivers {
            inbound,
            events,
            changes,
            cmds,
        } = rx;
        self.set_state_metric(State::Idle);
        let mut bfd = self.bfd.take();
        let mut ready = self.global.routes_ready.clone();
        if let Some(rx) = bfd.as_mut() {
            let st = *rx.borrow_and_update();
            self.on_bfd(st);
        }
        let out = self.session.process(Instant::now(), Input::Start);
        self.apply(out);
        let mut check = tokio::time::interval(OUTPUT_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.session.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {
                    let out = self.session.process(Instant::now(), Input::Timeout);
                    self.apply(out);
                }
                _ = check.tick() => {
                    self.check_output();
                    self.check_stale();
                }
                () = async { let _ = ready.wait_for(|r| *r).await; }, if self.gr.eor_pending => {
                    // The routes announced before `ready` are in the table and queued here:
                    // they go before End-of-RIB, whichever branch the select took first.
                    let mut keys = Vec::new();
                    while let Ok(more) = changes.try_recv() {
                        keys.extend(more);
                    }
                    if !keys.is_empty() {
                        self.sync(Some(keys));
                    }
                    self.send_end_of_rib();
                }
                st = bfd_change(&mut bfd) => match st {
                    Some(st) => self.on_bfd(st),
                    None => bfd = None,
                },
                Some(stream) = inbound.recv() => self.accept(stream),
                Some(ev) = events.recv() => self.on_event(ev),
                Some(keys) = changes.recv() => {
                    let mut keys = keys;
                    // Coalesce whatever else is queued into one pass.
                    while let Ok(more) = changes.try_recv() {
                        keys.extend(more);
                    }
                    self.sync(Some(keys));
                }
                cmd = cmds.recv() => match cmd {
                    Some(PeerCmd::DumpRibOut(reply)) => {
                        let _ = reply.send(self.rib_out.iter().map(|(n, a)| (*n, (**a).clone())).collect());
                    }
                    Some(PeerCmd::Retune(cfg)) => self.retune(*cfg),
                    #[cfg(test)]
                    Some(PeerCmd::Panic) => panic!("a test asked this session task to panic"),
                    Some(PeerCmd::Shutdown { drain, done }) => {
                        while let Ok(keys) = changes.try_recv() {
                            self.sync(Some(keys));
                        }
                        self.shutdown(drain).await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.shutdown(Duration::from_millis(100)).await;
                        return;
                    }
                },
            }
        }
    }

    async fn shutdown(&mut self, drain: Duration) {
        let out = self.session.process(
            Instant::now(),
            Input::Stop {
                subcode: notif::CEASE_ADMIN_SHUTDOWN,
                data: b"bgpd shutting down".to_vec(),
            },
        );
        // Close writes the queued withdraws and the NOTIFICATION, then shuts the socket down.
        self.apply(out);
        let mut writers = std::mem::take(&mut self.closing);
        for (_, c) in self.conns.drain() {
            let _ = c.writer.send(WriterCmd::Close);
            c.reader_task.abort();
            writers.push(c.writer_task);
        }
        for (_, (p, _)) in self.pending.drain() {
            p.abort();
        }
        let _ = tokio::time::timeout(drain, async {
            for w in writers {
                let _ = w.await;
            }
        })
        .await;
    }

    /// Settings taken live (see [`PeerCmd::Retune`]); a lower `max_prefixes` applies at once.
    fn retune(&mut self, cfg: NeighborConfig) {
        info!("reload: settings taken without a reset");
        *self.live_cfg.lock().unwrap_or_else(|e| e.into_inner()) = cfg.clone();
        self.status.lock().expect("status lock").description = cfg.description.clone();
        self.cfg = cfg;
        self.check_max_prefixes();
    }

    /// A session came up: RFC 4724 §4.2, the receiving speaker's side. Stale routes of a
    /// family the peer no longer keeps forwarding state for (no capability, or F clear) go at
    /// once; the others stay until its End-of-RIB or the restart time.
    fn gr_established(&mut self, peer: Option<wire::GracefulRestart>, families: &[Family]) {
        let ours = self.global.graceful_restart.is_some();
        let peer = peer.filter(|_| ours);
        if !self.gr.stale.is_empty() {
            let kept: Vec<Family> = peer
                .as_ref()
                .map(|p| {
                    p.families
                        .iter()
                        .filter(|(f, fwd)| *fwd && families.contains(f))
                        .map(|(f, _)| *f)
                        .collect()
                })
                .unwrap_or_default();
            let before = self.gr.stale.len();
            self.gr
                .stale
                .retain(|n| kept.contains(&Family::of(&n.prefix)));
            if before != self.gr.stale.len() {
                info!(
                    removed = before - self.gr.stale.len(),
                    "stale routes removed: the peer kept no forwarding state for them"
                );
            }
            self.gr.stale_until = peer
                .as_ref()
                .map(|p| Instant::now() + Duration::from_secs(u64::from(p.restart_time)));
        }
        {
            let mut s = self.status.lock().expect("status lock");
            s.peer_restart_time = peer.as_ref().map(|p| p.restart_time);
            s.end_of_rib_sent.clear();
            s.end_of_rib_received.clear();
        }
        self.gr.peer = peer;
        self.gr.notified = false;
        self.gr.eor_pending = false;
    }

    /// The established session ended: without a NOTIFICATION either way and with a peer that
    /// does graceful restart, its routes are kept as stale for its Restart Time (RFC 4724
    /// §4.2); otherwise they go.
    fn gr_session_lost(&mut self) {
        self.gr.eor_pending = false;
        let Some(p) = self.gr.peer.take() else {
            self.gr.stale.clear();
            return;
        };
        if self.gr.notified || p.restart_time == 0 {
            self.gr.stale.clear();
            return;
        }
        let families: Vec<Family> = p.families.iter().map(|(f, _)| *f).collect();
        let kept: Vec<Nlri> = self
            .rib_in
            .iter()
            .filter(|n| families.contains(&Family::of(&n.prefix)))
            .copied()
            .collect();
        info!(
            stale = kept.len(),
            restart_time = p.restart_time,
            "peer restarting (session lost without a notification): keeping its routes as stale"
        );
        self.gr.stale.extend(kept);
        self.gr.stale_until = Some(Instant::now() + Duration::from_secs(u64::from(p.restart_time)));
    }

    /// The restart timer (RFC 4724 §4.2): stale routes still there when it expires go.
    fn check_stale(&mut self) {
        if self.gr.stale_until.is_some_and(|t| Instant::now() >= t) {
            self.gr.stale_until = None;
            if !self.gr.stale.is_empty() {
                info!(
                    removed = self.gr.stale.len(),
                    "restart time over: stale routes removed"
                );
                self.gr.stale.clear();
                self.update_counts();
            }
        }
    }

    /// End-of-RIB for every negotiated family (RFC 4724 §2), after what is queued.
    fn send_end_of_rib(&mut self) {
        self.gr.eor_pending = false;
        let Some(est) = &self.established else { return };
        let conn = est.conn;
        let families = est.export.families.clone();
        for f in families {
            let m = Message::Update(wire::Update {
                end_of_rib: Some(f),
                ..Default::default()
            });
            self.send(conn, &m);
            info!(%f, "end-of-rib sent");
            let mut s = self.status.lock().expect("status lock");
            if !s.end_of_rib_sent.contains(&f) {
                s.end_of_rib_sent.push(f);
            }
        }
    }

    /// RFC 5882 §4.3 (BGP as a BFD client): a BFD session that leaves Up for a path failure
    /// closes the BGP session at once (Cease / BFD Down, RFC 9384) instead of waiting for the
    /// hold timer. A peer that takes its BFD session AdminDown has disabled BFD, not lost
    /// the path (RFC 5882 §3.2): the BGP session stays. BFD does not hold the BGP session
    /// down: it comes back as after any loss, and BFD with it when the path works.
    fn on_bfd(&mut self, st: bfd::Status) {
        let prev = self.bfd_state.replace(st.state);
        self.status.lock().expect("status lock").bfd = Some(st.state.name().to_string());
        self.metrics.set_bfd_state(&self.label, st.state);
        if prev != Some(BfdState::Up) || st.state == BfdState::Up {
            return;
        }
        if st.remote_state == BfdState::AdminDown {
            info!("bfd: the peer disabled its session (AdminDown); the BGP session stays (RFC 5882 §3.2)");
            return;
        }
        self.metrics.bfd_down.get_or_create(&self.label).inc();
        if matches!(
            self.session.state(),
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            warn!(diag = %st.diag, "bfd session down: closing the BGP session (RFC 5882)");
            let out = self.session.process(
                Instant::now(),
                Input::Cease {
                    subcode: notif::CEASE_BFD_DOWN,
                    data: Vec::new(),
                },
            );
            self.apply(out);
            self.set_reason(format!("bfd down: {}", st.diag));
        } else {
            info!(diag = %st.diag, "bfd session down");
        }
    }

    /// The established connection's output: what is queued, and since when nothing moved.
    fn output(&self) -> Option<(ConnId, Arc<Outgoing>)> {
        let est = self.established.as_ref()?;
        let c = self.conns.get(&est.conn)?;
        Some((est.conn, c.out.clone()))
    }

    /// Bytes queued for the established connection.
    fn queued(&self) -> usize {
        self.output()
            .map_or(0, |(_, o)| o.queued.load(Ordering::Relaxed))
    }

    /// The output bounds: the send hold timer (RFC 9687), the queue limit, and deferred
    /// route refreshes.
    fn check_output(&mut self) {
        let Some((conn, out)) = self.output() else {
            return;
        };
        let queued = out.queued.load(Ordering::Relaxed);
        let stalled = out.progress.lock().expect("progress lock").elapsed();
        let send_hold = self.cfg.send_hold();
        if queued > 0 && stalled >= send_hold {
            warn!(queued, stalled = ?stalled, "send hold timer expired (RFC 9687): the peer has read nothing for {send_hold:?}; closing");
            self.metrics
                .send_hold_expired
                .get_or_create(&self.label)
                .inc();
            self.status
                .lock()
                .expect("status lock")
                .last_notification_out = Some("8/0 send hold timer expired".into());
            self.on_event(ConnEvent::Closed(
                conn,
                format!("send hold timer expired ({queued} bytes unread)"),
            ));
            return;
        }
        if queued > MAX_QUEUED {
            warn!(
                queued,
                "output queue over {MAX_QUEUED} bytes: Cease / Out of Resources"
            );
            let out = self.session.process(
                Instant::now(),
                Input::Stop {
                    subcode: notif::CEASE_OUT_OF_RESOURCES,
                    data: Vec::new(),
                },
            );
            self.apply(out);
            return;
        }
        if queued <= REFRESH_BACKLOG && !self.refresh_pending.is_empty() {
            for family in std::mem::take(&mut self.refresh_pending) {
                info!(%family, "deferred route refresh: re-sending the adj-rib-out");
                let changes = self.rib_out.resend(Some(family));
                self.send_changes(changes);
            }
        }
    }

    fn accept(&mut self, stream: TcpStream) {
        let ttl = self.ttl();
        if let Err(e) = sockopt::tune_accepted(&stream, ttl, self.min_ttl(), self.user_timeout()) {
            warn!("cannot set socket options on accepted connection: {e}");
        }
        let id = self.session.alloc_conn_id();
        info!(
            conn = id.0,
            "accepted connection from {:?}",
            stream.peer_addr().ok()
        );
        self.register(id, stream);
        let out = self.session.process(
            Instant::now(),
            Input::TcpConnected {
                conn: id,
                outbound: false,
            },
        );
        self.apply(out);
    }

    /// GTSM (RFC 5082): the lowest TTL accepted, with `ttl_security`.
    fn min_ttl(&self) -> Option<u32> {
        self.cfg.ttl_security.then_some(255)
    }

    fn ttl(&self) -> u32 {
        if self.cfg.ttl_security {
            return 255;
        }
        match self.cfg.ebgp_multihop {
            Some(t) => t as u32,
            None if self.ebgp => 1,
            None => 64,
        }
    }

    fn user_timeout(&self) -> Option<Duration> {
        match self.cfg.tcp_user_timeout_ms {
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms as u64)),
            None if self.cfg.hold_time == 0 => None,
            None => Some(Duration::from_secs(self.cfg.hold_time as u64)),
        }
    }

    fn register(&mut self, id: ConnId, stream: TcpStream) {
        let local = stream.local_addr().ok();
        let (rd, wr) = stream.into_split();
        let (wtx, wrx) = mpsc::unbounded_channel();
        let out = Arc::new(Outgoing {
            queued: AtomicUsize::new(0),
            progress: Mutex::new(Instant::now()),
        });
        let writer_task = tokio::spawn(writer(wr, wrx, out.clone()));
        let reader_task = tokio::spawn(reader(id, rd, self.ev_tx.clone()));
        self.conns.insert(
            id,
            Conn {
                writer: wtx,
                writer_task,
                reader_task,
                local,
                out,
            },
        );
    }

    fn on_event(&mut self, ev: ConnEvent) {
        let now = Instant::now();
        let out = match ev {
            ConnEvent::Connected(id, res) => {
                if self.pending.remove(&id).is_none() {
                    return; // the FSM gave up on this attempt meanwhile
                }
                match res {
                    Ok(stream) => {
                        info!(conn = id.0, "connected to {}", self.cfg.remote());
                        self.last_connect_error = None;
                        self.register(id, stream);
                        self.session.process(
                            now,
                            Input::TcpConnected {
                                conn: id,
                                outbound: true,
                            },
                        )
                    }
                    Err(e) => {
                        self.note_connect_failure(id, &e);
                        self.session.process(now, Input::TcpClosed { conn: id })
                    }
                }
            }
            ConnEvent::Frame(id, bytes) => {
                if !self.conns.contains_key(&id) {
                    return;
                }
                match wire::decode(&bytes, self.codec_for(id)) {
                    Ok(msg) => {
                        self.count_in(&msg);
                        self.session.process(now, Input::Message { conn: id, msg })
                    }
                    Err(err) if err.code == notif::ROUTE_REFRESH && err.subcode == 0 => {
                        // RFC 2918 §4: a ROUTE-REFRESH for a family we did not negotiate (or an
                        // RFC 7313 subtype we did not offer) is ignored, not an error.
                        debug!(conn = id.0, "ignoring route refresh: {err}");
                        return;
                    }
                    Err(err) => {
                        warn!(conn = id.0, "malformed message from peer: {err}");
                        self.session
                            .process(now, Input::DecodeError { conn: id, err })
                    }
                }
            }
            ConnEvent::FramingError(id, err) => {
                warn!(conn = id.0, "bad message header from peer: {err}");
                self.session
                    .process(now, Input::DecodeError { conn: id, err })
            }
            ConnEvent::Closed(id, why) => {
                if let Some(c) = self.conns.remove(&id) {
                    info!(conn = id.0, "connection closed: {why}");
                    self.set_reason(why);
                    c.writer_task.abort();
                    self.session.process(now, Input::TcpClosed { conn: id })
                } else {
                    return;
                }
            }
        };
        self.apply(out);
    }

    fn apply(&mut self, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Connect { conn } => self.connect(conn),
                Output::Send { conn, msg } => self.send(conn, &msg),
                Output::Close { conn } => {
                    if let Some((p, started)) = self.pending.remove(&conn) {
                        p.abort();
                        // The FSM gave up on this attempt because ConnectRetry expired before
                        // the connect finished: to the user that is a connect that timed out.
                        // (A close for another reason, e.g. an inbound session won, is not.)
                        if started.elapsed() >= self.cfg.connect_retry() {
                            let e = std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "connect timed out",
                            );
                            self.note_connect_failure(conn, &e);
                        }
                    }
                    if let Some(c) = self.conns.remove(&conn) {
                        let _ = c.writer.send(WriterCmd::Close);
                        c.reader_task.abort();
                        self.closing.retain(|t| !t.is_finished());
                        self.closing.push(c.writer_task);
                    }
                }
                Output::Established {
                    conn,
                    codec,
                    peer,
                    families,
                } => {
                    let local = self.conns.get(&conn).and_then(|c| c.local);
                    let self_v4 = match (self.cfg.local_address, local) {
                        (Some(IpAddr::V4(a)), _) => Some(a),
                        (_, Some(SocketAddr::V4(l))) => Some(*l.ip()),
                        _ => None,
                    };
                    let self_v6 = match (self.cfg.local_address_v6, self.cfg.local_address, local) {
                        (Some(a), _, _) => Some(a),
                        (_, Some(IpAddr::V6(a)), _) => Some(a),
                        (_, _, Some(SocketAddr::V6(l))) => Some(*l.ip()),
                        _ => None,
                    };
                    let export = ExportContext {
                        local_as: self.global.local_as,
                        ebgp: self.ebgp,
                        self_v4,
                        self_v6,
                        families: families.clone(),
                        add_path_send: codec.add_path_send.clone(),
                    };
                    info!(
                        remote_id = %peer.bgp_id, ?families, add_path_send = ?codec.add_path_send,
                        asn4 = codec.asn4, "session established"
                    );
                    {
                        let mut s = self.status.lock().expect("status lock");
                        s.remote_id = Some(peer.bgp_id.to_string());
                        s.local_address = local;
                        s.hold_time = self.session.negotiated_hold_time();
                        s.families = families;
                        s.add_path_send = codec.add_path_send.clone();
                        s.add_path_receive = codec.add_path_receive.clone();
                        s.four_octet_as = codec.asn4;
                        s.established_count += 1;
                    }
                    self.metrics
                        .established_transitions
                        .get_or_create(&self.label)
                        .inc();
                    let negotiated = export.families.clone();
                    self.established = Some(Established {
                        conn,
                        codec,
                        export,
                    });
                    self.rib_out.clear();
                    self.rib_in.clear();
                    self.gr_established(peer.capabilities.graceful_restart, &negotiated);
                    self.sync(None);
                    if self.gr.peer.is_some() {
                        // RFC 4724 §2: End-of-RIB after the initial update, once the routes
                        // lbd announces are in (after a restart of bgpd).
                        self.gr.eor_pending = true;
                        if *self.global.routes_ready.borrow() {
                            self.send_end_of_rib();
                        }
                    }
                }
                Output::Update { update } => self.on_update(update),
                Output::RouteRefresh { family } => {
                    if self.queued() > REFRESH_BACKLOG {
                        // Coalesced: one per family waits for the queue to drain.
                        if self.refresh_pending.insert(family) {
                            debug!(%family, "route refresh while the peer is behind: deferred");
                        }
                        self.metrics
                            .refreshes_coalesced
                            .get_or_create(&self.label)
                            .inc();
                    } else {
                        info!(%family, "route refresh requested: re-sending the adj-rib-out");
                        let changes = self.rib_out.resend(Some(family));
                        self.send_changes(changes);
                    }
                }
                Output::StateChange { from, to, reason } => {
                    info!(%from, %to, "state change: {reason}");
                    self.set_state_metric(to);
                    {
                        let mut s = self.status.lock().expect("status lock");
                        s.state = to;
                        (s.since, s.since_ms) = (unix_now_ms() / 1000, unix_now_ms());
                        s.last_reason = reason;
                    }
                    if from == State::Established && to != State::Established {
                        self.established = None;
                        self.refresh_pending.clear();
                        self.rib_out.clear();
                        self.gr_session_lost();
                        self.rib_in.clear();
                        self.update_counts();
                    }
                }
                Output::NotificationReceived(n) => {
                    self.gr.notified = true;
                    self.record_notification(&n, true);
                }
            }
        }
    }

    /// Logs a NOTIFICATION, counts it and keeps it for `bgpctl neighbors`.
    fn record_notification(&self, n: &wire::Notification, received: bool) {
        let text = format!("{}/{} {}", n.code, n.subcode, describe(n.code, n.subcode));
        let label = MessageLabel {
            neighbor: self.label.neighbor.clone(),
            kind: format!("{}/{}", n.code, n.subcode),
        };
        let mut status = self.status.lock().expect("status lock");
        if received {
            warn!(
                code = n.code,
                subcode = n.subcode,
                "notification received: {text}"
            );
            self.metrics.notifications_in.get_or_create(&label).inc();
            status.last_notification_in = Some(text);
        } else {
            warn!(
                code = n.code,
                subcode = n.subcode,
                "sending notification: {text}"
            );
            self.metrics.notifications_out.get_or_create(&label).inc();
            status.last_notification_out = Some(text);
        }
    }

    /// The codec state of a connection: negotiated once established, plain before.
    fn codec_for(&self, conn: ConnId) -> &SessionCodec {
        static PLAIN: SessionCodec = SessionCodec {
            asn4: false,
            add_path_send: Vec::new(),
            add_path_receive: Vec::new(),
            ebgp: false,
        };
        match &self.established {
            Some(e) if e.conn == conn => &e.codec,
            _ => &PLAIN,
        }
    }

    /// Logs a failed outbound connect (once per distinct failure) and records it as the
    /// session's last reason.
    fn note_connect_failure(&mut self, id: ConnId, e: &std::io::Error) {
        let mut why = e.to_string();
        if self.cfg.password.is_some() && e.kind() == std::io::ErrorKind::TimedOut {
            why.push_str(" (tcp md5 is configured: a password mismatch looks like this)");
        }
        let line = format!("connect to {} failed: {why}", self.cfg.remote());
        // Warn once per distinct failure, not at every retry.
        if self.last_connect_error.as_deref() != Some(line.as_str()) {
            warn!(conn = id.0, "{line}");
            self.last_connect_error = Some(line.clone());
        } else {
            debug!(conn = id.0, "{line}");
        }
        self.set_reason(line);
    }

    fn connect(&mut self, id: ConnId) {
        let opts = ConnectOptions {
            remote: self.cfg.remote(),
            local: self.cfg.local_address,
            md5: self.cfg.password.as_ref().map(|p| p.as_bytes().to_vec()),
            ttl: self.ttl(),
            min_ttl: self.min_ttl(),
            user_timeout: self.user_timeout(),
        };
        let tx = self.ev_tx.clone();
        let timeout = self.cfg.connect_retry();
        let task = tokio::spawn(async move {
            let res = async {
                let sock = sockopt::outbound_socket(&opts)?;
                match tokio::time::timeout(timeout, sock.connect(opts.remote)).await {
                    Ok(r) => r,
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connect timed out",
                    )),
                }
            }
            .await;
            let _ = tx.send(ConnEvent::Connected(id, res)).await;
        });
        self.pending.insert(id, (task, Instant::now()));
    }

    fn send(&mut self, conn: ConnId, msg: &Message) {
        if let Message::Notification(n) = msg {
            self.record_notification(n, false);
            self.gr.notified = true;
        }
        self.count_out(kind(msg), 1);
        let bytes = wire::encode(msg, self.codec_for(conn));
        if let Some(c) = self.conns.get(&conn) {
            c.enqueue(bytes);
        }
    }

    /// Brings the Adj-RIB-Out in line with the table (for `keys`, or everything) and sends the
    /// difference.
    fn sync(&mut self, keys: Option<Vec<RouteKey>>) {
        let Some(est) = &self.established else { return };
        let changes = {
            let table = self.table.lock().expect("route table lock");
            self.rib_out.update(&table, &est.export, keys.as_deref())
        };
        self.send_changes(changes);
    }

    fn send_changes(&mut self, changes: Changes) {
        let Some(est) = &self.established else { return };
        if changes.is_empty() {
            return;
        }
        let Some(conn) = self.conns.get(&est.conn) else {
            return;
        };
        let mut msgs = 0u64;
        if !changes.withdrawn.is_empty() {
            for m in
                wire::encode_updates(&changes.withdrawn, &[], &PathAttrs::default(), &est.codec)
            {
                conn.enqueue(m);
                msgs += 1;
            }
        }
        for (attrs, nlri) in &changes.announced {
            for m in wire::encode_updates(&[], nlri, attrs, &est.codec) {
                conn.enqueue(m);
                msgs += 1;
            }
        }
        debug!(
            withdrawn = changes.withdrawn.len(),
            announced = changes.announced_count(),
            messages = msgs,
            "sent updates"
        );
        self.count_out("update", msgs);
        self.status.lock().expect("status lock").updates_out += msgs;
        self.update_counts();
    }

    fn on_update(&mut self, u: wire::Update) {
        self.status.lock().expect("status lock").updates_in += 1;
        for e in &u.errors {
            warn!("rfc 7606: {:?}: {}", e.action, e.detail);
            if e.action == AttrErrorAction::TreatAsWithdraw {
                self.metrics
                    .updates_treated_as_withdraw
                    .get_or_create(&self.label)
                    .inc();
            }
        }
        for n in &u.withdrawn {
            self.rib_in.remove(n);
            self.gr.stale.remove(n);
        }
        for n in &u.announced {
            self.rib_in.insert(*n);
            self.gr.stale.remove(n);
        }
        if let Some(f) = u.end_of_rib {
            info!(%f, "end-of-rib received");
            // RFC 4724 §4.2: what is still stale of the family goes now.
            let before = self.gr.stale.len();
            self.gr.stale.retain(|n| Family::of(&n.prefix) != f);
            if before != self.gr.stale.len() {
                info!(%f, removed = before - self.gr.stale.len(), "stale routes removed");
            }
            let mut s = self.status.lock().expect("status lock");
            if !s.end_of_rib_received.contains(&f) {
                s.end_of_rib_received.push(f);
            }
        }
        self.update_counts();
        self.check_max_prefixes();
    }

    /// Cease / Maximum Number of Prefixes Reached when the peer sent more than allowed.
    fn check_max_prefixes(&mut self) {
        if self.established.is_none() {
            return;
        }
        if let Some(max) = self.cfg.max_prefixes.filter(|m| *m > 0) {
            if self.rib_in.len() > max as usize {
                warn!(
                    received = self.rib_in.len(),
                    max, "maximum prefix count exceeded: closing the session"
                );
                // RFC 4486 §4: data is AFI (2), SAFI (1), and the limit (4).
                let mut data = vec![0, 1, 1];
                data.extend_from_slice(&max.to_be_bytes());
                let out = self.session.process(
                    Instant::now(),
                    Input::Cease {
                        subcode: notif::CEASE_MAX_PREFIXES,
                        data,
                    },
                );
                self.apply(out);
            }
        }
    }

    fn update_counts(&mut self) {
        self.metrics
            .prefixes_advertised
            .get_or_create(&self.label)
            .set(self.rib_out.len() as i64);
        let received = self.rib_in.len() + self.gr.stale.len();
        self.metrics
            .prefixes_received
            .get_or_create(&self.label)
            .set(received as i64);
        let mut s = self.status.lock().expect("status lock");
        s.prefixes_advertised = self.rib_out.len();
        s.prefixes_received = received;
        s.prefixes_stale = self.gr.stale.len();
    }

    fn count_in(&mut self, msg: &Message) {
        self.metrics
            .messages_in
            .get_or_create(&MessageLabel {
                neighbor: self.label.neighbor.clone(),
                kind: kind(msg).into(),
            })
            .inc();
        self.status.lock().expect("status lock").messages_in += 1;
    }

    fn count_out(&mut self, kind: &str, n: u64) {
        self.metrics
            .messages_out
            .get_or_create(&MessageLabel {
                neighbor: self.label.neighbor.clone(),
                kind: kind.into(),
            })
            .inc_by(n);
        self.status.lock().expect("status lock").messages_out += n;
    }

    fn set_state_metric(&self, s: State) {
        self.metrics.set_session_state(&self.label, s);
    }

    fn set_reason(&self, r: String) {
        self.status.lock().expect("status lock").last_reason = r;
    }
}

fn kind(m: &Message) -> &'static str {
    match m {
        Message::Open(_) => "open",
        Message::Update(_) => "update",
        Message::Notification(_) => "notification",
        Message::Keepalive => "keepalive",
        Message::RouteRefresh(_) => "route-refresh",
    }
}

/// The next BFD status, or `None` once the session is gone (the driver stopped).
async fn bfd_change(rx: &mut Option<watch::Receiver<bfd::Status>>) -> Option<bfd::Status> {
    match rx {
        Some(r) => match r.changed().await {
            Ok(()) => Some(*r.borrow_and_update()),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

/// A short text for a NOTIFICATION code/subcode (RFC 4271 §4.5, RFC 4486, RFC 6608).
pub fn describe(code: u8, subcode: u8) -> &'static str {
    match (code, subcode) {
        (1, _) => "message header error",
        (2, 2) => "open: bad peer as",
        (2, 3) => "open: bad bgp identifier",
        (2, 6) => "open: unacceptable hold time",
        (2, 7) => "open: unsupported capability",
        (2, _) => "open message error",
        (3, _) => "update message error",
        (4, _) => "hold timer expired",
        (5, _) => "finite state machine error",
        (6, 1) => "cease: maximum number of prefixes reached",
        (6, 2) => "cease: administrative shutdown",
        (6, 3) => "cease: peer de-configured",
        (6, 4) => "cease: administrative reset",
        (6, 5) => "cease: connection rejected",
        (6, 6) => "cease: other configuration change",
        (6, 7) => "cease: connection collision resolution",
        (6, 8) => "cease: out of resources",
        (6, 9) => "cease: hard reset",
        (6, 10) => "cease: bfd down",
        (6, _) => "cease",
        (7, _) => "route-refresh message error",
        _ => "unknown error code",
    }
}

fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Reads whole messages off the socket; ends on EOF, error or a framing error.
async fn reader(id: ConnId, mut rd: tokio::net::tcp::OwnedReadHalf, tx: mpsc::Sender<ConnEvent>) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Hand over every complete message in the buffer.
        let mut start = 0;
        loop {
            match wire::frame_len(&buf[start..]) {
                Ok(Some(len)) => {
                    let frame = buf[start..start + len].to_vec();
                    start += len;
                    if tx.send(ConnEvent::Frame(id, frame)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(ConnEvent::FramingError(id, e)).await;
                    return;
                }
            }
        }
        buf.drain(..start);
        match rd.read(&mut chunk).await {
            Ok(0) => {
                let _ = tx
                    .send(ConnEvent::Closed(id, "peer closed the connection".into()))
                    .await;
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                let _ = tx
                    .send(ConnEvent::Closed(id, format!("read error: {e}")))
                    .await;
                return;
            }
        }
    }
}

/// Writes queued messages in order; on `Close` flushes and shuts the socket down.
async fn writer(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<WriterCmd>,
    out: Arc<Outgoing>,
) {
    let mut batch: Vec<u8> = Vec::new();
    while let Some(cmd) = rx.recv().await {
        let mut close = false;
        match cmd {
            WriterCmd::Bytes(b) => batch.extend_from_slice(&b),
            WriterCmd::Close => close = true,
        }
        // Gather whatever else is queued into one write.
        while !close && batch.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(WriterCmd::Bytes(b)) => batch.extend_from_slice(&b),
                Ok(WriterCmd::Close) => close = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            if let Err(e) = wr.write_all(&batch).await {
                debug!("write failed: {e}");
                return;
            }
            out.queued.fetch_sub(batch.len(), Ordering::Relaxed);
            *out.progress.lock().expect("progress lock") = Instant::now();
            batch.clear();
        }
        if close {
            let _ = wr.shutdown().await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rib::RouteTable;

    /// A neighbor task that panics is counted, says so in its status, and a fresh task takes
    /// the neighbor over: commands are answered again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_session_task_is_counted_and_started_again() {
        let cfg: NeighborConfig = crate::config::Config::from_toml(
            "router_id = \"10.0.0.1\"\nlocal_as = 65001\n[[neighbor]]\n\
             address = \"192.0.2.1\"\nremote_as = 65000\npassive = true\n",
            "t.toml",
        )
        .unwrap()
        .neighbors
        .remove(0);
        let metrics = Arc::new(Metrics::new());
        let table: SharedTable = Arc::new(Mutex::new(RouteTable::new()));
        let (_ready, routes_ready) = watch::channel(true);
        let global = Global {
            local_as: 65001,
            router_id: "10.0.0.1".parse().unwrap(),
            graceful_restart: None,
            routes_ready,
        };
        let h = spawn(cfg, global, table, metrics.clone(), None);
        let label = NeighborLabel {
            neighbor: "192.0.2.1".into(),
        };
        h.cmd.send(PeerCmd::Panic).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while metrics.session_task_panics.get_or_create(&label).get() == 0 {
            assert!(Instant::now() < deadline, "the panic was not counted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            h.status.lock().unwrap().last_reason.contains("panicked"),
            "the status says why"
        );
        // Answered only by a running task: the new one, after the restart.
        let (tx, rx) = oneshot::channel();
        h.cmd.send(PeerCmd::DumpRibOut(tx)).await.unwrap();
        let answer = tokio::time::timeout(RESTART_AFTER_PANIC * 5, rx).await;
        assert!(
            answer.is_ok_and(|r| r.is_ok()),
            "no restart after the panic"
        );
        assert_eq!(metrics.session_task_panics.get_or_create(&label).get(), 1);
        assert!(!h.task.is_finished());
        h.task.abort();
    }
}
