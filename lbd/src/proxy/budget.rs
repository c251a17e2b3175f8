//! The descriptor budget of the data path, and what counts as a local error.
//!
//! lbd raises `RLIMIT_NOFILE` to its hard limit at start ([`crate::sys::raise_nofile`]) and
//! keeps a reserve of it — max(64, 5 %) plus what is open once the listeners are bound — for
//! the control socket, monitors, metrics, mirroring and the device group. The rest is the
//! budget the data path shares: every proxied TCP connection takes two descriptors (client and
//! member side), every UDP flow one (its upstream socket). UDP flows may hold at most half of
//! it: a flow costs a client one datagram (no handshake, spoofable), so a flood of them must
//! not starve TCP. A connection or flow that would exceed it is refused at once (TCP: accepted and reset; UDP: the datagram is dropped and no
//! flow is made) and counted; what is established carries on, and so do the control socket,
//! the monitors and mirroring, which take from the reserve.
//!
//! [`Budget`] itself does no I/O.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tracing::warn;

use crate::sys::now_ms;

/// The least kept back from `RLIMIT_NOFILE` for everything but the data path.
pub const MIN_RESERVE: u64 = 64;

/// What is kept back from a descriptor limit of `limit`: max(64, 5 %).
pub fn reserve(limit: u64) -> u64 {
    (limit / 20).max(MIN_RESERVE)
}

/// The data path's budget for a descriptor limit of `limit` with `open` descriptors open
/// already (listeners, runtime, control): the limit less the reserve and those, never below 0.
pub fn budget_for(limit: u64, open: u64) -> u64 {
    limit.saturating_sub(reserve(limit)).saturating_sub(open)
}

/// Which data path a refusal was in (metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Tcp,
    Udp,
}

/// Shared descriptor budget (see the module documentation). Unlimited until [`Budget::set`].
#[derive(Debug)]
pub struct Budget {
    limit: AtomicU64,
    used: AtomicU64,
    /// Of `used`, what UDP flows hold.
    used_udp: AtomicU64,
    refused_tcp: AtomicU64,
    refused_udp: AtomicU64,
    /// Proxied connects (and UDP flow sockets) that failed for a local reason (EMFILE, ...).
    local_errors: AtomicU64,
    /// The process's RLIMIT_NOFILE (soft) after raising, for metrics; 0 when unknown.
    nofile: AtomicU64,
    last_log_ms: AtomicU64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            limit: AtomicU64::new(u64::MAX),
            used: AtomicU64::new(0),
            used_udp: AtomicU64::new(0),
            refused_tcp: AtomicU64::new(0),
            refused_udp: AtomicU64::new(0),
            local_errors: AtomicU64::new(0),
            nofile: AtomicU64::new(0),
            last_log_ms: AtomicU64::new(0),
        }
    }
}

/// Descriptors taken from a [`Budget`]; given back when dropped.
#[derive(Debug)]
pub struct Permit {
    budget: Arc<Budget>,
    n: u64,
    side: Side,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.n, Ordering::Relaxed);
        if self.side == Side::Udp {
            self.budget.used_udp.fetch_sub(self.n, Ordering::Relaxed);
        }
    }
}

/// Budget figures for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetValues {
    /// u64::MAX when unlimited.
    pub limit: u64,
    pub used: u64,
    pub used_udp: u64,
    pub refused_tcp: u64,
    pub refused_udp: u64,
    pub local_errors: u64,
    pub nofile: u64,
}

impl Budget {
    /// Sets the budget (and the descriptor limit it came from, for metrics).
    pub fn set(&self, limit: u64, nofile: u64) {
        self.limit.store(limit, Ordering::Relaxed);
        self.nofile.store(nofile, Ordering::Relaxed);
    }

    /// Takes `n` descriptors for `side`, or None when that would exceed the budget (for UDP:
    /// or half of it held by UDP flows).
    pub fn try_take(self: &Arc<Self>, n: u64, side: Side) -> Option<Permit> {
        let limit = self.limit.load(Ordering::Relaxed);
        if side == Side::Udp && !take(&self.used_udp, n, limit / 2) {
            return None;
        }
        if !take(&self.used, n, limit) {
            if side == Side::Udp {
                self.used_udp.fetch_sub(n, Ordering::Relaxed);
            }
            return None;
        }
        Some(Permit {
            budget: self.clone(),
            n,
            side,
        })
    }

    /// Takes `n` descriptors for `side` whatever the budget says (mirrored flows rebuilt on
    /// takeover: they exist already on the device that had them).
    pub fn take(self: &Arc<Self>, n: u64, side: Side) -> Permit {
        self.used.fetch_add(n, Ordering::Relaxed);
        if side == Side::Udp {
            self.used_udp.fetch_add(n, Ordering::Relaxed);
        }
        Permit {
            budget: self.clone(),
            n,
            side,
        }
    }

