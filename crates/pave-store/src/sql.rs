//! The SQL behind [`Store`], written once and instantiated for SQLite and
//! PostgreSQL by `sql_store!`. The schema uses only types both share, and the
//! SQL only `$N` placeholders, which both accept. The differences are the
//! pools (SQLite has one writer connection) and row locking clauses.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pave_core::audit::event_hash;
use pave_core::time::now_ms;
use pave_core::{Action, ActionError, ActionState, AuditDraft, AuditEvent, Step, StepState};
use serde_json::Value;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection, Row};

use crate::model::*;
use crate::{Result, Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

const APPROVAL_COLUMNS: &str = "action_id, env, requested_by, reasons, approver_role, approver_team, \
     original_input, expires_at, decision, decided_by, decided_at, comment, amendment, created_at";

const ACTION_COLUMNS: &str = "id, kind, env, object, actor, input, state, attempt, error, result, \
     idempotency_key, cancel_requested, created_at, updated_at";
const RESOURCE_COLUMNS: &str = "env, name, kind, spec, lifecycle, health, checked_at, outputs, credentials, \
     location, created_by, created_at, updated_at";
const STEP_COLUMNS: &str = "action_id, idx, name, kind, idempotent, state, attempt, spec, output, \
     error, compensation, started_at, finished_at";

/// SQLite in WAL mode: one writer connection (SQLite has one writer anyway, and
/// a single connection avoids lock upgrades failing with SQLITE_BUSY), several readers.
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file and applies migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode survives a crash of the process (kill -9);
            // only a power cut can lose the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // A bigger page cache and fewer, larger checkpoints: the queue churns
            // the same few pages, and every checkpoint syncs the database file.
            .pragma("cache_size", "-65536")
            .pragma("wal_autocheckpoint", "10000");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts.clone())
            .await?;
        MIGRATOR.run(&writer).await.map_err(StoreError::Migrate)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.read_only(true))
            .await?;
        Ok(SqliteStore { writer, reader })
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }
    fn reader(&self) -> &SqlitePool {
        &self.reader
    }
}

/// PostgreSQL: one pool; claims use `FOR UPDATE SKIP LOCKED` so that several
/// control planes share the queue without running a step twice.
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects and applies migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        let opts = sqlx::postgres::PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
        Ok(PgStore { pool })
    }

    fn writer(&self) -> &PgPool {
        &self.pool
    }
    fn reader(&self) -> &PgPool {
        &self.pool
    }
}

fn json_text(v: &Value) -> String {
    v.to_string()
}

fn revision_from_tuple(
    (env, name, revision, spec, created_by, created_at): (String, String, i64, String, String, i64),
) -> Result<RevisionRecord> {
    Ok(RevisionRecord {
        env,
        name,
        revision,
        spec: parse_json(&spec, "revision spec")?,
        created_by,
        created_at,
    })
}

fn parse_json(s: &str, what: &str) -> Result<Value> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn error_text(e: &Option<ActionError>) -> Option<String> {
    e.as_ref().map(|e| serde_json::to_string(e).unwrap_or_default())
}

fn parse_error(s: Option<String>) -> Result<Option<ActionError>> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("error: {e}"))))
        .transpose()
}

fn parse_action_state(s: &str) -> Result<ActionState> {
    ActionState::parse(s).ok_or_else(|| StoreError::Corrupt(format!("action state `{s}`")))
}

fn labels_text(labels: &std::collections::BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".into())
}

fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn scope(actor: &str, key: &str) -> String {
    format!("{actor}\n{key}")
}

/// Audit rows per multi-row INSERT (9 parameters each, well under both limits).
const AUDIT_ROWS_PER_INSERT: usize = 100;

/// One event waiting to be inserted with its transaction.
struct PendingEvent {
    seq: i64,
    time: i64,
    actor: String,
    verb: String,
    object: String,
    summary: String,
    details: String,
    prev_hash: String,
    hash: String,
}

/// Audit events of one transaction, chained in memory from the head read at
/// its start and inserted together before it commits.
struct AuditBuf {
    head: (i64, String),
    pending: Vec<PendingEvent>,
}

impl AuditBuf {
    fn new(head: (i64, String)) -> Self {
        AuditBuf {
            head,
            pending: Vec::new(),
        }
    }

    fn push(&mut self, d: &AuditDraft, now: i64) {
        let seq = self.head.0 + 1;
        let details = d.details.to_string();
        let hash = event_hash(
            seq,
            now,
            &d.actor,
            &d.verb,
            &d.object,
            &d.summary,
            &details,
            &self.head.1,
        );
        self.pending.push(PendingEvent {
            seq,
            time: now,
            actor: d.actor.clone(),
            verb: d.verb.clone(),
            object: d.object.clone(),
            summary: d.summary.clone(),
            details,
            prev_hash: std::mem::replace(&mut self.head.1, hash.clone()),
            hash,
        });
        self.head.0 = seq;
    }

    fn mark(&self) -> ((i64, String), usize) {
        (self.head.clone(), self.pending.len())
    }

    fn reset(&mut self, mark: ((i64, String), usize)) {
        self.head = mark.0;
        self.pending.truncate(mark.1);
    }
}

/// Whether a request can fail without the database failing (a precondition, a
/// unique key, a missing record), and so needs a savepoint of its own.
fn needs_savepoint(request: &[WriteOp]) -> bool {
    request.iter().any(|op| match op {
        WriteOp::InsertAction(a) => a.idempotency_key.is_some(),
        WriteOp::UpdateAction { expect, .. } => !expect.is_empty(),
        WriteOp::InsertToken(_)
        | WriteOp::InsertEnvironment(_)
        | WriteOp::SetEnvironmentLabels { .. }
        | WriteOp::DeleteEnvironment(_)
        | WriteOp::InsertBlueprint(_)
        | WriteOp::InsertUser { .. }
        | WriteOp::InsertTeam { .. }
        | WriteOp::AddTeamMember { .. }
        | WriteOp::RemoveTeamMember { .. }
        | WriteOp::PutBinding(_)
        | WriteOp::DeleteBinding { .. }
        | WriteOp::RevokeToken { .. }
        | WriteOp::DecideApproval { .. }
        | WriteOp::DeleteSecret { .. }
        | WriteOp::DeletePolicy { .. }
        | WriteOp::InsertTarget(_)
        | WriteOp::DeleteTarget(_)
        | WriteOp::InsertEnrollment { .. }
        | WriteOp::RedeemEnrollment { .. }
        | WriteOp::RevokeAgentCredentials { .. }
        | WriteOp::TouchAgentCredential { .. } => true,
        _ => false,
    })
}

/// An update or delete of exactly the record named by `what`: none is NotFound.
fn found(rows: u64, what: impl FnOnce() -> String) -> Result<OpResult> {
    if rows == 0 {
        Err(StoreError::NotFound(what()))
    } else {
        Ok(OpResult::Done)
    }
}

/// A unique-key failure named after what was being created.
fn conflict_as(e: sqlx::Error, what: String) -> StoreError {
    match StoreError::from(e) {
        StoreError::Conflict(_) => StoreError::Conflict(what),
        other => other,
    }
}

type IncidentRow = (String, String, String, String, String, i64, i64, String);

fn incident_from(
    (id, env, object, kind, state, opened_at, updated_at, doc): IncidentRow,
) -> Result<IncidentRecord> {
    Ok(IncidentRecord {
        id,
        env,
        object,
        kind,
        state,
        opened_at,
        updated_at,
        doc: parse_json(&doc, "incident")?,
    })
}

type WorkloadRow = (String, String, Option<i64>, Option<i64>, i64, i64);

fn workload_from(
    (env, name, current_revision, replicas, created_at, updated_at): WorkloadRow,
) -> WorkloadRecord {
    WorkloadRecord {
        env,
        name,
        current_revision,
        replicas: replicas.and_then(|r| u32::try_from(r).ok()),
        created_at,
        updated_at,
    }
}

const TARGET_COLUMNS: &str = "name, kind, agent, labels, created_at";
const AGENT_CREDENTIAL_COLUMNS: &str = "id, target, created_at, revoked_at, last_seen_at, info";

type TargetRow = (String, String, i64, String, i64);

fn target_from((name, kind, agent, labels, created_at): TargetRow) -> Result<TargetRecord> {
    Ok(TargetRecord {
        name,
        kind,
        agent: agent != 0,
        labels: serde_json::from_str(&labels)
            .map_err(|e| StoreError::Corrupt(format!("target labels: {e}")))?,
        created_at,
    })
}

type AgentCredentialRow = (String, String, i64, Option<i64>, Option<i64>, String);

