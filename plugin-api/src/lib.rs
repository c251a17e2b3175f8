//! The plugin ABI of lbd (docs/architecture.md, "Plugins"): what a protocol/persistence plugin `.so` exports and
//! how lbd loads it. This is the only crate of the workspace that touches `abi_stable`.
//!
//! # For plugin authors
//!
//! Implement [`Plugin`] — a constructor from the profile's configuration text and an
//! [`inspect`](Plugin::inspect) that looks at the first bytes of a flow (or one datagram) and
//! says what it found ([`Outcome`]) — and call [`export_plugin!`] once:
//!
//! ```ignore
//! use plugin_api::{export_plugin, Flow, Key, Outcome, Plugin};
//!
//! pub struct FirstLine;
//! impl Plugin for FirstLine {
//!     const NAME: &'static str = "first-line";
//!     const VERSION: &'static str = env!("CARGO_PKG_VERSION");
//!     const DESCRIPTION: &'static str = "persistence on the first line of the request";
//!     const MAX_INSPECT: u32 = 256;
//!     fn new(_config: &str) -> Result<Self, String> { Ok(FirstLine) }
//!     fn inspect(&self, _flow: &Flow, bytes: &[u8]) -> Outcome {
//!         match bytes.iter().position(|b| *b == b'\n') {
//!             Some(end) => Outcome::Key(Key::new(&bytes[..end])),
//!             None if bytes.len() >= 256 => Outcome::NoMatch,
//!             None => Outcome::NeedMore { min_len: bytes.len() as u32 + 1 },
//!         }
//!     }
//! }
//! export_plugin!(FirstLine);
//! ```
//!
//! with `crate-type = ["cdylib", "rlib"]` in the plugin's `Cargo.toml` (the rlib lets its unit
//! tests call the plugin directly). The macro writes every `extern "C"` entry point and wraps
//! each call into the plugin in `catch_unwind`: a panic becomes [`Outcome::Panicked`] (its
//! message kept for [`Instance::last_panic`]) (a panic that crossed the boundary would end the whole lbd process).
//!
//! # What crosses the boundary
//!
//! Only `#[repr(C)]` values checked by abi_stable's layout check: [`Flow`] and the byte slice
//! in, [`Outcome`] out — no heap ownership on the hot path ([`Key`] is inline, at most
//! [`MAX_KEY`] bytes). The configuration string goes in once at instantiation; an error string
//! comes back once.
//!
//! # For the host (lbd)
//!
//! [`load`] opens a file: first the plain C symbol [`ABI_SYMBOL`] (no symbol: not a plugin; a
//! different number: an ABI mismatch, both versions named, one line), then abi_stable's layout
//! check of the root module ([`PluginMod`]). Libraries are never unloaded (abi_stable leaks
//! them on purpose; unloading Rust cdylibs can crash in thread-local destructors).
//!
//! This crate must not allocate on the `inspect` path nor let a panic cross the boundary.

#![allow(non_local_definitions, non_camel_case_types)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RBox, RResult, RSlice, RStr, RString};
use abi_stable::{declare_root_module_statics, package_version_strings, sabi_trait, StableAbi};

#[doc(hidden)]
pub use abi_stable as __abi_stable;

/// The plugin ABI this crate defines. Bumped whenever anything that crosses the boundary
/// changes; a plugin built for another number is refused with one line naming both.
pub const ABI_VERSION: u32 = 1;
/// The plain C symbol (`extern "C" fn() -> u32`) every plugin exports with [`ABI_VERSION`].
pub const ABI_SYMBOL: &str = "spanlb_plugin_abi_version";
/// Longest key kept inline; longer keys are folded (see [`Key::new`]).
pub const MAX_KEY: usize = 64;
/// Longest panic message carried back.
pub const MAX_MESSAGE: usize = 200;

/// A persistence key, inline (no heap across the boundary).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    len: u8,
    bytes: [u8; MAX_KEY],
}

