//! One key state: a TLS session, its reliability layer and the data keys it produces.
//!
//! OpenVPN runs a brand-new TLS session per key id (ssl.c key_state_init): the hard reset
//! starts key id 0, every renegotiation (soft reset) starts the next id. Each key state has its
//! own msg-id sequence, its own reliability windows and, once key-method 2 is done, its own
//! data-channel keys. The session (see `session.rs`) decides what to write; this type moves
//! bytes between the reliability layer and rustls.
use std::io::{Read, Write};
use std::sync::Arc;

use warren_core::{Instant, KeyId};
use warren_crypto::{DataKeys, ReplayWindow};
use warren_wire::Opcode;

use crate::dataplane::TxCounter;
use crate::reliable::{Reliable, ReliableConfig};

/// Largest TLS plaintext we buffer from one peer before the key-method-2 message and the
/// control messages are parsed out of it. Stock OpenVPN reads at most 2048 bytes per record
/// (TLS_CHANNEL_BUF_SIZE); anything far beyond that is a misbehaving peer.
const MAX_PLAINTEXT_BUFFER: usize = 64 * 1024;

/// Where a key state is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Resets exchanged or under way, TLS handshake and key-method 2 running.
    Handshake,
    /// Key-method 2 done and data keys derived; waiting until the peer has ACKed everything we
    /// sent (OpenVPN's S_ACTIVE gate, ssl.c:2899), after which we may send data on this key.
    KeysReady,
    /// Fully established: the preferred key for sending.
    Active,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyStateError {
    /// Logged as [`describe_tls_error`](crate::tls::describe_tls_error) words it.
    #[error("{}", crate::tls::describe_tls_error(.0))]
    Tls(#[from] rustls::Error),
    #[error("peer sent more than {MAX_PLAINTEXT_BUFFER} bytes of unparsed control-channel data")]
    PlaintextOverflow,
}

pub(crate) struct KeyState {
    pub key_id: KeyId,
    pub phase: Phase,
    pub reliable: Reliable,
    tls: rustls::Connection,
    /// TLS ciphertext produced by rustls but not yet cut into control packets (the send
    /// window was full).
    tls_out: Vec<u8>,
    /// TLS plaintext received and not yet consumed by the session.
    pub plain_in: Vec<u8>,
    /// A tls-crypt-v2 client whose server asked for the wrapped key again (early
    /// negotiation, fact sheet §3.3): msg-id 1 goes out as `P_CONTROL_WKC_V1` with WKc
    /// (this many bytes) appended, so its payload leaves room for it (ssl.c
    /// control_packet_needs_wkc).
    pub wkc_first: Option<usize>,
    /// May TLS output go on the wire? A client holds its ClientHello until the server's
    /// reset arrived (S_START), so that it carries the ACK the server's cookie check wants.
    pub tls_enabled: bool,
    /// Our and the peer's key-method-2 messages, kept until the data keys are derived (the
    /// TLS1-PRF needs both sides' randoms).
    pub local_km2: Option<warren_wire::KeyMethod2>,
    pub remote_km2: Option<warren_wire::KeyMethod2>,
    /// The session has parsed the peer's key-method-2 message.
    pub km2_received: bool,
    pub km2_sent: bool,
    /// Data-channel keys, once derived. Immutable and shareable across threads.
    pub data: Option<Arc<DataKeys>>,
    /// Data packet ids to send (from 1, never 0), shared with data workers.
    pub tx: Arc<TxCounter>,
    pub rx_replay: ReplayWindow,
    /// When it became Active.
    pub established: Option<Instant>,
    /// The handshake must be done by then (hand-window).
    pub handshake_deadline: Instant,
    /// For a lame-duck key: when it stops being accepted.
    pub expires: Option<Instant>,
}

impl std::fmt::Debug for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyState")
            .field("key_id", &self.key_id)
            .field("phase", &self.phase)
            .field("tx_next", &self.tx.peek())
            .finish_non_exhaustive()
    }
}

