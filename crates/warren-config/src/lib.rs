//! OpenVPN's own config syntax, read in two steps. [`parse_str`] is a spanned,
//! uninterpreted parse that follows OpenVPN 2.6's lexer (`options.c`
//! `parse_line` and `read_inline_file`): quotes, escapes, comments, a leading
//! `--`, and `<tag>…</tag>` inline blocks, each [`Directive`] keeping its file
//! and line. Lowering ([`load_server_config`], [`server_config_from_str`],
//! [`load_client_config`], [`client_config_from_str`]) turns directives into a
//! typed [`ServerConfig`] or [`ClientConfig`], validating every value, and
//! returns the [`Warning`]s the admin should see. An admin can therefore run
//! `warren server --config server.conf` on the file they run `openvpn` with.
//!
//! # What happens to each directive
//!
//! Every directive ends up in exactly one of these places, in this order:
//!
//! 1. **Lowered**: the directives with a field in [`ServerConfig`] or
//!    [`ClientConfig`], plus `mode server`, `tls-server`, `client`, `pull`,
//!    `tls-client`, `key-direction`, `ncp-ciphers` (the pre-2.5 name of
//!    `data-ciphers`), `allow-compression no` and the warren extensions
//!    `warren-key-derivation auto|prf`, `warren-offload on|off` (tun
//!    offloads and batched UDP; default on) and, in a server config,
//!    `warren-workers N|auto`, `warren-state-dir DIR` and
//!    `warren-auth cert|cert+password|password` (users, revocations and
//!    leases from warren's state; `warren-auth` needs `warren-state-dir`),
//!    `warren-max-half-open N` and `warren-max-half-open-per-source N`
//!    (bounds on sessions still in the handshake), `warren-access CN allow|deny
//!    RULE` (per-client access rules, see [`AccessDirective`]), and OpenVPN 2.7's
//!    `tls-crypt-v2-max-age DAYS`. In a client config,
//!    `warren-kill-switch on|off` (nothing leaves outside the tunnel while the
//!    client runs), `<connection>` blocks and `connect-retry`, `connect-retry-max`,
//!    `connect-timeout`/`server-poll-timeout` (see [`EntryOptions`]).
//!    A warren extension of the other side is refused like a not-implemented
//!    directive. Bad values are errors with
//!    `file:line` and the offending value quoted. Repeated directives follow
//!    OpenVPN: the last one wins, except `push`, `remote`, `route`,
//!    `route-ipv6`, `pull-filter` and `dhcp-option`, which accumulate.
//!    IPv6 inside the tunnel: `server-ipv6`, `ifconfig-ipv6`,
//!    `ifconfig-ipv6-pool`, `route-ipv6` and `block-ipv6` on a server (expanded
//!    by [`ServerConfig::ipv6`]), `ifconfig-ipv6`, `route-ipv6` and `block-ipv6`
//!    on a client.
//! 2. **Ignored with a warning** (the allow-list below): directives whose
//!    absence cannot weaken security or silently change how the tunnel
//!    behaves for its users.
//! 3. **Refused with a reason**: OpenVPN directives warren does not
//!    implement. Some may be skipped deliberately with OpenVPN's own
//!    mechanisms, `ignore-unknown-option NAME…` (which, as in OpenVPN, covers
//!    only later lines), `setenv opt NAME …` and `setenv FORWARD_COMPATIBLE 1`;
//!    these then become warnings. Directives whose absence would weaken
//!    security or break the tunnel are *strict* and stay errors regardless:
//!    compression (`comp-lzo`, `compress`, even `comp-lzo no`, which still
//!    changes the framing), `secret`, `tls-crypt-v2-verify`, `crl-verify DIR dir`,
//!    `tls-verify`, `plugin`, `client-crresponse`,
//!    `client-config-dir`, `verify-x509-name` on a server, `remote-cert-eku`/
//!    `-ku`, `ns-cert-type`, `no-replay`, `reneg-bytes`/`-pkts`,
//!    `chroot`, `setcon`, `mlock`, `cd`, `config`, PKCS#11/12
//!    and external keys, `fragment`, tap directives, the per-client
//!    `iroute-ipv6` and `ifconfig-ipv6-push`,
//!    proxies, `redirect-private` and `dns` on a client, and
//!    client-only directives in a server config (and the reverse).
//!    Script hooks warren does not run (`down-pre`, `route-pre-down`,
//!    `ipchange`, `up-delay`…), TLS suite
//!    restrictions (`tls-cipher`, `tls-ciphersuites`, `tls-groups`,
//!    `ecdh-curve`, `tls-cert-profile`: warren's fixed rustls set is used),
//!    `route` on a server, `inactive`, `ping-exit`, `bind`, `mark` and other
//!    not-yet-implemented behaviour are refused but may be skipped with
//!    `ignore-unknown-option`, which stock OpenVPN ignores for directives it
//!    knows, so the file stays shared.
//! 4. **Unknown**: anything neither OpenVPN 2.6 nor warren knows is an error
//!    with a "did you mean `X`?" hint (edit distance against every known
//!    name), unless `ignore-unknown-option`, `setenv opt` or
//!    `setenv FORWARD_COMPATIBLE 1` covers it.
//!
//! `setenv NAME VALUE` (other than `opt`, `FORWARD_COMPATIBLE` and
//! `GENERIC_CONFIG`) goes into [`Scripts::setenv`]: the server passes it to every
//! script, as OpenVPN does.
//!
//! ## Scripts
//!
//! `script-security`, `up`, `down`, `route-up` (both sides), `client-connect`,
//! `client-disconnect`, `learn-address`, `auth-user-pass-verify CMD via-env|via-file`
//! (server) and `warren-script-timeout SECONDS` are lowered into [`Scripts`]; a
//! script with `script-security` below 2 is refused at start with its line
//! (`scripts.rs`). The file a `client-connect` script writes is read like a
//! client-config-dir file, with [`client_options_from_str`] (`ccd.rs`).
//!
//! ## Allow-list: ignored with a warning, server and client
//!
//! `mute`, `log`, `log-append`, `syslog`, `daemon` (warren
//! stays in the foreground; use a service manager), `writepid`, `fast-io`,
//! `tun-mtu-extra`, `tun-ipv6`, `suppress-timestamps`,
//! `machine-readable-output`, `errors-to-stderr`, `disable-dco`, `nice`,
//! `txqueuelen`, `hash-size`, `bcast-buffers`, `tcp-queue-limit`, `tmp-dir`,
//! `opt-verify`, `echo`, `remap-usr1`, `providers`, `auth-nocache`,
//! `ping-timer-rem`, `persist-local-ip`, `persist-remote-ip`, and the
//! Windows-only `block-outside-dns`, `register-dns`, `ip-win32`,
//! `route-method`, `tap-sleep`, `dhcp-renew`, `dhcp-release`,
//! `dhcp-pre-release`, `dhcp-internal`, `rdns-internal`, `windows-driver`,
//! `allow-nonadmin`, `win-sys`, `service`, `show-net-up`.
//!
//! ## Allow-list: server only
//!
//! `ifconfig-pool-persist` (leases are not persisted yet: a client may get a
//! different address after a restart), `mute-replay-warnings`, `float`,
//! `dhcp-option` outside `push` (only exported to scripts),
//! `max-routes-per-client`, `stale-routes-check`.
//!
//! ## Allow-list: client only
//!
//! `float`, `auth-retry`, `push-peer-info`, `remote-random-hostname`,
//! `preresolve`, `ip-remote-hint`, `route-delay`, `topology` (pushed by the
//! server), `status`, `status-version`, `allow-pull-fqdn`.
//!
//! ## Other warnings
//!
//! A server config without `topology` (warren uses `subnet`, OpenVPN 2.6
//! `net30`); a `dh FILE` (unused: ECDHE only); `warren-key-derivation prf`;
//! a client config that checks neither `remote-cert-tls server` nor
//! `verify-x509-name` (any client certificate from the same CA could
//! impersonate the server); `explicit-exit-notify` over TCP; parameters
//! warren accepts but does not act on (`reneg-sec`'s second, `tun-mtu`'s
//! second, `mssfix … mtu|fixed`); optional `?CIPHER`s that are skipped.
//!
//! ## Paths
//!
//! `ca`, `cert`, `key`, `dh`, `tls-crypt`, `tls-auth`, `tls-crypt-v2` and (client)
//! `auth-user-pass` take a file or an inline block ([`Material`]). Relative
//! paths resolve against the current directory first, as OpenVPN does, then
//! against the config file's directory.
//!
//! # Defaults and the zero-config server
//!
//! The lowered configs keep what the file says (`None` for an absent
//! directive); [`ServerConfig::session`] and [`ClientConfig::session`] apply
//! OpenVPN 2.6's [`defaults`] and expand `keepalive` and `mssfix` in one place
//! for both roles. [`ZeroConfig`] is `warren server` without `--config`: its
//! options become the directives of an equivalent `server.conf`, lowered like
//! one.
//!
//! # Example
//!
//! ```
//! use std::path::Path;
//! use warren_config::{ConfigError, server_config_from_str};
//!
//! let text = "ca ca.crt\ncert server.crt\nkey server.key\n\
//!             server 10.8.0.0 255.255.255.0\ntopology subnet\nkeepalive 10 120\n";
//! let (cfg, warnings) = server_config_from_str(text, "server.conf", Path::new("/etc/openvpn"))?;
//! assert_eq!(cfg.port, 1194);
//! assert_eq!(cfg.keepalive, Some((10, 120)));
//! assert!(warnings.is_empty());
//!
//! let Err(err) = server_config_from_str("keepalvie 10 60\n", "server.conf", Path::new(".")) else {
//!     panic!("a typo must be refused");
//! };
//! assert_eq!(
//!     err.to_string(),
//!     "server.conf:1: unknown directive `keepalvie`; did you mean `keepalive`?"
//! );
//! # Ok::<(), ConfigError>(())
//! ```
#![forbid(unsafe_code)]

