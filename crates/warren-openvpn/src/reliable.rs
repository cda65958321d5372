//! OpenVPN's control-channel reliability layer, sans-IO (fact sheet §2; OpenVPN reliable.c,
//! ssl.c:2899-3227 and :3662-4040).
//!
//! One [`Reliable`] serves one key state of one peer, both directions:
//!
//! * **Sending.** [`Reliable::queue`] assigns msg-ids from 0 upwards; at most
//!   `send_window` (6) ids may be outstanding counted from the oldest unacknowledged one.
//!   [`Reliable::poll_transmit`] hands out the lowest-numbered packet that is due, first
//!   transmissions immediately, retransmissions after `initial_timeout` (2 s), then 4 s,
//!   8 s, ... and early once 3 later packets have been acknowledged. It stores payloads
//!   only: the caller rebuilds ACK block, wrap replay id and HMAC/tag for every
//!   transmission.
//! * **Receiving.** [`Reliable::receive`] buffers packets inside
//!   `[next_expected, next_expected + recv_window)` and acknowledges those and every
//!   already-delivered id (so lost ACKs are repaired when the peer retransmits);
//!   [`Reliable::pop_in_order`] releases payloads strictly in msg-id order.
//! * **Acknowledging.** [`Reliable::write_acks`] returns ids not yet acknowledged first,
//!   then recently acknowledged ones again, from a most-recently-used list of 8: OpenVPN
//!   re-sends ACKs this way on every packet, and its stateless server cookie relies on it.
//!
//! No clock is read: every time-dependent call takes `now`.
//!
//! ```
//! use warren_core::Instant;
//! use warren_openvpn::reliable::{Reliable, ReliableConfig};
//! use warren_wire::Opcode;
//!
//! let now = Instant::ZERO;
//! let (mut a, mut b) = (Reliable::new(ReliableConfig::default()), Reliable::new(ReliableConfig::default()));
//! a.queue(now, Opcode::ControlV1, b"hello".to_vec());
//! let out = a.poll_transmit(now).expect("due at once");
//! let (id, op, payload) = (out.msg_id, out.opcode, out.payload.to_vec());
//! b.receive(id, op, &payload);
//! assert_eq!(b.pop_in_order(), Some((Opcode::ControlV1, b"hello".to_vec())));
//! let mut acks = Vec::new();
//! b.write_acks(warren_wire::MAX_ACKS, &mut acks);
//! a.process_acks(&acks);
//! assert!(a.all_acked());
//! assert_eq!(a.poll_timeout(), None);
//! ```

use std::collections::VecDeque;

use warren_core::{Duration, Instant};
use warren_wire::{MAX_ACKS, Opcode};

/// TLS_RELIABLE_N_SEND_BUFFERS (ssl_pkt.h:70).
pub const DEFAULT_SEND_WINDOW: usize = 6;
/// TLS_RELIABLE_N_REC_BUFFERS (ssl_pkt.h:71).
pub const DEFAULT_RECV_WINDOW: usize = 12;
/// `tls-timeout` default (options.c init_options).
pub const DEFAULT_INITIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// N_ACK_RETRANSMIT (reliable.h:53): ACKs for later packets that trigger an early
/// retransmission.
pub const N_ACK_RETRANSMIT: u32 = 3;

/// Window sizes and the first retransmission timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReliableConfig {
    /// Most msg-ids outstanding, counted from the oldest unacknowledged one (6).
    pub send_window: usize,
    /// Receive window and buffer count (12).
    pub recv_window: usize,
    /// First retransmission timeout, doubled on every retry (`tls-timeout`, 2 s).
    pub initial_timeout: Duration,
}

impl Default for ReliableConfig {
    fn default() -> Self {
        ReliableConfig {
            send_window: DEFAULT_SEND_WINDOW,
            recv_window: DEFAULT_RECV_WINDOW,
            initial_timeout: DEFAULT_INITIAL_TIMEOUT,
        }
    }
}

/// A control packet to (re)transmit, as stored by [`Reliable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutgoingControl<'a> {
    pub msg_id: u32,
    pub opcode: Opcode,
    pub payload: &'a [u8],
    /// False for the first transmission of this msg-id.
    pub retransmit: bool,
}

/// What [`Reliable::receive`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiveOutcome {
    /// New and buffered; acknowledged.
    New,
    /// Already buffered or already delivered; acknowledged again.
    Duplicate,
    /// Beyond the receive window; dropped without an ACK (reliable.c
    /// reliable_wont_break_sequentiality).
    OutOfWindow,
    /// Every receive buffer is held (the caller is not popping); dropped without an ACK
    /// (reliable.c reliable_can_get).
    Full,
}

