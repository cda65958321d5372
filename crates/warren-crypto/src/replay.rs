//! Receive-side replay protection with OpenVPN's packet_id.c semantics (fact sheet §1.6,
//! §7.1), used for data-channel packet ids (`time` = 0 always) and for the long-form
//! tls-auth / tls-crypt wrap ids.
//!
//! The model (packet_id.c packet_id_test / packet_id_add / packet_id_reap, with the
//! defaults `--replay-window 64 15`):
//! * id 0 is never valid;
//! * a `time` lower than the highest seen is rejected; a higher `time` is accepted and
//!   starts a new window (the sender restarted its counter);
//! * with equal `time`, an id above the highest is accepted; an older id is accepted only
//!   if it is less than 64 below the highest, has not been seen, and every id at or above it
//!   that *was* seen arrived no more than 15 s ago (packet_id_reap expires everything at and
//!   below the newest id whose arrival is older than 15 s).
//!
//! OpenVPN runs the reap pass at most every 5 s (SEQ_REAP_INTERVAL), so it may accept a
//! late packet up to ~5 s longer than this exact check does; never the reverse.
//!
//! Storage is a 64-bit "seen" bitmap plus 64 arrival instants, with no allocation.

use std::fmt;

use thiserror::Error;
use warren_core::{Duration, Instant};

/// packet_id.h DEFAULT_SEQ_BACKTRACK.
pub const REPLAY_WINDOW_LEN: u32 = 64;
/// packet_id.h DEFAULT_TIME_BACKTRACK.
pub const REPLAY_TIME_BACKTRACK: Duration = Duration::from_secs(15);

const WINDOW: usize = REPLAY_WINDOW_LEN as usize;

/// Why a packet id was refused. Count and drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReplayError {
    #[error("packet id 0 is never valid")]
    Zero,
    #[error("packet id already received")]
    Replayed,
    /// Below the 64-id window, or inside it but later than the 15 s time backtrack.
    #[error("packet id too old")]
    TooOld,
    /// The long-form `time` is older than the one in use.
    #[error("packet id time went backwards")]
    TimeBackwards,
}

/// One receive direction's replay state (OpenVPN `struct packet_id_rec`).
#[derive(Clone)]
pub struct ReplayWindow {
    /// Highest `time` accepted (`p->time`).
    time: u32,
    /// Highest id accepted in this `time` (`p->id`); 0 before the first packet.
    highest: u32,
    /// Bit `i` set: id `highest - i` has been received.
    seen: u64,
    /// Arrival of id `x` at index `x % 64`; meaningful only where `seen` has the bit.
    arrived: [Instant; WINDOW],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("time", &self.time)
            .field("highest", &self.highest)
            .field("seen", &format_args!("{:#018x}", self.seen))
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    pub fn new() -> Self {
        ReplayWindow {
            time: 0,
            highest: 0,
            seen: 0,
            arrived: [Instant::ZERO; WINDOW],
        }
    }

    /// The highest id accepted so far in the current `time` (0 if none).
    pub fn highest(&self) -> u32 {
        self.highest
    }

    /// Would `(id, time)` be accepted at `now`? Does not change the window
    /// (packet_id.c packet_id_test, with the reap applied exactly).
    pub fn check(&self, id: u32, time: u32, now: Instant) -> Result<(), ReplayError> {
        if id == 0 {
            return Err(ReplayError::Zero);
        }
        if time < self.time {
            return Err(ReplayError::TimeBackwards);
        }
        if time > self.time || id > self.highest {
            return Ok(());
        }
        let diff = self.highest - id;
        if diff >= REPLAY_WINDOW_LEN {
            return Err(ReplayError::TooOld);
        }
        if self.seen & (1u64 << diff) != 0 {
            return Err(ReplayError::Replayed);
        }
        // packet_id_reap: any received id >= `id` that arrived more than 15 s ago
        // expires `id`. Only out-of-order packets get here.
        let at_or_above = if diff == 63 {
            u64::MAX
        } else {
            (1u64 << (diff + 1)) - 1
        };
        let mut bits = self.seen & at_or_above;
        while bits != 0 {
            let j = bits.trailing_zeros();
            bits &= bits - 1;
            let arrived = self.arrived[slot(self.highest - j)];
            if now.saturating_duration_since(arrived) > REPLAY_TIME_BACKTRACK {
                return Err(ReplayError::TooOld);
            }
        }
        Ok(())
    }

