//! The server and client engines against each other, in memory, with a fake clock and a
//! seeded lossy network (loss, duplication, reordering, delay). No sockets, no threads:
//! hours of protocol time run in milliseconds and every run is reproducible from its seed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use warren_core::{Instant, PeerId, Rng, TestRng};
use warren_crypto::{
    CipherKind, ControlWrap, Digest, KeyDirection, Metadata, Role, StaticKey, TlsCryptV2ClientKey,
    TlsCryptV2ServerKey,
};
use warren_openvpn::dataplane::DataPlane;
use warren_openvpn::tls::{self, CertRole, ClientTlsOptions, ServerTlsOptions, TlsVersion};
use warren_openvpn::{
    Client, ClientConfig, ClientDatagram, ClientDisconnect, ClientEvent, DATA_HEADROOM,
    DatagramOutcome, DisconnectReason, DropReason, EncapOutcome, HalfOpenLimits, HandshakeFailure,
    KeyDerivation, KickTarget, OverloadKind, Server, ServerConfig, ServerEvent, TlsCryptV2Settings,
    TunnelIpv6, WrapConfig,
};

// ---------------------------------------------------------------------------------------------
// PKI
// ---------------------------------------------------------------------------------------------

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
    /// Another certificate with the same common name (`client`), another serial.
    client_twin: (String, String),
    other_ca_client: (String, String),
}

fn issue(
    ca: &Issuer<'_, &KeyPair>,
    cn: &str,
    eku: ExtendedKeyUsagePurpose,
    server: bool,
) -> (String, String) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = if server {
        vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ]
    } else {
        vec![KeyUsagePurpose::DigitalSignature]
    };
    p.extended_key_usages = vec![eku];
    let cert = p.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn ca(cn: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let pem = p.self_signed(&key).unwrap().pem();
    (p, key, pem)
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let (params, key, ca_pem) = ca("Test CA");
        let issuer = Issuer::from_params(&params, &key);
        let (oparams, okey, _) = ca("Other CA");
        let other = Issuer::from_params(&oparams, &okey);
        Pki {
            ca_pem,
            server: issue(&issuer, "server", ExtendedKeyUsagePurpose::ServerAuth, true),
            client: issue(
                &issuer,
                "client",
                ExtendedKeyUsagePurpose::ClientAuth,
                false,
            ),
            client_twin: issue(
                &issuer,
                "client",
                ExtendedKeyUsagePurpose::ClientAuth,
                false,
            ),
            other_ca_client: issue(
                &other,
                "mallory",
                ExtendedKeyUsagePurpose::ClientAuth,
                false,
            ),
        }
    })
}

fn static_key(seed: u64) -> StaticKey {
    StaticKey::generate(&mut TestRng::seed(seed))
}

#[derive(Clone, Copy, Debug)]
enum Wrap {
    None,
    Auth(Digest),
    Crypt,
}

#[derive(Clone, Debug)]
struct Setup {
    wrap: Wrap,
    cipher: CipherKind,
    tls_max: Option<TlsVersion>,
    server_kd: KeyDerivation,
    client_kd: KeyDerivation,
    server_reneg: Option<Duration>,
    client_reneg: Option<Duration>,
    ping: Option<u32>,
    ping_restart: Option<u32>,
    ipv6: Option<TunnelIpv6>,
    block_ipv6: Option<Ipv6Addr>,
    /// The server's `push` lines; `None`: a route and a DNS server.
    push: Option<Vec<String>>,
    /// Instead of `wrap`'s (tls-crypt-v2 tests).
    server_wrap: Option<WrapConfig>,
    client_wrap: Option<WrapConfig>,
    topology: warren_openvpn::pool::Topology,
    client_to_client: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            wrap: Wrap::Crypt,
            cipher: CipherKind::Aes256Gcm,
            tls_max: None,
            server_kd: KeyDerivation::Auto,
            client_kd: KeyDerivation::Auto,
            server_reneg: None,
            client_reneg: None,
            ping: Some(10),
            ping_restart: Some(60),
            ipv6: None,
            block_ipv6: None,
            push: None,
            server_wrap: None,
            client_wrap: None,
            topology: Default::default(),
            client_to_client: false,
        }
    }
}

fn wrap_configs(w: Wrap) -> (WrapConfig, WrapConfig) {
    let key = static_key(99);
    match w {
        Wrap::None => (WrapConfig::None, WrapConfig::None),
        Wrap::Auth(digest) => (
            WrapConfig::TlsAuth {
                key: key.clone(),
                digest,
                direction: Some(KeyDirection::Normal),
            },
            WrapConfig::TlsAuth {
                key,
                digest,
                direction: Some(KeyDirection::Inverse),
            },
        ),
        Wrap::Crypt => (
            WrapConfig::TlsCrypt { key: key.clone() },
            WrapConfig::TlsCrypt { key },
        ),
    }
}

fn server_config(s: &Setup) -> ServerConfig {
    let p = pki();
    let tls = tls::server_config(
        &p.ca_pem,
        &p.server.0,
        &p.server.1,
        &ServerTlsOptions {
            remote_cert_tls: Some(CertRole::Client),
            ..Default::default()
        },
    )
    .unwrap();
    ServerConfig {
        tls,
        wrap: s
            .server_wrap
            .clone()
            .unwrap_or_else(|| wrap_configs(s.wrap).0),
        network: Ipv4Addr::new(10, 8, 0, 0),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        topology: s.topology,
        ipv6: s.ipv6,
        block_ipv6: s.block_ipv6,
        push: s.push.clone().unwrap_or_else(|| {
            vec![
                "route 192.168.77.0 255.255.255.0".into(),
                "dhcp-option DNS 10.8.0.1".into(),
            ]
        }),
        ping: s.ping.map(|p| Duration::from_secs(p.into())),
        ping_restart: s
            .ping_restart
            .map(|p| Duration::from_secs(2 * u64::from(p))),
        push_ping: s.ping,
        push_ping_restart: s.ping_restart,
        data_ciphers: vec![s.cipher],
        data_ciphers_fallback: None,
        reneg: s.server_reneg,
        hand_window: Duration::from_secs(60),
        tls_timeout: Duration::from_secs(2),
        client_to_client: s.client_to_client,
        duplicate_cn: false,
        max_clients: 16,
        half_open: HalfOpenLimits {
            per_source: 16,
            total: 64,
        },
        explicit_exit_notify: true,
        tun_mtu: 1500,
        mssfix: Some(1492),
        key_derivation: s.server_kd,
        external_auth: false,
        unix_time_at_zero: 1_790_000_000,
    }
}

fn client_config(s: &Setup, cert: &(String, String)) -> ClientConfig {
    let p = pki();
    let tls = tls::client_config(
        &p.ca_pem,
        Some(&cert.0),
        Some(&cert.1),
        &ClientTlsOptions {
            remote_cert_tls: Some(CertRole::Server),
            max_version: s.tls_max,
            ..Default::default()
        },
    )
    .unwrap();
    ClientConfig {
        tls,
        wrap: s
            .client_wrap
            .clone()
            .unwrap_or_else(|| wrap_configs(s.wrap).1),
        data_ciphers: vec![
            CipherKind::Aes256Gcm,
            CipherKind::Aes128Gcm,
            CipherKind::ChaCha20Poly1305,
        ],
        ping: None,
        ping_restart: None,
        reneg: s.client_reneg,
        hand_window: Duration::from_secs(60),
        tls_timeout: Duration::from_secs(2),
        key_derivation: s.client_kd,
        credentials: None,
        explicit_exit_notify: true,
        tun_mtu: 1500,
        mssfix: Some(1492),
        block_ipv6: false,
        unix_time_at_zero: 1_790_000_000,
    }
}

// ---------------------------------------------------------------------------------------------
// Simulated network
// ---------------------------------------------------------------------------------------------

const SERVER: &str = "192.0.2.1:1194";
const CLIENT: &str = "192.0.2.2:40000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[derive(Clone, Copy, Debug, Default)]
struct Impair {
    loss: f64,
    dup: f64,
    /// Extra random delay up to this, which reorders.
    jitter_ms: u64,
}

struct Net {
    rng: TestRng,
    impair: Impair,
    latency: Duration,
    /// Datagrams in flight, by delivery time (sequence number breaks ties).
    queue: BTreeMap<(Instant, u64), (SocketAddr, SocketAddr, Vec<u8>)>,
    seq: u64,
    /// Everything that crossed the wire, for eavesdropper checks.
    log: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    blackhole: bool,
    /// Datagrams from this address are lost at delivery (also those already in flight).
    drop_from: Option<SocketAddr>,
}

impl Net {
    fn new(seed: u64, impair: Impair) -> Self {
        Net {
            rng: TestRng::seed(seed),
            impair,
            latency: Duration::from_millis(5),
            queue: BTreeMap::new(),
            seq: 0,
            log: Vec::new(),
            blackhole: false,
            drop_from: None,
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.rng.next_u64() as f64 / u64::MAX as f64) < p
    }

    fn send(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, pkt: Vec<u8>) {
        self.log.push((from, to, pkt.clone()));
        if self.blackhole || self.chance(self.impair.loss) {
            return;
        }
        let copies = if self.chance(self.impair.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let jitter = if self.impair.jitter_ms > 0 {
                self.rng.below(self.impair.jitter_ms)
            } else {
                0
            };
            let at = now + self.latency + Duration::from_millis(jitter);
            self.seq += 1;
            self.queue.insert((at, self.seq), (from, to, pkt.clone()));
        }
    }

    fn next_delivery(&self) -> Option<Instant> {
        self.queue.keys().next().map(|(t, _)| *t)
    }

    fn pop_due(&mut self, now: Instant) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        let key = *self.queue.keys().next()?;
        if key.0 > now {
            return None;
        }
        self.queue.remove(&key)
    }
}

/// A server and one client joined by a simulated network.
struct World {
    now: Instant,
    net: Net,
    server: Server,
    client: Client,
    server_events: Vec<ServerEvent>,
    client_events: Vec<ClientEvent>,
    /// IP packets that came out of each tun.
    server_tun: Vec<Vec<u8>>,
    client_tun: Vec<Vec<u8>>,
    server_drops: Vec<DropReason>,
    client_drops: Vec<DropReason>,
    /// The server's data path: a DataPlane replica opens every data datagram and seals
    /// every tun packet, as in the driver. It is fed after every engine call, like the
    /// control thread's own replica; with [`World::with_plane`] only when the world
    /// flushes, like a data worker that applies its queue once per wake-up.
    plane: DataPlane,
    worker_plane: bool,
    plane_opened: usize,
    /// Another worker's replica of the same state; seals instead of `plane` while
    /// `seal_on_second` is set.
    second: Option<DataPlane>,
    seal_on_second: bool,
    /// More clients, each at its own address.
    others: Vec<(SocketAddr, Client)>,
    /// Addresses whose datagrams are lost: peers that stalled on purpose.
    stalled: std::collections::HashSet<SocketAddr>,
}

impl World {
    fn new(setup: &Setup, seed: u64, impair: Impair) -> World {
        Self::with_cert(setup, seed, impair, &pki().client)
    }

    fn with_cert(setup: &Setup, seed: u64, impair: Impair, cert: &(String, String)) -> World {
        let now = Instant::from_secs(1000);
        let server = Server::new(server_config(setup), Box::new(TestRng::seed(seed ^ 0x5e)));
        let client = Client::new(
            client_config(setup, cert),
            addr(SERVER),
            Box::new(TestRng::seed(seed ^ 0xc1)),
            now,
        )
        .unwrap();
        World {
            now,
            net: Net::new(seed, impair),
            client,
            server_events: Vec::new(),
            client_events: Vec::new(),
            server_tun: Vec::new(),
            client_tun: Vec::new(),
            server_drops: Vec::new(),
            client_drops: Vec::new(),
            plane: DataPlane::new(server.data_plane_config()),
            server,
            worker_plane: false,
            plane_opened: 0,
            second: None,
            seal_on_second: false,
            others: Vec::new(),
            stalled: std::collections::HashSet::new(),
        }
    }

    /// The plane behaves like a data worker's: changes arrive once per flush.
    fn with_plane(mut self) -> World {
        self.worker_plane = true;
        self
    }

    /// Moves published changes to the plane and its events back, like the driver does
    /// after every input and before sending.
    fn sync_plane(&mut self) {
        self.apply_changes();
        while let Some(e) = self.plane.poll_event() {
            self.server.handle_data_event(self.now, e);
        }
        if let Some(second) = self.second.as_mut() {
            while let Some(e) = second.poll_event() {
                self.server.handle_data_event(self.now, e);
            }
        }
        self.apply_changes();
    }

    fn apply_changes(&mut self) {
        while let Some(c) = self.server.poll_data_change() {
            if let Some(second) = self.second.as_mut() {
                second.apply(c.clone());
            }
            self.plane.apply(c);
        }
    }

    /// After the engine took input: the control thread's replica is up to date at once.
    fn after_engine_input(&mut self) {
        if !self.worker_plane {
            self.sync_plane();
        }
    }

