//! One peer's control session, server side (OpenVPN's `tls_multi`).
//!
//! A session has one pair of session ids for its whole life, one control-channel wrap replay
//! counter (`tls_session.tls_wrap`, it continues across renegotiations) and up to three key
//! states: the newest first, then lame ducks. It runs key-method 2, answers PUSH_REQUEST,
//! sends keepalive pings, notices ping-restart, and renegotiates (`reneg-sec`, or a soft
//! reset from the peer). Address allocation and the push contents are decided by the server,
//! which owns the shared resources; the session raises [`Session::pending_connect`] when the
//! first key-method 2 exchange is complete.
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use warren_core::{Instant, KeyId, SessionId};
use warren_crypto::{CipherKind, DataHeader, DataKeys, Key2, ReplayStamp, ReplayWindow, Role, DATA_HEADROOM};
use warren_wire::{
    encode_control_message, iv_proto, AckBlock, ControlMessageReader, ControlPacket, KeyMethod2, Opcode,
    PeerInfo, WireError, PING_MAGIC,
};

use crate::keystate::{KeyState, Phase};
use crate::server::{DisconnectReason, DropReason, KeyDerivation, Shared};

/// The most key states kept at once (primary, lame duck, and one being negotiated).
const MAX_KEY_STATES: usize = 3;
/// How long a replaced key is still accepted (OpenVPN `tran-window`, default 3600 s).
const TRANSITION_WINDOW: Duration = Duration::from_secs(3600);
/// Minimum time between two PUSH_REPLY answers to repeated PUSH_REQUESTs.
const PUSH_REPLY_INTERVAL: Duration = Duration::from_secs(5);
/// Packet id at which a renegotiation is forced (packet_id.h PACKET_ID_WRAP_TRIGGER).
const PACKET_ID_WRAP_TRIGGER: u32 = 0xFF00_0000;
/// How long a closing session lingers to flush a last message (AUTH_FAILED, TLS alert).
const CLOSE_LINGER: Duration = Duration::from_secs(2);

