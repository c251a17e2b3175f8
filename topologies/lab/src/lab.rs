//! The lab: uniquely named network namespaces, links between them, tracked processes, and a
//! teardown that always runs (also while a test panics).

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};
use crate::frr::FrrRec;
use crate::util::{self, base36, ip, kill_ns_pids, run};

/// Where the lab records which process owns which prefix (tmpfs, like `/run/netns`).
pub const MARKER_DIR: &str = "/run/spanlb-lab";
/// Where `ip netns` keeps namespace names.
const NETNS_DIR: &str = "/run/netns";
/// Env var: keep namespaces, processes and the directory after the lab is dropped.
pub const KEEP_ENV: &str = "SPANLB_LAB_KEEP";
/// Env var: base directory for lab directories (default `/tmp`).
pub const DIR_ENV: &str = "SPANLB_LAB_DIR";
/// Short name of the per-lab switch namespace holding the bridges.
pub const SWITCH: &str = "sw";
/// Longest Linux interface name (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

static COUNTER: AtomicU64 = AtomicU64::new(0);

pub(crate) struct Inner {
    prefix: String,
    test_name: String,
    dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
pub(crate) struct State {
    namespaces: Vec<String>,
    procs: Vec<Arc<Mutex<Child>>>,
    pub(crate) frr: Vec<FrrRec>,
    segments: HashMap<String, SegmentState>,
    torn_down: bool,
}

#[derive(Default, Clone)]
struct SegmentState {
    next_port: usize,
    ports: Vec<(String, String, String)>, // (member ns, member ifname, switch port)
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One lab: a prefix, its namespaces, links, processes and FRR instances, and a directory
/// for configs and logs. Dropping it tears everything down.
pub struct Lab {
    inner: Arc<Inner>,
    keep: AtomicBool,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("prefix", &self.inner.prefix)
            .field("test", &self.inner.test_name)
            .field("dir", &self.inner.dir)
            .finish()
    }
}

fn valid_short(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

pub(crate) fn valid_ifname(s: &str) -> Result<()> {
    if s.is_empty()
        || s.len() > IFNAME_MAX
        || s == "."
        || s == ".."
        || s.bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || !b.is_ascii_graphic())
    {
        return Err(LabError::Invalid(format!(
            "interface name `{s}` must be 1..={IFNAME_MAX} printable chars without '/', ':' or spaces"
        )));
    }
    Ok(())
}

impl Lab {
    /// Creates a lab with a unique short prefix `sl<pid base36>-<counter base36>` and a
    /// directory `/tmp/spanlb-<prefix>-<test_name>` (base overridable with `SPANLB_LAB_DIR`).
    /// First removes namespaces of earlier labs whose owner process is dead.
    pub fn new(test_name: &str) -> Result<Lab> {
        let _ = purge_stale(false);
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("sl{}-{}", base36(pid.into()), base36(n));
        let safe_name: String = test_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(32)
            .collect();
        let base = std::env::var_os(DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| "/tmp".into());
        let dir = base.join(format!("spanlb-{prefix}-{safe_name}"));
        if dir.exists() {
            let _ = fs::remove_dir_all(&dir);
        }
        fs::create_dir_all(&dir)
            .map_err(|e| LabError::io(format!("creating {}", dir.display()), e))?;
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o755));

        // Record ownership *before* any namespace exists, so a crash at any point is recoverable.
        fs::create_dir_all(MARKER_DIR)
            .map_err(|e| LabError::io(format!("creating {MARKER_DIR}"), e))?;
        let start = util::proc_start_time(pid).unwrap_or(0);
        fs::write(
            Path::new(MARKER_DIR).join(&prefix),
            format!("{pid} {start}\n{test_name}\n{}\n", dir.display()),
        )
        .map_err(|e| LabError::io("writing lab marker", e))?;

