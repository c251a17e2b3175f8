//! Floating self IPs on this device's interfaces, and the announcements that make the segment
//! send their traffic here at once.
//!
//! When a traffic group moves to this device, lbd adds the group's floating addresses
//! ([`NetAddr::add`]) and then announces them ([`announce`]): for IPv4 a gratuitous ARP in the
//! form RFC 5227 §3 calls an "ARP Announcement" (an ARP request whose sender and target
//! protocol addresses are both the address, broadcast), for IPv6 an unsolicited Neighbor
//! Advertisement to all-nodes with the Override flag set (RFC 4861 §7.2.6), repeated a few
//! times so the router's neighbour entry moves to this device even if one frame is lost. When
//! the traffic group leaves, lbd removes them ([`NetAddr::remove`]). The order around routes
//! (takeover: add, announce, then routes; release: withdraw routes, then remove) is the
//! caller's.
//!
//! Addresses and link state go through NETLINK_ROUTE (the `rtnetlink` crate), in the network
//! namespace of the thread that calls [`NetAddr::new`]; announcements go through raw sockets
//! (AF_PACKET for ARP, a raw ICMPv6 socket bound to the interface for the advertisement),
//! which need CAP_NET_RAW; adding and removing addresses need CAP_NET_ADMIN.
//!
//! **MAC masquerade.** A traffic group with a masquerade MAC gets its own macvlan on the
//! external interface ([`NetAddr::ensure_macvlan`], named [`masquerade_link_name`]`(path id)`,
//! e.g. `tg1`), carrying that MAC. A caller either sets it up ([`NetAddr::set_link`]) on
//! takeover and waits for its carrier ([`NetAddr::wait_link_up`]) before announcing, or — as
//! lbd's `agent` does, so that a takeover never waits for the carrier — sets it up once and
//! keeps it up: without addresses it sends nothing, since IPv6 address generation is off on it
//! (IFLA_INET6_ADDR_GEN_MODE none: no link-local DAD or router solicitation) and IPv4 has
//! nothing to send from. On takeover the floating external address is added to it and
//! announced from the masquerade MAC; on release it is removed. The router's neighbour entry
//! then never changes across a failover (the MAC moves with the address), only the switch's
//! forwarding entry, which the announcement's source address moves. A down macvlan sends
//! nothing at all. Some things stay the caller's (or the
//! host's) job: the external interface should have `arp_ignore=1` and `arp_announce=2`, else
//! the parent also answers ARP for the floating address with its own MAC and may send ARP
//! requests from it (Linux answers ARP for any local address on any interface by default);
//! reverse-path filtering must not be strict (`rp_filter` 0 or 2), since a request arrives
//! on the macvlan while the route back to its sender may be the parent's; and the macvlan
//! must be deleted ([`NetAddr::delete_link`]) when the traffic group's masquerade is removed
//! from the configuration.
//!
//! What this module must not do: touch any address it was not asked about (no flushing, no
//! "make the interface look like the configuration"), change links other than the one named
//! (only the macvlans it is asked to create, set up or down, or delete), routes, neighbour
//! entries or sysctls, or send anything but the one announcement frame asked for, on the
//! one interface named. It keeps no state: the kernel's address and link lists are the truth,
//! which is what makes [`NetAddr::add`], [`NetAddr::remove`] and [`NetAddr::ensure_macvlan`]
//! idempotent across restarts.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoMacVlan, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage, MacVlanMode, State,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkMacVlan};
use tokio::task::JoinHandle;

/// Longest interface name the kernel accepts (IFNAMSIZ less the NUL).
const IFNAME_MAX: usize = 15;

