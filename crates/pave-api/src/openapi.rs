//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::dto::*;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "pave", description = "pave's REST API: actions, their steps and logs, and the audit trail."),
    paths(
        crate::actions::create, crate::actions::list, crate::actions::get, crate::actions::logs,
        crate::actions::retry, crate::actions::cancel, crate::actions::rollback,
        crate::events::stream, crate::audit::list,
        crate::environments::create, crate::environments::list, crate::environments::get,
        crate::environments::update, crate::environments::delete,
        crate::environments::clone, crate::environments::status,
        crate::blueprints::list, crate::blueprints::get, crate::blueprints::create,
        crate::environments::resources, crate::environments::resource,
        crate::environments::workloads, crate::environments::workload, crate::environments::workload_logs,
        crate::audit::verify, crate::auth::whoami,
        crate::incidents::list, crate::incidents::get, crate::incidents::apply, crate::incidents::dismiss, crate::incidents::keep,
        crate::policies::list, crate::policies::apply, crate::policies::delete, crate::policies::eval,
        crate::policies::test,
        crate::secrets::list, crate::secrets::set, crate::secrets::delete, crate::secrets::rotate,
        crate::approvals::list, crate::approvals::get, crate::approvals::approve, crate::approvals::reject,
        crate::people::list_users, crate::people::create_user, crate::people::list_teams,
        crate::people::create_team, crate::people::add_member, crate::people::remove_member,
        crate::people::list_tokens, crate::people::create_token, crate::people::revoke_token,
        crate::people::list_bindings, crate::people::bind, crate::people::unbind,
        crate::targets::list, crate::targets::add, crate::targets::get, crate::targets::remove,
        crate::targets::revoke, crate::targets::enrollment, crate::targets::discover,
        crate::cluster::list, crate::cluster::get, crate::cluster::dry_run,
        crate::cluster::helm_list, crate::cluster::helm_status, crate::cluster::helm_history,
        crate::cluster::drift,
    ),
    components(schemas(crate::environments::EnvironmentDto, crate::environments::CreateEnvironment,
        crate::environments::UpdateEnvironment, crate::environments::WorkloadDto,
        crate::environments::CloneEnvironment, crate::environments::EnvironmentStatus,
        crate::people::NewName, crate::people::UserDto, crate::people::NewMember, crate::people::TokenDto,
        crate::people::NewToken, crate::people::BindingRequest,
        crate::approvals::ApproveBody, crate::approvals::RejectBody,
        crate::incidents::ApplyProposal, crate::secrets::SecretDto, crate::secrets::SecretValue, crate::secrets::Rotation,
        crate::policies::PolicyModule, crate::policies::PolicySource, crate::policies::EvalRequest,
        crate::policies::EvalResult, crate::targets::NewTarget, crate::targets::NewEnrollment,
        crate::targets::AddedTarget, crate::cluster::DryRun, CreateAction, ActionPage, LogPage, LogLineDto, AuditPage, AuditVerification)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

/// The OpenAPI document as JSON.
pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub(crate) async fn document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(spec())
}
