//! Log setup: OpenVPN's `verb` as the default level, `-v`/`-q` to adjust, `RUST_LOG` to override.
use std::io::IsTerminal;

use std::sync::{Mutex, PoisonError};

use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use warren_driver::management::{LogFlag, LogTap};

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
    init_with_tap(level, None);
}

/// [`init`], also feeding `tap` (the management interface's log cache, `>LOG:`), whose
/// `verb N` changes the level and whose `mute N` suppresses repeats.
pub fn init_with_tap(level: LevelFilter, tap: Option<&LogTap>) {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .with_filter_reloading();
    let handle = builder.reload_handle();
    let result = match tap {
        None => builder.try_init(),
        Some(tap) => {
            tap.set_verb_hook(
                verb_of(level),
                Box::new(move |verb| {
                    handle
                        .modify(|f| {
                            *f = EnvFilter::default().add_directive(level_for_verb(verb).into());
                        })
                        .is_ok()
                }),
            );
            builder
                .finish()
                .with(TapLayer {
                    tap: tap.clone(),
                    last: Mutex::new((None, 0)),
                })
                .try_init()
                .map_err(Into::into)
        }
    };
    if let Err(e) = result {
        eprintln!("warning: logging already initialised: {e}");
    }
}

/// The `verb` a level stands for (what the management interface's `verb` shows).
fn verb_of(level: LevelFilter) -> u8 {
    match level {
        LevelFilter::OFF | LevelFilter::ERROR => 0,
        LevelFilter::WARN => 1,
        LevelFilter::INFO => 3,
        LevelFilter::DEBUG => 4,
        _ => 5,
    }
}

/// Copies every logged line into the management log cache, and applies `mute N`: at most
/// N consecutive lines from the same place in the code (OpenVPN's mute category), for every
/// output.
struct TapLayer {
    tap: LogTap,
    /// The call site of the previous line and how many in a row came from it.
    last: Mutex<(Option<tracing::callsite::Identifier>, u32)>,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for TapLayer {
    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let mute = self.tap.mute();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let id = event.metadata().callsite();
        if last.0.as_ref() == Some(&id) {
            last.1 = last.1.saturating_add(1);
        } else {
            *last = (Some(id), 1);
        }
        mute == 0 || last.1 <= mute
    }

    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut text = Text(String::new());
        event.record(&mut text);
        let flag = match *event.metadata().level() {
            tracing::Level::ERROR => LogFlag::Error,
            tracing::Level::WARN => LogFlag::Warning,
            tracing::Level::INFO => LogFlag::Info,
            _ => LogFlag::Debug,
        };
        self.tap.push(flag, &text.0);
    }
}

/// The message, then ` key=value` for the other fields.
struct Text(String);

impl tracing::field::Visit for Text {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
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
