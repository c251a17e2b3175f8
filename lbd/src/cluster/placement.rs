//! Traffic-group placement: the sans-IO failover state machine of one device (docs/design.md, "The model"; docs/design.md, "ECMP and failover").
//!
//! [`Placement::process`] takes the current time and one [`Input`] (start, timer, a peer's
//! heartbeat, this device's eligibility, the traffic groups whose mirror is not in sync here,
//! the virtual addresses not available here, an `lbctl failover`, a new device group) and
//! returns what the caller
//! must do ([`Output`]s: activate or release a traffic group here, send a heartbeat). Timers
//! are data: [`Placement::poll_timeout`] says when the core next needs [`Input::Timer`]. Where
//! the traffic groups go is decided by [`place_all`], a pure function of a [`View`], so every
//! device that has the same view computes the same placement; [`Placement::paths`] turns that into
//! where each traffic group's path leads, which every device announces (docs/design.md, "ECMP and failover").
//!
//! # Rules
//!
//! - **Liveness.** A peer is alive while its last heartbeat is younger than `dead_after`; this
//!   device is always alive to itself. A peer is *usable* while alive and its last heartbeat said
//!   `eligible`; this device is usable while [`Input::Eligible`] last said so (true at start).
//!   Each device's *usable since* is when it last became usable (for a peer: the first heartbeat
//!   after it was dead, ineligible or restarted with a new epoch, or the later start the peer
//!   reports itself in its heartbeats' `usable_ms`). A device that hears a peer again after it
//!   was dead or restarted counts itself usable from then on too (to that peer it was gone as
//!   well): the devices on both sides of a healed partition agree when each came back.
//! - **Holder.** The devices that claim a traffic group (the `active` list of their heartbeats,
//!   or this device's own active set) and are usable are its *claimants*; the *holder* is the
//!   claimant with the newest claim (the highest [`Claim`] generation), and among
//!   claims of one generation the one earliest in the effective HA order (the TG's `ha_order`,
//!   or the group's device list when that is empty; devices outside it rank last, by name).
//!   A device that activates a TG gives its claim a generation above every generation it has
//!   heard for that TG (from any device, alive or dead) and at least its clock in Unix ms. So
//!   when two devices claim one TG — one that hung just long enough to be declared dead and
//!   resumed without noticing, or both sides of a healed partition — every device agrees that
//!   the one that took it last holds it (it also sent the last gratuitous ARP: the routers'
//!   neighbour entries point at it), and the other gives it up as *pre-empted* and comes back
//!   by auto-failback like any returning device (failback delay, mirror sync). *Held since* is
//!   when this device first saw the holder claim it (a claim heard while listening after
//!   start counts as older than this device's own return).
//! - **Placement** ([`place_all`]; [`place`] for one TG), per traffic group, first match wins:
//!   1. the newest order for the TG, if it names a usable device: that device;
//!   2. the holder — unless `auto_failback` is on and the first usable device earlier in HA
//!      order has been usable for at least `failback_delay`: that device (while it has not,
//!      the failback waits for it, even if a device after it is ready). When the holder took
//!      the TG by a manual order (its claim says so), only a device that *became usable no
//!      earlier than the holder took the TG* (it came back after losing it) counts: the
//!      order's target keeps the TG and nothing fails back to devices that were already up
//!      when the order moved it. With mirroring on (the TG's `sync_wait` is
//!      `Some(max)`), such a device qualifies only once it no longer lists the TG as *unsynced*
//!      (its heartbeats' `unsynced`, or [`Input::Unsynced`] for this device: it does not hold
//!      the TG's mirrored session state yet) — with `sync_all_groups` (persistence records go
//!      to every device), once it lists no TG at all, since after the failback the clients of
//!      every TG reach it — or once it has been usable for at least `failback_delay + max`
//!      (the maximum wait is over: it fails back anyway, and the reason says so). Until then
//!      the holder keeps the TG and the status names the device as *waiting for sync*. With
//!      `sync_wait` None the unsynced lists are ignored;
//!   3. the first usable device in HA order — with mirroring on, the first one that holds the
//!      TG's mirrored state (that does not list it, or with `sync_all_groups` anything, as
//!      unsynced), if any does: a device that restarted faster than `dead_after` (its old
//!      claims gone with its old process) does not take its TG back with an empty table, its
//!      next-active device stands in and auto-failback returns the TG once the device is in
//!      sync;
//!   4. **load** — the HA order names only some of the devices and none of them is usable:
//!      the usable device with the lowest *relative load* (BIG-IP's HA load factor and HA
//!      capacity): the sum of the `load_factor`s of the TGs placed on it divided by its
//!      `capacity` (a device missing from [`GroupSpec::capacity`] counts 1), compared exactly
//!      as fractions, ties to the first by name. The TGs of the group are placed in one pass in
//!      the group's order: rules 1-3 and 5 first, then rule 4 for the TGs left, one after the
//!      other, each counting every TG placed on a device so far in the pass (so TGs falling
//!      back at once spread). Once it holds the TG, rule 2 keeps it there: auto-failback brings
//!      it back to a device of its HA order (a holder outside the order ranks after every device
//!      in it) and without auto-failback it stays;
//!   5. nobody.
//!
//!   An empty HA order means every device of the group, by name.
//!   **Next-active** is the placement computed with the active device taken away (not usable,
//!   claiming nothing), in the same pass (rule 4 spreads the TGs of a device that dies).
//!   `failback_delay` is raised to at least `dead_after` (a device returning from a restart
//!   listens that long before it may claim, see below); `heartbeat_interval` and `dead_after`
//!   are kept within 1ms and a day.
//! - **Acting.** This device activates a TG when placement picks it and it is not active, and
//!   releases a TG it holds at once when placement picks another device or nobody (this covers
//!   conflicts: when a peer also claims a TG this device holds, both compute placement with both
//!   alive and the holder rule picks the newer claim). Each transition yields exactly one
//!   [`Output::Activate`] / [`Output::Release`]. A device that loses a TG to a newer claim
//!   (pre-empted) was, to its peers, gone and back: it counts itself usable from that moment,
//!   as they do, so that every device agrees when a failback to it is due.
//! - **Orders** ([`Input::Failover`]): an order gets an id `clock_ms * 1000 + counter`, always
//!   above the last one this device issued, and is carried in every heartbeat. Orders heard from
//!   peers are merged, the newest id per TG wins. An order is cleared once its target is the
//!   only usable claimant of the TG, and dropped when its target is not usable; ids at or below
//!   a cleared or dropped one are ignored from then on, so a cleared order cannot come back. A
//!   failover without `--to` targets the TG's next-active; one naming an unknown device or TG is
//!   ignored.
//! - **Listening.** After [`Input::Start`] the device listens for `dead_after` before it claims
//!   anything (a restarting device must learn who holds what and not steal), unless it is the
//!   only device of the group. It sends heartbeats meanwhile (eligible, holding nothing).
//! - **Stall/resume.** When any input arrives more than `dead_after` after the time the core
//!   asked to be woken ([`Placement::poll_timeout`]), or more than `dead_after` after this
//!   device's last heartbeat went out, the process was stopped (`kill -STOP`) and its view is
//!   stale; its peers have (or may have) declared it dead. It then sends nothing and claims and
//!   releases nothing by placement until it has listened for `dead_after`, or has heard every
//!   peer at least one heartbeat interval after resuming (a backlog read at once on resume does
//!   not count as fresh). Any TG it held that an alive peer claims meanwhile is released at
//!   once ("pre-empted while unresponsive"), before its first heartbeat goes out. Becoming
//!   ineligible releases everything in every state (fail-safe). A stall at the very edge of
//!   `dead_after` that one side sees and the other does not ends in a conflict that the
//!   holder rule resolves the same way (the newer claim holds).
//! - **Unsynced.** [`Input::Unsynced`] sets the traffic groups whose mirror is not in sync on
//!   this device (names outside the group's TGs are dropped). It may come before
//!   [`Input::Start`]; until the caller says otherwise, every TG with a `sync_wait` counts as
//!   unsynced (nothing is known to be in sync after a start). It is carried in every heartbeat.
//! - **Unavailable.** [`Input::Unavailable`] sets the virtual addresses route health says not
//!   to advertise on this device; carried in every heartbeat. [`Placement::paths`] gives, per
//!   TG, the device placement puts it on and that device's unavailable addresses (None until
//!   the device has listened after its start or a stall: what it knew before is kept).
//! - **Reconfigure.** A running device that holds nothing and has not heard every peer of the
//!   new group yet (a new device joining) listens for `dead_after` first, as after a start.
//!   [`Input::Reconfigure`] replaces the group (normalised as by
//!   [`Placement::new`]; `me` stays this device). A traffic group no longer in it is released
//!   if active here ("removed from the device group") and everything known of it forgotten
//!   (orders, generations, unsynced); a new one is placed by the rules at once (when this
//!   device is running: no listening), and does not count as unsynced here (there is no state
//!   to be out of sync with). Devices no longer in the group are forgotten as peers: their
//!   claims and heartbeats no longer count. When the group no longer names this device, it
//!   releases every TG it holds ("this device was removed from the device group"), then sends
//!   nothing and claims nothing ([`Placement::paths`] None, [`Placement::roles`] empty) until
//!   a reconfiguration names it again, which starts it afresh as [`Input::Start`] does
//!   (listening for `dead_after`). A reconfiguration that changes the group sends a heartbeat
//!   at once.
//! - **Heartbeats.** [`Output::SendHeartbeat`] at start, then every `heartbeat_interval`, plus one
//!   at once whenever the active set, the eligibility, the unsynced set, the unavailable set,
//!   the known orders or the group change. `seq` starts at 1 and increases by one per heartbeat; `sent_ms`
//!   is the clock set by [`Placement::set_clock_ms`], or else `epoch` taken as the Unix ms at
//!   [`Input::Start`]. A heartbeat carries each claim with its generation and whether an order
//!   made it, and `usable_ms`: how long this device has been usable.
//!
//! This module must not do I/O, read the clock, or panic on any input sequence.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Claim, ConfigMark, Heartbeat, Order};

