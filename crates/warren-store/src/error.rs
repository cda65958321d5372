//! Store errors.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use warren_pki::{NameError, Serial};

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("cannot open the database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The database file could not be created with private permissions.
    #[error("cannot create the database {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The database was written by a newer warren.
    #[error(
        "the database has schema version {found}, this warren understands up to {supported}; \
         upgrade warren"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    /// A read-only open found a database that needs a schema upgrade first.
    #[error(
        "the database has schema version {found} and needs an upgrade to {supported}, which a \
         read-only open cannot do; run any writing warren command (e.g. `warren pki init`) once"
    )]
    NeedsMigration { found: i64, supported: i64 },
    /// An SQLite error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A value in the database does not parse (hand-edited or corrupted row).
    #[error("corrupt {what} in the database: {value:?}")]
    Corrupt { what: &'static str, value: String },
    /// The user name is not valid.
    #[error("invalid user name {name:?}: {source}")]
    BadName { name: String, source: NameError },
    /// `add_user` for a name that exists.
    #[error("user {0:?} already exists")]
    UserExists(String),
    /// A user that does not exist.
    #[error("no user {0:?}")]
    NoSuchUser(String),
    /// `add_group` for a name that exists.
    #[error("group {0:?} already exists")]
    GroupExists(String),
    /// A group that does not exist.
    #[error("no group {0:?} (create it with `warren group add`)")]
    NoSuchGroup(String),
    /// Another user already has this fixed address.
    #[error("{ip} is already the fixed address of user {user:?}")]
    FixedIpTaken { ip: Ipv4Addr, user: String },
    /// A certificate with this serial is already recorded.
    #[error("a certificate with serial {0} is already recorded")]
    CertExists(Serial),
    /// No certificate with this serial.
    #[error("no certificate with serial {0}")]
    NoSuchCert(Serial),
    /// Password hashing failed (parameters or salt rejected by argon2).
    #[error("password hashing failed: {0}")]
    Hash(argon2::password_hash::Error),
}
