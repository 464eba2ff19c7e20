//! One suite, run against both stores: SQLite in a temp dir and a fresh
//! PostgreSQL database.

use std::sync::Arc;

use pave_core::action::{ActionState, StepState};
use pave_core::audit::{verify_chain, GENESIS_HASH};
use pave_core::{ids, plan, Action, AuditDraft};
use pave_store::*;
use serde_json::json;

fn new_action(actor: &str, key: Option<&str>, object: Option<&str>) -> Action {
    let id = ids::new_id();
    let p = plan::plan("job", &id, "local", json!({"command": ["true"]})).unwrap();
    Action {
        id,
        kind: "job".into(),
        env: "local".into(),
        object: object.map(str::to_string).unwrap_or(p.object),
        actor: actor.into(),
        input: p.input,
        state: ActionState::Queued,
        attempt: 1,
        error: None,
        result: serde_json::Value::Null,
        idempotency_key: key.map(str::to_string),
        cancel_requested: false,
        created_at: 1,
        updated_at: 1,
        steps: p.steps,
    }
}

fn audit(summary: &str) -> WriteOp {
    WriteOp::Audit(AuditDraft {
        actor: "t".into(),
        verb: "test".into(),
        object: "x".into(),
        summary: summary.into(),
        details: json!({"s": summary}),
    })
}

async fn one(store: &DynStore, ops: Vec<WriteOp>) -> Result<Vec<OpResult>> {
    // A request fails either alone (its own answer) or with its transaction.
    match store.write(vec![ops]).await {
        Ok(mut answers) => answers.pop().unwrap(),
        Err(e) => Err(e),
    }
}

async fn audit_len(store: &DynStore) -> usize {
    store.audit_page(0, 10_000).await.unwrap().len()
}

async fn actions_round_trip_with_their_steps(store: DynStore) {
    let a = new_action("alice", None, None);
    one(
        &store,
        vec![WriteOp::InsertAction(Box::new(a.clone())), audit("create")],
    )
    .await
    .unwrap();
    let got = store.get_action(&a.id).await.unwrap().unwrap();
    assert_eq!(got, a);
    assert!(store.get_action("nope").await.unwrap().is_none());
}

async fn an_idempotency_key_returns_the_first_action_and_writes_nothing(store: DynStore) {
    let a = new_action("alice", Some("k1"), None);
    one(
        &store,
        vec![WriteOp::InsertAction(Box::new(a.clone())), audit("create")],
    )
    .await
    .unwrap();
    let before = audit_len(&store).await;
    let b = new_action("alice", Some("k1"), None);
    let r = one(
        &store,
        vec![WriteOp::InsertAction(Box::new(b.clone())), audit("create again")],
    )
    .await
    .unwrap();
    assert_eq!(r, vec![OpResult::Existing(a.id.clone())]);
    assert!(store.get_action(&b.id).await.unwrap().is_none());
    assert_eq!(
        audit_len(&store).await,
        before,
        "the replay's audit event was written"
    );
    // Another actor's key is theirs.
    let c = new_action("bob", Some("k1"), None);
    assert_eq!(
        one(&store, vec![WriteOp::InsertAction(Box::new(c))])
            .await
            .unwrap(),
        vec![OpResult::Inserted]
    );
}

async fn a_failed_precondition_rolls_back_only_its_request(store: DynStore) {
    let a = new_action("alice", None, None);
    one(&store, vec![WriteOp::InsertAction(Box::new(a.clone()))])
        .await
        .unwrap();
    let before = audit_len(&store).await;
    let answers = store
        .write(vec![
            vec![
                audit("would be rolled back"),
                WriteOp::UpdateAction {
                    id: a.id.clone(),
                    expect: vec![ActionState::Failed],
                    set: ActionUpdate {
                        state: Some(ActionState::Queued),
                        ..Default::default()
                    },
                },
            ],
            vec![audit("kept")],
        ])
        .await
        .unwrap();
    assert!(
        matches!(answers[0], Err(StoreError::Precondition { .. })),
        "{:?}",
        answers[0]
    );
    assert!(answers[1].is_ok());
    let events = store.audit_page(0, 10_000).await.unwrap();
    assert_eq!(events.len(), before + 1);
    assert_eq!(events.last().unwrap().summary, "kept");
    verify_chain(GENESIS_HASH, 1, &events).unwrap();
}

