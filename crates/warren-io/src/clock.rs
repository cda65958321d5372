//! The driver's clock: `CLOCK_BOOTTIME` for engine time, `CLOCK_REALTIME` for its anchor.
use std::io;

use warren_core::Instant;

/// Engine time read from `CLOCK_BOOTTIME`.
///
/// [`Instant::ZERO`] is the moment the machine booted, so instants are small positive
/// numbers that keep counting while the machine is suspended (unlike `CLOCK_MONOTONIC`).
/// [`Clock::unix_time_at_zero`] anchors that origin to wall-clock time, which engines need
/// for replay timestamps and cookies.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    unix_time_at_zero: u64,
}

impl Clock {
    /// Reads both clocks once to compute the anchor.
    pub fn new() -> io::Result<Self> {
        let boot = read_clock(libc::CLOCK_BOOTTIME)?;
        let real = read_clock(libc::CLOCK_REALTIME)?;
        let unix_time_at_zero = (real / 1_000_000_000).saturating_sub(boot / 1_000_000_000);
        Ok(Clock { unix_time_at_zero })
    }

    /// The current engine time.
    pub fn now(&self) -> Instant {
        // CLOCK_BOOTTIME cannot fail on Linux >= 2.6.39 once `new` has read it: the only
        // errors of clock_gettime are EINVAL (unknown clock) and EFAULT (bad pointer).
        match read_clock(libc::CLOCK_BOOTTIME) {
            Ok(n) => Instant::from_nanos(n),
            Err(e) => panic!("invariant: CLOCK_BOOTTIME readable after Clock::new succeeded: {e}"),
        }
    }

    /// Unix time in seconds at [`Instant::ZERO`] (boot), as computed by [`Clock::new`].
    pub fn unix_time_at_zero(&self) -> u64 {
        self.unix_time_at_zero
    }

    /// The current Unix time in seconds (wall clock; may step).
    pub fn unix_now(&self) -> u64 {
        read_clock(libc::CLOCK_REALTIME).map_or(0, |n| n / 1_000_000_000)
    }
}

/// Formats a Unix time as local time, `YYYY-MM-DD HH:MM:SS`, the way OpenVPN's
/// `time_string` does (otime.c, used in status files). Falls back to UTC when the local
/// time zone cannot be resolved.
pub fn format_local_time(unix: u64) -> String {
    let t = libc::time_t::try_from(unix).unwrap_or(libc::time_t::MAX);
    let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
    // SAFETY: `t` and `tm` are valid for the call; localtime_r is the thread-safe variant and
    // writes only into `tm`.
    let mut ok = !unsafe { libc::localtime_r(&t, tm.as_mut_ptr()) }.is_null();
    if !ok {
        // SAFETY: as above, gmtime_r writes only into `tm`.
        ok = !unsafe { libc::gmtime_r(&t, tm.as_mut_ptr()) }.is_null();
    }
    if !ok {
        return String::from("1970-01-01 00:00:00");
    }
    // SAFETY: zero-initialised and then filled by localtime_r/gmtime_r on success.
    let tm = unsafe { tm.assume_init() };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

fn read_clock(id: libc::clockid_t) -> io::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec that lives across the call.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic_and_anchored() {
        let c = Clock::new().expect("clock");
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
        // Anchor plus uptime is within a few seconds of the wall clock.
        let est = c.unix_time_at_zero() + b.as_secs();
        assert!(
            est.abs_diff(c.unix_now()) <= 2,
            "est {est} vs {}",
            c.unix_now()
        );
        // Sanity: after 2020-01-01.
        assert!(c.unix_now() > 1_577_836_800);
    }

    #[test]
    fn local_time_has_openvpn_shape() {
        let s = format_local_time(1_700_000_000);
        assert_eq!(s.len(), 19, "{s}");
        assert!(s.starts_with("2023-11-1"), "{s}");
        assert_eq!(&s[4..5], "-");
        assert_eq!(&s[10..11], " ");
    }
}
