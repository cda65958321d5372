//! Fuzz targets for every warren parser, as plain functions.
//!
//! Each `pub fn <target>(data: &[u8])` feeds untrusted bytes to one parser and checks what
//! can be checked without a reference (round trips, invariants); it panics only when such
//! a check fails, which is a bug. The same functions serve two drivers:
//!
//! * `fuzz_targets/<target>.rs`: cargo-fuzz binaries (nightly, feature `libfuzzer`);
//! * `tests/replay_corpus.rs`: a stable `cargo test` that runs every file under
//!   `corpus/<target>/` through its target, so CI replays the committed corpus.
//!
//! The crypto targets use fixed lab keys (fact sheet §12.4, §7.1) and, besides feeding raw
//! input to the authenticated decoders (which rarely get past the MAC), wrap/seal the input
//! first so the fuzzer reaches the parsers behind them ("no-security" path).
#![forbid(unsafe_code)]

use std::path::Path;

mod engine;
pub use engine::{EngineRun, engine, run_engine};

use warren_core::{Instant, KeyId};
use warren_crypto::{
    CipherKind, ControlWrap, DATA_HEADROOM, DataHeader, DataKeys, Digest, Key2, KeyDirection,
    Metadata, ReplayStamp, Role, StaticKey, TlsCryptV2ClientKey, TlsCryptV2ServerKey, split_wkc,
};
use warren_openvpn::reliable::{Reliable, ReliableConfig};
use warren_wire::{
    ControlMessageReader, ControlPacket, KeyMethod2, Opcode, PeerInfo, TcpFramer, encode_tcp_frame,
    parse_control_head, parse_occ, parse_push_reply, parse_tlvs, try_build_push_replies, write_tlv,
};

/// A fuzz target: takes any bytes, panics only on a bug.
pub type Target = fn(&[u8]);

/// Every target, by name: the corpus directory and fuzz binary carry the same name.
pub const TARGETS: &[(&str, Target)] = &[
    ("control_packet", control_packet),
    ("key_method_2", key_method_2),
    ("peer_info", peer_info),
    ("control_messages", control_messages),
    ("push_reply", push_reply),
    ("tlvs", tlvs),
    ("occ", occ),
    ("tcp_framer", tcp_framer),
    ("reliable", reliable),
    ("static_key", static_key),
    ("control_wrap", control_wrap),
    ("tls_crypt_v2", tls_crypt_v2),
    ("data_open", data_open),
    ("config_server", config_server),
    ("config_client", config_client),
    ("engine", engine),
];

// ---- warren-wire ----

/// A plain control packet: head + body. A packet that parses re-encodes to the same bytes
/// (the format is canonical).
pub fn control_packet(data: &[u8]) {
    let head = parse_control_head(data);
    if let Ok(p) = ControlPacket::parse_plain(data) {
        assert_eq!(head, Ok((p.opcode, p.key_id, p.session_id)));
        assert!(p.acks.ids.len() <= warren_wire::MAX_ACKS);
        assert_eq!(p.acks.ids.is_empty(), p.acks.remote_session.is_none());
        assert_eq!(p.msg_id.is_none(), p.opcode == Opcode::AckV1);
        let mut out = Vec::new();
        p.write_plain(&mut out);
        assert_eq!(out, data, "canonical re-encoding");
        assert_eq!(p.body_len() + warren_wire::CONTROL_HEAD_LEN, data.len());
    }
}

/// Key method 2 in both roles: what parses writes back to something that parses equal.
pub fn key_method_2(data: &[u8]) {
    for from_client in [true, false] {
        if let Ok((km, used)) = KeyMethod2::parse(data, from_client) {
            assert!(used <= data.len());
            let mut out = Vec::new();
            km.write(&mut out).expect("a parsed message can be written");
            assert_eq!(out.len(), km.encoded_len());
            let (back, n) = KeyMethod2::parse(&out, from_client).expect("written message parses");
            assert_eq!(n, out.len());
            assert_eq!(back, km);
        }
    }
}

/// Peer info: parsing the printed form gives the same value.
pub fn peer_info(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let pi = PeerInfo::parse(&s);
    assert_eq!(PeerInfo::parse(&pi.to_string()), pi);
}

