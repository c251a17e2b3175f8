//! The `bgpd` and `bgpctl` binaries: configuration errors, and bgpctl against a running bgpd.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Daemon;

const BGPD: &str = env!("CARGO_BIN_EXE_bgpd");
const BGPCTL: &str = env!("CARGO_BIN_EXE_bgpctl");

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("bgpd-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn bad_configuration_is_one_line_naming_file_and_key() {
    let d = tmpdir("badcfg");
    let f = d.join("bgpd.toml");
    std::fs::write(&f, "router_id = \"1.2.3.4\"\nlocal_as = 65001\n[[neighbor]]\naddress = \"10.0.0.1\"\nremote_as = 65000\nhold_tme = 9\n").unwrap();
    let out = Command::new(BGPD)
        .arg("--config")
        .arg(&f)
        .arg("--check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&*f.to_string_lossy())
            && err.contains("neighbor[0]")
            && err.contains("hold_tme"),
        "{err}"
    );

    // The default listen addresses (port 179) and control socket are the box's: not tried here.
    std::fs::write(
        &f,
        "router_id = \"1.2.3.4\"\nlocal_as = 65001\nlisten = []\n",
    )
    .unwrap();
    let out = Command::new(BGPD)
        .arg("--config")
        .arg(&f)
        .arg("--check")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (0 neighbors, 0 routes)"));
    let _ = std::fs::remove_dir_all(&d);
}

fn check(f: &Path) -> std::process::Output {
    Command::new(BGPD)
        .arg("--config")
        .arg(f)
        .arg("--check")
        .output()
        .unwrap()
}

