//! Live membership in the cluster lab: a fourth device `d` added to the running seed lab, as
//! an operator adds a box (README, "Operations"): its own namespace on the external, internal
//! and HA segments, its certificate from the group CA, its own bgpd and lbd with only its
//! device-local files (lbd's `[device]` and a device-group file naming only itself), and r1
//! told of the one new neighbor. Everything stays inside the lab's namespaces and is torn
//! down with it.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use spanlb_lab::{cargo_bin, wait_until_dbg, LabError, Ns, Proc, Result};

use crate::cluster::{lbctl_at, ClusterLab};

/// Device d's addresses (next to the seed's a, b, c: .9 on every segment).
pub const D_EXT: &str = "20.1.1.9";
pub const D_INT: &str = "10.1.1.9";
pub const D_HA: &str = "192.168.100.9";
/// `lbctl device-group add` for d, as an operator runs it on a member.
pub const ADD_D: [&str; 7] = [
    "device-group",
    "add",
    "d",
    "--failover-address",
    D_HA,
    "--mirror-address",
    D_HA,
];
/// tg-4, the traffic group added for d: its floating self IPs.
pub const TG4_EXT: &str = "20.1.1.5";
pub const TG4_INT: &str = "10.1.1.5";

/// The fourth device.
pub struct Joiner {
    pub ns: Ns,
    pub lbd_config: PathBuf,
    pub bgpd_config: PathBuf,
    pub group_config: PathBuf,
    pub lbd_socket: PathBuf,
    pub bgpd_socket: PathBuf,
    procs: Mutex<Vec<Proc>>,
}

impl Drop for Joiner {
    fn drop(&mut self) {
        self.stop();
    }
}

fn io(ctx: &str) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |e| LabError::io(ctx, e)
}

impl Joiner {
    /// Makes d's namespace, links, addresses, certificate and files, and tells r1 of the new
    /// neighbor (one line of FRR configuration). Starts nothing.
    pub fn prepare(lab: &ClusterLab) -> Result<Joiner> {
        Joiner::prepare_with(lab, false)
    }

    /// The same; with `foreign_ca`, d's certificate comes from another CA that also calls
    /// itself `seed` (in its own trust directory `LAB/trust-d`, with that CA).
    pub fn prepare_with(lab: &ClusterLab, foreign_ca: bool) -> Result<Joiner> {
        let ns = lab.lab.ns("d")?;
        lab.lab
            .bridge_segment("ext", &[(&ns, "ext0", &[&format!("{D_EXT}/24")])])?;
        lab.lab
            .bridge_segment("int", &[(&ns, "int0", &[&format!("{D_INT}/24")])])?;
        lab.lab
            .bridge_segment("ha", &[(&ns, "ha0", &[&format!("{D_HA}/24")])])?;
        ns.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
        ns.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
        ns.route("add default via 20.1.1.1")?;
        let dir = lab.lab.dir().to_path_buf();
        let trust = if foreign_ca {
            dir.join("trust-d")
        } else {
            dir.join("trust")
        };
        {
            use lbd::mirror::trust;
            let bad = |e: trust::TrustError| LabError::Invalid(format!("trust: {e}"));
            let ca = if foreign_ca {
                let ca = trust::create_ca("seed").map_err(bad)?;
                trust::write_pair(&trust, "ca", &ca, true).map_err(bad)?;
                ca
            } else {
                trust::read_pair(&trust, "ca").map_err(bad)?
            };
            let ha = D_HA.parse().map_err(|_| LabError::Invalid("D_HA".into()))?;
            let pair = trust::issue_device(&ca, "d", &[ha]).map_err(bad)?;
            trust::write_pair(&trust, "d", &pair, true).map_err(bad)?;
        }
        let j = Joiner {
            ns,
            lbd_config: dir.join("lbd-d.toml"),
            bgpd_config: dir.join("bgpd-d.toml"),
            group_config: dir.join("device-group-d.toml"),
            lbd_socket: dir.join("lbd-d.sock"),
            bgpd_socket: dir.join("bgpd-d.sock"),
            procs: Mutex::new(Vec::new()),
        };
        std::fs::write(
            &j.bgpd_config,
            crate::topology::device_bgpd_toml(D_EXT, &j.bgpd_socket, "20.1.1.1", ""),
        )
        .map_err(io("writing bgpd-d.toml"))?;
        std::fs::write(
            &j.lbd_config,
            format!(
                "[device]\nname = \"d\"\ninternal_address = \"{D_INT}\"\n\
                 control_socket = \"{sock}\"\nworkers = 1\ndrain_timeout = \"0s\"\nexternal_address = \"{D_EXT}\"\n\
                 device_group = \"{group}\"\nexternal_interface = \"ext0\"\n\
                 internal_interface = \"int0\"\nvip_interface = \"lo\"\nbgpd_socket = \"{bgpd}\"\n\
                 mirror_trust_dir = \"{trust}\"\n",
                sock = j.lbd_socket.display(),
                group = j.group_config.display(),
                bgpd = j.bgpd_socket.display(),
                trust = trust.display(),
            ),
        )
        .map_err(io("writing lbd-d.toml"))?;
        std::fs::write(&j.group_config, Joiner::stub_group(lab))
            .map_err(io("writing device-group-d.toml"))?;
        lab.frr.vtysh_cmds(&[
            "configure terminal",
            "router bgp 65000",
            &format!("neighbor {D_EXT} peer-group DEV"),
        ])?;
        Ok(j)
    }

