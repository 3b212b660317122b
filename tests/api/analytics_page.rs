//! The analytics page (`GET /` on the analytics port), served as the runtime serves it and used
//! in headless Chromium through WebDriver ([`crate::webdriver`]) the way an admin uses it: log in
//! (at the users port, a cross-origin call with a real CORS preflight), then read the numbers;
//! the test asks the API for the same numbers and compares.
//!
//! Chromium opens the page through a pass-through proxy of the test's own (it copies each
//! request to the analytics port and the answer back, unchanged): the page's origin must be in
//! `CORS_ORIGINS` when the runtime starts, and the runtime picks its ports only then, while the
//! proxy's origin is known before. The page still names the runtime's users port (it takes the
//! host name the browser used and the port the runtime's users service listens on), so the login
//! goes straight to the users service.

use std::net::TcpListener;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use fantoccini::Locator;
use recsys::config::{Secret, Service};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::*;
use crate::webdriver::Browser;

/// The test's own origin: every request it gets goes on to the analytics port, unchanged.
struct Proxy {
    origin: String,
    target: Arc<OnceLock<String>>,
    handle: ServerHandle,
}

impl Proxy {
    /// Listens on an OS-picked loopback port; forwards once [`Proxy::forward_to`] was called.
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let origin = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let target: Arc<OnceLock<String>> = Arc::default();
        let client = reqwest::Client::new();
        let forwarding = target.clone();
        let server = HttpServer::new(move || {
            let (target, client) = (forwarding.clone(), client.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (target, client) = (target.clone(), client.clone());
                async move { forward(&client, target.get().expect("a target"), &req, body).await }
            }))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            origin,
            target,
            handle,
        }
    }

    fn forward_to(&self, url: String) {
        self.target.set(url).expect("one target");
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// `req` sent on to `target`; its answer as it came, without the headers of the connection.
async fn forward(
    client: &reqwest::Client,
    target: &str,
    req: &HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
    let mut request = client.request(method, format!("{target}{path}")).body(body);
    for name in ["authorization", "content-type", "accept"] {
        if let Some(value) = req.headers().get(name) {
            request = request.header(name, value.as_bytes());
        }
    }
    let response = request.send().await.expect("the analytics port answers");
    let status = actix_web::http::StatusCode::from_u16(response.status().as_u16()).unwrap();
    let mut answer = HttpResponse::build(status);
    for (name, value) in response.headers() {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            answer.append_header((name.as_str(), value.as_bytes()));
        }
    }
    answer.body(response.bytes().await.expect("the answer's body"))
}

/// The `X-API-Key` of the test runtimes (a backfill with `occurred_at` needs it).
const KEY: &str = "analytics-page-test-key-of-at-least-32-bytes";

/// A runtime whose `CORS_ORIGINS` is the proxy's origin, and the proxy forwarding to it.
async fn runtime_behind_proxy() -> (TestApp, Proxy) {
    let proxy = Proxy::start();
    let origin = proxy.origin.clone();
    let app = TestApp::builder()
        .with(|settings| {
            settings.cors_origins = vec![origin];
            settings.api_key = Some(Secret::new(KEY));
        })
        .spawn()
        .await;
    proxy.forward_to(app.url(Service::Analytics));
    (app, proxy)
}

/// Opens the page and logs in with `email` and `password` as a person does.
async fn log_in(browser: &Browser, proxy: &Proxy, email: &str, password: &str) {
    browser.goto(&format!("{}/", proxy.origin)).await;
    browser.fill("#email", email).await;
    browser.fill("#password", password).await;
    browser.click("#login-button").await;
}

/// `GET path` on the analytics port as the admin; asserts `200`.
async fn analytics(app: &TestApp, path: &str) -> Value {
    let reply = app
        .get(Service::Analytics, path, Some(&app.admin_token))
        .await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text);
    reply.body
}

