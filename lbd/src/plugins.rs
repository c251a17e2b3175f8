//! Plugins in lbd: the directory of `.so` files, one instance per plugin-backed persistence
//! profile, and what the data path does with a plugin's answer (docs/architecture.md, "Plugins").
//!
//! - [`Registry::scan`] loads every `*.so` of the plugin directory not tried before (at start
//!   and on reload: new files are loaded, loaded ones kept, nothing is ever unloaded). A file
//!   that is not a plugin, was built for another ABI, does not match the layout, or names a
//!   plugin already loaded is warned about in one line and skipped; a configuration that names
//!   a plugin that is not loaded is refused with that line ([`instantiate`]).
//! - [`ProfilePlugin::inspect`] calls the plugin and turns its [`Outcome`] into a [`Decision`],
//!   counting calls, keys, misses and panics. A panic (caught inside the plugin by
//!   `export_plugin!`) is logged with its message; after `plugin_panic_limit` panics the plugin
//!   is disabled until lbd restarts, and its profiles decide without it.
//!
//! Must not: block (plugins are pure functions of the bytes), unload a library, or let one
//! plugin's failure stop lbd once it runs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use plugin_api::{Direction, Endpoint, Flow, Library, Outcome, Transport};
use serde::Serialize;
use tracing::{debug, error, info, warn};

use crate::config::{Config, Protocol};
use crate::tables::now_ms;

/// Why plugins stop lbd at start-up or reject a reload: one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    #[error("plugin directory {dir}: {reason}")]
    Directory { dir: String, reason: String },
    #[error("persistence.{profile}: no plugin named `{plugin}` is loaded from {dir}{why}")]
    Missing {
        profile: String,
        plugin: String,
        dir: String,
        why: String,
    },
    #[error("persistence.{profile}: plugin `{plugin}` refused its configuration: {reason}")]
    Init {
        profile: String,
        plugin: String,
        reason: String,
    },
}

/// Counters and state of one loaded plugin.
#[derive(Debug, Default)]
pub struct PluginStats {
    pub calls: AtomicU64,
    pub keys: AtomicU64,
    pub members: AtomicU64,
    pub need_more: AtomicU64,
    pub no_match: AtomicU64,
    pub malformed: AtomicU64,
    pub panics: AtomicU64,
    /// Calls still running after `plugin_call_timeout` (each disables the plugin).
    pub timeouts: AtomicU64,
    pub disabled: AtomicBool,
    pub last_panic: Mutex<Option<String>>,
}

/// A loaded plugin library.
#[derive(Debug)]
pub struct Loaded {
    pub lib: Library,
    pub file: PathBuf,
    pub loaded_ms: u64,
    pub stats: PluginStats,
}

/// What `lbctl show plugins` shows of one plugin.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub version: String,
    pub kind: String,
    pub description: String,
    pub file: PathBuf,
    pub abi: u32,
    pub max_inspect: u32,
    pub inspects_server: bool,
    pub loaded_ms: u64,
    pub calls: u64,
    pub keys: u64,
    pub members: u64,
    pub need_more: u64,
    pub no_match: u64,
    pub malformed: u64,
    pub panics: u64,
    pub timeouts: u64,
    pub state: String,
    pub last_panic: Option<String>,
}

/// The plugins loaded so far, and the files that failed.
#[derive(Debug, Default)]
pub struct Registry {
    pub by_name: BTreeMap<String, Arc<Loaded>>,
    /// Every file tried, with the error of those that failed (not retried).
    pub tried: BTreeMap<PathBuf, Option<String>>,
}

/// The most a plugin may ask to see of a connection before it decides, whatever its
/// descriptor declares (a TLS ClientHello fits, with room).
pub const MAX_INSPECT: usize = 64 * 1024;

/// Why `path` must not be trusted with code that runs as lbd: it must belong to root or to
/// lbd's own user, and be writable by no one else (a directory writable by others plus a
/// reload is code running as root).
fn untrusted(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return Some(e.to_string()),
    };
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if m.uid() != 0 && m.uid() != me {
        return Some(format!(
            "owned by uid {}, not by root or lbd's user (uid {me})",
            m.uid()
        ));
    }
    if m.mode() & 0o022 != 0 {
        return Some(format!(
            "mode {:o} lets others write it (chmod go-w)",
            m.mode() & 0o7777
        ));
    }
    None
}

