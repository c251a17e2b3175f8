//! The daemons' HTTP endpoint: `/metrics` and `/healthz`, the same for lbd and bgpd.
//!
//! Built on hyper 1 (HTTP/1.1 server only, no TLS) through hyper-util's tokio adapter, rather
//! than a hand-written responder: request parsing, keep-alive, `HEAD` and malformed input are
//! the library's, and the daemons only say what to answer.
//!
//! | request | answer |
//! |---|---|
//! | `GET /metrics`, `HEAD /metrics` | 200, the OpenMetrics text ([`CONTENT_TYPE`]) |
//! | `GET /healthz`, `HEAD /healthz` | 200 `ok` when ready; 503 and a one-line reason otherwise |
//! | another method on those paths | 405 with `Allow: GET, HEAD` |
//! | any other path | 404 |
//!
//! A query string is ignored. The endpoint does not trust its clients: at most
//! [`Limits::max_connections`] connections are served at once (more are closed unanswered), a
//! request head must arrive within [`Limits::header_timeout`] and fit in [`Limits::max_head`]
//! bytes (hyper answers 431 otherwise), a connection lives [`Limits::connection_lifetime`] at
//! most, and request bodies are never read. An error on one connection ends that connection only.
//!
//! [`ProcessCollector`] adds the usual `process_*` metrics (read from `/proc/self`) and
//! [`build_info`] a `build_info` gauge, for both daemons.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE as CT};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The content type prometheus-client's text encoder writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What a daemon answers.
pub trait Endpoint: Send + Sync + 'static {
    /// The OpenMetrics text, `# EOF` included.
    fn metrics(&self) -> String;
    /// `Ok` when ready to take traffic; otherwise why not, in one line.
    fn ready(&self) -> Result<(), String>;
}

/// Bounds on what clients may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more are closed unanswered.
    pub max_connections: usize,
    /// Time a client has to send a request head (each one, on a kept-alive connection).
    pub header_timeout: Duration,
    /// Longest request head, in bytes (at least 8192: hyper's minimum buffer).
    pub max_head: usize,
    /// Longest a connection is kept, requests included.
    pub connection_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            header_timeout: Duration::from_secs(5),
            max_head: 8192,
            connection_lifetime: Duration::from_secs(60),
        }
    }
}

/// Serves `endpoint` on `listener` with the default [`Limits`] until the task is dropped.
pub async fn serve(listener: TcpListener, endpoint: Arc<dyn Endpoint>) {
    serve_with(listener, endpoint, Limits::default()).await
}

/// Serves `endpoint` on `listener` within `limits` until the task is dropped.
pub async fn serve_with(listener: TcpListener, endpoint: Arc<dyn Endpoint>, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_head.max(8192))
        .max_headers(64);
    loop {
        let sock = match listener.accept().await {
            Ok((s, _)) => s,
            Err(_) => {
                // EMFILE and the like: wait for descriptors rather than spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // dropped: closed unanswered
        };
        let endpoint = endpoint.clone();
        let conn = builder.serve_connection(
            TokioIo::new(sock),
            hyper::service::service_fn(move |req| {
                let endpoint = endpoint.clone();
                async move { Ok::<_, Infallible>(answer(&req, endpoint.as_ref())) }
            }),
        );
        let lifetime = limits.connection_lifetime;
        tokio::spawn(async move {
            // An error (a malformed request, a client gone) ends this connection only.
            let _ = tokio::time::timeout(lifetime, conn).await;
            drop(permit);
        });
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CT, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// The answer to one request (hyper leaves the body out for `HEAD`).
pub fn answer(req: &Request<Incoming>, endpoint: &dyn Endpoint) -> Response<Full<Bytes>> {
    route(req.method(), req.uri().path(), endpoint)
}

fn route(method: &Method, path: &str, endpoint: &dyn Endpoint) -> Response<Full<Bytes>> {
    if path != "/metrics" && path != "/healthz" {
        return text(
            StatusCode::NOT_FOUND,
            "not found: this endpoint serves /metrics and /healthz\n".into(),
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} not allowed: GET or HEAD\n"),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == "/metrics" {
        let mut r = Response::new(Full::new(Bytes::from(endpoint.metrics())));
        r.headers_mut()
            .insert(CT, HeaderValue::from_static(CONTENT_TYPE));
        return r;
    }
    match endpoint.ready() {
        Ok(()) => text(StatusCode::OK, "ok\n".into()),
        Err(why) => {
            let line = why.lines().next().unwrap_or_default().to_string();
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {line}\n"),
            )
        }
    }
}

/// Writes a `build_info` gauge (value 1) with labels `version`, `commit` (the environment
/// variable `SPANLB_GIT_COMMIT` at build time, `unknown` without it) and `rustc` (the
/// compiler's version, found by build.rs, or `SPANLB_RUSTC_VERSION` when set).
pub fn build_info(enc: &mut DescriptorEncoder, version: &str) -> fmt::Result {
    let labels = [
        ("version", version.to_string()),
        (
            "commit",
            option_env!("SPANLB_GIT_COMMIT")
                .unwrap_or("unknown")
                .to_string(),
        ),
        (
            "rustc",
            option_env!("SPANLB_RUSTC_VERSION")
                .unwrap_or("unknown")
                .to_string(),
        ),
    ];
    let mut m = enc.encode_descriptor(
        "build_info",
        "Build of this daemon (value 1): version, git commit, rustc",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(1i64).encode(m.encode_family(&labels)?)
}

/// What `/proc/self` says of this process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessFigures {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    pub start_time_seconds: f64,
}

/// Reads [`ProcessFigures`] from `/proc/self/stat`, `/proc/stat` (boot time), `/proc/self/fd`
/// and `RLIMIT_NOFILE`. `None` when `/proc` cannot be read.
pub fn process_figures() -> Option<ProcessFigures> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // rest starts at field 3 (state): field n is f[n - 3].
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())?;
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur
    } else {
        0
    };
    Some(ProcessFigures {
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        virtual_bytes: field(23)?,
        resident_bytes: field(24)? * page,
        open_fds,
        max_fds,
        start_time_seconds: boot as f64 + field(22)? as f64 / ticks,
    })
}

