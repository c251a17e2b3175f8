//! Who may send mirrored state to this device: the receivers' [`Admission`].
//!
//! A certificate of the group proves a connection comes from *a* device of the group; that is
//! not enough to hand it a traffic group's channel. A channel that starts replaces the one
//! before it and opens with a resync that replaces what this device holds of the traffic
//! group, so a device that does not hold it could displace the holder's channel, clear its
//! state here and push records of its own. The receivers therefore also ask:
//!
//! - the source address must be a mirror address of a device of the group (checked before
//!   the TLS handshake, so strangers cost no handshake slot);
//! - the device the certificate names must have connected from one of *its* mirror
//!   addresses;
//! - it must hold the traffic group as placement sees it here (the senders run on the holder
//!   only). Placement trails a new holder by a heartbeat or two; the link layer gives it
//!   [`super::super::link::HOLDER_GRACE`].

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::super::link::{Admission, Refusal};
use crate::cluster::config::GroupConfig;
use crate::cluster::placement::Role;

/// The receivers' admission rules, kept in line with the device group and placement.
#[derive(Debug)]
pub(super) struct GroupAdmission {
    me: String,
    /// Each other device's mirror addresses → the device.
    sources: ArcSwap<BTreeMap<IpAddr, String>>,
    /// Traffic group → its holder as placement here sees it (None: nobody holds it).
    holders: ArcSwap<BTreeMap<String, Option<String>>>,
    /// Refusals by [`Refusal`], in the order of [`Refusal::ALL`].
    refused: [AtomicU64; 4],
}

impl GroupAdmission {
    pub fn new(me: &str, group: &GroupConfig) -> Arc<GroupAdmission> {
        let a = GroupAdmission {
            me: me.to_string(),
            sources: ArcSwap::from_pointee(BTreeMap::new()),
            holders: ArcSwap::from_pointee(BTreeMap::new()),
            refused: Default::default(),
        };
        a.set_group(group);
        Arc::new(a)
    }

    /// The device group changed (a device added or removed, or its addresses).
    pub fn set_group(&self, group: &GroupConfig) {
        let sources = group
            .devices
            .iter()
            .filter(|d| d.name != self.me)
            .flat_map(|d| d.mirror_addresses.iter().map(|ip| (*ip, d.name.clone())))
            .collect();
        self.sources.store(Arc::new(sources));
    }

    /// Placement published new roles.
    pub fn set_roles(&self, roles: &[Role]) {
        let holders: BTreeMap<String, Option<String>> = roles
            .iter()
            .map(|r| (r.traffic_group.clone(), r.holder.clone()))
            .collect();
        if **self.holders.load() != holders {
            self.holders.store(Arc::new(holders));
        }
    }

    /// Refusals so far, by reason name.
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        Refusal::ALL
            .iter()
            .zip(&self.refused)
            .map(|(r, n)| (r.name(), n.load(Ordering::Relaxed)))
            .collect()
    }
}

impl Admission for GroupAdmission {
    fn source_allowed(&self, ip: IpAddr) -> bool {
        self.sources.load().contains_key(&canonical(ip))
    }

    fn sender_allowed(
        &self,
        device: &str,
        ip: IpAddr,
        traffic_group: &str,
    ) -> Result<(), (Refusal, String)> {
        let ip = canonical(ip);
        match self.sources.load().get(&ip) {
            Some(d) if d == device => {}
            Some(d) => {
                return Err((
                    Refusal::Trust,
                    format!("connected from {ip}, a mirror address of {d}, not of {device}"),
                ))
            }
            None => {
                return Err((
                    Refusal::Source,
                    format!("{ip} is not a mirror address of the group"),
                ))
            }
        }
        match self.holders.load().get(traffic_group) {
            Some(Some(h)) if h == device => Ok(()),
            Some(Some(h)) => Err((Refusal::NotHolder, format!("held by {h}, not {device}"))),
            _ => Err((Refusal::NotHolder, format!("not held by {device}"))),
        }
    }

