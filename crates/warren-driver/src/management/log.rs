//! The log as the management interface sees it: a bounded cache of recent lines
//! (`management-log-cache`, OpenVPN's default 250) that any thread appends to through the
//! logger, and a wake-up for the control loop, which sends new lines as `>LOG:` to a
//! management client that asked for them (`log on`).
//!
//! Appending never blocks on the loop: a short critical section over the ring, and one
//! byte written to a non-blocking socket pair only when the loop has not been woken since
//! it last looked. Before the server sets a capacity, lines are not kept.
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use warren_io::Clock;

/// OpenVPN's log flags on a `>LOG:` line (error.c `msg_flags_string`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFlag {
    /// `I`: informational.
    Info,
    /// `N`: a non-fatal error.
    Error,
    /// `W`: a warning.
    Warning,
    /// `D`: debug.
    Debug,
    /// `F`: fatal.
    Fatal,
}

impl LogFlag {
    pub fn letter(self) -> &'static str {
        match self {
            LogFlag::Info => "I",
            LogFlag::Error => "N",
            LogFlag::Warning => "W",
            LogFlag::Debug => "D",
            LogFlag::Fatal => "F",
        }
    }
}

/// One cached log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Appended lines are numbered from 1.
    pub seq: u64,
    /// Unix seconds.
    pub unix: u64,
    pub flag: LogFlag,
    pub text: String,
}

impl LogLine {
    /// `1796281507,D,MANAGEMENT: CMD 'log 2'` (the history form; `>LOG:` in front for
    /// real time).
    pub fn render(&self) -> String {
        format!("{},{},{}", self.unix, self.flag.letter(), self.text)
    }
}

/// What `verb N` calls to change the log level (set by the binary, which owns the
/// logger); returns whether it could.
pub type VerbFn = Box<dyn Fn(u8) -> bool + Send + Sync>;

struct Ring {
    lines: VecDeque<LogLine>,
    capacity: usize,
    next_seq: u64,
}

struct Inner {
    ring: Mutex<Ring>,
    clock: Clock,
    /// The loop has been woken and not yet drained.
    woken: AtomicBool,
    wake_tx: UnixStream,
    wake_rx: UnixStream,
    verb: AtomicU8,
    mute: AtomicU32,
    set_verb: Mutex<Option<VerbFn>>,
}

/// The shared log cache; clones share it.
#[derive(Clone)]
pub struct LogTap(Arc<Inner>);

impl std::fmt::Debug for LogTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogTap")
            .field("verb", &self.verb())
            .finish_non_exhaustive()
    }
}

/// Longest line kept (OpenVPN's message buffer is a few KiB; a longer line is cut).
const MAX_LINE: usize = 2048;

impl LogTap {
    pub fn new(clock: Clock) -> io::Result<LogTap> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        Ok(LogTap(Arc::new(Inner {
            ring: Mutex::new(Ring {
                lines: VecDeque::new(),
                capacity: 0,
                next_seq: 1,
            }),
            clock,
            woken: AtomicBool::new(false),
            wake_tx,
            wake_rx,
            verb: AtomicU8::new(1),
            mute: AtomicU32::new(0),
            set_verb: Mutex::new(None),
        })))
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.0.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keep the last `lines` lines (0: keep none).
    pub fn set_capacity(&self, lines: usize) {
        let mut r = self.ring();
        r.capacity = lines;
        while r.lines.len() > lines {
            r.lines.pop_front();
        }
    }

    /// Appends a line (from any thread) and wakes the loop if it is not awake already.
    pub fn push(&self, flag: LogFlag, text: &str) {
        let text = match text.char_indices().nth(MAX_LINE) {
            Some((i, _)) => &text[..i],
            None => text,
        };
        // One line per entry, as OpenVPN's log has.
        let text: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        {
            let mut r = self.ring();
            if r.capacity == 0 {
                return;
            }
            let seq = r.next_seq;
            r.next_seq += 1;
            if r.lines.len() == r.capacity {
                r.lines.pop_front();
            }
            let unix = self.0.clock.unix_now();
            r.lines.push_back(LogLine {
                seq,
                unix,
                flag,
                text,
            });
        }
        if !self.0.woken.swap(true, Ordering::AcqRel) {
            // A full pipe means the loop has bytes to read already.
            let _ = (&self.0.wake_tx).write(&[1]);
        }
    }

