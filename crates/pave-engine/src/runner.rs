//! Runs one claimed action: its pending steps forward, or its compensations in
//! reverse when it is rolling back. Each step is written as running before its
//! command is sent, and its result is written before it is acknowledged.

use std::time::Duration;

use pave_agent::protocol::{Command, CommandPayload, FromAgent, LogStream, Outcome};
use pave_core::action::{ActionError, ActionState, Step, StepState};
use pave_core::time::now_ms;
use pave_core::{Action, AuditDraft};
use pave_store::{ActionUpdate, LogLine, StepUpdate, WriteOp};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::resources::{self, Prepared};
use crate::workloads;

/// Log lines are written in batches of at most this many, or this often.
const LOG_BATCH: usize = 256;
const LOG_FLUSH: Duration = Duration::from_millis(100);

struct Run {
    engine: Engine,
    target: String,
    action: Action,
    token: CancellationToken,
    log_seq: i64,
}

/// How the steps of a pass ended.
enum PassEnd {
    Done,
    Failed(ActionError),
    Cancelled(ActionError),
    /// The engine is stopping; leave the action for the next claim.
    Stopped,
    /// The action's end was written together with its last step.
    Recorded,
}

pub(crate) async fn run(engine: Engine, action: Action) {
    let id = action.id.clone();
    // Until the action is registered as running here, its lease is not renewed:
    // if these reads fail it expires and the action is claimed again.
    // A fresh action has no log yet; only a resumed or retried one needs its last line number.
    let fresh = action.attempt == 1 && action.steps.iter().all(|s| s.state == StepState::Pending);
    let log_seq = if fresh {
        Ok(0)
    } else {
        engine.store().last_log_seq(&id).await
    };
    let target = engine.target_of(&action.env).await;
    let (log_seq, target) = match (log_seq, target) {
        (Ok(seq), Ok(target)) => (
            seq,
            // An environment deleted under a queued action: the dispatch fails
            // with a clear "no agent" error on the step.
            target.unwrap_or_else(|| format!("(environment `{}` is gone)", action.env)),
        ),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(action = %id, error = %e, "could not prepare the action; it will be claimed again");
            return;
        }
    };
    let token = CancellationToken::new();
    if action.cancel_requested {
        token.cancel();
    }
    engine
        .inner
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.clone(), token.clone());
    let mut run = Run {
        engine: engine.clone(),
        target,
        action,
        token,
        log_seq,
    };
    if let Err(e) = run.drive().await {
        // The store failed mid-way: the lease lapses and the action resumes
        // from what was written.
        tracing::error!(action = %id, error = %e, "action run stopped by a store error");
    }
    engine
        .inner
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    engine.changed(&id);
    engine.wake();
}

impl Run {
    fn id(&self) -> &str {
        &self.action.id
    }

    async fn write(&self, ops: Vec<WriteOp>) -> Result<(), pave_store::StoreError> {
        self.engine.inner.writer.write(ops).await?;
        self.engine.changed(self.id());
        Ok(())
    }

    fn audit(&self, verb: &str, summary: String, details: Value) -> WriteOp {
        WriteOp::Audit(AuditDraft {
            actor: "system".into(),
            verb: verb.into(),
            object: format!("action/{}", self.action.id),
            summary,
            details,
        })
    }

    fn finish(&self, state: ActionState, error: Option<ActionError>, result: Value) -> Vec<WriteOp> {
        metrics::counter!("pave_actions_finished_total",
            "kind" => self.action.kind.clone(), "state" => state.as_str())
        .increment(1);
        let from = self.action.state;
        vec![
            WriteOp::UpdateAction {
                id: self.id().to_string(),
                expect: vec![],
                set: ActionUpdate {
                    state: Some(state),
                    error: Some(error.clone()),
                    result: Some(result),
                    cancel_requested: Some(false),
                    release: true,
                    ..Default::default()
                },
            },
            self.audit(
                "action.state",
                match &error {
                    Some(e) => format!("{from} → {state}: {}", e.message),
                    None => format!("{from} → {state}"),
                },
                json!({ "state": state, "error": error }),
            ),
        ]
    }

