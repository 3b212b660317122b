CREATE INDEX rec_scores_acc_idx ON rec_scores (acc DESC, product_id);
