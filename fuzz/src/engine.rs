//! The stateful engine target: a real [`Server`] (with its [`DataPlane`] replica, as the
//! driver runs it) and a real [`Client`] that knows the keys, joined by a network the input
//! controls. Each input byte is an operation: deliver, drop, duplicate, reorder, corrupt or
//! replay a datagram, inject raw bytes from the client's or a stranger's address, let time
//! pass, send data either way, the server's commands (authorize, kick, shutdown) and TCP
//! connection events (the client's address opened or closed as a stream). The
//! peer is a real client, so the fuzzer reaches the states behind the handshake (key-method
//! 2, push, data, renegotiation, exit-notify) instead of bouncing off the MAC.
//!
//! Checked on every run, besides "no panic, no livelock":
//! * no data datagram is accepted twice (replay) by either side;
//! * the server never holds more connected clients than `max_clients`, nor more sessions
//!   than that plus the half-open limit;
//! * every opened payload range lies inside its buffer.
//!
//! The TLS library draws its own randomness, so two runs of one input are not bit-identical;
//! the operations (and thus which paths are reached) are.

use std::collections::{HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use warren_core::{Instant, PeerId, TestRng};
use warren_crypto::{CipherKind, Digest, KeyDirection, StaticKey};
use warren_openvpn::dataplane::DataPlane;
use warren_openvpn::tls::{self, CertRole, ClientTlsOptions, ServerTlsOptions};
use warren_openvpn::{
    AuthDecision, AuthGrant, Client, ClientConfig, ClientDatagram, ClientEvent, DATA_HEADROOM,
    DatagramOutcome, EncapOutcome, HalfOpenLimits, KeyDerivation, Server, ServerConfig,
    ServerEvent, WrapConfig,
};

const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 1194);
const CLIENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 40000);
const MAX_CLIENTS: usize = 4;
const HALF_OPEN_TOTAL: usize = 3;
/// Datagrams held per direction; more are dropped (a bounded network).
const QUEUE_CAP: usize = 256;
/// Operations per input; the rest of a longer input is ignored.
const MAX_OPS: usize = 2048;

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.distinguished_name = rcgen::DistinguishedName::new();
        ca.distinguished_name.push(DnType::CommonName, "Fuzz CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_pem = ca.self_signed(&ca_key).expect("CA cert").pem();
        let issuer = Issuer::from_params(&ca, &ca_key);
        let leaf = |cn: &str, eku: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("leaf key");
            let mut p = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.is_ca = IsCa::ExplicitNoCa;
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            p.extended_key_usages = vec![eku];
            let cert = p.signed_by(&key, &issuer).expect("leaf cert");
            (cert.pem(), key.serialize_pem())
        };
        Pki {
            ca: ca_pem,
            server: leaf("server", ExtendedKeyUsagePurpose::ServerAuth),
            client: leaf("client", ExtendedKeyUsagePurpose::ClientAuth),
        }
    })
}

/// The setup the first input byte chooses: wrapping, cipher, key derivation, external
/// auth, renegotiation.
#[derive(Clone, Copy)]
struct Setup(u8);

impl Setup {
    fn wraps(self) -> (WrapConfig, WrapConfig) {
        let key = StaticKey::generate(&mut TestRng::seed(0xf022));
        match self.0 % 3 {
            0 => (
                WrapConfig::TlsCrypt { key: key.clone() },
                WrapConfig::TlsCrypt { key },
            ),
            1 => (
                WrapConfig::TlsAuth {
                    key: key.clone(),
                    digest: Digest::Sha256,
                    direction: Some(KeyDirection::Normal),
                },
                WrapConfig::TlsAuth {
                    key,
                    digest: Digest::Sha256,
                    direction: Some(KeyDirection::Inverse),
                },
            ),
            _ => (WrapConfig::None, WrapConfig::None),
        }
    }

    fn cipher(self) -> CipherKind {
        match (self.0 / 3) % 3 {
            0 => CipherKind::Aes256Gcm,
            1 => CipherKind::Aes128Gcm,
            _ => CipherKind::ChaCha20Poly1305,
        }
    }

