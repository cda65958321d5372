//! The storage interface.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::SystemTime;

use warren_pki::{RevocationReason, Revoked, Serial};

use crate::access::{AccessOwner, AccessRecord, Group};
use crate::error::StoreError;
use crate::model::{
    AuthOutcome, CertFilter, CertRecord, DeletedUser, ImportBatch, ImportSummary, Lease, NewUser,
    User, UserChange, UserSite,
};
use crate::password;

/// Users, certificates, revocations and leases. Each method is atomic: it happens entirely or
/// not at all, also across a crash. Implementations are shared between threads (`&self`
/// methods); callers on a latency-sensitive path should call them off that path (they do disk
/// I/O, and password checks cost ~30 ms of CPU).
pub trait Store: Send + Sync + fmt::Debug {
    /// Adds a user, and when `cert` is given records it in the same transaction (the user's
    /// first client certificate). Errors: [`StoreError::UserExists`],
    /// [`StoreError::FixedIpTaken`], [`StoreError::BadName`], [`StoreError::CertExists`].
    fn add_user(
        &self,
        user: &NewUser,
        cert: Option<&CertRecord>,
        now: SystemTime,
    ) -> Result<(), StoreError>;

    /// The user called `name`.
    fn user(&self, name: &str) -> Result<Option<User>, StoreError>;

    /// All users, sorted by name.
    fn users(&self) -> Result<Vec<User>, StoreError>;

    /// Changes a user. Errors: [`StoreError::NoSuchUser`], [`StoreError::FixedIpTaken`].
    fn update_user(&self, name: &str, change: &UserChange) -> Result<(), StoreError>;

    /// Removes a user, revokes the user's unrevoked client certificates (reason
    /// `cessationOfOperation`, at `now`) and releases the lease, in one transaction.
    fn delete_user(&self, name: &str, now: SystemTime) -> Result<DeletedUser, StoreError>;

    /// Records a certificate. Errors: [`StoreError::CertExists`].
    fn add_cert(&self, cert: &CertRecord) -> Result<(), StoreError>;

    /// The certificate with this serial.
    fn cert(&self, serial: &Serial) -> Result<Option<CertRecord>, StoreError>;

    /// Certificates matching `filter`, newest `not_before` first.
    fn certs(&self, filter: &CertFilter) -> Result<Vec<CertRecord>, StoreError>;

    /// Marks a certificate revoked. `Ok(false)` if it already was (the first revocation is
    /// kept). Errors: [`StoreError::NoSuchCert`].
    fn revoke(
        &self,
        serial: &Serial,
        at: SystemTime,
        reason: Option<RevocationReason>,
    ) -> Result<bool, StoreError>;

    /// `true` when the serial is recorded as revoked (unknown serials are not revoked: the CA
    /// signature check is what refuses foreign certificates).
    fn is_revoked(&self, serial: &Serial) -> Result<bool, StoreError>;

    /// Every revocation, for the CRL, sorted by serial.
    fn revocations(&self) -> Result<Vec<Revoked>, StoreError>;

    /// Returns a fresh CRL number (1, 2, ...), persisted.
    fn next_crl_number(&self) -> Result<u64, StoreError>;

    /// Writes an import in one transaction.
    fn import(&self, batch: &ImportBatch, now: SystemTime) -> Result<ImportSummary, StoreError>;

    /// The address last handed to `common_name`.
    fn lease_for(&self, common_name: &str) -> Result<Option<Lease>, StoreError>;

    /// Records that `common_name` uses `ip` (taking it away from any other name that had it).
    fn record_lease(
        &self,
        common_name: &str,
        ip: Ipv4Addr,
        now: SystemTime,
    ) -> Result<(), StoreError>;

    /// Forgets the lease of `common_name`; `Ok(false)` if it had none.
    fn release_lease(&self, common_name: &str) -> Result<bool, StoreError>;

    /// All leases, sorted by address.
    fn leases(&self) -> Result<Vec<Lease>, StoreError>;

    /// The user's networks and pushes (empty when it has none, or no such user).
    fn user_site(&self, name: &str) -> Result<UserSite, StoreError>;

    /// Replaces the user's networks and pushes; [`StoreError::NoSuchUser`] when there is no
    /// such user. Deleting the user deletes them.
    fn set_user_site(&self, name: &str, site: &UserSite) -> Result<(), StoreError>;

    /// Every user that has networks or pushes, by name.
    fn user_sites(&self) -> Result<Vec<(String, UserSite)>, StoreError>;
    /// The access rules of a user or group, in order.
    fn access_rules(&self, owner: &AccessOwner) -> Result<Vec<AccessRecord>, StoreError>;

    /// Removes the owner's rules first when `clear`, then appends `append` in order.
    /// Errors: [`StoreError::NoSuchUser`], [`StoreError::NoSuchGroup`].
    fn set_access_rules(
        &self,
        owner: &AccessOwner,
        clear: bool,
        append: &[AccessRecord],
    ) -> Result<(), StoreError>;

    /// The groups of a user, in the order it joined them.
    fn user_groups(&self, user: &str) -> Result<Vec<String>, StoreError>;

    /// Leaves every group first when `clear`, then joins `join` (already a member: no
    /// change). Errors: [`StoreError::NoSuchUser`], [`StoreError::NoSuchGroup`].
    fn set_user_groups(&self, user: &str, clear: bool, join: &[String]) -> Result<(), StoreError>;

    /// Adds an empty group. Errors: [`StoreError::GroupExists`], [`StoreError::BadName`].
    fn add_group(&self, name: &str) -> Result<(), StoreError>;

    /// Deletes a group with its rules and memberships. Errors: [`StoreError::NoSuchGroup`].
    fn delete_group(&self, name: &str) -> Result<(), StoreError>;

    /// Every group, sorted by name.
    fn groups(&self) -> Result<Vec<Group>, StoreError>;

    /// A user's ordered access list: its own rules, then each group's in membership order.
    fn effective_access(&self, user: &str) -> Result<Vec<AccessRecord>, StoreError>;

    /// A counter that grows with every change, made by this process or another. A server polls
    /// it (cheaply) and re-checks its sessions when it moves.
    fn revision(&self) -> Result<u64, StoreError>;

    /// Checks a user without a password (certificate-only mode): exists, enabled, not expired.
    fn check_user(&self, name: &str, now: SystemTime) -> Result<AuthOutcome, StoreError> {
        Ok(match self.user(name)? {
            None => AuthOutcome::UnknownUser,
            Some(u) if !u.enabled => AuthOutcome::Disabled,
            Some(u) if u.is_expired(now) => AuthOutcome::Expired,
            Some(_) => AuthOutcome::Accepted,
        })
    }

    /// Checks a user name and password (argon2id). Unknown users and users without a password
    /// cost the same time as a wrong password. A disabled or expired user is reported as such
    /// only after the password matched, so those states do not leak to guessers.
    fn verify_password(
        &self,
        name: &str,
        password: &str,
        now: SystemTime,
    ) -> Result<AuthOutcome, StoreError> {
        let Some(user) = self.user(name)? else {
            password::verify_dummy(password);
            return Ok(AuthOutcome::UnknownUser);
        };
        let Some(hash) = user.password_hash.as_deref() else {
            password::verify_dummy(password);
            return Ok(AuthOutcome::NoPassword);
        };
        if !password::verify(hash, password) {
            return Ok(AuthOutcome::WrongPassword);
        }
        Ok(if !user.enabled {
            AuthOutcome::Disabled
        } else if user.is_expired(now) {
            AuthOutcome::Expired
        } else {
            AuthOutcome::Accepted
        })
    }
}
