//! Progress of a long command (`recsys rebuild`, `recsys demo`): a bar on stderr when stderr is
//! a terminal, a log line every 5 s otherwise (a bar's carriage returns would fill a log file).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use slog::{info, Logger};

/// A progress bar on a terminal; a log line every 5 s otherwise.
pub struct Progress {
    /// The log message of the non-terminal lines (`rebuild progress`).
    message: &'static str,
    /// What is counted (`records`): the bar's word and the log line's key.
    unit: &'static str,
    total: i64,
    tty: bool,
    last_log: Option<Instant>,
}

impl Progress {
    /// Progress towards `total` `unit`s, logged as `message` when stderr is no terminal.
    pub fn new(message: &'static str, unit: &'static str, total: i64) -> Self {
        Self {
            message,
            unit,
            total,
            tty: std::io::stderr().is_terminal(),
            last_log: None,
        }
    }

    /// Shows `done` of the total: redraws the bar, or logs when the last line is 5 s old.
    pub fn show(&mut self, done: i64, logger: &Logger) {
        let share = if self.total <= 0 {
            1.0
        } else {
            (done as f64 / self.total as f64).clamp(0.0, 1.0)
        };
        if self.tty {
            let width = 40;
            let filled = ((share * width as f64) as usize).min(width);
            eprint!(
                "\r[{}{}] {done}/{} {} ({:.0}%)",
                "#".repeat(filled),
                ".".repeat(width - filled),
                self.total,
                self.unit,
                share * 100.0
            );
            let _ = std::io::stderr().flush();
        } else if self
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
        {
            self.last_log = Some(Instant::now());
            info!(logger, "{}", self.message; self.unit => done, "of" => self.total,
                "percent" => format!("{:.1}", share * 100.0));
        }
    }

    /// Ends the bar's line (a terminal only).
    pub fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}
