//! Socket options bgpd needs that the std/tokio types do not expose: TCP MD5 signatures
//! (RFC 2385, Linux `TCP_MD5SIG`), TTL for eBGP, TCP_USER_TIMEOUT (RFC 5482) so a dead peer
//! cannot hang a write for minutes.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// `struct tcp_md5sig` from `<linux/tcp.h>` (not in the libc crate).
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; 80],
}

/// Installs (or with `None` removes) the MD5 key for `peer` on a socket — a listener (for
/// connections from that peer) or a socket about to connect.
pub fn set_md5<S: AsRawFd>(sock: &S, peer: IpAddr, key: Option<&[u8]>) -> io::Result<()> {
    let key = key.unwrap_or(&[]);
    if key.len() > 80 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "md5 key longer than 80 bytes",
        ));
    }
    let sa = SockAddr::from(SocketAddr::new(peer, 0));
    // SAFETY: all-zero is a valid bit pattern for this plain-data struct.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    let len = (sa.len() as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: copies `len` bytes of a valid sockaddr into sockaddr_storage, which is larger.
    unsafe {
        std::ptr::copy_nonoverlapping(
            sa.as_ptr() as *const u8,
            &mut sig.addr as *mut libc::sockaddr_storage as *mut u8,
            len,
        )
    };
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: passes a pointer to a properly sized, initialised struct the kernel reads only.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            &sig as *const TcpMd5Sig as *const libc::c_void,
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What an outbound BGP connection needs.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub remote: SocketAddr,
    pub local: Option<IpAddr>,
    pub md5: Option<Vec<u8>>,
    pub ttl: u32,
    /// GTSM (RFC 5082): the lowest TTL (hop limit) accepted on the connection.
    pub min_ttl: Option<u32>,
    pub user_timeout: Option<Duration>,
}

/// A socket ready to connect with every option set.
pub fn outbound_socket(o: &ConnectOptions) -> io::Result<tokio::net::TcpSocket> {
    let domain = if o.remote.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    s.set_nodelay(true)?;
    if let Some(key) = &o.md5 {
        set_md5(&s, o.remote.ip(), Some(key))?;
    }
    apply_ttl(&s, o.remote.is_ipv4(), o.ttl)?;
    if let Some(min) = o.min_ttl {
        set_min_ttl(&s, o.remote.is_ipv4(), min)?;
    }
    if let Some(t) = o.user_timeout {
        s.set_tcp_user_timeout(Some(t))?;
    }
    if let Some(l) = o.local {
        s.bind(&SockAddr::from(SocketAddr::new(l, 0)))?;
    }
    let std: std::net::TcpStream = s.into();
    Ok(tokio::net::TcpSocket::from_std_stream(std))
}

fn apply_ttl(s: &Socket, v4: bool, ttl: u32) -> io::Result<()> {
    if v4 {
        s.set_ttl(ttl)
    } else {
        s.set_unicast_hops_v6(ttl)
    }
}

/// RFC 5082: segments arriving with a TTL (hop limit) below `min` are dropped by the kernel
/// (IP_MINTTL, IPV6_MINHOPCOUNT).
fn set_min_ttl(s: &Socket, v4: bool, min: u32) -> io::Result<()> {
    let v = min as libc::c_int;
    let (level, name) = if v4 {
        (libc::IPPROTO_IP, libc::IP_MINTTL)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT)
    };
    // SAFETY: setsockopt on a valid descriptor with a pointer to a c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            name,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// GTSM (RFC 5082) on a listener: its SYN-ACKs leave with TTL (hop limit) 255, before the
/// accepted socket is tuned, so a peer that requires 255 completes the handshake.
pub fn gtsm_listener(l: &tokio::net::TcpListener) -> io::Result<()> {
    let r = socket2::SockRef::from(l);
    let v4 = l.local_addr().map(|a| a.is_ipv4()).unwrap_or(true);
    apply_ttl(&r, v4, 255)
}

/// Options for an accepted connection (TTL, GTSM and user timeout are per socket).
pub fn tune_accepted(
    s: &tokio::net::TcpStream,
    ttl: u32,
    min_ttl: Option<u32>,
    user_timeout: Option<Duration>,
) -> io::Result<()> {
    let r = socket2::SockRef::from(s);
    r.set_nodelay(true)?;
    let v4 = s.peer_addr().map(|a| a.is_ipv4()).unwrap_or(true);
    apply_ttl(&r, v4, ttl)?;
    if let Some(min) = min_ttl {
        set_min_ttl(&r, v4, min)?;
    }
    if let Some(t) = user_timeout {
        r.set_tcp_user_timeout(Some(t))?;
    }
    Ok(())
}

/// A listening socket with SO_REUSEADDR (and IPV6_V6ONLY for IPv6, so `0.0.0.0` and `::` can
/// both be bound).
pub fn listener(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::from_std(listener_std(addr)?)
}

/// The socket of [`listener`], not yet registered with a runtime (`bgpd --check` binds it and
/// drops it).
pub fn listener_std(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&SockAddr::from(addr))?;
    s.listen(128)?;
    Ok(s.into())
}
