-- Secrets are sealed by the vault (envelope encryption) before they get here.
CREATE TABLE secrets (
    env TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (env, name)
);

CREATE TABLE resources (
    env TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    lifecycle TEXT NOT NULL,
    health TEXT,
    checked_at BIGINT,
    outputs TEXT NOT NULL,
    credentials TEXT NOT NULL,
    location TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (env, name)
);
