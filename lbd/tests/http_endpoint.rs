//! lbd's HTTP endpoint with the real `lbd` binary on loopback: `/healthz` once started and
//! 503 while draining, the metrics text strict OpenMetrics, and the connect and duration
//! histograms counting a proxied connection. (503 before the listeners are bound is tested in
//! process, in `app::metrics`: the window is too short to catch from outside.)

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

/// One HTTP/1.0 request to `addr`; the whole answer.
fn get(addr: SocketAddr, request_line: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("{request_line}\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// The value of the sample `line_start` (name and labels) in a metrics text.
fn value(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
}

#[test]
fn healthz_metrics_histograms_and_the_drain() {
    let web = Server::start("web1", Behaviour::NameThenEcho);
    let (port, metrics_port) = (free_port(), free_port());
    let vip: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let lbd = Lbd::start(&format!(
        "metrics = \"{metrics}\"\nworkers = 1\ndrain_timeout = \"30s\"\n\n\
         [virtual_servers.web]\ndestination = \"{vip}\"\npool = \"web\"\n\
         [pools.web]\nmembers = [{{ address = \"{}\" }}]\n",
        web.addr
    ));

    // The control socket is up: every listener is bound, so ready.
    let h = get(metrics, "GET /healthz HTTP/1.0");
    assert!(h.starts_with("HTTP/1.0 200 OK\r\n"), "{h}");
    assert_eq!(body(&h), "ok\n");
    let h = get(metrics, "HEAD /healthz HTTP/1.0");
    assert!(
        h.starts_with("HTTP/1.0 200 OK\r\n") && body(&h).is_empty(),
        "{h}"
    );
    assert!(get(metrics, "GET /nope HTTP/1.0").starts_with("HTTP/1.0 404 "));
    assert!(get(metrics, "DELETE /healthz HTTP/1.0").starts_with("HTTP/1.0 405 "));

    // One proxied connection: bytes through, then closed.
    {
        let mut c = connect(vip);
        assert_eq!(read_line(&mut c), "web1");
        c.write_all(b"ping\n").unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping\n");
    }
    let vs = r#"{virtual_server="web"}"#;
    let text = wait_for(
        "the connection's end in the duration histogram",
        Duration::from_secs(10),
        || {
            let a = get(metrics, "GET /metrics HTTP/1.0");
            let t = body(&a).to_string();
            let n = value(
                &t,
                &format!("lbd_virtual_server_connection_duration_seconds_count{vs}"),
            )?;
            (n >= 1.0).then_some(t)
        },
    );
    spanlb_control::http::check_openmetrics(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    let connects = value(
        &text,
        &format!("lbd_virtual_server_connect_duration_seconds_count{vs}"),
    );
    assert_eq!(connects, Some(1.0), "{text}");
    assert_eq!(
        value(
            &text,
            r#"lbd_virtual_server_connect_duration_seconds_bucket{le="+Inf",virtual_server="web"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        value(&text, &format!("lbd_virtual_server_in_bytes_total{vs}")).unwrap_or(0.0) >= 5.0,
        "{text}"
    );
    assert!(
        value(&text, &format!("lbd_virtual_server_out_bytes_total{vs}")).unwrap_or(0.0) >= 10.0,
        "{text}"
    );
    for want in [
        "lbd_build_info{version=\"",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(text.lines().any(|l| l.starts_with(want)), "{want}:\n{text}");
    }

    // SIGTERM with a connection open: lbd drains, and says so on /healthz.
    let mut held = connect(vip);
    assert_eq!(read_line(&mut held), "web1");
    lbd.signal(libc::SIGTERM);
    let h = wait_for(
        "/healthz 503 while draining",
        Duration::from_secs(10),
        || {
            let h = get(metrics, "GET /healthz HTTP/1.0");
            h.starts_with("HTTP/1.0 503 ").then_some(h)
        },
    );
    assert!(body(&h).starts_with("not ready: draining"), "{h}");
    drop(held);
    drop(lbd);
}
