//! The rules the services enforce are the rules their documents declare: for each one, a value
//! the server refuses with `400` is one the served document's schema refuses too (read by a
//! JSON Schema validator), and a value it accepts is one the document accepts. What no schema
//! can say (the time-series window relates two parameters) is in the document's words and its
//! documented `400`.

use recsys::config::Service;
use recsys::validate::{MAX_CATEGORIES, OPTIONAL_TEXT_PATTERN, TEXT_PATTERN};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use super::document;
use crate::helpers::{spawn_app, urlencode, Reply, TestApp};

/// A validator of the value at `pointer` (a JSON pointer into `doc`, e.g.
/// `/components/schemas/RegisterBody`), resolving the document's `$ref`s, checking formats.
fn schema_at(doc: &Value, pointer: &str) -> jsonschema::Validator {
    let mut root = doc.clone();
    root["$ref"] = json!(format!("#{pointer}"));
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("{pointer} does not compile: {e}"))
}

/// The pointer of the schema of `operation`'s query parameter `name` (`operation` is
/// `path`, `method`).
fn parameter(doc: &Value, (path, method): (&str, &str), name: &str) -> String {
    let parameters = doc["paths"][path][method]["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("{method} {path} has no parameters"));
    let index = parameters
        .iter()
        .position(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"));
    // A JSON pointer in a URI fragment: `~` and `/` escaped, braces percent-encoded.
    let escaped = path
        .replace('~', "~0")
        .replace('/', "~1")
        .replace('{', "%7B")
        .replace('}', "%7D");
    format!("/paths/{escaped}/{method}/parameters/{index}/schema")
}

/// Asserts that the server and the document agree on `body`: refused with `400` and by the
/// schema, or answered with a success and valid.
fn agree(case: &str, reply: &Reply, schema: &jsonschema::Validator, body: &Value) {
    let documented = schema.is_valid(body);
    if reply.status == StatusCode::BAD_REQUEST {
        reply.assert_error(400, "invalid_request");
        assert!(
            !documented,
            "{case}: the server refused {body}, the document admits it"
        );
    } else {
        assert!(
            reply.status.is_success(),
            "{case}: {} {}",
            reply.status,
            reply.text
        );
        assert!(
            documented,
            "{case}: the server accepted {body}, the document refuses it"
        );
    }
}

async fn send(app: &TestApp, method: Method, service: Service, path: &str, body: &Value) -> Reply {
    let token = Some(app.admin_token.as_str());
    app.request(method, service, path, Some(body.clone()), token)
        .await
}

#[actix_web::test]
/// A name with a control character, only white space, or more characters than the limit as
/// sent (trimming does not make room) is refused by the users and products services and by
/// their documents, which state the one pattern `validate` checks; a plain name passes both.
async fn names_are_refused_by_the_server_exactly_when_the_document_refuses_them() {
    let app = spawn_app().await;
    let users = document(&app, Service::Users).await;
    let products = document(&app, Service::Products).await;
    for doc in [&users, &products] {
        for body in ["RegisterBody", "CreateBody"] {
            if let Some(name) = doc["components"]["schemas"][body]["properties"].get("name") {
                assert_eq!(name["pattern"], TEXT_PATTERN, "{body}.name");
            }
        }
    }
    let register = schema_at(&users, "/components/schemas/RegisterBody");
    let create = schema_at(&products, "/components/schemas/CreateBody");
    for (name, limit) in [
        ("Ann\u{7}Lee".to_string(), 0),
        ("Ann\n".to_string(), 0),
        ("\u{85}Ann".to_string(), 0),
        (" \u{3000} ".to_string(), 0),
        ("x".to_string(), 100),
        (" x".to_string(), 100),
        ("Ann Lee".to_string(), 0),
        ("Zoë 名前 ✓".to_string(), 0),
    ] {
        // `limit`: the name padded to the users' limit (100) and beyond it by one.
        let names = if limit == 0 {
            vec![name]
        } else {
            vec![
                format!("{name}{}", "x".repeat(limit - name.chars().count())),
                format!("{name}{}", "x".repeat(limit + 1 - name.chars().count())),
            ]
        };
        for name in names {
            let email = format!("n-{}@example.com", Uuid::new_v4().simple());
            let body = json!({"name": name, "email": email, "password": "long-enough"});
            let reply = send(&app, Method::POST, Service::Users, "/users/register", &body).await;
            agree(&format!("register {name:?}"), &reply, &register, &body);
            let body = json!({"name": name, "price": "1.00", "category": "c", "description": "d"});
            let reply = send(&app, Method::POST, Service::Products, "/products", &body).await;
            agree(&format!("product {name:?}"), &reply, &create, &body);
        }
    }
}

#[actix_web::test]
/// A category or description with a control character is refused by the server and the
/// document; only white space is accepted by both (it means none).
async fn optional_texts_are_refused_by_the_server_exactly_when_the_document_refuses_them() {
    let app = spawn_app().await;
    let products = document(&app, Service::Products).await;
    let create = &products["components"]["schemas"]["CreateBody"]["properties"];
    assert_eq!(create["category"]["pattern"], OPTIONAL_TEXT_PATTERN);
    assert_eq!(create["description"]["pattern"], OPTIONAL_TEXT_PATTERN);
    let create = schema_at(&products, "/components/schemas/CreateBody");
    for (field, value) in [
        ("category", "kitchen\u{1b}"),
        ("category", "\t"),
        ("category", "   "),
        ("description", "line one\nline two"),
        ("description", "fine, with 名前"),
    ] {
        let mut body = json!({"name": "Lamp", "price": 5});
        body[field] = json!(value);
        let reply = send(&app, Method::POST, Service::Products, "/products", &body).await;
        agree(&format!("{field} {value:?}"), &reply, &create, &body);
    }
}

#[actix_web::test]
/// The `category` query parameter of the catalog and of the three rankings: a value with a
/// control character, or more than 20 values (empty ones count), is refused by the server and by
/// the parameter's documented schema; 20 values, or empty and blank ones, pass both.
async fn category_parameters_are_refused_exactly_when_the_documents_refuse_them() {
    let app = spawn_app().await;
    let (user, token, _) = app.new_user().await;
    let products = document(&app, Service::Products).await;
    let rankings = document(&app, Service::Recommendations).await;
    let product = Uuid::new_v4();
    let routes = [
        (
            Service::Products,
            &products,
            "/products",
            "/products".to_string(),
        ),
        (
            Service::Recommendations,
            &rankings,
            "/recommendations",
            "/recommendations".to_string(),
        ),
        (
            Service::Recommendations,
            &rankings,
            "/recommendations/users/{user_id}",
            format!("/recommendations/users/{user}"),
        ),
        (
            Service::Recommendations,
            &rankings,
            "/recommendations/products/{product_id}/similar",
            format!("/recommendations/products/{product}/similar"),
        ),
    ];
    let many = |n: usize, value: &str| vec![value.to_string(); n];
    for (service, doc, template, path) in routes {
        let schema = schema_at(doc, &parameter(doc, (template, "get"), "category"));
        for values in [
            vec!["kitchen\u{7}".to_string()],
            vec!["a".into(), "\u{9f}".into()],
            many(MAX_CATEGORIES + 1, ""),
            many(MAX_CATEGORIES + 1, "c"),
            many(MAX_CATEGORIES, "c"),
            vec!["".into(), " ".into(), "home".into()],
            vec!["b".repeat(100)],
            vec!["b".repeat(101)],
        ] {
            let query: Vec<String> = values
                .iter()
                .map(|v| format!("category={}", urlencode(v)))
                .collect();
            let reply = app
                .get(
                    service,
                    &format!("{path}?{}", query.join("&")),
                    Some(&token),
                )
                .await;
            let case = format!("{template} with {} values", values.len());
            let values = json!(values);
            if reply.status == StatusCode::NOT_FOUND {
                // The similar route of an unknown product: only its parameters were judged.
                assert!(schema.is_valid(&values), "{case}: {}", reply.text);
            } else {
                agree(&case, &reply, &schema, &values);
            }
        }
    }
}

#[actix_web::test]
/// An update must change something: `{}`, only `null`s where `null` leaves a field as it is, or
/// only `current_password` are refused by the server and by the documented request body
/// (`anyOf` the fields); a `null` category (which clears it) is a change for both.
async fn an_update_that_changes_nothing_is_refused_by_the_server_and_the_document() {
    let app = spawn_app().await;
    let users = document(&app, Service::Users).await;
    let products = document(&app, Service::Products).await;
    let body_of = |doc: &Value, path: &str, method: &str| {
        let reference = doc["paths"][path][method]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no request body"))
            .trim_start_matches('#')
            .to_string();
        schema_at(doc, &reference)
    };
    let (user, _, _) = app.new_user().await;
    let product = app
        .create_product("Lamp", json!("5.00"), Some("home"))
        .await;
    let product = format!("/products/{}", product["id"].as_str().unwrap());
    let user = format!("/users/{user}");
    for method in [Method::PUT, Method::PATCH] {
        let lower = method.as_str().to_lowercase();
        let schema = body_of(&users, "/users/{id}", &lower);
        for body in [
            json!({}),
            json!({"name": null, "email": null, "password": null}),
            json!({"current_password": "whatever-it-is"}),
            json!({"nickname": "Ann"}),
            json!({"name": "Ann Renamed"}),
        ] {
            let reply = send(&app, method.clone(), Service::Users, &user, &body).await;
            agree(&format!("{method} user {body}"), &reply, &schema, &body);
        }
        let schema = body_of(&products, "/products/{id}", &lower);
        for body in [
            json!({}),
            json!({"name": null, "price": null}),
            json!({"colour": "red"}),
            json!({"category": null}),
            json!({"description": ""}),
            json!({"price": 7}),
        ] {
            let reply = send(&app, method.clone(), Service::Products, &product, &body).await;
            agree(&format!("{method} product {body}"), &reply, &schema, &body);
        }
    }
}

#[actix_web::test]
/// A price given as a string is the documented plain decimal (`"1e2"`, `" 5"`, `"1.000"` are
/// refused by both); a JSON number is judged by its value (`1e2` is 100, accepted by both;
/// `0.001` is refused by both).
async fn prices_are_refused_by_the_server_exactly_when_the_document_refuses_them() {
    let app = spawn_app().await;
    let products = document(&app, Service::Products).await;
    let create = schema_at(&products, "/components/schemas/CreateBody");
    for price in [
        json!("1e2"),
        json!(" 5"),
        json!("1.000"),
        json!("+5"),
        json!("00000000001"),
        json!("5.5"),
        json!(100.0),
        json!(0.001),
        json!(7),
    ] {
        let body = json!({"name": "Priced", "price": price});
        let reply = send(&app, Method::POST, Service::Products, "/products", &body).await;
        agree(&format!("price {price}"), &reply, &create, &body);
    }
}

#[actix_web::test]
/// A quantity written `2.0` is a whole number, as the document's `integer` says: accepted; `2.5`
/// is refused by both.
async fn a_whole_quantity_with_a_zero_fraction_is_an_integer() {
    let app = spawn_app().await;
    let users = document(&app, Service::Users).await;
    let activity = schema_at(&users, "/components/schemas/ActivityBody");
    let (user, token, _) = app.new_user().await;
    let path = format!("/users/{user}/activity");
    for quantity in [json!(2.0), json!(2.5), json!(1000.0), json!(1001)] {
        let body = json!({"type": "purchase", "product_id": Uuid::new_v4(), "quantity": quantity});
        let reply = app
            .request(
                Method::POST,
                Service::Users,
                &path,
                Some(body.clone()),
                Some(&token),
            )
            .await;
        agree(&format!("quantity {quantity}"), &reply, &activity, &body);
    }
}

#[actix_web::test]
/// A time-series window of 31 days is answered (745 hourly buckets) and one of 31 days and a
/// second is a `400`; `from` after `to` too. No schema can relate two parameters, so the document
/// says it in words: `to` is described as at most 31 days after `from`, and the `400` is
/// documented with the error shape. Every RFC 3339 form the documented `date-time` admits is
/// read.
async fn the_time_series_window_is_at_most_31_days_and_the_document_says_so() {
    let app = spawn_app().await;
    let analytics = document(&app, Service::Analytics).await;
    let operation = &analytics["paths"]["/analytics/timeseries"]["get"];
    let to = operation["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "to")
        .expect("a `to` parameter");
    assert_eq!(to["required"], true);
    assert_eq!(to["schema"]["format"], "date-time");
    let described = to["description"].as_str().unwrap_or_default();
    assert!(
        described.contains("not before `from`") && described.contains("at most 31 days after it"),
        "{described}"
    );
    let refused = &operation["responses"]["400"];
    assert!(
        refused["description"]
            .as_str()
            .is_some_and(|d| d.contains("longer than 31 days")),
        "{refused}"
    );
    assert_eq!(
        refused["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
    let date_time = schema_at(
        &analytics,
        &parameter(&analytics, ("/analytics/timeseries", "get"), "from"),
    );

    let series = |from: &str, to: &str| {
        format!(
            "/analytics/timeseries?type=user.activity&from={}&to={}",
            urlencode(from),
            urlencode(to)
        )
    };
    let admin = Some(app.admin_token.as_str());
    let full = app
        .get(
            Service::Analytics,
            &series("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"),
            admin,
        )
        .await;
    assert_eq!(full.status, StatusCode::OK, "{}", full.text);
    assert_eq!(full.body.as_array().map(Vec::len), Some(31 * 24 + 1));
    for (from, to, message) in [
        (
            "2026-01-01T00:00:00Z",
            "2026-02-01T00:00:01Z",
            "the window is longer than 31 days",
        ),
        (
            "2026-01-02T00:00:00Z",
            "2026-01-01T00:00:00Z",
            "from is after to",
        ),
    ] {
        let reply = app.get(Service::Analytics, &series(from, to), admin).await;
        reply.assert_error(400, "invalid_request");
        assert_eq!(reply.body["error"]["message"], message);
        assert!(date_time.is_valid(&json!(from)) && date_time.is_valid(&json!(to)));
    }
    for instant in [
        "2026-01-01T00:00:00Z",
        "2026-01-01t00:00:00z",
        "2026-01-01T00:00:00.123456789Z",
        "2026-01-01T05:30:00+05:30",
        "2025-12-31T23:00:00-01:00",
    ] {
        assert!(date_time.is_valid(&json!(instant)), "{instant}");
        let reply = app
            .get(Service::Analytics, &series(instant, instant), admin)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{instant}: {}", reply.text);
    }
}
