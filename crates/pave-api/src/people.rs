//! Users, teams, tokens and role bindings. Only admins reach these (see
//! [`crate::access`]); every change is audited.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use pave_core::names::validate_name;
use pave_core::rbac::{Binding, Role, Subject};
use pave_core::time::now_ms;
use pave_core::AuditDraft;
use pave_store::{TeamRecord, TokenRecord, UserRecord, WriteOp};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::auth::Actor;
use crate::error::{ApiError, Json, Path, Query};
use crate::AppState;

/// Longest token lifetime accepted.
const MAX_TOKEN_SECS: u64 = 366 * 24 * 3600;

fn audit(actor: &Actor, verb: &str, object: String, summary: String, details: serde_json::Value) -> WriteOp {
    WriteOp::Audit(AuditDraft {
        actor: actor.name().to_string(),
        verb: verb.to_string(),
        object,
        summary,
        details,
    })
}

fn invalid(e: pave_core::CoreError) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", e.to_string())
}

/// Body of `POST /api/v1/users` and `POST /api/v1/teams`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewName {
    /// DNS-label name.
    pub name: String,
}

/// A user as the API returns it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserDto {
    /// Name.
    pub name: String,
    /// Teams.
    pub teams: Vec<String>,
    /// Roles by environment (`*`: every environment), theirs and their teams'.
    #[schema(value_type = Object)]
    pub roles: std::collections::BTreeMap<String, Role>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
}

/// Lists users with their teams and roles.
#[utoipa::path(get, path = "/api/v1/users", responses((status = 200, body = Vec<UserDto>), (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub(crate) async fn list_users(State(state): State<AppState>) -> Result<Json<Vec<UserDto>>, ApiError> {
    let mut out = Vec::new();
    for UserRecord { name, created_at } in state.engine.store().list_users().await? {
        let p = state.engine.principal(&name).await?;
        out.push(UserDto {
            roles: p.roles(),
            teams: p.teams,
            name,
            created_at,
        });
    }
    Ok(Json(out))
}

/// Creates a user (who has no role until one is bound).
#[utoipa::path(post, path = "/api/v1/users", request_body = NewName,
    responses((status = 201, body = UserDto), (status = 401), (status = 403), (status = 409), (status = 422)),
    security(("bearer" = [])))]
pub(crate) async fn create_user(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Json(body): Json<NewName>,
) -> Result<(StatusCode, Json<UserDto>), ApiError> {
    validate_name("user", &body.name).map_err(invalid)?;
    state
        .engine
        .writer()
        .write(vec![
            WriteOp::InsertUser {
                name: body.name.clone(),
            },
            audit(
                &actor,
                "user.create",
                format!("user/{}", body.name),
                format!("user {} created", body.name),
                json!({}),
            ),
        ])
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(UserDto {
            name: body.name,
            teams: vec![],
            roles: Default::default(),
            created_at: now_ms(),
        }),
    ))
}

/// Lists teams with their members.
#[utoipa::path(get, path = "/api/v1/teams", responses((status = 200, body = Vec<Object>), (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub(crate) async fn list_teams(State(state): State<AppState>) -> Result<Json<Vec<TeamRecord>>, ApiError> {
    Ok(Json(state.engine.store().list_teams().await?))
}

/// Creates a team.
#[utoipa::path(post, path = "/api/v1/teams", request_body = NewName,
    responses((status = 201), (status = 401), (status = 403), (status = 409), (status = 422)), security(("bearer" = [])))]
pub(crate) async fn create_team(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Json(body): Json<NewName>,
) -> Result<(StatusCode, Json<TeamRecord>), ApiError> {
    validate_name("team", &body.name).map_err(invalid)?;
    state
        .engine
        .writer()
        .write(vec![
            WriteOp::InsertTeam {
                name: body.name.clone(),
            },
            audit(
                &actor,
                "team.create",
                format!("team/{}", body.name),
                format!("team {} created", body.name),
                json!({}),
            ),
        ])
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TeamRecord {
            name: body.name,
            members: vec![],
            created_at: now_ms(),
        }),
    ))
}

/// Body of `POST /api/v1/teams/{name}/members`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    /// User name.
    pub user: String,
}

