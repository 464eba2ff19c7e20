-- Blueprints registered through the API; those from files are read at start.
-- A version is immutable: a changed blueprint is a new version.
CREATE TABLE blueprints (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    document TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);
