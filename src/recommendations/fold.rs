//! [`Fold`]: one batch of events folded in memory into what the ranking writes: score deltas,
//! per user-product counters and the newest catalog change per product, which
//! [`super::store::apply`] writes in one transaction.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use recsys_schema::events::ProductSnapshot;
use uuid::Uuid;

use super::score::{Decays, Weights};
use crate::consumption::{Fact, ProductChange, What};

/// A catalog change, the newest version per product in a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum CatalogChange {
    /// `product.created` (with its time) or `product.updated`.
    Upsert {
        snapshot: ProductSnapshot,
        created_at: Option<DateTime<Utc>>,
    },
    /// `product.deleted`.
    Deleted { version: i32 },
}

impl CatalogChange {
    fn version(&self) -> i32 {
        match self {
            CatalogChange::Upsert { snapshot, .. } => snapshot.version,
            CatalogChange::Deleted { version } => *version,
        }
    }
}

/// What a batch adds to one product's two accumulators.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ScoreDelta {
    /// To `acc` (popularity half-life, base time `t0`).
    pub popular: f64,
    /// To `trend` (trending half-life, base time `trend_t0`).
    pub trending: f64,
}

/// One batch folded in memory: what to add and upsert.
#[derive(Debug, Default)]
pub struct Fold {
    /// Accumulator deltas per product.
    pub scores: HashMap<Uuid, ScoreDelta>,
    /// (user, product) → [views, cart_adds, cart_removes, purchases] deltas (quantities).
    pub user_products: HashMap<(Uuid, Uuid), [i64; 4]>,
    /// The newest change per product.
    pub catalog: HashMap<Uuid, CatalogChange>,
    /// The newest upsert of each product that a deletion later in the batch replaced in
    /// `catalog`: written before the deletion, so that the row keeps the product's description
    /// as it does when the two arrive in separate batches (the projection must not depend on
    /// where batches happen to end: `recsys rebuild` replays in other batches).
    pub superseded: HashMap<Uuid, CatalogChange>,
}

impl Fold {
    /// Whether the batch changes nothing a query reads.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty() && self.user_products.is_empty() && self.catalog.is_empty()
    }

    /// The products whose score or catalog row the batch changes: what the global rankings
    /// read of it.
    pub fn ranked_products(&self) -> Vec<Uuid> {
        sorted_unique(self.scores.keys().chain(self.catalogued_products()))
    }

    /// The products whose catalog row (and so, perhaps, category) the batch changes.
    pub fn catalog_products(&self) -> Vec<Uuid> {
        sorted_unique(self.catalogued_products())
    }

    fn catalogued_products(&self) -> impl Iterator<Item = &Uuid> {
        self.catalog.keys().chain(self.superseded.keys())
    }

    /// Folds one event: `decays` are the popularity and the trending decay.
    pub fn add(&mut self, fact: &Fact, decays: &Decays, weights: &Weights) {
        match &fact.what {
            What::Activity(a) => {
                let weight = weights.of(a.action);
                let delta = self.scores.entry(a.product_id).or_default();
                delta.popular += decays
                    .popular
                    .contribution(weight, a.quantity, fact.occurred_at);
                delta.trending +=
                    decays
                        .trending
                        .contribution(weight, a.quantity, fact.occurred_at);
                let counters = self
                    .user_products
                    .entry((a.user_id, a.product_id))
                    .or_default();
                let slot = recsys_schema::events::Action::ALL
                    .iter()
                    .position(|x| *x == a.action)
                    .expect("every action is listed");
                counters[slot] += i64::from(a.quantity);
            }
            What::ProductCreated(change) => self.catalog_change(
                change.product_id,
                CatalogChange::Upsert {
                    snapshot: snapshot_of(change),
                    created_at: Some(fact.occurred_at),
                },
            ),
            What::ProductUpdated(change) => self.catalog_change(
                change.product_id,
                CatalogChange::Upsert {
                    snapshot: snapshot_of(change),
                    created_at: None,
                },
            ),
            What::ProductDeleted(d) => {
                self.catalog_change(d.product_id, CatalogChange::Deleted { version: d.version })
            }
            What::UserRegistered { .. } | What::UserUpdated { .. } => {}
        }
    }

    fn catalog_change(&mut self, product_id: Uuid, change: CatalogChange) {
        match self.catalog.get_mut(&product_id) {
            Some(current) if current.version() >= change.version() => {}
            Some(current) => {
                // Keep the creation time of an earlier product.created in the same batch.
                let created = match current {
                    CatalogChange::Upsert { created_at, .. } => *created_at,
                    CatalogChange::Deleted { .. } => None,
                };
                let replaced = std::mem::replace(
                    current,
                    match change {
                        CatalogChange::Upsert {
                            snapshot,
                            created_at,
                        } => CatalogChange::Upsert {
                            snapshot,
                            created_at: created_at.or(created),
                        },
                        deleted => deleted,
                    },
                );
                if let (CatalogChange::Upsert { .. }, CatalogChange::Deleted { .. }) =
                    (&replaced, &*current)
                {
                    self.superseded.insert(product_id, replaced);
                }
            }
            None => {
                self.catalog.insert(product_id, change);
            }
        }
    }
}

