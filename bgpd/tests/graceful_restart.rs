//! Graceful restart (RFC 4724) between two bgpd speakers on loopback.
//!
//! - Restarting speaker: End-of-RIB waits until a control client says `ready` (lbd, once it
//!   has announced its routes), so a router does not end its restart before the routes are
//!   back.
//! - Receiving speaker: a neighbor whose bgpd is killed (no NOTIFICATION) keeps its routes as
//!   stale until it is back and sends End-of-RIB; one that stops cleanly (Cease) loses them
//!   at once.

use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use bgpd::control::Request;
use common::Daemon;
use serde_json::Value;

const GR: &str = "[graceful_restart]\nenabled = true\nrestart_time = 30\n";

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("bgpd-gr-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn neighbor(sock: &Path) -> Value {
    common::call(sock, &Request::Neighbors).await["neighbors"][0].clone()
}

#[tokio::test]
async fn end_of_rib_waits_until_the_routes_are_announced() {
    let dir = tmpdir("eor");
    let (a_ip, b_ip) = ("127.0.0.41", "127.0.0.42");
    // A: the restarting side, one static route; End-of-RIB waits for `ready` (20 s at most).
    let (a, a_port) = common::start(
        &format!(
            "router_id = \"10.0.0.41\"\nlocal_as = 65001\n{GR}route_wait_ms = 20000\n\
             [[neighbor]]\naddress = \"{b_ip}\"\nremote_as = 65002\npassive = true\n\
             [[route]]\nprefix = \"198.51.100.1/32\"\nnext_hop = \"self\"\n"
        ),
        &dir,
        "a",
        a_ip,
    )
    .await;
    let (b, _) = common::start(
        &format!(
            "router_id = \"10.0.0.42\"\nlocal_as = 65002\nlisten = []\n{GR}{}",
            common::neighbor_to(a_ip, 65001, a_port, b_ip, "")
        ),
        &dir,
        "b",
        b_ip,
    )
    .await;
    let n = common::wait_neighbor("B has A's route", &b.sock, |n| {
        n["state"] == "established" && n["prefixes_received"] == 1
    })
    .await;
    assert_eq!(n["peer_restart_time"], 30, "{n}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let n = neighbor(&b.sock).await;
    assert_eq!(
        n["end_of_rib_received"],
        serde_json::json!([]),
        "End-of-RIB went before `ready`: {n}"
    );
    // lbd's part: it announces, then says ready.
    let r = common::call(
        &a.sock,
        &serde_json::from_str::<Request>(
            // Persistent: this client's connection closes after the call.
            r#"{"cmd":"announce","persistent":true,"routes":[{"prefix":"198.51.100.2/32"}]}"#,
        )
        .unwrap(),
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");
    let r = common::call(&a.sock, &Request::Ready).await;
    assert_eq!(r["ok"], true, "{r}");
    let n = common::wait_neighbor("B gets End-of-RIB", &b.sock, |n| {
        n["end_of_rib_received"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "ipv4-unicast"))
    })
    .await;
    // What lbd announced before `ready` came before End-of-RIB.
    assert_eq!(n["prefixes_received"], 2, "{n}");
    let a_n = neighbor(&a.sock).await;
    assert!(
        a_n["end_of_rib_sent"]
            .as_array()
            .is_some_and(|f| f.len() == 2),
        "{a_n}"
    );
    b.stop().await;
    a.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_killed_neighbor_keeps_its_routes_as_stale_until_it_is_back() {
    let dir = tmpdir("helper");
    let (a_ip, b_ip) = ("127.0.0.43", "127.0.0.44");
    // B: the receiving speaker, in-process.
    let (b, b_port) = common::start(
        &format!(
            "router_id = \"10.0.0.44\"\nlocal_as = 65002\n{GR}\
             [[neighbor]]\naddress = \"{a_ip}\"\nremote_as = 65001\npassive = true\n"
        ),
        &dir,
        "b",
        b_ip,
    )
    .await;
    // A: the bgpd binary with two routes and no lbd (End-of-RIB after 500 ms).
    let a_sock = dir.join("a.sock");
    let a_file = dir.join("a.toml");
    std::fs::write(
        &a_file,
        format!(
            "router_id = \"10.0.0.43\"\nlocal_as = 65001\nlisten = []\n\
             control_socket = \"{}\"\n{GR}route_wait_ms = 500\n\
             [[neighbor]]\naddress = \"{b_ip}\"\nremote_as = 65002\nport = {b_port}\n\
             local_address = \"{a_ip}\"\nconnect_retry = 1\n\
             [[route]]\nprefix = \"198.51.100.1/32\"\nnext_hop = \"self\"\n\
             [[route]]\nprefix = \"198.51.100.2/32\"\nnext_hop = \"self\"\n",
            a_sock.display()
        ),
    )
    .unwrap();
    let mut a = Daemon::start(&a_file, &a_sock);
    common::wait_neighbor("B has A's routes and End-of-RIB", &b.sock, |n| {
        n["state"] == "established"
            && n["prefixes_received"] == 2
            && n["end_of_rib_received"]
                .as_array()
                .is_some_and(|f| !f.is_empty())
    })
    .await;
    let first = neighbor(&b.sock).await["established_count"].clone();

    // A crashes: its session ends without a NOTIFICATION; B keeps both routes, stale.
    assert!(a.signal(libc::SIGKILL));
    let _ = a.0.wait();
    let n = common::wait_neighbor("B keeps A's routes as stale", &b.sock, |n| {
        n["state"] != "established"
    })
    .await;
    assert_eq!(n["prefixes_stale"], 2, "{n}");
    assert_eq!(n["prefixes_received"], 2, "{n}");
    assert!(
        a_sock.with_extension("running").exists(),
        "a killed bgpd leaves its marker (the next start is a restart)"
    );

    // A is back with one route only: on its End-of-RIB the other stale one goes.
    let text = std::fs::read_to_string(&a_file).unwrap();
    let cut = text.rfind("[[route]]").unwrap();
    std::fs::write(&a_file, &text[..cut]).unwrap();
    let a = Daemon::start(&a_file, &a_sock);
    let t0 = Instant::now();
    let n = common::wait_neighbor("B re-established, stale routes resolved", &b.sock, |n| {
        n["state"] == "established" && n["prefixes_stale"] == 0
    })
    .await;
    assert_eq!(n["prefixes_received"], 1, "{n}");
    assert_ne!(n["established_count"], first, "{n}");
    println!(
        "graceful restart: stale routes resolved {} ms after A started again",
        t0.elapsed().as_millis()
    );

    // A stops cleanly (Cease): not a restart, its routes go at once.
    assert!(a.signal(libc::SIGTERM));
    let n = common::wait_neighbor("B drops A's routes", &b.sock, |n| {
        n["state"] != "established"
    })
    .await;
    assert_eq!(n["prefixes_stale"], 0, "{n}");
    assert_eq!(n["prefixes_received"], 0, "{n}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while a_sock.with_extension("running").exists() {
        assert!(Instant::now() < deadline, "a clean stop keeps the marker");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(a);
    b.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
