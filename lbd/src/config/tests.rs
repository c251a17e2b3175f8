use super::*;

pub(crate) const FULL: &str = r#"
[device]
name = "A"
internal_address = "10.1.1.6"
internal_address_v6 = "fd00:10::6"
control_socket = "/tmp/lbd.sock"
metrics = "127.0.0.1:9102"
workers = 2

[[virtual_addresses]]
address = "30.1.1.10"
advertise = "all"

[virtual_servers.web]
destination = "30.1.1.10:80"
pool = "web"
connection_limit = 1000
idle_timeout = "2m"
persistence = "src"

[virtual_servers.dns]
destination = "30.1.1.10:53"
protocol = "udp"
pool = "dns"
snat = "10.1.1.9"

[virtual_servers.web6]
destination = "[fd00:30::10]:80"
pool = "web6"
snat = "none"

[pools.web]
method = "ratio"
monitors = ["http"]
members = [
  { address = "10.1.1.50:80", ratio = 3 },
  { address = "10.1.1.51:80", state = "disabled" },
  { address = "10.1.1.52:80", state = "forced-offline" },
]

[pools.dns]
method = "maglev"
monitors = ["dns"]
members = [{ address = "10.1.1.50:53" }]

[pools.web6]
members = [{ address = "[fd00:10::50]:80" }]

[monitors.http]
type = "http"
interval = "1s"
timeout = "500ms"
send = "GET /health HTTP/1.0\r\n\r\n"
expect_status = 200
expect_body = "ok"
up_count = 2
down_count = 2

[monitors.dns]
type = "udp"
send = "ping"
expect = "pong"

[persistence.src]
type = "source-address"
mask = 24
timeout = "10m"
"#;

fn err(text: &str) -> String {
    Config::from_toml(text, "lbd.toml").unwrap_err().to_string()
}

/// FULL with `from` replaced by `to` (which must occur).
fn with(from: &str, to: &str) -> String {
    assert!(FULL.contains(from), "{from}");
    FULL.replacen(from, to, 1)
}

#[test]
fn device_group_settings_need_both_interfaces() {
    let base = "workers = 2\ndevice_group = \"/etc/spanlb/device-group.toml\"";
    let e = err(&with("workers = 2", base));
    assert_eq!(
        e,
        "lbd.toml: key `device.external_interface`: is required with device.device_group"
    );
    let e = err(&with(
        "workers = 2",
        &format!("{base}\nexternal_interface = \"ext0\""),
    ));
    assert!(e.contains("key `device.internal_interface`"), "{e}");
    let e = err(&with(
        "workers = 2",
        &format!("{base}\nexternal_interface = \"ext 0\"\ninternal_interface = \"int0\""),
    ));
    assert!(e.contains("`ext 0` is not an interface name"), "{e}");
    let ok = with(
        "workers = 2",
        &format!("{base}\nexternal_interface = \"ext0\"\ninternal_interface = \"int0\"\nbgpd_socket = \"/run/b.sock\""),
    );
    let c = Config::from_toml(&ok, "lbd.toml").unwrap();
    assert_eq!(c.device.vip_interface, "lo");
    assert_eq!(c.device.bgpd_socket, Some(PathBuf::from("/run/b.sock")));
}