#[test]
fn check_reports_a_listen_address_in_use_in_one_line() {
    let d = tmpdir("inuse");
    let f = d.join("bgpd.toml");
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = other.local_addr().unwrap();
    std::fs::write(
        &f,
        format!(
            "router_id = \"1.2.3.4\"\nlocal_as = 65001\nlisten = [\"{addr}\"]\n\
             control_socket = \"{}\"\n",
            d.join("bgpd.sock").display()
        ),
    )
    .unwrap();
    let out = check(&f);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("bgpd: listen: cannot listen on {addr}: ")),
        "{err}"
    );
    drop(other);
    let out = check(&f);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn check_names_the_key_and_lists_the_values_of_an_enumeration() {
    let d = tmpdir("enum");
    let f = d.join("bgpd.toml");
    std::fs::write(
        &f,
        "router_id = \"1.2.3.4\"\nlocal_as = 65001\nlisten = []\n[[neighbor]]\n\
         address = \"10.0.0.1\"\nremote_as = 65000\nfamilies = [\"ipv4\"]\n",
    )
    .unwrap();
    let out = check(&f);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim_end(),
        format!(
            "bgpd: {}: key `neighbor[0].families[0]`: unknown value \"ipv4\", expected one of: \
             ipv4-unicast, ipv6-unicast",
            f.display()
        )
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// The bgpd binary on configuration file `f`, once its control socket `sock` exists.
fn start_bgpd(f: &Path, sock: &Path) -> Daemon {
    Daemon::start(f, sock)
}

fn bgpctl(sock: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BGPCTL)
        .arg("--socket")
        .arg(sock)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn bgpctl_announces_lists_and_withdraws() {
    let d = tmpdir("ctl");
    let sock = d.join("bgpd.sock");
    let f = d.join("bgpd.toml");
    std::fs::write(
        &f,
        format!(
            "router_id = \"10.0.0.1\"\nlocal_as = 65001\nlisten = []\ncontrol_socket = \"{}\"\n\
             [[neighbor]]\naddress = \"127.0.0.1\"\nremote_as = 65000\npassive = true\n\
             [[route]]\nprefix = \"30.1.1.10/32\"\npath_id = 1\nnext_hop = \"20.1.1.2\"\n",
            sock.display()
        ),
    )
    .unwrap();
    let _d = start_bgpd(&f, &sock);

    let (ok, out, err) = bgpctl(
        &sock,
        &[
            "announce",
            "30.1.1.20/32",
            "--path-id",
            "2",
            "--next-hop",
            "20.1.1.3",
            "--community",
            "65001:7",
            "--prepend",
            "1",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "announced 1");
    // bgpctl has exited: its route is persistent and stays.
    let (ok, out, _) = bgpctl(&sock, &["routes"]);
    assert!(ok);
    assert!(
        out.contains("30.1.1.10/32") && out.contains("config"),
        "{out}"
    );
    assert!(
        out.contains("30.1.1.20/32") && out.contains("(persistent)"),
        "{out}"
    );
    let (ok, out, _) = bgpctl(&sock, &["--json", "routes"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let r = v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"]["prefix"] == "30.1.1.20/32")
        .unwrap()
        .clone();
    assert_eq!(r["route"]["communities"], serde_json::json!(["65001:7"]));
    assert_eq!(r["route"]["as_path_prepend"], 1);

    let (ok, out, _) = bgpctl(&sock, &["neighbors"]);
    assert!(ok);
    assert!(out.contains("127.0.0.1") && out.contains("active"), "{out}");

    let (ok, out, _) = bgpctl(&sock, &["withdraw", "30.1.1.20/32", "--path-id", "2"]);
    assert!(ok);
    assert_eq!(out.trim(), "withdrew 1");
    let (_, out, _) = bgpctl(&sock, &["routes"]);
    assert!(!out.contains("30.1.1.20/32"), "{out}");

    // Errors are one line on stderr with a non-zero exit.
    let (ok, _, err) = bgpctl(
        &sock,
        &["announce", "30.1.1.0/24", "--next-hop", "2001:db8::1"],
    );
    assert!(!ok);
    assert!(
        err.starts_with("bgpctl: ") && err.contains("address family"),
        "{err}"
    );
    let (ok, _, err) = bgpctl(&d.join("nope.sock"), &["routes"]);
    assert!(!ok);
    assert!(err.contains("cannot reach bgpd"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

/// SIGHUP reloads the file (it no longer ends bgpd); `bgpctl reload` does the same and says
/// what changed; a bad file is refused with the reason and bgpd keeps running.
#[test]
fn sighup_and_bgpctl_reload_read_the_file_again() {
    let d = tmpdir("hup");
    let sock = d.join("bgpd.sock");
    let f = d.join("bgpd.toml");
    let head = format!(
        "router_id = \"10.0.0.1\"\nlocal_as = 65001\nlisten = []\ncontrol_socket = \"{}\"\n",
        sock.display()
    );
    let route = |p: &str| format!("[[route]]\nprefix = \"{p}\"\nnext_hop = \"20.1.1.2\"\n");
    std::fs::write(&f, format!("{head}{}", route("30.1.1.10/32"))).unwrap();
    let mut child = start_bgpd(&f, &sock);
    let routes = || bgpctl(&sock, &["routes"]).1;
    let wait_routes = |want: &str, not: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = routes();
            if out.contains(want) && (not.is_empty() || !out.contains(not)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "routes never became {want}: {out}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    std::fs::write(&f, format!("{head}{}", route("30.1.1.11/32"))).unwrap();
    assert!(child.signal(libc::SIGHUP));
    wait_routes("30.1.1.11/32", "30.1.1.10/32");
    assert!(!child.exited(), "bgpd ended on SIGHUP");

    std::fs::write(&f, format!("{head}{}", route("30.1.1.12/32"))).unwrap();
    let (ok, out, err) = bgpctl(&sock, &["reload"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "reloaded: neighbors added -, removed -, reset -, updated -; routes announced 1, withdrawn 1"
    );
    wait_routes("30.1.1.12/32", "30.1.1.11/32");

    std::fs::write(&f, format!("{head}bogus = 1\n")).unwrap();
    let (ok, _, err) = bgpctl(&sock, &["reload"]);
    assert!(!ok);
    assert!(
        err.contains("reload refused") && err.contains("bogus"),
        "{err}"
    );
    wait_routes("30.1.1.12/32", "");
    assert!(!child.exited());
    let _ = std::fs::remove_dir_all(&d);
}

/// One convention for both CLIs (issue 16): `show` verbs (the old spellings still work),
/// exit status 3 when the daemon cannot be reached and 2 for a usage error, the socket from
/// `--socket` or an environment variable, `--json` without the envelope, and the neighbor
/// table with uptime and description.
#[test]
fn bgpctl_follows_lbctls_conventions() {
    let d = tmpdir("conv");
    let sock = d.join("bgpd.sock");
    let f = d.join("bgpd.toml");
    std::fs::write(
        &f,
        format!(
            "router_id = \"10.0.0.1\"\nlocal_as = 65001\nlisten = []\ncontrol_socket = \"{}\"\n\
             [[neighbor]]\naddress = \"127.0.0.1\"\nremote_as = 65000\npassive = true\n\
             description = \"upstream r1\"\n",
            sock.display()
        ),
    )
    .unwrap();
    let _d = start_bgpd(&f, &sock);

    let (ok, show, err) = bgpctl(&sock, &["show", "neighbors"]);
    assert!(ok, "{err}");
    let head = show.lines().next().unwrap_or_default();
    for col in ["NEIGHBOR", "STATE", "UPTIME", "DESCRIPTION", "LAST"] {
        assert!(head.contains(col), "{show}");
    }
    assert!(show.contains("upstream r1"), "{show}");
    let (ok, old, _) = bgpctl(&sock, &["neighbors"]);
    assert!(ok);
    assert_eq!(old.lines().next(), show.lines().next(), "the old spelling");

    let (ok, out, _) = bgpctl(&sock, &["--json", "show", "neighbors"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v.get("ok").is_none(), "the envelope was printed: {v}");
    let n = &v["neighbors"][0];
    assert_eq!(n["description"], "upstream r1");
    assert!(
        n["since_ms"].as_u64().unwrap() / 1000 == n["since"].as_u64().unwrap(),
        "{n}"
    );

    // The socket from the environment.
    let out = Command::new(BGPCTL)
        .env("BGPCTL_SOCKET", &sock)
        .args(["show", "routes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // Exit status: 3 unreachable, 2 usage (clap's and a value bgpd would refuse), 1 refused.
    let code = |sock: &Path, args: &[&str]| {
        Command::new(BGPCTL)
            .arg("--socket")
            .arg(sock)
            .args(args)
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(code(&d.join("nope.sock"), &["show", "neighbors"]), Some(3));
    assert_eq!(code(&sock, &["show", "nothing"]), Some(2));
    assert_eq!(
        code(&sock, &["announce", "30.1.1.0/24", "--origin", "sideways"]),
        Some(2)
    );
    assert_eq!(
        code(
            &sock,
            &["announce", "30.1.1.0/24", "--next-hop", "2001:db8::1"]
        ),
        Some(1),
        "an IPv6 next hop for an IPv4 prefix, refused by bgpd"
    );
    let _ = std::fs::remove_dir_all(&d);
}
