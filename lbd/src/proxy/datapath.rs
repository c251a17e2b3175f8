//! What the data path works with, as one value: [`DataPath`] — the live state (runtime,
//! connection and persistence tables, update ids), the optional mirror tap, the worker
//! runtimes, and the UDP listeners' restore channels. The app builds it once and hands an
//! `Arc` of it to every accept loop and UDP listener; nothing in the data path reaches
//! further.

use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use crate::config::Protocol;
use crate::mirror::proto::Record;
use crate::mirror::tap::MirrorTap;
use crate::state::Live;

/// A listener: what it listens on and the protocol.
pub type ListenerKey = (SocketAddr, Protocol);

/// Asks a UDP listener to rebuild mirrored flows (a takeover; see
/// [`super::takeover::restore_mirrored`]).
#[derive(Debug)]
pub struct Restore {
    pub records: Vec<Record>,
    pub done: tokio::sync::oneshot::Sender<usize>,
}

/// What takeovers rebuilt here since lbd started ([`super::takeover`]; metrics).
#[derive(Debug, Default)]
pub struct TakeoverStats {
    /// TCP connections rebuilt before the floating addresses were added.
    pub rebuilt_before: std::sync::atomic::AtomicU64,
    /// TCP connections rebuilt after them (the budget was spent).
    pub rebuilt_after: std::sync::atomic::AtomicU64,
    /// TCP connections that could not be rebuilt.
    pub failed: std::sync::atomic::AtomicU64,
    /// Milliseconds the last takeover's TCP rebuild took, remainder included (0: none yet).
    pub last_rebuild_ms: std::sync::atomic::AtomicU64,
}

/// The data path's view of lbd (see the module documentation). Dereferences to the [`Live`]
/// state it shares with the rest of lbd.
pub struct DataPath {
    pub live: Arc<Live>,
    /// Mirroring, when the device group has it on.
    pub mirror: Option<Arc<dyn MirrorTap>>,
    /// Data-path runtimes (one thread each); when empty, tasks run on the caller's runtime.
    workers: Vec<tokio::runtime::Handle>,
    /// Each UDP listener's channel for rebuilding mirrored flows.
    pub(crate) udp_restore: DashMap<ListenerKey, UnboundedSender<Restore>>,
    /// The descriptors TCP connections and UDP flows may hold (see [`super::budget`]).
    pub budget: Arc<super::budget::Budget>,
    /// What takeovers rebuilt here (see [`super::takeover`]).
    pub takeover: TakeoverStats,
    /// The access log (see [`super::access`]).
    pub access: super::access::AccessLog,
    /// Set when lbd stops with connections open (see [`super::drain`]).
    pub drain: super::drain::Drain,
}

impl std::fmt::Debug for DataPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPath")
            .field("mirror", &self.mirror.is_some())
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Deref for DataPath {
    type Target = Live;
    fn deref(&self) -> &Live {
        &self.live
    }
}

impl DataPath {
    pub fn new(
        live: Arc<Live>,
        mirror: Option<Arc<dyn MirrorTap>>,
        workers: Vec<tokio::runtime::Handle>,
    ) -> DataPath {
        DataPath {
            live,
            mirror,
            workers,
            udp_restore: DashMap::new(),
            budget: Arc::default(),
            takeover: Default::default(),
            access: Default::default(),
            drain: super::drain::Drain::default(),
        }
    }

    /// Runs the data path on `n` threads of their own, each with a single-threaded runtime
    /// (and, per TCP listener, its own SO_REUSEPORT socket): a connection is accepted,
    /// proxied and closed on one thread, with no cross-thread wake-ups.
    pub fn spawn_workers(n: usize) -> std::io::Result<Vec<tokio::runtime::Handle>> {
        (0..n)
            .map(|i| {
                // Runs the tasks spawned onto this runtime for the life of the process.
                crate::sys::runtime_thread(format!("lbd-worker-{i}"), |rt| {
                    rt.block_on(std::future::pending::<()>())
                })
            })
            .collect()
    }

    /// How many worker runtimes there are (at least one: the caller's).
    pub fn workers(&self) -> usize {
        self.workers.len().max(1)
    }

    /// Spawns `f` on worker `i` (modulo the number of workers), or on the caller's runtime
    /// when there are none.
    pub fn spawn_on_worker<F>(&self, i: usize, f: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self.workers.len() {
            0 => tokio::spawn(f),
            n => self.workers[i % n].spawn(f),
        }
    }

    /// The TCP connections and UDP flows open now.
    pub fn open(&self) -> super::drain::Open {
        super::drain::Open::of(&self.budget)
    }

    /// The mirror tap, when mirroring is on and `enabled` (the virtual server or profile has
    /// `mirror = true`).
    pub fn mirror_if(&self, enabled: bool) -> Option<&Arc<dyn MirrorTap>> {
        self.mirror.as_ref().filter(|_| enabled)
    }
}
