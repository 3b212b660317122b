//! The recommendations service over HTTP, end to end: users and products write through the
//! outbox, the consumer folds the events into the ranking, and the answers (global, per
//! category, personalised, similar) follow the default weights (view 1, cart_add 3,
//! cart_remove −3, purchase 10) behind a cache that a change invalidates at once.
//!
//! The pipeline is asynchronous, so each test waits with [`eventually`] until the answer
//! reflects every event it wrote, then asserts the exact order and scores. With a 24 h
//! half-life a score decays by far less than 0.1 % over a test: scores compare with a relative
//! tolerance of 1e-3.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use recsys::config::Service;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

/// How long the pipeline may take to reflect an event (it usually takes about a second).
const PIPELINE: Duration = Duration::from_secs(30);

/// A registered user who records activity with their own token.
struct Shopper {
    id: Uuid,
    token: String,
}

impl Shopper {
    /// Registers a new user.
    async fn new(app: &TestApp) -> Self {
        let (id, token, _) = app.new_user().await;
        Self { id, token }
    }

    /// Records `kind` (`view`, `cart_add`, `cart_remove`, `purchase`) of `quantity` units of
    /// `product`; asserts 202.
    async fn does(&self, app: &TestApp, kind: &str, product: &str, quantity: u32) {
        app.post_activity(self.id, &self.token, product, kind, quantity)
            .await;
    }

    /// The path of this user's personal recommendations.
    fn path(&self) -> String {
        format!("/recommendations/users/{}", self.id)
    }
}

/// Creates a product as admin; answers its id.
async fn product(app: &TestApp, name: &str, price: &str, category: Option<&str>) -> String {
    let created = app.create_product(name, json!(price), category).await;
    created["id"].as_str().expect("product id").to_string()
}

/// `GET` on the recommendations service.
async fn recommend(app: &TestApp, path: &str, token: Option<&str>) -> Reply {
    app.get(Service::Recommendations, path, token).await
}

/// The items of a 200 answer.
fn items(reply: &Reply) -> Vec<Value> {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply
        .body
        .as_array()
        .unwrap_or_else(|| panic!("not a JSON array: {}", reply.text))
        .clone()
}

/// The product ids of `items`, in order.
fn ids(items: &[Value]) -> Vec<&str> {
    items
        .iter()
        .map(|i| i["product_id"].as_str().expect("product_id"))
        .collect()
}

/// The `score` of each item, by product id.
fn scores(items: &[Value]) -> HashMap<&str, f64> {
    items
        .iter()
        .map(|i| {
            (
                i["product_id"].as_str().expect("product_id"),
                i["score"].as_f64().expect("numeric score"),
            )
        })
        .collect()
}

/// Whether `actual` is `expected` within a relative 1e-3 (absolute 1e-3 around zero).
fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= 1e-3 * expected.abs().max(1.0)
}

/// Asserts that `items` are exactly `expected` (product id, score), in that order.
fn assert_ranking(items: &[Value], expected: &[(&str, f64)]) {
    let want: Vec<&str> = expected.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids(items), want, "order; items: {items:#?}");
    for (item, (id, score)) in items.iter().zip(expected) {
        let got = item["score"].as_f64().expect("numeric score");
        assert!(close(got, *score), "score of {id}: {got}, expected {score}");
    }
}

/// Waits until `GET path` (as `token`) lists every product of `expected` with its score
/// (other products may be listed too); answers the items.
async fn settled(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    expected: &[(&str, f64)],
) -> Vec<Value> {
    eventually(
        PIPELINE,
        &format!("{path} to list {expected:?}"),
        || async {
            let reply = recommend(app, path, token).await;
            if reply.status != StatusCode::OK {
                return None;
            }
            let items = reply.body.as_array()?.clone();
            let got = scores(&items);
            expected
                .iter()
                .all(|(id, score)| got.get(id).is_some_and(|s| close(*s, *score)))
                .then_some(items)
        },
    )
    .await
}

/// The `X-Cache` header of a reply.
fn x_cache(reply: &Reply) -> &str {
    reply
        .headers
        .get("x-cache")
        .expect("X-Cache header")
        .to_str()
        .expect("ASCII header")
}

