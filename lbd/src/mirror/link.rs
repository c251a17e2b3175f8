//! The I/O drivers of the mirroring channels (docs/architecture.md, "Mirroring"; docs/architecture.md, "Conventions"): the tasks that own a
//! channel's socket and drive the sans-IO state machines of [`super::channel`].
//!
//! - [`spawn_sender`]: one task per traffic group on its active device. It connects to the
//!   peer's mirror address (primary, then secondary; bounded exponential backoff between
//!   rounds), does mutual TLS ([`trust::client_config`], the peer's
//!   [`trust::device_server_name`], then [`trust::peer_device`]) and runs a
//!   [`channel::Sender`]. The data path offers updates through a [`SenderHandle`], which locks
//!   the channel only for the O(1) `offer` and never waits on the network: with the peer down
//!   or slow, the channel's own bounded queue overflows and it goes Lagging.
//! - [`spawn_receiver`]: the next-active device's listener. It accepts connections, admits only
//!   devices of the group ([`trust::server_config`], [`trust::peer_device`]; refusals are logged
//!   with the peer address and the reason, and nothing of theirs reaches the store), and runs a
//!   [`channel::Receiver`] per expected traffic group. A new connection for a group replaces
//!   the old one.
//!
//! Everything is bounded: frames by [`proto::MAX_FRAME`] (the decoder rejects larger ones from
//! the header), handshakes and writes by `io_timeout`, a silent peer by the channel's dead
//! timer; per-connection tasks are aborted when the task that spawned them ends or is aborted.
//!
//! This module must not block the data path (no lock is held across an await or a network
//! operation, except the snapshot copy, which runs with the channel unlocked), must not apply
//! anything from a peer that the trust layer refused, and must not touch the daemon's
//! configuration (`service` wires it into lbd).

use crate::sys::now_ms;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::channel::{self, AckPolicy, ChannelError, SenderStatus, Store, Timers};
use super::proto::{self, Message, ProtoError, Record, RecordKey};
use super::trust::{self, TrustError};

