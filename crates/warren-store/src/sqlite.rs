//! The embedded SQLite backend.
//!
//! One database file (created 0600) in WAL mode with `synchronous=FULL`: a committed
//! transaction survives a crash or power loss, an interrupted one vanishes. The schema is
//! versioned with `PRAGMA user_version` and migrated forward inside one transaction when the
//! store is opened. Several processes may use the file at once (the server and `warren user
//! ...`): writers take the lock up front (`BEGIN IMMEDIATE`) and wait up to 10 s for each
//! other.

use std::fs::OpenOptions;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use warren_pki::{
    CertKind, PrivateKeyPem, RevocationReason, Revoked, Serial, from_unix, to_unix, validate_name,
};

use crate::access::{AccessOwner, AccessRecord, Group};
use crate::error::StoreError;
use crate::model::{
    CertFilter, CertRecord, DeletedUser, ImportBatch, ImportSummary, Lease, NewUser, Revocation,
    User, UserChange, UserSite,
};
use crate::store::Store;

/// Schema migrations; entry `i` takes `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: users, certificates (with revocations), leases, counters.
    "CREATE TABLE users (
        name TEXT PRIMARY KEY NOT NULL,
        password_hash TEXT,
        enabled INTEGER NOT NULL,
        expires_at INTEGER,
        fixed_ip TEXT UNIQUE,
        routes TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE certs (
        serial TEXT PRIMARY KEY NOT NULL,
        cn TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('ca', 'server', 'client')),
        not_before INTEGER NOT NULL,
        not_after INTEGER NOT NULL,
        pem TEXT,
        key_pem TEXT,
        revoked_at INTEGER,
        reason TEXT
     ) STRICT;
     CREATE INDEX certs_by_cn ON certs (cn);
     CREATE TABLE leases (
        cn TEXT PRIMARY KEY NOT NULL,
        ip TEXT NOT NULL UNIQUE,
        last_seen INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE meta (
        key TEXT PRIMARY KEY NOT NULL,
        value INTEGER NOT NULL
     ) STRICT;
     INSERT INTO meta (key, value) VALUES ('revision', 0), ('crl_number', 0);",
    // 2: users' own networks and pushes (`warren user set --subnet/--push`).
    "CREATE TABLE user_sites (
        name TEXT PRIMARY KEY NOT NULL,
        subnets TEXT NOT NULL DEFAULT '',
        push TEXT NOT NULL DEFAULT ''
     ) STRICT;",
    // 3: access rules of users and groups, and group memberships.
    crate::access::MIGRATION,
];

/// How long a writer waits for another process's transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: Option<PathBuf>,
}

impl SqliteStore {
    /// Opens (creating it 0600 if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(StoreError::Create {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::init(conn, Some(path.to_path_buf()))
    }

    /// Opens the database at `path` for reading only (commands that only look, on a state
    /// directory this process may not write, e.g. a read-only mount). Nothing is created or
    /// migrated; a database that needs a migration is an error saying to run a writing command
    /// first. When the WAL index cannot be created next to a read-only file, the file is read
    /// as immutable (nobody can be writing it through this path).
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        use rusqlite::OpenFlags;
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
        let conn = match Self::check_read_only(&conn) {
            Ok(()) => conn,
            Err(StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)))
                if e.code == rusqlite::ErrorCode::CannotOpen =>
            {
                drop(conn);
                let uri = format!(
                    "file:{}?immutable=1",
                    path.to_string_lossy()
                        .replace('%', "%25")
                        .replace('?', "%3f")
                );
                let conn = Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
                    .map_err(open_err)?;
                Self::check_read_only(&conn)?;
                conn
            }
            Err(e) => return Err(e),
        };
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path: Some(path.to_path_buf()),
        })
    }

    fn check_read_only(conn: &Connection) -> Result<(), StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let supported = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
        if version > supported {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported,
            });
        }
        if version < supported {
            return Err(StoreError::NeedsMigration {
                found: version,
                supported,
            });
        }
        Ok(())
    }

    /// A private in-memory database (tests).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?, None)
    }

    fn init(mut conn: Connection, path: Option<PathBuf>) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        if path.is_some() {
            let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::Corrupt {
                    what: "journal mode (WAL could not be enabled)",
                    value: mode,
                });
            }
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// The database file, `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Runs SQLite's `PRAGMA quick_check`; `Ok(true)` when the file is sound.
    pub fn quick_check(&self) -> Result<bool, StoreError> {
        let conn = self.lock();
        let r: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        Ok(r == "ok")
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock left no open transaction behind (rusqlite rolls
        // back on drop), so the connection is still good.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` in an immediate (write-locking) transaction, bumps the revision and commits.
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.execute(
            "UPDATE meta SET value = value + 1 WHERE key = 'revision'",
            [],
        )?;
        tx.commit()?;
        Ok(out)
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let supported = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if version > supported {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported,
        });
    }
    let start = usize::try_from(version).unwrap_or(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(i + 1).unwrap_or(i64::MAX),
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn corrupt(what: &'static str, value: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what,
        value: value.into(),
    }
}

