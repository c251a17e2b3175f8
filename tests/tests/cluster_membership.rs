//! Live membership in the cluster lab (README, "Operations"): a fourth device joins the
//! running seed lab and leaves it again while long-lived connections flow.
//!
//! 1. d starts with only its device-local files (lbd's `[device]`, a device-group file naming
//!    only itself, its certificate from the group CA): `awaiting-initial-sync`.
//! 2. `lbctl device-group add d …` on a: d receives the whole configuration, joins the
//!    heartbeats and is in sync with every device. The join time (command → d in sync and
//!    every device seeing every other alive) is printed.
//! 3. tg-4 (HA order d, a, b, c) is added to a's device-group file, `lbctl reload` and `lbctl
//!    config sync --to-group` on a: tg-4 becomes active on d without a restart anywhere, r1
//!    installs a fourth next hop, and new client connections reach d. The long-lived flows of
//!    a, b and c that the grown ECMP set re-spread (Linux hashes flows onto the next hops by
//!    hash threshold: a new next hop takes a share of every other one's range) are counted and
//!    printed — measured, not hidden (README, "Adding capacity").
//! 4. `lbctl device-group remove d` on a: tg-4 moves to a first, d leaves (it holds nothing,
//!    announces nothing and is no longer a member anywhere), tg-1..3 stay where they were, r1
//!    keeps four next hops, and no surviving flow is disturbed by the removal.
//! 5. tg-4 removed from a's device-group file, reloaded and synced: released, its path
//!    withdrawn (r1 back to three next hops), its mirroring channels gone everywhere, nothing
//!    else moved and no surviving flow disturbed.

use std::time::{Duration, Instant};

use spanlb_lab::wait_until_dbg;
use spanlb_tests::cluster::{prereqs, ClusterLab, ClusterOptions};
use spanlb_tests::membership::{tg4_toml, Joiner, ADD_D, TG4_INT};
use spanlb_tests::traffic::{short_connections, LongLived};

const T: Duration = Duration::from_secs(45);
const FLOWS: usize = 30;