    /// Wakes the loop (more lines are waiting than one turn sends).
    pub fn push_wake(&self) {
        if !self.0.woken.swap(true, Ordering::AcqRel) {
            let _ = (&self.0.wake_tx).write(&[1]);
        }
    }

    /// The descriptor that becomes readable when lines were appended.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.0.wake_rx.as_fd()
    }

    /// Clears the wake-up; lines appended from now on wake the loop again.
    pub fn clear_wake(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.0.wake_rx).read(&mut buf), Ok(n) if n > 0) {}
        self.0.woken.store(false, Ordering::Release);
    }

    /// The sequence number the next line will get.
    pub fn next_seq(&self) -> u64 {
        self.ring().next_seq
    }

    /// Lines numbered `from` or later that are still cached, at most `max`.
    pub fn since(&self, from: u64, max: usize) -> Vec<LogLine> {
        let r = self.ring();
        r.lines
            .iter()
            .filter(|l| l.seq >= from)
            .take(max)
            .cloned()
            .collect()
    }

    /// The last `n` cached lines (`None`: all of them).
    pub fn last(&self, n: Option<usize>) -> Vec<LogLine> {
        let r = self.ring();
        let skip = n.map_or(0, |n| r.lines.len().saturating_sub(n));
        r.lines.iter().skip(skip).cloned().collect()
    }

    /// The current `verb`.
    pub fn verb(&self) -> u8 {
        self.0.verb.load(Ordering::Relaxed)
    }

    /// Records the level the logger starts with and how to change it.
    pub fn set_verb_hook(&self, verb: u8, hook: VerbFn) {
        self.0.verb.store(verb, Ordering::Relaxed);
        *self
            .0
            .set_verb
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(hook);
    }

    /// `verb N`: false when the logger cannot change its level.
    pub fn change_verb(&self, verb: u8) -> bool {
        let hook = self
            .0
            .set_verb
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match hook.as_ref() {
            Some(f) if f(verb) => {
                self.0.verb.store(verb, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// `mute N`: at most N consecutive lines from the same place in the code are logged
    /// (0: no limit). The logger asks [`LogTap::mute`].
    pub fn set_mute(&self, n: u32) {
        self.0.mute.store(n, Ordering::Relaxed);
    }

    pub fn mute(&self) -> u32 {
        self.0.mute.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn bounded_cache_and_wake() {
        let tap = LogTap::new(Clock::new().unwrap()).unwrap();
        tap.push(LogFlag::Info, "dropped: no capacity yet");
        assert_eq!(tap.next_seq(), 1);
        tap.set_capacity(3);
        for i in 0..5 {
            tap.push(LogFlag::Warning, &format!("line {i}\nsecond"));
        }
        let all = tap.last(None);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].text, "line 2 second");
        assert_eq!(all[2].seq, 5);
        assert!(all[2].render().ends_with(",W,line 4 second"));
        assert_eq!(tap.last(Some(1))[0].seq, 5);
        assert_eq!(tap.since(4, 10).len(), 2);
        assert_eq!(tap.since(1, 1)[0].seq, 3);
        // One wake-up byte until cleared.
        let mut buf = [0u8; 8];
        assert_eq!((&tap.0.wake_rx).read(&mut buf).unwrap(), 1);
        tap.clear_wake();
        tap.push(LogFlag::Debug, "again");
        assert_eq!((&tap.0.wake_rx).read(&mut buf).unwrap(), 1);
        assert!(!tap.change_verb(4), "no hook: cannot change");
        tap.set_verb_hook(3, Box::new(|v| v < 12));
        assert!(tap.change_verb(5));
        assert_eq!(tap.verb(), 5);
    }
}
