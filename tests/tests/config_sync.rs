//! Config sync in the cluster lab (docs/design.md, "Config sync"), over mutual TLS with the
//! group's device certificates:
//!
//! 1. Pools changed on A (a member added to `api`, `method = "ratio"` for `dns`), `lbctl
//!    config sync --to-group` on A: client connections through B and through C reach the new
//!    member within one second of the command, B and C run the change (`lbctl show pools` on
//!    each) and have saved it to their files, and every device is `in-sync` with one digest.
//!    The latency from the sync command to the last device in sync is printed.
//! 2. Concurrent changes on A and C: both `changes-pending`, A and C holding. A is synced to
//!    the group: C's change goes, C names it as overwritten, C's file holds A's.

use std::time::{Duration, Instant};

use serde_json::Value;
use spanlb_tests::cluster::{prereqs, ClusterLab, ClusterOptions};
use spanlb_tests::topology::VIP;
use spanlb_tests::traffic::connect_once;

/// A second virtual server whose pool starts with s1 alone; the test adds s2 on A.
const API: &str = "
[virtual_servers.api]
destination = \"30.1.1.10:8081\"
protocol = \"tcp\"
pool = \"api\"
snat = \"automap\"

[pools.api]
members = [{ address = \"10.1.1.50:8080\" }]
";

/// Adds s2 to pool `api` in `dev`'s file (no reload).
fn add_api_member(lab: &ClusterLab, dev: &str) {
    let d = lab.device(dev);
    let text = std::fs::read_to_string(&d.lbd_config).expect("reading");
    let changed = text.replacen(
        "members = [{ address = \"10.1.1.50:8080\" }]",
        "members = [{ address = \"10.1.1.50:8080\" }, { address = \"10.1.1.51:8080\" }]",
        1,
    );
    assert_ne!(changed, text);
    std::fs::write(&d.lbd_config, changed).expect("writing");
}

/// Connects to the `api` virtual server from the client until connections through both b and
/// c were answered by s2, for at most `limit`; the devices whose connections reached s2.
fn s2_through_b_and_c(lab: &ClusterLab, limit: Duration) -> Vec<&'static str> {
    let addr = std::net::SocketAddr::new(VIP.parse().expect("VIP"), 8081);
    lab.client
        .run_in(move || {
            let mut seen: Vec<&'static str> = Vec::new();
            let until = Instant::now() + limit;
            while Instant::now() < until && !(seen.contains(&"b") && seen.contains(&"c")) {
                if let Ok((_, a)) = connect_once(addr, Duration::from_millis(500)) {
                    if let (true, Some(d)) = (a.server == "s2", a.device()) {
                        if !seen.contains(&d) {
                            seen.push(d);
                        }
                    }
                }
            }
            seen
        })
        .unwrap_or_default()
}

const T: Duration = Duration::from_secs(45);

/// Edits `dev`'s file (as lbd or config sync wrote it): pool `dns` gets `method`, and
/// reloads.
fn set_method(lab: &ClusterLab, dev: &str, method: &str) {
    let d = lab.device(dev);
    let text = std::fs::read_to_string(&d.lbd_config).expect("reading");
    let at = text.find("[pools.dns]\n").expect("pool dns") + "[pools.dns]\n".len();
    let end = text[at..].find("\n[").map_or(text.len(), |e| at + e + 1);
    let body: String = text[at..end]
        .lines()
        .filter(|l| !l.starts_with("method ="))
        .map(|l| format!("{l}\n"))
        .collect();
    let changed = format!(
        "{}method = \"{method}\"\n{body}{}",
        &text[..at],
        &text[end..]
    );
    assert_ne!(changed, text);
    std::fs::write(&d.lbd_config, changed).expect("writing");
    let r = lab.lbctl(dev, &["reload"]);
    lab.ok(r, "reload");
}

#[test]
fn a_change_synced_to_the_group_runs_everywhere_and_wins_over_a_concurrent_one() {
    if !prereqs() {
        return;
    }
    let opts = ClusterOptions {
        mirroring: true,
        lbd_extra: API.to_string(),
        ..ClusterOptions::default()
    };
    let lab = ClusterLab::build("config_sync", opts).expect("building");
    let r = lab.wait_steady(T);
    lab.ok(r, "steady state");
    let r = lab.wait_config_status("in-sync");
    lab.ok(r, "in sync at start");
    let start_method = lab.pool_method("b", "dns");
    lab.check(
        start_method != "ratio",
        format!("b's dns method at start: {start_method}"),
    );

    // 1. Change on A, sync to the group.
    add_api_member(&lab, "a");
    set_method(&lab, "a", "ratio");
    let r = lab.wait_config_status("changes-pending");
    lab.ok(r, "a's change is pending");
    let t0 = Instant::now();
    let r = lab.lbctl("a", &["config", "sync", "--to-group"]);
    let out = lab.ok(r, "config sync --to-group on a");
    lab.check(
        out["synced"].as_array().is_some_and(|s| s.len() == 2),
        format!("synced to b and c: {out}"),
    );
    let reached = s2_through_b_and_c(&lab, Duration::from_secs(1).saturating_sub(t0.elapsed()));
    eprintln!(
        "config sync: the new member served through {reached:?} {} ms after the command",
        t0.elapsed().as_millis()
    );
    lab.check(
        reached.contains(&"b") && reached.contains(&"c"),
        format!("b and c serve the new member within 1 s of the sync: reached through {reached:?}"),
    );
    let r = lab.wait_config_status("in-sync");
    lab.ok(r, "in sync after the sync");
    eprintln!(
        "config sync: change on a to every device in sync: {} ms",
        t0.elapsed().as_millis()
    );
    for dev in ["b", "c"] {
        lab.check(
            lab.pool_method(dev, "dns") == "ratio",
            format!("{dev} runs a's pool"),
        );
        let file = std::fs::read_to_string(&lab.device(dev).lbd_config).expect("file");
        lab.check(
            file.contains("ratio") && file.contains(&format!("name = \"{dev}\"")),
            format!("{dev} saved a's pool with its own [device]: {file}"),
        );
    }

    // 2. Concurrent changes on A and C; A wins.
    set_method(&lab, "c", "maglev");
    set_method(&lab, "a", "least-connections");
    let r = lab.wait_config_status("changes-pending");
    let all = lab.ok(r, "both pending");
    lab.check(
        all[0]["detail"]["holders"] == serde_json::json!(["a", "c"]),
        format!("a and c hold changes: {}", all[0]),
    );
    let r = lab.lbctl("a", &["config", "sync", "--to-group"]);
    lab.ok(r, "sync a again");
    let r = lab.wait_config_status("in-sync");
    let all = lab.ok(r, "in sync after a wins");
    lab.check(
        all[2]["overwritten"]["ours"]["origin"] == "c"
            && all[2]["overwritten"]["by"]["origin"] == "a",
        format!("c names its overwritten change: {}", all[2]),
    );
    lab.check(
        lab.pool_method("c", "dns") == "least-connections",
        "c runs a's configuration",
    );
    let text = lab.lbctl_text("c", &["config", "status"]);
    lab.check(
        text.contains("overwritten by a:"),
        format!("c's status says so: {text}"),
    );
}

/// 3. `auto_sync = true`: a reload on B reaches A and C by itself. A configuration B accepts
///    but C cannot apply (a virtual server on a port another process holds on C) is refused
///    whole by C: C runs and keeps its previous configuration, and both B and C show
///    `sync-failed` with the reason; A, which could apply it, runs it.
#[test]
fn auto_sync_reaches_the_group_and_a_refusal_changes_nothing() {
    if !prereqs() {
        return;
    }
    let opts = ClusterOptions {
        mirroring: true,
        group_extra: "auto_sync = true\n".into(),
        ..ClusterOptions::default()
    };
    let lab = ClusterLab::build("config_autosync", opts).expect("building");
    let r = lab.wait_steady(T);
    lab.ok(r, "steady state");
    let r = lab.wait_config_status("in-sync");
    lab.ok(r, "in sync at start");

    set_method(&lab, "b", "ratio");
    let r = lab.wait_config_status("in-sync");
    lab.ok(r, "b's reload reached the group by itself");
    for dev in ["a", "c"] {
        lab.check(
            lab.pool_method(dev, "dns") == "ratio",
            format!("{dev} runs b's pool"),
        );
    }

    // Port 9999 of the VIP is taken on C by another process.
    let c = lab.device("c");
    let mut hold = std::process::Command::new("python3");
    hold.args([
        "-c",
        "import socket,time\ns=socket.socket()\ns.bind(('30.1.1.10',9999))\ns.listen()\ntime.sleep(120)",
    ]);
    let holder = lab.ok(c.ns.spawn_cmd(hold, "holder-c.log"), "port holder on c");
    let r = spanlb_lab::wait_until_dbg(Duration::from_secs(5), "port 9999 held on c", || {
        let out = c.ns.command(&["ss", "-Htln", "sport = :9999"]).output();
        match out {
            Ok(o) if !o.stdout.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    lab.ok(r, "holder listening");
    let b = lab.device("b");
    let text = std::fs::read_to_string(&b.lbd_config).expect("b's file");
    let blocked = "\n[virtual_servers.blocked]\ndestination = \"30.1.1.10:9999\"\nprotocol = \"tcp\"\npool = \"web\"\n";
    std::fs::write(&b.lbd_config, format!("{text}{blocked}")).expect("writing");
    let r = lab.lbctl("b", &["reload"]);
    lab.ok(r, "b accepts it");
    let r = spanlb_lab::wait_until_dbg(
        Duration::from_secs(10),
        "b and c report sync-failed",
        || {
            let sb = lab.lbctl("b", &["config", "status"])?;
            let sc = lab.lbctl("c", &["config", "status"])?;
            let failed = |s: &Value| {
                s["status"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("sync-failed"))
            };
            if failed(&sb) && failed(&sc) {
                Ok((sb, sc))
            } else {
                Err(format!("b: {sb}\nc: {sc}"))
            }
        },
    );
    let (sb, sc) = lab.ok(r, "the refusal is reported on both sides");
    let (tb, tc) = (sb["status"].to_string(), sc["status"].to_string());
    lab.check(
        tb.contains("c refused it") && tb.contains("9999"),
        format!("b names c and why: {tb}"),
    );
    lab.check(tc.contains("9999"), format!("c says why: {tc}"));
    let on_a = lab.lbctl("a", &["show", "virtual-servers", "blocked"]);
    lab.check(on_a.is_ok(), format!("a runs it: {on_a:?}"));
    let on_c = lab.lbctl("c", &["show", "virtual-servers", "blocked"]);
    lab.check(on_c.is_err(), format!("c does not: {on_c:?}"));
    let file_c = std::fs::read_to_string(&c.lbd_config).expect("c's file");
    lab.check(!file_c.contains("blocked"), "c's file is unchanged");
    lab.check(
        lab.pool_method("c", "dns") == "ratio",
        "c still runs the previous configuration",
    );
    drop(holder);
}
