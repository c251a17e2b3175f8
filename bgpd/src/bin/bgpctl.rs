//! `bgpctl`: talks to bgpd's control socket. Every show command takes `--json`.

use std::process::ExitCode;

use clap::Parser;
use serde_json::Value;
use spanlb_control::bgpd::{
    AdjRibOut, AsSegment, BfdSessions, Neighbors, PathAttrs, Reloaded, Request, Response,
    RouteConfig, RouteList, RouteRef,
};
use spanlb_control::client::Client;
use spanlb_control::table::{Align, Table};
use spanlb_control::Envelope;

// The command line is bgpd::cli::bgpctl (the packaging generates man pages from it).
use bgpd::cli::bgpctl::{Args, Cmd};

/// The control request for a command; an argument bgpd would refuse is an error here.
fn request(cmd: &Cmd) -> Result<Request, String> {
    Ok(match cmd {
        Cmd::Neighbors => Request::Neighbors,
        Cmd::Bfd => Request::Bfd,
        Cmd::Reload => Request::Reload,
        Cmd::Routes {
            neighbor: Some(n), ..
        } => Request::AdjRibOut { neighbor: Some(*n) },
        Cmd::Routes {
            adj_rib_out: true, ..
        } => Request::AdjRibOut { neighbor: None },
        Cmd::Routes { .. } => Request::Routes,
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
            let mut r = RouteConfig::new(*prefix);
            r.path_id = *path_id;
            r.next_hop = next_hop.parse()?;
            r.med = *med;
            r.as_path_prepend = *prepend;
            r.communities = parse_all(communities)?;
            r.large_communities = parse_all(large_communities)?;
            r.origin = origin.parse()?;
            Request::Announce {
                persistent: true,
                routes: vec![r],
            }
        }
        Cmd::Withdraw {
            prefix,
            path_id,
            graceful,
        } => Request::Withdraw {
            graceful: *graceful,
            routes: vec![RouteRef::new(*prefix, *path_id)],
        },
    })
}

fn parse_all<T: std::str::FromStr<Err = String>>(texts: &[String]) -> Result<Vec<T>, String> {
    texts.iter().map(|t| t.parse()).collect()
}

fn fmt_attrs(a: &PathAttrs) -> String {
    let nh = a
        .next_hop
        .map_or_else(|| "-".to_string(), |n| n.to_string());
    let mut parts = vec![format!("nh {nh}")];
    let path: Vec<String> = a
        .as_path
        .iter()
        .map(|s| match s {
            AsSegment::Set(asns) => format!("{{{}}}", join(asns, ",")),
            AsSegment::Sequence(asns) => join(asns, " "),
        })
        .collect();
    parts.push(format!("path [{}]", path.join(" ")));
    if let Some(m) = a.med {
        parts.push(format!("med {m}"));
    }
    if !a.communities.is_empty() {
        let cs: Vec<String> = a
            .communities
            .iter()
            .map(|x| format!("{}:{}", x >> 16, x & 0xffff))
            .collect();
        parts.push(format!("comm {}", cs.join(" ")));
    }
    if !a.large_communities.is_empty() {
        let cs: Vec<String> = a
            .large_communities
            .iter()
            .map(|c| format!("{}:{}:{}", c.0, c.1, c.2))
            .collect();
        parts.push(format!("large {}", cs.join(" ")));
    }
    parts.join("  ")
}

