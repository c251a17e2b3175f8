//! A raw test peer on loopback sends bgpd malformed messages. bgpd must follow RFC 7606
//! (treat-as-withdraw, session stays up) for attribute errors and RFC 4271 §6 (NOTIFICATION,
//! session reset) for header and framing errors, reconnect afterwards, and never crash.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod common;

use bgpd::config::Config;
use bgpd::control::Request;
use common::raw::{keepalive, msg, open, read_msg, T};
use serde_json::Value;
use spanlb_control::client::AsyncClient;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// UPDATE announcing 1.2.3.0/24 with the given attribute bytes.
fn update(attrs: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0]; // no withdrawn routes
    b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    b.extend_from_slice(attrs);
    b.extend_from_slice(&[24, 1, 2, 3]);
    msg(2, &b)
}

fn attrs(origin: u8) -> Vec<u8> {
    [
        &[0x40u8, 1, 1, origin][..],                 // ORIGIN
        &[0x40u8, 2, 6, 2, 1, 0, 0, 0xfd, 0xe8][..], // AS_PATH: SEQUENCE [65000] (4-octet)
        &[0x40u8, 3, 4, 10, 0, 0, 9][..],            // NEXT_HOP
    ]
    .concat()
}

struct Peer {
    sock: TcpStream,
}

impl Peer {
    /// Accepts bgpd's connection and completes the OPEN exchange.
    async fn accept(l: &TcpListener) -> Peer {
        let (mut sock, _) = timeout(T, l.accept())
            .await
            .expect("bgpd connects")
            .unwrap();
        let m = read_msg(&mut sock).await.expect("bgpd's open");
        assert_eq!(m[18], 1, "first message is an OPEN");
        sock.write_all(&open(false)).await.unwrap();
        sock.write_all(&keepalive()).await.unwrap();
        let m = read_msg(&mut sock).await.expect("bgpd's keepalive");
        assert_eq!(m[18], 4, "OPEN answered with KEEPALIVE");
        Peer { sock }
    }

    async fn send(&mut self, b: &[u8]) {
        self.sock.write_all(b).await.unwrap();
    }

    /// Reads until a NOTIFICATION arrives (skipping keepalives); returns (code, subcode).
    async fn notification(&mut self) -> (u8, u8) {
        loop {
            let m = read_msg(&mut self.sock)
                .await
                .expect("a notification before the close");
            if m[18] == 3 {
                return (m[19], m[20]);
            }
        }
    }
}

async fn neighbor(sock: &Path) -> Value {
    let mut c = AsyncClient::<Request>::connect(sock).await.unwrap();
    let v = serde_json::to_value(c.call(&Request::Neighbors).await.unwrap()).unwrap();
    v["neighbors"][0].clone()
}

