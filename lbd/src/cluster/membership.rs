//! Live membership: which changes of the device-group file a running lbd takes without a
//! restart (config sync applies them: `lbctl device-group add/remove`, a traffic group added,
//! removed or reordered on one device and synced), and what the heartbeat driver is given
//! for one.
//!
//! Taken live:
//! - devices added or removed (a removed device gives up its traffic groups and stops sending
//!   heartbeats; `lbctl device-group remove` moves its traffic groups away first);
//! - traffic groups added (a new one goes active on its first usable device in HA order)
//!   or removed (released where active, its paths withdrawn), HA orders, auto-failback,
//!   delays, `ha_capacity` and `ha_load_factor`;
//! - heartbeat timing (`heartbeat_interval`, `dead_after`) and `auto_sync`.
//!
//! Refused with the reason (change it on every device and restart lbd there): the group's
//! name, its heartbeat, mirroring and config-sync ports, `heartbeat_max_age`, the route mode, the mirror scopes,
//! this device's own failover and mirroring addresses, and for a traffic group that stays its
//! floating addresses, path id, mirroring port and MAC masquerade (a new traffic group may
//! not use MAC masquerade live: its macvlan is made at start). Path ids and mirroring ports
//! default to a traffic group's position, so removing one that is not the last needs
//! explicit `path_id`s — the error says so.
//!
//! Pure: no I/O.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::config::GroupConfig;
use super::heartbeat::GroupKey;
use super::placement::GroupSpec;

/// Why a device-group change cannot be taken live (the text names what changed).
pub type Refusal = String;

/// Checks that `new` differs from `old` only in what lbd takes live on device `me` (module
/// documentation).
pub fn check_live(old: &GroupConfig, new: &GroupConfig, me: &str) -> Result<(), Refusal> {
    let restart = |what: String| {
        Err(format!(
            "{what} cannot change while lbd runs: change it on every device and restart lbd there"
        ))
    };
    let (o, n) = (&old.group, &new.group);
    if o.name != n.name {
        return restart(format!("the group's name ({} → {})", o.name, n.name));
    }
    for (what, a, b) in [
        ("group.heartbeat_port", o.heartbeat_port, n.heartbeat_port),
        ("group.mirror_port", o.mirror_port, n.mirror_port),
        (
            "group.config_sync_port",
            o.config_sync_port,
            n.config_sync_port,
        ),
    ] {
        if a != b {
            return restart(format!("{what} ({a} → {b})"));
        }
    }
    if o.heartbeat_max_age != n.heartbeat_max_age {
        return restart(format!(
            "group.heartbeat_max_age ({:?} → {:?})",
            o.heartbeat_max_age, n.heartbeat_max_age
        ));
    }
    if o.route_mode != n.route_mode {
        return restart(format!(
            "group.route_mode ({} → {})",
            o.route_mode, n.route_mode
        ));
    }
    if o.mirror_scope != n.mirror_scope || o.persistence_mirror_scope != n.persistence_mirror_scope
    {
        return restart("the mirror scopes".to_string());
    }
    let mine = |g: &GroupConfig| g.devices.iter().find(|d| d.name == me).cloned();
    if let (Some(a), Some(b)) = (mine(old), mine(new)) {
        if a.failover_addresses != b.failover_addresses
            || a.mirror_addresses != b.mirror_addresses
            || a.sync_address() != b.sync_address()
        {
            return restart(format!("device {me}'s own addresses"));
        }
    }
    let (old_ids, new_ids) = (old.path_ids(), new.path_ids());
    let (old_ports, new_ports) = (old.mirror_ports(), new.mirror_ports());
    for t in &new.traffic_groups {
        let Some(was) = old.traffic_group(&t.name) else {
            if t.mac_masquerade.is_some() {
                return restart(format!(
                    "traffic group {}: a new traffic group with mac_masquerade",
                    t.name
                ));
            }
            continue;
        };
        let key = |k: &str| format!("traffic group {}: {k}", t.name);
        if was.external_floating != t.external_floating
            || was.internal_floating != t.internal_floating
        {
            return restart(key("its floating addresses"));
        }
        if was.mac_masquerade != t.mac_masquerade {
            return restart(key("mac_masquerade"));
        }
        if old_ids[&t.name] != new_ids[&t.name] {
            return restart(key(&format!(
                "its path id ({} → {}; a traffic group's default path id is its position: \
                 give every traffic group an explicit path_id to remove one that is not the \
                 last)",
                old_ids[&t.name], new_ids[&t.name]
            )));
        }
        if old_ports[&t.name] != new_ports[&t.name] {
            return restart(key(&format!(
                "its mirroring port ({} → {}; it is mirror_port + its position: remove only \
                 the last traffic group live)",
                old_ports[&t.name], new_ports[&t.name]
            )));
        }
    }
    Ok(())
}