impl ReceiveOutcome {
    /// True when the packet's msg-id was queued for acknowledgement.
    pub fn acked(self) -> bool {
        matches!(self, ReceiveOutcome::New | ReceiveOutcome::Duplicate)
    }
}

/// The caller queued while the send window was full; the payload is handed back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reliable send window full")]
pub struct SendWindowFull(pub Vec<u8>);

#[derive(Debug, Clone)]
struct SendEntry {
    msg_id: u32,
    opcode: Opcode,
    payload: Vec<u8>,
    next_try: Instant,
    /// The delay armed by the next transmission.
    timeout: Duration,
    /// Newly acknowledged packets with a higher msg-id since the last transmission.
    later_acks: u32,
    last_sent: Option<Instant>,
}

impl SendEntry {
    /// When this entry is due: at `next_try`, or at once after N_ACK_RETRANSMIT later ACKs
    /// (reliable.c reliable_send). "At once" is the last send time, which is never later
    /// than any `now` the caller passes afterwards.
    fn due_at(&self) -> Instant {
        match self.last_sent {
            Some(t) if self.later_acks >= N_ACK_RETRANSMIT => t.min(self.next_try),
            _ => self.next_try,
        }
    }
}

/// A bounded list of msg-ids, in order, without duplicates.
#[derive(Debug, Clone, Copy, Default)]
struct AckList {
    ids: [u32; MAX_ACKS],
    len: usize,
}

impl AckList {
    fn as_slice(&self) -> &[u32] {
        &self.ids[..self.len]
    }

    fn contains(&self, id: u32) -> bool {
        self.as_slice().contains(&id)
    }

    /// reliable.c reliable_ack_acknowledge_packet_id: append unless present or full.
    fn push(&mut self, id: u32) {
        if self.len < MAX_ACKS && !self.contains(id) {
            self.ids[self.len] = id;
            self.len += 1;
        }
    }

    /// Removes the first `n` ids.
    fn drop_front(&mut self, n: usize) {
        let n = n.min(self.len);
        self.ids.copy_within(n..self.len, 0);
        self.len -= n;
    }

    /// reliable.c copy_acks_to_mru: moves `id` to the front, keeping at most MAX_ACKS.
    fn move_to_front(&mut self, id: u32) {
        let end = match self.as_slice().iter().position(|&x| x == id) {
            Some(i) => i,
            None => {
                self.len = (self.len + 1).min(MAX_ACKS);
                self.len - 1
            }
        };
        self.ids.copy_within(0..end, 1);
        self.ids[0] = id;
    }
}

/// `a` precedes `b` in msg-id serial order (reliable.c reliable_pid_min).
fn serial_lt(a: u32, b: u32) -> bool {
    a.wrapping_sub(b) >= 0x8000_0000
}

/// The reliability layer of one key state. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Reliable {
    cfg: ReliableConfig,
    /// The msg-id the next queued packet gets.
    next_id: u32,
    /// Unacknowledged packets, in msg-id order.
    send: VecDeque<SendEntry>,
    /// The msg-id [`Self::pop_in_order`] releases next.
    next_expected: u32,
    /// Slot `i` holds msg-id `next_expected + i`; `recv_window` slots.
    recv: VecDeque<Option<(Opcode, Vec<u8>)>>,
    held: usize,
    /// Received ids not yet written in any ACK block (reliable.c `rec_ack`).
    pending_acks: AckList,
    /// Recently written ACKs, newest first (reliable.c `ack_mru`).
    mru: AckList,
}

impl Reliable {
    /// A fresh state; window sizes below 1 are raised to 1.
    pub fn new(cfg: ReliableConfig) -> Self {
        let cfg = ReliableConfig {
            send_window: cfg.send_window.max(1),
            recv_window: cfg.recv_window.max(1),
            initial_timeout: cfg.initial_timeout,
        };
        Reliable {
            cfg,
            next_id: 0,
            send: VecDeque::with_capacity(cfg.send_window),
            next_expected: 0,
            recv: std::iter::repeat_with(|| None)
                .take(cfg.recv_window)
                .collect(),
            held: 0,
            pending_acks: AckList::default(),
            mru: AckList::default(),
        }
    }

