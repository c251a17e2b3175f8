//! TCP connection repair: snapshot a live, quiescent TCP socket into a [`TcpRepair`] and rebuild
//! an equivalent socket from one, on this device or another (docs/architecture.md, "Mirroring", TCP connection
//! mirroring).
//!
//! This is the only place in lbd that uses the kernel's `TCP_REPAIR` socket options
//! (include/uapi/linux/tcp.h; implemented in net/ipv4/tcp.c: `do_tcp_setsockopt`,
//! `do_tcp_getsockopt`, `tcp_repair_options_est`, `tcp_repair_set_window`; the sequence is
//! CRIU's, criu.org/TCP_connection and criu/soccr/soccr.c). They need `CAP_NET_ADMIN`.
//!
//! - [`snapshot`]: for an ESTABLISHED socket with empty send and receive queues, enter repair
//!   mode, read the queue sequence numbers (`TCP_REPAIR_QUEUE` + `TCP_QUEUE_SEQ`), the window
//!   state (`TCP_REPAIR_WINDOW`), the MSS clamp (`TCP_MAXSEG` in repair mode), the negotiated
//!   options (`TCP_INFO`) and the timestamp clock (`TCP_TIMESTAMP`), and leave repair mode with
//!   `TCP_REPAIR_OFF_NO_WP`: the live socket sends nothing and carries on.
//! - [`restore`]: the CRIU sequence — socket, `SO_REUSEADDR`, `TCP_REPAIR` on, `IP_TRANSPARENT`
//!   (the floating address is not local yet), bind, the queue sequence numbers, `connect` (no SYN in repair
//!   mode: the socket goes straight to ESTABLISHED), `TCP_REPAIR_OPTIONS` (only the options that
//!   were negotiated), `TCP_REPAIR_WINDOW`, `TCP_TIMESTAMP`, then repair off without a window
//!   probe. The new owner does this *before* it takes the floating addresses, so the peers' next
//!   segments find a socket instead of an RST.
//! - [`drop_silently`]: close a socket in repair mode, which sends neither FIN nor RST (the old
//!   owner's way to let go of a connection that now lives elsewhere).
//! - [`set_user_timeout`] and [`set_keepalive`]: bound how long a restored connection that does
//!   not fit its peers can linger; [`send_window_probe`] and [`last_ack_age`]: check, once the
//!   device owns the address, that the peer accepts the restored socket's send sequence.
//!
//! What survives: connections that were quiescent when snapshotted (nothing unacknowledged,
//! nothing unread, nothing buffered in lbd) and have not moved since — sequence numbers,
//! windows, MSS, window scaling, SACK-permitted and timestamps (the clock continues from the
//! snapshot's value; the receiver should add the time elapsed since the snapshot to `ts_val`,
//! or the peer's PAWS check drops the restored socket's segments until the clock catches up
//! with the last segment the old owner sent). Not restored: congestion state (the restored
//! socket starts with an initial window), RTT estimates, SACK scoreboards, the peer's last
//! timestamp (`ts_recent`; the first segment from the peer sets it), and socket options other
//! than the ones above — the caller sets those again.
//!
//! What does not survive: bytes the old owner's kernel acknowledged (or sent and had
//! acknowledged) after the snapshot. The sequence numbers then disagree, and nothing corrupt is
//! delivered, but the connection stalls:
//! - receive side behind the peer (it sent bytes the old kernel acked): the peer's next
//!   segments land beyond `rcv_nxt`, out of order, and are never delivered, because the peer
//!   never resends what was acknowledged; our ACKs are older than the peer's `snd_una` and it
//!   ignores them.
//! - send side behind the peer (the old owner sent bytes the peer acked): every segment from the
//!   peer acknowledges data this socket "has not sent" and the kernel discards it whole (RFC 793
//!   §3.9), data included. Writing more than the gap to such a socket would make the peer
//!   accept the tail of the write at the wrong offset; lbd never does, because in a full proxy
//!   both sockets of a connection are snapshotted at one quiescent moment: bytes the old owner
//!   wrote to one socket after the snapshot came from the other, whose receive side then has
//!   the same gap, so there is nothing to relay.
//!
//! Writing to a socket whose send side is behind is the one way to deliver wrong bytes (checked
//! on this kernel: after a 1500-byte gap, a 3000-byte write reached the peer's application as
//! its last 1500 bytes), and it can be detected before writing: a window probe's answer is
//! discarded (see [`last_ack_age`]). Resetting such a socket does not help the peer (its RST
//! carries a sequence number below the peer's window and is dropped, RFC 5961 §3), so the peer
//! is left to its own timeouts.
//!
//! Such a stalled connection is ended by keepalive on the socket whose send side is behind: its
//! probes are answered with ACKs it discards, so with [`set_keepalive`] and
//! [`set_user_timeout`] the kernel aborts it (`ETIMEDOUT`) within idle + user timeout, and lbd
//! closes the pair. Without keepalive an idle stalled socket has nothing unacknowledged, so
//! `TCP_USER_TIMEOUT` alone never fires.
//!
//! Kernel behaviour this code depends on (checked on Linux 6.18):
//! - `TCP_QUEUE_SEQ` can be set only while the socket is CLOSE (before connect);
//!   `TCP_REPAIR_OPTIONS` only once it is ESTABLISHED (after connect); `TCP_REPAIR_WINDOW`
//!   checks `snd_wl1` and `rcv_wup` against `rcv_nxt`, so it comes after connect too.
//! - Entering repair mode sets `sk_reuse = SK_FORCE_REUSE` (bind ignores conflicts, also with
//!   a listener on the port); a later `SO_REUSEADDR` downgrades that to ordinary reuse, and
//!   bind then fails with `EADDRINUSE` next to a listener — so `SO_REUSEADDR` goes first.
//! - Leaving repair mode sets `sk_reuse = SK_NO_REUSE`, clearing `SO_REUSEADDR` on the live
//!   socket (an accepted socket inherits it from its listener); [`snapshot`] sets it again.
//! - Repair mode does not stop the receive path: [`snapshot`] checks the queues and byte
//!   counters again afterwards.
//! - `IP_FREEBIND` lets a repair socket bind an address that is not local, but its connect
//!   then fails (`ENETUNREACH`): only `IP_TRANSPARENT` lets the route lookup use a foreign
//!   source address.

