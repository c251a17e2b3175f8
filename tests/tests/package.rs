//! The Debian package (`packaging/build-deb.sh`, README "Installing on real boxes").
//!
//! `deb_builds_installs_and_verifies` packs the binaries this test run was built with (the dev
//! profile: CI has just built the whole workspace, so no release build is paid for here) into
//! a `.deb`, checks its control data and contents (binaries, plugins, units, sysctl file, man
//! pages, completions, examples), extracts it into a scratch root (`dpkg-deb -x`: no root
//! needed, nothing touches the host), runs the extracted binaries (`--version`, `--check` on
//! the example configuration) and runs `systemd-analyze verify` on the extracted units.
//! The other tests read the packaging files only.
//!
//! Under `CI=true` a missing tool or binary fails; otherwise the test prints
//! `skipped: <reason>` and passes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use spanlb_lab::{bin_dir, find_tool, in_ci};

const BINARIES: [&str; 4] = [
    "usr/sbin/lbd",
    "usr/sbin/bgpd",
    "usr/bin/lbctl",
    "usr/bin/bgpctl",
];
const PLUGINS: [&str; 4] = ["sip", "msrdp", "ssl", "hash"];
const UNITS: [&str; 2] = ["spanlb-bgpd.service", "spanlb-lbd.service"];
const EXAMPLES: [&str; 4] = ["lbd.toml", "bgpd.toml", "device-group.toml", "frr.conf"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A directory removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("spanlb-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Skips (outside CI) or fails (under CI) for a missing prerequisite.
fn missing(reason: String) {
    if in_ci() {
        panic!("{reason} (CI=true: a missing prerequisite is a failure, not a skip)");
    }
    eprintln!("skipped: {reason}");
}

/// Runs `cmd`; panics with its output unless it exits 0.
fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The example files with their absolute paths moved under `root` (the scratch install): the
/// configuration tree in `root/etc/spanlb`, the plugin directory the extracted one, the
/// interfaces `lo`; and the group key the device-group file names, made as README says (0600).
fn install_examples(root: &Path) -> PathBuf {
    let etc = root.join("etc/spanlb");
    std::fs::create_dir_all(&etc).unwrap();
    let examples = root.join("usr/share/doc/spanlb/examples");
    for f in EXAMPLES {
        let text = std::fs::read_to_string(examples.join(f)).unwrap();
        let text = text
            .replace("/etc/spanlb/", &format!("{}/", etc.display()))
            .replace(
                "/usr/lib/spanlb/",
                &format!("{}/usr/lib/spanlb/", root.display()),
            )
            // `lbd --check` wants the device group's interfaces to exist; this machine has no
            // ext0 or int0, every machine has lo.
            .replace("\"ext0\"", "\"lo\"")
            .replace("\"int0\"", "\"lo\"");
        std::fs::write(etc.join(f), text).unwrap();
    }
    let key = etc.join("group.key");
    std::fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    etc
}

#[test]
fn deb_builds_installs_and_verifies() {
    let tools = [
        "dpkg-deb",
        "dpkg",
        "systemd-analyze",
        "man",
        "strip",
        "gzip",
        "md5sum",
    ];
    let absent: Vec<&str> = tools
        .into_iter()
        .filter(|t| find_tool(t).is_none())
        .collect();
    if !absent.is_empty() {
        return missing(format!("package test: tools missing: {absent:?}"));
    }
    let bins = bin_dir().unwrap();
    let built: Vec<PathBuf> = ["lbd", "lbctl", "bgpd", "bgpctl", "spanlb-gendocs"]
        .into_iter()
        .map(String::from)
        .chain(PLUGINS.map(|p| format!("libspanlb_plugin_{p}.so")))
        .map(|f| bins.join(f))
        .collect();
    if let Some(f) = built.iter().find(|f| !f.is_file()) {
        return missing(format!(
            "package test: {} not built (cargo build --workspace first)",
            f.display()
        ));
    }

    // Build: the script with the binaries already built (dev profile).
    let scratch = Scratch::new("deb");
    let out = scratch.0.join("out");
    let built = run(Command::new("bash")
        .arg(repo().join("packaging/build-deb.sh"))
        .args(["--profile", "dev", "--no-build", "--bin-dir"])
        .arg(&bins)
        .arg("--out")
        .arg(&out));
    let deb = PathBuf::from(stdout(&built).trim());
    assert!(
        deb.is_file() && deb.to_string_lossy().ends_with(".deb"),
        "the script prints the package's path: {deb:?}"
    );

    // Control data.
    let info = stdout(&run(Command::new("dpkg-deb").arg("-I").arg(&deb)));
    for field in [
        "Package: spanlb",
        "Version: 0.1.0",
        "Architecture: ",
        "Depends: ",
        "postinst",
        "md5sums",
    ] {
        assert!(info.contains(field), "dpkg-deb -I has {field:?}:\n{info}");
    }

    // Contents.
    let listing = stdout(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)));
    let files: BTreeSet<String> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches("./").trim_end_matches('/').to_string())
        .collect();
    let mut want: Vec<String> = BINARIES.iter().map(|b| b.to_string()).collect();
    want.extend(PLUGINS.map(|p| format!("usr/lib/spanlb/plugins/libspanlb_plugin_{p}.so")));
    want.extend(UNITS.map(|u| format!("usr/lib/systemd/system/{u}")));
    want.push("usr/lib/sysctl.d/60-spanlb.conf".into());
    for (name, section) in [("lbd", 8), ("bgpd", 8), ("lbctl", 1), ("bgpctl", 1)] {
        want.push(format!("usr/share/man/man{section}/{name}.{section}.gz"));
        want.push(format!("usr/share/bash-completion/completions/{name}"));
        want.push(format!("usr/share/zsh/vendor-completions/_{name}"));
        want.push(format!("usr/share/fish/vendor_completions.d/{name}.fish"));
    }
    want.push("usr/share/man/man1/lbctl-show-pools.1.gz".into());
    want.push("usr/share/doc/spanlb/README.md".into());
    want.push("usr/share/doc/spanlb/copyright".into());
    want.extend(EXAMPLES.map(|e| format!("usr/share/doc/spanlb/examples/{e}")));
    let absent: Vec<&String> = want.iter().filter(|w| !files.contains(*w)).collect();
    assert!(
        absent.is_empty(),
        "not in the package: {absent:?}\n{listing}"
    );
    // Nothing under /etc: conffiles would apply; postinst makes /etc/spanlb.
    assert!(
        !files.iter().any(|f| f.starts_with("etc")),
        "the package ships nothing in /etc:\n{listing}"
    );
    for l in listing.lines() {
        assert!(l.contains(" root/root "), "owned by root: {l}");
    }

    // Install into a scratch root and run what was installed.
    let root = scratch.0.join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    for (bin, name) in [
        ("usr/sbin/lbd", "lbd"),
        ("usr/sbin/bgpd", "bgpd"),
        ("usr/bin/lbctl", "lbctl"),
        ("usr/bin/bgpctl", "bgpctl"),
    ] {
        let v = stdout(&run(Command::new(root.join(bin)).arg("--version")));
        assert_eq!(v.trim(), format!("{name} 0.1.0"), "{bin} --version");
    }
    let etc = install_examples(&root);
    let lbd = stdout(&run(Command::new(root.join("usr/sbin/lbd"))
        .arg("--check")
        .arg("--config")
        .arg(etc.join("lbd.toml"))));
    assert!(lbd.contains(": ok ("), "lbd --check: {lbd}");
    let bgpd = stdout(&run(Command::new(root.join("usr/sbin/bgpd"))
        .arg("--check")
        .arg("--config")
        .arg(etc.join("bgpd.toml"))));
    assert!(bgpd.contains(": ok ("), "bgpd --check: {bgpd}");
    // lbd's loader of the device-group file (start and reload read it; --check does not yet).
    lbd::cluster::config::GroupConfig::load(&etc.join("device-group.toml"))
        .unwrap_or_else(|e| panic!("device-group.toml: {e}"));
    // The man pages are well-formed gzip; the bash completions parse.
    for page in ["man8/lbd.8.gz", "man1/lbctl.1.gz"] {
        run(Command::new("gzip")
            .arg("-t")
            .arg(root.join("usr/share/man").join(page)));
    }
    for c in ["lbctl", "bgpctl", "lbd", "bgpd"] {
        run(Command::new("bash")
            .arg("-n")
            .arg(root.join("usr/share/bash-completion/completions").join(c)));
    }

    // systemd-analyze verify: the extracted units, with their /usr/sbin and /usr/bin moved to
    // the scratch root (verify checks that ExecStart's program exists) and MANPATH pointing at
    // the extracted man pages (verify checks Documentation=man:...). A warning (an unknown key,
    // a bad value) is a failure too: verify exits 0 on those.
    let units = scratch.0.join("units");
    std::fs::create_dir_all(&units).unwrap();
    for u in UNITS {
        let text = std::fs::read_to_string(root.join("usr/lib/systemd/system").join(u)).unwrap();
        let text = text
            .replace("/usr/sbin/", &format!("{}/usr/sbin/", root.display()))
            .replace("/usr/bin/", &format!("{}/usr/bin/", root.display()));
        std::fs::write(units.join(u), text).unwrap();
    }
    let verify = run(Command::new("systemd-analyze")
        .arg("verify")
        .args(UNITS.map(|u| units.join(u)))
        .env("MANPATH", root.join("usr/share/man"))
        .env("SYSTEMD_LOG_COLOR", "0"));
    let warnings = String::from_utf8_lossy(&verify.stderr);
    assert!(
        warnings.trim().is_empty(),
        "systemd-analyze verify warns:\n{warnings}"
    );
}