    pub fn config(&self) -> &ReliableConfig {
        &self.cfg
    }

    // ---- sending ----

    /// True when a new msg-id may be assigned: `next_id - oldest_unacked < send_window`
    /// (reliable.c reliable_get_buf_output_sequenced).
    pub fn can_queue(&self) -> bool {
        match self.send.front() {
            None => true,
            Some(oldest) => {
                (self.next_id.wrapping_sub(oldest.msg_id) as usize) < self.cfg.send_window
            }
        }
    }

    /// Queues `payload` under the next msg-id, due for transmission at once, and returns
    /// the id. `opcode` must be a control opcode other than `P_ACK_V1`.
    ///
    /// # Panics
    /// If [`Self::can_queue`] is false: queueing past the send window is a caller bug.
    pub fn queue(&mut self, now: Instant, opcode: Opcode, payload: Vec<u8>) -> u32 {
        match self.try_queue(now, opcode, payload) {
            Ok(id) => id,
            Err(_) => panic!("Reliable::queue with a full send window: check can_queue() first"),
        }
    }

    /// [`Self::queue`] that hands the payload back when the send window is full.
    pub fn try_queue(
        &mut self,
        now: Instant,
        opcode: Opcode,
        payload: Vec<u8>,
    ) -> Result<u32, SendWindowFull> {
        debug_assert!(opcode.has_msg_id(), "{opcode:?} carries no msg-id");
        if !self.can_queue() {
            return Err(SendWindowFull(payload));
        }
        // reliable.c reliable_mark_active_outgoing: next_try = 0 (now), timeout = initial.
        let msg_id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.send.push_back(SendEntry {
            msg_id,
            opcode,
            payload,
            next_try: now,
            timeout: self.cfg.initial_timeout,
            later_acks: 0,
            last_sent: None,
        });
        Ok(msg_id)
    }

    /// Packets queued and not yet acknowledged.
    pub fn queued_len(&self) -> usize {
        self.send.len()
    }

    /// True when every queued packet has been acknowledged.
    pub fn all_acked(&self) -> bool {
        self.send.is_empty()
    }

    /// The msg-id the next [`Self::queue`] assigns.
    pub fn next_msg_id(&self) -> u32 {
        self.next_id
    }

    /// The lowest unacknowledged msg-id, if any.
    pub fn oldest_unacked(&self) -> Option<u32> {
        self.send.front().map(|e| e.msg_id)
    }

    /// Applies the ids of a received ACK block and returns how many packets they newly
    /// acknowledged. Unknown and repeated ids are ignored.
    ///
    /// For fast retransmission each newly acknowledged id counts once against every older
    /// unacknowledged packet (reliable.c reliable_send_purge). OpenVPN also counts the
    /// re-sent MRU ACKs, which makes it retransmit again right after a fast retransmission;
    /// counting only new ACKs (like TCP's duplicate-ACK rule) avoids that. Sender-side
    /// policy only: nothing on the wire depends on it.
    pub fn process_acks(&mut self, ids: &[u32]) -> usize {
        let mut newly = 0;
        for &id in ids {
            let Some(pos) = self.send.iter().position(|e| e.msg_id == id) else {
                continue;
            };
            self.send.remove(pos);
            newly += 1;
            for e in self.send.iter_mut().take(pos) {
                e.later_acks = e.later_acks.saturating_add(1);
            }
        }
        newly
    }

