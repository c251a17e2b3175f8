//! Placement on simulated time: three devices A, B, C in a small in-test network that carries
//! every heartbeat to the others (1ms later unless a test says otherwise). Nothing sleeps.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::*;

const INTERVAL: u64 = 100;
const DEAD: u64 = 500;
const FAILBACK: u64 = 1000;
/// The maximum wait for a mirror to be in sync, where a test turns mirroring on.
const SYNC: u64 = 30_000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn tg(name: &str, order: [&str; 3], auto_failback: bool) -> TrafficGroupSpec {
    TrafficGroupSpec {
        name: name.into(),
        ha_order: order.iter().map(|s| s.to_string()).collect(),
        auto_failback,
        failback_delay: ms(FAILBACK),
        sync_wait: None,
        sync_all_groups: false,
        load_factor: 1,
    }
}

fn spec(me: &str, devices: &[&str]) -> GroupSpec {
    spec_sync(me, devices, None)
}

/// The group with every TG's `sync_wait` set to `sync_wait` (mirroring on when Some).
fn spec_sync(me: &str, devices: &[&str], sync_wait: Option<Duration>) -> GroupSpec {
    let tgs = [
        tg("tg-1", ["A", "B", "C"], true),
        tg("tg-2", ["B", "C", "A"], true),
        tg("tg-3", ["C", "A", "B"], false),
    ];
    GroupSpec {
        me: me.into(),
        devices: devices.iter().map(|s| s.to_string()).collect(),
        traffic_groups: tgs
            .into_iter()
            .map(|t| TrafficGroupSpec { sync_wait, ..t })
            .collect(),
        heartbeat_interval: ms(INTERVAL),
        dead_after: ms(DEAD),
        capacity: BTreeMap::new(),
    }
}

/// What happened, for assertions.
#[derive(Debug, Clone)]
struct Event {
    at: Instant,
    device: String,
    out: Output,
}

struct Node {
    p: Placement,
    /// Hung: fed nothing, its heartbeats are not delivered, nothing is delivered to it.
    hung: bool,
    /// TGs active here, from its outputs.
    holds: BTreeSet<String>,
}

struct Net {
    t0: Instant,
    now: Instant,
    nodes: BTreeMap<String, Node>,
    /// (deliver at, to, heartbeat).
    queue: VecDeque<(Instant, String, Heartbeat)>,
    delay: Duration,
    /// (from, to) pairs whose heartbeats are lost.
    cut: BTreeSet<(String, String)>,
    /// Heartbeats to a hung device wait in its socket and arrive at once when it resumes.
    backlog: bool,
    events: Vec<Event>,
    /// Per TG, the longest time two devices held it at once since the last reset.
    overlap: BTreeMap<String, Duration>,
    overlap_since: BTreeMap<String, Instant>,
}

impl Net {
    fn new(names: &[&str], devices: &[&str]) -> Net {
        Net::new_sync(names, devices, None)
    }

    fn new_sync(names: &[&str], devices: &[&str], sync_wait: Option<Duration>) -> Net {
        let t0 = Instant::now();
        let nodes = names
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    Node {
                        p: Placement::new(spec_sync(n, devices, sync_wait), 1_000),
                        hung: false,
                        holds: BTreeSet::new(),
                    },
                )
            })
            .collect();
        Net {
            t0,
            now: t0,
            nodes,
            queue: VecDeque::new(),
            delay: ms(1),
            cut: BTreeSet::new(),
            backlog: false,
            events: Vec::new(),
            overlap: BTreeMap::new(),
            overlap_since: BTreeMap::new(),
        }
    }

    fn three() -> Net {
        let all = ["A", "B", "C"];
        let mut net = Net::new(&all, &all);
        for n in all {
            net.feed(n, Input::Start);
        }
        net
    }

    fn at(&self) -> u64 {
        self.now.duration_since(self.t0).as_millis() as u64
    }

    fn feed(&mut self, device: &str, input: Input) -> Vec<Output> {
        let now = self.now;
        let others: Vec<String> = self
            .nodes
            .keys()
            .filter(|n| n.as_str() != device)
            .cloned()
            .collect();
        let node = self.nodes.get_mut(device).unwrap();
        let outs = node.p.process(now, input);
        for o in &outs {
            match o {
                Output::Activate { traffic_group, .. } => {
                    assert!(
                        node.holds.insert(traffic_group.clone()),
                        "{device} activated {traffic_group} twice"
                    );
                }
                Output::Release { traffic_group, .. } => {
                    assert!(
                        node.holds.remove(traffic_group),
                        "{device} released {traffic_group} it did not hold"
                    );
                }
                Output::SendHeartbeat(hb) => {
                    for to in &others {
                        self.queue
                            .push_back((now + self.delay, to.clone(), hb.clone()));
                    }
                }
            }
            self.events.push(Event {
                at: now,
                device: device.into(),
                out: o.clone(),
            });
        }
        outs
    }

    /// Runs the network for `d` in 1ms steps.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += ms(1);
            let now = self.now;
            let mut later = VecDeque::new();
            // What is due for each device arrives together, as the driver reads a socket's
            // backlog: one batch.
            let mut due: BTreeMap<String, Vec<Heartbeat>> = BTreeMap::new();
            while let Some((at, to, hb)) = self.queue.pop_front() {
                if at > now {
                    later.push_back((at, to, hb));
                    continue;
                }
                if self.cut.contains(&(hb.device.clone(), to.clone())) {
                    continue;
                }
                if !self.nodes[&to].hung {
                    due.entry(to).or_default().push(hb);
                } else if self.backlog {
                    later.push_back((at, to, hb));
                }
            }
            self.queue = later;
            for (to, mut hbs) in due {
                if hbs.len() == 1 {
                    self.feed(&to, Input::Heartbeat(hbs.remove(0)));
                } else {
                    self.feed(&to, Input::Heartbeats(hbs));
                }
            }
            let names: Vec<String> = self.nodes.keys().cloned().collect();
            for n in names {
                let node = &self.nodes[&n];
                if !node.hung && node.p.poll_timeout().is_some_and(|t| t <= now) {
                    self.feed(&n, Input::Timer);
                }
            }
            self.track_overlap();
        }
    }

    fn track_overlap(&mut self) {
        for tg in ["tg-1", "tg-2", "tg-3"] {
            let holders = self.holders(tg).len();
            if holders > 1 {
                let since = *self.overlap_since.entry(tg.into()).or_insert(self.now);
                let o = self.overlap.entry(tg.into()).or_default();
                *o = (*o).max(self.now - since);
            } else {
                self.overlap_since.remove(tg);
            }
        }
    }

    fn holders(&self, tg: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.holds.contains(tg))
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn events_since(&self, t: Instant) -> Vec<(String, Output)> {
        self.events
            .iter()
            .filter(|e| e.at >= t && !matches!(e.out, Output::SendHeartbeat(_)))
            .map(|e| (e.device.clone(), e.out.clone()))
            .collect()
    }

    fn status(&self, device: &str) -> GroupStatus {
        self.nodes[device].p.status(self.now)
    }

    fn tg_status(&self, device: &str, tg: &str) -> TrafficGroupStatus {
        self.status(device)
            .traffic_groups
            .into_iter()
            .find(|t| t.name == tg)
            .unwrap()
    }

    fn assert_steady(&self) {
        for (tgn, dev) in [("tg-1", "A"), ("tg-2", "B"), ("tg-3", "C")] {
            assert_eq!(
                self.holders(tgn),
                vec![dev.to_string()],
                "{tgn} at {}ms",
                self.at()
            );
        }
    }
}

fn activate(dev: &str, tg: &str) -> impl Fn(&(String, Output)) -> bool {
    let (dev, tg) = (dev.to_string(), tg.to_string());
    move |(d, o)| {
        *d == dev && matches!(o, Output::Activate { traffic_group, .. } if *traffic_group == tg)
    }
}

fn release(dev: &str, tg: &str) -> impl Fn(&(String, Output)) -> bool {
    let (dev, tg) = (dev.to_string(), tg.to_string());
    move |(d, o)| {
        *d == dev && matches!(o, Output::Release { traffic_group, .. } if *traffic_group == tg)
    }
}

fn reason(o: &Output) -> &str {
    match o {
        Output::Activate { reason, .. } | Output::Release { reason, .. } => reason,
        Output::SendHeartbeat(_) => "",
    }
}

// ---- the pure placement function ----

fn dev(name: &str, usable: bool, usable_for: u64, holds: &[(&str, u64)]) -> DeviceView {
    DeviceView {
        name: name.into(),
        usable,
        usable_for: ms(usable_for),
        holds: holds.iter().map(|(t, d)| (t.to_string(), ms(*d))).collect(),
        generations: BTreeMap::new(),
        ordered: BTreeSet::new(),
        unsynced: BTreeSet::new(),
    }
}

#[test]
fn place_first_usable_in_ha_order() {
    let t = tg("tg-2", ["B", "C", "A"], true);
    let view = View {
        devices: vec![
            dev("A", true, 5000, &[]),
            dev("B", false, 0, &[]),
            dev("C", true, 5000, &[]),
        ],
        orders: BTreeMap::new(),
        ..Default::default()
    };
    let d = place(&t, &view);
    assert_eq!(d.active.as_deref(), Some("C"));
    assert_eq!(d.rule, Rule::First);
    assert_eq!(d.next_active.as_deref(), Some("A"));
}

#[test]
fn place_holder_keeps_it_until_failback_is_due() {
    let t = tg("tg-2", ["B", "C", "A"], true);
    let mut view = View {
        devices: vec![
            dev("A", true, 9000, &[]),
            dev("B", true, 999, &[]),
            dev("C", true, 9000, &[("tg-2", 3000)]),
        ],
        orders: BTreeMap::new(),
        ..Default::default()
    };
    let d = place(&t, &view);
    assert_eq!((d.active.as_deref(), &d.rule), (Some("C"), &Rule::Holder));
    assert_eq!(d.next_active.as_deref(), Some("B"));
    view.devices[1].usable_for = ms(1000);
    let d = place(&t, &view);
    assert_eq!(d.active.as_deref(), Some("B"));
    assert_eq!(d.rule, Rule::Failback { from: "C".into() });
    // No failback without auto_failback.
    let off = TrafficGroupSpec {
        auto_failback: false,
        ..t.clone()
    };
    assert_eq!(place(&off, &view).active.as_deref(), Some("C"));
    // A device that was already up when the holder took it gets it back too (the holder took
    // it while that device could not: unsynced, say)…
    view.devices[1].usable_for = ms(5000);
    assert_eq!(place(&t, &view).active.as_deref(), Some("B"));
    // …but not from a holder that took it by a manual order.
    view.devices[2].ordered.insert("tg-2".into());
    assert_eq!(place(&t, &view).active.as_deref(), Some("C"));
    // One that came back after the order moved it does.
    view.devices[1].usable_for = ms(2000);
    assert_eq!(place(&t, &view).active.as_deref(), Some("B"));
}

#[test]
fn place_order_wins_when_its_target_is_usable() {
    let t = tg("tg-1", ["A", "B", "C"], true);
    let order = Order {
        id: 7,
        traffic_group: "tg-1".into(),
        to: "C".into(),
    };
    let mut view = View {
        devices: vec![
            dev("A", true, 9000, &[("tg-1", 9000)]),
            dev("B", true, 9000, &[]),
            dev("C", true, 9000, &[]),
        ],
        orders: [("tg-1".to_string(), order)].into(),
        ..Default::default()
    };
    let d = place(&t, &view);
    assert_eq!(
        (d.active.as_deref(), &d.rule),
        (Some("C"), &Rule::Order { id: 7 })
    );
    view.devices[2].usable = false;
    assert_eq!(place(&t, &view).active.as_deref(), Some("A"));
}

