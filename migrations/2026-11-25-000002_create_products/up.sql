-- The product catalog. Ids are UUIDv7 (time ordered), so keyset pagination by id lists oldest first.
-- Deletion is soft: deleted_at is set and version bumped, so the product.deleted event has a version.
CREATE TABLE products (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    price       NUMERIC(12, 2) NOT NULL CHECK (price >= 0),
    category    TEXT,
    description TEXT,
    version     INTEGER NOT NULL DEFAULT 1,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at  TIMESTAMPTZ
);
CREATE INDEX products_live_category_idx ON products (category, id) WHERE deleted_at IS NULL;
