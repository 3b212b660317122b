ALTER TABLE rec_state DROP COLUMN trend_t0;
ALTER TABLE rec_scores DROP COLUMN trend;
