-- The answers of writes sent with an Idempotency-Key. A row is inserted by the transaction of
-- the write it answers, so it exists exactly when that write committed; a retry with the same
-- caller, key and request within 24 hours is answered from it instead of writing again. Rows
-- older than that are dead (a new request may reuse the key) and purged.
CREATE TABLE idempotency_keys (
    caller text NOT NULL,
    key text NOT NULL,
    fingerprint bytea NOT NULL,
    answer jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (caller, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