    fn refused(&self, why: Refusal) {
        if let Some(i) = Refusal::ALL.iter().position(|r| *r == why) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An IPv4-mapped IPv6 address (a v4 peer on a dual-stack socket) as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: &str = r#"
[group]
name = "seed"
key_file = "/nonexistent"
[[devices]]
name = "a"
failover_addresses = ["192.168.100.6"]
mirror_addresses = ["192.168.100.6", "192.168.101.6"]
[[devices]]
name = "b"
failover_addresses = ["192.168.100.7"]
mirror_addresses = ["192.168.100.7"]
[[devices]]
name = "c"
failover_addresses = ["192.168.100.8"]
mirror_addresses = ["192.168.100.8"]
[[traffic_groups]]
name = "tg-2"
ha_order = ["b", "c", "a"]
external_floating = "20.1.1.3/24"
internal_floating = "10.1.1.3/24"
"#;

    fn role(tg: &str, holder: Option<&str>) -> Role {
        Role {
            traffic_group: tg.into(),
            holder: holder.map(str::to_string),
            next_active: None,
        }
    }

    #[test]
    fn only_the_holder_from_its_own_address() {
        let group = GroupConfig::from_toml(GROUP, "group.toml").expect("group");
        let a = GroupAdmission::new("c", &group);
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert!(a.source_allowed(ip("192.168.100.7")));
        assert!(a.source_allowed(ip("192.168.101.6")));
        assert!(a.source_allowed(ip("::ffff:192.168.100.7")));
        assert!(!a.source_allowed(ip("192.168.100.8")), "this device's own");
        assert!(!a.source_allowed(ip("192.168.100.50")));

        // Nobody holds tg-2 yet.
        let e = a.sender_allowed("b", ip("192.168.100.7"), "tg-2");
        assert_eq!(e.unwrap_err().0, Refusal::NotHolder);
        a.set_roles(&[role("tg-2", Some("b"))]);
        assert_eq!(a.sender_allowed("b", ip("192.168.100.7"), "tg-2"), Ok(()));
        // A trusted device that does not hold it.
        let e = a
            .sender_allowed("a", ip("192.168.100.6"), "tg-2")
            .unwrap_err();
        assert_eq!(e.0, Refusal::NotHolder, "{}", e.1);
        assert!(e.1.contains("held by b"), "{}", e.1);
        // The holder's certificate from another device's address.
        let e = a
            .sender_allowed("b", ip("192.168.100.6"), "tg-2")
            .unwrap_err();
        assert_eq!(e.0, Refusal::Trust, "{}", e.1);
        // An unknown traffic group.
        let e = a
            .sender_allowed("b", ip("192.168.100.7"), "tg-9")
            .unwrap_err();
        assert_eq!(e.0, Refusal::NotHolder);
        // The holder moves.
        a.set_roles(&[role("tg-2", Some("a"))]);
        assert_eq!(a.sender_allowed("a", ip("192.168.101.6"), "tg-2"), Ok(()));
        assert!(a.sender_allowed("b", ip("192.168.100.7"), "tg-2").is_err());

        a.refused(Refusal::NotHolder);
        a.refused(Refusal::NotHolder);
        a.refused(Refusal::Source);
        let r: BTreeMap<_, _> = a.refusals().into_iter().collect();
        assert_eq!(r["not-holder"], 2);
        assert_eq!(r["source"], 1);
        assert_eq!(r["trust"], 0);
    }

    #[test]
    fn a_membership_change_updates_the_sources() {
        let group = GroupConfig::from_toml(GROUP, "group.toml").expect("group");
        let a = GroupAdmission::new("c", &group);
        let b_ip: IpAddr = "192.168.100.7".parse().unwrap();
        assert!(a.source_allowed(b_ip));
        let mut smaller = group.clone();
        smaller.devices.retain(|d| d.name != "b");
        a.set_group(&smaller);
        assert!(!a.source_allowed(b_ip));
    }
}