use std::io;
use std::mem;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use libc::{c_int, c_void, socklen_t};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::proto::TcpRepair;

// Values of `TCP_REPAIR` (linux/tcp.h); libc has only the option names.
const TCP_REPAIR_ON: c_int = 1;
const TCP_REPAIR_OFF: c_int = 0;
/// Leave repair mode without sending a window probe (linux/tcp.h, since 4.19).
const TCP_REPAIR_OFF_NO_WP: c_int = -1;
// Values of `TCP_REPAIR_QUEUE` (linux/tcp.h: TCP_NO_QUEUE, TCP_RECV_QUEUE, TCP_SEND_QUEUE).
const TCP_NO_QUEUE: c_int = 0;
const TCP_RECV_QUEUE: c_int = 1;
const TCP_SEND_QUEUE: c_int = 2;
// Option codes for `TCP_REPAIR_OPTIONS` (include/net/tcp.h, the TCP option kinds of RFC 9293,
// RFC 7323 and RFC 2018).
const TCPOPT_MAXSEG: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;
// `tcp_info.tcpi_options` bits (linux/tcp.h).
const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;
/// `TCP_ESTABLISHED` of the kernel's TCP states (include/net/tcp_states.h).
const TCP_ESTABLISHED: u8 = 1;

/// `struct tcp_repair_opt` (linux/tcp.h).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct TcpRepairOpt {
    opt_code: u32,
    opt_val: u32,
}

/// `struct tcp_repair_window` (linux/tcp.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct TcpRepairWindow {
    snd_wl1: u32,
    snd_wnd: u32,
    max_window: u32,
    rcv_wnd: u32,
    rcv_wup: u32,
}

