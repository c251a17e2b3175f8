//! Prerequisite checks: skip locally, fail under CI.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a test was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip(pub String);

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// True when `CI` is `true` or `1` (GitHub Actions, GitLab and most CIs set `CI=true`).
pub fn in_ci() -> bool {
    matches!(
        std::env::var("CI")
            .map(|v| v.to_ascii_lowercase())
            .as_deref(),
        Ok("true") | Ok("1")
    )
}

/// Checks that we run as root and that every tool exists (`ip` is always required).
/// A tool with a `/` is a path; otherwise it is looked up in `PATH`.
///
/// * all present → `Ok(())`;
/// * something missing and `CI=true` → **panics**: a missing prerequisite under CI is a failure;
/// * otherwise prints `skipped: <reason>` to stderr and returns `Err(Skip)` so the test can
///   return early (see [`lab_prereqs!`](crate::lab_prereqs)).
pub fn require_root_and_tools(tools: &[&str]) -> Result<(), Skip> {
    check_prereqs(tools, in_ci())
}

/// [`require_root_and_tools`] with the CI decision passed in (testable without touching env).
pub fn check_prereqs(tools: &[&str], ci: bool) -> Result<(), Skip> {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root (network namespaces need CAP_SYS_ADMIN)".to_string());
    }
    for tool in std::iter::once(&"ip").chain(tools) {
        if find_tool(tool).is_none() {
            missing.push(format!("`{tool}`"));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let reason = format!("lab prerequisites missing: {}", missing.join(", "));
    if ci {
        panic!("{reason} (CI=true: a missing prerequisite is a failure, not a skip)");
    }
    eprintln!("skipped: {reason}");
    Err(Skip(reason))
}

/// Resolves a tool name to an executable path.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    if tool.contains('/') {
        return is_executable(Path::new(tool)).then(|| PathBuf::from(tool));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Returns from the calling test when lab prerequisites are missing (and panics under CI).
///
/// ```no_run
/// # fn t() {
/// spanlb_lab::lab_prereqs!(["vtysh", "/usr/lib/frr/bgpd"]);
/// // ... root and the tools are here
/// # }
/// ```
/// A second argument is the value to return, for tests returning `Result`:
/// `lab_prereqs!(["ping"], Ok(()))`.
#[macro_export]
macro_rules! lab_prereqs {
    ([$($tool:expr),* $(,)?]) => {
        if $crate::require_root_and_tools(&[$($tool),*]).is_err() {
            return;
        }
    };
    ([$($tool:expr),* $(,)?], $ret:expr) => {
        if $crate::require_root_and_tools(&[$($tool),*]).is_err() {
            return $ret;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_absolute_paths() {
        assert!(find_tool("sh").is_some());
        assert!(find_tool("/bin/sh").is_some());
        assert!(find_tool("/nonexistent/definitely-not-here").is_none());
        assert!(find_tool("definitely-not-a-tool-xyz").is_none());
    }

    #[test]
    fn missing_tool_skips_outside_ci() {
        let skip = check_prereqs(&["definitely-not-a-tool-xyz"], false).unwrap_err();
        assert!(skip.0.contains("definitely-not-a-tool-xyz"), "{skip}");
    }

    #[test]
    fn missing_tool_panics_under_ci() {
        let r = std::panic::catch_unwind(|| check_prereqs(&["definitely-not-a-tool-xyz"], true));
        let payload = r.expect_err("must panic under CI");
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(
            msg.contains("definitely-not-a-tool-xyz") && msg.contains("CI=true"),
            "{msg}"
        );
    }

    #[test]
    fn present_tools_pass_as_root() {
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(check_prereqs(&["sh"], true), Ok(()));
        } else {
            assert!(check_prereqs(&["sh"], false).is_err());
        }
    }

    fn macro_user(tools_ok: bool) -> Result<u8, ()> {
        if tools_ok {
            crate::lab_prereqs!(["sh"], Err(()));
        } else {
            crate::lab_prereqs!(["definitely-not-a-tool-xyz"], Err(()));
        }
        Ok(1)
    }

    #[test]
    fn macro_returns_early_on_skip() {
        if in_ci() {
            return; // would panic by design
        }
        assert_eq!(macro_user(false), Err(()));
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(macro_user(true), Ok(1));
        }
    }
}
