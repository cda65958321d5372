//! `crl-verify FILE`: the CRL a server checks client certificates against, and its live reload;
//! `crl-verify DIR dir`; a client's `crl-verify FILE`.
//!
//! The file is read at startup (errors name the config line). webpki enforces it at every
//! handshake ([`warren_openvpn::tls::CrlCheck`]). Like OpenVPN, which re-reads the file when
//! its modification time or size changes (`ssl.c:tls_ctx_reload_crl` via
//! `tls_multi_process`), the server checks the file about once a second off the data path
//! ([`watcher`]); a new CRL replaces the TLS configuration for new handshakes and
//! renegotiations, and sessions whose certificate it lists end at once.
//!
//! After the privilege drop (`user`/`group`, or the zero-config drop to warren/nobody) the
//! file must stay readable by that user, as with OpenVPN; if it is not, a warning is logged
//! once and the last good CRL stays in force.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::error::{Context, Error, Result};
use tracing::{info, warn};
use warren_config::Material;
use warren_openvpn::KickTarget;
use warren_openvpn::tls::{CrlCheck, SerialCheck, ServerTlsOptions};
use warren_pki::CrlFile;

/// How often the file is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What a client whose certificate was just revoked is told (then its reconnect is refused).
const KICK_MESSAGE: &str = "RESTART";

/// What the TLS configuration is built from: kept so a new CRL can be applied without
/// reading the key again (the server may no longer be allowed to).
pub struct TlsInputs {
    pub ca: String,
    pub cert: String,
    pub key: zeroize::Zeroizing<String>,
    pub opts: ServerTlsOptions,
}

impl std::fmt::Debug for TlsInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsInputs")
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl TlsInputs {
    pub fn build(&self) -> Result<Arc<rustls::ServerConfig>> {
        warren_openvpn::tls::server_config(&self.ca, &self.cert, &self.key, &self.opts)
            .context("setting up TLS from `ca`, `cert`, `key` and `crl-verify`")
    }
}

/// The TLS inputs in force and the CRL in force, shared by startup, SIGHUP's reload and the
/// CRL watcher.
#[derive(Debug, Default)]
pub struct LiveTls {
    pub inputs: Option<TlsInputs>,
    pub crl: Option<CrlCheck>,
}

pub type SharedTls = Arc<Mutex<LiveTls>>;

/// Reads `crl-verify` at startup (before any privilege drop). Errors name the config line.
pub fn initial(cfg: &warren_config::ServerConfig) -> Result<SharedTls> {
    let mut live = LiveTls::default();
    if let Some((dir, loc)) = &cfg.crl_verify_dir {
        // OpenVPN options.c checks the directory at startup too (`check_file_access`).
        let meta = fs::metadata(dir)
            .with_context(|| format!("{loc}: crl-verify {} dir", dir.display()))?;
        if !meta.is_dir() {
            return Err(Error::CrlDirNotADirectory {
                loc: loc.clone(),
                dir: dir.clone(),
            });
        }
        info!(
            "crl-verify {} dir: a client certificate is refused when a file named after its \
             serial number (decimal) is there, looked at in every handshake",
            dir.display()
        );
    }
    if let Some((m, loc)) = &cfg.crl_verify {
        let ca = cfg.ca.load().context("reading `ca`")?;
        let name = source_name(m);
        let text = m
            .load()
            .with_context(|| format!("{loc}: crl-verify: reading the CRL"))?;
        let file = warren_pki::load_crl_file(&text, &ca, &name)
            .with_context(|| format!("{loc}: crl-verify"))?;
        info!(
            "crl-verify {name}: {} CRL(s), {} revoked certificate(s); client certificates are \
             checked against it{}",
            file.ders.len(),
            file.revoked.len(),
            if matches!(m, Material::File(_)) {
                " (re-read when the file changes; it must stay readable after the privilege drop)"
            } else {
                ""
            }
        );
        live.crl = Some(check(&file, name));
    }
    Ok(Arc::new(Mutex::new(live)))
}

/// A client's `crl-verify`: read and checked against `ca` once, at startup (errors name the
/// config line); the server's certificate is checked against it at every handshake.
pub fn client_check(m: &Material, loc: &warren_config::Location, ca: &str) -> Result<CrlCheck> {
    let name = source_name(m);
    let text = m
        .load()
        .with_context(|| format!("{loc}: crl-verify: reading the CRL"))?;
    let file = warren_pki::load_crl_file(&text, ca, &name)
        .with_context(|| format!("{loc}: crl-verify"))?;
    info!(
        "crl-verify {name}: {} CRL(s), {} revoked certificate(s); the server's certificate is \
         checked against it",
        file.ders.len(),
        file.revoked.len(),
    );
    Ok(check(&file, name))
}

/// `crl-verify DIR dir`: a serial is revoked when `DIR/<serial in decimal>` exists
/// (OpenVPN `ssl_verify.c:verify_check_crl_dir`, which opens the file; a file that cannot
/// be looked at counts as absent there too). Asked in the handshake, off the data path.
pub fn serial_dir(dir: &std::path::Path) -> SerialCheck {
    let dir = dir.to_path_buf();
    let source = format!("{} dir", dir.display());
    SerialCheck {
        is_revoked: Arc::new(move |serial: &[u8]| dir.join(decimal(serial)).exists()),
        source,
    }
}

