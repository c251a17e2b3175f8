//! `lbctl show traffic-groups` and `lbctl show device-group`: the placement view with each
//! traffic group's addresses, and this device's part.

use serde_json::{json, Value};

use super::super::placement::GroupStatus;
use super::Cluster;

impl Cluster {
    /// `show traffic-groups`: the placement view with each traffic group's addresses.
    pub async fn traffic_groups(&self) -> Value {
        let st = self.driver.status().await;
        let group = self.group();
        let ids = group.path_ids();
        let local = self.local_status();
        let tgs: Vec<Value> = st
            .traffic_groups
            .iter()
            .map(|t| {
                let mut v = serde_json::to_value(t).unwrap_or_default();
                if let (Some(cfg), Value::Object(o)) = (group.traffic_group(&t.name), &mut v) {
                    o.insert(
                        "external_floating".into(),
                        cfg.external_floating.to_string().into(),
                    );
                    o.insert(
                        "internal_floating".into(),
                        cfg.internal_floating.to_string().into(),
                    );
                    o.insert("path_id".into(), ids.get(&t.name).copied().into());
                    o.insert("ha_order".into(), json!(cfg.ha_order));
                    o.insert("auto_failback".into(), cfg.auto_failback.into());
                    o.insert(
                        "mac_masquerade".into(),
                        cfg.mac_masquerade.map(|m| m.to_string()).into(),
                    );
                    o.insert(
                        "here".into(),
                        local.active_here.contains_key(&t.name).into(),
                    );
                }
                v
            })
            .collect();
        json!({ "me": st.me, "traffic_groups": tgs })
    }

    /// `show device-group`.
    pub async fn device_group(&self) -> Value {
        let st: GroupStatus = self.driver.status().await;
        let group = self.group();
        json!({
            "name": group.group.name,
            "me": st.me,
            "epoch": st.epoch,
            "phase": st.phase,
            "route_mode": group.group.route_mode,
            "heartbeat_interval_ms": group.group.heartbeat_interval.as_millis() as u64,
            "dead_after_ms": group.group.dead_after.as_millis() as u64,
            "standby": self.standby(),
            "devices": st.devices,
            "orders": st.orders,
            "counters": self.counters(),
            "local": self.local_status(),
        })
    }
}