/// The Prometheus client libraries' process metrics: `process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
/// `process_max_fds`, `process_start_time_seconds`. Register it on a registry without prefix.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let Some(p) = process_figures() else {
            return Ok(());
        };
        let c = ConstCounter::new(p.cpu_seconds);
        c.encode(enc.encode_descriptor(
            "process_cpu",
            "User and system CPU time spent, in seconds",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?)?;
        let gauges: [(&str, &str, Option<Unit>, f64); 5] = [
            (
                "process_resident_memory",
                "Resident memory size, in bytes",
                Some(Unit::Bytes),
                p.resident_bytes as f64,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size, in bytes",
                Some(Unit::Bytes),
                p.virtual_bytes as f64,
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                None,
                p.open_fds as f64,
            ),
            (
                "process_max_fds",
                "Most file descriptors the process may open (RLIMIT_NOFILE, soft)",
                None,
                p.max_fds as f64,
            ),
            (
                "process_start_time",
                "When the process started, in Unix time",
                Some(Unit::Seconds),
                p.start_time_seconds,
            ),
        ];
        for (name, help, unit, v) in gauges {
            let g = ConstGauge::new(v);
            g.encode(enc.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?)?;
        }
        Ok(())
    }
}

/// Checks `text` against the OpenMetrics text format strictly enough for the daemons' tests:
/// `# EOF` last and once; `# TYPE`/`# HELP`/`# UNIT` before a family's samples, each family
/// once, a unit a suffix of its family's name; every sample of a declared family with a suffix
/// its type allows (`_total`/`_created` counters, `_bucket`/`_count`/`_sum`/`_created`
/// histograms, `_info` infos, none for gauges, state sets and unknowns), label values quoted,
/// a numeric value; histogram buckets cumulative with `le="+Inf"` equal to `_count`.
pub fn check_openmetrics(text: &str) -> Result<(), String> {
    use std::collections::{BTreeMap, HashSet};
    let body = text
        .strip_suffix("# EOF\n")
        .ok_or("the text does not end with `# EOF`")?;
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut done: HashSet<String> = HashSet::new();
    let mut current = String::new();
    // A histogram's series: the last bucket seen, the +Inf bucket, the count.
    type Series = (f64, Option<f64>, Option<f64>);
    // Keyed by family and labels without `le`.
    let mut hist: BTreeMap<(String, String), Series> = BTreeMap::new();
    for (n, line) in body.lines().enumerate() {
        let err = |why: &str| format!("line {}: {why}: `{line}`", n + 1);
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kind, name, rest) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            if name != current {
                if done.contains(name) {
                    return Err(err("family declared twice"));
                }
                if !current.is_empty() {
                    done.insert(std::mem::take(&mut current));
                }
                current = name.to_string();
            }
            match kind {
                "TYPE" => {
                    let ok = [
                        "counter",
                        "gauge",
                        "histogram",
                        "gaugehistogram",
                        "stateset",
                        "info",
                        "summary",
                        "unknown",
                    ];
                    if !ok.contains(&rest) {
                        return Err(err("unknown type"));
                    }
                    if types.insert(name.to_string(), rest.to_string()).is_some() {
                        return Err(err("TYPE twice"));
                    }
                }
                "HELP" => {}
                "UNIT" => {
                    if rest.is_empty() || !name.ends_with(&format!("_{rest}")) {
                        return Err(err("the family name does not end with its unit"));
                    }
                }
                _ => return Err(err("unknown metadata")),
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            return Err(err("stray comment or empty line"));
        }
        let (name_labels, value) = line.rsplit_once(' ').ok_or_else(|| err("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| err("value not a number"))?,
        };
        let (name, labels) = match name_labels.split_once('{') {
            Some((n, l)) => (
                n,
                l.strip_suffix('}')
                    .ok_or_else(|| err("unterminated labels"))?,
            ),
            None => (name_labels, ""),
        };
        for pair in split_labels(labels) {
            let (k, v) = pair.split_once('=').ok_or_else(|| err("label without ="))?;
            if k.is_empty() || !(v.len() >= 2 && v.starts_with('"') && v.ends_with('"')) {
                return Err(err("label value not quoted"));
            }
        }
        let ty = types
            .get(&current)
            .ok_or_else(|| err("sample outside a declared family"))?;
        let suffix = name
            .strip_prefix(current.as_str())
            .ok_or_else(|| err("sample of another family"))?;
        let allowed: &[&str] = match ty.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" | "gaugehistogram" => &["_bucket", "_count", "_sum", "_created"],
            "info" => &["_info"],
            "summary" => &["_count", "_sum", "_created", ""],
            _ => &[""],
        };
        if !allowed.contains(&suffix) {
            return Err(err("suffix not allowed for the family's type"));
        }
        if ty == "histogram" {
            let others: Vec<&str> = split_labels(labels)
                .filter(|p| !p.starts_with("le="))
                .collect();
            let key = (current.clone(), others.join(","));
            let e = hist.entry(key).or_insert((0.0, None, None));
            match suffix {
                "_bucket" => {
                    let le = split_labels(labels)
                        .find_map(|p| p.strip_prefix("le="))
                        .ok_or_else(|| err("bucket without le"))?;
                    if value < e.0 {
                        return Err(err("buckets not cumulative"));
                    }
                    e.0 = value;
                    if le == "\"+Inf\"" {
                        e.1 = Some(value);
                    }
                }
                "_count" => e.2 = Some(value),
                _ => {}
            }
        }
    }
    for ((family, labels), (_, inf, count)) in hist {
        if inf.is_none() || inf != count {
            return Err(format!(
                "histogram {family}{{{labels}}}: +Inf bucket {inf:?} and count {count:?} differ"
            ));
        }
    }
    Ok(())
}