pub(crate) struct Session {
    pub peer_id: u32,
    /// Bumped each time the slot is reused, so stale timer entries can be recognised.
    pub generation: u64,
    pub addr: SocketAddr,
    pub local_sid: SessionId,
    pub remote_sid: SessionId,
    wrap_tx_id: u32,
    wrap_tx_time: u32,
    wrap_rx: ReplayWindow,
    /// Newest first.
    pub keys: Vec<KeyState>,
    pub common_name: Option<String>,
    pub peer_info: Option<PeerInfo>,
    pub vpn_ip: Option<Ipv4Addr>,
    pub cipher: Option<CipherKind>,
    pub ekm: bool,
    pub data_v2: bool,
    pub request_push: bool,
    pub cc_exit: bool,
    /// Set when key-method 2 of key id 0 is done; the server then allocates an address,
    /// builds the push reply and calls [`Session::set_push_reply`].
    pub pending_connect: bool,
    pub connected: bool,
    push_options: Option<Vec<String>>,
    push_sent: Option<Instant>,
    messages: ControlMessageReader,
    pub connected_since: Instant,
    pub last_recv: Instant,
    pub last_sent: Instant,
    ping_due: bool,
    reneg_at: Option<Instant>,
    /// Lingering before removal (a final message or alert is being flushed).
    closing: Option<(Instant, DisconnectReason)>,
    /// The server removes the session when this is set.
    pub dead: Option<DisconnectReason>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The earliest deadline the server's timer heap holds for this session.
    pub scheduled: Option<Instant>,
    scratch: Vec<u8>,
    acks: Vec<u32>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer_id", &self.peer_id)
            .field("addr", &self.addr)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Creates the session once the client has proven its address with the cookie
    /// (ssl.c:2676 session_skip_to_pre_start): our reset (msg-id 0, whose session id was the
    /// cookie) counts as sent and acknowledged, the client's reset (msg-id 0) as received,
    /// and our wrap replay counter continues after the stateless reset's id 1.
    #[allow(clippy::too_many_arguments)]
    pub fn from_cookie(
        sh: &mut Shared,
        now: Instant,
        peer_id: u32,
        generation: u64,
        addr: SocketAddr,
        local_sid: SessionId,
        remote_sid: SessionId,
        tls: rustls::ServerConnection,
    ) -> Self {
        let mut ks = KeyState::new(
            KeyId::ZERO,
            rustls::Connection::Server(tls),
            sh.reliable,
            now,
            sh.config.hand_window,
        );
        ks.reliable.queue(now, Opcode::ControlHardResetServerV2, Vec::new());
        ks.reliable.process_acks(&[0]);
        ks.reliable.receive(0, Opcode::ControlHardResetClientV2, &[]);
        while ks.reliable.pop_in_order().is_some() {}
        let mut s = Session {
            peer_id,
            generation,
            addr,
            local_sid,
            remote_sid,
            wrap_tx_id: 2,
            wrap_tx_time: sh.unix_now(now),
            wrap_rx: ReplayWindow::new(),
            keys: vec![ks],
            common_name: None,
            peer_info: None,
            vpn_ip: None,
            cipher: None,
            ekm: false,
            data_v2: false,
            request_push: false,
            cc_exit: false,
            pending_connect: false,
            connected: false,
            push_options: None,
            push_sent: None,
            messages: ControlMessageReader::new(),
            connected_since: now,
            last_recv: now,
            last_sent: now,
            ping_due: false,
            reneg_at: None,
            closing: None,
            dead: None,
            bytes_in: 0,
            bytes_out: 0,
            scheduled: None,
            scratch: Vec::new(),
            acks: Vec::new(),
        };
        // The client's reset was acked by the stateless reply; ack it again with the first
        // packet we send (harmless, and it helps when that reply was lost).
        s.keys[0].reliable.receive(0, Opcode::ControlHardResetClientV2, &[]);
        s
    }

    pub fn is_closing(&self) -> bool {
        self.closing.is_some() || self.dead.is_some()
    }

    /// Handles an authenticated, parsed control packet that belongs to this session.
    pub fn on_control(&mut self, sh: &mut Shared, now: Instant, stamp: Option<ReplayStamp>, pkt: &ControlPacket<'_>) {
        if let Some(st) = stamp {
            // OpenVPN checks the wrap packet-id after authentication (tls_crypt.c, ssl_pkt.c).
            if self.wrap_rx.check_and_update(st.id, st.time, now).is_err() {
                sh.count(DropReason::Replay);
                return;
            }
        }
        if !pkt.acks.ids.is_empty() && pkt.acks.remote_session != Some(self.local_sid) {
            // reliable.c reliable_ack_read: "ACK read BAD SESSION-ID".
            sh.count(DropReason::Malformed);
            return;
        }
        if self.is_closing() {
            return;
        }
        let idx = match self.keys.iter().position(|k| k.key_id == pkt.key_id) {
            Some(i) => i,
            None if pkt.opcode == Opcode::ControlSoftResetV1 => match self.accept_soft_reset(sh, now, pkt.key_id) {
                Some(i) => i,
                None => {
                    sh.count(DropReason::NoKey);
                    return;
                }
            },
            None => {
                sh.count(DropReason::NoKey);
                return;
            }
        };
        self.last_recv = now;
        let ks = &mut self.keys[idx];
        ks.reliable.process_acks(&pkt.acks.ids);
        if let Some(msg_id) = pkt.msg_id {
            ks.reliable.receive(msg_id, pkt.opcode, pkt.payload);
        }
        let mut tls_result = Ok(());
        while let Some((op, payload)) = ks.reliable.pop_in_order() {
            if op == Opcode::ControlV1 && tls_result.is_ok() {
                tls_result = ks.receive_tls(&payload);
            }
            // Reset payloads (early-negotiation TLVs) are only meaningful for tls-crypt-v2,
            // which is not offered; soft resets carry nothing.
        }
        if let Err(e) = tls_result {
            let first = self.common_name.is_none();
            let reason = format!("{e}");
            if first {
                sh.handshake_failed(self.addr, reason.clone());
            } else {
                tracing::warn!(peer_id = self.peer_id, "renegotiation failed: {reason}");
            }
            self.close(sh, now, DisconnectReason::TlsError(reason));
            self.keys[idx].queue_tls_output(now, sh.max_payload);
            return;
        }
        if let Err(reason) = self.process_plaintext(sh, now, idx) {
            sh.handshake_failed(self.addr, reason.clone());
            self.close(sh, now, DisconnectReason::TlsError(reason));
        }
        self.update_phase(sh, now, idx);
    }