/// What went wrong, naming the interface and, where there is one, the address.
#[derive(Debug, thiserror::Error)]
pub enum NetAddrError {
    #[error("netlink: cannot open a NETLINK_ROUTE connection: {0}")]
    Connect(#[source] io::Error),
    #[error("interface {ifname:?}: not a valid interface name")]
    BadInterfaceName { ifname: String },
    #[error("interface {ifname}: no such interface")]
    NoSuchInterface { ifname: String },
    #[error("interface {ifname}: cannot add {addr}: {source}")]
    Add {
        ifname: String,
        addr: IpNet,
        #[source]
        source: io::Error,
    },
    #[error("interface {ifname}: cannot remove {addr}: {source}")]
    Remove {
        ifname: String,
        addr: IpNet,
        #[source]
        source: io::Error,
    },
    #[error("interface {ifname}: cannot read {what}: {source}")]
    Query {
        ifname: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("interface {ifname}: has no Ethernet (6-byte) hardware address")]
    NoMac { ifname: String },
    #[error("interface {ifname}: cannot {action}: {source}")]
    Link {
        ifname: String,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("interface {ifname}: exists but {problem}; delete it or choose another name")]
    Mismatch { ifname: String, problem: String },
    #[error("interface {ifname}: cannot announce {addr} ({step}): {source}")]
    Announce {
        ifname: String,
        addr: IpAddr,
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

/// A NETLINK_ROUTE connection in the network namespace that was current when it was made.
///
/// Cheap to share by reference; every method is one or two netlink requests. Dropping it
/// stops the connection task.
pub struct NetAddr {
    handle: Handle,
    task: JoinHandle<()>,
}

impl Drop for NetAddr {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for NetAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetAddr").finish_non_exhaustive()
    }
}

/// rtnetlink's error as an `io::Error`: the kernel's errno where it sent one.
fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(msg.raw_code().abs()),
        _ => None,
    }
}

fn check_ifname(ifname: &str) -> Result<(), NetAddrError> {
    if ifname.is_empty()
        || ifname.len() > IFNAME_MAX
        || ifname
            .bytes()
            .any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace())
    {
        return Err(NetAddrError::BadInterfaceName {
            ifname: ifname.to_string(),
        });
    }
    Ok(())
}

impl NetAddr {
    /// Opens a NETLINK_ROUTE socket in the current thread's network namespace and spawns its
    /// connection task on the current tokio runtime.
    pub async fn new() -> Result<Self, NetAddrError> {
        let (connection, handle, _messages) =
            rtnetlink::new_connection().map_err(NetAddrError::Connect)?;
        let task = tokio::spawn(connection);
        Ok(NetAddr { handle, task })
    }

    /// The link message of `ifname` (one request, not a dump).
    async fn link(&self, ifname: &str) -> Result<LinkMessage, NetAddrError> {
        check_ifname(ifname)?;
        let no_such = || NetAddrError::NoSuchInterface {
            ifname: ifname.to_string(),
        };
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(ifname.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(link),
            Ok(None) => Err(no_such()),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Err(no_such()),
            Err(e) => Err(NetAddrError::Query {
                ifname: ifname.to_string(),
                what: "link",
                source: to_io(e),
            }),
        }
    }

    async fn index(&self, ifname: &str) -> Result<u32, NetAddrError> {
        Ok(self.link(ifname).await?.header.index)
    }

    /// Adds `addr` (address and prefix length) to `ifname`: true if added, false if it was
    /// already there. IPv6 addresses are added with IFA_F_NODAD, usable at once (the address
    /// is ours by configuration; duplicate address detection would hold it tentative for a
    /// second or more, and a failover must not wait for that).
    pub async fn add(&self, ifname: &str, addr: IpNet) -> Result<bool, NetAddrError> {
        let index = self.index(ifname).await?;
        let mut request = self
            .handle
            .address()
            .add(index, addr.addr(), addr.prefix_len());
        if addr.addr().is_ipv6() {
            let message = request.message_mut();
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match request.execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno_of(&e) == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(NetAddrError::Add {
                ifname: ifname.to_string(),
                addr,
                source: to_io(e),
            }),
        }
    }

