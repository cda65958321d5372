//! Import of an easy-rsa 3 `pki/` directory.
//!
//! What is read (easy-rsa 3.0/3.1 layout, `easyrsa` script `build-ca`, `sign-req`, `revoke`,
//! `gen-crl`):
//!
//! * `ca.crt` and `private/ca.key` (the key must be unencrypted, or given separately);
//! * every certificate in `issued/*.crt`, `certs_by_serial/*.pem`,
//!   `revoked/certs_by_serial/*.crt` and `renewed/issued/*.crt`, kept when signed by the CA,
//!   de-duplicated by serial, each with its key when one of `private/<CN>.key`,
//!   `private/<file stem>.key` or `revoked/private_by_serial/<SERIAL>.key` matches it;
//! * revocations from `index.txt` (`R` lines: status, expiry, `revocationDate[,reason]`,
//!   serial, file, DN; OpenSSL `apps/ca.c`) and from `crl.pem` when its signature checks out.
//!
//! Anything odd that does not prevent the import (an unreadable certificate, an encrypted
//! client key, an X.509 v1 or RSA-1024 certificate rustls will refuse) becomes a warning.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::ca::{Pki, PrivateKeyPem, check_key_pair};
use crate::cert::{CertInfo, CertKind};
use crate::error::PkiError;
use crate::revoke::{RevocationReason, Revoked, parse_crl_pem};
use crate::serial::Serial;
use crate::time_util::from_unix;

/// Why an import failed as a whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Neither `DIR/ca.crt` nor `DIR/pki/ca.crt` exists.
    #[error(
        "{dir}: not an easy-rsa PKI (no ca.crt in it or in its pki/ subdirectory); pass the \
         directory that holds ca.crt, issued/ and private/"
    )]
    NotEasyRsa { dir: PathBuf },
    /// The CA key is not there.
    #[error(
        "{path}: the CA private key is missing; warren needs it to issue certificates and CRLs \
         (pass its location with --ca-key FILE)"
    )]
    CaKeyMissing { path: PathBuf },
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// The CA certificate or key is unusable.
    #[error("{path}: {source}")]
    Ca { path: PathBuf, source: PkiError },
}

/// A certificate found in the PKI.
#[derive(Clone, Debug)]
pub struct ImportedCert {
    /// What it says.
    pub info: CertInfo,
    /// The certificate, PEM (one block).
    pub cert_pem: String,
    /// Its private key, when found and unencrypted.
    pub key_pem: Option<PrivateKeyPem>,
    /// Where it was read from.
    pub source: PathBuf,
}

/// A revocation found in `index.txt` or `crl.pem`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedRevocation {
    /// Serial, time and reason.
    pub revoked: Revoked,
    /// The CN from `index.txt`, when the revocation came from there.
    pub common_name: Option<String>,
}

/// Everything read from an easy-rsa PKI.
#[derive(Debug)]
pub struct EasyRsaPki {
    /// The PKI directory actually read (`DIR` or `DIR/pki`).
    pub dir: PathBuf,
    /// The CA, with its key.
    pub ca: Pki,
    /// Server and client certificates signed by the CA, sorted by CN then serial.
    pub certs: Vec<ImportedCert>,
    /// Revocations, sorted by serial.
    pub revoked: Vec<ImportedRevocation>,
    /// Things skipped or worth knowing, one line each.
    pub warnings: Vec<String>,
}

impl EasyRsaPki {
    /// The revocation of `serial`, if any.
    pub fn revocation(&self, serial: &Serial) -> Option<&ImportedRevocation> {
        self.revoked.iter().find(|r| &r.revoked.serial == serial)
    }
}

/// Import options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Read the CA key from here instead of `private/ca.key` (for example a decrypted copy).
    pub ca_key: Option<PathBuf>,
}

