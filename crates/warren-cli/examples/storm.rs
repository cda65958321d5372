//! Connection storm: N client engines in one process connect to one server at once.
//!
//! Each simulated client has its own UDP socket and its own `warren_openvpn::Client`; one
//! thread drives them all with a poll loop. It measures how long the server takes to complete
//! all handshakes and how long until every client has had an ICMP echo answered through the
//! tunnel. Run it inside a network namespace (see `bench/storm.sh`):
//!
//! ```sh
//! storm --server 198.18.0.1:1194 --profile client.ovpn -n 200 --timeout 120
//! ```
//!
//! With `--churn SECONDS` it is the soak load of `bench/soak.sh` instead: N clients connect,
//! pass traffic (an echo a second each), renegotiate (every 30 s) and leave, in a loop, for
//! SECONDS. A client lives 20 to 90 s; nine in ten leave with explicit-exit-notify, one in
//! ten vanishes without a word (the server must reap it by ping-restart), and each is then
//! replaced by a new client on a new socket. A line of counters goes to stdout every minute.
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use warren_core::Instant;
use warren_io::{Clock, Interest, OsRng, Poller, UdpBind, UdpFamily, UdpSocket};
use warren_openvpn::{
    Client, ClientConfig, ClientDatagram, ClientEvent, DATA_HEADROOM, KeyDerivation,
};
use warren_server::convert;

struct Args {
    server: SocketAddr,
    profile: PathBuf,
    count: usize,
    timeout: Duration,
    churn: Option<Duration>,
}

fn args() -> Result<Args> {
    let mut server = None;
    let mut profile = None;
    let mut count = 200;
    let mut timeout = Duration::from_secs(120);
    let mut churn = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| anyhow!("{a} needs a value"));
        match a.as_str() {
            "--server" => server = Some(val()?.parse().context("--server ADDR:PORT")?),
            "--profile" => profile = Some(PathBuf::from(val()?)),
            "-n" => count = val()?.parse().context("-n N")?,
            "--timeout" => {
                timeout = Duration::from_secs(val()?.parse().context("--timeout SECONDS")?)
            }
            "--churn" => {
                churn = Some(Duration::from_secs(
                    val()?.parse().context("--churn SECONDS")?,
                ))
            }
            other => bail!(
                "unknown argument {other}; usage: storm --server ADDR:PORT --profile FILE [-n N] [--timeout S] [--churn S]"
            ),
        }
    }
    Ok(Args {
        server: server.ok_or_else(|| anyhow!("--server is required"))?,
        profile: profile.ok_or_else(|| anyhow!("--profile is required"))?,
        count,
        timeout,
        churn,
    })
}

fn engine_config(profile: &std::path::Path, clock: &Clock) -> Result<ClientConfig> {
    let (cfg, _warnings) = warren_config::load_client_config(profile)?;
    let ca = cfg.ca.load_for("ca")?;
    let cert = cfg.cert.as_ref().map(|m| m.load_for("cert")).transpose()?;
    let key = cfg.key.as_ref().map(|m| m.load_for("key")).transpose()?;
    let tls = warren_openvpn::tls::client_config(
        &ca,
        cert.as_deref(),
        key.as_deref(),
        &warren_openvpn::tls::ClientTlsOptions {
            remote_cert_tls: cfg.remote_cert_tls.map(convert::cert_role),
            ..Default::default()
        },
    )?;
    Ok(ClientConfig {
        tls,
        wrap: convert::wrap_config(
            cfg.tls_crypt.as_ref(),
            cfg.tls_auth.as_ref(),
            cfg.hmac_digest(),
        )?,
        data_ciphers: convert::data_ciphers(&cfg.data_ciphers, None)?,
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
        unix_time_at_zero: clock.unix_time_at_zero(),
    })
}

/// An IPv4 ICMP echo request from `src` to `dst`.
fn echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&28u16.to_be_bytes());
    p[8] = 64;
    p[9] = 1;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20] = 8;
    p[24..26].copy_from_slice(&id.to_be_bytes());
    p[26..28].copy_from_slice(&1u16.to_be_bytes());
    let c = checksum(&p[20..]);
    p[22..24].copy_from_slice(&c.to_be_bytes());
    p
}

