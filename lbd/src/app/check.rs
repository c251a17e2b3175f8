//! `lbd --check`: what a start would try, as a dry run, with every problem found reported
//! once, in one line each ([`check`]).
//!
//! Checked, in this order: the configuration file; the control-socket groups; the plugin
//! directory (owner and mode, as at start) and, for each plugin-backed persistence profile,
//! that its plugin is loaded from it and accepts the profile's `plugin_config`; the
//! device-group file, its key file (mode 0600 or stricter), this device's membership and its
//! interfaces (external, internal, VIP); the mirroring trust files (read and turned into the TLS configurations mirroring uses); each
//! virtual server's listener; the metrics listener.
//!
//! Listeners are bound exactly as the daemon binds them and closed at once: TCP with
//! SO_REUSEADDR, SO_REUSEPORT and IP_FREEBIND, UDP with SO_REUSEADDR and IP_FREEBIND. So a
//! port another program holds is a problem, while the ports of an lbd already running on the
//! box (same user, SO_REUSEPORT) are not: `--check` is also what one runs before reloading a
//! running lbd. When an lbd answers on the configured control socket, that is said in a note
//! (a second lbd would not start: the socket is taken), and the metrics address it holds is
//! not counted as a problem. Without a device group, lbd adds no addresses, so a virtual
//! server address that is not an address of this machine is a problem (IP_FREEBIND would let
//! lbd listen there and receive nothing); with one, lbd adds them itself.
//!
//! Nothing is started: no runtime, no thread, no socket left open, no file written.

use std::net::SocketAddr;
use std::path::Path;

use crate::cluster::config::GroupConfig;
use crate::cluster::heartbeat::GroupKey;
use crate::config::{Config, Protocol};
use crate::mirror::service::TrustFiles;
use crate::mirror::trust;
use crate::plugins::Registry;

pub use spanlb_control::check::Report;

/// Checks the configuration file at `path` and everything a start with it would open or
/// bind (see the module documentation).
pub fn check(path: &Path) -> Report {
    let mut r = Report::default();
    let file = path.display().to_string();
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            r.problems.push(e.to_string());
            return r;
        }
    };
    if let Err(e) = config.control_policy(&file) {
        r.problems.push(e.to_string());
    }
    let running = control_answers(&config.device.control_socket);
    if running {
        r.notes.push(format!(
            "an lbd answers on {}: a second one would not start (the control socket is taken); \
             its listeners share their ports (SO_REUSEPORT), so they are not reported",
            config.device.control_socket.display()
        ));
    }
    plugins(&config, &mut r);
    device_group(&config, &mut r);
    listeners(&config, running, &mut r);
    r.summary = format!(
        "{file}: ok ({} virtual servers, {} pools, {} monitors)",
        config.virtual_servers.len(),
        config.pools.len(),
        config.monitors.len()
    );
    r
}