    /// Counts a connection or flow refused for want of descriptors, and says so in the log at
    /// most every 10 s.
    pub fn refused(&self, side: Side) {
        match side {
            Side::Tcp => &self.refused_tcp,
            Side::Udp => &self.refused_udp,
        }
        .fetch_add(1, Ordering::Relaxed);
        self.log_limited(|v| {
            warn!(
                budget = v.limit,
                in_use = v.used,
                refused_tcp = v.refused_tcp,
                refused_udp = v.refused_udp,
                "descriptor budget exhausted: new connections and flows are refused \
                 (established ones, control and monitors carry on)"
            )
        });
    }

    /// Counts a local error on a proxied connect or flow socket (not the member's fault), and
    /// says so in the log at most every 10 s.
    pub fn local_error(&self, e: &io::Error) {
        self.local_errors.fetch_add(1, Ordering::Relaxed);
        self.log_limited(|v| {
            warn!(
                local_errors = v.local_errors,
                "local error on a proxied connect, not counted against the member: {e}"
            )
        });
    }

    fn log_limited(&self, f: impl FnOnce(BudgetValues)) {
        let now = now_ms();
        let last = self.last_log_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 10_000
            && self
                .last_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            f(self.values());
        }
    }

    pub fn values(&self) -> BudgetValues {
        BudgetValues {
            limit: self.limit.load(Ordering::Relaxed),
            used: self.used.load(Ordering::Relaxed),
            used_udp: self.used_udp.load(Ordering::Relaxed),
            refused_tcp: self.refused_tcp.load(Ordering::Relaxed),
            refused_udp: self.refused_udp.load(Ordering::Relaxed),
            local_errors: self.local_errors.load(Ordering::Relaxed),
            nofile: self.nofile.load(Ordering::Relaxed),
        }
    }
}

/// Adds `n` to `counter` unless that takes it over `limit`; true when it did.
fn take(counter: &AtomicU64, n: u64, limit: u64) -> bool {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            (used.saturating_add(n) <= limit).then_some(used + n)
        })
        .is_ok()
}

pub use crate::sys::is_local_error;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_errors_are_the_hosts_shortages() {
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::EADDRNOTAVAIL,
            libc::ENOMEM,
        ] {
            assert!(
                is_local_error(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        for errno in [
            libc::ECONNREFUSED,
            libc::ECONNRESET,
            libc::ETIMEDOUT,
            libc::EHOSTUNREACH,
            libc::ENETUNREACH,
        ] {
            assert!(
                !is_local_error(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        // lbd's own connect timeout is the member's.
        assert!(!is_local_error(&io::Error::new(
            io::ErrorKind::TimedOut,
            "connect timed out"
        )));
    }

    #[test]
    fn reserve_is_64_or_5_percent() {
        assert_eq!(reserve(256), 64);
        assert_eq!(reserve(1024), 64);
        assert_eq!(reserve(1_048_576), 52_428);
        assert_eq!(budget_for(256, 40), 152);
        assert_eq!(budget_for(64, 10), 0);
    }

    #[test]
    fn permits_are_bounded_and_given_back() {
        let b = Arc::new(Budget::default());
        b.set(5, 100);
        let two = b.try_take(2, Side::Tcp).expect("2 of 5");
        let three = b.try_take(3, Side::Tcp).expect("5 of 5");
        assert!(b.try_take(1, Side::Tcp).is_none());
        assert!(b.try_take(1, Side::Udp).is_none());
        assert_eq!(b.values().used_udp, 0, "a refused take is given back");
        drop(two);
        let again = b.try_take(2, Side::Tcp).expect("given back");
        assert!(b.try_take(1, Side::Tcp).is_none());
        let forced = b.take(1, Side::Udp);
        assert_eq!((b.values().used, b.values().used_udp), (6, 1));
        drop((three, again, forced));
        assert_eq!((b.values().used, b.values().used_udp), (0, 0));
        b.refused(Side::Udp);
        b.refused(Side::Tcp);
        b.refused(Side::Udp);
        let v = b.values();
        assert_eq!(
            (v.refused_tcp, v.refused_udp, v.limit, v.nofile),
            (1, 2, 5, 100)
        );
    }

    #[test]
    fn udp_flows_hold_at_most_half_and_tcp_keeps_the_rest() {
        let b = Arc::new(Budget::default());
        b.set(100, 1000);
        let udp: Vec<Permit> = (0..1000).map_while(|_| b.try_take(1, Side::Udp)).collect();
        assert_eq!(udp.len(), 50);
        let tcp: Vec<Permit> = (0..1000).map_while(|_| b.try_take(2, Side::Tcp)).collect();
        assert_eq!(tcp.len(), 25);
        assert!(b.try_take(1, Side::Udp).is_none());
        drop(tcp);
        // TCP may take the whole budget; then UDP gets nothing even under its half.
        drop(udp);
        let tcp: Vec<Permit> = (0..1000).map_while(|_| b.try_take(2, Side::Tcp)).collect();
        assert_eq!(tcp.len(), 50);
        assert!(b.try_take(1, Side::Udp).is_none());
        assert_eq!(b.values().used_udp, 0);
    }

    #[test]
    fn unlimited_until_set() {
        let b = Arc::new(Budget::default());
        let p: Vec<Permit> = (0..1000).filter_map(|_| b.try_take(2, Side::Tcp)).collect();
        assert_eq!(p.len(), 1000);
    }
}
