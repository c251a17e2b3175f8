//! What lbctl prints for an answer: compact aligned tables and one-line results.

use serde_json::{json, Value};
use spanlb_control::table::{Align, Table};

use crate::args::{Cmd, ConfigCmd, DeviceGroupCmd, PersistenceCmd, Show};

mod fmt;

use fmt::{bytes, list, num, plural, span, text, until, when, yes_no};

use Align::{Left as L, Right as R};

/// The table (or message) for a command's data.
pub fn render(cmd: &Cmd, data: &Value, now: u64) -> String {
    match cmd {
        Cmd::Show(Show::VirtualServers { .. }) => show_virtual_servers(data),
        Cmd::Show(Show::VirtualAddresses) => show_virtual_addresses(data),
        Cmd::Show(Show::Pools { .. }) => show_pools(data),
        Cmd::Show(Show::Connections { .. }) => show_connections(data, now),
        Cmd::Show(Show::Persistence { .. }) => show_persistence(data, now),
        Cmd::Status => show_status(data, now),
        Cmd::Member { .. } => member_done(data),
        Cmd::Persistence(PersistenceCmd::Delete { .. }) => {
            let n = data["deleted"].as_u64().unwrap_or(0);
            format!("deleted {n} persistence record{}\n", plural(n))
        }
        Cmd::Reload => reload_done(data),
        Cmd::Show(Show::DeviceGroup) => show_device_group(&data["device_group"]),
        Cmd::Show(Show::TrafficGroups) => show_traffic_groups(data),
        Cmd::Show(Show::Mirroring) => show_mirroring(data),
        Cmd::Show(Show::Plugins) => show_plugins(data),
        Cmd::Failover { traffic_group, to } => format!(
            "failover of {traffic_group} to {} ordered; follow it with `lbctl show traffic-groups`\n",
            to.as_deref().unwrap_or("its next-active device")
        ),
        Cmd::Standby => "standby: this device gives up its traffic groups and takes none until `lbctl release`\n".into(),
        Cmd::Release => "released: this device may hold traffic groups again\n".into(),
        Cmd::Config(ConfigCmd::Status) => config_status(data, now),
        Cmd::DeviceGroup(DeviceGroupCmd::Add { name, .. }) => {
            format!("added {name}; synced to {}\n", names(&data["sync"]["synced"]))
        }
        Cmd::DeviceGroup(DeviceGroupCmd::Remove { name }) => {
            let moved = names(&data["moved"]);
            format!(
                "removed {name} (moved first: {}); synced to {}\n",
                moved,
                names(&data["sync"]["synced"])
            )
        }
        Cmd::Config(ConfigCmd::Sync { .. }) => {
            if list(&data["synced"]).is_empty() {
                "every live device already holds this configuration\n".into()
            } else {
                format!("synced to {}\n", names(&data["synced"]))
            }
        }
        Cmd::Trust(_) => String::new(),
    }
}

/// `lbctl config status`.
fn config_status(data: &Value, now: u64) -> String {
    let generation = |g: &Value| -> String {
        if g.is_null() {
            return "-".into();
        }
        let digest = g["digest"].as_str().unwrap_or("");
        format!(
            "{}:{} {}, {}",
            text(&g["origin"]),
            text(&g["counter"]),
            &digest[..digest.len().min(12)],
            when(num(&g["time_ms"]), now)
        )
    };
    let mut out = format!("{}: {}\n", text(&data["me"]), text(&data["status"]));
    let detail = &data["detail"];
    if detail["status"] == "changes-pending" {
        out.push_str(&format!(
            "  changes held by: {}; behind: {}\n",
            names(&detail["holders"]),
            names(&detail["behind"])
        ));
    }
    if !data["overwritten"].is_null() {
        out.push_str(&format!(
            "  this device's change {} was overwritten by {}\n",
            generation(&data["overwritten"]["ours"]),
            generation(&data["overwritten"]["by"])
        ));
    }
    let mut t = Table::new(&[
        ("DEVICE", L),
        ("ALIVE", L),
        ("GENERATION", L),
        ("UNSYNCED", L),
        ("SAME", L),
    ]);
    for d in list(&data["devices"]) {
        t.row(vec![
            text(&d["name"]),
            yes_no(&d["alive"]),
            generation(&d["generation"]),
            yes_no(&d["dirty"]),
            yes_no(&d["same_as_me"]),
        ]);
    }
    out.push_str(&t.render(""));
    out
}

