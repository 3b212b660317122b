//! Routes of the products service, each registered and documented through one [`Api`] so the
//! served OpenAPI document cannot drift from what the service answers. Reads are public; writes
//! need an admin token. Prices arrive as a JSON string or number and are parsed from their literal
//! text, never through a float.

use std::str::FromStr;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use bigdecimal::{BigDecimal, Signed};
use recsys_actors::observe::ObservedAddr;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, PartialSchema, ToSchema};
use uuid::Uuid;

use super::actor::{
    CreateProduct, DeleteProduct, GetProduct, ListProducts, Page, ProductView, ProductsActor,
    UpdateProduct,
};
use super::error::ProductsError;
use super::store::ProductChanges;
use crate::auth::Admin;
use crate::error::{ApiError, ErrorBody};
use crate::http::{Object, QueryParams};
use crate::idempotency::{IdempotencyKey, KeyOwner};
use crate::openapi::Api;
use crate::validate::{self, Given, MAX_CATEGORY};

const MAX_NAME: usize = 200;
const MAX_DESCRIPTION: usize = 5000;

/// The documented `name` of a new product.
fn name_schema() -> RefOr<Schema> {
    validate::text_schema(MAX_NAME, false, "")
}

/// The documented `name` of an update.
fn optional_name_schema() -> RefOr<Schema> {
    validate::text_schema(MAX_NAME, true, "Absent or `null` leaves the name as it is.")
}

/// The documented `category` of a new product.
fn category_schema() -> RefOr<Schema> {
    validate::optional_text_schema(MAX_CATEGORY, true, "Absent or `null` means none.")
}

/// The documented `description` of a new product.
fn description_schema() -> RefOr<Schema> {
    validate::optional_text_schema(MAX_DESCRIPTION, true, "Absent or `null` means none.")
}

/// The documented `category` of an update.
fn new_category_schema() -> RefOr<Schema> {
    validate::optional_text_schema(
        MAX_CATEGORY,
        true,
        "`null` or empty clears it, absent leaves it as it is.",
    )
}

/// The documented `description` of an update.
fn new_description_schema() -> RefOr<Schema> {
    validate::optional_text_schema(
        MAX_DESCRIPTION,
        true,
        "`null` or empty clears it, absent leaves it as it is.",
    )
}

/// Registers (and documents) the products routes.
pub fn routes(api: &mut Api) {
    api.add(__path_list_products, list_products)
        .add(__path_create_product, create_product)
        .alias(
            "/products/create",
            "create_product_at_create",
            __path_create_product,
            create_product,
        )
        .add(__path_get_product, get_product)
        .add(__path_update_product, update_product)
        .add(__path_delete_product, delete_product)
        .idempotent("/products")
        .idempotent("/products/create");
}

/// The largest price NUMERIC(12, 2) holds.
fn max_price() -> BigDecimal {
    BigDecimal::from_str("9999999999.99").expect("literal")
}

/// What a price given as a string must look like: 1 to 10 digits, then optionally a point and
/// 1 or 2 digits (the documents' `pattern`; [`is_price_text`] checks it).
const PRICE_PATTERN: &str = r"^[0-9]{1,10}(\.[0-9]{1,2})?$";

