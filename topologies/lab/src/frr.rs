//! FRR (zebra + bgpd) inside a lab namespace, started as docs/design.md, "ECMP and failover" prescribes:
//!
//! ```text
//! ip netns exec NS /usr/lib/frr/zebra -d -N NS -i DIR/zebra.pid --vty_socket DIR -f DIR/frr.conf -z DIR/zserv.api
//! ip netns exec NS /usr/lib/frr/bgpd  -d -N NS -i DIR/bgpd.pid  --vty_socket DIR -f DIR/frr.conf -z DIR/zserv.api
//! ```
//!
//! plus `--log file:DIR/<daemon>.log`. A configuration that mentions `bfd` gets bfdd too
//! (started before bgpd, its control socket `--bfdctl DIR/bfdd.sock`). `DIR` is `<lab dir>/frr-<short>`, owned by `frr:frr`;
//! `-N NS` gives each instance its own pathspace (`/run/frr/NS`), `--vty_socket`/`-z` keep
//! every socket in `DIR`, so instances of concurrent labs never share a path.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{LabError, Result};
use crate::lab::{Inner, Ns};
use crate::util::{self, alive};
use crate::wait::wait_until_dbg;

/// zebra binary.
pub const ZEBRA: &str = "/usr/lib/frr/zebra";
/// bgpd binary.
pub const BGPD: &str = "/usr/lib/frr/bgpd";
/// bfdd binary (started when the configuration mentions `bfd`).
pub const BFDD: &str = "/usr/lib/frr/bfdd";
/// The daemons that may run, in start order.
pub const DAEMONS: [&str; 3] = ["zebra", "bfdd", "bgpd"];
/// Tools an FRR test needs (for [`lab_prereqs!`](crate::lab_prereqs)).
pub const FRR_TOOLS: [&str; 3] = [ZEBRA, BGPD, "vtysh"];
/// How long a daemon may take to answer vtysh after start.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// What the lab needs to kill an FRR instance at teardown.
pub(crate) struct FrrRec {
    dir: PathBuf,
}

