//! The data path: listeners, member choice and upstream sockets shared by the TCP and UDP
//! proxies.
//!
//! Member choice order: a live persistence record (whose member still takes persisted
//! connections), else the pool's method over the members that take new connections.
//!
//! Nothing here may block: sockets are non-blocking and every wait is bounded.

pub mod mirrored;
pub mod relay;
pub mod tcp;
pub mod udp;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use socket2::{Domain, Protocol as SockProto, SockAddr, Socket, Type};

use crate::daemon::Shared;
use crate::select::stable_hash;
use crate::state::{MemberState, VsState};
use crate::tables::{now_ms, persist_key, plugin_key, PersistRecord};

/// Turns an integer socket option on.
fn set_flag(s: &impl AsRawFd, level: libc::c_int, opt: libc::c_int) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a valid fd and a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets IP_FREEBIND / IPV6_FREEBIND: a virtual server may listen on its VIP before the address
/// is configured on an interface (it moves with traffic groups).
pub(crate) fn set_freebind(s: &Socket, addr: &SocketAddr) -> io::Result<()> {
    if addr.is_ipv4() {
        set_flag(s, libc::IPPROTO_IP, libc::IP_FREEBIND)
    } else {
        set_flag(s, libc::IPPROTO_IPV6, libc::IPV6_FREEBIND)
    }
}

/// Sets IP_TRANSPARENT / IPV6_TRANSPARENT (needs CAP_NET_ADMIN): a socket may bind and
/// connect from an address that is not local yet (a rebuilt flow's SNAT address, before its
/// floating address arrives; IP_FREEBIND allows the bind but not the connect).
pub(crate) fn set_transparent(s: &Socket, addr: &SocketAddr) -> io::Result<()> {
    if addr.is_ipv4() {
        set_flag(s, libc::IPPROTO_IP, libc::IP_TRANSPARENT)
    } else {
        set_flag(s, libc::IPPROTO_IPV6, libc::IPV6_TRANSPARENT)
    }
}

/// Sets IP_BIND_ADDRESS_NO_PORT: binding a source address before connect takes no ephemeral
/// port of its own (the port is chosen at connect, per destination), so many connections can
/// share one source address. Callers treat failure (older kernels) as harmless.
pub(crate) fn bind_address_no_port(s: &impl AsRawFd) -> io::Result<()> {
    set_flag(s, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT)
}

/// A TCP listener on `addr` with SO_REUSEPORT (one per worker spreads accepts over the workers'
/// queues in the kernel) and IP_FREEBIND. Returned as a std listener: it is registered with the
/// runtime of the worker that will accept on it.
pub fn tcp_listener(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(SockProto::TCP),
    )?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    set_freebind(&s, &addr)?;
    if addr.is_ipv4() {
        // Accepted sockets remember the interface their SYN came in on (see `ingress_ifindex`).
        set_flag(&s, libc::IPPROTO_IP, libc::IP_PKTINFO)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    // Accepted sockets inherit TCP_NODELAY from the listener (no setsockopt per connection).
    s.set_nodelay(true)?;
    s.listen(backlog)?;
    Ok(s.into())
}

