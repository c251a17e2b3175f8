//! Shared by the integration tests and the benches: put copies of plugin cdylibs (built with
//! `spanlb_lab::build_cdylibs`) in a temporary directory, the way an operator installs them.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use plugin_api::{Direction, Flow, Transport};

/// A fresh directory of its own under the system's temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("plugin-api-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the temporary directory");
        TempDir(dir)
    }

    /// Copies `so` into the directory as `name`; returns the copy's path.
    pub fn install(&self, so: &Path, name: &str) -> PathBuf {
        let to = self.0.join(name);
        std::fs::copy(so, &to).expect("copy the .so");
        to
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn flow() -> Flow {
    Flow {
        transport: Transport::Tcp,
        direction: Direction::ClientToServer,
        client: "192.0.2.1:40000".parse::<SocketAddr>().unwrap().into(),
        vip: "30.1.1.10:80".parse::<SocketAddr>().unwrap().into(),
    }
}

/// Where criterion writes its results: the bench runs as TARGET/PROFILE/deps/NAME-HASH, so
/// TARGET/criterion (its usual place), where [`estimate`] reads them back.
pub fn criterion_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(|t| t.join("criterion")))
        .unwrap_or_else(|| "target/criterion".into())
}

/// Criterion's headline estimate (slope, else mean) in ns, from its `estimates.json`.
pub fn estimate(out: &Path, group: &str, id: &str) -> Option<f64> {
    let path = out.join(group).join(id).join("new/estimates.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let pick = |k: &str| v[k]["point_estimate"].as_f64();
    pick("slope").or_else(|| pick("mean"))
}
