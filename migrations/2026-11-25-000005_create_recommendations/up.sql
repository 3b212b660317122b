-- The recommendations service's own state, built only from the two topics.

-- Catalog projection from product-updates; a row may exist before its product.created arrives
-- (deleted first, or activity first), so descriptive columns are nullable.
CREATE TABLE rec_catalog (
    product_id UUID PRIMARY KEY,
    name       TEXT,
    price      NUMERIC(12, 2),
    category   TEXT,
    version    INTEGER NOT NULL,
    deleted    BOOLEAN NOT NULL DEFAULT false,
    -- occurred_at of product.created (cold-start order: newest first).
    created_at TIMESTAMPTZ
);
CREATE INDEX rec_catalog_category_idx ON rec_catalog (category) WHERE NOT deleted;

-- Forward-decayed popularity: acc = sum of weight * quantity * 2^((t_event - t0) / half_life).
-- Ranking by acc equals ranking by the decayed score at any instant.
CREATE TABLE rec_scores (
    product_id UUID PRIMARY KEY,
    acc        DOUBLE PRECISION NOT NULL
);
CREATE INDEX rec_scores_acc_idx ON rec_scores (acc DESC, product_id);

-- What each user did with each product (quantities), for personalisation and co-occurrence.
CREATE TABLE rec_user_products (
    user_id      UUID NOT NULL,
    product_id   UUID NOT NULL,
    views        BIGINT NOT NULL DEFAULT 0,
    cart_adds    BIGINT NOT NULL DEFAULT 0,
    cart_removes BIGINT NOT NULL DEFAULT 0,
    purchases    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, product_id)
);
CREATE INDEX rec_user_products_product_idx ON rec_user_products (product_id);

-- One row: the forward-decay base time and the ranking generation (bumped on every flush; part
-- of every cache key).
CREATE TABLE rec_state (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    t0         TIMESTAMPTZ NOT NULL,
    generation BIGINT NOT NULL
);
INSERT INTO rec_state (id, t0, generation) VALUES (1, now(), 1);
