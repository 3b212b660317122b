//! `GET /` on the analytics port: a page for the admin. It logs in at the users service's
//! `POST /users/login` straight from the browser (services talk to each other only through
//! Kafka, so the analytics service relays no login), keeps the token in the page's memory and
//! calls the analytics routes of its own origin with it: the summary, the top products, the
//! time series drawn as a chart, and a product and a user lookup.
//!
//! The page, its script and its stylesheet are the files next to this module, embedded in the
//! binary. The page names the users service's origin in a `<meta>` element: the
//! `ANALYTICS_USERS_URL` setting, or else the host the browser loaded the page from with the
//! port of the users service (the one this runtime listens on, else `USERS_PORT`). Its
//! Content-Security-Policy allows scripts, styles and requests of its own origin, and requests to
//! that one other origin; nothing inline, nothing else.

use actix_web::http::header::{self, CacheControl, CacheDirective};
use actix_web::{web, HttpRequest, HttpResponse};

use crate::config::{self, Service, Settings};
use crate::host::Listening;
use crate::openapi::Api;

/// The page; `{{users_url}}` stands for the users service's origin (empty when unknown).
const INDEX: &str = include_str!("index.html");

/// The page's script.
const SCRIPT: &str = include_str!("analytics.js");

/// The page's stylesheet.
const STYLE: &str = include_str!("analytics.css");

/// Where the page's login goes, from the settings.
#[derive(Debug, Clone)]
pub struct PageSettings {
    /// `ANALYTICS_USERS_URL`, an origin.
    users_url: Option<String>,
    /// `USERS_PORT`, for a users service this runtime does not host.
    users_port: u16,
}

impl PageSettings {
    /// What the page needs of `settings`.
    pub fn new(settings: &Settings) -> Self {
        Self {
            users_url: settings.analytics_users_url.clone(),
            users_port: settings.users_port,
        }
    }

    /// The users service's origin as the browser that sent `req` reaches it: the setting, or
    /// the request's scheme and host name with the users port. `None` when neither gives an
    /// origin (a users port of 0 this runtime does not listen on, a malformed `Host`).
    fn users_origin(&self, req: &HttpRequest, listening: &Listening) -> Option<String> {
        if let Some(url) = &self.users_url {
            return Some(url.clone());
        }
        let port = listening.port(Service::Users).unwrap_or(self.users_port);
        if port == 0 {
            return None;
        }
        let info = req.connection_info();
        let host = host_name(info.host());
        config::origin(&format!("{}://{host}:{port}", info.scheme())).ok()
    }
}

/// The name in a `Host` value, without its port (`[::1]:8083` → `[::1]`).
fn host_name(host: &str) -> &str {
    match host.strip_prefix('[') {
        Some(rest) => rest.find(']').map_or(host, |end| &host[..end + 2]),
        None => host.split(':').next().unwrap_or(host),
    }
}

/// The page's Content-Security-Policy: its own origin for everything it loads and calls, and
/// `users` (the login) for calls too.
fn policy(users: Option<&str>) -> String {
    let connect = match users {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_string(),
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// Registers (and documents, as HTML, a script and a stylesheet) `/` and its two assets.
pub fn routes(api: &mut Api) {
    api.add_plain(__path_index, index)
        .add_plain(__path_script, script)
        .add_plain(__path_style, style);
}

/// The analytics page for the admin.
#[utoipa::path(
    get,
    path = "/",
    tag = "page",
    responses((status = 200, description = "The analytics page: log in as the admin, then the \
        summary, the top products, the time series and lookups, read from this port's \
        routes", body = String, content_type = "text/html"))
)]
async fn index(
    req: HttpRequest,
    settings: web::Data<PageSettings>,
    listening: web::Data<Listening>,
) -> HttpResponse {
    let users = settings.users_origin(&req, &listening);
    // An origin holds no character that HTML or the header would treat specially.
    let page = INDEX.replace("{{users_url}}", users.as_deref().unwrap_or_default());
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, policy(users.as_deref())))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header(CacheControl(vec![CacheDirective::NoStore]))
        .body(page)
}

/// The analytics page's script.
#[utoipa::path(
    get,
    path = "/page/analytics.js",
    tag = "page",
    responses((status = 200, description = "The script of the analytics page", body = String,
        content_type = "text/javascript"))
)]
async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// The analytics page's stylesheet.
#[utoipa::path(
    get,
    path = "/page/analytics.css",
    tag = "page",
    responses((status = 200, description = "The stylesheet of the analytics page", body = String,
        content_type = "text/css"))
)]
async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}

/// An embedded file; browsers ask again each time (`no-cache`), so a new binary's page never
/// runs an old script.
fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header(CacheControl(vec![CacheDirective::NoCache]))
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// The port goes, the name stays, IPv6 brackets included.
    fn host_names_lose_their_port() {
        assert_eq!(host_name("localhost:8083"), "localhost");
        assert_eq!(host_name("admin.example"), "admin.example");
        assert_eq!(host_name("[::1]:8083"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
    }

    fn request(host: &str) -> HttpRequest {
        actix_web::test::TestRequest::default()
            .insert_header((header::HOST, host))
            .to_http_request()
    }

    fn settings(users_url: Option<&str>, users_port: u16) -> PageSettings {
        PageSettings {
            users_url: users_url.map(str::to_string),
            users_port,
        }
    }

    #[test]
    /// The setting wins; else the page's host name with the users port this runtime listens
    /// on, else `USERS_PORT`; no origin without a port or from a malformed host.
    fn the_users_origin_is_the_setting_or_the_pages_host_with_the_users_port() {
        let (none, listening) = (Listening::default(), Listening::default());
        listening.insert(Service::Users, 40123);
        let origin =
            |s: &PageSettings, host: &str, l: &Listening| s.users_origin(&request(host), l);
        let default = settings(None, 8080);
        assert_eq!(
            origin(&default, "admin.example:8083", &none).as_deref(),
            Some("http://admin.example:8080")
        );
        assert_eq!(
            origin(&default, "Admin.Example:8083", &listening).as_deref(),
            Some("http://admin.example:40123")
        );
        assert_eq!(
            origin(&default, "[::1]:8083", &none).as_deref(),
            Some("http://[::1]:8080")
        );
        let configured = settings(Some("https://users.example"), 8080);
        assert_eq!(
            origin(&configured, "admin.example", &listening).as_deref(),
            Some("https://users.example")
        );
        assert_eq!(origin(&settings(None, 0), "admin.example", &none), None);
        assert_eq!(origin(&default, "admin\".example", &none), None);
    }

    #[test]
    /// The page refers to its assets, and to the users origin only through the placeholder.
    fn the_page_loads_its_own_assets_only() {
        assert!(INDEX.contains(r#"src="/page/analytics.js""#));
        assert!(INDEX.contains(r#"href="/page/analytics.css""#));
        assert_eq!(INDEX.matches("{{users_url}}").count(), 1);
        assert!(!INDEX.contains("<script>") && !INDEX.contains("style="));
    }

    #[test]
    /// Only the users origin is added to what the page may call.
    fn the_policy_names_the_users_origin() {
        let with = policy(Some("http://localhost:8080"));
        assert!(
            with.contains("connect-src 'self' http://localhost:8080;"),
            "{with}"
        );
        assert!(with.contains("script-src 'self';"), "{with}");
        assert!(policy(None).contains("connect-src 'self';"));
    }
}
