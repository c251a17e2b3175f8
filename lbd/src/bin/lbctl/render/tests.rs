use serde_json::json;

use super::*;
use crate::args::{parse, request};
use spanlb_control::lbd::Request;

#[test]
fn plugins_show_counts_state_and_failures() {
    assert_eq!(
        request(&parse(&["show", "plugins"]).unwrap().cmd),
        Some(Request::ShowPlugins)
    );
    let data = json!({"plugin_dir": "/usr/lib/spanlb/plugins", "plugins": [
        {"name": "sip", "version": "0.1.0", "abi": 1, "calls": 200, "keys": 198, "members": 0,
         "no_match": 2, "malformed": 0, "panics": 0, "state": "enabled", "file": "/p/libsip.so"},
        {"name": "panicky", "version": "0", "abi": 1, "calls": 12, "keys": 2, "members": 0,
         "no_match": 0, "malformed": 0, "panics": 10, "state": "disabled (10 panics)", "file": "/p/libpanicky.so"}],
        "failed": [{"file": "/p/x.so", "error": "plugin /p/x.so: not a spanlb plugin (no spanlb_plugin_abi_version symbol)"}]});
    let out = render(&parse(&["show", "plugins"]).unwrap().cmd, &data, 0);
    let sip = out.lines().find(|l| l.starts_with("sip ")).unwrap();
    assert!(
        sip.contains("200") && sip.contains("198") && sip.contains("enabled"),
        "{sip}"
    );
    assert!(out.contains("disabled (10 panics)"), "{out}");
    assert!(
        out.contains("failed: plugin /p/x.so: not a spanlb plugin"),
        "{out}"
    );
}

#[test]
fn traffic_groups_show_active_next_active_and_why() {
    let data = json!({"me": "a", "traffic_groups": [
        {"name": "tg-2", "active": "c", "placement": "c", "next_active": "a", "state": "standby",
         "since_ms_ago": 4000, "reason": "b is dead", "external_floating": "20.1.1.3/24",
         "internal_floating": "10.1.1.3/24", "path_id": 2},
        {"name": "tg-3", "active": "c", "placement": "a", "next_active": "a", "state": "standby",
         "since_ms_ago": null, "reason": null, "external_floating": "20.1.1.4/24",
         "internal_floating": "10.1.1.4/24", "path_id": 3},
    ]});
    let out = render(&parse(&["show", "traffic-groups"]).unwrap().cmd, &data, 0);
    assert!(out.starts_with("as seen from a\n"), "{out}");
    let tg2 = out.lines().find(|l| l.starts_with("tg-2")).unwrap();
    for want in [
        "c",
        "a",
        "standby",
        "4s",
        "20.1.1.3/24 10.1.1.3/24",
        "b is dead",
    ] {
        assert!(tg2.contains(want), "{want} in {tg2}");
    }
    // Moving: holder -> placement.
    assert!(
        out.lines()
            .any(|l| l.starts_with("tg-3") && l.contains("c -> a")),
        "{out}"
    );
}

