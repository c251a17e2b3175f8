//! The seed's three-device cluster lab (docs/design.md, "ECMP and failover"; docs/design.md, "The lab") in network namespaces, built from
//! the tables in [`crate::topology`]: a client, FRR router `r1`, devices A, B, C running
//! bgpd + lbd in one device group, and servers s1–s3 behind them.
//!
//! - L2 mode (default): r1 and the devices share the external segment; each traffic group's
//!   floating external self IP moves with it.
//! - Routed mode ([`ClusterOptions::routed`]): r1 has a link of its own to each device
//!   ([`ROUTED_EXTERNAL`]); devices also announce their floating self IPs as /32s.
//!
//! The servers have no default route (they know only 10.1.1.0/24): an answer proves SNAT.
//! Everything is bounded in time; the [`Lab`] tears it all down on drop (also on panic).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use spanlb_lab::seed::GroupToml;
use spanlb_lab::{cargo_bin, wait_until_dbg, Frr, Lab, LabError, Ns, Proc, Result, Segment};

use crate::topology::{
    self, DeviceAddrs, Role, DEVICES, NODES, ROUTED_EXTERNAL, SERVERS, SERVER_TCP_PORT,
    SERVER_UDP_PORT, VIP, VIP_TCP_PORT, VIP_UDP_PORT,
};
use crate::traffic::Servers;

/// Tools the cluster lab needs.
pub const TOOLS: [&str; 3] = ["/usr/lib/frr/zebra", "/usr/lib/frr/bgpd", "vtysh"];

/// How the lab is built.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Routed mode: a link from r1 to each device instead of the shared external segment.
    pub routed: bool,
    /// Heartbeat interval of the device group.
    pub heartbeat_interval: String,
    /// A device not heard from this long is dead.
    pub dead_after: String,
    /// Failback delay of every traffic group.
    pub failback_delay: String,
    /// Auto-failback of every traffic group.
    pub auto_failback: bool,
    /// Interval (and timeout) of the pools' TCP monitor.
    pub monitor_interval: String,
    /// Write `route_mode` into the device-group file.
    pub route_mode_key: bool,
    /// No device group: lbd with its pre-cluster configuration, the VIP on `lo`, every
    /// floating address on its home device and bgpd announcing the VIP statically (checks the
    /// lab itself while lbd's device group is not available).
    pub plain: bool,
    /// Start the devices' daemons in [`ClusterLab::build`].
    pub start_devices: bool,
    /// Give tg-k the masquerade MAC [`masquerade_mac(k)`](masquerade_mac).
    pub mac_masquerade: bool,
    /// Mirroring: a group CA and device certificates in `LAB/trust`, and every lbd's
    /// `mirror_trust_dir` pointing there.
    pub mirroring: bool,
    /// Extra lines of the `web` virtual server (e.g. `persistence = "src"`).
    pub web_extra: String,
    /// Extra TOML appended to every lbd configuration (profiles, virtual servers, pools).
    pub lbd_extra: String,
    /// Extra lines of every lbd's `[device]` table (e.g. `takeover_restore_budget = "100ms"\n`).
    pub device_extra: String,
    /// Extra lines of the device group's `[group]` table (e.g. `auto_sync = true\n`).
    pub group_extra: String,
    /// Plugin packages built and copied into `LAB/plugins`, every lbd's `plugin_dir`.
    pub plugins: Vec<&'static str>,
    /// `failback_sync_max_wait` of every traffic group (e.g. "8s"); None leaves lbd's default.
    pub failback_sync_max_wait: Option<String>,
    /// The group's `mirror_scope` ("next-active" or "all-peers"); None leaves lbd's default.
    pub mirror_scope: Option<String>,
    /// The group's `persistence_mirror_scope`; None leaves lbd's default.
    pub persistence_mirror_scope: Option<String>,
    /// A second failover (heartbeat) and mirror address per device, its static internal self
    /// IP, as the seed does with its HA VLAN plus another address: cutting the HA segment
    /// then splits nothing.
    pub second_failover_path: bool,
    /// BFD between r1 (FRR's bfdd, `neighbor DEV bfd`) and every device's bgpd (`bfd = {}`),
    /// both on their 300 ms × 3 defaults.
    pub bfd: bool,
    /// Graceful restart (RFC 4724) in every device's bgpd (`[graceful_restart]`, restart
    /// time 60 s); r1's FRR is a helper by default.
    pub graceful_restart: bool,
    /// Every lbd's `drain_timeout`. Default `0s`: the stop helpers send SIGTERM and SIGKILL 5 s
    /// later, and the tests were written for a stop that does not wait for connections.
    pub drain_timeout: String,
}

/// The masquerade MAC of tg-`k` when [`ClusterOptions::mac_masquerade`] is on.
pub use spanlb_lab::seed::masquerade_mac;

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            routed: false,
            heartbeat_interval: "100ms".into(),
            dead_after: "500ms".into(),
            failback_delay: "2s".into(),
            auto_failback: true,
            monitor_interval: "300ms".into(),
            route_mode_key: true,
            plain: false,
            start_devices: true,
            mac_masquerade: false,
            mirroring: false,
            web_extra: String::new(),
            lbd_extra: String::new(),
            device_extra: String::new(),
            group_extra: String::new(),
            plugins: Vec::new(),
            failback_sync_max_wait: None,
            mirror_scope: None,
            persistence_mirror_scope: None,
            second_failover_path: false,
            bfd: false,
            graceful_restart: false,
            drain_timeout: "0s".into(),
        }
    }
}

/// One of a device's two daemons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    Bgpd,
    Lbd,
}

impl Daemon {
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Bgpd => "bgpd",
            Daemon::Lbd => "lbd",
        }
    }
}

