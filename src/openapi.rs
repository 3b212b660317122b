//! The one place where a route is both registered and documented, so the OpenAPI document a
//! service serves at `/openapi.json` cannot drift from what it answers.
//!
//! A handler carries `#[utoipa::path(method, path = "...", ...)]`; [`Api::add`] takes the
//! generated `__path_<handler>` type and the handler, registers the handler on exactly the
//! methods and path the attribute names, and adds the operation to the document. Every
//! operation also gets the error answers the shared machinery can give (bad input, payload
//! limits, authentication, overload), each with the [`ErrorBody`] schema, so an operation's
//! attribute lists only what is particular to it.

use actix_web::http::Method;
use actix_web::{web, FromRequest, Handler, HttpResponse, Responder};
use utoipa::openapi::path::{HttpMethod, Operation, PathItem, Paths};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{
    Components, Content, InfoBuilder, OpenApi, OpenApiBuilder, Ref, RefOr, ResponseBuilder,
};
use utoipa::{PartialSchema, ToSchema};

use crate::error::ErrorBody;

/// The name of the bearer-token security scheme operations refer to.
pub const BEARER: &str = "bearer";

/// The name of the `X-API-Key` security scheme (storefront back ends).
pub const API_KEY: &str = "api_key";

/// Routes under construction: actix resources grouped by path (in registration order, which is
/// the order actix matches them in) and the document describing them.
pub struct Api {
    resources: Vec<Resource>,
    doc: OpenApi,
}

/// One path: its routes and the methods they serve (for the `Allow` header of a `405`).
struct Resource {
    path: String,
    methods: Vec<Method>,
    resource: actix_web::Resource,
}

/// The template of the route a request matched (`/users/{user_id}`), kept with each resource
/// `Api` registers: the `route` label of the HTTP metrics and of the access log.
#[derive(Clone)]
pub struct RouteTemplate(pub std::sync::Arc<str>);

/// The served document, shared by the workers of one service.
#[derive(Clone)]
pub struct Document(pub std::sync::Arc<String>);

