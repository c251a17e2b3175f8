//! Plugin `.so` files for tests, benches and the lab: workspace packages built as cdylibs by
//! cargo, found in cargo's JSON messages.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use crate::error::{LabError, Result};
use crate::util::run;

/// Builds packages `pkgs` of this workspace in one cargo run (cargo profile `profile`, e.g.
/// `"bench"` or `"release"`; the dev profile when `None`) and returns each one's cdylib (its
/// `.so`) by package name, taken from cargo's `compiler-artifact` messages. Runs the cargo
/// that runs the caller (`CARGO`), else `cargo` from `PATH`.
pub fn build_cdylibs(pkgs: &[&str], profile: Option<&str>) -> Result<HashMap<String, PathBuf>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--message-format=json"]);
    if let Some(p) = profile {
        cmd.args(["--profile", p]);
    }
    for p in pkgs {
        cmd.args(["-p", p]);
    }
    let out = run(cmd.current_dir(env!("CARGO_MANIFEST_DIR")))?;
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
        if let Some(so) = msg["filenames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str())
            .find(|f| f.ends_with(".so"))
        {
            found.insert(pkg.to_string(), PathBuf::from(so));
        }
    }
    if let Some(p) = pkgs.iter().find(|p| !found.contains_key(**p)) {
        return Err(LabError::Invalid(format!(
            "no cdylib (.so) for package {p} in cargo's output"
        )));
    }
    Ok(found)
}

/// Builds package `pkg` (dev profile) and returns its cdylib; see [`build_cdylibs`].
pub fn build_cdylib(pkg: &str) -> Result<PathBuf> {
    let mut built = build_cdylibs(&[pkg], None)?;
    Ok(built
        .remove(pkg)
        .expect("build_cdylibs returns every package"))
}
