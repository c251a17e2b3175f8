//! A tokio transport for single-hop BFD (RFC 5881) around [`Session`]s: one task, one receive
//! socket for every peer, one send socket.
//!
//! - Receive on the bound address (port 3784 in production, [`PORT`]); each datagram's TTL /
//!   Hop Limit is read from its control message (`IP_RECVTTL` / `IPV6_RECVHOPLIMIT`) and the
//!   packet dropped unless it is 255 (RFC 5881 §5, GTSM). `IP_MINTTL` is not used: Linux
//!   applies it to TCP only, a UDP socket with it still receives TTL 254.
//! - Send from a second socket bound to the same address and a port in 49152–65535 (RFC 5881
//!   §4: one source port for all packets of a session), with TTL / Hop Limit 255.
//! - Demultiplex a decoded packet by Your Discriminator when nonzero, else by source address
//!   (RFC 5881 §3); unknown ones are dropped. One session per peer address.
//!
//! Each session's jitter seed is mixed with random bits (the initial auth sequence number
//! comes from it too). The task owns the sessions; [`Driver`] and [`PeerHandle`] talk to it over channels, and each
//! peer's [`Status`] is published on a `watch`. Dropping the [`Driver`] stops the task (the
//! peers then see a silent neighbor).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use super::packet::{self, Diag, State};
use super::session::{Input, Intervals, Output, Session, SessionConfig};

/// RFC 5881 §4: the single-hop Control packet destination port.
pub const PORT: u16 = 3784;
/// RFC 5881 §5: the TTL / Hop Limit sent and required on receipt.
pub const TTL: u8 = 255;
/// RFC 5881 §4: the source port range.
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;

/// Errors of the transport layer.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    #[error("cannot receive BFD on {0}: {1} (another BFD speaker, such as FRR's bfdd, holds it?)")]
    Bind(SocketAddr, io::Error),
    #[error("a session for {0} exists already")]
    DuplicatePeer(IpAddr),
    #[error("local discriminator {0} is in use")]
    DuplicateDiscriminator(u32),
    #[error("invalid session configuration: {0}")]
    Config(#[from] super::session::SessionError),
    #[error("the driver has stopped")]
    Stopped,
}

/// A peer's session as last published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub state: State,
    /// bfd.LocalDiag: why the state last changed.
    pub diag: Diag,
    /// bfd.RemoteSessionState (AdminDown: the peer disabled the session, not a path failure).
    pub remote_state: State,
    /// bfd.LocalDiscr and bfd.RemoteDiscr (0 while unknown).
    pub local_discriminator: u32,
    pub remote_discriminator: u32,
    /// The Detection Time in force (RFC 5880 §6.8.4), once the peer has been heard.
    pub detection_time: Option<std::time::Duration>,
    /// The periodic transmit interval in force (before jitter).
    pub tx_interval: Option<std::time::Duration>,
}

enum Cmd {
    AddPeer {
        peer: SocketAddr,
        cfg: SessionConfig,
        reply: oneshot::Sender<Result<watch::Receiver<Status>, DriverError>>,
    },
    Input(IpAddr, Input),
    RemovePeer(IpAddr, Option<oneshot::Sender<()>>),
}

/// The running transport.
#[derive(Debug)]
pub struct Driver {
    cmds: mpsc::UnboundedSender<Cmd>,
    local: SocketAddr,
    source: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

/// One peer's session.
#[derive(Debug, Clone)]
pub struct PeerHandle {
    peer: IpAddr,
    cmds: mpsc::UnboundedSender<Cmd>,
    status: watch::Receiver<Status>,
}

impl PeerHandle {
    pub fn peer(&self) -> IpAddr {
        self.peer
    }

    pub fn state(&self) -> State {
        self.status.borrow().state
    }

    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    /// Every change of [`Status`].
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// RFC 5880 §6.8.16.
    pub fn admin_down(&self, on: bool) {
        let _ = self.cmds.send(Cmd::Input(self.peer, Input::AdminDown(on)));
    }

    pub fn set_intervals(&self, intervals: Intervals) {
        let _ = self
            .cmds
            .send(Cmd::Input(self.peer, Input::SetIntervals(intervals)));
    }

    /// Ends the session: one AdminDown packet, then nothing more is sent to the peer.
    pub fn remove(&self) {
        let _ = self.cmds.send(Cmd::RemovePeer(self.peer, None));
    }

