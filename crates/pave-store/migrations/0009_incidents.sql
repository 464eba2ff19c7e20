-- Problems the detectors found, with evidence, root-cause analysis, typed
-- proposals and a timeline (the document), and what the remediation did.
CREATE TABLE incidents (
    id TEXT PRIMARY KEY,
    env TEXT NOT NULL,
    object TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    opened_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX incidents_object ON incidents (object, kind, state);
