//! A template spanlb plugin — copy this crate to write your own.
//!
//! It persists on the first line of what the client sends (up to `max` bytes, 256 by default):
//! two connections whose first lines are equal go to the same pool member while the
//! persistence record lives. Configure it in lbd like this:
//!
//! ```toml
//! [persistence.first-line]
//! type = "universal"            # any plugin-backed type, with `plugin` naming this one
//! plugin = "first-line"
//! plugin_config = "max=128"   # handed to `Plugin::new` as is
//! timeout = "5m"
//! ```
//!
//! Build with `cargo build --release -p spanlb-plugin-template`, copy
//! `target/release/libspanlb_plugin_template.so` into lbd's plugin directory, reload lbd, and
//! `lbctl show plugins` lists it.
//!
//! Rules every plugin keeps: `inspect` is pure and fast (no I/O, no blocking, no global state
//! it does not own), returns `NeedMore` only while more bytes could change the answer, and never
//! needs more than `MAX_INSPECT` bytes. A panic is caught by the export macro and counted by lbd,
//! which disables a plugin that keeps panicking.

use plugin_api::{export_plugin, Flow, Key, Outcome, Plugin};

/// The plugin: its configuration, parsed once per persistence profile.
#[derive(Debug)]
pub struct FirstLine {
    max: usize,
}

impl Plugin for FirstLine {
    const NAME: &'static str = "first-line";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "template: persistence on the first line of the request";
    const MAX_INSPECT: u32 = 4096;

    fn new(config: &str) -> Result<Self, String> {
        let mut max = 256;
        for item in config.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split_once('=') {
                Some(("max", v)) => {
                    max = v
                        .parse()
                        .ok()
                        .filter(|m| (1..=Self::MAX_INSPECT as usize).contains(m))
                        .ok_or_else(|| {
                            format!("max must be 1..={}, not `{v}`", Self::MAX_INSPECT)
                        })?
                }
                _ => return Err(format!("unknown setting `{item}` (known: max=N)")),
            }
        }
        Ok(FirstLine { max })
    }

    fn inspect(&self, _flow: &Flow, bytes: &[u8]) -> Outcome {
        let window = &bytes[..bytes.len().min(self.max)];
        match window.iter().position(|b| *b == b'\n') {
            Some(0) => Outcome::NoMatch,
            Some(end) => {
                let line = &window[..end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                Outcome::Key(Key::new(line))
            }
            None if bytes.len() >= self.max => Outcome::NoMatch,
            None => Outcome::NeedMore {
                min_len: bytes.len() as u32 + 1,
            },
        }
    }
}

export_plugin!(FirstLine);

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_api::{Direction, Transport};

    fn flow() -> Flow {
        Flow {
            transport: Transport::Tcp,
            direction: Direction::ClientToServer,
            client: "192.0.2.1:40000"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
            vip: "30.1.1.10:80"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        }
    }

    #[test]
    fn keys_on_the_first_line() {
        let p = FirstLine::new("").unwrap();
        assert_eq!(
            p.inspect(&flow(), b"GET / HTTP/1.0\r\nHost: x\r\n"),
            Outcome::Key(Key::new(b"GET / HTTP/1.0"))
        );
        assert_eq!(
            p.inspect(&flow(), b"GET / HT"),
            Outcome::NeedMore { min_len: 9 }
        );
        assert_eq!(p.inspect(&flow(), b"\n"), Outcome::NoMatch);
        let short = FirstLine::new("max=4").unwrap();
        assert_eq!(short.inspect(&flow(), b"abcdef"), Outcome::NoMatch);
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(FirstLine::new("max=0").unwrap_err().contains("max must be"));
        assert!(FirstLine::new("min=3")
            .unwrap_err()
            .contains("unknown setting"));
    }
}
