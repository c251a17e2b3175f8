//! Build facts for `build_info` (spanlb_control::http): the rustc version, unless the
//! environment already gives `SPANLB_RUSTC_VERSION`. The git commit is taken from
//! `SPANLB_GIT_COMMIT` when the build sets it (reading .git here would rebuild on every commit).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SPANLB_RUSTC_VERSION");
    println!("cargo:rerun-if-env-changed=SPANLB_GIT_COMMIT");
    if std::env::var_os("SPANLB_RUSTC_VERSION").is_some() {
        return;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if let Ok(out) = Command::new(rustc).arg("--version").output() {
        if out.status.success() {
            // "rustc 1.95.0 (hash date)" -> "1.95.0"
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(v) = text.split_whitespace().nth(1) {
                println!("cargo:rustc-env=SPANLB_RUSTC_VERSION={v}");
            }
        }
    }
}
