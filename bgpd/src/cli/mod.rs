//! The command lines of `bgpd` and `bgpctl` (clap definitions).
//!
//! They live in the library, not in the binaries, so that the packaging's generator
//! (`packaging/gen`, `spanlb-packaging`) writes the man pages and shell completions from the
//! very definitions the binaries parse with.

use std::path::PathBuf;

use clap::Parser;

pub mod bgpctl;

/// `bgpd`'s arguments.
#[derive(Parser, Debug)]
#[command(
    name = "bgpd",
    version,
    about = "spanlb BGP speaker: announces VIPs and floating self-IP routes"
)]
pub struct Bgpd {
    /// Configuration file (TOML).
    #[arg(short, long, default_value = "/etc/spanlb/bgpd.toml")]
    pub config: PathBuf,
    /// Check the configuration and exit.
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub log: spanlb_control::logging::LogArgs,
}
