//! Connections to Postgres as libpq would make them from the same URL: `sslmode` (`disable`,
//! `allow`, `prefer`, `require`, `verify-ca`, `verify-full`) and `sslrootcert` (a PEM file of
//! the certificate authorities to trust) are read here, since tokio-postgres knows only the
//! first three modes and no root certificates.
//!
//! | `sslmode` | encrypted | certificate chain checked | host name checked |
//! |-----------|-----------|---------------------------|-------------------|
//! | absent, `disable` | no | - | - |
//! | `allow`, `prefer` | when the server offers it | no | no |
//! | `require` | yes | only when `sslrootcert` is given (as libpq does) | no |
//! | `verify-ca` | yes | yes (`sslrootcert`, or the system's roots) | no |
//! | `verify-full` | yes | yes | yes |
//!
//! Without `sslmode` the connection is plain, as it always was here (libpq would try TLS).

use std::path::PathBuf;

use anyhow::Context as _;
use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;

/// How a URL asks to reach Postgres.
#[derive(Clone)]
pub struct Target {
    /// The URL without the parameters read here, with the mode tokio-postgres should apply.
    url: String,
    /// `None`: a plain connection.
    tls: Option<native_tls::TlsConnector>,
}

impl Target {
    /// Reads `url`; refuses an unknown `sslmode` or an unreadable `sslrootcert` (naming the
    /// parameter, never the URL: it may hold a password).
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut mode = None;
        let mut root = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "sslmode" => mode = Some(value.to_string()),
                "sslrootcert" => {
                    let path: String = form_urlencoded::parse(format!("p={value}").as_bytes())
                        .map(|(_, v)| v.into_owned())
                        .next()
                        .unwrap_or_default();
                    root = Some(PathBuf::from(path));
                }
                _ => kept.push(pair.to_string()),
            }
        }
        let (tokio_mode, verify_chain, verify_host) = match mode.as_deref() {
            None | Some("disable") => {
                return Ok(Self {
                    url: join(base, kept),
                    tls: None,
                })
            }
            Some("allow" | "prefer") => ("prefer", false, false),
            Some("require") => ("require", root.is_some(), false),
            Some("verify-ca") => ("require", true, false),
            Some("verify-full") => ("require", true, true),
            Some(_) => anyhow::bail!(
                "DATABASE_URL: sslmode must be disable, allow, prefer, require, verify-ca or \
                 verify-full"
            ),
        };
        let mut builder = native_tls::TlsConnector::builder();
        if let Some(path) = &root {
            let pem = std::fs::read(path)
                .with_context(|| format!("DATABASE_URL: sslrootcert {}", path.display()))?;
            for cert in pem_certificates(&pem)? {
                builder.add_root_certificate(cert);
            }
        }
        builder
            .danger_accept_invalid_certs(!verify_chain)
            .danger_accept_invalid_hostnames(!verify_host);
        let tls = builder
            .build()
            .context("DATABASE_URL: building the TLS connector")?;
        kept.push(format!("sslmode={tokio_mode}"));
        Ok(Self {
            url: join(base, kept),
            tls: Some(tls),
        })
    }

    /// Whether connections are encrypted (or may be).
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Opens one connection.
    pub async fn connect(&self) -> Result<AsyncPgConnection, ConnectionError> {
        let Some(tls) = &self.tls else {
            return <AsyncPgConnection as diesel_async::AsyncConnection>::establish(&self.url)
                .await;
        };
        let tls = postgres_native_tls::MakeTlsConnector::new(tls.clone());
        let (client, connection) = tokio_postgres::connect(&self.url, tls)
            .await
            .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
        AsyncPgConnection::try_from_client_and_connection(client, connection).await
    }
}

fn join(base: &str, params: Vec<String>) -> String {
    if params.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", params.join("&"))
    }
}

/// Every certificate of a PEM bundle.
fn pem_certificates(pem: &[u8]) -> anyhow::Result<Vec<native_tls::Certificate>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = std::str::from_utf8(pem).context("sslrootcert is not PEM text")?;
    let mut certs = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let end = rest[start..]
            .find(END)
            .context("sslrootcert: a certificate without its END line")?
            + start
            + END.len();
        certs.push(
            native_tls::Certificate::from_pem(&rest.as_bytes()[start..end])
                .context("sslrootcert: an unreadable certificate")?,
        );
        rest = &rest[end..];
    }
    anyhow::ensure!(!certs.is_empty(), "sslrootcert holds no certificate");
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_sslmode_the_url_is_kept_and_plain() {
        let target = Target::parse("postgres://u:p@h:5432/db?application_name=x").unwrap();
        assert!(!target.tls());
        assert_eq!(target.url, "postgres://u:p@h:5432/db?application_name=x");
    }

    #[test]
    fn libpq_modes_map_to_what_tokio_postgres_knows() {
        for (mode, expected) in [
            ("prefer", "sslmode=prefer"),
            ("require", "sslmode=require"),
            ("verify-full", "sslmode=require"),
        ] {
            let target = Target::parse(&format!("postgres://h/db?sslmode={mode}")).unwrap();
            assert!(target.tls());
            assert_eq!(target.url, format!("postgres://h/db?{expected}"));
        }
        assert!(!Target::parse("postgres://h/db?sslmode=disable")
            .unwrap()
            .tls());
        let error = Target::parse("postgres://u:hunter2@h/db?sslmode=sometimes")
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("sslmode") && !error.contains("hunter2"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_root_certificate_is_refused_by_name() {
        let error = Target::parse("postgres://h/db?sslmode=verify-full&sslrootcert=/nowhere.pem")
            .err()
            .unwrap();
        assert!(
            format!("{error:#}").contains("sslrootcert /nowhere.pem"),
            "{error:#}"
        );
    }
}
