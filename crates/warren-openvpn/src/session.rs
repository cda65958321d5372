//! One peer's control session (OpenVPN's `tls_multi` with its `tls_session`), either role.
//!
//! A session has one pair of session ids for its whole life, one control-channel wrap replay
//! counter (`tls_session.tls_wrap`: it continues across renegotiations) and up to three key
//! states: the newest first, then lame ducks. It runs key-method 2, the push exchange,
//! keepalive pings, ping-restart and renegotiation (`reneg-sec`, the packet-id wrap trigger, or
//! a soft reset from the peer).
//!
//! The shared mechanics are [`Session`]; what only one role has and does is its `side`, a
//! [`ServerSide`] or a [`ClientSide`] (the [`Side`] trait is how the shared code asks it).
//! Role differences, as in OpenVPN:
//! * the client starts with a hard reset and learns the server's session id from its reply;
//!   it writes key-method 2 first (with the pre-master secret) and derives the key-id-0 data
//!   keys only once PUSH_REPLY has told it the cipher and the key derivation (push.c);
//! * the server is created after the client proved its address (the cookie), answers
//!   key-method 2, and pushes. Address allocation and push contents are the server
//!   endpoint's; the session waits in [`Stage::PendingConnect`] while they are decided.
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use warren_core::{Instant, KeyId, PeerId, SessionId};
use warren_crypto::{
    CipherKind, ControlWrap, DATA_HEADROOM, DATA_TAILROOM, DataKeys, ReplayStamp, ReplayWindow,
    Role,
};
use warren_wire::{
    AckBlock, ControlMessageReader, ControlPacket, KeyMethod2, Opcode, PING_MAGIC, PeerInfo,
    WireError, encode_control_message, iv_proto,
};

use crate::ctx::{Ctx, SessionEvent};
use crate::dataplane::{Activity, DataKeyRef, PeerData, open_with, seal_with};
use crate::keystate::{KeyState, KeyStateError, Phase};
use crate::push::{PushedConfig, parse_pushed};
use crate::types::{
    ClientDisconnect, DisconnectReason, DropReason, HandshakeFailure, KeyDerivation,
};

/// The most key states kept at once (primary, lame duck, and one being negotiated).
const MAX_KEY_STATES: usize = 3;
/// How long a replaced key is still accepted (OpenVPN `tran-window`, default 3600 s).
const TRANSITION_WINDOW: Duration = Duration::from_secs(3600);
/// Minimum time between two PUSH_REPLY answers to repeated PUSH_REQUESTs.
const PUSH_REPLY_INTERVAL: Duration = Duration::from_secs(5);
/// The client's first PUSH_REQUEST when the server has not pushed on its own, and the
/// interval of repeats (common.h PUSH_REQUEST_INTERVAL).
const PUSH_REQUEST_FIRST: Duration = Duration::from_secs(1);
const PUSH_REQUEST_INTERVAL: Duration = Duration::from_secs(5);
/// How long a closing session lingers to flush a last message (AUTH_FAILED, EXIT, alert).
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// What one role adds to the shared mechanics of a [`Session`]: its own state, and its
/// answers where the shared code cannot decide.
pub(crate) trait Side: Sized {
    /// Why a session of this role ended, in the endpoint's terms.
    type End: Clone;
    const ROLE: Role;
    const PING_TIMEOUT: Self::End;
    const HANDSHAKE_TIMEOUT: Self::End;
    /// The end of a session that `err` closes.
    fn end_for(err: &SessionError) -> Self::End;
    /// The peer id to log with, once there is one.
    fn peer_id(s: &Session<Self>) -> Option<PeerId>;
    /// Whether the peer has an identity yet (a server: the client's common name). An error
    /// before that, and before the session connected, is a failed handshake.
    fn identified(&self) -> bool;
    /// The peer's key-method 2 message of key state `idx` arrived.
    fn on_key_method_2(
        s: &mut Session<Self>,
        ctx: &mut Ctx,
        now: Instant,
        idx: usize,
        km2: KeyMethod2,
    ) -> Result<(), SessionError>;
    /// A control message (`PUSH_REQUEST`, `PUSH_REPLY`, `AUTH_FAILED`, `EXIT`...).
    fn on_message(
        s: &mut Session<Self>,
        ctx: &mut Ctx,
        now: Instant,
        msg: &str,
    ) -> Result<(), SessionError>;
    /// A new key state was started at index 0 (a renegotiation).
    fn on_new_key(_s: &mut Session<Self>, _ctx: &mut Ctx) {}
}

/// How far a session got: the open stages of [`Lifecycle`], in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// TLS handshake and key-method 2 of key id 0 (a client: until PUSH_REPLY).
    Handshaking,
    /// Server: key-method 2 of key id 0 is done; the endpoint authorises the client,
    /// allocates its address and calls [`Session::set_push_reply`].
    PendingConnect,
    /// Server with external authentication: an `AuthRequest` is out, no decision yet.
    AwaitingAuth,
    Connected,
}

/// Where a session is in its life. Only the transitions below change it. A closing or dead
/// session keeps the stage it had reached, which decides what the endpoint reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lifecycle<E> {
    Open(Stage),
    /// Lingering until `until` so that a last message or alert goes out.
    Closing {
        until: Instant,
        end: E,
        stage: Stage,
    },
    /// Over: the endpoint removes the session.
    Dead {
        end: E,
        stage: Stage,
    },
}

impl<E> Lifecycle<E> {
    /// The stage reached (the one it left, once closing).
    pub fn stage(&self) -> Stage {
        match self {
            Lifecycle::Open(s)
            | Lifecycle::Closing { stage: s, .. }
            | Lifecycle::Dead { stage: s, .. } => *s,
        }
    }

    /// Open at `stage`.
    pub fn is(&self, stage: Stage) -> bool {
        matches!(self, Lifecycle::Open(s) if *s == stage)
    }

    /// Connected, or closing after it was.
    pub fn is_connected(&self) -> bool {
        self.stage() == Stage::Connected
    }

    /// The driver was told about the peer (an authentication request or a connect) and must
    /// hear of its end.
    pub fn announced(&self) -> bool {
        matches!(self.stage(), Stage::AwaitingAuth | Stage::Connected)
    }

    /// Closing or dead.
    pub fn is_closing(&self) -> bool {
        !matches!(self, Lifecycle::Open(_))
    }

    /// Why it ended, once dead.
    pub fn end(&self) -> Option<&E> {
        match self {
            Lifecycle::Dead { end, .. } => Some(end),
            _ => None,
        }
    }

    /// Moves an open session from stage `from` to `to`; false (and no change) otherwise.
    fn advance(&mut self, from: Stage, to: Stage) -> bool {
        let ok = self.is(from);
        if ok {
            *self = Lifecycle::Open(to);
        }
        ok
    }

    /// Server: key-method 2 of key id 0 is done.
    pub fn keys_done(&mut self) {
        self.advance(Stage::Handshaking, Stage::PendingConnect);
    }

    /// Server: the endpoint asked the driver for a decision.
    pub fn auth_requested(&mut self) {
        self.advance(Stage::PendingConnect, Stage::AwaitingAuth);
    }

    /// Server: the driver's decision arrived. False when none was awaited.
    pub fn auth_answered(&mut self) -> bool {
        self.advance(Stage::AwaitingAuth, Stage::PendingConnect)
    }

    /// The tunnel is up (a client from the handshake, a server once the endpoint decided).
    pub fn connect(&mut self) {
        if !self.advance(Stage::PendingConnect, Stage::Connected) {
            self.advance(Stage::Handshaking, Stage::Connected);
        }
    }

    /// Starts the linger that ends in `Dead`; nothing changes once closing.
    pub fn close(&mut self, until: Instant, end: E) {
        if let Lifecycle::Open(stage) = *self {
            *self = Lifecycle::Closing { until, end, stage };
        }
    }

    /// Ends the session at once (a dead session keeps its first reason).
    pub fn die(&mut self, end: E) {
        if !matches!(self, Lifecycle::Dead { .. }) {
            let stage = self.stage();
            *self = Lifecycle::Dead { end, stage };
        }
    }