impl Registry {
    /// Loads the `.so` files of `dir` not tried before. Returns the one-line warnings of files
    /// skipped now (already logged).
    pub fn scan(&mut self, dir: &Path) -> Result<Vec<String>, PluginError> {
        if let Some(reason) = untrusted(dir) {
            return Err(PluginError::Directory {
                dir: dir.display().to_string(),
                reason,
            });
        }
        let rd = std::fs::read_dir(dir).map_err(|e| PluginError::Directory {
            dir: dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "so") && p.is_file())
            .collect();
        files.sort();
        let mut warnings = Vec::new();
        for path in files {
            if self.tried.contains_key(&path) {
                continue;
            }
            if let Some(why) = untrusted(&path) {
                // Not marked as tried: once fixed, the next reload loads it.
                let line = format!("plugin {}: {why}", path.display());
                warn!("{line}; skipped");
                warnings.push(line);
                continue;
            }
            let outcome = match plugin_api::load(&path) {
                Ok(lib) if lib.descriptor.kind.as_str() != "persistence" => Err(format!(
                    "plugin {}: a `{}` plugin; this lbd loads persistence plugins",
                    path.display(),
                    lib.descriptor.kind.as_str()
                )),
                Ok(lib) => {
                    let name = lib.name().to_string();
                    if let Some(other) = self.by_name.get(&name) {
                        Err(format!(
                            "plugin {}: a plugin named `{name}` is already loaded from {}",
                            path.display(),
                            other.file.display()
                        ))
                    } else {
                        info!(
                            plugin = %name,
                            version = lib.descriptor.version.as_str(),
                            file = %path.display(),
                            "plugin loaded"
                        );
                        self.by_name.insert(
                            name,
                            Arc::new(Loaded {
                                lib,
                                file: path.clone(),
                                loaded_ms: now_ms(),
                                stats: PluginStats::default(),
                            }),
                        );
                        Ok(())
                    }
                }
                Err(e) => {
                    if let plugin_api::LoadError::Layout { detail, .. } = &e {
                        debug!("{}: layout check: {detail}", path.display());
                    }
                    Err(e.to_string())
                }
            };
            if let Err(line) = &outcome {
                warn!("{line}; skipped");
                warnings.push(line.clone());
            }
            self.tried.insert(path, outcome.err());
        }
        Ok(warnings)
    }

    pub fn status(&self) -> Vec<PluginStatus> {
        self.by_name
            .values()
            .map(|l| {
                let s = &l.stats;
                let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
                let panics = get(&s.panics);
                let timeouts = get(&s.timeouts);
                PluginStatus {
                    name: l.lib.name().to_string(),
                    version: l.lib.descriptor.version.as_str().to_string(),
                    kind: l.lib.descriptor.kind.as_str().to_string(),
                    description: l.lib.descriptor.description.as_str().to_string(),
                    file: l.file.clone(),
                    abi: plugin_api::ABI_VERSION,
                    max_inspect: l.lib.descriptor.max_inspect,
                    inspects_server: l.lib.descriptor.inspects_server,
                    loaded_ms: l.loaded_ms,
                    calls: get(&s.calls),
                    keys: get(&s.keys),
                    members: get(&s.members),
                    need_more: get(&s.need_more),
                    no_match: get(&s.no_match),
                    malformed: get(&s.malformed),
                    panics,
                    timeouts,
                    state: if s.disabled.load(Ordering::Relaxed) && timeouts > 0 {
                        format!("disabled ({timeouts} call over the time limit)")
                    } else if s.disabled.load(Ordering::Relaxed) {
                        format!("disabled ({panics} panics)")
                    } else {
                        "enabled".into()
                    },
                    last_panic: s.last_panic.lock().expect("panic lock").clone(),
                }
            })
            .collect()
    }
}

/// One plugin instance, for one persistence profile.
pub struct ProfilePlugin {
    pub profile: String,
    pub loaded: Arc<Loaded>,
    instance: plugin_api::Instance,
    panic_limit: u64,
    call_timeout_ms: u64,
}

/// One thread's plugin call in flight, watched by [`watchdog`].
#[derive(Default)]
struct CallSlot {
    /// Unix ms the call started; 0 when none runs.
    since_ms: AtomicU64,
    /// The deadline of the call, ms.
    timeout_ms: AtomicU64,
    plugin: arc_swap::ArcSwapOption<Loaded>,
}

