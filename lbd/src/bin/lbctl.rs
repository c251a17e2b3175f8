//! `lbctl`: the operator's command line for lbd, over lbd's control socket (JSON lines).
//!
//! Shows print compact aligned tables (or, with `--json`, the daemon's data as it sent it);
//! `member`, `persistence delete` and `reload` change the running daemon. Exit codes: 0 done,
//! 1 lbd answered with an error, 2 usage, 3 lbd could not be reached.
//!
//! lbctl sends exactly one request per invocation and never retries one; it keeps no state and
//! never reads or writes lbd's configuration file itself.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

const DEFAULT_SOCKET: &str = "/run/spanlb/lbd.sock";
const SOCKET_ENV: &str = "LBCTL_SOCKET";
/// A reload binds listeners and may take a moment; nothing else should come close.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Parser, Debug)]
#[command(
    name = "lbctl",
    version,
    about = "Inspect and operate spanlb's load balancer (lbd)",
    after_help = "Exit status: 0 done, 1 lbd answered with an error, 2 usage error, 3 lbd could not be reached."
)]
struct Args {
    /// lbd's control socket [default: $LBCTL_SOCKET, else /run/spanlb/lbd.sock]
    #[arg(short, long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print the daemon's data as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Show virtual servers, virtual addresses, pools, connections or persistence records.
    #[command(subcommand)]
    Show(Show),
    /// Device, uptime, configuration file, object counts and the last reload.
    Status,
    /// Enable, disable or force offline a pool member.
    ///
    /// disable: no new connections, except those a persistence record sends to it.
    /// force-offline: only established connections continue.
    /// The change is made in the running configuration only: it survives a reload unless the
    /// file changes that member's state, and lbd forgets it on restart. To make it permanent,
    /// set `state` on the member in the configuration file.
    Member {
        /// Pool name.
        pool: String,
        /// The member, ADDR:PORT (`[ADDR]:PORT` for IPv6).
        member: std::net::SocketAddr,
        action: MemberAction,
    },
    /// Persistence records.
    #[command(subcommand)]
    Persistence(PersistenceCmd),
    /// Read the configuration file again (as SIGHUP does). A file that does not validate, or
    /// whose new listeners cannot be bound, is rejected and the running configuration stays.
    Reload,
    /// Move a traffic group to another device (its next-active unless --to names one). The
    /// order spreads to every device through heartbeats; auto-failback does not undo it.
    Failover {
        /// Traffic group name.
        traffic_group: String,
        /// The device to move it to.
        #[arg(long, value_name = "DEVICE")]
        to: Option<String>,
    },
    /// Force this device to standby: it gives up every traffic group and takes none until
    /// `lbctl release`.
    Standby,
    /// End standby: this device may hold traffic groups again (auto-failback brings back those
    /// that prefer it).
    Release,
    /// Device trust for the mirroring channels: the group CA and device certificates. Runs
    /// locally on files (no daemon): exit 0 done, 1 error, 2 usage.
    #[command(subcommand)]
    Trust(TrustCmd),
}

