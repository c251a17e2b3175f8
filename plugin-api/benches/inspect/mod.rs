//! `inspect` of a shipped plugin on a representative message, in ns per call: called natively
//! (the plugin crate linked in) and through its `.so` loaded with `plugin_api::load` (built here
//! with the bench profile), as lbd calls it; then a line with the difference, the ABI's cost per
//! call for real plugin work.
//!
//! Shared by the `plugin_<name>` bench binaries, one per plugin: every plugin crate exports the
//! plugin's C symbols (`spanlb_plugin_abi_version`, abi_stable's root module), so a binary can
//! link one plugin crate, not two.
//!
//! `cargo bench -p spanlb-plugin-api --bench 'plugin_*' -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::Criterion;
use plugin_api::{Direction, Flow, Instance, Outcome, Plugin, Transport};

use crate::common;

fn flow(transport: Transport, vip: &str) -> Flow {
    Flow {
        transport,
        direction: Direction::ClientToServer,
        client: "192.0.2.1:40000".parse::<SocketAddr>().unwrap().into(),
        vip: vip.parse::<SocketAddr>().unwrap().into(),
    }
}

/// RFC 3261 §24.2 F1-style INVITE (UDP), ~500 bytes.
fn sip_invite() -> Vec<u8> {
    let body =
        "v=0\r\no=bob 2890844526 2890844526 IN IP4 192.0.2.4\r\ns=-\r\nc=IN IP4 192.0.2.4\r\n\
                t=0 0\r\nm=audio 3456 RTP/AVP 0 1 3 99\r\na=rtpmap:0 PCMU/8000\r\n";
    format!(
        "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n\
         Max-Forwards: 70\r\n\
         From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n\
         To: Bob <sip:bob@biloxi.example.com>\r\n\
         Call-ID: 3848276298220188511@atlanta.example.com\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:alice@client.atlanta.example.com;transport=udp>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// MS-RDPBCGR 2.2.1.1 X.224 Connection Request with `Cookie: mstshash=eltons`.
fn rdp_request() -> Vec<u8> {
    let mut rest = vec![0xe0, 0, 0, 0, 0, 0];
    rest.extend_from_slice(b"Cookie: mstshash=eltons\r\n");
    rest.extend_from_slice(&[1, 0, 8, 0, 3, 0, 0, 0]);
    let len = 5 + rest.len();
    let mut out = vec![3, 0, (len >> 8) as u8, len as u8, (len - 5) as u8];
    out.extend_from_slice(&rest);
    out
}

/// A TLS 1.2 ClientHello resuming a session (32-byte session id), with SNI and a few
/// extensions (RFC 5246 §7.4.1.2).
fn client_hello() -> Vec<u8> {
    let mut ext = Vec::new();
    let host = b"shop.example.com";
    // server_name
    ext.extend_from_slice(&[0x00, 0x00]);
    let sni_len = host.len() + 5;
    ext.extend_from_slice(&(sni_len as u16).to_be_bytes());
    ext.extend_from_slice(&((host.len() + 3) as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(host.len() as u16).to_be_bytes());
    ext.extend_from_slice(host);
    // supported_groups, ec_point_formats, signature_algorithms
    ext.extend_from_slice(&[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]);
    ext.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    ext.extend_from_slice(&[0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x08, 0x04]);
    let mut body = vec![0x03, 0x03];
    body.extend((0..32).map(|i| i as u8)); // random
    body.push(32);
    body.extend((0..32).map(|i| 0xa0 + i as u8)); // session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x2f, 0xc0, 0x30]); // cipher suites
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// An HTTP request carrying a session cookie, for `regex:session=(\w+)`.
fn http_request() -> Vec<u8> {
    b"GET /basket HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: bench/1.0\r\n\
      Accept: */*\r\nCookie: lang=en; session=2b7e151628aed2a6abf7158809cf4f3c\r\n\r\n"
        .to_vec()
}

/// A plugin called natively.
pub type Native = Box<dyn Fn(&Flow, &[u8]) -> Outcome>;

/// Plugin `P` called natively, configured with `config`.
pub fn native<P: Plugin>(config: &str) -> Native {
    let p = P::new(config).unwrap();
    Box::new(move |f, b| p.inspect(f, b))
}

struct Case {
    name: &'static str,
    pkg: &'static str,
    config: &'static str,
    flow: Flow,
    bytes: Vec<u8>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "sip",
            pkg: "spanlb-plugin-sip",
            config: "",
            flow: flow(Transport::Udp, "30.1.1.10:5060"),
            bytes: sip_invite(),
        },
        Case {
            name: "msrdp",
            pkg: "spanlb-plugin-msrdp",
            config: "",
            flow: flow(Transport::Tcp, "30.1.1.10:3389"),
            bytes: rdp_request(),
        },
        Case {
            name: "ssl",
            pkg: "spanlb-plugin-ssl",
            config: "",
            flow: flow(Transport::Tcp, "30.1.1.10:443"),
            bytes: client_hello(),
        },
        Case {
            name: "hash",
            pkg: "spanlb-plugin-hash",
            config: r"regex:session=(\w+)",
            flow: flow(Transport::Tcp, "30.1.1.10:80"),
            bytes: http_request(),
        },
    ]
}

/// Benchmarks plugin `name` (of [`cases`]) called natively through `native` (its plugin type's
/// [`native`]) and through its `.so`, then prints the line of the difference.
pub fn run(name: &str, native: fn(&str) -> Native) {
    let out = common::criterion_dir();
    let mut c = Criterion::default()
        .output_directory(&out)
        .configure_from_args();
    let case = cases()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no bench case `{name}`"));
    let built =
        spanlb_lab::build_cdylibs(&[case.pkg], Some("bench")).unwrap_or_else(|e| panic!("{e}"));
    let dir = common::TempDir::new(&format!("bench-plugin-{name}"));
    let so = dir.install(&built[case.pkg], &format!("lib{name}.so"));
    let lib = plugin_api::load(&so).expect("load the plugin .so");
    let loaded: Instance = lib.instantiate(case.config).unwrap();
    let native = native(case.config);
    let want = native(&case.flow, &case.bytes);
    assert!(matches!(want, Outcome::Key(_)), "{name}: {want:?}");
    assert_eq!(loaded.inspect(&case.flow, &case.bytes), want, "{name}");
    let group = format!("plugin_{name}");
    let mut g = c.benchmark_group(&group);
    g.bench_function("native", |b| {
        b.iter(|| native(black_box(&case.flow), black_box(&case.bytes)))
    });
    g.bench_function("so", |b| {
        b.iter(|| loaded.inspect(black_box(&case.flow), black_box(&case.bytes)))
    });
    g.finish();
    c.final_summary();
    if let (Some(n), Some(s)) = (
        common::estimate(&out, &group, "native"),
        common::estimate(&out, &group, "so"),
    ) {
        println!("\ninspect per message: native, through the .so, and the difference");
        println!(
            "  {name:<6} {:>4} B   native {n:>8.1} ns   .so {s:>8.1} ns   {:>+6.1} ns",
            case.bytes.len(),
            s - n
        );
    }
}
