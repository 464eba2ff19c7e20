//! Resume after a crash, with the real store and agent: the store is left
//! exactly as a control plane killed mid-step leaves it, then a new engine
//! with the same node id starts.

use std::collections::HashMap;
use std::time::Duration;

use pave_agent::embedded::AgentDirs;
use pave_core::action::{ActionState, StepState};
use pave_core::{ids, plan, Action};
use pave_engine::{AgentHub, AllowAll, Engine, EngineConfig, Submission};
use pave_store::{DynStore, StepUpdate, WriteOp};
use serde_json::json;

async fn engine(dir: &std::path::Path, store: DynStore, node: &str) -> Engine {
    let link = pave_agent::spawn_embedded(AgentDirs {
        work_dir: dir.join("work"),
        state_dir: dir.join("agent"),
        resources_dir: dir.join("resources"),
        workloads_dir: dir.join("workloads"),
        shim_command: vec!["pave-shim".into()],
    })
    .unwrap();
    let mut agents = HashMap::new();
    agents.insert("local".to_string(), AgentHub::start(link).await);
    Engine::new(
        store,
        agents,
        Box::new(AllowAll),
        EngineConfig {
            node_id: node.into(),
            ..Default::default()
        },
    )
}

/// An action claimed by `node` whose only step was running when the node died.
async fn crashed_mid_step(store: &DynStore, kind: &str, input: serde_json::Value, node: &str) -> String {
    let id = ids::new_id();
    let p = plan::plan(kind, &id, "local", input).unwrap();
    let a = Action {
        id: id.clone(),
        kind: kind.into(),
        env: "local".into(),
        object: p.object,
        actor: "t".into(),
        input: p.input,
        state: ActionState::Queued,
        attempt: 1,
        error: None,
        result: serde_json::Value::Null,
        idempotency_key: None,
        cancel_requested: false,
        created_at: 1,
        updated_at: 1,
        steps: p.steps,
    };
    store
        .write(vec![vec![WriteOp::InsertAction(Box::new(a))]])
        .await
        .unwrap();
    assert_eq!(store.claim(node, 1, 60_000, false).await.unwrap().len(), 1);
    store
        .write(vec![vec![WriteOp::UpdateStep {
            action_id: id.clone(),
            idx: 0,
            set: StepUpdate {
                state: Some(StepState::Running),
                attempt: Some(1),
                ..Default::default()
            },
        }]])
        .await
        .unwrap();
    id
}

async fn wait_settled(store: &DynStore, id: &str) -> Action {
    for _ in 0..200 {
        let a = store.get_action(id).await.unwrap().unwrap();
        if a.state.is_terminal() {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("action {id} did not settle");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_crash_an_idempotent_step_runs_again_and_a_non_idempotent_one_is_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let store = pave_store::open(&format!("sqlite://{}", dir.path().join("p.db").display()))
        .await
        .unwrap();
    let marker = dir.path().join("ran");
    let job = crashed_mid_step(
        &store,
        "job",
        json!({"command": ["touch", marker.display().to_string()]}),
        "n1",
    )
    .await;
    let noop = crashed_mid_step(&store, "noop", json!({}), "n1").await;

    let e = engine(dir.path(), store.clone(), "n1").await;
    let runner = e.clone();
    let handle = tokio::spawn(async move { runner.run(Duration::from_secs(5)).await });

    let j = wait_settled(&store, &job).await;
    assert_eq!(j.state, ActionState::Failed);
    assert_eq!(j.steps[0].state, StepState::Interrupted);
    assert_eq!(j.error.as_ref().unwrap().code, "interrupted");
    assert!(
        !marker.exists(),
        "a non-idempotent step was run again without asking"
    );

    let n = wait_settled(&store, &noop).await;
    assert_eq!(n.state, ActionState::Succeeded);
    assert_eq!(n.steps[0].attempt, 2);

    // Retrying the interrupted job runs it, once.
    e.retry(&job, &pave_core::rbac::Principal::builtin_admin())
        .await
        .unwrap();
    let j = wait_settled(&store, &job).await;
    assert_eq!(j.state, ActionState::Succeeded);
    assert!(marker.exists());

    e.shutdown();
    handle.await.unwrap();
    assert!(matches!(
        e.submit(Submission {
            kind: "noop".into(),
            env: "local".into(),
            input: json!({}),
            principal: pave_core::rbac::Principal::builtin_admin(),
            idempotency_key: None
        })
        .await,
        Err(pave_engine::EngineError::ShuttingDown)
    ));
}
