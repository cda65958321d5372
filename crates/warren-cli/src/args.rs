//! What the subcommands share on the command line: the `--state-dir` option, dates and key
//! types as arguments, dates in output, and the terminal side of the state directory
//! (notices on stderr, a spinner while a slow key is made).
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use warren_pki::KeyAlgorithm;
use warren_server::state::{Console, DEFAULT_STATE_DIR};

/// The `--state-dir` option shared by `pki`, `user` and `profile`.
#[derive(Debug, Clone, clap::Args)]
pub struct StateDirArg {
    /// The state directory (PKI, tls-crypt key, user database).
    #[arg(long, value_name = "DIR", env = "WARREN_STATE_DIR", default_value = DEFAULT_STATE_DIR, global = true)]
    pub state_dir: PathBuf,
}

/// The state directory's notices on stderr, and a spinner while a slow key is made.
#[derive(Debug)]
pub struct Terminal;

impl Console for Terminal {
    fn notice(&self, line: &str) {
        eprintln!("{line}");
    }

    fn slow(&self, what: &str, work: &mut dyn FnMut()) {
        with_spinner(what, true, work);
    }
}

/// Runs `f`, with a spinner on stderr when `slow` and stderr is a terminal.
pub fn with_spinner<T>(msg: &str, slow: bool, f: impl FnOnce() -> T) -> T {
    if !slow || !std::io::stderr().is_terminal() {
        return f();
    }
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_message(msg.to_owned());
    pb.enable_steady_tick(Duration::from_millis(100));
    let out = f();
    pb.finish_and_clear();
    out
}

/// `2028-03-01T12:00:00Z`.
pub fn fmt_rfc3339(t: SystemTime) -> String {
    let d = time::OffsetDateTime::from_unix_timestamp(warren_pki::to_unix(t))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        d.year(),
        u8::from(d.month()),
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

/// Parses `YYYY-MM-DD` (midnight UTC at the start of that day) or `YYYY-MM-DDTHH:MM:SSZ`.
pub fn parse_date(s: &str) -> Result<SystemTime> {
    let bad =
        || anyhow::anyhow!("invalid date {s:?}: use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ (UTC)");
    let (date, time_part) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t.strip_suffix('Z').ok_or_else(bad)?)),
        None => (s, None),
    };
    let mut it = date.splitn(3, '-');
    let y: i32 = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let m: u8 = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let d: u8 = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let date = time::Date::from_calendar_date(y, time::Month::try_from(m).map_err(|_| bad())?, d)
        .map_err(|_| bad())?;
    let t = match time_part {
        None => time::Time::MIDNIGHT,
        Some(tp) => {
            let mut it = tp.splitn(3, ':');
            let h: u8 = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
            let mi: u8 = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
            let se: u8 = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
            time::Time::from_hms(h, mi, se).map_err(|_| bad())?
        }
    };
    Ok(warren_pki::from_unix(
        time::PrimitiveDateTime::new(date, t)
            .assume_utc()
            .unix_timestamp(),
    ))
}

/// The CLI spelling of a key algorithm argument.
pub fn parse_algo(s: &str) -> Result<KeyAlgorithm, String> {
    s.parse::<KeyAlgorithm>().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_server::state::fmt_date;

    #[test]
    fn dates() {
        let t = parse_date("2027-01-02").expect("date");
        assert_eq!(fmt_date(t), "2027-01-02");
        assert_eq!(fmt_rfc3339(t), "2027-01-02T00:00:00Z");
        let t = parse_date("2027-01-02T03:04:05Z").expect("date");
        assert_eq!(fmt_rfc3339(t), "2027-01-02T03:04:05Z");
        for bad in [
            "2027-13-01",
            "2027-01",
            "x",
            "2027-01-02T03:04:05",
            "2027-02-30",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }
}
