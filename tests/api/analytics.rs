//! The analytics service over HTTP, end to end: users and products write through the outbox,
//! the analytics consumer folds both topics into the statistics tables, and admins read exact
//! summaries, per-product and per-user figures, top lists and hourly series.
//!
//! The pipeline is asynchronous, so each test counts the events it causes (the admin account's
//! `user.registered` at startup included) and waits with [`eventually`] until the summary's
//! `events_total` reaches that count; every batch is written in one transaction, so at that
//! point every statistic reflects every event and is asserted exactly.

use std::cell::Cell;
use std::time::Duration;

use chrono::{DateTime, DurationRound, FixedOffset, SecondsFormat, TimeDelta, Utc};
use recsys::config::Service;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

/// How long the pipeline may take to reflect an event (it usually takes about a second).
const PIPELINE: Duration = Duration::from_secs(30);

/// The six event types, as `events_by_type` and `timeseries?type=` name them.
const TYPES: [&str; 6] = [
    "user.registered",
    "user.updated",
    "user.activity",
    "product.created",
    "product.updated",
    "product.deleted",
];

/// A registered user who records activity with their own token.
struct Shopper {
    id: Uuid,
    token: String,
}

/// Drives the other services and counts the events it causes.
struct Shop<'a> {
    app: &'a TestApp,
    /// Events emitted so far; the admin account's registration is the first.
    emitted: Cell<i64>,
}

impl<'a> Shop<'a> {
    /// A shop on `app`, counting the admin's `user.registered`.
    fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            emitted: Cell::new(1),
        }
    }

    fn emit(&self) {
        self.emitted.set(self.emitted.get() + 1);
    }

    /// Registers a new user (`user.registered`).
    async fn user(&self) -> Shopper {
        let (id, token, _) = self.app.new_user().await;
        self.emit();
        Shopper { id, token }
    }

    /// Changes `user`'s name (`user.updated`).
    async fn rename(&self, user: &Shopper, name: &str) {
        let reply = self
            .app
            .request(
                Method::PATCH,
                Service::Users,
                &format!("/users/{}", user.id),
                Some(json!({ "name": name })),
                Some(&user.token),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "rename: {}", reply.text);
        self.emit();
    }

    /// Creates a product (`product.created`); answers its id.
    async fn product(&self, name: &str) -> Uuid {
        let created = self.app.create_product(name, json!("9.90"), None).await;
        self.emit();
        created["id"].as_str().expect("product id").parse().unwrap()
    }

    /// Renames a product (`product.updated`).
    async fn update(&self, product: Uuid, name: &str) {
        let reply = self
            .app
            .request(
                Method::PATCH,
                Service::Products,
                &format!("/products/{product}"),
                Some(json!({ "name": name })),
                Some(&self.app.admin_token),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "update: {}", reply.text);
        self.emit();
    }

    /// Deletes a product (`product.deleted`).
    async fn delete(&self, product: Uuid) {
        let reply = self
            .app
            .request(
                Method::DELETE,
                Service::Products,
                &format!("/products/{product}"),
                None,
                Some(&self.app.admin_token),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::NO_CONTENT,
            "delete: {}",
            reply.text
        );
        self.emit();
    }

    /// Records `kind` of `quantity` units of `product` as `user` (`user.activity`).
    async fn act(&self, user: &Shopper, kind: &str, product: Uuid, quantity: u32) {
        self.app
            .post_activity(user.id, &user.token, product, kind, quantity)
            .await;
        self.emit();
    }

    /// Waits until the summary counts every event emitted so far; answers the summary.
    async fn settled(&self) -> Value {
        let expected = self.emitted.get();
        eventually(
            PIPELINE,
            &format!("events_total to reach {expected}"),
            || async {
                let reply = stats(self.app, "/analytics/summary").await;
                (reply.status == StatusCode::OK
                    && reply.body["events_total"].as_i64() >= Some(expected))
                .then_some(reply.body)
            },
        )
        .await
    }
}

/// `GET path` on the analytics service as admin.
async fn stats(app: &TestApp, path: &str) -> Reply {
    app.get(Service::Analytics, path, Some(&app.admin_token))
        .await
}

