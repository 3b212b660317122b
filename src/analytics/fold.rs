//! [`Fold`]: one batch of analytics events folded in memory into per-product, per-product-hour,
//! per-user and per-minute deltas, which [`super::store::apply`] writes with one upsert per
//! table.

use std::collections::HashMap;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use recsys_schema::events::Action;
use uuid::Uuid;

use crate::consumption::{Fact, What};

/// Deltas of one product.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProductDelta {
    pub views: i64,
    pub cart_adds: i64,
    pub cart_removes: i64,
    pub purchases: i64,
    pub units_sold: i64,
    pub updates: i64,
    pub created_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub last_event_at: Option<DateTime<Utc>>,
}

/// Deltas of one product in one hour.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HourDelta {
    pub views: i64,
    pub cart_adds: i64,
    pub cart_removes: i64,
    pub purchases: i64,
    pub units_sold: i64,
    pub updates: i64,
}

/// Deltas of one user.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct UserDelta {
    pub registered_at: Option<DateTime<Utc>>,
    pub profile_updates: i64,
    pub views: i64,
    pub cart_adds: i64,
    pub cart_removes: i64,
    pub purchases: i64,
    pub units_bought: i64,
    pub activity_count: i64,
    pub last_active_at: Option<DateTime<Utc>>,
}