#[test]
fn device_group_shows_devices_links_bgpd_and_rejections() {
    let data = json!({"device_group": {
        "name": "seed", "me": "a", "phase": "running", "route_mode": "l2", "standby": false,
        "heartbeat_interval_ms": 100, "dead_after_ms": 500,
        "devices": [
            {"name": "a", "alive": true, "eligible": true, "last_heard_ms_ago": null, "active": ["tg-1"]},
            {"name": "b", "alive": false, "eligible": true, "last_heard_ms_ago": 2300, "active": ["tg-2"]}],
        "counters": {"heartbeats_sent": 10, "heartbeats_received": 9, "rejected_bad_tag": 3,
            "rejected_replayed": 2, "rejected_unknown_device": 0, "rejected_malformed": 0, "send_errors": 0},
        "local": {"links": {"ext0": true, "int0": false},
            "bgpd": {"socket": "/run/b.sock", "connected": true, "routes": [{}], "last_error": null},
            "attribution": {"traffic_group": "tg-1", "automap_v4": "10.1.1.2"},
            "last_error": null}}});
    let out = render(&parse(&["show", "device-group"]).unwrap().cmd, &data, 0);
    for want in [
        "device group seed (l2 mode), this device a (running)",
        "int0 down",
        "connected), 1 route announced",
        "bad tag 3 replayed 2",
        "traffic group tg-1, SNAT automap 10.1.1.2",
    ] {
        assert!(out.contains(want), "{want} in\n{out}");
    }
    let b = out.lines().find(|l| l.starts_with("b ")).unwrap();
    assert!(
        b.contains("no") && b.contains("2300 ms") && b.contains("tg-2"),
        "{b}"
    );
    // Every mirror in sync (or an older lbd without the field): no line.
    assert!(!out.contains("mirror not in sync"), "{out}");
}

#[test]
fn unsynced_devices_and_failbacks_waiting_for_sync_are_shown() {
    let data = json!({"device_group": {
        "name": "seed", "me": "a", "phase": "running", "route_mode": "l2",
        "devices": [
            {"name": "a", "alive": true, "eligible": true, "active": ["tg-2"], "unsynced": []},
            {"name": "b", "alive": true, "eligible": true, "active": [], "unsynced": ["tg-1", "tg-2"]}],
        "local": {}}});
    let out = render(&parse(&["show", "device-group"]).unwrap().cmd, &data, 0);
    assert!(out.contains("mirror not in sync: b (tg-1,tg-2)\n"), "{out}");
    let data = json!({"me": "a", "traffic_groups": [
        {"name": "tg-1", "active": "a", "placement": "a", "next_active": "b", "state": "active",
         "waiting_for_sync": null},
        {"name": "tg-2", "active": "a", "placement": "a", "next_active": "b", "state": "active",
         "waiting_for_sync": "b"},
    ]});
    let out = render(&parse(&["show", "traffic-groups"]).unwrap().cmd, &data, 0);
    assert!(
        out.ends_with("tg-2: auto-failback to b waits for its mirror to be in sync\n"),
        "{out}"
    );
    assert!(!out.contains("tg-1: auto-failback"), "{out}");
}

#[test]
fn mirroring_view_shows_channels_and_why_it_is_off() {
    let cmd = parse(&["show", "mirroring"]).unwrap().cmd;
    let off = render(
        &cmd,
        &json!({"enabled": false, "reason": "device.mirror_trust_dir is not set"}),
        0,
    );
    assert_eq!(
        off,
        "mirroring is off: device.mirror_trust_dir is not set\n"
    );
    let data = json!({
        "enabled": true, "me": "b", "scope": "next-active", "persistence_scope": "all-peers",
        "offered": 603, "refresh_skipped": 3, "offer_errors": 0, "unsynced": ["tg-1"],
        "senders": [{"traffic_group": "tg-2", "peer": "c", "carries": "all", "port": 1030,
            "state": "lagging",
            "last_sent": 603, "last_acked": 590, "lag_ms": 42, "queued": 13, "unacked": 13,
            "records": {"persistence": 600, "udp_flows": 1, "tcp_connections": 50}}],
        "receivers": [{"traffic_group": "tg-1", "peer": "a", "port": 1029, "connected": true,
            "state": "in-sync", "in_sync": true, "last_applied": 351, "duplicates": 2,
            "records": {"persistence": 1, "udp_flows": 0, "tcp_connections": 0}}],
    });
    let out = render(&cmd, &data, 0);
    assert!(
        out.starts_with(
            "device b, connections to next-active, persistence to all-peers; updates offered 603"
        ),
        "{out}"
    );
    assert!(
        out.contains("not in sync for tg-1: an auto-failback to this device waits for it\n"),
        "{out}"
    );
    let row = out.lines().find(|l| l.contains("tg-2")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        ["tg-2", "c", "all", "1030", "lagging", "600/1/50", "603", "590", "42", "13"],
        "{out}"
    );
    let row = out.lines().find(|l| l.starts_with("  tg-1")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        ["tg-1", "a", "1029", "in-sync", "1/0/0", "351", "2"],
        "{out}"
    );
    // No sender: said so.
    let data = json!({"enabled": true, "me": "c", "scope": "next-active",
        "senders": [], "receivers": [], "unsynced": []});
    let out = render(&cmd, &data, 0);
    assert!(out.contains("sending: nothing"), "{out}");
    assert!(out.contains("in sync: holds the mirrored state"), "{out}");
}

