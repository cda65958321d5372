//! OpenVPN cryptography for warren: static key files, control-channel wrapping (none,
//! tls-auth, tls-crypt), the receive replay window, the legacy TLS1-PRF key derivation,
//! the AEAD data channel and the server's stateless cookie.
//!
//! The model: everything here is either a pure function or an immutable key object
//! ([`ControlWrap`], [`DataKeys`], [`CookieKey`]) that is `Send + Sync` and holds no
//! counters. Sequencing state lives with the single-owner engine: it assigns send packet
//! ids and owns one [`ReplayWindow`] per receive direction, which it consults *after*
//! authentication succeeded (OpenVPN does the same: crypto.c openvpn_decrypt_aead,
//! tls_crypt.c tls_crypt_unwrap). No clock, no OS randomness: time is an argument and
//! randomness comes through [`warren_core::Rng`]. Keys are zeroized on drop and their
//! `Debug` output is redacted.
//!
//! Backends: aws-lc-rs for AES-256-CTR and HMAC-SHA*; ring (default feature `aead-ring`)
//! or aws-lc-rs for the data channel's AES-GCM and ChaCha20-Poly1305 (see `data.rs`); the
//! RustCrypto hmac/md-5/sha1 crates for the TLS 1.0 PRF (aws-lc-rs has no MD5).
//! The byte layouts follow `openvpn-protocol.md` (the fact sheet); section numbers
//! cited in the modules refer to it.
#![forbid(unsafe_code)]

mod cookie;
mod data;
mod prf;
mod replay;
mod static_key;
mod tls_crypt_v2;
mod wrap;

pub use cookie::{COOKIE_SLOTS_ACCEPTED, CookieKey};
pub use data::{
    AEAD_TAG_LEN, CipherKind, DATA_HEADROOM, DATA_TAILROOM, DataHeader, DataKeys, Key2, OpenError,
    P_DATA_V1, P_DATA_V2,
};
pub use prf::{openvpn_prf_key2, tls1_prf};
pub use replay::{REPLAY_TIME_BACKTRACK, REPLAY_WINDOW_LEN, ReplayError, ReplayWindow};
pub use static_key::{
    KeyDirection, STATIC_KEY_FOOTER, STATIC_KEY_HEADER, STATIC_KEY_LEN, StaticKey, StaticKeyError,
};
pub use tls_crypt_v2::{
    METADATA_TYPE_TIMESTAMP, METADATA_TYPE_USER, Metadata, TLS_CRYPT_V2_CLIENT_PEM_NAME,
    TLS_CRYPT_V2_MAX_METADATA_LEN, TLS_CRYPT_V2_MAX_WKC_LEN, TLS_CRYPT_V2_SERVER_KEY_LEN,
    TLS_CRYPT_V2_SERVER_PEM_NAME, TlsCryptV2ClientKey, TlsCryptV2KeyError, TlsCryptV2Server,
    TlsCryptV2ServerKey, WkcError, split_wkc,
};
pub use wrap::{
    ControlWrap, Digest, HEAD_LEN, ReplayStamp, Role, STAMP_LEN, TLS_CRYPT_OVERHEAD,
    TLS_CRYPT_TAG_LEN, WrapError,
};
