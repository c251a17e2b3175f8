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
//! - **Rebuild** ([`restore`]): before the floating addresses arrive, each mirrored
//!   connection's sockets are rebuilt ([`repair::restore`], timestamps advanced by the time
//!   since the snapshot) and relayed again, mirrored onward to the traffic group's new
//!   next-active device. Rebuilt sockets get keepalive every second and a [`USER_TIMEOUT`]:
//!   one whose peer had moved on (bytes the old owner's kernel acknowledged after the
//!   snapshot) cannot resume, and is aborted within a few seconds instead of hanging; the
//!   peer's next segment then meets no socket and is reset.
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
use tracing::{debug, info, warn};

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
    let (cfd, sfd) = (Fd(client.as_raw_fd()), Fd(server.as_raw_fd()));
    let mut released = m.release_watch(tg);
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

/// Rebuilds the mirrored TCP connections of `records` (traffic group `tg`, which this device
/// is taking over) and relays them again; returns how many were rebuilt. Runs before the
/// floating addresses are added.
pub fn restore(dp: &Arc<DataPath>, tg: &str, records: Vec<Record>) -> usize {
    let rt = dp.runtime.load();
    let mut n = 0;
    for (i, r) in records.into_iter().enumerate() {
        let RecordKind::TcpConn {
            client,
            vip,
            member,
            snat,
            mut client_side,
            mut server_side,
            taken_ms,
        } = r.kind
        else {
            continue;
        };
        let Some(vs) = rt.listeners.get(&(vip, Protocol::Tcp)).cloned() else {
            warn!(%client, %vip, "mirrored connection not rebuilt: no such virtual server here");
            continue;
        };
        let Some(idx) = vs.pool.position(member) else {
            warn!(%client, %member, "mirrored connection not rebuilt: member not in the pool");
            continue;
        };
        let elapsed = now_ms().saturating_sub(taken_ms) as u32;
        for side in [&mut client_side, &mut server_side] {
            if side.timestamps {
                side.ts_val = side.ts_val.wrapping_add(elapsed);
            }
        }
        let rebuilt = repair::restore(&client_side, vip, client).and_then(|c| {
            let s = repair::restore(&server_side, snat, member)?;
            for sock in [&c, &s] {
                repair::set_keepalive(sock, KEEPALIVE, KEEPALIVE)?;
                repair::set_user_timeout(sock, USER_TIMEOUT)?;
            }
            Ok((c, s))
        });
        let (c, s) = match rebuilt {
            Ok(pair) => pair,
            Err(e) => {
                warn!(%client, %vip, "mirrored connection not rebuilt: {e}");
                continue;
            }
        };
        let ends = Ends {
            client,
            vip,
            member,
            snat,
        };
        let member = vs.pool.members[idx].clone();
        let dp2 = dp.clone();
        let tg2: Arc<str> = tg.into();
        dp.spawn_on_worker(i, async move {
            if let Err(e) = rebuilt_conn(&dp2, &vs, member, c, s, ends, &tg2).await {
                debug!(client = %ends.client, "rebuilt connection ended: {e}");
            }
        });
        n += 1;
    }
    if n > 0 {
        info!(
            traffic_group = tg,
            connections = n,
            "mirrored TCP connections rebuilt"
        );
    }
    n
}

/// Relays a rebuilt connection until it ends (mirrored onward as any other).
async fn rebuilt_conn(
    dp: &DataPath,
    vs: &VsState,
    member: Arc<MemberState>,
    c: std::net::TcpStream,
    s: std::net::TcpStream,
    ends: Ends,
    tg: &str,
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
            match relay_mirrored(m, tg, ends, &mut client, &mut server, up, down, live, idle).await
            {
                Mirrored::Ended(r) => r,
                Mirrored::Released => return Ok(()),
            }
        }
        None => relay(&mut client, &mut server, up, down, live, idle).await,
    };
    super::tcp::finish(res, &client, &server)
}
