//! MonitorFsm on simulated time: instants are constructed, nothing sleeps.

use std::time::{Duration, Instant};

use super::*;

fn ms(t0: Instant, n: u64) -> Instant {
    t0 + Duration::from_millis(n)
}

/// interval 1000ms, timeout 200ms.
fn fsm(up: u32, down: u32) -> MonitorFsm {
    MonitorFsm::new(
        Duration::from_millis(1000),
        Duration::from_millis(200),
        up,
        down,
    )
}

fn done(id: u64, ok: bool, detail: &str) -> Input {
    Input::ProbeDone {
        id,
        ok,
        detail: detail.into(),
    }
}

fn changed(from: Health, to: Health, reason: &str) -> Output {
    Output::HealthChanged {
        from,
        to,
        reason: reason.into(),
    }
}

fn probe(id: u64, deadline: Instant) -> Output {
    Output::StartProbe { id, deadline }
}

/// Runs probe cycles from `t0` (after Start): cycle `i` starts at `t0 + i*1000ms` with probe
/// id `i+1` and finishes 10 ms later with `results[i]`; returns every HealthChanged.
fn cycles(m: &mut MonitorFsm, t0: Instant, first: u64, results: &[bool]) -> Vec<Output> {
    let mut changes = Vec::new();
    for (i, &ok) in results.iter().enumerate() {
        let c = first + i as u64;
        if c > 0 {
            assert_eq!(
                m.process(ms(t0, c * 1000), Input::Timer),
                vec![probe(c + 1, ms(t0, c * 1000 + 200))]
            );
        }
        let detail = if ok {
            ""
        } else {
            "connect: connection refused"
        };
        changes.extend(m.process(ms(t0, c * 1000 + 10), done(c + 1, ok, detail)));
    }
    changes
}

#[test]
fn nothing_before_start() {
    let t0 = Instant::now();
    let mut m = fsm(1, 1);
    assert_eq!(m.poll_timeout(), None);
    assert_eq!(m.health(), Health::Unchecked);
    assert!(m.process(t0, Input::Timer).is_empty());
    assert!(m.process(t0, done(1, true, "")).is_empty());
    assert_eq!(m.health(), Health::Unchecked);
}

#[test]
fn start_emits_a_probe_at_once() {
    let t0 = Instant::now();
    let mut m = fsm(1, 1);
    assert_eq!(m.process(t0, Input::Start), vec![probe(1, ms(t0, 200))]);
    assert_eq!(m.health(), Health::Unchecked);
    // A second Start changes nothing.
    assert!(m.process(ms(t0, 5), Input::Start).is_empty());
    assert_eq!(m.poll_timeout(), Some(ms(t0, 200)));
}

#[test]
fn first_success_is_decisive() {
    let t0 = Instant::now();
    let mut m = fsm(3, 3);
    m.process(t0, Input::Start);
    assert_eq!(
        m.process(ms(t0, 10), done(1, true, "")),
        vec![changed(
            Health::Unchecked,
            Health::Up,
            "first probe succeeded"
        )]
    );
    assert_eq!(m.health(), Health::Up);
}

#[test]
fn first_failure_is_decisive() {
    let t0 = Instant::now();
    let mut m = fsm(3, 3);
    m.process(t0, Input::Start);
    assert_eq!(
        m.process(ms(t0, 10), done(1, false, "connect: connection refused")),
        vec![changed(
            Health::Unchecked,
            Health::Down,
            "first probe failed: connect: connection refused"
        )]
    );
    assert_eq!(m.health(), Health::Down);
}

#[test]
fn down_count_3_takes_3_failures() {
    let t0 = Instant::now();
    let mut m = fsm(1, 3);
    m.process(t0, Input::Start);
    assert_eq!(cycles(&mut m, t0, 0, &[true]).len(), 1);
    assert!(cycles(&mut m, t0, 1, &[false, false]).is_empty());
    assert_eq!(m.health(), Health::Up);
    assert_eq!(
        cycles(&mut m, t0, 3, &[false]),
        vec![changed(
            Health::Up,
            Health::Down,
            "3 consecutive failures: connect: connection refused"
        )]
    );
    // Further failures report nothing more.
    assert!(cycles(&mut m, t0, 4, &[false, false]).is_empty());
    assert_eq!(m.health(), Health::Down);
}

#[test]
fn up_count_2_needs_2_successes() {
    let t0 = Instant::now();
    let mut m = fsm(2, 1);
    m.process(t0, Input::Start);
    assert_eq!(
        cycles(&mut m, t0, 0, &[false, true]),
        vec![changed(
            Health::Unchecked,
            Health::Down,
            "first probe failed: connect: connection refused"
        )]
    );
    assert_eq!(m.health(), Health::Down);
    assert_eq!(
        cycles(&mut m, t0, 2, &[true]),
        vec![changed(Health::Down, Health::Up, "2 consecutive successes")]
    );
    assert_eq!(
        cycles(&mut m, t0, 3, &[false]),
        vec![changed(
            Health::Up,
            Health::Down,
            "1 consecutive failure: connect: connection refused"
        )]
    );
}

