//! The cluster driver: the tokio task that runs one device's [`Placement`] over UDP.
//!
//! [`spawn`] (or [`spawn_on_own_thread`]) binds a UDP socket to this device's failover address
//! and starts one task owning that socket, the [`Placement`] state machine, a [`ReplayGuard`]
//! and the receiving end of a command channel. The [`DriverHandle`] it returns sends commands
//! (status, `lbctl failover`, standby/release and the link fail-safe) and reads the counters;
//! aborting the task's `JoinHandle` stops the driver (like a crash: nothing is released). In
//! lbd the task runs on a thread of its own (`lbd-heartbeat`, [`spawn_on_own_thread`];
//! real-time with `heartbeat_realtime_priority`), so no other control-plane work can delay a
//! heartbeat past a peer's `dead_after`; the thread ends with the task. Mirroring tells it,
//! through [`DriverHandle::set_unsynced`], which traffic groups this device is not ready to
//! take back; route health, through [`DriverHandle::set_unavailable`], which virtual
//! addresses are not available here. [`DriverHandle::paths`] watches where every traffic
//! group's path leads ([`Placement::paths`]), which the routes every device announces follow;
//! [`DriverHandle::roles`] each traffic group's holder and next-active device
//! ([`Placement::roles`]), which mirroring's channels follow.
//!
//! # Order of operations
//!
//! The task feeds [`Input::Start`] once, then loops on `tokio::select!` over three sources:
//!
//! 1. **A datagram**: it and every datagram queued behind it (non-blocking, at most
//!    [`DRAIN_MAX`]) are checked — [`decode`] (tag first), then [`ReplayGuard::check`] — and
//!    the accepted ones fed together ([`Input::Heartbeats`]; one alone as
//!    [`Input::Heartbeat`]). After a pause (SIGSTOP, a starved thread) the socket holds every
//!    peer's backlog: a decision taken on one datagram alone would see the other peers' last
//!    heartbeats as stale, and the peers as dead. A rejected datagram (bad tag, malformed,
//!    replayed, unknown device) is counted, logged at debug, and warned about at most once
//!    per [`WARN_EVERY`] per reason; it never stops the task and never reaches the placement.
//! 2. **The timer** ([`Placement::poll_timeout`]): first every datagram already queued on the
//!    socket is read and fed as above, then [`Input::Timer`]: the placement acts on the
//!    newest state, not on what it knew before.
//! 3. **A command**: the socket is drained the same way, then the command is fed
//!    ([`Input::Failover`], [`Input::Eligible`], [`Input::Unsynced`], [`Input::Unavailable`])
//!    or answered (status).
//!
//! Before every [`Placement::process`] call the driver sets the placement's clock
//! ([`Placement::set_clock_ms`]) to the current instant and Unix time. Outputs are applied in
//! the order given: [`Output::SendHeartbeat`] is signed ([`encode`]) and sent to every address
//! of every peer (a failed send is counted and logged, never fatal);
//! [`Output::Activate`] / [`Output::Release`] call [`Actions`] and are logged at info with
//! their reason. Then [`Placement::roles`] and [`Placement::paths`] are published to their
//! watches when they changed.
//!
//! Liveness is the placement's business and is judged by when an accepted heartbeat was
//! *received* (the instant the driver feeds it), never by the sender's `sent_ms`.
//!
//! # What it must not do
//!
//! - Block: sends use `try_send_to` (a full socket buffer drops the datagram, counted), reads
//!   are non-blocking, and [`Actions`] run on this task so they must return quickly.
//! - Act on stale state after a stall: the queued backlog is always read before a timer or a
//!   command is fed, and the placement itself refuses to claim until it has heard fresh
//!   heartbeats (see `placement`).
//! - Decide placement or liveness itself, or trust anything unauthenticated.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use super::heartbeat::{
    check_fresh, decode, encode, GroupKey, HeartbeatError, ReplayGuard, MAX_DATAGRAM,
};
use super::placement::{
    GroupSpec, GroupStatus, Input, Output, PathOwner, PeerConfig, Placement, Role,
};
use super::ConfigMark;

