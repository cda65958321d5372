//! Client connection entries: `<connection>` blocks and the per-connection timing
//! directives (`connect-retry`, `connect-timeout` / `server-poll-timeout`,
//! `connect-retry-max`), as OpenVPN 2.6 reads them (options.c, `struct
//! connection_entry`; openvpn-ops.md §5.5).
//!
//! * Each `<connection>` block is one entry with exactly one `remote`. The entry
//!   starts from the per-connection directives written before the block (`proto`,
//!   `port`, `rport`, `lport`, `nobind`, `explicit-exit-notify`, `connect-retry`,
//!   `connect-timeout`, …); the block's own lines override them.
//! * With blocks, `remote` lines outside them are ignored, and per-connection
//!   directives after the first block no longer reach any entry; OpenVPN 2.6 does
//!   the same ("is ignored by previous <connection> blocks"). warren warns for both.
//! * `connect-timeout` and `server-poll-timeout` are one setting (OpenVPN sets
//!   `ce.connect_timeout` for both): how long an attempt may go without a packet from
//!   the server before the next entry is tried. `connect-retry-max` is global even
//!   inside a block.
//! * `http-proxy`, `http-proxy-option` and `socks-proxy` are per-connection too (see
//!   [`crate::proxy`]).
//! * Directives OpenVPN allows in a block that warren does not take there
//!   (`fragment`, `link-mtu`, `tun-mtu`, …) are refused with `file:line`; anything else
//!   in a block is refused as OpenVPN refuses it.

use std::time::Duration;

use crate::error::{ConfigError, Location};
use crate::lex::{Directive, parse_str};
use crate::lower::View;

/// warren's `server-poll-timeout` when a profile sets none. OpenVPN's is 120 s, but a
/// stock client gives up on a silent UDP server after `hand-window` (60 s) anyway
/// (openvpn-ops.md §0.10); warren counts any packet from the server as an answer, so
/// 10 s without one means the path is dead.
pub const DEFAULT_SERVER_POLL_TIMEOUT: u32 = 10;
/// `connect-retry`: the pause before the next attempt (OpenVPN options.c).
pub const DEFAULT_CONNECT_RETRY: u32 = 1;
/// `connect-retry`'s second parameter: the cap of the backed-off pause.
pub const DEFAULT_CONNECT_RETRY_MAX: u32 = 300;

/// The per-connection settings of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct EntryOptions {
    /// `connect-timeout N` / `server-poll-timeout N`; `Some(0)` turns the poll timeout
    /// off (the TLS `hand-window` still ends a silent attempt).
    pub connect_timeout: Option<u32>,
    /// `connect-retry N [MAX]`, MAX already raised to at least N.
    pub connect_retry: Option<(u32, u32)>,
    /// `explicit-exit-notify [N]` in force for this entry.
    pub explicit_exit_notify: Option<u32>,
    /// `nobind`.
    pub nobind: bool,
    /// `lport` / `port`: the local port to bind without `nobind`.
    pub lport: Option<u16>,
    /// The line of the `<connection>` block, `None` for a `remote` line.
    pub block_line: Option<u32>,
}

impl EntryOptions {
    /// How long an attempt may go without a packet from the server; `None` for
    /// `server-poll-timeout 0`.
    pub fn server_poll_timeout(&self) -> Option<Duration> {
        match self.connect_timeout.unwrap_or(DEFAULT_SERVER_POLL_TIMEOUT) {
            0 => None,
            s => Some(Duration::from_secs(u64::from(s))),
        }
    }

    /// `connect-retry` with defaults: the pause before the next attempt and its cap.
    pub fn connect_retry(&self) -> (Duration, Duration) {
        let (n, max) = self
            .connect_retry
            .unwrap_or((DEFAULT_CONNECT_RETRY, DEFAULT_CONNECT_RETRY_MAX));
        (
            Duration::from_secs(u64::from(n)),
            Duration::from_secs(u64::from(max)),
        )
    }

    /// The bind port: 0 with `nobind`, else `lport` or 1194.
    pub fn bind_port(&self) -> u16 {
        if self.nobind {
            0
        } else {
            self.lport.unwrap_or(crate::settings::defaults::PORT)
        }
    }
}

/// Per-connection directives outside any block that are not shared with the server
/// (those live in `Common` and `ClientState`): the defaults for the entries.
#[derive(Debug, Clone, Default)]
pub(crate) struct Timing {
    pub connect_timeout: Option<u32>,
    pub connect_retry: Option<(u32, u32)>,
}

/// Directives of this module at the top level of a client config.
pub(crate) const CONNECTION_DIRECTIVES: &[&str] = &[
    "connection",
    "connect-retry",
    "connect-retry-max",
    "connect-timeout",
    "server-poll-timeout",
];

