//! [`ProductsActor`]: owns every write of the catalog. Each write and its `product.*` event are
//! committed in one transaction (the outbox), then the relay is woken to publish.

use actix::prelude::*;
use bigdecimal::BigDecimal;
use chrono::{DateTime, SubsecRound, Utc};
use diesel_async::AsyncConnection;
use recsys_actors::observe::ObservedRecipient;
use recsys_actors::outbox_relay::Wake;
use recsys_schema::events::{price_string, Envelope, Event, ProductDeleted, ProductSnapshot};
use serde::{Deserialize, Serialize};
use slog::{info, warn, Logger};
use uuid::Uuid;

use super::error::ProductsError;
use super::store::{self, ProductChanges, ProductRow};
use crate::db::Pool;
use crate::idempotency::{self, Answer, Claim};
use crate::outbox;

/// The products actor. Stateless apart from its handles, so a restart loses nothing.
pub struct ProductsActor {
    pool: Pool,
    /// Woken after each commit; `None` when no relay runs in this process.
    relay: Option<ObservedRecipient<Wake>>,
    logger: Logger,
}

impl ProductsActor {
    /// An actor writing through `pool`.
    pub fn new(pool: Pool, relay: Option<ObservedRecipient<Wake>>, logger: Logger) -> Self {
        Self {
            pool,
            relay,
            logger,
        }
    }

    /// Runs `work` with the pool; wakes the relay when it committed an event.
    fn write<T, F, Fut>(&self, work: F) -> ResponseFuture<Result<T, ProductsError>>
    where
        T: 'static,
        F: FnOnce(Pool) -> Fut + 'static,
        Fut: std::future::Future<Output = Result<T, ProductsError>> + 'static,
    {
        let pool = self.pool.clone();
        let relay = self.relay.clone();
        Box::pin(async move {
            let out = work(pool).await?;
            if let Some(relay) = relay {
                relay.do_send(Wake);
            }
            Ok(out)
        })
    }
}

impl Actor for ProductsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        info!(self.logger, "products actor started");
        idempotency::purge_while_running::<Self>(ctx, self.pool.clone(), self.logger.clone());
    }
}

impl Supervised for ProductsActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        warn!(self.logger, "products actor restarting");
    }
}

/// A product as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProductView {
    pub id: Uuid,
    pub name: String,
    /// Decimal string with two places.
    #[serde(serialize_with = "price_string::serialize")]
    #[schema(value_type = String, pattern = r"^[0-9]{1,10}\.[0-9]{2}$", examples("19.99"))]
    pub price: BigDecimal,
    /// `null` when the product has none.
    #[schema(required = true)]
    pub category: Option<String>,
    /// `null` when the product has none.
    #[schema(required = true)]
    pub description: Option<String>,
    /// 1 on creation, +1 on every change.
    #[schema(minimum = 1)]
    pub version: i32,
    /// RFC 3339, UTC.
    pub created_at: DateTime<Utc>,
    /// RFC 3339, UTC.
    pub updated_at: DateTime<Utc>,
}

impl From<ProductRow> for ProductView {
    fn from(row: ProductRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            price: row.price,
            category: row.category,
            description: row.description,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

fn snapshot(row: &ProductRow) -> ProductSnapshot {
    ProductSnapshot {
        product_id: row.id,
        name: row.name.clone(),
        price: row.price.clone(),
        category: row.category.clone(),
        version: row.version,
    }
}

/// One page of the catalog.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page {
    pub items: Vec<ProductView>,
    /// Pass as `after` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next: Option<Uuid>,
}

/// Adds a product (already validated).
#[derive(Debug, Message)]
#[rtype(result = "Result<Answer<ProductView>, ProductsError>")]
pub struct CreateProduct {
    pub name: String,
    pub price: BigDecimal,
    pub category: Option<String>,
    pub description: Option<String>,
    /// The request's `Idempotency-Key`, if it sent one.
    pub claim: Option<Claim>,
}

/// Inserts the product (version 1) and `product.created`. A keyed creation already made answers
/// the product as it was created and writes nothing.
impl Handler<CreateProduct> for ProductsActor {
    type Result = ResponseFuture<Result<Answer<ProductView>, ProductsError>>;

