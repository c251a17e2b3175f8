//! How both daemons write their log: `--log-format` and `--log-level`.
//!
//! - `text`: the `tracing` text lines on stderr (timestamps, level, target, fields).
//! - `json`: one JSON object per line (timestamp, level, target, message and fields), for log
//!   shippers.
//! - `journald`: text without timestamps, each line prefixed with its syslog priority in the
//!   `<N>` form journald and syslog read from a service's stderr (sd-daemon(3)): ERROR `<3>`,
//!   WARN `<4>`, INFO `<6>`, DEBUG and TRACE `<7>`. `journalctl -p warning` then works.
//! - `auto` (the default): `journald` when stderr is the journal stream systemd gave the
//!   service (`JOURNAL_STREAM` names stderr's device and inode), else `text`.
//!
//! The level: `--log-level` (a `tracing` filter: `info`, `debug`, `lbd::mirror=debug,info` …)
//! wins; else the `RUST_LOG` environment variable; else `info`.

use std::fmt;
use std::str::FromStr;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log lines are written (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Auto,
    Text,
    Json,
    Journald,
}

impl LogFormat {
    pub const NAMES: [&'static str; 4] = ["auto", "text", "json", "journald"];
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "auto" => Ok(LogFormat::Auto),
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            "journald" => Ok(LogFormat::Journald),
            _ => Err(format!(
                "unknown log format `{s}`, expected one of: {}",
                LogFormat::NAMES.join(", ")
            )),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Auto => "auto",
            LogFormat::Text => "text",
            LogFormat::Json => "json",
            LogFormat::Journald => "journald",
        })
    }
}

/// The syslog priority of a level (RFC 5424 §6.2.1 severities).
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Whether stderr is the journal stream systemd connected the service to.
fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat on fd 2 into a zeroed stat buffer of the right type.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev == dev && st.st_ino == ino
}

/// What `auto` means here and now.
pub fn resolve(format: LogFormat) -> LogFormat {
    match format {
        LogFormat::Auto if stderr_is_journal() => LogFormat::Journald,
        LogFormat::Auto => LogFormat::Text,
        f => f,
    }
}

/// The filter: `level` (the flag), else `RUST_LOG`, else `info`. A bad filter is an error
/// naming it.
pub fn filter(level: Option<&str>) -> Result<EnvFilter, String> {
    match level {
        Some(l) => EnvFilter::try_new(l).map_err(|e| format!("--log-level `{l}`: {e}")),
        None => Ok(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))),
    }
}

/// Prefixes each line of the inner format with its syslog priority.
struct Priority<F>(F);

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// The daemons' `--log-format` and `--log-level` (flattened into each daemon's arguments).
#[derive(clap::Args, Debug, Clone)]
pub struct LogArgs {
    /// Log lines: `auto` (journald priority prefixes when stderr is the journal, else
    /// `text`), `text`, `json` (one object per line) or `journald`.
    #[arg(long = "log-format", value_name = "FORMAT", default_value = "auto",
        value_parser = clap::builder::TypedValueParser::map(
            clap::builder::PossibleValuesParser::new(LogFormat::NAMES),
            |s| s.parse::<LogFormat>().expect("a listed format")))]
    pub format: LogFormat,
    /// What is logged: `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter such as
    /// `info,bgpd::peer=debug` or `info,lbd::proxy=debug` [default: $RUST_LOG, else info]
    #[arg(long = "log-level", value_name = "FILTER")]
    pub level: Option<String>,
}

impl LogArgs {
    /// [`init`] with these arguments.
    pub fn init(&self) -> Result<(), String> {
        init(self.format, self.level.as_deref())
    }
}

/// Sets the process's log output up (once, at start).
pub fn init(format: LogFormat, level: Option<&str>) -> Result<(), String> {
    let filter = filter(level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let res = match resolve(format) {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Journald => builder
            .with_ansi(false)
            .event_format(Priority(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_ansi(false),
            ))
            .try_init(),
        LogFormat::Text | LogFormat::Auto => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
    res.map_err(|e| format!("log set-up: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn formats_parse_and_name_the_valid_ones() {
        for n in LogFormat::NAMES {
            assert_eq!(n.parse::<LogFormat>().unwrap().to_string(), n);
        }
        let e = "syslog".parse::<LogFormat>().unwrap_err();
        assert!(
            e.contains("expected one of: auto, text, json, journald"),
            "{e}"
        );
        assert!(filter(Some("info,lbd::mirror=debug")).is_ok());
        assert!(filter(Some("lbd=loud"))
            .unwrap_err()
            .contains("--log-level"));
    }

    #[test]
    fn auto_is_text_off_the_journal() {
        // The test's stderr is not a journal stream whatever JOURNAL_STREAM says.
        std::env::set_var("JOURNAL_STREAM", "1:2");
        assert_eq!(resolve(LogFormat::Auto), LogFormat::Text);
        assert_eq!(resolve(LogFormat::Json), LogFormat::Json);
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn journald_lines_carry_their_priority() {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .event_format(Priority(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_ansi(false),
            ))
            .with_max_level(Level::DEBUG)
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::error!("e");
            tracing::warn!("w");
            tracing::info!(peer = "x", "i");
            tracing::debug!("d");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let prefixes: Vec<&str> = text.lines().map(|l| &l[..3]).collect();
        assert_eq!(prefixes, ["<3>", "<4>", "<6>", "<7>"], "{text}");
        assert!(
            text.lines().nth(2).unwrap().contains("peer=\"x\""),
            "{text}"
        );
    }
}
