//! Passive health, sans-IO: a member whose connects failed `failures` times in a row (connect
//! timeouts and resets/refusals; never local errors such as EMFILE, see
//! [`crate::proxy::is_local_error`]) is taken out of its pool's selection for `retry`; after
//! that it is tried again. A success, or a successful monitor probe, clears it. The first
//! connect failure after a retry (the count is still at the threshold) takes it out again.
//!
//! This module does no I/O and reads no clock: callers pass the time (Unix ms).

use std::time::Duration;

/// What the pool's configuration says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PassiveConfig {
    /// Consecutive connect failures that take the member out; 0 = passive health off.
    pub failures: u32,
    /// How long it stays out before it is tried again.
    pub retry: Duration,
}

/// One member's passive-health state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Passive {
    pub config: PassiveConfig,
    /// Connect failures since the last success.
    consecutive: u32,
    /// Out until then (Unix ms); None when in.
    out_until: Option<u64>,
    /// How many times it was taken out.
    trips: u64,
}

/// What a connect result did to the member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    /// Taken out (until the given Unix ms).
    TakenOut(u64),
    /// Back in (it was out, or on retry, and a connect or probe succeeded).
    BackIn,
}

impl Passive {
    pub fn new(config: PassiveConfig) -> Passive {
        Passive {
            config,
            ..Passive::default()
        }
    }

    /// A new configuration (reload); turning it off brings the member back.
    pub fn configure(&mut self, config: PassiveConfig) {
        self.config = config;
        if config.failures == 0 {
            self.consecutive = 0;
            self.out_until = None;
        }
    }

    /// A connect to the member failed (not for a local reason) at `now`.
    pub fn failure(&mut self, now: u64) -> Change {
        self.consecutive = self.consecutive.saturating_add(1);
        if self.config.failures == 0 || self.consecutive < self.config.failures {
            return Change::None;
        }
        if self.is_out(now) {
            return Change::None; // a connect chosen before it was taken out
        }
        let until = now.saturating_add(self.config.retry.as_millis() as u64);
        self.out_until = Some(until);
        self.trips += 1;
        Change::TakenOut(until)
    }

    /// A connect to the member succeeded (or a monitor probe did).
    pub fn success(&mut self) -> Change {
        let was = self.out_until.take().is_some() || self.consecutive >= self.threshold();
        self.consecutive = 0;
        if was && self.config.failures > 0 {
            Change::BackIn
        } else {
            Change::None
        }
    }

    fn threshold(&self) -> u32 {
        if self.config.failures == 0 {
            u32::MAX
        } else {
            self.config.failures
        }
    }

    /// Out of the selection at `now`.
    pub fn is_out(&self, now: u64) -> bool {
        self.out_until.is_some_and(|t| now < t)
    }

    /// When it comes back in, if it is out (for whoever must recompute the selection then).
    pub fn out_until(&self) -> Option<u64> {
        self.out_until
    }

    /// Connect failures in a row now.
    pub fn consecutive(&self) -> u32 {
        self.consecutive
    }

    /// Times taken out since start.
    pub fn trips(&self) -> u64 {
        self.trips
    }

    /// Why it is out at `now`, as `lbctl` shows it: "passive: 5 connect failures".
    pub fn reason(&self, now: u64) -> Option<String> {
        self.is_out(now)
            .then(|| format!("passive: {} connect failures", self.consecutive))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(n: u32, retry_ms: u64) -> PassiveConfig {
        PassiveConfig {
            failures: n,
            retry: Duration::from_millis(retry_ms),
        }
    }

    #[test]
    fn off_when_zero() {
        let mut p = Passive::new(cfg(0, 1000));
        for t in 0..100 {
            assert_eq!(p.failure(t), Change::None);
        }
        assert!(!p.is_out(100));
        assert_eq!(p.success(), Change::None);
        assert_eq!(p.trips(), 0);
    }

    #[test]
    fn n_failures_in_a_row_take_it_out_until_the_retry() {
        let mut p = Passive::new(cfg(3, 1000));
        assert_eq!(p.failure(10), Change::None);
        assert_eq!(p.failure(11), Change::None);
        assert_eq!(p.failure(12), Change::TakenOut(1012));
        assert!(p.is_out(12) && p.is_out(1011));
        assert_eq!(
            p.reason(500).as_deref(),
            Some("passive: 3 connect failures")
        );
        // Failures of connects chosen before it went out do not extend it.
        assert_eq!(p.failure(20), Change::None);
        assert_eq!(p.out_until(), Some(1012));
        assert!(!p.is_out(1012), "back on retry");
        assert_eq!(p.reason(1012), None);
        // On retry, one failure takes it out again at once.
        assert_eq!(p.failure(1100), Change::TakenOut(2100));
        assert_eq!(p.trips(), 2);
        // A success (connect or monitor) brings it back and resets the count.
        assert_eq!(p.success(), Change::BackIn);
        assert!(!p.is_out(1200));
        assert_eq!(p.failure(1300), Change::None);
        assert_eq!(p.consecutive(), 1);
    }

    #[test]
    fn a_success_in_between_resets_the_count() {
        let mut p = Passive::new(cfg(2, 1000));
        assert_eq!(p.failure(0), Change::None);
        assert_eq!(p.success(), Change::None);
        assert_eq!(p.failure(1), Change::None);
        assert!(!p.is_out(2));
        assert_eq!(p.failure(2), Change::TakenOut(1002));
    }

    #[test]
    fn turning_it_off_brings_the_member_back() {
        let mut p = Passive::new(cfg(1, 60_000));
        assert_eq!(p.failure(0), Change::TakenOut(60_000));
        p.configure(cfg(0, 60_000));
        assert!(!p.is_out(1));
        assert_eq!(p.failure(2), Change::None);
    }
}
