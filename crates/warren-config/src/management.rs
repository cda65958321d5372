//! OpenVPN's management interface directives on a server (OpenVPN options.c
//! "management", manage.c; the man page's "Management Interface Options").
//!
//! Taken: `management IP PORT [PWFILE]`, `management PATH unix [PWFILE]`,
//! `management-client-auth`, `management-hold`, `management-log-cache N`,
//! `management-client-user USER`, `management-client-group GROUP` (unix socket only).
//! The modifiers without `management` are an error, as in OpenVPN ("--management is not
//! specified, however one or more options which modify the behavior of --management were
//! specified"). Client-side modifiers (`management-query-passwords`, `-query-proxy`,
//! `-query-remote`, `-signal`, `-up-down`, `-forget-disconnect`) have no effect on a server
//! and are ignored with a warning (see `directives.rs`); `management-client` (connecting
//! out) is refused.
use std::path::PathBuf;

use crate::error::{ConfigError, Location};
use crate::lower::View;

/// OpenVPN's default `management-log-cache` (options.c init_options).
pub const DEFAULT_LOG_CACHE: u32 = 250;
/// The largest log cache warren keeps (lines of at most a few hundred bytes each).
pub const MAX_LOG_CACHE: u32 = 100_000;

/// Where the management interface listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagementListen {
    /// `management IP PORT`: a TCP socket (IP may be a host name, resolved once at start).
    Tcp { host: String, port: u16 },
    /// `management PATH unix`: a unix socket, removed at exit.
    Unix(PathBuf),
}

/// `management ...` and its modifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementConfig {
    pub listen: ManagementListen,
    /// The password file's first line is the password (`ENTER PASSWORD:` prompt).
    pub password_file: Option<PathBuf>,
    /// `management-client-auth`: connecting clients wait for `client-auth` or
    /// `client-deny` from the management client.
    pub client_auth: bool,
    /// `management-hold`: start held until `hold release`, and hold again after a restart.
    pub hold: bool,
    /// `management-log-cache N` (default 250): lines of log and state history kept.
    pub log_cache: u32,
    /// `management-client-user`: only this user may connect to the unix socket.
    pub client_user: Option<String>,
    /// `management-client-group`: only members of this group may connect.
    pub client_group: Option<String>,
}

/// The management directives as they are read; [`ManagementState::finish`] checks them.
#[derive(Default)]
pub(crate) struct ManagementState {
    main: Option<(ManagementListen, Option<PathBuf>)>,
    client_auth: Option<Location>,
    hold: Option<Location>,
    log_cache: Option<(u32, Location)>,
    client_user: Option<(String, Location)>,
    client_group: Option<(String, Location)>,
}

/// The directive names [`ManagementState::apply`] takes.
pub(crate) const MANAGEMENT_DIRECTIVES: &[&str] = &[
    "management",
    "management-client-auth",
    "management-hold",
    "management-log-cache",
    "management-client-user",
    "management-client-group",
];

