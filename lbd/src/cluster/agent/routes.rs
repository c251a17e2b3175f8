//! The routes this device asks bgpd for and which traffic group new connections belong to:
//! pure functions of the group, placement and what is active here (the rules are in the
//! `agent` module documentation).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::super::bgpd::RouteIntent;
use super::super::config::{GroupConfig, RouteMode, TrafficGroup};
use super::super::placement::PathOwner;
use super::local::Local;
use crate::state::{AttributionState, IngressRule};

/// The routes this device asks bgpd for (see the module documentation): for each traffic
/// group that `paths` places on a device, its path for each of the spanning virtual addresses
/// `vips` available there; in routed mode also the floating external self IP of each traffic
/// group `active` here.
pub fn desired_routes(
    group: &GroupConfig,
    paths: &[PathOwner],
    active: &BTreeSet<String>,
    vips: &[IpAddr],
) -> BTreeSet<RouteIntent> {
    let ids = group.path_ids();
    let mut out = BTreeSet::new();
    for tg in &group.traffic_groups {
        let k = ids[&tg.name];
        let ek = tg.external_floating.addr();
        let owner = paths
            .iter()
            .find(|p| p.traffic_group == tg.name && p.device.is_some());
        if let Some(owner) = owner {
            for va in vips
                .iter()
                .filter(|a| a.is_ipv4() == ek.is_ipv4() && !owner.unavailable.contains(a))
            {
                out.insert(RouteIntent {
                    prefix: IpNet::from(*va),
                    path_id: k,
                    next_hop: Some(ek),
                });
            }
        }
        if group.group.route_mode == RouteMode::Routed && active.contains(&tg.name) {
            out.insert(RouteIntent {
                prefix: IpNet::from(ek),
                path_id: k,
                next_hop: None,
            });
        }
    }
    out
}

/// Which traffic group new connections belong to (the rule is documented on
/// [`crate::state::Attribution`]); `masquerade` maps a traffic group with MAC masquerade to
/// its macvlan (index, name): connections arriving there belong to it while it is active.
pub fn attribution(
    group: &GroupConfig,
    me: &str,
    active: &BTreeSet<String>,
    masquerade: &BTreeMap<String, (u32, String)>,
) -> AttributionState {
    let by_ingress = group
        .traffic_groups
        .iter()
        .filter(|t| active.contains(&t.name))
        .filter_map(|t| {
            let (ifindex, name) = masquerade.get(&t.name)?;
            let a = t.internal_floating.addr();
            Some(IngressRule {
                ifindex: *ifindex,
                interface: name.clone(),
                traffic_group: t.name.as_str().into(),
                automap_v4: a.is_ipv4().then_some(a),
                automap_v6: a.is_ipv6().then_some(a),
            })
        })
        .collect();
    AttributionState {
        by_ingress,
        ..attribution_rule(group, me, active)
    }
}

fn attribution_rule(group: &GroupConfig, me: &str, active: &BTreeSet<String>) -> AttributionState {
    let home = group
        .traffic_groups
        .iter()
        .find(|t| t.ha_order.first().map(String::as_str) == Some(me) && active.contains(&t.name));
    let tg = home.or_else(|| {
        group
            .traffic_groups
            .iter()
            .find(|t| active.contains(&t.name))
    });
    match tg {
        None => AttributionState::default(),
        Some(t) => {
            let a = t.internal_floating.addr();
            AttributionState {
                traffic_group: Some(t.name.as_str().into()),
                automap_v4: a.is_ipv4().then_some(a),
                automap_v6: a.is_ipv6().then_some(a),
                by_ingress: Vec::new(),
            }
        }
    }
}

