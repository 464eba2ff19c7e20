//! The command line: one clap definition per verb group, and the dispatcher.

mod actions;
mod agent;
mod approvals;
mod audit;
mod blueprints;
mod cluster;
mod env;
mod incidents;
mod kubeconfig;
mod login;
mod manifest;
mod people;
mod policy;
mod resources;
mod run;
mod secrets;
mod targets;
mod workloads;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit;

/// pave: the execution internal developer platform.
#[derive(Debug, Parser)]
#[command(name = "pave", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Output format of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// For people.
    #[default]
    Table,
    /// For scripts.
    Json,
    /// For people who like YAML.
    Yaml,
}

/// Where the server is and who we are.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server URL (default: the saved login, else http://127.0.0.1:7860).
    #[arg(long, env = "PAVE_SERVER", global = true)]
    pub server: Option<String>,
    /// API token (default: the saved login).
    #[arg(long, env = "PAVE_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table, global = true)]
    pub output: Format,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane.
    Serve(ServeArgs),
    /// Run a command once on a target, as a `job` action.
    Run(run::RunArgs),
    /// Provision a resource (postgres, redis) in an environment.
    Provision(resources::ProvisionArgs),
    /// List, inspect, repair and delete resources.
    #[command(subcommand)]
    Resources(resources::ResourcesCmd),
    /// Deploy a new revision of a workload (a rollout).
    Deploy(workloads::DeployArgs),
    /// Change a workload's replica count (no new revision).
    Scale(workloads::ScaleArgs),
    /// Make an earlier revision current again (default: the previous one).
    Rollback(workloads::RollbackArgs),
    /// Replace every replica with a fresh one, rolling (a new revision of the same spec).
    Restart(workloads::RestartArgs),
    /// Run a command in a workload's environment; exits with its exit code.
    Exec(workloads::ExecArgs),
    /// Show the last lines of a workload's output.
    Logs(workloads::LogsArgs),
    /// List, inspect and delete workloads.
    #[command(subcommand)]
    Workloads(workloads::WorkloadsCmd),
    /// Show objects of a Kubernetes environment: `pave get deployments --env E`.
    Get(cluster::GetArgs),
    /// Server-side apply objects to a Kubernetes environment (an action; undo restores them).
    Apply(cluster::ApplyArgs),
    /// Change one object of a Kubernetes environment, in $EDITOR or with --patch (an action).
    Edit(cluster::EditArgs),
    /// Delete one object of a Kubernetes environment (an action; undo re-creates it).
    Delete(cluster::DeleteArgs),
    /// Take a Deployment pave did not make under management: its spec becomes revision 1, nothing restarts.
    Adopt(cluster::AdoptArgs),
    /// Show how a workload's live Deployment differs from what pave applied (exit 1 when it drifted).
    Diff(cluster::DiffArgs),
    /// Helm releases in a Kubernetes environment.
    #[command(subcommand)]
    Helm(cluster::HelmCmd),
    /// Inspect and steer actions.
    #[command(subcommand)]
    Actions(actions::ActionsCmd),
    /// Add, list, inspect and remove targets; revoke their agents.
    #[command(subcommand)]
    Targets(targets::TargetsCmd),
    /// Serve a target from this host: dial out to the control plane and execute its commands.
    Agent(agent::AgentArgs),
    /// Create, list, update, clone and delete environments.
    #[command(subcommand)]
    Env(env::EnvCmd),
    /// List, show and apply blueprints (golden paths with typed parameters).
    #[command(subcommand)]
    Blueprint(blueprints::BlueprintCmd),
    /// List, approve (with an amendment) and reject actions that policy held.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCmd),
    /// List, apply, evaluate and test Rego policies.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// What the detectors found: evidence, root cause, proposals; apply or dismiss.
    #[command(subcommand)]
    Incidents(incidents::IncidentsCmd),
    /// Set, list and delete secrets (sealed in the vault; values never shown).
    #[command(subcommand)]
    Secrets(secrets::SecretsCmd),
    /// Create and list users.
    #[command(subcommand)]
    Users(people::UsersCmd),
    /// Create teams and manage their members.
    #[command(subcommand)]
    Teams(people::TeamsCmd),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Tokens(people::TokensCmd),
    /// Bind roles (viewer, developer, operator, admin) to users and teams, per environment.
    #[command(subcommand)]
    Roles(people::RolesCmd),
    /// Read and verify the audit trail.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Save a server URL and token for later commands.
    Login(login::LoginArgs),
    /// Print the version of this binary and of its agent protocol.
    Version(login::VersionArgs),
    /// Run pave's demo HTTP service (reads PORT, DATABASE_URL, REDIS_URL; serves /healthz).
    Demo,
    /// Supervise one replica of a local workload (started by the local target, not by people).
    #[command(hide = true)]
    Shim {
        /// The replica's spec file.
        spec: PathBuf,
    },
}

