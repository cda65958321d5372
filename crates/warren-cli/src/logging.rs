//! Log setup: OpenVPN's `verb` as the default level, `-v`/`-q` to adjust, `RUST_LOG` to override.
use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

/// OpenVPN's `verb` scale on tracing levels: 0 is errors only; 1-3 is normal operation
/// (OpenVPN's recommended `verb 3` shows connects and disconnects); 4 adds debug detail;
/// 5 and up traces packets.
pub fn level_for_verb(verb: u8) -> LevelFilter {
    match verb {
        0 => LevelFilter::ERROR,
        1..=3 => LevelFilter::INFO,
        4 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// `base` moved up by `verbose` steps and down by `quiet` steps, clamped to OFF..=TRACE.
pub fn adjust(base: LevelFilter, verbose: u8, quiet: u8) -> LevelFilter {
    const LADDER: [LevelFilter; 6] = [
        LevelFilter::OFF,
        LevelFilter::ERROR,
        LevelFilter::WARN,
        LevelFilter::INFO,
        LevelFilter::DEBUG,
        LevelFilter::TRACE,
    ];
    let pos = LADDER.iter().position(|l| *l == base).unwrap_or(3) as i32;
    let pos = (pos + i32::from(verbose) - i32::from(quiet)).clamp(0, 5);
    LADDER[pos as usize]
}

/// Installs the global subscriber: stderr, timestamps, no module targets. `RUST_LOG`, when
/// set and valid, replaces the computed level entirely.
pub fn init(level: LevelFilter) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("warning: ignoring invalid RUST_LOG={spec:?}: {e}");
                EnvFilter::default().add_directive(level.into())
            }
        },
        _ => EnvFilter::default().add_directive(level.into()),
    };
    // Colours only on a terminal, and never with NO_COLOR (https://no-color.org).
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let result = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
    if let Err(e) = result {
        eprintln!("warning: logging already initialised: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verb_scale() {
        assert_eq!(level_for_verb(0), LevelFilter::ERROR);
        assert_eq!(level_for_verb(1), LevelFilter::INFO);
        assert_eq!(level_for_verb(3), LevelFilter::INFO);
        assert_eq!(level_for_verb(4), LevelFilter::DEBUG);
        assert_eq!(level_for_verb(5), LevelFilter::TRACE);
        assert_eq!(level_for_verb(11), LevelFilter::TRACE);
    }

    #[test]
    fn flags_move_along_the_ladder() {
        assert_eq!(adjust(LevelFilter::INFO, 1, 0), LevelFilter::DEBUG);
        assert_eq!(adjust(LevelFilter::INFO, 9, 0), LevelFilter::TRACE);
        assert_eq!(adjust(LevelFilter::INFO, 0, 1), LevelFilter::WARN);
        assert_eq!(adjust(LevelFilter::INFO, 0, 9), LevelFilter::OFF);
        assert_eq!(adjust(LevelFilter::ERROR, 2, 1), LevelFilter::WARN);
    }
}