impl Api {
    /// An empty API of the service `name`.
    pub fn new(name: &str) -> Self {
        let info = InfoBuilder::new()
            .title(format!("recsys {name}"))
            .version(env!("CARGO_PKG_VERSION"))
            .description(Some(format!(
                "The {name} service of recsys. Errors are always \
                 {{\"error\":{{\"code\":..,\"message\":..}}}}."
            )))
            .build();
        let mut components = Components::new();
        components.schemas.insert(
            ErrorBody::name().into_owned(),
            <ErrorBody as PartialSchema>::schema(),
        );
        let mut error_schemas = Vec::new();
        <ErrorBody as ToSchema>::schemas(&mut error_schemas);
        components.schemas.extend(error_schemas);
        components.security_schemes.insert(
            BEARER.to_string(),
            RefOr::T(SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            )),
        );
        components.security_schemes.insert(
            API_KEY.to_string(),
            RefOr::T(SecurityScheme::ApiKey(
                utoipa::openapi::security::ApiKey::Header(
                    utoipa::openapi::security::ApiKeyValue::with_description(
                        "X-API-Key",
                        "API_KEY: storefront back ends recording actions for their users",
                    ),
                ),
            )),
        );
        let doc = OpenApiBuilder::new()
            .info(info)
            .components(Some(components))
            .build();
        Self {
            resources: Vec::new(),
            doc,
        }
    }

    /// Registers `handler` on the methods and path of its `#[utoipa::path]` (`doc` is the
    /// generated `__path_<handler>` value) and documents it with the shared error answers.
    pub fn add<P, F, Args>(&mut self, doc: P, handler: F) -> &mut Self
    where
        P: utoipa::Path + utoipa::__dev::SchemaReferences,
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.add_at(&P::path(), doc, handler, None)
    }

    /// Like [`Api::add`], at another path too: the same operation, served and documented under
    /// `path` with `operation_id` (OpenAPI wants ids unique).
    pub fn alias<P, F, Args>(
        &mut self,
        path: &str,
        operation_id: &str,
        doc: P,
        handler: F,
    ) -> &mut Self
    where
        P: utoipa::Path + utoipa::__dev::SchemaReferences,
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        self.add_at(path, doc, handler, Some(operation_id))
    }

    /// Lets the JSON bodies of the routes at `path` (registered before) be up to `bytes` long,
    /// instead of the app's [`crate::http::MAX_BODY_BYTES`].
    pub fn body_limit(&mut self, path: &str, bytes: usize) -> &mut Self {
        let entry = self
            .resources
            .iter_mut()
            .find(|r| r.path == path)
            .expect("body_limit names a registered path");
        let resource = std::mem::replace(&mut entry.resource, web::resource(path));
        entry.resource = resource.app_data(crate::http::json_config(bytes));
        self
    }

    /// Documents that the `POST` at `path` (registered before) takes an `Idempotency-Key`:
    /// the header, the `Idempotent-Replayed` header of a success given again, `409` (the key's
    /// first request is still running) and `422` (the key was used for another request).
    pub fn idempotent(&mut self, path: &str) -> &mut Self {
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::Required;

        let operation = self
            .doc
            .paths
            .paths
            .get_mut(path)
            .and_then(|item| item.post.as_mut())
            .expect("idempotent names a registered POST");
        let key = ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "Makes a retry safe: the same key with the same request within 24 hours gets \
                 the first answer again (with `Idempotent-Replayed: true`) and writes nothing. \
                 Keys are per caller; send a new random one (a UUID) per intended write.",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(crate::idempotency::MAX_KEY))
                    .pattern(Some(crate::idempotency::KEY_PATTERN)),
            ))
            .build();
        operation
            .parameters
            .get_or_insert_with(Vec::new)
            .push(RefOr::T(key));
        let replayed = HeaderBuilder::new()
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["true"])),
            ))
            .description(Some(
                "Present when this is the stored answer of an earlier request with the key",
            ))
            .build();
        for (status, response) in operation.responses.responses.iter_mut() {
            if let (true, RefOr::T(response)) = (status.starts_with('2'), response) {
                response
                    .headers
                    .insert("Idempotent-Replayed".into(), RefOr::T(replayed.clone()));
            }
        }
        for (status, description) in [
            (
                "409",
                "A request with this Idempotency-Key is still in progress; retry shortly",
            ),
            (
                "422",
                "This Idempotency-Key was already used for a different request",
            ),
        ] {
            let responses = &mut operation.responses.responses;
            match responses.get_mut(status) {
                Some(RefOr::T(existing)) => {
                    existing.description = format!("{}; or: {description}", existing.description)
                }
                _ => {
                    responses.insert(status.into(), RefOr::T(error_response(description)));
                }
            }
        }
        self
    }

    /// Registers a route that carries no shared error answers (health, metrics, the document
    /// itself): its attribute says everything it can answer.
    pub fn add_plain<P, F, Args>(&mut self, _doc: P, handler: F) -> &mut Self
    where
        P: utoipa::Path + utoipa::__dev::SchemaReferences,
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        let path = P::path();
        for method in P::methods() {
            self.document(&path, method.clone(), P::operation());
            self.route(&path, &method, handler.clone());
        }
        self.collect_schemas::<P>();
        self
    }

    fn add_at<P, F, Args>(
        &mut self,
        path: &str,
        _doc: P,
        handler: F,
        operation_id: Option<&str>,
    ) -> &mut Self
    where
        P: utoipa::Path + utoipa::__dev::SchemaReferences,
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        for method in P::methods() {
            let mut operation = P::operation();
            if let Some(id) = operation_id {
                operation.operation_id = Some(id.to_string());
            }
            if P::methods().len() > 1 {
                // One id per method, or generators see two operations with one id.
                let id = operation.operation_id.take().unwrap_or_default();
                operation.operation_id = Some(format!("{id}_{}", method_name(&method)));
            }
            with_shared_errors(&mut operation);
            self.document(path, method.clone(), operation);
            self.route(path, &method, handler.clone());
        }
        self.collect_schemas::<P>();
        self
    }

    fn collect_schemas<P: utoipa::__dev::SchemaReferences>(&mut self) {
        let mut schemas = Vec::new();
        P::schemas(&mut schemas);
        self.doc
            .components
            .get_or_insert_with(Components::new)
            .schemas
            .extend(schemas);
    }

    fn document(&mut self, path: &str, method: HttpMethod, operation: Operation) {
        let paths = Paths::builder()
            .path(path, PathItem::new(method, operation))
            .build();
        self.doc.paths.merge(paths);
    }

    fn route<F, Args>(&mut self, path: &str, method: &HttpMethod, handler: F)
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        let method = actix_method(method);
        let route = web::route().method(method.clone()).to(handler);
        match self.resources.iter_mut().find(|r| r.path == path) {
            Some(entry) => {
                let resource = std::mem::replace(&mut entry.resource, web::resource(path));
                entry.resource = resource.route(route);
                entry.methods.push(method);
            }
            None => self.resources.push(Resource {
                path: path.to_string(),
                methods: vec![method],
                resource: web::resource(path).route(route),
            }),
        }
    }

    /// The document as it stands.
    pub fn document_json(&self) -> String {
        self.doc.to_json().expect("an OpenAPI document serializes")
    }

    /// Registers every route and `/openapi.json` serving the document on `cfg`.
    pub fn register(mut self, cfg: &mut web::ServiceConfig) {
        self.add_plain(__path_openapi_json, openapi_json);
        let document = Document(std::sync::Arc::new(self.document_json()));
        cfg.app_data(web::Data::new(document));
        for Resource {
            path,
            methods,
            resource,
        } in self.resources
        {
            let resource = resource.app_data(RouteTemplate(path.into()));
            let allow = methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            cfg.service(resource.default_service(web::to(move || {
                let allow = allow.clone();
                async move { method_not_allowed(&allow) }
            })));
        }
    }
}

