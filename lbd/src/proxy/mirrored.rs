//! TCP connection mirroring (docs/architecture.md, "Mirroring"): the relay of a virtual server with
//! `mirror = true`, and the rebuilding of mirrored connections on the device that takes their
//! traffic group over.
//!
//! - **Snapshots.** While a mirrored connection relays, it is checked every [`CHECK`]: once
//!   nothing has moved either way for [`QUIET_MS`] and the bytes moved differ from the last
//!   snapshot's, both sockets are snapshotted with `TCP_REPAIR` ([`repair::snapshot`], which
//!   refuses unless nothing is unacknowledged or unread) and the pair is offered to the
//!   traffic group's channels as one record. The first snapshot is the connection's
//!   establishment (as soon as it is quiet).
//! - **Stale marks.** The first bytes that move after a snapshot withdraw the record (a delete
//!   on the channel): a snapshot that no longer matches the kernel's sequence numbers must not
//!   be rebuilt. A connection that streams is therefore not mirrored until it pauses; on a
//!   failover it is not rebuilt, and its peers' next segments meet the new owner's kernel,
//!   which answers with an RST carrying the sequence number they expect (RFC 9293 §3.10.7.1):
//!   they learn at once, instead of waiting on a connection that cannot resume.
//! - **Release.** When this device gives the traffic group up, its mirrored connections end
//!   without a word: both sockets go into repair mode and close silently, because the
//!   connections now live on the new owner and a FIN or RST from here would kill them there.
//! - **Rebuild** ([`Restore`]): at a takeover, each mirrored connection's sockets are rebuilt
//!   ([`repair::restore`], timestamps advanced by the time since the snapshot) and relayed
//!   again, mirrored onward to the traffic group's new next-active device. The system calls
//!   (about 50 a connection) run on blocking threads in batches, most recently active
//!   connection first, not on the control runtime; the takeover waits for them up to its
//!   budget (`takeover_restore_budget`) before the floating addresses arrive, and the rest
//!   follow in the background ([`super::takeover`]). Rebuilt sockets get keepalive every
//!   second and a [`USER_TIMEOUT`]: one whose peer had moved on (bytes the old owner's kernel
//!   acknowledged after the snapshot, or a reset the listener sent while the connection waited
//!   for its rebuild after the addresses) cannot resume, and is aborted within a few seconds
//!   instead of hanging; the peer's next segment then meets no socket and is reset.
//!
//! Nothing here waits on the network while holding anything, and no snapshot is taken while
//! a relay buffer holds bytes (the check runs between polls of the relay, whose buffers are
//! empty unless a socket's send queue is full — which the snapshot refuses).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::batches::{Batches, Outcome};
use super::datapath::DataPath;
use super::relay::{relay, RelayEnd, Sinks};
use crate::config::Protocol;
use crate::mirror::proto::{Record, RecordKey, RecordKind, TcpRepair};
use crate::mirror::repair;
use crate::mirror::tap::MirrorTap;
use crate::state::{CurrentGuard, MemberState, VsState};
use crate::tables::{now_ms, LiveConn, NewConn};

/// How often a mirrored connection is looked at.
pub const CHECK: Duration = Duration::from_millis(100);
/// How long nothing must have moved before a snapshot is tried.
pub const QUIET_MS: u64 = 100;
/// Keepalive of rebuilt sockets.
pub const KEEPALIVE: Duration = Duration::from_secs(1);
/// User timeout of rebuilt sockets: a rebuilt connection whose peer does not answer (its
/// sequence numbers moved on) is aborted after this.
pub const USER_TIMEOUT: Duration = Duration::from_secs(2);

/// A raw descriptor borrowed for a socket option while a relay holds the stream.
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// The connection's identity on the mirror.
#[derive(Debug, Clone, Copy)]
pub struct Ends {
    pub client: SocketAddr,
    pub vip: SocketAddr,
    pub member: SocketAddr,
    pub snat: SocketAddr,
}

impl Ends {
    fn key(&self) -> RecordKey {
        RecordKey::TcpConn {
            client: self.client,
            vip: self.vip,
        }
    }
}

/// How a mirrored relay ended.
pub enum Mirrored {
    /// As a relay ends.
    Ended(io::Result<RelayEnd>),
    /// This device gave the traffic group up: both sockets are silenced (closing them sends
    /// nothing).
    Released,
}

