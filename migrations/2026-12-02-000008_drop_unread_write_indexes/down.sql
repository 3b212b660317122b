ALTER TABLE outbox ADD CONSTRAINT outbox_event_id_key UNIQUE (event_id);
CREATE INDEX user_activity_user_idx ON user_activity (user_id, occurred_at);