/// `405` with the JSON error and the `Allow` header RFC 9110 asks for.
fn method_not_allowed(allow: &str) -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((actix_web::http::header::ALLOW, allow.to_string()))
        .json(ErrorBody::new("method_not_allowed", "method not allowed"))
}

/// The OpenAPI document of this service.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/json"))
)]
async fn openapi_json(document: web::Data<Document>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document.0.as_str().to_string())
}

fn actix_method(method: &HttpMethod) -> Method {
    match method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Post => Method::POST,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Options => Method::OPTIONS,
        HttpMethod::Head => Method::HEAD,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Trace => Method::TRACE,
    }
}

fn method_name(method: &HttpMethod) -> &'static str {
    match method {
        HttpMethod::Get => "get",
        HttpMethod::Post => "post",
        HttpMethod::Put => "put",
        HttpMethod::Delete => "delete",
        HttpMethod::Options => "options",
        HttpMethod::Head => "head",
        HttpMethod::Patch => "patch",
        HttpMethod::Trace => "trace",
    }
}

/// Adds the answers every operation can give without saying so: `400` (a malformed path, query
/// or body), `503` (a dependency or the actor cannot serve it now) and `500`; with a body `413`
/// and `415`; behind a token `401` and `403`. An answer the attribute lists is left as written.
fn with_shared_errors(operation: &mut Operation) {
    let mut shared = vec![
        ("400", "The request is malformed or a value is out of range"),
        (
            "503",
            "A dependency or the service is overloaded or unavailable; retry later",
        ),
        ("500", "An unexpected failure (never expected)"),
    ];
    if operation.request_body.is_some() {
        shared.push(("413", "The body is larger than 64 KiB"));
        shared.push(("415", "The body is not application/json"));
    }
    if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
        shared.push(("401", "No token, or an invalid, expired or revoked one"));
        shared.push(("403", "The token's holder may not do this"));
    }
    for (status, description) in shared {
        operation
            .responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(error_response(description)));
    }
}

/// A response whose body is the JSON error shape.
pub fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name(ErrorBody::name()))),
        )
        .build()
}

/// A string schema admitting only `values` (and defaulting to `default`).
pub fn string_enum<const N: usize>(
    values: [&'static str; N],
    default: Option<&'static str>,
) -> RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(values))
        .default(default.map(Into::into))
        .into()
}

/// Declares a type that exists only to be named in `#[utoipa::path]` or `#[param]` attributes:
/// a string with a fixed set of values taken from the code (so the document follows the code).
macro_rules! string_enum_schema {
    ($(#[$doc:meta])* $name:ident, $values:expr, $default:expr) => {
        $(#[$doc])*
        #[allow(dead_code)]
        struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $crate::openapi::string_enum($values, $default)
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}
pub(crate) use string_enum_schema;
