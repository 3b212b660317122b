-- A rebuild of a read model (`recsys rebuild recommendations|analytics`) in progress or done:
-- written when the projection is wiped, finished when the replay has caught up with the topics
-- as they were at the start. An unfinished row makes the next `recsys rebuild` resume the
-- replay instead of wiping again.
CREATE TABLE projection_rebuilds (
    service text PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    -- Records up to the topics' end offsets when the rebuild started.
    records bigint NOT NULL
);