fn names(v: &Value) -> String {
    let n: Vec<String> = list(v).iter().map(text).collect();
    if n.is_empty() {
        "-".into()
    } else {
        n.join(", ")
    }
}
fn show_plugins(data: &Value) -> String {
    let plugins = list(&data["plugins"]);
    let mut out = format!("plugin directory: {}\n", text(&data["plugin_dir"]));
    if plugins.is_empty() {
        out.push_str("no plugins loaded\n");
    } else {
        let mut t = Table::new(&[
            ("NAME", L),
            ("VERSION", L),
            ("ABI", R),
            ("CALLS", R),
            ("KEYS", R),
            ("NO-MATCH", R),
            ("MALFORMED", R),
            ("PANICS", R),
            ("STATE", L),
            ("FILE", L),
        ]);
        for p in plugins {
            t.row(vec![
                text(&p["name"]),
                text(&p["version"]),
                text(&p["abi"]),
                num(&p["calls"]).to_string(),
                (num(&p["keys"]) + num(&p["members"])).to_string(),
                num(&p["no_match"]).to_string(),
                num(&p["malformed"]).to_string(),
                num(&p["panics"]).to_string(),
                text(&p["state"]),
                text(&p["file"]),
            ]);
        }
        out.push_str(&t.render(""));
    }
    for f in list(&data["failed"]) {
        out.push_str(&format!("failed: {}\n", text(&f["error"])));
    }
    out
}

fn show_mirroring(data: &Value) -> String {
    if data["enabled"] != json!(true) {
        return format!("mirroring is off: {}\n", text(&data["reason"]));
    }
    let records = |r: &Value| {
        format!(
            "{}/{}/{}",
            num(&r["persistence"]),
            num(&r["udp_flows"]),
            num(&r["tcp_connections"])
        )
    };
    let mut out = format!(
        "device {}, connections to {}, persistence to {}; updates offered {}, refreshes not \
         sent {}, refused {}\n",
        text(&data["me"]),
        text(&data["scope"]),
        text(&data["persistence_scope"]),
        num(&data["offered"]),
        num(&data["refresh_skipped"]),
        num(&data["offer_errors"])
    );
    let unsynced: Vec<String> = list(&data["unsynced"]).iter().map(text).collect();
    if unsynced.is_empty() {
        out.push_str(
            "in sync: holds the mirrored state of every traffic group it is not active for\n",
        );
    } else {
        out.push_str(&format!(
            "not in sync for {}: an auto-failback to this device waits for it\n",
            unsynced.join(", ")
        ));
    }
    let senders = list(&data["senders"]);
    if senders.is_empty() {
        out.push_str("sending: nothing (no traffic group active here has a peer to mirror to)\n");
    } else {
        out.push_str("sending (records: persistence/udp/tcp):\n");
        let mut t = Table::new(&[
            ("TRAFFIC-GROUP", L),
            ("PEER", L),
            ("CARRIES", L),
            ("PORT", R),
            ("STATE", L),
            ("RECORDS", R),
            ("SENT", R),
            ("ACKED", R),
            ("LAG-MS", R),
            ("QUEUED", R),
        ]);
        for s in senders {
            t.row(vec![
                text(&s["traffic_group"]),
                text(&s["peer"]),
                text(&s["carries"]),
                text(&s["port"]),
                text(&s["state"]),
                records(&s["records"]),
                num(&s["last_sent"]).to_string(),
                num(&s["last_acked"]).to_string(),
                num(&s["lag_ms"]).to_string(),
                num(&s["queued"]).to_string(),
            ]);
        }
        out.push_str(&t.render("  "));
    }
    out.push_str("receiving (records: persistence/udp/tcp):\n");
    let mut t = Table::new(&[
        ("TRAFFIC-GROUP", L),
        ("PEER", L),
        ("PORT", R),
        ("STATE", L),
        ("RECORDS", R),
        ("APPLIED", R),
        ("DUPLICATES", R),
    ]);
    for r in list(&data["receivers"]) {
        t.row(vec![
            text(&r["traffic_group"]),
            text(&r["peer"]),
            text(&r["port"]),
            text(&r["state"]),
            records(&r["records"]),
            num(&r["last_applied"]).to_string(),
            num(&r["duplicates"]).to_string(),
        ]);
    }
    out.push_str(&t.render("  "));
    out
}

