//! The SQLite store: every operation, persistence across reopen, concurrent processes
//! (simulated with two connections), migrations.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use proptest::prelude::*;
use warren_core::TestRng;
use warren_pki::{CaOptions, CertKind, LeafOptions, Pki, RevocationReason, Serial};
use warren_store::{
    AuthOutcome, CertFilter, CertRecord, ImportBatch, NewUser, Revocation, SqliteStore, Store,
    StoreError, UserChange, UserSite, password,
};

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

const NOW: u64 = 1_800_000_000;

fn pki(rng: &mut TestRng) -> Pki {
    Pki::generate(&CaOptions::default(), t(NOW), rng).expect("CA")
}

#[test]
fn users_crud() {
    let s = SqliteStore::open_in_memory().expect("open");
    let mut alice = NewUser::named("alice");
    alice.fixed_ip = Some(Ipv4Addr::new(10, 8, 0, 50));
    alice.routes = vec![
        "192.168.10.0/24".parse().expect("net"),
        "fd00::/64".parse().expect("net"),
    ];
    alice.expires_at = Some(t(NOW + 100));
    s.add_user(&alice, None, t(NOW)).expect("add");
    assert!(matches!(
        s.add_user(&NewUser::named("alice"), None, t(NOW)),
        Err(StoreError::UserExists(_))
    ));
    assert!(matches!(
        s.add_user(&NewUser::named("a b"), None, t(NOW)),
        Err(StoreError::BadName { .. })
    ));
    let mut bob = NewUser::named("bob");
    bob.fixed_ip = alice.fixed_ip;
    assert!(matches!(
        s.add_user(&bob, None, t(NOW)),
        Err(StoreError::FixedIpTaken { ref user, .. }) if user == "alice"
    ));
    bob.fixed_ip = None;
    s.add_user(&bob, None, t(NOW)).expect("add bob");

    let a = s.user("alice").expect("get").expect("exists");
    assert_eq!(a.name, "alice");
    assert!(a.enabled);
    assert_eq!(a.fixed_ip, alice.fixed_ip);
    assert_eq!(a.routes, alice.routes);
    assert_eq!(a.expires_at, Some(t(NOW + 100)));
    assert_eq!(a.created_at, t(NOW));
    assert!(!a.is_expired(t(NOW + 99)));
    assert!(a.is_expired(t(NOW + 100)));
    assert!(
        !format!("{a:?}").contains("argon"),
        "no hash in Debug unless set"
    );
    assert_eq!(s.user("carol").expect("get"), None);
    let names: Vec<String> = s
        .users()
        .expect("list")
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice", "bob"]);

    // Changes.
    s.update_user(
        "alice",
        &UserChange {
            enabled: Some(false),
            expires_at: Some(None),
            fixed_ip: Some(None),
            routes: Some(vec![]),
            ..Default::default()
        },
    )
    .expect("update");
    let a = s.user("alice").expect("get").expect("exists");
    assert!(!a.enabled);
    assert_eq!(a.expires_at, None);
    assert_eq!(a.fixed_ip, None);
    assert!(a.routes.is_empty());
    s.update_user(
        "bob",
        &UserChange {
            fixed_ip: Some(Some(Ipv4Addr::new(10, 8, 0, 50))),
            ..Default::default()
        },
    )
    .expect("the address is free again");
    assert!(matches!(
        s.update_user("carol", &UserChange::default()),
        Err(StoreError::NoSuchUser(_))
    ));
    assert!(matches!(
        s.delete_user("carol", t(NOW)),
        Err(StoreError::NoSuchUser(_))
    ));
}

#[test]
fn passwords_and_account_state() {
    let s = SqliteStore::open_in_memory().expect("open");
    let mut rng = TestRng::seed(3);
    let hash = password::hash("s3cret pass", &mut rng).expect("hash");
    let mut u = NewUser::named("alice");
    u.password_hash = Some(hash.clone());
    u.expires_at = Some(t(NOW + 10));
    s.add_user(&u, None, t(NOW)).expect("add");
    s.add_user(&NewUser::named("nopw"), None, t(NOW))
        .expect("add");

    let now = t(NOW);
    assert_eq!(
        s.verify_password("alice", "s3cret pass", now).expect("v"),
        AuthOutcome::Accepted
    );
    assert_eq!(
        s.verify_password("alice", "wrong", now).expect("v"),
        AuthOutcome::WrongPassword
    );
    assert_eq!(
        s.verify_password("mallory", "x", now).expect("v"),
        AuthOutcome::UnknownUser
    );
    assert_eq!(
        s.verify_password("nopw", "x", now).expect("v"),
        AuthOutcome::NoPassword
    );
    assert_eq!(
        s.verify_password("alice", "s3cret pass", t(NOW + 10))
            .expect("v"),
        AuthOutcome::Expired
    );
    assert_eq!(
        s.check_user("alice", now).expect("c"),
        AuthOutcome::Accepted
    );
    assert_eq!(
        s.check_user("alice", t(NOW + 11)).expect("c"),
        AuthOutcome::Expired
    );
    assert_eq!(
        s.check_user("zed", now).expect("c"),
        AuthOutcome::UnknownUser
    );
    s.update_user(
        "alice",
        &UserChange {
            enabled: Some(false),
            ..Default::default()
        },
    )
    .expect("disable");
    assert_eq!(
        s.check_user("alice", now).expect("c"),
        AuthOutcome::Disabled
    );
    assert_eq!(
        s.verify_password("alice", "s3cret pass", now).expect("v"),
        AuthOutcome::Disabled
    );
    // Disabled is not revealed to someone without the password.
    assert_eq!(
        s.verify_password("alice", "guess", now).expect("v"),
        AuthOutcome::WrongPassword
    );
    let dbg = format!("{:?}", s.user("alice").expect("get"));
    assert!(!dbg.contains(&hash), "hash not in Debug: {dbg}");
}