/// The body of a 200 answer to `GET path` as admin.
async fn ok(app: &TestApp, path: &str) -> Value {
    let reply = stats(app, path).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
    reply.body
}

/// A timestamp field of a statistics answer (`None` when null).
fn instant(value: &Value) -> Option<DateTime<Utc>> {
    value.as_str().map(|s| {
        s.parse()
            .unwrap_or_else(|e| panic!("{s} is not an RFC 3339 timestamp: {e}"))
    })
}

/// `t` as RFC 3339 in UTC (`Z`), safe in a query string.
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The start of the hour of `t`.
fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap()
}

/// Asserts `t` lies in `[from, to]`.
fn assert_between(what: &str, t: Option<DateTime<Utc>>, from: DateTime<Utc>, to: DateTime<Utc>) {
    let t = t.unwrap_or_else(|| panic!("{what} is null"));
    assert!(from <= t && t <= to, "{what} {t} not in [{from}, {to}]");
}

/// The sum of the samples of `name` (exact metric name, without suffix) on the analytics
/// service's `/metrics` whose labels contain every `filter`.
async fn metric_sum(app: &TestApp, name: &str, filters: &[&str]) -> f64 {
    let text = app.get(Service::Analytics, "/metrics", None).await.text;
    text.lines()
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every route answers 401 without or with a bad token, 403 to a user and 200/404 to an admin,
/// all with the JSON error shape.
#[actix_web::test]
async fn every_route_requires_an_admin_token() {
    let app = spawn_app().await;
    let (_, user_token, _) = app.new_user().await;
    let now = Utc::now();
    let series = format!(
        "/analytics/timeseries?type=user.activity&from={}&to={}",
        rfc3339(now - TimeDelta::hours(2)),
        rfc3339(now)
    );
    let unknown = Uuid::new_v4();
    let routes = [
        ("/analytics/summary".to_string(), 200),
        ("/analytics/products/top".to_string(), 200),
        (format!("/analytics/products/{unknown}"), 404),
        (format!("/analytics/users/{unknown}"), 404),
        (series, 200),
    ];
    for (path, admin_status) in &routes {
        app.get(Service::Analytics, path, None)
            .await
            .assert_error(401, "unauthorized");
        app.get(Service::Analytics, path, Some("not-a-token"))
            .await
            .assert_error(401, "unauthorized");
        app.get(Service::Analytics, path, Some(&user_token))
            .await
            .assert_error(403, "forbidden");
        let reply = stats(&app, path).await;
        if *admin_status == 200 {
            assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
        } else {
            reply.assert_error(404, "not_found");
        }
    }
}

/// The summary counts registered users (the admin too), live products, every event by type
/// (zero for types never seen), the last hour's events and the users active in it, exactly.
#[actix_web::test]
async fn summary_counts_users_products_and_events_exactly() {
    let app = spawn_app().await;
    let shop = Shop::new(&app);
    let (ann, bob, _cid) = (shop.user().await, shop.user().await, shop.user().await);
    shop.rename(&ann, "Ann Two").await;
    let (kettle, toaster, lamp) = (
        shop.product("Kettle").await,
        shop.product("Toaster").await,
        shop.product("Lamp").await,
    );
    shop.update(kettle, "Kettle v2").await;
    shop.update(kettle, "Kettle v3").await;
    shop.delete(lamp).await;
    shop.act(&ann, "view", kettle, 1).await;
    shop.act(&ann, "cart_add", kettle, 2).await;
    shop.act(&ann, "purchase", kettle, 2).await;
    shop.act(&bob, "view", toaster, 1).await;
    shop.act(&bob, "cart_remove", toaster, 1).await;
    // Activity on a product never created is counted, but the product is not.
    shop.act(&bob, "view", Uuid::new_v4(), 1).await;

    let summary = shop.settled().await;

    assert_eq!(
        summary,
        json!({
            "users": 4,
            "products": 2,
            "events_total": 17,
            "events_by_type": {
                "user.registered": 4,
                "user.updated": 1,
                "user.activity": 6,
                "product.created": 3,
                "product.updated": 2,
                "product.deleted": 1,
            },
            "events_last_hour": 17,
            "active_users_last_hour": 2,
        })
    );
}

/// Before any event but the admin's registration, every type is listed with zero.
#[actix_web::test]
async fn summary_lists_all_six_types_with_zero_when_none_happened() {
    let app = spawn_app().await;
    let shop = Shop::new(&app);

    let summary = shop.settled().await;

    let mut by_type = json!({});
    for t in TYPES {
        by_type[t] = json!(0);
    }
    by_type["user.registered"] = json!(1);
    assert_eq!(
        summary,
        json!({
            "users": 1,
            "products": 0,
            "events_total": 1,
            "events_by_type": by_type,
            "events_last_hour": 1,
            "active_users_last_hour": 0,
        })
    );
}

/// A product's views, cart adds and removes, purchases, units sold and updates are exact, its
/// creation and last event are stamped, and `deleted_at` stays null until it is deleted.
#[actix_web::test]
async fn product_statistics_count_every_event_and_stamp_the_lifecycle() {
    let app = spawn_app().await;
    let started = Utc::now();
    let shop = Shop::new(&app);
    let (ann, bob) = (shop.user().await, shop.user().await);
    let kettle = shop.product("Kettle").await;
    shop.update(kettle, "Kettle v2").await;
    shop.update(kettle, "Kettle v3").await;
    shop.act(&ann, "view", kettle, 1).await;
    shop.act(&ann, "view", kettle, 1).await;
    shop.act(&ann, "cart_add", kettle, 4).await;
    shop.act(&ann, "cart_remove", kettle, 1).await;
    shop.act(&ann, "purchase", kettle, 3).await;
    shop.act(&bob, "purchase", kettle, 2).await;
    shop.settled().await;
    let path = format!("/analytics/products/{kettle}");

    let live = ok(&app, &path).await;

    let now = Utc::now();
    assert_eq!(live["product_id"], kettle.to_string());
    let counters = |v: &Value| {
        [
            "views",
            "cart_adds",
            "cart_removes",
            "purchases",
            "units_sold",
            "updates",
        ]
        .map(|k| v[k].as_i64().unwrap_or_else(|| panic!("{k} in {v}")))
    };
    assert_eq!(counters(&live), [2, 1, 1, 2, 5, 2], "{live}");
    assert!(live["deleted_at"].is_null(), "{live}");
    let created = instant(&live["created_at"]);
    assert_between("created_at", created, started, now);
    assert_between(
        "last_event_at",
        instant(&live["last_event_at"]),
        created.unwrap(),
        now,
    );

    shop.delete(kettle).await;
    shop.settled().await;
    let deleted = ok(&app, &path).await;

    assert_eq!(counters(&deleted), [2, 1, 1, 2, 5, 2], "{deleted}");
    assert_eq!(deleted["created_at"], live["created_at"]);
    assert_between(
        "deleted_at",
        instant(&deleted["deleted_at"]),
        now,
        Utc::now(),
    );
    assert_eq!(deleted["last_event_at"], deleted["deleted_at"], "{deleted}");
}

/// A product id never seen answers 404, a malformed one 400.
#[actix_web::test]
async fn product_statistics_answer_404_for_unknown_and_400_for_malformed_ids() {
    let app = spawn_app().await;

    stats(&app, &format!("/analytics/products/{}", Uuid::new_v4()))
        .await
        .assert_error(404, "not_found");
    for bad in ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g"] {
        stats(&app, &format!("/analytics/products/{bad}"))
            .await
            .assert_error(400, "invalid_request");
        stats(&app, &format!("/analytics/users/{bad}"))
            .await
            .assert_error(400, "invalid_request");
    }
}

