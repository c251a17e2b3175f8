//! lbd's system helpers: the clock, socket options and the sockets the data path opens, and
//! threads with a runtime of their own. Every `unsafe` call into libc for sockets lives here
//! or next to the one protocol that needs it (`mirror::repair`, `cluster::netaddr`).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol as SockProto, SockAddr, Socket, Type};

/// Milliseconds since the Unix epoch (the clock records and channels carry: absolute,
/// comparable between devices whose clocks are synchronized).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts a thread named `name` with a single-threaded tokio runtime (all drivers on) and
/// returns the runtime's handle once it is built; `run` then owns the runtime on that thread
/// (typically `block_on` of a future that ends when the thread should).
pub fn runtime_thread(
    name: String,
    run: impl FnOnce(tokio::runtime::Runtime) + Send + 'static,
) -> io::Result<tokio::runtime::Handle> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name(name).spawn(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => {
                let _ = tx.send(Ok(rt.handle().clone()));
                run(rt);
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    })?;
    rx.recv()
        .map_err(|_| io::Error::other("the runtime thread ended at start"))?
}

/// `setsockopt(2)` with a value of type `T` (an integer or a `repr(C)` struct the option
/// takes).
pub fn setsockopt<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live, initialised `T` of exactly the length passed; the
    // kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Turns an integer socket option on.
pub fn set_flag(s: &impl AsRawFd, level: libc::c_int, opt: libc::c_int) -> io::Result<()> {
    setsockopt(s.as_raw_fd(), level, opt, &(1 as libc::c_int))
}

/// Sets IP_FREEBIND / IPV6_FREEBIND: a virtual server may listen on its VIP before the address
/// is configured on an interface (it moves with traffic groups).
pub fn set_freebind(s: &Socket, addr: &SocketAddr) -> io::Result<()> {
    if addr.is_ipv4() {
        set_flag(s, libc::IPPROTO_IP, libc::IP_FREEBIND)
    } else {
        set_flag(s, libc::IPPROTO_IPV6, libc::IPV6_FREEBIND)
    }
}

/// Sets IP_TRANSPARENT / IPV6_TRANSPARENT (needs CAP_NET_ADMIN): a socket may bind and
/// connect from an address that is not local yet (a rebuilt flow's SNAT address, before its
/// floating address arrives; IP_FREEBIND allows the bind but not the connect).
pub fn set_transparent(s: &Socket, addr: &SocketAddr) -> io::Result<()> {
    if addr.is_ipv4() {
        set_flag(s, libc::IPPROTO_IP, libc::IP_TRANSPARENT)
    } else {
        set_flag(s, libc::IPPROTO_IPV6, libc::IPV6_TRANSPARENT)
    }
}

/// Sets IP_BIND_ADDRESS_NO_PORT: binding a source address before connect takes no ephemeral
/// port of its own (the port is chosen at connect, per destination), so many connections can
/// share one source address. Callers treat failure (older kernels) as harmless.
pub fn bind_address_no_port(s: &impl AsRawFd) -> io::Result<()> {
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
    tokio::net::UdpSocket::from_std(udp_socket_std(addr)?)
}

/// The socket of [`udp_socket`], not yet registered with a runtime (`lbd --check` binds it
/// and drops it).
pub fn udp_socket_std(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(SockProto::UDP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    set_freebind(&s, &addr)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
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

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (as far as allowed); returns the soft
/// limit in force afterwards.
pub fn raise_nofile() -> io::Result<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if r.rlim_cur < r.rlim_max {
        let want = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            r.rlim_cur = r.rlim_max;
        }
    }
    Ok(r.rlim_cur)
}

/// Descriptors this process has open now (entries of /proc/self/fd, less the one reading it).
pub fn open_descriptors() -> io::Result<u64> {
    Ok((std::fs::read_dir("/proc/self/fd")?.count() as u64).saturating_sub(1))
}

/// Errors that say this host is short of something (descriptors, buffers, memory, local ports
/// or addresses), not that the peer is not there: they never count against a member nor make a
/// monitor's verdict.
pub fn is_local_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::EADDRNOTAVAIL | libc::ENOMEM)
    )
}
