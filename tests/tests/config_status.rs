//! Config sync status in the cluster lab (docs/design.md, "Config sync"): the three devices
//! start with the same group configuration (each with its own `[device]`) and each device's
//! `lbctl config status` says `in-sync`, with one digest. A pool changed on A (file edited,
//! `lbctl reload`) makes A hold a change the group does not: within a few heartbeats every
//! device shows `changes-pending` with A as the holder and B and C behind. A change of
//! device-local settings only (`[device]`) changes nothing. Pushing the change to the group is
//! the next part of config sync; until then the test puts A's file back and the group is in
//! sync again. A restart of B's lbd resumes the generation B saved.

use std::time::Duration;

use serde_json::Value;
use spanlb_tests::cluster::{prereqs, ClusterLab, ClusterOptions};

const T: Duration = Duration::from_secs(45);

#[test]
fn status_shows_in_sync_then_the_device_holding_a_change() {
    if !prereqs() {
        return;
    }
    let lab = ClusterLab::build("config_status", ClusterOptions::default()).expect("building");
    let r = lab.wait_steady(T);
    lab.ok(r, "steady state");
    let r = lab.wait_config_status("in-sync");
    let all = lab.ok(r, "every device in sync at start");
    for s in &all {
        lab.check(
            s["devices"]
                .as_array()
                .is_some_and(|d| d.len() == 3 && d.iter().all(|d| d["same_as_me"] == true)),
            format!("every device holds the same: {s}"),
        );
    }
    let a = lab.device("a");
    let original = std::fs::read_to_string(&a.lbd_config).expect("a's file");

    // Device-local only: more workers on A is not a group change.
    let local = original.replace("workers = 1", "workers = 2");
    assert_ne!(local, original);
    std::fs::write(&a.lbd_config, &local).expect("writing");
    let r = lab.lbctl("a", &["reload"]);
    lab.ok(r, "reload a (device-local change)");
    std::thread::sleep(Duration::from_millis(500));
    let r = lab.wait_config_status("in-sync");
    lab.ok(r, "still in sync after a device-local change");

    // A group change on A: another method for the dns pool.
    let changed = local.replacen("[pools.dns]\n", "[pools.dns]\nmethod = \"ratio\"\n", 1);
    assert_ne!(changed, local);
    std::fs::write(&a.lbd_config, &changed).expect("writing");
    let r = lab.lbctl("a", &["reload"]);
    lab.ok(r, "reload a (group change)");
    let r = lab.wait_config_status("changes-pending");
    let all = lab.ok(r, "every device sees the pending change");
    for s in &all {
        let detail = &s["detail"];
        lab.check(
            detail["holders"] == serde_json::json!(["a"])
                && detail["behind"]
                    .as_array()
                    .is_some_and(|b| b.len() == 2 && !b.contains(&Value::from("a"))),
            format!("a holds the change, b and c are behind: {s}"),
        );
    }
    let dg = lab.lbctl_text("c", &["show", "device-group"]);
    lab.check(
        dg.contains("config sync: changes-pending"),
        format!("show device-group says so too: {dg}"),
    );
    let text = lab.lbctl_text("b", &["config", "status"]);
    lab.check(
        text.contains("b: changes-pending") && text.contains("changes held by: a"),
        format!("lbctl's table: {text}"),
    );

    // A's file back: the group holds one configuration again.
    std::fs::write(&a.lbd_config, &original).expect("writing");
    let r = lab.lbctl("a", &["reload"]);
    lab.ok(r, "reload a (back)");
    let r = lab.wait_config_status("in-sync");
    let all = lab.ok(r, "in sync again");

    // A restart of B's lbd resumes the generation it saved: the same one, still in sync.
    let before = all[1]["generation"].clone();
    lab.check(
        before["origin"].is_string(),
        format!("b's generation: {before}"),
    );
    let r = lab.restart_lbd("b");
    lab.ok(r, "restarting b's lbd");
    let r = lab.wait_config_status("in-sync");
    let all = lab.ok(r, "in sync after b's restart");
    lab.check(
        all[1]["generation"] == before,
        format!("b resumed {before}, holds {}", all[1]["generation"]),
    );
}