/// A JSON value as the page writes it: numbers and strings as they are, `null` as `—`.
fn shown(value: &Value) -> String {
    match value {
        Value::Null => "—".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Chooses `value` in the `<select>` matching `css` (the page reloads that part).
async fn choose(browser: &Browser, css: &str, value: &str) {
    browser
        .client()
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .select_by_value(value)
        .await
        .unwrap_or_else(|e| panic!("choosing {value} in {css}: {e}"));
}

/// What the chart shows: its window and resolution, and each bar's time and count.
async fn chart(browser: &Browser) -> Value {
    browser
        .eval(
            "const chart = document.getElementById('series-chart');
             return {type: chart.dataset.type, from: chart.dataset.from, to: chart.dataset.to,
               resolution: chart.dataset.resolution,
               points: [...chart.querySelectorAll('rect.bar')]
                 .map(bar => [bar.dataset.at, Number(bar.dataset.count)])};",
            vec![],
        )
        .await
}

/// The series the API gives for the chart's type and window, in the chart's resolution (a day
/// adds up its hours).
async fn series_from_api(app: &TestApp, chart: &Value) -> Vec<(String, i64)> {
    let query = format!(
        "/analytics/timeseries?type={}&from={}&to={}",
        chart["type"].as_str().unwrap(),
        chart["from"].as_str().unwrap(),
        chart["to"].as_str().unwrap(),
    );
    let buckets = analytics(app, &query).await;
    let hourly = buckets.as_array().unwrap().iter().map(|b| {
        (
            b["hour"].as_str().unwrap().to_string(),
            b["count"].as_i64().unwrap(),
        )
    });
    if chart["resolution"] != "day" {
        return hourly.collect();
    }
    let mut days: Vec<(String, i64)> = Vec::new();
    for (hour, count) in hourly {
        let day = hour[..10].to_string();
        match days.last_mut() {
            Some((last, sum)) if *last == day => *sum += count,
            _ => days.push((day, count)),
        }
    }
    days
}

/// The points of `chart` as `(time, count)`.
fn points(chart: &Value) -> Vec<(String, i64)> {
    chart["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_i64().unwrap()))
        .collect()
}

/// The fields a lookup shows (`#product-result` or `#user-result`), once it shows `id`.
async fn looked_up(browser: &Browser, result: &str, id_field: &str, id: &str) -> Value {
    browser
        .wait_for(
            &format!("#{result} dd[data-field={id_field}]"),
            &format!("the lookup of {id}"),
            |text| text == id,
        )
        .await;
    browser
        .eval(
            "return Object.fromEntries([...document.querySelectorAll(arguments[0])]
               .map(dd => [dd.dataset.field, dd.textContent]));",
            vec![json!(format!("#{result} dd"))],
        )
        .await
}

/// The rows of the top products table once its caption says `caption`, each with the product's
/// id and counters as shown.
async fn top_rows(browser: &Browser, caption: &str) -> Vec<Value> {
    browser
        .wait_for("#top-caption", caption, |text| text.contains(caption))
        .await;
    let rows = browser
        .eval(
            "return [...document.querySelectorAll('#top-table tbody tr')].map(row =>
               Object.assign({product_id: row.dataset.productId},
                 Object.fromEntries([...row.querySelectorAll('td[data-counter]')]
                   .map(td => [td.dataset.counter, td.textContent]))));",
            vec![],
        )
        .await;
    rows.as_array().unwrap().clone()
}

/// The table shows the products of `top` (an API answer) in its order, with their counters.
fn assert_top_shown(rows: &[Value], top: &Value) {
    let top = top.as_array().unwrap();
    assert_eq!(rows.len(), top.len(), "top rows: {rows:?}, API: {top:?}");
    for (row, product) in rows.iter().zip(top) {
        assert_eq!(row["product_id"], product["product_id"], "order: {rows:?}");
        for counter in [
            "views",
            "cart_adds",
            "cart_removes",
            "purchases",
            "units_sold",
            "updates",
        ] {
            assert_eq!(row[counter], shown(&product[counter]), "{counter} of {row}");
        }
    }
}

/// Every field of `expected` (an API answer) as the page shows it in `seen`.
fn assert_fields_shown(what: &str, expected: &Value, seen: &Value) {
    let expected = expected.as_object().unwrap();
    assert_eq!(
        expected.len(),
        seen.as_object().map_or(0, |s| s.len()),
        "{what}: the page shows {seen}, the API gives {expected:?}"
    );
    for (field, value) in expected {
        assert_eq!(seen[field], shown(value), "{what}: {field}");
    }
}

/// The admin logs in on the page and sees what the API gives: the summary figures and events by
/// type, the top products by another counter, the hourly and the daily series in their chart,
/// and a product and a user looked up.
#[actix_web::test]
async fn the_admin_sees_the_numbers_the_api_gives() {
    let (app, proxy) = runtime_behind_proxy().await;
    let product = |name: &'static str, price: &'static str, category: &'static str| {
        let app = &app;
        async move {
            let body = app.create_product(name, json!(price), Some(category)).await;
            body["id"].as_str().unwrap().parse::<Uuid>().unwrap()
        }
    };
    let lamp = product("Desk lamp", "24.90", "lighting").await;
    let mug = product("Mug", "7.50", "kitchen").await;
    let kettle = product("Kettle", "39.00", "kitchen").await;
    let (ann, ann_token, _) = app.new_user().await;
    let (bob, bob_token, _) = app.new_user().await;
    for (user, token, product, kind, quantity) in [
        (ann, &ann_token, lamp, "purchase", 2),
        (ann, &ann_token, kettle, "view", 1),
        (ann, &ann_token, mug, "cart_add", 1),
        (bob, &bob_token, lamp, "view", 1),
        (bob, &bob_token, lamp, "purchase", 1),
        (bob, &bob_token, kettle, "purchase", 3),
        (bob, &bob_token, mug, "view", 1),
        (bob, &bob_token, mug, "view", 1),
    ] {
        app.post_activity(user, token, product, kind, quantity)
            .await;
    }
    // Three days ago, a purchase of 5 mugs: in the totals, outside the last 24 hours.
    let backfill = json!({"actions": [{"user_id": ann, "type": "purchase", "product_id": mug,
        "quantity": 5, "occurred_at": chrono::Utc::now() - chrono::TimeDelta::days(3)}]});
    let reply = app
        .client
        .post(format!("{}/activity/batch", app.url(Service::Users)))
        .header("X-API-Key", KEY)
        .json(&backfill)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 202, "{}", reply.text().await.unwrap());
    eventually(
        Duration::from_secs(20),
        "analytics counts the activity",
        || {
            let app = &app;
            async move {
                let summary = analytics(app, "/analytics/summary").await;
                (summary["events_by_type"]["user.activity"] == 9
                    && summary["events_by_type"]["user.registered"] == 3
                    && summary["events_by_type"]["product.created"] == 3)
                    .then_some(())
            }
        },
    )
    .await;
    let browser = Browser::start().await;

    log_in(
        &browser,
        &proxy,
        app.settings.admin_email.as_deref().unwrap(),
        ADMIN_PASSWORD,
    )
    .await;

    // The summary.
    browser
        .wait_for(
            "#summary-figures .figure[data-field=users] .value",
            "the summary",
            |text| !text.is_empty(),
        )
        .await;
    let summary = analytics(&app, "/analytics/summary").await;
    let seen = browser
        .eval(
            "const figures = Object.fromEntries([...document.querySelectorAll('#summary-figures .figure')]
               .map(f => [f.dataset.field, f.querySelector('.value').textContent]));
             const types = Object.fromEntries([...document.querySelectorAll('#events-by-type tbody tr')]
               .map(r => [r.dataset.type, r.querySelector('td').textContent]));
             return {figures, types};",
            vec![],
        )
        .await;
    eprintln!("the page shows {seen}; the API gives {summary}");
    for field in [
        "users",
        "products",
        "events_total",
        "events_last_hour",
        "active_users_last_hour",
    ] {
        assert_eq!(seen["figures"][field], shown(&summary[field]), "{field}");
    }
    assert_fields_shown("events by type", &summary["events_by_type"], &seen["types"]);

    // The top products by units sold: of all time (the backfilled mugs first), then of the
    // last 24 hours (the lamp and the kettle tie at 3 units; the lamp's id is the smaller).
    choose(&browser, "#top-by", "units_sold").await;
    browser
        .wait_for(
            "#top-table thead th.ranked",
            "the table ranked by units sold",
            |text| text == "units sold",
        )
        .await;
    let rows = top_rows(&browser, "since the first event").await;
    let top = analytics(&app, "/analytics/products/top?by=units_sold&limit=10").await;
    assert_top_shown(&rows, &top);
    assert_eq!(rows[0]["product_id"], mug.to_string(), "{rows:?}");
    choose(&browser, "#top-window", "24h").await;
    let rows = top_rows(&browser, "last 24 hours").await;
    let top = analytics(
        &app,
        "/analytics/products/top?by=units_sold&limit=10&window=24h",
    )
    .await;
    eprintln!("top by units_sold of 24 hours: the page shows {rows:?}");
    assert_top_shown(&rows, &top);
    assert_eq!(rows[0]["product_id"], lamp.to_string(), "{rows:?}");
    assert_eq!(rows[2]["units_sold"], "0", "the mugs are older: {rows:?}");

    // The hourly series of the last 24 hours, then the daily one of the last 7 days.
    let hourly = chart(&browser).await;
    assert_eq!(hourly["resolution"], "hour", "{hourly}");
    let expected = series_from_api(&app, &hourly).await;
    assert_eq!(points(&hourly), expected);
    assert_eq!(expected.iter().map(|(_, c)| c).sum::<i64>(), 8);
    choose(&browser, "#series-window", "168").await;
    choose(&browser, "#series-resolution", "day").await;
    let daily = eventually(PAGE, "the daily chart of 7 days", || {
        let browser = &browser;
        async move {
            let chart = chart(browser).await;
            (chart["resolution"] == "day" && points(&chart).len() >= 7).then_some(chart)
        }
    })
    .await;
    let expected = series_from_api(&app, &daily).await;
    assert_eq!(points(&daily), expected);
    assert_eq!(expected.iter().map(|(_, c)| c).sum::<i64>(), 9);

    // A product: a click on the lamp in the table.
    browser
        .click(&format!("#top-table tr[data-product-id=\"{lamp}\"] button"))
        .await;
    let seen = looked_up(&browser, "product-result", "product_id", &lamp.to_string()).await;
    let expected = analytics(&app, &format!("/analytics/products/{lamp}")).await;
    assert_fields_shown("the lamp", &expected, &seen);
    assert_eq!(seen["units_sold"], "3");

    // A user, by id.
    browser.fill("#user-id", &ann.to_string()).await;
    browser.click("#user-form button").await;
    let seen = looked_up(&browser, "user-result", "user_id", &ann.to_string()).await;
    let expected = analytics(&app, &format!("/analytics/users/{ann}")).await;
    assert_fields_shown("Ann", &expected, &seen);
    assert_eq!(seen["units_bought"], "7");

    if let Ok(path) = std::env::var("ANALYTICS_PAGE_SCREENSHOT") {
        // The whole page: the window as tall as the document.
        let height = browser
            .eval("return document.documentElement.scrollHeight;", vec![])
            .await;
        let height = height.as_u64().unwrap_or(900) as u32;
        browser
            .client()
            .set_window_size(1280, height + 140)
            .await
            .unwrap();
        std::fs::write(&path, browser.screenshot().await).unwrap();
        eprintln!("screenshot: {path}");
    }
    browser.close().await;
    proxy.stop().await;
}

