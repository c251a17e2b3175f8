//! The command lines of `lbd` and `lbctl` (clap definitions).
//!
//! They live in the library, not in the binaries, so that the packaging's generator
//! (`packaging/gen`, `spanlb-packaging`) writes the man pages and shell completions from the
//! very definitions the binaries parse with.

use std::path::PathBuf;

use clap::Parser;

pub mod lbctl;

/// `lbd`'s arguments.
#[derive(Parser, Debug)]
#[command(
    name = "lbd",
    version,
    about = "spanlb load balancer: virtual servers, pools, monitors, SNAT (TCP and UDP full proxy)"
)]
pub struct Lbd {
    /// Configuration file (TOML).
    #[arg(short, long, default_value = "/etc/spanlb/lbd.toml")]
    pub config: PathBuf,
    /// Check the configuration and exit.
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub log: spanlb_control::logging::LogArgs,
}
