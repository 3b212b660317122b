DROP INDEX rec_scores_category_trend_idx;
DROP INDEX rec_scores_category_acc_idx;
DROP INDEX rec_scores_trend_idx;
DROP INDEX rec_scores_acc_idx;
ALTER TABLE rec_scores DROP COLUMN category;