/// The interface an accepted IPv4 TCP connection came in on: Linux keeps the ingress
/// interface of the SYN and, with IP_PKTINFO set on the listener, returns it as an IP_PKTINFO
/// control message from `getsockopt(IP_PKTOPTIONS)` (ip(7)). None for IPv6 or on any failure.
pub fn ingress_ifindex(s: &impl AsRawFd) -> Option<u32> {
    // Room for a few control messages; only IP_PKTINFO is asked for.
    let mut buf = [0u64; 16];
    let mut len = std::mem::size_of_val(&buf) as libc::socklen_t;
    // SAFETY: buf is writable for `len` bytes and outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_PKTOPTIONS,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: a msghdr over the bytes the kernel wrote; CMSG_* only read within msg_controllen.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_control = buf.as_mut_ptr().cast();
        msg.msg_controllen = len as _;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_PKTINFO {
                let info: libc::in_pktinfo = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return u32::try_from(info.ipi_ifindex).ok().filter(|i| *i > 0);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    None
}

/// A UDP socket bound to `addr` (IP_FREEBIND), non-blocking.
pub fn udp_socket(addr: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(SockProto::UDP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    set_freebind(&s, &addr)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(s.into())
}

/// A non-blocking socket toward `member`, bound to `source` (port chosen at connect time with
/// IP_BIND_ADDRESS_NO_PORT, so many connections can share one SNAT address) when given.
pub fn upstream_socket(member: SocketAddr, source: Option<IpAddr>, ty: Type) -> io::Result<Socket> {
    let proto = if ty == Type::STREAM {
        SockProto::TCP
    } else {
        SockProto::UDP
    };
    // SOCK_NONBLOCK at creation: one syscall instead of socket + two fcntl.
    let s = Socket::new(Domain::for_address(member), ty.nonblocking(), Some(proto))?;
    if let Some(src) = source {
        let local = SocketAddr::new(src, 0);
        set_freebind(&s, &local)?;
        if ty == Type::STREAM {
            let _ = bind_address_no_port(&s);
        }
        s.bind(&SockAddr::from(local))?;
    }
    Ok(s)
}

/// Why no member could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoMember {
    /// No member of the pool takes new connections.
    NoneAvailable,
    /// Every member that does was already tried for this connection.
    AllTried,
}

/// The member chosen for a connection.
#[derive(Debug, Clone)]
pub struct Choice {
    /// Index into the pool's members.
    pub index: usize,
    pub member: Arc<MemberState>,
    /// Chosen by a persistence record.
    pub persisted: bool,
}

/// What a persistence plugin said about a connection or datagram.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hint {
    /// The plugin's key (persist on it).
    pub key: Option<Vec<u8>>,
    /// A member the plugin names (an RDP routing token).
    pub member: Option<SocketAddr>,
}

impl From<crate::plugins::Decision> for Hint {
    fn from(d: crate::plugins::Decision) -> Hint {
        use crate::plugins::Decision;
        match d {
            Decision::Key(k) => Hint {
                key: Some(k),
                member: None,
            },
            Decision::Member(m) => Hint {
                key: None,
                member: Some(m),
            },
            Decision::NeedMore(_) | Decision::NoKey => Hint::default(),
        }
    }
}

/// The persistence record (scope, key) a connection uses: the plugin's key for plugin-backed
/// profiles (or the client's address with `fallback = "source-address"`), the masked address
/// otherwise; None when there is none.
fn record_key(
    vs: &VsState,
    client: SocketAddr,
    vip: SocketAddr,
    hint: &Hint,
) -> Option<(String, String)> {
    let (_, profile) = vs.persistence.as_ref()?;
    if profile.kind.default_plugin().is_none() {
        return Some(persist_key(profile, &vs.name, client.ip(), vip.ip()));
    }
    match &hint.key {
        Some(k) => Some(plugin_key(profile, &vs.name, k)),
        None => profile
            .fallback
            .map(|_| persist_key(profile, &vs.name, client.ip(), vip.ip())),
    }
}