/// Why a snapshot, restore or repair-mode operation failed: the step and the errno.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("socket is not established (tcp state {0})")]
    NotEstablished(u8),
    #[error("socket is not quiescent: {unacked} bytes unacknowledged, {unread} bytes unread")]
    NotQuiescent { unacked: u32, unread: u32 },
    #[error("{step}: {source}")]
    Os {
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

impl RepairError {
    fn last(step: &'static str) -> RepairError {
        RepairError::Os {
            step,
            source: io::Error::last_os_error(),
        }
    }

    /// The errno of a failed system call, if that is what failed.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            RepairError::Os { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

fn setopt<T>(
    fd: RawFd,
    level: c_int,
    name: c_int,
    val: &T,
    step: &'static str,
) -> Result<(), RepairError> {
    crate::sys::setsockopt(fd, level, name, val).map_err(|source| RepairError::Os { step, source })
}

fn set_int(
    fd: RawFd,
    level: c_int,
    name: c_int,
    val: c_int,
    step: &'static str,
) -> Result<(), RepairError> {
    setopt(fd, level, name, &val, step)
}

/// getsockopt into a `T` that is plain old data (every bit pattern valid), starting zeroed; a
/// kernel that returns less than `size_of::<T>()` leaves the rest zero.
fn getopt<T: Copy>(
    fd: RawFd,
    level: c_int,
    name: c_int,
    step: &'static str,
) -> Result<T, RepairError> {
    // SAFETY: only instantiated with integer types and `repr(C)` structs of integers, for
    // which all-zero is a valid value.
    let mut val: T = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<T>() as socklen_t;
    // SAFETY: `val` is a writable `T` and `len` its size; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut val as *mut T).cast::<c_void>(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(val)
    } else {
        Err(RepairError::last(step))
    }
}

fn ioctl_int(fd: RawFd, request: libc::Ioctl, step: &'static str) -> Result<u32, RepairError> {
    let mut n: c_int = 0;
    // SAFETY: SIOCINQ and SIOCOUTQ write one int through the pointer, which is valid.
    let rc = unsafe { libc::ioctl(fd, request, &mut n as *mut c_int) };
    if rc == 0 {
        Ok(n as u32)
    } else {
        Err(RepairError::last(step))
    }
}

/// Bytes not yet acknowledged by the peer (SIOCOUTQ, linux/sockios.h) and bytes received but
/// not yet read (SIOCINQ).
fn queues(fd: RawFd) -> Result<(u32, u32), RepairError> {
    Ok((
        ioctl_int(fd, libc::TIOCOUTQ, "ioctl SIOCOUTQ")?,
        ioctl_int(fd, libc::FIONREAD, "ioctl SIOCINQ")?,
    ))
}

fn queue_seq(fd: RawFd, queue: c_int, step: &'static str) -> Result<u32, RepairError> {
    set_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR_QUEUE,
        queue,
        "setsockopt TCP_REPAIR_QUEUE",
    )?;
    getopt::<u32>(fd, libc::IPPROTO_TCP, libc::TCP_QUEUE_SEQ, step)
}

/// The snapshot's readings, taken in repair mode.
fn read_repair_state(fd: RawFd, info: &libc::tcp_info) -> Result<TcpRepair, RepairError> {
    let snd_seq = queue_seq(fd, TCP_SEND_QUEUE, "getsockopt TCP_QUEUE_SEQ (send queue)")?;
    let rcv_seq = queue_seq(
        fd,
        TCP_RECV_QUEUE,
        "getsockopt TCP_QUEUE_SEQ (receive queue)",
    )?;
    set_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR_QUEUE,
        TCP_NO_QUEUE,
        "setsockopt TCP_REPAIR_QUEUE",
    )?;
    let window: TcpRepairWindow = getopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR_WINDOW,
        "getsockopt TCP_REPAIR_WINDOW",
    )?;
    // In repair mode TCP_MAXSEG reports the MSS clamp (rx_opt.mss_clamp), which is what
    // TCPOPT_MAXSEG restores.
    let mss: c_int = getopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_MAXSEG,
        "getsockopt TCP_MAXSEG",
    )?;
    let ts_val: u32 = getopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_TIMESTAMP,
        "getsockopt TCP_TIMESTAMP",
    )?;
    let wscale_ok = info.tcpi_options & TCPI_OPT_WSCALE != 0;
    let (snd_wscale, rcv_wscale) = if wscale_ok {
        wscales(info.tcpi_snd_rcv_wscale)
    } else {
        (0, 0)
    };
    Ok(TcpRepair {
        snd_seq,
        rcv_seq,
        snd_wnd: window.snd_wnd,
        rcv_wnd: window.rcv_wnd,
        mss: u16::try_from(mss).unwrap_or(u16::MAX),
        snd_wscale,
        rcv_wscale,
        sack: info.tcpi_options & TCPI_OPT_SACK != 0,
        timestamps: info.tcpi_options & TCPI_OPT_TIMESTAMPS != 0,
        ts_val,
        snd_wl1: window.snd_wl1,
        max_window: window.max_window,
        rcv_wup: window.rcv_wup,
    })
}

