//! Password hashing: argon2id with the argon2 crate's defaults (m=19456 KiB, t=2, p=1; about
//! 30 ms here), stored as PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`).
//!
//! Verification takes as long as hashing; a server should bound how many run at once.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use zeroize::Zeroizing;

use crate::error::StoreError;

/// Salt length in bytes (the PHC recommendation is at least 16).
const SALT_LEN: usize = 16;

/// Hashes `password` with a fresh salt from `rng`.
pub fn hash(password: &str, rng: &mut dyn warren_core::Rng) -> Result<String, StoreError> {
    let mut salt = [0u8; SALT_LEN];
    rng.fill(&mut salt);
    let h = Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(StoreError::Hash)?;
    Ok(h.to_string())
}

/// `true` when `password` matches the PHC string `phc`. A malformed hash never matches.
pub fn verify(phc: &str, password: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), phc)
        .is_ok()
}

/// Spends the time of one verification without a user, so that "unknown user" and "wrong
/// password" answer alike and user names cannot be probed by timing.
pub fn verify_dummy(password: &str) {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| {
        let salt = [0x5a; SALT_LEN];
        Argon2::default()
            .hash_password_with_salt(b"warren-dummy-password", &salt)
            .ok()
            .map(|h| h.to_string())
    });
    if let Some(d) = dummy {
        let _ = verify(d, password);
    }
}

/// A password read from a prompt or a file, wiped from memory when dropped.
pub type Secret = Zeroizing<String>;

#[cfg(test)]
mod tests {
    use super::*;
    use warren_core::TestRng;

    #[test]
    fn hash_and_verify() {
        let mut rng = TestRng::seed(1);
        let h = hash("correct horse", &mut rng).expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify(&h, "correct horse"));
        assert!(!verify(&h, "correct horsE"));
        assert!(!verify(&h, ""));
        assert!(!verify("not a hash", "x"));
        let h2 = hash("correct horse", &mut rng).expect("hash");
        assert_ne!(h, h2, "fresh salt");
        verify_dummy("x");
    }
}
