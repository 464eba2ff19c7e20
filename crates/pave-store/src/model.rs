//! Records and write operations that are the store's own (the domain records
//! themselves live in `pave-core`).

use std::collections::BTreeMap;

use pave_core::{Action, ActionError, ActionState, AuditDraft, StepState};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One write; see [`crate::Store::write`].
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// A new action with its steps. If its idempotency key is taken, the
    /// request stops here, is rolled back, and answers [`OpResult::Existing`].
    InsertAction(Box<Action>),
    /// Changes an action; with `expect` non-empty, only from those states
    /// (else the request fails with [`crate::StoreError::Precondition`]).
    UpdateAction {
        /// Action id.
        id: String,
        /// Allowed current states; empty for any.
        expect: Vec<ActionState>,
        /// What to change.
        set: ActionUpdate,
    },
    /// Changes a step.
    UpdateStep {
        /// Action id.
        action_id: String,
        /// Step index.
        idx: i64,
        /// What to change.
        set: StepUpdate,
    },
    /// Appends log lines.
    AppendLogs(Vec<LogLine>),
    /// Appends an audit event to the chain.
    Audit(AuditDraft),
    /// Stores a new API token.
    InsertToken(TokenRecord),
    /// Creates an environment (its target must exist).
    InsertEnvironment(Environment),
    /// Replaces an environment's labels.
    SetEnvironmentLabels {
        /// Environment name.
        name: String,
        /// The new labels.
        labels: BTreeMap<String, String>,
    },
    /// Removes an environment.
    DeleteEnvironment(String),
    /// Stores a sealed secret unless one of that name exists (so that a re-run
    /// step keeps the credential it was first given).
    PutSecretIfAbsent {
        /// Environment scope.
        env: String,
        /// Secret name.
        name: String,
        /// The sealed value (JSON of `pave_core::vault::Sealed`).
        sealed: String,
    },
    /// Removes the secrets of an environment whose names start with `prefix`.
    DeleteSecrets {
        /// Environment scope.
        env: String,
        /// Name prefix.
        prefix: String,
    },
    /// Creates or replaces a resource record.
    PutResource(Box<pave_core::resource::Resource>),
    /// Records a health check of a ready resource (ignored in any other lifecycle,
    /// so that a check racing an action does not overwrite it).
    SetResourceHealth {
        /// Environment.
        env: String,
        /// Resource name.
        name: String,
        /// `healthy`, or what is wrong.
        health: String,
    },
    /// Removes a resource record.
    DeleteResource {
        /// Environment.
        env: String,
        /// Resource name.
        name: String,
    },
    /// Stores a new revision of a workload (creating the workload record with
    /// no current revision); a revision that exists already is left as it is.
    InsertRevision(RevisionRecord),
    /// Makes `revision` the current revision of a workload (`None`: none serves).
    SetCurrentRevision {
        /// Environment.
        env: String,
        /// Workload name.
        name: String,
        /// The revision.
        revision: Option<i64>,
        /// Replicas to record with it (None leaves them as they are).
        replicas: Option<u32>,
    },
    /// Removes a workload record and its revisions.
    DeleteWorkload {
        /// Environment.
        env: String,
        /// Workload name.
        name: String,
    },
    /// Stores a blueprint version; one that exists already is a conflict.
    InsertBlueprint(BlueprintRecord),
    /// Creates a user; one of that name is a conflict.
    InsertUser {
        /// Name.
        name: String,
    },
    /// Creates a team; one of that name is a conflict.
    InsertTeam {
        /// Name.
        name: String,
    },
    /// Adds a user (who must exist) to a team (which must exist).
    AddTeamMember {
        /// Team.
        team: String,
        /// User.
        user: String,
    },
    /// Removes a user from a team; not a member is not found.
    RemoveTeamMember {
        /// Team.
        team: String,
        /// User.
        user: String,
    },
    /// Gives a role (replacing the subject's role in that environment).
    PutBinding(pave_core::rbac::Binding),
    /// Removes the subject's role in an environment; none is not found.
    DeleteBinding {
        /// Who.
        subject: pave_core::rbac::Subject,
        /// Where (None: the binding for every environment).
        env: Option<String>,
    },
    /// Revokes a token now; an unknown or revoked one is not found.
    RevokeToken {
        /// Token id.
        id: String,
    },
    /// Stores a secret, or a new version of it.
    PutSecret {
        /// Environment scope.
        env: String,
        /// Name (`secret/NAME` for people's secrets).
        name: String,
        /// The sealed value (JSON of `pave_core::vault::Sealed`).
        sealed: String,
    },
    /// Replaces a secret's sealed form without a new version (its data key
    /// wrapped by another master key).
    ResealSecret {
        /// Environment scope.
        env: String,
        /// Name.
        name: String,
        /// The sealed value.
        sealed: String,
    },
    /// Removes one secret; an unknown one is not found.
    DeleteSecret {
        /// Environment scope.
        env: String,
        /// Name.
        name: String,
    },
    /// Stores (or replaces) a policy module applied through the API.
    PutPolicy {
        /// Module name.
        name: String,
        /// Rego source.
        source: String,
        /// Who applied it.
        by: String,
    },
    /// Removes a policy module; an unknown one is not found.
    DeletePolicy {
        /// Module name.
        name: String,
    },
    /// Stores an incident (replacing the stored one of that id).
    PutIncident(IncidentRecord),
    /// Records that an action waits for approval.
    InsertApproval(ApprovalRecord),
    /// Records the decision on a pending approval; one decided already is a
    /// precondition failure.
    DecideApproval {
        /// The action.
        action_id: String,
        /// `approved`, `rejected` or `expired`.
        decision: String,
        /// Who decided (`system` for an expiry).
        by: String,
        /// Their comment.
        comment: Option<String>,
        /// The amendment they made to the input (a JSON merge patch).
        amendment: Option<Value>,
    },
    /// Creates a target; one of that name is a conflict.
    InsertTarget(TargetRecord),
    /// Removes a target with its enrollments and agent credentials; an unknown
    /// one is not found, one that environments run on is a precondition failure.
    DeleteTarget(String),
    /// Stores a single-use enrollment token (its hash) for a target, which
    /// must exist; a token of that hash is a conflict.
    InsertEnrollment {
        /// Target the agent will serve.
        target: String,
        /// SHA-256 of the token, hex.
        token_hash: String,
        /// Milliseconds since the epoch.
        created_at: i64,
        /// Milliseconds since the epoch; from then on it can no longer be redeemed.
        expires_at: i64,
    },
    /// Exchanges an enrollment token for an agent credential of its target:
    /// marks the enrollment used and inserts the credential, both or neither.
    /// An unknown (or revoked) token is not found; a used or expired one is a
    /// precondition failure.
    RedeemEnrollment {
        /// SHA-256 of the token, hex.
        token_hash: String,
        /// Now, in milliseconds since the epoch (the token must expire after it).
        at: i64,
        /// Id of the new credential.
        credential_id: String,
        /// SHA-256 of the new credential's secret, hex.
        secret_hash: String,
        /// What the agent says about itself (version, host, …).
        info: Value,
    },
    /// Revokes every credential of a target not revoked yet and removes its
    /// unused enrollments; an unknown target is not found.
    RevokeAgentCredentials {
        /// Target.
        target: String,
        /// Milliseconds since the epoch.
        at: i64,
    },
    /// Records that an agent was seen (and, given `info`, what it reported);
    /// an unknown credential is not found.
    TouchAgentCredential {
        /// Credential id.
        id: String,
        /// Milliseconds since the epoch.
        at: i64,
        /// Replaces the credential's info when given.
        info: Option<Value>,
    },
    /// Replaces an action's input, object and steps (an approver amended the
    /// input before anything ran).
    ReplanAction {
        /// The action.
        id: String,
        /// The new input.
        input: Value,
        /// The objects it locks.
        object: String,
        /// The new steps.
        steps: Vec<pave_core::Step>,
    },
}