/// One traffic group's failover settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficGroupSpec {
    pub name: String,
    /// Preferred devices, first first.
    pub ha_order: Vec<String>,
    pub auto_failback: bool,
    pub failback_delay: Duration,
    /// Mirroring on: auto-failback waits until the returning device's mirror of this TG is in
    /// sync, at most this long after `failback_delay` (rule 2). None: mirroring off, no wait.
    pub sync_wait: Option<Duration>,
    /// With `sync_wait`: the returning device must be in sync for every TG, not only this one
    /// (persistence records are mirrored to every device: after the failback, clients of every
    /// TG reach it).
    pub sync_all_groups: bool,
    /// How much load the TG puts on the device that holds it, relative to the others (BIG-IP's
    /// HA load factor; rule 4). 0 counts as 1.
    pub load_factor: u32,
}

/// The device group as this device sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    /// This device's name.
    pub me: String,
    /// Every device of the group, this one included.
    pub devices: Vec<String>,
    pub traffic_groups: Vec<TrafficGroupSpec>,
    pub heartbeat_interval: Duration,
    pub dead_after: Duration,
    /// Each device's HA capacity (BIG-IP's: how much load it takes relative to the others;
    /// rule 4). A device missing, or with 0, counts 1.
    pub capacity: BTreeMap<String, u32>,
}

/// Events the driver feeds the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Start,
    /// Time has reached [`Placement::poll_timeout`].
    Timer,
    /// An authenticated, non-replayed heartbeat from a peer (checked by the caller).
    Heartbeat(Heartbeat),
    /// Several such heartbeats read at once (a socket's backlog), in the order received:
    /// taken in together before anything is decided, so that no decision sees one peer's
    /// latest heartbeat and another's stale one.
    Heartbeats(Vec<Heartbeat>),
    /// This device's own eligibility changed (links up/down — fail-safe; `lbctl standby`/`release`).
    Eligible(bool),
    /// The traffic groups whose mirrored session state this device does not hold in sync (it
    /// is not ready to take them back by auto-failback). The whole set, not a change.
    Unsynced(BTreeSet<String>),
    /// The spanning virtual addresses route health says not to advertise on this device. The
    /// whole set, not a change.
    Unavailable(BTreeSet<IpAddr>),
    /// This device's group configuration (config sync), carried in its heartbeats.
    Config(Option<ConfigMark>),
    /// `lbctl failover TG [--to DEV]` issued on this device (to = None: its next-active).
    Failover {
        traffic_group: String,
        to: Option<String>,
    },
    /// The device group changed (config sync applied a new device-group file): its devices,
    /// traffic groups, HA orders, capacities, load factors or timing. `me` stays this device;
    /// when the new group does not name it, this device was removed from the group (see the
    /// module documentation, "Reconfigure").
    Reconfigure(GroupSpec),
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Become active for the TG here (caller: add floating addresses, GARP, then announce routes).
    Activate {
        traffic_group: String,
        reason: String,
    },
    /// Stop being active (caller: withdraw routes, then remove addresses).
    Release {
        traffic_group: String,
        reason: String,
    },
    /// Send this heartbeat to every peer now (the caller signs and sends it).
    SendHeartbeat(Heartbeat),
}

/// What [`place`] decides from: one entry per device of the group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Every device, in any order.
    pub devices: Vec<DeviceView>,
    /// The order in force per traffic group (the newest id).
    pub orders: BTreeMap<String, Order>,
    /// Each device's HA capacity (rule 4); a device missing, or with 0, counts 1.
    pub capacity: BTreeMap<String, u32>,
    /// Each traffic group's load factor (rule 4), for the claims of TGs [`place_all`] is not
    /// placing itself (0 counts as 1); claims of TGs missing here and not placed add no load.
    pub load_factors: BTreeMap<String, u32>,
}

/// One device in a [`View`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceView {
    pub name: String,
    /// Alive and eligible.
    pub usable: bool,
    /// How long it has been usable without a break (zero when not usable).
    pub usable_for: Duration,
    /// Traffic groups it claims, with how long it has claimed each one.
    pub holds: BTreeMap<String, Duration>,
    /// The generation of each claim in `holds` (missing: 0).
    pub generations: BTreeMap<String, u64>,
    /// The claims in `holds` it took by a manual failover order.
    pub ordered: BTreeSet<String>,
    /// Traffic groups whose mirror is not in sync on it (see rule 2).
    pub unsynced: BTreeSet<String>,
}

impl DeviceView {
    /// The generation of its claim of `tg` (0 when it does not claim it or said none).
    pub fn generation(&self, tg: &str) -> u64 {
        self.generations.get(tg).copied().unwrap_or(0)
    }
}

/// Where a traffic group's path leads (see [`Placement::paths`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathOwner {
    pub traffic_group: String,
    /// The device placement puts the TG on; None when no device is usable.
    pub device: Option<String>,
    /// The virtual addresses not available on that device (its route health).
    pub unavailable: BTreeSet<IpAddr>,
}

/// Who holds a traffic group and who would take it next (see [`Placement::roles`]): what
/// mirroring needs to know to run its channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Role {
    pub traffic_group: String,
    /// The device believed active (the holder), if any.
    pub holder: Option<String>,
    /// The device that would take it over next.
    pub next_active: Option<String>,
}

/// A peer's group configuration as its last heartbeat carried it, and whether it is alive
/// (see [`Placement::peer_configs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub device: String,
    pub alive: bool,
    pub config: Option<ConfigMark>,
}

/// Which rule put a traffic group where [`place`] says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "rule")]
pub enum Rule {
    /// A manual failover order.
    Order { id: u64 },
    /// The current holder keeps it.
    Holder,
    /// Auto-failback from the holder `from`.
    Failback { from: String },
    /// Nobody usable holds it: the first usable device in HA order.
    First,
    /// Nobody usable holds it and no device of its (partial) HA order is usable: the usable
    /// device with the lowest load relative to its capacity.
    Load,
    /// No usable device.
    Nobody,
}

