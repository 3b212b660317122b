//! The `recsys` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use recsys::cli::{Cli, Command};
use recsys::startup::Application;
use recsys::{db, demo, rebuild, telemetry};
use slog::{error, info};

/// Allocations from this size up get pages of their own from glibc, returned when freed,
/// unless `MALLOC_MMAP_THRESHOLD_` says otherwise.
///
/// glibc raises its threshold (from 128 KiB up to 32 MiB) each time such a block is freed, and
/// from then on serves large blocks from its arenas, up to 16 of them on two cores, each
/// keeping what it freed: the consumers' batches, decoded, folded and freed on whichever thread
/// ran them, left a peak RSS of 145-164 MiB in the pipeline benchmark; with the threshold fixed
/// at 1 MiB, 138-143 MiB at the same throughput (docs/benchmarks.md, "The allocator").
const MMAP_THRESHOLD: i32 = 1 << 20;

fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: called first in `main`, before any other thread exists; `mallopt` only sets a
        // parameter of the allocator.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        }
    }
}

fn main() -> ExitCode {
    fix_mmap_threshold();
    let cli = Cli::parse();
    if let Command::Healthcheck { port, host, path } = &cli.command {
        return match recsys::cli::healthcheck(host, *port, path) {
            Ok(()) => ExitCode::SUCCESS,
            Err(why) => {
                eprintln!("unhealthy: {why}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Demo(args) = &cli.command {
        let logger = telemetry::logger(args.log_format, &args.log_level);
        let result = actix_web::rt::System::new().block_on(demo::run(args.clone(), logger.clone()));
        return match result {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("recsys demo: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let settings = match &cli.command {
        Command::Healthcheck { .. } | Command::Demo(_) => unreachable!("answered above"),
        Command::Serve { settings, .. }
        | Command::Migrate { settings }
        | Command::Rebuild { settings, .. } => settings.clone(),
    };
    let logger = telemetry::logger(settings.log_format, &settings.log_level);
    let result = actix_web::rt::System::new().block_on(async {
        match cli.command {
            Command::Serve { services, settings } => {
                Application::build(settings, &services, logger.clone())
                    .await?
                    .run_until_stopped()
                    .await
            }
            Command::Migrate { settings } => {
                let applied = db::migrate(&settings.postgres.url()).await?;
                info!(logger, "migrations applied"; "versions" => applied.join(","));
                Ok(())
            }
            Command::Healthcheck { .. } | Command::Demo(_) => unreachable!("answered above"),
            Command::Rebuild {
                service,
                restart,
                settings,
            } => rebuild::rebuild(settings, service, restart, logger.clone())
                .await
                .map(|_| ()),
        }
    });
    match result {
        Ok(()) => {
            info!(logger, "bye");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!(logger, "fatal"; "error" => format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}