/// Adds a user to a team.
#[utoipa::path(post, path = "/api/v1/teams/{name}/members", params(("name" = String, Path)), request_body = NewMember,
    responses((status = 204), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub(crate) async fn add_member(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(team): Path<String>,
    Json(body): Json<NewMember>,
) -> Result<StatusCode, ApiError> {
    state
        .engine
        .writer()
        .write(vec![
            WriteOp::AddTeamMember {
                team: team.clone(),
                user: body.user.clone(),
            },
            audit(
                &actor,
                "team.member.add",
                format!("team/{team}"),
                format!("{} joined team {team}", body.user),
                json!({ "user": body.user }),
            ),
        ])
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a user from a team.
#[utoipa::path(delete, path = "/api/v1/teams/{name}/members/{user}", params(("name" = String, Path), ("user" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub(crate) async fn remove_member(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path((team, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state
        .engine
        .writer()
        .write(vec![
            WriteOp::RemoveTeamMember {
                team: team.clone(),
                user: user.clone(),
            },
            audit(
                &actor,
                "team.member.remove",
                format!("team/{team}"),
                format!("{user} left team {team}"),
                json!({ "user": user }),
            ),
        ])
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A token as listed: never its secret (pave keeps only a hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenDto {
    /// Id.
    pub id: String,
    /// Name for people.
    pub name: String,
    /// The user it acts as.
    pub user: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// Milliseconds since the epoch.
    pub expires_at: Option<i64>,
    /// Milliseconds since the epoch.
    pub revoked_at: Option<i64>,
    /// The secret: only in the answer that created it, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl From<TokenRecord> for TokenDto {
    fn from(t: TokenRecord) -> Self {
        TokenDto {
            id: t.id,
            name: t.name,
            user: t.subject,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
            token: None,
        }
    }
}

/// Lists tokens.
#[utoipa::path(get, path = "/api/v1/tokens", responses((status = 200, body = Vec<TokenDto>), (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub(crate) async fn list_tokens(State(state): State<AppState>) -> Result<Json<Vec<TokenDto>>, ApiError> {
    let tokens = state.engine.store().list_tokens().await?;
    Ok(Json(tokens.into_iter().map(Into::into).collect()))
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// The user it acts as.
    pub user: String,
    /// A name for people (default: `token of USER`).
    #[serde(default)]
    pub name: Option<String>,
    /// Lifetime in seconds (default: no expiry; at most a year).
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

/// Creates a token; the answer carries its secret, once.
#[utoipa::path(post, path = "/api/v1/tokens", request_body = NewToken,
    responses((status = 201, body = TokenDto), (status = 401), (status = 403), (status = 404), (status = 422)),
    security(("bearer" = [])))]
pub(crate) async fn create_token(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Json(body): Json<NewToken>,
) -> Result<(StatusCode, Json<TokenDto>), ApiError> {
    if !state
        .engine
        .store()
        .list_users()
        .await?
        .iter()
        .any(|u| u.name == body.user)
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("user `{}` not found", body.user),
        ));
    }
    if let Some(s) = body.expires_in_secs {
        if s == 0 || s > MAX_TOKEN_SECS {
            return Err(invalid(pave_core::CoreError::InvalidInput(format!(
                "`expires_in_secs` must be between 1 and {MAX_TOKEN_SECS}"
            ))));
        }
    }
    let name = body.name.unwrap_or_else(|| format!("token of {}", body.user));
    if name.is_empty() || name.len() > 200 {
        return Err(invalid(pave_core::CoreError::InvalidInput(
            "a token name has 1 to 200 characters".into(),
        )));
    }
    let secret = pave_core::ids::new_secret_token();
    let now = now_ms();
    let record = TokenRecord {
        id: pave_core::ids::new_id(),
        name,
        subject: body.user.clone(),
        hash: crate::auth::hash_token(&secret),
        created_at: now,
        expires_at: body.expires_in_secs.map(|s| now + (s as i64) * 1000),
        revoked_at: None,
    };
    state
        .engine
        .writer()
        .write(vec![
            WriteOp::InsertToken(record.clone()),
            audit(
                &actor,
                "token.create",
                format!("token/{}", record.id),
                format!("token for {} created", body.user),
                json!({ "user": body.user, "expires_at": record.expires_at }),
            ),
        ])
        .await?;
    let mut dto = TokenDto::from(record);
    dto.token = Some(secret);
    Ok((StatusCode::CREATED, Json(dto)))
}