    /// Peer-initiated renegotiation: a soft reset on the next key id (ssl.c:3850).
    fn accept_soft_reset(&mut self, sh: &mut Shared, now: Instant, key_id: KeyId) -> Option<usize> {
        let primary = self.keys.first()?;
        if primary.phase != Phase::Active || key_id != primary.key_id.next() {
            return None;
        }
        self.start_key_state(sh, now, key_id)?;
        Some(0)
    }

    /// Starts a new key state (ours or the peer's soft reset) and queues our SOFT_RESET.
    fn start_key_state(&mut self, sh: &mut Shared, now: Instant, key_id: KeyId) -> Option<()> {
        let tls = match rustls::ServerConnection::new(sh.config.tls.clone()) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("cannot start TLS for renegotiation: {e}");
                return None;
            }
        };
        let mut ks = KeyState::new(key_id, rustls::Connection::Server(tls), sh.reliable, now, sh.config.hand_window);
        ks.reliable.queue(now, Opcode::ControlSoftResetV1, Vec::new());
        // Drop the oldest states beyond the limit, never the primary.
        while self.keys.len() >= MAX_KEY_STATES {
            self.keys.pop();
        }
        self.keys.insert(0, ks);
        self.reneg_at = None;
        Some(())
    }

    fn process_plaintext(&mut self, sh: &mut Shared, now: Instant, idx: usize) -> Result<(), String> {
        let ks = &mut self.keys[idx];
        if ks.is_handshaking() {
            return Ok(());
        }
        if !ks.km2_received {
            match KeyMethod2::parse(&ks.plain_in, true) {
                Ok((km2, used)) => {
                    ks.plain_in.drain(..used);
                    ks.km2_received = true;
                    self.on_client_km2(sh, now, idx, km2)?;
                }
                Err(WireError::Truncated) => return Ok(()),
                Err(e) => return Err(format!("bad key-method 2 message: {e}")),
            }
        }
        let ks = &mut self.keys[idx];
        if ks.km2_received && !ks.plain_in.is_empty() {
            let bytes = std::mem::take(&mut ks.plain_in);
            self.messages.push(&bytes);
            while let Some(msg) = self.messages.next_message() {
                self.on_control_message(sh, now, &msg);
            }
        }
        Ok(())
    }

    fn on_client_km2(&mut self, sh: &mut Shared, now: Instant, idx: usize, km2: KeyMethod2) -> Result<(), String> {
        let ks = &self.keys[idx];
        let cn = ks
            .peer_certificates()
            .and_then(crate::tls::peer_common_name)
            .or_else(|| (!km2.username.is_empty()).then(|| km2.username.clone()))
            .ok_or_else(|| "client certificate has no common name".to_string())?;
        let first = self.common_name.is_none();
        if first {
            let info = PeerInfo::parse(&km2.peer_info);
            self.data_v2 = info.proto & iv_proto::DATA_V2 != 0;
            self.request_push = info.proto & iv_proto::REQUEST_PUSH != 0;
            self.cc_exit = info.proto & iv_proto::CC_EXIT_NOTIFY != 0;
            self.ekm = info.proto & iv_proto::TLS_KEY_EXPORT != 0 && sh.config.key_derivation == KeyDerivation::Auto;
            self.cipher = Some(negotiate_cipher(sh, &info, &km2.options)?);
            tracing::debug!(
                peer_id = self.peer_id,
                version = info.version.as_deref().unwrap_or("?"),
                platform = info.platform.as_deref().unwrap_or("?"),
                proto = info.proto,
                "peer info"
            );
            self.peer_info = Some(info);
            self.common_name = Some(cn);
        } else if self.common_name.as_deref() != Some(cn.as_str()) {
            // ssl_verify.c: the common name must not change across renegotiations.
            return Err(format!(
                "common name changed during renegotiation from {:?} to {cn:?}",
                self.common_name.as_deref().unwrap_or("")
            ));
        }
        let cipher = self.cipher.ok_or("no cipher negotiated")?;

        // Our key-method 2 reply (ssl.c key_method_2_write): no pre-master from the server.
        let mut random1 = [0u8; 32];
        let mut random2 = [0u8; 32];
        sh.rng.fill(&mut random1);
        sh.rng.fill(&mut random2);
        let reply = KeyMethod2 {
            pre_master: None,
            random1,
            random2,
            // OCC options string (occ.c): informational; mirroring the client's own string
            // (with our role) avoids spurious "used inconsistently" warnings in its log.
            options: server_occ(&km2.options).unwrap_or_else(|| sh.occ_options()),
            username: String::new(),
            password: String::new(),
            peer_info: String::new(),
        };
        let mut buf = Vec::with_capacity(256);
        reply.write(&mut buf).map_err(|e| format!("cannot encode key-method 2 reply: {e}"))?;
        let ks = &mut self.keys[idx];
        ks.write_record(&buf);
        ks.km2_sent = true;

        let key2 = if self.ekm {
            ks.export_key2().map_err(|e| format!("TLS exporter failed: {e}"))?
        } else {
            let pre_master = km2.pre_master.ok_or("client key-method 2 lacks the pre-master secret")?;
            warren_crypto::openvpn_prf_key2(
                &pre_master,
                &km2.random1,
                &random1,
                &km2.random2,
                &random2,
                &self.remote_sid.0,
                &self.local_sid.0,
            )
        };
        install_keys(ks, cipher, &key2);
        ks.phase = Phase::KeysReady;
        if first {
            self.pending_connect = true;
        } else {
            tracing::debug!(peer_id = self.peer_id, key_id = ks.key_id.get(), "renegotiated");
            sh.renegotiated(now, self.peer_id, ks.key_id.get());
        }
        Ok(())
    }

    fn on_control_message(&mut self, sh: &mut Shared, now: Instant, msg: &str) {
        if msg == "PUSH_REQUEST" {
            let recently = self.push_sent.is_some_and(|t| now < t + PUSH_REPLY_INTERVAL);
            if !recently {
                self.send_push_reply(sh, now);
            }
        } else if msg == "EXIT" {
            // explicit-exit-notify with cc-exit: free the session at once.
            self.dead = Some(DisconnectReason::ExitNotify);
        } else {
            tracing::debug!(peer_id = self.peer_id, "ignoring control message {msg:?}");
        }
    }

    /// Called by the server once the address is allocated and the options decided.
    pub fn set_push_reply(&mut self, sh: &mut Shared, now: Instant, options: Vec<String>) {
        self.pending_connect = false;
        self.connected = true;
        self.push_options = Some(options);
        if self.request_push {
            self.send_push_reply(sh, now);
        }
        self.schedule_reneg(sh, now);
    }

    fn send_push_reply(&mut self, sh: &mut Shared, now: Instant) {
        let Some(options) = &self.push_options else { return };
        let Some(idx) = self.keys.iter().position(|k| k.km2_sent) else { return };
        let mut buf = Vec::new();
        for msg in warren_wire::build_push_replies(options) {
            buf.clear();
            encode_control_message(&msg, &mut buf);
            self.keys[idx].write_record(&buf);
        }
        self.keys[idx].queue_tls_output(now, sh.max_payload);
        self.push_sent = Some(now);
    }

    /// Sends a control message (e.g. `RESTART`, `AUTH_FAILED`) on the newest usable key.
    pub fn send_control_message(&mut self, sh: &mut Shared, now: Instant, msg: &str) {
        let Some(idx) = self.keys.iter().position(|k| k.km2_sent) else { return };
        let mut buf = Vec::new();
        encode_control_message(msg, &mut buf);
        self.keys[idx].write_record(&buf);
        self.keys[idx].queue_tls_output(now, sh.max_payload);
    }

    /// Ends the session after a short linger that lets a last message or alert go out.
    pub fn close(&mut self, _sh: &mut Shared, now: Instant, reason: DisconnectReason) {
        if self.closing.is_none() {
            self.closing = Some((now + CLOSE_LINGER, reason));
        }
    }

    fn schedule_reneg(&mut self, sh: &mut Shared, now: Instant) {
        if let Some(reneg) = sh.config.reneg {
            // The server subtracts up to 10% jitter so it usually renegotiates first
            // (ssl.c tls_session_init / key_state_init: reneg-sec jitter).
            let secs = reneg.as_secs().max(1);
            let jitter = u64::from(sh.rng.next_u32()) % (secs / 10 + 1);
            self.reneg_at = Some(now + Duration::from_secs(secs - jitter));
        }
    }

    fn update_phase(&mut self, sh: &mut Shared, now: Instant, idx: usize) {
        let ks = &mut self.keys[idx];
        ks.queue_tls_output(now, sh.max_payload);
        if ks.phase == Phase::KeysReady && ks.reliable.all_acked() && !ks.has_unsent_tls() && !self.pending_connect {
            ks.phase = Phase::Active;
            ks.established = Some(now);
            if idx == 0 && self.keys.len() > 1 {
                // The new key takes over; the old ones become lame ducks.
                for old in &mut self.keys[1..] {
                    if old.expires.is_none() {
                        old.expires = Some(now + TRANSITION_WINDOW);
                    }
                }
                self.schedule_reneg(sh, now);
            }
        }
    }

    /// The key used for sending data: the newest Active one with data keys.
    fn send_key_index(&self) -> Option<usize> {
        self.keys.iter().position(|k| k.phase == Phase::Active && k.data.is_some())
    }

    /// Seals `buf[DATA_HEADROOM..]` in place for this peer. Returns the packet's range.
    pub fn seal_data(&mut self, now: Instant, buf: &mut [u8]) -> Option<std::ops::Range<usize>> {
        let idx = self.send_key_index()?;
        let peer_id = self.data_v2.then_some(self.peer_id);
        let ks = &mut self.keys[idx];
        let pid = ks.next_packet_id()?;
        if pid >= PACKET_ID_WRAP_TRIGGER && self.reneg_at.is_none_or(|t| t > now) {
            self.reneg_at = Some(now);
        }
        let data = ks.data.as_ref()?;
        let range = data.seal(DataHeader { key_id: ks.key_id, peer_id }, pid, buf);
        self.last_sent = now;
        self.bytes_out += (buf.len() - DATA_HEADROOM) as u64;
        Some(range)
    }

    /// Opens a data packet in place; returns the plaintext range. Does the replay check.
    pub fn open_data(&mut self, now: Instant, key_id: KeyId, packet: &mut [u8]) -> Result<std::ops::Range<usize>, DropReason> {
        let ks = self
            .keys
            .iter_mut()
            .find(|k| k.key_id == key_id && k.data.is_some())
            .ok_or(DropReason::NoKey)?;
        let data = ks.data.as_ref().ok_or(DropReason::NoKey)?;
        let (pid, range) = data.open(packet).map_err(|_| DropReason::DecryptFailed)?;
        // crypto.c:454: authenticate first, then the replay check.
        ks.rx_replay.check_and_update(pid, 0, now).map_err(|_| DropReason::Replay)?;
        self.last_recv = now;
        self.bytes_in += range.len() as u64;
        Ok(range)
    }

    pub fn next_timeout(&self, sh: &Shared) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        if self.dead.is_some() {
            return None;
        }
        if let Some((at, _)) = &self.closing {
            consider(Some(*at));
        }
        for ks in &self.keys {
            consider(ks.reliable.poll_timeout());
            if ks.phase != Phase::Active {
                consider(Some(ks.handshake_deadline));
            }
            consider(ks.expires);
        }
        if self.closing.is_none() {
            if self.connected {
                if let Some(p) = sh.config.ping {
                    consider(Some(self.last_sent + p));
                }
                consider(self.reneg_at);
            }
            if let Some(pr) = sh.config.ping_restart {
                consider(Some(self.last_recv + pr));
            }
        }
        t
    }

    pub fn handle_timeout(&mut self, sh: &mut Shared, now: Instant) {
        if let Some((at, reason)) = &self.closing {
            if now >= *at {
                self.dead = Some(reason.clone());
            }
            return;
        }
        if let Some(pr) = sh.config.ping_restart {
            if now >= self.last_recv + pr {
                self.dead = Some(DisconnectReason::PingTimeout);
                return;
            }
        }
        let mut i = 0;
        while i < self.keys.len() {
            let ks = &self.keys[i];
            if ks.phase != Phase::Active && now >= ks.handshake_deadline {
                if ks.key_id == KeyId::ZERO || self.keys.len() == 1 {
                    // ssl.c: "TLS key negotiation failed to occur within 60 seconds".
                    if self.common_name.is_none() {
                        sh.handshake_failed(self.addr, "TLS handshake did not finish within hand-window".into());
                    }
                    self.dead = Some(DisconnectReason::HandshakeTimeout);
                    return;
                }
                tracing::warn!(peer_id = self.peer_id, key_id = ks.key_id.get(), "renegotiation timed out");
                self.keys.remove(i);
                self.schedule_reneg(sh, now);
                continue;
            }
            if ks.expires.is_some_and(|e| now >= e) && i > 0 {
                self.keys.remove(i);
                continue;
            }
            i += 1;
        }
        if self.connected {
            if let Some(p) = sh.config.ping {
                if now >= self.last_sent + p {
                    self.ping_due = true;
                }
            }
            if self.reneg_at.is_some_and(|t| now >= t) {
                self.reneg_at = None;
                let busy = self.keys.first().is_some_and(|k| k.phase != Phase::Active);
                if !busy {
                    if let Some(next) = self.keys.first().map(|k| k.key_id.next()) {
                        tracing::debug!(peer_id = self.peer_id, key_id = next.get(), "starting renegotiation");
                        if self.start_key_state(sh, now, next).is_none() {
                            self.schedule_reneg(sh, now);
                        }
                    }
                }
            }
        }
    }

    /// Writes the next datagram for this session into `out`. Returns false when there is
    /// nothing more to send now.
    pub fn poll_transmit(&mut self, sh: &mut Shared, now: Instant, out: &mut Vec<u8>) -> bool {
        if self.dead.is_some() {
            return false;
        }
        // Control packets due (first transmissions and retransmissions), newest key first.
        for idx in 0..self.keys.len() {
            self.keys[idx].queue_tls_output(now, sh.max_payload);
            let next = self.keys[idx].reliable.poll_transmit(now).map(|p| {
                self.scratch.clear();
                self.scratch.extend_from_slice(p.payload);
                (p.msg_id, p.opcode)
            });
            if let Some((msg_id, opcode)) = next {
                let payload = std::mem::take(&mut self.scratch);
                // CONTROL_SEND_ACK_MAX (ssl.h:55): at most 4 ACKs piggybacked.
                self.emit_control(sh, now, idx, opcode, Some(msg_id), &payload, 4, out);
                self.scratch = payload;
                return true;
            }
        }
        // Nothing to piggyback on: a bare P_ACK_V1 with up to 8 ACKs (ssl.c:3148).
        for idx in 0..self.keys.len() {
            if self.keys[idx].reliable.needs_ack() {
                self.emit_control(sh, now, idx, Opcode::AckV1, None, &[], warren_wire::MAX_ACKS, out);
                return true;
            }
        }
        if self.ping_due {
            self.ping_due = false;
            out.clear();
            out.resize(DATA_HEADROOM + PING_MAGIC.len(), 0);
            out[DATA_HEADROOM..].copy_from_slice(&PING_MAGIC);
            if let Some(range) = self.seal_data(now, out) {
                out.truncate(range.end);
                out.drain(..range.start);
                return true;
            }
        }
        false
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_control(
        &mut self,
        sh: &mut Shared,
        now: Instant,
        idx: usize,
        opcode: Opcode,
        msg_id: Option<u32>,
        payload: &[u8],
        max_acks: usize,
        out: &mut Vec<u8>,
    ) {
        self.acks.clear();
        let ks = &mut self.keys[idx];
        ks.reliable.write_acks(max_acks, &mut self.acks);
        let pkt = ControlPacket {
            opcode,
            key_id: ks.key_id,
            session_id: self.local_sid,
            acks: AckBlock {
                ids: self.acks.clone(),
                remote_session: (!self.acks.is_empty()).then_some(self.remote_sid),
            },
            msg_id,
            payload,
        };
        let mut body = Vec::with_capacity(payload.len() + 64);
        pkt.write_body(&mut body);
        let stamp = ReplayStamp { id: self.wrap_tx_id, time: self.wrap_tx_time };
        self.wrap_tx_id = self.wrap_tx_id.wrapping_add(1);
        sh.wrap.wrap(&pkt.head(), stamp, &body, out);
        self.last_sent = now;
    }
}

