//! What warren does with each directive name it does not lower: the
//! allow-lists of harmless directives, the refused ones with their reasons,
//! and the "did you mean" search.

/// Which kind of config is being lowered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Server,
    Client,
}

/// What happens to a directive that the lowering code did not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// Harmless: ignored with this warning.
    Ignore(&'static str),
    /// An error with this reason. `strict` ones stay errors even under
    /// `ignore-unknown-option`, `setenv opt` or `setenv FORWARD_COMPATIBLE 1`,
    /// because skipping them would weaken security or break the tunnel.
    Refuse { reason: &'static str, strict: bool },
}

const LOG: &str = "warren logs to stderr; use the service manager (journald) to keep logs";
const FOREGROUND: &str = "warren runs in the foreground; run it under a service manager";
const NO_SCRIPTS: &str = "warren never runs external scripts";
const NO_EFFECT: &str = "has no effect in warren";
const WINDOWS: &str = "Windows-only; no effect on Linux";
const LOG_FORMAT: &str = "log formatting is controlled by warren's logger";

/// Ignored with a warning in both server and client configs.
pub(crate) const IGNORED_BOTH: &[(&str, &str)] = &[
    ("mute", "repeated messages are not rate-limited"),
    ("script-security", NO_SCRIPTS),
    ("log", LOG),
    ("log-append", LOG),
    ("syslog", LOG),
    ("daemon", FOREGROUND),
    ("writepid", "no pid file is written; use a service manager"),
    ("fast-io", NO_EFFECT),
    ("tun-mtu-extra", "only used with tap devices"),
    ("tun-ipv6", "obsolete; OpenVPN 2.6 ignores it too"),
    ("suppress-timestamps", LOG_FORMAT),
    ("machine-readable-output", LOG_FORMAT),
    ("errors-to-stderr", LOG_FORMAT),
    ("disable-dco", "warren has no data-channel offload"),
    ("nice", "process priority is left to the service manager"),
    (
        "txqueuelen",
        "the tun queue length is left at the system default",
    ),
    ("hash-size", NO_EFFECT),
    ("bcast-buffers", NO_EFFECT),
    (
        "tcp-queue-limit",
        "warren bounds each TCP connection's queue in bytes (256 KiB of data)",
    ),
    ("tmp-dir", NO_EFFECT),
    ("opt-verify", "obsolete option-consistency check"),
    ("echo", "only meaningful to OpenVPN's management interface"),
    (
        "remap-usr1",
        "warren always treats SIGUSR1 as a soft restart",
    ),
    ("providers", "warren uses rustls, not OpenSSL providers"),
    ("auth-nocache", "warren does not cache credentials"),
    ("ping-timer-rem", NO_EFFECT),
    ("persist-local-ip", NO_EFFECT),
    ("persist-remote-ip", NO_EFFECT),
    ("block-outside-dns", WINDOWS),
    ("register-dns", WINDOWS),
    ("ip-win32", WINDOWS),
    ("route-method", WINDOWS),
    ("tap-sleep", WINDOWS),
    ("dhcp-renew", WINDOWS),
    ("dhcp-release", WINDOWS),
    ("dhcp-pre-release", WINDOWS),
    ("dhcp-internal", WINDOWS),
    ("rdns-internal", WINDOWS),
    ("windows-driver", WINDOWS),
    ("allow-nonadmin", WINDOWS),
    ("win-sys", WINDOWS),
    ("service", WINDOWS),
    ("show-net-up", WINDOWS),
];

/// Ignored with a warning in server configs only.
pub(crate) const IGNORED_SERVER: &[(&str, &str)] = &[
    (
        "ifconfig-pool-persist",
        "address leases are not persisted yet; a client may get a different address after a restart",
    ),
    (
        "mute-replay-warnings",
        "replayed packets are counted, never logged above trace",
    ),
    (
        "float",
        "server mode always follows a client's authenticated address change (peer-id)",
    ),
    (
        "dhcp-option",
        "outside `push` this is only exported to scripts, which warren does not run; use push \"dhcp-option ...\"",
    ),
    (
        "max-routes-per-client",
        "warren does not learn client routes",
    ),
    ("stale-routes-check", "warren does not learn client routes"),
    (
        "resolv-retry",
        "only affects resolving `remote`, which a server does not have",
    ),
    ("push-peer-info", "only a client sends peer info"),
    (
        "management-query-passwords",
        "on a server it only asks for the private key's passphrase, and warren reads no encrypted keys",
    ),
    ("management-query-proxy", MGMT_CLIENT_SIDE),
    ("management-query-remote", MGMT_CLIENT_SIDE),
    ("management-signal", MGMT_CLIENT_SIDE),
    ("management-up-down", MGMT_CLIENT_SIDE),
    ("management-forget-disconnect", MGMT_CLIENT_SIDE),
];

const MGMT_CLIENT_SIDE: &str = "a client-side management option; no effect on a server";

/// Ignored with a warning in client configs only.
pub(crate) const IGNORED_CLIENT: &[(&str, &str)] = &[
    (
        "tcp-nodelay",
        "warren always sets TCP_NODELAY on its TCP sockets",
    ),
    (
        "float",
        "warren follows authenticated server address changes",
    ),
    ("auth-retry", "warren stops on AUTH_FAILED"),
    ("push-peer-info", "warren sends its standard peer info"),
    ("remote-random-hostname", NO_EFFECT),
    ("preresolve", NO_EFFECT),
    ("ip-remote-hint", NO_EFFECT),
    (
        "route-delay",
        "routes are added as soon as the tunnel is up",
    ),
    ("topology", "the topology is taken from the server's push"),
    ("status", "the client writes no status file"),
    ("status-version", "the client writes no status file"),
    ("allow-pull-fqdn", NO_EFFECT),
    (
        "dh",
        "only a server uses DH parameters (OpenVPN ignores `dh` in a client config too)",
    ),
];

const PUSHED_ONLY: &str = "this is pushed by the server, never set in a config file";
const CLIENT_ONLY: &str = "this is a client directive; it has no place in a server config";
const CCD_ONLY: &str = "these belong in a client-config-dir file (`client-config-dir DIR`, one file per client), not in the server config";
const SERVER_ONLY: &str = "this is a server directive; it has no place in a client config";
const SCRIPT: &str = "warren does not run this script hook (it runs up, down, route-up, client-connect, \
    client-disconnect, learn-address and auth-user-pass-verify); remove it, or add \
    `ignore-unknown-option <name>` before it to skip it on purpose (OpenVPN itself is not affected by that line)";
const NOT_YET: &str = "not implemented yet; remove it, or add `ignore-unknown-option <name>` before it to \
    skip it on purpose (OpenVPN itself is not affected by that line)";
const COMPRESSION: &str = "compression is refused: compressing before encryption leaks plaintext lengths \
    (VORACLE), and even `comp-lzo no`/`compress` without an algorithm change the packet framing both \
    peers must agree on; remove the directive from server and clients";
const TLS_TUNING: &str = "certificate profiles are OpenSSL security levels, which rustls does not have \
    (it accepts RSA from 2048 bits, ECDSA P-256/P-384 and Ed25519 only); remove it, or add \
    `ignore-unknown-option <name>` before it to accept warren's set (tls-version-min, tls-groups, \
    tls-cipher and tls-ciphersuites work)";
const EXTERNAL_KEY: &str =
    "keys must be PEM files or inline blocks given with `ca`, `cert` and `key`";
const ACTION: &str = "this is a command-line action, not a config directive";
const CERT_CHECK: &str = "use `remote-cert-tls client|server` for the extended key usage check";
const NO_USER_AUTH: &str = "username/password authentication is not implemented yet; warren authenticates \
    clients by certificate only";

/// Refused with a reason. (name, reason, strict)
const REFUSED_BOTH: &[(&str, &str, bool)] = &[
    ("comp-lzo", COMPRESSION, true),
    ("compress", COMPRESSION, true),
    ("comp-noadapt", COMPRESSION, true),
    (
        "secret",
        "static-key mode has no forward secrecy and is not supported; use TLS with ca/cert/key",
        true,
    ),
    (
        "tls-crypt-v2-verify",
        "not supported yet: warren runs no script before the TLS handshake; refuse old client keys \
         with `tls-crypt-v2-max-age DAYS`, or revoke the client's certificate",
        true,
    ),
    ("tls-verify", SCRIPT, true),
    (
        "plugin",
        "plugins are not supported; they usually authenticate users",
        true,
    ),
    (
        "verify-hash",
        "CA fingerprint pinning is not supported yet",
        true,
    ),
    (
        "peer-fingerprint",
        "fingerprint-based authentication is not supported yet",
        true,
    ),
    ("remote-cert-eku", CERT_CHECK, true),
    ("remote-cert-ku", CERT_CHECK, true),
    (
        "x509-username-field",
        "only the certificate's CN is used as the client name",
        true,
    ),
    ("tls-cert-profile", TLS_TUNING, false),
    (
        "force-tls-key-material-export",
        "use `warren-key-derivation auto`; forcing TLS-EKM only is not supported yet",
        true,
    ),
    ("no-replay", "replay protection cannot be disabled", true),
    (
        "reneg-bytes",
        "byte-count renegotiation is not implemented yet; use reneg-sec",
        true,
    ),
    (
        "reneg-pkts",
        "packet-count renegotiation is not implemented yet; use reneg-sec",
        true,
    ),
    (
        "chroot",
        "chroot is not supported yet; ignoring it would run with less confinement",
        true,
    ),
    (
        "setcon",
        "SELinux context switching is not supported yet",
        true,
    ),
    (
        "mlock",
        "locking memory is not supported yet; ignoring it could swap keys to disk",
        true,
    ),
    (
        "cd",
        "`cd` is not supported; run warren from the config's directory or use absolute paths",
        true,
    ),
    (
        "config",
        "including other config files is not supported yet",
        true,
    ),
    ("pkcs12", EXTERNAL_KEY, true),
    ("pkcs11-id", EXTERNAL_KEY, true),
    ("pkcs11-providers", EXTERNAL_KEY, true),
    ("pkcs11-id-management", EXTERNAL_KEY, true),
    ("pkcs11-pin-cache", EXTERNAL_KEY, true),
    ("pkcs11-private-mode", EXTERNAL_KEY, true),
    ("pkcs11-protected-authentication", EXTERNAL_KEY, true),
    ("pkcs11-cert-private", EXTERNAL_KEY, true),
    ("cryptoapicert", EXTERNAL_KEY, true),
    ("management-external-key", EXTERNAL_KEY, true),
    ("management-external-cert", EXTERNAL_KEY, true),
    ("engine", EXTERNAL_KEY, true),
    (
        "askpass",
        "encrypted private keys are not supported yet; decrypt the key file",
        true,
    ),
    (
        "extra-certs",
        "extra chain certificates are not supported yet; put intermediates in the ca file",
        true,
    ),
    (
        "capath",
        "a CA directory is not supported; concatenate the CAs into the `ca` file",
        true,
    ),
    (
        "fragment",
        "internal fragmentation changes the packet framing and is not supported; use mssfix",
        true,
    ),
    ("dev-node", "tun device nodes are chosen by warren", true),
    ("lladdr", "tap devices are not supported yet", true),
    ("vlan-tagging", "tap devices are not supported yet", true),
    ("vlan-accept", "tap devices are not supported yet", true),
    ("vlan-pvid", "tap devices are not supported yet", true),
    ("key-derivation", PUSHED_ONLY, true),
    ("peer-id", PUSHED_ONLY, true),
    ("auth-token", PUSHED_ONLY, true),
    ("auth-token-user", PUSHED_ONLY, true),
    ("push-continuation", PUSHED_ONLY, true),
    ("route-gateway", PUSHED_ONLY, true),
    (
        "ifconfig",
        "static tunnel addresses are not supported; the server assigns them",
        true,
    ),
    (
        "ifconfig-noexec",
        "warren always configures the tun device it creates",
        true,
    ),
    (
        "route-noexec",
        "warren always installs the routes it is given",
        true,
    ),
    ("up", SCRIPT, false),
    ("down", SCRIPT, false),
    ("down-pre", SCRIPT, false),
    ("route-up", SCRIPT, false),
    ("route-pre-down", SCRIPT, false),
    ("ipchange", SCRIPT, false),
    ("up-delay", SCRIPT, false),
    ("up-restart", SCRIPT, false),
    ("setenv-safe", SCRIPT, false),
    ("x509-track", SCRIPT, false),
    ("tls-export-cert", SCRIPT, false),
    (
        "management",
        "the management interface of `warren client` is not implemented yet (`warren server` has one)",
        false,
    ),
    (
        "management-client",
        "the management interface of `warren client` is not implemented yet (`warren server` has one)",
        false,
    ),
    (
        "management-client-user",
        "the management interface of `warren client` is not implemented yet (`warren server` has one)",
        false,
    ),
    (
        "management-client-group",
        "the management interface of `warren client` is not implemented yet (`warren server` has one)",
        false,
    ),
    (
        "management-hold",
        "the management interface of `warren client` is not implemented yet (`warren server` has one)",
        false,
    ),
    (
        "management-log-cache",
        "the management interface of `warren client` is not implemented yet (`warren server` has one)",
        false,
    ),
    (
        "management-query-passwords",
        "the management interface of `warren client` is not implemented yet (`warren server` has one)",
        false,
    ),
    (
        "management-query-proxy",
        "the management interface of `warren client` is not implemented yet (`warren server` has one)",
        false,
    ),
    (
        "management-query-remote",
        "the management interface of `warren client` is not implemented yet (`warren server` has one)",
        false,
    ),
    (
        "management-signal",
        "the management interface of `warren client` is not implemented yet (`warren server` has one)",
        false,
    ),
    (
        "management-up-down",
        "the management interface of `warren client` is not implemented yet (`warren server` has one)",
        false,
    ),
    (
        "management-forget-disconnect",
        "the management interface of `warren client` is not implemented yet (`warren server` has one)",
        false,
    ),
    ("link-mtu", "link-mtu is deprecated; use tun-mtu", false),
    ("mtu-disc", NOT_YET, false),
    ("mtu-test", NOT_YET, false),
    ("max-packet-size", NOT_YET, false),
    ("tun-mtu-max", NOT_YET, false),
    (
        "ping-exit",
        "only ping-restart is implemented; use keepalive or ping-restart",
        false,
    ),
    ("inactive", NOT_YET, false),
    ("session-timeout", NOT_YET, false),
    ("tran-window", NOT_YET, false),
    ("replay-persist", NOT_YET, false),
    ("keying-material-exporter", NOT_YET, false),
    ("bind", NOT_YET, false),
    ("mark", NOT_YET, false),
    ("bind-dev", NOT_YET, false),
    ("socket-flags", NOT_YET, false),
    ("shaper", NOT_YET, false),
    ("multihome", NOT_YET, false),
    ("proto-force", NOT_YET, false),
    ("iproute", NOT_YET, false),
    ("compat-mode", NOT_YET, false),
    ("tls-exit", NOT_YET, false),
    ("gremlin", "a testing-only option", false),
    ("memstats", NOT_YET, false),
    ("pause-exit", WINDOWS, false),
    ("genkey", ACTION, false),
    ("help", ACTION, false),
    ("version", ACTION, false),
    ("test-crypto", ACTION, false),
    ("mktun", ACTION, false),
    ("rmtun", ACTION, false),
    ("show-ciphers", ACTION, false),
    ("show-digests", ACTION, false),
    ("show-tls", ACTION, false),
    ("show-engines", ACTION, false),
    ("show-curves", ACTION, false),
    ("show-groups", ACTION, false),
    ("show-gateway", ACTION, false),
    ("show-adapters", ACTION, false),
    ("show-net", ACTION, false),
    ("show-valid-subnets", ACTION, false),
    ("show-pkcs11-ids", ACTION, false),
];

/// Refused in server configs.
const REFUSED_SERVER: &[(&str, &str, bool)] = &[
    (
        "auth-user-pass-verify",
        "skipping the username/password script would let any holder of a client certificate in",
        true,
    ),
    ("auth-user-pass-optional", NO_USER_AUTH, true),
    ("username-as-common-name", NO_USER_AUTH, true),
    ("auth-gen-token", NO_USER_AUTH, true),
    ("auth-gen-token-secret", NO_USER_AUTH, true),
    (
        "management-client",
        "warren's management interface listens (`management IP PORT` or `management PATH unix`); \
         connecting out to a management client is not supported",
        true,
    ),
    (
        "client-cert-not-required",
        "removed in OpenVPN 2.5 (`verify-client-cert none`), and certificate-less clients are not supported",
        true,
    ),
    ("client-connect", SCRIPT, true),
    ("client-disconnect", SCRIPT, false),
    ("client-crresponse", SCRIPT, true),
    ("learn-address", SCRIPT, false),
    ("server-bridge", "tap bridging is not supported yet", true),
    (
        "ifconfig-pool",
        "custom pools are not supported yet; the pool comes from `server`",
        true,
    ),
    ("ifconfig-push", CCD_ONLY, true),
    ("ifconfig-ipv6-push", CCD_ONLY, true),
    (
        "ifconfig-push-constraint",
        "static client addresses (ccd) are not supported yet",
        true,
    ),
    ("iroute", CCD_ONLY, true),
    ("iroute-ipv6", CCD_ONLY, true),
    ("push-reset", CCD_ONLY, true),
    (
        "push-remove",
        "per-client push changes (ccd) are not supported yet",
        true,
    ),
    ("client-nat", NOT_YET, false),
    (
        "connect-freq",
        "a connection rate limit is not implemented yet (the stateless HMAC cookie still protects \
         against spoofed floods)",
        false,
    ),
    (
        "connect-freq-initial",
        "a connection rate limit is not implemented yet",
        false,
    ),
    ("auth-user-pass", CLIENT_ONLY, true),
    ("remote", CLIENT_ONLY, true),
    ("connection", CLIENT_ONLY, true),
    ("rport", CLIENT_ONLY, true),
    ("nobind", CLIENT_ONLY, true),
    ("client", CLIENT_ONLY, true),
    ("pull", CLIENT_ONLY, true),
    ("tls-client", CLIENT_ONLY, true),
    ("pull-filter", CLIENT_ONLY, true),
    ("route-nopull", CLIENT_ONLY, true),
    (
        "redirect-gateway",
        "use push \"redirect-gateway def1\" to redirect clients",
        true,
    ),
    ("redirect-private", CLIENT_ONLY, true),
    ("remote-random", CLIENT_ONLY, true),
    ("static-challenge", CLIENT_ONLY, true),
    ("http-proxy", CLIENT_ONLY, true),
    ("socks-proxy", CLIENT_ONLY, true),
];

/// Refused in client configs.
const REFUSED_CLIENT: &[(&str, &str, bool)] = &[
    (
        "http-proxy-override",
        "not supported; write the proxy as `http-proxy HOST PORT` in the profile (or in each \
         <connection> block)",
        true,
    ),
    (
        "redirect-private",
        "not implemented yet; ignoring it would send that traffic outside the tunnel",
        true,
    ),
    (
        "dns",
        "the `dns` directive is not supported yet; ignoring it could send DNS queries outside the tunnel",
        true,
    ),
    (
        "static-challenge",
        "challenge/response prompts are not supported yet",
        false,
    ),
    ("allow-recursive-routing", NOT_YET, false),
    ("route-metric", NOT_YET, false),
    ("mode", SERVER_ONLY, true),
    ("server", SERVER_ONLY, true),
    ("tls-server", SERVER_ONLY, true),
    ("push", SERVER_ONLY, true),
    ("client-to-client", SERVER_ONLY, true),
    ("duplicate-cn", SERVER_ONLY, true),
    ("max-clients", SERVER_ONLY, true),
    ("verify-client-cert", SERVER_ONLY, true),
    ("ifconfig-pool-persist", SERVER_ONLY, true),
    ("client-config-dir", SERVER_ONLY, true),
    ("auth-user-pass-verify", SERVER_ONLY, true),
    ("server-bridge", SERVER_ONLY, true),
    ("server-ipv6", SERVER_ONLY, true),
    ("ifconfig-pool", SERVER_ONLY, true),
    ("client-connect", SERVER_ONLY, true),
    ("client-disconnect", SERVER_ONLY, true),
    ("learn-address", SERVER_ONLY, true),
    ("username-as-common-name", SERVER_ONLY, true),
    ("port-share", SERVER_ONLY, true),
    ("tls-crypt-v2-verify", SERVER_ONLY, true),
    ("tls-crypt-v2-max-age", SERVER_ONLY, true),
];

/// Every directive name OpenVPN 2.6.14 accepts (options.c `add_option`), so
/// that an OpenVPN directive warren lacks is reported as unsupported rather
/// than unknown, and typos find their intended name.
pub(crate) const OPENVPN_DIRECTIVES: &[&str] = &[
    "allow-compression",
    "allow-nonadmin",
    "allow-pull-fqdn",
    "allow-recursive-routing",
    "askpass",
    "auth",
    "auth-gen-token",
    "auth-gen-token-secret",
    "auth-nocache",
    "auth-retry",
    "auth-token",
    "auth-token-user",
    "auth-user-pass",
    "auth-user-pass-optional",
    "auth-user-pass-verify",
    "bcast-buffers",
    "bind",
    "bind-dev",
    "block-ipv6",
    "block-outside-dns",
    "ca",
    "capath",
    "ccd-exclusive",
    "cd",
    "cert",
    "chroot",
    "cipher",
    "client",
    "client-cert-not-required",
    "client-config-dir",
    "client-connect",
    "client-crresponse",
    "client-disconnect",
    "client-nat",
    "client-to-client",
    "comp-lzo",
    "comp-noadapt",
    "compat-mode",
    "compress",
    "config",
    "connect-freq",
    "connect-freq-initial",
    "connect-retry",
    "connect-retry-max",
    "connect-timeout",
    "connection",
    "crl-verify",
    "cryptoapicert",
    "daemon",
    "data-ciphers",
    "data-ciphers-fallback",
    "dev",
    "dev-node",
    "dev-type",
    "dh",
    "dhcp-internal",
    "dhcp-option",
    "dhcp-pre-release",
    "dhcp-release",
    "dhcp-renew",
    "disable",
    "disable-dco",
    "disable-occ",
    "dns",
    "down",
    "down-pre",
    "duplicate-cn",
    "ecdh-curve",
    "echo",
    "engine",
    "errors-to-stderr",
    "explicit-exit-notify",
    "extra-certs",
    "fast-io",
    "float",
    "force-tls-key-material-export",
    "fragment",
    "genkey",
    "gremlin",
    "group",
    "hand-window",
    "hash-size",
    "help",
    "http-proxy",
    "http-proxy-option",
    "http-proxy-override",
    "http-proxy-retry",
    "http-proxy-timeout",
    "http-proxy-user-pass",
    "ifconfig",
    "ifconfig-ipv6",
    "ifconfig-ipv6-pool",
    "ifconfig-ipv6-push",
    "ifconfig-noexec",
    "ifconfig-nowarn",
    "ifconfig-pool",
    "ifconfig-pool-persist",
    "ifconfig-push",
    "ifconfig-push-constraint",
    "ignore-unknown-option",
    "inactive",
    "ip-remote-hint",
    "ip-win32",
    "ipchange",
    "iproute",
    "iroute",
    "iroute-ipv6",
    "keepalive",
    "key",
    "key-derivation",
    "key-direction",
    "keying-material-exporter",
    "learn-address",
    "link-mtu",
    "lladdr",
    "local",
    "log",
    "log-append",
    "lport",
    "machine-readable-output",
    "management",
    "management-client",
    "management-client-auth",
    "management-client-group",
    "management-client-user",
    "management-external-cert",
    "management-external-key",
    "management-forget-disconnect",
    "management-hold",
    "management-log-cache",
    "management-query-passwords",
    "management-query-proxy",
    "management-query-remote",
    "management-signal",
    "management-up-down",
    "mark",
    "max-clients",
    "max-packet-size",
    "max-routes",
    "max-routes-per-client",
    "memstats",
    "mktun",
    "mlock",
    "mode",
    "msg-channel",
    "mssfix",
    "mtu-disc",
    "mtu-dynamic",
    "mtu-test",
    "multihome",
    "mute",
    "mute-replay-warnings",
    "ncp-ciphers",
    "nice",
    "no-name-remapping",
    "no-replay",
    "nobind",
    "ns-cert-type",
    "opt-verify",
    "parameter",
    "passtos",
    "pause-exit",
    "peer-fingerprint",
    "peer-id",
    "persist-key",
    "persist-local-ip",
    "persist-remote-ip",
    "persist-tun",
    "ping",
    "ping-exit",
    "ping-restart",
    "ping-timer-rem",
    "pkcs11-cert-private",
    "pkcs11-id",
    "pkcs11-id-management",
    "pkcs11-pin-cache",
    "pkcs11-private-mode",
    "pkcs11-protected-authentication",
    "pkcs11-providers",
    "pkcs12",
    "plugin",
    "port",
    "port-share",
    "preresolve",
    "prng",
    "proto",
    "proto-force",
    "protocol-flags",
    "providers",
    "pull",
    "pull-filter",
    "push",
    "push-continuation",
    "push-peer-info",
    "push-remove",
    "push-reset",
    "rcvbuf",
    "rdns-internal",
    "redirect-gateway",
    "redirect-private",
    "register-dns",
    "remap-usr1",
    "remote",
    "remote-cert-eku",
    "remote-cert-ku",
    "remote-cert-tls",
    "remote-random",
    "remote-random-hostname",
    "reneg-bytes",
    "reneg-pkts",
    "reneg-sec",
    "replay-persist",
    "replay-window",
    "resolv-retry",
    "rmtun",
    "route",
    "route-delay",
    "route-gateway",
    "route-ipv6",
    "route-ipv6-gateway",
    "route-method",
    "route-metric",
    "route-noexec",
    "route-nopull",
    "route-pre-down",
    "route-up",
    "rport",
    "script-security",
    "secret",
    "server",
    "server-bridge",
    "server-ipv6",
    "server-poll-timeout",
    "service",
    "session-timeout",
    "setcon",
    "setenv",
    "setenv-safe",
    "shaper",
    "show-adapters",
    "show-ciphers",
    "show-curves",
    "show-digests",
    "show-engines",
    "show-gateway",
    "show-groups",
    "show-net",
    "show-net-up",
    "show-pkcs11-ids",
    "show-tls",
    "show-valid-subnets",
    "single-session",
    "sndbuf",
    "socket-flags",
    "socks-proxy",
    "socks-proxy-retry",
    "stale-routes-check",
    "static-challenge",
    "status",
    "status-version",
    "suppress-timestamps",
    "syslog",
    "tap-sleep",
    "tcp-nodelay",
    "tcp-queue-limit",
    "test-crypto",
    "tls-auth",
    "tls-cert-profile",
    "tls-cipher",
    "tls-ciphersuites",
    "tls-client",
    "tls-crypt",
    "tls-crypt-v2",
    // OpenVPN 2.7; listed so that a client config naming it learns it is a server's.
    "tls-crypt-v2-max-age",
    "tls-crypt-v2-verify",
    "tls-exit",
    "tls-export-cert",
    "tls-groups",
    "tls-server",
    "tls-timeout",
    "tls-verify",
    "tls-version-max",
    "tls-version-min",
    "tmp-dir",
    "topology",
    "tran-window",
    "tun-ipv6",
    "tun-mtu",
    "tun-mtu-extra",
    "tun-mtu-max",
    "txqueuelen",
    "udp-mtu",
    "up",
    "up-delay",
    "up-restart",
    "use-prediction-resistance",
    "user",
    "username-as-common-name",
    "verb",
    "verify-client-cert",
    "verify-hash",
    "verify-x509-name",
    "version",
    "vlan-accept",
    "vlan-pvid",
    "vlan-tagging",
    "win-sys",
    "windows-driver",
    "writepid",
    "x509-track",
    "x509-username-field",
];

/// The disposition of a directive that the lowering for `side` did not take.
/// `None` means "not known to warren at all" (an OpenVPN directive without a
/// listed disposition, or an unknown name).
pub(crate) fn disposition(name: &str, side: Side) -> Option<Disposition> {
    let (ignored, refused) = match side {
        Side::Server => (IGNORED_SERVER, REFUSED_SERVER),
        Side::Client => (IGNORED_CLIENT, REFUSED_CLIENT),
    };
    // Side-specific entries win over the shared ones.
    if let Some((_, r)) = ignored.iter().find(|(n, _)| *n == name) {
        return Some(Disposition::Ignore(r));
    }
    if let Some((_, reason, strict)) = refused.iter().find(|(n, _, _)| *n == name) {
        return Some(Disposition::Refuse {
            reason,
            strict: *strict,
        });
    }
    if let Some((_, r)) = IGNORED_BOTH.iter().find(|(n, _)| *n == name) {
        return Some(Disposition::Ignore(r));
    }
    if let Some((_, reason, strict)) = REFUSED_BOTH.iter().find(|(n, _, _)| *n == name) {
        return Some(Disposition::Refuse {
            reason,
            strict: *strict,
        });
    }
    // A warren directive the lowering for `side` did not take belongs to the other side.
    match WARREN_DIRECTIVES.iter().find(|(n, _)| *n == name) {
        Some((_, Some(Side::Server))) => Some(Disposition::Refuse {
            reason: SERVER_ONLY,
            strict: false,
        }),
        Some((_, Some(Side::Client))) => Some(Disposition::Refuse {
            reason: CLIENT_ONLY,
            strict: false,
        }),
        _ => None,
    }
}

/// Whether OpenVPN 2.6 knows `name`.
pub(crate) fn is_openvpn_directive(name: &str) -> bool {
    OPENVPN_DIRECTIVES.contains(&name)
}

/// The known name closest to `name`, if it is close enough to be a typo.
///
/// `preferred` (the names the current side supports) win ties.
pub(crate) fn did_you_mean(name: &str, preferred: &[&'static str]) -> Option<&'static str> {
    let lowered = name.to_ascii_lowercase();
    let lowered = lowered.trim_start_matches('-');
    // Allow about one edit per three characters, at least one and at most three.
    let limit = (lowered.chars().count() / 3).clamp(1, 3);
    let mut best: Option<(usize, &'static str)> = None;
    for cand in preferred
        .iter()
        .chain(OPENVPN_DIRECTIVES.iter())
        .chain(WARREN_DIRECTIVES.iter().map(|(n, _)| n))
    {
        let d = edit_distance(lowered, cand);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, cand));
        }
    }
    best.map(|(_, c)| c)
}

/// Directives that only warren knows, and the side that takes each (`None`:
/// both). Stock OpenVPN accepts a file with them only after
/// `ignore-unknown-option NAME...`. On the other side they are refused, unless
/// skipped on purpose like any not-implemented directive.
pub(crate) const WARREN_DIRECTIVES: &[(&str, Option<Side>)] = &[
    // TLS-EKM or the legacy TLS1-PRF for data-channel keys.
    ("warren-key-derivation", None),
    // Tun offloads and batched UDP (GRO/GSO).
    ("warren-offload", None),
    // Threads moving data.
    ("warren-workers", Some(Side::Server)),
    // More listeners in the same server (`warren-listen tcp PORT`).
    ("warren-listen", Some(Side::Server)),
    // Per-client access rules checked by the data plane.
    ("warren-access", Some(Side::Server)),
    // Users, revocations and leases from warren's state directory.
    ("warren-state-dir", Some(Side::Server)),
    // How those users authenticate.
    ("warren-auth", Some(Side::Server)),
    // Bounds on sessions still in the handshake (apart from max-clients).
    ("warren-max-half-open", Some(Side::Server)),
    ("warren-max-half-open-per-source", Some(Side::Server)),
    // Masquerading VPN clients out of the uplink.
    ("warren-nat", Some(Side::Server)),
    // Nothing leaves the client outside the tunnel while it runs.
    ("warren-kill-switch", Some(Side::Client)),
    // The Prometheus metrics endpoint.
    ("warren-metrics", Some(Side::Server)),
    // How long a user script may run before it is killed.
    ("warren-script-timeout", None),
];

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("keepalvie", &[]), Some("keepalive"));
        assert_eq!(did_you_mean("tls-crpyt", &[]), Some("tls-crypt"));
        assert_eq!(did_you_mean("Proto", &[]), Some("proto"));
        assert_eq!(
            did_you_mean("warren-key-derivaton", &[]),
            Some("warren-key-derivation")
        );
        assert_eq!(did_you_mean("frobnicate", &[]), None);
    }

    #[test]
    fn tables_are_consistent() {
        // Every allow-listed or refused name is a real OpenVPN directive, and
        // no name is both ignored and refused on the same side.
        for (n, _) in IGNORED_BOTH
            .iter()
            .chain(IGNORED_SERVER)
            .chain(IGNORED_CLIENT)
        {
            assert!(is_openvpn_directive(n), "{n}");
        }
        for (n, _, _) in REFUSED_BOTH
            .iter()
            .chain(REFUSED_SERVER)
            .chain(REFUSED_CLIENT)
        {
            assert!(is_openvpn_directive(n), "{n}");
        }
        for (n, _) in IGNORED_SERVER {
            assert!(!REFUSED_SERVER.iter().any(|(r, _, _)| r == n), "{n}");
        }
        for (n, _) in IGNORED_CLIENT {
            assert!(!REFUSED_CLIENT.iter().any(|(r, _, _)| r == n), "{n}");
        }
        // warren's own names are theirs alone.
        for (n, side) in WARREN_DIRECTIVES {
            assert!(n.starts_with("warren-") && !is_openvpn_directive(n), "{n}");
            // Only the other side's lowering leaves them to `disposition`.
            let (other, reason) = match side {
                None => continue,
                Some(Side::Server) => (Side::Client, SERVER_ONLY),
                Some(Side::Client) => (Side::Server, CLIENT_ONLY),
            };
            assert_eq!(
                disposition(n, other),
                Some(Disposition::Refuse {
                    reason,
                    strict: false
                }),
                "{n}"
            );
        }
    }
}
