//! Following an action live: its log lines as they come, a progress line with
//! the current step and elapsed time, and the final state.

use std::io::Write;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pave_core::{Action, ActionState, StepState};

use crate::client::Client;
use crate::output;

/// How the live display prints.
#[derive(Clone, Copy)]
pub struct WatchOpts {
    /// Print log lines (stdout lines to stdout, stderr lines to stderr).
    pub logs: bool,
    /// Show the progress line on a terminal.
    pub progress: bool,
    /// Log lines up to this sequence number were seen already (a retry follows
    /// its new attempt only).
    pub after: i64,
}

fn progress_bar(enabled: bool) -> ProgressBar {
    let target = if enabled {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let pb = ProgressBar::with_draw_target(None, target);
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

fn progress_message(a: &Action, started: Instant) -> String {
    let step = a
        .steps
        .iter()
        .find(|s| matches!(s.state, StepState::Running | StepState::Compensating))
        .or_else(|| a.current_step());
    let done = a
        .steps
        .iter()
        .filter(|s| {
            matches!(
                s.state,
                StepState::Succeeded | StepState::Compensated | StepState::Skipped
            )
        })
        .count();
    format!(
        "{} {} · step {}/{} {} · {}",
        a.kind,
        a.state,
        (done + 1).min(a.steps.len()),
        a.steps.len(),
        step.map(|s| format!("`{}` {}", s.name, s.state))
            .unwrap_or_default(),
        output::duration(started.elapsed().as_millis() as i64)
    )
}

/// Follows `id` until it settles; returns the final action.
pub async fn follow(client: &Client, id: &str, opts: WatchOpts) -> anyhow::Result<Action> {
    let started = Instant::now();
    let pb = progress_bar(opts.progress);
    let mut last_seq = opts.after;
    let mut last: Option<Action> = None;
    let mut failures = 0;
    loop {
        let resp = match client
            .stream(&format!("/api/v1/actions/{id}/events?after={last_seq}"))
            .await
        {
            Ok(r) => r,
            Err(e) if failures < 5 && crate::client::exit_code_of(&e) == crate::exit::UNREACHABLE => {
                failures += 1;
                pb.set_message(format!("server unreachable, retrying ({failures}/5)…"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => {
                pb.finish_and_clear();
                return Err(e);
            }
        };
        let mut body = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(chunk) = body.next().await {
            let Ok(chunk) = chunk else { break };
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                let (mut event, mut data) = ("message".to_string(), String::new());
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                match event.as_str() {
                    "log" => {
                        let Ok(l) = serde_json::from_str::<crate::cli::LogLineView>(&data) else {
                            continue;
                        };
                        // A reconnect replays the log from the start; skip what was printed.
                        if l.seq <= last_seq {
                            continue;
                        }
                        last_seq = l.seq;
                        if opts.logs {
                            pb.suspend(|| print_log_line(&l.stream, &l.line));
                        }
                    }
                    "action" => {
                        if let Ok(a) = serde_json::from_str::<Action>(&data) {
                            if opts.logs && a.steps.len() > 1 {
                                pb.suspend(|| print_finished_steps(last.as_ref(), &a));
                            }
                            pb.set_message(progress_message(&a, started));
                            last = Some(a);
                        }
                    }
                    "end" => {
                        pb.finish_and_clear();
                        // The final record, fetched whole (the stream may have coalesced updates).
                        return client.get(&format!("/api/v1/actions/{id}")).await;
                    }
                    _ => {}
                }
            }
        }
        // The stream broke before the end (server restart, network): reconnect.
        failures += 1;
        if failures > 30 {
            pb.finish_and_clear();
            anyhow::bail!(
                "lost the event stream of action {id} too often; `pave actions watch {id}` picks it up again"
            );
        }
        if let Some(a) = &last {
            pb.set_message(format!("{} · reconnecting…", progress_message(a, started)));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One line per step that ended since `before`, so that an action of several
/// steps reads as it goes, on a terminal or not.
fn print_finished_steps(before: Option<&Action>, now: &Action) {
    for st in &now.steps {
        let was = before
            .and_then(|b| b.steps.iter().find(|x| x.idx == st.idx))
            .map(|x| x.state);
        let ended = !matches!(
            st.state,
            StepState::Pending | StepState::Running | StepState::Compensating
        );
        if !ended || was == Some(st.state) {
            continue;
        }
        let mark = match st.state {
            StepState::Succeeded | StepState::Compensated => "✓",
            StepState::Skipped => "-",
            _ => "✗",
        };
        let took = match (st.started_at, st.finished_at) {
            (Some(a), Some(b)) => format!(" ({})", output::duration(b - a)),
            _ => String::new(),
        };
        let _ = writeln!(std::io::stderr(), "  {mark} {} {}{took}", st.name, st.state);
    }
}

fn print_log_line(stream: &str, line: &str) {
    match stream {
        "stderr" => {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
        "system" => {}
        _ => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

/// The closing summary of a followed action, on stderr so stdout stays the command's.
pub fn summary(a: &Action) {
    let took = a.updated_at - a.created_at;
    match a.state {
        ActionState::Succeeded => eprintln!("✓ action {} succeeded in {}", a.id, output::duration(took)),
        ActionState::RolledBack => eprintln!("✓ action {} rolled back", a.id),
        ActionState::AwaitingApproval => eprintln!(
            "⏸ action {} awaits approval by someone other than {} (pave approvals list; \
             pave approvals approve {})",
            a.id, a.actor, a.id
        ),
        state => {
            eprintln!("✗ action {} {state}", a.id);
            if let Some(e) = &a.error {
                if let Some(step) = &e.step {
                    eprintln!("  step:  {step}");
                }
                eprintln!("  error: {} ({})", e.message, e.code);
                for n in &e.next {
                    eprintln!("  next:  {n}");
                }
            }
        }
    }
}
