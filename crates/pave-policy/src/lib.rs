//! pave policy evaluation: Rego policies, evaluated with
//! [regorus](https://github.com/microsoft/regorus), decide whether an action
//! is allowed, denied, or held until someone approves it.
//!
//! Policies write to package `pave`: the partial sets `deny` and
//! `require_approval` (strings: the reasons) and an optional object
//! `approvers`. See [`INPUT_SCHEMA_DOC`] for the input document and
//! [`default_pack`] for the built-in policies.

mod error;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde_json::{json, Value as Json};

pub use error::PolicyError;
use error::Report;

/// A markdown description of the policy input document and of what policies
/// write, for docs.
pub const INPUT_SCHEMA_DOC: &str = include_str!("input_schema.md");

/// The package policies write their decision to.
const DECISION_PACKAGE: &str = "pave";
/// The rules of [`DECISION_PACKAGE`] that make up the decision.
const DENY: &str = "deny";
const REQUIRE_APPROVAL: &str = "require_approval";
const APPROVERS: &str = "approvers";
/// Who approves when no policy says (`data.pave.approvers` undefined).
const DEFAULT_APPROVER_ROLE: &str = "operator";
/// The Rego unit-test convention: rules named so are tests.
const TEST_PREFIX: &str = "test_";

/// One policy module: where it came from (a file path or `builtin/NAME.rego`
/// or `api/NAME.rego`) and its text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Module {
    pub name: String,
    pub source: String,
}

/// What the policies decided about one request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Deny {
        reasons: Vec<String>,
    },
    RequireApproval {
        reasons: Vec<String>,
        approver_role: String,
        approver_team: Option<String>,
    },
}

/// The result of one Rego unit test (a rule named `test_*`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestOutcome {
    /// The test's package, e.g. `pave_test`.
    pub package: String,
    /// The rule's name, e.g. `test_staging_deploy_allowed`.
    pub name: String,
    /// Whether it evaluated to `true`.
    pub passed: bool,
    /// Why it could not be evaluated, if it could not.
    pub error: Option<String>,
}

/// A compiled set of policy modules. Cloning is cheap (a reference count);
/// evaluations from many threads at once are fine.
#[derive(Clone)]
pub struct PolicySet {
    inner: Arc<Inner>,
}

struct Inner {
    modules: Vec<Module>,
    /// Every module added and the engine prepared (analysed, scheduled), with
    /// no input. Each evaluation works on a clone: regorus evaluates through
    /// `&mut self`, and a clone of a prepared engine is a handful of
    /// reference counts.
    engine: regorus::Engine,
    /// Which decision rules some module declares (evaluating an undeclared
    /// rule is an error in regorus, where it should count as empty).
    has_deny: bool,
    has_require_approval: bool,
    has_approvers: bool,
    tests: Vec<TestRule>,
}

struct TestRule {
    package: String,
    name: String,
    /// `data.<package>.<name>`.
    path: String,
}

// PolicySet is shared by the engine's workers.
const _: fn() = || {
    fn assert_send_sync_clone<T: Send + Sync + Clone>() {}
    assert_send_sync_clone::<PolicySet>();
};

impl std::fmt::Debug for PolicySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.inner.modules.iter().map(|m| m.name.as_str()).collect();
        f.debug_struct("PolicySet").field("modules", &names).finish()
    }
}

