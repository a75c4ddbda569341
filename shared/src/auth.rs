//! Bearer tokens: HS256 JWTs with `sub`, `exp`, `scope` and `decks` (API.md, "Tokens").

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Upload,
    Download,
    Maintain,
    References,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Upload => "upload",
            Scope::Download => "download",
            Scope::Maintain => "maintain",
            Scope::References => "references",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub decks: Vec<String>,
}

/// Who is calling, once the token checked out.
#[derive(Debug, Clone)]
pub struct Principal {
    pub sub: String,
    scopes: Vec<String>,
    pub decks: Vec<String>,
}

impl Principal {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|s| s == scope.as_str())
    }

    /// 403 unless the token carries one of `scopes`.
    pub fn require_any(&self, scopes: &[Scope]) -> Result<(), ApiError> {
        if scopes.iter().any(|&s| self.has(s)) {
            Ok(())
        } else {
            let names: Vec<_> = scopes.iter().map(|s| s.as_str()).collect();
            Err(ApiError::forbidden(format!("this call needs the {} scope", names.join(" or "))))
        }
    }
}

/// Allowed difference between our clock and the token issuer's.
pub const CLOCK_SKEW_SECS: u64 = 30;

pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = CLOCK_SKEW_SECS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self { key: DecodingKey::from_secret(secret), validation }
    }

    /// Checks an `Authorization` header value.
    pub fn verify(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        let header = authorization.ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::unauthorized("authorization is not a bearer token"))?;
        let data = decode::<Claims>(token.trim(), &self.key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::unauthorized("token expired"),
                ErrorKind::InvalidSignature => ApiError::unauthorized("token signature is invalid"),
                _ => ApiError::unauthorized("token is malformed"),
            }
        })?;
        let c = data.claims;
        Ok(Principal { sub: c.sub, scopes: c.scope.split_whitespace().map(str::to_owned).collect(), decks: c.decks })
    }
}

/// Issue a token (local stack, tests). Production tokens come from AnkiCollab.
pub fn mint(secret: &[u8], sub: &str, scope: &str, decks: &[String], ttl_secs: u64) -> String {
    let exp = (time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64) + ttl_secs;
    let claims = Claims { sub: sub.into(), exp, scope: scope.into(), decks: decks.to_vec() };
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret))
        .expect("HS256 encoding of plain claims cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_scopes_and_refuses_bad_tokens() {
        let v = TokenVerifier::new(b"secret");
        let t = mint(b"secret", "u1", "upload download", &[], 60);
        let p = v.verify(Some(&format!("Bearer {t}"))).unwrap();
        assert!(p.has(Scope::Upload) && p.has(Scope::Download) && !p.has(Scope::References));
        assert_eq!(p.require_any(&[Scope::References]).unwrap_err().status, 403);

        let other = mint(b"other", "u1", "upload", &[], 60);
        assert_eq!(v.verify(Some(&format!("Bearer {other}"))).unwrap_err().status, 401);
        assert_eq!(v.verify(None).unwrap_err().status, 401);
        assert_eq!(v.verify(Some("Basic abc")).unwrap_err().status, 401);
        assert_eq!(v.verify(Some("Bearer x.y.z")).unwrap_err().status, 401);

        // Expired beyond the allowed skew.
        let claims = Claims { sub: "u".into(), exp: 1_000, scope: "upload".into(), decks: vec![] };
        let old = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"secret")).unwrap();
        let e = v.verify(Some(&format!("Bearer {old}"))).unwrap_err();
        assert_eq!((e.status, e.message.as_str()), (401, "token expired"));
    }

    #[test]
    fn refuses_alg_none() {
        let v = TokenVerifier::new(b"secret");
        // {"alg":"none"} . {"sub":"u","exp":9999999999,"scope":"references"} .
        let t = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1IiwiZXhwIjo5OTk5OTk5OTk5LCJzY29wZSI6InJlZmVyZW5jZXMifQ.";
        assert_eq!(v.verify(Some(&format!("Bearer {t}"))).unwrap_err().status, 401);
    }
}
