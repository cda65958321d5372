//! Certificate validity judged at the engines' fake time: the server and client engines run
//! against each other in memory, and their TLS configurations read a [`tls::ManualClock`]
//! that follows the simulation's `now` (wall = `unix_time_at_zero` + `now`, the engines' own
//! mapping). Expired and not-yet-valid certificates, client and server side, are refused
//! with the engine events a driver logs; the same certificates connect at a fake time
//! inside their validity.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};
use warren_core::{Instant, TestRng};
use warren_crypto::{CipherKind, StaticKey};
use warren_openvpn::tls::{self, CertRole, ClientTlsOptions, ManualClock, ServerTlsOptions};
use warren_openvpn::{
    Client, ClientConfig, ClientDatagram, ClientDisconnect, ClientEvent, DatagramOutcome,
    DisconnectReason, HalfOpenLimits, KeyDerivation, Server, ServerConfig, ServerEvent, WrapConfig,
};

/// 2030-01-01T00:00:00Z and 2031-01-01T00:00:00Z: the validity of the dated certificates.
const VALID_FROM: u64 = 1_893_456_000;
const VALID_UNTIL: u64 = 1_924_992_000;
const DAY: u64 = 86_400;

// ---------------------------------------------------------------------------------------------
// PKI: a CA valid for ever (rcgen's default 1975-4096), undated and dated leaves
// ---------------------------------------------------------------------------------------------

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
    dated_server: (String, String),
    dated_client: (String, String),
}

fn leaf(ca: &Issuer<'_, &KeyPair>, cn: &str, server: bool, dated: bool) -> (String, String) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::ExplicitNoCa;
    if server {
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    } else {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    if dated {
        p.not_before = date_time_ymd(2030, 1, 1);
        p.not_after = date_time_ymd(2031, 1, 1);
    }
    let cert = p.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "Test CA");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_pem = p.self_signed(&key).unwrap().pem();
        let issuer = Issuer::from_params(&p, &key);
        Pki {
            ca_pem,
            server: leaf(&issuer, "server", true, false),
            client: leaf(&issuer, "client", false, false),
            dated_server: leaf(&issuer, "dated-server", true, true),
            dated_client: leaf(&issuer, "dated-client", false, true),
        }
    })
}

fn server_config(cert: &(String, String), clock: &Arc<ManualClock>, anchor: u64) -> ServerConfig {
    let tls = tls::server_config_with_time(
        &pki().ca_pem,
        &cert.0,
        &cert.1,
        &ServerTlsOptions {
            remote_cert_tls: Some(CertRole::Client),
            ..Default::default()
        },
        clock.clone(),
    )
    .unwrap();
    ServerConfig {
        tls,
        wrap: WrapConfig::TlsCrypt {
            key: StaticKey::generate(&mut TestRng::seed(99)),
        },
        network: Ipv4Addr::new(10, 8, 0, 0),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        topology: Default::default(),
        ipv6: None,
        block_ipv6: None,
        push: vec![],
        ping: Some(Duration::from_secs(10)),
        ping_restart: Some(Duration::from_secs(120)),
        push_ping: Some(10),
        push_ping_restart: Some(60),
        data_ciphers: vec![CipherKind::Aes256Gcm],
        data_ciphers_fallback: None,
        reneg: None,
        hand_window: Duration::from_secs(60),
        tls_timeout: Duration::from_secs(2),
        client_to_client: false,
        duplicate_cn: false,
        max_clients: 16,
        half_open: HalfOpenLimits {
            per_source: 16,
            total: 64,
        },
        explicit_exit_notify: true,
        tun_mtu: 1500,
        mssfix: Some(1492),
        key_derivation: KeyDerivation::Auto,
        external_auth: false,
        unix_time_at_zero: anchor,
    }
}

fn client_config(
    cert: &(String, String),
    clock: &Arc<ManualClock>,
    anchor: u64,
    reneg: Option<Duration>,
) -> ClientConfig {
    let tls = tls::client_config_with_time(
        &pki().ca_pem,
        Some(&cert.0),
        Some(&cert.1),
        &ClientTlsOptions {
            remote_cert_tls: Some(CertRole::Server),
            ..Default::default()
        },
        clock.clone(),
    )
    .unwrap();
    ClientConfig {
        tls,
        wrap: WrapConfig::TlsCrypt {
            key: StaticKey::generate(&mut TestRng::seed(99)),
        },
        data_ciphers: vec![CipherKind::Aes256Gcm],
        ping: None,
        ping_restart: None,
        reneg,
        hand_window: Duration::from_secs(60),
        tls_timeout: Duration::from_secs(2),
        key_derivation: KeyDerivation::Auto,
        credentials: None,
        explicit_exit_notify: true,
        tun_mtu: 1500,
        mssfix: Some(1492),
        block_ipv6: false,
        unix_time_at_zero: anchor,
    }
}

// ---------------------------------------------------------------------------------------------
// A lossless simulated network with a fake clock that also drives the TLS wall clock
// ---------------------------------------------------------------------------------------------