/// An action waiting for (or past) approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// The action.
    pub action_id: String,
    /// Its environment.
    pub env: String,
    /// Who asked.
    pub requested_by: String,
    /// Why policy wants an approval.
    pub reasons: Vec<String>,
    /// The role an approver needs in the environment.
    pub approver_role: String,
    /// The team an approver must be in, if any.
    pub approver_team: Option<String>,
    /// The input as requested.
    pub original_input: Value,
    /// Milliseconds since the epoch after which it can no longer be approved.
    pub expires_at: i64,
    /// `approved`, `rejected`, `expired`, or None while pending.
    pub decision: Option<String>,
    /// Who decided.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<i64>,
    /// The reviewer's comment.
    pub comment: Option<String>,
    /// The reviewer's amendment (a JSON merge patch of the input).
    pub amendment: Option<Value>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
}

/// An incident: the columns the store filters on, and its whole document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentRecord {
    /// Id.
    pub id: String,
    /// Environment.
    pub env: String,
    /// `workload/ENV/NAME` or `resource/ENV/NAME`.
    pub object: String,
    /// Detector kind (`crash_loop`, `oom_killed`, `resource_unhealthy`).
    pub kind: String,
    /// `open`, `remediating`, `verifying`, `resolved`, `escalated`, `dismissed`.
    pub state: String,
    /// Milliseconds since the epoch.
    pub opened_at: i64,
    /// Milliseconds since the epoch.
    pub updated_at: i64,
    /// Evidence, analysis, proposals, timeline.
    pub doc: Value,
}

