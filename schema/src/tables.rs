//! Diesel table definitions of every table the migrations create, and only those:
//! `tests/api/schema.rs` compares each with the migrated database, column by column.

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

diesel::table! {
    /// The last publication number given out per (logical topic, stream); numbers are dense from
    /// 1 (see `recsys_actors::sequence`).
    outbox_sequences (topic, stream) {
        topic -> Text,
        /// The partition the relay chose for the key.
        stream -> Int4,
        last_seq -> Int8,
    }
}

diesel::table! {
    /// The stamps of outbox rows not yet acknowledged, one row per relay batch and stream:
    /// `outbox_ids[i]` (1-based) carries number `first_seq + i - 1`. Normally empty between
    /// batches.
    outbox_stamps (id) {
        id -> Int8,
        topic -> Text,
        stream -> Int4,
        first_seq -> Int8,
        outbox_ids -> Array<Int8>,
    }
}

diesel::table! {
    /// Where each consumer group resumes each partition, committed with the state it protects.
    consumer_offsets (consumer_group, topic, partition) {
        consumer_group -> Text,
        /// Physical topic name.
        topic -> Text,
        partition -> Int4,
        /// The offset of the next record to apply.
        next_offset -> Int8,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    /// What each consumer group has seen of each (physical topic, stream), committed with the
    /// state change and the positions.
    consumer_sequences (consumer_group, topic, stream) {
        consumer_group -> Text,
        topic -> Text,
        stream -> Int4,
        /// The highest number applied.
        last_seq -> Int8,
        /// Numbers below `last_seq` not seen yet: inclusive ranges, flattened
        /// `[from, to, from, to, ...]`.
        gaps -> Array<Int8>,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    /// The recommendations service's catalog projection from `product-updates`. A row may exist
    /// before its `product.created` arrives, so the descriptive columns are nullable.
    rec_catalog (product_id) {
        product_id -> Uuid,
        name -> Nullable<Text>,
        price -> Nullable<Numeric>,
        category -> Nullable<Text>,
        /// The newest version applied; older changes are ignored.
        version -> Int4,
        deleted -> Bool,
        /// `occurred_at` of `product.created` (cold-start order: newest first).
        created_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    /// The answers of writes sent with an `Idempotency-Key`, inserted by the write's own
    /// transaction; a row older than 24 hours is dead (the key may be used again) and purged.
    idempotency_keys (caller, key) {
        /// Who sent the key: `anonymous`, `user:<id>` or `api-key` (keys are per caller).
        caller -> Text,
        /// The `Idempotency-Key` header, 1 to 255 printable ASCII characters.
        key -> Text,
        /// HMAC-SHA-256 of the operation and its request, under a key derived from the token
        /// secret (a body may hold a password).
        fingerprint -> Bytea,
        /// What the write answered, as the service's own JSON (replayed as it was).
        answer -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    /// Rebuilds of a read model (`recsys rebuild`), by service: an unfinished one is resumed.
    projection_rebuilds (service) {
        /// `recommendations` or `analytics`.
        service -> Text,
        started_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
        /// The records to replay: the topics' end offsets at the start, summed.
        records -> Int8,
    }
}

diesel::table! {
    /// Per-user token versions: tokens issued at an older version are refused. A user without a
    /// row is at version 0; a password change or a logout everywhere raises it (and NOTIFYs
    /// `token_revocations` with `<user id>:<version>`).
    token_revocations (user_id) {
        user_id -> Uuid,
        /// Raised by one at each revocation; tokens carry it as their `ver` claim.
        version -> Int4,
        revoked_at -> Timestamptz,
    }
}

diesel::table! {
    /// Forward-decayed popularity: `acc` = Σ weight × quantity × 2^((t_event − t0) / half_life).
    rec_scores (product_id) {
        product_id -> Uuid,
        acc -> Float8,
        /// The trending accumulator: like `acc`, with the trending half-life and `trend_t0`.
        trend -> Float8,
        /// The product's category in `rec_catalog` (copied so that an index orders each
        /// category's scores); `None` for a product without one or not catalogued yet.
        category -> Nullable<Text>,
    }
}

diesel::table! {
    /// What each user did with each product (quantities), for personal rankings and
    /// co-occurrence.
    rec_user_products (user_id, product_id) {
        user_id -> Uuid,
        product_id -> Uuid,
        views -> Int8,
        cart_adds -> Int8,
        cart_removes -> Int8,
        purchases -> Int8,
    }
}

diesel::table! {
    /// One row (`id` 1): the forward-decay base time and the ranking generation, bumped by every
    /// applied batch and part of every cache key.
    rec_state (id) {
        id -> Int4,
        t0 -> Timestamptz,
        generation -> Int8,
        /// The base time of the trending accumulators.
        trend_t0 -> Timestamptz,
    }
}

diesel::table! {
    /// The analytics service's counters per product; created by whichever event arrives first.
    an_products (product_id) {
        product_id -> Uuid,
        views -> Int8,
        cart_adds -> Int8,
        cart_removes -> Int8,
        /// Purchase events; `units_sold` sums their quantities.
        purchases -> Int8,
        units_sold -> Int8,
        /// `product.updated` events.
        updates -> Int8,
        created_at -> Nullable<Timestamptz>,
        deleted_at -> Nullable<Timestamptz>,
        last_event_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    /// The analytics service's counters per user; created by whichever event arrives first.
    an_users (user_id) {
        user_id -> Uuid,
        registered_at -> Nullable<Timestamptz>,
        profile_updates -> Int8,
        views -> Int8,
        cart_adds -> Int8,
        cart_removes -> Int8,
        purchases -> Int8,
        units_bought -> Int8,
        /// All `user.activity` events of the user.
        activity_count -> Int8,
        last_active_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    /// Events per minute (of `occurred_at`) and type; hourly series and last-hour figures are
    /// sums over it.
    an_event_counts (minute, event_type) {
        minute -> Timestamptz,
        event_type -> Text,
        count -> Int8,
    }
}

diesel::table! {
    /// The analytics service's product counters per hour (of `occurred_at`): the top products
    /// of a recent window are sums over it.
    an_product_hours (hour, product_id) {
        hour -> Timestamptz,
        product_id -> Uuid,
        views -> Int8,
        cart_adds -> Int8,
        cart_removes -> Int8,
        purchases -> Int8,
        units_sold -> Int8,
        updates -> Int8,
    }
}

diesel::joinable!(user_activity -> users (user_id));
diesel::joinable!(rec_scores -> rec_catalog (product_id));
diesel::allow_tables_to_appear_in_same_query!(
    users,
    user_activity,
    products,
    outbox,
    outbox_sequences,
    outbox_stamps,
    idempotency_keys,
    token_revocations,
    projection_rebuilds,
    consumer_offsets,
    consumer_sequences,
    rec_catalog,
    rec_scores,
    rec_user_products,
    rec_state,
    an_products,
    an_users,
    an_event_counts,
    an_product_hours,
);

/// Every table of the schema, by name: what the migrations create (a test holds the two
/// together).
pub const ALL: [&str; 19] = [
    "users",
    "user_activity",
    "products",
    "outbox",
    "outbox_sequences",
    "outbox_stamps",
    "idempotency_keys",
    "token_revocations",
    "projection_rebuilds",
    "consumer_offsets",
    "consumer_sequences",
    "rec_catalog",
    "rec_scores",
    "rec_user_products",
    "rec_state",
    "an_products",
    "an_users",
    "an_event_counts",
    "an_product_hours",
];