    async fn drive(&mut self) -> Result<(), pave_store::StoreError> {
        let rolling_back = self.action.state == ActionState::RollingBack;
        let end = if rolling_back {
            self.compensate().await?
        } else {
            self.forward().await?
        };
        let ops = match (end, rolling_back) {
            (PassEnd::Stopped | PassEnd::Recorded, _) => return Ok(()),
            (PassEnd::Done, false) => {
                let result = self
                    .action
                    .steps
                    .last()
                    .map(|s| s.output.clone())
                    .unwrap_or(Value::Null);
                self.finish(ActionState::Succeeded, None, result)
            }
            (PassEnd::Done, true) => self.finish(ActionState::RolledBack, None, Value::Null),
            (PassEnd::Failed(e), _) => self.finish(ActionState::Failed, Some(e), Value::Null),
            (PassEnd::Cancelled(e), _) => self.finish(ActionState::Cancelled, Some(e), Value::Null),
        };
        self.write(ops).await
    }

    async fn forward(&mut self) -> Result<PassEnd, pave_store::StoreError> {
        // A remote agent outlives its control plane: a step that was running
        // there is asked for again under the same command id, which the agent
        // runs at most once (it answers with the result it kept, or reports
        // the command cut short by its own restart).
        let remote = matches!(
            self.engine.inner.store.get_target(&self.target).await,
            Ok(Some(t)) if t.agent
        );
        for i in 0..self.action.steps.len() {
            let step = self.action.steps[i].clone();
            match step.state {
                StepState::Succeeded | StepState::Skipped | StepState::Compensated => continue,
                StepState::Failed | StepState::Cancelled | StepState::Interrupted => {
                    // Written before the crash that cut the action short: end it
                    // the way the step ended.
                    let error = step
                        .error
                        .clone()
                        .unwrap_or_else(|| self.step_error(&step, "failed", "the step failed".into()));
                    return Ok(if step.state == StepState::Cancelled {
                        PassEnd::Cancelled(error)
                    } else {
                        PassEnd::Failed(error)
                    });
                }
                StepState::Running if !step.idempotent && !remote => {
                    let error = ActionError {
                        step: Some(step.name.clone()),
                        code: "interrupted".into(),
                        message: format!(
                            "step `{}` was running when its control plane stopped; its outcome is unknown, \
                             so pave did not run it again",
                            step.name
                        ),
                        next: vec![format!("pave actions retry {} (runs the step again)", self.id())],
                    };
                    self.write(vec![
                        WriteOp::UpdateStep {
                            action_id: self.id().to_string(),
                            idx: step.idx,
                            set: StepUpdate {
                                state: Some(StepState::Interrupted),
                                finished_at: Some(Some(now_ms())),
                                error: Some(Some(error.clone())),
                                ..Default::default()
                            },
                        },
                        self.audit(
                            "step.interrupted",
                            format!("step {} interrupted", step.name),
                            json!({ "step": step.idx }),
                        ),
                    ])
                    .await?;
                    return Ok(PassEnd::Failed(error));
                }
                StepState::Running | StepState::Pending | StepState::Compensating => {}
            }
            if self.token.is_cancelled() {
                return Ok(PassEnd::Cancelled(self.step_error(
                    &step,
                    "cancelled",
                    "cancelled before the step started".into(),
                )));
            }
            if self.engine.inner.stopping.is_cancelled() {
                return Ok(PassEnd::Stopped);
            }
            let prepared = match self.prepare(step.idx, &step.kind, &step.spec).await {
                Ok(p) => p,
                Err((code, message)) => return self.fail_before_start(&step, &code, message).await,
            };
            let resume = step.state == StepState::Running && !step.idempotent;
            let prepared = if resume {
                Prepared {
                    before: vec![],
                    ..prepared
                }
            } else {
                prepared
            };
            match self
                .execute(i, prepared, false, resume, &step.kind, &step.spec)
                .await?
            {
                Ok(output) => self.action.steps[i].output = output,
                Err(end) => return Ok(end),
            }
        }
        Ok(PassEnd::Done)
    }

    async fn compensate(&mut self) -> Result<PassEnd, pave_store::StoreError> {
        for i in (0..self.action.steps.len()).rev() {
            let step = self.action.steps[i].clone();
            if !matches!(step.state, StepState::Succeeded | StepState::Compensating) {
                continue;
            }
            if step.compensation.is_null() {
                self.write(vec![WriteOp::UpdateStep {
                    action_id: self.id().to_string(),
                    idx: step.idx,
                    set: StepUpdate {
                        state: Some(StepState::Skipped),
                        ..Default::default()
                    },
                }])
                .await?;
                continue;
            }
            let kind = step.compensation["kind"].as_str().unwrap_or_default().to_string();
            let spec = step.compensation["spec"].clone();
            let prepared = match self.prepare(step.idx, &kind, &spec).await {
                Ok(p) => p,
                Err((_, message)) => {
                    return Ok(PassEnd::Failed(self.step_error(
                        &step,
                        "rollback_failed",
                        format!("undoing step `{}` failed: {message}", step.name),
                    )))
                }
            };
            if let Err(end) = self.execute(i, prepared, true, false, &kind, &spec).await? {
                return Ok(end);
            }
        }
        Ok(PassEnd::Done)
    }

