//! bgpd's output is bounded (issue 14, test 4): with 50,000 routes announced, a raw peer on
//! loopback that negotiated ROUTE-REFRESH sends 1,500 of them and never reads. bgpd defers the
//! refreshes while the peer is behind (at most one per family waits), its memory stays
//! bounded, and the send hold timer (RFC 9687) closes the session; bgpd keeps running and
//! answers its control socket. Printed: the test process's peak RSS growth (bgpd runs in it).

use std::path::PathBuf;
use std::time::{Duration, Instant};

mod common;

use bgpd::config::{Config, NextHop, RouteConfig};
use bgpd::control::Request;
use common::raw::{msg, open, read_msg, T};
use common::rss_kb;
use serde_json::Value;
use spanlb_control::client::AsyncClient;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::time::timeout;

const ROUTES: u32 = 50_000;
const REFRESHES: usize = 1_500;
/// The RSS growth during the storm the test accepts (without the bounds, every refresh queued
/// the whole Adj-RIB-Out again: hundreds of MB).
const RSS_BOUND_KB: u64 = 48 * 1024;

async fn call(sock: &std::path::Path, req: &Request) -> Value {
    let mut c = AsyncClient::<Request>::connect(sock).await.unwrap();
    serde_json::to_value(c.call(req).await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_storm_from_a_peer_that_never_reads_stays_bounded_and_is_closed() {
    let dir: PathBuf = std::env::temp_dir().join(format!("bgpd-bounds-{}", std::process::id()));
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
               idle_hold = 30
               send_hold_time = 3
               families = ["ipv4-unicast"]"#,
            sock.display()
        ),
        "bounds.toml",
    )
    .unwrap();
    let control = bgpd::daemon::bind_control(&sock).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(bgpd::daemon::run(cfg, vec![], control, None, async {
        let _ = stop_rx.await;
    }));
    // 50,000 /32s, each with its own next hop (one UPDATE each: a large Adj-RIB-Out).
    let routes: Vec<RouteConfig> = (0..ROUTES)
        .map(|i| {
            let mut r = RouteConfig::new(
                format!("30.{}.{}.{}/32", i >> 16, (i >> 8) & 0xff, i & 0xff)
                    .parse()
                    .unwrap(),
            );
            r.next_hop = NextHop::Addr(
                format!("20.1.{}.{}", (i >> 8) & 0xff, i & 0xff)
                    .parse()
                    .unwrap(),
            );
            r
        })
        .collect();
    let deadline = Instant::now() + T;
    let r = loop {
        match AsyncClient::<Request>::connect(&sock).await {
            Ok(mut c) => {
                // More than one 1 MiB line: sent in batches, as lbd does.
                let mut announced = 0;
                for part in (Request::Announce {
                    persistent: true,
                    routes,
                })
                .split(spanlb_control::bgpd::MAX_LINE)
                {
                    let r = serde_json::to_value(c.call(&part).await.unwrap()).unwrap();
                    announced += r["announced"].as_u64().unwrap_or(0);
                }
                break announced;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "control socket: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert_eq!(r, ROUTES as u64);

    // The peer: OPEN exchange, then it never reads again.
    let (mut p, _) = timeout(T, l.accept())
        .await
        .expect("bgpd connects")
        .unwrap();
    let m = read_msg(&mut p).await.expect("bgpd's open");
    assert_eq!(m[18], 1);
    p.write_all(&open(true)).await.unwrap();
    p.write_all(&msg(4, &[])).await.unwrap();
    let m = read_msg(&mut p).await.expect("bgpd's keepalive");
    assert_eq!(m[18], 4);
    // The initial Adj-RIB-Out is read in full (one UPDATE per route): what follows is the
    // storm's doing only.
    let mut updates = 0;
    while updates < ROUTES {
        let m = read_msg(&mut p).await.expect("the initial updates");
        if m[18] == 2 {
            updates += 1;
        }
    }
    let rss_before = rss_kb();
    // The largest RSS seen while the storm lasts, sampled every 20 ms.
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_before));
    let sampling = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kb(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    // The storm: 1,500 ROUTE-REFRESH (AFI 1, SAFI 1), keepalives every second so the hold
    // timer never fires; nothing read.
    let refresh = msg(5, &[0, 1, 0, 1]);
    let storm: Vec<u8> = (0..REFRESHES).flat_map(|_| refresh.clone()).collect();
    p.write_all(&storm).await.unwrap();
    let mut closed_after = None;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = p.write_all(&msg(4, &[])).await;
        let n = call(&sock, &Request::Neighbors).await;
        if n["neighbors"][0]["state"] != "established" {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    sampling.abort();
    let rss_peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    let grew = rss_peak.saturating_sub(rss_before);
    println!(
        "BOUNDS routes={ROUTES} refreshes={REFRESHES} rss_before_kb={rss_before} \
         rss_peak_during_storm_kb={rss_peak} growth_kb={grew} closed_after={closed_after:?}"
    );
    let n = call(&sock, &Request::Neighbors).await;
    let closed = closed_after.expect("the send hold timer closed the session");
    assert!(
        closed >= Duration::from_secs(2) && closed < Duration::from_secs(15),
        "closed after {closed:?}: {n}"
    );
    assert_eq!(
        n["neighbors"][0]["last_notification_out"], "8/0 send hold timer expired",
        "{n}"
    );
    assert!(grew < RSS_BOUND_KB, "peak RSS grew by {grew} kB");
    // bgpd serves on.
    let routes = call(&sock, &Request::Routes).await;
    assert_eq!(
        routes["routes"].as_array().map(Vec::len),
        Some(ROUTES as usize)
    );

    let _ = stop_tx.send(());
    let _ = timeout(Duration::from_secs(10), daemon).await;
    let _ = std::fs::remove_dir_all(&dir);
}