#[test]
fn full_example_parses_with_defaults_filled_in() {
    let c = Config::from_toml(FULL, "lbd.toml").unwrap();
    assert_eq!(c.device.name, "A");
    assert_eq!(c.device.workers, Some(2));
    let web = &c.virtual_servers["web"];
    assert_eq!(web.protocol, Protocol::Tcp);
    assert_eq!(web.snat, Snat::Automap);
    assert_eq!(web.idle_timeout(), Duration::from_secs(120));
    assert_eq!(web.connect_timeout, Duration::from_secs(5));
    assert!(web.enabled && !web.mirror);
    let dns = &c.virtual_servers["dns"];
    assert_eq!(dns.protocol, Protocol::Udp);
    assert_eq!(dns.idle_timeout(), Duration::from_secs(60));
    assert_eq!(dns.snat, Snat::Explicit("10.1.1.9".parse().unwrap()));
    assert_eq!(c.virtual_servers["web6"].snat, Snat::None);
    let pool = &c.pools["web"];
    assert_eq!(pool.method, Method::Ratio);
    assert_eq!(pool.members[0].ratio, 3);
    assert_eq!(pool.members[1].state, AdminState::Disabled);
    assert_eq!(pool.members[2].state, AdminState::ForcedOffline);
    assert_eq!(c.pools["web6"].method, Method::RoundRobin);
    let spec = c.monitors["http"].spec("http");
    assert_eq!(spec.timeout, Duration::from_millis(500));
    assert_eq!(
        spec.kind,
        ProbeKind::Http {
            request: b"GET /health HTTP/1.0\r\n\r\n".to_vec(),
            expect_status: 200,
            expect_body: Some(b"ok".to_vec()),
        }
    );
    let dns_mon = c.monitors["dns"].spec("dns");
    assert_eq!(dns_mon.interval, Duration::from_secs(5));
    assert_eq!(dns_mon.timeout, Duration::from_secs(5));
    assert_eq!(dns_mon.down_count, 3);
    let p = &c.persistence["src"];
    assert_eq!((p.mask, p.mask_v6), (24, 128));
    assert_eq!(p.timeout, Duration::from_secs(600));
    // 30.1.1.10 listed with "all"; fd00:30::10 implicit with the default policy.
    let vas = c.effective_virtual_addresses();
    assert_eq!(vas.len(), 2);
    assert_eq!(vas[0].advertise, Advertise::All);
    assert_eq!(vas[1].address, "fd00:30::10".parse::<IpAddr>().unwrap());
    assert_eq!(vas[1].advertise, Advertise::Any);
    assert_eq!(
        c.snat_source(web, "10.1.1.50".parse().unwrap()),
        Some("10.1.1.6".parse().unwrap())
    );
    assert_eq!(
        c.snat_source(web, "fd00:10::50".parse().unwrap()),
        Some("fd00:10::6".parse().unwrap())
    );
}

#[test]
fn names_are_kept_as_written() {
    let c = Config::from_toml(
        &FULL
            .replace("[virtual_servers.web]", "[virtual_servers.Web_Front]")
            .replace("[pools.web]", "[pools.WebPool]")
            .replace("pool = \"web\"", "pool = \"WebPool\""),
        "x",
    )
    .unwrap();
    assert!(c.virtual_servers.contains_key("Web_Front"));
    assert_eq!(c.virtual_servers["Web_Front"].pool, "WebPool");
    assert!(c.pools.contains_key("WebPool"));
    // A reference must be written as the name is.
    let e = err(&FULL.replace("[pools.web]", "[pools.WebPool]"));
    assert!(
        e.contains("key `virtual_servers.web.pool`: no pool named `web`"),
        "{e}"
    );
}

#[test]
fn names_that_differ_only_in_case_are_refused_naming_both() {
    // `[pools.web]` and `[pools.WEB]`: two pools, not one with a member gone.
    let e = err(&with(
        "[pools.web6]",
        "[pools.WEB]\nmembers = [{ address = \"10.1.1.60:80\" }]\n\n[pools.web6]",
    ));
    assert_eq!(
        e,
        "lbd.toml: key `pools.web`: `web` and `WEB` differ only in case: give them names \
         that differ otherwise"
    );
    for (from, to, key) in [
        (
            "[virtual_servers.web6]",
            "[virtual_servers.Web]\ndestination = \"30.1.1.10:81\"\npool = \"web\"\n\n[virtual_servers.web6]",
            "virtual_servers",
        ),
        (
            "[monitors.dns]",
            "[monitors.HTTP]\ntype = \"tcp\"\n\n[monitors.dns]",
            "monitors",
        ),
        (
            "[persistence.src]",
            "[persistence.SRC]\ntype = \"source-address\"\n\n[persistence.src]",
            "persistence",
        ),
    ] {
        let e = err(&with(from, to));
        assert!(
            e.contains(&format!("key `{key}.")) && e.contains("differ only in case"),
            "{e}"
        );
    }
}

#[test]
fn durations_take_a_plain_number_of_seconds() {
    let c = Config::from_toml(&with("idle_timeout = \"2m\"", "idle_timeout = 300"), "x").unwrap();
    assert_eq!(
        c.virtual_servers["web"].idle_timeout,
        Some(Duration::from_secs(300))
    );
    let c = Config::from_toml(&with("interval = \"1s\"", "interval = 2"), "x").unwrap();
    assert_eq!(c.monitors["http"].interval, Duration::from_secs(2));
    let e = err(&with("idle_timeout = \"2m\"", "idle_timeout = \"300\""));
    assert!(
        e.starts_with(
            "lbd.toml: key `virtual_servers.web.idle_timeout`: \"300\" is not a duration"
        ) && e.contains("a number of seconds (300) or a string with a unit (\"300s\""),
        "{e}"
    );
}

