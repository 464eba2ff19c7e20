//! Runs a `job` command to completion, streaming its output line by line.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use pave_core::JobSpec;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::process;
use crate::protocol::{FromAgent, LogStream, Outcome};

/// Longest line kept in the log; longer lines are cut, so that one runaway
/// line cannot exhaust memory.
const MAX_LINE: usize = 16 * 1024;
/// Lines of stderr quoted in a failure's message.
const STDERR_TAIL_LINES: usize = 10;
/// Time a cancelled job gets between SIGTERM and SIGKILL.
const CANCEL_GRACE: Duration = Duration::from_secs(5);
/// Environment variables passed through from the agent; everything else is
/// withheld so that the agent's own credentials never reach a job.
const PASSTHROUGH_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER"];

/// Where the agent keeps what it needs to find its jobs after a restart.
pub struct JobContext<'a> {
    /// Default working directory.
    pub work_dir: &'a Path,
    /// Directory of `<command>.pid` files for running jobs.
    pub state_dir: &'a Path,
}

/// Runs the job; every output line and the `Started` message go to `out`.
pub async fn run(
    ctx: JobContext<'_>,
    command_id: &str,
    spec: &JobSpec,
    extra_env: &BTreeMap<String, String>,
    cancel: CancellationToken,
    out: &mpsc::Sender<FromAgent>,
) -> Outcome {
    let cwd = spec
        .cwd
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or_else(|| ctx.work_dir.to_path_buf());
    if !cwd.is_dir() {
        return failed(
            "spawn_failed",
            format!("working directory {} does not exist", cwd.display()),
        );
    }
    let mut cmd = tokio::process::Command::new(&spec.command[0]);
    cmd.args(&spec.command[1..])
        .env_clear()
        .envs(
            PASSTHROUGH_ENV
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))),
        )
        .envs(&spec.env)
        .envs(extra_env)
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    process::set_parent_death_signal(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return failed(
                "spawn_failed",
                format!("could not start `{}`: {e}", spec.command[0]),
            )
        }
    };
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    let pid_file = ctx.state_dir.join(format!("{command_id}.pid"));
    let started = process::start_time(pid).unwrap_or(0);
    if let Err(e) = std::fs::write(&pid_file, format!("{pid} {started}")) {
        tracing::warn!(error = %e, "could not record job pid; it will not be reaped after a crash");
    }
    let _ = out
        .send(FromAgent::Started {
            command_id: command_id.to_string(),
            info: json!({ "pid": pid }),
        })
        .await;

    let stdout = child
        .stdout
        .take()
        .map(|s| pump(s, LogStream::Stdout, command_id, out.clone()));
    let stderr = child
        .stderr
        .take()
        .map(|s| pump(s, LogStream::Stderr, command_id, out.clone()));
    let timeout = spec.timeout_secs.map(Duration::from_secs);

    enum End {
        Exited(std::io::Result<std::process::ExitStatus>),
        TimedOut,
        Cancelled,
    }
    let end = tokio::select! {
        status = child.wait() => End::Exited(status),
        _ = sleep_opt(timeout) => End::TimedOut,
        _ = cancel.cancelled() => End::Cancelled,
    };
    let timed_out = matches!(end, End::TimedOut);
    let status = match end {
        End::Exited(s) => s,
        End::TimedOut => {
            process::signal_group(pid, libc::SIGKILL);
            child.wait().await
        }
        End::Cancelled => {
            process::signal_group(pid, libc::SIGTERM);
            match tokio::time::timeout(CANCEL_GRACE, child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    process::signal_group(pid, libc::SIGKILL);
                    child.wait().await
                }
            }
        }
    };
    // A job leaves nothing behind: whatever it started in its group goes with it,
    // which also closes the pipes the readers wait on.
    process::signal_group(pid, libc::SIGKILL);
    let _ = std::fs::remove_file(&pid_file);
    if let Some(h) = stdout {
        let _ = h.await;
    }
    let tail = match stderr {
        Some(h) => h.await.unwrap_or_default(),
        None => VecDeque::new(),
    };

    let status = match status {
        Ok(s) => s,
        Err(e) => return failed("command_failed", format!("could not wait for the command: {e}")),
    };
    use std::os::unix::process::ExitStatusExt;
    let output = json!({ "exit_code": status.code(), "signal": status.signal() });
    if cancel.is_cancelled() {
        return Outcome::Cancelled { output };
    }
    if status.success() {
        return Outcome::Succeeded { output };
    }
    let (code, mut message) = if timed_out {
        (
            "timeout",
            format!(
                "command timed out after {}s and was killed",
                spec.timeout_secs.unwrap_or_default()
            ),
        )
    } else {
        let how = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(sig)) => format!("was killed by signal {sig}"),
            _ => "ended abnormally".to_string(),
        };
        ("command_failed", format!("command {how}"))
    };
    if !tail.is_empty() {
        message.push_str("; stderr: ");
        message.push_str(&Vec::from(tail).join("\n"));
    }
    Outcome::Failed {
        code: code.to_string(),
        message,
        output,
    }
}

fn failed(code: &str, message: String) -> Outcome {
    Outcome::Failed {
        code: code.to_string(),
        message,
        output: serde_json::Value::Null,
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Forwards lines of one stream; returns the last lines (the stderr tail).
fn pump(
    stream: impl AsyncRead + Unpin + Send + 'static,
    which: LogStream,
    command_id: &str,
    out: mpsc::Sender<FromAgent>,
) -> tokio::task::JoinHandle<VecDeque<String>> {
    let command_id = command_id.to_string();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut tail = VecDeque::new();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            buf.truncate(MAX_LINE);
            let line = String::from_utf8_lossy(&buf).into_owned();
            if which == LogStream::Stderr {
                if tail.len() == STDERR_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line.clone());
            }
            let msg = FromAgent::Log {
                command_id: command_id.clone(),
                stream: which,
                line,
            };
            if out.send(msg).await.is_err() {
                // Nobody listens any more; keep draining so the child is not blocked.
                continue;
            }
        }
        tail
    })
}

/// Kills the process groups of jobs that a previous run of this agent left
/// behind (the agent died while they ran, so nobody will collect their result).
pub fn reap_orphans(state_dir: &Path) -> Vec<String> {
    let mut reaped = Vec::new();
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return reaped;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("pid") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut parts = text.split_whitespace();
        let pid: i32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        let started: u64 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        // The group leader is ours if its start time matches; if it is gone, what
        // is left in its group is ours too (a new process reusing the pid would
        // not lead a group of that id).
        let leader = process::start_time(pid);
        if leader == Some(started) || (leader.is_none() && process::group_alive(pid)) {
            process::signal_group(pid, libc::SIGKILL);
            reaped.push(
                path.file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("")
                    .to_string(),
            );
        }
        let _ = std::fs::remove_file(&path);
    }
    reaped
}