/// Splits `tcpi_snd_wscale : 4, tcpi_rcv_wscale : 4` (linux/tcp.h); C bit-fields are allocated
/// from the low bits on little-endian targets and from the high bits on big-endian ones.
fn wscales(byte: u8) -> (u8, u8) {
    if cfg!(target_endian = "little") {
        (byte & 0x0f, byte >> 4)
    } else {
        (byte >> 4, byte & 0x0f)
    }
}

/// Whether a window-scale shift was negotiated is not a field of [`TcpRepair`]: a connection
/// without the option has both shifts 0, and restoring "scale 0 on both sides" is the same as
/// not scaling (RFC 7323 §2.2), so restore always sends TCPOPT_WINDOW when either is nonzero.
fn wscale_negotiated(state: &TcpRepair) -> bool {
    state.snd_wscale != 0 || state.rcv_wscale != 0
}

/// Snapshots the repair state of an ESTABLISHED TCP socket whose queues are empty (nothing
/// unacknowledged, nothing unread); [`RepairError::NotQuiescent`] otherwise. The socket keeps
/// working: it is in repair mode only for the readings and leaves it without sending anything
/// (`TCP_REPAIR_OFF_NO_WP`). Leaving repair mode clears `SO_REUSEADDR` in the kernel
/// (`sk_reuse = SK_NO_REUSE`); it is set again if it was set.
pub fn snapshot(fd: &impl AsRawFd) -> Result<TcpRepair, RepairError> {
    let fd = fd.as_raw_fd();
    let info: libc::tcp_info =
        getopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, "getsockopt TCP_INFO")?;
    if info.tcpi_state != TCP_ESTABLISHED {
        return Err(RepairError::NotEstablished(info.tcpi_state));
    }
    let (unacked, unread) = queues(fd)?;
    if unacked != 0 || unread != 0 {
        return Err(RepairError::NotQuiescent { unacked, unread });
    }
    let reuse: c_int = getopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_REUSEADDR,
        "getsockopt SO_REUSEADDR",
    )?;
    set_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR,
        TCP_REPAIR_ON,
        "setsockopt TCP_REPAIR on",
    )?;
    let state = read_repair_state(fd, &info);
    // Leave repair mode whatever happened: the socket is live.
    let off = set_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR,
        TCP_REPAIR_OFF_NO_WP,
        "setsockopt TCP_REPAIR off (no window probe)",
    );
    if reuse != 0 {
        set_int(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            1,
            "setsockopt SO_REUSEADDR",
        )?;
    }
    let state = state?;
    off?;
    // Repair mode does not stop the receive path: a segment that arrived while we read makes
    // the readings inconsistent. Check again; the sequence numbers only move with traffic.
    let (unacked, unread) = queues(fd)?;
    if unacked != 0 || unread != 0 {
        return Err(RepairError::NotQuiescent { unacked, unread });
    }
    let after: libc::tcp_info =
        getopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, "getsockopt TCP_INFO")?;
    if after.tcpi_bytes_acked != info.tcpi_bytes_acked
        || after.tcpi_bytes_received != info.tcpi_bytes_received
    {
        return Err(RepairError::NotQuiescent { unacked, unread });
    }
    Ok(state)
}

