//! The products service over HTTP: admin-only writes, exact prices, public reads, keyset
//! pagination, partial updates and soft deletion.

use std::collections::HashSet;

use recsys::config::Service;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;

/// The id of a product JSON.
fn id_of(product: &Value) -> String {
    product["id"].as_str().expect("product id").to_string()
}

/// The path of a product.
fn product_path(product: &Value) -> String {
    format!("/products/{}", id_of(product))
}

/// `POST /products` with a literal JSON body (so number literals reach the server as written).
async fn post_literal(app: &TestApp, body: &str, token: Option<&str>) -> Reply {
    let mut request = app
        .client
        .post(format!("{}/products", app.url(Service::Products)))
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    read_reply(request.send().await.expect("request sent")).await
}

/// Creates a product as admin with `price` given as the literal JSON text `price`; answers the
/// reply.
async fn create_with_price(app: &TestApp, price: &str) -> Reply {
    post_literal(
        app,
        &format!(r#"{{"name": "Priced", "price": {price}}}"#),
        Some(&app.admin_token),
    )
    .await
}

/// Every page of `GET /products?<query>` (following `next`); answers the pages.
async fn all_pages(app: &TestApp, query: &str) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/products?{query}&after={a}"),
            None => format!("/products?{query}"),
        };
        let reply = app.get(Service::Products, &path, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
        after = reply.body["next"].as_str().map(str::to_string);
        pages.push(reply.body);
        if after.is_none() {
            return pages;
        }
        assert!(pages.len() <= 100, "pagination does not end");
    }
}

/// The ids of the items of a page.
fn item_ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(id_of)
        .collect()
}

/// An admin creates a product: 201 with the full shape, version 1, the price as a string.
#[actix_web::test]
async fn admin_creates_a_product() {
    let app = spawn_app().await;

    let reply = app
        .post(
            Service::Products,
            "/products",
            json!({"name": "Lamp", "price": 19.99, "category": "home", "description": "A desk lamp"}),
            Some(&app.admin_token),
        )
        .await;

    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(
        keys(&reply.body),
        [
            "category",
            "created_at",
            "description",
            "id",
            "name",
            "price",
            "updated_at",
            "version"
        ]
    );
    assert!(id_of(&reply.body).parse::<Uuid>().is_ok());
    assert_eq!(reply.body["name"], "Lamp");
    assert_eq!(reply.body["price"], "19.99");
    assert_eq!(reply.body["category"], "home");
    assert_eq!(reply.body["description"], "A desk lamp");
    assert_eq!(reply.body["version"], 1);
    assert_eq!(reply.body["created_at"], reply.body["updated_at"]);
}

