//! Shared by the integration tests and the benches: build plugin cdylibs with cargo and
//! put copies of them in a temporary directory, the way an operator installs them.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use plugin_api::{Direction, Flow, Transport};

/// Builds packages `pkgs` (one cargo run; with cargo profile `profile`, the dev profile when
/// `None`) and returns each one's cdylib, taken from cargo's `compiler-artifact` JSON messages,
/// by package name.
pub fn build_cdylibs(pkgs: &[&str], profile: Option<&str>) -> HashMap<String, PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--message-format=json"]);
    if let Some(p) = profile {
        cmd.args(["--profile", p]);
    }
    for p in pkgs {
        cmd.args(["-p", p]);
    }
    let out = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut found = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let is_cdylib = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "cdylib"));
        let Some(pkg) = pkgs
            .iter()
            .find(|p| is_cdylib && msg["target"]["name"] == p.replace('-', "_"))
        else {
            continue;
        };
        let so = msg["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".so"))
            .expect("a .so among the cdylib's files");
        found.insert(pkg.to_string(), PathBuf::from(so));
    }
    for p in pkgs {
        assert!(
            found.contains_key(*p),
            "no cdylib for {p} in cargo's output"
        );
    }
    found
}

/// Builds package `pkg` (debug) and returns its cdylib.
pub fn build_cdylib(pkg: &str) -> PathBuf {
    build_cdylibs(&[pkg], None).remove(pkg).unwrap()
}

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