    /// Drains both endpoints' output into the network.
    fn flush(&mut self) {
        self.sync_plane();
        let mut out = Vec::new();
        for _ in 0..10_000 {
            let Some(to) = self.server.poll_transmit(self.now, &mut out) else {
                break;
            };
            self.net.send(self.now, addr(SERVER), to, out.clone());
        }
        for _ in 0..10_000 {
            let Some(to) = self.client.poll_transmit(self.now, &mut out) else {
                break;
            };
            self.net.send(self.now, addr(CLIENT), to, out.clone());
        }
        for (a, c) in &mut self.others {
            while let Some(to) = c.poll_transmit(self.now, &mut out) {
                self.net.send(self.now, *a, to, out.clone());
            }
        }
        self.sync_plane();
        while let Some(e) = self.server.poll_event() {
            self.server_events.push(e);
        }
        while let Some(e) = self.client.poll_event() {
            self.client_events.push(e);
        }
    }

    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, mut pkt: Vec<u8>) {
        if self.net.drop_from == Some(from) {
            return;
        }
        if to == addr(SERVER) {
            let outcome = if DataPlane::is_data(&pkt) {
                self.plane_opened += 1;
                self.plane.open(self.now, from, &mut pkt)
            } else {
                self.server.handle_datagram(self.now, from, &mut pkt)
            };
            self.after_engine_input();
            match outcome {
                DatagramOutcome::Tun(r) | DatagramOutcome::ClientToClient(r) => {
                    self.server_tun.push(pkt[r].to_vec())
                }
                DatagramOutcome::Dropped(d) => self.server_drops.push(d),
                DatagramOutcome::Reply { peer_id } => {
                    let reply = self.plane.reply().to_vec();
                    let mut buf = vec![0u8; DATA_HEADROOM + reply.len()];
                    buf[DATA_HEADROOM..].copy_from_slice(&reply);
                    if let EncapOutcome::Send { dst, range } =
                        self.plane.seal_to(self.now, peer_id, &mut buf, reply.len())
                    {
                        self.net
                            .send(self.now, addr(SERVER), dst, buf[range].to_vec());
                    }
                }
                DatagramOutcome::Consumed => {}
            }
        } else if self.stalled.contains(&to) {
        } else if let Some((_, c)) = self.others.iter_mut().find(|(a, _)| *a == to) {
            let _ = c.handle_datagram(self.now, from, &mut pkt);
        } else {
            match self.client.handle_datagram(self.now, from, &mut pkt) {
                ClientDatagram::Tun(r) => self.client_tun.push(pkt[r].to_vec()),
                ClientDatagram::Dropped(d) => self.client_drops.push(d),
                ClientDatagram::Consumed => {}
            }
        }
    }

    /// Runs the world until `until` (simulated), stepping from event to event.
    fn run_until(&mut self, until: Instant) {
        for _ in 0..2_000_000 {
            self.flush();
            let candidates = [
                self.net.next_delivery(),
                self.server.poll_timeout(),
                self.client.poll_timeout(),
            ];
            let others = self.others.iter().filter_map(|(_, c)| c.poll_timeout());
            let next = candidates.into_iter().flatten().chain(others).min();
            let Some(next) = next.filter(|t| *t <= until) else {
                self.now = until.max(self.now);
                self.flush();
                return;
            };
            self.now = next.max(self.now);
            while let Some((from, to, pkt)) = self.net.pop_due(self.now) {
                self.deliver(from, to, pkt);
            }
            if self.server.poll_timeout().is_some_and(|t| t <= self.now) {
                self.server.handle_timeout(self.now);
                self.after_engine_input();
            }
            if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
                self.client.handle_timeout(self.now);
            }
            for (_, c) in &mut self.others {
                if c.poll_timeout().is_some_and(|t| t <= self.now) {
                    c.handle_timeout(self.now);
                }
            }
        }
        panic!("simulation did not settle (livelock?)");
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn connected(&self) -> bool {
        self.client.is_connected()
            && self
                .server_events
                .iter()
                .any(|e| matches!(e, ServerEvent::Connected { .. }))
    }

    /// Runs until both sides report the tunnel up, or panics after `limit`.
    fn connect(&mut self, limit: Duration) {
        let deadline = self.now + limit;
        while !self.connected() && self.now < deadline {
            self.run_for(Duration::from_millis(100));
        }
        assert!(
            self.connected(),
            "not connected after {limit:?}: client events {:?}",
            self.client_events
        );
    }

    fn client_ip(&self) -> Ipv4Addr {
        self.client_events
            .iter()
            .find_map(|e| match e {
                ClientEvent::Connected { config, .. } => config.ifconfig.map(|(ip, _)| ip),
                _ => None,
            })
            .expect("connected with an address")
    }

    /// Sends one IPv4/UDP packet into the client's tun towards the server's side.
    fn client_sends(&mut self, payload: &[u8]) -> bool {
        let pkt = ipv4_udp(self.client_ip(), Ipv4Addr::new(10, 8, 0, 1), payload);
        let mut buf = vec![0u8; DATA_HEADROOM + pkt.len()];
        buf[DATA_HEADROOM..].copy_from_slice(&pkt);
        match self.client.encapsulate(self.now, &mut buf, pkt.len()) {
            Ok(r) => {
                self.net
                    .send(self.now, addr(CLIENT), addr(SERVER), buf[r].to_vec());
                true
            }
            Err(_) => false,
        }
    }

    /// A client at `from` that completes the cookie exchange (its reset, the server's
    /// stateless reply, then its ACK and ClientHello, which create the session) and then
    /// never answers again. Returns what the server made of the packet that should create
    /// the session.
    fn half_open(&mut self, cfg: &ClientConfig, from: SocketAddr, seed: u64) -> DatagramOutcome {
        self.stalled.insert(from);
        let mut c = Client::new(
            cfg.clone(),
            addr(SERVER),
            Box::new(TestRng::seed(seed)),
            self.now,
        )
        .unwrap();
        let mut out = Vec::new();
        let mut second = None;
        for round in 0..2 {
            while c.poll_transmit(self.now, &mut out).is_some() {
                let outcome = self
                    .server
                    .handle_datagram(self.now, from, &mut out.clone());
                self.after_engine_input();
                if round == 1 && second.is_none() {
                    second = Some(outcome);
                }
            }
            while let Some(to) = self.server.poll_transmit(self.now, &mut out) {
                if to == from {
                    let _ = c.handle_datagram(self.now, addr(SERVER), &mut out.clone());
                } else {
                    self.net.send(self.now, addr(SERVER), to, out.clone());
                }
            }
        }
        self.sync_plane();
        while let Some(e) = self.server.poll_event() {
            self.server_events.push(e);
        }
        second.expect("the client answered the server's reset")
    }

    fn overloads(&self, kind: OverloadKind) -> Vec<(SocketAddr, u64)> {
        self.server_events
            .iter()
            .filter_map(|e| match e {
                ServerEvent::Overload {
                    kind: k,
                    addr,
                    suppressed,
                    ..
                } if *k == kind => Some((*addr, *suppressed)),
                _ => None,
            })
            .collect()
    }

    fn server_sends(&mut self, payload: &[u8]) -> bool {
        let pkt = ipv4_udp(Ipv4Addr::new(10, 8, 0, 1), self.client_ip(), payload);
        let mut buf = vec![0u8; DATA_HEADROOM + pkt.len()];
        buf[DATA_HEADROOM..].copy_from_slice(&pkt);
        let plane = match self.second.as_mut() {
            Some(second) if self.seal_on_second => second,
            _ => &mut self.plane,
        };
        let outcome = plane.seal(self.now, &mut buf, pkt.len());
        match outcome {
            EncapOutcome::Send { dst, range } => {
                self.net
                    .send(self.now, addr(SERVER), dst, buf[range].to_vec());
                true
            }
            EncapOutcome::Dropped(_) => false,
        }
    }
}

fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..22].copy_from_slice(&5000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5001u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

fn udp_payload(ip: &[u8]) -> &[u8] {
    &ip[28..]
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn handshake_push_and_data_both_ways() {
    let mut w = World::new(&Setup::default(), 1, Impair::default());
    let start = w.now;
    w.connect(Duration::from_secs(5));
    assert_eq!(w.client_ip(), Ipv4Addr::new(10, 8, 0, 2));
    // From the session's creation (the client's first packet after the cookie, carrying
    // its ClientHello) to key-method 2: at least one round trip of 5 ms each way, and no
    // longer than the run.
    let took = w
        .server_events
        .iter()
        .find_map(|e| match e {
            ServerEvent::Connected { handshake, .. } => Some(*handshake),
            _ => None,
        })
        .expect("Connected");
    assert!(
        took >= Duration::from_millis(10) && took <= w.now.saturating_duration_since(start),
        "handshake {took:?}"
    );
    let ClientEvent::Connected {
        config,
        cipher,
        ekm,
        server_cn,
    } = w
        .client_events
        .iter()
        .find(|e| matches!(e, ClientEvent::Connected { .. }))
        .unwrap()
        .clone()
    else {
        unreachable!()
    };
    assert_eq!(cipher, CipherKind::Aes256Gcm);
    assert!(ekm, "tls-ekm is negotiated by default");
    assert_eq!(server_cn.as_deref(), Some("server"));
    assert_eq!(config.route_gateway, Some(Ipv4Addr::new(10, 8, 0, 1)));
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.dns_servers.len(), 1);
    assert!(config.topology_subnet);

    for i in 0..50u32 {
        assert!(w.client_sends(format!("up {i}").as_bytes()));
        assert!(w.server_sends(format!("down {i}").as_bytes()));
    }
    w.run_for(Duration::from_millis(200));
    assert_eq!(w.server_tun.len(), 50);
    assert_eq!(w.client_tun.len(), 50);
    assert_eq!(udp_payload(&w.server_tun[7]), b"up 7");
    assert_eq!(udp_payload(&w.client_tun[49]), b"down 49");
    let status = w.server.clients();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].common_name, "client");
    assert!(
        w.server_drops.is_empty() && w.client_drops.is_empty(),
        "{:?} {:?}",
        w.server_drops,
        w.client_drops
    );
}

/// The client's ACK of the server's last control packet (the PUSH_REPLY) is lost: the server
/// must still send data on the new key, as stock OpenVPN does from S_GENERATED_KEYS on,
/// instead of waiting seconds for its retransmission to be acknowledged.
#[test]
fn server_sends_data_while_its_last_control_packet_is_unacknowledged() {
    let mut w = World::new(&Setup::default(), 77, Impair::default());
    let deadline = w.now + Duration::from_secs(5);
    while !w.client.is_connected() && w.now < deadline {
        w.run_for(Duration::from_millis(1));
    }
    assert!(
        w.client.is_connected(),
        "client never applied the push reply"
    );
    // The client's ACK is still in flight (5 ms latency): lose it and all that follows.
    w.net.drop_from = Some(addr(CLIENT));
    w.run_for(Duration::from_millis(20));
    assert!(
        w.server_sends(b"down"),
        "the server has no send key while its last control packet is unacknowledged"
    );
    w.run_for(Duration::from_millis(20));
    assert_eq!(w.client_tun.len(), 1, "client drops: {:?}", w.client_drops);
    assert_eq!(udp_payload(&w.client_tun[0]), b"down");
}

#[test]
fn every_cipher_wrap_and_key_derivation() {
    let wraps = [
        Wrap::None,
        Wrap::Auth(Digest::Sha1),
        Wrap::Auth(Digest::Sha256),
        Wrap::Auth(Digest::Sha512),
        Wrap::Crypt,
    ];
    let ciphers = [
        CipherKind::Aes256Gcm,
        CipherKind::Aes128Gcm,
        CipherKind::ChaCha20Poly1305,
    ];
    let mut seed = 10;
    for wrap in wraps {
        for cipher in ciphers {
            for (server_kd, client_kd, tls_max) in [
                (KeyDerivation::Auto, KeyDerivation::Auto, None),
                (
                    KeyDerivation::ForcePrf,
                    KeyDerivation::Auto,
                    Some(TlsVersion::V1_2),
                ),
                (KeyDerivation::Auto, KeyDerivation::ForcePrf, None),
            ] {
                seed += 1;
                let setup = Setup {
                    wrap,
                    cipher,
                    server_kd,
                    client_kd,
                    tls_max,
                    ..Setup::default()
                };
                let mut w = World::new(&setup, seed, Impair::default());
                w.connect(Duration::from_secs(5));
                let ekm = w.client_events.iter().find_map(|e| match e {
                    ClientEvent::Connected { ekm, cipher: c, .. } => Some((*ekm, *c)),
                    _ => None,
                });
                let expect_ekm =
                    server_kd == KeyDerivation::Auto && client_kd == KeyDerivation::Auto;
                assert_eq!(ekm, Some((expect_ekm, cipher)), "{setup:?}");
                assert!(w.client_sends(b"ping"));
                assert!(w.server_sends(b"pong"));
                w.run_for(Duration::from_millis(50));
                assert_eq!(w.server_tun.len(), 1, "{setup:?}");
                assert_eq!(w.client_tun.len(), 1, "{setup:?}");
            }
        }
    }
}

