//! lbd's control socket (`lbctl`, and anything else that operates lbd).
//!
//! A client sends one request object per line and reads one response object per line, as many
//! as it likes on one connection. A response is `{"data":...,"ok":true}` or
//! `{"error":"one line","ok":false}` ([`Response`]).
//!
//! | request | data |
//! |---|---|
//! | `{"cmd":"status"}` | device, uptime, configuration file, object counts, last reload |
//! | `{"cmd":"show-virtual-servers","name":N?}` | virtual servers with settings, availability and counters |
//! | `{"cmd":"show-virtual-addresses"}` | virtual addresses and whether they should be advertised |
//! | `{"cmd":"show-pools","name":N?}` | pools and their members: admin state, health, monitor verdicts, counters |
//! | `{"cmd":"show-connections","virtual_server":VS?,"limit":N?}` | `{total, table_entries, connections}` (at most `limit`, default 1000) |
//! | `{"cmd":"show-persistence","profile":P?}` | persistence records |
//! | `{"cmd":"delete-persistence","profile":P?,"key":K?,"member":"ADDR:PORT"?}` | `{deleted}` |
//! | `{"cmd":"member","pool":P,"member":"ADDR:PORT","state":"enabled"\|"disabled"\|"forced-offline"}` | the member's new state |
//! | `{"cmd":"reload"}` | what the reload did, or the reason it was rejected as the error |
//! | `{"cmd":"show-device-group"}` | `{device_group}`: devices (liveness, TGs held, TGs not in sync), counters, links, bgpd, attribution |
//! | `{"cmd":"show-traffic-groups"}` | `{me, traffic_groups}`: active device, next-active, state, since, why, a failback waiting for sync |
//! | `{"cmd":"failover","traffic_group":TG,"to":DEV?}` | `{}`: a manual placement order (to its next-active without `to`) |
//! | `{"cmd":"show-mirroring"}` | mirroring channels: senders (peer, state, last sent/acked id, lag, records) and receivers (peer, in sync, last applied, records); `{enabled: false}` when off |
//! | `{"cmd":"show-plugins"}` | loaded plugins: name, version, file, ABI, calls, keys, panics, state; files that failed |
//! | `{"cmd":"standby"}` / `{"cmd":"release"}` | `{}`: this device gives up its traffic groups and takes none / may take them again |
//! | `{"cmd":"config-sync"}` | `{generation, synced}`: this device's configuration pushed to every live device that does not hold it; an error naming each device that refused it and why |
//! | `{"cmd":"config-status"}` | config sync: `{me, status, detail, generation, dirty, overwritten, devices}` (each device's generation, liveness, and whether it holds this device's configuration) |
//!
//! A field marked `?` may be absent or `null`. The device-group requests answer with an error
//! when lbd runs without a device group. Object names are matched case-insensitively (the
//! configuration refuses two of one kind that differ only in case).
//!
//! Request lines are at most [`MAX_LINE`] bytes: a longer one is answered with an error and the
//! connection is closed, and so is a line begun and not finished within 10 s. A client of the
//! read-only control group may send only the `show-*`, `status` and `config-status` requests
//! ([`Classify`]); any other gets an error and the connection stays. An empty line, a line that is not a JSON object and an unknown `cmd`
//! or field each get an error, and the connection stays usable.

use serde::de::Deserializer;
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::access::Classify;
use crate::{ControlRequest, Envelope, NO_MESSAGE};

/// Longest request line lbd accepts, newline excluded.
pub const MAX_LINE: usize = 1024 * 1024;

