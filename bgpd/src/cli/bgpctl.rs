//! bgpctl's command line (clap).
//!
//! In the library (not the `bgpctl` binary) so that the packaging's generator
//! (`spanlb-packaging`) writes bgpctl's man page and shell completions from the same definition.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ipnet::IpNet;

/// `bgpctl`'s arguments.
#[derive(Parser, Debug)]
#[command(name = "bgpctl", version, about = "Control and inspect spanlb's bgpd")]
pub struct Args {
    /// bgpd's control socket.
    #[arg(short, long, default_value = "/run/spanlb/bgpd.sock", global = true)]
    pub socket: PathBuf,
    /// Print the daemon's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// bgpctl's commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Neighbors and their session state.
    Neighbors,
    /// The neighbors' BFD sessions (RFC 5880): state, timers in force, discriminators.
    Bfd,
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
    /// Read bgpd's configuration file again and apply it, as SIGHUP does: neighbors added,
    /// removed or (changed) reset, `[[route]]`s announced or withdrawn as a diff. A file that
    /// does not validate, or changes what needs a restart, is refused and nothing changes.
    Reload,
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
