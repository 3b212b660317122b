-- Trending: a second forward-decayed accumulator per product with a short half-life
-- (RANKING_TRENDING_HALF_LIFE), kept beside the popularity one by the same transactions, and
-- its own base time (it is rebased on its own schedule).
ALTER TABLE rec_scores ADD COLUMN trend double precision NOT NULL DEFAULT 0;
ALTER TABLE rec_state ADD COLUMN trend_t0 timestamptz NOT NULL DEFAULT now();
