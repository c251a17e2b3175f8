//! Who may use a control socket, and how many at once: shared by lbd and bgpd.
//!
//! * The socket file ([`bind`]): mode 0660 whatever the umask, its group the configured
//!   control group (else the daemon's own group). With a read-only group, a POSIX ACL entry
//!   gives that group `rw` on the socket too (connecting needs write permission); the mode
//!   still shows 0660. The file is bound under a temporary name and renamed into place once
//!   its mode, group and ACL are set, so the path never exists with looser permissions.
//! * The peer ([`Policy::check`]): its credentials as the kernel recorded them at `connect()`
//!   (`SO_PEERCRED` for uid and gid, `SO_PEERGROUPS` for the supplementary groups, so
//!   nothing is read from `/proc` and nothing can change between the connect and the check).
//!   uid 0, the daemon's own uid, or a member (primary or supplementary) of the control group:
//!   [`Access::Full`]. A member of the read-only group: [`Access::ReadOnly`], which may send
//!   only the requests its daemon classifies as read-only ([`Classify`]). Anyone else is
//!   refused with one error line and the connection closed.
//! * The number of clients ([`Gate`]): at most `max_clients` at once, the last slot kept for
//!   uid 0 and the daemon's own uid, so root's CLI still gets in when others hold every slot.
//!
//! [`Stats`] counts what was refused or closed; each daemon exposes it as metrics. This module
//! logs nothing ([`LogLimit`] only tells a daemon when it may log again).

use std::ffi::{CStr, CString};
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{UnixListener, UnixStream};

use crate::Envelope;

/// The socket file's mode.
pub const SOCKET_MODE: u32 = 0o660;
/// Control clients served at once (the last slot only for root and the daemon's uid).
pub const MAX_CLIENTS: usize = 64;

/// What a connected client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every request.
    Full,
    /// Only the requests its daemon classifies as read-only.
    ReadOnly,
}

/// A control request that says whether it only reads (an exhaustive match in each daemon's
/// request type, so that a new request must be classified).
pub trait Classify {
    /// True when the request changes nothing.
    fn read_only(&self) -> bool;
    /// The request's name in messages (`cmd`).
    fn name(&self) -> &'static str;
}

