//! Live membership inside lbd (docs/design.md, "Config sync"): a new device-group file taken
//! without a restart — from a reload, from a config sync, or made by `lbctl device-group
//! add/remove` — and those two commands. What may change live, and what needs a restart, is
//! `cluster::membership`.
//!
//! Taking a device group: mirroring first (a new traffic group's receiver listens before
//! placement can put the traffic group anywhere), then the device group (the executor learns
//! the definitions, the driver the devices and traffic groups: it releases what was removed
//! and activates what is new here), then config sync's peers and the listener's admitted
//! devices, then the file (atomically).
//!
//! `lbctl device-group add NAME …` adds the device, commits a new generation and pushes the
//! whole configuration to the new device (which sends no heartbeats to the group yet) and to
//! every live device that lacks it. `lbctl device-group remove NAME` first moves every traffic
//! group the device holds to its next-active device (manual failover orders) and waits for
//! that, then removes the device (and it from every HA order), commits, and pushes the result
//! to the group and to the removed device, which then gives up everything, withdraws
//! its routes and falls silent.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tracing::{info, warn};

use super::sync::{write_atomically, ConfigSync};
use crate::cluster::config::{Device, GroupConfig};
use crate::cluster::membership;

/// How long `device-group remove` waits for the device's traffic groups to move.
pub const MOVE_WAIT: Duration = Duration::from_secs(10);

/// A device group of one device and no traffic group: a new device waiting to be added by a
/// member (with no saved generation: see `ConfigSync::start`).
pub fn awaits_initial_sync(g: &GroupConfig) -> bool {
    g.devices.len() == 1 && g.traffic_groups.is_empty()
}

/// The other devices of `g`.
pub fn peer_names(g: &GroupConfig, me: &str) -> Vec<String> {
    g.devices
        .iter()
        .filter(|d| d.name != me)
        .map(|d| d.name.clone())
        .collect()
}

/// Validates a device group made by a command as if read from a file.
fn validated(g: GroupConfig) -> Result<GroupConfig, String> {
    let v = serde_json::to_value(&g).map_err(|e| e.to_string())?;
    GroupConfig::from_value(v).map_err(|e| e.to_string())
}

impl ConfigSync {
    /// Takes `new` as the running device group (module documentation); with `save`, writes it
    /// to the device-group file. Nothing changes when it needs a restart (the reason says
    /// what).
    pub(super) async fn take_group(&self, new: GroupConfig, save: bool) -> Result<(), String> {
        let me = self.cluster.local.me.clone();
        let old = self.cluster.group();
        if *old == new {
            return Ok(());
        }
        membership::check_live(&old, &new, &me)?;
        if let Some(m) = &self.mirror {
            m.reconfigure(&new).map_err(|e| e.to_string())?;
        }
        self.cluster
            .reconfigure(new.clone())
            .await
            .map_err(|e| e.to_string())?;
        let peers = peer_names(&new, &me);
        self.admitted.set(&peers, false);
        self.lock().set_peers(peers);
        if save {
            let path = &self.cluster.local.group_file;
            let text = toml::to_string(&new).map_err(|e| e.to_string())?;
            if let Err(e) = write_atomically(path, text.as_bytes()) {
                warn!(
                    "device group taken, but cannot save {}: {e}",
                    path.display()
                );
            }
        }
        Ok(())
    }

    /// A new generation for what runs now (after a membership change made here; the caller
    /// pushes it, in its own order, whatever `auto_sync` says).
    async fn commit_running(&self) {
        let config = self.daemon_config();
        self.commit(&config).await;
    }

