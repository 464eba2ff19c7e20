use super::*;

/// The input document of [`INPUT_SCHEMA_DOC`]: alice deploys payments to production.
fn prod_deploy() -> Json {
    json!({
        "actor": {"user": "alice", "teams": ["payments"], "role": "developer",
                  "roles": {"payments-prod": "developer", "*": "viewer"}},
        "action": {"kind": "deploy", "input": {"name": "payments", "replicas": 3, "env": {"FEATURE_X": "1"}},
                   "objects": ["workload/payments-prod/payments"], "object_count": 1,
                   "steps": ["apply revision", "wait until ready", "retire previous revision"]},
        "environment": {"name": "payments-prod", "target": "local", "labels": {"tier": "production"}},
        "approval": null,
        "time_ms": 1796347500000u64
    })
}

fn staging(mut doc: Json) -> Json {
    doc["environment"] =
        json!({"name": "payments-staging", "target": "local", "labels": {"tier": "staging"}});
    doc
}

fn module(name: &str, source: &str) -> Module {
    Module {
        name: name.into(),
        source: source.into(),
    }
}

const PROD_REASON: &str =
    "deploy in production environment payments-prod needs approval by an operator other than the requester";

#[test]
fn builtin_pack_compiles() {
    let set = PolicySet::new(default_pack()).expect("the default pack compiles");
    assert_eq!(set.modules().len(), 4);
    assert!(set.modules().iter().all(|m| m.name.starts_with("builtin/")));
    assert_eq!(PolicySet::builtin().modules(), set.modules());
}

#[test]
fn staging_deploy_is_allowed() {
    let v = PolicySet::builtin().evaluate(&staging(prod_deploy())).unwrap();
    assert_eq!(v, Verdict::Allow);
}

#[test]
fn production_deploy_requires_approval() {
    let v = PolicySet::builtin().evaluate(&prod_deploy()).unwrap();
    assert_eq!(
        v,
        Verdict::RequireApproval {
            reasons: vec![PROD_REASON.into()],
            approver_role: "operator".into(),
            approver_team: None,
        }
    );
    assert_eq!(
        serde_json::to_value(&v).unwrap(),
        json!({"decision": "require_approval", "reasons": [PROD_REASON],
               "approver_role": "operator", "approver_team": null})
    );
}

#[test]
fn production_deploy_being_approved_is_allowed() {
    let mut doc = prod_deploy();
    doc["approval"] = json!({"by": "bob", "amended": true});
    doc["action"]["object_count"] = json!(40);
    doc["action"]["input"]["replicas"] = json!(40);
    assert_eq!(PolicySet::builtin().evaluate(&doc).unwrap(), Verdict::Allow);
}

#[test]
fn regulated_exec_is_denied() {
    let mut doc = prod_deploy();
    doc["action"] = json!({"kind": "exec", "input": {"workload": "payments", "command": ["sh"]},
                           "objects": ["workload/payments-prod/payments"], "object_count": 1, "steps": ["exec"]});
    doc["environment"]["labels"]["regulated"] = json!("true");
    let v = PolicySet::builtin().evaluate(&doc).unwrap();
    assert_eq!(
        v,
        Verdict::Deny {
            reasons: vec!["exec is not allowed in regulated environment payments-prod".into()]
        }
    );
    assert_eq!(serde_json::to_value(&v).unwrap()["decision"], "deny");
    // Deny wins over the approval production asks for, and approving does not lift it.
    doc["approval"] = json!({"by": "bob", "amended": false});
    assert!(matches!(
        PolicySet::builtin().evaluate(&doc).unwrap(),
        Verdict::Deny { .. }
    ));
}

#[test]
fn many_replicas_require_approval() {
    let mut doc = staging(prod_deploy());
    doc["action"]["input"]["replicas"] = json!(12);
    assert_eq!(
        PolicySet::builtin().evaluate(&doc).unwrap(),
        Verdict::RequireApproval {
            reasons: vec!["scaling payments to 12 replicas (more than 10) needs approval".into()],
            approver_role: "operator".into(),
            approver_team: None,
        }
    );
    doc["action"]["kind"] = json!("scale");
    doc["action"]["input"] = json!({"name": "payments", "replicas": 10});
    assert_eq!(PolicySet::builtin().evaluate(&doc).unwrap(), Verdict::Allow);
}