/// Whether something answers on the control socket (a running lbd).
fn control_answers(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

fn plugins(config: &Config, r: &mut Report) {
    let Some(dir) = &config.device.plugin_dir else {
        // Validation already refuses a plugin-backed profile without a plugin directory.
        return;
    };
    let mut registry = Registry::default();
    match registry.scan(dir) {
        Ok(skipped) => r
            .notes
            .extend(skipped.into_iter().map(|w| format!("{w}; skipped"))),
        Err(e) => {
            // The profiles' plugins cannot be loaded either: one cause, one line.
            r.problems.push(e.to_string());
            return;
        }
    }
    for (name, profile) in &config.persistence {
        let Some(plugin) = profile.plugin_name() else {
            continue;
        };
        match registry.by_name.get(plugin) {
            None => r.problems.push(format!(
                "persistence.{name}: no plugin named `{plugin}` in {}",
                dir.display()
            )),
            Some(loaded) => {
                if let Err(reason) = loaded.lib.instantiate(&profile.plugin_config) {
                    r.problems.push(format!(
                        "persistence.{name}: plugin `{plugin}` refused its configuration: {reason}"
                    ));
                }
            }
        }
    }
}

fn device_group(config: &Config, r: &mut Report) {
    let d = &config.device;
    let Some(file) = &d.device_group else {
        return;
    };
    let group = match GroupConfig::load(file) {
        Ok(g) => g,
        Err(e) => {
            r.problems.push(format!("device group: {e}"));
            return;
        }
    };
    if let Err(e) = GroupKey::from_file(&group.group.key_file) {
        r.problems.push(format!("device group: {e}"));
    }
    let Some(me) = group.devices.iter().find(|x| x.name == d.name) else {
        r.problems.push(format!(
            "device group: device `{}` is not a member of device group `{}` ({})",
            d.name,
            group.group.name,
            file.display()
        ));
        return;
    };
    for (key, ifname) in [
        ("external_interface", d.external_interface.as_deref()),
        ("internal_interface", d.internal_interface.as_deref()),
        ("vip_interface", Some(d.vip_interface.as_str())),
    ] {
        if let Some(i) = ifname {
            if !Path::new("/sys/class/net").join(i).exists() {
                r.problems.push(format!(
                    "device.{key}: no interface named `{i}` on this machine"
                ));
            }
        }
    }
    let Some(dir) = &d.mirror_trust_dir else {
        return;
    };
    if me.mirror_addresses.is_empty() {
        r.problems.push(format!(
            "mirroring: device `{}` has no mirror_addresses in {}",
            d.name,
            file.display()
        ));
    }
    let files = TrustFiles::in_dir(dir, &d.name);
    let missing: Vec<String> = [&files.ca, &files.cert, &files.key]
        .into_iter()
        .filter_map(|p| {
            std::fs::metadata(p).err().map(|e| {
                format!(
                    "mirroring: {}: {e} (create it with `lbctl trust`)",
                    p.display()
                )
            })
        })
        .collect();
    if !missing.is_empty() {
        r.problems.extend(missing);
        return;
    }
    if let Err(e) = trust::server_config(&files.ca, &files.cert, &files.key, &[])
        .and_then(|_| trust::client_config(&files.ca, &files.cert, &files.key))
    {
        r.problems.push(format!("mirroring: {e}"));
    }
}

fn listeners(config: &Config, running: bool, r: &mut Report) {
    let standalone = config.device.device_group.is_none();
    for (name, vs) in &config.virtual_servers {
        let addr = vs.destination;
        if standalone && !addr.ip().is_unspecified() && !is_local(addr) {
            r.problems.push(format!(
                "virtual_servers.{name}: {} is not an address of this machine (without a \
                 device group lbd adds no addresses: it would listen there and receive nothing)",
                addr.ip()
            ));
            continue;
        }
        let bound = match vs.protocol {
            Protocol::Tcp => crate::sys::tcp_listener(addr, 1).map(drop),
            Protocol::Udp => crate::sys::udp_socket_std(addr).map(drop),
        };
        if let Err(e) = bound {
            r.problems.push(format!(
                "virtual_servers.{name}: cannot listen on {} {addr}: {e}",
                vs.protocol
            ));
        }
    }
    if let Some(addr) = config.device.metrics {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            let line = format!("device.metrics: cannot listen on {addr}: {e}");
            if running && e.kind() == std::io::ErrorKind::AddrInUse {
                r.notes
                    .push(format!("{line} (the running lbd's, presumably)"));
            } else {
                r.problems.push(line);
            }
        }
    }
}

/// Whether `addr`'s address is one of this machine's: a bind without IP_FREEBIND succeeds.
fn is_local(addr: SocketAddr) -> bool {
    let any_port = SocketAddr::new(addr.ip(), 0);
    match std::net::UdpSocket::bind(any_port) {
        Ok(_) => true,
        Err(e) => e.raw_os_error() != Some(libc::EADDRNOTAVAIL),
    }
}
