//! lbd's metrics and health, served by [`spanlb_control::http`] (`/metrics`, `/healthz`).
//!
//! Every value is read from [`App`] when scraped, by a collector registered once: the
//! counters the data path already keeps, the runtime's availability, the table sizes. Metrics
//! (prefix `lbd_`; counters end in `_total` on the wire, a unit's suffix comes before it; the
//! `process_*` metrics have no prefix):
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `virtual_server_current_connections` | `virtual_server` | connections (UDP flows) open now |
//! | `virtual_server_connections_total` | `virtual_server` | connections accepted |
//! | `build_info` | `version`, `commit`, `rustc` | 1 (`unknown` where the build did not say) |
//! | `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`, `process_start_time_seconds` | | the process, from `/proc/self` (no `lbd_` prefix) |
//! | `virtual_server_in_bytes_total` / `_out_bytes_total` | `virtual_server` | client → member / member → client |
//! | `virtual_server_refused_total` | `virtual_server` | refused: connection limit or no available member |
//! | `virtual_server_dropped_datagrams_total` | `virtual_server` | UDP datagrams dropped on a full socket buffer |
//! | `virtual_server_connect_failures_total` | `virtual_server` | failed connects to members |
//! | `virtual_server_available` | `virtual_server` | 1: enabled and its pool has an available member |
//! | `virtual_server_connect_duration_seconds` | `virtual_server` | histogram: successful TCP connects to members |
//! | `virtual_server_connection_duration_seconds` | `virtual_server` | histogram: proxied TCP connections, from the member's connect to their end |
//! | `virtual_address_advertised` | `address` | 1: route health injection wants it advertised |
//! | `pool_members_available` / `pool_members` | `pool` | members taking new connections / all members |
//! | `member_current_connections`, `member_connections_total`, `member_in_bytes_total`, `member_out_bytes_total`, `member_connect_failures_total` | `pool`, `member` | as for virtual servers |
//! | `member_up` | `pool`, `member` | 1 when the pool's method may send it new connections (admin enabled, health not down, not out by passive health) |
//! | `member_monitor_state` | `pool`, `member`, `monitor`, `state` (`unchecked`, `up`, `down`) | 1 for the monitor's verdict, 0 for the others |
//! | `member_passive_out` | `pool`, `member` | 1 while passive health keeps the member out |
//! | `member_passive_trips_total` | `pool`, `member` | times passive health took the member out |
//! | `connection_table_entries`, `persistence_records` | | table sizes |
//! | `persistence_evictions_total` | `profile` | records evicted over a profile's `max_records` |
//! | `nofile_limit` | | RLIMIT_NOFILE (soft) after raising it to the hard limit at start; 0 unknown |
//! | `descriptor_budget`, `descriptor_budget_used`, `descriptor_budget_used_udp` | | descriptors the data path may hold (TCP: 2 per connection, UDP: 1 per flow, UDP flows at most half; -1 unlimited) / holds now / of which UDP flows |
//! | `descriptor_budget_refused_total` | `protocol` (`tcp`, `udp`) | connections (reset) and flows (datagram dropped) refused because the budget was spent |
//! | `local_connect_errors_total` | | proxied connects and UDP flow sockets that failed for a local reason (EMFILE, ENFILE, ENOBUFS, EADDRNOTAVAIL, ENOMEM): not counted against the member |
//! | `monitor_probes_skipped_total` | | monitor probes that failed for a local reason: no verdict, not counted against the member |
//! | `takeover_rebuilt_total` | `when` (`before-addresses`, `after-addresses`) | mirrored TCP connections rebuilt at takeovers, before the floating addresses moved or after (`takeover_restore_budget` spent) |
//! | `takeover_rebuild_failed_total` | | mirrored TCP connections a takeover could not rebuild |
//! | `takeover_last_rebuild_seconds` | | the last takeover's TCP rebuild time, remainder included (0: none yet) |
//! | `access_log_lines_total`, `access_log_dropped_total` | | access-log lines written; dropped (the file writer's queue full, or a write failed) |
//! | `start_time_seconds` | | when lbd started (Unix time) |
//! | `plugin_calls_total`, `plugin_keys_total`, `plugin_no_match_total`, `plugin_malformed_total`, `plugin_panics_total`, `plugin_timeouts_total`, `plugin_need_more_total` | `plugin` | what loaded plugins answered |
//! | `plugin_enabled` | `plugin` | 0 once disabled after too many panics |
//! | `traffic_group_active` | `traffic_group` | 1: its addresses and routes are in place here (device group only, as the rest of this block) |
//! | `heartbeats_sent_total`, `heartbeats_received_total` | `group` | heartbeat datagrams sent / accepted |
//! | `heartbeats_rejected_total` | `reason` (`bad-tag`, `replayed`, `stale`, `unknown-device`, `malformed`) | heartbeats ignored |
//! | `bgpd_connected` | | 1 while the connection to bgpd's control socket is up |
//! | `config_sync_status` | `status` (`in-sync`, `changes-pending`, `awaiting-initial-sync`, `disconnected`, `sync-failed`) | 1 for this device's config-sync status, 0 for the others |
//! | `config_sync_generation` | | the counter of the group configuration's generation held here |
//! | `mirror_channel_in_sync`, `mirror_channel_last_update_id`, `mirror_channel_acked_update_id`, `mirror_channel_lag_seconds` | `traffic_group`, `peer`, `role` (`sender`/`receiver`) | mirroring channels (mirroring on only, as the rest of this block) |
//! | `mirror_channel_state` | `traffic_group`, `peer`, `role`, `state` | 1 for the channel's state, 0 for the other states of its role (sender: `connecting`, `resyncing`, `in-sync`, `lagging`; receiver: `connecting`, `resyncing`, `in-sync`) |
//! | `mirror_updates_offered_total`, `mirror_refreshes_not_sent_total`, `mirror_offers_refused_total` | | what the data path offered to mirroring |
//! | `mirror_records_over_limit_total` | | mirrored flows and connections refused: the traffic group held `mirror_max_records` / `mirror_max_megabytes` |
//! | `mirror_connections_refused_total` | `reason` (`source`, `busy`, `trust`, `not-holder`) | connections the mirroring receivers refused |
//! | `last_reload_timestamp_seconds`, `last_reload_success` | | the last reload, once there was one |
//! | `control_clients_refused_total` | `reason` (`permission`, `client-limit`) | control-socket clients refused at connect |
//! | `control_connections_closed_total` | `reason` (`line-too-long`, `partial-line-timeout`, `idle`) | control connections closed by lbd |
//! | `control_requests_refused_total` | `reason` (`read-only`) | requests refused to a read-only control client |
//!
//! The gauges of open connections are `*_current_connections`, not `*_connections`: that name
//! is the family of the `*_connections_total` counter, and OpenMetrics wants family names unique.
//!
//! States are StateSet-like gauges: one sample per possible state, labelled `state` (or
//! `status`), 1 for the current one.
//!
//! `/healthz` is [`App::ready`]: 200 once every configured virtual server listens (and, with a
//! device group, its driver runs). The endpoint is bound before the listeners, so that it says
//! 503 while lbd starts.
//!
//! This module must not count anything itself nor touch the data path: it only reads. The
//! HTTP side (limits on clients included) is [`spanlb_control::http`]'s.

