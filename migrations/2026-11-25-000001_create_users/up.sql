-- Accounts of the users service. Email is unique case-insensitively; a password is an argon2id hash.
CREATE TABLE users (
    id            UUID PRIMARY KEY,
    name          TEXT NOT NULL,
    email         TEXT NOT NULL,
    password_hash TEXT,
    role          TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

-- Every action a user recorded (view, cart_add, cart_remove, purchase); id is the event id.
CREATE TABLE user_activity (
    id          UUID PRIMARY KEY,
    user_id     UUID NOT NULL REFERENCES users (id),
    product_id  UUID NOT NULL,
    action      TEXT NOT NULL CHECK (action IN ('view', 'cart_add', 'cart_remove', 'purchase')),
    quantity    INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    occurred_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX user_activity_user_idx ON user_activity (user_id, occurred_at);
