//! Logging setup: slog-term for people, one JSON object per line with `LOG_FORMAT=json`.
//!
//! Logging is synchronous (a mutex around the drain) so that no line is lost when the process
//! exits. [`logger_from_drain`] lets tests pass their own drain.

use std::str::FromStr;
use std::sync::Mutex;

use slog::{o, Drain, Level, Logger};

use crate::config::LogFormat;

/// The root logger for `format` at `level` (unknown levels fall back to `info`), on stderr.
pub fn logger(format: LogFormat, level: &str) -> Logger {
    let level = Level::from_str(level).unwrap_or(Level::Info);
    match format {
        LogFormat::Term => {
            let decorator = slog_term::TermDecorator::new().stderr().build();
            logger_from_drain(slog_term::FullFormat::new(decorator).build(), level)
        }
        LogFormat::Json => {
            let drain = slog_json::Json::new(std::io::stderr())
                .add_default_keys()
                .build();
            logger_from_drain(drain, level)
        }
    }
}

/// A root logger writing to `drain` from any thread, filtered at `level`.
pub fn logger_from_drain<D>(drain: D, level: Level) -> Logger
where
    D: Drain + Send + 'static,
    D::Err: std::fmt::Debug,
{
    let drain = Mutex::new(drain).map(slog::Fuse).filter_level(level).fuse();
    Logger::root(drain, o!("app" => "recsys"))
}
