//! Config sync inside lbd (docs/design.md, "Config sync"): this device's generation, which its
//! heartbeats carry, what the peers' heartbeats say of theirs, the status `lbctl config
//! status` shows, and applying a configuration a peer pushed (validated, applied through the
//! reload path, saved). The generation survives a restart: it is saved next to the
//! configuration file (`FILE.sync.json`), atomically, whenever it changes. The network side
//! (the listener, `lbctl config sync --to-group`) is `syncnet`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::{info, warn};

use super::daemon::Daemon;
use crate::cluster::agent::Cluster;
use crate::cluster::membership;
use crate::cluster::placement::PeerConfig;
use crate::cluster::ConfigMark;
use crate::config::Config;
use crate::configsync::{
    Digest, DocumentError, Generation, GroupDocument, History, PeerMark, Saved, SyncState,
};
use crate::mirror::service::Mirroring;
use crate::mirror::trust;
use crate::tables::now_ms;

/// This device's side of config sync.
pub struct ConfigSync {
    state: Mutex<SyncState>,
    pub(super) cluster: Arc<Cluster>,
    daemon: Arc<Daemon>,
    /// Mirroring, which follows a live membership change.
    pub(super) mirror: Option<Arc<Mirroring>>,
    /// The devices the config-sync listener admits (any device the group CA certified while
    /// this device awaits its initial sync).
    pub(super) admitted: trust::Admitted,
    /// The documents this device held lately (deltas are made from them).
    history: Mutex<History>,
    /// Where the generation is saved (None: the configuration was not read from a file).
    saved: Option<PathBuf>,
}

/// Where the generation of the configuration in `config_file` is saved.
pub fn saved_path(config_file: &Path) -> PathBuf {
    let mut name = config_file.as_os_str().to_owned();
    name.push(".sync.json");
    PathBuf::from(name)
}

fn load(path: &Path) -> Option<Saved> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!("config sync: cannot read {}: {e}", path.display());
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("config sync: ignoring {}: {e}", path.display());
            None
        }
    }
}

/// Writes `saved` to `path` atomically.
fn store(path: &Path, saved: &Saved) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(saved).map_err(std::io::Error::other)?;
    write_atomically(path, &text)
}

