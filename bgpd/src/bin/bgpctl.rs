//! `bgpctl`: talks to bgpd's control socket. Every show command takes `--json`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ipnet::IpNet;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
#[command(name = "bgpctl", version, about = "Control and inspect spanlb's bgpd")]
struct Args {
    /// bgpd's control socket.
    #[arg(short, long, default_value = "/run/spanlb/bgpd.sock", global = true)]
    socket: PathBuf,
    /// Print the daemon's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Neighbors and their session state.
    Neighbors,
    /// The route table (what bgpd originates), or with --neighbor / --adj-rib-out what each
    /// neighbor was sent.
    Routes {
        /// Show the Adj-RIB-Out of this neighbor.
        #[arg(long)]
        neighbor: Option<std::net::IpAddr>,
        /// Show the Adj-RIB-Out of every neighbor.
        #[arg(long)]
        adj_rib_out: bool,
    },
    /// Announce a route. Routes added by bgpctl are persistent: they stay after bgpctl exits.
    Announce {
        prefix: IpNet,
        #[arg(long)]
        path_id: Option<u32>,
        /// "self" or an address (a third-party next hop such as a floating self IP).
        #[arg(long, default_value = "self")]
        next_hop: String,
        #[arg(long)]
        med: Option<u32>,
        /// Extra copies of our AS to prepend.
        #[arg(long, default_value_t = 0)]
        prepend: u8,
        /// Community ASN:VALUE or a well-known name; repeatable.
        #[arg(long = "community")]
        communities: Vec<String>,
        /// Large community A:B:C; repeatable.
        #[arg(long = "large-community")]
        large_communities: Vec<String>,
        #[arg(long, default_value = "igp")]
        origin: String,
    },
    /// Withdraw a route.
    Withdraw {
        prefix: IpNet,
        #[arg(long)]
        path_id: Option<u32>,
        /// Announce it with GRACEFUL_SHUTDOWN (RFC 8326) for the configured linger time first.
        #[arg(long)]
        graceful: bool,
    },
}

fn request(socket: &PathBuf, req: Value) -> Result<Value, String> {
    let mut s = UnixStream::connect(socket)
        .map_err(|e| format!("cannot reach bgpd at {}: {e}", socket.display()))?;
    let mut line = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    s.write_all(&line)
        .map_err(|e| format!("write to bgpd: {e}"))?;
    let mut answer = String::new();
    BufReader::new(&s)
        .read_line(&mut answer)
        .map_err(|e| format!("read from bgpd: {e}"))?;
    let v: Value =
        serde_json::from_str(&answer).map_err(|e| format!("bad answer from bgpd: {e}"))?;
    if v["ok"] == json!(true) {
        Ok(v)
    } else {
        Err(v["error"].as_str().unwrap_or("unknown error").to_string())
    }
}

