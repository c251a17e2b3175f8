//! Small process helpers shared by the lab modules.

use std::process::{Command, Output};

use crate::error::{LabError, Result};

/// Renders a command for error messages.
pub(crate) fn render(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        s.push(' ');
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
            s.push('\'');
            s.push_str(&a.replace('\'', "'\\''"));
            s.push('\'');
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// Runs `cmd` to completion, capturing output; a non-zero exit is an error carrying stderr.
pub(crate) fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| LabError::io(format!("spawning `{}`", render(cmd)), e))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(command_error(cmd, &out))
    }
}

pub(crate) fn command_error(cmd: &Command, out: &Output) -> LabError {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut msg = stderr.trim().to_string();
    if !stdout.trim().is_empty() {
        if !msg.is_empty() {
            msg.push_str(" | stdout: ");
        }
        msg.push_str(&truncate(stdout.trim(), 2000));
    }
    LabError::Command {
        cmd: render(cmd),
        status: out.status.to_string(),
        stderr: msg.replace('\n', " / "),
    }
}

/// Runs `ip ARGS` in the caller's (root) namespace; used only with `-n NS` or `netns` verbs.
pub(crate) fn ip(args: &[&str]) -> Result<Output> {
    run(Command::new("ip").args(args))
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Lower-case base-36 rendering (short, interface-name friendly ids).
pub(crate) fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".into();
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

pub(crate) fn parse_base36(s: &str) -> Option<u64> {
    if s.is_empty()
        || s.len() > 8
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        return None;
    }
    u64::from_str_radix(s, 36).ok()
}

/// Start time (clock ticks since boot, field 22 of `/proc/PID/stat`) of a live, non-zombie
/// process; `None` when it is gone. Used to tell a live lab owner from a recycled pid.
pub(crate) fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state).
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Process state letter from `/proc/PID/stat` (`R`, `S`, `T`, `Z`, ...).
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// True while `pid` exists and is not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    !matches!(proc_state(pid), None | Some('Z') | Some('X'))
}

/// Sends SIGKILL to every process inside network namespace `ns` until none is left (bounded).
pub(crate) fn kill_ns_pids(ns: &str) {
    for _ in 0..50 {
        let Ok(out) = Command::new("ip")
            .args(["netns", "pids", ns])
            .stderr(std::process::Stdio::null())
            .output()
        else {
            return;
        };
        let me = std::process::id();
        let pids: Vec<u32> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|&p| p != me && p > 1)
            .collect();
        let live: Vec<u32> = pids.into_iter().filter(|&p| alive(p)).collect();
        if live.is_empty() {
            return;
        }
        for p in live {
            // SAFETY: plain kill(2) on a pid read from `ip netns pids` for our own namespace.
            unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_roundtrip() {
        for n in [0u64, 1, 35, 36, 4_194_304, 99_999] {
            assert_eq!(parse_base36(&base36(n)), Some(n));
        }
        assert_eq!(base36(4_194_304), "2hwcg");
        assert_eq!(parse_base36("A1"), None);
        assert_eq!(parse_base36(""), None);
    }

    #[test]
    fn own_start_time_is_readable() {
        assert!(proc_start_time(std::process::id()).is_some());
        assert!(matches!(proc_state(std::process::id()), Some('R' | 'S')));
    }

    #[test]
    fn run_error_carries_stderr() {
        let e = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("boom") && m.contains("exit status: 3"), "{m}");
    }
}
