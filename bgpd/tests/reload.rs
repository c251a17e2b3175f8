//! Reload (`bgpctl reload`, SIGHUP) on loopback: speaker A reads its configuration from a
//! file and peers with passive speakers B (127.0.0.1) and, after the reload, C (127.0.0.2).
//!
//! A's file changes: a neighbor added (C), a route's MED changed, a route removed. After the
//! reload B's session is the same one (its `established_count` stays 1), B holds the changed
//! route with the new MED and not the removed one, and C is established with the route. A file
//! that does not validate and one that changes the router id are refused, and nothing
//! changes.

mod common;

use std::path::Path;

use bgpd::control::Request;
use common::{call, start, wait_neighbor};
use serde_json::Value;

/// The MED of `prefix` in what A sent `neighbor`.
async fn med_sent(a: &Path, neighbor: &str, prefix: &str) -> Option<Value> {
    let v = call(
        a,
        &Request::AdjRibOut {
            neighbor: Some(neighbor.parse().unwrap()),
        },
    )
    .await;
    v["adj_rib_out"][0]["routes"]
        .as_array()?
        .iter()
        .find(|r| r[0]["prefix"] == prefix)
        .map(|r| r[1]["med"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_a_neighbor_and_diffs_routes_without_touching_other_sessions() {
    let dir = std::env::temp_dir().join(format!("bgpd-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let passive = |id: &str| {
        format!(
            "router_id = \"{id}\"\nlocal_as = 65000\n[[neighbor]]\naddress = \"127.0.0.1\"\n\
             remote_as = 65001\npassive = true\nhold_time = 9\n"
        )
    };
    let (b, b_port) = start(&passive("10.0.0.2"), &dir, "b", "127.0.0.1").await;
    let (c, c_port) = start(&passive("10.0.0.3"), &dir, "c", "127.0.0.2").await;
    let head = "router_id = \"10.0.0.1\"\nlocal_as = 65001\n";
    let to_b = format!(
        "[[neighbor]]\naddress = \"127.0.0.1\"\nport = {b_port}\nremote_as = 65000\n\
         hold_time = 9\nconnect_retry = 1\n"
    );
    let to_c = format!(
        "[[neighbor]]\naddress = \"127.0.0.2\"\nport = {c_port}\nremote_as = 65000\n\
         hold_time = 9\nconnect_retry = 1\n"
    );
    let r10 = "[[route]]\nprefix = \"30.1.1.10/32\"\nnext_hop = \"self\"\n";
    let r10_med = "[[route]]\nprefix = \"30.1.1.10/32\"\nnext_hop = \"self\"\nmed = 50\n";
    let r11 = "[[route]]\nprefix = \"30.1.1.11/32\"\nnext_hop = \"self\"\n";
    let (a, _) = start(&format!("{head}{to_b}{r10}{r11}"), &dir, "a", "127.0.0.1").await;
    let before = wait_neighbor("b established with two routes", &b.sock, |n| {
        n["state"] == "established" && n["prefixes_received"] == 2
    })
    .await;
    assert_eq!(before["established_count"], 1);

    // The new file: C added, 30.1.1.10 with MED 50, 30.1.1.11 gone.
    let sock_line = format!("control_socket = \"{}\"\n", a.sock.display());
    let file = dir.join("a.toml");
    std::fs::write(&file, format!("{sock_line}{head}{to_b}{to_c}{r10_med}")).unwrap();
    let r = call(&a.sock, &Request::Reload).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        r["neighbors_added"],
        serde_json::json!(["127.0.0.2"]),
        "{r}"
    );
    assert_eq!(r["neighbors_reset"], serde_json::json!([]), "{r}");
    assert_eq!(r["routes_announced"], 1, "{r}");
    assert_eq!(r["routes_withdrawn"], 1, "{r}");

    let after = wait_neighbor("b down to one route", &b.sock, |n| {
        n["prefixes_received"] == 1
    })
    .await;
    assert_eq!(after["established_count"], 1, "b's session stayed: {after}");
    assert_eq!(after["state"], "established");
    wait_neighbor("c established with the route", &c.sock, |n| {
        n["state"] == "established" && n["prefixes_received"] == 1
    })
    .await;
    assert_eq!(
        med_sent(&a.sock, "127.0.0.1", "30.1.1.10/32").await,
        Some(Value::from(50))
    );

    // A description and a limit: taken live, B's session stays.
    let to_b_described = to_b.replace(
        "hold_time = 9",
        "hold_time = 9\ndescription = \"b\"\nmax_prefixes = 5",
    );
    std::fs::write(
        &file,
        format!("{sock_line}{head}{to_b_described}{to_c}{r10_med}"),
    )
    .unwrap();
    let r = call(&a.sock, &Request::Reload).await;
    assert_eq!(
        r["neighbors_updated"],
        serde_json::json!(["127.0.0.1"]),
        "{r}"
    );
    assert_eq!(r["neighbors_reset"], serde_json::json!([]), "{r}");
    let n = call(&a.sock, &Request::Neighbors).await;
    let nb = n["neighbors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["address"] == "127.0.0.1")
        .cloned()
        .unwrap();
    assert_eq!(nb["description"], "b", "{nb}");
    assert_eq!(nb["established_count"], 1, "{nb}");

    // A file that does not validate, and one that needs a restart: refused, nothing changes.
    std::fs::write(&file, format!("{sock_line}{head}{to_b}bogus = 1\n")).unwrap();
    let r = call(&a.sock, &Request::Reload).await;
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("bogus"), "{r}");
    std::fs::write(
        &file,
        format!(
            "{sock_line}{}{to_b}{to_c}{r10_med}",
            head.replace("10.0.0.1", "10.0.0.9")
        ),
    )
    .unwrap();
    let r = call(&a.sock, &Request::Reload).await;
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("router_id changed"),
        "{r}"
    );
    let n = call(&a.sock, &Request::Neighbors).await;
    assert_eq!(n["neighbors"].as_array().unwrap().len(), 2, "{n}");
    let still = wait_neighbor("b still up", &b.sock, |n| n["state"] == "established").await;
    assert_eq!(still["established_count"], 1);

    a.stop().await;
    b.stop().await;
    c.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