fn show_traffic_groups(data: &Value) -> String {
    let mut t = Table::new(&[
        ("TRAFFIC-GROUP", L),
        ("ACTIVE", L),
        ("NEXT-ACTIVE", L),
        ("HERE", L),
        ("SINCE", R),
        ("FLOATING EXT/INT", L),
        ("PATH", R),
        ("WHY", L),
    ]);
    for tg in list(&data["traffic_groups"]) {
        let mut active = text(&tg["active"]);
        let placement = text(&tg["placement"]);
        if placement != active && placement != "-" {
            active = format!("{active} -> {placement}");
        }
        t.row(vec![
            text(&tg["name"]),
            active,
            text(&tg["next_active"]),
            text(&tg["state"]),
            tg["since_ms_ago"].as_u64().map_or("-".into(), span),
            format!(
                "{} {}",
                text(&tg["external_floating"]),
                text(&tg["internal_floating"])
            ),
            text(&tg["path_id"]),
            text(&tg["reason"]),
        ]);
    }
    let mut out = format!("as seen from {}\n{}", text(&data["me"]), t.render(""));
    // Why an auto-failback has not happened yet (mirroring on).
    for tg in list(&data["traffic_groups"]) {
        if let Value::String(dev) = &tg["waiting_for_sync"] {
            out.push_str(&format!(
                "{}: auto-failback to {dev} waits for its mirror to be in sync\n",
                text(&tg["name"])
            ));
        }
    }
    out
}

fn show_device_group(g: &Value) -> String {
    let local = &g["local"];
    let mut out = format!(
        "device group {} ({} mode), this device {} ({}{}), heartbeat {} ms, dead after {} ms\n",
        text(&g["name"]),
        text(&g["route_mode"]),
        text(&g["me"]),
        text(&g["phase"]),
        if g["standby"] == json!(true) {
            ", standby"
        } else {
            ""
        },
        num(&g["heartbeat_interval_ms"]),
        num(&g["dead_after_ms"]),
    );
    if !g["config_sync"].is_null() {
        out.push_str(&format!(
            "config sync: {} (`lbctl config status`)\n",
            text(&g["config_sync"])
        ));
    }
    let mut t = Table::new(&[
        ("DEVICE", L),
        ("ALIVE", L),
        ("ELIGIBLE", L),
        ("LAST-HEARD", R),
        ("ACTIVE", L),
    ]);
    for d in list(&g["devices"]) {
        let active: Vec<String> = list(&d["active"]).iter().map(text).collect();
        t.row(vec![
            text(&d["name"]),
            yes_no(&d["alive"]),
            yes_no(&d["eligible"]),
            d["last_heard_ms_ago"]
                .as_u64()
                .map_or("-".into(), |ms| format!("{ms} ms")),
            if active.is_empty() {
                "-".into()
            } else {
                active.join(",")
            },
        ]);
    }
    out.push_str(&t.render(""));
    // Traffic groups a device is not ready to take back (its mirror is not in sync).
    let unsynced: Vec<String> = list(&g["devices"])
        .iter()
        .filter_map(|d| {
            let tgs: Vec<String> = list(&d["unsynced"]).iter().map(text).collect();
            (!tgs.is_empty()).then(|| format!("{} ({})", text(&d["name"]), tgs.join(",")))
        })
        .collect();
    if !unsynced.is_empty() {
        out.push_str(&format!("mirror not in sync: {}\n", unsynced.join(", ")));
    }
    let links: Vec<String> = local["links"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} {}", if *v == json!(true) { "up" } else { "down" }))
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&format!(
        "links: {}\n",
        if links.is_empty() {
            "-".into()
        } else {
            links.join(", ")
        }
    ));
    let b = &local["bgpd"];
    out.push_str(&format!(
        "bgpd: {} ({}), {} route{} announced{}\n",
        text(&b["socket"]),
        if b["connected"] == json!(true) {
            "connected"
        } else {
            "not connected"
        },
        list(&b["routes"]).len(),
        plural(list(&b["routes"]).len() as u64),
        match &b["last_error"] {
            Value::String(e) => format!("; last error: {e}"),
            _ => String::new(),
        }
    ));
    let a = &local["attribution"];
    out.push_str(&format!(
        "new connections: traffic group {}, SNAT automap {}\n",
        text(&a["traffic_group"]),
        text(&a["automap_v4"]),
    ));
    let c = &g["counters"];
    out.push_str(&format!(
        "heartbeats: sent {} received {}; rejected: bad tag {} replayed {} stale {} unknown device {} malformed {}; send errors {}\n",
        num(&c["heartbeats_sent"]),
        num(&c["heartbeats_received"]),
        num(&c["rejected_bad_tag"]),
        num(&c["rejected_replayed"]),
        num(&c["rejected_stale"]),
        num(&c["rejected_unknown_device"]),
        num(&c["rejected_malformed"]),
        num(&c["send_errors"]),
    ));
    if let Some(arr) = local["last_error"].as_array() {
        out.push_str(&format!("last error: {}\n", text(&arr[1])));
    }
    out
}