/// The most datagrams read in one drain before a timer or a command is fed.
pub const DRAIN_MAX: usize = 1024;
/// A warning of one kind (a rejection reason, a send failure) is logged at most this often.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// What the driver needs to run one device of the group.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub spec: GroupSpec,
    pub key: Arc<GroupKey>,
    /// Heartbeats sent further than this from our clock are dropped
    /// ([`super::heartbeat::check_fresh`]).
    pub max_age: Duration,
    /// Where to listen for heartbeats (this device's failover address and port).
    pub listen: SocketAddr,
    /// Each peer device's heartbeat addresses (primary and optional secondary: send to all).
    pub peers: BTreeMap<String, Vec<SocketAddr>>,
    /// `SCHED_RR` priority (1-99) of the driver's own thread ([`spawn_on_own_thread`]); 0
    /// for none.
    pub realtime_priority: u8,
}

/// What the driver asks of the rest of lbd; called from the driver task, in order.
///
/// Both must return quickly (they run on the driver's task, between heartbeats).
pub trait Actions: Send + Sync + 'static {
    fn activate(&self, traffic_group: &str, reason: &str);
    fn release(&self, traffic_group: &str, reason: &str);
}

/// Why the driver could not start or do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    #[error("cannot bind heartbeat socket {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("unknown traffic group {0}")]
    UnknownTrafficGroup(String),
    #[error("unknown device {0}")]
    UnknownDevice(String),
    #[error("cluster driver stopped")]
    Stopped,
    #[error("cannot start the cluster driver: {0}")]
    Runtime(String),
}

