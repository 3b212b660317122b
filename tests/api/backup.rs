//! Backup and restore: `pg_dump` of a running system (while the broker is away, so the outbox
//! holds rows), more writes after the backup, then a restore into an empty database and a
//! runtime started on it against the same topics. The restored tables are the backup's; the
//! outbox rows that were published after the backup are recognised on the topics and not
//! published again; the sequences move past the numbers already used; and every event is
//! counted once: before the backup, in its outbox, after it, and after the restore.

use std::collections::HashMap;
use std::time::Duration;

use recsys::config::{Secret, Service};
use recsys::startup::Application;
use recsys_schema::topics;
use serde_json::json;
use tokio::process::Command;

use crate::helpers::*;
use crate::kafka::KafkaCluster;

/// `SIGSTOP` or `SIGCONT` to `pid`.
async fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

/// Counts of the tables a backup restores, by table.
async fn counts(db: &TestDb) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for table in [
        "users",
        "products",
        "user_activity",
        "outbox",
        "an_products",
        "rec_scores",
    ] {
        out.push((table, db.count(table).await));
    }
    out
}

/// Waits until analytics counts `purchases` of `product` on `app`, and the consumers stand at
/// the end of the topics (so nothing more is on its way).
async fn purchases_settle(app: &TestApp, product: &str, purchases: i64) {
    let path = format!("/analytics/products/{product}");
    eventually(
        Duration::from_secs(60),
        &format!("{purchases} purchases"),
        || async {
            let reply = app
                .get(Service::Analytics, &path, Some(&app.admin_token))
                .await;
            (reply.body["purchases"].as_i64() >= Some(purchases)).then_some(())
        },
    )
    .await;
}

#[actix_web::test]
async fn a_backup_restored_to_an_older_point_counts_every_event_once() {
    let kafka = KafkaCluster::start(1).await;
    let app = TestApp::builder().brokers(kafka.bootstrap()).spawn().await;
    let product = app.create_product("Kept", json!(2), Some("backup")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (user, token, _) = app.new_user().await;
    let buy = |n: usize| {
        let (app, token, product) = (&app, token.clone(), product.clone());
        async move {
            for _ in 0..n {
                app.post_activity(user, &token, &product, "purchase", 1)
                    .await;
            }
        }
    };
    buy(2).await;
    purchases_settle(&app, &product, 2).await;

    // The broker goes away: three purchases wait in the outbox, and the backup is taken.
    signal(kafka.pid(0), "-STOP").await;
    buy(3).await;
    assert!(app.outbox_rows().await >= 3);
    let dump = std::env::temp_dir().join(format!("recsys-{}.dump", uuid::Uuid::new_v4()));
    let out = Command::new(pg_bin().join("pg_dump"))
        .args(["--format=custom", "--no-owner", "--file"])
        .arg(&dump)
        .arg(&app.database_url)
        .output()
        .await
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let at_backup = counts(&app.db()).await;

    // The broker is back: the three are published and counted; four more after the backup.
    signal(kafka.pid(0), "-CONT").await;
    buy(4).await;
    purchases_settle(&app, &product, 9).await;
    app.runtime().shutdown().await.unwrap();

    // Restore into an empty database; start on it, against the same topics and groups.
    let (restored_url, _) = fresh_database().await;
    let out = Command::new(pg_bin().join("pg_restore"))
        .args(["--no-owner", "--dbname", &restored_url])
        .arg(&dump)
        .output()
        .await
        .expect("pg_restore runs");
    assert!(
        out.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&dump);
    let restored_db = TestDb(restored_url.clone());
    assert_eq!(
        counts(&restored_db).await,
        at_backup,
        "the restore holds the backup"
    );
    let mut settings = app.settings.clone();
    settings.postgres.database_url = Some(Secret::new(restored_url.clone()));
    let runtime = Application::build(settings.clone(), &Service::ALL, test_logger())
        .await
        .expect("runtime starts on the restored database")
        .spawn();
    let ports = Service::ALL
        .iter()
        .map(|&s| (s, runtime.port(s).unwrap()))
        .collect();
    let restored = TestApp::attach(
        Some(runtime),
        ports,
        settings,
        restored_url,
        app.prefix.clone(),
    )
    .await;

    // The three rows the backup caught in its outbox were published after it: recognised on
    // the topic, removed, not published again.
    eventually(
        Duration::from_secs(30),
        "the outbox to be reconciled",
        || async { (restored.outbox_rows().await == 0).then_some(()) },
    )
    .await;
    // Purchases after the restore are stamped past every number on the topic: counted.
    let (again, again_token, _) = restored.new_user().await;
    for _ in 0..5 {
        restored
            .post_activity(again, &again_token, &product, "purchase", 1)
            .await;
    }
    purchases_settle(&restored, &product, 14).await;

    // Every purchase once on the topic and once in the counts: 2 + 3 + 4 + 5.
    let records = consume(
        &kafka.bootstrap(),
        &[app.topic(topics::USER_UPDATES)],
        usize::MAX,
        Duration::from_secs(10),
    )
    .await;
    let mut copies: HashMap<String, usize> = HashMap::new();
    for record in &records {
        if record.value["type"] == "user.activity" {
            *copies
                .entry(record.value["event_id"].to_string())
                .or_default() += 1;
        }
    }
    assert_eq!(copies.len(), 14, "{copies:?}");
    assert!(
        copies.values().all(|&n| n == 1),
        "an event published twice: {copies:?}"
    );
    let stats = restored
        .get(
            Service::Analytics,
            &format!("/analytics/products/{product}"),
            Some(&restored.admin_token),
        )
        .await;
    assert_eq!(
        (&stats.body["purchases"], &stats.body["units_sold"]),
        (&json!(14), &json!(14))
    );
    let ranked = restored
        .get(
            Service::Recommendations,
            "/recommendations?category=backup",
            None,
        )
        .await;
    let score = ranked.body[0]["score"].as_f64().unwrap();
    assert!(
        (score - 140.0).abs() < 0.5,
        "score {score}: 14 purchases of weight 10"
    );
}