fn fmt_attrs(a: &Value) -> String {
    let mut parts = vec![format!("nh {}", a["next_hop"].as_str().unwrap_or("-"))];
    let path: Vec<String> = a["as_path"]
        .as_array()
        .map(|segs| {
            segs.iter()
                .map(|s| {
                    let asns: Vec<String> = s["asns"]
                        .as_array()
                        .map(|v| v.iter().map(|x| x.to_string()).collect())
                        .unwrap_or_default();
                    if s["type"] == "set" {
                        format!("{{{}}}", asns.join(","))
                    } else {
                        asns.join(" ")
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    parts.push(format!("path [{}]", path.join(" ")));
    if let Some(m) = a["med"].as_u64() {
        parts.push(format!("med {m}"));
    }
    if let Some(c) = a["communities"].as_array().filter(|c| !c.is_empty()) {
        let cs: Vec<String> = c
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| format!("{}:{}", x >> 16, x & 0xffff))
            .collect();
        parts.push(format!("comm {}", cs.join(" ")));
    }
    if let Some(c) = a["large_communities"].as_array().filter(|c| !c.is_empty()) {
        let cs: Vec<String> = c
            .iter()
            .map(|x| format!("{}:{}:{}", x[0], x[1], x[2]))
            .collect();
        parts.push(format!("large {}", cs.join(" ")));
    }
    parts.join("  ")
}

fn main() {
    let args = Args::parse();
    let req = match &args.cmd {
        Cmd::Neighbors => json!({"cmd": "neighbors"}),
        Cmd::Routes {
            neighbor: Some(n), ..
        } => json!({"cmd": "adj-rib-out", "neighbor": n}),
        Cmd::Routes {
            adj_rib_out: true, ..
        } => json!({"cmd": "adj-rib-out"}),
        Cmd::Routes { .. } => json!({"cmd": "routes"}),
        Cmd::Announce {
            prefix,
            path_id,
            next_hop,
            med,
            prepend,
            communities,
            large_communities,
            origin,
        } => {
            let mut r = json!({
                "prefix": prefix, "next_hop": next_hop, "as_path_prepend": prepend,
                "communities": communities, "large_communities": large_communities, "origin": origin,
            });
            if let Some(p) = path_id {
                r["path_id"] = json!(p);
            }
            if let Some(m) = med {
                r["med"] = json!(m);
            }
            json!({"cmd": "announce", "persistent": true, "routes": [r]})
        }
        Cmd::Withdraw {
            prefix,
            path_id,
            graceful,
        } => {
            json!({"cmd": "withdraw", "graceful": graceful, "routes": [{"prefix": prefix, "path_id": path_id}]})
        }
    };
    let v = match request(&args.socket, req) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("bgpctl: {e}");
            std::process::exit(1);
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    match &args.cmd {
        Cmd::Neighbors => {
            println!(
                "{:<18} {:>8} {:<12} {:>6} {:>6} {:>8} {:>8}  LAST",
                "NEIGHBOR", "AS", "STATE", "ADV", "RCV", "MSG-IN", "MSG-OUT"
            );
            for n in v["neighbors"].as_array().into_iter().flatten() {
                println!(
                    "{:<18} {:>8} {:<12} {:>6} {:>6} {:>8} {:>8}  {}",
                    n["address"].as_str().unwrap_or("?"),
                    n["remote_as"].to_string(),
                    n["state"].as_str().unwrap_or("?"),
                    n["prefixes_advertised"].to_string(),
                    n["prefixes_received"].to_string(),
                    n["messages_in"].to_string(),
                    n["messages_out"].to_string(),
                    n["last_reason"].as_str().unwrap_or(""),
                );
            }
        }
        Cmd::Routes {
            neighbor: None,
            adj_rib_out: false,
        } => {
            println!(
                "{:<24} {:>7} {:<18} {:<20} FLAGS",
                "PREFIX", "PATH-ID", "NEXT-HOP", "OWNER"
            );
            for r in v["routes"].as_array().into_iter().flatten() {
                let route = &r["route"];
                println!(
                    "{:<24} {:>7} {:<18} {:<20} {}",
                    route["prefix"].as_str().unwrap_or("?"),
                    route["path_id"]
                        .as_u64()
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "-".into()),
                    route["next_hop"].as_str().unwrap_or("?"),
                    r["owner"].as_str().unwrap_or("?"),
                    if r["graceful_shutdown"] == json!(true) {
                        "graceful-shutdown"
                    } else {
                        ""
                    },
                );
            }
        }
        Cmd::Routes { .. } => {
            for n in v["adj_rib_out"].as_array().into_iter().flatten() {
                let routes = n["routes"].as_array().cloned().unwrap_or_default();
                println!(
                    "neighbor {} ({} paths)",
                    n["neighbor"].as_str().unwrap_or("?"),
                    routes.len()
                );
                for r in routes {
                    let nlri = &r[0];
                    let id = nlri["path_id"]
                        .as_u64()
                        .map(|p| format!(" id {p}"))
                        .unwrap_or_default();
                    println!(
                        "  {}{}  {}",
                        nlri["prefix"].as_str().unwrap_or("?"),
                        id,
                        fmt_attrs(&r[1])
                    );
                }
            }
        }
        Cmd::Announce { .. } => println!("announced {}", v["announced"]),
        Cmd::Withdraw { graceful: true, .. } => {
            println!(
                "withdrawing {} after {} ms with graceful-shutdown",
                v["withdrawing"], v["linger_ms"]
            )
        }
        Cmd::Withdraw { .. } => println!("withdrew {}", v["withdrawn"]),
    }
}