/// The units: bgpd before lbd, readiness by sd_notify, reload through the CLIs, the capabilities
/// each daemon needs, /run/spanlb kept between them, and lbd allowed to write /etc/spanlb.
#[test]
fn units_order_notify_and_capabilities() {
    let read = |u: &str| std::fs::read_to_string(repo().join("packaging/systemd").join(u)).unwrap();
    let keys = |text: &str| -> Vec<(String, String)> {
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains('='))
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.trim().to_string(), v.trim().to_string())
            })
            .collect()
    };
    let has = |text: &str, k: &str, v: &str| keys(text).iter().any(|(kk, vv)| kk == k && vv == v);
    let lbd = read("spanlb-lbd.service");
    let bgpd = read("spanlb-bgpd.service");
    for (name, u) in [("lbd", &lbd), ("bgpd", &bgpd)] {
        assert!(has(u, "Type", "notify"), "{name}: Type=notify");
        assert!(
            has(u, "RuntimeDirectory", "spanlb"),
            "{name}: RuntimeDirectory"
        );
        assert!(
            has(u, "RuntimeDirectoryPreserve", "yes"),
            "{name}: the directory is shared"
        );
        assert!(has(u, "NoNewPrivileges", "yes"), "{name}");
        assert!(has(u, "ProtectSystem", "strict"), "{name}");
        assert!(has(u, "User", "spanlb"), "{name}");
    }
    assert!(has(
        &lbd,
        "After",
        "network-online.target spanlb-bgpd.service"
    ));
    assert!(has(
        &lbd,
        "Wants",
        "network-online.target spanlb-bgpd.service"
    ));
    assert!(
        has(&lbd, "ReadWritePaths", "/etc/spanlb"),
        "config sync writes lbd.toml"
    );
    assert!(has(
        &lbd,
        "ExecReload",
        "/usr/bin/lbctl --socket /run/spanlb/lbd.sock reload"
    ));
    assert!(has(
        &bgpd,
        "ExecReload",
        "/usr/bin/bgpctl --socket /run/spanlb/bgpd.sock reload"
    ));
    assert!(keys(&lbd).iter().any(|(k, _)| k == "LimitNOFILE"));
    let caps = "CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE";
    assert!(has(&lbd, "AmbientCapabilities", caps));
    assert!(has(&lbd, "CapabilityBoundingSet", caps));
    assert!(has(&bgpd, "AmbientCapabilities", "CAP_NET_BIND_SERVICE"));
    // lbd writes /proc/sys/net for MAC masquerade.
    assert!(!keys(&lbd).iter().any(|(k, _)| k == "ProtectKernelTunables"));
    // The default control sockets the units' ExecReload name are the daemons' defaults.
    let ex = repo().join("packaging/examples");
    let lbd_cfg = lbd::config::Config::load(&ex.join("lbd.toml")).unwrap();
    assert_eq!(
        lbd_cfg.device.control_socket,
        PathBuf::from("/run/spanlb/lbd.sock")
    );
    let bgpd_cfg = bgpd::config::Config::load(&ex.join("bgpd.toml")).unwrap();
    assert_eq!(
        bgpd_cfg.control_socket,
        PathBuf::from("/run/spanlb/bgpd.sock")
    );
}

