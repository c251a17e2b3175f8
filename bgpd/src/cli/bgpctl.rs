//! bgpctl's command line (clap).
//!
//! In the library (not the `bgpctl` binary) so that the packaging's generator
//! (`spanlb-packaging`) writes bgpctl's man page and shell completions from the same definition.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ipnet::IpNet;

/// `bgpctl`'s arguments.
#[derive(Parser, Debug)]
#[command(
    name = "bgpctl",
    version,
    about = "Control and inspect spanlb's bgpd",
    after_help = "Exit status: 0 done, 1 bgpd answered with an error, 2 usage error, 3 bgpd could not be reached."
)]
pub struct Args {
    /// bgpd's control socket [default: $BGPCTL_SOCKET, else /run/spanlb/bgpd.sock]
    #[arg(short, long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print the daemon's data as JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// The environment variable naming bgpd's control socket when `--socket` is not given.
pub const SOCKET_ENV: &str = "BGPCTL_SOCKET";
/// bgpd's control socket when neither `--socket` nor [`SOCKET_ENV`] names one.
pub const DEFAULT_SOCKET: &str = "/run/spanlb/bgpd.sock";

impl Args {
    /// The control socket: `--socket`, else `$BGPCTL_SOCKET`, else the default.
    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .or_else(|| std::env::var_os(SOCKET_ENV).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }
}

/// What `bgpctl show` shows.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Show {
    /// Neighbors: session state, uptime, description, prefixes and messages each way.
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
}

/// bgpctl's commands.
#[derive(Subcommand, Debug, Clone)]
pub enum Cmd {
    /// Show neighbors, BFD sessions or routes.
    #[command(subcommand)]
    Show(Show),
    /// The same as `show neighbors` (the spelling before `show`).
    #[command(hide = true)]
    Neighbors,
    /// The same as `show bfd`.
    #[command(hide = true)]
    Bfd,
    /// The same as `show routes`.
    #[command(hide = true)]
    Routes {
        #[arg(long)]
        neighbor: Option<std::net::IpAddr>,
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

impl Cmd {
    /// The command with the spellings from before `show` turned into their `show` form.
    pub fn canonical(self) -> Cmd {
        match self {
            Cmd::Neighbors => Cmd::Show(Show::Neighbors),
            Cmd::Bfd => Cmd::Show(Show::Bfd),
            Cmd::Routes {
                neighbor,
                adj_rib_out,
            } => Cmd::Show(Show::Routes {
                neighbor,
                adj_rib_out,
            }),
            c => c,
        }
    }
}
