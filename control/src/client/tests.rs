use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use super::*;
use crate::bgpd::{self, Announced, RouteConfig};
use crate::framing::{self, Limits};
use crate::lbd;

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn sock_path() -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("spanlb-control-{}-{n}.sock", std::process::id()))
}

/// A bgpd stand-in on its own thread and runtime: announces count, everything else is
/// refused. Serves until the test process ends.
fn tiny_bgpd() -> PathBuf {
    let path = sock_path();
    let _ = std::fs::remove_file(&path);
    let std_listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            std_listener.set_nonblocking(true).unwrap();
            let l = tokio::net::UnixListener::from_std(std_listener).unwrap();
            loop {
                let (s, _) = l.accept().await.unwrap();
                let limits = Limits {
                    max_line: bgpd::MAX_LINE,
                    idle: None,
                    partial: None,
                    write_timeout: framing::WRITE_TIMEOUT,
                };
                tokio::spawn(framing::serve(s, limits, |req| async move {
                    match req {
                        bgpd::Request::Announce { routes, .. } => bgpd::Response::ok(&Announced {
                            announced: routes.len(),
                        }),
                        other => bgpd::Response::failure(format!("not here: {other:?}")),
                    }
                }));
            }
        });
    });
    path
}

/// A one-connection server that reads a line and answers `answer` verbatim (nothing when
/// empty: it just closes).
fn raw_server(answer: &'static str) -> PathBuf {
    let path = sock_path();
    let _ = std::fs::remove_file(&path);
    let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&s).read_line(&mut line).unwrap();
        (&s).write_all(answer.as_bytes()).unwrap();
    });
    path
}

fn announce(n: usize) -> bgpd::Request {
    bgpd::Request::Announce {
        persistent: false,
        routes: (0..n)
            .map(|i| RouteConfig::new(format!("10.0.{i}.0/24").parse().unwrap()))
            .collect(),
    }
}

#[test]
fn blocking_client_sends_typed_requests_and_reads_typed_answers() {
    let path = tiny_bgpd();
    let mut c = Client::<bgpd::Request>::connect(&path).unwrap();
    let r = c.call(&announce(3)).unwrap();
    assert_eq!(
        r.clone().data::<Announced>(),
        Ok(Announced { announced: 3 })
    );
    assert_eq!(
        serde_json::to_value(&r).unwrap(),
        json!({"ok": true, "announced": 3})
    );
    // The same connection serves on; an error answer is Daemon.
    match c.request(&bgpd::Request::Routes) {
        Err(Error::Daemon(e)) => assert_eq!(e, "not here: Routes"),
        other => panic!("{other:?}"),
    }
    let data = c.request(&announce(1)).unwrap();
    assert_eq!(data["announced"], 1);
    // A malformed line gets the server's error and the connection stays usable.
    let r = c.call_line(b"{\"cmd\":\"frobnicate\"}").unwrap();
    assert!(
        matches!(&r, bgpd::Response::Err(e) if e.contains("unknown variant `frobnicate`")),
        "{r:?}"
    );
    assert!(c.call(&announce(0)).is_ok());
}

#[test]
fn blocking_client_failures_name_the_daemon_and_socket() {
    let path = sock_path();
    let e = Client::<lbd::Request>::connect(&path).err().unwrap();
    assert!(matches!(e, Error::Connect { .. }));
    assert!(
        e.to_string()
            .starts_with(&format!("cannot reach lbd at {}: ", path.display())),
        "{e}"
    );
    // What a status request gets from a server that answers `answer`.
    let status = |answer: &'static str| {
        let path = raw_server(answer);
        let mut c = Client::<lbd::Request>::connect(&path).unwrap();
        (
            path.display().to_string(),
            c.request(&lbd::Request::Status).unwrap_err(),
        )
    };
    let (at, e) = status("");
    assert_eq!(
        e.to_string(),
        format!("lbd at {at} closed the connection without answering")
    );
    let (at, e) = status("<html>\n");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("lbd at {at} answered nonsense: ")),
        "{e}"
    );
    let (_, e) = status("{\"ok\":false,\"error\":\"no pool named `x`\"}\n");
    assert!(e.is_daemon());
    assert_eq!(e.to_string(), "no pool named `x`");
}

#[test]
fn blocking_read_timeout_is_an_io_error() {
    let path = sock_path();
    let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    // Accepted by the kernel's backlog, never answered.
    let mut c = Client::<lbd::Request>::connect(&path).unwrap();
    c.set_timeouts(Some(Duration::from_millis(100)), None)
        .unwrap();
    let e = c.call(&lbd::Request::Status).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
}

#[tokio::test]
async fn async_client_calls_times_out_and_notices_a_close() {
    let path = tiny_bgpd();
    let mut c = AsyncClient::<bgpd::Request>::connect(&path).await.unwrap();
    assert!(!c.closed());
    let r = c.call(&announce(2)).await.unwrap();
    assert_eq!(r.data::<Announced>(), Ok(Announced { announced: 2 }));
    assert!(matches!(
        c.request(&bgpd::Request::Neighbors).await,
        Err(Error::Daemon(_))
    ));
    assert!(!c.closed());

    // A server that never answers: the exchange's deadline.
    let silent = sock_path();
    let l = tokio::net::UnixListener::bind(&silent).unwrap();
    let mut c = AsyncClient::<bgpd::Request>::connect(&silent)
        .await
        .unwrap()
        .with_timeout(Duration::from_millis(100));
    let (held, _) = l.accept().await.unwrap();
    let e = c.call(&bgpd::Request::Routes).await.unwrap_err();
    assert_eq!(e.to_string(), "bgpd did not answer within 100ms");
    // It hangs up: seen between requests.
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !c.closed() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let e = AsyncClient::<bgpd::Request>::connect(sock_path())
        .await
        .err()
        .unwrap();
    assert!(e.to_string().starts_with("cannot reach bgpd at "), "{e}");
}
