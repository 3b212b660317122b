//! `recsys demo`: against a real runtime, a small demo fills the catalog, the shoppers and
//! their month of actions; every count the APIs give back is the plan's, every ranking and
//! analytics view has something to show, and a second run writes nothing. A refused request
//! ends the binary with the API's answer, not a panic.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use clap::Parser;
use recsys::config::{Secret, Service};
use recsys::demo::plan::{Kind, PerKind};
use recsys::demo::{run, DemoArgs, DemoReport};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::*;

/// The storefront key of the runtimes here.
const KEY: &str = "demo-storefront-key-0123456789abcdef0123";

/// A runtime that accepts [`KEY`].
async fn spawn_with_key() -> TestApp {
    TestApp::builder()
        .with(|settings| settings.api_key = Some(Secret::new(KEY)))
        .spawn()
        .await
}

/// The demo's flags for `app`: a small data set (60 products in 10 categories, 20 shoppers,
/// 3000 actions), then `extra`.
fn flags(app: &TestApp, extra: &[&str]) -> Vec<String> {
    let mut flags: Vec<String> = [
        "--users-url",
        &app.url(Service::Users),
        "--products-url",
        &app.url(Service::Products),
        "--analytics-url",
        &app.url(Service::Analytics),
        "--admin-email",
        app.settings.admin_email.as_deref().unwrap(),
        "--admin-password",
        ADMIN_PASSWORD,
        "--api-key",
        KEY,
        "--seed",
        "7",
        "--categories",
        "10",
        "--products",
        "60",
        "--users",
        "20",
        "--actions",
        "3000",
        "--wait-secs",
        "120",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    flags.extend(extra.iter().map(|s| s.to_string()));
    flags
}

/// Runs the demo in this process with [`flags`].
async fn demo(app: &TestApp) -> (DemoReport, Duration) {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: DemoArgs,
    }
    let args = Cli::parse_from(std::iter::once("demo".to_string()).chain(flags(app, &[]))).args;
    let started = Instant::now();
    let report = run(args, test_logger()).await.expect("the demo runs");
    (report, started.elapsed())
}

/// `GET` on `service` as the admin; asserts 200.
async fn admin_get(app: &TestApp, service: Service, path: &str) -> Value {
    let reply = app.get(service, path, Some(&app.admin_token)).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text);
    reply.body
}

/// Waits until analytics counted the demo's events and both read models stand at the same
/// positions; answers the summary.
async fn settled(app: &TestApp, report: &DemoReport) -> Value {
    let db = app.db();
    let [recommendations, analytics] = app.groups();
    let (products, users, actions) = (
        report.plan.products.len() as i64,
        report.plan.users.len() as i64 + 1,
        report.actions.total() as i64,
    );
    eventually(Duration::from_secs(120), "both read models to settle", || async {
        let summary = admin_get(app, Service::Analytics, "/analytics/summary").await;
        let by_type = &summary["events_by_type"];
        let position = |group: &str| {
            format!("SELECT sum(next_offset) FROM consumer_offsets WHERE consumer_group = '{group}'")
        };
        let (r, a) = (
            db.number(&position(&recommendations)).await,
            db.number(&position(&analytics)).await,
        );
        (by_type["user.activity"].as_i64() == Some(actions)
            && by_type["product.created"].as_i64() == Some(products)
            && by_type["user.registered"].as_i64() == Some(users)
            && r == a)
            .then_some(summary)
    })
    .await
}

/// Every product the products API lists.
async fn listed_products(app: &TestApp) -> Vec<Value> {
    let mut items = Vec::new();
    let mut after = String::new();
    loop {
        let page = app
            .get(
                Service::Products,
                &format!("/products?limit=100{after}"),
                None,
            )
            .await;
        assert_eq!(page.status, 200, "{}", page.text);
        items.extend(page.body["items"].as_array().unwrap().iter().cloned());
        match page.body["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => return items,
        }
    }
}

