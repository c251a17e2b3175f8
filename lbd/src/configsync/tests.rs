use std::path::Path;

use serde_json::Value;

use super::*;
use crate::cluster::config::{GroupConfig, SEED};
use crate::config::tests::FULL;
use crate::config::Config;

fn config(text: &str) -> Config {
    Config::from_toml(text, "lbd.toml").unwrap()
}

fn doc(text: &str) -> GroupDocument {
    let group = GroupConfig::from_toml(SEED, "group.toml").unwrap();
    GroupDocument::from_parts(&config(text), Some(&group)).unwrap()
}

/// FULL with its sections in another order and another layout.
fn reordered() -> String {
    let (device, rest) = FULL.split_at(FULL.find("[[virtual_addresses]]").unwrap());
    let mut blocks: Vec<&str> = rest.split("\n\n").collect();
    blocks.reverse();
    format!("{device}{}\n", blocks.join("\n\n\n"))
}

#[test]
fn the_digest_is_the_configuration_not_the_file() {
    let a = doc(FULL);
    assert_eq!(a.digest(), doc(&reordered()).digest());
    // Device-local settings are not part of it.
    let other_device = FULL
        .replace("name = \"A\"", "name = \"B\"")
        .replace("workers = 2", "workers = 4")
        .replace("10.1.1.6", "10.1.1.7");
    assert_eq!(a.digest(), doc(&other_device).digest());
    // Neither is the group key's path.
    let group = GroupConfig::from_toml(
        &SEED.replace("/etc/spanlb/group.key", "/elsewhere/key"),
        "g",
    )
    .unwrap();
    let b = GroupDocument::from_parts(&config(FULL), Some(&group)).unwrap();
    assert_eq!(a.digest(), b.digest());
    assert!(!a.to_json().contains("key_file"));
    // A changed member is.
    let changed = FULL.replace("ratio = 3", "ratio = 4");
    assert_ne!(a.digest(), doc(&changed).digest());
    // And the device group.
    let none = GroupDocument::from_parts(&config(FULL), None).unwrap();
    assert_ne!(a.digest(), none.digest());
}

#[test]
fn a_document_becomes_this_devices_configuration_again() {
    let a = doc(FULL);
    let received = GroupDocument::from_json(&a.to_json()).unwrap();
    assert_eq!(received.digest(), a.digest());
    // Device B's own [device] with A's group configuration.
    let local_b = config(&FULL.replace("name = \"A\"", "name = \"B\""));
    let cfg = received.to_config(&local_b).unwrap();
    assert_eq!(cfg.device.name, "B");
    assert_eq!(cfg.virtual_servers, config(FULL).virtual_servers);
    assert_eq!(cfg.pools, config(FULL).pools);
    assert_eq!(cfg.monitors, config(FULL).monitors);
    assert_eq!(cfg.persistence, config(FULL).persistence);
    assert_eq!(cfg.virtual_addresses, config(FULL).virtual_addresses);
    let group = received
        .to_group(Path::new("/etc/spanlb/group.key"))
        .unwrap();
    assert_eq!(group, Some(GroupConfig::from_toml(SEED, "g").unwrap()));
}

