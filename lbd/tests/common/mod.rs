//! Test harness for lbd integration tests on loopback: runs the real `lbd` binary with a
//! config in a temp dir, talks to its control socket, and provides small blocking TCP servers.
//! Everything is bounded in time and cleaned up on drop (also when a test panics).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use spanlb_control::client::Client;
use spanlb_control::lbd::Request;

/// A free TCP port on 127.0.0.1 (bound and released; good enough between test processes).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` until it returns Some, at most `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A running lbd.
pub struct Lbd {
    child: Child,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Lbd {
    /// Starts lbd with `[device]` (name, control socket) followed by `body`.
    pub fn start(body: &str) -> Lbd {
        Self::start_with(body, None)
    }

    /// The same, with RLIMIT_NOFILE (soft and hard) set to `nofile` for lbd, when given.
    pub fn start_with(body: &str, nofile: Option<u64>) -> Lbd {
        let dir = std::env::temp_dir().join(format!(
            "lbd-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("lbd.sock");
        let config = dir.join("lbd.toml");
        let log = dir.join("lbd.log");
        std::fs::write(&config, Self::config_text(&socket, body)).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lbd"));
        cmd.arg("--config")
            .arg(&config)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            let lim = libc::rlimit {
                rlim_cur: n as libc::rlim_t,
                rlim_max: n as libc::rlim_t,
            };
            // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().unwrap();
        let mut lbd = Lbd {
            child,
            dir,
            config,
            socket,
            log,
        };
        let sock = lbd.socket.clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if UnixStream::connect(&sock).is_ok() {
                break;
            }
            if let Ok(Some(st)) = lbd.child.try_wait() {
                panic!("lbd exited ({st}):\n{}", lbd.log_text());
            }
            if Instant::now() > deadline {
                panic!("lbd did not come up:\n{}", lbd.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        lbd
    }

    fn config_text(socket: &Path, body: &str) -> String {
        format!(
            "[device]\nname = \"test\"\ninternal_address = \"127.0.0.1\"\ncontrol_socket = \"{}\"\n\n{body}",
            socket.display()
        )
    }

    /// Rewrites the config file with a new body (same device section).
    pub fn write_config(&self, body: &str) {
        std::fs::write(&self.config, Self::config_text(&self.socket, body)).unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits at most `timeout` for lbd to exit; its exit status, or None when it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Open file descriptors of the lbd process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One control request; returns the whole response object.
    pub fn control(&self, req: &Request) -> Value {
        let mut c = Client::<Request>::connect(&self.socket).expect("control socket");
        c.set_timeouts(Some(Duration::from_secs(10)), None).unwrap();
        let r = c.call(req).unwrap_or_else(|e| panic!("{req:?}: {e}"));
        serde_json::to_value(r).unwrap()
    }

    /// A control request that must succeed; returns its data.
    pub fn ok(&self, req: &Request) -> Value {
        let r = self.control(req);
        assert_eq!(r["ok"], true, "{req:?} -> {r}");
        r["data"].clone()
    }

    /// The member `addr` of `pool` as `show-pools` returns it.
    pub fn member(&self, pool: &str, addr: &str) -> Value {
        let pools = self.ok(&Request::ShowPools {
            name: Some(pool.into()),
        });
        let pools = pools.as_array().cloned().unwrap_or_default();
        let p = pools
            .iter()
            .find(|p| p["name"] == pool)
            .unwrap_or_else(|| panic!("no pool {pool}"));
        p["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["address"] == addr)
            .cloned()
            .unwrap_or_else(|| panic!("no member {addr}"))
    }

    pub fn virtual_server(&self, name: &str) -> Value {
        let v = self.ok(&Request::ShowVirtualServers {
            name: Some(name.into()),
        });
        v.as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == name).cloned())
            .unwrap_or_else(|| panic!("no virtual server {name}: {v}"))
    }
}

impl Drop for Lbd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- lbd log ---\n{}", self.log_text());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a test server does with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Echo everything; on end of stream, shut down writing and close.
    Echo,
    /// Send its name and a newline, then echo.
    NameThenEcho,
    /// Accept and never read or write (a hung member).
    Hang,
    /// Read a little, then reset.
    ResetAfterRead,
}

/// A blocking TCP server on 127.0.0.1 (one thread per connection), stopped on drop.
pub struct Server {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub accepted: Arc<AtomicU64>,
}

impl Server {
    pub fn start(name: &str, behaviour: Behaviour) -> Server {
        Self::start_on(0, name, behaviour)
    }

    pub fn start_on(port: u16, name: &str, behaviour: Behaviour) -> Server {
        let l = bind_reuse(port);
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (s, a, name) = (stop.clone(), accepted.clone(), name.to_string());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        a.fetch_add(1, Ordering::Relaxed);
                        c.set_nonblocking(false).unwrap();
                        if behaviour == Behaviour::Hang {
                            held.push(c);
                            continue;
                        }
                        let name = name.clone();
                        std::thread::spawn(move || serve(c, &name, behaviour));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server {
            addr,
            stop,
            thread: Some(thread),
            accepted,
        }
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

fn bind_reuse(port: u16) -> TcpListener {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_reuse_address(true).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    s.bind(&addr.into()).unwrap();
    s.listen(1024).unwrap();
    s.into()
}

fn serve(mut c: TcpStream, name: &str, behaviour: Behaviour) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = vec![0u8; 64 * 1024];
    match behaviour {
        Behaviour::ResetAfterRead => {
            let _ = c.read(&mut buf);
            let _ = socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO));
            return;
        }
        Behaviour::NameThenEcho if c.write_all(format!("{name}\n").as_bytes()).is_err() => {
            return;
        }
        _ => {}
    }
    loop {
        match c.read(&mut buf) {
            Ok(0) => {
                let _ = c.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                if c.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects to `addr` with read/write timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// Connects to `addr` with read/write timeouts; a connection lbd accepts and resets at once
/// can fail already here (ECONNRESET).
pub fn try_connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// Reads one line (the member's name with `NameThenEcho`).
pub fn read_line(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while out.len() < 256 {
        match s.read(&mut b) {
            Ok(1) if b[0] == b'\n' => break,
            Ok(1) => out.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Builds package `pkg` and returns its cdylib (`spanlb_lab::build_cdylib`).
pub fn build_cdylib(pkg: &str) -> PathBuf {
    spanlb_lab::build_cdylib(pkg).unwrap_or_else(|e| panic!("{e}"))
}

/// The configuration tables (after the `[device]` keys) of one virtual server `name` on
/// 127.0.0.1:`port` (`protocol` tcp or udp, snat none) with a pool and a persistence profile both
/// named `name`: the pool's `members`, the profile's TOML lines `profile`.
pub fn persistent_vs(
    name: &str,
    protocol: &str,
    port: u16,
    members: &[String],
    profile: &str,
) -> String {
    let list: Vec<String> = members
        .iter()
        .map(|m| format!("{{ address = \"{m}\" }}"))
        .collect();
    format!(
        "\n[virtual_servers.{name}]\ndestination = \"127.0.0.1:{port}\"\nprotocol = \"{protocol}\"\n\
         pool = \"{name}\"\nsnat = \"none\"\npersistence = \"{name}\"\n\n\
         [pools.{name}]\nmembers = [{list}]\n\n[persistence.{name}]\n{profile}\n",
        list = list.join(", ")
    )
}