/// One batch folded in memory.
#[derive(Debug, Default)]
pub struct Fold {
    pub products: HashMap<Uuid, ProductDelta>,
    pub users: HashMap<Uuid, UserDelta>,
    /// (minute, event type) → count.
    pub counts: HashMap<(DateTime<Utc>, &'static str), i64>,
    /// (hour, product) → the product's counters in that hour.
    pub product_hours: HashMap<(DateTime<Utc>, Uuid), HourDelta>,
}

fn later(a: Option<DateTime<Utc>>, b: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(a.map_or(b, |a| a.max(b)))
}

fn earlier(a: Option<DateTime<Utc>>, b: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(a.map_or(b, |a| a.min(b)))
}

impl Fold {
    /// Folds one event.
    pub fn add(&mut self, fact: &Fact) {
        let at = fact.occurred_at;
        let minute = at
            .duration_trunc(TimeDelta::minutes(1))
            .expect("a minute always divides a timestamp");
        *self
            .counts
            .entry((minute, fact.what.type_name()))
            .or_default() += 1;
        let hour = minute
            .duration_trunc(TimeDelta::hours(1))
            .expect("an hour always divides a timestamp");
        match &fact.what {
            What::UserRegistered { user_id } => {
                let user = self.users.entry(*user_id).or_default();
                user.registered_at = earlier(user.registered_at, at);
            }
            What::UserUpdated { user_id } => {
                self.users.entry(*user_id).or_default().profile_updates += 1
            }
            What::Activity(a) => {
                let quantity = i64::from(a.quantity);
                let in_hour = self.product_hours.entry((hour, a.product_id)).or_default();
                match a.action {
                    Action::View => in_hour.views += 1,
                    Action::CartAdd => in_hour.cart_adds += 1,
                    Action::CartRemove => in_hour.cart_removes += 1,
                    Action::Purchase => {
                        in_hour.purchases += 1;
                        in_hour.units_sold += quantity;
                    }
                }
                let product = self.products.entry(a.product_id).or_default();
                product.last_event_at = later(product.last_event_at, at);
                let user = self.users.entry(a.user_id).or_default();
                user.activity_count += 1;
                user.last_active_at = later(user.last_active_at, at);
                match a.action {
                    Action::View => {
                        product.views += 1;
                        user.views += 1;
                    }
                    Action::CartAdd => {
                        product.cart_adds += 1;
                        user.cart_adds += 1;
                    }
                    Action::CartRemove => {
                        product.cart_removes += 1;
                        user.cart_removes += 1;
                    }
                    Action::Purchase => {
                        product.purchases += 1;
                        product.units_sold += quantity;
                        user.purchases += 1;
                        user.units_bought += quantity;
                    }
                }
            }
            What::ProductCreated(change) => {
                let product = self.products.entry(change.product_id).or_default();
                product.created_at = earlier(product.created_at, at);
                product.last_event_at = later(product.last_event_at, at);
            }
            What::ProductUpdated(change) => {
                self.product_hours
                    .entry((hour, change.product_id))
                    .or_default()
                    .updates += 1;
                let product = self.products.entry(change.product_id).or_default();
                product.updates += 1;
                product.last_event_at = later(product.last_event_at, at);
            }
            What::ProductDeleted(d) => {
                let product = self.products.entry(d.product_id).or_default();
                product.deleted_at = later(product.deleted_at, at);
                product.last_event_at = later(product.last_event_at, at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumption::Snapshots;
    use chrono::TimeZone;
    use recsys_schema::events::{
        Envelope, Event, ProductDeleted, ProductSnapshot, UserActivity, UserRegistered, UserUpdated,
    };

    #[test]
    /// Mixed types, quantities and ids never seen before fold into exact counters, earliest
    /// creation, latest activity and per-minute counts.
    fn folding_a_mixed_batch() {
        let t = Utc.with_ymd_and_hms(2026, 3, 1, 10, 15, 30).unwrap();
        let (user, product, stranger) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let activity = |user_id, action, quantity| {
            Event::UserActivity(UserActivity {
                user_id,
                product_id: product,
                action,
                quantity,
            })
        };
        let snapshot = ProductSnapshot {
            product_id: product,
            name: "p".into(),
            price: 1.into(),
            category: None,
            version: 1,
        };
        let events = [
            Envelope::at(
                Event::UserRegistered(UserRegistered {
                    user_id: user,
                    name: "u".into(),
                }),
                t,
            ),
            Envelope::at(
                Event::UserUpdated(UserUpdated {
                    user_id: user,
                    name: "u".into(),
                    changed: vec![],
                }),
                t,
            ),
            Envelope::at(activity(user, Action::View, 1), t),
            Envelope::at(
                activity(user, Action::Purchase, 3),
                t + TimeDelta::minutes(2),
            ),
            Envelope::at(activity(stranger, Action::Purchase, 2), t),
            Envelope::at(activity(stranger, Action::CartAdd, 5), t),
            Envelope::at(activity(stranger, Action::CartRemove, 1), t),
            Envelope::at(
                Event::ProductCreated(snapshot.clone()),
                t - TimeDelta::hours(1),
            ),
            Envelope::at(
                Event::ProductUpdated(ProductSnapshot {
                    version: 2,
                    ..snapshot
                }),
                t,
            ),
            Envelope::at(
                Event::ProductDeleted(ProductDeleted {
                    product_id: product,
                    version: 3,
                }),
                t + TimeDelta::minutes(5),
            ),
        ];
        let mut fold = Fold::default();
        for e in &events {
            fold.add(&Fact::of(e.clone(), Snapshots::Drop));
        }
        let p = &fold.products[&product];
        assert_eq!(
            (
                p.views,
                p.cart_adds,
                p.cart_removes,
                p.purchases,
                p.units_sold,
                p.updates
            ),
            (1, 1, 1, 2, 5, 1)
        );
        assert_eq!(p.created_at, Some(t - TimeDelta::hours(1)));
        assert_eq!(p.deleted_at, Some(t + TimeDelta::minutes(5)));
        assert_eq!(p.last_event_at, Some(t + TimeDelta::minutes(5)));
        let u = &fold.users[&user];
        assert_eq!(
            (
                u.profile_updates,
                u.views,
                u.purchases,
                u.units_bought,
                u.activity_count
            ),
            (1, 1, 1, 3, 2)
        );
        assert_eq!(u.registered_at, Some(t));
        assert_eq!(u.last_active_at, Some(t + TimeDelta::minutes(2)));
        let s = &fold.users[&stranger];
        assert_eq!(
            (
                s.registered_at,
                s.activity_count,
                s.units_bought,
                s.cart_adds
            ),
            (None, 3, 2, 1)
        );
        let minute = Utc.with_ymd_and_hms(2026, 3, 1, 10, 15, 0).unwrap();
        assert_eq!(fold.counts[&(minute, "user.activity")], 4);
        let hour = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap();
        assert_eq!(
            fold.product_hours[&(hour, product)],
            HourDelta {
                views: 1,
                cart_adds: 1,
                cart_removes: 1,
                purchases: 2,
                units_sold: 5,
                updates: 1
            }
        );
        assert_eq!(
            fold.product_hours.len(),
            1,
            "creation and deletion count nothing"
        );
        assert_eq!(fold.counts.values().sum::<i64>(), events.len() as i64);
    }
}