#[test]
fn many_objects_in_production_add_a_reason() {
    let mut doc = prod_deploy();
    doc["action"]["object_count"] = json!(6);
    let Verdict::RequireApproval { reasons, .. } = PolicySet::builtin().evaluate(&doc).unwrap() else {
        panic!("expected require_approval");
    };
    assert_eq!(
        reasons,
        vec![
            "deploy in production environment payments-prod needs approval by an operator other than the requester"
                .to_string(),
            "deploy touches 6 objects in production environment payments-prod (more than 5) and needs approval"
                .to_string(),
        ]
    );
}

#[test]
fn builtin_rego_tests_pass() {
    let outcomes = PolicySet::builtin().run_tests();
    assert!(outcomes.len() >= 15, "found only {} tests", outcomes.len());
    let failed: Vec<&TestOutcome> = outcomes.iter().filter(|o| !o.passed).collect();
    assert!(failed.is_empty(), "failing Rego tests: {failed:#?}");
    assert!(outcomes
        .iter()
        .all(|o| o.package == "pave_test" && o.name.starts_with("test_")));
}

#[test]
fn run_tests_reports_failures_and_errors() {
    let set = PolicySet::new(vec![module(
        "api/t.rego",
        "package t\n\n# test_in_a_comment\ntest_ok if true\ntest_false if false\n\
         test_undefined if input.x\ntest_error if 1 / 0 == 1\nnot_a_test := 1\ntest_fn(x) := x\n",
    )])
    .unwrap();
    let outcomes = set.run_tests();
    let by_name = |n: &str| outcomes.iter().find(|o| o.name == n).cloned();
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    assert!(by_name("test_ok").is_some_and(|o| o.passed && o.package == "t" && o.error.is_none()));
    assert!(by_name("test_false").is_some_and(|o| !o.passed));
    assert!(by_name("test_undefined").is_some_and(|o| !o.passed && o.error.is_none()));
    assert!(by_name("test_error").is_some_and(|o| !o.passed));
}

#[test]
fn syntax_error_names_module_and_line() {
    let bad = module(
        "policies/broken.rego",
        "package pave\n\ndeny contains \"x\" if {\n  input.a >\n}\n",
    );
    let err = PolicySet::new(vec![module("policies/ok.rego", "package pave\n"), bad]).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PolicyError::Compile { ref module, .. } if module == "policies/broken.rego"));
    assert!(text.contains("policies/broken.rego"), "{text}");
    assert!(text.contains("line 5"), "{text}");
    assert!(!text.contains('\n'), "{text}");
}

#[test]
fn conflicting_values_fail_at_load() {
    let err = PolicySet::new(vec![
        module(
            "a.rego",
            "package pave\n\napprovers := {\"role\": \"operator\"}\n",
        ),
        module(
            "b.rego",
            "package pave\n\napprovers := {\"role\": \"admin\"} if input.environment.name\n",
        ),
    ])
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("a.rego") || text.contains("b.rego"), "{text}");
    assert!(text.contains("line 3"), "{text}");
}

#[test]
fn unsafe_variable_fails_at_load() {
    let err = PolicySet::new(vec![module(
        "u.rego",
        "package pave\n\ndeny contains x if {\n  y == 1\n}\n",
    )])
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("u.rego") && text.contains("line"), "{text}");
}