/// Whether `text` matches [`PRICE_PATTERN`].
fn is_price_text(text: &str) -> bool {
    let digits =
        |s: &str, max: usize| (1..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    match text.split_once('.') {
        None => digits(text, 10),
        Some((whole, cents)) => digits(whole, 10) && digits(cents, 2),
    }
}

/// A price from its JSON literal: a string matching [`PRICE_PATTERN`] (`"19.99"`) or a JSON
/// number (`19.99`, `1e2`) that is a multiple of 0.01; not negative, below 10^10.
pub fn parse_price(raw: &RawValue) -> Result<BigDecimal, ApiError> {
    let invalid =
        || ApiError::invalid("price must be a non-negative decimal with at most 2 decimal places");
    let text = raw.get().trim();
    let literal = if text.starts_with('"') {
        let literal = serde_json::from_str::<String>(text).map_err(|_| invalid())?;
        if !is_price_text(&literal) {
            return Err(invalid());
        }
        literal
    } else {
        // A JSON number (serde_json has checked its grammar): digits, `-`, `.`, `e`, `+`.
        text.to_string()
    };
    let literal = literal.as_str();
    let plain = !literal.is_empty()
        && literal
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if !plain {
        return Err(invalid());
    }
    let price = BigDecimal::from_str(literal).map_err(|_| invalid())?;
    if price.is_negative() || price.normalized().fractional_digit_count() > 2 || price > max_price()
    {
        return Err(invalid());
    }
    Ok(price.with_scale(2))
}

/// What [`parse_price`] accepts, for the document: a decimal string or a JSON number.
fn price_schema() -> RefOr<Schema> {
    price_one_of(
        false,
        "0 to 9999999999.99 with at most 2 decimal places: a decimal string (\"19.99\": digits, \
         then optionally a point and one or two digits) or a JSON number (19.99), read from its \
         literal text, never through a float.",
    )
}

/// Like [`price_schema`], also `null` (which leaves the price as it is).
fn optional_price_schema() -> RefOr<Schema> {
    price_one_of(
        true,
        "0 to 9999999999.99 with at most 2 decimal places: a decimal string (\"19.99\": digits, \
         then optionally a point and one or two digits) or a JSON number (19.99), read from its \
         literal text, never through a float; absent or null leaves the price as it is.",
    )
}

/// `oneOf` a decimal string and a number (and `null` when `nullable`).
fn price_one_of(nullable: bool, description: &str) -> RefOr<Schema> {
    let text = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(PRICE_PATTERN))
        .examples(["19.99"]);
    // `multipleOf` is exact (decimal) in JSON Schema, as the literal's parse is here.
    let number = ObjectBuilder::new()
        .schema_type(Type::Number)
        .minimum(Some(0))
        .maximum(Some(9_999_999_999.99))
        .multiple_of(Some(0.01))
        .examples([19.99]);
    let mut one_of = OneOfBuilder::new().item(text).item(number);
    if nullable {
        one_of = one_of.item(ObjectBuilder::new().schema_type(Type::Null));
    }
    one_of.description(Some(description)).into()
}