    async fn prepare(&self, idx: i64, kind: &str, spec: &Value) -> Result<Prepared, resources::PrepareError> {
        if let Some(r) = resources::prepare(&self.engine, self.id(), kind, spec).await {
            return r;
        }
        if let Some(r) = workloads::prepare(&self.engine, self.id(), idx, kind, spec).await {
            return r;
        }
        if let Some(r) = crate::secrets::prepare_restore(&self.engine, kind, spec).await {
            return r;
        }
        if let Some(r) = crate::expand::prepare(&self.engine, kind, spec).await {
            return r;
        }
        if let Some(r) = crate::clusters::prepare(&self.engine, &self.action, kind, spec).await {
            return r;
        }
        if let Some(r) =
            crate::secrets::prepare_job(&self.engine, self.id(), &self.action.env, kind, spec).await
        {
            return r;
        }
        payload_for(kind)
            .map(|payload| Prepared {
                payload,
                before: vec![],
            })
            .map_err(|m| ("invalid_step".to_string(), m))
    }

    /// Records a step that failed before its command could be sent, and the action's end.
    async fn fail_before_start(
        &mut self,
        step: &Step,
        code: &str,
        message: String,
    ) -> Result<PassEnd, pave_store::StoreError> {
        let error = self.step_error(step, code, message);
        let mut ops = vec![WriteOp::UpdateStep {
            action_id: self.id().to_string(),
            idx: step.idx,
            set: StepUpdate {
                state: Some(StepState::Failed),
                finished_at: Some(Some(now_ms())),
                error: Some(Some(error.clone())),
                ..Default::default()
            },
        }];
        ops.extend(self.finish(ActionState::Failed, Some(error), Value::Null));
        self.write(ops).await?;
        Ok(PassEnd::Recorded)
    }

    fn step_error(&self, step: &Step, code: &str, message: String) -> ActionError {
        let next = match code {
            "cancelled" => vec![format!("pave actions retry {}", self.id())],
            _ => {
                let mut next = vec![format!(
                    "pave actions retry {} (runs step `{}` again)",
                    self.id(),
                    step.name
                )];
                if self
                    .action
                    .steps
                    .iter()
                    .any(|s| s.state == StepState::Succeeded && !s.compensation.is_null())
                {
                    next.push(format!(
                        "pave actions rollback {} (undoes the finished steps)",
                        self.id()
                    ));
                }
                next
            }
        };
        ActionError {
            step: Some(step.name.clone()),
            code: code.to_string(),
            message,
            next,
        }
    }

