//! warren's state store: users, issued certificates, revocations and address leases.
//!
//! The model is one small interface, [`Store`], with an embedded SQLite implementation
//! ([`SqliteStore`]); a PostgreSQL implementation for several servers sharing one state can
//! come later behind the same trait. Every method is one transaction, so a crash (or `kill -9`)
//! at any moment leaves either the old or the new state, never half of an operation (SQLite in
//! WAL mode with `synchronous=FULL`). Every change bumps a [`Store::revision`] counter, so a
//! running server notices `warren user disable` or `warren pki revoke` from another process by
//! polling one integer.
//!
//! Around the store, and independent of any backend:
//!
//! * [`password`]: argon2id hashing (PHC strings) and verification;
//! * [`Store::verify_password`] and [`Store::check_user`]: the verdict the server turns into
//!   `AUTH_FAILED` or a session ([`AuthOutcome`]);
//! * [`AuthRateLimiter`]: sans-IO failed-login throttling per (source address, user) and per
//!   source address (never across addresses),
//!   driven by the caller's `now`.
//!
//! Access rules of users and groups ([`AccessRecord`], [`Group`]) are kept as text in order;
//! the engine parses and enforces them.
//!
//! Wall-clock times (expiry, revocation, lease timestamps) come in as `SystemTime` arguments;
//! nothing here reads a clock.
#![forbid(unsafe_code)]

mod access;
mod error;
mod model;
pub mod password;
mod ratelimit;
mod sqlite;
mod store;

pub use access::{AccessOwner, AccessRecord, Group};
pub use error::StoreError;
pub use model::{
    AuthOutcome, CertFilter, CertRecord, DeletedUser, ImportBatch, ImportSummary, Lease, NewUser,
    Revocation, User, UserChange, UserSite,
};
pub use ratelimit::{AuthRateLimiter, LimitedBy, RateDecision, RateLimitConfig};
pub use sqlite::SqliteStore;
pub use store::Store;