/// Per-connection directives: written at the top level after the first block, they
/// reach no entry (OpenVPN: "ignored by previous <connection> blocks").
pub(crate) const ENTRY_DIRECTIVES: &[&str] = &[
    "remote",
    "proto",
    "port",
    "rport",
    "lport",
    "nobind",
    "explicit-exit-notify",
    "connect-retry",
    "connect-timeout",
    "server-poll-timeout",
    "float",
    "http-proxy",
    "http-proxy-option",
    "http-proxy-retry",
    "http-proxy-timeout",
    "socks-proxy",
    "socks-proxy-retry",
];

/// Allowed in a block by OpenVPN (`OPT_P_CONNECTION`) but not taken there by warren.
const BLOCK_UNSUPPORTED: &[(&str, &str)] = &[
    (
        "local",
        "a per-connection `local` is not supported yet; put `local` before the first <connection> block",
    ),
    ("bind", "`bind` is not supported; use `lport` or `nobind`"),
    ("fragment", "fragmentation is not supported"),
    ("link-mtu", "`link-mtu` is not supported; use `tun-mtu`"),
    ("mtu-disc", "path MTU discovery settings are not supported"),
    (
        "tun-mtu",
        "a per-connection `tun-mtu` is not supported yet; put it before the first <connection> block",
    ),
    (
        "tun-mtu-extra",
        "a per-connection `tun-mtu-extra` is not supported; it only applies to tap devices",
    ),
    (
        "mssfix",
        "a per-connection `mssfix` is not supported yet; put it before the first <connection> block",
    ),
    (
        "key-direction",
        "a per-connection `key-direction` is not supported yet; put it before the first <connection> block",
    ),
    (
        "tls-auth",
        "a per-connection `tls-auth` key is not supported yet; put it before the first <connection> block",
    ),
    (
        "tls-crypt",
        "a per-connection `tls-crypt` key is not supported yet; put it before the first <connection> block",
    ),
    (
        "tls-crypt-v2",
        "a per-connection `tls-crypt-v2` key is not supported yet; put it before the first <connection> block",
    ),
];

