//! The TOML configuration files: bgpd's (`bgpd::config::Config::from_toml`), lbd's
//! (`lbd::config::Config::from_toml`) and lbd's device-group file
//! (`lbd::cluster::config::GroupConfig::from_toml`), on any text: no panic.
//!
//! A configuration of lbd that validates must survive what config sync does with it: as JSON
//! into `from_value` (what a peer receives), and as the TOML `toml::to_string` writes (the
//! file a synced device saves and reads at its next start), each giving it back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn synced<T, E: std::fmt::Display>(
    cfg: &T,
    from_value: impl Fn(serde_json::Value) -> Result<T, E>,
    from_toml: impl Fn(&str) -> Result<T, E>,
) where
    T: serde::Serialize + PartialEq + std::fmt::Debug,
{
    let v = serde_json::to_value(cfg).expect("a configuration serializes to JSON");
    match from_value(v) {
        Ok(back) => assert_eq!(&back, cfg, "JSON round trip"),
        Err(e) => panic!("a valid configuration fails as JSON: {e}\n{cfg:?}"),
    }
    let text = toml::to_string(cfg).expect("a configuration serializes to TOML");
    match from_toml(&text) {
        Ok(back) => assert_eq!(&back, cfg, "TOML round trip through\n{text}"),
        Err(e) => panic!("a valid configuration fails once written as TOML: {e}\n{text}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = bgpd::config::Config::from_toml(text, "fuzz.toml");
    if let Ok(cfg) = lbd::config::Config::from_toml(text, "fuzz.toml") {
        synced(&cfg, lbd::config::Config::from_value, |t| {
            lbd::config::Config::from_toml(t, "synced.toml")
        });
    }
    if let Ok(g) = lbd::cluster::config::GroupConfig::from_toml(text, "fuzz.toml") {
        synced(&g, lbd::cluster::config::GroupConfig::from_value, |t| {
            lbd::cluster::config::GroupConfig::from_toml(t, "synced.toml")
        });
    }
});