/// Reads the easy-rsa PKI in `dir` (the `pki/` directory itself or its parent).
pub fn import(dir: &Path, opts: &ImportOptions) -> Result<EasyRsaPki, ImportError> {
    let pki_dir = if dir.join("ca.crt").is_file() {
        dir.to_path_buf()
    } else if dir.join("pki").join("ca.crt").is_file() {
        dir.join("pki")
    } else {
        return Err(ImportError::NotEasyRsa {
            dir: dir.to_path_buf(),
        });
    };
    let read = |path: &Path| -> Result<String, ImportError> {
        fs::read_to_string(path).map_err(|source| ImportError::Read {
            path: path.to_path_buf(),
            source,
        })
    };

    let ca_path = pki_dir.join("ca.crt");
    let ca_pem = read(&ca_path)?;
    let key_path = opts
        .ca_key
        .clone()
        .unwrap_or_else(|| pki_dir.join("private").join("ca.key"));
    if !key_path.exists() {
        return Err(ImportError::CaKeyMissing { path: key_path });
    }
    let key_pem = PrivateKeyPem::new(read(&key_path)?);
    let ca = Pki::from_pem(&ca_pem, key_pem.as_str()).map_err(|source| {
        let path = match source {
            PkiError::EncryptedKey { .. }
            | PkiError::BadKey { .. }
            | PkiError::KeyMismatch { .. } => key_path.clone(),
            _ => ca_path.clone(),
        };
        ImportError::Ca { path, source }
    })?;

    let mut warnings = Vec::new();
    let mut by_serial: BTreeMap<Serial, ImportedCert> = BTreeMap::new();
    for (sub, ext) in [
        ("issued", "crt"),
        ("certs_by_serial", "pem"),
        ("revoked/certs_by_serial", "crt"),
        ("renewed/issued", "crt"),
        ("renewed/certs_by_serial", "crt"),
    ] {
        for path in list_files(&pki_dir.join(sub), ext, &mut warnings) {
            let Ok(text) = fs::read_to_string(&path) else {
                warnings.push(format!("{}: unreadable, skipped", path.display()));
                continue;
            };
            let what = path.display().to_string();
            let info = match ca.verify_issued(&text, &what) {
                Ok(info) => info,
                Err(e) => {
                    warnings.push(format!("{e}; skipped"));
                    continue;
                }
            };
            if info.kind == CertKind::Ca || by_serial.contains_key(&info.serial) {
                continue;
            }
            if !info.is_v3 {
                warnings.push(format!(
                    "{what}: X.509 v1 certificate; rustls peers (warren) refuse it, reissue it"
                ));
            }
            if info.key_description.starts_with("RSA ") && info.key_algorithm.is_none() {
                warnings.push(format!(
                    "{what}: {} key; warren supports RSA 2048, 3072 and 4096",
                    info.key_description
                ));
            }
            let key_pem = find_key(&pki_dir, &path, &info, &text, &mut warnings);
            let cert_pem = match crate::cert::first_cert_der(&text, &what) {
                Ok(der) => crate::cert::cert_pem_of(der),
                Err(_) => text.clone(),
            };
            by_serial.insert(
                info.serial.clone(),
                ImportedCert {
                    info,
                    cert_pem,
                    key_pem,
                    source: path,
                },
            );
        }
    }

    let mut revoked: BTreeMap<Serial, ImportedRevocation> = BTreeMap::new();
    let index_path = pki_dir.join("index.txt");
    if index_path.is_file() {
        let text = read(&index_path)?;
        for (n, line) in text.lines().enumerate() {
            match parse_index_line(line) {
                Ok(Some(r)) => {
                    revoked.insert(r.revoked.serial.clone(), r);
                }
                Ok(None) => {}
                Err(why) => warnings.push(format!(
                    "{}:{}: {why}; line ignored",
                    index_path.display(),
                    n + 1
                )),
            }
        }
    }
    let crl_path = pki_dir.join("crl.pem");
    if crl_path.is_file() {
        let text = read(&crl_path)?;
        let what = crl_path.display().to_string();
        match ca
            .verify_crl(&text, &what)
            .and_then(|()| parse_crl_pem(&text, &what))
        {
            Ok(list) => {
                for r in list {
                    revoked
                        .entry(r.serial.clone())
                        .and_modify(|e| {
                            if e.revoked.reason.is_none() {
                                e.revoked.reason = r.reason;
                            }
                        })
                        .or_insert(ImportedRevocation {
                            revoked: r,
                            common_name: None,
                        });
                }
            }
            Err(e) => warnings.push(format!("{e}; CRL ignored")),
        }
    }
    // Fill in CNs known from the certificates themselves.
    for r in revoked.values_mut() {
        if r.common_name.is_none() {
            r.common_name = by_serial
                .get(&r.revoked.serial)
                .map(|c| c.info.common_name.clone());
        }
    }

    let mut certs: Vec<ImportedCert> = by_serial.into_values().collect();
    certs.sort_by(|a, b| {
        (a.info.common_name.as_str(), &a.info.serial)
            .cmp(&(b.info.common_name.as_str(), &b.info.serial))
    });
    Ok(EasyRsaPki {
        dir: pki_dir,
        ca,
        certs,
        revoked: revoked.into_values().collect(),
        warnings,
    })
}