        eprintln!("lab {prefix} ({test_name}): dir {}", dir.display());
        let keep = std::env::var(KEEP_ENV).is_ok_and(|v| v == "1" || v == "true");
        Ok(Lab {
            inner: Arc::new(Inner {
                prefix,
                test_name: test_name.to_string(),
                dir,
                state: Mutex::new(State::default()),
            }),
            keep: AtomicBool::new(keep),
        })
    }

    /// The unique prefix of this lab's namespace names (e.g. `sl1k3-0`).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The lab's directory (configs, logs). Deleted on a clean drop, kept when the test panicked.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Names of all namespaces this lab created so far.
    pub fn namespaces(&self) -> Vec<String> {
        self.inner.lock().namespaces.clone()
    }

    /// Do not tear down on drop (namespaces, processes and the directory stay; the path and
    /// how to enter are printed). Same as running with `SPANLB_LAB_KEEP=1`. Kept labs are not
    /// removed by the stale sweep of later labs; remove them with [`purge_stale(true)`](purge_stale).
    pub fn keep(&self) {
        self.keep.store(true, Ordering::Relaxed);
    }

    /// Creates namespace `<prefix>-<short>` with `lo` up and IPv6 DAD off (`accept_dad=0`). `short`: 1..=10 chars of `[a-z0-9_]`.
    pub fn ns(&self, short: &str) -> Result<Ns> {
        if !valid_short(short, 10) || short == SWITCH {
            return Err(LabError::Invalid(format!(
                "namespace short name `{short}` must be 1..=10 chars of [a-z0-9_] and not `{SWITCH}`"
            )));
        }
        self.make_ns(short)
    }

    fn make_ns(&self, short: &str) -> Result<Ns> {
        let name = format!("{}-{short}", self.inner.prefix);
        {
            let mut st = self.inner.lock();
            if st.torn_down {
                return Err(LabError::Invalid("lab already torn down".into()));
            }
            if st.namespaces.contains(&name) {
                return Err(LabError::Invalid(format!(
                    "namespace `{name}` already exists"
                )));
            }
            // Track before creating: a half-made namespace is still removed on drop.
            st.namespaces.push(name.clone());
        }
        ip(&["netns", "add", &name])?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        let ns = Ns {
            name,
            short: short.to_string(),
            inner: self.inner.clone(),
        };
        // No IPv6 DAD in the lab: link-local and global addresses are usable the moment a
        // link is up (otherwise the first NDP exchange on a fresh link is lost).
        ns.exec(&[
            "sh",
            "-c",
            "for f in all default; do echo 0 > /proc/sys/net/ipv6/conf/$f/accept_dad; done 2>/dev/null; true",
        ])?;
        Ok(ns)
    }

    /// The per-lab switch namespace (`<prefix>-sw`) holding bridges; created on first use.
    pub fn switch(&self) -> Result<Ns> {
        let name = format!("{}-{SWITCH}", self.inner.prefix);
        if self.inner.lock().namespaces.contains(&name) {
            return Ok(Ns {
                name,
                short: SWITCH.into(),
                inner: self.inner.clone(),
            });
        }
        self.make_ns(SWITCH)
    }

    /// A veth pair: `if_a` inside `a`, `if_b` inside `b`, both up. Created directly inside the
    /// namespaces (`ip -n A link add ... peer ... netns B`), never in the root namespace.
    pub fn veth(&self, (a, if_a): (&Ns, &str), (b, if_b): (&Ns, &str)) -> Result<()> {
        self.veth_macs((a, if_a, None), (b, if_b, None))
    }

    /// Like [`veth`](Self::veth), each end with the MAC address given (`02:00:...`), if any,
    /// from its creation on (before it is up).
    pub fn veth_macs(
        &self,
        (a, if_a, mac_a): (&Ns, &str, Option<&str>),
        (b, if_b, mac_b): (&Ns, &str, Option<&str>),
    ) -> Result<()> {
        valid_ifname(if_a)?;
        valid_ifname(if_b)?;
        let mut args = vec!["-n", &a.name, "link", "add", if_a];
        args.extend(mac_a.iter().flat_map(|m| ["address", *m]));
        args.extend(["type", "veth", "peer", "name", if_b]);
        if a.name != b.name {
            args.extend(["netns", b.name.as_str()]);
        }
        args.extend(mac_b.iter().flat_map(|m| ["address", *m]));
        ip(&args)?;
        a.link_up(if_a)?;
        b.link_up(if_b)
    }

    /// An L2 segment: bridge `br-<name>` in the switch namespace and, per member, a veth whose
    /// member end is `ifname` inside the member namespace (addresses added, links up) and whose
    /// switch end `p<i>-<name>` is a bridge port. Calling it again with the same `name` adds
    /// members to the existing segment. `name`: 1..=10 chars of `[a-z0-9]`.
    pub fn bridge_segment(&self, name: &str, members: &[(&Ns, &str, &[&str])]) -> Result<Segment> {
        if !valid_short(name, 10) || name.contains('_') {
            return Err(LabError::Invalid(format!(
                "segment name `{name}` must be 1..=10 chars of [a-z0-9]"
            )));
        }
        let sw = self.switch()?;
        let bridge = format!("br-{name}");
        let exists = self.inner.lock().segments.contains_key(name);
        if !exists {
            sw.ip(&[
                "link",
                "add",
                &bridge,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
                "mcast_snooping",
                "0",
            ])?;
            sw.link_up(&bridge)?;
            self.inner
                .lock()
                .segments
                .insert(name.to_string(), SegmentState::default());
        }
        for (member, ifname, addrs) in members {
            valid_ifname(ifname)?;
            let idx = {
                let mut st = self.inner.lock();
                let seg = st.segments.get_mut(name).expect("segment exists");
                seg.next_port += 1;
                seg.next_port - 1
            };
            let port = format!("p{idx}-{name}");
            valid_ifname(&port)?;
            sw.ip(&[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                ifname,
                "netns",
                &member.name,
            ])?;
            sw.ip(&["link", "set", &port, "master", &bridge])?;
            sw.link_up(&port)?;
            for a in addrs.iter() {
                member.add_addr(ifname, a)?;
            }
            member.link_up(ifname)?;
            let mut st = self.inner.lock();
            st.segments
                .get_mut(name)
                .expect("segment exists")
                .ports
                .push((member.name.clone(), ifname.to_string(), port));
        }
        let ports = self.inner.lock().segments[name].ports.clone();
        Ok(Segment {
            bridge,
            switch: sw,
            ports,
        })
    }

    /// Starts zebra and bgpd inside `ns` with `frr_conf` (see [`crate::frr`]).
    pub fn frr(&self, ns: &Ns, frr_conf: &str) -> Result<crate::Frr> {
        crate::frr::start(&self.inner, ns, frr_conf)
    }

    fn teardown(&self) {
        let mut st = self.inner.lock();
        if st.torn_down {
            return;
        }
        st.torn_down = true;
        let prefix = &self.inner.prefix;
        if self.keep.load(Ordering::Relaxed) {
            let _ = fs::OpenOptions::new()
                .append(true)
                .open(Path::new(MARKER_DIR).join(prefix))
                .and_then(|mut f| f.write_all(b"keep\n"));
            eprintln!(
                "lab {prefix}: KEPT (SPANLB_LAB_KEEP / keep()); dir {}; namespaces: {}; enter with \
                 `ip netns exec NAME bash`; remove with spanlb_lab::purge_stale(true)",
                self.inner.dir.display(),
                st.namespaces.join(" ")
            );
            return;
        }
        // 1. Our own children: SIGKILL the process group, then reap.
        for p in st.procs.drain(..) {
            let mut c = p.lock().unwrap_or_else(|e| e.into_inner());
            if matches!(c.try_wait(), Ok(None)) {
                let pid = c.id() as libc::pid_t;
                // SAFETY: kill(2)/killpg(2) on our own child and the group it leads.
                unsafe {
                    libc::killpg(pid, libc::SIGKILL);
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            let _ = c.wait();
        }
        // 2. FRR daemons (daemonized, not our children): via their pid files.
        for f in st.frr.drain(..) {
            f.kill();
        }
        // 3. Everything else still inside, then the namespaces themselves.
        for ns in st.namespaces.iter().rev() {
            kill_ns_pids(ns);
            let mut deleted = false;
            for _ in 0..20 {
                let _ = Command::new("ip")
                    .args(["netns", "del", ns])
                    .stderr(Stdio::null())
                    .status();
                if !Path::new(NETNS_DIR).join(ns).exists() {
                    deleted = true;
                    break;
                }
                kill_ns_pids(ns);
                std::thread::sleep(Duration::from_millis(50));
            }
            if !deleted {
                eprintln!("lab {prefix}: could not delete namespace {ns}");
            }
            let _ = fs::remove_dir_all(Path::new("/run/frr").join(ns));
        }
        let all_gone = st
            .namespaces
            .iter()
            .all(|ns| !Path::new(NETNS_DIR).join(ns).exists());
        if all_gone {
            let _ = fs::remove_file(Path::new(MARKER_DIR).join(prefix));
        }
        // 4. The directory: keep the logs of a failed test.
        if std::thread::panicking() {
            eprintln!(
                "lab {prefix} ({}): test panicked, logs kept in {}",
                self.inner.test_name,
                self.inner.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.inner.dir);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Removes namespaces (and the processes inside them) of labs whose owner process is dead.
/// Kept labs (see [`Lab::keep`]) are left alone unless `include_kept`. Returns the namespaces
/// removed. Called by [`Lab::new`].
pub fn purge_stale(include_kept: bool) -> Result<Vec<String>> {
    let mut owners: HashMap<String, (u32, Option<u64>, bool)> = HashMap::new();
    if let Ok(rd) = fs::read_dir(MARKER_DIR) {
        for e in rd.flatten() {
            let prefix = e.file_name().to_string_lossy().into_owned();
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            let mut first = text.lines().next().unwrap_or("").split_whitespace();
            let pid = first
                .next()
                .and_then(|p| p.parse().ok())
                .or_else(|| pid_of_prefix(&prefix));
            let start = first.next().and_then(|s| s.parse().ok());
            let kept = text.lines().any(|l| l == "keep");
            if let Some(pid) = pid {
                owners.insert(prefix, (pid, start, kept));
            }
        }
    }
    let owner_alive = |pid: u32, start: Option<u64>| match util::proc_start_time(pid) {
        None => false,
        Some(s) => !matches!(start, Some(want) if want != 0 && want != s),
    };
    let mut removed = Vec::new();
    let names: Vec<String> = fs::read_dir(NETNS_DIR)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    for ns in names {
        let Some(prefix) = prefix_of_ns(&ns) else {
            continue;
        };
        let (pid, start, kept) = match owners.get(&prefix) {
            Some(o) => *o,
            None => match pid_of_prefix(&prefix) {
                Some(pid) => (pid, None, false),
                None => continue,
            },
        };
        if (kept && !include_kept) || owner_alive(pid, start) {
            continue;
        }
        kill_ns_pids(&ns);
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        let _ = fs::remove_dir_all(Path::new("/run/frr").join(&ns));
        eprintln!("lab: removed stale namespace {ns} (owner pid {pid} is gone)");
        removed.push(ns);
    }
    // Markers without a live owner and without namespaces left.
    let remaining: Vec<String> = fs::read_dir(NETNS_DIR)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    for (prefix, (pid, start, kept)) in owners {
        if (kept && !include_kept) || owner_alive(pid, start) {
            continue;
        }
        if !remaining
            .iter()
            .any(|n| prefix_of_ns(n).as_deref() == Some(prefix.as_str()))
        {
            let _ = fs::remove_file(Path::new(MARKER_DIR).join(&prefix));
        }
    }
    Ok(removed)
}

/// `sl<pid36>-<n36>-<short>` → `sl<pid36>-<n36>`.
pub(crate) fn prefix_of_ns(ns: &str) -> Option<String> {
    let rest = ns.strip_prefix("sl")?;
    let mut parts = rest.splitn(3, '-');
    let pid = parts.next()?;
    let n = parts.next()?;
    let short = parts.next()?;
    util::parse_base36(pid)?;
    util::parse_base36(n)?;
    if short.is_empty() {
        return None;
    }
    Some(format!("sl{pid}-{n}"))
}

/// Owner pid encoded in a prefix `sl<pid36>-<n36>`.
pub fn pid_of_prefix(prefix: &str) -> Option<u32> {
    let (pid, n) = prefix.strip_prefix("sl")?.split_once('-')?;
    util::parse_base36(n)?;
    util::parse_base36(pid).and_then(|p| u32::try_from(p).ok())
}

/// A network namespace of a lab. Cheap to clone; operations fail after the lab is dropped.
#[derive(Clone)]
pub struct Ns {
    name: String,
    short: String,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Ns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Ns {
    /// Full namespace name (`<prefix>-<short>`), as used by `ip netns`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The short name given to [`Lab::ns`].
    pub fn short(&self) -> &str {
        &self.short
    }

    /// The owning lab's directory.
    pub fn lab_dir(&self) -> &Path {
        &self.inner.dir
    }

    /// A `Command` running `args` inside this namespace (`ip netns exec NAME args...`).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// Runs `args` inside the namespace; non-zero exit is an error carrying stderr.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        run(&mut self.command(args))
    }

    /// Like [`exec`](Self::exec), returning stdout as a string.
    pub fn exec_ok(&self, args: &[&str]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.exec(args)?.stdout).into_owned())
    }

    /// Runs `sh -c cmd` inside the namespace, returning stdout.
    pub fn sh(&self, cmd: &str) -> Result<String> {
        self.exec_ok(&["sh", "-c", cmd])
    }

    /// Runs `ip -n NAME args...` (netlink into the namespace, no exec), returning stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        Ok(String::from_utf8_lossy(&ip(&full)?.stdout).into_owned())
    }

    /// `ip addr add CIDR dev IFNAME` (IPv6 addresses get `nodad`, so they are usable at once).
    pub fn add_addr(&self, ifname: &str, cidr: &str) -> Result<()> {
        let mut args = vec!["addr", "add", cidr, "dev", ifname];
        if cidr.contains(':') {
            args.push("nodad");
        }
        self.ip(&args).map(drop)
    }

    /// `ip addr del CIDR dev IFNAME`.
    pub fn del_addr(&self, ifname: &str, cidr: &str) -> Result<()> {
        self.ip(&["addr", "del", cidr, "dev", ifname]).map(drop)
    }

    /// `ip link set IFNAME up`.
    pub fn link_up(&self, ifname: &str) -> Result<()> {
        self.ip(&["link", "set", ifname, "up"]).map(drop)
    }

    /// `ip link set IFNAME down`.
    pub fn link_down(&self, ifname: &str) -> Result<()> {
        self.ip(&["link", "set", ifname, "down"]).map(drop)
    }

    /// `ip route ARGS` inside the namespace, e.g. `ns.route("add default via 20.1.1.1")`.
    pub fn route(&self, args: &str) -> Result<String> {
        let mut full = vec!["route"];
        full.extend(args.split_whitespace());
        self.ip(&full)
    }

    /// Writes a sysctl of this namespace (`net.ipv4.ip_forward`, or a `/`-separated key when
    /// a component contains dots, e.g. `net/ipv4/conf/eth0.10/rp_filter`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let rel = if key.contains('/') {
            key.to_string()
        } else {
            key.replace('.', "/")
        };
        let path = format!("/proc/sys/{}", rel.trim_start_matches('/'));
        self.exec(&[
            "sh",
            "-c",
            "printf '%s\\n' \"$1\" > \"$2\"",
            "sh",
            value,
            &path,
        ])
        .map(drop)
    }

    /// One bounded ping from inside the namespace (one ICMP echo, 1 s for the reply, like
    /// `ping -c 1 -W 1`, but self-contained: no `ping` binary needed); true when answered.
    /// `false` also for an unparsable address or a namespace that is gone.
    pub fn ping(&self, addr: &str) -> bool {
        self.ping_timeout(addr, Duration::from_secs(1))
            .unwrap_or(false)
    }

    /// One ICMP echo with an explicit reply timeout; errors are harness problems (bad address,
    /// namespace gone, socket failure), `Ok(false)` means no reply.
    pub fn ping_timeout(&self, addr: &str, timeout: Duration) -> Result<bool> {
        let ip: std::net::IpAddr = addr
            .parse()
            .map_err(|_| LabError::Invalid(format!("ping: `{addr}` is not an IP address")))?;
        crate::ping::ping_in_ns(&self.name, ip, timeout)
            .map_err(|e| LabError::io(format!("ping {addr} in {}", self.name), e))
    }

    /// Moves the *calling thread* into this namespace (`setns(2)` on `/run/netns/NAME`).
    /// Sockets the thread creates afterwards belong to the namespace (and keep belonging to
    /// it when used from other threads); threads it spawns start inside it. Use it on a
    /// thread of its own (see [`run_in`](Self::run_in)), never on a thread that must stay in
    /// the root namespace.
    pub fn enter_current_thread(&self) -> Result<()> {
        use std::os::fd::AsRawFd;
        let path = Path::new(NETNS_DIR).join(&self.name);
        let f = fs::File::open(&path)
            .map_err(|e| LabError::io(format!("opening {}", path.display()), e))?;
        // SAFETY: setns(2) on an open namespace fd; affects only the calling thread.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(LabError::io(
                format!("setns into {}", self.name),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Runs `f` on a new thread inside this namespace and returns its result (sockets made
    /// in `f` belong to the namespace and can be returned and used anywhere).
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let ns = self.clone();
        std::thread::Builder::new()
            .name(format!("ns-{}", self.short))
            .spawn(move || -> Result<T> {
                ns.enter_current_thread()?;
                Ok(f())
            })
            .map_err(|e| LabError::io("spawning a namespace thread", e))?
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// Spawns a long-running thread inside this namespace (threads it spawns are inside too).
    pub fn spawn_thread<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T>>> {
        let ns = self.clone();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || -> Result<T> {
                ns.enter_current_thread()?;
                Ok(f())
            })
            .map_err(|e| LabError::io("spawning a namespace thread", e))
    }

    /// Spawns `args` inside the namespace with stdout+stderr appended to `log` (relative paths
    /// are inside the lab dir). The process leads its own process group and is SIGKILLed
    /// (whole group) when the lab is dropped. Returns once the process is inside the namespace.
    pub fn spawn(&self, args: &[&str], log: impl AsRef<Path>) -> Result<Proc> {
        let (prog, rest) = args
            .split_first()
            .ok_or_else(|| LabError::Invalid("spawn: empty command".into()))?;
        let mut c = Command::new(prog);
        c.args(rest);
        self.spawn_cmd(c, log)
    }

    /// Like [`spawn`](Self::spawn) for a prepared `Command` (program, args, env and cwd are
    /// carried over; it is run as `ip netns exec NAME program args...`).
    pub fn spawn_cmd(&self, cmd: Command, log: impl AsRef<Path>) -> Result<Proc> {
        if self.inner.lock().torn_down {
            return Err(LabError::Invalid("lab already torn down".into()));
        }
        let log_path = self.inner.dir.join(log.as_ref());
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| LabError::io(format!("opening log {}", log_path.display()), e))?;
        let err_file = file
            .try_clone()
            .map_err(|e| LabError::io("cloning log fd", e))?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            c.current_dir(d);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err_file))
            .process_group(0);
        let rendered = util::render(&c);
        let child = c
            .spawn()
            .map_err(|e| LabError::io(format!("spawning `{rendered}`"), e))?;
        let pid = child.id();
        let child = Arc::new(Mutex::new(child));
        self.inner.lock().procs.push(child.clone());
        // Return only once the child is inside the namespace (or already gone), so callers
        // never act on the `ip` wrapper before its setns(2).
        let want = std::fs::metadata(Path::new(NETNS_DIR).join(&self.name)).map(|m| m.ino());
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(want) = want {
            let inside = fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == want);
            let exited = !matches!(
                child.lock().unwrap_or_else(|e| e.into_inner()).try_wait(),
                Ok(None)
            );
            if inside || exited || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(Proc {
            child,
            pid,
            log_path,
            cmd: rendered,
        })
    }
}

