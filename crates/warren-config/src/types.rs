//! Small typed values used by the lowered configs.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use crate::error::Location;
use crate::material::Material;

/// Server transport (`proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Proto {
    /// `udp`: dual-stack socket.
    #[default]
    Udp,
    /// `udp4`: IPv4 only.
    Udp4,
    /// `udp6`: IPv6 only.
    Udp6,
    /// `tcp-server` (or `tcp` in a server config): dual-stack listener.
    TcpServer,
    /// `tcp4-server` (or `tcp4`): IPv4 only.
    Tcp4Server,
    /// `tcp6-server` (or `tcp6`): IPv6 (accepting IPv4 too, like `udp6`).
    Tcp6Server,
}

impl Proto {
    /// OpenVPN over TCP.
    pub fn is_tcp(self) -> bool {
        matches!(
            self,
            Proto::TcpServer | Proto::Tcp4Server | Proto::Tcp6Server
        )
    }
}

/// Client transport (`proto`, or the third parameter of `remote`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ClientProto {
    /// `udp`: IPv4 or IPv6, whichever the name resolves to.
    #[default]
    Udp,
    /// `udp4`: IPv4 only.
    Udp4,
    /// `udp6`: IPv6 only.
    Udp6,
    /// `tcp-client` (or `tcp` in a client config).
    TcpClient,
    /// `tcp4-client` (or `tcp4`): IPv4 only.
    Tcp4Client,
    /// `tcp6-client` (or `tcp6`): IPv6 only.
    Tcp6Client,
}

impl ClientProto {
    /// OpenVPN over TCP.
    pub fn is_tcp(self) -> bool {
        matches!(
            self,
            ClientProto::TcpClient | ClientProto::Tcp4Client | ClientProto::Tcp6Client
        )
    }
}

/// The tunnel device type. Only layer-3 `tun` devices exist in warren so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DevType {
    /// A layer-3 tun device.
    #[default]
    Tun,
}

/// Address layout inside the tunnel (`topology`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Topology {
    /// One subnet shared by server and clients (`topology subnet`).
    #[default]
    Subnet,
    /// A /30 per client, point-to-point to a virtual peer (`topology net30`, OpenVPN
    /// 2.6's default for a `server` config without a `topology` line).
    Net30,
    /// One address per client, point-to-point to the server (`topology p2p`).
    P2p,
}

/// A TLS protocol version (`tls-version-min`, `tls-version-max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    V1_2,
    /// TLS 1.3.
    V1_3,
}

/// The peer role required by `remote-cert-tls` (key usage and extended key
/// usage check on the peer's certificate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertRole {
    /// The peer must carry a TLS Web Client Authentication EKU.
    Client,
    /// The peer must carry a TLS Web Server Authentication EKU.
    Server,
}

/// `verify-client-cert`. Only `Require` is accepted by the lowering for now;
/// the others need a username/password check warren does not have yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VerifyClientCert {
    /// `none`: clients present no certificate.
    None,
    /// `optional`: a certificate is checked if presented.
    Optional,
    /// `require` (the default): every client presents a valid certificate.
    #[default]
    Require,
}

/// How data-channel keys are derived (warren directive
/// `warren-key-derivation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyDerivationPolicy {
    /// TLS-EKM (`key-derivation tls-ekm`) when the peer offers it, the
    /// legacy TLS1-PRF otherwise. What OpenVPN 2.6 does.
    #[default]
    Auto,
    /// Always the legacy TLS1-PRF exchange.
    Prf,
}

/// `verify-x509-name NAME TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum X509NameType {
    /// `subject` (the default): the whole subject DN, as OpenVPN prints it.
    #[default]
    Subject,
    /// `name`: the common name.
    Name,
    /// `name-prefix`: the common name starts with NAME.
    NamePrefix,
}

/// `pull-filter accept|ignore|reject TEXT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PullFilterAction {
    /// Keep pushed options starting with the text.
    Accept,
    /// Drop them.
    Ignore,
    /// Drop them and restart the connection.
    Reject,
}

/// One `remote` line, with defaults from `port`/`rport` and `proto` applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Remote {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Transport.
    pub proto: ClientProto,
    /// The per-connection settings of this entry (OpenVPN `struct connection_entry`):
    /// from its `<connection>` block and the directives before the first block, or, for
    /// a `remote` line, from the whole file.
    pub entry: crate::connection::EntryOptions,
    /// `http-proxy` or `socks-proxy` for this entry: the TCP connection goes to the proxy,
    /// which connects on to `host`:`port` (the name is not resolved locally).
    pub proxy: Option<crate::proxy::Proxy>,
}

/// A client-side `route NETWORK [NETMASK [GATEWAY [METRIC]]]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// Address, host name, or one of OpenVPN's `vpn_gateway`, `net_gateway`,
    /// `remote_host`.
    pub network: String,
    /// Netmask; `None` for absent or `default` (255.255.255.255).
    pub netmask: Option<Ipv4Addr>,
    /// Gateway; `None` for absent or `default` (the VPN gateway).
    pub gateway: Option<String>,
    /// Metric; `None` for absent or `default`.
    pub metric: Option<u32>,
}

