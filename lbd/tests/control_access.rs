//! Issue 15 against the real `lbd` and `lbctl`: who may use lbd's control socket, and that
//! clients with half-sent lines cannot lock root out.
//!
//! * lbd started under umask 000: its socket is 0660 with the control group; `nobody` (uid
//!   65534, run through `setpriv`) cannot connect; in the read-only group it can `show` but
//!   not `member … force-offline`; in the control group it can. With the socket's mode
//!   opened by hand (0666), the credential check still refuses `nobody` (one error line,
//!   counted in `lbd_control_clients_refused_total{reason="permission"}`).
//! * 64 connections of a control-group member with half a request line each: 63 are served
//!   (the 64th is refused, the last slot is root's), root's `lbctl status` answers within 1 s,
//!   and the half-sent connections are closed after the 10 s partial-line timeout.
//!
//! These need root (setuid to nobody) and `setpriv` (util-linux): without them the tests print
//! `skipped: <reason>` and pass, except under `CI=true`, where they fail.
//!
//! The groups are numeric gids that no account needs to have (4711 control, 4712 read-only):
//! `setpriv --groups` hands them to the client, so nothing is added to /etc/group.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{free_port, wait_for, Lbd};

const NOBODY: u32 = 65534;
const CONTROL_GID: u32 = 4711;
const READONLY_GID: u32 = 4712;

/// True when the test can run clients as nobody; otherwise one `skipped:` line (a failure
/// under CI=true).
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

/// lbctl copied where nobody can run it (the target directory may not be readable to it).
fn public_lbctl(dir: &Path) -> PathBuf {
    let d = dir.join("bin");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let to = d.join("lbctl");
    std::fs::copy(env!("CARGO_BIN_EXE_lbctl"), &to).unwrap();
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    to
}

/// `lbctl --socket SOCK ARGS` as uid/gid 65534 with `groups` as its supplementary groups.
fn lbctl_as_nobody(lbctl: &Path, sock: &Path, groups: &[u32], args: &[&str]) -> Output {
    let groups = if groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        format!(
            "--groups={}",
            groups
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    Command::new("setpriv")
        .args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            groups,
        ])
        .arg(lbctl)
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

/// lbd with the control groups and a metrics endpoint, started under umask 000.
fn start_lbd(metrics: u16, pool: &str) -> Lbd {
    // SAFETY: umask cannot fail; lbd inherits it (nextest runs each test in its own process).
    let old = unsafe { libc::umask(0) };
    let lbd = Lbd::start(&format!(
        "control_group = \"{CONTROL_GID}\"\ncontrol_readonly_group = \"{READONLY_GID}\"\n\
         metrics = \"127.0.0.1:{metrics}\"\n\n{pool}"
    ));
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    lbd
}

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

const POOL: &str = "[pools.web]\nmembers = [{ address = \"192.0.2.50:80\" }]\n";

#[test]
fn nobody_cannot_operate_lbd_even_under_umask_000() {
    if !can_run_as_nobody() {
        return;
    }
    let metrics = free_port();
    let lbd = start_lbd(metrics, POOL);
    let md = std::fs::metadata(&lbd.socket).unwrap();
    assert_eq!(md.mode() & 0o777, 0o660, "mode set whatever the umask");
    assert_eq!(md.gid(), CONTROL_GID);
    let lbctl = public_lbctl(&lbd.dir);
    let offline = ["member", "web", "192.0.2.50:80", "force-offline"];
    let admin = || lbd.member("web", "192.0.2.50:80")["admin"].clone();

    // Not in either group: the socket's mode stops it at connect().
    let o = lbctl_as_nobody(&lbctl, &lbd.socket, &[], &offline);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("ermission denied"), "{}", text(&o));
    assert_eq!(admin(), "enabled");

    // The read-only group: it may look, not change.
    let o = lbctl_as_nobody(&lbctl, &lbd.socket, &[READONLY_GID], &["show", "pools"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("192.0.2.50:80"), "{}", text(&o));
    for args in [&offline[..], &["reload"], &["standby"]] {
        let o = lbctl_as_nobody(&lbctl, &lbd.socket, &[READONLY_GID], args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("read-only access"), "{}", text(&o));
    }
    assert_eq!(admin(), "enabled");

    // The control group (as a supplementary group): full use.
    let o = lbctl_as_nobody(&lbctl, &lbd.socket, &[7, CONTROL_GID], &offline);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(admin(), "forced-offline");

    // Defense in depth: with the file opened to everyone by hand, the peer's credentials
    // still keep nobody out, with one error line.
    std::fs::set_permissions(&lbd.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let enable = ["member", "web", "192.0.2.50:80", "enable"];
    let o = lbctl_as_nobody(&lbctl, &lbd.socket, &[], &enable);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("permission denied: uid 65534 is neither root nor in the control group"),
        "{}",
        text(&o)
    );
    assert_eq!(admin(), "forced-offline");
    let m = scrape(metrics);
    assert_eq!(
        sample(
            &m,
            "lbd_control_clients_refused_total{reason=\"permission\"}"
        ),
        1,
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "lbd_control_requests_refused_total{reason=\"read-only\"}"
        ),
        3,
        "{m}"
    );
    assert!(lbd.log_text().contains("control socket: client refused"));
}

