-- People, teams and the roles bound to them (per environment, or '*' for all).
-- The built-in admin (whose token is printed on first start) is admin everywhere.
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE teams (
    name TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE team_members (
    team TEXT NOT NULL,
    user_name TEXT NOT NULL,
    PRIMARY KEY (team, user_name)
);

CREATE TABLE role_bindings (
    subject_kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    env TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (subject_kind, subject, env)
);

INSERT INTO users (name, created_at) VALUES ('admin', 0);
INSERT INTO role_bindings (subject_kind, subject, env, role, created_at) VALUES ('user', 'admin', '*', 'admin', 0);