/// The new state of a changed product. The recommendations consumer decodes with
/// [`Snapshots::Keep`](crate::consumption::Snapshots::Keep), so every change carries one.
fn snapshot_of(change: &ProductChange) -> ProductSnapshot {
    let snapshot = change
        .snapshot
        .as_deref()
        .expect("the recommendations consumer keeps product snapshots");
    snapshot.clone()
}

/// `ids` sorted, each once.
fn sorted_unique<'a>(ids: impl Iterator<Item = &'a Uuid>) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = ids.copied().collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recommendations::score::tests::decay;
    use crate::recommendations::score::Decay;
    use bigdecimal::BigDecimal;
    use recsys_schema::events::{
        Action, Envelope, Event, ProductDeleted, UserActivity, UserRegistered,
    };

    fn at(event: Event, hours: i64) -> Fact {
        Envelope::at(event, decay().t0 + chrono::Duration::hours(hours)).into()
    }

    fn snapshot(id: Uuid, version: i32) -> ProductSnapshot {
        ProductSnapshot {
            product_id: id,
            name: format!("v{version}"),
            price: BigDecimal::from(version),
            category: None,
            version,
        }
    }

    #[test]
    /// A batch of mixed events folds into per-product score deltas, per user-product counters
    /// (quantities), and the newest catalog version; user events change nothing.
    fn folding_a_mixed_batch() {
        let (user, p1, p2) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let activity = |product, action, quantity| {
            Event::UserActivity(UserActivity {
                user_id: user,
                product_id: product,
                action,
                quantity,
            })
        };
        let events = [
            at(
                Event::UserRegistered(UserRegistered {
                    user_id: user,
                    name: "u".into(),
                }),
                0,
            ),
            at(activity(p1, Action::View, 1), 0),
            at(activity(p1, Action::Purchase, 2), 1),
            at(activity(p2, Action::CartAdd, 1), 0),
            at(activity(p2, Action::CartRemove, 1), 0),
            at(Event::ProductCreated(snapshot(p1, 1)), 0),
            at(Event::ProductUpdated(snapshot(p1, 3)), 0),
            at(Event::ProductUpdated(snapshot(p1, 2)), 0),
            at(
                Event::ProductDeleted(ProductDeleted {
                    product_id: p2,
                    version: 4,
                }),
                0,
            ),
        ];
        let decays = Decays {
            popular: decay(),
            trending: Decay {
                half_life: std::time::Duration::from_secs(1800),
                ..decay()
            },
        };
        let mut fold = Fold::default();
        for e in &events {
            fold.add(e, &decays, &Weights::default());
        }
        // The purchase an hour after t0: one popularity half-life, two trending ones.
        assert_eq!(fold.scores[&p1].popular, 1.0 + 10.0 * 2.0 * 2.0);
        assert_eq!(fold.scores[&p1].trending, 1.0 + 10.0 * 2.0 * 4.0);
        assert_eq!(fold.scores[&p2], ScoreDelta::default());
        assert_eq!(fold.user_products[&(user, p1)], [1, 0, 0, 2]);
        assert_eq!(fold.user_products[&(user, p2)], [0, 1, 1, 0]);
        match &fold.catalog[&p1] {
            CatalogChange::Upsert {
                snapshot,
                created_at,
            } => {
                assert_eq!(snapshot.version, 3);
                assert_eq!(*created_at, Some(decay().t0));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(fold.catalog[&p2], CatalogChange::Deleted { version: 4 });
    }

    /// A product created and deleted in one batch keeps its description, as it does when the
    /// two arrive in separate batches: the creation is written first.
    #[test]
    fn a_deletion_after_a_creation_in_one_batch_keeps_the_creation() {
        let p = Uuid::new_v4();
        let mut fold = Fold::default();
        let decays = Decays {
            popular: decay(),
            trending: decay(),
        };
        for event in [
            Event::ProductCreated(snapshot(p, 1)),
            Event::ProductDeleted(ProductDeleted {
                product_id: p,
                version: 2,
            }),
        ] {
            fold.add(&at(event, 0), &decays, &Weights::default());
        }
        assert_eq!(fold.catalog[&p], CatalogChange::Deleted { version: 2 });
        match &fold.superseded[&p] {
            CatalogChange::Upsert {
                snapshot,
                created_at,
            } => {
                assert_eq!(snapshot.version, 1);
                assert_eq!(*created_at, Some(decay().t0));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