impl Key {
    /// The key `b`. A key longer than [`MAX_KEY`] is kept as its first 48 bytes followed by a
    /// 128-bit hash of all of it: equal inputs give equal keys, different ones almost surely not.
    pub fn new(b: &[u8]) -> Key {
        let mut k = Key {
            len: 0,
            bytes: [0; MAX_KEY],
        };
        if b.len() <= MAX_KEY {
            k.bytes[..b.len()].copy_from_slice(b);
            k.len = b.len() as u8;
        } else {
            k.bytes[..48].copy_from_slice(&b[..48]);
            k.bytes[48..56].copy_from_slice(&fnv64(b, 0xcbf2_9ce4_8422_2325).to_be_bytes());
            k.bytes[56..64].copy_from_slice(&fnv64(b, 0x6c62_272e_07bb_0142).to_be_bytes());
            k.len = MAX_KEY as u8;
        }
        k
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len).min(MAX_KEY)]
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", String::from_utf8_lossy(self.as_bytes()))
    }
}

fn fnv64(b: &[u8], basis: u64) -> u64 {
    b.iter().fold(basis, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// An IP endpoint, FFI-safe: IPv4 in the first four bytes of `addr`.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Endpoint {
    pub addr: [u8; 16],
    pub port: u16,
    pub v6: bool,
}

impl From<SocketAddr> for Endpoint {
    fn from(a: SocketAddr) -> Endpoint {
        let mut addr = [0u8; 16];
        match a.ip() {
            IpAddr::V4(v4) => addr[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => addr.copy_from_slice(&v6.octets()),
        }
        Endpoint {
            addr,
            port: a.port(),
            v6: a.is_ipv6(),
        }
    }
}

impl From<Endpoint> for SocketAddr {
    fn from(e: Endpoint) -> SocketAddr {
        let ip: IpAddr = if e.v6 {
            Ipv6Addr::from(e.addr).into()
        } else {
            Ipv4Addr::new(e.addr[0], e.addr[1], e.addr[2], e.addr[3]).into()
        };
        SocketAddr::new(ip, e.port)
    }
}

#[repr(u8)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Transport {
    Tcp,
    Udp,
}

/// Which way the inspected bytes travel.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    /// The client's first bytes (TCP) or one client datagram (UDP): choose a member.
    ClientToServer,
    /// The member's first bytes (TCP): learn a key for later flows (e.g. a TLS session id the
    /// server assigned). A key returned here is remembered for the member already chosen.
    ServerToClient,
}

/// What the plugin is told about the flow.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Debug)]
pub struct Flow {
    pub transport: Transport,
    pub direction: Direction,
    pub client: Endpoint,
    /// The virtual server's address.
    pub vip: Endpoint,
}

/// A short text (a panic message), inline.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    len: u8,
    bytes: [u8; MAX_MESSAGE],
}

impl Message {
    /// `s`, cut to [`MAX_MESSAGE`] bytes at a character boundary.
    pub fn new(s: &str) -> Message {
        let mut end = s.len().min(MAX_MESSAGE);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let mut m = Message {
            len: end as u8,
            bytes: [0; MAX_MESSAGE],
        };
        m.bytes[..end].copy_from_slice(&s.as_bytes()[..end]);
        m
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len).min(MAX_MESSAGE)]).unwrap_or("")
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// What [`Plugin::inspect`] found.
#[repr(C, u8)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Outcome {
    /// Persist on this key: the same key goes to the same member while the record lives.
    Key(Key),
    /// Send the flow to this member (e.g. an RDP routing token), if it is in the pool and
    /// available; otherwise lbd falls back to the pool's method.
    Member(Endpoint),
    /// Call again once at least `min_len` bytes are there (TCP only; within the plugin's
    /// [`Plugin::MAX_INSPECT`] and the virtual server's first-data timeout).
    NeedMore { min_len: u32 },
    /// Not something this plugin keys on: the pool's method decides.
    NoMatch,
    /// Bytes the plugin's protocol forbids: the pool's method decides, counted separately.
    Malformed,
    /// The plugin panicked (set by [`export_plugin!`]'s wrappers, never by a plugin itself);
    /// the message is fetched with [`Instance::last_panic`], so that the common answers stay
    /// small (the outcome is returned by value across the boundary on every call).
    Panicked,
}

