//! The HTTP client the CLI verbs use.

use std::time::Duration;

use anyhow::Context;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::cli::ClientArgs;
use crate::exit;

/// Default server when nothing else says.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7860";

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made.
    #[error("cannot reach the pave server at {server}: {reason} (is `pave serve` running? set --server or PAVE_SERVER)")]
    Unreachable {
        /// The URL tried.
        server: String,
        /// Why.
        reason: String,
    },
    /// The server answered with an error.
    #[error("{message} ({status}, {code})")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// pave's error code.
        code: String,
        /// pave's message.
        message: String,
    },
    /// No token was given.
    #[error("no API token: pass --token, set PAVE_TOKEN, or run `pave login` (the server wrote its admin token to <data-dir>/admin.token)")]
    NoToken,
    /// The arguments do not fit together.
    #[error("{0}")]
    Usage(String),
}

/// The exit code that fits an error.
pub fn exit_code_of(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Unreachable { .. }) => exit::UNREACHABLE,
        Some(ClientError::NoToken) => exit::UNAUTHORIZED,
        Some(ClientError::Usage(_)) => exit::USAGE,
        Some(ClientError::Api { status, .. }) => match *status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => exit::UNAUTHORIZED,
            StatusCode::NOT_FOUND => exit::NOT_FOUND,
            StatusCode::CONFLICT => exit::CONFLICT,
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNPROCESSABLE_ENTITY => {
                exit::INVALID
            }
            _ => exit::ERROR,
        },
        None => exit::ERROR,
    }
}

/// A configured client.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// From flags, then environment (handled by clap), then the saved login.
    pub fn from_args(args: &ClientArgs) -> anyhow::Result<Self> {
        let saved = crate::config::load()?;
        let base = args
            .server
            .clone()
            .or(saved.server)
            .unwrap_or_else(|| DEFAULT_SERVER.to_string());
        let token = args.token.clone().or(saved.token).ok_or(ClientError::NoToken)?;
        Self::new(&base, &token)
    }

    /// A client for `base` with `token`.
    pub fn new(base: &str, token: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("could not build the HTTP client")?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.trim().to_string(),
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn unreachable(&self, e: reqwest::Error) -> ClientError {
        let mut reason = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            reason = s.to_string();
            src = s.source();
        }
        ClientError::Unreachable {
            server: self.base.clone(),
            reason,
        }
    }

    /// Sends a request with the token and returns the response if it is a success.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or("http_error").to_string();
        let message = body["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("the server answered {status}"));
        Err(ClientError::Api {
            status,
            code,
            message,
        }
        .into())
    }

    /// GET and decode.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.send(self.http.get(self.url(path))).await?;
        resp.json().await.context("the server's answer could not be read")
    }

    /// POST a JSON body (with optional headers) and decode.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        headers: &[(&str, String)],
    ) -> anyhow::Result<T> {
        let mut req = self.http.post(self.url(path)).json(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = self.send(req).await?;
        resp.json().await.context("the server's answer could not be read")
    }

    /// PUT a JSON body and decode.
    pub async fn put<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> anyhow::Result<T> {
        let resp = self.send(self.http.put(self.url(path)).json(body)).await?;
        resp.json().await.context("the server's answer could not be read")
    }

    /// PUT a JSON body to an endpoint that answers without one (204).
    pub async fn put_empty(&self, path: &str, body: &impl Serialize) -> anyhow::Result<()> {
        self.send(self.http.put(self.url(path)).json(body)).await?;
        Ok(())
    }

    /// POST a JSON body to an endpoint that answers without one (204).
    pub async fn post_empty(&self, path: &str, body: &impl Serialize) -> anyhow::Result<()> {
        self.send(self.http.post(self.url(path)).json(body)).await?;
        Ok(())
    }

    /// PATCH a JSON body and decode.
    pub async fn patch<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> anyhow::Result<T> {
        let resp = self.send(self.http.patch(self.url(path)).json(body)).await?;
        resp.json().await.context("the server's answer could not be read")
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send(self.http.delete(self.url(path))).await?;
        Ok(())
    }

    /// DELETE, decoding what the server answers (the action that deletes).
    pub async fn delete_returning<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = self.send(self.http.delete(self.url(path))).await?;
        resp.json().await.context("the server's answer could not be read")
    }

    /// A streaming GET (for SSE).
    pub async fn stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        self.send(
            self.http
                .get(self.url(path))
                .header("accept", "text/event-stream"),
        )
        .await
    }
}