fn list_files(dir: &Path, ext: &str, warnings: &mut Vec<String>) -> Vec<PathBuf> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            warnings.push(format!("{}: {e}; skipped", dir.display()));
            return Vec::new();
        }
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

fn find_key(
    pki_dir: &Path,
    cert_path: &Path,
    info: &CertInfo,
    cert_pem: &str,
    warnings: &mut Vec<String>,
) -> Option<PrivateKeyPem> {
    let private = pki_dir.join("private");
    let mut candidates = vec![private.join(format!("{}.key", info.common_name))];
    if let Some(stem) = cert_path.file_stem().and_then(|s| s.to_str()) {
        candidates.push(private.join(format!("{stem}.key")));
    }
    candidates.push(
        pki_dir
            .join("revoked")
            .join("private_by_serial")
            .join(format!("{}.key", info.serial)),
    );
    for path in candidates {
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let key = PrivateKeyPem::new(text);
        match check_key_pair(cert_pem, key.as_str(), &path.display().to_string()) {
            Ok(()) => return Some(key),
            Err(PkiError::EncryptedKey { .. }) => {
                warnings.push(format!(
                    "{}: encrypted key for {:?} not imported (decrypt it with `openssl pkey -in {} \
                     -out PLAIN.key`); its profile cannot be exported",
                    path.display(),
                    info.common_name,
                    path.display()
                ));
                return None;
            }
            Err(_) => continue,
        }
    }
    None
}

/// Parses one `index.txt` line; `Ok(None)` for valid/expired entries and blank lines.
fn parse_index_line(line: &str) -> Result<Option<ImportedRevocation>, &'static str> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let fields: Vec<&str> = line.split('\t').collect();
    let [status, _expiry, revocation, serial, _file, dn, ..] = fields.as_slice() else {
        return Err("expected 6 tab-separated fields");
    };
    match *status {
        "V" | "E" => return Ok(None),
        "R" => {}
        _ => return Err("unknown status (expected V, R or E)"),
    }
    let (date, reason) = match revocation.split_once(',') {
        Some((d, r)) => (d, Some(r)),
        None => (*revocation, None),
    };
    let revoked_at = parse_openssl_time(date).ok_or("malformed revocation date")?;
    let serial: Serial = serial.parse().map_err(|_| "malformed serial")?;
    // OpenSSL stores extra data after the reason for holdInstruction/keyTime; keep the reason.
    let reason = reason
        .and_then(|r| r.split(',').next())
        .and_then(|r| r.parse::<RevocationReason>().ok());
    let common_name = dn
        .split('/')
        .find_map(|part| part.strip_prefix("CN="))
        .map(str::to_owned);
    Ok(Some(ImportedRevocation {
        revoked: Revoked {
            serial,
            revoked_at,
            reason,
        },
        common_name,
    }))
}