/// Prices keep their exact decimal value with two places, whether sent as a number or a
/// string, including values a float cannot represent; the stored value reads back the same.
#[actix_web::test]
async fn prices_are_exact_two_place_decimals() {
    let app = spawn_app().await;
    let cases = [
        ("19.99", "19.99"),
        (r#""0.10""#, "0.10"),
        ("5", "5.00"),
        ("1234567.89", "1234567.89"),
        ("0.3", "0.30"),
        ("0.1", "0.10"),
        (r#""1234567.89""#, "1234567.89"),
        ("9999999999.99", "9999999999.99"),
        ("0.01", "0.01"),
        ("1e2", "100.00"),
    ];

    for (literal, expected) in cases {
        let created = create_with_price(&app, literal).await;

        assert_eq!(
            created.status,
            StatusCode::CREATED,
            "{literal}: {}",
            created.text
        );
        assert_eq!(created.body["price"], expected, "{literal}");
        let read = app
            .get(Service::Products, &product_path(&created.body), None)
            .await;
        assert_eq!(read.body["price"], expected, "{literal} read back");
    }
}

/// A free product's price is still a two-place string: `0` and `"0.00"` answer `"0.00"`.
#[actix_web::test]
async fn zero_price_is_a_two_place_string() {
    let app = spawn_app().await;

    for literal in ["0", r#""0.00""#] {
        let created = create_with_price(&app, literal).await;

        assert_eq!(
            created.status,
            StatusCode::CREATED,
            "{literal}: {}",
            created.text
        );
        assert_eq!(created.body["price"], "0.00", "{literal}");
        let read = app
            .get(Service::Products, &product_path(&created.body), None)
            .await;
        assert_eq!(read.body["price"], "0.00", "{literal} read back");
    }
}

/// `POST /products/create` is an alias of `POST /products`.
#[actix_web::test]
async fn create_alias_creates_a_product() {
    let app = spawn_app().await;

    let reply = app
        .post(
            Service::Products,
            "/products/create",
            json!({"name": "Mug", "price": "4.50"}),
            Some(&app.admin_token),
        )
        .await;

    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.body["price"], "4.50");
    assert_eq!(reply.body["version"], 1);
    let read = app
        .get(Service::Products, &product_path(&reply.body), None)
        .await;
    assert_eq!(read.body, reply.body);
}

/// Create, update and delete without a token are 401 and change nothing.
#[actix_web::test]
async fn writes_without_a_token_are_unauthorized() {
    let app = spawn_app().await;
    let product = app.create_product("Lamp", json!("10.00"), None).await;
    let path = product_path(&product);

    let create = app
        .post(
            Service::Products,
            "/products",
            json!({"name": "X", "price": 1}),
            None,
        )
        .await;
    let update = app
        .request(
            Method::PATCH,
            Service::Products,
            &path,
            Some(json!({"name": "X"})),
            None,
        )
        .await;
    let delete = app
        .request(Method::DELETE, Service::Products, &path, None, None)
        .await;

    create.assert_error(401, "unauthorized");
    update.assert_error(401, "unauthorized");
    delete.assert_error(401, "unauthorized");
    assert_eq!(app.count("products").await, 1);
    assert_eq!(app.get(Service::Products, &path, None).await.body, product);
}

/// Create, update and delete with a user's token are 403 and change nothing.
#[actix_web::test]
async fn writes_with_a_user_token_are_forbidden() {
    let app = spawn_app().await;
    let (_, token, _) = app.new_user().await;
    let product = app.create_product("Lamp", json!("10.00"), None).await;
    let path = product_path(&product);

    let create = app
        .post(
            Service::Products,
            "/products",
            json!({"name": "X", "price": 1}),
            Some(&token),
        )
        .await;
    let update = app
        .request(
            Method::PUT,
            Service::Products,
            &path,
            Some(json!({"name": "X"})),
            Some(&token),
        )
        .await;
    let delete = app
        .request(Method::DELETE, Service::Products, &path, None, Some(&token))
        .await;

    create.assert_error(403, "forbidden");
    update.assert_error(403, "forbidden");
    delete.assert_error(403, "forbidden");
    assert_eq!(app.count("products").await, 1);
    assert_eq!(app.get(Service::Products, &path, None).await.body, product);
}

/// Negative, over-precise, non-numeric, null, missing and too-large prices are 400.
#[actix_web::test]
async fn bad_prices_are_rejected() {
    let app = spawn_app().await;

    for literal in [
        "-1",
        "1.234",
        r#""abc""#,
        "true",
        "null",
        "10000000000",
        r#""-0.01""#,
        r#""""#,
        "{}",
        "[1]",
    ] {
        let reply = create_with_price(&app, literal).await;

        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{literal}: {}",
            reply.text
        );
        reply.assert_error(400, "invalid_request");
    }
    let missing = post_literal(&app, r#"{"name": "No price"}"#, Some(&app.admin_token)).await;
    missing.assert_error(400, "invalid_request");
    assert_eq!(app.count("products").await, 0);
}

/// A missing, blank or over-200-character name is 400; 200 characters is accepted.
#[actix_web::test]
async fn missing_blank_or_overlong_names_are_rejected() {
    let app = spawn_app().await;

    for body in [
        json!({"price": "1.00"}),
        json!({"name": "  ", "price": "1.00"}),
        json!({"name": "n".repeat(201), "price": "1.00"}),
        json!({"name": 5, "price": "1.00"}),
    ] {
        let reply = app
            .post(
                Service::Products,
                "/products",
                body.clone(),
                Some(&app.admin_token),
            )
            .await;

        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text
        );
        reply.assert_error(400, "invalid_request");
    }
    assert_eq!(app.count("products").await, 0);
    let longest = app
        .create_product(&"n".repeat(200), json!("1.00"), None)
        .await;
    assert_eq!(longest["name"], "n".repeat(200));
}

