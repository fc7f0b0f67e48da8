//! Bearer tokens (API.md "Operations"): a token file of `<token> read-write|read-only`
//! lines; every `/v1` request then needs `Authorization: Bearer <token>`.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ErrorBody;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every request.
    ReadWrite,
    /// Only reads (`GET`, `HEAD`).
    ReadOnly,
}

/// The tokens a server accepts. Their values are never logged or printed.
#[derive(Clone)]
pub struct Tokens {
    tokens: Arc<Vec<(Vec<u8>, Role)>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} tokens)", self.tokens.len())
    }
}

impl Tokens {
    /// Parses a token file: one `<token> <role>` per line, role `read-write` or
    /// `read-only`; blank lines and lines starting with `#` are ignored.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(token), Some(role), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!(
                    "line {}: expected `<token> read-write|read-only`",
                    i + 1
                ));
            };
            let role = match role {
                "read-write" => Role::ReadWrite,
                "read-only" => Role::ReadOnly,
                other => {
                    return Err(format!(
                        "line {}: role {other:?} is not read-write or read-only",
                        i + 1
                    ))
                }
            };
            tokens.push((token.as_bytes().to_vec(), role));
        }
        if tokens.is_empty() {
            return Err("the token file holds no token".into());
        }
        Ok(Tokens {
            tokens: Arc::new(tokens),
        })
    }

    /// Reads and parses a token file.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("token file {}: {e}", path.display()))
    }

    /// The role of `token`; every stored token is compared, in constant time each.
    fn role(&self, token: &[u8]) -> Option<Role> {
        let mut found = None;
        for (known, role) in self.tokens.iter() {
            if constant_time_eq(known, token) {
                found = Some(*role);
            }
        }
        found
    }
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(ErrorBody::new(code, message))).into_response()
}

/// Checks the bearer token of every `/v1` request when tokens are configured.
pub(crate) async fn check(
    State(tokens): State<Option<Tokens>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(tokens) = tokens else {
        return next.run(request).await;
    };
    if !request.uri().path().starts_with("/v1") {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    let role = presented.and_then(|t| tokens.role(t));
    match role {
        None => refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer <token>` header is required",
        ),
        Some(Role::ReadOnly) if !matches!(*request.method(), Method::GET | Method::HEAD) => refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token is read-only",
        ),
        Some(_) => next.run(request).await,
    }
}