/// Where a traffic group belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub active: Option<String>,
    pub rule: Rule,
    /// Where it would go if `active` died.
    pub next_active: Option<String>,
    /// The device auto-failback would move it to now but for its mirror not being in sync
    /// (rule 2 with `sync_wait`): the failback waits for it.
    pub waiting_for_sync: Option<String>,
}

/// The placement rules of the module documentation for one traffic group: a pure function of
/// the view. For rule 4, the other traffic groups count with the claims of the view (and
/// their `view.load_factors`); [`place_all`] places every TG of the group in one pass.
pub fn place(tg: &TrafficGroupSpec, view: &View) -> Decision {
    place_all(std::slice::from_ref(tg), view)
        .pop()
        .unwrap_or(Decision {
            active: None,
            rule: Rule::Nobody,
            next_active: None,
            waiting_for_sync: None,
        })
}

/// The placement of every traffic group of `tgs` (the group's, in its order) in one pass: a
/// pure function of the view, so every device with the same view and group computes the same.
/// Rules 1-3 and 5 decide each TG on its own; rule 4 then places the TGs left over one after
/// the other in the order of `tgs`, each counting the ones placed before it in the pass (by
/// any rule) into the loads, so that TGs falling back at once spread. Each TG's next-active is
/// its placement in the same pass with its active device taken away.
pub fn place_all(tgs: &[TrafficGroupSpec], view: &View) -> Vec<Decision> {
    let placed = place_pass(tgs, view);
    let mut without: BTreeMap<&str, Vec<Placed>> = BTreeMap::new();
    for (active, _, _) in &placed {
        if let Some(gone) = active.as_deref() {
            if !without.contains_key(gone) {
                without.insert(gone, place_pass(tgs, &view_without(view, gone)));
            }
        }
    }
    placed
        .iter()
        .enumerate()
        .map(|(i, (active, rule, waiting_for_sync))| Decision {
            active: active.clone(),
            rule: rule.clone(),
            next_active: active
                .as_deref()
                .and_then(|gone| without.get(gone))
                .and_then(|p| p.get(i))
                .and_then(|p| p.0.clone()),
            waiting_for_sync: waiting_for_sync.clone(),
        })
        .collect()
}

/// Where a TG goes, by which rule, and who a failback waits for (see [`Decision`]).
type Placed = (Option<String>, Rule, Option<String>);

/// `view` with `gone` not usable and claiming nothing (for next-active).
fn view_without(view: &View, gone: &str) -> View {
    let mut without = view.clone();
    for d in without.devices.iter_mut().filter(|d| d.name == gone) {
        d.usable = false;
        d.usable_for = Duration::ZERO;
        d.holds.clear();
    }
    without
}

/// One placement pass over `tgs` (see [`place_all`]), without next-active.
fn place_pass(tgs: &[TrafficGroupSpec], view: &View) -> Vec<Placed> {
    let mut placed: Vec<Option<Placed>> = tgs.iter().map(|tg| place_by_order(tg, view)).collect();
    if placed.iter().all(Option::is_some) {
        return placed.into_iter().flatten().collect();
    }
    // Rule 4. Each usable device's load: the TGs of the pass placed on it, and its claims of
    // TGs outside the pass.
    let in_pass: BTreeSet<&str> = tgs.iter().map(|t| t.name.as_str()).collect();
    let mut load: BTreeMap<&str, u64> = BTreeMap::new();
    for d in view.devices.iter().filter(|d| d.usable) {
        let outside = d
            .holds
            .keys()
            .filter(|t| !in_pass.contains(t.as_str()))
            .filter_map(|t| view.load_factors.get(t))
            .fold(0u64, |sum, f| sum.saturating_add(u64::from((*f).max(1))));
        load.insert(d.name.as_str(), outside);
    }
    let add = |load: &mut BTreeMap<&str, u64>, device: &str, tg: &TrafficGroupSpec| {
        if let Some(l) = load.get_mut(device) {
            *l = l.saturating_add(u64::from(tg.load_factor.max(1)));
        }
    };
    for (tg, p) in tgs.iter().zip(&placed) {
        if let Some((Some(device), _, _)) = p {
            add(&mut load, device, tg);
        }
    }
    for (tg, p) in tgs.iter().zip(placed.iter_mut()) {
        if p.is_some() {
            continue;
        }
        let capacity = |name: &str| u64::from(view.capacity.get(name).copied().unwrap_or(1).max(1));
        let relative = |name: &str| (load.get(name).copied().unwrap_or(0), capacity(name));
        // The lowest load / capacity, compared exactly (cross-multiplied); ties by name.
        let best = view
            .devices
            .iter()
            .filter(|d| d.usable)
            .map(|d| d.name.as_str())
            .min_by(|a, b| {
                let ((la, ca), (lb, cb)) = (relative(a), relative(b));
                (u128::from(la) * u128::from(cb))
                    .cmp(&(u128::from(lb) * u128::from(ca)))
                    .then_with(|| a.cmp(b))
            });
        *p = Some(match best {
            Some(name) => {
                let name = name.to_string();
                add(&mut load, &name, tg);
                (Some(name), Rule::Load, None)
            }
            None => (None, Rule::Nobody, None),
        });
    }
    placed
        .into_iter()
        .map(|p| p.unwrap_or((None, Rule::Nobody, None)))
        .collect()
}

/// Rules 1-3 and 5 for one TG; None when rule 4 decides (nobody usable holds it, no device of
/// its HA order is usable, some other device is).
fn place_by_order(tg: &TrafficGroupSpec, view: &View) -> Option<Placed> {
    let usable = |name: &str| view.devices.iter().any(|d| d.name == name && d.usable);
    let order = effective_order(tg, view);
    let rank = |name: &str| order.iter().position(|n| n == name).unwrap_or(usize::MAX);

    if let Some(o) = view.orders.get(&tg.name) {
        if usable(&o.to) {
            return Some((Some(o.to.clone()), Rule::Order { id: o.id }, None));
        }
    }
    let holder = holder_of(tg, view, &order);
    if let Some(h) = holder {
        let mut waiting = None;
        if tg.auto_failback {
            let held_for = h.holds[&tg.name];
            let ordered = h.ordered.contains(&tg.name);
            // The first usable device earlier in HA order (after a manual order: that came
            // back after the holder took the TG); the failback waits for it even while a later
            // one is ready (devices count each other's return a network delay apart: no two
            // may fail back at once). A holder outside the HA order (rule 4) ranks after all.
            let back = order
                .iter()
                .take(rank(&h.name).min(order.len()))
                .find_map(|name| {
                    view.devices.iter().find(|d| {
                        &d.name == name && d.usable && (!ordered || d.usable_for <= held_for)
                    })
                });
            if let Some(back) = back.filter(|d| d.usable_for >= tg.failback_delay) {
                if sync_done(tg, back) {
                    return Some((
                        Some(back.name.clone()),
                        Rule::Failback {
                            from: h.name.clone(),
                        },
                        None,
                    ));
                }
                waiting = Some(back.name.clone());
            }
        }
        return Some((Some(h.name.clone()), Rule::Holder, waiting));
    }
    // Nobody holds it: the first usable device in HA order that holds the TG's mirrored state
    // (with mirroring on), else the first usable one.
    let usable_in_order: Vec<&DeviceView> = order
        .iter()
        .filter_map(|n| view.devices.iter().find(|d| &d.name == n && d.usable))
        .collect();
    let first = usable_in_order
        .iter()
        .find(|d| tg.sync_wait.is_none() || !unsynced_for(tg, d))
        .or(usable_in_order.first());
    match first {
        Some(d) => Some((Some(d.name.clone()), Rule::First, None)),
        None if view.devices.iter().any(|d| d.usable) => None,
        None => Some((None, Rule::Nobody, None)),
    }
}