    fn key_derivation(self) -> KeyDerivation {
        if self.0 & 0x20 != 0 {
            KeyDerivation::ForcePrf
        } else {
            KeyDerivation::Auto
        }
    }

    fn external_auth(self) -> bool {
        self.0 & 0x40 != 0
    }

    fn reneg(self) -> Option<Duration> {
        (self.0 & 0x80 != 0).then_some(Duration::from_secs(20))
    }
}

fn server_config(s: Setup) -> ServerConfig {
    let p = pki();
    let tls = tls::server_config(
        &p.ca,
        &p.server.0,
        &p.server.1,
        &ServerTlsOptions {
            remote_cert_tls: Some(CertRole::Client),
            ..Default::default()
        },
    )
    .expect("server TLS config");
    ServerConfig {
        tls,
        wrap: s.wraps().0,
        network: Ipv4Addr::new(10, 8, 0, 0),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        topology: Default::default(),
        ipv6: None,
        block_ipv6: None,
        push: vec!["route 192.168.77.0 255.255.255.0".into()],
        ping: Some(Duration::from_secs(10)),
        ping_restart: Some(Duration::from_secs(60)),
        push_ping: Some(10),
        push_ping_restart: Some(30),
        data_ciphers: vec![s.cipher()],
        data_ciphers_fallback: None,
        reneg: s.reneg(),
        hand_window: Duration::from_secs(60),
        tls_timeout: Duration::from_secs(2),
        client_to_client: s.0 & 0x10 != 0,
        duplicate_cn: s.0 & 0x08 != 0,
        max_clients: MAX_CLIENTS,
        // Small, so strangers and reconnects reach the refusal and eviction paths.
        half_open: HalfOpenLimits {
            per_source: 2,
            total: HALF_OPEN_TOTAL,
        },
        explicit_exit_notify: true,
        tun_mtu: 1500,
        mssfix: Some(1450),
        key_derivation: s.key_derivation(),
        external_auth: s.external_auth(),
        unix_time_at_zero: 1_790_000_000,
    }
}

fn client_config(s: Setup) -> ClientConfig {
    let p = pki();
    let tls = tls::client_config(
        &p.ca,
        Some(&p.client.0),
        Some(&p.client.1),
        &ClientTlsOptions {
            remote_cert_tls: Some(CertRole::Server),
            ..Default::default()
        },
    )
    .expect("client TLS config");
    ClientConfig {
        tls,
        wrap: s.wraps().1,
        data_ciphers: vec![
            CipherKind::Aes256Gcm,
            CipherKind::Aes128Gcm,
            CipherKind::ChaCha20Poly1305,
        ],
        ping: None,
        ping_restart: None,
        reneg: s.reneg().map(|d| d + Duration::from_secs(7)),
        hand_window: Duration::from_secs(60),
        tls_timeout: Duration::from_secs(2),
        key_derivation: s.key_derivation(),
        credentials: None,
        explicit_exit_notify: true,
        tun_mtu: 1500,
        mssfix: Some(1450),
        block_ipv6: false,
        unix_time_at_zero: 1_790_000_000,
    }
}

/// Reads the input as a stream of operation bytes and their arguments.
struct Ops<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Ops<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn arg(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let end = (self.pos + n).min(self.data.len());
        let s = &self.data[self.pos..end];
        self.pos = end;
        s
    }
}

struct World {
    now: Instant,
    setup: Setup,
    server: Server,
    plane: DataPlane,
    client: Client,
    client_seed: u64,
    to_server: VecDeque<(SocketAddr, Vec<u8>)>,
    to_client: VecDeque<Vec<u8>>,
    /// Data datagrams each side accepted, to catch a replay.
    server_accepted: HashSet<Vec<u8>>,
    client_accepted: HashSet<Vec<u8>>,
    /// Recent datagrams to the server, for replays.
    history: VecDeque<(SocketAddr, Vec<u8>)>,
    pending_auth: VecDeque<PeerId>,
    /// The client's tunnel address, from its push.
    client_ip: Ipv4Addr,
}