    /// A closing session whose linger is over dies.
    fn linger_over(&mut self, now: Instant)
    where
        E: Clone,
    {
        if let Lifecycle::Closing { until, end, stage } = self
            && now >= *until
        {
            *self = Lifecycle::Dead {
                end: end.clone(),
                stage: *stage,
            };
        }
    }
}

/// A session's deadlines, in one small table. The rows of one key state (retransmission
/// after tls-timeout, the hand-window, a lame duck's expiry) live with that key state and
/// end with it; [`Timers::next_deadline`] folds them in, and the linger of a closing
/// session, so the server's heap and the client's driver schedule by one instant.
#[derive(Debug)]
pub(crate) struct Timers {
    /// `ping`: a keepalive goes out when nothing was sent for this long (once connected).
    ping: Option<Duration>,
    /// `ping-restart`: the session ends when nothing arrived for this long.
    ping_restart: Option<Duration>,
    /// A keepalive is due; the next `poll_transmit` sends it.
    ping_due: bool,
    /// The next renegotiation (`reneg-sec`, or at once when the packet ids are spent).
    reneg: Option<Instant>,
    /// Client: the next PUSH_REQUEST.
    push_request: Option<Instant>,
}

impl Timers {
    fn new(ping: Option<Duration>, ping_restart: Option<Duration>) -> Self {
        Timers {
            ping,
            ping_restart,
            ping_due: false,
            reneg: None,
            push_request: None,
        }
    }

    /// The earliest deadline of a session in `state` with `keys`, whose traffic clock is
    /// `activity`; `None` once it is dead.
    pub fn next_deadline<E>(
        &self,
        state: &Lifecycle<E>,
        keys: &[KeyState],
        activity: &Activity,
    ) -> Option<Instant> {
        let (linger, stage) = match state {
            Lifecycle::Dead { .. } => return None,
            Lifecycle::Closing { until, .. } => (Some(*until), None),
            Lifecycle::Open(stage) => (None, Some(*stage)),
        };
        let key_rows = keys.iter().flat_map(|ks| {
            let handshake = (ks.phase != Phase::Active).then_some(ks.handshake_deadline);
            [ks.reliable.poll_timeout(), handshake, ks.expires]
        });
        // The session's own rows run while it is open; ping and reneg once connected.
        let connected = stage == Some(Stage::Connected);
        let rows = [
            self.ping
                .filter(|_| connected)
                .map(|p| activity.last_sent() + p),
            self.reneg.filter(|_| connected),
            self.ping_restart
                .filter(|_| stage.is_some())
                .map(|p| activity.last_received() + p),
            self.push_request.filter(|_| stage.is_some()),
        ];
        [linger]
            .into_iter()
            .chain(key_rows)
            .chain(rows)
            .flatten()
            .min()
    }
}

/// What goes on the wire when a session meets an error (house style: a bad packet is
/// counted and dropped, a session-fatal error ends that session with a reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WireAction {
    /// Count the packet as dropped; the session goes on.
    Drop(DropReason),
    /// End the session after the linger that flushes a TLS alert; the peer starts over.
    Reset,
    /// Send `AUTH_FAILED` (with the reason, when there is one), then end as `Reset` does.
    AuthFailed(Option<String>),
}

/// An error inside the engine. [`SessionError::action`] says what it means on the wire and
/// [`Session::fail`] acts on that, in one place.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// A packet the session cannot use (never logged: the sender controls the volume).
    #[error("packet dropped: {0:?}")]
    Dropped(DropReason),
    #[error(transparent)]
    KeyState(#[from] KeyStateError),
    #[error("bad key-method 2 message: {0}")]
    BadKeyMethod2(WireError),
    #[error("cannot encode key-method 2 reply: {0}")]
    EncodeKeyMethod2(WireError),
    #[error("client certificate has no common name")]
    NoCommonName,
    #[error("common name changed during renegotiation from {old:?} to {new:?}")]
    CommonNameChanged { old: String, new: String },
    #[error("client certificate changed during renegotiation")]
    CertificateChanged,
    #[error("no common data cipher: client offers {offered}, server allows {allowed}")]
    NoCommonCipher { offered: String, allowed: String },
    #[error("client announced no ciphers and no data-ciphers-fallback is set")]
    NoFallbackCipher,
    #[error("no data cipher negotiated")]
    NoCipher,
    #[error("peer session id unknown")]
    NoPeerSessionId,
    #[error("TLS exporter failed: {0}")]
    Exporter(rustls::Error),
    #[error("key-method 2 exchange incomplete")]
    KeyMethod2Incomplete,
    #[error("client key-method 2 lacks the pre-master secret")]
    NoPreMaster,
    #[error("server pushed cipher {} which is not in our data-ciphers", .0.name())]
    PushedCipherNotOurs(CipherKind),
    #[error("server pushed no cipher and no data-ciphers-fallback is set")]
    PushedNoCipher,
    #[error("server pushed tls-ekm key derivation which we did not offer")]
    PushedEkmNotOffered,
    #[error("key id 0 is gone")]
    KeyZeroGone,
    /// The driver refused the client (`AuthDecision::Reject`), with an optional reason.
    #[error("authentication refused")]
    Refused(Option<String>),
    #[error("no free address in the pool")]
    PoolExhausted,
}

impl SessionError {
    pub fn action(&self) -> WireAction {
        match self {
            SessionError::Dropped(reason) => WireAction::Drop(*reason),
            SessionError::Refused(reason) => WireAction::AuthFailed(reason.clone()),
            SessionError::PoolExhausted => WireAction::AuthFailed(Some(self.to_string())),
            _ => WireAction::Reset,
        }
    }

    /// The kind of handshake failure this error stands for (a metrics label).
    pub fn failure_kind(&self) -> HandshakeFailure {
        match self {
            SessionError::KeyState(KeyStateError::Tls(e)) => match e {
                rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::InvalidCertRevocationList(_) => HandshakeFailure::Certificate,
                rustls::Error::AlertReceived(
                    rustls::AlertDescription::BadCertificate
                    | rustls::AlertDescription::UnsupportedCertificate
                    | rustls::AlertDescription::CertificateRevoked
                    | rustls::AlertDescription::CertificateExpired
                    | rustls::AlertDescription::CertificateUnknown
                    | rustls::AlertDescription::UnknownCA
                    | rustls::AlertDescription::CertificateRequired,
                ) => HandshakeFailure::Certificate,
                _ => HandshakeFailure::Tls,
            },
            SessionError::NoCommonName
            | SessionError::CommonNameChanged { .. }
            | SessionError::CertificateChanged => HandshakeFailure::Certificate,
            SessionError::NoCommonCipher { .. }
            | SessionError::NoFallbackCipher
            | SessionError::NoCipher
            | SessionError::PushedCipherNotOurs(_)
            | SessionError::PushedNoCipher => HandshakeFailure::Cipher,
            _ => HandshakeFailure::Protocol,
        }
    }
}

/// One peer's control session: the mechanics both roles share, and the role's own part.
pub(crate) struct Session<S: Side> {
    pub addr: SocketAddr,
    pub local_sid: SessionId,
    /// The peer's session id; a client learns it from the server's reset.
    pub remote_sid: Option<SessionId>,
    /// The control-channel wrapping: the endpoint's, or a tls-crypt-v2 client's own key.
    pub wrap: Arc<ControlWrap>,
    wrap_tx_id: u32,
    wrap_tx_time: u32,
    wrap_rx: ReplayWindow,
    /// Newest first.
    pub keys: Vec<KeyState>,
    messages: ControlMessageReader,
    pub state: Lifecycle<S::End>,
    timers: Timers,
    pub cipher: Option<CipherKind>,
    pub ekm: bool,
    /// Send P_DATA_V2 with this peer id (server: the client announced DATA_V2; client: the
    /// server pushed a peer-id); P_DATA_V1 without.
    pub data_v2: Option<PeerId>,
    pub cc_exit: bool,
    pub connected_since: Instant,
    /// Last packet in/out and byte counters, shared with data workers.
    pub activity: Arc<Activity>,
    scratch: Vec<u8>,
    acks: Vec<u32>,
    pub side: S,
}

