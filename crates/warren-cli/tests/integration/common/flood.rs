//! A handshake flooder, run as the traffic helper's `flood` mode inside a test namespace.
//!
//! `COUNT` fake clients, each on its own UDP port of the namespace's one address, send a
//! P_CONTROL_HARD_RESET_CLIENT_V2 wrapped with the lab's tls-crypt key (`TA_KEY`), answer
//! the server's stateless cookie reset with the P_CONTROL_V1 that acknowledges it and
//! carries the TLS ClientHello (the packet that makes a server create a session), and then
//! never answer again: each holds a half-open session until the server's hand-window ends.
//! That is what anyone holding a client profile can do. The fake clients are warren's own
//! client engine, so their packets are exactly a real client's first two. They are driven
//! `BATCH` at a time (all resets of a batch, then all answers), and all sockets stay open
//! until the flood is over, so the server's replies do not bounce.
//!
//! The flooder gives up after `DEADLINE_MS`. It writes `resets` (sent), `cookies` (cookie
//! resets received), `completed` (ACK + ClientHello sent) and `elapsed_ms` to the result
//! file (`key=value`) and prints them on stderr.

use std::env;
use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use warren_core::TestRng;
use warren_crypto::{CipherKind, StaticKey};
use warren_openvpn::tls::{self, ClientTlsOptions};
use warren_openvpn::{Client, ClientConfig, KeyDerivation, WrapConfig};

const ARG_PREFIX: &str = "WARREN_IT_";
/// How long a fake client waits for the server's cookie reset.
const REPLY_WAIT: Duration = Duration::from_millis(500);

fn arg(name: &str) -> Result<String, String> {
    env::var(format!("{ARG_PREFIX}{name}")).map_err(|_| format!("missing {ARG_PREFIX}{name}"))
}

fn arg_u64(name: &str) -> Result<u64, String> {
    arg(name)?
        .parse()
        .map_err(|e| format!("{ARG_PREFIX}{name}: {e}"))
}

fn read(name: &str) -> Result<String, String> {
    let path = arg(name)?;
    fs::read_to_string(&path).map_err(|e| format!("{name} {path}: {e}"))
}

pub fn flood_main() -> Result<(), String> {
    let server: SocketAddr = arg("SERVER")?.parse().map_err(|e| format!("SERVER: {e}"))?;
    let count = arg_u64("COUNT")?;
    let batch = arg_u64("BATCH")?.max(1);
    let deadline_in = Duration::from_millis(arg_u64("DEADLINE_MS")?);
    let key = StaticKey::parse(&read("TA_KEY")?).map_err(|e| format!("TA_KEY: {e}"))?;
    // No client certificate: the server would only ask for it after the ClientHello.
    let tls = tls::client_config(&read("CA")?, None, None, &ClientTlsOptions::default())
        .map_err(|e| format!("TLS config: {e}"))?;
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let cfg = ClientConfig {
        tls,
        wrap: WrapConfig::TlsCrypt { key },
        data_ciphers: vec![CipherKind::Aes256Gcm],
        ping: None,
        ping_restart: None,
        reneg: None,
        hand_window: Duration::from_secs(60),
        tls_timeout: Duration::from_secs(2),
        key_derivation: KeyDerivation::Auto,
        credentials: None,
        explicit_exit_notify: false,
        tun_mtu: 1500,
        mssfix: None,
        block_ipv6: false,
        unix_time_at_zero: unix_now,
    };
    let origin = Instant::now();
    let deadline = origin + deadline_in;
    let now = || {
        warren_core::Instant::from_nanos(u64::try_from(origin.elapsed().as_nanos()).unwrap_or(0))
    };

    let (mut resets, mut cookies, mut completed) = (0u64, 0u64, 0u64);
    let mut open = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    let mut next = 0u64;
    while next < count && Instant::now() < deadline {
        let end = (next + batch).min(count);
        let mut peers = Vec::new();
        for i in next..end {
            let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind: {e}"))?;
            sock.set_read_timeout(Some(REPLY_WAIT))
                .map_err(|e| e.to_string())?;
            let mut c = Client::new(cfg.clone(), server, Box::new(TestRng::seed(i + 1)), now())
                .map_err(|e| format!("client engine: {e}"))?;
            while let Some(to) = c.poll_transmit(now(), &mut out) {
                sock.send_to(&out, to).map_err(|e| format!("send: {e}"))?;
                resets += 1;
            }
            peers.push((sock, c));
        }
        for (sock, c) in &mut peers {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                continue;
            };
            cookies += 1;
            let _ = c.handle_datagram(now(), from, &mut buf[..n]);
            let mut sent = false;
            while let Some(to) = c.poll_transmit(now(), &mut out) {
                sock.send_to(&out, to).map_err(|e| format!("send: {e}"))?;
                sent = true;
            }
            completed += u64::from(sent);
        }
        // The engines go (they would retransmit); the sockets stay open.
        open.extend(peers.into_iter().map(|(s, _)| s));
        next = end;
    }
    let elapsed_ms = origin.elapsed().as_millis();
    let lines = [
        ("resets", resets.to_string()),
        ("cookies", cookies.to_string()),
        ("completed", completed.to_string()),
        ("elapsed_ms", elapsed_ms.to_string()),
    ];
    let mut text = String::new();
    for (k, v) in &lines {
        text.push_str(&format!("{k}={v}\n"));
    }
    eprint!("{text}");
    let path = arg("RESULT")?;
    fs::write(&path, text).map_err(|e| format!("write {path}: {e}"))?;
    drop(open);
    Ok(())
}
