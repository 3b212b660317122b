//! Topic names and the JSON Schema document that every record of a topic satisfies.

/// Topic carrying `user.*` events, keyed by user id.
pub const USER_UPDATES: &str = "user-updates";
/// Topic carrying `product.*` events, keyed by product id.
pub const PRODUCT_UPDATES: &str = "product-updates";

/// JSON Schema (draft 2020-12) of a `user-updates` record value.
pub const USER_UPDATES_SCHEMA: &str = include_str!("../user-updates.schema.json");
/// JSON Schema (draft 2020-12) of a `product-updates` record value.
pub const PRODUCT_UPDATES_SCHEMA: &str = include_str!("../product-updates.schema.json");

/// Both topics, each with its schema document.
pub const ALL: [(&str, &str); 2] = [
    (USER_UPDATES, USER_UPDATES_SCHEMA),
    (PRODUCT_UPDATES, PRODUCT_UPDATES_SCHEMA),
];

/// The physical name of `topic` under `prefix` (`KAFKA_TOPIC_PREFIX`, empty by default).
pub fn prefixed(prefix: &str, topic: &str) -> String {
    format!("{prefix}{topic}")
}
