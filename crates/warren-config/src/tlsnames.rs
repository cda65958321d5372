//! OpenSSL's names for TLS groups and cipher suites, as OpenVPN passes them
//! through (`tls-groups`, `ecdh-curve`, `tls-cipher`, `tls-ciphersuites`),
//! mapped onto what rustls with ring offers.
//!
//! A name OpenSSL knows but rustls lacks (secp521r1, CBC or DHE suites...) is
//! skipped with a warning as long as something usable is left, the way
//! OpenSSL itself skips unknown entries of a cipher list; a name nobody knows
//! is an error listing the accepted ones.

use crate::error::ConfigError;
use crate::lower::{Lowerer, View};
use crate::types::{TlsCipherSuite, TlsGroup};

/// OpenSSL's names of one kind (key-exchange groups, TLS 1.3 suites) and what
/// warren makes of them.
pub(crate) struct Names<T: 'static> {
    /// What a name names, for messages.
    what: &'static str,
    /// The same, in "unknown ..." errors.
    unknown: &'static str,
    /// Names as [`Names::canon`] spells them, and their value (several names may
    /// share one).
    known: &'static [(&'static str, T)],
    /// Names OpenSSL 3 knows that rustls (ring) does not implement.
    lacking: &'static [&'static str],
    /// The names warren offers, for errors.
    help: &'static str,
    /// OpenSSL's spelling rules: a name as the tables hold it.
    canon: fn(&str) -> String,
    /// OpenSSL 3.3+ groups: a `?` prefix marks a name that may be unknown.
    optional_mark: bool,
}

/// `tls-groups A:B:C` and `ecdh-curve NAME`.
pub(crate) const GROUPS: Names<TlsGroup> = Names {
    what: "group",
    unknown: "group",
    known: &[
        ("x25519", TlsGroup::X25519),
        // OpenVPN ssl_openssl.c tls_ctx_set_tls_groups: secp256r1 is OpenSSL's prime256v1.
        ("prime256v1", TlsGroup::P256),
        ("secp256r1", TlsGroup::P256),
        ("p-256", TlsGroup::P256),
        ("secp384r1", TlsGroup::P384),
        ("p-384", TlsGroup::P384),
    ],
    lacking: &[
        "secp521r1",
        "p-521",
        "x448",
        "secp224r1",
        "p-224",
        "secp256k1",
        "secp192r1",
        "prime192v1",
        "p-192",
        "brainpoolp256r1",
        "brainpoolp384r1",
        "brainpoolp512r1",
        "brainpoolp256r1tls13",
        "brainpoolp384r1tls13",
        "brainpoolp512r1tls13",
        "ffdhe2048",
        "ffdhe3072",
        "ffdhe4096",
        "ffdhe6144",
        "ffdhe8192",
        "x25519mlkem768",
        "secp256r1mlkem768",
        "secp384r1mlkem1024",
        "mlkem512",
        "mlkem768",
        "mlkem1024",
    ],
    help: "X25519, prime256v1 (secp256r1, P-256) and secp384r1 (P-384)",
    canon: str::to_ascii_lowercase,
    optional_mark: true,
};

/// `tls-ciphersuites A:B:C` (TLS 1.3).
pub(crate) const TLS13_SUITES: Names<TlsCipherSuite> = Names {
    what: "suite",
    unknown: "TLS 1.3 suite",
    known: &[
        (
            "TLS_AES_256_GCM_SHA384",
            TlsCipherSuite::Tls13Aes256GcmSha384,
        ),
        (
            "TLS_AES_128_GCM_SHA256",
            TlsCipherSuite::Tls13Aes128GcmSha256,
        ),
        (
            "TLS_CHACHA20_POLY1305_SHA256",
            TlsCipherSuite::Tls13Chacha20Poly1305Sha256,
        ),
    ],
    lacking: &[
        "TLS_AES_128_CCM_SHA256",
        "TLS_AES_128_CCM_8_SHA256",
        "TLS_SHA256_SHA256",
        "TLS_SHA384_SHA384",
    ],
    help: "TLS_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256 and TLS_CHACHA20_POLY1305_SHA256",
    // OpenVPN ssl_openssl.c convert_tls13_list_to_openssl: `-` may stand for `_`.
    canon: |name| name.replace('-', "_").to_ascii_uppercase(),
    optional_mark: false,
};

enum Lookup<T> {
    Found(T),
    Lacking,
    Unknown,
}

impl<T: Copy + PartialEq> Names<T> {
    fn lookup(&self, name: &str) -> Lookup<T> {
        let canon = (self.canon)(name);
        if let Some((_, value)) = self.known.iter().find(|(n, _)| *n == canon) {
            Lookup::Found(*value)
        } else if self.lacking.contains(&canon.as_str()) {
            Lookup::Lacking
        } else {
            Lookup::Unknown
        }
    }

