//! What went wrong in the server application: what it was doing, and the typed cause from
//! the crate below; or a refusal of its own that says how to fix it. The binary prints the
//! chain on one line ("reading /var/lib/warren/pki/ca.crt: No such file or directory").
use std::path::PathBuf;

/// The result of the server application's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Doing `what` failed because of `source`.
    #[error("{what}")]
    Failed { what: String, source: Cause },
    #[error(transparent)]
    ConfigFailed(#[from] warren_config::ConfigError),
    #[error(transparent)]
    StoreFailed(#[from] warren_store::StoreError),
    #[error(transparent)]
    PkiFailed(#[from] warren_pki::PkiError),
    #[error(
        "`data-ciphers`: {0} is not supported (use AES-256-GCM, AES-128-GCM, CHACHA20-POLY1305)"
    )]
    Cipher(String),
    /// A script the config names failed, or cannot run with the rest of the config.
    #[error("{0}")]
    Script(String),
    #[error("`auth {0}`: unsupported digest (use SHA1, SHA256 or SHA512)")]
    Digest(String),
    #[error("tls-auth key direction {0}: expected 0 or 1")]
    KeyDirection(u8),
    #[error("status-version {0} is not supported (use 1, 2 or 3)")]
    StatusVersion(u8),
    #[error("port-share: {0} has no IPv4 address (port-share relays over IPv4, as OpenVPN does)")]
    PortShareNoIpv4(String),
    #[error("`local {0}`: no address of the right family")]
    LocalFamily(String),
    /// A bug: a UDP socket plan for a TCP server.
    #[error("internal: `proto tcp-server` has no UDP socket")]
    NoUdpSocket,
    #[error(
        "{loc}: crl-verify {} dir: not a directory (the directory form names a directory \
         holding one file per revoked serial; for a CRL file drop `dir`)",
        dir.display()
    )]
    CrlDirNotADirectory {
        loc: warren_config::Location,
        dir: PathBuf,
    },
    /// The state directory lost pieces after its initialisation.
    #[error(
        "the state directory {} is incomplete:\n  - {}\nwarren never creates key material \
         over an existing state (clients and exported profiles depend on it). Restore the \
         missing files from a backup. Only if nothing from this directory was ever used, move \
         it away and start afresh.",
        dir.display(),
        problems.join("\n  - ")
    )]
    StateIncomplete { dir: PathBuf, problems: Vec<String> },
    /// The state directory was never initialised.
    #[error(
        "{dir} has no PKI yet; create it with `warren pki init --state-dir {dir}` (or run \
         `warren server` once)",
        dir = .0.display()
    )]
    NoPki(PathBuf),
    /// A read-only command met a state directory that needs a writer first.
    #[error(
        "{d} {why}, which needs write access to finish; run `warren pki init --state-dir {d}` \
         as a user who can write it (read-only commands cannot)",
        d = dir.display()
    )]
    NeedsWriter { dir: PathBuf, why: &'static str },
    /// `pki import` into a directory that already holds state.
    #[error("{} already {why}", dir.display())]
    ImportTarget { dir: PathBuf, why: &'static str },
    /// An import was interrupted before its CA was written.
    #[error("{} holds an interrupted `warren pki import` (no CA yet): run the import again", .0.display())]
    ImportInterrupted(PathBuf),
    /// `warren-state-dir DIR` names a directory without a state.
    #[error(
        "`warren-state-dir {d}`: no warren state there; create it with `warren pki init \
         --state-dir {d}` or `warren pki import DIR --state-dir {d}`",
        d = .0.display()
    )]
    NoState(PathBuf),
    /// `management-client-user`/`-group` names nobody on this system.
    #[error("`management-client-{kind} {name}`: no such {kind} on this system")]
    ManagementAccount { kind: &'static str, name: String },
    /// The management password file has no password on its first line.
    #[error("management password file {}: the first line is empty (it must hold the password)", .0.display())]
    ManagementPassword(PathBuf),
    /// `management HOST PORT` did not resolve.
    #[error("`management {0}`: the address does not resolve")]
    ManagementAddress(String),
    /// The VPN network is one this host is already on.
    #[error(
        "the VPN network {network}/{prefix} overlaps {}/{} on interface {}: clients and this \
         host would route the same addresses two ways; choose a network this host is not on \
         (`--network 10.9.0.0/24`, or `server 10.9.0.0 255.255.255.0` in server.conf)",
        clash.addr,
        clash.prefix,
        clash.interface
    )]
    NetworkOverlap {
        network: std::net::Ipv4Addr,
        prefix: u8,
        clash: warren_io::InterfaceAddr,
    },
}

impl Error {
    /// The whole chain on one line, "what was done: why it failed", skipping a cause whose
    /// text the line already ends with.
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            let text = e.to_string();
            if !out.ends_with(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            cause = e.source();
        }
        out
    }

    /// Whether the operating system refused it for permissions or a read-only file system
    /// (somewhere in the chain).
    pub fn is_permission_denied(&self) -> bool {
        match self {
            Error::Failed {
                source: Cause::Io(e),
                ..
            } => matches!(
                e.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ),
            Error::Failed {
                source: Cause::Within(e),
                ..
            } => e.is_permission_denied(),
            _ => false,
        }
    }
}

/// What failed below: an error of the crate the server application drives (or its own).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Cause {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Config(#[from] warren_config::ConfigError),
    #[error(transparent)]
    Store(#[from] warren_store::StoreError),
    #[error(transparent)]
    Pki(#[from] warren_pki::PkiError),
    #[error(transparent)]
    Key(#[from] warren_crypto::StaticKeyError),
    #[error(transparent)]
    TlsCryptV2Key(#[from] warren_crypto::TlsCryptV2KeyError),
    #[error(transparent)]
    Tls(#[from] warren_openvpn::tls::TlsSetupError),
    #[error(transparent)]
    Driver(#[from] warren_driver::DriverError),
    #[error(transparent)]
    Status(#[from] warren_driver::status::StatusWriteError),
    #[error(transparent)]
    Nat(#[from] warren_net::NatError),
    #[error(transparent)]
    Net(#[from] warren_net::NetError),
    #[error(transparent)]
    Privileges(#[from] warren_io::PrivilegeError),
    #[error(transparent)]
    Tun(#[from] warren_io::TunError),
    #[error(transparent)]
    Socket(#[from] warren_io::BindError),
    #[error(transparent)]
    Listener(#[from] warren_io::TcpBindError),
    #[error(transparent)]
    Management(#[from] warren_io::MgmtBindError),
    #[error(transparent)]
    Access(#[from] warren_openvpn::access::AccessRuleError),
    #[error(transparent)]
    Within(Box<Error>),
}

impl From<Error> for Cause {
    fn from(e: Error) -> Cause {
        Cause::Within(Box::new(e))
    }
}

/// `.context("reading x")`, as with anyhow, but typed.
pub trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T>;
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<Cause>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.with_context(|| what)
    }

    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::Failed {
            what: what().into(),
            source: e.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_read_as_one_line() {
        let denied = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let e = Err::<(), _>(denied())
            .context("reading ca.crt")
            .context("reloading")
            .expect_err("an error");
        let why = denied().to_string();
        assert_eq!(e.report(), format!("reloading: reading ca.crt: {why}"));
        assert!(e.is_permission_denied());
        assert!(!Error::NoPki("/x".into()).is_permission_denied());
    }
}