    /// Removes `addr` (address and prefix length) from `ifname`: true if removed, false if it
    /// was not there.
    pub async fn remove(&self, ifname: &str, addr: IpNet) -> Result<bool, NetAddrError> {
        let index = self.index(ifname).await?;
        let mut message = AddressMessage::default();
        message.header.family = match addr {
            IpNet::V4(_) => AddressFamily::Inet,
            IpNet::V6(_) => AddressFamily::Inet6,
        };
        message.header.index = index;
        message.header.prefix_len = addr.prefix_len();
        message
            .attributes
            .push(AddressAttribute::Local(addr.addr()));
        message
            .attributes
            .push(AddressAttribute::Address(addr.addr()));
        match self.handle.address().del(message).execute().await {
            Ok(()) => Ok(true),
            Err(e)
                if matches!(
                    errno_of(&e),
                    Some(libc::EADDRNOTAVAIL) | Some(libc::ENOENT) | Some(libc::ESRCH)
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(NetAddrError::Remove {
                ifname: ifname.to_string(),
                addr,
                source: to_io(e),
            }),
        }
    }

    /// Whether `addr` is one of `ifname`'s addresses (any prefix length).
    pub async fn has(&self, ifname: &str, addr: IpAddr) -> Result<bool, NetAddrError> {
        let index = self.index(ifname).await?;
        let mut addresses = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(addr)
            .execute();
        match addresses.try_next().await {
            Ok(found) => Ok(found.is_some()),
            Err(e) => Err(NetAddrError::Query {
                ifname: ifname.to_string(),
                what: "addresses",
                source: to_io(e),
            }),
        }
    }

    /// Whether `ifname` can carry traffic: administratively up and operationally up, or
    /// operationally unknown (drivers that do not report it, loopback) with carrier. Used for
    /// fail-safe: a device whose traffic interfaces are down must not hold traffic groups.
    pub async fn link_up(&self, ifname: &str) -> Result<bool, NetAddrError> {
        let link = self.link(ifname).await?;
        if !link.header.flags.contains(LinkFlags::Up) {
            return Ok(false);
        }
        let mut oper = None;
        let mut carrier = None;
        for attribute in &link.attributes {
            match attribute {
                LinkAttribute::OperState(state) => oper = Some(*state),
                LinkAttribute::Carrier(c) => carrier = Some(*c != 0),
                _ => {}
            }
        }
        let carrier = carrier.unwrap_or(link.header.flags.contains(LinkFlags::LowerUp));
        Ok(match oper {
            Some(State::Up) => true,
            Some(State::Unknown) | None => carrier,
            Some(_) => false,
        })
    }

    /// The Ethernet address of `ifname`.
    pub async fn mac(&self, ifname: &str) -> Result<[u8; 6], NetAddrError> {
        let link = self.link(ifname).await?;
        link.attributes
            .iter()
            .find_map(|attribute| match attribute {
                LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
                _ => None,
            })
            .ok_or_else(|| NetAddrError::NoMac {
                ifname: ifname.to_string(),
            })
    }

    /// Makes sure a macvlan `name` exists on `parent` with Ethernet address `mac`, and
    /// returns its interface index.
    ///
    /// A new one is created *down*, in mode `private`, with IPv6 address generation off
    /// (IFLA_INET6_ADDR_GEN_MODE none): a standby device's macvlan sends nothing, so the
    /// switch never learns the masquerade MAC from a device that does not hold the traffic
    /// group. An existing one is left up or down as it is (a restarted lbd must not take the
    /// address off a device that holds it); if its MAC differs it is changed to `mac`;
    /// address generation is set to none again. It is an error ([`NetAddrError::Mismatch`])
    /// if `name` exists but is not a macvlan, or is a macvlan on another parent or in
    /// another mode; nothing is changed then.
    ///
    /// Why `private`: the macvlan only exists to own one MAC toward the segment. Traffic
    /// between this host's own addresses never needs it (the kernel delivers local
    /// traffic through loopback), so nothing should cross between sibling macvlans at layer
    /// 2: in `private` mode one traffic group's announcements and ARP requests are not
    /// delivered to another traffic group's macvlan on the same device, and a frame
    /// reflected by the switch is dropped instead of reaching a sibling. `bridge` mode would
    /// only add such local delivery, which no part of spanlb uses.
    pub async fn ensure_macvlan(
        &self,
        name: &str,
        parent: &str,
        mac: [u8; 6],
    ) -> Result<u32, NetAddrError> {
        check_ifname(name)?;
        let parent_index = self.index(parent).await?;
        let fail = |action: &'static str| {
            move |e: rtnetlink::Error| NetAddrError::Link {
                ifname: name.to_string(),
                action,
                source: to_io(e),
            }
        };
        let index = match self.link(name).await {
            Ok(link) => {
                let found = MacvlanInfo::of(&link);
                let problem = if !found.is_macvlan {
                    Some("is not a macvlan".to_string())
                } else if found.parent != Some(parent_index) {
                    Some(format!("is a macvlan on another parent than {parent}"))
                } else if found.mode.is_some_and(|m| m != MacVlanMode::Private) {
                    Some(format!(
                        "is a macvlan in mode {:?}, not private",
                        found.mode
                    ))
                } else {
                    None
                };
                if let Some(problem) = problem {
                    return Err(NetAddrError::Mismatch {
                        ifname: name.to_string(),
                        problem,
                    });
                }
                if found.mac != Some(mac) {
                    let mut message = LinkMessage::default();
                    message.header.index = link.header.index;
                    message
                        .attributes
                        .push(LinkAttribute::Address(mac.to_vec()));
                    self.handle
                        .link()
                        .set(message)
                        .execute()
                        .await
                        .map_err(fail("set its MAC address"))?;
                }
                link.header.index
            }
            Err(NetAddrError::NoSuchInterface { .. }) => {
                let message = LinkMacVlan::new(name, parent_index, MacVlanMode::Private)
                    .address(mac.to_vec())
                    .down()
                    .build();
                match self.handle.link().add(message).execute().await {
                    Ok(()) => {}
                    // Made meanwhile by someone else: checked on the next call.
                    Err(e) if errno_of(&e) == Some(libc::EEXIST) => {}
                    Err(e) => return Err(fail("create the macvlan")(e)),
                }
                self.index(name).await?
            }
            Err(e) => return Err(e),
        };
        // No IPv6 link-local address (and so no DAD or router solicitation) of its own.
        let mut message = LinkMessage::default();
        message.header.index = index;
        message
            .attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]));
        match self.handle.link().set(message).execute().await {
            Ok(()) => {}
            // A kernel without IPv6 generates no IPv6 address either.
            Err(e) if errno_of(&e) == Some(libc::EAFNOSUPPORT) => {}
            Err(e) => return Err(fail("turn IPv6 address generation off")(e)),
        }
        Ok(index)
    }

    /// Sets `name` administratively up or down (`ip link set NAME up|down`); setting the
    /// state it already has is not an error. Up is not at once usable: see
    /// [`NetAddr::wait_link_up`].
    pub async fn set_link(&self, name: &str, up: bool) -> Result<(), NetAddrError> {
        let index = self.index(name).await?;
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.change_mask = LinkFlags::Up;
        if up {
            message.header.flags = LinkFlags::Up;
        }
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(|e| NetAddrError::Link {
                ifname: name.to_string(),
                action: if up { "set it up" } else { "set it down" },
                source: to_io(e),
            })
    }

    /// Waits until [`NetAddr::link_up`] says `name` can carry traffic, checking every 10 ms, at
    /// most `timeout`: true if it came up. After [`NetAddr::set_link`] up, the kernel drops
    /// what is sent on the link until it has turned the carrier on (linkwatch, up to a second
    /// later): announce only after this.
    pub async fn wait_link_up(&self, name: &str, timeout: Duration) -> Result<bool, NetAddrError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.link_up(name).await? {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Deletes the link `name`: true if deleted, false if there was none.
    pub async fn delete_link(&self, name: &str) -> Result<bool, NetAddrError> {
        let index = match self.index(name).await {
            Ok(index) => index,
            Err(NetAddrError::NoSuchInterface { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(NetAddrError::Link {
                ifname: name.to_string(),
                action: "delete it",
                source: to_io(e),
            }),
        }
    }
}

/// What a link message says about a macvlan.
#[derive(Debug, Default)]
struct MacvlanInfo {
    is_macvlan: bool,
    parent: Option<u32>,
    mode: Option<MacVlanMode>,
    mac: Option<[u8; 6]>,
}

impl MacvlanInfo {
    fn of(link: &LinkMessage) -> MacvlanInfo {
        let mut info = MacvlanInfo::default();
        for attribute in &link.attributes {
            match attribute {
                LinkAttribute::Link(index) => info.parent = Some(*index),
                LinkAttribute::Address(bytes) => {
                    info.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok();
                }
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(InfoKind::MacVlan) => info.is_macvlan = true,
                            LinkInfo::Data(InfoData::MacVlan(data)) => {
                                for d in data {
                                    if let InfoMacVlan::Mode(mode) = d {
                                        info.mode = Some(*mode);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        info
    }
}

/// The name of the macvlan that carries the masquerade MAC of the traffic group with ADD-PATH
/// path id `path_id`: `tg<path_id>` (at most 13 characters, a valid interface name).
pub fn masquerade_link_name(path_id: u32) -> String {
    format!("tg{path_id}")
}

/// Parses a MAC address written `02:00:5e:01:01:02` (or with `-`), as configured for a
/// traffic group's masquerade. It must be a unicast address (a frame source address);
/// locally administered (second bit of the first byte) is what BIG-IP recommends and what
/// a masquerade should be, but not required.
pub fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    let bad = || format!("`{text}` is not a MAC address (six hex bytes, e.g. 02:00:5e:01:01:02)");
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(&parts) {
        if part.is_empty() || part.len() > 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 != 0 {
        return Err(format!(
            "`{text}` is a multicast MAC address, not a unicast one"
        ));
    }
    if mac == [0; 6] {
        return Err(format!("`{text}` is the all-zero MAC address"));
    }
    Ok(mac)
}

/// A MAC address as `ip link` writes it: `02:00:5e:01:01:02`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Sends `count` announcements of `ip` from `mac` on `ifname`, `gap` apart (none after the
/// last): gratuitous ARP for IPv4, unsolicited Neighbor Advertisement for IPv6. Callers use
/// 3 and 100 ms. Stops at the first error.
pub async fn announce(
    ifname: &str,
    ip: IpAddr,
    mac: [u8; 6],
    count: u32,
    gap: Duration,
) -> Result<(), NetAddrError> {
    for i in 0..count {
        if i > 0 {
            tokio::time::sleep(gap).await;
        }
        match ip {
            IpAddr::V4(ip) => gratuitous_arp(ifname, ip, mac)?,
            IpAddr::V6(ip) => unsolicited_na(ifname, ip, mac)?,
        }
    }
    Ok(())
}

/// The interface index of `ifname` in the current network namespace.
fn ifindex(ifname: &str) -> Result<u32, NetAddrError> {
    check_ifname(ifname)?;
    let name = std::ffi::CString::new(ifname).map_err(|_| NetAddrError::BadInterfaceName {
        ifname: ifname.to_string(),
    })?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(NetAddrError::NoSuchInterface {
            ifname: ifname.to_string(),
        });
    }
    Ok(index)
}

/// A new socket, owned, or the OS error.
fn socket(domain: i32, kind: i32, protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the returned descriptor is checked and then owned.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setsockopt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    crate::sys::setsockopt(fd.as_raw_fd(), level, name, value)
}

/// `sendto`, checking that the whole frame went.
fn send_to<A>(fd: &OwnedFd, frame: &[u8], addr: &A) -> io::Result<()> {
    // SAFETY: `frame` and `addr` are live for the call, with the lengths given.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (addr as *const A).cast(),
            std::mem::size_of::<A>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    if sent as usize != frame.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", frame.len()),
        ));
    }
    Ok(())
}

/// The Ethernet frame of an ARP Announcement (RFC 5227 §3): an ARP request, broadcast, whose
/// sender and target protocol addresses are both `ip`, sender hardware address `mac`, target
/// hardware address zero.
pub fn arp_announcement_frame(ip: Ipv4Addr, mac: [u8; 6]) -> [u8; 42] {
    let mut frame = [0u8; 42];
    frame[0..6].copy_from_slice(&[0xff; 6]); // destination: broadcast
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&(libc::ETH_P_ARP as u16).to_be_bytes());
    frame[14..16].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    frame[16..18].copy_from_slice(&(libc::ETH_P_IP as u16).to_be_bytes());
    frame[18] = 6; // hardware address length
    frame[19] = 4; // protocol address length
    frame[20..22].copy_from_slice(&1u16.to_be_bytes()); // operation: request
    frame[22..28].copy_from_slice(&mac); // sender hardware address
    frame[28..32].copy_from_slice(&ip.octets()); // sender protocol address
                                                 // Target hardware address (32..38): zero.
    frame[38..42].copy_from_slice(&ip.octets()); // target protocol address
    frame
}

/// Sends one gratuitous ARP (an RFC 5227 §3 ARP Announcement) for `ip` from `mac`, broadcast
/// on `ifname`, through an AF_PACKET socket addressed to that interface. Needs CAP_NET_RAW.
pub fn gratuitous_arp(ifname: &str, ip: Ipv4Addr, mac: [u8; 6]) -> Result<(), NetAddrError> {
    let index = ifindex(ifname)?;
    let fail = |step: &'static str, source: io::Error| NetAddrError::Announce {
        ifname: ifname.to_string(),
        addr: IpAddr::V4(ip),
        step,
        source,
    };
    // Protocol 0: this socket receives nothing, it only sends.
    let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, 0).map_err(|e| fail("AF_PACKET socket", e))?;
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
    to.sll_ifindex = index as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let frame = arp_announcement_frame(ip, mac);
    send_to(&fd, &frame, &to).map_err(|e| fail("send", e))
}

