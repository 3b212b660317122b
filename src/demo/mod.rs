//! `recsys demo`: fills a running system with a catalog, shoppers and a month of their actions,
//! through the public HTTP APIs only (it is a client like any storefront back end), so that
//! every ranking and every analytics view has something to show; `--traffic RATE` then keeps
//! actions coming.
//!
//! Everything is planned from `--seed` ([`plan`]), and the demo is idempotent: a second run with
//! the same flags writes nothing.
//! - **Products**: the demo lists the catalog of its categories and creates only the names
//!   missing, each with an `Idempotency-Key` derived from the seed and the product.
//! - **Shoppers**: each registers with a key derived from the seed and the shopper (a retry
//!   within the key's 24 hours is answered the first registration); an address already
//!   registered logs in with the demo password to learn its id.
//! - **Actions**: they are backfilled relative to an anchor, the creation time of the
//!   catalog's first product, so their `occurred_at` (and so the batches' keys) are the same in
//!   every run of the next 23 hours; after that the anchor is the run's start. Before sending,
//!   the demo asks analytics how many actions each shopper has: a batch whose shoppers all have
//!   their planned actions was written already and is skipped; any other is sent with its key,
//!   which makes a batch written but not counted yet a replay.
//!
//! ## Layout
//! - [`words`]: the word lists names and categories are made of.
//! - [`plan`]: the seeded generator: catalog, shoppers, sessions, batches.
//! - [`client`]: JSON requests with retries, and [`DemoError`].
//! - [`traffic`]: the live actions of `--traffic`.

pub mod client;
pub mod plan;
pub mod traffic;
pub mod words;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use clap::Args;
use futures_util::{stream, StreamExt};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use slog::{info, warn, Logger};
use uuid::Uuid;

pub use client::DemoError;
use client::{Auth, Client};
use plan::{Batch, PerKind, Plan};

use crate::config::{LogFormat, Secret};
use crate::progress::Progress;

/// What `recsys demo` reads: where the services are, the credentials, and the size of the data.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Base URL of the users service.
    #[arg(long, env = "DEMO_USERS_URL", default_value = "http://127.0.0.1:8080")]
    pub users_url: String,

    /// Base URL of the products service.
    #[arg(
        long,
        env = "DEMO_PRODUCTS_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub products_url: String,

    /// Base URL of the analytics service, asked which actions are there already and watched
    /// until the new ones are counted; empty: neither (only the `Idempotency-Key`s protect a
    /// second run then).
    #[arg(
        long,
        env = "DEMO_ANALYTICS_URL",
        default_value = "http://127.0.0.1:8083"
    )]
    pub analytics_url: String,

    /// Email of the admin account (creates the products).
    #[arg(long, env = "ADMIN_EMAIL")]
    pub admin_email: String,

    /// Password of the admin account.
    #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Secret,

    /// The storefront key (`X-API-Key`) that records actions for any user.
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub api_key: Secret,

    /// Seed of every generated name, price, taste and action: the same seed and sizes give the
    /// same data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Categories (1 to 14).
    #[arg(long, default_value_t = 12)]
    pub categories: usize,

    /// Products in the catalog.
    #[arg(long, default_value_t = 1000)]
    pub products: usize,

    /// Shoppers to register.
    #[arg(long, default_value_t = 500)]
    pub users: usize,

    /// Actions to backfill over the last 29 days.
    #[arg(long, default_value_t = 50_000)]
    pub actions: usize,

    /// After the backfill, keep sending live actions at this many per second (occurred now)
    /// until SIGINT/SIGTERM.
    #[arg(long, value_name = "RATE")]
    pub traffic: Option<f64>,

    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,

    /// How long to wait for analytics to count the new actions before finishing (seconds; 0:
    /// do not wait).
    #[arg(long, default_value_t = 300)]
    pub wait_secs: u64,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "term")]
    pub log_format: LogFormat,

    /// Minimum log level (trace, debug, info, warning, error, critical).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// What a run found and did.
#[derive(Debug)]
pub struct DemoReport {
    pub plan: Plan,
    /// The id of each planned product, in plan order.
    pub product_ids: Vec<Uuid>,
    /// The id of each planned shopper, in plan order.
    pub user_ids: Vec<Uuid>,
    /// Products this run created (the others existed).
    pub products_created: usize,
    /// Shoppers this run registered (the others existed).
    pub users_created: usize,
    /// The backfilled actions are this long before it.
    pub anchor: DateTime<Utc>,
    /// Every backfilled action of the plan, per type.
    pub actions: PerKind,
    /// Actions this run wrote (not skipped, not replayed).
    pub actions_written: usize,
    pub took: Duration,
}