async fn claims_respect_the_object_lock_and_its_release(store: DynStore) {
    let first = new_action("alice", None, Some("workload/web"));
    let second = new_action("alice", None, Some("workload/web"));
    let other = new_action("alice", None, Some("workload/db"));
    for a in [&first, &second, &other] {
        one(&store, vec![WriteOp::InsertAction(Box::new(a.clone()))])
            .await
            .unwrap();
    }
    let claimed: Vec<String> = store
        .claim("n1", 10, 60_000, false)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(claimed, vec![first.id.clone(), other.id.clone()]);
    assert!(store.claim("n1", 10, 60_000, false).await.unwrap().is_empty());
    one(
        &store,
        vec![WriteOp::UpdateAction {
            id: first.id.clone(),
            expect: vec![],
            set: ActionUpdate {
                state: Some(ActionState::Succeeded),
                release: true,
                ..Default::default()
            },
        }],
    )
    .await
    .unwrap();
    let claimed = store.claim("n1", 10, 60_000, false).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, second.id);
    assert_eq!(claimed[0].state, ActionState::Running);
    assert_eq!(claimed[0].steps.len(), 1);
}

async fn an_expired_lease_is_taken_over_and_a_live_one_is_not(store: DynStore) {
    let a = new_action("alice", None, None);
    one(&store, vec![WriteOp::InsertAction(Box::new(a.clone()))])
        .await
        .unwrap();
    assert_eq!(store.claim("n1", 10, 60_000, false).await.unwrap().len(), 1);
    assert!(
        store.claim("n2", 10, 60_000, false).await.unwrap().is_empty(),
        "a live lease was stolen"
    );
    // The same node resumes its own actions after a restart.
    assert_eq!(store.claim("n1", 10, 60_000, true).await.unwrap().len(), 1);
    // A lease of 0 ms has expired at once: another node may take it.
    let b = new_action("alice", None, None);
    one(&store, vec![WriteOp::InsertAction(Box::new(b.clone()))])
        .await
        .unwrap();
    assert_eq!(store.claim("n3", 10, -1, false).await.unwrap().len(), 1);
    let taken = store.claim("n4", 10, 60_000, false).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].id, b.id);
}