/// Sets the IP_TRANSPARENT-style option that lets `sock` bind (and send from) an address that
/// is not local yet.
fn allow_nonlocal(fd: RawFd, v6: bool) -> Result<(), RepairError> {
    let (level, transparent, freebind) = if v6 {
        (libc::SOL_IPV6, libc::IPV6_TRANSPARENT, libc::IPV6_FREEBIND)
    } else {
        (libc::SOL_IP, libc::IP_TRANSPARENT, libc::IP_FREEBIND)
    };
    match set_int(fd, level, transparent, 1, "setsockopt IP_TRANSPARENT") {
        Ok(()) => Ok(()),
        // IP_TRANSPARENT needs CAP_NET_ADMIN or CAP_NET_RAW. IP_FREEBIND only lets the bind
        // succeed: the route lookup in connect still wants a local source address unless the
        // socket is transparent (FLOWI_FLAG_ANYSRC; ENETUNREACH otherwise), so this fallback
        // restores only once the address is local. (TCP_REPAIR itself needs CAP_NET_ADMIN, so
        // in practice the first option succeeds.)
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            set_int(fd, level, freebind, 1, "setsockopt IP_FREEBIND")
        }
        Err(e) => Err(e),
    }
}

/// Rebuilds an ESTABLISHED socket `local` ↔ `remote` from `state`, without sending anything,
/// and returns it nonblocking (ready for `tokio::net::TcpStream::from_std`). `local` need not
/// be a local address yet (IP_TRANSPARENT): restore before taking the floating addresses.
/// The 4-tuple must be free (the old socket closed or [`drop_silently`]-ed); a listener on
/// `local` is no obstacle (repair mode forces port reuse). `state.ts_val` is used as it is: a
/// caller restoring a snapshot taken a while ago adds the milliseconds elapsed since first, so
/// the peer's PAWS check does not drop the restored socket's segments (module doc).
pub fn restore(
    state: &TcpRepair,
    local: SocketAddr,
    remote: SocketAddr,
) -> Result<TcpStream, RepairError> {
    let os = |step| move |source| RepairError::Os { step, source };
    let sock = Socket::new(
        Domain::for_address(local),
        Type::STREAM.cloexec(),
        Some(Protocol::TCP),
    )
    .map_err(os("socket"))?;
    let fd = sock.as_raw_fd();
    // SO_REUSEADDR before TCP_REPAIR: entering repair mode sets sk_reuse = SK_FORCE_REUSE (bind
    // ignores every conflict), and a later SO_REUSEADDR would overwrite that with plain reuse,
    // which conflicts with a listener on the same port.
    sock.set_reuse_address(true)
        .map_err(os("setsockopt SO_REUSEADDR"))?;
    set_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR,
        TCP_REPAIR_ON,
        "setsockopt TCP_REPAIR on",
    )?;
    allow_nonlocal(fd, local.is_ipv6())?;
    sock.bind(&SockAddr::from(local)).map_err(os("bind"))?;
    // The queue sequence numbers can only be set while the socket is CLOSE, before connect.
    set_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR_QUEUE,
        TCP_SEND_QUEUE,
        "setsockopt TCP_REPAIR_QUEUE",
    )?;
    setopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_QUEUE_SEQ,
        &state.snd_seq,
        "setsockopt TCP_QUEUE_SEQ (send queue)",
    )?;
    set_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR_QUEUE,
        TCP_RECV_QUEUE,
        "setsockopt TCP_REPAIR_QUEUE",
    )?;
    setopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_QUEUE_SEQ,
        &state.rcv_seq,
        "setsockopt TCP_QUEUE_SEQ (receive queue)",
    )?;
    set_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR_QUEUE,
        TCP_NO_QUEUE,
        "setsockopt TCP_REPAIR_QUEUE",
    )?;
    // In repair mode connect sends no SYN and the socket is ESTABLISHED at once.
    sock.connect(&SockAddr::from(remote))
        .map_err(os("connect"))?;
    let mut opts = Vec::with_capacity(4);
    if state.mss != 0 {
        opts.push(TcpRepairOpt {
            opt_code: TCPOPT_MAXSEG,
            opt_val: u32::from(state.mss),
        });
    }
    if wscale_negotiated(state) {
        opts.push(TcpRepairOpt {
            opt_code: TCPOPT_WINDOW,
            opt_val: u32::from(state.snd_wscale) | (u32::from(state.rcv_wscale) << 16),
        });
    }
    if state.sack {
        opts.push(TcpRepairOpt {
            opt_code: TCPOPT_SACK_PERM,
            opt_val: 0,
        });
    }
    if state.timestamps {
        opts.push(TcpRepairOpt {
            opt_code: TCPOPT_TIMESTAMP,
            opt_val: 0,
        });
    }
    // SAFETY: `opts` is a live array of `repr(C)` tcp_repair_opt of the length passed; the
    // kernel reads `len / sizeof(struct tcp_repair_opt)` entries.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_REPAIR_OPTIONS,
            opts.as_ptr().cast::<c_void>(),
            mem::size_of_val(opts.as_slice()) as socklen_t,
        )
    };
    if rc != 0 {
        return Err(RepairError::last("setsockopt TCP_REPAIR_OPTIONS"));
    }
    // After connect: the kernel checks snd_wl1 and rcv_wup against rcv_nxt.
    let window = TcpRepairWindow {
        snd_wl1: state.snd_wl1,
        snd_wnd: state.snd_wnd,
        max_window: state.max_window.max(state.snd_wnd),
        rcv_wnd: state.rcv_wnd,
        rcv_wup: state.rcv_wup,
    };
    setopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR_WINDOW,
        &window,
        "setsockopt TCP_REPAIR_WINDOW",
    )?;
    if state.timestamps {
        // Sets the socket's timestamp offset so its clock reads ts_val now and continues.
        setopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_TIMESTAMP,
            &state.ts_val,
            "setsockopt TCP_TIMESTAMP",
        )?;
    }
    // TCP_REPAIR_OFF would send a window probe (an ACK with an old sequence number) so the peer
    // answers at once. Not here: restore runs before this device owns `local`, so the probe
    // would leave with a source address the device does not have yet and the peer's answer
    // would go to the old owner (whose kernel, if it is alive, answers with RST and kills the
    // connection) or nowhere. Without the probe the connection resumes with the next segment
    // from either side, and an idle connection stays silent, as it was. Use
    // [`send_window_probe`] after taking the addresses to provoke an ACK.
    set_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR,
        TCP_REPAIR_OFF_NO_WP,
        "setsockopt TCP_REPAIR off (no window probe)",
    )?;
    sock.set_nonblocking(true).map_err(os("set O_NONBLOCK"))?;
    Ok(sock.into())
}