/// The sysctl file: every setting commented with its reason, the ones the README's device
/// group section lists, and the syntax sysctl reads.
#[test]
fn sysctl_file_has_the_readme_settings() {
    let text = std::fs::read_to_string(repo().join("packaging/sysctl/60-spanlb.conf")).unwrap();
    let mut settings = Vec::new();
    let mut commented = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            commented = true;
        } else if line.is_empty() {
            commented = false;
        } else {
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY = VALUE: {line}"));
            assert!(commented, "{line}: no comment says why");
            settings.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    for (k, v) in [
        ("net.ipv4.conf.all.arp_ignore", "1"),
        ("net.ipv4.conf.all.arp_announce", "2"),
        ("net.ipv4.conf.all.rp_filter", "2"),
    ] {
        assert!(
            settings.iter().any(|(kk, vv)| kk == k && vv == v),
            "{k} = {v} in 60-spanlb.conf"
        );
        let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
        let short = k.rsplit('.').next().unwrap();
        assert!(readme.contains(short), "README lists {short}");
    }
}

/// The example tree is one device of one group, consistent with itself: lbd's and bgpd's
/// loaders accept it, the device is in the group, and the router's FRR file peers with it.
#[test]
fn examples_are_one_consistent_device() {
    let ex = repo().join("packaging/examples");
    let lbd_cfg = lbd::config::Config::load(&ex.join("lbd.toml")).unwrap();
    let bgpd_cfg = bgpd::config::Config::load(&ex.join("bgpd.toml")).unwrap();
    let group = lbd::cluster::config::GroupConfig::load(&ex.join("device-group.toml")).unwrap();
    assert!(group.devices.iter().any(|d| d.name == lbd_cfg.device.name));
    assert_eq!(
        lbd_cfg.device.device_group.as_deref(),
        Some(Path::new("/etc/spanlb/device-group.toml"))
    );
    assert_eq!(
        lbd_cfg.device.plugin_dir.as_deref(),
        Some(Path::new("/usr/lib/spanlb/plugins"))
    );
    let frr = std::fs::read_to_string(ex.join("frr.conf")).unwrap();
    let n = &bgpd_cfg.neighbors[0];
    assert!(frr.contains(&format!("router bgp {}", n.remote_as)));
    assert!(frr.contains(&format!("remote-as {}", bgpd_cfg.local_as)));
    let me = lbd_cfg.device.external_address.expect("external_address");
    assert!(
        frr.contains(&format!("neighbor {me} ")),
        "r1 peers with {me}"
    );
    assert!(frr.contains(&format!("ip address {}/", n.address)));
}

