//! What a lowered config means once OpenVPN 2.6's defaults are applied: the
//! one place that says `reneg-sec` is 3600 unless set, how `keepalive`
//! expands, when `mssfix` clamps. Whoever builds engines from these only
//! changes types.

use std::net::Ipv6Addr;
use std::path::Path;
use std::time::Duration;

use crate::client::ClientConfig;
use crate::directives::Side;
use crate::server::ServerConfig;
use crate::types::{Ipv6Prefix, ResolvRetry, UserAuth, VerifyClientCert};

/// OpenVPN 2.6's defaults (options.c `init_options`, mtu.h) for what a config
/// leaves out, and warren's where OpenVPN has none.
pub mod defaults {
    /// `port`.
    pub const PORT: u16 = 1194;
    /// The port of `warren-metrics ADDR` when ADDR has none (the port registered for
    /// an OpenVPN exporter in Prometheus's default-port allocations).
    pub const METRICS_PORT: u16 = 9586;
    /// `reneg-sec`.
    pub const RENEG_SEC: u32 = 3600;
    /// `hand-window`.
    pub const HAND_WINDOW: u32 = 60;
    /// `tls-timeout`.
    pub const TLS_TIMEOUT: u32 = 2;
    /// `tun-mtu`.
    pub const TUN_MTU: u16 = 1500;
    /// mtu.h `MSSFIX_DEFAULT`: encapsulated packets of at most 1492 bytes.
    pub const MSSFIX: u16 = 1492;
    /// `max-clients` (OpenVPN: 1024).
    pub const MAX_CLIENTS: u32 = 1024;
    /// `warren-max-half-open-per-source`: sessions still in the handshake from
    /// one IPv4 address or IPv6 /64. A client holds one handshake at a time
    /// and a handshake lasts a few round trips, so 16 leaves room for a busy
    /// NAT, even a mass reconnect after a server restart (a refused client
    /// retransmits within seconds and gets in then), while one address can
    /// hold no more than 16 stalled sessions (a few hundred kB).
    pub const HALF_OPEN_PER_SOURCE: u32 = 16;
    /// `warren-max-half-open` is `max(this, max-clients)` unless set: room
    /// for every client to reconnect at once, and a floor for small servers.
    pub const HALF_OPEN_MIN: u32 = 64;
    /// `status FILE` without a period.
    pub const STATUS_SECS: u32 = 60;
    /// `auth`: the tls-auth HMAC digest.
    pub const AUTH_DIGEST: &str = "SHA1";
}

/// A session's timers and sizes, defaults applied: what both roles' engines
/// take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// `reneg-sec`; `None` for `reneg-sec 0`.
    pub reneg: Option<Duration>,
    /// `hand-window`.
    pub hand_window: Duration,
    /// `tls-timeout`.
    pub tls_timeout: Duration,
    /// This side's ping interval (`keepalive`, overridden by `ping`).
    pub ping: Option<Duration>,
    /// This side's restart timeout (`keepalive`, overridden by `ping-restart`).
    pub ping_restart: Option<Duration>,
    /// Server: the `ping` pushed to clients (from `keepalive`).
    pub push_ping: Option<u32>,
    /// Server: the `ping-restart` pushed to clients (from `keepalive`).
    pub push_ping_restart: Option<u32>,
    /// `tun-mtu`.
    pub tun_mtu: u16,
    /// The MSS clamp target; `None` for no clamping.
    pub mssfix: Option<u16>,
    /// `explicit-exit-notify` with a count above 0.
    pub explicit_exit_notify: bool,
}