/// One device of the lab.
pub struct Device {
    pub name: &'static str,
    pub ns: Ns,
    pub addrs: &'static DeviceAddrs,
    /// Static external self IP (20.1.1.6 in L2 mode, 20.1.6.6 in routed mode).
    pub static_ext: String,
    /// r1's address on this device's external link.
    pub router: String,
    pub lbd_config: PathBuf,
    pub bgpd_config: PathBuf,
    pub lbd_socket: PathBuf,
    pub bgpd_socket: PathBuf,
    procs: Mutex<DeviceProcs>,
    /// SIGSTOPped (not live) until SIGCONT.
    paused: AtomicBool,
}

#[derive(Default)]
struct DeviceProcs {
    bgpd: Option<Proc>,
    lbd: Option<Proc>,
}

impl Device {
    /// Both daemons running and not stopped.
    pub fn is_live(&self) -> bool {
        let p = lock(&self.procs);
        !self.paused.load(Ordering::Relaxed)
            && p.lbd.as_ref().is_some_and(Proc::is_running)
            && p.bgpd.as_ref().is_some_and(Proc::is_running)
    }

    fn log_tail(&self, which: &str, n: usize) -> String {
        let p = lock(&self.procs);
        let proc = if which == "lbd" { &p.lbd } else { &p.bgpd };
        match proc {
            Some(p) => {
                let log = p.log();
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(n)..].join("\n")
            }
            None => "(not started)".into(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The cluster lab. Fields are public for tests that need more than the helpers.
pub struct ClusterLab {
    pub opts: ClusterOptions,
    pub client: Ns,
    pub r1: Ns,
    pub frr: Frr,
    pub devices: Vec<Device>,
    pub servers: Vec<Ns>,
    /// The L2 segments by name (`cl`, `ext` or `ra`/`rb`/`rc`, `int`, `ha`).
    pub segments: BTreeMap<String, Segment>,
    pub group_key_hex: String,
    pub group_config: PathBuf,
    // Dropped before the lab (field order): server threads stop before namespaces go.
    pub traffic: Servers,
    pub lab: Lab,
}

/// A traffic group as one device sees it (`lbctl show traffic-groups`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TgView {
    pub name: String,
    pub active: Option<String>,
    pub state: String,
}

fn io(ctx: &str) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |e| LabError::io(ctx, e)
}

/// 32 random bytes as 64 hex digits.
fn random_key_hex() -> String {
    use std::io::Read;
    let mut b = [0u8; 32];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> (i % 16 * 8)) as u8 ^ (i as u8).wrapping_mul(37);
        }
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl ClusterLab {
    /// Builds the lab: namespaces, segments, addresses, routes, sysctls, servers, r1's FRR,
    /// configuration files, and (unless `start_devices` is false) every device's bgpd + lbd.
    pub fn build(test_name: &str, opts: ClusterOptions) -> Result<ClusterLab> {
        let lab = Lab::new(test_name)?;
        let mut nss: BTreeMap<&str, Ns> = BTreeMap::new();
        for n in NODES {
            nss.insert(n.name, lab.ns(n.name)?);
        }
        let links: Vec<topology::Segment> = if opts.routed {
            topology::routed_links()
        } else {
            topology::LINKS.to_vec()
        };
        let mut segments = BTreeMap::new();
        for seg in &links {
            let members: Vec<(&Ns, &str, &[&str])> = seg
                .ports
                .iter()
                .map(|p| (&nss[p.node], p.ifname, p.addrs))
                .collect();
            segments.insert(
                seg.name.to_string(),
                lab.bridge_segment(seg.name, &members)?,
            );
        }
        let client = nss["client"].clone();
        let r1 = nss["r1"].clone();
        client.route(&format!("add default via {}", addr_of("r1", "cl", &links)?))?;
        r1.sysctl("net.ipv4.ip_forward", "1")?;
        r1.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;

        let dir = lab.dir().to_path_buf();
        let key_hex = random_key_hex();
        let key_file = dir.join("group.key");
        std::fs::write(&key_file, format!("{key_hex}\n")).map_err(io("writing group.key"))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
                .map_err(io("chmod group.key"))?;
        }
        let group_config = dir.join("device-group.toml");
        std::fs::write(&group_config, group_toml(&opts, &key_file))
            .map_err(io("writing device-group.toml"))?;
        if opts.mirroring {
            write_trust(&dir.join("trust"))?;
        }
        if !opts.plugins.is_empty() {
            let pdir = dir.join("plugins");
            std::fs::create_dir_all(&pdir).map_err(io("creating the plugin directory"))?;
            // The release profile when this code is a release build (e.g. a benchmark).
            let profile = (!cfg!(debug_assertions)).then_some("release");
            for so in spanlb_lab::build_cdylibs(&opts.plugins, profile)?.values() {
                let name = so.file_name().map(|n| n.to_os_string()).unwrap_or_default();
                std::fs::copy(so, pdir.join(name)).map_err(io("copying a plugin"))?;
            }
        }

        let mut devices = Vec::new();
        for d in DEVICES {
            let ns = nss[d.name].clone();
            let (static_ext, router) = if opts.routed {
                let seg = ROUTED_EXTERNAL
                    .iter()
                    .find(|s| s.ports.iter().any(|p| p.node == d.name))
                    .ok_or_else(|| LabError::Invalid(format!("no routed link for {}", d.name)))?;
                (
                    addr_of(d.name, seg.name, &links)?,
                    addr_of("r1", seg.name, &links)?,
                )
            } else {
                (d.static_ext.to_string(), addr_of("r1", "ext", &links)?)
            };
            ns.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
            ns.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
            ns.route(&format!("add default via {router}"))?;
            devices.push(Device {
                name: d.name,
                ns,
                addrs: d,
                static_ext,
                router,
                lbd_config: dir.join(format!("lbd-{}.toml", d.name)),
                bgpd_config: dir.join(format!("bgpd-{}.toml", d.name)),
                lbd_socket: dir.join(format!("lbd-{}.sock", d.name)),
                bgpd_socket: dir.join(format!("bgpd-{}.sock", d.name)),
                procs: Mutex::new(DeviceProcs::default()),
                paused: AtomicBool::new(false),
            });
        }
        let servers: Vec<Ns> = NODES
            .iter()
            .filter(|n| n.role == Role::Server)
            .map(|n| nss[n.name].clone())
            .collect();
        let traffic = Servers::start(
            &servers
                .iter()
                .map(|s| (s.clone(), s.short().to_string()))
                .collect::<Vec<_>>(),
        )?;
        let frr = lab.frr(&r1, &frr_config(&devices, opts.routed, opts.bfd))?;
        let lab = ClusterLab {
            opts,
            client,
            r1,
            frr,
            devices,
            servers,
            segments,
            group_key_hex: key_hex,
            group_config,
            traffic,
            lab,
        };
        for d in &lab.devices {
            std::fs::write(&d.bgpd_config, lab.bgpd_toml(d)).map_err(io("writing bgpd config"))?;
            std::fs::write(&d.lbd_config, lab.lbd_toml(d)).map_err(io("writing lbd config"))?;
            if lab.opts.plain {
                // What lbd's device group would do, statically: the VIP on lo and each home
                // traffic group's floating addresses on its device.
                d.ns.add_addr("lo", &format!("{VIP}/32"))?;
                let plen = if lab.opts.routed { 32 } else { 24 };
                d.ns.add_addr("ext0", &format!("{}/{plen}", d.addrs.floating_ext))?;
                d.ns.add_addr("int0", &format!("{}/24", d.addrs.floating_int))?;
            }
        }
        if lab.opts.start_devices {
            for d in DEVICES {
                lab.start_device(d.name)?;
            }
        }
        Ok(lab)
    }

    /// [`build`](Self::build) with mirroring on (config sync needs its trust), then waits for
    /// the steady state and every device `in-sync` (45 s at most); panics with the lab's dump
    /// otherwise.
    pub fn build_synced(test_name: &str, opts: ClusterOptions) -> ClusterLab {
        let opts = ClusterOptions {
            mirroring: true,
            ..opts
        };
        let lab = ClusterLab::build(test_name, opts).expect("building the cluster lab");
        let r = lab.wait_steady(Duration::from_secs(45));
        lab.ok(r, "steady state");
        let r = lab.wait_config_status("in-sync");
        lab.ok(r, "in sync at start");
        lab
    }

    /// Keeps the lab after this process exits (namespaces, daemons, directory): the
    /// in-process servers are replaced by python3 ones (same answers) that outlive us.
    pub fn keep(&mut self) -> Result<()> {
        self.traffic.stop();
        let script = self.lab.dir().join("server.py");
        std::fs::write(&script, crate::traffic::PYTHON_SERVER).map_err(io("writing server.py"))?;
        for s in &self.servers {
            s.spawn(
                &["python3", &script.to_string_lossy(), s.short()],
                format!("server-{}.log", s.short()),
            )?;
        }
        self.lab.keep();
        Ok(())
    }

    /// A device by name.
    pub fn device(&self, name: &str) -> &Device {
        self.devices
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("no device `{name}`"))
    }

    /// bgpd's configuration of `d` (no static routes: lbd announces; in plain mode the VIP
    /// with path id k and next hop = the floating external self IP of tg-k).
    pub fn bgpd_toml(&self, d: &Device) -> String {
        let mut c = crate::topology::device_bgpd_toml(
            &d.static_ext.to_string(),
            &d.bgpd_socket,
            &d.router.to_string(),
            if self.opts.bfd { "bfd = {}" } else { "" },
        );
        if self.opts.graceful_restart {
            c.push_str("[graceful_restart]\nenabled = true\nrestart_time = 60\n\n");
        }
        if self.opts.plain {
            c.push_str(&format!(
                "[[route]]\nprefix = \"{VIP}/32\"\npath_id = {}\nnext_hop = \"{}\"\n\n",
                d.addrs.tg, d.addrs.floating_ext
            ));
            if self.opts.routed {
                c.push_str(&format!(
                    "[[route]]\nprefix = \"{}/32\"\npath_id = {}\n\n",
                    d.addrs.floating_ext, d.addrs.tg
                ));
            }
        }
        c
    }

    /// lbd's configuration of `d`.
    pub fn lbd_toml(&self, d: &Device) -> String {
        let dir = self.lab.dir();
        let mut c = format!(
            "[device]\nname = \"{name}\"\ninternal_address = \"{int}\"\ncontrol_socket = \"{sock}\"\n\
             workers = 1\ndrain_timeout = \"{drain}\"\n",
            name = d.name,
            int = d.addrs.static_int,
            sock = d.lbd_socket.display(),
            drain = self.opts.drain_timeout,
        );
        if !self.opts.plain {
            c.push_str(&format!(
                "external_address = \"{ext}\"\ndevice_group = \"{group}\"\n\
                 external_interface = \"ext0\"\ninternal_interface = \"int0\"\n\
                 vip_interface = \"lo\"\nbgpd_socket = \"{bgpd}\"\n",
                ext = d.static_ext,
                group = dir.join("device-group.toml").display(),
                bgpd = d.bgpd_socket.display(),
            ));
            if !self.opts.plugins.is_empty() {
                c.push_str(&format!(
                    "plugin_dir = \"{}\"\n",
                    dir.join("plugins").display()
                ));
            }
            if self.opts.mirroring {
                c.push_str(&format!(
                    "mirror_trust_dir = \"{}\"\n",
                    dir.join("trust").display()
                ));
            }
        }
        c.push_str(&self.opts.device_extra);
        let members = |port: u16| {
            SERVERS
                .iter()
                .map(|(_, a)| format!("{{ address = \"{a}:{port}\" }}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        c.push_str(&format!(
            r#"
[[virtual_addresses]]
address = "{VIP}"
advertise = "any"

[virtual_servers.web]
destination = "{VIP}:{VIP_TCP_PORT}"
protocol = "tcp"
pool = "web"
snat = "automap"
{web_extra}

[virtual_servers.dns]
destination = "{VIP}:{VIP_UDP_PORT}"
protocol = "udp"
pool = "dns"
snat = "automap"

[pools.web]
members = [{web}]
monitors = ["tcp"]

[pools.dns]
members = [{dns}]

[monitors.tcp]
type = "tcp"
interval = "{mi}"
timeout = "{mi}"
"#,
            web = members(SERVER_TCP_PORT),
            dns = members(SERVER_UDP_PORT),
            mi = self.opts.monitor_interval,
            web_extra = self.opts.web_extra,
        ));
        c.push_str(&self.opts.lbd_extra);
        c
    }

    /// Starts `dev`'s bgpd, then its lbd (logs `bgpd-X.log`, `lbd-X.log` in the lab dir).
    pub fn start_device(&self, dev: &str) -> Result<()> {
        let d = self.device(dev);
        let mut guard = lock(&d.procs);
        let p = &mut *guard;
        for (which, slot, cfg) in [
            ("bgpd", &mut p.bgpd, &d.bgpd_config),
            ("lbd", &mut p.lbd, &d.lbd_config),
        ] {
            if slot.as_ref().is_some_and(Proc::is_running) {
                continue;
            }
            let mut cmd = std::process::Command::new(cargo_bin(which));
            cmd.arg("--config")
                .arg(cfg)
                .env("RUST_LOG", "info,lbd=debug,bgpd=info");
            *slot = Some(d.ns.spawn_cmd(cmd, format!("{which}-{dev}.log"))?);
            if which == "bgpd" {
                // lbd connects to bgpd's control socket: let it appear first (bounded).
                let sock = d.bgpd_socket.clone();
                let _ = wait_until_dbg(Duration::from_secs(5), "bgpd control socket", || {
                    if sock.exists() {
                        Ok(())
                    } else {
                        Err(())
                    }
                });
            }
        }
        d.paused.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// SIGTERMs `dev`'s lbd then bgpd (SIGKILL after 5 s each).
    pub fn stop_device(&self, dev: &str) {
        let d = self.device(dev);
        let mut guard = lock(&d.procs);
        let p = &mut *guard;
        if d.paused.swap(false, Ordering::Relaxed) {
            for proc in [&p.lbd, &p.bgpd].into_iter().flatten() {
                let _ = proc.signal(libc::SIGCONT);
            }
        }
        for slot in [&mut p.lbd, &mut p.bgpd] {
            if let Some(proc) = slot.take() {
                let _ = proc.signal(libc::SIGTERM);
                if proc.wait_timeout(Duration::from_secs(5)).is_none() {
                    proc.kill();
                }
            }
        }
    }

    /// SIGTERMs `dev`'s lbd only (SIGKILL after 5 s); its bgpd keeps running.
    pub fn stop_lbd(&self, dev: &str) {
        let d = self.device(dev);
        let mut p = lock(&d.procs);
        if let Some(proc) = p.lbd.take() {
            if d.paused.swap(false, Ordering::Relaxed) {
                for other in [Some(&proc), p.bgpd.as_ref()].into_iter().flatten() {
                    let _ = other.signal(libc::SIGCONT);
                }
            }
            let _ = proc.signal(libc::SIGTERM);
            if proc.wait_timeout(Duration::from_secs(5)).is_none() {
                proc.kill();
            }
        }
    }

    /// Restarts `dev`'s lbd alone ([`stop_lbd`](Self::stop_lbd), then
    /// [`start_device`](Self::start_device), which leaves the running bgpd alone). Returns
    /// when the new lbd was spawned.
    pub fn restart_lbd(&self, dev: &str) -> Result<Instant> {
        self.stop_lbd(dev);
        let started = Instant::now();
        self.start_device(dev)?;
        Ok(started)
    }

    /// Sends `sig` to `dev`'s lbd and bgpd at once (SIGSTOP marks the device not live until
    /// SIGCONT; SIGKILL and SIGTERM wait for both to end, SIGKILL after 8 s).
    pub fn signal_device(&self, dev: &str, sig: i32) -> Result<()> {
        let d = self.device(dev);
        let p = lock(&d.procs);
        for proc in [&p.lbd, &p.bgpd].into_iter().flatten() {
            proc.signal(sig)?;
        }
        match sig {
            libc::SIGSTOP => d.paused.store(true, Ordering::Relaxed),
            libc::SIGCONT => d.paused.store(false, Ordering::Relaxed),
            libc::SIGKILL | libc::SIGTERM => {
                for proc in [&p.lbd, &p.bgpd].into_iter().flatten() {
                    if proc.wait_timeout(Duration::from_secs(8)).is_none() {
                        proc.kill();
                    }
                }
                d.paused.store(false, Ordering::Relaxed);
            }
            _ => {}
        }
        Ok(())
    }

    /// Sends `sig` to one of `dev`'s daemons (SIGKILL reaps it, and the device counts as
    /// not live until [`start_device`](Self::start_device) starts it again).
    pub fn signal_daemon(&self, dev: &str, which: Daemon, sig: i32) -> Result<()> {
        let d = self.device(dev);
        let mut p = lock(&d.procs);
        let slot = match which {
            Daemon::Bgpd => &mut p.bgpd,
            Daemon::Lbd => &mut p.lbd,
        };
        if let Some(proc) = slot.as_ref() {
            proc.signal(sig)?;
            if sig == libc::SIGKILL || sig == libc::SIGTERM {
                if proc.wait_timeout(Duration::from_secs(5)).is_none() {
                    proc.kill();
                }
                // Keep the log of the process that ended (lab dir), drop the handle.
                *slot = None;
            }
        }
        Ok(())
    }

    /// Waits until every live device agrees that `tg` is active on a device other than
    /// `from`; returns that device.
    pub fn wait_moved_off(&self, tg: &str, from: &str, timeout: Duration) -> Result<String> {
        wait_until_dbg(timeout, &format!("{tg} taken over from {from}"), || {
            let p = self.placement()?;
            match p.get(tg).cloned().flatten() {
                Some(d) if d != from => Ok(d),
                other => Err(format!("{other:?}")),
            }
        })
    }

    /// Cuts (`up = false`) or restores every device's link to the HA segment, at the switch.
    pub fn set_ha_link(&self, up: bool) -> Result<()> {
        let seg = self
            .segments
            .get("ha")
            .ok_or_else(|| LabError::Invalid("no ha segment".into()))?;
        for d in &self.devices {
            seg.set_port(&d.ns, "ha0", up)?;
        }
        Ok(())
    }

    /// r1's kernel route for the VIP as `ip route show` prints it: its nexthop group id and
    /// next hops, one string (for "did anything change").
    pub fn r1_route(&self) -> String {
        self.r1
            .ip(&["-4", "route", "show", VIP])
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The VIP's paths in r1's BGP table: (neighbor, next hop) of each.
    pub fn r1_vip_paths(&self) -> std::result::Result<BTreeSet<(String, String)>, String> {
        let v = self
            .frr
            .vtysh_json(&format!("show bgp ipv4 unicast {VIP}/32 json"))
            .map_err(|e| e.to_string())?;
        let Some(paths) = v["paths"].as_array() else {
            return Ok(BTreeSet::new());
        };
        Ok(paths
            .iter()
            .map(|p| {
                let peer = p["peer"]["peerId"].as_str().unwrap_or("?").to_string();
                let nh = p["nexthops"][0]["ip"].as_str().unwrap_or("?").to_string();
                (peer, nh)
            })
            .collect())
    }

    /// The (neighbor, next hop) pairs r1 has when every device in `announcing` announces
    /// every traffic group's path (L2 mode).
    pub fn all_paths_from(&self, announcing: &[&str]) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for d in self.devices.iter().filter(|d| announcing.contains(&d.name)) {
            for t in &self.devices {
                out.insert((d.static_ext.clone(), t.addrs.floating_ext.to_string()));
            }
        }
        out
    }

    /// Waits until r1's BGP table has exactly `want` for the VIP.
    pub fn wait_vip_paths(
        &self,
        want: &BTreeSet<(String, String)>,
        timeout: Duration,
    ) -> std::result::Result<(), String> {
        wait_until_dbg(timeout, &format!("r1's paths {want:?}"), || {
            let got = self.r1_vip_paths()?;
            if &got == want {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        })
        .map_err(|e| e.to_string())
    }

    /// Runs `lbctl --socket SOCK --json ARGS` in `dev`'s namespace (5 s bound) and parses its
    /// stdout; a non-zero exit or non-JSON output is an error with stderr.
    pub fn lbctl(&self, dev: &str, args: &[&str]) -> std::result::Result<Value, String> {
        let d = self.device(dev);
        lbctl_at(&d.ns, &d.lbd_socket, args).map_err(|e| format!("{e} (on {dev})"))
    }

    /// Runs `bgpctl --socket SOCK --json ARGS` in `dev`'s namespace (5 s bound) and parses its
    /// stdout (`Null` and the error text on failure, for assertions that print it).
    pub fn bgpctl(&self, dev: &str, args: &[&str]) -> Value {
        let d = self.device(dev);
        let mut full = vec!["--json"];
        full.extend_from_slice(args);
        match run_ctl("bgpctl", &d.ns, &d.bgpd_socket, &full) {
            Ok(o) if o.status.success() => serde_json::from_slice(&o.stdout).unwrap_or(Value::Null),
            Ok(o) => Value::String(String::from_utf8_lossy(&o.stderr).into_owned()),
            Err(e) => Value::String(e.to_string()),
        }
    }

    /// `dev`'s running load-balancing method of pool `pool` (`lbctl show pools POOL`).
    pub fn pool_method(&self, dev: &str, pool: &str) -> String {
        let v = self.ok(self.lbctl(dev, &["show", "pools", pool]), "show pools");
        let pools = v.get("pools").cloned().unwrap_or(v);
        let p = pools
            .as_array()
            .and_then(|p| p.first().cloned())
            .unwrap_or(pools);
        p["method"].as_str().unwrap_or("?").to_string()
    }

    /// Runs lbctl without `--json` (table form), stdout.
    pub fn lbctl_text(&self, dev: &str, args: &[&str]) -> String {
        let d = self.device(dev);
        match run_lbctl(&d.ns, &d.lbd_socket, args) {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("lbctl: {e}"),
        }
    }

    /// Waits (10 s at most) until `lbctl config status` says `want` on every device and, for
    /// `in-sync`, every device holds one digest; returns each device's status (a, b, c).
    pub fn wait_config_status(&self, want: &str) -> std::result::Result<Vec<Value>, String> {
        wait_until_dbg(Duration::from_secs(10), want, || {
            let all: Vec<Value> = ["a", "b", "c"]
                .iter()
                .map(|d| self.lbctl(d, &["config", "status"]))
                .collect::<std::result::Result<_, _>>()?;
            let digests: BTreeSet<String> = all
                .iter()
                .map(|s| s["generation"]["digest"].to_string())
                .collect();
            if all.iter().all(|s| s["status"] == want) && (want != "in-sync" || digests.len() == 1)
            {
                Ok(all)
            } else {
                Err(format!("{all:?}"))
            }
        })
        .map_err(|e| e.to_string())
    }

    /// `dev`'s view of the traffic groups.
    pub fn traffic_groups(&self, dev: &str) -> std::result::Result<Vec<TgView>, String> {
        let v = self.lbctl(dev, &["show", "traffic-groups"])?;
        let list = find_array(&v, "traffic_groups")
            .ok_or_else(|| format!("no traffic group list in {v}"))?;
        Ok(list
            .iter()
            .map(|t| TgView {
                name: t["name"].as_str().unwrap_or_default().to_string(),
                active: t["active"].as_str().map(str::to_string),
                state: t["state"].as_str().unwrap_or_default().to_string(),
            })
            .collect())
    }

    /// `dev`'s `show device-group` object.
    pub fn device_group(&self, dev: &str) -> std::result::Result<Value, String> {
        let v = self.lbctl(dev, &["show", "device-group"])?;
        Ok(match v.get("device_group") {
            Some(g) => g.clone(),
            None => v.get("data").cloned().unwrap_or(v),
        })
    }

    /// `dev`'s `show virtual-addresses` list.
    pub fn virtual_addresses(&self, dev: &str) -> std::result::Result<Vec<Value>, String> {
        let v = self.lbctl(dev, &["show", "virtual-addresses"])?;
        find_array(&v, "virtual_addresses")
            .cloned()
            .ok_or_else(|| format!("no virtual address list in {v}"))
    }

    /// Whether `dev` says the VIP should be advertised.
    pub fn vip_advertised(&self, dev: &str) -> std::result::Result<bool, String> {
        let vas = self.virtual_addresses(dev)?;
        vas.iter()
            .find(|v| v["address"].as_str() == Some(VIP))
            .and_then(|v| v["advertised"].as_bool())
            .ok_or_else(|| format!("{VIP} not in {vas:?}"))
    }

    /// Names of the devices that are live (daemons running, not stopped).
    pub fn live_devices(&self) -> Vec<&'static str> {
        self.devices
            .iter()
            .filter(|d| d.is_live())
            .map(|d| d.name)
            .collect()
    }

    /// Waits until every live device's `show traffic-groups` says each `(tg, device)` of
    /// `want` is active on that device.
    pub fn wait_placement(
        &self,
        want: &[(&str, &str)],
        timeout: Duration,
    ) -> std::result::Result<(), String> {
        wait_until_dbg(
            timeout,
            &format!("placement {want:?} on every live device"),
            || {
                let mut seen = BTreeMap::new();
                let mut ok = true;
                for dev in self.live_devices() {
                    match self.traffic_groups(dev) {
                        Ok(tgs) => {
                            for (tg, on) in want {
                                let active = tgs
                                    .iter()
                                    .find(|t| t.name == *tg)
                                    .and_then(|t| t.active.clone());
                                if active.as_deref() != Some(*on) {
                                    ok = false;
                                }
                            }
                            seen.insert(
                                dev,
                                tgs.iter()
                                    .map(|t| {
                                        format!("{}@{}", t.name, t.active.as_deref().unwrap_or("-"))
                                    })
                                    .collect::<Vec<_>>()
                                    .join(","),
                            );
                        }
                        Err(e) => {
                            ok = false;
                            seen.insert(dev, e);
                        }
                    }
                }
                if ok {
                    Ok(())
                } else {
                    Err(seen)
                }
            },
        )
        .map_err(|e| e.to_string())
    }

    /// The placement every live device agrees on (`tg → device`), or an error describing
    /// the disagreement.
    pub fn placement(&self) -> std::result::Result<BTreeMap<String, Option<String>>, String> {
        let mut agreed: Option<BTreeMap<String, Option<String>>> = None;
        let mut all = Vec::new();
        for dev in self.live_devices() {
            let m: BTreeMap<String, Option<String>> = self
                .traffic_groups(dev)?
                .into_iter()
                .map(|t| (t.name, t.active))
                .collect();
            all.push((dev, m.clone()));
            match &agreed {
                None => agreed = Some(m),
                Some(a) if *a != m => return Err(format!("devices disagree: {all:?}")),
                _ => {}
            }
        }
        agreed.ok_or_else(|| "no live device".into())
    }

    /// r1's kernel next hops for the VIP (`ip route show 30.1.1.10`, the "via" addresses).
    pub fn r1_nexthops(&self) -> Vec<IpAddr> {
        crate::seed::kernel_nexthops(&self.r1, "-4", VIP)
    }

    /// Waits until r1's kernel route for the VIP has exactly the next hops `want`.
    pub fn wait_nexthops(&self, want: &[&str], timeout: Duration) -> Result<Vec<IpAddr>> {
        let mut want: Vec<IpAddr> = want
            .iter()
            .map(|s| s.parse().expect("address literal"))
            .collect();
        want.sort();
        wait_until_dbg(
            timeout,
            &format!("r1 kernel route {VIP} via {want:?}"),
            || {
                let got = self.r1_nexthops();
                if got == want {
                    Ok(got)
                } else {
                    Err(got)
                }
            },
        )
    }

    /// The next hops r1 has in steady state: the floating external self IPs (L2 mode) or
    /// the devices' static external addresses they resolve through (routed mode).
    pub fn steady_nexthops(&self) -> Vec<String> {
        self.devices
            .iter()
            .map(|d| {
                if self.opts.routed {
                    d.static_ext.clone()
                } else {
                    d.addrs.floating_ext.to_string()
                }
            })
            .collect()
    }

    /// Waits until r1 has an Established session with every device.
    pub fn wait_sessions(&self, timeout: Duration) -> Result<()> {
        let want: Vec<String> = self.devices.iter().map(|d| d.static_ext.clone()).collect();
        wait_until_dbg(timeout, "r1's sessions with a, b, c established", || {
            let v = self
                .frr
                .vtysh_json("show bgp summary json")
                .map_err(|e| e.to_string())?;
            let peers = &v["ipv4Unicast"]["peers"];
            if want
                .iter()
                .all(|p| peers[p.as_str()]["state"] == "Established")
            {
                Ok(())
            } else {
                Err(peers.to_string())
            }
        })
    }

    /// Steady state: sessions up, tg-k on its home device everywhere (unless plain), r1 with
    /// all three next hops.
    pub fn wait_steady(&self, timeout: Duration) -> std::result::Result<(), String> {
        let t0 = Instant::now();
        self.wait_sessions(timeout).map_err(|e| e.to_string())?;
        if !self.opts.plain {
            let want: Vec<(String, &str)> = DEVICES
                .iter()
                .map(|d| (format!("tg-{}", d.tg), d.name))
                .collect();
            let want: Vec<(&str, &str)> = want.iter().map(|(t, d)| (t.as_str(), *d)).collect();
            self.wait_placement(&want, timeout.saturating_sub(t0.elapsed()))?;
        }
        let nh = self.steady_nexthops();
        let nh: Vec<&str> = nh.iter().map(String::as_str).collect();
        self.wait_nexthops(&nh, timeout.saturating_sub(t0.elapsed()))
            .map_err(|e| e.to_string())?;
        self.wait_traffic(timeout.saturating_sub(t0.elapsed()))
    }

    /// Waits until a batch of 30 short connections all succeed and reach every device.
    pub fn wait_traffic(&self, timeout: Duration) -> std::result::Result<(), String> {
        wait_until_dbg(timeout, "30 connections through a, b and c", || {
            let answers =
                crate::traffic::short_connections(&self.client, 30).map_err(|e| e.to_string())?;
            let spread = crate::traffic::per_device(&answers);
            let all = ["a", "b", "c"]
                .iter()
                .all(|d| spread.iter().any(|(k, _)| *k == Some(*d)));
            if all && answers.iter().all(Result::is_ok) {
                Ok(())
            } else {
                let errs: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
                Err(format!("{spread:?} errors {errs:?}"))
            }
        })
        .map_err(|e| e.to_string())
    }

    /// r1's ARP entry (MAC) for `addr`, if any.
    pub fn r1_neigh(&self, addr: &str) -> Option<String> {
        let out = self.r1.ip(&["neigh", "show", addr]).unwrap_or_default();
        let words: Vec<&str> = out.split_whitespace().collect();
        words
            .windows(2)
            .find(|w| w[0] == "lladdr")
            .map(|w| w[1].to_string())
    }

    /// The MAC address of `dev`'s `ifname`.
    pub fn device_mac(&self, dev: &str, ifname: &str) -> Option<String> {
        let out = self
            .device(dev)
            .ns
            .ip(&["-o", "link", "show", ifname])
            .ok()?;
        let words: Vec<&str> = out.split_whitespace().collect();
        words
            .windows(2)
            .find(|w| w[0] == "link/ether")
            .map(|w| w[1].to_string())
    }

    /// The device whose external MAC r1 has for `addr` now.
    pub fn r1_neigh_device(&self, addr: &str) -> Option<&'static str> {
        let mac = self.r1_neigh(addr)?;
        self.devices
            .iter()
            .find(|d| self.device_mac(d.name, "ext0").as_deref() == Some(mac.as_str()))
            .map(|d| d.name)
    }

    /// Everything useful for a failure message: r1's BGP table and route, each device's
    /// traffic-group view and the last 30 lines of each daemon's log.
    pub fn dump(&self) -> String {
        let mut s = String::from("\n===== cluster lab dump =====\n");
        s.push_str("--- r1: show bgp ipv4 unicast ---\n");
        s.push_str(
            &self
                .frr
                .vtysh("show bgp ipv4 unicast")
                .unwrap_or_else(|e| e.to_string()),
        );
        s.push_str(&format!(
            "--- r1: ip route show {VIP} ---\n{}",
            self.r1.ip(&["route", "show", VIP]).unwrap_or_default()
        ));
        s.push_str(&format!(
            "--- r1: ip neigh ---\n{}",
            self.r1.ip(&["neigh"]).unwrap_or_default()
        ));
        for d in &self.devices {
            s.push_str(&format!(
                "--- {}: live={} show traffic-groups ---\n{}\n",
                d.name,
                d.is_live(),
                if d.is_live() {
                    self.lbctl_text(d.name, &["show", "traffic-groups"])
                } else {
                    "(not live)".into()
                }
            ));
            s.push_str(&format!(
                "--- {}: addresses ---\n{}",
                d.name,
                d.ns.ip(&["-br", "addr"]).unwrap_or_default()
            ));
            for which in ["bgpd", "lbd"] {
                s.push_str(&format!(
                    "--- {which}-{} (last 30 lines) ---\n{}\n",
                    d.name,
                    d.log_tail(which, 30)
                ));
            }
        }
        s.push_str(&format!("lab dir: {}\n", self.lab.dir().display()));
        s
    }
}