/// A product is readable without a token.
#[actix_web::test]
async fn get_product_is_public() {
    let app = spawn_app().await;
    let product = app
        .create_product("Lamp", json!("19.99"), Some("home"))
        .await;

    let reply = app
        .get(Service::Products, &product_path(&product), None)
        .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body, product);
}

/// An id no product has is 404 `not_found`.
#[actix_web::test]
async fn unknown_product_is_not_found() {
    let app = spawn_app().await;

    let reply = app
        .get(
            Service::Products,
            &format!("/products/{}", Uuid::new_v4()),
            None,
        )
        .await;

    reply.assert_error(404, "not_found");
}

/// An id that is not a UUID is 400.
#[actix_web::test]
async fn malformed_product_id_is_bad_request() {
    let app = spawn_app().await;

    let reply = app.get(Service::Products, "/products/42", None).await;

    reply.assert_error(400, "invalid_request");
}

/// Pages of 2 over 5 products: 3 pages linked by `next`/`after`, every product exactly once in
/// creation order, and `next: null` on the last page.
#[actix_web::test]
async fn listing_walks_every_product_once_in_creation_order() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(id_of(
            &app.create_product(&format!("P{i}"), json!(i), None).await,
        ));
    }

    let pages = all_pages(&app, "limit=2").await;

    let sizes: Vec<usize> = pages.iter().map(|p| item_ids(p).len()).collect();
    assert_eq!(sizes, [2, 2, 1]);
    let listed: Vec<String> = pages.iter().flat_map(item_ids).collect();
    assert_eq!(listed, created);
    assert_eq!(pages[0]["next"], created[1]);
    assert_eq!(pages[1]["next"], created[3]);
    assert_eq!(pages[2]["next"], Value::Null);
}

/// A page that ends exactly at the last product still says `next: null`.
#[actix_web::test]
async fn listing_with_an_exact_last_page_ends_with_null_next() {
    let app = spawn_app().await;
    for i in 0..4 {
        app.create_product(&format!("P{i}"), json!(i), None).await;
    }

    let pages = all_pages(&app, "limit=2").await;

    assert_eq!(pages.len(), 2);
    assert_eq!(pages[1]["next"], Value::Null);
}

/// `category=` lists only that category's products (across pages).
#[actix_web::test]
async fn listing_filters_by_category() {
    let app = spawn_app().await;
    let mut books = Vec::new();
    for i in 0..3 {
        books.push(id_of(
            &app.create_product(&format!("Book {i}"), json!(i), Some("books"))
                .await,
        ));
        app.create_product(&format!("Game {i}"), json!(i), Some("games"))
            .await;
    }
    app.create_product("Loose", json!(1), None).await;

    let pages = all_pages(&app, "category=books&limit=2").await;

    let listed: Vec<String> = pages.iter().flat_map(item_ids).collect();
    assert_eq!(listed, books);
    assert!(pages
        .iter()
        .flat_map(|p| p["items"].as_array().unwrap().clone())
        .all(|item| item["category"] == "books"));
}