async fn concurrent_claimers_never_get_the_same_action(store: DynStore) {
    let n = 60;
    for _ in 0..n {
        one(
            &store,
            vec![WriteOp::InsertAction(Box::new(new_action("alice", None, None)))],
        )
        .await
        .unwrap();
    }
    let mut tasks = Vec::new();
    for node in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..30 {
                for a in store
                    .claim(&format!("node{node}"), 3, 60_000, false)
                    .await
                    .unwrap()
                {
                    mine.push(a.id);
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(total, all.len(), "an action was claimed twice");
    assert_eq!(total, n);
}

async fn steps_logs_and_pages(store: DynStore) {
    let a = new_action("alice", None, None);
    one(&store, vec![WriteOp::InsertAction(Box::new(a.clone()))])
        .await
        .unwrap();
    let lines: Vec<LogLine> = (1..=250)
        .map(|seq| LogLine {
            action_id: a.id.clone(),
            seq,
            step: 0,
            stream: "stdout".into(),
            time: seq,
            line: format!("line {seq} with 'quotes', back\\slash, ünïcode and a NUL\0"),
        })
        .collect();
    one(
        &store,
        vec![
            WriteOp::AppendLogs(lines),
            WriteOp::UpdateStep {
                action_id: a.id.clone(),
                idx: 0,
                set: StepUpdate {
                    state: Some(StepState::Succeeded),
                    output: Some(json!({"exit_code": 0})),
                    finished_at: Some(Some(5)),
                    ..Default::default()
                },
            },
        ],
    )
    .await
    .unwrap();
    assert_eq!(store.last_log_seq(&a.id).await.unwrap(), 250);
    let page = store.logs(&a.id, 100, 100).await.unwrap();
    assert_eq!(page.first().unwrap().seq, 101);
    assert_eq!(
        page.last().unwrap().line,
        "line 200 with 'quotes', back\\slash, ünïcode and a NUL\u{FFFD}"
    );
    let got = store.get_action(&a.id).await.unwrap().unwrap();
    assert_eq!(got.steps[0].state, StepState::Succeeded);
    assert_eq!(got.steps[0].output, json!({"exit_code": 0}));
}

async fn lists_filter_and_paginate_newest_first(store: DynStore) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut a = new_action("alice", None, None);
        if i == 2 {
            a.state = ActionState::Failed;
        }
        ids.push(a.id.clone());
        one(&store, vec![WriteOp::InsertAction(Box::new(a))])
            .await
            .unwrap();
    }
    let page1 = store
        .list_actions(&ActionFilter {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page1.iter().map(|a| a.id.clone()).collect::<Vec<_>>(),
        vec![ids[4].clone(), ids[3].clone()]
    );
    let page2 = store
        .list_actions(&ActionFilter {
            limit: 2,
            before: Some(ids[3].clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page2[0].id, ids[2]);
    let failed = store
        .list_actions(&ActionFilter {
            limit: 10,
            state: Some(ActionState::Failed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].id, ids[2]);
    assert!(failed[0].steps.len() == 1);
}

async fn the_audit_chain_verifies_and_an_edit_names_its_event(
    store: DynStore,
    raw_edit: impl std::future::Future<Output = ()>,
) {
    for i in 0..10 {
        one(&store, vec![audit(&format!("event {i}"))]).await.unwrap();
    }
    let events = store.audit_page(0, 1000).await.unwrap();
    verify_chain(GENESIS_HASH, 1, &events).unwrap();
    raw_edit.await;
    let events = store.audit_page(0, 1000).await.unwrap();
    let broken = verify_chain(GENESIS_HASH, 1, &events).unwrap_err();
    assert_eq!(broken.seq, 4);
}

async fn tokens_are_found_by_hash(store: DynStore) {
    let t = TokenRecord {
        id: ids::new_id(),
        name: "ci".into(),
        subject: "admin".into(),
        hash: "abc123".into(),
        created_at: 1,
        expires_at: Some(2),
        revoked_at: None,
    };
    one(&store, vec![WriteOp::InsertToken(t.clone())]).await.unwrap();
    assert_eq!(store.token_by_hash("abc123").await.unwrap(), Some(t.clone()));
    assert_eq!(store.token_by_hash("other").await.unwrap(), None);
    let dup = one(&store, vec![WriteOp::InsertToken(t)]).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))));
    assert_eq!(
        store.get_environment("local").await.unwrap().unwrap().target,
        "local"
    );
}