/// What the heartbeat driver of device `me` takes for `group` (see
/// `DriverHandle::reconfigure`): the placement's spec and the peers' heartbeat addresses.
/// When `me` is no longer a member, a spec without it and without traffic groups (the
/// placement then gives up everything and falls silent) and no peers.
pub fn driver_inputs(
    group: &GroupConfig,
    me: &str,
    key: &Arc<GroupKey>,
    mirroring: bool,
) -> (GroupSpec, BTreeMap<String, Vec<SocketAddr>>) {
    match group.driver_config(me, key.clone(), mirroring) {
        Ok(d) => (d.spec, d.peers),
        Err(_) => {
            let spec = GroupSpec {
                me: me.to_string(),
                devices: group.devices.iter().map(|d| d.name.clone()).collect(),
                traffic_groups: Vec::new(),
                ..group
                    .driver_config(&group.devices[0].name, key.clone(), mirroring)
                    .map(|d| d.spec)
                    .expect("a validated group's first device is a member")
            };
            (spec, BTreeMap::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::config::SEED;

    fn seed() -> GroupConfig {
        GroupConfig::from_toml(SEED, "group.toml").unwrap()
    }

    #[test]
    fn devices_and_last_traffic_groups_change_live() {
        let old = seed();
        let mut new = old.clone();
        let mut d = new.devices[0].clone();
        d.name = "D".into();
        d.failover_addresses = vec!["192.168.100.20".parse().unwrap()];
        new.devices.push(d);
        let mut tg = new.traffic_groups[2].clone();
        tg.name = "tg-4".into();
        tg.ha_order = vec!["D".into(), "A".into(), "B".into(), "C".into()];
        tg.external_floating = "20.1.1.5/24".parse().unwrap();
        tg.internal_floating = "10.1.1.5/24".parse().unwrap();
        new.traffic_groups.push(tg);
        check_live(&old, &new, "A").unwrap();
        // And back: D and tg-4 removed.
        check_live(&new, &old, "A").unwrap();
    }

    #[test]
    fn what_needs_a_restart_is_refused_with_the_reason() {
        let old = seed();
        let mut new = old.clone();
        new.group.mirror_port += 1;
        let e = check_live(&old, &new, "A").unwrap_err();
        assert!(e.contains("group.mirror_port (1029 → 1030)"), "{e}");
        assert!(e.contains("restart lbd"), "{e}");

        let mut new = old.clone();
        new.traffic_groups.remove(0);
        let e = check_live(&old, &new, "A").unwrap_err();
        assert!(e.contains("traffic group tg-2: its path id (2 → 1"), "{e}");

        let mut new = old.clone();
        new.traffic_groups[1].external_floating = "20.1.1.99/24".parse().unwrap();
        let e = check_live(&old, &new, "A").unwrap_err();
        assert!(e.contains("tg-2: its floating addresses"), "{e}");

        let mut new = old.clone();
        new.devices[0].failover_addresses = vec!["192.168.100.99".parse().unwrap()];
        assert!(check_live(&old, &new, "A").is_err());
        // Another device's addresses are not this device's business.
        check_live(&old, &new, "B").unwrap();
    }

    #[test]
    fn a_removed_device_gets_an_empty_spec() {
        let mut g = seed();
        let key = Arc::new(GroupKey::from_bytes(&[7; 32]).unwrap());
        let (spec, peers) = driver_inputs(&g, "B", &key, false);
        assert_eq!(spec.traffic_groups.len(), 3);
        assert_eq!(peers.len(), 2);
        g.devices.retain(|d| d.name != "B");
        let (spec, peers) = driver_inputs(&g, "B", &key, false);
        assert_eq!(spec.me, "B");
        assert!(!spec.devices.contains(&"B".to_string()));
        assert!(spec.traffic_groups.is_empty());
        assert!(peers.is_empty());
    }
}
