//! The command line: `recsys serve [--services a,b]`, `recsys migrate`,
//! `recsys rebuild recommendations|analytics`, `recsys healthcheck [--port P]` and `recsys demo`.

use clap::{Parser, Subcommand};

use crate::config::{Service, Settings};
use crate::demo::DemoArgs;

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
    /// Exit 0 when the service on `--port` answers `--path` (default `/readyz`) with 200, 1
    /// otherwise: the container health check, with no HTTP client in the image.
    Healthcheck {
        #[arg(long, default_value_t = 8080)]
        port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value = "/readyz")]
        path: String,
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
    /// Fill a running system with demo data through its HTTP APIs: a catalog, shoppers and a
    /// month of their actions (idempotent: a second run writes nothing); `--traffic RATE` then
    /// keeps live actions coming until SIGINT/SIGTERM.
    Demo(DemoArgs),
}

/// `GET path` on `host:port` over plain HTTP/1.1 within 3 s: `Ok` on a 200, else why not.
pub fn healthcheck(host: &str, port: u16, path: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    let timeout = std::time::Duration::from_secs(3);
    let address = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}:{port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}:{port}: no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&address, timeout).map_err(|e| format!("{address}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{address}: {e}"))?;
    let mut head = [0u8; 64];
    let n = stream
        .read(&mut head)
        .map_err(|e| format!("{address}: {e}"))?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    let status = status_line.split_whitespace().nth(1).unwrap_or("none");
    if status == "200" {
        Ok(())
    } else {
        Err(format!("GET {path} on {address}: status {status}"))
    }
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