/// `Some(None)` for an explicit `null`, `Some(Some(v))` for a value; absent fields stay `None`.
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /products` and `POST /products/create`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
struct CreateBody {
    #[schema(schema_with = name_schema)]
    name: String,
    #[schema(schema_with = price_schema)]
    price: Box<RawValue>,
    #[schema(schema_with = category_schema)]
    category: Option<String>,
    #[schema(schema_with = description_schema)]
    description: Option<String>,
}

/// Adds a product to the catalog (admins only; also served at `POST /products/create`).
#[utoipa::path(
    post,
    path = "/products",
    tag = "products",
    request_body = CreateBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = ProductView),
    )
)]
async fn create_product(
    products: web::Data<ObservedAddr<ProductsActor>>,
    admin: Admin,
    key: IdempotencyKey,
    body: web::Json<Object<CreateBody>>,
) -> Result<HttpResponse, ApiError> {
    let Object(body) = body.into_inner();
    let claim = key.claim(KeyOwner::User(admin.0.id()), "POST /products", &body)?;
    let msg = CreateProduct {
        name: validate::text("name", &body.name, MAX_NAME)?,
        price: parse_price(&body.price)?,
        category: validate::optional_text("category", body.category.as_deref(), MAX_CATEGORY)?,
        description: validate::optional_text(
            "description",
            body.description.as_deref(),
            MAX_DESCRIPTION,
        )?,
        claim,
    };
    let answer = products.send(msg).await??;
    Ok(answer.respond(StatusCode::CREATED, |product| product))
}

/// One product of the catalog.
#[utoipa::path(
    get,
    path = "/products/{id}",
    tag = "products",
    params(("id" = Uuid, Path, description = "The product's id")),
    responses(
        (status = 200, description = "The product", body = ProductView),
        (status = 404, description = "No such product (or it was deleted)", body = ErrorBody),
    )
)]
async fn get_product(
    products: web::Data<ObservedAddr<ProductsActor>>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let product = products
        .send(GetProduct {
            id: id.into_inner(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(product))
}

/// `GET /products?category=&limit=&after=`, as documented; read with [`QueryParams`] (a
/// repeated `category` is more than `web::Query` reads).
#[allow(dead_code)]
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only products of any of these categories (repeat the parameter: `?category=a&category=b`;
    /// at most 20 values, each at most 100 characters without control characters; none or only
    /// empty ones: every product). An unknown category matches nothing.
    #[param(style = Form, explode, value_type = Option<validate::Categories>, inline)]
    category: Option<Vec<String>>,
    /// Page size, 1 to 100; default 20.
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<i64>,
    /// The `next` of the previous page: only products after this id.
    after: Option<Uuid>,
}

/// The catalog page by page, in creation order, optionally of some categories.
#[utoipa::path(
    get,
    path = "/products",
    tag = "products",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of products", body = Page),
    )
)]
async fn list_products(
    products: web::Data<ObservedAddr<ProductsActor>>,
    query: QueryParams,
) -> Result<HttpResponse, ApiError> {
    let msg = ListProducts {
        categories: validate::categories(query.all("category"))?,
        limit: validate::limit(query.one("limit")?, 20, 100)?,
        after: query.one("after")?,
    };
    let page = products.send(msg).await??;
    Ok(HttpResponse::Ok().json(page))
}

/// `PUT`/`PATCH /products/{id}`: any subset of the fields; `null` clears category/description.
#[derive(Debug, Deserialize, ToSchema)]
struct UpdateBody {
    #[schema(schema_with = optional_name_schema)]
    name: Option<String>,
    #[schema(schema_with = optional_price_schema)]
    price: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = new_category_schema)]
    category: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(schema_with = new_description_schema)]
    description: Option<Option<String>>,
}

/// Schema only: an [`UpdateBody`] that changes something ([`validate::at_least_one`]): a `name`
/// or `price` other than `null`, or a `category` or `description` (`null` clears it).
struct UpdateRequest;

impl utoipa::PartialSchema for UpdateRequest {
    fn schema() -> RefOr<Schema> {
        validate::at_least_one(
            &UpdateBody::name(),
            &[
                ("name", Given::Value(&[Type::String])),
                ("price", Given::Value(&[Type::String, Type::Number])),
                ("category", Given::Present),
                ("description", Given::Present),
            ],
        )
    }
}

impl ToSchema for UpdateRequest {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((UpdateBody::name().into(), UpdateBody::schema()));
        <UpdateBody as ToSchema>::schemas(schemas);
    }
}

/// Changes any of name, price, category and description (at least one; admins only).
#[utoipa::path(
    method(put, patch),
    path = "/products/{id}",
    tag = "products",
    params(("id" = Uuid, Path, description = "The product's id")),
    request_body = UpdateRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated product", body = ProductView),
        (status = 404, description = "No such product (or it was deleted)", body = ErrorBody),
    )
)]
async fn update_product(
    products: web::Data<ObservedAddr<ProductsActor>>,
    _admin: Admin,
    id: web::Path<Uuid>,
    body: web::Json<Object<UpdateBody>>,
) -> Result<HttpResponse, ApiError> {
    let Object(body) = body.into_inner();
    let changes = ProductChanges {
        name: body
            .name
            .as_deref()
            .map(|n| validate::text("name", n, MAX_NAME))
            .transpose()?,
        price: body.price.as_deref().map(parse_price).transpose()?,
        category: body
            .category
            .map(|c| validate::optional_text("category", c.as_deref(), MAX_CATEGORY))
            .transpose()?,
        description: body
            .description
            .map(|d| validate::optional_text("description", d.as_deref(), MAX_DESCRIPTION))
            .transpose()?,
    };
    if changes.name.is_none()
        && changes.price.is_none()
        && changes.category.is_none()
        && changes.description.is_none()
    {
        return Err(ApiError::invalid(
            "nothing to update: give name, price, category or description",
        ));
    }
    let product = products
        .send(UpdateProduct {
            id: id.into_inner(),
            changes,
        })
        .await??;
    Ok(HttpResponse::Ok().json(product))
}

/// Removes a product from the catalog (admins only).
#[utoipa::path(
    delete,
    path = "/products/{id}",
    tag = "products",
    params(("id" = Uuid, Path, description = "The product's id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such product (or it was already deleted)",
            body = ErrorBody),
    )
)]
async fn delete_product(
    products: web::Data<ObservedAddr<ProductsActor>>,
    _admin: Admin,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    products
        .send(DeleteProduct {
            id: id.into_inner(),
        })
        .await??;
    Ok(HttpResponse::NoContent().finish())
}

/// What a client sees of each catalog failure.
impl From<ProductsError> for ApiError {
    fn from(e: ProductsError) -> Self {
        match e {
            ProductsError::ProductNotFound => ApiError::NotFound(e.to_string()),
            ProductsError::Idempotency(refused) => refused.into(),
            ProductsError::Db(db) => db.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    /// Strings and numbers parse exactly, to two places, without float error.
    fn prices_parse_exactly() {
        assert_eq!(parse_price(&raw("19.99")).unwrap().to_string(), "19.99");
        assert_eq!(parse_price(&raw("\"0.10\"")).unwrap().to_string(), "0.10");
        assert_eq!(parse_price(&raw("5")).unwrap().to_string(), "5.00");
        assert_eq!(parse_price(&raw("1e2")).unwrap().to_string(), "100.00");
        assert_eq!(
            parse_price(&raw("9999999999.99")).unwrap().to_string(),
            "9999999999.99"
        );
    }

    #[test]
    /// The documented price schema (read by a JSON Schema validator) and [`parse_price`] agree on
    /// every literal: strings only in the plain form, numbers by their exact decimal value.
    fn the_documented_price_is_the_check() {
        let schema = serde_json::to_value(price_schema()).unwrap();
        let [string, number] = [0, 1].map(|i| schema["oneOf"][i].clone());
        assert_eq!(
            (&string["type"], &number["type"]),
            (&"string".into(), &"number".into())
        );
        let string = jsonschema::validator_for(&string).expect("the string schema compiles");
        // The number branch by the letter of JSON Schema, with exact decimals: `multipleOf` means
        // exact division (jsonschema 0.26 divides in f64, where 19.99 / 0.01 is not 1999;
        // jsonschema-rs 0.60, which schemathesis uses, divides exactly).
        let decimal = |v: &serde_json::Value| BigDecimal::from_str(&v.to_string()).unwrap();
        let (min, max, step) = (
            decimal(&number["minimum"]),
            decimal(&number["maximum"]),
            decimal(&number["multipleOf"]),
        );
        let documented = |value: &serde_json::Value| match value {
            serde_json::Value::String(_) => string.is_valid(value),
            serde_json::Value::Number(_) => {
                let n = decimal(value);
                n >= min && n <= max && (n / &step).is_integer()
            }
            _ => false,
        };
        for literal in [
            "0",
            "0.5",
            "19.99",
            "0.29",
            "0.57",
            "1e2",
            "1.5e1",
            "1E+2",
            "5.00",
            "-0",
            "-0.0",
            "9999999999.99",
            "0.001",
            "1e-7",
            "0.1e-1",
            "9999999999.995",
            "1e10",
            "-0.01",
            "123456.789",
            "\"19.99\"",
            "\"0\"",
            "\"0.5\"",
            "\"9999999999.99\"",
            "\"1e2\"",
            "\" 5\"",
            "\"+5\"",
            "\"5.\"",
            "\".5\"",
            "\"1.000\"",
            "\"00000000001\"",
            "\"-0\"",
            "\"\"",
            "\"19,99\"",
            "\"0x10\"",
            "true",
            "null",
            "[]",
        ] {
            let value: serde_json::Value = serde_json::from_str(literal).unwrap();
            assert_eq!(
                documented(&value),
                parse_price(&raw(literal)).is_ok(),
                "the document and parse_price disagree on {literal}"
            );
        }
    }

    #[test]
    /// Negative, over-precise, too large, or non-numeric prices are rejected.
    fn bad_prices_are_rejected() {
        for bad in [
            "-1",
            "1.234",
            "\"abc\"",
            "true",
            "null",
            "{}",
            "10000000000",
            "\"1,5\"",
            "\"\"",
            "\"NaN\"",
            "\"1e2\"",
            "\" 5\"",
            "\"1.000\"",
        ] {
            assert!(parse_price(&raw(bad)).is_err(), "{bad} accepted");
        }
    }
}