/// The control-message reader, fed in chunks whose sizes come from the input.
pub fn control_messages(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let limit = usize::from(first) + 1;
    let mut r = ControlMessageReader::with_limit(limit);
    let mut chunks = rest;
    let mut i = 0usize;
    while !chunks.is_empty() {
        let n = (usize::from(chunks[0]) % 17 + 1).min(chunks.len());
        let (c, tail) = chunks.split_at(n);
        r.push(c);
        chunks = tail;
        i += 1;
        if i.is_multiple_of(2) {
            drain(&mut r);
            assert!(r.pending_len() <= limit);
        }
    }
    drain(&mut r);
    assert!(r.pending_len() <= limit);
}

fn drain(r: &mut ControlMessageReader) {
    while let Some(m) = r.next_message() {
        assert!(!m.is_empty());
        assert!(!m.ends_with(['\r', '\n']));
        assert!(!m.chars().any(|c| (c as u32) < 0x20 || c == '\u{7f}'));
    }
}

/// PUSH_REPLY: a parsed reply whose options are all sendable survives build + parse.
pub fn push_reply(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let Some(reply) = parse_push_reply(&s) else {
        return;
    };
    assert!(
        reply
            .options
            .iter()
            .all(|o| !o.is_empty() && !o.contains(','))
    );
    if let Ok(msgs) = try_build_push_replies(&reply.options) {
        let mut got = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            assert!(m.len() < warren_wire::PUSH_BUNDLE_SIZE);
            let p = parse_push_reply(m).expect("built reply parses");
            assert_eq!(p.more_follows(), i + 1 < msgs.len());
            got.extend(p.options);
        }
        assert_eq!(got, reply.options);
    }
}

/// Early-negotiation TLVs: what parses re-encodes to the same bytes.
pub fn tlvs(data: &[u8]) {
    let _ = warren_wire::early_neg_flags(data);
    if let Ok(list) = parse_tlvs(data) {
        let mut out = Vec::new();
        for (t, v) in list {
            write_tlv(t, v, &mut out).expect("parsed values fit");
        }
        assert_eq!(out, data);
    }
}

/// Ping and OCC recognition on a data-channel plaintext.
pub fn occ(data: &[u8]) {
    let ping = warren_wire::is_ping(data);
    let is_occ = warren_wire::is_occ(data);
    assert!(!(ping && is_occ));
    if parse_occ(data).is_some() {
        assert!(is_occ);
    }
}