use std::fmt;
use std::sync::{Arc, OnceLock, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use spanlb_control::http::{build_info, ProcessCollector};
use tracing::warn;

use super::context::App;
use crate::monitor::Health;

/// The app, once it exists (the endpoint is served before).
type Slot = Arc<OnceLock<Weak<App>>>;

/// Reads lbd's state at scrape time.
struct StateCollector {
    app: Slot,
}

impl fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateCollector")
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// One metric family: its descriptor, then one sample per label set.
fn family<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: Kind,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    family_in(enc, name, None, help, kind, samples)
}

/// [`family`] with a unit (`name` without it: the encoder appends `_bytes`, `_seconds`).
fn family_in<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    unit: Option<Unit>,
    help: &str,
    kind: Kind,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mt = match kind {
        Kind::Counter => MetricType::Counter,
        Kind::Gauge => MetricType::Gauge,
    };
    let mut m = enc.encode_descriptor(name, help, unit.as_ref(), mt)?;
    for (labels, v) in samples {
        let s = m.encode_family(&labels)?;
        match kind {
            Kind::Counter => ConstCounter::new(v).encode(s)?,
            Kind::Gauge => ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(s)?,
        }
    }
    Ok(())
}

/// A float gauge family in seconds (`name` without `_seconds`).
fn seconds_family<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, f64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Gauge)?;
    for (labels, v) in samples {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A histogram family in seconds (`name` without `_seconds`).
fn histogram_family<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (VsLabel, &'a crate::state::AtomicHistogram)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
    for (labels, h) in samples {
        let (sum, count, buckets) = h.snapshot();
        m.encode_family(&labels)?
            .encode_histogram::<()>(sum, count, &buckets, None)?;
    }
    Ok(())
}

/// A metric without labels.
fn single(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A counter without labels.
fn single_counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn health_name(h: Health) -> &'static str {
    match h {
        Health::Unchecked => "unchecked",
        Health::Up => "up",
        Health::Down => "down",
    }
}

type VsLabel = [(&'static str, String); 1];
type MemberLabel = [(&'static str, String); 2];

impl Collector for StateCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        build_info(&mut enc, env!("CARGO_PKG_VERSION"))?;
        let Some(app) = self.app.get().and_then(Weak::upgrade) else {
            return Ok(());
        };
        let rt = app.live().runtime.load_full();
        let e = &mut enc;

        let vss: Vec<(VsLabel, crate::state::CounterValues, bool)> = rt
            .virtual_servers
            .values()
            .map(|v| {
                let l = [("virtual_server", v.name.clone())];
                (l, v.counters.values(), v.available())
            })
            .collect();
        type VsPick = fn(&crate::state::CounterValues) -> u64;
        type Fam<'a> = (&'a str, Option<Unit>, &'a str, Kind, VsPick);
        let vs_families: [Fam<'_>; 7] = [
            (
                "virtual_server_current_connections",
                None,
                "Connections (UDP flows) open now",
                Kind::Gauge,
                |c| c.current,
            ),
            (
                "virtual_server_connections",
                None,
                "Connections (UDP flows) accepted",
                Kind::Counter,
                |c| c.total,
            ),
            (
                "virtual_server_in",
                Some(Unit::Bytes),
                "Bytes from clients to members",
                Kind::Counter,
                |c| c.bytes_in,
            ),
            (
                "virtual_server_out",
                Some(Unit::Bytes),
                "Bytes from members to clients",
                Kind::Counter,
                |c| c.bytes_out,
            ),
            (
                "virtual_server_refused",
                None,
                "Connections refused by the connection limit or for want of an available member",
                Kind::Counter,
                |c| c.refused,
            ),
            (
                "virtual_server_dropped_datagrams",
                None,
                "UDP datagrams of established flows dropped on a full socket buffer",
                Kind::Counter,
                |c| c.dropped,
            ),
            (
                "virtual_server_connect_failures",
                None,
                "Connects to members that failed",
                Kind::Counter,
                |c| c.connect_failures,
            ),
        ];
        for (name, unit, help, kind, pick) in vs_families {
            family_in(
                e,
                name,
                unit,
                help,
                kind,
                vss.iter().map(|(l, c, _)| (l.clone(), pick(c))),
            )?;
        }
        histogram_family(
            e,
            "virtual_server_connect_duration",
            "Time a successful TCP connect to a member took",
            rt.virtual_servers
                .values()
                .map(|v| ([("virtual_server", v.name.clone())], &v.timings.connect)),
        )?;
        histogram_family(
            e,
            "virtual_server_connection_duration",
            "How long proxied TCP connections lived, from the member's connect to their end",
            rt.virtual_servers
                .values()
                .map(|v| ([("virtual_server", v.name.clone())], &v.timings.duration)),
        )?;
        family(
            e,
            "virtual_server_available",
            "1 when the virtual server is enabled and its pool has an available member",
            Kind::Gauge,
            vss.iter().map(|(l, _, a)| (l.clone(), u64::from(*a))),
        )?;
        family(
            e,
            "virtual_address_advertised",
            "1 when the address's policy wants it advertised (route health injection)",
            Kind::Gauge,
            rt.virtual_addresses().into_iter().map(|va| {
                (
                    [("address", va.address.to_string())],
                    u64::from(va.advertised),
                )
            }),
        )?;

        family(
            e,
            "pool_members_available",
            "Members taking new connections",
            Kind::Gauge,
            rt.pools
                .values()
                .map(|p| ([("pool", p.name.clone())], p.available() as u64)),
        )?;
        family(
            e,
            "pool_members",
            "Members configured",
            Kind::Gauge,
            rt.pools
                .values()
                .map(|p| ([("pool", p.name.clone())], p.members.len() as u64)),
        )?;

        let members: Vec<(MemberLabel, &crate::state::MemberState)> = rt
            .pools
            .values()
            .flat_map(|p| p.members.iter())
            .map(|m| {
                let l = [("pool", m.pool.clone()), ("member", m.addr.to_string())];
                (l, m.as_ref())
            })
            .collect();
        let member_families: [Fam<'_>; 5] = [
            (
                "member_current_connections",
                None,
                "Connections (UDP flows) open now",
                Kind::Gauge,
                |c| c.current,
            ),
            (
                "member_connections",
                None,
                "Connections (UDP flows) sent to the member",
                Kind::Counter,
                |c| c.total,
            ),
            (
                "member_in",
                Some(Unit::Bytes),
                "Bytes from clients to the member",
                Kind::Counter,
                |c| c.bytes_in,
            ),
            (
                "member_out",
                Some(Unit::Bytes),
                "Bytes from the member to clients",
                Kind::Counter,
                |c| c.bytes_out,
            ),
            (
                "member_connect_failures",
                None,
                "Connects to the member that failed",
                Kind::Counter,
                |c| c.connect_failures,
            ),
        ];
        let values: Vec<crate::state::CounterValues> =
            members.iter().map(|(_, m)| m.counters.values()).collect();
        for (name, unit, help, kind, pick) in member_families {
            let samples = members
                .iter()
                .zip(&values)
                .map(|((l, _), c)| (l.clone(), pick(c)));
            family_in(e, name, unit, help, kind, samples)?;
        }
        family(
            e,
            "member_up",
            "1 when the pool's method may send the member new connections (admin state enabled, \
             health not down, not out by passive health)",
            Kind::Gauge,
            members
                .iter()
                .map(|(l, m)| (l.clone(), u64::from(m.available()))),
        )?;
        family(
            e,
            "member_passive_out",
            "1 while passive health keeps the member out of the selection",
            Kind::Gauge,
            members
                .iter()
                .map(|(l, m)| (l.clone(), u64::from(m.passive_out()))),
        )?;
        family(
            e,
            "member_passive_trips",
            "Times passive health took the member out (consecutive connect failures)",
            Kind::Counter,
            members.iter().map(|(l, m)| (l.clone(), m.passive_trips())),
        )?;
        let monitor_states = rt.pools.values().flat_map(|p| {
            p.members.iter().flat_map(move |m| {
                let verdicts = m.verdicts();
                p.monitors
                    .iter()
                    .flat_map(|mon| {
                        let h = verdicts.get(mon).map_or(Health::Unchecked, |v| v.health);
                        [Health::Unchecked, Health::Up, Health::Down].map(|st| {
                            let l = [
                                ("pool", m.pool.clone()),
                                ("member", m.addr.to_string()),
                                ("monitor", mon.clone()),
                                ("state", health_name(st).to_string()),
                            ];
                            (l, u64::from(st == h))
                        })
                    })
                    .collect::<Vec<_>>()
            })
        });
        family(
            e,
            "member_monitor_state",
            "A monitor's verdict on the member: 1 for its state (unchecked, up, down), 0 for the others",
            Kind::Gauge,
            monitor_states,
        )?;

        single(
            e,
            "connection_table_entries",
            "Connections and UDP flows in the connection table",
            app.live().conns.len() as i64,
        )?;
        single(
            e,
            "persistence_records",
            "Records in the persistence table",
            app.live().persist.len() as i64,
        )?;
        family(
            e,
            "persistence_evictions",
            "Persistence records evicted over a profile's max_records",
            Kind::Counter,
            app.live()
                .persist
                .evicted()
                .into_iter()
                .map(|(p, n)| ([("profile", p)], n)),
        )?;
        {
            let b = app.daemon.dp.budget.values();
            single(
                e,
                "nofile_limit",
                "RLIMIT_NOFILE (soft) after raising it at start; 0 when unknown",
                i64::try_from(b.nofile).unwrap_or(i64::MAX),
            )?;
            single(
                e,
                "descriptor_budget",
                "Descriptors TCP connections (2 each) and UDP flows (1 each) may hold; -1 unlimited",
                i64::try_from(b.limit).unwrap_or(-1),
            )?;
            single(
                e,
                "descriptor_budget_used",
                "Descriptors TCP connections and UDP flows hold now",
                i64::try_from(b.used).unwrap_or(i64::MAX),
            )?;
            single(
                e,
                "descriptor_budget_used_udp",
                "Of those, what UDP flows hold (at most half the budget)",
                i64::try_from(b.used_udp).unwrap_or(i64::MAX),
            )?;
            family(
                e,
                "descriptor_budget_refused",
                "Connections (reset) and UDP flows (datagram dropped) refused: descriptor budget spent",
                Kind::Counter,
                [
                    ([("protocol", "tcp".to_string())], b.refused_tcp),
                    ([("protocol", "udp".to_string())], b.refused_udp),
                ],
            )?;
            single_counter(
                e,
                "local_connect_errors",
                "Proxied connects and UDP flow sockets that failed for a local reason (not the member's)",
                b.local_errors,
            )?;
            single_counter(
                e,
                "monitor_probes_skipped",
                "Monitor probes that failed for a local reason: no verdict",
                crate::monitor::probe::skipped_probes(),
            )?;
        }
        {
            let t = &app.daemon.dp.takeover;
            let load =
                |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            family(
                e,
                "takeover_rebuilt",
                "Mirrored TCP connections rebuilt at takeovers: before the floating addresses \
                 moved, or after them (takeover_restore_budget spent)",
                Kind::Counter,
                [
                    (
                        [("when", "before-addresses".to_string())],
                        load(&t.rebuilt_before),
                    ),
                    (
                        [("when", "after-addresses".to_string())],
                        load(&t.rebuilt_after),
                    ),
                ],
            )?;
            single_counter(
                e,
                "takeover_rebuild_failed",
                "Mirrored TCP connections that could not be rebuilt at takeovers",
                load(&t.failed),
            )?;
            seconds_family(
                e,
                "takeover_last_rebuild",
                "How long the last takeover's TCP rebuild took, remainder included (0: none yet)",
                [((), load(&t.last_rebuild_ms) as f64 / 1000.0)],
            )?;
            let a = &app.daemon.dp.access;
            single_counter(
                e,
                "access_log_lines",
                "Access-log lines written (to the log, or queued for access_log_file)",
                load(&a.logged),
            )?;
            single_counter(
                e,
                "access_log_dropped",
                "Access-log lines dropped: the file writer could not keep up or write",
                load(&a.dropped),
            )?;
        }
        {
            let plugins = app
                .daemon
                .plugins
                .lock()
                .map(|r| r.status())
                .unwrap_or_default();
            type Pick = fn(&crate::plugins::PluginStatus) -> u64;
            let fams: [(&str, &str, Pick); 7] = [
                ("plugin_calls", "Calls into the plugin", |p| p.calls),
                ("plugin_keys", "Answers with a key or a member", |p| {
                    p.keys + p.members
                }),
                ("plugin_no_match", "Answers without a key", |p| p.no_match),
                (
                    "plugin_malformed",
                    "Inputs the plugin called malformed",
                    |p| p.malformed,
                ),
                ("plugin_panics", "Panics caught in the plugin", |p| p.panics),
                (
                    "plugin_timeouts",
                    "Calls still running after plugin_call_timeout (each disables the plugin)",
                    |p| p.timeouts,
                ),
                ("plugin_need_more", "Requests for more bytes", |p| {
                    p.need_more
                }),
            ];
            for (name, help, pick) in fams {
                family(
                    e,
                    name,
                    help,
                    Kind::Counter,
                    plugins
                        .iter()
                        .map(|p| ([("plugin", p.name.clone())], pick(p))),
                )?;
            }
            family(
                e,
                "plugin_enabled",
                "1 while the plugin is enabled (0: disabled after too many panics)",
                Kind::Gauge,
                plugins.iter().map(|p| {
                    (
                        [("plugin", p.name.clone())],
                        u64::from(p.state == "enabled"),
                    )
                }),
            )?;
        }
        if let Some(c) = app.cluster.as_ref() {
            let local = c.local_status();
            family(
                e,
                "traffic_group_active",
                "1 when the traffic group's addresses and routes are in place on this device",
                Kind::Gauge,
                c.group().traffic_groups.iter().map(|t| {
                    (
                        [("traffic_group", t.name.clone())],
                        u64::from(local.active_here.contains_key(&t.name)),
                    )
                }),
            )?;
            let k = c.counters();
            family(
                e,
                "heartbeats_sent",
                "Heartbeat datagrams sent (one per peer address)",
                Kind::Counter,
                [([("group", c.group().group.name.clone())], k.heartbeats_sent)],
            )?;
            family(
                e,
                "heartbeats_received",
                "Heartbeats accepted",
                Kind::Counter,
                [(
                    [("group", c.group().group.name.clone())],
                    k.heartbeats_received,
                )],
            )?;
            family(
                e,
                "heartbeats_rejected",
                "Heartbeat datagrams rejected, by reason",
                Kind::Counter,
                [
                    ("bad-tag", k.rejected_bad_tag),
                    ("replayed", k.rejected_replayed),
                    ("stale", k.rejected_stale),
                    ("unknown-device", k.rejected_unknown_device),
                    ("malformed", k.rejected_malformed),
                ]
                .map(|(r, v)| ([("reason", r.to_string())], v)),
            )?;
            single(
                e,
                "bgpd_connected",
                "1 while lbd's connection to bgpd's control socket is up",
                i64::from(local.bgpd.connected),
            )?;
        }
        if let Some(s) = app.sync.as_ref() {
            let (now, counter) = s.figures();
            family(
                e,
                "config_sync_status",
                "1 for this device's config-sync status, 0 for the others",
                Kind::Gauge,
                [
                    "in-sync",
                    "changes-pending",
                    "awaiting-initial-sync",
                    "disconnected",
                    "sync-failed",
                ]
                .map(|st| ([("status", st.to_string())], u64::from(st == now))),
            )?;
            single(
                e,
                "config_sync_generation",
                "The counter of the group configuration's generation held here",
                counter as i64,
            )?;
        }
        if let Some(m) = app.mirror.as_ref() {
            let chans = m.channel_figures();
            type ChanLabel = [(&'static str, String); 3];
            let label = |c: &crate::mirror::service::ChannelFigures| -> ChanLabel {
                [
                    ("traffic_group", c.traffic_group.clone()),
                    ("peer", c.peer.clone()),
                    ("role", c.role.to_string()),
                ]
            };
            family(
                e,
                "mirror_channel_in_sync",
                "1 when the mirroring channel is in sync (sender: the peer acked a full resync; receiver: it holds a complete, live state)",
                Kind::Gauge,
                chans.iter().map(|c| (label(c), u64::from(c.in_sync))),
            )?;
            // Every state of the channel's role, 1 for the current one.
            let states = chans.iter().flat_map(|c| {
                let all: &[&str] = if c.role == "sender" {
                    &["connecting", "resyncing", "in-sync", "lagging"]
                } else {
                    &["connecting", "resyncing", "in-sync"]
                };
                all.iter().map(move |st| {
                    let [t, p, r] = label(c);
                    (
                        [t, p, r, ("state", st.to_string())],
                        u64::from(*st == c.state),
                    )
                })
            });
            family(
                e,
                "mirror_channel_state",
                "1 for the mirroring channel's state (its role's states), 0 for the others",
                Kind::Gauge,
                states,
            )?;
            family(
                e,
                "mirror_channel_last_update_id",
                "Sender: the last update id sent; receiver: the last applied",
                Kind::Gauge,
                chans.iter().map(|c| (label(c), c.last_id)),
            )?;
            family(
                e,
                "mirror_channel_acked_update_id",
                "The last update id the peer acknowledged (receiver: applied)",
                Kind::Gauge,
                chans.iter().map(|c| (label(c), c.acked_id)),
            )?;
            seconds_family(
                e,
                "mirror_channel_lag",
                "How long the oldest unacknowledged update has waited (senders)",
                chans.iter().map(|c| (label(c), c.lag_ms as f64 / 1000.0)),
            )?;
            let (offered, skipped, refused) = m.offer_counters();
            family(
                e,
                "mirror_updates_offered",
                "Updates the data path offered to mirroring channels",
                Kind::Counter,
                [((), offered)],
            )?;
            family(
                e,
                "mirror_refreshes_not_sent",
                "Persistence refreshes too small to be worth an update",
                Kind::Counter,
                [((), skipped)],
            )?;
            family(
                e,
                "mirror_offers_refused",
                "Offers a channel refused (the record was carried by the next resync)",
                Kind::Counter,
                [((), refused)],
            )?;
            family(
                e,
                "mirror_records_over_limit",
                "Mirrored flows and connections refused: their traffic group held mirror_max_records or mirror_max_megabytes",
                Kind::Counter,
                [((), m.records_over_limit())],
            )?;
            family(
                e,
                "mirror_connections_refused",
                "Connections the mirroring receivers refused, by reason",
                Kind::Counter,
                m.connection_refusals()
                    .into_iter()
                    .map(|(why, n)| ([("reason", why.to_string())], n)),
            )?;
        }
        single(
            e,
            "start_time_seconds",
            "When lbd started, in Unix time",
            (app.live().started_ms / 1000) as i64,
        )?;
        let last = app.daemon.last_reload();
        family(
            e,
            "last_reload_timestamp_seconds",
            "When lbd last reloaded its configuration, in Unix time",
            Kind::Gauge,
            last.iter().map(|(at, _)| ((), at / 1000)),
        )?;
        family(
            e,
            "last_reload_success",
            "1 when the last reload was applied, 0 when it was rejected",
            Kind::Gauge,
            last.iter().map(|(_, r)| ((), u64::from(r.is_ok()))),
        )?;
        let control = &app.control;
        family(
            e,
            "control_clients_refused",
            "Control-socket clients refused at connect, by reason",
            Kind::Counter,
            control
                .refused()
                .map(|(r, v)| ([("reason", r.to_string())], v)),
        )?;
        family(
            e,
            "control_connections_closed",
            "Control connections closed by lbd, by reason",
            Kind::Counter,
            control
                .closed()
                .map(|(r, v)| ([("reason", r.to_string())], v)),
        )?;
        family(
            e,
            "control_requests_refused",
            "Control requests refused to a read-only client",
            Kind::Counter,
            [(
                [("reason", "read-only".to_string())],
                control
                    .refused_read_only
                    .load(std::sync::atomic::Ordering::Relaxed),
            )],
        )?;
        Ok(())
    }
}

/// The registry of lbd's metrics over `app` (it holds no strong reference).
pub fn registry(app: &Arc<App>) -> Registry {
    let slot: Slot = Arc::default();
    let _ = slot.set(Arc::downgrade(app));
    registry_over(slot)
}

fn registry_over(app: Slot) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(ProcessCollector));
    r.sub_registry_with_prefix("lbd")
        .register_collector(Box::new(StateCollector { app }));
    r
}

/// The OpenMetrics text of `registry` now.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String does not fail; an encoding error would leave a partial text.
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        warn!("metrics encoding failed");
    }
    out
}

/// lbd's `/metrics` and `/healthz`. Made before the app exists (the endpoint is served from
/// the start, answering 503), then [`Endpoint::attach`]ed to it.
pub struct Endpoint {
    app: Slot,
    registry: Registry,
}

impl Endpoint {
    pub fn new() -> Arc<Endpoint> {
        let app: Slot = Arc::default();
        Arc::new(Endpoint {
            registry: registry_over(app.clone()),
            app,
        })
    }

    /// From now on, metrics and readiness are `app`'s (it holds no strong reference).
    pub fn attach(&self, app: &Arc<App>) {
        let _ = self.app.set(Arc::downgrade(app));
    }
}

impl spanlb_control::http::Endpoint for Endpoint {
    fn metrics(&self) -> String {
        render(&self.registry)
    }

    fn ready(&self) -> Result<(), String> {
        match self.app.get().and_then(Weak::upgrade) {
            Some(app) => app.ready(),
            None => Err("starting: the virtual servers' listeners are being bound".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::config::{AdminState, Config};

    // Nothing is started: no listener, no monitor; the members are never contacted.
    const CFG: &str = r#"
[device]
name = "lb-a"
internal_address = "192.0.2.6"
[virtual_servers.web]
destination = "198.51.100.10:80"
pool = "web"
[[virtual_addresses]]
address = "198.51.100.10"
[pools.web]
monitors = ["tcp", "http"]
members = [{ address = "192.0.2.50:80" }, { address = "192.0.2.51:80" }]
[monitors.tcp]
type = "tcp"
[monitors.http]
type = "http"
"#;

    async fn get(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8(out).unwrap()
    }

    fn has(text: &str, line: &str) {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }

    #[tokio::test]
    async fn scrape_reads_the_shared_state() {
        tokio::time::timeout(Duration::from_secs(20), async {
            let app = App::standalone(crate::app::Daemon::new(
                Config::from_toml(CFG, "t").unwrap(),
                None,
            ));
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let endpoint = Endpoint::new();
            endpoint.attach(&app);
            let task = tokio::spawn(spanlb_control::http::serve(listener, endpoint));

            let rt = app.live().runtime.load_full();
            let pool = rt.pools["web"].clone();
            let m0 = &pool.members[0];
            m0.counters.total.fetch_add(7, Ordering::Relaxed);
            m0.counters.current.fetch_add(2, Ordering::Relaxed);
            m0.counters.bytes_in.fetch_add(1500, Ordering::Relaxed);
            m0.counters.bytes_out.fetch_add(90000, Ordering::Relaxed);
            m0.counters.connect_failures.fetch_add(1, Ordering::Relaxed);
            m0.set_verdict("tcp", Health::Up, "ok");
            pool.members[1].set_verdict("http", Health::Down, "status 500");
            pool.refresh();
            let vs = &rt.virtual_servers["web"].counters;
            vs.total.fetch_add(9, Ordering::Relaxed);
            vs.refused.fetch_add(3, Ordering::Relaxed);

            let text = get(
                addr,
                b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await;
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
            let ct = spanlb_control::http::CONTENT_TYPE;
            assert!(head.contains(&format!("content-type: {ct}")), "{head}");
            assert!(head.contains(&format!("content-length: {}", body.len())));
            let vsl = r#"{virtual_server="web"}"#;
            has(
                body,
                &format!("lbd_virtual_server_connections_total{vsl} 9"),
            );
            has(
                body,
                &format!("lbd_virtual_server_current_connections{vsl} 0"),
            );
            has(body, &format!("lbd_virtual_server_refused_total{vsl} 3"));
            has(body, &format!("lbd_virtual_server_in_bytes_total{vsl} 0"));
            has(body, "# UNIT lbd_virtual_server_in_bytes bytes");
            has(
                body,
                "# TYPE lbd_virtual_server_connect_duration_seconds histogram",
            );
            has(
                body,
                &format!("lbd_virtual_server_connection_duration_seconds_count{vsl} 0"),
            );
            has(
                body,
                r#"lbd_virtual_server_connect_duration_seconds_bucket{le="+Inf",virtual_server="web"} 0"#,
            );
            assert!(
                body.lines().any(|l| l.starts_with("lbd_build_info{version=\"")),
                "build_info"
            );
            assert!(
                body.lines()
                    .any(|l| l.starts_with("process_resident_memory_bytes ")),
                "process metrics"
            );
            has(body, &format!("lbd_virtual_server_available{vsl} 1"));
            has(body, "# TYPE lbd_virtual_server_connections counter");
            has(body, "# TYPE lbd_virtual_server_current_connections gauge");
            has(
                body,
                r#"lbd_virtual_address_advertised{address="198.51.100.10"} 1"#,
            );
            has(body, r#"lbd_pool_members_available{pool="web"} 1"#);
            has(body, r#"lbd_pool_members{pool="web"} 2"#);
            let m0l = r#"{pool="web",member="192.0.2.50:80"}"#;
            let m1l = r#"{pool="web",member="192.0.2.51:80"}"#;
            has(body, &format!("lbd_member_connections_total{m0l} 7"));
            has(body, &format!("lbd_member_current_connections{m0l} 2"));
            has(body, &format!("lbd_member_in_bytes_total{m0l} 1500"));
            has(body, &format!("lbd_member_out_bytes_total{m0l} 90000"));
            has(body, &format!("lbd_member_connect_failures_total{m0l} 1"));
            has(body, &format!("lbd_member_up{m0l} 1"));
            has(body, &format!("lbd_member_up{m1l} 0"));
            let mon = |member: &str, monitor: &str, state: &str, v: u8| {
                format!(
                    r#"lbd_member_monitor_state{{pool="web",member="{member}",monitor="{monitor}",state="{state}"}} {v}"#
                )
            };
            has(body, &mon("192.0.2.50:80", "tcp", "up", 1));
            has(body, &mon("192.0.2.50:80", "tcp", "down", 0));
            has(body, &mon("192.0.2.50:80", "http", "unchecked", 1));
            has(body, &mon("192.0.2.50:80", "http", "up", 0));
            has(body, &mon("192.0.2.51:80", "http", "down", 1));
            has(body, &mon("192.0.2.51:80", "http", "unchecked", 0));
            has(body, "lbd_connection_table_entries 0");
            has(body, "lbd_persistence_records 0");
            has(
                body,
                &format!("lbd_start_time_seconds {}", app.live().started_ms / 1000),
            );
            assert!(
                !body.lines().any(|l| l.starts_with("lbd_last_reload")),
                "no reload yet"
            );
            assert!(body.ends_with("# EOF\n"));
            spanlb_control::http::check_openmetrics(body)
                .unwrap_or_else(|e| panic!("{e}:\n{body}"));
            // Every family once (OpenMetrics wants unique names).
            let mut types: Vec<&str> = body.lines().filter(|l| l.starts_with("# TYPE ")).collect();
            let n = types.len();
            types.sort();
            types.dedup();
            assert_eq!(types.len(), n);

            // Values are read at each scrape; an admin change shows at once.
            m0.set_admin(AdminState::Disabled);
            pool.refresh();
            m0.counters.total.fetch_add(1, Ordering::Relaxed);
            let body = get(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").await;
            has(&body, &format!("lbd_member_up{m0l} 0"));
            has(&body, &format!("lbd_member_connections_total{m0l} 8"));
            has(&body, r#"lbd_pool_members_available{pool="web"} 0"#);
            has(&body, &format!("lbd_virtual_server_available{vsl} 0"));
            has(
                &body,
                r#"lbd_virtual_address_advertised{address="198.51.100.10"} 0"#,
            );

            let head = get(addr, b"HEAD /metrics HTTP/1.0\r\n\r\n").await;
            assert!(head.starts_with("HTTP/1.0 200 OK"));
            assert!(head.ends_with("\r\n\r\n"), "HEAD has no body");
            let r = get(addr, b"GET / HTTP/1.0\r\n\r\n").await;
            assert!(r.starts_with("HTTP/1.0 404 Not Found\r\n"), "{r}");
            let r = get(addr, b"POST /metrics HTTP/1.0\r\n\r\n").await;
            assert!(r.starts_with("HTTP/1.0 405 Method Not Allowed\r\n"), "{r}");
            // Not started: no listener is bound yet.
            let r = get(addr, b"GET /healthz HTTP/1.0\r\n\r\n").await;
            assert!(r.starts_with("HTTP/1.0 503 "), "{r}");
            task.abort();
        })
        .await
        .expect("test took too long");
    }

    #[test]
    fn nothing_is_rendered_once_the_daemon_is_gone() {
        let app = App::standalone(crate::app::Daemon::new(
            Config::from_toml(CFG, "t").unwrap(),
            None,
        ));
        let r = registry(&app);
        assert!(render(&r).contains("lbd_member_up"));
        drop(app);
        let text = render(&r);
        assert!(!text.contains("lbd_member_up"), "{text}");
        assert!(text.contains("lbd_build_info{"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn ready_once_every_listener_is_bound() {
        // A free port for the virtual server.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = CFG.replace("198.51.100.10:80", &format!("127.0.0.1:{port}"));
        let cfg = cfg.replace("198.51.100.10", "127.0.0.1");
        let app = App::standalone(crate::app::Daemon::new(
            Config::from_toml(&cfg, "t").unwrap(),
            None,
        ));
        let endpoint = Endpoint::new();
        use spanlb_control::http::Endpoint as _;
        let why = endpoint.ready().unwrap_err();
        assert!(why.starts_with("starting"), "{why}");
        endpoint.attach(&app);
        let why = endpoint.ready().unwrap_err();
        assert!(why.contains("virtual server web"), "{why}");
        app.daemon.start().await.unwrap();
        assert_eq!(endpoint.ready(), Ok(()));
    }
}