/// What a plugin is (from its [`Plugin`] constants).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct Descriptor {
    pub name: RStr<'static>,
    pub version: RStr<'static>,
    /// What the plugin is for: `persistence` (the only kind lbd loads today).
    pub kind: RStr<'static>,
    pub description: RStr<'static>,
    pub max_inspect: u32,
    /// lbd also shows it the member's first bytes ([`Direction::ServerToClient`]).
    pub inspects_server: bool,
}

/// The plain Rust trait a plugin implements.
pub trait Plugin: Sized + Send + Sync + 'static {
    /// The name persistence profiles use (`plugin = "NAME"`): unique among loaded plugins.
    const NAME: &'static str;
    const VERSION: &'static str;
    /// What the plugin is for; lbd loads `persistence` plugins.
    const KIND: &'static str = "persistence";
    const DESCRIPTION: &'static str;
    /// The most bytes of a TCP stream this plugin wants before it must decide.
    const MAX_INSPECT: u32;
    /// Whether lbd should also show the plugin the member's first bytes of a TCP connection
    /// ([`Direction::ServerToClient`]), to learn a key the server assigns (a TLS session id).
    /// lbd then waits for the member to speak first, up to the first-data timeout.
    const INSPECTS_SERVER: bool = false;
    /// One instance per persistence profile; `config` is the profile's `plugin_config` text.
    fn new(config: &str) -> Result<Self, String>;
    /// Looks at `bytes` (the stream's first bytes so far, or one datagram). Must not block.
    fn inspect(&self, flow: &Flow, bytes: &[u8]) -> Outcome;
}

/// An instance as lbd holds it (a trait object through abi_stable).
#[sabi_trait]
pub trait InstanceObj: Send + Sync {
    fn inspect(&self, flow: &Flow, bytes: RSlice<'_, u8>) -> Outcome;
    /// The message of the last panic caught in this instance (empty if none).
    fn last_panic(&self) -> RString;
}

/// The boxed instance type crossing the boundary.
pub type InstanceBox = InstanceObj_TO<'static, RBox<()>>;

/// The root module every plugin exports (checked by abi_stable's layout check).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    pub abi_version: extern "C" fn() -> u32,
    pub descriptor: extern "C" fn() -> Descriptor,
    #[sabi(last_prefix_field)]
    pub new: extern "C" fn(config: RStr<'_>) -> RResult<InstanceBox, RString>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "spanlb_plugin";
    const NAME: &'static str = "spanlb_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The panic payload's message.
#[doc(hidden)]
pub fn __panic_message(p: &(dyn std::any::Any + Send)) -> Message {
    let s = p
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("panic without a message");
    Message::new(s)
}

/// Wraps a [`Plugin`] for the boundary: every call caught.
#[doc(hidden)]
pub struct __Wrap<P: Plugin> {
    pub plugin: P,
    pub last_panic: std::sync::Mutex<Message>,
}

impl<P: Plugin> InstanceObj for __Wrap<P> {
    fn inspect(&self, flow: &Flow, bytes: RSlice<'_, u8>) -> Outcome {
        let bytes = bytes.as_slice();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.plugin.inspect(flow, bytes)
        })) {
            Ok(o) => o,
            Err(p) => {
                let m = __panic_message(&*p);
                *self.last_panic.lock().unwrap_or_else(|e| e.into_inner()) = m;
                Outcome::Panicked
            }
        }
    }

    fn last_panic(&self) -> RString {
        let m = *self.last_panic.lock().unwrap_or_else(|e| e.into_inner());
        RString::from(m.as_str())
    }
}

