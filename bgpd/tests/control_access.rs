//! Issue 15 against the real `bgpd` and `bgpctl`: who may use bgpd's control socket, and what
//! a client can make bgpd hold.
//!
//! * bgpd started under umask 000: its socket is 0660 with the control group; `nobody` (uid
//!   65534, run through `setpriv`) cannot connect; in the read-only group it can list routes
//!   but not announce; in the control group it can. With the socket opened by hand (0666), the
//!   credential check still refuses it (`bgpd_control_clients_refused_total`).
//! * Three clients sending 100 MB each without a newline: each is refused after 1 MiB and
//!   closed; bgpd's peak RSS (VmHWM) grows by less than 16 MiB (it grew by ~154 MB with the
//!   64 MiB line limit).
//! * lbd's kind of client (fate sharing): a connection idle for longer than the partial-line
//!   timeout, with nothing half-sent, stays open and its routes stay; a connection with a
//!   half-sent line is closed after 10 s.
//!
//! The nobody test needs root and `setpriv` (util-linux): without them it prints
//! `skipped: <reason>` and passes, except under `CI=true`, where it fails. Its groups are
//! numeric gids no account needs to have (4711 control, 4712 read-only), handed to the client
//! by `setpriv --groups`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bgpd::control::Request;
use common::Daemon;
use spanlb_control::bgpd::{RouteConfig, MAX_LINE};
use spanlb_control::client::Client;

const NOBODY: u32 = 65534;
const CONTROL_GID: u32 = 4711;
const READONLY_GID: u32 = 4712;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bgpd-access-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn can_run_as_nobody() -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let setpriv = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if root && setpriv {
        return true;
    }
    let reason = "needs root and setpriv (util-linux) to run clients as uid 65534";
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{reason}");
    }
    println!("skipped: {reason}");
    false
}

/// bgpd on `dir/bgpd.toml` with `extra` top-level keys, started under umask `umask`.
fn start(dir: &Path, extra: &str, umask: libc::mode_t) -> (Daemon, PathBuf) {
    let sock = dir.join("bgpd.sock");
    let f = dir.join("bgpd.toml");
    std::fs::write(
        &f,
        format!(
            "router_id = \"10.0.0.1\"\nlocal_as = 65001\nlisten = []\ncontrol_socket = \"{}\"\n{extra}\n",
            sock.display()
        ),
    )
    .unwrap();
    // SAFETY: umask cannot fail; bgpd inherits it (nextest runs each test in its own process).
    let old = unsafe { libc::umask(umask) };
    let d = Daemon::start(&f, &sock);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    (d, sock)
}

fn bgpctl_as_nobody(bgpctl: &Path, sock: &Path, groups: &[u32], args: &[&str]) -> Output {
    let groups = if groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        let g: Vec<String> = groups.iter().map(u32::to_string).collect();
        format!("--groups={}", g.join(","))
    };
    Command::new("setpriv")
        .args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            groups,
        ])
        .arg(bgpctl)
        .arg("--socket")
        .arg(sock)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}; stdout: {}; stderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn routes(sock: &Path) -> String {
    let mut c = Client::<Request>::connect(sock).unwrap();
    serde_json::to_string(&c.call(&Request::Routes).unwrap()).unwrap()
}

fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn nobody_cannot_announce_even_under_umask_000() {
    if !can_run_as_nobody() {
        return;
    }
    let d = tmpdir("nobody");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_bgpd, sock) = start(
        &d,
        &format!(
            "control_group = \"{CONTROL_GID}\"\ncontrol_readonly_group = \"{READONLY_GID}\"\n\
             metrics = \"127.0.0.1:{port}\""
        ),
        0,
    );
    let md = std::fs::metadata(&sock).unwrap();
    assert_eq!(md.mode() & 0o777, 0o660, "mode set whatever the umask");
    assert_eq!(md.gid(), CONTROL_GID);
    let bgpctl = d.join("bgpctl");
    std::fs::copy(env!("CARGO_BIN_EXE_bgpctl"), &bgpctl).unwrap();
    std::fs::set_permissions(&bgpctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let announce = ["announce", "10.9.9.0/24"];

    let o = bgpctl_as_nobody(&bgpctl, &sock, &[], &announce);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("ermission denied"), "{}", text(&o));

    let o = bgpctl_as_nobody(&bgpctl, &sock, &[READONLY_GID], &["routes"]);
    assert!(o.status.success(), "{}", text(&o));
    for args in [&announce[..], &["reload"]] {
        let o = bgpctl_as_nobody(&bgpctl, &sock, &[READONLY_GID], args);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("read-only access"), "{}", text(&o));
    }
    assert!(!routes(&sock).contains("10.9.9.0/24"));

    let o = bgpctl_as_nobody(&bgpctl, &sock, &[CONTROL_GID], &announce);
    assert!(o.status.success(), "{}", text(&o));
    assert!(routes(&sock).contains("10.9.9.0/24"));

    // Defense in depth: the file opened to everyone by hand, the credentials still count.
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = bgpctl_as_nobody(&bgpctl, &sock, &[], &["withdraw", "10.9.9.0/24"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("permission denied: uid 65534 is neither root nor in the control group"),
        "{}",
        text(&o)
    );
    assert!(routes(&sock).contains("10.9.9.0/24"));
    let m = scrape(port);
    assert!(
        m.contains("bgpd_control_clients_refused_total{reason=\"permission\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("bgpd_control_requests_refused_total{reason=\"read-only\"} 2"),
        "{m}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_bad_control_group_is_a_check_error() {
    let d = tmpdir("check");
    let f = d.join("bgpd.toml");
    std::fs::write(
        &f,
        "router_id = \"1.2.3.4\"\nlocal_as = 65001\ncontrol_group = \"no-such-group-spanlb\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bgpd"))
        .arg("--config")
        .arg(&f)
        .arg("--check")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("key `control_group`: no group named `no-such-group-spanlb`"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

fn hwm_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Three clients each try to send a 100 MB line: refused after 1 MiB, bgpd's peak RSS grows
/// by less than 16 MiB.
#[test]
fn three_100_mb_lines_do_not_grow_bgpd() {
    let d = tmpdir("rss");
    let (bgpd, sock) = start(&d, "", 0o022);
    let pid = bgpd.0.id();
    // Warm up: one client and one answer.
    routes(&sock);
    let before = hwm_kb(pid);
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&sock).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
                let chunk = vec![b'x'; 1 << 20];
                let mut sent = 0usize;
                while sent < 100_000_000 {
                    match s.write(&chunk) {
                        Ok(n) => sent += n,
                        Err(_) => break,
                    }
                }
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut answer = String::new();
                let _ = BufReader::new(&s).read_line(&mut answer);
                (sent, answer)
            })
        })
        .collect();
    for c in clients {
        let (sent, answer) = c.join().unwrap();
        assert!(sent < 16 << 20, "bgpd took {sent} bytes of one line");
        assert!(
            answer.contains(&format!("request longer than {MAX_LINE} bytes")),
            "{answer}"
        );
    }
    let grew = hwm_kb(pid).saturating_sub(before);
    println!("bgpd VmHWM: {before} kB before, grew by {grew} kB");
    assert!(grew < 16 * 1024, "bgpd's peak RSS grew by {grew} kB");
    // Still serving.
    routes(&sock);
    let _ = std::fs::remove_dir_all(&d);
}

/// lbd's connection (fate sharing) idles past the partial-line timeout and stays, with its
/// routes; a half-sent line is closed after 10 s.
#[test]
fn an_idle_fate_sharing_client_stays_a_half_sent_line_does_not() {
    let d = tmpdir("idle");
    let (_bgpd, sock) = start(&d, "", 0o022);
    let mut lbd = Client::<Request>::connect(&sock).unwrap();
    let r = lbd
        .call(&Request::Announce {
            persistent: false,
            routes: vec![RouteConfig::new("10.7.7.0/24".parse().unwrap())],
        })
        .unwrap();
    assert!(serde_json::to_string(&r)
        .unwrap()
        .contains("\"announced\":1"));
    let mut half = UnixStream::connect(&sock).unwrap();
    half.write_all(b"{\"cmd\":\"rou").unwrap();
    let t0 = Instant::now();
    half.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = [0u8; 64];
    let n = half.read(&mut buf).unwrap_or(0);
    let took = t0.elapsed();
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(14),
        "half-sent line closed after {took:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    // Idle for 11 s: still connected, its route still there.
    assert!(routes(&sock).contains("10.7.7.0/24"));
    let r = lbd.call(&Request::Neighbors).unwrap();
    assert!(serde_json::to_string(&r).unwrap().contains("\"ok\":true"));
    // Fate sharing still works: gone with the connection.
    drop(lbd);
    let deadline = Instant::now() + Duration::from_secs(5);
    while routes(&sock).contains("10.7.7.0/24") {
        assert!(Instant::now() < deadline, "route not withdrawn");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(&d);
}