const SERVER: &str = "192.0.2.1:1194";
const CLIENT: &str = "192.0.2.2:40000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Engine time at the start of every world.
const START: Instant = Instant::from_secs(1000);

struct World {
    now: Instant,
    /// `unix_time_at_zero` of both engines: wall time = anchor + `now`.
    anchor: u64,
    /// The TLS configurations' time source, moved along with `now`.
    clock: Arc<ManualClock>,
    queue: BTreeMap<(Instant, u64), (SocketAddr, SocketAddr, Vec<u8>)>,
    seq: u64,
    server: Server,
    client: Client,
    server_events: Vec<ServerEvent>,
    client_events: Vec<ClientEvent>,
}

struct Certs<'a> {
    server: &'a (String, String),
    client: &'a (String, String),
    client_reneg: Option<Duration>,
}

impl World {
    /// A world whose wall clock reads `wall` at the start.
    fn new(certs: Certs<'_>, wall: u64) -> World {
        let anchor = wall - START.as_secs();
        let clock = Arc::new(ManualClock::new(0));
        clock.set_at(anchor, START);
        assert_eq!(clock.unix_secs(), wall);
        let server = Server::new(
            server_config(certs.server, &clock, anchor),
            Box::new(TestRng::seed(0x5e)),
        );
        let client = Client::new(
            client_config(certs.client, &clock, anchor, certs.client_reneg),
            addr(SERVER),
            Box::new(TestRng::seed(0xc1)),
            START,
        )
        .unwrap();
        World {
            now: START,
            anchor,
            clock,
            queue: BTreeMap::new(),
            seq: 0,
            server,
            client,
            server_events: Vec::new(),
            client_events: Vec::new(),
        }
    }

    fn set_now(&mut self, now: Instant) {
        self.now = now.max(self.now);
        self.clock.set_at(self.anchor, self.now);
    }

    fn flush(&mut self) {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            let Some(to) = self.server.poll_transmit(self.now, &mut out) else {
                break;
            };
            self.send(addr(SERVER), to, out.clone());
        }
        for _ in 0..10_000 {
            let Some(to) = self.client.poll_transmit(self.now, &mut out) else {
                break;
            };
            self.send(addr(CLIENT), to, out.clone());
        }
        while let Some(e) = self.server.poll_event() {
            self.server_events.push(e);
        }
        while let Some(e) = self.client.poll_event() {
            self.client_events.push(e);
        }
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, pkt: Vec<u8>) {
        self.seq += 1;
        let at = self.now + Duration::from_millis(5);
        self.queue.insert((at, self.seq), (from, to, pkt));
    }

    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, mut pkt: Vec<u8>) {
        if to == addr(SERVER) {
            match self.server.handle_datagram(self.now, from, &mut pkt) {
                DatagramOutcome::Dropped(_)
                | DatagramOutcome::Consumed
                | DatagramOutcome::Tun(_)
                | DatagramOutcome::ClientToClient(_)
                | DatagramOutcome::Reply { .. } => {}
            }
        } else {
            match self.client.handle_datagram(self.now, from, &mut pkt) {
                ClientDatagram::Tun(_) | ClientDatagram::Dropped(_) | ClientDatagram::Consumed => {}
            }
        }
    }

    /// Runs from event to event until `until` (simulated time).
    fn run_until(&mut self, until: Instant) {
        for _ in 0..1_000_000 {
            self.flush();
            let next = [
                self.queue.keys().next().map(|(t, _)| *t),
                self.server.poll_timeout(),
                self.client.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next.filter(|t| *t <= until) else {
                self.set_now(until);
                self.flush();
                return;
            };
            self.set_now(next);
            while let Some(key) = self.queue.keys().next().copied() {
                if key.0 > self.now {
                    break;
                }
                let (from, to, pkt) = self.queue.remove(&key).unwrap();
                self.deliver(from, to, pkt);
            }
            if self.server.poll_timeout().is_some_and(|t| t <= self.now) {
                self.server.handle_timeout(self.now);
            }
            if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
                self.client.handle_timeout(self.now);
            }
        }
        panic!("simulation did not settle");
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn server_connected(&self) -> bool {
        self.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Connected { .. }))
    }

    fn handshake_failures(&self) -> Vec<&str> {
        self.server_events
            .iter()
            .filter_map(|e| match e {
                ServerEvent::HandshakeFailed { reason, .. } => Some(reason.as_str()),
                _ => None,
            })
            .collect()
    }

    fn client_tls_errors(&self) -> Vec<&str> {
        self.client_events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Disconnected {
                    reason: ClientDisconnect::TlsError(reason),
                } => Some(reason.as_str()),
                _ => None,
            })
            .collect()
    }

    fn assert_connects(&mut self) {
        self.run_for(Duration::from_secs(10));
        assert!(
            self.client.is_connected() && self.server_connected(),
            "not connected at wall time {}: server {:?}, client {:?}",
            self.clock.unix_secs(),
            self.server_events,
            self.client_events
        );
        assert!(self.handshake_failures().is_empty());
        assert!(self.client_tls_errors().is_empty());
    }
}