/// Chooses a member for a new connection from `client` to `vip` on `vs`, skipping the member
/// indices in `tried`: the member a plugin names (when the pool has it available), a live
/// persistence record (or, with `consistent_hash`, rendezvous hashing of the plugin's key over
/// the available members), else the pool's method. `ingress` is the interface the connection
/// came in on, when MAC masquerade attribution wants it (it names the traffic group a
/// persistence record belongs to).
pub fn choose(
    shared: &Shared,
    vs: &VsState,
    (client, vip, ingress): (SocketAddr, SocketAddr, Option<u32>),
    tried: &[usize],
    hint: &Hint,
) -> Result<Choice, NoMember> {
    let pool = &vs.pool;
    if let Some((name, profile)) = &vs.persistence {
        if let Some(i) = hint.member.and_then(|m| pool.position(m)) {
            if !tried.contains(&i) && pool.members[i].available() {
                return Ok(Choice {
                    index: i,
                    member: pool.members[i].clone(),
                    persisted: false,
                });
            }
        }
        if profile.consistent_hash {
            if let Some(k) = &hint.key {
                let best = (0..pool.members.len())
                    .filter(|i| !tried.contains(i) && pool.members[*i].available())
                    .max_by_key(|i| {
                        let mut b = k.clone();
                        b.extend_from_slice(pool.members[*i].addr.to_string().as_bytes());
                        stable_hash(&b)
                    });
                if let Some(i) = best {
                    return Ok(Choice {
                        index: i,
                        member: pool.members[i].clone(),
                        persisted: true,
                    });
                }
            }
        }
        if let Some((scope, key)) = record_key(vs, client, vip, hint) {
            let found = shared.persist.lookup(
                (name, &scope, &key),
                profile.timeout,
                now_ms(),
                &shared.ids,
                |p, m| {
                    p == pool.name
                        && pool.position(m).is_some_and(|i| {
                            !tried.contains(&i) && pool.members[i].persist_usable()
                        })
                },
                |r, previous| {
                    if let Some(m) = shared.mirror.get() {
                        let tg = vs.attribution.get().resolve(ingress).0;
                        m.used(r, previous, profile, tg.as_deref());
                    }
                },
            );
            if let Some(i) = found.and_then(|m| pool.position(m)) {
                return Ok(Choice {
                    index: i,
                    member: pool.members[i].clone(),
                    persisted: true,
                });
            }
        }
    }
    match pool.pick(client.ip(), tried) {
        Some(i) => Ok(Choice {
            index: i,
            member: pool.members[i].clone(),
            persisted: false,
        }),
        None if pool.available() == 0 => Err(NoMember::NoneAvailable),
        None => Err(NoMember::AllTried),
    }
}

/// Records where `choice` sent the connection, for the persistence profile of `vs`.
pub fn remember(
    shared: &Shared,
    vs: &VsState,
    (client, vip, ingress): (SocketAddr, SocketAddr, Option<u32>),
    choice: &Choice,
    hint: &Hint,
) {
    if choice.persisted {
        return; // lookup already refreshed it (or consistent hashing keeps no record)
    }
    if let Some(key) = record_key(vs, client, vip, hint) {
        store(shared, vs, key, choice.member.addr, ingress);
    }
}

/// A key the member side taught the plugin (a TLS session id from the ServerHello): later
/// connections with that key go to `member`.
pub fn learn(shared: &Shared, vs: &VsState, key: &[u8], member: SocketAddr, ingress: Option<u32>) {
    let Some((_, profile)) = &vs.persistence else {
        return;
    };
    if profile.consistent_hash {
        return;
    }
    store(
        shared,
        vs,
        plugin_key(profile, &vs.name, key),
        member,
        ingress,
    );
}

/// Stores a record in the traffic group the connection belongs to (the one its SNAT source
/// says: with MAC masquerade, the one whose interface it came in on).
fn store(
    shared: &Shared,
    vs: &VsState,
    (scope, key): (String, String),
    member: SocketAddr,
    ingress: Option<u32>,
) {
    let Some((name, profile)) = &vs.persistence else {
        return;
    };
    let record = PersistRecord {
        profile: name.clone(),
        scope,
        key,
        pool: vs.pool.name.clone(),
        member,
        virtual_server: vs.name.clone(),
        traffic_group: vs
            .attribution
            .get()
            .resolve(ingress)
            .0
            .as_deref()
            .map(str::to_string),
        update_id: shared.ids.next(),
        expiry_ms: now_ms() + profile.timeout.as_millis() as u64,
        mirrored: false,
    };
    if profile.mirror {
        if let Some(m) = shared.mirror.get() {
            m.offer_persist(&record);
        }
    }
    shared.persist.insert(record);
}
