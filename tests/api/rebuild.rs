//! `recsys rebuild`: after a workload, each read model is corrupted, rebuilt from the topics,
//! and every table row and every answer of its API is what it was (scores to rounding and to
//! the decay of the seconds in between). The rebuild refuses while the service's consumers
//! run, a resumed rebuild counts nothing twice, and the rebuilt tables are analyzed.

use std::time::Duration;

use chrono::{Timelike, Utc};
use recsys::config::Service;
use recsys::rebuild::rebuild;
use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

/// Products, users and a mixed stream of actions, updates and a deletion; answers the product
/// ids, the user ids and how many events analytics must count.
async fn workload(app: &TestApp) -> (Vec<String>, Vec<Uuid>, i64) {
    let mut products = Vec::new();
    for (i, category) in ["rb-a", "rb-a", "rb-b", "rb-b"].iter().enumerate() {
        let p = app
            .create_product(&format!("Rebuilt {i}"), json!(i + 3), Some(category))
            .await;
        products.push(p["id"].as_str().unwrap().to_string());
    }
    // The admin account's registration, then the four products.
    let mut events = 5;
    for n in 0..2 {
        let reply = app
            .request(
                Method::PATCH,
                Service::Products,
                &format!("/products/{}", products[0]),
                Some(json!({"name": format!("Renamed {n}")})),
                Some(&app.admin_token),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        events += 1;
    }
    let mut users = Vec::new();
    for u in 0..3 {
        let (id, token, _) = app.new_user().await;
        events += 1;
        users.push(id);
        let plan: &[(&str, usize, u32)] = &[
            ("view", u % 4, 1),
            ("view", (u + 1) % 4, 1),
            ("cart_add", u % 4, 2),
            ("cart_remove", u % 4, 1),
            ("purchase", (u + 2) % 4, u as u32 + 1),
            ("purchase", 0, 1),
        ];
        for (kind, product, quantity) in plan {
            app.post_activity(id, &token, &products[*product], kind, *quantity)
                .await;
            events += 1;
        }
    }
    let reply = app
        .request(
            Method::DELETE,
            Service::Products,
            &format!("/products/{}", products[3]),
            None,
            Some(&app.admin_token),
        )
        .await;
    assert!(reply.status.is_success(), "{}", reply.text);
    events += 1;
    (products, users, events)
}

/// Waits until analytics counted `events` and both groups stand at the same positions.
async fn settled(app: &TestApp, events: i64) {
    let db = app.db();
    let [recommendations, analytics] = app.groups();
    eventually(Duration::from_secs(60), "both read models to settle", || async {
        let summary = app
            .get(Service::Analytics, "/analytics/summary", Some(&app.admin_token))
            .await;
        let position = |group: &str| {
            format!("SELECT sum(next_offset) FROM consumer_offsets WHERE consumer_group = '{group}'")
        };
        let (r, a) = (
            db.number(&position(&recommendations)).await,
            db.number(&position(&analytics)).await,
        );
        (summary.body["events_total"].as_i64() == Some(events) && r == a && r > 0).then_some(())
    })
    .await;
}

/// Every answer (status and body) of both read APIs the workload touched, by path.
async fn answers(app: &TestApp, products: &[String], users: &[Uuid]) -> Vec<(String, Value)> {
    let hour = Utc::now()
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap();
    let (from, to) = (
        hour - chrono::Duration::hours(2),
        hour + chrono::Duration::hours(2),
    );
    let mut paths = vec![
        (
            Service::Recommendations,
            "/recommendations?limit=50".to_string(),
        ),
        (
            Service::Recommendations,
            "/recommendations?sort=trending".into(),
        ),
        (
            Service::Recommendations,
            "/recommendations?category=rb-a".into(),
        ),
        (Service::Analytics, "/analytics/summary".into()),
    ];
    for kind in ["user.activity", "product.updated", "user.registered"] {
        paths.push((
            Service::Analytics,
            format!(
                "/analytics/timeseries?type={kind}&from={}&to={}",
                urlencode(&from.to_rfc3339()),
                urlencode(&to.to_rfc3339())
            ),
        ));
    }
    for by in ["views", "purchases", "units_sold", "cart_adds"] {
        paths.push((
            Service::Analytics,
            format!("/analytics/products/top?by={by}"),
        ));
    }
    for p in products {
        paths.push((
            Service::Recommendations,
            format!("/recommendations/products/{p}/similar"),
        ));
        paths.push((Service::Analytics, format!("/analytics/products/{p}")));
    }
    for u in users {
        paths.push((
            Service::Recommendations,
            format!("/recommendations/users/{u}"),
        ));
        paths.push((Service::Analytics, format!("/analytics/users/{u}")));
    }
    let mut out = Vec::new();
    for (service, path) in paths {
        // The deleted product answers 404 on some routes: the same 404 after the rebuild.
        let reply = app.get(service, &path, Some(&app.admin_token)).await;
        assert!(
            [200, 404].contains(&reply.status.as_u16()),
            "{path}: {}",
            reply.text
        );
        out.push((
            path,
            json!({"status": reply.status.as_u16(), "body": reply.body}),
        ));
    }
    out
}

/// Whether `a` and `b` are the same JSON, floats within `tolerance` of each other (relative).
fn same(a: &Value, b: &Value, tolerance: f64) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= tolerance * x.abs().max(y.abs()).max(1e-9)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y, tolerance))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same(v, w, tolerance)))
        }
        _ => a == b,
    }
}

