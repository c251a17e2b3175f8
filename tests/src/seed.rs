//! The seed's three-device ECMP lab (docs/design.md, "The lab"), for tests, the demo and benchmarks:
//! FRR router `r1` (AS 65000, 20.1.1.1) and devices A, B, C (AS 65001, 20.1.1.6–.8) on one
//! external segment, each device running our bgpd and announcing the VIP 30.1.1.10/32 with
//! ADD-PATH path id k and NEXT_HOP = the floating self IP of traffic group k (20.1.1.2–.4).
//! All addresses live inside the lab's namespaces.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use spanlb_lab::seed::DEVICES;
use spanlb_lab::{cargo_bin, wait_until_dbg, Frr, Lab, Ns, Proc, Result};

use crate::control::ControlClient;

pub const VIP: &str = "30.1.1.10/32";
pub const VIP6: &str = "2001:db8:30::10/128";
pub const ROUTER: &str = "20.1.1.1";
pub const ROUTER6: &str = "2001:db8:20::1";
pub const ROUTER_AS: u32 = 65000;
pub const DEVICE_AS: u32 = 65001;

/// One device of the seed lab.
pub struct Device {
    pub name: &'static str,
    pub ns: Ns,
    /// Static external self IP.
    pub ext: &'static str,
    pub ext6: String,
    /// Floating external self IP of its traffic group (`tg-<tg>`).
    pub floating: &'static str,
    pub floating6: String,
    pub tg: u32,
    pub bgpd: Option<Proc>,
    pub config: PathBuf,
    pub socket: PathBuf,
}

/// Options for building the lab.
#[derive(Clone, Debug)]
pub struct SeedOptions {
    /// TOML appended at the end of each device's bgpd configuration (e.g. a `[shutdown]` table).
    pub tail_extra: String,
    /// Extra `[[neighbor]]` keys for each device's session to r1 (TOML lines).
    pub neighbor_extra: String,
    /// Extra lines inside r1's `neighbor DEV` peer-group configuration (FRR syntax).
    pub frr_neighbor_extra: Vec<String>,
    /// Announce the VIP from each device's static configuration.
    pub static_vip: bool,
    /// Also set up IPv6 on the segment and peer over it.
    pub ipv6: bool,
}

impl Default for SeedOptions {
    fn default() -> Self {
        SeedOptions {
            tail_extra: String::new(),
            neighbor_extra: String::new(),
            frr_neighbor_extra: vec![],
            static_vip: true,
            ipv6: false,
        }
    }
}

pub struct SeedLab {
    pub lab: Lab,
    pub r1: Ns,
    pub frr: Frr,
    pub devices: Vec<Device>,
    pub opts: SeedOptions,
}

/// r1's FRR configuration: eBGP to the three devices, ECMP over their paths.
pub fn frr_config(opts: &SeedOptions) -> String {
    let mut c = String::new();
    c.push_str(
        "frr defaults datacenter\nhostname r1\nlog file bgpd.log\n!\n\
         router bgp 65000\n bgp router-id 20.1.1.1\n no bgp ebgp-requires-policy\n\
         no bgp network import-check\n bgp bestpath as-path multipath-relax\n\
         neighbor DEV peer-group\n neighbor DEV remote-as 65001\n neighbor DEV timers 3 9\n",
    );
    for l in &opts.frr_neighbor_extra {
        c.push_str(&format!(" neighbor DEV {l}\n"));
    }
    for d in DEVICES {
        c.push_str(&format!(" neighbor {} peer-group DEV\n", d.static_ext));
    }
    if opts.ipv6 {
        c.push_str(" neighbor DEV6 peer-group\n neighbor DEV6 remote-as 65001\n neighbor DEV6 timers 3 9\n");
        for i in 6..=8 {
            c.push_str(&format!(" neighbor 2001:db8:20::{i} peer-group DEV6\n"));
        }
    }
    c.push_str(" address-family ipv4 unicast\n  maximum-paths 8\n exit-address-family\n");
    if opts.ipv6 {
        c.push_str(
            " address-family ipv6 unicast\n  maximum-paths 8\n  neighbor DEV6 activate\n exit-address-family\n",
        );
    }
    c.push_str("!\n");
    c
}