fn checksum(data: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

struct Sim {
    socket: UdpSocket,
    client: Client,
    vpn: Option<(Ipv4Addr, Ipv4Addr)>,
    connected_at: Option<Instant>,
    echoed_at: Option<Instant>,
    failed: Option<String>,
}

fn client_socket() -> Result<UdpSocket> {
    UdpSocket::bind(&UdpBind {
        family: UdpFamily::V4,
        local: None,
        port: 0,
        sndbuf: Some(0),
        rcvbuf: Some(0),
    })
    .context("binding a client socket")
}

fn main() -> Result<()> {
    let args = args()?;
    let clock = Clock::new().context("clock")?;
    let config = engine_config(&args.profile, &clock)?;
    if let Some(length) = args.churn {
        return churn(&args, &clock, config, length);
    }
    let start = clock.now();
    let mut sims = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        let socket = client_socket()?;
        let client = Client::new(
            config.clone(),
            args.server,
            Box::new(OsRng::new().context("random source")?),
            start,
        )
        .context("client engine")?;
        sims.push(Sim {
            socket,
            client,
            vpn: None,
            connected_at: None,
            echoed_at: None,
            failed: None,
        });
    }
    let mut poller = Poller::new();
    let tokens: Vec<_> = sims
        .iter()
        .map(|s| poller.add(s.socket.as_fd(), Interest::Readable))
        .collect();
    let deadline = start + args.timeout;
    let mut out = Vec::with_capacity(2048);
    let mut buf = vec![0u8; 4096];
    let mut pkt = vec![0u8; DATA_HEADROOM + 64];
    loop {
        let now = clock.now();
        for s in &mut sims {
            if s.client.poll_timeout().is_some_and(|t| t <= now) {
                s.client.handle_timeout(now);
            }
            while let Some(dst) = s.client.poll_transmit(now, &mut out) {
                if let Err(e) = s.socket.send_to(&out, dst) {
                    s.failed.get_or_insert(format!("send: {e}"));
                }
            }
            while let Some(ev) = s.client.poll_event() {
                match ev {
                    ClientEvent::Connected { config, .. } => {
                        s.connected_at = Some(now);
                        s.vpn = config.ifconfig.map(|(ip, _)| ip).zip(config.route_gateway);
                    }
                    ClientEvent::Disconnected { reason } => {
                        s.failed.get_or_insert(format!("{reason:?}"));
                    }
                    _ => {}
                }
            }
            // Once connected, ask the server's tun address for an echo (again every 500 ms).
            if let (Some((ip, gw)), None) = (s.vpn, s.echoed_at)
                && s.connected_at
                    .is_some_and(|c| now >= c && (now - c).as_millis() % 500 < 20)
            {
                let icmp = echo(ip, gw, 7);
                pkt.truncate(DATA_HEADROOM);
                pkt.extend_from_slice(&icmp);
                if let Ok(range) = s.client.encapsulate(now, &mut pkt, icmp.len())
                    && let Err(e) = s.socket.send_to(&pkt[range], args.server)
                {
                    s.failed.get_or_insert(format!("send: {e}"));
                }
            }
        }
        let done = sims
            .iter()
            .all(|s| s.echoed_at.is_some() || s.failed.is_some());
        if done || now >= deadline {
            break;
        }
        let next = sims.iter().filter_map(|s| s.client.poll_timeout()).min();
        let wait = next.map_or(Duration::from_millis(20), |t| {
            (t - now).min(Duration::from_millis(20))
        });
        poller.wait(Some(wait)).context("poll")?;
        let now = clock.now();
        for (s, tok) in sims.iter_mut().zip(&tokens) {
            if !poller.is_readable(*tok) {
                continue;
            }
            for _ in 0..64 {
                let meta = match s.socket.recv_from(&mut buf) {
                    Ok(m) => m,
                    Err(_) => break,
                };
                if let ClientDatagram::Tun(r) =
                    s.client
                        .handle_datagram(now, meta.addr, &mut buf[..meta.len])
                {
                    // An ICMP echo reply (type 0) for us.
                    if buf[r.start + 9] == 1 && buf.get(r.start + 20) == Some(&0) {
                        s.echoed_at.get_or_insert(now);
                    }
                }
            }
        }
    }
    let secs = |t: Instant| (t - start).as_secs_f64();
    let connected: Vec<f64> = sims
        .iter()
        .filter_map(|s| s.connected_at.map(secs))
        .collect();
    let echoed: Vec<f64> = sims.iter().filter_map(|s| s.echoed_at.map(secs)).collect();
    let all_connected = connected.iter().copied().fold(0.0, f64::max);
    let all_echoed = echoed.iter().copied().fold(0.0, f64::max);
    println!("clients            {}", args.count);
    println!("connected          {}", connected.len());
    println!("passed traffic     {}", echoed.len());
    println!(
        "failed             {}",
        sims.iter().filter(|s| s.failed.is_some()).count()
    );
    println!("all connected (s)  {all_connected:.3}");
    println!("all traffic (s)    {all_echoed:.3}");
    if all_connected > 0.0 {
        println!(
            "handshakes/s       {:.1}",
            connected.len() as f64 / all_connected
        );
    }
    if let Some(f) = sims.iter().find_map(|s| s.failed.clone()) {
        println!("first failure      {f}");
    }
    if echoed.len() < args.count {
        std::process::exit(1);
    }
    Ok(())
}