impl Drop for ClusterLab {
    fn drop(&mut self) {
        // A stopped daemon must not outlive the test stopped: continue it before teardown.
        for d in &self.devices {
            if d.paused.load(Ordering::Relaxed) {
                let p = lock(&d.procs);
                for proc in [&p.lbd, &p.bgpd].into_iter().flatten() {
                    let _ = proc.signal(libc::SIGCONT);
                }
            }
        }
    }
}

/// The list under `key` (or `data`, or the value itself when it is a list).
fn find_array<'a>(v: &'a Value, key: &str) -> Option<&'a Vec<Value>> {
    v.get(key)
        .and_then(Value::as_array)
        .or_else(|| {
            v.get("data")
                .and_then(|d| d.get(key))
                .and_then(Value::as_array)
        })
        .or_else(|| v.get("data").and_then(Value::as_array))
        .or_else(|| v.as_array())
}

/// `node`'s first address (without prefix length) on segment `seg`.
fn addr_of(node: &str, seg: &str, links: &[topology::Segment]) -> Result<String> {
    links
        .iter()
        .filter(|s| s.name == seg)
        .flat_map(|s| s.ports.iter())
        .find(|p| p.node == node)
        .and_then(|p| p.addrs.first())
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
        .ok_or_else(|| LabError::Invalid(format!("{node} has no address on segment {seg}")))
}