#[test]
fn a_bad_control_group_is_a_check_error() {
    let dir = std::env::temp_dir().join(format!("lbd-access-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("lbd.toml");
    std::fs::write(
        &f,
        "[device]\nname = \"t\"\ncontrol_readonly_group = \"no-such-group-spanlb\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lbd"))
        .arg("--config")
        .arg(&f)
        .arg("--check")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("key `device.control_readonly_group`: no group named `no-such-group-spanlb`"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A process as nobody (supplementary group `gid`) holding `n` connections to `sock`, each
/// with half a request line sent; killed on drop.
struct HalfSent(libc::pid_t);

impl HalfSent {
    fn start(sock: &Path, n: usize, gid: u32) -> HalfSent {
        use std::os::unix::ffi::OsStrExt;
        // Everything the child needs is made before the fork: it only makes system calls.
        // SAFETY: a zeroed sockaddr_un is valid.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr.sun_path.iter_mut().zip(sock.as_os_str().as_bytes()) {
            *d = *s as libc::c_char;
        }
        let line = b"{\"cmd\":\"sta";
        let groups = [gid];
        // SAFETY: the child makes system calls only (no allocation, no locks) and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            // SAFETY: system calls on values made before the fork.
            unsafe {
                if libc::setgroups(1, groups.as_ptr()) != 0
                    || libc::setgid(NOBODY) != 0
                    || libc::setuid(NOBODY) != 0
                {
                    libc::_exit(1);
                }
                for _ in 0..n {
                    let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                    if libc::connect(
                        fd,
                        (&addr as *const libc::sockaddr_un).cast(),
                        std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                    ) != 0
                    {
                        libc::_exit(2);
                    }
                    libc::write(fd, line.as_ptr().cast(), line.len());
                }
                loop {
                    libc::pause();
                }
            }
        }
        HalfSent(pid)
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.0))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for HalfSent {
    fn drop(&mut self) {
        // SAFETY: our own child.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

#[test]
fn half_sent_lines_do_not_lock_root_out() {
    if !can_run_as_nobody() {
        return;
    }
    let metrics = free_port();
    let lbd = start_lbd(metrics, POOL);
    let lbctl = public_lbctl(&lbd.dir);
    let t0 = Instant::now();
    let clients = HalfSent::start(&lbd.socket, 64, CONTROL_GID);
    wait_for("64 half-sent connections", Duration::from_secs(10), || {
        (clients.fds() >= 64).then_some(())
    });
    // lbd has taken them all: 63 hold a slot, the 64th was refused.
    wait_for("the 64th refused", Duration::from_secs(10), || {
        (sample(
            &scrape(metrics),
            "lbd_control_clients_refused_total{reason=\"client-limit\"}",
        ) >= 1)
            .then_some(())
    });
    let started = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_lbctl"))
        .arg("--socket")
        .arg(&lbd.socket)
        .arg("status")
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(o.status.success(), "{}", text(&o));
    assert!(took < Duration::from_secs(1), "root waited {took:?}");
    // Another member of the control group is refused while the slots are held…
    let o = lbctl_as_nobody(&lbctl, &lbd.socket, &[CONTROL_GID], &["status"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("too many control connections (64"),
        "{}",
        text(&o)
    );
    // …until the half-sent lines time out (10 s).
    let closed = wait_for("the partial-line timeout", Duration::from_secs(15), || {
        let n = sample(
            &scrape(metrics),
            "lbd_control_connections_closed_total{reason=\"partial-line-timeout\"}",
        );
        (n >= 63).then_some(n)
    });
    assert_eq!(closed, 63);
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_secs(9), "closed after {waited:?}");
    let o = lbctl_as_nobody(&lbctl, &lbd.socket, &[CONTROL_GID], &["status"]);
    assert!(o.status.success(), "{}", text(&o));
}
