//! What evaluating the default policy pack costs per action: the median of
//! many evaluations of a production deploy, the input the engine builds
//! before it queues one.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pave_policy::{PolicySet, Verdict};
use serde_json::{json, Value};

/// Evaluations before the timed ones (caches, branch predictors).
const WARMUP: u32 = 1000;

/// What the policy run measured.
pub struct PolicyFigures {
    /// Timed evaluations.
    pub evaluations: u32,
    /// Median time of one evaluation.
    pub median: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Modules in the pack.
    pub modules: usize,
}

/// A deploy of 3 replicas of `payments` to a production environment, as the
/// engine builds the policy input (see `pave_engine::input_document`).
pub fn production_deploy() -> Value {
    json!({
        "actor": {
            "user": "alice",
            "teams": ["payments"],
            "role": "developer",
            "roles": {"payments-prod": "developer", "*": "viewer"},
        },
        "action": {
            "kind": "deploy",
            "input": {"name": "payments", "image": "registry.local/payments:1.42.0", "replicas": 3,
                      "env": {"FEATURE_X": "1", "LOG_LEVEL": "info"}},
            "objects": ["workload/payments-prod/payments"],
            "object_count": 1,
            "steps": ["apply revision", "wait until ready", "retire previous revision"],
        },
        "environment": {"name": "payments-prod", "target": "local", "labels": {"tier": "production", "team": "payments"}},
        "approval": null,
        "time_ms": 1796347500000u64,
    })
}

/// `n` evaluations of [`production_deploy`] against the built-in pack, each timed.
pub fn bench_policy(n: u32) -> Result<PolicyFigures> {
    let set = PolicySet::builtin();
    let input = production_deploy();
    let check = set
        .evaluate(&input)
        .context("the default policy pack failed to evaluate")?;
    if !matches!(check, Verdict::RequireApproval { .. }) {
        bail!("the default policy pack decided {check:?} on a production deploy, expected require_approval");
    }
    for _ in 0..WARMUP {
        std::hint::black_box(
            set.evaluate(std::hint::black_box(&input))
                .context("policy evaluation failed")?,
        );
    }
    let mut times = Vec::with_capacity(n as usize);
    for _ in 0..n.max(1) {
        let t = Instant::now();
        let v = set.evaluate(std::hint::black_box(&input));
        times.push(t.elapsed());
        std::hint::black_box(v.context("policy evaluation failed")?);
    }
    times.sort();
    let at = |p: usize| times[(p * (times.len() - 1) + 50) / 100];
    Ok(PolicyFigures {
        evaluations: times.len() as u32,
        median: at(50),
        p99: at(99),
        modules: set.modules().len(),
    })
}