/// The directives behind [`Session`], which both configs store under the same names.
macro_rules! session {
    ($side:expr, $c:expr) => {
        Session::resolve(
            $side,
            ($c.reneg_sec, $c.hand_window, $c.tls_timeout),
            ($c.keepalive, $c.ping, $c.ping_restart),
            ($c.tun_mtu, $c.mssfix, $c.explicit_exit_notify),
        )
    };
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

impl Session {
    fn resolve(
        side: Side,
        (reneg_sec, hand_window, tls_timeout): (Option<u32>, Option<u32>, Option<u32>),
        (keepalive, ping_arg, restart): (Option<(u32, u32)>, Option<u32>, Option<u32>),
        (tun_mtu, mss, exit_notify): (Option<u16>, Option<u16>, Option<u32>),
    ) -> Session {
        // OpenVPN helper.c helper_keepalive: `keepalive a b` is `ping a` and
        // `ping-restart b`; a server doubles its own restart timeout and pushes
        // `ping a` and `ping-restart b`. The lowering refuses explicit `ping` /
        // `ping-restart` next to `keepalive`; alone they set this side's timers
        // only, 0 turning them off.
        let (mut ping, mut ping_restart, mut push_ping, mut push_ping_restart) =
            (None, None, None, None);
        if let Some((a, b)) = keepalive {
            ping = Some(secs(a));
            ping_restart = Some(match side {
                Side::Server => secs(b).saturating_mul(2),
                Side::Client => secs(b),
            });
            if side == Side::Server {
                (push_ping, push_ping_restart) = (Some(a), Some(b));
            }
        }
        if let Some(p) = ping_arg {
            ping = (p > 0).then(|| secs(p));
        }
        if let Some(p) = restart {
            ping_restart = (p > 0).then(|| secs(p));
        }
        let tun_mtu = tun_mtu.unwrap_or(defaults::TUN_MTU);
        Session {
            reneg: match reneg_sec.unwrap_or(defaults::RENEG_SEC) {
                0 => None,
                s => Some(secs(s)),
            },
            hand_window: secs(hand_window.unwrap_or(defaults::HAND_WINDOW)),
            tls_timeout: secs(tls_timeout.unwrap_or(defaults::TLS_TIMEOUT)),
            ping,
            ping_restart,
            push_ping,
            push_ping_restart,
            tun_mtu,
            mssfix: mssfix(mss, tun_mtu),
            explicit_exit_notify: exit_notify.is_some_and(|n| n > 0),
        }
    }
}

/// OpenVPN options.c (options_postprocess_mutate_ce): absent or bare `mssfix`
/// clamps to 1492-byte encapsulated packets when `tun-mtu` is the default
/// 1500; with another tun-mtu OpenVPN only clamps to the tun size, which the
/// tun MTU already enforces for the kernel's own MSS choice, so warren leaves
/// it off. `mssfix 0` disables.
fn mssfix(configured: Option<u16>, tun_mtu: u16) -> Option<u16> {
    match configured {
        Some(0) => None,
        Some(n) => Some(n),
        None if tun_mtu == defaults::TUN_MTU => Some(defaults::MSSFIX),
        None => None,
    }
}

/// IPv6 inside the tunnel on a server, `server-ipv6` expanded as OpenVPN's
/// helper.c `helper_client_server` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerIpv6 {
    /// The server tun's address and prefix length (`ifconfig-ipv6` ADDR/BITS;
    /// `server-ipv6 P/B`: P+1/B). Clients are told this address as their remote.
    pub local: Ipv6Prefix,
    /// `ifconfig-ipv6`'s REMOTE (`server-ipv6`: P+2), a nominal peer address.
    pub remote: Ipv6Addr,
    /// The pool as `ifconfig-ipv6-pool` writes it: the first address and the
    /// pool's bits (`server-ipv6 P/B`: P+0x1000/B below /112, else P+2/B).
    /// `None`: the server has an IPv6 address but clients get none.
    pub pool: Option<Ipv6Prefix>,
    /// Push `tun-ipv6` first among the generated options (`server-ipv6` does).
    pub push_tun_ipv6: bool,
}

impl ServerIpv6 {
    /// The first address handed out: the pool start, moved up by one when its host
    /// part (the last 32 bits, masked to the pool's bits) is zero, as OpenVPN pool.c
    /// `ifconfig_pool_init` does.
    pub fn pool_base(&self) -> Option<Ipv6Addr> {
        let p = self.pool?;
        let base = u128::from(p.addr);
        Some(Ipv6Addr::from(if host32(p) == 0 {
            base.wrapping_add(1)
        } else {
            base
        }))
    }

    /// Addresses in the pool (OpenVPN pool.c: `2^(128-bits) - host` from /112 up,
    /// else 65536, `IFCONFIG_POOL_MAX`); 0 without a pool.
    pub fn pool_size(&self) -> u32 {
        let Some(p) = self.pool else { return 0 };
        if p.len >= 112 {
            let host = host32(p).max(1);
            (1u32 << (128 - u32::from(p.len))).saturating_sub(host)
        } else {
            65536
        }
    }
}

/// The host part of a pool start within its last 32 bits (pool.c).
fn host32(p: Ipv6Prefix) -> u32 {
    let low = (u128::from(p.addr) & 0xffff_ffff) as u32;
    let bits = 128 - u32::from(p.len);
    if bits < 32 {
        low & ((1 << bits) - 1)
    } else {
        low
    }
}

impl ServerConfig {
    /// Timers and sizes, defaults applied.
    pub fn session(&self) -> Session {
        session!(Side::Server, self)
    }

