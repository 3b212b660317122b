//! What every service's HTTP surface shares: `/healthz`, `/readyz`, `/metrics`, JSON errors for
//! every failure (bad JSON, bad path, unknown route, wrong method, oversized body), and the
//! middleware that records metrics and access logs with the route template and a request id.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers, Next};
use actix_web::{web, HttpResponse};
use rdkafka::producer::FutureProducer;
use recsys_actors::kafka::{self, SlogContext};
use recsys_actors::request::{self, RequestId};
use serde::Serialize;
use slog::{debug, error, info, warn, Drain as _, Logger};
use uuid::Uuid;

use crate::db::{self, Pool};
use crate::error::{ApiError, ErrorBody};
use crate::metrics;
use crate::openapi::{Api, RouteTemplate};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Per-server facts the shared handlers and middleware need.
#[derive(Clone)]
pub struct ServiceInfo {
    /// The `service` label.
    pub name: &'static str,
    pub logger: Logger,
}

/// What `/readyz` checks.
#[derive(Clone)]
pub struct Readiness {
    pub pool: Pool,
    /// A client used only to ask the broker for metadata.
    pub kafka: FutureProducer<SlogContext>,
}

/// The query string's parameters in order, a repeated one (`?category=a&category=b`) as often
/// as it is given: what `web::Query` (one value per name) cannot read. Unknown names are
/// ignored, as `web::Query` ignores them.
pub struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    /// Every value of `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name` given at most once, parsed; a 400 names it when it is given twice
    /// or does not parse.
    pub fn one<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        self.parse_one(name, |value| {
            format!("invalid query string: {name}={value:?}")
        })
    }

    /// Like [`QueryParams::one`], answering `invalid` for a value that does not parse (for a
    /// parameter with a fixed set of values, say which).
    pub fn one_of<T: std::str::FromStr>(
        &self,
        name: &str,
        invalid: &str,
    ) -> Result<Option<T>, ApiError> {
        self.parse_one(name, |_| invalid.to_string())
    }

    fn parse_one<T: std::str::FromStr>(
        &self,
        name: &str,
        invalid: impl FnOnce(&str) -> String,
    ) -> Result<Option<T>, ApiError> {
        let mut values = self.all(name);
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(ApiError::invalid(format!("{name} is given more than once")));
        }
        value
            .parse()
            .map(Some)
            .map_err(|_| ApiError::invalid(invalid(value)))
    }
}

impl actix_web::FromRequest for QueryParams {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let pairs = form_urlencoded::parse(req.query_string().as_bytes())
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        std::future::ready(Ok(QueryParams(pairs)))
    }
}

/// Registers (and documents) `/healthz`, `/readyz` and `/metrics`.
pub fn common_routes(api: &mut Api) {
    api.add_plain(__path_healthz, healthz)
        .add_plain(__path_readyz, readyz)
        .add_plain(__path_metrics_text, metrics_text);
    crate::reference::routes(api);
}

/// A request body that must be a JSON object: `web::Json<Object<T>>`. Serde's derived
/// structs also accept an array of their fields in order (`["name", null]`), which the API's
/// schemas do not allow; this asks the parser for a map, so anything else is a 400.
pub struct Object<T>(pub T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Visitor<T> {
            type Value = Object<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Object)
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// JSON bodies of at most `limit` bytes, every malformed one a JSON 4xx.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _| json_error(err).into())
}

/// Extractor settings turning every malformed input into a JSON 4xx.
pub fn extractor_config(cfg: &mut web::ServiceConfig) {
    cfg.app_data(json_config(MAX_BODY_BYTES))
        .app_data(web::PayloadConfig::default().limit(MAX_BODY_BYTES))
        .app_data(web::PathConfig::default().error_handler(|err, _| path_error(err).into()))
        .app_data(web::QueryConfig::default().error_handler(|err, _| query_error(err).into()));
}

fn json_error(err: JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => ApiError::PayloadTooLarge(limit),
        JsonPayloadError::ContentType => {
            ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
        }
        JsonPayloadError::Deserialize(e) => ApiError::invalid(format!("invalid JSON body: {e}")),
        JsonPayloadError::Serialize(e) => ApiError::Unexpected(anyhow::Error::new(e)),
        other => ApiError::invalid(format!("invalid request body: {other}")),
    }
}