async fn workloads_keep_immutable_revisions_and_a_current_one(store: DynStore) {
    let rev = |n: i64, replicas: u32, by: &str| RevisionRecord {
        env: "local".into(),
        name: "web".into(),
        revision: n,
        spec: json!({ "command": ["demo"], "replicas": replicas, "env": { "URL": "${resource.db.url}" } }),
        created_by: by.into(),
        created_at: 0,
    };
    one(&store, vec![WriteOp::InsertRevision(rev(1, 1, "a1"))])
        .await
        .unwrap();
    let w = store.get_workload("local", "web").await.unwrap().unwrap();
    assert_eq!(w.current_revision, None);
    one(
        &store,
        vec![
            WriteOp::SetCurrentRevision {
                env: "local".into(),
                name: "web".into(),
                revision: Some(1),
                replicas: Some(4),
            },
            WriteOp::InsertRevision(rev(2, 3, "a2")),
            // A revision is never replaced.
            WriteOp::InsertRevision(rev(1, 9, "other")),
        ],
    )
    .await
    .unwrap();
    let w = store.get_workload("local", "web").await.unwrap().unwrap();
    assert_eq!((w.current_revision, w.replicas), (Some(1), Some(4)));
    let r1 = store.get_revision("local", "web", 1).await.unwrap().unwrap();
    assert_eq!(
        (r1.spec["replicas"].as_u64(), r1.created_by.as_str()),
        (Some(1), "a1")
    );
    assert_eq!(r1.spec["env"]["URL"], "${resource.db.url}");
    let all = store.list_revisions("local", "web").await.unwrap();
    assert_eq!(all.iter().map(|r| r.revision).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(store.list_workloads("local").await.unwrap().len(), 1);
    assert!(store.list_workloads("staging").await.unwrap().is_empty());
    let all = store.list_all_workloads().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].env, "local");
    assert!(store.get_revision("local", "web", 3).await.unwrap().is_none());
    one(
        &store,
        vec![WriteOp::DeleteWorkload {
            env: "local".into(),
            name: "web".into(),
        }],
    )
    .await
    .unwrap();
    assert!(store.get_workload("local", "web").await.unwrap().is_none());
    assert!(store.list_revisions("local", "web").await.unwrap().is_empty());
}

fn target(name: &str, agent: bool, labels: &[(&str, &str)]) -> TargetRecord {
    TargetRecord {
        name: name.into(),
        kind: "local".into(),
        agent,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        created_at: 7,
    }
}

fn enroll(target: &str, token_hash: &str, expires_at: i64) -> WriteOp {
    WriteOp::InsertEnrollment {
        target: target.into(),
        token_hash: token_hash.into(),
        created_at: 10,
        expires_at,
    }
}

fn redeem(token_hash: &str, at: i64, id: &str, secret_hash: &str) -> WriteOp {
    WriteOp::RedeemEnrollment {
        token_hash: token_hash.into(),
        at,
        credential_id: id.into(),
        secret_hash: secret_hash.into(),
        info: json!({"version": "1.0", "host": "edge-1"}),
    }
}

