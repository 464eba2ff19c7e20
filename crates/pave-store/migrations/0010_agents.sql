-- Remote agents. A target served by one (`agent` = 1) is enrolled with a
-- single-use token (only its hash is kept) that `pave agent` exchanges for a
-- long-lived credential (again only the hash of its secret is kept).
ALTER TABLE targets ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
ALTER TABLE targets ADD COLUMN agent BIGINT NOT NULL DEFAULT 0;

CREATE TABLE agent_enrollments (
    token_hash TEXT PRIMARY KEY,
    target TEXT NOT NULL REFERENCES targets(name),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX agent_enrollments_target ON agent_enrollments (target);

CREATE TABLE agent_credentials (
    id TEXT PRIMARY KEY,
    target TEXT NOT NULL REFERENCES targets(name),
    secret_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    last_seen_at BIGINT,
    info TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX agent_credentials_target ON agent_credentials (target, created_at);