/// A process spawned in a namespace. `ip netns exec` execs the program, so [`pid`](Self::pid)
/// is the program itself (signals reach it directly).
pub struct Proc {
    child: Arc<Mutex<Child>>,
    pid: u32,
    log_path: PathBuf,
    cmd: String,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proc({} `{}`)", self.pid, self.cmd)
    }
}

impl Proc {
    /// Process id (also its process-group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `sig` (e.g. `libc::SIGSTOP`, `libc::SIGCONT`, `libc::SIGTERM`) to the process.
    pub fn signal(&self, sig: i32) -> Result<()> {
        self.kill_with(|p| unsafe { libc::kill(p, sig) })
    }

    /// Sends `sig` to the whole process group (the process and children it did not move).
    pub fn signal_group(&self, sig: i32) -> Result<()> {
        self.kill_with(|p| unsafe { libc::killpg(p, sig) })
    }

    fn kill_with(&self, f: impl FnOnce(libc::pid_t) -> libc::c_int) -> Result<()> {
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(c.try_wait(), Ok(None)) {
            return Err(LabError::Invalid(format!(
                "process {} has exited",
                self.pid
            )));
        }
        // The child is not reaped (checked above, lock held), so the pid cannot be recycled.
        if f(self.pid as libc::pid_t) != 0 {
            return Err(LabError::io(
                format!("signalling {}", self.pid),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Non-blocking: the exit status if the process has exited.
    pub fn try_wait(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_wait()
            .ok()
            .flatten()
    }

    /// True while the process has not exited (a stopped process is running).
    pub fn is_running(&self) -> bool {
        self.try_wait().is_none()
    }

    /// Waits up to `d` for the process to exit.
    pub fn wait_timeout(&self, d: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + d;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20).min(deadline - now));
        }
    }

    /// SIGKILLs the process group and reaps the process.
    pub fn kill(&self) -> Option<ExitStatus> {
        let mut c = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(c.try_wait(), Ok(None)) {
            // SAFETY: our unreaped child and its group.
            unsafe {
                libc::killpg(self.pid as libc::pid_t, libc::SIGKILL);
                libc::kill(self.pid as libc::pid_t, libc::SIGKILL);
            }
        }
        c.wait().ok()
    }

    /// Everything the process wrote so far (stdout and stderr interleaved).
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

/// An L2 segment made by [`Lab::bridge_segment`].
#[derive(Debug, Clone)]
pub struct Segment {
    bridge: String,
    switch: Ns,
    ports: Vec<(String, String, String)>,
}

impl Segment {
    /// Bridge name inside the switch namespace (e.g. for `tcpdump -i`).
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The switch namespace.
    pub fn switch(&self) -> &Ns {
        &self.switch
    }

    /// The switch-side port of `member`'s `ifname`.
    pub fn port(&self, member: &Ns, ifname: &str) -> Option<&str> {
        self.ports
            .iter()
            .find(|(n, i, _)| n == member.name() && i == ifname)
            .map(|(_, _, p)| p.as_str())
    }

    /// Cuts (`up = false`) or restores a member's link at the switch (its own end stays up).
    pub fn set_port(&self, member: &Ns, ifname: &str, up: bool) -> Result<()> {
        let port = self.port(member, ifname).ok_or_else(|| {
            LabError::Invalid(format!("{member:?}/{ifname} is not on {}", self.bridge))
        })?;
        self.switch
            .ip(&["link", "set", port, if up { "up" } else { "down" }])
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_parsing() {
        assert_eq!(prefix_of_ns("sl1k3-0-r1").as_deref(), Some("sl1k3-0"));
        assert_eq!(prefix_of_ns("sl1k3-0-client-a").as_deref(), Some("sl1k3-0"));
        assert_eq!(prefix_of_ns("slave-1"), None);
        assert_eq!(prefix_of_ns("sl1k3-0-"), None);
        assert_eq!(prefix_of_ns("frr1"), None);
        assert_eq!(
            pid_of_prefix("slpa8-3"),
            Some(u32::try_from(util::parse_base36("pa8").unwrap()).unwrap())
        );
        assert_eq!(pid_of_prefix("slave"), None);
    }

    #[test]
    fn ifname_validation() {
        assert!(valid_ifname("eth0").is_ok());
        assert!(valid_ifname("p99-abcdefghij").is_ok());
        assert!(valid_ifname("abcdefghijklmnop").is_err());
        assert!(valid_ifname("a b").is_err());
        assert!(valid_ifname("").is_err());
    }
}