/// One slot of the churn load: a client engine on its own socket, replaced when it leaves.
struct Churner {
    socket: UdpSocket,
    client: Client,
    vpn: Option<(Ipv4Addr, Ipv4Addr)>,
    leave_at: Instant,
    vanish: bool,
    next_echo: Instant,
    closing: bool,
}

#[derive(Default)]
struct ChurnCounts {
    started: u64,
    connected: u64,
    left: u64,
    vanished: u64,
    renegotiations: u64,
    echoes_sent: u64,
    echoes_answered: u64,
    failures: u64,
}

fn churn(args: &Args, clock: &Clock, mut config: ClientConfig, length: Duration) -> Result<()> {
    use warren_core::Rng;
    config.reneg = Some(Duration::from_secs(30));
    config.explicit_exit_notify = true;
    config.ping = Some(Duration::from_secs(10));
    config.ping_restart = Some(Duration::from_secs(60));
    let mut rng = OsRng::new().context("random source")?;
    let mut draw = |lo: u64, hi: u64| lo + u64::from(rng.next_u32()) % (hi - lo);
    let start = clock.now();
    let end = start + length;
    let mut counts = ChurnCounts::default();
    let spawn = |now: Instant,
                 counts: &mut ChurnCounts,
                 draw: &mut dyn FnMut(u64, u64) -> u64|
     -> Result<Churner> {
        counts.started += 1;
        Ok(Churner {
            socket: client_socket()?,
            client: Client::new(
                config.clone(),
                args.server,
                Box::new(OsRng::new().context("random source")?),
                now,
            )
            .context("client engine")?,
            vpn: None,
            leave_at: now + Duration::from_secs(draw(20, 90)),
            vanish: draw(0, 10) == 0,
            next_echo: now,
            closing: false,
        })
    };
    let mut slots = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        slots.push(spawn(start, &mut counts, &mut draw)?);
    }
    let mut out = Vec::with_capacity(2048);
    let mut buf = vec![0u8; 4096];
    let mut pkt = vec![0u8; DATA_HEADROOM + 64];
    let mut next_report = start + Duration::from_secs(60);
    let mut rebuild = true;
    let mut poller = Poller::new();
    let mut tokens = Vec::new();
    while clock.now() < end {
        if rebuild {
            poller = Poller::new();
            tokens = slots
                .iter()
                .map(|s| poller.add(s.socket.as_fd(), Interest::Readable))
                .collect();
            rebuild = false;
        }
        let now = clock.now();
        for slot in slots.iter_mut() {
            let s = &mut *slot;
            if s.client.poll_timeout().is_some_and(|t| t <= now) {
                s.client.handle_timeout(now);
            }
            if now >= s.leave_at && !s.closing {
                if s.vanish {
                    // Gone without a word: the server keeps the session until ping-restart.
                    counts.vanished += 1;
                    *slot = spawn(now, &mut counts, &mut draw)?;
                    rebuild = true;
                    continue;
                }
                s.closing = true;
                s.client.close(now);
            }
            while let Some(dst) = s.client.poll_transmit(now, &mut out) {
                // A full socket buffer loses the datagram, as the network would.
                let _ = s.socket.send_to(&out, dst);
            }
            let mut replace = false;
            while let Some(ev) = s.client.poll_event() {
                match ev {
                    ClientEvent::Connected { config, .. } => {
                        counts.connected += 1;
                        s.vpn = config.ifconfig.map(|(ip, _)| ip).zip(config.route_gateway);
                    }
                    ClientEvent::Renegotiated { .. } => counts.renegotiations += 1,
                    ClientEvent::Disconnected { reason } => {
                        if matches!(reason, warren_openvpn::ClientDisconnect::Closed) {
                            counts.left += 1;
                        } else {
                            counts.failures += 1;
                            eprintln!("client disconnected: {reason:?}");
                        }
                        replace = true;
                    }
                    _ => {}
                }
            }
            if replace || s.client.is_closed() {
                *slot = spawn(now, &mut counts, &mut draw)?;
                rebuild = true;
                continue;
            }
            if let Some((ip, gw)) = s.vpn
                && !s.closing
                && now >= s.next_echo
            {
                s.next_echo = now + Duration::from_secs(1);
                let icmp = echo(ip, gw, 7);
                pkt.truncate(DATA_HEADROOM);
                pkt.extend_from_slice(&icmp);
                if let Ok(range) = s.client.encapsulate(now, &mut pkt, icmp.len()) {
                    counts.echoes_sent += 1;
                    let _ = s.socket.send_to(&pkt[range], args.server);
                }
            }
        }
        if now >= next_report {
            next_report += Duration::from_secs(60);
            let up = slots.iter().filter(|s| s.client.is_connected()).count();
            println!(
                "t={:.0}s connected_now={up} started={} connected={} left={} vanished={} renegotiations={} echoes={}/{} failures={}",
                (now - start).as_secs_f64(),
                counts.started,
                counts.connected,
                counts.left,
                counts.vanished,
                counts.renegotiations,
                counts.echoes_answered,
                counts.echoes_sent,
                counts.failures
            );
        }
        if rebuild {
            continue;
        }
        poller
            .wait(Some(Duration::from_millis(20)))
            .context("poll")?;
        let now = clock.now();
        for (s, tok) in slots.iter_mut().zip(&tokens) {
            if !poller.is_readable(*tok) {
                continue;
            }
            for _ in 0..64 {
                let Ok(meta) = s.socket.recv_from(&mut buf) else {
                    break;
                };
                if let ClientDatagram::Tun(r) =
                    s.client
                        .handle_datagram(now, meta.addr, &mut buf[..meta.len])
                    && buf[r.start + 9] == 1
                    && buf.get(r.start + 20) == Some(&0)
                {
                    counts.echoes_answered += 1;
                }
            }
        }
    }
    // Everyone leaves cleanly at the end, so the server's session count must fall to zero
    // (the vanished ones by ping-restart).
    let now = clock.now();
    for s in &mut slots {
        s.client.close(now);
    }
    let stop = now + Duration::from_secs(5);
    while clock.now() < stop && slots.iter().any(|s| !s.client.is_closed()) {
        let now = clock.now();
        for s in &mut slots {
            s.client.handle_timeout(now);
            while let Some(dst) = s.client.poll_transmit(now, &mut out) {
                let _ = s.socket.send_to(&out, dst);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "done started={} connected={} left={} vanished={} renegotiations={} echoes={}/{} failures={}",
        counts.started,
        counts.connected,
        counts.left,
        counts.vanished,
        counts.renegotiations,
        counts.echoes_answered,
        counts.echoes_sent,
        counts.failures
    );
    Ok(())
}