/// The driver's counters, for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverCounters {
    /// Heartbeat datagrams sent (one per peer address per heartbeat).
    pub heartbeats_sent: u64,
    /// Heartbeats accepted (authentic, well formed, newer than the last from their device).
    pub heartbeats_received: u64,
    /// Datagrams whose authentication tag did not verify under the group key.
    pub rejected_bad_tag: u64,
    /// Authentic heartbeats not newer than the last accepted from their device.
    pub rejected_replayed: u64,
    /// Authentic heartbeats sent further than `heartbeat_max_age` from this device's clock.
    #[serde(default)]
    pub rejected_stale: u64,
    /// Authentic heartbeats from a device outside the group (or claiming to be this one).
    pub rejected_unknown_device: u64,
    /// Datagrams too short, too long, or authentic but badly formed.
    pub rejected_malformed: u64,
    /// Heartbeats that could not be encoded or sent to some address.
    pub send_errors: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    bad_tag: AtomicU64,
    replayed: AtomicU64,
    stale: AtomicU64,
    unknown_device: AtomicU64,
    malformed: AtomicU64,
    send_errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> DriverCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DriverCounters {
            heartbeats_sent: get(&self.sent),
            heartbeats_received: get(&self.received),
            rejected_bad_tag: get(&self.bad_tag),
            rejected_replayed: get(&self.replayed),
            rejected_stale: get(&self.stale),
            rejected_unknown_device: get(&self.unknown_device),
            rejected_malformed: get(&self.malformed),
            send_errors: get(&self.send_errors),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

enum Command {
    Status(oneshot::Sender<GroupStatus>),
    Failover {
        traffic_group: String,
        to: Option<String>,
        reply: oneshot::Sender<Result<(), DriverError>>,
    },
    Eligible(bool, oneshot::Sender<()>),
    Unsynced(BTreeSet<String>, oneshot::Sender<()>),
    Unavailable(BTreeSet<IpAddr>, oneshot::Sender<()>),
    Config(Option<ConfigMark>, oneshot::Sender<()>),
    Reconfigure(
        GroupSpec,
        BTreeMap<String, Vec<SocketAddr>>,
        oneshot::Sender<()>,
    ),
}

/// Where every traffic group's path leads ([`Placement::paths`]); None while unknown.
pub type Paths = Option<Vec<PathOwner>>;

/// Commands in, status and counters out. Cheap to clone.
#[derive(Clone)]
pub struct DriverHandle {
    me: String,
    tx: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    /// The status as the task last saw it, written when the task stops.
    last: Arc<Mutex<Option<GroupStatus>>>,
    /// The unsynced set last handed to the task (held while sending, so that sets from
    /// several clones reach the task in the order they were recorded).
    unsynced: Arc<tokio::sync::Mutex<BTreeSet<String>>>,
    /// The same for the unavailable set.
    unavailable: Arc<tokio::sync::Mutex<BTreeSet<IpAddr>>>,
    /// The same for the configuration mark.
    config: Arc<tokio::sync::Mutex<Option<ConfigMark>>>,
    paths: watch::Receiver<Paths>,
    roles: watch::Receiver<Vec<Role>>,
    peer_configs: watch::Receiver<Vec<PeerConfig>>,
}

impl std::fmt::Debug for DriverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverHandle")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl DriverHandle {
    /// Whether the driver task still runs (its command channel is open).
    pub fn running(&self) -> bool {
        !self.tx.is_closed()
    }

    /// The group as this device sees it now. Once the driver has stopped: its last view, with
    /// phase "stopped".
    pub async fn status(&self) -> GroupStatus {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Status(reply)).await.is_ok() {
            if let Ok(status) = rx.await {
                return status;
            }
        }
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        last.unwrap_or_else(|| GroupStatus {
            me: self.me.clone(),
            epoch: 0,
            phase: "stopped".into(),
            devices: Vec::new(),
            traffic_groups: Vec::new(),
            orders: Vec::new(),
        })
    }

    /// `lbctl failover TG [--to DEV]`: issue a manual placement order (`to: None` moves the
    /// traffic group to its next-active).
    pub async fn failover(&self, traffic_group: &str, to: Option<&str>) -> Result<(), DriverError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Failover {
            traffic_group: traffic_group.to_string(),
            to: to.map(str::to_string),
            reply,
        };
        self.tx.send(cmd).await.map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)?
    }

    /// This device may hold traffic groups (false: `lbctl standby`/`release`, or a link down —
    /// the fail-safe releases everything at once). Does nothing once the driver has stopped.
    pub async fn set_eligible(&self, eligible: bool) {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Command::Eligible(eligible, reply))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// The traffic groups whose mirror is not in sync on this device: auto-failback does not
    /// bring them back here until they leave the set, or the maximum wait is over (see
    /// `placement`, rule 2). The whole set each time; it goes to the placement only when it
    /// differs from the last one sent, so calling this often is cheap. Starts as every traffic
    /// group mirroring covers (nothing is known to be in sync). Does nothing once the driver
    /// has stopped.
    pub async fn set_unsynced(&self, set: BTreeSet<String>) {
        self.send_if_changed(&self.unsynced, set, Command::Unsynced)
            .await;
    }

    /// The virtual addresses route health says not to advertise here: carried in heartbeats,
    /// so that every device withdraws the paths of the traffic groups held here for them. The
    /// whole set each time; sent to the placement only when it changed. Does nothing once the
    /// driver has stopped.
    pub async fn set_unavailable(&self, set: BTreeSet<IpAddr>) {
        self.send_if_changed(&self.unavailable, set, Command::Unavailable)
            .await;
    }

    /// This device's group configuration (config sync): carried in heartbeats, so that every
    /// device sees within one heartbeat interval whether the group holds the same. Sent to the
    /// placement only when it changed.
    pub async fn set_config(&self, mark: Option<ConfigMark>) {
        self.send_if_changed(&self.config, mark, Command::Config)
            .await;
    }

    /// The device group changed live (config sync applied a new device-group file): the
    /// placement takes the new devices and traffic groups ([`Input::Reconfigure`]) and
    /// heartbeats go to the new peers from now on. The group key, the heartbeat port and the
    /// listening address stay what they were (the caller refuses changes to them). Does
    /// nothing once the driver has stopped.
    pub async fn reconfigure(&self, spec: GroupSpec, peers: BTreeMap<String, Vec<SocketAddr>>) {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Command::Reconfigure(spec, peers, reply))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Sends `value` as `command` unless it equals `last` (held while sending, so that values
    /// from several clones reach the task in the order they were recorded), then waits for the
    /// task to have taken it.
    async fn send_if_changed<T: Clone + PartialEq>(
        &self,
        last: &tokio::sync::Mutex<T>,
        value: T,
        command: impl FnOnce(T, oneshot::Sender<()>) -> Command,
    ) {
        let mut last = last.lock().await;
        if *last == value {
            return;
        }
        let (reply, rx) = oneshot::channel();
        if self.tx.send(command(value.clone(), reply)).await.is_ok() {
            *last = value;
            let _ = rx.await;
        }
    }

    /// Watches where every traffic group's path leads (changes when placement, liveness or a
    /// device's route health does). Keeps its last value once the driver has stopped.
    pub fn paths(&self) -> watch::Receiver<Paths> {
        self.paths.clone()
    }

    /// Watches each traffic group's holder and next-active device ([`Placement::roles`]).
    pub fn roles(&self) -> watch::Receiver<Vec<Role>> {
        self.roles.clone()
    }

    /// Watches each peer's group configuration mark and liveness
    /// ([`Placement::peer_configs`]), for config sync.
    pub fn peer_configs(&self) -> watch::Receiver<Vec<PeerConfig>> {
        self.peer_configs.clone()
    }

    /// The counters now (they keep their last values once the driver has stopped).
    pub fn counters(&self) -> DriverCounters {
        self.counters.snapshot()
    }
}