    /// Records `(id, time)` as received at `now` (packet_id.c packet_id_add). Call only
    /// after [`check`](Self::check) accepted it (and, on the data channel, after the AEAD
    /// open succeeded).
    pub fn update(&mut self, id: u32, time: u32, now: Instant) {
        if time > self.time {
            // A new time stamp starts a new window.
            self.time = time;
            self.highest = id;
            self.seen = 1;
            self.arrived[slot(id)] = now;
            return;
        }
        if id > self.highest {
            let delta = id - self.highest;
            self.seen = if delta >= REPLAY_WINDOW_LEN {
                0
            } else {
                self.seen << delta
            };
            self.highest = id;
            self.seen |= 1;
            self.arrived[slot(id)] = now;
        } else {
            let diff = self.highest - id;
            if diff < REPLAY_WINDOW_LEN {
                self.seen |= 1u64 << diff;
                self.arrived[slot(id)] = now;
            }
        }
    }

    /// [`check`](Self::check), then [`update`](Self::update) if accepted.
    pub fn check_and_update(
        &mut self,
        id: u32,
        time: u32,
        now: Instant,
    ) -> Result<(), ReplayError> {
        self.check(id, time, now)?;
        self.update(id, time, now);
        Ok(())
    }
}

fn slot(id: u32) -> usize {
    (id % REPLAY_WINDOW_LEN) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn t(s: u64) -> Instant {
        Instant::from_secs(s)
    }

    #[test]
    fn zero_in_order_duplicates() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check(0, 0, t(100)), Err(ReplayError::Zero));
        for id in 1..=200 {
            assert_eq!(w.check_and_update(id, 0, t(100)), Ok(()));
            assert_eq!(w.check(id, 0, t(100)), Err(ReplayError::Replayed));
        }
        assert_eq!(w.highest(), 200);
        assert_eq!(w.check(0, 0, t(100)), Err(ReplayError::Zero));
        assert_eq!(w.check(137, 0, t(100)), Err(ReplayError::Replayed));
        assert_eq!(w.check(136, 0, t(100)), Err(ReplayError::TooOld));
        assert_eq!(w.check(1, 0, t(100)), Err(ReplayError::TooOld));
    }

    #[test]
    fn out_of_order_within_window() {
        let mut w = ReplayWindow::new();
        w.check_and_update(100, 0, t(10)).expect("first");
        // Everything 37..=99 is acceptable once; 36 is 64 below the highest.
        assert_eq!(w.check(36, 0, t(10)), Err(ReplayError::TooOld));
        for id in (37..100).rev() {
            assert_eq!(w.check_and_update(id, 0, t(10)), Ok(()), "{id}");
        }
        for id in 37..=100 {
            assert_eq!(w.check(id, 0, t(10)), Err(ReplayError::Replayed));
        }
        // A jump of more than 64 forgets everything below the new window.
        w.check_and_update(300, 0, t(11)).expect("jump");
        assert_eq!(w.check(236, 0, t(11)), Err(ReplayError::TooOld));
        assert_eq!(w.check(237, 0, t(11)), Ok(()));
        assert_eq!(w.check(299, 0, t(11)), Ok(()));
        // A jump of 63 keeps what was seen at the bottom of the window.
        w.check_and_update(363, 0, t(11)).expect("jump 63");
        assert_eq!(w.check(300, 0, t(11)), Err(ReplayError::Replayed));
        assert_eq!(w.check(299, 0, t(11)), Err(ReplayError::TooOld));
        assert_eq!(w.check(301, 0, t(11)), Ok(()));
        // A jump of exactly 64 pushes it out.
        w.check_and_update(427, 0, t(11)).expect("jump 64");
        assert_eq!(w.check(363, 0, t(11)), Err(ReplayError::TooOld));
        assert_eq!(w.check(364, 0, t(11)), Ok(()));
    }

    #[test]
    fn check_does_not_mutate() {
        let mut w = ReplayWindow::new();
        w.update(5, 0, t(1));
        let before = format!("{w:?}");
        for id in 0..20 {
            let _ = w.check(id, 0, t(1));
        }
        assert_eq!(format!("{w:?}"), before);
        assert_eq!(w.check(6, 0, t(1)), Ok(()));
        assert_eq!(w.check(6, 0, t(1)), Ok(()));
    }

    #[test]
    fn fifteen_second_rule() {
        let mut w = ReplayWindow::new();
        for id in (1..=10).filter(|&i| i != 5) {
            w.check_and_update(id, 0, t(100)).expect("in order");
        }
        // 5 may still come 15 s after its successors.
        assert_eq!(w.check(5, 0, t(115)), Ok(()));
        // ... not 16 s after.
        assert_eq!(w.check(5, 0, t(116)), Err(ReplayError::TooOld));
        // The binding constraint is the oldest arrival at or above the id, not the highest.
        let mut w = ReplayWindow::new();
        w.check_and_update(1, 0, t(100)).expect("1");
        w.check_and_update(3, 0, t(100)).expect("3");
        w.check_and_update(10, 0, t(114)).expect("10");
        assert_eq!(w.check(2, 0, t(116)), Err(ReplayError::TooOld)); // 3 arrived at 100
        assert_eq!(w.check(4, 0, t(116)), Ok(())); // only 10 (at 114) is above 4
        assert_eq!(w.check(9, 0, t(129)), Ok(()));
        assert_eq!(w.check(9, 0, t(130)), Err(ReplayError::TooOld));
        // New ids are never subject to the time rule.
        assert_eq!(w.check(11, 0, t(10_000)), Ok(()));
    }

    #[test]
    fn time_fields() {
        let mut w = ReplayWindow::new();
        let t1 = 0x6b02_4a67;
        for id in 1..=100 {
            w.check_and_update(id, t1, t(5)).expect("t1");
        }
        // time backwards is rejected whatever the id
        assert_eq!(w.check(101, t1 - 1, t(5)), Err(ReplayError::TimeBackwards));
        // time forwards is accepted even for a low id, and resets the window
        assert_eq!(w.check(1, t1 + 1, t(5)), Ok(()));
        w.update(1, t1 + 1, t(5));
        assert_eq!(w.highest(), 1);
        assert_eq!(w.check(1, t1 + 1, t(5)), Err(ReplayError::Replayed));
        assert_eq!(w.check(2, t1 + 1, t(5)), Ok(()));
        assert_eq!(w.check(101, t1, t(5)), Err(ReplayError::TimeBackwards));
        assert_eq!(w.check(0, t1 + 5, t(5)), Err(ReplayError::Zero));
        // A first packet with a high id after a time change opens a window below it.
        w.update(500, t1 + 2, t(6));
        assert_eq!(w.check(437, t1 + 2, t(6)), Ok(()));
        assert_eq!(w.check(436, t1 + 2, t(6)), Err(ReplayError::TooOld));
    }

    #[test]
    fn first_packet_edge_cases() {
        // The very first packet can have any non-zero id and any time.
        for (id, time) in [(1, 0), (u32::MAX, 0), (1, u32::MAX), (0x0f00_0001, 7)] {
            let mut w = ReplayWindow::new();
            assert_eq!(w.check_and_update(id, time, Instant::ZERO), Ok(()));
            assert_eq!(w.check(id, time, Instant::ZERO), Err(ReplayError::Replayed));
        }
    }

    /// A literal transcription of packet_id.c (circular list of arrival times with the
    /// UNSEEN/EXPIRED sentinels, reaping before every test), in whole seconds.
    #[derive(Default)]
    struct Reference {
        time: u32,
        id: u64,
        list: VecDeque<Slot>, // front = entry for `id`, index i = id - i
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Slot {
        Unseen,
        Expired,
        At(u64),
    }

    impl Reference {
        fn reap(&mut self, now: u64) {
            let mut expire = false;
            for s in self.list.iter_mut() {
                if *s == Slot::Expired {
                    break;
                }
                if let Slot::At(at) = *s
                    && !expire
                    && at + 15 < now
                {
                    expire = true;
                }
                if expire {
                    *s = Slot::Expired;
                }
            }
        }

        fn test(&self, id: u32, time: u32) -> bool {
            if id == 0 {
                return false;
            }
            if time == self.time {
                if u64::from(id) > self.id {
                    return true;
                }
                let diff = self.id - u64::from(id);
                if diff >= self.list.len() as u64 {
                    return false;
                }
                self.list[diff as usize] == Slot::Unseen
            } else {
                time > self.time
            }
        }

        fn add(&mut self, id: u32, time: u32, now: u64) {
            let id = u64::from(id);
            if self.list.is_empty() || time > self.time || (id >= 64 && id - 64 > self.id) {
                self.time = time;
                self.id = id.saturating_sub(64);
                self.list.clear();
            }
            while self.id < id {
                self.list.push_front(Slot::Unseen);
                self.list.truncate(64);
                self.id += 1;
            }
            let diff = (self.id - id) as usize;
            if diff < self.list.len() {
                self.list[diff] = Slot::At(now);
            }
        }
    }

    proptest! {
        #[test]
        fn prop_matches_openvpn_reference(
            ops in proptest::collection::vec((0u32..150, 0u32..3, 0u64..4), 1..300)
        ) {
            let mut w = ReplayWindow::new();
            let mut r = Reference::default();
            let mut now = 1_000u64;
            for (id, time, dt) in ops {
                now += dt;
                r.reap(now);
                let expect = r.test(id, time);
                let got = w.check(id, time, t(now));
                prop_assert_eq!(got.is_ok(), expect, "id {} time {} now {}", id, time, now);
                if expect {
                    r.add(id, time, now);
                    w.update(id, time, t(now));
                }
            }
        }
    }
}
