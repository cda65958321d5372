//! warren-config's integration tests, in one test binary (one link in the release build).

mod client;
mod server;