/// Activity on a product id that was never created is still counted; its `created_at` is null.
#[actix_web::test]
async fn activity_on_a_product_never_created_is_counted() {
    let app = spawn_app().await;
    let shop = Shop::new(&app);
    let ann = shop.user().await;
    let ghost = Uuid::new_v4();
    shop.act(&ann, "view", ghost, 1).await;
    shop.act(&ann, "purchase", ghost, 7).await;
    let summary = shop.settled().await;

    let ghost_stats = ok(&app, &format!("/analytics/products/{ghost}")).await;

    assert_eq!(ghost_stats["views"], 1, "{ghost_stats}");
    assert_eq!(ghost_stats["purchases"], 1, "{ghost_stats}");
    assert_eq!(ghost_stats["units_sold"], 7, "{ghost_stats}");
    assert_eq!(ghost_stats["updates"], 0, "{ghost_stats}");
    assert!(ghost_stats["created_at"].is_null(), "{ghost_stats}");
    assert!(ghost_stats["deleted_at"].is_null(), "{ghost_stats}");
    assert!(instant(&ghost_stats["last_event_at"]).is_some());
    assert_eq!(summary["products"], 0, "{summary}");
}

/// A user's registration, profile updates and activity by kind (units bought summed) are
/// exact; a user without activity has zero counters and a null `last_active_at`; an id never
/// seen answers 404.
#[actix_web::test]
async fn user_statistics_count_profile_updates_and_activity() {
    let app = spawn_app().await;
    let started = Utc::now();
    let shop = Shop::new(&app);
    let (ann, idle) = (shop.user().await, shop.user().await);
    shop.rename(&ann, "Ann Two").await;
    shop.rename(&ann, "Ann Three").await;
    let (kettle, toaster) = (shop.product("Kettle").await, shop.product("Toaster").await);
    shop.act(&ann, "view", kettle, 1).await;
    shop.act(&ann, "cart_add", kettle, 1).await;
    shop.act(&ann, "cart_add", toaster, 2).await;
    shop.act(&ann, "cart_remove", toaster, 1).await;
    shop.act(&ann, "purchase", kettle, 4).await;
    shop.act(&ann, "purchase", toaster, 1).await;
    shop.settled().await;
    let now = Utc::now();

    let ann_stats = ok(&app, &format!("/analytics/users/{}", ann.id)).await;
    let idle_stats = ok(&app, &format!("/analytics/users/{}", idle.id)).await;

    let counters = |v: &Value| {
        [
            "profile_updates",
            "views",
            "cart_adds",
            "cart_removes",
            "purchases",
            "units_bought",
            "activity_count",
        ]
        .map(|k| v[k].as_i64().unwrap_or_else(|| panic!("{k} in {v}")))
    };
    assert_eq!(ann_stats["user_id"], ann.id.to_string());
    assert_eq!(counters(&ann_stats), [2, 1, 2, 1, 2, 5, 6], "{ann_stats}");
    let registered = instant(&ann_stats["registered_at"]);
    assert_between("registered_at", registered, started, now);
    assert_between(
        "last_active_at",
        instant(&ann_stats["last_active_at"]),
        registered.unwrap(),
        now,
    );
    assert_eq!(counters(&idle_stats), [0; 7], "{idle_stats}");
    assert_between(
        "idle registered_at",
        instant(&idle_stats["registered_at"]),
        started,
        now,
    );
    assert!(idle_stats["last_active_at"].is_null(), "{idle_stats}");
    stats(&app, &format!("/analytics/users/{}", Uuid::new_v4()))
        .await
        .assert_error(404, "not_found");
}

