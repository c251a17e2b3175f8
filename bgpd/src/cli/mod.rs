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
    /// Log lines: `auto` (journald priority prefixes when stderr is the journal, else
    /// `text`), `text`, `json` (one object per line) or `journald`.
    #[arg(long, value_name = "FORMAT", default_value = "auto",
        value_parser = clap::builder::TypedValueParser::map(
            clap::builder::PossibleValuesParser::new(spanlb_control::logging::LogFormat::NAMES),
            |s| s.parse::<spanlb_control::logging::LogFormat>().expect("a listed format")))]
    pub log_format: spanlb_control::logging::LogFormat,
    /// What is logged: `error`, `warn`, `info`, `debug`, `trace`, or a filter such as
    /// `info,bgpd::mirror=debug` [default: $RUST_LOG, else info]
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}
