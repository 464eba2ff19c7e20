//! Just enough URL handling for credentials: find them, decode them, hide them.

/// The `user:password` part of `scheme://user:password@host...`, split and
/// percent-decoded. `None` when the URL has no `@`.
pub fn userinfo(url: &str) -> Option<(String, Option<String>)> {
    let (_, rest) = url.split_once("://")?;
    let at = authority_end(rest)?;
    let info = &rest[..at];
    Some(match info.split_once(':') {
        Some((user, pw)) => (decode(user), Some(decode(pw))),
        None => (decode(info), None),
    })
}

/// Where the userinfo of `rest` (the URL after `scheme://`) ends: the last `@`
/// before any query string. Taking the last one keeps unencoded `@` and `/`
/// inside a password from hiding it.
fn authority_end(rest: &str) -> Option<usize> {
    let query = rest.find('?').unwrap_or(rest.len());
    rest[..query].rfind('@')
}

/// `url` with its password (and any `password=` query parameter) replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".to_owned();
    };
    let mut out = format!("{scheme}://");
    let rest = match authority_end(rest) {
        Some(at) => {
            match rest[..at].split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:***@")),
                None => out.push_str(&rest[..=at]),
            }
            &rest[at + 1..]
        }
        None => rest,
    };
    match rest.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(rest),
    }
    out
}

/// Percent-decoding (invalid escapes are kept as they are).
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Replaces every occurrence of the secrets in `text` with `***` (for error
/// messages, which should never contain them, but might).
pub fn scrub(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text.to_owned(), |t, s| t.replace(s.as_str(), "***"))
}

/// The password of `url` as written and as decoded, for [`scrub`].
pub fn secrets_of(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        if let Some(at) = authority_end(rest) {
            if let Some((_, raw)) = rest[..at].split_once(':') {
                out.push(raw.to_owned());
                out.push(decode(raw));
            }
        }
        if let Some((_, query)) = rest.split_once('?') {
            for kv in query.split('&') {
                if let Some((k, v)) = kv.split_once('=') {
                    if k.eq_ignore_ascii_case("password") {
                        out.push(v.to_owned());
                        out.push(decode(v));
                    }
                }
            }
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgresql://app:s3cret@db:5432/app"),
            "postgresql://app:***@db:5432/app"
        );
        assert_eq!(
            redact("redis://:pw@127.0.0.1:6379"),
            "redis://:***@127.0.0.1:6379"
        );
        assert_eq!(redact("redis://u:a/b@c@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("postgres://h/db?user=u&password=x"),
            "postgres://h/db?user=u&password=***"
        );
        assert_eq!(redact("nonsense"), "<not a URL>");
    }

    #[test]
    fn finds_credentials() {
        assert_eq!(
            userinfo("redis://user:p%40ss@h:1/0"),
            Some(("user".to_owned(), Some("p@ss".to_owned())))
        );
        assert_eq!(
            userinfo("redis://:pw@h"),
            Some((String::new(), Some("pw".to_owned())))
        );
        assert_eq!(userinfo("redis://h:1"), None);
        assert_eq!(
            scrub("bad p@ss and p%40ss", &secrets_of("redis://user:p%40ss@h")),
            "bad *** and ***"
        );
    }
}