/// Rule 2's mirroring condition for a failback candidate `d` that is otherwise due: mirroring
/// off, its mirror of the TG in sync, or the maximum wait over.
fn sync_done(tg: &TrafficGroupSpec, d: &DeviceView) -> bool {
    match tg.sync_wait {
        None => true,
        Some(max) => !unsynced_for(tg, d) || d.usable_for >= tg.failback_delay.saturating_add(max),
    }
}

/// Whether `d` reports its mirror not in sync for what a failback of `tg` needs: `tg` itself,
/// or with `sync_all_groups` any TG.
fn unsynced_for(tg: &TrafficGroupSpec, d: &DeviceView) -> bool {
    if tg.sync_all_groups {
        !d.unsynced.is_empty()
    } else {
        d.unsynced.contains(&tg.name)
    }
}

/// How a failback to `to` stands with mirroring, for reasons: empty with mirroring off.
fn sync_note(tg: &TrafficGroupSpec, view: &View, to: &str) -> String {
    let Some(max) = tg.sync_wait else {
        return String::new();
    };
    let unsynced = view
        .devices
        .iter()
        .any(|d| d.name == to && unsynced_for(tg, d));
    if unsynced {
        format!(
            " (mirror not in sync after {} max wait)",
            humantime::format_duration(max)
        )
    } else {
        " (mirror in sync)".into()
    }
}

/// The TG's HA order, or every device of the view (by name) when it has none.
fn effective_order(tg: &TrafficGroupSpec, view: &View) -> Vec<String> {
    if tg.ha_order.is_empty() {
        let names: BTreeSet<&String> = view.devices.iter().map(|d| &d.name).collect();
        names.into_iter().cloned().collect()
    } else {
        tg.ha_order.clone()
    }
}

/// This device's state for a traffic group, as `lbctl` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TgState {
    Active,
    Standby,
}

