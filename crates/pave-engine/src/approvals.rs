//! Approvals: an action policy held until someone else allows it. The
//! approver may amend the input (a JSON merge patch); the amended input is
//! planned and evaluated by policy again, and it is exactly what runs. The
//! approval record keeps the original input, the amendment, the reviewer and
//! the decision; the audit chain records them too.

use pave_core::action::{ActionError, ActionState};
use pave_core::plan::{self, merge_patch};
use pave_core::rbac::{Principal, Role};
use pave_core::time::now_ms;
use pave_core::{Action, AuditDraft, CoreError};
use pave_store::{ActionUpdate, ApprovalRecord, WriteOp};
use serde_json::{json, Value};

use crate::engine::Engine;
use crate::error::EngineError;
use crate::policy::{input_document, Decision};

fn audit(actor: &str, verb: &str, id: &str, summary: String, details: Value) -> WriteOp {
    WriteOp::Audit(AuditDraft {
        actor: actor.to_string(),
        verb: verb.to_string(),
        object: format!("action/{id}"),
        summary,
        details,
    })
}

impl Engine {
    /// The approval record of an action.
    pub async fn approval(&self, id: &str) -> Result<ApprovalRecord, EngineError> {
        self.store()
            .get_approval(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("an approval request for action {id}")))
    }

    /// Loads a pending approval that `who` may decide, expiring it if its time is up.
    async fn decidable(&self, id: &str, who: &Principal) -> Result<(Action, ApprovalRecord), EngineError> {
        let approval = self.approval(id).await?;
        let action = self
            .store()
            .get_action(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("action {id}")))?;
        if let Some(d) = &approval.decision {
            return Err(EngineError::Conflict(format!(
                "action {id} was {d} already (by {})",
                approval.decided_by.as_deref().unwrap_or("?")
            )));
        }
        action
            .state
            .check("decide on", &[ActionState::AwaitingApproval])?;
        if approval.expires_at <= now_ms() {
            self.expire(&approval).await?;
            return Err(EngineError::Conflict(format!(
                "the approval request for action {id} expired; ask again"
            )));
        }
        if who.user == approval.requested_by {
            return Err(EngineError::Forbidden(format!(
                "{} requested action {id} and cannot decide on it: another approver must",
                who.user
            )));
        }
        let role = Role::parse(&approval.approver_role)?;
        if !who.has(role, &approval.env) {
            return Err(pave_core::rbac::forbidden(
                who,
                role,
                Some(&approval.env),
                &format!("approve action {id}"),
            )
            .into());
        }
        if let Some(team) = &approval.approver_team {
            if !who.teams.contains(team) {
                return Err(EngineError::Forbidden(format!(
                    "approving action {id} needs a member of team {team}, and {} is not one",
                    who.user
                )));
            }
        }
        Ok((action, approval))
    }

    /// Approves a held action, with an optional amendment of its input.
    pub async fn approve(
        &self,
        id: &str,
        who: &Principal,
        amendment: Option<Value>,
        comment: Option<String>,
    ) -> Result<Action, EngineError> {
        let (action, approval) = self.decidable(id, who).await?;
        let mut ops = Vec::new();
        let mut details = json!({
            "reviewer": who.user,
            "comment": comment,
            "original_input": approval.original_input,
        });
        if let Some(patch) = &amendment {
            if !patch.is_object() {
                return Err(EngineError::Invalid(CoreError::InvalidInput(
                    "an amendment is a JSON object merged into the input (RFC 7386)".into(),
                )));
            }
            let amended = merge_patch(&approval.original_input, patch);
            let env = self
                .store()
                .get_environment(&action.env)
                .await?
                .ok_or_else(|| EngineError::NotFound(format!("environment `{}`", action.env)))?;
            // The amended input is planned and judged like a new request.
            let planned = if plan::EXPANDED_KINDS.contains(&action.kind.as_str()) {
                self.plan_expanded(&action.kind, &env, amended).await?
            } else {
                plan::plan(&action.kind, id, &env.name, amended)?
            };
            let requester = self.principal(&action.actor).await?;
            let doc = input_document(
                &requester,
                &action.kind,
                &env,
                &planned,
                Some(json!({ "by": who.user, "amended": true })),
            );
            match self.policy().evaluate(&doc) {
                Decision::Deny { reasons } => {
                    return Err(EngineError::Forbidden(format!(
                        "the amended input is denied by policy: {}",
                        reasons.join("; ")
                    )))
                }
                Decision::RequireApproval {
                    approver_role,
                    approver_team,
                    reasons,
                } => {
                    // This approval counts, if the approver holds what is asked now.
                    let role = Role::parse(&approver_role)?;
                    let team_ok = approver_team.as_ref().is_none_or(|t| who.teams.contains(t));
                    if !who.has(role, &env.name) || !team_ok {
                        return Err(EngineError::Forbidden(format!(
                            "the amended input needs approval by a {role}: {}",
                            reasons.join("; ")
                        )));
                    }
                }
                Decision::Allow => {}
            }
            details["amendment"] = patch.clone();
            details["amended_input"] = planned.input.clone();
            ops.push(WriteOp::ReplanAction {
                id: id.to_string(),
                input: planned.input,
                object: planned.object,
                steps: planned.steps,
            });
        }
        ops.push(WriteOp::DecideApproval {
            action_id: id.to_string(),
            decision: "approved".into(),
            by: who.user.clone(),
            comment: comment.clone(),
            amendment: amendment.clone(),
        });
        ops.push(WriteOp::UpdateAction {
            id: id.to_string(),
            expect: vec![ActionState::AwaitingApproval],
            set: ActionUpdate {
                state: Some(ActionState::Queued),
                ..Default::default()
            },
        });
        let summary = format!(
            "approved by {}{} → queued",
            who.user,
            if amendment.is_some() {
                " with an amendment"
            } else {
                ""
            }
        );
        ops.push(audit(&who.user, "action.approve", id, summary, details));
        self.inner.writer.write(ops).await?;
        self.changed(id);
        self.wake();
        self.load_action(id).await
    }

    /// Rejects a held action.
    pub async fn reject(&self, id: &str, who: &Principal, comment: String) -> Result<Action, EngineError> {
        if comment.trim().is_empty() {
            return Err(EngineError::Invalid(CoreError::InvalidInput(
                "a rejection needs a comment saying why".into(),
            )));
        }
        let (_, _) = self.decidable(id, who).await?;
        let error = ActionError {
            step: None,
            code: "rejected".into(),
            message: format!("rejected by {}: {comment}", who.user),
            next: vec![],
        };
        self.inner
            .writer
            .write(vec![
                WriteOp::DecideApproval {
                    action_id: id.to_string(),
                    decision: "rejected".into(),
                    by: who.user.clone(),
                    comment: Some(comment.clone()),
                    amendment: None,
                },
                WriteOp::UpdateAction {
                    id: id.to_string(),
                    expect: vec![ActionState::AwaitingApproval],
                    set: ActionUpdate {
                        state: Some(ActionState::Rejected),
                        error: Some(Some(error)),
                        ..Default::default()
                    },
                },
                audit(
                    &who.user,
                    "action.reject",
                    id,
                    format!("rejected by {}", who.user),
                    json!({ "reviewer": who.user, "comment": comment }),
                ),
            ])
            .await?;
        self.changed(id);
        self.load_action(id).await
    }

    /// Ends a request whose approval time ran out.
    async fn expire(&self, a: &ApprovalRecord) -> Result<(), EngineError> {
        let error = ActionError {
            step: None,
            code: "approval_expired".into(),
            message: "nobody approved it in time".into(),
            next: vec!["ask again: submit the same request".into()],
        };
        let r = self
            .inner
            .writer
            .write(vec![
                WriteOp::DecideApproval {
                    action_id: a.action_id.clone(),
                    decision: "expired".into(),
                    by: "system".into(),
                    comment: None,
                    amendment: None,
                },
                WriteOp::UpdateAction {
                    id: a.action_id.clone(),
                    expect: vec![ActionState::AwaitingApproval],
                    set: ActionUpdate {
                        state: Some(ActionState::Rejected),
                        error: Some(Some(error)),
                        ..Default::default()
                    },
                },
                audit(
                    "system",
                    "action.approval_expired",
                    &a.action_id,
                    "approval expired → rejected".into(),
                    json!({ "expires_at": a.expires_at }),
                ),
            ])
            .await;
        match r {
            // Decided meanwhile by someone else: nothing to expire.
            Err(pave_store::StoreError::Precondition { .. }) => {}
            other => {
                other?;
            }
        }
        self.changed(&a.action_id);
        Ok(())
    }

    /// Expires every pending approval whose time is up.
    pub(crate) async fn expire_due(&self) -> Result<(), EngineError> {
        let now = now_ms();
        for a in self.store().list_approvals(true).await? {
            if a.expires_at <= now {
                self.expire(&a).await?;
            }
        }
        Ok(())
    }
}
