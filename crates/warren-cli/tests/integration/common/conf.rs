//! Writers for OpenVPN `server.conf` and `client.conf` files. The same server file is given
//! to `openvpn --config` and to `warren server --config`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// Control-channel wrapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsWrap {
    /// `tls-crypt ta.key`
    Crypt,
    /// `tls-auth ta.key [dir]`. With `inline_direction`, the direction is the second argument
    /// of `tls-auth` (server 0, client 1); otherwise a separate `key-direction` line.
    /// `auth` sets the HMAC digest (OpenVPN default SHA1).
    Auth {
        inline_direction: bool,
        auth: Option<&'static str>,
    },
    /// No wrapping.
    None,
}

fn p(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

fn wrap_lines(out: &mut String, wrap: &TlsWrap, ta_key: &Path, direction: u8) {
    match wrap {
        TlsWrap::Crypt => {
            let _ = writeln!(out, "tls-crypt {}", p(ta_key));
        }
        TlsWrap::Auth {
            inline_direction,
            auth,
        } => {
            if *inline_direction {
                let _ = writeln!(out, "tls-auth {} {direction}", p(ta_key));
            } else {
                let _ = writeln!(out, "tls-auth {}", p(ta_key));
                let _ = writeln!(out, "key-direction {direction}");
            }
            if let Some(a) = auth {
                let _ = writeln!(out, "auth {a}");
            }
        }
        TlsWrap::None => {}
    }
}

/// A `server.conf`.
#[derive(Clone, Debug)]
pub struct ServerConf {
    pub port: u16,
    /// A unique tun device name (tun devices live in the server namespace).
    pub dev: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ta_key: PathBuf,
    pub wrap: TlsWrap,
    /// `server <net> <mask>`
    pub network: (String, String),
    pub data_ciphers: Option<String>,
    pub tls_version_min: Option<String>,
    pub tls_version_max: Option<String>,
    pub reneg_sec: Option<u32>,
    pub client_to_client: bool,
    /// `status <file> 1`
    pub status: Option<PathBuf>,
    pub verb: u8,
    /// Extra lines, written verbatim at the end.
    pub extra: Vec<String>,
}

impl ServerConf {
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# written by warren's integration tests");
        let _ = writeln!(o, "port {}", self.port);
        let _ = writeln!(o, "proto udp");
        let _ = writeln!(o, "dev {}", self.dev);
        let _ = writeln!(o, "ca {}", p(&self.ca));
        let _ = writeln!(o, "cert {}", p(&self.cert));
        let _ = writeln!(o, "key {}", p(&self.key));
        let _ = writeln!(o, "dh none");
        wrap_lines(&mut o, &self.wrap, &self.ta_key, 0);
        let _ = writeln!(o, "topology subnet");
        let _ = writeln!(o, "server {} {}", self.network.0, self.network.1);
        let _ = writeln!(o, "keepalive 10 60");
        if let Some(c) = &self.data_ciphers {
            let _ = writeln!(o, "data-ciphers {c}");
        }
        if let Some(v) = &self.tls_version_min {
            let _ = writeln!(o, "tls-version-min {v}");
        }
        if let Some(v) = &self.tls_version_max {
            let _ = writeln!(o, "tls-version-max {v}");
        }
        if let Some(r) = self.reneg_sec {
            let _ = writeln!(o, "reneg-sec {r}");
        }
        if self.client_to_client {
            let _ = writeln!(o, "client-to-client");
        }
        let _ = writeln!(o, "explicit-exit-notify 1");
        if let Some(s) = &self.status {
            let _ = writeln!(o, "status {} 1", p(s));
        }
        let _ = writeln!(o, "verb {}", self.verb);
        for l in &self.extra {
            let _ = writeln!(o, "{l}");
        }
        o
    }

    pub fn write(&self, path: &Path) {
        fs::write(path, self.render()).expect("write server.conf");
    }
}

/// A `client.conf` for the stock `openvpn` client.
#[derive(Clone, Debug)]
pub struct ClientConf {
    pub dev: String,
    pub remote: (String, u16),
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ta_key: PathBuf,
    pub wrap: TlsWrap,
    pub data_ciphers: Option<String>,
    pub tls_version_max: Option<String>,
    pub reneg_sec: Option<u32>,
    pub verb: u8,
    pub extra: Vec<String>,
}

impl ClientConf {
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# written by warren's integration tests");
        let _ = writeln!(o, "client");
        let _ = writeln!(o, "dev {}", self.dev);
        let _ = writeln!(o, "proto udp");
        let _ = writeln!(o, "remote {} {}", self.remote.0, self.remote.1);
        let _ = writeln!(o, "nobind");
        let _ = writeln!(o, "ca {}", p(&self.ca));
        let _ = writeln!(o, "cert {}", p(&self.cert));
        let _ = writeln!(o, "key {}", p(&self.key));
        let _ = writeln!(o, "remote-cert-tls server");
        wrap_lines(&mut o, &self.wrap, &self.ta_key, 1);
        if let Some(c) = &self.data_ciphers {
            let _ = writeln!(o, "data-ciphers {c}");
        }
        if let Some(v) = &self.tls_version_max {
            let _ = writeln!(o, "tls-version-max {v}");
        }
        if let Some(r) = self.reneg_sec {
            let _ = writeln!(o, "reneg-sec {r}");
        }
        let _ = writeln!(o, "verb {}", self.verb);
        for l in &self.extra {
            let _ = writeln!(o, "{l}");
        }
        o
    }

    pub fn write(&self, path: &Path) {
        fs::write(path, self.render()).expect("write client.conf");
    }
}