/// The ICMPv6 message of an unsolicited Neighbor Advertisement (RFC 4861 §4.4, §7.2.6) for
/// `ip`: Router and Solicited flags clear, Override set, with a Target Link-Layer Address
/// option carrying `mac`. The checksum is left zero: the kernel fills it in for raw ICMPv6
/// sockets.
pub fn neighbor_advertisement(ip: Ipv6Addr, mac: [u8; 6]) -> [u8; 32] {
    let mut message = [0u8; 32];
    message[0] = 136; // type: Neighbor Advertisement
    message[1] = 0; // code
                    // Checksum (2..4): left zero, the kernel's.
    message[4] = 0x20; // flags: R=0x80 clear, S=0x40 clear, O=0x20 set
    message[8..24].copy_from_slice(&ip.octets()); // target address
    message[24] = 2; // option: Target Link-Layer Address
    message[25] = 1; // option length, in units of 8 bytes
    message[26..32].copy_from_slice(&mac);
    message
}

/// Sends one unsolicited Neighbor Advertisement (RFC 4861 §7.2.6) for `ip` with link-layer
/// address `mac` to all-nodes (ff02::1) on `ifname`, hop limit 255, from `ip` itself, through
/// a raw ICMPv6 socket bound to the interface. `ip` must already be an address of this host
/// (add, then announce). Needs CAP_NET_RAW.
pub fn unsolicited_na(ifname: &str, ip: Ipv6Addr, mac: [u8; 6]) -> Result<(), NetAddrError> {
    let index = ifindex(ifname)?;
    let fail = |step: &'static str, source: io::Error| NetAddrError::Announce {
        ifname: ifname.to_string(),
        addr: IpAddr::V6(ip),
        step,
        source,
    };
    let fd = socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6)
        .map_err(|e| fail("ICMPv6 socket", e))?;
    // SAFETY: the name and its length are those of a live byte string.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            ifname.as_ptr().cast(),
            ifname.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(fail("SO_BINDTODEVICE", io::Error::last_os_error()));
    }
    let hops: libc::c_int = 255;
    setsockopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &hops)
        .map_err(|e| fail("IPV6_MULTICAST_HOPS", e))?;
    setsockopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &hops)
        .map_err(|e| fail("IPV6_UNICAST_HOPS", e))?;
    let index_opt: libc::c_int = index as libc::c_int;
    setsockopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, &index_opt)
        .map_err(|e| fail("IPV6_MULTICAST_IF", e))?;
    let no_loop: libc::c_int = 0;
    setsockopt(&fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, &no_loop)
        .map_err(|e| fail("IPV6_MULTICAST_LOOP", e))?;

    // Source address: the announced address itself.
    // SAFETY: sockaddr_in6 is plain data; all-zero is a valid value.
    let mut from: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    from.sin6_family = libc::AF_INET6 as u16;
    from.sin6_addr.s6_addr = ip.octets();
    if ip.is_unicast_link_local() {
        from.sin6_scope_id = index;
    }
    // SAFETY: `from` is a live sockaddr_in6 of the length given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&from as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(fail("bind to the address", io::Error::last_os_error()));
    }

    // SAFETY: as above.
    let mut to: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    to.sin6_family = libc::AF_INET6 as u16;
    to.sin6_addr.s6_addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();
    to.sin6_scope_id = index;
    let message = neighbor_advertisement(ip, mac);
    send_to(&fd, &message, &to).map_err(|e| fail("send", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];

    #[test]
    fn arp_frame_layout() {
        let frame = arp_announcement_frame(Ipv4Addr::new(20, 1, 1, 3), MAC);
        assert_eq!(&frame[0..6], &[0xff; 6]);
        assert_eq!(&frame[6..12], &MAC);
        assert_eq!(&frame[12..14], &[0x08, 0x06]);
        assert_eq!(&frame[14..22], &[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        assert_eq!(&frame[22..28], &MAC);
        assert_eq!(&frame[28..32], &[20, 1, 1, 3]);
        assert_eq!(&frame[32..38], &[0; 6]);
        assert_eq!(&frame[38..42], &[20, 1, 1, 3]);
    }

    #[test]
    fn na_layout() {
        let ip: Ipv6Addr = "fd00:20::3".parse().unwrap();
        let message = neighbor_advertisement(ip, MAC);
        assert_eq!(&message[0..4], &[136, 0, 0, 0]);
        assert_eq!(&message[4..8], &[0x20, 0, 0, 0]);
        assert_eq!(&message[8..24], &ip.octets());
        assert_eq!(&message[24..26], &[2, 1]);
        assert_eq!(&message[26..32], &MAC);
    }

    #[test]
    fn interface_names_checked() {
        assert!(check_ifname("eth0").is_ok());
        for bad in ["", "a/b", "has space", "sixteen-chars-xx"] {
            assert!(
                matches!(
                    check_ifname(bad),
                    Err(NetAddrError::BadInterfaceName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn mac_parsed_and_formatted() {
        let mac = parse_mac("02:00:5E:01:01:0a").unwrap();
        assert_eq!(mac, [0x02, 0, 0x5e, 1, 1, 0x0a]);
        assert_eq!(format_mac(mac), "02:00:5e:01:01:0a");
        assert_eq!(parse_mac("02-00-5e-01-01-0a").unwrap(), mac);
        for bad in [
            "",
            "02:00:5e:01:01",
            "02:00:5e:01:01:0a:0b",
            "02:00:5e:01:01:xz",
            "02:00:5e:01:01:100",
            "01:00:5e:01:01:01",
            "00:00:00:00:00:00",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn masquerade_link_names_are_interface_names() {
        assert_eq!(masquerade_link_name(1), "tg1");
        assert!(check_ifname(&masquerade_link_name(u32::MAX)).is_ok());
    }

    #[test]
    fn errors_are_one_line_naming_interface_and_address() {
        let e = NetAddrError::Add {
            ifname: "ext0".into(),
            addr: "20.1.1.3/24".parse().unwrap(),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        let text = e.to_string();
        assert!(
            text.contains("ext0") && text.contains("20.1.1.3/24"),
            "{text}"
        );
        assert!(!text.contains('\n'));
    }
}