/// Relays `client` ↔ `server` like [`relay`], mirroring the connection to `tg`'s channels
/// (see the module documentation).
#[allow(clippy::too_many_arguments)]
pub async fn relay_mirrored(
    m: &dyn MirrorTap,
    tg: &str,
    ends: Ends,
    client: &mut TcpStream,
    server: &mut TcpStream,
    up: Sinks<'_>,
    down: Sinks<'_>,
    live: &LiveConn,
    idle: Duration,
) -> Mirrored {
    let released = m.release_watch(tg);
    relay_watching(m, tg, ends, client, server, up, down, live, idle, released).await
}

/// [`relay_mirrored`] with the release watch given: one subscribed earlier (a rebuilt
/// connection's, from the start of the takeover) also sees a release that came before the
/// relay started.
#[allow(clippy::too_many_arguments)]
async fn relay_watching(
    m: &dyn MirrorTap,
    tg: &str,
    ends: Ends,
    client: &mut TcpStream,
    server: &mut TcpStream,
    up: Sinks<'_>,
    down: Sinks<'_>,
    live: &LiveConn,
    idle: Duration,
    mut released: tokio::sync::watch::Receiver<u64>,
) -> Mirrored {
    let (cfd, sfd) = (Fd(client.as_raw_fd()), Fd(server.as_raw_fd()));
    let mut check = tokio::time::interval(CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let moved = || live.bytes_in.load(Ordering::Relaxed) + live.bytes_out.load(Ordering::Relaxed);
    // Bytes moved at the last snapshot on the mirror (None: no record there now).
    let mut mirrored_at: Option<u64> = None;
    let mut last_try: Option<u64> = None;
    let relaying = relay(client, server, up, down, live, idle);
    tokio::pin!(relaying);
    let end = loop {
        tokio::select! {
            r = &mut relaying => break Mirrored::Ended(r),
            _ = released.changed() => {
                let _ = repair::silence(&cfd);
                let _ = repair::silence(&sfd);
                debug!(traffic_group = tg, client = %ends.client,
                    "mirrored connection released: closed silently");
                return Mirrored::Released;
            }
            _ = check.tick() => {
                let now_moved = moved();
                if mirrored_at.is_some_and(|at| at != now_moved) {
                    // Stale: the mirror must not rebuild it from the old snapshot.
                    m.flow_down(tg, ends.key());
                    mirrored_at = None;
                }
                let quiet = now_ms().saturating_sub(live.last_ms()) >= QUIET_MS;
                if mirrored_at.is_none() && quiet && last_try != Some(now_moved) {
                    last_try = Some(now_moved);
                    match (repair::snapshot(&cfd), repair::snapshot(&sfd)) {
                        (Ok(c), Ok(s)) if moved() == now_moved => {
                            m.flow_up(tg, kind(&ends, c, s));
                            mirrored_at = Some(now_moved);
                        }
                        (Ok(_), Ok(_)) => {}
                        (Err(e), _) | (_, Err(e)) => {
                            // Not quiescent yet (data in flight): the next quiet tick retries;
                            // any other error waits until bytes move.
                            if matches!(e, repair::RepairError::NotQuiescent { .. }) {
                                last_try = None;
                            }
                            debug!(client = %ends.client, "no snapshot: {e}");
                        }
                    }
                }
            }
        }
    };
    if mirrored_at.is_some() {
        m.flow_down(tg, ends.key());
    }
    end
}

fn kind(ends: &Ends, client_side: TcpRepair, server_side: TcpRepair) -> RecordKind {
    RecordKind::TcpConn {
        client: ends.client,
        vip: ends.vip,
        member: ends.member,
        snat: ends.snat,
        client_side,
        server_side,
        taken_ms: now_ms(),
    }
}

/// Connections per batch of the rebuild (about 10 ms of system calls in a debug build, 3 in a
/// release build): what one blocking task rebuilds before its sockets are relayed.
pub const BATCH: usize = 128;
/// The most batches rebuilt at once: the rebuild's system calls contend in the kernel (the
/// bind hash), and the data path's workers need the cores too.
pub const MAX_PARALLEL: usize = 8;

/// Batches rebuilt at once: one per core, at most [`MAX_PARALLEL`].
pub fn parallel() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_PARALLEL))
}

/// A mirrored connection about to be rebuilt: what the control runtime looked up.
pub struct Pending {
    vs: Arc<VsState>,
    member: Arc<MemberState>,
    ends: Ends,
    client_side: TcpRepair,
    server_side: TcpRepair,
    taken_ms: u64,
}