#[test]
fn certificates_revocation_and_delete() {
    let s = SqliteStore::open_in_memory().expect("open");
    let mut rng = TestRng::seed(4);
    let ca = pki(&mut rng);
    let leaf = LeafOptions::default();
    let a1 = ca
        .issue_client("alice", &leaf, t(NOW), &mut rng)
        .expect("issue");
    let a2 = ca
        .issue_client("alice", &leaf, t(NOW + 5), &mut rng)
        .expect("issue");
    let srv = ca
        .issue_server("server", &leaf, t(NOW), &mut rng)
        .expect("issue");
    s.add_user(
        &NewUser::named("alice"),
        Some(&CertRecord::from_issued(&a1)),
        t(NOW),
    )
    .expect("add with cert");
    s.add_cert(&CertRecord::from_issued(&a2))
        .expect("second cert");
    s.add_cert(&CertRecord::from_issued(&srv))
        .expect("server cert");
    assert!(matches!(
        s.add_cert(&CertRecord::from_issued(&srv)),
        Err(StoreError::CertExists(_))
    ));
    // A failed add_user leaves nothing behind (one transaction).
    let b = ca
        .issue_client("bob", &leaf, t(NOW), &mut rng)
        .expect("issue");
    let mut dup = CertRecord::from_issued(&b);
    dup.serial = a1.info.serial.clone();
    assert!(
        s.add_user(&NewUser::named("bob"), Some(&dup), t(NOW))
            .is_err()
    );
    assert_eq!(s.user("bob").expect("get"), None);

    let got = s.cert(&a1.info.serial).expect("get").expect("exists");
    assert_eq!(got, CertRecord::from_issued(&a1));
    assert_eq!(
        got.key_pem.as_ref().map(|k| k.as_str()),
        Some(a1.key_pem.as_str())
    );
    let alice_certs = s
        .certs(&CertFilter {
            common_name: Some("alice".into()),
            ..Default::default()
        })
        .expect("list");
    assert_eq!(alice_certs.len(), 2);
    assert_eq!(alice_certs[0].serial, a2.info.serial, "newest first");
    let servers = s
        .certs(&CertFilter {
            kind: Some(CertKind::Server),
            ..Default::default()
        })
        .expect("list");
    assert_eq!(servers.len(), 1);

    assert!(!s.is_revoked(&a1.info.serial).expect("q"));
    assert!(
        s.revoke(
            &a1.info.serial,
            t(NOW + 60),
            Some(RevocationReason::KeyCompromise)
        )
        .expect("revoke")
    );
    assert!(!s.revoke(&a1.info.serial, t(NOW + 70), None).expect("again"));
    assert!(s.is_revoked(&a1.info.serial).expect("q"));
    let unknown: Serial = "01".parse().expect("serial");
    assert!(!s.is_revoked(&unknown).expect("q"));
    assert!(matches!(
        s.revoke(&unknown, t(NOW), None),
        Err(StoreError::NoSuchCert(_))
    ));
    let revs = s.revocations().expect("list");
    assert_eq!(revs.len(), 1);
    assert_eq!(revs[0].revoked_at, t(NOW + 60));
    assert_eq!(revs[0].reason, Some(RevocationReason::KeyCompromise));
    let live = s
        .certs(&CertFilter {
            common_name: Some("alice".into()),
            unrevoked_only: true,
            ..Default::default()
        })
        .expect("list");
    assert_eq!(live.len(), 1);
    assert!(live[0].is_usable_at(t(NOW + 100)));
    assert_eq!(live[0].status_at(t(NOW + 100)), "valid");

    s.record_lease("alice", Ipv4Addr::new(10, 8, 0, 6), t(NOW))
        .expect("lease");
    let d = s.delete_user("alice", t(NOW + 200)).expect("delete");
    assert_eq!(d.revoked, vec![a2.info.serial.clone()]);
    assert!(d.lease_released);
    assert!(s.is_revoked(&a2.info.serial).expect("q"));
    assert_eq!(
        s.cert(&a2.info.serial)
            .expect("get")
            .and_then(|c| c.revoked)
            .and_then(|r| r.reason),
        Some(RevocationReason::CessationOfOperation)
    );
    assert!(!s.is_revoked(&srv.info.serial).expect("server untouched"));

    assert_eq!(s.next_crl_number().expect("n"), 1);
    assert_eq!(s.next_crl_number().expect("n"), 2);
}