/// The projection tables, row by row.
async fn tables(app: &TestApp) -> Vec<(&'static str, Value)> {
    let db = app.db();
    let mut out = Vec::new();
    for (table, order) in [
        ("rec_catalog", "product_id"),
        ("rec_scores", "product_id"),
        ("rec_user_products", "user_id, product_id"),
        ("an_products", "product_id"),
        ("an_users", "user_id"),
        ("an_event_counts", "minute, event_type"),
        ("an_product_hours", "hour, product_id"),
    ] {
        out.push((table, db.rows(table, order).await));
    }
    out
}

#[actix_web::test]
async fn a_corrupted_read_model_is_rebuilt_to_every_answer_it_gave() {
    let app = spawn_app().await;
    let (products, users, events) = workload(&app).await;
    settled(&app, events).await;
    let before = answers(&app, &products, &users).await;
    let rows_before = tables(&app).await;

    let refused = rebuild(
        app.settings.clone(),
        Service::Analytics,
        false,
        test_logger(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(refused.contains("member"), "{refused}");
    app.runtime().shutdown().await.unwrap();
    let db = app.db();
    for corruption in [
        "DELETE FROM rec_scores",
        "UPDATE rec_user_products SET purchases = purchases + 7",
        "UPDATE an_products SET views = views * 3",
        "DELETE FROM an_event_counts",
    ] {
        db.execute(corruption).await;
    }
    assert_ne!(tables(&app).await, rows_before, "the corruption shows");

    for service in [Service::Recommendations, Service::Analytics] {
        let rebuilt = rebuild(app.settings.clone(), service, false, test_logger())
            .await
            .unwrap();
        assert!(!rebuilt.resumed);
        assert!(rebuilt.records >= events, "{rebuilt:?}");
    }
    // Each rebuilt table was analyzed by the rebuild itself (not left to autovacuum).
    let unanalyzed = db
        .number(
            "SELECT count(*) FROM pg_stat_user_tables \
             WHERE relname IN ('rec_catalog', 'rec_scores', 'rec_user_products', 'an_products', \
                               'an_users', 'an_event_counts', 'an_product_hours') \
               AND last_analyze IS NULL",
        )
        .await;
    assert_eq!(unanalyzed, 0, "rebuilt tables without a manual ANALYZE");
    let rows_after = tables(&app).await;
    for ((table, before), (_, after)) in rows_before.iter().zip(&rows_after) {
        // Scores are sums of the same terms, perhaps grouped in other batches: equal to rounding.
        assert!(same(before, after, 1e-9), "{table}:\n{before}\n{after}");
    }

    // A rebuild interrupted after its wipe resumes where the replay stands: nothing twice.
    db.execute("UPDATE projection_rebuilds SET finished_at = NULL WHERE service = 'analytics'")
        .await;
    let resumed = rebuild(
        app.settings.clone(),
        Service::Analytics,
        false,
        test_logger(),
    )
    .await
    .unwrap();
    assert!(resumed.resumed);
    let analytics_rows = |rows: &[(&str, Value)]| -> Vec<Value> {
        rows.iter()
            .filter(|(table, _)| table.starts_with("an_"))
            .map(|(_, v)| v.clone())
            .collect()
    };
    assert_eq!(
        analytics_rows(&tables(&app).await),
        analytics_rows(&rows_before)
    );

    let again = app.another_instance(&Service::ALL).await;
    let after = answers(&again, &products, &users).await;
    for ((path, before), (_, after)) in before.iter().zip(&after) {
        // The seconds between the two readings decay the scores (trending: 1 h half-life).
        assert!(same(before, after, 1e-2), "{path}:\n{before}\n{after}");
    }
    assert_eq!(
        db.number("SELECT count(*) FROM projection_rebuilds WHERE finished_at IS NOT NULL")
            .await,
        2
    );
}