#[test]
fn interleaved_results_reset_the_counts() {
    let t0 = Instant::now();
    let mut m = fsm(2, 2);
    m.process(t0, Input::Start);
    // Up, then alternating failures and successes never reach down_count.
    assert_eq!(cycles(&mut m, t0, 0, &[true]).len(), 1);
    assert!(cycles(&mut m, t0, 1, &[false, true, false, true, false]).is_empty());
    assert_eq!(m.health(), Health::Up);
    assert_eq!(
        cycles(&mut m, t0, 6, &[false]),
        vec![changed(
            Health::Up,
            Health::Down,
            "2 consecutive failures: connect: connection refused"
        )]
    );
    // Down: alternating successes and failures never reach up_count.
    assert!(cycles(&mut m, t0, 7, &[true, false, true, false, true]).is_empty());
    assert_eq!(m.health(), Health::Down);
    assert_eq!(
        cycles(&mut m, t0, 12, &[true]),
        vec![changed(Health::Down, Health::Up, "2 consecutive successes")]
    );
}

#[test]
fn timeout_counts_as_failure() {
    let t0 = Instant::now();
    let mut m = fsm(1, 1);
    m.process(t0, Input::Start);
    // A Timer before the deadline does nothing.
    assert!(m.process(ms(t0, 199), Input::Timer).is_empty());
    assert_eq!(
        m.process(ms(t0, 200), Input::Timer),
        vec![changed(
            Health::Unchecked,
            Health::Down,
            "first probe failed: timed out after 200ms"
        )]
    );
    assert_eq!(m.poll_timeout(), Some(ms(t0, 1000)));
}

#[test]
fn late_result_is_ignored() {
    let t0 = Instant::now();
    let mut m = fsm(1, 1);
    m.process(t0, Input::Start);
    assert_eq!(m.process(ms(t0, 200), Input::Timer).len(), 1);
    assert_eq!(m.health(), Health::Down);
    // Probe 1 reports after its deadline: ignored, no start either.
    assert!(m.process(ms(t0, 300), done(1, true, "")).is_empty());
    assert_eq!(m.health(), Health::Down);
    // Probe 2 starts on time; a stale or unknown id during it is ignored too.
    assert_eq!(
        m.process(ms(t0, 1000), Input::Timer),
        vec![probe(2, ms(t0, 1200))]
    );
    assert!(m.process(ms(t0, 1010), done(1, true, "")).is_empty());
    assert!(m.process(ms(t0, 1010), done(7, true, "")).is_empty());
    assert_eq!(
        m.process(ms(t0, 1020), done(2, true, "")),
        vec![changed(Health::Down, Health::Up, "1 consecutive success")]
    );
    // And its own late duplicate changes nothing.
    assert!(m.process(ms(t0, 1030), done(2, false, "x")).is_empty());
    assert_eq!(m.health(), Health::Up);
}

#[test]
fn probe_in_flight_delays_next_start() {
    let t0 = Instant::now();
    // timeout longer than the interval.
    let mut m = MonitorFsm::new(Duration::from_millis(100), Duration::from_millis(300), 1, 1);
    assert_eq!(m.process(t0, Input::Start), vec![probe(1, ms(t0, 300))]);
    // The start due at 100 waits for probe 1.
    assert_eq!(m.poll_timeout(), Some(ms(t0, 300)));
    assert!(m.process(ms(t0, 100), Input::Timer).is_empty());
    // Probe 1 finishes at 150: the overdue start happens right then.
    assert_eq!(
        m.process(ms(t0, 150), done(1, true, "")),
        vec![
            changed(Health::Unchecked, Health::Up, "first probe succeeded"),
            probe(2, ms(t0, 450)),
        ]
    );
    assert_eq!(m.poll_timeout(), Some(ms(t0, 450)));
    // Probe 2 times out at 450: failure, then the overdue start at once.
    assert_eq!(
        m.process(ms(t0, 450), Input::Timer),
        vec![
            changed(
                Health::Up,
                Health::Down,
                "1 consecutive failure: timed out after 300ms"
            ),
            probe(3, ms(t0, 750)),
        ]
    );
    // Probe 3 finishes before its interval is up: the next start is at 450 + 100.
    assert!(m.process(ms(t0, 500), done(3, false, "refused")).is_empty());
    assert_eq!(m.poll_timeout(), Some(ms(t0, 550)));
}