#[test]
fn an_unknown_method_lists_the_methods() {
    let e = err(&with("method = \"ratio\"", "method = \"leastconn\""));
    assert!(
        e.starts_with(
            "lbd.toml: key `pools.web.method`: unknown value \"leastconn\", expected one of: \
             round-robin, "
        ) && e.contains("least-connections"),
        "{e}"
    );
}

#[test]
fn a_missing_section_is_named() {
    assert_eq!(err(""), "lbd.toml: missing section [device]");
    assert_eq!(
        err("[device]\n"),
        "lbd.toml: key `device.name`: is required"
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    let e = err(&with(
        "pool = \"web\"\n",
        "pool = \"web\"\nconection_limit = 5\n",
    ));
    assert!(e.starts_with("lbd.toml: key `virtual_servers.web"), "{e}");
    assert!(e.contains("conection_limit"), "{e}");
    let e = err(&with("ratio = 3", "ratio = 3, weight = 2"));
    assert!(e.contains("pools.web.members"), "{e}");
    assert!(e.contains("weight"), "{e}");
}

#[test]
fn bad_values_name_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "method = \"ratio\"",
            "method = \"fastest\"",
            "pools.web.method",
        ),
        (
            "idle_timeout = \"2m\"",
            "idle_timeout = \"soon\"",
            "virtual_servers.web.idle_timeout",
        ),
        (
            "state = \"disabled\"",
            "state = \"off\"",
            "pools.web.members[1].state",
        ),
        (
            "snat = \"10.1.1.9\"",
            "snat = \"auto\"",
            "virtual_servers.dns.snat",
        ),
        (
            "destination = \"30.1.1.10:80\"",
            "destination = \"30.1.1.10\"",
            "virtual_servers.web.destination",
        ),
        (
            "protocol = \"udp\"",
            "protocol = \"sctp\"",
            "virtual_servers.dns.protocol",
        ),
        ("type = \"http\"", "type = \"icmp\"", "monitors.http.type"),
    ];
    for (from, to, key) in cases {
        let e = err(&with(from, to));
        assert!(
            e.starts_with(&format!("lbd.toml: key `{key}`")),
            "{to}: {e}"
        );
    }
}