impl PolicySet {
    /// Parses and compiles `modules`, then evaluates them against sample
    /// inputs so that errors only evaluation finds (unsafe variables,
    /// conflicting rule values, decision rules of the wrong shape) surface
    /// here. Any error names the module, the line and regorus's message.
    pub fn new(modules: Vec<Module>) -> Result<PolicySet, PolicyError> {
        let mut engine = regorus::Engine::new();
        let mut seen = BTreeSet::new();
        for m in &modules {
            if !seen.insert(m.name.as_str()) {
                return Err(PolicyError::Compile {
                    module: m.name.clone(),
                    message: "another module has the same name".into(),
                });
            }
            engine
                .add_policy(m.name.clone(), m.source.clone())
                .map_err(|e| compile_error(&m.name, &e))?;
        }
        let packages = engine
            .get_policy_package_components()
            .map_err(|e| load_error(&e))?;
        let mut has = [false; 3];
        let mut has_decision_package = false;
        let mut tests = Vec::new();
        for (m, pkg) in modules.iter().zip(&packages) {
            if pkg.source_file != m.name {
                return Err(PolicyError::Compile {
                    module: m.name.clone(),
                    message: format!("regorus reports its package under the name {}", pkg.source_file),
                });
            }
            if pkg.components == [DECISION_PACKAGE] {
                has_decision_package = true;
                for (flag, rule) in has.iter_mut().zip([DENY, REQUIRE_APPROVAL, APPROVERS]) {
                    *flag |= declares(&engine, &m.name, rule);
                }
            }
            let package = pkg.components.join(".");
            for name in test_candidates(&m.source) {
                if declares(&engine, &m.name, name)
                    && !tests
                        .iter()
                        .any(|t: &TestRule| t.package == package && t.name == name)
                {
                    tests.push(TestRule {
                        path: format!("{}.{name}", rule_path(&pkg.components)),
                        package: package.clone(),
                        name: name.to_string(),
                    });
                }
            }
        }
        tests.sort_by(|a, b| (&a.package, &a.name).cmp(&(&b.package, &b.name)));
        // Analyses and schedules the modules (unsafe variables, recursion, ...)
        // once, so that every clone starts prepared.
        engine
            .eval_query("true".into(), false)
            .map_err(|e| load_error(&e))?;
        let [has_deny, has_require_approval, has_approvers] = has;
        let set = PolicySet {
            inner: Arc::new(Inner {
                modules,
                engine,
                has_deny,
                has_require_approval,
                has_approvers,
                tests,
            }),
        };
        for input in sample_inputs() {
            set.decide(&input, true).map_err(|e| match e {
                Decision::Regorus(e) => load_error(&e),
                Decision::Input(e) => PolicyError::Eval(format!("the sample input cannot be converted: {e}")),
                Decision::Shape { rule, message } => PolicyError::Compile {
                    module: set.declaring_module(rule),
                    message,
                },
            })?;
            // Every rule of the decision package, not only those the verdict
            // reads: regorus finds an unknown function only when it gets there.
            if has_decision_package {
                let mut engine = set.inner.engine.clone();
                engine.set_input(regorus::Value::from(input));
                engine
                    .eval_query(format!("data.{DECISION_PACKAGE}"), false)
                    .map_err(|e| load_error(&e))?;
            }
        }
        Ok(set)
    }

    /// The built-in pack ([`default_pack`]), compiled once per process.
    pub fn builtin() -> PolicySet {
        static BUILTIN: OnceLock<PolicySet> = OnceLock::new();
        BUILTIN
            .get_or_init(|| match PolicySet::new(default_pack()) {
                Ok(set) => set,
                // A unit test compiles the pack: this cannot happen in a released build.
                Err(e) => panic!("the built-in policy pack does not compile: {e}"),
            })
            .clone()
    }

    /// The modules, as given.
    pub fn modules(&self) -> &[Module] {
        &self.inner.modules
    }

    /// Decides on one request (`input` as described in [`INPUT_SCHEMA_DOC`]):
    /// any `deny` denies it, with every reason; otherwise any
    /// `require_approval` holds it for the approvers `data.pave.approvers`
    /// names (default: an operator); otherwise it is allowed.
    pub fn evaluate(&self, input: &Json) -> Result<Verdict, PolicyError> {
        self.decide(input, false).map_err(|e| match e {
            Decision::Regorus(e) => PolicyError::Eval(Report::parse(&format!("{e:#}")).located()),
            Decision::Shape { message, .. } => PolicyError::Eval(message),
            Decision::Input(e) => PolicyError::Eval(format!("the input cannot be converted: {e}")),
        })
    }

    /// Runs every rule named `test_*` in any package (the Rego unit-test
    /// convention of `opa test`), each with no input: it passes when it is `true`.
    pub fn run_tests(&self) -> Vec<TestOutcome> {
        self.inner
            .tests
            .iter()
            .map(|t| {
                let mut engine = self.inner.engine.clone();
                let (passed, error) = match engine.eval_rule(t.path.clone()) {
                    Ok(v) => (v == regorus::Value::Bool(true), None),
                    Err(e) => (false, Some(Report::parse(&format!("{e:#}")).located())),
                };
                TestOutcome {
                    package: t.package.clone(),
                    name: t.name.clone(),
                    passed,
                    error,
                }
            })
            .collect()
    }