impl<S: Side> std::fmt::Debug for Session<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer_id", &S::peer_id(self))
            .field("addr", &self.addr)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl<S: Side> Session<S> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ctx: &Ctx,
        now: Instant,
        addr: SocketAddr,
        local_sid: SessionId,
        remote_sid: Option<SessionId>,
        ks: KeyState,
        side: S,
        wrap: Arc<ControlWrap>,
        wrap_tx_id: u32,
    ) -> Self {
        Session {
            addr,
            local_sid,
            remote_sid,
            wrap,
            wrap_tx_id,
            wrap_tx_time: ctx.unix_now(now),
            wrap_rx: ReplayWindow::new(),
            keys: vec![ks],
            messages: ControlMessageReader::new(),
            state: Lifecycle::Open(Stage::Handshaking),
            timers: Timers::new(ctx.ping, ctx.ping_restart),
            cipher: None,
            ekm: false,
            data_v2: None,
            cc_exit: false,
            connected_since: now,
            activity: Arc::new(Activity::new(now)),
            scratch: Vec::new(),
            acks: Vec::new(),
            side,
        }
    }

    /// Handles an authenticated, parsed control packet that belongs to this session.
    pub fn on_control(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        stamp: Option<ReplayStamp>,
        pkt: &ControlPacket<'_>,
    ) {
        let idx = match self.key_for(ctx, now, stamp, pkt) {
            Ok(Some(idx)) => idx,
            Ok(None) => return,
            Err(e) => return self.fail(ctx, now, e),
        };
        self.activity.received(now, 0);
        if let Err(e) = self.receive(ctx, now, idx, pkt) {
            self.fail(ctx, now, e);
            // Flush what is queued (a TLS alert tells the peer why).
            self.keys[idx].queue_tls_output(now, ctx.max_payload);
            return;
        }
        self.update_phase(ctx, now, idx);
    }

    /// Checks a control packet against the session (session ids, the wrap replay window)
    /// and finds its key state, starting one for the peer's soft reset. `None` once closing.
    fn key_for(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        stamp: Option<ReplayStamp>,
        pkt: &ControlPacket<'_>,
    ) -> Result<Option<usize>, SessionError> {
        if self.remote_sid.is_none() {
            self.accept_server_reset(ctx, pkt)?;
        }
        if self.remote_sid != Some(pkt.session_id) {
            return Err(SessionError::Dropped(DropReason::NoSession));
        }
        if let Some(st) = stamp {
            // OpenVPN checks the wrap packet-id after authentication (tls_crypt.c, ssl_pkt.c).
            self.wrap_rx
                .check_and_update(st.id, st.time, now)
                .map_err(|_| SessionError::Dropped(DropReason::Replay))?;
        }
        if !pkt.acks.ids.is_empty() && pkt.acks.remote_session != Some(self.local_sid) {
            // reliable.c reliable_ack_read: "ACK read BAD SESSION-ID".
            return Err(SessionError::Dropped(DropReason::Malformed));
        }
        if self.state.is_closing() {
            return Ok(None);
        }
        match self.keys.iter().position(|k| k.key_id == pkt.key_id) {
            Some(i) => Ok(Some(i)),
            None if pkt.opcode == Opcode::ControlSoftResetV1 => self
                .accept_soft_reset(ctx, now, pkt.key_id)
                .map(Some)
                .ok_or(SessionError::Dropped(DropReason::NoKey)),
            None => Err(SessionError::Dropped(DropReason::NoKey)),
        }
    }

    /// Takes a control packet's ACKs and payload into key state `idx`, then what TLS gives.
    fn receive(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        idx: usize,
        pkt: &ControlPacket<'_>,
    ) -> Result<(), SessionError> {
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
            // Reset payloads (early-negotiation TLVs) were read when the server's reset was
            // accepted (accept_server_reset); soft resets carry nothing. The server turns a
            // WKC_V1 into CONTROL_V1 before it gets here.
        }
        tls_result?;
        self.process_plaintext(ctx, now, idx)
    }

    /// Acts on an error as its [`WireAction`] says.
    pub fn fail(&mut self, ctx: &mut Ctx, now: Instant, err: SessionError) {
        match err.action() {
            WireAction::Drop(reason) => return ctx.count(reason),
            WireAction::Reset => {
                let reason = err.to_string();
                if !self.side.identified() && !self.state.is_connected() {
                    ctx.handshake_failed(self.addr, reason, err.failure_kind());
                } else {
                    tracing::warn!(
                        peer_id = S::peer_id(self).map(PeerId::get),
                        "session failed: {reason}"
                    );
                }
            }
            WireAction::AuthFailed(reason) => {
                let msg = match &reason {
                    Some(r) => format!("AUTH_FAILED,{r}"),
                    None => "AUTH_FAILED".to_string(),
                };
                self.send_control_message(ctx, now, &msg);
            }
        }
        self.close(now, S::end_for(&err));
    }

    /// Client: the first packet we accept is the server's reset that acknowledges ours; it
    /// tells us the server's session id (ssl.c:3850 "TLS: Initial packet from").
    fn accept_server_reset(
        &mut self,
        ctx: &Ctx,
        pkt: &ControlPacket<'_>,
    ) -> Result<(), SessionError> {
        let ok = S::ROLE == Role::Client
            && pkt.opcode == Opcode::ControlHardResetServerV2
            && pkt.key_id == KeyId::ZERO
            && pkt.msg_id == Some(0)
            && pkt.acks.remote_session == Some(self.local_sid)
            && !pkt.session_id.is_zero();
        if !ok {
            return Err(SessionError::Dropped(DropReason::NoSession));
        }
        // ssl.c:2702: the 2.6 client parses the reset payload as TLVs and aborts on bad ones.
        let Ok(flags) = warren_wire::early_neg_flags(pkt.payload) else {
            return Err(SessionError::Dropped(DropReason::Malformed));
        };
        // The server keeps no state, so a tls-crypt-v2 client sends its wrapped key again
        // with msg-id 1 (fact sheet §3.3).
        if flags & warren_wire::EARLY_NEG_FLAG_RESEND_WKC != 0
            && let Some(wkc) = &ctx.wkc
        {
            self.keys[0].wkc_first = Some(wkc.len());
        }
        self.remote_sid = Some(pkt.session_id);
        // S_START: now the TLS client may talk (its ClientHello becomes msg-id 1).
        self.keys[0].tls_enabled = true;
        Ok(())
    }

    /// Peer-initiated renegotiation: a soft reset on the next key id (ssl.c:3850).
    fn accept_soft_reset(&mut self, ctx: &mut Ctx, now: Instant, key_id: KeyId) -> Option<usize> {
        let primary = self.keys.first()?;
        if primary.phase != Phase::Active || key_id != primary.key_id.next() {
            return None;
        }
        self.start_key_state(ctx, now, key_id)?;
        Some(0)
    }

    /// Starts a new key state (ours or the peer's soft reset) and queues our SOFT_RESET.
    fn start_key_state(&mut self, ctx: &mut Ctx, now: Instant, key_id: KeyId) -> Option<()> {
        let tls = match ctx.tls.connect() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("cannot start TLS for renegotiation: {e}");
                return None;
            }
        };
        let mut ks = KeyState::new(key_id, tls, ctx.reliable, now, ctx.hand_window);
        ks.tls_enabled = true;
        ks.reliable
            .queue(now, Opcode::ControlSoftResetV1, Vec::new());
        // Drop the oldest states beyond the limit, never the primary.
        while self.keys.len() >= MAX_KEY_STATES {
            self.keys.pop();
        }
        self.keys.insert(0, ks);
        self.timers.reneg = None;
        S::on_new_key(self, ctx);
        Some(())
    }

    fn process_plaintext(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        idx: usize,
    ) -> Result<(), SessionError> {
        let from_client = S::ROLE == Role::Server;
        let ks = &mut self.keys[idx];
        if ks.is_handshaking() {
            return Ok(());
        }
        if !ks.km2_received {
            match KeyMethod2::parse(&ks.plain_in, from_client) {
                Ok((km2, used)) => {
                    ks.plain_in.drain(..used);
                    ks.km2_received = true;
                    S::on_key_method_2(self, ctx, now, idx, km2)?;
                }
                Err(WireError::Truncated) => return Ok(()),
                Err(e) => return Err(SessionError::BadKeyMethod2(e)),
            }
        }
        let ks = &mut self.keys[idx];
        if ks.km2_received && !ks.plain_in.is_empty() {
            let bytes = std::mem::take(&mut ks.plain_in);
            self.messages.push(&bytes);
            while let Some(msg) = self.messages.next_message() {
                S::on_message(self, ctx, now, &msg)?;
            }
        }
        Ok(())
    }

    /// Data-channel keys for key state `idx` (ssl.c:1520-1716): tls-ekm or the TLS1-PRF.
    fn derive_keys(&mut self, idx: usize) -> Result<(), SessionError> {
        let cipher = self.cipher.ok_or(SessionError::NoCipher)?;
        let role = S::ROLE;
        let remote_sid = self.remote_sid.ok_or(SessionError::NoPeerSessionId)?;
        let ks = &mut self.keys[idx];
        let key2 = if self.ekm {
            ks.export_key2().map_err(SessionError::Exporter)?
        } else {
            let (local, remote) = (ks.local_km2.as_ref(), ks.remote_km2.as_ref());
            let (client, server, client_sid, server_sid) = match role {
                Role::Server => (remote, local, remote_sid, self.local_sid),
                Role::Client => (local, remote, self.local_sid, remote_sid),
            };
            let (client, server) = client
                .zip(server)
                .ok_or(SessionError::KeyMethod2Incomplete)?;
            let pre_master = client.pre_master.ok_or(SessionError::NoPreMaster)?;
            warren_crypto::openvpn_prf_key2(
                &pre_master,
                &client.random1,
                &server.random1,
                &client.random2,
                &server.random2,
                &client_sid.0,
                &server_sid.0,
            )
        };
        ks.data = Some(Arc::new(DataKeys::new(cipher, &key2, role)));
        ks.phase = Phase::KeysReady;
        // The secrets of key-method 2 are no longer needed.
        ks.local_km2 = None;
        ks.remote_km2 = None;
        Ok(())
    }

    /// Sends a control message (`RESTART`, `AUTH_FAILED`, `EXIT`, `PUSH_REQUEST`) on the newest
    /// key whose TLS session is up.
    pub fn send_control_message(&mut self, ctx: &mut Ctx, now: Instant, msg: &str) {
        let Some(idx) = self
            .keys
            .iter()
            .position(|k| k.km2_sent && !k.is_handshaking())
        else {
            return;
        };
        let mut buf = Vec::new();
        encode_control_message(msg, &mut buf);
        self.keys[idx].write_record(&buf);
        self.keys[idx].queue_tls_output(now, ctx.max_payload);
    }

    /// Ends the session after a short linger that lets a last message or alert go out.
    pub fn close(&mut self, now: Instant, end: S::End) {
        self.state.close(now + CLOSE_LINGER, end);
    }

    fn schedule_reneg(&mut self, ctx: &mut Ctx, now: Instant) {
        if let Some(reneg) = ctx.reneg {
            let secs = reneg.as_secs().max(1);
            let jitter = match S::ROLE {
                // The server subtracts up to 10% jitter so it usually renegotiates first
                // (ssl.c tls_session_init).
                Role::Server => u64::from(ctx.rng.next_u32()) % (secs / 10 + 1),
                Role::Client => 0,
            };
            self.timers.reneg = Some(now + Duration::from_secs(secs - jitter));
        }
    }

    fn activate(&mut self, ctx: &mut Ctx, now: Instant, idx: usize) {
        let ks = &mut self.keys[idx];
        if ks.phase == Phase::Active {
            return;
        }
        ks.phase = Phase::Active;
        ks.established = Some(now);
        if idx == 0 && self.keys.len() > 1 {
            // The new key takes over; the old ones become lame ducks.
            for old in &mut self.keys[1..] {
                if old.expires.is_none() {
                    old.expires = Some(now + TRANSITION_WINDOW);
                }
            }
            self.schedule_reneg(ctx, now);
        }
    }

    fn update_phase(&mut self, ctx: &mut Ctx, now: Instant, idx: usize) {
        if idx >= self.keys.len() {
            return;
        }
        let ks = &mut self.keys[idx];
        ks.queue_tls_output(now, ctx.max_payload);
        // Server: S_ACTIVE once everything we sent is acknowledged (ssl.c:2899), i.e. the
        // client has our key-method 2 and its keys; only then do we send data on this key.
        if ks.phase == Phase::KeysReady
            && ks.reliable.all_acked()
            && !ks.has_unsent_tls()
            && !self.state.is(Stage::PendingConnect)
            && !self.state.is(Stage::AwaitingAuth)
        {
            self.activate(ctx, now, idx);
        }
    }

    /// The key used for sending data: the newest Active one with data keys.
    ///
    /// With no Active key at all (a new session whose last control packet's ACK was lost),
    /// the newest key with data keys is used as soon as the session is connected: stock
    /// OpenVPN sends on any key from S_GENERATED_KEYS on (ssl.c tls_select_encryption_key),
    /// and waiting for the retransmitted ACK would stall data for up to the retransmit
    /// backoff (seconds on a lossy link). During a renegotiation the old Active key keeps
    /// being used until the new one is fully acknowledged.
    fn send_key_index(&self) -> Option<usize> {
        self.keys
            .iter()
            .position(|k| k.phase == Phase::Active && k.data.is_some())
            .or_else(|| {
                if !self.state.is_connected() {
                    return None;
                }
                self.keys
                    .iter()
                    .position(|k| k.phase == Phase::KeysReady && k.data.is_some())
            })
    }

    /// Seals `buf[DATA_HEADROOM..DATA_HEADROOM + len]` in place for this peer (a ping, an
    /// OCC message, the client's data); CBC ciphers need `DATA_TAILROOM` bytes after it.
    /// Returns the packet's range.
    pub fn seal_data(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        len: usize,
    ) -> Option<std::ops::Range<usize>> {
        let idx = self.send_key_index()?;
        let peer_id = self.data_v2;
        let ks = &self.keys[idx];
        let (range, past_trigger) =
            seal_with(ks.key_id, ks.data.as_ref()?, &ks.tx, peer_id, buf, len)?;
        if past_trigger {
            self.force_renegotiation(now);
        }
        self.activity.sent(now, len as u64);
        Some(range)
    }

    /// Opens a data packet in place (the client's data path); returns the plaintext range.
    pub fn open_data(
        &mut self,
        now: Instant,
        key_id: KeyId,
        packet: &mut [u8],
    ) -> Result<std::ops::Range<usize>, DropReason> {
        let ks = self
            .keys
            .iter_mut()
            .find(|k| k.key_id == key_id && k.data.is_some())
            .ok_or(DropReason::NoKey)?;
        let data = ks.data.as_ref().ok_or(DropReason::NoKey)?;
        let range = open_with(data, &mut ks.rx_replay, now, packet)?;
        self.activity.received(now, range.len() as u64);
        Ok(range)
    }

    /// A data worker spent the send key up to the wrap trigger: renegotiate now.
    pub fn force_renegotiation(&mut self, now: Instant) {
        if self.timers.reneg.is_none_or(|t| t > now) {
            self.timers.reneg = Some(now);
        }
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        self.timers
            .next_deadline(&self.state, &self.keys, &self.activity)
    }

    pub fn handle_timeout(&mut self, ctx: &mut Ctx, now: Instant) {
        if self.state.is_closing() {
            self.state.linger_over(now);
            return;
        }
        if let Some(pr) = self.timers.ping_restart
            && now >= self.activity.last_received() + pr
        {
            self.state.die(S::PING_TIMEOUT);
            return;
        }
        let mut i = 0;
        while i < self.keys.len() {
            let ks = &self.keys[i];
            if ks.phase != Phase::Active && now >= ks.handshake_deadline {
                if ks.key_id == KeyId::ZERO || self.keys.len() == 1 {
                    // ssl.c: "TLS key negotiation failed to occur within 60 seconds".
                    if !self.state.is_connected() {
                        ctx.handshake_failed(
                            self.addr,
                            "TLS handshake did not finish within hand-window".into(),
                            HandshakeFailure::Timeout,
                        );
                    }
                    self.state.die(S::HANDSHAKE_TIMEOUT);
                    return;
                }
                tracing::warn!(
                    peer_id = S::peer_id(self).map(PeerId::get),
                    key_id = ks.key_id.get(),
                    "renegotiation timed out"
                );
                self.keys.remove(i);
                self.schedule_reneg(ctx, now);
                continue;
            }
            if ks.expires.is_some_and(|e| now >= e) && i > 0 {
                self.keys.remove(i);
                continue;
            }
            i += 1;
        }
        if self.timers.push_request.is_some_and(|t| now >= t) {
            self.send_control_message(ctx, now, "PUSH_REQUEST");
            self.timers.push_request = Some(now + PUSH_REQUEST_INTERVAL);
        }
        if self.state.is_connected() {
            if let Some(p) = self.timers.ping
                && now >= self.activity.last_sent() + p
            {
                self.timers.ping_due = true;
            }
            if self.timers.reneg.is_some_and(|t| now >= t) {
                self.timers.reneg = None;
                let busy = self.keys.first().is_some_and(|k| k.phase != Phase::Active);
                if !busy && let Some(next) = self.keys.first().map(|k| k.key_id.next()) {
                    tracing::debug!(
                        peer_id = S::peer_id(self).map(PeerId::get),
                        key_id = next.get(),
                        "starting renegotiation"
                    );
                    if self.start_key_state(ctx, now, next).is_none() {
                        self.schedule_reneg(ctx, now);
                    }
                }
            }
        }
    }

    /// Writes the next datagram for this session into `out`. Returns false when there is
    /// nothing more to send now.
    pub fn poll_transmit(&mut self, ctx: &mut Ctx, now: Instant, out: &mut Vec<u8>) -> bool {
        if self.state.end().is_some() {
            return false;
        }
        // Control packets due (first transmissions and retransmissions), newest key first.
        for idx in 0..self.keys.len() {
            self.keys[idx].queue_tls_output(now, ctx.max_payload);
            let next = self.keys[idx].reliable.poll_transmit(now).map(|p| {
                self.scratch.clear();
                self.scratch.extend_from_slice(p.payload);
                (p.msg_id, p.opcode)
            });
            if let Some((msg_id, opcode)) = next {
                let payload = std::mem::take(&mut self.scratch);
                // CONTROL_SEND_ACK_MAX (ssl.h:55): at most 4 ACKs piggybacked.
                self.emit_control(ctx, now, idx, opcode, Some(msg_id), &payload, 4, out);
                self.scratch = payload;
                return true;
            }
        }
        // Nothing to piggyback on: a bare P_ACK_V1 with up to 8 ACKs (ssl.c:3148).
        if self.remote_sid.is_some() {
            for idx in 0..self.keys.len() {
                if self.keys[idx].reliable.needs_ack() {
                    if self.keys[idx].needs_wkc().is_some() && self.keys[idx].reliable.can_queue() {
                        // ssl.c:3148: a tls-crypt-v2 client that owes the server its wrapped
                        // key sends an empty WKC_V1 (msg-id 1, retransmitted until acked)
                        // instead of a bare ACK, which would not carry WKc.
                        self.keys[idx]
                            .reliable
                            .queue(now, Opcode::ControlWkcV1, Vec::new());
                        return self.poll_transmit(ctx, now, out);
                    }
                    self.emit_control(
                        ctx,
                        now,
                        idx,
                        Opcode::AckV1,
                        None,
                        &[],
                        warren_wire::MAX_ACKS,
                        out,
                    );
                    return true;
                }
            }
        }
        if self.timers.ping_due {
            self.timers.ping_due = false;
            out.clear();
            out.resize(DATA_HEADROOM + PING_MAGIC.len() + DATA_TAILROOM, 0);
            out[DATA_HEADROOM..DATA_HEADROOM + PING_MAGIC.len()].copy_from_slice(&PING_MAGIC);
            if let Some(range) = self.seal_data(now, out, PING_MAGIC.len()) {
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
        ctx: &mut Ctx,
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
        // Until a client knows the server's session id there is nothing to acknowledge.
        if self.remote_sid.is_some() {
            ks.reliable.write_acks(max_acks, &mut self.acks);
        }
        let pkt = ControlPacket {
            opcode,
            key_id: ks.key_id,
            session_id: self.local_sid,
            acks: AckBlock {
                ids: self.acks.clone(),
                remote_session: self.remote_sid.filter(|_| !self.acks.is_empty()),
            },
            msg_id,
            payload,
        };
        let mut body = Vec::with_capacity(payload.len() + 64);
        pkt.write_body(&mut body);
        let stamp = ReplayStamp {
            id: self.wrap_tx_id,
            time: self.wrap_tx_time,
        };
        self.wrap_tx_id = self.wrap_tx_id.wrapping_add(1);
        self.wrap.wrap(&pkt.head(), stamp, &body, out);
        // tls-crypt-v2 (fact sheet §1.8): WKc follows the wrapped packet, outside the
        // encryption. Only a tls-crypt-v2 client sends these opcodes.
        if matches!(
            opcode,
            Opcode::ControlHardResetClientV3 | Opcode::ControlWkcV1
        ) && let Some(wkc) = &ctx.wkc
        {
            out.extend_from_slice(wkc);
        }
        self.activity.sent(now, 0);
    }
}

/// The server's part of a session: the client's identity, what the endpoint decided for it,
/// and the endpoint's bookkeeping. (No `Debug`: it holds the password until it is asked
/// about.)
pub(crate) struct ServerSide {
    pub peer_id: PeerId,
    /// Bumped each time a server slot is reused, so stale timer entries are recognised.
    pub generation: u64,
    /// The earliest deadline the server's timer heap holds for this session.
    pub scheduled: Option<Instant>,
    pub common_name: Option<String>,
    /// The serial number of the client's certificate (big-endian, leading zero bytes
    /// removed), fixed by the first key: revocation ends the session of one certificate
    /// even when several share a common name (`duplicate-cn`).
    pub cert_serial: Option<Vec<u8>>,
    /// The username from key-method 2 (`auth-user-pass`), if the client sent one.
    pub username: Option<String>,
    pub peer_info: Option<PeerInfo>,
    pub vpn_ip: Option<Ipv4Addr>,
    /// The client's IPv6 tunnel address (from the IPv6 pool).
    pub vpn_ip6: Option<Ipv6Addr>,
    /// The client networks it owns (`iroute`, `iroute-ipv6`).
    pub iroutes: Vec<crate::dataplane::Iroute>,
    /// The identity's access rules (`None`: everything allowed).
    pub access: Option<Arc<crate::access::AccessRules>>,
    /// The password from key-method 2 of key id 0, kept only until the endpoint has asked
    /// for an authentication decision.
    pub pending_password: Option<String>,
    /// The client asked for the push reply without a PUSH_REQUEST (IV_PROTO_REQUEST_PUSH).
    pub request_push: bool,
    push_options: Option<Vec<String>>,
    push_sent: Option<Instant>,
}

impl ServerSide {
    fn new(peer_id: PeerId, generation: u64) -> Self {
        ServerSide {
            peer_id,
            generation,
            scheduled: None,
            common_name: None,
            cert_serial: None,
            username: None,
            peer_info: None,
            vpn_ip: None,
            vpn_ip6: None,
            iroutes: Vec::new(),
            access: None,
            pending_password: None,
            request_push: false,
            push_options: None,
            push_sent: None,
        }
    }
}

impl Side for ServerSide {
    type End = DisconnectReason;
    const ROLE: Role = Role::Server;
    const PING_TIMEOUT: DisconnectReason = DisconnectReason::PingTimeout;
    const HANDSHAKE_TIMEOUT: DisconnectReason = DisconnectReason::HandshakeTimeout;

    fn end_for(err: &SessionError) -> DisconnectReason {
        match err.action() {
            WireAction::AuthFailed(_) => DisconnectReason::AuthFailed,
            _ => DisconnectReason::TlsError(err.to_string()),
        }
    }

    fn peer_id(s: &Session<Self>) -> Option<PeerId> {
        Some(s.side.peer_id)
    }

    fn identified(&self) -> bool {
        self.common_name.is_some()
    }

    fn on_key_method_2(
        s: &mut Session<Self>,
        ctx: &mut Ctx,
        _now: Instant,
        idx: usize,
        km2: KeyMethod2,
    ) -> Result<(), SessionError> {
        s.on_client_km2(ctx, idx, km2)
    }

    fn on_message(
        s: &mut Session<Self>,
        ctx: &mut Ctx,
        now: Instant,
        msg: &str,
    ) -> Result<(), SessionError> {
        s.on_client_message(ctx, now, msg);
        Ok(())
    }
}

impl Session<ServerSide> {
    /// Server: creates the session once the client has proven its address with the cookie
    /// (ssl.c:2676 session_skip_to_pre_start): our reset (msg-id 0, whose session id was the
    /// cookie) counts as sent and acknowledged, the client's reset (msg-id 0) as received, and
    /// our wrap replay counter continues after the stateless reset's id 1.
    #[allow(clippy::too_many_arguments)]
    pub fn server_from_cookie(
        ctx: &mut Ctx,
        now: Instant,
        peer_id: PeerId,
        generation: u64,
        addr: SocketAddr,
        local_sid: SessionId,
        remote_sid: SessionId,
        tls: rustls::Connection,
        wrap: Arc<ControlWrap>,
    ) -> Self {
        let mut ks = KeyState::new(KeyId::ZERO, tls, ctx.reliable, now, ctx.hand_window);
        ks.tls_enabled = true;
        ks.reliable
            .queue(now, Opcode::ControlHardResetServerV2, Vec::new());
        ks.reliable.process_acks(&[0]);
        ks.reliable
            .receive(0, Opcode::ControlHardResetClientV2, &[]);
        while ks.reliable.pop_in_order().is_some() {}
        // The stateless reply acked the client's reset; ack it again with the first packet we
        // send (harmless, and it helps when that reply was lost).
        ks.reliable
            .receive(0, Opcode::ControlHardResetClientV2, &[]);
        let side = ServerSide::new(peer_id, generation);
        Session::new(
            ctx,
            now,
            addr,
            local_sid,
            Some(remote_sid),
            ks,
            side,
            wrap,
            2,
        )
    }

    /// Server over TCP (fact sheet §9; OpenVPN mtcp.c, no cookie): the session exists from
    /// the client's first reset, with a random session id of ours. Our reset (msg-id 0) is
    /// queued on the reliability layer, retransmitted until the client acknowledges it, and
    /// carries the ACK of the client's reset; our wrap replay counter starts at 1.
    #[allow(clippy::too_many_arguments)]
    pub fn server_stateful(
        ctx: &mut Ctx,
        now: Instant,
        peer_id: PeerId,
        generation: u64,
        addr: SocketAddr,
        remote_sid: SessionId,
        tls: rustls::Connection,
        wrap: Arc<ControlWrap>,
    ) -> Self {
        let local_sid = SessionId::random(ctx.rng.as_mut());
        let mut ks = KeyState::new(KeyId::ZERO, tls, ctx.reliable, now, ctx.hand_window);
        // A TLS server only answers the ClientHello, which the client sends (msg-id 1) once
        // it has our reset: nothing to hold back.
        ks.tls_enabled = true;
        ks.reliable
            .queue(now, Opcode::ControlHardResetServerV2, Vec::new());
        ks.reliable
            .receive(0, Opcode::ControlHardResetClientV2, &[]);
        while ks.reliable.pop_in_order().is_some() {}
        let side = ServerSide::new(peer_id, generation);
        Session::new(
            ctx,
            now,
            addr,
            local_sid,
            Some(remote_sid),
            ks,
            side,
            wrap,
            1,
        )
    }

    fn on_client_km2(
        &mut self,
        ctx: &mut Ctx,
        idx: usize,
        km2: KeyMethod2,
    ) -> Result<(), SessionError> {
        let ks = &self.keys[idx];
        // ssl.c key_method_2_read: control characters in the user name become `_`
        // (`string_mod_remap_name`), and CR/LF in the password too, so neither can
        // smuggle a second line into a script's via-file or a name into a ccd lookup.
        let username = crate::tls::remap_name(&km2.username);
        let cn = ks
            .peer_certificates()
            .and_then(crate::tls::peer_common_name)
            .or_else(|| (!username.is_empty()).then(|| username.clone()))
            .ok_or(SessionError::NoCommonName)?;
        let serial = ks.peer_certificates().and_then(crate::tls::peer_serial);
        let first = self.side.common_name.is_none();
        if first {
            self.side.cert_serial = serial;
            let info = PeerInfo::parse(&km2.peer_info);
            self.data_v2 = (info.proto & iv_proto::DATA_V2 != 0).then_some(self.side.peer_id);
            self.side.request_push = info.proto & iv_proto::REQUEST_PUSH != 0;
            self.cc_exit = info.proto & iv_proto::CC_EXIT_NOTIFY != 0;
            self.ekm = info.proto & iv_proto::TLS_KEY_EXPORT != 0
                && ctx.key_derivation == KeyDerivation::Auto;
            self.cipher = Some(negotiate_cipher(ctx, &info, &km2.options)?);
            tracing::debug!(
                peer_id = %self.side.peer_id,
                version = info.version.as_deref().unwrap_or("?"),
                platform = info.platform.as_deref().unwrap_or("?"),
                proto = info.proto,
                "peer info"
            );
            self.side.peer_info = Some(info);
            self.side.common_name = Some(cn);
            self.side.username = (!username.is_empty()).then_some(username);
            self.side.pending_password = Some(km2.password.replace(['\r', '\n'], "_"));
        } else if self.side.common_name.as_deref() != Some(cn.as_str()) {
            // ssl_verify.c: the common name must not change across renegotiations.
            return Err(SessionError::CommonNameChanged {
                old: self.side.common_name.clone().unwrap_or_default(),
                new: cn,
            });
        } else if serial != self.side.cert_serial {
            // ssl_verify.c `tls_lock_cert_hash_set`/`cert_hash_compare`: nor may the
            // certificate (what was authorised, and what revocation looks for, is the first).
            return Err(SessionError::CertificateChanged);
        }

        // Our key-method 2 reply (ssl.c key_method_2_write): no pre-master from the server.
        let mut random1 = [0u8; 32];
        let mut random2 = [0u8; 32];
        ctx.rng.fill(&mut random1);
        ctx.rng.fill(&mut random2);
        let reply = KeyMethod2 {
            pre_master: None,
            random1,
            random2,
            // OCC options string (occ.c): informational; mirroring the client's own string
            // (with our role) avoids spurious "used inconsistently" warnings in its log.
            options: server_occ(&km2.options).unwrap_or_else(|| ctx.occ.clone()),
            username: String::new(),
            password: String::new(),
            peer_info: String::new(),
        };
        let mut buf = Vec::with_capacity(256);
        reply
            .write(&mut buf)
            .map_err(SessionError::EncodeKeyMethod2)?;
        let ks = &mut self.keys[idx];
        ks.write_record(&buf);
        ks.km2_sent = true;
        ks.local_km2 = Some(reply);
        ks.remote_km2 = Some(km2);
        self.derive_keys(idx)?;
        if first {
            self.state.keys_done();
        } else {
            let key_id = self.keys[idx].key_id.get();
            tracing::debug!(peer_id = %self.side.peer_id, key_id, "renegotiated");
            ctx.events.push_back(SessionEvent::Renegotiated {
                peer_id: Some(self.side.peer_id),
                key_id,
            });
        }
        Ok(())
    }

    /// Server: PUSH_REQUEST and EXIT from the client.
    fn on_client_message(&mut self, ctx: &mut Ctx, now: Instant, msg: &str) {
        if msg == "PUSH_REQUEST" {
            let recently = self
                .side
                .push_sent
                .is_some_and(|t| now < t + PUSH_REPLY_INTERVAL);
            if !recently {
                self.send_push_reply(ctx, now);
            }
        } else if msg == "EXIT" {
            // explicit-exit-notify with cc-exit: free the session at once.
            self.state.die(DisconnectReason::ExitNotify);
        } else {
            tracing::debug!(
                peer_id = %self.side.peer_id,
                "ignoring control message {msg:?}"
            );
        }
    }

    /// Server: called once the address is allocated and the options decided.
    pub fn set_push_reply(&mut self, ctx: &mut Ctx, now: Instant, options: Vec<String>) {
        self.state.connect();
        self.side.push_options = Some(options);
        if self.side.request_push {
            self.send_push_reply(ctx, now);
        }
        self.schedule_reneg(ctx, now);
    }

    fn send_push_reply(&mut self, ctx: &mut Ctx, now: Instant) {
        let Some(options) = &self.side.push_options else {
            return;
        };
        let Some(idx) = self.keys.iter().position(|k| k.km2_sent) else {
            return;
        };
        let mut buf = Vec::new();
        for msg in warren_wire::build_push_replies(options) {
            buf.clear();
            encode_control_message(&msg, &mut buf);
            self.keys[idx].write_record(&buf);
        }
        self.keys[idx].queue_tls_output(now, ctx.max_payload);
        self.side.push_sent = Some(now);
    }

    /// This session's data-channel state as data workers need it.
    pub fn peer_data(&self) -> PeerData {
        let key_ref = |ks: &KeyState| {
            ks.data.as_ref().map(|keys| DataKeyRef {
                key_id: ks.key_id,
                keys: keys.clone(),
                tx: ks.tx.clone(),
            })
        };
        PeerData {
            peer_id: self.side.peer_id,
            generation: self.side.generation,
            addr: self.addr,
            vpn_ip: self.side.vpn_ip,
            vpn_ip6: self.side.vpn_ip6,
            iroutes: self.side.iroutes.clone(),
            data_v2: self.data_v2.is_some(),
            // Known to the server only (`Server::refresh_data` sets it).
            stream: false,
            send: self.send_key_index().and_then(|i| key_ref(&self.keys[i])),
            recv: self.keys.iter().filter_map(key_ref).collect(),
            activity: self.activity.clone(),
            access: self.side.access.clone(),
        }
    }
}

/// The client's part of a session: what it offers in key-method 2 and what the server
/// pushed. (No `Debug`: it holds the credentials.)
pub(crate) struct ClientSide {
    /// Our IV_* lines for key-method 2.
    peer_info: String,
    credentials: Option<(String, String)>,
    offered_ekm: bool,
    push_parts: Vec<String>,
    pub pushed: Option<PushedConfig>,
    pub server_cn: Option<String>,
    /// Set when the tunnel came up; the client endpoint turns it into an event.
    pub just_connected: bool,
    explicit_exit_notify: bool,
}

impl Side for ClientSide {
    type End = ClientDisconnect;
    const ROLE: Role = Role::Client;
    const PING_TIMEOUT: ClientDisconnect = ClientDisconnect::PingTimeout;
    const HANDSHAKE_TIMEOUT: ClientDisconnect = ClientDisconnect::HandshakeTimeout;

    fn end_for(err: &SessionError) -> ClientDisconnect {
        match err.action() {
            WireAction::AuthFailed(reason) => {
                ClientDisconnect::AuthFailed(reason.unwrap_or_default())
            }
            _ => ClientDisconnect::TlsError(err.to_string()),
        }
    }

    fn peer_id(s: &Session<Self>) -> Option<PeerId> {
        s.data_v2
    }

    fn identified(&self) -> bool {
        false
    }

    fn on_key_method_2(
        s: &mut Session<Self>,
        ctx: &mut Ctx,
        now: Instant,
        idx: usize,
        km2: KeyMethod2,
    ) -> Result<(), SessionError> {
        s.on_server_km2(ctx, now, idx, km2)
    }

    fn on_message(
        s: &mut Session<Self>,
        ctx: &mut Ctx,
        now: Instant,
        msg: &str,
    ) -> Result<(), SessionError> {
        s.on_server_message(ctx, now, msg)
    }

    fn on_new_key(s: &mut Session<Self>, ctx: &mut Ctx) {
        // The client re-sends key-method 2 (with credentials) on every key (ssl.c:2220).
        s.write_client_km2(ctx, 0);
    }
}

impl Session<ClientSide> {
    /// Client: a new session that sends its hard reset at once and writes key-method 2 into
    /// the TLS connection (rustls holds it until the handshake is done).
    pub fn client_new(
        ctx: &mut Ctx,
        now: Instant,
        addr: SocketAddr,
        credentials: Option<(String, String)>,
        explicit_exit_notify: bool,
        tun_mtu: u16,
    ) -> Result<Self, rustls::Error> {
        let local_sid = SessionId::random(ctx.rng.as_mut());
        let tls = ctx.tls.connect()?;
        let mut ks = KeyState::new(KeyId::ZERO, tls, ctx.reliable, now, ctx.hand_window);
        // ssl.c tls_session_init: a tls-crypt-v2 client resets with V3 and starts its wrap
        // packet id at EARLY_NEG_START, which tells the server it can send its wrapped key
        // again (early negotiation, fact sheet §3.3).
        let (reset, wrap_tx_id) = match ctx.wkc {
            Some(_) => (
                Opcode::ControlHardResetClientV3,
                warren_wire::EARLY_NEG_START + 1,
            ),
            None => (Opcode::ControlHardResetClientV2, 1),
        };
        ks.reliable.queue(now, reset, Vec::new());
        let wrap = ctx
            .wrap
            .clone()
            .expect("invariant: a client always has a wrap (none at least)");
        let offered_ekm = ctx.key_derivation == KeyDerivation::Auto;
        let mut proto = iv_proto::DATA_V2 | iv_proto::REQUEST_PUSH | iv_proto::CC_EXIT_NOTIFY;
        if offered_ekm {
            proto |= iv_proto::TLS_KEY_EXPORT;
        }
        let ciphers: Vec<&str> = ctx.data_ciphers.iter().map(|c| c.name()).collect();
        let peer_info = format!(
            "IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU={}\nIV_NCP=2\nIV_CIPHERS={}\nIV_PROTO={proto}\nIV_GUI_VER=warren_{}\n",
            u32::from(tun_mtu) + 100,
            ciphers.join(":"),
            env!("CARGO_PKG_VERSION"),
        );
        let side = ClientSide {
            peer_info,
            credentials,
            offered_ekm,
            push_parts: Vec::new(),
            pushed: None,
            server_cn: None,
            just_connected: false,
            explicit_exit_notify,
        };
        let mut s = Session::new(ctx, now, addr, local_sid, None, ks, side, wrap, wrap_tx_id);
        s.write_client_km2(ctx, 0);
        Ok(s)
    }

    fn write_client_km2(&mut self, ctx: &mut Ctx, idx: usize) {
        let c = &self.side;
        let mut pre_master = [0u8; 48];
        let mut random1 = [0u8; 32];
        let mut random2 = [0u8; 32];
        ctx.rng.fill(&mut pre_master);
        ctx.rng.fill(&mut random1);
        ctx.rng.fill(&mut random2);
        let (username, password) = c.credentials.clone().unwrap_or_default();
        let km2 = KeyMethod2 {
            pre_master: Some(pre_master),
            random1,
            random2,
            options: ctx.occ.clone(),
            username,
            password,
            peer_info: c.peer_info.clone(),
        };
        let mut buf = Vec::with_capacity(512);
        if let Err(e) = km2.write(&mut buf) {
            tracing::error!("cannot encode key-method 2: {e}");
            return;
        }
        let ks = &mut self.keys[idx];
        ks.write_record(&buf);
        ks.local_km2 = Some(km2);
        ks.km2_sent = true;
    }

    fn on_server_km2(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        idx: usize,
        km2: KeyMethod2,
    ) -> Result<(), SessionError> {
        let cn = self.keys[idx]
            .peer_certificates()
            .and_then(crate::tls::peer_common_name);
        self.keys[idx].remote_km2 = Some(km2);
        let c = &mut self.side;
        if c.pushed.is_none() {
            // Key id 0: the cipher and key derivation come with PUSH_REPLY (push.c).
            c.server_cn = cn;
            self.timers.push_request = Some(now + PUSH_REQUEST_FIRST);
            return Ok(());
        }
        self.derive_keys(idx)?;
        // The server derived its keys when it sent key-method 2: we may use ours at once.
        self.activate(ctx, now, idx);
        let key_id = self.keys[idx].key_id.get();
        ctx.events.push_back(SessionEvent::Renegotiated {
            peer_id: self.data_v2,
            key_id,
        });
        Ok(())
    }

    /// Client: PUSH_REPLY, AUTH_FAILED, RESTART, HALT, INFO, EXIT (forward.c:234).
    fn on_server_message(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        msg: &str,
    ) -> Result<(), SessionError> {
        let reason = |m: &str, prefix: &str| {
            m.strip_prefix(prefix)
                .unwrap_or("")
                .trim_start_matches(',')
                .to_string()
        };
        if let Some(reply) = warren_wire::parse_push_reply(msg) {
            let c = &mut self.side;
            if c.pushed.is_some() {
                return Ok(()); // a repeated reply to a repeated request
            }
            let more = reply.more_follows();
            c.push_parts.extend(reply.options);
            if more {
                return Ok(());
            }
            let pushed = parse_pushed(&std::mem::take(&mut c.push_parts));
            return self.apply_push(ctx, now, pushed);
        }
        let end = if msg.starts_with("AUTH_FAILED") {
            Some(ClientDisconnect::AuthFailed(reason(msg, "AUTH_FAILED")))
        } else if msg.starts_with("RESTART") {
            Some(ClientDisconnect::Restart(reason(msg, "RESTART")))
        } else if msg.starts_with("HALT") {
            Some(ClientDisconnect::Halt(reason(msg, "HALT")))
        } else if msg == "EXIT" {
            Some(ClientDisconnect::Restart("server exited".into()))
        } else {
            if msg.starts_with("INFO") {
                tracing::info!("server says: {msg}");
            } else if msg.starts_with("AUTH_PENDING") {
                for ks in &mut self.keys {
                    ks.handshake_deadline = ks.handshake_deadline.max(now + ctx.hand_window);
                }
            } else {
                tracing::debug!("ignoring control message {msg:?}");
            }
            None
        };
        if let Some(end) = end {
            self.state.die(end);
        }
        Ok(())
    }

    /// Client: the options that finish the key-id-0 setup (push.c, ssl_ncp.c).
    fn apply_push(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        pushed: PushedConfig,
    ) -> Result<(), SessionError> {
        let c = &mut self.side;
        let cipher = match pushed.cipher {
            // By name: a CBC cipher's `auth` digest is ours, never pushed.
            Some(p) => *ctx
                .data_ciphers
                .iter()
                .find(|c| c.name() == p.name())
                .ok_or(SessionError::PushedCipherNotOurs(p))?,
            None => ctx
                .data_ciphers_fallback
                .ok_or(SessionError::PushedNoCipher)?,
        };
        if pushed.tls_ekm && !c.offered_ekm {
            return Err(SessionError::PushedEkmNotOffered);
        }
        self.cipher = Some(cipher);
        self.ekm = pushed.tls_ekm;
        self.cc_exit = pushed.cc_exit;
        if let Some(id) = pushed.peer_id {
            self.data_v2 = Some(id);
        }
        if let Some(p) = pushed.ping {
            self.timers.ping = (p > 0).then(|| Duration::from_secs(u64::from(p)));
        }
        if let Some(p) = pushed.ping_restart {
            self.timers.ping_restart = (p > 0).then(|| Duration::from_secs(u64::from(p)));
        }
        c.pushed = Some(pushed);
        self.timers.push_request = None;
        let idx = self
            .keys
            .iter()
            .position(|k| k.key_id == KeyId::ZERO)
            .ok_or(SessionError::KeyZeroGone)?;
        self.derive_keys(idx)?;
        self.activate(ctx, now, idx);
        self.state.connect();
        self.connected_since = now;
        self.side.just_connected = true;
        self.schedule_reneg(ctx, now);
        Ok(())
    }

    /// Client: leave, telling the server (explicit-exit-notify): `EXIT` when cc-exit was
    /// negotiated, an OCC EXIT data packet otherwise (occ.c).
    pub fn client_exit(&mut self, ctx: &mut Ctx, now: Instant, out: &mut Vec<Vec<u8>>) {
        let notify = self.side.explicit_exit_notify;
        if notify && self.state.is_connected() {
            if self.cc_exit {
                self.send_control_message(ctx, now, "EXIT");
            } else {
                let mut buf = vec![0u8; DATA_HEADROOM];
                warren_wire::encode_occ_exit(&mut buf);
                let len = buf.len() - DATA_HEADROOM;
                buf.resize(buf.len() + DATA_TAILROOM, 0);
                if let Some(range) = self.seal_data(now, &mut buf, len) {
                    out.push(buf[range].to_vec());
                }
            }
        }
        if notify && self.cc_exit {
            self.close(now, ClientDisconnect::Closed);
        } else {
            // Nothing to wait for.
            self.state.die(ClientDisconnect::Closed);
        }
    }
}

fn server_occ(client: &str) -> Option<String> {
    let base = client.strip_suffix("tls-client")?;
    (client.starts_with("V4,") && client.len() < 500).then(|| format!("{base}tls-server"))
}

/// NCP (ssl_ncp.c:248): the first of our `data-ciphers` the client lists in IV_CIPHERS; for
/// clients without IV_CIPHERS, their OCC `cipher` if we allow it, else `data-ciphers-fallback`.
fn negotiate_cipher(ctx: &Ctx, info: &PeerInfo, occ: &str) -> Result<CipherKind, SessionError> {
    let ours = &ctx.data_ciphers;
    if !info.ciphers.is_empty() {
        for c in ours {
            if info
                .ciphers
                .iter()
                .any(|p| CipherKind::from_name(p).is_some_and(|p| p.name() == c.name()))
            {
                return Ok(*c);
            }
        }
        return Err(SessionError::NoCommonCipher {
            offered: info.ciphers.join(":"),
            allowed: ours.iter().map(|c| c.name()).collect::<Vec<_>>().join(":"),
        });
    }
    let occ_cipher = occ
        .split(',')
        .find_map(|item| item.strip_prefix("cipher "))
        .and_then(CipherKind::from_name);
    if let Some(c) = occ_cipher.and_then(|o| ours.iter().find(|c| c.name() == o.name())) {
        return Ok(*c);
    }
    ctx.data_ciphers_fallback
        .ok_or(SessionError::NoFallbackCipher)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Life = Lifecycle<DisconnectReason>;

    #[test]
    fn a_refused_session_is_not_announced_and_a_kicked_one_is() {
        let t = Instant::from_secs(5);
        // External auth refused: the driver heard AuthRejected, not Disconnected.
        let mut refused = Life::Open(Stage::Handshaking);
        refused.keys_done();
        refused.auth_requested();
        assert!(refused.announced());
        assert!(refused.auth_answered() && !refused.auth_answered());
        refused.close(t, DisconnectReason::AuthFailed);
        assert!(!refused.announced() && refused.is_closing());
        // Kicked while the decision is out: the driver must hear of its end.
        let mut kicked = Life::Open(Stage::PendingConnect);
        kicked.auth_requested();
        kicked.close(t, DisconnectReason::Kicked);
        assert!(kicked.announced() && !kicked.auth_answered());
        kicked.connect();
        assert!(!kicked.is_connected(), "a closing session never connects");
    }

    #[test]
    fn closing_lingers_then_dies_with_its_first_reason() {
        let t = Instant::from_secs(5);
        let mut s = Life::Open(Stage::Handshaking);
        s.connect();
        s.close(t, DisconnectReason::Kicked);
        s.close(t, DisconnectReason::Shutdown);
        s.linger_over(Instant::from_secs(4));
        assert_eq!(s.end(), None);
        assert!(s.is_connected(), "closing keeps the stage reached");
        s.linger_over(t);
        assert_eq!(s.end(), Some(&DisconnectReason::Kicked));
        s.die(DisconnectReason::PingTimeout);
        assert_eq!(s.end(), Some(&DisconnectReason::Kicked));
    }

    #[test]
    fn errors_map_to_wire_actions() {
        assert_eq!(
            SessionError::Dropped(DropReason::Replay).action(),
            WireAction::Drop(DropReason::Replay)
        );
        assert_eq!(
            SessionError::KeyState(KeyStateError::PlaintextOverflow).action(),
            WireAction::Reset
        );
        assert_eq!(SessionError::NoCommonName.action(), WireAction::Reset);
        assert_eq!(
            SessionError::Refused(Some("expired".into())).action(),
            WireAction::AuthFailed(Some("expired".into()))
        );
        assert_eq!(
            SessionError::PoolExhausted.action(),
            WireAction::AuthFailed(Some("no free address in the pool".into()))
        );
        assert_eq!(
            ServerSide::end_for(&SessionError::Refused(None)),
            DisconnectReason::AuthFailed
        );
        assert_eq!(
            ClientSide::end_for(&SessionError::NoCipher),
            ClientDisconnect::TlsError("no data cipher negotiated".into())
        );
    }
}
