//! Workload commands, executed by the local target driver
//! ([`pave_targets::local::LocalTarget`]).

use std::time::Duration;

use pave_targets::{ContainerState, Target, WorkloadKey, WorkloadSpec, WorkloadStatus};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::{Command, CommandPayload, FromAgent, LogStream, Outcome};

/// How often a rollout looks at the replicas.
const POLL: Duration = Duration::from_millis(250);

/// First pause between readiness checks of a rollout; it grows by half each
/// time, up to [`POLL`].
const FIRST_POLL: Duration = Duration::from_millis(1);

/// Restarts after which a replica that never became ready counts as crash-looping.
const CRASH_LOOP_RESTARTS: u32 = 3;

/// Executes a workload command, or `None` when the command is not one.
pub async fn execute(
    target: &dyn Target,
    cmd: &Command,
    token: CancellationToken,
    out: &mpsc::Sender<FromAgent>,
) -> Option<Outcome> {
    let outcome = match &cmd.payload {
        CommandPayload::ApplyWorkload { key, spec } => status_outcome(target.apply(key, spec).await),
        CommandPayload::RestoreWorkload { key, spec } => match spec {
            Some(spec) => match target.apply(key, spec).await {
                Ok(_) => match target.prune(key, Some(spec.revision)).await {
                    Ok(()) => status_outcome(target.status(key).await),
                    Err(e) => failed("prune_failed", e.to_string()),
                },
                Err(e) => failed("workload_failed", e.to_string()),
            },
            None => match target.prune(key, None).await {
                Ok(()) => Outcome::Succeeded { output: Value::Null },
                Err(e) => failed("prune_failed", e.to_string()),
            },
        },
        CommandPayload::WorkloadStatus { key } => status_outcome(target.status(key).await),
        CommandPayload::PruneWorkload { key, keep } => match target.prune(key, *keep).await {
            Ok(()) => status_outcome(target.status(key).await),
            Err(e) => failed("prune_failed", e.to_string()),
        },
        CommandPayload::WorkloadLogs { key, replica, tail } => {
            match target.logs(key, *replica, *tail).await {
                Ok(lines) => Outcome::Succeeded {
                    output: json!({ "lines": lines }),
                },
                Err(e) => failed("logs_failed", e.to_string()),
            }
        }
        CommandPayload::ExecWorkload { key, command } => exec(target, cmd, key, command, out).await,
        CommandPayload::FollowWorkloadLogs { key, replica, tail } => {
            follow_logs(target, cmd, key, *replica, *tail, out, token).await
        }
        CommandPayload::AwaitWorkload {
            key,
            revision,
            timeout_ms,
            fallback,
            apply,
            min_ready,
        } => {
            if let Some(spec) = apply {
                if let Err(e) = target.apply(key, spec).await {
                    return Some(failed("workload_failed", e.to_string()));
                }
            }
            let wait = Wait {
                revision: *revision,
                timeout_ms: *timeout_ms,
                min_ready: *min_ready,
            };
            await_ready(target, key, wait, fallback.as_deref(), token).await
        }
        _ => return None,
    };
    Some(outcome)
}

fn failed(code: &str, message: String) -> Outcome {
    Outcome::Failed {
        code: code.to_string(),
        message,
        output: Value::Null,
    }
}

fn status_outcome(r: Result<WorkloadStatus, pave_targets::TargetError>) -> Outcome {
    match r {
        Ok(s) => Outcome::Succeeded {
            output: serde_json::to_value(s).unwrap_or_default(),
        },
        Err(e) => failed("workload_failed", e.to_string()),
    }
}