/// The epoch of a new driver: the Unix ms now, and strictly above any earlier one handed out
/// in this process (two drivers started within one ms, or a clock step back).
fn next_epoch() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = crate::sys::now_ms();
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let epoch = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, epoch, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return epoch,
            Err(p) => prev = p,
        }
    }
}

/// Starts a thread of its own (`lbd-heartbeat`, a single-threaded runtime) that ends with the
/// driver task.
///
/// Heartbeats are the one timing-critical job of the control plane: a peer declares this
/// device dead when it hears nothing for `dead_after`. On the shared control-plane runtime,
/// a burst of other work (a mirroring resync under TLS, a large `lbctl show`, monitors) could
/// delay them past that; on this thread only the driver runs.
fn heartbeat_runtime(
    done: oneshot::Receiver<()>,
    realtime_priority: u8,
) -> Result<tokio::runtime::Handle, DriverError> {
    crate::sys::runtime_thread("lbd-heartbeat".into(), move |rt| {
        if realtime_priority > 0 {
            match set_realtime(realtime_priority) {
                Ok(()) => info!(
                    priority = realtime_priority,
                    "heartbeat thread runs SCHED_RR"
                ),
                // Not fatal (keepalived carries on too): the thread stays an ordinary one.
                Err(e) => warn!(
                    priority = realtime_priority,
                    error = %e,
                    "heartbeat thread: cannot set real-time priority (needs CAP_SYS_NICE)"
                ),
            }
        }
        // `done` resolves when the driver task ends or is dropped (its sender is in it).
        rt.block_on(async move {
            let _ = done.await;
        })
    })
    .map_err(|e| DriverError::Runtime(e.to_string()))
}

