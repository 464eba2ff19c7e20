-- One row per action that policy sent for approval: why, who may approve,
-- the input as requested, and the decision with the reviewer's amendment.
CREATE TABLE approvals (
    action_id TEXT PRIMARY KEY,
    env TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    reasons TEXT NOT NULL,
    approver_role TEXT NOT NULL,
    approver_team TEXT,
    original_input TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    decision TEXT,
    decided_by TEXT,
    decided_at BIGINT,
    comment TEXT,
    amendment TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX approvals_pending ON approvals (decision, expires_at);
