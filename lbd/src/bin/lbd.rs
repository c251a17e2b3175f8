//! `lbd`: spanlb's load balancer. See the README for the configuration reference.

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

use lbd::cli::Lbd as Args;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.check {
        // Before logging is set up: every problem is printed once, by the report.
        std::process::exit(lbd::app::check::check(&args.config).print("lbd"));
    }
    if let Err(e) = args.log.init() {
        eprintln!("lbd: {e}");
        std::process::exit(2);
    }
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
    // The control plane (monitors, control socket, metrics, UDP) runs here; the TCP data path
    // runs on worker threads of its own (see proxy::DataPath::spawn_workers).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let res = rt.block_on(async move {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // Counts SIGTERM and SIGINT: the first starts the drain, the second cuts it short.
        let (tx, rx) = tokio::sync::watch::channel(0u32);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tx.send_modify(|n| *n += 1);
            }
        });
        let signals = |n: u32| {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|c| *c >= n).await;
            }
        };
        lbd::app::run_until(config, Some(args.config), signals(1), signals(2)).await?;
        anyhow::Ok(())
    });
    // Connections still open after the drain (device.drain_timeout) are not waited for: they
    // close as the process exits.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    if let Err(e) = res {
        // Once: the messages carry their causes (`{e:#}` printed each one again per layer).
        eprintln!("lbd: {}", spanlb_control::error_line(e.as_ref()));
        std::process::exit(1);
    }
    Ok(())
}