#[test]
fn poll_timeout_values_are_exact() {
    let t0 = Instant::now();
    let mut m = fsm(1, 1);
    assert_eq!(m.poll_timeout(), None);
    m.process(t0, Input::Start);
    // In flight: the deadline.
    assert_eq!(m.poll_timeout(), Some(ms(t0, 200)));
    m.process(ms(t0, 50), done(1, true, ""));
    // Idle: the next start.
    assert_eq!(m.poll_timeout(), Some(ms(t0, 1000)));
    // A spurious early Timer changes nothing.
    assert!(m.process(ms(t0, 999), Input::Timer).is_empty());
    assert_eq!(m.poll_timeout(), Some(ms(t0, 1000)));
    assert_eq!(
        m.process(ms(t0, 1000), Input::Timer),
        vec![probe(2, ms(t0, 1200))]
    );
    assert_eq!(m.poll_timeout(), Some(ms(t0, 1200)));
    // A late Timer: the probe starts when fed, the next one an interval after that.
    m.process(ms(t0, 1100), done(2, true, ""));
    assert_eq!(
        m.process(ms(t0, 2050), Input::Timer),
        vec![probe(3, ms(t0, 2250))]
    );
    m.process(ms(t0, 2060), done(3, true, ""));
    assert_eq!(m.poll_timeout(), Some(ms(t0, 3050)));
}

#[test]
fn timeout_equal_to_interval_fails_and_restarts_in_one_timer() {
    let t0 = Instant::now();
    let mut m = MonitorFsm::new(Duration::from_millis(50), Duration::from_millis(50), 1, 1);
    m.process(t0, Input::Start);
    assert_eq!(
        m.process(ms(t0, 50), Input::Timer),
        vec![
            changed(
                Health::Unchecked,
                Health::Down,
                "first probe failed: timed out after 50ms"
            ),
            probe(2, ms(t0, 100)),
        ]
    );
}

#[test]
fn zero_counts_and_durations_are_clamped() {
    let t0 = Instant::now();
    let mut m = MonitorFsm::new(Duration::ZERO, Duration::ZERO, 0, 0);
    assert_eq!(m.process(t0, Input::Start), vec![probe(1, ms(t0, 1))]);
    assert_eq!(m.process(ms(t0, 1), done(1, true, "")).len(), 2);
    assert_eq!(m.health(), Health::Up);
    let out = m.process(ms(t0, 1), done(2, false, "multi\nline  detail"));
    assert_eq!(
        out[0],
        changed(
            Health::Up,
            Health::Down,
            "1 consecutive failure: multi line detail"
        )
    );
}

#[test]
fn health_display_and_serde() {
    assert_eq!(Health::Unchecked.to_string(), "unchecked");
    assert_eq!(Health::Up.to_string(), "up");
    assert_eq!(Health::Down.to_string(), "down");
    assert_eq!(serde_json::to_string(&Health::Up).unwrap(), "\"up\"");
    assert_eq!(
        serde_json::from_str::<Health>("\"unchecked\"").unwrap(),
        Health::Unchecked
    );
}

#[test]
fn a_skipped_probe_moves_neither_count_nor_health() {
    let t0 = Instant::now();
    let mut m = fsm(1, 2);
    assert_eq!(m.process(t0, Input::Start), vec![probe(1, ms(t0, 200))]);
    assert_eq!(
        m.process(ms(t0, 10), done(1, true, "")),
        vec![changed(
            Health::Unchecked,
            Health::Up,
            "first probe succeeded"
        )]
    );
    // One real failure, then skipped probes (EMFILE here) by the dozen: still up, and the
    // failure count is not advanced by them.
    assert_eq!(
        m.process(ms(t0, 1000), Input::Timer),
        vec![probe(2, ms(t0, 1200))]
    );
    assert!(m
        .process(ms(t0, 1010), done(2, false, "connect: connection refused"))
        .is_empty());
    for c in 2..20u64 {
        assert_eq!(
            m.process(ms(t0, c * 1000), Input::Timer),
            vec![probe(c + 1, ms(t0, c * 1000 + 200))]
        );
        assert!(m
            .process(ms(t0, c * 1000 + 10), Input::ProbeSkipped { id: c + 1 })
            .is_empty());
        assert_eq!(m.health(), Health::Up);
        assert_eq!(
            m.poll_timeout(),
            Some(ms(t0, (c + 1) * 1000)),
            "next start, no probe in flight"
        );
    }
    // A skip of a probe not in flight is ignored.
    assert!(m
        .process(ms(t0, 19_500), Input::ProbeSkipped { id: 3 })
        .is_empty());
    // The next real failure is the second in a row: down.
    assert_eq!(
        m.process(ms(t0, 20_000), Input::Timer),
        vec![probe(21, ms(t0, 20_200))]
    );
    assert_eq!(
        m.process(
            ms(t0, 20_010),
            done(21, false, "connect: connection refused")
        ),
        vec![changed(
            Health::Up,
            Health::Down,
            "2 consecutive failures: connect: connection refused"
        )]
    );
}
