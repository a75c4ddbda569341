//! Bearer tokens: HS256 JWTs (API.md, "Tokens"; the policy is SECURITY.md's).
//!
//! A token must carry `sub` (1–128 printable ASCII bytes), `iat`, `exp`, `iss` and `aud` equal to
//! the deployment's, `scope`, and for `maintain` at most [`MAX_DECKS`] decks; `nbf` is honoured. Its
//! lifetime (`exp − iat`) is at most the policy's maximum for its scopes: user scopes a few hours,
//! `references` (the AnkiCollab backend's) longer. Every refusal is a 401 naming the claim.
//!
//! The secret may be several keys at once, told apart by the token header's `kid`, so that it can
//! rotate without a flag day: [`parse_keys`].

use jsonwebtoken::{decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
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

/// The claims we read ourselves; `iss`, `aud`, `exp` and `nbf` are checked by `jsonwebtoken`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    pub iat: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub iss: String,
    pub aud: String,
    #[serde(default)]
    pub scope: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decks: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ReadClaims {
    sub: String,
    exp: u64,
    iat: u64,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    decks: Vec<String>,
}

/// Who is calling, once the token checked out.
#[derive(Debug, Clone)]
pub struct Principal {
    pub sub: String,
    scopes: Vec<String>,
    pub decks: Vec<String>,
    /// When the token was issued (seconds since the epoch): revocation compares it.
    pub issued_at: u64,
}

impl Principal {
    /// A caller as a verified token would describe it (tests).
    #[cfg(any(test, feature = "test-util"))]
    pub fn for_tests(sub: &str, scopes: &str, issued_at: u64) -> Self {
        Self {
            sub: sub.into(),
            scopes: scopes.split_whitespace().map(str::to_owned).collect(),
            decks: vec![],
            issued_at,
        }
    }

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
/// The most decks a `maintain` token may name.
pub const MAX_DECKS: usize = 256;
/// The longest `sub`.
pub const MAX_SUB_BYTES: usize = 128;

/// A subject as tokens may carry it: 1–128 printable ASCII characters.
pub fn is_valid_sub(sub: &str) -> bool {
    !sub.is_empty() && sub.len() <= MAX_SUB_BYTES && sub.bytes().all(|b| b.is_ascii_graphic())
}

/// What a token must say about where it comes from and how long it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// `iss` (`JWT_ISSUER`): who mints tokens, the AnkiCollab backend.
    pub issuer: String,
    /// `aud` (`JWT_AUDIENCE`): this service.
    pub audience: String,
    /// Longest lifetime of a token with user scopes only (`upload`, `download`, `maintain`).
    pub max_user_lifetime_secs: u64,
    /// Longest lifetime of a token with the `references` scope (the backend's own).
    pub max_references_lifetime_secs: u64,
}

pub const DEFAULT_ISSUER: &str = "ankicollab";
pub const DEFAULT_AUDIENCE: &str = "ankicollab-media";

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
            max_user_lifetime_secs: 4 * 3600,
            max_references_lifetime_secs: 24 * 3600,
        }
    }
}

/// One signing secret, and the `kid` that names it in token headers (None: tokens without one).
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: Option<String>,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// The token secret as stored (`JWT_SECRET`, or the Secrets Manager secret): either the secret
/// itself, or during a rotation `{"keys": [{"kid": "2026-12", "secret": "…"}, …]}`, the key tokens
/// are minted with first. Every key listed is accepted.
pub fn parse_keys(text: &str) -> Result<Vec<SigningKey>, String> {
    let trimmed = text.trim();
    if !trimmed.starts_with('{') {
        if trimmed.is_empty() {
            return Err("the token secret is empty".into());
        }
        return Ok(vec![SigningKey { kid: None, secret: text.as_bytes().to_vec() }]);
    }
    #[derive(Deserialize)]
    struct Keys {
        keys: Vec<Key>,
    }
    #[derive(Deserialize)]
    struct Key {
        kid: String,
        secret: String,
    }
    let keys: Keys = serde_json::from_str(trimmed).map_err(|e| format!("the token secret is not key JSON: {e}"))?;
    if keys.keys.is_empty() || keys.keys.iter().any(|k| k.kid.is_empty() || k.secret.is_empty()) {
        return Err("every key needs a kid and a secret, and there must be one".into());
    }
    Ok(keys.keys.into_iter().map(|k| SigningKey { kid: Some(k.kid), secret: k.secret.into_bytes() }).collect())
}

pub struct TokenVerifier {
    keys: Vec<(Option<String>, DecodingKey)>,
    validation: Validation,
    policy: TokenPolicy,
}

fn now_secs() -> u64 {
    time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64
}

impl TokenVerifier {
    /// One secret, the default policy (tests, tools).
    pub fn new(secret: &[u8]) -> Self {
        Self::with_keys(vec![SigningKey { kid: None, secret: secret.to_vec() }], TokenPolicy::default())
    }

    /// The stored secret ([`parse_keys`]) under `policy`.
    pub fn from_text(text: &str, policy: TokenPolicy) -> Result<Self, String> {
        Ok(Self::with_keys(parse_keys(text)?, policy))
    }

