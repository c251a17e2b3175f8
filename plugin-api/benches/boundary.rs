//! What a call through the plugin ABI costs: the template plugin's `inspect` on a ~400-byte
//! HTTP request (and a 16-byte one, where the boundary's fixed cost shows more), three ways —
//!
//! - `native`: `FirstLine::inspect` called directly (linked in, inlinable);
//! - `instantiate_native`: the same plugin behind the ABI's wrapper (sabi_trait object,
//!   `catch_unwind`), linked in, no `.so`;
//! - `so`: the template's `.so` (built here with the bench profile, copied to a temporary
//!   directory) through `plugin_api::load`, as lbd calls it.
//!
//! After criterion's own output it prints each one's time per call and the difference from
//! `native`, the ABI's cost per call. Quick enough for
//! `cargo bench -p spanlb-plugin-api --bench boundary -- --warm-up-time 1 --measurement-time 2`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::path::Path;

use criterion::Criterion;
use plugin_api::{Key, Outcome, Plugin};
use spanlb_plugin_template::FirstLine;

/// The ~400-byte request, and a 16-byte one where the plugin's own work is small, so the
/// boundary's fixed cost shows more.
const GROUPS: [&str; 2] = ["inspect_400B", "inspect_16B"];
const WAYS: [&str; 3] = ["native", "instantiate_native", "so"];

/// A browser-like GET, ~400 bytes; the first line (the key) is 47 bytes.
fn request() -> Vec<u8> {
    let mut r = b"GET /static/app/v2/main.css?rev=8f3a9c HTTP/1.1\r\n\
        Host: shop.example.com\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
        Accept: text/css,*/*;q=0.1\r\n\
        Accept-Language: en-GB,en;q=0.5\r\n\
        Accept-Encoding: gzip, deflate, br\r\n\
        Referer: https://shop.example.com/basket\r\n\
        Cookie: session=2b7e151628aed2a6abf7158809cf4f3c; lang=en\r\n\
        Connection: keep-alive\r\n"
        .to_vec();
    r.extend_from_slice(b"Cache-Control: no-cache\r\n\r\n");
    r
}

fn boundary(c: &mut Criterion, so: &Path) {
    let req = request();
    let flow = common::flow();
    let dir = common::TempDir::new("bench-boundary");
    let lib = plugin_api::load(&dir.install(so, "libfirst.so")).expect("load the template .so");
    let native = FirstLine::new("").unwrap();
    let wrapped = plugin_api::instantiate_native::<FirstLine>("").unwrap();
    let loaded = lib.instantiate("").unwrap();
    let want = Outcome::Key(Key::new(b"GET /static/app/v2/main.css?rev=8f3a9c HTTP/1.1"));
    assert_eq!(native.inspect(&flow, &req), want);
    assert_eq!(wrapped.inspect(&flow, &req), want);
    assert_eq!(loaded.inspect(&flow, &req), want);

    let short = b"GET / HTTP/1.0\r\n".to_vec();
    for (group, bytes) in GROUPS.into_iter().zip([&req, &short]) {
        let mut g = c.benchmark_group(group);
        g.bench_function(WAYS[0], |b| {
            b.iter(|| native.inspect(black_box(&flow), black_box(bytes)))
        });
        g.bench_function(WAYS[1], |b| {
            b.iter(|| wrapped.inspect(black_box(&flow), black_box(bytes)))
        });
        g.bench_function(WAYS[2], |b| {
            b.iter(|| loaded.inspect(black_box(&flow), black_box(bytes)))
        });
        g.finish();
    }
    println!("request: {} bytes", req.len());
}

fn report(out: &Path) {
    for group in GROUPS {
        let Some(native) = common::estimate(out, group, WAYS[0]) else {
            continue; // not measured (`cargo test --benches`, or filtered out)
        };
        println!("\n{group}: time per call, and the ABI's cost (difference from native)");
        for id in WAYS {
            let Some(t) = common::estimate(out, group, id) else {
                continue;
            };
            println!(
                "  {id:<20} {t:>8.2} ns   {:>+7.2} ns   x{:.2}",
                t - native,
                t / native
            );
        }
    }
}

fn main() {
    let out = common::criterion_dir();
    let mut c = Criterion::default()
        .output_directory(&out)
        .configure_from_args();
    // The same profile as this bench (so both sides are optimised alike).
    let so = spanlb_lab::build_cdylibs(&["spanlb-plugin-template"], Some("bench"))
        .unwrap_or_else(|e| panic!("{e}"))
        .remove("spanlb-plugin-template")
        .unwrap();
    boundary(&mut c, &so);
    c.final_summary();
    report(&out);
}
