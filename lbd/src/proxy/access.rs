//! The access log: one line per proxied TCP connection or UDP flow of a virtual server with
//! `access_log = true` (HAProxy's `tcplog`, BIG-IP's request logging): client, VIP, member,
//! SNAT source, bytes each way, duration and how it ended.
//!
//! - **Where.** Without `device.access_log_file`, each line is an INFO event of the log's
//!   `access` target (key=value fields, wherever the log goes). With it, JSON lines appended to
//!   that file by a writer thread of its own; the file is reopened when it was renamed or
//!   removed (logrotate without `copytruncate` works) and when the path changes on reload.
//! - **Sampling.** `access_log_sample` (0 < r ≤ 1) logs that share of the connections, evenly
//!   spread (a counter per virtual server, no randomness): 0.1 is every tenth connection.
//! - **Never in the way.** The data path hands a line to a bounded queue
//!   ([`QUEUE`] lines) without waiting; when the writer cannot keep up the line is dropped and
//!   counted (`lbd_access_log_dropped_total`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use serde::Serialize;

/// Lines queued for the file writer at most.
pub const QUEUE: usize = 65_536;
/// How often the writer checks whether the file was rotated away.
const REOPEN_CHECK: Duration = Duration::from_secs(2);

/// How a connection ended, as the access log says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum End {
    /// Both sides closed (FIN).
    Closed,
    /// The idle timeout: both sides reset.
    Idle,
    /// A read or write failed (a reset by either side, most often): both sides reset.
    Error,
    /// The virtual server's connection limit: reset.
    Limit,
    /// No available member, or every member tried failed: reset.
    NoMember,
    /// This host could not connect (descriptors, ports): reset.
    LocalError,
    /// The traffic group moved away; the connection lives on on the new owner.
    Released,
    /// lbd or the virtual server's listener stopped (UDP flows).
    Stopped,
}

impl End {
    pub fn name(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Idle => "idle",
            End::Error => "error",
            End::Limit => "limit",
            End::NoMember => "no-member",
            End::LocalError => "local-error",
            End::Released => "released",
            End::Stopped => "stopped",
        }
    }
}

/// What the access log says of one connection; filled in as the connection goes.
#[derive(Debug, Clone)]
pub struct Entry {
    pub started: Instant,
    pub client: SocketAddr,
    pub vip: SocketAddr,
    pub member: Option<SocketAddr>,
    pub snat: Option<SocketAddr>,
    /// Client → member.
    pub bytes_up: u64,
    /// Member → client.
    pub bytes_down: u64,
    pub end: End,
}

impl Entry {
    pub fn new(client: SocketAddr, vip: SocketAddr) -> Entry {
        Entry {
            started: Instant::now(),
            client,
            vip,
            member: None,
            snat: None,
            bytes_up: 0,
            bytes_down: 0,
            end: End::Error,
        }
    }
}

/// One line of the file.
#[derive(Serialize)]
struct Line<'a> {
    /// Unix time of the connection's end, seconds with milliseconds.
    time: f64,
    virtual_server: &'a str,
    client: SocketAddr,
    vip: SocketAddr,
    member: Option<SocketAddr>,
    snat: Option<SocketAddr>,
    bytes_up: u64,
    bytes_down: u64,
    duration_ms: u64,
    end: End,
}

/// The file writer: its path and the queue to its thread.
struct Sink {
    path: PathBuf,
    tx: SyncSender<String>,
}

/// The access log of the data path (see the module documentation).
#[derive(Default)]
pub struct AccessLog {
    sink: ArcSwapOption<Sink>,
    /// Lines written (to the log or queued for the file).
    pub logged: AtomicU64,
    /// Lines dropped: the file writer's queue was full, or it could not write.
    pub dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("logged", &self.logged)
            .finish_non_exhaustive()
    }
}

/// Whether the `n`-th connection (from 1) is logged at `rate`: `floor(n·r)` moved.
pub fn sampled(n: u64, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    let r = rate.max(0.0);
    (n as f64 * r).floor() > ((n - 1) as f64 * r).floor()
}

