//! The lab's single error type.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while building, driving or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A file-system or process-spawn operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A command ran but exited unsuccessfully.
    #[error("command `{cmd}` failed ({status}): {stderr}")]
    Command {
        /// The command line, shell-quoted for reading.
        cmd: String,
        /// Exit status as printed by std.
        status: String,
        /// Trimmed stderr (and stdout when stderr was empty).
        stderr: String,
    },
    /// `wait_until` gave up.
    #[error("timed out after {:.1}s waiting for {what}{}", .after.as_secs_f64(), fmt_last(.last))]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        after: Duration,
        /// The last value observed, for `wait_until_dbg`.
        last: Option<String>,
    },
    /// A command's output was not the JSON we expected.
    #[error("`{cmd}` did not return json ({source}): {output}")]
    Json {
        /// The command.
        cmd: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
        /// The first part of the output.
        output: String,
    },
    /// A workspace binary is not built.
    #[error("binary `{name}` not found at {}; build it first (e.g. `cargo build --bins`)", .path.display())]
    MissingBinary {
        /// Binary name.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The caller asked for something the lab cannot do (bad name, too long, ...).
    #[error("invalid lab request: {0}")]
    Invalid(String),
}

fn fmt_last(last: &Option<String>) -> String {
    match last {
        Some(l) => format!("; last observed: {l}"),
        None => String::new(),
    }
}

impl LabError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        LabError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias for the lab.
pub type Result<T, E = LabError> = std::result::Result<T, E>;
