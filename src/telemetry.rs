//! Logging setup: slog-term for people, one JSON object per line with `LOG_FORMAT=json`.
//!
//! Logging is synchronous (a mutex around the drain) so that no line is lost when the process
//! exits; each line is written whole, with one system call. [`logger_from_drain`] lets tests pass their own drain.
//!
//! A line written while a request is handled carries its `request_id` ([`RequestIds`]),
//! whichever actor or task writes it.

use std::io::{IsTerminal, LineWriter};
use std::str::FromStr;
use std::sync::Mutex;

use recsys_actors::request;
use slog::{o, Drain, Level, Logger, OwnedKV, OwnedKVList, Record, SingleKV};

use crate::config::LogFormat;

/// The root logger for `format` at `level` (unknown levels fall back to `info`), on stderr.
pub fn logger(format: LogFormat, level: &str) -> Logger {
    let level = Level::from_str(level).unwrap_or(Level::Info);
    match format {
        // A terminal gets colours; anything else (a file, a pipe, a container's log) the same
        // lines through a line buffer, one write each (unbuffered, a line took dozens of
        // system calls, which at INFO, a line per request, cost most of a read's time).
        LogFormat::Term if std::io::stderr().is_terminal() => {
            let decorator = slog_term::TermDecorator::new().stderr().build();
            logger_from_drain(slog_term::FullFormat::new(decorator).build(), level)
        }
        LogFormat::Term => {
            let decorator = slog_term::PlainDecorator::new(LineWriter::new(std::io::stderr()));
            logger_from_drain(slog_term::FullFormat::new(decorator).build(), level)
        }
        LogFormat::Json => {
            // Serialized a value at a time: the line buffer makes each line one write, as soon
            // as it is complete.
            let drain = slog_json::Json::new(LineWriter::new(std::io::stderr()))
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
    let drain = RequestIds(Mutex::new(drain).map(slog::Fuse).filter_level(level)).fuse();
    Logger::root(drain, o!("app" => "recsys"))
}

/// A drain adding `request_id` to every line written as part of a request (see
/// [`recsys_actors::request`]); lines of other work pass unchanged.
pub struct RequestIds<D>(pub D);

impl<D: Drain> Drain for RequestIds<D> {
    type Ok = D::Ok;
    type Err = D::Err;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<D::Ok, D::Err> {
        match request::current() {
            Some(id) => {
                let values = OwnedKVList::from(OwnedKV((
                    SingleKV("request_id", id.to_string()),
                    values.clone(),
                )));
                self.0.log(record, &values)
            }
            None => self.0.log(record, values),
        }
    }

    fn is_enabled(&self, level: Level) -> bool {
        self.0.is_enabled(level)
    }
}