/// Writes `bytes` to `path` atomically: a new file beside it, renamed over it.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = {
        let mut n = path.as_os_str().to_owned();
        n.push(".tmp");
        PathBuf::from(n)
    };
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
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
    /// Starts config sync for `cluster`, holding the group configuration of `config` (read
    /// from `config_file`): the generation saved by the last run when the configuration is
    /// the same, else a new one of this device's.
    ///
    /// A device whose device group names only itself and no traffic group, and that saved no
    /// generation, is a new device waiting to be added (`lbctl device-group add` on a member):
    /// it holds no generation (`awaiting-initial-sync`) and its listener admits any device
    /// the group CA certified, until the first sync reaches it.
    pub async fn start(
        cluster: Arc<Cluster>,
        daemon: Arc<Daemon>,
        mirror: Option<Arc<Mirroring>>,
        config: &Config,
        config_file: Option<&Path>,
    ) -> Result<Arc<ConfigSync>, DocumentError> {
        let doc = GroupDocument::from_parts(config, Some(&*cluster.group()))?;
        let group = cluster.group();
        let devices = group.devices.iter().map(|d| d.name.clone());
        let saved = config_file.map(saved_path);
        let previous = saved.as_deref().and_then(load);
        let joining = previous.is_none() && super::regroup::awaits_initial_sync(&group);
        let state = if joining {
            info!("config sync: a device group of this device alone, never synced: awaiting the initial sync from a member (lbctl device-group add there)");
            SyncState::new(&cluster.local.me, devices, None)
        } else {
            SyncState::resume(&cluster.local.me, devices, previous, doc.digest(), now_ms())
        };
        let admitted = trust::Admitted::default();
        admitted.set(
            &super::regroup::peer_names(&group, &cluster.local.me),
            joining,
        );
        if let Some(g) = state.current() {
            info!(generation = %g, unsynced = state.dirty(), "config sync: holding the group configuration");
        }
        let mut history = History::default();
        history.push(doc);
        let sync = Arc::new(ConfigSync {
            state: Mutex::new(state),
            cluster: cluster.clone(),
            daemon,
            mirror,
            admitted,
            history: Mutex::new(history),
            saved,
        });
        sync.save(&sync.lock());
        sync.listen().await;
        tokio::spawn(sync.clone().follow(cluster.driver.peer_configs()));
        Ok(sync)
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Saves what a restart resumes from (failures are logged: the next change tries again).
    fn save(&self, st: &SyncState) {
        if let (Some(path), Some(saved)) = (&self.saved, st.saved()) {
            if let Err(e) = store(path, &saved) {
                warn!("config sync: cannot save {}: {e}", path.display());
            }
        }
    }

    /// Takes in what the peers' heartbeats say, and hands this device's mark to the device
    /// group (its heartbeats carry it). Ends when the driver stops.
    async fn follow(self: Arc<Self>, mut peers: watch::Receiver<Vec<PeerConfig>>) {
        loop {
            let list = peers.borrow_and_update().clone();
            let (m, status) = {
                let mut st = self.lock();
                let before = st.status();
                let before_dirty = st.current().map(|_| st.dirty());
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
                let m = mark(&st);
                if m.as_ref().map(|m| m.dirty) != before_dirty {
                    self.save(&st);
                }
                (m, (before != now).then_some(now))
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
    /// changed, pushed to the group with `auto_sync`.
    pub async fn committed(self: &Arc<Self>, config: &Config) {
        if self.commit(config).await && self.cluster.group().group.auto_sync {
            let me = self.clone();
            tokio::spawn(async move {
                let r = me.sync_to_group().await;
                info!(result = %r, "config sync: automatic sync to the group");
            });
        }
    }

    /// A new generation for `config` when the group configuration changed (true then); the
    /// caller pushes it.
    pub(super) async fn commit(&self, config: &Config) -> bool {
        let doc = match GroupDocument::from_parts(config, Some(&*self.cluster.group())) {
            Ok(d) => d,
            Err(e) => {
                warn!("config sync: {e}");
                return false;
            }
        };
        let digest = doc.digest();
        self.history().push(doc);
        let m = {
            let mut st = self.lock();
            let g = st.commit(digest, now_ms());
            if let Some(g) = &g {
                info!(generation = %g, "config sync: group configuration changed here (not synced)");
                self.save(&st);
            }
            (mark(&st), g.is_some())
        };
        let (m, changed) = m;
        self.cluster.driver.set_config(m).await;
        changed
    }

    pub(super) fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// lbd's configuration as it runs.
    pub(super) fn daemon_config(&self) -> Config {
        (*self.daemon.dp.runtime.load().config).clone()
    }

    /// The group configuration this device runs.
    pub(super) fn document(&self) -> Result<GroupDocument, DocumentError> {
        let rt = self.daemon.dp.runtime.load();
        GroupDocument::from_parts(&rt.config, Some(&*self.cluster.group()))
    }

    /// The peers a sync to the group goes to (with the digest each holds), and this device's
    /// generation.
    pub(super) fn targets(&self) -> (Vec<(String, Option<Digest>)>, Option<Generation>) {
        let st = self.lock();
        (st.targets(), st.current().cloned())
    }

    /// Validates `doc` as this device's configuration, applies it through the reload path and
    /// saves it to the configuration file; the reason when it does not validate or apply.
    /// A changed device group is checked first (`cluster::membership`: what a running lbd
    /// takes live) and taken after the rest applied.
    pub(super) async fn apply(&self, doc: &GroupDocument) -> Result<(), String> {
        let have = self.document().map_err(|e| e.to_string())?;
        let group = if doc.section("device_group") != have.section("device_group") {
            let running = self.cluster.group();
            let g = doc
                .to_group(&running.group.key_file)
                .map_err(|e| e.to_string())?
                .ok_or("it has no device group")?;
            membership::check_live(&running, &g, &self.cluster.local.me)?;
            Some(g)
        } else {
            None
        };
        let current = self.daemon.dp.runtime.load().config.clone();
        let cfg = doc.to_config(&current).map_err(|e| e.to_string())?;
        let text = toml::to_string(&cfg).map_err(|e| e.to_string())?;
        self.daemon.apply(cfg).await.map_err(|e| e.to_string())?;
        if let Some(g) = group {
            self.take_group(g, true).await?;
        }
        self.cluster.refresh_virtual_addresses().await;
        if let Some(path) = &self.daemon.config_path {
            if let Err(e) = write_atomically(path, text.as_bytes()) {
                warn!(
                    "config sync: applied, but cannot save {}: {e}",
                    path.display()
                );
            }
        }
        Ok(())
    }

    /// A sync from another device was applied: this device holds `g` (`doc`). Returns this
    /// device's own unsynced change it replaced.
    pub(super) fn applied(&self, g: Generation, doc: GroupDocument) -> Option<Generation> {
        self.history().push(doc);
        let mut st = self.lock();
        let lost = st.applied(g);
        self.save(&st);
        let m = mark(&st);
        drop(st);
        let driver = self.cluster.driver.clone();
        tokio::spawn(async move { driver.set_config(m).await });
        lost
    }

    /// A sync to or from this device failed.
    pub(super) fn failed(&self, reason: String) {
        self.lock().failed(reason);
    }

    /// A sync from this device reached every device it went to.
    pub(super) fn succeeded(&self) {
        self.lock().sync_succeeded();
    }

    /// The status's name (`in-sync`, `changes-pending`, `awaiting-initial-sync`,
    /// `disconnected`, `sync-failed`) and the counter of the generation held (metrics).
    pub fn figures(&self) -> (&'static str, u64) {
        let st = self.lock();
        (st.status().name(), st.current().map_or(0, |g| g.counter))
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
