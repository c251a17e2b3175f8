//! lbctl against a real control socket: lbd's `App` (never started: no listener, no monitor)
//! served by `control::serve` on a Unix socket in a temporary directory, and the lbctl binary
//! run as an operator would, checking its output and exit codes.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lbd::app::{App, Daemon as Lbd};
use lbd::config::{AdminState, Config};

// The members are in TEST-NET-1 and are never contacted.
const CFG: &str = r#"
[device]
name = "lb-cli"
internal_address = "192.0.2.6"
[virtual_servers.web]
destination = "198.51.100.10:80"
pool = "web"
[pools.web]
members = [{ address = "192.0.2.50:80" }, { address = "192.0.2.51:80" }]
"#;

struct Daemon {
    shared: Arc<App>,
    sock: PathBuf,
    /// Runs the control socket while the test lasts.
    _rt: tokio::runtime::Runtime,
}

impl Daemon {
    fn start(name: &str) -> Daemon {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shared = App::standalone(Lbd::new(Config::from_toml(CFG, "test").unwrap(), None));
        let sock = std::env::temp_dir().join(format!("lbctl-{name}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&sock);
        let listener = {
            let _g = rt.enter();
            tokio::net::UnixListener::bind(&sock).unwrap()
        };
        rt.spawn(lbd::app::control::serve(listener, shared.clone()));
        Daemon {
            shared,
            sock,
            _rt: rt,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.sock);
    }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs lbctl with `args` (and LBCTL_SOCKET unset unless `env` says), at most 20 s.
fn lbctl(args: &[&str], env: Option<&PathBuf>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lbctl"));
    cmd.args(args)
        .env_remove("LBCTL_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = env {
        cmd.env("LBCTL_SOCKET", p);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("lbctl {args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn operator_session() {
    let d = Daemon::start("session");
    let s = d.sock.to_str().unwrap();

    let r = lbctl(&["--socket", s, "status"], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with("device           lb-cli\n"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("last reload      never"));

    // The socket from the environment.
    let r = lbctl(&["show", "virtual-servers"], Some(&d.sock));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("web   198.51.100.10:80"));

    let r = lbctl(
        &["-s", s, "member", "web", "192.0.2.50:80", "disable"],
        None,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "pool web member 192.0.2.50:80: enabled -> disabled (status disabled); 1/2 members available\n"
    );
    let rt = d.shared.live().runtime.load();
    assert_eq!(rt.pools["web"].members[0].admin(), AdminState::Disabled);

    let r = lbctl(&["-s", s, "show", "pools", "web"], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with("pool web  round-robin  1/2 available"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("\n  192.0.2.50:80      1  disabled "),
        "{}",
        r.stdout
    );

    let r = lbctl(&["-s", s, "--json", "show", "pools"], None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v[0]["members"][0]["status"], "disabled");
    assert_eq!(v[0]["available"], 1);

    let r = lbctl(&["-s", s, "show", "connections"], None);
    assert_eq!((r.code, r.stdout.as_str()), (0, "0 connections\n"));

    // lbd's errors: exit 1, the message on stderr.
    let r = lbctl(
        &["-s", s, "member", "nope", "192.0.2.50:80", "enable"],
        None,
    );
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr, "lbctl: no pool named `nope`\n");
    assert!(r.stdout.is_empty());
    let r = lbctl(&["-s", s, "reload"], None);
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr, "lbctl: no configuration file to reload from\n");
    let r = lbctl(&["-s", s, "show", "pools", "nope"], None);
    assert_eq!(r.code, 1);
}

#[test]
fn exit_codes_for_usage_and_an_unreachable_daemon() {
    let missing = std::env::temp_dir().join(format!("lbctl-missing-{}.sock", std::process::id()));
    let r = lbctl(&["--socket", missing.to_str().unwrap(), "status"], None);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains(missing.to_str().unwrap()), "{}", r.stderr);
    assert!(r.stderr.contains("--socket"), "{}", r.stderr);
    // The environment names the socket when --socket does not.
    let r = lbctl(&["status"], Some(&missing));
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains(missing.to_str().unwrap()), "{}", r.stderr);

    for args in [
        &["member", "web", "not-an-address", "disable"][..],
        &["member", "web", "192.0.2.50:80", "shutdown"],
        &["show", "everything"],
        &[],
    ] {
        let r = lbctl(args, Some(&missing));
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
    }
    let r = lbctl(&["member", "--help"], None);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains("running configuration only"),
        "{}",
        r.stdout
    );
}
