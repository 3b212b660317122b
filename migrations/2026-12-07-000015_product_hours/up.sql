-- The analytics counters of each product per hour (of `occurred_at`), so that the top products
-- can be asked for a recent window (`GET /analytics/products/top?window=`). Folded by the same
-- transaction as an_products; filled for events applied from now on (`recsys rebuild analytics`
-- fills it for the whole history).
CREATE TABLE an_product_hours (
    hour timestamptz NOT NULL,
    product_id uuid NOT NULL,
    views int8 NOT NULL DEFAULT 0,
    cart_adds int8 NOT NULL DEFAULT 0,
    cart_removes int8 NOT NULL DEFAULT 0,
    purchases int8 NOT NULL DEFAULT 0,
    units_sold int8 NOT NULL DEFAULT 0,
    updates int8 NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, product_id)
);