    /// [`PeerHandle::remove`], returning once the AdminDown packet has been sent.
    pub async fn remove_and_wait(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Cmd::RemovePeer(self.peer, Some(tx))).is_ok() {
            let _ = rx.await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Driver {
    /// Binds the receive socket to `local` (port [`PORT`] for RFC 5881; 0 picks one, for tests)
    /// and a send socket to the same address and a port in [`SOURCE_PORTS`], and starts the
    /// task. Must be called within a tokio runtime.
    pub fn bind(local: SocketAddr) -> Result<Driver, DriverError> {
        let rx = rx_socket(local).map_err(|e| DriverError::Bind(local, e))?;
        let local = rx.local_addr()?;
        let tx = tx_socket(local.ip())?;
        let source = tx.local_addr()?;
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(rx, tx, cmd_rx));
        Ok(Driver {
            cmds,
            local,
            source,
            task,
        })
    }

    /// Where packets are received.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Where packets are sent from.
    pub fn source_addr(&self) -> SocketAddr {
        self.source
    }

    /// Starts a session with the peer at `peer` (its receive address: port [`PORT`] normally).
    pub async fn add_peer(
        &self,
        peer: SocketAddr,
        cfg: SessionConfig,
    ) -> Result<PeerHandle, DriverError> {
        cfg.validate()?;
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::AddPeer { peer, cfg, reply })
            .map_err(|_| DriverError::Stopped)?;
        let status = rx.await.map_err(|_| DriverError::Stopped)??;
        Ok(PeerHandle {
            peer: peer.ip(),
            cmds: self.cmds.clone(),
            status,
        })
    }
}

fn domain(ip: IpAddr) -> Domain {
    if ip.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    }
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is an open socket owned by the caller; the option value points to a live
    // c_int and the length is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn rx_socket(local: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(domain(local.ip()), Type::DGRAM, Some(Protocol::UDP))?;
    if local.is_ipv4() {
        setsockopt_int(s.as_raw_fd(), libc::IPPROTO_IP, libc::IP_RECVTTL, 1)?;
    } else {
        s.set_only_v6(true)?;
        setsockopt_int(
            s.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVHOPLIMIT,
            1,
        )?;
    }
    s.set_nonblocking(true)?;
    s.bind(&SockAddr::from(local))?;
    UdpSocket::from_std(s.into())
}

fn tx_socket(ip: IpAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(domain(ip), Type::DGRAM, Some(Protocol::UDP))?;
    if ip.is_ipv4() {
        s.set_ttl(u32::from(TTL))?;
    } else {
        s.set_only_v6(true)?;
        s.set_unicast_hops_v6(u32::from(TTL))?;
    }
    s.set_nonblocking(true)?;
    // A port in the RFC 5881 range, starting from a spot that differs between processes.
    let span = u32::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
    let start = std::process::id() % span;
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free source port");
    for i in 0..span {
        let port = SOURCE_PORTS.start() + ((start + i) % span) as u16;
        match s.bind(&SockAddr::from(SocketAddr::new(ip, port))) {
            Ok(()) => return UdpSocket::from_std(s.into()),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// One `recvmsg`: the datagram's length, source and TTL / Hop Limit (if the kernel said).
fn recv_with_ttl(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<i32>)> {
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // u64s: aligned for cmsghdr.
    let mut cbuf = [0u64; 16];
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut addr as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: every pointer in `msg` refers to a live local buffer of the stated length.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut ttl = None;
    // SAFETY: CMSG_* walk the control buffer the kernel filled, within msg_controllen.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !c.is_null() {
        // SAFETY: `c` is a non-null header inside the control buffer.
        let h = unsafe { &*c };
        if (h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_TTL)
            || (h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_HOPLIMIT)
        {
            // SAFETY: both carry a c_int (ip(7), ipv6(7)); unaligned read of its bytes.
            ttl =
                Some(unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>()) });
        }
        // SAFETY: as for CMSG_FIRSTHDR.
        c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
    }
    let src = match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for an AF_INET source.
            let a: libc::sockaddr_in =
                unsafe { std::ptr::read((&addr as *const libc::sockaddr_storage).cast()) };
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for an AF_INET6 source.
            let a: libc::sockaddr_in6 =
                unsafe { std::ptr::read((&addr as *const libc::sockaddr_storage).cast()) };
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unknown address family",
            ))
        }
    };
    Ok((n as usize, src, ttl))
}

struct Peer {
    addr: SocketAddr,
    session: Session,
    status: watch::Sender<Status>,
}

/// 64 random bits without a dependency: std's per-process randomly keyed SipHash.
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

fn status_of(s: &Session) -> Status {
    Status {
        state: s.state(),
        diag: s.local_diag(),
        remote_state: s.remote_state(),
        local_discriminator: s.local_discriminator(),
        remote_discriminator: s.remote_discriminator(),
        detection_time: s.detection_time(),
        tx_interval: s.tx_interval(),
    }
}