/// Every thread's slot (threads that called a plugin at least once).
static SLOTS: Mutex<Vec<std::sync::Weak<CallSlot>>> = Mutex::new(Vec::new());

thread_local! {
    static SLOT: Arc<CallSlot> = {
        let slot = Arc::new(CallSlot::default());
        let mut all = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&slot));
        drop(all);
        start_watchdog();
        slot
    };
}

/// How often the watchdog looks at the calls in flight.
const WATCH_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

fn start_watchdog() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("plugin-watchdog".into())
            .spawn(|| loop {
                std::thread::sleep(WATCH_EVERY);
                watchdog(now_ms());
            });
        if let Err(e) = spawned {
            error!("cannot start the plugin watchdog: {e}");
        }
    });
}

/// Disables the plugin of every call running past its deadline at `now` (the call itself
/// cannot be stopped: its thread stays busy until the plugin returns, but nothing calls the
/// plugin again).
fn watchdog(now: u64) {
    let slots: Vec<Arc<CallSlot>> = SLOTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(std::sync::Weak::upgrade)
        .collect();
    for slot in slots {
        let since = slot.since_ms.load(Ordering::Acquire);
        if since == 0 || now.saturating_sub(since) <= slot.timeout_ms.load(Ordering::Relaxed) {
            continue;
        }
        let Some(loaded) = slot.plugin.load_full() else {
            continue;
        };
        if !loaded.stats.disabled.swap(true, Ordering::Relaxed) {
            loaded.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            error!(
                plugin = loaded.lib.name(),
                running_ms = now.saturating_sub(since),
                "plugin call over the time limit: plugin disabled, its profiles decide without \
                 it until lbd restarts (the thread in the call stays busy until it returns)"
            );
        }
    }
}

impl std::fmt::Debug for ProfilePlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfilePlugin")
            .field("profile", &self.profile)
            .field("plugin", &self.loaded.lib.name())
            .finish_non_exhaustive()
    }
}

/// What the data path does after asking the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Persist on this key (record key text, see `tables::plugin_key`).
    Key(Vec<u8>),
    /// Send to this member if the pool has it available.
    Member(SocketAddr),
    /// Read until at least this many bytes are there, then ask again.
    NeedMore(usize),
    /// No key: the profile's fallback, else the pool's method.
    NoKey,
}

impl ProfilePlugin {
    /// How much of a connection the plugin sees at most: what it declares, clamped to
    /// [`MAX_INSPECT`].
    pub fn max_inspect(&self) -> usize {
        (self.loaded.lib.descriptor.max_inspect as usize).min(MAX_INSPECT)
    }

    pub fn inspects_server(&self) -> bool {
        self.loaded.lib.descriptor.inspects_server
    }

    pub fn name(&self) -> &str {
        self.loaded.lib.name()
    }

    /// Asks the plugin about `bytes`.
    pub fn inspect(
        &self,
        protocol: Protocol,
        direction: Direction,
        client: SocketAddr,
        vip: SocketAddr,
        bytes: &[u8],
    ) -> Decision {
        let s = &self.loaded.stats;
        if s.disabled.load(Ordering::Relaxed) {
            return Decision::NoKey;
        }
        s.calls.fetch_add(1, Ordering::Relaxed);
        let slot = SLOT.with(Arc::clone);
        slot.plugin.store(Some(self.loaded.clone()));
        slot.timeout_ms
            .store(self.call_timeout_ms, Ordering::Relaxed);
        slot.since_ms.store(now_ms().max(1), Ordering::Release);
        let outcome = self.call(protocol, direction, client, vip, bytes);
        slot.since_ms.store(0, Ordering::Release);
        outcome
    }

