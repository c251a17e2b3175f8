//! `bgpd --check`: what a start would try, as a dry run, with every problem found reported
//! once, in one line each ([`check`]).
//!
//! Checked: the configuration file; the control-socket groups; each `listen` address, bound as
//! the daemon binds it (SO_REUSEADDR, IPV6_V6ONLY) and closed at once, with each neighbor's
//! TCP MD5 password installed on it as at start (a kernel without TCP_MD5SIG fails there); the
//! metrics listener. bgpd's listeners do not share ports: when a bgpd already answers on the
//! configured control socket, that is said in a note and the addresses it holds are notes too
//! (a second bgpd would not start, but `--check` is also what one runs before reloading the
//! running one); otherwise an address in use is a problem.
//!
//! Nothing is started: no runtime, no socket left open, no file written.

use std::path::Path;

use crate::config::Config;

pub use spanlb_control::check::Report;

/// Checks the configuration file at `path` and what a start with it would bind.
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
    let running = std::os::unix::net::UnixStream::connect(&config.control_socket).is_ok();
    if running {
        r.notes.push(format!(
            "a bgpd answers on {}: a second one would not start (the control socket is taken)",
            config.control_socket.display()
        ));
    }
    let in_use = |line: String, e: &std::io::Error, r: &mut Report| {
        if running && e.kind() == std::io::ErrorKind::AddrInUse {
            r.notes
                .push(format!("{line} (the running bgpd's, presumably)"));
        } else {
            r.problems.push(line);
        }
    };
    for addr in &config.listen {
        let l = match crate::sockopt::listener_std(*addr) {
            Ok(l) => l,
            Err(e) => {
                in_use(format!("listen: cannot listen on {addr}: {e}"), &e, &mut r);
                continue;
            }
        };
        for n in &config.neighbors {
            let Some(pw) = n.password.as_deref() else {
                continue;
            };
            if n.address.is_ipv4() != addr.is_ipv4() {
                continue;
            }
            if let Err(e) = crate::sockopt::set_md5(&l, n.address, Some(pw.as_bytes())) {
                r.problems.push(format!(
                    "neighbor {}: cannot set its TCP MD5 password on the listener {addr}: {e}",
                    n.address
                ));
            }
        }
    }
    if let Some(addr) = config.metrics {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            in_use(format!("metrics: cannot listen on {addr}: {e}"), &e, &mut r);
        }
    }
    r.summary = format!(
        "{file}: ok ({} neighbors, {} routes)",
        config.neighbors.len(),
        config.routes.len()
    );
    r
}