/// A run whose catalog is older than this uses a new anchor: its first run's keys are about to
/// expire (24 h), and its oldest actions to leave the 30 days a batch accepts.
const ANCHOR_REUSE: TimeDelta = TimeDelta::hours(23);

/// Fills the system (see the module's documentation), then sends live traffic if asked.
pub async fn run(args: DemoArgs, logger: Logger) -> Result<DemoReport, DemoError> {
    let started = Instant::now();
    let plan = Plan::new(args.seed, args.categories, args.products, args.users)
        .map_err(DemoError::Invalid)?;
    if let Some(rate) = args.traffic {
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(DemoError::Invalid("--traffic takes a positive rate".into()));
        }
    }
    let demo = Demo {
        client: Client::new()?,
        users_url: args.users_url.trim_end_matches('/').to_string(),
        products_url: args.products_url.trim_end_matches('/').to_string(),
        analytics_url: Some(args.analytics_url.trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty()),
        concurrency: args.concurrency.max(1),
        logger: logger.clone(),
    };
    info!(logger, "demo: planning"; "seed" => args.seed, "categories" => args.categories,
        "products" => args.products, "users" => args.users, "actions" => args.actions);
    let admin = demo
        .login(&args.admin_email, args.admin_password.expose())
        .await?;
    let (product_ids, first_created_at, products_created) = demo.products(&plan, &admin).await?;
    let anchor = anchor(first_created_at, Utc::now());
    let (user_ids, users_created) = demo.users(&plan).await?;

    let batches = plan.batches(args.actions);
    let analytics = demo.activity_counted(&admin).await;
    let counts = match &analytics {
        Some(_) => Some(demo.user_activity(&user_ids, &admin).await?),
        None => None,
    };
    let ids = Ids {
        products: &product_ids,
        users: &user_ids,
    };
    let written = demo
        .backfill(
            &plan,
            &batches,
            counts.as_deref(),
            ids,
            anchor,
            &args.api_key,
        )
        .await?;
    if let Some(before) = analytics {
        demo.wait_counted(&admin, before + written as i64, args.wait_secs)
            .await?;
    }
    let report = DemoReport {
        actions: PerKind::of(batches.iter().flat_map(|b| &b.actions)),
        plan,
        product_ids,
        user_ids,
        products_created,
        users_created,
        anchor,
        actions_written: written,
        took: started.elapsed(),
    };
    info!(logger, "demo data ready";
        "products" => report.product_ids.len(), "products_created" => report.products_created,
        "users" => report.user_ids.len(), "users_created" => report.users_created,
        "actions" => report.actions.total(), "actions_written" => report.actions_written,
        "views" => report.actions.views, "cart_adds" => report.actions.cart_adds,
        "cart_removes" => report.actions.cart_removes, "purchases" => report.actions.purchases,
        "seconds" => format!("{:.1}", report.took.as_secs_f64()));
    if let Some(rate) = args.traffic {
        traffic::run(
            &demo.client,
            &report.plan,
            ids_of(&report),
            &demo.users_url,
            &args.api_key,
            rate,
            &logger,
        )
        .await?;
    }
    Ok(report)
}

/// The anchor of the backfill: the catalog's creation (the server's clock) while it is recent
/// enough to reuse (see [`ANCHOR_REUSE`]), else now; whole seconds, as `occurred_at` is sent.
fn anchor(first_created_at: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    let at = if now - first_created_at > ANCHOR_REUSE {
        now
    } else {
        first_created_at
    };
    DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at)
}

/// The ids the plan's indexes stand for.
#[derive(Clone, Copy)]
pub struct Ids<'a> {
    pub products: &'a [Uuid],
    pub users: &'a [Uuid],
}

fn ids_of(report: &DemoReport) -> Ids<'_> {
    Ids {
        products: &report.product_ids,
        users: &report.user_ids,
    }
}

