//! What an agent is, whatever carries its messages: it executes each command
//! id at most once and keeps each result until the control plane
//! acknowledges it. The embedded agent feeds it through channels; `pave
//! agent` through a WebSocket that may drop and come back, which is why the
//! results and the ids seen outlive a connection (and, with a journal, a
//! restart of the agent itself).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use pave_targets::local::LocalTarget;
use pave_targets::Target;

use crate::local::job::{self, JobContext};
use crate::local::workload;
use crate::protocol::{
    Command, CommandPayload, FromAgent, Outcome, ToAgent, CAPABILITIES, CLUSTER_CAPABILITIES,
    PROTOCOL_VERSION,
};

/// Directories the agent works in.
#[derive(Debug, Clone)]
pub struct AgentDirs {
    /// Default working directory of jobs.
    pub work_dir: PathBuf,
    /// Where the agent records running commands, to clean up after a crash.
    pub state_dir: PathBuf,
    /// Where resources (databases, caches) keep their files.
    pub resources_dir: PathBuf,
    /// Where workloads (supervised replicas) keep their files.
    pub workloads_dir: PathBuf,
    /// The program (and leading arguments) that supervises one replica, e.g.
    /// `[current_exe, "shim"]`.
    pub shim_command: Vec<String>,
}

/// Messages waiting to reach the control plane (a cut connection holds
/// them; a full queue slows the commands that produce them).
const UPLINK_QUEUE: usize = 4096;

#[derive(Default)]
struct State {
    /// Every command id received, so a redelivered command is not run twice.
    seen: HashSet<String>,
    running: HashMap<String, CancellationToken>,
    /// Results not yet acknowledged; re-sent when the peer says hello again.
    unacked: HashMap<String, Outcome>,
}

/// One command's record in the journal.
#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Entry {
    Running,
    Done { outcome: Outcome },
}

/// Files under `dir`, one per command not yet acknowledged, written before
/// the command runs: an agent killed mid-command knows, once restarted,
/// which commands it must not run again and reports them as cut short.
struct Journal {
    dir: PathBuf,
}

impl Journal {
    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn write(&self, id: &str, entry: &Entry) {
        let path = self.path(id);
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_vec(entry).unwrap_or_default();
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path)) {
            tracing::error!(command = %id, error = %e, "could not write the command journal");
        }
    }

    fn remove(&self, id: &str) {
        let _ = std::fs::remove_file(self.path(id));
    }

    /// Loads the journal; commands that were running end as cut short.
    fn load(&self, state: &mut State) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let path = entry.path();
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            let id = id.to_string();
            let outcome = match std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Entry>(&b).ok())
            {
                Some(Entry::Done { outcome }) => outcome,
                _ => {
                    let outcome = Outcome::Failed {
                        code: "agent_restarted".into(),
                        message: "the agent stopped (killed or restarted) while this command ran; \
                                  it was not run again"
                            .into(),
                        output: serde_json::Value::Null,
                    };
                    self.write(
                        &id,
                        &Entry::Done {
                            outcome: outcome.clone(),
                        },
                    );
                    outcome
                }
            };
            state.seen.insert(id.clone());
            state.unacked.insert(id, outcome);
        }
        Ok(())
    }
}

