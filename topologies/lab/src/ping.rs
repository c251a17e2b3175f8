//! A self-contained ICMP echo ("ping -c 1 -W 1") run inside a lab namespace, so topology tests
//! do not depend on an external `ping` binary. A short-lived thread `setns(2)`s into the
//! namespace (network namespaces are per thread) and uses a raw ICMP / ICMPv6 socket there.

use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU16 = AtomicU16::new(1);

/// Sends one echo request to `addr` from inside namespace `ns` and waits up to `timeout` for
/// the matching reply.
pub(crate) fn ping_in_ns(ns: &str, addr: IpAddr, timeout: Duration) -> io::Result<bool> {
    let path = format!("/run/netns/{ns}");
    let ns_file = File::open(&path)?;
    std::thread::spawn(move || {
        // SAFETY: setns on a namespace fd; affects only this (short-lived) thread.
        if unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        echo(addr, timeout)
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("ping thread panicked")))
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn echo(addr: IpAddr, timeout: Duration) -> io::Result<bool> {
    let (domain, proto, req_type, reply_type) = match addr {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP, 8u8, 0u8),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128u8, 129u8),
    };
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let mut pkt = vec![req_type, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(b"spanlb-lab-ping!");
    if addr.is_ipv4() {
        let c = checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
    } // ICMPv6: the kernel fills in the checksum on raw ICMPv6 sockets.

    let sent = match addr {
        IpAddr::V4(a) => {
            // SAFETY: zeroed sockaddr_in is valid; fields set below.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            // SAFETY: pointers and lengths describe valid local buffers.
            unsafe {
                libc::sendto(
                    sock.as_raw_fd(),
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    0,
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        IpAddr::V6(a) => {
            // SAFETY: zeroed sockaddr_in6 is valid; fields set below.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_addr.s6_addr = a.octets();
            // SAFETY: as above.
            unsafe {
                libc::sendto(
                    sock.as_raw_fd(),
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    0,
                    (&sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if sent < 0 {
        let e = io::Error::last_os_error();
        // No route / unreachable: the answer is "no reply", not an error of the harness.
        return match e.raw_os_error() {
            Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EADDRNOTAVAIL | libc::EACCES) => {
                Ok(false)
            }
            _ => Err(e),
        };
    }

    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut pfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Ok(false);
        }
        // SAFETY: zeroed sockaddr_storage is valid; buffers are ours.
        let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut from_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let n = unsafe {
            libc::recvfrom(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut from as *mut libc::sockaddr_storage).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            continue;
        }
        let data = &buf[..n as usize];
        let (icmp, src_ok) = match addr {
            IpAddr::V4(a) => {
                if data.len() < 20 {
                    continue;
                }
                let ihl = usize::from(data[0] & 0x0f) * 4;
                (data.get(ihl..).unwrap_or(&[]), data[12..16] == a.octets())
            }
            IpAddr::V6(a) => {
                // SAFETY: the kernel filled a sockaddr_in6 for an AF_INET6 socket.
                let sa = unsafe {
                    &*(&from as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
                };
                (data, sa.sin6_addr.s6_addr == a.octets())
            }
        };
        if src_ok
            && icmp.len() >= 8
            && icmp[0] == reply_type
            && icmp[4..6] == id.to_be_bytes()
            && icmp[6..8] == seq.to_be_bytes()
        {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::checksum;

    #[test]
    fn rfc1071_checksum() {
        // Example from RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to ddf2, checksum 220d.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
    }
}