/// A control request (`cmd` names the variant in kebab-case).
///
/// Fields are declared in alphabetical order: serialized, a request is byte for byte the
/// object `serde_json::json!` wrote before these types existed (its maps are sorted), so
/// `None` goes on the wire as `null`, as lbctl always sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    Status,
    ShowVirtualServers {
        #[serde(default)]
        name: Option<String>,
    },
    ShowVirtualAddresses,
    ShowPools {
        #[serde(default)]
        name: Option<String>,
    },
    ShowConnections {
        /// At most this many (lbd's default: 1000).
        #[serde(default)]
        limit: Option<usize>,
        #[serde(default)]
        virtual_server: Option<String>,
    },
    ShowPersistence {
        #[serde(default)]
        profile: Option<String>,
    },
    DeletePersistence {
        #[serde(default)]
        key: Option<String>,
        /// `ADDR:PORT`.
        #[serde(default)]
        member: Option<String>,
        #[serde(default)]
        profile: Option<String>,
    },
    Member {
        /// `ADDR:PORT` (`[ADDR]:PORT` for IPv6).
        member: String,
        pool: String,
        /// `enabled`, `disabled` or `forced-offline` (lbd checks it).
        state: String,
    },
    Reload,
    ShowDeviceGroup,
    ShowTrafficGroups,
    ShowMirroring,
    Failover {
        /// The device to move it to; its next-active when absent.
        #[serde(default)]
        to: Option<String>,
        traffic_group: String,
    },
    Standby,
    Release,
    ShowPlugins,
    ConfigStatus,
    ConfigSync,
    /// Add a device to the device group (live) and sync the whole configuration to it.
    DeviceGroupAdd {
        name: String,
        /// Its heartbeat addresses (one or two).
        failover_addresses: Vec<String>,
        /// Its mirroring addresses (none, one or two).
        #[serde(default)]
        mirror_addresses: Vec<String>,
        /// Where config sync reaches it (default: its first mirroring address).
        #[serde(default)]
        config_sync_address: Option<String>,
        /// Its HA capacity (default 1).
        #[serde(default)]
        ha_capacity: Option<u32>,
    },
    /// Move a device's traffic groups away, then remove it from the device group (live).
    DeviceGroupRemove {
        name: String,
    },
}

impl Request {
    /// `member`: sets `member` (`ADDR:PORT`) of `pool` to `state` (`enabled`, `disabled` or
    /// `forced-offline`).
    pub fn member(pool: &str, member: impl ToString, state: &str) -> Request {
        Request::Member {
            member: member.to_string(),
            pool: pool.into(),
            state: state.into(),
        }
    }
}

impl ControlRequest for Request {
    type Response = Response;
    const DAEMON: &'static str = "lbd";
}

impl Classify for Request {
    /// A client of the read-only group may send these only.
    fn read_only(&self) -> bool {
        match self {
            Request::Status
            | Request::ShowVirtualServers { .. }
            | Request::ShowVirtualAddresses
            | Request::ShowPools { .. }
            | Request::ShowConnections { .. }
            | Request::ShowPersistence { .. }
            | Request::ShowDeviceGroup
            | Request::ShowTrafficGroups
            | Request::ShowMirroring
            | Request::ShowPlugins
            | Request::ConfigStatus => true,
            Request::DeletePersistence { .. }
            | Request::Member { .. }
            | Request::Reload
            | Request::Failover { .. }
            | Request::Standby
            | Request::Release
            | Request::ConfigSync
            | Request::DeviceGroupAdd { .. }
            | Request::DeviceGroupRemove { .. } => false,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::ShowVirtualServers { .. } => "show-virtual-servers",
            Request::ShowVirtualAddresses => "show-virtual-addresses",
            Request::ShowPools { .. } => "show-pools",
            Request::ShowConnections { .. } => "show-connections",
            Request::ShowPersistence { .. } => "show-persistence",
            Request::DeletePersistence { .. } => "delete-persistence",
            Request::Member { .. } => "member",
            Request::Reload => "reload",
            Request::ShowDeviceGroup => "show-device-group",
            Request::ShowTrafficGroups => "show-traffic-groups",
            Request::ShowMirroring => "show-mirroring",
            Request::Failover { .. } => "failover",
            Request::Standby => "standby",
            Request::Release => "release",
            Request::ShowPlugins => "show-plugins",
            Request::ConfigStatus => "config-status",
            Request::ConfigSync => "config-sync",
            Request::DeviceGroupAdd { .. } => "device-group-add",
            Request::DeviceGroupRemove { .. } => "device-group-remove",
        }
    }
}

/// lbd's answer: `{"data":...,"ok":true}` or `{"error":"...","ok":false}`.
///
/// The data stays JSON: each request's payload is what lbd's runtime objects serialize to.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Ok(Value),
    Err(String),
}

