//! The seed's device group (docs/design.md, "The lab"): devices A, B, C, their addresses, and the
//! device-group file they read — traffic group `tg-k` per device, first in its own HA order.
//! The one place the group is written: the cluster lab, lbd's namespace tests and the check of
//! the containerlab file (`topologies/ecmp-seed/clab/device-group.toml`) render it from here.

use std::fmt::Write as _;
use std::path::Path;

/// One device's addresses (docs/design.md, "The lab" table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceAddrs {
    pub name: &'static str,
    /// Its traffic group, `tg-<n>`, whose HA order starts with it.
    pub tg: u32,
    pub static_ext: &'static str,
    pub floating_ext: &'static str,
    pub static_int: &'static str,
    pub floating_int: &'static str,
    pub ha: &'static str,
}

pub const DEVICES: &[DeviceAddrs] = &[
    DeviceAddrs {
        name: "a",
        tg: 1,
        static_ext: "20.1.1.6",
        floating_ext: "20.1.1.2",
        static_int: "10.1.1.6",
        floating_int: "10.1.1.2",
        ha: "192.168.100.6",
    },
    DeviceAddrs {
        name: "b",
        tg: 2,
        static_ext: "20.1.1.7",
        floating_ext: "20.1.1.3",
        static_int: "10.1.1.7",
        floating_int: "10.1.1.3",
        ha: "192.168.100.7",
    },
    DeviceAddrs {
        name: "c",
        tg: 3,
        static_ext: "20.1.1.8",
        floating_ext: "20.1.1.4",
        static_int: "10.1.1.8",
        floating_int: "10.1.1.4",
        ha: "192.168.100.8",
    },
];

/// The masquerade MAC of tg-`k` (with [`GroupToml::mac_masquerade`]).
pub fn masquerade_mac(k: u32) -> String {
    format!("02:00:5e:00:01:{k:02x}")
}

/// The seed's device-group file, rendered by [`render`](Self::render). A key left `None` (or
/// `false`) is not written, so lbd's default applies.
#[derive(Debug, Clone)]
pub struct GroupToml<'a> {
    /// The group's name (`seed`).
    pub name: &'a str,
    /// The devices of the group (all of [`DEVICES`], or the first ones), one traffic group
    /// each: `tg-k` with HA order the device, then the next ones round the list.
    pub devices: &'a [DeviceAddrs],
    pub key_file: &'a Path,
    pub heartbeat_port: Option<u16>,
    /// TOML lines added to the `[group]` table (e.g. `auto_sync = true`).
    pub group_extra: &'a str,
    pub heartbeat_interval: &'a str,
    pub dead_after: &'a str,
    /// `l2` or `routed`.
    pub route_mode: Option<&'a str>,
    pub mirror_scope: Option<&'a str>,
    pub persistence_mirror_scope: Option<&'a str>,
    /// A second failover address per device, its static internal self IP (the HA address is
    /// always the first).
    pub second_failover_path: bool,
    /// `mirror_addresses` the same as `failover_addresses`.
    pub mirror_addresses: bool,
    /// Prefix length of the floating external self IPs (24 on the shared segment, 32 routed).
    pub external_prefix_len: u8,
    pub auto_failback: Option<bool>,
    pub failback_delay: Option<&'a str>,
    pub failback_sync_max_wait: Option<&'a str>,
    /// `path_id = k` for `tg-k`.
    pub path_id: bool,
    /// `mac_masquerade` = [`masquerade_mac(k)`](masquerade_mac) for `tg-k`.
    pub mac_masquerade: bool,
    /// TOML lines added to a traffic group's table: (traffic group, lines).
    pub tg_extra: &'a [(&'a str, &'a str)],
}