fn join_addrs(v: &[std::net::IpAddr]) -> String {
    v.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn join(asns: &[u32], sep: &str) -> String {
    asns.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

/// What bgpctl prints for a command's answer.
fn render(cmd: &Cmd, r: Response) -> Result<String, String> {
    use Align::{Left as L, Right as R};
    Ok(match cmd {
        Cmd::Neighbors => {
            let mut t = Table::new(&[
                ("NEIGHBOR", L),
                ("AS", R),
                ("STATE", L),
                ("ADV", R),
                ("RCV", R),
                ("MSG-IN", R),
                ("MSG-OUT", R),
                ("LAST", L),
            ]);
            for n in r.data::<Neighbors>()?.neighbors {
                t.row(vec![
                    n["address"].as_str().unwrap_or("?").into(),
                    n["remote_as"].to_string(),
                    n["state"].as_str().unwrap_or("?").into(),
                    n["prefixes_advertised"].to_string(),
                    n["prefixes_received"].to_string(),
                    n["messages_in"].to_string(),
                    n["messages_out"].to_string(),
                    n["last_reason"].as_str().unwrap_or("").into(),
                ]);
            }
            t.render("")
        }
        Cmd::Bfd => {
            let mut t = Table::new(&[
                ("NEIGHBOR", L),
                ("STATE", L),
                ("REMOTE", L),
                ("DIAG", L),
                ("TX-MS", R),
                ("DETECT-MS", R),
                ("LOCAL-DISCR", R),
                ("REMOTE-DISCR", R),
                ("AUTH", L),
            ]);
            let ms = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
            for b in r.data::<BfdSessions>()?.bfd {
                t.row(vec![
                    b.neighbor.to_string(),
                    b.state,
                    b.remote_state,
                    b.diag,
                    ms(b.tx_interval_ms),
                    ms(b.detection_time_ms),
                    b.local_discriminator.to_string(),
                    b.remote_discriminator.to_string(),
                    b.auth.unwrap_or_else(|| "-".into()),
                ]);
            }
            t.render("")
        }
        Cmd::Routes {
            neighbor: None,
            adj_rib_out: false,
        } => {
            let mut t = Table::new(&[
                ("PREFIX", L),
                ("PATH-ID", R),
                ("NEXT-HOP", L),
                ("OWNER", L),
                ("FLAGS", L),
            ]);
            for r in r.data::<RouteList>()?.routes {
                t.row(vec![
                    r.route.prefix.to_string(),
                    r.route
                        .path_id
                        .map_or_else(|| "-".into(), |p| p.to_string()),
                    r.route.next_hop.to_string(),
                    r.owner,
                    if r.graceful_shutdown {
                        "graceful-shutdown"
                    } else {
                        ""
                    }
                    .into(),
                ]);
            }
            t.render("")
        }
        Cmd::Routes { .. } => {
            let mut out = String::new();
            for n in r.data::<AdjRibOut>()?.adj_rib_out {
                out += &format!("neighbor {} ({} paths)\n", n.neighbor, n.routes.len());
                for (nlri, attrs) in &n.routes {
                    let id = nlri.path_id.map(|p| format!(" id {p}")).unwrap_or_default();
                    out += &format!("  {}{id}  {}\n", nlri.prefix, fmt_attrs(attrs));
                }
            }
            out
        }
        Cmd::Announce { .. } => format!("announced {}\n", field(r, "announced")?),
        Cmd::Withdraw { graceful: true, .. } => {
            let (n, linger) = (field(r.clone(), "withdrawing")?, field(r, "linger_ms")?);
            format!("withdrawing {n} after {linger} ms with graceful-shutdown\n")
        }
        Cmd::Withdraw { .. } => format!("withdrew {}\n", field(r, "withdrawn")?),
        Cmd::Reload => {
            let s = r.data::<Reloaded>()?;
            let list = |v: &[std::net::IpAddr]| {
                if v.is_empty() {
                    "-".to_string()
                } else {
                    join_addrs(v)
                }
            };
            format!(
                "reloaded: neighbors added {}, removed {}, reset {}, updated {}; routes announced {}, withdrawn {}\n",
                list(&s.neighbors_added),
                list(&s.neighbors_removed),
                list(&s.neighbors_reset),
                list(&s.neighbors_updated),
                s.routes_announced,
                s.routes_withdrawn
            )
        }
    })
}

/// One field of a success answer, `null` when absent (printed as JSON).
fn field(r: Response, key: &str) -> Result<Value, String> {
    Ok(r.into_result()?.remove(key).unwrap_or(Value::Null))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bgpctl: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<String, String> {
    let req = request(&args.cmd)?;
    let mut bgpd = Client::<Request>::connect(&args.socket).map_err(|e| e.to_string())?;
    let r = bgpd.call(&req).map_err(|e| e.to_string())?;
    if let Response::Err(e) = r {
        return Err(e);
    }
    if args.json {
        return Ok(serde_json::to_string_pretty(&r).unwrap_or_default() + "\n");
    }
    render(&args.cmd, r)
}