    /// `lbctl device-group add`.
    pub async fn add_device(self: &Arc<Self>, device: Device) -> Value {
        let old = self.cluster.group();
        if old.devices.iter().any(|d| d.name == device.name) {
            return json!({"error": format!("device {} is already a member", device.name)});
        }
        let name = device.name.clone();
        let mut new = (*old).clone();
        new.devices.push(device);
        let new = match validated(new) {
            Ok(g) => g,
            Err(e) => return json!({ "error": e }),
        };
        if let Err(e) = self.take_group(new.clone(), true).await {
            return json!({ "error": e });
        }
        info!(device = %name, "device group: device added");
        self.commit_running().await;
        // The new device first, alone: the rest of the group hears of it only once it holds
        // the configuration.
        let sync = self.sync_to(std::slice::from_ref(&name), &new, false).await;
        let refused = sync["failed"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["device"] == name.as_str())
            .map(|f| f["reason"].as_str().unwrap_or("?").to_string())
            .or_else(|| sync.get("error").map(|e| e.to_string()));
        if let Some(reason) = refused {
            // The new device did not take the configuration (not reachable, another CA, a
            // configuration it refuses): it is not added.
            warn!(device = %name, %reason, "device group: the new device did not take the configuration; not added");
            if let Err(e) = self.take_group((*old).clone(), true).await {
                warn!("device group: cannot take the previous device group back: {e}");
            }
            self.commit_running().await;
            return json!({
                "error": format!("{name} not added: the configuration did not reach it: {reason}")
            });
        }
        let rest = self.sync_to(&[], &new, true).await;
        json!({ "added": name, "sync": merge(sync, rest) })
    }

    /// `lbctl device-group remove`.
    pub async fn remove_device(self: &Arc<Self>, name: &str) -> Value {
        if name == self.cluster.local.me {
            return json!({"error": "a device cannot remove itself: run this on another device of the group"});
        }
        let old = self.cluster.group();
        if !old.devices.iter().any(|d| d.name == name) {
            return json!({"error": format!("no device {name} in the group")});
        }
        let moved = match self.move_away(name).await {
            Ok(m) => m,
            Err(e) => return json!({ "error": e }),
        };
        let mut new = (*old).clone();
        new.devices.retain(|d| d.name != name);
        for tg in &mut new.traffic_groups {
            tg.ha_order.retain(|d| d != name);
        }
        let new = match validated(new) {
            Ok(g) => g,
            Err(e) => return json!({ "error": e }),
        };
        if let Err(e) = self.take_group(new, true).await {
            return json!({ "error": e });
        }
        info!(device = %name, moved = ?moved, "device group: device removed");
        self.commit_running().await;
        let sync = self.sync_to(&[name.to_string()], &old, true).await;
        json!({ "removed": name, "moved": moved, "sync": sync })
    }

