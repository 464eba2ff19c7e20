//! Running provider programs, as the `postgres` user where PostgreSQL needs it.

use std::path::Path;
use std::process::Stdio;

use tokio::process::Command;

use crate::ProviderError;

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A free port on 127.0.0.1.
pub fn free_port() -> Result<u16, ProviderError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ProviderError::Io(format!("no free loopback port: {e}")))
}

/// Whether something listens on 127.0.0.1:`port`.
pub fn port_in_use(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_err()
}

/// Runs `program` (as `user` when we are root), with `stdin` fed in, and returns stdout.
pub async fn run(
    program: &Path,
    args: &[&str],
    as_user: Option<&str>,
    stdin: Option<&str>,
) -> Result<String, ProviderError> {
    if !program.exists() {
        return Err(ProviderError::MissingProgram {
            program: program.display().to_string(),
            hint: "install it (Debian: apt-get install postgresql redis-server)".into(),
        });
    }
    let mut cmd = match as_user {
        Some(user) if is_root() => {
            let mut c = Command::new("runuser");
            c.arg("-u").arg(user).arg("--").arg(program);
            c
        }
        _ => Command::new(program),
    };
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Detached servers (pg_ctl start, redis --daemonize) must not die with pave.
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| ProviderError::Command(format!("could not run {}: {e}", program.display())))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use tokio::io::AsyncWriteExt;
        pipe.write_all(input.as_bytes())
            .await
            .map_err(|e| ProviderError::Command(format!("could not write to {}: {e}", program.display())))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| ProviderError::Command(format!("{} failed: {e}", program.display())))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        Err(ProviderError::Command(format!(
            "{} {} exited with {}: {}",
            program.file_name().and_then(|f| f.to_str()).unwrap_or("program"),
            args.first().copied().unwrap_or(""),
            out.status,
            tail.join(" / ")
        )))
    }
}

/// Makes `dir` (and parents) and hands it to `user` when we are root.
pub async fn make_dir_for(dir: &Path, user: Option<&str>) -> Result<(), ProviderError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| ProviderError::Io(format!("could not create {}: {e}", dir.display())))?;
    if let (Some(user), true) = (user, is_root()) {
        let status = Command::new("chown")
            .arg("-R")
            .arg(user)
            .arg(dir)
            .status()
            .await
            .map_err(|e| ProviderError::Io(format!("chown: {e}")))?;
        if !status.success() {
            return Err(ProviderError::Io(format!(
                "chown {user} {} failed",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Whether `pid` is a live process. A killed server can linger as a zombie
/// until its new parent reaps it; it no longer serves, so it counts as dead.
#[allow(unsafe_code)]
pub fn alive(pid: i32) -> bool {
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false);
    // SAFETY: signal 0 only checks that the process exists.
    pid > 1 && !zombie && unsafe { libc::kill(pid, 0) } == 0
}