    /// The next packet to transmit now, if any: the lowest msg-id that is due. Arms its
    /// retransmission timer with the current timeout and doubles it (reliable.c
    /// reliable_send: exponential backoff, no cap; the hand-window bounds the handshake).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<OutgoingControl<'_>> {
        let e = self.send.iter_mut().find(|e| e.due_at() <= now)?;
        let retransmit = e.last_sent.is_some();
        e.next_try = now + e.timeout;
        e.timeout = e.timeout.saturating_mul(2);
        e.later_acks = 0;
        e.last_sent = Some(now);
        Some(OutgoingControl {
            msg_id: e.msg_id,
            opcode: e.opcode,
            payload: &e.payload,
            retransmit,
        })
    }

    /// When [`Self::poll_transmit`] next has something (possibly already past), or `None`
    /// when nothing is outstanding.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.send.iter().map(SendEntry::due_at).min()
    }

    /// Makes every unacknowledged packet due now with the initial timeout: the "burst"
    /// after the peer's first packet of a session (ssl.c:3942, reliable.c
    /// reliable_schedule_now).
    pub fn schedule_all_now(&mut self, now: Instant) {
        for e in &mut self.send {
            e.next_try = now;
            e.timeout = self.cfg.initial_timeout;
        }
    }

    // ---- receiving ----

    /// Takes a received packet with a msg-id (ssl.c:3990-4020).
    ///
    /// With a receive buffer free, an id below `next_expected + recv_window` is
    /// acknowledged, duplicates and already delivered ids included; it is buffered if it is
    /// not below `next_expected` and not already held. Ids are compared in serial order, so
    /// "already delivered" means within 2^31 before `next_expected`.
    pub fn receive(&mut self, msg_id: u32, opcode: Opcode, payload: &[u8]) -> ReceiveOutcome {
        // reliable.c reliable_can_get.
        if self.held >= self.cfg.recv_window {
            return ReceiveOutcome::Full;
        }
        let offset = msg_id.wrapping_sub(self.next_expected) as usize;
        let outcome = if offset < self.cfg.recv_window {
            match &mut self.recv[offset] {
                Some(_) => ReceiveOutcome::Duplicate,
                slot @ None => {
                    *slot = Some((opcode, payload.to_vec()));
                    self.held += 1;
                    ReceiveOutcome::New
                }
            }
        } else if serial_lt(msg_id, self.next_expected) {
            ReceiveOutcome::Duplicate
        } else {
            return ReceiveOutcome::OutOfWindow;
        };
        // "Process outgoing acknowledgment for packet just received, even if it's a replay".
        self.pending_acks.push(msg_id);
        outcome
    }

    /// The next payload in msg-id order, if it has arrived.
    pub fn pop_in_order(&mut self) -> Option<(Opcode, Vec<u8>)> {
        let item = self.recv.front_mut()?.take()?;
        self.recv.pop_front();
        self.recv.push_back(None);
        self.held -= 1;
        self.next_expected = self.next_expected.wrapping_add(1);
        Some(item)
    }

    /// The msg-id [`Self::pop_in_order`] waits for.
    pub fn next_expected(&self) -> u32 {
        self.next_expected
    }

    /// Packets buffered and not yet popped.
    pub fn held_len(&self) -> usize {
        self.held
    }

    // ---- acknowledging ----

    /// True when some received id has not been written in any ACK block yet. Send a
    /// `P_ACK_V1` if there is no packet to piggyback on (ssl.c:3148-3172).
    pub fn needs_ack(&self) -> bool {
        self.pending_acks.len > 0
    }

    /// Appends the ACK ids for the next outgoing packet to `out`: at most `max` (capped at
    /// [`MAX_ACKS`]; use 4 on a packet with a msg-id, 8 on `P_ACK_V1`), the new ones first,
    /// then recently acknowledged ones again (reliable.c reliable_ack_write).
    pub fn write_acks(&mut self, max: usize, out: &mut Vec<u32>) {
        let max = max.min(MAX_ACKS);
        let n = self.pending_acks.len.min(max);
        // copy_acks_to_mru walks backwards so the new ids keep their order at the front.
        for &id in self.pending_acks.as_slice()[..n].iter().rev() {
            self.mru.move_to_front(id);
        }
        self.pending_acks.drop_front(n);
        out.extend_from_slice(&self.mru.as_slice()[..self.mru.len.min(max)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use warren_core::TestRng;

    fn cfg() -> ReliableConfig {
        ReliableConfig::default()
    }

    fn t(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    fn sent(r: &mut Reliable, now: Instant) -> Vec<u32> {
        std::iter::from_fn(|| r.poll_transmit(now).map(|o| o.msg_id)).collect()
    }

    fn acks(r: &mut Reliable, max: usize) -> Vec<u32> {
        let mut v = Vec::new();
        r.write_acks(max, &mut v);
        v
    }

    #[test]
    fn send_window_limits_new_ids() {
        let mut r = Reliable::new(cfg());
        for i in 0..6 {
            assert!(r.can_queue());
            assert_eq!(r.queue(t(0), Opcode::ControlV1, vec![i]), u32::from(i));
        }
        assert!(!r.can_queue());
        assert_eq!(
            r.try_queue(t(0), Opcode::ControlV1, vec![9]),
            Err(SendWindowFull(vec![9]))
        );
        assert_eq!(sent(&mut r, t(0)), [0, 1, 2, 3, 4, 5]);
        // Acking later ids does not open the window: it counts from the oldest unacked.
        assert_eq!(r.process_acks(&[5, 4, 3, 2, 1]), 5);
        assert!(!r.can_queue());
        assert_eq!(r.oldest_unacked(), Some(0));
        assert_eq!(r.process_acks(&[0, 0, 77]), 1);
        assert!(r.all_acked());
        assert!(r.can_queue());
        assert_eq!(r.queue(t(0), Opcode::ControlV1, vec![]), 6);
    }

    #[test]
    #[should_panic(expected = "full send window")]
    fn queue_past_window_is_a_bug() {
        let mut r = Reliable::new(ReliableConfig {
            send_window: 1,
            ..cfg()
        });
        r.queue(t(0), Opcode::ControlV1, vec![]);
        r.queue(t(0), Opcode::ControlV1, vec![]);
    }

    #[test]
    fn backoff_doubles() {
        let mut r = Reliable::new(cfg());
        assert_eq!(r.poll_timeout(), None);
        r.queue(t(1000), Opcode::ControlHardResetClientV2, vec![]);
        assert_eq!(r.poll_timeout(), Some(t(1000)));
        let o = r.poll_transmit(t(1000)).expect("first");
        assert!(!o.retransmit);
        let mut at = 1000;
        for delay in [2_000, 4_000, 8_000, 16_000, 32_000] {
            assert_eq!(r.poll_timeout(), Some(t(at + delay)));
            assert!(r.poll_transmit(t(at + delay - 1)).is_none());
            let o = r.poll_transmit(t(at + delay)).expect("retransmit");
            assert!(o.retransmit);
            assert_eq!((o.msg_id, o.opcode), (0, Opcode::ControlHardResetClientV2));
            at += delay;
        }
        // The burst resets the backoff.
        r.schedule_all_now(t(at + 5));
        assert_eq!(r.poll_timeout(), Some(t(at + 5)));
        assert!(r.poll_transmit(t(at + 5)).is_some());
        assert_eq!(r.poll_timeout(), Some(t(at + 5 + 2_000)));
    }

    #[test]
    fn lowest_due_goes_first() {
        let mut r = Reliable::new(cfg());
        r.queue(t(0), Opcode::ControlV1, vec![0]);
        assert_eq!(sent(&mut r, t(0)), [0]);
        r.queue(t(1000), Opcode::ControlV1, vec![1]);
        r.queue(t(1000), Opcode::ControlV1, vec![2]);
        assert_eq!(sent(&mut r, t(2500)), [0, 1, 2]);
    }

    #[test]
    fn fast_retransmit_after_three_later_acks() {
        let mut r = Reliable::new(cfg());
        for _ in 0..5 {
            r.queue(t(0), Opcode::ControlV1, vec![]);
        }
        assert_eq!(sent(&mut r, t(0)), [0, 1, 2, 3, 4]);
        r.process_acks(&[1]);
        r.process_acks(&[2, 1]); // the re-ack of 1 does not count again
        assert!(r.poll_transmit(t(10)).is_none());
        assert_eq!(r.poll_timeout(), Some(t(2000)));
        r.process_acks(&[3, 2, 1]);
        assert!(r.poll_timeout().is_some_and(|d| d <= t(10)));
        let o = r.poll_transmit(t(10)).expect("fast retransmit");
        assert_eq!((o.msg_id, o.retransmit), (0, true));
        // 4 is not behind three acks (none above it) and waits for its timer.
        assert!(r.poll_transmit(t(10)).is_none());
        // The counter restarted and the backoff doubled for 0.
        assert_eq!(r.poll_timeout(), Some(t(2000)));
        assert_eq!(sent(&mut r, t(2000)), [4]);
        assert_eq!(r.poll_timeout(), Some(t(4010)));
    }

    #[test]
    fn receive_window_and_order() {
        let mut r = Reliable::new(cfg());
        assert_eq!(
            r.receive(12, Opcode::ControlV1, b"x"),
            ReceiveOutcome::OutOfWindow
        );
        assert!(!r.needs_ack());
        assert_eq!(r.receive(2, Opcode::ControlV1, b"2"), ReceiveOutcome::New);
        assert_eq!(r.receive(11, Opcode::ControlV1, b"11"), ReceiveOutcome::New);
        assert_eq!(
            r.receive(2, Opcode::ControlV1, b"2"),
            ReceiveOutcome::Duplicate
        );
        assert_eq!(r.pop_in_order(), None);
        assert_eq!(
            r.receive(0, Opcode::ControlHardResetClientV2, b""),
            ReceiveOutcome::New
        );
        assert_eq!(
            r.pop_in_order(),
            Some((Opcode::ControlHardResetClientV2, vec![]))
        );
        assert_eq!(r.pop_in_order(), None);
        assert_eq!(r.receive(1, Opcode::ControlV1, b"1"), ReceiveOutcome::New);
        assert_eq!(r.pop_in_order(), Some((Opcode::ControlV1, b"1".to_vec())));
        assert_eq!(r.pop_in_order(), Some((Opcode::ControlV1, b"2".to_vec())));
        assert_eq!(r.next_expected(), 3);
        assert_eq!(r.held_len(), 1);
        // Delivered ids are acked again; the window moved to [3, 15).
        assert_eq!(
            r.receive(0, Opcode::ControlV1, b""),
            ReceiveOutcome::Duplicate
        );
        assert_eq!(r.receive(14, Opcode::ControlV1, b"14"), ReceiveOutcome::New);
        assert_eq!(
            r.receive(15, Opcode::ControlV1, b"15"),
            ReceiveOutcome::OutOfWindow
        );
        assert_eq!(acks(&mut r, 8), [2, 11, 0, 1, 14]);
    }

    #[test]
    fn full_receive_buffers_stop_acks() {
        let mut r = Reliable::new(ReliableConfig {
            recv_window: 2,
            ..cfg()
        });
        assert_eq!(r.receive(0, Opcode::ControlV1, b"0"), ReceiveOutcome::New);
        assert_eq!(r.receive(1, Opcode::ControlV1, b"1"), ReceiveOutcome::New);
        assert_eq!(r.receive(0, Opcode::ControlV1, b"0"), ReceiveOutcome::Full);
        assert!(!ReceiveOutcome::Full.acked());
        assert!(r.pop_in_order().is_some());
        assert_eq!(
            r.receive(0, Opcode::ControlV1, b"0"),
            ReceiveOutcome::Duplicate
        );
    }

    #[test]
    fn ack_mru_order() {
        let mut r = Reliable::new(cfg());
        fn rx(r: &mut Reliable, id: u32) {
            r.receive(id, Opcode::ControlV1, &[]);
            while r.pop_in_order().is_some() {}
        }
        assert!(acks(&mut r, 8).is_empty());
        // One packet at a time, as in the lab trace: [6,5,4,3,2,1,0].
        for id in 0..7 {
            rx(&mut r, id);
            assert!(r.needs_ack());
            let a = acks(&mut r, 8);
            assert_eq!(a[0], id);
            assert!(!r.needs_ack());
        }
        assert_eq!(acks(&mut r, 8), [6, 5, 4, 3, 2, 1, 0]);
        assert_eq!(acks(&mut r, 4), [6, 5, 4, 3]);
        // New ids go first, in arrival order; a re-received id moves to the front.
        rx(&mut r, 8);
        rx(&mut r, 7);
        rx(&mut r, 2);
        assert_eq!(acks(&mut r, 4), [8, 7, 2, 6]);
        assert_eq!(acks(&mut r, 8), [8, 7, 2, 6, 5, 4, 3, 1]);
        // Never more than 8, whatever max says.
        assert_eq!(acks(&mut r, 100).len(), 8);
        // More new ids than fit: the rest stay pending for the next packet.
        for id in 9..15 {
            rx(&mut r, id);
        }
        assert_eq!(acks(&mut r, 4), [9, 10, 11, 12]);
        assert!(r.needs_ack());
        assert_eq!(acks(&mut r, 4), [13, 14, 9, 10]);
        assert!(!r.needs_ack());
    }

    #[test]
    fn pending_acks_are_bounded() {
        let mut r = Reliable::new(ReliableConfig {
            recv_window: 40,
            ..cfg()
        });
        for id in 0..20 {
            r.receive(id, Opcode::ControlV1, &[]);
        }
        assert_eq!(acks(&mut r, 8), [0, 1, 2, 3, 4, 5, 6, 7]);
        assert!(
            !r.needs_ack(),
            "reliable_ack_acknowledge_packet_id drops ids beyond 8"
        );
    }

    #[test]
    fn msg_ids_wrap() {
        let mut r = Reliable::new(cfg());
        r.next_id = u32::MAX - 1;
        r.next_expected = u32::MAX - 1;
        for _ in 0..4 {
            r.queue(t(0), Opcode::ControlV1, vec![]);
        }
        assert_eq!(sent(&mut r, t(0)), [u32::MAX - 1, u32::MAX, 0, 1]);
        assert!(r.can_queue());
        r.process_acks(&[0, 1, u32::MAX]);
        assert_eq!(r.oldest_unacked(), Some(u32::MAX - 1));
        assert_eq!(r.receive(0, Opcode::ControlV1, b"b"), ReceiveOutcome::New);
        assert_eq!(
            r.receive(u32::MAX - 1, Opcode::ControlV1, b"a"),
            ReceiveOutcome::New
        );
        assert_eq!(
            r.receive(u32::MAX - 2, Opcode::ControlV1, b""),
            ReceiveOutcome::Duplicate
        );
        assert!(r.pop_in_order().is_some());
        assert_eq!(r.pop_in_order(), None);
        assert_eq!(
            r.receive(u32::MAX, Opcode::ControlV1, b"m"),
            ReceiveOutcome::New
        );
        assert_eq!(r.pop_in_order(), Some((Opcode::ControlV1, b"m".to_vec())));
        assert_eq!(r.pop_in_order(), Some((Opcode::ControlV1, b"b".to_vec())));
    }

    // ---- simulation: two peers over a lossy, reordering, duplicating channel ----

    #[derive(Debug, Clone)]
    struct Pkt {
        acks: Vec<u32>,
        msg: Option<(u32, Opcode, Vec<u8>)>,
    }

    struct Peer {
        rel: Reliable,
        to_send: VecDeque<Vec<u8>>,
        delivered: Vec<Vec<u8>>,
        transmissions: Vec<(Instant, u32)>,
    }

    #[derive(Debug, Clone, Copy)]
    struct Net {
        loss_pct: u64,
        dup_pct: u64,
        /// Delay is 1..=max_delay_ms, so packets overtake each other.
        max_delay_ms: u64,
    }

    impl Peer {
        fn new(tag: &str, n: usize) -> Self {
            Peer {
                rel: Reliable::new(ReliableConfig::default()),
                to_send: (0..n).map(|i| format!("{tag}-{i}").into_bytes()).collect(),
                delivered: Vec::new(),
                transmissions: Vec::new(),
            }
        }

        fn receive(&mut self, p: &Pkt) {
            assert!(p.acks.len() <= MAX_ACKS);
            self.rel.process_acks(&p.acks);
            if let Some((id, op, payload)) = &p.msg {
                self.rel.receive(*id, *op, payload);
            }
            while let Some((_, payload)) = self.rel.pop_in_order() {
                self.delivered.push(payload);
            }
        }

        fn transmit(&mut self, now: Instant, out: &mut Vec<Pkt>) {
            while self.rel.can_queue()
                && let Some(m) = self.to_send.pop_front()
            {
                self.rel.queue(now, Opcode::ControlV1, m);
            }
            assert!(self.rel.queued_len() <= DEFAULT_SEND_WINDOW);
            loop {
                let oldest = self.rel.oldest_unacked();
                let Some(o) = self.rel.poll_transmit(now) else {
                    break;
                };
                let msg = (o.msg_id, o.opcode, o.payload.to_vec());
                // Window: every id in flight is within 6 of the oldest unacked one.
                let oldest = oldest.unwrap_or(msg.0);
                assert!(msg.0.wrapping_sub(oldest) < DEFAULT_SEND_WINDOW as u32);
                self.transmissions.push((now, msg.0));
                let mut acks = Vec::new();
                self.rel.write_acks(4, &mut acks);
                assert!(acks.len() <= 4);
                out.push(Pkt {
                    acks,
                    msg: Some(msg),
                });
            }
            if self.rel.needs_ack() {
                let mut acks = Vec::new();
                self.rel.write_acks(MAX_ACKS, &mut acks);
                assert!(!acks.is_empty() && acks.len() <= MAX_ACKS);
                out.push(Pkt { acks, msg: None });
            }
        }
    }

    /// Runs until both sides delivered everything and have nothing outstanding. Returns the
    /// simulated time it took.
    fn simulate(seed: u64, net: Net, n: usize) -> (Instant, Peer, Peer) {
        let mut rng = TestRng::seed(seed);
        let mut peers = [Peer::new("a", n), Peer::new("b", n)];
        // (deliver_at, seq, to, packet)
        let mut wire: Vec<(Instant, u64, usize, Pkt)> = Vec::new();
        let mut seq = 0u64;
        let mut now = Instant::ZERO;
        let limit = Instant::from_secs(100_000_000);
        loop {
            // Deliver everything due now, in delivery order.
            wire.sort_by_key(|(at, s, _, _)| (*at, *s));
            while wire.first().is_some_and(|(at, ..)| *at <= now) {
                let (_, _, to, p) = wire.remove(0);
                peers[to].receive(&p);
            }
            for (from, peer) in peers.iter_mut().enumerate() {
                let mut out = Vec::new();
                peer.transmit(now, &mut out);
                for p in out {
                    if rng.below(100) < net.loss_pct {
                        continue;
                    }
                    let copies = if rng.below(100) < net.dup_pct { 2 } else { 1 };
                    for _ in 0..copies {
                        let at = now + Duration::from_millis(1 + rng.below(net.max_delay_ms));
                        seq += 1;
                        wire.push((at, seq, 1 - from, p.clone()));
                    }
                }
            }
            let done = peers
                .iter()
                .all(|p| p.to_send.is_empty() && p.rel.all_acked() && !p.rel.needs_ack());
            if done && wire.is_empty() {
                break;
            }
            let next = [
                wire.iter().map(|w| w.0).min(),
                peers[0].rel.poll_timeout(),
                peers[1].rel.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else { break };
            now = next.max(now);
            assert!(
                now < limit,
                "simulation did not converge (seed {seed}, {net:?})"
            );
        }
        let [a, b] = peers;
        (now, a, b)
    }

    fn expect_all(p: &Peer, tag: &str, n: usize) {
        let want: Vec<Vec<u8>> = (0..n).map(|i| format!("{tag}-{i}").into_bytes()).collect();
        assert_eq!(p.delivered, want, "exactly once, in order");
    }

    #[test]
    fn perfect_channel_needs_no_retransmit() {
        let (_, a, b) = simulate(
            1,
            Net {
                loss_pct: 0,
                dup_pct: 0,
                max_delay_ms: 1,
            },
            50,
        );
        expect_all(&a, "b", 50);
        expect_all(&b, "a", 50);
        let mut ids: Vec<u32> = a.transmissions.iter().map(|x| x.1).collect();
        ids.dedup();
        assert_eq!(ids.len(), a.transmissions.len(), "no retransmissions");
    }

    #[test]
    fn lossy_channel_delivers_exactly_once_in_order() {
        for seed in 0..20 {
            let net = Net {
                loss_pct: 30,
                dup_pct: 20,
                max_delay_ms: 300,
            };
            let (_, a, b) = simulate(seed, net, 40);
            expect_all(&a, "b", 40);
            expect_all(&b, "a", 40);
            assert!(
                a.transmissions.len() > 40,
                "the channel lost packets, so some were retransmitted"
            );
        }
    }

    #[test]
    fn retransmit_intervals_double_when_nothing_gets_through() {
        // One peer, everything lost: the same id goes out at 0, 2, 6, 14, 30 s.
        let mut p = Peer::new("a", 1);
        let mut now = Instant::ZERO;
        for _ in 0..5 {
            p.transmit(now, &mut Vec::new());
            now = p.rel.poll_timeout().expect("outstanding");
        }
        let times: Vec<u64> = p.transmissions.iter().map(|(t, _)| t.as_secs()).collect();
        assert_eq!(times, [0, 2, 6, 14, 30]);
        assert!(p.transmissions.iter().all(|(_, id)| *id == 0));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn any_network_converges(
            seed in any::<u64>(),
            loss_pct in 0u64..40,
            dup_pct in 0u64..50,
            max_delay_ms in 1u64..3000,
            n in 0usize..30,
        ) {
            let (_, a, b) = simulate(seed, Net { loss_pct, dup_pct, max_delay_ms }, n);
            expect_all(&a, "b", n);
            expect_all(&b, "a", n);
        }

        #[test]
        fn receive_never_panics(ops in prop::collection::vec((any::<u32>(), any::<bool>()), 0..200)) {
            let mut r = Reliable::new(ReliableConfig::default());
            for (id, pop) in ops {
                let id = id % 40;
                r.receive(id, Opcode::ControlV1, &[]);
                if pop {
                    while r.pop_in_order().is_some() {}
                }
                let mut a = Vec::new();
                r.write_acks(MAX_ACKS, &mut a);
                prop_assert!(a.len() <= MAX_ACKS);
                prop_assert!(r.held_len() <= DEFAULT_RECV_WINDOW);
                r.process_acks(&a);
            }
        }
    }
}