/// What the device group looks like from this device (serializable for `lbctl`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupStatus {
    pub me: String,
    pub epoch: u64,
    /// "listening" (after start), "resuming" (after a stall) or "running".
    pub phase: String,
    pub devices: Vec<DeviceStatus>,
    pub traffic_groups: Vec<TrafficGroupStatus>,
    /// Orders in force.
    pub orders: Vec<Order>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceStatus {
    pub name: String,
    pub alive: bool,
    pub eligible: bool,
    /// None for this device and for peers never heard.
    pub last_heard_ms_ago: Option<u64>,
    /// Traffic groups it claims (its last heartbeat; for a dead peer, what it last claimed).
    pub active: Vec<String>,
    /// Traffic groups whose mirror is not in sync on it (its last heartbeat; this device's
    /// own set), so it does not take them back by auto-failback yet.
    pub unsynced: Vec<String>,
    /// Virtual addresses its route health says not to advertise (its last heartbeat; this
    /// device's own set).
    pub unavailable: Vec<IpAddr>,
    /// Its group configuration (its last heartbeat; this device's own), for config sync.
    #[serde(skip)]
    pub config: Option<ConfigMark>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrafficGroupStatus {
    pub name: String,
    /// The device this one believes active (the holder), if any.
    pub active: Option<String>,
    /// Where placement puts it now and why (differs from `active` while it moves).
    pub placement: Option<String>,
    pub rule: Rule,
    pub next_active: Option<String>,
    /// This device's state for the TG.
    pub state: TgState,
    /// How long `state` has been so, since start.
    pub since_ms_ago: Option<u64>,
    /// Why it last moved on this device.
    pub reason: Option<String>,
    /// A device auto-failback would move the TG to but for its mirror not being in sync: the
    /// failback waits (at most the TG's `failback_sync_max_wait`).
    pub waiting_for_sync: Option<String>,
    /// The generation of the holder's claim.
    pub generation: Option<u64>,
}

#[derive(Debug, Clone)]
struct Peer {
    epoch: u64,
    seq: u64,
    last_heard: Instant,
    eligible: bool,
    usable_since: Option<Instant>,
    /// Claimed TGs and when this device first saw each claim.
    holds: BTreeMap<String, Instant>,
    /// The generation of each claim.
    generations: BTreeMap<String, u64>,
    /// The claims it took by a manual order.
    ordered: BTreeSet<String>,
    /// TGs its mirror is not in sync for (its last heartbeat).
    unsynced: BTreeSet<String>,
    /// Virtual addresses not available on it (its last heartbeat).
    unavailable: BTreeSet<IpAddr>,
    /// Its group configuration (its last heartbeat).
    config: Option<ConfigMark>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    NotStarted,
    /// Fresh start: claim nothing until `until`.
    Listening {
        until: Instant,
    },
    /// After a stall detected at `at`: send nothing, claim nothing until `until` or every
    /// peer was heard at or after `fresh_after`.
    Resuming {
        until: Instant,
        fresh_after: Instant,
    },
    Running,
    /// This device is not in the group ([`Input::Reconfigure`] without it): it sends nothing
    /// and claims nothing until a reconfiguration names it again.
    Removed,
}

#[derive(Debug, Clone, Default)]
struct TgLocal {
    since: Option<Instant>,
    reason: Option<String>,
    /// The last holder this device saw (for reasons).
    last_holder: Option<String>,
}

/// One device's placement state machine (see the module documentation).
#[derive(Debug, Clone)]
pub struct Placement {
    spec: GroupSpec,
    epoch: u64,
    seq: u64,
    phase: Phase,
    eligible: bool,
    usable_since: Option<Instant>,
    /// TGs whose mirror is not in sync here ([`Input::Unsynced`]).
    unsynced: BTreeSet<String>,
    /// Virtual addresses not available here ([`Input::Unavailable`]).
    unavailable: BTreeSet<IpAddr>,
    /// This device's group configuration ([`Input::Config`]).
    config: Option<ConfigMark>,
    /// TGs active here and since when.
    active: BTreeMap<String, Instant>,
    /// The generation of this device's claim of each TG active here.
    generations: BTreeMap<String, u64>,
    /// The TGs active here that it took by a manual order.
    ordered: BTreeSet<String>,
    /// Per TG, the highest claim generation heard from any device or given here.
    known_generation: BTreeMap<String, u64>,
    /// When the last heartbeat went out.
    last_sent: Option<Instant>,
    peers: BTreeMap<String, Peer>,
    /// Orders in force, per TG.
    orders: BTreeMap<String, Order>,
    /// Per TG, the highest order id cleared or dropped.
    retired: BTreeMap<String, u64>,
    last_order_id: u64,
    order_counter: u64,
    /// (instant, Unix ms at that instant).
    clock: Option<(Instant, u64)>,
    next_heartbeat: Option<Instant>,
    /// When the driver was asked to wake us last (for stall detection).
    expected: Option<Instant>,
    /// Peers heard while resuming.
    heard_fresh: BTreeSet<String>,
    tgs: BTreeMap<String, TgLocal>,
}

impl Placement {
    pub fn new(mut spec: GroupSpec, epoch: u64) -> Self {
        normalise(&mut spec);
        if !spec.devices.contains(&spec.me) {
            spec.devices.push(spec.me.clone());
        }
        let tgs = spec
            .traffic_groups
            .iter()
            .map(|tg| (tg.name.clone(), TgLocal::default()))
            .collect();
        // Nothing is known to be in sync until the caller says so.
        let unsynced = spec
            .traffic_groups
            .iter()
            .filter(|tg| tg.sync_wait.is_some())
            .map(|tg| tg.name.clone())
            .collect();
        Placement {
            spec,
            epoch,
            seq: 0,
            phase: Phase::NotStarted,
            eligible: true,
            usable_since: None,
            unsynced,
            unavailable: BTreeSet::new(),
            config: None,
            active: BTreeMap::new(),
            generations: BTreeMap::new(),
            ordered: BTreeSet::new(),
            known_generation: BTreeMap::new(),
            last_sent: None,
            peers: BTreeMap::new(),
            orders: BTreeMap::new(),
            retired: BTreeMap::new(),
            last_order_id: 0,
            order_counter: 0,
            clock: None,
            next_heartbeat: None,
            expected: None,
            heard_fresh: BTreeSet::new(),
            tgs,
        }
    }

    /// Tell the core the Unix time in ms at `now` (for `sent_ms` and order ids).
    pub fn set_clock_ms(&mut self, now: Instant, unix_ms: u64) {
        self.clock = Some((now, unix_ms));
    }

    pub fn process(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        if matches!(self.phase, Phase::NotStarted | Phase::Removed) {
            // Not taking part: keep what this device is told about itself, send nothing.
            match input {
                Input::Unsynced(set) => {
                    self.set_unsynced(set);
                }
                Input::Unavailable(set) => self.unavailable = set,
                Input::Config(mark) if self.phase == Phase::Removed => self.config = mark,
                Input::Eligible(e) if self.phase == Phase::Removed => self.eligible = e,
                Input::Start if self.phase == Phase::NotStarted => {
                    self.start(now, &mut out);
                    self.finish(now);
                }
                Input::Reconfigure(spec) => {
                    let removed = self.phase == Phase::Removed;
                    self.reconfigure(now, spec, &mut out);
                    // Named again: it comes back as from a start.
                    if removed && self.member() {
                        self.start(now, &mut out);
                        self.finish(now);
                    }
                }
                _ => {}
            }
            return out;
        }
        // Woken more than dead_after late, or silent for more than dead_after since the last
        // heartbeat went out: the process was stopped, its peers have (or may have) declared
        // it dead, and what it knows of them is stale.
        let late = self
            .expected
            .is_some_and(|t| now > t + self.spec.dead_after);
        let silent = !self.resuming()
            && self
                .last_sent
                .is_some_and(|t| now > t + self.spec.dead_after);
        if late || silent {
            self.phase = Phase::Resuming {
                until: now + self.spec.dead_after,
                fresh_after: now + self.spec.heartbeat_interval,
            };
            self.heard_fresh.clear();
            self.usable_since = None;
        }
        let mut changed = false;
        match input {
            Input::Start | Input::Timer => {}
            Input::Heartbeat(hb) => self.heard(now, hb),
            Input::Heartbeats(hbs) => {
                for hb in hbs {
                    self.heard(now, hb);
                }
            }
            Input::Eligible(e) => {
                if e != self.eligible {
                    self.eligible = e;
                    self.usable_since = (e && !self.resuming()).then_some(now);
                    changed = true;
                }
            }
            Input::Unsynced(set) => changed = self.set_unsynced(set),
            Input::Unavailable(set) => {
                changed = set != self.unavailable;
                self.unavailable = set;
            }
            Input::Config(mark) => {
                changed = mark != self.config;
                self.config = mark;
            }
            Input::Failover { traffic_group, to } => {
                changed = self.failover(now, &traffic_group, to);
            }
            Input::Reconfigure(spec) => {
                changed = self.reconfigure(now, spec, &mut out);
                if self.phase == Phase::Removed {
                    return out;
                }
                // A device that holds nothing and has never heard some of its (new) peers —
                // a new device joining a running group — does not know who holds what: it
                // listens first, as after a start, instead of taking every traffic group
                // whose holders it has not heard yet.
                let unheard = self
                    .spec
                    .devices
                    .iter()
                    .any(|d| *d != self.spec.me && !self.peers.contains_key(d));
                if self.phase == Phase::Running && self.active.is_empty() && unheard {
                    self.phase = Phase::Listening {
                        until: now + self.spec.dead_after,
                    };
                }
            }
        }
        self.reconcile(now, changed, &mut out);
        self.finish(now);
        out
    }

    /// Takes this device's unsynced set (names of unknown TGs dropped); true if it changed.
    fn set_unsynced(&mut self, mut set: BTreeSet<String>) -> bool {
        set.retain(|tg| self.tgs.contains_key(tg));
        if set == self.unsynced {
            return false;
        }
        self.unsynced = set;
        true
    }

    /// Whether the group names this device.
    fn member(&self) -> bool {
        self.spec.devices.contains(&self.spec.me)
    }

    /// Takes the new group (see the module documentation, "Reconfigure"); true if it changed.
    /// When it no longer names this device, releases everything and stops taking part.
    fn reconfigure(&mut self, now: Instant, mut spec: GroupSpec, out: &mut Vec<Output>) -> bool {
        spec.me = self.spec.me.clone();
        normalise(&mut spec);
        let tgs: BTreeSet<String> = spec.traffic_groups.iter().map(|t| t.name.clone()).collect();
        let gone: Vec<String> = self
            .tgs
            .keys()
            .filter(|t| !tgs.contains(*t))
            .cloned()
            .collect();
        for tg in &gone {
            self.release(now, tg, "removed from the device group".into(), out);
            self.tgs.remove(tg);
            self.orders.remove(tg);
            self.retired.remove(tg);
            self.known_generation.remove(tg);
            self.generations.remove(tg);
            self.ordered.remove(tg);
            self.unsynced.remove(tg);
        }
        // A new TG has no mirrored state to be out of sync with: not unsynced here.
        for tg in tgs {
            self.tgs.entry(tg).or_default();
        }
        // Devices no longer in the group: their claims, orders and heartbeats no longer count
        // (heard() ignores devices outside the group; orders to them are dropped as to an
        // unusable target).
        self.peers.retain(|d, _| spec.devices.contains(d));
        self.heard_fresh.retain(|d| spec.devices.contains(d));
        let changed = spec != self.spec;
        self.spec = spec;
        if !self.member() && !matches!(self.phase, Phase::NotStarted | Phase::Removed) {
            let held: Vec<String> = self.active.keys().cloned().collect();
            for tg in held {
                self.release(
                    now,
                    &tg,
                    "this device was removed from the device group".into(),
                    out,
                );
            }
            self.phase = Phase::Removed;
            self.peers.clear();
            self.heard_fresh.clear();
            self.usable_since = None;
            self.next_heartbeat = None;
            self.last_sent = None;
            self.expected = None;
        }
        changed
    }

    /// This device's unsynced set: the traffic groups whose mirror is not in sync here.
    pub fn unsynced(&self) -> &BTreeSet<String> {
        &self.unsynced
    }

    /// When the driver must feed [`Input::Timer`] next (None before Start).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expected
    }

    /// Where each traffic group's path leads now: the device [`place`] puts it on, with the
    /// virtual addresses not available there. Every device computes the same from the same
    /// view, so every device announces the same paths (docs/design.md, "ECMP and failover"). None until this device
    /// has listened after its start, and while it resumes from a stall: it does not know yet.
    pub fn paths(&self, now: Instant) -> Option<Vec<PathOwner>> {
        if self.phase != Phase::Running {
            return None;
        }
        let view = self.view(now);
        Some(
            self.spec
                .traffic_groups
                .iter()
                .zip(self.decisions(&view))
                .map(|(tg, d)| {
                    let device = d.active;
                    let unavailable = match device.as_deref() {
                        Some(d) if d == self.spec.me => self.unavailable.clone(),
                        Some(d) => self
                            .peers
                            .get(d)
                            .map(|p| p.unavailable.clone())
                            .unwrap_or_default(),
                        None => BTreeSet::new(),
                    };
                    PathOwner {
                        traffic_group: tg.name.clone(),
                        device,
                        unavailable,
                    }
                })
                .collect(),
        )
    }

    /// Each traffic group's holder and next-active device, as [`Placement::status`] shows
    /// them (in every phase).
    pub fn roles(&self, now: Instant) -> Vec<Role> {
        if self.phase == Phase::Removed {
            return Vec::new();
        }
        let view = self.view(now);
        self.spec
            .traffic_groups
            .iter()
            .zip(self.decisions(&view))
            .map(|(tg, d)| Role {
                traffic_group: tg.name.clone(),
                holder: holder(tg, &view),
                next_active: d.next_active,
            })
            .collect()
    }

    /// [`place_all`] over the group's traffic groups, in their order.
    fn decisions(&self, view: &View) -> Vec<Decision> {
        place_all(&self.spec.traffic_groups, view)
    }

    /// The decision for the traffic group `tg` of the group's pass.
    fn decision(&self, tg: &str, view: &View) -> Decision {
        self.spec
            .traffic_groups
            .iter()
            .zip(self.decisions(view))
            .find(|(t, _)| t.name == tg)
            .map(|(_, d)| d)
            .unwrap_or(Decision {
                active: None,
                rule: Rule::Nobody,
                next_active: None,
                waiting_for_sync: None,
            })
    }

    /// Each peer's group configuration (its last heartbeat) and whether it is alive: what
    /// config sync compares this device's configuration with.
    pub fn peer_configs(&self, now: Instant) -> Vec<PeerConfig> {
        self.spec
            .devices
            .iter()
            .filter(|d| **d != self.spec.me)
            .map(|d| {
                let p = self.peers.get(d);
                PeerConfig {
                    device: d.clone(),
                    alive: p.is_some_and(|p| self.alive(p, now)),
                    config: p.and_then(|p| p.config.clone()),
                }
            })
            .collect()
    }

    pub fn status(&self, now: Instant) -> GroupStatus {
        let view = self.view(now);
        let ms_ago = |t: Instant| now.saturating_duration_since(t).as_millis() as u64;
        let devices = self
            .spec
            .devices
            .iter()
            .map(|name| {
                if *name == self.spec.me {
                    DeviceStatus {
                        name: name.clone(),
                        alive: true,
                        eligible: self.eligible,
                        last_heard_ms_ago: None,
                        active: self.active.keys().cloned().collect(),
                        unsynced: self.unsynced.iter().cloned().collect(),
                        unavailable: self.unavailable.iter().copied().collect(),
                        config: self.config.clone(),
                    }
                } else {
                    let p = self.peers.get(name);
                    DeviceStatus {
                        name: name.clone(),
                        alive: p.is_some_and(|p| self.alive(p, now)),
                        eligible: p.is_some_and(|p| p.eligible),
                        last_heard_ms_ago: p.map(|p| ms_ago(p.last_heard)),
                        active: p
                            .map(|p| p.holds.keys().cloned().collect())
                            .unwrap_or_default(),
                        unsynced: p
                            .map(|p| p.unsynced.iter().cloned().collect())
                            .unwrap_or_default(),
                        unavailable: p
                            .map(|p| p.unavailable.iter().copied().collect())
                            .unwrap_or_default(),
                        config: p.and_then(|p| p.config.clone()),
                    }
                }
            })
            .collect();
        let traffic_groups = self
            .spec
            .traffic_groups
            .iter()
            .zip(self.decisions(&view))
            .map(|(tg, d)| {
                let local = self.tgs.get(&tg.name).cloned().unwrap_or_default();
                let holder = holder(tg, &view);
                let generation = holder.as_ref().and_then(|h| {
                    view.devices
                        .iter()
                        .find(|d| &d.name == h)
                        .map(|d| d.generation(&tg.name))
                });
                TrafficGroupStatus {
                    name: tg.name.clone(),
                    active: holder,
                    generation,
                    placement: d.active,
                    rule: d.rule,
                    next_active: d.next_active,
                    state: if self.active.contains_key(&tg.name) {
                        TgState::Active
                    } else {
                        TgState::Standby
                    },
                    since_ms_ago: local.since.map(ms_ago),
                    reason: local.reason,
                    waiting_for_sync: d.waiting_for_sync,
                }
            })
            .collect();
        GroupStatus {
            me: self.spec.me.clone(),
            epoch: self.epoch,
            phase: match self.phase {
                Phase::NotStarted => "not-started",
                Phase::Listening { .. } => "listening",
                Phase::Resuming { .. } => "resuming",
                Phase::Running => "running",
                Phase::Removed => "removed",
            }
            .to_string(),
            devices,
            traffic_groups,
            orders: self.orders.values().cloned().collect(),
        }
    }

    /// The view [`place`] decides from, as this device has it at `now`.
    pub fn view(&self, now: Instant) -> View {
        let since =
            |t: Option<Instant>| t.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let devices = self
            .spec
            .devices
            .iter()
            .map(|name| {
                if *name == self.spec.me {
                    let usable = self.eligible && self.usable_since.is_some();
                    DeviceView {
                        name: name.clone(),
                        usable,
                        usable_for: if usable {
                            since(self.usable_since)
                        } else {
                            Duration::ZERO
                        },
                        holds: self
                            .active
                            .iter()
                            .map(|(tg, t)| (tg.clone(), since(Some(*t))))
                            .collect(),
                        generations: self.generations.clone(),
                        ordered: self.ordered.clone(),
                        unsynced: self.unsynced.clone(),
                    }
                } else {
                    match self.peers.get(name) {
                        Some(p) if self.alive(p, now) => {
                            let usable = p.eligible && p.usable_since.is_some();
                            DeviceView {
                                name: name.clone(),
                                usable,
                                usable_for: if usable {
                                    since(p.usable_since)
                                } else {
                                    Duration::ZERO
                                },
                                holds: p
                                    .holds
                                    .iter()
                                    .map(|(tg, t)| (tg.clone(), since(Some(*t))))
                                    .collect(),
                                generations: p.generations.clone(),
                                ordered: p.ordered.clone(),
                                unsynced: p.unsynced.clone(),
                            }
                        }
                        _ => DeviceView {
                            name: name.clone(),
                            usable: false,
                            usable_for: Duration::ZERO,
                            holds: BTreeMap::new(),
                            generations: BTreeMap::new(),
                            ordered: BTreeSet::new(),
                            unsynced: BTreeSet::new(),
                        },
                    }
                }
            })
            .collect();
        View {
            devices,
            orders: self.orders.clone(),
            capacity: self.spec.capacity.clone(),
            load_factors: self
                .spec
                .traffic_groups
                .iter()
                .map(|tg| (tg.name.clone(), tg.load_factor))
                .collect(),
        }
    }

    fn resuming(&self) -> bool {
        matches!(self.phase, Phase::Resuming { .. })
    }

    fn alive(&self, p: &Peer, now: Instant) -> bool {
        now < p.last_heard + self.spec.dead_after
    }

    fn start(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.clock.is_none() {
            self.clock = Some((now, self.epoch));
        }
        if !self.member() {
            self.phase = Phase::Removed;
            return;
        }
        self.usable_since = Some(now);
        let alone = self.spec.devices.iter().all(|d| *d == self.spec.me);
        self.phase = if alone {
            Phase::Running
        } else {
            Phase::Listening {
                until: now + self.spec.dead_after,
            }
        };
        self.next_heartbeat = Some(now);
        self.reconcile(now, false, out);
    }

    fn heard(&mut self, now: Instant, hb: Heartbeat) {
        if hb.device == self.spec.me || !self.spec.devices.contains(&hb.device) {
            return;
        }
        let dead_after = self.spec.dead_after;
        let fresh = match self.peers.get(&hb.device) {
            Some(p) if hb.epoch < p.epoch || (hb.epoch == p.epoch && hb.seq <= p.seq) => return,
            Some(p) => hb.epoch != p.epoch || now >= p.last_heard + dead_after,
            None => true,
        };
        if let Phase::Resuming { fresh_after, .. } = self.phase {
            if now >= fresh_after {
                self.heard_fresh.insert(hb.device.clone());
            }
        }
        let old = self.peers.remove(&hb.device);
        // A peer that was gone to this device (dead, or restarted) counts it usable from now
        // on (it was gone to the peer too, or the peer's new process does not know it): so
        // does this device, and its heartbeats' usable_ms tell the others.
        if fresh && old.is_some() && self.usable_since.is_some() && !self.resuming() {
            self.usable_since = Some(now);
        }
        let (was_usable_since, old_holds) = match (&old, fresh) {
            (Some(p), false) => (p.usable_since.filter(|_| p.eligible), p.holds.clone()),
            _ => (None, BTreeMap::new()),
        };
        // A claim first heard while this device listens after its start predates it: date it
        // just before this device became usable, so that every device agrees this device came
        // back after the holder took the TG (auto-failback to it is due, as its peers see it).
        let claim_since = match (self.phase, self.usable_since) {
            (Phase::Listening { .. }, Some(s)) => {
                s.checked_sub(Duration::from_nanos(1)).unwrap_or(s)
            }
            _ => now,
        };
        // A claim of a new generation is a new claim (the device took the TG again).
        let old_gens = old
            .as_ref()
            .map(|p| p.generations.clone())
            .unwrap_or_default();
        let holds = hb
            .active
            .iter()
            .map(|c| {
                let tg = &c.traffic_group;
                let same = old_gens.get(tg) == Some(&c.generation);
                let since = old_holds.get(tg).copied().filter(|_| same);
                (tg.clone(), since.unwrap_or(claim_since))
            })
            .collect();
        let generations = hb
            .active
            .iter()
            .map(|c| (c.traffic_group.clone(), c.generation))
            .collect();
        let ordered = hb
            .active
            .iter()
            .filter(|c| c.ordered)
            .map(|c| c.traffic_group.clone())
            .collect();
        for c in &hb.active {
            if self.tgs.contains_key(&c.traffic_group) {
                let k = self
                    .known_generation
                    .entry(c.traffic_group.clone())
                    .or_insert(0);
                *k = (*k).max(c.generation);
            }
        }
        // Usable since the later of our observation and the sender's own count (which it
        // restarts when it was pre-empted: to its peers it was gone and came back).
        let usable_since = if hb.eligible {
            let local = was_usable_since.unwrap_or(now);
            let reported = (hb.usable_ms != u64::MAX)
                .then(|| now.checked_sub(Duration::from_millis(hb.usable_ms)))
                .flatten();
            Some(reported.map_or(local, |r| r.max(local)))
        } else {
            None
        };
        for o in &hb.orders {
            self.merge_order(o.clone());
        }
        self.peers.insert(
            hb.device.clone(),
            Peer {
                epoch: hb.epoch,
                seq: hb.seq,
                last_heard: now,
                eligible: hb.eligible,
                usable_since,
                holds,
                generations,
                ordered,
                unsynced: hb.unsynced.iter().cloned().collect(),
                unavailable: hb.unavailable.iter().copied().collect(),
                config: hb.config.clone(),
            },
        );
    }

    /// Takes `o` if it is the newest for its TG and not retired; true if taken.
    fn merge_order(&mut self, o: Order) -> bool {
        if !self.tgs.contains_key(&o.traffic_group) || !self.spec.devices.contains(&o.to) {
            return false;
        }
        if self
            .retired
            .get(&o.traffic_group)
            .is_some_and(|r| o.id <= *r)
        {
            return false;
        }
        if self
            .orders
            .get(&o.traffic_group)
            .is_some_and(|cur| cur.id >= o.id)
        {
            return false;
        }
        self.orders.insert(o.traffic_group.clone(), o);
        true
    }

    fn failover(&mut self, now: Instant, tg_name: &str, to: Option<String>) -> bool {
        let Some(tg) = self
            .spec
            .traffic_groups
            .iter()
            .find(|t| t.name == tg_name)
            .cloned()
        else {
            return false;
        };
        let to = match to {
            Some(to) => to,
            None => match self.decision(&tg.name, &self.view(now)).next_active {
                Some(n) => n,
                None => return false,
            },
        };
        let base = self.clock_ms(now).saturating_mul(1000) + self.order_counter % 1000;
        self.order_counter += 1;
        let floor = self
            .last_order_id
            .max(self.orders.get(tg_name).map_or(0, |o| o.id))
            .max(self.retired.get(tg_name).copied().unwrap_or(0));
        let id = base.max(floor + 1);
        self.last_order_id = id;
        self.merge_order(Order {
            id,
            traffic_group: tg_name.to_string(),
            to,
        })
    }

    fn clock_ms(&self, now: Instant) -> u64 {
        match self.clock {
            Some((at, ms)) => {
                ms.saturating_add(now.saturating_duration_since(at).as_millis() as u64)
            }
            None => self.epoch,
        }
    }

    /// Phase changes, order housekeeping, activations and releases, heartbeats.
    fn reconcile(&mut self, now: Instant, mut changed: bool, out: &mut Vec<Output>) {
        let peers_all_heard = self
            .spec
            .devices
            .iter()
            .filter(|d| **d != self.spec.me)
            .all(|d| self.heard_fresh.contains(d));
        match self.phase {
            Phase::Listening { until } if now >= until => self.phase = Phase::Running,
            Phase::Resuming { until, .. } if now >= until || peers_all_heard => {
                self.phase = Phase::Running;
                if self.eligible {
                    self.usable_since = Some(now);
                }
                changed = true;
            }
            _ => {}
        }

        let before: BTreeSet<String> = self.active.keys().cloned().collect();
        let orders_before = self.orders.clone();

        // Fail-safe first, in every phase.
        if !self.eligible {
            for tg in before.iter() {
                self.release(now, tg, "ineligible (link down or standby)".into(), out);
            }
        }
        if self.resuming() {
            // Only pre-emption: a TG held across the stall that an alive peer now claims.
            let held: Vec<String> = self.active.keys().cloned().collect();
            for tg in held {
                let by = self
                    .peers
                    .iter()
                    .find(|(_, p)| self.alive(p, now) && p.holds.contains_key(&tg))
                    .map(|(n, _)| n.clone());
                if let Some(by) = by {
                    self.release(
                        now,
                        &tg,
                        format!("pre-empted while unresponsive ({by} holds it)"),
                        out,
                    );
                }
            }
        } else {
            self.housekeep_orders(now);
            if self.phase == Phase::Running {
                self.act(now, out);
            }
        }
        self.note_holders(now);

        let after: BTreeSet<String> = self.active.keys().cloned().collect();
        changed |= before != after || orders_before != self.orders;
        let due = self.next_heartbeat.is_some_and(|t| now >= t);
        if due {
            let interval = self.spec.heartbeat_interval;
            let mut next = self.next_heartbeat.unwrap_or(now) + interval;
            if next <= now {
                next = now + interval;
            }
            self.next_heartbeat = Some(next);
        }
        if (due || changed) && !self.resuming() {
            self.seq += 1;
            self.last_sent = Some(now);
            out.push(Output::SendHeartbeat(Heartbeat {
                device: self.spec.me.clone(),
                epoch: self.epoch,
                seq: self.seq,
                sent_ms: self.clock_ms(now),
                eligible: self.eligible,
                usable_ms: match self.usable_since {
                    Some(t) if self.eligible => now.saturating_duration_since(t).as_millis() as u64,
                    _ => 0,
                },
                active: self
                    .active
                    .keys()
                    .map(|tg| Claim {
                        ordered: self.ordered.contains(tg),
                        ..Claim::new(tg.clone(), self.generation(tg))
                    })
                    .collect(),
                orders: self.orders.values().cloned().collect(),
                unsynced: self.unsynced.iter().cloned().collect(),
                unavailable: self.unavailable.iter().copied().collect(),
                config: self.config.clone(),
            }));
        }
    }

    fn housekeep_orders(&mut self, now: Instant) {
        let view = self.view(now);
        let mut retire = Vec::new();
        for (tg, o) in &self.orders {
            let target = view.devices.iter().find(|d| d.name == o.to);
            let usable = target.is_some_and(|d| d.usable);
            let claimants: Vec<&str> = view
                .devices
                .iter()
                .filter(|d| d.usable && d.holds.contains_key(tg))
                .map(|d| d.name.as_str())
                .collect();
            if !usable || claimants == [o.to.as_str()] {
                retire.push((tg.clone(), o.id));
            }
        }
        for (tg, id) in retire {
            self.orders.remove(&tg);
            let r = self.retired.entry(tg).or_insert(0);
            *r = (*r).max(id);
        }
    }

    fn act(&mut self, now: Instant, out: &mut Vec<Output>) {
        let view = self.view(now);
        let me = self.spec.me.clone();
        let mut preempted = false;
        let decisions = self.decisions(&view);
        for (tg, d) in self.spec.traffic_groups.clone().into_iter().zip(decisions) {
            let mine = d.active.as_deref() == Some(me.as_str());
            let here = self.active.contains_key(&tg.name);
            if mine && !here {
                let reason = match &d.rule {
                    Rule::Order { id } => format!("manual failover order {id} to {me}"),
                    Rule::Failback { from } => format!(
                        "auto-failback to {me} from {from} after {}{}",
                        humantime::format_duration(tg.failback_delay),
                        sync_note(&tg, &view, &me)
                    ),
                    Rule::Load => {
                        let why = "no device of its HA order is usable";
                        match self.previous_gone(now, &tg) {
                            Some(prev) => format!("{prev}; {why}, {me} is the least loaded"),
                            None => format!("{why}, {me} is the least loaded"),
                        }
                    }
                    Rule::First | Rule::Holder | Rule::Nobody => self.takeover_reason(now, &tg),
                };
                self.active.insert(tg.name.clone(), now);
                let known = self.known_generation.get(&tg.name).copied().unwrap_or(0);
                let generation = known.saturating_add(1).max(self.clock_ms(now));
                self.generations.insert(tg.name.clone(), generation);
                self.known_generation.insert(tg.name.clone(), generation);
                if matches!(d.rule, Rule::Order { .. }) {
                    self.ordered.insert(tg.name.clone());
                }
                self.moved(now, &tg.name, reason.clone());
                out.push(Output::Activate {
                    traffic_group: tg.name.clone(),
                    reason,
                });
            } else if !mine && here {
                let to = d.active.clone().unwrap_or_else(|| "nobody".into());
                let reason = match &d.rule {
                    Rule::Order { id } => format!("manual failover order {id} to {to}"),
                    Rule::Failback { .. } => format!(
                        "auto-failback to {to} after {}{}",
                        humantime::format_duration(tg.failback_delay),
                        sync_note(&tg, &view, &to)
                    ),
                    Rule::Holder => {
                        let theirs = view
                            .devices
                            .iter()
                            .find(|d| d.name == to)
                            .map_or(0, |d| d.generation(&tg.name));
                        let mine = self.generation(&tg.name);
                        if theirs > mine {
                            preempted = true;
                            format!(
                                "pre-empted: {to} took it over (its claim {theirs} is newer than {mine})"
                            )
                        } else {
                            format!("{to} also active and keeps it")
                        }
                    }
                    Rule::First | Rule::Load | Rule::Nobody => {
                        format!("placement moved it to {to}")
                    }
                };
                self.release(now, &tg.name, reason, out);
            }
        }
        // To its peers this device was gone and came back: they count it usable from when
        // they heard it again, so does it (failbacks to it are then due alike everywhere).
        if preempted && self.eligible {
            self.usable_since = Some(now);
        }
    }

    /// The generation of this device's claim of `tg` (0 when not active here).
    fn generation(&self, tg: &str) -> u64 {
        self.generations.get(tg).copied().unwrap_or(0)
    }

    /// Why this device takes a TG nobody usable holds.
    fn takeover_reason(&self, now: Instant, tg: &TrafficGroupSpec) -> String {
        self.previous_gone(now, tg)
            .unwrap_or_else(|| "first available in HA order".into())
    }

    /// What became of the TG's last holder, a peer (None: none seen).
    fn previous_gone(&self, now: Instant, tg: &TrafficGroupSpec) -> Option<String> {
        let prev = self
            .tgs
            .get(&tg.name)
            .and_then(|l| l.last_holder.clone())
            .filter(|p| *p != self.spec.me)?;
        Some(match self.peers.get(&prev) {
            Some(p) if !self.alive(p, now) => format!(
                "{prev} dead (no heartbeat for {}ms)",
                now.saturating_duration_since(p.last_heard).as_millis()
            ),
            Some(p) if !p.eligible => format!("{prev} ineligible"),
            None if !self.spec.devices.contains(&prev) => {
                format!("{prev} was removed from the device group")
            }
            _ => format!("{prev} released it"),
        })
    }

    fn release(&mut self, now: Instant, tg: &str, reason: String, out: &mut Vec<Output>) {
        if self.active.remove(tg).is_some() {
            self.generations.remove(tg);
            self.ordered.remove(tg);
            self.moved(now, tg, reason.clone());
            out.push(Output::Release {
                traffic_group: tg.to_string(),
                reason,
            });
        }
    }

    fn moved(&mut self, now: Instant, tg: &str, reason: String) {
        let l = self.tgs.entry(tg.to_string()).or_default();
        l.since = Some(now);
        l.reason = Some(reason);
    }

    fn note_holders(&mut self, now: Instant) {
        let view = self.view(now);
        for tg in &self.spec.traffic_groups {
            if let Some(h) = holder(tg, &view) {
                if let Some(l) = self.tgs.get_mut(&tg.name) {
                    l.last_holder = Some(h);
                }
            }
        }
    }

    /// Records the next wake-up (for poll_timeout and stall detection).
    fn finish(&mut self, now: Instant) {
        let mut t = self.next_heartbeat;
        let mut consider = |c: Instant| {
            if c > now {
                t = Some(t.map_or(c, |t| t.min(c)));
            }
        };
        match self.phase {
            Phase::Listening { until } | Phase::Resuming { until, .. } => consider(until),
            _ => {}
        }
        // When a failback becomes due, and when a failback waiting for sync stops waiting.
        let delays: BTreeSet<Duration> = self
            .spec
            .traffic_groups
            .iter()
            .filter(|tg| tg.auto_failback)
            .flat_map(|tg| {
                let max_wait = tg.sync_wait.map(|w| tg.failback_delay.saturating_add(w));
                std::iter::once(tg.failback_delay).chain(max_wait)
            })
            .collect();
        let mut since = vec![self.usable_since];
        for p in self.peers.values() {
            if now < p.last_heard + self.spec.dead_after {
                consider(p.last_heard + self.spec.dead_after);
                since.push(p.usable_since);
            }
        }
        for s in since.into_iter().flatten() {
            for d in &delays {
                // A huge delay (Duration::MAX with sync_wait) must not overflow the instant.
                if let Some(at) = s.checked_add(*d) {
                    consider(at);
                }
            }
        }
        self.expected = t;
    }
}