/// The top list orders by each counter descending with ties by product id, defaults to
/// `by=views` and `limit=10`, and honours `limit`.
#[actix_web::test]
async fn top_orders_by_each_counter_with_ties_by_id() {
    let app = spawn_app().await;
    let shop = Shop::new(&app);
    let (ann, bob) = (shop.user().await, shop.user().await);
    let mut products = Vec::new();
    for i in 0..12 {
        products.push(shop.product(&format!("P{i}")).await);
    }
    let [a, b, c, d] = [products[0], products[1], products[2], products[3]];
    // views: a 3, c 3 (a tie), b 1.
    for (who, p) in [(&ann, a), (&bob, a), (&ann, a), (&ann, c), (&bob, c)] {
        shop.act(who, "view", p, 1).await;
    }
    shop.act(&bob, "view", c, 1).await;
    shop.act(&ann, "view", b, 1).await;
    // cart_adds: b 2, d 1.
    shop.act(&ann, "cart_add", b, 1).await;
    shop.act(&bob, "cart_add", b, 3).await;
    shop.act(&ann, "cart_add", d, 1).await;
    // purchases: a 2 (2 units), b 1 (5 units), d 1 (2 units).
    shop.act(&ann, "purchase", a, 1).await;
    shop.act(&bob, "purchase", a, 1).await;
    shop.act(&ann, "purchase", b, 5).await;
    shop.act(&bob, "purchase", d, 2).await;
    // updates: d 2, c 1.
    shop.update(d, "D v2").await;
    shop.update(d, "D v3").await;
    shop.update(c, "C v2").await;
    shop.settled().await;

    let value = |by: &str, p: Uuid| -> i64 {
        let table: &[(Uuid, i64)] = match by {
            "views" => &[(a, 3), (c, 3), (b, 1)],
            "cart_adds" => &[(b, 2), (d, 1)],
            "purchases" => &[(a, 2), (b, 1), (d, 1)],
            "units_sold" => &[(b, 5), (a, 2), (d, 2)],
            "updates" => &[(d, 2), (c, 1)],
            _ => unreachable!(),
        };
        table.iter().find(|(q, _)| *q == p).map_or(0, |(_, n)| *n)
    };
    let expected = |by: &str, limit: usize| -> Vec<(String, i64)> {
        let mut all: Vec<(Uuid, i64)> = products.iter().map(|p| (*p, value(by, *p))).collect();
        all.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        all.into_iter()
            .take(limit)
            .map(|(p, n)| (p.to_string(), n))
            .collect()
    };
    let listed = |body: &Value, by: &str| -> Vec<(String, i64)> {
        body.as_array()
            .unwrap_or_else(|| panic!("not an array: {body}"))
            .iter()
            .map(|i| {
                (
                    i["product_id"].as_str().expect("product_id").to_string(),
                    i[by].as_i64().expect("counter"),
                )
            })
            .collect()
    };

    for by in ["views", "cart_adds", "purchases", "units_sold", "updates"] {
        let body = ok(&app, &format!("/analytics/products/top?by={by}&limit=100")).await;
        assert_eq!(listed(&body, by), expected(by, 12), "by={by}");
        let body = ok(&app, &format!("/analytics/products/top?by={by}&limit=2")).await;
        assert_eq!(listed(&body, by), expected(by, 2), "by={by}&limit=2");
    }
    let default = ok(&app, "/analytics/products/top").await;
    assert_eq!(listed(&default, "views"), expected("views", 10));
    let one = ok(&app, "/analytics/products/top?limit=1").await;
    assert_eq!(listed(&one, "views"), expected("views", 1));
}

