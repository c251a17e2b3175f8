use serde_json::json;

use super::*;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// Every field `old` has, `new` has with the same value (objects may have more fields: the
/// typed route spells out its defaults).
fn covers(new: &Value, old: &Value) -> bool {
    match (new, old) {
        (Value::Object(n), Value::Object(o)) => o
            .iter()
            .all(|(k, v)| n.get(k).is_some_and(|nv| covers(nv, v))),
        (Value::Array(n), Value::Array(o)) => {
            n.len() == o.len() && n.iter().zip(o).all(|(a, b)| covers(a, b))
        }
        _ => new == old,
    }
}

/// Requests whose typed form is byte for byte what the old `json!` literals were.
#[test]
fn plain_requests_are_byte_for_byte_the_old_literals() {
    let one = |prefix: &str, path_id| RouteRef::new(net(prefix), path_id);
    let cases = [
        (Request::Neighbors, json!({"cmd": "neighbors"})),
        (Request::Routes, json!({"cmd": "routes"})),
        (
            Request::WithdrawAllMine,
            json!({"cmd": "withdraw-all-mine"}),
        ),
        // bgpctl routes --adj-rib-out / --neighbor N
        (
            Request::AdjRibOut { neighbor: None },
            json!({"cmd": "adj-rib-out"}),
        ),
        // bgpctl reload
        (Request::Reload, json!({"cmd": "reload"})),
        (
            Request::AdjRibOut {
                neighbor: Some("20.1.1.1".parse().unwrap()),
            },
            json!({"cmd": "adj-rib-out", "neighbor": "20.1.1.1"}),
        ),
        // lbd's cluster agent
        (
            Request::Withdraw {
                graceful: true,
                routes: vec![one("30.1.1.10/32", Some(2)), one("20.1.1.3/32", Some(2))],
            },
            json!({"cmd": "withdraw", "graceful": true, "routes": [
                {"prefix": "30.1.1.10/32", "path_id": 2}, {"prefix": "20.1.1.3/32", "path_id": 2}]}),
        ),
        // bgpctl withdraw without --path-id
        (
            Request::Withdraw {
                graceful: false,
                routes: vec![one("2001:db8:30::10/128", None)],
            },
            json!({"cmd": "withdraw", "graceful": false,
                   "routes": [{"prefix": "2001:db8:30::10/128", "path_id": null}]}),
        ),
    ];
    for (req, old) in cases {
        assert_eq!(serde_json::to_string(&req).unwrap(), old.to_string());
        assert_eq!(serde_json::from_value::<Request>(old).unwrap(), req);
    }
}

/// Announces carry every field of the old literals (and the route's defaults besides), and
/// the old literals still parse to the same request.
#[test]
fn announces_carry_the_old_fields() {
    // lbd's cluster agent: prefix, path id, next hop; fate-shared.
    let mut r = RouteConfig::new(net("30.1.1.10/32"));
    r.path_id = Some(1);
    r.next_hop = NextHop::Addr("20.1.1.2".parse().unwrap());
    let mut s = RouteConfig::new(net("20.1.1.2/32"));
    s.path_id = Some(1);
    let agent = Request::Announce {
        persistent: false,
        routes: vec![r, s],
    };
    let old = json!({"cmd": "announce", "routes": [
        {"prefix": "30.1.1.10/32", "path_id": 1, "next_hop": "20.1.1.2"},
        {"prefix": "20.1.1.2/32", "path_id": 1, "next_hop": "self"}]});
    // bgpctl announce ... --med 5 --prepend 1 --community 65001:7 --large-community 1:2:3
    let mut b = RouteConfig::new(net("30.1.1.20/32"));
    b.med = Some(5);
    b.as_path_prepend = 1;
    b.communities = vec!["65001:7".parse().unwrap(), "no-export".parse().unwrap()];
    b.large_communities = vec!["1:2:3".parse().unwrap()];
    b.origin = Origin::Incomplete;
    let bgpctl = Request::Announce {
        persistent: true,
        routes: vec![b],
    };
    let old_bgpctl = json!({"cmd": "announce", "persistent": true, "routes": [{
        "prefix": "30.1.1.20/32", "next_hop": "self", "as_path_prepend": 1,
        "communities": ["65001:7", "no-export"], "large_communities": ["1:2:3"],
        "origin": "incomplete", "med": 5}]});
    for (req, old) in [(agent, old), (bgpctl, old_bgpctl)] {
        let new = serde_json::to_value(&req).unwrap();
        assert!(covers(&new, &old), "{new} lacks fields of {old}");
        assert_eq!(serde_json::from_value::<Request>(old).unwrap(), req);
        assert_eq!(serde_json::from_value::<Request>(new).unwrap(), req);
    }
}

