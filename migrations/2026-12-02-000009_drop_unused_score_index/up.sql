-- rec_scores_acc_idx served no query: every ranking reads the catalog joined with its scores
-- and sorts (the order starts with whether a product has a score at all), so the planner never
-- walks it. Every applied batch changes the accumulators it is keyed by, so each update of a
-- score was a new index entry instead of an in-place (HOT) update: with one product bought over
-- and over, its dead entries piled up until the next autovacuum and each lookup walked them.
DROP INDEX rec_scores_acc_idx;
