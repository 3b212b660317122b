CREATE TABLE processed_events (
    consumer_group TEXT NOT NULL,
    event_id       UUID NOT NULL,
    processed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
CREATE INDEX processed_events_age_idx ON processed_events (processed_at);
DROP TABLE consumer_sequences;
DROP TABLE outbox_stamps;
DROP TABLE outbox_sequences;
