//! Names of users and certificates.
//!
//! A warren user name is also the common name of the user's certificate, a key in the
//! database and part of log lines, so it is kept to a conservative alphabet.

use thiserror::Error;

/// Longest common name OpenVPN accepts (`ssl_verify.h` `TLS_USERNAME_LEN`), in bytes.
pub const MAX_COMMON_NAME_LEN: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error(
        "the name is {len} bytes long; at most {MAX_COMMON_NAME_LEN} are allowed (OpenVPN's common-name limit)"
    )]
    TooLong { len: usize },
    #[error("the name contains {ch:?}; use letters, digits, '.', '_', '-' and '@'")]
    BadChar { ch: char },
    #[error("the name must start with a letter or a digit")]
    BadStart,
}

/// Checks a user or certificate name: 1 to 64 bytes of ASCII letters, digits, `.`, `_`, `-`,
/// `@`, starting with a letter or digit. (OpenVPN itself replaces other characters in common
/// names with `_` in several places, `ssl_verify.c` `string_mod_remap_name`; refusing them up
/// front keeps names identical everywhere.)
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_COMMON_NAME_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
    {
        return Err(NameError::BadChar { ch });
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(NameError::BadStart);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "alice",
            "bob.smith",
            "a",
            "alice@example.com",
            "x-1_2",
            &"a".repeat(64),
        ] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(
            validate_name(&"a".repeat(65)),
            Err(NameError::TooLong { len: 65 })
        );
        assert_eq!(validate_name("a b"), Err(NameError::BadChar { ch: ' ' }));
        assert_eq!(validate_name("a/b"), Err(NameError::BadChar { ch: '/' }));
        assert_eq!(validate_name("é"), Err(NameError::BadChar { ch: 'é' }));
        assert_eq!(validate_name("-x"), Err(NameError::BadStart));
        assert_eq!(validate_name(".."), Err(NameError::BadStart));
    }
}
