//! Logs and exec through the pods' `log` and `exec` subresources. Both go from
//! the API server to the kubelet of the pod's node; a node that does not answer
//! gives [`KubeError::NodeUnreachable`] after the target's node timeout instead
//! of a hang.

use std::future::Future;

use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status as ExecStatus;
use kube::api::{Api, AttachParams, LogParams};
use pave_targets::WorkloadKey;
use tokio::sync::mpsc;

use crate::error::{self, KubeError, Result};
use crate::status::PodRef;
use crate::KubeTarget;

/// The longest line of an exec's output sent as one (a longer one comes in pieces).
const LINE_MAX: u64 = 64 * 1024;

impl KubeTarget {
    /// The pods `logs` reads: replica `replica` (or all) of the current revision
    /// (the desired one, else the newest that has pods), as the local target picks.
    async fn log_pods(&self, key: &WorkloadKey, replica: Option<u32>) -> Result<(String, Vec<PodRef>)> {
        let ns = self.namespace_of_key(key)?;
        let observed = self.observe(key).await?;
        let Some(observed) = observed.filter(|o| !o.pods.is_empty()) else {
            return Err(KubeError::NotFound(format!("workload {key} has no replicas")));
        };
        let current = observed
            .status
            .revision
            .filter(|rev| observed.pods.iter().any(|p| p.revision == *rev))
            .or_else(|| observed.pods.iter().map(|p| p.revision).max())
            .unwrap_or(0);
        let chosen: Vec<PodRef> = observed
            .pods
            .into_iter()
            .filter(|p| p.revision == current && replica.is_none_or(|i| p.index == i))
            .collect();
        if chosen.is_empty() {
            return Err(KubeError::NotFound(format!(
                "workload {key} has no replica {} in revision {current}",
                replica.unwrap_or(0)
            )));
        }
        Ok((ns, chosen))
    }

