//! `GET /docs` in a real browser: on every port, headless Chromium renders every operation of
//! that port's OpenAPI document from assets the runtime serves itself (nothing from another
//! origin), and "Try it out" on the products port sends a real request to the same port and
//! shows its answer.

use serde_json::{json, Value};

use recsys::config::Service;

use crate::helpers::*;
use crate::webdriver::{Browser, PAGE_DEADLINE};

/// How many operations a document has.
fn operations(doc: &Value) -> usize {
    doc["paths"]
        .as_object()
        .expect("the document has paths")
        .values()
        .map(|item| item.as_object().map_or(0, |methods| methods.len()))
        .sum()
}

#[actix_web::test]
async fn every_port_serves_its_reference_and_try_it_calls_the_same_port() {
    let app = spawn_app().await;
    let created = app
        .post(
            Service::Products,
            "/products",
            json!({"name": "Reference Lamp", "price": "19.90", "category": "home"}),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);

    let browser = Browser::start().await;
    for service in Service::ALL {
        let base = app.url(service);
        let doc = app.get(service, "/openapi.json", None).await.body;
        let expected = operations(&doc);
        browser.goto(&format!("{base}/docs")).await;
        let title = browser
            .wait_for(".info .title", "the reference's title", |t| !t.is_empty())
            .await;
        assert!(
            title.contains(&format!("recsys {}", service.name())),
            "{}: {title}",
            service.name()
        );
        let shown = eventually(PAGE_DEADLINE, "every operation rendered", || async {
            let n = browser
                .eval(
                    "return document.querySelectorAll('.opblock').length",
                    vec![],
                )
                .await;
            (n.as_u64() == Some(expected as u64)).then_some(n)
        })
        .await;
        assert_eq!(shown, json!(expected), "{}", service.name());
        let foreign = browser
            .eval(
                "return performance.getEntriesByType('resource').map(e => e.name)\
                   .concat([location.href])\
                   .filter(u => !u.startsWith(location.origin + '/'))",
                vec![],
            )
            .await;
        assert_eq!(
            foreign,
            json!([]),
            "{}: loaded from elsewhere",
            service.name()
        );
    }

    // "Try it out" on `GET /products`: the operation opens with its Execute button (try-it is on
    // by default), and the answer shown is the port's own.
    let base = app.url(Service::Products);
    browser.goto(&format!("{base}/docs")).await;
    let opened = eventually(PAGE_DEADLINE, "GET /products to open", || async {
        let clicked = browser
            .eval(
                "const op = [...document.querySelectorAll('.opblock.opblock-get')]\
                   .find(o => o.querySelector('.opblock-summary-path')?.dataset.path === '/products');\
                 if (!op) return false;\
                 if (!op.classList.contains('is-open')) op.querySelector('.opblock-summary-control').click();\
                 return !!op.querySelector('button.execute');",
                vec![],
            )
            .await;
        (clicked == json!(true)).then_some(())
    })
    .await;
    let () = opened;
    browser
        .eval(
            "[...document.querySelectorAll('.opblock.opblock-get.is-open')]\
               .find(o => o.querySelector('.opblock-summary-path')?.dataset.path === '/products')\
               .querySelector('button.execute').click()",
            vec![],
        )
        .await;
    let answer = eventually(PAGE_DEADLINE, "the live answer", || async {
        let shown = browser
            .eval(
                "const op = document.querySelector('.opblock.opblock-get.is-open');\
                 const status = op?.querySelector('.live-responses-table tr.response .response-col_status');\
                 const body = op?.querySelector('.live-responses-table tr.response .response-col_description pre');\
                 const url = op?.querySelector('.request-url pre');\
                 if (!status || !body || !url) return null;\
                 return {status: status.innerText.trim(), body: body.innerText, url: url.innerText};",
                vec![],
            )
            .await;
        (!shown.is_null()).then_some(shown)
    })
    .await;
    assert_eq!(answer["status"], "200", "{answer}");
    assert!(
        answer["url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&format!("{base}/products"))),
        "the request went to the same port: {answer}"
    );
    assert!(
        answer["body"]
            .as_str()
            .is_some_and(|b| b.contains("Reference Lamp")),
        "{answer}"
    );
    browser.close().await;
}

/// The page forbids scripts, styles and requests from other origins, and its assets are what
/// the browser was told they are.
#[actix_web::test]
async fn the_reference_page_allows_only_its_own_origin() {
    let app = spawn_app().await;
    let base = app.url(Service::Analytics);
    let page = app.client.get(format!("{base}/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    for rule in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
    ] {
        assert!(csp.contains(rule), "{csp}");
    }
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    for (file, kind) in [
        ("swagger-ui-bundle.js", "text/javascript"),
        ("swagger-ui.css", "text/css"),
        ("start.js", "text/javascript"),
    ] {
        let asset = app
            .client
            .get(format!("{base}/docs/assets/{file}"))
            .send()
            .await
            .unwrap();
        assert_eq!(asset.status(), 200, "{file}");
        assert!(
            asset.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{file}"
        );
    }
    let missing = app
        .get(Service::Analytics, "/docs/assets/index.html", None)
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["error"]["code"], "not_found");
}
