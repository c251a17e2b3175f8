//! BFD tied to BGP (RFC 5882) between two bgpd speakers on loopback: an in-process one (A) and
//! the `bgpd` binary (B), each with its own loopback address. With B frozen (SIGSTOP, a hung
//! box), A's BFD session goes down within its Detection Time and A closes the BGP session with
//! Cease / BFD Down (RFC 9384) long before the hold timer would; when B runs again both come
//! back. Authentication is meticulous keyed SHA1 on both sides.

use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use bgpd::control::Request;
use common::Daemon;
use serde_json::Value;
/// Far longer than BFD's 300 ms × 3: a session closed before it is BFD's doing.
const HOLD: u16 = 30;

const AUTH: &str = "auth = { type = \"meticulous-keyed-sha1\", key_id = 7, key = \"bfd-secret\" }";

async fn bfd_of(sock: &Path) -> Value {
    common::call(sock, &Request::Bfd).await["bfd"][0].clone()
}

/// Waits (`secs` at most) until `f` holds for the first BFD session of `sock`.
async fn wait_bfd(what: &str, sock: &Path, secs: u64, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let v = bfd_of(sock).await;
        if f(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}; last: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_hung_peer_is_cut_off_by_bfd_before_the_hold_timer() {
    let dir = std::env::temp_dir().join(format!("bgpd-bfd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a_ip, b_ip) = ("127.0.0.31", "127.0.0.32");
    let a_cfg = format!(
        "router_id = \"10.0.0.31\"\nlocal_as = 65001\n\
         [[neighbor]]\naddress = \"{b_ip}\"\nremote_as = 65002\nlocal_address = \"{a_ip}\"\n\
         passive = true\nhold_time = {HOLD}\nidle_hold = 1\n\
         bfd = {{ min_tx_ms = 100, min_rx_ms = 100, multiplier = 3, {AUTH} }}\n"
    );
    let (a, a_port) = common::start(&a_cfg, &dir, "a", a_ip).await;

    let b_sock = dir.join("b.sock");
    let b_file = dir.join("b.toml");
    std::fs::write(
        &b_file,
        format!(
            "router_id = \"10.0.0.32\"\nlocal_as = 65002\nlisten = []\n\
             control_socket = \"{}\"\n\
             [[neighbor]]\naddress = \"{a_ip}\"\nremote_as = 65001\nport = {a_port}\n\
             local_address = \"{b_ip}\"\nhold_time = {HOLD}\nconnect_retry = 1\nidle_hold = 1\n\
             bfd = {{ min_tx_ms = 100, min_rx_ms = 100, multiplier = 3, {AUTH} }}\n\
             [[route]]\nprefix = \"198.51.100.7/32\"\nnext_hop = \"self\"\n",
            b_sock.display()
        ),
    )
    .unwrap();
    let b = Daemon::start(&b_file, &b_sock);

    let n = common::wait_neighbor("A established with B", &a.sock, |n| {
        n["state"] == "established" && n["prefixes_received"] == 1
    })
    .await;
    assert_eq!(n["bfd"], "up", "{n}");
    let s = wait_bfd("A's BFD session up", &a.sock, 10, |s| s["state"] == "up").await;
    assert_eq!(s["remote_state"], "up", "{s}");
    assert_eq!(s["auth"], "meticulous keyed SHA1", "{s}");
    assert_eq!(s["detection_time_ms"], 300, "100 ms × 3 negotiated: {s}");
    assert_ne!(s["remote_discriminator"], 0, "{s}");
    let s = wait_bfd("B's BFD session up", &b_sock, 10, |s| s["state"] == "up").await;
    assert_eq!(s["remote_state"], "up", "{s}");

    // B hangs: its BFD packets stop, its TCP socket stays open (the kernel still ACKs).
    let frozen = Instant::now();
    assert!(b.signal(libc::SIGSTOP));
    let n = common::wait_neighbor("A closes the session on BFD down", &a.sock, |n| {
        n["state"] != "established"
    })
    .await;
    let cut = frozen.elapsed();
    println!(
        "bfd: hung peer cut off after {} ms (hold time {HOLD} s)",
        cut.as_millis()
    );
    assert!(
        cut < Duration::from_secs(u64::from(HOLD) / 2),
        "closed after {cut:?}, as by the hold timer, not BFD"
    );
    assert_eq!(n["last_notification_out"], "6/10 cease: bfd down", "{n}");
    assert!(
        n["last_reason"]
            .as_str()
            .unwrap_or("")
            .contains("control detection time expired"),
        "{n}"
    );
    let s = bfd_of(&a.sock).await;
    assert_eq!(s["state"], "down", "{s}");

    // B runs again: it reads the Cease, reconnects; BFD comes back and so does the route.
    assert!(b.signal(libc::SIGCONT));
    common::wait_neighbor("A re-established with B", &a.sock, |n| {
        n["state"] == "established" && n["prefixes_received"] == 1 && n["bfd"] == "up"
    })
    .await;
    let m = common::call(&a.sock, &Request::Neighbors).await;
    assert!(
        m["neighbors"][0]["established_count"].as_u64() >= Some(2),
        "{m}"
    );

    drop(b);
    a.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn bfd_that_never_comes_up_does_not_hold_bgp_down() {
    let dir = std::env::temp_dir().join(format!("bgpd-bfd-nokey-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a_ip, b_ip) = ("127.0.0.33", "127.0.0.34");
    // A authenticates, B does not: A discards every packet of B's (RFC 5880 §6.7.1), so BFD
    // never comes Up; BGP runs regardless (RFC 5882 §4.3: only a session that was Up counts).
    let (a, a_port) = common::start(
        &format!(
            "router_id = \"10.0.0.33\"\nlocal_as = 65001\n\
             [[neighbor]]\naddress = \"{b_ip}\"\nremote_as = 65002\nlocal_address = \"{a_ip}\"\n\
             passive = true\nhold_time = {HOLD}\nbfd = {{ {AUTH} }}\n"
        ),
        &dir,
        "a",
        a_ip,
    )
    .await;
    let (b, _) = common::start(
        &format!(
            "router_id = \"10.0.0.34\"\nlocal_as = 65002\nlisten = []\n{}",
            common::neighbor_to(
                a_ip,
                65001,
                a_port,
                b_ip,
                &format!("hold_time = {HOLD}\nbfd = {{}}\n")
            )
        ),
        &dir,
        "b",
        b_ip,
    )
    .await;
    common::wait_neighbor("A established with B", &a.sock, |n| {
        n["state"] == "established"
    })
    .await;
    // Several Detection Times (3 × 1 s while not Up) pass: still Established, BFD not Up.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let n = common::call(&a.sock, &Request::Neighbors).await["neighbors"][0].clone();
    assert_eq!(n["state"], "established", "{n}");
    assert_eq!(n["established_count"], 1, "{n}");
    assert_ne!(n["bfd"], "up", "{n}");
    b.stop().await;
    a.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