#[test]
fn handshake_survives_loss_duplication_and_reordering() {
    for seed in 0..8 {
        let impair = Impair {
            loss: 0.2,
            dup: 0.1,
            jitter_ms: 40,
        };
        let mut w = World::new(&Setup::default(), 100 + seed, impair);
        w.connect(Duration::from_secs(50));
        // Data through the same bad network: most arrives, nothing is corrupted or repeated.
        // One packet per millisecond, so the 40 ms jitter reorders within the 64-packet
        // replay window.
        for i in 0..200u32 {
            w.client_sends(format!("{i}").as_bytes());
            w.run_for(Duration::from_millis(1));
        }
        w.run_for(Duration::from_secs(1));
        let got: Vec<&[u8]> = w.server_tun.iter().map(|p| udp_payload(p)).collect();
        let mut unique = got.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            got.len(),
            "a duplicated datagram reached the tun twice"
        );
        assert!(
            got.len() > 120,
            "seed {seed}: only {} of 200 arrived",
            got.len()
        );
        assert!(
            w.server_drops.iter().all(|d| *d == DropReason::Replay
                || *d == DropReason::BadCookie
                || *d == DropReason::NoSession),
            "{:?}",
            w.server_drops
        );
    }
}

#[test]
fn retransmission_backs_off_while_the_server_is_unreachable() {
    let mut w = World::new(&Setup::default(), 7, Impair::default());
    w.net.blackhole = true;
    w.run_for(Duration::from_secs(15));
    // Hard reset at 0 s, retransmits at 2, 6 and 14 s (tls-timeout 2 s, doubling).
    let resets: Vec<_> = w
        .net
        .log
        .iter()
        .filter(|(from, _, _)| *from == addr(CLIENT))
        .collect();
    assert_eq!(
        resets.len(),
        4,
        "one send and three retransmissions in 15 s"
    );
    w.net.blackhole = false;
    // The next retransmission (30 s) gets through, well inside the 60 s hand-window.
    w.connect(Duration::from_secs(20));
    // Past the hand-window with no answer at all, the attempt ends.
    let mut w = World::new(&Setup::default(), 8, Impair::default());
    w.net.blackhole = true;
    w.run_for(Duration::from_secs(61));
    assert!(w.client_events.iter().any(|e| matches!(
        e,
        ClientEvent::Disconnected {
            reason: ClientDisconnect::HandshakeTimeout
        }
    )));
}

#[test]
fn renegotiation_by_server_keeps_data_flowing() {
    renegotiation(
        Setup {
            server_reneg: Some(Duration::from_secs(60)),
            ..Setup::default()
        },
        true,
    );
}

#[test]
fn renegotiation_by_client_keeps_data_flowing() {
    renegotiation(
        Setup {
            client_reneg: Some(Duration::from_secs(60)),
            ..Setup::default()
        },
        false,
    );
}

#[test]
fn renegotiation_with_prf_and_lossy_network() {
    let setup = Setup {
        server_reneg: Some(Duration::from_secs(45)),
        server_kd: KeyDerivation::ForcePrf,
        ..Setup::default()
    };
    let mut w = World::new(
        &setup,
        77,
        Impair {
            loss: 0.05,
            dup: 0.05,
            jitter_ms: 10,
        },
    );
    w.connect(Duration::from_secs(30));
    for _ in 0..100 {
        w.client_sends(b"x");
        w.server_sends(b"y");
        w.run_for(Duration::from_secs(3));
    }
    let renegs = w
        .client_events
        .iter()
        .filter(|e| matches!(e, ClientEvent::Renegotiated { .. }))
        .count();
    assert!(
        renegs >= 5,
        "only {renegs} renegotiations in 300 s with reneg-sec 45"
    );
    assert!(w.client.is_connected());
}

fn renegotiation(setup: Setup, server_side: bool) {
    renegotiation_in(World::new(&setup, 42, Impair::default()), server_side);
}

fn renegotiation_in(mut w: World, server_side: bool) {
    w.connect(Duration::from_secs(5));
    let mut sent = 0u32;
    // Ten minutes with a packet each way every 250 ms.
    for _ in 0..(4 * 600) {
        assert!(
            w.client_sends(format!("c{sent}").as_bytes()),
            "client had no send key at packet {sent}"
        );
        assert!(
            w.server_sends(format!("s{sent}").as_bytes()),
            "server had no send key at packet {sent}"
        );
        sent += 1;
        w.run_for(Duration::from_millis(250));
    }
    w.run_for(Duration::from_millis(100));
    let server_renegs = w
        .server_events
        .iter()
        .filter(|e| matches!(e, ServerEvent::Renegotiated { .. }))
        .count();
    let client_renegs = w
        .client_events
        .iter()
        .filter(|e| matches!(e, ClientEvent::Renegotiated { .. }))
        .count();
    assert!(
        server_renegs >= 9,
        "server saw {server_renegs} renegotiations (server-side: {server_side})"
    );
    assert!(
        client_renegs >= 9,
        "client saw {client_renegs} renegotiations"
    );
    // Key ids cycle 1..7 and wrap to 1 (never 0 again): more than 7 renegotiations happened.
    assert_eq!(
        w.server_tun.len() as u32,
        sent,
        "no packet lost across renegotiations"
    );
    assert_eq!(w.client_tun.len() as u32, sent);
    assert!(w.server_drops.is_empty(), "{:?}", w.server_drops);
    assert!(w.client_drops.is_empty(), "{:?}", w.client_drops);
}

#[test]
fn replayed_data_packets_are_dropped() {
    let mut w = World::new(&Setup::default(), 3, Impair::default());
    w.connect(Duration::from_secs(5));
    let before = w.net.log.len();
    assert!(w.client_sends(b"once"));
    let (from, to, pkt) = w.net.log[before].clone();
    w.run_for(Duration::from_millis(50));
    assert_eq!(w.server_tun.len(), 1);
    w.deliver(from, to, pkt.clone());
    w.deliver(from, to, pkt);
    assert_eq!(w.server_tun.len(), 1);
    assert_eq!(w.server_drops, vec![DropReason::Replay, DropReason::Replay]);
}

#[test]
fn ping_restart_ends_both_sides_when_the_network_dies() {
    let mut w = World::new(
        &Setup {
            ping: Some(5),
            ping_restart: Some(20),
            ..Setup::default()
        },
        4,
        Impair::default(),
    );
    w.connect(Duration::from_secs(5));
    // Keepalive: a minute of idle time keeps the session up (pings flow both ways).
    w.run_for(Duration::from_secs(60));
    assert!(w.client.is_connected());
    assert!(!w.server.clients().is_empty());
    w.net.blackhole = true;
    w.run_for(Duration::from_secs(21));
    assert!(w.client_events.iter().any(|e| matches!(
        e,
        ClientEvent::Disconnected {
            reason: ClientDisconnect::PingTimeout
        }
    )));
    // The server's own timeout is twice the pushed one (keepalive semantics).
    w.run_for(Duration::from_secs(25));
    assert!(w.server_events.iter().any(|e| matches!(
        e,
        ServerEvent::Disconnected {
            reason: DisconnectReason::PingTimeout,
            ..
        }
    )));
    assert!(w.server.clients().is_empty());
}

#[test]
fn explicit_exit_notify_frees_the_server_session() {
    let mut w = World::new(&Setup::default(), 5, Impair::default());
    w.connect(Duration::from_secs(5));
    let now = w.now;
    w.client.close(now);
    w.run_for(Duration::from_secs(3));
    assert!(w.server_events.iter().any(|e| matches!(
        e,
        ServerEvent::Disconnected {
            reason: DisconnectReason::ExitNotify,
            ..
        }
    )));
    assert!(w.client_events.iter().any(|e| matches!(
        e,
        ClientEvent::Disconnected {
            reason: ClientDisconnect::Closed
        }
    )));
    assert!(w.server.clients().is_empty());
}

#[test]
fn client_from_another_ca_is_refused() {
    let mut w = World::with_cert(
        &Setup::default(),
        6,
        Impair::default(),
        &pki().other_ca_client,
    );
    w.run_for(Duration::from_secs(10));
    assert!(!w.client.is_connected());
    assert!(
        w.server_events.iter().any(|e| matches!(
            e,
            ServerEvent::HandshakeFailed {
                kind: HandshakeFailure::Certificate,
                ..
            }
        )),
        "{:?}",
        w.server_events
    );
    assert!(
        w.client_events.iter().any(|e| matches!(
            e,
            ClientEvent::Disconnected {
                reason: ClientDisconnect::TlsError(_)
            }
        )),
        "{:?}",
        w.client_events
    );
    assert!(w.server.clients().is_empty());
    assert_eq!(w.server.session_count(), 0, "the refused session is freed");
}

