//! `pave users …`, `pave teams …`, `pave tokens …`, `pave roles …`.

use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::ClientArgs;
use crate::client::Client;
use crate::{exit, output};

#[derive(Debug, Subcommand)]
pub enum UsersCmd {
    /// Create a user (no role until one is bound: `pave roles bind`).
    Create(NameArgs),
    /// List users with their teams and roles.
    List(ListArgs),
}

#[derive(Debug, Subcommand)]
pub enum TeamsCmd {
    /// Create a team.
    Create(NameArgs),
    /// List teams and their members.
    List(ListArgs),
    /// Add a user to a team.
    AddMember(MemberArgs),
    /// Remove a user from a team.
    RemoveMember(MemberArgs),
}

#[derive(Debug, Subcommand)]
pub enum TokensCmd {
    /// Create a token for a user; its secret is printed once (`-o json`: the `token` field).
    Create(TokenArgs),
    /// List tokens (never their secrets).
    List(ListArgs),
    /// Revoke a token: it stops working at once.
    Revoke(IdArgs),
}

#[derive(Debug, Subcommand)]
pub enum RolesCmd {
    /// Give a user (or `--team`) a role in an environment (`--env`) or everywhere.
    Bind(BindArgs),
    /// Take a user's (or `--team`'s) role in an environment (or everywhere) away.
    Unbind(UnbindArgs),
    /// List role bindings.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Name (lower-case letters, digits, '-').
    pub name: String,
}

#[derive(Debug, Args)]
pub struct MemberArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Team.
    pub team: String,
    /// User.
    pub user: String,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Token id.
    pub id: String,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The user the token acts as.
    #[arg(long)]
    pub user: String,
    /// A name for people.
    #[arg(long)]
    pub name: Option<String>,
    /// Lifetime (e.g. `30d`, `12h`); default: no expiry.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expires: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct BindArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// USER ROLE, or ROLE with --team.
    #[arg(num_args = 1..=2, required = true, value_name = "[USER] ROLE")]
    pub args: Vec<String>,
    /// Bind the role to this team instead of a user.
    #[arg(long)]
    pub team: Option<String>,
    /// Only in this environment (default: every environment).
    #[arg(long)]
    pub env: Option<String>,
}

#[derive(Debug, Args)]
pub struct UnbindArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The user (leave out with --team).
    pub user: Option<String>,
    /// A team instead of a user.
    #[arg(long)]
    pub team: Option<String>,
    /// The environment of the binding (default: the one for every environment).
    #[arg(long)]
    pub env: Option<String>,
}