/// How long the page may take to redraw after a choice.
const PAGE: Duration = crate::webdriver::PAGE_DEADLINE;

/// A wrong password: the page shows the users service's own message and no numbers.
#[actix_web::test]
async fn a_wrong_password_shows_the_error_the_api_gives() {
    let (app, proxy) = runtime_behind_proxy().await;
    let email = app.settings.admin_email.clone().unwrap();
    let refused = app.login(&email, "not-the-password").await;
    refused.assert_error(401, "unauthorized");
    let message = refused.body["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    let browser = Browser::start().await;

    log_in(&browser, &proxy, &email, "not-the-password").await;

    let shown = browser
        .wait_for("#login-error", "the login's error", |text| !text.is_empty())
        .await;
    assert_eq!(shown, message);
    let state = browser
        .eval(
            "return {dashboard: document.getElementById('dashboard').hidden,
                     figures: document.querySelectorAll('.figure').length};",
            vec![],
        )
        .await;
    assert_eq!(state, json!({"dashboard": true, "figures": 0}));
    browser.close().await;
    proxy.stop().await;
}

/// A user who is not an admin logs in (the login succeeds) and is refused: the page shows the
/// analytics service's `403` message and no numbers.
#[actix_web::test]
async fn a_user_who_is_not_an_admin_is_refused() {
    let (app, proxy) = runtime_behind_proxy().await;
    let (_, token, email) = app.new_user().await;
    let forbidden = app
        .get(Service::Analytics, "/analytics/summary", Some(&token))
        .await;
    forbidden.assert_error(403, "forbidden");
    let message = forbidden.body["error"]["message"].as_str().unwrap();
    let browser = Browser::start().await;

    log_in(&browser, &proxy, &email, "user-password").await;

    let shown = browser
        .wait_for("#refusal-message", "the refusal", |text| !text.is_empty())
        .await;
    assert!(
        shown.starts_with(message) && shown.contains("403"),
        "{shown}"
    );
    let state = browser
        .eval(
            "return {dashboard: document.getElementById('dashboard').hidden,
                     login: document.getElementById('login').hidden,
                     figures: document.querySelectorAll('.figure').length,
                     rows: document.querySelectorAll('#top-table tbody tr').length,
                     bars: document.querySelectorAll('rect.bar').length};",
            vec![],
        )
        .await;
    assert_eq!(
        state,
        json!({"dashboard": true, "login": true, "figures": 0, "rows": 0, "bars": 0})
    );
    browser.close().await;
    proxy.stop().await;
}