#[test]
fn wrong_tls_crypt_key_gets_no_answer_and_no_state() {
    let setup = Setup::default();
    let mut w = World::new(&setup, 8, Impair::default());
    // Replace the client with one that has another tls-crypt key.
    let mut cfg = client_config(&setup, &pki().client);
    cfg.wrap = WrapConfig::TlsCrypt {
        key: static_key(1234),
    };
    w.client = Client::new(cfg, addr(SERVER), Box::new(TestRng::seed(9)), w.now).unwrap();
    w.run_for(Duration::from_secs(20));
    assert!(
        w.net.log.iter().all(|(from, _, _)| *from == addr(CLIENT)),
        "the server must not answer"
    );
    assert!(
        w.server_drops
            .iter()
            .all(|d| *d == DropReason::WrapAuthFailed)
    );
    assert_eq!(w.server.session_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// tls-crypt-v2
// ---------------------------------------------------------------------------------------------

/// The early-negotiation TLV of the server's stateless reset (fact sheet §3.3).
const RESEND_WKC_TLV: [u8; 6] = [0, 1, 0, 2, 0, 1];

fn v2_server_key(seed: u64) -> TlsCryptV2ServerKey {
    TlsCryptV2ServerKey::generate(&mut TestRng::seed(seed))
}

fn v2_client_key(server: &TlsCryptV2ServerKey, meta: Metadata, seed: u64) -> TlsCryptV2ClientKey {
    TlsCryptV2ClientKey::generate(server, &meta, &mut TestRng::seed(seed)).unwrap()
}

/// A tls-crypt-v2 server (key seed 0x22, tls-crypt clients beside it with `others`) and a
/// client whose key it wrapped with `meta`.
fn v2_setup(others: WrapConfig, meta: Metadata) -> (Setup, TlsCryptV2ClientKey) {
    let server = v2_server_key(0x22);
    let client = v2_client_key(&server, meta, 0x23);
    let setup = Setup {
        server_wrap: Some(WrapConfig::TlsCryptV2Server(TlsCryptV2Settings {
            key: server,
            force_cookie: false,
            max_age_days: None,
            others: Box::new(others),
        })),
        client_wrap: Some(WrapConfig::TlsCryptV2Client {
            key: client.clone(),
        }),
        ..Setup::default()
    };
    (setup, client)
}

fn v2_settings(setup: &mut Setup) -> &mut TlsCryptV2Settings {
    match setup.server_wrap.as_mut() {
        Some(WrapConfig::TlsCryptV2Server(v2)) => v2,
        _ => panic!("not a tls-crypt-v2 setup"),
    }
}

/// A control packet unwrapped with `wrap`: its opcode, stamp id, msg id, acks and payload.
fn open_control(wrap: &ControlWrap, pkt: &[u8]) -> (u8, u32, Option<u32>, Vec<u32>, Vec<u8>) {
    let mut body = Vec::new();
    let stamp = wrap.unwrap(pkt, &mut body).unwrap().unwrap();
    let head: [u8; 9] = pkt[..9].try_into().unwrap();
    let p = warren_wire::ControlPacket::parse(&head, &body).unwrap();
    (
        pkt[0] >> 3,
        stamp.id,
        p.msg_id,
        p.acks.ids,
        p.payload.to_vec(),
    )
}

/// A V3 reset as a tls-crypt-v2 client sends it, with wrap packet id `id` (0x0f000001
/// announces early negotiation; 1 is a client without it, OpenVPN 2.5).
fn v3_reset(key: &TlsCryptV2ClientKey, sid: u8, id: u32) -> Vec<u8> {
    let wrap = ControlWrap::tls_crypt(key.kc(), Role::Client);
    let head = [0x50, sid, 2, 3, 4, 5, 6, 7, 8];
    let mut out = Vec::new();
    wrap.wrap(
        &head,
        warren_crypto::ReplayStamp {
            id,
            time: 1_790_000_100,
        },
        &[0, 0, 0, 0, 0],
        &mut out,
    );
    out.extend_from_slice(key.wkc());
    out
}

#[test]
fn tls_crypt_v2_handshake_on_the_wire_and_data() {
    let (setup, key) = v2_setup(WrapConfig::None, Metadata::Timestamp(1_789_000_000));
    let mut w = World::new(&setup, 31, Impair::default());
    w.connect(Duration::from_secs(5));
    for i in 0..20u32 {
        assert!(w.client_sends(format!("up {i}").as_bytes()));
        assert!(w.server_sends(format!("down {i}").as_bytes()));
    }
    w.run_for(Duration::from_millis(200));
    assert_eq!(w.server_tun.len(), 20);
    assert_eq!(w.client_tun.len(), 20);
    assert!(w.server_drops.is_empty(), "{:?}", w.server_drops);
    assert!(w.client_drops.is_empty(), "{:?}", w.client_drops);

    let server_side = ControlWrap::tls_crypt(key.kc(), Role::Server);
    let client_side = ControlWrap::tls_crypt(key.kc(), Role::Client);
    let wkc = key.wkc();
    let from_client: Vec<&Vec<u8>> = w
        .net
        .log
        .iter()
        .filter(|(f, _, p)| *f == addr(CLIENT) && p[0] >> 3 != 9)
        .map(|(_, _, p)| p)
        .collect();
    let from_server: Vec<&Vec<u8>> = w
        .net
        .log
        .iter()
        .filter(|(f, _, p)| *f == addr(SERVER) && p[0] >> 3 != 9)
        .map(|(_, _, p)| p)
        .collect();
    // 1. P_CONTROL_HARD_RESET_CLIENT_V3: tls-crypt with Kc, WKc appended, wrap id 0x0f000001.
    let reset = from_client[0];
    assert!(reset.ends_with(wkc));
    assert_eq!(reset.len(), 54 + wkc.len());
    let (op, id, msg, acks, _) = open_control(&server_side, &reset[..reset.len() - wkc.len()]);
    assert_eq!((op, id, msg, acks), (10, 0x0f00_0001, Some(0), vec![]));
    // 2. The stateless reply asks for the key again.
    let (op, id, msg, acks, payload) = open_control(&client_side, from_server[0]);
    assert_eq!((op, id, msg, acks), (8, 1, Some(0), vec![0]));
    assert_eq!(payload, RESEND_WKC_TLV);
    // 3. msg-id 1 goes as P_CONTROL_WKC_V1 with WKc; nothing after it carries WKc.
    let second = from_client[1];
    assert!(second.ends_with(wkc));
    let (op, id, msg, acks, payload) =
        open_control(&server_side, &second[..second.len() - wkc.len()]);
    assert_eq!((op, id, msg, acks), (11, 0x0f00_0002, Some(1), vec![0]));
    assert!(!payload.is_empty(), "the ClientHello starts in it");
    assert!(
        second.len() <= 1250 - 48,
        "within tls-mtu: {}",
        second.len()
    );
    for p in &from_client[2..] {
        assert!(matches!(p[0] >> 3, 4 | 5), "opcode {}", p[0] >> 3);
        open_control(&server_side, p);
    }
    for p in &from_server[1..] {
        open_control(&client_side, p);
    }
}

#[test]
fn tls_crypt_v2_survives_loss_and_renegotiates() {
    let (mut setup, _) = v2_setup(WrapConfig::None, Metadata::User(b"serial=1".to_vec()));
    setup.server_reneg = Some(Duration::from_secs(60));
    let impair = Impair {
        loss: 0.1,
        dup: 0.05,
        jitter_ms: 20,
    };
    for seed in 40..44 {
        let mut w = World::new(&setup, seed, impair);
        w.connect(Duration::from_secs(120));
    }
    renegotiation_in(World::new(&setup, 45, Impair::default()), true);
}

#[test]
fn tls_crypt_v2_and_tls_crypt_clients_share_a_server() {
    let (setup, _) = v2_setup(
        WrapConfig::TlsCrypt {
            key: static_key(99),
        },
        Metadata::Timestamp(1_789_000_000),
    );
    let mut w = World::new(&setup, 33, Impair::default());
    // Both clients hold the same certificate.
    let mut cfg = server_config(&setup);
    cfg.duplicate_cn = true;
    w.server = Server::new(cfg, Box::new(TestRng::seed(33)));
    w.plane = DataPlane::new(w.server.data_plane_config());
    let v1 = add_client(&mut w, "192.0.2.50:4000", 34);
    w.connect(Duration::from_secs(5));
    w.run_for(Duration::from_secs(2));
    let (_, c) = w.others.iter().find(|(a, _)| *a == v1).unwrap();
    assert!(c.is_connected(), "the tls-crypt client connects too");
    assert_eq!(w.server.clients().len(), 2);
}

#[test]
fn tls_crypt_v2_only_refuses_other_clients() {
    let (setup, _) = v2_setup(WrapConfig::None, Metadata::Timestamp(1_789_000_000));
    let mut w = World::new(&setup, 35, Impair::default());
    // A tls-crypt client (and an unwrapped one) gets nothing: OpenVPN requires some wrapping.
    add_client(&mut w, "192.0.2.51:4000", 36);
    let mut plain = [0x38, 9, 9, 9, 9, 9, 9, 9, 9, 0, 0, 0, 0, 0];
    assert_eq!(
        w.server
            .handle_datagram(w.now, addr("192.0.2.52:4000"), &mut plain),
        DatagramOutcome::Dropped(DropReason::Unsupported)
    );
    w.connect(Duration::from_secs(5));
    w.run_for(Duration::from_secs(5));
    assert!(!w.others[0].1.is_connected());
    assert_eq!(w.server.clients().len(), 1);
    assert!(
        w.net
            .log
            .iter()
            .all(|(_, to, _)| *to != addr("192.0.2.51:4000")),
        "no answer to the tls-crypt client"
    );
}

#[test]
fn tls_crypt_v2_wrong_server_key_gets_no_answer_and_no_state() {
    let (setup, _) = v2_setup(WrapConfig::None, Metadata::Timestamp(1_789_000_000));
    let mut w = World::new(&setup, 37, Impair::default());
    // A client key that another server key wrapped.
    let foreign = v2_client_key(&v2_server_key(0x99), Metadata::Timestamp(1), 5);
    let mut cfg = client_config(&setup, &pki().client);
    cfg.wrap = WrapConfig::TlsCryptV2Client {
        key: foreign.clone(),
    };
    w.client = Client::new(cfg, addr(SERVER), Box::new(TestRng::seed(9)), w.now).unwrap();
    w.run_for(Duration::from_secs(20));
    assert!(
        w.net.log.iter().all(|(from, _, _)| *from == addr(CLIENT)),
        "the server must not answer"
    );
    assert!(!w.server_drops.is_empty());
    assert!(
        w.server_drops
            .iter()
            .all(|d| *d == DropReason::BadClientKey),
        "{:?}",
        w.server_drops
    );
    assert_eq!(w.server.session_count(), 0);
    // Tampered WKc, a truncated one, a wrong length field, and the V3/WKC_V1 opcodes
    // without any key: counted and dropped, never a panic.
    let mut reset = v3_reset(&foreign, 1, 0x0f00_0001);
    let n = reset.len();
    for cut in [0, 1, 2, 9, 60, n - 300, n - 2, n - 1] {
        let mut p = reset[..cut].to_vec();
        let _ = w.server.handle_datagram(w.now, addr(CLIENT), &mut p);
    }
    reset[n - 1] ^= 0xff;
    assert!(matches!(
        w.server.handle_datagram(w.now, addr(CLIENT), &mut reset),
        DatagramOutcome::Dropped(DropReason::BadClientKey)
    ));
    let mut wkc_v1 = v3_reset(&foreign, 1, 0x0f00_0002);
    wkc_v1[0] = 0x58;
    assert!(matches!(
        w.server.handle_datagram(w.now, addr(CLIENT), &mut wkc_v1),
        DatagramOutcome::Dropped(DropReason::BadClientKey)
    ));
    assert_eq!(w.server.session_count(), 0);
    let mut out = Vec::new();
    assert_eq!(w.server.poll_transmit(w.now, &mut out), None);

    // A server without tls-crypt-v2 drops its packets as unsupported.
    let mut plain_server =
        Server::new(server_config(&Setup::default()), Box::new(TestRng::seed(3)));
    let mut p = v3_reset(&foreign, 1, 0x0f00_0001);
    assert_eq!(
        plain_server.handle_datagram(w.now, addr(CLIENT), &mut p),
        DatagramOutcome::Dropped(DropReason::Unsupported)
    );
}

/// The reset of a client with early negotiation gets a stateless reply; one without it
/// (OpenVPN 2.5) a session at once, unless `force-cookie`.
#[test]
fn tls_crypt_v2_reset_with_and_without_early_negotiation() {
    let (mut setup, key) = v2_setup(WrapConfig::None, Metadata::Timestamp(1_789_000_000));
    let now = Instant::from_secs(1000);
    let client_side = ControlWrap::tls_crypt(key.kc(), Role::Client);
    let mut out = Vec::new();

    let mut server = Server::new(server_config(&setup), Box::new(TestRng::seed(1)));
    let mut p = v3_reset(&key, 1, 0x0f00_0001);
    assert_eq!(
        server.handle_datagram(now, addr(CLIENT), &mut p),
        DatagramOutcome::Consumed
    );
    assert_eq!(server.session_count(), 0, "stateless");
    assert_eq!(server.poll_transmit(now, &mut out), Some(addr(CLIENT)));
    let (op, _, _, acks, payload) = open_control(&client_side, &out);
    assert_eq!((op, acks, payload), (8, vec![0], RESEND_WKC_TLV.to_vec()));

    let mut p = v3_reset(&key, 2, 1);
    assert_eq!(
        server.handle_datagram(now, addr(CLIENT), &mut p),
        DatagramOutcome::Consumed
    );
    assert_eq!(server.session_count(), 1, "an old client's session at once");
    if server.poll_timeout().is_some_and(|t| t <= now) {
        server.handle_timeout(now);
    }
    assert_eq!(server.poll_transmit(now, &mut out), Some(addr(CLIENT)));
    let (op, _, msg, acks, payload) = open_control(&client_side, &out);
    assert_eq!((op, msg, acks), (8, Some(0), vec![0]));
    assert!(payload.is_empty(), "no early negotiation for it");

    v2_settings(&mut setup).force_cookie = true;
    let mut server = Server::new(server_config(&setup), Box::new(TestRng::seed(1)));
    let mut p = v3_reset(&key, 2, 1);
    assert_eq!(
        server.handle_datagram(now, addr(CLIENT), &mut p),
        DatagramOutcome::Dropped(DropReason::Unsupported)
    );
    assert_eq!(server.session_count(), 0);
    assert_eq!(server.poll_transmit(now, &mut out), None);
    // Over TCP there is no cookie: the V3 reset creates the session.
    assert!(server.stream_opened(addr(CLIENT)));
    let mut p = v3_reset(&key, 3, 0x0f00_0001);
    assert_eq!(
        server.handle_datagram(now, addr(CLIENT), &mut p),
        DatagramOutcome::Consumed
    );
    assert_eq!(server.session_count(), 1);
}

/// The stock client's V3 reset (Debian's openvpn 2.6.14 with the ops sheet's lab client
/// key, captured on loopback): a warren server with the lab server key answers it with the
/// stateless reset that asks for the key again, and keeps no state.
#[test]
fn tls_crypt_v2_stock_client_reset_gets_the_resend_wkc_reply() {
    let pem = include_str!("../../../../fuzz/corpus/tls_crypt_v2/lab_server_key");
    let client_pem = include_str!("../../../../fuzz/corpus/tls_crypt_v2/lab_client_key");
    let stock_reset = include_bytes!("../../../../fuzz/corpus/tls_crypt_v2/stock_v3_reset");
    let key = TlsCryptV2ServerKey::parse(pem).unwrap();
    let client_key = TlsCryptV2ClientKey::parse(client_pem).unwrap();
    let setup = Setup {
        server_wrap: Some(WrapConfig::TlsCryptV2Server(TlsCryptV2Settings {
            key,
            force_cookie: true,
            max_age_days: None,
            others: Box::new(WrapConfig::None),
        })),
        ..Setup::default()
    };
    let mut server = Server::new(server_config(&setup), Box::new(TestRng::seed(1)));
    let now = Instant::from_secs(1000);
    let mut pkt = stock_reset.to_vec();
    assert_eq!(
        server.handle_datagram(now, addr(CLIENT), &mut pkt),
        DatagramOutcome::Consumed
    );
    assert_eq!(server.session_count(), 0);
    let mut out = Vec::new();
    assert_eq!(server.poll_transmit(now, &mut out), Some(addr(CLIENT)));
    let client_side = ControlWrap::tls_crypt(client_key.kc(), Role::Client);
    let (op, id, msg, acks, payload) = open_control(&client_side, &out);
    assert_eq!((op, id, msg, acks), (8, 1, Some(0), vec![0]));
    assert_eq!(payload, RESEND_WKC_TLV);
    let mut body = Vec::new();
    client_side.unwrap(&out, &mut body).unwrap();
    assert_eq!(
        body[5..13],
        stock_reset[1..9],
        "acks the stock client's session"
    );
    // OpenVPN's reply is 72 bytes too (tls-crypt reset + the 6-byte TLV).
    assert_eq!(out.len(), 72);
}

#[test]
fn tls_crypt_v2_over_tcp() {
    let (setup, _) = v2_setup(WrapConfig::None, Metadata::Timestamp(1_789_000_000));
    let mut w = World::new(&setup, 39, Impair::default());
    assert!(w.server.stream_opened(addr(CLIENT)));
    w.connect(Duration::from_secs(5));
    assert!(w.client_sends(b"up"));
    assert!(w.server_sends(b"down"));
    w.run_for(Duration::from_millis(100));
    assert_eq!((w.server_tun.len(), w.client_tun.len()), (1, 1));
    // No early negotiation on a connection: the server's reset had no TLV, so the client
    // never sent WKC_V1.
    assert!(
        w.net
            .log
            .iter()
            .all(|(from, _, p)| *from != addr(CLIENT) || p[0] >> 3 != 11)
    );
}

/// `tls-crypt-v2-max-age`: a key older than the limit, or without a timestamp, gets the
/// stateless reply (its age is not looked at there) but never a session.
#[test]
fn tls_crypt_v2_max_age() {
    // The engine's clock starts at Unix time 1_790_000_000 + 1000 s.
    let day = 86_400;
    for (meta, ok) in [
        (Metadata::Timestamp(1_790_000_000 - 9 * day), true),
        (Metadata::Timestamp(1_790_000_000 + 9 * day), true),
        (Metadata::Timestamp(1_790_000_000 - 11 * day), false),
        (Metadata::User(b"serial=7".to_vec()), false),
    ] {
        let (mut setup, _) = v2_setup(WrapConfig::None, meta.clone());
        v2_settings(&mut setup).max_age_days = Some(10);
        let mut w = World::new(&setup, 41, Impair::default());
        if ok {
            w.connect(Duration::from_secs(5));
            continue;
        }
        w.run_for(Duration::from_secs(10));
        assert!(!w.client.is_connected(), "{meta:?}");
        assert_eq!(w.server.session_count(), 0, "{meta:?}");
        assert!(
            w.server_drops.contains(&DropReason::ClientKeyRefused),
            "{meta:?}: {:?}",
            w.server_drops
        );
    }
}

#[test]
fn garbage_never_creates_state_or_panics() {
    let mut w = World::new(
        &Setup {
            wrap: Wrap::None,
            ..Setup::default()
        },
        11,
        Impair::default(),
    );
    let mut rng = TestRng::seed(5);
    for i in 0..20_000 {
        let len = rng.below(300) as usize;
        let mut pkt = vec![0u8; len];
        rng.fill(&mut pkt);
        if i % 3 == 0 && len > 0 {
            pkt[0] = (rng.below(12) as u8) << 3; // plausible opcodes
        }
        let from = SocketAddr::from(([198, 18, (i % 200) as u8, 1], 1000 + (i % 5000) as u16));
        let _ = w.server.handle_datagram(w.now, from, &mut pkt);
    }
    assert_eq!(w.server.session_count(), 0);
    // The real client still gets in afterwards.
    w.connect(Duration::from_secs(5));
}

#[test]
fn stateless_reset_reply_then_cookie_check() {
    let mut w = World::new(&Setup::default(), 12, Impair::default());
    // Deliver only the client's first packet: the server answers but keeps no state.
    w.flush();
    let (from, to, pkt) = w.net.pop_due(w.now + Duration::from_secs(1)).unwrap();
    w.deliver(from, to, pkt);
    assert_eq!(w.server.session_count(), 0);
    let mut out = Vec::new();
    assert!(
        w.server.poll_transmit(w.now, &mut out).is_some(),
        "stateless server reset"
    );
    // The same reset from another address (spoofed) gets an answer too, but an ACK
    // carrying the first address's cookie from there is refused.
    w.connect(Duration::from_secs(10));
    assert_eq!(w.server.session_count(), 1);
}

#[test]
fn three_clients_get_distinct_addresses() {
    let setup = Setup::default();
    let mut cfg = server_config(&setup);
    cfg.duplicate_cn = true; // the three clients share one certificate
    let server = Server::new(cfg, Box::new(TestRng::seed(1)));
    let mut net = Net::new(1, Impair::default());
    let mut now = Instant::from_secs(10);
    let issuer_pki = pki();
    let mut clients: Vec<(SocketAddr, Client)> = (0..3)
        .map(|i| {
            let a = SocketAddr::from(([192, 0, 2, 10 + i], 5000));
            (
                a,
                Client::new(
                    client_config(&setup, &issuer_pki.client),
                    addr(SERVER),
                    Box::new(TestRng::seed(u64::from(i) + 50)),
                    now,
                )
                .unwrap(),
            )
        })
        .collect();
    let mut server = server;
    let mut out = Vec::new();
    for _ in 0..2000 {
        while let Some(to) = server.poll_transmit(now, &mut out) {
            net.send(now, addr(SERVER), to, out.clone());
        }
        for (a, c) in &mut clients {
            while let Some(to) = c.poll_transmit(now, &mut out) {
                net.send(now, *a, to, out.clone());
            }
        }
        now += Duration::from_millis(5);
        while let Some((from, to, mut pkt)) = net.pop_due(now) {
            if to == addr(SERVER) {
                server.handle_datagram(now, from, &mut pkt);
            } else if let Some((_, c)) = clients.iter_mut().find(|(a, _)| *a == to) {
                c.handle_datagram(now, from, &mut pkt);
            }
        }
        if server.poll_timeout().is_some_and(|t| t <= now) {
            server.handle_timeout(now);
        }
        for (_, c) in &mut clients {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
            }
        }
        if clients.iter().all(|(_, c)| c.is_connected()) {
            break;
        }
    }
    assert!(clients.iter().all(|(_, c)| c.is_connected()));
    assert_eq!(server.clients().len(), 3);
    let mut ips: Vec<Ipv4Addr> = clients
        .iter_mut()
        .filter_map(|(_, c)| {
            let mut ip = None;
            while let Some(e) = c.poll_event() {
                if let ClientEvent::Connected { config, .. } = e {
                    ip = config.ifconfig.map(|(a, _)| a);
                }
            }
            ip
        })
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "distinct addresses: {ips:?}");
}

