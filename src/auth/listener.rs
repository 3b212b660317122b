//! [`RevocationListener`]: keeps a runtime's [`Revocations`] list current.
//!
//! It holds one Postgres connection of its own (LISTEN needs a session, not a pooled
//! connection), runs `LISTEN token_revocations`, then reloads the list from the table (so
//! nothing raised between the runtime's first load and the LISTEN is missed) and applies each
//! announcement as it arrives. When the connection fails it connects again with backoff and
//! reloads: announcements missed meanwhile are in the table; a connection quiet for 30 s must
//! answer a `SELECT 1` within 30 s or is replaced. Every hour it forgets revocations older than
//! a token's lifetime.

use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use diesel_async::RunQueryDsl;
use futures_util::StreamExt;
use recsys_actors::retry;
use slog::{info, warn, Logger};

use super::revocations::{self, Revocations, CHANNEL};
use crate::config::Secret;
use crate::db;

/// How often revocations older than a token's lifetime are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How long the connection may stay quiet before it is asked to answer, and how long it has to.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// Listens for revocations; start it under a supervisor.
pub struct RevocationListener {
    url: Secret,
    list: Revocations,
    logger: Logger,
}

impl RevocationListener {
    /// A listener on the database at `url` keeping `list` current.
    pub fn new(url: Secret, list: Revocations, logger: Logger) -> Self {
        Self { url, list, logger }
    }
}

impl Actor for RevocationListener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(PRUNE_EVERY, |act, _| act.list.prune(Utc::now()));
        let (url, list, logger) = (self.url.clone(), self.list.clone(), self.logger.clone());
        ctx.spawn(listen(url, list, logger).into_actor(self));
    }
}

impl Supervised for RevocationListener {
    fn restarting(&mut self, _: &mut Self::Context) {
        warn!(self.logger, "revocation listener restarting");
    }
}

/// Connects, listens and reloads; applies announcements until the connection fails; again.
async fn listen(url: Secret, list: Revocations, logger: Logger) {
    loop {
        let mut conn = retry::until_ok(&logger, "listening for token revocations", || async {
            let mut conn = db::connect(&url).await?;
            diesel::sql_query(format!("LISTEN {CHANNEL}"))
                .execute(&mut conn)
                .await?;
            list.load(&mut conn).await?;
            Ok(conn)
        })
        .await;
        info!(logger, "listening for token revocations"; "recent" => list.len());
        loop {
            let next = {
                let mut notifications = std::pin::pin!(conn.notifications_stream());
                tokio::time::timeout(HEARTBEAT, notifications.next()).await
            };
            match next {
                Ok(Some(Ok(n))) => match revocations::parse(&n.payload) {
                    Some((user, version)) => list.record(user, version, Utc::now()),
                    None => warn!(logger, "unreadable token revocation"; "payload" => n.payload),
                },
                Ok(Some(Err(e))) => {
                    warn!(logger, "token revocation listener lost its connection"; "error" => %e);
                    break;
                }
                Ok(None) => {
                    warn!(logger, "token revocation listener lost its connection"; "error" => "closed");
                    break;
                }
                // Quiet for a while: make sure the connection still answers (a silently dropped
                // connection would otherwise hide every later announcement).
                Err(_) => {
                    let ping = diesel::sql_query("SELECT 1").execute(&mut conn);
                    if !matches!(tokio::time::timeout(HEARTBEAT, ping).await, Ok(Ok(_))) {
                        warn!(logger, "token revocation listener lost its connection"; "error" => "no answer");
                        break;
                    }
                }
            }
        }
    }
}

recsys_actors::restart_on_fail!(RevocationListener);