#[test]
fn a_received_document_is_checked_like_a_file() {
    assert!(matches!(
        GroupDocument::from_json(r#"{"device":{"name":"x"}}"#),
        Err(DocumentError::Section(s)) if s == "device"
    ));
    assert!(GroupDocument::from_json("[1]").is_err());
    // A pool that names a monitor nobody defines is refused whole, with the key.
    let mut v: Value = serde_json::from_str(&doc(FULL).to_json()).unwrap();
    v["pools"]["web"]["monitors"] = serde_json::json!(["nonexistent"]);
    let bad = GroupDocument::from_json(&v.to_string()).unwrap();
    let e = bad.to_config(&config(FULL)).unwrap_err().to_string();
    assert!(e.contains("nonexistent"), "{e}");
}

#[test]
fn a_delta_carries_the_changed_objects_and_checks_both_ends() {
    let a = doc(FULL);
    let text = FULL
        .replace("ratio = 3", "ratio = 4")
        .replace("[pools.web6]\nmembers = [{ address = \"[fd00:10::50]:80\" }]\n", "")
        .replace(
            "[virtual_servers.web6]\ndestination = \"[fd00:30::10]:80\"\npool = \"web6\"\nsnat = \"none\"\n",
            "",
        )
        .replace("advertise = \"all\"", "advertise = \"any\"");
    let b = doc(&text);
    let d = Delta::between(&a, &b);
    let ops: Vec<String> = d
        .changes
        .iter()
        .map(|c| match c {
            Change::Put { section, name, .. } => format!("put {section}.{name}"),
            Change::Remove { section, name } => format!("remove {section}.{name}"),
            Change::Section { section, .. } => format!("section {section}"),
        })
        .collect();
    assert_eq!(
        ops,
        [
            "remove virtual_servers.web6",
            "put pools.web",
            "remove pools.web6",
            "section virtual_addresses"
        ]
    );
    assert_eq!(d.apply(&a).unwrap(), b);
    assert!(d.encoded_len() < a.canonical().len());
    // Onto another document it refuses (a full sync is needed).
    assert!(matches!(d.apply(&b), Err(DeltaError::Base { .. })));
    let mut wrong = d.clone();
    wrong.target = a.digest();
    assert!(matches!(wrong.apply(&a), Err(DeltaError::Target { .. })));
    let mut foreign = d;
    foreign.changes.push(Change::Section {
        section: "device".into(),
        value: Value::Null,
    });
    assert!(matches!(foreign.apply(&a), Err(DeltaError::Section(_))));
    // Nothing changed, nothing carried.
    assert!(Delta::between(&a, &doc(&reordered())).changes.is_empty());
}

fn digest(n: u8) -> Digest {
    Digest([n; 32])
}

fn mark(g: &Generation, dirty: bool) -> PeerMark {
    PeerMark {
        generation: Some(g.clone()),
        dirty,
        alive: true,
    }
}

fn state(me: &str, current: &Generation) -> SyncState {
    let peers = ["A", "B", "C"].map(String::from);
    SyncState::new(me, peers, Some(current.clone()))
}

#[test]
fn concurrent_changes_are_pending_on_both_until_one_is_synced_to_the_group() {
    let base = Generation {
        origin: "A".into(),
        counter: 4,
        time_ms: 1_000,
        digest: digest(4),
    };
    let mut a = state("A", &base);
    let mut c = state("C", &base);
    for s in [&mut a, &mut c] {
        for p in ["A", "B", "C"] {
            s.peer(p, mark(&base, false));
        }
        assert_eq!(s.status(), SyncStatus::InSync);
    }
    // A and C change their configurations at the same time.
    let ga = a.commit(digest(5), 2_000).unwrap();
    let gc = c.commit(digest(6), 2_001).unwrap();
    assert_eq!((ga.counter, gc.counter), (5, 5));
    assert_eq!(a.commit(digest(5), 2_500), None, "no change, no generation");
    a.peer("C", mark(&gc, true));
    c.peer("A", mark(&ga, true));
    let pending = SyncStatus::ChangesPending {
        holders: vec!["A".into(), "C".into()],
        behind: vec!["B".into()],
    };
    assert_eq!(a.status(), pending);
    assert_eq!(c.status(), pending);
    assert_eq!(a.out_of_date(), ["B", "C"]);
    // A is synced to the group: C's change goes, and C says so.
    assert_eq!(c.applied(ga.clone()), Some(gc.clone()));
    assert_eq!(c.overwritten(), Some(&(gc, ga.clone())));
    assert!(!c.dirty());
    for s in [&mut a, &mut c] {
        for p in ["A", "B", "C"] {
            s.peer(p, mark(&ga, p == "A" && s.me() != "A"));
        }
    }
    assert_eq!(a.status(), SyncStatus::InSync);
    assert!(!a.dirty(), "every live device holds A's change");
    assert_eq!(c.status(), SyncStatus::InSync);
    // The next change here counts on from what the group has seen.
    assert_eq!(c.commit(digest(7), 3_000).unwrap().counter, 6);
}

#[test]
fn a_device_that_was_away_is_behind_the_newest_generation() {
    let old = Generation {
        origin: "B".into(),
        counter: 2,
        time_ms: 1_000,
        digest: digest(2),
    };
    let new = Generation {
        origin: "A".into(),
        counter: 3,
        time_ms: 2_000,
        digest: digest(3),
    };
    let mut c = state("C", &old);
    c.peer("A", mark(&new, false));
    c.peer("B", mark(&new, false));
    assert_eq!(
        c.status(),
        SyncStatus::ChangesPending {
            holders: vec!["A".into(), "B".into()],
            behind: vec!["C".into()],
        }
    );
    // Brought up to date by a sync (it had no change of its own to lose).
    assert_eq!(c.applied(new.clone()), None);
    assert_eq!(c.status(), SyncStatus::InSync);
}

#[test]
fn the_other_statuses() {
    let g = Generation {
        origin: "A".into(),
        counter: 1,
        time_ms: 1,
        digest: digest(1),
    };
    let fresh = SyncState::new("D", ["A".to_string(), "D".to_string()], None);
    assert_eq!(fresh.status(), SyncStatus::AwaitingInitialSync);
    assert_eq!(fresh.status().to_string(), "awaiting-initial-sync");
    let mut a = state("A", &g);
    assert_eq!(a.status(), SyncStatus::Disconnected, "no peer heard yet");
    a.peer("B", mark(&g, false));
    assert_eq!(a.status(), SyncStatus::InSync);
    a.peer("B", PeerMark::default());
    assert_eq!(a.status(), SyncStatus::Disconnected, "B went away");
    a.peer("B", mark(&g, false));
    a.failed("C refused it: cannot listen on tcp 30.1.1.10:80".into());
    assert_eq!(
        a.status().to_string(),
        "sync-failed: C refused it: cannot listen on tcp 30.1.1.10:80"
    );
    a.sync_succeeded();
    assert_eq!(
        a.status(),
        SyncStatus::InSync,
        "a later sync that went through"
    );
    a.failed("again".into());
    // The next commit starts over.
    a.commit(digest(9), 5);
    assert!(matches!(a.status(), SyncStatus::ChangesPending { .. }));
    // Devices of no membership are ignored.
    a.peer("Z", mark(&g, true));
    assert!(a.view().iter().all(|v| v.name != "Z"));
    assert_eq!(
        "00".repeat(32).parse::<Digest>().unwrap(),
        Digest::default()
    );
    assert!("xyz".parse::<Digest>().is_err());
}

fn gen_of(doc: &GroupDocument, origin: &str, counter: u64) -> Generation {
    Generation {
        origin: origin.into(),
        counter,
        time_ms: 0,
        digest: doc.digest(),
    }
}

#[test]
fn a_push_is_a_delta_from_what_the_peer_holds_or_the_whole_document() {
    let old = doc(FULL);
    let new = doc(&FULL.replace("ratio = 3", "ratio = 4"));
    let g = gen_of(&new, "A", 2);
    let mut history = History::default();
    history.push(old.clone());
    history.push(new.clone());
    // The peer holds the old document, which A still has: a delta, which it applies.
    let push = plan(&new, &g, Some(old.digest()), &history, MAX_INCREMENTAL);
    assert!(matches!(push.payload, Payload::Delta { .. }));
    assert_eq!(receive(Some(&old), &push).unwrap(), new);
    // Through JSON, as it travels.
    let wire: Push = serde_json::from_str(&serde_json::to_string(&push).unwrap()).unwrap();
    assert_eq!(wire, push);
    // A peer that holds something else asks for the whole document.
    let other = doc(&FULL.replace("mask = 24", "mask = 16"));
    assert_eq!(
        receive(Some(&other), &push),
        Err(Answer::NeedFull {
            have: Some(other.digest())
        })
    );
    assert_eq!(receive(None, &push), Err(Answer::NeedFull { have: None }));
    // Unknown to A, or too large a delta: the whole document, which anyone applies.
    for (has, max) in [
        (Some(other.digest()), MAX_INCREMENTAL),
        (Some(old.digest()), 10),
    ] {
        let push = plan(&new, &g, has, &history, max);
        assert!(matches!(push.payload, Payload::Full { .. }));
        assert_eq!(receive(Some(&other), &push).unwrap(), new);
        assert_eq!(receive(None, &push).unwrap(), new);
    }
    // A document that is not what its generation says is refused whole.
    let lying = Push {
        generation: gen_of(&old, "A", 3),
        ..plan(&new, &g, None, &history, MAX_INCREMENTAL)
    };
    assert!(matches!(receive(None, &lying), Err(Answer::Refused { .. })));
    let junk = Push {
        generation: g,
        payload: Payload::Full {
            document: "{\"device\": {}}".into(),
        },
    };
    assert!(
        matches!(receive(None, &junk), Err(Answer::Refused { reason }) if reason.contains("device"))
    );
}

#[test]
fn the_history_keeps_the_newest_documents() {
    let mut h = History::default();
    let docs: Vec<GroupDocument> = (0..=HISTORY)
        .map(|i| doc(&FULL.replace("ratio = 3", &format!("ratio = {}", i + 3))))
        .collect();
    for d in &docs {
        h.push(d.clone());
    }
    assert!(h.get(docs[0].digest()).is_none(), "the oldest is gone");
    assert!(docs[1..].iter().all(|d| h.get(d.digest()).is_some()));
    // The same document again is not kept twice.
    h.push(docs[1].clone());
    assert!(h.get(docs[2].digest()).is_some());
}

#[test]
fn a_restart_resumes_the_saved_generation_or_counts_on_from_it() {
    let peers = || ["A", "B"].map(String::from);
    let mut a = SyncState::new("A", peers(), None);
    let g = a.commit(digest(1), 10).unwrap();
    let saved = a.saved().unwrap();
    assert_eq!(
        saved,
        Saved {
            generation: g.clone(),
            dirty: true
        }
    );
    let text = serde_json::to_string(&saved).unwrap();
    let saved: Saved = serde_json::from_str(&text).unwrap();
    // Same files: the same generation, still unsynced.
    let same = SyncState::resume("A", peers(), Some(saved.clone()), digest(1), 20);
    assert_eq!(same.current(), Some(&g));
    assert!(same.dirty());
    // Files changed while it was down: a new generation of its own, counted on.
    let moved = SyncState::resume("A", peers(), Some(saved), digest(2), 20);
    let c = moved.current().unwrap();
    assert_eq!(
        (c.origin.as_str(), c.counter, c.digest),
        ("A", 2, digest(2))
    );
    assert!(moved.dirty());
    // Nothing saved: the first generation.
    let fresh = SyncState::resume("A", peers(), None, digest(3), 20);
    assert_eq!(fresh.current().unwrap().counter, 1);
}

#[test]
fn a_configuration_is_saved_as_toml_that_reads_back_the_same() {
    let cfg = config(FULL);
    let text = toml::to_string(&cfg).unwrap();
    assert_eq!(Config::from_toml(&text, "saved.toml").unwrap(), cfg);
    let group = GroupConfig::from_toml(SEED, "g").unwrap();
    let text = toml::to_string(&group).unwrap();
    assert_eq!(GroupConfig::from_toml(&text, "saved.toml").unwrap(), group);
}
