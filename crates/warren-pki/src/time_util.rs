//! Unix-seconds conversions. X.509 times have one-second resolution, so everything this crate
//! hands out is truncated to whole seconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (negative before 1970), truncated toward the past.
pub fn to_unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            // -1.5 s is second -2.
            if d.subsec_nanos() > 0 {
                -secs.saturating_add(1)
            } else {
                -secs
            }
        }
    }
}

/// The instant `secs` seconds after (or before) the Unix epoch.
pub fn from_unix(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// `t` as an `OffsetDateTime` for rcgen, truncated to whole seconds.
pub(crate) fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(to_unix(t))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in [-86_400 * 365, -1, 0, 1, 1_700_000_000, 253_402_300_799] {
            assert_eq!(to_unix(from_unix(s)), s);
        }
        assert_eq!(to_unix(UNIX_EPOCH - Duration::from_millis(1500)), -2);
        assert_eq!(to_unix(UNIX_EPOCH + Duration::from_millis(1500)), 1);
    }
}