#[test]
fn a_device_joins_and_leaves_the_running_group_while_traffic_flows() {
    if !prereqs() {
        return;
    }
    let lab = ClusterLab::build_synced("membership", ClusterOptions::default());
    let mut flows = lab.ok(
        LongLived::open(&lab.client, FLOWS, &["a", "b", "c"]),
        "opening long-lived flows",
    );

    // 1. d with its device-local files only.
    let d = lab.ok(Joiner::prepare(&lab), "preparing d");
    lab.ok(d.start(), "starting d");
    let st = lab.ok(d.lbctl(&["config", "status"]), "config status on d");
    lab.check(
        st["status"] == "awaiting-initial-sync",
        format!("d before it is added: {st}"),
    );

    // 2. Added on a.
    let t0 = Instant::now();
    let r = lab.lbctl("a", &ADD_D);
    let out = lab.ok(r, "device-group add d on a");
    lab.check(
        out["sync"]["synced"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x == "d")),
        format!("the add synced to d: {out}"),
    );
    let r = wait_until_dbg(
        T,
        "d joined: in sync, every device alive everywhere",
        || {
            let st = d.lbctl(&["config", "status"])?;
            if st["status"] != "in-sync" {
                return Err(format!("d: {st}"));
            }
            for dev in ["a", "b", "c"] {
                let s = lab.lbctl(dev, &["config", "status"])?;
                if s["status"] != "in-sync" {
                    return Err(format!("{dev}: {s}"));
                }
            }
            let g = d.lbctl(&["show", "device-group"])?;
            let g = g.get("device_group").cloned().unwrap_or(g);
            let alive = g["devices"]
                .as_array()
                .map(|l| l.iter().filter(|x| x["alive"] == true).count())
                .unwrap_or(0);
            if alive < 4 {
                return Err(format!("d sees {alive} alive: {g}"));
            }
            let g = lab.device_group("a")?;
            let alive = g["devices"]
                .as_array()
                .map(|l| l.iter().filter(|x| x["alive"] == true).count())
                .unwrap_or(0);
            if alive < 4 {
                return Err(format!("a sees {alive} alive: {g}"));
            }
            Ok(())
        },
    );
    lab.ok(
        r.map_err(|e| format!("{e}\nd's log:\n{}", d.lbd_log(40))),
        "d joining",
    );
    let join = t0.elapsed();
    let saved = std::fs::read_to_string(&d.group_config).unwrap_or_default();
    lab.check(
        saved.contains("name = \"a\"") && saved.contains("name = \"d\""),
        format!("d saved the group's device group:\n{saved}"),
    );

    // 3. tg-4 added on a, synced.
    let before = lab.ok(lab.placement(), "placement before tg-4");
    let mut text = std::fs::read_to_string(&lab.group_config).expect("reading the group file");
    text.push_str(&tg4_toml());
    std::fs::write(&lab.group_config, text).expect("writing the group file");
    let t1 = Instant::now();
    let r = lab.lbctl("a", &["reload"]);
    lab.ok(r, "reload on a with tg-4");
    let r = lab.lbctl("a", &["config", "sync", "--to-group"]);
    lab.ok(r, "config sync on a");
    let r = lab.wait_placement(&[("tg-4", "d")], T);
    lab.ok(r, "tg-4 active on d");
    let r = lab.wait_nexthops(&["20.1.1.2", "20.1.1.3", "20.1.1.4", "20.1.1.5"], T);
    lab.ok(r, "r1 installs four next hops");
    let grown = t1.elapsed();
    // Let every flow make a few more exchanges over the grown set.
    std::thread::sleep(Duration::from_millis(1500));
    let after = lab.ok(lab.placement(), "placement after tg-4");
    for tg in ["tg-1", "tg-2", "tg-3"] {
        lab.check(
            before.get(tg) == after.get(tg),
            format!("{tg} stayed where it was: {before:?} → {after:?}"),
        );
    }
    let disturbed = flows.disturbed(&[]);
    let answers = lab.ok(short_connections(&lab.client, 60), "new connections");
    let via_d = answers
        .iter()
        .filter(|a| a.as_ref().is_ok_and(|a| a.source.to_string() == TG4_INT))
        .count();
    let ok = answers.iter().filter(|a| a.is_ok()).count();
    lab.check(
        via_d > 0 && ok == answers.len(),
        format!(
            "new connections reach d: {via_d} of {ok} answered via tg-4 ({} asked)",
            answers.len()
        ),
    );
    println!(
        "MEMBERSHIP join_ms={} tg4_to_fourth_next_hop_ms={} flows={FLOWS} disturbed_by_growth={} ({}) new_connections_via_d={via_d}/{}",
        join.as_millis(),
        grown.as_millis(),
        disturbed.len(),
        flows.summary(),
        answers.len()
    );

    // 4. d removed: tg-4 moves first, nothing else does.
    let failed_before = disturbed.len();
    let snap = flows.snapshot();
    let r = lab.lbctl("a", &["device-group", "remove", "d"]);
    let out = lab.ok(r, "device-group remove d on a");
    lab.check(
        out["moved"]
            .as_array()
            .is_some_and(|m| m.len() == 1 && m[0] == "tg-4"),
        format!("the remove moved tg-4 first: {out}"),
    );
    let r = lab.wait_placement(&[("tg-4", "a")], T);
    lab.ok(r, "tg-4 on a");
    let r = wait_until_dbg(T, "d no longer a member anywhere, holding nothing", || {
        for dev in ["a", "b", "c"] {
            let g = lab.device_group(dev)?;
            if g["devices"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x["name"] == "d"))
            {
                return Err(format!("{dev} still lists d: {g}"));
            }
        }
        let here = d.lbctl(&["show", "traffic-groups"])?;
        let list = here
            .get("traffic_groups")
            .or_else(|| here.get("data").and_then(|x| x.get("traffic_groups")))
            .cloned()
            .unwrap_or_default();
        let held = list
            .as_array()
            .map(|l| l.iter().filter(|t| t["here"] == true).count())
            .unwrap_or(0);
        if held > 0 {
            return Err(format!("d still holds something: {here}"));
        }
        let g = d.lbctl(&["show", "device-group"])?;
        let g = g.get("device_group").cloned().unwrap_or(g);
        let routes = g["local"]["bgpd"]["routes"].as_array().map_or(0, Vec::len);
        if routes > 0 {
            return Err(format!("d still announces {routes} routes: {g}"));
        }
        Ok(())
    });
    lab.ok(r, "d left");
    let r = lab.wait_nexthops(&["20.1.1.2", "20.1.1.3", "20.1.1.4", "20.1.1.5"], T);
    lab.ok(r, "r1 keeps four next hops (tg-4 now on a)");
    std::thread::sleep(Duration::from_millis(1000));
    let end = lab.ok(lab.placement(), "placement after the removal");
    for tg in ["tg-1", "tg-2", "tg-3"] {
        lab.check(
            before.get(tg) == end.get(tg),
            format!("{tg} did not move: {before:?} → {end:?}"),
        );
    }
    let now_failed = flows.disturbed(&[]).len();
    let alive = flows.flows.iter().filter(|f| f.failed().is_none()).count();
    let stalled = flows.stalled_since(&snap, &[]) - (FLOWS - alive).min(FLOWS);
    println!(
        "MEMBERSHIP removal: disturbed_by_removal={} stalled={stalled} surviving={alive}",
        now_failed - failed_before
    );
    lab.check(
        now_failed == failed_before && stalled == 0,
        format!(
            "no flow disturbed by the removal: failed {failed_before} → {now_failed}, stalled {stalled}: {}",
            flows.summary()
        ),
    );

    // 5. tg-4 removed live (the last traffic group of the file): released on a, its path
    //    withdrawn everywhere, its mirroring receivers stopped; nothing else moves.
    let text = std::fs::read_to_string(&lab.group_config).expect("the group file");
    let at = text
        .find("[[traffic_groups]]\nname = \"tg-4\"")
        .unwrap_or_else(|| panic!("tg-4 in the group file:\n{text}"));
    std::fs::write(&lab.group_config, &text[..at]).expect("writing the group file");
    let r = lab.lbctl("a", &["reload"]);
    lab.ok(r, "reload on a without tg-4");
    let r = lab.lbctl("a", &["config", "sync", "--to-group"]);
    lab.ok(r, "config sync without tg-4");
    let r = lab.wait_nexthops(&["20.1.1.2", "20.1.1.3", "20.1.1.4"], T);
    lab.ok(r, "r1 back to three next hops");
    let r = wait_until_dbg(T, "tg-4 gone everywhere", || {
        for dev in ["a", "b", "c"] {
            let tgs = lab.traffic_groups(dev)?;
            if tgs.iter().any(|t| t.name == "tg-4") {
                return Err(format!("{dev} still has tg-4"));
            }
            let m = lab.lbctl(dev, &["show", "mirroring"])?;
            if m.to_string().contains("\"traffic_group\":\"tg-4\"") {
                return Err(format!("{dev} still mirrors tg-4: {m}"));
            }
        }
        Ok(())
    });
    lab.ok(r, "tg-4 removed");
    let last = lab.ok(lab.placement(), "placement after removing tg-4");
    for tg in ["tg-1", "tg-2", "tg-3"] {
        lab.check(
            before.get(tg) == last.get(tg),
            format!("{tg} did not move: {before:?} → {last:?}"),
        );
    }
    let failed_end = flows.disturbed(&[]).len();
    lab.check(
        failed_end == failed_before,
        format!(
            "no flow disturbed by removing tg-4: failed {failed_before} → {failed_end}: {}",
            flows.summary()
        ),
    );
    flows.stop();
}

