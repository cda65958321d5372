//! The records the store keeps.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::SystemTime;

use ipnet::IpNet;
use warren_pki::{CertInfo, CertKind, Issued, PrivateKeyPem, RevocationReason, Serial};

/// A VPN user. The name is also the common name of the user's certificates.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// The user name (validated by [`warren_pki::validate_name`]).
    pub name: String,
    /// The argon2id hash of the password (PHC string), `None` for certificate-only users.
    pub password_hash: Option<String>,
    /// `false` after `warren user disable`: refused at once, even with a valid certificate.
    pub enabled: bool,
    /// After this instant the user is refused.
    pub expires_at: Option<SystemTime>,
    /// The VPN address this user always gets.
    pub fixed_ip: Option<Ipv4Addr>,
    /// Extra routes pushed to this user (`push "route ..."` / `route-ipv6`).
    pub routes: Vec<IpNet>,
    /// When the user was added.
    pub created_at: SystemTime,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<argon2id>"),
            )
            .field("enabled", &self.enabled)
            .field("expires_at", &self.expires_at)
            .field("fixed_ip", &self.fixed_ip)
            .field("routes", &self.routes)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// A user's own networks and pushes (`warren user set NAME --subnet NET --push OPT`): what a
/// client-config-dir file's `iroute`/`iroute-ipv6` and `push` lines give a client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserSite {
    /// Networks behind this user's client: routed to it (the server also routes them into
    /// its tun), and it may send from them.
    pub subnets: Vec<IpNet>,
    /// Options pushed to this user only, after the server's own.
    pub push: Vec<String>,
}

impl UserSite {
    pub fn is_empty(&self) -> bool {
        self.subnets.is_empty() && self.push.is_empty()
    }
}

impl User {
    /// `true` when the user has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }
}

/// A user to add.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct NewUser {
    /// The user name.
    pub name: String,
    /// See [`User::password_hash`]; make it with [`crate::password::hash`].
    pub password_hash: Option<String>,
    /// See [`User::enabled`] (`true` normally).
    pub enabled: bool,
    /// See [`User::expires_at`].
    pub expires_at: Option<SystemTime>,
    /// See [`User::fixed_ip`].
    pub fixed_ip: Option<Ipv4Addr>,
    /// See [`User::routes`].
    pub routes: Vec<IpNet>,
}

impl NewUser {
    /// An enabled user without password, expiry, fixed address or routes.
    pub fn named(name: impl Into<String>) -> Self {
        NewUser {
            name: name.into(),
            enabled: true,
            ..Default::default()
        }
    }
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("name", &self.name)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<argon2id>"),
            )
            .field("enabled", &self.enabled)
            .field("expires_at", &self.expires_at)
            .field("fixed_ip", &self.fixed_ip)
            .field("routes", &self.routes)
            .finish()
    }
}

/// Changes to a user; `None` fields are left alone.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct UserChange {
    /// `Some(None)` removes the password.
    pub password_hash: Option<Option<String>>,
    pub enabled: Option<bool>,
    /// `Some(None)` removes the expiry.
    pub expires_at: Option<Option<SystemTime>>,
    /// `Some(None)` removes the fixed address.
    pub fixed_ip: Option<Option<Ipv4Addr>>,
    /// Replaces the routes.
    pub routes: Option<Vec<IpNet>>,
}

impl fmt::Debug for UserChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserChange")
            .field(
                "password_hash",
                &self
                    .password_hash
                    .as_ref()
                    .map(|h| h.as_ref().map(|_| "<argon2id>")),
            )
            .field("enabled", &self.enabled)
            .field("expires_at", &self.expires_at)
            .field("fixed_ip", &self.fixed_ip)
            .field("routes", &self.routes)
            .finish()
    }
}

/// What `delete_user` did besides removing the row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeletedUser {
    /// Certificates of the user that were still valid and are now revoked
    /// (`cessationOfOperation`).
    pub revoked: Vec<Serial>,
    /// The user's address lease was released.
    pub lease_released: bool,
}

/// When and why a certificate was revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub at: SystemTime,
    pub reason: Option<RevocationReason>,
}

