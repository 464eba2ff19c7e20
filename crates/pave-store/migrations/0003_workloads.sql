-- A workload's revisions are immutable; the current one changes only after
-- a new revision became ready.
CREATE TABLE workloads (
    env TEXT NOT NULL,
    name TEXT NOT NULL,
    current_revision BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (env, name)
);

CREATE TABLE revisions (
    env TEXT NOT NULL,
    name TEXT NOT NULL,
    revision BIGINT NOT NULL,
    spec TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (env, name, revision)
);
