//! Finding the workspace's own binaries from a test, the demo or a benchmark.

use std::path::{Path, PathBuf};

use crate::error::LabError;

/// The directory cargo put binaries in for the running executable: tests run from
/// `target/<profile>/deps/`, binaries live in `target/<profile>/`. `SPANLB_BIN_DIR`
/// overrides it.
pub fn bin_dir() -> Result<PathBuf, LabError> {
    if let Some(d) = std::env::var_os("SPANLB_BIN_DIR") {
        return Ok(PathBuf::from(d));
    }
    let exe = std::env::current_exe().map_err(|e| LabError::io("current_exe", e))?;
    Ok(bin_dir_for(&exe))
}

pub(crate) fn bin_dir_for(exe: &Path) -> PathBuf {
    let dir = exe.parent().unwrap_or(Path::new("."));
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of the workspace binary `name`, or an error saying where it was looked for.
pub fn try_cargo_bin(name: &str) -> Result<PathBuf, LabError> {
    let path = bin_dir()?.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(LabError::MissingBinary {
            name: name.to_string(),
            path,
        })
    }
}

/// Path of the workspace binary `name`; panics with a clear message when it is not built.
pub fn cargo_bin(name: &str) -> PathBuf {
    match try_cargo_bin(name) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deps_dir_maps_to_profile_dir() {
        assert_eq!(
            bin_dir_for(Path::new("/t/target/debug/deps/lab-0123abcd")),
            PathBuf::from("/t/target/debug")
        );
        assert_eq!(
            bin_dir_for(Path::new("/t/target/release/spanlb-demo")),
            PathBuf::from("/t/target/release")
        );
    }

    #[test]
    fn missing_binary_error_is_clear() {
        let e = try_cargo_bin("no-such-spanlb-binary").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("no-such-spanlb-binary") && msg.contains("build it"),
            "{msg}"
        );
        let p = std::panic::catch_unwind(|| cargo_bin("no-such-spanlb-binary"));
        assert!(p.is_err());
    }
}