fn roles_text(roles: &Value) -> String {
    roles
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(env, r)| format!("{}@{env}", r.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn list_text(v: &Value) -> String {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

fn time_text(v: &Value) -> String {
    v.as_i64().map(output::age).unwrap_or_else(|| "-".into())
}

fn usage(message: &str) -> anyhow::Error {
    crate::client::ClientError::Usage(message.to_string()).into()
}

pub async fn users(cmd: UsersCmd) -> anyhow::Result<i32> {
    match cmd {
        UsersCmd::Create(a) => {
            let client = Client::from_args(&a.client)?;
            let u: Value = client
                .post("/api/v1/users", &json!({ "name": a.name }), &[])
                .await?;
            if !output::structured(a.client.output, &u)? {
                println!("user {} created", a.name);
            }
        }
        UsersCmd::List(a) => {
            let client = Client::from_args(&a.client)?;
            let list: Vec<Value> = client.get("/api/v1/users").await?;
            if !output::structured(a.client.output, &list)? {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|u| {
                        vec![
                            u["name"].as_str().unwrap_or_default().to_string(),
                            list_text(&u["teams"]),
                            roles_text(&u["roles"]),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "TEAMS", "ROLES"], &rows);
            }
        }
    }
    Ok(exit::OK)
}

pub async fn teams(cmd: TeamsCmd) -> anyhow::Result<i32> {
    match cmd {
        TeamsCmd::Create(a) => {
            let client = Client::from_args(&a.client)?;
            let t: Value = client
                .post("/api/v1/teams", &json!({ "name": a.name }), &[])
                .await?;
            if !output::structured(a.client.output, &t)? {
                println!("team {} created", a.name);
            }
        }
        TeamsCmd::List(a) => {
            let client = Client::from_args(&a.client)?;
            let list: Vec<Value> = client.get("/api/v1/teams").await?;
            if !output::structured(a.client.output, &list)? {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|t| {
                        vec![
                            t["name"].as_str().unwrap_or_default().to_string(),
                            list_text(&t["members"]),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "MEMBERS"], &rows);
            }
        }
        TeamsCmd::AddMember(a) => {
            let client = Client::from_args(&a.client)?;
            client
                .post_empty(
                    &format!("/api/v1/teams/{}/members", a.team),
                    &json!({ "user": a.user }),
                )
                .await?;
            println!("{} is in team {}", a.user, a.team);
        }
        TeamsCmd::RemoveMember(a) => {
            let client = Client::from_args(&a.client)?;
            client
                .delete(&format!("/api/v1/teams/{}/members/{}", a.team, a.user))
                .await?;
            println!("{} left team {}", a.user, a.team);
        }
    }
    Ok(exit::OK)
}

pub async fn tokens(cmd: TokensCmd) -> anyhow::Result<i32> {
    match cmd {
        TokensCmd::Create(a) => {
            let client = Client::from_args(&a.client)?;
            let mut body = json!({ "user": a.user });
            if let Some(n) = a.name {
                body["name"] = json!(n);
            }
            if let Some(d) = a.expires {
                body["expires_in_secs"] = json!(d.as_secs().max(1));
            }
            let t: Value = client.post("/api/v1/tokens", &body, &[]).await?;
            if !output::structured(a.client.output, &t)? {
                println!(
                    "token {} for {} (shown once; keep it secret):\n  {}",
                    t["id"].as_str().unwrap_or_default(),
                    a.user,
                    t["token"].as_str().unwrap_or_default()
                );
            }
        }
        TokensCmd::List(a) => {
            let client = Client::from_args(&a.client)?;
            let list: Vec<Value> = client.get("/api/v1/tokens").await?;
            if !output::structured(a.client.output, &list)? {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|t| {
                        let state = if !t["revoked_at"].is_null() {
                            "revoked".to_string()
                        } else if t["expires_at"]
                            .as_i64()
                            .is_some_and(|e| e <= pave_core::time::now_ms())
                        {
                            "expired".to_string()
                        } else {
                            "active".to_string()
                        };
                        vec![
                            t["id"].as_str().unwrap_or_default().to_string(),
                            t["user"].as_str().unwrap_or_default().to_string(),
                            t["name"].as_str().unwrap_or_default().to_string(),
                            state,
                            time_text(&t["created_at"]),
                        ]
                    })
                    .collect();
                output::table(&["ID", "USER", "NAME", "STATE", "AGE"], &rows);
            }
        }
        TokensCmd::Revoke(a) => {
            let client = Client::from_args(&a.client)?;
            client
                .post_empty(&format!("/api/v1/tokens/{}/revoke", a.id), &json!({}))
                .await?;
            println!("token {} revoked", a.id);
        }
    }
    Ok(exit::OK)
}

pub async fn roles(cmd: RolesCmd) -> anyhow::Result<i32> {
    match cmd {
        RolesCmd::Bind(a) => {
            let client = Client::from_args(&a.client)?;
            let (subject, role) = match (&a.team, a.args.as_slice()) {
                (Some(t), [role]) => (json!({ "team": t }), role.clone()),
                (None, [user, role]) => (json!({ "user": user }), role.clone()),
                (Some(_), _) => return Err(usage("with --team, give only the ROLE")),
                (None, _) => return Err(usage("give USER ROLE (or ROLE with --team TEAM)")),
            };
            let mut body = subject;
            body["role"] = json!(role);
            if let Some(e) = &a.env {
                body["env"] = json!(e);
            }
            let b: Value = client.post("/api/v1/role-bindings", &body, &[]).await?;
            if !output::structured(a.client.output, &b)? {
                let who = a.team.map_or_else(|| a.args[0].clone(), |t| format!("team {t}"));
                let place = a.env.unwrap_or_else(|| "every environment".into());
                println!("{who} is {role} in {place}");
            }
        }
        RolesCmd::Unbind(a) => {
            let client = Client::from_args(&a.client)?;
            let mut q = match (&a.user, &a.team) {
                (Some(u), None) => format!("user={u}"),
                (None, Some(t)) => format!("team={t}"),
                _ => return Err(usage("give a USER or --team TEAM")),
            };
            if let Some(e) = &a.env {
                q.push_str(&format!("&env={e}"));
            }
            client.delete(&format!("/api/v1/role-bindings?{q}")).await?;
            println!("role removed");
        }
        RolesCmd::List(a) => {
            let client = Client::from_args(&a.client)?;
            let list: Vec<Value> = client.get("/api/v1/role-bindings").await?;
            if !output::structured(a.client.output, &list)? {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|b| {
                        vec![
                            format!(
                                "{} {}",
                                b["subject"]["kind"].as_str().unwrap_or_default(),
                                b["subject"]["name"].as_str().unwrap_or_default()
                            ),
                            b["role"].as_str().unwrap_or_default().to_string(),
                            b["env"].as_str().unwrap_or("*").to_string(),
                        ]
                    })
                    .collect();
                output::table(&["SUBJECT", "ROLE", "ENV"], &rows);
            }
        }
    }
    Ok(exit::OK)
}