#[test]
fn wrong_shape_fails_at_load() {
    let err = PolicySet::new(vec![module("s.rego", "package pave\n\ndeny := true\n")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "policy s.rego: data.pave.deny must be a set of strings, not true"
    );
    let err = PolicySet::new(vec![module("o.rego", "package pave\n\napprovers := \"ops\"\n")]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("policy o.rego: data.pave.approvers must be an object"),
        "{err}"
    );
}

#[test]
fn duplicate_module_names_are_refused() {
    let m = module("a.rego", "package pave\n");
    let err = PolicySet::new(vec![m.clone(), m]).unwrap_err();
    assert!(err.to_string().contains("a.rego"), "{err}");
}

#[test]
fn approvers_and_no_rules() {
    let empty = PolicySet::new(Vec::new()).unwrap();
    assert_eq!(empty.evaluate(&prod_deploy()).unwrap(), Verdict::Allow);
    assert!(empty.run_tests().is_empty());

    let mut pack = default_pack();
    pack.push(module(
        "api/approvers.rego",
        "package pave\n\napprovers := {\"role\": \"admin\", \"team\": \"platform\"}\n",
    ));
    let set = PolicySet::new(pack).unwrap();
    assert_eq!(
        set.evaluate(&prod_deploy()).unwrap(),
        Verdict::RequireApproval {
            reasons: vec![PROD_REASON.into()],
            approver_role: "admin".into(),
            approver_team: Some("platform".into()),
        }
    );
    assert_eq!(set.evaluate(&staging(prod_deploy())).unwrap(), Verdict::Allow);
}

#[test]
fn policies_in_other_packages_do_not_decide() {
    let set = PolicySet::new(vec![module("o.rego", "package other\n\ndeny contains \"no\"\n")]).unwrap();
    assert_eq!(set.evaluate(&prod_deploy()).unwrap(), Verdict::Allow);
}

#[test]
fn evaluations_across_threads() {
    let set = PolicySet::builtin();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let set = set.clone();
            std::thread::spawn(move || {
                (0..50).all(|_| matches!(set.evaluate(&prod_deploy()), Ok(Verdict::RequireApproval { .. })))
            })
        })
        .collect();
    assert!(handles.into_iter().all(|h| h.join().unwrap()));
}

#[test]
fn load_dir_reads_rego_files_sorted() {
    let dir = std::env::temp_dir().join(format!("pave-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("b.rego"), "package pave\n").unwrap();
    std::fs::write(dir.join("a.rego"), "package pave\n").unwrap();
    std::fs::write(dir.join("notes.md"), "no").unwrap();
    std::fs::write(dir.join("sub/c.rego"), "package pave\n").unwrap();
    let modules = load_dir(&dir).unwrap();
    let names: Vec<String> = modules.iter().map(|m| m.name.clone()).collect();
    assert_eq!(
        names,
        vec![
            dir.join("a.rego").display().to_string(),
            dir.join("b.rego").display().to_string()
        ]
    );
    assert!(matches!(
        load_dir(&dir.join("missing")),
        Err(PolicyError::Io { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn schema_doc_describes_every_field() {
    for field in [
        "actor.user",
        "actor.roles",
        "action.object_count",
        "environment.labels",
        "approval",
        "time_ms",
    ] {
        assert!(INPUT_SCHEMA_DOC.contains(field), "{field}");
    }
}

#[test]
fn test_candidates_are_words() {
    assert_eq!(
        test_candidates("test_a if x\nmy_test_b := 1\n test_a\ntest_c(x) := 1"),
        vec!["test_a"]
    );
}

#[test]
fn rule_paths_quote_odd_components() {
    assert_eq!(rule_path(&["a".into(), "b-c".into()]), "data.a[\"b-c\"]");
}

#[test]
fn unknown_function_fails_at_load() {
    let err = PolicySet::new(vec![module("f.rego", "package pave\n\nhelper := bar(1)\n")]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "policy f.rego: line 3, column 14: could not find function bar"
    );
}

#[test]
fn a_broken_pack_fails_its_tests() {
    let mut pack = default_pack();
    for m in &mut pack {
        m.source = m.source.replace(
            "max_replicas_without_approval := 10",
            "max_replicas_without_approval := 11",
        );
    }
    let failed: Vec<String> = PolicySet::new(pack)
        .unwrap()
        .run_tests()
        .into_iter()
        .filter(|o| !o.passed)
        .map(|o| o.name)
        .collect();
    assert_eq!(
        failed,
        vec![
            "test_deploy_many_replicas_requires_approval",
            "test_many_replicas_in_production_gives_both_reasons",
            "test_scale_many_replicas_requires_approval",
        ]
    );
}
