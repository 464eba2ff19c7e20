//! Live progress of one action over Server-Sent Events: `action` events carry
//! the whole action whenever it changes, `log` events each new log line, and a
//! final `end` event once the action can no longer change by itself.
//!
//! The stream reads the store, so it follows actions run by any control plane
//! sharing it; local changes wake it at once, others within a poll interval.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use pave_core::ActionState;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::dto::LogLineDto;
use crate::error::{ApiError, Path};
use crate::AppState;

const POLL: Duration = Duration::from_millis(500);

/// Streams the action's changes and log lines until it ends.
#[utoipa::path(get, path = "/api/v1/actions/{id}/events", params(("id" = String, Path), crate::dto::EventsQuery),
    responses((status = 200, description = "text/event-stream of `action`, `log` and `end` events"), (status = 401), (status = 404)),
    security(("bearer" = [])))]
pub(crate) async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    crate::error::Query(q): crate::error::Query<crate::dto::EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let mut changes = state.engine.subscribe();
    let first = crate::actions::load(&state, &id).await?;
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(256);
    tokio::spawn(async move {
        let store = state.engine.store().clone();
        let mut last_seq = q.after.unwrap_or(0);
        let mut last_seen: Option<pave_core::Action> = None;
        let mut current = Some(first);
        loop {
            // The action before its logs: the lines of a step are committed
            // before (or with) the state that ends it, so an action read as
            // ended has all of its lines readable after it.
            let action = match current.take() {
                Some(a) => a,
                None => match store.get_action(&id).await {
                    Ok(Some(a)) => a,
                    _ => return,
                },
            };
            loop {
                let lines = match store.logs(&id, last_seq, 1000).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "event stream could not read logs");
                        return;
                    }
                };
                let n = lines.len();
                for l in lines {
                    last_seq = l.seq;
                    let ev = Event::default().event("log").json_data(LogLineDto::from(l));
                    if let Ok(ev) = ev {
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                }
                if n < 1000 {
                    break;
                }
            }
            if last_seen.as_ref() != Some(&action) {
                if let Ok(ev) = Event::default().event("action").json_data(&action) {
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                last_seen = Some(action.clone());
            }
            if settled(action.state) {
                let _ = tx
                    .send(Ok(Event::default().event("end").data(action.state.as_str())))
                    .await;
                return;
            }
            let deadline = tokio::time::sleep(POLL);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    changed = changes.recv() => match changed {
                        Ok(changed) if changed == id => break,
                        Ok(_) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                        Err(_) => break,
                    },
                    _ = tx.closed() => return,
                }
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()))
}

/// The action will not change without a new request.
fn settled(state: ActionState) -> bool {
    state.is_terminal() || state == ActionState::AwaitingApproval
}