// ---- the views ----------------------------------------------------------------------------

fn vs_state(v: &Value) -> &'static str {
    if v["enabled"] == json!(false) {
        "disabled"
    } else if v["available"] == json!(true) {
        "available"
    } else {
        "unavailable"
    }
}

fn show_virtual_servers(data: &Value) -> String {
    let vss = list(data);
    if vss.is_empty() {
        return "no virtual servers\n".into();
    }
    let mut t = Table::new(&[
        ("NAME", L),
        ("DESTINATION", L),
        ("PROTO", L),
        ("POOL", L),
        ("STATE", L),
        ("CUR", R),
        ("TOTAL", R),
        ("BYTES-IN", R),
        ("BYTES-OUT", R),
        ("REFUSED", R),
        ("SNAT", L),
        ("PERSIST", L),
    ]);
    for v in vss {
        let c = &v["counters"];
        t.row(vec![
            text(&v["name"]),
            text(&v["destination"]),
            text(&v["protocol"]),
            text(&v["pool"]),
            vs_state(v).into(),
            num(&c["current"]).to_string(),
            num(&c["total"]).to_string(),
            bytes(num(&c["bytes_in"])),
            bytes(num(&c["bytes_out"])),
            num(&c["refused"]).to_string(),
            text(&v["snat"]),
            text(&v["persistence"]),
        ]);
    }
    let mut out = t.render("");
    if let [v] = vss {
        let limit = match num(&v["connection_limit"]) {
            0 => "none".to_string(),
            n => n.to_string(),
        };
        out.push_str(&format!(
            "\n  connection limit {limit}, idle timeout {}, connect timeout {}, mirror {}, \
             connect failures {}\n",
            text(&v["idle_timeout"]),
            text(&v["connect_timeout"]),
            if v["mirror"] == json!(true) {
                "on"
            } else {
                "off"
            },
            num(&v["counters"]["connect_failures"]),
        ));
    }
    out
}

fn show_virtual_addresses(data: &Value) -> String {
    let vas = list(data);
    if vas.is_empty() {
        return "no virtual addresses\n".into();
    }
    let mut t = Table::new(&[
        ("ADDRESS", L),
        ("ADVERTISE", L),
        ("SPANNING", L),
        ("AVAILABLE", R),
        ("ROUTE", L),
        ("VIRTUAL-SERVERS", L),
    ]);
    for va in vas {
        let names: Vec<String> = list(&va["virtual_servers"]).iter().map(text).collect();
        t.row(vec![
            text(&va["address"]),
            text(&va["advertise"]),
            if va["spanning"] == json!(true) {
                "yes"
            } else {
                "no"
            }
            .into(),
            format!("{}/{}", num(&va["available"]), names.len()),
            if va["advertised"] == json!(true) {
                "advertise"
            } else {
                "withdraw"
            }
            .into(),
            names.join(","),
        ]);
    }
    t.render("")
}

