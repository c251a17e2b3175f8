//! `lbctl`: the operator's command line for lbd, over lbd's control socket (JSON lines).
//!
//! Shows print compact aligned tables (or, with `--json`, the daemon's data as it sent it);
//! `member`, `persistence delete` and `reload` change the running daemon. Exit codes: 0 done,
//! 1 lbd answered with an error, 2 usage, 3 lbd could not be reached.
//!
//! lbctl sends exactly one request per invocation and never retries one; it keeps no state and
//! never reads or writes lbd's configuration file itself. Requests are `spanlb_control`'s typed
//! `lbd::Request`, sent with its blocking client (an answer may take up to 60 s: a reload binds
//! listeners).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use serde_json::Value;
use spanlb_control::client::Client;
use spanlb_control::lbd::Request;
use spanlb_control::Error;

// The command line is lbd::cli::lbctl (the packaging generates man pages from it).
use lbd::cli::lbctl as args;
mod render;
mod trust;

use args::{Args, Cmd};

const DEFAULT_SOCKET: &str = "/run/spanlb/lbd.sock";
const SOCKET_ENV: &str = "LBCTL_SOCKET";

/// Why a request got no data.
#[derive(Debug, PartialEq)]
enum Failure {
    /// lbd answered with this error.
    Daemon(String),
    /// lbd could not be reached or did not answer sensibly.
    Unreachable(String),
}

fn call(socket: &Path, req: &Request) -> Result<Value, Failure> {
    let hint = "is lbd running? name its control socket with --socket PATH or LBCTL_SOCKET";
    let mut lbd = Client::<Request>::connect(socket).map_err(|e| match e {
        Error::Connect { .. } => Failure::Unreachable(format!("{e} ({hint})")),
        e => Failure::Unreachable(e.to_string()),
    })?;
    lbd.request(req).map_err(|e| match e {
        Error::Daemon(e) => Failure::Daemon(e),
        e => Failure::Unreachable(e.to_string()),
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Cmd::Trust(t) = &args.cmd {
        return match trust::trust(t, args.json) {
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
    let Some(req) = args::request(&args.cmd) else {
        unreachable!("only the trust commands send no request");
    };
    let socket = args
        .socket
        .clone()
        .or_else(|| std::env::var_os(SOCKET_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    match call(&socket, &req) {
        Ok(data) => {
            let text = if args.json {
                serde_json::to_string_pretty(&data).unwrap_or_default() + "\n"
            } else {
                render::render(&args.cmd, &data, lbd::sys::now_ms())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_socket_is_unreachable_and_names_the_path() {
        let path = std::env::temp_dir().join(format!("lbctl-none-{}.sock", std::process::id()));
        match call(&path, &Request::Status) {
            Err(Failure::Unreachable(e)) => {
                assert!(e.contains(&path.display().to_string()), "{e}");
                assert!(e.contains("--socket"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
}