impl Response {
    /// The answer to a request that was carried out (`Ok`) or refused (`Err`).
    pub fn from_result(r: Result<Value, String>) -> Response {
        match r {
            Ok(data) => Response::Ok(data),
            Err(e) => Response::failure(e),
        }
    }
}

impl Envelope for Response {
    type Data = Value;

    fn into_result(self) -> Result<Value, String> {
        match self {
            Response::Ok(data) => Ok(data),
            Response::Err(e) => Err(e),
        }
    }

    /// One line, whatever the message.
    fn failure(message: impl std::fmt::Display) -> Response {
        Response::Err(message.to_string().replace(['\n', '\r'], " "))
    }
}

impl Serialize for Response {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Keys in the sorted order lbd has always written them in.
        let mut m = s.serialize_map(Some(2))?;
        match self {
            Response::Ok(data) => {
                m.serialize_entry("data", data)?;
                m.serialize_entry("ok", &true)?;
            }
            Response::Err(e) => {
                m.serialize_entry("error", e)?;
                m.serialize_entry("ok", &false)?;
            }
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Response {
    /// Any JSON: anything but `"ok": true` is a failure, a success without data has `null`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut v = Value::deserialize(d)?;
        Ok(if v["ok"] == Value::Bool(true) {
            Response::Ok(v.get_mut("data").map(Value::take).unwrap_or_default())
        } else {
            Response::Err(v["error"].as_str().unwrap_or(NO_MESSAGE).to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Every request, as lbctl wrote it with `json!` before these types existed.
    fn cases() -> Vec<(Request, Value)> {
        let s = |x: &str| Some(x.to_string());
        vec![
            (Request::Status, json!({"cmd": "status"})),
            (
                Request::ShowVirtualServers { name: None },
                json!({"cmd": "show-virtual-servers", "name": null}),
            ),
            (
                Request::ShowVirtualServers { name: s("web") },
                json!({"cmd": "show-virtual-servers", "name": "web"}),
            ),
            (
                Request::ShowVirtualAddresses,
                json!({"cmd": "show-virtual-addresses"}),
            ),
            (
                Request::ShowPools { name: s("web") },
                json!({"cmd": "show-pools", "name": "web"}),
            ),
            (
                Request::ShowConnections {
                    limit: Some(5),
                    virtual_server: s("web"),
                },
                json!({"cmd": "show-connections", "virtual_server": "web", "limit": 5}),
            ),
            (
                Request::ShowConnections {
                    limit: Some(1000),
                    virtual_server: None,
                },
                json!({"cmd": "show-connections", "virtual_server": null, "limit": 1000}),
            ),
            (
                Request::ShowPersistence { profile: s("src") },
                json!({"cmd": "show-persistence", "profile": "src"}),
            ),
            (
                Request::DeletePersistence {
                    key: None,
                    member: s("10.0.0.1:80"),
                    profile: None,
                },
                json!({"cmd": "delete-persistence", "profile": null, "key": null, "member": "10.0.0.1:80"}),
            ),
            (
                Request::Member {
                    member: "[fd00::5]:80".into(),
                    pool: "web".into(),
                    state: "forced-offline".into(),
                },
                json!({"cmd": "member", "pool": "web", "member": "[fd00::5]:80", "state": "forced-offline"}),
            ),
            (Request::Reload, json!({"cmd": "reload"})),
            (
                Request::ShowDeviceGroup,
                json!({"cmd": "show-device-group"}),
            ),
            (
                Request::ShowTrafficGroups,
                json!({"cmd": "show-traffic-groups"}),
            ),
            (Request::ShowMirroring, json!({"cmd": "show-mirroring"})),
            (
                Request::Failover {
                    to: None,
                    traffic_group: "tg-2".into(),
                },
                json!({"cmd": "failover", "traffic_group": "tg-2", "to": null}),
            ),
            (
                Request::Failover {
                    to: s("c"),
                    traffic_group: "tg-2".into(),
                },
                json!({"cmd": "failover", "traffic_group": "tg-2", "to": "c"}),
            ),
            (Request::Standby, json!({"cmd": "standby"})),
            (Request::Release, json!({"cmd": "release"})),
            (Request::ShowPlugins, json!({"cmd": "show-plugins"})),
            (Request::ConfigStatus, json!({"cmd": "config-status"})),
            (Request::ConfigSync, json!({"cmd": "config-sync"})),
        ]
    }

    #[test]
    fn every_request_is_classified_under_its_own_name() {
        let mut all: Vec<Request> = cases().into_iter().map(|(r, _)| r).collect();
        all.push(Request::DeviceGroupRemove { name: "d".into() });
        all.push(Request::DeviceGroupAdd {
            name: "d".into(),
            failover_addresses: vec![],
            mirror_addresses: vec![],
            config_sync_address: None,
            ha_capacity: None,
        });
        for r in all {
            let v = serde_json::to_value(&r).unwrap();
            assert_eq!(v["cmd"], r.name());
            let shows = r.name().starts_with("show-") || r.name().ends_with("status");
            assert_eq!(r.read_only(), shows, "{}", r.name());
        }
    }

    #[test]
    fn membership_requests_are_named_as_documented() {
        let add = Request::DeviceGroupAdd {
            name: "d".into(),
            failover_addresses: vec!["192.168.100.9".into()],
            mirror_addresses: vec![],
            config_sync_address: None,
            ha_capacity: Some(2),
        };
        let v = serde_json::to_value(&add).unwrap();
        assert_eq!(v["cmd"], "device-group-add");
        assert_eq!(v["failover_addresses"][0], "192.168.100.9");
        assert_eq!(serde_json::from_value::<Request>(v).unwrap(), add);
        let remove: Request =
            serde_json::from_value(json!({"cmd": "device-group-remove", "name": "d"})).unwrap();
        assert_eq!(remove, Request::DeviceGroupRemove { name: "d".into() });
    }

    #[test]
    fn every_request_is_byte_for_byte_what_lbctl_sent() {
        for (req, old) in cases() {
            assert_eq!(serde_json::to_string(&req).unwrap(), old.to_string());
            assert_eq!(serde_json::from_value::<Request>(old).unwrap(), req);
        }
    }

    #[test]
    fn absent_optional_fields_and_bad_requests() {
        // What the tests and other clients wrote: optional fields left out.
        let r: Request = serde_json::from_str(r#"{"cmd":"show-connections"}"#).unwrap();
        assert_eq!(
            r,
            Request::ShowConnections {
                limit: None,
                virtual_server: None
            }
        );
        for (line, want) in [
            (r#"{"cmd":"frobnicate"}"#, "unknown variant `frobnicate`"),
            (r#"{"nocmd":1}"#, "missing field `cmd`"),
            (
                r#"{"cmd":"show-pools","nmae":"web"}"#,
                "unknown field `nmae`",
            ),
            (r#"{"cmd":"member","pool":"web"}"#, "missing field `member`"),
        ] {
            let e = serde_json::from_str::<Request>(line)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{line}: {e}");
        }
    }

    #[test]
    fn the_envelope_is_what_lbd_wrote() {
        let ok = Response::Ok(json!({"deleted": 2}));
        let text = serde_json::to_string(&ok).unwrap();
        assert_eq!(
            text,
            json!({"ok": true, "data": {"deleted": 2}}).to_string()
        );
        assert_eq!(serde_json::from_str::<Response>(&text).unwrap(), ok);
        let err = Response::failure("two\nlines");
        let text = serde_json::to_string(&err).unwrap();
        assert_eq!(text, r#"{"error":"two lines","ok":false}"#);
        assert_eq!(err.into_result(), Err("two lines".to_string()));
        // Odd answers: no data is null, anything else without a message is an error.
        let r: Response = serde_json::from_str(r#"{"ok":true}"#).unwrap();
        assert_eq!(r, Response::Ok(Value::Null));
        let r: Response = serde_json::from_str(r#"{"ok":false}"#).unwrap();
        assert_eq!(r, Response::Err(NO_MESSAGE.into()));
        for odd in [r#"{"x":1}"#, "[1]", "3"] {
            let r: Response = serde_json::from_str(odd).unwrap();
            assert_eq!(r, Response::Err(NO_MESSAGE.into()), "{odd}");
        }
    }
}