/// The value of the sample `series` (name with its labels, as printed) on `/metrics`.
async fn sample(app: &TestApp, series: &str) -> Option<f64> {
    let text = app
        .get(Service::Recommendations, "/metrics", None)
        .await
        .text;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The seed's verbatim `GET /recommendations` answers 200 with a JSON array and `X-Cache`; on
/// a fresh runtime without products the array is empty.
#[actix_web::test]
async fn seed_request_answers_an_empty_json_array_with_x_cache() {
    let app = spawn_app().await;

    let reply = recommend(&app, "/recommendations", None).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(
        reply
            .headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json")),
        "{:?}",
        reply.headers
    );
    assert!(
        ["hit", "miss"].contains(&x_cache(&reply)),
        "{:?}",
        reply.headers
    );
    assert_eq!(reply.body, json!([]));
}

/// Products without activity come back newest first with score 0 and exactly the fields
/// `product_id`, `name`, `price` (a two-place string), `category` (null when unset) and `score`.
#[actix_web::test]
async fn products_without_activity_come_back_newest_first_with_score_zero() {
    let app = spawn_app().await;
    let lamp = product(&app, "Lamp", "19.99", Some("home")).await;
    let book = product(&app, "Book", "5", Some("books")).await;
    let misc = product(&app, "Thing", "0.1", None).await;

    let items = settled(
        &app,
        "/recommendations",
        None,
        &[(&lamp, 0.0), (&book, 0.0), (&misc, 0.0)],
    )
    .await;

    assert_eq!(ids(&items), [&misc, &book, &lamp]);
    assert_eq!(
        items,
        [
            json!({"product_id": misc, "name": "Thing", "price": "0.10", "category": null, "score": 0.0}),
            json!({"product_id": book, "name": "Book", "price": "5.00", "category": "books", "score": 0.0}),
            json!({"product_id": lamp, "name": "Lamp", "price": "19.99", "category": "home", "score": 0.0}),
        ]
    );
}

/// The order follows the weights: a purchase (10) before three cart adds (9) before five views
/// (5) before a cart add taken back (≈ 0, but scored: it precedes every product without
/// activity, which follow newest first); activity on a product the catalog never had is not
/// listed.
#[actix_web::test]
async fn ranking_follows_the_action_weights() {
    let app = spawn_app().await;
    let (alice, bob) = (Shopper::new(&app).await, Shopper::new(&app).await);
    let unscored_old = product(&app, "Old", "1.00", None).await;
    let a = product(&app, "A", "1.00", None).await;
    let b = product(&app, "B", "1.00", None).await;
    let c = product(&app, "C", "1.00", None).await;
    let d = product(&app, "D", "1.00", None).await;
    let unscored_new = product(&app, "New", "1.00", None).await;
    let ghost = Uuid::new_v4().to_string();

    alice.does(&app, "purchase", &ghost, 5).await;
    alice.does(&app, "purchase", &a, 1).await;
    for _ in 0..3 {
        bob.does(&app, "cart_add", &b, 1).await;
    }
    for shopper in [&alice, &bob, &alice, &bob, &alice] {
        shopper.does(&app, "view", &c, 1).await;
    }
    bob.does(&app, "cart_add", &d, 1).await;
    bob.does(&app, "cart_remove", &d, 1).await;
    let expected = [
        (a.as_str(), 10.0),
        (b.as_str(), 9.0),
        (c.as_str(), 5.0),
        (d.as_str(), 0.0),
        (unscored_new.as_str(), 0.0),
        (unscored_old.as_str(), 0.0),
    ];
    // D's expected score (0) is also what it shows before its events are applied, so wait for
    // the order too: until then D sorts among the unscored products.
    let order: Vec<&str> = expected.iter().map(|(id, _)| *id).collect();
    let items = eventually(PIPELINE, "the ranking to settle in order", || async {
        let items = settled(&app, "/recommendations", None, &expected).await;
        (ids(&items) == order).then_some(items)
    })
    .await;

    assert_ranking(&items, &expected);
}

/// The quantity multiplies the weight: 2 purchases count 20, 7 views 7, 3 cart adds less 2
/// cart removes 3.
#[actix_web::test]
async fn quantities_multiply_the_weight() {
    let app = spawn_app().await;
    let shopper = Shopper::new(&app).await;
    let p = product(&app, "P", "1.00", None).await;
    let q = product(&app, "Q", "1.00", None).await;
    let r = product(&app, "R", "1.00", None).await;

    shopper.does(&app, "cart_add", &r, 3).await;
    shopper.does(&app, "cart_remove", &r, 2).await;
    shopper.does(&app, "view", &q, 7).await;
    shopper.does(&app, "purchase", &p, 2).await;
    let expected = [(p.as_str(), 20.0), (q.as_str(), 7.0), (r.as_str(), 3.0)];
    let items = settled(&app, "/recommendations", None, &expected).await;

    assert_ranking(&items, &expected);
}

/// `limit` bounds the answer (default 10, at most 100); a smaller limit answers a prefix of the
/// same ranking.
#[actix_web::test]
async fn limit_bounds_the_answer() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for i in 0..12 {
        created.push(product(&app, &format!("P{i}"), "1.00", None).await);
    }
    let expected: Vec<(&str, f64)> = created.iter().map(|id| (id.as_str(), 0.0)).collect();
    let all = settled(&app, "/recommendations?limit=100", None, &expected).await;
    let newest_first: Vec<&str> = created.iter().rev().map(String::as_str).collect();
    assert_eq!(ids(&all), newest_first);

    let default = items(&recommend(&app, "/recommendations", None).await);
    let three = items(&recommend(&app, "/recommendations?limit=3", None).await);
    let one = items(&recommend(&app, "/recommendations?limit=1", None).await);
    let twelve = items(&recommend(&app, "/recommendations?limit=12", None).await);

    assert_eq!(ids(&default), newest_first[..10]);
    assert_eq!(ids(&three), newest_first[..3]);
    assert_eq!(ids(&one), newest_first[..1]);
    assert_eq!(ids(&twelve), newest_first);
}

/// A `limit` outside 1..=100 or not an integer is a JSON 400 on every recommendation route.
#[actix_web::test]
async fn limit_outside_1_to_100_is_rejected() {
    let app = spawn_app().await;
    let shopper = Shopper::new(&app).await;
    let some_product = Uuid::new_v4();

    for limit in ["0", "101", "-1", "x", "1.5", ""] {
        for (path, token) in [
            (format!("/recommendations?limit={limit}"), None),
            (
                format!("{}?limit={limit}", shopper.path()),
                Some(shopper.token.as_str()),
            ),
            (
                format!("/recommendations/products/{some_product}/similar?limit={limit}"),
                None,
            ),
        ] {
            let reply = recommend(&app, &path, token).await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{path}: {}",
                reply.text
            );
            reply.assert_error(400, "invalid_request");
        }
    }
}

