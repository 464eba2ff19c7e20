//! The hot path of a write batch as one SQL script. Each statement of a
//! transaction is a round trip to the database's thread (SQLite) or socket
//! (PostgreSQL); the engine's own writes (new actions, step and action updates,
//! log lines, resource health) need no answer, so they are rendered as SQL
//! text with escaped literals and sent together in one round trip.
//!
//! Literals are rendered for both dialects: strings in single quotes with
//! quotes doubled (PostgreSQL's standard_conforming_strings, on by default
//! since 9.1, keeps backslashes literal), NUL characters replaced (neither
//! database stores them in text), integers as digits.

use std::fmt::Write as _;

use pave_core::action::ActionError;
use serde_json::Value;

use crate::model::{ActionUpdate, StepUpdate, WriteOp};

/// A text literal.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn opt_text(s: Option<&str>) -> String {
    s.map(text).unwrap_or_else(|| "NULL".into())
}

fn opt_int(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "NULL".into())
}

fn json(v: &Value) -> String {
    text(&v.to_string())
}

fn error(e: &Option<ActionError>) -> String {
    opt_text(e.as_ref().and_then(|e| serde_json::to_string(e).ok()).as_deref())
}

/// Appends `SET` assignments for the fields an update changes.
fn action_sets(set: &ActionUpdate, now: i64) -> String {
    let mut sets = vec![format!("updated_at = {now}")];
    if let Some(s) = set.state {
        sets.push(format!("state = {}", text(s.as_str())));
    }
    if let Some(e) = &set.error {
        sets.push(format!("error = {}", error(e)));
    }
    if let Some(r) = &set.result {
        sets.push(format!("result = {}", json(r)));
    }
    if let Some(a) = set.attempt {
        sets.push(format!("attempt = {a}"));
    }
    if let Some(c) = set.cancel_requested {
        sets.push(format!("cancel_requested = {}", c as i64));
    }
    if set.release {
        sets.push("lease_owner = NULL, lease_until = NULL".into());
    }
    sets.join(", ")
}

fn step_sets(set: &StepUpdate) -> Option<String> {
    let mut sets = Vec::new();
    if let Some(s) = set.state {
        sets.push(format!("state = {}", text(s.as_str())));
    }
    if let Some(a) = set.attempt {
        sets.push(format!("attempt = {a}"));
    }
    if let Some(t) = set.started_at {
        sets.push(format!("started_at = {}", opt_int(t)));
    }
    if let Some(t) = set.finished_at {
        sets.push(format!("finished_at = {}", opt_int(t)));
    }
    if let Some(o) = &set.output {
        sets.push(format!("output = {}", json(o)));
    }
    if let Some(e) = &set.error {
        sets.push(format!("error = {}", error(e)));
    }
    if let Some(c) = &set.compensation {
        sets.push(format!("compensation = {}", json(c)));
    }
    (!sets.is_empty()).then(|| sets.join(", "))
}

/// Renders `op` into `out`, or returns false when it needs an answer from the
/// database (a precondition, a unique key) and must run as its own statement.
pub(crate) fn render(out: &mut String, op: &WriteOp, now: i64) -> bool {
    match op {
        WriteOp::InsertAction(a) if a.idempotency_key.is_none() => {
            let _ = writeln!(
                out,
                "INSERT INTO actions (id, kind, env, object, actor, input, state, attempt, error, result, \
                 idempotency_key, idempotency_scope, cancel_requested, created_at, updated_at) VALUES \
                 ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, NULL, NULL, {}, {}, {});",
                text(&a.id),
                text(&a.kind),
                text(&a.env),
                text(&a.object),
                text(&a.actor),
                json(&a.input),
                text(a.state.as_str()),
                a.attempt,
                error(&a.error),
                json(&a.result),
                a.cancel_requested as i64,
                a.created_at,
                a.updated_at
            );
            for s in &a.steps {
                let _ = writeln!(
                    out,
                    "INSERT INTO steps (action_id, idx, name, kind, idempotent, state, attempt, spec, output, \
                     error, compensation, started_at, finished_at) VALUES \
                     ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {});",
                    text(&a.id),
                    s.idx,
                    text(&s.name),
                    text(&s.kind),
                    s.idempotent as i64,
                    text(s.state.as_str()),
                    s.attempt,
                    json(&s.spec),
                    json(&s.output),
                    error(&s.error),
                    json(&s.compensation),
                    opt_int(s.started_at),
                    opt_int(s.finished_at)
                );
            }
            true
        }
        WriteOp::UpdateAction { id, expect, set } if expect.is_empty() => {
            let _ = writeln!(
                out,
                "UPDATE actions SET {} WHERE id = {};",
                action_sets(set, now),
                text(id)
            );
            if set.release {
                let _ = writeln!(out, "DELETE FROM object_locks WHERE action_id = {};", text(id));
            }
            true
        }
        WriteOp::UpdateStep { action_id, idx, set } => {
            if let Some(sets) = step_sets(set) {
                let _ = writeln!(
                    out,
                    "UPDATE steps SET {sets} WHERE action_id = {} AND idx = {idx};",
                    text(action_id)
                );
            }
            true
        }
        WriteOp::AppendLogs(lines) => {
            for chunk in lines.chunks(200) {
                out.push_str("INSERT INTO action_logs (action_id, seq, step, stream, time, line) VALUES ");
                for (i, l) in chunk.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let _ = write!(
                        out,
                        "({}, {}, {}, {}, {}, {})",
                        text(&l.action_id),
                        l.seq,
                        l.step,
                        text(&l.stream),
                        l.time,
                        text(&l.line)
                    );
                }
                out.push_str(";\n");
            }
            true
        }
        WriteOp::SetResourceHealth { env, name, health } => {
            let _ = writeln!(
                out,
                "UPDATE resources SET health = {}, checked_at = {now} \
                 WHERE env = {} AND name = {} AND lifecycle = 'ready';",
                text(health),
                text(env),
                text(name)
            );
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_nul_cannot_break_out_of_a_literal() {
        assert_eq!(text("it's"), "'it''s'");
        assert_eq!(text("a\0b"), "'a\u{FFFD}b'");
        assert_eq!(
            text("x'); DROP TABLE actions; --"),
            "'x''); DROP TABLE actions; --'"
        );
        assert_eq!(text("back\\slash"), "'back\\slash'");
    }
}