#[test]
fn bytes_and_spans_read_easily() {
    assert_eq!(bytes(0), "0 B");
    assert_eq!(bytes(1023), "1023 B");
    assert_eq!(bytes(1024), "1.0 KiB");
    assert_eq!(bytes(1536), "1.5 KiB");
    assert_eq!(bytes(5 * 1024 * 1024 + 300 * 1024), "5.3 MiB");
    assert_eq!(bytes(3 << 30), "3.0 GiB");
    assert_eq!(bytes(u64::MAX), "16.0 EiB");
    assert_eq!(span(999), "0s");
    assert_eq!(span(45_000), "45s");
    assert_eq!(span(723_000), "12m03s");
    assert_eq!(span(3 * 3_600_000 + 7 * 60_000 + 5_000), "3h07m");
    assert_eq!(span(2 * 86_400_000 + 4 * 3_600_000), "2d04h");
    assert_eq!(until(5_000, 6_000), "expired");
    assert_eq!(until(66_000, 6_000), "1m00s");
}

fn pools_data() -> Value {
    json!([{
        "name": "web", "method": "least-connections", "monitors": ["tcp", "http"],
        "available": 1, "total": 4, "virtual_servers": ["web", "web-tls"],
        "members": [
            {"address": "10.1.1.50:80", "ratio": 1, "admin": "enabled", "health": "up",
             "status": "up",
             "monitors": {
                "tcp": {"health": "up", "reason": "connected", "since_ms": 100},
                "http": {"health": "up", "reason": "status 200", "since_ms": 200}},
             "counters": {"current": 3, "total": 120, "bytes_in": 1536,
                          "bytes_out": 41_943_040, "connect_failures": 0, "refused": 0}},
            {"address": "10.1.1.51:80", "ratio": 2, "admin": "disabled", "health": "down",
             "status": "down",
             "monitors": {"tcp": {"health": "down", "reason": "connection refused", "since_ms": 300}},
             "counters": {"current": 0, "total": 7, "bytes_in": 10, "bytes_out": 0,
                          "connect_failures": 2, "refused": 0}},
            {"address": "10.1.1.53:80", "ratio": 1, "admin": "enabled", "health": "up",
             "status": "down", "passive": "passive: 5 connect failures",
             "monitors": {"tcp": {"health": "up", "reason": "connected", "since_ms": 100}},
             "counters": {"current": 0, "total": 9, "bytes_in": 0, "bytes_out": 0,
                          "connect_failures": 5, "refused": 0}},
            {"address": "[fd00::52]:8080", "ratio": 1, "admin": "forced-offline",
             "health": "unchecked", "status": "forced-offline", "monitors": {},
             "counters": {"current": 0, "total": 0, "bytes_in": 0, "bytes_out": 0,
                          "connect_failures": 0, "refused": 0}}
        ]
    }, {
        "name": "empty", "method": "round-robin", "monitors": [], "available": 0,
        "total": 0, "virtual_servers": [], "members": []
    }])
}