impl KeyState {
    pub fn new(
        key_id: KeyId,
        tls: rustls::Connection,
        reliable: ReliableConfig,
        now: Instant,
        hand_window: std::time::Duration,
    ) -> Self {
        KeyState {
            key_id,
            phase: Phase::Handshake,
            reliable: Reliable::new(reliable),
            tls,
            tls_out: Vec::new(),
            plain_in: Vec::new(),
            tls_enabled: false,
            wkc_first: None,
            local_km2: None,
            remote_km2: None,
            km2_received: false,
            km2_sent: false,
            data: None,
            tx: Arc::new(TxCounter::new()),
            rx_replay: ReplayWindow::new(),
            established: None,
            handshake_deadline: now + hand_window,
            expires: None,
        }
    }

    pub fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// Feeds in-order control payload (TLS ciphertext) to rustls and collects any plaintext.
    pub fn receive_tls(&mut self, mut data: &[u8]) -> Result<(), KeyStateError> {
        while !data.is_empty() {
            // read_tls takes what fits in rustls' buffer; process and go on with the rest.
            let n = self.tls.read_tls(&mut data).unwrap_or_default();
            let result = self.tls.process_new_packets();
            if let Err(e) = result {
                // Flush the alert rustls queued so the peer learns why.
                self.pull_tls_output();
                return Err(e.into());
            }
            self.read_plaintext()?;
            if n == 0 {
                break;
            }
        }
        self.pull_tls_output();
        Ok(())
    }

    fn read_plaintext(&mut self) -> Result<(), KeyStateError> {
        let mut buf = [0u8; 4096];
        loop {
            match self.tls.reader().read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    if self.plain_in.len() + n > MAX_PLAINTEXT_BUFFER {
                        return Err(KeyStateError::PlaintextOverflow);
                    }
                    self.plain_in.extend_from_slice(&buf[..n]);
                }
                // WouldBlock: no more plaintext for now. Other errors (unexpected EOF after
                // close_notify) leave what we have.
                Err(_) => return Ok(()),
            }
        }
    }

    /// Writes one application message as its own TLS record (OpenVPN reads one record per
    /// SSL_read, so key-method 2 and each control message must not share records).
    pub fn write_record(&mut self, msg: &[u8]) {
        // rustls buffers plaintext written before the handshake completes and encrypts each
        // write call into its own record(s); messages here are far below 16 KiB.
        if let Err(e) = self.tls.writer().write_all(msg) {
            tracing::debug!("TLS write failed: {e}");
        }
        self.pull_tls_output();
    }

    /// Moves rustls' pending ciphertext into `tls_out`.
    pub fn pull_tls_output(&mut self) {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.tls_out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Cuts pending TLS ciphertext into control packets while the send window has room.
    pub fn queue_tls_output(&mut self, now: Instant, max_payload: usize) {
        self.pull_tls_output();
        if !self.tls_enabled {
            return;
        }
        let mut offset = 0;
        while offset < self.tls_out.len() && self.reliable.can_queue() {
            let (opcode, room) = match self.needs_wkc() {
                // ssl.c write_outgoing_tls_ciphertext: at least 16 bytes of payload, even
                // with the largest wrapped key.
                Some(wkc_len) => (
                    Opcode::ControlWkcV1,
                    max_payload.saturating_sub(wkc_len).max(16),
                ),
                None => (Opcode::ControlV1, max_payload),
            };
            let end = (offset + room).min(self.tls_out.len());
            self.reliable
                .queue(now, opcode, self.tls_out[offset..end].to_vec());
            offset = end;
        }
        self.tls_out.drain(..offset);
    }

    /// The length of WKc if the next packet queued (msg-id 1) must carry it.
    pub fn needs_wkc(&self) -> Option<usize> {
        self.wkc_first.filter(|_| self.reliable.next_msg_id() == 1)
    }

    pub fn has_unsent_tls(&self) -> bool {
        !self.tls_out.is_empty()
    }

    /// RFC 5705 exporter for the data keys (`key-derivation tls-ekm`, ssl.c:1565).
    pub fn export_key2(&self) -> Result<warren_crypto::Key2, rustls::Error> {
        let mut out = [0u8; crate::tls::KEY_MATERIAL_LEN];
        crate::tls::export_key_material(&self.tls, &mut out)?;
        Ok(warren_crypto::Key2::from_bytes(out))
    }

    /// The peer's certificate chain, once the handshake got that far.
    pub fn peer_certificates(&self) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        self.tls.peer_certificates()
    }
}
