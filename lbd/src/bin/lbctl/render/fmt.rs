//! Cells for people: sizes, spans of time, and lenient reads of the daemon's JSON (a missing
//! or odd field shows as `-` or 0, never a panic).

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

pub fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// A string field, or `-`.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

pub fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Bytes for people: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A span of time, compact: `45s`, `12m03s`, `3h07m`, `2d04h`.
pub fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Time until `expiry_ms`, or `expired`.
pub fn until(expiry_ms: u64, now: u64) -> String {
    if expiry_ms > now {
        span(expiry_ms - now)
    } else {
        "expired".into()
    }
}

pub fn list(data: &Value) -> &[Value] {
    data.as_array().map(Vec::as_slice).unwrap_or(&[])
}

pub fn yes_no(v: &Value) -> String {
    if *v == json!(true) { "yes" } else { "no" }.into()
}

/// `2026-11-21T22:34:02Z (5m03s ago)`.
pub fn when(at_ms: u64, now: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(at_ms);
    format!(
        "{} ({} ago)",
        humantime::format_rfc3339_seconds(at),
        span(now.saturating_sub(at_ms))
    )
}
