//! CORS, so that a storefront's pages can call recsys from the browser. `CORS_ORIGINS` names the
//! origins allowed; a request from one of them gets `Access-Control-Allow-Origin` (and the
//! headers a page may read), and its preflight `OPTIONS` is answered here, on every port, before
//! routing. A request from any other origin, or any request when `CORS_ORIGINS` is empty, gets no
//! CORS header at all: the browser then withholds the answer from the page.
//!
//! Tokens travel in the `Authorization` header, never in cookies, so credentials are not
//! allowed (`Access-Control-Allow-Credentials` is never sent).

use std::collections::HashSet;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

/// Methods a page may use.
const METHODS: &str = "GET, POST, PUT, PATCH, DELETE";

/// Request headers a page may send.
const HEADERS: &str = "Authorization, Content-Type, Idempotency-Key, X-API-Key, X-Request-Id";

/// Response headers a page may read besides the CORS-safelisted ones.
const EXPOSED: &str = "X-Cache, X-Request-Id, Retry-After, Idempotent-Replayed";

/// How long a browser may reuse a preflight's answer (seconds).
const MAX_AGE: &str = "600";

/// The allowed origins, lower-cased (see [`crate::config::Settings::cors_origins`]).
#[derive(Debug, Clone, Default)]
pub struct Origins(HashSet<String>);

impl Origins {
    /// The origins allowed by `origins` (already checked and lower-cased by the settings).
    pub fn new(origins: &[String]) -> Self {
        Self(origins.iter().cloned().collect())
    }

    /// The request's `Origin`, when it is one of ours.
    fn allowed(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        self.0
            .contains(&text.to_ascii_lowercase())
            .then(|| origin.clone())
    }
}

/// Answers the preflight of an allowed origin; adds the CORS headers to every other answer to
/// an allowed origin; leaves everything else untouched.
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let origin = req
        .app_data::<web::Data<Origins>>()
        .and_then(|origins| origins.allowed(req.headers()));
    let Some(origin) = origin else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let response = HttpResponse::NoContent()
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, METHODS))
            .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, HEADERS))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, MAX_AGE))
            .insert_header((
                header::VARY,
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ))
            .finish();
        return Ok(req.into_response(response).map_into_right_body());
    }
    let mut res = next.call(req).await?;
    let headers = res.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED),
    );
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    Ok(res.map_into_left_body())
}
