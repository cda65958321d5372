//! Access rules of users and groups: order, clearing, memberships, deletion, revision.

use std::time::{Duration, UNIX_EPOCH};

use warren_store::{AccessOwner, AccessRecord, NewUser, SqliteStore, Store, StoreError};

fn rec(allow: bool, rule: &str) -> AccessRecord {
    AccessRecord {
        allow,
        rule: rule.to_owned(),
    }
}

#[test]
fn rules_groups_and_the_effective_list() {
    let s = SqliteStore::open_in_memory().expect("open");
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    s.add_user(&NewUser::named("alice"), None, now)
        .expect("add");
    let alice = AccessOwner::User("alice".into());
    let ops = AccessOwner::Group("ops".into());
    assert!(matches!(
        s.set_access_rules(&AccessOwner::User("nobody".into()), false, &[]),
        Err(StoreError::NoSuchUser(_))
    ));
    assert!(matches!(
        s.set_access_rules(&ops, false, &[]),
        Err(StoreError::NoSuchGroup(_))
    ));
    let r0 = s.revision().expect("rev");
    s.set_access_rules(
        &alice,
        false,
        &[rec(false, "10.0.0.5"), rec(true, "10.0.0.0/24")],
    )
    .expect("set");
    assert!(
        s.revision().expect("rev") > r0,
        "a rule change moves the revision"
    );
    s.set_access_rules(&alice, false, &[rec(true, "192.168.1.10:443/tcp")])
        .expect("append");
    assert_eq!(
        s.access_rules(&alice).expect("rules"),
        [
            rec(false, "10.0.0.5"),
            rec(true, "10.0.0.0/24"),
            rec(true, "192.168.1.10:443/tcp")
        ]
    );
    s.add_group("ops").expect("group");
    assert!(matches!(
        s.add_group("ops"),
        Err(StoreError::GroupExists(_))
    ));
    assert!(matches!(
        s.add_group("a b"),
        Err(StoreError::BadName { .. })
    ));
    s.add_group("dev").expect("group");
    s.set_access_rules(&ops, false, &[rec(true, "fd00::/64")])
        .expect("ops");
    s.set_access_rules(
        &AccessOwner::Group("dev".into()),
        false,
        &[rec(false, "0.0.0.0/0")],
    )
    .expect("dev");
    assert!(matches!(
        s.set_user_groups("alice", false, &["nope".into()]),
        Err(StoreError::NoSuchGroup(_))
    ));
    s.set_user_groups("alice", false, &["dev".into(), "ops".into()])
        .expect("join");
    s.set_user_groups("alice", false, &["dev".into()])
        .expect("again: no change");
    assert_eq!(s.user_groups("alice").expect("groups"), ["dev", "ops"]);
    // User rules first, then the groups in the order joined.
    assert_eq!(
        s.effective_access("alice").expect("eff"),
        [
            rec(false, "10.0.0.5"),
            rec(true, "10.0.0.0/24"),
            rec(true, "192.168.1.10:443/tcp"),
            rec(false, "0.0.0.0/0"),
            rec(true, "fd00::/64"),
        ]
    );
    let groups = s.groups().expect("groups");
    assert_eq!(
        groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
        ["dev", "ops"]
    );
    assert_eq!(groups[1].members, ["alice"]);
    // Clearing: rules, then memberships.
    s.set_access_rules(&alice, true, &[rec(true, "10.9.0.1")])
        .expect("replace");
    assert_eq!(
        s.access_rules(&alice).expect("rules"),
        [rec(true, "10.9.0.1")]
    );
    s.set_user_groups("alice", true, &["ops".into()])
        .expect("only ops");
    assert_eq!(s.user_groups("alice").expect("groups"), ["ops"]);
    s.delete_group("ops").expect("del");
    assert!(s.user_groups("alice").expect("groups").is_empty());
    assert!(matches!(
        s.delete_group("ops"),
        Err(StoreError::NoSuchGroup(_))
    ));
    // A deleted user's rules go with it: a new user of that name starts clean.
    s.set_user_groups("alice", false, &["dev".into()])
        .expect("join");
    s.delete_user("alice", now).expect("del user");
    s.add_user(&NewUser::named("alice"), None, now)
        .expect("again");
    assert!(s.effective_access("alice").expect("eff").is_empty());
    assert!(s.groups().expect("groups")[0].members.is_empty());
}