struct Sessions {
    peers: HashMap<IpAddr, Peer>,
    by_discr: HashMap<u32, IpAddr>,
    tx: UdpSocket,
}

impl Sessions {
    async fn feed(&mut self, ip: IpAddr, input: Input) {
        let now = tokio::time::Instant::now().into_std();
        let Some(p) = self.peers.get_mut(&ip) else {
            return;
        };
        let out = p.session.process(now, input);
        let dst = p.addr;
        p.status.send_if_modified(|st| {
            let new = status_of(&p.session);
            let changed = *st != new;
            *st = new;
            changed
        });
        for o in out {
            match o {
                Output::Send(pkt) => {
                    if let Err(e) = self.tx.send_to(&packet::encode(&pkt), dst).await {
                        tracing::debug!(peer = %dst, error = %e, "bfd send failed");
                    }
                }
                Output::StateChanged { from, to, diag } => {
                    tracing::info!(peer = %dst, %from, %to, %diag, "bfd session state");
                }
                Output::Discarded(e) => {
                    tracing::debug!(peer = %dst, error = %e, "bfd packet discarded");
                }
            }
        }
    }

    fn next_deadline(&self) -> Option<std::time::Instant> {
        self.peers
            .values()
            .filter_map(|p| p.session.poll_timeout())
            .min()
    }

    fn add(
        &mut self,
        peer: SocketAddr,
        cfg: SessionConfig,
    ) -> Result<watch::Receiver<Status>, DriverError> {
        if self.peers.contains_key(&peer.ip()) {
            return Err(DriverError::DuplicatePeer(peer.ip()));
        }
        if self.by_discr.contains_key(&cfg.local_discriminator) {
            return Err(DriverError::DuplicateDiscriminator(cfg.local_discriminator));
        }
        self.by_discr.insert(cfg.local_discriminator, peer.ip());
        let mut cfg = cfg;
        cfg.jitter_seed ^= random_seed();
        let session = Session::new(cfg);
        let (status, rx) = watch::channel(status_of(&session));
        self.peers.insert(
            peer.ip(),
            Peer {
                addr: peer,
                session,
                status,
            },
        );
        Ok(rx)
    }
}

async fn run(rx: UdpSocket, tx: UdpSocket, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
    let mut s = Sessions {
        peers: HashMap::new(),
        by_discr: HashMap::new(),
        tx,
    };
    let mut buf = [0u8; 512];
    loop {
        let deadline = s.next_deadline();
        tokio::select! {
            r = rx.async_io(Interest::READABLE, || recv_with_ttl(rx.as_raw_fd(), &mut buf)) => {
                let (n, src, ttl) = match r {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::debug!(error = %e, "bfd receive failed");
                        continue;
                    }
                };
                if ttl != Some(i32::from(TTL)) {
                    tracing::debug!(%src, ?ttl, "bfd packet dropped: TTL is not 255 (RFC 5881 §5)");
                    continue;
                }
                let pkt = match packet::decode(&buf[..n]) {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::debug!(%src, error = %e, "bfd packet dropped");
                        continue;
                    }
                };
                let ip = if pkt.your_discriminator != 0 {
                    s.by_discr.get(&pkt.your_discriminator).copied()
                } else {
                    s.peers.contains_key(&src.ip()).then_some(src.ip())
                };
                if let Some(ip) = ip {
                    s.feed(ip, Input::Received(pkt)).await;
                }
            }
            c = cmds.recv() => match c {
                None => break,
                Some(Cmd::AddPeer { peer, cfg, reply }) => {
                    let r = s.add(peer, cfg);
                    let ok = r.is_ok();
                    let _ = reply.send(r);
                    if ok {
                        s.feed(peer.ip(), Input::Start).await;
                    }
                }
                Some(Cmd::Input(ip, input)) => s.feed(ip, input).await,
                Some(Cmd::RemovePeer(ip, done)) => {
                    // One AdminDown packet first (RFC 5880 §6.8.16), so that the peer does not
                    // take the silence that follows for a path failure.
                    s.feed(ip, Input::AdminDown(true)).await;
                    if let Some(p) = s.peers.remove(&ip) {
                        s.by_discr.remove(&p.session.local_discriminator());
                    }
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
            },
            () = sleep_until(deadline) => {
                let now = tokio::time::Instant::now().into_std();
                let due: Vec<IpAddr> = s
                    .peers
                    .iter()
                    .filter(|(_, p)| p.session.poll_timeout().is_some_and(|t| t <= now))
                    .map(|(ip, _)| *ip)
                    .collect();
                for ip in due {
                    s.feed(ip, Input::Timer).await;
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