#[test]
fn pools_view() {
    let out = show_pools(&pools_data());
    let want = "\
pool web  least-connections  1/4 available  monitors: tcp,http  virtual servers: web,web-tls
  MEMBER           RATIO  STATUS          CUR  TOTAL  BYTES-IN  BYTES-OUT  FAIL  MONITOR
  10.1.1.50:80         1  up                3    120   1.5 KiB   40.0 MiB     0  http up: status 200
  10.1.1.51:80         2  down/disabled     0      7      10 B        0 B     2  tcp down: connection refused
  10.1.1.53:80         1  down              0      9       0 B        0 B     5  passive: 5 connect failures
  [fd00::52]:8080      1  forced-offline    0      0       0 B        0 B     0  -

pool empty  round-robin  0/0 available  monitors: none  virtual servers: none
  (no members)
";
    assert_eq!(out, want, "\n{out}");
    assert_eq!(show_pools(&json!([])), "no pools\n");
}

#[test]
fn virtual_server_views() {
    let vs = json!({
        "name": "web", "destination": "198.51.100.10:80", "protocol": "tcp", "pool": "web",
        "enabled": true, "available": false, "snat": "automap", "connection_limit": 0,
        "idle_timeout": "5m", "connect_timeout": "5s", "persistence": null, "mirror": false,
        "counters": {"current": 1, "total": 9, "bytes_in": 2048, "bytes_out": 4096,
                     "connect_failures": 4, "refused": 3}
    });
    let mut api = vs.clone();
    api["name"] = json!("api");
    api["enabled"] = json!(false);
    api["persistence"] = json!("src");
    let two = show_virtual_servers(&json!([api, vs.clone()]));
    let lines: Vec<&str> = two.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("NAME  DESTINATION       PROTO  POOL  STATE"));
    assert!(lines[1].contains("disabled"));
    assert!(lines[1].ends_with("automap  src"));
    assert!(lines[2].contains("unavailable"));
    assert!(lines[2].contains("2.0 KiB"));
    assert!(lines[2].ends_with("automap  -"));
    let one = show_virtual_servers(&json!([vs]));
    assert!(one.ends_with(
        "\n  connection limit none, idle timeout 5m, connect timeout 5s, mirror off, connect failures 4\n"
    ));
    assert_eq!(show_virtual_servers(&json!([])), "no virtual servers\n");

    let vas = json!([{"address": "198.51.100.10", "spanning": true, "advertise": "all",
                      "virtual_servers": ["api", "web"], "available": 1, "advertised": false}]);
    assert_eq!(
        show_virtual_addresses(&vas),
        "ADDRESS        ADVERTISE  SPANNING  AVAILABLE  ROUTE     VIRTUAL-SERVERS\n\
         198.51.100.10  all        yes             1/2  withdraw  api,web\n"
    );
}