fn undated_server_dated_client() -> Certs<'static> {
    Certs {
        server: &pki().server,
        client: &pki().dated_client,
        client_reneg: None,
    }
}

fn dated_server_undated_client() -> Certs<'static> {
    Certs {
        server: &pki().dated_server,
        client: &pki().client,
        client_reneg: None,
    }
}

/// The server refused the client's certificate for `word` ("certificate expired" or
/// "certificate not valid yet"), judged at the fake wall time `wall`; the client saw the
/// handshake fail; no session is left.
fn assert_server_refused(w: &World, word: &str, wall: u64) {
    assert!(!w.client.is_connected());
    assert!(!w.server_connected(), "{:?}", w.server_events);
    let failures = w.handshake_failures();
    assert!(
        failures
            .iter()
            .any(|r| r.starts_with("certificate rejected: ")
                && r.contains(word)
                && r.contains(&format!("verification time {wall} ")))
            && !failures.is_empty(),
        "server events: {:?}",
        w.server_events
    );
    assert!(
        !w.client_tls_errors().is_empty(),
        "client events: {:?}",
        w.client_events
    );
    assert_eq!(w.server.session_count(), 0, "the refused session is freed");
}

/// The client refused the server's certificate for `word` at the fake wall time `wall`.
fn assert_client_refused(w: &World, word: &str, wall: u64) {
    assert!(!w.client.is_connected());
    assert!(!w.server_connected(), "{:?}", w.server_events);
    let errors = w.client_tls_errors();
    assert!(
        errors
            .iter()
            .any(|r| r.starts_with("certificate rejected: ")
                && r.contains(word)
                && r.contains(&format!("verification time {wall} "))),
        "client events: {:?}",
        w.client_events
    );
}

#[test]
fn expired_client_cert_is_refused_by_the_server_at_fake_time() {
    let wall = VALID_UNTIL + DAY;
    let mut w = World::new(undated_server_dated_client(), wall);
    w.run_for(Duration::from_secs(10));
    assert_server_refused(&w, "certificate expired", wall);
}

#[test]
fn not_yet_valid_client_cert_is_refused_by_the_server_at_fake_time() {
    let wall = VALID_FROM - DAY;
    let mut w = World::new(undated_server_dated_client(), wall);
    w.run_for(Duration::from_secs(10));
    assert_server_refused(&w, "certificate not valid yet", wall);
}

#[test]
fn dated_client_cert_connects_inside_its_validity() {
    for wall in [VALID_FROM, VALID_FROM + 100 * DAY, VALID_UNTIL - 60] {
        World::new(undated_server_dated_client(), wall).assert_connects();
    }
}

#[test]
fn expired_server_cert_is_refused_by_the_client_at_fake_time() {
    let wall = VALID_UNTIL + DAY;
    let mut w = World::new(dated_server_undated_client(), wall);
    w.run_for(Duration::from_secs(10));
    assert_client_refused(&w, "certificate expired", wall);
}

#[test]
fn not_yet_valid_server_cert_is_refused_by_the_client_at_fake_time() {
    let wall = VALID_FROM - DAY;
    let mut w = World::new(dated_server_undated_client(), wall);
    w.run_for(Duration::from_secs(10));
    assert_client_refused(&w, "certificate not valid yet", wall);
}

#[test]
fn dated_server_cert_connects_inside_its_validity() {
    for wall in [VALID_FROM, VALID_FROM + 100 * DAY, VALID_UNTIL - 60] {
        World::new(dated_server_undated_client(), wall).assert_connects();
    }
}

#[test]
fn a_renegotiation_after_the_client_cert_expired_is_refused() {
    // Connected a minute before the certificate ends; the client renegotiates every two
    // minutes of fake time, so the first renegotiation is judged after notAfter.
    let wall = VALID_UNTIL - 60;
    let mut w = World::new(
        Certs {
            server: &pki().server,
            client: &pki().dated_client,
            client_reneg: Some(Duration::from_secs(120)),
        },
        wall,
    );
    w.assert_connects();
    w.run_for(Duration::from_secs(180));
    assert!(w.clock.unix_secs() > VALID_UNTIL);
    // The session ends with the TLS error of the refused renegotiation.
    let ended = w.server_events.iter().find_map(|e| match e {
        ServerEvent::Disconnected {
            common_name,
            reason: DisconnectReason::TlsError(reason),
            ..
        } => Some((common_name.as_str(), reason.as_str())),
        _ => None,
    });
    let (cn, reason) = ended.unwrap_or_else(|| panic!("server events: {:?}", w.server_events));
    assert_eq!(cn, "dated-client");
    assert!(
        reason.starts_with("certificate rejected: certificate expired: verification time ")
            && reason.contains("not valid after 1924992000"),
        "{reason}"
    );
    assert!(
        !w.server_events
            .iter()
            .any(|e| matches!(e, ServerEvent::Renegotiated { .. })),
        "{:?}",
        w.server_events
    );
    assert!(!w.client.is_connected());
}
