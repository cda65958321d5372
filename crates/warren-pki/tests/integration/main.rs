//! warren-pki's integration tests, in one test binary (one link in the release build).

mod easyrsa;
mod issue;