    /// Runs one command for step `i` and records its outcome. Returns the
    /// output, or how the pass ends.
    async fn execute(
        &mut self,
        i: usize,
        prepared: Prepared,
        compensation: bool,
        resume: bool,
        kind: &str,
        spec: &Value,
    ) -> Result<Result<Value, PassEnd>, pave_store::StoreError> {
        let Prepared { payload, before } = prepared;
        let step = self.action.steps[i].clone();
        // Resumed: the same attempt, so the same command id.
        let attempt = if resume {
            step.attempt.max(1)
        } else {
            step.attempt + 1
        };
        let (running, done) = if compensation {
            (StepState::Compensating, StepState::Compensated)
        } else {
            (StepState::Running, StepState::Succeeded)
        };
        let mut start = before;
        start.push(WriteOp::UpdateStep {
            action_id: self.id().to_string(),
            idx: step.idx,
            set: StepUpdate {
                state: Some(running),
                attempt: Some(attempt),
                started_at: Some(Some(now_ms())),
                finished_at: Some(None),
                ..Default::default()
            },
        });
        self.write(start).await?;
        self.action.steps[i].state = running;
        self.action.steps[i].attempt = attempt;

        let command_id = format!(
            "{}.{}.{}{}",
            self.id(),
            step.idx,
            attempt,
            if compensation { ".undo" } else { "" }
        );
        // What a step sends back (a command's output, a replica's log tail in
        // an error) may hold a secret of its environment.
        let secrets = if kind != "noop" {
            self.engine.secret_values(&self.action.env).await
        } else {
            vec![]
        };
        let outcome = self
            .dispatch(&step, command_id.clone(), payload, &secrets)
            .await?;
        let outcome_copy = outcome.clone();
        let now = now_ms();
        let (state, output, error, end) = match outcome {
            Outcome::Succeeded { output } => (done, output, None, None),
            Outcome::Failed {
                code,
                message,
                output,
            } => {
                let code = if compensation {
                    "rollback_failed".to_string()
                } else {
                    code
                };
                let message = if compensation {
                    format!("undoing step `{}` failed: {message}", step.name)
                } else {
                    message
                };
                // The agent went away, or was restarted, while the command ran:
                // nobody knows what it did.
                let cut_short = matches!(code.as_str(), "agent_lost" | "agent_restarted");
                let e = self.step_error(&step, &code, message);
                let state = if compensation {
                    StepState::Succeeded
                } else if cut_short {
                    StepState::Interrupted
                } else {
                    StepState::Failed
                };
                (state, output, Some(e.clone()), Some(PassEnd::Failed(e)))
            }
            Outcome::Cancelled { output } => {
                let e = self.step_error(
                    &step,
                    "cancelled",
                    format!("step `{}` was cancelled while running", step.name),
                );
                let state = if compensation {
                    StepState::Succeeded
                } else {
                    StepState::Cancelled
                };
                (state, output, Some(e.clone()), Some(PassEnd::Cancelled(e)))
            }
        };
        let mut ops = resources::after(&self.engine, kind, spec, &outcome_copy).await;
        ops.extend(workloads::after(&self.engine, self.id(), kind, spec, &outcome_copy).await);
        ops.extend(crate::expand::after(kind, spec, &outcome_copy));
        ops.extend(crate::clusters::after(self.id(), kind, spec, &outcome_copy));
        ops.push(WriteOp::UpdateStep {
            action_id: self.id().to_string(),
            idx: step.idx,
            set: StepUpdate {
                state: Some(state),
                finished_at: Some(Some(now)),
                // An undo's output does not replace what the step itself reported.
                output: (!compensation).then(|| output.clone()),
                error: Some(error),
                ..Default::default()
            },
        });
        let last = i + 1 == self.action.steps.len();
        // The last step's result and the action's end commit together.
        let end_now = end.is_some() || (last && !compensation);
        self.action.steps[i].state = state;
        if end_now {
            let (st, err) = match &end {
                None => (ActionState::Succeeded, None),
                Some(PassEnd::Failed(e)) => (ActionState::Failed, Some(e.clone())),
                Some(PassEnd::Cancelled(e)) => (ActionState::Cancelled, Some(e.clone())),
                Some(_) => (ActionState::Failed, None),
            };
            ops.extend(self.finish(
                st,
                err,
                if end.is_none() {
                    output.clone()
                } else {
                    Value::Null
                },
            ));
        }
        self.write(ops).await?;
        if let Ok(hub) = self.engine.hub(&self.target()).await {
            hub.ack(&command_id).await;
        }
        Ok(match end {
            _ if end_now => Err(PassEnd::Recorded),
            Some(e) => Err(e),
            None => Ok(output),
        })
    }

    fn target(&self) -> String {
        self.target.clone()
    }