/// The lab's device trust: the group CA (`seed`) and one certificate per device, naming its
/// HA address (its mirror address), as `lbctl trust init` and `issue` would write them.
pub fn write_trust(dir: &std::path::Path) -> Result<()> {
    use lbd::mirror::trust;
    let bad = |e: trust::TrustError| LabError::Invalid(format!("trust: {e}"));
    let ca = trust::create_ca("seed").map_err(bad)?;
    trust::write_pair(dir, "ca", &ca, true).map_err(bad)?;
    for d in DEVICES {
        let ha: IpAddr =
            d.ha.parse()
                .map_err(|_| LabError::Invalid(format!("bad HA address {}", d.ha)))?;
        let pair = trust::issue_device(&ca, d.name, &[ha]).map_err(bad)?;
        trust::write_pair(dir, d.name, &pair, true).map_err(bad)?;
    }
    Ok(())
}

/// The device-group file every device reads: the seed group ([`GroupToml::seed`]) with the
/// lab's options.
pub fn group_toml(opts: &ClusterOptions, key_file: &std::path::Path) -> String {
    GroupToml {
        heartbeat_port: Some(1026),
        heartbeat_interval: &opts.heartbeat_interval,
        dead_after: &opts.dead_after,
        route_mode: opts
            .route_mode_key
            .then_some(if opts.routed { "routed" } else { "l2" }),
        mirror_scope: opts.mirror_scope.as_deref(),
        persistence_mirror_scope: opts.persistence_mirror_scope.as_deref(),
        second_failover_path: opts.second_failover_path,
        external_prefix_len: if opts.routed { 32 } else { 24 },
        auto_failback: Some(opts.auto_failback),
        failback_delay: Some(&opts.failback_delay),
        failback_sync_max_wait: opts.failback_sync_max_wait.as_deref(),
        mac_masquerade: opts.mac_masquerade,
        group_extra: &opts.group_extra,
        ..GroupToml::seed(key_file)
    }
    .render()
}

