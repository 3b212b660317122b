//! Routes of the products service. Reads are public; writes need an admin token. Prices arrive
//! as a JSON string or number and are parsed from their literal text, never through a float.

use std::str::FromStr;

use actix_web::{web, HttpResponse};
use bigdecimal::{BigDecimal, Signed};
use recsys_actors::observe::ObservedAddr;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::actor::{
    CreateProduct, DeleteProduct, GetProduct, ListProducts, ProductsActor, UpdateProduct,
};
use super::store::ProductChanges;
use crate::auth::Admin;
use crate::error::ApiError;
use crate::validate;

const MAX_NAME: usize = 200;
const MAX_CATEGORY: usize = 100;
const MAX_DESCRIPTION: usize = 5000;

/// Registers the products routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/products")
            .route(web::get().to(list_products))
            .route(web::post().to(create_product)),
    )
    .service(web::resource("/products/create").route(web::post().to(create_product)))
    .service(
        web::resource("/products/{id}")
            .route(web::get().to(get_product))
            .route(web::put().to(update_product))
            .route(web::patch().to(update_product))
            .route(web::delete().to(delete_product)),
    );
}

/// The largest price NUMERIC(12, 2) holds.
fn max_price() -> BigDecimal {
    BigDecimal::from_str("9999999999.99").expect("literal")
}

/// A price from its JSON literal: a string (`"19.99"`) or a number (`19.99`); at most two
/// decimal places, not negative, below 10^10.
pub fn parse_price(raw: &RawValue) -> Result<BigDecimal, ApiError> {
    let invalid =
        || ApiError::invalid("price must be a non-negative decimal with at most 2 decimal places");
    let text = raw.get().trim();
    let literal = if text.starts_with('"') {
        serde_json::from_str::<String>(text).map_err(|_| invalid())?
    } else {
        text.to_string()
    };
    let literal = literal.trim();
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

/// `Some(None)` for an explicit `null`, `Some(Some(v))` for a value; absent fields stay `None`.
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /products`.
#[derive(Debug, Deserialize)]
struct CreateBody {
    name: String,
    price: Box<RawValue>,
    category: Option<String>,
    description: Option<String>,
}

async fn create_product(
    products: web::Data<ObservedAddr<ProductsActor>>,
    _admin: Admin,
    body: web::Json<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let msg = CreateProduct {
        name: validate::text("name", &body.name, MAX_NAME)?,
        price: parse_price(&body.price)?,
        category: validate::optional_text("category", body.category.as_deref(), MAX_CATEGORY)?,
        description: validate::optional_text(
            "description",
            body.description.as_deref(),
            MAX_DESCRIPTION,
        )?,
    };
    let product = products.send(msg).await??;
    Ok(HttpResponse::Created().json(product))
}

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

/// `GET /products?category=&limit=&after=`.
#[derive(Debug, Deserialize)]
struct ListQuery {
    category: Option<String>,
    limit: Option<i64>,
    after: Option<Uuid>,
}

async fn list_products(
    products: web::Data<ObservedAddr<ProductsActor>>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let msg = ListProducts {
        category: validate::optional_text("category", query.category.as_deref(), MAX_CATEGORY)?,
        limit: validate::limit(query.limit, 20, 100)?,
        after: query.after,
    };
    let page = products.send(msg).await??;
    Ok(HttpResponse::Ok().json(page))
}

/// `PUT`/`PATCH /products/{id}`: any subset of the fields; `null` clears category/description.
#[derive(Debug, Deserialize)]
struct UpdateBody {
    name: Option<String>,
    price: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "nullable")]
    category: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
}

async fn update_product(
    products: web::Data<ObservedAddr<ProductsActor>>,
    _admin: Admin,
    id: web::Path<Uuid>,
    body: web::Json<UpdateBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
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
        ] {
            assert!(parse_price(&raw(bad)).is_err(), "{bad} accepted");
        }
    }
}