/// An IPv6 address with a prefix length, `ADDR/BITS` as OpenVPN's IPv6
/// directives write it (`server-ipv6`, `ifconfig-ipv6`, `route-ipv6`). The
/// address is kept as written: host bits are meaningful in `ifconfig-ipv6`
/// (the device's own address) and in `ifconfig-ipv6-pool` (the first address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Prefix {
    pub addr: Ipv6Addr,
    pub len: u8,
}

impl Ipv6Prefix {
    /// The address with the host bits cleared.
    pub fn network(&self) -> Ipv6Addr {
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.len.min(128)))
            .unwrap_or(0);
        Ipv6Addr::from(u128::from(self.addr) & mask)
    }

    /// `addr + n`, as OpenVPN's `add_in6_addr` (wrapping at 2^128).
    pub fn offset(&self, n: u128) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.addr).wrapping_add(n))
    }
}

impl std::fmt::Display for Ipv6Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// `route-ipv6 NETWORK/BITS [GATEWAY [METRIC]]`, on either side.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteIpv6 {
    /// The destination, host bits cleared.
    pub network: Ipv6Prefix,
    /// `None` for absent or `default` (OpenVPN: the `ifconfig-ipv6` remote, which
    /// matters only on tap devices).
    pub gateway: Option<Ipv6Addr>,
    /// `None` for absent or `default`.
    pub metric: Option<u32>,
}

/// `resolv-retry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResolvRetry {
    /// `infinite`.
    Infinite,
    /// Give up after this many seconds.
    Seconds(u32),
}

/// `warren-auth`: how a server with `warren-state-dir` authenticates clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UserAuth {
    /// `cert` (the default): a client certificate; users that have a password
    /// must also give it.
    #[default]
    Cert,
    /// `cert+password`: a client certificate and the user's password.
    CertPassword,
    /// `password`: user name and password, no client certificate.
    Password,
}

impl UserAuth {
    /// The spelling in `warren-auth` and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            UserAuth::Cert => "cert",
            UserAuth::CertPassword => "cert+password",
            UserAuth::Password => "password",
        }
    }
}

/// `warren-state-dir DIR` with `warren-auth MODE`: users, revocations and
/// address leases come from warren's state directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StateDir {
    /// The directory, resolved like `ca`.
    pub dir: PathBuf,
    /// `warren-auth`, `cert` when absent.
    pub auth: UserAuth,
}

/// A TLS key-exchange group warren can offer (`tls-groups`, `ecdh-curve`).
/// rustls with ring has exactly these three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsGroup {
    /// `X25519` (OpenSSL also spells it `x25519`).
    X25519,
    /// `prime256v1` / `secp256r1` / `P-256`.
    P256,
    /// `secp384r1` / `P-384`.
    P384,
}

/// A TLS cipher suite warren can offer: the TLS 1.2 ones come from
/// `tls-cipher`, the TLS 1.3 ones from `tls-ciphersuites`. All are ECDHE with
/// an AEAD, which is all rustls implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsCipherSuite {
    /// TLS 1.3 `TLS_AES_256_GCM_SHA384`.
    Tls13Aes256GcmSha384,
    /// TLS 1.3 `TLS_AES_128_GCM_SHA256`.
    Tls13Aes128GcmSha256,
    /// TLS 1.3 `TLS_CHACHA20_POLY1305_SHA256`.
    Tls13Chacha20Poly1305Sha256,
    /// TLS 1.2 `TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384`.
    EcdheEcdsaAes256GcmSha384,
    /// TLS 1.2 `TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256`.
    EcdheEcdsaAes128GcmSha256,
    /// TLS 1.2 `TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256`.
    EcdheEcdsaChacha20Poly1305Sha256,
    /// TLS 1.2 `TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384`.
    EcdheRsaAes256GcmSha384,
    /// TLS 1.2 `TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256`.
    EcdheRsaAes128GcmSha256,
    /// TLS 1.2 `TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256`.
    EcdheRsaChacha20Poly1305Sha256,
}

/// `warren-nat on [UPLINK]`: the server masquerades its VPN clients' traffic out
/// of the uplink (an nftables table of warren's own plus forwarding on the tun
/// and the uplink, all undone at exit).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct NatConfig {
    /// The device to masquerade out of; `None`: the devices of the IPv4
    /// default routes.
    pub uplink: Option<String>,
}

/// `tls-crypt-v2 FILE [force-cookie|allow-noncookie]` (or an inline
/// `<tls-crypt-v2>` block): a server key in a server config, the client's own
/// key in a client config (ops sheet §7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCryptV2 {
    pub key: Material,
    /// Where it was named, for errors about the file's contents.
    pub location: Location,
    /// Server: `force-cookie` ignores clients without early negotiation
    /// (OpenVPN 2.5 and older); `allow-noncookie`, the default, serves them.
    pub force_cookie: bool,
    /// Server: `tls-crypt-v2-max-age DAYS` (OpenVPN 2.7): refuse client keys
    /// older than this, or without a timestamp.
    pub max_age_days: Option<u32>,
}