    async fn dispatch(
        &mut self,
        step: &Step,
        command_id: String,
        payload: CommandPayload,
        secrets: &[String],
    ) -> Result<Outcome, pave_store::StoreError> {
        let target = self.target();
        let hub = match self.engine.hub(&target).await {
            Ok(h) => h,
            Err(message) => {
                return Ok(Outcome::Failed {
                    code: "agent_unavailable".into(),
                    message,
                    output: Value::Null,
                })
            }
        };
        if !hub.is_embedded() {
            // Commands leaving the control plane for another host are on the record.
            self.write(vec![self.audit(
                "agent.command",
                format!("command {command_id} sent to the agent of target {target}"),
                json!({ "command": command_id, "step": step.idx, "target": target, "kind": step.kind }),
            )])
            .await?;
        }
        let dispatched_at = now_ms();
        let lost_after = self.engine.inner.config.agent_lost_after;
        let mut away_check = tokio::time::interval(std::time::Duration::from_millis(500));
        let cmd = Command {
            id: command_id.clone(),
            action_id: self.id().to_string(),
            step: step.idx,
            payload,
        };
        let mut rx = match hub.dispatch(cmd).await {
            Ok(rx) => rx,
            Err(message) => {
                return Ok(Outcome::Failed {
                    code: "agent_unavailable".into(),
                    message,
                    output: Value::Null,
                })
            }
        };
        let mut pending: Vec<LogLine> = Vec::new();
        let mut flush_at = tokio::time::Instant::now() + LOG_FLUSH;
        let mut cancel_sent = false;
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(FromAgent::Log { stream, line, .. }) => {
                        let line = crate::secrets::redact(&line, secrets);
                        self.log_seq += 1;
                        pending.push(LogLine {
                            action_id: self.id().to_string(),
                            seq: self.log_seq,
                            step: step.idx,
                            stream: stream.as_str().to_string(),
                            time: now_ms(),
                            line,
                        });
                        if pending.len() >= LOG_BATCH {
                            self.write(vec![WriteOp::AppendLogs(std::mem::take(&mut pending))]).await?;
                            flush_at = tokio::time::Instant::now() + LOG_FLUSH;
                        }
                    }
                    Some(FromAgent::Started { info, .. }) => {
                        if !info.is_null() {
                            self.log_seq += 1;
                            pending.push(LogLine {
                                action_id: self.id().to_string(),
                                seq: self.log_seq,
                                step: step.idx,
                                stream: LogStream::System.as_str().to_string(),
                                time: now_ms(),
                                line: format!("started {info}"),
                            });
                        }
                    }
                    Some(FromAgent::Result { outcome, .. }) => {
                        if !pending.is_empty() {
                            self.write(vec![WriteOp::AppendLogs(std::mem::take(&mut pending))]).await?;
                        }
                        if secrets.is_empty() {
                            return Ok(outcome);
                        }
                        let redacted = serde_json::to_value(&outcome)
                            .ok()
                            .map(|v| crate::secrets::redact_value(&v, secrets))
                            .and_then(|v| serde_json::from_value(v).ok());
                        return Ok(redacted.unwrap_or(outcome));
                    }
                    Some(_) => {}
                    None => {
                        if !pending.is_empty() {
                            self.write(vec![WriteOp::AppendLogs(std::mem::take(&mut pending))]).await?;
                        }
                        return Ok(Outcome::Failed {
                            code: "agent_lost".into(),
                            message: format!("the agent of target `{target}` went away while the step ran"),
                            output: Value::Null,
                        });
                    }
                },
                _ = tokio::time::sleep_until(flush_at), if !pending.is_empty() => {
                    self.write(vec![WriteOp::AppendLogs(std::mem::take(&mut pending))]).await?;
                    flush_at = tokio::time::Instant::now() + LOG_FLUSH;
                }
                _ = self.token.cancelled(), if !cancel_sent => {
                    cancel_sent = true;
                    hub.cancel(&command_id).await;
                }
                _ = away_check.tick() => {
                    let Some(since) = hub.away_since(dispatched_at) else { continue };
                    if now_ms() - since < lost_after.as_millis() as i64 {
                        continue;
                    }
                    if !pending.is_empty() {
                        self.write(vec![WriteOp::AppendLogs(std::mem::take(&mut pending))]).await?;
                    }
                    // The agent keeps the result if it comes back: unrouted, it
                    // stays there for a retry to find (a retry is a new attempt).
                    hub.forget(&command_id);
                    let away = (now_ms() - since) / 1000;
                    let message = if hub.status().connected_at.is_none() {
                        format!(
                            "no agent of target `{target}` connected in {away} s (is `pave agent` running?); \
                             the step was not run"
                        )
                    } else {
                        format!(
                            "the agent of target `{target}` has been away for {away} s; the step's outcome \
                             is unknown, so pave did not run it again"
                        )
                    };
                    return Ok(Outcome::Failed {
                        code: "agent_lost".into(),
                        message,
                        output: Value::Null,
                    });
                }
            }
            if pending.is_empty() {
                flush_at = tokio::time::Instant::now() + LOG_FLUSH;
            }
        }
    }
}

/// Step kinds whose command needs nothing prepared (the others are prepared by
/// the resource, workload, environment and job modules).
fn payload_for(kind: &str) -> Result<CommandPayload, String> {
    match kind {
        "noop" => Ok(CommandPayload::Noop),
        other => Err(format!("no agent command for step kind `{other}`")),
    }
}