    /// IPv6 inside the tunnel: `server-ipv6` expanded, or `ifconfig-ipv6` with its
    /// optional `ifconfig-ipv6-pool`; `None` for an IPv4-only tunnel.
    pub fn ipv6(&self) -> Option<ServerIpv6> {
        if let Some(p) = self.server_ipv6 {
            return Some(ServerIpv6 {
                local: Ipv6Prefix {
                    addr: p.offset(1),
                    len: p.len,
                },
                remote: p.offset(2),
                pool: Some(Ipv6Prefix {
                    addr: p.offset(if p.len < 112 { 0x1000 } else { 2 }),
                    len: p.len,
                }),
                push_tun_ipv6: true,
            });
        }
        let (local, remote) = self.ifconfig_ipv6?;
        Some(ServerIpv6 {
            local,
            remote,
            pool: self.ifconfig_ipv6_pool,
            push_tun_ipv6: false,
        })
    }

    /// `block-ipv6`: the source of the ICMPv6 answers, the `ifconfig-ipv6` remote (or
    /// `server-ipv6`'s P+2), else `fe80::7` (OpenVPN forward.c).
    pub fn block_ipv6_from(&self) -> Option<Ipv6Addr> {
        self.block_ipv6.then(|| {
            self.ipv6()
                .map_or(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 7), |v| v.remote)
        })
    }

    /// Client addresses in the IPv4 pool: the `server` subnet without the network,
    /// the server's `.1` and the broadcast address.
    pub fn pool_size(&self) -> u32 {
        (1u32 << (32 - u32::from(self.prefix_len()))).saturating_sub(3)
    }

    /// The prefix length of `server NETWORK NETMASK` (the lowering checked
    /// that the mask is contiguous).
    pub fn prefix_len(&self) -> u8 {
        u8::try_from(u32::from(self.server.1).leading_ones()).unwrap_or(32)
    }

    /// `max-clients`, 1024 when absent.
    pub fn client_limit(&self) -> u32 {
        self.max_clients.unwrap_or(defaults::MAX_CLIENTS)
    }

    /// `warren-max-half-open-per-source`, 16 when absent, at most the total.
    pub fn half_open_per_source(&self) -> u32 {
        self.max_half_open_per_source
            .unwrap_or(defaults::HALF_OPEN_PER_SOURCE)
            .min(self.half_open_limit())
    }

    /// `warren-max-half-open`, `max(64, max-clients)` when absent.
    pub fn half_open_limit(&self) -> u32 {
        self.max_half_open
            .unwrap_or_else(|| self.client_limit().max(defaults::HALF_OPEN_MIN))
    }

    /// The cipher for clients that cannot negotiate: `data-ciphers-fallback`,
    /// else `cipher`.
    pub fn fallback_cipher(&self) -> Option<&str> {
        self.data_ciphers_fallback
            .as_deref()
            .or(self.cipher.as_deref())
    }

    /// Whether TLS asks for client certificates: `verify-client-cert`, except
    /// that `warren-auth password` asks for none.
    pub fn client_cert(&self) -> VerifyClientCert {
        match &self.state {
            Some(s) if s.auth == UserAuth::Password => VerifyClientCert::None,
            _ => self.verify_client_cert,
        }
    }

    /// `status FILE [SECONDS]` with its period (0 means the default 60).
    pub fn status_file(&self) -> Option<(&Path, Duration)> {
        self.status.as_ref().map(|(p, s)| {
            let s = if *s == 0 { defaults::STATUS_SECS } else { *s };
            (p.as_path(), secs(s))
        })
    }

    /// The tls-auth HMAC digest: `auth`, SHA1 when absent.
    pub fn hmac_digest(&self) -> &str {
        self.auth.as_deref().unwrap_or(defaults::AUTH_DIGEST)
    }
}

impl ClientConfig {
    /// Timers and sizes, defaults applied.
    pub fn session(&self) -> Session {
        session!(Side::Client, self)
    }

    /// The tls-auth HMAC digest: `auth`, SHA1 when absent.
    pub fn hmac_digest(&self) -> &str {
        self.auth.as_deref().unwrap_or(defaults::AUTH_DIGEST)
    }

    /// The local UDP port: any (0) with `nobind`, else `lport`/`port`, else
    /// OpenVPN's 1194.
    pub fn bind_port(&self) -> u16 {
        if self.nobind {
            0
        } else {
            self.lport.unwrap_or(defaults::PORT)
        }
    }