    /// The first module of the decision package that declares `rule`.
    fn declaring_module(&self, rule: &str) -> String {
        let inner = &*self.inner;
        let packages = inner.engine.get_policy_package_components().unwrap_or_default();
        packages
            .iter()
            .find(|p| p.components == [DECISION_PACKAGE] && declares(&inner.engine, &p.source_file, rule))
            .map(|p| p.source_file.clone())
            .unwrap_or_else(|| format!("data.{DECISION_PACKAGE}"))
    }

    /// The verdict; with `all`, also evaluates the rules the verdict does not need
    /// (the load-time check).
    fn decide(&self, input: &Json, all: bool) -> Result<Verdict, Decision> {
        let inner = &*self.inner;
        let mut engine = inner.engine.clone();
        // Straight from the borrowed JSON: no clone of it first.
        let input = <regorus::Value as serde::Deserialize>::deserialize(input)
            .map_err(|e| Decision::Input(e.to_string()))?;
        engine.set_input(input);
        let deny = reasons(&mut engine, inner.has_deny, DENY)?;
        let require = if deny.is_empty() || all {
            reasons(&mut engine, inner.has_require_approval, REQUIRE_APPROVAL)?
        } else {
            Vec::new()
        };
        let approvers = if (deny.is_empty() && !require.is_empty()) || all {
            approvers(&mut engine, inner.has_approvers)?
        } else {
            (String::new(), None)
        };
        Ok(if !deny.is_empty() {
            Verdict::Deny { reasons: deny }
        } else if !require.is_empty() {
            Verdict::RequireApproval {
                reasons: require,
                approver_role: approvers.0,
                approver_team: approvers.1,
            }
        } else {
            Verdict::Allow
        })
    }
}

/// Why [`PolicySet::decide`] failed.
enum Decision {
    /// regorus failed.
    Regorus(anyhow::Error),
    /// The input document could not be converted to a regorus value.
    Input(String),
    /// A decision rule has the wrong shape.
    Shape { rule: &'static str, message: String },
}

impl From<anyhow::Error> for Decision {
    fn from(e: anyhow::Error) -> Self {
        Decision::Regorus(e)
    }
}

/// The sorted, distinct strings of `data.pave.<rule>` (a set or array;
/// elements that are not strings as JSON text); empty when no module declares
/// it or it is undefined.
fn reasons(
    engine: &mut regorus::Engine,
    declared: bool,
    rule: &'static str,
) -> Result<Vec<String>, Decision> {
    if !declared {
        return Ok(Vec::new());
    }
    let value = engine.eval_rule(format!("data.{DECISION_PACKAGE}.{rule}"))?;
    let items: Vec<&regorus::Value> = match &value {
        regorus::Value::Undefined => return Ok(Vec::new()),
        regorus::Value::Set(s) => s.iter().collect(),
        regorus::Value::Array(a) => a.iter().collect(),
        other => {
            return Err(Decision::Shape {
                rule,
                message: format!(
                    "data.{DECISION_PACKAGE}.{rule} must be a set of strings, not {}",
                    to_json(other)
                ),
            })
        }
    };
    let mut out: Vec<String> = items
        .into_iter()
        .map(|v| match v {
            regorus::Value::String(s) => s.to_string(),
            other => to_json(other),
        })
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// The approver role and team from `data.pave.approvers`; an operator of any
/// team when it is not declared or undefined.
fn approvers(engine: &mut regorus::Engine, declared: bool) -> Result<(String, Option<String>), Decision> {
    let default = || (DEFAULT_APPROVER_ROLE.to_string(), None);
    if !declared {
        return Ok(default());
    }
    let value = engine.eval_rule(format!("data.{DECISION_PACKAGE}.{APPROVERS}"))?;
    if value == regorus::Value::Undefined {
        return Ok(default());
    }
    let json = serde_json::to_value(&value).unwrap_or(Json::Null);
    let shape = || Decision::Shape {
        rule: APPROVERS,
        message: format!(
            "data.{DECISION_PACKAGE}.{APPROVERS} must be an object like \
             {{\"role\": \"operator\", \"team\": null}}, not {json}"
        ),
    };
    let Some(obj) = json.as_object() else {
        return Err(shape());
    };
    let role = match obj.get("role") {
        None | Some(Json::Null) => DEFAULT_APPROVER_ROLE.to_string(),
        Some(Json::String(r)) => r.clone(),
        Some(_) => return Err(shape()),
    };
    let team = match obj.get("team") {
        None | Some(Json::Null) => None,
        Some(Json::String(t)) => Some(t.clone()),
        Some(_) => return Err(shape()),
    };
    Ok((role, team))
}

fn to_json(v: &regorus::Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| format!("{v:?}"))
}

/// Whether module `module` declares rule `rule` (relative to its package).
fn declares(engine: &regorus::Engine, module: &str, rule: &str) -> bool {
    engine.has_declared_rule_rooted_at(module, rule).unwrap_or(false)
}

/// The distinct words `test_...` in `source` not followed by `(`: candidates
/// for test rules, confirmed against the parsed module.
fn test_candidates(source: &str) -> Vec<&str> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out: Vec<&str> = Vec::new();
    let mut rest = source;
    let mut prev: Option<char> = None;
    while let Some(i) = rest.find(TEST_PREFIX) {
        let before = rest[..i].chars().next_back().or(if i == 0 { prev } else { None });
        let tail = &rest[i..];
        let len = tail.find(|c: char| !is_ident(c)).unwrap_or(tail.len());
        let word = &tail[..len];
        // A word followed by `(` is a function (or a call): not a test.
        let function = tail[len..].trim_start().starts_with('(');
        if !before.is_some_and(is_ident) && !function && !out.contains(&word) {
            out.push(word);
        }
        prev = word.chars().next_back();
        rest = &tail[len..];
    }
    out
}