/// `limit` outside 1..=100 or not a number, and `by` not one of the counters, answer 400.
#[actix_web::test]
async fn top_rejects_bad_limits_and_unknown_orders() {
    let app = spawn_app().await;

    for query in [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=x",
        "limit=1.5",
        "by=clicks",
        "by=cart_removes",
        "by=",
        "by=VIEWS",
        "by=views;DROP TABLE an_products",
    ] {
        stats(&app, &format!("/analytics/products/top?{query}"))
            .await
            .assert_error(400, "invalid_request");
    }
    for query in ["limit=1", "limit=100", "by=updates&limit=100"] {
        ok(&app, &format!("/analytics/products/top?{query}")).await;
    }
}

/// The hourly series is zero-filled from `from`'s hour to `to`'s hour, and the hours of the
/// test hold exactly the events posted; offsets other than `Z` name the same instants.
#[actix_web::test]
async fn timeseries_counts_the_events_of_each_hour_zero_filled() {
    let started = Utc::now();
    let app = spawn_app().await;
    let shop = Shop::new(&app);
    let ann = shop.user().await;
    let kettle = shop.product("Kettle").await;
    shop.update(kettle, "Kettle v2").await;
    for kind in ["view", "view", "cart_add", "purchase", "view"] {
        shop.act(&ann, kind, kettle, 1).await;
    }
    shop.settled().await;
    let finished = Utc::now();
    let (from, to) = (
        started - TimeDelta::minutes(150),
        finished + TimeDelta::minutes(70),
    );

    for (event_type, posted) in [
        ("user.activity", 5),
        ("user.registered", 2),
        ("product.created", 1),
        ("product.updated", 1),
        ("product.deleted", 0),
        ("user.updated", 0),
    ] {
        let path = format!(
            "/analytics/timeseries?type={event_type}&from={}&to={}",
            rfc3339(from),
            rfc3339(to)
        );
        let body = ok(&app, &path).await;
        let buckets = body.as_array().unwrap_or_else(|| panic!("{body}"));

        let mut hour = hour_of(from);
        let mut hours = Vec::new();
        while hour <= hour_of(to) {
            hours.push(hour);
            hour += TimeDelta::hours(1);
        }
        let got: Vec<DateTime<Utc>> = buckets
            .iter()
            .map(|b| instant(&b["hour"]).expect("hour"))
            .collect();
        assert_eq!(got, hours, "{event_type}: {body}");
        let mut during = 0;
        for (bucket, hour) in buckets.iter().zip(&hours) {
            let count = bucket["count"].as_i64().expect("count");
            if (hour_of(started)..=hour_of(finished)).contains(hour) {
                during += count;
            } else {
                assert_eq!(count, 0, "{event_type} at {hour}: {body}");
            }
        }
        assert_eq!(during, posted, "{event_type}: {body}");
        if hour_of(started) == hour_of(finished) {
            let current = buckets
                .iter()
                .find(|b| instant(&b["hour"]) == Some(hour_of(finished)))
                .expect("the current hour is listed");
            assert_eq!(current["count"], posted, "{event_type}: {body}");
        }
    }

    // The same window with a +02:00 offset (URL-encoded) answers the same buckets.
    let plus_two = FixedOffset::east_opt(2 * 3600).unwrap();
    let offset = |t: DateTime<Utc>| {
        t.with_timezone(&plus_two)
            .to_rfc3339_opts(SecondsFormat::Secs, false)
            .replace('+', "%2B")
    };
    let zulu = ok(
        &app,
        &format!(
            "/analytics/timeseries?type=user.activity&from={}&to={}",
            rfc3339(from),
            rfc3339(to)
        ),
    )
    .await;
    let shifted = ok(
        &app,
        &format!(
            "/analytics/timeseries?type=user.activity&from={}&to={}",
            offset(from),
            offset(to)
        ),
    )
    .await;
    assert_eq!(shifted, zulu);
}