/// The demo creates the planned catalog, shoppers and actions: the APIs list every product at
/// its price, analytics counts every action by type at times spread over the last month, the
/// rankings put the planned favourites above the tail, and a second run changes no count.
#[actix_web::test]
async fn the_demo_fills_every_view_and_a_second_run_changes_nothing() {
    let app = spawn_with_key().await;

    let (first, took) = demo(&app).await;
    eprintln!("first run: {took:?}");
    assert_eq!(first.products_created, 60);
    assert_eq!(first.users_created, 20);
    assert_eq!(first.actions_written, 3000);
    let summary = settled(&app, &first).await;
    assert_eq!(summary["products"], 60, "{summary}");
    assert_eq!(summary["users"], 21, "{summary}");

    // The catalog: every planned product, at its price, in its category; ten categories.
    let products = listed_products(&app).await;
    assert_eq!(products.len(), 60);
    for (planned, id) in first.plan.products.iter().zip(&first.product_ids) {
        let listed = products
            .iter()
            .find(|p| p["id"] == id.to_string())
            .unwrap_or_else(|| panic!("{} not listed", planned.name));
        assert_eq!(listed["name"], planned.name.as_str());
        assert_eq!(listed["price"], planned.price.to_string().as_str());
        assert_eq!(
            listed["category"], first.plan.categories[planned.category],
            "{listed}"
        );
    }
    let categories: HashSet<&str> = products
        .iter()
        .map(|p| p["category"].as_str().unwrap())
        .collect();
    assert_eq!(categories.len(), 10);

    // Analytics: each type as planned, summed over the shoppers; the funnel's shape.
    let mut counted = PerKind::default();
    let month_ago = Utc::now() - TimeDelta::days(30);
    for id in &first.user_ids {
        let user = admin_get(&app, Service::Analytics, &format!("/analytics/users/{id}")).await;
        counted.views += user["views"].as_u64().unwrap();
        counted.cart_adds += user["cart_adds"].as_u64().unwrap();
        counted.cart_removes += user["cart_removes"].as_u64().unwrap();
        counted.purchases += user["purchases"].as_u64().unwrap();
        let last: chrono::DateTime<Utc> = user["last_active_at"].as_str().unwrap().parse().unwrap();
        assert!(last > month_ago && last <= Utc::now(), "{user}");
    }
    assert_eq!(counted, first.actions);
    assert!(counted.views > 5 * counted.cart_adds, "{counted:?}");
    assert!(
        counted.cart_adds > counted.purchases && counted.purchases > 0,
        "{counted:?}"
    );

    // Time: every action within the last 30 days, on many different days.
    let now = Utc::now();
    let series = admin_get(
        &app,
        Service::Analytics,
        &format!(
            "/analytics/timeseries?type=user.activity&from={}&to={}",
            (now - TimeDelta::days(30)).format("%Y-%m-%dT%H:%M:%SZ"),
            now.format("%Y-%m-%dT%H:%M:%SZ")
        ),
    )
    .await;
    let buckets = series.as_array().unwrap();
    let in_window: i64 = buckets.iter().map(|b| b["count"].as_i64().unwrap()).sum();
    assert_eq!(in_window, 3000);
    let days: HashSet<&str> = buckets
        .iter()
        .filter(|b| b["count"].as_i64().unwrap() > 0)
        .map(|b| &b["hour"].as_str().unwrap()[..10])
        .collect();
    assert!(days.len() > 20, "actions on {} days only", days.len());

    // Rankings: the most viewed products of the plan rank above its least viewed ones.
    let planned = first.plan.actions(3000);
    let mut views: BTreeMap<Uuid, usize> = first.product_ids.iter().map(|&id| (id, 0)).collect();
    for a in planned.iter().filter(|a| a.kind == Kind::View) {
        *views.get_mut(&first.product_ids[a.product]).unwrap() += 1;
    }
    let mut by_views: Vec<Uuid> = first.product_ids.clone();
    by_views.sort_by_key(|id| std::cmp::Reverse(views[id]));
    let ranking = admin_get(&app, Service::Recommendations, "/recommendations?limit=100").await;
    let ranked: Vec<Uuid> = ranking
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["product_id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ranked.len(), 60);
    let mean_position = |ids: &[Uuid]| {
        ids.iter()
            .map(|id| ranked.iter().position(|r| r == id).unwrap())
            .sum::<usize>() as f64
            / ids.len() as f64
    };
    let (head, tail) = (
        mean_position(&by_views[..6]),
        mean_position(&by_views[30..]),
    );
    assert!(head < tail, "head at {head}, tail at {tail} on average");
    let top_viewed = admin_get(
        &app,
        Service::Analytics,
        "/analytics/products/top?by=views&limit=3",
    )
    .await;
    for item in top_viewed.as_array().unwrap() {
        let id: Uuid = item["product_id"].as_str().unwrap().parse().unwrap();
        assert!(
            by_views[..12].contains(&id),
            "{item} is not among the planned favourites"
        );
    }

    // Every kind of recommendation has something to show.
    let trending = admin_get(
        &app,
        Service::Recommendations,
        "/recommendations?sort=trending",
    )
    .await;
    assert!(trending[0]["score"].as_f64().unwrap() > 0.0, "{trending}");
    let category = first.plan.categories[0];
    let in_category = admin_get(
        &app,
        Service::Recommendations,
        &format!("/recommendations?category={category}"),
    )
    .await;
    assert!(
        in_category[0]["score"].as_f64().unwrap() > 0.0,
        "{in_category}"
    );
    let similar = admin_get(
        &app,
        Service::Recommendations,
        &format!("/recommendations/products/{}/similar", by_views[0]),
    )
    .await;
    assert!(
        !similar.as_array().unwrap().is_empty(),
        "nothing similar to the favourite"
    );
    let personal = admin_get(
        &app,
        Service::Recommendations,
        &format!("/recommendations/users/{}", first.user_ids[0]),
    )
    .await;
    assert!(!personal.as_array().unwrap().is_empty());
    let product = admin_get(
        &app,
        Service::Analytics,
        &format!("/analytics/products/{}", by_views[0]),
    )
    .await;
    assert!(product["views"].as_u64().unwrap() > 0, "{product}");

    // A second run finds everything and writes nothing.
    let rows = |table: &'static str| {
        let db = app.db();
        async move { db.count(table).await }
    };
    let before = (
        rows("products").await,
        rows("users").await,
        rows("user_activity").await,
    );
    let (second, took) = demo(&app).await;
    eprintln!("second run: {took:?}");
    assert_eq!(
        (
            second.products_created,
            second.users_created,
            second.actions_written
        ),
        (0, 0, 0)
    );
    assert_eq!(second.product_ids, first.product_ids);
    assert_eq!(second.user_ids, first.user_ids);
    assert_eq!(second.anchor, first.anchor);
    let after = (
        rows("products").await,
        rows("users").await,
        rows("user_activity").await,
    );
    assert_eq!(after, before);
    let again = admin_get(&app, Service::Analytics, "/analytics/summary").await;
    assert_eq!(again["events_by_type"], summary["events_by_type"]);
    assert_eq!(
        (&again["users"], &again["products"]),
        (&summary["users"], &summary["products"])
    );
}

/// A request the API refuses (here the admin login, with a wrong password) ends `recsys demo`
/// with a non-zero status and the API's answer on stderr, not a panic.
#[actix_web::test]
async fn a_refused_request_ends_the_demo_with_the_answer() {
    let app = spawn_with_key().await;
    let mut flags = flags(&app, &[]);
    let at = flags.iter().position(|f| f == "--admin-password").unwrap();
    flags[at + 1] = "not-the-admin-password".into();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_recsys"))
        .arg("demo")
        .args(&flags)
        .env("LOG_FORMAT", "json")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("/users/login answered 401")
            && stderr.contains(
                r#"{"error":{"code":"unauthorized","message":"invalid email or password"}}"#
            ),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("not-the-admin-password"), "{stderr}");
}