/// A big-endian unsigned integer in decimal (OpenVPN names the files by
/// `backend_x509_get_serial`, the decimal serial).
fn decimal(be: &[u8]) -> String {
    let mut n: Vec<u8> = be.iter().copied().skip_while(|b| *b == 0).collect();
    let mut digits = Vec::new();
    while !n.is_empty() {
        let mut rem: u32 = 0;
        for b in &mut n {
            let cur = (rem << 8) | u32::from(*b);
            *b = u8::try_from(cur / 10).expect("a quotient digit is below 256");
            rem = cur % 10;
        }
        digits.push(b'0' + u8::try_from(rem).expect("a remainder is below 10"));
        let lead = n.iter().take_while(|b| **b == 0).count();
        n.drain(..lead);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8(digits).expect("ASCII digits")
}

fn source_name(m: &Material) -> String {
    match m {
        Material::File(p) => p.display().to_string(),
        Material::Inline(_) => "<crl-verify> (inline)".to_owned(),
    }
}

fn check(file: &CrlFile, source: String) -> CrlCheck {
    CrlCheck {
        crls: file.ders.clone(),
        source,
    }
}

/// The file's identity and version: a rewrite in place or a rename over it changes one of
/// these (OpenVPN compares mtime and size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

fn stamp(path: &std::path::Path) -> std::io::Result<Stamp> {
    let m = fs::metadata(path)?;
    Ok(Stamp {
        ino: m.ino(),
        size: m.size(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    })
}

/// The watcher of a `crl-verify FILE` (`None` without one, or for an inline CRL).
pub fn watcher(
    cfg: &warren_config::ServerConfig,
    live: &SharedTls,
) -> Option<warren_driver::Watcher> {
    let Some((Material::File(path), _)) = &cfg.crl_verify else {
        return None;
    };
    let mut w = Watch {
        path: path.clone(),
        name: path.display().to_string(),
        last: stamp(path).ok(),
        live: live.clone(),
        warned: false,
    };
    Some(warren_driver::Watcher {
        interval: CHECK_EVERY,
        check: Box::new(move |now, server| w.check(now, server)),
    })
}

struct Watch {
    path: PathBuf,
    name: String,
    /// The version last looked at (good or not: a bad file is reported once).
    last: Option<Stamp>,
    live: SharedTls,
    /// A warning about an unreadable file was logged (reset when it is readable again).
    warned: bool,
}

impl Watch {
    fn unreadable(&mut self, e: &std::io::Error) {
        if !self.warned {
            warn!(
                "crl-verify {}: cannot read the file ({e}); the last CRL read stays in force. \
                 The CRL must stay readable by the user the server runs as (after `user`/`group` \
                 or the drop to warren/nobody), as with OpenVPN",
                self.name
            );
            self.warned = true;
        }
    }

    fn check(&mut self, now: warren_core::Instant, server: &mut warren_openvpn::Server) {
        let st = match stamp(&self.path) {
            Ok(s) => s,
            Err(e) => return self.unreadable(&e),
        };
        if self.last == Some(st) {
            return;
        }
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => return self.unreadable(&e),
        };
        self.warned = false;
        self.last = Some(st);
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(inputs) = live.inputs.as_mut() else {
            return;
        };
        let file = match warren_pki::load_crl_file(&text, &inputs.ca, &self.name) {
            Ok(f) => f,
            Err(e) => {
                warn!("crl-verify: the changed CRL is refused, the last good one stays: {e}");
                return;
            }
        };
        let previous = inputs.opts.crl.replace(check(&file, self.name.clone()));
        let tls = match inputs.build() {
            Ok(t) => t,
            Err(e) => {
                inputs.opts.crl = previous;
                warn!(
                    "crl-verify {}: the changed CRL is refused, the last good one stays: {}",
                    self.name,
                    e.report()
                );
                return;
            }
        };
        server.set_tls_config(tls);
        live.crl = inputs.opts.crl.clone();
        drop(live);
        info!(
            "crl-verify {}: re-read, {} revoked certificate(s); new handshakes and \
             renegotiations use it",
            self.name,
            file.revoked.len()
        );
        for r in &file.revoked {
            let n = server.kick_target(
                now,
                &KickTarget::CertSerial(r.serial.as_bytes().to_vec()),
                KICK_MESSAGE,
            );
            if n > 0 {
                info!(
                    "certificate serial {} is revoked (crl-verify {}): ended {n} session(s) \
                     (sent {KICK_MESSAGE})",
                    r.serial, self.name
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::decimal;

    #[test]
    fn serials_in_decimal() {
        assert_eq!(decimal(&[]), "0");
        assert_eq!(decimal(&[0]), "0");
        assert_eq!(decimal(&[0x10, 0x01]), "4097");
        assert_eq!(decimal(&[0, 0xff]), "255");
        assert_eq!(
            decimal(&[0x01, 0, 0, 0, 0, 0, 0, 0, 0]),
            "18446744073709551616"
        );
        let big = [0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(decimal(&big), i64::MAX.to_string());
    }
}