fn site_from_row(row: &Row<'_>) -> rusqlite::Result<Result<(String, UserSite), StoreError>> {
    let name: String = row.get(0)?;
    let subnets: String = row.get(1)?;
    let push: String = row.get(2)?;
    Ok(routes_from_text(&subnets).map(|subnets| {
        let push = push
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        (name, UserSite { subnets, push })
    }))
}

fn routes_to_text(routes: &[IpNet]) -> String {
    routes
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

fn routes_from_text(text: &str) -> Result<Vec<IpNet>, StoreError> {
    text.split_whitespace()
        .map(|r| IpNet::from_str(r).map_err(|_| corrupt("route", r)))
        .collect()
}

const USER_COLUMNS: &str = "name, password_hash, enabled, expires_at, fixed_ip, routes, created_at";

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<Result<User, StoreError>> {
    let name: String = row.get(0)?;
    let password_hash: Option<String> = row.get(1)?;
    let enabled: bool = row.get(2)?;
    let expires_at: Option<i64> = row.get(3)?;
    let fixed_ip: Option<String> = row.get(4)?;
    let routes: String = row.get(5)?;
    let created_at: i64 = row.get(6)?;
    Ok((|| {
        Ok(User {
            name,
            password_hash,
            enabled,
            expires_at: expires_at.map(from_unix),
            fixed_ip: fixed_ip
                .map(|ip| Ipv4Addr::from_str(&ip).map_err(|_| corrupt("fixed address", ip)))
                .transpose()?,
            routes: routes_from_text(&routes)?,
            created_at: from_unix(created_at),
        })
    })())
}

const CERT_COLUMNS: &str =
    "serial, cn, kind, not_before, not_after, pem, key_pem, revoked_at, reason";

fn cert_from_row(row: &Row<'_>) -> rusqlite::Result<Result<CertRecord, StoreError>> {
    let serial: String = row.get(0)?;
    let cn: String = row.get(1)?;
    let kind: String = row.get(2)?;
    let not_before: i64 = row.get(3)?;
    let not_after: i64 = row.get(4)?;
    let pem: Option<String> = row.get(5)?;
    let key_pem: Option<String> = row.get(6)?;
    let revoked_at: Option<i64> = row.get(7)?;
    let reason: Option<String> = row.get(8)?;
    Ok((|| {
        let reason = reason
            .map(|r| RevocationReason::from_str(&r).map_err(|_| corrupt("revocation reason", r)))
            .transpose()?;
        Ok(CertRecord {
            serial: Serial::from_str(&serial).map_err(|_| corrupt("serial", serial.clone()))?,
            common_name: cn,
            kind: CertKind::from_str(&kind).map_err(|_| corrupt("certificate kind", kind))?,
            not_before: from_unix(not_before),
            not_after: from_unix(not_after),
            cert_pem: pem,
            key_pem: key_pem.map(PrivateKeyPem::new),
            revoked: revoked_at.map(|at| Revocation {
                at: from_unix(at),
                reason,
            }),
        })
    })())
}

fn lease_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Lease, StoreError>> {
    let cn: String = row.get(0)?;
    let ip: String = row.get(1)?;
    let last_seen: i64 = row.get(2)?;
    Ok(Ipv4Addr::from_str(&ip)
        .map_err(|_| corrupt("lease address", ip))
        .map(|ip| Lease {
            common_name: cn,
            ip,
            last_seen: from_unix(last_seen),
        }))
}

/// Collects rows decoded by one of the `*_from_row` functions.
fn collect<T>(
    rows: impl Iterator<Item = rusqlite::Result<Result<T, StoreError>>>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for r in rows {
        out.push(r??);
    }
    Ok(out)
}

fn check_fixed_ip(
    tx: &Transaction<'_>,
    name: &str,
    ip: Option<Ipv4Addr>,
) -> Result<(), StoreError> {
    let Some(ip) = ip else { return Ok(()) };
    let other: Option<String> = tx
        .query_row(
            "SELECT name FROM users WHERE fixed_ip = ?1 AND name <> ?2",
            params![ip.to_string(), name],
            |r| r.get(0),
        )
        .optional()?;
    match other {
        Some(user) => Err(StoreError::FixedIpTaken { ip, user }),
        None => Ok(()),
    }
}

fn insert_user(tx: &Transaction<'_>, user: &NewUser, now: SystemTime) -> Result<bool, StoreError> {
    validate_name(&user.name).map_err(|source| StoreError::BadName {
        name: user.name.clone(),
        source,
    })?;
    check_fixed_ip(tx, &user.name, user.fixed_ip)?;
    let n = tx.execute(
        "INSERT OR IGNORE INTO users (name, password_hash, enabled, expires_at, fixed_ip, routes, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            user.name,
            user.password_hash,
            user.enabled,
            user.expires_at.map(to_unix),
            user.fixed_ip.map(|ip| ip.to_string()),
            routes_to_text(&user.routes),
            to_unix(now),
        ],
    )?;
    Ok(n == 1)
}