/// The interface a traffic group's floating external self IP lives on.
pub fn external_link(tg: &TrafficGroup, path_id: u32, local: &Local) -> String {
    match tg.mac_masquerade {
        Some(_) => format!("tg{path_id}"),
        None => local.external_interface.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::config::GroupConfig;
    use std::collections::BTreeMap;

    use crate::cluster::config::SEED as GROUP;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn owner(tg: &str, device: Option<&str>, unavailable: &[&str]) -> PathOwner {
        PathOwner {
            traffic_group: tg.into(),
            device: device.map(str::to_string),
            unavailable: unavailable.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn routes(r: &BTreeSet<RouteIntent>) -> Vec<(String, u32, Option<IpAddr>)> {
        r.iter()
            .map(|r| (r.prefix.to_string(), r.path_id, r.next_hop))
            .collect()
    }

    #[test]
    fn every_placed_traffic_group_gets_its_path_whoever_holds_it() {
        let g = GroupConfig::from_toml(GROUP, "g").unwrap();
        let vip: IpAddr = "30.1.1.10".parse().unwrap();
        let v6: IpAddr = "2001:db8::10".parse().unwrap();
        let paths = [
            owner("tg-1", Some("C"), &[]),
            owner("tg-2", Some("B"), &[]),
            owner("tg-3", Some("C"), &[]),
        ];
        // What is active here does not matter in L2 mode: the same three paths everywhere.
        for here in [set(&[]), set(&["tg-1", "tg-3"])] {
            assert_eq!(
                routes(&desired_routes(&g, &paths, &here, &[vip, v6])),
                vec![
                    ("30.1.1.10/32".into(), 1, Some("20.1.1.2".parse().unwrap())),
                    ("30.1.1.10/32".into(), 2, Some("20.1.1.3".parse().unwrap())),
                    ("30.1.1.10/32".into(), 3, Some("20.1.1.4".parse().unwrap())),
                ]
            );
        }
        // Route health: a VIP not available on the device tg-3 is placed on loses path 3 on
        // every device; a traffic group placed nowhere has no path; no paths known, none.
        let paths = [
            owner("tg-1", None, &[]),
            owner("tg-2", Some("B"), &[]),
            owner("tg-3", Some("C"), &["30.1.1.10"]),
        ];
        assert_eq!(
            routes(&desired_routes(&g, &paths, &set(&[]), &[vip])),
            vec![("30.1.1.10/32".into(), 2, Some("20.1.1.3".parse().unwrap()))]
        );
        assert!(desired_routes(&g, &[], &set(&["tg-1"]), &[vip]).is_empty());
        assert!(desired_routes(&g, &paths, &set(&["tg-1"]), &[]).is_empty());
    }

    #[test]
    fn routed_mode_adds_the_floating_host_route_of_what_is_held_here() {
        let text = GROUP
            .replace(
                "key_file = \"/etc/spanlb/group.key\"",
                "key_file = \"/etc/spanlb/group.key\"\nroute_mode = \"routed\"",
            )
            .replace("/24\"\ninternal", "/32\"\ninternal");
        let g = GroupConfig::from_toml(&text, "g").unwrap();
        let vip: IpAddr = "30.1.1.10".parse().unwrap();
        let paths = [
            owner("tg-1", Some("A"), &[]),
            owner("tg-2", Some("B"), &[]),
            owner("tg-3", Some("C"), &[]),
        ];
        let r: Vec<RouteIntent> = desired_routes(&g, &paths, &set(&["tg-1"]), &[vip])
            .into_iter()
            .collect();
        assert_eq!(r.len(), 4, "{r:?}");
        assert!(r.contains(&RouteIntent {
            prefix: "20.1.1.2/32".parse().unwrap(),
            path_id: 1,
            next_hop: None
        }));
        assert!(!r.iter().any(|r| r.prefix.to_string() == "20.1.1.3/32"));
        assert_eq!(
            serde_json::to_value(r[0].config()).unwrap()["next_hop"],
            "self"
        );
    }

    #[test]
    fn connections_belong_to_the_home_traffic_group_first() {
        let g = GroupConfig::from_toml(GROUP, "g").unwrap();
        let none = BTreeMap::new();
        let a = attribution(&g, "C", &set(&["tg-2", "tg-3"]), &none);
        assert_eq!(a.traffic_group.as_deref(), Some("tg-3"));
        assert_eq!(a.automap_v4, Some("10.1.1.4".parse().unwrap()));
        let a = attribution(&g, "C", &set(&["tg-2", "tg-1"]), &none);
        assert_eq!(a.traffic_group.as_deref(), Some("tg-1"));
        assert_eq!(
            attribution(&g, "C", &set(&[]), &none),
            AttributionState::default()
        );
        // MAC masquerade: tg-2's macvlan names tg-2 for what arrives on it, while active.
        let masq = BTreeMap::from([("tg-2".to_string(), (9, "tg2".to_string()))]);
        let a = attribution(&g, "C", &set(&["tg-2", "tg-3"]), &masq);
        assert_eq!(a.traffic_group.as_deref(), Some("tg-3"));
        assert_eq!(
            a.resolve(Some(9)),
            (Some("tg-2".into()), Some("10.1.1.3".parse().unwrap()), None)
        );
        assert!(attribution(&g, "C", &set(&["tg-3"]), &masq)
            .by_ingress
            .is_empty());
    }
}
