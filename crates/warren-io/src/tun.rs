//! What opening a layer-3 tun device needs ([`crate::OffloadTun`] opens it): the config,
//! the typed errors, the name check and the error classification.
use std::io;
use std::net::Ipv4Addr;

use thiserror::Error;
use tun_rs::SyncDevice;

/// What to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunConfig {
    /// Interface name. `"tun"` alone (OpenVPN's `dev tun`) lets the kernel pick `tunN`;
    /// a name with `%d` is passed through as a kernel pattern.
    pub name: String,
    pub address: Ipv4Addr,
    /// Prefix length of the on-link network (`/24` for 255.255.255.0).
    pub prefix: u8,
    pub mtu: u16,
}

#[derive(Debug, Error)]
pub enum TunError {
    #[error(
        "opening /dev/net/tun for {name}: permission denied: needs CAP_NET_ADMIN: run as root or `setcap cap_net_admin+ep warren`"
    )]
    NeedsCapNetAdmin { name: String, source: io::Error },
    #[error("/dev/net/tun missing: modprobe tun")]
    DeviceMissing { source: io::Error },
    #[error("tun device {name} is busy (already opened by another process?)")]
    Busy { name: String, source: io::Error },
    #[error("invalid tun device name {0:?}: at most 15 bytes, no '/', whitespace or NUL")]
    BadName(String),
    #[error("invalid prefix length /{0} (0..=32)")]
    BadPrefix(u8),
    #[error("creating tun device {name} ({address}/{prefix}, mtu {mtu}): {source}")]
    Create {
        name: String,
        address: Ipv4Addr,
        prefix: u8,
        mtu: u16,
        source: io::Error,
    },
    #[error("tun device {step}: {source}")]
    Setup {
        step: &'static str,
        source: io::Error,
    },
}

/// Linux IFNAMSIZ minus the NUL.
const MAX_NAME: usize = 15;

/// `None` for OpenVPN's generic `tun` (kernel picks `tunN`), else the validated name.
pub(crate) fn kernel_name(name: &str) -> Result<Option<String>, TunError> {
    if name == "tun" {
        return Ok(None);
    }
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|c| c == b'/' || c == 0 || c.is_ascii_whitespace() || c == b':');
    if ok {
        Ok(Some(name.to_owned()))
    } else {
        Err(TunError::BadName(name.to_owned()))
    }
}

/// Makes `dev` non-blocking and returns the name the kernel gave it.
pub(crate) fn nonblocking_name(dev: &SyncDevice) -> Result<String, TunError> {
    let setup = |step, source| TunError::Setup { step, source };
    dev.set_nonblocking(true)
        .map_err(|e| setup("set non-blocking", e))?;
    dev.name().map_err(|e| setup("read name", e))
}

pub(crate) fn classify(name: &str, cfg: &TunConfig, source: io::Error) -> TunError {
    match source.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => TunError::NeedsCapNetAdmin {
            name: name.to_owned(),
            source,
        },
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO)
            if !std::path::Path::new("/dev/net/tun").exists() =>
        {
            TunError::DeviceMissing { source }
        }
        Some(libc::EBUSY) => TunError::Busy {
            name: name.to_owned(),
            source,
        },
        _ => TunError::Create {
            name: name.to_owned(),
            address: cfg.address,
            prefix: cfg.prefix,
            mtu: cfg.mtu,
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(kernel_name("tun").expect("ok"), None);
        assert_eq!(kernel_name("tun0").expect("ok").as_deref(), Some("tun0"));
        assert_eq!(kernel_name("vpn%d").expect("ok").as_deref(), Some("vpn%d"));
        for bad in ["", "a/b", "sixteen-chars-xx", "a b", ".."] {
            assert!(
                matches!(kernel_name(bad), Err(TunError::BadName(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn error_messages_say_the_fix() {
        let cfg = TunConfig {
            name: "tun0".into(),
            address: Ipv4Addr::new(192, 0, 2, 1),
            prefix: 24,
            mtu: 1500,
        };
        let e = classify("tun0", &cfg, io::Error::from_raw_os_error(libc::EPERM));
        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
        assert!(
            e.to_string().contains("setcap cap_net_admin+ep warren"),
            "{e}"
        );
        let e = classify("tun0", &cfg, io::Error::from_raw_os_error(libc::EACCES));
        assert!(matches!(e, TunError::NeedsCapNetAdmin { .. }));
        assert_eq!(
            TunError::DeviceMissing {
                source: io::Error::from_raw_os_error(libc::ENOENT)
            }
            .to_string(),
            "/dev/net/tun missing: modprobe tun"
        );
    }
}