/// `pave serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the API listener.
    #[arg(long, env = "PAVE_LISTEN", default_value = "127.0.0.1:7860")]
    pub listen: SocketAddr,
    /// Where pave keeps its database, keys and work directories.
    #[arg(long, env = "PAVE_DATA_DIR", default_value = "./pave-data")]
    pub data_dir: PathBuf,
    /// `postgres://…` to use PostgreSQL; default a SQLite file in the data directory.
    #[arg(long, env = "PAVE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "PAVE_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
    /// Actions run at once.
    #[arg(long, env = "PAVE_WORKERS", default_value_t = 64)]
    pub workers: usize,
    /// How often ready resources are checked for health.
    #[arg(long, env = "PAVE_HEALTH_EVERY", default_value = "10s", value_parser = humantime::parse_duration)]
    pub health_every: Duration,
    /// A directory of blueprint files (`*.yaml`, `*.yml`, `*.json`) to offer besides the built-in ones.
    #[arg(long, env = "PAVE_BLUEPRINTS")]
    pub blueprints: Option<PathBuf>,
    /// A directory of Rego policy modules (`*.rego`) to add to the built-in pack.
    #[arg(long, env = "PAVE_POLICIES")]
    pub policies: Option<PathBuf>,
    /// How long a remediation must hold (its detector quiet) before its incident is resolved.
    #[arg(long, env = "PAVE_VERIFY_WINDOW", default_value = "10s", value_parser = humantime::parse_duration)]
    pub verify_window: Duration,
    /// How often the remediation sweep looks at every workload and resource
    /// (the bound on crash → incident latency).
    #[arg(long, env = "PAVE_REMEDIATION_EVERY", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub remediation_every: Duration,
    /// How long an action may wait for approval before it is rejected.
    #[arg(long, env = "PAVE_APPROVAL_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub approval_ttl: Duration,
    /// Address of the agent listener (always TLS; remote agents dial in here).
    #[arg(long, env = "PAVE_AGENT_LISTEN", default_value = "127.0.0.1:7861")]
    pub agent_listen: SocketAddr,
    /// The agent listener's certificate chain (PEM); default: a CA and a
    /// certificate generated under `<data-dir>/tls/` (`ca.pem`).
    #[arg(long, env = "PAVE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, env = "PAVE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// More names or addresses for the generated certificate (besides
    /// localhost, 127.0.0.1, ::1, the host name and the listen address).
    #[arg(long = "tls-san", env = "PAVE_TLS_SANS", value_delimiter = ',')]
    pub tls_sans: Vec<String>,
    /// A step whose remote agent stays away this long is `interrupted`.
    #[arg(long, env = "PAVE_AGENT_LOST_AFTER", default_value = "60s", value_parser = humantime::parse_duration)]
    pub agent_lost_after: Duration,
    /// On SIGTERM, how long running steps may take to finish.
    #[arg(long, env = "PAVE_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