/// A repeated `category` lists the products of any of them (across pages, in creation order);
/// an unknown one among them matches nothing; 21 categories are a 400.
#[actix_web::test]
async fn listing_filters_by_several_categories() {
    let app = spawn_app().await;
    let mut wanted = Vec::new();
    for i in 0..3 {
        wanted.push(id_of(
            &app.create_product(&format!("Book {i}"), json!(i), Some("books"))
                .await,
        ));
        app.create_product(&format!("Game {i}"), json!(i), Some("games"))
            .await;
        wanted.push(id_of(
            &app.create_product(&format!("Tool {i}"), json!(i), Some("tools"))
                .await,
        ));
    }
    app.create_product("Loose", json!(1), None).await;

    let pages = all_pages(
        &app,
        "category=books&category=tools&category=nowhere&limit=2",
    )
    .await;

    let listed: Vec<String> = pages.iter().flat_map(item_ids).collect();
    assert_eq!(listed, wanted);
    let too_many: Vec<String> = (0..21).map(|i| format!("category=c{i}")).collect();
    app.get(
        Service::Products,
        &format!("/products?{}", too_many.join("&")),
        None,
    )
    .await
    .assert_error(400, "invalid_request");
}

/// `limit` of 0, 101, -1 or a non-number is 400; `after` that is not a UUID too.
#[actix_web::test]
async fn listing_rejects_bad_limits() {
    let app = spawn_app().await;

    for query in [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=abc",
        "after=nope",
    ] {
        let reply = app
            .get(Service::Products, &format!("/products?{query}"), None)
            .await;

        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query}: {}",
            reply.text
        );
        reply.assert_error(400, "invalid_request");
    }
    let most = app
        .get(Service::Products, "/products?limit=100", None)
        .await;
    assert_eq!(most.status, StatusCode::OK, "{}", most.text);
}

/// Without `limit`, a page holds 20 products and points to the rest.
#[actix_web::test]
async fn listing_defaults_to_twenty_items() {
    let app = spawn_app().await;
    for i in 0..21 {
        app.create_product(&format!("P{i}"), json!(i), None).await;
    }

    let first = app.get(Service::Products, "/products", None).await;

    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(item_ids(&first.body).len(), 20);
    let next = first.body["next"].as_str().expect("a next page");
    let rest = app
        .get(Service::Products, &format!("/products?after={next}"), None)
        .await;
    assert_eq!(item_ids(&rest.body).len(), 1);
    assert_eq!(rest.body["next"], Value::Null);
}

/// PUT and PATCH change only the fields given and bump the version by one each time.
#[actix_web::test]
async fn partial_updates_bump_the_version_and_keep_other_fields() {
    let app = spawn_app().await;
    let created = app
        .post(
            Service::Products,
            "/products",
            json!({"name": "Lamp", "price": "19.99", "category": "home", "description": "Bright"}),
            Some(&app.admin_token),
        )
        .await
        .body;
    let path = product_path(&created);

    let put = app
        .request(
            Method::PUT,
            Service::Products,
            &path,
            Some(json!({"price": 24.5})),
            Some(&app.admin_token),
        )
        .await;
    let patch = app
        .request(
            Method::PATCH,
            Service::Products,
            &path,
            Some(json!({"name": "Big Lamp"})),
            Some(&app.admin_token),
        )
        .await;

    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    assert_eq!(put.body["version"], 2);
    assert_eq!(put.body["price"], "24.50");
    assert_eq!(put.body["name"], "Lamp");
    assert_eq!(patch.status, StatusCode::OK, "{}", patch.text);
    assert_eq!(patch.body["version"], 3);
    assert_eq!(patch.body["name"], "Big Lamp");
    assert_eq!(patch.body["price"], "24.50");
    assert_eq!(patch.body["category"], "home");
    assert_eq!(patch.body["description"], "Bright");
    assert_eq!(patch.body["created_at"], created["created_at"]);
    assert_ne!(patch.body["updated_at"], created["updated_at"]);
    assert_eq!(
        app.get(Service::Products, &path, None).await.body,
        patch.body
    );
}

/// Concurrent updates of one product each bump the version exactly once: no lost update.
#[actix_web::test]
async fn concurrent_updates_each_bump_the_version_once() {
    let app = spawn_app().await;
    let created = app.create_product("Lamp", json!("19.99"), None).await;
    let path = product_path(&created);

    let replies = futures_util::future::join_all((0..10).map(|i| {
        app.request(
            Method::PATCH,
            Service::Products,
            &path,
            Some(json!({"name": format!("Lamp {i}")})),
            Some(&app.admin_token),
        )
    }))
    .await;

    let mut versions: Vec<i64> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            r.body["version"].as_i64().unwrap()
        })
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (2..=11).collect::<Vec<i64>>());
    assert_eq!(
        app.get(Service::Products, &path, None).await.body["version"],
        11
    );
}