/// A command id names a journal file: only a plain word is accepted.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The agent's state and the means to execute commands. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    dirs: Arc<AgentDirs>,
    providers: Arc<dyn pave_providers::Provider>,
    target: Arc<dyn Target>,
    state: Arc<Mutex<State>>,
    journal: Option<Arc<Journal>>,
    out: mpsc::Sender<FromAgent>,
    /// The cluster's own commands, when the drivers are a cluster's.
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // A panic while holding this lock cannot leave it half-updated in a way that
    // matters more than stopping the agent would, so recover the guard.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Runtime {
    /// Prepares the directories, kills jobs a previous run left behind, and
    /// (with `journal`) loads the commands a previous run did not finish
    /// reporting. Returns the runtime and its outgoing messages.
    pub fn new(
        dirs: AgentDirs,
        journal: Option<&Path>,
    ) -> std::io::Result<(Runtime, mpsc::Receiver<FromAgent>)> {
        let providers = Arc::new(pave_providers::LocalProviders::new(&dirs.resources_dir)?);
        let target = Arc::new(LocalTarget::new(&dirs.workloads_dir, dirs.shim_command.clone()));
        Self::with_drivers(dirs, journal, target, providers)
    }

    /// A runtime over other drivers (a cluster's workloads and resources).
    pub fn with_drivers(
        dirs: AgentDirs,
        journal: Option<&Path>,
        target: Arc<dyn Target>,
        providers: Arc<dyn pave_providers::Provider>,
    ) -> std::io::Result<(Runtime, mpsc::Receiver<FromAgent>)> {
        std::fs::create_dir_all(&dirs.work_dir)?;
        std::fs::create_dir_all(&dirs.state_dir)?;
        let reaped = job::reap_orphans(&dirs.state_dir);
        if !reaped.is_empty() {
            tracing::warn!(commands = ?reaped, "killed jobs left running by a previous run");
        }
        let mut state = State::default();
        let journal = match journal {
            Some(dir) => {
                let j = Journal {
                    dir: dir.to_path_buf(),
                };
                j.load(&mut state)?;
                Some(Arc::new(j))
            }
            None => None,
        };
        let (out, rx) = mpsc::channel(UPLINK_QUEUE);
        Ok((
            Runtime {
                dirs: Arc::new(dirs),
                providers,
                target,
                state: Arc::new(Mutex::new(state)),
                journal,
                out,
                cluster: None,
            },
            rx,
        ))
    }

    /// This runtime serving a cluster: it executes the cluster's own commands
    /// too (and no jobs on its host).
    pub fn with_cluster(mut self, cluster: Arc<crate::cluster::Cluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// This agent's `hello`.
    pub fn hello(&self) -> FromAgent {
        let mut capabilities: Vec<String> = CAPABILITIES
            .iter()
            .filter(|c| self.cluster.is_none() || **c != "run_job")
            .map(|c| c.to_string())
            .collect();
        if self.cluster.is_some() {
            capabilities.extend(CLUSTER_CAPABILITIES.iter().map(|c| c.to_string()));
        }
        FromAgent::Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            capabilities,
            hostname: hostname(),
        }
    }

    /// Commands running now.
    pub fn in_flight(&self) -> usize {
        lock(&self.state).running.len()
    }

    /// Handles one message of the control plane.
    pub async fn handle(&self, msg: ToAgent) {
        match msg {
            ToAgent::Hello { protocol_version, .. } => {
                if protocol_version != PROTOCOL_VERSION {
                    tracing::error!(protocol_version, "control plane speaks another protocol version");
                    return;
                }
                let _ = self.out.send(self.hello()).await;
                self.resend_results().await;
            }
            ToAgent::Command(cmd) => self.start(cmd).await,
            ToAgent::Cancel { command_id } => {
                if let Some(t) = lock(&self.state).running.get(&command_id) {
                    t.cancel();
                }
            }
            ToAgent::Ack { command_id } => {
                lock(&self.state).unacked.remove(&command_id);
                if let Some(j) = &self.journal {
                    j.remove(&command_id);
                }
            }
            ToAgent::Heartbeat { .. } => {
                let _ = self
                    .out
                    .send(FromAgent::Heartbeat {
                        time: pave_core::time::now_ms(),
                    })
                    .await;
            }
        }
    }

    /// Sends again every result not yet acknowledged (after a new hello).
    pub async fn resend_results(&self) {
        let pending: Vec<_> = lock(&self.state)
            .unacked
            .iter()
            .map(|(id, o)| (id.clone(), o.clone()))
            .collect();
        for (command_id, outcome) in pending {
            let _ = self.out.send(FromAgent::Result { command_id, outcome }).await;
        }
    }

    async fn start(&self, cmd: Command) {
        if !valid_id(&cmd.id) {
            tracing::warn!(command = %cmd.id, "command with an invalid id refused");
            return;
        }
        let token = CancellationToken::new();
        // `None`: new, run it. `Some(done)`: seen before; if done, its result
        // again (the control plane asked again because it did not get it),
        // else it is still running and its result will come.
        let seen = {
            let mut st = lock(&self.state);
            if st.seen.insert(cmd.id.clone()) {
                st.running.insert(cmd.id.clone(), token.clone());
                None
            } else {
                Some(st.unacked.get(&cmd.id).cloned())
            }
        };
        if let Some(done) = seen {
            tracing::debug!(command = %cmd.id, "command already received; not run again");
            if let Some(outcome) = done {
                let _ = self
                    .out
                    .send(FromAgent::Result {
                        command_id: cmd.id,
                        outcome,
                    })
                    .await;
            }
            return;
        }
        if let Some(j) = &self.journal {
            j.write(&cmd.id, &Entry::Running);
        }
        let rt = self.clone();
        tokio::spawn(async move {
            let cluster = match &rt.cluster {
                Some(c) => crate::cluster::execute(c, &cmd).await,
                None => None,
            };
            let outcome = match cluster {
                Some(o) => o,
                None => match workload::execute(rt.target.as_ref(), &cmd, token.clone(), &rt.out).await {
                    Some(o) => o,
                    None => execute(&rt.dirs, rt.providers.as_ref(), &cmd, token, &rt.out).await,
                },
            };
            if let Some(j) = &rt.journal {
                j.write(
                    &cmd.id,
                    &Entry::Done {
                        outcome: outcome.clone(),
                    },
                );
            }
            {
                let mut st = lock(&rt.state);
                st.running.remove(&cmd.id);
                st.unacked.insert(cmd.id.clone(), outcome.clone());
            }
            let _ = rt
                .out
                .send(FromAgent::Result {
                    command_id: cmd.id,
                    outcome,
                })
                .await;
        });
    }

    /// Stops every running command (the agent is going away).
    pub fn stop_all(&self) {
        for t in lock(&self.state).running.values() {
            t.cancel();
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

async fn execute(
    dirs: &AgentDirs,
    providers: &dyn pave_providers::Provider,
    cmd: &Command,
    token: CancellationToken,
    out: &mpsc::Sender<FromAgent>,
) -> Outcome {
    match &cmd.payload {
        CommandPayload::Noop => Outcome::Succeeded {
            output: serde_json::Value::Null,
        },
        CommandPayload::RunJob { spec, extra_env } => {
            let ctx = JobContext {
                work_dir: &dirs.work_dir,
                state_dir: &dirs.state_dir,
            };
            job::run(ctx, &cmd.id, spec, extra_env, token, out).await
        }
        CommandPayload::ProvisionResource { request } => provided(providers.create(request).await),
        CommandPayload::RepairResource { request } => provided(providers.repair(request).await),
        CommandPayload::CheckResource { request } => match providers.check(request).await {
            Ok(()) => Outcome::Succeeded {
                output: serde_json::json!({ "health": "healthy" }),
            },
            Err(e) => failed(&e),
        },
        CommandPayload::DeleteResource { request } => match providers.delete(request).await {
            Ok(()) => Outcome::Succeeded {
                output: serde_json::Value::Null,
            },
            Err(e) => failed(&e),
        },
        other => Outcome::Failed {
            code: "unsupported".into(),
            message: format!("this agent cannot execute {other:?}"),
            output: serde_json::Value::Null,
        },
    }
}

fn failed(e: &pave_providers::ProviderError) -> Outcome {
    Outcome::Failed {
        code: e.code().to_string(),
        message: e.to_string(),
        output: serde_json::Value::Null,
    }
}

fn provided(r: Result<pave_providers::Provisioned, pave_providers::ProviderError>) -> Outcome {
    match r {
        Ok(p) => Outcome::Succeeded {
            output: serde_json::to_value(p).unwrap_or_default(),
        },
        Err(e) => failed(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(root: &Path) -> AgentDirs {
        AgentDirs {
            work_dir: root.join("work"),
            state_dir: root.join("state"),
            resources_dir: root.join("resources"),
            workloads_dir: root.join("workloads"),
            shim_command: vec!["/bin/false".into()],
        }
    }

    fn job(id: &str, script: &str) -> ToAgent {
        ToAgent::Command(Command {
            id: id.into(),
            action_id: "a".into(),
            step: 0,
            payload: CommandPayload::RunJob {
                spec: serde_json::from_value(serde_json::json!({ "command": ["sh", "-c", script] }))
                    .expect("job spec"),
                extra_env: Default::default(),
            },
        })
    }

    async fn result(rx: &mut mpsc::Receiver<FromAgent>) -> (String, Outcome) {
        loop {
            match rx.recv().await {
                Some(FromAgent::Result { command_id, outcome }) => return (command_id, outcome),
                Some(_) => continue,
                None => panic!("runtime stopped"),
            }
        }
    }

    #[tokio::test]
    async fn a_command_id_runs_once_and_its_result_survives_a_restart_until_acked() {
        let root = tempfile::tempdir().unwrap();
        let counter = root.path().join("count");
        let script = format!("echo x >> {}", counter.display());
        let journal = root.path().join("journal");
        {
            let (rt, mut rx) = Runtime::new(dirs(root.path()), Some(&journal)).unwrap();
            rt.handle(job("a.0.1", &script)).await;
            let (id, outcome) = result(&mut rx).await;
            assert_eq!(id, "a.0.1");
            assert!(matches!(outcome, Outcome::Succeeded { .. }), "{outcome:?}");
            // Delivered again: not run again, the stored result comes back.
            rt.handle(job("a.0.1", &script)).await;
            assert_eq!(result(&mut rx).await.0, "a.0.1");
        }
        // A new agent process on the same journal: still not run again.
        let (rt, mut rx) = Runtime::new(dirs(root.path()), Some(&journal)).unwrap();
        rt.handle(job("a.0.1", &script)).await;
        assert!(matches!(result(&mut rx).await.1, Outcome::Succeeded { .. }));
        assert_eq!(std::fs::read_to_string(&counter).unwrap().lines().count(), 1);
        rt.handle(ToAgent::Ack {
            command_id: "a.0.1".into(),
        })
        .await;
        assert!(std::fs::read_dir(&journal).unwrap().next().is_none());
    }

    #[tokio::test]
    async fn a_command_cut_short_by_an_agent_restart_is_reported_not_rerun() {
        let root = tempfile::tempdir().unwrap();
        let journal = root.path().join("journal");
        std::fs::create_dir_all(&journal).unwrap();
        std::fs::write(journal.join("b.0.1.json"), br#"{"state":"running"}"#).unwrap();
        let (rt, mut rx) = Runtime::new(dirs(root.path()), Some(&journal)).unwrap();
        rt.handle(ToAgent::Hello {
            protocol_version: PROTOCOL_VERSION,
            server_version: "test".into(),
        })
        .await;
        let (id, outcome) = result(&mut rx).await;
        assert_eq!(id, "b.0.1");
        match outcome {
            Outcome::Failed { code, .. } => assert_eq!(code, "agent_restarted"),
            other => panic!("{other:?}"),
        }
        // Delivered again after the restart: still not run.
        rt.handle(job("b.0.1", "exit 0")).await;
        assert!(matches!(result(&mut rx).await.1, Outcome::Failed { .. }));
    }

    #[test]
    fn command_ids_that_are_not_plain_words_are_refused() {
        assert!(valid_id("0190a.3.2.undo"));
        assert!(!valid_id("../etc/passwd"));
        assert!(!valid_id(".hidden"));
        assert!(!valid_id("a/b"));
        assert!(!valid_id(""));
    }
}
