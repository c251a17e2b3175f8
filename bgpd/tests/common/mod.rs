//! Speakers on loopback for the integration tests: bgpd run in-process from a configuration
//! file, and its control socket.

#![allow(dead_code)]

pub mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bgpd::config::Config;
use bgpd::control::Request;
use serde_json::Value;
use spanlb_control::client::AsyncClient;

/// The `bgpd` binary as a child process: killed (after a SIGCONT, in case it was stopped)
/// and reaped on drop.
pub struct Daemon(pub std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    /// `bgpd --config f`, once its control socket `sock` exists (10 s at most).
    pub fn start(f: &Path, sock: &Path) -> Daemon {
        let _ = std::fs::remove_file(sock);
        let d = Daemon(
            std::process::Command::new(env!("CARGO_BIN_EXE_bgpd"))
                .arg("--config")
                .arg(f)
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "bgpd did not create its control socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    pub fn signal(&self, sig: libc::c_int) -> bool {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as libc::pid_t, sig) == 0 }
    }

    /// Whether it has ended.
    pub fn exited(&mut self) -> bool {
        self.0.try_wait().unwrap().is_some()
    }
}

/// VmRSS of this process (an in-process bgpd runs in it), kB.
pub fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A `[[neighbor]]` table that connects from `local` to `address`:`port` (retrying every
/// second), followed by `extra` lines of the same table.
pub fn neighbor_to(address: &str, remote_as: u32, port: u16, local: &str, extra: &str) -> String {
    format!(
        "[[neighbor]]\naddress = \"{address}\"\nremote_as = {remote_as}\nport = {port}\n\
         local_address = \"{local}\"\nconnect_retry = 1\n{extra}"
    )
}

pub struct Speaker {
    pub sock: PathBuf,
    /// The Prometheus endpoint, when started with [`start_with_metrics`].
    pub metrics: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Speaker {
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }

    /// The daemon has not returned (nor panicked).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

/// A speaker listening on `ip`:0 with `cfg`, read from the file `DIR/NAME.toml`.
pub async fn start(cfg: &str, dir: &Path, name: &str, ip: &str) -> (Speaker, u16) {
    launch(cfg, dir, name, ip, false).await
}

/// [`start`], with a Prometheus endpoint on `ip`:0 as well ([`Speaker::metrics`]).
pub async fn start_with_metrics(cfg: &str, dir: &Path, name: &str, ip: &str) -> (Speaker, u16) {
    launch(cfg, dir, name, ip, true).await
}

async fn launch(cfg: &str, dir: &Path, name: &str, ip: &str, metrics: bool) -> (Speaker, u16) {
    let sock = dir.join(format!("{name}.sock"));
    let path = dir.join(format!("{name}.toml"));
    let text = format!("control_socket = \"{}\"\n{cfg}", sock.display());
    std::fs::write(&path, &text).unwrap();
    let config = Config::load(&path).unwrap();
    let listener = bgpd::sockopt::listener(format!("{ip}:0").parse().unwrap()).unwrap();
    let port = listener.local_addr().unwrap().port();
    let control = bgpd::daemon::bind_control(&sock).unwrap();
    let metrics_listener = if metrics {
        Some(
            tokio::net::TcpListener::bind(format!("{ip}:0"))
                .await
                .unwrap(),
        )
    } else {
        None
    };
    let metrics = metrics_listener.as_ref().map(|l| l.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        bgpd::daemon::run_from(
            config,
            Some(path),
            vec![listener],
            control,
            metrics_listener,
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

pub async fn call(sock: &Path, req: &Request) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut c = loop {
        match AsyncClient::<Request>::connect(sock).await {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => panic!("control socket: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    serde_json::to_value(c.call(req).await.unwrap()).unwrap()
}

/// Waits (20 s at most) until `sock`'s first neighbor satisfies `f`.
pub async fn wait_neighbor(what: &str, sock: &Path, f: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = call(sock, &Request::Neighbors).await;
        if f(&v["neighbors"][0]) {
            return v["neighbors"][0].clone();
        }
        assert!(Instant::now() < deadline, "timed out: {what}; last: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The metrics text of the Prometheus endpoint at `addr`.
pub async fn scrape(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .expect("the metrics endpoint answers within 5 s")
        .unwrap();
    assert!(out.starts_with("HTTP/1.0 200 OK"), "{out}");
    out
}

/// The value of the sample `series` (name and labels, as printed) in `text`; 0 when absent
/// (a counter not yet created).
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}