/// An issued (or imported) certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertRecord {
    pub serial: Serial,
    pub common_name: String,
    pub kind: CertKind,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The certificate, PEM. `None` for a revocation imported without its certificate.
    pub cert_pem: Option<String>,
    /// The private key, PEM, when warren generated or imported it (needed to export a profile).
    pub key_pem: Option<PrivateKeyPem>,
    pub revoked: Option<Revocation>,
}

impl CertRecord {
    /// The record of a certificate warren just issued.
    pub fn from_issued(issued: &Issued) -> Self {
        CertRecord {
            key_pem: Some(issued.key_pem.clone()),
            ..CertRecord::from_info(&issued.info, Some(issued.cert_pem.clone()))
        }
    }

    /// A record from what a certificate says (no key, not revoked).
    pub fn from_info(info: &CertInfo, cert_pem: Option<String>) -> Self {
        CertRecord {
            serial: info.serial.clone(),
            common_name: info.common_name.clone(),
            kind: info.kind,
            not_before: info.not_before,
            not_after: info.not_after,
            cert_pem,
            key_pem: None,
            revoked: None,
        }
    }

    /// Neither revoked nor outside its validity period at `now`.
    pub fn is_usable_at(&self, now: SystemTime) -> bool {
        self.revoked.is_none() && self.not_before <= now && now <= self.not_after
    }

    /// `valid`, `revoked`, `expired` or `not yet valid` at `now`.
    pub fn status_at(&self, now: SystemTime) -> &'static str {
        if self.revoked.is_some() {
            "revoked"
        } else if now > self.not_after {
            "expired"
        } else if now < self.not_before {
            "not yet valid"
        } else {
            "valid"
        }
    }
}

/// Which certificates [`crate::Store::certs`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertFilter {
    /// Only this common name.
    pub common_name: Option<String>,
    /// Only this kind.
    pub kind: Option<CertKind>,
    /// Leave out revoked certificates.
    pub unrevoked_only: bool,
}

/// A VPN address handed to a common name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub common_name: String,
    pub ip: Ipv4Addr,
    pub last_seen: SystemTime,
}

/// Everything an import writes, in one transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportBatch {
    /// Certificates to record; serials already present are skipped. A record with `revoked`
    /// set is recorded revoked.
    pub certs: Vec<CertRecord>,
    /// Revocations of serials that may or may not be in `certs` or in the store; a serial
    /// unknown to both is recorded as a stub (no PEM) so that [`crate::Store::is_revoked`]
    /// still answers `true`. The string is the CN if known.
    pub revocations: Vec<(Serial, Option<String>, Revocation)>,
    /// Users to create; names already present are skipped.
    pub users: Vec<NewUser>,
}

/// What an import changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub certs_added: usize,
    pub certs_skipped: usize,
    pub revocations_added: usize,
    pub users_added: usize,
    pub users_skipped: usize,
}

/// The verdict on a login. Only [`AuthOutcome::Accepted`] lets a session in; the others map to
/// `AUTH_FAILED` on the wire and to a distinct log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The user exists, is enabled, has not expired and (when checked) the password matched.
    Accepted,
    /// No such user.
    UnknownUser,
    /// Wrong password.
    WrongPassword,
    /// A password was required but the user has none (a certificate-only user).
    NoPassword,
    /// `warren user disable`.
    Disabled,
    /// The user's expiry date has passed.
    Expired,
}

impl AuthOutcome {
    /// `true` for [`AuthOutcome::Accepted`].
    pub fn is_accepted(self) -> bool {
        self == AuthOutcome::Accepted
    }

    /// A short reason for the log line.
    pub fn reason(self) -> &'static str {
        match self {
            AuthOutcome::Accepted => "accepted",
            AuthOutcome::UnknownUser => "unknown user",
            AuthOutcome::WrongPassword => "wrong password",
            AuthOutcome::NoPassword => "user has no password",
            AuthOutcome::Disabled => "user disabled",
            AuthOutcome::Expired => "user expired",
        }
    }
}

impl fmt::Display for AuthOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}
