//! Access rules of users and groups (SQLite tables of schema version 2).
//!
//! The store keeps each rule as its action and its text, in order; what the text means is
//! the engine's business (`warren_openvpn::access`), which callers use to check a rule
//! before they store it. An identity's list is its user's rules, then the rules of each of
//! its groups in the order it joined them ([`Store::effective_access`]).
//!
//! [`Store::effective_access`]: crate::Store::effective_access

use rusqlite::{OptionalExtension, Transaction, params};
use warren_pki::validate_name;

use crate::error::StoreError;

/// Schema step 2: groups, memberships and rules.
pub(crate) const MIGRATION: &str = "CREATE TABLE access_groups (
        name TEXT PRIMARY KEY NOT NULL
     ) STRICT;
     CREATE TABLE access_members (
        user TEXT NOT NULL,
        grp TEXT NOT NULL,
        pos INTEGER NOT NULL,
        PRIMARY KEY (user, grp)
     ) STRICT;
     CREATE TABLE access_rules (
        owner_kind TEXT NOT NULL CHECK (owner_kind IN ('user', 'group')),
        owner TEXT NOT NULL,
        pos INTEGER NOT NULL,
        allow INTEGER NOT NULL,
        rule TEXT NOT NULL,
        PRIMARY KEY (owner_kind, owner, pos)
     ) STRICT;";

/// Whose rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AccessOwner {
    User(String),
    Group(String),
}

impl AccessOwner {
    fn kind(&self) -> &'static str {
        match self {
            AccessOwner::User(_) => "user",
            AccessOwner::Group(_) => "group",
        }
    }

    fn name(&self) -> &str {
        match self {
            AccessOwner::User(n) | AccessOwner::Group(n) => n,
        }
    }
}

/// One stored rule: `allow` or deny, and the rule's text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccessRecord {
    pub allow: bool,
    pub rule: String,
}

/// A group: its rules and its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub rules: Vec<AccessRecord>,
    pub members: Vec<String>,
}

pub(crate) fn check_owner(tx: &Transaction<'_>, owner: &AccessOwner) -> Result<(), StoreError> {
    let (table, err): (&str, fn(String) -> StoreError) = match owner {
        AccessOwner::User(_) => ("users", StoreError::NoSuchUser),
        AccessOwner::Group(_) => ("access_groups", StoreError::NoSuchGroup),
    };
    let found: Option<i64> = tx
        .query_row(
            &format!("SELECT 1 FROM {table} WHERE name = ?1"),
            [owner.name()],
            |r| r.get(0),
        )
        .optional()?;
    match found {
        Some(_) => Ok(()),
        None => Err(err(owner.name().to_owned())),
    }
}

pub(crate) fn rules(
    conn: &rusqlite::Connection,
    owner: &AccessOwner,
) -> Result<Vec<AccessRecord>, StoreError> {
    let mut st = conn.prepare(
        "SELECT allow, rule FROM access_rules WHERE owner_kind = ?1 AND owner = ?2 ORDER BY pos",
    )?;
    let rows = st.query_map(params![owner.kind(), owner.name()], |r| {
        Ok(AccessRecord {
            allow: r.get(0)?,
            rule: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn set_rules(
    tx: &Transaction<'_>,
    owner: &AccessOwner,
    clear: bool,
    append: &[AccessRecord],
) -> Result<(), StoreError> {
    check_owner(tx, owner)?;
    if clear {
        tx.execute(
            "DELETE FROM access_rules WHERE owner_kind = ?1 AND owner = ?2",
            params![owner.kind(), owner.name()],
        )?;
    }
    let first: i64 = tx.query_row(
        "SELECT COALESCE(MAX(pos), -1) + 1 FROM access_rules WHERE owner_kind = ?1 AND owner = ?2",
        params![owner.kind(), owner.name()],
        |r| r.get(0),
    )?;
    for (pos, r) in (first..).zip(append) {
        tx.execute(
            "INSERT INTO access_rules (owner_kind, owner, pos, allow, rule)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![owner.kind(), owner.name(), pos, r.allow, r.rule],
        )?;
    }
    Ok(())
}

pub(crate) fn user_groups(
    conn: &rusqlite::Connection,
    user: &str,
) -> Result<Vec<String>, StoreError> {
    let mut st = conn.prepare("SELECT grp FROM access_members WHERE user = ?1 ORDER BY pos")?;
    let rows = st.query_map([user], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub(crate) fn set_user_groups(
    tx: &Transaction<'_>,
    user: &str,
    clear: bool,
    join: &[String],
) -> Result<(), StoreError> {
    check_owner(tx, &AccessOwner::User(user.to_owned()))?;
    if clear {
        tx.execute("DELETE FROM access_members WHERE user = ?1", [user])?;
    }
    for g in join {
        check_owner(tx, &AccessOwner::Group(g.clone()))?;
        tx.execute(
            "INSERT OR IGNORE INTO access_members (user, grp, pos)
             VALUES (?1, ?2, (SELECT COALESCE(MAX(pos), -1) + 1 FROM access_members WHERE user = ?1))",
            params![user, g],
        )?;
    }
    Ok(())
}

pub(crate) fn add_group(tx: &Transaction<'_>, name: &str) -> Result<(), StoreError> {
    validate_name(name).map_err(|source| StoreError::BadName {
        name: name.to_owned(),
        source,
    })?;
    let n = tx.execute(
        "INSERT OR IGNORE INTO access_groups (name) VALUES (?1)",
        [name],
    )?;
    if n == 0 {
        return Err(StoreError::GroupExists(name.to_owned()));
    }
    Ok(())
}

pub(crate) fn delete_group(tx: &Transaction<'_>, name: &str) -> Result<(), StoreError> {
    if tx.execute("DELETE FROM access_groups WHERE name = ?1", [name])? == 0 {
        return Err(StoreError::NoSuchGroup(name.to_owned()));
    }
    tx.execute("DELETE FROM access_members WHERE grp = ?1", [name])?;
    tx.execute(
        "DELETE FROM access_rules WHERE owner_kind = 'group' AND owner = ?1",
        [name],
    )?;
    Ok(())
}

/// Forgets a deleted user's rules and memberships (in `delete_user`'s transaction).
pub(crate) fn forget_user(tx: &Transaction<'_>, name: &str) -> Result<(), StoreError> {
    tx.execute("DELETE FROM access_members WHERE user = ?1", [name])?;
    tx.execute(
        "DELETE FROM access_rules WHERE owner_kind = 'user' AND owner = ?1",
        [name],
    )?;
    Ok(())
}

pub(crate) fn groups(conn: &rusqlite::Connection) -> Result<Vec<Group>, StoreError> {
    let names: Vec<String> = {
        let mut st = conn.prepare("SELECT name FROM access_groups ORDER BY name")?;
        st.query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    let mut out = Vec::new();
    for name in names {
        let members: Vec<String> = {
            let mut st =
                conn.prepare("SELECT user FROM access_members WHERE grp = ?1 ORDER BY user")?;
            st.query_map([&name], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        let rules = rules(conn, &AccessOwner::Group(name.clone()))?;
        out.push(Group {
            name,
            rules,
            members,
        });
    }
    Ok(out)
}

/// The user's rules, then each group's in membership order.
pub(crate) fn effective(
    conn: &rusqlite::Connection,
    user: &str,
) -> Result<Vec<AccessRecord>, StoreError> {
    let mut out = rules(conn, &AccessOwner::User(user.to_owned()))?;
    for g in user_groups(conn, user)? {
        out.extend(rules(conn, &AccessOwner::Group(g))?);
    }
    Ok(out)
}
