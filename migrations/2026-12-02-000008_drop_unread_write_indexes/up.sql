-- Every recorded action inserts a user_activity row and an outbox row; each index on them is
-- paid on that hot path. These two are read by no query: user_activity is looked up by its
-- id only, and nothing looks up the outbox by event id (consumers recognise copies by their
-- publication stamp, not by event id). Add an index back with the query that needs it.
DROP INDEX user_activity_user_idx;
ALTER TABLE outbox DROP CONSTRAINT outbox_event_id_key;