/// Served straight from the analytics port: the page as HTML naming the users port of the same
/// runtime, under a policy that allows its own origin and that one; its script and stylesheet
/// with their types.
#[actix_web::test]
async fn the_page_and_its_files_are_served_with_their_types_and_a_strict_policy() {
    let app = spawn_app().await;
    let users = app.url(Service::Users);

    let page = app.get(Service::Analytics, "/", None).await;

    assert_eq!(page.status, 200, "{}", page.text);
    let header = |reply: &Reply, name: &str| {
        reply
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    let policy = header(&page, "content-security-policy");
    eprintln!("Content-Security-Policy: {policy}");
    assert!(
        policy.contains(&format!("connect-src 'self' {users};")),
        "{policy}"
    );
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{directive}: {policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    assert!(
        page.text.contains(&format!(
            r#"<meta name="recsys-users-url" content="{users}">"#
        )),
        "{}",
        page.text
    );
    for (path, content_type) in [
        ("/page/analytics.js", "text/javascript; charset=utf-8"),
        ("/page/analytics.css", "text/css; charset=utf-8"),
    ] {
        let file = app.get(Service::Analytics, path, None).await;
        assert_eq!(file.status, 200, "{path}");
        assert_eq!(header(&file, "content-type"), content_type, "{path}");
        assert_eq!(header(&file, "x-content-type-options"), "nosniff", "{path}");
        assert!(file.text.len() > 1000, "{path}: {} bytes", file.text.len());
    }
    // Only the analytics port serves the page.
    let elsewhere = app.get(Service::Users, "/", None).await;
    elsewhere.assert_error(404, "not_found");
}

/// With `ANALYTICS_USERS_URL`, the page logs in there: a runtime hosting analytics alone names
/// that origin in the page and in its policy.
#[actix_web::test]
async fn the_page_logs_in_at_the_configured_users_url() {
    let app = spawn_app().await;
    let mut settings = app.settings.clone();
    settings.analytics_users_url = Some("https://users.shop.example".to_string());
    let runtime =
        recsys::startup::Application::build(settings, &[Service::Analytics], test_logger())
            .await
            .expect("an analytics runtime starts")
            .spawn();
    let port = runtime.port(Service::Analytics).unwrap();

    let page = app
        .client
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();

    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let text = page.text().await.unwrap();
    assert!(
        policy.contains("connect-src 'self' https://users.shop.example;"),
        "{policy}"
    );
    assert!(
        text.contains(r#"content="https://users.shop.example""#),
        "{text}"
    );
}