    pub fn with_keys(keys: Vec<SigningKey>, policy: TokenPolicy) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = CLOCK_SKEW_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.set_issuer(&[&policy.issuer]);
        validation.set_audience(&[&policy.audience]);
        let keys = keys.into_iter().map(|k| (k.kid, DecodingKey::from_secret(&k.secret))).collect();
        Self { keys, validation, policy }
    }

    /// Checks an `Authorization` header value.
    pub fn verify(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        let header = authorization.ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::unauthorized("authorization is not a bearer token"))?
            .trim();
        let head = decode_header(token).map_err(|_| ApiError::unauthorized("token is malformed"))?;
        let key = match &head.kid {
            Some(kid) => self.keys.iter().find(|(k, _)| k.as_deref() == Some(kid.as_str())),
            None => self.keys.iter().find(|(k, _)| k.is_none()).or(self.keys.first()),
        }
        .map(|(_, key)| key)
        .ok_or_else(|| ApiError::unauthorized("token kid names no key of this service"))?;
        let data = decode::<ReadClaims>(token, key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::unauthorized("token expired (exp)"),
                ErrorKind::ImmatureSignature => ApiError::unauthorized("token is not valid yet (nbf)"),
                ErrorKind::InvalidSignature => ApiError::unauthorized("token signature is invalid"),
                ErrorKind::InvalidIssuer => ApiError::unauthorized("token issuer (iss) is not accepted"),
                ErrorKind::InvalidAudience => ApiError::unauthorized("token audience (aud) is not this service"),
                ErrorKind::MissingRequiredClaim(claim) => ApiError::unauthorized(format!("token has no {claim} claim")),
                ErrorKind::InvalidAlgorithm => ApiError::unauthorized("token algorithm is not HS256"),
                // serde names the claim: "missing field `iat`", "invalid type … for `sub`".
                ErrorKind::Json(e) => ApiError::unauthorized(format!("token claims are malformed: {e}")),
                _ => ApiError::unauthorized("token is malformed"),
            }
        })?;
        let c = data.claims;
        if !is_valid_sub(&c.sub) {
            return Err(ApiError::unauthorized("token sub must be 1-128 printable ASCII characters"));
        }
        let now = now_secs();
        if c.iat > now.saturating_add(CLOCK_SKEW_SECS) {
            return Err(ApiError::unauthorized("token iat is in the future"));
        }
        let scopes: Vec<String> = c.scope.split_whitespace().map(str::to_owned).collect();
        let max = if scopes.iter().any(|s| s == Scope::References.as_str()) {
            self.policy.max_references_lifetime_secs
        } else {
            self.policy.max_user_lifetime_secs
        };
        if c.exp < c.iat || c.exp - c.iat > max {
            return Err(ApiError::unauthorized(format!("token lifetime (exp - iat) exceeds {max} s for its scope")));
        }
        if c.decks.len() > MAX_DECKS {
            return Err(ApiError::unauthorized(format!("token decks lists more than {MAX_DECKS} decks")));
        }
        Ok(Principal { sub: c.sub, scopes, decks: c.decks, issued_at: c.iat })
    }
}

/// Issue a token (local stack, tests) under the default policy. Production tokens come from
/// AnkiCollab's backend (`backend-kit`).
pub fn mint(secret: &[u8], sub: &str, scope: &str, decks: &[String], ttl_secs: u64) -> String {
    let key = SigningKey { kid: None, secret: secret.to_vec() };
    mint_with(&key, &TokenPolicy::default(), sub, scope, decks, ttl_secs)
}

