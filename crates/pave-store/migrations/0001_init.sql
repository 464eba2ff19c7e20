-- One schema for SQLite and PostgreSQL: TEXT, BIGINT and JSON kept as TEXT,
-- booleans as 0/1, times as milliseconds since the epoch.

CREATE TABLE targets (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE environments (
    name TEXT PRIMARY KEY,
    target TEXT NOT NULL REFERENCES targets(name),
    labels TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

INSERT INTO targets (name, kind, created_at) VALUES ('local', 'local', 0);
INSERT INTO environments (name, target, labels, created_at) VALUES ('local', 'local', '{}', 0);

CREATE TABLE actions (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    env TEXT NOT NULL,
    object TEXT NOT NULL,
    actor TEXT NOT NULL,
    input TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    error TEXT,
    result TEXT NOT NULL,
    idempotency_key TEXT,
    idempotency_scope TEXT UNIQUE,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX actions_by_state ON actions (state, id);
CREATE INDEX actions_by_lease ON actions (lease_owner, state);

CREATE TABLE steps (
    action_id TEXT NOT NULL REFERENCES actions(id),
    idx BIGINT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    idempotent BIGINT NOT NULL,
    state TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    spec TEXT NOT NULL,
    output TEXT NOT NULL,
    error TEXT,
    compensation TEXT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    PRIMARY KEY (action_id, idx)
);

CREATE TABLE action_logs (
    action_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    step BIGINT NOT NULL,
    stream TEXT NOT NULL,
    time BIGINT NOT NULL,
    line TEXT NOT NULL,
    PRIMARY KEY (action_id, seq)
);

-- One row per object an active action holds; the primary key is the lock.
CREATE TABLE object_locks (
    object TEXT PRIMARY KEY,
    action_id TEXT NOT NULL
);

CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY,
    time BIGINT NOT NULL,
    actor TEXT NOT NULL,
    verb TEXT NOT NULL,
    object TEXT NOT NULL,
    summary TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

-- The chain's head, locked by every append so that appends from several
-- control planes serialise.
CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    subject TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked_at BIGINT
);