/// r1's FRR configuration: eBGP (AS 65000) to the three devices (AS 65001), ECMP over their
/// paths; routed mode adds `disable-connected-check` (next hops are recursive); `bfd` ties each
/// session to a BFD session (bfdd's defaults, 300 ms × 3).
pub fn frr_config(devices: &[Device], routed: bool, bfd: bool) -> String {
    let mut c = String::from(
        "frr defaults datacenter\nhostname r1\nlog file bgpd.log\n!\n\
         router bgp 65000\n bgp router-id 20.1.1.1\n no bgp ebgp-requires-policy\n\
         no bgp network import-check\n bgp bestpath as-path multipath-relax\n\
         neighbor DEV peer-group\n neighbor DEV remote-as 65001\n neighbor DEV timers 3 9\n",
    );
    if routed {
        c.push_str(" neighbor DEV disable-connected-check\n");
    }
    if bfd {
        c.push_str(" neighbor DEV bfd\n");
    }
    for d in devices {
        c.push_str(&format!(" neighbor {} peer-group DEV\n", d.static_ext));
    }
    c.push_str(" address-family ipv4 unicast\n  maximum-paths 8\n exit-address-family\n!\n");
    c
}

/// `lbctl --socket SOCK ARGS` inside `ns`, 5 s at most, stdin closed.
fn run_lbctl(
    ns: &Ns,
    sock: &std::path::Path,
    args: &[&str],
) -> std::io::Result<std::process::Output> {
    run_ctl("lbctl", ns, sock, args)
}