/// `a="x",b="y,z"` → `a="x"`, `b="y,z"` (commas inside quotes kept).
fn split_labels(labels: &str) -> impl Iterator<Item = &str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&labels[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < labels.len() {
        out.push(&labels[start..]);
    }
    out.into_iter()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    struct Fake {
        ready: AtomicBool,
    }

    impl Endpoint for Fake {
        fn metrics(&self) -> String {
            "# TYPE x gauge\nx 1\n# EOF\n".into()
        }
        fn ready(&self) -> Result<(), String> {
            if self.ready.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("listener web not bound\nsecond line dropped".into())
            }
        }
    }

    async fn start(limits: Limits) -> (SocketAddr, Arc<Fake>, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let fake = Arc::new(Fake {
            ready: AtomicBool::new(false),
        });
        let t = tokio::spawn(serve_with(l, fake.clone(), limits));
        (addr, fake, t)
    }

    /// One request on its own connection (`Connection: close`); the whole answer.
    async fn req(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    fn get(method: &str, path: &str) -> Vec<u8> {
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
    }

    #[tokio::test]
    async fn routes_methods_and_head() {
        let (addr, fake, t) = start(Limits::default()).await;
        let r = req(addr, &get("GET", "/metrics?x=1")).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r
            .to_ascii_lowercase()
            .contains(&format!("content-type: {CONTENT_TYPE}")));
        assert!(r.ends_with("x 1\n# EOF\n"), "{r}");

        let r = req(addr, &get("HEAD", "/metrics")).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n"), "HEAD has no body: {r}");

        let r = req(addr, &get("GET", "/healthz")).await;
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
        assert!(
            r.ends_with("\r\n\r\nnot ready: listener web not bound\n"),
            "{r}"
        );
        fake.ready.store(true, Ordering::Relaxed);
        let r = req(addr, &get("GET", "/healthz")).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nok\n"), "{r}");

        for path in ["/", "/metricsx", "/healthz/", "/favicon.ico"] {
            let r = req(addr, &get("GET", path)).await;
            assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{path}: {r}");
        }
        for method in ["POST", "PUT", "DELETE"] {
            let r = req(addr, &get(method, "/metrics")).await;
            assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{r}");
            assert!(r.to_ascii_lowercase().contains("allow: get, head"), "{r}");
        }
        // HTTP/1.0 and keep-alive: two requests on one connection.
        let r = req(addr, b"GET /healthz HTTP/1.0\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.0 200 OK\r\n"), "{r}");
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
        // Garbage is answered 400 (or closed), and the server goes on.
        let r = req(addr, b"garbage\r\n\r\n").await;
        assert!(r.is_empty() || r.starts_with("HTTP/1.1 400"), "{r}");
        assert!(req(addr, &get("GET", "/healthz"))
            .await
            .starts_with("HTTP/1.1 200"));
        t.abort();
    }

    #[tokio::test]
    async fn oversized_and_slow_requests_are_cut_off() {
        let limits = Limits {
            header_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let (addr, _, t) = start(limits).await;
        let mut big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 64 * 1024));
        big.extend_from_slice(b"\r\n\r\n");
        let r = req(addr, &big).await;
        assert!(
            r.is_empty() || r.starts_with("HTTP/1.1 431"),
            "an oversized head gets no metrics: {r}"
        );
        // A client that never finishes its head is closed after header_timeout.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "closed after the header timeout");
        assert!(!String::from_utf8_lossy(&out).contains("200 OK"));
        t.abort();
    }

    #[tokio::test]
    async fn connections_over_the_limit_are_closed_unanswered() {
        let limits = Limits {
            max_connections: 2,
            ..Limits::default()
        };
        let (addr, _, t) = start(limits).await;
        // Two idle connections hold both slots (they sent nothing yet).
        let a = TcpStream::connect(addr).await.unwrap();
        let b = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let r = req(addr, &get("GET", "/healthz")).await;
        assert!(r.is_empty(), "third connection closed unanswered: {r}");
        drop((a, b));
        // Slots come back once those connections end.
        let mut ok = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if !req(addr, &get("GET", "/healthz")).await.is_empty() {
                ok = true;
                break;
            }
        }
        assert!(ok, "served again once the slots were free");
        t.abort();
    }

    #[test]
    fn the_checker_knows_good_from_bad() {
        let good = "# TYPE a counter\n# HELP a A.\na_total{x=\"1,2\"} 3\n\
                    # TYPE b_seconds histogram\n# UNIT b_seconds seconds\n\
                    b_seconds_sum 0.5\nb_seconds_count 2\nb_seconds_bucket{le=\"1.0\"} 1\n\
                    b_seconds_bucket{le=\"+Inf\"} 2\n# TYPE c gauge\nc 1.5\n# EOF\n";
        assert_eq!(check_openmetrics(good), Ok(()));
        for bad in [
            good.replace("# EOF\n", ""),
            good.replace("a_total", "a"),
            good.replace("# UNIT b_seconds seconds", "# UNIT b_seconds bytes"),
            good.replace("b_seconds_count 2", "b_seconds_count 3"),
            good.replace("c 1.5", "c x"),
            good.replace("# TYPE c gauge\n", ""),
            good.replace("# TYPE c gauge\nc 1.5\n", "# TYPE a gauge\n"),
        ] {
            assert!(check_openmetrics(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn process_figures_are_read() {
        let p = process_figures().expect("/proc is readable");
        assert!(p.resident_bytes > 0 && p.virtual_bytes >= p.resident_bytes);
        assert!(p.open_fds > 0 && p.max_fds >= p.open_fds);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(p.start_time_seconds > now - 3600.0 && p.start_time_seconds <= now + 1.0);

        let mut r = prometheus_client::registry::Registry::default();
        r.register_collector(Box::new(ProcessCollector));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        check_openmetrics(&out).unwrap();
        let mut enc_out = String::new();
        struct B;
        impl std::fmt::Debug for B {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("B")
            }
        }
        impl Collector for B {
            fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
                build_info(&mut enc, "9.9.9")
            }
        }
        let mut b = prometheus_client::registry::Registry::with_prefix("x");
        b.register_collector(Box::new(B));
        prometheus_client::encoding::text::encode(&mut enc_out, &b).unwrap();
        check_openmetrics(&enc_out).unwrap();
        let line = enc_out
            .lines()
            .find(|l| l.starts_with("x_build_info{"))
            .unwrap_or_else(|| panic!("{enc_out}"));
        assert!(
            line.starts_with("x_build_info{version=\"9.9.9\",commit=\""),
            "{line}"
        );
        assert!(
            !line.contains("rustc=\"unknown\""),
            "build.rs gives rustc: {line}"
        );
        assert!(line.ends_with("} 1"), "{line}");
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(out.lines().any(|l| l.starts_with(name)), "{name} in {out}");
        }
    }
}
