//! `redis`: a redis-server of its own per resource, password-protected, on a
//! free loopback port, with append-only persistence so that a repair keeps its
//! data. Healthy means AUTH + PING answer.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::{alive, free_port, make_dir_for, port_in_use, run};
use crate::{ProviderError, Provisioned};

/// The redis-server this host runs.
pub(crate) fn program() -> PathBuf {
    bin()
}

fn bin() -> PathBuf {
    std::env::var_os("PAVE_REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/redis-server"))
}

fn conf(dir: &Path) -> PathBuf {
    dir.join("redis.conf")
}

fn configured_port(dir: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(conf(dir)).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("port "))
        .and_then(|p| p.trim().parse().ok())
}

fn pid(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("redis.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[allow(unsafe_code)]
fn terminate(pid: i32) {
    // SAFETY: kill(2) only signals.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

fn write_conf(dir: &Path, port: u16, password: &str) -> Result<(), ProviderError> {
    // The password is in a 0600 file, not on the command line where `ps` shows it.
    let text = format!(
        "port {port}\nbind 127.0.0.1\nprotected-mode yes\nrequirepass \"{password}\"\ndir {dir}\n\
         daemonize yes\npidfile {dir}/redis.pid\nlogfile {dir}/redis.log\nappendonly yes\nsave \"\"\n",
        dir = dir.display()
    );
    let path = conf(dir);
    std::fs::write(&path, text)
        .map_err(|e| ProviderError::Io(format!("could not write {}: {e}", path.display())))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ProviderError::Io(e.to_string()))
}

fn outputs(port: u16) -> BTreeMap<String, Value> {
    BTreeMap::from([
        ("host".to_string(), json!("127.0.0.1")),
        ("port".to_string(), json!(port)),
    ])
}

pub async fn create(dir: &Path, password: &str) -> Result<Provisioned, ProviderError> {
    let port = match configured_port(dir) {
        Some(p) if pid(dir).is_some_and(alive) => p,
        Some(p) => {
            let port = if port_in_use(p) { free_port()? } else { p };
            write_conf(dir, port, password)?;
            run(&bin(), &[&conf(dir).display().to_string()], None, None).await?;
            port
        }
        None => {
            make_dir_for(dir, None).await?;
            let port = free_port()?;
            write_conf(dir, port, password)?;
            run(&bin(), &[&conf(dir).display().to_string()], None, None).await?;
            port
        }
    };
    // redis-server daemonizes before it listens: wait for it.
    let mut last = None;
    for _ in 0..100 {
        match ping(port, password).await {
            Ok(()) => {
                return Ok(Provisioned {
                    outputs: outputs(port),
                    location: dir.display().to_string(),
                })
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
    let tail: Vec<&str> = log
        .lines()
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(ProviderError::Unhealthy(format!(
        "redis did not become ready ({}); its log ends: {}",
        last.map(|e| e.to_string()).unwrap_or_default(),
        tail.join(" / ")
    )))
}

/// AUTH + PING over RESP.
pub async fn ping(port: u16, password: &str) -> Result<(), ProviderError> {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let cmd = format!(
            "*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n*1\r\n$4\r\nPING\r\n",
            password.len()
        );
        s.write_all(cmd.as_bytes()).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 256];
        while !String::from_utf8_lossy(&buf).contains("\r\n+PONG\r\n") && buf.len() < 4096 {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.starts_with(b"-") {
                break;
            }
        }
        Ok::<String, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(3), attempt).await {
        Ok(Ok(reply)) if reply.starts_with("+OK\r\n+PONG") => Ok(()),
        Ok(Ok(reply)) => Err(ProviderError::Unhealthy(format!(
            "redis on port {port} answered `{}`",
            reply.lines().next().unwrap_or("").trim()
        ))),
        Ok(Err(e)) => Err(ProviderError::Unhealthy(format!("redis on port {port}: {e}"))),
        Err(_) => Err(ProviderError::Unhealthy(format!(
            "redis on port {port} did not answer within 3 s"
        ))),
    }
}

pub async fn check(dir: &Path, password: &str) -> Result<(), ProviderError> {
    let port =
        configured_port(dir).ok_or_else(|| ProviderError::Gone(format!("no redis in {}", dir.display())))?;
    ping(port, password).await
}

pub async fn stop(dir: &Path) {
    if let Some(p) = pid(dir).filter(|p| alive(*p)) {
        terminate(p);
        for _ in 0..100 {
            if !alive(p) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::warn!(pid = p, "redis did not stop within 5 s");
    }
}