    /// `A:B:C`: the values to offer, in order, each once. A name rustls lacks is
    /// skipped with a warning; an unknown one is an error (unless marked optional).
    pub(crate) fn list(&self, lw: &mut Lowerer<'_>, v: &View<'_>) -> Result<Vec<T>, ConfigError> {
        let (what, help) = (self.what, self.help);
        let mut out: Vec<T> = Vec::new();
        for part in v.arg(0).split(':') {
            let (optional, name) = match part.strip_prefix('?').filter(|_| self.optional_mark) {
                Some(n) => (true, n),
                None => (false, part),
            };
            if name.is_empty() {
                return Err(v.invalid(0, format!("empty {what} name in the list")));
            }
            match self.lookup(name) {
                Lookup::Found(value) => {
                    if !out.contains(&value) {
                        out.push(value);
                    }
                }
                Lookup::Lacking => lw.warn(
                    &v.loc,
                    v.name,
                    format!("{what} `{name}` is not available in warren (rustls) and is skipped"),
                ),
                Lookup::Unknown if optional => lw.warn(
                    &v.loc,
                    v.name,
                    format!("optional {what} `{name}` is unknown and is skipped"),
                ),
                Lookup::Unknown => {
                    let unknown = self.unknown;
                    return Err(v.invalid(
                        0,
                        format!("unknown {unknown} `{name}`; warren offers {help}"),
                    ));
                }
            }
        }
        if out.is_empty() {
            return Err(v.invalid(
                0,
                format!("no usable {what} left in the list; warren offers {help}"),
            ));
        }
        Ok(out)
    }
}

/// `ecdh-curve NAME`: the one group to use, or `None` (with a warning) for a
/// curve rustls lacks, in which case warren's default groups stay.
pub(crate) fn ecdh_curve(
    lw: &mut Lowerer<'_>,
    v: &View<'_>,
) -> Result<Option<TlsGroup>, ConfigError> {
    let help = GROUPS.help;
    match GROUPS.lookup(v.arg(0)) {
        Lookup::Found(g) => Ok(Some(g)),
        Lookup::Lacking => {
            lw.warn(
                &v.loc,
                v.name,
                format!(
                    "curve `{}` is not available in warren (rustls); the default groups ({help}) \
                     are used, as OpenVPN 2.6 built with OpenSSL 3 ignores ecdh-curve too",
                    v.arg(0)
                ),
            );
            Ok(None)
        }
        Lookup::Unknown => Err(v.invalid(
            0,
            format!("unknown curve; warren offers {help} (`tls-groups` takes a list)"),
        )),
    }
}

/// The TLS 1.2 suites by OpenVPN's IANA-style name and OpenSSL's own name
/// (OpenVPN ssl_backend.h tls_cipher_name_pair).
const TLS12_SUITES: &[(&str, &str, TlsCipherSuite)] = &[
    (
        "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        TlsCipherSuite::EcdheEcdsaAes256GcmSha384,
    ),
    (
        "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        TlsCipherSuite::EcdheEcdsaAes128GcmSha256,
    ),
    (
        "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        TlsCipherSuite::EcdheEcdsaChacha20Poly1305Sha256,
    ),
    (
        "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        TlsCipherSuite::EcdheRsaAes256GcmSha384,
    ),
    (
        "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        TlsCipherSuite::EcdheRsaAes128GcmSha256,
    ),
    (
        "TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256",
        "ECDHE-RSA-CHACHA20-POLY1305",
        TlsCipherSuite::EcdheRsaChacha20Poly1305Sha256,
    ),
];

const TLS12_HELP: &str = "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384, TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256, \
    TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256 and the same three with ECDHE-RSA";

/// `tls-cipher A:B:C` (TLS 1.2 and older): the TLS 1.2 suites to offer, in order.
pub(crate) fn tls_cipher(
    lw: &mut Lowerer<'_>,
    v: &View<'_>,
) -> Result<Vec<TlsCipherSuite>, ConfigError> {
    let mut out: Vec<TlsCipherSuite> = Vec::new();
    let mut skipped: Vec<&str> = Vec::new();
    for name in v.arg(0).split(':') {
        if name.is_empty() {
            return Err(v.invalid(0, "empty cipher name in the list"));
        }
        let upper = name.to_ascii_uppercase();
        if let Some((_, _, s)) = TLS12_SUITES
            .iter()
            .find(|(iana, ossl, _)| upper == *iana || upper == *ossl)
        {
            if !out.contains(s) {
                out.push(*s);
            }
            continue;
        }
        // OpenSSL cipher-string syntax (`DEFAULT`, `HIGH`, `!aNULL`, `@SECLEVEL=0`)
        // selects by rules warren cannot mirror; only suite names map.
        let keyword =
            name.starts_with(['!', '-', '+', '@']) || !name.contains('-') || name.contains('=');
        if keyword {
            return Err(v.invalid(
                0,
                format!(
                    "`{name}` is OpenSSL cipher-string syntax, which cannot be mapped onto rustls; list \
                     suite names instead ({TLS12_HELP}), or remove the line to use warren's set (ECDHE \
                     with AES-GCM or CHACHA20-POLY1305 only)"
                ),
            ));
        }
        skipped.push(name);
    }
    if out.is_empty() {
        return Err(v.invalid(
            0,
            format!(
                "no suite in the list is available in warren (rustls has only ECDHE with AES-GCM or \
                 CHACHA20-POLY1305): {TLS12_HELP}"
            ),
        ));
    }
    if !skipped.is_empty() {
        lw.warn(
            &v.loc,
            v.name,
            format!(
                "skipped, not available in warren (rustls has only ECDHE with AES-GCM or \
                 CHACHA20-POLY1305): {}",
                skipped.join(":")
            ),
        );
    }
    Ok(out)
}