    fn call(
        &self,
        protocol: Protocol,
        direction: Direction,
        client: SocketAddr,
        vip: SocketAddr,
        bytes: &[u8],
    ) -> Decision {
        let s = &self.loaded.stats;
        let flow = Flow {
            transport: match protocol {
                Protocol::Tcp => Transport::Tcp,
                Protocol::Udp => Transport::Udp,
            },
            direction,
            client: Endpoint::from(client),
            vip: Endpoint::from(vip),
        };
        match self.instance.inspect(&flow, bytes) {
            Outcome::Key(k) => {
                s.keys.fetch_add(1, Ordering::Relaxed);
                Decision::Key(k.as_bytes().to_vec())
            }
            Outcome::Member(e) => {
                s.members.fetch_add(1, Ordering::Relaxed);
                Decision::Member(SocketAddr::from(e))
            }
            Outcome::NeedMore { min_len } => {
                s.need_more.fetch_add(1, Ordering::Relaxed);
                let want = (min_len as usize).max(bytes.len() + 1);
                if want > self.max_inspect() || protocol == Protocol::Udp {
                    Decision::NoKey
                } else {
                    Decision::NeedMore(want)
                }
            }
            Outcome::NoMatch => {
                s.no_match.fetch_add(1, Ordering::Relaxed);
                Decision::NoKey
            }
            Outcome::Malformed => {
                s.malformed.fetch_add(1, Ordering::Relaxed);
                Decision::NoKey
            }
            Outcome::Panicked => {
                let n = s.panics.fetch_add(1, Ordering::Relaxed) + 1;
                let m = self.instance.last_panic();
                error!(plugin = self.name(), profile = %self.profile, panics = n,
                    "plugin panicked: {m}");
                *s.last_panic.lock().expect("panic lock") = Some(m);
                if n >= self.panic_limit && !s.disabled.swap(true, Ordering::Relaxed) {
                    error!(plugin = self.name(), "plugin disabled after {n} panics: its profiles decide without it until lbd restarts");
                }
                Decision::NoKey
            }
        }
    }
}

/// One instance per plugin-backed persistence profile of `cfg`, from `registry`.
pub fn instantiate(
    cfg: &Config,
    registry: &Registry,
) -> Result<BTreeMap<String, Arc<ProfilePlugin>>, PluginError> {
    let dir = cfg
        .device
        .plugin_dir
        .as_ref()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "(no plugin_dir)".into());
    let mut out = BTreeMap::new();
    for (name, profile) in &cfg.persistence {
        let Some(plugin) = profile.plugin_name() else {
            continue;
        };
        let Some(loaded) = registry.by_name.get(plugin) else {
            let failed: Vec<String> = registry.tried.values().flatten().cloned().collect();
            let why = if failed.is_empty() {
                String::new()
            } else {
                format!(" (files that failed: {})", failed.join("; "))
            };
            return Err(PluginError::Missing {
                profile: name.clone(),
                plugin: plugin.to_string(),
                dir,
                why,
            });
        };
        let instance = loaded
            .lib
            .instantiate(&profile.plugin_config)
            .map_err(|reason| PluginError::Init {
                profile: name.clone(),
                plugin: plugin.to_string(),
                reason,
            })?;
        out.insert(
            name.clone(),
            Arc::new(ProfilePlugin {
                profile: name.clone(),
                loaded: loaded.clone(),
                instance,
                panic_limit: cfg.device.plugin_panic_limit.max(1),
                call_timeout_ms: u64::try_from(cfg.device.plugin_call_timeout.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            }),
        );
    }
    Ok(out)
}

/// Scans the configured plugin directory (if any) into `registry` and instantiates `cfg`'s
/// profiles.
pub fn prepare(
    cfg: &Config,
    registry: &mut Registry,
) -> Result<BTreeMap<String, Arc<ProfilePlugin>>, PluginError> {
    if let Some(dir) = &cfg.device.plugin_dir {
        registry.scan(dir)?;
    }
    instantiate(cfg, registry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lbd-plugins-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    #[test]
    fn a_directory_or_file_others_can_write_is_refused() {
        let d = dir("perm");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Registry::default().scan(&d).unwrap_err().to_string();
        assert!(
            e.contains("lets others write it") && e.contains("777"),
            "{e}"
        );

        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = d.join("evil.so");
        std::fs::write(&f, b"not even a library").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        let mut r = Registry::default();
        let w = r.scan(&d).unwrap();
        assert!(
            w.len() == 1 && w[0].contains("lets others write it"),
            "{w:?}"
        );
        // Refused before it is opened, and looked at again once fixed.
        assert!(r.tried.is_empty());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let w = r.scan(&d).unwrap();
        assert!(
            w.len() == 1 && !w[0].contains("lets others write it"),
            "{w:?}"
        );
        assert_eq!(r.tried.len(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }
}