    /// How long to keep trying to resolve `remote` names; `None` (forever)
    /// for `resolv-retry infinite`, OpenVPN's default.
    pub fn resolve_for(&self) -> Option<Duration> {
        match self.resolv_retry {
            None | Some(ResolvRetry::Infinite) => None,
            Some(ResolvRetry::Seconds(s)) => Some(secs(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{client_config_from_str, server_config_from_str};

    fn server(extra: &str) -> ServerConfig {
        let text = format!(
            "ca a\ncert b\nkey c\nserver 10.8.0.0 255.255.255.0\ntopology subnet\n{extra}\n"
        );
        server_config_from_str(&text, "s.conf", Path::new("."))
            .expect("server")
            .0
    }

    fn client(extra: &str) -> ClientConfig {
        let text = format!(
            "client\nremote 192.0.2.1\nca a\ncert b\nkey c\nremote-cert-tls server\n{extra}\n"
        );
        client_config_from_str(&text, "c.ovpn", Path::new("."))
            .expect("client")
            .0
    }

    #[test]
    fn defaults_are_the_same_on_both_sides() {
        let want = Session {
            reneg: Some(secs(3600)),
            hand_window: secs(60),
            tls_timeout: secs(2),
            ping: None,
            ping_restart: None,
            push_ping: None,
            push_ping_restart: None,
            tun_mtu: 1500,
            mssfix: Some(1492),
            explicit_exit_notify: false,
        };
        assert_eq!((server("").session(), client("").session()), (want, want));
        assert_eq!(
            (server("").client_limit(), server("").hmac_digest()),
            (1024, "SHA1")
        );
        assert_eq!(client("").hmac_digest(), "SHA1");
        assert_eq!(
            (client("").bind_port(), client("nobind").bind_port()),
            (1194, 0)
        );
        assert_eq!(client("lport 5000").bind_port(), 5000);
        assert_eq!(client("").resolve_for(), None);
        assert_eq!(client("resolv-retry 30").resolve_for(), Some(secs(30)));
    }

    #[test]
    fn keepalive_follows_openvpn_helper() {
        let k = server("keepalive 10 120").session();
        assert_eq!((k.ping, k.ping_restart), (Some(secs(10)), Some(secs(240))));
        assert_eq!((k.push_ping, k.push_ping_restart), (Some(10), Some(120)));
        let k = client("keepalive 10 60").session();
        assert_eq!(
            (k.ping, k.ping_restart, k.push_ping),
            (Some(secs(10)), Some(secs(60)), None)
        );
        // Explicit ping / ping-restart set this side's own timers only.
        let k = server("ping 7").session();
        assert_eq!(
            (k.ping, k.ping_restart, k.push_ping),
            (Some(secs(7)), None, None)
        );
        let k = client("ping 5\nping-restart 0").session();
        assert_eq!((k.ping, k.ping_restart), (Some(secs(5)), None));
    }

    #[test]
    fn mssfix_reneg_and_exit_notify() {
        assert_eq!(mssfix(None, 1500), Some(1492));
        assert_eq!(mssfix(None, 1400), None);
        assert_eq!(mssfix(Some(0), 1500), None);
        assert_eq!(mssfix(Some(1400), 1500), Some(1400));
        assert_eq!(server("tun-mtu 1400").session().mssfix, None);
        assert_eq!(client("mssfix 1300").session().mssfix, Some(1300));
        assert_eq!(server("reneg-sec 0").session().reneg, None);
        assert_eq!(client("reneg-sec 60").session().reneg, Some(secs(60)));
        assert!(
            server("explicit-exit-notify")
                .session()
                .explicit_exit_notify
        );
        assert!(
            !server("explicit-exit-notify 0")
                .session()
                .explicit_exit_notify
        );
    }

    #[test]
    fn server_derived_values() {
        assert_eq!(server("").prefix_len(), 24);
        assert_eq!(server("").fallback_cipher(), None);
        assert_eq!(
            server("cipher AES-128-GCM").fallback_cipher(),
            Some("AES-128-GCM")
        );
        let s = server("cipher AES-128-GCM\ndata-ciphers-fallback AES-256-GCM");
        assert_eq!(s.fallback_cipher(), Some("AES-256-GCM"));
        assert_eq!(server("max-clients 5").client_limit(), 5);
        assert_eq!(server("auth SHA256").hmac_digest(), "SHA256");
        for st in ["status st.log", "status st.log 0"] {
            assert_eq!(
                server(st).status_file(),
                Some((Path::new("st.log"), secs(60)))
            );
        }
        assert_eq!(server("").client_cert(), VerifyClientCert::Require);
        let s = server("warren-state-dir /nonexistent-w\nwarren-auth password");
        assert_eq!(s.client_cert(), VerifyClientCert::None);
        let s = server("warren-state-dir /nonexistent-w\nwarren-auth cert+password");
        assert_eq!(s.client_cert(), VerifyClientCert::Require);
    }
}
