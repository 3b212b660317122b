-- Publication sequences replace the set of applied event ids (see the README's "Consuming").
-- Before it first sends an outbox row, the relay stamps it with a stream (the partition it
-- chose for the key) and the next number of that (topic, stream), and commits the stamp; every
-- copy of the record carries the same stamp. Consumers keep per stream the highest number
-- applied and the missing numbers below it: a few integers per stream, not a row per event.

-- The last number given out per (logical topic, stream); numbers are dense from 1.
CREATE TABLE outbox_sequences (
    topic    TEXT NOT NULL,
    stream   INTEGER NOT NULL,
    last_seq BIGINT NOT NULL,
    PRIMARY KEY (topic, stream)
);

-- The stamps of outbox rows not yet acknowledged, one row per relay batch and stream: outbox
-- row outbox_ids[i] (1-based) carries number first_seq + i - 1. Written before the rows are
-- sent; deleted once none of its rows is left. Normally empty between batches.
CREATE TABLE outbox_stamps (
    id         BIGSERIAL PRIMARY KEY,
    topic      TEXT NOT NULL,
    stream     INTEGER NOT NULL,
    first_seq  BIGINT NOT NULL,
    outbox_ids BIGINT[] NOT NULL
);

-- What each consumer group has seen of each (physical topic, stream). Committed in the same
-- transaction as the state change and the positions.
CREATE TABLE consumer_sequences (
    consumer_group TEXT NOT NULL,
    topic          TEXT NOT NULL,
    stream         INTEGER NOT NULL,
    -- The highest number applied.
    last_seq       BIGINT NOT NULL,
    -- Numbers below last_seq not seen yet: inclusive ranges, flattened [from, to, from, to, ...].
    gaps           BIGINT[] NOT NULL DEFAULT '{}',
    updated_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, stream)
);

DROP TABLE processed_events;
