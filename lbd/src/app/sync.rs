//! Config sync inside lbd, as far as it goes today (docs/design.md, "Config sync"): this
//! device's generation, which its heartbeats carry, what the peers' heartbeats say of theirs,
//! and the status `lbctl config status` shows. Pushing a configuration to the group comes next.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cluster::agent::Cluster;
use crate::cluster::placement::PeerConfig;
use crate::cluster::ConfigMark;
use crate::config::Config;
use crate::configsync::{Digest, DocumentError, Generation, GroupDocument, PeerMark, SyncState};
use crate::tables::now_ms;

/// This device's side of config sync.
pub struct ConfigSync {
    state: Mutex<SyncState>,
    cluster: Arc<Cluster>,
}

fn generation(m: &ConfigMark) -> Generation {
    Generation {
        origin: m.origin.clone(),
        counter: m.counter,
        time_ms: m.time_ms,
        digest: Digest(m.digest),
    }
}

fn mark(st: &SyncState) -> Option<ConfigMark> {
    st.current().map(|g| ConfigMark {
        origin: g.origin.clone(),
        counter: g.counter,
        time_ms: g.time_ms,
        digest: g.digest.0,
        dirty: st.dirty(),
    })
}

impl ConfigSync {
    /// Starts config sync for `cluster`, holding the group configuration of `config`: a
    /// commit of this device (a restart does not remember generations yet), which settles as
    /// soon as every live device is heard to hold the same.
    pub fn start(cluster: Arc<Cluster>, config: &Config) -> Result<Arc<ConfigSync>, DocumentError> {
        let doc = GroupDocument::from_parts(config, Some(&cluster.group))?;
        let devices = cluster.group.devices.iter().map(|d| d.name.clone());
        let mut state = SyncState::new(&cluster.local.me, devices, None);
        let g = state.commit(doc.digest(), now_ms());
        info!(generation = ?g, "config sync: holding the group configuration");
        let sync = Arc::new(ConfigSync {
            state: Mutex::new(state),
            cluster: cluster.clone(),
        });
        tokio::spawn(sync.clone().follow(cluster.driver.peer_configs()));
        Ok(sync)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes in what the peers' heartbeats say, and hands this device's mark to the device
    /// group (its heartbeats carry it). Ends when the driver stops.
    async fn follow(self: Arc<Self>, mut peers: watch::Receiver<Vec<PeerConfig>>) {
        loop {
            let list = peers.borrow_and_update().clone();
            let (m, status) = {
                let mut st = self.lock();
                let before = st.status();
                for p in list {
                    st.peer(
                        &p.device,
                        PeerMark {
                            dirty: p.config.as_ref().is_some_and(|c| c.dirty),
                            generation: p.config.as_ref().map(generation),
                            alive: p.alive,
                        },
                    );
                }
                let now = st.status();
                (mark(&st), (before != now).then_some(now))
            };
            if let Some(s) = status {
                info!(status = %s, "config sync: status");
            }
            self.cluster.driver.set_config(m).await;
            if peers.changed().await.is_err() {
                return;
            }
        }
    }

    /// A reload here committed `config`: a new generation when the group configuration
    /// changed.
    pub async fn committed(&self, config: &Config) {
        let doc = match GroupDocument::from_parts(config, Some(&self.cluster.group)) {
            Ok(d) => d,
            Err(e) => {
                warn!("config sync: {e}");
                return;
            }
        };
        let m = {
            let mut st = self.lock();
            if let Some(g) = st.commit(doc.digest(), now_ms()) {
                info!(generation = %g, "config sync: group configuration changed here (not synced)");
            }
            mark(&st)
        };
        self.cluster.driver.set_config(m).await;
    }

    /// `lbctl config status`.
    pub fn status(&self) -> Value {
        let st = self.lock();
        let status = st.status();
        json!({
            "me": st.me(),
            "status": status.to_string(),
            "detail": status,
            "generation": st.current(),
            "dirty": st.dirty(),
            "overwritten": st.overwritten().map(|(ours, theirs)| json!({
                "ours": ours,
                "by": theirs,
            })),
            "devices": st.view(),
        })
    }
}