/// `category=` keeps only that category, in ranking order; an unknown category answers `[]`
/// and an empty one means no filter.
#[actix_web::test]
async fn category_filter_returns_only_that_category() {
    let app = spawn_app().await;
    let shopper = Shopper::new(&app).await;
    let novel = product(&app, "Novel", "12.00", Some("books")).await;
    let atlas = product(&app, "Atlas", "30.00", Some("books")).await;
    let ball = product(&app, "Ball", "3.00", Some("toys")).await;
    let plain = product(&app, "Plain", "1.00", None).await;
    shopper.does(&app, "purchase", &ball, 1).await;
    shopper.does(&app, "view", &novel, 1).await;
    shopper.does(&app, "cart_add", &atlas, 1).await;
    settled(
        &app,
        "/recommendations",
        None,
        &[(&ball, 10.0), (&atlas, 3.0), (&novel, 1.0), (&plain, 0.0)],
    )
    .await;

    let books = items(&recommend(&app, "/recommendations?category=books", None).await);
    let toys = items(&recommend(&app, "/recommendations?category=toys&limit=5", None).await);
    let none = items(&recommend(&app, "/recommendations?category=garden", None).await);
    let empty = items(&recommend(&app, "/recommendations?category=", None).await);

    assert_ranking(&books, &[(&atlas, 3.0), (&novel, 1.0)]);
    assert!(books.iter().all(|i| i["category"] == "books"), "{books:?}");
    assert_ranking(&toys, &[(&ball, 10.0)]);
    assert_eq!(none, Vec::<Value>::new());
    assert_eq!(ids(&empty), [&ball, &atlas, &novel, &plain]);
}