fn agent_credential_from(
    (id, target, created_at, revoked_at, last_seen_at, info): AgentCredentialRow,
) -> Result<AgentCredentialRecord> {
    Ok(AgentCredentialRecord {
        id,
        target,
        created_at,
        revoked_at,
        last_seen_at,
        info: parse_json(&info, "agent info")?,
    })
}

fn subject_parts(s: &pave_core::rbac::Subject) -> (&'static str, &str) {
    match s {
        pave_core::rbac::Subject::User(n) => ("user", n),
        pave_core::rbac::Subject::Team(n) => ("team", n),
    }
}

macro_rules! sql_store {
    ($store:ident, $db:ty, $name:literal, for_update = $for_update:literal, skip_locked = $skip_locked:literal) => {
        impl $store {
            fn approval_from_row(row: &<$db as sqlx::Database>::Row) -> Result<ApprovalRecord> {
                let reasons: Value = parse_json(&row.try_get::<String, _>("reasons")?, "reasons")?;
                Ok(ApprovalRecord {
                    action_id: row.try_get("action_id")?,
                    env: row.try_get("env")?,
                    requested_by: row.try_get("requested_by")?,
                    reasons: serde_json::from_value(reasons)
                        .map_err(|e| StoreError::Corrupt(format!("approval reasons: {e}")))?,
                    approver_role: row.try_get("approver_role")?,
                    approver_team: row.try_get("approver_team")?,
                    original_input: parse_json(&row.try_get::<String, _>("original_input")?, "original_input")?,
                    expires_at: row.try_get("expires_at")?,
                    decision: row.try_get("decision")?,
                    decided_by: row.try_get("decided_by")?,
                    decided_at: row.try_get("decided_at")?,
                    comment: row.try_get("comment")?,
                    amendment: row
                        .try_get::<Option<String>, _>("amendment")?
                        .map(|t| parse_json(&t, "amendment"))
                        .transpose()?,
                    created_at: row.try_get("created_at")?,
                })
            }

            fn action_from_row(row: &<$db as sqlx::Database>::Row) -> Result<Action> {
                Ok(Action {
                    id: row.try_get("id")?,
                    kind: row.try_get("kind")?,
                    env: row.try_get("env")?,
                    object: row.try_get("object")?,
                    actor: row.try_get("actor")?,
                    input: parse_json(&row.try_get::<String, _>("input")?, "input")?,
                    state: parse_action_state(&row.try_get::<String, _>("state")?)?,
                    attempt: row.try_get("attempt")?,
                    error: parse_error(row.try_get("error")?)?,
                    result: parse_json(&row.try_get::<String, _>("result")?, "result")?,
                    idempotency_key: row.try_get("idempotency_key")?,
                    cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                    steps: Vec::new(),
                })
            }

            fn resource_from_row(row: &<$db as sqlx::Database>::Row) -> Result<pave_core::resource::Resource> {
                let lifecycle: String = row.try_get("lifecycle")?;
                let outputs: String = row.try_get("outputs")?;
                let credentials: String = row.try_get("credentials")?;
                Ok(pave_core::resource::Resource {
                    env: row.try_get("env")?,
                    name: row.try_get("name")?,
                    kind: row.try_get("kind")?,
                    spec: parse_json(&row.try_get::<String, _>("spec")?, "spec")?,
                    lifecycle: pave_core::resource::ResourceLifecycle::parse(&lifecycle)
                        .ok_or_else(|| StoreError::Corrupt(format!("lifecycle `{lifecycle}`")))?,
                    health: row.try_get("health")?,
                    checked_at: row.try_get("checked_at")?,
                    outputs: serde_json::from_str(&outputs).map_err(|e| StoreError::Corrupt(format!("outputs: {e}")))?,
                    credentials: serde_json::from_str(&credentials)
                        .map_err(|e| StoreError::Corrupt(format!("credentials: {e}")))?,
                    location: row.try_get("location")?,
                    created_by: row.try_get("created_by")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            fn step_from_row(row: &<$db as sqlx::Database>::Row) -> Result<(String, Step)> {
                let state: String = row.try_get("state")?;
                Ok((
                    row.try_get("action_id")?,
                    Step {
                        idx: row.try_get("idx")?,
                        name: row.try_get("name")?,
                        kind: row.try_get("kind")?,
                        idempotent: row.try_get::<i64, _>("idempotent")? != 0,
                        state: StepState::parse(&state)
                            .ok_or_else(|| StoreError::Corrupt(format!("step state `{state}`")))?,
                        attempt: row.try_get("attempt")?,
                        spec: parse_json(&row.try_get::<String, _>("spec")?, "spec")?,
                        output: parse_json(&row.try_get::<String, _>("output")?, "output")?,
                        error: parse_error(row.try_get("error")?)?,
                        compensation: parse_json(
                            &row.try_get::<String, _>("compensation")?,
                            "compensation",
                        )?,
                        started_at: row.try_get("started_at")?,
                        finished_at: row.try_get("finished_at")?,
                    },
                ))
            }

            /// Loads the steps of `actions` in one query.
            async fn attach_steps<'e, E>(executor: E, actions: &mut [Action]) -> Result<()>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                if actions.is_empty() {
                    return Ok(());
                }
                let sql = format!(
                    "SELECT {STEP_COLUMNS} FROM steps WHERE action_id IN ({}) ORDER BY action_id, idx",
                    placeholders(1, actions.len())
                );
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for a in actions.iter() {
                    q = q.bind(a.id.clone());
                }
                let rows = q.fetch_all(executor).await?;
                for row in &rows {
                    let (action_id, step) = Self::step_from_row(row)?;
                    if let Some(a) = actions.iter_mut().find(|a| a.id == action_id) {
                        a.steps.push(step);
                    }
                }
                Ok(())
            }

            async fn apply_op(
                conn: &mut <$db as sqlx::Database>::Connection,
                op: &WriteOp,
                audit: &mut AuditBuf,
            ) -> Result<OpResult> {
                let now = now_ms();
                match op {
                    WriteOp::InsertAction(a) => {
                        let idem = a.idempotency_key.as_ref().map(|k| scope(&a.actor, k));
                        if let Some(idem) = &idem {
                            let existing: Option<(String,)> =
                                sqlx::query_as("SELECT id FROM actions WHERE idempotency_scope = $1")
                                    .bind(idem)
                                    .fetch_optional(&mut *conn)
                                    .await?;
                            if let Some((id,)) = existing {
                                return Ok(OpResult::Existing(id));
                            }
                        }
                        sqlx::query(
                            "INSERT INTO actions (id, kind, env, object, actor, input, state, attempt, \
                             error, result, idempotency_key, idempotency_scope, cancel_requested, \
                             created_at, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                        )
                        .bind(&a.id)
                        .bind(&a.kind)
                        .bind(&a.env)
                        .bind(&a.object)
                        .bind(&a.actor)
                        .bind(json_text(&a.input))
                        .bind(a.state.as_str())
                        .bind(a.attempt)
                        .bind(error_text(&a.error))
                        .bind(json_text(&a.result))
                        .bind(&a.idempotency_key)
                        .bind(idem)
                        .bind(a.cancel_requested as i64)
                        .bind(a.created_at)
                        .bind(a.updated_at)
                        .execute(&mut *conn)
                        .await?;
                        Self::insert_steps(conn, &a.id, &a.steps).await?;
                        Ok(OpResult::Inserted)
                    }
                    WriteOp::UpdateAction { id, expect, set } if !expect.is_empty() => {
                        let current: Option<(String,)> = sqlx::query_as(concat!(
                            "SELECT state FROM actions WHERE id = $1",
                            $for_update
                        ))
                        .bind(id)
                        .fetch_optional(&mut *conn)
                        .await?;
                        let Some((current,)) = current else {
                            return Err(StoreError::NotFound(format!("action {id}")));
                        };
                        let current = parse_action_state(&current)?;
                        if !expect.is_empty() && !expect.contains(&current) {
                            return Err(StoreError::Precondition {
                                object: format!("action {id}"),
                                current: current.to_string(),
                                expected: expect
                                    .iter()
                                    .map(|s| s.as_str())
                                    .collect::<Vec<_>>()
                                    .join(" or "),
                            });
                        }
                        Self::update_action(conn, id, set, now).await?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::UpdateAction { id, set, .. } => {
                        Self::update_action(conn, id, set, now).await?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::UpdateStep { action_id, idx, set } => {
                        let r = sqlx::query(
                            "UPDATE steps SET \
                             state = COALESCE($3, state), \
                             attempt = COALESCE($4, attempt), \
                             started_at = CASE WHEN $5 = 1 THEN $6 ELSE started_at END, \
                             finished_at = CASE WHEN $7 = 1 THEN $8 ELSE finished_at END, \
                             output = COALESCE($9, output), \
                             error = CASE WHEN $10 = 1 THEN $11 ELSE error END, \
                             compensation = COALESCE($12, compensation) \
                             WHERE action_id = $1 AND idx = $2",
                        )
                        .bind(action_id)
                        .bind(idx)
                        .bind(set.state.map(|s| s.as_str()))
                        .bind(set.attempt)
                        .bind(set.started_at.is_some() as i64)
                        .bind(set.started_at.flatten())
                        .bind(set.finished_at.is_some() as i64)
                        .bind(set.finished_at.flatten())
                        .bind(set.output.as_ref().map(json_text))
                        .bind(set.error.is_some() as i64)
                        .bind(set.error.as_ref().and_then(error_text))
                        .bind(set.compensation.as_ref().map(json_text))
                        .execute(&mut *conn)
                        .await?;
                        found(r.rows_affected(), || format!("step {idx} of action {action_id}"))
                    }
                    WriteOp::AppendLogs(lines) => {
                        // Multi-row inserts in chunks keep each statement under
                        // both databases' parameter limits.
                        for chunk in lines.chunks(100) {
                            let values: Vec<String> = (0..chunk.len())
                                .map(|i| format!("({})", placeholders(i * 6 + 1, 6)))
                                .collect();
                            let sql = format!(
                                "INSERT INTO action_logs (action_id, seq, step, stream, time, line) VALUES {}",
                                values.join(", ")
                            );
                            let mut q = sqlx::query(AssertSqlSafe(sql));
                            for l in chunk {
                                q = q
                                    .bind(l.action_id.clone())
                                    .bind(l.seq)
                                    .bind(l.step)
                                    .bind(l.stream.clone())
                                    .bind(l.time)
                                    .bind(l.line.clone());
                            }
                            q.execute(&mut *conn).await?;
                        }
                        Ok(OpResult::Done)
                    }
                    WriteOp::Audit(draft) => {
                        audit.push(draft, now);
                        Ok(OpResult::Done)
                    }
                    WriteOp::InsertEnvironment(env) => {
                        let target: Option<(String,)> =
                            sqlx::query_as("SELECT name FROM targets WHERE name = $1")
                                .bind(&env.target)
                                .fetch_optional(&mut *conn)
                                .await?;
                        if target.is_none() {
                            return Err(StoreError::NotFound(format!("target `{}`", env.target)));
                        }
                        sqlx::query(
                            "INSERT INTO environments (name, target, labels, created_at, namespace) \
                             VALUES ($1, $2, $3, $4, $5)",
                        )
                        .bind(&env.name)
                        .bind(&env.target)
                        .bind(labels_text(&env.labels))
                        .bind(env.created_at)
                        .bind(&env.namespace)
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| conflict_as(e, format!("environment `{}`", env.name)))?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::SetEnvironmentLabels { name, labels } => {
                        let r = sqlx::query("UPDATE environments SET labels = $2 WHERE name = $1")
                            .bind(name)
                            .bind(labels_text(labels))
                            .execute(&mut *conn)
                            .await?;
                        found(r.rows_affected(), || format!("environment `{name}`"))
                    }
                    WriteOp::DeleteEnvironment(name) => {
                        let r = sqlx::query("DELETE FROM environments WHERE name = $1")
                            .bind(name)
                            .execute(&mut *conn)
                            .await?;
                        found(r.rows_affected(), || format!("environment `{name}`"))
                    }
                    WriteOp::PutSecretIfAbsent { env, name, sealed } => {
                        sqlx::query(
                            "INSERT INTO secrets (env, name, version, sealed, created_at) VALUES ($1, $2, 1, $3, $4) \
                             ON CONFLICT (env, name) DO NOTHING",
                        )
                        .bind(env)
                        .bind(name)
                        .bind(sealed)
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::PutIncident(i) => {
                        sqlx::query(
                            "INSERT INTO incidents (id, env, object, kind, state, opened_at, updated_at, doc) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                             ON CONFLICT (id) DO UPDATE SET state = excluded.state, \
                             updated_at = excluded.updated_at, doc = excluded.doc",
                        )
                        .bind(&i.id)
                        .bind(&i.env)
                        .bind(&i.object)
                        .bind(&i.kind)
                        .bind(&i.state)
                        .bind(i.opened_at)
                        .bind(i.updated_at)
                        .bind(json_text(&i.doc))
                        .execute(&mut *conn)
                        .await?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::PutPolicy { name, source, by } => {
                        sqlx::query(
                            "INSERT INTO policies (name, source, created_by, created_at) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (name) DO UPDATE SET source = excluded.source, \
                             created_by = excluded.created_by, created_at = excluded.created_at",
                        )
                        .bind(name)
                        .bind(source)
                        .bind(by)
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::DeletePolicy { name } => {
                        let r = sqlx::query("DELETE FROM policies WHERE name = $1")
                            .bind(name)
                            .execute(&mut *conn)
                            .await?;
                        found(r.rows_affected(), || format!("policy `{name}` (applied through the API)"))
                    }
                    WriteOp::PutSecret { env, name, sealed } => {
                        sqlx::query(
                            "INSERT INTO secrets (env, name, version, sealed, created_at) VALUES ($1, $2, 1, $3, $4) \
                             ON CONFLICT (env, name) DO UPDATE SET version = secrets.version + 1, \
                             sealed = excluded.sealed, created_at = excluded.created_at",
                        )
                        .bind(env)
                        .bind(name)
                        .bind(sealed)
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::ResealSecret { env, name, sealed } => {
                        sqlx::query("UPDATE secrets SET sealed = $3 WHERE env = $1 AND name = $2")
                            .bind(env)
                            .bind(name)
                            .bind(sealed)
                            .execute(&mut *conn)
                            .await?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::DeleteSecret { env, name } => {
                        let r = sqlx::query("DELETE FROM secrets WHERE env = $1 AND name = $2")
                            .bind(env)
                            .bind(name)
                            .execute(&mut *conn)
                            .await?;
                        found(r.rows_affected(), || format!("secret `{name}` in `{env}`"))
                    }
                    WriteOp::DeleteSecrets { env, prefix } => {
                        sqlx::query("DELETE FROM secrets WHERE env = $1 AND substr(name, 1, length($2)) = $2")
                            .bind(env)
                            .bind(prefix)
                            .execute(&mut *conn)
                            .await?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::PutResource(r) => {
                        sqlx::query(
                            "INSERT INTO resources (env, name, kind, spec, lifecycle, health, checked_at, outputs, \
                             credentials, location, created_by, created_at, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                             ON CONFLICT (env, name) DO UPDATE SET kind = $3, spec = $4, lifecycle = $5, \
                             health = $6, checked_at = $7, outputs = $8, credentials = $9, location = $10, \
                             updated_at = $13",
                        )
                        .bind(&r.env)
                        .bind(&r.name)
                        .bind(&r.kind)
                        .bind(json_text(&r.spec))
                        .bind(r.lifecycle.as_str())
                        .bind(&r.health)
                        .bind(r.checked_at)
                        .bind(serde_json::to_string(&r.outputs).unwrap_or_else(|_| "{}".into()))
                        .bind(serde_json::to_string(&r.credentials).unwrap_or_else(|_| "[]".into()))
                        .bind(&r.location)
                        .bind(&r.created_by)
                        .bind(r.created_at)
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::SetResourceHealth { env, name, health } => {
                        sqlx::query(
                            "UPDATE resources SET health = $3, checked_at = $4 \
                             WHERE env = $1 AND name = $2 AND lifecycle = 'ready'",
                        )
                        .bind(env)
                        .bind(name)
                        .bind(health)
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::DeleteResource { env, name } => {
                        sqlx::query("DELETE FROM resources WHERE env = $1 AND name = $2")
                            .bind(env)
                            .bind(name)
                            .execute(&mut *conn)
                            .await?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::InsertRevision(r) => {
                        sqlx::query(
                            "INSERT INTO workloads (env, name, current_revision, created_at, updated_at) \
                             VALUES ($1, $2, NULL, $3, $3) ON CONFLICT (env, name) DO NOTHING",
                        )
                        .bind(&r.env)
                        .bind(&r.name)
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                        sqlx::query(
                            "INSERT INTO revisions (env, name, revision, spec, created_by, created_at) \
                             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (env, name, revision) DO NOTHING",
                        )
                        .bind(&r.env)
                        .bind(&r.name)
                        .bind(r.revision)
                        .bind(json_text(&r.spec))
                        .bind(&r.created_by)
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::SetCurrentRevision { env, name, revision, replicas } => {
                        sqlx::query(
                            "UPDATE workloads SET current_revision = $3, replicas = COALESCE($5, replicas), \
                             updated_at = $4 WHERE env = $1 AND name = $2",
                        )
                        .bind(env)
                        .bind(name)
                        .bind(*revision)
                        .bind(now)
                        .bind(replicas.map(i64::from))
                        .execute(&mut *conn)
                        .await?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::DeleteWorkload { env, name } => {
                        sqlx::query("DELETE FROM revisions WHERE env = $1 AND name = $2")
                            .bind(env)
                            .bind(name)
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("DELETE FROM workloads WHERE env = $1 AND name = $2")
                            .bind(env)
                            .bind(name)
                            .execute(&mut *conn)
                            .await?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::InsertBlueprint(b) => {
                        sqlx::query(
                            "INSERT INTO blueprints (name, version, document, created_by, created_at) \
                             VALUES ($1, $2, $3, $4, $5)",
                        )
                        .bind(&b.name)
                        .bind(b.version)
                        .bind(&b.document)
                        .bind(&b.created_by)
                        .bind(b.created_at)
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| conflict_as(e, format!("blueprint `{}` version {}", b.name, b.version)))?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::InsertApproval(a) => {
                        sqlx::query(
                            "INSERT INTO approvals (action_id, env, requested_by, reasons, approver_role, \
                             approver_team, original_input, expires_at, created_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                        )
                        .bind(&a.action_id)
                        .bind(&a.env)
                        .bind(&a.requested_by)
                        .bind(json_text(&serde_json::json!(a.reasons)))
                        .bind(&a.approver_role)
                        .bind(&a.approver_team)
                        .bind(json_text(&a.original_input))
                        .bind(a.expires_at)
                        .bind(a.created_at)
                        .execute(&mut *conn)
                        .await?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::DecideApproval { action_id, decision, by, comment, amendment } => {
                        let r = sqlx::query(
                            "UPDATE approvals SET decision = $2, decided_by = $3, decided_at = $4, comment = $5, \
                             amendment = $6 WHERE action_id = $1 AND decision IS NULL",
                        )
                        .bind(action_id)
                        .bind(decision)
                        .bind(by)
                        .bind(now)
                        .bind(comment)
                        .bind(amendment.as_ref().map(json_text))
                        .execute(&mut *conn)
                        .await?;
                        if r.rows_affected() == 0 {
                            return Err(StoreError::Precondition {
                                object: format!("approval of action {action_id}"),
                                current: "decided already, or never asked".into(),
                                expected: "pending".into(),
                            });
                        }
                        Ok(OpResult::Done)
                    }
                    WriteOp::ReplanAction { id, input, object, steps } => {
                        sqlx::query("UPDATE actions SET input = $2, object = $3, updated_at = $4 WHERE id = $1")
                            .bind(id)
                            .bind(json_text(input))
                            .bind(object)
                            .bind(now)
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("DELETE FROM steps WHERE action_id = $1")
                            .bind(id)
                            .execute(&mut *conn)
                            .await?;
                        Self::insert_steps(conn, id, steps).await?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::InsertUser { name } => {
                        sqlx::query("INSERT INTO users (name, created_at) VALUES ($1, $2)")
                            .bind(name)
                            .bind(now)
                            .execute(&mut *conn)
                            .await
                            .map_err(|e| conflict_as(e, format!("user `{name}`")))?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::InsertTeam { name } => {
                        sqlx::query("INSERT INTO teams (name, created_at) VALUES ($1, $2)")
                            .bind(name)
                            .bind(now)
                            .execute(&mut *conn)
                            .await
                            .map_err(|e| conflict_as(e, format!("team `{name}`")))?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::AddTeamMember { team, user } => {
                        Self::require_named(conn, "team", team).await?;
                        Self::require_named(conn, "user", user).await?;
                        sqlx::query(
                            "INSERT INTO team_members (team, user_name) VALUES ($1, $2) \
                             ON CONFLICT (team, user_name) DO NOTHING",
                        )
                        .bind(team)
                        .bind(user)
                        .execute(&mut *conn)
                        .await?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::RemoveTeamMember { team, user } => {
                        let r = sqlx::query("DELETE FROM team_members WHERE team = $1 AND user_name = $2")
                            .bind(team)
                            .bind(user)
                            .execute(&mut *conn)
                            .await?;
                        found(r.rows_affected(), || format!("`{user}` in team `{team}`"))
                    }
                    WriteOp::PutBinding(b) => {
                        let (kind, subject) = subject_parts(&b.subject);
                        Self::require_named(conn, kind, subject).await?;
                        sqlx::query(
                            "INSERT INTO role_bindings (subject_kind, subject, env, role, created_at) \
                             VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (subject_kind, subject, env) DO UPDATE SET role = excluded.role",
                        )
                        .bind(kind)
                        .bind(subject)
                        .bind(b.env.as_deref().unwrap_or("*"))
                        .bind(b.role.as_str())
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::DeleteBinding { subject, env } => {
                        let (kind, name) = subject_parts(subject);
                        let r = sqlx::query(
                            "DELETE FROM role_bindings WHERE subject_kind = $1 AND subject = $2 AND env = $3",
                        )
                        .bind(kind)
                        .bind(name)
                        .bind(env.as_deref().unwrap_or("*"))
                        .execute(&mut *conn)
                        .await?;
                        found(r.rows_affected(), || format!(
                                "a role of {kind} `{name}` in {}",
                                env.as_deref().unwrap_or("every environment")
                            ))
                    }
                    WriteOp::RevokeToken { id } => {
                        let r = sqlx::query(
                            "UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                        )
                        .bind(id)
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                        found(r.rows_affected(), || format!("active token `{id}`"))
                    }
                    WriteOp::InsertTarget(t) => {
                        sqlx::query(
                            "INSERT INTO targets (name, kind, agent, labels, created_at) VALUES ($1, $2, $3, $4, $5)",
                        )
                        .bind(&t.name)
                        .bind(&t.kind)
                        .bind(t.agent as i64)
                        .bind(labels_text(&t.labels))
                        .bind(t.created_at)
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| conflict_as(e, format!("target `{}`", t.name)))?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::DeleteTarget(name) => {
                        Self::require_target(conn, name).await?;
                        let users: Vec<(String,)> =
                            sqlx::query_as("SELECT name FROM environments WHERE target = $1 ORDER BY name")
                                .bind(name)
                                .fetch_all(&mut *conn)
                                .await?;
                        if !users.is_empty() {
                            let names: Vec<String> = users.into_iter().map(|(n,)| n).collect();
                            return Err(StoreError::Precondition {
                                object: format!("target `{name}`"),
                                current: format!("used by environment(s) {}", names.join(", ")),
                                expected: "unused".into(),
                            });
                        }
                        sqlx::query("DELETE FROM agent_enrollments WHERE target = $1")
                            .bind(name)
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("DELETE FROM agent_credentials WHERE target = $1")
                            .bind(name)
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("DELETE FROM targets WHERE name = $1")
                            .bind(name)
                            .execute(&mut *conn)
                            .await
                            .map_err(|e| match &e {
                                // An environment created on it meanwhile.
                                sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                                    StoreError::Precondition {
                                        object: format!("target `{name}`"),
                                        current: "used by an environment".into(),
                                        expected: "unused".into(),
                                    }
                                }
                                _ => StoreError::from(e),
                            })?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::InsertEnrollment { target, token_hash, created_at, expires_at } => {
                        Self::require_target(conn, target).await?;
                        sqlx::query(
                            "INSERT INTO agent_enrollments (token_hash, target, created_at, expires_at, used_at) \
                             VALUES ($1, $2, $3, $4, NULL)",
                        )
                        .bind(token_hash)
                        .bind(target)
                        .bind(created_at)
                        .bind(expires_at)
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| conflict_as(e, "an enrollment token with this hash".into()))?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::RedeemEnrollment { token_hash, at, credential_id, secret_hash, info } => {
                        let found: Option<(String, i64, Option<i64>)> = sqlx::query_as(concat!(
                            "SELECT target, expires_at, used_at FROM agent_enrollments WHERE token_hash = $1",
                            $for_update
                        ))
                        .bind(token_hash)
                        .fetch_optional(&mut *conn)
                        .await?;
                        let Some((target, expires_at, used_at)) = found else {
                            return Err(StoreError::NotFound("enrollment token".into()));
                        };
                        let refused = |current: &str| StoreError::Precondition {
                            object: "this enrollment token".into(),
                            current: current.into(),
                            expected: "unused and unexpired".into(),
                        };
                        if used_at.is_some() {
                            return Err(refused("already used"));
                        }
                        if expires_at <= *at {
                            return Err(refused("expired"));
                        }
                        let r = sqlx::query(
                            "UPDATE agent_enrollments SET used_at = $2 \
                             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
                        )
                        .bind(token_hash)
                        .bind(at)
                        .execute(&mut *conn)
                        .await?;
                        if r.rows_affected() == 0 {
                            return Err(refused("already used"));
                        }
                        sqlx::query(
                            "INSERT INTO agent_credentials (id, target, secret_hash, created_at, revoked_at, \
                             last_seen_at, info) VALUES ($1, $2, $3, $4, NULL, NULL, $5)",
                        )
                        .bind(credential_id)
                        .bind(&target)
                        .bind(secret_hash)
                        .bind(at)
                        .bind(json_text(info))
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| conflict_as(e, format!("agent credential `{credential_id}` (or its secret)")))?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::RevokeAgentCredentials { target, at } => {
                        Self::require_target(conn, target).await?;
                        // Enrollments first: a redemption running meanwhile (on
                        // PostgreSQL) either finds its enrollment gone, or commits
                        // before this delete goes on, and then its credential is
                        // seen and revoked by the update below.
                        sqlx::query("DELETE FROM agent_enrollments WHERE target = $1 AND used_at IS NULL")
                            .bind(target)
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query(
                            "UPDATE agent_credentials SET revoked_at = $2 WHERE target = $1 AND revoked_at IS NULL",
                        )
                        .bind(target)
                        .bind(at)
                        .execute(&mut *conn)
                        .await?;
                        Ok(OpResult::Done)
                    }
                    WriteOp::TouchAgentCredential { id, at, info } => {
                        let r = sqlx::query(
                            "UPDATE agent_credentials SET last_seen_at = $2, info = COALESCE($3, info) WHERE id = $1",
                        )
                        .bind(id)
                        .bind(at)
                        .bind(info.as_ref().map(json_text))
                        .execute(&mut *conn)
                        .await?;
                        found(r.rows_affected(), || format!("agent credential `{id}`"))
                    }
                    WriteOp::InsertToken(t) => {
                        sqlx::query(
                            "INSERT INTO tokens (id, name, subject, hash, created_at, expires_at, revoked_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        )
                        .bind(&t.id)
                        .bind(&t.name)
                        .bind(&t.subject)
                        .bind(&t.hash)
                        .bind(t.created_at)
                        .bind(t.expires_at)
                        .bind(t.revoked_at)
                        .execute(&mut *conn)
                        .await?;
                        Ok(OpResult::Done)
                    }
                }
            }

            /// Fails with not found unless the target `name` exists. It takes no
            /// row lock: the target's foreign keys keep its rows consistent, and
            /// a lock here would deadlock with a concurrent redemption (which
            /// locks the enrollment, then references the target).
            async fn require_target(conn: &mut <$db as sqlx::Database>::Connection, name: &str) -> Result<()> {
                let found: Option<(String,)> = sqlx::query_as("SELECT name FROM targets WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&mut *conn)
                    .await?;
                match found {
                    Some(_) => Ok(()),
                    None => Err(StoreError::NotFound(format!("target `{name}`"))),
                }
            }

            /// Fails with not found unless the user or team `name` exists.
            async fn require_named(
                conn: &mut <$db as sqlx::Database>::Connection,
                what: &str,
                name: &str,
            ) -> Result<()> {
                let sql = if what == "team" {
                    "SELECT name FROM teams WHERE name = $1"
                } else {
                    "SELECT name FROM users WHERE name = $1"
                };
                let found: Option<(String,)> =
                    sqlx::query_as(sql).bind(name).fetch_optional(&mut *conn).await?;
                match found {
                    Some(_) => Ok(()),
                    None => Err(StoreError::NotFound(format!("{what} `{name}`"))),
                }
            }

            async fn insert_steps(
                conn: &mut <$db as sqlx::Database>::Connection,
                action_id: &str,
                steps: &[Step],
            ) -> Result<()> {
                for s in steps {
                    sqlx::query(
                        "INSERT INTO steps (action_id, idx, name, kind, idempotent, state, attempt, \
                         spec, output, error, compensation, started_at, finished_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                    )
                    .bind(action_id)
                    .bind(s.idx)
                    .bind(&s.name)
                    .bind(&s.kind)
                    .bind(s.idempotent as i64)
                    .bind(s.state.as_str())
                    .bind(s.attempt)
                    .bind(json_text(&s.spec))
                    .bind(json_text(&s.output))
                    .bind(error_text(&s.error))
                    .bind(json_text(&s.compensation))
                    .bind(s.started_at)
                    .bind(s.finished_at)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            }

            async fn update_action(
                conn: &mut <$db as sqlx::Database>::Connection,
                id: &str,
                set: &ActionUpdate,
                now: i64,
            ) -> Result<()> {
                        let r = sqlx::query(
                            "UPDATE actions SET \
                             state = COALESCE($2, state), \
                             error = CASE WHEN $3 = 1 THEN $4 ELSE error END, \
                             result = COALESCE($5, result), \
                             attempt = COALESCE($6, attempt), \
                             cancel_requested = COALESCE($7, cancel_requested), \
                             lease_owner = CASE WHEN $8 = 1 THEN NULL ELSE lease_owner END, \
                             lease_until = CASE WHEN $8 = 1 THEN NULL ELSE lease_until END, \
                             updated_at = $9 \
                             WHERE id = $1",
                        )
                        .bind(id)
                        .bind(set.state.map(|s| s.as_str()))
                        .bind(set.error.is_some() as i64)
                        .bind(set.error.as_ref().and_then(error_text))
                        .bind(set.result.as_ref().map(json_text))
                        .bind(set.attempt)
                        .bind(set.cancel_requested.map(|c| c as i64))
                        .bind(set.release as i64)
                        .bind(now)
                        .execute(&mut *conn)
                        .await?;
                        if r.rows_affected() == 0 {
                            return Err(StoreError::NotFound(format!("action {id}")));
                        }
                        if set.release {
                            sqlx::query("DELETE FROM object_locks WHERE action_id = $1")
                                .bind(id)
                                .execute(&mut *conn)
                                .await?;
                        }
                        Ok(())
            }

            async fn run_script(conn: &mut <$db as sqlx::Database>::Connection, script: &mut String) -> Result<()> {
                if !script.is_empty() {
                    sqlx::raw_sql(AssertSqlSafe(std::mem::take(script))).execute(&mut *conn).await?;
                }
                Ok(())
            }

            /// Inserts the buffered events (several rows per statement) and moves the head.
            async fn flush_audit(conn: &mut <$db as sqlx::Database>::Connection, buf: &AuditBuf) -> Result<()> {
                if buf.pending.is_empty() {
                    return Ok(());
                }
                for chunk in buf.pending.chunks(AUDIT_ROWS_PER_INSERT) {
                    let values: Vec<String> =
                        (0..chunk.len()).map(|i| format!("({})", placeholders(i * 9 + 1, 9))).collect();
                    let sql = format!(
                        "INSERT INTO audit_events (seq, time, actor, verb, object, summary, details, prev_hash, hash) \
                         VALUES {}",
                        values.join(", ")
                    );
                    let mut q = sqlx::query(AssertSqlSafe(sql));
                    for e in chunk {
                        q = q
                            .bind(e.seq)
                            .bind(e.time)
                            .bind(e.actor.clone())
                            .bind(e.verb.clone())
                            .bind(e.object.clone())
                            .bind(e.summary.clone())
                            .bind(e.details.clone())
                            .bind(e.prev_hash.clone())
                            .bind(e.hash.clone());
                    }
                    q.execute(&mut *conn).await?;
                }
                Self::write_head(conn, &buf.head).await
            }

            async fn read_head(conn: &mut <$db as sqlx::Database>::Connection) -> Result<(i64, String)> {
                let row: (i64, String) = sqlx::query_as(concat!(
                    "SELECT seq, hash FROM audit_head WHERE id = 1",
                    $for_update
                ))
                .fetch_one(&mut *conn)
                .await?;
                Ok(row)
            }

            async fn write_head(
                conn: &mut <$db as sqlx::Database>::Connection,
                head: &(i64, String),
            ) -> Result<()> {
                sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                    .bind(head.0)
                    .bind(&head.1)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }
        }

        #[async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $name
            }

            async fn write(&self, requests: Vec<Vec<WriteOp>>) -> Result<Vec<Result<Vec<OpResult>>>> {
                let mut tx = self.writer().begin().await?;
                let needs_head = requests.iter().flatten().any(|op| matches!(op, WriteOp::Audit(_)));
                let mut audit = if needs_head {
                    AuditBuf::new(Self::read_head(&mut tx).await?)
                } else {
                    AuditBuf::new((0, String::new()))
                };
                let mut answers = Vec::with_capacity(requests.len());
                // The engine's own writes go out together as one script (see
                // `script`); anything that needs an answer runs on its own, after
                // the script so far, so that order is kept.
                let mut batch_script = String::new();
                let now = now_ms();
                for request in &requests {
                    if !needs_savepoint(request) {
                        // Nothing here can fail short of a database error, which fails
                        // the whole transaction (the batcher then retries each request alone).
                        let mut rendered = String::new();
                        let mut results = Vec::with_capacity(request.len());
                        let mut all = true;
                        for op in request {
                            match op {
                                WriteOp::Audit(d) => audit.push(d, now),
                                op if crate::script::render(&mut rendered, op, now) => {}
                                _ => all = false,
                            }
                            results.push(OpResult::Done);
                        }
                        if all {
                            batch_script.push_str(&rendered);
                        } else {
                            Self::run_script(&mut tx, &mut batch_script).await?;
                            for (op, result) in request.iter().zip(results.iter_mut()) {
                                if !matches!(op, WriteOp::Audit(_)) {
                                    *result = Self::apply_op(&mut tx, op, &mut audit).await?;
                                }
                            }
                        }
                        answers.push(Ok(results));
                        continue;
                    }
                    Self::run_script(&mut tx, &mut batch_script).await?;
                    let mark = audit.mark();
                    let mut sp = Connection::begin(&mut *tx).await?;
                    let mut results = Vec::with_capacity(request.len());
                    let mut outcome: Result<()> = Ok(());
                    let mut keep = true;
                    for op in request {
                        match Self::apply_op(&mut sp, op, &mut audit).await {
                            Ok(OpResult::Existing(id)) => {
                                // Idempotent replay: nothing of this request is written.
                                results.clear();
                                results.push(OpResult::Existing(id));
                                keep = false;
                                break;
                            }
                            Ok(r) => results.push(r),
                            Err(e) => {
                                outcome = Err(e);
                                keep = false;
                                break;
                            }
                        }
                    }
                    if keep {
                        sp.commit().await?;
                    } else {
                        sp.rollback().await?;
                        audit.reset(mark);
                    }
                    answers.push(outcome.map(|_| results));
                }
                Self::run_script(&mut tx, &mut batch_script).await?;
                Self::flush_audit(&mut tx, &audit).await?;
                tx.commit().await?;
                Ok(answers)
            }

            async fn get_action(&self, id: &str) -> Result<Option<Action>> {
                let sql = format!("SELECT {ACTION_COLUMNS} FROM actions WHERE id = $1");
                let row = sqlx::query(AssertSqlSafe(sql))
                    .bind(id)
                    .fetch_optional(self.reader())
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let mut actions = vec![Self::action_from_row(&row)?];
                Self::attach_steps(self.reader(), &mut actions).await?;
                Ok(actions.pop())
            }

            async fn list_actions(&self, f: &ActionFilter) -> Result<Vec<Action>> {
                let mut sql = format!("SELECT {ACTION_COLUMNS} FROM actions WHERE 1 = 1");
                let mut n = 0;
                let mut next = || {
                    n += 1;
                    n
                };
                if f.state.is_some() {
                    sql.push_str(&format!(" AND state = ${}", next()));
                }
                if f.kind.is_some() {
                    sql.push_str(&format!(" AND kind = ${}", next()));
                }
                if f.env.is_some() {
                    sql.push_str(&format!(" AND env = ${}", next()));
                }
                if f.before.is_some() {
                    sql.push_str(&format!(" AND id < ${}", next()));
                }
                sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", next()));
                let mut q = sqlx::query(AssertSqlSafe(sql));
                if let Some(s) = f.state {
                    q = q.bind(s.as_str());
                }
                if let Some(k) = &f.kind {
                    q = q.bind(k.clone());
                }
                if let Some(e) = &f.env {
                    q = q.bind(e.clone());
                }
                if let Some(b) = &f.before {
                    q = q.bind(b.clone());
                }
                q = q.bind(f.limit);
                let rows = q.fetch_all(self.reader()).await?;
                let mut actions = rows
                    .iter()
                    .map(Self::action_from_row)
                    .collect::<Result<Vec<_>>>()?;
                Self::attach_steps(self.reader(), &mut actions).await?;
                Ok(actions)
            }

            async fn claim(
                &self,
                node: &str,
                limit: i64,
                lease_ms: i64,
                resume_own: bool,
            ) -> Result<Vec<Action>> {
                let now = now_ms();
                let mut tx = self.writer().begin().await?;
                // Two queries, so that each uses its index: actions whose node died
                // (or this node's, after its restart) first, then the queue.
                let mut candidates: Vec<(String, String, String)> = sqlx::query_as(concat!(
                    "SELECT id, CASE WHEN lease_until IS NULL THEN 'rollback' ELSE state END, object \
                     FROM actions \
                     WHERE state IN ('running', 'rolling_back') \
                       AND (lease_until IS NULL OR lease_until < $1 OR ($2 = 1 AND lease_owner = $3)) \
                     ORDER BY id LIMIT $4",
                    $skip_locked
                ))
                .bind(now)
                .bind(resume_own as i64)
                .bind(node)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
                let room = limit - candidates.len() as i64;
                if room > 0 {
                    let queued: Vec<(String, String, String)> = sqlx::query_as(concat!(
                        "SELECT id, state, object FROM actions WHERE state = 'queued' ORDER BY id LIMIT $1",
                        $skip_locked
                    ))
                    .bind(room)
                    .fetch_all(&mut *tx)
                    .await?;
                    candidates.extend(queued);
                }
                let mut claimed: Vec<(String, String)> = Vec::new();
                'candidates: for (id, state, objects) in candidates {
                    // The object locks: each taken unless another action holds it.
                    // An action that locks several takes all of them or none.
                    let mut inserted = Vec::new();
                    for object in objects.split(pave_core::plan::OBJECT_SEPARATOR) {
                        let taken = sqlx::query(
                            "INSERT INTO object_locks (object, action_id) VALUES ($1, $2) \
                             ON CONFLICT (object) DO NOTHING",
                        )
                        .bind(object)
                        .bind(&id)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                            == 1;
                        if taken {
                            inserted.push(object);
                            continue;
                        }
                        // An active action resumed after a crash still holds its own lock.
                        let holder: Option<(String,)> =
                            sqlx::query_as("SELECT action_id FROM object_locks WHERE object = $1")
                                .bind(object)
                                .fetch_optional(&mut *tx)
                                .await?;
                        if state == "queued" || holder.map(|(h,)| h) != Some(id.clone()) {
                            for o in inserted {
                                sqlx::query("DELETE FROM object_locks WHERE object = $1 AND action_id = $2")
                                    .bind(o)
                                    .bind(&id)
                                    .execute(&mut *tx)
                                    .await?;
                            }
                            continue 'candidates;
                        }
                    }
                    claimed.push((id, state));
                }
                let mut actions = Vec::with_capacity(claimed.len());
                if !claimed.is_empty() {
                    let sql = format!(
                        "UPDATE actions SET state = CASE WHEN state = 'queued' THEN 'running' ELSE state END, \
                         lease_owner = $1, lease_until = $2, updated_at = $3 WHERE id IN ({})",
                        placeholders(4, claimed.len())
                    );
                    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(node).bind(now + lease_ms).bind(now);
                    for (id, _) in &claimed {
                        q = q.bind(id.clone());
                    }
                    q.execute(&mut *tx).await?;
                    let mut audit = AuditBuf::new(Self::read_head(&mut tx).await?);
                    for (id, state) in &claimed {
                        let (verb, summary, new_state) = if state == "queued" {
                            ("action.state", "queued → running".to_string(), "running")
                        } else if state == "rollback" {
                            ("action.state", "rolling back".to_string(), "rolling_back")
                        } else {
                            (
                                "action.resume",
                                format!("{state} action taken over by node {node} (its previous node stopped)"),
                                state.as_str(),
                            )
                        };
                        let draft = AuditDraft {
                            actor: "system".into(),
                            verb: verb.into(),
                            object: format!("action/{id}"),
                            summary,
                            details: serde_json::json!({ "node": node, "state": new_state }),
                        };
                        audit.push(&draft, now);
                    }
                    Self::flush_audit(&mut tx, &audit).await?;
                    let sql = format!(
                        "SELECT {ACTION_COLUMNS} FROM actions WHERE id IN ({}) ORDER BY id",
                        placeholders(1, claimed.len())
                    );
                    let mut q = sqlx::query(AssertSqlSafe(sql));
                    for (id, _) in &claimed {
                        q = q.bind(id.clone());
                    }
                    for row in q.fetch_all(&mut *tx).await? {
                        actions.push(Self::action_from_row(&row)?);
                    }
                    Self::attach_steps(&mut *tx, &mut actions).await?;
                }
                tx.commit().await?;
                Ok(actions)
            }

            async fn renew_leases(&self, node: &str, ids: &[String], lease_ms: i64) -> Result<Vec<String>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                let now = now_ms();
                let list = placeholders(3, ids.len());
                let sql = format!(
                    "UPDATE actions SET lease_until = $2 WHERE lease_owner = $1 AND id IN ({list}) \
                     AND state IN ('running', 'rolling_back')"
                );
                let mut q = sqlx::query(AssertSqlSafe(sql)).bind(node).bind(now + lease_ms);
                for id in ids {
                    q = q.bind(id.clone());
                }
                q.execute(self.writer()).await?;
                let sql = format!(
                    "SELECT id FROM actions WHERE lease_owner = $1 AND id IN ({}) AND cancel_requested = 1",
                    placeholders(2, ids.len())
                );
                let mut q = sqlx::query_as::<_, (String,)>(AssertSqlSafe(sql)).bind(node);
                for id in ids {
                    q = q.bind(id.clone());
                }
                Ok(q.fetch_all(self.reader()).await?.into_iter().map(|(id,)| id).collect())
            }

            async fn logs(&self, action_id: &str, after_seq: i64, limit: i64) -> Result<Vec<LogLine>> {
                let rows: Vec<(String, i64, i64, String, i64, String)> = sqlx::query_as(
                    "SELECT action_id, seq, step, stream, time, line FROM action_logs \
                     WHERE action_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                )
                .bind(action_id)
                .bind(after_seq)
                .bind(limit)
                .fetch_all(self.reader())
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(action_id, seq, step, stream, time, line)| LogLine {
                        action_id,
                        seq,
                        step,
                        stream,
                        time,
                        line,
                    })
                    .collect())
            }

            async fn last_log_seq(&self, action_id: &str) -> Result<i64> {
                let (seq,): (Option<i64>,) =
                    sqlx::query_as("SELECT MAX(seq) FROM action_logs WHERE action_id = $1")
                        .bind(action_id)
                        .fetch_one(self.writer())
                        .await?;
                Ok(seq.unwrap_or(0))
            }

            async fn audit_page(&self, after_seq: i64, limit: i64) -> Result<Vec<AuditEvent>> {
                let rows = sqlx::query(
                    "SELECT seq, time, actor, verb, object, summary, details, prev_hash, hash \
                     FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .bind(after_seq)
                .bind(limit)
                .fetch_all(self.reader())
                .await?;
                rows.iter()
                    .map(|r| {
                        let details: String = r.try_get("details")?;
                        Ok(AuditEvent {
                            seq: r.try_get("seq")?,
                            time: r.try_get("time")?,
                            actor: r.try_get("actor")?,
                            verb: r.try_get("verb")?,
                            object: r.try_get("object")?,
                            summary: r.try_get("summary")?,
                            // Kept verbatim when it is not JSON any more, so that
                            // verification reports the edit instead of failing to read.
                            details: serde_json::from_str(&details).unwrap_or(Value::String(details)),
                            prev_hash: r.try_get("prev_hash")?,
                            hash: r.try_get("hash")?,
                        })
                    })
                    .collect()
            }

            async fn audit_head(&self) -> Result<(i64, String)> {
                let row: (i64, String) = sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                    .fetch_one(self.reader())
                    .await?;
                Ok(row)
            }

            async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
                let row: Option<(String, String, String, String, i64, Option<i64>, Option<i64>)> =
                    sqlx::query_as(
                        "SELECT id, name, subject, hash, created_at, expires_at, revoked_at \
                         FROM tokens WHERE hash = $1",
                    )
                    .bind(hash)
                    .fetch_optional(self.reader())
                    .await?;
                Ok(row.map(|(id, name, subject, hash, created_at, expires_at, revoked_at)| {
                    TokenRecord { id, name, subject, hash, created_at, expires_at, revoked_at }
                }))
            }

            async fn list_environments(&self) -> Result<Vec<Environment>> {
                let rows: Vec<(String, String, String, i64, Option<String>)> = sqlx::query_as(
                    "SELECT name, target, labels, created_at, namespace FROM environments ORDER BY name",
                )
                .fetch_all(self.reader())
                .await?;
                rows.into_iter()
                    .map(|(name, target, labels, created_at, namespace)| {
                        Ok(Environment {
                            name,
                            target,
                            labels: serde_json::from_str(&labels)
                                .map_err(|e| StoreError::Corrupt(format!("labels: {e}")))?,
                            created_at,
                            namespace,
                        })
                    })
                    .collect()
            }

            async fn list_blueprints(&self) -> Result<Vec<BlueprintRecord>> {
                let rows: Vec<(String, i64, String, String, i64)> = sqlx::query_as(
                    "SELECT name, version, document, created_by, created_at FROM blueprints \
                     ORDER BY name, version",
                )
                .fetch_all(self.reader())
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(name, version, document, created_by, created_at)| BlueprintRecord {
                        name,
                        version,
                        document,
                        created_by,
                        created_at,
                    })
                    .collect())
            }

            async fn list_incidents(&self, active_only: bool) -> Result<Vec<IncidentRecord>> {
                let filter = if active_only {
                    "WHERE state IN ('open', 'remediating', 'verifying')"
                } else {
                    ""
                };
                let sql = format!(
                    "SELECT id, env, object, kind, state, opened_at, updated_at, doc FROM incidents {filter} \
                     ORDER BY opened_at DESC, id DESC LIMIT 500"
                );
                let rows: Vec<IncidentRow> = sqlx::query_as(AssertSqlSafe(sql)).fetch_all(self.reader()).await?;
                rows.into_iter().map(incident_from).collect()
            }

            async fn get_incident(&self, id: &str) -> Result<Option<IncidentRecord>> {
                let row: Option<IncidentRow> = sqlx::query_as(
                    "SELECT id, env, object, kind, state, opened_at, updated_at, doc FROM incidents WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(self.reader())
                .await?;
                row.map(incident_from).transpose()
            }

            async fn list_policies(&self) -> Result<Vec<(String, String)>> {
                Ok(sqlx::query_as("SELECT name, source FROM policies ORDER BY name")
                    .fetch_all(self.reader())
                    .await?)
            }

            async fn list_secrets(&self, env: &str, prefix: &str) -> Result<Vec<SecretMeta>> {
                let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
                    "SELECT env, name, version, created_at FROM secrets \
                     WHERE env = $1 AND substr(name, 1, length($2)) = $2 ORDER BY name",
                )
                .bind(env)
                .bind(prefix)
                .fetch_all(self.reader())
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(env, name, version, created_at)| SecretMeta { env, name, version, created_at })
                    .collect())
            }

            async fn get_approval(&self, action_id: &str) -> Result<Option<ApprovalRecord>> {
                let sql = format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE action_id = $1");
                let row = sqlx::query(AssertSqlSafe(sql))
                    .bind(action_id)
                    .fetch_optional(self.reader())
                    .await?;
                row.as_ref().map(Self::approval_from_row).transpose()
            }

            async fn list_approvals(&self, pending_only: bool) -> Result<Vec<ApprovalRecord>> {
                let filter = if pending_only { "WHERE decision IS NULL" } else { "" };
                let sql = format!(
                    "SELECT {APPROVAL_COLUMNS} FROM approvals {filter} ORDER BY created_at DESC, action_id DESC LIMIT 500"
                );
                let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(self.reader()).await?;
                rows.iter().map(Self::approval_from_row).collect()
            }

            async fn list_users(&self) -> Result<Vec<UserRecord>> {
                let rows: Vec<(String, i64)> =
                    sqlx::query_as("SELECT name, created_at FROM users ORDER BY name")
                        .fetch_all(self.reader())
                        .await?;
                Ok(rows.into_iter().map(|(name, created_at)| UserRecord { name, created_at }).collect())
            }

            async fn list_teams(&self) -> Result<Vec<TeamRecord>> {
                let teams: Vec<(String, i64)> =
                    sqlx::query_as("SELECT name, created_at FROM teams ORDER BY name")
                        .fetch_all(self.reader())
                        .await?;
                let members: Vec<(String, String)> =
                    sqlx::query_as("SELECT team, user_name FROM team_members ORDER BY team, user_name")
                        .fetch_all(self.reader())
                        .await?;
                Ok(teams
                    .into_iter()
                    .map(|(name, created_at)| TeamRecord {
                        members: members.iter().filter(|(t, _)| *t == name).map(|(_, u)| u.clone()).collect(),
                        name,
                        created_at,
                    })
                    .collect())
            }

            async fn list_bindings(&self) -> Result<Vec<pave_core::rbac::Binding>> {
                let rows: Vec<(String, String, String, String)> = sqlx::query_as(
                    "SELECT subject_kind, subject, env, role FROM role_bindings \
                     ORDER BY subject_kind, subject, env",
                )
                .fetch_all(self.reader())
                .await?;
                rows.into_iter()
                    .map(|(kind, subject, env, role)| {
                        let subject = match kind.as_str() {
                            "team" => pave_core::rbac::Subject::Team(subject),
                            _ => pave_core::rbac::Subject::User(subject),
                        };
                        let role = pave_core::rbac::Role::parse(&role)
                            .map_err(|e| StoreError::Corrupt(format!("role binding: {e}")))?;
                        Ok(pave_core::rbac::Binding {
                            subject,
                            role,
                            env: (env != "*").then_some(env),
                        })
                    })
                    .collect()
            }

            async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
                let rows: Vec<(String, String, String, String, i64, Option<i64>, Option<i64>)> =
                    sqlx::query_as(
                        "SELECT id, name, subject, hash, created_at, expires_at, revoked_at \
                         FROM tokens ORDER BY created_at DESC, id DESC",
                    )
                    .fetch_all(self.reader())
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, name, subject, hash, created_at, expires_at, revoked_at)| TokenRecord {
                        id,
                        name,
                        subject,
                        hash,
                        created_at,
                        expires_at,
                        revoked_at,
                    })
                    .collect())
            }

            async fn count_unfinished_actions(&self, env: &str) -> Result<i64> {
                let (n,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM actions WHERE env = $1 AND state IN \
                     ('requested', 'awaiting_approval', 'queued', 'running', 'rolling_back')",
                )
                .bind(env)
                .fetch_one(self.reader())
                .await?;
                Ok(n)
            }

            async fn get_secret(&self, env: &str, name: &str) -> Result<Option<String>> {
                let row: Option<(String,)> = sqlx::query_as("SELECT sealed FROM secrets WHERE env = $1 AND name = $2")
                    .bind(env)
                    .bind(name)
                    .fetch_optional(self.writer())
                    .await?;
                Ok(row.map(|(s,)| s))
            }

            async fn get_resource(&self, env: &str, name: &str) -> Result<Option<pave_core::resource::Resource>> {
                let sql = format!("SELECT {RESOURCE_COLUMNS} FROM resources WHERE env = $1 AND name = $2");
                let row = sqlx::query(AssertSqlSafe(sql))
                    .bind(env)
                    .bind(name)
                    .fetch_optional(self.reader())
                    .await?;
                row.as_ref().map(Self::resource_from_row).transpose()
            }

            async fn list_resources(&self, env: Option<&str>) -> Result<Vec<pave_core::resource::Resource>> {
                let sql = format!(
                    "SELECT {RESOURCE_COLUMNS} FROM resources WHERE ($1 = '' OR env = $1) ORDER BY env, name"
                );
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(env.unwrap_or(""))
                    .fetch_all(self.reader())
                    .await?;
                rows.iter().map(Self::resource_from_row).collect()
            }

            async fn get_workload(&self, env: &str, name: &str) -> Result<Option<WorkloadRecord>> {
                let row: Option<WorkloadRow> = sqlx::query_as(
                    "SELECT env, name, current_revision, replicas, created_at, updated_at FROM workloads \
                     WHERE env = $1 AND name = $2",
                )
                .bind(env)
                .bind(name)
                .fetch_optional(self.reader())
                .await?;
                Ok(row.map(workload_from))
            }

            async fn list_all_workloads(&self) -> Result<Vec<WorkloadRecord>> {
                let rows: Vec<WorkloadRow> = sqlx::query_as(
                    "SELECT env, name, current_revision, replicas, created_at, updated_at FROM workloads \
                     ORDER BY env, name",
                )
                .fetch_all(self.reader())
                .await?;
                Ok(rows.into_iter().map(workload_from).collect())
            }

            async fn list_workloads(&self, env: &str) -> Result<Vec<WorkloadRecord>> {
                let rows: Vec<WorkloadRow> = sqlx::query_as(
                    "SELECT env, name, current_revision, replicas, created_at, updated_at FROM workloads \
                     WHERE env = $1 ORDER BY name",
                )
                .bind(env)
                .fetch_all(self.reader())
                .await?;
                Ok(rows
                    .into_iter()
                    .map(workload_from)
                    .collect())
            }

            async fn get_revision(&self, env: &str, name: &str, revision: i64) -> Result<Option<RevisionRecord>> {
                let row: Option<(String, String, i64, String, String, i64)> = sqlx::query_as(
                    "SELECT env, name, revision, spec, created_by, created_at FROM revisions \
                     WHERE env = $1 AND name = $2 AND revision = $3",
                )
                .bind(env)
                .bind(name)
                .bind(revision)
                .fetch_optional(self.reader())
                .await?;
                row.map(revision_from_tuple).transpose()
            }

            async fn list_revisions(&self, env: &str, name: &str) -> Result<Vec<RevisionRecord>> {
                let rows: Vec<(String, String, i64, String, String, i64)> = sqlx::query_as(
                    "SELECT env, name, revision, spec, created_by, created_at FROM revisions \
                     WHERE env = $1 AND name = $2 ORDER BY revision",
                )
                .bind(env)
                .bind(name)
                .fetch_all(self.reader())
                .await?;
                rows.into_iter().map(revision_from_tuple).collect()
            }

            async fn get_environment(&self, name: &str) -> Result<Option<Environment>> {
                let row: Option<(String, String, String, i64, Option<String>)> = sqlx::query_as(
                    "SELECT name, target, labels, created_at, namespace FROM environments WHERE name = $1",
                )
                .bind(name)
                .fetch_optional(self.reader())
                .await?;
                row.map(|(name, target, labels, created_at, namespace)| {
                    Ok(Environment {
                        name,
                        target,
                        labels: serde_json::from_str(&labels)
                            .map_err(|e| StoreError::Corrupt(format!("labels: {e}")))?,
                        created_at,
                        namespace,
                    })
                })
                .transpose()
            }

            async fn list_targets(&self) -> Result<Vec<TargetRecord>> {
                let sql = format!("SELECT {TARGET_COLUMNS} FROM targets ORDER BY name");
                let rows: Vec<TargetRow> = sqlx::query_as(AssertSqlSafe(sql)).fetch_all(self.reader()).await?;
                rows.into_iter().map(target_from).collect()
            }

            async fn get_target(&self, name: &str) -> Result<Option<TargetRecord>> {
                let sql = format!("SELECT {TARGET_COLUMNS} FROM targets WHERE name = $1");
                let row: Option<TargetRow> = sqlx::query_as(AssertSqlSafe(sql))
                    .bind(name)
                    .fetch_optional(self.reader())
                    .await?;
                row.map(target_from).transpose()
            }

            async fn find_agent_credential(&self, secret_hash: &str) -> Result<Option<AgentCredentialRecord>> {
                let sql = format!("SELECT {AGENT_CREDENTIAL_COLUMNS} FROM agent_credentials WHERE secret_hash = $1");
                let row: Option<AgentCredentialRow> = sqlx::query_as(AssertSqlSafe(sql))
                    .bind(secret_hash)
                    .fetch_optional(self.reader())
                    .await?;
                row.map(agent_credential_from).transpose()
            }

            async fn list_agent_credentials(&self, target: &str) -> Result<Vec<AgentCredentialRecord>> {
                let sql = format!(
                    "SELECT {AGENT_CREDENTIAL_COLUMNS} FROM agent_credentials WHERE target = $1 \
                     ORDER BY created_at DESC, id DESC"
                );
                let rows: Vec<AgentCredentialRow> = sqlx::query_as(AssertSqlSafe(sql))
                    .bind(target)
                    .fetch_all(self.reader())
                    .await?;
                rows.into_iter().map(agent_credential_from).collect()
            }

            async fn bench_single_row_commits(&self, n: u32) -> Result<Duration> {
                sqlx::query("CREATE TABLE IF NOT EXISTS bench_commits (id BIGINT PRIMARY KEY, v TEXT NOT NULL)")
                    .execute(self.writer())
                    .await?;
                sqlx::query("DELETE FROM bench_commits").execute(self.writer()).await?;
                let started = Instant::now();
                for i in 0..n {
                    sqlx::query("INSERT INTO bench_commits (id, v) VALUES ($1, $2)")
                        .bind(i as i64)
                        .bind("x")
                        .execute(self.writer())
                        .await?;
                }
                let took = started.elapsed();
                sqlx::query("DROP TABLE bench_commits").execute(self.writer()).await?;
                Ok(took)
            }
        }
    };
}

sql_store!(
    SqliteStore,
    sqlx::Sqlite,
    "sqlite",
    for_update = "",
    skip_locked = ""
);
sql_store!(
    PgStore,
    sqlx::Postgres,
    "postgres",
    for_update = " FOR UPDATE",
    skip_locked = " FOR UPDATE SKIP LOCKED"
);