/// Errors of a mirroring link. Each one ends a connection (the sender reconnects); only
/// configuration errors (`Trust`) are returned by the spawn functions.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Proto(#[from] ProtoError),
    #[error("channel: {0}")]
    Channel(#[from] ChannelError),
    #[error("trust: {0}")]
    Trust(#[from] TrustError),
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("connection closed by the peer")]
    Closed,
    #[error("no channel for traffic group {0} here")]
    UnknownTrafficGroup(String),
    #[error("first message was {0}, not hello")]
    NoHello(&'static str),
    #[error("replaced by a newer connection")]
    Replaced,
}

/// Where the channel's state comes from when a full resync is due.
pub trait SnapshotSource: Send + Sync {
    /// The current mirrored state of `traffic_group`. Must be a quick copy: it runs on the
    /// sender's task (with the channel unlocked; offers made meanwhile are replayed after it).
    fn snapshot(&self, traffic_group: &str) -> Vec<Record>;
}

/// A sender link's configuration.
#[derive(Debug, Clone)]
pub struct SenderLink {
    /// This device.
    pub device: String,
    /// The device group (the CA's name).
    pub group: String,
    /// The peer device (the group's next-active device), as its certificate names it.
    pub peer_device: String,
    pub traffic_group: String,
    /// The peer's mirror addresses: the primary, then the secondary.
    pub primary: SocketAddr,
    pub secondary: Option<SocketAddr>,
    /// This device's mirror addresses, the primary and the secondary: a connection to the
    /// peer's primary (secondary) leaves from this device's primary (secondary), because the
    /// receiver accepts a device only from its own mirror addresses. None: the kernel picks.
    pub local_primary: Option<std::net::IpAddr>,
    pub local_secondary: Option<std::net::IpAddr>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The sender's epoch (e.g. the start time of lbd, Unix ms).
    pub epoch: u64,
    /// Unacknowledged updates retained before the channel goes Lagging.
    pub capacity: usize,
    pub timers: Timers,
    /// Connect, handshake and write timeout.
    pub io_timeout: Duration,
    /// Backoff between connection rounds: from `backoff_min`, doubling, up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// A receiver link's configuration.
#[derive(Debug, Clone)]
pub struct ReceiverLink {
    /// This device.
    pub device: String,
    /// The device group (the CA's name).
    pub group: String,
    /// The devices of the group admitted as senders (shared: a live membership change
    /// reaches a running receiver).
    pub admitted: trust::Admitted,
    /// The traffic groups this device is next-active for: one channel each.
    pub traffic_groups: Vec<String>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub timers: Timers,
    pub acks: AckPolicy,
    /// Handshake, first-message and write timeout.
    pub io_timeout: Duration,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bytes gathered from `poll_send` before a write.
const WRITE_BATCH: usize = 64 * 1024;
/// Socket read size.
const READ_CHUNK: usize = 16 * 1024;
/// Connections a receiver serves at once (handshaking or running); more are closed at once.
/// A receiver runs one channel (a replaced one ends within the channel's dead timer) and at
/// most [`MAX_HANDSHAKES`] handshakes.
pub const MAX_CONNECTIONS: usize = 16;

/// Reads frames from a stream; the buffer never holds more than one frame's worth plus a
/// chunk, because `proto::decode` rejects a declared length above `MAX_FRAME` from the header.
struct FrameReader<R> {
    rd: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    fn new(rd: R) -> Self {
        FrameReader {
            rd,
            buf: Vec::with_capacity(READ_CHUNK),
        }
    }

    async fn next(&mut self) -> Result<Message, LinkError> {
        loop {
            if let Some((msg, n)) = proto::decode(&self.buf)? {
                self.buf.drain(..n);
                return Ok(msg);
            }
            let mut chunk = [0u8; READ_CHUNK];
            let n = self.rd.read(&mut chunk).await?;
            if n == 0 {
                return Err(LinkError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

async fn write_timed<W: AsyncWrite + Unpin>(
    wr: &mut W,
    buf: &[u8],
    t: Duration,
) -> Result<(), LinkError> {
    tokio::time::timeout(t, async {
        wr.write_all(buf).await?;
        wr.flush().await
    })
    .await
    .map_err(|_| LinkError::Timeout("write"))??;
    Ok(())
}

/// Sleeps until `deadline` (Unix ms), or not at all when there is none soon.
async fn sleep_until_ms(deadline: Option<u64>) {
    let ms = deadline.map_or(1000, |d| d.saturating_sub(now_ms()));
    tokio::time::sleep(Duration::from_millis(ms.clamp(1, 1000))).await;
}

// ---------------------------------------------------------------------------------------------
// Sender

/// An update offered while a snapshot is being taken, replayed after it.
enum Pending {
    Record(Record),
    Delete(RecordKey),
}

struct SenderState {
    sender: channel::Sender,
    /// Offers made while a snapshot is taken (at most `capacity + 1`: more would overflow the
    /// channel when replayed anyway, which asks for a new snapshot).
    capture: Option<Vec<Pending>>,
}

struct SenderShared {
    st: Mutex<SenderState>,
    /// Wakes the sender's writer: something to send.
    wake: Notify,
    capacity: usize,
}

impl SenderShared {
    fn capture(&self, st: &mut SenderState, p: impl FnOnce() -> Pending) {
        if let Some(c) = st.capture.as_mut() {
            if c.len() <= self.capacity {
                c.push(p());
            }
        }
    }
}

/// The data path's side of a sender link. Cheap to clone; never waits on the network.
#[derive(Clone)]
pub struct SenderHandle {
    shared: Arc<SenderShared>,
}

impl SenderHandle {
    /// Offers a record; returns its update id. O(1): with the queue full the channel goes
    /// Lagging and a resync will carry the record.
    pub fn offer(&self, record: Record) -> Result<u64, LinkError> {
        let now = now_ms();
        let mut st = lock(&self.shared.st);
        let copy = st.capture.is_some().then(|| record.clone());
        let id = st.sender.offer(now, record)?;
        if let Some(r) = copy {
            self.shared.capture(&mut st, || Pending::Record(r));
        }
        drop(st);
        self.shared.wake.notify_one();
        Ok(id)
    }

    /// Offers the deletion of the record under `key`; returns its update id.
    pub fn offer_delete(&self, key: RecordKey) -> u64 {
        let now = now_ms();
        let mut st = lock(&self.shared.st);
        let copy = st.capture.is_some().then(|| key.clone());
        let id = st.sender.offer_delete(now, key);
        if let Some(k) = copy {
            self.shared.capture(&mut st, || Pending::Delete(k));
        }
        drop(st);
        self.shared.wake.notify_one();
        id
    }

    /// State, last sent and acked ids, lag and queue lengths.
    pub fn status(&self) -> SenderStatus {
        lock(&self.shared.st).sender.status(now_ms())
    }
}

/// Starts the sender task of `cfg.traffic_group`. Fails only on a bad trust configuration.
pub fn spawn_sender(
    cfg: SenderLink,
    source: Arc<dyn SnapshotSource>,
) -> Result<(SenderHandle, JoinHandle<()>), LinkError> {
    let tls = trust::client_config(&cfg.ca, &cfg.cert, &cfg.key)?;
    let server_name = trust::device_server_name(&cfg.group, &cfg.peer_device)?;
    let shared = Arc::new(SenderShared {
        st: Mutex::new(SenderState {
            sender: channel::Sender::new(
                &cfg.device,
                &cfg.traffic_group,
                cfg.epoch,
                cfg.capacity,
                cfg.timers,
            ),
            capture: None,
        }),
        wake: Notify::new(),
        capacity: cfg.capacity.max(1),
    });
    let handle = SenderHandle {
        shared: shared.clone(),
    };
    let connector = TlsConnector::from(tls);
    let task = tokio::spawn(async move {
        let mut backoff = cfg.backoff_min;
        // A peer that stays away is logged once per distinct error, not at every retry.
        let mut last_error: Option<String> = None;
        loop {
            let addrs = std::iter::once((cfg.primary, cfg.local_primary))
                .chain(cfg.secondary.map(|a| (a, cfg.local_secondary)));
            for (addr, local) in addrs {
                let started = tokio::time::Instant::now();
                let ended = sender_session(
                    &cfg,
                    &connector,
                    server_name.clone(),
                    (addr, local),
                    &shared,
                    &*source,
                )
                .await;
                // A session that lasted resets the backoff, and its end is news.
                let lasted = started.elapsed() > cfg.backoff_max;
                if lasted {
                    backoff = cfg.backoff_min;
                    last_error = None;
                }
                match ended {
                    Ok(()) => last_error = None,
                    Err(e) => {
                        let text = e.to_string();
                        if last_error.as_deref() == Some(text.as_str()) {
                            tracing::debug!(traffic_group = %cfg.traffic_group, peer = %addr,
                                error = %e, "mirror: sender connection ended (again)");
                        } else {
                            tracing::info!(traffic_group = %cfg.traffic_group, peer = %addr,
                                error = %e, "mirror: sender connection ended");
                            last_error = Some(text);
                        }
                    }
                }
                {
                    let mut st = lock(&shared.st);
                    st.sender.disconnected();
                    st.capture = None;
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(cfg.backoff_max);
        }
    });
    Ok((handle, task))
}

/// One connection of a sender: connect, handshake, run the channel until an error.
async fn sender_session(
    cfg: &SenderLink,
    connector: &TlsConnector,
    server_name: rustls::pki_types::ServerName<'static>,
    (addr, local): (SocketAddr, Option<IpAddr>),
    shared: &SenderShared,
    source: &dyn SnapshotSource,
) -> Result<(), LinkError> {
    let t = cfg.io_timeout;
    let tcp = tokio::time::timeout(t, connect_from(addr, local))
        .await
        .map_err(|_| LinkError::Timeout("connect"))??;
    tcp.set_nodelay(true)?;
    let tls = tokio::time::timeout(t, connector.connect(server_name, tcp))
        .await
        .map_err(|_| LinkError::Timeout("tls handshake"))??;
    let peer = trust::peer_device(
        tls.get_ref().1,
        &cfg.group,
        std::slice::from_ref(&cfg.peer_device),
    )?;
    tracing::info!(traffic_group = %cfg.traffic_group, peer = %addr, device = %peer,
        "mirror: sender connected");
    let (rd, mut wr) = tokio::io::split(tls);
    lock(&shared.st).sender.connected(now_ms());
    shared.wake.notify_one();

    #[allow(unreachable_code)]
    let reader = async {
        let mut frames = FrameReader::new(rd);
        loop {
            let msg = frames.next().await?;
            lock(&shared.st).sender.on_message(now_ms(), msg)?;
            shared.wake.notify_one();
        }
        Ok::<(), LinkError>(())
    };
    #[allow(unreachable_code)]
    let writer = async {
        let mut out = Vec::with_capacity(WRITE_BATCH);
        loop {
            if lock(&shared.st).sender.wants_snapshot() {
                lock(&shared.st).capture = Some(Vec::new());
                let snapshot = source.snapshot(&cfg.traffic_group);
                let mut st = lock(&shared.st);
                let captured = st.capture.take().unwrap_or_default();
                let now = now_ms();
                st.sender.resync(now, snapshot)?;
                for p in captured {
                    match p {
                        Pending::Record(r) => {
                            st.sender.offer(now, r)?;
                        }
                        Pending::Delete(k) => {
                            st.sender.offer_delete(now, k);
                        }
                    }
                }
            }
            out.clear();
            let deadline = {
                let mut st = lock(&shared.st);
                st.sender.on_timer(now_ms())?;
                while out.len() < WRITE_BATCH {
                    let Some(m) = st.sender.poll_send() else {
                        break;
                    };
                    proto::encode(&m, &mut out)?;
                }
                st.sender.next_deadline()
            };
            if !out.is_empty() {
                write_timed(&mut wr, &out, t).await?;
                continue;
            }
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = sleep_until_ms(deadline) => {}
            }
        }
        Ok::<(), LinkError>(())
    };
    tokio::try_join!(reader, writer).map(|_: ((), ())| ())
}

/// Connects to `addr`, from `local` when it is of the same family.
async fn connect_from(addr: SocketAddr, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(ip) = local.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    sock.connect(addr).await
}

// ---------------------------------------------------------------------------------------------
// Receiver

/// Why a receiver refused a connection (counted through [`Admission::refused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not from a mirror address of a device of the group.
    Source,
    /// Too many connections at once: in all, handshaking, or handshaking from its address.
    Busy,
    /// TLS or the device certificate failed, or the connection came from another device's
    /// address.
    Trust,
    /// A device of the group that does not hold the traffic group it sends.
    NotHolder,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::Source,
        Refusal::Busy,
        Refusal::Trust,
        Refusal::NotHolder,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Refusal::Source => "source",
            Refusal::Busy => "busy",
            Refusal::Trust => "trust",
            Refusal::NotHolder => "not-holder",
        }
    }
}

/// Which connections and senders a receiver accepts beyond the group's certificate. The
/// service answers from the device-group file and placement; this layer knows neither.
pub trait Admission: Send + Sync {
    /// Whether a connection from `ip` may start a handshake at all: a mirror address of a
    /// device of the group. Checked before any byte is read.
    fn source_allowed(&self, ip: IpAddr) -> bool;
    /// Whether `device` (its certificate checked), connected from `ip`, may send traffic group
    /// `traffic_group`'s state now; `Err` says why not. A device may send only from its own
    /// mirror addresses and only a traffic group it holds: anything else could displace the
    /// holder's channel and overwrite or clear what it mirrored.
    fn sender_allowed(
        &self,
        device: &str,
        ip: IpAddr,
        traffic_group: &str,
    ) -> Result<(), (Refusal, String)>;
    /// A connection was refused (for the metrics).
    fn refused(&self, _why: Refusal) {}
}

/// Handshakes (connections not yet admitted as a traffic group's sender) a receiver runs at
/// once; more are closed at once. A device needs one per traffic group it sends.
pub const MAX_HANDSHAKES: usize = 8;
/// Handshakes from one address at once.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 2;
/// A sender the receiver does not (yet) see as the traffic group's holder
/// ([`Refusal::NotHolder`]) is given this long for placement to catch up (heartbeats may trail the new holder's first connection)
/// before it is refused.
pub const HOLDER_GRACE: Duration = Duration::from_secs(3);
/// Refusals logged per address: at most [`REFUSAL_LOG_BURST`] every [`REFUSAL_LOG_EVERY`].
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);
const REFUSAL_LOG_BURST: u32 = 5;

/// Handshakes in progress, in all and per source address.
#[derive(Default)]
struct Handshakes {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// A handshake slot, given back when dropped.
struct HandshakeSlot {
    counts: Arc<Mutex<Handshakes>>,
    ip: IpAddr,
}

impl HandshakeSlot {
    fn take(counts: &Arc<Mutex<Handshakes>>, ip: IpAddr) -> Option<HandshakeSlot> {
        let mut c = lock(counts);
        let mine = c.per_source.get(&ip).copied().unwrap_or(0);
        if c.total >= MAX_HANDSHAKES || mine >= MAX_HANDSHAKES_PER_SOURCE {
            return None;
        }
        c.total += 1;
        c.per_source.insert(ip, mine + 1);
        Some(HandshakeSlot {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut c = lock(&self.counts);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_source.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_source.remove(&self.ip);
            }
        }
    }
}

/// Logs at most [`REFUSAL_LOG_BURST`] refusals per address every [`REFUSAL_LOG_EVERY`] (a
/// flood must not flood the log); every refusal is counted through [`Admission::refused`].
#[derive(Default)]
struct RefusalLog {
    /// Per address: when its window began and how many lines it logged in it.
    windows: Mutex<HashMap<IpAddr, (std::time::Instant, u32)>>,
}

impl RefusalLog {
    fn should_log(&self, ip: IpAddr) -> bool {
        let now = std::time::Instant::now();
        let mut w = lock(&self.windows);
        if w.len() > 4096 {
            w.retain(|_, (t, _)| now.duration_since(*t) < REFUSAL_LOG_EVERY);
        }
        let e = w.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= REFUSAL_LOG_EVERY {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= REFUSAL_LOG_BURST
    }
}

/// One traffic group's channel on the receiver, across connections.
struct Slot {
    receiver: channel::Receiver,
    /// The connection currently driving it: its generation and how to end it.
    generation: u64,
    kick: Option<Arc<Notify>>,
}

struct ReceiverShared {
    cfg: ReceiverLink,
    slots: HashMap<String, Mutex<Slot>>,
    store: Arc<Mutex<dyn Store + Send>>,
    admission: Arc<dyn Admission>,
    handshakes: Arc<Mutex<Handshakes>>,
    log: RefusalLog,
}

impl ReceiverShared {
    fn refuse(&self, addr: SocketAddr, why: Refusal, reason: &dyn std::fmt::Display) {
        self.admission.refused(why);
        if self.log.should_log(addr.ip()) {
            tracing::warn!(peer = %addr, %reason, refusal = why.name(),
                "mirror: refused connection");
        }
    }
}

/// `channel::Receiver::on_message` wants a sized store.
struct DynStore<'a>(&'a mut (dyn Store + Send));

impl Store for DynStore<'_> {
    fn upsert(&mut self, r: Record) {
        self.0.upsert(r)
    }
    fn delete(&mut self, key: &RecordKey) {
        self.0.delete(key)
    }
    fn resync_begin(&mut self, tg: &str) {
        self.0.resync_begin(tg)
    }
    fn resync_end(&mut self, tg: &str) {
        self.0.resync_end(tg)
    }
}

/// The receiver's figures, per traffic group. Cheap to clone.
#[derive(Clone)]
pub struct ReceiverHandle {
    shared: Arc<ReceiverShared>,
}

impl ReceiverHandle {
    /// Each traffic group's receiver status, and whether a sender is connected to it now.
    pub fn status(&self) -> Vec<(String, channel::ReceiverStatus, bool)> {
        let mut out: Vec<_> = self
            .shared
            .slots
            .iter()
            .map(|(tg, slot)| {
                let s = lock(slot);
                (tg.clone(), s.receiver.status(), s.kick.is_some())
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Starts the receiver: accepts senders on every one of `listeners` (the primary and the
/// secondary mirror address) and applies what they mirror to `store`. A connection must come
/// from an address `admission` allows, get one of [`MAX_HANDSHAKES`] handshake slots (at
/// most [`MAX_HANDSHAKES_PER_SOURCE`] per address), present a device certificate of the
/// group and name a traffic group that device holds ([`Admission::sender_allowed`]) before
/// its channel starts. Aborting the returned task ends every connection. Fails only on a bad
/// trust configuration.
pub fn spawn_receiver(
    listeners: Vec<TcpListener>,
    cfg: ReceiverLink,
    store: Arc<Mutex<dyn Store + Send>>,
    admission: Arc<dyn Admission>,
) -> Result<(ReceiverHandle, JoinHandle<()>), LinkError> {
    let tls = trust::server_config_admitting(&cfg.ca, &cfg.cert, &cfg.key, cfg.admitted.clone())?;
    let acceptor = TlsAcceptor::from(tls);
    let slots = cfg
        .traffic_groups
        .iter()
        .map(|tg| {
            let receiver = channel::Receiver::new(&cfg.device, tg, cfg.timers, cfg.acks);
            let slot = Slot {
                receiver,
                generation: 0,
                kick: None,
            };
            (tg.clone(), Mutex::new(slot))
        })
        .collect();
    let shared = Arc::new(ReceiverShared {
        cfg,
        slots,
        store,
        admission,
        handshakes: Arc::default(),
        log: RefusalLog::default(),
    });
    let handle = ReceiverHandle {
        shared: shared.clone(),
    };
    let task = tokio::spawn(async move {
        // The listeners and the connection tasks belong to this task: when it ends or is
        // aborted they are dropped with it, so once its handle resolves the ports are free
        // again (a receiver restarted on the same port must not meet "address in use").
        if listeners.is_empty() {
            return;
        }
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = accept_any(&listeners) => match accepted {
                    Ok((tcp, addr)) if !shared.admission.source_allowed(addr.ip()) => {
                        drop(tcp);
                        shared.refuse(addr, Refusal::Source,
                            &"not a mirror address of a device of the group");
                    }
                    Ok((tcp, addr)) if conns.len() >= MAX_CONNECTIONS => {
                        drop(tcp);
                        shared.refuse(addr, Refusal::Busy, &"too many connections");
                    }
                    Ok((tcp, addr)) => {
                        let Some(slot) = HandshakeSlot::take(&shared.handshakes, addr.ip()) else {
                            drop(tcp);
                            shared.refuse(addr, Refusal::Busy, &"too many handshakes");
                            continue;
                        };
                        let shared = shared.clone();
                        let acceptor = acceptor.clone();
                        conns.spawn(async move {
                            if let Err(e) = receiver_conn(&shared, &acceptor, tcp, addr, slot).await {
                                tracing::warn!(peer = %addr, error = %e,
                                    "mirror: receiver connection ended");
                            }
                        });
                    }
                    Err(e) => {
                        // E.g. out of descriptors: wait a little rather than spin.
                        tracing::warn!(error = %e, "mirror: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    Ok((handle, task))
}

/// The next connection accepted on any of `listeners`.
async fn accept_any(listeners: &[TcpListener]) -> std::io::Result<(TcpStream, SocketAddr)> {
    std::future::poll_fn(|cx| {
        for l in listeners {
            if let std::task::Poll::Ready(r) = l.poll_accept(cx) {
                return std::task::Poll::Ready(r);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// One sender's connection: admit it, find its channel, run it.
async fn receiver_conn(
    shared: &ReceiverShared,
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    addr: SocketAddr,
    handshake: HandshakeSlot,
) -> Result<(), LinkError> {
    let cfg = &shared.cfg;
    let t = cfg.io_timeout;
    tcp.set_nodelay(true)?;
    let tls = match tokio::time::timeout(t, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            shared.refuse(addr, Refusal::Trust, &format_args!("tls: {e}"));
            return Ok(());
        }
        Err(_) => {
            shared.refuse(addr, Refusal::Busy, &"handshake timed out");
            return Ok(());
        }
    };
    let device = match trust::admitted_peer(tls.get_ref().1, &cfg.group, &cfg.admitted) {
        Ok(d) => d,
        Err(e) => {
            shared.refuse(addr, Refusal::Trust, &format_args!("trust: {e}"));
            return Ok(());
        }
    };
    let (rd, mut wr) = tokio::io::split(tls);
    let mut frames = FrameReader::new(rd);
    let hello = tokio::time::timeout(t, frames.next())
        .await
        .map_err(|_| LinkError::Timeout("hello"))??;
    let Message::Hello { traffic_group, .. } = &hello else {
        return Err(LinkError::NoHello(hello.name()));
    };
    let Some(slot) = shared.slots.get(traffic_group) else {
        return Err(LinkError::UnknownTrafficGroup(traffic_group.clone()));
    };
    // Only the traffic group's holder, from its own address; placement may trail a new
    // holder's first connection by a heartbeat or two, so it gets `HOLDER_GRACE`.
    let asked = tokio::time::Instant::now();
    loop {
        match shared
            .admission
            .sender_allowed(&device, addr.ip(), traffic_group)
        {
            Ok(()) => break,
            Err((Refusal::NotHolder, _)) if asked.elapsed() < HOLDER_GRACE => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err((refusal, why)) => {
                shared.refuse(
                    addr,
                    refusal,
                    &format_args!("device {device}, traffic group {traffic_group}: {why}"),
                );
                return Ok(());
            }
        }
    }
    drop(handshake);
    tracing::info!(peer = %addr, %device, %traffic_group, "mirror: sender connected");

    // Take the channel over from any previous connection.
    let kick = Arc::new(Notify::new());
    let wake = Notify::new();
    let generation = {
        let mut s = lock(slot);
        if let Some(old) = s.kick.take() {
            old.notify_one();
        }
        s.receiver.disconnected();
        s.generation += 1;
        s.kick = Some(kick.clone());
        let now = now_ms();
        s.receiver.connected(now);
        let mut store = lock(&*shared.store);
        s.receiver
            .on_message(now, hello, &mut DynStore(&mut *store))?;
        s.generation
    };
    // Runs `f` on the slot while this connection still owns it.
    let with_slot = |f: &mut dyn FnMut(&mut Slot) -> Result<(), LinkError>| {
        let mut s = lock(slot);
        if s.generation != generation {
            return Err(LinkError::Replaced);
        }
        f(&mut s)
    };

    #[allow(unreachable_code)]
    let reader = async {
        loop {
            let msg = frames.next().await?;
            let mut msg = Some(msg);
            with_slot(&mut |s| {
                let mut store = lock(&*shared.store);
                let m = msg.take().expect("one message");
                s.receiver
                    .on_message(now_ms(), m, &mut DynStore(&mut *store))?;
                Ok(())
            })?;
            wake.notify_one();
        }
        Ok::<(), LinkError>(())
    };
    #[allow(unreachable_code)]
    let writer = async {
        let mut out = Vec::with_capacity(WRITE_BATCH);
        loop {
            out.clear();
            let mut deadline = None;
            with_slot(&mut |s| {
                s.receiver.on_timer(now_ms())?;
                while out.len() < WRITE_BATCH {
                    let Some(m) = s.receiver.poll_send() else {
                        break;
                    };
                    proto::encode(&m, &mut out)?;
                }
                deadline = s.receiver.next_deadline();
                Ok(())
            })?;
            if !out.is_empty() {
                write_timed(&mut wr, &out, t).await?;
                continue;
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = sleep_until_ms(deadline) => {}
            }
        }
        Ok::<(), LinkError>(())
    };
    let kicked = async {
        kick.notified().await;
        Err::<(), _>(LinkError::Replaced)
    };
    let result = tokio::try_join!(reader, writer, kicked).map(|_: ((), (), ())| ());
    let mut s = lock(slot);
    if s.generation == generation {
        s.receiver.disconnected();
        s.kick = None;
    }
    result
}
