//! Diesel table definitions; they mirror the SQL in `migrations/` exactly.

diesel::table! {
    /// Accounts of the users service.
    users (id) {
        id -> Uuid,
        name -> Text,
        /// Unique case-insensitively (index on `lower(email)`).
        email -> Text,
        /// argon2id PHC string; `None` for an account registered without a password.
        password_hash -> Nullable<Text>,
        /// `user` or `admin`.
        role -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    /// Every recorded user action; `id` is the id of the `user.activity` event.
    user_activity (id) {
        id -> Uuid,
        user_id -> Uuid,
        product_id -> Uuid,
        /// `view`, `cart_add`, `cart_remove` or `purchase`.
        action -> Text,
        quantity -> Int4,
        occurred_at -> Timestamptz,
    }
}

diesel::table! {
    /// The product catalog; soft-deleted rows keep their id and version.
    products (id) {
        id -> Uuid,
        name -> Text,
        /// NUMERIC(12, 2): money is never a float.
        price -> Numeric,
        category -> Nullable<Text>,
        description -> Nullable<Text>,
        /// Starts at 1, +1 on every update and on deletion.
        version -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    /// Transactional outbox: events written with their state change, deleted once the broker
    /// acknowledged them. Their publication stamps are in `outbox_stamps` meanwhile.
    outbox (id) {
        /// Insertion order; rows are stamped in this order.
        id -> Int8,
        /// Logical topic name, without `KAFKA_TOPIC_PREFIX`.
        topic -> Text,
        /// Kafka message key (the user id or product id).
        key -> Text,
        event_id -> Uuid,
        /// The serialized [`crate::events::Envelope`].
        payload -> Text,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(user_activity -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(users, user_activity, products, outbox);