/// A connection's sockets rebuilt (on a blocking thread), or why not.
pub struct Rebuilt {
    pending: Pending,
    sockets: Result<(std::net::TcpStream, std::net::TcpStream), repair::RepairError>,
}

/// Rebuilds one connection's two sockets: the system calls of a takeover (about 50), run on a
/// blocking thread. The timestamps are advanced by the time since the snapshot, as of now.
fn rebuild(p: &Pending) -> Result<(std::net::TcpStream, std::net::TcpStream), repair::RepairError> {
    let elapsed = now_ms().saturating_sub(p.taken_ms) as u32;
    let (mut client_side, mut server_side) = (p.client_side, p.server_side);
    for side in [&mut client_side, &mut server_side] {
        if side.timestamps {
            side.ts_val = side.ts_val.wrapping_add(elapsed);
        }
    }
    let c = repair::restore(&client_side, p.ends.vip, p.ends.client)?;
    let s = repair::restore(&server_side, p.ends.snat, p.ends.member)?;
    for sock in [&c, &s] {
        repair::set_keepalive(sock, KEEPALIVE, KEEPALIVE)?;
        repair::set_user_timeout(sock, USER_TIMEOUT)?;
    }
    Ok((c, s))
}

/// Rebuilds a batch on a blocking thread (off the control runtime).
fn rebuild_batch(batch: Vec<Pending>) -> futures_util::future::BoxFuture<'static, Vec<Rebuilt>> {
    Box::pin(async move {
        let n = batch.len();
        tokio::task::spawn_blocking(move || {
            batch
                .into_iter()
                .map(|pending| Rebuilt {
                    sockets: rebuild(&pending),
                    pending,
                })
                .collect()
        })
        .await
        .unwrap_or_else(|e| {
            warn!(
                connections = n,
                "a batch of mirrored connections was not rebuilt: {e}"
            );
            Vec::new()
        })
    })
}

/// The rebuild of a traffic group's mirrored TCP connections at a takeover: most recently
/// active first (a snapshot is taken after activity, so `taken_ms` orders them), in batches of
/// [`BATCH`] on blocking threads, as many at once as the machine has cores. Each rebuilt
/// connection is relayed again on a worker runtime, mirrored onward to the traffic group's new
/// next-active device. [`Restore::run`] stops at a deadline (the takeover's budget) and goes on
/// at the next call; a release of the traffic group stops it ([`Restore::abandon`]).
pub struct Restore {
    batches: Batches<Pending, Rebuilt>,
    dp: Arc<DataPath>,
    tg: Arc<str>,
    /// The release watch as of the takeover's start, for the rebuilt connections' relays.
    released: Option<tokio::sync::watch::Receiver<u64>>,
    /// The next worker runtime to relay on.
    worker: usize,
    /// Connections rebuilt and relayed again.
    pub rebuilt: usize,
    /// Connections that could not be rebuilt (no such virtual server or member here, or a
    /// system call refused).
    pub failed: usize,
}

impl Restore {
    /// Looks the TCP connections of `records` up (virtual server, member) and orders them.
    /// `released`: bumped when this device gives `tg` up again, which stops the rebuild.
    pub fn new(
        dp: &Arc<DataPath>,
        tg: &str,
        records: Vec<Record>,
        released: Option<tokio::sync::watch::Receiver<u64>>,
    ) -> Restore {
        let rt = dp.runtime.load();
        let mut failed = 0;
        let mut pending = Vec::with_capacity(records.len());
        for r in records {
            let RecordKind::TcpConn {
                client,
                vip,
                member,
                snat,
                client_side,
                server_side,
                taken_ms,
            } = r.kind
            else {
                continue;
            };
            let Some(vs) = rt.listeners.get(&(vip, Protocol::Tcp)).cloned() else {
                warn!(%client, %vip, "mirrored connection not rebuilt: no such virtual server here");
                failed += 1;
                continue;
            };
            let Some(idx) = vs.pool.position(member) else {
                warn!(%client, %member, "mirrored connection not rebuilt: member not in the pool");
                failed += 1;
                continue;
            };
            pending.push(Pending {
                member: vs.pool.members[idx].clone(),
                vs,
                ends: Ends {
                    client,
                    vip,
                    member,
                    snat,
                },
                client_side,
                server_side,
                taken_ms,
            });
        }
        // Most recently active first.
        pending.sort_by_key(|p| std::cmp::Reverse(p.taken_ms));
        Restore {
            batches: Batches::new(
                pending,
                BATCH,
                parallel(),
                Arc::new(rebuild_batch),
                released.clone(),
            ),
            dp: dp.clone(),
            tg: tg.into(),
            released,
            worker: 0,
            rebuilt: 0,
            failed,
        }
    }