impl World {
    fn new(setup: Setup) -> World {
        let now = Instant::from_secs(1000);
        let server = Server::new(server_config(setup), Box::new(TestRng::seed(0x5e)));
        let plane = DataPlane::new(server.data_plane_config());
        let client = Client::new(
            client_config(setup),
            SERVER,
            Box::new(TestRng::seed(1)),
            now,
        )
        .expect("client setup");
        World {
            now,
            setup,
            server,
            plane,
            client,
            client_seed: 1,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            server_accepted: HashSet::new(),
            client_accepted: HashSet::new(),
            history: VecDeque::new(),
            pending_auth: VecDeque::new(),
            client_ip: Ipv4Addr::new(10, 8, 0, 2),
        }
    }

    /// Moves the engine's published data state to the replica and its events back, as the
    /// driver does after every input.
    fn sync(&mut self) {
        for _ in 0..64 {
            let mut moved = false;
            while let Some(c) = self.server.poll_data_change() {
                self.plane.apply(c);
                moved = true;
            }
            while let Some(e) = self.plane.poll_event() {
                self.server.handle_data_event(self.now, e);
                moved = true;
            }
            if !moved {
                return;
            }
        }
        panic!("engine and data plane keep feeding each other");
    }

    /// Collects both sides' output into the network, and the server's events.
    fn flush(&mut self) {
        self.sync();
        let mut out = Vec::new();
        for _ in 0..1024 {
            let Some(to) = self.server.poll_transmit(self.now, &mut out) else {
                break;
            };
            if to == CLIENT && self.to_client.len() < QUEUE_CAP {
                self.to_client.push_back(out.clone());
            }
        }
        for _ in 0..1024 {
            let Some(to) = self.client.poll_transmit(self.now, &mut out) else {
                break;
            };
            assert_eq!(to, SERVER, "the client sends only to its server");
            if self.to_server.len() < QUEUE_CAP {
                self.to_server.push_back((CLIENT, out.clone()));
            }
        }
        self.sync();
        while let Some(e) = self.server.poll_event() {
            if let ServerEvent::AuthRequest { peer_id, .. } = e {
                self.pending_auth.push_back(peer_id);
            }
        }
        while let Some(e) = self.client.poll_event() {
            if let ClientEvent::Connected { config, .. } = e
                && let Some((ip, _)) = config.ifconfig
            {
                self.client_ip = ip;
            }
        }
        assert!(
            self.server.clients().len() <= MAX_CLIENTS,
            "more clients than max-clients"
        );
        assert!(
            self.server.session_count() <= MAX_CLIENTS + HALF_OPEN_TOTAL,
            "more sessions than max-clients plus the half-open limit"
        );
    }

    fn deliver_to_server(&mut self, from: SocketAddr, mut pkt: Vec<u8>) {
        if self.history.len() == 32 {
            self.history.pop_front();
        }
        self.history.push_back((from, pkt.clone()));
        let original = pkt.clone();
        let outcome = if DataPlane::is_data(&pkt) {
            self.plane.open(self.now, from, &mut pkt)
        } else {
            self.server.handle_datagram(self.now, from, &mut pkt)
        };
        if let DatagramOutcome::Tun(r) | DatagramOutcome::ClientToClient(r) = outcome {
            assert!(
                r.end <= pkt.len() && r.start <= r.end,
                "range out of bounds"
            );
            assert!(
                self.server_accepted.insert(original),
                "the server accepted a data datagram twice (replay)"
            );
        }
    }

    fn deliver_to_client(&mut self, mut pkt: Vec<u8>) {
        let original = pkt.clone();
        if let ClientDatagram::Tun(r) = self.client.handle_datagram(self.now, SERVER, &mut pkt) {
            assert!(
                r.end <= pkt.len() && r.start <= r.end,
                "range out of bounds"
            );
            assert!(
                self.client_accepted.insert(original),
                "the client accepted a data datagram twice (replay)"
            );
        }
    }

    fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        // Step through the timers in between, as the driver's wheel does.
        for _ in 0..256 {
            let next = [self.server.poll_timeout(), self.client.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .filter(|t| *t <= until);
            let Some(t) = next else { break };
            self.now = t.max(self.now);
            if self.server.poll_timeout().is_some_and(|t| t <= self.now) {
                self.server.handle_timeout(self.now);
            }
            if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
                self.client.handle_timeout(self.now);
            }
            self.flush();
        }
        self.now = until.max(self.now);
    }

    /// Delivers everything in flight both ways until quiet (the easy path to a connected
    /// session).
    fn settle(&mut self) {
        for _ in 0..64 {
            if self.to_server.is_empty() && self.to_client.is_empty() {
                return;
            }
            while let Some((from, p)) = self.to_server.pop_front() {
                self.deliver_to_server(from, p);
            }
            while let Some(p) = self.to_client.pop_front() {
                self.deliver_to_client(p);
            }
            self.flush();
        }
    }

    fn ip_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let total = 28 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        p[28..].copy_from_slice(payload);
        p
    }

    fn client_sends(&mut self, dst_host: u8, payload: &[u8]) {
        let pkt = Self::ip_packet(self.client_ip, Ipv4Addr::new(10, 8, 0, dst_host), payload);
        let mut buf = vec![0u8; DATA_HEADROOM + pkt.len()];
        buf[DATA_HEADROOM..].copy_from_slice(&pkt);
        if let Ok(r) = self.client.encapsulate(self.now, &mut buf, pkt.len())
            && self.to_server.len() < QUEUE_CAP
        {
            self.to_server.push_back((CLIENT, buf[r].to_vec()));
        }
    }

    /// `dst_host` 0 means the client's own address.
    fn server_sends(&mut self, dst_host: u8, payload: &[u8]) {
        let dst = if dst_host == 0 {
            self.client_ip
        } else {
            Ipv4Addr::new(10, 8, 0, dst_host)
        };
        let pkt = Self::ip_packet(Ipv4Addr::new(10, 8, 0, 1), dst, payload);
        let mut buf = vec![0u8; DATA_HEADROOM + pkt.len()];
        buf[DATA_HEADROOM..].copy_from_slice(&pkt);
        if let EncapOutcome::Send { dst, range } = self.plane.seal(self.now, &mut buf, pkt.len())
            && dst == CLIENT
            && self.to_client.len() < QUEUE_CAP
        {
            self.to_client.push_back(buf[range].to_vec());
        }
    }
}

fn corrupt(pkt: &mut [u8], at: u8, xor: u8) {
    if !pkt.is_empty() {
        let i = usize::from(at) % pkt.len();
        pkt[i] ^= xor.max(1);
    }
}

/// The stateful target: see the module documentation.
pub fn engine(data: &[u8]) {
    run_engine(data);
}

/// What a run of [`engine`] reached, so tests can check the seeds get past the handshake.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineRun {
    /// The client was connected (push applied) at some point.
    pub connected: bool,
    /// Data datagrams the server and the client opened.
    pub server_opened: usize,
    pub client_opened: usize,
}

