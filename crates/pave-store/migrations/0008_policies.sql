-- Policy modules applied through the API (those from files are read at start).
CREATE TABLE policies (
    name TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