impl SeedLab {
    /// Builds namespaces, the external segment and r1's FRR; devices are not started.
    pub fn build(test: &str, opts: SeedOptions) -> Result<SeedLab> {
        let lab = Lab::new(test)?;
        let r1 = lab.ns("r1")?;
        let mut nss = Vec::new();
        for d in DEVICES {
            nss.push(lab.ns(d.name)?);
        }
        for ns in std::iter::once(&r1).chain(nss.iter()) {
            // No DAD delays and IPv6 on everywhere in the lab.
            ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        }
        r1.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;
        let r1_addrs: Vec<&str> = if opts.ipv6 {
            vec!["20.1.1.1/24", "2001:db8:20::1/64"]
        } else {
            vec!["20.1.1.1/24"]
        };
        let mut members: Vec<(&Ns, &str, Vec<String>)> = vec![(
            &r1,
            "eth0",
            r1_addrs.iter().map(|s| s.to_string()).collect(),
        )];
        for (i, d) in DEVICES.iter().enumerate() {
            // The floating address sits on the device holding its traffic group.
            let mut a = vec![
                format!("{}/24", d.static_ext),
                format!("{}/24", d.floating_ext),
            ];
            if opts.ipv6 {
                a.push(format!("2001:db8:20::{}/64", 6 + i));
                a.push(format!("2001:db8:20::{}/64", 2 + i));
            }
            members.push((&nss[i], "ext0", a));
        }
        let owned: Vec<Vec<&str>> = members
            .iter()
            .map(|(_, _, a)| a.iter().map(|s| s.as_str()).collect())
            .collect();
        let spec: Vec<(&Ns, &str, &[&str])> = members
            .iter()
            .zip(owned.iter())
            .map(|((ns, ifn, _), a)| (*ns, *ifn, a.as_slice()))
            .collect();
        lab.bridge_segment("ext", &spec)?;
        let frr = lab.frr(&r1, &frr_config(&opts))?;
        let mut devices = Vec::new();
        for (d, ns) in DEVICES.iter().zip(nss) {
            let (dir, n, tg) = (lab.dir().to_path_buf(), d.name, d.tg);
            devices.push(Device {
                name: n,
                ns,
                ext: d.static_ext,
                ext6: format!("2001:db8:20::{}", 5 + tg),
                floating: d.floating_ext,
                floating6: format!("2001:db8:20::{}", 1 + tg),
                tg,
                bgpd: None,
                config: dir.join(format!("bgpd-{n}.toml")),
                socket: dir.join(format!("bgpd-{n}.sock")),
            });
        }
        Ok(SeedLab {
            lab,
            r1,
            frr,
            devices,
            opts,
        })
    }

    /// bgpd's configuration for device `i`.
    pub fn bgpd_config(&self, i: usize) -> String {
        let d = &self.devices[i];
        let mut c =
            crate::topology::device_bgpd_toml(d.ext, &d.socket, ROUTER, &self.opts.neighbor_extra);
        if self.opts.ipv6 {
            c.push_str(&format!(
                "[[neighbor]]\naddress = \"{ROUTER6}\"\nremote_as = {ROUTER_AS}\nlocal_address = \"{}\"\n\
                 hold_time = 9\nconnect_retry = 1\nidle_hold = 1\nfamilies = [\"ipv6-unicast\"]\n\
                 add_path_send = [\"ipv6-unicast\"]\n\n",
                d.ext6
            ));
        }
        if self.opts.static_vip {
            c.push_str(&format!(
                "[[route]]\nprefix = \"{VIP}\"\npath_id = {}\nnext_hop = \"{}\"\n\n",
                d.tg, d.floating
            ));
            if self.opts.ipv6 {
                c.push_str(&format!(
                    "[[route]]\nprefix = \"{VIP6}\"\npath_id = {}\nnext_hop = \"{}\"\n\n",
                    d.tg, d.floating6
                ));
            }
        }
        c.push_str(&self.opts.tail_extra);
        c
    }