#[doc(hidden)]
pub extern "C" fn __abi_version() -> u32 {
    ABI_VERSION
}

#[doc(hidden)]
pub extern "C" fn __descriptor<P: Plugin>() -> Descriptor {
    Descriptor {
        name: RStr::from_str(P::NAME),
        version: RStr::from_str(P::VERSION),
        kind: RStr::from_str(P::KIND),
        description: RStr::from_str(P::DESCRIPTION),
        max_inspect: P::MAX_INSPECT,
        inspects_server: P::INSPECTS_SERVER,
    }
}

#[doc(hidden)]
pub extern "C" fn __new<P: Plugin>(config: RStr<'_>) -> RResult<InstanceBox, RString> {
    let made = std::panic::catch_unwind(|| P::new(config.as_str()));
    match made {
        Ok(Ok(p)) => RResult::ROk(InstanceObj_TO::from_value(
            __Wrap {
                plugin: p,
                last_panic: std::sync::Mutex::new(Message::new("")),
            },
            abi_stable::sabi_trait::TD_Opaque,
        )),
        Ok(Err(e)) => RResult::RErr(RString::from(e)),
        Err(p) => RResult::RErr(RString::from(format!(
            "panicked: {}",
            __panic_message(&*p).as_str()
        ))),
    }
}

/// The root module of plugin `P`.
#[doc(hidden)]
pub fn __module<P: Plugin>() -> PluginModRef {
    use abi_stable::prefix_type::PrefixTypeTrait;
    PluginMod {
        abi_version: __abi_version,
        descriptor: __descriptor::<P>,
        new: __new::<P>,
    }
    .leak_into_prefix()
}

/// The name of abi_stable's root-module static (checked against abi_stable by a test).
#[doc(hidden)]
#[macro_export]
macro_rules! __root_module_symbol {
    () => {
        "_1as_0lib_1header_0root_bmodule_bloader"
    };
}

/// Exports plugin type `$ty` (which implements [`Plugin`]): the ABI-version symbol and the
/// abi_stable root module, every call into the plugin caught. Use once per plugin crate.
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty) => {
        /// The plugin ABI this library was built for (read before the layout check).
        #[no_mangle]
        pub extern "C" fn spanlb_plugin_abi_version() -> u32 {
            $crate::ABI_VERSION
        }

        fn __spanlb_plugin_root_module() -> $crate::PluginModRef {
            $crate::__module::<$ty>()
        }

        /// abi_stable's library header (what `#[export_root_module]` writes).
        #[export_name = $crate::__root_module_symbol!()]
        pub static __SPANLB_PLUGIN_LIB_HEADER: $crate::__abi_stable::library::LibHeader = {
            extern "C" fn erased() -> $crate::__abi_stable::library::RootModuleResult {
                $crate::__abi_stable::library::__call_root_module_loader(
                    __spanlb_plugin_root_module,
                )
            }
            unsafe {
                $crate::__abi_stable::library::LibHeader::from_constructor::<$crate::PluginModRef>(
                    erased,
                    $crate::__abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };
    };
}

/// Why a plugin file could not be loaded or instantiated: one line each.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin {file}: cannot open: {reason}")]
    Open { file: String, reason: String },
    #[error("plugin {file}: not a spanlb plugin (no {ABI_SYMBOL} symbol)")]
    NotAPlugin { file: String },
    #[error("plugin {file}: built for plugin ABI {plugin}, this lbd supports ABI {host}")]
    AbiMismatch {
        file: String,
        plugin: u32,
        host: u32,
    },
    /// `detail` is abi_stable's full report (long): log it at debug.
    #[error("plugin {file}: its types do not match this lbd's plugin API ({summary})")]
    Layout {
        file: String,
        summary: String,
        detail: String,
    },
}