fn insert_cert(tx: &Transaction<'_>, c: &CertRecord, or_ignore: bool) -> Result<bool, StoreError> {
    let verb = if or_ignore {
        "INSERT OR IGNORE"
    } else {
        "INSERT"
    };
    let sql =
        format!("{verb} INTO certs ({CERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
    let r = tx.execute(
        &sql,
        params![
            c.serial.to_string(),
            c.common_name,
            c.kind.as_str(),
            to_unix(c.not_before),
            to_unix(c.not_after),
            c.cert_pem,
            c.key_pem.as_ref().map(|k| k.as_str()),
            c.revoked.map(|r| to_unix(r.at)),
            c.revoked.and_then(|r| r.reason).map(|r| r.as_str()),
        ],
    );
    match r {
        Ok(n) => Ok(n == 1),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(StoreError::CertExists(c.serial.clone()))
        }
        Err(e) => Err(e.into()),
    }
}

impl Store for SqliteStore {
    fn add_user(
        &self,
        user: &NewUser,
        cert: Option<&CertRecord>,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            if !insert_user(tx, user, now)? {
                return Err(StoreError::UserExists(user.name.clone()));
            }
            if let Some(c) = cert {
                insert_cert(tx, c, false)?;
            }
            Ok(())
        })
    }

    fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"),
                [name],
                user_from_row,
            )
            .optional()?;
        row.transpose()
    }

    fn users(&self) -> Result<Vec<User>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))?;
        let rows = st.query_map([], user_from_row)?;
        collect(rows)
    }

    fn update_user(&self, name: &str, change: &UserChange) -> Result<(), StoreError> {
        self.write(|tx| {
            let exists: Option<i64> = tx
                .query_row("SELECT 1 FROM users WHERE name = ?1", [name], |r| r.get(0))
                .optional()?;
            if exists.is_none() {
                return Err(StoreError::NoSuchUser(name.to_owned()));
            }
            if let Some(h) = &change.password_hash {
                tx.execute(
                    "UPDATE users SET password_hash = ?1 WHERE name = ?2",
                    params![h, name],
                )?;
            }
            if let Some(e) = change.enabled {
                tx.execute(
                    "UPDATE users SET enabled = ?1 WHERE name = ?2",
                    params![e, name],
                )?;
            }
            if let Some(x) = change.expires_at {
                tx.execute(
                    "UPDATE users SET expires_at = ?1 WHERE name = ?2",
                    params![x.map(to_unix), name],
                )?;
            }
            if let Some(ip) = change.fixed_ip {
                check_fixed_ip(tx, name, ip)?;
                tx.execute(
                    "UPDATE users SET fixed_ip = ?1 WHERE name = ?2",
                    params![ip.map(|i| i.to_string()), name],
                )?;
            }
            if let Some(routes) = &change.routes {
                tx.execute(
                    "UPDATE users SET routes = ?1 WHERE name = ?2",
                    params![routes_to_text(routes), name],
                )?;
            }
            Ok(())
        })
    }

    fn delete_user(&self, name: &str, now: SystemTime) -> Result<DeletedUser, StoreError> {
        self.write(|tx| {
            let n = tx.execute("DELETE FROM users WHERE name = ?1", [name])?;
            if n == 0 {
                return Err(StoreError::NoSuchUser(name.to_owned()));
            }
            tx.execute("DELETE FROM user_sites WHERE name = ?1", [name])?;
            let serials: Vec<String> = {
                let mut st = tx.prepare(
                    "SELECT serial FROM certs WHERE cn = ?1 AND kind = 'client' AND revoked_at IS NULL",
                )?;
                st.query_map([name], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?
            };
            tx.execute(
                "UPDATE certs SET revoked_at = ?1, reason = ?2
                 WHERE cn = ?3 AND kind = 'client' AND revoked_at IS NULL",
                params![
                    to_unix(now),
                    RevocationReason::CessationOfOperation.as_str(),
                    name
                ],
            )?;
            let released = tx.execute("DELETE FROM leases WHERE cn = ?1", [name])? > 0;
            crate::access::forget_user(tx, name)?;
            let revoked = serials
                .into_iter()
                .map(|s| Serial::from_str(&s).map_err(|_| corrupt("serial", s)))
                .collect::<Result<_, _>>()?;
            Ok(DeletedUser {
                revoked,
                lease_released: released,
            })
        })
    }

    fn add_cert(&self, cert: &CertRecord) -> Result<(), StoreError> {
        self.write(|tx| insert_cert(tx, cert, false).map(|_| ()))
    }

    fn cert(&self, serial: &Serial) -> Result<Option<CertRecord>, StoreError> {
        let conn = self.lock();
        conn.query_row(
            &format!("SELECT {CERT_COLUMNS} FROM certs WHERE serial = ?1"),
            [serial.to_string()],
            cert_from_row,
        )
        .optional()?
        .transpose()
    }

    fn certs(&self, filter: &CertFilter) -> Result<Vec<CertRecord>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare(&format!(
            "SELECT {CERT_COLUMNS} FROM certs
             WHERE (?1 IS NULL OR cn = ?1) AND (?2 IS NULL OR kind = ?2)
               AND (?3 = 0 OR revoked_at IS NULL)
             ORDER BY not_before DESC, serial"
        ))?;
        let rows = st.query_map(
            params![
                filter.common_name,
                filter.kind.map(|k| k.as_str()),
                filter.unrevoked_only
            ],
            cert_from_row,
        )?;
        collect(rows)
    }

    fn revoke(
        &self,
        serial: &Serial,
        at: SystemTime,
        reason: Option<RevocationReason>,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let state: Option<Option<i64>> = tx
                .query_row(
                    "SELECT revoked_at FROM certs WHERE serial = ?1",
                    [serial.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            match state {
                None => Err(StoreError::NoSuchCert(serial.clone())),
                Some(Some(_)) => Ok(false),
                Some(None) => {
                    tx.execute(
                        "UPDATE certs SET revoked_at = ?1, reason = ?2 WHERE serial = ?3",
                        params![to_unix(at), reason.map(|r| r.as_str()), serial.to_string()],
                    )?;
                    Ok(true)
                }
            }
        })
    }

    fn is_revoked(&self, serial: &Serial) -> Result<bool, StoreError> {
        let conn = self.lock();
        let r: Option<Option<i64>> = conn
            .query_row(
                "SELECT revoked_at FROM certs WHERE serial = ?1",
                [serial.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(matches!(r, Some(Some(_))))
    }

    fn revocations(&self) -> Result<Vec<Revoked>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare(&format!(
            "SELECT {CERT_COLUMNS} FROM certs WHERE revoked_at IS NOT NULL ORDER BY serial"
        ))?;
        let rows = st.query_map([], cert_from_row)?;
        Ok(collect(rows)?
            .into_iter()
            .filter_map(|c| {
                c.revoked.map(|r| Revoked {
                    serial: c.serial,
                    revoked_at: r.at,
                    reason: r.reason,
                })
            })
            .collect())
    }

    fn next_crl_number(&self) -> Result<u64, StoreError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE meta SET value = value + 1 WHERE key = 'crl_number'",
                [],
            )?;
            let n: i64 =
                tx.query_row("SELECT value FROM meta WHERE key = 'crl_number'", [], |r| {
                    r.get(0)
                })?;
            u64::try_from(n).map_err(|_| corrupt("CRL number", n.to_string()))
        })
    }

    fn import(&self, batch: &ImportBatch, now: SystemTime) -> Result<ImportSummary, StoreError> {
        self.write(|tx| {
            let mut s = ImportSummary::default();
            for c in &batch.certs {
                if insert_cert(tx, c, true)? {
                    s.certs_added += 1;
                } else {
                    s.certs_skipped += 1;
                }
            }
            for (serial, cn, rev) in &batch.revocations {
                let updated = tx.execute(
                    "UPDATE certs SET revoked_at = ?1, reason = ?2
                     WHERE serial = ?3 AND revoked_at IS NULL",
                    params![
                        to_unix(rev.at),
                        rev.reason.map(|r| r.as_str()),
                        serial.to_string()
                    ],
                )?;
                if updated > 0 {
                    s.revocations_added += 1;
                    continue;
                }
                let stub = CertRecord {
                    serial: serial.clone(),
                    common_name: cn.clone().unwrap_or_default(),
                    kind: CertKind::Client,
                    not_before: rev.at,
                    not_after: rev.at,
                    cert_pem: None,
                    key_pem: None,
                    revoked: Some(*rev),
                };
                if insert_cert(tx, &stub, true)? {
                    s.revocations_added += 1;
                }
            }
            for u in &batch.users {
                if insert_user(tx, u, now)? {
                    s.users_added += 1;
                } else {
                    s.users_skipped += 1;
                }
            }
            Ok(s)
        })
    }

    fn lease_for(&self, common_name: &str) -> Result<Option<Lease>, StoreError> {
        let conn = self.lock();
        conn.query_row(
            "SELECT cn, ip, last_seen FROM leases WHERE cn = ?1",
            [common_name],
            lease_from_row,
        )
        .optional()?
        .transpose()
    }

    fn record_lease(
        &self,
        common_name: &str,
        ip: Ipv4Addr,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            let ip = ip.to_string();
            tx.execute(
                "DELETE FROM leases WHERE ip = ?1 AND cn <> ?2",
                params![ip, common_name],
            )?;
            tx.execute(
                "INSERT INTO leases (cn, ip, last_seen) VALUES (?1, ?2, ?3)
                 ON CONFLICT (cn) DO UPDATE SET ip = excluded.ip, last_seen = excluded.last_seen",
                params![common_name, ip, to_unix(now)],
            )?;
            Ok(())
        })
    }

    fn release_lease(&self, common_name: &str) -> Result<bool, StoreError> {
        self.write(|tx| Ok(tx.execute("DELETE FROM leases WHERE cn = ?1", [common_name])? > 0))
    }

    fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare("SELECT cn, ip, last_seen FROM leases")?;
        let rows = st.query_map([], lease_from_row)?;
        let mut v = collect(rows)?;
        v.sort_by_key(|l| l.ip);
        Ok(v)
    }

    fn user_site(&self, name: &str) -> Result<UserSite, StoreError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                "SELECT name, subnets, push FROM user_sites WHERE name = ?1",
                [name],
                site_from_row,
            )
            .optional()?;
        Ok(row.transpose()?.map(|(_, s)| s).unwrap_or_default())
    }

    fn set_user_site(&self, name: &str, site: &UserSite) -> Result<(), StoreError> {
        self.write(|tx| {
            let exists: Option<i64> = tx
                .query_row("SELECT 1 FROM users WHERE name = ?1", [name], |r| r.get(0))
                .optional()?;
            if exists.is_none() {
                return Err(StoreError::NoSuchUser(name.to_owned()));
            }
            if site.is_empty() {
                tx.execute("DELETE FROM user_sites WHERE name = ?1", [name])?;
            } else {
                tx.execute(
                    "INSERT OR REPLACE INTO user_sites (name, subnets, push) VALUES (?1, ?2, ?3)",
                    params![name, routes_to_text(&site.subnets), site.push.join("\n")],
                )?;
            }
            Ok(())
        })
    }

    fn user_sites(&self) -> Result<Vec<(String, UserSite)>, StoreError> {
        let conn = self.lock();
        let mut st = conn.prepare("SELECT name, subnets, push FROM user_sites ORDER BY name")?;
        let rows = st.query_map([], site_from_row)?;
        collect(rows)
    }

    fn access_rules(&self, owner: &AccessOwner) -> Result<Vec<AccessRecord>, StoreError> {
        crate::access::rules(&self.lock(), owner)
    }

    fn set_access_rules(
        &self,
        owner: &AccessOwner,
        clear: bool,
        append: &[AccessRecord],
    ) -> Result<(), StoreError> {
        self.write(|tx| crate::access::set_rules(tx, owner, clear, append))
    }

    fn user_groups(&self, user: &str) -> Result<Vec<String>, StoreError> {
        crate::access::user_groups(&self.lock(), user)
    }

    fn set_user_groups(&self, user: &str, clear: bool, join: &[String]) -> Result<(), StoreError> {
        self.write(|tx| crate::access::set_user_groups(tx, user, clear, join))
    }

    fn add_group(&self, name: &str) -> Result<(), StoreError> {
        self.write(|tx| crate::access::add_group(tx, name))
    }

    fn delete_group(&self, name: &str) -> Result<(), StoreError> {
        self.write(|tx| crate::access::delete_group(tx, name))
    }

    fn groups(&self) -> Result<Vec<Group>, StoreError> {
        crate::access::groups(&self.lock())
    }

    fn effective_access(&self, user: &str) -> Result<Vec<AccessRecord>, StoreError> {
        crate::access::effective(&self.lock(), user)
    }

    fn revision(&self) -> Result<u64, StoreError> {
        let conn = self.lock();
        let n: i64 = conn.query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| {
            r.get(0)
        })?;
        u64::try_from(n).map_err(|_| corrupt("revision", n.to_string()))
    }
}