impl GroupToml<'_> {
    /// The seed group as the containerlab seed ships it (`clab/device-group.toml`): all three
    /// devices, heartbeats every 100 ms, dead after 500 ms, L2 mode, the HA and the internal
    /// segment for failover and mirroring, auto-failback after 2 s, path id k for tg-k.
    pub fn seed(key_file: &Path) -> GroupToml<'_> {
        GroupToml {
            name: "seed",
            devices: DEVICES,
            key_file,
            heartbeat_port: None,
            group_extra: "",
            heartbeat_interval: "100ms",
            dead_after: "500ms",
            route_mode: Some("l2"),
            mirror_scope: None,
            persistence_mirror_scope: None,
            second_failover_path: true,
            mirror_addresses: true,
            external_prefix_len: 24,
            auto_failback: Some(true),
            failback_delay: Some("2s"),
            failback_sync_max_wait: None,
            path_id: true,
            mac_masquerade: false,
            tg_extra: &[],
        }
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut c = String::new();
        let _ = write!(
            c,
            "[group]\nname = \"{}\"\nkey_file = \"{}\"\n",
            self.name,
            self.key_file.display()
        );
        if let Some(p) = self.heartbeat_port {
            let _ = writeln!(c, "heartbeat_port = {p}");
        }
        let _ = write!(
            c,
            "heartbeat_interval = \"{}\"\ndead_after = \"{}\"\n",
            self.heartbeat_interval, self.dead_after
        );
        c.push_str(self.group_extra);
        for (key, v) in [
            ("route_mode", self.route_mode),
            ("mirror_scope", self.mirror_scope),
            ("persistence_mirror_scope", self.persistence_mirror_scope),
        ] {
            if let Some(v) = v {
                let _ = writeln!(c, "{key} = \"{v}\"");
            }
        }
        for d in self.devices {
            let addrs = if self.second_failover_path {
                format!("[\"{}\", \"{}\"]", d.ha, d.static_int)
            } else {
                format!("[\"{}\"]", d.ha)
            };
            let _ = write!(
                c,
                "\n[[devices]]\nname = \"{}\"\nfailover_addresses = {addrs}\n",
                d.name
            );
            if self.mirror_addresses {
                let _ = writeln!(c, "mirror_addresses = {addrs}");
            }
        }
        let n = self.devices.len();
        for (i, d) in self.devices.iter().enumerate() {
            let order: Vec<String> = (0..n)
                .map(|k| format!("\"{}\"", self.devices[(i + k) % n].name))
                .collect();
            let tg = format!("tg-{}", d.tg);
            let _ = write!(
                c,
                "\n[[traffic_groups]]\nname = \"{tg}\"\nha_order = [{}]\n\
                 external_floating = \"{}/{}\"\ninternal_floating = \"{}/24\"\n",
                order.join(", "),
                d.floating_ext,
                self.external_prefix_len,
                d.floating_int,
            );
            if let Some(fb) = self.auto_failback {
                let _ = writeln!(c, "auto_failback = {fb}");
            }
            if let Some(delay) = self.failback_delay {
                let _ = writeln!(c, "failback_delay = \"{delay}\"");
            }
            if self.path_id {
                let _ = writeln!(c, "path_id = {}", d.tg);
            }
            if self.mac_masquerade {
                let _ = writeln!(c, "mac_masquerade = \"{}\"", masquerade_mac(d.tg));
            }
            if let Some(w) = self.failback_sync_max_wait {
                let _ = writeln!(c, "failback_sync_max_wait = \"{w}\"");
            }
            for (_, lines) in self.tg_extra.iter().filter(|(t, _)| *t == tg) {
                let _ = writeln!(c, "{lines}");
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_device_leads_its_own_traffic_group_and_the_others_follow_round_the_list() {
        let key = Path::new("/k");
        let text = GroupToml::seed(key).render();
        assert!(text.contains("name = \"tg-2\"\nha_order = [\"b\", \"c\", \"a\"]\n"));
        assert!(text.contains("failover_addresses = [\"192.168.100.8\", \"10.1.1.8\"]\n"));
        let two = GroupToml {
            devices: &DEVICES[..2],
            tg_extra: &[("tg-2", "x = 1")],
            ..GroupToml::seed(key)
        }
        .render();
        assert!(two.contains("name = \"tg-2\"\nha_order = [\"b\", \"a\"]\n"));
        assert!(two.ends_with("path_id = 2\nx = 1\n"), "{two}");
        assert!(!two.contains("tg-3"));
    }
}