/// A loaded plugin library.
#[derive(Clone, Copy)]
pub struct Library {
    module: PluginModRef,
    pub descriptor: Descriptor,
}

impl fmt::Debug for Library {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Library")
            .field("descriptor", &self.descriptor)
            .finish_non_exhaustive()
    }
}

/// Loads the plugin at `path` (see the crate documentation). Never unloaded.
pub fn load(path: &Path) -> Result<Library, LoadError> {
    let file = path.display().to_string();
    // SAFETY: loading runs the library's initialisers; plugins are trusted code the operator
    // installed (like any .so), and Rust cdylibs have no load-time side effects of their own.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| LoadError::Open {
        file: file.clone(),
        reason: e.to_string(),
    })?;
    // SAFETY: the symbol, when present, is `extern "C" fn() -> u32` by this crate's contract.
    let version = unsafe {
        match lib.get::<extern "C" fn() -> u32>(ABI_SYMBOL.as_bytes()) {
            Ok(f) => f(),
            Err(_) => return Err(LoadError::NotAPlugin { file }),
        }
    };
    if version != ABI_VERSION {
        return Err(LoadError::AbiMismatch {
            file,
            plugin: version,
            host: ABI_VERSION,
        });
    }
    // Kept open: abi_stable opens the same file again, and neither is ever closed.
    std::mem::forget(lib);
    let layout = |e: abi_stable::library::LibraryError| {
        let detail = e.to_string();
        let summary = layout_summary(&detail);
        LoadError::Layout {
            file: file.clone(),
            summary,
            detail,
        }
    };
    let header = abi_stable::library::lib_header_from_path(path).map_err(layout)?;
    let module = header.init_root_module::<PluginModRef>().map_err(layout)?;
    let descriptor = (module.descriptor())();
    Ok(Library { module, descriptor })
}

/// One line out of abi_stable's report: its first `Error:` with what it expected and found
/// (`incompatible type size: expected 24, found 16`), else its first line. (The report's first
/// line is `Compared <this>:`, which says nothing.)
fn layout_summary(detail: &str) -> String {
    let lines: Vec<&str> = detail.lines().map(str::trim).collect();
    let summary = match lines.iter().position(|l| l.starts_with("Error:")) {
        Some(i) => {
            let what = lines[i].trim_start_matches("Error:").trim();
            let value = |label: &str| {
                let near = &lines[i + 1..lines.len().min(i + 6)];
                let j = near.iter().position(|l| *l == label)?;
                near.get(j + 1)
                    .filter(|v| !v.is_empty() && !v.ends_with(':'))
            };
            match (value("Expected:"), value("Found:")) {
                (Some(e), Some(f)) => format!("{what}: expected {e}, found {f}"),
                _ => what.to_string(),
            }
        }
        None => lines
            .iter()
            .find(|l| !l.is_empty())
            .unwrap_or(&"layout mismatch")
            .to_string(),
    };
    summary.chars().take(160).collect()
}

impl Library {
    pub fn name(&self) -> &'static str {
        self.descriptor.name.as_str()
    }

    /// A new instance for a persistence profile.
    pub fn instantiate(&self, config: &str) -> Result<Instance, String> {
        match (self.module.new())(RStr::from_str(config)) {
            RResult::ROk(obj) => Ok(Instance { obj }),
            RResult::RErr(e) => Err(e.into_string()),
        }
    }
}

/// One plugin instance.
pub struct Instance {
    obj: InstanceBox,
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Instance")
    }
}

impl Instance {
    /// Asks the plugin; a panic inside comes back as [`Outcome::Panicked`].
    #[inline]
    pub fn inspect(&self, flow: &Flow, bytes: &[u8]) -> Outcome {
        self.obj.inspect(flow, RSlice::from_slice(bytes))
    }

    /// The message of the last panic caught in this instance.
    pub fn last_panic(&self) -> String {
        self.obj.last_panic().into_string()
    }
}