/// An `Idempotency-Key` for `item` of this seed: the item's name and a digest of the request
/// body, so a change to what the plan sends for the item is a new key rather than a `422`.
fn idempotency_key(seed: u64, item: &str, body: &Value) -> String {
    let digest = Sha256::digest(body.to_string().as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("recsys-demo/{seed}/{item}/{hex}")
}

/// The connection to the services.
struct Demo {
    client: Client,
    users_url: String,
    products_url: String,
    analytics_url: Option<String>,
    concurrency: usize,
    logger: Logger,
}

impl Demo {
    /// Logs in; answers the token.
    async fn login(&self, email: &str, password: &str) -> Result<String, DemoError> {
        let reply = self
            .client
            .post(
                &format!("{}/users/login", self.users_url),
                &json!({"email": email, "password": password}),
                Auth::None,
                None,
            )
            .await?
            .success()?;
        reply.body["token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| DemoError::Invalid(format!("login answered no token: {}", reply.text)))
    }

    /// The planned products: those listed in the demo's categories are kept, the others
    /// created. Answers the ids in plan order, the first product's `created_at`, and how many
    /// were created.
    async fn products(
        &self,
        plan: &Plan,
        admin: &str,
    ) -> Result<(Vec<Uuid>, DateTime<Utc>, usize), DemoError> {
        let mut listed: HashMap<String, (Uuid, DateTime<Utc>)> = HashMap::new();
        let categories: String = plan
            .categories
            .iter()
            .map(|c| format!("&category={c}"))
            .collect();
        let mut after: Option<String> = None;
        loop {
            let url = format!(
                "{}/products?limit=100{categories}{}",
                self.products_url,
                after
                    .as_deref()
                    .map(|a| format!("&after={a}"))
                    .unwrap_or_default()
            );
            let page = self.client.get(&url, Auth::None).await?.success()?;
            for item in page.body["items"].as_array().into_iter().flatten() {
                if let (Some(name), Some(product)) = (item["name"].as_str(), product_of(item)) {
                    listed.entry(name.to_string()).or_insert(product);
                }
            }
            match page.body["next"].as_str() {
                Some(next) => after = Some(next.to_string()),
                None => break,
            }
        }
        let missing: Vec<usize> = (0..plan.products.len())
            .filter(|&i| !listed.contains_key(&plan.products[i].name))
            .collect();
        info!(self.logger, "demo: products"; "planned" => plan.products.len(),
            "existing" => plan.products.len() - missing.len(), "to_create" => missing.len());
        let mut bar = Progress::new("demo products", "products", missing.len() as i64);
        let mut created = 0;
        let mut results =
            stream::iter(missing.iter().map(|&i| self.create_product(plan, i, admin)))
                .buffer_unordered(self.concurrency);
        let mut done = 0;
        while let Some(result) = results.next().await {
            let (i, product, fresh) = result?;
            listed.insert(plan.products[i].name.clone(), product);
            created += usize::from(fresh);
            done += 1;
            bar.show(done, &self.logger);
        }
        bar.finish();
        let mut ids = Vec::with_capacity(plan.products.len());
        for p in &plan.products {
            ids.push(listed[&p.name].0);
        }
        let first = listed[&plan.products[0].name].1;
        Ok((ids, first, created))
    }

    /// Creates product `i`; answers it, its id and creation time, and whether it is new.
    async fn create_product(
        &self,
        plan: &Plan,
        i: usize,
        admin: &str,
    ) -> Result<(usize, (Uuid, DateTime<Utc>), bool), DemoError> {
        let p = &plan.products[i];
        let body = json!({
            "name": p.name,
            "price": p.price.to_string(),
            "category": plan.categories[p.category],
            "description": p.description,
        });
        let key = idempotency_key(plan.seed, &format!("product/{i}"), &body);
        let reply = self
            .client
            .post(
                &format!("{}/products", self.products_url),
                &body,
                Auth::Token(admin),
                Some(&key),
            )
            .await?
            .success()?;
        let product = product_of(&reply.body)
            .ok_or_else(|| DemoError::Invalid(format!("POST /products answered {}", reply.text)))?;
        Ok((i, product, !reply.replayed))
    }

    /// Registers the planned shoppers (or finds those registered); answers their ids in plan
    /// order and how many this run registered.
    async fn users(&self, plan: &Plan) -> Result<(Vec<Uuid>, usize), DemoError> {
        let mut ids = vec![Uuid::nil(); plan.users.len()];
        let mut bar = Progress::new("demo users", "users", plan.users.len() as i64);
        let mut results = stream::iter((0..plan.users.len()).map(|u| self.register(plan, u)))
            .buffer_unordered(self.concurrency);
        let (mut done, mut created) = (0, 0);
        while let Some(result) = results.next().await {
            let (u, id, fresh) = result?;
            ids[u] = id;
            created += usize::from(fresh);
            done += 1;
            bar.show(done, &self.logger);
        }
        bar.finish();
        info!(self.logger, "demo: users"; "planned" => plan.users.len(), "registered" => created);
        Ok((ids, created))
    }

    /// Registers shopper `u`; an address taken already logs in instead. Answers the id and
    /// whether the account is new.
    async fn register(&self, plan: &Plan, u: usize) -> Result<(usize, Uuid, bool), DemoError> {
        let user = &plan.users[u];
        let body = json!({"name": user.name, "email": user.email, "password": plan.password()});
        let key = idempotency_key(plan.seed, &format!("user/{u}"), &body);
        let reply = self
            .client
            .post(
                &format!("{}/users/register", self.users_url),
                &body,
                Auth::None,
                Some(&key),
            )
            .await?;
        if reply.status == 409 && reply.message().contains("already registered") {
            let token = self
                .login(&user.email, &plan.password())
                .await
                .map_err(|e| {
                    DemoError::Invalid(format!(
                        "{} is registered, but the demo password does not log it in: {e}",
                        user.email
                    ))
                })?;
            let id = subject(&token)?;
            return Ok((u, id, false));
        }
        let reply = reply.success()?;
        let id = reply.body["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| DemoError::Invalid(format!("registration answered {}", reply.text)))?;
        Ok((u, id, !reply.replayed))
    }

    /// The `user.activity` events analytics has counted, or `None` (with a warning) when no
    /// analytics service answers.
    async fn activity_counted(&self, admin: &str) -> Option<i64> {
        let base = self.analytics_url.as_ref()?;
        let answer = self
            .client
            .get(&format!("{base}/analytics/summary"), Auth::Token(admin))
            .await
            .and_then(|r| r.success());
        match answer {
            Ok(reply) => reply.body["events_by_type"]["user.activity"].as_i64(),
            Err(e) => {
                warn!(self.logger, "demo: no analytics to ask; only the Idempotency-Keys keep \
                    a second run from writing twice"; "error" => %e);
                None
            }
        }
    }

    /// Each shopper's recorded actions (`activity_count`; 0 for a shopper analytics never saw).
    async fn user_activity(&self, users: &[Uuid], admin: &str) -> Result<Vec<u64>, DemoError> {
        let Some(base) = &self.analytics_url else {
            return Ok(vec![0; users.len()]);
        };
        let mut counts = vec![0u64; users.len()];
        let mut results = stream::iter(users.iter().enumerate().map(|(u, id)| async move {
            let reply = self
                .client
                .get(&format!("{base}/analytics/users/{id}"), Auth::Token(admin))
                .await?;
            if reply.status == 404 {
                return Ok((u, 0));
            }
            let reply = reply.success()?;
            Ok::<_, DemoError>((u, reply.body["activity_count"].as_u64().unwrap_or(0)))
        }))
        .buffer_unordered(self.concurrency * 4);
        while let Some(result) = results.next().await {
            let (u, count) = result?;
            counts[u] = count;
        }
        Ok(counts)
    }

    /// Sends the batches not written yet; answers how many actions were written now.
    async fn backfill(
        &self,
        plan: &Plan,
        batches: &[Batch],
        counts: Option<&[u64]>,
        ids: Ids<'_>,
        anchor: DateTime<Utc>,
        api_key: &Secret,
    ) -> Result<usize, DemoError> {
        let written_before = |batch: &Batch| {
            counts.is_some_and(|counts| {
                batch
                    .through
                    .iter()
                    .all(|&(user, through)| counts[user] >= through as u64)
            })
        };
        let to_send: Vec<(usize, &Batch)> = batches
            .iter()
            .enumerate()
            .filter(|(_, b)| !written_before(b))
            .collect();
        let total: usize = batches.iter().map(|b| b.actions.len()).sum();
        let already = total - to_send.iter().map(|(_, b)| b.actions.len()).sum::<usize>();
        info!(self.logger, "demo: actions"; "planned" => total, "batches" => batches.len(),
            "already_recorded" => already, "anchor" => %anchor);
        let mut bar = Progress::new("demo actions", "actions", total as i64);
        let mut done = already as i64;
        bar.show(done, &self.logger);
        let url = format!("{}/activity/batch", self.users_url);
        let mut results = stream::iter(to_send.into_iter().map(|(n, batch)| {
            let body = batch_body(batch, ids, Some(anchor));
            let key = idempotency_key(plan.seed, &format!("actions/{n}"), &body);
            let url = &url;
            async move {
                let reply = self
                    .client
                    .post(url, &body, Auth::Key(api_key), Some(&key))
                    .await?
                    .success()?;
                Ok::<_, DemoError>((batch.actions.len(), !reply.replayed))
            }
        }))
        .buffer_unordered(self.concurrency.min(4));
        let mut written = 0;
        while let Some(result) = results.next().await {
            let (n, fresh) = result?;
            if fresh {
                written += n;
            }
            done += n as i64;
            bar.show(done, &self.logger);
        }
        bar.finish();
        Ok(written)
    }

    /// Waits (at most `wait_secs`) until analytics has counted `target` `user.activity` events,
    /// so that the dashboards show the data once the demo says it is ready.
    async fn wait_counted(
        &self,
        admin: &str,
        target: i64,
        wait_secs: u64,
    ) -> Result<(), DemoError> {
        let Some(base) = &self.analytics_url else {
            return Ok(());
        };
        if wait_secs == 0 {
            return Ok(());
        }
        let until = Instant::now() + Duration::from_secs(wait_secs);
        let mut bar = Progress::new("demo actions counted", "events", target);
        loop {
            let reply = self
                .client
                .get(&format!("{base}/analytics/summary"), Auth::Token(admin))
                .await?
                .success()?;
            let counted = reply.body["events_by_type"]["user.activity"]
                .as_i64()
                .unwrap_or(0);
            bar.show(counted, &self.logger);
            if counted >= target {
                bar.finish();
                return Ok(());
            }
            if Instant::now() >= until {
                bar.finish();
                warn!(self.logger, "demo: analytics has not counted every action yet";
                    "counted" => counted, "expected" => target, "waited_secs" => wait_secs);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The id and creation time of a product object.
fn product_of(item: &Value) -> Option<(Uuid, DateTime<Utc>)> {
    let id = item["id"].as_str()?.parse().ok()?;
    let created = DateTime::parse_from_rfc3339(item["created_at"].as_str()?).ok()?;
    Some((id, created.with_timezone(&Utc)))
}

/// The user id (`sub`) of a token the users service just issued (read, not verified: this
/// client does not hold the key, and the token came straight from the service).
fn subject(token: &str) -> Result<Uuid, DemoError> {
    #[derive(serde::Deserialize)]
    struct Claims {
        sub: Uuid,
    }
    jsonwebtoken::dangerous::insecure_decode::<Claims>(token)
        .map(|data| data.claims.sub)
        .map_err(|e| DemoError::Invalid(format!("a login token without a user id: {e}")))
}

/// The body of `POST /activity/batch` for `batch`: with `occurred_at` relative to `anchor`, or
/// without (the server stamps now) when there is none.
pub fn batch_body(batch: &Batch, ids: Ids<'_>, anchor: Option<DateTime<Utc>>) -> Value {
    let actions: Vec<Value> = batch
        .actions
        .iter()
        .map(|a| {
            let mut action = json!({
                "user_id": ids.users[a.user],
                "type": a.kind.as_str(),
                "product_id": ids.products[a.product],
            });
            if a.quantity != 1 {
                action["quantity"] = json!(a.quantity);
            }
            if let Some(anchor) = anchor {
                let at = anchor - TimeDelta::seconds(a.seconds_before);
                action["occurred_at"] = json!(at.to_rfc3339_opts(SecondsFormat::Secs, true));
            }
            action
        })
        .collect();
    json!({ "actions": actions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// A catalog created within the last 23 hours anchors the backfill (so a second run sends
    /// the same bodies under the same keys); an older one does not.
    fn the_anchor_is_the_catalogs_creation_while_recent() {
        let now = DateTime::parse_from_rfc3339("2026-05-10T12:00:00.700Z")
            .unwrap()
            .with_timezone(&Utc);
        let created = now - TimeDelta::hours(5) - TimeDelta::milliseconds(250);
        assert_eq!(anchor(created, now).timestamp(), created.timestamp());
        assert_eq!(anchor(created, now).timestamp_subsec_nanos(), 0);
        assert_eq!(
            anchor(now - TimeDelta::hours(24), now).timestamp(),
            now.timestamp()
        );
        let ahead = now + TimeDelta::seconds(2);
        assert_eq!(anchor(ahead, now).timestamp(), ahead.timestamp());
    }

    #[test]
    /// Keys name the seed and the item, and change with the body.
    fn keys_follow_the_seed_item_and_body() {
        let a = idempotency_key(42, "product/3", &json!({"name": "A"}));
        assert!(a.starts_with("recsys-demo/42/product/3/"), "{a}");
        assert_eq!(a, idempotency_key(42, "product/3", &json!({"name": "A"})));
        assert_ne!(a, idempotency_key(42, "product/3", &json!({"name": "B"})));
        assert!(a.len() <= 255 && a.bytes().all(|b| b.is_ascii_graphic()));
    }
}