    /// Runs a request to a pod's kubelet with the node timeout.
    async fn to_node<T>(
        &self,
        ns: &str,
        pod: &str,
        action: &'static str,
        request: impl Future<Output = std::result::Result<T, kube::Error>>,
    ) -> Result<T> {
        let pod_id = format!("{ns}/{pod}");
        match tokio::time::timeout(self.node_timeout, request).await {
            Err(_) => Err(KubeError::NodeUnreachable {
                pod: pod_id,
                detail: format!("no answer within {} s", self.node_timeout.as_secs()),
            }),
            // The API server could not reach the kubelet ("error dialing backend",
            // "dial tcp …: connection refused", a proxy timeout).
            Ok(Err(kube::Error::Api(s))) if s.code >= 500 => Err(KubeError::NodeUnreachable {
                pod: pod_id,
                detail: s.message.clone(),
            }),
            Ok(Err(e)) => Err(error::api(action, format!("pod {pod_id}"), e)),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// The last `tail` lines of one pod's container (of its previous run when
    /// the current one has not started: a crash-looping container's output).
    async fn one_pod_log(&self, api: &Api<Pod>, ns: &str, pod: &PodRef, tail: usize) -> Result<Vec<String>> {
        let lp = LogParams {
            container: Some(pod.container.clone()),
            tail_lines: Some(i64::try_from(tail).unwrap_or(i64::MAX)),
            ..LogParams::default()
        };
        let text = match self
            .to_node(ns, &pod.name, "logs of", api.logs(&pod.name, &lp))
            .await
        {
            Err(KubeError::Api { status, .. }) if status.code == 400 && pod.restart_count > 0 => {
                let previous = LogParams { previous: true, ..lp };
                self.to_node(ns, &pod.name, "logs of", api.logs(&pod.name, &previous))
                    .await?
            }
            other => other?,
        };
        Ok(text.lines().map(str::to_string).collect())
    }

    /// The last `tail` lines of replica `replica` (or of every replica of the
    /// current revision, `tail` in all).
    pub async fn pod_logs(
        &self,
        key: &WorkloadKey,
        replica: Option<u32>,
        tail: usize,
    ) -> Result<Vec<String>> {
        let (ns, pods) = self.log_pods(key, replica).await?;
        let api: Api<Pod> = self.api(&ns);
        let mut lines = Vec::new();
        for pod in &pods {
            lines.extend(self.one_pod_log(&api, &ns, pod, tail).await?);
        }
        let skip = lines.len().saturating_sub(tail);
        Ok(lines.into_iter().skip(skip).collect())
    }

    /// The last `tail` lines, then every new line as written (`follow=true`),
    /// until the followed pods' logs end or `out` is closed.
    pub async fn follow_pod_logs(
        &self,
        key: &WorkloadKey,
        replica: Option<u32>,
        tail: usize,
        out: mpsc::Sender<String>,
    ) -> Result<()> {
        let (ns, pods) = self.log_pods(key, replica).await?;
        let api: Api<Pod> = self.api(&ns);
        // Open every stream first, so a node that does not answer fails the call.
        let mut streams = Vec::new();
        for pod in &pods {
            let lp = LogParams {
                container: Some(pod.container.clone()),
                tail_lines: Some(i64::try_from(tail).unwrap_or(i64::MAX)),
                follow: true,
                ..LogParams::default()
            };
            let stream = self
                .to_node(&ns, &pod.name, "logs of", api.log_stream(&pod.name, &lp))
                .await?;
            streams.push((pod.name.clone(), stream));
        }
        let forwards = streams.into_iter().map(|(name, stream)| {
            let out = out.clone();
            async move {
                let mut lines = stream.lines();
                loop {
                    tokio::select! {
                        line = lines.try_next() => match line {
                            Ok(Some(line)) => {
                                if out.send(line).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => return,
                            Err(e) => {
                                tracing::debug!(pod = %name, error = %e, "log stream ended");
                                return;
                            }
                        },
                        () = out.closed() => return,
                    }
                }
            }
        });
        futures::future::join_all(forwards).await;
        Ok(())
    }

    /// Runs `command` in container `app` of a pod of the current revision
    /// (running and ready ones first), streaming its output; returns its exit code.
    pub async fn exec_in_pod(
        &self,
        key: &WorkloadKey,
        command: &[String],
        out: mpsc::Sender<(String, String)>,
    ) -> Result<i32> {
        if command.first().is_none_or(|c| c.is_empty()) {
            return Err(KubeError::Invalid("the command is empty".into()));
        }
        let (ns, mut pods) = self.log_pods(key, None).await?;
        pods.sort_by_key(|p| (!p.running, !p.ready, p.index));
        let Some(pod) = pods.first() else {
            return Err(KubeError::NotFound(format!("workload {key} has no replicas")));
        };
        let pod_id = format!("{ns}/{}", pod.name);
        let api: Api<Pod> = self.api(&ns);
        let ap = AttachParams::default()
            .container(pod.container.as_str())
            .stdin(false)
            .stdout(true)
            .stderr(true);
        let mut attached = self
            .to_node(
                &ns,
                &pod.name,
                "exec in",
                api.exec(&pod.name, command.to_vec(), &ap),
            )
            .await?;
        let status = attached.take_status();
        let stdout = attached
            .stdout()
            .map(|s| tokio::spawn(pave_targets::forward_lines(s, "stdout", LINE_MAX, out.clone())));
        let stderr = attached
            .stderr()
            .map(|s| tokio::spawn(pave_targets::forward_lines(s, "stderr", LINE_MAX, out.clone())));
        let status = match status {
            Some(s) => s.await,
            None => None,
        };
        for h in [stdout, stderr].into_iter().flatten() {
            let _ = h.await;
        }
        if let Err(e) = attached.join().await {
            tracing::debug!(pod = %pod_id, error = %e, "exec connection ended with an error");
        }
        exit_code(&pod_id, status)
    }
}

/// The exit code in the `Status` the exec subresource sends last.
fn exit_code(pod: &str, status: Option<ExecStatus>) -> Result<i32> {
    let Some(status) = status else {
        return Err(KubeError::Exec {
            pod: pod.to_string(),
            message: "the connection closed without an exit status".into(),
        });
    };
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    let reason = status.reason.unwrap_or_default();
    let code = status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
        .and_then(|c| c.message.as_deref())
        .and_then(|m| m.trim().parse::<i32>().ok());
    match (reason.as_str(), code) {
        ("NonZeroExitCode", Some(code)) => Ok(code),
        _ => Err(KubeError::Exec {
            pod: pod.to_string(),
            message: match status.message.filter(|m| !m.is_empty()) {
                Some(m) => m,
                None => format!("failed ({reason})"),
            },
        }),
    }
}