/// A member's status, with its admin state when the status hides it (`down/disabled`).
fn member_status(m: &Value) -> String {
    let status = text(&m["status"]);
    let admin = text(&m["admin"]);
    if admin != "enabled" && admin != "-" && admin != status {
        format!("{status}/{admin}")
    } else {
        status
    }
}

/// The most recent monitor verdict: `tcp down: connection refused`.
fn latest_monitor(m: &Value) -> String {
    if let Some(passive) = m["passive"].as_str() {
        // Taken out by passive health: that says more than the monitor's last word.
        return passive.replace(['\n', '\r'], " ");
    }
    let Some(verdicts) = m["monitors"].as_object() else {
        return "-".into();
    };
    verdicts
        .iter()
        .max_by_key(|(_, v)| num(&v["since_ms"]))
        .map(|(name, v)| {
            let reason = text(&v["reason"]);
            let reason = reason.replace(['\n', '\r'], " ");
            format!("{name} {}: {reason}", text(&v["health"]))
        })
        .unwrap_or_else(|| "-".into())
}

fn show_pools(data: &Value) -> String {
    let pools = list(data);
    if pools.is_empty() {
        return "no pools\n".into();
    }
    let mut out = String::new();
    for (i, p) in pools.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let monitors: Vec<String> = list(&p["monitors"]).iter().map(text).collect();
        let users: Vec<String> = list(&p["virtual_servers"]).iter().map(text).collect();
        out.push_str(&format!(
            "pool {}  {}  {}/{} available  monitors: {}  virtual servers: {}\n",
            text(&p["name"]),
            text(&p["method"]),
            num(&p["available"]),
            num(&p["total"]),
            if monitors.is_empty() {
                "none".into()
            } else {
                monitors.join(",")
            },
            if users.is_empty() {
                "none".into()
            } else {
                users.join(",")
            },
        ));
        let members = list(&p["members"]);
        if members.is_empty() {
            out.push_str("  (no members)\n");
            continue;
        }
        let mut t = Table::new(&[
            ("MEMBER", L),
            ("RATIO", R),
            ("STATUS", L),
            ("CUR", R),
            ("TOTAL", R),
            ("BYTES-IN", R),
            ("BYTES-OUT", R),
            ("FAIL", R),
            ("MONITOR", L),
        ]);
        for m in members {
            let c = &m["counters"];
            t.row(vec![
                text(&m["address"]),
                num(&m["ratio"]).to_string(),
                member_status(m),
                num(&c["current"]).to_string(),
                num(&c["total"]).to_string(),
                bytes(num(&c["bytes_in"])),
                bytes(num(&c["bytes_out"])),
                num(&c["connect_failures"]).to_string(),
                latest_monitor(m),
            ]);
        }
        out.push_str(&t.render("  "));
    }
    out
}

fn show_connections(data: &Value, now: u64) -> String {
    let conns = list(&data["connections"]);
    let total = num(&data["total"]);
    let mut out = String::new();
    if !conns.is_empty() {
        let mut t = Table::new(&[
            ("ID", R),
            ("PROTO", L),
            ("VIRTUAL-SERVER", L),
            ("CLIENT", L),
            ("MEMBER", L),
            ("SNAT", L),
            ("AGE", R),
            ("IDLE-EXPIRY", R),
            ("BYTES-IN", R),
            ("BYTES-OUT", R),
        ]);
        for c in conns {
            t.row(vec![
                num(&c["id"]).to_string(),
                text(&c["protocol"]),
                text(&c["virtual_server"]),
                text(&c["client"]),
                text(&c["member"]),
                text(&c["snat"]),
                span(now.saturating_sub(num(&c["created_ms"]))),
                until(num(&c["expiry_ms"]), now),
                bytes(num(&c["bytes_in"])),
                bytes(num(&c["bytes_out"])),
            ]);
        }
        out.push_str(&t.render(""));
    }
    let shown = conns.len() as u64;
    if shown < total {
        out.push_str(&format!(
            "{shown} of {total} connections shown (raise --limit to see more)\n"
        ));
    } else {
        out.push_str(&format!("{total} connection{}\n", plural(total)));
    }
    out
}

