//! API keys: bearer tokens compared in constant time; keys are never logged.

use sha2::{Digest, Sha256};
use std::path::Path;
use subtle::ConstantTimeEq;

/// The keys a server accepts (kept as SHA-256 digests).
#[derive(Clone)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl ApiKeys {
    /// Keys from a file: one per line; blank lines and `#` comments are skipped.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let keys: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if keys.is_empty() {
            return Err(format!("{}: no API keys in the file", path.display()));
        }
        Ok(Self::new(keys))
    }

    /// These keys.
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            digests: keys.into_iter().map(digest).collect(),
        }
    }

    /// True when `key` is one of the keys. Every key is compared, in constant time, on digests
    /// (so neither the key's length nor which key matched shows in the timing).
    pub fn accepts(&self, key: &str) -> bool {
        let d = digest(key);
        self.digests
            .iter()
            .fold(subtle::Choice::from(0u8), |acc, k| acc | k.ct_eq(&d))
            .into()
    }

    /// The bearer token of an `Authorization` header value.
    pub fn bearer(header: &str) -> Option<&str> {
        let (scheme, token) = header.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_listed_keys() {
        let k = ApiKeys::new(["sk-one", "sk-two"]);
        assert!(k.accepts("sk-two") && k.accepts("sk-one"));
        assert!(!k.accepts("sk-one ") && !k.accepts("") && !k.accepts("sk-three"));
        assert_eq!(ApiKeys::bearer("Bearer sk-one"), Some("sk-one"));
        assert_eq!(ApiKeys::bearer("Basic abc"), None);
        assert!(!format!("{k:?}").contains("sk-"));
    }
}
