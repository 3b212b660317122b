//! The command line: `recsys serve [--services a,b]`, `recsys migrate` and
//! `recsys rebuild recommendations|analytics`.

use clap::{Parser, Subcommand};

use crate::config::{Service, Settings};

/// recsys: users, products, recommendations and analytics on one actix runtime.
#[derive(Debug, Parser)]
#[command(name = "recsys", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply migrations, then serve the chosen services until SIGINT/SIGTERM.
    Serve {
        /// Services to host, comma separated (default: all four).
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = Service::ALL)]
        services: Vec<Service>,
        #[command(flatten)]
        settings: Settings,
    },
    /// Apply pending migrations and exit.
    Migrate {
        #[command(flatten)]
        settings: Settings,
    },
    /// Recompute a read model (recommendations or analytics) from the topics: stop the
    /// runtimes hosting that service first.
    Rebuild {
        /// The service whose read model to rebuild.
        #[arg(value_enum)]
        service: Service,
        /// Wipe and start over even when an unfinished rebuild could be resumed.
        #[arg(long)]
        restart: bool,
        #[command(flatten)]
        settings: Settings,
    },
}