/// `CTL --socket SOCK ARGS` (lbctl or bgpctl) inside `ns`, 5 s at most, stdin closed.
fn run_ctl(
    ctl: &str,
    ns: &Ns,
    sock: &std::path::Path,
    args: &[&str],
) -> std::io::Result<std::process::Output> {
    let bin = cargo_bin(ctl);
    let sock = sock.to_string_lossy().into_owned();
    let mut full = vec![
        "timeout",
        "5",
        bin.to_str().unwrap_or(ctl),
        "--socket",
        &sock,
    ];
    full.extend_from_slice(args);
    ns.command(&full)
        .stdin(std::process::Stdio::null())
        .output()
}

/// `lbctl --json ARGS` inside `ns` against the lbd at `sock` (5 s at most): the answer, or
/// an error with lbctl's output.
pub fn lbctl_at(
    ns: &Ns,
    sock: &std::path::Path,
    args: &[&str],
) -> std::result::Result<Value, String> {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = run_lbctl(ns, sock, &full).map_err(|e| format!("running lbctl: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "lbctl {}: {}: {} {}",
            args.join(" "),
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if stdout.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&stdout)
        .map_err(|e| format!("lbctl {}: {e}: {}", args.join(" "), stdout.trim()))
}

/// The lab's prerequisites: root, `ip`, FRR (skip with one line locally, fail under CI).
pub fn prereqs() -> bool {
    spanlb_lab::require_root_and_tools(&TOOLS).is_ok()
}

impl ClusterLab {
    /// Unwraps `r`, or panics with `what`, the error and [`dump`](Self::dump) (the message
    /// again after the dump).
    pub fn ok<T, E: std::fmt::Display>(&self, r: std::result::Result<T, E>, what: &str) -> T {
        match r {
            Ok(v) => v,
            // The message is repeated after the dump: CI shows a failure's last lines.
            Err(e) => panic!("{what}: {e}{}\nFAILED: {what}: {e}", self.dump()),
        }
    }

    /// Asserts `cond`, else panics with `msg` and [`dump`](Self::dump) (`msg` again after it).
    pub fn check(&self, cond: bool, msg: impl std::fmt::Display) {
        if !cond {
            panic!("{msg}{}\nFAILED: {msg}", self.dump());
        }
    }
}
