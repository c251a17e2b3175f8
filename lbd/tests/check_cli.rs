//! `lbd --check` run as an operator would, on configurations that load but would not start:
//! each must exit 2 with the problem in one line, printed once. And a start that fails prints
//! its cause once.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LBD: &str = env!("CARGO_BIN_EXE_lbd");

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lbd-check-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A standalone configuration whose control socket is in `dir`, with `extra` appended.
fn config(dir: &Path, device_extra: &str, extra: &str) -> PathBuf {
    let f = dir.join("lbd.toml");
    std::fs::write(
        &f,
        format!(
            "[device]\nname = \"A\"\ncontrol_socket = \"{}\"\n{device_extra}\n{extra}",
            dir.join("lbd.sock").display()
        ),
    )
    .unwrap();
    f
}

fn check(f: &Path) -> Output {
    Command::new(LBD)
        .arg("--config")
        .arg(f)
        .arg("--check")
        .output()
        .unwrap()
}

/// Exit 2 and exactly one line on stderr, containing `want`.
fn fails_with(out: &Output, want: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "one line:\n{err}");
    assert!(
        err.starts_with("lbd: ") && err.contains(want),
        "want {want:?}:\n{err}"
    );
}

#[test]
fn a_device_group_file_that_does_not_exist_is_a_problem() {
    let d = tmpdir("dg");
    let f = config(
        &d,
        "device_group = \"/nonexistent/dg.toml\"\nexternal_interface = \"lo\"\n\
         internal_interface = \"lo\"",
        "",
    );
    fails_with(&check(&f), "device group: /nonexistent/dg.toml: ");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_group_key_file_others_can_read_is_a_problem() {
    let d = tmpdir("key");
    let key = d.join("group.key");
    std::fs::write(&key, "00112233445566778899aabbccddeeff\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dg = d.join("dg.toml");
    std::fs::write(
        &dg,
        format!(
            "[group]\nname = \"g\"\nkey_file = \"{}\"\n[[devices]]\nname = \"A\"\n\
             failover_addresses = [\"127.0.0.1\"]\n",
            key.display()
        ),
    )
    .unwrap();
    let f = config(
        &d,
        &format!(
            "device_group = \"{}\"\nexternal_interface = \"lo\"\ninternal_interface = \"lo\"",
            dg.display()
        ),
        "",
    );
    fails_with(
        &check(&f),
        &format!("device group: group key file {}", key.display()),
    );
    // Once 0600, the same configuration passes.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = check(&f);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn an_interface_that_does_not_exist_is_a_problem() {
    let d = tmpdir("ifname");
    let key = d.join("group.key");
    std::fs::write(&key, "00112233445566778899aabbccddeeff\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let dg = d.join("dg.toml");
    std::fs::write(
        &dg,
        format!(
            "[group]\nname = \"g\"\nkey_file = \"{}\"\n[[devices]]\nname = \"A\"\n\
             failover_addresses = [\"127.0.0.1\"]\n",
            key.display()
        ),
    )
    .unwrap();
    let f = config(
        &d,
        &format!(
            "device_group = \"{}\"\nexternal_interface = \"nosuchif0\"\n\
             internal_interface = \"lo\"",
            dg.display()
        ),
        "",
    );
    fails_with(
        &check(&f),
        "device.external_interface: no interface named `nosuchif0` on this machine",
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_port_in_use_is_a_problem() {
    let d = tmpdir("port");
    // Another program's listener (no SO_REUSEPORT).
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = other.local_addr().unwrap();
    let f = config(
        &d,
        "",
        &format!(
            "[virtual_servers.web]\ndestination = \"{addr}\"\npool = \"web\"\nsnat = \"none\"\n\
             [pools.web]\nmembers = [{{ address = \"127.0.0.1:9\" }}]\n"
        ),
    );
    fails_with(
        &check(&f),
        &format!("virtual_servers.web: cannot listen on tcp {addr}: "),
    );
    drop(other);
    let out = check(&f);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 virtual servers"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_plugin_profile_whose_plugin_is_missing_is_a_problem() {
    let d = tmpdir("plugin");
    let plugins = d.join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).unwrap();
    let f = config(
        &d,
        &format!("plugin_dir = \"{}\"", plugins.display()),
        "[persistence.calls]\ntype = \"sip\"\n",
    );
    fails_with(
        &check(&f),
        &format!(
            "persistence.calls: no plugin named `sip` in {}",
            plugins.display()
        ),
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_plugin_profile_whose_plugin_loads_passes() {
    let d = tmpdir("plugin-ok");
    let plugins = d.join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).unwrap();
    let so = spanlb_lab::build_cdylib("spanlb-plugin-sip").unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(&so, plugins.join(so.file_name().unwrap())).unwrap();
    let f = config(
        &d,
        &format!("plugin_dir = \"{}\"", plugins.display()),
        "[persistence.calls]\ntype = \"sip\"\n",
    );
    let out = check(&f);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn missing_mirroring_trust_files_are_problems() {
    let d = tmpdir("trust");
    let key = d.join("group.key");
    std::fs::write(&key, "00112233445566778899aabbccddeeff\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let dg = d.join("dg.toml");
    std::fs::write(
        &dg,
        format!(
            "[group]\nname = \"g\"\nkey_file = \"{}\"\n[[devices]]\nname = \"A\"\n\
             failover_addresses = [\"127.0.0.1\"]\nmirror_addresses = [\"127.0.0.1\"]\n",
            key.display()
        ),
    )
    .unwrap();
    let trust = d.join("trust");
    std::fs::create_dir(&trust).unwrap();
    let f = config(
        &d,
        &format!(
            "device_group = \"{}\"\nexternal_interface = \"lo\"\ninternal_interface = \"lo\"\n\
             mirror_trust_dir = \"{}\"",
            dg.display(),
            trust.display()
        ),
        "",
    );
    let out = check(&f);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for file in ["ca.crt", "A.crt", "A.key"] {
        let want = format!("lbd: mirroring: {}: ", trust.join(file).display());
        assert_eq!(err.matches(&want).count(), 1, "{want}:\n{err}");
    }
    assert_eq!(err.lines().count(), 3, "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_world_writable_plugin_directory_is_a_problem() {
    let d = tmpdir("plugindir");
    let plugins = d.join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o777)).unwrap();
    let f = config(
        &d,
        &format!("plugin_dir = \"{}\"", plugins.display()),
        "[persistence.calls]\ntype = \"sip\"\n",
    );
    // One cause, one line: not also "no plugin named `sip`".
    fails_with(
        &check(&f),
        &format!(
            "plugin directory {}: mode 777 lets others write it",
            plugins.display()
        ),
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn every_problem_is_reported_once() {
    let d = tmpdir("several");
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = other.local_addr().unwrap();
    let f = config(
        &d,
        "device_group = \"/nonexistent/dg.toml\"\nexternal_interface = \"lo\"\n\
         internal_interface = \"lo\"",
        &format!(
            "[virtual_servers.web]\ndestination = \"{addr}\"\npool = \"web\"\nsnat = \"none\"\n\
             [pools.web]\nmembers = [{{ address = \"127.0.0.1:9\" }}]\n"
        ),
    );
    let out = check(&f);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(
        err.contains("/nonexistent/dg.toml") && err.contains(&addr.to_string()),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_failing_start_prints_its_cause_once() {
    let d = tmpdir("start");
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = other.local_addr().unwrap();
    let f = config(
        &d,
        "",
        &format!(
            "[virtual_servers.web]\ndestination = \"{addr}\"\npool = \"web\"\nsnat = \"none\"\n\
             [pools.web]\nmembers = [{{ address = \"127.0.0.1:9\" }}]\n"
        ),
    );
    let out = Command::new(LBD).arg("--config").arg(&f).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let want = format!("cannot listen on tcp {addr}");
    assert_eq!(err.matches(&want).count(), 1, "{err}");
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
    let _ = std::fs::remove_dir_all(&d);
}
