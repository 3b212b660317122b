//! The demo's HTTP client: JSON requests to the public APIs, sent again while the answer says a
//! retry can help (a `503`, an `Idempotency-Key` still in progress, a lost connection), and
//! every other failure turned into a [`DemoError`] that carries the answer's body.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::config::Secret;
use crate::idempotency::REPLAYED;

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// An API refused a request; `body` is its answer as sent (the `{"error": ...}` object).
    #[error("{method} {url} answered {status}: {body}")]
    Refused {
        method: Method,
        url: String,
        status: u16,
        body: String,
    },
    /// No answer came, even after retries.
    #[error("{method} {url}: {why}")]
    Unreachable {
        method: Method,
        url: String,
        why: String,
    },
    /// The flags, or an answer that is not what the API documents.
    #[error("{0}")]
    Invalid(String),
}

/// How a request authenticates.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    None,
    /// `Authorization: Bearer`.
    Token(&'a str),
    /// `X-API-Key` (the storefront key).
    Key(&'a Secret),
}

/// An answer: its status, its JSON body (`Null` when empty or not JSON), and whether it is the
/// replay of an earlier request with the same `Idempotency-Key`.
#[derive(Debug)]
pub struct Reply {
    pub method: Method,
    pub url: String,
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub replayed: bool,
}

impl Reply {
    /// The reply when its status is 2xx, else [`DemoError::Refused`].
    pub fn success(self) -> Result<Reply, DemoError> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            Err(self.refused())
        }
    }

    /// This answer as a refusal.
    pub fn refused(self) -> DemoError {
        DemoError::Refused {
            method: self.method,
            url: self.url,
            status: self.status,
            body: if self.text.is_empty() {
                "(no body)".into()
            } else {
                self.text
            },
        }
    }

    /// The error message of an `{"error": {...}}` body.
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }
}

/// Requests at most this many times in all before giving up.
const ATTEMPTS: u32 = 8;

/// A JSON client with retries.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Client {
    /// A client whose requests give up after 60 s each.
    pub fn new() -> Result<Self, DemoError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| DemoError::Invalid(format!("an HTTP client: {e}")))?;
        Ok(Self { http })
    }

    /// `GET url`.
    pub async fn get(&self, url: &str, auth: Auth<'_>) -> Result<Reply, DemoError> {
        self.send(Method::GET, url, None, auth, None).await
    }

    /// `POST url` with a JSON body and, when given, an `Idempotency-Key` (which makes a retry
    /// safe: without one, only requests that change nothing should be sent).
    pub async fn post(
        &self,
        url: &str,
        body: &Value,
        auth: Auth<'_>,
        key: Option<&str>,
    ) -> Result<Reply, DemoError> {
        self.send(Method::POST, url, Some(body), auth, key).await
    }

    /// Sends until an answer is final: a 503 and a `409` for a key still in progress are asked
    /// again, with growing pauses, and so is a request that got no answer.
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
        auth: Auth<'_>,
        key: Option<&str>,
    ) -> Result<Reply, DemoError> {
        let mut pause = Duration::from_millis(100);
        for attempt in 1..=ATTEMPTS {
            let last = attempt == ATTEMPTS;
            let mut request = self.http.request(method.clone(), url);
            if let Some(body) = body {
                request = request.json(body);
            }
            request = match auth {
                Auth::None => request,
                Auth::Token(token) => request.bearer_auth(token),
                Auth::Key(key) => request.header("X-API-Key", key.expose()),
            };
            if let Some(key) = key {
                request = request.header("Idempotency-Key", key);
            }
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let replayed = response
                        .headers()
                        .get(REPLAYED)
                        .is_some_and(|v| v.as_bytes() == b"true");
                    let text = response.text().await.unwrap_or_default();
                    let reply = Reply {
                        method: method.clone(),
                        url: url.to_string(),
                        status,
                        body: serde_json::from_str(&text).unwrap_or(Value::Null),
                        text,
                        replayed,
                    };
                    let in_progress =
                        status == 409 && key.is_some() && reply.message().contains("in progress");
                    if last || !(status == 503 || in_progress) {
                        return Ok(reply);
                    }
                }
                Err(e) if last => {
                    return Err(DemoError::Unreachable {
                        method,
                        url: url.to_string(),
                        why: chain(&e),
                    })
                }
                Err(_) => {}
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(3));
        }
        unreachable!("the last attempt returns")
    }
}

/// An error and its causes, `: `-separated (reqwest's own message names no cause).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
