//! `bgpd`: spanlb's BGP speaker. See the README for the configuration reference.

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

use bgpd::cli::Bgpd as Args;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.check {
        // Before logging is set up: every problem is printed once, by the report.
        std::process::exit(bgpd::check::check(&args.config).print("bgpd"));
    }
    if let Err(e) = args.log.init() {
        eprintln!("bgpd: {e}");
        std::process::exit(2);
    }
    let config = match bgpd::config::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bgpd: {e}");
            std::process::exit(2);
        }
    };
    let policy = match config.control_policy(&args.config.display().to_string()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bgpd: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let res = rt.block_on(async move {
        let listeners = bgpd::daemon::bind_all(&config)?;
        let control = bgpd::daemon::bind_control_as(&config.control_socket, &policy)?;
        let metrics = match config.metrics {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .with_context(|| format!("metrics listener {a}"))?,
            ),
            None => None,
        };
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        let sock = config.control_socket.clone();
        let path = Some(args.config.clone());
        bgpd::daemon::run_from(config, path, listeners, control, metrics, shutdown).await?;
        let _ = std::fs::remove_file(sock);
        anyhow::Ok(())
    });
    if let Err(e) = res {
        // One line, each cause once (returned from main, it was printed as a multi-line chain).
        eprintln!("bgpd: {}", spanlb_control::error_line(e.as_ref()));
        std::process::exit(1);
    }
    Ok(())
}
