-- Statistics of the analytics service, built only from the two topics. Activity for a product
-- or user not (yet) known is counted: rows are created by whichever event arrives first.

CREATE TABLE an_products (
    product_id    UUID PRIMARY KEY,
    views         BIGINT NOT NULL DEFAULT 0,
    cart_adds     BIGINT NOT NULL DEFAULT 0,
    cart_removes  BIGINT NOT NULL DEFAULT 0,
    -- Purchase events; units_sold sums their quantities.
    purchases     BIGINT NOT NULL DEFAULT 0,
    units_sold    BIGINT NOT NULL DEFAULT 0,
    -- product.updated events.
    updates       BIGINT NOT NULL DEFAULT 0,
    created_at    TIMESTAMPTZ,
    deleted_at    TIMESTAMPTZ,
    last_event_at TIMESTAMPTZ
);

CREATE TABLE an_users (
    user_id         UUID PRIMARY KEY,
    registered_at   TIMESTAMPTZ,
    profile_updates BIGINT NOT NULL DEFAULT 0,
    views           BIGINT NOT NULL DEFAULT 0,
    cart_adds       BIGINT NOT NULL DEFAULT 0,
    cart_removes    BIGINT NOT NULL DEFAULT 0,
    purchases       BIGINT NOT NULL DEFAULT 0,
    units_bought    BIGINT NOT NULL DEFAULT 0,
    -- All user.activity events of the user.
    activity_count  BIGINT NOT NULL DEFAULT 0,
    last_active_at  TIMESTAMPTZ
);
CREATE INDEX an_users_active_idx ON an_users (last_active_at);

-- Event counts per minute and type (by occurred_at); hourly series and "last hour" figures
-- are sums over it.
CREATE TABLE an_event_counts (
    minute     TIMESTAMPTZ NOT NULL,
    event_type TEXT NOT NULL,
    count      BIGINT NOT NULL,
    PRIMARY KEY (minute, event_type)
);