#[test]
fn user_sites_follow_their_user() {
    let s = SqliteStore::open_in_memory().expect("open");
    s.add_user(&NewUser::named("office"), None, t(NOW))
        .expect("add");
    assert_eq!(s.user_site("office").expect("site"), UserSite::default());
    let site = UserSite {
        subnets: vec![
            "192.168.50.0/24".parse().expect("net"),
            "fd00:50::/64".parse().expect("net"),
        ],
        push: vec![
            "route 10.20.0.0 255.255.0.0".into(),
            "dhcp-option DNS 10.20.0.1".into(),
        ],
    };
    let rev = s.revision().expect("rev");
    s.set_user_site("office", &site).expect("set");
    assert!(
        s.revision().expect("rev") > rev,
        "a change moves the revision"
    );
    assert_eq!(s.user_site("office").expect("site"), site);
    assert_eq!(
        s.user_sites().expect("sites"),
        [("office".to_string(), site.clone())]
    );
    assert!(matches!(
        s.set_user_site("nobody", &site),
        Err(StoreError::NoSuchUser(_))
    ));
    // Emptied: gone from the list.
    s.set_user_site("office", &UserSite::default())
        .expect("clear");
    assert!(s.user_sites().expect("sites").is_empty());
    // Deleting the user deletes its site; a new user of that name starts empty.
    s.set_user_site("office", &site).expect("set");
    s.delete_user("office", t(NOW)).expect("delete");
    s.add_user(&NewUser::named("office"), None, t(NOW))
        .expect("add");
    assert_eq!(s.user_site("office").expect("site"), UserSite::default());
}

#[test]
fn leases() {
    let s = SqliteStore::open_in_memory().expect("open");
    let ip6 = Ipv4Addr::new(10, 8, 0, 6);
    let ip7 = Ipv4Addr::new(10, 8, 0, 7);
    assert_eq!(s.lease_for("alice").expect("q"), None);
    s.record_lease("alice", ip6, t(NOW)).expect("lease");
    s.record_lease("bob", ip7, t(NOW)).expect("lease");
    s.record_lease("alice", ip6, t(NOW + 5)).expect("refresh");
    let l = s.lease_for("alice").expect("q").expect("some");
    assert_eq!((l.ip, l.last_seen), (ip6, t(NOW + 5)));
    // Giving alice's address to carol takes it from alice.
    s.record_lease("carol", ip6, t(NOW + 6)).expect("lease");
    assert_eq!(s.lease_for("alice").expect("q"), None);
    let all: Vec<(String, Ipv4Addr)> = s
        .leases()
        .expect("list")
        .into_iter()
        .map(|l| (l.common_name, l.ip))
        .collect();
    assert_eq!(all, [("carol".to_owned(), ip6), ("bob".to_owned(), ip7)]);
    assert!(s.release_lease("bob").expect("release"));
    assert!(!s.release_lease("bob").expect("release"));
}