async fn exec(
    target: &dyn Target,
    cmd: &Command,
    key: &WorkloadKey,
    command: &[String],
    out: &mpsc::Sender<FromAgent>,
) -> Outcome {
    let (tx, mut rx) = mpsc::channel::<(String, String)>(256);
    let forward = {
        let out = out.clone();
        let id = cmd.id.clone();
        async move {
            while let Some((stream, line)) = rx.recv().await {
                let stream = if stream == "stderr" {
                    LogStream::Stderr
                } else {
                    LogStream::Stdout
                };
                let _ = out
                    .send(FromAgent::Log {
                        command_id: id.clone(),
                        stream,
                        line,
                    })
                    .await;
            }
        }
    };
    let (code, ()) = tokio::join!(target.exec(key, command, tx), forward);
    match code {
        Ok(exit_code) => Outcome::Succeeded {
            output: json!({ "exit_code": exit_code }),
        },
        Err(e) => failed("exec_failed", e.to_string()),
    }
}

async fn follow_logs(
    target: &dyn Target,
    cmd: &Command,
    key: &WorkloadKey,
    replica: Option<u32>,
    tail: usize,
    out: &mpsc::Sender<FromAgent>,
    token: CancellationToken,
) -> Outcome {
    let (tx, mut rx) = mpsc::channel::<String>(256);
    let forward = {
        let out = out.clone();
        let id = cmd.id.clone();
        async move {
            while let Some(line) = rx.recv().await {
                let log = FromAgent::Log {
                    command_id: id.clone(),
                    stream: LogStream::Stdout,
                    line,
                };
                if out.send(log).await.is_err() {
                    break;
                }
            }
        }
    };
    let follow = async {
        tokio::select! {
            r = target.follow_logs(key, replica, tail, tx) => Some(r),
            _ = token.cancelled() => None,
        }
    };
    match tokio::join!(follow, forward).0 {
        Some(Ok(())) => Outcome::Succeeded { output: Value::Null },
        Some(Err(e)) => failed("logs_failed", e.to_string()),
        None => Outcome::Cancelled { output: Value::Null },
    }
}

fn describe(state: &ContainerState) -> String {
    match state {
        ContainerState::Running { .. } => "Running".into(),
        ContainerState::Waiting { reason, .. } => format!("Waiting({reason})"),
        ContainerState::Terminated {
            reason, exit_code, ..
        } => match exit_code {
            Some(c) => format!("Terminated({reason}, exit {c})"),
            None => format!("Terminated({reason})"),
        },
    }
}

/// Why `revision` is not ready, replica by replica.
async fn not_ready_report(
    target: &dyn Target,
    key: &WorkloadKey,
    status: &WorkloadStatus,
    revision: i64,
) -> String {
    let mut parts = Vec::new();
    let mut first_bad = None;
    for r in status.of_revision(revision) {
        if r.ready {
            continue;
        }
        first_bad.get_or_insert(r.index);
        let mut s = format!("replica {} {}", r.index, describe(&r.state));
        if let Some(ContainerState::Terminated {
            exit_code: Some(c), ..
        }) = &r.last_state
        {
            s.push_str(&format!(", last exit {c}"));
        }
        parts.push(s);
    }
    if parts.is_empty() {
        parts.push("no replica of it runs".into());
    }
    let mut text = parts.join("; ");
    if let Some(index) = first_bad {
        if let Ok(lines) = target.logs(key, Some(index), 5).await {
            if lines.is_empty() {
                text.push_str(&format!("; replica {index} wrote nothing to stdout or stderr"));
            } else {
                text.push_str(&format!(
                    "; output tail of replica {index}: {}",
                    lines.join(" | ")
                ));
            }
        }
    }
    text
}

/// How often a watched rollout also looks for replicas that crash-loop.
const CRASH_CHECK: Duration = Duration::from_secs(2);

/// Waiting out the deadline tells nothing more when every replica keeps
/// exiting before it was ever ready (a command that fails at start).
fn crash_looping(status: &WorkloadStatus, revision: i64) -> bool {
    let mine: Vec<_> = status.of_revision(revision).collect();
    status.revision == Some(revision)
        && !mine.is_empty()
        && mine.len() as u32 >= status.desired
        && mine
            .iter()
            .all(|r| !r.ready && r.restart_count >= CRASH_LOOP_RESTARTS)
}