/// The daemons speak sd_notify(3) to a `Type=notify` unit: READY=1 once up, RELOADING=1 (with
/// MONOTONIC_USEC) and READY=1 around a SIGHUP reload, STOPPING=1 on SIGTERM. A datagram
/// socket stands in for systemd's $NOTIFY_SOCKET. Needs neither root nor systemd.
#[test]
fn daemons_notify_systemd() {
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    let scratch = Scratch::new("notify");
    let dir = &scratch.0;
    let configs = [
        (
            "bgpd",
            format!(
                "router_id = \"127.0.0.1\"\nlocal_as = 65001\nlisten = []\n\
                 control_socket = \"{}/bgpd.sock\"\n",
                dir.display()
            ),
        ),
        (
            "lbd",
            format!(
                "[device]\nname = \"t\"\ncontrol_socket = \"{}/lbd.sock\"\n",
                dir.display()
            ),
        ),
    ];
    for (daemon, config) in configs {
        let Ok(bin) = spanlb_lab::try_cargo_bin(daemon) else {
            return missing(format!("notify test: {daemon} not built"));
        };
        let file = dir.join(format!("{daemon}.toml"));
        std::fs::write(&file, config).unwrap();
        let path = dir.join(format!("{daemon}.notify"));
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&file)
            .env("NOTIFY_SOCKET", &path)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        let next = || {
            let mut buf = [0u8; 4096];
            let n = sock
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("{daemon}: no notification: {e}"));
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            eprintln!("{daemon}: {msg:?}");
            msg
        };
        let signal = |sig: i32| {
            // SAFETY: kill(2) on our own child's pid.
            assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        };
        assert_eq!(next(), "READY=1\n", "{daemon}: ready once up");
        signal(libc::SIGHUP);
        let reloading = next();
        assert!(
            reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
            "{daemon}: {reloading:?}"
        );
        assert_eq!(next(), "READY=1\n", "{daemon}: ready after the reload");
        signal(libc::SIGTERM);
        assert_eq!(next(), "STOPPING=1\n", "{daemon}: stopping on SIGTERM");
        let status = child.wait().unwrap();
        assert!(status.success(), "{daemon}: {status}");
    }
}