/// The serial number of a PEM certificate, as the engine records it.
fn serial_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    tls::peer_serial(&[der]).unwrap()
}

/// Issue 10: under duplicate-cn two certificates share a common name; revoking one (a kick
/// by serial) ends only the session of that certificate. A kick by identity still ends
/// every session of the name.
#[test]
fn kick_by_serial_ends_only_that_certificate() {
    let setup = Setup::default();
    let mut cfg = server_config(&setup);
    cfg.duplicate_cn = true;
    let mut server = Server::new(cfg, Box::new(TestRng::seed(7)));
    let mut net = Net::new(7, Impair::default());
    let mut now = Instant::from_secs(10);
    let p = pki();
    assert_ne!(serial_of(&p.client.0), serial_of(&p.client_twin.0));
    let mut clients: Vec<(SocketAddr, Client, Vec<ClientEvent>)> = [&p.client, &p.client_twin]
        .into_iter()
        .zip(0u8..)
        .map(|(cert, i)| {
            let a = SocketAddr::from(([192, 0, 2, 20 + i], 5000));
            let c = Client::new(
                client_config(&setup, cert),
                addr(SERVER),
                Box::new(TestRng::seed(u64::from(i) + 70)),
                now,
            )
            .unwrap();
            (a, c, Vec::new())
        })
        .collect();
    let mut out = Vec::new();
    let mut step = |server: &mut Server,
                    clients: &mut Vec<(SocketAddr, Client, Vec<ClientEvent>)>,
                    now: &mut Instant| {
        while let Some(to) = server.poll_transmit(*now, &mut out) {
            net.send(*now, addr(SERVER), to, out.clone());
        }
        for (a, c, _) in clients.iter_mut() {
            while let Some(to) = c.poll_transmit(*now, &mut out) {
                net.send(*now, *a, to, out.clone());
            }
        }
        *now += Duration::from_millis(5);
        while let Some((from, to, mut pkt)) = net.pop_due(*now) {
            if to == addr(SERVER) {
                server.handle_datagram(*now, from, &mut pkt);
            } else if let Some((_, c, _)) = clients.iter_mut().find(|(a, _, _)| *a == to) {
                c.handle_datagram(*now, from, &mut pkt);
            }
        }
        if server.poll_timeout().is_some_and(|t| t <= *now) {
            server.handle_timeout(*now);
        }
        for (_, c, events) in clients.iter_mut() {
            if c.poll_timeout().is_some_and(|t| t <= *now) {
                c.handle_timeout(*now);
            }
            while let Some(e) = c.poll_event() {
                events.push(e);
            }
        }
        while server.poll_event().is_some() {}
    };
    for _ in 0..2000 {
        step(&mut server, &mut clients, &mut now);
        if clients.iter().all(|(_, c, _)| c.is_connected()) {
            break;
        }
    }
    assert!(clients.iter().all(|(_, c, _)| c.is_connected()));
    assert_eq!(server.clients().len(), 2);
    assert!(server.clients().iter().all(|c| c.common_name == "client"));

    // An unknown serial ends nothing; the twin's serial (with a leading zero byte, which
    // does not count) ends the twin only.
    assert_eq!(
        server.kick_target(now, &KickTarget::CertSerial(vec![0xde, 0xad]), "RESTART"),
        0
    );
    let mut twin = vec![0u8];
    twin.extend(serial_of(&p.client_twin.0));
    assert_eq!(
        server.kick_target(now, &KickTarget::CertSerial(twin), "RESTART"),
        1
    );
    for _ in 0..600 {
        step(&mut server, &mut clients, &mut now);
    }
    let restarted = |events: &[ClientEvent]| {
        events.iter().any(|e| {
            matches!(
                e,
                ClientEvent::Disconnected {
                    reason: ClientDisconnect::Restart(_)
                }
            )
        })
    };
    assert!(restarted(&clients[1].2), "twin kicked: {:?}", clients[1].2);
    assert!(!restarted(&clients[0].2), "other kept: {:?}", clients[0].2);
    assert!(clients[0].1.is_connected());
    assert_eq!(server.clients().len(), 1);

    // By identity: every session of the name (here the one left).
    assert_eq!(server.kick(now, "client", "RESTART"), 1);
}

// ---------------------------------------------------------------------------------------------
// External authentication (deferred decisions by the driver)
// ---------------------------------------------------------------------------------------------

fn auth_world(seed: u64, credentials: Option<(&str, &str)>, with_cert: bool) -> World {
    let setup = Setup::default();
    let mut w = World::new(&setup, seed, Impair::default());
    let p = pki();
    let mut scfg = server_config(&setup);
    scfg.external_auth = true;
    if !with_cert {
        scfg.tls = tls::server_config(
            &p.ca_pem,
            &p.server.0,
            &p.server.1,
            &ServerTlsOptions {
                client_cert: tls::ClientCertMode::None,
                ..Default::default()
            },
        )
        .unwrap();
    }
    w.server = Server::new(scfg, Box::new(TestRng::seed(seed ^ 0x77)));
    let mut ccfg = client_config(&setup, &p.client);
    if !with_cert {
        ccfg.tls = tls::client_config(
            &p.ca_pem,
            None,
            None,
            &ClientTlsOptions {
                remote_cert_tls: Some(CertRole::Server),
                ..Default::default()
            },
        )
        .unwrap();
    }
    ccfg.credentials = credentials.map(|(u, p)| (u.to_string(), p.to_string()));
    w.client = Client::new(
        ccfg,
        addr(SERVER),
        Box::new(TestRng::seed(seed ^ 0x78)),
        w.now,
    )
    .unwrap();
    w
}

fn take_auth_request(w: &mut World) -> (PeerId, String, bool, Option<String>, Option<String>) {
    for _ in 0..100 {
        w.run_for(Duration::from_millis(50));
        if let Some(pos) = w
            .server_events
            .iter()
            .position(|e| matches!(e, ServerEvent::AuthRequest { .. }))
            && let ServerEvent::AuthRequest {
                peer_id,
                common_name,
                certificate,
                username,
                password,
                ..
            } = w.server_events.remove(pos)
        {
            return (
                peer_id,
                common_name,
                certificate.is_some(),
                username,
                password.map(|p| p.expose().to_string()),
            );
        }
    }
    panic!("no AuthRequest: {:?}", w.server_events);
}

#[test]
fn external_auth_accept_with_fixed_address_and_extra_routes() {
    let mut w = auth_world(21, Some(("alice", "s3cret")), true);
    let (peer_id, cn, has_cert, user, pass) = take_auth_request(&mut w);
    assert_eq!((cn.as_str(), has_cert), ("client", true));
    assert_eq!(
        (user.as_deref(), pass.as_deref()),
        (Some("alice"), Some("s3cret"))
    );
    // No address and no data before the decision.
    w.run_for(Duration::from_secs(2));
    assert!(!w.client.is_connected());
    let now = w.now;
    w.server.authorize(
        now,
        peer_id,
        warren_openvpn::AuthDecision::Accept(warren_openvpn::AuthGrant {
            identity: Some("alice".into()),
            fixed_ip: Some(Ipv4Addr::new(10, 8, 0, 42)),
            push: vec!["route 10.99.0.0 255.255.0.0".into()],
            ..Default::default()
        }),
    );
    w.connect(Duration::from_secs(10));
    assert_eq!(w.client_ip(), Ipv4Addr::new(10, 8, 0, 42));
    let routes: Vec<Ipv4Addr> = w
        .client_events
        .iter()
        .find_map(|e| match e {
            ClientEvent::Connected { config, .. } => {
                Some(config.routes.iter().map(|r| r.network).collect())
            }
            _ => None,
        })
        .unwrap();
    assert!(routes.contains(&Ipv4Addr::new(10, 99, 0, 0)));
    assert_eq!(w.server.clients()[0].common_name, "alice");
    assert!(w.client_sends(b"hi"));
    w.run_for(Duration::from_millis(20));
    assert_eq!(w.server_tun.len(), 1);

    // Revocation: the session ends at once and the client is told to reconnect.
    let now = w.now;
    assert_eq!(w.server.kick(now, "alice", "RESTART,revoked"), 1);
    w.run_for(Duration::from_secs(3));
    assert!(
        w.client_events.iter().any(|e| matches!(
            e,
            ClientEvent::Disconnected {
                reason: ClientDisconnect::Restart(_)
            }
        )),
        "{:?}",
        w.client_events
    );
    assert!(w.server.clients().is_empty());
}