/// Issue a token with `key` under `policy`.
pub fn mint_with(
    key: &SigningKey,
    policy: &TokenPolicy,
    sub: &str,
    scope: &str,
    decks: &[String],
    ttl_secs: u64,
) -> String {
    let iat = now_secs();
    let claims = Claims {
        sub: sub.into(),
        exp: iat + ttl_secs,
        iat,
        nbf: None,
        iss: policy.issuer.clone(),
        aud: policy.audience.clone(),
        scope: scope.into(),
        decks: decks.to_vec(),
    };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = key.kid.clone();
    encode(&header, &claims, &EncodingKey::from_secret(&key.secret))
        .expect("HS256 encoding of plain claims cannot fail")
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn sign(secret: &[u8], kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn good(now: u64) -> Value {
        json!({"sub": "u1", "iat": now, "exp": now + 600, "iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE, "scope": "upload"})
    }

    fn check(v: &TokenVerifier, t: &str) -> Result<Principal, String> {
        v.verify(Some(&format!("Bearer {t}"))).map_err(|e| {
            assert_eq!((e.status, e.code), (401, "unauthorized"), "{e}");
            e.message
        })
    }

    #[test]
    fn verifies_scopes_and_refuses_bad_tokens() {
        let v = TokenVerifier::new(b"secret");
        let t = mint(b"secret", "u1", "upload download", &[], 60);
        let p = v.verify(Some(&format!("Bearer {t}"))).unwrap();
        assert!(p.has(Scope::Upload) && p.has(Scope::Download) && !p.has(Scope::References));
        assert_eq!(p.require_any(&[Scope::References]).unwrap_err().status, 403);

        let other = mint(b"other", "u1", "upload", &[], 60);
        assert_eq!(check(&v, &other).unwrap_err(), "token signature is invalid");
        assert_eq!(v.verify(None).unwrap_err().status, 401);
        assert_eq!(v.verify(Some("Basic abc")).unwrap_err().status, 401);
        assert_eq!(v.verify(Some("Bearer x.y.z")).unwrap_err().status, 401);
    }

    #[test]
    fn every_forged_claim_is_refused_with_its_name() {
        let v = TokenVerifier::new(b"secret");
        let now = now_secs();
        let with = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
            let mut c = good(now);
            f(c.as_object_mut().unwrap());
            check(&v, &sign(b"secret", None, &c))
        };
        assert!(with(&|_| {}).is_ok());
        type Forge = Box<dyn Fn(&mut serde_json::Map<String, Value>)>;
        let cases: Vec<(&str, Forge)> = vec![
            ("token expired (exp)", Box::new(|c| _ = c.insert("exp".into(), json!(1000)))),
            ("exceeds", Box::new(move |c| _ = c.insert("exp".into(), json!(now + 30 * 365 * 86400)))),
            ("exceeds", Box::new(|c| _ = c.insert("exp".into(), json!(u64::MAX)))),
            ("nbf", Box::new(move |c| _ = c.insert("nbf".into(), json!(now + 365 * 86400)))),
            ("iss", Box::new(|c| _ = c.insert("iss".into(), json!("someone-else")))),
            ("iss", Box::new(|c| _ = c.remove("iss"))),
            ("aud", Box::new(|c| _ = c.insert("aud".into(), json!("another-service")))),
            ("aud", Box::new(|c| _ = c.remove("aud"))),
            ("iat", Box::new(|c| _ = c.remove("iat"))),
            ("iat is in the future", Box::new(move |c| _ = c.insert("iat".into(), json!(now + 3600)))),
            ("sub", Box::new(|c| _ = c.insert("sub".into(), json!("")))),
            ("sub", Box::new(|c| _ = c.insert("sub".into(), json!("x".repeat(3000))))),
            ("sub", Box::new(|c| _ = c.insert("sub".into(), json!("a b")))),
            ("sub", Box::new(|c| _ = c.remove("sub"))),
            ("decks", Box::new(|c| _ = c.insert("decks".into(), json!(vec!["d"; MAX_DECKS + 1])))),
        ];
        for (expected, forge) in cases {
            let message = with(forge.as_ref()).expect_err(expected);
            assert!(message.contains(expected), "{message:?} should name {expected:?}");
        }
        // The backend's own scope may live longer, but not for ever.
        let long = |scope: &str, life: u64| {
            let c = json!({"sub": "b", "iat": now, "exp": now + life, "iss": DEFAULT_ISSUER, "aud": DEFAULT_AUDIENCE, "scope": scope});
            check(&v, &sign(b"secret", None, &c))
        };
        assert!(long("references", 12 * 3600).is_ok());
        assert!(long("upload", 12 * 3600).is_err());
        assert!(long("references upload", 25 * 3600).is_err());
    }

    #[test]
    fn refuses_alg_none() {
        let v = TokenVerifier::new(b"secret");
        // {"alg":"none"} . {"sub":"u","exp":9999999999,"scope":"references"} .
        let t = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1IiwiZXhwIjo5OTk5OTk5OTk5LCJzY29wZSI6InJlZmVyZW5jZXMifQ.";
        assert_eq!(v.verify(Some(&format!("Bearer {t}"))).unwrap_err().status, 401);
    }

    #[test]
    fn two_keys_rotate_without_a_flag_day() {
        let text = r#"{"keys": [{"kid": "new", "secret": "s2"}, {"kid": "old", "secret": "s1"}]}"#;
        let keys = parse_keys(text).unwrap();
        assert_eq!(keys[0].kid.as_deref(), Some("new"));
        assert!(!format!("{keys:?}").contains("s2"), "secrets never reach a log");
        let v = TokenVerifier::from_text(text, TokenPolicy::default()).unwrap();
        let p = TokenPolicy::default();
        for key in &keys {
            assert!(check(&v, &mint_with(key, &p, "u", "upload", &[], 60)).is_ok());
        }
        // A kid must name a key, and its secret must be that key's.
        let stray = SigningKey { kid: Some("gone".into()), secret: b"s1".to_vec() };
        assert!(check(&v, &mint_with(&stray, &p, "u", "upload", &[], 60)).unwrap_err().contains("kid"));
        let crossed = SigningKey { kid: Some("new".into()), secret: b"s1".to_vec() };
        assert!(check(&v, &mint_with(&crossed, &p, "u", "upload", &[], 60)).is_err());
        assert!(parse_keys("").is_err() && parse_keys(r#"{"keys": []}"#).is_err());
        assert_eq!(parse_keys("plain").unwrap(), vec![SigningKey { kid: None, secret: b"plain".to_vec() }]);
    }
}