    /// Connections not rebuilt yet.
    pub fn left(&self) -> usize {
        self.batches.left()
    }

    /// Rebuilds until everything is, `deadline` passes or the traffic group is released.
    pub async fn run(&mut self, deadline: Option<tokio::time::Instant>) -> Outcome {
        let Restore {
            batches,
            dp,
            tg,
            released,
            worker,
            rebuilt,
            failed,
        } = self;
        let out = batches
            .run(deadline, |r| {
                let ends = r.pending.ends;
                match r.sockets {
                    Ok((c, s)) => {
                        let (dp2, tg2, vs, member) =
                            (dp.clone(), tg.clone(), r.pending.vs, r.pending.member);
                        let released = released.clone();
                        dp.spawn_on_worker(*worker, async move {
                            let relayed =
                                rebuilt_conn(&dp2, &vs, member, c, s, ends, &tg2, released);
                            if let Err(e) = relayed.await {
                                debug!(client = %ends.client, "rebuilt connection ended: {e}");
                            }
                        });
                        *worker = worker.wrapping_add(1);
                        *rebuilt += 1;
                    }
                    Err(e) => {
                        if *failed == 0 {
                            warn!(client = %ends.client, vip = %ends.vip,
                                "mirrored connection not rebuilt (the first; the rest are counted): {e}");
                        } else {
                            debug!(client = %ends.client, vip = %ends.vip,
                                "mirrored connection not rebuilt: {e}");
                        }
                        *failed += 1;
                    }
                }
            })
            .await;
        *failed += batches.take_lost();
        out
    }

    /// The traffic group was released: nothing more is rebuilt. Sockets rebuilt meanwhile are
    /// closed silently (the connections live on the new owner); returns how many connections
    /// were abandoned.
    pub async fn abandon(&mut self) -> usize {
        let mut silenced = 0;
        let dropped = self
            .batches
            .stop(|r| {
                if let Ok((c, s)) = r.sockets {
                    let _ = repair::drop_silently(c);
                    let _ = repair::drop_silently(s);
                }
                silenced += 1;
            })
            .await;
        self.failed += self.batches.take_lost();
        dropped + silenced
    }
}

/// Relays a rebuilt connection until it ends (mirrored onward as any other).
#[allow(clippy::too_many_arguments)]
async fn rebuilt_conn(
    dp: &DataPath,
    vs: &VsState,
    member: Arc<MemberState>,
    c: std::net::TcpStream,
    s: std::net::TcpStream,
    ends: Ends,
    tg: &str,
    released: Option<tokio::sync::watch::Receiver<u64>>,
) -> io::Result<()> {
    // Counted in the descriptor budget, never refused: the connection exists already.
    let _permit = dp.budget.take(2, super::budget::Side::Tcp);
    let mut client = TcpStream::from_std(c)?;
    let mut server = TcpStream::from_std(s)?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let _vs_current = CurrentGuard::new(vs.counters.clone());
    let _member_current = CurrentGuard::new(member.counters.clone());
    let guard = dp.conns.insert(
        NewConn {
            protocol: Protocol::Tcp,
            virtual_server: &vs.name,
            client: ends.client,
            vip: ends.vip,
            pool: &vs.pool.name,
            member: member.addr,
            snat: ends.snat,
            traffic_group: Some(tg),
            idle: vs.cfg.idle_timeout(),
        },
        &dp.ids,
    );
    let live = &guard.conn;
    let (up, down) = Sinks::for_conn(&vs.counters, &member.counters, live);
    let idle = vs.cfg.idle_timeout();
    let res = match dp.mirror.as_deref() {
        Some(m) => {
            let released = released.unwrap_or_else(|| m.release_watch(tg));
            let (c, s) = (&mut client, &mut server);
            match relay_watching(m, tg, ends, c, s, up, down, live, idle, released).await {
                Mirrored::Ended(r) => r,
                Mirrored::Released => return Ok(()),
            }
        }
        None => relay(&mut client, &mut server, up, down, live, idle).await,
    };
    super::tcp::finish(res, &client, &server)
}