#[test]
fn status_and_results() {
    let now = 1_800_000_000_000;
    let mut d = json!({
        "device": "lb-a", "version": "0.1.0", "uptime_s": 3725, "config_file": "/etc/spanlb/lbd.toml",
        "virtual_servers": 2, "virtual_servers_available": 1, "pools": 1, "members": 3,
        "connections": 12, "persistence_records": 4, "last_reload": null
    });
    let out = show_status(&d, now);
    assert!(out.contains("device           lb-a\n"), "{out}");
    assert!(out.contains("uptime           1h02m\n"));
    assert!(out.contains("virtual servers  2 (1 available)\n"));
    assert!(out.contains("pools            1 (3 members)\n"));
    assert!(out.ends_with("last reload      never\n"));
    d["last_reload"] =
        json!({"at_ms": now - 65_000, "ok": false, "error": "lbd.toml: key `x`: bad"});
    let out = show_status(&d, now);
    assert!(
        out.ends_with(
            "last reload      2027-01-15T07:58:55Z (1m05s ago): rejected: lbd.toml: key `x`: bad\n"
        ),
        "{out}"
    );
    d["last_reload"] = json!({"at_ms": now, "ok": true, "summary":
        {"listeners_added": ["tcp 1.2.3.4:80"], "listeners_removed": [], "virtual_servers": 1, "pools": 2}});
    assert!(show_status(&d, now).contains(": ok, 1 virtual server, 2 pools, listeners +1 -0\n"));
    assert!(!show_status(&d, now).contains("draining"));
    d["draining"] =
        json!({"phase": "connections", "connections": 3, "flows": 1, "remaining_ms": 12_500});
    assert!(show_status(&d, now).ends_with(
        "draining         3 connections, 1 flows open, 12s left (new connections refused)\n"
    ));

    let r = json!({"listeners_added": ["tcp 1.2.3.4:80"], "listeners_removed": ["udp 1.2.3.4:53"],
                   "virtual_servers": 1, "pools": 1});
    assert_eq!(
        reload_done(&r),
        "reloaded: 1 virtual server, 1 pool, listeners +1 -1\n  listening on tcp 1.2.3.4:80\n  stopped listening on udp 1.2.3.4:53\n"
    );
    let m = json!({"pool": "web", "member": "10.1.1.50:80", "previous": "enabled",
                   "admin": "disabled", "status": "disabled", "available": 1, "total": 2});
    assert_eq!(
        member_done(&m),
        "pool web member 10.1.1.50:80: enabled -> disabled (status disabled); 1/2 members available\n"
    );
    let a = parse(&["persistence", "delete"]).unwrap();
    assert_eq!(
        render(&a.cmd, &json!({"deleted": 1}), now),
        "deleted 1 persistence record\n"
    );
}

#[test]
fn tables_of_records() {
    let now = 1_000_000;
    let c = json!({"total": 3, "table_entries": 5, "connections": [{
        "id": 7, "protocol": "tcp", "virtual_server": "web", "client": "203.0.113.7:40000",
        "vip": "198.51.100.10:80", "pool": "web", "member": "10.1.1.50:80",
        "snat": "10.1.1.6:50000", "traffic_group": null, "update_id": 9,
        "created_ms": now - 125_000, "expiry_ms": now + 300_000,
        "bytes_in": 100, "bytes_out": 2_000_000}]});
    let out = show_connections(&c, now);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ID  PROTO  VIRTUAL-SERVER  CLIENT"));
    assert!(lines[1].contains("2m05s"), "{out}");
    assert!(lines[1].contains("5m00s"));
    assert!(lines[1].ends_with("100 B    1.9 MiB"), "{out}");
    assert_eq!(
        lines[2],
        "1 of 3 connections shown (raise --limit to see more)"
    );
    assert_eq!(
        show_connections(&json!({"total": 0, "connections": []}), now),
        "0 connections\n"
    );

    let p = json!([{"profile": "src", "scope": "*", "key": "203.0.113.0/24", "pool": "web",
                    "member": "10.1.1.50:80", "virtual_server": "web", "traffic_group": null,
                    "update_id": 1, "expiry_ms": now + 61_000}]);
    assert_eq!(
        show_persistence(&p, now),
        "PROFILE  SCOPE  KEY             POOL  MEMBER        VIRTUAL-SERVER  EXPIRES\n\
         src      *      203.0.113.0/24  web   10.1.1.50:80  web               1m01s\n\
         1 record\n"
    );
    assert_eq!(
        show_persistence(&json!([]), now),
        "no persistence records\n"
    );
}

#[test]
fn odd_answers_do_not_panic() {
    for v in [
        json!(null),
        json!(3),
        json!({"x": 1}),
        json!([1, "a", null]),
    ] {
        for argv in [
            &["status"][..],
            &["show", "pools"],
            &["show", "virtual-servers"],
            &["show", "virtual-addresses"],
            &["show", "connections"],
            &["show", "persistence"],
            &["member", "p", "10.0.0.1:1", "enable"],
            &["persistence", "delete"],
            &["reload"],
            &["show", "device-group"],
            &["show", "traffic-groups"],
            &["show", "plugins"],
            &["failover", "tg-1"],
            &["standby"],
            &["release"],
        ] {
            let _ = render(&parse(argv).unwrap().cmd, &v, 0);
        }
    }
}

