//! GTSM (RFC 5082) on loopback: with `ttl_security` on both sides the session comes up (both
//! send with TTL 255); a peer that sends with TTL 1 (a directly connected eBGP default) never
//! gets a session with a neighbor that requires 255.

mod common;

use std::time::Duration;

use bgpd::control::Request;
use common::{call, start, wait_neighbor};

fn passive(id: &str, gtsm: bool) -> String {
    format!(
        "router_id = \"{id}\"\nlocal_as = 65000\n[[neighbor]]\naddress = \"127.0.0.1\"\n\
         remote_as = 65001\npassive = true\nhold_time = 9\nttl_security = {gtsm}\n"
    )
}

fn active(port: u16, gtsm: bool) -> String {
    format!(
        "router_id = \"10.0.0.1\"\nlocal_as = 65001\n[[neighbor]]\naddress = \"127.0.0.1\"\n\
         port = {port}\nremote_as = 65000\nhold_time = 9\nconnect_retry = 1\n\
         ttl_security = {gtsm}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gtsm_admits_ttl_255_and_refuses_a_peer_sending_ttl_1() {
    let dir = std::env::temp_dir().join(format!("bgpd-gtsm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    // Both with GTSM: up.
    let (b, port) = start(&passive("10.0.0.2", true), &dir, "b", "127.0.0.1").await;
    let (a, _) = start(&active(port, true), &dir, "a", "127.0.0.1").await;
    wait_neighbor("a session with GTSM on both sides", &b.sock, |n| {
        n["state"] == "established"
    })
    .await;
    a.stop().await;
    b.stop().await;

    // B requires 255, A sends with TTL 1 (eBGP, directly connected): never established.
    let (b, port) = start(&passive("10.0.0.2", true), &dir, "b2", "127.0.0.1").await;
    let (a, _) = start(&active(port, false), &dir, "a2", "127.0.0.1").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    for sock in [&a.sock, &b.sock] {
        let v = call(sock, &Request::Neighbors).await;
        assert_ne!(v["neighbors"][0]["state"], "established", "{v}");
        assert_eq!(v["neighbors"][0]["established_count"], 0, "{v}");
    }
    a.stop().await;
    b.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