async fn targets_round_trip_with_labels_and_the_agent_flag(store: DynStore) {
    // The target the first migration made reads back with the new columns' defaults.
    let local = store.get_target("local").await.unwrap().unwrap();
    assert_eq!(
        local,
        TargetRecord {
            created_at: 0,
            ..target("local", false, &[])
        }
    );
    let edge = target("edge", true, &[("region", "eu-west-1"), ("tier", "production")]);
    let mut kube = target("a-cluster", false, &[]);
    kube.kind = "kubernetes".into();
    one(
        &store,
        vec![
            WriteOp::InsertTarget(edge.clone()),
            WriteOp::InsertTarget(kube.clone()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(store.get_target("edge").await.unwrap(), Some(edge.clone()));
    assert_eq!(store.get_target("nope").await.unwrap(), None);
    let names: Vec<String> = store
        .list_targets()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["a-cluster", "edge", "local"]);
    let dup = one(&store, vec![WriteOp::InsertTarget(target("edge", false, &[]))]).await;
    match dup {
        Err(e @ StoreError::Conflict(_)) => assert_eq!(e.to_string(), "target `edge` already exists"),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.get_target("edge").await.unwrap(), Some(edge));
    // An enrollment needs its target.
    let r = one(&store, vec![enroll("nope", "h0", 100)]).await;
    assert!(
        matches!(r, Err(StoreError::NotFound(ref w)) if w == "target `nope`"),
        "{r:?}"
    );
}

async fn an_enrollment_token_is_redeemed_once(store: DynStore) {
    one(
        &store,
        vec![
            WriteOp::InsertTarget(target("edge", true, &[])),
            enroll("edge", "tok1", 1_000),
            enroll("edge", "tok2", 1_000),
        ],
    )
    .await
    .unwrap();
    let dup = one(&store, vec![enroll("edge", "tok1", 1_000)]).await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))), "{dup:?}");

    one(&store, vec![redeem("tok1", 500, "cred1", "secret1")])
        .await
        .unwrap();
    let cred = store.find_agent_credential("secret1").await.unwrap().unwrap();
    assert_eq!(
        cred,
        AgentCredentialRecord {
            id: "cred1".into(),
            target: "edge".into(),
            created_at: 500,
            revoked_at: None,
            last_seen_at: None,
            info: json!({"version": "1.0", "host": "edge-1"}),
        }
    );
    assert_eq!(store.find_agent_credential("tok1").await.unwrap(), None);

    // Used, expired, unknown: refused, and nothing is written.
    let before = audit_len(&store).await;
    let answers = store
        .write(vec![
            vec![audit("rolled back"), redeem("tok1", 600, "cred2", "secret2")],
            vec![audit("kept")],
            vec![redeem("tok2", 1_000, "cred3", "secret3")],
            vec![redeem("unknown", 600, "cred4", "secret4")],
        ])
        .await
        .unwrap();
    match &answers[0] {
        Err(e @ StoreError::Precondition { current, .. }) => {
            assert_eq!(current, "already used");
            assert_eq!(
                e.to_string(),
                "this enrollment token is already used, not unused and unexpired"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(answers[1].is_ok());
    match &answers[2] {
        Err(e @ StoreError::Precondition { current, .. }) => {
            assert_eq!(current, "expired");
            assert_eq!(
                e.to_string(),
                "this enrollment token is expired, not unused and unexpired"
            );
        }
        other => panic!("{other:?}"),
    }
    match &answers[3] {
        Err(e @ StoreError::NotFound(_)) => assert_eq!(e.to_string(), "enrollment token not found"),
        other => panic!("{other:?}"),
    }
    let events = store.audit_page(0, 10_000).await.unwrap();
    assert_eq!(events.len(), before + 1);
    assert_eq!(events.last().unwrap().summary, "kept");
    for secret in ["secret2", "secret3", "secret4"] {
        assert_eq!(store.find_agent_credential(secret).await.unwrap(), None);
    }
    // The expired token stays unused: still refused as expired, not as used.
    let again = one(&store, vec![redeem("tok2", 2_000, "cred5", "secret5")]).await;
    assert!(matches!(again, Err(StoreError::Precondition { ref current, .. }) if current == "expired"));
    let ids: Vec<String> = store
        .list_agent_credentials("edge")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["cred1"]);
}

async fn revoking_ends_credentials_and_unused_enrollments(store: DynStore) {
    one(
        &store,
        vec![
            WriteOp::InsertTarget(target("edge", true, &[])),
            WriteOp::InsertTarget(target("other", true, &[])),
            enroll("edge", "t1", 10_000),
            enroll("edge", "t2", 10_000),
            enroll("edge", "t3", 10_000),
            enroll("other", "o1", 10_000),
        ],
    )
    .await
    .unwrap();
    one(&store, vec![redeem("t1", 100, "c1", "s1")]).await.unwrap();
    one(&store, vec![redeem("t2", 200, "c2", "s2")]).await.unwrap();
    one(&store, vec![redeem("o1", 300, "o-c1", "os1")]).await.unwrap();
    let newest_first: Vec<String> = store
        .list_agent_credentials("edge")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(newest_first, ["c2", "c1"]);

    one(
        &store,
        vec![WriteOp::RevokeAgentCredentials {
            target: "edge".into(),
            at: 400,
        }],
    )
    .await
    .unwrap();
    let creds = store.list_agent_credentials("edge").await.unwrap();
    assert!(creds.iter().all(|c| c.revoked_at == Some(400)), "{creds:?}");
    assert_eq!(
        store
            .find_agent_credential("s1")
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(400)
    );
    // Another target's agent is untouched.
    assert_eq!(
        store
            .find_agent_credential("os1")
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        None
    );
    // The unused enrollment is gone with the revocation.
    let r = one(&store, vec![redeem("t3", 500, "c3", "s3")]).await;
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");
    assert_eq!(store.find_agent_credential("s3").await.unwrap(), None);
    // A revocation keeps the time of the first one.
    one(
        &store,
        vec![WriteOp::RevokeAgentCredentials {
            target: "edge".into(),
            at: 900,
        }],
    )
    .await
    .unwrap();
    assert_eq!(
        store
            .find_agent_credential("s2")
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(400)
    );
    // A new enrollment afterwards works.
    one(&store, vec![enroll("edge", "t4", 10_000)]).await.unwrap();
    one(&store, vec![redeem("t4", 1_000, "c4", "s4")]).await.unwrap();
    assert_eq!(
        store
            .find_agent_credential("s4")
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        None
    );
    let r = one(
        &store,
        vec![WriteOp::RevokeAgentCredentials {
            target: "nope".into(),
            at: 1,
        }],
    )
    .await;
    assert!(
        matches!(r, Err(StoreError::NotFound(ref w)) if w == "target `nope`"),
        "{r:?}"
    );
}

async fn a_target_in_use_is_not_deleted(store: DynStore) {
    one(
        &store,
        vec![
            WriteOp::InsertTarget(target("edge", true, &[])),
            enroll("edge", "t1", 10_000),
            enroll("edge", "t2", 10_000),
        ],
    )
    .await
    .unwrap();
    one(&store, vec![redeem("t1", 100, "c1", "s1")]).await.unwrap();
    for env in ["staging", "prod"] {
        one(
            &store,
            vec![WriteOp::InsertEnvironment(Environment {
                name: env.into(),
                target: "edge".into(),
                labels: Default::default(),
                created_at: 1,
                namespace: Some(format!("ns-{env}")),
            })],
        )
        .await
        .unwrap();
    }
    // The namespace of an environment on a cluster comes back as written.
    let prod = store.get_environment("prod").await.unwrap().unwrap();
    assert_eq!(
        (prod.namespace.as_deref(), prod.namespace()),
        (Some("ns-prod"), "ns-prod")
    );
    let listed = store.list_environments().await.unwrap();
    assert!(listed
        .iter()
        .any(|e| e.name == "staging" && e.namespace() == "ns-staging"));
    let r = one(&store, vec![WriteOp::DeleteTarget("edge".into())]).await;
    match r {
        Err(e @ StoreError::Precondition { .. }) => assert_eq!(
            e.to_string(),
            "target `edge` is used by environment(s) prod, staging, not unused"
        ),
        other => panic!("{other:?}"),
    }
    assert!(store.get_target("edge").await.unwrap().is_some());
    assert!(store.find_agent_credential("s1").await.unwrap().is_some());
    for env in ["staging", "prod"] {
        one(&store, vec![WriteOp::DeleteEnvironment(env.into())])
            .await
            .unwrap();
    }
    one(&store, vec![WriteOp::DeleteTarget("edge".into())])
        .await
        .unwrap();
    assert!(store.get_target("edge").await.unwrap().is_none());
    assert!(store.find_agent_credential("s1").await.unwrap().is_none());
    assert!(store.list_agent_credentials("edge").await.unwrap().is_empty());
    let r = one(&store, vec![WriteOp::DeleteTarget("edge".into())]).await;
    assert!(
        matches!(r, Err(StoreError::NotFound(ref w)) if w == "target `edge`"),
        "{r:?}"
    );
    // Its enrollments went with it: a target of that name made again starts afresh.
    one(&store, vec![WriteOp::InsertTarget(target("edge", true, &[]))])
        .await
        .unwrap();
    let r = one(&store, vec![redeem("t2", 200, "c2", "s2")]).await;
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");
    one(&store, vec![enroll("edge", "t1", 10_000)]).await.unwrap();
}

async fn touching_a_credential_records_when_and_what(store: DynStore) {
    one(
        &store,
        vec![
            WriteOp::InsertTarget(target("edge", true, &[])),
            enroll("edge", "t1", 10_000),
        ],
    )
    .await
    .unwrap();
    one(&store, vec![redeem("t1", 100, "c1", "s1")]).await.unwrap();
    one(
        &store,
        vec![WriteOp::TouchAgentCredential {
            id: "c1".into(),
            at: 200,
            info: None,
        }],
    )
    .await
    .unwrap();
    let c = store.find_agent_credential("s1").await.unwrap().unwrap();
    assert_eq!(
        (c.last_seen_at, c.info),
        (Some(200), json!({"version": "1.0", "host": "edge-1"}))
    );
    one(
        &store,
        vec![WriteOp::TouchAgentCredential {
            id: "c1".into(),
            at: 300,
            info: Some(json!({"version": "1.1", "kube": "v1.30"})),
        }],
    )
    .await
    .unwrap();
    let c = store.find_agent_credential("s1").await.unwrap().unwrap();
    assert_eq!(
        (c.last_seen_at, c.info),
        (Some(300), json!({"version": "1.1", "kube": "v1.30"}))
    );
    let r = one(
        &store,
        vec![WriteOp::TouchAgentCredential {
            id: "nope".into(),
            at: 1,
            info: None,
        }],
    )
    .await;
    assert!(matches!(r, Err(StoreError::NotFound(_))), "{r:?}");
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store: DynStore = Arc::new(SqliteStore::open(&dir.path().join("t.db")).await.unwrap());
                    super::$name(store).await;
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let pg = pave_testkit::TestPostgres::new().await;
                    let store: DynStore = Arc::new(PgStore::connect(&pg.url).await.unwrap());
                    super::$name(store).await;
                }
            )*
        }
    };
}

