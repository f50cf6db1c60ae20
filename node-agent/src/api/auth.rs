//! Bearer-token authentication. The token lives in a 0600 file in the state directory, created
//! with 32 random bytes on first start.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use warp::Filter;

/// The API token.
#[derive(Clone)]
pub struct Token(Arc<String>);

impl Token {
    pub fn new(s: String) -> Self {
        Token(Arc::new(s))
    }

    /// Constant-time comparison with a presented token.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Rejection: missing or wrong token.
#[derive(Debug)]
pub struct Unauthorized;
impl warp::reject::Reject for Unauthorized {}

/// Read the token file, or create it (0600) with a fresh random token.
pub fn load_or_create_token(path: &Path) -> std::io::Result<Token> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let t = existing.trim().to_string();
        if !t.is_empty() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            return Ok(Token::new(t));
        }
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` only applies to a new file: an existing (empty) one keeps its bits unless reset.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    std::io::Write::write_all(&mut f, token.as_bytes())?;
    Ok(Token::new(token))
}

/// Filter passing only requests with `Authorization: Bearer <token>`.
pub fn require(token: Token) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |h: Option<String>| {
            let token = token.clone();
            async move {
                match h.as_deref().and_then(|h| h.strip_prefix("Bearer ")) {
                    Some(t) if token.matches(t.trim()) => Ok(()),
                    _ => Err(warp::reject::custom(Unauthorized)),
                }
            }
        })
        .untuple_one()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        let a = load_or_create_token(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create_token(&p).unwrap();
        assert!(b.matches(&a.0));
        assert!(!a.matches("wrong"));
        assert!(!a.matches(""));
    }
}
