//! Two bgpd daemons on loopback, peering with each other: announcements through the control
//! socket arrive at the other side, fate sharing withdraws them, shutdown withdraws and then
//! sends Cease / Administrative Shutdown.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bgpd::config::{Config, NextHop, RouteConfig};
use bgpd::control::Request;
use serde_json::{json, Value};
use spanlb_control::client::AsyncClient;
use tokio::io::AsyncWriteExt;

/// A control client answering with the whole response object.
struct Client(AsyncClient<Request>);

impl Client {
    async fn connect(p: &Path) -> Client {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match AsyncClient::connect(p).await {
                Ok(c) => return Client(c),
                Err(e) if Instant::now() > deadline => panic!("control socket: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
    async fn call(&mut self, req: &Request) -> Value {
        serde_json::to_value(self.0.call(req).await.unwrap()).unwrap()
    }
}

struct Speaker {
    sock: PathBuf,
    metrics: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start(cfg: &str, dir: &Path, name: &str) -> (Speaker, u16) {
    let sock = dir.join(format!("{name}.sock"));
    let text = format!("control_socket = \"{}\"\n{cfg}", sock.display());
    let config = Config::from_toml(&text, name).unwrap();
    let listener = bgpd::sockopt::listener("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = listener.local_addr().unwrap().port();
    let control = bgpd::daemon::bind_control(&sock).unwrap();
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = metrics_listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        bgpd::daemon::run(
            config,
            vec![listener],
            control,
            Some(metrics_listener),
            async {
                let _ = rx.await;
            },
        )
        .await
        .unwrap();
    });
    (
        Speaker {
            sock,
            metrics,
            stop: Some(tx),
            task,
        },
        port,
    )
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.starts_with("HTTP/1.0 200 OK"), "{out}");
    out
}

/// One request (`request_line`, HTTP/1.0) to the endpoint at `addr`; the whole answer.
async fn get(addr: std::net::SocketAddr, request_line: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{request_line}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

async fn wait_for(what: &str, c: &mut Client, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = c.call(&Request::Neighbors).await;
        if f(&v["neighbors"][0]) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_speakers_exchange_routes_and_fate_sharing_withdraws() {
    let dir = std::env::temp_dir().join(format!("bgpd-loopback-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // B is passive; A connects to B's port. Both sit on 127.0.0.1.
    let (b, b_port) = start(
        r#"router_id = "10.0.0.2"
           local_as = 65000
           [[neighbor]]
           address = "127.0.0.1"
           remote_as = 65001
           passive = true
           hold_time = 9
           add_path_receive = ["ipv4-unicast"]"#,
        &dir,
        "b",
    )
    .await;
    let (a, _) = start(
        &format!(
            r#"router_id = "10.0.0.1"
               local_as = 65001
               [[neighbor]]
               address = "127.0.0.1"
               port = {b_port}
               remote_as = 65000
               hold_time = 9
               connect_retry = 1
               add_path_send = ["ipv4-unicast"]
               [[route]]
               prefix = "30.1.1.10/32"
               path_id = 9
               next_hop = "20.1.1.9""#
        ),
        &dir,
        "a",
    )
    .await;
    let mut ca = Client::connect(&a.sock).await;
    let mut cb = Client::connect(&b.sock).await;
    wait_for("established with the static route", &mut cb, |n| {
        n["state"] == "established" && n["prefixes_received"] == 1
    })
    .await;

    // A control client announces three paths of a VIP; B receives all three (ADD-PATH).
    let routes: Vec<RouteConfig> = (1..=3)
        .map(|k| {
            let mut r = RouteConfig::new("30.1.1.20/32".parse().unwrap());
            r.path_id = Some(k);
            r.next_hop = NextHop::Addr(format!("20.1.1.{}", k + 1).parse().unwrap());
            r
        })
        .collect();
    let announce = Request::Announce {
        persistent: false,
        routes,
    };
    let r = ca.call(&announce).await;
    assert_eq!(r["ok"], true, "{r}");
    let v = wait_for("three more paths", &mut cb, |n| n["prefixes_received"] == 4).await;
    assert_eq!(
        v["neighbors"][0]["add_path_receive"],
        json!(["ipv4-unicast"])
    );

    // Prometheus metrics say the same.
    let text = scrape(a.metrics).await;
    for want in [
        "bgpd_session_state{neighbor=\"127.0.0.1\",state=\"established\"} 1",
        "bgpd_session_state{neighbor=\"127.0.0.1\",state=\"idle\"} 0",
        "bgpd_prefixes_advertised{neighbor=\"127.0.0.1\"} 4",
        "bgpd_routes 4",
        "bgpd_messages_sent_total{neighbor=\"127.0.0.1\",kind=\"open\"} 1",
    ] {
        assert!(text.contains(want), "metrics lack `{want}`:\n{text}");
    }
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    spanlb_control::http::check_openmetrics(body).unwrap_or_else(|e| panic!("{e}:\n{body}"));
    for want in ["bgpd_build_info{version=", "process_open_fds "] {
        assert!(body.lines().any(|l| l.starts_with(want)), "{want}:\n{body}");
    }
    let text = scrape(b.metrics).await;
    assert!(
        text.contains("bgpd_prefixes_received{neighbor=\"127.0.0.1\"} 4"),
        "{text}"
    );
    // Started: ready (it does not wait for Established; see bgpd::metrics).
    let health = get(b.metrics, "GET /healthz HTTP/1.0").await;
    assert!(health.starts_with("HTTP/1.0 200 OK"), "{health}");
    assert!(health.ends_with("\r\n\r\nok\n"), "{health}");
    let other = get(b.metrics, "GET / HTTP/1.0").await;
    assert!(other.starts_with("HTTP/1.0 404 "), "{other}");

    let out = ca.call(&Request::AdjRibOut { neighbor: None }).await;
    assert_eq!(
        out["adj_rib_out"][0]["routes"].as_array().unwrap().len(),
        4,
        "{out}"
    );

    // Bad requests get one-line errors and the connection stays usable.
    let mut wrong = RouteConfig::new("30.1.1.0/24".parse().unwrap());
    wrong.next_hop = NextHop::Addr("2001:db8::1".parse().unwrap());
    let r = ca
        .call(&Request::Announce {
            persistent: false,
            routes: vec![wrong],
        })
        .await;
    assert_eq!(r["ok"], false);
    assert!(
        r["error"].as_str().unwrap().contains("address family"),
        "{r}"
    );
    let r = ca.0.call_line(b"{\"cmd\":\"frobnicate\"}").await.unwrap();
    let r = serde_json::to_value(r).unwrap();
    assert_eq!(r["ok"], false);
    let r = ca.call(&Request::Routes).await;
    assert_eq!(r["routes"].as_array().unwrap().len(), 4, "{r}");

    // Fate sharing: the client goes away, its routes go; the static one stays.
    drop(ca);
    wait_for("client routes withdrawn", &mut cb, |n| {
        n["prefixes_received"] == 1
    })
    .await;

    // Shutdown of A: B sees the withdraw, then a Cease.
    let mut a = a;
    a.stop.take().unwrap().send(()).unwrap();
    let v = wait_for("session down", &mut cb, |n| n["state"] != "established").await;
    let n = &v["neighbors"][0];
    assert_eq!(
        n["last_notification_in"].as_str().unwrap_or(""),
        "6/2 cease: administrative shutdown",
        "{v}"
    );
    a.task.await.unwrap();
    let mut b = b;
    b.stop.take().unwrap().send(()).unwrap();
    b.task.await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