#[test]
fn config_status_names_the_holders_and_each_devices_generation() {
    let cmd = parse(&["config", "status"]).unwrap().cmd;
    assert_eq!(request(&cmd), Some(Request::ConfigStatus));
    let gen = |origin: &str, counter: u64, digest: char| {
        json!({"origin": origin, "counter": counter, "time_ms": 1_000,
               "digest": digest.to_string().repeat(64)})
    };
    let data = json!({
    "me": "c", "status": "changes-pending", "dirty": true,
    "detail": {"status": "changes-pending", "holders": ["a", "c"], "behind": ["b"]},
    "generation": gen("c", 5, 'c'),
    "overwritten": null,
    "devices": [
        {"name": "c", "alive": true, "generation": gen("c", 5, 'c'), "dirty": true, "same_as_me": true},
        {"name": "a", "alive": true, "generation": gen("a", 5, 'a'), "dirty": true, "same_as_me": false},
        {"name": "b", "alive": false, "generation": null, "dirty": false, "same_as_me": false},
    ]});
    let out = render(&cmd, &data, 61_000);
    assert!(out.starts_with("c: changes-pending\n"), "{out}");
    assert!(out.contains("changes held by: a, c; behind: b"), "{out}");
    let a = out.lines().find(|l| l.starts_with("a ")).unwrap();
    assert!(
        a.contains("a:5 aaaaaaaaaaaa") && a.contains("1m00s ago"),
        "{a}"
    );
    let b = out.lines().find(|l| l.starts_with("b ")).unwrap();
    assert!(b.contains("no") && b.contains(" - "), "{b}");
    let over = json!({"ours": gen("c", 5, 'c'), "by": gen("a", 5, 'a')});
    let data = json!({"me": "c", "status": "in-sync", "detail": {"status": "in-sync"},
        "overwritten": over, "devices": []});
    let out = render(&cmd, &data, 61_000);
    assert!(
        out.contains("this device's change c:5 cccccccccccc") && out.contains("overwritten by a:5"),
        "{out}"
    );
}

#[test]
fn device_group_add_and_remove_send_their_requests_and_say_what_happened() {
    let cmd = parse(&[
        "device-group",
        "add",
        "d",
        "--failover-address",
        "192.168.100.9",
        "--mirror-address",
        "192.168.100.9",
        "--ha-capacity",
        "2",
    ])
    .unwrap()
    .cmd;
    assert_eq!(
        request(&cmd),
        Some(Request::DeviceGroupAdd {
            name: "d".into(),
            failover_addresses: vec!["192.168.100.9".into()],
            mirror_addresses: vec!["192.168.100.9".into()],
            config_sync_address: None,
            ha_capacity: Some(2),
        })
    );
    let out = render(
        &cmd,
        &json!({"added": "d", "sync": {"synced": ["d", "b", "c"], "failed": []}}),
        0,
    );
    assert_eq!(out, "added d; synced to d, b, c\n");
    // A failover address is required; a bad one is refused by lbctl itself.
    assert!(parse(&["device-group", "add", "d"]).is_err());
    assert!(parse(&["device-group", "add", "d", "--failover-address", "x"]).is_err());

    let cmd = parse(&["device-group", "remove", "d"]).unwrap().cmd;
    assert_eq!(
        request(&cmd),
        Some(Request::DeviceGroupRemove { name: "d".into() })
    );
    let out = render(
        &cmd,
        &json!({"removed": "d", "moved": ["tg-4"], "sync": {"synced": ["b", "c", "d"]}}),
        0,
    );
    assert_eq!(out, "removed d (moved first: tg-4); synced to b, c, d\n");
}
