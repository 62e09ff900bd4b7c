//! API keys: from `--api-key` and from a keys file re-read on SIGHUP, checked in constant time.
//!
//! Keys never reach the log: reloads report how many keys they read, not which.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;

use crate::config::ServerConfig;
use crate::error::{ApiError, ErrorType};
use crate::state::AppState;

/// The keys a request may carry. Auth is on when either source is configured; a configured file
/// that cannot be read accepts none of its keys (it fails closed).
pub struct ApiKeys {
    inline: Option<String>,
    file: Option<PathBuf>,
    from_file: RwLock<Vec<String>>,
}

impl ApiKeys {
    /// The keys of `config`; reads the keys file once.
    pub fn new(config: &ServerConfig) -> ApiKeys {
        let keys = ApiKeys {
            inline: config.api_key.clone(),
            file: config.api_keys_file.clone(),
            from_file: RwLock::default(),
        };
        keys.reload();
        keys
    }

    /// Whether requests need a key at all.
    pub fn required(&self) -> bool {
        self.inline.is_some() || self.file.is_some()
    }

    /// Re-reads the keys file; on failure keeps the keys it had and logs why.
    pub fn reload(&self) {
        let Some(path) = &self.file else { return };
        match read_keys_file(path) {
            Ok(keys) => {
                if keys.is_empty() {
                    tracing::warn!(path = %path.display(), "the API keys file holds no key; only --api-key is accepted");
                } else {
                    tracing::info!(path = %path.display(), keys = keys.len(), "read API keys");
                }
                *self.from_file.write().expect("keys lock poisoned. This is a bug.") = keys;
            }
            Err(err) => {
                tracing::error!(path = %path.display(), %err, "cannot read the API keys file; keeping the keys read before")
            }
        }
    }

    /// Whether `token` is one of the keys. Every key is compared in full, so the time taken does
    /// not tell which key, or how much of one, a guess matched.
    pub fn accepts(&self, token: &str) -> bool {
        let from_file = self.from_file.read().expect("keys lock poisoned. This is a bug.");
        self.inline
            .iter()
            .chain(from_file.iter())
            .fold(false, |found, key| found | constant_time_eq(token.as_bytes(), key.as_bytes()))
    }
}

/// One key per line; blank lines and lines starting with `#` are skipped, surrounding spaces trimmed.
pub fn read_keys_file(path: &Path) -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect())
}

/// Rejects requests without an accepted bearer token; a no-op when no key is configured.
pub(crate) async fn require_api_key(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if !state.keys.required() {
        return Ok(next.run(req).await);
    }
    match bearer_token(req.headers()) {
        Some(token) if state.keys.accepts(token) => Ok(next.run(req).await),
        _ => Err(ApiError::of(ErrorType::Unauthorized)),
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(token.trim())
}

/// Compares without an early exit on the first differing byte, so that response timing does not
/// reveal how much of a guessed key was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_tokens_are_parsed_case_insensitively() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&headers), None);
    }

    #[test]
    fn keys_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    #[test]
    fn keys_come_from_the_flag_and_the_file_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, "# team keys\n  alpha  \n\nbeta\n").unwrap();
        let config = ServerConfig {
            api_key: Some("inline".into()),
            api_keys_file: Some(path.clone()),
            ..ServerConfig::default()
        };
        let keys = ApiKeys::new(&config);
        assert!(keys.required());
        for good in ["inline", "alpha", "beta"] {
            assert!(keys.accepts(good), "{good}");
        }
        for bad in ["", "# team keys", "alph", "gamma"] {
            assert!(!keys.accepts(bad), "{bad}");
        }
        std::fs::write(&path, "gamma\n").unwrap();
        keys.reload();
        assert!(keys.accepts("gamma") && !keys.accepts("alpha"));
        std::fs::remove_file(&path).unwrap();
        keys.reload();
        assert!(keys.accepts("gamma"), "a failed reload keeps the keys read before");
        assert!(!ApiKeys::new(&ServerConfig::default()).required());
    }
}
