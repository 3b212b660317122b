-- Transactional outbox: a state change and its event are written in one transaction; the relay
-- publishes rows in id order and deletes them once the broker acknowledged them.
CREATE TABLE outbox (
    id         BIGSERIAL PRIMARY KEY,
    topic      TEXT NOT NULL,
    key        TEXT NOT NULL,
    event_id   UUID NOT NULL UNIQUE,
    payload    TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
