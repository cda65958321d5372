//! The warren server application, between the `warren` binary (arguments, output, logging)
//! and the crates it drives.
//!
//! * [`state`]: the crash-safe state directory (PKI, tls-crypt key, database).
//! * [`auth`]: the login policy over the state's database ([`auth::StoreAuth`]: users,
//!   passwords, rate limits, revocation) and the address leases: with a database, the
//!   lease table decides every client's address.
//! * [`access`]: per-user access rules from the database and `warren-access`, compiled for
//!   the data plane.
//! * [`crl`]: `crl-verify`, and its reload while the server runs.
//! * [`serve`]: from a lowered `ServerConfig` to a running loop ([`run`]): engine, tun,
//!   sockets, NAT, privilege drop, SIGHUP reloads.
//! * [`management`]: the management interface's socket and settings from `management ...`.
//! * [`convert`]: directive values as engine types (shared with the client).
#![forbid(unsafe_code)]

pub mod access;
pub mod auth;
pub mod ccd;
pub mod convert;
pub mod crl;
mod error;
pub mod management;
pub mod scripts;
pub mod serve;
pub mod state;

pub use error::{Cause, Error, Result};
pub use serve::{
    Account, ConfigSource, Launch, StoreBacked, engine_config, key_reader_main, nat_undo_helper,
    open_state, run, run_as,
};