#[test]
fn validation_messages() {
    let cases: &[(&str, &str, &str)] = &[
        ("pool = \"web\"\nconnection_limit", "pool = \"nope\"\nconnection_limit",
         "key `virtual_servers.web.pool`: no pool named `nope`"),
        ("persistence = \"src\"", "persistence = \"sticky\"",
         "key `virtual_servers.web.persistence`: no persistence profile named `sticky`"),
        ("monitors = [\"http\"]", "monitors = [\"http\", \"icmp\"]",
         "key `pools.web.monitors[1]`: no monitor named `icmp`"),
        ("ratio = 3", "ratio = 0", "key `pools.web.members[0].ratio`: must be 1-100"),
        ("method = \"ratio\"", "method = \"ratio\"\npassive_failures = 5\npassive_retry = \"0s\"",
         "key `pools.web.passive_retry`: must not be 0 with passive_failures"),
        ("10.1.1.51:80\", state", "10.1.1.50:80\", state",
         "key `pools.web.members[1].address`: 10.1.1.50:80 is a member twice"),
        ("10.1.1.51:80", "10.1.1.51:0", "key `pools.web.members[1].address`: port 0"),
        ("destination = \"30.1.1.10:53\"", "destination = \"30.1.1.10:80\"\nprotocol2 = 1", "protocol2"),
        ("mask = 24", "mask = 33", "key `persistence.src.mask`: 33 is not an IPv4 prefix length"),
        ("interval = \"1s\"", "interval = \"0s\"", "key `monitors.http.interval`: must not be 0"),
        ("down_count = 2", "down_count = 0", "key `monitors.http.down_count`: must be at least 1"),
        ("expect = \"pong\"", "expect = \"pong\"\nexpect_status = 200",
         "key `monitors.dns.expect_status`: only for monitors of type http"),
        ("send = \"ping\"", "send = \"\"", "key `monitors.dns.send`: a udp monitor needs a datagram"),
        ("expect_status = 200", "expect_status = 42", "42 is not an HTTP status"),
        ("internal_address = \"10.1.1.6\"\n", "",
         "key `virtual_servers.web.snat`: automap needs device.internal_address for IPv4 member 10.1.1.50:80"),
        ("snat = \"10.1.1.9\"", "snat = \"fd00::9\"",
         "key `virtual_servers.dns.snat`: fd00::9 cannot be the source toward member 10.1.1.50:53"),
        ("[pools.dns]", "[pools.\"d n s\"]", "names are 1-64 letters"),
        ("workers = 2", "workers = 0", "key `device.workers`: must be at least 1"),
        ("name = \"A\"", "name = \" \"", "key `device.name`: must not be empty"),
        ("idle_timeout = \"2m\"", "idle_timeout = \"0s\"", "key `virtual_servers.web.idle_timeout`: must not be 0"),
        ("address = \"30.1.1.10\"", "address = \"0.0.0.0\"", "virtual_addresses[0].address"),
    ];
    for (from, to, want) in cases {
        let e = err(&with(from, to));
        assert!(e.contains(want), "{to}:\n  got  {e}\n  want {want}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
}

#[test]
fn two_virtual_servers_on_one_listener_are_rejected() {
    let e = err(&with(
        "destination = \"30.1.1.10:53\"\nprotocol = \"udp\"",
        "destination = \"30.1.1.10:80\"\nprotocol = \"tcp\"",
    ));
    assert!(
        e.contains("key `virtual_servers.web.destination`: tcp 30.1.1.10:80 is already virtual server `dns`"),
        "{e}"
    );
}

#[test]
fn missing_and_unreadable_files_say_so() {
    let e = Config::load(Path::new("/nonexistent/lbd.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("/nonexistent/lbd.toml: "), "{e}");
    let e = err("[device\nname=");
    assert!(e.starts_with("lbd.toml: "), "{e}");
    let e = err("");
    assert!(e.contains("device"), "{e}");
}

#[test]
fn minimal_config() {
    let c = Config::from_toml(
        "[device]\nname = \"bench\"\n[virtual_servers.web]\ndestination = \"127.0.0.1:8080\"\n\
         pool = \"web\"\nsnat = \"none\"\n[pools.web]\nmembers = [{ address = \"127.0.0.1:8081\" }]\n",
        "x",
    )
    .unwrap();
    assert_eq!(
        c.device.control_socket,
        PathBuf::from("/run/spanlb/lbd.sock")
    );
    assert_eq!(c.effective_virtual_addresses().len(), 1);
}

#[test]
fn limits_and_passive_health_defaults() {
    let c = Config::from_toml(FULL, "lbd.toml").unwrap();
    // web sets 1000; a UDP virtual server gets 10,000 flows, a TCP one no limit.
    assert_eq!(c.virtual_servers["web"].limit(), 1000);
    assert_eq!(c.virtual_servers["dns"].limit(), DEFAULT_UDP_FLOW_LIMIT);
    assert_eq!(DEFAULT_UDP_FLOW_LIMIT, 10_000);
    assert_eq!(c.virtual_servers["web6"].limit(), 0);
    let unlimited = with(
        "snat = \"10.1.1.9\"",
        "snat = \"10.1.1.9\"\nconnection_limit = 0",
    );
    let c2 = Config::from_toml(&unlimited, "lbd.toml").unwrap();
    assert_eq!(c2.virtual_servers["dns"].limit(), 0, "0 says no limit");
    // Passive health is off unless asked for; the retry defaults to 10 s.
    let p = c.pools["web"].passive();
    assert_eq!((p.failures, p.retry), (0, Duration::from_secs(10)));
    let on = with(
        "method = \"ratio\"",
        "method = \"ratio\"\npassive_failures = 5\npassive_retry = \"30s\"",
    );
    let p = Config::from_toml(&on, "lbd.toml").unwrap().pools["web"].passive();
    assert_eq!((p.failures, p.retry), (5, Duration::from_secs(30)));
}

#[test]
fn drain_timeout_defaults_to_30_seconds_and_takes_zero() {
    let c = Config::from_toml(FULL, "x").unwrap();
    assert_eq!(c.device.drain_timeout, Duration::from_secs(30));
    let c = Config::from_toml(
        &with("workers = 2", "workers = 2\ndrain_timeout = \"2s\""),
        "x",
    )
    .unwrap();
    assert_eq!(c.device.drain_timeout, Duration::from_secs(2));
    let c = Config::from_toml(&with("workers = 2", "workers = 2\ndrain_timeout = 0"), "x").unwrap();
    assert_eq!(c.device.drain_timeout, Duration::ZERO);
}