/// `category: null` clears the category and leaves the rest.
#[actix_web::test]
async fn null_category_clears_it() {
    let app = spawn_app().await;
    let created = app
        .create_product("Lamp", json!("19.99"), Some("home"))
        .await;

    let reply = app
        .request(
            Method::PATCH,
            Service::Products,
            &product_path(&created),
            Some(json!({"category": null})),
            Some(&app.admin_token),
        )
        .await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["category"], Value::Null);
    assert_eq!(reply.body["name"], "Lamp");
    assert_eq!(reply.body["price"], "19.99");
    assert_eq!(reply.body["version"], 2);
}

/// An update naming no field is 400 and leaves the version alone.
#[actix_web::test]
async fn empty_product_update_is_rejected() {
    let app = spawn_app().await;
    let created = app.create_product("Lamp", json!("19.99"), None).await;
    let path = product_path(&created);

    for method in [Method::PUT, Method::PATCH] {
        let reply = app
            .request(
                method,
                Service::Products,
                &path,
                Some(json!({})),
                Some(&app.admin_token),
            )
            .await;

        reply.assert_error(400, "invalid_request");
    }
    assert_eq!(
        app.get(Service::Products, &path, None).await.body["version"],
        1
    );
}

/// An update with an invalid price or name is 400 and changes nothing.
#[actix_web::test]
async fn invalid_product_update_is_rejected() {
    let app = spawn_app().await;
    let created = app.create_product("Lamp", json!("19.99"), None).await;
    let path = product_path(&created);

    for body in [
        json!({"price": -1}),
        json!({"price": "1.001"}),
        json!({"name": ""}),
    ] {
        let reply = app
            .request(
                Method::PATCH,
                Service::Products,
                &path,
                Some(body.clone()),
                Some(&app.admin_token),
            )
            .await;

        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text
        );
        reply.assert_error(400, "invalid_request");
    }
    assert_eq!(app.get(Service::Products, &path, None).await.body, created);
}

/// Updating an id no product has is 404.
#[actix_web::test]
async fn updating_unknown_product_is_not_found() {
    let app = spawn_app().await;

    let reply = app
        .request(
            Method::PUT,
            Service::Products,
            &format!("/products/{}", Uuid::new_v4()),
            Some(json!({"name": "Ghost"})),
            Some(&app.admin_token),
        )
        .await;

    reply.assert_error(404, "not_found");
}

/// A deleted product is gone: 204, then GET, DELETE and PUT are 404 and listings omit it.
#[actix_web::test]
async fn deleted_product_is_gone_everywhere() {
    let app = spawn_app().await;
    let kept = app.create_product("Kept", json!(1), Some("home")).await;
    let doomed = app.create_product("Doomed", json!(2), Some("home")).await;
    let path = product_path(&doomed);

    let delete = app
        .request(
            Method::DELETE,
            Service::Products,
            &path,
            None,
            Some(&app.admin_token),
        )
        .await;

    assert_eq!(delete.status, StatusCode::NO_CONTENT, "{}", delete.text);
    assert!(delete.text.is_empty());
    app.get(Service::Products, &path, None)
        .await
        .assert_error(404, "not_found");
    app.request(
        Method::DELETE,
        Service::Products,
        &path,
        None,
        Some(&app.admin_token),
    )
    .await
    .assert_error(404, "not_found");
    app.request(
        Method::PUT,
        Service::Products,
        &path,
        Some(json!({"name": "Back"})),
        Some(&app.admin_token),
    )
    .await
    .assert_error(404, "not_found");
    for query in ["limit=100", "category=home"] {
        let listed: HashSet<String> = all_pages(&app, query)
            .await
            .iter()
            .flat_map(item_ids)
            .collect();
        assert_eq!(listed, HashSet::from([id_of(&kept)]), "{query}");
    }
}
