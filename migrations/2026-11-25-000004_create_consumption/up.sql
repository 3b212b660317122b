-- Consumer bookkeeping shared by every consuming service (one row set per consumer group).
-- Positions and the state they protect are committed in the same transaction, so a restart
-- resumes exactly after the last applied record.
CREATE TABLE consumer_offsets (
    consumer_group TEXT NOT NULL,
    topic          TEXT NOT NULL,
    partition      INTEGER NOT NULL,
    -- The offset of the next record to apply.
    next_offset    BIGINT NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

-- Event ids already applied by a group: an event published twice is applied once.
CREATE TABLE processed_events (
    consumer_group TEXT NOT NULL,
    event_id       UUID NOT NULL,
    processed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
CREATE INDEX processed_events_age_idx ON processed_events (processed_at);