mod ccd;
mod client;
mod connection;
mod directives;
mod error;
mod lex;
mod lower;
mod management;
mod material;
mod proxy;
mod scripts;
mod server;
mod settings;
mod tlsnames;
mod types;
mod zero;

use std::path::Path;
use std::sync::Arc;

pub use ccd::{ClientOptions, ccd_file_name, client_options_from_str, load_client_options};
pub use client::{ClientConfig, client_config_from_str, load_client_config};
pub use connection::{
    DEFAULT_CONNECT_RETRY, DEFAULT_CONNECT_RETRY_MAX, DEFAULT_SERVER_POLL_TIMEOUT, EntryOptions,
};
pub use error::{ConfigError, Location, SyntaxError, Warning};
pub use lex::{Directive, Span, Spanned, parse_str};
pub use lower::SUPPORTED_DATA_CIPHERS;
pub use management::{DEFAULT_LOG_CACHE, ManagementConfig, ManagementListen};
pub use material::{Material, resolve_path};
pub use proxy::{
    DEFAULT_SOCKS_PORT, HttpProxy, HttpVersion, MAX_CUSTOM_HEADERS, Proxy, ProxyCredentials,
    SocksProxy,
};
pub use scripts::{
    AuthVia, DEFAULT_SCRIPT_SECURITY, DEFAULT_SCRIPT_TIMEOUT, ScriptCommand, Scripts, split_command,
};
pub use server::{
    AccessDirective, ServerConfig, ServerRoute, load_server_config, server_config_from_str,
};
pub use settings::{ServerIpv6, Session, defaults};
pub use types::{
    CertRole, ClientProto, DevType, Ipv6Prefix, KeyDerivationPolicy, NatConfig, Proto,
    PullFilterAction, Remote, ResolvRetry, Route, RouteIpv6, StateDir, TlsCipherSuite, TlsCryptV2,
    TlsGroup, TlsVersion, Topology, UserAuth, VerifyClientCert, X509NameType,
};
pub use zero::{ZERO_CONFIG_ORIGIN, ZeroConfig};

/// Reads a config file as UTF-8, naming the first bad line otherwise.
pub(crate) fn read_config_text(path: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::ReadConfig {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        let line = bytes[..valid].iter().filter(|&&b| b == b'\n').count() + 1;
        ConfigError::NotUtf8 {
            location: Location {
                file: Arc::from(path.display().to_string()),
                line: Some(u32::try_from(line).unwrap_or(u32::MAX)),
            },
        }
    })
}