fn show_persistence(data: &Value, now: u64) -> String {
    let recs = list(data);
    if recs.is_empty() {
        return "no persistence records\n".into();
    }
    let mut t = Table::new(&[
        ("PROFILE", L),
        ("SCOPE", L),
        ("KEY", L),
        ("POOL", L),
        ("MEMBER", L),
        ("VIRTUAL-SERVER", L),
        ("EXPIRES", R),
    ]);
    for r in recs {
        t.row(vec![
            text(&r["profile"]),
            text(&r["scope"]),
            text(&r["key"]),
            text(&r["pool"]),
            text(&r["member"]),
            text(&r["virtual_server"]),
            until(num(&r["expiry_ms"]), now),
        ]);
    }
    let n = recs.len() as u64;
    t.render("") + &format!("{n} record{}\n", plural(n))
}

fn reload_line(s: &Value) -> String {
    let vs = num(&s["virtual_servers"]);
    let pools = num(&s["pools"]);
    let added = list(&s["listeners_added"]).len();
    let removed = list(&s["listeners_removed"]).len();
    format!(
        "{vs} virtual server{}, {pools} pool{}, listeners +{added} -{removed}",
        plural(vs),
        plural(pools)
    )
}

fn show_status(d: &Value, now: u64) -> String {
    let vs = num(&d["virtual_servers"]);
    let pools = num(&d["pools"]);
    let reload = match &d["last_reload"] {
        Value::Null => "never".to_string(),
        r => {
            let at = when(num(&r["at_ms"]), now);
            if r["ok"] == json!(true) {
                format!("{at}: ok, {}", reload_line(&r["summary"]))
            } else {
                format!("{at}: rejected: {}", text(&r["error"]))
            }
        }
    };
    let draining = match &d["draining"] {
        Value::Null => None,
        dr => Some((
            "draining",
            format!(
                "{} connections, {} flows open, {} left ({})",
                num(&dr["connections"]),
                num(&dr["flows"]),
                span(num(&dr["remaining_ms"])),
                if text(&dr["phase"]) == "traffic-groups" {
                    "giving up traffic groups"
                } else {
                    "new connections refused"
                }
            ),
        )),
    };
    let rows = [
        ("device", text(&d["device"])),
        ("version", text(&d["version"])),
        ("uptime", span(num(&d["uptime_s"]) * 1000)),
        ("config file", text(&d["config_file"])),
        (
            "virtual servers",
            format!("{vs} ({} available)", num(&d["virtual_servers_available"])),
        ),
        ("pools", format!("{pools} ({} members)", num(&d["members"]))),
        ("connections", num(&d["connections"]).to_string()),
        (
            "persistence",
            format!("{} records", num(&d["persistence_records"])),
        ),
        ("last reload", reload),
    ];
    rows.iter()
        .cloned()
        .chain(draining)
        .map(|(k, v)| format!("{k:<16} {v}\n"))
        .collect()
}

fn member_done(d: &Value) -> String {
    format!(
        "pool {} member {}: {} -> {} (status {}); {}/{} members available\n",
        text(&d["pool"]),
        text(&d["member"]),
        text(&d["previous"]),
        text(&d["admin"]),
        text(&d["status"]),
        num(&d["available"]),
        num(&d["total"]),
    )
}

fn reload_done(d: &Value) -> String {
    let mut out = format!("reloaded: {}\n", reload_line(d));
    for l in list(&d["listeners_added"]) {
        out.push_str(&format!("  listening on {}\n", text(l)));
    }
    for l in list(&d["listeners_removed"]) {
        out.push_str(&format!("  stopped listening on {}\n", text(l)));
    }
    out
}

#[cfg(test)]
mod tests;