/// Sends a window probe on an ESTABLISHED socket (repair on, then `TCP_REPAIR_OFF`): an ACK
/// carrying `snd_una - 1`, which the peer must answer with an ACK. For a restored socket once
/// the device owns its address, so the peer and the switches hear from the new owner at once.
pub fn send_window_probe(fd: &impl AsRawFd) -> Result<(), RepairError> {
    let fd = fd.as_raw_fd();
    set_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR,
        TCP_REPAIR_ON,
        "setsockopt TCP_REPAIR on",
    )?;
    set_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR,
        TCP_REPAIR_OFF,
        "setsockopt TCP_REPAIR off",
    )
}

/// How long ago `fd` last accepted an acknowledgement from its peer (`tcpi_last_ack_recv`;
/// for a restored socket, counted from the restore). With [`send_window_probe`] this checks a
/// restored socket's send side: the peer must answer the probe, and the kernel accepts the
/// answer only if the peer has not acknowledged more than the snapshot says was sent — so if
/// the age is still at least the time waited a few round trips after the probe, the send side
/// is behind the peer and nothing may be written to the socket (see the module doc).
pub fn last_ack_age(fd: &impl AsRawFd) -> Result<Duration, RepairError> {
    let info: libc::tcp_info = getopt(
        fd.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_INFO,
        "getsockopt TCP_INFO",
    )?;
    Ok(Duration::from_millis(u64::from(info.tcpi_last_ack_recv)))
}

