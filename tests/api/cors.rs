//! CORS (`CORS_ORIGINS`): an allowed origin's preflight is answered and its requests carry the
//! CORS headers, on every port; another origin, or a runtime without `CORS_ORIGINS`, gets no
//! CORS header at all. A real browser's preflight is in `browser.rs`.

use recsys::config::Service;
use reqwest::{Method, StatusCode};

use crate::helpers::*;

const SHOP: &str = "https://shop.example";

/// A runtime that allows the origin [`SHOP`] (and another, to show that the list is a list).
async fn spawn_with_cors() -> TestApp {
    TestApp::builder()
        .with(|settings| {
            settings.cors_origins = vec![SHOP.into(), "http://127.0.0.1:3000".into()];
        })
        .spawn()
        .await
}

/// What every port serves a browser: a path and a method a page would ask for.
fn routes() -> [(Service, Method, &'static str); 4] {
    [
        (Service::Users, Method::POST, "/users/login"),
        (Service::Products, Method::GET, "/products"),
        (Service::Recommendations, Method::GET, "/recommendations"),
        (Service::Analytics, Method::GET, "/analytics/summary"),
    ]
}

/// The preflight a browser sends before a request with a token: `OPTIONS` with the origin, the
/// method and the non-simple headers it wants to use.
async fn preflight(
    app: &TestApp,
    service: Service,
    path: &str,
    origin: &str,
    method: &Method,
) -> reqwest::Response {
    app.client
        .request(Method::OPTIONS, format!("{}{path}", app.url(service)))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method.as_str())
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

/// An allowed origin's preflight is answered 204 on every port, allowing the method and the
/// headers a page sends (a token and a JSON body), for ten minutes; no credentials.
#[actix_web::test]
async fn an_allowed_origins_preflight_is_answered_on_every_port() {
    let app = spawn_with_cors().await;
    for (service, method, path) in routes() {
        let reply = preflight(&app, service, path, SHOP, &method).await;
        let what = format!("{service:?} {method} {path}");
        assert_eq!(reply.status(), StatusCode::NO_CONTENT, "{what}");
        assert_eq!(
            header(&reply, "access-control-allow-origin"),
            Some(SHOP),
            "{what}"
        );
        let methods = header(&reply, "access-control-allow-methods").unwrap();
        assert!(methods.contains(method.as_str()), "{what}: {methods}");
        let headers = header(&reply, "access-control-allow-headers")
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            headers.contains("authorization") && headers.contains("content-type"),
            "{what}: {headers}"
        );
        assert_eq!(header(&reply, "access-control-max-age"), Some("600"));
        assert_eq!(header(&reply, "access-control-allow-credentials"), None);
    }
}

/// The request after the preflight carries the origin back, and exposes the headers a page may
/// read (the cache source, the request id); an origin differing only in case is the same.
#[actix_web::test]
async fn an_allowed_origins_requests_carry_the_cors_headers() {
    let app = spawn_with_cors().await;
    for origin in [SHOP, "HTTPS://SHOP.EXAMPLE"] {
        let reply = app
            .client
            .get(format!(
                "{}/recommendations",
                app.url(Service::Recommendations)
            ))
            .header("Origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::OK);
        assert_eq!(header(&reply, "access-control-allow-origin"), Some(origin));
        let exposed = header(&reply, "access-control-expose-headers").unwrap();
        assert!(exposed.contains("X-Cache"), "{exposed}");
        assert!(header(&reply, "vary").unwrap().contains("Origin"));
    }
    // Errors too: a page must be able to read why it was refused.
    let refused = app
        .client
        .get(format!("{}/analytics/summary", app.url(Service::Analytics)))
        .header("Origin", SHOP)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&refused, "access-control-allow-origin"), Some(SHOP));
}

/// Another origin gets no CORS header, neither on its preflight (which is then an ordinary
/// `OPTIONS`: 405 with the JSON error) nor on its requests, which are otherwise served as usual.
#[actix_web::test]
async fn another_origin_gets_no_cors_header() {
    let app = spawn_with_cors().await;
    for origin in [
        "https://evil.example",
        "https://shop.example.evil.example",
        "null",
    ] {
        for (service, method, path) in routes() {
            let reply = preflight(&app, service, path, origin, &method).await;
            let what = format!("{origin} {service:?} {method} {path}");
            assert_eq!(reply.status(), StatusCode::METHOD_NOT_ALLOWED, "{what}");
            assert_eq!(
                header(&reply, "access-control-allow-origin"),
                None,
                "{what}"
            );
            assert_eq!(
                header(&reply, "access-control-allow-methods"),
                None,
                "{what}"
            );
        }
        let reply = app
            .client
            .get(format!("{}/products", app.url(Service::Products)))
            .header("Origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::OK);
        assert_eq!(
            header(&reply, "access-control-allow-origin"),
            None,
            "{origin}"
        );
    }
}

/// Without `CORS_ORIGINS` (the default) no origin gets a CORS header.
#[actix_web::test]
async fn without_cors_origins_nothing_is_allowed() {
    let app = spawn_app().await;
    let reply = preflight(&app, Service::Products, "/products", SHOP, &Method::GET).await;
    assert_eq!(reply.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&reply, "access-control-allow-origin"), None);
    let reply = app
        .client
        .get(format!("{}/products", app.url(Service::Products)))
        .header("Origin", SHOP)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&reply, "access-control-allow-origin"), None);
}