#[test]
fn bad_requests_and_route_fields_are_refused() {
    for (line, want) in [
        (json!({"cmd": "frobnicate"}), "unknown variant `frobnicate`"),
        (
            json!({"cmd": "withdraw", "routes": [], "x": 1}),
            "unknown field `x`",
        ),
        (
            json!({"cmd": "announce", "routes": [{"prefix": "10.0.0.0/8", "nh": "self"}]}),
            "unknown field `nh`",
        ),
        (
            json!({"cmd": "announce", "routes": [{"prefix": "10.0.0.0/8", "next_hop": "me"}]}),
            "neither \"self\" nor an IP address",
        ),
        (
            json!({"cmd": "announce", "routes": [{"prefix": "10.0.0.0/8", "communities": ["1"]}]}),
            "is not ASN:VALUE",
        ),
        (
            json!({"cmd": "withdraw", "routes": [{"path_id": 1}]}),
            "missing field `prefix`",
        ),
    ] {
        let e = serde_json::from_value::<Request>(line.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{line}: {e}");
    }
    // serde ignores extra fields of a request without arguments (as it always has here).
    let r: Request = serde_json::from_value(json!({"cmd": "routes", "x": 1})).unwrap();
    assert_eq!(r, Request::Routes);
    assert_eq!("egp".parse::<Origin>(), Ok(Origin::Egp));
    assert!("bgp".parse::<Origin>().is_err());
    assert_eq!("self".parse::<NextHop>(), Ok(NextHop::Self_));
}

#[test]
fn the_envelope_is_what_bgpd_wrote() {
    let r = Response::ok(&Withdrawing {
        withdrawing: 2,
        linger_ms: 2000,
    });
    let text = serde_json::to_string(&r).unwrap();
    // The old server: the payload's fields and "ok" in one (sorted) map.
    assert_eq!(
        text,
        json!({"ok": true, "withdrawing": 2, "linger_ms": 2000}).to_string()
    );
    let back: Response = serde_json::from_str(&text).unwrap();
    assert_eq!(
        back.data::<Withdrawing>(),
        Ok(Withdrawing {
            withdrawing: 2,
            linger_ms: 2000
        })
    );
    let e = Response::failure("no neighbor 10.0.0.1");
    assert_eq!(
        serde_json::to_string(&e).unwrap(),
        r#"{"error":"no neighbor 10.0.0.1","ok":false}"#
    );
    // A bare {"ok":true} (lbd's tests' stand-in bgpd) is a success without fields.
    let r: Response = serde_json::from_str(r#"{"ok":true}"#).unwrap();
    assert_eq!(r, Response::Ok(Map::new()));
    let r: Response = serde_json::from_str(r#"{"ok":false}"#).unwrap();
    assert_eq!(r.data::<Announced>(), Err(NO_MESSAGE.to_string()));
    let r: Response = serde_json::from_str(r#"{"ok":true,"announced":"x"}"#).unwrap();
    assert!(r
        .data::<Announced>()
        .unwrap_err()
        .starts_with("unexpected answer"));
}

#[test]
fn typed_answers_round_trip() {
    let mut route = RouteConfig::new(net("30.1.1.10/32"));
    route.path_id = Some(1);
    let routes = RouteList {
        routes: vec![RouteInfo {
            route,
            owner: "client 3".into(),
            graceful_shutdown: false,
        }],
    };
    let attrs = PathAttrs {
        as_path: vec![AsSegment::Sequence(vec![65001])],
        next_hop: Some("20.1.1.2".parse().unwrap()),
        communities: vec![GRACEFUL_SHUTDOWN],
        large_communities: vec![LargeCommunity(1, 2, 3)],
        ..PathAttrs::default()
    };
    let rib = AdjRibOut {
        adj_rib_out: vec![RibOut {
            neighbor: "20.1.1.1".parse().unwrap(),
            routes: vec![(
                Nlri {
                    prefix: net("30.1.1.10/32"),
                    path_id: Some(1),
                },
                attrs,
            )],
        }],
    };
    let v = serde_json::to_value(Response::ok(&rib)).unwrap();
    assert_eq!(
        v["adj_rib_out"][0]["routes"][0][1]["as_path"][0]["type"],
        "sequence"
    );
    assert_eq!(
        serde_json::from_value::<Response>(v)
            .unwrap()
            .data::<AdjRibOut>(),
        Ok(rib)
    );
    let r =
        serde_json::from_value::<Response>(serde_json::to_value(Response::ok(&routes)).unwrap());
    assert_eq!(r.unwrap().data::<RouteList>(), Ok(routes));
}

#[test]
fn community_text_round_trips() {
    for s in ["65000:1", "graceful-shutdown", "0:0", "65535:65535"] {
        let c: Community = s.parse().unwrap();
        let back = c.to_string();
        assert_eq!(back.parse::<Community>().unwrap(), c);
    }
    assert_eq!(
        "graceful-shutdown".parse::<Community>().unwrap().0,
        GRACEFUL_SHUTDOWN
    );
}

#[test]
fn requests_are_classified_under_their_own_names() {
    let r = RouteRef::new(net("10.0.0.0/24"), None);
    for (req, read_only) in [
        (
            Request::Announce {
                persistent: false,
                routes: vec![],
            },
            false,
        ),
        (
            Request::Withdraw {
                graceful: false,
                routes: vec![r],
            },
            false,
        ),
        (Request::WithdrawAllMine, false),
        (Request::Routes, true),
        (Request::Neighbors, true),
        (Request::AdjRibOut { neighbor: None }, true),
        (Request::Reload, false),
        (Request::Bfd, true),
        (Request::Ready, false),
    ] {
        assert_eq!(serde_json::to_value(&req).unwrap()["cmd"], req.name());
        assert_eq!(req.read_only(), read_only, "{}", req.name());
    }
}

/// 100,000 routes (some 8 MB as one line) go as batches under the line limit, in order.
#[test]
fn big_batches_are_split_under_the_line_limit() {
    let routes: Vec<RouteConfig> = (0..100_000u32)
        .map(|i| RouteConfig {
            path_id: Some(i),
            ..RouteConfig::new(IpNet::from(ipnet::Ipv6Net::from(std::net::Ipv6Addr::from(
                0x2001_0db8_u128 << 96 | u128::from(i),
            ))))
        })
        .collect();
    let whole = Request::Announce {
        persistent: false,
        routes: routes.clone(),
    };
    assert!(serde_json::to_vec(&whole).unwrap().len() > 4 * MAX_LINE);
    let parts = whole.split(MAX_LINE);
    assert!(parts.len() > 4, "{}", parts.len());
    let mut back = Vec::new();
    for p in parts {
        let n = serde_json::to_vec(&p).unwrap().len();
        assert!(n <= MAX_LINE, "{n}");
        match p {
            Request::Announce { routes, .. } => back.extend(routes),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(back, routes);
    let keys: Vec<RouteRef> = routes
        .iter()
        .map(|r| RouteRef::new(r.prefix, r.path_id))
        .collect();
    let parts = Request::Withdraw {
        graceful: true,
        routes: keys.clone(),
    }
    .split(200_000);
    let mut back = Vec::new();
    for p in parts {
        assert!(serde_json::to_vec(&p).unwrap().len() <= 200_000);
        match p {
            Request::Withdraw { graceful, routes } => {
                assert!(graceful);
                back.extend(routes)
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(back, keys);
    assert_eq!(Request::Routes.split(10), vec![Request::Routes]);
}