async fn wait_neighbor(sock: &Path, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let n = neighbor(sock).await;
        if f(&n) {
            return n;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_handled_per_rfc_7606_and_4271() {
    let dir: PathBuf = std::env::temp_dir().join(format!("bgpd-malformed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("bgpd.sock");
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let cfg = Config::from_toml(
        &format!(
            r#"router_id = "10.0.0.1"
               local_as = 65001
               listen = []
               control_socket = "{}"
               [[neighbor]]
               address = "127.0.0.1"
               port = {port}
               remote_as = 65000
               hold_time = 9
               connect_retry = 1
               idle_hold = 0
               families = ["ipv4-unicast"]
               max_prefixes = 2"#,
            sock.display()
        ),
        "malformed.toml",
    )
    .unwrap();
    let control = bgpd::daemon::bind_control(&sock).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(bgpd::daemon::run(cfg, vec![], control, None, async {
        let _ = stop_rx.await;
    }));

    // 1. An invalid ORIGIN value: treat-as-withdraw (RFC 7606 §7.1); the session stays up.
    let mut p = Peer::accept(&l).await;
    p.send(&update(&attrs(7))).await;
    // 2. Then a valid UPDATE is accepted on the same session.
    p.send(&update(&attrs(0))).await;
    let n = wait_neighbor(&sock, "the valid prefix", |n| n["prefixes_received"] == 1).await;
    assert_eq!(n["state"], "established", "{n}");
    assert_eq!(n["updates_in"], 2, "{n}");
    assert_eq!(n["established_count"], 1, "no reset happened: {n}");

    // 3. A missing mandatory attribute (no NEXT_HOP): treat-as-withdraw (RFC 7606 §3 d) of
    //    the prefix announced before.
    let no_nh: Vec<u8> = attrs(0)[..13].to_vec();
    p.send(&update(&no_nh)).await;
    let n = wait_neighbor(&sock, "the prefix withdrawn", |n| {
        n["prefixes_received"] == 0
    })
    .await;
    assert_eq!(n["established_count"], 1, "{n}");

    // 4. An attribute whose length overruns the attribute block: the NLRI can still be found
    //    (Total Path Attribute Length frames them), so treat-as-withdraw (RFC 7606 §4).
    p.send(&update(&attrs(0))).await;
    wait_neighbor(&sock, "the prefix again", |n| n["prefixes_received"] == 1).await;
    let mut overrun = attrs(0);
    overrun[2] = 200; // ORIGIN claims 200 bytes
    p.send(&update(&overrun)).await;
    let n = wait_neighbor(&sock, "the prefix withdrawn by the overrun", |n| {
        n["prefixes_received"] == 0
    })
    .await;
    assert_eq!(n["established_count"], 1, "{n}");

    // 5. A Total Path Attribute Length beyond the message: nothing can be parsed, session
    //    reset with UPDATE message error / malformed attribute list (RFC 4271 §6.3).
    let mut bad_total = update(&attrs(0));
    bad_total[21..23].copy_from_slice(&500u16.to_be_bytes());
    p.send(&bad_total).await;
    assert_eq!(p.notification().await, (3, 1));

    // 6. Bad marker → 1/1; 7. bad length → 1/2; 8. unknown type → 1/3 (RFC 4271 §6.1).
    let mut bad_marker = keepalive();
    bad_marker[3] = 0;
    let mut bad_len = keepalive();
    bad_len[16..18].copy_from_slice(&5000u16.to_be_bytes());
    let bad_type = msg(9, &[]);
    for (bytes, want) in [(bad_marker, (1, 1)), (bad_len, (1, 2)), (bad_type, (1, 3))] {
        let mut p = Peer::accept(&l).await; // bgpd reconnects after the reset
        p.send(&bytes).await;
        assert_eq!(p.notification().await, want);
    }

    // 9. Max-prefix: three prefixes where two are allowed → Cease 6/1 (RFC 4486).
    let mut p = Peer::accept(&l).await;
    let mut b = vec![0, 0];
    let a = attrs(0);
    b.extend_from_slice(&(a.len() as u16).to_be_bytes());
    b.extend_from_slice(&a);
    b.extend_from_slice(&[24, 1, 2, 3, 24, 1, 2, 4, 24, 1, 2, 5]);
    p.send(&msg(2, &b)).await;
    assert_eq!(p.notification().await, (6, 1));

    // 10. Garbage instead of an OPEN.
    let (mut s, _) = timeout(T, l.accept()).await.unwrap().unwrap();
    let _ = read_msg(&mut s).await;
    s.write_all(&[0xde; 64]).await.unwrap();
    let mut p = Peer { sock: s };
    assert_eq!(p.notification().await, (1, 1));

    // bgpd is alive and still answers; it comes back once more with a clean session.
    let p = Peer::accept(&l).await;
    wait_neighbor(&sock, "re-established", |n| n["state"] == "established").await;
    assert!(!daemon.is_finished());
    drop(p);
    stop_tx.send(()).unwrap();
    timeout(T, daemon).await.unwrap().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
