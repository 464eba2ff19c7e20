//! `pave`: the control plane (`pave serve`) and the command-line client, in one binary.

mod blueprints;
mod cli;
mod client;
mod config;
mod exit;
mod output;
mod serve;
mod watch;

use clap::Parser;

/// Restores the default SIGPIPE action, so that `pave … | head` ends quietly
/// like other Unix tools instead of panicking on a closed pipe. Only for the
/// CLI: a server, an agent or a supervisor writing to a socket its peer reset
/// must get EPIPE, not die of the signal.
#[allow(unsafe_code)]
fn default_sigpipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler code of ours.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    // reqwest and sqlx both bring rustls; with two crypto providers compiled in,
    // one must be chosen before any TLS is used.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let long_running = matches!(
        args.command,
        cli::Command::Serve(_) | cli::Command::Agent(_) | cli::Command::Shim { .. } | cli::Command::Demo
    );
    if !long_running {
        default_sigpipe();
    }
    if let cli::Command::Shim { spec } = &args.command {
        std::process::exit(pave_targets::local::shim::run(spec));
    }
    if let cli::Command::Demo = &args.command {
        // The demo service owns its runtime and its signals, like its own binary.
        std::process::exit(i32::from(pave_demo::run()));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            std::process::exit(exit::ERROR);
        }
    };
    let code = runtime.block_on(cli::dispatch(args));
    // Background tasks (stream readers, the engine) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}