/// `data.a.b`, with bracket notation for components that are not identifiers.
fn rule_path(components: &[String]) -> String {
    let mut path = String::from("data");
    for c in components {
        let ident = c
            .chars()
            .next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
            && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if ident {
            path.push('.');
            path.push_str(c);
        } else {
            path.push_str(&format!("[{}]", Json::String(c.clone())));
        }
    }
    path
}

/// A compile error in `module` (regorus names the file it found it in).
fn compile_error(module: &str, e: &anyhow::Error) -> PolicyError {
    let r = Report::parse(&format!("{e:#}"));
    PolicyError::Compile {
        module: r.file.clone().unwrap_or_else(|| module.to_string()),
        message: r.at_line(),
    }
}

/// An error found after every module was added: regorus names the file.
fn load_error(e: &anyhow::Error) -> PolicyError {
    let r = Report::parse(&format!("{e:#}"));
    PolicyError::Compile {
        module: r.file.clone().unwrap_or_else(|| "policy set".into()),
        message: r.at_line(),
    }
}

/// What the load-time check evaluates: a production deploy as the engine
/// builds it, the same while it is being approved, and a regulated exec.
fn sample_inputs() -> [Json; 3] {
    let deploy = json!({
        "actor": {"user": "alice", "teams": ["payments"], "role": "developer",
                  "roles": {"payments-prod": "developer", "*": "viewer"}},
        "action": {"kind": "deploy", "input": {"name": "payments", "replicas": 3, "env": {"FEATURE_X": "1"}},
                   "objects": ["workload/payments-prod/payments"], "object_count": 1,
                   "steps": ["apply revision", "wait until ready", "retire previous revision"]},
        "environment": {"name": "payments-prod", "target": "local", "labels": {"tier": "production"}},
        "approval": null,
        "time_ms": 1796347500000u64
    });
    let mut approved = deploy.clone();
    approved["approval"] = json!({"by": "bob", "amended": true});
    let mut exec = deploy.clone();
    exec["action"] = json!({"kind": "exec", "input": {"workload": "payments", "command": ["sh"]},
                            "objects": ["workload/payments-prod/payments"], "object_count": 1, "steps": ["exec"]});
    exec["environment"]["labels"]["regulated"] = json!("true");
    [deploy, approved, exec]
}

/// The built-in policy pack: `policies/*.rego` of this crate, named `builtin/NAME.rego`.
pub fn default_pack() -> Vec<Module> {
    [
        ("production.rego", include_str!("../policies/production.rego")),
        ("regulated.rego", include_str!("../policies/regulated.rego")),
        ("limits.rego", include_str!("../policies/limits.rego")),
        ("pave_test.rego", include_str!("../policies/pave_test.rego")),
    ]
    .into_iter()
    .map(|(name, source)| Module {
        name: format!("builtin/{name}"),
        source: source.to_string(),
    })
    .collect()
}

/// Every `*.rego` file directly in `dir`, sorted by path; each module is named by its path.
pub fn load_dir(dir: &Path) -> Result<Vec<Module>, PolicyError> {
    let io = |path: &Path, e: std::io::Error| PolicyError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        if path.extension().is_some_and(|x| x == "rego") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let source = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            Ok(Module {
                name: path.display().to_string(),
                source,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
