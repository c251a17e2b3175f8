//! Draining: lbd stopping with connections open (SIGTERM / SIGINT, `device.drain_timeout`).
//!
//! Once [`Drain::close`] has been called the data path takes nothing new: the app closes the TCP
//! listeners (a new connection is refused by the kernel), and a UDP listener, which keeps its
//! socket for the flows it has (their replies leave from it), drops a datagram that would
//! open a flow. Open connections and flows carry on until they end or the drain's deadline.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::budget::Budget;

/// Whether lbd is stopping, in which phase, and until when.
#[derive(Debug, Default)]
pub struct Drain {
    /// lbd is stopping (from the signal on).
    stopping: AtomicBool,
    /// The data path takes nothing new (from the listeners' closing on).
    closed: AtomicBool,
    /// Unix ms the drain ends at (valid while `stopping`).
    deadline_ms: AtomicU64,
}

/// What is still open during a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Open {
    /// TCP connections (accepted, connecting or relaying; mirrored ones rebuilt here too).
    pub connections: u64,
    /// UDP flows.
    pub flows: u64,
}

impl Open {
    /// What the data path holds now (each TCP connection holds 2 descriptors of the budget,
    /// each UDP flow 1: see [`super::budget`]).
    pub fn of(budget: &Budget) -> Open {
        let v = budget.values();
        Open {
            connections: v.used.saturating_sub(v.used_udp) / 2,
            flows: v.used_udp,
        }
    }

    pub fn total(&self) -> u64 {
        self.connections + self.flows
    }
}

impl Drain {
    /// lbd is stopping; the drain ends at `deadline_ms` (Unix ms). New connections and flows
    /// are still taken until [`Drain::close`] (traffic groups are being given up first).
    pub fn begin(&self, deadline_ms: u64) {
        self.deadline_ms.store(deadline_ms, Ordering::Relaxed);
        self.stopping.store(true, Ordering::Release);
    }

    /// From now on the data path takes nothing new.
    pub fn close(&self) {
        self.stopping.store(true, Ordering::Release);
        self.closed.store(true, Ordering::Release);
    }

    /// Whether the data path refuses new connections and flows.
    pub fn is_draining(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// While stopping: the phase (`"traffic-groups"`: giving them up, still taking new
    /// connections; `"connections"`: waiting for the open ones) and the deadline (Unix ms).
    pub fn status(&self) -> Option<(&'static str, u64)> {
        if !self.stopping.load(Ordering::Acquire) {
            return None;
        }
        let phase = if self.is_draining() {
            "connections"
        } else {
            "traffic-groups"
        };
        Some((phase, self.deadline_ms.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::proxy::budget::Side;

    #[test]
    fn open_counts_connections_and_flows_from_the_budget() {
        let b = Arc::new(Budget::default());
        assert_eq!(Open::of(&b), Open::default());
        let t1 = b.take(2, Side::Tcp);
        let _t2 = b.take(2, Side::Tcp);
        let _u = b.take(1, Side::Udp);
        assert_eq!(
            Open::of(&b),
            Open {
                connections: 2,
                flows: 1
            }
        );
        drop(t1);
        assert_eq!(Open::of(&b).total(), 2);
    }

    #[test]
    fn drain_phases() {
        let d = Drain::default();
        assert!(!d.is_draining());
        assert_eq!(d.status(), None);
        d.begin(42);
        assert!(!d.is_draining());
        assert_eq!(d.status(), Some(("traffic-groups", 42)));
        d.close();
        assert!(d.is_draining());
        assert_eq!(d.status(), Some(("connections", 42)));
    }
}