impl ManagementState {
    /// Takes one management directive; `Ok(false)` for any other.
    pub(crate) fn apply(&mut self, v: &View<'_>) -> Result<bool, ConfigError> {
        match v.name {
            "management" => {
                v.expect(
                    2,
                    3,
                    "2 or 3 parameters (`IP PORT [PWFILE]` or `PATH unix [PWFILE]`)",
                )?;
                let pw = (v.args.len() == 3).then(|| v.arg(2));
                if pw == Some("stdin") {
                    return Err(v.invalid(
                        2,
                        "warren does not read the management password from the terminal; \
                         put it on the first line of a file and name that file",
                    ));
                }
                if pw.is_some_and(str::is_empty) {
                    return Err(v.invalid(2, "empty password file name"));
                }
                let listen = if v.arg(1) == "unix" {
                    if v.arg(0).is_empty() {
                        return Err(v.invalid(0, "empty socket path"));
                    }
                    ManagementListen::Unix(PathBuf::from(v.arg(0)))
                } else {
                    if v.arg(0) == "tunnel" {
                        return Err(ConfigError::Unsupported {
                            location: v.loc.clone(),
                            name: "management tunnel PORT".into(),
                            reason: "listening on the tunnel address is not supported; give \
                                     an address such as 127.0.0.1",
                        });
                    }
                    if v.arg(0).is_empty() {
                        return Err(v.invalid(0, "empty address"));
                    }
                    ManagementListen::Tcp {
                        host: v.arg(0).to_owned(),
                        port: v.port_at(1)?,
                    }
                };
                self.main = Some((listen, pw.map(PathBuf::from)));
            }
            "management-client-auth" => {
                v.expect(0, 0, "no parameters")?;
                self.client_auth = Some(v.loc.clone());
            }
            "management-hold" => {
                v.expect(0, 0, "no parameters")?;
                self.hold = Some(v.loc.clone());
            }
            "management-log-cache" => {
                v.expect(1, 1, "1 parameter (a number of lines)")?;
                let n = v.u32_at(0)?;
                // OpenVPN options.c: "--management-log-cache parameter is out of range".
                if n == 0 || n > MAX_LOG_CACHE {
                    return Err(v.invalid(0, format!("expected 1 to {MAX_LOG_CACHE} lines")));
                }
                self.log_cache = Some((n, v.loc.clone()));
            }
            "management-client-user" | "management-client-group" => {
                v.expect(1, 1, "1 parameter (a name)")?;
                if v.arg(0).is_empty() {
                    return Err(v.invalid(0, "empty name"));
                }
                let slot = if v.name == "management-client-user" {
                    &mut self.client_user
                } else {
                    &mut self.client_group
                };
                *slot = Some((v.arg(0).to_owned(), v.loc.clone()));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The lowered settings; modifiers without `management` are an error.
    pub(crate) fn finish(self) -> Result<Option<ManagementConfig>, ConfigError> {
        let Some((listen, password_file)) = self.main else {
            let first = [
                self.client_auth.as_ref(),
                self.hold.as_ref(),
                self.log_cache.as_ref().map(|(_, l)| l),
                self.client_user.as_ref().map(|(_, l)| l),
                self.client_group.as_ref().map(|(_, l)| l),
            ]
            .into_iter()
            .flatten()
            .min_by_key(|l| l.line)
            .cloned();
            return match first {
                None => Ok(None),
                Some(location) => Err(ConfigError::Conflict {
                    location,
                    message: "this modifies the management interface, which is not enabled: add \
                              `management IP PORT` or `management PATH unix`"
                        .into(),
                }),
            };
        };
        let unix = matches!(listen, ManagementListen::Unix(_));
        for (_, loc) in [&self.client_user, &self.client_group]
            .into_iter()
            .flatten()
        {
            if !unix {
                // OpenVPN options.c: "--management-client-(user|group) can be only used
                // on unix domain sockets".
                return Err(ConfigError::Conflict {
                    location: loc.clone(),
                    message: "`management-client-user`/`-group` need a unix socket \
                              (`management PATH unix`)"
                        .into(),
                });
            }
        }
        Ok(Some(ManagementConfig {
            listen,
            password_file,
            client_auth: self.client_auth.is_some(),
            hold: self.hold.is_some(),
            log_cache: self.log_cache.map_or(DEFAULT_LOG_CACHE, |(n, _)| n),
            client_user: self.client_user.map(|(u, _)| u),
            client_group: self.client_group.map(|(g, _)| g),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn lower(extra: &str) -> Result<Option<ManagementConfig>, ConfigError> {
        let text = format!(
            "ca a\ncert b\nkey c\nserver 10.8.0.0 255.255.255.0\ntopology subnet\n{extra}\n"
        );
        crate::server_config_from_str(&text, "s.conf", Path::new(".")).map(|(c, _)| c.management)
    }

    #[test]
    fn management_directives() {
        assert_eq!(lower("").expect("ok"), None);
        let m = lower("management 127.0.0.1 7505")
            .expect("ok")
            .expect("some");
        assert_eq!(
            m.listen,
            ManagementListen::Tcp {
                host: "127.0.0.1".into(),
                port: 7505
            }
        );
        assert_eq!(m.log_cache, DEFAULT_LOG_CACHE);
        assert!(!m.client_auth && !m.hold && m.password_file.is_none());
        let m = lower(
            "management /run/w.sock unix pw.txt\nmanagement-client-auth\nmanagement-hold\n\
             management-log-cache 10\nmanagement-client-user root",
        )
        .expect("ok")
        .expect("some");
        assert_eq!(m.listen, ManagementListen::Unix("/run/w.sock".into()));
        assert_eq!(m.password_file.as_deref(), Some(Path::new("pw.txt")));
        assert!(m.client_auth && m.hold);
        assert_eq!(m.log_cache, 10);
        assert_eq!(m.client_user.as_deref(), Some("root"));
        // Client-side modifiers are ignored on a server.
        assert!(lower("management 127.0.0.1 7505\nmanagement-query-passwords").is_ok());
    }

    #[test]
    fn bad_management_directives_name_the_line() {
        for (bad, line) in [
            ("management-client-auth", 6),
            ("management-hold\nmanagement-log-cache 5", 6),
            ("management 127.0.0.1 0", 6),
            ("management 127.0.0.1", 6),
            ("management 127.0.0.1 7505 stdin", 6),
            ("management tunnel 7505", 6),
            ("management 127.0.0.1 7505\nmanagement-log-cache 0", 7),
            ("management 127.0.0.1 7505\nmanagement-client-user root", 7),
            ("management-client 127.0.0.1 7505", 6),
        ] {
            let e = lower(bad).expect_err(bad);
            assert_eq!(e.location().and_then(|l| l.line), Some(line), "{bad}: {e}");
            assert!(e.to_string().contains("management"), "{bad}: {e}");
        }
    }
}