impl AccessLog {
    /// Logs `e` for virtual server `vs` (the caller checked `access_log` and the sample),
    /// to `file` when one is configured, else to the log.
    pub fn log(&self, vs: &str, file: Option<&Path>, e: &Entry) {
        let duration_ms = u64::try_from(e.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let Some(file) = file else {
            tracing::info!(target: "access", virtual_server = vs, client = %e.client,
                vip = %e.vip, member = ?e.member, snat = ?e.snat, bytes_up = e.bytes_up,
                bytes_down = e.bytes_down, duration_ms, end = e.end.name(), "connection");
            self.logged.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_millis() as f64 / 1000.0);
        let line = Line {
            time,
            virtual_server: vs,
            client: e.client,
            vip: e.vip,
            member: e.member,
            snat: e.snat,
            bytes_up: e.bytes_up,
            bytes_down: e.bytes_down,
            duration_ms,
            end: e.end,
        };
        let Ok(text) = serde_json::to_string(&line) else {
            return;
        };
        let sink = match self.sink.load_full() {
            Some(s) if s.path == file => s,
            _ => {
                let s = Arc::new(self.spawn_writer(file));
                self.sink.store(Some(s.clone()));
                s
            }
        };
        match sink.tx.try_send(text) {
            Ok(()) => {
                self.logged.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Starts the writer thread for `path` (it ends when its queue's sender is dropped: when
    /// the path changes, the old one drains and ends).
    fn spawn_writer(&self, path: &Path) -> Sink {
        let (tx, rx) = sync_channel::<String>(QUEUE);
        let dropped = self.dropped.clone();
        let p = path.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("lbd-access-log".into())
            .spawn(move || write_lines(&p, &rx, &dropped));
        if let Err(e) = spawned {
            tracing::warn!(path = %path.display(), "access log: no writer thread: {e}");
        }
        Sink {
            path: path.to_path_buf(),
            tx,
        }
    }
}

/// The writer thread: appends each line; reopens the file when it was rotated away.
fn write_lines(path: &Path, rx: &std::sync::mpsc::Receiver<String>, dropped: &AtomicU64) {
    use std::os::unix::fs::MetadataExt;
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(std::io::BufWriter::new)
    };
    let mut file = match open() {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(path = %path.display(), "access log: cannot open: {e}");
            None
        }
    };
    let mut checked = Instant::now();
    let mut warned = false;
    loop {
        let line = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(l) => Some(l),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(f) = file.as_mut() {
                    let _ = f.flush();
                }
                return;
            }
        };
        if checked.elapsed() >= REOPEN_CHECK || file.is_none() {
            checked = Instant::now();
            let same = file.as_ref().is_some_and(|f| {
                match (f.get_ref().metadata(), std::fs::metadata(path)) {
                    (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                    _ => false,
                }
            });
            if !same {
                if let Some(f) = file.as_mut() {
                    let _ = f.flush();
                }
                file = open().ok();
            }
        }
        let Some(line) = line else {
            if let Some(f) = file.as_mut() {
                let _ = f.flush();
            }
            continue;
        };
        // This line and whatever else is queued now, then one flush.
        let mut lines = vec![line];
        while lines.len() < 4096 {
            match rx.try_recv() {
                Ok(l) => lines.push(l),
                Err(_) => break,
            }
        }
        let Some(f) = file.as_mut() else {
            dropped.fetch_add(lines.len() as u64, Ordering::Relaxed);
            continue;
        };
        let mut failed = 0u64;
        let mut first_error = None;
        for l in &lines {
            if let Err(e) = f.write_all(l.as_bytes()).and_then(|()| f.write_all(b"\n")) {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
        if let Err(e) = f.flush() {
            failed = lines.len() as u64;
            first_error.get_or_insert(e);
        }
        if failed > 0 {
            dropped.fetch_add(failed, Ordering::Relaxed);
            if let (false, Some(e)) = (warned, first_error) {
                warned = true;
                tracing::warn!(path = %path.display(), "access log: write failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_spreads_the_share_evenly() {
        let count = |r: f64| (1..=1000).filter(|n| sampled(*n, r)).count();
        assert_eq!(count(1.0), 1000);
        assert_eq!(count(0.1), 100);
        assert_eq!(count(0.25), 250);
        assert_eq!(count(0.001), 1);
        // Every tenth, not the first hundred.
        let tenth: Vec<u64> = (1..=30).filter(|n| sampled(*n, 0.1)).collect();
        assert_eq!(tenth, vec![10, 20, 30]);
    }

    #[test]
    fn the_file_gets_json_lines_and_is_reopened_after_a_rotation() {
        let dir = std::env::temp_dir().join(format!("lbd-access-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("access.log");
        let log = AccessLog::default();
        let mut e = Entry::new(
            "192.0.2.1:40000".parse().unwrap(),
            "30.1.1.10:80".parse().unwrap(),
        );
        e.member = Some("10.1.1.50:80".parse().unwrap());
        e.bytes_up = 6;
        e.bytes_down = 12;
        e.end = End::Closed;
        log.log("web", Some(&path), &e);
        let read = |p: &Path| {
            let until = Instant::now() + Duration::from_secs(5);
            loop {
                let t = std::fs::read_to_string(p).unwrap_or_default();
                if t.ends_with('\n') || Instant::now() > until {
                    return t;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        let text = read(&path);
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["virtual_server"], "web");
        assert_eq!(v["client"], "192.0.2.1:40000");
        assert_eq!(v["member"], "10.1.1.50:80");
        assert_eq!(v["snat"], serde_json::Value::Null);
        assert_eq!(v["bytes_up"], 6);
        assert_eq!(v["bytes_down"], 12);
        assert_eq!(v["end"], "closed");
        // logrotate: renamed away; the next lines go to a new file of the same name.
        std::fs::rename(&path, dir.join("access.log.1")).unwrap();
        std::thread::sleep(REOPEN_CHECK + Duration::from_millis(200));
        e.end = End::Idle;
        log.log("web", Some(&path), &e);
        let text = read(&path);
        assert!(text.contains("\"end\":\"idle\""), "{text}");
        assert_eq!(log.logged.load(Ordering::Relaxed), 2);
        assert_eq!(log.dropped.load(Ordering::Relaxed), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