/// Runs one input through the stateful target and says how far it got.
pub fn run_engine(data: &[u8]) -> EngineRun {
    let mut reached = EngineRun::default();
    let Some((&setup, rest)) = data.split_first() else {
        return reached;
    };
    let mut w = World::new(Setup(setup));
    w.flush();
    let mut ops = Ops { data: rest, pos: 0 };
    for _ in 0..MAX_OPS {
        let Some(op) = ops.byte() else { break };
        match op % 25 {
            0 | 1 => {
                if let Some((from, p)) = w.to_server.pop_front() {
                    w.deliver_to_server(from, p);
                }
            }
            2 | 3 => {
                if let Some(p) = w.to_client.pop_front() {
                    w.deliver_to_client(p);
                }
            }
            4 => w.settle(),
            5 => {
                w.to_server.pop_front();
            }
            6 => {
                w.to_client.pop_front();
            }
            7 => {
                if let Some(p) = w.to_server.front().cloned()
                    && w.to_server.len() < QUEUE_CAP
                {
                    w.to_server.push_back(p);
                }
            }
            8 => {
                if let Some(p) = w.to_client.front().cloned()
                    && w.to_client.len() < QUEUE_CAP
                {
                    w.to_client.push_back(p);
                }
            }
            9 => {
                if w.to_server.len() >= 2 {
                    w.to_server.swap(0, 1);
                }
                if w.to_client.len() >= 2 {
                    w.to_client.swap(0, 1);
                }
            }
            10 => {
                let (at, xor) = (ops.arg(), ops.arg());
                if let Some((_, p)) = w.to_server.front_mut() {
                    corrupt(p, at, xor);
                }
            }
            11 => {
                let (at, xor) = (ops.arg(), ops.arg());
                if let Some(p) = w.to_client.front_mut() {
                    corrupt(p, at, xor);
                }
            }
            12 => {
                // Let time pass: up to 255 × 250 ms, through every timer on the way.
                let steps = u64::from(ops.arg());
                w.advance(Duration::from_millis(250 * steps));
            }
            13 => {
                let n = usize::from(ops.arg());
                let raw = ops.bytes(n).to_vec();
                w.deliver_to_server(CLIENT, raw);
            }
            14 => {
                // A stranger: another address, same bytes as something the client sent
                // (a spoofed or roaming source), or raw input.
                let port = 1024 + u16::from(ops.arg());
                let from = SocketAddr::new(Ipv4Addr::new(198, 51, 100, ops.arg()).into(), port);
                let pkt = match w.history.back() {
                    Some((_, p)) if ops.arg() & 1 == 0 => p.clone(),
                    _ => {
                        let n = usize::from(ops.arg());
                        ops.bytes(n).to_vec()
                    }
                };
                w.deliver_to_server(from, pkt);
            }
            15 => {
                // Replay something the server already saw, from where it came.
                let i = usize::from(ops.arg());
                if !w.history.is_empty() {
                    let (from, p) = w.history[i % w.history.len()].clone();
                    w.deliver_to_server(from, p);
                }
            }
            16 => {
                let dst = ops.arg();
                let n = usize::from(ops.arg());
                let payload = ops.bytes(n).to_vec();
                w.client_sends(dst, &payload);
            }
            17 => {
                let dst = ops.arg();
                let n = usize::from(ops.arg());
                let payload = ops.bytes(n).to_vec();
                w.server_sends(dst, &payload);
            }
            18 => {
                if let Some(peer_id) = w.pending_auth.pop_front() {
                    let decision = if ops.arg() & 1 == 0 {
                        AuthDecision::Accept(AuthGrant {
                            fixed_ip: (ops.arg() & 1 == 0).then_some(Ipv4Addr::new(10, 8, 0, 9)),
                            ..Default::default()
                        })
                    } else {
                        AuthDecision::Reject {
                            reason: Some("fuzz".into()),
                        }
                    };
                    w.server.authorize(w.now, peer_id, decision);
                } else {
                    // A decision for a peer that does not exist (or no longer does).
                    let peer_id = PeerId::new(u32::from(ops.arg())).expect("8 bits fit a peer id");
                    w.server
                        .authorize(w.now, peer_id, AuthDecision::Reject { reason: None });
                }
            }
            19 => {
                w.server.kick(w.now, "client", "RESTART");
            }
            20 => w.server.shutdown(w.now),
            21 => w.client.close(w.now),
            22 => {
                // The client starts over (a reconnect from the same address).
                w.client_seed += 1;
                if let Ok(c) = Client::new(
                    client_config(w.setup),
                    SERVER,
                    Box::new(TestRng::seed(w.client_seed)),
                    w.now,
                ) {
                    w.client = c;
                    w.client_accepted.clear();
                }
            }
            23 => {
                // The client's address becomes a TCP peer (no cookie, no float) or stops
                // being one, as the driver reports accepted and closed connections.
                if ops.arg() & 1 == 0 {
                    w.server.stream_opened(CLIENT);
                } else {
                    w.server.stream_closed(w.now, CLIENT);
                }
            }
            _ => {
                let _ = w.server.counters();
                let _ = w.client.traffic();
            }
        }
        w.flush();
        reached.connected |= w.client.is_connected();
    }
    reached.server_opened = w.server_accepted.len();
    reached.client_opened = w.client_accepted.len();
    reached
}