/// The same call on a plugin linked in (tests, benchmarks against the `.so`).
pub fn instantiate_native<P: Plugin>(config: &str) -> Result<Instance, String> {
    match __new::<P>(RStr::from_str(config)) {
        RResult::ROk(obj) => Ok(Instance { obj }),
        RResult::RErr(e) => Err(e.into_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_module_symbol_is_abi_stables() {
        assert_eq!(
            __root_module_symbol!(),
            abi_stable::library::ROOT_MODULE_LOADER_NAME
        );
    }

    #[test]
    fn layout_summaries_name_the_first_error() {
        let report = "Compared <this>:\n    --- Type Layout ---\n\n\nError:incompatible type size\n\
                      Expected:\n    24\nFound:\n    16\n\nError:too many fields\nExpected:\n    3\n";
        assert_eq!(
            layout_summary(report),
            "incompatible type size: expected 24, found 16"
        );
        assert_eq!(layout_summary("Error:odd\nFound:\n  x\n"), "odd");
        assert_eq!(
            layout_summary("\n  version 0.2 vs 0.1\n"),
            "version 0.2 vs 0.1"
        );
    }

    #[test]
    fn keys_are_inline_and_long_ones_fold() {
        assert_eq!(Key::new(b"abc").as_bytes(), b"abc");
        let long = vec![b'x'; 500];
        let mut other = long.clone();
        other[400] = b'y';
        assert_eq!(Key::new(&long).as_bytes().len(), MAX_KEY);
        assert_eq!(Key::new(&long), Key::new(&long.clone()));
        assert_ne!(Key::new(&long), Key::new(&other));
        assert_eq!(&Key::new(&long).as_bytes()[..48], &long[..48]);
    }

    #[test]
    fn endpoints_round_trip() {
        for a in ["10.1.1.50:8080", "[2001:db8::1]:443"] {
            let s: SocketAddr = a.parse().unwrap();
            assert_eq!(SocketAddr::from(Endpoint::from(s)), s);
        }
    }

    #[test]
    fn messages_cut_at_char_boundaries() {
        let s = "é".repeat(150);
        let m = Message::new(&s);
        assert!(m.as_str().len() <= MAX_MESSAGE);
        assert!(m.as_str().chars().all(|c| c == 'é'));
    }

    struct Boom;
    impl Plugin for Boom {
        const NAME: &'static str = "boom";
        const VERSION: &'static str = "0";
        const DESCRIPTION: &'static str = "panics on 'x'";
        const MAX_INSPECT: u32 = 16;
        fn new(config: &str) -> Result<Self, String> {
            if config == "bad" {
                return Err("bad config".into());
            }
            Ok(Boom)
        }
        fn inspect(&self, _flow: &Flow, bytes: &[u8]) -> Outcome {
            if bytes.first() == Some(&b'x') {
                panic!("boom at {}", bytes.len());
            }
            Outcome::Key(Key::new(bytes))
        }
    }

    #[test]
    fn native_instances_catch_panics_and_report_init_errors() {
        let flow = Flow {
            transport: Transport::Tcp,
            direction: Direction::ClientToServer,
            client: "10.0.0.1:1000".parse::<SocketAddr>().unwrap().into(),
            vip: "30.1.1.10:80".parse::<SocketAddr>().unwrap().into(),
        };
        let i = instantiate_native::<Boom>("").unwrap();
        assert_eq!(i.inspect(&flow, b"ab"), Outcome::Key(Key::new(b"ab")));
        assert_eq!(i.inspect(&flow, b"xyz"), Outcome::Panicked);
        assert_eq!(i.last_panic(), "boom at 3");
        assert!(
            std::mem::size_of::<Outcome>() <= 72,
            "{}",
            std::mem::size_of::<Outcome>()
        );
        assert_eq!(instantiate_native::<Boom>("bad").unwrap_err(), "bad config");
    }
}
