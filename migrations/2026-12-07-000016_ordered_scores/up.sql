-- Rankings read in order: each accumulator has an index in its order, overall and per category,
-- so that a global or personal answer reads `limit` (plus the user's excluded products) rows of
-- each list it merges instead of the whole catalog. `category` is the product's category in
-- rec_catalog, copied here (kept by the ranking flush in the same transaction as the catalog)
-- because an index cannot span the two tables. The price: a score update is no longer HOT, each
-- one writes an entry in each index.
ALTER TABLE rec_scores ADD COLUMN category text;
UPDATE rec_scores s SET category = c.category FROM rec_catalog c WHERE c.product_id = s.product_id;
CREATE INDEX rec_scores_acc_idx ON rec_scores (acc DESC, product_id);
CREATE INDEX rec_scores_trend_idx ON rec_scores (trend DESC, product_id);
CREATE INDEX rec_scores_category_acc_idx ON rec_scores (category, acc DESC, product_id)
    WHERE category IS NOT NULL;
CREATE INDEX rec_scores_category_trend_idx ON rec_scores (category, trend DESC, product_id)
    WHERE category IS NOT NULL;