#[derive(Subcommand, Debug)]
enum TrustCmd {
    /// Create the device group's CA: DIR/ca.crt and DIR/ca.key (0600). Valid 10 years.
    Init {
        /// Device group name (one DNS label).
        #[arg(long)]
        group: String,
        /// Trust directory (created 0700 if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Replace an existing CA certificate and key.
        #[arg(long)]
        force: bool,
    },
    /// Issue a device certificate signed by DIR/ca.*: DIR/DEVICE.crt and DIR/DEVICE.key (0600),
    /// naming DEVICE.GROUP.spanlb and the given mirror addresses. Valid 2 years.
    Issue {
        /// Trust directory holding the group CA.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Device name (one DNS label).
        #[arg(long)]
        device: String,
        /// A mirror address of the device (repeat for primary and secondary).
        #[arg(long = "address", value_name = "IP")]
        addresses: Vec<std::net::IpAddr>,
        /// Replace an existing certificate and key of this device.
        #[arg(long)]
        force: bool,
    },
    /// Every certificate in DIR: subject, SANs, not-after and SHA-256 fingerprint.
    Show {
        /// Trust directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum Show {
    /// Virtual servers: destination, pool, state and traffic (details when one is shown).
    VirtualServers {
        /// Only this virtual server.
        name: Option<String>,
    },
    /// Virtual addresses and whether their route should be advertised.
    VirtualAddresses,
    /// Pools and their members: state, traffic and the latest monitor result.
    Pools {
        /// Only this pool.
        name: Option<String>,
    },
    /// The connection table (TCP connections and UDP flows), oldest first.
    Connections {
        /// Only the connections of this virtual server.
        #[arg(long, value_name = "VS")]
        virtual_server: Option<String>,
        /// Show at most this many.
        #[arg(long, value_name = "N", default_value_t = 1000)]
        limit: usize,
    },
    /// Persistence records.
    Persistence {
        /// Only this profile's records.
        #[arg(long, value_name = "P")]
        profile: Option<String>,
    },
    /// The device group as this device sees it: devices, liveness, links, bgpd, heartbeats.
    DeviceGroup,
    /// Traffic groups: active device, next-active, this device's state, since when and why.
    TrafficGroups,
    /// Mirroring channels: per traffic group the peer, state (connecting / resyncing / in sync
    /// / lagging), records by kind, last sent and acked update id, lag.
    Mirroring,
    /// Loaded plugins (name, version, file, ABI, calls, keys, panics, state) and files that
    /// failed to load.
    Plugins,
}

#[derive(Subcommand, Debug)]
enum PersistenceCmd {
    /// Delete records; the options narrow down which (none: every record).
    Delete {
        #[arg(long, value_name = "P")]
        profile: Option<String>,
        /// The record key as shown (e.g. 192.0.2.0/24).
        #[arg(long, value_name = "K")]
        key: Option<String>,
        /// Records pointing at this member.
        #[arg(long, value_name = "ADDR:PORT")]
        member: Option<std::net::SocketAddr>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum MemberAction {
    Enable,
    Disable,
    ForceOffline,
}

impl MemberAction {
    /// The admin state as lbd names it.
    fn state(self) -> &'static str {
        match self {
            MemberAction::Enable => "enabled",
            MemberAction::Disable => "disabled",
            MemberAction::ForceOffline => "forced-offline",
        }
    }
}

/// The control request for a command.
fn request(cmd: &Cmd) -> Value {
    match cmd {
        Cmd::Show(Show::VirtualServers { name }) => {
            json!({"cmd": "show-virtual-servers", "name": name})
        }
        Cmd::Show(Show::VirtualAddresses) => json!({"cmd": "show-virtual-addresses"}),
        Cmd::Show(Show::Pools { name }) => json!({"cmd": "show-pools", "name": name}),
        Cmd::Show(Show::Connections {
            virtual_server,
            limit,
        }) => {
            json!({"cmd": "show-connections", "virtual_server": virtual_server, "limit": limit})
        }
        Cmd::Show(Show::Persistence { profile }) => {
            json!({"cmd": "show-persistence", "profile": profile})
        }
        Cmd::Status => json!({"cmd": "status"}),
        Cmd::Member {
            pool,
            member,
            action,
        } => json!({
            "cmd": "member",
            "pool": pool,
            "member": member.to_string(),
            "state": action.state(),
        }),
        Cmd::Persistence(PersistenceCmd::Delete {
            profile,
            key,
            member,
        }) => json!({
            "cmd": "delete-persistence",
            "profile": profile,
            "key": key,
            "member": member.map(|m| m.to_string()),
        }),
        Cmd::Reload => json!({"cmd": "reload"}),
        Cmd::Show(Show::DeviceGroup) => json!({"cmd": "show-device-group"}),
        Cmd::Show(Show::TrafficGroups) => json!({"cmd": "show-traffic-groups"}),
        Cmd::Show(Show::Mirroring) => json!({"cmd": "show-mirroring"}),
        Cmd::Show(Show::Plugins) => json!({"cmd": "show-plugins"}),
        Cmd::Failover { traffic_group, to } => {
            json!({"cmd": "failover", "traffic_group": traffic_group, "to": to})
        }
        Cmd::Standby => json!({"cmd": "standby"}),
        Cmd::Release => json!({"cmd": "release"}),
        // Local: never sent to lbd (main runs it before any request).
        Cmd::Trust(_) => Value::Null,
    }
}

/// Why a request got no data.
#[derive(Debug, PartialEq)]
enum Failure {
    /// lbd answered with this error.
    Daemon(String),
    /// lbd could not be reached or did not answer sensibly.
    Unreachable(String),
}

fn call(socket: &Path, req: &Value) -> Result<Value, Failure> {
    let at = socket.display();
    let hint = "is lbd running? name its control socket with --socket PATH or LBCTL_SOCKET";
    let mut s = UnixStream::connect(socket)
        .map_err(|e| Failure::Unreachable(format!("cannot reach lbd at {at}: {e} ({hint})")))?;
    let lost = |e: std::io::Error| Failure::Unreachable(format!("lbd at {at}: {e}"));
    s.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(lost)?;
    s.set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(lost)?;
    let mut line = req.to_string().into_bytes();
    line.push(b'\n');
    s.write_all(&line).map_err(lost)?;
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).map_err(lost)?;
    if answer.is_empty() {
        return Err(Failure::Unreachable(format!(
            "lbd at {at} closed the connection without answering"
        )));
    }
    let v: Value = serde_json::from_str(&answer)
        .map_err(|e| Failure::Unreachable(format!("lbd at {at} answered nonsense: {e}")))?;
    if v["ok"] == json!(true) {
        Ok(v.get("data").cloned().unwrap_or(Value::Null))
    } else {
        let e = v["error"].as_str().unwrap_or("error without a message");
        Err(Failure::Daemon(e.to_string()))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Cmd::Trust(t) = &args.cmd {
        return match trust(t, args.json) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("lbctl: {e}");
                ExitCode::from(1)
            }
        };
    }
    let socket = args
        .socket
        .clone()
        .or_else(|| std::env::var_os(SOCKET_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    match call(&socket, &request(&args.cmd)) {
        Ok(data) => {
            let text = if args.json {
                serde_json::to_string_pretty(&data).unwrap_or_default() + "\n"
            } else {
                render(&args.cmd, &data, now_ms())
            };
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(Failure::Daemon(e)) => {
            eprintln!("lbctl: {e}");
            ExitCode::from(1)
        }
        Err(Failure::Unreachable(e)) => {
            eprintln!("lbctl: {e}");
            ExitCode::from(3)
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The table (or message) for a command's data.
fn render(cmd: &Cmd, data: &Value, now: u64) -> String {
    match cmd {
        Cmd::Show(Show::VirtualServers { .. }) => show_virtual_servers(data),
        Cmd::Show(Show::VirtualAddresses) => show_virtual_addresses(data),
        Cmd::Show(Show::Pools { .. }) => show_pools(data),
        Cmd::Show(Show::Connections { .. }) => show_connections(data, now),
        Cmd::Show(Show::Persistence { .. }) => show_persistence(data, now),
        Cmd::Status => show_status(data, now),
        Cmd::Member { .. } => member_done(data),
        Cmd::Persistence(PersistenceCmd::Delete { .. }) => {
            let n = data["deleted"].as_u64().unwrap_or(0);
            format!("deleted {n} persistence record{}\n", plural(n))
        }
        Cmd::Reload => reload_done(data),
        Cmd::Show(Show::DeviceGroup) => show_device_group(&data["device_group"]),
        Cmd::Show(Show::TrafficGroups) => show_traffic_groups(data),
        Cmd::Show(Show::Mirroring) => show_mirroring(data),
        Cmd::Show(Show::Plugins) => show_plugins(data),
        Cmd::Failover { traffic_group, to } => format!(
            "failover of {traffic_group} to {} ordered; follow it with `lbctl show traffic-groups`\n",
            to.as_deref().unwrap_or("its next-active device")
        ),
        Cmd::Standby => "standby: this device gives up its traffic groups and takes none until `lbctl release`\n".into(),
        Cmd::Release => "released: this device may hold traffic groups again\n".into(),
        Cmd::Trust(_) => String::new(),
    }
}

/// `lbctl trust ...`: local files only.
fn trust(cmd: &TrustCmd, json: bool) -> Result<String, lbd::mirror::trust::TrustError> {
    use lbd::mirror::trust as mt;
    match cmd {
        TrustCmd::Init { group, dir, force } => {
            let ca = mt::create_ca(group)?;
            let (crt, key) = mt::write_pair(dir, "ca", &ca, *force)?;
            let fp = mt::inspect(&crt)?.fingerprint;
            Ok(format!(
                "created CA of device group {group}: {} {}\nfingerprint (SHA-256): {fp}\n",
                crt.display(),
                key.display()
            ))
        }
        TrustCmd::Issue {
            dir,
            device,
            addresses,
            force,
        } => {
            if device.eq_ignore_ascii_case("ca") {
                return Err(mt::TrustError::BadName(
                    device.clone(),
                    "reserved for the group CA",
                ));
            }
            let ca = mt::read_pair(dir, "ca")?;
            let pair = mt::issue_device(&ca, device, addresses)?;
            let (crt, key) = mt::write_pair(dir, device, &pair, *force)?;
            let info = mt::inspect(&crt)?;
            Ok(format!(
                "issued certificate of device {device}: {} {}\nnames: {}\nfingerprint (SHA-256): {}\n",
                crt.display(),
                key.display(),
                info.sans.join(", "),
                info.fingerprint
            ))
        }
        TrustCmd::Show { dir } => {
            let entries = std::fs::read_dir(dir).map_err(|e| mt::TrustError::Io(dir.clone(), e))?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                .collect();
            files.sort();
            let infos = files
                .iter()
                .map(|f| mt::inspect(f))
                .collect::<Result<Vec<_>, _>>()?;
            if json {
                let v: Vec<Value> = infos
                    .iter()
                    .map(|i| {
                        json!({"file": i.file, "subject": i.subject, "sans": i.sans,
                               "not_after": i.not_after, "ca": i.is_ca,
                               "sha256": i.fingerprint})
                    })
                    .collect();
                return Ok(serde_json::to_string_pretty(&v).unwrap_or_default() + "\n");
            }
            if infos.is_empty() {
                return Ok(format!("no certificates in {}\n", dir.display()));
            }
            let mut out = String::new();
            for i in infos {
                out.push_str(&format!(
                    "{}{}\n  subject:   {}\n  names:     {}\n  not after: {}\n  sha256:    {}\n",
                    i.file.display(),
                    if i.is_ca { " (CA)" } else { "" },
                    i.subject,
                    if i.sans.is_empty() {
                        "-".to_string()
                    } else {
                        i.sans.join(", ")
                    },
                    i.not_after,
                    i.fingerprint
                ));
            }
            Ok(out)
        }
    }
}

fn show_plugins(data: &Value) -> String {
    use Align::{Left as L, Right as R};
    let plugins = list(&data["plugins"]);
    let mut out = format!("plugin directory: {}\n", text(&data["plugin_dir"]));
    if plugins.is_empty() {
        out.push_str("no plugins loaded\n");
    } else {
        let mut t = Table::new(&[
            ("NAME", L),
            ("VERSION", L),
            ("ABI", R),
            ("CALLS", R),
            ("KEYS", R),
            ("NO-MATCH", R),
            ("MALFORMED", R),
            ("PANICS", R),
            ("STATE", L),
            ("FILE", L),
        ]);
        for p in plugins {
            t.row(vec![
                text(&p["name"]),
                text(&p["version"]),
                text(&p["abi"]),
                num(&p["calls"]).to_string(),
                (num(&p["keys"]) + num(&p["members"])).to_string(),
                num(&p["no_match"]).to_string(),
                num(&p["malformed"]).to_string(),
                num(&p["panics"]).to_string(),
                text(&p["state"]),
                text(&p["file"]),
            ]);
        }
        out.push_str(&t.render(""));
    }
    for f in list(&data["failed"]) {
        out.push_str(&format!("failed: {}\n", text(&f["error"])));
    }
    out
}

fn show_mirroring(data: &Value) -> String {
    use Align::{Left as L, Right as R};
    if data["enabled"] != json!(true) {
        return format!("mirroring is off: {}\n", text(&data["reason"]));
    }
    let records = |r: &Value| {
        format!(
            "{}/{}/{}",
            num(&r["persistence"]),
            num(&r["udp_flows"]),
            num(&r["tcp_connections"])
        )
    };
    let mut out = format!(
        "device {}, connections to {}, persistence to {}; updates offered {}, refreshes not \
         sent {}, refused {}\n",
        text(&data["me"]),
        text(&data["scope"]),
        text(&data["persistence_scope"]),
        num(&data["offered"]),
        num(&data["refresh_skipped"]),
        num(&data["offer_errors"])
    );
    let unsynced: Vec<String> = list(&data["unsynced"]).iter().map(text).collect();
    if unsynced.is_empty() {
        out.push_str(
            "in sync: holds the mirrored state of every traffic group it is not active for\n",
        );
    } else {
        out.push_str(&format!(
            "not in sync for {}: an auto-failback to this device waits for it\n",
            unsynced.join(", ")
        ));
    }
    let senders = list(&data["senders"]);
    if senders.is_empty() {
        out.push_str("sending: nothing (no traffic group active here has a peer to mirror to)\n");
    } else {
        out.push_str("sending (records: persistence/udp/tcp):\n");
        let mut t = Table::new(&[
            ("TRAFFIC-GROUP", L),
            ("PEER", L),
            ("CARRIES", L),
            ("PORT", R),
            ("STATE", L),
            ("RECORDS", R),
            ("SENT", R),
            ("ACKED", R),
            ("LAG-MS", R),
            ("QUEUED", R),
        ]);
        for s in senders {
            t.row(vec![
                text(&s["traffic_group"]),
                text(&s["peer"]),
                text(&s["carries"]),
                text(&s["port"]),
                text(&s["state"]),
                records(&s["records"]),
                num(&s["last_sent"]).to_string(),
                num(&s["last_acked"]).to_string(),
                num(&s["lag_ms"]).to_string(),
                num(&s["queued"]).to_string(),
            ]);
        }
        out.push_str(&t.render("  "));
    }
    out.push_str("receiving (records: persistence/udp/tcp):\n");
    let mut t = Table::new(&[
        ("TRAFFIC-GROUP", L),
        ("PEER", L),
        ("PORT", R),
        ("STATE", L),
        ("RECORDS", R),
        ("APPLIED", R),
        ("DUPLICATES", R),
    ]);
    for r in list(&data["receivers"]) {
        t.row(vec![
            text(&r["traffic_group"]),
            text(&r["peer"]),
            text(&r["port"]),
            text(&r["state"]),
            records(&r["records"]),
            num(&r["last_applied"]).to_string(),
            num(&r["duplicates"]).to_string(),
        ]);
    }
    out.push_str(&t.render("  "));
    out
}

fn yes_no(v: &Value) -> String {
    if *v == json!(true) { "yes" } else { "no" }.into()
}

fn show_traffic_groups(data: &Value) -> String {
    use Align::{Left as L, Right as R};
    let mut t = Table::new(&[
        ("TRAFFIC-GROUP", L),
        ("ACTIVE", L),
        ("NEXT-ACTIVE", L),
        ("HERE", L),
        ("SINCE", R),
        ("FLOATING EXT/INT", L),
        ("PATH", R),
        ("WHY", L),
    ]);
    for tg in list(&data["traffic_groups"]) {
        let mut active = text(&tg["active"]);
        let placement = text(&tg["placement"]);
        if placement != active && placement != "-" {
            active = format!("{active} -> {placement}");
        }
        t.row(vec![
            text(&tg["name"]),
            active,
            text(&tg["next_active"]),
            text(&tg["state"]),
            tg["since_ms_ago"].as_u64().map_or("-".into(), span),
            format!(
                "{} {}",
                text(&tg["external_floating"]),
                text(&tg["internal_floating"])
            ),
            text(&tg["path_id"]),
            text(&tg["reason"]),
        ]);
    }
    let mut out = format!("as seen from {}\n{}", text(&data["me"]), t.render(""));
    // Why an auto-failback has not happened yet (mirroring on).
    for tg in list(&data["traffic_groups"]) {
        if let Value::String(dev) = &tg["waiting_for_sync"] {
            out.push_str(&format!(
                "{}: auto-failback to {dev} waits for its mirror to be in sync\n",
                text(&tg["name"])
            ));
        }
    }
    out
}

fn show_device_group(g: &Value) -> String {
    use Align::{Left as L, Right as R};
    let local = &g["local"];
    let mut out = format!(
        "device group {} ({} mode), this device {} ({}{}), heartbeat {} ms, dead after {} ms\n",
        text(&g["name"]),
        text(&g["route_mode"]),
        text(&g["me"]),
        text(&g["phase"]),
        if g["standby"] == json!(true) {
            ", standby"
        } else {
            ""
        },
        num(&g["heartbeat_interval_ms"]),
        num(&g["dead_after_ms"]),
    );
    let mut t = Table::new(&[
        ("DEVICE", L),
        ("ALIVE", L),
        ("ELIGIBLE", L),
        ("LAST-HEARD", R),
        ("ACTIVE", L),
    ]);
    for d in list(&g["devices"]) {
        let active: Vec<String> = list(&d["active"]).iter().map(text).collect();
        t.row(vec![
            text(&d["name"]),
            yes_no(&d["alive"]),
            yes_no(&d["eligible"]),
            d["last_heard_ms_ago"]
                .as_u64()
                .map_or("-".into(), |ms| format!("{ms} ms")),
            if active.is_empty() {
                "-".into()
            } else {
                active.join(",")
            },
        ]);
    }
    out.push_str(&t.render(""));
    // Traffic groups a device is not ready to take back (its mirror is not in sync).
    let unsynced: Vec<String> = list(&g["devices"])
        .iter()
        .filter_map(|d| {
            let tgs: Vec<String> = list(&d["unsynced"]).iter().map(text).collect();
            (!tgs.is_empty()).then(|| format!("{} ({})", text(&d["name"]), tgs.join(",")))
        })
        .collect();
    if !unsynced.is_empty() {
        out.push_str(&format!("mirror not in sync: {}\n", unsynced.join(", ")));
    }
    let links: Vec<String> = local["links"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} {}", if *v == json!(true) { "up" } else { "down" }))
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&format!(
        "links: {}\n",
        if links.is_empty() {
            "-".into()
        } else {
            links.join(", ")
        }
    ));
    let b = &local["bgpd"];
    out.push_str(&format!(
        "bgpd: {} ({}), {} route{} announced{}\n",
        text(&b["socket"]),
        if b["connected"] == json!(true) {
            "connected"
        } else {
            "not connected"
        },
        list(&b["routes"]).len(),
        plural(list(&b["routes"]).len() as u64),
        match &b["last_error"] {
            Value::String(e) => format!("; last error: {e}"),
            _ => String::new(),
        }
    ));
    let a = &local["attribution"];
    out.push_str(&format!(
        "new connections: traffic group {}, SNAT automap {}\n",
        text(&a["traffic_group"]),
        text(&a["automap_v4"]),
    ));
    let c = &g["counters"];
    out.push_str(&format!(
        "heartbeats: sent {} received {}; rejected: bad tag {} replayed {} unknown device {} malformed {}; send errors {}\n",
        num(&c["heartbeats_sent"]),
        num(&c["heartbeats_received"]),
        num(&c["rejected_bad_tag"]),
        num(&c["rejected_replayed"]),
        num(&c["rejected_unknown_device"]),
        num(&c["rejected_malformed"]),
        num(&c["send_errors"]),
    ));
    if let Some(arr) = local["last_error"].as_array() {
        out.push_str(&format!("last error: {}\n", text(&arr[1])));
    }
    out
}

// ---- formatting helpers -------------------------------------------------------------------

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// A string field, or `-`.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Bytes for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A span of time, compact: `45s`, `12m03s`, `3h07m`, `2d04h`.
fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Time until `expiry_ms`, or `expired`.
fn until(expiry_ms: u64, now: u64) -> String {
    if expiry_ms > now {
        span(expiry_ms - now)
    } else {
        "expired".into()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Align {
    Left,
    Right,
}
use Align::{Left as L, Right as R};

/// Columns padded to their widest cell, two spaces apart; no trailing blanks.
struct Table {
    head: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(head: &[(&'static str, Align)]) -> Table {
        Table {
            head: head.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self, indent: &str) -> String {
        let n = self.head.len();
        let mut width: Vec<usize> = self.head.iter().map(|(h, _)| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut out = String::from(indent);
            for (i, c) in cells.iter().enumerate().take(n) {
                let pad = width[i].saturating_sub(c.chars().count());
                let last = i + 1 == n;
                if self.head[i].1 == R {
                    out.extend(std::iter::repeat_n(' ', pad));
                    out.push_str(c);
                } else {
                    out.push_str(c);
                    if !last {
                        out.extend(std::iter::repeat_n(' ', pad));
                    }
                }
                if !last {
                    out.push_str("  ");
                }
            }
            out.truncate(out.trim_end().len());
            out.push('\n');
            out
        };
        let mut out = line(self.head.iter().map(|(h, _)| *h).collect());
        for r in &self.rows {
            out.push_str(&line(r.iter().map(String::as_str).collect()));
        }
        out
    }
}

fn list(data: &Value) -> &[Value] {
    data.as_array().map(Vec::as_slice).unwrap_or(&[])
}

// ---- the views ----------------------------------------------------------------------------

fn vs_state(v: &Value) -> &'static str {
    if v["enabled"] == json!(false) {
        "disabled"
    } else if v["available"] == json!(true) {
        "available"
    } else {
        "unavailable"
    }
}

fn show_virtual_servers(data: &Value) -> String {
    let vss = list(data);
    if vss.is_empty() {
        return "no virtual servers\n".into();
    }
    let mut t = Table::new(&[
        ("NAME", L),
        ("DESTINATION", L),
        ("PROTO", L),
        ("POOL", L),
        ("STATE", L),
        ("CUR", R),
        ("TOTAL", R),
        ("BYTES-IN", R),
        ("BYTES-OUT", R),
        ("REFUSED", R),
        ("SNAT", L),
        ("PERSIST", L),
    ]);
    for v in vss {
        let c = &v["counters"];
        t.row(vec![
            text(&v["name"]),
            text(&v["destination"]),
            text(&v["protocol"]),
            text(&v["pool"]),
            vs_state(v).into(),
            num(&c["current"]).to_string(),
            num(&c["total"]).to_string(),
            bytes(num(&c["bytes_in"])),
            bytes(num(&c["bytes_out"])),
            num(&c["refused"]).to_string(),
            text(&v["snat"]),
            text(&v["persistence"]),
        ]);
    }
    let mut out = t.render("");
    if let [v] = vss {
        let limit = match num(&v["connection_limit"]) {
            0 => "none".to_string(),
            n => n.to_string(),
        };
        out.push_str(&format!(
            "\n  connection limit {limit}, idle timeout {}, connect timeout {}, mirror {}, \
             connect failures {}\n",
            text(&v["idle_timeout"]),
            text(&v["connect_timeout"]),
            if v["mirror"] == json!(true) {
                "on"
            } else {
                "off"
            },
            num(&v["counters"]["connect_failures"]),
        ));
    }
    out
}

fn show_virtual_addresses(data: &Value) -> String {
    let vas = list(data);
    if vas.is_empty() {
        return "no virtual addresses\n".into();
    }
    let mut t = Table::new(&[
        ("ADDRESS", L),
        ("ADVERTISE", L),
        ("SPANNING", L),
        ("AVAILABLE", R),
        ("ROUTE", L),
        ("VIRTUAL-SERVERS", L),
    ]);
    for va in vas {
        let names: Vec<String> = list(&va["virtual_servers"]).iter().map(text).collect();
        t.row(vec![
            text(&va["address"]),
            text(&va["advertise"]),
            if va["spanning"] == json!(true) {
                "yes"
            } else {
                "no"
            }
            .into(),
            format!("{}/{}", num(&va["available"]), names.len()),
            if va["advertised"] == json!(true) {
                "advertise"
            } else {
                "withdraw"
            }
            .into(),
            names.join(","),
        ]);
    }
    t.render("")
}

/// A member's status, with its admin state when the status hides it (`down/disabled`).
fn member_status(m: &Value) -> String {
    let status = text(&m["status"]);
    let admin = text(&m["admin"]);
    if admin != "enabled" && admin != "-" && admin != status {
        format!("{status}/{admin}")
    } else {
        status
    }
}

/// The most recent monitor verdict: `tcp down: connection refused`.
fn latest_monitor(m: &Value) -> String {
    let Some(verdicts) = m["monitors"].as_object() else {
        return "-".into();
    };
    verdicts
        .iter()
        .max_by_key(|(_, v)| num(&v["since_ms"]))
        .map(|(name, v)| {
            let reason = text(&v["reason"]);
            let reason = reason.replace(['\n', '\r'], " ");
            format!("{name} {}: {reason}", text(&v["health"]))
        })
        .unwrap_or_else(|| "-".into())
}

fn show_pools(data: &Value) -> String {
    let pools = list(data);
    if pools.is_empty() {
        return "no pools\n".into();
    }
    let mut out = String::new();
    for (i, p) in pools.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let monitors: Vec<String> = list(&p["monitors"]).iter().map(text).collect();
        let users: Vec<String> = list(&p["virtual_servers"]).iter().map(text).collect();
        out.push_str(&format!(
            "pool {}  {}  {}/{} available  monitors: {}  virtual servers: {}\n",
            text(&p["name"]),
            text(&p["method"]),
            num(&p["available"]),
            num(&p["total"]),
            if monitors.is_empty() {
                "none".into()
            } else {
                monitors.join(",")
            },
            if users.is_empty() {
                "none".into()
            } else {
                users.join(",")
            },
        ));
        let members = list(&p["members"]);
        if members.is_empty() {
            out.push_str("  (no members)\n");
            continue;
        }
        let mut t = Table::new(&[
            ("MEMBER", L),
            ("RATIO", R),
            ("STATUS", L),
            ("CUR", R),
            ("TOTAL", R),
            ("BYTES-IN", R),
            ("BYTES-OUT", R),
            ("FAIL", R),
            ("MONITOR", L),
        ]);
        for m in members {
            let c = &m["counters"];
            t.row(vec![
                text(&m["address"]),
                num(&m["ratio"]).to_string(),
                member_status(m),
                num(&c["current"]).to_string(),
                num(&c["total"]).to_string(),
                bytes(num(&c["bytes_in"])),
                bytes(num(&c["bytes_out"])),
                num(&c["connect_failures"]).to_string(),
                latest_monitor(m),
            ]);
        }
        out.push_str(&t.render("  "));
    }
    out
}

fn show_connections(data: &Value, now: u64) -> String {
    let conns = list(&data["connections"]);
    let total = num(&data["total"]);
    let mut out = String::new();
    if !conns.is_empty() {
        let mut t = Table::new(&[
            ("ID", R),
            ("PROTO", L),
            ("VIRTUAL-SERVER", L),
            ("CLIENT", L),
            ("MEMBER", L),
            ("SNAT", L),
            ("AGE", R),
            ("IDLE-EXPIRY", R),
            ("BYTES-IN", R),
            ("BYTES-OUT", R),
        ]);
        for c in conns {
            t.row(vec![
                num(&c["id"]).to_string(),
                text(&c["protocol"]),
                text(&c["virtual_server"]),
                text(&c["client"]),
                text(&c["member"]),
                text(&c["snat"]),
                span(now.saturating_sub(num(&c["created_ms"]))),
                until(num(&c["expiry_ms"]), now),
                bytes(num(&c["bytes_in"])),
                bytes(num(&c["bytes_out"])),
            ]);
        }
        out.push_str(&t.render(""));
    }
    let shown = conns.len() as u64;
    if shown < total {
        out.push_str(&format!(
            "{shown} of {total} connections shown (raise --limit to see more)\n"
        ));
    } else {
        out.push_str(&format!("{total} connection{}\n", plural(total)));
    }
    out
}

fn show_persistence(data: &Value, now: u64) -> String {
    let recs = list(data);
    if recs.is_empty() {
        return "no persistence records\n".into();
    }
    let mut t = Table::new(&[
        ("PROFILE", L),
        ("SCOPE", L),
        ("KEY", L),
        ("POOL", L),
        ("MEMBER", L),
        ("VIRTUAL-SERVER", L),
        ("EXPIRES", R),
    ]);
    for r in recs {
        t.row(vec![
            text(&r["profile"]),
            text(&r["scope"]),
            text(&r["key"]),
            text(&r["pool"]),
            text(&r["member"]),
            text(&r["virtual_server"]),
            until(num(&r["expiry_ms"]), now),
        ]);
    }
    let n = recs.len() as u64;
    t.render("") + &format!("{n} record{}\n", plural(n))
}

/// `2026-11-21T22:34:02Z (5m03s ago)`.
fn when(at_ms: u64, now: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(at_ms);
    format!(
        "{} ({} ago)",
        humantime::format_rfc3339_seconds(at),
        span(now.saturating_sub(at_ms))
    )
}

fn reload_line(s: &Value) -> String {
    let vs = num(&s["virtual_servers"]);
    let pools = num(&s["pools"]);
    let added = list(&s["listeners_added"]).len();
    let removed = list(&s["listeners_removed"]).len();
    format!(
        "{vs} virtual server{}, {pools} pool{}, listeners +{added} -{removed}",
        plural(vs),
        plural(pools)
    )
}

fn show_status(d: &Value, now: u64) -> String {
    let vs = num(&d["virtual_servers"]);
    let pools = num(&d["pools"]);
    let reload = match &d["last_reload"] {
        Value::Null => "never".to_string(),
        r => {
            let at = when(num(&r["at_ms"]), now);
            if r["ok"] == json!(true) {
                format!("{at}: ok, {}", reload_line(&r["summary"]))
            } else {
                format!("{at}: rejected: {}", text(&r["error"]))
            }
        }
    };
    let rows = [
        ("device", text(&d["device"])),
        ("version", text(&d["version"])),
        ("uptime", span(num(&d["uptime_s"]) * 1000)),
        ("config file", text(&d["config_file"])),
        (
            "virtual servers",
            format!("{vs} ({} available)", num(&d["virtual_servers_available"])),
        ),
        ("pools", format!("{pools} ({} members)", num(&d["members"]))),
        ("connections", num(&d["connections"]).to_string()),
        (
            "persistence",
            format!("{} records", num(&d["persistence_records"])),
        ),
        ("last reload", reload),
    ];
    rows.iter().map(|(k, v)| format!("{k:<16} {v}\n")).collect()
}

fn member_done(d: &Value) -> String {
    format!(
        "pool {} member {}: {} -> {} (status {}); {}/{} members available\n",
        text(&d["pool"]),
        text(&d["member"]),
        text(&d["previous"]),
        text(&d["admin"]),
        text(&d["status"]),
        num(&d["available"]),
        num(&d["total"]),
    )
}

fn reload_done(d: &Value) -> String {
    let mut out = format!("reloaded: {}\n", reload_line(d));
    for l in list(&d["listeners_added"]) {
        out.push_str(&format!("  listening on {}\n", text(l)));
    }
    for l in list(&d["listeners_removed"]) {
        out.push_str(&format!("  stopped listening on {}\n", text(l)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("lbctl").chain(args.iter().copied()))
    }

    #[test]
    fn commands_become_requests() {
        let cases: [(&[&str], Value); 9] = [
            (&["status"], json!({"cmd": "status"})),
            (
                &["show", "pools", "web"],
                json!({"cmd": "show-pools", "name": "web"}),
            ),
            (
                &["show", "virtual-servers"],
                json!({"cmd": "show-virtual-servers", "name": null}),
            ),
            (
                &["show", "virtual-addresses"],
                json!({"cmd": "show-virtual-addresses"}),
            ),
            (
                &[
                    "show",
                    "connections",
                    "--virtual-server",
                    "web",
                    "--limit",
                    "5",
                ],
                json!({"cmd": "show-connections", "virtual_server": "web", "limit": 5}),
            ),
            (
                &["show", "persistence", "--profile", "src"],
                json!({"cmd": "show-persistence", "profile": "src"}),
            ),
            (
                &["member", "web", "[fd00::5]:80", "force-offline"],
                json!({"cmd": "member", "pool": "web", "member": "[fd00::5]:80", "state": "forced-offline"}),
            ),
            (
                &["persistence", "delete", "--member", "10.0.0.1:80"],
                json!({"cmd": "delete-persistence", "profile": null, "key": null, "member": "10.0.0.1:80"}),
            ),
            (&["--json", "reload"], json!({"cmd": "reload"})),
        ];
        for (argv, want) in cases {
            let a = parse(argv).unwrap();
            assert_eq!(request(&a.cmd), want, "{argv:?}");
        }
        let a = parse(&["show", "connections"]).unwrap();
        assert_eq!(request(&a.cmd)["limit"], 1000);
        let a = parse(&["member", "p", "10.0.0.1:80", "enable", "--json", "-s", "/x"]).unwrap();
        assert!(a.json);
        assert_eq!(a.socket, Some(PathBuf::from("/x")));
        assert_eq!(request(&a.cmd)["state"], "enabled");
        assert_eq!(
            request(
                &parse(&["member", "p", "10.0.0.1:80", "disable"])
                    .unwrap()
                    .cmd
            )["state"],
            "disabled"
        );
    }

    #[test]
    fn device_group_commands_become_requests() {
        let cases: [(&[&str], Value); 6] = [
            (
                &["show", "device-group"],
                json!({"cmd": "show-device-group"}),
            ),
            (
                &["show", "traffic-groups", "--json"],
                json!({"cmd": "show-traffic-groups"}),
            ),
            (
                &["failover", "tg-2"],
                json!({"cmd": "failover", "traffic_group": "tg-2", "to": null}),
            ),
            (
                &["failover", "tg-2", "--to", "c"],
                json!({"cmd": "failover", "traffic_group": "tg-2", "to": "c"}),
            ),
            (&["standby"], json!({"cmd": "standby"})),
            (&["release"], json!({"cmd": "release"})),
        ];
        for (argv, want) in cases {
            assert_eq!(request(&parse(argv).unwrap().cmd), want, "{argv:?}");
        }
        assert_eq!(parse(&["failover"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn plugins_show_counts_state_and_failures() {
        assert_eq!(
            request(&parse(&["show", "plugins"]).unwrap().cmd),
            json!({"cmd": "show-plugins"})
        );
        let data = json!({"plugin_dir": "/usr/lib/spanlb/plugins", "plugins": [
            {"name": "sip", "version": "0.1.0", "abi": 1, "calls": 200, "keys": 198, "members": 0,
             "no_match": 2, "malformed": 0, "panics": 0, "state": "enabled", "file": "/p/libsip.so"},
            {"name": "panicky", "version": "0", "abi": 1, "calls": 12, "keys": 2, "members": 0,
             "no_match": 0, "malformed": 0, "panics": 10, "state": "disabled (10 panics)", "file": "/p/libpanicky.so"}],
            "failed": [{"file": "/p/x.so", "error": "plugin /p/x.so: not a spanlb plugin (no spanlb_plugin_abi_version symbol)"}]});
        let out = render(&parse(&["show", "plugins"]).unwrap().cmd, &data, 0);
        let sip = out.lines().find(|l| l.starts_with("sip ")).unwrap();
        assert!(
            sip.contains("200") && sip.contains("198") && sip.contains("enabled"),
            "{sip}"
        );
        assert!(out.contains("disabled (10 panics)"), "{out}");
        assert!(
            out.contains("failed: plugin /p/x.so: not a spanlb plugin"),
            "{out}"
        );
    }

    #[test]
    fn traffic_groups_show_active_next_active_and_why() {
        let data = json!({"me": "a", "traffic_groups": [
            {"name": "tg-2", "active": "c", "placement": "c", "next_active": "a", "state": "standby",
             "since_ms_ago": 4000, "reason": "b is dead", "external_floating": "20.1.1.3/24",
             "internal_floating": "10.1.1.3/24", "path_id": 2},
            {"name": "tg-3", "active": "c", "placement": "a", "next_active": "a", "state": "standby",
             "since_ms_ago": null, "reason": null, "external_floating": "20.1.1.4/24",
             "internal_floating": "10.1.1.4/24", "path_id": 3},
        ]});
        let out = render(&parse(&["show", "traffic-groups"]).unwrap().cmd, &data, 0);
        assert!(out.starts_with("as seen from a\n"), "{out}");
        let tg2 = out.lines().find(|l| l.starts_with("tg-2")).unwrap();
        for want in [
            "c",
            "a",
            "standby",
            "4s",
            "20.1.1.3/24 10.1.1.3/24",
            "b is dead",
        ] {
            assert!(tg2.contains(want), "{want} in {tg2}");
        }
        // Moving: holder -> placement.
        assert!(
            out.lines()
                .any(|l| l.starts_with("tg-3") && l.contains("c -> a")),
            "{out}"
        );
    }

    #[test]
    fn device_group_shows_devices_links_bgpd_and_rejections() {
        let data = json!({"device_group": {
            "name": "seed", "me": "a", "phase": "running", "route_mode": "l2", "standby": false,
            "heartbeat_interval_ms": 100, "dead_after_ms": 500,
            "devices": [
                {"name": "a", "alive": true, "eligible": true, "last_heard_ms_ago": null, "active": ["tg-1"]},
                {"name": "b", "alive": false, "eligible": true, "last_heard_ms_ago": 2300, "active": ["tg-2"]}],
            "counters": {"heartbeats_sent": 10, "heartbeats_received": 9, "rejected_bad_tag": 3,
                "rejected_replayed": 2, "rejected_unknown_device": 0, "rejected_malformed": 0, "send_errors": 0},
            "local": {"links": {"ext0": true, "int0": false},
                "bgpd": {"socket": "/run/b.sock", "connected": true, "routes": [{}], "last_error": null},
                "attribution": {"traffic_group": "tg-1", "automap_v4": "10.1.1.2"},
                "last_error": null}}});
        let out = render(&parse(&["show", "device-group"]).unwrap().cmd, &data, 0);
        for want in [
            "device group seed (l2 mode), this device a (running)",
            "int0 down",
            "connected), 1 route announced",
            "bad tag 3 replayed 2",
            "traffic group tg-1, SNAT automap 10.1.1.2",
        ] {
            assert!(out.contains(want), "{want} in\n{out}");
        }
        let b = out.lines().find(|l| l.starts_with("b ")).unwrap();
        assert!(
            b.contains("no") && b.contains("2300 ms") && b.contains("tg-2"),
            "{b}"
        );
        // Every mirror in sync (or an older lbd without the field): no line.
        assert!(!out.contains("mirror not in sync"), "{out}");
    }

    #[test]
    fn unsynced_devices_and_failbacks_waiting_for_sync_are_shown() {
        let data = json!({"device_group": {
            "name": "seed", "me": "a", "phase": "running", "route_mode": "l2",
            "devices": [
                {"name": "a", "alive": true, "eligible": true, "active": ["tg-2"], "unsynced": []},
                {"name": "b", "alive": true, "eligible": true, "active": [], "unsynced": ["tg-1", "tg-2"]}],
            "local": {}}});
        let out = render(&parse(&["show", "device-group"]).unwrap().cmd, &data, 0);
        assert!(out.contains("mirror not in sync: b (tg-1,tg-2)\n"), "{out}");
        let data = json!({"me": "a", "traffic_groups": [
            {"name": "tg-1", "active": "a", "placement": "a", "next_active": "b", "state": "active",
             "waiting_for_sync": null},
            {"name": "tg-2", "active": "a", "placement": "a", "next_active": "b", "state": "active",
             "waiting_for_sync": "b"},
        ]});
        let out = render(&parse(&["show", "traffic-groups"]).unwrap().cmd, &data, 0);
        assert!(
            out.ends_with("tg-2: auto-failback to b waits for its mirror to be in sync\n"),
            "{out}"
        );
        assert!(!out.contains("tg-1: auto-failback"), "{out}");
    }

    #[test]
    fn mirroring_view_shows_channels_and_why_it_is_off() {
        let cmd = parse(&["show", "mirroring"]).unwrap().cmd;
        let off = render(
            &cmd,
            &json!({"enabled": false, "reason": "device.mirror_trust_dir is not set"}),
            0,
        );
        assert_eq!(
            off,
            "mirroring is off: device.mirror_trust_dir is not set\n"
        );
        let data = json!({
            "enabled": true, "me": "b", "scope": "next-active", "persistence_scope": "all-peers",
            "offered": 603, "refresh_skipped": 3, "offer_errors": 0, "unsynced": ["tg-1"],
            "senders": [{"traffic_group": "tg-2", "peer": "c", "carries": "all", "port": 1030,
                "state": "lagging",
                "last_sent": 603, "last_acked": 590, "lag_ms": 42, "queued": 13, "unacked": 13,
                "records": {"persistence": 600, "udp_flows": 1, "tcp_connections": 50}}],
            "receivers": [{"traffic_group": "tg-1", "peer": "a", "port": 1029, "connected": true,
                "state": "in-sync", "in_sync": true, "last_applied": 351, "duplicates": 2,
                "records": {"persistence": 1, "udp_flows": 0, "tcp_connections": 0}}],
        });
        let out = render(&cmd, &data, 0);
        assert!(
            out.starts_with(
                "device b, connections to next-active, persistence to all-peers; updates offered 603"
            ),
            "{out}"
        );
        assert!(
            out.contains("not in sync for tg-1: an auto-failback to this device waits for it\n"),
            "{out}"
        );
        let row = out.lines().find(|l| l.contains("tg-2")).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            ["tg-2", "c", "all", "1030", "lagging", "600/1/50", "603", "590", "42", "13"],
            "{out}"
        );
        let row = out.lines().find(|l| l.starts_with("  tg-1")).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            ["tg-1", "a", "1029", "in-sync", "1/0/0", "351", "2"],
            "{out}"
        );
        // No sender: said so.
        let data = json!({"enabled": true, "me": "c", "scope": "next-active",
            "senders": [], "receivers": [], "unsynced": []});
        let out = render(&cmd, &data, 0);
        assert!(out.contains("sending: nothing"), "{out}");
        assert!(out.contains("in sync: holds the mirrored state"), "{out}");
    }

    #[test]
    fn usage_errors_are_exit_code_2() {
        for argv in [
            &["member", "web", "10.0.0.1", "disable"][..],
            &["member", "web", "10.0.0.1:80", "off"],
            &["show"],
            &["show", "connections", "--limit", "-1"],
            &["frob"],
        ] {
            let e = parse(argv).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{argv:?}");
        }
    }

    #[test]
    fn bytes_and_spans_read_easily() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 + 300 * 1024), "5.3 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
        assert_eq!(span(999), "0s");
        assert_eq!(span(45_000), "45s");
        assert_eq!(span(723_000), "12m03s");
        assert_eq!(span(3 * 3_600_000 + 7 * 60_000 + 5_000), "3h07m");
        assert_eq!(span(2 * 86_400_000 + 4 * 3_600_000), "2d04h");
        assert_eq!(until(5_000, 6_000), "expired");
        assert_eq!(until(66_000, 6_000), "1m00s");
    }

    #[test]
    fn tables_align_and_trim() {
        let mut t = Table::new(&[("NAME", L), ("N", R), ("NOTE", L)]);
        t.row(vec!["a".into(), "1234".into(), "".into()]);
        t.row(vec!["longer".into(), "5".into(), "x".into()]);
        assert_eq!(
            t.render("  "),
            "  NAME       N  NOTE\n  a       1234\n  longer     5  x\n"
        );
    }

    fn pools_data() -> Value {
        json!([{
            "name": "web", "method": "least-connections", "monitors": ["tcp", "http"],
            "available": 1, "total": 3, "virtual_servers": ["web", "web-tls"],
            "members": [
                {"address": "10.1.1.50:80", "ratio": 1, "admin": "enabled", "health": "up",
                 "status": "up",
                 "monitors": {
                    "tcp": {"health": "up", "reason": "connected", "since_ms": 100},
                    "http": {"health": "up", "reason": "status 200", "since_ms": 200}},
                 "counters": {"current": 3, "total": 120, "bytes_in": 1536,
                              "bytes_out": 41_943_040, "connect_failures": 0, "refused": 0}},
                {"address": "10.1.1.51:80", "ratio": 2, "admin": "disabled", "health": "down",
                 "status": "down",
                 "monitors": {"tcp": {"health": "down", "reason": "connection refused", "since_ms": 300}},
                 "counters": {"current": 0, "total": 7, "bytes_in": 10, "bytes_out": 0,
                              "connect_failures": 2, "refused": 0}},
                {"address": "[fd00::52]:8080", "ratio": 1, "admin": "forced-offline",
                 "health": "unchecked", "status": "forced-offline", "monitors": {},
                 "counters": {"current": 0, "total": 0, "bytes_in": 0, "bytes_out": 0,
                              "connect_failures": 0, "refused": 0}}
            ]
        }, {
            "name": "empty", "method": "round-robin", "monitors": [], "available": 0,
            "total": 0, "virtual_servers": [], "members": []
        }])
    }

    #[test]
    fn pools_view() {
        let out = show_pools(&pools_data());
        let want = "\
pool web  least-connections  1/3 available  monitors: tcp,http  virtual servers: web,web-tls
  MEMBER           RATIO  STATUS          CUR  TOTAL  BYTES-IN  BYTES-OUT  FAIL  MONITOR
  10.1.1.50:80         1  up                3    120   1.5 KiB   40.0 MiB     0  http up: status 200
  10.1.1.51:80         2  down/disabled     0      7      10 B        0 B     2  tcp down: connection refused
  [fd00::52]:8080      1  forced-offline    0      0       0 B        0 B     0  -

pool empty  round-robin  0/0 available  monitors: none  virtual servers: none
  (no members)
";
        assert_eq!(out, want, "\n{out}");
        assert_eq!(show_pools(&json!([])), "no pools\n");
    }

    #[test]
    fn virtual_server_views() {
        let vs = json!({
            "name": "web", "destination": "198.51.100.10:80", "protocol": "tcp", "pool": "web",
            "enabled": true, "available": false, "snat": "automap", "connection_limit": 0,
            "idle_timeout": "5m", "connect_timeout": "5s", "persistence": null, "mirror": false,
            "counters": {"current": 1, "total": 9, "bytes_in": 2048, "bytes_out": 4096,
                         "connect_failures": 4, "refused": 3}
        });
        let mut api = vs.clone();
        api["name"] = json!("api");
        api["enabled"] = json!(false);
        api["persistence"] = json!("src");
        let two = show_virtual_servers(&json!([api, vs.clone()]));
        let lines: Vec<&str> = two.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME  DESTINATION       PROTO  POOL  STATE"));
        assert!(lines[1].contains("disabled"));
        assert!(lines[1].ends_with("automap  src"));
        assert!(lines[2].contains("unavailable"));
        assert!(lines[2].contains("2.0 KiB"));
        assert!(lines[2].ends_with("automap  -"));
        let one = show_virtual_servers(&json!([vs]));
        assert!(one.ends_with(
            "\n  connection limit none, idle timeout 5m, connect timeout 5s, mirror off, connect failures 4\n"
        ));
        assert_eq!(show_virtual_servers(&json!([])), "no virtual servers\n");

        let vas = json!([{"address": "198.51.100.10", "spanning": true, "advertise": "all",
                          "virtual_servers": ["api", "web"], "available": 1, "advertised": false}]);
        assert_eq!(
            show_virtual_addresses(&vas),
            "ADDRESS        ADVERTISE  SPANNING  AVAILABLE  ROUTE     VIRTUAL-SERVERS\n\
             198.51.100.10  all        yes             1/2  withdraw  api,web\n"
        );
    }

    #[test]
    fn status_and_results() {
        let now = 1_800_000_000_000;
        let mut d = json!({
            "device": "lb-a", "version": "0.1.0", "uptime_s": 3725, "config_file": "/etc/spanlb/lbd.toml",
            "virtual_servers": 2, "virtual_servers_available": 1, "pools": 1, "members": 3,
            "connections": 12, "persistence_records": 4, "last_reload": null
        });
        let out = show_status(&d, now);
        assert!(out.contains("device           lb-a\n"), "{out}");
        assert!(out.contains("uptime           1h02m\n"));
        assert!(out.contains("virtual servers  2 (1 available)\n"));
        assert!(out.contains("pools            1 (3 members)\n"));
        assert!(out.ends_with("last reload      never\n"));
        d["last_reload"] =
            json!({"at_ms": now - 65_000, "ok": false, "error": "lbd.toml: key `x`: bad"});
        let out = show_status(&d, now);
        assert!(
            out.ends_with("last reload      2027-01-15T07:58:55Z (1m05s ago): rejected: lbd.toml: key `x`: bad\n"),
            "{out}"
        );
        d["last_reload"] = json!({"at_ms": now, "ok": true, "summary":
            {"listeners_added": ["tcp 1.2.3.4:80"], "listeners_removed": [], "virtual_servers": 1, "pools": 2}});
        assert!(show_status(&d, now).contains(": ok, 1 virtual server, 2 pools, listeners +1 -0\n"));

        let r = json!({"listeners_added": ["tcp 1.2.3.4:80"], "listeners_removed": ["udp 1.2.3.4:53"],
                       "virtual_servers": 1, "pools": 1});
        assert_eq!(
            reload_done(&r),
            "reloaded: 1 virtual server, 1 pool, listeners +1 -1\n  listening on tcp 1.2.3.4:80\n  stopped listening on udp 1.2.3.4:53\n"
        );
        let m = json!({"pool": "web", "member": "10.1.1.50:80", "previous": "enabled",
                       "admin": "disabled", "status": "disabled", "available": 1, "total": 2});
        assert_eq!(
            member_done(&m),
            "pool web member 10.1.1.50:80: enabled -> disabled (status disabled); 1/2 members available\n"
        );
        let a = parse(&["persistence", "delete"]).unwrap();
        assert_eq!(
            render(&a.cmd, &json!({"deleted": 1}), now),
            "deleted 1 persistence record\n"
        );
    }

    #[test]
    fn tables_of_records() {
        let now = 1_000_000;
        let c = json!({"total": 3, "table_entries": 5, "connections": [{
            "id": 7, "protocol": "tcp", "virtual_server": "web", "client": "203.0.113.7:40000",
            "vip": "198.51.100.10:80", "pool": "web", "member": "10.1.1.50:80",
            "snat": "10.1.1.6:50000", "traffic_group": null, "update_id": 9,
            "created_ms": now - 125_000, "expiry_ms": now + 300_000,
            "bytes_in": 100, "bytes_out": 2_000_000}]});
        let out = show_connections(&c, now);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("ID  PROTO  VIRTUAL-SERVER  CLIENT"));
        assert!(lines[1].contains("2m05s"), "{out}");
        assert!(lines[1].contains("5m00s"));
        assert!(lines[1].ends_with("100 B    1.9 MiB"), "{out}");
        assert_eq!(
            lines[2],
            "1 of 3 connections shown (raise --limit to see more)"
        );
        assert_eq!(
            show_connections(&json!({"total": 0, "connections": []}), now),
            "0 connections\n"
        );

        let p = json!([{"profile": "src", "scope": "*", "key": "203.0.113.0/24", "pool": "web",
                        "member": "10.1.1.50:80", "virtual_server": "web", "traffic_group": null,
                        "update_id": 1, "expiry_ms": now + 61_000}]);
        assert_eq!(
            show_persistence(&p, now),
            "PROFILE  SCOPE  KEY             POOL  MEMBER        VIRTUAL-SERVER  EXPIRES\n\
             src      *      203.0.113.0/24  web   10.1.1.50:80  web               1m01s\n\
             1 record\n"
        );
        assert_eq!(
            show_persistence(&json!([]), now),
            "no persistence records\n"
        );
    }

    #[test]
    fn odd_answers_do_not_panic() {
        for v in [
            json!(null),
            json!(3),
            json!({"x": 1}),
            json!([1, "a", null]),
        ] {
            for argv in [
                &["status"][..],
                &["show", "pools"],
                &["show", "virtual-servers"],
                &["show", "virtual-addresses"],
                &["show", "connections"],
                &["show", "persistence"],
                &["member", "p", "10.0.0.1:1", "enable"],
                &["persistence", "delete"],
                &["reload"],
                &["show", "device-group"],
                &["show", "traffic-groups"],
                &["show", "plugins"],
                &["failover", "tg-1"],
                &["standby"],
                &["release"],
            ] {
                let _ = render(&parse(argv).unwrap().cmd, &v, 0);
            }
        }
    }

    #[test]
    fn an_absent_socket_is_unreachable_and_names_the_path() {
        let path = std::env::temp_dir().join(format!("lbctl-none-{}.sock", std::process::id()));
        match call(&path, &json!({"cmd": "status"})) {
            Err(Failure::Unreachable(e)) => {
                assert!(e.contains(&path.display().to_string()), "{e}");
                assert!(e.contains("--socket"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
}