/// What [`Placement::new`] and [`Input::Reconfigure`] make of a group: intervals of 1ms to a
/// day (no instant overflows), failback delays of at least `dead_after`.
fn normalise(spec: &mut GroupSpec) {
    let (min, max) = (Duration::from_millis(1), Duration::from_secs(86_400));
    spec.heartbeat_interval = spec.heartbeat_interval.clamp(min, max);
    spec.dead_after = spec.dead_after.clamp(min, max);
    for tg in &mut spec.traffic_groups {
        tg.failback_delay = tg.failback_delay.max(spec.dead_after);
    }
}

/// The claimant earliest in HA order (see the module documentation).
fn holder(tg: &TrafficGroupSpec, view: &View) -> Option<String> {
    holder_of(tg, view, &effective_order(tg, view)).map(|d| d.name.clone())
}

fn holder_of<'v>(
    tg: &TrafficGroupSpec,
    view: &'v View,
    order: &[String],
) -> Option<&'v DeviceView> {
    let rank = |name: &str| order.iter().position(|n| n == name).unwrap_or(usize::MAX);
    let key = |d: &'v DeviceView| {
        (
            std::cmp::Reverse(d.generation(&tg.name)),
            rank(&d.name),
            d.name.as_str(),
        )
    };
    view.devices
        .iter()
        .filter(|d| d.usable && d.holds.contains_key(&tg.name))
        .min_by_key(|d| key(d))
}

#[cfg(test)]
mod tests;