/// Makes the calling thread `SCHED_RR` with `priority` (sched_setscheduler(2): pid 0 is the
/// calling thread).
fn set_realtime(priority: u8) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: a valid sched_param for the calling thread; no memory is retained.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Binds `cfg.listen` and starts the driver task on the current runtime (see the module
/// documentation). lbd itself uses [`spawn_on_own_thread`].
pub async fn spawn(
    cfg: DriverConfig,
    actions: Arc<dyn Actions>,
) -> Result<(DriverHandle, JoinHandle<()>), DriverError> {
    start(cfg, actions, tokio::runtime::Handle::current(), None).await
}

/// [`spawn`], but the driver runs on a thread of its own (`lbd-heartbeat`) that
/// ends with the task. The returned handle can be awaited or aborted from any runtime.
pub async fn spawn_on_own_thread(
    cfg: DriverConfig,
    actions: Arc<dyn Actions>,
) -> Result<(DriverHandle, JoinHandle<()>), DriverError> {
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let rt = heartbeat_runtime(done_rx, cfg.realtime_priority)?;
    start(cfg, actions, rt, Some(done_tx)).await
}

/// Binds the socket and spawns the driver on `rt`; `done` is dropped when the task ends.
async fn start(
    cfg: DriverConfig,
    actions: Arc<dyn Actions>,
    rt: tokio::runtime::Handle,
    done: Option<oneshot::Sender<()>>,
) -> Result<(DriverHandle, JoinHandle<()>), DriverError> {
    let listen = cfg.listen;
    // The socket is made on the driver's runtime: it is registered with that reactor.
    let sock = rt
        .spawn(async move { UdpSocket::bind(listen).await })
        .await
        .map_err(|e| DriverError::Runtime(e.to_string()))?
        .map_err(|e| DriverError::Bind {
            addr: cfg.listen,
            reason: e.to_string(),
        })?;
    let (tx, rx) = mpsc::channel(32);
    let counters = Arc::new(Counters::default());
    let last = Arc::new(Mutex::new(None));
    let me = cfg.spec.me.clone();
    for name in cfg.peers.keys() {
        if !cfg.spec.devices.contains(name) || *name == me {
            warn!(device = %me, peer = %name, "heartbeat peer is not another device of the group");
        }
    }
    let epoch = next_epoch();
    let guard = ReplayGuard::new(&cfg.spec.devices, &me);
    let placement = Placement::new(cfg.spec.clone(), epoch);
    let unsynced = Arc::new(tokio::sync::Mutex::new(placement.unsynced().clone()));
    let unavailable = Arc::new(tokio::sync::Mutex::new(BTreeSet::new()));
    let config = Arc::new(tokio::sync::Mutex::new(None));
    let (paths_tx, paths_rx) = watch::channel(None);
    let (roles_tx, roles_rx) = watch::channel(Vec::new());
    let (configs_tx, configs_rx) = watch::channel(Vec::new());
    let driver = Driver {
        paths: paths_tx,
        roles: roles_tx,
        peer_configs: configs_tx,
        placement,
        spec: cfg.spec,
        key: cfg.key,
        max_age: cfg.max_age,
        peers: cfg.peers,
        sock,
        guard,
        actions,
        counters: counters.clone(),
        last: last.clone(),
        warned: HashMap::new(),
        buf: vec![0; MAX_DATAGRAM + 1],
    };
    info!(device = %me, listen = %cfg.listen, epoch, "cluster driver starting");
    let task = rt.spawn(async move {
        let _done = done;
        driver.run(rx).await;
    });
    Ok((
        DriverHandle {
            me,
            tx,
            counters,
            last,
            unsynced,
            unavailable,
            config,
            paths: paths_rx,
            roles: roles_rx,
            peer_configs: configs_rx,
        },
        task,
    ))
}

/// One datagram from `sock` if one is queued (`WouldBlock` if none), read with the system call
/// whatever tokio believes about the socket's readiness.
fn recv_now(sock: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    // SAFETY: `buf` is initialized memory; viewing it as possibly-uninitialized bytes is
    // sound, and recv_from only writes into it.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
    // tokio made the socket non-blocking: an empty queue is WouldBlock.
    let (n, from) = socket2::SockRef::from(sock).recv_from(uninit)?;
    let from = from
        .as_socket()
        .ok_or_else(|| std::io::Error::other("heartbeat from a non-IP address"))?;
    Ok((n, from))
}

/// The task's state. Dropping it (task ended or aborted) leaves its last status behind.
struct Driver {
    spec: GroupSpec,
    placement: Placement,
    key: Arc<GroupKey>,
    peers: BTreeMap<String, Vec<SocketAddr>>,
    sock: UdpSocket,
    guard: ReplayGuard,
    max_age: Duration,
    actions: Arc<dyn Actions>,
    counters: Arc<Counters>,
    last: Arc<Mutex<Option<GroupStatus>>>,
    /// Per warning kind: when last warned, and how many were suppressed since.
    warned: HashMap<&'static str, (Instant, u64)>,
    /// One byte more than the largest datagram, so that an oversized one is seen as such.
    buf: Vec<u8>,
    paths: watch::Sender<Paths>,
    roles: watch::Sender<Vec<Role>>,
    peer_configs: watch::Sender<Vec<PeerConfig>>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let mut status = self.placement.status(Instant::now());
        status.phase = "stopped".into();
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
    }
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        self.feed(Input::Start);
        let mut commands_open = true;
        loop {
            let deadline = self.placement.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {
                    self.drain();
                    self.feed(Input::Timer);
                }
                r = self.sock.recv_from(&mut self.buf) => match r {
                    Ok((n, from)) => self.received(n, from),
                    Err(e) => {
                        debug!(device = %self.spec.me, "heartbeat receive: {e}");
                        self.warn_limited("receive", format_args!("heartbeat receive: {e}"));
                    }
                },
                cmd = rx.recv(), if commands_open => match cmd {
                    Some(cmd) => {
                        self.drain();
                        self.command(cmd);
                    }
                    // Every handle is gone: keep running until aborted.
                    None => commands_open = false,
                },
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Status(reply) => {
                let _ = reply.send(self.placement.status(Instant::now()));
            }
            Command::Failover {
                traffic_group,
                to,
                reply,
            } => {
                let res = self.check_failover(&traffic_group, to.as_deref());
                if res.is_ok() {
                    info!(device = %self.spec.me, traffic_group = %traffic_group,
                        to = to.as_deref().unwrap_or("(next-active)"), "manual failover ordered");
                    self.feed(Input::Failover { traffic_group, to });
                }
                let _ = reply.send(res);
            }
            Command::Eligible(eligible, reply) => {
                info!(device = %self.spec.me, eligible, "eligibility set");
                self.feed(Input::Eligible(eligible));
                let _ = reply.send(());
            }
            Command::Unsynced(set, reply) => {
                info!(device = %self.spec.me, unsynced = ?set, "mirror sync state set");
                self.feed(Input::Unsynced(set));
                let _ = reply.send(());
            }
            Command::Config(mark, reply) => {
                self.feed(Input::Config(mark));
                let _ = reply.send(());
            }
            Command::Unavailable(set, reply) => {
                info!(device = %self.spec.me, unavailable = ?set, "route health set");
                self.feed(Input::Unavailable(set));
                let _ = reply.send(());
            }
            Command::Reconfigure(spec, peers, reply) => {
                info!(device = %self.spec.me, devices = ?spec.devices,
                    traffic_groups = ?spec.traffic_groups.iter().map(|t| &t.name).collect::<Vec<_>>(),
                    "device group reconfigured");
                self.guard.set_devices(&spec.devices);
                self.peers = peers;
                self.spec = spec.clone();
                self.feed(Input::Reconfigure(spec));
                let _ = reply.send(());
            }
        }
    }

    fn check_failover(&self, tg: &str, to: Option<&str>) -> Result<(), DriverError> {
        if !self.spec.traffic_groups.iter().any(|t| t.name == tg) {
            return Err(DriverError::UnknownTrafficGroup(tg.to_string()));
        }
        match to {
            Some(to) if !self.spec.devices.iter().any(|d| d == to) && to != self.spec.me => {
                Err(DriverError::UnknownDevice(to.to_string()))
            }
            _ => Ok(()),
        }
    }

    /// Reads every datagram already queued, without waiting, and feeds the accepted ones
    /// as one batch.
    fn drain(&mut self) {
        let mut batch = Vec::new();
        self.drain_into(&mut batch);
        self.feed_batch(batch);
    }

    /// Reads every datagram already queued (at most [`DRAIN_MAX`]) into `batch`, checked.
    ///
    /// Reads the socket itself (non-blocking), not through tokio's readiness: right after a
    /// pause the runtime may run the expired timer before it has polled the socket's
    /// readiness, and `try_recv_from` would then say "nothing queued" over a full backlog.
    fn drain_into(&mut self, batch: &mut Vec<super::Heartbeat>) {
        for _ in 0..DRAIN_MAX {
            match recv_now(&self.sock, &mut self.buf) {
                Ok((n, from)) => self.datagram(n, from, batch),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!(device = %self.spec.me, "heartbeat receive: {e}");
                    return;
                }
            }
        }
    }

    /// One received datagram, then whatever else is queued, fed together: after a pause the
    /// socket holds every peer's backlog, and a decision taken on the first datagram alone
    /// would see the other peers' last heartbeats as stale (and them as dead).
    fn received(&mut self, n: usize, from: SocketAddr) {
        let mut batch = Vec::new();
        self.datagram(n, from, &mut batch);
        self.drain_into(&mut batch);
        self.feed_batch(batch);
    }

    fn feed_batch(&mut self, mut batch: Vec<super::Heartbeat>) {
        match batch.len() {
            0 => {}
            1 => self.feed(Input::Heartbeat(batch.remove(0))),
            _ => self.feed(Input::Heartbeats(batch)),
        }
    }

    /// One datagram of `n` bytes in `self.buf`: checked, and added to `batch` if accepted.
    fn datagram(&mut self, n: usize, from: SocketAddr, batch: &mut Vec<super::Heartbeat>) {
        let hb = match decode(&self.buf[..n], &self.key) {
            Ok(hb) => hb,
            Err(e) => return self.rejected(&e, from),
        };
        let max_age = u64::try_from(self.max_age.as_millis()).unwrap_or(u64::MAX);
        if let Err(e) = check_fresh(&hb, crate::sys::now_ms(), max_age) {
            return self.rejected(&e, from);
        }
        if let Err(e) = self.guard.check(&hb) {
            return self.rejected(&e, from);
        }
        bump(&self.counters.received);
        batch.push(hb);
    }

    fn rejected(&mut self, e: &HeartbeatError, from: SocketAddr) {
        let kind = match e {
            HeartbeatError::BadTag => {
                bump(&self.counters.bad_tag);
                "bad tag"
            }
            HeartbeatError::Replayed { .. } => {
                bump(&self.counters.replayed);
                "replayed"
            }
            HeartbeatError::Stale { .. } => {
                bump(&self.counters.stale);
                "stale"
            }
            HeartbeatError::UnknownDevice(_) | HeartbeatError::FromMyself => {
                bump(&self.counters.unknown_device);
                "unknown device"
            }
            _ => {
                bump(&self.counters.malformed);
                "malformed"
            }
        };
        debug!(device = %self.spec.me, %from, "heartbeat rejected: {e}");
        self.warn_limited(kind, format_args!("heartbeat from {from} rejected: {e}"));
    }

    /// Warns at most once per [`WARN_EVERY`] per `kind`, saying how many were suppressed.
    fn warn_limited(&mut self, kind: &'static str, msg: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        match self.warned.get_mut(kind) {
            Some((at, suppressed)) if now < *at + WARN_EVERY => *suppressed += 1,
            entry => {
                let suppressed = entry.map_or(0, |(_, s)| *s);
                warn!(device = %self.spec.me, suppressed, "{msg}");
                self.warned.insert(kind, (now, 0));
            }
        }
    }

    /// Sets the clock, processes `input`, applies the outputs in order.
    fn feed(&mut self, input: Input) {
        let now = Instant::now();
        self.placement.set_clock_ms(now, crate::sys::now_ms());
        for out in self.placement.process(now, input) {
            match out {
                Output::SendHeartbeat(hb) => self.send(&hb),
                Output::Activate {
                    traffic_group,
                    reason,
                } => {
                    info!(device = %self.spec.me, traffic_group = %traffic_group,
                        "activate {traffic_group}: {reason}");
                    self.actions.activate(&traffic_group, &reason);
                }
                Output::Release {
                    traffic_group,
                    reason,
                } => {
                    info!(device = %self.spec.me, traffic_group = %traffic_group,
                        "release {traffic_group}: {reason}");
                    self.actions.release(&traffic_group, &reason);
                }
            }
        }
        let roles = self.placement.roles(now);
        self.roles.send_if_modified(|r| {
            let changed = *r != roles;
            *r = roles;
            changed
        });
        let configs = self.placement.peer_configs(now);
        self.peer_configs.send_if_modified(|c| {
            let changed = *c != configs;
            *c = configs;
            changed
        });
        let paths = self.placement.paths(now);
        self.paths.send_if_modified(|p| {
            if *p == paths {
                false
            } else {
                debug!(device = %self.spec.me, ?paths, "paths");
                *p = paths;
                true
            }
        });
    }

    fn send(&mut self, hb: &super::Heartbeat) {
        let datagram = match encode(hb, &self.key) {
            Ok(d) => d,
            Err(e) => {
                bump(&self.counters.send_errors);
                error!(device = %self.spec.me, "cannot encode heartbeat: {e}");
                return;
            }
        };
        let addrs: Vec<SocketAddr> = self.peers.values().flatten().copied().collect();
        for addr in addrs {
            match self.sock.try_send_to(&datagram, addr) {
                Ok(_) => bump(&self.counters.sent),
                Err(e) => {
                    bump(&self.counters.send_errors);
                    debug!(device = %self.spec.me, %addr, "heartbeat send: {e}");
                    self.warn_limited("send", format_args!("heartbeat to {addr}: {e}"));
                }
            }
        }
    }
}