#[test]
fn file_persists_is_private_and_shared_between_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.db");
    let s1 = SqliteStore::open(&path).expect("open");
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let s2 = SqliteStore::open(&path).expect("second connection");
    let r0 = s2.revision().expect("rev");
    s1.add_user(&NewUser::named("alice"), None, t(NOW))
        .expect("add");
    s1.record_lease("alice", Ipv4Addr::new(10, 8, 0, 9), t(NOW))
        .expect("lease");
    assert!(
        s2.revision().expect("rev") >= r0 + 2,
        "the other connection sees changes"
    );
    assert!(s2.user("alice").expect("get").is_some());
    drop((s1, s2));
    let s3 = SqliteStore::open(&path).expect("reopen");
    assert_eq!(
        s3.lease_for("alice").expect("q").map(|l| l.ip),
        Some(Ipv4Addr::new(10, 8, 0, 9))
    );
    assert!(s3.quick_check().expect("check"));
    assert_eq!(s3.path(), Some(path.as_path()));
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.db");
    drop(SqliteStore::open(&path).expect("create"));
    let c = rusqlite::Connection::open(&path).expect("raw");
    c.pragma_update(None, "user_version", 99).expect("bump");
    drop(c);
    match SqliteStore::open(&path) {
        Err(StoreError::SchemaTooNew {
            found: 99,
            supported,
        }) if (1..99).contains(&supported) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn import_batch() {
    let s = SqliteStore::open_in_memory().expect("open");
    let mut rng = TestRng::seed(8);
    let ca = pki(&mut rng);
    let a = ca
        .issue_client("alice", &LeafOptions::default(), t(NOW), &mut rng)
        .expect("a");
    let b = ca
        .issue_client("bob", &LeafOptions::default(), t(NOW), &mut rng)
        .expect("b");
    let rev = Revocation {
        at: t(NOW + 1),
        reason: Some(RevocationReason::Superseded),
    };
    let ghost: Serial = "ABCDEF".parse().expect("serial");
    let batch = ImportBatch {
        certs: vec![CertRecord::from_issued(&a), CertRecord::from_issued(&b)],
        revocations: vec![
            (b.info.serial.clone(), None, rev),
            (ghost.clone(), Some("old".into()), rev),
        ],
        users: vec![NewUser::named("alice"), NewUser::named("bob")],
    };
    let sum = s.import(&batch, t(NOW)).expect("import");
    assert_eq!(
        (sum.certs_added, sum.revocations_added, sum.users_added),
        (2, 2, 2)
    );
    assert!(s.is_revoked(&b.info.serial).expect("q"));
    assert!(s.is_revoked(&ghost).expect("q"));
    assert!(!s.is_revoked(&a.info.serial).expect("q"));
    let again = s.import(&batch, t(NOW)).expect("again");
    assert_eq!(
        (
            again.certs_skipped,
            again.revocations_added,
            again.users_skipped
        ),
        (2, 0, 2)
    );
}

fn arb_user() -> impl Strategy<Value = NewUser> {
    (
        "[a-z0-9][a-z0-9._@-]{0,20}",
        any::<bool>(),
        proptest::option::of(0i64..4_000_000_000),
        proptest::option::of(any::<u32>()),
        proptest::collection::vec((any::<u32>(), 0u8..=32), 0..4),
        proptest::option::of("[a-zA-Z0-9$=,+/]{10,40}"),
    )
        .prop_map(|(name, enabled, exp, ip, routes, hash)| NewUser {
            name,
            password_hash: hash,
            enabled,
            expires_at: exp.map(warren_pki::from_unix),
            fixed_ip: ip.map(Ipv4Addr::from),
            routes: routes
                .into_iter()
                .map(|(a, p)| {
                    IpNet::V4(
                        ipnet::Ipv4Net::new(Ipv4Addr::from(a), p)
                            .expect("prefix")
                            .trunc(),
                    )
                })
                .collect(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// What goes in comes out (`user(add(x)) == x`).
    #[test]
    fn user_round_trip(u in arb_user()) {
        let s = SqliteStore::open_in_memory().expect("open");
        s.add_user(&u, None, t(NOW)).expect("add");
        let got = s.user(&u.name).expect("get").expect("exists");
        prop_assert_eq!(&got.name, &u.name);
        prop_assert_eq!(&got.password_hash, &u.password_hash);
        prop_assert_eq!(got.enabled, u.enabled);
        prop_assert_eq!(got.expires_at, u.expires_at);
        prop_assert_eq!(got.fixed_ip, u.fixed_ip);
        prop_assert_eq!(&got.routes, &u.routes);
    }
}

#[test]
fn read_only_open_reads_and_refuses_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("warren.db");
    let s = SqliteStore::open(&path).expect("create");
    s.add_user(&NewUser::named("alice"), None, t(NOW))
        .expect("add");
    drop(s);
    let before = std::fs::read(&path).expect("read");

    let ro = SqliteStore::open_read_only(&path).expect("read-only open");
    assert!(ro.user("alice").expect("get").is_some());
    assert_eq!(ro.users().expect("list").len(), 1);
    assert!(
        ro.add_user(&NewUser::named("bob"), None, t(NOW)).is_err(),
        "a read-only store must not write"
    );
    drop(ro);
    assert_eq!(std::fs::read(&path).expect("read"), before);

    // A missing file is an error, not a new database.
    let none = dir.path().join("none.db");
    assert!(SqliteStore::open_read_only(&none).is_err());
    assert!(!none.exists());

    // An older schema cannot be migrated read-only.
    let c = rusqlite::Connection::open(&path).expect("raw");
    c.pragma_update(None, "user_version", 0).expect("downgrade");
    drop(c);
    assert!(matches!(
        SqliteStore::open_read_only(&path),
        Err(StoreError::NeedsMigration { found: 0, .. })
    ));
}