#[test]
fn external_auth_reject_sends_auth_failed() {
    let mut w = auth_world(22, Some(("alice", "wrong")), true);
    let (peer_id, ..) = take_auth_request(&mut w);
    let now = w.now;
    w.server.authorize(
        now,
        peer_id,
        warren_openvpn::AuthDecision::Reject { reason: None },
    );
    w.run_for(Duration::from_secs(3));
    assert!(
        w.client_events.iter().any(|e| matches!(
            e,
            ClientEvent::Disconnected {
                reason: ClientDisconnect::AuthFailed(_)
            }
        )),
        "{:?}",
        w.client_events
    );
    assert_eq!(w.server.session_count(), 0);
}

/// The authenticator owns the pool: an address it gives that the engine cannot take (not a
/// pool address here; one held by another client alike) refuses the client as an exhausted
/// pool does, and never silently becomes another address.
#[test]
fn external_auth_address_that_cannot_be_taken_is_refused() {
    let mut w = auth_world(25, None, true);
    let (peer_id, ..) = take_auth_request(&mut w);
    let now = w.now;
    let grant = warren_openvpn::AuthGrant {
        fixed_ip: Some(Ipv4Addr::new(10, 8, 1, 9)),
        ..Default::default()
    };
    let accept = warren_openvpn::AuthDecision::Accept(grant);
    w.server.authorize(now, peer_id, accept);
    w.run_for(Duration::from_secs(3));
    assert!(!w.client.is_connected());
    assert!(
        w.client_events.iter().any(|e| matches!(
            e,
            ClientEvent::Disconnected {
                reason: ClientDisconnect::AuthFailed(why)
            } if why.contains("no free address in the pool")
        )),
        "{:?}",
        w.client_events
    );
}

#[test]
fn password_only_clients_use_the_username_as_identity() {
    let mut w = auth_world(23, Some(("bob", "pw")), false);
    let (peer_id, cn, has_cert, user, pass) = take_auth_request(&mut w);
    assert_eq!(
        (cn.as_str(), has_cert, user.as_deref(), pass.as_deref()),
        ("bob", false, Some("bob"), Some("pw"))
    );
    let now = w.now;
    w.server.authorize(
        now,
        peer_id,
        warren_openvpn::AuthDecision::Accept(Default::default()),
    );
    w.connect(Duration::from_secs(10));
    assert_eq!(w.server.clients()[0].common_name, "bob");
}

#[test]
fn undecided_auth_times_out_with_the_hand_window() {
    let mut w = auth_world(24, Some(("carol", "pw")), true);
    let _ = take_auth_request(&mut w);
    w.run_for(Duration::from_secs(65));
    assert!(!w.client.is_connected());
    assert_eq!(w.server.session_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// The data plane split (multi-core drivers): the same scenarios with P_DATA_V2 opened and
// tun packets sealed by a DataPlane replica instead of the engine.
// ---------------------------------------------------------------------------------------------

#[test]
fn data_plane_carries_data_across_server_renegotiations() {
    let setup = Setup {
        server_reneg: Some(Duration::from_secs(60)),
        ..Setup::default()
    };
    let w = World::new(&setup, 42, Impair::default()).with_plane();
    renegotiation_in(w, true);
}

#[test]
fn data_plane_carries_data_across_client_renegotiations_on_a_lossy_network() {
    let setup = Setup {
        client_reneg: Some(Duration::from_secs(60)),
        ..Setup::default()
    };
    let mut w = World::new(&setup, 43, Impair::default()).with_plane();
    w.connect(Duration::from_secs(5));
    let mut sent = 0u32;
    w.net.impair = Impair {
        loss: 0.1,
        dup: 0.05,
        jitter_ms: 50,
    };
    for _ in 0..(4 * 300) {
        assert!(w.client_sends(format!("c{sent}").as_bytes()));
        assert!(w.server_sends(format!("s{sent}").as_bytes()));
        sent += 1;
        w.run_for(Duration::from_millis(250));
    }
    w.net.impair = Impair::default();
    w.run_for(Duration::from_secs(1));
    let renegs = w
        .server_events
        .iter()
        .filter(|e| matches!(e, ServerEvent::Renegotiated { .. }))
        .count();
    assert!(renegs >= 4, "{renegs} renegotiations");
    // Loss takes packets away; what arrives arrives once, and duplicates are replays.
    assert!(w.server_tun.len() as u32 > sent / 2 && w.server_tun.len() as u32 <= sent);
    let mut seen = std::collections::HashSet::new();
    assert!(
        w.server_tun.iter().all(|p| seen.insert(p.clone())),
        "a packet came out twice"
    );
    assert!(
        w.server_drops.iter().all(|d| *d == DropReason::Replay),
        "{:?}",
        w.server_drops
    );
    assert!(
        w.plane_opened > w.server_tun.len(),
        "the plane opened the data"
    );
}

#[test]
fn data_plane_drops_replays_and_unknown_peers() {
    let mut w = World::new(&Setup::default(), 3, Impair::default()).with_plane();
    w.connect(Duration::from_secs(5));
    let before = w.net.log.len();
    assert!(w.client_sends(b"once"));
    let (from, to, pkt) = w.net.log[before].clone();
    w.run_for(Duration::from_millis(50));
    assert_eq!(w.server_tun.len(), 1);
    assert_eq!(w.plane_opened, 1);
    w.deliver(from, to, pkt.clone());
    assert_eq!(w.server_drops, vec![DropReason::Replay]);
    // The same packet with another peer id fails: the peer id is authenticated.
    let mut other = pkt.clone();
    other[3] ^= 1;
    w.deliver(from, to, other);
    assert_eq!(w.server_tun.len(), 1);
    assert_eq!(w.server_drops.len(), 2);
}

#[test]
fn data_plane_keepalive_and_ping_restart_use_the_shared_activity() {
    let mut w = World::new(
        &Setup {
            ping: Some(5),
            ping_restart: Some(20),
            ..Setup::default()
        },
        4,
        Impair::default(),
    )
    .with_plane();
    w.connect(Duration::from_secs(5));
    // The client's pings reach the server through the plane only; the engine must see them.
    w.run_for(Duration::from_secs(90));
    assert!(
        w.plane_opened >= 10,
        "pings went through the plane ({})",
        w.plane_opened
    );
    assert!(w.client.is_connected());
    assert_eq!(
        w.server.clients().len(),
        1,
        "the server kept the session alive on the plane's pings"
    );
    w.net.blackhole = true;
    w.run_for(Duration::from_secs(50));
    assert!(w.server_events.iter().any(|e| matches!(
        e,
        ServerEvent::Disconnected {
            reason: DisconnectReason::PingTimeout,
            ..
        }
    )));
    assert_eq!(w.plane.peer_count(), 0, "the removal reached the plane");
}

#[test]
fn data_plane_reports_float_to_the_engine() {
    let mut w = World::new(&Setup::default(), 5, Impair::default()).with_plane();
    w.connect(Duration::from_secs(5));
    // Float: an authenticated data packet from a new address moves the session there.
    let before = w.net.log.len();
    assert!(w.client_sends(b"moving"));
    let (_, to, pkt) = w.net.log[before].clone();
    w.net.log.truncate(before);
    w.net.blackhole = true; // the copy in flight from the old address is lost
    let new_addr = addr("192.0.2.99:4000");
    w.deliver(new_addr, to, pkt);
    w.flush();
    assert_eq!(w.server_tun.len(), 1);
    assert_eq!(w.server.clients()[0].real_addr, new_addr);
    w.net.blackhole = false;
    assert!(w.server_sends(b"to the new address"));
    assert!(
        w.net.log[before..].iter().any(|(_, to, _)| *to == new_addr),
        "sealed for the new address"
    );
}

#[test]
fn data_plane_reports_exit_notify_to_the_engine() {
    let mut w = World::new(&Setup::default(), 5, Impair::default()).with_plane();
    w.connect(Duration::from_secs(5));
    // An OCC EXIT on the data channel (what clients without cc-exit send).
    let mut buf = vec![0u8; DATA_HEADROOM];
    warren_wire::encode_occ_exit(&mut buf);
    let len = buf.len() - DATA_HEADROOM;
    let range = w.client.encapsulate(w.now, &mut buf, len).expect("sealed");
    let now = w.now;
    w.net
        .send(now, addr(CLIENT), addr(SERVER), buf[range].to_vec());
    w.run_for(Duration::from_millis(100));
    assert_eq!(w.plane_opened, 1);
    assert!(w.server_events.iter().any(|e| matches!(
        e,
        ServerEvent::Disconnected {
            reason: DisconnectReason::ExitNotify,
            ..
        }
    )));
    assert!(w.server.clients().is_empty());
    assert_eq!(w.plane.peer_count(), 0, "the removal reached the plane");
}

#[test]
fn data_plane_and_engine_share_the_send_counter() {
    // The engine seals pings and two planes seal data with the same key: the ids never
    // repeat, so the client accepts every packet.
    let mut w = World::new(
        &Setup {
            ping: Some(1),
            ..Setup::default()
        },
        6,
        Impair::default(),
    );
    // A second replica (another worker) of the same state.
    w.second = Some(DataPlane::new(w.server.data_plane_config()));
    w.connect(Duration::from_secs(5));
    for i in 0..200 {
        // Every other packet is sealed by the other replica.
        w.seal_on_second = i % 2 == 0;
        assert!(w.server_sends(format!("p{i}").as_bytes()));
        w.run_for(Duration::from_millis(300));
    }
    assert_eq!(w.client_tun.len(), 200);
    assert!(w.client_drops.is_empty(), "{:?}", w.client_drops);
}

// ---------------------------------------------------------------------------------------------
// Admission: half-open floods and max-clients (issue 10, failure 3)
// ---------------------------------------------------------------------------------------------

/// The opcode of a datagram (the first byte is in clear with every wrap).
fn opcode(pkt: &[u8]) -> u8 {
    pkt[0] >> 3
}

const P_CONTROL_HARD_RESET_SERVER_V2: u8 = 8;

#[test]
fn a_flood_of_stalled_handshakes_from_one_address_cannot_lock_out_a_real_client() {
    // The attack: anyone with the tls-crypt key completes the cookie exchange 3000 times
    // from one address (new port each time) within a second and then stalls. The real
    // client connects meanwhile from another address.
    let setup = Setup::default();
    let mut w = World::new(&setup, 31, Impair::default());
    let flooder = client_config(&setup, &pki().client);
    let start = w.now;
    let mut created = 0;
    let mut most_sessions = 0;
    for i in 0..3000u16 {
        let from = SocketAddr::from(([198, 18, 0, 66], 10_000 + i));
        match w.half_open(&flooder, from, 1000 + u64::from(i)) {
            DatagramOutcome::Consumed => created += 1,
            DatagramOutcome::Dropped(DropReason::TooManyHandshakes) => {}
            other => panic!("flood packet {i}: {other:?}"),
        }
        most_sessions = most_sessions.max(w.server.session_count());
        if i % 3 == 0 {
            w.run_for(Duration::from_millis(1));
        }
    }
    assert_eq!(created, 16, "the per-source limit");
    assert!(most_sessions <= 17, "sessions held: {most_sessions}");
    w.connect(Duration::from_secs(2));
    assert!(
        w.now - start <= Duration::from_millis(1500),
        "the real client connected only after {:?}",
        w.now - start
    );
    let c = w.server.counters();
    assert_eq!(c.half_open_refused, 3000 - 16);
    assert_eq!(c.half_open_evicted, 0);
    assert_eq!(c.dropped.get(&DropReason::TooManyHandshakes), Some(&2984));
    // 2984 refusals in about a second: reported once (the next report may come 10 s later).
    let reports = w.overloads(OverloadKind::HalfOpenPerSource);
    assert_eq!(reports, vec![(addr("198.18.0.66:10016"), 0)]);
    // The stalled sessions end with the hand-window; the real client stays.
    w.run_for(Duration::from_secs(62));
    assert_eq!(w.server.half_open_count(), 0);
    assert_eq!(w.server.session_count(), 1);
    assert!(w.client.is_connected());
    // The source can open new sessions again.
    let again = SocketAddr::from(([198, 18, 0, 66], 9_999));
    assert_eq!(
        w.half_open(&flooder, again, 7),
        DatagramOutcome::Consumed,
        "a source is limited only while it holds half-open sessions"
    );
}

#[test]
fn a_flood_from_many_addresses_evicts_the_oldest_half_open_sessions() {
    // The total half-open limit is 64 here; 200 stalled handshakes from 100 addresses
    // (two each, within the per-source limit) fill it, then keep coming while the real
    // client connects: each new session evicts the oldest half-open one.
    let setup = Setup::default();
    let mut w = World::new(&setup, 32, Impair::default());
    let flooder = client_config(&setup, &pki().client);
    let from = |i: u32| SocketAddr::from(([198, 18, 1 + (i % 100) as u8, 7], 20_000 + i as u16));
    for i in 0..200u32 {
        assert_eq!(
            w.half_open(&flooder, from(i), 5000 + u64::from(i)),
            DatagramOutcome::Consumed
        );
        assert!(w.server.half_open_count() <= 64);
    }
    assert_eq!(w.server.half_open_count(), 64);
    assert_eq!(w.server.counters().half_open_evicted, 200 - 64);
    // Oldest first: the first eviction took the very first session.
    let evicted = w.overloads(OverloadKind::HalfOpenEvicted);
    assert_eq!(evicted, vec![(from(0), 0)]);
    // The flood goes on (one new address every 2 ms) while the real client connects.
    let start = w.now;
    let mut i = 200;
    while !w.connected() {
        assert!(
            w.now - start < Duration::from_secs(2),
            "the real client did not get in"
        );
        assert_eq!(
            w.half_open(&flooder, from(i), 5000 + u64::from(i)),
            DatagramOutcome::Consumed
        );
        i += 1;
        w.run_for(Duration::from_millis(2));
    }
    assert!(w.server.half_open_count() <= 64);
    assert!(w.server.session_count() <= 65);
    assert_eq!(w.server.clients().len(), 1);
}

/// A second client at its own address; returns the address.
fn add_client(w: &mut World, address: &str, seed: u64) -> SocketAddr {
    let a = addr(address);
    let c = Client::new(
        client_config(&Setup::default(), &pki().client),
        addr(SERVER),
        Box::new(TestRng::seed(seed)),
        w.now,
    )
    .unwrap();
    w.others.push((a, c));
    a
}

#[test]
fn max_clients_refuses_the_next_client_silently_and_reports_it_once() {
    let setup = Setup::default();
    let mut cfg = server_config(&setup);
    cfg.max_clients = 1;
    cfg.duplicate_cn = true; // both clients use the same certificate
    let mut w = World::new(&setup, 33, Impair::default());
    w.server = Server::new(cfg, Box::new(TestRng::seed(33)));
    w.connect(Duration::from_secs(5));

    let second = add_client(&mut w, "192.0.2.3:40001", 34);
    let log_from = w.net.log.len();
    w.run_for(Duration::from_secs(9));
    assert!(!w.others[0].1.is_connected());
    // As OpenVPN on UDP: the stateless cookie reset (sent before the limit is checked),
    // then silence.
    let to_second: Vec<u8> = w.net.log[log_from..]
        .iter()
        .filter(|(_, to, _)| *to == second)
        .map(|(_, _, p)| opcode(p))
        .collect();
    assert!(!to_second.is_empty());
    assert!(
        to_second
            .iter()
            .all(|&op| op == P_CONTROL_HARD_RESET_SERVER_V2),
        "only cookie resets go to a refused client: {to_second:?}"
    );
    let c = w.server.counters();
    assert!(
        c.max_clients_refused >= 2,
        "the client retried: {}",
        c.max_clients_refused
    );
    assert_eq!(
        c.dropped.get(&DropReason::TooManyClients),
        Some(&c.max_clients_refused)
    );
    // Reported once for all those refusals.
    assert_eq!(w.overloads(OverloadKind::MaxClients), vec![(second, 0)]);
    assert_eq!(w.server.session_count(), 1);
    assert_eq!(w.server.half_open_count(), 0);

    // The first client leaves: the second one gets in (at the latest when its handshake
    // window ends and it starts over, as a stock client does).
    w.client.close(w.now);
    let deadline = w.now + Duration::from_secs(70);
    while !w.others[0].1.is_connected() && w.now < deadline {
        w.run_for(Duration::from_millis(100));
    }
    assert!(
        w.others[0].1.is_connected(),
        "the second client got in after the first left"
    );
    assert_eq!(w.server.clients().len(), 1);
}

#[test]
fn max_clients_holds_when_handshakes_finish_together() {
    // Two clients start at once with room for one: both pass admission as half-open, the
    // one finishing key-method 2 second is refused then.
    let setup = Setup::default();
    let mut cfg = server_config(&setup);
    cfg.max_clients = 1;
    cfg.duplicate_cn = true;
    let mut w = World::new(&setup, 35, Impair::default());
    w.server = Server::new(cfg, Box::new(TestRng::seed(35)));
    add_client(&mut w, "192.0.2.3:40001", 36);
    w.run_for(Duration::from_secs(5));
    let connected =
        usize::from(w.client.is_connected()) + usize::from(w.others[0].1.is_connected());
    assert_eq!(connected, 1);
    assert_eq!(w.server.clients().len(), 1);
    assert_eq!(w.overloads(OverloadKind::MaxClients).len(), 1);
    assert!(w.server.session_count() <= 1 + w.server.half_open_count());
}

#[test]
fn a_session_awaiting_authentication_is_half_open_and_evictable() {
    // Not connected is not authenticated: a session whose login the driver has not decided
    // yet counts as half-open. Evicting it ends it with a Disconnected event (so the driver
    // forgets the request), and a late decision admits nobody.
    let mut w = auth_world(37, Some(("alice", "s3cret")), true);
    let (peer_id, ..) = take_auth_request(&mut w);
    assert_eq!(w.server.half_open_count(), 1);
    let flooder = client_config(&Setup::default(), &pki().client);
    for i in 0..64u16 {
        let from = SocketAddr::from(([198, 18, 2, 1 + i as u8], 30_000 + i));
        assert_eq!(
            w.half_open(&flooder, from, 9000 + u64::from(i)),
            DatagramOutcome::Consumed
        );
    }
    assert_eq!(w.server.half_open_count(), 64);
    assert!(
        w.server_events.iter().any(|e| matches!(
            e,
            ServerEvent::Disconnected {
                peer_id: p,
                reason: DisconnectReason::Overloaded,
                ..
            } if *p == peer_id
        )),
        "{:?}",
        w.server_events
    );
    w.server.authorize(
        w.now,
        peer_id,
        warren_openvpn::AuthDecision::Accept(Default::default()),
    );
    w.run_for(Duration::from_secs(1));
    assert!(w.server.clients().is_empty());
    assert!(!w.client.is_connected());
}

/// OpenVPN over TCP (fact sheet §9, OpenVPN mtcp.c): for a peer the driver announced as a
/// connection, the client's reset creates the session at once (no cookie), the server's
/// reset is retransmitted until acknowledged, the session never floats off the
/// connection, and it ends with the connection.
#[test]
fn stream_peer_gets_a_stateful_session_without_cookie() {
    let mut w = World::new(&Setup::default(), 21, Impair::default());
    assert!(w.server.stream_opened(addr(CLIENT)));
    assert!(w.server.is_stream(&addr(CLIENT)));
    w.flush();
    let (from, to, pkt) = w.net.pop_due(w.now + Duration::from_secs(1)).unwrap();
    w.deliver(from, to, pkt);
    assert_eq!(w.server.session_count(), 1, "state at the first reset");
    if w.server.poll_timeout().is_some_and(|t| t <= w.now) {
        w.server.handle_timeout(w.now);
    }
    let mut out = Vec::new();
    assert_eq!(w.server.poll_transmit(w.now, &mut out), Some(addr(CLIENT)));
    assert_eq!(out[0] >> 3, 8, "P_CONTROL_HARD_RESET_SERVER_V2");
    assert_eq!(w.server.poll_transmit(w.now, &mut out), None);
    // The reset is lost: the reliability layer sends it again after tls-timeout (2 s).
    let sent_at = w.now;
    let mut again = None;
    for _ in 0..10 {
        let Some(t) = w.server.poll_timeout() else {
            break;
        };
        w.now = t.max(w.now);
        w.server.handle_timeout(w.now);
        if let Some(to) = w.server.poll_transmit(w.now, &mut out) {
            again = Some((to, w.now));
            break;
        }
    }
    let (to, at) = again.expect("the reset is retransmitted");
    assert_eq!(to, addr(CLIENT));
    assert_eq!(out[0] >> 3, 8, "the reset again");
    assert!(at.saturating_duration_since(sent_at) <= Duration::from_secs(3));
    w.connect(Duration::from_secs(20));
    assert_eq!(w.server.session_count(), 1);
    assert!(w.client_sends(b"up"));
    assert!(w.server_sends(b"down"));
    w.run_for(Duration::from_millis(100));
    assert_eq!(w.server_tun.len(), 1);
    assert_eq!(w.client_tun.len(), 1);

    // A second reset on the same connection does not replace the session.
    let before = w.server.session_count();
    let mut reset = [0u8; 14];
    reset[0] = 0x38;
    reset[1] = 9;
    assert!(matches!(
        w.server.handle_datagram(w.now, addr(CLIENT), &mut reset),
        DatagramOutcome::Dropped(_)
    ));
    assert_eq!(w.server.session_count(), before);

    // An authenticated data packet from elsewhere is not a float for a TCP peer.
    let n = w.net.log.len();
    assert!(w.client_sends(b"elsewhere"));
    let (_, to, pkt) = w.net.log[n].clone();
    w.net.blackhole = true;
    let drops = w.server_drops.len();
    w.deliver(addr("192.0.2.99:4000"), to, pkt);
    w.flush();
    assert_eq!(w.server.clients()[0].real_addr, addr(CLIENT));
    assert_eq!(
        w.server_tun.len(),
        1,
        "not opened: only the connection carries it"
    );
    assert_eq!(w.server_drops[drops..], [DropReason::NoSession]);
    w.net.blackhole = false;

    // The connection ends: so does the session, and its data state.
    w.server.stream_closed(w.now, addr(CLIENT));
    w.flush();
    assert_eq!(w.server.session_count(), 0);
    assert!(!w.server.is_stream(&addr(CLIENT)));
    assert!(w.server_events.iter().any(|e| matches!(
        e,
        ServerEvent::Disconnected {
            reason: DisconnectReason::ConnectionClosed,
            ..
        }
    )));
    assert!(!w.server_sends(b"nobody"), "the plane forgot the peer");
}

/// A UDP session's address cannot become a TCP peer's, and a handshake that never finishes
/// on a connection ends with a `StreamEnded` event (the driver closes the connection).
#[test]
fn stream_admission_and_end_event() {
    let setup = Setup {
        wrap: Wrap::None,
        ..Setup::default()
    };
    let mut w = World::new(&setup, 22, Impair::default());
    w.connect(Duration::from_secs(10));
    assert!(
        !w.server.stream_opened(addr(CLIENT)),
        "a UDP session lives there"
    );
    let other = addr("192.0.2.3:5000");
    assert!(w.server.stream_opened(other));
    // A reset with a bad message id is refused; a good one creates the session.
    let mut reset = [0u8; 14];
    reset[0] = 0x38;
    reset[1] = 7;
    reset[13] = 1;
    assert!(matches!(
        w.server.handle_datagram(w.now, other, &mut reset),
        DatagramOutcome::Dropped(_)
    ));
    reset[13] = 0;
    assert_eq!(
        w.server.handle_datagram(w.now, other, &mut reset),
        DatagramOutcome::Consumed
    );
    assert_eq!(w.server.session_count(), 2);
    // Nobody answers: the hand-window (60 s) ends it.
    w.net.blackhole = true;
    w.run_for(Duration::from_secs(70));
    assert!(
        w.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::StreamEnded { addr } if *addr == other)),
        "{:?}",
        w.server_events
    );
}

