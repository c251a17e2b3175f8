//! The health-monitor state machine for one member and one monitor, as a sans-IO core.
//!
//! [`MonitorFsm::process`] takes the current time and one [`Input`] and returns what the caller
//! must do ([`Output`]s: start a probe, report a health change). Timers are data: the core keeps
//! the probe deadline and the next probe start, [`MonitorFsm::poll_timeout`] says when it next
//! needs [`Input::Timer`]. Every transition is therefore tested on simulated time.
//!
//! Semantics:
//! - [`Input::Start`] starts probe 1 at once (deadline `now + timeout`) and schedules the next
//!   probe start at `now + interval`; a second `Start` is ignored. Before `Start`, every input is
//!   ignored and [`MonitorFsm::poll_timeout`] is `None`.
//! - At most one probe is in flight. When the next start falls due while a probe still runs,
//!   the start waits until that probe finishes ([`Input::ProbeDone`]) or reaches its deadline,
//!   and happens right then; the start after it is `interval` later.
//! - A probe with no `ProbeDone` by its deadline has failed ("timed out after 200ms"). A
//!   `ProbeDone` whose id is not the probe in flight (late, after its deadline) is ignored.
//! - Health starts [`Health::Unchecked`]. The first result decides (success → Up, failure →
//!   Down), so a dead member gets no traffic for `down_count` intervals after start. After that,
//!   `down_count` consecutive failures take an Up member Down and `up_count` consecutive
//!   successes bring a Down member Up; a success resets the failure count and vice versa.
//!   Counts of 0 are taken as 1.
//! - [`Output::HealthChanged`] carries a one-line reason for logs and `lbctl`, e.g.
//!   "3 consecutive failures: connect: connection refused" or "2 consecutive successes".
//! - [`Input::ProbeSkipped`] (a probe lbd could not make: a local error) ends the probe in
//!   flight with no result: neither count moves, health stays.
//! - A zero interval or timeout is taken as 1 ms so that no driver can spin (rejecting them is
//!   the configuration's job).
//!
//! This module must not do I/O, read the clock, or panic on any input sequence.

use std::fmt;
use std::time::{Duration, Instant};

/// A member's health as one monitor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// No probe has finished yet.
    Unchecked,
    Up,
    Down,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Unchecked => "unchecked",
            Health::Up => "up",
            Health::Down => "down",
        })
    }
}

/// Events the driver feeds the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Begin monitoring.
    Start,
    /// Time has reached [`MonitorFsm::poll_timeout`].
    Timer,
    /// Probe `id` finished; `detail` says why it failed (ignored on success).
    ProbeDone { id: u64, ok: bool, detail: String },
    /// Probe `id` could not be made for a local reason (this host out of descriptors, buffers,
    /// ports): it says nothing of the member, so no count and no health change.
    ProbeSkipped { id: u64 },
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Run probe `id` now; the fsm itself counts it failed at `deadline` if no ProbeDone came.
    StartProbe { id: u64, deadline: Instant },
    /// Health changed; `reason` is one line for logs and `lbctl`.
    HealthChanged {
        from: Health,
        to: Health,
        reason: String,
    },
}

/// One member's health under one monitor (see the module documentation).
#[derive(Debug, Clone)]
pub struct MonitorFsm {
    interval: Duration,
    timeout: Duration,
    up_count: u32,
    down_count: u32,
    health: Health,
    started: bool,
    /// Id of the last probe started (ids start at 1).
    last_id: u64,
    /// The probe in flight and its deadline.
    in_flight: Option<(u64, Instant)>,
    /// When the next probe is due (it waits for the one in flight, if any).
    next_start: Option<Instant>,
    successes: u32,
    failures: u32,
}

impl MonitorFsm {
    pub fn new(interval: Duration, timeout: Duration, up_count: u32, down_count: u32) -> Self {
        let min = Duration::from_millis(1);
        MonitorFsm {
            interval: interval.max(min),
            timeout: timeout.max(min),
            up_count: up_count.max(1),
            down_count: down_count.max(1),
            health: Health::Unchecked,
            started: false,
            last_id: 0,
            in_flight: None,
            next_start: None,
            successes: 0,
            failures: 0,
        }
    }

    pub fn process(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Start => {
                if !self.started {
                    self.started = true;
                    self.start_probe(now, &mut out);
                }
            }
            Input::Timer => {
                if let Some((_, deadline)) = self.in_flight {
                    if now >= deadline {
                        self.in_flight = None;
                        let detail = format!(
                            "timed out after {}",
                            humantime::format_duration(self.timeout)
                        );
                        self.record(false, &detail, &mut out);
                    }
                }
                self.start_if_due(now, &mut out);
            }
            Input::ProbeDone { id, ok, detail } => {
                if matches!(self.in_flight, Some((current, _)) if current == id) {
                    self.in_flight = None;
                    self.record(ok, &detail, &mut out);
                    self.start_if_due(now, &mut out);
                }
            }
            Input::ProbeSkipped { id } => {
                if matches!(self.in_flight, Some((current, _)) if current == id) {
                    self.in_flight = None;
                    self.start_if_due(now, &mut out);
                }
            }
        }
        out
    }

    /// When the driver must feed [`Input::Timer`] next (None before Start).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.in_flight {
            Some((_, deadline)) => Some(deadline),
            None => self.next_start,
        }
    }

    pub fn health(&self) -> Health {
        self.health
    }

    fn start_if_due(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.in_flight.is_none() && self.next_start.is_some_and(|t| now >= t) {
            self.start_probe(now, out);
        }
    }

    fn start_probe(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.last_id += 1;
        let deadline = now + self.timeout;
        self.in_flight = Some((self.last_id, deadline));
        self.next_start = Some(now + self.interval);
        out.push(Output::StartProbe {
            id: self.last_id,
            deadline,
        });
    }

    fn record(&mut self, ok: bool, detail: &str, out: &mut Vec<Output>) {
        let from = self.health;
        let (to, reason) = if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            match from {
                Health::Unchecked => (Health::Up, "first probe succeeded".to_string()),
                Health::Down if self.successes >= self.up_count => (
                    Health::Up,
                    count_text(self.successes, "success", "successes"),
                ),
                _ => return,
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            let with_detail = |head: String| {
                if detail.is_empty() {
                    head
                } else {
                    format!("{head}: {}", one_line(detail))
                }
            };
            match from {
                Health::Unchecked => (Health::Down, with_detail("first probe failed".into())),
                Health::Up if self.failures >= self.down_count => (
                    Health::Down,
                    with_detail(count_text(self.failures, "failure", "failures")),
                ),
                _ => return,
            }
        };
        self.health = to;
        out.push(Output::HealthChanged { from, to, reason });
    }
}

/// "1 consecutive success", "3 consecutive failures".
fn count_text(n: u32, one: &str, many: &str) -> String {
    format!("{n} consecutive {}", if n == 1 { one } else { many })
}

/// A probe detail folded onto one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests;