/// What a rollout waits for.
struct Wait {
    revision: i64,
    timeout_ms: u64,
    /// Ready replicas that suffice (default: all of them).
    min_ready: Option<u32>,
}

async fn await_ready(
    target: &dyn Target,
    key: &WorkloadKey,
    wait: Wait,
    fallback: Option<&WorkloadSpec>,
    token: CancellationToken,
) -> Outcome {
    let Wait {
        revision,
        timeout_ms,
        min_ready,
    } = wait;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    let mut pause = FIRST_POLL;
    // A driver that learns of changes (a watch) is waited on, raced with a
    // slow look at the replicas that catches a revision whose every replica
    // crash-loops before the deadline.
    let mut watched: Option<String> = None;
    if min_ready.is_none() {
        let watch = target.wait_rolled_out(key, revision, Duration::from_millis(timeout_ms));
        tokio::pin!(watch);
        let verdict = loop {
            tokio::select! {
                v = &mut watch => break v.map(|r| r.map_err(|e| e.to_string())),
                _ = tokio::time::sleep(CRASH_CHECK) => {
                    if let Ok(status) = target.status(key).await {
                        if crash_looping(&status, revision) {
                            break Some(Err(String::new()));
                        }
                    }
                }
                _ = token.cancelled() => break Some(Err(String::new())),
            }
        };
        match verdict {
            None => {}
            Some(Ok(status)) => {
                return Outcome::Succeeded {
                    output: serde_json::to_value(status).unwrap_or_default(),
                }
            }
            // Decided below from the status (crash loop, cancel), or with
            // the watch's reason (stalled, timed out).
            Some(Err(why)) => watched = Some(why),
        }
    }
    loop {
        let status = match target.status(key).await {
            Ok(s) => s,
            Err(e) => return failed("workload_failed", e.to_string()),
        };
        let ready = status.of_revision(revision).filter(|r| r.ready).count() as u32;
        if status.revision == Some(revision)
            && ready >= min_ready.unwrap_or(status.desired).min(status.desired)
        {
            return Outcome::Succeeded {
                output: serde_json::to_value(status).unwrap_or_default(),
            };
        }
        let crash_looping = crash_looping(&status, revision);
        let cancelled = token.is_cancelled();
        let watch_failed = watched.as_deref().filter(|w| !w.is_empty());
        if cancelled || crash_looping || watch_failed.is_some() || tokio::time::Instant::now() >= deadline {
            let report = not_ready_report(target, key, &status, revision).await;
            let retired = match fallback {
                Some(prev) => match target.apply(key, prev).await {
                    Ok(_) => match target.prune(key, Some(prev.revision)).await {
                        Ok(()) => format!(
                            "revision {revision} was retired; revision {} is still current and serving",
                            prev.revision
                        ),
                        Err(e) => format!("retiring revision {revision} failed: {e}"),
                    },
                    Err(e) => format!("restoring revision {} failed: {e}", prev.revision),
                },
                None => match target.prune(key, None).await {
                    Ok(()) => {
                        format!("revision {revision} was removed; the workload has no revision serving")
                    }
                    Err(e) => format!("removing revision {revision} failed: {e}"),
                },
            };
            if cancelled {
                return Outcome::Cancelled {
                    output: json!({ "message": format!("{report}; {retired}") }),
                };
            }
            let why = if crash_looping {
                format!(
                    "revision {revision} is crash-looping (every replica exited {CRASH_LOOP_RESTARTS}+ times without becoming ready)"
                )
            } else if let Some(w) = watch_failed {
                w.to_string()
            } else {
                format!("revision {revision} not ready after {}s", timeout_ms / 1000)
            };
            return Outcome::Failed {
                code: "not_ready".into(),
                message: format!("{why}: {report}; {retired}"),
                output: Value::Null,
            };
        }
        // Most services are ready within milliseconds: look again soon, then
        // back off to the steady interval.
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = token.cancelled() => {}
        }
        pause = (pause * 3 / 2).min(POLL);
    }
}