/// TCP framing: the first byte picks the maximum length; the rest arrives in chunks. The
/// packets returned, re-framed, are a prefix of the stream.
pub fn tcp_framer(data: &[u8]) {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let mut f = TcpFramer::new(usize::from(first) * 8);
    let mut reframed = Vec::new();
    let mut failed = false;
    for chunk in stream.chunks(usize::from(first % 13) + 1) {
        f.push(chunk);
        loop {
            match f.next_packet_ref() {
                Ok(Some(p)) => encode_tcp_frame(p, &mut reframed).expect("returned packets fit"),
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            break;
        }
    }
    assert!(stream.starts_with(&reframed));
}

// ---- warren-openvpn reliability layer ----

/// A packet between two [`Reliable`]s: destination, ACK ids, (msg-id, opcode, payload).
type InFlight = (usize, Vec<u32>, Option<(u32, Opcode, Vec<u8>)>);

/// A script of operations on two [`Reliable`] instances linked by a channel the input
/// controls (drop, duplicate, reorder, advance time). Checks the window and ACK bounds,
/// and that each side delivers a prefix of what the other queued, in order, exactly once.
pub fn reliable(data: &[u8]) {
    const OPS: u8 = 8;
    let cfg = ReliableConfig::default();
    let mut peers = [Reliable::new(cfg), Reliable::new(cfg)];
    let mut queued: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    let mut delivered: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
    // In flight: (to, acks, msg)
    let mut wire: Vec<InFlight> = Vec::new();
    let mut now = Instant::ZERO;
    for &b in data {
        let side = usize::from(b & 1);
        let arg = usize::from(b >> 4);
        let op = (b >> 1) % OPS;
        match op {
            0 => {
                if peers[side].can_queue() {
                    let payload = (queued[side].len() as u32).to_be_bytes().to_vec();
                    peers[side].queue(now, Opcode::ControlV1, payload.clone());
                    queued[side].push(payload);
                }
                assert!(peers[side].queued_len() <= cfg.send_window);
            }
            1 => {
                let oldest = peers[side].oldest_unacked();
                if let Some(o) = peers[side].poll_transmit(now) {
                    let msg = (o.msg_id, o.opcode, o.payload.to_vec());
                    if let Some(oldest) = oldest {
                        assert!((msg.0.wrapping_sub(oldest) as usize) < cfg.send_window);
                    }
                    let mut acks = Vec::new();
                    peers[side].write_acks(4, &mut acks);
                    assert!(acks.len() <= 4);
                    wire.push((1 - side, acks, Some(msg)));
                }
            }
            2 => {
                let mut acks = Vec::new();
                peers[side].write_acks(arg, &mut acks);
                assert!(acks.len() <= warren_wire::MAX_ACKS.min(arg));
                if !acks.is_empty() {
                    wire.push((1 - side, acks, None));
                }
            }
            3 | 4 => {
                // Deliver packet `arg` (mod len); op 4 keeps a copy (duplicate).
                if !wire.is_empty() {
                    let i = arg % wire.len();
                    let (to, acks, msg) = if op == 4 {
                        wire[i].clone()
                    } else {
                        wire.remove(i)
                    };
                    let p = &mut peers[to];
                    p.process_acks(&acks);
                    if let Some((id, op, payload)) = msg {
                        p.receive(id, op, &payload);
                    }
                    while let Some((_, payload)) = p.pop_in_order() {
                        delivered[to].push(payload);
                    }
                }
            }
            5 => {
                if !wire.is_empty() {
                    wire.remove(arg % wire.len());
                }
            }
            6 => now += warren_core::Duration::from_millis(250 << (arg % 8)),
            _ => {
                if let Some(t) = peers[side].poll_timeout() {
                    now = now.max(t);
                }
                if arg == 0 {
                    peers[side].schedule_all_now(now);
                }
            }
        }
        if wire.len() > 64 {
            wire.remove(0);
        }
    }
    for side in 0..2 {
        let got = &delivered[1 - side];
        assert!(got.len() <= queued[side].len());
        assert_eq!(got[..], queued[side][..got.len()], "in order, exactly once");
    }
}

// ---- warren-crypto ----

/// The tls-crypt key of the lab capture (fact sheet §12.4).
pub const LAB_TLS_CRYPT_KEY: &str = "fa4eaec302338a2e99055b6eee355a1899634d552ebc897dcddee7156d9228d49b899617e297f48bb0ed07ab42f937ee8616613218cea030c8e6a48451494ccf90bade77462c8dacaf92a61e735479e49e1f6d05b610af001ee59f355f62245aacbba7cfd2328a15c431b07e7cca568dbda01bd44af78c53ccc17eccf623d1c477ef2e702b31469e2be273f639dcc28c844ff6ffeb4967917ca335327dbaecf40328b40ccc2ce797e65870c613cab053055313f4b84cd6aba9f68271156d433ff0809fe3dc3822773ba9751fdb1fa7ca5e71aa9c6ea9aeb0a1d628f9688253e09957dd00f61ffb9baea54b48eda27e055ab61e8358111002b1c75f93764087bc";

fn hex32(s: &str, out: &mut [u8]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
}

fn lab_static_key() -> StaticKey {
    let mut b = [0u8; 256];
    hex32(LAB_TLS_CRYPT_KEY, &mut b);
    StaticKey::from_bytes(b)
}

/// Static key files: what parses prints back to a file that parses to the same key.
pub fn static_key(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(k) = StaticKey::parse(&text) {
        let again = StaticKey::parse(&k.to_pem()).expect("printed key parses");
        assert_eq!(again.as_bytes(), k.as_bytes());
    }
}

/// Control-packet unwrapping in every mode with the lab key, then the control parser on
/// whatever unwraps. Also wraps the input (head from its first 9 bytes, the rest as the
/// body) as the client and unwraps it as the server, which must give the body back, and
/// parses that: the fuzzer's way past the MAC.
pub fn control_wrap(data: &[u8]) {
    let key = lab_static_key();
    let modes = [
        ControlWrap::none(),
        ControlWrap::tls_auth(&key, Digest::Sha1, None),
        ControlWrap::tls_auth(&key, Digest::Sha256, Some(KeyDirection::Normal)),
        ControlWrap::tls_crypt(&key, Role::Server),
    ];
    let mut body = Vec::new();
    for w in &modes {
        if w.unwrap(data, &mut body).is_ok() {
            if let Some(head) = data.get(..9).and_then(|h| <&[u8; 9]>::try_from(h).ok()) {
                let _ = ControlPacket::parse(head, &body);
            }
        } else {
            assert!(body.is_empty());
        }
    }
    let Some((head, rest)) = data.split_first_chunk::<9>() else {
        return;
    };
    let stamp = ReplayStamp {
        id: 1,
        time: 0x6b02_4a67,
    };
    let pairs = [
        (
            ControlWrap::tls_crypt(&key, Role::Client),
            ControlWrap::tls_crypt(&key, Role::Server),
        ),
        (
            ControlWrap::tls_auth(&key, Digest::Sha1, Some(KeyDirection::Inverse)),
            ControlWrap::tls_auth(&key, Digest::Sha1, Some(KeyDirection::Normal)),
        ),
    ];
    let mut wire = Vec::new();
    for (send, recv) in &pairs {
        send.wrap(head, stamp, rest, &mut wire);
        assert_eq!(wire.len(), 9 + send.overhead() + rest.len());
        let got = recv.unwrap(&wire, &mut body).expect("own packet unwraps");
        assert_eq!(got, Some(stamp));
        assert_eq!(body, rest);
        let _ = ControlPacket::parse(head, &body);
    }
}

/// The tls-crypt-v2 server key of the lab (ops sheet §7.5), which wrapped the seeds' client
/// key.
pub const LAB_TLS_CRYPT_V2_SERVER_KEY: &str = "-----BEGIN OpenVPN tls-crypt-v2 server key-----
YoN1JKo7O9mWcz2vvGSEI7NjtRT0JCdOxzbktig7Kd0wSz9VKUzTe4pz+FI31iKe
k3F5Ts7uxOAXRac8mD1TLct421DkXm8i8ABB9nui1Pcek6YFUAHbILnwl6dbABmF
xUrPyPf/qWq9gDENrVx0wEtbO52AnlCBqCpCOuBXo8Y=
-----END OpenVPN tls-crypt-v2 server key-----
";

/// tls-crypt-v2: the input as key files (what parses prints back to the same key), and as
/// a `P_CONTROL_HARD_RESET_CLIENT_V3` / `P_CONTROL_WKC_V1` packet for the lab server key
/// (WKc from the tail, unwrapped, then the packet with Kc, then the control parser). The
/// way past the MACs: the input as USER metadata wrapped into a client key, which must
/// unwrap to the same metadata, and the input's tail as an appended "WKc".
pub fn tls_crypt_v2(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(k) = TlsCryptV2ServerKey::parse(&text) {
        let again = TlsCryptV2ServerKey::parse(&k.to_pem()).expect("printed key parses");
        assert_eq!(again, k);
    }
    if let Ok(k) = TlsCryptV2ClientKey::parse(&text) {
        let again = TlsCryptV2ClientKey::parse(&k.to_pem()).expect("printed key parses");
        assert_eq!(again, k);
    }
    let server_key =
        TlsCryptV2ServerKey::parse(LAB_TLS_CRYPT_V2_SERVER_KEY).expect("lab server key");
    let server = server_key.wrapper();
    let mut body = Vec::new();
    if let Ok((packet, wkc)) = split_wkc(data) {
        assert!(packet.len() >= 9 && wkc.len() + packet.len() == data.len());
        if let Ok((kc, meta)) = server.unwrap_client_key(wkc) {
            assert!(meta.to_bytes().len() <= warren_crypto::TLS_CRYPT_V2_MAX_METADATA_LEN);
            let wrap = ControlWrap::tls_crypt(&kc, Role::Server);
            if wrap.unwrap(packet, &mut body).is_ok()
                && let Some(head) = packet.get(..9).and_then(|h| <&[u8; 9]>::try_from(h).ok())
            {
                let _ = ControlPacket::parse(head, &body);
            }
        }
    }
    // No-security path: a client key whose metadata is the input.
    let meta = Metadata::User(data.to_vec());
    let mut rng = warren_core::TestRng::seed(data.len() as u64);
    match TlsCryptV2ClientKey::generate(&server_key, &meta, &mut rng) {
        Ok(k) => {
            let (kc, back) = server.unwrap_client_key(k.wkc()).expect("own key unwraps");
            assert_eq!(&kc, k.kc());
            assert_eq!(back, meta);
            let mut packet = data.to_vec();
            packet.extend_from_slice(k.wkc());
            let (p, w) = split_wkc(&packet).expect("appended WKc splits off");
            assert_eq!(w, k.wkc());
            assert_eq!(p, data);
        }
        Err(_) => assert!(data.len() >= warren_crypto::TLS_CRYPT_V2_MAX_METADATA_LEN),
    }
}

fn lab_data_keys() -> [DataKeys; 3] {
    // Fact sheet §7.1: keys[0].cipher and keys[0].hmac[0..8] of the lab session; the
    // server opens client packets with keys[0].
    let mut k = [0u8; 256];
    hex32(
        "f020933031a3292d44f862c4d446baf8755947bec58ee9e3b301c3958b7c6595",
        &mut k[..32],
    );
    hex32("157afce1d5000f61", &mut k[64..72]);
    let key2 = Key2::from_bytes(k);
    [
        DataKeys::new(CipherKind::Aes256Gcm, &key2, Role::Server),
        DataKeys::new(CipherKind::Aes128Gcm, &key2, Role::Server),
        DataKeys::new(CipherKind::ChaCha20Poly1305, &key2, Role::Server),
    ]
}

/// Data packets: header parse and AEAD open of the raw input with the lab keys, then a
/// seal/open round trip of the input as plaintext, whose result goes to the ping/OCC
/// recognizers.
pub fn data_open(data: &[u8]) {
    let _ = DataHeader::parse(data);
    let mut buf = Vec::with_capacity(DATA_HEADROOM + data.len());
    for keys in lab_data_keys() {
        buf.clear();
        buf.extend_from_slice(data);
        if let Ok((_pid, range)) = keys.open(&mut buf) {
            let pt = &buf[range];
            occ(pt);
        }
    }
    // Round trip: the client seals, the server opens.
    let mut k = [0u8; 256];
    hex32(LAB_TLS_CRYPT_KEY, &mut k);
    let key2 = Key2::from_bytes(k);
    let client = DataKeys::new(CipherKind::Aes256Gcm, &key2, Role::Client);
    let server = DataKeys::new(CipherKind::Aes256Gcm, &key2, Role::Server);
    let Some((&sel, plaintext)) = data.split_first() else {
        return;
    };
    if plaintext.is_empty() {
        return;
    }
    let header = DataHeader {
        key_id: KeyId::from_low_bits(sel),
        peer_id: (sel & 8 != 0).then_some(u32::from(sel) << 8),
    };
    buf.clear();
    buf.resize(DATA_HEADROOM, 0);
    buf.extend_from_slice(plaintext);
    let range = client.seal(header, 7, &mut buf);
    let packet = &mut buf[range];
    assert_eq!(DataHeader::parse(packet), Ok(header));
    let (pid, pt) = server.open(packet).expect("own packet opens");
    assert_eq!(pid, 7);
    assert_eq!(&packet[pt.clone()], plaintext);
    occ(&packet[pt]);
}

// ---- warren-config ----

fn config_text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// The directive lexer and the server lowering (paths resolve against a directory that
/// does not exist; lowering only checks for existence, it reads no file).
pub fn config_server(data: &[u8]) {
    let text = config_text(data);
    let _ = warren_config::parse_str(&text, "fuzz");
    let _ =
        warren_config::server_config_from_str(&text, "fuzz", Path::new("/nonexistent/warren-fuzz"));
}

/// The client lowering (`.ovpn` files).
pub fn config_client(data: &[u8]) {
    let text = config_text(data);
    let _ =
        warren_config::client_config_from_str(&text, "fuzz", Path::new("/nonexistent/warren-fuzz"));
}