fn server_occ(client: &str) -> Option<String> {
    let base = client.strip_suffix("tls-client")?;
    (client.starts_with("V4,") && client.len() < 500).then(|| format!("{base}tls-server"))
}

fn install_keys(ks: &mut KeyState, cipher: CipherKind, key2: &Key2) {
    ks.data = Some(Arc::new(DataKeys::new(cipher, key2, Role::Server)));
}

/// NCP (ssl_ncp.c:248): the first of our `data-ciphers` the client lists in IV_CIPHERS; for
/// clients without IV_CIPHERS, their OCC `cipher` if we allow it, else `data-ciphers-fallback`.
fn negotiate_cipher(sh: &Shared, info: &PeerInfo, occ: &str) -> Result<CipherKind, String> {
    let ours = &sh.config.data_ciphers;
    if !info.ciphers.is_empty() {
        for c in ours {
            if info.ciphers.iter().any(|p| CipherKind::from_name(p) == Some(*c)) {
                return Ok(*c);
            }
        }
        return Err(format!(
            "no common data cipher: client offers {}, server allows {}",
            info.ciphers.join(":"),
            ours.iter().map(|c| c.name()).collect::<Vec<_>>().join(":")
        ));
    }
    let occ_cipher = occ
        .split(',')
        .find_map(|item| item.strip_prefix("cipher "))
        .and_then(CipherKind::from_name);
    if let Some(c) = occ_cipher.filter(|c| ours.contains(c)) {
        return Ok(c);
    }
    sh.config
        .data_ciphers_fallback
        .ok_or_else(|| "client announced no ciphers and no data-ciphers-fallback is set".to_string())
}