/// Buckets run from the hour of `from` to the hour of `to` inclusive, in UTC, zero-filled, and a
/// window of exactly 31 days is allowed.
#[actix_web::test]
async fn timeseries_buckets_cover_from_hour_to_to_hour() {
    let app = spawn_app().await;
    let series = |from: &str, to: &str| {
        format!("/analytics/timeseries?type=user.activity&from={from}&to={to}")
    };

    let body = ok(
        &app,
        &series("2020-03-01T10:59:59Z", "2020-03-01T12:00:00Z"),
    )
    .await;
    assert_eq!(
        body,
        json!([
            {"hour": "2020-03-01T10:00:00Z", "count": 0},
            {"hour": "2020-03-01T11:00:00Z", "count": 0},
            {"hour": "2020-03-01T12:00:00Z", "count": 0},
        ])
    );
    let body = ok(
        &app,
        &series("2020-03-01T12:30:00%2B02:00", "2020-03-01T10:45:00Z"),
    )
    .await;
    assert_eq!(body, json!([{"hour": "2020-03-01T10:00:00Z", "count": 0}]));
    let body = ok(
        &app,
        &series("2020-03-01T00:00:00Z", "2020-04-01T00:00:00Z"),
    )
    .await;
    let buckets = body.as_array().expect("array");
    assert_eq!(buckets.len(), 31 * 24 + 1);
    assert!(buckets.iter().all(|b| b["count"] == 0));
}