/// A group name that does not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupError {
    /// The configuration key (`control_group`, …).
    pub key: &'static str,
    pub message: String,
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key `{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for GroupError {}

/// A group name (through the system's group database, `getgrnam_r`) or a numeric gid.
pub fn resolve_group(name: &str) -> Result<u32, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("empty group name".into());
    }
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let c = CString::new(name).map_err(|_| format!("bad group name `{name}`"))?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: getgrnam_r writes into `grp` and `buf` (its length given); `out` is set to
        // `&grp` on success and to null when there is no such group.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::group = std::ptr::null_mut();
        let rc = unsafe {
            libc::getgrnam_r(
                c.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut out,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(format!(
                "cannot look up group `{name}`: {}",
                io::Error::from_raw_os_error(rc)
            ));
        }
        if out.is_null() {
            return Err(format!("no group named `{name}` (nor a numeric gid)"));
        }
        return Ok(grp.gr_gid);
    }
}

/// The name of `gid` for messages (the number when it has none).
pub fn group_name(gid: u32) -> String {
    let mut buf = vec![0u8; 4096];
    // SAFETY: as in resolve_group, with getgrgid_r.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::group = std::ptr::null_mut();
    let rc =
        unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
    if rc == 0 && !out.is_null() {
        // SAFETY: gr_name points into `buf`, NUL-terminated.
        let n = unsafe { CStr::from_ptr(grp.gr_name) };
        return n.to_string_lossy().into_owned();
    }
    gid.to_string()
}

/// Who gets which access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The daemon's own uid: full access (as uid 0).
    pub owner_uid: u32,
    /// Full access for members; the socket's group.
    pub control_gid: u32,
    /// Read-only access for members.
    pub readonly_gid: Option<u32>,
}

impl Policy {
    /// The policy of `control_group` (the daemon's own gid when absent) and
    /// `control_readonly_group` (none when absent), names or numeric gids.
    pub fn resolve(
        control_group: Option<&str>,
        readonly_group: Option<&str>,
    ) -> Result<Policy, GroupError> {
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let control_gid = match control_group {
            Some(g) => resolve_group(g).map_err(|message| GroupError {
                key: "control_group",
                message,
            })?,
            None => gid,
        };
        let readonly_gid = readonly_group
            .map(|g| {
                resolve_group(g).map_err(|message| GroupError {
                    key: "control_readonly_group",
                    message,
                })
            })
            .transpose()?;
        Ok(Policy {
            owner_uid: uid,
            control_gid,
            readonly_gid: readonly_gid.filter(|g| *g != control_gid),
        })
    }

    /// Root and the daemon's own uid only (the daemon's gid for the socket file).
    pub fn owner_only() -> Policy {
        // SAFETY: as above.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Policy {
            owner_uid: uid,
            control_gid: gid,
            readonly_gid: None,
        }
    }

    /// What `peer` may do, or why it may not connect.
    pub fn check(&self, peer: &Peer) -> Result<Access, String> {
        if peer.uid == 0 || peer.uid == self.owner_uid || peer.in_group(self.control_gid) {
            return Ok(Access::Full);
        }
        if self.readonly_gid.is_some_and(|g| peer.in_group(g)) {
            return Ok(Access::ReadOnly);
        }
        Err(format!(
            "permission denied: uid {} is neither root nor in the control group `{}`{}",
            peer.uid,
            group_name(self.control_gid),
            match self.readonly_gid {
                Some(g) => format!(" nor in the read-only group `{}`", group_name(g)),
                None => String::new(),
            }
        ))
    }

    /// uid 0 and the daemon's own uid: they may take the last client slot.
    pub fn privileged(&self, peer: &Peer) -> bool {
        peer.uid == 0 || peer.uid == self.owner_uid
    }
}

/// A connected client's credentials, as the kernel recorded them when it connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    /// Supplementary groups (`SO_PEERGROUPS`; empty where the kernel does not have it).
    pub groups: Vec<u32>,
}

impl Peer {
    /// The credentials of `sock`'s peer.
    pub fn of(sock: &UnixStream) -> io::Result<Peer> {
        let cred = sock.peer_cred()?;
        Ok(Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
            groups: peer_groups(sock.as_raw_fd()).unwrap_or_default(),
        })
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// `SO_PEERGROUPS` (Linux 4.13): the peer's supplementary groups at connect time.
fn peer_groups(fd: libc::c_int) -> io::Result<Vec<u32>> {
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `groups`, and sets `len`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        // ERANGE: `len` says how much is needed.
        if e.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= 65536 {
            groups.resize(n, 0);
            continue;
        }
        return Err(e);
    }
}

/// Binds the control socket at `path` for `policy`: mode 0660 and the control group
/// whatever the umask, plus an ACL entry for the read-only group; a stale socket file (one
/// nobody answers on) is replaced, a live one is an error naming `daemon`. A parent directory
/// that does not exist is created with mode 0755.
pub fn bind(path: &Path, policy: &Policy, daemon: &str) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another {daemon} is listening on it"),
            ));
        }
        std::fs::remove_file(path)?;
    }
    // A temporary name in the same directory, renamed into place once set up; a path too
    // long for that is bound in place (and set up right after: the credential check covers
    // the moment between).
    let tmp = temp_name(path);
    let staged = tmp.as_os_str().len() < 100;
    let at = if staged { tmp.as_path() } else { path };
    let _ = std::fs::remove_file(at);
    let listener = UnixListener::bind(at)?;
    let set_up = (|| {
        std::fs::set_permissions(at, std::fs::Permissions::from_mode(SOCKET_MODE))?;
        std::os::unix::fs::chown(at, None, Some(policy.control_gid))?;
        if let Some(ro) = policy.readonly_gid {
            set_group_acl(at, ro).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot give the read-only group {} access (a POSIX ACL on the \
                         socket file): {e}",
                        group_name(ro)
                    ),
                )
            })?;
        }
        if staged {
            std::fs::rename(at, path)?;
        }
        Ok(())
    })();
    if let Err(e) = set_up {
        let _ = std::fs::remove_file(at);
        return Err(e);
    }
    Ok(listener)
}

fn temp_name(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Sets the access ACL of `path` to `user::rw- group::rw- group:GID:rw- mask::rw- other::---`
/// (the `system.posix_acl_access` attribute, version 2, as libacl writes it).
fn set_group_acl(path: &Path, gid: u32) -> io::Result<()> {
    const USER_OBJ: u16 = 0x01;
    const GROUP_OBJ: u16 = 0x04;
    const GROUP: u16 = 0x08;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    const RW: u16 = 0o6;
    const UNDEFINED: u32 = u32::MAX;
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (USER_OBJ, RW, UNDEFINED),
        (GROUP_OBJ, RW, UNDEFINED),
        (GROUP, RW, gid),
        (MASK, RW, UNDEFINED),
        (OTHER, 0, UNDEFINED),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    let p = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated path, an attribute name and a buffer with its length.
    let rc = unsafe {
        libc::setxattr(
            p.as_ptr(),
            c"system.posix_acl_access".as_ptr(),
            v.as_ptr().cast(),
            v.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What was refused or closed on one control socket (each daemon's metrics read it).
#[derive(Debug, Default)]
pub struct Stats {
    /// Clients refused: neither root, the daemon's uid, nor in a control group.
    pub refused_permission: AtomicU64,
    /// Clients refused: every slot taken.
    pub refused_client_limit: AtomicU64,
    /// Requests refused to a read-only client (the connection stays).
    pub refused_read_only: AtomicU64,
    /// Connections closed for a line over the limit.
    pub closed_line_too_long: AtomicU64,
    /// Connections closed for a request line begun and not finished in time.
    pub closed_partial_line: AtomicU64,
    /// Connections closed for sending no request for the idle time.
    pub closed_idle: AtomicU64,
}

impl Stats {
    /// `(reason, count)` of the clients refused at connect: `permission`, `client-limit`.
    pub fn refused(&self) -> [(&'static str, u64); 2] {
        [
            (
                "permission",
                self.refused_permission.load(Ordering::Relaxed),
            ),
            (
                "client-limit",
                self.refused_client_limit.load(Ordering::Relaxed),
            ),
        ]
    }

    /// `(reason, count)` of the connections closed by the server: `line-too-long`,
    /// `partial-line-timeout`, `idle`.
    pub fn closed(&self) -> [(&'static str, u64); 3] {
        [
            (
                "line-too-long",
                self.closed_line_too_long.load(Ordering::Relaxed),
            ),
            (
                "partial-line-timeout",
                self.closed_partial_line.load(Ordering::Relaxed),
            ),
            ("idle", self.closed_idle.load(Ordering::Relaxed)),
        ]
    }
}

/// Why a client was not admitted (it gets [`Refused::message`] as one error line).
#[derive(Debug)]
pub enum Refused {
    /// Not allowed (or its credentials could not be read).
    Permission { peer: Option<Peer>, message: String },
    /// Every slot taken.
    ClientLimit { peer: Peer, message: String },
}

impl Refused {
    pub fn message(&self) -> &str {
        match self {
            Refused::Permission { message, .. } | Refused::ClientLimit { message, .. } => message,
        }
    }

    /// Tells the client why, without waiting (the line fits in an empty socket buffer), and
    /// closes the connection (dropping `sock`).
    pub fn answer<Rep: Envelope>(&self, sock: UnixStream) {
        if let Ok(mut line) = serde_json::to_vec(&Rep::failure(self.message())) {
            line.push(b'\n');
            let _ = sock.try_write(&line);
        }
    }
}

/// Admits control clients: credentials, then a slot.
#[derive(Debug)]
pub struct Gate {
    policy: Policy,
    max_clients: usize,
    active: Arc<AtomicUsize>,
    stats: Arc<Stats>,
}

/// An admitted client; its slot is given back when this is dropped.
#[derive(Debug)]
pub struct Admitted {
    pub peer: Peer,
    pub access: Access,
    _slot: Slot,
}

#[derive(Debug)]
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    /// A gate of `policy` for at most `max_clients` (at least 2: one is kept for root)
    /// counting into `stats`.
    pub fn new(policy: Policy, max_clients: usize, stats: Arc<Stats>) -> Gate {
        Gate {
            policy,
            max_clients: max_clients.max(2),
            active: Arc::new(AtomicUsize::new(0)),
            stats,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Clients admitted and not yet gone.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Checks `sock`'s peer and takes a slot for it.
    pub fn admit(&self, sock: &UnixStream) -> Result<Admitted, Refused> {
        match Peer::of(sock) {
            Ok(peer) => self.admit_peer(peer),
            Err(e) => {
                self.stats
                    .refused_permission
                    .fetch_add(1, Ordering::Relaxed);
                Err(Refused::Permission {
                    peer: None,
                    message: format!("permission denied: cannot read the peer's credentials: {e}"),
                })
            }
        }
    }

    /// [`Gate::admit`] for a peer whose credentials were read.
    pub fn admit_peer(&self, peer: Peer) -> Result<Admitted, Refused> {
        let access = match self.policy.check(&peer) {
            Ok(a) => a,
            Err(message) => {
                self.stats
                    .refused_permission
                    .fetch_add(1, Ordering::Relaxed);
                return Err(Refused::Permission {
                    peer: Some(peer),
                    message,
                });
            }
        };
        let limit = if self.policy.privileged(&peer) {
            self.max_clients
        } else {
            self.max_clients - 1
        };
        let taken = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            });
        if taken.is_err() {
            self.stats
                .refused_client_limit
                .fetch_add(1, Ordering::Relaxed);
            return Err(Refused::ClientLimit {
                peer,
                message: format!(
                    "too many control connections ({}; the last is kept for root)",
                    self.max_clients
                ),
            });
        }
        Ok(Admitted {
            peer,
            access,
            _slot: Slot(self.active.clone()),
        })
    }
}

/// At most one log line per `every` for a kind of event; the events in between are counted.
#[derive(Debug)]
pub struct LogLimit {
    every: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl LogLimit {
    pub fn new(every: Duration) -> LogLimit {
        LogLimit {
            every,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(events not logged since the last line)` when this one may be logged.
    pub fn allow(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < self.every) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests;