/// A product moved to another category ranks in its new category at once, also where the
/// answer is read from that category's ordered list (`limit` below the category's scored
/// products), and no longer in its old one; the scores keep the catalog's categories.
#[actix_web::test]
async fn a_product_moved_to_another_category_ranks_in_the_new_one() {
    let app = spawn_app().await;
    let shopper = Shopper::new(&app).await;
    let kite = product(&app, "Kite", "20.00", Some("toys")).await;
    let yoyo = product(&app, "Yoyo", "2.00", Some("toys")).await;
    let rake = product(&app, "Rake", "15.00", Some("garden")).await;
    shopper.does(&app, "purchase", &kite, 1).await;
    shopper.does(&app, "view", &yoyo, 1).await;
    shopper.does(&app, "cart_add", &rake, 1).await;
    settled(
        &app,
        "/recommendations",
        None,
        &[(&kite, 10.0), (&rake, 3.0), (&yoyo, 1.0)],
    )
    .await;

    let patch = app
        .request(
            Method::PATCH,
            Service::Products,
            &format!("/products/{kite}"),
            Some(json!({"category": "garden"})),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(patch.status, StatusCode::OK, "{}", patch.text);
    let garden = eventually(PIPELINE, "the kite to lead the garden", || async {
        let reply = recommend(&app, "/recommendations?category=garden&limit=1", None).await;
        let items = reply.body.as_array()?.clone();
        (ids(&items) == [kite.as_str()]).then_some(items)
    })
    .await;
    assert_ranking(&garden, &[(&kite, 10.0)]);
    assert_eq!(garden[0]["category"], "garden");
    let toys = items(&recommend(&app, "/recommendations?category=toys&limit=1", None).await);
    assert_ranking(&toys, &[(&yoyo, 1.0)]);
    let both = items(&recommend(&app, "/recommendations?category=garden&limit=2", None).await);
    assert_ranking(&both, &[(&kite, 10.0), (&rake, 3.0)]);
    // Whichever came first, a product's activity or its catalog row, its scores' row carries
    // its category as the catalog has it.
    let stale = app
        .db()
        .number(
            "SELECT count(*) FROM rec_scores s JOIN rec_catalog c USING (product_id) \
             WHERE s.category IS DISTINCT FROM c.category",
        )
        .await;
    assert_eq!(
        stale, 0,
        "scores' rows with another category than the catalog's"
    );
}

/// `exclude` chooses what the personal ranking leaves out of the user's own products:
/// `purchased` (the default, the same answer as without it), `interacted` (also what the user
/// viewed or carted), `none`; any other value is a JSON 400.
#[actix_web::test]
async fn exclude_chooses_which_of_the_users_products_are_left_out() {
    let app = spawn_app().await;
    let (shopper, other) = (Shopper::new(&app).await, Shopper::new(&app).await);
    let bought = product(&app, "Bought", "10.00", None).await;
    let carted = product(&app, "Carted", "10.00", None).await;
    let seen = product(&app, "Seen", "10.00", None).await;
    let removed = product(&app, "Removed", "10.00", None).await;
    let fresh = product(&app, "Fresh", "10.00", None).await;
    shopper.does(&app, "purchase", &bought, 1).await;
    shopper.does(&app, "cart_add", &carted, 1).await;
    shopper.does(&app, "view", &seen, 1).await;
    other.does(&app, "purchase", &fresh, 2).await;
    other.does(&app, "cart_add", &removed, 1).await;
    other.does(&app, "cart_add", &removed, 1).await;
    settled(
        &app,
        "/recommendations",
        None,
        &[
            (&fresh, 20.0),
            (&bought, 10.0),
            (&removed, 6.0),
            (&carted, 3.0),
            (&seen, 1.0),
        ],
    )
    .await;
    let ask = |exclude: &str| {
        let path = format!("{}{exclude}", shopper.path());
        let app = &app;
        let token = shopper.token.clone();
        async move { recommend(app, &path, Some(&token)).await }
    };

    let default = ask("").await;
    let purchased = ask("?exclude=purchased").await;
    let interacted = items(&ask("?exclude=interacted").await);
    let none = items(&ask("?exclude=none").await);

    assert_eq!(ids(&items(&default)), [&fresh, &removed, &carted, &seen]);
    assert_eq!(purchased.text, default.text);
    assert_eq!(ids(&interacted), [&fresh, &removed]);
    assert_eq!(ids(&none), [&fresh, &bought, &removed, &carted, &seen]);
    for bad in ["?exclude=viewed", "?exclude=", "?exclude=none&exclude=none"] {
        ask(bad).await.assert_error(400, "invalid_request");
    }
}

/// `sort=trending` ranks by the trending score, whose half-life is short: a product bought
/// once just now outranks one bought three times a few half-lives ago, while the popularity
/// ranking (the default, `sort=popular`) still puts the older purchases first. It takes
/// `category` too; another `sort` is a JSON 400.
#[actix_web::test]
async fn trending_ranks_what_is_bought_now() {
    const TRENDING: Duration = Duration::from_millis(50);
    let app = TestApp::builder()
        .with(|settings| settings.ranking_trending_half_life = "50ms".into())
        .spawn()
        .await;
    let shopper = Shopper::new(&app).await;
    let before = product(&app, "Before", "5.00", Some("now")).await;
    let after = product(&app, "After", "5.00", Some("now")).await;
    let elsewhere = product(&app, "Elsewhere", "5.00", Some("other")).await;
    shopper.does(&app, "purchase", &before, 3).await;
    settled(&app, "/recommendations", None, &[(&before, 30.0)]).await;
    // Four trending half-lives after the first purchases, the second one outweighs them
    // (1 against 3 / 16); the popularity half-life is a day.
    let first = Instant::now();
    eventually(
        Duration::from_secs(5),
        "four half-lives to pass",
        || async { (first.elapsed() >= 4 * TRENDING).then_some(()) },
    )
    .await;
    shopper.does(&app, "purchase", &after, 1).await;
    shopper.does(&app, "view", &elsewhere, 1).await;
    settled(
        &app,
        "/recommendations",
        None,
        &[(&after, 10.0), (&elsewhere, 1.0)],
    )
    .await;

    let trending =
        items(&recommend(&app, "/recommendations?sort=trending&category=now", None).await);
    let popular = items(&recommend(&app, "/recommendations?sort=popular&category=now", None).await);
    let default = items(&recommend(&app, "/recommendations?category=now", None).await);

    assert_eq!(ids(&trending), [&after, &before]);
    assert_eq!(ids(&popular), [&before, &after]);
    assert_eq!(ids(&default), ids(&popular));
    for bad in ["sort=new", "sort=", "sort=trending&sort=trending"] {
        recommend(&app, &format!("/recommendations?{bad}"), None)
            .await
            .assert_error(400, "invalid_request");
    }
}

/// When the base times fall far behind (more than 256 half-lives), the next flush moves them to
/// now and rescales every accumulator, popularity and trending at once, and no score changes:
/// here the state is first set back by 300 half-lives of each (accumulators scaled to match,
/// the same scores), then an action elsewhere is flushed.
#[actix_web::test]
async fn a_rebase_changes_no_score() {
    let app = TestApp::builder()
        .with(|settings| settings.ranking_trending_half_life = "1h".into())
        .spawn()
        .await;
    let shopper = Shopper::new(&app).await;
    let kept = product(&app, "Kept", "5.00", Some("rebase")).await;
    let other = product(&app, "Other", "5.00", Some("elsewhere")).await;
    shopper.does(&app, "purchase", &kept, 2).await;
    settled(&app, "/recommendations", None, &[(&kept, 20.0)]).await;
    let db = TestDb(app.database_url.clone());
    db.execute("UPDATE rec_scores SET acc = acc * 2 ^ 300, trend = trend * 2 ^ 300")
        .await;
    db.execute(
        "UPDATE rec_state SET t0 = t0 - interval '300 days', \
                              trend_t0 = trend_t0 - interval '300 hours'",
    )
    .await;
    let before = db
        .number("SELECT extract(epoch FROM t0)::int8 FROM rec_state")
        .await;

    shopper.does(&app, "view", &other, 1).await;
    settled(&app, "/recommendations", None, &[(&other, 1.0)]).await;

    let after = db
        .number("SELECT extract(epoch FROM t0)::int8 FROM rec_state")
        .await;
    assert!(after > before + 299 * 86_400, "t0 moved to now");
    for sort in ["popular", "trending"] {
        let kept_only = items(
            &recommend(
                &app,
                &format!("/recommendations?category=rebase&sort={sort}"),
                None,
            )
            .await,
        );
        assert_ranking(&kept_only, &[(&kept, 20.0)]);
    }
}

/// A repeated `category` keeps the products of any of them, on every route: the global, the
/// personal and the similar ranking (each in its own order); the same set in another order
/// or with a duplicate is the same answer; an unknown category among them matches nothing.
#[actix_web::test]
async fn several_categories_filter_every_route() {
    let app = spawn_app().await;
    let (shopper, other) = (Shopper::new(&app).await, Shopper::new(&app).await);
    let novel = product(&app, "Novel", "12.00", Some("books")).await;
    let ball = product(&app, "Ball", "3.00", Some("toys")).await;
    let rake = product(&app, "Rake", "20.00", Some("garden")).await;
    let plain = product(&app, "Plain", "1.00", None).await;
    // The shopper and the other buyer both buy the novel, then each of the others.
    for buyer in [&shopper, &other] {
        buyer.does(&app, "purchase", &novel, 1).await;
    }
    other.does(&app, "purchase", &ball, 1).await;
    other.does(&app, "cart_add", &rake, 1).await;
    other.does(&app, "purchase", &plain, 1).await;
    shopper.does(&app, "view", &ball, 1).await;
    settled(
        &app,
        "/recommendations",
        None,
        &[(&novel, 20.0), (&plain, 10.0), (&ball, 11.0), (&rake, 3.0)],
    )
    .await;
    let two = "category=toys&category=garden";

    let global = items(&recommend(&app, &format!("/recommendations?{two}"), None).await);
    let reordered = recommend(
        &app,
        "/recommendations?category=garden&category=toys&category=toys",
        None,
    )
    .await;
    let with_unknown = recommend(
        &app,
        &format!("/recommendations?{two}&category=nowhere"),
        None,
    )
    .await;
    let personal = items(
        &recommend(
            &app,
            &format!("{}?{two}", shopper.path()),
            Some(&shopper.token),
        )
        .await,
    );
    let similar = items(
        &recommend(
            &app,
            &format!("/recommendations/products/{novel}/similar?{two}"),
            None,
        )
        .await,
    );
    let similar_books = items(
        &recommend(
            &app,
            &format!("/recommendations/products/{novel}/similar?category=books"),
            None,
        )
        .await,
    );

    assert_eq!(ids(&global), [&ball, &rake]);
    assert_eq!(
        reordered.text,
        recommend(&app, &format!("/recommendations?{two}"), None)
            .await
            .text
    );
    assert_eq!(ids(&items(&with_unknown)), [&ball, &rake]);
    assert!(personal
        .iter()
        .all(|i| ["toys", "garden"].contains(&i["category"].as_str().unwrap())));
    assert_eq!(ids(&personal), [&ball, &rake], "{personal:#?}");
    assert_eq!(ids(&similar), [&ball, &rake]);
    assert_eq!(similar_books, Vec::<Value>::new());
}

/// At most 20 `category` values per query: 21 are a JSON 400 on every route, distinct or not
/// (the document's `maxItems` counts values as sent); 20 are answered.
#[actix_web::test]
async fn more_than_20_categories_are_rejected() {
    let app = spawn_app().await;
    let shopper = Shopper::new(&app).await;
    let item = product(&app, "Item", "1.00", Some("c0")).await;
    // The similar route knows the product once the catalog has it.
    settled(&app, "/recommendations", None, &[(&item, 0.0)]).await;
    let query = |n: usize| {
        (0..n)
            .map(|i| format!("category=c{i}"))
            .collect::<Vec<_>>()
            .join("&")
    };
    for path in [
        "/recommendations".to_string(),
        shopper.path(),
        format!("/recommendations/products/{item}/similar"),
    ] {
        let too_many =
            recommend(&app, &format!("{path}?{}", query(21)), Some(&shopper.token)).await;
        too_many.assert_error(400, "invalid_request");
        assert!(too_many.text.contains("20"), "{}", too_many.text);
        let twenty = recommend(&app, &format!("{path}?{}", query(20)), Some(&shopper.token)).await;
        assert_eq!(twenty.status, StatusCode::OK, "{path}: {}", twenty.text);
        let repeated = recommend(
            &app,
            &format!("{path}?{}&category=c0", query(20)),
            Some(&shopper.token),
        )
        .await;
        repeated.assert_error(400, "invalid_request");
    }
}

/// A `category` longer than 100 characters is a JSON 400.
#[actix_web::test]
async fn category_longer_than_100_characters_is_rejected() {
    let app = spawn_app().await;

    let long = recommend(
        &app,
        &format!("/recommendations?category={}", "b".repeat(101)),
        None,
    )
    .await;
    let longest = recommend(
        &app,
        &format!("/recommendations?category={}", "b".repeat(100)),
        None,
    )
    .await;

    long.assert_error(400, "invalid_request");
    assert_eq!(items(&longest), Vec::<Value>::new());
}

/// A deleted product disappears from the global, category, personal and similar answers (each
/// asked, and so cached, before the deletion), and its own similar list becomes a 404.
#[actix_web::test]
async fn a_deleted_product_disappears_from_every_answer() {
    let app = spawn_app().await;
    let (buyer, viewer) = (Shopper::new(&app).await, Shopper::new(&app).await);
    let doomed = product(&app, "Doomed", "9.00", Some("books")).await;
    let kept = product(&app, "Kept", "4.00", Some("books")).await;
    buyer.does(&app, "purchase", &doomed, 3).await;
    buyer.does(&app, "purchase", &kept, 1).await;
    viewer.does(&app, "view", &kept, 1).await;
    // Each answer with what it lists besides the doomed product.
    let answers = [
        ("/recommendations".to_string(), None, vec![kept.as_str()]),
        (
            "/recommendations?category=books".to_string(),
            None,
            vec![kept.as_str()],
        ),
        (
            viewer.path(),
            Some(viewer.token.as_str()),
            vec![kept.as_str()],
        ),
        (
            format!("/recommendations/products/{kept}/similar"),
            None,
            vec![],
        ),
    ];
    settled(
        &app,
        "/recommendations",
        None,
        &[(&doomed, 30.0), (&kept, 11.0)],
    )
    .await;
    for (path, token, rest) in &answers {
        let before = items(&recommend(&app, path, *token).await);
        let mut want = vec![doomed.as_str()];
        want.extend(rest);
        assert_eq!(ids(&before), want, "{path}");
    }

    let delete = app
        .request(
            Method::DELETE,
            Service::Products,
            &format!("/products/{doomed}"),
            None,
            Some(&app.admin_token),
        )
        .await;
    assert!(delete.status.is_success(), "delete: {}", delete.text);

    eventually(PIPELINE, "the deletion to reach the ranking", || async {
        let now = items(&recommend(&app, "/recommendations", None).await);
        (!ids(&now).contains(&doomed.as_str())).then_some(())
    })
    .await;
    for (path, token, rest) in &answers {
        let after = items(&recommend(&app, path, *token).await);
        assert_eq!(&ids(&after), rest, "{path} after the deletion");
    }
    recommend(
        &app,
        &format!("/recommendations/products/{doomed}/similar"),
        None,
    )
    .await
    .assert_error(404, "not_found");
}

/// A price change shows on the first request after it is consumed: the flush invalidates the
/// cached answer at once rather than after the 60 s TTL.
#[actix_web::test]
async fn a_price_change_shows_without_waiting_for_the_cache_ttl() {
    let app = spawn_app().await;
    let shopper = Shopper::new(&app).await;
    let lamp = product(&app, "Lamp", "19.99", Some("home")).await;
    shopper.does(&app, "view", &lamp, 1).await;
    settled(&app, "/recommendations", None, &[(&lamp, 1.0)]).await;
    let cached = eventually(PIPELINE, "the answer to be cached", || async {
        let reply = recommend(&app, "/recommendations", None).await;
        (x_cache(&reply) == "hit").then_some(reply)
    })
    .await;
    assert_eq!(cached.body[0]["price"], "19.99");

    let changed_at = Instant::now();
    let patch = app
        .request(
            Method::PATCH,
            Service::Products,
            &format!("/products/{lamp}"),
            Some(json!({"price": "7.5"})),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(patch.status, StatusCode::OK, "{}", patch.text);
    let fresh = eventually(PIPELINE, "the new price", || async {
        let reply = recommend(&app, "/recommendations", None).await;
        (reply.body[0]["price"] == "7.50").then_some(reply)
    })
    .await;

    assert!(
        changed_at.elapsed() < Duration::from_secs(10),
        "the new price took {:?}: stale cache?",
        changed_at.elapsed()
    );
    assert_eq!(fresh.body[0]["product_id"], lamp.as_str());
    assert_eq!(fresh.body[0]["name"], "Lamp");
    assert!(close(fresh.body[0]["score"].as_f64().unwrap(), 1.0));
}

/// An update changes a product's fields but not its place in the cold-start order, which stays
/// by creation time.
#[actix_web::test]
async fn an_update_keeps_the_cold_start_place() {
    let app = spawn_app().await;
    let older = product(&app, "Older", "1.00", Some("home")).await;
    let newer = product(&app, "Newer", "1.00", Some("home")).await;
    settled(
        &app,
        "/recommendations",
        None,
        &[(&older, 0.0), (&newer, 0.0)],
    )
    .await;

    let put = app
        .request(
            Method::PUT,
            Service::Products,
            &format!("/products/{older}"),
            Some(json!({"name": "Older, renamed", "category": null})),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    let renamed = eventually(PIPELINE, "the rename", || async {
        let listed = items(&recommend(&app, "/recommendations", None).await);
        listed
            .iter()
            .any(|i| i["name"] == "Older, renamed")
            .then_some(listed)
    })
    .await;

    assert_eq!(ids(&renamed), [&newer, &older]);
    assert_eq!(renamed[1]["category"], Value::Null);
    let home = items(&recommend(&app, "/recommendations?category=home", None).await);
    assert_eq!(ids(&home), [&newer]);
}

/// Once the pipeline settled, a request never asked before is a miss and the same request again
/// is a hit with the same body; `/metrics` counts both.
#[actix_web::test]
async fn a_repeated_request_is_served_from_the_cache() {
    // The Redis cache alone: the worker micro-cache would answer the second request itself.
    let app = TestApp::builder()
        .with(|settings| settings.recommendation_local_ttl_ms = 0)
        .spawn()
        .await;
    let shopper = Shopper::new(&app).await;
    let toy = product(&app, "Toy", "2.50", Some("toys")).await;
    shopper.does(&app, "cart_add", &toy, 1).await;
    settled(&app, "/recommendations", None, &[(&toy, 3.0)]).await;

    // A flush between the two requests (a late event) would rightly make the second a miss:
    // retry with a limit never asked before.
    let limits = std::cell::Cell::new(10);
    let (first, second) = eventually(PIPELINE, "a cache hit", || {
        limits.set(limits.get() + 1);
        assert!(limits.get() <= 100, "no cache hit for 90 fresh requests");
        let path = format!("/recommendations?limit={}", limits.get());
        let app = &app;
        async move {
            let first = recommend(app, &path, None).await;
            let second = recommend(app, &path, None).await;
            assert_eq!(x_cache(&first), "miss", "{path} was never asked before");
            (x_cache(&second) == "hit").then_some((first, second))
        }
    })
    .await;

    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(first.text, second.text);
    assert_ranking(&items(&second), &[(&toy, 3.0)]);
    let hits = sample(&app, r#"recommendation_cache_requests_total{result="hit"}"#).await;
    let misses = sample(
        &app,
        r#"recommendation_cache_requests_total{result="miss"}"#,
    )
    .await;
    assert!(hits.is_some_and(|n| n >= 1.0), "hits: {hits:?}");
    assert!(misses.is_some_and(|n| n >= 1.0), "misses: {misses:?}");
}

/// Personal recommendations need a token (401), of that user or the admin (403 otherwise);
/// the user and the admin get the same 200 answer; a malformed user id is a 400.
#[actix_web::test]
async fn personal_recommendations_are_for_the_user_and_the_admin() {
    let app = spawn_app().await;
    let (owner, other) = (Shopper::new(&app).await, Shopper::new(&app).await);
    let book = product(&app, "Book", "5.00", Some("books")).await;
    settled(&app, "/recommendations", None, &[(&book, 0.0)]).await;

    let anonymous = recommend(&app, &owner.path(), None).await;
    let forged = recommend(&app, &owner.path(), Some("not-a-token")).await;
    let foreign = recommend(&app, &owner.path(), Some(&other.token)).await;
    let own = recommend(&app, &owner.path(), Some(&owner.token)).await;
    let admin = recommend(&app, &owner.path(), Some(&app.admin_token)).await;
    let malformed = recommend(
        &app,
        "/recommendations/users/not-a-uuid",
        Some(&owner.token),
    )
    .await;

    anonymous.assert_error(401, "unauthorized");
    forged.assert_error(401, "unauthorized");
    foreign.assert_error(403, "forbidden");
    assert_eq!(ids(&items(&own)), [&book]);
    assert!(["hit", "miss"].contains(&x_cache(&own)));
    assert_eq!(admin.body, own.body);
    malformed.assert_error(400, "invalid_request");
}

/// Products the user purchased are left out of their personal ranking (and only theirs).
#[actix_web::test]
async fn personal_ranking_leaves_out_purchased_products() {
    let app = spawn_app().await;
    let (buyer, browser) = (Shopper::new(&app).await, Shopper::new(&app).await);
    let bought = product(&app, "Bought", "10.00", None).await;
    let seen = product(&app, "Seen", "10.00", None).await;
    buyer.does(&app, "purchase", &bought, 1).await;
    buyer.does(&app, "view", &seen, 1).await;
    browser.does(&app, "view", &seen, 1).await;
    settled(
        &app,
        "/recommendations",
        None,
        &[(&bought, 10.0), (&seen, 2.0)],
    )
    .await;

    let mine = items(&recommend(&app, &buyer.path(), Some(&buyer.token)).await);
    let theirs = items(&recommend(&app, &browser.path(), Some(&browser.token)).await);

    assert_ranking(&mine, &[(&seen, 2.0)]);
    assert_ranking(&theirs, &[(&bought, 10.0), (&seen, 2.0)]);
}

/// Categories the user engages with are boosted: score × (1 + share), share being the user's
/// weighted activity in the category over all of it. A book ranked below a toy globally ranks
/// above it for a user who mostly browses books, and unscored books precede newer unscored toys.
#[actix_web::test]
async fn personal_ranking_boosts_the_users_categories() {
    let app = spawn_app().await;
    let (reader, gifter) = (Shopper::new(&app).await, Shopper::new(&app).await);
    let x = product(&app, "X", "8.00", Some("books")).await;
    let y = product(&app, "Y", "8.00", Some("toys")).await;
    let z = product(&app, "Z", "8.00", Some("toys")).await;
    let unscored_book = product(&app, "N", "8.00", Some("books")).await;
    let unscored_toy = product(&app, "M", "8.00", Some("toys")).await;
    reader.does(&app, "view", &x, 1).await;
    reader.does(&app, "cart_add", &x, 2).await;
    reader.does(&app, "view", &z, 1).await;
    gifter.does(&app, "purchase", &y, 1).await;
    let global = [
        (y.as_str(), 10.0),
        (x.as_str(), 7.0),
        (z.as_str(), 1.0),
        (unscored_toy.as_str(), 0.0),
        (unscored_book.as_str(), 0.0),
    ];
    let items_now = settled(&app, "/recommendations", None, &global).await;
    assert_ranking(&items_now, &global);

    let personal = items(&recommend(&app, &reader.path(), Some(&reader.token)).await);

    // The reader's weighted activity: books 1 + 2×3 = 7, toys 1; shares 7/8 and 1/8.
    assert_ranking(
        &personal,
        &[
            (&x, 7.0 * (1.0 + 7.0 / 8.0)),
            (&y, 10.0 * (1.0 + 1.0 / 8.0)),
            (&z, 1.0 * (1.0 + 1.0 / 8.0)),
            (&unscored_book, 0.0),
            (&unscored_toy, 0.0),
        ],
    );
    // The gifter's only activity, a purchase of Y: toys share 1, Y itself left out.
    let gifts = items(&recommend(&app, &gifter.path(), Some(&gifter.token)).await);
    assert_ranking(
        &gifts,
        &[
            (&x, 7.0),
            (&z, 2.0),
            (&unscored_toy, 0.0),
            (&unscored_book, 0.0),
        ],
    );
}

/// A user without any activity gets exactly the global ranking.
#[actix_web::test]
async fn a_user_without_history_gets_the_global_ranking() {
    let app = spawn_app().await;
    let (active, newcomer) = (Shopper::new(&app).await, Shopper::new(&app).await);
    let a = product(&app, "A", "1.00", Some("books")).await;
    let b = product(&app, "B", "2.00", Some("toys")).await;
    let c = product(&app, "C", "3.00", None).await;
    active.does(&app, "purchase", &a, 1).await;
    active.does(&app, "view", &b, 2).await;
    let global = settled(
        &app,
        "/recommendations",
        None,
        &[(&a, 10.0), (&b, 2.0), (&c, 0.0)],
    )
    .await;

    let personal = items(&recommend(&app, &newcomer.path(), Some(&newcomer.token)).await);

    assert_eq!(personal.len(), global.len());
    for (mine, all) in personal.iter().zip(&global) {
        for field in ["product_id", "name", "price", "category"] {
            assert_eq!(mine[field], all[field], "{field}");
        }
        assert!(close(
            mine["score"].as_f64().unwrap(),
            all["score"].as_f64().unwrap()
        ));
    }
    assert_eq!(ids(&personal), [&a, &b, &c]);
}

/// Similar products are those the purchasers and carters of P also purchased or carted,
/// weighted 10 per purchased and 3 per carted unit summed over those users; P itself, products
/// they only viewed and the activity of other users are left out; equal weights go by id.
#[actix_web::test]
async fn similar_products_are_weighted_by_co_purchases_and_cart_adds() {
    let app = spawn_app().await;
    let (u1, u2, u3, u4) = (
        Shopper::new(&app).await,
        Shopper::new(&app).await,
        Shopper::new(&app).await,
        Shopper::new(&app).await,
    );
    let p = product(&app, "P", "1.00", None).await;
    let q = product(&app, "Q", "1.00", None).await;
    let r = product(&app, "R", "1.00", None).await;
    let s = product(&app, "S", "1.00", None).await;
    let t = product(&app, "T", "1.00", None).await;
    let v = product(&app, "V", "1.00", None).await;
    // Buyers of P: u1 (purchase) and u2 (cart add).
    u1.does(&app, "purchase", &p, 1).await;
    u1.does(&app, "purchase", &q, 1).await;
    u1.does(&app, "cart_add", &r, 2).await;
    u2.does(&app, "cart_add", &p, 1).await;
    u2.does(&app, "purchase", &r, 1).await;
    u2.does(&app, "purchase", &v, 1).await;
    u2.does(&app, "view", &s, 4).await;
    // Not buyers of P: u3 only viewed it, u4 never touched it.
    u3.does(&app, "view", &p, 1).await;
    u3.does(&app, "purchase", &t, 1).await;
    u4.does(&app, "purchase", &q, 2).await;
    settled(
        &app,
        "/recommendations",
        None,
        &[
            (&p, 14.0),
            (&q, 30.0),
            (&r, 16.0),
            (&s, 4.0),
            (&t, 10.0),
            (&v, 10.0),
        ],
    )
    .await;

    let similar = items(
        &recommend(
            &app,
            &format!("/recommendations/products/{p}/similar"),
            None,
        )
        .await,
    );

    let (first, second) = if q < v { (&q, &v) } else { (&v, &q) };
    assert_eq!(ids(&similar), [&r, first, second]);
    assert_eq!(
        similar
            .iter()
            .map(|i| i["score"].as_f64().unwrap())
            .collect::<Vec<_>>(),
        [16.0, 10.0, 10.0]
    );
    assert_eq!(
        similar[0],
        json!({"product_id": r, "name": "R", "price": "1.00", "category": null, "score": 16.0})
    );
    let limited = items(
        &recommend(
            &app,
            &format!("/recommendations/products/{p}/similar?limit=1"),
            None,
        )
        .await,
    );
    assert_eq!(ids(&limited), [&r]);
}

/// Similar products of a product nobody bought or carted are `[]`; of an unknown product a
/// JSON 404; of a malformed id a JSON 400.
#[actix_web::test]
async fn similar_products_of_unknown_or_malformed_ids() {
    let app = spawn_app().await;
    let lonely = product(&app, "Lonely", "1.00", None).await;
    settled(&app, "/recommendations", None, &[(&lonely, 0.0)]).await;

    let empty = recommend(
        &app,
        &format!("/recommendations/products/{lonely}/similar"),
        None,
    )
    .await;
    let unknown = recommend(
        &app,
        &format!("/recommendations/products/{}/similar", Uuid::new_v4()),
        None,
    )
    .await;
    let malformed = recommend(&app, "/recommendations/products/42/similar", None).await;

    assert_eq!(items(&empty), Vec::<Value>::new());
    unknown.assert_error(404, "not_found");
    malformed.assert_error(400, "invalid_request");
}

/// Paths under `/recommendations/` that no route serves are JSON 404s.
#[actix_web::test]
async fn unknown_recommendation_routes_are_json_404() {
    let app = spawn_app().await;
    let id = Uuid::new_v4();

    for path in [
        "/recommendations/".to_string(),
        "/recommendations/popular".to_string(),
        "/recommendations/users".to_string(),
        format!("/recommendations/users/{id}/history"),
        format!("/recommendations/products/{id}"),
        format!("/recommendations/products/{id}/similar/more"),
        "/recommendation".to_string(),
    ] {
        let reply = recommend(&app, &path, Some(&app.admin_token)).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            reply.text
        );
        reply.assert_error(404, "not_found");
    }
}

/// A recommendation route asked with a method it does not serve is a JSON 405.
#[actix_web::test]
async fn wrong_method_on_a_recommendation_route_is_json_405() {
    let app = spawn_app().await;

    let reply = app
        .request(
            Method::POST,
            Service::Recommendations,
            "/recommendations",
            Some(json!({})),
            None,
        )
        .await;

    reply.assert_error(405, "method_not_allowed");
}

/// The worker's micro-cache reuses an answer, without reaching the query actor, until its TTL
/// passes or this runtime finishes refreshing the answers to a newer ranking: with a 60 s TTL, a
/// purchase applied here still shows at once. With the TTL at 0 (the other tests) every read
/// reaches the query actor.
#[actix_web::test]
async fn the_micro_cache_reuses_an_answer_until_the_ranking_is_refreshed() {
    let app = TestApp::builder()
        .with(|settings| {
            settings.recommendation_local_ttl_ms = 60_000;
            settings.http_workers = Some(1);
        })
        .spawn()
        .await;
    let handled = |app: &TestApp| {
        let url = format!("{}/metrics", app.url(Service::Recommendations));
        let client = app.client.clone();
        async move {
            let text = client.get(url).send().await.unwrap().text().await.unwrap();
            crate::observability::parse_samples(&text)
                .iter()
                .filter(|s| s.name == "actor_messages_total")
                .filter(|s| s.label("actor") == Some("RecommendationsActor"))
                .filter(|s| s.label("message") == Some("Recommend"))
                .map(|s| s.value)
                .sum::<f64>()
        }
    };
    let product = app.create_product("Micro", json!(1), Some("micro")).await;
    let path = "/recommendations?category=micro";
    // The new product shows (unscored) once applied here, whatever the first read kept.
    let first = eventually(
        Duration::from_secs(30),
        "the product to show through the micro-cache",
        || async {
            let answer = app.get(Service::Recommendations, path, None).await;
            (answer.status == 200 && answer.body[0]["score"].as_f64() == Some(0.0))
                .then_some(answer)
        },
    )
    .await;
    let before = handled(&app).await;
    let again = app.get(Service::Recommendations, path, None).await;
    assert_eq!(again.text, first.text);
    assert_eq!(again.headers["x-cache"], "hit");
    assert_eq!(handled(&app).await, before, "the query actor was not asked");

    let (user, token, _) = app.new_user().await;
    app.post_activity(user, &token, product["id"].as_str().unwrap(), "purchase", 1)
        .await;
    let scored = eventually(
        Duration::from_secs(30),
        "the purchase to show through the micro-cache",
        || async {
            let answer = app.get(Service::Recommendations, path, None).await;
            (answer.status == 200 && answer.body[0]["score"].as_f64() > Some(0.0)).then_some(answer)
        },
    )
    .await;
    let before = handled(&app).await;
    let reused = app.get(Service::Recommendations, path, None).await;
    assert_eq!(reused.text, scored.text, "the new answer is kept in turn");
    assert_eq!(handled(&app).await, before, "the query actor was not asked");
}