/// Revokes a token: it stops working at once.
#[utoipa::path(post, path = "/api/v1/tokens/{id}/revoke", params(("id" = String, Path)),
    responses((status = 204), (status = 401), (status = 403), (status = 404)), security(("bearer" = [])))]
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .engine
        .writer()
        .write(vec![
            WriteOp::RevokeToken { id: id.clone() },
            audit(
                &actor,
                "token.revoke",
                format!("token/{id}"),
                format!("token {id} revoked"),
                json!({}),
            ),
        ])
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists role bindings.
#[utoipa::path(get, path = "/api/v1/role-bindings", responses((status = 200, body = Vec<Object>), (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub(crate) async fn list_bindings(State(state): State<AppState>) -> Result<Json<Vec<Binding>>, ApiError> {
    Ok(Json(state.engine.store().list_bindings().await?))
}

/// Body of `POST /api/v1/role-bindings`; query of `DELETE`.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BindingRequest {
    /// A user…
    #[serde(default)]
    pub user: Option<String>,
    /// …or a team.
    #[serde(default)]
    pub team: Option<String>,
    /// `viewer`, `developer`, `operator` or `admin` (not used by `DELETE`).
    #[serde(default)]
    pub role: Option<String>,
    /// One environment (default: every environment).
    #[serde(default)]
    pub env: Option<String>,
}

fn subject_of(b: &BindingRequest) -> Result<Subject, ApiError> {
    match (&b.user, &b.team) {
        (Some(u), None) => Ok(Subject::User(u.clone())),
        (None, Some(t)) => Ok(Subject::Team(t.clone())),
        _ => Err(invalid(pave_core::CoreError::InvalidInput(
            "give exactly one of `user` and `team`".into(),
        ))),
    }
}

fn subject_text(s: &Subject) -> String {
    match s {
        Subject::User(u) => format!("user {u}"),
        Subject::Team(t) => format!("team {t}"),
    }
}

/// Gives a user or team a role, in one environment or all (replacing the role
/// they had there).
#[utoipa::path(post, path = "/api/v1/role-bindings", request_body = BindingRequest,
    responses((status = 201), (status = 401), (status = 403), (status = 404), (status = 422)), security(("bearer" = [])))]
pub(crate) async fn bind(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Json(body): Json<BindingRequest>,
) -> Result<(StatusCode, Json<Binding>), ApiError> {
    let subject = subject_of(&body)?;
    let role = Role::parse(body.role.as_deref().unwrap_or_default()).map_err(invalid)?;
    if let Some(env) = &body.env {
        if state.engine.store().get_environment(env).await?.is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("environment `{env}` not found"),
            ));
        }
    }
    let binding = Binding {
        subject,
        role,
        env: body.env.clone(),
    };
    let place = body.env.clone().unwrap_or_else(|| "every environment".into());
    state
        .engine
        .writer()
        .write(vec![
            WriteOp::PutBinding(binding.clone()),
            audit(
                &actor,
                "role.bind",
                format!("role/{}", role),
                format!("{} is {role} in {place}", subject_text(&binding.subject)),
                json!({ "subject": binding.subject, "role": role, "env": body.env }),
            ),
        ])
        .await?;
    Ok((StatusCode::CREATED, Json(binding)))
}

/// Removes a user's or team's role in one environment (or the one for all).
#[utoipa::path(delete, path = "/api/v1/role-bindings", params(BindingRequest),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 422)), security(("bearer" = [])))]
pub(crate) async fn unbind(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Query(q): Query<BindingRequest>,
) -> Result<StatusCode, ApiError> {
    let subject = subject_of(&q)?;
    if subject == Subject::User(pave_core::rbac::BUILTIN_ADMIN.into()) && q.env.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the built-in admin keeps its role (revoke its token instead)",
        ));
    }
    let place = q.env.clone().unwrap_or_else(|| "every environment".into());
    state
        .engine
        .writer()
        .write(vec![
            WriteOp::DeleteBinding {
                subject: subject.clone(),
                env: q.env.clone(),
            },
            audit(
                &actor,
                "role.unbind",
                "role/binding".into(),
                format!("{} has no role in {place} any more", subject_text(&subject)),
                json!({ "subject": subject, "env": q.env }),
            ),
        ])
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