impl Timing {
    /// `connect-retry`, `connect-timeout` and `server-poll-timeout`; `Ok(false)` for
    /// anything else.
    pub fn apply(&mut self, v: &View<'_>) -> Result<bool, ConfigError> {
        match v.name {
            "connect-retry" => {
                v.expect(
                    1,
                    2,
                    "1 or 2 parameters (seconds between attempts, and the backoff cap)",
                )?;
                let n = v.u32_at(0)?;
                // OpenVPN options.c: the cap is at least the pause.
                let max = if v.args.len() == 2 {
                    v.u32_at(1)?.max(n)
                } else {
                    DEFAULT_CONNECT_RETRY_MAX.max(n)
                };
                self.connect_retry = Some((n, max));
            }
            "connect-timeout" | "server-poll-timeout" => {
                v.expect(1, 1, "1 parameter (seconds)")?;
                self.connect_timeout = Some(v.u32_at(0)?);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// `connect-retry-max N`: give up after N unsuccessful rounds over all entries.
pub(crate) fn connect_retry_max(v: &View<'_>) -> Result<u32, ConfigError> {
    v.expect(1, 1, "1 parameter (a number of rounds)")?;
    let n = v.u32_at(0)?;
    if n == 0 {
        return Err(v.invalid(
            0,
            "must be at least 1 (leave the directive out to retry forever)",
        ));
    }
    Ok(n)
}

/// The body of a `<connection>` block, parsed with the file's line numbers.
pub(crate) fn block_directives(v: &View<'_>) -> Result<Vec<Directive>, ConfigError> {
    let body = v.inline.unwrap_or_default();
    let offset = v.loc.line.unwrap_or(0);
    let mut ds = parse_str(body, &v.loc.file).map_err(|e| shift(e, offset))?;
    for d in &mut ds {
        if d.inline.is_some() {
            return Err(ConfigError::Unsupported {
                location: Location {
                    file: v.loc.file.clone(),
                    line: Some(d.line + offset),
                },
                name: d.name.value.clone(),
                reason: "inline blocks inside a <connection> block are not supported; put them \
                         before the first <connection> block",
            });
        }
        d.line += offset;
        d.name.span.line += offset;
        for a in &mut d.args {
            a.span.line += offset;
        }
    }
    Ok(ds)
}

/// Moves a syntax error found in a block body to the file's line.
fn shift(mut e: ConfigError, offset: u32) -> ConfigError {
    if let ConfigError::Syntax { location, .. } = &mut e
        && let Some(l) = &mut location.line
    {
        *l += offset;
    }
    e
}

/// Why a directive the block lowering did not take is refused.
pub(crate) fn refuse_in_block(v: &View<'_>) -> ConfigError {
    if let Some((_, reason)) = BLOCK_UNSUPPORTED.iter().find(|(n, _)| *n == v.name) {
        return ConfigError::Unsupported {
            location: v.loc.clone(),
            name: v.name.to_owned(),
            reason,
        };
    }
    if v.name == "connection" {
        return ConfigError::Unsupported {
            location: v.loc.clone(),
            name: v.name.to_owned(),
            reason: "<connection> blocks cannot be nested",
        };
    }
    if crate::directives::is_openvpn_directive(v.name) {
        return ConfigError::Unsupported {
            location: v.loc.clone(),
            name: v.name.to_owned(),
            reason: "not allowed inside a <connection> block (OpenVPN refuses it there too); \
                     put it before the first block",
        };
    }
    ConfigError::UnknownDirective {
        location: v.loc.clone(),
        name: v.name.to_owned(),
        suggestion: crate::directives::did_you_mean(v.name, BLOCK_DIRECTIVES),
    }
}

/// What a block takes.
pub(crate) const BLOCK_DIRECTIVES: &[&str] = &[
    "remote",
    "proto",
    "port",
    "rport",
    "lport",
    "nobind",
    "explicit-exit-notify",
    "connect-retry",
    "connect-retry-max",
    "connect-timeout",
    "server-poll-timeout",
    "float",
    "http-proxy",
    "http-proxy-option",
    "http-proxy-retry",
    "http-proxy-timeout",
    "socks-proxy",
    "socks-proxy-retry",
];

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::types::ClientProto;
    use crate::{ClientConfig, Warning, client_config_from_str};

    const HEAD: &str = "client\nca /nonexistent/ca.crt\nauth-user-pass\nremote-cert-tls server\n";

    fn load(body: &str) -> Result<(ClientConfig, Vec<Warning>), ConfigError> {
        client_config_from_str(&format!("{HEAD}{body}"), "c.ovpn", Path::new("/tmp"))
    }

    fn err(body: &str) -> String {
        load(body).expect_err("must be refused").to_string()
    }

    #[test]
    fn blocks_in_order_with_defaults_from_before() {
        let (cfg, warnings) = load(
            "port 1300\nconnect-retry 2 20\nserver-poll-timeout 10\nnobind\n\
             <connection>\nremote vpn.example.org\nexplicit-exit-notify 2\n</connection>\n\
             <connection>\nremote vpn.example.org 443\nproto tcp-client\nconnect-timeout 4\n\
             connect-retry 3\n</connection>\n\
             <connection>\nremote 192.0.2.1 1194 udp6\nlport 5000\n</connection>\n",
        )
        .expect("loads");
        assert!(warnings.is_empty(), "{warnings:?}");
        let r: Vec<_> = cfg
            .remotes
            .iter()
            .map(|r| (r.host.as_str(), r.port, r.proto))
            .collect();
        assert_eq!(
            r,
            [
                ("vpn.example.org", 1300, ClientProto::Udp),
                ("vpn.example.org", 443, ClientProto::TcpClient),
                ("192.0.2.1", 1194, ClientProto::Udp6),
            ]
        );
        let e: Vec<_> = cfg.remotes.iter().map(|r| r.entry).collect();
        assert_eq!(e[0].connect_timeout, Some(10));
        assert_eq!(e[0].connect_retry, Some((2, 20)));
        assert_eq!(e[0].explicit_exit_notify, Some(2));
        assert_eq!(e[0].block_line, Some(9));
        assert!(e[0].nobind);
        assert_eq!(e[1].connect_timeout, Some(4));
        // The cap is raised to the default 300 s unless given.
        assert_eq!(e[1].connect_retry, Some((3, 300)));
        assert_eq!(e[1].explicit_exit_notify, None);
        assert_eq!(e[1].block_line, Some(13));
        assert_eq!(e[2].lport, Some(5000));
        assert_eq!(e[2].server_poll_timeout(), Some(Duration::from_secs(10)));
        assert_eq!(
            e[1].connect_retry(),
            (Duration::from_secs(3), Duration::from_secs(300))
        );
    }

    #[test]
    fn remote_lines_take_the_whole_files_settings() {
        let (cfg, _) = load(
            "remote a.example 1\nremote b.example 2 tcp\nserver-poll-timeout 0\nconnect-retry 5 2\n\
             connect-retry-max 3\n",
        )
        .expect("loads");
        assert_eq!(cfg.remotes.len(), 2);
        for r in &cfg.remotes {
            assert_eq!(r.entry.connect_timeout, Some(0));
            assert_eq!(r.entry.server_poll_timeout(), None);
            // OpenVPN raises the cap to the pause.
            assert_eq!(r.entry.connect_retry, Some((5, 5)));
            assert_eq!(r.entry.block_line, None);
        }
        assert_eq!(cfg.connect_retry_max, Some(3));
        let (cfg, _) = load("remote a.example\n").expect("loads");
        let e = cfg.remotes[0].entry;
        assert_eq!(e.server_poll_timeout(), Some(Duration::from_secs(10)));
        assert_eq!(
            e.connect_retry(),
            (Duration::from_secs(1), Duration::from_secs(300))
        );
        assert_eq!(cfg.connect_retry_max, None);
    }

    #[test]
    fn outside_remotes_and_late_entry_options_warn() {
        let (cfg, warnings) = load(
            "remote ignored.example 1194\n<connection>\nremote used.example\n</connection>\n\
             server-poll-timeout 3\nconnect-retry-max 2\n",
        )
        .expect("loads");
        assert_eq!(cfg.remotes.len(), 1);
        assert_eq!(cfg.remotes[0].host, "used.example");
        assert_eq!(cfg.remotes[0].entry.connect_timeout, None);
        // connect-retry-max is global and still applies.
        assert_eq!(cfg.connect_retry_max, Some(2));
        let w: Vec<_> = warnings
            .iter()
            .map(|w| (w.directive.as_str(), w.location.line))
            .collect();
        assert_eq!(w, [("server-poll-timeout", Some(9)), ("remote", Some(5))]);
        assert!(warnings[1].message.contains("<connection> blocks"));
    }

    #[test]
    fn block_errors_name_the_line() {
        let e =
            err("<connection>\nremote a.example\nhttp-proxy proxy.example 3128\n</connection>\n");
        assert!(
            e.starts_with("c.ovpn:7:") && e.contains("`http-proxy` needs TCP"),
            "{e}"
        );
        let e = err(
            "<connection>\nremote a.example\n</connection>\n<connection>\nremote b\nsocks-proxy 127.0.0.1 1080\n</connection>\n",
        );
        assert!(e.starts_with("c.ovpn:10: `socks-proxy`"), "{e}");
        let e = err("<connection>\nremote a.example\ntun-mtu 1400\n</connection>\n");
        assert!(
            e.starts_with("c.ovpn:7: `tun-mtu`") && e.contains("before the first"),
            "{e}"
        );
        let e = err("<connection>\nremote a.example\nlink-mtu 1400\n</connection>\n");
        assert!(e.starts_with("c.ovpn:7: `link-mtu`"), "{e}");
        let e = err("<connection>\nremote a.example\nverb 4\n</connection>\n");
        assert!(
            e.starts_with("c.ovpn:7: `verb`") && e.contains("not allowed inside"),
            "{e}"
        );
        let e = err("<connection>\nremote a.example\nserver-pol-timeout 4\n</connection>\n");
        assert!(
            e.starts_with("c.ovpn:7: unknown directive `server-pol-timeout`")
                && e.contains("server-poll-timeout"),
            "{e}"
        );
        let e = err("<connection>\nproto tcp\n</connection>\n");
        assert!(
            e.starts_with("c.ovpn:5:") && e.contains("exactly one `remote`"),
            "{e}"
        );
        let e = err("<connection>\nremote a\nremote b\n</connection>\n");
        assert!(e.contains("exactly one `remote`"), "{e}");
        let e = err("<connection>\nremote a\nproto tcp-server\n</connection>\n");
        assert!(e.starts_with("c.ovpn:7:"), "{e}");
        let e = err("<connection>\nremote a\nconnect-retry x\n</connection>\n");
        assert!(e.starts_with("c.ovpn:7:"), "{e}");
        let e = err("<connection>\nremote a \"b\n</connection>\n");
        assert!(e.starts_with("c.ovpn:6:"), "{e}");
        let e = err("connect-retry-max 0\nremote a\n");
        assert!(e.contains("at least 1"), "{e}");
        let e = err("connection x\nremote a\n");
        assert!(e.contains("<connection>"), "{e}");
    }

    #[test]
    fn a_server_config_refuses_connection_blocks() {
        let e = crate::server_config_from_str(
            "server 10.8.0.0 255.255.255.0\n<connection>\nremote a\n</connection>\n",
            "s.conf",
            Path::new("/tmp"),
        )
        .expect_err("client-only");
        assert!(e.to_string().starts_with("s.conf:2: `connection`"), "{e}");
    }
}
