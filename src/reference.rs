//! `GET /docs`: an interactive reference of the port's own OpenAPI document (Swagger UI), on
//! every port.
//!
//! Every byte is served by the runtime: Swagger UI's script and stylesheet come from the
//! `utoipa-swagger-ui` crate's vendored copy, unpacked at build time from the crate itself (the
//! build downloads nothing but crates) and embedded in the binary. The page and its small
//! start-up script are ours, so the Content-Security-Policy can forbid inline scripts and every
//! other origin: the page reads `/openapi.json` of the port it came from, and "Try it out" calls
//! that same port.

use std::sync::{Arc, LazyLock};

use actix_web::http::header::{self, CacheControl, CacheDirective};
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::ErrorBody;
use crate::openapi::Api;

/// The files under `/docs/assets/`: Swagger UI's two and our start-up script.
const ASSETS: [&str; 3] = ["swagger-ui-bundle.js", "swagger-ui.css", "start.js"];

/// The policy of the page: its own scripts and styles only (Swagger UI sets inline styles
/// and uses `data:` images), requests to its own origin only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// The page: Swagger UI's mount point and its assets.
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>recsys API reference</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="reference"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/start.js"></script>
</body>
</html>
"#;

/// Starts Swagger UI on this port's document, with "Try it out" open on every operation and
/// the bearer token kept across reloads of the page.
const START: &str = r#"window.addEventListener('load', function () {
  window.reference = SwaggerUIBundle({
    url: '/openapi.json',
    dom_id: '#reference',
    deepLinking: true,
    tryItOutEnabled: true,
    persistAuthorization: true,
    displayRequestDuration: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: 'BaseLayout'
  });
});
"#;

/// Registers `/docs` and `/docs/assets/{file}` on `api`.
pub fn routes(api: &mut Api) {
    api.add_plain(__path_page, page)
        .add_plain(__path_asset, asset);
}

/// The API reference of this port.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "meta",
    responses((status = 200, description = "An interactive reference of this port's OpenAPI \
        document (Swagger UI, served by the runtime)", body = String, content_type = "text/html"))
)]
async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(PAGE)
}

/// The file name of an asset of the reference page.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct AssetPath {
    /// One of the page's assets.
    #[param(pattern = r"^(swagger-ui-bundle\.js|swagger-ui\.css|start\.js)$")]
    file: String,
}

/// A script or stylesheet of the reference page.
#[utoipa::path(
    get,
    path = "/docs/assets/{file}",
    tag = "meta",
    params(AssetPath),
    responses(
        (status = 200, description = "The asset: a script or a stylesheet",
            content((String = "text/javascript"), (String = "text/css"))),
        (status = 404, description = "No such asset", body = ErrorBody),
    )
)]
async fn asset(path: web::Path<AssetPath>) -> HttpResponse {
    let file = path.into_inner().file;
    let Some(body) = asset_bytes(&file) else {
        return HttpResponse::NotFound().json(ErrorBody::new("not_found", "no such asset"));
    };
    let content_type = if file.ends_with(".css") {
        "text/css; charset=utf-8"
    } else {
        "text/javascript; charset=utf-8"
    };
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(CacheControl(vec![
            CacheDirective::Public,
            CacheDirective::MaxAge(3600),
        ]))
        .body(body)
}

/// The bytes of an asset; `None` for a name that is not one.
fn asset_bytes(file: &str) -> Option<web::Bytes> {
    static VENDORED: LazyLock<Vec<(&'static str, web::Bytes)>> = LazyLock::new(|| {
        let config = Arc::new(utoipa_swagger_ui::Config::new(["/openapi.json"]));
        ASSETS
            .iter()
            .filter(|&&name| name != "start.js")
            .map(|&name| {
                let file = utoipa_swagger_ui::serve(name, config.clone())
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| panic!("Swagger UI's {name} is embedded"));
                (name, web::Bytes::from(file.bytes.into_owned()))
            })
            .collect()
    });
    if file == "start.js" {
        return Some(web::Bytes::from_static(START.as_bytes()));
    }
    VENDORED
        .iter()
        .find(|(name, _)| *name == file)
        .map(|(_, bytes)| bytes.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded() {
        for name in ASSETS {
            let bytes = asset_bytes(name).unwrap_or_else(|| panic!("{name} is served"));
            assert!(bytes.len() > 100, "{name} has {} bytes", bytes.len());
        }
        assert!(asset_bytes("index.html").is_none());
        assert!(asset_bytes("../Cargo.toml").is_none());
    }
}