both!(
    actions_round_trip_with_their_steps,
    an_idempotency_key_returns_the_first_action_and_writes_nothing,
    a_failed_precondition_rolls_back_only_its_request,
    claims_respect_the_object_lock_and_its_release,
    an_expired_lease_is_taken_over_and_a_live_one_is_not,
    concurrent_claimers_never_get_the_same_action,
    steps_logs_and_pages,
    lists_filter_and_paginate_newest_first,
    tokens_are_found_by_hash,
    workloads_keep_immutable_revisions_and_a_current_one,
    targets_round_trip_with_labels_and_the_agent_flag,
    an_enrollment_token_is_redeemed_once,
    revoking_ends_credentials_and_unused_enrollments,
    a_target_in_use_is_not_deleted,
    touching_a_credential_records_when_and_what,
);

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_audit_tampering_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store: DynStore = Arc::new(SqliteStore::open(&path).await.unwrap());
    let edit = async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query("UPDATE audit_events SET summary = 'nothing happened' WHERE seq = 4")
            .execute(&pool)
            .await
            .unwrap();
    };
    the_audit_chain_verifies_and_an_edit_names_its_event(store, edit).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_audit_tampering_is_found() {
    let pg = pave_testkit::TestPostgres::new().await;
    let store: DynStore = Arc::new(PgStore::connect(&pg.url).await.unwrap());
    let url = pg.url.clone();
    let edit = async move {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query("UPDATE audit_events SET actor = 'mallory' WHERE seq = 4")
            .execute(&pool)
            .await
            .unwrap();
    };
    the_audit_chain_verifies_and_an_edit_names_its_event(store, edit).await;
}