// ---------------------------------------------------------------------------------------------
// IPv6 inside the tunnel
// ---------------------------------------------------------------------------------------------

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// `server-ipv6 fd00:8::/64` as warren-config expands it, with the pushes of the lab server
/// in openvpn-ops.md §3.2 and `keepalive 10 120`.
fn dual_stack() -> Setup {
    Setup {
        ipv6: Some(TunnelIpv6 {
            local: v6("fd00:8::1"),
            netbits: 64,
            pool: Some((v6("fd00:8::1000"), 65536)),
            push_tun_ipv6: true,
        }),
        push: Some(vec![
            "route-ipv6 fd00:99::/64".into(),
            "redirect-gateway ipv6 !ipv4".into(),
            "route 192.168.77.0 255.255.255.0".into(),
        ]),
        ping: Some(10),
        ping_restart: Some(120),
        ..Setup::default()
    }
}

fn pushed(w: &World) -> warren_openvpn::PushedConfig {
    w.client_events
        .iter()
        .find_map(|e| match e {
            ClientEvent::Connected { config, .. } => Some(config.as_ref().clone()),
            _ => None,
        })
        .expect("connected")
}

fn ipv6_udp(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut p = vec![0u8; 40 + len];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    p[6] = 17;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[44..46].copy_from_slice(&(len as u16).to_be_bytes());
    p[48..].copy_from_slice(payload);
    p
}

impl World {
    /// Puts `pkt` into the client's tun; whether it was sent.
    fn client_tun_in(&mut self, pkt: &[u8]) -> Result<(), DropReason> {
        let mut buf = vec![0u8; DATA_HEADROOM + pkt.len()];
        buf[DATA_HEADROOM..].copy_from_slice(pkt);
        let r = self.client.encapsulate(self.now, &mut buf, pkt.len())?;
        self.net
            .send(self.now, addr(CLIENT), addr(SERVER), buf[r].to_vec());
        Ok(())
    }

    /// Puts `pkt` into the server's tun; whether it was sealed for the client.
    fn server_tun_in(&mut self, pkt: &[u8]) -> bool {
        let mut buf = vec![0u8; DATA_HEADROOM + pkt.len()];
        buf[DATA_HEADROOM..].copy_from_slice(pkt);
        match self.plane.seal(self.now, &mut buf, pkt.len()) {
            EncapOutcome::Send { dst, range } => {
                self.net
                    .send(self.now, addr(SERVER), dst, buf[range].to_vec());
                true
            }
            EncapOutcome::Dropped(_) => false,
        }
    }
}

