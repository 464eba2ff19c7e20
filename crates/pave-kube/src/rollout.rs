//! Waiting for a rollout, by a watch on the Deployment (no polling).

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use pave_targets::{WorkloadKey, WorkloadStatus};

use crate::error::{self, KubeError, Result};
use crate::status::{deployment_revision, progress, rollout_complete, stalled};
use crate::KubeTarget;

/// The longest single watch request (the API server's own default cap is 30 min;
/// kube-rs uses 290 s to stay under common proxy idle timeouts).
const MAX_WATCH_SECS: u64 = 290;

enum Verdict {
    Done,
    Wait,
    Fail(KubeError),
}

fn judge(d: &Deployment, object: &str, revision: i64) -> Verdict {
    match deployment_revision(d) {
        Some(current) if current > revision => {
            return Verdict::Fail(KubeError::Superseded {
                object: object.to_string(),
                revision,
                current,
            })
        }
        // Not there yet: for a Deployment pave did not make, the controller's
        // revision annotation follows the template a moment later.
        Some(current) if current < revision => return Verdict::Wait,
        None => return Verdict::Wait,
        Some(_) => {}
    }
    if rollout_complete(d) {
        return Verdict::Done;
    }
    match stalled(d) {
        Some((reason, message)) => Verdict::Fail(KubeError::RolloutStalled {
            object: object.to_string(),
            revision,
            reason,
            message,
        }),
        None => Verdict::Wait,
    }
}

impl KubeTarget {
    /// Waits until the Deployment of `key` has rolled out `revision` completely:
    /// `observedGeneration ≥ generation`; `updatedReplicas`, `readyReplicas`,
    /// `availableReplicas` and `replicas` all equal to `spec.replicas`; and
    /// `Available=True`. Fails when the controller reports `Progressing=False`
    /// (`ProgressDeadlineExceeded`), when a newer revision replaced the template,
    /// when the Deployment goes away, or after `timeout`. Returns the status.
    ///
    /// Lists the Deployment once (for its state and a resourceVersion), then
    /// watches it from there; a watch the server ends is resumed from the last
    /// resourceVersion seen, a `410 Gone` lists again.
    pub async fn watch_ready(
        &self,
        key: &WorkloadKey,
        revision: i64,
        timeout: Duration,
    ) -> Result<WorkloadStatus> {
        let ns = self.namespace_of_key(key)?;
        let object = format!("Deployment {ns}/{}", key.name);
        let api: Api<Deployment> = self.api(&ns);
        let field = format!("metadata.name={}", key.name);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last: Option<Deployment> = None;

        let wait = async {
            let mut version = list_one(&api, &field, &object, &mut last).await?;
            loop {
                match &last {
                    None => return Err(KubeError::NotFound(object.clone())),
                    Some(d) => match judge(d, &object, revision) {
                        Verdict::Done => return Ok(()),
                        Verdict::Fail(e) => return Err(e),
                        Verdict::Wait => {}
                    },
                }
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let secs = (left.as_secs() + 1).min(MAX_WATCH_SECS) as u32;
                let wp = WatchParams::default().fields(&field).timeout(secs);
                let mut events = api
                    .watch(&wp, &version)
                    .await
                    .map_err(|e| error::api("watch", &object, e))?
                    .boxed();
                loop {
                    let event = match events.try_next().await {
                        Ok(Some(event)) => event,
                        // The server closed the watch (its timeout): resume.
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(deployment = %object, error = %e, "watch stream broke: resuming");
                            break;
                        }
                    };
                    match event {
                        WatchEvent::Added(d) | WatchEvent::Modified(d) => {
                            if let Some(rv) = d.metadata.resource_version.clone() {
                                version = rv;
                            }
                            let verdict = judge(&d, &object, revision);
                            last = Some(d);
                            match verdict {
                                Verdict::Done => return Ok(()),
                                Verdict::Fail(e) => return Err(e),
                                Verdict::Wait => {}
                            }
                        }
                        WatchEvent::Deleted(_) => {
                            return Err(KubeError::NotFound(format!(
                                "{object} was deleted during its rollout"
                            )))
                        }
                        WatchEvent::Bookmark(b) => version = b.metadata.resource_version,
                        WatchEvent::Error(status) if status.code == 410 => {
                            version = list_one(&api, &field, &object, &mut last).await?;
                            break;
                        }
                        WatchEvent::Error(status) => {
                            return Err(KubeError::Api {
                                action: "watch",
                                object: object.clone(),
                                status,
                            })
                        }
                    }
                }
            }
        };
        let outcome = tokio::time::timeout_at(deadline, wait).await;
        match outcome {
            Ok(Ok(())) => self.workload_status(key).await,
            Ok(Err(e)) => Err(e),
            Err(_) => Err(KubeError::RolloutTimeout {
                object: object.clone(),
                revision,
                secs: timeout.as_secs(),
                progress: last
                    .as_ref()
                    .map_or_else(|| "nothing seen yet".to_string(), progress),
            }),
        }
    }
}

/// Lists the one Deployment (into `last`); returns the list's resourceVersion.
async fn list_one(
    api: &Api<Deployment>,
    field: &str,
    object: &str,
    last: &mut Option<Deployment>,
) -> Result<String> {
    let list = api
        .list(&ListParams::default().fields(field))
        .await
        .map_err(|e| error::api("list", object, e))?;
    *last = list.items.into_iter().next();
    Ok(list.metadata.resource_version.unwrap_or_else(|| "0".into()))
}