/// `YYMMDDHHMMSSZ` (UTCTime, 1950–2049) or `YYYYMMDDHHMMSSZ` (GeneralizedTime).
fn parse_openssl_time(s: &str) -> Option<SystemTime> {
    let digits = s.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> { digits.get(r)?.parse().ok() };
    let (year, rest) = match digits.len() {
        12 => {
            let yy = num(0..2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        14 => (num(0..4)?, 4),
        _ => return None,
    };
    let month = u8::try_from(num(rest..rest + 2)?).ok()?;
    let day = u8::try_from(num(rest + 2..rest + 4)?).ok()?;
    let hour = u8::try_from(num(rest + 4..rest + 6)?).ok()?;
    let min = u8::try_from(num(rest + 6..rest + 8)?).ok()?;
    let sec = u8::try_from(num(rest + 8..rest + 10)?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::try_from(year).ok()?,
        time::Month::try_from(month).ok()?,
        day,
    )
    .ok()?;
    let t = time::Time::from_hms(hour, min, sec).ok()?;
    Some(from_unix(
        time::PrimitiveDateTime::new(date, t)
            .assume_utc()
            .unix_timestamp(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time_util::to_unix;

    #[test]
    fn index_lines() {
        let v = "V\t290224030232Z\t\t7ED6D462F92279AB136DE6ACA1FEC36D\tunknown\t/CN=server";
        assert_eq!(parse_index_line(v), Ok(None));
        let r =
            "R\t290224030233Z\t261122030234Z\t2632DFD822572F351272CBA9A653D022\tunknown\t/CN=bob";
        let got = parse_index_line(r).expect("parse").expect("revoked");
        assert_eq!(got.common_name.as_deref(), Some("bob"));
        assert_eq!(
            got.revoked.serial.to_string(),
            "2632DFD822572F351272CBA9A653D022"
        );
        // 2026-11-22 03:02:34 UTC
        assert_eq!(to_unix(got.revoked.revoked_at), 1_795_316_554);
        assert_eq!(got.revoked.reason, None);
        let r = "R\t290224030233Z\t20261122030234Z,keyCompromise\t0A\tunknown\t/C=DE/CN=carol/O=x";
        let got = parse_index_line(r).expect("parse").expect("revoked");
        assert_eq!(got.revoked.reason, Some(RevocationReason::KeyCompromise));
        assert_eq!(got.common_name.as_deref(), Some("carol"));
        assert_eq!(to_unix(got.revoked.revoked_at), 1_795_316_554);
        assert!(parse_index_line("R\tx").is_err());
        assert!(parse_index_line("R\t1Z\tnope\t0A\tunknown\t/CN=a").is_err());
        assert!(parse_index_line("R\t1Z\t261122030234Z\tzz\tunknown\t/CN=a").is_err());
        assert!(parse_index_line("Q\t1Z\t\t0A\tunknown\t/CN=a").is_err());
        assert_eq!(parse_index_line(""), Ok(None));
    }

    #[test]
    fn openssl_times() {
        assert_eq!(parse_openssl_time("700101000000Z").map(to_unix), Some(0));
        assert_eq!(
            parse_openssl_time("491231235959Z").map(to_unix),
            Some(2_524_607_999)
        );
        assert_eq!(parse_openssl_time("19700101000001Z").map(to_unix), Some(1));
        assert_eq!(parse_openssl_time("701301000000Z"), None);
        assert_eq!(parse_openssl_time("7001010000Z"), None);
        assert_eq!(parse_openssl_time("700101000000"), None);
        assert_eq!(parse_openssl_time("7001010000+0Z"), None);
    }
}