fn path_error(err: PathError) -> ApiError {
    let PathError::Deserialize(e) = err else {
        return ApiError::invalid("invalid path");
    };
    ApiError::invalid(format!("invalid path parameter: {e}"))
}

fn query_error(err: QueryPayloadError) -> ApiError {
    ApiError::invalid(format!("invalid query string: {err}"))
}

/// The answer for a path no route serves.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route".into()))
}

/// Turns any error response that is not already JSON (actix's own 404/405/400 answers) into the
/// JSON error shape.
pub fn json_error_bodies<B: MessageBody + 'static>() -> ErrorHandlers<B> {
    ErrorHandlers::new().default_handler(|res: ServiceResponse<B>| {
        let is_json = res
            .response()
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        if is_json {
            return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
        }
        let status = res.status();
        let code = match status.as_u16() {
            404 => "not_found",
            405 => "method_not_allowed",
            413 => "payload_too_large",
            415 => "unsupported_media_type",
            s if s >= 500 => "internal",
            _ => "invalid_request",
        };
        let message = status.canonical_reason().unwrap_or("error").to_lowercase();
        let (req, _) = res.into_parts();
        let response = HttpResponse::build(status).json(ErrorBody::new(code, message));
        Ok(ErrorHandlerResponse::Response(
            ServiceResponse::new(req, response).map_into_right_body(),
        ))
    })
}

/// The `http_requests_total` and `http_request_duration_seconds` series a worker has used, by
/// service, method label, route template and status. Finding a series in the families hashes
/// every label value; a worker serves few distinct series, found here by a short scan that
/// compares addresses (each template is one `Arc` per resource, held here so that its address
/// is not reused for another).
struct Series {
    service: &'static str,
    method: &'static str,
    route: Arc<str>,
    status: u16,
    requests: prometheus::IntCounter,
    duration: prometheus::Histogram,
}

/// Most series one worker remembers; the rest are looked up in the families each time.
const REMEMBERED_SERIES: usize = 64;

thread_local! {
    static SERIES: std::cell::RefCell<Vec<Series>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The series of a request served by a route registered through `Api`.
fn request_metrics(
    service: &'static str,
    method: &'static str,
    route: &Arc<str>,
    status: actix_web::http::StatusCode,
) -> (prometheus::IntCounter, prometheus::Histogram) {
    SERIES.with_borrow_mut(|series| {
        let known = series.iter().find(|s| {
            std::ptr::eq(s.service, service)
                && std::ptr::eq(s.method, method)
                && Arc::ptr_eq(&s.route, route)
                && s.status == status.as_u16()
        });
        if let Some(s) = known {
            return (s.requests.clone(), s.duration.clone());
        }
        let requests =
            metrics::HTTP_REQUESTS.with_label_values(&[service, method, route, status.as_str()]);
        let duration = metrics::HTTP_DURATION.with_label_values(&[service, method, route]);
        if series.len() < REMEMBERED_SERIES {
            series.push(Series {
                service,
                method,
                route: route.clone(),
                status: status.as_u16(),
                requests: requests.clone(),
                duration: duration.clone(),
            });
        }
        (requests, duration)
    })
}

/// Records `http_requests_total` and `http_request_duration_seconds` under the route template,
/// sets `X-Request-Id`, and writes one access-log line per request (errors with their cause).
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let info = req.app_data::<web::Data<ServiceInfo>>().cloned();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string)
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    let method = req.method().clone();
    // Everything the request causes, in this task or in the actors it sends to, and its
    // access-log line below, is logged with its id.
    let id = RequestId::new(&request_id);
    request::scope(id, async move {
        let mut res = next.call(req).await?;
        let elapsed = started.elapsed();
        // Routes registered through `Api` carry their template; looking it up again in the
        // resource map would match the path a second time (a regex for every `{param}`).
        let template = res.request().app_data::<RouteTemplate>().cloned();
        let route: Arc<str> = match &template {
            Some(template) => template.0.clone(),
            None => res
                .request()
                .match_pattern()
                .unwrap_or_else(|| "unmatched".to_string())
                .into(),
        };
        let status = res.status();
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            res.headers_mut()
                .insert(header::HeaderName::from_static("x-request-id"), value);
        }
        if let Some(info) = info {
            let label = method_label(&method, status);
            let (requests, duration) = match &template {
                Some(_) => request_metrics(info.name, label, &route, status),
                None => (
                    metrics::HTTP_REQUESTS.with_label_values(&[
                        info.name,
                        label,
                        &route,
                        status.as_str(),
                    ]),
                    metrics::HTTP_DURATION.with_label_values(&[info.name, label, &route]),
                ),
            };
            requests.inc();
            duration.observe(elapsed.as_secs_f64());
            // Probes and scrapes come every few seconds from machines: DEBUG, so that INFO is
            // what clients did.
            let error = res.response().error();
            let level = match error {
                Some(_) if status.is_server_error() => slog::Level::Error,
                Some(_) => slog::Level::Info,
                None if QUIET_ROUTES.contains(&&*route) => slog::Level::Debug,
                None => slog::Level::Info,
            };
            // The line's logger is built only when its level is written.
            if info.logger.is_enabled(level) {
                let log = info.logger.new(slog::o!(
                    "method" => method.to_string(),
                    "route" => route.to_string(),
                    "status" => status.as_u16(),
                    "duration_ms" => elapsed.as_secs_f64() * 1000.0,
                ));
                match error {
                    Some(e) if status.is_server_error() => {
                        error!(log, "request failed"; "error" => format!("{:#}", anyhow_chain(e)))
                    }
                    Some(e) => info!(log, "request rejected"; "reason" => e.to_string()),
                    None if level == slog::Level::Debug => debug!(log, "request"),
                    None => info!(log, "request"),
                }
            }
        }
        Ok(res)
    })
    .await
}