pub async fn dispatch(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Serve(args) => match crate::serve::run(args).await {
            Ok(()) => Ok(exit::OK),
            Err(e) => Err(e),
        },
        Command::Run(args) => run::run(args).await,
        Command::Actions(cmd) => actions::run(cmd).await,
        Command::Audit(cmd) => audit::run(cmd).await,
        Command::Approvals(cmd) => approvals::run(cmd).await,
        Command::Secrets(cmd) => secrets::run(cmd).await,
        Command::Incidents(cmd) => incidents::run(cmd).await,
        Command::Policy(cmd) => policy::run(cmd).await,
        Command::Users(cmd) => people::users(cmd).await,
        Command::Teams(cmd) => people::teams(cmd).await,
        Command::Tokens(cmd) => people::tokens(cmd).await,
        Command::Roles(cmd) => people::roles(cmd).await,
        Command::Env(cmd) => env::run(cmd).await,
        Command::Targets(cmd) => targets::run(cmd).await,
        Command::Agent(args) => agent::run(args).await,
        Command::Blueprint(cmd) => blueprints::run(cmd).await,
        Command::Provision(args) => resources::provision(args).await,
        Command::Resources(cmd) => resources::run(cmd).await,
        Command::Deploy(args) => workloads::deploy(args).await,
        Command::Scale(args) => workloads::scale(args).await,
        Command::Rollback(args) => workloads::rollback(args).await,
        Command::Exec(args) => workloads::exec(args).await,
        Command::Restart(args) => workloads::restart(args).await,
        Command::Logs(args) => workloads::logs(args).await,
        Command::Workloads(cmd) => workloads::run(cmd).await,
        Command::Get(args) => cluster::get(args).await,
        Command::Apply(args) => cluster::apply(args).await,
        Command::Edit(args) => cluster::edit(args).await,
        Command::Delete(args) => cluster::delete(args).await,
        Command::Helm(cmd) => cluster::helm(cmd).await,
        Command::Diff(args) => cluster::diff(args).await,
        Command::Adopt(args) => cluster::adopt(args).await,
        Command::Login(args) => login::login(args).await,
        Command::Version(args) => login::version(args).await,
        // Handled in main, before any async runtime exists: the shim forks and
        // owns its signals.
        Command::Shim { .. } | Command::Demo => Ok(exit::USAGE),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let code = crate::client::exit_code_of(&e);
            eprintln!("error: {e:#}");
            code
        }
    }
}

/// A log line as the API returns it.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
pub struct LogLineView {
    pub seq: i64,
    pub step: i64,
    pub stream: String,
    pub time: i64,
    pub line: String,
}

/// `--wait` and its display, shared by every mutating verb.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Follow the action until it ends, showing steps and log lines; exit with its outcome.
    #[arg(long)]
    pub wait: bool,
}

/// After a mutating request: print the action (or follow it with --wait) and
/// pick the exit code.
pub async fn finish_mutation(
    client: &crate::client::Client,
    action: pave_core::Action,
    wait: bool,
    format: Format,
) -> anyhow::Result<i32> {
    finish_mutation_after(client, action, wait, format, 0).await
}

/// [`finish_mutation`] for an action whose log lines up to `after` were seen already.
pub async fn finish_mutation_after(
    client: &crate::client::Client,
    action: pave_core::Action,
    wait: bool,
    format: Format,
    after: i64,
) -> anyhow::Result<i32> {
    if !wait {
        if !crate::output::structured(format, &action)? {
            println!("action {} {}", action.id, action.state);
        }
        return Ok(if action.state.is_terminal() {
            exit::for_state(action.state)
        } else {
            exit::OK
        });
    }
    let table = format == Format::Table;
    let opts = crate::watch::WatchOpts {
        logs: table,
        progress: table && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        after,
    };
    let done = crate::watch::follow(client, &action.id, opts).await?;
    if !crate::output::structured(format, &done)? {
        crate::watch::summary(&done);
    }
    Ok(exit::for_state(done.state))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        // clap checks names, flags and conflicts only when a command is built:
        // this catches at test time what would otherwise panic for a user.
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