#[test]
fn place_conflict_goes_to_the_claimant_first_in_ha_order() {
    let t = tg("tg-3", ["C", "A", "B"], false);
    let view = View {
        devices: vec![
            dev("A", true, 9000, &[("tg-3", 10)]),
            dev("B", true, 9000, &[("tg-3", 5000)]),
            dev("C", false, 0, &[]),
        ],
        orders: BTreeMap::new(),
        ..Default::default()
    };
    assert_eq!(place(&t, &view).active.as_deref(), Some("A"));
}

#[test]
fn place_nobody_when_nobody_is_usable() {
    let t = tg("tg-1", ["A", "B", "C"], true);
    let view = View {
        devices: vec![dev("A", false, 0, &[]), dev("B", false, 0, &[("tg-1", 10)])],
        orders: BTreeMap::new(),
        ..Default::default()
    };
    let d = place(&t, &view);
    assert_eq!(
        (d.active, d.rule, d.next_active),
        (None, Rule::Nobody, None)
    );
}

// ---- the state machine in the simulated network ----

/// 1. Steady state after the listen period.
#[test]
fn steady_state() {
    let mut net = Net::three();
    net.run(ms(DEAD - 10));
    for tgn in ["tg-1", "tg-2", "tg-3"] {
        assert!(net.holders(tgn).is_empty(), "{tgn} claimed while listening");
    }
    net.run(ms(3000));
    net.assert_steady();
    // Exactly one Activate each, no Release.
    let evs = net.events_since(net.t0);
    assert_eq!(evs.len(), 3, "{evs:?}");
    for d in ["A", "B", "C"] {
        let s = net.status(d);
        assert_eq!(s.phase, "running");
        assert!(s.devices.iter().all(|d| d.alive && d.eligible));
        let next: Vec<_> = s
            .traffic_groups
            .iter()
            .map(|t| (t.active.clone().unwrap(), t.next_active.clone().unwrap()))
            .collect();
        let want =
            [("A", "B"), ("B", "C"), ("C", "A")].map(|(a, b)| (a.to_string(), b.to_string()));
        assert_eq!(next, want, "as {d} sees it");
    }
    assert_eq!(net.tg_status("A", "tg-1").state, TgState::Active);
    assert_eq!(net.tg_status("A", "tg-2").state, TgState::Standby);
    // Heartbeats every interval: ~35 in 3.5s, seq increasing.
    let seqs: Vec<u64> = net
        .events
        .iter()
        .filter(|e| e.device == "A")
        .filter_map(|e| match &e.out {
            Output::SendHeartbeat(hb) => Some(hb.seq),
            _ => None,
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    assert!((35..=40).contains(&seqs.len()), "{}", seqs.len());
    // The status serializes.
    let json = serde_json::to_string(&net.status("A")).unwrap();
    assert!(json.contains("\"next_active\":\"B\""), "{json}");
}

/// 2. B hangs: tg-2 goes to C within dead_after + one interval, nothing else moves.
fn hang_b(net: &mut Net) -> Instant {
    net.run(ms(2000));
    net.assert_steady();
    net.nodes.get_mut("B").unwrap().hung = true;
    let hung_at = net.now;
    net.run(ms(DEAD + INTERVAL));
    hung_at
}

#[test]
fn hung_device_loses_its_traffic_group_to_next_active() {
    let mut net = Net::three();
    let hung_at = hang_b(&mut net);
    let evs = net.events_since(hung_at);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert!(activate("C", "tg-2")(&evs[0]));
    assert!(
        reason(&evs[0].1).starts_with("B dead (no heartbeat for "),
        "{:?}",
        evs[0]
    );
    assert_eq!(
        net.nodes["C"].holds,
        ["tg-2", "tg-3"].map(String::from).into()
    );
    assert_eq!(net.nodes["A"].holds, ["tg-1"].map(String::from).into());
    // A agrees: C holds tg-2, its next-active is A.
    let s = net.tg_status("A", "tg-2");
    assert_eq!(
        (s.active.as_deref(), s.next_active.as_deref()),
        (Some("C"), Some("A"))
    );
    let b = net
        .status("A")
        .devices
        .into_iter()
        .find(|d| d.name == "B")
        .unwrap();
    assert!(!b.alive);
}

/// 3. B resumes after a long stop: it is told it was pre-empted before it says anything, then
///    tg-2 fails back to B after the failback delay with at most a heartbeat of overlap.
#[test]
fn resumed_device_learns_it_was_preempted_then_fails_back() {
    resume_b(false);
}

/// 3b. The same when B's socket kept what arrived while it was stopped.
#[test]
fn resumed_device_with_a_backlog_of_old_heartbeats() {
    resume_b(true);
}

fn resume_b(backlog: bool) {
    let mut net = Net::three();
    net.backlog = backlog;
    hang_b(&mut net);
    net.run(ms(10_000));
    // B's stopped process (and kernel) still has it.
    assert_eq!(net.holders("tg-2"), vec!["B".to_string(), "C".to_string()]);
    // Resume: B still believes it holds tg-2 (its kernel does).
    net.nodes.get_mut("B").unwrap().hung = false;
    let resumed = net.now;
    net.overlap.clear();
    net.run(ms(FAILBACK + 3 * INTERVAL + DEAD));

    let b_events: Vec<&Event> = net
        .events
        .iter()
        .filter(|e| e.device == "B" && e.at >= resumed)
        .collect();
    let rel = b_events
        .iter()
        .position(
            |e| matches!(&e.out, Output::Release { traffic_group, .. } if traffic_group == "tg-2"),
        )
        .expect("B releases tg-2");
    assert!(reason(&b_events[rel].out).starts_with("pre-empted while unresponsive"));
    for e in &b_events[..rel] {
        assert!(
            !matches!(&e.out, Output::SendHeartbeat(_)),
            "B sent a heartbeat before learning: {e:?}"
        );
    }
    let released_at = b_events[rel].at;
    assert!(released_at <= resumed + ms(2 * INTERVAL));

    // Failback: C releases and B activates, both once.
    let evs = net.events_since(released_at + ms(1));
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert!(evs.iter().any(release("C", "tg-2")));
    let act = evs
        .iter()
        .find(|e| activate("B", "tg-2")(e))
        .expect("B activates");
    assert!(reason(&act.1).starts_with("auto-failback to B"), "{act:?}");
    let at = net
        .events
        .iter()
        .find(|e| e.device == "B" && e.at > released_at && matches!(e.out, Output::Activate { .. }))
        .unwrap()
        .at;
    assert!(at >= released_at + ms(FAILBACK), "failed back too early");
    assert_eq!(net.holders("tg-2"), vec!["B".to_string()]);
    assert!(net.overlap.get("tg-2").copied().unwrap_or_default() <= ms(INTERVAL));
    net.assert_steady();
}

/// 4. `lbctl failover tg-1 --to C` on A: C activates, A releases, no failback afterwards.
#[test]
fn manual_failover_sticks() {
    let mut net = Net::three();
    net.run(ms(3000));
    let t = net.now;
    let outs = net.feed(
        "A",
        Input::Failover {
            traffic_group: "tg-1".into(),
            to: Some("C".into()),
        },
    );
    assert!(
        matches!(&outs[0], Output::Release { traffic_group, reason } if traffic_group == "tg-1" && reason.starts_with("manual failover order"))
    );
    let Some(Output::SendHeartbeat(hb)) = outs.last() else {
        panic!("no heartbeat: {outs:?}")
    };
    assert_eq!(hb.orders.len(), 1);
    assert_eq!(hb.orders[0].to, "C");
    assert!(hb.orders[0].id > 1_000 * 1_000);
    net.run(ms(10_000));
    let evs = net.events_since(t);
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert!(evs.iter().any(activate("C", "tg-1")));
    assert!(reason(&evs[1].1).starts_with("manual failover order"));
    assert_eq!(net.holders("tg-1"), vec!["C".to_string()]);
    for d in ["A", "B", "C"] {
        assert!(net.status(d).orders.is_empty(), "order not cleared on {d}");
        let s = net.tg_status(d, "tg-1");
        assert_eq!(
            (s.active.as_deref(), s.next_active.as_deref()),
            (Some("C"), Some("A"))
        );
    }
    // Without --to: next-active of tg-3 (C) is A.
    let t = net.now;
    net.feed(
        "B",
        Input::Failover {
            traffic_group: "tg-3".into(),
            to: None,
        },
    );
    net.run(ms(3000));
    let evs = net.events_since(t);
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert!(evs.iter().any(release("C", "tg-3")));
    assert!(evs.iter().any(activate("A", "tg-3")));
}

/// 5. Fail-safe: A ineligible releases tg-1 to B; eligible again, it fails back after the delay.
#[test]
fn ineligible_device_releases_and_fails_back() {
    let mut net = Net::three();
    net.run(ms(3000));
    let t = net.now;
    let outs = net.feed("A", Input::Eligible(false));
    assert!(
        matches!(&outs[0], Output::Release { traffic_group, reason } if traffic_group == "tg-1" && reason.starts_with("ineligible"))
    );
    assert!(matches!(&outs[1], Output::SendHeartbeat(hb) if !hb.eligible && hb.active.is_empty()));
    net.run(ms(3000));
    let evs = net.events_since(t);
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert!(activate("B", "tg-1")(&evs[1]));
    assert_eq!(reason(&evs[1].1), "A ineligible");
    // tg-3 (C, then A) has A as next-active no more.
    assert_eq!(net.tg_status("C", "tg-3").next_active.as_deref(), Some("B"));

    let t = net.now;
    net.feed("A", Input::Eligible(true));
    net.run(ms(FAILBACK - 10));
    assert!(net.events_since(t).is_empty());
    net.run(ms(INTERVAL));
    let evs = net.events_since(t);
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert!(evs.iter().any(release("B", "tg-1")));
    assert!(evs.iter().any(activate("A", "tg-1")));
    net.assert_steady();
}

/// 6. Two devices fed the same heartbeats compute the same placement.
#[test]
fn same_view_same_placement() {
    let mut net = Net::three();
    net.run(ms(2000));
    net.feed("A", Input::Eligible(false));
    net.run(ms(700));
    // Two observers (say D and E) that are not part of the group's traffic but hear it: use
    // A's and C's views, which both heard the same heartbeats.
    let a = net.status("A");
    let c = net.status("C");
    let pick = |s: &GroupStatus| -> Vec<_> {
        s.traffic_groups
            .iter()
            .map(|t| (t.active.clone(), t.placement.clone(), t.next_active.clone()))
            .collect()
    };
    assert_eq!(pick(&a), pick(&c));

    // And two fresh instances of the same device fed the same inputs agree exactly.
    let t0 = Instant::now();
    let mut x = Placement::new(spec("B", &["A", "B", "C"]), 5);
    let mut y = Placement::new(spec("B", &["A", "B", "C"]), 5);
    let hb = |device: &str, seq, active: &[&str]| Heartbeat {
        device: device.into(),
        epoch: 1,
        seq,
        sent_ms: 0,
        eligible: true,
        usable_ms: u64::MAX,
        active: active.iter().map(|s| Claim::new(*s, 1)).collect(),
        orders: vec![],
        unsynced: vec![],
        unavailable: vec![],
        config: None,
    };
    for p in [&mut x, &mut y] {
        p.process(t0, Input::Start);
        for i in 1..10u64 {
            let now = t0 + ms(100 * i);
            p.process(now, Input::Heartbeat(hb("A", i, &["tg-1", "tg-3"])));
            p.process(now, Input::Heartbeat(hb("C", i, &[])));
            p.process(now, Input::Timer);
        }
    }
    let now = t0 + ms(900);
    assert_eq!(x.status(now), y.status(now));
    let s = x.status(now);
    let got: Vec<_> = s
        .traffic_groups
        .iter()
        .map(|t| t.placement.clone().unwrap())
        .collect();
    assert_eq!(got, ["A", "B", "A"]);
}

/// 7. A lone device activates everything after listening.
#[test]
fn lone_device_takes_everything_after_listening() {
    let mut net = Net::new(&["A"], &["A", "B", "C"]);
    net.feed("A", Input::Start);
    net.run(ms(DEAD - 1));
    assert!(net.events_since(net.t0).is_empty());
    net.run(ms(INTERVAL));
    let evs = net.events_since(net.t0);
    assert_eq!(evs.len(), 3, "{evs:?}");
    assert_eq!(net.nodes["A"].holds.len(), 3);
    assert!(evs
        .iter()
        .all(|(_, o)| reason(o) == "first available in HA order"));

    // A group of one does not listen at all.
    let t0 = Instant::now();
    let mut p = Placement::new(spec("A", &["A"]), 1);
    let outs = p.process(t0, Input::Start);
    assert_eq!(
        outs.iter()
            .filter(|o| matches!(o, Output::Activate { .. }))
            .count(),
        3
    );
}

/// A device that restarts (new epoch) does not steal what its peers took meanwhile.
#[test]
fn restarted_device_does_not_steal() {
    let mut net = Net::three();
    net.run(ms(2000));
    net.nodes.get_mut("C").unwrap().hung = true;
    net.run(ms(1000));
    assert_eq!(net.holders("tg-3"), vec!["A".to_string(), "C".to_string()]);
    // C restarts: a new process with a new epoch, holding nothing.
    let c = Node {
        p: Placement::new(spec("C", &["A", "B", "C"]), 2_000),
        hung: false,
        holds: BTreeSet::new(),
    };
    net.nodes.insert("C".into(), c);
    let t = net.now;
    net.feed("C", Input::Start);
    net.run(ms(DEAD + INTERVAL));
    assert!(net.events_since(t).is_empty(), "{:?}", net.events_since(t));
    // tg-3 has no auto-failback: it stays on A for good.
    net.run(ms(5000));
    assert!(net.events_since(t).is_empty());
    assert_eq!(net.holders("tg-3"), vec!["A".to_string()]);
}

/// Heartbeats lost for less than dead_after change nothing; a late timer is a stall.
#[test]
fn poll_timeout_and_stall_detection() {
    let t0 = Instant::now();
    let mut p = Placement::new(spec("A", &["A", "B"]), 1);
    assert_eq!(p.poll_timeout(), None);
    assert!(p.process(t0, Input::Timer).is_empty());
    let outs = p.process(t0, Input::Start);
    assert!(matches!(&outs[..], [Output::SendHeartbeat(hb)] if hb.seq == 1 && hb.sent_ms == 1));
    assert_eq!(p.poll_timeout(), Some(t0 + ms(INTERVAL)));
    p.set_clock_ms(t0, 1_700_000_000_000);
    let outs = p.process(t0 + ms(100), Input::Timer);
    assert!(
        matches!(&outs[..], [Output::SendHeartbeat(hb)] if hb.seq == 2 && hb.sent_ms == 1_700_000_000_100)
    );
    // A timer 2s late: resuming, nothing is sent until it has listened.
    let late = t0 + ms(2200);
    assert!(p.process(late, Input::Timer).is_empty());
    assert_eq!(p.status(late).phase, "resuming");
    let outs = p.process(late + ms(DEAD), Input::Timer);
    assert_eq!(p.status(late + ms(DEAD)).phase, "running");
    assert!(outs.iter().any(|o| matches!(o, Output::SendHeartbeat(_))));
}

/// A restarted device (new epoch) that is first in HA order gets its TG back by auto-failback:
/// every device agrees when, so there is neither a long gap nor a long overlap.
#[test]
fn restarted_device_gets_its_traffic_group_back() {
    let mut net = Net::three();
    net.run(ms(2000));
    net.nodes.get_mut("A").unwrap().hung = true;
    net.run(ms(1000));
    net.nodes.insert(
        "A".into(),
        Node {
            p: Placement::new(spec("A", &["A", "B", "C"]), 2_000),
            hung: false,
            holds: BTreeSet::new(),
        },
    );
    let t = net.now;
    net.feed("A", Input::Start);
    net.overlap.clear();
    let mut longest_gap = Duration::ZERO;
    let mut gap_since = None;
    for _ in 0..3000 {
        net.run(ms(1));
        if net.holders("tg-1").is_empty() {
            let since = *gap_since.get_or_insert(net.now);
            longest_gap = longest_gap.max(net.now - since);
        } else {
            gap_since = None;
        }
    }
    let evs = net.events_since(t);
    // Only tg-1 moves.
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert!(evs.iter().any(release("B", "tg-1")));
    assert!(evs.iter().any(activate("A", "tg-1")));
    let act = evs.iter().find(|e| activate("A", "tg-1")(e)).unwrap();
    assert!(reason(&act.1).starts_with("auto-failback to A"), "{act:?}");
    assert!(longest_gap <= ms(INTERVAL), "{longest_gap:?}");
    assert!(net.overlap.get("tg-1").copied().unwrap_or_default() <= ms(INTERVAL));
    net.assert_steady();
}

/// A partition heals: every TG claimed on both sides stays with the newer claim (the side that
/// took it during the partition: it sent the last gratuitous ARP, the router's neighbour entry
/// points at it) and the other side releases it at once; then auto-failback brings the TGs
/// that have it home after the failback delay, and the one without it stays.
#[test]
fn split_brain_heals_to_the_newer_claim_then_fails_back() {
    let mut net = Net::three();
    net.run(ms(2000));
    for (x, y) in [("A", "B"), ("A", "C")] {
        net.cut.insert((x.into(), y.into()));
        net.cut.insert((y.into(), x.into()));
    }
    net.run(ms(DEAD + 2 * INTERVAL));
    // A alone took everything; B and C took tg-1 (B is next in its HA order).
    assert_eq!(net.nodes["A"].holds.len(), 3);
    assert_eq!(net.holders("tg-1"), vec!["A".to_string(), "B".to_string()]);
    assert_eq!(net.holders("tg-2"), vec!["A".to_string(), "B".to_string()]);
    assert_eq!(net.holders("tg-3"), vec!["A".to_string(), "C".to_string()]);
    net.cut.clear();
    let t = net.now;
    // Overlap is measured from the heal on.
    net.overlap.clear();
    for since in net.overlap_since.values_mut() {
        *since = t;
    }
    net.run(ms(2 * INTERVAL));
    let evs = net.events_since(t);
    assert_eq!(evs.len(), 3, "{evs:?}");
    assert!(evs.iter().any(release("A", "tg-1")));
    assert!(evs.iter().any(release("B", "tg-2")));
    assert!(evs.iter().any(release("C", "tg-3")));
    assert!(
        evs.iter().all(|e| reason(&e.1).starts_with("pre-empted: ")),
        "{evs:?}"
    );
    assert_eq!(net.holders("tg-1"), vec!["B".to_string()]);
    assert_eq!(net.holders("tg-2"), vec!["A".to_string()]);
    assert_eq!(net.holders("tg-3"), vec!["A".to_string()]);
    // Every device agrees, and names the same generation.
    for tg in ["tg-1", "tg-2", "tg-3"] {
        let seen: BTreeSet<_> = ["A", "B", "C"]
            .iter()
            .map(|d| {
                let s = net.tg_status(d, tg);
                (s.active, s.generation)
            })
            .collect();
        assert_eq!(seen.len(), 1, "{tg}: {seen:?}");
    }
    // Auto-failback (tg-1, tg-2) after the delay; tg-3 has none and stays.
    net.run(ms(FAILBACK - 3 * INTERVAL));
    assert_eq!(net.events_since(t).len(), 3);
    net.run(ms(4 * INTERVAL));
    assert_eq!(net.holders("tg-1"), vec!["A".to_string()]);
    assert_eq!(net.holders("tg-2"), vec!["B".to_string()]);
    assert_eq!(net.holders("tg-3"), vec!["A".to_string()]);
    net.run(ms(5000));
    assert_eq!(net.events_since(t).len(), 7, "{:?}", net.events_since(t));
    assert!(
        net.overlap.values().all(|o| *o <= ms(5)),
        "{:?}",
        net.overlap
    );
}

// ---- auto-failback waits for the mirror to be in sync ----

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Rule 2 with `sync_wait`: an unsynced candidate waits (and is named), a synced one or one
/// past the maximum wait gets it; without `sync_wait` the unsynced list changes nothing.
#[test]
fn place_failback_waits_for_sync_at_most_the_maximum() {
    let t = TrafficGroupSpec {
        sync_wait: Some(ms(SYNC)),
        ..tg("tg-2", ["B", "C", "A"], true)
    };
    let mut view = View {
        devices: vec![
            dev("A", true, 90_000, &[]),
            dev("B", true, 1000, &[]),
            dev("C", true, 90_000, &[("tg-2", 60_000)]),
        ],
        orders: BTreeMap::new(),
        ..Default::default()
    };
    view.devices[1].unsynced = set(&["tg-2"]);
    let d = place(&t, &view);
    assert_eq!((d.active.as_deref(), &d.rule), (Some("C"), &Rule::Holder));
    assert_eq!(d.waiting_for_sync.as_deref(), Some("B"));
    // Another TG unsynced on B does not hold this one back.
    view.devices[1].unsynced = set(&["tg-1"]);
    let d = place(&t, &view);
    assert_eq!(d.rule, Rule::Failback { from: "C".into() });
    assert_eq!(d.waiting_for_sync, None);
    // Still unsynced, just before and at failback_delay + max.
    view.devices[1].unsynced = set(&["tg-2"]);
    view.devices[1].usable_for = ms(FAILBACK + SYNC - 1);
    assert_eq!(place(&t, &view).active.as_deref(), Some("C"));
    view.devices[1].usable_for = ms(FAILBACK + SYNC);
    let d = place(&t, &view);
    assert_eq!((d.active.as_deref(), d.waiting_for_sync), (Some("B"), None));
    // Mirroring off: the list is ignored.
    view.devices[1].usable_for = ms(FAILBACK);
    let off = TrafficGroupSpec {
        sync_wait: None,
        ..t.clone()
    };
    let d = place(&off, &view);
    assert_eq!((d.active.as_deref(), d.waiting_for_sync), (Some("B"), None));
    // Not waiting for a device whose failback is not due anyway (too early).
    view.devices[1].usable_for = ms(FAILBACK - 1);
    assert_eq!(place(&t, &view).waiting_for_sync, None);
}

/// Three devices with mirroring on (`sync_wait` = SYNC), every mirror in sync, steady; then A
/// hangs (B takes tg-1) and restarts as a new process, which reports nothing in sync yet (the
/// default). Returns when A starts.
fn restart_a_unsynced() -> (Net, Instant) {
    let all = ["A", "B", "C"];
    let mut net = Net::new_sync(&all, &all, Some(ms(SYNC)));
    for n in all {
        net.feed(n, Input::Unsynced(BTreeSet::new()));
        net.feed(n, Input::Start);
    }
    net.run(ms(2000));
    net.assert_steady();
    net.nodes.get_mut("A").unwrap().hung = true;
    net.run(ms(1000));
    assert_eq!(net.holders("tg-1"), vec!["A".to_string(), "B".to_string()]);
    net.nodes.insert(
        "A".into(),
        Node {
            p: Placement::new(spec_sync("A", &all, Some(ms(SYNC))), 2_000),
            hung: false,
            holds: BTreeSet::new(),
        },
    );
    assert_eq!(net.nodes["A"].p.unsynced(), &set(&["tg-1", "tg-2", "tg-3"]));
    let t = net.now;
    net.feed("A", Input::Start);
    (net, t)
}

/// (a) A returning device whose mirror is not in sync does not get its TG back after
/// failback_delay; the status says the failback waits for it; once it reports the mirror in
/// sync, the failback happens at once.
#[test]
fn failback_waits_until_the_returning_device_is_in_sync() {
    let (mut net, t) = restart_a_unsynced();
    net.run(ms(FAILBACK + DEAD + 3 * INTERVAL));
    assert!(net.events_since(t).is_empty(), "{:?}", net.events_since(t));
    assert_eq!(net.holders("tg-1"), vec!["B".to_string()]);
    // (e) Every device shows who the failback waits for, and what A reported.
    for d in ["A", "B", "C"] {
        let s = net.tg_status(d, "tg-1");
        assert_eq!(s.active.as_deref(), Some("B"), "as {d} sees it");
        assert_eq!(s.waiting_for_sync.as_deref(), Some("A"), "as {d} sees it");
        let a = net
            .status(d)
            .devices
            .into_iter()
            .find(|x| x.name == "A")
            .unwrap();
        assert_eq!(a.unsynced, ["tg-1", "tg-2", "tg-3"], "as {d} sees it");
        // tg-2 and tg-3 are where they belong: nothing waits.
        assert_eq!(net.tg_status(d, "tg-2").waiting_for_sync, None);
    }
    let json = serde_json::to_string(&net.status("B")).unwrap();
    assert!(json.contains("\"waiting_for_sync\":\"A\""), "{json}");
    assert!(json.contains("\"unsynced\":[\"tg-1\""), "{json}");
    // Still waiting much later (well before the maximum wait).
    net.run(ms(5000));
    assert!(net.events_since(t).is_empty());

    // Only tg-2 (not A's to take back) in sync changes nothing for tg-1.
    let synced = net.now;
    net.feed("A", Input::Unsynced(set(&["tg-1", "tg-3"])));
    net.run(ms(3 * INTERVAL));
    assert!(net.events_since(synced).is_empty());
    // Now tg-1's mirror is in sync on A: it takes tg-1 back on that very evaluation.
    let synced = net.now;
    let outs = net.feed("A", Input::Unsynced(set(&["tg-3"])));
    let act = outs
        .iter()
        .find(|o| matches!(o, Output::Activate { traffic_group, .. } if traffic_group == "tg-1"))
        .expect("A activates tg-1 at once");
    assert_eq!(
        reason(act),
        "auto-failback to A from B after 1s (mirror in sync)"
    );
    net.overlap.clear();
    net.run(ms(2 * INTERVAL));
    let evs = net.events_since(synced);
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert!(evs.iter().any(release("B", "tg-1")));
    assert!(net.overlap.get("tg-1").copied().unwrap_or_default() <= ms(INTERVAL));
    net.assert_steady();
    for d in ["A", "B", "C"] {
        assert_eq!(net.tg_status(d, "tg-1").waiting_for_sync, None);
    }
}

/// (b) Still not in sync after failback_delay + the maximum wait: it fails back anyway, and
/// the reason says the mirror was not in sync.
#[test]
fn failback_happens_after_the_maximum_wait_even_if_not_in_sync() {
    let (mut net, t) = restart_a_unsynced();
    net.run(ms(FAILBACK + SYNC - 10));
    assert!(net.events_since(t).is_empty(), "{:?}", net.events_since(t));
    assert_eq!(
        net.tg_status("B", "tg-1").waiting_for_sync.as_deref(),
        Some("A")
    );
    net.overlap.clear();
    net.run(ms(INTERVAL));
    let evs = net.events_since(t);
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert!(evs.iter().any(release("B", "tg-1")));
    let act = evs.iter().find(|e| activate("A", "tg-1")(e)).unwrap();
    assert_eq!(
        reason(&act.1),
        "auto-failback to A from B after 1s (mirror not in sync after 30s max wait)"
    );
    let at = net
        .events
        .iter()
        .find(|e| e.device == "A" && e.at >= t && matches!(e.out, Output::Activate { .. }))
        .unwrap()
        .at;
    assert!(at >= t + ms(FAILBACK + SYNC), "failed back too early");
    assert!(net.overlap.get("tg-1").copied().unwrap_or_default() <= ms(INTERVAL));
    net.assert_steady();
    assert_eq!(net.tg_status("C", "tg-1").waiting_for_sync, None);
}

/// (c) Mirroring off (`sync_wait` None): an unsynced report changes nothing, the failback comes
/// after failback_delay as always and its reason says nothing about mirroring.
#[test]
fn without_sync_wait_unsynced_reports_are_ignored() {
    let mut net = Net::three();
    net.run(ms(2000));
    net.nodes.get_mut("A").unwrap().hung = true;
    net.run(ms(1000));
    let all = ["A", "B", "C"];
    let mut a = Placement::new(spec("A", &all), 2_000);
    assert!(a.unsynced().is_empty(), "nothing unsynced by default");
    // Reported before the start, kept, and carried in the first heartbeat.
    assert!(a
        .process(net.now, Input::Unsynced(set(&["tg-1"])))
        .is_empty());
    net.nodes.insert(
        "A".into(),
        Node {
            p: a,
            hung: false,
            holds: BTreeSet::new(),
        },
    );
    let t = net.now;
    let outs = net.feed("A", Input::Start);
    assert!(
        matches!(&outs[..], [Output::SendHeartbeat(hb)] if hb.unsynced == ["tg-1"]),
        "{outs:?}"
    );
    net.run(ms(FAILBACK - 10));
    assert!(net.events_since(t).is_empty());
    assert_eq!(net.tg_status("B", "tg-1").waiting_for_sync, None);
    net.run(ms(2 * INTERVAL));
    let evs = net.events_since(t);
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert!(evs.iter().any(release("B", "tg-1")));
    let act = evs.iter().find(|e| activate("A", "tg-1")(e)).unwrap();
    assert_eq!(reason(&act.1), "auto-failback to A from B after 1s");
    net.assert_steady();
    // B still hears A's report, for the status.
    let a = net
        .status("B")
        .devices
        .into_iter()
        .find(|d| d.name == "A")
        .unwrap();
    assert_eq!(a.unsynced, ["tg-1"]);
}

/// (d) A change of the unsynced set sends a heartbeat carrying it at once; the same set again
/// sends nothing; names of unknown TGs are dropped.
#[test]
fn unsynced_change_sends_a_heartbeat_at_once() {
    let t0 = Instant::now();
    let mut p = Placement::new(spec_sync("A", &["A", "B"], Some(ms(SYNC))), 1);
    let outs = p.process(t0, Input::Start);
    assert!(
        matches!(&outs[..], [Output::SendHeartbeat(hb)] if hb.seq == 1 && hb.unsynced == ["tg-1", "tg-2", "tg-3"]),
        "{outs:?}"
    );
    let at = t0 + ms(10);
    let outs = p.process(at, Input::Unsynced(set(&["tg-2", "tg-9"])));
    assert!(
        matches!(&outs[..], [Output::SendHeartbeat(hb)] if hb.seq == 2 && hb.unsynced == ["tg-2"]),
        "{outs:?}"
    );
    assert_eq!(p.status(at).devices[0].unsynced, ["tg-2"]);
    // The same set (once the unknown name is dropped) is no change.
    assert!(p
        .process(at + ms(1), Input::Unsynced(set(&["tg-2"])))
        .is_empty());
    assert!(p
        .process(at + ms(2), Input::Unsynced(set(&["tg-2", "tg-9"])))
        .is_empty());
    // Everything in sync.
    let outs = p.process(at + ms(3), Input::Unsynced(BTreeSet::new()));
    assert!(
        matches!(&outs[..], [Output::SendHeartbeat(hb)] if hb.seq == 3 && hb.unsynced.is_empty()),
        "{outs:?}"
    );
    // The regular heartbeat keeps carrying the current set.
    p.process(at + ms(4), Input::Unsynced(set(&["tg-1"])));
    let outs = p.process(t0 + ms(INTERVAL), Input::Timer);
    assert!(
        matches!(&outs[..], [Output::SendHeartbeat(hb)] if hb.seq == 5 && hb.unsynced == ["tg-1"]),
        "{outs:?}"
    );

    // A maximum wait as long as can be neither panics nor wakes anyone early.
    let mut p = Placement::new(spec_sync("A", &["A"], Some(Duration::MAX)), 1);
    p.process(t0, Input::Start);
    assert_eq!(p.poll_timeout(), Some(t0 + ms(INTERVAL)));
    p.process(t0 + ms(INTERVAL), Input::Timer);
}

// ---- the edge of a hang: the same path as any other return ----

/// B hangs for `hang` ms, starting `offset` ms into a heartbeat interval, with mirroring on
/// (every mirror in sync before); with `backlog`, what was sent to B meanwhile waits in its
/// socket. Returns the net right after B resumed.
fn hang_b_for(hang: u64, offset: u64, backlog: bool) -> (Net, Instant) {
    let all = ["A", "B", "C"];
    let mut net = Net::new_sync(&all, &all, Some(ms(SYNC)));
    net.backlog = backlog;
    // Devices start (and so send their heartbeats) out of phase, as real ones do.
    for (n, phase) in all.into_iter().zip([0, 37, 71]) {
        net.run(ms(phase) - (net.now - net.t0).min(ms(phase)));
        net.feed(n, Input::Unsynced(BTreeSet::new()));
        net.feed(n, Input::Start);
    }
    net.run(ms(2000 + offset));
    net.assert_steady();
    net.nodes.get_mut("B").unwrap().hung = true;
    net.run(ms(hang));
    net.nodes.get_mut("B").unwrap().hung = false;
    let resumed = net.now;
    net.overlap.clear();
    for since in net.overlap_since.values_mut() {
        *since = resumed;
    }
    (net, resumed)
}

/// A hang just over `dead_after` (C took tg-2 meanwhile, B's own timers barely noticed) ends
/// like a long one: B gives tg-2 up at once as pre-empted, every device agrees C holds it, and
/// tg-2 comes back to B only by auto-failback — after the failback delay, and only once B
/// reports its mirror in sync (here 1.5 s after resuming).
#[test]
fn a_hang_just_over_dead_after_takes_the_failback_path() {
    for hang in [
        DEAD + 5,
        DEAD + 30,
        DEAD + INTERVAL - 10,
        DEAD + INTERVAL + 50,
        3 * DEAD,
    ] {
        for (offset, backlog) in [(0, false), (37, true), (81, false), (81, true)] {
            let ctx = format!("hang {hang} ms at offset {offset}, backlog {backlog}");
            let (mut net, resumed) = hang_b_for(hang, offset, backlog);
            assert_eq!(
                net.holders("tg-2"),
                vec!["B".to_string(), "C".to_string()],
                "{ctx}: C took tg-2 while B hung"
            );
            net.run(ms(2 * INTERVAL));
            assert_eq!(net.holders("tg-2"), vec!["C".to_string()], "{ctx}");
            let rel = net
                .events_since(resumed)
                .into_iter()
                .find(|e| release("B", "tg-2")(e))
                .unwrap_or_else(|| panic!("{ctx}: B releases tg-2"));
            assert!(reason(&rel.1).starts_with("pre-empted"), "{ctx}: {rel:?}");
            for d in ["A", "B", "C"] {
                let s = net.tg_status(d, "tg-2");
                assert_eq!(s.active.as_deref(), Some("C"), "{ctx}: as {d} sees it");
            }
            // B's receiver of tg-2 has no state yet (it was the sender).
            net.feed("B", Input::Unsynced(set(&["tg-2"])));
            net.run(ms(1500 - 2 * INTERVAL));
            assert_eq!(net.holders("tg-2"), vec!["C".to_string()], "{ctx}");
            for d in ["A", "B", "C"] {
                assert_eq!(
                    net.tg_status(d, "tg-2").waiting_for_sync.as_deref(),
                    Some("B"),
                    "{ctx}: as {d} sees it"
                );
            }
            let synced = net.now;
            net.feed("B", Input::Unsynced(BTreeSet::new()));
            net.run(ms(2 * INTERVAL));
            assert_eq!(net.holders("tg-2"), vec!["B".to_string()], "{ctx}");
            let back = net
                .events
                .iter()
                .find(|e| {
                    e.device == "B"
                        && e.at >= resumed
                        && matches!(&e.out, Output::Activate { traffic_group, .. } if traffic_group == "tg-2")
                })
                .unwrap_or_else(|| panic!("{ctx}: B takes tg-2 back"));
            assert!(back.at >= synced, "{ctx}: back before in sync");
            assert!(
                reason(&back.out).starts_with("auto-failback to B from C"),
                "{ctx}: {back:?}"
            );
            let moves = net.events_since(resumed);
            assert_eq!(moves.len(), 3, "{ctx}: {moves:?}");
            assert!(
                net.overlap.get("tg-2").copied().unwrap_or_default() <= ms(INTERVAL),
                "{ctx}: {:?}",
                net.overlap
            );
            net.assert_steady();
        }
    }
}

/// A pause shorter than `dead_after` minus a heartbeat interval moves nothing.
#[test]
fn a_short_pause_moves_nothing() {
    for offset in [0, 50, 99] {
        let (mut net, resumed) = hang_b_for(DEAD - INTERVAL - 10, offset, offset == 50);
        net.run(ms(3000));
        assert!(net.events_since(net.t0 + ms(1000)).is_empty());
        assert!(net.events_since(resumed).is_empty());
        net.assert_steady();
    }
}

// ---- where the paths lead ----

fn vip(a: &str) -> IpAddr {
    a.parse().unwrap()
}

/// Every device computes the same paths: each TG's placement with that device's unavailable
/// virtual addresses; nothing while listening; a hung holder's TG leads to its next-active
/// once it is declared dead.
#[test]
fn paths_follow_placement_and_route_health() {
    let mut net = Net::three();
    net.run(ms(DEAD - 10));
    for d in ["A", "B", "C"] {
        assert_eq!(net.nodes[d].p.paths(net.now), None, "{d} still listening");
    }
    net.run(ms(1000));
    let paths = |net: &Net, d: &str| -> Vec<(String, Option<String>, Vec<IpAddr>)> {
        net.nodes[d]
            .p
            .paths(net.now)
            .unwrap()
            .into_iter()
            .map(|p| {
                (
                    p.traffic_group,
                    p.device,
                    p.unavailable.into_iter().collect(),
                )
            })
            .collect()
    };
    let home = vec![
        ("tg-1".to_string(), Some("A".to_string()), vec![]),
        ("tg-2".to_string(), Some("B".to_string()), vec![]),
        ("tg-3".to_string(), Some("C".to_string()), vec![]),
    ];
    for d in ["A", "B", "C"] {
        assert_eq!(paths(&net, d), home, "as {d} sees it");
    }
    // C's VIP is not available there: every device's path of tg-3 says so, at once.
    let t = net.now;
    let outs = net.feed("C", Input::Unavailable([vip("30.1.1.10")].into()));
    assert!(
        matches!(&outs[..], [Output::SendHeartbeat(hb)] if hb.unavailable == [vip("30.1.1.10")]),
        "{outs:?}"
    );
    net.run(ms(2));
    for d in ["A", "B", "C"] {
        assert_eq!(
            paths(&net, d)[2].2,
            vec![vip("30.1.1.10")],
            "as {d} sees it"
        );
        assert!(paths(&net, d)[0].2.is_empty());
    }
    // The same set again is no change; the status shows it.
    assert!(net
        .feed("C", Input::Unavailable([vip("30.1.1.10")].into()))
        .is_empty());
    let c = net.status("A").devices.into_iter().find(|x| x.name == "C");
    assert_eq!(c.unwrap().unavailable, [vip("30.1.1.10")]);
    assert!(net.events_since(t).is_empty(), "placement does not move");
    net.feed("C", Input::Unavailable(BTreeSet::new()));
    net.run(ms(2));
    // B hangs: until it is declared dead its path leads to it, then to C.
    net.nodes.get_mut("B").unwrap().hung = true;
    net.run(ms(DEAD - 2 * INTERVAL));
    assert_eq!(paths(&net, "A")[1].1.as_deref(), Some("B"));
    net.run(ms(2 * INTERVAL + 10));
    for d in ["A", "C"] {
        assert_eq!(paths(&net, d)[1].1.as_deref(), Some("C"), "as {d} sees it");
    }
}

/// With `sync_all_groups` the failback of a TG waits until the returning device is in sync
/// for every TG; without it, only for that TG.
#[test]
fn sync_all_groups_waits_for_every_traffic_group() {
    let t = TrafficGroupSpec {
        sync_wait: Some(ms(SYNC)),
        sync_all_groups: true,
        ..tg("tg-2", ["B", "C", "A"], true)
    };
    let mut view = View {
        devices: vec![
            dev("A", true, 90_000, &[]),
            dev("B", true, FAILBACK, &[]),
            dev("C", true, 90_000, &[("tg-2", 60_000)]),
        ],
        orders: BTreeMap::new(),
        ..Default::default()
    };
    view.devices[1].unsynced = set(&["tg-1"]);
    let d = place(&t, &view);
    assert_eq!((d.active.as_deref(), &d.rule), (Some("C"), &Rule::Holder));
    assert_eq!(d.waiting_for_sync.as_deref(), Some("B"));
    let per_group = TrafficGroupSpec {
        sync_all_groups: false,
        ..t.clone()
    };
    assert_eq!(place(&per_group, &view).active.as_deref(), Some("B"));
    view.devices[1].unsynced.clear();
    assert_eq!(place(&t, &view).active.as_deref(), Some("B"));
}

/// The failback goes to the first device in HA order that came back, and waits for it even
/// when a later one is ready first.
#[test]
fn failback_waits_for_the_first_returning_device_in_ha_order() {
    let t = tg("tg-2", ["B", "C", "A"], true);
    let view = View {
        devices: vec![
            dev("A", true, 90_000, &[("tg-2", 60_000)]),
            dev("B", true, FAILBACK - 1, &[]),
            dev("C", true, FAILBACK + 5, &[]),
        ],
        orders: BTreeMap::new(),
        ..Default::default()
    };
    assert_eq!(place(&t, &view).active.as_deref(), Some("A"));
    // A took it by a manual order and B was up before (it does not count as returning): C's
    // turn.
    let mut v = view.clone();
    v.devices[0].ordered.insert("tg-2".into());
    v.devices[1].usable_for = ms(70_000);
    assert_eq!(place(&t, &v).active.as_deref(), Some("C"));
}

/// Nobody holds a TG (its holder restarted faster than dead_after): with mirroring on it goes
/// to the first usable device in HA order that holds its mirrored state, not to the restarted
/// one with an empty table; when none does, to the first usable one.
#[test]
fn place_first_prefers_a_device_in_sync() {
    let t = TrafficGroupSpec {
        sync_wait: Some(ms(SYNC)),
        sync_all_groups: true,
        ..tg("tg-1", ["A", "B", "C"], true)
    };
    let mut view = View {
        devices: vec![
            dev("A", true, 10, &[]),
            dev("B", true, 90_000, &[("tg-2", 60_000)]),
            dev("C", true, 90_000, &[("tg-3", 60_000)]),
        ],
        orders: BTreeMap::new(),
        ..Default::default()
    };
    view.devices[0].unsynced = set(&["tg-1", "tg-2", "tg-3"]);
    let d = place(&t, &view);
    assert_eq!((d.active.as_deref(), &d.rule), (Some("B"), &Rule::First));
    view.devices[1].unsynced = set(&["tg-3"]);
    assert_eq!(place(&t, &view).active.as_deref(), Some("C"));
    view.devices[2].unsynced = set(&["tg-2"]);
    assert_eq!(
        place(&t, &view).active.as_deref(),
        Some("A"),
        "none in sync"
    );
    // Mirroring off: the first usable.
    let off = TrafficGroupSpec {
        sync_wait: None,
        ..t.clone()
    };
    view.devices[1].unsynced.clear();
    assert_eq!(place(&off, &view).active.as_deref(), Some("A"));
}

/// A device that restarts faster than dead_after (its old claim simply vanishes) does not
/// take its TG back with an empty mirror: its next-active device takes it at once, and the
/// failback comes after the delay, once the restarted device reports itself in sync.
#[test]
fn a_fast_restart_leaves_the_tg_to_its_next_active_until_in_sync() {
    let all = ["A", "B", "C"];
    let mut net = Net::new_sync(&all, &all, Some(ms(SYNC)));
    for n in all {
        net.feed(n, Input::Unsynced(BTreeSet::new()));
        net.feed(n, Input::Start);
    }
    net.run(ms(2000));
    net.assert_steady();
    // A's process is replaced within 20 ms: nothing in sync in the new one (the default).
    net.nodes.get_mut("A").unwrap().hung = true;
    net.run(ms(20));
    net.nodes.insert(
        "A".into(),
        Node {
            p: Placement::new(spec_sync("A", &all, Some(ms(SYNC))), 2_000),
            hung: false,
            holds: BTreeSet::new(),
        },
    );
    let t = net.now;
    net.feed("A", Input::Start);
    net.run(ms(DEAD + 3 * INTERVAL));
    assert_eq!(net.holders("tg-1"), vec!["B".to_string()], "B stands in");
    let act = net
        .events_since(t)
        .into_iter()
        .find(|e| activate("B", "tg-1")(e))
        .expect("B takes tg-1");
    assert!(
        net.events.iter().any(|e| e.device == "B"
            && e.at <= t + ms(INTERVAL)
            && matches!(&e.out, Output::Activate { traffic_group, .. } if traffic_group == "tg-1")),
        "at once: {act:?}"
    );
    net.run(ms(3000));
    assert_eq!(
        net.holders("tg-1"),
        vec!["B".to_string()],
        "A is not in sync"
    );
    let synced = net.now;
    net.feed("A", Input::Unsynced(BTreeSet::new()));
    net.run(ms(2 * INTERVAL));
    assert_eq!(net.holders("tg-1"), vec!["A".to_string()]);
    let back = net
        .events_since(synced)
        .into_iter()
        .find(|e| activate("A", "tg-1")(e))
        .expect("A takes tg-1 back");
    assert!(
        reason(&back.1).starts_with("auto-failback to A from B"),
        "{back:?}"
    );
    net.assert_steady();
}

/// Claims carry generations: a device's new claim is newer than every one it heard, and the
/// newer claim holds a TG two devices claim.
#[test]
fn the_newer_claim_holds() {
    let t = tg("tg-3", ["C", "A", "B"], false);
    let mut view = View {
        devices: vec![
            dev("A", true, 9000, &[("tg-3", 10)]),
            dev("B", true, 9000, &[("tg-3", 5000)]),
            dev("C", false, 0, &[]),
        ],
        orders: BTreeMap::new(),
        ..Default::default()
    };
    view.devices[0].generations.insert("tg-3".into(), 7);
    view.devices[1].generations.insert("tg-3".into(), 9);
    assert_eq!(place(&t, &view).active.as_deref(), Some("B"));
    view.devices[0].generations.insert("tg-3".into(), 9);
    assert_eq!(
        place(&t, &view).active.as_deref(),
        Some("A"),
        "a tie: HA order"
    );

    // In the state machine: B's claim after a takeover is above what it heard from A.
    let mut net = Net::three();
    net.run(ms(2000));
    let a_gen = net.tg_status("B", "tg-1").generation.unwrap();
    net.nodes.get_mut("A").unwrap().hung = true;
    net.run(ms(DEAD + INTERVAL));
    let s = net.tg_status("C", "tg-1");
    assert_eq!(s.active.as_deref(), Some("B"));
    assert!(s.generation.unwrap() > a_gen, "{s:?} vs {a_gen}");
}

/// A pause of about `dead_after` with the peers' heartbeats waiting in the socket (read as one
/// batch on resume): the paused device never takes its peers' traffic groups — their queued
/// heartbeats show them alive — whether or not its peers declared it dead meanwhile.
#[test]
fn a_paused_device_never_takes_its_live_peers_traffic_groups() {
    for pause in [400, 440, 450, 480, 520, 560] {
        for offset in [0, 20, 45, 70, 95] {
            let ctx = format!("pause {pause} ms at offset {offset}");
            let (mut net, resumed) = hang_b_for(pause, offset, true);
            net.run(ms(FAILBACK + 3 * INTERVAL + DEAD));
            for e in net.events_since(resumed) {
                assert!(
                    !activate("B", "tg-1")(&e) && !activate("B", "tg-3")(&e),
                    "{ctx}: {e:?}"
                );
            }
            assert!(
                net.overlap.values().all(|o| *o <= ms(INTERVAL)),
                "{ctx}: {:?}",
                net.overlap
            );
            net.feed("B", Input::Unsynced(BTreeSet::new()));
            net.run(ms(FAILBACK + 3 * INTERVAL));
            net.assert_steady();
        }
    }
}

// ---- partial HA orders: the least loaded device (rule 4) ----

/// `tg` with the HA order `order` (any devices).
fn tg_order(name: &str, order: &[&str], auto_failback: bool) -> TrafficGroupSpec {
    TrafficGroupSpec {
        ha_order: order.iter().map(|s| s.to_string()).collect(),
        ..tg(name, ["A", "B", "C"], auto_failback)
    }
}

fn capacity(c: &[(&str, u32)]) -> BTreeMap<String, u32> {
    c.iter().map(|(d, n)| (d.to_string(), *n)).collect()
}

/// A view of A (not usable), B and C with what they hold; every TG's load factor 1 unless
/// `load_factors` says.
fn load_view(b: &[(&str, u64)], c: &[(&str, u64)], load_factors: &[(&str, u32)]) -> View {
    View {
        devices: vec![
            dev("A", false, 0, &[]),
            dev("B", true, 9000, b),
            dev("C", true, 9000, c),
        ],
        capacity: BTreeMap::new(),
        load_factors: ["tg-1", "tg-2", "tg-3", "tg-4"]
            .into_iter()
            .map(|t| {
                let f = load_factors
                    .iter()
                    .find(|(n, _)| *n == t)
                    .map_or(1, |f| f.1);
                (t.to_string(), f)
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn place_partial_order_falls_back_to_the_least_loaded_device() {
    let t = tg_order("tg-9", &["A"], true);
    // B holds one TG, C none: C.
    let view = load_view(&[("tg-1", 10)], &[], &[]);
    let d = place(&t, &view);
    assert_eq!((d.active.as_deref(), &d.rule), (Some("C"), &Rule::Load));
    // Nobody else usable after C: B.
    assert_eq!(d.next_active.as_deref(), Some("B"));
    // Equal loads: the first by name.
    let view = load_view(&[("tg-1", 10)], &[("tg-2", 10)], &[]);
    assert_eq!(place(&t, &view).active.as_deref(), Some("B"));
    let view = load_view(&[], &[], &[]);
    assert_eq!(place(&t, &view).active.as_deref(), Some("B"));
    // Load factors: B's one TG weighs 5, C's two weigh 1 each.
    let view = load_view(
        &[("tg-1", 10)],
        &[("tg-2", 10), ("tg-3", 10)],
        &[("tg-1", 5)],
    );
    assert_eq!(place(&t, &view).active.as_deref(), Some("C"));
    // A claim of a TG the view has no load factor for adds nothing.
    let view = load_view(&[("tg-x", 10)], &[("tg-1", 10)], &[]);
    assert_eq!(place(&t, &view).active.as_deref(), Some("B"));
    // The order's device usable: rule 3 as always; a full order never reaches rule 4.
    let mut view = load_view(&[], &[("tg-1", 10)], &[]);
    view.devices[0].usable = true;
    let d = place(&t, &view);
    assert_eq!((d.active.as_deref(), &d.rule), (Some("A"), &Rule::First));
    assert_eq!(d.next_active.as_deref(), Some("B"), "least loaded");
    view.devices[0].usable = false;
    let full = tg_order("tg-9", &["A", "C", "B"], true);
    assert_eq!(place(&full, &view).rule, Rule::First);
    assert_eq!(place(&full, &view).active.as_deref(), Some("C"));
    // Nobody usable at all: nobody.
    for d in &mut view.devices {
        d.usable = false;
    }
    assert_eq!(place(&t, &view).rule, Rule::Nobody);
}

#[test]
fn place_capacity_decides_relative_load() {
    let t = tg_order("tg-9", &["A"], false);
    // B holds two TGs with capacity 2 (2/2), C one with capacity 1 (1/1): a tie, B by name.
    let mut view = load_view(&[("tg-1", 10), ("tg-2", 10)], &[("tg-3", 10)], &[]);
    view.capacity = capacity(&[("B", 2)]);
    assert_eq!(place(&t, &view).active.as_deref(), Some("B"));
    // Capacity 3: 2/3 < 1/1.
    view.capacity = capacity(&[("B", 3)]);
    let d = place(&t, &view);
    assert_eq!((d.active.as_deref(), &d.rule), (Some("B"), &Rule::Load));
    // Capacity 1 (or missing, or 0): 2/1 > 1/1.
    for c in [
        capacity(&[("B", 1)]),
        BTreeMap::new(),
        capacity(&[("B", 0)]),
    ] {
        view.capacity = c;
        assert_eq!(place(&t, &view).active.as_deref(), Some("C"));
    }
    // Exact fractions: 3/1000 against 1/333 (0.003 < 0.003003…).
    let mut view = load_view(&[("tg-1", 10)], &[("tg-2", 10)], &[("tg-1", 3)]);
    view.capacity = capacity(&[("B", 1000), ("C", 333)]);
    assert_eq!(place(&t, &view).active.as_deref(), Some("B"));
    view.capacity = capacity(&[("B", 999), ("C", 333)]);
    assert_eq!(place(&t, &view).active.as_deref(), Some("B"), "a tie");
    view.capacity = capacity(&[("B", 998), ("C", 333)]);
    assert_eq!(place(&t, &view).active.as_deref(), Some("C"));
    // Huge values do not overflow.
    let mut view = load_view(&[("tg-1", 10)], &[("tg-2", 10)], &[("tg-1", u32::MAX)]);
    view.capacity = capacity(&[("B", u32::MAX), ("C", 1)]);
    let big = TrafficGroupSpec {
        load_factor: u32::MAX,
        ..t.clone()
    };
    assert_eq!(place(&big, &view).active.as_deref(), Some("B"));
}

/// TGs that fall back at once (their device died) spread: each counts the ones placed before
/// it in the pass; next-active says so beforehand.
#[test]
fn place_all_spreads_tgs_falling_back_at_once() {
    let tgs = [
        tg_order("tg-1", &["A"], true),
        tg_order("tg-2", &["A"], true),
        tg_order("tg-3", &["A"], true),
        tg_order("tg-4", &["C"], false),
    ];
    let mut view = load_view(&[], &[("tg-4", 10)], &[]);
    view.capacity = capacity(&[("C", 3)]);
    let got = |view: &View| -> Vec<(Option<String>, Rule, Option<String>)> {
        place_all(&tgs, view)
            .into_iter()
            .map(|d| (d.active, d.rule, d.next_active))
            .collect()
    };
    let s = |x: &str| Some(x.to_string());
    // B 0/1 and C 1/3: tg-1 on B; then B 1/1 and C 1/3: tg-2 on C; then B 1/1 and C 2/3:
    // tg-3 on C.
    assert_eq!(
        got(&view),
        vec![
            (s("B"), Rule::Load, s("C")),
            (s("C"), Rule::Load, s("B")),
            (s("C"), Rule::Load, s("B")),
            (s("C"), Rule::Holder, s("B")),
        ]
    );
    // A holds them all: their next-active is where they go when A dies, spread the same way.
    view.devices[0] = dev("A", true, 9000, &[("tg-1", 10), ("tg-2", 10), ("tg-3", 10)]);
    assert_eq!(
        got(&view),
        vec![
            (s("A"), Rule::Holder, s("B")),
            (s("A"), Rule::Holder, s("C")),
            (s("A"), Rule::Holder, s("C")),
            // Without C, A holds three TGs and B none.
            (s("C"), Rule::Holder, s("B")),
        ]
    );
    // Once placed, a TG stays with its holder (rule 2): loads no longer move it.
    let view = load_view(
        &[("tg-1", 10), ("tg-2", 10), ("tg-3", 10)],
        &[("tg-4", 10)],
        &[],
    );
    let d = place_all(&tgs, &view);
    assert!(d[..3]
        .iter()
        .all(|d| d.active == s("B") && d.rule == Rule::Holder));
    // `place` of one TG agrees with the pass when nothing else moves.
    for (t, d) in tgs.iter().zip(&d) {
        assert_eq!(&place(t, &view), d, "{}", t.name);
    }
}

/// A holder outside the HA order keeps the TG; auto-failback brings it back to a device of
/// the order once that has been usable for the failback delay.
#[test]
fn place_failback_from_outside_the_ha_order() {
    let on = tg_order("tg-1", &["A"], true);
    let off = tg_order("tg-1", &["A"], false);
    let mut view = load_view(&[], &[("tg-1", 5000)], &[]);
    view.devices[0] = dev("A", true, FAILBACK - 1, &[]);
    assert_eq!(place(&on, &view).active.as_deref(), Some("C"));
    assert_eq!(place(&on, &view).rule, Rule::Holder);
    view.devices[0].usable_for = ms(FAILBACK);
    let d = place(&on, &view);
    assert_eq!(
        (d.active.as_deref(), &d.rule),
        (Some("A"), &Rule::Failback { from: "C".into() })
    );
    assert_eq!(d.next_active.as_deref(), Some("C"), "C still holds it");
    assert_eq!(place(&off, &view).active.as_deref(), Some("C"));
}

fn subset_spec(me: &str, auto_failback: bool) -> GroupSpec {
    GroupSpec {
        traffic_groups: vec![
            tg_order("tg-1", &["A"], auto_failback),
            tg_order("tg-2", &["A"], auto_failback),
            tg_order("tg-3", &["C"], false),
        ],
        capacity: capacity(&[("C", 2)]),
        ..spec(me, &["A", "B", "C"])
    }
}

impl Net {
    /// Devices `names` (the whole group) with the group `spec(name)` each, started.
    fn with_spec(names: &[&str], spec: impl Fn(&str) -> GroupSpec) -> Net {
        let mut net = Net::new(names, names);
        for n in names {
            net.nodes.get_mut(*n).unwrap().p = Placement::new(spec(n), 1_000);
        }
        for n in names {
            net.feed(n, Input::Start);
        }
        net
    }

    fn next_active(&self, device: &str, tg: &str) -> Option<String> {
        self.tg_status(device, tg).next_active
    }
}

/// tg-1 and tg-2 prefer only A, tg-3 only C (capacity 2). When A hangs its two TGs go to B
/// and C (one each: C holds tg-3 but counts half), as every device predicted; when A is back
/// auto-failback returns them after the failback delay.
#[test]
fn partial_orders_fall_back_by_load_and_fail_back() {
    let all = ["A", "B", "C"];
    let mut net = Net::with_spec(&all, |n| subset_spec(n, true));
    net.run(ms(2000));
    let one = |d: &str| vec![d.to_string()];
    assert_eq!(net.holders("tg-1"), one("A"));
    assert_eq!(net.holders("tg-2"), one("A"));
    assert_eq!(net.holders("tg-3"), one("C"));
    for d in all {
        assert_eq!(
            net.next_active(d, "tg-1").as_deref(),
            Some("B"),
            "as {d} sees it"
        );
        assert_eq!(
            net.next_active(d, "tg-2").as_deref(),
            Some("C"),
            "as {d} sees it"
        );
        assert_eq!(
            net.next_active(d, "tg-3").as_deref(),
            Some("B"),
            "as {d} sees it"
        );
    }
    net.nodes.get_mut("A").unwrap().hung = true;
    let hung = net.now;
    net.run(ms(DEAD + INTERVAL));
    assert_eq!(net.holders("tg-1"), vec!["A".to_string(), "B".to_string()]);
    assert_eq!(net.holders("tg-2"), vec!["A".to_string(), "C".to_string()]);
    for (d, t) in [("B", "tg-1"), ("C", "tg-2")] {
        let e = net
            .events_since(hung)
            .into_iter()
            .find(|e| activate(d, t)(e))
            .unwrap_or_else(|| panic!("{d} takes {t}"));
        assert!(
            reason(&e.1).ends_with(&format!(
                "no device of its HA order is usable, {d} is the least loaded"
            )),
            "{e:?}"
        );
        assert!(reason(&e.1).starts_with("A dead"), "{e:?}");
    }
    for d in ["B", "C"] {
        let s = net.tg_status(d, "tg-1");
        assert_eq!((s.active.as_deref(), &s.rule), (Some("B"), &Rule::Holder));
        // A is dead: the next-active of tg-1 is the least loaded other device.
        assert_eq!(s.next_active.as_deref(), Some("C"));
    }
    // A comes back: pre-empted, it releases both, and gets both back after the failback delay.
    net.nodes.get_mut("A").unwrap().hung = false;
    let back = net.now;
    net.run(ms(2 * INTERVAL));
    assert_eq!(net.holders("tg-1"), one("B"));
    assert_eq!(net.holders("tg-2"), one("C"));
    net.run(ms(FAILBACK + DEAD + 2 * INTERVAL));
    assert_eq!(net.holders("tg-1"), one("A"));
    assert_eq!(net.holders("tg-2"), one("A"));
    assert_eq!(net.holders("tg-3"), one("C"));
    let e = net
        .events_since(back)
        .into_iter()
        .find(|e| activate("A", "tg-1")(e))
        .unwrap();
    assert!(
        reason(&e.1).starts_with("auto-failback to A from B"),
        "{e:?}"
    );
}

/// Without auto-failback the device the load put a TG on keeps it.
#[test]
fn partial_orders_without_failback_stay_where_the_load_put_them() {
    let all = ["A", "B", "C"];
    let mut net = Net::with_spec(&all, |n| subset_spec(n, false));
    net.run(ms(2000));
    net.nodes.get_mut("A").unwrap().hung = true;
    net.run(ms(DEAD + INTERVAL));
    net.nodes.get_mut("A").unwrap().hung = false;
    net.run(ms(FAILBACK + DEAD + 5 * INTERVAL));
    assert_eq!(net.holders("tg-1"), vec!["B".to_string()]);
    assert_eq!(net.holders("tg-2"), vec!["C".to_string()]);
    assert_eq!(net.tg_status("A", "tg-1").rule, Rule::Holder);
    // The status says why, serialised.
    let json = serde_json::to_string(&Rule::Load).unwrap();
    assert_eq!(json, r#"{"rule":"load"}"#);
}

// ---- a new device group live (Input::Reconfigure) ----

/// The test group over `devices` only: every HA order without the other devices.
fn group_of(me: &str, devices: &[&str]) -> GroupSpec {
    let mut s = spec(me, devices);
    for t in &mut s.traffic_groups {
        t.ha_order.retain(|d| devices.contains(&d.as_str()));
    }
    s
}

impl Net {
    /// Feeds each of `names`, in turn at this instant, its `Input::Reconfigure(group(name))`.
    fn reconfigure(
        &mut self,
        names: &[&str],
        group: impl Fn(&str) -> GroupSpec,
    ) -> BTreeMap<String, Vec<Output>> {
        names
            .iter()
            .map(|n| (n.to_string(), self.feed(n, Input::Reconfigure(group(n)))))
            .collect()
    }

    /// Heartbeats `device` sent at or after `t`.
    fn heartbeats_since(&self, device: &str, t: Instant) -> usize {
        self.events
            .iter()
            .filter(|e| e.at >= t && e.device == device)
            .filter(|e| matches!(e.out, Output::SendHeartbeat(_)))
            .count()
    }
}

fn sends_heartbeat(outs: &[Output]) -> bool {
    outs.iter().any(|o| matches!(o, Output::SendHeartbeat(_)))
}

/// A traffic group added live goes active on its first device in HA order at once (no
/// listening: the device is running), only there; every device agrees on its next-active; it
/// is new, so not unsynced anywhere.
#[test]
fn reconfigure_adds_a_traffic_group_live() {
    let all = ["A", "B", "C"];
    let mut net = Net::new_sync(&all, &all, Some(ms(SYNC)));
    for n in all {
        net.feed(n, Input::Unsynced(BTreeSet::new()));
        net.feed(n, Input::Start);
    }
    net.run(ms(2000));
    net.assert_steady();
    let with_tg4 = |me: &str| {
        let mut s = spec_sync(me, &all, Some(ms(SYNC)));
        s.traffic_groups.push(TrafficGroupSpec {
            sync_wait: Some(ms(SYNC)),
            ..tg("tg-4", ["B", "C", "A"], false)
        });
        s
    };
    let t = net.now;
    // B first; A and C a little later (config sync reaches devices one by one).
    let outs = net.reconfigure(&["B"], with_tg4);
    assert!(
        outs["B"]
            .iter()
            .any(|o| matches!(o, Output::Activate { traffic_group, reason }
            if traffic_group == "tg-4" && reason == "first available in HA order")),
        "{outs:?}"
    );
    assert!(sends_heartbeat(&outs["B"]), "{outs:?}");
    assert!(!net.nodes["B"].p.unsynced().contains("tg-4"));
    net.run(ms(50));
    let outs = net.reconfigure(&["A", "C"], with_tg4);
    for d in ["A", "C"] {
        assert!(sends_heartbeat(&outs[d]), "the group changed: {outs:?}");
        assert!(!net.nodes[d].p.unsynced().contains("tg-4"));
    }
    net.run(ms(2000));
    assert_eq!(net.holders("tg-4"), vec!["B".to_string()]);
    let moves = net.events_since(t);
    assert_eq!(moves.len(), 1, "{moves:?}");
    for d in all {
        let roles = net.nodes[d].p.roles(net.now);
        let r = roles.iter().find(|r| r.traffic_group == "tg-4").unwrap();
        assert_eq!(r.holder.as_deref(), Some("B"), "as {d} sees it");
        assert_eq!(r.next_active.as_deref(), Some("C"), "as {d} sees it");
        assert_eq!(
            net.nodes[d].p.paths(net.now).unwrap()[3].device.as_deref(),
            Some("B")
        );
    }
    net.assert_steady();
}

/// A traffic group removed from the group is released where it is active, once, and forgotten;
/// added back, it goes active at once again.
#[test]
fn reconfigure_removes_a_traffic_group_held_here() {
    let all = ["A", "B", "C"];
    let mut net = Net::three();
    net.run(ms(2000));
    let without = |me: &str| {
        let mut s = spec(me, &all);
        s.traffic_groups.retain(|t| t.name != "tg-1");
        s
    };
    let t = net.now;
    let outs = net.reconfigure(&all, without);
    assert!(sends_heartbeat(&outs["A"]));
    net.run(ms(2000));
    let moves = net.events_since(t);
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert!(release("A", "tg-1")(&moves[0]));
    assert_eq!(reason(&moves[0].1), "removed from the device group");
    assert!(net.holders("tg-1").is_empty());
    for d in all {
        let s = net.status(d);
        assert!(s.traffic_groups.iter().all(|t| t.name != "tg-1"), "{d}");
        assert_eq!(net.nodes[d].p.roles(net.now).len(), 2);
    }
    // The same group again: nothing but what a timer would do.
    let p = net.nodes["A"].p.clone();
    let (mut x, mut y) = (p.clone(), p);
    assert_eq!(
        x.process(net.now, Input::Reconfigure(without("A"))),
        y.process(net.now, Input::Timer)
    );
    // Back again: A takes it at once.
    let t = net.now;
    net.reconfigure(&all, |me| spec(me, &all));
    let moves = net.events_since(t);
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert!(activate("A", "tg-1")(&moves[0]));
    net.run(ms(1000));
    net.assert_steady();
}

/// A device removed from the group no longer counts: the TG it held goes to the next device
/// at once, and its heartbeats (it has not heard of its removal yet) are ignored.
#[test]
fn reconfigure_removes_a_peer_that_held_a_traffic_group() {
    let mut net = Net::three();
    net.run(ms(2000));
    // C does not hear A and B (it would give tg-3 up to A's newer claim).
    net.cut.insert(("A".into(), "C".into()));
    net.cut.insert(("B".into(), "C".into()));
    let t = net.now;
    net.reconfigure(&["A", "B"], |me| group_of(me, &["A", "B"]));
    let moves = net.events_since(t);
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert!(activate("A", "tg-3")(&moves[0]));
    assert_eq!(reason(&moves[0].1), "C was removed from the device group");
    // C still runs the old group and claims tg-3: A and B do not hear it.
    net.run(ms(2000));
    assert_eq!(net.holders("tg-3"), vec!["A".to_string(), "C".to_string()]);
    for d in ["A", "B"] {
        let s = net.status(d);
        let devices: Vec<_> = s.devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(devices, ["A", "B"]);
        let tg3 = s.traffic_groups.iter().find(|t| t.name == "tg-3").unwrap();
        assert_eq!(tg3.active.as_deref(), Some("A"), "as {d} sees it");
        assert_eq!(tg3.next_active.as_deref(), Some("B"), "as {d} sees it");
    }
    // (C, cut off, takes the others' TGs too: A and B do not care.)
    let ab: Vec<_> = net
        .events_since(t)
        .into_iter()
        .filter(|e| e.0 != "C")
        .collect();
    assert_eq!(ab.len(), 1, "{ab:?}");
    assert_eq!(net.holders("tg-1"), vec!["A".to_string(), "C".to_string()]);
}

/// A device removed from the group releases everything and falls silent; named again, it
/// starts over: listens for dead_after, then claims by the rules.
#[test]
fn reconfigure_removes_this_device_then_adds_it_back() {
    let all = ["A", "B", "C"];
    let mut net = Net::three();
    net.run(ms(2000));
    let t = net.now;
    let outs = net.reconfigure(&["C", "A", "B"], |me| group_of(me, &["A", "B"]));
    assert_eq!(
        outs["C"],
        vec![Output::Release {
            traffic_group: "tg-3".into(),
            reason: "this device was removed from the device group".into(),
        }]
    );
    let c = &net.nodes["C"].p;
    assert_eq!(c.poll_timeout(), None);
    assert_eq!(c.paths(net.now), None);
    assert!(c.roles(net.now).is_empty());
    assert_eq!(c.status(net.now).phase, "removed");
    net.run(ms(3000));
    assert_eq!(net.heartbeats_since("C", t + ms(1)), 0);
    assert_eq!(net.holders("tg-3"), vec!["A".to_string()]);
    // Nothing it is told makes it take part.
    for input in [
        Input::Timer,
        Input::Eligible(false),
        Input::Eligible(true),
        Input::Failover {
            traffic_group: "tg-3".into(),
            to: Some("C".into()),
        },
        Input::Reconfigure(group_of("C", &["A", "B"])),
    ] {
        assert!(net.feed("C", input).is_empty());
    }
    net.run(ms(1000));
    assert_eq!(net.heartbeats_since("C", t + ms(1)), 0);

    // Back in the group (tg-3 fails back to it now).
    let back = |me: &str| {
        let mut s = spec(me, &all);
        s.traffic_groups[2].auto_failback = true;
        s
    };
    let readd = net.now;
    let outs = net.reconfigure(&["C"], back);
    assert!(
        matches!(&outs["C"][..], [Output::SendHeartbeat(hb)] if hb.active.is_empty()),
        "{outs:?}"
    );
    assert_eq!(net.status("C").phase, "listening");
    net.run(ms(20));
    net.reconfigure(&["A", "B"], back);
    net.run(ms(DEAD - 30));
    assert!(net.events_since(readd).is_empty(), "C listens");
    net.run(ms(FAILBACK + 3 * INTERVAL));
    let e = net
        .events_since(readd)
        .into_iter()
        .find(|e| activate("C", "tg-3")(e))
        .expect("C takes tg-3 back");
    assert!(
        reason(&e.1).starts_with("auto-failback to C from A"),
        "{e:?}"
    );
    net.assert_steady();
}

/// A new HA order applies to the TGs held at once, by the rules: with auto-failback a TG moves
/// to the device now first in its order (usable long enough); without, the holder keeps it.
#[test]
fn reconfigure_reorders_ha_orders() {
    let all = ["A", "B", "C"];
    let mut net = Net::three();
    net.run(ms(2000));
    let reordered = |me: &str| {
        let mut s = spec(me, &all);
        s.traffic_groups[0].ha_order = ["B", "A", "C"].map(String::from).to_vec();
        s.traffic_groups[2].ha_order = ["A", "C", "B"].map(String::from).to_vec();
        s
    };
    let t = net.now;
    net.overlap.clear();
    net.reconfigure(&all, reordered);
    net.run(ms(2000));
    assert_eq!(net.holders("tg-1"), vec!["B".to_string()]);
    assert_eq!(net.holders("tg-2"), vec!["B".to_string()]);
    assert_eq!(
        net.holders("tg-3"),
        vec!["C".to_string()],
        "no auto-failback"
    );
    let moves = net.events_since(t);
    assert_eq!(moves.len(), 2, "{moves:?}");
    assert!(moves.iter().any(|e| release("A", "tg-1")(e)));
    let act = moves.iter().find(|e| activate("B", "tg-1")(e)).unwrap();
    assert!(
        reason(&act.1).starts_with("auto-failback to B from A"),
        "{act:?}"
    );
    assert!(net.overlap.get("tg-1").copied().unwrap_or_default() <= ms(INTERVAL));
    for d in all {
        let s = net.tg_status(d, "tg-1");
        assert_eq!(s.next_active.as_deref(), Some("A"), "as {d} sees it");
        let s = net.tg_status(d, "tg-3");
        assert_eq!(
            (s.active.as_deref(), s.next_active.as_deref()),
            (Some("C"), Some("A")),
            "as {d} sees it"
        );
    }
}

/// Heartbeat timing may change live; a reconfiguration before Start is taken as the group.
#[test]
fn reconfigure_timing_and_before_start() {
    let all = ["A", "B", "C"];
    let t0 = Instant::now();
    let mut p = Placement::new(spec("A", &all), 1);
    let slow = GroupSpec {
        heartbeat_interval: ms(200),
        dead_after: ms(1000),
        ..group_of("A", &["A"])
    };
    assert!(p.process(t0, Input::Reconfigure(slow.clone())).is_empty());
    // Alone in the group now: it takes everything at once.
    let outs = p.process(t0, Input::Start);
    let active: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Activate { traffic_group, .. } => Some(traffic_group.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(active, ["tg-1", "tg-2", "tg-3"]);
    assert_eq!(p.poll_timeout(), Some(t0 + ms(200)));
    // Back to 100ms heartbeats (and a peer): the next one after this one comes 100ms later.
    let outs = p.process(t0 + ms(200), Input::Reconfigure(spec("A", &all)));
    assert!(sends_heartbeat(&outs));
    assert_eq!(p.poll_timeout(), Some(t0 + ms(300)));
    // Removed before it started: Start leaves it silent.
    let mut q = Placement::new(spec("C", &all), 1);
    q.process(t0, Input::Reconfigure(group_of("C", &["A", "B"])));
    assert!(q.process(t0, Input::Start).is_empty());
    assert_eq!(q.poll_timeout(), None);
    assert!(q.process(t0 + ms(10), Input::Timer).is_empty());
}

/// A small deterministic generator for the sequences below.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<'a>(&mut self, of: &[&'a str]) -> &'a str {
        of[self.below(of.len() as u64) as usize]
    }
}

/// Any group: devices and HA orders from a pool larger than the test network (orders may name
/// devices outside the group), any traffic groups, odd timings, capacities and load factors.
fn random_group(rng: &mut Rng, me: &str) -> GroupSpec {
    let pool = ["A", "B", "C", "D"];
    let devices: Vec<String> = pool
        .iter()
        .filter(|_| rng.percent(80))
        .map(|d| d.to_string())
        .collect();
    let mut traffic_groups = Vec::new();
    for name in ["tg-1", "tg-2", "tg-3", "tg-4", "tg-5"] {
        if !rng.percent(70) {
            continue;
        }
        let mut ha_order: Vec<String> = Vec::new();
        for _ in 0..rng.below(5) {
            let d = rng.pick(&pool).to_string();
            if !ha_order.contains(&d) {
                ha_order.push(d);
            }
        }
        traffic_groups.push(TrafficGroupSpec {
            name: name.to_string(),
            ha_order,
            auto_failback: rng.percent(50),
            failback_delay: ms(rng.below(2000)),
            sync_wait: rng.percent(30).then(|| ms(rng.below(3000))),
            sync_all_groups: rng.percent(30),
            load_factor: rng.below(4) as u32,
        });
    }
    let mut capacity = BTreeMap::new();
    for d in pool {
        if rng.percent(50) {
            capacity.insert(d.to_string(), rng.below(4) as u32);
        }
    }
    let odd = rng.percent(10);
    GroupSpec {
        me: me.into(),
        devices,
        traffic_groups,
        heartbeat_interval: ms(if odd { rng.below(300) } else { INTERVAL }),
        dead_after: ms(if odd { rng.below(900) } else { DEAD }),
        capacity,
    }
}

/// Arbitrary sequences of inputs, reconfigurations among them, never panic nor activate or
/// release out of turn (the network checks each output), and once every device runs the same
/// group again each traffic group ends up on exactly one device.
#[test]
fn arbitrary_sequences_with_reconfigurations() {
    let all = ["A", "B", "C"];
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut net = Net::three();
        for _ in 0..120 {
            let n = rng.pick(&all);
            match rng.below(100) {
                0..=39 => net.run(ms(1 + rng.below(300))),
                40..=54 => {
                    let g = random_group(&mut rng, n);
                    net.feed(n, Input::Reconfigure(g));
                }
                55..=64 => {
                    let g = random_group(&mut rng, "A");
                    net.reconfigure(&all, |me| GroupSpec {
                        me: me.into(),
                        ..g.clone()
                    });
                }
                65..=72 => {
                    let e = rng.percent(60);
                    net.feed(n, Input::Eligible(e));
                }
                73..=77 => {
                    let traffic_group = rng.pick(&["tg-1", "tg-2", "tg-4", "tg-9"]).to_string();
                    let to = rng
                        .percent(70)
                        .then(|| rng.pick(&["A", "B", "C", "D"]).to_string());
                    net.feed(n, Input::Failover { traffic_group, to });
                }
                78..=87 => {
                    let node = net.nodes.get_mut(n).unwrap();
                    node.hung = !node.hung;
                }
                88..=94 => {
                    let set: BTreeSet<String> = ["tg-1", "tg-2", "tg-3", "tg-4", "tg-5"]
                        .iter()
                        .filter(|_| rng.percent(30))
                        .map(|t| t.to_string())
                        .collect();
                    net.feed(n, Input::Unsynced(set));
                }
                _ => {
                    if !net.nodes[n].hung {
                        net.feed(n, Input::Timer);
                    }
                }
            }
            for d in all {
                let p = &net.nodes[d].p;
                let _ = (p.status(net.now), p.roles(net.now), p.paths(net.now));
            }
        }
        // Everyone back, in the same group.
        for d in all {
            net.nodes.get_mut(d).unwrap().hung = false;
            net.feed(d, Input::Eligible(true));
            net.feed(d, Input::Unsynced(BTreeSet::new()));
        }
        net.reconfigure(&all, |me| spec(me, &all));
        net.run(ms(10 * DEAD + 3 * FAILBACK));
        for t in ["tg-1", "tg-2", "tg-3"] {
            assert_eq!(
                net.holders(t).len(),
                1,
                "seed {seed}: {t} {:?}",
                net.holders(t)
            );
        }
        for d in all {
            let extra: Vec<_> = net.nodes[d]
                .holds
                .iter()
                .filter(|t| !["tg-1", "tg-2", "tg-3"].contains(&t.as_str()))
                .collect();
            assert!(extra.is_empty(), "seed {seed}: {d} holds {extra:?}");
        }
    }
}

/// A new device that ran alone (no traffic group) and is then given the running group's
/// configuration listens before it claims: it does not take the traffic groups whose holders
/// it has not heard yet (they were simply unknown to it).
#[test]
fn a_joining_device_listens_before_it_claims() {
    let all = ["A", "B", "C", "D"];
    let mut net = Net::new(&all, &all);
    let mut alone = group_of("D", &["D"]);
    alone.traffic_groups.clear();
    net.nodes.get_mut("D").unwrap().p = Placement::new(alone, 1_000);
    for n in all {
        net.feed(n, Input::Start);
    }
    net.run(ms(2000));
    let before: Vec<Vec<String>> = ["tg-1", "tg-2", "tg-3"]
        .iter()
        .map(|t| net.holders(t))
        .collect();
    assert_eq!(
        before,
        vec![vec!["A".to_string()], vec!["B".into()], vec!["C".into()]]
    );
    let t = net.now;
    let outs = net.feed("D", Input::Reconfigure(spec("D", &all)));
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Activate { .. })),
        "{outs:?}"
    );
    net.run(ms(2000));
    let moves: Vec<_> = net
        .events_since(t)
        .into_iter()
        .filter(|(_, o)| !matches!(o, Output::SendHeartbeat(_)))
        .collect();
    assert!(moves.is_empty(), "nothing moves when d joins: {moves:?}");
    assert_eq!(net.status("D").phase, "running");
}
