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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// `.env.example` as the settings define it: each setting's help, then `NAME=default`,
    /// commented out when it has no default or is a secret.
    fn env_example() -> String {
        let command = Cli::command();
        let serve = command
            .get_subcommands()
            .find(|c| c.get_name() == "serve")
            .expect("serve");
        let mut out = String::from(
            "# Every setting of `recsys serve`, with its default (generated from the code;\n\
             # `cargo test -p recsys env_example` checks it, UPDATE_ENV_EXAMPLE=1 rewrites it).\n\
             # Lines starting with `# NAME=` have no default or hold a secret: set them yourself.\n",
        );
        for arg in serve.get_arguments() {
            let Some(env) = arg.get_env() else { continue };
            let name = env.to_string_lossy();
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let first = help.lines().next().unwrap_or_default();
            let default: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            out.push_str(&format!("\n# {first}\n"));
            if default.is_empty() || arg.is_hide_env_values_set() {
                out.push_str(&format!("# {name}=\n"));
            } else {
                out.push_str(&format!("{name}={}\n", default.join(",")));
            }
        }
        out.push_str(
            "\n# Any librdkafka property for every Kafka client (see docs/operations.md,\n\
             # \"Encrypted connections\"), e.g.\n\
             # KAFKA_PROPERTY_SECURITY_PROTOCOL=SASL_SSL\n",
        );
        out
    }

    /// `.env.example` lists every setting with its default.
    #[test]
    fn env_example_lists_every_setting() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example");
        let expected = env_example();
        if std::env::var_os("UPDATE_ENV_EXAMPLE").is_some() {
            std::fs::write(path, &expected).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == expected,
            ".env.example is out of date: UPDATE_ENV_EXAMPLE=1 cargo test -p recsys env_example"
        );
    }
}