    /// Moves every traffic group `device` holds to its next-active device and waits until
    /// none is there ([`MOVE_WAIT`] at most); the traffic groups moved.
    async fn move_away(&self, device: &str) -> Result<Vec<String>, String> {
        let driver = &self.cluster.driver;
        let held = |st: &crate::cluster::placement::GroupStatus| -> Vec<String> {
            st.traffic_groups
                .iter()
                .filter(|t| t.active.as_deref() == Some(device))
                .map(|t| t.name.clone())
                .collect()
        };
        let moving = held(&driver.status().await);
        for tg in &moving {
            driver
                .failover(tg, None)
                .await
                .map_err(|e| format!("cannot move {tg} off {device}: {e}"))?;
        }
        let deadline = tokio::time::Instant::now() + MOVE_WAIT;
        loop {
            let left = held(&driver.status().await);
            if left.is_empty() {
                return Ok(moving);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{device} still holds {left:?} after {MOVE_WAIT:?}: nothing removed"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Two sync results as one (the lists joined).
fn merge(mut a: Value, b: Value) -> Value {
    if b.get("error").is_some() {
        return b;
    }
    for key in ["synced", "full", "failed"] {
        let mut list = a[key].as_array().cloned().unwrap_or_default();
        list.extend(b[key].as_array().cloned().unwrap_or_default());
        a[key] = Value::Array(list);
    }
    a
}

/// The device `lbctl device-group add` names.
pub(super) fn device_from(
    name: String,
    failover: &[String],
    mirror: &[String],
    config_sync: Option<&str>,
    ha_capacity: Option<u32>,
) -> Result<Device, String> {
    let addr = |s: &str| -> Result<std::net::IpAddr, String> {
        s.parse().map_err(|_| format!("`{s}` is not an IP address"))
    };
    let mut v = json!({
        "name": name,
        "failover_addresses": failover.iter().map(|a| addr(a)).collect::<Result<Vec<_>, _>>()?,
        "mirror_addresses": mirror.iter().map(|a| addr(a)).collect::<Result<Vec<_>, _>>()?,
    });
    if let Some(a) = config_sync {
        v["config_sync_address"] = json!(addr(a)?);
    }
    if let Some(c) = ha_capacity {
        v["ha_capacity"] = json!(c);
    }
    serde_json::from_value(v).map_err(|e| format!("device {name}: {e}"))
}

/// A membership command's answer: an error when it or its sync failed somewhere.
pub(super) fn sync_result(v: Value) -> Result<Value, String> {
    if let Some(e) = v.get("error") {
        return Err(e.as_str().unwrap_or("failed").to_string());
    }
    let sync = &v["sync"];
    let done = v
        .get("added")
        .or(v.get("removed"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    if let Some(e) = sync.get("error") {
        return Err(format!(
            "{done}: done here, but config sync failed: {}",
            e.as_str().unwrap_or("?")
        ));
    }
    let failed: Vec<String> = sync["failed"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            format!(
                "{} refused it: {}",
                f["device"].as_str().unwrap_or("?"),
                f["reason"].as_str().unwrap_or("?")
            )
        })
        .collect();
    if failed.is_empty() {
        Ok(v)
    } else {
        Err(format!(
            "{done}: done here, but config sync failed: {}",
            failed.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_made_by_the_command_is_checked_as_in_a_file() {
        let d = device_from(
            "d".into(),
            &["192.168.100.9".into()],
            &["192.168.100.9".into()],
            None,
            Some(2),
        )
        .unwrap();
        assert_eq!(d.name, "d");
        assert_eq!(d.ha_capacity, 2);
        assert_eq!(d.sync_address(), Some("192.168.100.9".parse().unwrap()));
        let e = device_from("d".into(), &["nope".into()], &[], None, None).unwrap_err();
        assert_eq!(e, "`nope` is not an IP address");
    }

    #[test]
    fn a_sync_that_failed_somewhere_is_an_error_naming_the_device() {
        let ok = json!({"added": "d", "sync": {"synced": ["d"], "failed": []}});
        assert!(sync_result(ok).is_ok());
        let bad = json!({"removed": "d", "sync": {"synced": ["b"],
            "failed": [{"device": "c", "reason": "connect timed out"}]}});
        assert_eq!(
            sync_result(bad).unwrap_err(),
            "d: done here, but config sync failed: c refused it: connect timed out"
        );
        assert_eq!(
            sync_result(json!({"error": "no device x in the group"})).unwrap_err(),
            "no device x in the group"
        );
        let m = merge(
            json!({"synced": ["d"], "full": ["d"], "failed": []}),
            json!({"synced": ["b", "c"], "full": [], "failed": []}),
        );
        assert_eq!(m["synced"], json!(["d", "b", "c"]));
        assert_eq!(m["full"], json!(["d"]));
    }

    #[test]
    fn only_a_group_of_one_device_without_traffic_groups_awaits_its_initial_sync() {
        let mut g = GroupConfig::from_toml(crate::cluster::config::SEED, "g").unwrap();
        assert!(!awaits_initial_sync(&g));
        g.devices.truncate(1);
        assert!(!awaits_initial_sync(&g));
        g.traffic_groups.clear();
        assert!(awaits_initial_sync(&g));
        assert_eq!(peer_names(&g, "A"), Vec::<String>::new());
    }
}
