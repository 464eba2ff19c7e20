//! A tiny RESP client: AUTH (when there is a password), SELECT (when the URL
//! names a database other than 0) and PING, on a fresh connection each time.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::urls;

/// How long one whole check may take.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Where Redis is and how to log in, from `redis://[user[:password]@]host[:port][/db]`.
#[derive(Debug)]
pub struct Target {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
    db: Option<u32>,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = match url.split_once("://") {
            Some(("redis", rest)) => rest,
            Some(("rediss", _)) => return Err("TLS (rediss://) is not supported".into()),
            _ => return Err("expected redis://[user[:password]@]host[:port][/db]".into()),
        };
        let (user, password) = match urls::userinfo(url) {
            Some((user, password)) => (Some(user).filter(|u| !u.is_empty()), password),
            None => (None, None),
        };
        let hostpath = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let hostpath = hostpath.split_once('?').map_or(hostpath, |(h, _)| h);
        let (hostport, path) = hostpath.split_once('/').unwrap_or((hostpath, ""));
        let (host, port) = match hostport.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((h, p)) => (h, p.strip_prefix(':')),
                None => return Err("unclosed [ in host".into()),
            },
            None => match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            },
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        let port = match port {
            None | Some("") => 6379,
            Some(p) => p.parse().map_err(|_| format!("bad port {p:?}"))?,
        };
        let db = match path.trim_matches('/') {
            "" => None,
            d => Some(d.parse().map_err(|_| format!("bad database number {d:?}"))?),
        };
        Ok(Target {
            host: host.to_owned(),
            port,
            user,
            password: password.filter(|p| !p.is_empty()),
            db,
        })
    }
}

/// Connects, logs in and pings, within [`TIMEOUT`].
pub async fn check(t: &Target) -> Result<(), String> {
    match tokio::time::timeout(TIMEOUT, check_inner(t)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer from {}:{} within {}s",
            t.host,
            t.port,
            TIMEOUT.as_secs()
        )),
    }
}

async fn check_inner(t: &Target) -> Result<(), String> {
    let stream = TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(|e| format!("cannot connect to {}:{}: {e}", t.host, t.port))?;
    let mut conn = BufReader::new(stream);
    if let Some(password) = &t.password {
        let mut args = vec!["AUTH"];
        args.extend(t.user.as_deref());
        args.push(password);
        command(&mut conn, &args, "+OK")
            .await
            .map_err(|e| format!("AUTH failed: {e}"))?;
    }
    if let Some(db) = t.db.filter(|&d| d != 0) {
        command(&mut conn, &["SELECT", &db.to_string()], "+OK")
            .await
            .map_err(|e| format!("SELECT {db} failed: {e}"))?;
    }
    command(&mut conn, &["PING"], "+PONG")
        .await
        .map_err(|e| format!("PING failed: {e}"))
}

/// Sends one command as a RESP array of bulk strings; the reply's first line
/// must be `want`.
async fn command(conn: &mut BufReader<TcpStream>, args: &[&str], want: &str) -> Result<(), String> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.get_mut()
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut line = String::new();
    let n = (&mut *conn)
        .take(4096)
        .read_line(&mut line)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("connection closed by server".into());
    }
    let line = line.trim_end();
    if line == want {
        Ok(())
    } else if let Some(err) = line.strip_prefix('-') {
        Err(err.to_owned())
    } else {
        Err(format!("unexpected reply {line:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("redis://:pw@127.0.0.1:6380").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 6380));
        assert_eq!((t.user, t.password.as_deref(), t.db), (None, Some("pw"), None));
        let t = Target::parse("redis://app:pw@cache/0").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("cache", 6379));
        assert_eq!(t.user.as_deref(), Some("app"));
        assert_eq!(t.db, Some(0));
        let t = Target::parse("redis://[::1]:7000/2").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.db), ("::1", 7000, Some(2)));
        assert!(Target::parse("redis://h:port").is_err());
        assert!(Target::parse("http://h").is_err());
    }
}