/// `topology net30` (with and without client-to-client) and `topology p2p`: the replies
/// the stock 2.6.14 server sent a stock client for `server 10.8.0.0 255.255.255.0`,
/// `keepalive 10 60` and nothing pushed (captured by the warren-cli suite `topology::`
/// from the client's verb 4 log; with warren's protocol-flags, which offer no
/// dyn-tls-crypt). The client reads `ifconfig LOCAL REMOTE` as a point-to-point address.
#[test]
fn net30_and_p2p_push_replies_match_stock() {
    use warren_openvpn::pool::Topology;
    let tail = "peer-id 0,cipher AES-256-GCM,protocol-flags cc-exit tls-ekm,tun-mtu 1500";
    for (topology, c2c, want) in [
        (
            Topology::Net30,
            false,
            "route 10.8.0.1,topology net30,ping 10,ping-restart 60,ifconfig 10.8.0.6 10.8.0.5,",
        ),
        (
            Topology::Net30,
            true,
            "route 10.8.0.0 255.255.255.0,topology net30,ping 10,ping-restart 60,\
             ifconfig 10.8.0.6 10.8.0.5,",
        ),
        (
            Topology::P2p,
            false,
            "topology p2p,ping 10,ping-restart 60,ifconfig 10.8.0.4 10.8.0.1,",
        ),
    ] {
        let setup = Setup {
            topology,
            client_to_client: c2c,
            push: Some(Vec::new()),
            ..Setup::default()
        };
        let mut w = World::new(&setup, 64, Impair::default());
        w.connect(Duration::from_secs(5));
        let p = pushed(&w);
        assert_eq!(p.raw.join(","), format!("{want}{tail}"), "{topology:?}");
        let (local, peer) = if topology == Topology::P2p {
            (4, 1)
        } else {
            (6, 5)
        };
        let ip = |d| Ipv4Addr::new(10, 8, 0, d);
        assert_eq!(p.ifconfig, Some((ip(local), ip(peer))));
        assert!(!p.topology_subnet);
        assert_eq!(w.server.clients()[0].vpn_ip, Some(ip(local)));
    }
}

#[test]
fn dual_stack_push_reply_has_the_stock_order() {
    let mut w = World::new(&dual_stack(), 61, Impair::default());
    w.connect(Duration::from_secs(5));
    let p = pushed(&w);
    // openvpn-ops.md §3.2, the stock 2.6.14 server's reply to the same config (without the
    // ccd echo and with warren's protocol-flags, which offer no dyn-tls-crypt).
    assert_eq!(
        p.raw.join(","),
        "route-ipv6 fd00:99::/64,redirect-gateway ipv6 !ipv4,route 192.168.77.0 255.255.255.0,\
         tun-ipv6,route-gateway 10.8.0.1,topology subnet,ping 10,ping-restart 120,\
         ifconfig-ipv6 fd00:8::1000/64 fd00:8::1,ifconfig 10.8.0.2 255.255.255.0,peer-id 0,\
         cipher AES-256-GCM,protocol-flags cc-exit tls-ekm,tun-mtu 1500"
    );
    assert_eq!(
        p.ifconfig_ipv6,
        Some((v6("fd00:8::1000"), 64, v6("fd00:8::1")))
    );
    let status = w.server.clients();
    assert_eq!(status[0].vpn_ip6, Some(v6("fd00:8::1000")));
    assert!(w.server_events.iter().any(|e| matches!(
        e,
        ServerEvent::Connected { vpn_ip6: Some(a), .. } if *a == v6("fd00:8::1000")
    )));

    // A /112 server without pushes of its own (the second reply of §3.2).
    let mut setup = dual_stack();
    setup.ipv6 = Some(TunnelIpv6 {
        local: v6("fd00:12::1"),
        netbits: 112,
        pool: Some((v6("fd00:12::2"), 65534)),
        push_tun_ipv6: true,
    });
    setup.push = Some(Vec::new());
    let mut w = World::new(&setup, 62, Impair::default());
    w.connect(Duration::from_secs(5));
    assert_eq!(
        pushed(&w).raw.join(","),
        "tun-ipv6,route-gateway 10.8.0.1,topology subnet,ping 10,ping-restart 120,\
         ifconfig-ipv6 fd00:12::2/112 fd00:12::1,ifconfig 10.8.0.2 255.255.255.0,peer-id 0,\
         cipher AES-256-GCM,protocol-flags cc-exit tls-ekm,tun-mtu 1500"
    );

    // IPv4 only: no IPv6 option, the config's pushes still first.
    let mut w = World::new(&Setup::default(), 63, Impair::default());
    w.connect(Duration::from_secs(5));
    let raw = pushed(&w).raw.join(",");
    assert!(
        raw.starts_with(
            "route 192.168.77.0 255.255.255.0,dhcp-option DNS 10.8.0.1,route-gateway 10.8.0.1,"
        ),
        "{raw}"
    );
    assert!(!raw.contains("ipv6"), "{raw}");
}

#[test]
fn ipv6_data_both_ways_with_anti_spoofing() {
    let mut w = World::new(&dual_stack(), 64, Impair::default());
    w.connect(Duration::from_secs(5));
    let (me, server) = (v6("fd00:8::1000"), v6("fd00:8::1"));
    w.client_tun_in(&ipv6_udp(me, server, b"up6")).unwrap();
    assert!(w.server_tun_in(&ipv6_udp(server, me, b"down6")));
    assert!(
        !w.server_tun_in(&ipv6_udp(server, v6("fd00:8::1001"), b"nobody")),
        "no client holds fd00:8::1001"
    );
    // Spoofed and link-local sources are sent by the client but refused by the server.
    w.client_tun_in(&ipv6_udp(v6("fd00:8::1001"), server, b"spoof"))
        .unwrap();
    w.client_tun_in(&ipv6_udp(v6("fe80::1"), v6("ff02::2"), b"rs"))
        .unwrap();
    w.run_for(Duration::from_millis(200));
    assert_eq!(w.server_tun.len(), 1, "{:?}", w.server_drops);
    assert_eq!(&w.server_tun[0][48..], b"up6");
    assert_eq!(w.client_tun.len(), 1);
    assert_eq!(&w.client_tun[0][48..], b"down6");
    assert_eq!(
        w.server_drops,
        [DropReason::BadSource, DropReason::LinkLocalSource]
    );
    // IPv4 still flows next to it.
    assert!(w.client_sends(b"up4") && w.server_sends(b"down4"));
    w.run_for(Duration::from_millis(200));
    assert_eq!((w.server_tun.len(), w.client_tun.len()), (2, 2));
}

#[test]
fn block_ipv6_answers_from_the_pushed_remote() {
    let mut setup = dual_stack();
    setup.push = Some(vec!["block-ipv6".into()]);
    let mut w = World::new(&setup, 65, Impair::default());
    w.connect(Duration::from_secs(5));
    let pkt = ipv6_udp(v6("fd00:8::1000"), v6("2001:db8::1"), b"leak?");
    assert_eq!(w.client_tun_in(&pkt), Err(DropReason::Ipv6Blocked));
    let mut replies = Vec::new();
    w.client.drain_tun_replies(|r| replies.push(r.to_vec()));
    assert_eq!(replies.len(), 1);
    let r = &replies[0];
    assert_eq!(r.len(), 48 + pkt.len());
    assert_eq!((r[6], r[40], r[41]), (58, 1, 0), "ICMPv6 no route");
    assert_eq!(
        &r[8..24],
        &v6("fd00:8::1").octets(),
        "from the pushed remote"
    );
    assert_eq!(&r[24..40], &v6("fd00:8::1000").octets());
    assert_eq!(&r[48..], &pkt[..]);
    let mut again = Vec::new();
    w.client.drain_tun_replies(|r| again.push(r.len()));
    assert!(again.is_empty(), "drained once");
    // IPv4 is not affected.
    assert!(w.client_sends(b"up4"));
    w.run_for(Duration::from_millis(100));
    assert_eq!(w.server_tun.len(), 1);
}

/// `block-ipv6` on a server (the man page's example: no IPv6 on the server): every IPv6
/// packet from a client is answered over the link with ICMPv6 "no route" from `fe80::7`.
#[test]
fn server_block_ipv6_answers_over_the_link() {
    let setup = Setup {
        block_ipv6: Some(v6("fe80::7")),
        ..Setup::default()
    };
    let mut w = World::new(&setup, 66, Impair::default());
    w.connect(Duration::from_secs(5));
    let pkt = ipv6_udp(v6("fd15:53b6:dead::2"), v6("2001:db8::1"), b"leak?");
    w.client_tun_in(&pkt).unwrap();
    w.run_for(Duration::from_millis(200));
    assert!(w.server_tun.is_empty(), "nothing reaches the server's tun");
    assert_eq!(w.client_tun.len(), 1, "server drops: {:?}", w.server_drops);
    let r = &w.client_tun[0];
    assert_eq!((r[0] >> 4, r[6], r[40], r[41]), (6, 58, 1, 0));
    assert_eq!(&r[8..24], &v6("fe80::7").octets());
    assert_eq!(&r[24..40], &v6("fd15:53b6:dead::2").octets());
    assert_eq!(&r[48..], &pkt[..]);
    // IPv4 still flows.
    assert!(w.client_sends(b"up4"));
    w.run_for(Duration::from_millis(100));
    assert_eq!(w.server_tun.len(), 1);
}

/// The routes a connected client was pushed.
fn pushed_routes(w: &World) -> Vec<Ipv4Addr> {
    w.client_events
        .iter()
        .find_map(|e| match e {
            ClientEvent::Connected { config, .. } => {
                Some(config.routes.iter().map(|r| r.network).collect())
            }
            _ => None,
        })
        .expect("connected")
}

#[test]
fn client_networks_and_push_reset_shape_the_push_reply() {
    for (seed, push_reset) in [(31, false), (32, true)] {
        let mut w = auth_world(seed, None, true);
        let setup = Setup::default();
        let mut scfg = server_config(&setup);
        scfg.external_auth = true;
        scfg.push = vec![
            "route 192.168.77.0 255.255.255.0".into(),
            "route 192.168.88.0 255.255.255.0".into(),
        ];
        w.server = Server::new(scfg, Box::new(TestRng::seed(seed ^ 0x77)));
        let (peer_id, ..) = take_auth_request(&mut w);
        let now = w.now;
        let grant = warren_openvpn::AuthGrant {
            push: vec!["route 192.168.99.0 255.255.255.0".into()],
            push_reset,
            iroutes: vec![warren_openvpn::Iroute::v4(Ipv4Addr::new(192, 168, 77, 0), 24).unwrap()],
            ..Default::default()
        };
        w.server
            .authorize(now, peer_id, warren_openvpn::AuthDecision::Accept(grant));
        w.connect(Duration::from_secs(10));
        let routes = pushed_routes(&w);
        let has = |n: u8| routes.contains(&Ipv4Addr::new(192, 168, n, 0));
        assert!(!has(77), "its own network is never pushed: {routes:?}");
        assert!(has(99), "its own pushes: {routes:?}");
        assert_eq!(
            has(88),
            !push_reset,
            "push-reset drops the server's: {routes:?}"
        );
    }
}

/// Access rules: from the grant, replaced live with `set_access` (republished to the data
/// plane), and the static rules for identities whose grant brings none.
#[test]
fn access_rules_from_the_grant_and_replaced_live() {
    use std::sync::Arc;
    use warren_openvpn::access::{AccessEntry, AccessList, Action};
    let deny_server = || {
        AccessList(vec![AccessEntry {
            action: Action::Deny,
            rule: "10.8.0.1".parse().unwrap(),
        }])
        .compile()
        .map(Arc::new)
    };
    let mut w = auth_world(26, None, true);
    let (peer_id, ..) = take_auth_request(&mut w);
    let now = w.now;
    w.server.authorize(
        now,
        peer_id,
        warren_openvpn::AuthDecision::Accept(warren_openvpn::AuthGrant {
            identity: Some("alice".into()),
            access: deny_server(),
            ..Default::default()
        }),
    );
    w.connect(Duration::from_secs(10));
    assert!(w.client_sends(b"refused"));
    w.run_for(Duration::from_millis(20));
    assert!(w.server_tun.is_empty(), "the grant's rules hold");
    assert_eq!(w.server.set_access("bob", None), 0, "no session of bob");
    assert_eq!(w.server.set_access("alice", None), 1);
    w.run_for(Duration::from_millis(20));
    assert!(w.client_sends(b"allowed"));
    w.run_for(Duration::from_millis(20));
    assert_eq!(w.server_tun.len(), 1, "lifted without reconnecting");
    assert_eq!(w.server.set_access("alice", deny_server()), 1);
    w.run_for(Duration::from_millis(20));
    assert!(w.client_sends(b"refused again"));
    w.run_for(Duration::from_millis(20));
    assert_eq!(w.server_tun.len(), 1);

    // Static rules (warren-access) apply when the grant has none.
    let mut w = auth_world(27, None, true);
    let mut rules = std::collections::HashMap::new();
    rules.insert("carol".to_owned(), deny_server().unwrap());
    w.server.set_static_access(rules);
    let (peer_id, ..) = take_auth_request(&mut w);
    let now = w.now;
    w.server.authorize(
        now,
        peer_id,
        warren_openvpn::AuthDecision::Accept(warren_openvpn::AuthGrant {
            identity: Some("carol".into()),
            ..Default::default()
        }),
    );
    w.connect(Duration::from_secs(10));
    assert!(w.client_sends(b"refused"));
    w.run_for(Duration::from_millis(20));
    assert!(w.server_tun.is_empty(), "carol's static rules hold");
}
