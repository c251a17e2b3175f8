//! lbd's log output (issue 16): `--log-format json` writes one JSON object per line,
//! `--log-format journald` prefixes each line with its syslog priority, and `--log-level`
//! decides what is logged.

mod common;

use common::*;

#[test]
fn json_lines_with_the_level_chosen() {
    let lbd = Lbd::start_with_args("", &["--log-format", "json", "--log-level", "warn"]);
    let _ = lbd.control(&spanlb_control::lbd::Request::Reload);
    drop_and_read(lbd, |text| {
        // `lbd running` is INFO: not logged at warn.
        assert!(!text.contains("lbd running"), "{text}");
        for line in text.lines().filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert!(v["level"] == "WARN" || v["level"] == "ERROR", "{line}");
        }
    });
    let lbd = Lbd::start_with_args("", &["--log-format", "json", "--log-level", "info"]);
    drop_and_read(lbd, |text| {
        let running = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
            .find(|v| v["message"] == "lbd running")
            .unwrap_or_else(|| panic!("no `lbd running` line: {text}"));
        assert_eq!(running["level"], "INFO");
        assert_eq!(running["device"], "test");
        assert!(running["timestamp"].is_string(), "{running}");
    });
}

#[test]
fn journald_lines_carry_their_priority() {
    let lbd = Lbd::start_with_args("", &["--log-format", "journald", "--log-level", "info"]);
    drop_and_read(lbd, |text| {
        let running = text
            .lines()
            .find(|l| l.contains("lbd running"))
            .unwrap_or_else(|| panic!("no `lbd running` line: {text}"));
        assert!(running.starts_with("<6>"), "{running}");
        assert!(
            text.lines().all(|l| l.is_empty() || l.starts_with('<')),
            "{text}"
        );
    });
}

/// Stops lbd and hands its log to `check` (the harness removes the directory on drop).
fn drop_and_read(lbd: Lbd, check: impl FnOnce(&str)) {
    std::thread::sleep(std::time::Duration::from_millis(200));
    let text = lbd.log_text();
    check(&text);
}
