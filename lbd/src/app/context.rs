//! What the running lbd is to its control socket and metrics ([`App`]), and to its device
//! group ([`Host`], the `cluster::ports` implementation).

use std::net::IpAddr;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tracing::warn;

use super::daemon::{Daemon, DaemonError, ReloadSummary};
use super::sync::ConfigSync;
use crate::cluster::agent::{Cluster, Local};
use crate::cluster::config::GroupConfig;
use crate::cluster::membership;
use crate::cluster::ports::{RouteHealth, Takeover};
use crate::mirror::service::Mirroring;
use crate::proxy::DataPath;
use crate::state::{AttributionState, Live};

/// lbd running: the daemon (data path, listeners, monitors), and the device group and
/// mirroring when configured. What the control socket and the metrics see.
pub struct App {
    pub daemon: Arc<Daemon>,
    pub cluster: Option<Arc<Cluster>>,
    pub mirror: Option<Arc<Mirroring>>,
    /// Config sync, with the device group.
    pub sync: Option<Arc<ConfigSync>>,
    /// What the control socket refused or closed (metrics).
    pub control: Arc<spanlb_control::access::Stats>,
}

impl App {
    /// An app of just `daemon` (no device group): for tests and tools.
    pub fn standalone(daemon: Arc<Daemon>) -> Arc<App> {
        Arc::new(App {
            daemon,
            cluster: None,
            mirror: None,
            sync: None,
            control: Arc::default(),
        })
    }

    /// Readiness (`/healthz`): every configured virtual server's listener is bound and, with a
    /// device group, its driver runs. `Err` says what is not, in one line.
    pub fn ready(&self) -> Result<(), String> {
        self.daemon.listeners_ready()?;
        if let Some(c) = &self.cluster {
            if !c.driver.running() {
                return Err("the device group driver is not running".into());
            }
        }
        Ok(())
    }

    /// The live state (runtime and tables).
    pub fn live(&self) -> &Arc<Live> {
        self.daemon.live()
    }

    /// Reads the configuration file again and applies it (SIGHUP, `lbctl reload`); the device
    /// group adds the spanning virtual addresses the new configuration has.
    ///
    /// The device-group file is read again too: a change that a running lbd takes
    /// (`cluster::membership`) is taken live after the rest; one that needs a restart refuses
    /// the whole reload, before anything changed.
    ///
    /// systemd hears RELOADING=1 before and READY=1 after, whatever the outcome (a refused
    /// reload leaves the running configuration serving).
    pub async fn reload(&self) -> Result<ReloadSummary, DaemonError> {
        super::systemd::notify(&super::systemd::reloading());
        let res = self.reload_now().await;
        super::systemd::notify(&[sd_notify::NotifyState::Ready]);
        res
    }

    async fn reload_now(&self) -> Result<ReloadSummary, DaemonError> {
        let group = match &self.cluster {
            Some(c) => {
                let g = GroupConfig::load(&c.local.group_file)?;
                let running = c.group();
                if *running != g {
                    membership::check_live(&running, &g, &c.local.me)
                        .map_err(DaemonError::DeviceGroup)?;
                    Some(g)
                } else {
                    None
                }
            }
            None => None,
        };
        let summary = self.daemon.reload().await?;
        if let Some(c) = &self.cluster {
            let rt = self.live().runtime.load();
            if Local::from_config(&rt.config).as_ref() != Some(&c.local) {
                warn!("device-group settings in [device] changed: they take effect at the next restart");
            }
            let config = rt.config.clone();
            drop(rt);
            c.refresh_virtual_addresses().await;
            if let Some(s) = &self.sync {
                if let Some(g) = group {
                    s.take_group(g, false)
                        .await
                        .map_err(DaemonError::DeviceGroup)?;
                }
                s.committed(&config).await;
            }
        }
        Ok(summary)
    }
}

/// The rest of lbd as the device group sees it (`cluster::ports`).
pub(super) struct Host {
    pub dp: Arc<DataPath>,
    pub mirror: Option<Arc<Mirroring>>,
}

impl Takeover for Host {
    fn adopt<'a>(&'a self, tg: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(m) = &self.mirror {
                let standby = m.take_over(tg);
                crate::proxy::takeover::restore_mirrored(&self.dp, tg, standby).await;
            }
        })
    }

    fn release(&self, tg: &str) {
        if let Some(m) = &self.mirror {
            m.released(tg);
        }
    }

    fn set_attribution(&self, attribution: AttributionState) {
        self.dp.runtime.load().attribution.set(attribution);
    }
}

impl RouteHealth for Host {
    fn spanning(&self) -> Vec<(IpAddr, bool)> {
        self.dp
            .runtime
            .load()
            .virtual_addresses()
            .into_iter()
            .filter(|v| v.spanning)
            .map(|v| (v.address, v.advertised))
            .collect()
    }
}
