use std::os::unix::fs::MetadataExt;

use super::*;

fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
    Peer {
        uid,
        gid,
        pid: None,
        groups: groups.to_vec(),
    }
}

const POLICY: Policy = Policy {
    owner_uid: 500,
    control_gid: 1000,
    readonly_gid: Some(1001),
};

#[test]
fn who_gets_which_access() {
    let p = POLICY;
    assert_eq!(p.check(&peer(0, 0, &[])), Ok(Access::Full), "root");
    assert_eq!(p.check(&peer(500, 7, &[])), Ok(Access::Full), "daemon uid");
    assert_eq!(
        p.check(&peer(65534, 1000, &[])),
        Ok(Access::Full),
        "primary"
    );
    assert_eq!(
        p.check(&peer(65534, 65534, &[3, 1000])),
        Ok(Access::Full),
        "supplementary"
    );
    assert_eq!(
        p.check(&peer(65534, 65534, &[1001])),
        Ok(Access::ReadOnly),
        "read-only group"
    );
    assert_eq!(
        p.check(&peer(65534, 1001, &[1000])),
        Ok(Access::Full),
        "both groups: full"
    );
    let e = p.check(&peer(65534, 65534, &[2])).unwrap_err();
    assert!(e.starts_with("permission denied: uid 65534"), "{e}");
    let no_ro = Policy {
        readonly_gid: None,
        ..POLICY
    };
    assert!(no_ro.check(&peer(65534, 65534, &[1001])).is_err());
}

#[test]
fn group_names_and_numbers() {
    assert_eq!(resolve_group("0"), Ok(0));
    assert_eq!(resolve_group("root"), Ok(0));
    assert_eq!(resolve_group(" 4242 "), Ok(4242));
    let e = resolve_group("no-such-group-spanlb").unwrap_err();
    assert!(e.contains("no group named `no-such-group-spanlb`"), "{e}");
    assert!(resolve_group("").is_err());
    let e = Policy::resolve(None, Some("no-such-group-spanlb")).unwrap_err();
    assert_eq!(e.key, "control_readonly_group");
    assert!(e
        .to_string()
        .starts_with("key `control_readonly_group`: no group"));
    let p = Policy::resolve(Some("root"), Some("0")).unwrap();
    assert_eq!(
        p.readonly_gid, None,
        "the same group twice is just the control group"
    );
}

#[test]
fn the_last_slot_is_for_root() {
    let gate = Gate::new(POLICY, 3, Arc::new(Stats::default()));
    let a = gate.admit_peer(peer(65534, 1000, &[])).unwrap();
    let b = gate.admit_peer(peer(65534, 65534, &[1001])).unwrap();
    assert_eq!(b.access, Access::ReadOnly);
    let e = gate.admit_peer(peer(65534, 1000, &[])).unwrap_err();
    assert!(matches!(e, Refused::ClientLimit { .. }), "{e:?}");
    assert!(e.message().starts_with("too many control connections (3"));
    let root = gate.admit_peer(peer(0, 0, &[])).unwrap();
    assert!(
        gate.admit_peer(peer(0, 0, &[])).is_err(),
        "full for root too"
    );
    drop(root);
    drop(a);
    assert_eq!(gate.active(), 1);
    assert!(gate.admit_peer(peer(65534, 1000, &[])).is_ok());
    let e = gate.admit_peer(peer(65534, 2, &[])).unwrap_err();
    assert!(matches!(e, Refused::Permission { .. }));
    assert_eq!(
        gate.stats().refused(),
        [("permission", 1), ("client-limit", 2)]
    );
}

#[test]
fn log_limit_counts_what_it_holds_back() {
    let l = LogLimit::new(Duration::from_millis(200));
    assert_eq!(l.allow(), Some(0));
    assert_eq!(l.allow(), None);
    assert_eq!(l.allow(), None);
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(l.allow(), Some(2));
}

struct Umask(libc::mode_t);

impl Drop for Umask {
    fn drop(&mut self) {
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(self.0) };
    }
}

/// Mode 0660 whatever the umask, the group set, a stale file replaced, a live one refused;
/// the read-only group's ACL entry. (The umask is process-wide: this is the only test of the
/// crate that creates files.)
#[tokio::test]
async fn the_socket_file_is_0660_with_its_group() {
    let dir = std::env::temp_dir().join(format!("spanlb-access-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("sub").join("x.sock");
    // SAFETY: umask cannot fail.
    let _restore = Umask(unsafe { libc::umask(0) });
    let policy = Policy::owner_only();
    let l = bind(&path, &policy, "testd").unwrap();
    let md = std::fs::metadata(&path).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o660);
    assert_eq!(md.gid(), policy.control_gid);
    assert_eq!(
        std::fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
        0o755,
        "a directory it creates is 0755, not 0777"
    );
    let files: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "no temporary name left: {files:?}");
    let c = UnixStream::connect(&path).await.unwrap();
    let (s, _) = l.accept().await.unwrap();
    let p = Peer::of(&s).unwrap();
    assert_eq!(p.uid, policy.owner_uid);
    let e = bind(&path, &policy, "testd").unwrap_err();
    assert!(e.to_string().contains("another testd"), "{e}");
    drop((c, s, l));
    let l = bind(&path, &policy, "testd").expect("a stale socket file is replaced");
    drop(l);
    if policy.owner_uid == 0 {
        let ro = Policy {
            readonly_gid: Some(4242),
            ..policy.clone()
        };
        match bind(&path, &ro, "testd") {
            Ok(_) => {
                let md = std::fs::metadata(&path).unwrap();
                assert_eq!(md.mode() & 0o777, 0o660, "the mask shows as the group bits");
                let p = CString::new(path.as_os_str().as_bytes()).unwrap();
                let mut buf = [0u8; 256];
                // SAFETY: reads the attribute into buf, its length given.
                let n = unsafe {
                    libc::getxattr(
                        p.as_ptr(),
                        c"system.posix_acl_access".as_ptr(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                };
                assert_eq!(n, 4 + 5 * 8, "five ACL entries");
                assert!(buf[4..n as usize]
                    .chunks(8)
                    .any(|e| e[4..8] == 4242u32.to_le_bytes()));
            }
            Err(e) => assert!(e.to_string().contains("POSIX ACL"), "{e}"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