/// Routes that health checks and Prometheus call: their successful requests are logged at
/// DEBUG.
const QUIET_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The `method` label of a request: its method when it is a standard one the route serves,
/// otherwise `OTHER`. A client chooses the method, and any token is a valid one, so each
/// made-up method (or a served route asked with a method it refuses, `405`) would otherwise
/// add series without bound.
pub fn method_label(
    method: &actix_web::http::Method,
    status: actix_web::http::StatusCode,
) -> &'static str {
    use actix_web::http::Method;
    if status == actix_web::http::StatusCode::METHOD_NOT_ALLOWED {
        return "OTHER";
    }
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

fn anyhow_chain(e: &actix_web::Error) -> String {
    match e.as_error::<ApiError>() {
        Some(ApiError::Unexpected(inner)) => format!("{inner:#}"),
        _ => e.to_string(),
    }
}

/// `200 {"status":"ok"}` while the process runs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    responses((status = 200, description = "The process runs", body = Status))
)]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Status {
        status: "ok",
        checks: None,
    })
}

/// `{"status":"ok"}`, with the dependency checks on `/readyz`.
#[derive(Serialize, utoipa::ToSchema)]
struct Status {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    checks: Option<Checks>,
}

/// Each dependency: `ok` or why not.
#[derive(Serialize, utoipa::ToSchema)]
struct Checks {
    postgres: String,
    kafka: String,
}

/// `200` when Postgres and the broker answer, `503` with the reason otherwise.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "meta",
    responses(
        (status = 200, description = "Postgres and the broker answer", body = Status),
        (status = 503, description = "A dependency does not answer", body = ErrorBody),
    )
)]
async fn readyz(readiness: web::Data<Readiness>, info: web::Data<ServiceInfo>) -> HttpResponse {
    let timeout = Duration::from_secs(2);
    let (pg, broker) = futures_util::join!(
        tokio::time::timeout(timeout, db::ping(&readiness.pool)),
        kafka::probe(readiness.kafka.clone(), timeout)
    );
    let pg = pg.unwrap_or_else(|_| Err("timed out".into()));
    let ready = pg.is_ok() && broker.is_ok();
    let checks = Checks {
        postgres: pg.clone().err().unwrap_or_else(|| "ok".into()),
        kafka: broker.clone().err().unwrap_or_else(|| "ok".into()),
    };
    if ready {
        HttpResponse::Ok().json(Status {
            status: "ok",
            checks: Some(checks),
        })
    } else {
        warn!(info.logger, "not ready"; "postgres" => &checks.postgres, "kafka" => &checks.kafka);
        let message = format!(
            "not ready: postgres: {}; kafka: {}",
            checks.postgres, checks.kafka
        );
        HttpResponse::ServiceUnavailable().json(ErrorBody::new("unavailable", message))
    }
}

/// The Prometheus text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String,
        content_type = "text/plain"))
)]
async fn metrics_text() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(metrics::render())
}