    /// d's device-group file before it joins: the group's settings (as the members have
    /// them: same name, ports, timing and route mode) and d alone.
    fn stub_group(lab: &ClusterLab) -> String {
        let key = lab.lab.dir().join("group.key");
        format!(
            "[group]\nname = \"seed\"\nkey_file = \"{key}\"\nheartbeat_port = 1026\n\
             heartbeat_interval = \"{hi}\"\ndead_after = \"{da}\"\nroute_mode = \"l2\"\n{extra}\n\
             [[devices]]\nname = \"d\"\nfailover_addresses = [\"{D_HA}\"]\n\
             mirror_addresses = [\"{D_HA}\"]\n",
            key = key.display(),
            hi = lab.opts.heartbeat_interval,
            da = lab.opts.dead_after,
            extra = lab.opts.group_extra,
        )
    }

    /// Starts d's bgpd, then its lbd, and waits for lbd's control socket.
    pub fn start(&self) -> Result<()> {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        for (which, cfg, sock) in [
            ("bgpd", &self.bgpd_config, &self.bgpd_socket),
            ("lbd", &self.lbd_config, &self.lbd_socket),
        ] {
            let mut cmd = std::process::Command::new(cargo_bin(which));
            cmd.arg("--config")
                .arg(cfg)
                .env("RUST_LOG", "info,lbd=debug,bgpd=info");
            procs.push(self.ns.spawn_cmd(cmd, format!("{which}-d.log"))?);
            let sock = sock.clone();
            wait_until_dbg(Duration::from_secs(10), "d's control socket", || {
                if sock.exists() {
                    Ok(())
                } else {
                    Err(())
                }
            })?;
        }
        Ok(())
    }

    /// Stops d's lbd, then bgpd (SIGTERM, SIGKILL after 5 s; lbd's `drain_timeout` is 0).
    pub fn stop(&self) {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(p) = procs.pop() {
            let _ = p.signal(libc::SIGTERM);
            if p.wait_timeout(Duration::from_secs(5)).is_none() {
                p.kill();
            }
        }
    }

    /// The last `n` lines of d's lbd log.
    pub fn lbd_log(&self, n: usize) -> String {
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        procs
            .iter()
            .find(|p| p.log_path().to_string_lossy().contains("lbd-d"))
            .map(|p| {
                let log = p.log();
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(n)..].join("\n")
            })
            .unwrap_or_default()
    }

    /// `lbctl --json ARGS` against d's lbd.
    pub fn lbctl(&self, args: &[&str]) -> std::result::Result<Value, String> {
        lbctl_at(&self.ns, &self.lbd_socket, args)
    }
}

/// The TOML of tg-4: d first in its HA order, then a, b, c; path id 4.
pub fn tg4_toml() -> String {
    format!(
        "\n[[traffic_groups]]\nname = \"tg-4\"\nha_order = [\"d\", \"a\", \"b\", \"c\"]\n\
         external_floating = \"{TG4_EXT}/24\"\ninternal_floating = \"{TG4_INT}/24\"\n\
         auto_failback = true\nfailback_delay = \"2s\"\npath_id = 4\n"
    )
}