/// A missing or unknown type, a missing or malformed timestamp, `from` after `to` and a window
/// over 31 days answer 400.
#[actix_web::test]
async fn timeseries_rejects_bad_parameters() {
    let app = spawn_app().await;
    let (from, to) = ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z");

    for query in [
        format!("from={from}&to={to}"),
        format!("type=&from={from}&to={to}"),
        format!("type=click&from={from}&to={to}"),
        format!("type=activity&from={from}&to={to}"),
        "type=user.activity".to_string(),
        format!("type=user.activity&to={to}"),
        format!("type=user.activity&from={from}"),
        format!("type=user.activity&from=yesterday&to={to}"),
        format!("type=user.activity&from=2026-01-01&to={to}"),
        format!("type=user.activity&from=2026-13-01T00:00:00Z&to={to}"),
        format!("type=user.activity&from={from}&to=2026-01-02T25:00:00Z"),
        format!("type=user.activity&from={from}&to=1767225600"),
        format!("type=user.activity&from={to}&to={from}"),
        format!("type=user.activity&from={from}&to=2026-02-01T00:00:01Z"),
        format!("type=user.activity&from=2025-01-01T00:00:00Z&to={to}"),
    ] {
        stats(&app, &format!("/analytics/timeseries?{query}"))
            .await
            .assert_error(400, "invalid_request");
    }
}

/// After events, `/metrics` on the analytics service shows the batch-size and flush-duration
/// histograms and the consumed-records counter for `service="analytics"`, `status="ok"`.
#[actix_web::test]
async fn metrics_show_batches_flushes_and_consumed_records() {
    let app = spawn_app().await;
    let shop = Shop::new(&app);
    let ann = shop.user().await;
    let kettle = shop.product("Kettle").await;
    shop.act(&ann, "view", kettle, 1).await;
    shop.act(&ann, "purchase", kettle, 2).await;
    shop.settled().await;
    let emitted = shop.emitted.get() as f64;

    let consumed = eventually(PIPELINE, "consumed records to be counted", || async {
        let n = metric_sum(
            &app,
            "kafka_messages_consumed_total",
            &[r#"service="analytics""#, r#"status="ok""#],
        )
        .await;
        (n >= emitted).then_some(n)
    })
    .await;

    assert!(consumed >= emitted);
    let text = app.get(Service::Analytics, "/metrics", None).await.text;
    for name in [
        "analytics_batch_size_bucket",
        "analytics_flush_duration_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert!(metric_sum(&app, "analytics_batch_size_count", &[]).await >= 1.0);
    assert!(metric_sum(&app, "analytics_batch_size_sum", &[]).await >= emitted);
    assert!(metric_sum(&app, "analytics_flush_duration_seconds_count", &[]).await >= 1.0);
    for topic in ["user-updates", "product-updates"] {
        let filter = format!(r#"topic="{}{topic}""#, app.prefix);
        let n = metric_sum(
            &app,
            "kafka_messages_consumed_total",
            &[r#"service="analytics""#, r#"status="ok""#, &filter],
        )
        .await;
        assert!(n >= 1.0, "nothing consumed from {topic}");
    }
}

/// A non-admin is refused before the handler validates the parameters (403 for a user, 401
/// without a token), so bad values tell a non-admin nothing about the route's rules.
#[actix_web::test]
async fn a_non_admin_is_refused_before_parameters_are_validated() {
    let app = spawn_app().await;
    let (_, user_token, _) = app.new_user().await;

    for path in [
        "/analytics/products/not-a-uuid",
        "/analytics/users/not-a-uuid",
        "/analytics/products/top?limit=x",
        "/analytics/products/top?limit=0",
        "/analytics/products/top?by=clicks",
        "/analytics/timeseries?type=click",
        "/analytics/timeseries?type=user.activity&from=yesterday",
        "/analytics/timeseries",
    ] {
        app.get(Service::Analytics, path, Some(&user_token))
            .await
            .assert_error(403, "forbidden");
    }
    for path in [
        "/analytics/products/not-a-uuid",
        "/analytics/users/not-a-uuid",
        "/analytics/products/top?limit=x",
    ] {
        app.get(Service::Analytics, path, None)
            .await
            .assert_error(401, "unauthorized");
    }
}
