//! `plugin_api::load` against broken and misbehaving plugin files (the fixtures under
//! `plugins/fixtures/`, built by the test and copied into a temporary directory): each refusal
//! is one exact line, a panicking plugin is contained, and several plugins load side by side.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use plugin_api::{Key, LoadError, Outcome};

use common::{flow, TempDir};

const TEMPLATE: &str = "spanlb-plugin-template";
const NOT_A_PLUGIN: &str = "spanlb-fixture-not-a-plugin";
const ABI_MISMATCH: &str = "spanlb-fixture-abi-mismatch";
const PANICKY: &str = "spanlb-fixture-panicky";
const LAYOUT_MISMATCH: &str = "spanlb-fixture-layout-mismatch";

/// Every fixture's `.so`, built once (one cargo run) for all the tests of this file.
fn fixture(pkg: &str) -> PathBuf {
    static BUILT: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| {
        spanlb_lab::build_cdylibs(
            &[
                TEMPLATE,
                NOT_A_PLUGIN,
                ABI_MISMATCH,
                PANICKY,
                LAYOUT_MISMATCH,
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    })[pkg]
        .clone()
}

/// Not an ELF file at all: 4 KiB of pseudo-random bytes (fixed seed), named like a plugin.
fn garbage() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn load_err(path: &std::path::Path) -> LoadError {
    match plugin_api::load(path) {
        Ok(lib) => panic!("{} loaded as {:?}", path.display(), lib),
        Err(e) => e,
    }
}

#[test]
fn a_library_without_the_abi_symbol_is_not_a_plugin() {
    let dir = TempDir::new("not-a-plugin");
    let p = dir.install(&fixture(NOT_A_PLUGIN), "libx.so");
    let e = load_err(&p);
    assert!(matches!(e, LoadError::NotAPlugin { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "plugin {}/libx.so: not a spanlb plugin (no spanlb_plugin_abi_version symbol)",
            dir.path().display()
        )
    );
}

#[test]
fn another_abi_number_is_refused_in_one_line() {
    let dir = TempDir::new("abi-mismatch");
    let p = dir.install(&fixture(ABI_MISMATCH), "libsip.so");
    let e = load_err(&p);
    assert!(
        matches!(
            e,
            LoadError::AbiMismatch {
                plugin: 999,
                host: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "plugin {}/libsip.so: built for plugin ABI 999, this lbd supports ABI 1",
            dir.path().display()
        )
    );
}

#[test]
fn a_root_module_of_another_layout_is_refused_in_one_line() {
    let dir = TempDir::new("layout-mismatch");
    let p = dir.install(&fixture(LAYOUT_MISMATCH), "liblayout.so");
    let e = load_err(&p);
    let LoadError::Layout { detail, .. } = &e else {
        panic!("{e:?}");
    };
    // The fixture's root module has two fields of plugin-api's three (built under
    // plugin-api's package name, so the fields are what differ).
    assert_eq!(
        e.to_string(),
        format!(
            "plugin {}/liblayout.so: its types do not match this lbd's plugin API \
             (incompatible type size: expected {}, found {})",
            dir.path().display(),
            std::mem::size_of::<plugin_api::PluginMod>(),
            2 * std::mem::size_of::<usize>(),
        )
    );
    // abi_stable's full report is kept for the debug log, and it is long.
    assert!(detail.lines().count() > 10, "{detail}");
    assert!(detail.contains("too many fields"), "{detail}");
}

#[test]
fn a_file_that_is_not_a_library_cannot_be_opened() {
    let dir = TempDir::new("garbage");
    let p = dir.path().join("libgarbage.so");
    std::fs::write(&p, garbage()).unwrap();
    let e = load_err(&p);
    assert!(matches!(e, LoadError::Open { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "plugin {0}: cannot open: {0}: invalid ELF header",
            p.display()
        )
    );
    let missing = dir.path().join("libmissing.so");
    assert_eq!(
        load_err(&missing).to_string(),
        format!(
            "plugin {0}: cannot open: {0}: cannot open shared object file: No such file or directory",
            missing.display()
        )
    );
}

#[test]
fn new_failing_or_panicking_is_an_error_with_its_message() {
    let dir = TempDir::new("panicky-new");
    let lib = plugin_api::load(&dir.install(&fixture(PANICKY), "libpanicky.so")).expect("load");
    assert_eq!(lib.name(), "panicky");
    assert_eq!(
        lib.instantiate("fail").unwrap_err(),
        "panicky: refusing config `fail`"
    );
    let e = lib.instantiate("panic").unwrap_err();
    assert!(e.contains("panicky: new panicked on purpose"), "{e}");
    assert_eq!(e, "panicked: panicky: new panicked on purpose");
    // Still usable afterwards.
    let inst = lib.instantiate("").expect("instantiate");
    assert_eq!(
        inst.inspect(&flow(), b"hello world"),
        Outcome::Key(Key::new(b"hello wo"))
    );
}

#[test]
fn a_panicking_inspect_is_contained_every_time() {
    let dir = TempDir::new("panicky-inspect");
    let lib = plugin_api::load(&dir.install(&fixture(PANICKY), "libpanicky.so")).expect("load");
    // "quiet": the plugin silences its own copy of std's panic hook (1000 panic reports on
    // stderr otherwise; lbd's hook never sees them).
    let inst = lib.instantiate("quiet").expect("instantiate");
    for i in 0..1000 {
        let mut bytes = b"boom".to_vec();
        bytes.resize(4 + i % 20, b'!');
        match inst.inspect(&flow(), &bytes) {
            Outcome::Panicked => {
                assert_eq!(
                    inst.last_panic(),
                    format!("panicky: boom after {} bytes", bytes.len())
                )
            }
            o => panic!("call {i}: {o:?}"),
        }
        // And the next call is answered normally.
        assert_eq!(
            inst.inspect(&flow(), b"fine"),
            Outcome::Key(Key::new(b"fine"))
        );
    }
}

#[test]
fn the_same_file_loads_twice() {
    let dir = TempDir::new("twice");
    let p = dir.install(&fixture(TEMPLATE), "libfirst.so");
    let a = plugin_api::load(&p).expect("first load");
    let b = plugin_api::load(&p).expect("second load");
    assert_eq!((a.name(), b.name()), ("first-line", "first-line"));
    let (ia, ib) = (a.instantiate("").unwrap(), b.instantiate("max=3").unwrap());
    assert_eq!(
        ia.inspect(&flow(), b"GET /\r\n"),
        Outcome::Key(Key::new(b"GET /"))
    );
    assert_eq!(ib.inspect(&flow(), b"GET /\r\n"), Outcome::NoMatch);
}

/// abi_stable's `RootModule::load_from_*` would hand back the first library for the second
/// (one per root-module type); `load` must not.
#[test]
fn two_plugins_from_one_directory_are_two_plugins() {
    let dir = TempDir::new("two");
    let first = dir.install(&fixture(TEMPLATE), "libfirst.so");
    let panicky = dir.install(&fixture(PANICKY), "libpanicky.so");
    let a = plugin_api::load(&first).expect("load first-line");
    let b = plugin_api::load(&panicky).expect("load panicky");
    assert_eq!(a.name(), "first-line");
    assert_eq!(b.name(), "panicky");
    assert_eq!(a.descriptor.max_inspect, 4096);
    assert_eq!(b.descriptor.max_inspect, 64);
    let (ia, ib) = (a.instantiate("").unwrap(), b.instantiate("").unwrap());
    let req = b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(
        ia.inspect(&flow(), req),
        Outcome::Key(Key::new(b"GET /index.html HTTP/1.1"))
    );
    assert_eq!(
        ib.inspect(&flow(), req),
        Outcome::Key(Key::new(b"GET /ind"))
    );
}

/// What lbd sees scanning a directory with good and bad files: each bad one is one line, and
/// the good ones load regardless of what was refused before them.
#[test]
fn a_directory_of_good_and_bad_files() {
    let dir = TempDir::new("scan");
    dir.install(&fixture(TEMPLATE), "liba-first.so");
    dir.install(&fixture(NOT_A_PLUGIN), "libb-not.so");
    dir.install(&fixture(ABI_MISMATCH), "libc-abi.so");
    dir.install(&fixture(LAYOUT_MISMATCH), "libd-layout.so");
    std::fs::write(dir.path().join("libe-garbage.so"), garbage()).unwrap();
    dir.install(&fixture(PANICKY), "libf-panicky.so");
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let results: Vec<Result<&str, String>> = files
        .iter()
        .map(|f| {
            plugin_api::load(f)
                .map(|l| l.name())
                .map_err(|e| e.to_string())
        })
        .collect();
    let loaded: Vec<&str> = results.iter().filter_map(|r| r.clone().ok()).collect();
    assert_eq!(loaded, ["first-line", "panicky"]);
    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    for (e, needle) in errors.iter().zip([
        "libb-not.so: not a spanlb plugin",
        "libc-abi.so: built for plugin ABI 999",
        "libd-layout.so: its types do not match",
        "libe-garbage.so: cannot open",
    ]) {
        assert!(e.contains(needle), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}