    /// Writes device `i`'s configuration and starts its bgpd.
    pub fn start_bgpd(&mut self, i: usize) -> Result<()> {
        let cfg = self.bgpd_config(i);
        let d = &mut self.devices[i];
        std::fs::write(&d.config, cfg)
            .map_err(|e| spanlb_lab::LabError::io("writing bgpd config", e))?;
        let bin = cargo_bin("bgpd");
        let mut cmd = std::process::Command::new(bin);
        cmd.arg("--config")
            .arg(&d.config)
            .env("RUST_LOG", "info,bgpd=debug");
        d.bgpd = Some(d.ns.spawn_cmd(cmd, format!("bgpd-{}.log", d.name))?);
        Ok(())
    }

    pub fn start_all(&mut self) -> Result<()> {
        for i in 0..self.devices.len() {
            self.start_bgpd(i)?;
        }
        Ok(())
    }

    /// A control-socket client of device `i`'s bgpd (waits for the socket).
    pub fn control(&self, i: usize) -> Result<ControlClient> {
        let p = self.devices[i].socket.clone();
        wait_until_dbg(Duration::from_secs(10), "bgpd control socket", || {
            ControlClient::connect(&p).map_err(|e| e.to_string())
        })
    }

    /// r1's kernel next hops for `prefix` (from `ip route`, i.e. what is in the FIB).
    pub fn kernel_nexthops(&self, prefix: &str) -> Vec<IpAddr> {
        let fam = if prefix.contains(':') { "-6" } else { "-4" };
        kernel_nexthops(&self.r1, fam, prefix)
    }

    /// Waits until r1's kernel route for `prefix` has exactly `want` next hops.
    pub fn wait_nexthops(
        &self,
        prefix: &str,
        want: &[&str],
        timeout: Duration,
    ) -> Result<Vec<IpAddr>> {
        let mut want: Vec<IpAddr> = want
            .iter()
            .map(|s| s.parse().expect("address literal"))
            .collect();
        want.sort();
        wait_until_dbg(
            timeout,
            &format!("r1 kernel route {prefix} via {want:?}"),
            || {
                let got = self.kernel_nexthops(prefix);
                if got == want {
                    Ok(got)
                } else {
                    Err(got)
                }
            },
        )
    }

    /// Waits until every device's session with r1 is Established (as FRR sees it).
    pub fn wait_sessions(&self, timeout: Duration) -> Result<()> {
        wait_until_dbg(timeout, "r1 sessions with A, B, C established", || {
            let v = self
                .frr
                .vtysh_json("show bgp summary json")
                .map_err(|e| e.to_string())?;
            let peers = &v["ipv4Unicast"]["peers"];
            let up = DEVICES
                .iter()
                .filter(|d| peers[d.static_ext]["state"] == "Established")
                .count();
            if up == 3 {
                Ok(())
            } else {
                Err(peers.to_string())
            }
        })
    }

    /// Debug output for failures: r1's BGP table and each bgpd log's tail.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        s.push_str(&self.frr.vtysh("show bgp ipv4 unicast").unwrap_or_default());
        for d in &self.devices {
            if let Some(p) = &d.bgpd {
                let log = p.log();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                s.push_str(&format!("\n--- bgpd {} ---\n", d.name));
                for l in tail.into_iter().rev() {
                    s.push_str(l);
                    s.push('\n');
                }
            }
        }
        s
    }
}

/// Next hops of `prefix` in `ns`'s kernel FIB, sorted.
pub fn kernel_nexthops(ns: &Ns, fam: &str, prefix: &str) -> Vec<IpAddr> {
    let out = ns.ip(&[fam, "route", "show", prefix]).unwrap_or_default();
    let mut v: Vec<IpAddr> = out
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "via")
        .filter_map(|w| w[1].parse().ok())
        .collect();
    v.sort();
    v
}