    fn handle(&mut self, msg: CreateProduct, _: &mut Self::Context) -> Self::Result {
        let logger = self.logger.clone();
        self.write(move |pool| async move {
            let now = Utc::now().trunc_subsecs(6);
            let row = ProductRow {
                id: Uuid::now_v7(),
                name: msg.name,
                price: msg.price.with_scale(2),
                category: msg.category,
                description: msg.description,
                version: 1,
                created_at: now,
                updated_at: now,
                deleted_at: None,
            };
            let claim = msg.claim;
            let answer = pool
                .get()
                .await?
                .transaction(async move |conn| -> Result<_, ProductsError> {
                    let claim = claim.as_ref();
                    if let Some(product) = idempotency::replay(conn, claim).await? {
                        return Ok(Answer {
                            value: product,
                            replayed: true,
                        });
                    }
                    store::insert(conn, &row).await?;
                    let event = Event::ProductCreated(snapshot(&row));
                    outbox::enqueue(conn, [&Envelope::at(event, now)]).await?;
                    let product = ProductView::from(row);
                    idempotency::record(conn, claim, &product).await?;
                    Ok(Answer::fresh(product))
                })
                .await?;
            if !answer.replayed {
                info!(logger, "product created"; "product_id" => %answer.value.id);
            }
            Ok(answer)
        })
    }
}

/// Reads one live product.
#[derive(Debug, Message)]
#[rtype(result = "Result<ProductView, ProductsError>")]
pub struct GetProduct {
    pub id: Uuid,
}

/// Answers the product, or [`ProductsError::ProductNotFound`] (also for deleted ones).
impl Handler<GetProduct> for ProductsActor {
    type Result = ResponseFuture<Result<ProductView, ProductsError>>;

    fn handle(&mut self, msg: GetProduct, _: &mut Self::Context) -> Self::Result {
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut conn = pool.get().await?;
            store::find_live(&mut conn, msg.id)
                .await?
                .map(ProductView::from)
                .ok_or_else(|| ProductsError::ProductNotFound)
        })
    }
}

/// Lists live products page by page (keyset pagination on the id).
#[derive(Debug, Message)]
#[rtype(result = "Result<Page, ProductsError>")]
pub struct ListProducts {
    /// Only products of any of these categories; empty: every product.
    pub categories: Vec<String>,
    /// 1..=100.
    pub limit: i64,
    pub after: Option<Uuid>,
}

/// Answers one page; `next` is set only when more products follow.
impl Handler<ListProducts> for ProductsActor {
    type Result = ResponseFuture<Result<Page, ProductsError>>;

    fn handle(&mut self, msg: ListProducts, _: &mut Self::Context) -> Self::Result {
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut conn = pool.get().await?;
            let mut rows =
                store::list(&mut conn, &msg.categories, msg.after, msg.limit + 1).await?;
            let more = rows.len() as i64 > msg.limit;
            rows.truncate(msg.limit as usize);
            let next = if more {
                rows.last().map(|r| r.id)
            } else {
                None
            };
            Ok(Page {
                items: rows.into_iter().map(ProductView::from).collect(),
                next,
            })
        })
    }
}

/// Changes any of the product's fields (already validated).
#[derive(Debug, Message)]
#[rtype(result = "Result<ProductView, ProductsError>")]
pub struct UpdateProduct {
    pub id: Uuid,
    pub changes: ProductChanges,
}

/// Updates the product (version + 1) and emits `product.updated` with the new state.
impl Handler<UpdateProduct> for ProductsActor {
    type Result = ResponseFuture<Result<ProductView, ProductsError>>;

    fn handle(&mut self, msg: UpdateProduct, _: &mut Self::Context) -> Self::Result {
        let logger = self.logger.clone();
        self.write(move |pool| async move {
            let now = Utc::now().trunc_subsecs(6);
            let row = pool
                .get()
                .await?
                .transaction(async move |conn| -> Result<_, ProductsError> {
                    let row = store::update(conn, msg.id, &msg.changes, now)
                        .await?
                        .ok_or_else(|| ProductsError::ProductNotFound)?;
                    let event = Event::ProductUpdated(snapshot(&row));
                    outbox::enqueue(conn, [&Envelope::at(event, now)]).await?;
                    Ok(row)
                })
                .await?;
            info!(logger, "product updated"; "product_id" => %row.id, "version" => row.version);
            Ok(ProductView::from(row))
        })
    }
}

/// Removes a product from the catalog.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), ProductsError>")]
pub struct DeleteProduct {
    pub id: Uuid,
}

/// Soft-deletes the product (version + 1) and emits `product.deleted`;
/// [`ProductsError::ProductNotFound`] when absent.
impl Handler<DeleteProduct> for ProductsActor {
    type Result = ResponseFuture<Result<(), ProductsError>>;

    fn handle(&mut self, msg: DeleteProduct, _: &mut Self::Context) -> Self::Result {
        let logger = self.logger.clone();
        self.write(move |pool| async move {
            let now = Utc::now().trunc_subsecs(6);
            let id = msg.id;
            let version = pool
                .get()
                .await?
                .transaction(async move |conn| -> Result<_, ProductsError> {
                    let version = store::delete(conn, id, now)
                        .await?
                        .ok_or_else(|| ProductsError::ProductNotFound)?;
                    let event = Event::ProductDeleted(ProductDeleted {
                        product_id: id,
                        version,
                    });
                    outbox::enqueue(conn, [&Envelope::at(event, now)]).await?;
                    Ok(version)
                })
                .await?;
            info!(logger, "product deleted"; "product_id" => %id, "version" => version);
            Ok(())
        })
    }
}

recsys_actors::observed_handlers!(ProductsActor => CreateProduct, GetProduct, ListProducts, UpdateProduct, DeleteProduct);
recsys_actors::restart_on_fail!(ProductsActor);