impl FrrRec {
    /// SIGKILLs the daemons named by the pid files and waits (bounded) until they are gone.
    pub(crate) fn kill(&self) {
        let pids: Vec<u32> = DAEMONS
            .iter()
            .filter_map(|d| read_pid(&self.dir, d))
            .filter(|&p| is_daemon(p, &self.dir))
            .collect();
        for &p in &pids {
            // SAFETY: kill(2) on a pid whose cmdline names our instance directory.
            unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
        }
        for _ in 0..100 {
            if pids.iter().all(|&p| !alive(p)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn read_pid(dir: &Path, daemon: &str) -> Option<u32> {
    fs::read_to_string(dir.join(format!("{daemon}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Guards against a recycled pid: the process's command line must mention our directory.
fn is_daemon(pid: u32, dir: &Path) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(&*dir.to_string_lossy()))
        .unwrap_or(false)
}

fn frr_ids() -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let out = util::run(std::process::Command::new("id").args([flag, "frr"]))?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| LabError::Invalid("cannot resolve user frr".into()))
    };
    Ok((id("-u")?, id("-g")?))
}

pub(crate) fn start(inner: &Arc<Inner>, ns: &Ns, conf: &str) -> Result<Frr> {
    let dir = ns.lab_dir().join(format!("frr-{}", ns.short()));
    if inner.lock().frr.iter().any(|f| f_dir(f) == dir) {
        return Err(LabError::Invalid(format!(
            "FRR already runs in {}",
            ns.name()
        )));
    }
    fs::create_dir_all(&dir).map_err(|e| LabError::io(format!("creating {}", dir.display()), e))?;
    let conf_path = dir.join("frr.conf");
    fs::write(&conf_path, conf).map_err(|e| LabError::io("writing frr.conf", e))?;
    let (uid, gid) = frr_ids()?;
    for p in [&dir, &conf_path] {
        std::os::unix::fs::chown(p, Some(uid), Some(gid))
            .map_err(|e| LabError::io(format!("chown frr {}", p.display()), e))?;
    }
    inner.lock().frr.push(FrrRec { dir: dir.clone() });
    let frr = Frr {
        ns: ns.clone(),
        dir: dir.clone(),
    };
    let d = dir.to_string_lossy().into_owned();
    let bfd = conf.contains("bfd");
    let daemons = [("zebra", ZEBRA), ("bfdd", BFDD), ("bgpd", BGPD)];
    for (daemon, bin) in daemons.into_iter().filter(|(d, _)| bfd || *d != "bfdd") {
        let pid_file = format!("{d}/{daemon}.pid");
        let log = format!("file:{d}/{daemon}.log");
        let conf = format!("{d}/frr.conf");
        let zserv = format!("{d}/zserv.api");
        let bfdctl = format!("{d}/bfdd.sock");
        let mut args = vec![
            bin,
            "-d",
            "-N",
            ns.name(),
            "-i",
            &pid_file,
            "--vty_socket",
            &d,
            "-f",
            &conf,
            "-z",
            &zserv,
            "--log",
            &log,
        ];
        if daemon == "bfdd" {
            args.extend(["--bfdctl", &bfdctl]);
        }
        ns.exec(&args).map_err(|e| frr.with_log(daemon, e))?;
        wait_until_dbg(
            START_TIMEOUT,
            &format!("{daemon} in {} to answer vtysh", ns.name()),
            || {
                frr.vtysh_daemon(daemon, &["show version"])
                    .map_err(|e| e.to_string())
            },
        )
        .map_err(|e| frr.with_log(daemon, e))?;
    }
    Ok(frr)
}

fn f_dir(f: &FrrRec) -> &Path {
    &f.dir
}

/// A running FRR instance (zebra + bgpd) in a lab namespace. The lab kills it on drop.
#[derive(Debug, Clone)]
pub struct Frr {
    ns: Ns,
    dir: PathBuf,
}

impl Frr {
    /// The namespace it runs in.
    pub fn ns(&self) -> &Ns {
        &self.ns
    }

    /// Its directory (`frr.conf`, pid files, vty sockets, `zebra.log`, `bgpd.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn vtysh_daemon(&self, daemon: &str, cmds: &[&str]) -> Result<String> {
        let d = self.dir.to_string_lossy();
        let mut args = vec!["vtysh", "--vty_socket", &d, "-d", daemon];
        for c in cmds {
            args.extend(["-c", c]);
        }
        self.ns.exec_ok(&args)
    }

    /// One vtysh command (`vtysh --vty_socket DIR -c CMD` inside the namespace), stdout.
    pub fn vtysh(&self, cmd: &str) -> Result<String> {
        self.vtysh_cmds(&[cmd])
    }

    /// Several commands in one vtysh session, e.g.
    /// `["configure terminal", "router bgp 65000", "neighbor 20.1.1.6 shutdown"]`.
    pub fn vtysh_cmds(&self, cmds: &[&str]) -> Result<String> {
        let d = self.dir.to_string_lossy();
        let mut args = vec!["vtysh", "--vty_socket", &d];
        for c in cmds {
            args.extend(["-c", c]);
        }
        self.ns.exec_ok(&args)
    }

    /// A vtysh command whose output is JSON (`show bgp summary json`,
    /// `show ip route 30.1.1.10/32 json`, ...).
    pub fn vtysh_json(&self, cmd: &str) -> Result<serde_json::Value> {
        let out = self.vtysh(cmd)?;
        serde_json::from_str(&out).map_err(|source| LabError::Json {
            cmd: cmd.to_string(),
            source,
            output: util::truncate(out.trim(), 500),
        })
    }

    /// Pid of `zebra` or `bgpd` (from its pid file), e.g. to SIGSTOP the router's bgpd.
    pub fn pid(&self, daemon: &str) -> Result<u32> {
        read_pid(&self.dir, daemon).ok_or_else(|| {
            LabError::Invalid(format!(
                "no pid file for {daemon} in {}",
                self.dir.display()
            ))
        })
    }

    /// A daemon's log (`--log file:`) so far.
    pub fn log(&self, daemon: &str) -> String {
        fs::read(self.dir.join(format!("{daemon}.log")))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn with_log(&self, daemon: &str, e: LabError) -> LabError {
        let log = self.log(daemon);
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        LabError::Invalid(format!(
            "starting {daemon} in {}: {e}; log tail: {}",
            self.ns.name(),
            tail.join(" / ")
        ))
    }
}