/// Load-aware placement (seed): tg-3's HA order is cut to c alone and b gets HA capacity 2, on
/// a, reloaded and synced (a live change of HA orders and capacities). c stops: none of tg-3's
/// HA order is left, so it goes to the live device with the lowest load relative to its
/// capacity — b (1 of 2) rather than a (1 of 1), which a tie would pick by name — and the
/// status names the rule. c back: auto-failback returns tg-3 to it.
#[test]
fn a_traffic_group_without_its_ordered_devices_goes_to_the_least_loaded_device() {
    if !prereqs() {
        return;
    }
    let lab = ClusterLab::build_synced("membership_load", ClusterOptions::default());
    let text = std::fs::read_to_string(&lab.group_config).expect("the group file");
    let changed = text
        .replacen("ha_order = [\"c\", \"a\", \"b\"]", "ha_order = [\"c\"]", 1)
        .replacen("name = \"b\"\n", "name = \"b\"\nha_capacity = 2\n", 1);
    lab.check(changed != text, "the group file changed");
    std::fs::write(&lab.group_config, changed).expect("writing the group file");
    let r = lab.lbctl("a", &["reload"]);
    lab.ok(r, "reload on a");
    let r = lab.lbctl("a", &["config", "sync", "--to-group"]);
    lab.ok(r, "config sync on a");
    let r = lab.wait_config_status("in-sync");
    lab.ok(r, "in sync with the new orders");
    let r = lab.wait_placement(&[("tg-1", "a"), ("tg-2", "b"), ("tg-3", "c")], T);
    lab.ok(r, "nothing moved by the change");

    lab.stop_device("c");
    let r = lab.wait_placement(&[("tg-3", "b")], T);
    lab.ok(r, "tg-3 on the least loaded device relative to capacity");
    // b took it: its view gives the reason.
    let v = lab.ok(lab.lbctl("b", &["show", "traffic-groups"]), "b's view");
    let tg3 = v["traffic_groups"]
        .as_array()
        .and_then(|l| l.iter().find(|t| t["name"] == "tg-3").cloned())
        .unwrap_or_default();
    println!("tg-3 as b sees it with c stopped: {tg3}");
    lab.check(
        tg3.to_string().contains("least loaded"),
        format!("the status names the load rule: {tg3}"),
    );
    let r = lab.start_device("c");
    lab.ok(r, "starting c again");
    let r = lab.wait_placement(&[("tg-3", "c")], T);
    lab.ok(r, "tg-3 back on c");
}