/// What is known of a secret without its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMeta {
    /// Environment scope.
    pub env: String,
    /// Name.
    pub name: String,
    /// Version, from 1, raised by every change.
    pub version: i64,
    /// Milliseconds since the epoch of its last change.
    pub created_at: i64,
}

/// A team and its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamRecord {
    /// Name.
    pub name: String,
    /// Member user names.
    pub members: Vec<String>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Name.
    pub name: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
}

/// A blueprint version registered through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlueprintRecord {
    /// Name.
    pub name: String,
    /// Version.
    pub version: i64,
    /// The blueprint as JSON.
    pub document: String,
    /// Who registered it.
    pub created_by: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
}

/// A workload record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadRecord {
    /// Environment.
    pub env: String,
    /// Name.
    pub name: String,
    /// The revision that serves (None until a first one became ready).
    pub current_revision: Option<i64>,
    /// Replicas it runs (None: as its current revision says).
    pub replicas: Option<u32>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// Milliseconds since the epoch.
    pub updated_at: i64,
}

/// One immutable revision of a workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionRecord {
    /// Environment.
    pub env: String,
    /// Workload name.
    pub name: String,
    /// Revision number, from 1.
    pub revision: i64,
    /// The spec (env values are templates, never resolved secrets).
    pub spec: Value,
    /// The action that created it.
    pub created_by: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
}

/// Fields of an action to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ActionUpdate {
    /// New state.
    pub state: Option<ActionState>,
    /// New error (`Some(None)` clears it).
    pub error: Option<Option<ActionError>>,
    /// New result.
    pub result: Option<Value>,
    /// New attempt count.
    pub attempt: Option<i64>,
    /// Set or clear the cancel request.
    pub cancel_requested: Option<bool>,
    /// Give up the lease and the object lock (the action stops being active).
    pub release: bool,
}

/// Fields of a step to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct StepUpdate {
    /// New state.
    pub state: Option<StepState>,
    /// New attempt count.
    pub attempt: Option<i64>,
    /// Start time (`Some(None)` clears it).
    pub started_at: Option<Option<i64>>,
    /// End time (`Some(None)` clears it).
    pub finished_at: Option<Option<i64>>,
    /// New output.
    pub output: Option<Value>,
    /// New error (`Some(None)` clears it).
    pub error: Option<Option<ActionError>>,
    /// New compensation (what undoes the step, once known).
    pub compensation: Option<Value>,
}

/// What one [`WriteOp`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// Applied.
    Done,
    /// The action was inserted.
    Inserted,
    /// An action with that idempotency key exists already: this one.
    Existing(String),
}

/// One line of an action's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Action id.
    pub action_id: String,
    /// Position in the action's log, from 1.
    pub seq: i64,
    /// Step index.
    pub step: i64,
    /// `stdout`, `stderr` or `system`.
    pub stream: String,
    /// Milliseconds since the epoch.
    pub time: i64,
    /// The text.
    pub line: String,
}

/// Filters for listing actions.
#[derive(Debug, Clone, Default)]
pub struct ActionFilter {
    /// Only in this state.
    pub state: Option<ActionState>,
    /// Only of this kind.
    pub kind: Option<String>,
    /// Only in this environment.
    pub env: Option<String>,
    /// Only older than this id (the cursor).
    pub before: Option<String>,
    /// At most this many.
    pub limit: i64,
}

/// A stored API token. Only the hash of the secret is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Token id.
    pub id: String,
    /// Name for people.
    pub name: String,
    /// Who the token acts as (`admin`).
    pub subject: String,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// Milliseconds since the epoch.
    pub expires_at: Option<i64>,
    /// Milliseconds since the epoch.
    pub revoked_at: Option<i64>,
}

/// Where workloads run: this host, or a cluster or host served by an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    /// Name.
    pub name: String,
    /// `local` or `kubernetes`.
    pub kind: String,
    /// Whether a remote agent (`pave agent`) serves it, rather than the
    /// control plane's embedded one.
    pub agent: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
}

/// A long-lived credential of a remote agent. The hash of its secret is never
/// part of the record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentCredentialRecord {
    /// Id.
    pub id: String,
    /// The target the agent serves.
    pub target: String,
    /// Milliseconds since the epoch (when its enrollment was redeemed).
    pub created_at: i64,
    /// Milliseconds since the epoch.
    pub revoked_at: Option<i64>,
    /// Milliseconds since the epoch of the agent's last contact.
    pub last_seen_at: Option<i64>,
    /// What the agent last reported about itself.
    pub info: Value,
}

/// A named place bound to one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// Name.
    pub name: String,
    /// Target it runs on.
    pub target: String,
    /// Labels policy reads.
    pub labels: BTreeMap<String, String>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// On a Kubernetes target: its namespace (`None`: the environment's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Environment {
    /// The Kubernetes namespace of the environment (on a cluster target).
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(&self.name)
    }
}
