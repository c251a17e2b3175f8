//! `lbd`: spanlb's load balancer. See the README for the configuration reference.

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

use lbd::cli::Lbd as Args;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let config = match lbd::config::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lbd: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = config.control_policy(&args.config.display().to_string()) {
        eprintln!("lbd: {e}");
        std::process::exit(2);
    }
    if args.check {
        println!(
            "{}: ok ({} virtual servers, {} pools, {} monitors)",
            args.config.display(),
            config.virtual_servers.len(),
            config.pools.len(),
            config.monitors.len()
        );
        return Ok(());
    }
    // The control plane (monitors, control socket, metrics, UDP) runs here; the TCP data path
    // runs on worker threads of its own (see proxy::DataPath::spawn_workers).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let res = rt.block_on(async move {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        lbd::app::run(config, Some(args.config), shutdown).await?;
        anyhow::Ok(())
    });
    // Connections still open at shutdown are not waited for.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    if let Err(e) = res {
        eprintln!("lbd: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}