/// Closes `sock` without telling the peer: in repair mode `close` disconnects the socket
/// locally and sends neither FIN nor RST (`__tcp_close`, `tcp_disconnect`). For the old owner
/// of a connection that now lives elsewhere. If repair mode cannot be entered (no
/// `CAP_NET_ADMIN`, or a socket that is neither ESTABLISHED nor CLOSE), the error is returned
/// and the socket is closed the ordinary way.
pub fn drop_silently(sock: impl Into<OwnedFd>) -> Result<(), RepairError> {
    let fd: OwnedFd = sock.into();
    set_int(
        fd.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR,
        TCP_REPAIR_ON,
        "setsockopt TCP_REPAIR on",
    )?;
    drop(fd);
    Ok(())
}

/// Puts a live socket into repair mode so that its eventual `close` sends neither FIN nor RST
/// (for a socket owned by a task that closes it later; see [`drop_silently`]).
pub fn silence(fd: &impl AsRawFd) -> Result<(), RepairError> {
    set_int(
        fd.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR,
        TCP_REPAIR_ON,
        "setsockopt TCP_REPAIR on",
    )
}

/// Sets TCP_USER_TIMEOUT: the longest time transmitted data may stay unacknowledged (and,
/// with keepalive, keepalive probes unanswered) before the kernel aborts the connection with
/// `ETIMEDOUT` (RFC 5482). Millisecond resolution; saturates at `u32::MAX` ms.
pub fn set_user_timeout(fd: &impl AsRawFd, timeout: Duration) -> Result<(), RepairError> {
    let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    setopt(
        fd.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_USER_TIMEOUT,
        &ms,
        "setsockopt TCP_USER_TIMEOUT",
    )
}

/// Turns keepalive on: the first probe after `idle` without traffic, then one every
/// `interval` (whole seconds, at least 1). On a restored socket whose send side is behind its peer, the probes' answers
/// are discarded, so with [`set_user_timeout`] the connection is aborted about `idle` + the
/// user timeout after it went quiet.
pub fn set_keepalive(
    fd: &impl AsRawFd,
    idle: Duration,
    interval: Duration,
) -> Result<(), RepairError> {
    let fd = fd.as_raw_fd();
    let secs = |d: Duration| c_int::try_from(d.as_secs().max(1)).unwrap_or(c_int::MAX);
    set_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_KEEPIDLE,
        secs(idle),
        "setsockopt TCP_KEEPIDLE",
    )?;
    set_int(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_KEEPINTVL,
        secs(interval),
        "setsockopt TCP_KEEPINTVL",
    )?;
    set_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_KEEPALIVE,
        1,
        "setsockopt SO_KEEPALIVE",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wscale_bit_fields_split_as_the_kernel_packs_them() {
        // tcpi_snd_wscale = 7, tcpi_rcv_wscale = 9 as the kernel stores them on this target.
        let byte = if cfg!(target_endian = "little") {
            0x97
        } else {
            0x79
        };
        assert_eq!(wscales(byte), (7, 9));
    }

    #[test]
    fn the_kernel_structs_have_the_kernel_layout() {
        assert_eq!(mem::size_of::<TcpRepairOpt>(), 8);
        assert_eq!(mem::size_of::<TcpRepairWindow>(), 20);
    }

    #[test]
    fn a_socket_with_unread_data_is_not_quiescent() {
        use std::io::Write;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        client.write_all(b"unread").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while queues(server.as_raw_fd()).unwrap().1 < 6 {
            assert!(std::time::Instant::now() < deadline, "data never arrived");
            std::thread::sleep(Duration::from_millis(5));
        }
        match snapshot(&server) {
            Err(RepairError::NotQuiescent {
                unacked: 0,
                unread: 6,
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_listening_socket_is_not_established() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        match snapshot(&l) {
            Err(RepairError::NotEstablished(10)) => {} // TCP_LISTEN
            other => panic!("{other:?}"),
        }
    }
}
