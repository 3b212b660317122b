-- Per-user token versions. A token carries the version its user had when it was issued; once
-- the user changes their password or logs out everywhere, the version goes up, and every
-- service refuses tokens of an older version. A user without a row is at version 0. Each change
-- is announced with NOTIFY token_revocations, '<user id>:<version>' (on commit), so every
-- runtime updates its in-memory list at once. Only rows younger than a token's lifetime (24 h)
-- can refuse a live token; older rows still give new tokens their version.
CREATE TABLE token_revocations (
    user_id uuid PRIMARY KEY,
    version integer NOT NULL CHECK (version > 0),
    revoked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX token_revocations_revoked_at ON token_revocations (revoked_at);
