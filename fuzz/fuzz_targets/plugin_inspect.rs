//! Each persistence plugin's `inspect` through its built `.so`, loaded by lbd's real loader
//! (`lbd::plugins::prepare`: the plugin directory scan, `plugin_api::load` with its ABI and
//! layout checks, one instance per persistence profile) and called through lbd's data-path
//! wrapper (`ProfilePlugin::inspect`) and through the `.so`'s instance directly.
//!
//! The `.so` files are not instrumented (they are built like the ones lbd loads, by
//! `scripts/fuzz.sh`), so coverage comes from the same plugin crate linked in: every input also
//! goes through `plugin_api::instantiate_native`, and the two outcomes must be equal. A plugin
//! panic (caught at the boundary as `Outcome::Panicked`) is a crash here.
//!
//! The plugin directory: `$SPANLB_FUZZ_PLUGIN_DIR`, else `fuzz/target/plugins`.
//!
//! Byte 0: the profile (low bits), UDP (bit 6), server-to-client (bit 7). The rest is payload.
#![no_main]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use lbd::config::{Config, Protocol};
use lbd::plugins::{prepare, ProfilePlugin, Registry};
use libfuzzer_sys::fuzz_target;
use plugin_api::{instantiate_native, Direction, Endpoint, Flow, Instance, Outcome, Transport};

/// (profile, plugin, plugin_config).
const PROFILES: &[(&str, &str, &str)] = &[
    ("sip", "sip", ""),
    ("msrdp", "msrdp", ""),
    ("ssl", "ssl", ""),
    ("hregex", "hash", r"regex:JSESSIONID=([^;\s]+)"),
    ("hbytes", "hash", "bytes:2-12"),
    ("hclient", "hash", "client"),
    ("hregexmax", "hash", r"regex:(?i)user=(\w+);max=64"),
    ("hvip", "hash", "vip"),
];

struct Plugins {
    /// Per profile: lbd's wrapper, the `.so`'s own instance, the linked-in instance.
    profiles: Vec<(Arc<ProfilePlugin>, Instance, Instance)>,
}

fn native(plugin: &str, config: &str) -> Instance {
    match plugin {
        "sip" => instantiate_native::<spanlb_plugin_sip::Sip>(config),
        "msrdp" => instantiate_native::<spanlb_plugin_msrdp::MsRdp>(config),
        "ssl" => instantiate_native::<spanlb_plugin_ssl::Ssl>(config),
        "hash" => instantiate_native::<spanlb_plugin_hash::Hash>(config),
        other => panic!("no plugin {other}"),
    }
    .expect("native instance")
}

fn plugins() -> &'static Plugins {
    static P: OnceLock<Plugins> = OnceLock::new();
    P.get_or_init(|| {
        let dir = std::env::var_os("SPANLB_FUZZ_PLUGIN_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/plugins"))
            });
        let mut toml = format!(
            "[device]\nname = \"A\"\ninternal_address = \"10.1.1.6\"\nplugin_dir = \"{}\"\n",
            dir.display()
        );
        for (name, plugin, config) in PROFILES {
            let kind = if *plugin == "hash" { "hash" } else { plugin };
            toml.push_str(&format!(
                "\n[persistence.{name}]\ntype = \"{kind}\"\nplugin_config = '{config}'\n"
            ));
        }
        let cfg = Config::from_toml(&toml, "plugin_inspect.toml")
            .unwrap_or_else(|e| panic!("harness configuration: {e}\n{toml}"));
        let mut registry = Registry::default();
        let by_profile = prepare(&cfg, &mut registry).unwrap_or_else(|e| {
            panic!(
                "loading the plugins from {} (build them with scripts/fuzz.sh): {e}",
                dir.display()
            )
        });
        let profiles = PROFILES
            .iter()
            .map(|(name, plugin, config)| {
                let pp = by_profile[*name].clone();
                let so = pp.loaded.lib.instantiate(config).expect(".so instance");
                (pp, so, native(plugin, config))
            })
            .collect();
        Plugins { profiles }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let p = plugins();
    let (pp, so, linked) = &p.profiles[usize::from(sel & 0x3f) % p.profiles.len()];
    let udp = sel & 0x40 != 0;
    let direction = if sel & 0x80 != 0 {
        Direction::ServerToClient
    } else {
        Direction::ClientToServer
    };
    let client: SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let vip: SocketAddr = "198.51.100.10:5060".parse().unwrap();
    let flow = Flow {
        transport: if udp { Transport::Udp } else { Transport::Tcp },
        direction,
        client: Endpoint::from(client),
        vip: Endpoint::from(vip),
    };
    let from_so = so.inspect(&flow, bytes);
    let from_linked = linked.inspect(&flow, bytes);
    if from_so == Outcome::Panicked {
        panic!("{} panicked in its .so: {}", pp.name(), so.last_panic());
    }
    if from_linked == Outcome::Panicked {
        panic!("{} panicked: {}", pp.name(), linked.last_panic());
    }
    assert_eq!(
        from_so,
        from_linked,
        "{}: the .so and the linked-in plugin disagree",
        pp.name()
    );
    let protocol = if udp { Protocol::Udp } else { Protocol::Tcp };
    let _ = pp.inspect(protocol, direction, client, vip, bytes);
});
